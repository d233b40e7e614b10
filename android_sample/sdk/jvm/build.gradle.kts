// The SDK's JVM backend: LiteRT-LM's C API (liblitert-lm.so from the litert-lm-api wheel) through
// JNA, and the SDK's JUnit tests that run it. Sources live in ../src/jvm and ../src/test.
plugins {
    id("org.jetbrains.kotlin.jvm")
}

kotlin {
    jvmToolchain(17)
    sourceSets["main"].kotlin.srcDir("../src/jvm/kotlin")
    sourceSets["test"].kotlin.srcDir("../src/test/kotlin")
}

dependencies {
    implementation(project(":sdk"))
    implementation("net.java.dev.jna:jna:5.13.0")
    testImplementation("junit:junit:4.13.2")
}

tasks.test {
    // Written by ../scripts/host_expectations.py (bundle, liblitert-lm.so, the Python engine's answers).
    systemProperty("gemma4.expected", System.getenv("GEMMA4_EXPECTED") ?: rootDir.resolve("build/ci/host_expectations.json").absolutePath)
}
