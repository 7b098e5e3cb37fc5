/* init.c — the library's life cycle in a process: load (read the
 * configuration, so that bad values are reported at start-up), fork (a child
 * counts into a fresh record) and exit (write this process's record). */
#include "common.h"
#include "config.h"
#include "real.h"
#include "shard.h"
#include "stats.h"

#include <pthread.h>

__thread int ks_hook_depth __attribute__((tls_model("initial-exec")));

static void child_after_fork(void)
{
    if (!ks_supervisor_forking)
        ks_stats_after_fork_child();
}

__attribute__((constructor)) static void ks_load(void)
{
    KS_SAVE_ERRNO;
    ks_config();
    ks_libc(); /* resolved now, never first inside a signal handler's write() */
    pthread_atfork(NULL, NULL, child_after_fork);
    KS_RESTORE_ERRNO;
}

__attribute__((destructor)) static void ks_unload(void)
{
    ks_stats_write_own("exit");
}
