package com.gemma4mobile.sdk

import java.io.File

/** How one generation decodes. The defaults are greedy (top-k 1), like the Python host engine. */
data class DecodeOptions(
    val maxOutputTokens: Int = 256,
    /** Stop at the first of these; the result keeps the text up to and including it. */
    val stop: List<String> = emptyList(),
    val topK: Int = 1,
    val topP: Float = 0.95f,
    val temperature: Float = 0f,
    val seed: Int = 0,
) {
    init {
        if (maxOutputTokens < 1) throw GemmaMobileException(GemmaMobileException.Reason.INVALID_REQUEST, "maxOutputTokens must be at least 1")
    }
}

/** Figures of one generation: the engine's own (prefill/decode) and what the caller saw. */
data class GenerationStats(
    val prefillTokens: Int,
    val prefillTokensPerSecond: Double,
    val decodeTokens: Int,
    val decodeTokensPerSecond: Double,
    val timeToFirstTokenSeconds: Double,
    /** Text chunks the engine delivered. */
    val chunks: Int,
    /** Chunks the engine produced (on its own thread) after it was asked to cancel. */
    val chunksAfterCancel: Int,
    /** Wall-clock seconds from the start of decoding to its last chunk, measured by the caller. */
    val decodeWallSeconds: Double,
    /** The stop sequence that ended it, "cancelled", or null (token budget or end of turn). */
    val stoppedBy: String?,
)

/** What the caller gets back from one chunk: keep decoding, or stop now. */
fun interface ChunkSink {
    fun onChunk(text: String): Boolean
}

/**
 * One loaded model. Two implementations: LiteRT-LM's Android AAR (in the app) and LiteRT-LM's
 * C API through JNA (JVM: tests, desktop). One generation at a time; [cancel] may be called from
 * any thread and stops the running one within a chunk.
 */
interface LlmBackend : AutoCloseable {
    val name: String

    /** Seconds the engine took to load the model. */
    val initSeconds: Double

    /**
     * Continue [prompt] exactly as given (no chat template; the engine adds BOS), handing each text
     * chunk to [sink] in order on the calling thread. Returns when decoding has ended.
     */
    fun generate(
        prompt: String,
        options: DecodeOptions,
        sink: ChunkSink,
    ): GenerationStats

    fun cancel()

    fun countTokens(text: String): Int
}

/** Engine settings the SDK passes to a backend. */
data class EngineOptions(
    /** KV-cache size in tokens (prompt + answer). */
    val maxNumTokens: Int = 1024,
    val threads: Int? = null,
    val useGpu: Boolean = false,
)

/** Opens a [LlmBackend] on a verified model file; throws [GemmaMobileException]. */
fun interface BackendFactory {
    fun open(
        model: File,
        cacheDir: File,
        options: EngineOptions,
    ): LlmBackend
}
