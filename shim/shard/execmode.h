/* execmode.h — sharding by exec: for programs that fork mode cannot copy
 * (threads or an event loop at their first listen()), and for rolling
 * restarts (KTLSSHIM_RELOAD). Each worker is a fresh exec of the program
 * from main(); the supervisor holds every worker's listeners, passed to it
 * over a control socket. */
#ifndef KTLSSHIM_EXECMODE_H
#define KTLSSHIM_EXECMODE_H

#include "core/common.h"
#include <sys/socket.h>

struct pollfd;

/* ---- in the program, at its first listen() ---- */

/* Execs the process into the exec-mode supervisor (same pid). Returns only
 * if it cannot, with the reason in `why` (the process is as it was).
 * `fork_unsafe` says why fork mode was not used (for the log line);
 * `port0` whether the program bound the listener to port 0. */
bool ks_exec_become_supervisor(int fd, bool port0, const char *fork_unsafe, char *why, size_t n);

/* ---- in the supervisor image (called before main) ---- */

/* If this process is the exec-mode supervisor its parent image asked for,
 * runs it and never returns; otherwise returns at once. */
void ks_exec_supervisor_if_asked(void);

/* Before forking slot's worker: its control socket, with the listeners the
 * slot holds already queued on the worker's end. False if it cannot be made
 * (said why). */
bool ks_exec_spawn_prepare(int slot, int *sup_end, int *child_end);
/* In the forked child: execs the program as worker slot/nslots counting
 * into stats record rec. Never returns. */
void ks_exec_worker_exec(int slot, int nslots, int rec, int child_end) __attribute__((noreturn));
/* The control socket of e's worker is readable: hold the listeners it
 * reports (proctab.h), note its setsid() reports. */
struct ks_proc;
void ks_exec_handle(struct ks_proc *e);
/* "127.0.0.1:443", "[::1]:443": an address for a log line. */
const char *ks_exec_addr_text(const struct sockaddr_storage *ss, char *out, size_t n);

/* ---- in a worker ---- */

/* This process is an exec-mode worker (decided at load). */
bool ks_exec_is_worker(void);
/* bind() hook: if the slot holds a listener on this address, put it at fd
 * (the program's fd flags kept) and return true. */
bool ks_exec_bind_held(int fd, const struct sockaddr *addr, socklen_t len);
/* listen() succeeded on fd: send the supervisor a copy to hold. */
void ks_exec_report_listener(int fd);
/* setsid() succeeded here (a worker or its child): tell the supervisor
 * (daemonize.c). Async-signal-safe. */
void ks_exec_report_setsid(void);

/* At load (ks_shard_load): an exec-mode worker takes its channel, stats
 * record and listeners. */
void ks_exec_load(void);

#endif
