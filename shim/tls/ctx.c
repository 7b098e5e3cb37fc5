/* tls/ctx.c — the library's state per SSL_CTX. Why a file of its own: a
 * context is where the library sets a connection up before its handshake:
 * kTLS asked of libssl (SSL_OP_ENABLE_KTLS), the own switch's keylog
 * callback, an info callback that sees every handshake complete (chained
 * to the program's own: the setters and getters are hooked, so the program
 * sees exactly what it set), and in a sharding worker the workers' shared
 * session resumption (tls/resume.c), unless the program set its own ticket
 * keys or callbacks. All live contexts are on one list, so that a worker
 * can set up those the program made before it forked; the list's lock has
 * fork handlers. */
#include "tls/ossl/hooks.h" /* first: the hook bodies' names */
#include "tls/conn.h"
#include "core/common.h"
#include "core/config.h"
#include "tls/connwatch.h"
#include "tls/kswitch/kswitch.h"
#include "tls/ossl/api.h"
#include "tls/resume.h"
#include "tls/tls.h"
#include "tls/ossl/sym.h"
#include "tls/withhold.h"

#include <openssl/ssl.h>
#include <pthread.h>
#include <stdlib.h>

/* The libssl/libcrypto functions we call: the one table (tls/ossl/api.h). */
#define api ks_ossl_api

static int ssl_cb_idx = -1; /* SSL: the program's info callback */
static int ctx_idx = -1;    /* SSL_CTX: struct ks_ctx */

/* What we keep per SSL_CTX. All live contexts are on a list, so that a new
 * worker can set up the ones the program made before it forked. */
struct ks_ctx {
    ks_info_cb_t cb;     /* the program's info callback */
    bool own_tickets;    /* the program set ticket keys or a callback */
    bool shared_tickets; /* we installed the workers' shared ticket keys */
    SSL_CTX *ctx;
    struct ks_ctx *prev, *next;
};
static struct ks_ctx *ctx_list;
static pthread_mutex_t ctx_list_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned ctx_gen; /* atomic: states made or freed (program_cb's cache) */
static int ssl_boxes;    /* atomic: some SSL got a callback of its own */

/* Fork handlers, registered when the hooks are first used (ks_ctx_setup).
 * A fork while another thread holds the list's lock would leave the child
 * with it held for ever (its next SSL_CTX_new or SSL_CTX_free would hang):
 * fork waits for it, and both sides let it go (the lock is held only around
 * list updates, which never fork). Both sides also count the fork for the
 * connections' ownership (ks_conn_forked, tls/conn.c). */
static void before_fork(void)
{
    pthread_mutex_lock(&ctx_list_lock);
}
static void after_fork(void)
{
    pthread_mutex_unlock(&ctx_list_lock);
    ks_conn_forked();
}

static void ctx_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    struct ks_ctx *k = ptr;
    if (!k)
        return;
    pthread_mutex_lock(&ctx_list_lock);
    if (k->prev)
        k->prev->next = k->next;
    else if (ctx_list == k)
        ctx_list = k->next;
    if (k->next)
        k->next->prev = k->prev;
    pthread_mutex_unlock(&ctx_list_lock);
    __atomic_add_fetch(&ctx_gen, 1, __ATOMIC_ACQ_REL); /* before its memory goes */
    free(k);
}

static void box_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    free(ptr);
}

bool ks_ctx_setup(void)
{
    ssl_cb_idx =
        api.get_ex_new_index(CRYPTO_EX_INDEX_SSL, 0, NULL, NULL, ks_ex_dup_keep_own, box_free);
    ctx_idx = api.get_ex_new_index(CRYPTO_EX_INDEX_SSL_CTX, 0, NULL, NULL, NULL, ctx_free);
    if (ssl_cb_idx < 0 || ctx_idx < 0)
        return false;
    /* A child forked while another thread ran the hooks' set-up runs it
     * again (glibc's pthread_once): its handlers must not be registered
     * twice, or its next fork takes the lock twice. No memory: the hooks
     * pass everything through. */
    static bool fork_handled;
    if (__atomic_exchange_n(&fork_handled, true, __ATOMIC_RELAXED))
        return true;
    return pthread_atfork(before_fork, after_fork, after_fork) == 0;
}

/* ---- info callbacks ---- */

/* Function pointers travel through ex_data (void *) in this small box. */
struct cb_box {
    ks_info_cb_t cb;
};

/* The context's state, made (and listed) on first sight. Without it the
 * context may go without our info callback: lookups for good (connwatch.h). */
static struct ks_ctx *ctx_state(SSL_CTX *ctx)
{
    struct ks_ctx *k = api.CTX_get_ex_data(ctx, ctx_idx);
    if (k)
        return k;
    if ((k = calloc(1, sizeof *k)) && (k->ctx = ctx, !api.CTX_set_ex_data(ctx, ctx_idx, k))) {
        free(k);
        k = NULL;
    }
    if (!k) {
        ks_conns_watch_for_good();
        return NULL;
    }
    pthread_mutex_lock(&ctx_list_lock);
    k->next = ctx_list;
    if (ctx_list)
        ctx_list->prev = k;
    ctx_list = k;
    pthread_mutex_unlock(&ctx_list_lock);
    __atomic_add_fetch(&ctx_gen, 1, __ATOMIC_ACQ_REL);
    return k;
}

/* The info callback runs at every state of every handshake (16 times for
 * a TLS 1.3 one), so its two lookups are spared where they can be: an
 * SSL's own callback is looked for only once some SSL was given one, and
 * each thread keeps the last context's state it found, valid while no
 * context's state was made or freed since (ctx_gen). */
static __thread struct {
    const SSL_CTX *ctx;
    struct ks_ctx *k;
    unsigned gen;
} last_ctx __attribute__((tls_model("initial-exec")));

static ks_info_cb_t program_cb(const SSL *s)
{
    if (__atomic_load_n(&ssl_boxes, __ATOMIC_ACQUIRE)) {
        struct cb_box *b = api.get_ex_data(s, ssl_cb_idx);
        if (b && b->cb)
            return b->cb;
    }
    SSL_CTX *ctx = api.get_SSL_CTX(s);
    unsigned gen = __atomic_load_n(&ctx_gen, __ATOMIC_ACQUIRE);
    struct ks_ctx *k;
    if (KS_LIKELY(ctx == last_ctx.ctx && gen == last_ctx.gen && ctx)) {
        k = last_ctx.k;
    } else {
        k = ctx ? api.CTX_get_ex_data(ctx, ctx_idx) : NULL;
        last_ctx.ctx = ctx;
        last_ctx.k = k;
        last_ctx.gen = gen;
    }
    return k ? k->cb : NULL;
}

static void info_cb(const SSL *s, int where, int ret)
{
    /* libssl calls this before it marks the handshake finished. A TLS 1.3
     * server that may take early data (SSL_read_early_data: nghttpx) gets
     * it also when the handshake pauses after its own Finished, for the
     * early data, before the client's Finished: not complete yet. */
    if ((where & SSL_CB_HANDSHAKE_DONE) && !(api.get_state && ks_ossl_flavour() == KS_OSSL_30 &&
                                             api.get_state(s) == TLS_ST_EARLY_DATA))
        ks_conn_state((SSL *)s, true);
    else if (KS_UNLIKELY(where & SSL_CB_HANDSHAKE_START))
        ks_withhold_at_start((SSL *)s);
    ks_info_cb_t cb = program_cb(s);
    if (cb)
        cb(s, where, ret);
}

/* A box per SSL whose program sets its own callback, reused when it sets
 * another, freed with the SSL. False if it cannot be kept (no memory). */
static bool store_ssl_cb(SSL *s, ks_info_cb_t cb)
{
    struct cb_box *b = api.get_ex_data(s, ssl_cb_idx);
    if (!b) {
        if (!cb)
            return true;
        if (!(b = calloc(1, sizeof *b)))
            return false;
        __atomic_store_n(&ssl_boxes, 1, __ATOMIC_RELEASE);
        if (!api.set_ex_data(s, ssl_cb_idx, b)) {
            free(b);
            return false;
        }
    }
    b->cb = cb;
    return true;
}

KS_EXPORT void SSL_CTX_set_info_callback(SSL_CTX *ctx, ks_info_cb_t cb)
{
    ks_tls_need_api();
    if (!ks_tls_api_ok) {
        void (*real)(SSL_CTX *, ks_info_cb_t) = ks_ossl_sym("SSL_CTX_set_info_callback");
        if (!real) {
            ks_tls_missing("SSL_CTX_set_info_callback");
            return;
        }
        real(ctx, cb);
        return;
    }
    struct ks_ctx *k = ctx_state(ctx);
    if (!k) { /* no memory to chain: the program's callback, unchained */
        api.CTX_set_info_callback(ctx, cb);
        return;
    }
    k->cb = cb;
    api.CTX_set_info_callback(ctx, info_cb);
}

KS_EXPORT ks_info_cb_t SSL_CTX_get_info_callback(SSL_CTX *ctx)
{
    ks_tls_need_api();
    if (!ks_tls_api_ok) {
        ks_info_cb_t (*real)(SSL_CTX *) = ks_ossl_sym("SSL_CTX_get_info_callback");
        if (!real) {
            ks_tls_missing("SSL_CTX_get_info_callback");
            return NULL;
        }
        return real(ctx);
    }
    struct ks_ctx *k = api.CTX_get_ex_data(ctx, ctx_idx);
    return k ? k->cb : NULL;
}

KS_EXPORT void SSL_set_info_callback(SSL *s, ks_info_cb_t cb)
{
    ks_tls_need_api();
    if (!ks_tls_api_ok) {
        void (*real)(SSL *, ks_info_cb_t) = ks_ossl_sym("SSL_set_info_callback");
        if (!real) {
            ks_tls_missing("SSL_set_info_callback");
            return;
        }
        real(s, cb);
        return;
    }
    /* NULL lets libssl fall back to the context's callback: ours. Without
     * memory to chain, the program's own callback goes in unchained. */
    if (store_ssl_cb(s, cb)) {
        api.set_info_callback(s, cb ? info_cb : NULL);
    } else {
        ks_conns_watch_for_good(); /* s's handshake may go unseen */
        api.set_info_callback(s, cb);
    }
}

KS_EXPORT ks_info_cb_t SSL_get_info_callback(const SSL *s)
{
    ks_tls_need_api();
    if (!ks_tls_api_ok) {
        ks_info_cb_t (*real)(const SSL *) = ks_ossl_sym("SSL_get_info_callback");
        if (!real) {
            ks_tls_missing("SSL_get_info_callback");
            return NULL;
        }
        return real(s);
    }
    struct cb_box *b = api.get_ex_data(s, ssl_cb_idx);
    return b ? b->cb : NULL;
}

/* ---- new contexts, and the program's own ticket keys ---- */

static bool (*in_worker)(void); /* set at load (init.c): sharding's answer */
/* A new context: kTLS on, our info callback, and in a worker the shared
 * session resumption. Idempotent (SSL_CTX_new calls SSL_CTX_new_ex). */
static SSL_CTX *ctx_created(SSL_CTX *ctx)
{
    struct ks_ctx *k;
    if (!ctx || !ks_tls_api_ok || api.CTX_get_ex_data(ctx, ctx_idx) || !(k = ctx_state(ctx)))
        return ctx;
    /* OpenSSL 1.1 has no such option (bit 3 is not ours to set there). */
    if (ks_config()->ktls != KS_KTLS_OFF && ks_config()->ktls != KS_KTLS_OWN &&
        ks_ossl_flavour() != KS_OSSL_111)
        api.CTX_set_options(ctx, SSL_OP_ENABLE_KTLS);
    ks_switch_ctx_created(ctx);
    api.CTX_set_info_callback(ctx, info_cb);
    if (in_worker && in_worker())
        k->shared_tickets = ks_resume_install(ctx, false);
    return ctx;
}

void ks_tls_set_in_worker(bool (*query)(void))
{
    in_worker = query;
}

void ks_tls_worker_started(void)
{
    if (!ks_tls_api_ok)
        return;
    pthread_mutex_lock(&ctx_list_lock);
    for (struct ks_ctx *k = ctx_list; k; k = k->next)
        k->shared_tickets = ks_resume_install(k->ctx, k->own_tickets);
    pthread_mutex_unlock(&ctx_list_lock);
}

/* The program chose its own ticket keys or callback for ctx: from now on
 * ctx is the program's to manage (our callback comes off if it was on). */
static void own_tickets(SSL_CTX *ctx)
{
    struct ks_ctx *k = ctx && ks_tls_api_ok ? ctx_state(ctx) : NULL;
    if (!k)
        return;
    k->own_tickets = true;
    if (k->shared_tickets) {
        ks_resume_drop_tickets(ctx);
        k->shared_tickets = false;
    }
}

/* The real function behind a hook that needs nothing else from libssl,
 * looked up once (racing threads store the same value); when there is none
 * the hook returns `fail` (libssl's error return for that call). */
#define LAZY_REAL(var, name, fail)                                                                 \
    do {                                                                                           \
        if (!__atomic_load_n((void **)&var, __ATOMIC_ACQUIRE)) {                                   \
            void *p_ = ks_ossl_sym(name);                                                          \
            if (!p_) {                                                                             \
                ks_tls_missing(name);                                                              \
                return fail;                                                                       \
            }                                                                                      \
            __atomic_store_n((void **)&var, p_, __ATOMIC_RELEASE);                                 \
        }                                                                                          \
    } while (0)

KS_EXPORT int SSL_CTX_set_tlsext_ticket_key_evp_cb(SSL_CTX *ctx,
                                                   int (*cb)(SSL *, unsigned char *,
                                                             unsigned char *, EVP_CIPHER_CTX *,
                                                             EVP_MAC_CTX *, int))
{
    ks_tls_need_api();
    static int (*real)(SSL_CTX *, int (*)(SSL *, unsigned char *, unsigned char *, EVP_CIPHER_CTX *,
                                          EVP_MAC_CTX *, int));
    LAZY_REAL(real, "SSL_CTX_set_tlsext_ticket_key_evp_cb", 0);
    int r = real(ctx, cb); /* the program's callback replaces ours */
    struct ks_ctx *k = ctx && ks_tls_api_ok ? ctx_state(ctx) : NULL;
    if (k) {
        k->own_tickets = true;
        k->shared_tickets = false;
    }
    return r;
}

KS_EXPORT long SSL_CTX_ctrl(SSL_CTX *ctx, int cmd, long larg, void *parg)
{
    static long (*real)(SSL_CTX *, int, long, void *);
    LAZY_REAL(real, "SSL_CTX_ctrl", 0);
    if (cmd == SSL_CTRL_SET_TLSEXT_TICKET_KEYS) {
        ks_tls_need_api();
        own_tickets(ctx);
    }
    return real(ctx, cmd, larg, parg);
}

KS_EXPORT long SSL_CTX_callback_ctrl(SSL_CTX *ctx, int cmd, void (*fp)(void))
{
    static long (*real)(SSL_CTX *, int, void (*)(void));
    LAZY_REAL(real, "SSL_CTX_callback_ctrl", 0);
    if (cmd == SSL_CTRL_SET_TLSEXT_TICKET_KEY_CB) {
        ks_tls_need_api();
        own_tickets(ctx);
    }
    return real(ctx, cmd, fp);
}

/* SSL_CTX_new's hook is running on this thread (its context is set up when
 * libssl's returns, whatever SSL_CTX_new_ex's hook did inside). */
static __thread bool ctx_new_call;

KS_EXPORT SSL_CTX *SSL_CTX_new(const SSL_METHOD *meth)
{
    ks_tls_need_api();
    if (!api.CTX_new) {
        ks_tls_missing("SSL_CTX_new");
        return NULL;
    }
    bool outer = ctx_new_call;
    ctx_new_call = true;
    SSL_CTX *ctx = api.CTX_new(meth);
    ctx_new_call = outer;
    return ctx_created(ctx);
}

KS_EXPORT SSL_CTX *SSL_CTX_new_ex(OSSL_LIB_CTX *libctx, const char *propq, const SSL_METHOD *meth)
{
    ks_tls_need_api();
    if (!api.CTX_new_ex) {
        ks_tls_missing("SSL_CTX_new_ex");
        return NULL;
    }
    /* SSL_CTX_new calls SSL_CTX_new_ex inside libssl: set the option once.
     * A context made inside another hook (a program's callback during a
     * handshake call) gets no info callback: its handshakes are found by
     * the lookup (connwatch.h). */
    if (ks_hook_depth) {
        SSL_CTX *made = api.CTX_new_ex(libctx, propq, meth);
        if (made && ks_tls_api_ok && !ctx_new_call && !api.CTX_get_ex_data(made, ctx_idx))
            ks_conns_watch_for_good();
        return made;
    }
    ks_hook_depth++;
    SSL_CTX *ctx = ctx_created(api.CTX_new_ex(libctx, propq, meth));
    ks_hook_depth--;
    return ctx;
}
