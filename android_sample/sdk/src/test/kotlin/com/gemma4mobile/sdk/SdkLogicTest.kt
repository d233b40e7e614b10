package com.gemma4mobile.sdk

import com.gemma4mobile.agent.Json
import com.gemma4mobile.agent.SchemaValidator
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.runBlocking
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Test
import java.io.File

/**
 * The SDK's own logic with a scripted backend (the engine itself is tested in GenerationTest):
 * what the model writes is chosen here, to reach the cases a tiny model does not produce.
 */
class SdkLogicTest {
    /** Answers every prompt with [chunks], in order, then ends. */
    private class ScriptedBackend(
        private val chunks: List<String>,
    ) : LlmBackend {
        override val name = "scripted"
        override val initSeconds = 0.0

        override fun generate(
            prompt: String,
            options: DecodeOptions,
            sink: ChunkSink,
        ): GenerationStats {
            val text = StringBuilder()
            var n = 0
            for (c in chunks) {
                n++
                text.append(c)
                val stop = options.stop.firstOrNull { text.contains(it) }
                if (stop != null) {
                    val cut = text.indexOf(stop) + stop.length
                    val already = text.length - c.length
                    if (cut > already) sink.onChunk(text.substring(already, cut))
                    break
                }
                if (!sink.onChunk(c)) break
            }
            return GenerationStats(0, 0.0, n, 0.0, 0.0, n, 0, 0.0, null)
        }

        override fun cancel() = Unit

        override fun countTokens(text: String) = text.length

        override fun close() = Unit
    }

    private fun model(chunks: List<String>): GenerativeModel {
        val dir = TestEnv.copyOfBundle()
        return Generation.getClient(GenerationConfig(dir, TestEnv.tempDir("cache"), { _, _, _ -> ScriptedBackend(chunks) }))
    }

    @Test
    fun streamHoldsBackWhatMayBeAStopMarker() =
        runBlocking {
            // "<tu" could start "<turn|>": it is not shown until the next chunk decides.
            val chunks = listOf("Hel", "lo <tu", "rn|>", "never")
            model(chunks).use {
                val streamed = it.generateContentStream("Hi").toList()
                assertEquals(listOf("Hel", "lo "), streamed)
                assertEquals("Hello ", it.generateContent("Hi").text)
            }
            // A "<" that turns out not to be a marker is shown, late but whole.
            model(listOf("a <", "b", "<turn|>")).use {
                assertEquals("a <b", it.generateContentStream("Hi").toList().joinToString(""))
            }
        }

    @Test
    fun constrainedJsonIsValidWhateverTheModelWrites() {
        @Suppress("UNCHECKED_CAST")
        val schema =
            Json.parse(
                """{"type": "object", "properties": {
                     "name": {"type": "string", "maxLength": 5},
                     "n": {"type": "integer", "minimum": 1, "maximum": 9},
                     "ok": {"type": "boolean"},
                     "tag": {"enum": ["a", "b"]},
                     "opt": {"type": "number"},
                     "list": {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 2}},
                   "required": ["name", "n", "ok", "tag", "list"], "additionalProperties": false}""",
            ) as Map<String, Any?>
        val drafts =
            listOf(
                "",
                "garbage without any json",
                """{"name": "Alexander", "n": 42, "ok": maybe, "tag": "c", "list": [1, 2, 3, 4]}""",
                """{"name":"Bo","n":3,"ok":false,"tag":"b","opt":2.5,"list":[7]}""",
            )
        for (d in drafts) {
            val r = JsonConstrainer({ d }).generate("prompt", schema)
            SchemaValidator.validate("response", schema, r.value)
            assertEquals(r.value, Json.parse(r.text))
        }
        // A model whose continuation already fits is followed as it is, in one call.
        val fits = """{"name": "Bo", "n": 3, "ok": false, "tag": "b", "opt": 2.5, "list": [7]}"""
        var calls = 0
        val r =
            JsonConstrainer({ text ->
                calls++
                val written = text.removePrefix("prompt")
                if (fits.startsWith(written)) fits.substring(written.length) else ""
            }).generate("prompt", schema)
        assertEquals(Json.parse(fits), r.value)
        assertEquals(1, calls)
        // The draft is asked again where the walk left it, with what was written so far.
        val seen = ArrayList<String>()
        JsonConstrainer({
            seen.add(it)
            "nope"
        }).generate("P:", schema)
        assertTrue(seen.size > 1 && seen.all { it.startsWith("P:") } && seen.last().startsWith("P:{\"name\": "))
    }

    @Test
    fun requestsThatCannotWorkAreInvalidRequest() {
        model(listOf("x")).use { m ->
            val e =
                runCatching {
                    runBlocking {
                        m.generateContent(
                            GenerateContentRequest("q", tools = com.gemma4mobile.agent.ToolRegistry(), responseSchema = emptyMap()),
                        )
                    }
                }.exceptionOrNull()
            assertEquals(GemmaMobileException.Reason.INVALID_REQUEST, (e as GemmaMobileException).reason)
            val closed = Generation.getClient(m.config)
            closed.close()
            val c = runCatching { runBlocking { closed.generateContent("q") } }.exceptionOrNull()
            assertEquals(GemmaMobileException.Reason.CLOSED, (c as GemmaMobileException).reason)
        }
        assertTrue(File(TestEnv.bundle, BundleManifest.FILE).isFile)
    }
}
