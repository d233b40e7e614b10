package com.gemma4mobile.sdk.jvm

import com.sun.jna.Callback
import com.sun.jna.Library
import com.sun.jna.Native
import com.sun.jna.NativeLibrary
import com.sun.jna.Pointer
import java.io.File

/**
 * The part of LiteRT-LM's C API (`liblitert-lm.so`, engine.h) this backend uses, bound with JNA.
 * Signatures follow `litert_lm/_ffi.py` in the pinned litert-lm-api wheel (0.18.1). C `bool`
 * results are read as [Byte] (only the low byte of the return register is defined), `size_t` as
 * [Long] (LP64), opaque handles as [Pointer].
 */
@Suppress("FunctionName", "ktlint:standard:function-naming")
interface LiteRtLmNative : Library {
    /** `LiteRtLmStreamCallback`: `void (*)(void* user_data, LiteRtLmStreamChunk* chunk)`. */
    fun interface StreamCallback : Callback {
        fun invoke(
            userData: Pointer?,
            chunk: Pointer?,
        )
    }

    fun litert_lm_set_min_log_level(level: Int)

    fun litert_lm_input_data_create(
        type: Int,
        data: ByteArray,
        size: Long,
    ): Pointer?

    fun litert_lm_input_data_delete(input: Pointer)

    fun litert_lm_engine_settings_create(
        modelPath: String,
        backend: String,
        visionBackend: String?,
        audioBackend: String?,
    ): Pointer?

    fun litert_lm_engine_settings_delete(settings: Pointer)

    fun litert_lm_engine_settings_set_max_num_tokens(
        settings: Pointer,
        n: Int,
    )

    fun litert_lm_engine_settings_set_num_threads(
        settings: Pointer,
        n: Int,
    )

    fun litert_lm_engine_settings_set_cache_dir(
        settings: Pointer,
        dir: String,
    )

    fun litert_lm_engine_settings_enable_benchmark(settings: Pointer)

    fun litert_lm_engine_settings_set_num_prefill_tokens(
        settings: Pointer,
        n: Int,
    )

    fun litert_lm_engine_settings_set_num_decode_tokens(
        settings: Pointer,
        n: Int,
    )

    fun litert_lm_engine_create(settings: Pointer): Pointer?

    fun litert_lm_engine_delete(engine: Pointer)

    fun litert_lm_engine_tokenize(
        engine: Pointer,
        text: String,
    ): Pointer?

    fun litert_lm_tokenize_result_get_num_tokens(result: Pointer): Long

    fun litert_lm_tokenize_result_delete(result: Pointer)

    fun litert_lm_sampler_params_create(type: Int): Pointer?

    fun litert_lm_sampler_params_delete(params: Pointer)

    fun litert_lm_sampler_params_set_top_k(
        params: Pointer,
        k: Int,
    )

    fun litert_lm_sampler_params_set_top_p(
        params: Pointer,
        p: Float,
    )

    fun litert_lm_sampler_params_set_temperature(
        params: Pointer,
        t: Float,
    )

    fun litert_lm_sampler_params_set_seed(
        params: Pointer,
        seed: Int,
    )

    fun litert_lm_session_config_create(): Pointer?

    fun litert_lm_session_config_delete(config: Pointer)

    fun litert_lm_session_config_set_max_output_tokens(
        config: Pointer,
        n: Int,
    )

    fun litert_lm_session_config_set_apply_prompt_template(
        config: Pointer,
        apply: Boolean,
    )

    fun litert_lm_session_config_set_sampler_params(
        config: Pointer,
        params: Pointer,
    )

    fun litert_lm_engine_create_session(
        engine: Pointer,
        config: Pointer?,
    ): Pointer?

    fun litert_lm_session_delete(session: Pointer)

    fun litert_lm_session_cancel_process(session: Pointer)

    fun litert_lm_session_run_prefill(
        session: Pointer,
        inputs: Array<Pointer>,
        count: Long,
    ): Int

    fun litert_lm_session_run_decode_async(
        session: Pointer,
        callback: StreamCallback,
        userData: Pointer?,
    ): Int

    fun litert_lm_stream_chunk_get_text(chunk: Pointer): Pointer?

    fun litert_lm_stream_chunk_is_final(chunk: Pointer): Byte

    fun litert_lm_stream_chunk_get_error(chunk: Pointer): Pointer?

    fun litert_lm_session_get_benchmark_info(session: Pointer): Pointer?

    fun litert_lm_benchmark_info_delete(info: Pointer)

    fun litert_lm_benchmark_info_get_total_init_time_in_second(info: Pointer): Double

    fun litert_lm_benchmark_info_get_time_to_first_token(info: Pointer): Double

    fun litert_lm_benchmark_info_get_num_prefill_turns(info: Pointer): Int

    fun litert_lm_benchmark_info_get_num_decode_turns(info: Pointer): Int

    fun litert_lm_benchmark_info_get_prefill_token_count_at(
        info: Pointer,
        i: Int,
    ): Int

    fun litert_lm_benchmark_info_get_decode_token_count_at(
        info: Pointer,
        i: Int,
    ): Int

    fun litert_lm_benchmark_info_get_prefill_tokens_per_sec_at(
        info: Pointer,
        i: Int,
    ): Double

    fun litert_lm_benchmark_info_get_decode_tokens_per_sec_at(
        info: Pointer,
        i: Int,
    ): Double

    companion object {
        const val INPUT_TEXT = 0

        /** SamplerType.TOP_P: what the Python wrapper creates for every SamplerConfig. */
        const val SAMPLER_TOP_P = 2
        const val LOG_ERROR = 4

        @Volatile private var loaded: Pair<String, LiteRtLmNative>? = null

        /**
         * Load `liblitert-lm.so` once per JVM from [path] (the wheel's copy, for example). Throws
         * [UnsatisfiedLinkError] when the file is missing or not a loadable library.
         */
        @Synchronized
        fun load(path: File): LiteRtLmNative {
            val abs = path.absolutePath
            loaded?.let { (p, lib) ->
                require(p == abs) { "liblitert-lm is already loaded from $p" }
                return lib
            }
            if (!path.isFile) throw UnsatisfiedLinkError("$abs does not exist")
            val lib =
                Native.load(
                    abs,
                    LiteRtLmNative::class.java,
                    mapOf(Library.OPTION_STRING_ENCODING to "UTF-8"),
                )
            lib.litert_lm_set_min_log_level(LOG_ERROR)
            // The three calls made per streamed token use JNA's direct mapping (no proxy, no
            // reflection per call): the binding must not add per-token cost.
            Native.register(Chunk::class.java, NativeLibrary.getInstance(abs, mapOf(Library.OPTION_STRING_ENCODING to "UTF-8")))
            loaded = abs to lib
            return lib
        }

        /** A NUL-terminated UTF-8 C string owned by the library (null pointer: null). */
        fun utf8(p: Pointer?): String? = p?.getString(0, "UTF-8")
    }

    /** The per-chunk accessors of `LiteRtLmStreamChunk`, direct-mapped by [load]. */
    object Chunk {
        @JvmStatic external fun litert_lm_stream_chunk_get_text(chunk: Pointer): Pointer?

        @JvmStatic external fun litert_lm_stream_chunk_is_final(chunk: Pointer): Byte

        @JvmStatic external fun litert_lm_stream_chunk_get_error(chunk: Pointer): Pointer?
    }
}
