package com.gemma4mobile.sdk

/** The one exception type of the SDK: [reason] says what went wrong, the message says what and where. */
class GemmaMobileException(
    val reason: Reason,
    message: String,
    cause: Throwable? = null,
) : Exception("${reason.name}: $message", cause) {
    enum class Reason {
        /** No bundle where the app looks for it, or no model file inside it. */
        MODEL_NOT_FOUND,

        /** A bundle file's size or sha256 differs from its manifest, or the manifest is unreadable. */
        MODEL_CORRUPT,

        /** The engine could not load the model (truncated or not a .litertlm file, wrong backend). */
        MODEL_LOAD_FAILED,

        /** The engine's native library could not be loaded. */
        ENGINE_UNAVAILABLE,

        /** download(): the source could not be read or did not verify. */
        DOWNLOAD_FAILED,

        /** The engine failed during a generation. */
        GENERATION_FAILED,

        /** A structured answer did not validate against the requested schema. */
        INVALID_OUTPUT,

        /** The request itself is not usable (bad schema, empty prompt, bad option). */
        INVALID_REQUEST,

        /** The client was closed. */
        CLOSED,

        /** This backend cannot do what was asked (countTokens on the Android backend, GPU on the JVM). */
        UNSUPPORTED,
    }
}
