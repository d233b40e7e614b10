package com.gemma4mobile.agent

import org.junit.Assert.assertEquals
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Test

class AgentLoopTest {
    private val weather =
        ToolSpec(
            "get_weather",
            "Weather for a city.",
            Json.parse(
                """{"type": "object", "properties": {"city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7}},
                "required": ["city"], "additionalProperties": false}""",
            ) as Map<String, Any?>,
        )

    private class ScriptedEngine(
        outputs: List<String>,
    ) : LlmEngine {
        private val queue = ArrayDeque(outputs)
        val prompts = ArrayList<String>()

        override fun generate(
            prompt: String,
            maxNewTokens: Int,
            stop: List<String>,
        ): String {
            prompts.add(prompt)
            return queue.removeFirst()
        }
    }

    private fun callText(
        name: String,
        args: Map<String, Any?>,
    ) = GemmaFormat.renderModelTurn(Message("model", toolCalls = listOf(ToolCall(name, args))), withTerminator = true)

    private fun registry(handler: ToolHandler = ToolHandler { args -> mapOf("city" to args["city"], "temp" to 15L) }) =
        ToolRegistry().register(weather, handler)

    @Test
    fun callsToolAndUsesResult() {
        val engine = ScriptedEngine(listOf(callText("get_weather", mapOf("city" to "Paris")), "It is 15 C.<turn|>"))
        val t = AgentLoop(engine, registry(), system = "You are a phone agent.").run("Weather in Paris?")
        assertEquals("answered", t.status)
        assertEquals("It is 15 C.", t.answer)
        assertEquals(listOf("get_weather"), t.toolCalls.map { it.name })
        assertTrue(
            engine.prompts[1].endswith(
                "<|tool_call>call:get_weather{city:<|\"|>Paris<|\"|>}<tool_call|>" +
                    "<|tool_response>response:get_weather{city:<|\"|>Paris<|\"|>,temp:15}<tool_response|>",
            ),
        )
        assertTrue(engine.prompts[0].startsWith("<bos><|turn>system\nYou are a phone agent.<|tool>declaration:get_weather"))
        Json.parse(t.toJson())
    }

    private fun String.endswith(suffix: String) = endsWith(suffix)

    @Test
    fun validationErrorsGoBackToTheModel() {
        val engine =
            ScriptedEngine(
                listOf(
                    callText("get_weather", mapOf("town" to "Paris", "days" to 9L)),
                    callText("get_weather", mapOf("city" to "Paris")),
                    "ok",
                ),
            )
        val t = AgentLoop(engine, registry()).run("weather")
        assertEquals("invalid_arguments", t.toolCalls[0].error)
        val fields = (t.toolCalls[0].response as Map<*, *>)["fields"] as Map<*, *>
        assertEquals(setOf("city", "town", "days"), fields.keys)
        assertTrue(engine.prompts[1].contains("response:get_weather{error:"))
        assertNull(t.toolCalls[1].error)
        assertEquals("answered", t.status)
    }

    @Test
    fun unknownToolExceptionTimeoutAndStepLimit() {
        val boom = ToolHandler { throw IllegalStateException("sensor offline") }
        var t =
            AgentLoop(
                ScriptedEngine(listOf(callText("nope", emptyMap()), callText("get_weather", mapOf("city" to "X")), "sorry")),
                registry(boom),
            ).run("hi")
        assertEquals(listOf("unknown_tool", "exception"), t.toolCalls.map { it.error })
        assertEquals("sorry", t.answer)

        val slow = ToolHandler { Thread.sleep(5000) }
        val start = System.nanoTime()
        t = AgentLoop(ScriptedEngine(listOf(callText("get_weather", mapOf("city" to "X")), "gave up")), registry(slow), stepTimeoutMs = 200).run("hi")
        assertTrue((System.nanoTime() - start) / 1_000_000 < 3000)
        assertEquals("timeout", t.toolCalls[0].error)

        val looping = ScriptedEngine(List(3) { callText("get_weather", mapOf("city" to "X")) })
        t = AgentLoop(looping, registry(), maxSteps = 3).run("loop")
        assertEquals("max_steps", t.status)
        assertEquals(3, t.steps.size)
    }

    @Test
    fun parseErrorEndsRun() {
        val t = AgentLoop(ScriptedEngine(listOf("<|tool_call>call:get_weather{city:Paris}<tool_call|>")), registry()).run("hi")
        assertEquals("parse_error", t.status)
        assertEquals(34, t.steps[0].parseError!!.position)
    }

    @Test
    fun schemaValidator() {
        val schema =
            Json.parse(
                """{"type": "OBJECT", "properties": {"opts": {"type": "OBJECT", "properties": {"n": {"type": "INTEGER"}},
                "required": ["n"]}, "tags": {"type": "ARRAY", "items": {"type": "STRING"}, "maxItems": 2},
                "label": {"type": "STRING", "nullable": true, "minLength": 2}}}""",
            ) as Map<String, Any?>
        SchemaValidator.validate("t", schema, mapOf("opts" to mapOf("n" to 1L), "tags" to listOf("a"), "label" to null))
        try {
            SchemaValidator.validate("t", schema, mapOf("opts" to emptyMap<String, Any?>(), "tags" to listOf("a", 2L, "c"), "label" to "x"))
            throw AssertionError("no error")
        } catch (e: ToolArgumentException) {
            assertEquals(listOf("label", "opts.n", "tags", "tags[1]"), e.fields.sorted())
        }
        try {
            SchemaValidator.validate("t", weather.parameters, mapOf("city" to "x", "days" to true))
            throw AssertionError("boolean accepted as integer")
        } catch (e: ToolArgumentException) {
            assertEquals(listOf("days"), e.fields)
        }
    }

    @Test
    fun registryFromJson() {
        val reg =
            ToolRegistry.fromJson(
                """[{"name": "battery_level", "description": "Battery.", "parameters": {"type": "object", "properties": {}}},
                {"type": "function", "function": {"name": "flashlight", "description": "", "parameters": {}}}]""",
            )
        assertEquals(listOf("battery_level", "flashlight"), reg.names)
        reg.bind("battery_level", ToolHandler { 80L })
        val t = AgentLoop(ScriptedEngine(listOf(callText("battery_level", emptyMap()), callText("flashlight", emptyMap()), "done")), reg).run("go")
        assertEquals(listOf(null, "no_implementation"), t.toolCalls.map { it.error })
        assertEquals(80L, t.toolCalls[0].response)
    }
}
