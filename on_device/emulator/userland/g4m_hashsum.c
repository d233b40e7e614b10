/* md5sum, sha1sum, sha224sum, sha256sum, sha384sum, sha512sum of the emulator's device (one
 * binary, the command chosen by argv[0]), over OpenSSL's libcrypto, linked statically.
 *
 * Why not Debian's toybox: Android's toybox is built against BoringSSL, so on a phone these are
 * the library's hardware hashes (SHA extensions, ~1 GB/s); Debian's toybox uses its own C code
 * (sha256 ~85 MB/s here), which would make every verified push to the emulator look 10x slower
 * than on a phone. Behaviour is toybox's: "HASH  NAME" lines, stdin for no file or "-", -b (hash
 * only), -c (check "HASH  NAME" lines: "NAME: OK" / "NAME: FAILED"), -s (with -c: status only);
 * a file that cannot be opened or read gets an error line and status 1, the others still go. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

static const char *prog;
static const EVP_MD *md;
static int opt_b, opt_c, opt_s;
static unsigned char buf[1 << 18];

/* The hex digest of fd into hex (2 * size + 1 bytes); 0, or errno of the failed read. */
static int hash_fd(int fd, char *hex) {
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || !EVP_DigestInit_ex(ctx, md, NULL)) {
        EVP_MD_CTX_free(ctx);
        return ENOMEM;
    }
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            int e = errno;
            EVP_MD_CTX_free(ctx);
            return e;
        }
        if (n == 0) break;
        EVP_DigestUpdate(ctx, buf, (size_t)n);
    }
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx, out, &len);
    EVP_MD_CTX_free(ctx);
    for (unsigned int i = 0; i < len; i++) sprintf(hex + 2 * i, "%02x", out[i]);
    hex[2 * len] = 0;
    return 0;
}

/* Hash one named file ("-": stdin); 0 or errno, with the error line written. */
static int hash_name(const char *name, char *hex) {
    int fd = strcmp(name, "-") ? open(name, O_RDONLY | O_CLOEXEC) : 0;
    int e = fd < 0 ? errno : hash_fd(fd, hex);
    if (fd > 0) close(fd);
    if (e) fprintf(stderr, "%s: %s: %s\n", prog, name, strerror(e));
    return e;
}

static int hash_files(int argc, char **argv) {
    static char *dash[] = {"-"};
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    int rc = 0;
    if (!argc) argc = 1, argv = dash;
    for (int i = 0; i < argc; i++) {
        if (hash_name(argv[i], hex)) {
            rc = 1;
            continue;
        }
        if (opt_b) printf("%s\n", hex);
        else printf("%s  %s\n", hex, argv[i]);
    }
    return rc;
}

/* -c: each line "HASH  NAME" of each list file (stdin for none or "-"). */
static int check_list(FILE *f) {
    char *line = NULL, hex[2 * EVP_MAX_MD_SIZE + 1];
    size_t cap = 0, want = 2 * (size_t)EVP_MD_get_size(md);
    ssize_t n;
    int rc = 0;
    while ((n = getline(&line, &cap, f)) > 0) {
        if (line[n - 1] == '\n') line[--n] = 0;
        size_t i = 0;
        while (i < want && i < (size_t)n && line[i] && strchr("0123456789abcdefABCDEF", line[i])) i++;
        /* As toybox: the hash, blanks, then the name (the rest of the line). */
        const char *name = line + i;
        while (*name == ' ' || *name == '\t') name++;
        if (i != want || name == line + i || !*name) {
            fprintf(stderr, "%s: bad line %s\n", prog, line);
            rc = 1;
            continue;
        }
        int ok = !hash_name(name, hex) && !strncasecmp(hex, line, want);
        if (!ok) rc = 1;
        if (!opt_s) printf("%s: %s\n", name, ok ? "OK" : "FAILED");
    }
    free(line);
    return rc;
}

static int check_files(int argc, char **argv) {
    int rc = 0;
    if (!argc) return check_list(stdin);
    for (int i = 0; i < argc; i++) {
        FILE *f = strcmp(argv[i], "-") ? fopen(argv[i], "re") : stdin;
        if (!f) {
            fprintf(stderr, "%s: %s: %s\n", prog, argv[i], strerror(errno));
            rc = 1;
            continue;
        }
        rc |= check_list(f);
        if (f != stdin) fclose(f);
    }
    return rc;
}

int main(int argc, char **argv) {
    static const struct { const char *name; const EVP_MD *(*md)(void); } algos[] = {
        {"md5sum", EVP_md5}, {"sha1sum", EVP_sha1}, {"sha224sum", EVP_sha224},
        {"sha256sum", EVP_sha256}, {"sha384sum", EVP_sha384}, {"sha512sum", EVP_sha512},
    };
    prog = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
    for (size_t i = 0; i < sizeof algos / sizeof *algos; i++)
        if (!strcmp(prog, algos[i].name)) md = algos[i].md();
    if (!md) {
        fprintf(stderr, "%s: unknown hash (call me as md5sum, sha1sum, sha224sum, sha256sum, sha384sum or sha512sum)\n", prog);
        return 1;
    }
    /* No openssl.cnf exists on the device: do not look for one. */
    OPENSSL_init_crypto(OPENSSL_INIT_NO_LOAD_CONFIG, NULL);
    int i = 1;
    for (; i < argc && argv[i][0] == '-' && argv[i][1]; i++) {
        if (!strcmp(argv[i], "--")) {
            i++;
            break;
        }
        if (!strcmp(argv[i], "--help")) {
            printf("usage: %s [-bcs] [FILE]...\n\nCalculate hash for each input file, reading from stdin if none.\n\n"
                   "-b\tBrief (hash only, no filename)\n-c\tCheck each line of each FILE is the same hash+filename we'd output\n"
                   "-s\tNo output, exit status 0 if all hashes match, 1 otherwise\n", prog);
            return 0;
        }
        for (const char *p = argv[i] + 1; *p; p++) {
            if (*p == 'b') opt_b = 1;
            else if (*p == 'c') opt_c = 1;
            else if (*p == 's') opt_s = 1;
            else {
                fprintf(stderr, "%s: Unknown option '%c' (see \"%s --help\")\n", prog, *p, prog);
                return 1;
            }
        }
    }
    if (opt_s && !opt_c) {
        fprintf(stderr, "%s: -s only with -c\n", prog);
        return 1;
    }
    int rc = opt_c ? check_files(argc - i, argv + i) : hash_files(argc - i, argv + i);
    if (fflush(stdout) != 0) rc = 1;
    return rc;
}
