/* bio.c — the library's BIO_ctrl, BIO_write and BIO_read: where libssl's
 * kTLS controls, its handshake writes into a program's own BIO and its reads
 * from it pass. Each is one jump (bs.h) until a handshake call meets a
 * program's own BIO; BIO_ctrl also looks at every BIO_CTRL_SET_KTLS, in
 * every process (bioproof.c's proof). */
#define KS_HOOKS_BIO
#include "tls/ossl/hooks.h" /* first: the hook bodies' names */
#include "tls/biosock/bs.h"
#include "core/log.h"
#include "tls/ossl/sym.h"

/* The real function cannot be found in any loaded libcrypto.so.3 (a caller
 * reached this hook, so one should be there): the call fails as libcrypto's
 * would on a bad BIO, said once; never an abort in the program. */
static void missing(const char *name)
{
    static int said;
    if (!__atomic_exchange_n(&said, 1, __ATOMIC_RELAXED))
        ks_log_error("cannot find the real %s in any loaded libcrypto.so.3; the call fails", name);
}

static long bio_ctrl_slow(BIO *b, int cmd, long larg, void *parg);
static int bio_write_slow(BIO *b, const void *data, int dlen);
static int bio_read_slow(BIO *b, void *data, int dlen);
static long (*bio_ctrl_hook)(BIO *, int, long, void *) = bio_ctrl_slow;
/* libcrypto's BIO_ctrl while every control but SET_KTLS goes straight to it
 * (no program's BIO met): BIO_ctrl's one test, about 165 calls a
 * connection. NULL before it is known, and for good once a program's BIO
 * was met (bs_own_bio_seen). */
static long (*bio_ctrl_pass)(BIO *, int, long, void *);
static int (*bio_write_hook)(BIO *, const void *, int) = bio_write_slow;
static int (*bio_read_hook)(BIO *, void *, int) = bio_read_slow;

/* Until a program's BIO is met: libssl's request to switch (once per
 * connection and direction) is the one control that must be looked at, by
 * every process, whatever BIO it meets first: only a chain proven to be
 * libcrypto's socket BIO gets libcrypto's answer (bioproof.c). */
static long bio_ctrl_proving(BIO *b, int cmd, long larg, void *parg)
{
    long (*real)(BIO *, int, long, void *) = __atomic_load_n(&bs_api.ctrl, __ATOMIC_RELAXED);
    if (KS_LIKELY(cmd != KS_BIO_CTRL_SET_KTLS) && KS_LIKELY(real != NULL))
        return real(b, cmd, larg, parg);
    return bio_ctrl_slow(b, cmd, larg, parg);
}

/* bio_ctrl_pass is set once the real one is known, unless watching began:
 * bs_own_bio_seen sets bs_watching, then clears it (all seq_cst, so one of
 * the two sides sees the other's store). */
static void pass_through_known(void)
{
    long (*none)(BIO *, int, long, void *) = NULL;
    if (__atomic_load_n(&bio_ctrl_pass, __ATOMIC_RELAXED) ||
        __atomic_load_n(&bs_watching, __ATOMIC_SEQ_CST))
        return;
    __atomic_compare_exchange_n(&bio_ctrl_pass, &none, bs_api.ctrl, false, __ATOMIC_SEQ_CST,
                                __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&bs_watching, __ATOMIC_SEQ_CST))
        __atomic_store_n(&bio_ctrl_pass, NULL, __ATOMIC_SEQ_CST);
}

__attribute__((noinline)) static long bio_ctrl_slow(BIO *b, int cmd, long larg, void *parg)
{
    if (KS_UNLIKELY(!api_ready()) && !bs_api.ctrl && !BS_RESOLVE(ctrl, "BIO_ctrl")) {
        missing("BIO_ctrl");
        return 0;
    }
    HOOK_SET(bio_ctrl_hook, bio_ctrl_slow, bio_ctrl_proving);
    pass_through_known();
    long r;
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        if (ks_biosock_handshaking && bs_watch_begin(b)) {
            r = bs_api.ctrl(b, cmd, larg, parg);
            bs_watch_returned(r > 0);
            bs_watch_end();
            return r;
        }
        break;
    case BIO_CTRL_GET_KTLS_SEND:
        r = bs_api.ctrl(b, cmd, larg, parg);
        if (r > 0 || !__atomic_load_n(&bs_any_tx, __ATOMIC_RELAXED) || !b)
            return r;
        return ks_biosock_tx_fd(b) >= 0 ? 1 : r;
    case KS_BIO_CTRL_SET_KTLS:
    case KS_BIO_CTRL_SET_KTLS_TX_SEND_CTRL_MSG:
    case KS_BIO_CTRL_CLEAR_KTLS_TX_CTRL_MSG:
        if (b && bs_ctrl(b, cmd, larg, parg, &r))
            return r;
        break;
    default:
        break;
    }
    return bs_api.ctrl(b, cmd, larg, parg);
}

/* Once a program's BIO was met: the controls this module acts on, given the
 * state, go to bio_ctrl_slow; everything else straight to libcrypto.
 * Tested in the order of how often libssl asks them: per request of a
 * small keep-alive response about 9 GET_KTLS_SEND (before every record it
 * writes) and 7 FLUSH; SET_KTLS and the control-message controls (72-75)
 * once per connection or never. */
static long bio_ctrl_watching(BIO *b, int cmd, long larg, void *parg)
{
    long (*real)(BIO *, int, long, void *) = __atomic_load_n(&bs_api.ctrl, __ATOMIC_RELAXED);
    if (KS_UNLIKELY(!real))
        return bio_ctrl_slow(b, cmd, larg, parg);
    if (cmd == BIO_CTRL_GET_KTLS_SEND) {
        if (KS_LIKELY(!__atomic_load_n(&bs_any_tx, __ATOMIC_RELAXED)))
            return real(b, cmd, larg, parg);
    } else if (cmd == BIO_CTRL_FLUSH) {
        if (KS_LIKELY(!ks_biosock_handshaking))
            return real(b, cmd, larg, parg);
    } else if (KS_LIKELY((unsigned)cmd - KS_BIO_CTRL_SET_KTLS >
                         KS_BIO_CTRL_CLEAR_KTLS_TX_CTRL_MSG - KS_BIO_CTRL_SET_KTLS)) {
        return real(b, cmd, larg, parg);
    }
    return bio_ctrl_slow(b, cmd, larg, parg);
}

KS_EXPORT long BIO_ctrl(BIO *b, int cmd, long larg, void *parg)
{
    long (*real)(BIO *, int, long, void *) = __atomic_load_n(&bio_ctrl_pass, __ATOMIC_RELAXED);
    if (KS_LIKELY(real != NULL) && KS_LIKELY(cmd != KS_BIO_CTRL_SET_KTLS))
        return real(b, cmd, larg, parg);
    return HOOK_JUMP(bio_ctrl_hook)(b, cmd, larg, parg);
}

__attribute__((noinline)) static int bio_write_slow(BIO *b, const void *data, int dlen)
{
    if (KS_UNLIKELY(!api_ready()) && !bs_api.write && !BS_RESOLVE(write, "BIO_write")) {
        missing("BIO_write");
        return -1;
    }
    HOOK_SET(bio_write_hook, bio_write_slow, bs_api.write);
    if (!bs_ctrl_next.armed && !ks_biosock_handshaking)
        return bs_api.write(b, data, dlen);
    if (bs_ctrl_next.armed)
        return bs_ctrl_write(b, data, dlen);
    bool mine = bs_watch_begin(b);
    int r = bs_api.write(b, data, dlen);
    if (r > 0 && bs_watch.target == b) /* into the program's BIO itself */
        bs_watch_handed(data, r);
    if (mine) {
        bs_watch_returned(r == dlen);
        bs_watch_end();
    }
    return r;
}

/* Once a program's BIO was met: outside handshake calls (every record of
 * every connection), BIO_write and BIO_read tail-call libcrypto's. */
static int bio_write_watching(BIO *b, const void *data, int dlen)
{
    int (*real)(BIO *, const void *, int) = __atomic_load_n(&bs_api.write, __ATOMIC_RELAXED);
    if (KS_LIKELY(real != NULL) && KS_LIKELY(!bs_ctrl_next.armed && !ks_biosock_handshaking))
        return real(b, data, dlen);
    return bio_write_slow(b, data, dlen);
}

KS_EXPORT int BIO_write(BIO *b, const void *data, int dlen)
{
    return HOOK_JUMP(bio_write_hook)(b, data, dlen);
}

__attribute__((noinline)) static int bio_read_slow(BIO *b, void *data, int dlen)
{
    if (KS_UNLIKELY(!api_ready()) && !bs_api.read && !BS_RESOLVE(read, "BIO_read")) {
        missing("BIO_read");
        return -1;
    }
    HOOK_SET(bio_read_hook, bio_read_slow, bs_api.read);
    bool hello = ks_biosock_handshaking && __atomic_load_n(&bs_hellos_on, __ATOMIC_RELAXED);
    bool tail = __atomic_load_n(&bs_rx_watching, __ATOMIC_RELAXED) != 0;
    if (!hello && !tail)
        return bs_api.read(b, data, dlen);
    int r = bs_api.read(b, data, dlen);
    if (r > 0 && b && data && api_ready()) {
        KS_SAVE_ERRNO;
        if (hello)
            bs_rx_saw(b, data, r);
        if (tail) /* what libssl took, for the receive switch's proof (rxframe.c) */
            bs_rx_bio_took(b, data, r);
        KS_RESTORE_ERRNO;
    }
    return r;
}

static int bio_read_watching(BIO *b, void *data, int dlen)
{
    int (*real)(BIO *, void *, int) = __atomic_load_n(&bs_api.read, __ATOMIC_RELAXED);
    if (KS_LIKELY(real != NULL) && KS_LIKELY(!ks_biosock_handshaking) &&
        KS_LIKELY(!__atomic_load_n(&bs_rx_watching, __ATOMIC_RELAXED)))
        return real(b, data, dlen);
    return bio_read_slow(b, data, dlen);
}

KS_EXPORT int BIO_read(BIO *b, void *data, int dlen)
{
    return HOOK_JUMP(bio_read_hook)(b, data, dlen);
}

/* ---- a program's own BIO met in a handshake call ---- */

int bs_watching; /* atomic: a program's own BIO was met (ks_biosock_handshake_bios) */

/* A BIO chain that ends in neither one of libcrypto's descriptor BIOs nor a
 * memory BIO (or a BIO pair): a program's own, under which a socket may be
 * found. */
static bool program_bio(BIO *b)
{
    BIO *end = b ? bs_chain_end(b) : NULL;
    return end && !bs_libcrypto_bio(end) && !bs_memory_bio(end);
}

/* From now on every hook of this module watches (for good). */
void bs_own_bio_seen(void)
{
    if (__atomic_exchange_n(&bs_watching, 1, __ATOMIC_SEQ_CST))
        return;
    __atomic_store_n(&bio_ctrl_pass, NULL, __ATOMIC_SEQ_CST);
    __atomic_store_n(&bio_ctrl_hook, bio_ctrl_watching, __ATOMIC_SEQ_CST);
    __atomic_store_n(&bio_write_hook, bio_write_watching, __ATOMIC_SEQ_CST);
    __atomic_store_n(&bio_read_hook, bio_read_watching, __ATOMIC_SEQ_CST);
    bs_io_watch();
    ks_log_debug("a handshake call goes through a BIO of the program's own: its hooks watch");
}

void ks_biosock_handshake_bios(BIO *rbio, BIO *wbio)
{
    if (KS_LIKELY(__atomic_load_n(&bs_watching, __ATOMIC_RELAXED)) ||
        ks_ossl_flavour() == KS_OSSL_111 || (!rbio && !wbio) || !api_ready())
        return;
    KS_SAVE_ERRNO;
    if (program_bio(rbio) || (wbio != rbio && program_bio(wbio)))
        bs_own_bio_seen();
    KS_RESTORE_ERRNO;
}
