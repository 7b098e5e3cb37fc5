/* optreset.c — kTLS back on for programs that set their options wholesale.
 * Ruby's openssl, for one, sets a context's options by clearing every bit
 * (SSL_CTX_clear_options(ctx, SSL_CTX_get_options(ctx))) and then setting
 * its own set; Python's `ctx.options = X` clears every bit X does not name
 * (SSL_CTX_clear_options(ctx, old & ~X)). Either wipes the
 * SSL_OP_ENABLE_KTLS the library set at SSL_CTX_new, and every connection
 * would fall back with `disabled`, though the program never asked that.
 *
 * - SSL_CTX_clear_options: a mask that takes SSL_OP_ENABLE_KTLS together
 *   with any other bit the context had is such a reset: the context is
 *   marked. A mask whose only bit the context had is SSL_OP_ENABLE_KTLS
 *   (SSL_CTX_clear_options(ctx, SSL_OP_ENABLE_KTLS); Python's
 *   `ctx.options &= ~OP_ENABLE_KTLS`) is a choice: the mark comes off and
 *   the choice is kept.
 * - SSL_new on a marked context whose options lack SSL_OP_ENABLE_KTLS: the
 *   option is set on that SSL only (the context keeps exactly what the
 *   program set, as it reads it back), counted in ktls.reasserted. Unless
 *   the program set back exactly the options it had but SSL_OP_ENABLE_KTLS
 *   (Ruby's `ctx.options &= ~OP_ENABLE_KTLS` clears all, then sets that):
 *   that is a choice too.
 * Nothing happens with KTLSSHIM_KTLS=off. */
#include "tls/ossl/hooks.h" /* first: the hook bodies' names */
#include "core/common.h"
#include "core/config.h"
#include "core/log.h"
#include "tls/ossl/api.h"
#include "stats/stats.h"

#include <openssl/ssl.h>
#include <pthread.h>
#include <stdlib.h>

#define or_api ks_ossl_api.optreset
static bool or_ok;
static int wiped_idx = -1; /* SSL_CTX ex_data: struct wiped, when wiped wholesale */

struct wiped {
    uint64_t before; /* the options the context had just before */
};

static void wiped_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    free(ptr);
}
/* Fork: see config.c's cfg_once (a child runs an interrupted once again). */
static pthread_once_t or_once = PTHREAD_ONCE_INIT;

static void resolve(void)
{
    bool ok = ks_ossl_optreset_load();
    if (ok)
        wiped_idx =
            or_api.get_ex_new_index(CRYPTO_EX_INDEX_SSL_CTX, 0, NULL, NULL, NULL, wiped_free);
    or_ok = ok && wiped_idx >= 0;
}

/* The real function cannot be found in any loaded libssl.so.3 (a caller
 * reached this hook, so one should be there): the call fails as libssl's
 * does when it cannot allocate, said once; never an abort in the program. */
static void missing(const char *name)
{
    static int said;
    if (!__atomic_exchange_n(&said, 1, __ATOMIC_RELAXED))
        ks_log_error("cannot find the real %s in any loaded libssl.so.3; the call fails", name);
}

/* A reset, not a choice: SSL_OP_ENABLE_KTLS cleared with another bit that
 * was set. */
static bool wholesale(uint64_t before, uint64_t mask)
{
    uint64_t others = before & ~(uint64_t)SSL_OP_ENABLE_KTLS;
    return (mask & SSL_OP_ENABLE_KTLS) && (mask & others);
}

KS_EXPORT uint64_t SSL_CTX_clear_options(SSL_CTX *ctx, uint64_t op)
{
    pthread_once(&or_once, resolve);
    if (!or_api.CTX_clear_options) {
        missing("SSL_CTX_clear_options");
        return 0;
    }
    if (!or_ok || !ctx || !(op & SSL_OP_ENABLE_KTLS))
        return or_api.CTX_clear_options(ctx, op);
    uint64_t before = or_api.CTX_get_options(ctx);
    uint64_t r = or_api.CTX_clear_options(ctx, op);
    if (before & SSL_OP_ENABLE_KTLS) {
        KS_SAVE_ERRNO;
        bool reset = wholesale(before, op);
        struct wiped *w = or_api.CTX_get_ex_data(ctx, wiped_idx);
        if (reset && !w && (w = calloc(1, sizeof *w)) &&
            !or_api.CTX_set_ex_data(ctx, wiped_idx, w)) {
            free(w);
            w = NULL;
        }
        if (reset && w) {
            w->before = before;
        } else if (!reset && w) {
            or_api.CTX_set_ex_data(ctx, wiped_idx, NULL);
            free(w);
        }
        ks_log_debug("the program cleared SSL_OP_ENABLE_KTLS of a context's options, "
                     "with %s of its other options: %s",
                     reset ? "others" : "none",
                     reset ? "kTLS is set again on each of its connections"
                           : "kept as the program's choice");
        KS_RESTORE_ERRNO;
    }
    return r;
}

KS_EXPORT SSL *SSL_new(SSL_CTX *ctx)
{
    pthread_once(&or_once, resolve);
    if (!or_api.new_ssl) {
        missing("SSL_new");
        return NULL;
    }
    SSL *s = or_api.new_ssl(ctx);
    struct wiped *w;
    if (!s || !or_ok || !ctx || !(w = or_api.CTX_get_ex_data(ctx, wiped_idx)) ||
        ks_config()->ktls == KS_KTLS_OFF)
        return s;
    if (or_api.CTX_get_options(ctx) == (w->before & ~(uint64_t)SSL_OP_ENABLE_KTLS))
        return s; /* all it had but kTLS: the program's choice */
    if (!(or_api.get_options(s) & SSL_OP_ENABLE_KTLS)) {
        or_api.set_options(s, SSL_OP_ENABLE_KTLS);
        ks_count(KS_C_KTLS_REASSERTED, 1);
    }
    return s;
}
