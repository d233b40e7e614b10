package com.gemma4mobile.agent

/** A callable tool: its declaration and what it does with validated arguments. */
fun interface ToolHandler {
    fun invoke(arguments: Map<String, Any?>): Any?
}

class Tool(
    val spec: ToolSpec,
    val handler: ToolHandler?,
)

/** Tools by name: specs for the prompt and validation, handlers for execution. */
class ToolRegistry {
    private val tools = LinkedHashMap<String, Tool>()

    fun register(
        spec: ToolSpec,
        handler: ToolHandler? = null,
    ): ToolRegistry {
        require(GemmaFormat.isValidToolName(spec.name)) { "invalid tool name '${spec.name}'" }
        tools[spec.name] = Tool(spec, handler)
        return this
    }

    /** Bind a handler to a tool declared earlier (for example from tools.json). */
    fun bind(
        name: String,
        handler: ToolHandler,
    ): ToolRegistry {
        val tool = tools[name] ?: throw IllegalArgumentException("unknown tool '$name'")
        tools[name] = Tool(tool.spec, handler)
        return this
    }

    operator fun contains(name: String): Boolean = name in tools

    operator fun get(name: String): Tool? = tools[name]

    val names: List<String> get() = tools.keys.toList()

    val specs: List<ToolSpec> get() = tools.values.map { it.spec }

    /** Validate [arguments] against the tool's schema; throws [ToolArgumentException]. */
    fun validate(call: ToolCall) {
        val tool = tools[call.name] ?: throw IllegalArgumentException("unknown tool '${call.name}'")
        SchemaValidator.validate(call.name, tool.spec.parameters, call.arguments)
    }

    companion object {
        /** Specs from a tools.json text: a list of {name, description, parameters}, or {"tools": [...]}. */
        @Suppress("UNCHECKED_CAST")
        fun fromJson(text: String): ToolRegistry {
            var data = Json.parse(text)
            if (data is Map<*, *>) data = data["tools"]
            require(data is List<*>) { "tools.json: expected a list of {name, description, parameters}" }
            val registry = ToolRegistry()
            for (entry in data) {
                // OpenAI-style {"type": "function", "function": {...}} entries are accepted too.
                val d = if (entry is Map<*, *> && entry["type"] == "function") entry["function"] else entry
                require(d is Map<*, *> && d["name"] is String) { "tools.json: every entry needs a name" }
                registry.register(ToolSpec.fromJson(d as Map<String, Any?>))
            }
            return registry
        }
    }
}
