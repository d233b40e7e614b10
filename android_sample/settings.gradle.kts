pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
    }
}

rootProject.name = "gemma4-agent-sample"
include(":app", ":agent-core", ":sdk", ":sdk-jvm")
project(":sdk-jvm").projectDir = file("sdk/jvm")
