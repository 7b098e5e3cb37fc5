/* options.h — the launcher's options, one per KTLSSHIM_ variable, and the
 * checks on their values (the library's rules: shim/config.c). */
#ifndef KTLSSHIM_LAUNCHER_OPTIONS_H
#define KTLSSHIM_LAUNCHER_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>

enum ks_opt {
    KS_OPT_SHARDS,
    KS_OPT_KTLS,
    KS_OPT_STATS,
    KS_OPT_CONN_LOG,
    KS_OPT_LOG,
    KS_OPT_PIN,
    KS_OPT_ZEROCOPY,
    KS_OPT_TICKET_ROTATE,
    KS_OPT_TICKET_KEY_FILE,
    KS_OPT_STOP_TIMEOUT,
    KS_OPT_RELOAD,
    KS_OPT_GRACEFUL_SIGNAL,
    KS_OPT_PROM_FILE,
    KS_OPT_PROM_INTERVAL,
    KS_OPT_KEYUPDATE_LIMIT,
    KS_OPT_REKEY_RECORDS,
    KS_OPT_RX_NO_PAD,
    KS_OPT_COUNT
};

struct ks_setting {
    const char *value; /* NULL: the option was not given */
};

/* The variable an option sets, e.g. "KTLSSHIM_SHARDS". */
const char *ks_opt_variable(enum ks_opt o);

/* True if value is one the library accepts for option o; otherwise false
 * with one line in err naming the option, the value and what is accepted. */
bool ks_opt_check(enum ks_opt o, const char *value, char *err, size_t errlen);

#endif
