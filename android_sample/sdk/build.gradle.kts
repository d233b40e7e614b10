// The SDK core: pure Kotlin/JVM (Generation / GenerativeModel, bundle verification and download,
// structured output, the LlmBackend interface). The Android app links it with its LiteRT-LM AAR
// backend; the JVM backend (JNA) is the separate :sdk-jvm project (sdk/jvm), so no JNA here.
plugins {
    id("org.jetbrains.kotlin.jvm")
}

kotlin {
    jvmToolchain(17)
}

dependencies {
    api(project(":agent-core"))
    api("org.jetbrains.kotlinx:kotlinx-coroutines-core:1.9.0")
}
