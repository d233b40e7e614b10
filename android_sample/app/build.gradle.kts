plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
}

android {
    namespace = "com.gemma4mobile.sample"
    compileSdk = 35

    defaultConfig {
        applicationId = "com.gemma4mobile.sample"
        minSdk = 26
        targetSdk = 35
        versionCode = 1
        versionName = "0.1.0"
    }

    buildTypes {
        release {
            isMinifyEnabled = false
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    kotlinOptions {
        jvmTarget = "17"
    }

    packaging {
        // LiteRT-LM ships native libraries; keep them uncompressed so they can be mmapped.
        jniLibs.useLegacyPackaging = false
    }
}

dependencies {
    implementation(project(":sdk"))
    implementation("org.jetbrains.kotlinx:kotlinx-coroutines-android:1.9.0")
    // LiteRT-LM's Android artifact (Engine, EngineConfig, Session...). Pin a concrete version
    // for reproducible builds; latest.release is what the LiteRT-LM docs use.
    implementation("com.google.ai.edge.litertlm:litertlm-android:latest.release")
}
