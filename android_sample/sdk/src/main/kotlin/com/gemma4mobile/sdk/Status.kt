package com.gemma4mobile.sdk

/** Where the model stands on this device (AICore / ML Kit GenAI FeatureStatus). */
enum class FeatureStatus {
    /** No verified bundle and nowhere to download one from. */
    UNAVAILABLE,

    /** No verified bundle yet, but download() can install one. */
    DOWNLOADABLE,

    /** download() is running. */
    DOWNLOADING,

    /** A bundle is installed and every file matches its manifest. */
    AVAILABLE,
}

/** What download() reports (ML Kit GenAI DownloadStatus). */
sealed class DownloadStatus {
    data class DownloadStarted(
        val bytesToDownload: Long,
    ) : DownloadStatus()

    data class DownloadProgress(
        val totalBytesDownloaded: Long,
    ) : DownloadStatus()

    data object DownloadCompleted : DownloadStatus()

    data class DownloadFailed(
        val exception: GemmaMobileException,
    ) : DownloadStatus()
}
