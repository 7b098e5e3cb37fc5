/* ctrl.c — libssl's kTLS controls under a program's own BIO, answered.
 * Switching TX: libssl flushes the BIO and then asks BIO_CTRL_SET_KTLS with
 * the kernel's crypto info. If their flush left nothing pending
 * (BIO_CTRL_WPENDING), the library attaches the tls ULP and TLS_TX on the
 * socket found under it (find.c), and answers yes, then GET_KTLS_SEND yes:
 * libssl then writes plaintext through their BIO and the kernel encrypts it.
 * A "later" BIO always still holds bytes then (TLS 1.2: the
 * ChangeCipherSpec). When the library knows them to the byte (the first
 * write carried all the BIO had taken; what it took since is copied), it
 * answers yes, notes them on the socket as a first segment with the key,
 * and their next writes send exactly those bytes (framing.c: checked
 * against the copy, a mismatch fails the write, EIO, never sends
 * plaintext); TLS_TX goes in right after, the key is wiped. Not known to
 * the byte: bio_busy. Control records libssl announces
 * (SET_KTLS_TX_SEND_CTRL_MSG) are noted on the socket (framing.c).
 * RX is refused to libssl here: their BIOs read ahead into their own
 * buffers (Apache's brigades, h2o's input buffer), so at libssl's switch
 * point bytes of the next records may already be in user space where the
 * kernel cannot see them; and after TLS_RX their plain read()/recv() would
 * fail with EIO on every control record. The own switch takes receive
 * later instead, once their reads are proven to have reached libssl
 * (rxframe.c). */
#include "tls/biosock/bs.h"
#include "tls/bioproof.h"
#include "core/config.h"
#include "core/log.h"
#include "kernel/cryptoinfo.h"

#include <stdlib.h>
#include <string.h>

int bs_any_tx; /* atomic: some BIO got kTLS TX from us */

__thread struct bs_ctrl_next bs_ctrl_next __attribute__((tls_model("initial-exec")));

/* TX for st->fd once the st->unsent bytes its program holds (st->held)
 * have left: noted on the socket as its first segment, with the key. */
static bool defer_tx(struct bs_bio *st, const void *crypto_info, socklen_t len)
{
    if (!bs_frame_hold(st->fd, crypto_info, len, st->held, st->held_len))
        return false;
    ks_log_debug("fd %d: kTLS TX once the %u bytes the program's BIO still holds have left", st->fd,
                 (unsigned)st->held_len);
    free(st->held);
    st->held = NULL;
    st->held_len = 0;
    return true;
}

/* BIO_CTRL_SET_KTLS for TX on the program's BIO `end`: 1 if the kernel now
 * encrypts what is written to its socket. */
static long set_ktls_tx(BIO *end, void *crypto_info)
{
    struct bs_bio *st = bs_bio_state_make(end);
    if (st)
        st->tx_asked = true;
    if (st && st->fd >= 0 && bs_later.st == st)
        bs_later_drop(); /* what it holds now is counted at the switch itself */
    if (!st || st->fd < 0 || st->ambiguous) {
        if (st)
            st->reason = KS_FB_BIO_NO_FD;
        return 0;
    }
    if (st->tx_on) /* renegotiation: libssl refuses it under kTLS itself */
        return 0;
    if (st->queued) {
        st->reason = KS_FB_BIO_BUSY;
        return 0;
    }
    /* Its flush said yes with bytes still in its buffer (h2o: TLS 1.2's
     * ChangeCipherSpec): under kTLS now, the kernel would encrypt them again
     * when its event loop writes them. Known to the byte, they go out first
     * and the key after them (deferred); else no kTLS. */
    bool deferred = st->by_later && st->unsent;
    if (deferred &&
        (!st->precise || st->held_over || st->held_len != st->unsent || bs_fd_pending(st->fd))) {
        ks_log_debug("fd %d: the program's BIO holds %llu bytes it has not sent yet: no kTLS TX",
                     st->fd, (unsigned long long)st->unsent);
        st->reason = KS_FB_BIO_BUSY;
        return 0;
    }
    long pending = bs_api.ctrl(end, BIO_CTRL_WPENDING, 0, NULL);
    if (pending > 0) {
        ks_log_debug("fd %d: the program's BIO still holds %ld bytes: no kTLS TX", st->fd, pending);
        st->reason = KS_FB_BIO_BUSY;
        return 0;
    }
    socklen_t len = crypto_info ? ks_crypto_info_len(crypto_info) : 0;
    if (!len) {
        st->reason = KS_FB_CIPHER;
        return 0;
    }
    /* Control records must be noted on the socket: no table, no kTLS. */
    if (!bs_frames_ready(st->fd)) {
        ks_log_debug("fd %d: beyond the %d descriptors whose control records can be tracked "
                     "(or no memory): no kTLS TX",
                     st->fd, BS_FD_MAX);
        st->reason = KS_FB_OTHER;
        return 0;
    }
    if (setsockopt(st->fd, SOL_TCP, TCP_ULP, "tls", sizeof "tls") != 0 && errno != EEXIST) {
        st->reason = errno == ENOENT ? KS_FB_NO_KERNEL_TLS : KS_FB_OTHER;
        if (errno != ENOENT)
            ks_log_error("fd %d: setsockopt(TCP_ULP, tls) failed: %s", st->fd, strerror(errno));
        return 0;
    }
    if (deferred) {
        if (!defer_tx(st, crypto_info, len)) {
            st->reason = KS_FB_OTHER;
            return 0;
        }
    } else if (setsockopt(st->fd, SOL_TLS, TLS_TX, crypto_info, len) != 0) {
        ks_log_error("fd %d: setsockopt(SOL_TLS, TLS_TX) failed: %s", st->fd, strerror(errno));
        st->reason = KS_FB_OTHER;
        return 0;
    }
    st->tx_on = true;
    __atomic_store_n(&bs_any_tx, 1, __ATOMIC_RELAXED);
    return 1;
}

/* libssl asks to switch direction tx under the chain b: true if the call may
 * go on, to libcrypto when the chain is proven to be its socket BIO
 * (bioproof.c), to this module for TX under a program's own BIO; false with
 * *ret 0 (no) for anything else. With KTLSSHIM_KTLS=off libssl's kTLS is the
 * program's own doing: untouched. */
static bool set_ktls_allowed(BIO *b, bool tx, long *ret)
{
    if (ks_config()->ktls == KS_KTLS_OFF)
        return true;
    enum ks_bio_shape shape = ks_bio_shape(b, tx);
    if (shape == KS_BIO_SOCKET || (shape == KS_BIO_PROGRAM && tx))
        return true;
    if (shape != KS_BIO_OTHER)
        ks_log_debug("libssl's kTLS %s refused: %s", tx ? "TX" : "RX",
                     shape == KS_BIO_PROGRAM
                         ? "receiving through the program's own BIO (see biosock/ctrl.c)"
                         : "the BIO chain is not proven to be libcrypto's socket BIO");
    *ret = 0;
    return false;
}

bool bs_ctrl(BIO *b, int cmd, long num, void *ptr, long *ret)
{
    if (cmd == KS_BIO_CTRL_SET_KTLS) {
        bool on;
        KS_SAVE_ERRNO;
        on = set_ktls_allowed(b, num != 0, ret);
        KS_RESTORE_ERRNO;
        if (!on)
            return true; /* refused: *ret is 0 */
    }
    if (!api_ready())
        return false;
    BIO *end = bs_chain_end(b);
    if (!end || bs_libcrypto_bio(end))
        return false;
    struct bs_bio *st;
    switch (cmd) {
    case KS_BIO_CTRL_SET_KTLS:
        if (!num || ks_config()->ktls == KS_KTLS_OFF) /* RX: refused above */
            return false;
        KS_SAVE_ERRNO;
        *ret = set_ktls_tx(end, ptr);
        if ((st = bs_bio_state(end))) { /* decided: the copy has served */
            free(st->held);
            st->held = NULL;
            st->held_len = 0;
        }
        KS_RESTORE_ERRNO;
        return true;
    case KS_BIO_CTRL_SET_KTLS_TX_SEND_CTRL_MSG:
        if (!(st = bs_bio_state(end)) || !st->tx_on)
            return false;
        bs_ctrl_next.bio = b;
        bs_ctrl_next.fd = st->fd;
        bs_ctrl_next.type = (uint8_t)num;
        bs_ctrl_next.armed = true;
        *ret = 0;
        return true;
    case KS_BIO_CTRL_CLEAR_KTLS_TX_CTRL_MSG:
        if (!(st = bs_bio_state(end)) || !st->tx_on)
            return false;
        bs_ctrl_next.armed = false;
        *ret = 0;
        return true;
    default:
        return false;
    }
}

int bs_ctrl_write(BIO *b, const void *data, int dlen)
{
    /* The payload of the announced control record: libssl writes it to
     * the BIO it announced it on, right after. Anything else means the
     * announcement was abandoned (an error path): forget it. */
    bs_ctrl_next.armed = false;
    int fd = bs_ctrl_next.fd;
    if (dlen <= 0 || b != bs_ctrl_next.bio)
        return bs_api.write(b, data, dlen);
    int e = errno;
    bs_ctrl_note(fd, bs_ctrl_next.type, (size_t)dlen);
    errno = e;
    int r = bs_api.write(b, data, dlen);
    if (r < dlen) {
        e = errno;
        bs_ctrl_unnote(fd, (size_t)(dlen - (r > 0 ? r : 0)));
        errno = e;
    }
    return r;
}
