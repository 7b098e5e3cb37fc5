/* tls/kswitch/rekey.c — TLS 1.3 KeyUpdate on connections whose receive the
 * library's own kTLS switch serves (tls/kswitch/rx.c; send: tls/kswitch/tx.c or
 * libssl's kTLS).
 *
 * Why: a TLS 1.3 peer may renew its sending keys at any time (KeyUpdate,
 * RFC 8446 4.6.3), and long-lived connections do. libssl would apply it;
 * once the kernel holds the receive keys, the library must. Kernels that can
 * rekey (6.14+, and backports: ks_ktls_kernel_can_rekey) pause decryption
 * after a KeyUpdate record until new keys come with setsockopt(TLS_RX)
 * again. Older ones cannot take a second TLS_RX and would try the next
 * record with the old keys: there the connection ends with an SSL error and
 * ktls.rx_keyupdate_refused, before anything is changed.
 *
 * Applying one: the message is checked as libssl checks it (type 24, length
 * 1, the last bytes of its record, value 0 or 1); the next client
 * application traffic secret ("traffic upd") gives the new receive keys,
 * installed at record sequence 0. When the peer asks for our update (value
 * 1), our KeyUpdate (update_not_requested) goes out as a handshake record
 * through the kernel under the current send keys, then the next server
 * secret's keys go in with TLS_TX at sequence 0. That works whoever put the
 * send keys into the kernel: the own switch, or libssl's kTLS. libssl 3.0
 * cannot answer there itself: it never reads this connection again, and its
 * tls13_update_key renews only its user-space keys, never the kernel's (the
 * records after its KeyUpdate would go out under the old keys). Where the
 * send side is still libssl's user space, the answer cannot come from here:
 * the connection ends (refused) before anything is changed.
 *
 * If the answer cannot be sent at once (EAGAIN on a non-blocking socket) it
 * stays due and is sent by the connection's next receiving call, or its
 * next sending call where the own switch sends (which returns WANT_WRITE
 * until it is out). The peer keeps accepting our old keys until it sees
 * our KeyUpdate, so nothing is lost meanwhile.
 *
 * Secrets: the traffic secrets stay in the connection's state after the
 * switch only where rekeying is possible (TLS 1.3, a kernel that can
 * rekey; the send secret only where the kernel holds the send keys). They
 * advance at each update, are wiped when the receive side ends (close_notify,
 * failure), or at the latest with the connection's state (SSL_free,
 * SSL_clear), and never reach a log. */
#include "tls/kswitch/kswitch.h"
#include "tls/biosock/biosock.h"
#include "tls/kswitch/own.h"
#include "tls/kswitch/kdf.h"
#include "kernel/ktls.h"
#include "kernel/uapi.h"
#include "core/log.h"
#include "stats/stats.h"

#include <linux/tls.h>
#include <string.h>
#include <sys/socket.h>

enum { REC_HANDSHAKE = 22, HS_KEY_UPDATE = 24 };
enum { KU_NOT_REQUESTED = 0, KU_REQUESTED = 1 };

bool ks_own_rekey_possible(const struct ks_own *o)
{
    return o->rx_on && o->version == TLS1_3_VERSION && ks_ktls_kernel_can_rekey();
}

/* The kernel holds send keys for o's socket (the own switch's or libssl's).
 * A 4-byte getsockopt returns only the version and cipher, never keys. */
bool ks_own_tx_in_kernel(const struct ks_own *o)
{
    if (o->tx_on)
        return true;
    struct tls_crypto_info info;
    socklen_t len = sizeof info;
    memset(&info, 0, sizeof info);
    KS_SAVE_ERRNO;
    bool yes = getsockopt(o->fd, SOL_TLS, TLS_TX, &info, &len) == 0 && info.cipher_type != 0;
    KS_RESTORE_ERRNO;
    return yes;
}

static void wipe_secrets(struct ks_own *o)
{
    ks_cleanse(o->secret, sizeof o->secret);
    o->secret_len = 0;
    ks_own_tx_wipe(o);
    o->ku_answer_due = false;
}

void ks_own_rx_ended(struct ks_own *o)
{
    ks_cleanse(o->secret, sizeof o->secret);
    o->secret_len = 0;
    if (!(o->ku_answer_due && o->state == OWN_CLOSED))
        wipe_secrets(o);
}

void ks_switch_settled(SSL *s)
{
    struct ks_own *o = ks_own_peek(s);
    if (!o)
        return;
    if (!ks_own_rekey_possible(o)) {
        wipe_secrets(o);
        return;
    }
    if (!ks_own_tx_in_kernel(o))
        ks_own_tx_wipe(o); /* our KeyUpdate could not be sent: no use */
}

/* The next traffic secret of one direction, its keys into the kernel at
 * sequence 0. 0, or -1 with errno. */
static int rekey(struct ks_own *o, bool tx)
{
    uint8_t *secret = tx ? o->tx_secret : o->secret;
    size_t len = tx ? o->tx_secret_len : o->secret_len;
    enum ks_hash hash = (enum ks_hash)o->hash;
    struct ks_keys k;
    if (len != ks_kdf_hash_len(hash) || ks_kdf_tls13_next_secret(hash, secret, len) != 0 ||
        ks_kdf_tls13_keys(hash, (enum ks_aead)o->aead, secret, len, &k) != 0) {
        errno = EINVAL;
        return -1;
    }
    int rc = ks_own_install(o->fd, TLS1_3_VERSION, &k, 0, tx);
    int err = errno;
    ks_cleanse(&k, sizeof k);
    errno = err;
    return rc;
}

static bool retryable(int err)
{
    return err == EAGAIN || err == EWOULDBLOCK || err == EINTR;
}

int ks_own_key_update_answer(struct ks_own *o)
{
    if (!o->ku_answer_due)
        return 0;
    uint8_t msg[5] = {HS_KEY_UPDATE, 0, 0, 1, KU_NOT_REQUESTED};
    union ks_record_type_cmsg room;
    struct iovec iov = {.iov_base = msg, .iov_len = sizeof msg};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    ks_ktls_set_record_type(&mh, &room, REC_HANDSHAKE);
    /* MSG_NOSIGNAL: a peer gone must not kill the program with SIGPIPE
     * from inside a receiving call. */
    ssize_t r = ks_io_sendmsg(o->fd, &mh, MSG_NOSIGNAL);
    int err = r < 0 ? errno : EIO;
    if (r == (ssize_t)sizeof msg) {
        if (rekey(o, true) == 0) {
            o->ku_answer_due = false;
            o->tx_budget = 0; /* a new key: the kernel's count is read again */
            ks_count(KS_C_KTLS_TX_KEYUPDATE, 1);
            if (o->ku_by_count)
                ks_count(KS_C_KTLS_TX_REKEY, 1);
            o->ku_by_count = false;
            ks_log_debug("fd %d: our TLS 1.3 KeyUpdate sent, send keys renewed in the kernel",
                         o->fd);
            return 0;
        }
        err = errno;
        ks_log_info("fd %d: our KeyUpdate is out but the kernel refused the new send keys "
                    "(setsockopt TLS_TX: %s); the connection is ended",
                    o->fd, strerror(err));
    } else if (retryable(err)) {
        errno = err;
        return -1; /* still due */
    } else {
        ks_log_info("fd %d: our TLS 1.3 KeyUpdate could not be sent (%s); the connection is "
                    "ended",
                    o->fd, strerror(err));
    }
    ks_count(KS_C_KTLS_TX_KEYUPDATE_FAILED, 1);
    o->state = OWN_FAILED;
    wipe_secrets(o);
    errno = err;
    return -1;
}

int ks_own_key_update(SSL *s, struct ks_own *o, const uint8_t *msg, size_t len)
{
    /* HandshakeType key_update(24), uint24 length 1, KeyUpdateRequest. A
     * message split over records is not taken (a KeyUpdate is 5 bytes). */
    if (len < 5 || msg[0] != HS_KEY_UPDATE || msg[1] != 0 || msg[2] != 0 || msg[3] != 1 ||
        msg[4] > KU_REQUESTED) {
        ks_log_info("fd %d: a malformed TLS 1.3 KeyUpdate; the connection is ended", o->fd);
        wipe_secrets(o);
        return SSL_R_BAD_KEY_UPDATE;
    }
    if (len > 5) { /* a key change must end its record */
        ks_log_info("fd %d: data after a TLS 1.3 KeyUpdate in its record; the connection is "
                    "ended",
                    o->fd);
        wipe_secrets(o);
        return SSL_R_NOT_ON_RECORD_BOUNDARY;
    }
    if (ks_own_ku_flood(s, o)) {
        wipe_secrets(o);
        return SSL_R_TOO_MANY_KEY_UPDATES;
    }
    bool requested = msg[4] == KU_REQUESTED;
    const char *why = NULL;
    if (!ks_own_rekey_possible(o) || !o->secret_len)
        why = "this kernel cannot take new kTLS keys on a connection (6.14+ can)";
    else if (requested && !o->ku_answer_due && (!o->tx_secret_len || !ks_own_tx_in_kernel(o)))
        why = "it asks for ours, and the send side is libssl's user space, which the library "
              "cannot rekey";
    if (why) {
        ks_count(KS_C_KTLS_RX_KEYUPDATE_REFUSED, 1);
        ks_log_info("fd %d: the peer sent a TLS 1.3 KeyUpdate; %s: the connection is ended", o->fd,
                    why);
        wipe_secrets(o);
        return SSL_R_BAD_KEY_UPDATE;
    }
    if (rekey(o, false) != 0) {
        int err = errno;
        ks_count(KS_C_KTLS_RX_KEYUPDATE_REFUSED, 1);
        ks_log_info("fd %d: the peer sent a TLS 1.3 KeyUpdate; the kernel refused the new "
                    "receive keys (setsockopt TLS_RX: %s): the connection is ended",
                    o->fd, strerror(err));
        wipe_secrets(o);
        return SSL_R_BAD_KEY_UPDATE;
    }
    ks_count(KS_C_KTLS_RX_KEYUPDATE, 1);
    ks_log_debug("fd %d: TLS 1.3 KeyUpdate from the peer (%s): receive keys renewed in the "
                 "kernel",
                 o->fd, requested ? "update requested" : "update not requested");
    if (requested) {
        o->ku_answer_due = true; /* one answer covers any number of requests */
        if (ks_own_key_update_answer(o) != 0 && o->state == OWN_FAILED)
            return SSL_R_BAD_KEY_UPDATE;
    }
    return 0;
}
