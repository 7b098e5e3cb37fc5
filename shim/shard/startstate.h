/* startstate.h — what the program was started with (startstate.c), for the
 * images the library starts from it: exec mode's supervisor and workers,
 * and a fallback's unsharded program. */
#ifndef KTLSSHIM_STARTSTATE_H
#define KTLSSHIM_STARTSTATE_H

#include "core/common.h"

#include <limits.h>
#include <signal.h>
#include <sys/types.h>

struct ks_start {
    char cwd[PATH_MAX]; /* "" if unknown */
    sigset_t mask;
    uint64_t ignored; /* bit per signal 1..63 ignored at load */
    /* The process name (comm) at load: an exec of /proc/self/exe would name
     * the new images "exe" (ps, pkill, the stats' "program"); they take
     * this one. */
    char comm[17];
    uid_t euid;
    gid_t egid;
};
extern struct ks_start ks_start; /* exec mode's part: kept when it may be needed */

/* At load (ks_shard_load), in a process that may shard: the snapshot. */
void ks_start_snapshot(void);

/* The fds open when the library loaded (inherited from the parent); true
 * for every fd when that is not known. */
bool ks_fd_was_inherited(int fd);

/* The program's argv as it started: a calloc'd vector into the kept
 * command line, NULL if it was not kept. */
char **ks_start_argv(void);
bool ks_start_cmdline_kept(void);

/* The environment the program started with as a calloc'd vector with room
 * for `extra` more entries (its count in *n_out); NULL if it was not kept.
 * KTLSSHIM_EXEC_* left out. */
char **ks_start_env(size_t extra, size_t *n_out);

/* An image exec mode started takes the process name after the first ':' of
 * its internal variable's value `v`. */
void ks_start_take_comm(const char *v);

#endif
