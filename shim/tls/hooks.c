/* tls/hooks.c — the OpenSSL call hooks (OpenSSL 3, and 1.1 through the same
 * bodies: tls/ossl/gates.c; on 1.1 libssl has no kTLS, so both directions
 * are the own switch's, tls/kswitch/switch.c and tls/kswitch/tx.c), and
 * their common entry (the OpenSSL table loaded once, ks_tls_need_api). Why
 * a file: these are the calls a connection's handshake and data go
 * through; what they find is kept elsewhere (the connection's record:
 * tls/conn.c; the contexts, SSL_CTX_new and the callbacks: tls/ctx.c).
 *
 * - SSL_accept / SSL_connect / SSL_do_handshake, and SSL_read / SSL_write
 *   (and their _ex forms, which may complete a handshake implicitly): when a
 *   connection's handshake is seen complete for the first time, it is
 *   recorded (tls/conn.c: TLS version, kTLS TX and RX or the reason for
 *   each fallback, software or NIC). Handshakes that complete inside
 *   libssl's own calls (a read on an SSL BIO: openssl s_server -WWW) are
 *   seen by the info callback every SSL_CTX gets (tls/ctx.c); the SSL BIO's
 *   reads and writes come back here (tls/sslbio.c, ks_tls_io_done).
 * - SSL_read / SSL_write / SSL_sendfile: bytes by path; where a direction
 *   is the own switch's, the call is served by it.
 * - sendfile(2) on a socket with kTLS TX: bytes counted. */
#include "tls/ossl/hooks.h" /* first: the hook bodies' names */
#include "tls/conn.h"
#include "tls/biosock/biosock.h"
#include "core/common.h"
#include "stats/connlog.h"
#include "tls/connwatch.h"
#include "tls/kswitch/kswitch.h"
#include "kernel/ktls.h"
#include "core/log.h"
#include "tls/ossl/api.h"
#include "core/libc.h"
#include "stats/stats.h"
#include "tls/ossl/gates.h"
#include "tls/ossl/sym.h"
#include "tls/withhold.h"

#include <openssl/ssl.h>
#include <pthread.h>

/* The libssl/libcrypto functions we call: the one table (tls/ossl/api.h). */
#define api ks_ossl_api

bool ks_tls_api_ok; /* every function the hooks need was found */
/* Fork: see config.c's cfg_once (a child runs an interrupted once again). */
static pthread_once_t api_once = PTHREAD_ONCE_INIT;

static void resolve(void)
{
    bool ok = ks_ossl_api_load();
    /* The ex_data indexes, and the contexts' fork handlers. */
    ks_tls_api_ok = ok && ks_conn_setup() && ks_ctx_setup();
    if (ks_tls_api_ok) {
        ks_switch_setup();
        ks_withhold_setup();      /* optional: without it libssl is always asked */
        ks_ossl_flavour_loaded(); /* the record says which OpenSSL */
    }
    if (!ks_tls_api_ok)
        ks_log_error("%s lacks functions the library needs; kTLS statistics are off "
                     "for this process (connections are untouched)",
                     ks_ossl_flavour() == KS_OSSL_111 ? "libssl.so.1.1" : "libssl.so.3");
    /* Every function the fast paths call is there: they may run (once: a
     * child that runs this again keeps what its parent gave back). */
    static bool watch_given;
    if (ks_tls_api_ok && api.read && api.read_ex && api.write && api.write_ex && api.get_error &&
        !__atomic_exchange_n(&watch_given, true, __ATOMIC_RELAXED))
        ks_conns_watch(-1);
}

/* Called on every hook: after the first call this is one load. */
void ks_tls_need_api(void)
{
    pthread_once(&api_once, resolve);
}

bool ks_ossl_ready(void)
{
    ks_tls_need_api();
    return ks_tls_api_ok;
}

__thread SSL *ks_handshake_call; /* tls/conn.h */

/* The program called an OpenSSL 3 function whose real definition cannot be
 * found (no libssl.so.3 this library can see: it cannot happen when the
 * program's libssl is loaded). Never abort in the program: the hook fails
 * the call the way libssl fails it (an error return), and says so once. */
void ks_tls_missing(const char *name)
{
    static int said;
    if (!__atomic_exchange_n(&said, 1, __ATOMIC_RELAXED))
        ks_log_error("cannot find the real %s in any loaded libssl.so.3; failing the call "
                     "(further such calls fail silently)",
                     name);
}

/* A handshake call by the program. If the handshake completes in it, the
 * connection is recorded, and the own switch gets its turn (only here: see
 * ks_handshake_call). */
#define HANDSHAKE_HOOK(fn, field)                                                                  \
    KS_EXPORT int fn(SSL *s)                                                                       \
    {                                                                                              \
        ks_tls_need_api();                                                                         \
        if (!api.field) {                                                                          \
            ks_tls_missing(#fn);                                                                   \
            return -1;                                                                             \
        }                                                                                          \
        bool top = !ks_hook_depth;                                                                 \
        if (top)                                                                                   \
            ks_handshake_call = s;                                                                 \
        const void *caller_ = __builtin_return_address(0);                                         \
        bool seen_ = top && ks_tls_api_ok && ks_conn_peek(s);                                      \
        ks_hook_depth++;                                                                           \
        ks_biosock_handshake_enter();                                                              \
        if (ks_tls_api_ok)                                                                         \
            ks_biosock_handshake_bios(api.get_rbio(s), api.get_wbio(s));                           \
        int r = api.field(s);                                                                      \
        ks_biosock_handshake_leave();                                                              \
        ks_hook_depth--;                                                                           \
        struct ks_conn *c_ = NULL;                                                                 \
        if (r == 1 && top)                                                                         \
            c_ = ks_conn_of(s);                                                                    \
        if (top)                                                                                   \
            ks_handshake_call = NULL;                                                              \
        if (c_ && c_->rx_own_due)                                                                  \
            ks_conn_own_rx_due(s, c_, caller_, !seen_);                                            \
        return r;                                                                                  \
    }

HANDSHAKE_HOOK(SSL_accept, accept)
HANDSHAKE_HOOK(SSL_connect, connect)
HANDSHAKE_HOOK(SSL_do_handshake, do_handshake)

/* Counts n bytes moved on connection c in direction tx. */
static inline void count_bytes(const struct ks_conn *c, bool tx, size_t n)
{
    if (tx)
        ks_count(c && c->tx ? KS_C_B_KTLS_TX : KS_C_B_USER_TX, n);
    else
        ks_count(c && c->rx ? KS_C_B_KTLS_RX : KS_C_B_USER_RX, n);
    if (c && KS_UNLIKELY(c->log))
        ks_connlog_bytes(c->log, tx, tx ? c->tx : c->rx, n);
}

/* After a read or write call on s (ok: it moved n bytes): a handshake it
 * completed is recorded, the own switch's receive decision if it is still
 * due, and the bytes are counted on their path. */
static struct ks_conn *call_done(SSL *s, bool tx, bool ok, size_t n)
{
    struct ks_conn *c = ks_conn_of(s);
    if (c) {
        c->io = true;
        c->user = ks_self_pid;
    }
    if (KS_UNLIKELY(c && c->rx_own_due)) /* completed, but not by a handshake call */
        ks_conn_own_rx_due(s, c, NULL, false);
    if (ok)
        count_bytes(c, tx, n);
    return c;
}

/* The hooks below (the calls made for every record) first try the fast
 * path: no connection of the process needs a lookup (connwatch.h) and the
 * call is the program's own (not libssl's from inside a hook). Then libssl
 * serves the call and its bytes are user bytes, unless the call itself made
 * a connection watched (a handshake completed in it): then call_done().
 * The rare ends are functions of their own that return the call's result,
 * so that the fast path keeps almost nothing across libssl's call. */
__attribute__((noinline)) static int fast_watched(SSL *s, int r, bool tx, bool ok, size_t n,
                                                  const void *caller)
{
    struct ks_conn *c = call_done(s, tx, ok, n);
    /* A handshake completed in this read may have left the receive switch
     * waiting (tls/kswitch/defer.c), and the read returned what libssl held. */
    if (KS_UNLIKELY(c && c->rx_defer) && !tx)
        ks_conn_rx_defer_try(s, c, ok && n > 0, caller);
    return r;
}

void ks_tls_io_done(SSL *s, bool tx, bool ok, size_t n, const void *caller)
{
    if (ks_conns_unwatched()) {
        if (ok)
            ks_count(tx ? KS_C_B_USER_TX : KS_C_B_USER_RX, n);
        return;
    }
    struct ks_conn *c = call_done(s, tx, ok, n);
    if (!tx && c && c->rx_defer) /* waiting for a record boundary */
        ks_conn_rx_defer_try(s, c, ok && n > 0, caller);
}

__attribute__((noinline)) static int fast_count(int r, bool tx, size_t n)
{
    ks_count(tx ? KS_C_B_USER_TX : KS_C_B_USER_RX, n);
    return r;
}

#define FAST_CALL(call, ok, n, tx)                                                                 \
    do {                                                                                           \
        ks_hook_depth++;                                                                           \
        int r = call;                                                                              \
        ks_hook_depth--;                                                                           \
        if (KS_UNLIKELY(!ks_conns_unwatched()))                                                    \
            return fast_watched(s, r, tx, ok, (ok) ? (size_t)(n) : 0,                              \
                                __builtin_return_address(0));                                      \
        if ((ok) &&                                                                                \
            KS_UNLIKELY(!ks_count_quick(tx ? KS_C_B_USER_TX : KS_C_B_USER_RX, (uint64_t)(n))))     \
            return fast_count(r, tx, (size_t)(n));                                                 \
        return r;                                                                                  \
    } while (0)

__attribute__((noinline)) static int read_slow(SSL *s, void *buf, int num, const void *caller)
{
    ks_tls_need_api();
    if (!api.read) {
        ks_tls_missing("SSL_read");
        return -1;
    }
    if (ks_hook_depth)
        return api.read(s, buf, num);
    struct ks_own *o = ks_own_of(s);
    int r;
    if (o) { /* receive is the own switch's */
        size_t got;
        r = ks_own_read(s, o, buf, num < 0 ? 0 : (size_t)num, &got, false);
    } else {
        ks_hook_depth++;
        r = api.read(s, buf, num);
        ks_hook_depth--;
    }
    struct ks_conn *c = call_done(s, false, r > 0, r > 0 ? (size_t)r : 0);
    if (KS_UNLIKELY(c && c->rx_defer)) /* waiting for a record boundary */
        ks_conn_rx_defer_try(s, c, r > 0, caller);
    return r;
}

KS_EXPORT int SSL_read(SSL *s, void *buf, int num)
{
    if (KS_UNLIKELY(!ks_conns_unwatched() || ks_hook_depth))
        return read_slow(s, buf, num, __builtin_return_address(0));
    FAST_CALL(api.read(s, buf, num), r > 0, r, false);
}

__attribute__((noinline)) static int read_ex_slow(SSL *s, void *buf, size_t num, size_t *readbytes,
                                                  const void *caller)
{
    ks_tls_need_api();
    if (!api.read_ex) {
        ks_tls_missing("SSL_read_ex");
        return 0;
    }
    if (ks_hook_depth)
        return api.read_ex(s, buf, num, readbytes);
    struct ks_own *o = ks_own_of(s);
    int r;
    if (o) { /* receive is the own switch's */
        size_t got;
        r = ks_own_read(s, o, buf, num, &got, false) > 0;
        if (readbytes)
            *readbytes = r ? got : 0;
    } else {
        ks_hook_depth++;
        r = api.read_ex(s, buf, num, readbytes);
        ks_hook_depth--;
    }
    bool got = r == 1 && readbytes && *readbytes > 0;
    struct ks_conn *c =
        call_done(s, false, r == 1 && readbytes, r == 1 && readbytes ? *readbytes : 0);
    if (KS_UNLIKELY(c && c->rx_defer)) /* waiting for a record boundary */
        ks_conn_rx_defer_try(s, c, got, caller);
    return r;
}

KS_EXPORT int SSL_read_ex(SSL *s, void *buf, size_t num, size_t *readbytes)
{
    if (KS_UNLIKELY(!ks_conns_unwatched() || ks_hook_depth))
        return read_ex_slow(s, buf, num, readbytes, __builtin_return_address(0));
    FAST_CALL(api.read_ex(s, buf, num, readbytes), r == 1 && readbytes,
              r == 1 && readbytes ? *readbytes : 0, false);
}

__attribute__((noinline)) static int write_slow(SSL *s, const void *buf, int num)
{
    ks_tls_need_api();
    if (!api.write) {
        ks_tls_missing("SSL_write");
        return -1;
    }
    if (ks_hook_depth)
        return api.write(s, buf, num);
    struct ks_own *o = ks_own_of(s);
    int r;
    if (KS_UNLIKELY(o != NULL) && num > 0 && ks_own_tx_before_send(s, o, (size_t)num) != 0) {
        r = -1; /* our KeyUpdate first, not out yet (tls/kswitch/lifetime.c) */
    } else if (KS_UNLIKELY(o != NULL) && num > 0 && ks_own_tx_on(o)) { /* the own switch's */
        size_t w = 0;
        r = ks_own_write(s, o, buf, (size_t)num, &w);
        if (r > 0)
            r = (int)w;
    } else {
        if (KS_UNLIKELY(o != NULL))
            ks_own_forget_error(o);
        ks_hook_depth++;
        r = api.write(s, buf, num);
        ks_hook_depth--;
    }
    call_done(s, true, r > 0, r > 0 ? (size_t)r : 0);
    return r;
}

KS_EXPORT int SSL_write(SSL *s, const void *buf, int num)
{
    if (KS_UNLIKELY(!ks_conns_unwatched() || ks_hook_depth))
        return write_slow(s, buf, num);
    FAST_CALL(api.write(s, buf, num), r > 0, r, true);
}

__attribute__((noinline)) static int write_ex_slow(SSL *s, const void *buf, size_t num,
                                                   size_t *written)
{
    ks_tls_need_api();
    if (!api.write_ex) {
        ks_tls_missing("SSL_write_ex");
        return 0;
    }
    if (ks_hook_depth)
        return api.write_ex(s, buf, num, written);
    struct ks_own *o = ks_own_of(s);
    int r;
    if (KS_UNLIKELY(o != NULL) && num > 0 && ks_own_tx_before_send(s, o, num) != 0) {
        r = 0; /* our KeyUpdate first, not out yet (tls/kswitch/lifetime.c) */
    } else if (KS_UNLIKELY(o != NULL) && num > 0 && ks_own_tx_on(o)) { /* the own switch's */
        size_t w = 0;
        r = ks_own_write(s, o, buf, num, &w) > 0;
        if (r && written)
            *written = w;
    } else {
        if (KS_UNLIKELY(o != NULL))
            ks_own_forget_error(o);
        ks_hook_depth++;
        r = api.write_ex(s, buf, num, written);
        ks_hook_depth--;
    }
    call_done(s, true, r == 1 && written, r == 1 && written ? *written : 0);
    return r;
}

KS_EXPORT int SSL_write_ex(SSL *s, const void *buf, size_t num, size_t *written)
{
    if (KS_UNLIKELY(!ks_conns_unwatched() || ks_hook_depth))
        return write_ex_slow(s, buf, num, written);
    FAST_CALL(api.write_ex(s, buf, num, written), r == 1 && written,
              r == 1 && written ? *written : 0, true);
}

KS_EXPORT ossl_ssize_t SSL_sendfile(SSL *s, int fd, off_t offset, size_t size, int flags)
{
    ks_tls_need_api();
    if (!api.sendfile) {
        ks_tls_missing("SSL_sendfile");
        return -1;
    }
    if (ks_hook_depth)
        return api.sendfile(s, fd, offset, size, flags);
    struct ks_own *o = ks_own_of(s);
    ossl_ssize_t r;
    if (KS_UNLIKELY(o != NULL) && size > 0 && ks_own_tx_before_send(s, o, size) != 0) {
        r = -1; /* our KeyUpdate first, not out yet (tls/kswitch/lifetime.c) */
    } else if (KS_UNLIKELY(o != NULL) && ks_own_tx_on(o)) { /* send is the own switch's */
        r = ks_own_sendfile(s, o, fd, offset, size);
    } else {
        if (KS_UNLIKELY(o != NULL))
            ks_own_forget_error(o);
        ks_hook_depth++;
        r = api.sendfile(s, fd, offset, size, flags);
        ks_hook_depth--;
    }
    struct ks_conn *c = ks_conn_of(s);
    if (c) {
        c->io = true;
        c->user = ks_self_pid;
    }
    if (r > 0) {
        if (c && KS_UNLIKELY(c->log))
            ks_connlog_sendfile(c->log, (uint64_t)r);
        ks_count(KS_C_B_KTLS_TX, (uint64_t)r);
        ks_count(KS_C_B_SENDFILE, (uint64_t)r);
    }
    return r;
}

/* Plain sendfile(2) on a socket whose TX is kTLS: encrypted by the kernel
 * with no copy through user space. Counted, never altered; not when libssl
 * itself calls it inside SSL_sendfile (that hook counts). */
static inline void count_sendfile(int out_fd, ssize_t r)
{
    if (r > 0 && !ks_hook_depth && ks_ktls_fd_marked(out_fd)) {
        ks_count(KS_C_B_KTLS_TX, (uint64_t)r);
        ks_count(KS_C_B_SENDFILE, (uint64_t)r);
    }
}

KS_EXPORT ssize_t sendfile(int out_fd, int in_fd, off_t *offset, size_t count)
{
    ssize_t r = ks_libc()->sendfile(out_fd, in_fd, offset, count);
    count_sendfile(out_fd, r);
    return r;
}

KS_EXPORT ssize_t sendfile64(int out_fd, int in_fd, off_t *offset, size_t count)
{
    ssize_t r = ks_libc()->sendfile64(out_fd, in_fd, offset, count);
    count_sendfile(out_fd, r);
    return r;
}
