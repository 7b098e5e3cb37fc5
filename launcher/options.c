/* options.c — checks each launcher option's value with the rules the
 * library applies to its variable (shim/config.c), so that `ktlsshim` refuses
 * at once, with the option's name, what the library would have replaced by
 * a safe default. The words of "what is accepted" are the library's; the
 * host test 70-launcher.bats checks both agree value by value. Nothing here
 * creates or opens a file. */
#include "options.h"
#include "../shim/core/parse.h"

#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KS_MAX_SHARDS 1024
#define KS_PATH_MAX 4096 /* the library's buffer for a path, with its NUL */

struct opt_desc {
    const char *option;   /* as the user typed it */
    const char *variable; /* what it sets */
};

static const struct opt_desc descs[KS_OPT_COUNT] = {
    [KS_OPT_SHARDS] = {"--shards", "KTLSSHIM_SHARDS"},
    [KS_OPT_KTLS] = {"--ktls", "KTLSSHIM_KTLS"},
    [KS_OPT_STATS] = {"--stats", "KTLSSHIM_STATS"},
    [KS_OPT_CONN_LOG] = {"--conn-log", "KTLSSHIM_CONN_LOG"},
    [KS_OPT_LOG] = {"--log", "KTLSSHIM_LOG"},
    [KS_OPT_PIN] = {"--pin", "KTLSSHIM_PIN"},
    [KS_OPT_ZEROCOPY] = {"--zerocopy", "KTLSSHIM_ZEROCOPY"},
    [KS_OPT_TICKET_ROTATE] = {"--ticket-rotate", "KTLSSHIM_TICKET_ROTATE"},
    [KS_OPT_TICKET_KEY_FILE] = {"--ticket-key-file", "KTLSSHIM_TICKET_KEY_FILE"},
    [KS_OPT_STOP_TIMEOUT] = {"--stop-timeout", "KTLSSHIM_STOP_TIMEOUT"},
    [KS_OPT_RELOAD] = {"--reload", "KTLSSHIM_RELOAD"},
    [KS_OPT_GRACEFUL_SIGNAL] = {"--graceful-signal", "KTLSSHIM_GRACEFUL_SIGNAL"},
    [KS_OPT_PROM_FILE] = {"--prom-file", "KTLSSHIM_PROM_FILE"},
    [KS_OPT_PROM_INTERVAL] = {"--prom-interval", "KTLSSHIM_PROM_INTERVAL"},
    [KS_OPT_KEYUPDATE_LIMIT] = {"--keyupdate-limit", "KTLSSHIM_KEYUPDATE_LIMIT"},
    [KS_OPT_REKEY_RECORDS] = {"--rekey-records", "KTLSSHIM_REKEY_RECORDS"},
    [KS_OPT_RX_NO_PAD] = {"--rx-no-pad", "KTLSSHIM_RX_NO_PAD"},
};

const char *ks_opt_variable(enum ks_opt o)
{
    return descs[o].variable;
}

static bool one_of(const char *v, const char *const *words)
{
    for (; *words; words++)
        if (strcmp(v, *words) == 0)
            return true;
    return false;
}

/* A file the library will append to: absolute, short enough, and either
 * writable or creatable in an existing directory. Not created here. */
static const char *appendable(const char *v)
{
    static char why[256];
    if (v[0] != '/')
        return "expected an absolute path to a file to append JSON lines to";
    if (strlen(v) >= KS_PATH_MAX)
        return "path too long";
    if (access(v, F_OK) == 0) {
        if (access(v, W_OK) != 0) {
            snprintf(why, sizeof why, "cannot be opened for appending: %s", strerror(errno));
            return why;
        }
        return NULL;
    }
    char dir[KS_PATH_MAX];
    strcpy(dir, v);
    const char *d = dirname(dir);
    if (access(d, W_OK | X_OK) != 0) {
        snprintf(why, sizeof why, "cannot be created (directory %.200s: %s)", d, strerror(errno));
        return why;
    }
    return NULL;
}

bool ks_opt_check(enum ks_opt o, const char *v, char *err, size_t errlen)
{
    static const char *const ktls_words[] = {"auto", "off", "strict", "own", NULL};
    static const char *const log_words[] = {"quiet", "info", "debug", NULL};
    static const char *const on_off[] = {"on", "off", NULL};
    static const char *const reload_sigs[] = {"SIGHUP", "HUP",      "SIGUSR1", "USR1", "SIGUSR2",
                                              "USR2",   "SIGWINCH", "WINCH",   NULL};
    static const char *const graceful_sigs[] = {
        "SIGTERM", "TERM", "SIGQUIT", "QUIT", "SIGINT",   "INT",   "SIGHUP", "HUP",
        "SIGUSR1", "USR1", "SIGUSR2", "USR2", "SIGWINCH", "WINCH", NULL};
    const char *why = NULL;
    long n;

    switch (o) {
    case KS_OPT_SHARDS:
        if (strcmp(v, "auto") != 0 && !(ks_parse_count(v, KS_MAX_SHARDS, &n) && n >= 1))
            why = "expected a whole number from 1 to 1024, or \"auto\" (one per online CPU)";
        break;
    case KS_OPT_KTLS:
        if (!one_of(v, ktls_words))
            why = "expected auto, off, strict or own";
        break;
    case KS_OPT_LOG:
        if (!one_of(v, log_words))
            why = "expected quiet, info or debug";
        break;
    case KS_OPT_PIN:
    case KS_OPT_ZEROCOPY:
    case KS_OPT_RX_NO_PAD:
        if (!one_of(v, on_off))
            why = "expected on or off";
        break;
    case KS_OPT_STATS:
    case KS_OPT_CONN_LOG:
        why = appendable(v);
        break;
    case KS_OPT_TICKET_ROTATE:
        if (!(ks_parse_count(v, 604800, &n) && n >= 60))
            why = "expected a whole number of seconds from 60 to 604800";
        break;
    case KS_OPT_PROM_FILE:
        /* its directory is the library's to check when it writes */
        if (v[0] != '/')
            why = "expected an absolute path to a .prom file";
        else if (strlen(v) >= KS_PATH_MAX - 32)
            why = "path too long";
        else if (v[strlen(v) - 1] == '/')
            why = "expected a file name, not a directory";
        break;
    case KS_OPT_PROM_INTERVAL:
        if (!(ks_parse_count(v, 3600, &n) && n >= 1))
            why = "expected a whole number of seconds from 1 to 3600";
        break;
    case KS_OPT_KEYUPDATE_LIMIT:
        if (!ks_parse_count(v, 1000000, &n))
            why = "expected a whole number of KeyUpdates a second from 0 (no limit) to 1000000";
        break;
    case KS_OPT_REKEY_RECORDS:
        if (!(ks_parse_count(v, 1L << 24, &n) && n >= 16))
            why = "expected a whole number of records from 16 to 16777216";
        break;
    case KS_OPT_STOP_TIMEOUT:
        if (!(ks_parse_count(v, 86400, &n) && n >= 1))
            why = "expected a whole number of seconds from 1 to 86400";
        break;
    case KS_OPT_RELOAD:
        if (!one_of(v, reload_sigs))
            why = "expected SIGHUP, SIGUSR1, SIGUSR2 or SIGWINCH";
        break;
    case KS_OPT_GRACEFUL_SIGNAL:
        if (!one_of(v, graceful_sigs))
            why = "expected SIGTERM, SIGQUIT, SIGINT, SIGHUP, SIGUSR1, SIGUSR2 or SIGWINCH";
        break;
    case KS_OPT_TICKET_KEY_FILE:
        if (v[0] != '/' || strlen(v) >= KS_PATH_MAX)
            why = "expected an absolute path to an 80-byte key file";
        else if (access(v, R_OK) != 0)
            why = strerror(errno);
        break;
    case KS_OPT_COUNT:
        why = "no such option";
        break;
    }
    if (!why)
        return true;
    snprintf(err, errlen, "%s \"%.200s\" is not valid (%s): %s", descs[o].option, v,
             descs[o].variable, why);
    return false;
}
