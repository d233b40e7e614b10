package com.gemma4mobile.sdk

import com.gemma4mobile.agent.AgentLoop
import com.gemma4mobile.agent.CallRecord
import com.gemma4mobile.agent.GemmaFormat
import com.gemma4mobile.agent.LlmEngine
import com.gemma4mobile.agent.Message
import com.gemma4mobile.agent.ToolRegistry
import com.gemma4mobile.agent.Transcript
import com.gemma4mobile.sdk.GemmaMobileException.Reason
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.channels.awaitClose
import kotlinx.coroutines.channels.trySendBlocking
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.buffer
import kotlinx.coroutines.flow.callbackFlow
import kotlinx.coroutines.flow.channelFlow
import kotlinx.coroutines.flow.flowOn
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext
import java.io.File
import java.util.concurrent.CancellationException
import java.util.concurrent.atomic.AtomicBoolean

/** Where the model lives and how to run it. */
class GenerationConfig(
    /** The bundle directory the app uses (manifest.json + model.litertlm), e.g. under filesDir. */
    val bundleDir: File,
    /** LiteRT-LM's cache (compiled kernels); the app's cacheDir on Android. */
    val cacheDir: File,
    val backendFactory: BackendFactory,
    /** Where download() gets the bundle: a directory, a file: URL or an http(s) URL; null: none. */
    val downloadSource: String? = null,
    val engineOptions: EngineOptions = EngineOptions(),
)

/** One request. With [responseSchema] the answer is JSON valid for it; with [tools] the agent may call them. */
class GenerateContentRequest(
    val text: String,
    val systemInstruction: String? = null,
    /** Earlier turns (agent-core messages), oldest first. */
    val history: List<Message> = emptyList(),
    val maxOutputTokens: Int = 256,
    /** A JSON schema (as parsed by agent-core's Json): the answer is one JSON value valid for it. */
    val responseSchema: Map<String, Any?>? = null,
    /** Tools the model may call (function calling through agent-core's AgentLoop). */
    val tools: ToolRegistry? = null,
    val maxToolSteps: Int = 4,
)

class GenerateContentResponse(
    /** The model's answer, without the end-of-turn marker. */
    val text: String,
    /** The parsed JSON value when the request had a responseSchema. */
    val json: Any? = null,
    /** The tool calls the agent made, in order (function calling only). */
    val toolCalls: List<CallRecord> = emptyList(),
    /** The agent's transcript (function calling only). */
    val transcript: Transcript? = null,
    /** Figures of the last generation. */
    val stats: GenerationStats? = null,
)

/** The entry point, shaped like ML Kit GenAI's `Generation.getClient()`. */
object Generation {
    fun getClient(config: GenerationConfig): GenerativeModel = GenerativeModel(config)
}

/**
 * An on-device Gemma 4 model: status and download of its bundle, text generation (one-shot and
 * streamed), structured JSON output, function calling and token counting. Errors are
 * [GemmaMobileException]s. The engine is loaded by [warmup] or the first request; [close] frees it.
 */
class GenerativeModel internal constructor(
    val config: GenerationConfig,
) : AutoCloseable {
    private val store = BundleStore(config.bundleDir)
    private val downloading = AtomicBoolean(false)
    private val engineLock = Any()
    private var backend: LlmBackend? = null

    @Volatile private var closed = false

    /** AVAILABLE only when a bundle is installed and matches its manifest (checked once, then by stamp). */
    suspend fun checkStatus(): FeatureStatus =
        withContext(Dispatchers.IO) {
            when {
                downloading.get() -> FeatureStatus.DOWNLOADING
                store.isVerified() -> FeatureStatus.AVAILABLE
                config.downloadSource != null -> FeatureStatus.DOWNLOADABLE
                else -> FeatureStatus.UNAVAILABLE
            }
        }

    /** Install the bundle from [GenerationConfig.downloadSource], verified; ends with Completed or Failed. */
    fun download(): Flow<DownloadStatus> =
        channelFlow {
            val source = config.downloadSource
            if (source == null) {
                send(DownloadStatus.DownloadFailed(GemmaMobileException(Reason.DOWNLOAD_FAILED, "no download source configured")))
                return@channelFlow
            }
            if (!downloading.compareAndSet(false, true)) {
                send(DownloadStatus.DownloadFailed(GemmaMobileException(Reason.DOWNLOAD_FAILED, "a download is already running")))
                return@channelFlow
            }

            // Events go out as the copy runs; a collector that stops collecting stops the copy
            // (the half-copied directory is removed).
            fun report(s: DownloadStatus) {
                if (!trySendBlocking(s).isSuccess) throw CancellationException("download cancelled")
            }
            try {
                var lastReported = -1L
                // Progress is reported about every 1% (and at the end), not per buffer.
                store.install(
                    source,
                    onStart = { total -> report(DownloadStatus.DownloadStarted(total)) },
                    onProgress = { done, total ->
                        if (done == total || done - lastReported >= maxOf(1L, total / 100)) {
                            lastReported = done
                            report(DownloadStatus.DownloadProgress(done))
                        }
                    },
                )
                // A loaded engine still maps the old files: the next request loads the new bundle.
                synchronized(engineLock) {
                    backend?.close()
                    backend = null
                }
                send(DownloadStatus.DownloadCompleted)
            } catch (e: GemmaMobileException) {
                send(DownloadStatus.DownloadFailed(e))
            } finally {
                downloading.set(false)
            }
        }.buffer(Channel.RENDEZVOUS).flowOn(Dispatchers.IO)

    /** Load the engine now (seconds), so the first request does not wait for it. */
    suspend fun warmup() {
        withContext(Dispatchers.IO) { engine() }
    }

    /** The backend, loaded on first use from the verified bundle. */
    fun engine(): LlmBackend =
        synchronized(engineLock) {
            if (closed) throw GemmaMobileException(Reason.CLOSED, "this GenerativeModel is closed")
            backend ?: run {
                val manifest = store.verify()
                val model = File(config.bundleDir, manifest.mainModel)
                config.backendFactory.open(model, config.cacheDir, config.engineOptions).also { backend = it }
            }
        }

    /** The exact text the engine sees for [request] (Gemma 4 chat format, no BOS: the engine adds it). */
    fun renderPrompt(request: GenerateContentRequest): String {
        if (request.text.isEmpty() && request.history.isEmpty()) throw GemmaMobileException(Reason.INVALID_REQUEST, "empty prompt")
        return GemmaFormat.renderPrompt(
            request.history + Message("user", request.text),
            request.tools?.specs ?: emptyList(),
            request.systemInstruction,
            addBos = false,
        )
    }

    suspend fun generateContent(text: String): GenerateContentResponse = generateContent(GenerateContentRequest(text))

    suspend fun generateContent(request: GenerateContentRequest): GenerateContentResponse =
        withContext(Dispatchers.IO) {
            when {
                request.tools != null && request.responseSchema != null -> {
                    throw GemmaMobileException(Reason.INVALID_REQUEST, "give either tools or a responseSchema, not both")
                }

                request.tools != null -> {
                    agent(request)
                }

                request.responseSchema != null -> {
                    structured(request)
                }

                else -> {
                    val out = StringBuilder()
                    val stats = engine().generate(renderPrompt(request), options(request.maxOutputTokens), ChunkSink { out.append(it).let { true } })
                    GenerateContentResponse(cutAtStop(out.toString()), stats = stats)
                }
            }
        }

    /**
     * The answer as a Flow of text chunks (the end-of-turn marker left out). Cancelling the
     * collector cancels the engine's decoding at once.
     */
    fun generateContentStream(request: GenerateContentRequest): Flow<String> {
        if (request.tools != null || request.responseSchema != null) {
            throw GemmaMobileException(Reason.INVALID_REQUEST, "streaming is for plain text requests")
        }
        return callbackFlow {
            val eng = engine()
            val prompt = renderPrompt(request)
            val producer =
                launch(Dispatchers.IO) {
                    val pending = StringBuilder()
                    try {
                        eng.generate(
                            prompt,
                            options(request.maxOutputTokens),
                            ChunkSink { chunk ->
                                // Hold back text that may be the start of a stop marker; send the rest.
                                pending.append(chunk)
                                val (ready, hold) = splitForStop(pending.toString())
                                pending.setLength(0)
                                pending.append(hold)
                                // Blocks this (IO) thread, not the engine's, while the collector is behind; fails once it is gone.
                                ready.isEmpty() || trySendBlocking(ready).isSuccess
                            },
                        )
                        val tail = cutAtStop(pending.toString())
                        if (tail.isNotEmpty()) trySendBlocking(tail)
                        channel.close()
                    } catch (e: GemmaMobileException) {
                        channel.close(e)
                    }
                }
            awaitClose {
                if (producer.isActive) eng.cancel()
            }
        }.flowOn(Dispatchers.IO)
    }

    fun generateContentStream(text: String): Flow<String> = generateContentStream(GenerateContentRequest(text))

    suspend fun countTokens(request: GenerateContentRequest): Int = withContext(Dispatchers.IO) { engine().countTokens(renderPrompt(request)) }

    suspend fun countTokens(text: String): Int = withContext(Dispatchers.IO) { engine().countTokens(text) }

    private fun options(maxOutputTokens: Int) = DecodeOptions(maxOutputTokens = maxOutputTokens, stop = GemmaFormat.STOP_SEQUENCES)

    private fun structured(request: GenerateContentRequest): GenerateContentResponse {
        val eng = engine()
        val prompt = renderPrompt(request)
        var last: GenerationStats? = null
        val constrainer =
            JsonConstrainer({ text ->
                val out = StringBuilder()
                last = eng.generate(text, options(minOf(request.maxOutputTokens, 64)), ChunkSink { out.append(it).let { true } })
                cutAtStop(out.toString())
            })
        val result = constrainer.generate(prompt, request.responseSchema!!)
        return GenerateContentResponse(result.text, json = result.value, stats = last)
    }

    private fun agent(request: GenerateContentRequest): GenerateContentResponse {
        val eng = engine()
        var last: GenerationStats? = null
        val llm =
            object : LlmEngine {
                override fun generate(
                    prompt: String,
                    maxNewTokens: Int,
                    stop: List<String>,
                ): String {
                    val out = StringBuilder()
                    // The engine adds BOS itself (as HostTextEngine strips it on the Python side).
                    val raw = if (prompt.startsWith(GemmaFormat.BOS)) prompt.substring(GemmaFormat.BOS.length) else prompt
                    last = eng.generate(raw, DecodeOptions(maxOutputTokens = maxNewTokens, stop = stop), ChunkSink { out.append(it).let { true } })
                    return out.toString()
                }
            }
        val loop = AgentLoop(llm, request.tools!!, request.systemInstruction, maxSteps = request.maxToolSteps, maxNewTokens = request.maxOutputTokens)
        val transcript = loop.run(request.history + Message("user", request.text))
        return GenerateContentResponse(transcript.answer ?: "", toolCalls = transcript.toolCalls, transcript = transcript, stats = last)
    }

    override fun close() {
        synchronized(engineLock) {
            closed = true
            backend?.close()
            backend = null
        }
    }

    companion object {
        /** [text] up to the first stop marker (exclusive), as the Python demo's answers are cut. */
        fun cutAtStop(text: String): String {
            var cut = text.length
            for (s in GemmaFormat.STOP_SEQUENCES) {
                val i = text.indexOf(s)
                if (i in 0 until cut) cut = i
            }
            return text.substring(0, cut)
        }

        /** (text safe to show, text to hold back because a stop marker may start in it). */
        internal fun splitForStop(text: String): Pair<String, String> {
            val cut = cutAtStop(text)
            if (cut.length < text.length) return cut to ""
            for (k in minOf(text.length, GemmaFormat.STOP_SEQUENCES.maxOf { it.length } - 1) downTo 1) {
                val tail = text.substring(text.length - k)
                if (GemmaFormat.STOP_SEQUENCES.any { it.startsWith(tail) }) return text.substring(0, text.length - k) to tail
            }
            return text to ""
        }
    }
}
