package com.gemma4mobile.sdk

import com.gemma4mobile.agent.Json
import com.gemma4mobile.agent.JsonParseException
import com.gemma4mobile.sdk.GemmaMobileException.Reason
import java.io.File
import java.io.IOException
import java.io.InputStream
import java.net.URI
import java.nio.file.AtomicMoveNotSupportedException
import java.nio.file.Files
import java.nio.file.StandardCopyOption
import java.security.MessageDigest

/** One file of a bundle as its manifest describes it. */
data class BundleFile(
    val path: String,
    val size: Long,
    val sha256: String,
)

/** A bundle's `manifest.json` (written by `gemma4-mobile convert`, format gemma4-mobile-bundle/1). */
class BundleManifest(
    val raw: Map<String, Any?>,
    val mainModel: String,
    val files: List<BundleFile>,
) {
    val name: String? get() = raw["name"] as? String

    companion object {
        const val FILE = "manifest.json"
        const val FORMAT = "gemma4-mobile-bundle/1"

        @Suppress("UNCHECKED_CAST")
        fun parse(
            text: String,
            where: String,
        ): BundleManifest {
            fun bad(why: String): Nothing = throw GemmaMobileException(Reason.MODEL_CORRUPT, "$where: $why")
            val data =
                try {
                    Json.parse(text)
                } catch (e: JsonParseException) {
                    bad("not JSON (${e.message})")
                }
            if (data !is Map<*, *>) bad("not a JSON object")
            if (data["format"] != FORMAT) bad("format is ${data["format"]}, expected $FORMAT")
            val main = data["main_model"] as? String ?: bad("no main_model")
            val entries = data["files"] as? Map<String, Any?> ?: bad("no files")
            val files =
                entries.map { (path, meta) ->
                    val m = meta as? Map<String, Any?> ?: bad("bad entry for $path")
                    if (path.startsWith("/") || path.split('/').any { it == ".." || it.isEmpty() }) bad("unsafe file path $path")
                    BundleFile(path, (m["size"] as? Number)?.toLong() ?: bad("no size for $path"), m["sha256"] as? String ?: bad("no sha256 for $path"))
                }
            if (files.none { it.path == main }) bad("main_model $main is not among its files")
            return BundleManifest(data as Map<String, Any?>, main, files)
        }
    }
}

/**
 * A bundle directory on the device: reads and verifies it against its manifest (size and sha256 of
 * every file), remembers a successful check in a stamp (`.verified`: the manifest's sha256 and
 * each file's size and mtime) so later checks only stat the files, and installs bundles
 * atomically: everything is copied and verified in a hidden sibling directory that is renamed
 * into place only when complete, so a half-installed bundle never looks installed.
 */
class BundleStore(
    val dir: File,
) {
    val manifestFile: File get() = File(dir, BundleManifest.FILE)
    private val stampFile: File get() = File(dir, STAMP)

    fun manifest(): BundleManifest {
        if (!manifestFile.isFile) throw GemmaMobileException(Reason.MODEL_NOT_FOUND, "no bundle at $dir (no ${BundleManifest.FILE})")
        return BundleManifest.parse(read(manifestFile), manifestFile.path)
    }

    fun modelFile(): File = File(dir, manifest().mainModel)

    /** Whether the bundle is installed and verified (cheap after the first full check). */
    fun isVerified(): Boolean =
        try {
            verify()
            true
        } catch (e: GemmaMobileException) {
            false
        }

    /** Verify against the manifest (stamp first, then the full sha256 check); throws [GemmaMobileException]. */
    fun verify(): BundleManifest {
        val m = manifest()
        val manifestSha = sha256(manifestFile)
        if (stampMatches(m, manifestSha)) return m
        stampFile.delete()
        for (f in m.files) {
            val file = File(dir, f.path)
            if (!file.isFile) throw GemmaMobileException(Reason.MODEL_NOT_FOUND, "bundle file ${f.path} is missing from $dir")
            if (file.length() !=
                f.size
            ) {
                throw GemmaMobileException(
                    Reason.MODEL_CORRUPT,
                    "bundle file ${f.path} has ${file.length()} bytes, the manifest says ${f.size} (truncated or changed)",
                )
            }
            val sha = sha256(file)
            if (sha != f.sha256) throw GemmaMobileException(Reason.MODEL_CORRUPT, "bundle file ${f.path} has sha256 $sha, the manifest says ${f.sha256}")
        }
        try {
            writeStamp(dir, m, manifestSha)
        } catch (e: IOException) {
            // A read-only bundle (pushed where the app cannot write) is verified in full every time.
        }
        return m
    }

    private fun stampMatches(
        m: BundleManifest,
        manifestSha: String,
    ): Boolean {
        if (!stampFile.isFile) return false
        val stamp =
            try {
                Json.parse(read(stampFile)) as? Map<*, *>
            } catch (e: JsonParseException) {
                null
            } ?: return false
        if (stamp["manifest_sha256"] != manifestSha) return false
        val files = stamp["files"] as? Map<*, *> ?: return false
        return m.files.all { f ->
            val s = files[f.path] as? Map<*, *>
            val file = File(dir, f.path)
            s != null && file.isFile && file.length() == f.size &&
                (s["size"] as? Number)?.toLong() == f.size && (s["mtime"] as? Number)?.toLong() == file.lastModified()
        }
    }

    /**
     * Install the bundle at [source] (a directory path, `file:` URL or http(s) URL of a bundle
     * directory) into [dir]. [onProgress] gets (bytes done, bytes total). Throws [GemmaMobileException]
     * (DOWNLOAD_FAILED, MODEL_CORRUPT) and leaves [dir] as it was.
     */
    fun install(
        source: String,
        onStart: (Long) -> Unit = {},
        onProgress: (Long, Long) -> Unit = { _, _ -> },
    ) {
        val src = Source.of(source)
        val manifestText =
            try {
                src.open(BundleManifest.FILE).use { String(it.readBytes(), Charsets.UTF_8) }
            } catch (e: IOException) {
                throw GemmaMobileException(Reason.DOWNLOAD_FAILED, "cannot read ${BundleManifest.FILE} from $source: ${e.message}", e)
            }
        val m = BundleManifest.parse(manifestText, "$source/${BundleManifest.FILE}")
        val total = m.files.sumOf { it.size }
        onStart(total)
        val parent = dir.absoluteFile.parentFile
        parent.mkdirs()
        val tmp = File(parent, ".${dir.name}.partial-${System.nanoTime()}")
        try {
            var done = 0L
            val buf = ByteArray(1 shl 20)
            for (f in m.files) {
                val out = File(tmp, f.path)
                out.parentFile.mkdirs()
                val md = MessageDigest.getInstance("SHA-256")
                var n = 0L
                try {
                    src.open(f.path).use { input ->
                        out.outputStream().use { o ->
                            while (true) {
                                val r = input.read(buf)
                                if (r < 0) break
                                md.update(buf, 0, r)
                                o.write(buf, 0, r)
                                n += r
                                done += r
                                if (n > f.size) break
                                onProgress(done, total)
                            }
                        }
                    }
                } catch (e: IOException) {
                    throw GemmaMobileException(Reason.DOWNLOAD_FAILED, "cannot copy ${f.path} from $source: ${e.message}", e)
                }
                if (n !=
                    f.size
                ) {
                    throw GemmaMobileException(
                        Reason.MODEL_CORRUPT,
                        "${f.path} from $source has ${if (n > f.size) "more than " else ""}$n bytes, the manifest says ${f.size}",
                    )
                }
                val sha = hex(md.digest())
                if (sha != f.sha256) throw GemmaMobileException(Reason.MODEL_CORRUPT, "${f.path} from $source has sha256 $sha, the manifest says ${f.sha256}")
            }
            // The manifest goes in last, then the stamp: only a complete, verified copy has both.
            File(tmp, BundleManifest.FILE).writeText(manifestText, Charsets.UTF_8)
            writeStamp(tmp, m, sha256(File(tmp, BundleManifest.FILE)))
            replace(tmp)
        } finally {
            if (tmp.exists()) tmp.deleteRecursively()
        }
    }

    /** Swap [fresh] into [dir]: an old (possibly corrupt) bundle is moved aside first, then removed. */
    private fun replace(fresh: File) {
        val old = File(dir.absoluteFile.parentFile, ".${dir.name}.old-${System.nanoTime()}")
        if (dir.exists()) move(dir, old)
        try {
            move(fresh, dir)
        } catch (e: IOException) {
            if (old.exists() && !dir.exists()) move(old, dir)
            throw GemmaMobileException(Reason.DOWNLOAD_FAILED, "cannot move the bundle into $dir: ${e.message}", e)
        }
        old.deleteRecursively()
    }

    private fun move(
        from: File,
        to: File,
    ) {
        try {
            Files.move(from.toPath(), to.toPath(), StandardCopyOption.ATOMIC_MOVE)
        } catch (e: AtomicMoveNotSupportedException) {
            Files.move(from.toPath(), to.toPath())
        }
    }

    /** Where bundle files come from: a directory, a file: URL or an http(s) URL. */
    private fun interface Source {
        fun open(rel: String): InputStream

        companion object {
            fun of(source: String): Source {
                val uri = if (source.contains("://") || source.startsWith("file:")) URI(source) else null
                if (uri == null || uri.scheme == "file") {
                    val base = if (uri == null) File(source) else File(uri)
                    if (!File(
                            base,
                            BundleManifest.FILE,
                        ).isFile
                    ) {
                        throw GemmaMobileException(Reason.DOWNLOAD_FAILED, "$source is not a bundle directory (no ${BundleManifest.FILE})")
                    }
                    return Source { rel -> File(base, rel).inputStream() }
                }
                if (uri.scheme != "http" &&
                    uri.scheme != "https"
                ) {
                    throw GemmaMobileException(Reason.DOWNLOAD_FAILED, "unsupported source $source (use a directory, file: or http(s): URL)")
                }
                val base = if (source.endsWith("/")) source else "$source/"
                return Source { rel ->
                    URI(base)
                        .resolve(
                            rel.split('/').joinToString("/") {
                                java.net.URLEncoder
                                    .encode(it, "UTF-8")
                                    .replace("+", "%20")
                            },
                        ).toURL()
                        .openStream()
                }
            }
        }
    }

    companion object {
        const val STAMP = ".verified"

        private fun read(f: File): String =
            try {
                f.readText(Charsets.UTF_8)
            } catch (e: IOException) {
                throw GemmaMobileException(Reason.MODEL_CORRUPT, "cannot read $f: ${e.message}", e)
            }

        private fun writeStamp(
            dir: File,
            m: BundleManifest,
            manifestSha: String,
        ) {
            val files = LinkedHashMap<String, Any?>()
            for (f in m.files) {
                val file = File(dir, f.path)
                files[f.path] = linkedMapOf("size" to file.length(), "mtime" to file.lastModified())
            }
            val tmp = File(dir, "$STAMP.tmp")
            tmp.writeText(Json.stringify(linkedMapOf("manifest_sha256" to manifestSha, "files" to files)), Charsets.UTF_8)
            Files.move(tmp.toPath(), File(dir, STAMP).toPath(), StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE)
        }

        fun sha256(f: File): String {
            val md = MessageDigest.getInstance("SHA-256")
            val buf = ByteArray(1 shl 20)
            f.inputStream().use { input ->
                while (true) {
                    val r = input.read(buf)
                    if (r < 0) break
                    md.update(buf, 0, r)
                }
            }
            return hex(md.digest())
        }

        private fun hex(b: ByteArray): String = b.joinToString("") { "%02x".format(it) }
    }
}
