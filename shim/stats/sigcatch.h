/* sigcatch.h — catching the signals that would end an active process
 * without a record, invisibly to the program. */
#ifndef KTLSSHIM_SIGCATCH_H
#define KTLSSHIM_SIGCATCH_H

#include "core/common.h"

#include <signal.h>

/* The process became active: every signal of ours that the program left at
 * its default action gets our handler (write the record, then die of the
 * signal as the default would). Idempotent. */
void ks_signals_catch(void);
/* Gives every caught signal back its default action, exactly as the program
 * set it (a fork child that is not active yet, and before exec). */
void ks_signals_release(void);
/* Fork handlers (init.c): the lock is taken before fork and let go after
 * it, in the parent and in the child (before anything else there). */
void ks_signals_before_fork(void);
void ks_signals_after_fork(void);
/* sigaction() and signal() as the program's own call would be, through the
 * library's hooks (the library's code that sets a disposition on the
 * program's behalf: a worker given the program's SIGCHLD back, say). */
int ks_sig_program_action(int sig, const struct sigaction *act, struct sigaction *old);
void (*ks_sig_program_signal(int sig, void (*h)(int)))(int);

#endif
