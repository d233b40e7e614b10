package com.gemma4mobile.sdk.jvm

import com.gemma4mobile.agent.Json
import com.gemma4mobile.sdk.ChunkSink
import com.gemma4mobile.sdk.DecodeOptions
import com.gemma4mobile.sdk.EngineOptions
import java.io.File

/**
 * The JVM half of benchmarks/kotlin_engine.py: load MODEL with the JVM backend, run PROMPT
 * (taken as is) WARMUP + RUNS times with greedy decoding of at most MAX_TOKENS and no stop
 * sequences, and print one JSON line: init seconds (first and second open in this process), and
 * per run the engine's decode figures and
 * the caller's wall-clock seconds for the whole generate() call.
 *
 * Usage: DecodeBench MODEL LIBRARY MAX_TOKENS WARMUP RUNS PROMPT
 */
object DecodeBench {
    @JvmStatic
    fun main(args: Array<String>) {
        require(args.size == 6) { "usage: DecodeBench MODEL LIBRARY MAX_TOKENS WARMUP RUNS PROMPT" }
        val (model, library, maxTokens, warmup, runs) = args
        val prompt = args[5]
        // Opened twice: the first open in a process pays one-time costs (JVM class loading, the
        // library's own first-call set-up); the second is the steady-state engine init.
        val cold = JvmLiteRtBackend.open(File(model), null, EngineOptions(maxNumTokens = 1024), File(library))
        cold.close()
        val backend = JvmLiteRtBackend.open(File(model), null, EngineOptions(maxNumTokens = 1024), File(library))
        backend.use { b ->
            val options = DecodeOptions(maxOutputTokens = maxTokens.toInt())
            val rows = ArrayList<Map<String, Any?>>()
            repeat(warmup.toInt() + runs.toInt()) { i ->
                var chars = 0
                val t0 = System.nanoTime()
                val s =
                    b.generate(
                        prompt,
                        options,
                        ChunkSink {
                            chars += it.length
                            true
                        },
                    )
                val wall = (System.nanoTime() - t0) / 1e9
                if (i >= warmup.toInt()) {
                    rows.add(
                        linkedMapOf(
                            "decode_tokens" to s.decodeTokens,
                            "engine_decode_tps" to s.decodeTokensPerSecond,
                            "chunks" to s.chunks,
                            "chars" to chars,
                            "decode_wall_s" to s.decodeWallSeconds,
                            "generate_s" to wall,
                        ),
                    )
                }
            }
            println(Json.stringify(linkedMapOf("init_cold_s" to cold.initSeconds, "init_s" to b.initSeconds, "runs" to rows)))
        }
    }
}
