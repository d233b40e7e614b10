package com.gemma4mobile.sdk.jvm

import com.gemma4mobile.sdk.BackendFactory
import com.gemma4mobile.sdk.ChunkSink
import com.gemma4mobile.sdk.DecodeOptions
import com.gemma4mobile.sdk.EngineOptions
import com.gemma4mobile.sdk.GemmaMobileException
import com.gemma4mobile.sdk.GemmaMobileException.Reason
import com.gemma4mobile.sdk.GenerationStats
import com.gemma4mobile.sdk.LiteRtLmFile
import com.gemma4mobile.sdk.LlmBackend
import com.sun.jna.CallbackThreadInitializer
import com.sun.jna.Native
import com.sun.jna.Pointer
import java.io.File
import java.util.concurrent.LinkedBlockingQueue
import java.util.concurrent.TimeUnit
import java.util.concurrent.atomic.AtomicInteger
import java.util.concurrent.locks.ReentrantLock
import kotlin.concurrent.withLock

/**
 * [LlmBackend] on LiteRT-LM's CPU engine through its C API (the same `liblitert-lm.so` the Python
 * host engine uses). Each generation runs the way `on_device.engine.HostEngine.generate` does: a
 * fresh session (greedy sampler, no prompt template), prefill, then streaming decode whose chunks
 * come on the engine's thread and are handed to the caller's thread through a queue.
 */
class JvmLiteRtBackend private constructor(
    private val lib: LiteRtLmNative,
    private var engine: Pointer?,
    override val initSeconds: Double,
    val modelPath: String,
) : LlmBackend {
    override val name: String = "LiteRT-LM CPU (C API via JNA)"

    private val lock = ReentrantLock()
    private val sessionLock = Any()
    private var session: Pointer? = null

    @Volatile private var cancelRequested = false

    /**
     * Set once LiteRT-LM's cancel call has returned; a callback that starts after that counts as a
     * chunk delivered after the cancel (one may still be in flight: the step being computed).
     */
    @Volatile private var cancelIssued = false

    /** Figures of the last generation (tests and the benchmark read them). */
    @Volatile var lastStats: GenerationStats? = null
        private set

    private sealed class Event {
        class Text(
            val text: String,
            val final: Boolean,
        ) : Event()

        class Failure(
            val message: String,
        ) : Event()
    }

    private val producedAfterCancel = AtomicInteger()

    /** Where the running generation's chunks go (one generation at a time; null between them). */
    @Volatile private var current: LinkedBlockingQueue<Event>? = null

    /**
     * One stream callback for the backend's life (kept reachable by this field): JNA builds its
     * native trampoline once, and the engine's decode thread stays attached to the JVM between
     * chunks and generations (no attach per token). It only copies the chunk out and queues it.
     */
    private val callback =
        LiteRtLmNative.StreamCallback { _, chunk ->
            val afterCancel = cancelIssued
            val events = current
            if (events != null) {
                if (chunk == null) {
                    events.put(Event.Failure("null stream chunk"))
                } else {
                    val error = LiteRtLmNative.utf8(LiteRtLmNative.Chunk.litert_lm_stream_chunk_get_error(chunk))
                    if (error != null) {
                        events.put(Event.Failure(error))
                    } else {
                        val text = LiteRtLmNative.utf8(LiteRtLmNative.Chunk.litert_lm_stream_chunk_get_text(chunk)) ?: ""
                        if (afterCancel && text.isNotEmpty()) producedAfterCancel.incrementAndGet()
                        events.put(Event.Text(text, LiteRtLmNative.Chunk.litert_lm_stream_chunk_is_final(chunk).toInt() != 0))
                    }
                }
            }
        }

    init {
        Native.setCallbackThreadInitializer(callback, CallbackThreadInitializer(true, false, "litert-lm-decode"))
    }

    private fun engineOrThrow(): Pointer = engine ?: throw GemmaMobileException(Reason.CLOSED, "the engine for $modelPath is closed")

    override fun generate(
        prompt: String,
        options: DecodeOptions,
        sink: ChunkSink,
    ): GenerationStats =
        lock.withLock {
            val eng = engineOrThrow()
            val sess = openSession(eng, options)
            synchronized(sessionLock) {
                session = sess
                cancelRequested = false
                cancelIssued = false
            }
            try {
                decode(sess, prompt, options, sink)
            } finally {
                synchronized(sessionLock) { session = null }
                lib.litert_lm_session_delete(sess)
            }
        }

    private fun openSession(
        eng: Pointer,
        options: DecodeOptions,
    ): Pointer {
        val config = lib.litert_lm_session_config_create() ?: throw GemmaMobileException(Reason.GENERATION_FAILED, "could not create a session config")
        try {
            lib.litert_lm_session_config_set_apply_prompt_template(config, false)
            // As litert_lm.utils._sampler_config_to_params does for SamplerConfig(top_k=1, temperature=0, seed=0).
            val params =
                lib.litert_lm_sampler_params_create(LiteRtLmNative.SAMPLER_TOP_P)
                    ?: throw GemmaMobileException(Reason.GENERATION_FAILED, "could not create sampler params")
            try {
                lib.litert_lm_sampler_params_set_top_k(params, options.topK)
                lib.litert_lm_sampler_params_set_top_p(params, options.topP)
                lib.litert_lm_sampler_params_set_temperature(params, options.temperature)
                lib.litert_lm_sampler_params_set_seed(params, options.seed)
                lib.litert_lm_session_config_set_sampler_params(config, params)
            } finally {
                lib.litert_lm_sampler_params_delete(params)
            }
            lib.litert_lm_session_config_set_max_output_tokens(config, options.maxOutputTokens)
            return lib.litert_lm_engine_create_session(eng, config)
                ?: throw GemmaMobileException(Reason.GENERATION_FAILED, "LiteRT-LM could not create a session for $modelPath")
        } finally {
            lib.litert_lm_session_config_delete(config)
        }
    }

    private fun decode(
        sess: Pointer,
        prompt: String,
        options: DecodeOptions,
        sink: ChunkSink,
    ): GenerationStats {
        val bytes = prompt.toByteArray(Charsets.UTF_8)
        val input =
            lib.litert_lm_input_data_create(LiteRtLmNative.INPUT_TEXT, bytes, bytes.size.toLong())
                ?: throw GemmaMobileException(Reason.GENERATION_FAILED, "could not create the prompt input")
        try {
            if (lib.litert_lm_session_run_prefill(sess, arrayOf(input), 1) != 0) {
                throw GemmaMobileException(
                    Reason.GENERATION_FAILED,
                    "prefill failed (${bytes.size} bytes of prompt; is it longer than the engine's maxNumTokens?)",
                )
            }
        } finally {
            lib.litert_lm_input_data_delete(input)
        }
        val events = LinkedBlockingQueue<Event>()
        producedAfterCancel.set(0)
        current = events
        val t0 = System.nanoTime()
        if (lib.litert_lm_session_run_decode_async(sess, callback, null) != 0) {
            current = null
            throw GemmaMobileException(Reason.GENERATION_FAILED, "could not start decoding")
        }
        val text = StringBuilder()
        var chunks = 0
        var stoppedBy: String? = null
        var failure: String? = null
        var tLast = t0
        var stopping = false
        var sinkError: Throwable? = null

        // The caller's code must not leave the engine decoding into a deleted session: its
        // exception stops decoding like a cancel and is rethrown once the engine is done.
        fun deliver(chunk: String): Boolean =
            try {
                sink.onChunk(chunk)
            } catch (t: Throwable) {
                sinkError = t
                false
            }
        while (true) {
            val ev = events.poll(10, TimeUnit.MINUTES)
            if (ev == null) {
                failure = "no chunk from the engine for 10 minutes"
                break
            }
            if (ev is Event.Failure) {
                // CANCELLED (our cancel) and a full context window end decoding like the Python wrapper does.
                if (!(ev.message.contains("CANCELLED") || ev.message.contains("Max number of tokens reached"))) failure = ev.message
                break
            }
            ev as Event.Text
            if (ev.text.isNotEmpty()) {
                chunks++
                tLast = System.nanoTime()
                if (!stopping && !cancelRequested) {
                    text.append(ev.text)
                    val hit = firstStop(text, options.stop)
                    val keepGoing = hit == null && deliver(ev.text)
                    if (hit != null) {
                        stoppedBy = hit.second
                        // The caller sees the text up to the stop sequence (inclusive) only.
                        val cut = hit.first + hit.second.length
                        val already = text.length - ev.text.length
                        if (cut > already) deliver(text.substring(already, cut))
                    }
                    if (!keepGoing) {
                        if (stoppedBy == null) stoppedBy = "cancelled"
                        stopping = true
                        lib.litert_lm_session_cancel_process(sess)
                        cancelIssued = true
                    }
                }
            }
            if (ev.final) break
        }
        current = null
        sinkError?.let { throw it }
        if (cancelRequested && stoppedBy == null) stoppedBy = "cancelled"
        failure?.let { throw GemmaMobileException(Reason.GENERATION_FAILED, "LiteRT-LM decode failed: $it") }
        val stats = stats(sess, chunks, producedAfterCancel.get(), (tLast - t0) / 1e9, stoppedBy)
        lastStats = stats
        return stats
    }

    private fun stats(
        sess: Pointer,
        chunks: Int,
        afterCancel: Int,
        wall: Double,
        stoppedBy: String?,
    ): GenerationStats {
        val info = lib.litert_lm_session_get_benchmark_info(sess) ?: return GenerationStats(0, 0.0, 0, 0.0, 0.0, chunks, afterCancel, wall, stoppedBy)
        try {
            val np = lib.litert_lm_benchmark_info_get_num_prefill_turns(info)
            val nd = lib.litert_lm_benchmark_info_get_num_decode_turns(info)
            return GenerationStats(
                prefillTokens = if (np > 0) lib.litert_lm_benchmark_info_get_prefill_token_count_at(info, np - 1) else 0,
                prefillTokensPerSecond = if (np > 0) lib.litert_lm_benchmark_info_get_prefill_tokens_per_sec_at(info, np - 1) else 0.0,
                decodeTokens = if (nd > 0) lib.litert_lm_benchmark_info_get_decode_token_count_at(info, nd - 1) else 0,
                decodeTokensPerSecond = if (nd > 0) lib.litert_lm_benchmark_info_get_decode_tokens_per_sec_at(info, nd - 1) else 0.0,
                timeToFirstTokenSeconds = lib.litert_lm_benchmark_info_get_time_to_first_token(info),
                chunks = chunks,
                chunksAfterCancel = afterCancel,
                decodeWallSeconds = wall,
                stoppedBy = stoppedBy,
            )
        } finally {
            lib.litert_lm_benchmark_info_delete(info)
        }
    }

    override fun cancel() {
        synchronized(sessionLock) {
            val s = session ?: return
            if (!cancelRequested) {
                cancelRequested = true
                lib.litert_lm_session_cancel_process(s)
                cancelIssued = true
            }
        }
    }

    override fun countTokens(text: String): Int =
        lock.withLock {
            val result = lib.litert_lm_engine_tokenize(engineOrThrow(), text) ?: throw GemmaMobileException(Reason.GENERATION_FAILED, "tokenization failed")
            try {
                lib.litert_lm_tokenize_result_get_num_tokens(result).toInt()
            } finally {
                lib.litert_lm_tokenize_result_delete(result)
            }
        }

    override fun close() {
        cancel()
        lock.withLock {
            engine?.let { lib.litert_lm_engine_delete(it) }
            engine = null
        }
    }

    companion object {
        /** Where liblitert-lm.so is: -Dgemma4.litertlm.lib, then $LITERT_LM_LIB. */
        fun defaultLibrary(): File? = (System.getProperty("gemma4.litertlm.lib") ?: System.getenv("LITERT_LM_LIB"))?.let { File(it) }

        fun factory(library: File? = defaultLibrary()): BackendFactory = BackendFactory { model, cacheDir, options -> open(model, cacheDir, options, library) }

        /**
         * Load [model] on the CPU. [benchmarkDecodeTokens] (benchmarks only) makes the engine decode
         * exactly that many tokens per generation, as LiteRT-LM's own benchmark does.
         */
        fun open(
            model: File,
            cacheDir: File?,
            options: EngineOptions = EngineOptions(),
            library: File? = defaultLibrary(),
            benchmarkDecodeTokens: Int? = null,
        ): JvmLiteRtBackend {
            if (options.useGpu) throw GemmaMobileException(Reason.UNSUPPORTED, "the JVM backend runs on the CPU only")
            if (library == null) throw GemmaMobileException(Reason.ENGINE_UNAVAILABLE, "no liblitert-lm.so given (set -Dgemma4.litertlm.lib or LITERT_LM_LIB)")
            val lib =
                try {
                    LiteRtLmNative.load(library)
                } catch (e: UnsatisfiedLinkError) {
                    throw GemmaMobileException(Reason.ENGINE_UNAVAILABLE, "cannot load $library: ${e.message}", e)
                }
            // LiteRT-LM aborts the process on some truncated files: check the container first.
            LiteRtLmFile.check(model)
            val t0 = System.nanoTime()
            val settings =
                lib.litert_lm_engine_settings_create(model.absolutePath, "cpu", null, null)
                    ?: throw GemmaMobileException(Reason.MODEL_LOAD_FAILED, "LiteRT-LM rejected the engine settings for $model")
            val engine: Pointer?
            try {
                lib.litert_lm_engine_settings_enable_benchmark(settings)
                options.threads?.let { lib.litert_lm_engine_settings_set_num_threads(settings, it) }
                lib.litert_lm_engine_settings_set_max_num_tokens(settings, options.maxNumTokens)
                cacheDir?.let {
                    it.mkdirs()
                    lib.litert_lm_engine_settings_set_cache_dir(settings, it.absolutePath)
                }
                benchmarkDecodeTokens?.let { lib.litert_lm_engine_settings_set_num_decode_tokens(settings, it) }
                engine = lib.litert_lm_engine_create(settings)
            } finally {
                lib.litert_lm_engine_settings_delete(settings)
            }
            if (engine == null) {
                throw GemmaMobileException(
                    Reason.MODEL_LOAD_FAILED,
                    "LiteRT-LM could not load $model (${model.length()} bytes): truncated or not a .litertlm file",
                )
            }
            return JvmLiteRtBackend(lib, engine, (System.nanoTime() - t0) / 1e9, model.absolutePath)
        }

        /** (index, sequence) of the earliest stop sequence in [text] (gemma4_common.gemma4_format.cut_at_stop). */
        fun firstStop(
            text: CharSequence,
            stop: List<String>,
        ): Pair<Int, String>? {
            var best: Pair<Int, String>? = null
            for (s in stop) {
                val i = text.indexOf(s)
                if (i >= 0 && (best == null || i < best.first)) best = i to s
            }
            return best
        }
    }
}
