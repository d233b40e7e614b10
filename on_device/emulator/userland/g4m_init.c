/* The device's init (pid 1 of the device PID namespace, /system/bin/init): reaps the orphans of
 * every session and never dies of a signal from inside the device. It installs no handler, so
 * the kernel drops every signal a device process sends it (SIGKILL included); SIGCHLD is blocked
 * and taken with sigwaitinfo, so reparented children are still reaped. */
#include <errno.h>
#include <signal.h>
#include <sys/wait.h>

int main(void) {
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, 0);
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    for (;;) {
        while (waitpid(-1, 0, WNOHANG) > 0) {
        }
        sigwaitinfo(&chld, 0);
    }
}
