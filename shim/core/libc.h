/* libc.h — the one table of libc's functions behind the library's hooks. */
#ifndef KTLSSHIM_LIBC_H
#define KTLSSHIM_LIBC_H

#include "core/common.h"
#include <dlfcn.h>
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
    /* biosock/io.c: the writes of programs whose TLS goes through their BIO */
    ssize_t (*write)(int, const void *, size_t);
    ssize_t (*writev)(int, const struct iovec *, int);
    ssize_t (*send)(int, const void *, size_t, int);
    ssize_t (*sendto)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
    ssize_t (*sendmsg)(int, const struct msghdr *, int);
    /* ... and its reads of that socket (the ClientHello; receive under its
     * BIO: biosock/rxframe.c) */
    ssize_t (*read)(int, void *, size_t);
    ssize_t (*readv)(int, const struct iovec *, int);
    ssize_t (*recv)(int, void *, size_t, int);
    ssize_t (*recvfrom)(int, void *, size_t, int, struct sockaddr *, socklen_t *);
    ssize_t (*recvmsg)(int, struct msghdr *, int);
    ssize_t (*read_chk)(int, void *, size_t, size_t);
    ssize_t (*recv_chk)(int, void *, size_t, size_t, int);
    ssize_t (*recvfrom_chk)(int, void *, size_t, size_t, int, struct sockaddr *, socklen_t *);
    int (*daemon)(int, int);
    int (*chroot)(const char *); /* exitpath.c: the stats file kept across it */
    pid_t (*getppid)(void);      /* daemonize.c hooks it */
    /* the loader's entry points (tls/ossl/copies.c learns of loads there) */
    void *(*dlopen)(const char *, int);
    void *(*dlmopen)(Lmid_t, const char *, int);
};

/* libc's functions (the next definition after this library). Resolved at
 * load (init.c), so that a signal handler never resolves anything; never NULL
 * afterwards except where marked (abort with a message otherwise: a libc
 * without bind() cannot run the program anyway). */
const struct ks_libc *ks_libc(void);

/* The table itself, for a hook's hot path that runs only once ks_libc()
 * has returned (biosock/io.c's watching hooks): one load, no call. */
extern struct ks_libc ks_libc_table __attribute__((visibility("hidden")));

#endif
