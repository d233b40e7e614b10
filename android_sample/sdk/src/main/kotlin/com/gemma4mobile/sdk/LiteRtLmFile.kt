package com.gemma4mobile.sdk

import com.gemma4mobile.sdk.GemmaMobileException.Reason
import java.io.File
import java.io.IOException
import java.io.RandomAccessFile
import java.nio.ByteBuffer
import java.nio.ByteOrder

/**
 * The container check done before a `.litertlm` file reaches the engine. LiteRT-LM 0.18.1 aborts
 * the whole process (a CHECK failure, not an error status) on some truncated files, so the SDK
 * reads the container's header itself and refuses a file whose sections do not all fit in it.
 *
 * This depends on a private detail of the format (litert_lm_builder/litertlm_core.py and the
 * header flatbuffer schema: magic "LITERTLM", major version 1, header end at byte 24, header
 * flatbuffer from byte 32 with LiteRTLMMetaData.section_metadata (field 1) ->
 * SectionMetadata.objects (field 0) -> SectionObject begin_offset / end_offset (fields 1, 2)).
 * [sections] is that one place; LiteRtLmFileTest fails loudly when a new format changes it.
 */
object LiteRtLmFile {
    data class Section(
        val begin: Long,
        val end: Long,
    )

    private const val MAGIC = "LITERTLM"
    private const val MAJOR_VERSION = 1
    private const val HEADER_END_AT = 24
    private const val HEADER_BEGIN = 32

    /** Throws [GemmaMobileException] (MODEL_NOT_FOUND, MODEL_CORRUPT) unless [file] is a complete container. */
    fun check(file: File): List<Section> {
        if (!file.isFile) throw GemmaMobileException(Reason.MODEL_NOT_FOUND, "model file $file does not exist")
        val sections = sections(file)
        val size = file.length()
        val last = sections.maxOf { it.end }
        if (last > size) throw GemmaMobileException(Reason.MODEL_CORRUPT, "$file is truncated: its sections end at byte $last, the file has $size bytes")
        return sections
    }

    /** The section table of a `.litertlm` file (see the object's comment); MODEL_CORRUPT when unreadable. */
    fun sections(file: File): List<Section> {
        fun bad(why: String): Nothing = throw GemmaMobileException(Reason.MODEL_CORRUPT, "$file is not a complete .litertlm file: $why")
        try {
            RandomAccessFile(file, "r").use { raf ->
                val size = raf.length()
                if (size < HEADER_BEGIN) bad("$size bytes, shorter than the container header")
                val head = ByteArray(HEADER_BEGIN)
                raf.readFully(head)
                val hb = ByteBuffer.wrap(head).order(ByteOrder.LITTLE_ENDIAN)
                if (String(head, 0, 8, Charsets.US_ASCII) != MAGIC) bad("no $MAGIC magic")
                val major = hb.getInt(8)
                if (major != MAJOR_VERSION) bad("container version $major (this SDK reads version $MAJOR_VERSION)")
                val headerEnd = hb.getLong(HEADER_END_AT)
                if (headerEnd <= HEADER_BEGIN || headerEnd > size ||
                    headerEnd - HEADER_BEGIN > (16 shl 20)
                ) {
                    bad("header ends at byte $headerEnd, the file has $size bytes")
                }
                val fb = ByteArray((headerEnd - HEADER_BEGIN).toInt())
                raf.seek(HEADER_BEGIN.toLong())
                raf.readFully(fb)
                return FlatTable.root(ByteBuffer.wrap(fb).order(ByteOrder.LITTLE_ENDIAN), ::bad).let { meta ->
                    val objects = meta.table(1)?.vector(0) ?: bad("no section table")
                    if (objects.isEmpty()) bad("no sections")
                    objects.map { o ->
                        val begin = o.u64(1)
                        val end = o.u64(2)
                        if (begin < 0 || end < begin) bad("section [$begin, $end) is malformed")
                        Section(begin, end)
                    }
                }
            }
        } catch (e: IOException) {
            bad("cannot read it (${e.message})")
        } catch (e: IndexOutOfBoundsException) {
            bad("its header is malformed")
        }
    }

    /** Just enough of the FlatBuffers table layout to read the section table. */
    private class FlatTable(
        val buf: ByteBuffer,
        val pos: Int,
        val bad: (String) -> Nothing,
    ) {
        private fun field(i: Int): Int? {
            val vt = pos - buf.getInt(pos)
            val vtSize = buf.getShort(vt).toInt() and 0xffff
            val at = 4 + 2 * i
            if (at >= vtSize) return null
            val off = buf.getShort(vt + at).toInt() and 0xffff
            return if (off == 0) null else pos + off
        }

        fun u64(i: Int): Long = field(i)?.let { buf.getLong(it) } ?: 0L

        fun table(i: Int): FlatTable? = field(i)?.let { FlatTable(buf, it + buf.getInt(it), bad) }

        fun vector(i: Int): List<FlatTable>? =
            field(i)?.let { f ->
                val v = f + buf.getInt(f)
                val n = buf.getInt(v)
                if (n < 0 || n > 4096) bad("$n sections")
                (0 until n).map { k ->
                    val e = v + 4 + 4 * k
                    FlatTable(buf, e + buf.getInt(e), bad)
                }
            }

        companion object {
            fun root(
                buf: ByteBuffer,
                bad: (String) -> Nothing,
            ): FlatTable = FlatTable(buf, buf.getInt(0), bad)
        }
    }
}
