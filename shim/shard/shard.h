/* shard.h — socket sharding: the plan of per-worker sockets that the
 * listen() hook builds, and the supervisor that runs it. */
#ifndef KTLSSHIM_SHARD_H
#define KTLSSHIM_SHARD_H

#include "core/common.h"
#include <sys/socket.h>

#define KS_MAX_REPLICATED 64

/* A bound TCP socket of the program that every worker gets a copy of. */
struct ks_sock_tmpl {
    int fd; /* the program's fd number */
    int domain;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    bool listener; /* the socket whose listen() triggered sharding */
    int fd_flags;  /* F_GETFD (FD_CLOEXEC) */
    int fl_flags;  /* F_GETFL (O_NONBLOCK) */
};

struct ks_plan {
    int nslots; /* workers */
    int nsock;
    int backlog;
    struct ks_sock_tmpl sock[KS_MAX_REPLICATED];
    int *slot_fd;   /* nslots * nsock; slot 0 holds the program's own fds */
    bool exec_mode; /* workers are exec'd (execmode.c); nsock is 0, listeners held there */
};

static inline int *ks_plan_fd(struct ks_plan *p, int slot, int t)
{
    return &p->slot_fd[slot * p->nsock + t];
}

/* In a new worker: put the slot's sockets at the program's fd numbers with
 * the program's fd flags, and close every other slot's. */
void ks_plan_enter_worker(struct ks_plan *p, int slot);

/* Forks the workers and supervises them. Returns only in a worker (with its
 * sockets in place); the supervisor itself never returns. */
void ks_supervise(struct ks_plan *p);

/* KTLSSHIM_PIN: the CPU of worker slot (valid once sharding started). */
int ks_shard_pin_cpu(int slot);

/* A bind() address (a, alen) is the stored one (b): same family, port and
 * address (IPv6: and scope). Exec mode and the fallback give a kept
 * listener to the program's bind() of its address. */
bool ks_same_address(const struct sockaddr *a, socklen_t alen, const struct sockaddr_storage *b);

/* The library, not the program, set SO_REUSEPORT on fd at its bind(). */
bool ks_shard_reuseport_ours(int fd);

/* This process is a worker of a sharded group. */
bool ks_shard_in_worker(void);

/* What sharding asks of the rest of the library: the state its workers
 * share (TLS session resumption, in the kTLS tower). init.c fills it in
 * before anything runs, so that the two towers never include each other.
 * A member left NULL has nothing to do. */
struct ks_shard_client {
    /* a fork-mode worker, once its sockets are in place */
    void (*worker_started)(void);
    /* fork mode, before the first worker: maps the shared state; false if
     * it could not (then each worker keeps its own) */
    bool (*shared_prepare)(void);
    /* exec mode: the same in a memfd the workers map (-1 if not), and a
     * worker mapping it (closes fd) */
    int (*shared_prepare_for_exec)(void);
    bool (*shared_attach)(int fd);
    /* the supervisor's timed duty (ticket key rotation): when it is next
     * due (CLOCK_MONOTONIC ms, -1 never), and doing it when due */
    int64_t (*next_duty_ms)(void);
    void (*duty)(int64_t now_ms);
};
extern struct ks_shard_client ks_shard_client;

/* At load (init.c), after ks_shard_client is set: the start-up snapshot,
 * a fallback's kept listeners, an exec-mode worker's set-up, in that order. */
void ks_shard_load(void);

/* True between the supervisor's fork() and the child's set-up, so that the
 * library's own fork handler leaves the child's record alone. */
extern bool ks_supervisor_forking;

#endif
