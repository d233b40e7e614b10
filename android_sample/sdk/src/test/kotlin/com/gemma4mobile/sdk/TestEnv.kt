package com.gemma4mobile.sdk

import com.gemma4mobile.agent.Json
import com.gemma4mobile.sdk.jvm.JvmLiteRtBackend
import java.io.File
import java.nio.file.Files

/**
 * What ci_check.sh hands the tests (-Dgemma4.expected=FILE, written by
 * sdk/scripts/host_expectations.py in the same run): the tiny e2b int8 bundle from the Python
 * test cache, liblitert-lm.so from the pinned wheel, and the Python host engine's answers.
 */
object TestEnv {
    @Suppress("UNCHECKED_CAST")
    val expected: Map<String, Any?> by lazy {
        val path = System.getProperty("gemma4.expected") ?: error("run with -Dgemma4.expected=FILE (see android_sample/ci_check.sh)")
        Json.parse(File(path).readText()) as Map<String, Any?>
    }

    val bundle: File by lazy { File(expected["bundle"] as String) }
    val library: File by lazy { File(expected["library"] as String) }
    val maxNewTokens: Int by lazy { (expected["max_new_tokens"] as Number).toInt() }

    @Suppress("UNCHECKED_CAST")
    val cases: List<Map<String, Any?>> by lazy { expected["cases"] as List<Map<String, Any?>> }

    val engineOptions: EngineOptions by lazy { EngineOptions(maxNumTokens = (expected["max_num_tokens"] as Number).toInt()) }

    fun factory(): BackendFactory = JvmLiteRtBackend.factory(library)

    private val temps = ArrayList<File>()

    init {
        Runtime.getRuntime().addShutdownHook(Thread { synchronized(temps) { temps.forEach { it.deleteRecursively() } } })
    }

    fun tempDir(prefix: String): File = Files.createTempDirectory("g4m-sdk-$prefix").toFile().also { synchronized(temps) { temps.add(it) } }

    /** A client over [bundleDir] (give it a copy: verification writes a stamp into the bundle directory). */
    fun client(
        bundleDir: File,
        source: String? = null,
    ): GenerativeModel = Generation.getClient(GenerationConfig(bundleDir, tempDir("cache"), factory(), source, engineOptions))

    /** A writable copy of the bundle (manifest and model), to corrupt or truncate. */
    fun copyOfBundle(): File {
        val dir = File(tempDir("copy"), "bundle")
        dir.mkdirs()
        for (name in listOf(BundleManifest.FILE, "model.litertlm")) File(bundle, name).copyTo(File(dir, name))
        return dir
    }

    /** Flip one byte in the middle of [f] (same size). */
    fun corruptOneByte(f: File) {
        java.io.RandomAccessFile(f, "rw").use { raf ->
            val at = raf.length() / 2
            raf.seek(at)
            val b = raf.read()
            raf.seek(at)
            raf.write(b xor 0x01)
        }
    }
}
