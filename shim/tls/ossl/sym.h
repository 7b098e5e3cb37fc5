/* sym.h — OpenSSL's real functions, found by name, of the process's flavour. */
#ifndef KTLSSHIM_OSSL_SYM_H
#define KTLSSHIM_OSSL_SYM_H

#include "core/common.h"

/* Which OpenSSL the process's hooks serve (its "flavour"): decided once, by
 * the first OpenSSL hook the program calls (tls/ossl/gates.c). Until then the
 * library behaves as for OpenSSL 3. */
enum ks_ossl_flavour { KS_OSSL_UNDECIDED = 0, KS_OSSL_30, KS_OSSL_111 };
extern int ks_ossl_flavour_now; /* atomic: enum ks_ossl_flavour */
static inline int ks_ossl_flavour(void)
{
    return __atomic_load_n(&ks_ossl_flavour_now, __ATOMIC_ACQUIRE);
}

/* OpenSSL symbol by name, of the process's flavour (ks_ossl_sym_of). */
void *ks_ossl_sym(const char *name);

/* OpenSSL symbol by name, of one flavour. OpenSSL 3 (undecided counts as
 * 3): version OPENSSL_3.0.0, looked up after this library in the global
 * scope, then in any libssl.so.3 / libcrypto.so.3 already loaded, even
 * privately (dlopen RTLD_LOCAL, as Python's _ssl does). OpenSSL 1.1: in the
 * loaded libssl.so.1.1 (and its libcrypto.so.1.1) itself, by its own handle,
 * so that neither this library nor another libssl can answer. NULL when
 * there is none. */
void *ks_ossl_sym_of(int flavour, const char *name);

#endif
