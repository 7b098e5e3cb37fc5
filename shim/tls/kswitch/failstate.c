/* tls/kswitch/failstate.c — what libssl's state says about a connection
 * the own switch ended with an error.
 *
 * Why: where libssl itself fails a connection (a bad record, a fatal alert,
 * an end of stream without close_notify), its state machine goes into its
 * error state, and SSL_in_init says 1 and SSL_is_init_finished 0 from then
 * on. Programs act on that: lighttpd, after a read failed, calls
 * SSL_shutdown and, when it fails too, frees the connection quietly if the
 * handshake is "not finished", and logs the error otherwise. On a
 * connection whose receive the own switch serves (tls/kswitch/rx.c),
 * libssl never saw the failure: these two calls answer as libssl would
 * have, for the failures libssl makes fatal, when the program asks. Every
 * other call (while no connection is switched: one load) goes to libssl. */
#include "tls/ossl/hooks.h" /* first: the hook bodies' names */
#include "tls/kswitch/kswitch.h"
#include "tls/kswitch/own.h"
#include "tls/ossl/api.h"

#define api ks_ossl_api

/* The program asks (not libssl, which calls both through its PLT: told
 * "in init", libssl would run its handshake and read the socket), and s's
 * receive is the own switch's and ended with a fatal error. */
static bool own_fatal(const SSL *s)
{
    if (ks_hook_depth || !ks_ossl_ready())
        return false;
    struct ks_own *o = ks_own_of(s);
    return o && o->state == OWN_FAILED && o->fatal;
}

KS_EXPORT int SSL_in_init(const SSL *s)
{
    if (KS_UNLIKELY(__atomic_load_n(&ks_switch_live, __ATOMIC_ACQUIRE)) && own_fatal(s))
        return 1;
    /* libssl calls it on every read and write: straight on once loaded. */
    int (*real)(const SSL *) = __atomic_load_n(&api.in_init, __ATOMIC_RELAXED);
    if (KS_LIKELY(real != NULL))
        return real(s);
    (void)ks_ossl_ready(); /* the table loaded */
    return api.in_init ? api.in_init(s) : 0;
}

KS_EXPORT int SSL_is_init_finished(const SSL *s)
{
    if (KS_UNLIKELY(__atomic_load_n(&ks_switch_live, __ATOMIC_ACQUIRE)) && own_fatal(s))
        return 0;
    /* libssl calls it on every read and write: straight on once loaded. */
    int (*real)(const SSL *) = __atomic_load_n(&api.is_init_finished, __ATOMIC_RELAXED);
    if (KS_LIKELY(real != NULL))
        return real(s);
    (void)ks_ossl_ready(); /* the table loaded */
    return api.is_init_finished ? api.is_init_finished(s) : 0;
}
