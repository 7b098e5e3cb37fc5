/* tls/ossl/gates.c — which OpenSSL the hooks serve, and the gates in front of
 * them.
 *
 * Why: a program linked with OpenSSL 1.1 (libssl.so.1.1) calls
 * SSL_read@OPENSSL_1_1_0, one linked with OpenSSL 3 SSL_read@OPENSSL_3.0.0;
 * each binds only to a definition of that exact version. So every hook is
 * exported once per version, by a thin gate here (.symver), and the gates
 * share one body (tls/hooks.c, conn.c, ctx.c, kswitch/, optreset.c, biosock/: renamed
 * ks_hook_* by tls/ossl/hooks.h).
 *
 * The body works through the one OpenSSL table (tls/ossl/api.c), which holds
 * the functions of ONE libssl. So the process's flavour is decided once: by
 * the first SSL hook the program calls (its libssl is loaded: it called
 * it). From then on a call of the other flavour (a process that loads both,
 * e.g. a plugin linked with the other one) never reaches the body: it goes
 * to its own real function, untouched, and is counted (hooks.other_openssl).
 * The BIO hooks never decide (a program may use libcrypto long before, or
 * without, libssl: Python's _hashlib); they pass through when the process
 * is OpenSSL 1.1's.
 *
 * Two copies of OpenSSL 3 (the same symbol versions) are told apart by
 * tls/ossl/copies.c: once it has seen a second one, the gate word
 * (ks_ossl_gate_now) leaves the fast path and every OpenSSL 3 gate asks it
 * whose call it is.
 *
 * OpenSSL 1.1 has no SSL_CTX_new_ex, SSL_sendfile,
 * SSL_CTX_set_tlsext_ticket_key_evp_cb, and no kTLS in libssl, so no 1.1
 * gates for those, nor for SSL_CTX_clear_options / SSL_new (optreset.c:
 * they only guard SSL_OP_ENABLE_KTLS, a 3.0 option) and the BIO hooks
 * (biosock/: kTLS through a program's own BIO, libssl 3's controls). */
#include "tls/ossl/gates.h"
#include "tls/ossl/api.h"
#include "tls/ossl/copies.h"
#include "core/config.h"
#include "core/log.h"
#include "core/libc.h"
#include "stats/stats.h"
#include "tls/ossl/sym.h"

#include <stdint.h>

/* Every hook: X(return type, name, parameters, arguments, value on failure).
 * XV: the same, returning nothing. */
#define KS_HOOKS_BOTH(X, XV)                                                                       \
    X(SSL_CTX *, SSL_CTX_new, (const SSL_METHOD *m), (m), NULL)                                    \
    X(int, SSL_accept, (SSL * s), (s), -1)                                                         \
    X(int, SSL_connect, (SSL * s), (s), -1)                                                        \
    X(int, SSL_do_handshake, (SSL * s), (s), -1)                                                   \
    X(int, SSL_read, (SSL * s, void *b, int n), (s, b, n), -1)                                     \
    X(int, SSL_write, (SSL * s, const void *b, int n), (s, b, n), -1)                              \
    XV(SSL_CTX_set_info_callback, (SSL_CTX * c, ks_info_cb_t cb), (c, cb))                         \
    X(ks_info_cb_t, SSL_CTX_get_info_callback, (SSL_CTX * c), (c), NULL)                           \
    XV(SSL_set_info_callback, (SSL * s, ks_info_cb_t cb), (s, cb))                                 \
    X(ks_info_cb_t, SSL_get_info_callback, (const SSL *s), (s), NULL)                              \
    X(long, SSL_CTX_ctrl, (SSL_CTX * c, int cmd, long l, void *p), (c, cmd, l, p), 0)              \
    X(long, SSL_CTX_callback_ctrl, (SSL_CTX * c, int cmd, void (*fp)(void)), (c, cmd, fp), 0)      \
    X(int, SSL_peek, (SSL * s, void *b, int n), (s, b, n), -1)                                     \
    X(int, SSL_pending, (const SSL *s), (s), 0)                                                    \
    X(int, SSL_has_pending, (const SSL *s), (s), 0)                                                \
    X(int, SSL_in_init, (const SSL *s), (s), 0)                                                    \
    X(int, SSL_is_init_finished, (const SSL *s), (s), 0)                                           \
    X(int, SSL_get_error, (const SSL *s, int r), (s, r), SSL_ERROR_SSL)                            \
    X(int, SSL_shutdown, (SSL * s), (s), -1)                                                       \
    X(int, SSL_clear, (SSL * s), (s), 0)                                                           \
    XV(SSL_CTX_set_msg_callback, (SSL_CTX * c, ks_msg_cb_t cb), (c, cb))                           \
    XV(SSL_set_msg_callback, (SSL * s, ks_msg_cb_t cb), (s, cb))

/* Added in 1.1.1 (version OPENSSL_1_1_1 there). */
#define KS_HOOKS_BOTH_111(X, XV)                                                                   \
    X(int, SSL_read_ex, (SSL * s, void *b, size_t n, size_t *r), (s, b, n, r), 0)                  \
    X(int, SSL_write_ex, (SSL * s, const void *b, size_t n, size_t *w), (s, b, n, w), 0)           \
    X(int, SSL_peek_ex, (SSL * s, void *b, size_t n, size_t *r), (s, b, n, r), 0)                  \
    XV(SSL_CTX_set_keylog_callback, (SSL_CTX * c, ks_keylog_cb_t cb), (c, cb))                     \
    X(ks_keylog_cb_t, SSL_CTX_get_keylog_callback, (const SSL_CTX *c), (c), NULL)

typedef int (*ks_ticket_evp_cb_t)(SSL *, unsigned char *, unsigned char *, EVP_CIPHER_CTX *,
                                  EVP_MAC_CTX *, int);

/* OpenSSL 3 only. */
#define KS_HOOKS_30(X, XV)                                                                         \
    X(ossl_ssize_t, SSL_sendfile, (SSL * s, int fd, off_t o, size_t n, int f), (s, fd, o, n, f),   \
      -1)                                                                                          \
    X(int, SSL_CTX_set_tlsext_ticket_key_evp_cb, (SSL_CTX * c, ks_ticket_evp_cb_t cb), (c, cb), 0) \
    X(uint64_t, SSL_CTX_clear_options, (SSL_CTX * c, uint64_t o), (c, o), 0)                       \
    X(SSL *, SSL_new, (SSL_CTX * c), (c), NULL)

/* libcrypto 3 only; they never decide the flavour. */
#define KS_HOOKS_BIO30(X, XV)                                                                      \
    X(long, BIO_ctrl, (BIO * b, int cmd, long l, void *p), (b, cmd, l, p), 0)                      \
    X(int, BIO_write, (BIO * b, const void *d, int n), (b, d, n), -1)                              \
    X(int, BIO_read, (BIO * b, void *d, int n), (b, d, n), -1)

/* The bodies. */
#define DECLARE(ret, name, params, args, fail) ret ks_hook_##name params;
#define DECLARE_V(name, params, args) void ks_hook_##name params;
KS_HOOKS_BOTH(DECLARE, DECLARE_V)
KS_HOOKS_BOTH_111(DECLARE, DECLARE_V)
KS_HOOKS_30(DECLARE, DECLARE_V)
KS_HOOKS_BIO30(DECLARE, DECLARE_V)
DECLARE(SSL_CTX *, SSL_CTX_new_ex, (OSSL_LIB_CTX * l, const char *q, const SSL_METHOD *m),
        (l, q, m), NULL)
#undef DECLARE
#undef DECLARE_V

static const char *flavour_name(int f)
{
    return f == KS_OSSL_111 ? "OpenSSL 1.1 (libssl.so.1.1)" : "OpenSSL 3 (libssl.so.3)";
}

/* The process's flavour is f (deciding it now if nobody has). */
static inline bool claim(int f)
{
    int cur = __atomic_load_n(&ks_ossl_flavour_now, __ATOMIC_ACQUIRE);
    if (KS_LIKELY(cur == f))
        return true;
    if (cur == KS_OSSL_UNDECIDED &&
        __atomic_compare_exchange_n(&ks_ossl_flavour_now, &cur, f, false, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE)) {
        __atomic_or_fetch(&ks_ossl_gate_now, f, __ATOMIC_ACQ_REL);
        ks_log_debug("the program's first OpenSSL call is to %s: the hooks serve it",
                     flavour_name(f));
        return true;
    }
    return cur == f;
}

void ks_ossl_flavour_loaded(void)
{
    unsigned long num = ks_ossl_api.version_num();
    ks_stats_set_openssl(num);
    if (ks_ossl_flavour() != KS_OSSL_111)
        return;
    ks_log_debug("OpenSSL 1.1 (0x%lx): kTLS in both directions by the library's own switch", num);
    /* resume.c's shared ticket keys are OpenSSL 3's (EVP_MAC). */
    if (ks_config()->shards > 1 || ks_config()->shards_auto)
        ks_log_info("OpenSSL 1.1: the shards' shared session cache and ticket keys stay off "
                    "(they need OpenSSL 3); the program's own resumption is untouched");
}

int ks_ossl_gate_now;

/* The real function of the other flavour f behind a gate, cached in *slot;
 * the call is counted. NULL if that library cannot be found (the gate then
 * fails the call as libssl fails it). */
static void *other(void **slot, int f, const char *name)
{
    static int said;
    KS_SAVE_ERRNO;
    ks_count(KS_C_HOOKS_OTHER_OPENSSL, 1);
    if (!__atomic_exchange_n(&said, 1, __ATOMIC_RELAXED))
        ks_log_info("this process uses two OpenSSLs: the hooks serve %s; calls to %s (%s first) "
                    "pass through untouched",
                    flavour_name(ks_ossl_flavour()), flavour_name(f), name);
    void *p = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (!p && (p = ks_ossl_sym_of(f, name)))
        __atomic_store_n(slot, p, __ATOMIC_RELEASE);
    if (!p)
        ks_log_error("cannot find the real %s of %s; failing the call", name, flavour_name(f));
    KS_RESTORE_ERRNO;
    return p;
}

/* A gate: exported as name@VERSION (.symver; the map declares the
 * versions). ks_gate* are local to the library (the map). Its fast path is
 * one load, one compare and a tail call to the body (the hot BIO_ctrl and
 * SSL_read go through it); everything else is in the cold slow_ function,
 * which also gets the gate's return address (the caller's code).
 *
 * The OpenSSL 3 gates' extras (tls/ossl/copies.c), compiled away elsewhere:
 * - probe: what may show a second copy of OpenSSL 3 first (the method of
 *   SSL_CTX_new/_ex; the loaded objects at SSL_new and SSL_clear);
 * - route: once there is one, whose call this is, by obj (the first
 *   argument; SSL_CTX_new_ex's method); another copy's call goes to its own
 *   real function;
 * - made: an SSL or SSL_CTX a gate saw made is remembered with its copy. */
#define KS_WITH_RA(...) (__VA_ARGS__, const void *ra_)
#define KS_ARGS_RA(...) (__VA_ARGS__, __builtin_return_address(0))
#define KS_FIRST(a, ...) (a)
#define KS_KIND(obj)                                                                               \
    _Generic((obj), const SSL_METHOD * : KS_COPY_METHOD, BIO * : KS_COPY_BIO, default : KS_COPY_SSL)
#define KS_MAKES(ret) _Generic((ret)0, SSL * : 1, SSL_CTX * : 1, default : 0)

static inline __attribute__((always_inline)) void probe30(const char *name, const void *obj)
{
    if (!__builtin_strcmp(name, "SSL_CTX_new") || !__builtin_strcmp(name, "SSL_CTX_new_ex"))
        ks_copies_probe_method(obj);
    else if (!__builtin_strcmp(name, "SSL_new") || !__builtin_strcmp(name, "SSL_clear"))
        ks_copies_probe_loaded();
}
static inline __attribute__((always_inline)) void probe_none(const char *name, const void *obj)
{
    (void)name, (void)obj;
}
static inline int route30(enum ks_copy_kind kind, const void *obj, const void *ra)
{
    if (!__atomic_load_n(&ks_ossl_copies_many, __ATOMIC_ACQUIRE))
        return KS_COPY_SERVED;
    return ks_copies_route(kind, obj, ra);
}
static inline int route_none(enum ks_copy_kind kind, const void *obj, const void *ra)
{
    (void)kind, (void)obj, (void)ra;
    return KS_COPY_SERVED;
}

#define GATE(tag, f, fast, decide, probe, route, ver, ret, name, params, args, fail, obj)          \
    __attribute__((noinline, cold)) static ret slow##tag##_##name KS_WITH_RA params                \
    {                                                                                              \
        int copy_ = route(KS_KIND(obj), (const void *)(obj), ra_);                                 \
        if (copy_ != KS_COPY_SERVED) {                                                             \
            static void *copy_fn_[KS_COPIES_MAX + 1];                                              \
            ret(*cfn_) params = (ret(*) params)ks_copies_fn(copy_fn_, copy_, #name);               \
            if (!cfn_)                                                                             \
                return fail;                                                                       \
            ret made_ = cfn_ args;                                                                 \
            if (KS_MAKES(ret))                                                                     \
                ks_copies_made((const void *)(uintptr_t)made_, copy_);                             \
            return made_;                                                                          \
        }                                                                                          \
        if (decide(f)) {                                                                           \
            if (!KS_MAKES(ret) || route == route_none || !ks_ossl_copies_many)                     \
                return ks_hook_##name args;                                                        \
            ret made_ = ks_hook_##name args;                                                       \
            ks_copies_made((const void *)(uintptr_t)made_, KS_COPY_SERVED);                        \
            return made_;                                                                          \
        }                                                                                          \
        static void *real_;                                                                        \
        ret(*fn_) params = (ret(*) params)other(&real_, f, #name);                                 \
        if (!fn_)                                                                                  \
            return fail;                                                                           \
        return fn_ args;                                                                           \
    }                                                                                              \
    ret ks_gate##tag##_##name params;                                                              \
    __asm__(".symver ks_gate" #tag "_" #name "," #name ver);                                       \
    KS_EXPORT ret ks_gate##tag##_##name params                                                     \
    {                                                                                              \
        probe(#name, (const void *)(obj));                                                         \
        if (KS_LIKELY(fast(f)))                                                                    \
            return ks_hook_##name args;                                                            \
        return slow##tag##_##name KS_ARGS_RA args;                                                 \
    }
#define GATE_V(tag, f, fast, decide, probe, route, ver, name, params, args, obj)                   \
    __attribute__((noinline, cold)) static void slow##tag##_##name KS_WITH_RA params               \
    {                                                                                              \
        int copy_ = route(KS_KIND(obj), (const void *)(obj), ra_);                                 \
        if (copy_ != KS_COPY_SERVED) {                                                             \
            static void *copy_fn_[KS_COPIES_MAX + 1];                                              \
            void(*cfn_) params = (void(*) params)ks_copies_fn(copy_fn_, copy_, #name);             \
            if (cfn_)                                                                              \
                cfn_ args;                                                                         \
            return;                                                                                \
        }                                                                                          \
        if (decide(f)) {                                                                           \
            ks_hook_##name args;                                                                   \
            return;                                                                                \
        }                                                                                          \
        static void *real_;                                                                        \
        void(*fn_) params = (void(*) params)other(&real_, f, #name);                               \
        if (fn_)                                                                                   \
            fn_ args;                                                                              \
    }                                                                                              \
    void ks_gate##tag##_##name params;                                                             \
    __asm__(".symver ks_gate" #tag "_" #name "," #name ver);                                       \
    KS_EXPORT void ks_gate##tag##_##name params                                                    \
    {                                                                                              \
        probe(#name, (const void *)(obj));                                                         \
        if (KS_LIKELY(fast(f))) {                                                                  \
            ks_hook_##name args;                                                                   \
            return;                                                                                \
        }                                                                                          \
        slow##tag##_##name KS_ARGS_RA args;                                                        \
    }

/* The fast test of the OpenSSL 3 gates: the process is OpenSSL 3's and
 * holds one copy of it. */
static inline bool is30(int f)
{
    (void)f;
    return __atomic_load_n(&ks_ossl_gate_now, __ATOMIC_RELAXED) == KS_OSSL_30;
}

/* The fast test of the OpenSSL 1.1 gates: the process is f's (decided). */
static inline bool is(int f)
{
    return __atomic_load_n(&ks_ossl_flavour_now, __ATOMIC_RELAXED) == f;
}

/* The BIO hooks' test: anything but a decided OpenSSL 1.1 process, with
 * one copy of OpenSSL 3 (undecided is 0, OpenSSL 3 is 1). */
static inline bool not_111(int f)
{
    (void)f;
    return (unsigned)__atomic_load_n(&ks_ossl_gate_now, __ATOMIC_RELAXED) <= KS_OSSL_30;
}
static inline bool not_111_decide(int f)
{
    (void)f;
    return __atomic_load_n(&ks_ossl_flavour_now, __ATOMIC_RELAXED) != KS_OSSL_111;
}

#define G30_OBJ(ret, name, params, args, fail, obj)                                                \
    GATE(30, KS_OSSL_30, is30, claim, probe30, route30, "@@OPENSSL_3.0.0", ret, name, params,      \
         args, fail, obj)
#define G30(ret, name, params, args, fail) G30_OBJ(ret, name, params, args, fail, KS_FIRST args)
#define G30_V(name, params, args)                                                                  \
    GATE_V(30, KS_OSSL_30, is30, claim, probe30, route30, "@@OPENSSL_3.0.0", name, params, args,   \
           KS_FIRST args)
#define GBIO(ret, name, params, args, fail)                                                        \
    GATE(30, KS_OSSL_30, not_111, not_111_decide, probe_none, route30, "@@OPENSSL_3.0.0", ret,     \
         name, params, args, fail, KS_FIRST args)
#define G110(ret, name, params, args, fail)                                                        \
    GATE(110, KS_OSSL_111, is, claim, probe_none, route_none, "@OPENSSL_1_1_0", ret, name, params, \
         args, fail, KS_FIRST args)
#define G110_V(name, params, args)                                                                 \
    GATE_V(110, KS_OSSL_111, is, claim, probe_none, route_none, "@OPENSSL_1_1_0", name, params,    \
           args, KS_FIRST args)
#define G111(ret, name, params, args, fail)                                                        \
    GATE(111, KS_OSSL_111, is, claim, probe_none, route_none, "@OPENSSL_1_1_1", ret, name, params, \
         args, fail, KS_FIRST args)
#define G111_V(name, params, args)                                                                 \
    GATE_V(111, KS_OSSL_111, is, claim, probe_none, route_none, "@OPENSSL_1_1_1", name, params,    \
           args, KS_FIRST args)

KS_HOOKS_BOTH(G30, G30_V)
KS_HOOKS_BOTH_111(G30, G30_V)
KS_HOOKS_30(G30, G30_V)
G30_OBJ(SSL_CTX *, SSL_CTX_new_ex, (OSSL_LIB_CTX * l, const char *q, const SSL_METHOD *m),
        (l, q, m), NULL, m)
KS_HOOKS_BIO30(GBIO, G30_V)

/* BIO_f_ssl (tls/sslbio.c) takes no argument: its copy of OpenSSL 3 is told
 * by its caller alone. OpenSSL 3 only (libssl 1.1's SSL BIO is left as it
 * is: the process's flavour decides nothing here). */
const BIO_METHOD *ks_hook_BIO_f_ssl(void);
__attribute__((noinline, cold)) static const BIO_METHOD *slow30_BIO_f_ssl(const void *ra)
{
    static void *real_;
    int copy = route30(KS_COPY_SSL, NULL, ra);
    if (copy != KS_COPY_SERVED) {
        static void *copy_fn_[KS_COPIES_MAX + 1];
        const BIO_METHOD *(*cfn)(void) = ks_copies_fn(copy_fn_, copy, "BIO_f_ssl");
        return cfn ? cfn() : NULL;
    }
    if (not_111_decide(KS_OSSL_30))
        return ks_hook_BIO_f_ssl();
    const BIO_METHOD *(*fn)(void) = other(&real_, KS_OSSL_30, "BIO_f_ssl");
    return fn ? fn() : NULL;
}
const BIO_METHOD *ks_gate30_BIO_f_ssl(void);
__asm__(".symver ks_gate30_BIO_f_ssl,BIO_f_ssl@@OPENSSL_3.0.0");
KS_EXPORT const BIO_METHOD *ks_gate30_BIO_f_ssl(void)
{
    if (KS_LIKELY(is30(KS_OSSL_30)))
        return ks_hook_BIO_f_ssl();
    return slow30_BIO_f_ssl(__builtin_return_address(0));
}
KS_HOOKS_BOTH(G110, G110_V)
KS_HOOKS_BOTH_111(G111, G111_V)
