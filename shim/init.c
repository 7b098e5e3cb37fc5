/* init.c — the library's life cycle in a process, and the one place that
 * ties the two towers (sharding, kTLS) together.
 *
 * Load, in this order (the only constructor):
 *  1. this process's pid, the configuration (bad values are reported at
 *     start-up) and libc's table (never first resolved inside a signal
 *     handler's write());
 *  2. the towers wired: sharding's client is the kTLS tower's shared
 *     session state; the kTLS tower asks sharding whether this is a worker;
 *  3. sharding's start-up snapshot (inherited fds, command line: before
 *     the library opens anything), a fallback's kept listeners, an
 *     exec-mode worker's set-up;
 *  4. the connection log and the stats file, opened while the process still
 *     has its privileges;
 *  5. quick_exit's record handler, the fork handlers.
 * Fork: a child counts into a fresh record and catches nothing until it
 * does something. Exit: this process's record (the other ways to end are in
 * exitpath.c and stats/sigcatch.c).
 *
 * Locks: a fork while another thread holds one of the library's locks must
 * not leave the child stuck. Each has, at its definition:
 *  - the SSL_CTX list's mutex (tls/ctx.c) and the signal catcher's lock
 *    word (stats/sigcatch.c): fork handlers that take it before fork and
 *    let it go after, in the parent and the child;
 *  - the session cache's mutex and ticket keys' sequence lock
 *    (tls/resume.c): in shared memory, so the holder lets go in the child
 *    too; robust, and waited for within bounds only;
 *  - pthread_once (config, the OpenSSL tables, the hooks' set-up): glibc
 *    runs an initialiser a fork interrupted again in the child;
 *  - the stats (stats/stats.c, pool.c): none; a record being written is
 *    waited for within bounds, a pool record is claimed by one exchange.
 * Libc's and the loader's own locks (malloc, dlsym, dl_iterate_phdr) are
 * glibc's fork's to handle. tests/host/42-fork-locks.bats forks inside the
 * first two and the hooks' set-up; 31-resume-lock.bats stops the session
 * cache's holder. */
#include "core/common.h"
#include "core/config.h"
#include "core/libc.h"
#include "shard/shard.h"
#include "stats/connlog.h"
#include "stats/promfile.h"
#include "stats/sigcatch.h"
#include "stats/stats.h"
#include "tls/ossl/copies.h"
#include "tls/resume.h"
#include "tls/tls.h"

#include <pthread.h>
#include <unistd.h>

__thread int ks_hook_depth __attribute__((tls_model("initial-exec")));

static void child_after_fork(void)
{
    ks_self_pid = getpid();
    ks_copies_after_fork_child();
    ks_signals_after_fork();
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
    ks_libc();
    ks_shard_client = (struct ks_shard_client){
        .worker_started = ks_tls_worker_started,
        .shared_prepare = ks_resume_prepare,
        .shared_prepare_for_exec = ks_resume_prepare_for_exec,
        .shared_attach = ks_resume_attach,
        .next_duty_ms = ks_resume_next_rotation_ms,
        .duty = ks_resume_rotate_if_due,
    };
    ks_tls_set_in_worker(ks_shard_in_worker);
    ks_shard_load();
    ks_connlog_open();
    ks_stats_open_file();
    ks_prom_load();
    ks_exitpath_setup();
    pthread_atfork(ks_signals_before_fork, ks_signals_after_fork, child_after_fork);
    KS_RESTORE_ERRNO;
}

__attribute__((destructor)) static void ks_unload(void)
{
    ks_stats_at_destructor();
}
