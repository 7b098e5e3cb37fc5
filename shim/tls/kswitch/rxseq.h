/* tls/kswitch/rxseq.h — the bookkeeping behind the deferred receive switch
 * (tls/kswitch/defer.c): which record of the client's libssl will read next,
 * and whether the received stream is at a record boundary the library can
 * prove. Pure (no OpenSSL, no I/O) so that tests/unit/test_rxseq.c checks
 * it alone.
 *
 * What it is fed, from libssl's msg callback (tls/kswitch/tx.c chains it):
 * - the client's Finished (a received handshake message of type 20): the
 *   client's next record is the first under its application keys, sequence
 *   0 in TLS 1.3 (the Finished went under the handshake keys), 1 in TLS 1.2
 *   (the Finished was record 0 under the new keys). A Finished is the last
 *   message of its record in both versions (the keys change after it);
 * - every received record header (5 bytes; libssl reports it when it has
 *   read it, before the body): one more record under those keys. Only
 *   application_data records (outer type 23) are counted; any other type
 *   after the Finished (a TLS 1.2 alert, a renegotiation, a TLS 1.3 CCS)
 *   makes the count unproven for good;
 * - any received handshake message after the Finished (a TLS 1.3 KeyUpdate:
 *   the keys change; a renegotiation): unproven for good.
 *
 * The boundary: right after an SSL_read that returned application data,
 * libssl fetched no record after the one that data came from (it returns
 * as soon as it has data), so the last header counted is that record's,
 * and it was read whole. If libssl then holds nothing (SSL_has_pending: no
 * decrypted byte unread, no byte read from the socket and not yet made
 * into a record), the next byte in the socket is the first of record
 * `seq`. A read that returned nothing proves nothing (it may have read a
 * header and be waiting for the body, which SSL_has_pending does not
 * show). */
#ifndef KTLSSHIM_KSWITCH_RXSEQ_H
#define KTLSSHIM_KSWITCH_RXSEQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum ks_rxseq_state {
    KS_RXSEQ_NONE = 0, /* the client's Finished not seen yet */
    KS_RXSEQ_COUNTING, /* seq is the client's next record */
    KS_RXSEQ_LOST,     /* something happened the count cannot follow */
};

struct ks_rxseq {
    uint64_t seq;  /* records received under the client's application keys */
    uint8_t state; /* enum ks_rxseq_state */
};

enum { KS_RXSEQ_REC_HANDSHAKE = 22, KS_RXSEQ_REC_DATA = 23, KS_RXSEQ_HS_FINISHED = 20 };

/* A received handshake message (its first byte: the type). */
static inline void ks_rxseq_handshake(struct ks_rxseq *q, const uint8_t *msg, size_t len,
                                      bool tls13)
{
    if (q->state == KS_RXSEQ_NONE && len >= 1 && msg[0] == KS_RXSEQ_HS_FINISHED) {
        q->seq = tls13 ? 0 : 1;
        q->state = KS_RXSEQ_COUNTING;
    } else if (q->state == KS_RXSEQ_COUNTING) {
        q->state = KS_RXSEQ_LOST;
    }
}

/* A received record header (len bytes of it in hdr). */
static inline void ks_rxseq_header(struct ks_rxseq *q, const uint8_t *hdr, size_t len)
{
    if (q->state != KS_RXSEQ_COUNTING)
        return;
    if (len != 5 || hdr[0] != KS_RXSEQ_REC_DATA || q->seq == UINT64_MAX)
        q->state = KS_RXSEQ_LOST;
    else
        q->seq++;
}

/* After an SSL_read on the connection: got_data, it returned application
 * data; libssl_holds, SSL_has_pending said so after it. True when the
 * socket's next byte is the start of record *seq. */
static inline bool ks_rxseq_boundary(const struct ks_rxseq *q, bool got_data, bool libssl_holds,
                                     uint64_t *seq)
{
    if (q->state != KS_RXSEQ_COUNTING || !got_data || libssl_holds)
        return false;
    *seq = q->seq;
    return true;
}

#endif
