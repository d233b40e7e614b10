// COMPILE-ONLY STUBS (android_sample/app/compile-stubs): not LiteRT-LM. The few classes and
// members of com.google.ai.edge.litertlm (litertlm-android) that AndroidLiteRtBackend uses, with
// the signatures of the public LiteRT-LM Kotlin sources, so that ci_check.sh can type-check the
// app without the AAR. Never packaged: Gradle builds against the real artifact.
@file:Suppress("unused", "UNUSED_PARAMETER")

package com.google.ai.edge.litertlm

private fun stub(): Nothing = throw UnsupportedOperationException("compile-only stub of LiteRT-LM")

sealed class Backend {
    class CPU : Backend()

    class GPU : Backend()
}

data class EngineConfig(
    val modelPath: String,
    val backend: Backend = Backend.CPU(),
    val maxNumTokens: Int? = null,
    val cacheDir: String? = null,
)

data class SamplerConfig(
    val topK: Int,
    val topP: Double,
    val temperature: Double,
)

data class SessionConfig(
    val samplerConfig: SamplerConfig? = null,
)

sealed class InputData {
    class Text(
        val text: String,
    ) : InputData()
}

interface ResponseCallback {
    fun onNext(response: String)

    fun onDone()

    fun onError(throwable: Throwable)
}

class Session : AutoCloseable {
    fun generateContentStream(
        inputData: List<InputData>,
        responseCallback: ResponseCallback,
    ): Unit = stub()

    fun cancelProcess(): Unit = stub()

    override fun close(): Unit = stub()
}

class Engine(
    val engineConfig: EngineConfig,
) : AutoCloseable {
    fun initialize(): Unit = stub()

    fun createSession(sessionConfig: SessionConfig = SessionConfig()): Session = stub()

    override fun close(): Unit = stub()
}
