/* tls/sslbio.c — libssl's SSL BIO (BIO_f_ssl), made to pass the hooks.
 *
 * Why: a program that does its TLS I/O through an SSL BIO (openssl
 * s_server -WWW: BIO_gets on a buffering BIO over one) never calls
 * SSL_read or SSL_write. libssl's SSL BIO calls libssl's internal read and
 * write, past every hook. So such a connection's handshake completes where
 * no hook sees it, the deferred receive switch (tls/kswitch/defer.c) never
 * gets its turn, and after a switch made elsewhere (SSL_accept, then I/O
 * through an SSL BIO) its reads would reach libssl's record layer on a
 * kTLS socket.
 *
 * Here BIO_f_ssl (libssl's BIO_new_ssl calls it too, through its PLT)
 * returns a copy of libssl's method whose read and write come here first;
 * its controls, creation and destruction are libssl's own, so every BIO it
 * makes is libssl's SSL BIO in all but those two entries:
 * - while the own switch does not have the connection, each read and write
 *   is libssl's, then counted and, for a read, given to the deferred switch
 *   exactly as tls/hooks.c does after the program's SSL_read;
 * - once it has, the call is served as the program's SSL_read / SSL_write
 *   would be (tls/hooks.c), and the BIO's retry flags are set from
 *   SSL_get_error as libssl's SSL BIO sets them.
 * So the connection's bytes are counted by path, as the program's SSL_read
 * and SSL_write are, with or without kTLS. OpenSSL 3 only (tls/ossl/gates.c);
 * if a function the copy needs is missing, BIO_f_ssl is libssl's. Made
 * once, lock-free, and never freed (libssl's own method is static). */
#include "tls/ossl/hooks.h" /* first: the hook bodies' names */
#include "tls/conn.h"
#include "core/common.h"
#include "core/log.h"
#include "tls/kswitch/kswitch.h"
#include "tls/ossl/api.h"
#include "tls/ossl/sym.h"

#include <limits.h>
#include <stdlib.h>
#include <openssl/bio.h>
#include <openssl/ssl.h>

typedef int (*ks_bio_io_fn)(BIO *, char *, size_t, size_t *);
typedef int (*ks_bio_wr_fn)(BIO *, const char *, size_t, size_t *);
typedef long (*ks_bio_ctrl_fn)(BIO *, int, long, void *);

/* The copy, with libssl's own entries and the two flag setters: filled
 * before it is published (one pointer, compare-and-swap: two threads' first
 * calls make one each, the loser frees its own), read-only after. */
struct sslbio {
    BIO_METHOD *method;
    ks_bio_io_fn read;
    ks_bio_wr_fn write;
    ks_bio_ctrl_fn ctrl;
    void (*set_flags)(BIO *, int);
    void (*clear_flags)(BIO *, int);
};

static struct sslbio *made;                   /* atomic */
static int refused;                           /* atomic: it will not be made here */
static const BIO_METHOD *(*real_f_ssl)(void); /* atomic */

/* Only the copy's own entries run this: made is set. */
#define orig (*__atomic_load_n(&made, __ATOMIC_ACQUIRE))

/* The SSL under b, through libssl's own control (no BIO callback sees it);
 * NULL before BIO_set_ssl. */
static SSL *ssl_of(BIO *b)
{
    SSL *s = NULL;
    if (orig.ctrl(b, BIO_C_GET_SSL, 0, &s) <= 0)
        return NULL;
    return s;
}

/* The own switch has s's receive (or send): the call is the program's
 * SSL_read / SSL_write, with the SSL BIO's retry flags. */
static int own_call(BIO *b, SSL *s, bool tx, void *buf, size_t size, size_t *done)
{
    orig.clear_flags(b, BIO_FLAGS_RWS | BIO_FLAGS_SHOULD_RETRY);
    int n = size > INT_MAX ? INT_MAX : (int)size;
    int r = tx ? SSL_write(s, buf, n) : SSL_read(s, buf, n);
    switch (SSL_get_error(s, r)) {
    case SSL_ERROR_WANT_READ:
        orig.set_flags(b, BIO_FLAGS_READ | BIO_FLAGS_SHOULD_RETRY);
        break;
    case SSL_ERROR_WANT_WRITE:
        orig.set_flags(b, BIO_FLAGS_WRITE | BIO_FLAGS_SHOULD_RETRY);
        break;
    default:
        break;
    }
    *done = r > 0 ? (size_t)r : 0;
    return r > 0 ? 1 : r;
}

static int sslbio_read(BIO *b, char *buf, size_t size, size_t *readbytes)
{
    SSL *s = ks_hook_depth || !size ? NULL : ssl_of(b);
    if (!s)
        return orig.read(b, buf, size, readbytes);
    if (ks_own_of(s))
        return own_call(b, s, false, buf, size, readbytes);
    ks_hook_depth++;
    int r = orig.read(b, buf, size, readbytes);
    ks_hook_depth--;
    ks_tls_io_done(s, false, r > 0, r > 0 ? *readbytes : 0, __builtin_return_address(0));
    return r;
}

static int sslbio_write(BIO *b, const char *buf, size_t size, size_t *written)
{
    SSL *s = ks_hook_depth || !size ? NULL : ssl_of(b);
    if (!s)
        return orig.write(b, buf, size, written);
    if (ks_own_of(s))
        return own_call(b, s, true, (void *)buf, size, written);
    ks_hook_depth++;
    int r = orig.write(b, buf, size, written);
    ks_hook_depth--;
    ks_tls_io_done(s, true, r > 0, r > 0 ? *written : 0, __builtin_return_address(0));
    return r;
}

#define SYM(name) ks_ossl_sym(name)

/* The copy of m, or NULL if a function it needs is missing. */
static struct sslbio *copy_of(const BIO_METHOD *m)
{
    struct sslbio *o = calloc(1, sizeof *o);
    if (!o)
        return NULL;
    BIO_METHOD *(*meth_new)(int, const char *) = SYM("BIO_meth_new");
    void (*meth_free)(BIO_METHOD *) = SYM("BIO_meth_free");
    /* The getters and setters, in the order of the entries below. */
    void *(*get[6])(const BIO_METHOD *) = {
        SYM("BIO_meth_get_write_ex"), SYM("BIO_meth_get_read_ex"), SYM("BIO_meth_get_puts"),
        SYM("BIO_meth_get_ctrl"),     SYM("BIO_meth_get_create"),  SYM("BIO_meth_get_destroy"),
    };
    int (*set[6])(BIO_METHOD *, void *) = {
        SYM("BIO_meth_set_write_ex"), SYM("BIO_meth_set_read_ex"), SYM("BIO_meth_set_puts"),
        SYM("BIO_meth_set_ctrl"),     SYM("BIO_meth_set_create"),  SYM("BIO_meth_set_destroy"),
    };
    void *(*get_cb)(const BIO_METHOD *) = SYM("BIO_meth_get_callback_ctrl");
    int (*set_cb)(BIO_METHOD *, void *) = SYM("BIO_meth_set_callback_ctrl");
    *(void **)&o->set_flags = SYM("BIO_set_flags");
    *(void **)&o->clear_flags = SYM("BIO_clear_flags");
    void *entry[6] = {0};
    bool ok = meth_new && meth_free && get_cb && set_cb && o->set_flags && o->clear_flags;
    for (int i = 0; ok && i < 6; i++)
        ok = get[i] && set[i] && (entry[i] = get[i](m));
    if (ok) {
        *(void **)&o->write = entry[0];
        *(void **)&o->read = entry[1];
        *(void **)&o->ctrl = entry[3];
        entry[0] = (void *)sslbio_write;
        entry[1] = (void *)sslbio_read;
        ok = (o->method = meth_new(BIO_TYPE_SSL, "ssl")) != NULL;
    }
    for (int i = 0; ok && i < 6; i++)
        ok = set[i](o->method, entry[i]) == 1;
    void *cb = ok ? get_cb(m) : NULL;
    ok = ok && (!cb || set_cb(o->method, cb) == 1);
    if (!ok) {
        if (o->method)
            meth_free(o->method);
        free(o);
        return NULL;
    }
    return o;
}

static const BIO_METHOD *f_ssl_slow(void)
{
    const BIO_METHOD *(*real)(void) = __atomic_load_n(&real_f_ssl, __ATOMIC_ACQUIRE);
    if (!real) {
        *(void **)&real = ks_ossl_sym("BIO_f_ssl");
        if (!real) {
            ks_tls_missing("BIO_f_ssl");
            return NULL;
        }
        __atomic_store_n(&real_f_ssl, real, __ATOMIC_RELEASE);
    }
    const BIO_METHOD *m = real();
    /* Not before the process's first SSL call has said it is OpenSSL 3's
     * (tls/ossl/gates.c): the table the copy needs is that libssl's. */
    if (!m || __atomic_load_n(&refused, __ATOMIC_ACQUIRE) || ks_ossl_flavour() != KS_OSSL_30)
        return m;
    KS_SAVE_ERRNO;
    struct sslbio *c = NULL;
    if (ks_ossl_ready())
        c = copy_of(m);
    struct sslbio *want = NULL;
    if (!c) {
        __atomic_store_n(&refused, 1, __ATOMIC_RELEASE);
    } else if (!__atomic_compare_exchange_n(&made, &want, c, false, __ATOMIC_ACQ_REL,
                                            __ATOMIC_ACQUIRE)) {
        void (*meth_free)(BIO_METHOD *) = SYM("BIO_meth_free");
        meth_free(c->method); /* another thread's copy was first */
        free(c);
    } else {
        ks_log_debug("BIO_f_ssl: libssl's SSL BIO, its reads and writes through the hooks");
    }
    KS_RESTORE_ERRNO;
    struct sslbio *now = __atomic_load_n(&made, __ATOMIC_ACQUIRE);
    return now ? now->method : m;
}

KS_EXPORT const BIO_METHOD *BIO_f_ssl(void)
{
    struct sslbio *m = __atomic_load_n(&made, __ATOMIC_ACQUIRE);
    return KS_LIKELY(m) ? m->method : f_ssl_slow();
}
