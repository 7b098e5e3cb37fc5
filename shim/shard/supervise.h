/* supervise.h — what the supervisor's parts share: supervisor.c (start,
 * reap, respawn, forward, stop, exit status), reload.c (the rolling
 * restart) and fallback.c (stopping the group and starting the program
 * again unsharded). Not for the rest of the library: shard.h has
 * ks_supervise(). */
#ifndef KTLSSHIM_SUPERVISE_H
#define KTLSSHIM_SUPERVISE_H

#include "core/common.h"
#include "shard/proctab.h"
#include "shard/shard.h"

#include <signal.h>

#define EXITED0_MAX 64

struct ks_sup {
    struct ks_plan *plan;
    sigset_t app_mask;         /* the program's mask, restored in workers */
    struct sigaction app_chld; /* the program's SIGCHLD action, likewise */
    pid_t self;
    bool stopping;
    int64_t stop_deadline_ms; /* SIGKILL to the workers left at this time */
    bool stop_killed;
    pid_t exited0[EXITED0_MAX]; /* workers that ended with exit 0 (daemon parents?) */
    int nexited0;
    bool exec;                   /* exec mode: workers are exec'd, signals come through sigfd */
    int sigfd;                   /* exec mode: signalfd of the waited signals */
    bool ignored_at_start[NSIG]; /* waited-for signals the program had ignored */
    int64_t start_ms;            /* the group started */
    const char *fallback;        /* a fallback is due: its stats token */
    char fallback_why[320];      /* and what made it so */
};
extern struct ks_sup ks_sup;

/* supervisor.c */
int64_t ks_sup_now_ms(void);
void ks_sup_describe(int status, char *out, size_t n); /* "exit 3", "signal 9" */
/* Starts a worker for slot i counting into record rec, into e's run (pid,
 * rec, start time, exec mode's control socket). Returns its pid in the
 * supervisor (-1 if it could not: said why), 0 in a fork-mode worker. */
pid_t ks_sup_start(struct ks_proc *e, int i, int rec);
/* Slot i has no worker any more: done, its sockets closed. */
void ks_sup_slot_done(struct ks_proc *s, int i);
/* Close the sockets the supervisor holds for slot i. */
void ks_sup_close_slot_sockets(int i);
/* The processes alive that are not a slot's current worker. */
void ks_sup_signal_extra(int sig);

/* reload.c: KTLSSHIM_RELOAD */
void ks_reload_start(void);
void ks_reload_step(int64_t now);
void ks_reload_stop(void); /* a stop signal: no further step */
bool ks_reload_active(void);
/* A process of the rolling restart (NEW or OLD) ended. */
void ks_reload_reaped(struct ks_proc *e, int status);
/* Slot i's worker ended while its new one comes up: the slot waits for it. */
bool ks_reload_takes_over(int i);
int ks_reload_replaced(void);

/* fallback.c */
bool ks_sup_have_adopted(void);
void ks_sup_check_parent_checks(void);
void ks_sup_restart_daemonized(void) __attribute__((noreturn));
void ks_sup_fall_back(void) __attribute__((noreturn));

#endif
