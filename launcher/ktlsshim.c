/* ktlsshim(1) — runs a program with the library preloaded, in the manner of
 * faketime(1) and taskset(1):
 *
 *     ktlsshim -n 4 --stats /var/log/ks.jsonl -- nginx -g 'daemon off;'
 *
 * does what KTLSSHIM_SHARDS=4 KTLSSHIM_STATS=... LD_PRELOAD=<lib> nginx ...
 * does. Each option sets one KTLSSHIM_ variable, checked here with the
 * library's own rules (options.c) so a mistake stops before the program
 * starts (exit 2). The launcher shards nothing and opens nothing: it sets
 * the environment, appends the library to LD_PRELOAD (an existing one is
 * kept) and execs the program. */
#include "options.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef KS_VERSION
#define KS_VERSION "unknown"
#endif
/* Where the library is, relative to the directory of the installed launcher
 * ($(PREFIX)/bin -> $(PREFIX)/lib). */
#ifndef KS_LIB_FROM_BINDIR
#define KS_LIB_FROM_BINDIR "../lib/libktlsshim.so"
#endif
#define KS_LIB_NAME "libktlsshim.so"

enum { EXIT_USAGE = 2, EXIT_CANNOT_RUN = 126, EXIT_NOT_FOUND = 127 };

static const char usage_text[] =
    "usage: ktlsshim [options] [--] program [args...]\n"
    "\n"
    "Runs program with libktlsshim preloaded (socket sharding, kernel TLS,\n"
    "stats). Each option sets the KTLSSHIM_ variable named after it; see\n"
    "ktlsshim(7) for what each does. Unset options leave the environment as it is.\n"
    "\n"
    "  -n, --shards N|auto         KTLSSHIM_SHARDS: 1..1024 workers, auto = one per CPU\n"
    "  -k, --ktls auto|off|strict|own  KTLSSHIM_KTLS\n"
    "  -s, --stats PATH            KTLSSHIM_STATS: append JSON records to PATH (absolute)\n"
    "  -c, --conn-log PATH         KTLSSHIM_CONN_LOG: one JSON line per TLS connection\n"
    "  -l, --log quiet|info|debug  KTLSSHIM_LOG\n"
    "      --pin                   KTLSSHIM_PIN=on: pin worker i to CPU i, steer by CPU\n"
    "      --zerocopy              KTLSSHIM_ZEROCOPY=on (unsafe if served files change)\n"
    "      --ticket-rotate S       KTLSSHIM_TICKET_ROTATE: 60..604800 seconds\n"
    "      --ticket-key-file PATH  KTLSSHIM_TICKET_KEY_FILE: 80-byte key (absolute)\n"
    "      --stop-timeout S        KTLSSHIM_STOP_TIMEOUT: 1..86400 seconds before KILL\n"
    "      --reload SIG            KTLSSHIM_RELOAD: rolling restart of the workers on SIG\n"
    "                              (SIGHUP, SIGUSR1, SIGUSR2, SIGWINCH)\n"
    "      --graceful-signal SIG   KTLSSHIM_GRACEFUL_SIGNAL: how an old worker is asked to\n"
    "                              stop in a rolling restart (default SIGTERM)\n"
    "      --prom-file PATH        KTLSSHIM_PROM_FILE: node_exporter textfile (absolute)\n"
    "      --prom-interval S       KTLSSHIM_PROM_INTERVAL: 1..3600 seconds between writes\n"
    "      --keyupdate-limit N     KTLSSHIM_KEYUPDATE_LIMIT: KeyUpdates a second a peer may\n"
    "                              send, 0..1000000 (0: no limit)\n"
    "      --rekey-records N       KTLSSHIM_REKEY_RECORDS: records sent under one key,\n"
    "                              16..16777216\n"
    "      --rx-no-pad             KTLSSHIM_RX_NO_PAD=on: TLS_RX_EXPECT_NO_PAD\n"
    "      --lib PATH              the library to preload (default: the one installed\n"
    "                              with this launcher)\n"
    "  -h, --help                  print this help and exit\n"
    "  -V, --version               print the version and exit\n"
    "\n"
    "An existing LD_PRELOAD is kept; the library is appended to it.\n"
    "Exit status: the program's; 2 bad usage; 126 program not executable;\n"
    "127 program or library not found.\n";

static void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void usage_error(const char *fmt, ...)
{
    va_list ap;
    fputs("ktlsshim: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr); /* one line: the usage is in --help */
    exit(EXIT_USAGE);
}

/* The library installed with the launcher: next to it (a build tree,
 * build/ktlsshim and build/libktlsshim.so) or in ../lib (an install). */
static bool default_lib(char *out, size_t size)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return false;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash)
        return false;
    *slash = '\0';
    const char *tries[] = {KS_LIB_FROM_BINDIR, KS_LIB_NAME};
    for (size_t i = 0; i < sizeof tries / sizeof tries[0]; i++) {
        char cand[PATH_MAX + 64];
        snprintf(cand, sizeof cand, "%s/%s", exe, tries[i]);
        if (realpath(cand, out) && access(out, R_OK) == 0 && strlen(out) < size)
            return true;
    }
    return false;
}

/* ld.so splits LD_PRELOAD at spaces and colons: such a path cannot go in. */
static void set_preload(const char *lib)
{
    if (strpbrk(lib, " :\t\n"))
        usage_error("--lib \"%s\": the path contains a space or a colon, which LD_PRELOAD "
                    "cannot carry",
                    lib);
    const char *old = getenv("LD_PRELOAD");
    if (!old || !*old) {
        setenv("LD_PRELOAD", lib, 1);
        return;
    }
    /* A copy of the library is already preloaded (a nested launcher, or a
     * unit that sets LD_PRELOAD too): the list stays as it is. Two copies
     * in one process would both run their start-up and exit code. */
    size_t ll = strlen(lib);
    char *list = strdup(old), *save = NULL;
    for (char *e = list ? strtok_r(list, " :", &save) : NULL; e; e = strtok_r(NULL, " :", &save)) {
        const char *base = strrchr(e, '/') ? strrchr(e, '/') + 1 : e;
        char real[PATH_MAX];
        bool same = realpath(e, real) && strcmp(real, lib) == 0;
        if (same || strcmp(base, KS_LIB_NAME) == 0) {
            if (!same)
                fprintf(stderr,
                        "ktlsshim: LD_PRELOAD already has %s; not adding %s (one copy "
                        "of the library per process)\n",
                        e, lib);
            free(list);
            return;
        }
    }
    free(list);
    size_t len = strlen(old) + 1 + ll + 1;
    char *v = malloc(len);
    if (!v) {
        perror("ktlsshim");
        exit(EXIT_CANNOT_RUN);
    }
    snprintf(v, len, "%s %s", old, lib);
    setenv("LD_PRELOAD", v, 1);
    free(v);
}

enum {
    OPT_PIN = 256,
    OPT_ZEROCOPY,
    OPT_TICKET_ROTATE,
    OPT_TICKET_KEY_FILE,
    OPT_STOP_TIMEOUT,
    OPT_RELOAD,
    OPT_GRACEFUL_SIGNAL,
    OPT_PROM_FILE,
    OPT_PROM_INTERVAL,
    OPT_KEYUPDATE_LIMIT,
    OPT_REKEY_RECORDS,
    OPT_RX_NO_PAD,
    OPT_LIB
};

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"shards", required_argument, NULL, 'n'},
        {"ktls", required_argument, NULL, 'k'},
        {"stats", required_argument, NULL, 's'},
        {"conn-log", required_argument, NULL, 'c'},
        {"log", required_argument, NULL, 'l'},
        {"pin", no_argument, NULL, OPT_PIN},
        {"zerocopy", no_argument, NULL, OPT_ZEROCOPY},
        {"ticket-rotate", required_argument, NULL, OPT_TICKET_ROTATE},
        {"ticket-key-file", required_argument, NULL, OPT_TICKET_KEY_FILE},
        {"stop-timeout", required_argument, NULL, OPT_STOP_TIMEOUT},
        {"reload", required_argument, NULL, OPT_RELOAD},
        {"graceful-signal", required_argument, NULL, OPT_GRACEFUL_SIGNAL},
        {"prom-file", required_argument, NULL, OPT_PROM_FILE},
        {"prom-interval", required_argument, NULL, OPT_PROM_INTERVAL},
        {"keyupdate-limit", required_argument, NULL, OPT_KEYUPDATE_LIMIT},
        {"rekey-records", required_argument, NULL, OPT_REKEY_RECORDS},
        {"rx-no-pad", no_argument, NULL, OPT_RX_NO_PAD},
        {"lib", required_argument, NULL, OPT_LIB},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    /* Settings are collected first and put in the environment only once
     * every option is known good: a usage error changes nothing. */
    struct ks_setting set[KS_OPT_COUNT] = {0};
    const char *lib = NULL;
    char err[512];
    int c;

    opterr = 0; /* our own messages, one line each */
    /* '+': the first non-option word is the program; its options are its own. */
    while ((c = getopt_long(argc, argv, "+:n:k:s:c:l:hV", longopts, NULL)) != -1) {
        enum ks_opt o;
        switch (c) {
        case 'n':
            o = KS_OPT_SHARDS;
            break;
        case 'k':
            o = KS_OPT_KTLS;
            break;
        case 's':
            o = KS_OPT_STATS;
            break;
        case 'c':
            o = KS_OPT_CONN_LOG;
            break;
        case 'l':
            o = KS_OPT_LOG;
            break;
        case OPT_PIN:
            o = KS_OPT_PIN;
            optarg = "on";
            break;
        case OPT_ZEROCOPY:
            o = KS_OPT_ZEROCOPY;
            optarg = "on";
            break;
        case OPT_TICKET_ROTATE:
            o = KS_OPT_TICKET_ROTATE;
            break;
        case OPT_TICKET_KEY_FILE:
            o = KS_OPT_TICKET_KEY_FILE;
            break;
        case OPT_STOP_TIMEOUT:
            o = KS_OPT_STOP_TIMEOUT;
            break;
        case OPT_RELOAD:
            o = KS_OPT_RELOAD;
            break;
        case OPT_GRACEFUL_SIGNAL:
            o = KS_OPT_GRACEFUL_SIGNAL;
            break;
        case OPT_PROM_FILE:
            o = KS_OPT_PROM_FILE;
            break;
        case OPT_PROM_INTERVAL:
            o = KS_OPT_PROM_INTERVAL;
            break;
        case OPT_KEYUPDATE_LIMIT:
            o = KS_OPT_KEYUPDATE_LIMIT;
            break;
        case OPT_REKEY_RECORDS:
            o = KS_OPT_REKEY_RECORDS;
            break;
        case OPT_RX_NO_PAD:
            o = KS_OPT_RX_NO_PAD;
            optarg = "on";
            break;
        case OPT_LIB:
            lib = optarg;
            continue;
        case 'h':
            fputs(usage_text, stdout);
            return 0;
        case 'V':
            printf("ktlsshim %s\n", KS_VERSION);
            return 0;
        case ':':
            usage_error("option %s needs a value", argv[optind - 1]);
        default:
            if (optopt)
                usage_error("unknown option -%c", optopt);
            usage_error("unknown option %s", argv[optind - 1]);
        }
        if (!ks_opt_check(o, optarg, err, sizeof err))
            usage_error("%s", err);
        set[o].value = optarg;
    }
    if (optind >= argc)
        usage_error("no program to run");

    char libbuf[PATH_MAX];
    if (lib) {
        if (access(lib, R_OK) != 0) {
            fprintf(stderr, "ktlsshim: --lib \"%s\" cannot be read: %s\n", lib, strerror(errno));
            return EXIT_NOT_FOUND;
        }
        /* ld.so needs a path it can find from any working directory. */
        if (!realpath(lib, libbuf)) {
            fprintf(stderr, "ktlsshim: --lib \"%s\": %s\n", lib, strerror(errno));
            return EXIT_NOT_FOUND;
        }
    } else if (!default_lib(libbuf, sizeof libbuf)) {
        fprintf(stderr,
                "ktlsshim: cannot find %s next to the launcher or in ../lib; "
                "use --lib PATH\n",
                KS_LIB_NAME);
        return EXIT_NOT_FOUND;
    }

    for (int i = 0; i < KS_OPT_COUNT; i++)
        if (set[i].value && setenv(ks_opt_variable(i), set[i].value, 1) != 0) {
            perror("ktlsshim: setenv");
            return EXIT_CANNOT_RUN;
        }
    set_preload(libbuf);

    execvp(argv[optind], argv + optind);
    int e = errno;
    fprintf(stderr, "ktlsshim: cannot run %s: %s\n", argv[optind], strerror(e));
    return e == ENOENT ? EXIT_NOT_FOUND : EXIT_CANNOT_RUN;
}
