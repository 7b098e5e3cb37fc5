/* tls/conn.h — what the three files of the OpenSSL hooks share, and no one
 * else: the hooks' common entry (tls/hooks.c), the per-connection record
 * (tls/conn.c) and the per-context setup (tls/ctx.c). Why a header: the
 * record is made by a context's info callback and by the handshake hooks,
 * and read by the I/O hooks. */
#ifndef KTLSSHIM_TLS_CONN_H
#define KTLSSHIM_TLS_CONN_H

#include "core/common.h"
#include "stats/connlog.h"

#include <openssl/ssl.h>
#include <sys/types.h>

enum ks_path {
    KS_PATH_USER = 0,     /* user-space TLS in libssl */
    KS_PATH_KTLS_OPENSSL, /* kTLS set up by libssl */
    KS_PATH_KTLS_OWN,     /* kTLS set up by the library's own switch (tls/kswitch/switch.c) */
    KS_PATH_KTLS_BIO,     /* kTLS by libssl through the program's own BIO (biosock.c) */
};

struct ks_conn {
    uint8_t tx, rx;                   /* enum ks_path */
    uint8_t tx_reason, rx_reason;     /* enum ks_fallback, when on KS_PATH_USER */
    int fd;                           /* the socket with kTLS TX, -1 if none */
    bool rx_own_due;                  /* RX is for the own switch to try when the
                                         handshake call returns (tls/kswitch/switch.c) */
    bool tx_own_due;                  /* TX likewise, right after RX (tls/kswitch/tx.c) */
    bool rx_defer;                    /* RX waits for the deferred switch (tls/kswitch/defer.c):
                                         counted when it switches, or unread at the end */
    bool tx_nic, rx_nic, offload_est; /* kTLS crypto on the NIC; a guess */
    bool watched;                     /* counted in ks_conns_watched (connwatch.h) */
    bool io;                          /* the program made an I/O call on it */
    pid_t user;                       /* the process that last used it (see below) */
    unsigned fork_gen;                /* fork_gen when its handshake was recorded */
    struct ks_connlog *log;           /* KTLSSHIM_CONN_LOG entry, NULL when off */
};

/* ---- the hooks' entry (tls/hooks.c) ---- */

/* Every hook calls this first: the OpenSSL table is loaded, the ex_data
 * indexes are made and the fork handlers registered, once. */
void ks_tls_need_api(void);

/* After ks_tls_need_api(): every function the hooks need was found (else
 * the hooks pass everything through). */
extern bool ks_tls_api_ok __attribute__((visibility("hidden")));

/* The program called an OpenSSL function whose real definition cannot be
 * found: said once; the hook fails the call as libssl would. */
void ks_tls_missing(const char *name);

/* A read or write on s that libssl served below the hooks (tls/sslbio.c:
 * libssl's SSL BIO; ok: it moved n bytes): what tls/hooks.c does after the
 * program's SSL_read / SSL_write (the connection recorded, the bytes
 * counted, the deferred receive switch's turn). caller: the call's
 * return address. */
void ks_tls_io_done(SSL *s, bool tx, bool ok, size_t n, const void *caller);

/* The SSL whose SSL_accept / SSL_do_handshake (called by the program) is
 * running on this thread: its handshake completing there has read nothing
 * past the peer's Finished (tls/kswitch/switch.c relies on it). */
extern __thread SSL *ks_handshake_call __attribute__((visibility("hidden")));

/* ---- the per-connection record (tls/conn.c) ---- */

/* Its ex_data index (at resolve). False if there is none. */
bool ks_conn_setup(void);

/* A fork, on both sides (tls/ctx.c's fork handlers): for the ownership rule. */
void ks_conn_forked(void);

/* s's record if it has one (never makes it). */
struct ks_conn *ks_conn_peek(SSL *s);

/* The connection's state, recording it first if its handshake has just
 * completed (done: the caller knows it has). NULL while the handshake is
 * still going (or if untracked). */
struct ks_conn *ks_conn_state(SSL *s, bool done);

static inline struct ks_conn *ks_conn_of(SSL *s)
{
    return ks_conn_state(s, false);
}

/* The program's handshake call on s (from caller) returned 1 with the own
 * switch due (completed_here: the handshake completed in that call): the
 * own switch takes the receive side libssl left, or the reason is counted. */
void ks_conn_own_rx_due(SSL *s, struct ks_conn *c, const void *caller, bool completed_here);

/* The program's SSL_read / SSL_read_ex (from caller) on s returned, and s
 * waits for the deferred receive switch (c->rx_defer; got_data: it
 * returned application data): the switch, if s is at a record boundary. */
void ks_conn_rx_defer_try(SSL *s, struct ks_conn *c, bool got_data, const void *caller);

/* ---- the contexts (tls/ctx.c) ---- */

/* Its ex_data indexes and the fork handlers (at resolve). False if not. */
bool ks_ctx_setup(void);

#endif
