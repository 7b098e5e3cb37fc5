/* stats.h — the counters of one process, and the exit records built from
 * them (a human line on stderr, a JSON line in KTLSSHIM_STATS). */
#ifndef KTLSSHIM_STATS_H
#define KTLSSHIM_STATS_H

#include "core/common.h"

/* One row per counter: enum name, JSON group, JSON key. docs/stats.md
 * documents each. Fallback reasons are per direction (tx, rx). */
#define KS_FALLBACK_REASONS(X)                                                                     \
    X(DISABLED, "disabled")                                                                        \
    X(NO_KERNEL_TLS, "no_kernel_tls")                                                              \
    X(NOT_SOCKET, "not_socket")                                                                    \
    X(VERSION, "version")                                                                          \
    X(CIPHER, "cipher")                                                                            \
    X(LIBSSL, "libssl")                                                                            \
    X(CLIENT, "client")                                                                            \
    X(UNREAD, "unread")                                                                            \
    X(REFUSED, "refused")                                                                          \
    X(BIO_NO_FD, "bio_no_fd")                                                                      \
    X(BIO_BUSY, "bio_busy")                                                                        \
    X(BIO_RX, "bio_rx")                                                                            \
    X(BIO_UNPROVEN, "bio_unproven")                                                                \
    X(UNSENT, "unsent")                                                                            \
    X(OTHER, "other")

#define KS_COUNTERS(X)                                                                             \
    X(ACCEPTED, "connections", "accepted")                                                         \
    X(TLS, "connections", "tls")                                                                   \
    X(TLS12, "connections", "tls1_2")                                                              \
    X(TLS13, "connections", "tls1_3")                                                              \
    X(TLS_OTHER, "connections", "tls_other")                                                       \
    X(TLS_RESUMED, "connections", "resumed")                                                       \
    X(KTLS_TX, "ktls", "tx")                                                                       \
    X(KTLS_RX, "ktls", "rx")                                                                       \
    X(KTLS_TX_SW, "ktls", "tx_sw")                                                                 \
    X(KTLS_TX_NIC, "ktls", "tx_nic")                                                               \
    X(KTLS_RX_SW, "ktls", "rx_sw")                                                                 \
    X(KTLS_RX_NIC, "ktls", "rx_nic")                                                               \
    X(KTLS_OFFLOAD_ESTIMATED, "ktls", "offload_estimated")                                         \
    X(KTLS_TX_ZEROCOPY, "ktls", "tx_zerocopy")                                                     \
    X(KTLS_RX_OWN, "ktls", "rx_own")                                                               \
    X(KTLS_RX_DEFERRED, "ktls", "rx_deferred")                                                     \
    X(KTLS_TX_OWN, "ktls", "tx_own")                                                               \
    X(KTLS_RX_KEYUPDATE_REFUSED, "ktls", "rx_keyupdate_refused")                                   \
    X(KTLS_RX_KEYUPDATE, "ktls", "rx_keyupdate")                                                   \
    X(KTLS_TX_KEYUPDATE, "ktls", "tx_keyupdate")                                                   \
    X(KTLS_TX_KEYUPDATE_FAILED, "ktls", "tx_keyupdate_failed")                                     \
    X(KTLS_RX_KEYUPDATE_FLOOD, "ktls", "rx_keyupdate_flood")                                       \
    X(KTLS_TX_REKEY, "ktls", "tx_rekey")                                                           \
    X(KTLS_TX_REKEY_UNABLE, "ktls", "tx_rekey_unable")                                             \
    X(KTLS_RX_NO_PAD, "ktls", "rx_no_pad")                                                         \
    X(KTLS_RX_RENEG_REFUSED, "ktls", "rx_renegotiation_refused")                                   \
    X(KTLS_RX_BAD_RECORD, "ktls", "rx_bad_record")                                                 \
    X(KTLS_TX_BIO, "ktls", "tx_bio")                                                               \
    X(KTLS_RX_BIO, "ktls", "rx_bio")                                                               \
    X(KTLS_REASSERTED, "ktls", "reasserted")                                                       \
    X(FB_TX_DISABLED, "fallback_tx", "disabled")                                                   \
    X(FB_TX_NO_KERNEL_TLS, "fallback_tx", "no_kernel_tls")                                         \
    X(FB_TX_NOT_SOCKET, "fallback_tx", "not_socket")                                               \
    X(FB_TX_VERSION, "fallback_tx", "version")                                                     \
    X(FB_TX_CIPHER, "fallback_tx", "cipher")                                                       \
    X(FB_TX_LIBSSL, "fallback_tx", "libssl")                                                       \
    X(FB_TX_CLIENT, "fallback_tx", "client")                                                       \
    X(FB_TX_UNREAD, "fallback_tx", "unread")                                                       \
    X(FB_TX_REFUSED, "fallback_tx", "refused")                                                     \
    X(FB_TX_BIO_NO_FD, "fallback_tx", "bio_no_fd")                                                 \
    X(FB_TX_BIO_BUSY, "fallback_tx", "bio_busy")                                                   \
    X(FB_TX_BIO_RX, "fallback_tx", "bio_rx")                                                       \
    X(FB_TX_BIO_UNPROVEN, "fallback_tx", "bio_unproven")                                           \
    X(FB_TX_UNSENT, "fallback_tx", "unsent")                                                       \
    X(FB_TX_OTHER, "fallback_tx", "other")                                                         \
    X(FB_RX_DISABLED, "fallback_rx", "disabled")                                                   \
    X(FB_RX_NO_KERNEL_TLS, "fallback_rx", "no_kernel_tls")                                         \
    X(FB_RX_NOT_SOCKET, "fallback_rx", "not_socket")                                               \
    X(FB_RX_VERSION, "fallback_rx", "version")                                                     \
    X(FB_RX_CIPHER, "fallback_rx", "cipher")                                                       \
    X(FB_RX_LIBSSL, "fallback_rx", "libssl")                                                       \
    X(FB_RX_CLIENT, "fallback_rx", "client")                                                       \
    X(FB_RX_UNREAD, "fallback_rx", "unread")                                                       \
    X(FB_RX_REFUSED, "fallback_rx", "refused")                                                     \
    X(FB_RX_BIO_NO_FD, "fallback_rx", "bio_no_fd")                                                 \
    X(FB_RX_BIO_BUSY, "fallback_rx", "bio_busy")                                                   \
    X(FB_RX_BIO_RX, "fallback_rx", "bio_rx")                                                       \
    X(FB_RX_BIO_UNPROVEN, "fallback_rx", "bio_unproven")                                           \
    X(FB_RX_UNSENT, "fallback_rx", "unsent")                                                       \
    X(FB_RX_OTHER, "fallback_rx", "other")                                                         \
    X(B_KTLS_TX, "bytes", "ktls_tx")                                                               \
    X(B_KTLS_RX, "bytes", "ktls_rx")                                                               \
    X(B_SENDFILE, "bytes", "sendfile")                                                             \
    X(B_USER_TX, "bytes", "user_tx")                                                               \
    X(B_USER_RX, "bytes", "user_rx")                                                               \
    X(HOOKS_OTHER_OPENSSL, "hooks", "other_openssl")                                               \
    X(HOOKS_OTHER_COPY, "hooks", "other_copy")                                                     \
    X(W_STARTED, "workers", "started")                                                             \
    X(W_RESPAWNED, "workers", "respawned")                                                         \
    X(W_GAVE_UP, "workers", "gave_up")                                                             \
    X(W_RELOADED, "workers", "reloaded")

enum ks_counter {
#define KS_C_ENUM(name, group, key) KS_C_##name,
    KS_COUNTERS(KS_C_ENUM)
#undef KS_C_ENUM
        KS_C_COUNT
};

enum ks_fallback {
#define KS_FB_ENUM(name, key) KS_FB_##name,
    KS_FALLBACK_REASONS(KS_FB_ENUM)
#undef KS_FB_ENUM
        KS_FB_COUNT
};
const char *ks_fallback_name(enum ks_fallback r);

enum ks_role { KS_ROLE_PROCESS = 0, KS_ROLE_SUPERVISOR, KS_ROLE_WORKER, KS_ROLE_WORKER_CHILD };

/* The process's current record. Lives in private memory, or in the shared
 * pool once the process is part of a sharded group. */
struct ks_record {
    uint64_t c[KS_C_COUNT]; /* updated with relaxed atomics */
    int32_t pid;
    int32_t role;  /* enum ks_role */
    int32_t shard; /* worker index, -1 when none */
    int32_t shards;
    int32_t written; /* the exit record: 0 not yet, 1 being written, 2 written (atomic) */
    int32_t in_use;  /* pool: 0 free, 1 in use, 2 being claimed (atomic) */
};

/* NULL in a process forked by a sharded worker until it first counts
 * something: only then does it claim a record of the shared pool. */
extern struct ks_record *ks_cur __attribute__((visibility("hidden"))); /* direct access */
struct ks_record *ks_stats_claim_lazily(void);

static inline void ks_count(enum ks_counter c, uint64_t n)
{
    struct ks_record *r = __atomic_load_n(&ks_cur, __ATOMIC_ACQUIRE);
    if (KS_UNLIKELY(!r))
        r = ks_stats_claim_lazily();
    __atomic_fetch_add(&r->c[c], n, __ATOMIC_RELAXED);
}

/* ks_count on a hot path that keeps no stack frame for the rare case:
 * false (nothing counted) while the process has no record yet, when the
 * caller must call ks_count. */
static inline bool ks_count_quick(enum ks_counter c, uint64_t n)
{
    struct ks_record *r = __atomic_load_n(&ks_cur, __ATOMIC_ACQUIRE);
    if (KS_UNLIKELY(!r))
        return false;
    __atomic_fetch_add(&r->c[c], n, __ATOMIC_RELAXED);
    return true;
}

/* Marks that the library did something in this process, so that it writes
 * a record however it ends (processes where it did nothing stay silent and
 * untouched): from now on, signals the program left at their default action
 * are caught to write it (sigcatch.c). */
void ks_stats_mark_active(void);

/* The record of process pid gets "shard_fallback": token (a static string:
 * why sharding started this image again unsharded). */
void ks_stats_set_fallback(const char *token, pid_t pid);
/* The program accepted a TCP connection: counted; with KTLSSHIM_STATS set,
 * that makes the process active. */
void ks_stats_accepted(void);
/* The OpenSSL the hooks serve (OpenSSL_version_num()): the JSON record
 * says it ("openssl"). */
void ks_stats_set_openssl(unsigned long version_num);

/* At load: opens KTLSSHIM_STATS while the process still has the privileges
 * it started with (close-on-exec, at a high fd number). */
void ks_stats_open_file(void);

/* The pid whose records this copy of the library keeps: differs from
 * getpid() in a vfork() child, which shares our memory and must not touch
 * it. Set at load and in every fork child. */
extern pid_t ks_self_pid;

/* Sharding: makes a shared pool of records that survives the workers; the
 * supervisor sums it at the end. */
bool ks_stats_make_shared(void);
void ks_stats_set_shards(int shards);
/* Exec mode: the same, keeping the pool's memfd open (*fd_out, close-on-exec;
 * -1 if the pool could only be anonymous memory). */
bool ks_stats_make_shared_for_exec(int *fd_out);
/* In an exec-mode worker: map the pool from fd (closed) and adopt record
 * idx. False (nothing changed) if fd is not such a pool. */
bool ks_stats_attach_shared(int fd, int idx);
/* Claims a fresh record in the shared pool (supervisor, before forking a
 * worker); returns its index, or the overflow record's if the pool is
 * full. */
int ks_stats_claim(enum ks_role role, int shard);
/* In the new worker: make record `idx` the process's own. */
void ks_stats_adopt(int idx, pid_t pid);
/* The supervisor, once a worker's record is written: its counts move to
 * the pool's retired sum and the record is free again. */
void ks_stats_release(int idx);
/* After fork() in the program: the child starts with a fresh record. */
void ks_stats_after_fork_child(void);

/* Writes the record `idx` of the pool on behalf of a worker that could not
 * (killed by a signal). `end` describes how it ended. */
void ks_stats_write_for(int idx, const char *end);
/* The supervisor's record: the sum over the whole pool. */
void ks_stats_write_supervisor(const char *end);
/* The process's own record; async-signal-safe (no stdio, no malloc), so
 * that a signal handler may call it. Written once. */
void ks_stats_write_own(const char *end);
/* The end of the process, by the paths the library sees (exitpath.c,
 * sigcatch.c, the destructor). Each writes the own record if the process is
 * active and this is the process that owns it (not a vfork child). */
void ks_stats_note_exit_status(int status); /* exit(status): for the destructor */
void ks_stats_at_destructor(void);
void ks_stats_at_exit(int status); /* _exit, _Exit */
void ks_stats_at_signal(int sig);  /* async-signal-safe */
/* Before exec: writes the record ("exec"), moves its counts out (to the
 * pool's retired sum when shared) and makes the process inactive, so that if
 * the exec fails the process starts over with a fresh record and sums stay
 * exact. */
void ks_stats_at_exec(void);
/* The stats file opened again if the program closed it (before a chroot,
 * after which its path means nothing). errno kept. */
void ks_stats_keep_file(void);
/* exitpath.c, at load (init.c): the handler that writes quick_exit's
 * record after the program's own at_quick_exit handlers. */
void ks_exitpath_setup(void);
/* _exit() as the program's own call would be (exitpath.c): the records
 * written, then libc's _exit. */
__attribute__((noreturn)) void ks_exit_as_program(int status);

#endif
