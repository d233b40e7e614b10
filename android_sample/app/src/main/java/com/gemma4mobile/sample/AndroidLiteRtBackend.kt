package com.gemma4mobile.sample

import com.gemma4mobile.sdk.BackendFactory
import com.gemma4mobile.sdk.ChunkSink
import com.gemma4mobile.sdk.DecodeOptions
import com.gemma4mobile.sdk.GemmaMobileException
import com.gemma4mobile.sdk.GemmaMobileException.Reason
import com.gemma4mobile.sdk.GenerationStats
import com.gemma4mobile.sdk.LiteRtLmFile
import com.gemma4mobile.sdk.LlmBackend
import com.google.ai.edge.litertlm.Backend
import com.google.ai.edge.litertlm.Engine
import com.google.ai.edge.litertlm.EngineConfig
import com.google.ai.edge.litertlm.InputData
import com.google.ai.edge.litertlm.ResponseCallback
import com.google.ai.edge.litertlm.SamplerConfig
import com.google.ai.edge.litertlm.Session
import com.google.ai.edge.litertlm.SessionConfig
import java.util.concurrent.LinkedBlockingQueue
import java.util.concurrent.TimeUnit

/**
 * The SDK's Android backend: [LlmBackend] over LiteRT-LM's Android AAR. The SDK renders the whole
 * Gemma 4 prompt itself (agent-core's GemmaFormat), so this uses a raw [Session] rather than a
 * Conversation (which would apply the model's chat template and tool handling on top). Each call
 * runs in a fresh session, like the JVM backend: simple and stateless, at the cost of re-prefilling.
 */
class AndroidLiteRtBackend private constructor(
    private val engine: Engine,
    override val initSeconds: Double,
    override val name: String,
) : LlmBackend {
    @Volatile private var current: Session? = null

    private sealed class Event {
        class Text(
            val text: String,
        ) : Event()

        object Done : Event()

        class Failure(
            val error: Throwable,
        ) : Event()
    }

    @Synchronized
    override fun generate(
        prompt: String,
        options: DecodeOptions,
        sink: ChunkSink,
    ): GenerationStats {
        // Greedy by default: tool calls should be deterministic.
        val config =
            SessionConfig(
                samplerConfig = SamplerConfig(topK = options.topK, topP = options.topP.toDouble(), temperature = options.temperature.toDouble()),
            )
        val session =
            try {
                engine.createSession(config)
            } catch (e: Exception) {
                throw GemmaMobileException(Reason.GENERATION_FAILED, "LiteRT-LM could not create a session: ${e.message}", e)
            }
        current = session
        try {
            val events = LinkedBlockingQueue<Event>()
            val t0 = System.nanoTime()
            session.generateContentStream(
                listOf(InputData.Text(prompt)),
                object : ResponseCallback {
                    override fun onNext(response: String) = events.put(Event.Text(response))

                    override fun onDone() = events.put(Event.Done)

                    override fun onError(throwable: Throwable) = events.put(Event.Failure(throwable))
                },
            )
            val text = StringBuilder()
            var chunks = 0
            var stoppedBy: String? = null
            var tLast = t0
            while (true) {
                val ev = events.poll(10, TimeUnit.MINUTES) ?: throw GemmaMobileException(Reason.GENERATION_FAILED, "no answer from LiteRT-LM for 10 minutes")
                if (ev is Event.Done) break
                if (ev is Event.Failure) {
                    // Cancellation is how we stop early; anything else is a real failure.
                    if (ev.error is java.util.concurrent.CancellationException || stoppedBy != null) break
                    throw GemmaMobileException(Reason.GENERATION_FAILED, "LiteRT-LM failed: ${ev.error.message}", ev.error)
                }
                val chunk = (ev as Event.Text).text
                if (chunk.isEmpty() || stoppedBy != null) continue
                chunks++
                tLast = System.nanoTime()
                text.append(chunk)
                // A chunk is about one token: stop at a stop string or at the token budget.
                val hit = options.stop.mapNotNull { s -> text.indexOf(s).takeIf { it >= 0 }?.let { it to s } }.minByOrNull { it.first }
                if (hit != null) {
                    val already = text.length - chunk.length
                    val cut = hit.first + hit.second.length
                    if (cut > already) sink.onChunk(text.substring(already, cut))
                    stoppedBy = hit.second
                } else if (!sink.onChunk(chunk)) {
                    stoppedBy = "cancelled"
                } else if (chunks >= options.maxOutputTokens) {
                    stoppedBy = "max_tokens"
                }
                if (stoppedBy != null) session.cancelProcess()
            }
            return GenerationStats(0, 0.0, chunks, 0.0, 0.0, chunks, 0, (tLast - t0) / 1e9, stoppedBy)
        } finally {
            current = null
            session.close()
        }
    }

    override fun cancel() {
        current?.cancelProcess()
    }

    override fun countTokens(text: String): Int =
        throw GemmaMobileException(Reason.UNSUPPORTED, "the LiteRT-LM Android API this sample uses has no tokenizer call")

    override fun close() = engine.close()

    companion object {
        /** Loads the model (seconds): the SDK calls it from a background thread. */
        val factory =
            BackendFactory { model, cacheDir, options ->
                LiteRtLmFile.check(model)
                val t0 = System.nanoTime()
                val engine =
                    Engine(
                        EngineConfig(
                            modelPath = model.absolutePath,
                            backend = if (options.useGpu) Backend.GPU() else Backend.CPU(),
                            maxNumTokens = options.maxNumTokens,
                            cacheDir = cacheDir.absolutePath,
                        ),
                    )
                try {
                    engine.initialize()
                } catch (e: Exception) {
                    engine.close()
                    throw GemmaMobileException(Reason.MODEL_LOAD_FAILED, "LiteRT-LM could not load $model: ${e.message}", e)
                }
                AndroidLiteRtBackend(engine, (System.nanoTime() - t0) / 1e9, if (options.useGpu) "GPU" else "CPU")
            }
    }
}
