package com.gemma4mobile.agent

import java.math.BigInteger

/*
 * Gemma 4 chat / tool-calling text format: the Kotlin twin of gemma4_common/gemma4_format.py.
 * Both read tests/data/gemma4_format_vectors.json and must agree on every case; see the Python
 * module docstring for the facts taken from the Gemma 4 chat template and the assumptions made.
 */

/** A tool the model may call; [parameters] is a JSON schema (decoded JSON). */
data class ToolSpec(
    val name: String,
    val description: String,
    val parameters: Map<String, Any?> = emptyMap(),
) {
    fun toJson(): Map<String, Any?> = linkedMapOf("name" to name, "description" to description, "parameters" to parameters)

    companion object {
        @Suppress("UNCHECKED_CAST")
        fun fromJson(d: Map<String, Any?>): ToolSpec =
            ToolSpec(
                d["name"] as String,
                (d["description"] as String?) ?: "",
                (d["parameters"] as Map<String, Any?>?) ?: emptyMap(),
            )
    }
}

data class ToolCall(
    val name: String,
    val arguments: Map<String, Any?> = emptyMap(),
) {
    fun toJson(): Map<String, Any?> = linkedMapOf("name" to name, "arguments" to arguments)

    companion object {
        @Suppress("UNCHECKED_CAST")
        fun fromJson(d: Map<String, Any?>): ToolCall = ToolCall(d["name"] as String, (d["arguments"] as Map<String, Any?>?) ?: emptyMap())
    }
}

/** A tool result: a map, or any other JSON value (rendered as `{value:...}`). */
data class ToolResponse(
    val name: String,
    val response: Any?,
) {
    companion object {
        fun fromJson(d: Map<String, Any?>): ToolResponse = ToolResponse(d["name"] as String, d["response"])
    }
}

/** One conversation message; [role] is "system", "user", "model" or "tool". */
data class Message(
    val role: String,
    val content: String = "",
    val toolCalls: List<ToolCall> = emptyList(),
    val toolResponses: List<ToolResponse> = emptyList(),
    val thinking: String? = null,
) {
    companion object {
        @Suppress("UNCHECKED_CAST")
        fun fromJson(d: Map<String, Any?>): Message =
            Message(
                role = d["role"] as String,
                content = (d["content"] as String?) ?: "",
                toolCalls = ((d["tool_calls"] as List<Map<String, Any?>>?) ?: emptyList()).map { ToolCall.fromJson(it) },
                toolResponses = ((d["tool_responses"] as List<Map<String, Any?>>?) ?: emptyList()).map { ToolResponse.fromJson(it) },
                thinking = d["thinking"] as String?,
            )
    }
}

data class ParsedOutput(
    val text: String,
    val thinking: String?,
    val toolCalls: List<ToolCall>,
)

/** Malformed tool-call or value text; [position] counts code points, as Python indexes strings. */
class ToolCallParseException(
    val reason: String,
    val position: Int,
) : IllegalArgumentException("$reason at position $position")

/** A value the Gemma 4 value syntax cannot carry (NaN, a string containing the quote token...). */
class ToolCallEncodeException(
    message: String,
) : IllegalArgumentException(message)

object GemmaFormat {
    const val BOS = "<bos>"
    const val EOS = "<eos>"
    const val PAD = "<pad>"
    const val QUOTE = "<|\"|>"
    const val TURN_OPEN = "<|turn>"
    const val TURN_CLOSE = "<turn|>"
    const val TOOL_OPEN = "<|tool>"
    const val TOOL_CLOSE = "<tool|>"
    const val CALL_OPEN = "<|tool_call>"
    const val CALL_CLOSE = "<tool_call|>"
    const val RESPONSE_OPEN = "<|tool_response>"
    const val RESPONSE_CLOSE = "<tool_response|>"
    const val CHANNEL_OPEN = "<|channel>"
    const val CHANNEL_CLOSE = "<channel|>"
    const val THINK = "<|think|>"
    const val MAX_DEPTH = 64

    val SPECIAL_TOKENS =
        listOf(
            PAD,
            EOS,
            BOS,
            TURN_OPEN,
            TURN_CLOSE,
            TOOL_OPEN,
            TOOL_CLOSE,
            CALL_OPEN,
            CALL_CLOSE,
            RESPONSE_OPEN,
            RESPONSE_CLOSE,
            CHANNEL_OPEN,
            CHANNEL_CLOSE,
            QUOTE,
            THINK,
        )

    /** Where generation stops: end of turn, or the model handing over to the tool runner. */
    val STOP_SEQUENCES = listOf(TURN_CLOSE, RESPONSE_OPEN, EOS)

    private const val WS = " \t\r\n"
    private const val NOT_BARE = WS + ":,{}[]<>\"|"
    private val BARE_KEY = Regex("[A-Za-z0-9_.$\\-]+")
    private val TOOL_NAME = Regex("[A-Za-z_][A-Za-z0-9_.\\-]*")
    private val NUMBER = Regex("-?[0-9]+(\\.[0-9]+)?([eE][+-]?[0-9]+)?").toPattern()
    private val MARKERS = listOf(CALL_OPEN, CALL_CLOSE, CHANNEL_OPEN, CHANNEL_CLOSE, TURN_CLOSE, RESPONSE_OPEN, EOS)
    private val ROLES = listOf("system", "user", "model", "tool")

    fun isValidToolName(name: String): Boolean = TOOL_NAME.matches(name)

    // ------------------------------------------------------------------ value encoding

    private fun sortedItems(d: Map<*, *>): List<Pair<String, Any?>> {
        val items =
            d.entries.map { (k, v) ->
                if (k !is String) throw ToolCallEncodeException("object keys must be strings, got $k")
                k to v
            }
        // Jinja's dictsort: case-insensitive and stable.
        return items.sortedWith { a, b -> PyStr.compare(a.first.lowercase(), b.first.lowercase()) }
    }

    private fun quote(s: String): String {
        if (s.contains(QUOTE)) throw ToolCallEncodeException("a string cannot contain $QUOTE")
        return QUOTE + s + QUOTE
    }

    private fun key(
        k: String,
        escapeKeys: Boolean,
    ): String = if (escapeKeys || !BARE_KEY.matches(k)) quote(k) else k

    private fun fmt(
        v: Any?,
        escapeKeys: Boolean,
    ): String =
        when (v) {
            null -> {
                "null"
            }

            is String -> {
                quote(v)
            }

            is Boolean -> {
                if (v) "true" else "false"
            }

            is Int, is Long, is Short, is Byte, is BigInteger -> {
                v.toString()
            }

            is Double -> {
                if (!v.isFinite()) throw ToolCallEncodeException("cannot encode non-finite number $v")
                PyFloat.repr(v)
            }

            is Float -> {
                fmt(v.toDouble(), escapeKeys)
            }

            is Map<*, *> -> {
                sortedItems(v).joinToString(",", "{", "}") { (k, x) -> key(k, escapeKeys) + ":" + fmt(x, escapeKeys) }
            }

            is List<*> -> {
                v.joinToString(",", "[", "]") { fmt(it, escapeKeys) }
            }

            else -> {
                throw ToolCallEncodeException("cannot encode value of type ${v::class.simpleName}")
            }
        }

    /** Encode a JSON-like value in Gemma 4's call syntax (bare keys, as in tool-call arguments). */
    fun encodeValue(v: Any?): String = fmt(v, false)

    /** Decode one value; throws [ToolCallParseException] on malformed text. */
    fun decodeValue(s: String): Any? {
        val r = Reader(s)
        val (v, end) = r.value(0, 0)
        val p = r.ws(end)
        if (p != s.length) throw r.err("unexpected trailing characters", p)
        return v
    }

    private class Reader(
        val s: String,
    ) {
        val n = s.length

        fun err(
            message: String,
            pos: Int,
        ) = ToolCallParseException(message, s.codePointCount(0, minOf(pos, n)))

        fun ws(start: Int): Int {
            var p = start
            while (p < n && WS.indexOf(s[p]) >= 0) p++
            return p
        }

        fun bare(start: Int): Int {
            var p = start
            while (p < n && NOT_BARE.indexOf(s[p]) < 0) p++
            return p
        }

        fun describe(p: Int): String = "'" + String(Character.toChars(s.codePointAt(p))) + "'"

        fun string(p: Int): Pair<String, Int> {
            val start = p + QUOTE.length
            val end = s.indexOf(QUOTE, start)
            if (end < 0) throw err("unterminated string", p)
            return s.substring(start, end) to end + QUOTE.length
        }

        fun value(
            start: Int,
            depth: Int,
        ): Pair<Any?, Int> {
            val p = ws(start)
            if (p >= n) throw err("unexpected end of input, expected a value", p)
            if (depth > MAX_DEPTH) throw err("values nested too deeply", p)
            if (s.startsWith(QUOTE, p)) return string(p)
            val c = s[p]
            if (c == '{') return obj(p, depth)
            if (c == '[') return array(p, depth)
            if (c == '-' || c in '0'..'9') {
                val m = NUMBER.matcher(s).region(p, n)
                if (!m.lookingAt()) throw err("invalid number", p)
                val text = m.group()
                if (m.group(1) == null && m.group(2) == null) {
                    return (text.toLongOrNull() ?: BigInteger(text)) to m.end()
                }
                val f = text.toDouble()
                if (!f.isFinite()) throw err("number out of range", p)
                return f to m.end()
            }
            for ((word, v) in LITERALS) {
                if (s.startsWith(word, p)) return v to p + word.length
            }
            throw err("unexpected character ${describe(p)}, expected a value", p)
        }

        fun key(p: Int): Pair<String, Int> {
            if (p >= n) throw err("unexpected end of input, expected a key", p)
            if (s.startsWith(QUOTE, p)) return string(p)
            val end = bare(p)
            if (end == p) throw err("unexpected character ${describe(p)}, expected a key", p)
            return s.substring(p, end) to end
        }

        fun obj(
            start: Int,
            depth: Int,
        ): Pair<Map<String, Any?>, Int> {
            val out = LinkedHashMap<String, Any?>()
            var p = ws(start + 1)
            if (p < n && s[p] == '}') return out to p + 1
            while (true) {
                p = ws(p)
                val keyPos = p
                val (k, afterKey) = key(p)
                p = ws(afterKey)
                if (p >= n) throw err("unexpected end of input, expected ':'", p)
                if (s[p] != ':') throw err("unexpected character ${describe(p)}, expected ':'", p)
                val (v, afterValue) = value(p + 1, depth + 1)
                if (out.containsKey(k)) throw err("duplicate key '$k'", keyPos)
                out[k] = v
                p = ws(afterValue)
                if (p >= n) throw err("unexpected end of input, expected ',' or '}'", p)
                when (s[p]) {
                    ',' -> p++
                    '}' -> return out to p + 1
                    else -> throw err("unexpected character ${describe(p)}, expected ',' or '}'", p)
                }
            }
        }

        fun array(
            start: Int,
            depth: Int,
        ): Pair<List<Any?>, Int> {
            val out = ArrayList<Any?>()
            var p = ws(start + 1)
            if (p < n && s[p] == ']') return out to p + 1
            while (true) {
                val (v, after) = value(p, depth + 1)
                out.add(v)
                p = ws(after)
                if (p >= n) throw err("unexpected end of input, expected ',' or ']'", p)
                when (s[p]) {
                    ',' -> p++
                    ']' -> return out to p + 1
                    else -> throw err("unexpected character ${describe(p)}, expected ',' or ']'", p)
                }
            }
        }

        /** `call:NAME{...}<tool_call|>` right after `<|tool_call>`. */
        fun call(start: Int): Pair<ToolCall, Int> {
            var p = ws(start)
            if (!s.startsWith("call:", p)) throw err("expected 'call:' after $CALL_OPEN", p)
            p += "call:".length
            val end = bare(p)
            if (end == p) throw err("expected a tool name", p)
            val name = s.substring(p, end)
            p = end
            if (p >= n || s[p] != '{') throw err("expected '{' after the tool name", p)
            val (args, after) = obj(p, 1)
            p = ws(after)
            if (!s.startsWith(CALL_CLOSE, p)) throw err("expected $CALL_CLOSE", p)
            return ToolCall(name, args) to p + CALL_CLOSE.length
        }
    }

    private val LITERALS = listOf("true" to true, "false" to false, "null" to null, "None" to null)

    // ------------------------------------------------------------------ rendering

    private fun jget(
        d: Any?,
        key: String,
    ): Any? = if (d is Map<*, *>) d[key] else null

    private fun upper(v: Any?): String = if (v == null) "" else PyStr.str(v).uppercase()

    private fun truthy(v: Any?): Boolean =
        when (v) {
            null -> false
            is Boolean -> v
            is String -> v.isNotEmpty()
            is Collection<*> -> v.isNotEmpty()
            is Map<*, *> -> v.isNotEmpty()
            is Number -> v.toDouble() != 0.0
            else -> true
        }

    private fun requiredList(v: Any?): String = (v as? List<*> ?: emptyList<Any?>()).joinToString(",", "required:[", "]") { QUOTE + PyStr.str(it) + QUOTE }

    /** The template's `format_parameters` macro, quirks included. */
    private fun formatParameters(properties: Map<*, *>): String {
        val standardKeys = setOf("description", "type", "properties", "required", "nullable")
        val out = StringBuilder()
        var first = true
        for ((key, value) in sortedItems(properties)) {
            if (key in standardKeys) continue
            if (!first) out.append(',')
            first = false
            out.append(key).append(":{")
            var addComma = false

            fun comma() {
                if (addComma) out.append(',')
                addComma = true
            }
            val desc = jget(value, "description")
            if (truthy(desc)) {
                out
                    .append("description:")
                    .append(QUOTE)
                    .append(PyStr.str(desc))
                    .append(QUOTE)
                addComma = true
            }
            val vtype = upper(jget(value, "type"))
            if (vtype == "STRING") {
                val enum = jget(value, "enum")
                if (truthy(enum)) {
                    comma()
                    out.append("enum:").append(fmt(enum, true))
                }
            } else if (vtype == "ARRAY") {
                val items = jget(value, "items")
                if (items is Map<*, *> && items.isNotEmpty()) {
                    comma()
                    out.append("items:{")
                    var firstItem = true
                    for ((ik, iv) in sortedItems(items)) {
                        if (iv == null) continue
                        if (!firstItem) out.append(',')
                        firstItem = false
                        when {
                            ik == "properties" -> out.append("properties:{").append(if (iv is Map<*, *>) formatParameters(iv) else "").append("}")
                            ik == "required" -> out.append(requiredList(iv))
                            ik == "type" && iv is String -> out.append("type:").append(fmt(iv.uppercase(), true))
                            ik == "type" -> out.append("type:").append(fmt((iv as List<*>).map { upper(it) }, true))
                            else -> out.append(ik).append(':').append(fmt(iv, true))
                        }
                    }
                    out.append('}')
                }
            }
            if (truthy(jget(value, "nullable"))) {
                comma()
                out.append("nullable:true")
            }
            if (vtype == "OBJECT") {
                val props = jget(value, "properties")
                if (props is Map<*, *>) {
                    comma()
                    out.append("properties:{").append(formatParameters(props)).append('}')
                } else if (value is Map<*, *>) {
                    comma()
                    out.append("properties:{").append(formatParameters(value)).append('}')
                }
                val required = jget(value, "required")
                if (truthy(required)) {
                    comma()
                    out.append(requiredList(required))
                }
            }
            comma()
            out
                .append("type:")
                .append(QUOTE)
                .append(vtype)
                .append(QUOTE)
                .append('}')
        }
        return out.toString()
    }

    /** `<|tool>declaration:NAME{...}<tool|>` as the template's format_function_declaration. */
    fun renderToolDeclaration(spec: ToolSpec): String {
        val out = StringBuilder("declaration:").append(spec.name).append("{description:").append(QUOTE)
        out.append(spec.description).append(QUOTE)
        val params = spec.parameters
        if (params.isNotEmpty()) {
            out.append(",parameters:{")
            val props = params["properties"]
            if (truthy(props) && props is Map<*, *>) out.append("properties:{").append(formatParameters(props)).append("},")
            if (truthy(params["required"])) out.append(requiredList(params["required"])).append(',')
            out
                .append("type:")
                .append(QUOTE)
                .append(upper(params["type"]).ifEmpty { "OBJECT" })
                .append(QUOTE)
                .append('}')
        }
        out.append('}')
        return TOOL_OPEN + PyStr.strip(out.toString()) + TOOL_CLOSE
    }

    private fun checkName(name: String) {
        if (name.isEmpty() || name.any { NOT_BARE.indexOf(it) >= 0 }) {
            throw ToolCallEncodeException("invalid tool name '$name': use letters, digits, '_', '.', '-'")
        }
    }

    private fun fmtFields(d: Map<*, *>): String = sortedItems(d).joinToString(",") { (k, v) -> key(k, false) + ":" + fmt(v, false) }

    fun renderToolCall(call: ToolCall): String {
        checkName(call.name)
        return CALL_OPEN + "call:" + call.name + "{" + fmtFields(call.arguments) + "}" + CALL_CLOSE
    }

    fun renderToolResponse(resp: ToolResponse): String {
        checkName(resp.name)
        val body = if (resp.response is Map<*, *>) fmtFields(resp.response) else "value:" + fmt(resp.response, false)
        return RESPONSE_OPEN + "response:" + resp.name + "{" + body + "}" + RESPONSE_CLOSE
    }

    /** The template's strip_thinking macro: drop channel spans, then trim. */
    private fun stripThinking(text: String): String {
        val result = StringBuilder()
        for (part in text.split(CHANNEL_CLOSE)) {
            result.append(if (part.contains(CHANNEL_OPEN)) part.substring(0, part.indexOf(CHANNEL_OPEN)) else part)
        }
        return PyStr.strip(result.toString())
    }

    private fun renderThinking(thinking: String) = CHANNEL_OPEN + "thought\n" + thinking + "\n" + CHANNEL_CLOSE

    /** What the model emits for [msg]: thinking, tool calls, then text; optionally its stop marker. */
    fun renderModelTurn(
        msg: Message,
        withTerminator: Boolean = false,
    ): String {
        val out = StringBuilder()
        if (!msg.thinking.isNullOrEmpty()) out.append(renderThinking(msg.thinking))
        msg.toolCalls.forEach { out.append(renderToolCall(it)) }
        out.append(stripThinking(msg.content))
        if (withTerminator) out.append(if (msg.toolCalls.isNotEmpty()) RESPONSE_OPEN else TURN_CLOSE)
        return out.toString()
    }

    private fun prevHasCalls(
        messages: List<Message>,
        i: Int,
    ): Boolean {
        for (j in i - 1 downTo 0) {
            val m = messages[j]
            if (m.role != "tool") return m.role == "model" && m.toolCalls.isNotEmpty()
        }
        return false
    }

    /** Render a conversation as the Gemma 4 chat template does (see format.py render_prompt). */
    fun renderPrompt(
        allMessages: List<Message>,
        tools: List<ToolSpec> = emptyList(),
        systemInstruction: String? = null,
        addGenerationPrompt: Boolean = true,
        enableThinking: Boolean = false,
        addBos: Boolean = true,
    ): String {
        for (m in allMessages) require(m.role in ROLES) { "unknown role '${m.role}'" }
        var messages = allMessages
        var system = systemInstruction
        if (messages.isNotEmpty() && messages[0].role == "system") {
            require(system == null) { "give the system instruction either as an argument or as a first system message" }
            system = messages[0].content
            messages = messages.drop(1)
        }
        val out = StringBuilder()
        if (addBos) out.append(BOS)
        var prevType: String? = null
        if (enableThinking || tools.isNotEmpty() || system != null) {
            out.append(TURN_OPEN).append("system\n")
            if (enableThinking) {
                out.append(THINK).append('\n')
                prevType = "think"
            }
            if (system != null) out.append(PyStr.strip(system))
            tools.forEach { out.append(renderToolDeclaration(it)) }
            if (tools.isNotEmpty()) prevType = "tool"
            out.append(TURN_CLOSE).append('\n')
        }
        val lastUser = messages.indexOfLast { it.role == "user" }
        var prevNonTool: String? = null
        for ((i, m) in messages.withIndex()) {
            if (m.role == "tool") {
                require(prevNonTool == "model" && prevHasCalls(messages, i)) {
                    "message $i: a tool message must follow a model message with tool calls"
                }
                continue
            }
            prevType = null
            val continueTurn = m.role == "model" && prevNonTool == "model"
            prevNonTool = m.role
            if (!continueTurn) out.append(TURN_OPEN).append(m.role).append('\n')
            if (!m.thinking.isNullOrEmpty() && i > lastUser && m.toolCalls.isNotEmpty()) out.append(renderThinking(m.thinking))
            m.toolCalls.forEach { out.append(renderToolCall(it)) }
            if (m.toolCalls.isNotEmpty()) prevType = "tool_call"
            val responses = m.toolResponses.toMutableList()
            if (responses.isEmpty() && m.toolCalls.isNotEmpty()) {
                for (follow in messages.subList(i + 1, messages.size)) {
                    if (follow.role != "tool") break
                    responses.addAll(follow.toolResponses)
                }
            }
            var responsesOut = false
            for (r in responses) {
                out.append(renderToolResponse(r))
                responsesOut = true
                prevType = "tool_response"
            }
            out.append(if (m.role == "model") stripThinking(m.content) else PyStr.strip(m.content))
            if (prevType == "tool_call" && !responsesOut) {
                out.append(RESPONSE_OPEN)
            } else if (!(responsesOut && m.content.isEmpty())) {
                out.append(TURN_CLOSE).append('\n')
            }
        }
        if (addGenerationPrompt && prevType != "tool_response" && prevType != "tool_call") out.append(TURN_OPEN).append("model\n")
        return out.toString()
    }

    // ------------------------------------------------------------------ parsing

    fun parseToolCall(text: String): ToolCall {
        val r = Reader(text)
        if (!text.startsWith(CALL_OPEN)) throw r.err("expected $CALL_OPEN", 0)
        val (call, p) = r.call(CALL_OPEN.length)
        if (p != text.length) throw r.err("unexpected trailing characters", p)
        return call
    }

    /** Split model output into text, thinking and tool calls (see format.py parse_model_output). */
    fun parseModelOutput(text: String): ParsedOutput {
        val r = Reader(text)
        var pos = 0
        val parts = StringBuilder()
        val thoughts = ArrayList<String>()
        val calls = ArrayList<ToolCall>()
        loop@ while (pos < text.length) {
            var best = -1
            var marker = ""
            for (m in MARKERS) {
                val idx = text.indexOf(m, pos)
                if (idx >= 0 && (best < 0 || idx < best)) {
                    best = idx
                    marker = m
                }
            }
            if (best < 0) {
                parts.append(text, pos, text.length)
                break
            }
            parts.append(text, pos, best)
            val after = best + marker.length
            when (marker) {
                CALL_OPEN -> {
                    val (call, p) = r.call(after)
                    calls.add(call)
                    pos = p
                }

                CALL_CLOSE -> {
                    throw r.err("$CALL_CLOSE without $CALL_OPEN", best)
                }

                CHANNEL_OPEN -> {
                    val end = text.indexOf(CHANNEL_CLOSE, after)
                    var body = if (end < 0) text.substring(after) else text.substring(after, end)
                    body =
                        when {
                            body.startsWith("thought\n") -> body.substring("thought\n".length)
                            body.startsWith("thought") -> body.substring("thought".length)
                            else -> body
                        }
                    if (body.endsWith("\n")) body = body.substring(0, body.length - 1)
                    thoughts.add(body)
                    pos = if (end < 0) text.length else end + CHANNEL_CLOSE.length
                }

                CHANNEL_CLOSE -> {
                    pos = after
                }

                else -> {
                    break@loop
                }
            }
        }
        return ParsedOutput(PyStr.strip(parts.toString()), if (thoughts.isEmpty()) null else thoughts.joinToString("\n"), calls)
    }
}
