/* config.h — the user's whole interface: KTLSSHIM_* environment variables,
 * read and validated once per process. */
#ifndef KTLSSHIM_CONFIG_H
#define KTLSSHIM_CONFIG_H

#include "core/common.h"

#define KS_MAX_SHARDS 1024

/* OWN: libssl is not asked for kTLS; the library's own switch (tls/kswitch/switch.c)
 * does every direction it can (receive, today), so that both paths can be
 * compared. */
enum ks_ktls_mode { KS_KTLS_OFF = 0, KS_KTLS_AUTO = 1, KS_KTLS_STRICT = 2, KS_KTLS_OWN = 3 };

struct ks_config {
    int shards;                 /* 1 = no sharding */
    bool shards_auto;           /* KTLSSHIM_SHARDS=auto */
    int ktls;                   /* enum ks_ktls_mode */
    int log_level;              /* enum ks_log_level */
    bool zerocopy;              /* KTLSSHIM_ZEROCOPY=on: TLS_TX_ZEROCOPY_RO */
    bool pin;                   /* KTLSSHIM_PIN=on: worker per CPU, CBPF steering */
    bool rx_no_pad;             /* KTLSSHIM_RX_NO_PAD: TLS_RX_EXPECT_NO_PAD on TLS 1.3 */
    int keyupdate_limit;        /* KTLSSHIM_KEYUPDATE_LIMIT: per connection and second, 0 = none */
    long rekey_records;         /* KTLSSHIM_REKEY_RECORDS: records under one send key */
    bool in_worker;             /* KTLSSHIM_WORKER was set: started inside a shard */
    int ticket_rotate;          /* KTLSSHIM_TICKET_ROTATE, seconds */
    int stop_timeout;           /* KTLSSHIM_STOP_TIMEOUT: seconds from a stop signal to SIGKILL */
    int reload_signal;          /* KTLSSHIM_RELOAD: rolling restart on this signal, 0 = none */
    int graceful_signal;        /* KTLSSHIM_GRACEFUL_SIGNAL: how an old worker is asked to stop */
    char stats_path[4096];      /* KTLSSHIM_STATS, "" when unset */
    char ticket_key_file[4096]; /* KTLSSHIM_TICKET_KEY_FILE, "" when unset */
    char conn_log_path[4096];   /* KTLSSHIM_CONN_LOG, "" when unset (connlog.c) */
    char prom_file[4096];       /* KTLSSHIM_PROM_FILE, "" when unset (stats/promfile.c) */
    int prom_interval;          /* KTLSSHIM_PROM_INTERVAL, seconds */
};

/* Parses the environment on first use (thread-safe), reports every bad
 * value on stderr, and returns the settings with bad values replaced by
 * their safe defaults. */
const struct ks_config *ks_config(void);

#endif
