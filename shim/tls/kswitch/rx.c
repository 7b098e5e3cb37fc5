/* tls/kswitch/rx.c — the library's own kTLS switch, receive direction:
 * serving a connection whose receive tls/kswitch/switch.c has switched.
 * Why a file of its own: from the switch on, libssl must not read that
 * connection's socket, so every call that reads or asks about received
 * data is answered here with libssl's semantics.
 *
 * Records come with recvmsg and the TLS_GET_RECORD_TYPE cmsg, or framed
 * through the program's own BIO (tls/biosock/rxframe.c) (SSL_peek
 * takes the next record and holds it, so that SSL_pending counts it as
 * libssl's does); application
 * data is returned, close_notify gives SSL_ERROR_ZERO_RETURN and sets
 * SSL_RECEIVED_SHUTDOWN (so libssl's SSL_shutdown agrees), a fatal alert,
 * a record the kernel rejects (EBADMSG: forged or garbage), any handshake
 * message other than a TLS 1.3 KeyUpdate (tls/kswitch/rekey.c applies those
 * where the kernel can rekey, else ends the connection) or a TLS 1.2
 * renegotiation attempt end the connection with an SSL error. */
#include "tls/ossl/hooks.h" /* first: the hook bodies' names */
#include "tls/kswitch/kswitch.h"
#include "tls/kswitch/own.h"
#include "tls/connwatch.h"
#include "core/log.h"
#include "tls/ossl/api.h"
#include "tls/ossl/sym.h"
#include "core/libc.h"
#include "stats/stats.h"

#include <limits.h>
#include <openssl/err.h>
#include <linux/tls.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define api ks_ossl_api

enum { REC_CCS = 20, REC_ALERT = 21, REC_HANDSHAKE = 22, REC_DATA = 23 };
enum { HS_KEY_UPDATE = 24 };
enum { ALERT_WARNING = 1, ALERT_CLOSE_NOTIFY = 0, ALERT_USER_CANCELED = 90 };

#define SCRATCH KS_OWN_SCRATCH

/* ---- serving the receive side ---- */

void ks_own_push_error(int reason)
{
    if (!api.ERR_new) { /* OpenSSL 1.1 */
        api.put_error(ERR_LIB_SSL, 0, reason, "ktlsshim", 0);
        return;
    }
    api.ERR_new();
    api.ERR_set_debug("ktlsshim", 0, "kTLS receive");
    api.ERR_set_error(ERR_LIB_SSL, reason, NULL);
}

/* The connection cannot go on: an SSL error, as libssl gives. */
static int fail_ssl(struct ks_own *o, int reason)
{
    o->state = OWN_FAILED;
    o->fatal = true;
    ks_own_rx_ended(o);
    o->last_err = SSL_ERROR_SSL;
    ks_own_push_error(reason);
    return -1;
}

/* One recvmsg: *type is the record's content type (data when the kernel
 * sent none). -1 with errno; 0 with *type 0 at end of stream. */
static ssize_t recv_record(int fd, void *buf, size_t n, int flags, uint8_t *type)
{
    union {
        char buf[CMSG_SPACE(sizeof(uint8_t))];
        struct cmsghdr align;
    } cbuf;
    struct iovec iov = {.iov_base = buf, .iov_len = n};
    struct msghdr msg = {.msg_iov = &iov,
                         .msg_iovlen = 1,
                         .msg_control = cbuf.buf,
                         .msg_controllen = sizeof cbuf.buf};
    ssize_t r = ks_libc()->recvmsg(fd, &msg, flags);
    *type = 0;
    if (r < 0) {
        ks_log_debug("fd %d: recvmsg: %s", fd, strerror(errno));
        return r;
    }
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
        if (c->cmsg_level == SOL_TLS && c->cmsg_type == TLS_GET_RECORD_TYPE)
            *type = *CMSG_DATA(c);
    if (r > 0 && *type == 0)
        *type = REC_DATA;
    return r;
}

/* The next record (or its next bytes): from the socket, or framed through
 * the program's BIO (tls/biosock/rxframe.c), which cannot peek (SSL_peek
 * holds what it took instead: ks_own_read). */
static ssize_t next_record(SSL *s, struct ks_own *o, void *buf, size_t n, int flags, uint8_t *type)
{
    if (KS_LIKELY(!o->rx_bio))
        return recv_record(o->fd, buf, n, flags, type);
    *type = 0;
    if (flags & MSG_PEEK) {
        errno = ENOMEM; /* no room was found to hold a peeked record */
        return -1;
    }
    if (api.get_rbio(s) != o->rx_bio) {
        /* The program put another BIO on s: the stream is not the one
         * the switch was proven on. */
        errno = EPROTO;
        return -1;
    }
    return ks_biosock_rx_read(o->rx_bio, &o->rx_in, buf, n, type);
}

static int os_error(SSL *s, struct ks_own *o, int err)
{
    (void)s;
    switch (err) {
    case EAGAIN:
#if EWOULDBLOCK != EAGAIN
    case EWOULDBLOCK:
#endif
    case EINTR:
        o->last_err = SSL_ERROR_WANT_READ;
        errno = err;
        return -1;
    case EBADMSG:
    case EMSGSIZE:
    case EINVAL:
    case EIO:
    case EPROTO:
        ks_count(KS_C_KTLS_RX_BAD_RECORD, 1);
        ks_log_info("kTLS receive on fd %d: the kernel rejected a record (%s); the connection is "
                    "ended with an SSL error",
                    o->fd, strerror(err));
        errno = err;
        return fail_ssl(o, err == EMSGSIZE ? SSL_R_PACKET_LENGTH_TOO_LONG
                                           : SSL_R_DECRYPTION_FAILED_OR_BAD_RECORD_MAC);
    default:
        o->state = OWN_FAILED;
        ks_own_rx_ended(o);
        o->last_err = SSL_ERROR_SYSCALL;
        errno = err;
        return -1;
    }
}

/* A non-data record (its first bytes in b, r of them). 1: ignored, read on;
 * otherwise the return for the read call. */
static int control_record(SSL *s, struct ks_own *o, uint8_t type, const uint8_t *b, ssize_t r)
{
    if (type == REC_ALERT) {
        if (r != 2)
            return fail_ssl(o, SSL_R_BAD_RECORD_TYPE);
        if (b[1] == ALERT_CLOSE_NOTIFY) {
            api.set_shutdown(s, api.get_shutdown(s) | SSL_RECEIVED_SHUTDOWN);
            o->state = OWN_CLOSED;
            ks_own_rx_ended(o);
            o->last_err = SSL_ERROR_ZERO_RETURN;
            return 0;
        }
        /* TLS 1.2 warnings are ignored, as libssl does; TLS 1.3 knows only
         * user_canceled as a warning. */
        if (b[0] == ALERT_WARNING && (o->version == TLS1_2_VERSION || b[1] == ALERT_USER_CANCELED))
            return 1;
        api.set_shutdown(s, api.get_shutdown(s) | SSL_RECEIVED_SHUTDOWN);
        return fail_ssl(o, SSL_AD_REASON_OFFSET + b[1]);
    }
    if (type == REC_HANDSHAKE && o->version == TLS1_3_VERSION && r >= 1 && b[0] == HS_KEY_UPDATE) {
        int reason = ks_own_key_update(s, o, b, (size_t)r);
        return reason ? fail_ssl(o, reason) : 1;
    }
    if (type == REC_HANDSHAKE && o->version == TLS1_2_VERSION) {
        ks_count(KS_C_KTLS_RX_RENEG_REFUSED, 1);
        ks_log_info("fd %d: TLS 1.2 renegotiation refused under kTLS receive; the connection "
                    "is ended",
                    o->fd);
        return fail_ssl(o, SSL_R_NO_RENEGOTIATION);
    }
    return fail_ssl(o, SSL_R_UNEXPECTED_MESSAGE);
}

/* Serves a read from bytes taken from the kernel earlier (b, cap bytes,
 * *len of them from *off on); peek leaves them there. */
static int from_buffer(struct ks_own *o, uint8_t *b, size_t cap, size_t *off, size_t *len,
                       void *buf, size_t num, size_t *got, bool peek)
{
    size_t n = num < *len ? num : *len;
    memcpy(buf, b + *off, n);
    if (!peek) {
        *off += n;
        *len -= n;
        if (!*len)
            ks_cleanse(b, cap), *off = 0;
    }
    o->last_err = SSL_ERROR_NONE;
    *got = n;
    return (int)n;
}

int ks_own_read(SSL *s, struct ks_own *o, void *buf, size_t num, size_t *got, bool peek)
{
    *got = 0;
    /* At most one of the two holds bytes: each is filled only when both
     * are empty. */
    if (o->stash_len)
        return from_buffer(o, o->stash, sizeof o->stash, &o->stash_off, &o->stash_len, buf, num,
                           got, peek);
    if (o->held_len)
        return from_buffer(o, o->held, KS_OWN_HELD, &o->held_off, &o->held_len, buf, num, got,
                           peek);
    /* SSL_peek takes the next record from the kernel and holds it, as
     * libssl does: SSL_pending then counts its bytes (IO::Socket::SSL's
     * readline peeks one byte, then reads what SSL_pending says). Without
     * memory for it, the kernel's MSG_PEEK below (SSL_pending says 0).
     * Under a program's BIO a read for less than a record does the same,
     * so that the rest is pending here, as in libssl, not back in the
     * program's buffer. */
    bool hold = peek || (o->rx_bio && num < KS_OWN_HELD);
    if (hold && num && o->state == OWN_OPEN && (o->held || (o->held = malloc(KS_OWN_HELD)))) {
        size_t n = 0;
        int r = ks_own_read(s, o, o->held, KS_OWN_HELD, &n, false);
        if (r <= 0)
            return r;
        o->held_off = 0;
        o->held_len = n;
        return from_buffer(o, o->held, KS_OWN_HELD, &o->held_off, &o->held_len, buf, num, got,
                           peek);
    }
    if (o->state == OWN_CLOSED) {
        o->last_err = SSL_ERROR_ZERO_RETURN;
        return 0;
    }
    if (o->state == OWN_FAILED) {
        o->last_err = SSL_ERROR_SSL;
        ks_own_push_error(SSL_R_PROTOCOL_IS_SHUTDOWN);
        return -1;
    }
    /* Our KeyUpdate answer that could not go out at once (EAGAIN). */
    if (KS_UNLIKELY(o->ku_answer_due) && ks_own_key_update_answer(o) != 0 && o->state == OWN_FAILED)
        return fail_ssl(o, SSL_R_BAD_KEY_UPDATE);
    if (num > INT_MAX)
        num = INT_MAX;
    for (;;) {
        uint8_t scratch[SCRATCH];
        bool small = num < sizeof scratch;
        uint8_t *dst = small ? scratch : buf;
        uint8_t type;
        ssize_t r =
            next_record(s, o, dst, small ? sizeof scratch : num, peek ? MSG_PEEK : 0, &type);
        if (r < 0)
            return os_error(s, o, errno);
        if (type == 0) { /* end of stream without close_notify */
            /* OpenSSL 1.1 reports it as a syscall error with errno 0. */
            if (ks_ossl_flavour() == KS_OSSL_111) {
                o->state = OWN_FAILED;
                o->last_err = SSL_ERROR_SYSCALL;
                errno = 0;
                return 0;
            }
            if (api.get_options(s) & SSL_OP_IGNORE_UNEXPECTED_EOF) {
                api.set_shutdown(s, api.get_shutdown(s) | SSL_RECEIVED_SHUTDOWN);
                o->state = OWN_CLOSED;
                ks_own_rx_ended(o);
                o->last_err = SSL_ERROR_ZERO_RETURN;
                return 0;
            }
            return fail_ssl(o, SSL_R_UNEXPECTED_EOF_WHILE_READING);
        }
        if (type == REC_DATA) {
            if (r == 0)
                continue; /* an empty record */
            size_t n = (size_t)r;
            if (small) {
                n = n < num ? n : num;
                memcpy(buf, scratch, n);
                if (!peek && (size_t)r > n) {
                    o->stash_off = 0;
                    o->stash_len = (size_t)r - n;
                    memcpy(o->stash, scratch + n, o->stash_len);
                }
                ks_cleanse(scratch, sizeof scratch);
            }
            o->last_err = SSL_ERROR_NONE;
            *got = n;
            return (int)n;
        }
        /* A control record: consume it if it was only peeked at, and keep
         * its bytes out of the caller's buffer. */
        if (peek) {
            r = next_record(s, o, scratch, sizeof scratch, 0, &type);
            if (r < 0)
                return os_error(s, o, errno);
        } else if (!small) {
            memcpy(scratch, buf, (size_t)r < sizeof scratch ? (size_t)r : sizeof scratch);
            memset(buf, 0, (size_t)r);
        }
        int ret = control_record(s, o, type, scratch, r);
        if (ret != 1)
            return ret;
    }
}

/* ---- hooks of calls that only own-RX connections need served ---- */

/* The program's I/O call on s: this process uses the connection (tls/hooks.c). */
static struct ks_own *own_in_use(SSL *s)
{
    if (!ks_ossl_ready())
        return NULL;
    ks_conn_in_use(s);
    return ks_own_of(s);
}

KS_EXPORT int SSL_peek(SSL *s, void *buf, int num)
{
    struct ks_own *o = own_in_use(s);
    if (!o)
        return api.peek ? api.peek(s, buf, num) : -1;
    size_t got;
    return ks_own_read(s, o, buf, num < 0 ? 0 : (size_t)num, &got, true);
}

KS_EXPORT int SSL_peek_ex(SSL *s, void *buf, size_t num, size_t *readbytes)
{
    struct ks_own *o = own_in_use(s);
    if (!o)
        return api.peek_ex ? api.peek_ex(s, buf, num, readbytes) : 0;
    size_t got;
    int r = ks_own_read(s, o, buf, num, &got, true);
    if (readbytes)
        *readbytes = r > 0 ? got : 0;
    return r > 0;
}

KS_EXPORT int SSL_pending(const SSL *s)
{
    struct ks_own *o = ks_ossl_ready() ? ks_own_of(s) : NULL;
    if (!o)
        return api.pending ? api.pending(s) : 0;
    /* Bytes the kernel holds make the socket readable; only what this
     * file holds back is "pending" in libssl's sense. */
    return (int)(o->stash_len + o->held_len);
}

KS_EXPORT int SSL_has_pending(const SSL *s)
{
    struct ks_own *o = ks_ossl_ready() ? ks_own_of(s) : NULL;
    if (!o)
        return api.has_pending ? api.has_pending(s) : 0;
    return o->stash_len + o->held_len > 0;
}

__attribute__((noinline)) static int get_error_slow(const SSL *s, int ret)
{
    int (*real)(const SSL *, int) = __atomic_load_n(&api.get_error, __ATOMIC_RELAXED);
    if (KS_LIKELY(real != NULL) && !__atomic_load_n(&ks_switch_live, __ATOMIC_RELAXED))
        return real(s, ret);
    struct ks_own *o = ks_ossl_ready() ? ks_own_of(s) : NULL;
    if (o && o->last_err >= 0)
        return ret > 0 ? SSL_ERROR_NONE : o->last_err;
    return api.get_error ? api.get_error(s, ret) : SSL_ERROR_SSL;
}

/* Called after most SSL_read/SSL_write returns: while no connection of
 * this process needs a lookup (connwatch.h: none is switched then) or none
 * is switched, straight to libssl with a tail call. */
KS_EXPORT int SSL_get_error(const SSL *s, int ret)
{
    if (ks_conns_unwatched())
        return api.get_error(s, ret);
    return get_error_slow(s, ret);
}

KS_EXPORT int SSL_shutdown(SSL *s)
{
    struct ks_own *o = own_in_use(s);
    if (!api.shutdown)
        return -1;
    if (!o)
        return api.shutdown(s);
    if (o->tx_on)
        return ks_own_shutdown_tx(s, o);
    o->last_err = -1;
    if (o->state == OWN_FAILED) {
        /* libssl refuses to shut down a connection that failed. */
        o->last_err = SSL_ERROR_SSL;
        ks_own_push_error(SSL_R_SHUTDOWN_WHILE_IN_INIT);
        return -1;
    }
    int sh = api.get_shutdown(s);
    /* libssl reads only when its close_notify is out and the peer's is
     * not in; then the reading is ours. */
    if (!(sh & SSL_SENT_SHUTDOWN) || (sh & SSL_RECEIVED_SHUTDOWN))
        return api.shutdown(s);
    /* Let libssl finish sending (a pending alert on a non-blocking socket)
     * without reading: it believes the peer's close_notify is in. */
    api.set_shutdown(s, sh | SSL_RECEIVED_SHUTDOWN);
    int r = api.shutdown(s);
    api.set_shutdown(s, api.get_shutdown(s) & ~SSL_RECEIVED_SHUTDOWN);
    if (r < 0)
        return r;
    /* Wait for the peer's close_notify, discarding data, as libssl does. */
    if (!ks_own_drain_to_close(s, o))
        return -1;
    o->last_err = -1;
    return 1;
}
