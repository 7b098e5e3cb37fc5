/* tls/kswitch/defer.c — the deferred receive switch.
 *
 * Why: the own switch (tls/kswitch/switch.c) takes a connection's receive
 * side at the end of its handshake only when libssl has read nothing past
 * the client's Finished. Where it may have (the request came in with the
 * Finished and libssl's read-ahead holds it: nginx, lighttpd; a handshake
 * completed inside SSL_read: threaded proxies), receive stayed in user
 * space for the connection's whole life (reason unread). Here it waits
 * instead for the first moment the received stream is at a record boundary
 * the library can prove (tls/kswitch/rxseq.h says what proves it):
 * - libssl's msg callback (tls/kswitch/tx.c chains it to the program's)
 *   counts the client's records from its Finished on, and stays on the
 *   connection while it waits;
 * - after each of the program's SSL_read / SSL_read_ex on it that returned
 *   application data (tls/hooks.c; only for waiting connections), libssl
 *   holding nothing (SSL_has_pending) means the socket's next byte starts
 *   the record the count names: its keys go in at that sequence number
 *   (switch.c), and from then on the connection is served as an own-switched
 *   one (tls/kswitch/rx.c).
 * Under a program's own BIO the boundary must also be one its reads have
 * reached (tls/biosock/rxframe.c proves it); until then it waits.
 * Until then nothing changes. It never happens where the count is lost (a
 * KeyUpdate or renegotiation before the boundary, any record other than
 * application data), where the reads are libssl's own (an SSL BIO not made
 * through the library's BIO_f_ssl, tls/sslbio.c), on
 * OpenSSL 1.1.1 (not done there), or if the boundary never comes; the
 * connection then stays libssl's, counted unread when it ends. */
#include "tls/ossl/hooks.h" /* first: the hook bodies' names */
#include "tls/kswitch/kswitch.h"
#include "tls/kswitch/own.h"
#include "tls/kswitch/rxseq.h"
#include "core/log.h"
#include "tls/ossl/api.h"
#include "tls/ossl/sym.h"

#include <openssl/ssl.h>

#define api ks_ossl_api

struct ks_own *ks_defer_msg(SSL *s, struct ks_own *o, int content_type, const void *buf, size_t len)
{
    if (content_type == SSL3_RT_HEADER) {
        if (o && buf)
            ks_rxseq_header(&o->rxq, buf, len);
        return o;
    }
    if (content_type != SSL3_RT_HANDSHAKE || !buf || !len)
        return o;
    if (!o) {
        /* Only a server's count matters, and it starts at the Finished. */
        if (((const uint8_t *)buf)[0] != KS_RXSEQ_HS_FINISHED || !api.is_server(s) ||
            !(o = ks_own_make(s)))
            return o;
    }
    ks_rxseq_handshake(&o->rxq, buf, len, api.version(s) == TLS1_3_VERSION);
    return o;
}

bool ks_switch_rx_defer_begin(SSL *s, int version, const char *cipher)
{
    if (!ks_switch_tx_ready() || ks_ossl_flavour() == KS_OSSL_111)
        return false;
    struct ks_own *o = ks_own_peek(s);
    enum ks_fallback why;
    if (!o || o->rx_on || o->msg_cb_restored || o->rxq.state != KS_RXSEQ_COUNTING ||
        !ks_switch_rx_check(s, version, cipher, &why))
        return false;
    o->rx_wait = true;
    return true;
}

void ks_switch_rx_defer_end(SSL *s)
{
    struct ks_own *o = ks_own_peek(s);
    if (!o || !o->rx_wait)
        return;
    o->rx_wait = false;
    ks_own_tx_counting_over(s);
    ks_switch_settled(s);
}

enum ks_defer ks_switch_rx_deferred(SSL *s, bool got_data, const void *caller,
                                    enum ks_fallback *why)
{
    *why = KS_FB_UNREAD;
    struct ks_own *o = ks_own_peek(s);
    if (!o || !o->rx_wait)
        return KS_DEFER_NEVER;
    uint64_t seq = 0;
    if (o->rxq.state == KS_RXSEQ_COUNTING &&
        (!ks_rxseq_boundary(&o->rxq, got_data, api.has_pending(s) != 0, &seq) || api.in_init(s)))
        return KS_DEFER_WAIT;
    bool on = false;
    /* A read libssl made itself (an SSL BIO of a method other than
     * tls/sslbio.c's): its next ones may not pass the hooks, and would read
     * the socket under kTLS. */
    if (o->rxq.state == KS_RXSEQ_COUNTING && !ks_ossl_called_from_libssl(caller)) {
        int version = api.version(s);
        const SSL_CIPHER *ciph = api.get_current_cipher(s);
        on = ks_switch_rx_at(s, version, ciph ? api.CIPHER_get_name(ciph) : NULL, seq, why);
        if (on)
            ks_log_debug("fd %d: rx kTLS (own switch, deferred%s) from record %llu", o->fd,
                         o->rx_bio ? ", under the program's BIO" : "", (unsigned long long)seq);
        else if (*why == KS_FB_UNREAD)
            return KS_DEFER_WAIT; /* the program's BIO may still hold bytes it read */
    }
    return on ? KS_DEFER_SWITCHED : KS_DEFER_NEVER; /* the caller ends the wait */
}
