// COMPILE-ONLY STUB (android_sample/app/compile-stubs): not the Android SDK. Just the members the
// sample app uses, with android.jar's own "Stub!" bodies, so ci_check.sh can type-check the app
// without an android.jar. Never packaged: Gradle builds against the real SDK.
package android.hardware.camera2;

public final class CameraCharacteristics {
    public static final Key<Boolean> FLASH_INFO_AVAILABLE = null;
    public <T> T get(Key<T> key) { throw new RuntimeException("Stub!"); }

    public static final class Key<T> {
        private Key() {}
    }
}
