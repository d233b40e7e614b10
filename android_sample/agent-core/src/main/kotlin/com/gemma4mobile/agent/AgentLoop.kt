package com.gemma4mobile.agent

import java.util.concurrent.ExecutionException
import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors
import java.util.concurrent.TimeUnit
import java.util.concurrent.TimeoutException

/** Text generation: continue [prompt], stopping at (or right after) any of [stop]. */
interface LlmEngine {
    fun generate(
        prompt: String,
        maxNewTokens: Int,
        stop: List<String>,
    ): String
}

data class CallRecord(
    val name: String,
    val arguments: Map<String, Any?>,
    val response: Any?,
    /** null, or one of unknown_tool, invalid_arguments, timeout, no_implementation, exception. */
    val error: String?,
    val durationMs: Long,
)

data class Step(
    val index: Int,
    val prompt: String,
    val output: String,
    val generateMs: Long,
    val text: String = "",
    val thinking: String? = null,
    val calls: List<CallRecord> = emptyList(),
    val parseError: ToolCallParseException? = null,
)

data class Transcript(
    /** answered, max_steps or parse_error. */
    val status: String,
    val answer: String?,
    val steps: List<Step>,
    val messages: List<Message>,
) {
    val toolCalls: List<CallRecord> get() = steps.flatMap { it.calls }

    fun toJson(): String =
        Json.stringify(
            linkedMapOf(
                "status" to status,
                "answer" to answer,
                "steps" to
                    steps.map { s ->
                        linkedMapOf(
                            "index" to s.index,
                            "output" to s.output,
                            "generate_ms" to s.generateMs,
                            "text" to s.text,
                            "thinking" to s.thinking,
                            "calls" to
                                s.calls.map {
                                    linkedMapOf(
                                        "name" to it.name,
                                        "arguments" to it.arguments,
                                        "response" to it.response,
                                        "error" to it.error,
                                        "duration_ms" to it.durationMs,
                                    )
                                },
                            "parse_error" to s.parseError?.let { mapOf("message" to it.reason, "position" to it.position) },
                        )
                    },
            ),
        )
}

/**
 * The agent loop (same control flow as on_device/agent/loop.py): render the conversation, generate,
 * parse, validate each call's arguments, run the tool with a timeout, append the responses inside
 * the model turn, repeat until the model answers without a call or [maxSteps] generations ran.
 * Tool failures go back to the model as `{error:...}` responses; a malformed call ends the run.
 */
class AgentLoop(
    private val engine: LlmEngine,
    private val registry: ToolRegistry,
    private val system: String? = null,
    private val maxSteps: Int = 8,
    private val stepTimeoutMs: Long = 30_000,
    private val maxNewTokens: Int = 512,
) {
    init {
        require(maxSteps >= 1) { "maxSteps must be at least 1" }
    }

    fun run(user: String): Transcript = run(listOf(Message("user", user)))

    fun run(history: List<Message>): Transcript {
        val messages = history.toMutableList()
        val steps = ArrayList<Step>()
        val executor = Executors.newCachedThreadPool { r -> Thread(r, "agent-tool").apply { isDaemon = true } }
        try {
            for (index in 0 until maxSteps) {
                val prompt = GemmaFormat.renderPrompt(messages, registry.specs, system)
                val t0 = System.nanoTime()
                val output = engine.generate(prompt, maxNewTokens, GemmaFormat.STOP_SEQUENCES)
                val generateMs = (System.nanoTime() - t0) / 1_000_000
                val parsed =
                    try {
                        GemmaFormat.parseModelOutput(output)
                    } catch (e: ToolCallParseException) {
                        steps.add(Step(index, prompt, output, generateMs, parseError = e))
                        return Transcript("parse_error", null, steps, messages)
                    }
                if (parsed.toolCalls.isEmpty()) {
                    steps.add(Step(index, prompt, output, generateMs, parsed.text, parsed.thinking))
                    messages.add(Message("model", parsed.text, thinking = parsed.thinking))
                    return Transcript("answered", parsed.text, steps, messages)
                }
                // Text before the calls stays in the transcript only: content on a calling message
                // would close the model turn after the tool responses (Gemma 4 template).
                messages.add(Message("model", "", parsed.toolCalls, thinking = parsed.thinking))
                val calls = parsed.toolCalls.map { execute(executor, it) }
                steps.add(Step(index, prompt, output, generateMs, parsed.text, parsed.thinking, calls))
                messages.add(Message("tool", toolResponses = calls.map { ToolResponse(it.name, it.response) }))
            }
            return Transcript("max_steps", null, steps, messages)
        } finally {
            executor.shutdownNow()
        }
    }

    private fun execute(
        executor: ExecutorService,
        call: ToolCall,
    ): CallRecord {
        val t0 = System.nanoTime()
        var error: String? = null
        val response: Any? =
            run {
                val tool = registry[call.name]
                if (tool == null) {
                    error = "unknown_tool"
                    return@run linkedMapOf("error" to "unknown tool ${call.name}", "available" to registry.names.joinToString(","))
                }
                try {
                    registry.validate(call)
                } catch (e: ToolArgumentException) {
                    error = "invalid_arguments"
                    return@run linkedMapOf("error" to "invalid arguments", "fields" to e.errors.associate { it.path.ifEmpty { "arguments" } to it.message })
                }
                val handler = tool.handler
                if (handler == null) {
                    error = "no_implementation"
                    return@run linkedMapOf("error" to "tool '${call.name}' has no implementation bound")
                }
                val future = executor.submit<Any?> { handler.invoke(call.arguments) }
                try {
                    sanitize(future.get(stepTimeoutMs, TimeUnit.MILLISECONDS), 0)
                } catch (e: TimeoutException) {
                    future.cancel(true)
                    error = "timeout"
                    linkedMapOf("error" to "tool '${call.name}' did not return within ${stepTimeoutMs / 1000.0} s")
                } catch (e: ExecutionException) {
                    val cause = e.cause ?: e
                    error = "exception"
                    linkedMapOf("error" to "${cause::class.simpleName}: ${cause.message}")
                }
            }
        return CallRecord(call.name, call.arguments, response, error, (System.nanoTime() - t0) / 1_000_000)
    }

    /** Make a tool result renderable: no quote tokens in strings, finite numbers, string keys. */
    private fun sanitize(
        v: Any?,
        depth: Int,
    ): Any? =
        when {
            depth > 32 -> v.toString()
            v == null || v is Boolean || v is Int || v is Long -> v
            v is String -> v.replace(GemmaFormat.QUOTE, "\"")
            v is Double -> if (v.isFinite()) v else v.toString()
            v is Float -> sanitize(v.toDouble(), depth)
            v is Number -> v.toLong()
            v is Map<*, *> -> v.entries.associate { (k, x) -> k.toString() to sanitize(x, depth + 1) }
            v is Iterable<*> -> v.map { sanitize(it, depth + 1) }
            v is Array<*> -> v.map { sanitize(it, depth + 1) }
            else -> v.toString()
        }
}
