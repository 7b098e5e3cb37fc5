/* tls/kswitch/lifetime.c — keeping a long-lived TLS 1.3 connection that the
 * own switch serves (its receive in the kernel, tls/kswitch/rx.c) safe for
 * its whole life.
 *
 * Why: a peer may renew its keys (KeyUpdate) as often as it likes, and each
 * one costs a key derivation and a setsockopt here: a storm of them takes a
 * core (HAProxy added tune.ssl.keyupdate-rate-limit, 100 a second, after
 * one). And AES-GCM must not encrypt more than 2^24.5 full records under
 * one key (RFC 8446 5.5), yet neither libssl nor the kernel renews the send
 * key by itself.
 *
 * Receive: more than KTLSSHIM_KEYUPDATE_LIMIT KeyUpdates (default 100)
 * within a second ends the connection: a fatal unexpected_message alert
 * where the kernel holds the send keys (on a full socket it is not waited
 * for), SSL_SENT_SHUTDOWN so that libssl sends nothing more, and the read
 * fails with SSL_R_TOO_MANY_KEY_UPDATES (ktls.rx_keyupdate_flood). Where
 * libssl receives (TLS 1.3 the own switch did not take), the msg callback
 * (tls/kswitch/tx.c) sees each KeyUpdate before libssl applies it: beyond
 * the limit, the same alert where the kernel holds the send keys, and
 * SSL_RECEIVED_SHUTDOWN, after which libssl discards every record and the
 * program's read returns 0 (SSL_ERROR_ZERO_RETURN).
 *
 * Send: on a TLS 1.3 AES-GCM connection whose send keys the kernel holds
 * (the own switch's or libssl's kTLS) the kernel's own record count is
 * read (getsockopt TLS_TX gives the next record sequence number) whenever
 * the records sent since the last look could have reached
 * KTLSSHIM_REKEY_RECORDS: the bound counts every send call as its size
 * over 512 bytes, plus one (ks_tx_records_most), so that the count is
 * never assumed, and looked at rarely. At the threshold, where the kernel
 * can rekey (6.14+) and the send secret is kept (tls/kswitch/rekey.c), our
 * KeyUpdate (update_not_requested) goes out before the call's data and
 * the next send key goes in (ks_own_key_update_answer; ktls.tx_rekey).
 * Where it cannot (an older kernel, the receive side already ended), the
 * connection is counted once (ktls.tx_rekey_unable) and carries on as it
 * would without the library: libssl does not rekey either, and cutting a
 * transfer the program expects to finish would make it work worse. The
 * default, 2^23 records, leaves the limit three times that far.
 *
 * Only sends that go through SSL_write, SSL_write_ex and SSL_sendfile are
 * seen; the records themselves are the kernel's count.
 *
 * Receive padding: on TLS 1.3 where KTLSSHIM_RX_NO_PAD is on, the kernel
 * is told to expect records without padding (TLS_RX_EXPECT_NO_PAD, 6.0+):
 * it then decrypts into the reader's buffer at once; a padded record is
 * decrypted again the slow way (TlsRxNoPadViolation), never lost. */
#include "tls/kswitch/lifetime.h"
#include "tls/kswitch/own.h"
#include "tls/biosock/biosock.h"
#include "kernel/cryptoinfo.h"
#include "kernel/ktls.h"
#include "kernel/uapi.h"
#include "core/config.h"
#include "core/log.h"
#include "stats/stats.h"

#include <linux/tls.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define api ks_ossl_api

enum { REC_ALERT = 21, ALERT_FATAL = 2, ALERT_UNEXPECTED_MESSAGE = 10 };

/* Our fatal alert on fd, whose send keys the kernel holds; not waited for. */
static void send_alert(int fd)
{
    uint8_t alert[2] = {ALERT_FATAL, ALERT_UNEXPECTED_MESSAGE};
    union ks_record_type_cmsg room;
    struct iovec iov = {.iov_base = alert, .iov_len = sizeof alert};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    ks_ktls_set_record_type(&mh, &room, REC_ALERT);
    KS_SAVE_ERRNO;
    if (ks_io_sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t)sizeof alert)
        ks_log_debug("fd %d: the alert could not be sent (%s)", fd, strerror(errno));
    KS_RESTORE_ERRNO;
}

/* The kernel holds send keys for fd. */
static bool fd_tx_in_kernel(int fd)
{
    struct tls_crypto_info info;
    socklen_t len = sizeof info;
    memset(&info, 0, sizeof info);
    KS_SAVE_ERRNO;
    bool yes = getsockopt(fd, SOL_TLS, TLS_TX, &info, &len) == 0 && info.cipher_type != 0;
    KS_RESTORE_ERRNO;
    return yes;
}

/* One more KeyUpdate from the peer: true when beyond the limit (counted). */
static bool flood(struct ks_ku_rate *rate, int fd)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * KS_NS_PER_SEC + (uint64_t)ts.tv_nsec;
    int limit = ks_config()->keyupdate_limit;
    if (!ks_ku_rate_over(rate, now, limit))
        return false;
    ks_count(KS_C_KTLS_RX_KEYUPDATE_FLOOD, 1);
    ks_log_info("fd %d: the peer sent more than %d TLS 1.3 KeyUpdates within a second "
                "(KTLSSHIM_KEYUPDATE_LIMIT); the connection is ended",
                fd, limit);
    return true;
}

void ks_libssl_key_update(SSL *s, struct ks_own *o)
{
    if (o->ku_flooded || !flood(&o->ku_rate, api.get_rfd(s)))
        return;
    o->ku_flooded = true;
    int fd = api.get_wfd(s);
    if (fd >= 0 && fd_tx_in_kernel(fd))
        send_alert(fd);
    /* libssl throws away every record after this KeyUpdate: SSL_read
     * returns 0, SSL_ERROR_ZERO_RETURN, as after a close_notify (Python,
     * for one, takes that for the end only when no other flag is set). */
    api.set_shutdown(s, api.get_shutdown(s) | SSL_RECEIVED_SHUTDOWN);
}

bool ks_own_ku_flood(SSL *s, struct ks_own *o)
{
    if (!flood(&o->ku_rate, o->fd))
        return false;
    if (ks_own_tx_in_kernel(o))
        send_alert(o->fd);
    /* Nothing more goes out on this connection, by libssl either. */
    api.set_shutdown(s, api.get_shutdown(s) | SSL_SENT_SHUTDOWN);
    return true;
}

/* The kernel's next send record sequence number on fd. 0, or -1. The
 * crypto_info read back holds the key too: wiped at once. */
static int kernel_tx_seq(int fd, uint64_t *seq)
{
    union ks_crypto_info ci;
    memset(&ci, 0, sizeof ci);
    socklen_t len = sizeof ci.info;
    KS_SAVE_ERRNO;
    int rc = -1;
    if (getsockopt(fd, SOL_TLS, TLS_TX, &ci, &len) == 0) {
        socklen_t want = ks_crypto_info_len(&ci);
        len = want;
        if (want >= sizeof ci.info + 8 && getsockopt(fd, SOL_TLS, TLS_TX, &ci, &len) == 0 &&
            len == want) {
            uint64_t v = 0;
            for (socklen_t i = want - 8; i < want; i++) /* rec_seq: the last 8, big-endian */
                v = v << 8 | ci.bytes[i];
            *seq = v;
            rc = 0;
        }
    }
    ks_cleanse(&ci, sizeof ci);
    KS_RESTORE_ERRNO;
    return rc;
}

/* The send key of o cannot be renewed by the library. */
static void cannot_rekey(struct ks_own *o, uint64_t seq)
{
    o->tx_limit_done = true;
    ks_count(KS_C_KTLS_TX_REKEY_UNABLE, 1);
    ks_log_info("fd %d: %llu records sent under one TLS 1.3 send key (KTLSSHIM_REKEY_RECORDS), "
                "and %s; the connection carries on as libssl would",
                o->fd, (unsigned long long)seq,
                !ks_ktls_kernel_can_rekey() ? "this kernel cannot take new keys (6.14+ can)"
                                            : "its send secret is gone (its receive side ended)");
}

int ks_own_tx_before_send(SSL *s, struct ks_own *o, size_t n)
{
    (void)s;
    if (KS_LIKELY(o->tx_limit_done) || !ks_tx_budget_spend(&o->tx_budget, n))
        return 0;
    uint64_t threshold = (uint64_t)ks_config()->rekey_records;
    uint64_t seq = 0;
    if (!o->rx_on || o->version != TLS1_3_VERSION || o->aead == KS_AEAD_CHACHA20 ||
        !ks_own_tx_in_kernel(o) || kernel_tx_seq(o->fd, &seq) != 0) {
        /* Not AES-GCM under TLS 1.3 in the kernel, or no count to read. */
        o->tx_limit_done = true;
        return 0;
    }
    o->tx_budget = ks_tx_budget_after(seq, threshold);
    if (o->tx_budget) {
        ks_tx_budget_spend(&o->tx_budget, n);
        return 0;
    }
    if (o->state == OWN_FAILED || !ks_own_rekey_possible(o) || !o->tx_secret_len) {
        cannot_rekey(o, seq);
        return 0;
    }
    ks_log_debug("fd %d: %llu records under this send key: our KeyUpdate and a new key", o->fd,
                 (unsigned long long)seq);
    o->ku_answer_due = true;
    o->ku_by_count = true;
    if (ks_own_key_update_answer(o) != 0) {
        if (o->state == OWN_FAILED) {
            o->last_err = SSL_ERROR_SSL;
            ks_own_push_error(SSL_R_BAD_KEY_UPDATE);
        } else {
            o->last_err = SSL_ERROR_WANT_WRITE; /* still due: the next call */
        }
        return -1;
    }
    o->tx_budget = threshold;
    ks_tx_budget_spend(&o->tx_budget, n);
    return 0;
}

void ks_own_rx_no_pad(struct ks_own *o)
{
    if (o->version != TLS1_3_VERSION || !ks_config()->rx_no_pad)
        return;
    int one = 1;
    KS_SAVE_ERRNO;
    if (setsockopt(o->fd, SOL_TLS, TLS_RX_EXPECT_NO_PAD, &one, sizeof one) == 0)
        ks_count(KS_C_KTLS_RX_NO_PAD, 1);
    else
        ks_log_debug("fd %d: TLS_RX_EXPECT_NO_PAD: %s (kernel 6.0+)", o->fd, strerror(errno));
    KS_RESTORE_ERRNO;
}
