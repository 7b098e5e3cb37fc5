/* real.h — the real functions behind every hook, resolved in one place. */
#ifndef KTLSSHIM_REAL_H
#define KTLSSHIM_REAL_H

#include "common.h"
#include <signal.h>
#include <sys/socket.h>
#include <sys/uio.h>

typedef void (*ks_sighandler_t)(int);

struct ks_libc {
    int (*bind)(int, const struct sockaddr *, socklen_t);
    int (*listen)(int, int);
    int (*accept)(int, struct sockaddr *, socklen_t *);
    int (*accept4)(int, struct sockaddr *, socklen_t *, int);
    ssize_t (*sendfile)(int, int, off_t *, size_t);
    ssize_t (*sendfile64)(int, int, off_t *, size_t);
    /* signal dispositions (sigcatch.c) */
    int (*sigaction)(int, const struct sigaction *, struct sigaction *);
    ks_sighandler_t (*signal)(int, ks_sighandler_t);
    ks_sighandler_t (*bsd_signal)(int, ks_sighandler_t);
    ks_sighandler_t (*ssignal)(int, ks_sighandler_t);
    ks_sighandler_t (*sysv_signal)(int, ks_sighandler_t);
    ks_sighandler_t (*sigset)(int, ks_sighandler_t);
    int (*siginterrupt)(int, int);
    /* the ways a process ends or replaces itself (exitpath.c) */
    int (*libc_start_main)(int (*)(int, char **, char **), int, char **, void (*)(void),
                           void (*)(void), void (*)(void), void *);
    void (*exit)(int);
    void (*_exit)(int);
    void (*quick_exit)(int);
    int (*execve)(const char *, char *const[], char *const[]);
    int (*execv)(const char *, char *const[]);
    int (*execvp)(const char *, char *const[]);
    int (*execvpe)(const char *, char *const[], char *const[]);
    int (*fexecve)(int, char *const[], char *const[]);
    int (*execveat)(int, const char *, char *const[], char *const[], int); /* or NULL */
    /* biosock.c: the writes of programs whose TLS goes through their BIO */
    ssize_t (*write)(int, const void *, size_t);
    ssize_t (*writev)(int, const struct iovec *, int);
    ssize_t (*send)(int, const void *, size_t, int);
    ssize_t (*sendto)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
    ssize_t (*sendmsg)(int, const struct msghdr *, int);
    ssize_t (*read)(int, void *, size_t); /* the ClientHello a program read */
    int (*daemon)(int, int);
    int (*chroot)(const char *); /* exitpath.c: the stats file kept across it */
    pid_t (*getppid)(void);      /* daemonize.c hooks it */
};

/* libc's functions (the next definition after this library). Resolved at
 * load (init.c), so that a signal handler never resolves anything; never NULL
 * afterwards except where marked (abort with a message otherwise: a libc
 * without bind() cannot run the program anyway). */
const struct ks_libc *ks_libc(void);

/* Which OpenSSL the process's hooks serve (its "flavour"): decided once, by
 * the first OpenSSL hook the program calls (ossl_flavour.c). Until then the
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
