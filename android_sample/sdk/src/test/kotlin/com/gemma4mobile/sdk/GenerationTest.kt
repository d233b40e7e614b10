package com.gemma4mobile.sdk

import com.gemma4mobile.agent.Json
import com.gemma4mobile.agent.SchemaValidator
import com.gemma4mobile.agent.ToolHandler
import com.gemma4mobile.agent.ToolRegistry
import com.gemma4mobile.agent.ToolSpec
import com.gemma4mobile.sdk.jvm.JvmLiteRtBackend
import kotlinx.coroutines.delay
import kotlinx.coroutines.flow.buffer
import kotlinx.coroutines.flow.onEach
import kotlinx.coroutines.flow.take
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.runBlocking
import org.junit.AfterClass
import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertNotNull
import org.junit.Assert.assertTrue
import org.junit.BeforeClass
import org.junit.Test

/** The SDK on the real LiteRT-LM engine (C API through JNA) with the tiny e2b int8 bundle. */
class GenerationTest {
    companion object {
        private lateinit var model: GenerativeModel

        @BeforeClass
        @JvmStatic
        fun open() {
            // A copy: verification writes its stamp into the bundle directory, not into the Python cache.
            model = TestEnv.client(TestEnv.copyOfBundle())
            runBlocking { model.warmup() }
        }

        @AfterClass
        @JvmStatic
        fun close() = model.close()

        private val backend get() = model.engine() as JvmLiteRtBackend

        /**
         * A long answer, to have something to cancel: a JSON description (20+ tokens), which the
         * tiny model learned for every capital. Not a long "Repeat after me": the training copies
         * one to four words, so a longer copy is out of distribution: the model trained here and
         * on a fresh CI machine answers the 18 words with 6 tokens.
         */
        private const val LONG_PROMPT = "Describe Tokyo as JSON."
    }

    private fun request(text: String) = GenerateContentRequest(text, maxOutputTokens = TestEnv.maxNewTokens)

    @Test
    fun demoPromptsGiveTheSameTextAsThePythonHostEngine() =
        runBlocking {
            assertEquals(3, TestEnv.cases.size)
            for (case in TestEnv.cases) {
                val prompt = case["prompt"] as String
                // agent-core renders the prompt byte for byte as gemma4_common.gemma4_format does ...
                assertEquals(case["rendered"], model.renderPrompt(request(prompt)))
                // ... and the engine, driven from Kotlin, answers byte for byte as from Python.
                val response = model.generateContent(request(prompt))
                assertEquals("prompt: $prompt", case["response"], response.text)
                assertTrue(response.stats!!.decodeTokens > 0)
                assertEquals((case["tokens"] as Number).toInt(), model.countTokens(case["rendered"] as String))
            }
        }

    @Test
    fun streamingYieldsTheSameTextAsOneShot() =
        runBlocking {
            var multiChunk = false
            for (prompt in TestEnv.cases.map { it["prompt"] as String } + LONG_PROMPT) {
                val oneShot = model.generateContent(request(prompt)).text
                val chunks = model.generateContentStream(request(prompt)).toList()
                assertEquals("prompt: $prompt", oneShot, chunks.joinToString(""))
                assertFalse(chunks.any { it.isEmpty() })
                multiChunk = multiChunk || chunks.size > 3
            }
            assertTrue("no answer came in more than three chunks", multiChunk)
            // A collector slower than the engine gets every chunk too (backpressure, no drop).
            val slow =
                model
                    .generateContentStream(request(LONG_PROMPT))
                    .buffer(0)
                    .onEach { delay(2) }
                    .toList()
            assertEquals(model.generateContent(request(LONG_PROMPT)).text, slow.joinToString(""))
        }

    @Test
    fun cancellingTheStreamStopsTheEngineWithinOneChunk() =
        runBlocking {
            val long = GenerateContentRequest(LONG_PROMPT, maxOutputTokens = 200)
            val full = model.generateContentStream(long).toList()
            val fullStats = backend.lastStats!!
            assertTrue("the long answer has ${full.size} chunks", full.size >= 10)

            val got = model.generateContentStream(long).take(2).toList()
            assertEquals(full.take(2), got)
            val stats = backend.lastStats!!
            assertEquals("cancelled", stats.stoppedBy)
            assertTrue("engine delivered ${stats.chunksAfterCancel} chunks after the cancel", stats.chunksAfterCancel <= 1)
            // The engine runs ahead of the collector (a queue, no backpressure), but not past the cancel.
            assertTrue("engine decoded ${stats.decodeTokens} tokens (full run: ${fullStats.decodeTokens})", stats.decodeTokens < fullStats.decodeTokens)
            assertTrue("${stats.decodeTokens} tokens decoded, ${stats.chunks} chunks delivered", stats.decodeTokens <= stats.chunks + 1)
            // The engine is usable afterwards and still deterministic.
            val case = TestEnv.cases[0]
            assertEquals(case["response"], model.generateContent(request(case["prompt"] as String)).text)
        }

    @Test
    fun cancelFromAnotherThreadStopsAOneShotGeneration() {
        val eng = backend
        val seen = ArrayList<String>()
        val stats =
            eng.generate(
                // The backend takes the prompt as it is: render the chat turn as the SDK does.
                model.renderPrompt(request(LONG_PROMPT)),
                DecodeOptions(maxOutputTokens = 200),
                ChunkSink {
                    seen.add(it)
                    if (seen.size == 3) Thread { eng.cancel() }.apply { start() }.join()
                    true
                },
            )
        assertEquals("cancelled after ${seen.size} chunks", "cancelled", stats.stoppedBy)
        assertTrue("${seen.size} chunks seen", seen.size in 3..4)
        assertTrue(stats.chunksAfterCancel <= 1)
    }

    @Test
    fun schemaConstrainedJsonParsesAndValidates() =
        runBlocking {
            @Suppress("UNCHECKED_CAST")
            val city =
                Json.parse(
                    """{"type": "object", "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
                       "required": ["city", "country"], "additionalProperties": false}""",
                ) as Map<String, Any?>
            val case = TestEnv.cases.first { (it["prompt"] as String).contains("JSON") }
            val r = model.generateContent(GenerateContentRequest(case["prompt"] as String, responseSchema = city, maxOutputTokens = 64))
            SchemaValidator.validate("response", city, r.json)
            assertEquals(r.json, Json.parse(r.text))
            // The model's own free answer already fits this schema: the constraint keeps it as it is.
            assertEquals(Json.parse(case["response"] as String), r.json)

            // A schema the model never saw: the walk still forces a valid value.
            @Suppress("UNCHECKED_CAST")
            val rich =
                Json.parse(
                    """{"type": "object", "properties": {
                         "answer": {"type": "integer", "minimum": 0, "maximum": 100},
                         "unit": {"enum": ["none", "apples", "km"]},
                         "sure": {"type": "boolean"},
                         "words": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3}},
                       "required": ["answer", "unit", "sure", "words"], "additionalProperties": false}""",
                ) as Map<String, Any?>
            for (q in listOf("What is 7 + 5?", "Hello!")) {
                val rr = model.generateContent(GenerateContentRequest(q, responseSchema = rich, maxOutputTokens = 64))
                SchemaValidator.validate("response", rich, rr.json)
                assertEquals(rr.json, Json.parse(rr.text))
            }
        }

    /** The toy tools the tiny model was trained to call (sdk_tools/tinymodels/corpus.py), declared in Kotlin. */
    private fun toyTools(calls: MutableList<Map<String, Any?>>): ToolRegistry {
        fun schema(s: String) =
            @Suppress("UNCHECKED_CAST")
            (Json.parse(s) as Map<String, Any?>)
        val weather = mapOf("Paris" to (18 to "sunny"), "Rome" to (24 to "sunny"), "Berlin" to (12 to "cloudy"))
        return ToolRegistry()
            .register(
                ToolSpec(
                    "get_weather",
                    "Get the current weather in a city.",
                    schema("""{"type": "object", "properties": {"city": {"type": "string", "description": "City name"}}, "required": ["city"]}"""),
                ),
                ToolHandler { args ->
                    calls.add(args)
                    val (t, c) = weather[args["city"]] ?: (15 to "cloudy")
                    linkedMapOf("temp_c" to t, "condition" to c)
                },
            ).register(
                ToolSpec(
                    "add",
                    "Add two integers.",
                    schema(
                        """{"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                           "required": ["a", "b"]}""",
                    ),
                ),
                ToolHandler { args -> mapOf("sum" to (args["a"] as Long) + (args["b"] as Long)) },
            ).register(
                ToolSpec(
                    "set_alarm",
                    "Set an alarm on the phone.",
                    schema(
                        """{"type": "object", "properties": {"hour": {"type": "integer"}, "minute": {"type": "integer"}}, "required": ["hour", "minute"]}""",
                    ),
                ),
                ToolHandler { mapOf("status" to "ok") },
            ).register(
                ToolSpec("get_battery", "Read the battery level in percent.", schema("""{"type": "object", "properties": {}}""")),
                ToolHandler { mapOf("level" to 88) },
            )
    }

    @Test
    fun agentCallsGetWeatherForParisAndAnswersFromTheResult() =
        runBlocking {
            @Suppress("UNCHECKED_CAST")
            val py = TestEnv.expected["agent"] as Map<String, Any?>
            val calls = ArrayList<Map<String, Any?>>()
            val r =
                model.generateContent(
                    GenerateContentRequest(
                        py["question"] as String,
                        systemInstruction = py["system"] as String,
                        tools = toyTools(calls),
                        maxOutputTokens = (py["max_new_tokens"] as Number).toInt(),
                    ),
                )
            val tr = assertNotNull(r.transcript).let { r.transcript!! }
            assertEquals(tr.toJson(), "answered", tr.status)
            assertEquals(listOf(mapOf("city" to "Paris")), calls)
            assertEquals(listOf("get_weather"), r.toolCalls.map { it.name })
            assertEquals(null, r.toolCalls[0].error)
            // The result went back to the model, which answered from it.
            assertTrue(tr.steps[1].prompt.contains("<|tool_response>response:get_weather{condition:<|\"|>sunny<|\"|>,temp_c:18}<tool_response|>"))
            assertTrue(r.text, r.text.contains("18") && r.text.contains("sunny"))
            // Same prompts and answer as the Python agent loop on the same engine.
            assertEquals(py["prompts"], tr.steps.map { it.prompt })
            assertEquals(py["answer"], r.text)
        }
}
