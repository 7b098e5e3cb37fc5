/* tls/kswitch/tx.c — the library's own kTLS switch, send direction.
 *
 * Why: where libssl leaves sending in user space though the kernel could
 * carry it (a libssl built without kTLS, OpenSSL 1.1.1), or
 * KTLSSHIM_KTLS=own asks for the library's own switch, the library puts
 * the server's write keys into the kernel itself (setsockopt TLS_TX) and
 * from then on serves that connection's SSL_write, SSL_write_ex,
 * SSL_sendfile and SSL_shutdown with send(), sendfile() and an alert
 * record of its own, with libssl's return values and SSL_get_error.
 *
 * The send side follows the receive side: it is switched only on a
 * connection whose receive tls/kswitch/switch.c has just switched. Then libssl never
 * reads that connection again, so it never has a reason to write on it by
 * itself (an alert, a KeyUpdate answer) with keys the kernel no longer
 * matches.
 *
 * Keys: TLS 1.3 from the server application traffic secret (the keylog
 * callback, tls/kswitch/switch.c), TLS 1.2 from the master secret and the hello
 * randoms (the PRF key block). Wiped as soon as the kernel has them, except
 * the TLS 1.3 secret where the kernel can rekey (tls/kswitch/rekey.c).
 *
 * Sequence number: never assumed. A msg callback on every SSL_CTX
 * (chained to the program's: SSL_CTX_set_msg_callback and
 * SSL_set_msg_callback are hooked) sees every record header libssl writes.
 * The count starts at 0 when libssl changes its send keys to the
 * application keys (TLS 1.3: the SERVER_TRAFFIC_SECRET_0 keylog line, which
 * libssl logs after it wrote its Finished; TLS 1.2: libssl's
 * ChangeCipherSpec), so the server's Finished (1.2) and NewSessionTickets
 * (1.3) are counted as what they are: records sent under those keys. Once
 * the switch is decided the program's own callback goes back on the SSL.
 *
 * The switch happens only when libssl has nothing of its own left to write
 * (SSL_want is SSL_NOTHING, its BIO has nothing pending, no KeyUpdate is
 * due); otherwise sending stays with libssl (reason unsent). */
#include "tls/ossl/hooks.h" /* first: the hook bodies' names */
#include "tls/bioproof.h"
#include "core/config.h"
#include "core/fds.h"
#include "tls/kswitch/kdf.h"
#include "kernel/ktls.h"
#include "kernel/uapi.h"
#include "tls/kswitch/kswitch.h"
#include "tls/biosock/biosock.h"
#include "tls/kswitch/own.h"
#include "core/log.h"
#include "tls/ossl/api.h"
#include "core/libc.h"

#include <limits.h>
#include <linux/tls.h>
#include <openssl/err.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define api ks_ossl_api

enum { REC_CCS = 20, REC_ALERT = 21 };
enum { ALERT_LEVEL_WARNING = 1, ALERT_CLOSE_NOTIFY = 0 };

static int msg_ctx_idx = -1; /* SSL_CTX: the program's msg callback */
static bool tx_ready;        /* the send side can run in this process */

struct msg_box {
    ks_msg_cb_t cb;
};

static void box_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    free(ptr);
}

void ks_switch_tx_setup(void)
{
    if (!ks_ossl_api_switch_tx_ok())
        return;
    msg_ctx_idx = api.get_ex_new_index(CRYPTO_EX_INDEX_SSL_CTX, 0, NULL, NULL, NULL, box_free);
    tx_ready = msg_ctx_idx >= 0;
}

bool ks_switch_tx_ready(void)
{
    return tx_ready;
}

bool ks_own_tx_on(const struct ks_own *o)
{
    return o->tx_on;
}

void ks_own_tx_wipe(struct ks_own *o)
{
    ks_cleanse(o->tx_secret, sizeof o->tx_secret);
    o->tx_secret_len = 0;
}

void ks_own_tx_keys_changed(struct ks_own *o)
{
    o->tx_seq = 0;
    o->tx_seq_known = true;
}

/* ---- the msg callback: counting what libssl sends ---- */

static struct msg_box *msg_box_of(SSL_CTX *ctx)
{
    return ctx && msg_ctx_idx >= 0 ? api.CTX_get_ex_data(ctx, msg_ctx_idx) : NULL;
}

/* The callback the program wants for s: its own for this SSL, else its
 * context's. */
static ks_msg_cb_t program_msg_cb(const SSL *s, const struct ks_own *o)
{
    if (o && o->msg_cb_own)
        return o->msg_cb;
    struct msg_box *b = msg_box_of(api.get_SSL_CTX(s));
    return b ? b->cb : NULL;
}

static void msg_cb(int write_p, int version, int content_type, const void *buf, size_t len, SSL *s,
                   void *arg)
{
    struct ks_own *o = ks_own_peek(s);
    if (write_p && !(o && o->msg_cb_restored)) {
        if (content_type == SSL3_RT_HEADER) {
            if (o && o->tx_seq_known)
                o->tx_seq++;
        } else if (content_type == REC_CCS && api.is_server(s) &&
                   api.version(s) != TLS1_3_VERSION) {
            /* TLS 1.2: the records after our ChangeCipherSpec go under the
             * new keys (TLS 1.3's compatibility CCS changes nothing: there
             * the keylog line starts the count). */
            if (!o)
                o = ks_own_make(s);
            if (o)
                ks_own_tx_keys_changed(o);
        }
    } else if (!write_p) {
        if (!(o && o->msg_cb_restored))
            o = ks_defer_msg(s, o, content_type, buf, len); /* tls/kswitch/defer.c */
        /* libssl receives (waiting for the deferred switch, or kept for
         * this): the KeyUpdate limit (tls/kswitch/lifetime.c) */
        if (content_type == SSL3_RT_HANDSHAKE && len >= 1 &&
            *(const uint8_t *)buf == SSL3_MT_KEY_UPDATE && o && !o->rx_on &&
            (o->msg_cb_kept || o->rx_wait))
            ks_libssl_key_update(s, o);
    }
    ks_msg_cb_t cb = program_msg_cb(s, o);
    if (cb)
        cb(write_p, version, content_type, buf, len, s, arg);
}

void ks_switch_tx_ctx_created(SSL_CTX *ctx)
{
    if (!tx_ready || !ctx || msg_box_of(ctx))
        return;
    struct msg_box *b = calloc(1, sizeof *b);
    if (!b)
        return;
    if (!api.CTX_set_ex_data(ctx, msg_ctx_idx, b)) {
        free(b);
        return;
    }
    /* A new context has no msg callback of the program's yet. */
    api.CTX_set_msg_callback(ctx, msg_cb);
}

void ks_own_tx_counting_over(SSL *s)
{
    struct ks_own *o = tx_ready ? ks_own_peek(s) : NULL;
    if (!tx_ready || !msg_box_of(api.get_SSL_CTX(s)))
        return;
    if (!o && !(o = ks_own_make(s)))
        return; /* no memory: ours stays on, and keeps calling the program's */
    if (o->msg_cb_restored)
        return;
    o->tx_seq_known = false;
    if (o->rx_wait)
        return; /* the deferred receive switch still counts (tls/kswitch/defer.c) */
    o->msg_cb_restored = true;
    /* A TLS 1.3 connection whose receive is libssl's: ours stays on, to
     * count the peer's KeyUpdates (KTLSSHIM_KEYUPDATE_LIMIT). */
    if (api.version(s) == TLS1_3_VERSION && !o->rx_on && ks_config()->keyupdate_limit > 0) {
        o->msg_cb_kept = true;
        return;
    }
    api.set_msg_callback(s, program_msg_cb(s, o));
}

KS_EXPORT void SSL_CTX_set_msg_callback(SSL_CTX *ctx, ks_msg_cb_t cb)
{
    struct msg_box *b = ks_ossl_ready() && tx_ready ? msg_box_of(ctx) : NULL;
    if (b) { /* ours stays on and calls the program's */
        b->cb = cb;
        return;
    }
    if (api.CTX_set_msg_callback)
        api.CTX_set_msg_callback(ctx, cb);
}

KS_EXPORT void SSL_set_msg_callback(SSL *s, ks_msg_cb_t cb)
{
    struct ks_own *o = NULL;
    if (ks_ossl_ready() && tx_ready && s && msg_box_of(api.get_SSL_CTX(s)))
        o = ks_own_make(s);
    if (o) {
        /* Kept even while the program's is on alone (counting is over on
         * this SSL): SSL_clear puts ours back in front of it. */
        o->msg_cb_own = true;
        o->msg_cb = cb;
        if (!o->msg_cb_restored || o->msg_cb_kept) {
            api.set_msg_callback(s, msg_cb);
            return;
        }
    }
    if (api.set_msg_callback)
        api.set_msg_callback(s, cb);
}

void ks_own_msg_counting_again(SSL *s, struct ks_own *o)
{
    if (!o->msg_cb_restored)
        return;
    o->msg_cb_restored = false;
    if (o->msg_cb_kept) {
        o->msg_cb_kept = false; /* ours is still on */
        return;
    }
    api.set_msg_callback(s, msg_cb); /* it calls program_msg_cb(s, o) */
}

/* ---- the switch ---- */

bool ks_switch_tx(SSL *s, int version, const char *cipher, enum ks_fallback *why)
{
    *why = KS_FB_OTHER;
    struct ks_own *o = ks_own_peek(s);
    if (!tx_ready || !o || !o->rx_on)
        return false;
    int fd = o->fd;
    if (!o->tx_seq_known) {
        ks_log_debug("fd %d: the records libssl sent under the application keys were not "
                     "counted; sending stays with libssl",
                     fd);
        return false;
    }
    BIO *wbio = api.get_wbio(s);
    /* Receive switched under a program's own BIO (tls/biosock/rxframe.c):
     * its output goes through its own buffers, so sending stays libssl's
     * (whose kTLS there is biosock's). */
    if (wbio && ks_own_rx_bio_fd(s) >= 0)
        return false;
    if (!ks_same_socket(api.get_wfd(s), fd) || !wbio) {
        *why = KS_FB_NOT_SOCKET;
        return false;
    }
    /* Records are written to fd past the BIO: libcrypto's own socket BIO
     * only (bioproof.c). */
    enum ks_bio_shape shape = ks_bio_shape(wbio, false);
    if (shape != KS_BIO_SOCKET) {
        *why = shape == KS_BIO_OTHER ? KS_FB_NOT_SOCKET : KS_FB_BIO_UNPROVEN;
        return false;
    }
    if (api.want(s) != SSL_NOTHING || api.BIO_ctrl(wbio, BIO_CTRL_WPENDING, 0, NULL) > 0 ||
        api.get_key_update_type(s) != SSL_KEY_UPDATE_NONE) {
        ks_log_debug("fd %d: libssl still has something to send; sending stays with it", fd);
        *why = KS_FB_UNSENT;
        return false;
    }
    enum ks_hash hash = KS_HASH_SHA256;
    enum ks_aead aead = ks_kdf_aead_of(cipher, &hash);
    if (aead == KS_AEAD_NONE) {
        *why = KS_FB_CIPHER;
        return false;
    }
    struct ks_keys k;
    int rc;
    if (version == TLS1_3_VERSION) {
        rc = o->tx_secret_len == ks_kdf_hash_len(hash)
                 ? ks_kdf_tls13_keys(hash, aead, o->tx_secret, o->tx_secret_len, &k)
                 : -1;
    } else if (version == TLS1_2_VERSION) {
        rc = ks_own_tls12_keys(s, hash, aead, false, &k);
    } else {
        *why = KS_FB_VERSION;
        ks_own_tx_wipe(o);
        return false;
    }
    if (rc != 0) {
        ks_own_tx_wipe(o);
        ks_log_debug("fd %d: no send keys (server traffic secret or key block); sending stays "
                     "with libssl",
                     fd);
        return false;
    }
    rc = ks_own_install(fd, version, &k, o->tx_seq, true);
    int err = errno;
    ks_cleanse(&k, sizeof k);
    if (rc != 0 || version != TLS1_3_VERSION || !ks_own_rekey_possible(o))
        ks_own_tx_wipe(o); /* kept only for a KeyUpdate answer */
    if (rc != 0) {
        *why = KS_FB_REFUSED;
        ks_log_info("fd %d: the kernel refused the send keys (setsockopt TLS_TX: %s); sending "
                    "carries on in user space",
                    fd, strerror(err));
        return false;
    }
    ks_log_debug("fd %d: tx kTLS (own switch) from record %llu", fd, (unsigned long long)o->tx_seq);
    o->tx_on = true;
    o->wpend_buf = NULL;
    o->wpend_done = 0;
    o->alert_pending = false;
    return true;
}

/* ---- serving the send side ---- */

static bool retryable(int err)
{
    return err == EAGAIN || err == EWOULDBLOCK || err == EINTR;
}

static int write_failed(struct ks_own *o, int reason)
{
    o->last_err = SSL_ERROR_SSL;
    ks_own_push_error(reason);
    return -1;
}

/* Our KeyUpdate answer goes before any data (tls/kswitch/rekey.c). 0 when
 * nothing is due any more; -1 for the caller to return (WANT_WRITE while
 * the socket cannot take it, an SSL error if it failed). */
static int answer_first(struct ks_own *o)
{
    if (KS_LIKELY(!o->ku_answer_due) || ks_own_key_update_answer(o) == 0)
        return 0;
    if (o->state == OWN_FAILED)
        return write_failed(o, SSL_R_BAD_KEY_UPDATE);
    o->last_err = SSL_ERROR_WANT_WRITE;
    return -1;
}

int ks_own_write(SSL *s, struct ks_own *o, const void *buf, size_t num, size_t *written)
{
    o->last_err = -1;
    if (api.get_shutdown(s) & SSL_SENT_SHUTDOWN)
        return write_failed(o, SSL_R_PROTOCOL_IS_SHUTDOWN);
    if (o->state == OWN_FAILED)
        return write_failed(o, SSL_R_PROTOCOL_IS_SHUTDOWN);
    if (answer_first(o) < 0)
        return -1;
    long mode = api.ctrl(s, SSL_CTRL_MODE, 0, NULL);
    size_t done = o->wpend_done;
    if (done) {
        /* A retry after WANT_WRITE: the same data again (libssl's rules;
         * the buffer may move only with SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER). */
        if (num < done) {
            o->state = OWN_FAILED;
            return write_failed(o, SSL_R_BAD_LENGTH);
        }
        if (buf != o->wpend_buf && !(mode & SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER)) {
            o->state = OWN_FAILED;
            return write_failed(o, SSL_R_BAD_WRITE_RETRY);
        }
    }
    const uint8_t *p = buf;
    while (done < num) {
        ssize_t n = ks_io_send(o->fd, p + done, num - done, 0);
        if (n > 0) {
            done += (size_t)n;
            if (mode & SSL_MODE_ENABLE_PARTIAL_WRITE)
                break;
            continue;
        }
        int err = n < 0 ? errno : EIO;
        /* What the kernel took stays taken: a retry must bring the same
         * data, and sends only the rest. */
        o->wpend_done = done;
        o->wpend_buf = buf;
        o->last_err = retryable(err) ? SSL_ERROR_WANT_WRITE : SSL_ERROR_SYSCALL;
        if (!retryable(err))
            ks_log_debug("fd %d: kTLS send: %s", o->fd, strerror(err));
        errno = err;
        return -1;
    }
    o->wpend_done = 0;
    o->wpend_buf = NULL;
    o->last_err = SSL_ERROR_NONE;
    *written = done;
    return 1;
}

ossl_ssize_t ks_own_sendfile(SSL *s, struct ks_own *o, int in_fd, off_t offset, size_t size)
{
    o->last_err = -1;
    if (api.get_shutdown(s) & SSL_SENT_SHUTDOWN)
        return write_failed(o, SSL_R_PROTOCOL_IS_SHUTDOWN);
    if (answer_first(o) < 0)
        return -1;
    off_t off = offset;
    ssize_t r = ks_libc()->sendfile(o->fd, in_fd, &off, size);
    if (r < 0) {
        int err = errno;
        /* libssl: EAGAIN, EINTR and EBUSY are for a retry, anything else
         * an SSL error. */
        if (retryable(err) || err == EBUSY) {
            o->last_err = SSL_ERROR_WANT_WRITE;
        } else {
            ks_log_debug("fd %d: kTLS sendfile: %s", o->fd, strerror(err));
            write_failed(o, SSL_R_UNINITIALIZED);
        }
        errno = err;
        return -1;
    }
    o->last_err = SSL_ERROR_NONE;
    return r;
}

/* Our close_notify as an alert record. 1 when sent; -1 otherwise, with
 * last_err (WANT_WRITE: try again) and errno. */
static int send_close_notify(struct ks_own *o)
{
    uint8_t alert[2] = {ALERT_LEVEL_WARNING, ALERT_CLOSE_NOTIFY};
    union ks_record_type_cmsg room;
    struct iovec iov = {.iov_base = alert, .iov_len = sizeof alert};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    ks_ktls_set_record_type(&msg, &room, REC_ALERT);
    ssize_t r = ks_io_sendmsg(o->fd, &msg, 0);
    if (r == (ssize_t)sizeof alert) {
        o->alert_pending = false;
        return 1;
    }
    int err = r < 0 ? errno : EIO;
    o->last_err = retryable(err) ? SSL_ERROR_WANT_WRITE : SSL_ERROR_SYSCALL;
    if (!retryable(err))
        ks_log_debug("fd %d: kTLS close_notify: %s", o->fd, strerror(err));
    errno = err;
    return -1;
}

bool ks_own_drain_to_close(SSL *s, struct ks_own *o)
{
    for (;;) {
        uint8_t sink[4096];
        size_t got;
        int rr = ks_own_read(s, o, sink, sizeof sink, &got, false);
        ks_cleanse(sink, sizeof sink);
        if (rr <= 0)
            return o->state == OWN_CLOSED;
    }
}

int ks_own_shutdown_tx(SSL *s, struct ks_own *o)
{
    o->last_err = -1;
    if (o->state == OWN_FAILED) {
        /* libssl refuses to shut down a connection that failed. */
        o->last_err = SSL_ERROR_SSL;
        ks_own_push_error(SSL_R_SHUTDOWN_WHILE_IN_INIT);
        return -1;
    }
    if (api.get_quiet_shutdown(s)) {
        api.set_shutdown(s, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
        return 1;
    }
    int sh = api.get_shutdown(s);
    if (!(sh & SSL_SENT_SHUTDOWN) || o->alert_pending) {
        /* Our KeyUpdate answer, if due, before our close_notify. */
        if (answer_first(o) < 0)
            return -1;
    }
    if (!(sh & SSL_SENT_SHUTDOWN)) {
        /* First call: our close_notify goes out; nothing is read. */
        api.set_shutdown(s, sh | SSL_SENT_SHUTDOWN);
        o->alert_pending = true;
        if (send_close_notify(o) < 0)
            return -1;
    } else if (o->alert_pending) {
        if (send_close_notify(o) < 0)
            return -1;
    } else if (!(sh & SSL_RECEIVED_SHUTDOWN)) {
        /* Later calls wait for the peer's close_notify, discarding data,
         * as libssl does. */
        if (!ks_own_drain_to_close(s, o))
            return -1; /* WANT_READ, or the connection ended otherwise */
    }
    o->last_err = -1; /* SSL_get_error asks libssl, as after libssl's */
    sh = api.get_shutdown(s);
    return sh == (SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN) && !o->alert_pending ? 1 : 0;
}
