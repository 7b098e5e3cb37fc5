/* connlog.h — the optional per-connection log (KTLSSHIM_CONN_LOG): one JSON
 * line per TLS connection when it ends. The kTLS tower calls in at three
 * points: a handshake done (ks_connlog_begin), bytes moved
 * (ks_connlog_bytes), the SSL freed (ks_connlog_end). When the log is off, begin returns NULL and
 * the other two are never reached: the cost is one predictable branch. */
#ifndef KTLSSHIM_CONNLOG_H
#define KTLSSHIM_CONNLOG_H

#include "core/common.h"

/* What one direction of a connection does, as tls/hooks.c saw it at handshake. */
struct ks_connlog_dir {
    const char *path; /* "user", "ktls_libssl", ... (a static string) */
    int reason;       /* enum ks_fallback when path is "user" */
    bool nic;         /* kTLS: crypto on the NIC (else software) */
    bool estimated;   /* kTLS: software/NIC is a guess */
};

/* One connection's entry, from its handshake to its end. */
struct ks_connlog {
    uint64_t tx_ktls, tx_user, tx_sendfile, rx_ktls, rx_user; /* bytes */
    uint64_t start_ns; /* CLOCK_MONOTONIC at handshake done */
    struct ks_connlog_dir tx, rx;
    int version; /* TLS1_2_VERSION, ... */
    bool resumed;
    char peer[64]; /* "addr:port", "[addr]:port", "" if none */
    char sni[256]; /* "" if none */
    char cipher[64];
};

/* At load (init.c): opens KTLSSHIM_CONN_LOG, if set. */
void ks_connlog_open(void);

/* The log's descriptor, -1 when off (connlog.c). */
extern int ks_connlog_fd;

/* True when KTLSSHIM_CONN_LOG is open in this process. */
static inline bool ks_connlog_enabled(void)
{
    return KS_UNLIKELY(__atomic_load_n(&ks_connlog_fd, __ATOMIC_RELAXED) >= 0);
}

/* A connection's handshake is done: a new entry (NULL when the log is off
 * or memory is short). sni: the server name the client asked for (NULL if
 * none), fd its socket (-1 if none). */
struct ks_connlog *ks_connlog_begin(const char *sni, int fd, int version, const char *cipher,
                                    bool resumed, const struct ks_connlog_dir *tx,
                                    const struct ks_connlog_dir *rx);

/* Counts n application bytes on l; ktls: through kernel TLS. */
static inline void ks_connlog_bytes(struct ks_connlog *l, bool tx, bool ktls, uint64_t n)
{
    if (tx)
        *(ktls ? &l->tx_ktls : &l->tx_user) += n;
    else
        *(ktls ? &l->rx_ktls : &l->rx_user) += n;
}

/* n bytes sent with SSL_sendfile (kernel TLS, no copy through user space). */
static inline void ks_connlog_sendfile(struct ks_connlog *l, uint64_t n)
{
    l->tx_ktls += n;
    l->tx_sendfile += n;
}

/* The connection ends (its SSL is freed): writes its line with one
 * write(2) and frees l. */
void ks_connlog_end(struct ks_connlog *l);

#endif
