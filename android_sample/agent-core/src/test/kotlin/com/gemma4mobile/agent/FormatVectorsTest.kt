package com.gemma4mobile.agent

import org.junit.Assert.assertEquals
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test
import java.io.File
import java.util.Random

/** The shared vectors (tests/data/gemma4_format_vectors.json) that the Python tests also read. */
@Suppress("UNCHECKED_CAST")
class FormatVectorsTest {
    companion object {
        private fun vectorsFile(): File {
            val given = System.getProperty("gemma4.vectors") ?: System.getenv("GEMMA4_VECTORS")
            if (given != null) return File(given)
            val rel = "tests/data/gemma4_format_vectors.json"
            return listOf("../../$rel", "../$rel", rel).map { File(it) }.firstOrNull { it.exists() }
                ?: throw IllegalStateException("set -Dgemma4.vectors or GEMMA4_VECTORS to $rel")
        }

        val vectors: Map<String, Any?> by lazy { Json.parse(vectorsFile().readText()) as Map<String, Any?> }

        fun cases(section: String): List<Map<String, Any?>> = vectors[section] as List<Map<String, Any?>>
    }

    private fun check(
        failures: MutableList<String>,
        name: String,
        block: () -> Unit,
    ) {
        try {
            block()
        } catch (e: Throwable) {
            failures.add("$name: $e")
        }
    }

    private fun assertNoFailures(failures: List<String>) {
        if (failures.isNotEmpty()) fail(failures.joinToString("\n"))
    }

    @Test
    fun renderPromptVectors() {
        val failures = ArrayList<String>()
        for (case in cases("render")) {
            check(failures, case["name"] as String) {
                val got =
                    GemmaFormat.renderPrompt(
                        (case["messages"] as List<Map<String, Any?>>).map { Message.fromJson(it) },
                        (case["tools"] as List<Map<String, Any?>>).map { ToolSpec.fromJson(it) },
                        case["system"] as String?,
                        case["add_generation_prompt"] as Boolean,
                        case["enable_thinking"] as Boolean,
                    )
                assertEquals(case["expected"], got)
            }
        }
        assertTrue(cases("render").size >= 10)
        assertNoFailures(failures)
    }

    @Test
    fun modelTurnVectors() {
        val failures = ArrayList<String>()
        for (case in cases("model_turn")) {
            check(failures, case["name"] as String) {
                val msg = Message.fromJson(case["message"] as Map<String, Any?>)
                assertEquals(case["expected"], GemmaFormat.renderModelTurn(msg))
                assertEquals(case["expected_with_terminator"], GemmaFormat.renderModelTurn(msg, withTerminator = true))
                val parsed = GemmaFormat.parseModelOutput(case["expected"] as String)
                assertEquals(msg.content, parsed.text)
                assertEquals(msg.thinking, parsed.thinking)
                assertEquals(msg.toolCalls, parsed.toolCalls)
            }
        }
        assertNoFailures(failures)
    }

    @Test
    fun valueVectors() {
        val failures = ArrayList<String>()
        for (case in cases("values")) {
            check(failures, case["name"] as String) {
                val decoded = GemmaFormat.decodeValue(case["encoded"] as String)
                assertEquals(case["value"], decoded)
                assertEquals(case["canonical"] ?: case["encoded"], GemmaFormat.encodeValue(decoded))
                if (case["decode_only"] != true) assertEquals(case["encoded"], GemmaFormat.encodeValue(case["value"]))
            }
        }
        assertNoFailures(failures)
    }

    @Test
    fun parseVectors() {
        val failures = ArrayList<String>()
        for (case in cases("parse")) {
            check(failures, case["name"] as String) {
                val parsed = GemmaFormat.parseModelOutput(case["text"] as String)
                val exp = case["expected"] as Map<String, Any?>
                assertEquals(exp["text"], parsed.text)
                assertEquals(exp["thinking"], parsed.thinking)
                assertEquals((exp["tool_calls"] as List<Map<String, Any?>>).map { ToolCall.fromJson(it) }, parsed.toolCalls)
                if (case["canonical"] == true) {
                    val msg = Message("model", parsed.text, parsed.toolCalls, thinking = parsed.thinking)
                    assertEquals(case["text"], GemmaFormat.renderModelTurn(msg))
                }
            }
        }
        assertNoFailures(failures)
    }

    @Test
    fun malformedVectors() {
        val failures = ArrayList<String>()
        for (case in cases("malformed")) {
            check(failures, case["name"] as String) {
                val text = case["text"] as String
                try {
                    if (case["kind"] == "output") GemmaFormat.parseModelOutput(text) else GemmaFormat.decodeValue(text)
                    fail("no error")
                } catch (e: ToolCallParseException) {
                    assertEquals((case["position"] as Long).toInt(), e.position)
                    assertEquals(case["message"], e.reason)
                }
            }
        }
        assertNoFailures(failures)
    }

    @Test
    fun encodeErrorVectors() {
        for (case in cases("encode_errors")) {
            try {
                GemmaFormat.encodeValue(case["value"])
                fail("${case["name"]}: no error")
            } catch (e: ToolCallEncodeException) {
                // expected
            }
        }
        try {
            GemmaFormat.encodeValue(Double.NaN)
            fail("NaN encoded")
        } catch (e: ToolCallEncodeException) {
            // expected
        }
    }

    @Test
    fun specialTokensCoverRenderedMarkers() {
        val marker = Regex("<\\|?[a-z_\"]+\\|?>")
        for (case in cases("render")) {
            for (m in marker.findAll(case["expected"] as String)) {
                assertTrue(m.value, m.value in GemmaFormat.SPECIAL_TOKENS)
            }
        }
    }

    @Test
    fun pythonFloatRepr() {
        val expected =
            mapOf(
                2.5 to "2.5",
                1e-05 to "1e-05",
                1.5e20 to "1.5e+20",
                0.1 to "0.1",
                3.0 to "3.0",
                1e16 to "1e+16",
                1e15 to "1000000000000000.0",
                0.0001 to "0.0001",
                -0.0 to "-0.0",
                123456.789 to "123456.789",
                5e-324 to "5e-324",
                1.7976931348623157e308 to "1.7976931348623157e+308",
            )
        for ((d, s) in expected) assertEquals(s, PyFloat.repr(d))
    }

    @Test
    fun fuzzOnlyParseErrors() {
        val alphabet =
            listOf(
                "<|tool_call>",
                "<tool_call|>",
                "call:",
                "f",
                "{",
                "}",
                "[",
                "]",
                ":",
                ",",
                GemmaFormat.QUOTE,
                "a",
                "1",
                "-",
                ".",
                "e",
                "true",
                "null",
                " ",
                "\n",
                "<|channel>",
                "thought",
                "<channel|>",
                "<turn|>",
                "<",
                "|",
                ">",
                "\"",
                "x",
                "\u00e9",
                "\uD83D\uDE00",
                "<|tool_response>",
                "None",
                "9".repeat(40),
            )
        val rng = Random(7)
        val seeds = cases("parse").map { it["text"] as String } + cases("values").map { it["encoded"] as String }
        repeat(20000) { i ->
            val s =
                if (i % 2 == 0) {
                    (0 until rng.nextInt(30)).joinToString("") { alphabet[rng.nextInt(alphabet.size)] }
                } else {
                    val seed = seeds[rng.nextInt(seeds.size)]
                    val cut = rng.nextInt(seed.length + 1)
                    seed.substring(0, cut) + alphabet[rng.nextInt(alphabet.size)] + seed.substring(minOf(seed.length, cut + rng.nextInt(4)))
                }
            for (f in listOf<(String) -> Any?>({ GemmaFormat.parseModelOutput(it) }, { GemmaFormat.decodeValue(it) })) {
                try {
                    f(s)
                } catch (e: ToolCallParseException) {
                    assertTrue(e.position >= 0 && e.position <= s.codePointCount(0, s.length))
                }
            }
        }
        try {
            GemmaFormat.decodeValue("[".repeat(10000))
            fail("deep nesting accepted")
        } catch (e: ToolCallParseException) {
            assertNull(null)
        }
    }
}
