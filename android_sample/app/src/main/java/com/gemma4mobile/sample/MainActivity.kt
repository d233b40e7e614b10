package com.gemma4mobile.sample

import android.Manifest
import android.app.Activity
import android.content.pm.PackageManager
import android.os.Bundle
import android.os.Handler
import android.os.Looper
import android.view.inputmethod.EditorInfo
import android.widget.Button
import android.widget.EditText
import android.widget.ScrollView
import android.widget.TextView
import com.gemma4mobile.agent.Json
import com.gemma4mobile.agent.Message
import com.gemma4mobile.sdk.DownloadStatus
import com.gemma4mobile.sdk.EngineOptions
import com.gemma4mobile.sdk.FeatureStatus
import com.gemma4mobile.sdk.GenerateContentRequest
import com.gemma4mobile.sdk.Generation
import com.gemma4mobile.sdk.GenerationConfig
import com.gemma4mobile.sdk.GenerativeModel
import kotlinx.coroutines.runBlocking
import java.io.File
import java.util.concurrent.Executors

/**
 * A one-screen chat over the SDK: checkStatus, download when needed, warmup, then each message
 * goes through generateContent with the phone's tools (function calling) on a background thread.
 */
class MainActivity : Activity() {
    private val worker = Executors.newSingleThreadExecutor()
    private val main = Handler(Looper.getMainLooper())
    private val history = ArrayList<Message>()
    private var model: GenerativeModel? = null
    private var backendName = "CPU"

    private lateinit var status: TextView
    private lateinit var transcript: TextView
    private lateinit var scroll: ScrollView
    private lateinit var input: EditText
    private lateinit var send: Button

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        status = findViewById(R.id.status)
        transcript = findViewById(R.id.transcript)
        scroll = findViewById(R.id.scroll)
        input = findViewById(R.id.input)
        send = findViewById(R.id.send)
        send.setOnClickListener { submit() }
        input.setOnEditorActionListener { _, actionId, _ ->
            if (actionId == EditorInfo.IME_ACTION_SEND) submit()
            actionId == EditorInfo.IME_ACTION_SEND
        }
        if (checkSelfPermission(Manifest.permission.READ_CALENDAR) != PackageManager.PERMISSION_GRANTED) {
            requestPermissions(arrayOf(Manifest.permission.READ_CALENDAR), 1)
        }
        openModel()
    }

    /**
     * The bundle directory: `--es bundle_dir DIR` (e.g. where `gemma4-mobile push` put it,
     * /data/local/tmp/gemma4_mobile/bundles/NAME), else the app's own copy, which download()
     * installs from `--es bundle_source PATH_OR_URL`.
     */
    private fun config(): GenerationConfig {
        val useGpu = intent.getBooleanExtra("gpu", false)
        backendName = if (useGpu) "GPU" else "CPU"
        val dir = intent.getStringExtra("bundle_dir")?.let { File(it) } ?: File(getExternalFilesDir(null), "gemma4_mobile/bundle")
        return GenerationConfig(
            bundleDir = dir,
            cacheDir = cacheDir,
            backendFactory = AndroidLiteRtBackend.factory,
            downloadSource = intent.getStringExtra("bundle_source"),
            engineOptions = EngineOptions(maxNumTokens = 4096, useGpu = useGpu),
        )
    }

    private fun openModel() {
        val m = Generation.getClient(config())
        model = m
        status.text = getString(R.string.status_loading, m.config.bundleDir.absolutePath)
        worker.execute {
            try {
                runBlocking {
                    if (m.checkStatus() == FeatureStatus.DOWNLOADABLE) {
                        m.download().collect { s ->
                            when (s) {
                                is DownloadStatus.DownloadStarted -> total = s.bytesToDownload
                                is DownloadStatus.DownloadProgress -> showProgress(s.totalBytesDownloaded)
                                is DownloadStatus.DownloadFailed -> throw s.exception
                                DownloadStatus.DownloadCompleted -> Unit
                            }
                        }
                    }
                    if (m.checkStatus() != FeatureStatus.AVAILABLE) {
                        main.post { status.text = getString(R.string.status_missing_model, m.config.bundleDir.absolutePath) }
                        return@runBlocking
                    }
                    m.warmup()
                    main.post {
                        status.text = getString(R.string.status_ready, backendName)
                        send.isEnabled = true
                    }
                }
            } catch (t: Throwable) {
                main.post { status.text = getString(R.string.status_error, t.message ?: t.toString()) }
            }
        }
    }

    private var total = 0L

    private fun showProgress(done: Long) {
        val percent = if (total > 0) (done * 100 / total).toInt() else 0
        main.post { status.text = getString(R.string.status_downloading, percent) }
    }

    private fun append(
        who: Int,
        text: String,
    ) {
        transcript.append(getString(who) + ": " + text + "\n\n")
        scroll.post { scroll.fullScroll(ScrollView.FOCUS_DOWN) }
    }

    private fun submit() {
        val text = input.text.toString().trim()
        val m = model ?: return
        if (text.isEmpty()) return
        input.setText("")
        send.isEnabled = false
        append(R.string.role_user, text)
        status.text = getString(R.string.status_thinking)
        val request =
            GenerateContentRequest(
                text,
                systemInstruction = getString(R.string.system_instruction),
                history = history.toList(),
                tools = DeviceTools(applicationContext).registry(),
                maxOutputTokens = 512,
                maxToolSteps = 8,
            )
        worker.execute {
            val response =
                try {
                    runBlocking { m.generateContent(request) }
                } catch (t: Throwable) {
                    main.post {
                        status.text = getString(R.string.status_error, t.message ?: t.toString())
                        send.isEnabled = true
                    }
                    return@execute
                }
            val result = response.transcript!!
            main.post {
                for (call in response.toolCalls) {
                    append(R.string.role_tool, call.name + " " + Json.stringify(call.arguments) + " -> " + Json.stringify(call.response))
                }
                append(R.string.role_agent, result.answer ?: "(${result.status})")
                if (result.status == "answered") {
                    // Keep the full exchange (calls and responses included) as context for the next turn.
                    history.clear()
                    history.addAll(result.messages)
                }
                // An unfinished model turn cannot be continued by a user turn: the attempt is dropped.
                status.text = getString(R.string.status_ready, backendName)
                send.isEnabled = true
            }
        }
    }

    override fun onDestroy() {
        worker.execute { model?.close() }
        worker.shutdown()
        super.onDestroy()
    }
}
