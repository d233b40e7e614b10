/* The emulator's device-side helper (installed as /system/bin/g4m-emulator-runner and setprop):
 * hands its argv, cwd, environment and stdio fds (SCM_RIGHTS) to the emulator over the unix
 * socket /dev/socket/g4m, then exits with the status the emulator sends back. The emulator
 * runs the runner contract (or the property service) on the host side, writing to our fds. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

extern char **environ;

static int put(char **buf, size_t *len, size_t *cap, const char *s) {
    size_t n = strlen(s) + 1;
    if (*len + n > *cap) {
        *cap = (*len + n) * 2;
        *buf = realloc(*buf, *cap);
        if (!*buf) return -1;
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    return 0;
}

int main(int argc, char **argv) {
    const char *sock_path = "/dev/socket/g4m";
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    strncpy(addr.sun_path, sock_path, sizeof addr.sun_path - 1);
    if (s < 0 || connect(s, (struct sockaddr *)&addr, sizeof addr) < 0) {
        fprintf(stderr, "%s: cannot reach the device service: %s\n", argv[0], strerror(errno));
        return 127;
    }
    /* Request: u32 length, then NUL-separated: cwd, argc, argv..., environ... */
    char *buf = NULL, cwd[4096], num[32];
    size_t len = 4, cap = 0;
    buf = malloc(cap = 65536);
    if (!getcwd(cwd, sizeof cwd)) strcpy(cwd, "/");
    snprintf(num, sizeof num, "%d", argc);
    put(&buf, &len, &cap, cwd);
    put(&buf, &len, &cap, num);
    for (int i = 0; i < argc; i++) put(&buf, &len, &cap, argv[i]);
    for (char **e = environ; *e; e++) put(&buf, &len, &cap, *e);
    uint32_t body = (uint32_t)(len - 4);
    memcpy(buf, &body, 4);
    int fds[3] = {0, 1, 2};
    char cbuf[CMSG_SPACE(sizeof fds)];
    memset(cbuf, 0, sizeof cbuf);
    struct iovec iov = {.iov_base = buf, .iov_len = len};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof fds);
    memcpy(CMSG_DATA(c), fds, sizeof fds);
    ssize_t n = sendmsg(s, &msg, 0);
    if (n < 0) {
        perror("sendmsg");
        return 127;
    }
    size_t off = (size_t)n;
    while (off < len) {
        n = write(s, buf + off, len - off);
        if (n <= 0) { perror("write"); return 127; }
        off += (size_t)n;
    }
    int32_t rc = 0;
    size_t got = 0;
    while (got < sizeof rc) {
        n = read(s, (char *)&rc + got, sizeof rc - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return 134; /* the emulator went away mid-run */
        got += (size_t)n;
    }
    return rc & 0xff;
}
