/* kswitch.h — the library's own kTLS switch: where libssl leaves a
 * direction in user space (TLS 1.3 receive on OpenSSL < 3.2, a libssl built
 * without kTLS) or KTLSSHIM_KTLS=own asks for it, the library moves the
 * keys into the kernel itself and from then on serves that connection's
 * receiving calls (SSL_read/_ex, SSL_peek/_ex, SSL_pending, SSL_has_pending,
 * SSL_get_error, SSL_shutdown; tls/kswitch/rx.c) and, where it switched the send
 * side too, its sending calls (SSL_write/_ex, SSL_sendfile, SSL_shutdown;
 * tls/kswitch/tx.c) with libssl's semantics. */
#ifndef KTLSSHIM_KSWITCH_H
#define KTLSSHIM_KSWITCH_H

#include "core/common.h"
#include "stats/stats.h"

#include <openssl/ssl.h>

struct ks_own;

/* After tls/ossl/api.h's table is loaded: the switch's ex_data indexes. False
 * when the switch cannot run in this process (then it never does). */
bool ks_switch_setup(void);

/* ks_switch_setup() said yes. */
bool ks_switch_ready(void);

/* A new SSL_CTX: installs the keylog callback that hands the switch each
 * TLS 1.3 connection's client traffic secret (chained to the program's:
 * SSL_CTX_set/get_keylog_callback are hooked). Only where the switch may
 * run (kernel tls ULP, KTLSSHIM_KTLS not off). */
void ks_switch_ctx_created(SSL_CTX *ctx);

/* Switches s's receive direction to kTLS (s: a server connection whose
 * handshake SSL_accept / SSL_do_handshake has just completed and whose
 * receive libssl left in user space). True on success; otherwise *why says
 * why and the connection is untouched (libssl carries on). */
bool ks_switch_rx(SSL *s, int version, const char *cipher, enum ks_fallback *why);

/* ---- the deferred receive switch (tls/kswitch/switch.c, defer.c) ---- */

/* Every check of ks_switch_rx() but libssl's holding of received bytes:
 * true if only that stands in the way (*why is then unread). */
bool ks_switch_rx_check(SSL *s, int version, const char *cipher, enum ks_fallback *why);

/* The socket of s when its receive was switched under the program's own
 * BIO (tls/biosock/rxframe.c), else -1. */
int ks_own_rx_bio_fd(const SSL *s);

/* ks_switch_rx() with the client's next record numbered seq. */
bool ks_switch_rx_at(SSL *s, int version, const char *cipher, uint64_t seq, enum ks_fallback *why);

/* s's handshake is done and its receive stays with libssl for now (reason
 * unread): true if the deferred switch can wait for a record boundary on
 * it (its records have been counted since the client's Finished); libssl's
 * msg callback then stays on s until ks_switch_rx_deferred() decides. */
bool ks_switch_rx_defer_begin(SSL *s, int version, const char *cipher);

enum ks_defer { KS_DEFER_WAIT = 0, KS_DEFER_SWITCHED, KS_DEFER_NEVER };

/* After the program's SSL_read / SSL_read_ex on a waiting connection
 * returned (got_data: application data; caller: the call's return
 * address): switched at a record boundary, still waiting, or never (*why
 * says why; the connection stays libssl's). Once it is not WAIT, the
 * caller gives the send side its turn (ks_switch_tx: the records libssl
 * sent are still counted, its secret still kept), then calls
 * ks_switch_rx_defer_end. */
enum ks_defer ks_switch_rx_deferred(SSL *s, bool got_data, const void *caller,
                                    enum ks_fallback *why);

/* The deferred switch is decided on s: the program's msg callback goes back
 * on s, and the secrets the switch does not need any more are wiped. */
void ks_switch_rx_defer_end(SSL *s);

/* The own switch's decisions on s are made (or will never be): the traffic
 * secrets it does not need for a KeyUpdate are wiped (tls/kswitch/rekey.c). */
void ks_switch_settled(SSL *s);

/* SSL_clear(s): a reused SSL starts a new connection, so nothing of the old
 * one's switch may apply to it (its secrets are wiped). tls/conn.c's hook. */
void ks_switch_clear(SSL *s);

/* How many live connections of this process have their receive switched
 * (atomic): taken at the switch, given back by SSL_clear and SSL_free. */
extern int ks_switch_live __attribute__((visibility("hidden")));
struct ks_own *ks_own_of_switched(const SSL *s);

/* The switch's state for s when its receive is the library's own, or NULL
 * (the caller then passes the call to libssl). One load on every hook while
 * no connection is switched. */
static inline struct ks_own *ks_own_of(const SSL *s)
{
    if (KS_LIKELY(!__atomic_load_n(&ks_switch_live, __ATOMIC_ACQUIRE)))
        return NULL;
    return ks_own_of_switched(s);
}

/* tls/kswitch/rx.c: serves a read (peek: leave the data) on an own-RX connection. Returns
 * libssl's return for SSL_read (bytes, or <= 0); *got is the byte count. */
int ks_own_read(SSL *s, struct ks_own *o, void *buf, size_t num, size_t *got, bool peek);

/* tls/kswitch/tx.c: reads and discards until the peer's close_notify, as
 * libssl's SSL_shutdown does once its own close_notify is out (both own
 * shutdown paths). True once it is in; false on WANT_READ or another end
 * (the error as ks_own_read recorded it). */
bool ks_own_drain_to_close(SSL *s, struct ks_own *o);

/* Any call that libssl serves on this connection clears the error the
 * switch recorded, so that SSL_get_error asks libssl about that call. */
void ks_own_forget_error(struct ks_own *o);

/* ---- the send side (tls/kswitch/tx.c) ---- */

/* The send side can run in this process. */
bool ks_switch_tx_ready(void);

/* Switches s's send direction to kTLS (s: a server connection whose
 * receive ks_switch_rx() has just switched). True on success; otherwise
 * *why says why and libssl carries on sending. */
bool ks_switch_tx(SSL *s, int version, const char *cipher, enum ks_fallback *why);

/* The send switch for s is decided (or will never be): libssl's records
 * need no more counting, the program's own msg callback goes back on s. */
void ks_own_tx_counting_over(SSL *s);

/* SSL_clear on s (tls/kswitch/switch.c): the library's msg callback goes
 * back in front of the program's, so that the next handshake's records are
 * counted as the first's were. */
void ks_own_msg_counting_again(SSL *s, struct ks_own *o);

/* o's send side is the own switch's. */
bool ks_own_tx_on(const struct ks_own *o);

/* SSL_write_ex on an own-TX connection (num > 0): 1 with *written, or -1
 * (SSL_get_error says why). */
int ks_own_write(SSL *s, struct ks_own *o, const void *buf, size_t num, size_t *written);

/* Before a send of n bytes on s (o: its receive is the own switch's,
 * whoever sends): at KTLSSHIM_REKEY_RECORDS records under the send key, our
 * KeyUpdate and the next key first (tls/kswitch/lifetime.c). 0: send; -1:
 * the call returns failure, SSL_get_error says why (WANT_WRITE: still due;
 * SSL: the connection failed). */
int ks_own_tx_before_send(SSL *s, struct ks_own *o, size_t n);

/* SSL_sendfile on an own-TX connection: bytes sent, or -1. */
ossl_ssize_t ks_own_sendfile(SSL *s, struct ks_own *o, int in_fd, off_t offset, size_t size);

#endif
