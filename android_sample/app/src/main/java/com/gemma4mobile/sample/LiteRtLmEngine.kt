package com.gemma4mobile.sample

import com.gemma4mobile.agent.LlmEngine
import com.google.ai.edge.litertlm.Backend
import com.google.ai.edge.litertlm.Engine
import com.google.ai.edge.litertlm.EngineConfig
import com.google.ai.edge.litertlm.InputData
import com.google.ai.edge.litertlm.ResponseCallback
import com.google.ai.edge.litertlm.SamplerConfig
import com.google.ai.edge.litertlm.SessionConfig
import java.util.concurrent.CountDownLatch
import java.util.concurrent.TimeUnit

/**
 * [LlmEngine] over LiteRT-LM's Android API. The agent renders the whole Gemma 4 prompt itself
 * (agent-core's GemmaFormat), so this uses a raw [com.google.ai.edge.litertlm.Session] rather than
 * a Conversation (which would apply the model's own chat template and tool handling on top).
 * Each call runs in a fresh session: simple and stateless, at the cost of re-prefilling the prompt.
 */
class LiteRtLmEngine(
    modelPath: String,
    cacheDir: String,
    useGpu: Boolean = false,
) : LlmEngine,
    AutoCloseable {
    val backendName: String = if (useGpu) "GPU" else "CPU"

    private val engine =
        Engine(
            EngineConfig(
                modelPath = modelPath,
                backend = if (useGpu) Backend.GPU() else Backend.CPU(),
                cacheDir = cacheDir,
            ),
        )

    /** Slow (seconds): call from a background thread. */
    fun initialize() = engine.initialize()

    override fun generate(
        prompt: String,
        maxNewTokens: Int,
        stop: List<String>,
    ): String {
        // Greedy decoding: tool calls should be deterministic.
        val config = SessionConfig(samplerConfig = SamplerConfig(topK = 1, topP = 1.0, temperature = 0.0))
        engine.createSession(config).use { session ->
            val out = StringBuilder()
            val done = CountDownLatch(1)
            var failure: Throwable? = null
            var chunks = 0
            session.generateContentStream(
                listOf(InputData.Text(prompt)),
                object : ResponseCallback {
                    override fun onNext(response: String) {
                        synchronized(out) {
                            out.append(response)
                            chunks++
                            // A chunk is about one token; stop at a stop string or the token budget.
                            if (chunks >= maxNewTokens || stop.any { out.contains(it) }) session.cancelProcess()
                        }
                    }

                    override fun onDone() = done.countDown()

                    override fun onError(throwable: Throwable) {
                        // Cancellation is how we stop early; anything else is a real failure.
                        if (throwable !is java.util.concurrent.CancellationException) failure = throwable
                        done.countDown()
                    }
                },
            )
            done.await(10, TimeUnit.MINUTES)
            failure?.let { throw it }
            return truncateAtStop(synchronized(out) { out.toString() }, stop)
        }
    }

    override fun close() = engine.close()

    companion object {
        /** Keep the text up to and including the first stop string (the parser expects it). */
        fun truncateAtStop(
            text: String,
            stop: List<String>,
        ): String {
            var cut = text.length
            var keep = 0
            for (s in stop) {
                val i = text.indexOf(s)
                if (i in 0 until cut) {
                    cut = i
                    keep = s.length
                }
            }
            return text.substring(0, minOf(text.length, cut + keep))
        }
    }
}
