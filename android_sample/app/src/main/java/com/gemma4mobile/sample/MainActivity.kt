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
import com.gemma4mobile.agent.AgentLoop
import com.gemma4mobile.agent.Json
import com.gemma4mobile.agent.Message
import java.io.File
import java.util.concurrent.Executors

/** A one-screen chat: the user's message goes through the agent loop on a background thread. */
class MainActivity : Activity() {
    private val worker = Executors.newSingleThreadExecutor()
    private val main = Handler(Looper.getMainLooper())
    private val history = ArrayList<Message>()
    private var engine: LiteRtLmEngine? = null

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
        loadEngine()
    }

    private fun modelFile(): File {
        // adb push model.litertlm /sdcard/Android/data/com.gemma4mobile.sample/files/model.litertlm
        val fromIntent = intent.getStringExtra("model_path")
        return if (fromIntent != null) File(fromIntent) else File(getExternalFilesDir(null), "model.litertlm")
    }

    private fun loadEngine() {
        val model = modelFile()
        if (!model.exists()) {
            status.text = getString(R.string.status_missing_model, model.absolutePath)
            return
        }
        status.text = getString(R.string.status_loading, model.name)
        val useGpu = intent.getBooleanExtra("gpu", false)
        worker.execute {
            try {
                val e = LiteRtLmEngine(model.absolutePath, cacheDir.absolutePath, useGpu)
                e.initialize()
                engine = e
                main.post {
                    status.text = getString(R.string.status_ready, e.backendName)
                    send.isEnabled = true
                }
            } catch (t: Throwable) {
                main.post { status.text = getString(R.string.status_error, t.message ?: t.toString()) }
            }
        }
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
        val llm = engine ?: return
        if (text.isEmpty()) return
        input.setText("")
        send.isEnabled = false
        append(R.string.role_user, text)
        status.text = getString(R.string.status_thinking)
        history.add(Message("user", text))
        val loop = AgentLoop(llm, DeviceTools(applicationContext).registry(), system = getString(R.string.system_instruction))
        worker.execute {
            val result =
                try {
                    loop.run(history.toList())
                } catch (t: Throwable) {
                    main.post {
                        status.text = getString(R.string.status_error, t.message ?: t.toString())
                        send.isEnabled = true
                    }
                    return@execute
                }
            main.post {
                for (call in result.toolCalls) {
                    append(R.string.role_tool, call.name + " " + Json.stringify(call.arguments) + " -> " + Json.stringify(call.response))
                }
                append(R.string.role_agent, result.answer ?: "(${result.status})")
                if (result.status == "answered") {
                    // Keep the full exchange (calls and responses included) as context for the next turn.
                    history.clear()
                    history.addAll(result.messages)
                } else {
                    // An unfinished model turn cannot be continued by a user turn: drop the attempt.
                    history.removeAt(history.size - 1)
                }
                status.text = getString(R.string.status_ready, llm.backendName)
                send.isEnabled = true
            }
        }
    }

    override fun onDestroy() {
        worker.execute { engine?.close() }
        worker.shutdown()
        super.onDestroy()
    }
}
