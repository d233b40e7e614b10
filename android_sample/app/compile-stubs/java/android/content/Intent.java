// COMPILE-ONLY STUB (android_sample/app/compile-stubs): not the Android SDK. Just the members the
// sample app uses, with android.jar's own "Stub!" bodies, so ci_check.sh can type-check the app
// without an android.jar. Never packaged: Gradle builds against the real SDK.
package android.content;

import android.content.pm.PackageManager;

public class Intent {
    public static final int FLAG_ACTIVITY_NEW_TASK = 0x10000000;
    public Intent(String action) { throw new RuntimeException("Stub!"); }
    public Intent putExtra(String name, int value) { throw new RuntimeException("Stub!"); }
    public Intent putExtra(String name, boolean value) { throw new RuntimeException("Stub!"); }
    public Intent putExtra(String name, String value) { throw new RuntimeException("Stub!"); }
    public Intent addFlags(int flags) { throw new RuntimeException("Stub!"); }
    public ComponentName resolveActivity(PackageManager pm) { throw new RuntimeException("Stub!"); }
    public String getStringExtra(String name) { throw new RuntimeException("Stub!"); }
    public boolean getBooleanExtra(String name, boolean defaultValue) { throw new RuntimeException("Stub!"); }
}
