/* tls/ossl/copies.h — which copy of OpenSSL 3 a hooked call belongs to, in a
 * process that holds more than one (tls/ossl/copies.c explains why). */
#ifndef KTLSSHIM_OSSL_COPIES_H
#define KTLSSHIM_OSSL_COPIES_H

#include <stdbool.h>

/* What a hook's routing argument is. */
enum ks_copy_kind {
    KS_COPY_METHOD, /* a const SSL_METHOD *: static data inside its libssl */
    KS_COPY_SSL,    /* an SSL * or SSL_CTX *: heap, remembered when made */
    KS_COPY_BIO,    /* a BIO *: heap; its calls are libcrypto's */
};

/* "The served one": the libssl/libcrypto the hooks' bodies work with
 * (tls/ossl/api.c's table). Other copies are numbered from 1. */
#define KS_COPY_SERVED 0

/* Set (atomic, never cleared) once a second copy of OpenSSL 3 has been seen:
 * the gates then route every OpenSSL 3 call (tls/ossl/gates.c). */
extern int ks_ossl_copies_many;

/* Looks at what may reveal a second copy: the image a method lives in
 * (SSL_CTX_new, SSL_CTX_new_ex), or the list of loaded objects the first
 * time and after a dlopen/dlmopen (SSL_new, SSL_clear): a thread-local read
 * and two loads otherwise. Sets ks_ossl_copies_many when a copy is found. */
void ks_copies_probe_method(const void *method);
void ks_copies_probe_loaded(void);

/* In a forked child: the thread left is past any load it began. */
void ks_copies_after_fork_child(void);

/* The copy a call belongs to: by the caller's code (ra: a return address
 * inside an OpenSSL image), by the object (remembered when it was made or
 * first seen there), else by what the calling object's own symbol lookup
 * finds without this library. KS_COPY_SERVED when it cannot tell. */
int ks_copies_route(enum ks_copy_kind kind, const void *obj, const void *ra);

/* An object made (or freed and made again) by copy c. */
void ks_copies_made(const void *obj, int copy);

/* The real function `name` of copy c (> 0), cached in slot[c]; NULL (said
 * once) if it cannot be found. The call is counted (hooks.other_copy). */
void *ks_copies_fn(void **slot, int copy, const char *name);

/* How many slots a hook's cache needs (copies are numbered below it). */
#define KS_COPIES_MAX 64

#endif
