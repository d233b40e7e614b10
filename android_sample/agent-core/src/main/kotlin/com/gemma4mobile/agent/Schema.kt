package com.gemma4mobile.agent

import java.math.BigInteger

/** One bad field: [path] is dotted (`options.snooze`, `days[2]`; empty for the whole object). */
data class FieldError(
    val path: String,
    val message: String,
)

/** The arguments of a call do not satisfy the tool's schema. */
class ToolArgumentException(
    val tool: String,
    val errors: List<FieldError>,
) : IllegalArgumentException(
        "invalid arguments for tool '$tool': " + errors.joinToString("; ") { "${it.path.ifEmpty { "<arguments>" }}: ${it.message}" },
    ) {
    val fields: List<String> get() = errors.map { it.path }
}

/**
 * A small JSON-schema validator for tool arguments: `type` (one or a list; JSON-Schema or
 * Gemini upper-case names), `nullable`, `required`, `properties`, `additionalProperties: false`,
 * `enum`, `items`, `minimum`/`maximum`, `exclusiveMinimum`/`exclusiveMaximum`,
 * `minLength`/`maxLength`, `minItems`/`maxItems`. Other keywords are ignored.
 */
object SchemaValidator {
    fun validate(
        tool: String,
        schema: Map<String, Any?>,
        arguments: Any?,
    ) {
        val errors = ArrayList<FieldError>()
        check(schema, arguments, "", errors)
        if (errors.isNotEmpty()) throw ToolArgumentException(tool, errors)
    }

    private fun child(
        path: String,
        key: String,
    ) = if (path.isEmpty()) key else "$path.$key"

    private fun isInteger(v: Any?): Boolean =
        v is Int || v is Long || v is Short || v is Byte || v is BigInteger || (v is Double && v.isFinite() && v == Math.floor(v))

    private fun typeMatches(
        type: String,
        v: Any?,
    ): Boolean =
        when (type.lowercase()) {
            "string" -> v is String
            "integer" -> isInteger(v)
            "number" -> v is Number
            "boolean" -> v is Boolean
            "object" -> v is Map<*, *>
            "array" -> v is List<*>
            "null" -> v == null
            else -> true
        }

    private fun number(v: Any?): Double? = (v as? Number)?.toDouble()

    private fun check(
        schema: Map<*, *>,
        v: Any?,
        path: String,
        errors: MutableList<FieldError>,
    ) {
        val rawType = schema["type"]
        val types =
            when (rawType) {
                is String -> listOf(rawType)
                is List<*> -> rawType.map { it.toString() }
                else -> emptyList()
            }
        val nullable = schema["nullable"] == true
        if (v == null && nullable) return
        if (types.isNotEmpty() && types.none { typeMatches(it, v) }) {
            errors.add(FieldError(path, "expected ${types.joinToString(" or ") { it.lowercase() }}, got ${describe(v)}"))
            return
        }
        val enum = schema["enum"]
        if (enum is List<*> && enum.none { same(it, v) }) {
            errors.add(FieldError(path, "must be one of ${enum.joinToString(", ")}"))
        }
        val x = number(v)
        if (x != null && v !is Boolean) {
            number(schema["minimum"])?.let { if (x < it) errors.add(FieldError(path, "must be >= ${PyStr.str(schema["minimum"])}")) }
            number(schema["maximum"])?.let { if (x > it) errors.add(FieldError(path, "must be <= ${PyStr.str(schema["maximum"])}")) }
            number(schema["exclusiveMinimum"])?.let { if (x <= it) errors.add(FieldError(path, "must be > ${PyStr.str(schema["exclusiveMinimum"])}")) }
            number(schema["exclusiveMaximum"])?.let { if (x >= it) errors.add(FieldError(path, "must be < ${PyStr.str(schema["exclusiveMaximum"])}")) }
        }
        if (v is String) {
            val len = v.codePointCount(0, v.length)
            number(schema["minLength"])?.let { if (len < it) errors.add(FieldError(path, "shorter than ${it.toLong()} characters")) }
            number(schema["maxLength"])?.let { if (len > it) errors.add(FieldError(path, "longer than ${it.toLong()} characters")) }
        }
        if (v is List<*>) {
            number(schema["minItems"])?.let { if (v.size < it) errors.add(FieldError(path, "fewer than ${it.toLong()} items")) }
            number(schema["maxItems"])?.let { if (v.size > it) errors.add(FieldError(path, "more than ${it.toLong()} items")) }
            val items = schema["items"]
            if (items is Map<*, *>) v.forEachIndexed { i, item -> check(items, item, "$path[$i]", errors) }
        }
        if (v is Map<*, *>) {
            val props = schema["properties"] as? Map<*, *> ?: emptyMap<String, Any?>()
            (schema["required"] as? List<*>)?.forEach { r ->
                if (!v.containsKey(r)) errors.add(FieldError(child(path, r.toString()), "required field is missing"))
            }
            for ((k, item) in v) {
                val sub = props[k]
                if (sub is Map<*, *>) {
                    check(sub, item, child(path, k.toString()), errors)
                } else if (schema["additionalProperties"] == false) {
                    errors.add(FieldError(child(path, k.toString()), "unexpected field"))
                }
            }
        }
    }

    private fun same(
        a: Any?,
        b: Any?,
    ): Boolean =
        if (a is Number && b is Number && a !is Double &&
            b !is Double
        ) {
            a.toString() == b.toString()
        } else {
            a == b || (a is Number && b is Number && a.toDouble() == b.toDouble())
        }

    private fun describe(v: Any?): String =
        when (v) {
            null -> "null"
            is String -> "string"
            is Boolean -> "boolean"
            is Number -> "number"
            is Map<*, *> -> "object"
            is List<*> -> "array"
            else -> v::class.simpleName ?: "value"
        }
}
