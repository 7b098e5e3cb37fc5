/* config.c — reads the KTLSSHIM_* variables. Every value is checked; a bad
 * one gets one line on stderr naming the variable, the value and what is
 * accepted, and the safe default is used instead. Unknown KTLSSHIM_ names
 * (typos) are reported too. Nothing here allocates. */
#include "core/config.h"
#include "core/parse.h"
#include "core/log.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

static struct ks_config cfg = {
    .shards = 1,
    .ktls = KS_KTLS_AUTO,
    .log_level = KS_LOG_INFO,
    .ticket_rotate = 3600,
    .stop_timeout = 90,
    .graceful_signal = SIGTERM,
    .prom_interval = 5,
    .keyupdate_limit = 100,
    .rekey_records = 1L << 23,
};
/* Fork: pthread_once is no lock a fork can leave held: a child forked while
 * another thread runs the initialiser runs it again (glibc keeps the fork
 * generation in the control word). */
static pthread_once_t cfg_once = PTHREAD_ONCE_INIT;

/* Names the library reads, and names reserved for the project's own test
 * harness and VM runner (ignored here, never reported as typos). */
static const char *const known[] = {
    "KTLSSHIM_SHARDS",
    "KTLSSHIM_KTLS",
    "KTLSSHIM_STATS",
    "KTLSSHIM_LOG",
    "KTLSSHIM_ZEROCOPY",
    "KTLSSHIM_WORKER",
    "KTLSSHIM_TICKET_ROTATE",
    "KTLSSHIM_TICKET_KEY_FILE",
    "KTLSSHIM_PIN",
    "KTLSSHIM_CONN_LOG",
    "KTLSSHIM_STOP_TIMEOUT",
    "KTLSSHIM_RELOAD",
    "KTLSSHIM_GRACEFUL_SIGNAL",
    "KTLSSHIM_PROM_FILE",
    "KTLSSHIM_PROM_INTERVAL",
    "KTLSSHIM_KEYUPDATE_LIMIT",
    "KTLSSHIM_REKEY_RECORDS",
    "KTLSSHIM_RX_NO_PAD",
};
/* Set by the library itself for the processes of exec mode (execmode.c). */
static const char *const internal[] = {
    "KTLSSHIM_EXEC_SUPERVISOR",
    "KTLSSHIM_EXEC_WORKER",
    "KTLSSHIM_EXEC_FALLBACK",
    "KTLSSHIM_EXEC_HELD",
};
static const char *const reserved_prefixes[] = {
    "KTLSSHIM_BUILD",
    "KTLSSHIM_TEST_",
    "KTLSSHIM_VM_",
};

static void bad(const char *name, const char *value, const char *accepted, const char *using)
{
    ks_log_error("%s=\"%.200s\" is not valid: %s; using %s", name, value, accepted, using);
}

static void read_shards(const char *v)
{
    long n;
    if (strcmp(v, "auto") == 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        cfg.shards_auto = true;
        cfg.shards = cpus < 1 ? 1 : cpus > KS_MAX_SHARDS ? KS_MAX_SHARDS : (int)cpus;
    } else if (ks_parse_count(v, KS_MAX_SHARDS, &n) && n >= 1) {
        cfg.shards = (int)n;
    } else {
        bad("KTLSSHIM_SHARDS", v,
            "expected a whole number from 1 to 1024, or \"auto\" (one per online CPU)",
            "1 (unsharded)");
    }
}

static void read_ktls(const char *v)
{
    if (strcmp(v, "auto") == 0)
        cfg.ktls = KS_KTLS_AUTO;
    else if (strcmp(v, "off") == 0)
        cfg.ktls = KS_KTLS_OFF;
    else if (strcmp(v, "strict") == 0)
        cfg.ktls = KS_KTLS_STRICT;
    else if (strcmp(v, "own") == 0)
        cfg.ktls = KS_KTLS_OWN;
    else
        bad("KTLSSHIM_KTLS", v, "expected auto, off, strict or own", "auto");
}

static void read_log(const char *v)
{
    if (strcmp(v, "quiet") == 0)
        cfg.log_level = KS_LOG_QUIET;
    else if (strcmp(v, "info") == 0)
        cfg.log_level = KS_LOG_INFO;
    else if (strcmp(v, "debug") == 0)
        cfg.log_level = KS_LOG_DEBUG;
    else
        bad("KTLSSHIM_LOG", v, "expected quiet, info or debug", "info");
}

static void read_on_off(const char *name, const char *v, bool *out)
{
    if (strcmp(v, "on") == 0)
        *out = true;
    else if (strcmp(v, "off") == 0)
        *out = false;
    else
        bad(name, v, "expected on or off", "off");
}

/* The stats file must be an absolute path we can append to: checked now, so
 * that the user learns at start-up rather than at exit. */
static void read_stats(const char *v)
{
    if (v[0] != '/') {
        bad("KTLSSHIM_STATS", v, "expected an absolute path to a file to append JSON lines to",
            "no stats file");
        return;
    }
    if (strlen(v) >= sizeof cfg.stats_path) {
        bad("KTLSSHIM_STATS", v, "path too long", "no stats file");
        return;
    }
    int fd = open(v, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        ks_log_error("KTLSSHIM_STATS=\"%.200s\" cannot be opened for appending: %s; "
                     "using no stats file",
                     v, strerror(errno));
        return;
    }
    close(fd);
    strcpy(cfg.stats_path, v);
}

/* The per-connection log (connlog.c): checked as the stats file is; connlog.c
 * opens it for good when the library loads. */
static void read_conn_log(const char *v)
{
    if (v[0] != '/' || strlen(v) >= sizeof cfg.conn_log_path) {
        bad("KTLSSHIM_CONN_LOG", v,
            v[0] != '/' ? "expected an absolute path to a file to append JSON lines to"
                        : "path too long",
            "no connection log");
        return;
    }
    int fd = open(v, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        ks_log_error("KTLSSHIM_CONN_LOG=\"%.200s\" cannot be opened for appending: %s; "
                     "using no connection log",
                     v, strerror(errno));
        return;
    }
    close(fd);
    strcpy(cfg.conn_log_path, v);
}

/* The Prometheus textfile (stats/promfile.c): an absolute path whose
 * directory is checked when it is written (it may not exist yet at start);
 * a directory or a missing file name is refused now. */
static void read_prom_file(const char *v)
{
    size_t len = strlen(v);
    if (v[0] != '/' || len >= sizeof cfg.prom_file - 32 || v[len - 1] == '/') {
        bad("KTLSSHIM_PROM_FILE", v,
            v[0] != '/'                        ? "expected an absolute path to a .prom file"
            : len >= sizeof cfg.prom_file - 32 ? "path too long"
                                               : "expected a file name, not a directory",
            "no Prometheus textfile");
        return;
    }
    strcpy(cfg.prom_file, v);
}

static void read_prom_interval(const char *v)
{
    long n;
    if (ks_parse_count(v, 3600, &n) && n >= 1)
        cfg.prom_interval = (int)n;
    else
        bad("KTLSSHIM_PROM_INTERVAL", v, "expected a whole number of seconds from 1 to 3600", "5");
}

static void read_ticket_rotate(const char *v)
{
    long n;
    if (ks_parse_count(v, 604800, &n) && n >= 60)
        cfg.ticket_rotate = (int)n;
    else
        bad("KTLSSHIM_TICKET_ROTATE", v, "expected a whole number of seconds from 60 to 604800",
            "3600");
}

/* HAProxy's tune.ssl.keyupdate-rate-limit is 100 a second; no honest peer
 * renews its keys more than a few times a minute. 0: no limit. */
static void read_keyupdate_limit(const char *v)
{
    long n;
    if (ks_parse_count(v, 1000000, &n))
        cfg.keyupdate_limit = (int)n;
    else
        bad("KTLSSHIM_KEYUPDATE_LIMIT", v,
            "expected a whole number of KeyUpdates a second from 0 (no limit) to 1000000", "100");
}

/* AES-GCM's limit under one key is 2^24.5 full records (RFC 8446 5.5):
 * 2^24 is the most accepted, 2^23 the default (half of that, for the
 * margin); 16 the least (tests). */
static void read_rekey_records(const char *v)
{
    long n;
    if (ks_parse_count(v, 1L << 24, &n) && n >= 16)
        cfg.rekey_records = n;
    else
        bad("KTLSSHIM_REKEY_RECORDS", v, "expected a whole number of records from 16 to 16777216",
            "8388608");
}

/* systemd's TimeoutStopSec default is 90 s; 0 would kill at once, so the
 * smallest is 1 s. A day is more than any graceful stop should take. */
static void read_stop_timeout(const char *v)
{
    long n;
    if (ks_parse_count(v, 86400, &n) && n >= 1)
        cfg.stop_timeout = (int)n;
    else
        bad("KTLSSHIM_STOP_TIMEOUT", v, "expected a whole number of seconds from 1 to 86400", "90");
}

/* A signal by name, "SIGHUP" or "HUP". Only signals a server is told
 * things with: not the ones that stop, crash or pause a process. */
static const struct {
    const char *name;
    int sig;
    bool stops; /* a stop signal: the supervisor forwards it as a stop */
} signal_names[] = {
    {"HUP", SIGHUP, false},     {"USR1", SIGUSR1, false}, {"USR2", SIGUSR2, false},
    {"WINCH", SIGWINCH, false}, {"TERM", SIGTERM, true},  {"QUIT", SIGQUIT, true},
    {"INT", SIGINT, true},
};

static int parse_signal(const char *v, bool allow_stop)
{
    if (strncmp(v, "SIG", 3) == 0)
        v += 3;
    for (size_t i = 0; i < KS_ARRAY_LEN(signal_names); i++)
        if (strcmp(v, signal_names[i].name) == 0 && (allow_stop || !signal_names[i].stops))
            return signal_names[i].sig;
    return 0;
}

/* The rolling restart's signal cannot be a stop signal: TERM, INT and QUIT
 * must keep stopping the group. */
static void read_reload(const char *v)
{
    int sig = parse_signal(v, false);
    if (sig)
        cfg.reload_signal = sig;
    else
        bad("KTLSSHIM_RELOAD", v, "expected SIGHUP, SIGUSR1, SIGUSR2 or SIGWINCH",
            "no rolling restart (the signal is forwarded to the workers)");
}

static void read_graceful_signal(const char *v)
{
    int sig = parse_signal(v, true);
    if (sig)
        cfg.graceful_signal = sig;
    else
        bad("KTLSSHIM_GRACEFUL_SIGNAL", v,
            "expected SIGTERM, SIGQUIT, SIGINT, SIGHUP, SIGUSR1, SIGUSR2 or SIGWINCH", "SIGTERM");
}

/* Checked for readability now; read (and wiped) by the supervisor. */
static void read_ticket_key_file(const char *v)
{
    if (v[0] != '/' || strlen(v) >= sizeof cfg.ticket_key_file) {
        bad("KTLSSHIM_TICKET_KEY_FILE", v, "expected an absolute path to an 80-byte key file",
            "random keys");
        return;
    }
    if (access(v, R_OK) != 0) {
        ks_log_error("KTLSSHIM_TICKET_KEY_FILE=\"%.200s\" cannot be read: %s; using random keys", v,
                     strerror(errno));
        return;
    }
    strcpy(cfg.ticket_key_file, v);
}

static bool is_reserved(const char *name, size_t len)
{
    for (size_t i = 0; i < KS_ARRAY_LEN(reserved_prefixes); i++) {
        size_t plen = strlen(reserved_prefixes[i]);
        if (len >= plen && strncmp(name, reserved_prefixes[i], plen) == 0)
            return true;
    }
    return false;
}

static void report_unknown(void)
{
    for (char **e = environ; e && *e; e++) {
        if (strncmp(*e, "KTLSSHIM_", 9) != 0)
            continue;
        const char *eq = strchr(*e, '=');
        size_t len = eq ? (size_t)(eq - *e) : strlen(*e);
        bool ok = is_reserved(*e, len);
        for (size_t i = 0; !ok && i < KS_ARRAY_LEN(known); i++)
            ok = strlen(known[i]) == len && strncmp(*e, known[i], len) == 0;
        for (size_t i = 0; !ok && i < KS_ARRAY_LEN(internal); i++)
            ok = strlen(internal[i]) == len && strncmp(*e, internal[i], len) == 0;
        if (!ok)
            ks_log_error("unknown variable %.*s (ignored); known: KTLSSHIM_SHARDS, "
                         "KTLSSHIM_KTLS, KTLSSHIM_STATS, KTLSSHIM_LOG, KTLSSHIM_ZEROCOPY, "
                         "KTLSSHIM_TICKET_ROTATE, KTLSSHIM_TICKET_KEY_FILE, KTLSSHIM_PIN, "
                         "KTLSSHIM_CONN_LOG, KTLSSHIM_STOP_TIMEOUT, KTLSSHIM_RELOAD, "
                         "KTLSSHIM_GRACEFUL_SIGNAL, KTLSSHIM_PROM_FILE, KTLSSHIM_PROM_INTERVAL, "
                         "KTLSSHIM_KEYUPDATE_LIMIT, KTLSSHIM_REKEY_RECORDS, KTLSSHIM_RX_NO_PAD",
                         (int)(len > 200 ? 200 : len), *e);
    }
}

static void load(void)
{
    KS_SAVE_ERRNO;
    const char *v;
    /* The log level first: the other checks may log. */
    if ((v = getenv("KTLSSHIM_LOG")))
        read_log(v);
    if ((v = getenv("KTLSSHIM_SHARDS")))
        read_shards(v);
    if ((v = getenv("KTLSSHIM_KTLS")))
        read_ktls(v);
    if ((v = getenv("KTLSSHIM_ZEROCOPY")))
        read_on_off("KTLSSHIM_ZEROCOPY", v, &cfg.zerocopy);
    if ((v = getenv("KTLSSHIM_PIN")))
        read_on_off("KTLSSHIM_PIN", v, &cfg.pin);
    if ((v = getenv("KTLSSHIM_RX_NO_PAD")))
        read_on_off("KTLSSHIM_RX_NO_PAD", v, &cfg.rx_no_pad);
    if ((v = getenv("KTLSSHIM_KEYUPDATE_LIMIT")))
        read_keyupdate_limit(v);
    if ((v = getenv("KTLSSHIM_REKEY_RECORDS")))
        read_rekey_records(v);
    if ((v = getenv("KTLSSHIM_STATS")))
        read_stats(v);
    if ((v = getenv("KTLSSHIM_CONN_LOG")))
        read_conn_log(v);
    if ((v = getenv("KTLSSHIM_PROM_FILE")))
        read_prom_file(v);
    if ((v = getenv("KTLSSHIM_PROM_INTERVAL")))
        read_prom_interval(v);
    if ((v = getenv("KTLSSHIM_TICKET_ROTATE")))
        read_ticket_rotate(v);
    if ((v = getenv("KTLSSHIM_STOP_TIMEOUT")))
        read_stop_timeout(v);
    if ((v = getenv("KTLSSHIM_TICKET_KEY_FILE")))
        read_ticket_key_file(v);
    if ((v = getenv("KTLSSHIM_RELOAD")))
        read_reload(v);
    if ((v = getenv("KTLSSHIM_GRACEFUL_SIGNAL")))
        read_graceful_signal(v);
    /* Set by the library in its workers: a program started from inside a
     * shard (exec'd by a worker) never shards again. */
    if (getenv("KTLSSHIM_WORKER"))
        cfg.in_worker = true;
    report_unknown();
    KS_RESTORE_ERRNO;
}

const struct ks_config *ks_config(void)
{
    pthread_once(&cfg_once, load);
    return &cfg;
}
