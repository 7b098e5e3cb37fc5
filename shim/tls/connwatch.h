/* connwatch.h — the hot path's one test: does any connection of this
 * process need its own state looked up on every SSL_read / SSL_write?
 *
 * Why: finding a connection's state (SSL_get_ex_data) costs more than all
 * the rest of a hook, and on a host without kTLS no connection needs it:
 * every one is user-space TLS whose bytes count as user bytes. So the
 * hooks of the calls made for every record (SSL_read/_ex, SSL_write/_ex,
 * SSL_get_error: tls/hooks.c, tls/kswitch/rx.c) test one process-wide count and, at 0,
 * call libssl and count user bytes without a lookup.
 *
 * The count (ks_conns_watched) is the number of reasons to look up:
 * - 1 until tls/hooks.c's table is resolved with every function the fast paths
 *   call (for good if it is not);
 * - 1 per live connection whose calls need its state: a direction on kTLS
 *   (libssl's, the own switch's, the program's BIO), a decision of the own
 *   switch still due, an entry in the connection log; taken when its
 *   handshake is recorded, given back when libssl frees the SSL;
 * - 1 for good once a completed handshake could go unseen by the info
 *   callback (no memory to chain the program's callback or to record a
 *   connection): the lookup then finds such a handshake, as before.
 * A connection of the own switch is always one of the second kind (its
 * receive decision was due at its handshake), so 0 also means that no
 * connection is served by the own switch.
 *
 * The hooks read the count again after the real call: a handshake that
 * completes inside it is recorded there (the info callback), and may have
 * made the connection watched. Other threads' connections do not matter:
 * a connection changes only inside calls on it, which libssl serialises. */
#ifndef KTLSSHIM_CONNWATCH_H
#define KTLSSHIM_CONNWATCH_H

#include "core/common.h"
#include "tls/ossl/api.h"

extern int ks_conns_watched __attribute__((visibility("hidden"))); /* atomic */

/* The fast paths call through tls/ossl/api.h's table: declared here as what it
 * is, this library's own, so that a call through it is one instruction
 * (not a load of its address first). */
extern struct ks_ossl_api ks_ossl_api __attribute__((visibility("hidden")));

/* No connection of the process needs a lookup (and the table is ready). */
static inline bool ks_conns_unwatched(void)
{
    return KS_LIKELY(!__atomic_load_n(&ks_conns_watched, __ATOMIC_ACQUIRE));
}

/* A reason to look up begins (+1) or ends (-1). */
static inline void ks_conns_watch(int delta)
{
    __atomic_add_fetch(&ks_conns_watched, delta, __ATOMIC_RELEASE);
}

/* A handshake may go unseen by the info callback: lookups for good (once). */
void ks_conns_watch_for_good(void);

#endif
