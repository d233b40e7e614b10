package com.gemma4mobile.sdk

import com.gemma4mobile.sdk.GemmaMobileException.Reason
import com.gemma4mobile.sdk.jvm.JvmLiteRtBackend
import com.sun.net.httpserver.HttpServer
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.runBlocking
import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test
import java.io.File
import java.net.InetAddress
import java.net.InetSocketAddress

/** checkStatus / download / verification, and load failures as GemmaMobileException (real engine). */
class BundleTest {
    private fun reasonOf(block: () -> Unit): Reason {
        try {
            block()
        } catch (e: GemmaMobileException) {
            return e.reason
        }
        fail("no GemmaMobileException")
        error("unreachable")
    }

    private fun target(): File = File(TestEnv.tempDir("app"), "files/gemma4_mobile/bundles/e2b-tiny")

    @Test
    fun downloadTurnsDownloadableIntoAvailable() =
        runBlocking {
            val dir = target()
            TestEnv.client(dir).use { assertEquals(FeatureStatus.UNAVAILABLE, it.checkStatus()) }
            val source = TestEnv.copyOfBundle()
            val model = TestEnv.client(dir, source = source.toURI().toString())
            model.use {
                assertEquals(FeatureStatus.DOWNLOADABLE, it.checkStatus())
                assertEquals(Reason.MODEL_NOT_FOUND, reasonOf { runBlocking { it.generateContent("Hi") } })
                val events = it.download().toList()
                val total = BundleStore(source).manifest().files.sumOf { f -> f.size }
                assertEquals(DownloadStatus.DownloadStarted(total), events.first())
                assertEquals(DownloadStatus.DownloadCompleted, events.last())
                val progress = events.filterIsInstance<DownloadStatus.DownloadProgress>().map { p -> p.totalBytesDownloaded }
                assertEquals(progress.sorted(), progress)
                assertEquals(total, progress.last())
                assertEquals(FeatureStatus.AVAILABLE, it.checkStatus())
                assertTrue(File(dir, BundleStore.STAMP).isFile)
                assertEquals(listOf(dir.name), dir.parentFile.list()!!.toList())
                // The installed copy runs.
                val case = TestEnv.cases[0]
                assertEquals(
                    case["response"],
                    it.generateContent(GenerateContentRequest(case["prompt"] as String, maxOutputTokens = TestEnv.maxNewTokens)).text,
                )
            }
            // One corrupted byte after installation: the stamp no longer matches, the full check fails.
            TestEnv.corruptOneByte(File(dir, "model.litertlm"))
            TestEnv.client(dir, source = source.path).use {
                assertEquals(FeatureStatus.DOWNLOADABLE, it.checkStatus())
                assertEquals(Reason.MODEL_CORRUPT, reasonOf { runBlocking { it.warmup() } })
                // download() repairs it.
                assertEquals(DownloadStatus.DownloadCompleted, it.download().toList().last())
                assertEquals(FeatureStatus.AVAILABLE, it.checkStatus())
            }
        }

    @Test
    fun downloadOverHttpReportsDownloadingAndAStoppedDownloadLeavesNothing() =
        runBlocking {
            val src = TestEnv.copyOfBundle()
            val server = HttpServer.create(InetSocketAddress(InetAddress.getLoopbackAddress(), 0), 0)
            server.createContext("/b/") { ex ->
                val f = File(src, ex.requestURI.path.removePrefix("/b/"))
                if (f.isFile) {
                    ex.sendResponseHeaders(200, f.length())
                    ex.responseBody.use { out -> f.inputStream().use { it.copyTo(out) } }
                } else {
                    ex.sendResponseHeaders(404, -1)
                }
                ex.close()
            }
            server.start()
            try {
                val url = "http://127.0.0.1:${server.address.port}/b/"
                // Stop collecting after the first progress event: the copy stops, nothing is left.
                val stopped = target()
                TestEnv.client(stopped, source = url).use {
                    val first = it.download().first { s -> s is DownloadStatus.DownloadProgress }
                    assertTrue(first is DownloadStatus.DownloadProgress)
                    assertFalse(stopped.exists())
                    assertEquals(emptyList<String>(), stopped.parentFile.list()!!.toList())
                    assertEquals(FeatureStatus.DOWNLOADABLE, it.checkStatus())
                }
                // A full download: DOWNLOADING while it runs, AVAILABLE after.
                val dir = target()
                TestEnv.client(dir, source = url).use {
                    val seen = ArrayList<FeatureStatus>()
                    it.download().collect { s -> if (s is DownloadStatus.DownloadProgress) seen.add(it.checkStatus()) }
                    assertTrue(seen.isNotEmpty())
                    assertEquals(setOf(FeatureStatus.DOWNLOADING), seen.toSet())
                    assertEquals(FeatureStatus.AVAILABLE, it.checkStatus())
                }
                // A source that is not there: DownloadFailed with its reason.
                TestEnv.client(target(), source = "http://127.0.0.1:${server.address.port}/nothing/").use {
                    val last = it.download().toList().last()
                    assertEquals(Reason.DOWNLOAD_FAILED, (last as DownloadStatus.DownloadFailed).exception.reason)
                }
            } finally {
                server.stop(0)
            }
        }

    @Test
    fun aSourceWithOneCorruptedByteNeverBecomesAvailable() =
        runBlocking {
            val src = TestEnv.copyOfBundle()
            TestEnv.corruptOneByte(File(src, "model.litertlm"))
            val dir = target()
            TestEnv.client(dir, source = src.path).use {
                val last = it.download().toList().last()
                assertTrue(last is DownloadStatus.DownloadFailed)
                assertEquals(Reason.MODEL_CORRUPT, (last as DownloadStatus.DownloadFailed).exception.reason)
                assertEquals(FeatureStatus.DOWNLOADABLE, it.checkStatus())
                assertFalse(dir.exists())
                // Nothing half-installed is left next to it either.
                assertEquals(emptyList<String>(), dir.parentFile.list()?.toList() ?: emptyList<String>())
            }
            // Pushed in place (no download): verification refuses it as well.
            TestEnv.client(src).use {
                assertEquals(FeatureStatus.UNAVAILABLE, it.checkStatus())
                assertEquals(Reason.MODEL_CORRUPT, reasonOf { runBlocking { it.generateContent("Hi") } })
            }
        }

    @Test
    fun missingOrTruncatedModelIsAnExceptionWithItsReason() {
        // The bundle is there but its model file is not.
        val missing = TestEnv.copyOfBundle()
        File(missing, "model.litertlm").delete()
        TestEnv.client(missing).use { assertEquals(Reason.MODEL_NOT_FOUND, reasonOf { runBlocking { it.warmup() } }) }
        // No bundle at all.
        TestEnv.client(File(TestEnv.tempDir("none"), "nothing")).use { assertEquals(Reason.MODEL_NOT_FOUND, reasonOf { runBlocking { it.warmup() } }) }

        // Truncated: verification catches it before the engine sees it ...
        val truncated = TestEnv.copyOfBundle()
        val model = File(truncated, "model.litertlm")
        val bytes = model.readBytes()
        model.writeBytes(bytes.copyOf(bytes.size / 2))
        TestEnv.client(truncated).use { assertEquals(Reason.MODEL_CORRUPT, reasonOf { runBlocking { it.warmup() } }) }
        // ... and the backend, given the truncated file directly, refuses it before LiteRT-LM (which
        // aborts the process on some truncations) sees it: the JVM lives on to run the next test.
        for (size in listOf(0, 20, 1000, 16 * 1024, bytes.size / 2, bytes.size - 1)) {
            model.writeBytes(bytes.copyOf(size))
            assertEquals(
                "truncated to $size bytes",
                Reason.MODEL_CORRUPT,
                reasonOf { JvmLiteRtBackend.open(model, null, TestEnv.engineOptions, TestEnv.library).close() },
            )
        }
        // A complete container that is not a model: LiteRT-LM itself refuses it.
        model.writeBytes(bytes)
        java.io.RandomAccessFile(model, "rw").use { raf ->
            val s = LiteRtLmFile.sections(model).maxByOrNull { it.end - it.begin }!!
            raf.seek(s.begin)
            raf.write(ByteArray(64))
        }
        assertEquals(Reason.MODEL_LOAD_FAILED, reasonOf { JvmLiteRtBackend.open(model, null, TestEnv.engineOptions, TestEnv.library).close() })
        assertEquals(Reason.MODEL_NOT_FOUND, reasonOf { JvmLiteRtBackend.open(File(truncated, "gone.litertlm"), null, TestEnv.engineOptions, TestEnv.library) })
        // A bad library path is a reason too, not an UnsatisfiedLinkError.
        // (The real library is loaded by now, so only a missing library path can be shown here.)
        assertEquals(Reason.ENGINE_UNAVAILABLE, reasonOf { JvmLiteRtBackend.open(model, null, TestEnv.engineOptions, null) })
    }

    /** The one private detail of the .litertlm format the SDK reads: fails loudly if a new LiteRT-LM changes it. */
    @Test
    fun litertlmSectionTableAgreesWithTheManifest() {
        @Suppress("UNCHECKED_CAST")
        val expected = (BundleStore(TestEnv.bundle).manifest().raw["sections"] as List<Map<String, Any?>>).map { (it["size"] as Number).toLong() }
        val sections = LiteRtLmFile.check(File(TestEnv.bundle, "model.litertlm"))
        assertEquals(expected, sections.map { it.end - it.begin })
        assertTrue(sections.all { it.begin % (16 * 1024) == 0L })
    }

    @Test
    fun manifestProblemsAreModelCorrupt() {
        val dir = TestEnv.copyOfBundle()
        File(dir, BundleManifest.FILE).writeText("{not json")
        assertEquals(Reason.MODEL_CORRUPT, reasonOf { BundleStore(dir).verify() })
        File(dir, BundleManifest.FILE).writeText("""{"format": "other/1", "main_model": "model.litertlm", "files": {}}""")
        assertEquals(Reason.MODEL_CORRUPT, reasonOf { BundleStore(dir).verify() })
        File(dir, BundleManifest.FILE).writeText("""{"format": "gemma4-mobile-bundle/1", "main_model": "m", "files": {"../m": {"size": 1, "sha256": "x"}}}""")
        assertEquals(Reason.MODEL_CORRUPT, reasonOf { BundleStore(dir).verify() })
    }
}
