/* ossl_flavour.h — which OpenSSL the hooks serve (ossl_flavour.c; the
 * flavour itself is in real.h, next to the lookups that depend on it). */
#ifndef KTLSSHIM_OSSL_FLAVOUR_H
#define KTLSSHIM_OSSL_FLAVOUR_H

/* The table (ossl_api.h) has just been loaded for the process's flavour:
 * its OpenSSL version goes into the process's record, and what OpenSSL 1.1
 * does not get is said once. */
void ks_ossl_flavour_loaded(void);

#endif
