package com.gemma4mobile.sdk

import com.gemma4mobile.agent.Json
import com.gemma4mobile.agent.JsonParseException
import com.gemma4mobile.agent.SchemaValidator
import com.gemma4mobile.agent.ToolArgumentException
import com.gemma4mobile.sdk.GemmaMobileException.Reason

/**
 * JSON-schema-constrained generation over any backend that can continue text (the Kotlin twin,
 * in a smaller form, of on_device/agent/constrained.py). The schema is walked as a grammar:
 * what it fixes (braces, required keys, separators) is written directly; where it leaves a choice
 * (an optional key, the end of an array, an enum value, a boolean, a branch of a type list) the
 * model's greedy draft decides when it names an allowed option, else the first allowed option is
 * taken; free values (strings, numbers) come from the draft, cut where they would break the
 * grammar. A draft is reused while the output follows it and requested again after the walk
 * diverges. The result always parses; it is then validated with agent-core's SchemaValidator.
 */
class JsonConstrainer(
    /** Greedy continuation of the whole text so far (prompt + JSON written), without its stop. */
    private val continueText: (String) -> String,
    private val maxStringLength: Int = 256,
    private val maxItems: Int = 16,
) {
    class Result(
        val value: Any?,
        val text: String,
        val drafts: Int,
    )

    private lateinit var prompt: String
    private val out = StringBuilder()
    private var draft: String? = null
    private var pos = 0
    private var drafts = 0

    /** Where the output stood when a draft came back empty (the model stops there: no new one). */
    private var emptyAt = -1

    /** A fixed text missed the draft: the next draft waits for a choice or a free value. */
    private var emitMissed = false

    fun generate(
        prompt: String,
        schema: Map<String, Any?>,
    ): Result {
        this.prompt = prompt
        out.setLength(0)
        draft = null
        drafts = 0
        emptyAt = -1
        emitMissed = false
        value(schema, 0)
        val text = out.toString()
        val v =
            try {
                Json.parse(text)
            } catch (e: JsonParseException) {
                throw IllegalStateException("constrained decoding wrote invalid JSON $text: ${e.message}")
            }
        try {
            SchemaValidator.validate("response", schema, v)
        } catch (e: ToolArgumentException) {
            throw GemmaMobileException(Reason.INVALID_OUTPUT, "the answer $text does not satisfy the schema: ${e.message}")
        }
        return Result(v, text, drafts)
    }

    /**
     * The model's draft from the current position: a new one when the walk left the old one, or
     * used it up (unless the model stopped right here before).
     */
    private fun rest(): String {
        val d = draft
        val exhausted = d != null && pos >= d.length
        if (d == null || (exhausted && emptyAt != out.length)) {
            val fresh = continueText(prompt + out)
            drafts++
            draft = fresh
            pos = 0
            emitMissed = false
            emptyAt = if (fresh.isBlank()) out.length else -1
            return fresh
        }
        return d.substring(minOf(pos, d.length))
    }

    private fun skipWs(
        s: String,
        i: Int,
    ): Int {
        var j = i
        while (j < s.length && s[j] in " \t\r\n") j++
        return j
    }

    /**
     * Write [lit]; keep the draft when it has the same text (whitespace outside strings aside).
     * Without a draft, one is asked for *before* the fixed text, so that the model writes that text
     * in its own tokenization (`{"` as one token, `: "` with the space on the quote) instead of
     * continuing after a split it never saw in training: drafted after `"country": `, the tiny
     * model names another country than in its own answer. After a miss the next draft waits.
     */
    private fun emit(lit: String) {
        if (draft == null && !emitMissed) rest()
        out.append(lit)
        val d = draft ?: return
        var i = pos
        var inStr = false
        var esc = false
        for (c in lit) {
            if (!inStr && c in " \t\r\n") continue
            if (!inStr) i = skipWs(d, i)
            if (i >= d.length || d[i] != c) {
                draft = null
                emitMissed = true
                return
            }
            i++
            if (inStr) {
                if (esc) {
                    esc = false
                } else if (c == '\\') {
                    esc = true
                } else if (c == '"') {
                    inStr = false
                }
            } else if (c == '"') {
                inStr = true
            }
        }
        pos = i
    }

    /** Which of [options] the draft starts with (longest match), or null. */
    private fun drafted(options: List<String>): String? {
        val r = rest().trimStart()
        return options.filter { r.startsWith(it) }.maxByOrNull { it.length }
    }

    private fun types(schema: Map<*, *>): List<String> {
        val t = schema["type"]
        val list =
            when (t) {
                is String -> {
                    listOf(t.lowercase())
                }

                is List<*> -> {
                    t.map { it.toString().lowercase() }
                }

                else -> {
                    when {
                        schema["properties"] is Map<*, *> -> listOf("object")
                        schema["items"] is Map<*, *> -> listOf("array")
                        else -> listOf("string", "number", "boolean", "object", "array", "null")
                    }
                }
            }
        return if (schema["nullable"] == true && "null" !in list) list + "null" else list
    }

    private fun startsType(
        type: String,
        r: String,
    ): Boolean {
        val c = r.trimStart().firstOrNull() ?: return false
        return when (type) {
            "string" -> c == '"'
            "integer", "number" -> c == '-' || c.isDigit()
            "boolean" -> c == 't' || c == 'f'
            "null" -> c == 'n'
            "object" -> c == '{'
            "array" -> c == '['
            else -> false
        }
    }

    private fun value(
        schema: Map<*, *>,
        depth: Int,
    ) {
        val enum = (schema["enum"] as? List<*>) ?: schema["const"]?.let { listOf(it) }
        if (enum != null) {
            val options = enum.map { Json.stringify(it) }
            emit(drafted(options) ?: options.first())
            return
        }
        val ts = types(schema).filter { depth < 8 || (it != "object" && it != "array") }.ifEmpty { listOf("null") }
        val type = if (ts.size == 1) ts[0] else ts.firstOrNull { startsType(it, rest()) } ?: ts.first()
        when (type) {
            "object" -> obj(schema, depth)
            "array" -> array(schema, depth)
            "string" -> string(schema)
            "integer" -> number(schema, integer = true)
            "number" -> number(schema, integer = false)
            "boolean" -> emit(drafted(listOf("true", "false")) ?: "true")
            else -> emit("null")
        }
    }

    private fun obj(
        schema: Map<*, *>,
        depth: Int,
    ) {
        val props = schema["properties"] as? Map<*, *> ?: emptyMap<String, Any?>()
        val required = (schema["required"] as? List<*>)?.map { it.toString() }?.toSet() ?: emptySet()
        emit("{")
        var first = true
        for ((k, sub) in props) {
            val key = k.toString()
            val head = (if (first) "" else ", ") + Json.stringify(key) + ": "
            if (key !in required) {
                // An optional key is written when the draft writes it next.
                val r = rest().trimStart().removePrefix(",").trimStart()
                if (!r.startsWith(Json.stringify(key))) continue
            }
            emit(head)
            value(sub as? Map<*, *> ?: emptyMap<String, Any?>(), depth + 1)
            first = false
        }
        emit("}")
    }

    private fun array(
        schema: Map<*, *>,
        depth: Int,
    ) {
        val items = schema["items"] as? Map<*, *> ?: emptyMap<String, Any?>()
        val min = (schema["minItems"] as? Number)?.toInt() ?: 0
        val max = minOf((schema["maxItems"] as? Number)?.toInt() ?: maxItems, maxItems)
        emit("[")
        var n = 0
        while (n < max) {
            if (n >= min) {
                val r = rest().trimStart()
                val more = if (n == 0) r.isNotEmpty() && !r.startsWith("]") else r.startsWith(",")
                if (!more) break
            }
            if (n > 0) emit(", ")
            value(items, depth + 1)
            n++
        }
        emit("]")
    }

    private fun string(schema: Map<*, *>) {
        val r = rest()
        val start = skipWs(r, 0)
        val s = StringBuilder()
        val limit = minOf((schema["maxLength"] as? Number)?.toInt() ?: maxStringLength, maxStringLength)
        val min = (schema["minLength"] as? Number)?.toInt() ?: 0
        if (start < r.length && r[start] == '"') {
            // The draft's own JSON string, up to its closing quote (escapes decoded).
            var i = start + 1
            while (i < r.length && r[i] != '"' && s.length < limit) {
                if (r[i] == '\\' && i + 1 < r.length) {
                    val lit =
                        try {
                            Json.parse("\"" + r.substring(i, minOf(r.length, i + if (r[i + 1] == 'u') 6 else 2)) + "\"") as String
                        } catch (e: JsonParseException) {
                            break
                        }
                    s.append(lit)
                    i += if (r[i + 1] == 'u') 6 else 2
                } else {
                    if (r[i] < ' ') break
                    s.append(r[i])
                    i++
                }
            }
        } else {
            // No string in the draft: its text up to where JSON would go on.
            for (c in r.substring(start)) {
                if (c in ",}]\"\n" || s.length >= limit) break
                s.append(c)
            }
        }
        var text = s.toString().trimEnd()
        while (text.codePointCount(0, text.length) < min) text += "-"
        emit(Json.stringify(text))
    }

    private fun number(
        schema: Map<*, *>,
        integer: Boolean,
    ) {
        val r = rest().trimStart()
        val m = (if (integer) INT else NUM).find(r)?.takeIf { it.range.first == 0 }?.value
        var v: Double = m?.toDoubleOrNull() ?: 0.0
        (schema["minimum"] as? Number)?.toDouble()?.let { if (v < it) v = it }
        (schema["maximum"] as? Number)?.toDouble()?.let { if (v > it) v = it }
        (schema["exclusiveMinimum"] as? Number)?.toDouble()?.let { if (v <= it) v = if (integer) Math.floor(it) + 1 else it + 1e-6 }
        (schema["exclusiveMaximum"] as? Number)?.toDouble()?.let { if (v >= it) v = if (integer) Math.ceil(it) - 1 else it - 1e-6 }
        val text =
            if (m != null && m.toDoubleOrNull() == v) {
                m
            } else if (integer || v == Math.floor(v)) {
                v.toLong().toString()
            } else {
                v.toString()
            }
        emit(if (integer && text.contains('.')) v.toLong().toString() else text)
    }

    private companion object {
        val INT = Regex("-?(?:0|[1-9][0-9]*)")
        val NUM = Regex("-?(?:0|[1-9][0-9]*)(?:\\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
    }
}
