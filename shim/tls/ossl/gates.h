/* tls/ossl/gates.h — which OpenSSL the hooks serve (tls/ossl/gates.c; the
 * flavour itself is in sym.h, next to the lookups that depend on it). */
#ifndef KTLSSHIM_OSSL_FLAVOUR_H
#define KTLSSHIM_OSSL_FLAVOUR_H

#include "tls/ossl/sym.h"

/* The table (tls/ossl/api.h) has just been loaded for the process's flavour:
 * its OpenSSL version goes into the process's record, and what OpenSSL 1.1
 * does not get is said once. */
void ks_ossl_flavour_loaded(void);

/* The word the OpenSSL 3 gates test (atomic): the process's flavour
 * (enum ks_ossl_flavour), with KS_GATE_COPIES added once a second copy of
 * OpenSSL 3 is seen (tls/ossl/copies.c). A gate's fast path is taken only when
 * it is exactly KS_OSSL_30 (the BIO gates: KS_OSSL_30 or undecided). */
extern int ks_ossl_gate_now;
#define KS_GATE_COPIES 4

#endif
