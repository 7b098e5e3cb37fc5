/* proctab.h — the supervisor's one table of processes.
 *
 * Every process the supervisor started and still answers for has one entry:
 * a slot's current worker (entries 0..nslots-1, one per slot, kept while the
 * slot waits to respawn or is done), and, past those, a rolling restart's
 * new worker, an old worker draining, and a worker that ended while its
 * exec-mode control socket is still open (its children hold it: a daemon's
 * setsid() report comes that way). Reaping, forwarding, the rolling restart
 * and exec mode's control sockets all look processes up here, so that a
 * process is never known to one of them and unknown to another.
 *
 * The listeners the supervisor holds (exec mode) belong to the slot, not to
 * a process: a slot's current and new workers listen on the same sockets.
 * Each entry records which of them its process has reported (`covers`). */
#ifndef KTLSSHIM_PROCTAB_H
#define KTLSSHIM_PROCTAB_H

#include "core/common.h"
#include "shard/shard.h"

#include <sys/socket.h>
#include <sys/types.h>

enum ks_proc_role {
    KS_PR_FREE,    /* an unused entry past the slots */
    KS_PR_CURRENT, /* the slot's worker (or, with no pid, its place) */
    KS_PR_NEW,     /* a rolling restart's new worker, not serving yet */
    KS_PR_OLD,     /* replaced (or refused), asked to stop, draining */
    KS_PR_GONE,    /* ended; its control socket is still open */
};

enum ks_proc_state {
    KS_PS_RUNNING,  /* pid runs */
    KS_PS_WAITING,  /* a current entry: respawn due at due_ms */
    KS_PS_HANDOVER, /* a current entry whose worker ended while its new one
                     * comes up: the slot's listeners stay held for it */
    KS_PS_DONE,     /* a current entry: no worker any more */
};

/* A process: what changes at each start. */
struct ks_run {
    pid_t pid;          /* 0: none */
    int rec;            /* its stats record */
    int chan;           /* exec mode: its control socket, -1 none */
    int reported;       /* listen() reports received */
    uint64_t covers;    /* bit k: it reported the slot's held listener k */
    int64_t start_ms;   /* CLOCK_MONOTONIC */
    int forwarded;      /* last signal forwarded to it, 0 if none */
    uint64_t held_sigs; /* exec mode: bit sig, a signal kept for it until its
                         * first listen() report (execmode.c) */
};

struct ks_proc {
    int role, state, slot;
    struct ks_run run;
    int64_t due_ms; /* WAITING: respawn; NEW: report by; OLD: SIGKILL at */
    bool killed;    /* OLD: SIGKILL sent */
    bool steps;     /* OLD: its end moves the rolling restart to the next slot */
    /* the slot's, on its current entry */
    int fails;       /* failures in a row */
    int last_status; /* wait status of the last worker */
    bool gave_up;
};

/* A listener the supervisor holds for a slot (exec mode). */
struct ks_held {
    int fd;
    dev_t dev;
    ino_t ino;
    socklen_t len;
    struct sockaddr_storage addr;
    bool fresh; /* first reported by a rolling restart's new worker, which
                 * does not serve yet */
};

/* Makes the table for nslots slots (held listeners too if `exec`); false if
 * out of memory (exec mode only: the entries are static). Entries
 * 0..nslots-1 are the slots' current entries. */
bool ks_pt_init(int nslots, bool exec);
int ks_pt_nslots(void);
/* Every entry, free ones included (iterate to ks_pt_size()). */
int ks_pt_size(void);
struct ks_proc *ks_pt_at(int k);
static inline struct ks_proc *ks_pt_slot(int slot)
{
    return ks_pt_at(slot);
}
/* The live process pid, or NULL. */
struct ks_proc *ks_pt_by_pid(pid_t pid);
/* The entry whose control socket is fd, or NULL. */
struct ks_proc *ks_pt_by_chan(int fd);
/* The slot's entry in `role` (NEW, OLD), or NULL. */
struct ks_proc *ks_pt_find(int slot, int role);
/* A free entry past the slots for `role`; NULL if the table is full. */
struct ks_proc *ks_pt_add(int slot, int role);
/* The process of e ended: keep its entry while its control socket is open
 * (a slot's current entry passes it to a GONE entry), else free it. */
void ks_pt_ended(struct ks_proc *e);
/* The entry's control socket reached its end: close it, free a GONE entry. */
void ks_pt_chan_closed(struct ks_proc *e);
/* Swap the processes of two entries of a slot (a new worker becomes the
 * slot's current one; the replaced one takes the other entry). */
void ks_pt_swap_runs(struct ks_proc *a, struct ks_proc *b);

/* ---- the listeners held per slot (exec mode) ---- */
int ks_pt_nheld(int slot);
struct ks_held *ks_pt_held(int slot, int k);
/* The mask of every listener the slot holds. */
uint64_t ks_pt_held_mask(int slot);
/* The slot's held listener that is the socket (dev, ino), or -1. */
int ks_pt_held_index(int slot, dev_t dev, ino_t ino);
/* Holds fd (ours from now) for the slot: its index, or -1 if the slot holds
 * KS_MAX_REPLICATED already (fd is left to the caller). */
int ks_pt_add_held(int slot, int fd, dev_t dev, ino_t ino, const struct sockaddr_storage *addr,
                   socklen_t len);
/* Close held listener k of the slot (no worker of it listens there). */
void ks_pt_drop_held(int slot, int k);
/* Close every listener the slot holds. */
void ks_pt_close_held(int slot);

#endif
