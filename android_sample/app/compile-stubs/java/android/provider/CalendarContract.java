// COMPILE-ONLY STUB (android_sample/app/compile-stubs): not the Android SDK. Just the members the
// sample app uses, with android.jar's own "Stub!" bodies, so ci_check.sh can type-check the app
// without an android.jar. Never packaged: Gradle builds against the real SDK.
package android.provider;

import android.net.Uri;

public final class CalendarContract {
    public static final class Instances {
        public static final Uri CONTENT_URI = null;
        public static final String TITLE = "title";
        public static final String BEGIN = "begin";
        public static final String EVENT_LOCATION = "eventLocation";
    }
}
