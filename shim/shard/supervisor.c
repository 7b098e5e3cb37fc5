/* supervisor.c — the process that called listen() becomes the supervisor:
 * it forks the workers, keeps every worker's sockets open (so connections
 * queued on a worker that dies wait for its successor), respawns workers
 * that crash (with backoff, giving up on a crash loop), forwards the usual
 * control signals, writes the summed stats and exits with a status that
 * reflects the workers'. It never returns into the program.
 *
 * Signals are taken synchronously (blocked, then sigtimedwait), so nothing
 * runs in signal context. Workers get PR_SET_PDEATHSIG and check getppid(),
 * so they never outlive the supervisor.
 *
 * A slot that is done while others run (given up, exit 0, ended by a
 * forwarded signal) has its sockets closed here, so that the kernel stops
 * giving it new connections (with net.ipv4.tcp_migrate_req=1 it also moves
 * the ones already queued to the others). A stop (TERM, INT, QUIT) ends:
 * the workers still running after KTLSSHIM_STOP_TIMEOUT seconds get
 * SIGKILL. The supervisor is a child subreaper, so a worker's children that
 * outlive it are its own; a worker that daemonizes is detected
 * (daemonize.c), the group stopped and the program started again unsharded
 * (fallback.c). Every process is an entry of one table (proctab.h); the
 * rolling restart is reload.c. */
#include "shard/supervise.h"
#include "core/config.h"
#include "shard/daemonize.h"
#include "shard/execmode.h"
#include "core/log.h"
#include "stats/stats.h"
#include "core/libc.h"
#include "stats/promfile.h"
#include "stats/sigcatch.h"

#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CRASH_LOOP_MAX 5       /* failures in a row before giving up */
#define HEALTHY_AFTER_MS 10000 /* a worker that ran this long resets its count */
#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS 5000
#define DAEMON_GRACE_MS                                                                            \
    1000                     /* all workers exited 0 with children left: wait for a                \
                                setsid() report this long before exiting */
#define START_WINDOW_MS 5000 /* a worker failing this soon after the group started: fallback */

bool ks_supervisor_forking;
struct ks_sup ks_sup;

static const int forwarded_signals[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};

int64_t ks_sup_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void ks_sup_describe(int status, char *out, size_t n)
{
    if (WIFEXITED(status))
        snprintf(out, n, "exit %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(out, n, "signal %d", WTERMSIG(status));
    else
        snprintf(out, n, "status %d", status);
}

/* Closes the sockets the supervisor holds for slot i: once no worker will
 * serve it, its listener must leave the reuseport group, or the kernel keeps
 * giving it connections that nobody accepts. */
void ks_sup_close_slot_sockets(int i)
{
    if (ks_sup.exec)
        ks_pt_close_held(i);
    for (int t = 0; t < ks_sup.plan->nsock; t++) {
        int *fd = ks_plan_fd(ks_sup.plan, i, t);
        if (*fd >= 0) {
            close(*fd);
            *fd = -1;
        }
    }
}

void ks_sup_slot_done(struct ks_proc *s, int i)
{
    s->state = KS_PS_DONE;
    ks_sup_close_slot_sockets(i);
}

static void begin_stop(void)
{
    if (ks_sup.stopping)
        return;
    ks_sup.stopping = true;
    ks_sup.stop_deadline_ms = ks_sup_now_ms() + (int64_t)ks_config()->stop_timeout * 1000;
}

pid_t ks_sup_start(struct ks_proc *e, int i, int rec)
{
    int sup_end = -1, child_end = -1;
    if (ks_sup.exec && !ks_exec_spawn_prepare(i, &sup_end, &child_end))
        return -1;
    ks_supervisor_forking = true;
    pid_t pid = fork();
    ks_supervisor_forking = false;
    if (pid < 0) {
        ks_log_error("worker %d/%d: fork failed: %s", i, ks_sup.plan->nslots, strerror(errno));
        if (ks_sup.exec) {
            close(sup_end);
            close(child_end);
        }
        return -1;
    }
    if (pid == 0) {
        if (!ks_sup.exec)
            ks_stats_adopt(rec, getpid());
        if (ks_config()->pin && !ks_sup.exec) {
            cpu_set_t one;
            CPU_ZERO(&one);
            CPU_SET(ks_shard_pin_cpu(i), &one);
            if (sched_setaffinity(0, sizeof one, &one) != 0)
                ks_log_error("worker %d: cannot pin to CPU %d: %s", i, ks_shard_pin_cpu(i),
                             strerror(errno));
        }
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (ks_libc()->getppid() != ks_sup.self)
            ks_exit_as_program(0); /* the supervisor is already gone */
        if (ks_sup.exec) {
            /* The program's signal state as it started: an exec keeps the
             * mask and ignored signals. */
            for (int sig = 1; sig < NSIG; sig++)
                if (ks_sup.ignored_at_start[sig])
                    ks_sig_program_signal(sig, SIG_IGN);
            ks_sig_program_action(SIGCHLD, &ks_sup.app_chld, NULL);
            sigprocmask(SIG_SETMASK, &ks_sup.app_mask, NULL);
            ks_exec_worker_exec(i, ks_sup.plan->nslots, rec, child_end);
        }
        char v[32];
        snprintf(v, sizeof v, "%d/%d", i, ks_sup.plan->nslots);
        setenv("KTLSSHIM_WORKER", v, 1);
        ks_daemon_worker_started();
        ks_plan_enter_worker(ks_sup.plan, i);
        if (ks_shard_client.worker_started)
            ks_shard_client.worker_started();
        ks_sig_program_action(SIGCHLD, &ks_sup.app_chld, NULL);
        sigprocmask(SIG_SETMASK, &ks_sup.app_mask, NULL);
        return 0;
    }
    if (ks_sup.exec)
        close(child_end);
    e->run = (struct ks_run){.pid = pid, .rec = rec, .chan = sup_end, .start_ms = ks_sup_now_ms()};
    ks_count(KS_C_W_STARTED, 1);
    ks_log_debug("worker %d/%d started, pid %d", i, ks_sup.plan->nslots, (int)pid);
    return pid;
}

/* Starts the worker of slot i. Returns 0 in the supervisor, 1 in the child. */
static int spawn(int i)
{
    struct ks_proc *s = ks_pt_slot(i);
    int rec = ks_stats_claim(KS_ROLE_WORKER, i);
    pid_t pid = ks_sup_start(s, i, rec);
    if (pid == 0)
        return 1;
    if (pid < 0) {
        ks_stats_release(rec);
        ks_log_error("worker %d/%d: not started; retrying in %d ms", i, ks_sup.plan->nslots,
                     BACKOFF_MAX_MS);
        s->state = KS_PS_WAITING;
        s->due_ms = ks_sup_now_ms() + BACKOFF_MAX_MS;
        return 0;
    }
    s->state = KS_PS_RUNNING;
    return 0;
}

/* An end the program gave itself: a non-zero exit, or a crash (abort(),
 * an assertion, a fault). A signal from outside (SIGKILL, SIGTERM) is not. */
static bool program_failed(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status) != 0;
    if (!WIFSIGNALED(status))
        return false;
    switch (WTERMSIG(status)) {
    case SIGABRT:
    case SIGSEGV:
    case SIGBUS:
    case SIGILL:
    case SIGFPE:
    case SIGSYS:
    case SIGTRAP:
        return true;
    default:
        return false;
    }
}

static void worker_ended(struct ks_proc *s, int i, int status)
{
    char how[32];
    ks_sup_describe(status, how, sizeof how);
    ks_stats_write_for(s->run.rec, how); /* no-op if the worker wrote its own */
    ks_stats_release(s->run.rec);        /* its counts stay in the sum; the record is free */
    s->last_status = status;
    pid_t pid = s->run.pid;
    int64_t started_ms = s->run.start_ms;
    bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    bool asked = WIFSIGNALED(status) && WTERMSIG(status) == s->run.forwarded;
    ks_pt_ended(s);
    if (clean && ks_sup.nexited0 < EXITED0_MAX)
        ks_sup.exited0[ks_sup.nexited0++] = pid;
    if ((clean || asked) && !ks_sup.stopping && ks_reload_takes_over(i)) {
        s->state = KS_PS_HANDOVER; /* its listeners stay held for the new one */
        return;
    }
    if (clean || asked || ks_sup.stopping) {
        ks_sup_slot_done(s, i);
        return;
    }
    int64_t now = ks_sup_now_ms();
    if (program_failed(status) && now - ks_sup.start_ms < START_WINDOW_MS) {
        /* At start-up: most likely something the copies share (a pid or
         * lock file, a runtime directory) or a pid the program recorded
         * before listen(). One copy unsharded settles it: if it fails
         * alone too, that is the program's own failure, with its status. */
        if (!ks_sup.fallback) {
            ks_sup.fallback = "workers_failed";
            snprintf(ks_sup.fallback_why, sizeof ks_sup.fallback_why,
                     "worker %d/%d ended with %s %.1f s after the workers started (copies of "
                     "the program may share a pid file, a lock or a runtime directory, or "
                     "check a pid recorded before listen())",
                     i, ks_sup.plan->nslots, how, (double)(now - ks_sup.start_ms) / 1000);
        }
        s->state = KS_PS_DONE;
        return;
    }
    if (now - started_ms >= HEALTHY_AFTER_MS)
        s->fails = 0;
    s->fails++;
    if (s->fails >= CRASH_LOOP_MAX) {
        ks_log_error("worker %d/%d (pid %d) ended with %s, %d failures in a row: "
                     "crash loop, not respawning it",
                     i, ks_sup.plan->nslots, (int)pid, how, s->fails);
        ks_sup_slot_done(s, i);
        s->gave_up = true;
        ks_count(KS_C_W_GAVE_UP, 1);
        return;
    }
    int64_t delay = BACKOFF_FIRST_MS << (s->fails - 1);
    if (delay > BACKOFF_MAX_MS)
        delay = BACKOFF_MAX_MS;
    ks_log_info("worker %d/%d (pid %d) ended with %s; respawning in %lld ms", i,
                ks_sup.plan->nslots, (int)pid, how, (long long)delay);
    s->state = KS_PS_WAITING;
    s->due_ms = now + delay;
}

static void reap(void)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        struct ks_proc *e = ks_pt_by_pid(pid);
        if (e && e->role == KS_PR_CURRENT && e->state == KS_PS_RUNNING)
            worker_ended(e, e->slot, status);
        else if (e && (e->role == KS_PR_NEW || e->role == KS_PR_OLD))
            ks_reload_reaped(e, status);
    }
}

void ks_sup_signal_extra(int sig)
{
    for (int k = ks_sup.plan->nslots; k < ks_pt_size(); k++) {
        struct ks_proc *e = ks_pt_at(k);
        if ((e->role == KS_PR_NEW || e->role == KS_PR_OLD) && e->run.pid > 0)
            kill(e->run.pid, sig);
    }
}

static void forward(int sig, const siginfo_t *info)
{
    if (ks_sup.exec && sig == ks_config()->reload_signal) {
        ks_reload_start();
        return;
    }
    if (sig == SIGTERM || sig == SIGINT || sig == SIGQUIT) {
        begin_stop();
        ks_reload_stop();
        ks_sup_signal_extra(sig);
    }
    /* A terminal's ^C or ^\ reaches the whole foreground process group, the
     * workers included: forwarding it would deliver it twice. */
    bool from_tty = info->si_code == SI_KERNEL;
    for (int i = 0; i < ks_sup.plan->nslots; i++) {
        struct ks_proc *s = ks_pt_slot(i);
        if (s->state == KS_PS_RUNNING) {
            s->run.forwarded = sig;
            /* An exec-mode worker still starting (its program has not
             * reached listen() yet) gets the signal when it has, as the
             * program alone was only signalled once it listened: its
             * handlers are not installed yet, and SIGTERM would kill it. */
            if (from_tty)
                continue;
            if (ks_sup.exec && s->run.reported == 0 && sig < 64)
                s->run.held_sigs |= 1ULL << sig;
            else
                kill(s->run.pid, sig);
        } else if ((s->state == KS_PS_WAITING || s->state == KS_PS_HANDOVER) && ks_sup.stopping) {
            ks_sup_slot_done(s, i);
        }
    }
}

/* The exit status: the first non-zero exit of a worker; else, if every
 * worker died of the same signal, that signal (re-raised on the supervisor
 * itself, so its parent sees what it would see without the library); else
 * 128 + the signal; else 0. */
static void finish(void)
{
    int code = 0, sig = 0;
    bool same_sig = true;
    for (int i = 0; i < ks_sup.plan->nslots; i++) {
        int st = ks_pt_slot(i)->last_status;
        if (WIFEXITED(st)) {
            same_sig = false;
            if (!code && WEXITSTATUS(st))
                code = WEXITSTATUS(st);
        } else if (WIFSIGNALED(st)) {
            if (sig && sig != WTERMSIG(st))
                same_sig = false;
            if (!sig)
                sig = WTERMSIG(st);
        }
    }
    char end[32];
    if (code)
        snprintf(end, sizeof end, "exit %d", code);
    else if (sig && same_sig)
        snprintf(end, sizeof end, "signal %d", sig);
    else if (sig)
        snprintf(end, sizeof end, "exit %d", 128 + sig);
    else
        snprintf(end, sizeof end, "exit 0");
    ks_prom_final();
    ks_stats_write_supervisor(end);
    if (code)
        ks_exit_as_program(code);
    if (sig && same_sig) {
        ks_sig_program_signal(sig, SIG_DFL);
        sigset_t one;
        sigemptyset(&one);
        sigaddset(&one, sig);
        sigprocmask(SIG_UNBLOCK, &one, NULL);
        kill(getpid(), sig);
    }
    ks_exit_as_program(sig ? 128 + sig : 0);
}

/* KTLSSHIM_STOP_TIMEOUT: a stop must end. */
static void kill_if_stop_overdue(int64_t now)
{
    if (!ks_sup.stopping || ks_sup.stop_killed || now < ks_sup.stop_deadline_ms)
        return;
    ks_sup.stop_killed = true;
    ks_sup_signal_extra(SIGKILL);
    for (int i = 0; i < ks_sup.plan->nslots; i++) {
        struct ks_proc *s = ks_pt_slot(i);
        if (s->state != KS_PS_RUNNING)
            continue;
        ks_log_error("worker %d/%d (pid %d) still running %d s after the stop signal "
                     "(KTLSSHIM_STOP_TIMEOUT): sending SIGKILL",
                     i, ks_sup.plan->nslots, (int)s->run.pid, ks_config()->stop_timeout);
        s->run.forwarded = SIGKILL;
        kill(s->run.pid, SIGKILL);
    }
}

static int64_t next_deadline(bool *any_alive)
{
    int64_t next = -1;
    *any_alive = false;
    if (ks_reload_active())
        next = ks_sup_now_ms() + 100; /* the rolling restart's steps are checked this often */
    for (int k = 0; k < ks_pt_size(); k++) {
        struct ks_proc *e = ks_pt_at(k);
        if (e->role == KS_PR_CURRENT && e->state != KS_PS_DONE)
            *any_alive = true;
        if ((e->role == KS_PR_NEW || e->role == KS_PR_OLD) && e->run.pid > 0)
            *any_alive = true;
        if (e->role == KS_PR_CURRENT && e->state == KS_PS_WAITING && (next < 0 || e->due_ms < next))
            next = e->due_ms;
    }
    return next;
}

/* Waits for a signal (its number, with info) or for wait_ms; exec mode also
 * serves the workers' control sockets meanwhile (returns 0 then). */
static int wait_event(const sigset_t *set, siginfo_t *info, int64_t wait_ms)
{
    if (!ks_sup.exec) {
        struct timespec ts = {wait_ms / 1000, (wait_ms % 1000) * 1000000};
        return sigtimedwait(set, info, &ts);
    }
    static struct pollfd pfd[1 + 2 * KS_MAX_SHARDS + 64];
    pfd[0] = (struct pollfd){.fd = ks_sup.sigfd, .events = POLLIN};
    int n = 1;
    for (int k = 0; k < ks_pt_size() && n < (int)KS_ARRAY_LEN(pfd); k++)
        if (ks_pt_at(k)->run.chan >= 0)
            pfd[n++] = (struct pollfd){.fd = ks_pt_at(k)->run.chan, .events = POLLIN};
    int r = poll(pfd, (nfds_t)n, wait_ms > INT_MAX ? INT_MAX : (int)wait_ms);
    if (r <= 0)
        return 0;
    for (int k = 1; k < n; k++) {
        struct ks_proc *e = pfd[k].revents ? ks_pt_by_chan(pfd[k].fd) : NULL;
        if (e)
            ks_exec_handle(e);
    }
    struct signalfd_siginfo si;
    if ((pfd[0].revents & POLLIN) &&
        ks_libc()->read(ks_sup.sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
        memset(info, 0, sizeof *info);
        info->si_signo = (int)si.ssi_signo;
        info->si_code = si.ssi_code;
        info->si_pid = (pid_t)si.ssi_pid;
        return (int)si.ssi_signo;
    }
    return 0;
}

void ks_supervise(struct ks_plan *plan)
{
    ks_sup.plan = plan;
    ks_sup.self = getpid();
    ks_sup.exec = plan->exec_mode;
    ks_sup.sigfd = -1;
    if (!ks_sup.exec)
        ks_pt_init(plan->nslots, false); /* exec mode: made by execmode.c */

    sigset_t wait_set;
    sigemptyset(&wait_set);
    for (size_t k = 0; k < KS_ARRAY_LEN(forwarded_signals); k++)
        sigaddset(&wait_set, forwarded_signals[k]);
    if (ks_sup.exec && ks_config()->reload_signal)
        sigaddset(&wait_set, ks_config()->reload_signal);
    sigaddset(&wait_set, SIGCHLD);
    /* Everything is blocked in the supervisor: the program's own handlers
     * (an alarm() it set, say) must never run here. What is not waited for
     * stays pending, harmlessly. */
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, &ks_sup.app_mask);
    /* The supervisor must see its workers' exit statuses even if the program
     * had set SIGCHLD to SIG_IGN (auto-reap). Workers get the program's. */
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    ks_sig_program_action(SIGCHLD, &dfl, &ks_sup.app_chld);
    if (ks_sup.exec) {
        /* A signal ignored (nohup's HUP) would be dropped before it could be
         * waited for: the supervisor takes it; exec'd workers get it ignored
         * again, as the program had it. */
        for (int sig = 1; sig < NSIG; sig++) {
            struct sigaction old;
            if (sig != SIGCHLD && sigismember(&wait_set, sig) == 1 &&
                ks_sig_program_action(sig, NULL, &old) == 0 && old.sa_handler == SIG_IGN) {
                ks_sup.ignored_at_start[sig] = true;
                ks_sig_program_action(sig, &dfl, NULL);
            }
        }
        ks_sup.sigfd = signalfd(-1, &wait_set, SFD_CLOEXEC | SFD_NONBLOCK);
        if (ks_sup.sigfd < 0) {
            ks_log_error("exec mode: signalfd: %s; the supervisor cannot run", strerror(errno));
            ks_exit_as_program(1);
        }
    }
    fflush(NULL); /* or buffered output would be written once per worker */
    /* Orphans of the group (a daemonizing worker's child) become ours. */
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0)
        ks_log_error("prctl(PR_SET_CHILD_SUBREAPER): %s; a daemonizing program would "
                     "escape supervision",
                     strerror(errno));
    if (!ks_daemon_watch_prepare(ks_sup.self))
        ks_log_error("no shared memory to watch for daemonization: %s", strerror(errno));

    ks_sup.start_ms = ks_sup_now_ms();
    for (int i = 0; i < plan->nslots; i++)
        if (spawn(i))
            return; /* in the new worker */

    int64_t all_done_ms = -1;
    for (;;) {
        if (!ks_sup.stopping &&
            ks_daemon_detected(ks_sup.exited0, ks_sup.nexited0, ks_sup.self, ks_sup_have_adopted))
            ks_sup_restart_daemonized();
        if (!ks_sup.stopping && !ks_sup.exec)
            ks_sup_check_parent_checks();
        if (!ks_sup.stopping && ks_sup.fallback)
            ks_sup_fall_back();
        bool alive;
        int64_t next = next_deadline(&alive);
        if (!alive) {
            /* Every worker has ended. If one left a child behind after
             * exiting 0, it may be daemonizing with its setsid() not seen
             * yet: give it a moment to say so. */
            int64_t t = ks_sup_now_ms();
            if (all_done_ms < 0)
                all_done_ms = t;
            if (ks_sup.nexited0 == 0 || t - all_done_ms >= DAEMON_GRACE_MS ||
                !ks_sup_have_adopted())
                finish();
            next = t + 50;
        }
        if (ks_sup.stopping && !ks_sup.stop_killed && (next < 0 || ks_sup.stop_deadline_ms < next))
            next = ks_sup.stop_deadline_ms;
        int64_t rot = ks_shard_client.next_duty_ms ? ks_shard_client.next_duty_ms() : -1;
        if (rot >= 0 && (next < 0 || rot < next))
            next = rot;
        int64_t prom = ks_prom_due_ms(); /* KTLSSHIM_PROM_FILE */
        if (prom >= 0 && (next < 0 || prom < next))
            next = prom;
        int64_t wait_ms = next < 0 ? 60000 : next - ks_sup_now_ms();
        if (wait_ms < 0)
            wait_ms = 0;
        siginfo_t info;
        int sig = wait_event(&wait_set, &info, wait_ms);
        if (sig == SIGCHLD)
            reap();
        else if (sig > 0)
            forward(sig, &info);
        int64_t now = ks_sup_now_ms();
        kill_if_stop_overdue(now);
        ks_reload_step(now);
        ks_prom_tick(now);
        if (ks_shard_client.duty)
            ks_shard_client.duty(now);
        for (int i = 0; i < plan->nslots; i++) {
            struct ks_proc *s = ks_pt_slot(i);
            if (s->state == KS_PS_WAITING && s->due_ms <= now && !ks_sup.stopping) {
                ks_count(KS_C_W_RESPAWNED, 1);
                if (spawn(i))
                    return; /* in the respawned worker */
            }
        }
    }
}
