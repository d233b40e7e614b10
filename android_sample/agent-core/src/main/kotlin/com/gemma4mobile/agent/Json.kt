package com.gemma4mobile.agent

import java.math.BigInteger

/** A JSON syntax error at [position] (a code-point offset into the text). */
class JsonParseException(
    message: String,
    val position: Int,
) : IllegalArgumentException("$message at position $position")

/**
 * A tiny JSON reader/writer with no dependencies.
 *
 * Values map to: object -> LinkedHashMap<String, Any?> (key order kept), array -> List<Any?>,
 * string -> String, integer -> Long (BigInteger when it does not fit), other numbers -> Double,
 * true/false -> Boolean, null -> null. Integers and doubles stay distinct so that `1` and `1.0`
 * round-trip as they do in Python.
 */
object Json {
    fun parse(text: String): Any? {
        val reader = Reader(text)
        val value = reader.value(reader.ws(0), 0)
        val end = reader.ws(value.second)
        if (end != text.length) throw reader.error("unexpected trailing characters", end)
        return value.first
    }

    fun stringify(value: Any?): String = StringBuilder().also { write(it, value) }.toString()

    private fun write(
        out: StringBuilder,
        value: Any?,
    ) {
        when (value) {
            null -> {
                out.append("null")
            }

            is String -> {
                writeString(out, value)
            }

            is Boolean -> {
                out.append(value.toString())
            }

            is Double -> {
                require(value.isFinite()) { "JSON cannot carry $value" }
                out.append(PyFloat.repr(value))
            }

            is Float -> {
                write(out, value.toDouble())
            }

            is Number -> {
                out.append(value.toString())
            }

            is Map<*, *> -> {
                out.append('{')
                var first = true
                for ((k, v) in value) {
                    if (!first) out.append(',')
                    first = false
                    writeString(out, k.toString())
                    out.append(':')
                    write(out, v)
                }
                out.append('}')
            }

            is Iterable<*> -> {
                out.append('[')
                var first = true
                for (v in value) {
                    if (!first) out.append(',')
                    first = false
                    write(out, v)
                }
                out.append(']')
            }

            else -> {
                writeString(out, value.toString())
            }
        }
    }

    private fun writeString(
        out: StringBuilder,
        s: String,
    ) {
        out.append('"')
        for (c in s) {
            when {
                c == '"' -> out.append("\\\"")
                c == '\\' -> out.append("\\\\")
                c == '\n' -> out.append("\\n")
                c == '\r' -> out.append("\\r")
                c == '\t' -> out.append("\\t")
                c < ' ' -> out.append(String.format("\\u%04x", c.code))
                else -> out.append(c)
            }
        }
        out.append('"')
    }

    private class Reader(
        val s: String,
    ) {
        fun error(
            message: String,
            pos: Int,
        ) = JsonParseException(message, s.codePointCount(0, minOf(pos, s.length)))

        fun ws(start: Int): Int {
            var p = start
            while (p < s.length && (s[p] == ' ' || s[p] == '\t' || s[p] == '\n' || s[p] == '\r')) p++
            return p
        }

        fun value(
            p: Int,
            depth: Int,
        ): Pair<Any?, Int> {
            if (p >= s.length) throw error("unexpected end of input", p)
            if (depth > MAX_DEPTH) throw error("nested too deeply", p)
            return when (val c = s[p]) {
                '{' -> obj(p, depth)
                '[' -> array(p, depth)
                '"' -> string(p)
                't' -> literal(p, "true", true)
                'f' -> literal(p, "false", false)
                'n' -> literal(p, "null", null)
                else -> if (c == '-' || c in '0'..'9') number(p) else throw error("unexpected character '$c'", p)
            }
        }

        fun literal(
            p: Int,
            word: String,
            v: Any?,
        ): Pair<Any?, Int> {
            if (!s.startsWith(word, p)) throw error("invalid literal", p)
            return v to p + word.length
        }

        fun number(p: Int): Pair<Any?, Int> {
            val m = NUMBER.matcher(s).region(p, s.length)
            if (!m.lookingAt()) throw error("invalid number", p)
            val text = m.group()
            val isInt = m.group(1) == null && m.group(2) == null
            val v: Any =
                if (isInt) {
                    text.toLongOrNull() ?: BigInteger(text)
                } else {
                    text.toDouble().also { if (!it.isFinite()) throw error("number out of range", p) }
                }
            return v to m.end()
        }

        fun string(start: Int): Pair<String, Int> {
            val out = StringBuilder()
            var p = start + 1
            while (true) {
                if (p >= s.length) throw error("unterminated string", start)
                val c = s[p]
                when {
                    c == '"' -> {
                        return out.toString() to p + 1
                    }

                    c == '\\' -> {
                        if (p + 1 >= s.length) throw error("unterminated string", start)
                        when (val e = s[p + 1]) {
                            '"', '\\', '/' -> {
                                out.append(e)
                            }

                            'b' -> {
                                out.append('\b')
                            }

                            'f' -> {
                                out.append('\u000c')
                            }

                            'n' -> {
                                out.append('\n')
                            }

                            'r' -> {
                                out.append('\r')
                            }

                            't' -> {
                                out.append('\t')
                            }

                            'u' -> {
                                if (p + 6 > s.length) throw error("bad \\u escape", p)
                                val hex = s.substring(p + 2, p + 6)
                                out.append(hex.toIntOrNull(16)?.toChar() ?: throw error("bad \\u escape", p))
                                p += 4
                            }

                            else -> {
                                throw error("bad escape '\\$e'", p)
                            }
                        }
                        p += 2
                    }

                    c < ' ' -> {
                        throw error("control character in string", p)
                    }

                    else -> {
                        out.append(c)
                        p++
                    }
                }
            }
        }

        fun obj(
            start: Int,
            depth: Int,
        ): Pair<Map<String, Any?>, Int> {
            val out = LinkedHashMap<String, Any?>()
            var p = ws(start + 1)
            if (p < s.length && s[p] == '}') return out to p + 1
            while (true) {
                p = ws(p)
                if (p >= s.length || s[p] != '"') throw error("expected a string key", p)
                val (key, afterKey) = string(p)
                p = ws(afterKey)
                if (p >= s.length || s[p] != ':') throw error("expected ':'", p)
                val (v, afterValue) = value(ws(p + 1), depth + 1)
                out[key] = v
                p = ws(afterValue)
                if (p >= s.length) throw error("unexpected end of input", p)
                when (s[p]) {
                    ',' -> p++
                    '}' -> return out to p + 1
                    else -> throw error("expected ',' or '}'", p)
                }
            }
        }

        fun array(
            start: Int,
            depth: Int,
        ): Pair<List<Any?>, Int> {
            val out = ArrayList<Any?>()
            var p = ws(start + 1)
            if (p < s.length && s[p] == ']') return out to p + 1
            while (true) {
                val (v, after) = value(ws(p), depth + 1)
                out.add(v)
                p = ws(after)
                if (p >= s.length) throw error("unexpected end of input", p)
                when (s[p]) {
                    ',' -> p++
                    ']' -> return out to p + 1
                    else -> throw error("expected ',' or ']'", p)
                }
            }
        }
    }

    private const val MAX_DEPTH = 256
    private val NUMBER = Regex("-?(?:0|[1-9][0-9]*)(\\.[0-9]+)?([eE][+-]?[0-9]+)?").toPattern()
}
