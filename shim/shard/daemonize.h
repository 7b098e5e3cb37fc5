/* daemonize.h — a sharded program that daemonizes (fork + setsid) would
 * leave copies of itself that nobody supervises. The workers report it; the
 * supervisor stops the group and starts the program again, unsharded. */
#ifndef KTLSSHIM_DAEMONIZE_H
#define KTLSSHIM_DAEMONIZE_H

#include "core/common.h"

#include <sys/socket.h>

/* Supervisor, before forking: the shared page where workers (and their
 * children) report a setsid(). False if it cannot be made. */
bool ks_daemon_watch_prepare(pid_t supervisor);

/* Supervisor: whether the group daemonized: a process that called setsid()
 * as the child of one of the `n` worker pids in `exited0` (workers that
 * ended with exit 0, as a daemonizing parent does), or already orphaned,
 * is still running as the supervisor's adopted child, or has left adopted
 * children (have_adopted) after forking again. */
bool ks_daemon_detected(const pid_t *exited0, int n, pid_t self, bool (*have_adopted)(void));

/* The setsid() callers recorded so far (to kill their process groups). */
int ks_daemon_reported(pid_t *out, int max);

/* Supervisor, once every other process of the group is gone: exec the
 * program again from its own command line (read when the library loaded),
 * without KTLSSHIM_SHARDS, with the fds the program made since it started
 * closed at exec. `app_mask` is the program's signal mask (a sigset_t),
 * `chld_ignored` whether it had SIGCHLD ignored. Returns only if the exec
 * failed (it says why). */
struct ks_held_fd {
    int fd;
    bool clear_reuseport; /* the library set SO_REUSEPORT on it, not the program */
};
void ks_daemon_reexec_unsharded(const void *app_mask, bool chld_ignored, const char *token,
                                const struct ks_held_fd *keep, int nkeep);

/* In that image: the program's bind() to the address of a listener kept
 * across the exec puts it at fd (true; the listener is the program's now).
 * ks_daemon_at_listen (at every listen() when unsharded) closes those it has
 * not taken, and makes an image a fallback started count as active (so it
 * writes the stats record that names the fallback). */
bool ks_daemon_has_held(void);
bool ks_daemon_bind_held(int fd, const struct sockaddr *addr, socklen_t len);
bool ks_daemon_listen_watched(void); /* cheap: whether at_listen has work */
void ks_daemon_at_listen(void);      /* at a listen() on a TCP socket */

/* Fork mode: a worker calls this once it starts; its children inherit it.
 * ks_daemon_at_exit (exit paths) reports a child of a worker that ends
 * within 5 s of asking getppid() and being told the worker's pid,
 * while the worker still runs; ks_daemon_parent_checks returns how many
 * did (and the last one's pid). */
void ks_daemon_worker_started(void);
void ks_daemon_at_exit(void);
unsigned ks_daemon_parent_checks(pid_t *last);

/* Supervisor (exec mode): a setsid() a worker reported over its control
 * socket, recorded as the shared page records the fork mode's. */
void ks_daemon_add_report(pid_t pid, pid_t ppid);

/* The parent of a running process (from /proc/PID/stat), or -1 if it is
 * gone or a zombie. */
pid_t ks_daemon_parent_of(pid_t pid);

/* At load (ks_shard_load): the listeners a fallback's re-exec kept. */
void ks_daemon_take_held(void);

#endif
