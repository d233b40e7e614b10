// COMPILE-ONLY STUB (android_sample/app/compile-stubs): not the Android SDK. Just the members the
// sample app uses, with android.jar's own "Stub!" bodies, so ci_check.sh can type-check the app
// without an android.jar. Never packaged: Gradle builds against the real SDK.
package android.os;

public final class Looper {
    private Looper() {}
    public static Looper getMainLooper() { throw new RuntimeException("Stub!"); }
}
