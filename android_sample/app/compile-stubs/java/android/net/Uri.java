// COMPILE-ONLY STUB (android_sample/app/compile-stubs): not the Android SDK. Just the members the
// sample app uses, with android.jar's own "Stub!" bodies, so ci_check.sh can type-check the app
// without an android.jar. Never packaged: Gradle builds against the real SDK.
package android.net;

public abstract class Uri {
    public abstract Builder buildUpon();

    public static final class Builder {
        public Builder() { throw new RuntimeException("Stub!"); }
        public Uri build() { throw new RuntimeException("Stub!"); }
    }
}
