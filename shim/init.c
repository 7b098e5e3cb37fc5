/* init.c — the library's life cycle in a process: load (read the
 * configuration, so that bad values are reported at start-up; resolve the
 * real functions, so that no signal handler ever has to; open the stats file
 * while the process still has its privileges), fork (a child counts into a
 * fresh record and catches nothing until it does something) and exit (write
 * this process's record; the other ways to end are in exitpath.c and
 * sigcatch.c). */
#include "common.h"
#include "config.h"
#include "real.h"
#include "shard.h"
#include "sigcatch.h"
#include "stats.h"

#include <pthread.h>
#include <unistd.h>

__thread int ks_hook_depth __attribute__((tls_model("initial-exec")));

static void child_after_fork(void)
{
    ks_self_pid = getpid();
    ks_signals_after_fork_child();
    if (!ks_supervisor_forking) {
        ks_stats_after_fork_child();
        ks_signals_release();
    }
}

__attribute__((constructor)) static void ks_load(void)
{
    KS_SAVE_ERRNO;
    ks_self_pid = getpid();
    ks_config();
    ks_libc(); /* resolved now, never first inside a signal handler's write() */
    ks_stats_open_file();
    ks_exitpath_setup();
    pthread_atfork(NULL, NULL, child_after_fork);
    KS_RESTORE_ERRNO;
}

__attribute__((destructor)) static void ks_unload(void)
{
    ks_stats_at_destructor();
}
