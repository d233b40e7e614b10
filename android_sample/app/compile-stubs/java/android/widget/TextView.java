// COMPILE-ONLY STUB (android_sample/app/compile-stubs): not the Android SDK. Just the members the
// sample app uses, with android.jar's own "Stub!" bodies, so ci_check.sh can type-check the app
// without an android.jar. Never packaged: Gradle builds against the real SDK.
package android.widget;

import android.view.KeyEvent;
import android.view.View;

public class TextView extends View {
    public interface OnEditorActionListener {
        boolean onEditorAction(TextView v, int actionId, KeyEvent event);
    }
    public CharSequence getText() { throw new RuntimeException("Stub!"); }
    public final void setText(CharSequence text) { throw new RuntimeException("Stub!"); }
    public final void append(CharSequence text) { throw new RuntimeException("Stub!"); }
    public void setOnEditorActionListener(OnEditorActionListener l) { throw new RuntimeException("Stub!"); }
}
