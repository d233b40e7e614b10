// COMPILE-ONLY STUB (android_sample/app/compile-stubs): not the Android SDK. Just the members the
// sample app uses, with android.jar's own "Stub!" bodies, so ci_check.sh can type-check the app
// without an android.jar. Never packaged: Gradle builds against the real SDK.
package android.content;

import android.content.pm.PackageManager;
import java.io.File;

public abstract class Context {
    public static final String BATTERY_SERVICE = "batterymanager";
    public static final String CAMERA_SERVICE = "camera";
    public Object getSystemService(String name) { throw new RuntimeException("Stub!"); }
    public PackageManager getPackageManager() { throw new RuntimeException("Stub!"); }
    public ContentResolver getContentResolver() { throw new RuntimeException("Stub!"); }
    public Context getApplicationContext() { throw new RuntimeException("Stub!"); }
    public void startActivity(Intent intent) { throw new RuntimeException("Stub!"); }
    public File getExternalFilesDir(String type) { throw new RuntimeException("Stub!"); }
    public File getCacheDir() { throw new RuntimeException("Stub!"); }
    public final String getString(int resId) { throw new RuntimeException("Stub!"); }
    public final String getString(int resId, Object... formatArgs) { throw new RuntimeException("Stub!"); }
    public int checkSelfPermission(String permission) { throw new RuntimeException("Stub!"); }
}
