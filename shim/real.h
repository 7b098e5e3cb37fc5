/* real.h — the real functions behind every hook, resolved in one place. */
#ifndef KTLSSHIM_REAL_H
#define KTLSSHIM_REAL_H

#include "common.h"
#include <sys/socket.h>

struct ks_libc {
    int (*bind)(int, const struct sockaddr *, socklen_t);
    int (*listen)(int, int);
    int (*accept)(int, struct sockaddr *, socklen_t *);
    int (*accept4)(int, struct sockaddr *, socklen_t *, int);
    ssize_t (*sendfile)(int, int, off_t *, size_t);
    ssize_t (*sendfile64)(int, int, off_t *, size_t);
    int (*daemon)(int, int);
};

/* libc's functions (the next definition after this library). Resolved on
 * first use; never NULL afterwards (abort with a message otherwise: a libc
 * without bind() cannot run the program anyway). */
const struct ks_libc *ks_libc(void);

/* OpenSSL 3 (libssl.so.3 / libcrypto.so.3) symbol by name, version
 * OPENSSL_3.0.0: looked up after this library in the global scope, then in
 * any libssl.so.3 already loaded, even privately (dlopen RTLD_LOCAL, as
 * Python's _ssl does). NULL when there is none. */
void *ks_ossl_sym(const char *name);

#endif
