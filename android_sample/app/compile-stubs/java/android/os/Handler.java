// COMPILE-ONLY STUB (android_sample/app/compile-stubs): not the Android SDK. Just the members the
// sample app uses, with android.jar's own "Stub!" bodies, so ci_check.sh can type-check the app
// without an android.jar. Never packaged: Gradle builds against the real SDK.
package android.os;

public class Handler {
    public Handler(Looper looper) { throw new RuntimeException("Stub!"); }
    public final boolean post(Runnable r) { throw new RuntimeException("Stub!"); }
}
