// Pure Kotlin/JVM: the Gemma 4 format, tool registry, schema validation and agent loop.
// No Android dependency, so it is compiled and unit-tested off-device (see ../ci_check.sh).
plugins {
    id("org.jetbrains.kotlin.jvm")
}

kotlin {
    jvmToolchain(17)
}

dependencies {
    testImplementation("junit:junit:4.13.2")
}

tasks.test {
    // The vectors are shared with the Python tests at the repository root.
    systemProperty("gemma4.vectors", rootDir.resolve("../tests/data/gemma4_format_vectors.json").absolutePath)
}
