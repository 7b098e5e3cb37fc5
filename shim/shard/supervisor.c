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
 * (daemonize.c), the group stopped and the program started again unsharded. */
#include "shard/shard.h"
#include "core/config.h"
#include "shard/daemonize.h"
#include "shard/execmode.h"
#include "core/log.h"
#include "stats/stats.h"
#include "core/libc.h"
#include "stats/sigcatch.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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
    1000 /* all workers exited 0 with children left: wait for a                                    \
            setsid() report this long before exiting */
#define EXITED0_MAX 64
#define START_WINDOW_MS 5000  /* a worker failing this soon after the group started: fallback */
#define FALLBACK_TERM_MS 3000 /* the fallback's SIGTERM, then SIGKILL */
#define PARENT_CHECKS_MAX 2   /* worker children ending after a parent check: fallback */

bool ks_supervisor_forking;

enum slot_state { SLOT_RUNNING, SLOT_WAITING, SLOT_DONE };

struct slot {
    pid_t pid;
    int rec; /* stats record of the current incarnation */
    int state;
    int fails; /* failures in a row */
    int64_t started_ms, respawn_at_ms;
    int last_status; /* wait status of the last incarnation */
    int forwarded;   /* last signal forwarded to it, 0 if none */
    bool gave_up;
};

static const int forwarded_signals[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void describe(int status, char *out, size_t n)
{
    if (WIFEXITED(status))
        snprintf(out, n, "exit %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(out, n, "signal %d", WTERMSIG(status));
    else
        snprintf(out, n, "status %d", status);
}

static struct {
    struct ks_plan *plan;
    struct slot *slots;
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
    bool window_steered;         /* the start window: new connections to slot 0 */
} sup;

/* KTLSSHIM_RELOAD (exec mode): the rolling restart, one slot at a time. */
static struct {
    bool active;
    int slot;          /* the slot being replaced */
    int replaced;      /* workers replaced so far */
    pid_t new_pid;     /* started, not serving yet */
    int new_rec, need; /* its record; listeners it must report */
    int64_t ready_deadline_ms;
    pid_t old_pid; /* replaced, asked to stop */
    int old_rec;
    int64_t old_deadline_ms;
    bool old_killed;
    pid_t abandoned_pid; /* a new worker that never served, killed */
    int abandoned_rec;
} rl;

/* Closes the sockets the supervisor holds for slot i: once no worker will
 * serve it, its listener must leave the reuseport group, or the kernel keeps
 * giving it connections that nobody accepts. */
static void close_slot_sockets(int i)
{
    if (sup.exec)
        ks_exec_close_slot(i);
    for (int t = 0; t < sup.plan->nsock; t++) {
        int *fd = ks_plan_fd(sup.plan, i, t);
        if (*fd >= 0) {
            close(*fd);
            *fd = -1;
        }
    }
}

static void slot_done(struct slot *s, int i)
{
    s->state = SLOT_DONE;
    close_slot_sockets(i);
}

static void begin_stop(void)
{
    if (sup.stopping)
        return;
    sup.stopping = true;
    sup.stop_deadline_ms = now_ms() + (int64_t)ks_config()->stop_timeout * 1000;
}

/* Starts a worker for slot i counting into record rec: forks it (fork
 * mode), or forks and execs the program (exec mode). Returns its pid in the
 * supervisor (-1 if it could not: said why), 0 in a fork-mode worker. */
static pid_t start_incarnation(int i, int rec)
{
    int sup_end = -1, child_end = -1;
    if (sup.exec && !ks_exec_spawn_prepare(i, &sup_end, &child_end))
        return -1;
    ks_supervisor_forking = true;
    pid_t pid = fork();
    ks_supervisor_forking = false;
    if (pid < 0) {
        ks_log_error("worker %d/%d: fork failed: %s", i, sup.plan->nslots, strerror(errno));
        if (sup.exec) {
            close(sup_end);
            close(child_end);
        }
        return -1;
    }
    if (pid == 0) {
        if (!sup.exec)
            ks_stats_adopt(rec, getpid());
        if (ks_config()->pin && !sup.exec) {
            cpu_set_t one;
            CPU_ZERO(&one);
            CPU_SET(ks_shard_pin_cpu(i), &one);
            if (sched_setaffinity(0, sizeof one, &one) != 0)
                ks_log_error("worker %d: cannot pin to CPU %d: %s", i, ks_shard_pin_cpu(i),
                             strerror(errno));
        }
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (ks_libc()->getppid() != sup.self)
            ks_exit_as_program(0); /* the supervisor is already gone */
        if (sup.exec) {
            /* The program's signal state as it started: an exec keeps the
             * mask and ignored signals. */
            for (int sig = 1; sig < NSIG; sig++)
                if (sup.ignored_at_start[sig])
                    ks_sig_program_signal(sig, SIG_IGN);
            ks_sig_program_action(SIGCHLD, &sup.app_chld, NULL);
            sigprocmask(SIG_SETMASK, &sup.app_mask, NULL);
            ks_exec_worker_exec(i, sup.plan->nslots, rec, child_end);
        }
        char v[32];
        snprintf(v, sizeof v, "%d/%d", i, sup.plan->nslots);
        setenv("KTLSSHIM_WORKER", v, 1);
        ks_daemon_worker_started();
        ks_plan_enter_worker(sup.plan, i);
        if (ks_shard_client.worker_started)
            ks_shard_client.worker_started();
        ks_sig_program_action(SIGCHLD, &sup.app_chld, NULL);
        sigprocmask(SIG_SETMASK, &sup.app_mask, NULL);
        return 0;
    }
    if (sup.exec) {
        close(child_end);
        ks_exec_spawned(i, pid, sup_end);
    }
    ks_count(KS_C_W_STARTED, 1);
    ks_log_debug("worker %d/%d started, pid %d", i, sup.plan->nslots, (int)pid);
    return pid;
}

/* Starts the worker of slot i. Returns 0 in the supervisor, 1 in the child. */
static int spawn(int i)
{
    struct slot *s = &sup.slots[i];
    int rec = ks_stats_claim(KS_ROLE_WORKER, i);
    pid_t pid = start_incarnation(i, rec);
    if (pid == 0)
        return 1;
    if (pid < 0) {
        ks_stats_release(rec);
        ks_log_error("worker %d/%d: not started; retrying in %d ms", i, sup.plan->nslots,
                     BACKOFF_MAX_MS);
        s->state = SLOT_WAITING;
        s->respawn_at_ms = now_ms() + BACKOFF_MAX_MS;
        return 0;
    }
    s->pid = pid;
    s->rec = rec;
    s->state = SLOT_RUNNING;
    s->started_ms = now_ms();
    s->forwarded = 0;
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

static void worker_ended(struct slot *s, int i, int status)
{
    char how[32];
    describe(status, how, sizeof how);
    ks_stats_write_for(s->rec, how); /* no-op if the worker wrote its own */
    ks_stats_release(s->rec);        /* its counts stay in the sum; the record is free */
    s->last_status = status;
    pid_t pid = s->pid;
    s->pid = 0;
    bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    bool asked = WIFSIGNALED(status) && WTERMSIG(status) == s->forwarded;
    if (clean && sup.nexited0 < EXITED0_MAX)
        sup.exited0[sup.nexited0++] = pid;
    if (clean || asked || sup.stopping) {
        slot_done(s, i);
        return;
    }
    int64_t now = now_ms();
    if (program_failed(status) && now - sup.start_ms < START_WINDOW_MS) {
        /* At start-up: most likely something the copies share (a pid or
         * lock file, a runtime directory) or a pid the program recorded
         * before listen(). One copy unsharded settles it: if it fails
         * alone too, that is the program's own failure, with its status. */
        if (!sup.fallback) {
            sup.fallback = "workers_failed";
            snprintf(sup.fallback_why, sizeof sup.fallback_why,
                     "worker %d/%d ended with %s %.1f s after the workers started (copies of "
                     "the program may share a pid file, a lock or a runtime directory, or "
                     "check a pid recorded before listen())",
                     i, sup.plan->nslots, how, (double)(now - sup.start_ms) / 1000);
        }
        s->state = SLOT_DONE;
        return;
    }
    if (now - s->started_ms >= HEALTHY_AFTER_MS)
        s->fails = 0;
    s->fails++;
    if (s->fails >= CRASH_LOOP_MAX) {
        ks_log_error("worker %d/%d (pid %d) ended with %s, %d failures in a row: "
                     "crash loop, not respawning it",
                     i, sup.plan->nslots, (int)pid, how, s->fails);
        slot_done(s, i);
        s->gave_up = true;
        ks_count(KS_C_W_GAVE_UP, 1);
        return;
    }
    int64_t delay = BACKOFF_FIRST_MS << (s->fails - 1);
    if (delay > BACKOFF_MAX_MS)
        delay = BACKOFF_MAX_MS;
    ks_log_info("worker %d/%d (pid %d) ended with %s; respawning in %lld ms", i, sup.plan->nslots,
                (int)pid, how, (long long)delay);
    s->state = SLOT_WAITING;
    s->respawn_at_ms = now + delay;
}

/* A process of the rolling restart ended: returns true if pid was one. */
static bool reload_reaped(pid_t pid, int status)
{
    char how[32];
    describe(status, how, sizeof how);
    if (pid == rl.new_pid) {
        ks_log_error("KTLSSHIM_RELOAD: the new worker %d/%d (pid %d) ended with %s before it "
                     "served; the old one (pid %d) keeps serving; rolling restart stopped",
                     rl.slot, sup.plan->nslots, (int)pid, how, (int)sup.slots[rl.slot].pid);
        ks_stats_write_for(rl.new_rec, how);
        ks_stats_release(rl.new_rec);
        rl.new_pid = 0;
        rl.active = false;
        return true;
    }
    if (pid == rl.old_pid) {
        ks_log_debug("KTLSSHIM_RELOAD: old worker %d/%d (pid %d) ended with %s", rl.slot,
                     sup.plan->nslots, (int)pid, how);
        ks_stats_write_for(rl.old_rec, how);
        ks_stats_release(rl.old_rec);
        rl.old_pid = 0;
        rl.slot++;
        return true;
    }
    if (pid == rl.abandoned_pid) {
        ks_stats_write_for(rl.abandoned_rec, how);
        ks_stats_release(rl.abandoned_rec);
        rl.abandoned_pid = 0;
        return true;
    }
    return false;
}

static void reap(void)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        if (reload_reaped(pid, status))
            continue;
        for (int i = 0; i < sup.plan->nslots; i++)
            if (sup.slots[i].pid == pid && sup.slots[i].state == SLOT_RUNNING)
                worker_ended(&sup.slots[i], i, status);
    }
}

static void start_reload(void)
{
    if (sup.stopping)
        return;
    if (rl.active) {
        ks_log_info("KTLSSHIM_RELOAD: a rolling restart is already under way (slot %d/%d); "
                    "this signal is ignored",
                    rl.slot, sup.plan->nslots);
        return;
    }
    rl.active = true;
    rl.slot = 0;
    rl.replaced = 0;
    ks_log_info("KTLSSHIM_RELOAD: rolling restart of %d workers, one at a time", sup.plan->nslots);
}

/* The processes of a rolling restart that are not a slot's current worker. */
static void signal_reload_pids(int sig)
{
    if (rl.new_pid > 0)
        kill(rl.new_pid, sig);
    if (rl.old_pid > 0)
        kill(rl.old_pid, sig);
    if (rl.abandoned_pid > 0)
        kill(rl.abandoned_pid, SIGKILL);
}

static void forward(int sig, const siginfo_t *info)
{
    if (sup.exec && sig == ks_config()->reload_signal) {
        start_reload();
        return;
    }
    if (sig == SIGTERM || sig == SIGINT || sig == SIGQUIT) {
        begin_stop();
        rl.active = false;
        signal_reload_pids(sig);
    }
    /* A terminal's ^C or ^\ reaches the whole foreground process group, the
     * workers included: forwarding it would deliver it twice. */
    bool from_tty = info->si_code == SI_KERNEL;
    for (int i = 0; i < sup.plan->nslots; i++) {
        struct slot *s = &sup.slots[i];
        if (s->state == SLOT_RUNNING) {
            s->forwarded = sig;
            if (!from_tty)
                kill(s->pid, sig);
        } else if (s->state == SLOT_WAITING && sup.stopping) {
            slot_done(s, i);
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
    for (int i = 0; i < sup.plan->nslots; i++) {
        int st = sup.slots[i].last_status;
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

/* The supervisor's children (workers, and what it adopted as subreaper),
 * from /proc/self/task/<pid>/children; -1 if that file cannot be read. */
static int list_children(pid_t *out, int max)
{
    char path[64], buf[8192];
    snprintf(path, sizeof path, "/proc/self/task/%d/children", (int)sup.self);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = ks_libc()->read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n < 0)
        return -1;
    buf[n] = '\0';
    int k = 0;
    for (char *p = buf; *p && k < max;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p)
            break;
        out[k++] = (pid_t)v;
        p = end;
    }
    return k;
}

static bool is_worker_pid(pid_t pid)
{
    for (int i = 0; i < sup.plan->nslots; i++)
        if (sup.slots[i].pid == pid && sup.slots[i].state == SLOT_RUNNING)
            return true;
    return false;
}

/* Children that are not workers: a worker's children that outlived it. */
static bool have_adopted(void)
{
    pid_t kids[256];
    int n = list_children(kids, 256);
    for (int k = 0; k < n; k++)
        if (!is_worker_pid(kids[k]))
            return true;
    return false;
}

/* Slot 0's listeners, kept across the unsharded exec (daemonize.c) so that
 * connections queued on them meanwhile are served by the program again. */
static int slot0_listeners(struct ks_held_fd *out, int max)
{
    int k = 0;
    if (sup.exec) {
        int fds[KS_MAX_REPLICATED];
        int n = ks_exec_slot_listeners(0, fds, KS_MAX_REPLICATED);
        for (int j = 0; j < n && k < max; j++)
            out[k++] = (struct ks_held_fd){fds[j], true};
        return k;
    }
    for (int t = 0; t < sup.plan->nsock && k < max; t++) {
        int fd = *ks_plan_fd(sup.plan, 0, t), acc = 0;
        socklen_t l = sizeof acc;
        if (fd >= 0 && getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &l) == 0 && acc)
            out[k++] = (struct ks_held_fd){fd, ks_shard_reuseport_ours(sup.plan->sock[t].fd)};
    }
    return k;
}

/* Every new connection to slot 0's listeners (the group's first socket). */
static void attach_slot0(void)
{
    struct sock_filter code[] = {BPF_STMT(BPF_RET | BPF_K, 0)};
    struct sock_fprog prog = {.len = 1, .filter = code};
    for (int t = 0; t < sup.plan->nsock; t++) {
        int fd = *ks_plan_fd(sup.plan, 0, t);
        if (fd >= 0 && sup.plan->sock[t].listener &&
            setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof prog) != 0)
            ks_log_debug("cannot steer connections to slot 0: %s", strerror(errno));
    }
}

/* The start window: a worker failing in it makes the fallback close the
 * other slots' listeners, and what is queued there would be reset (a dead
 * worker cannot drain it). So until the window has passed, every new
 * connection goes to slot 0's listener (steered so in fork mode before the
 * other slots listen, shard.c), which the fallback keeps; after it, they
 * spread over the workers again. */
static void start_window_end(void)
{
    sup.window_steered = false;
    for (int t = 0; t < sup.plan->nsock; t++) {
        int fd = *ks_plan_fd(sup.plan, 0, t);
        if (fd >= 0 && sup.plan->sock[t].listener)
            ks_shard_spread(fd);
    }
    ks_log_debug("start window passed: connections spread over the workers");
}

/* Fork mode, before a fallback stops the workers: new connections all go to
 * slot 0's listeners (a reuseport program that picks the group's first
 * socket, slot 0's: it listened first), which are kept across the exec;
 * the other slots' workers, still running, drain their queues (one second
 * at most: tcpi_unacked is a listener's queue length) before they are
 * stopped and their listeners closed. A slot whose worker is dead cannot
 * drain: what is queued there is lost when it closes, unless
 * net.ipv4.tcp_migrate_req=1 moves it to slot 0's. */
static void steer_to_slot0(void)
{
    if (sup.exec)
        return;
    attach_slot0();
    int64_t until = now_ms() + 1000;
    for (;;) {
        bool queued = false;
        for (int i = 1; i < sup.plan->nslots && !queued; i++) {
            if (sup.slots[i].state != SLOT_RUNNING)
                continue;
            for (int t = 0; t < sup.plan->nsock && !queued; t++) {
                int fd = *ks_plan_fd(sup.plan, i, t);
                struct tcp_info ti;
                socklen_t l = sizeof ti;
                if (fd >= 0 && getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l) == 0 &&
                    ti.tcpi_state == TCP_LISTEN && ti.tcpi_unacked > 0)
                    queued = true;
            }
        }
        if (!queued || now_ms() >= until)
            return;
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
    }
}

/* Stop every process of the group (each is ours: a worker, or adopted once
 * its worker exited): with `term_ms`, SIGTERM to the workers first and that
 * long for the group to end, then SIGKILL to what is left; close every
 * socket but slot 0's listeners, and exec the program again without
 * sharding, so that the user's command does what it does without the
 * library. `token` goes to the new image's stats record. */
static void restart_unsharded(const char *token, int64_t term_ms)
{
    sup.stopping = true;
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    if (term_ms > 0)
        for (int i = 0; i < sup.plan->nslots; i++)
            if (sup.slots[i].pid > 0 && sup.slots[i].state == SLOT_RUNNING)
                kill(sup.slots[i].pid, SIGTERM);
    int64_t term_until = now_ms() + term_ms, until = now_ms() + term_ms + 10000;
    for (;;) {
        pid_t kids[256];
        bool terming = now_ms() < term_until;
        int n = terming ? 0 : list_children(kids, 256);
        for (int k = 0; k < n; k++)
            kill(kids[k], SIGKILL); /* our children: unreaped, so never a reused pid */
        if (n < 0) {
            /* No children file (CONFIG_PROC_CHILDREN off): the workers, and
             * the setsid() callers that are our children now, with their
             * process groups (a daemon's own workers). */
            for (int i = 0; i < sup.plan->nslots; i++)
                if (sup.slots[i].pid > 0)
                    kill(sup.slots[i].pid, SIGKILL);
            n = ks_daemon_reported(kids, 256);
            for (int k = 0; k < n; k++)
                if (ks_daemon_parent_of(kids[k]) == sup.self) /* alive: its group too */
                    kill(getpgid(kids[k]) == kids[k] ? -kids[k] : kids[k], SIGKILL);
        }
        int status;
        pid_t pid;
        while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
            for (int i = 0; i < sup.plan->nslots; i++)
                if (sup.slots[i].pid == pid)
                    sup.slots[i].pid = 0;
        if (pid < 0 && errno == ECHILD)
            break;
        if (now_ms() > until) {
            ks_log_error("processes of the group are still running after 10 s; starting "
                         "the program again anyway");
            break;
        }
        struct timespec ts = {0, 20 * 1000000};
        sigtimedwait(&chld, NULL, &ts);
    }
    for (int i = 1; i < sup.plan->nslots; i++)
        close_slot_sockets(i);
    struct ks_held_fd keep[KS_MAX_REPLICATED];
    int nkeep = slot0_listeners(keep, KS_MAX_REPLICATED);
    ks_daemon_reexec_unsharded(&sup.app_mask, sup.app_chld.sa_handler == SIG_IGN, token, keep,
                               nkeep);
    ks_exit_as_program(1); /* it said why */
}

/* The program daemonized in its workers. */
static void restart_daemonized(void)
{
    ks_log_error("KTLSSHIM_SHARDS=%d: not sharding: the program daemonized (fork and setsid() "
                 "in a worker), which would leave %d copies that nobody supervises; stopping "
                 "them and starting it again unsharded. To shard it, run it in the foreground "
                 "(nginx: \"daemon off;\", Apache: -DFOREGROUND, redis: --daemonize no)",
                 sup.plan->nslots, sup.plan->nslots);
    restart_unsharded("daemonized", 0);
}

/* Sharding itself made the program fail (or would): the one line, then one
 * copy unsharded, the workers given SIGTERM first (a server's clean stop
 * leaves no stale pid or lock file for its successor). */
static void fall_back(void)
{
    ks_log_error("KTLSSHIM_SHARDS=%d: not sharding: %s; stopping the workers and starting the "
                 "program again unsharded",
                 sup.plan->nslots, sup.fallback_why);
    steer_to_slot0();
    restart_unsharded(sup.fallback, FALLBACK_TERM_MS);
}

/* Children of the workers that ended right after checking their parent's
 * pid (daemonize.c): the program compares getppid() with a pid it recorded
 * before listen(), which fork mode changed. */
static void check_parent_checks(void)
{
    pid_t last = 0;
    unsigned n = ks_daemon_parent_checks(&last);
    if (n < PARENT_CHECKS_MAX || sup.fallback)
        return;
    sup.fallback = "parent_pid_check";
    snprintf(sup.fallback_why, sizeof sup.fallback_why,
             "%u processes the workers forked ended within 5 s of asking their parent's "
             "pid (getppid(), the last pid %d) while that parent ran: the program compares it "
             "with a pid it recorded before listen(), which is not the worker's in fork mode",
             n, (int)last);
}

/* KTLSSHIM_STOP_TIMEOUT: a stop must end. */
static void kill_if_stop_overdue(int64_t now)
{
    if (!sup.stopping || sup.stop_killed || now < sup.stop_deadline_ms)
        return;
    sup.stop_killed = true;
    signal_reload_pids(SIGKILL);
    for (int i = 0; i < sup.plan->nslots; i++) {
        struct slot *s = &sup.slots[i];
        if (s->state != SLOT_RUNNING)
            continue;
        ks_log_error("worker %d/%d (pid %d) still running %d s after the stop signal "
                     "(KTLSSHIM_STOP_TIMEOUT): sending SIGKILL",
                     i, sup.plan->nslots, (int)s->pid, ks_config()->stop_timeout);
        s->forwarded = SIGKILL;
        kill(s->pid, SIGKILL);
    }
}

static int64_t next_deadline(bool *any_alive)
{
    int64_t next = -1;
    *any_alive = rl.new_pid > 0 || rl.old_pid > 0 || rl.abandoned_pid > 0;
    if (rl.active)
        next = now_ms() + 100; /* the rolling restart's steps are checked this often */
    for (int i = 0; i < sup.plan->nslots; i++) {
        struct slot *s = &sup.slots[i];
        if (s->state != SLOT_DONE)
            *any_alive = true;
        if (s->state == SLOT_WAITING && (next < 0 || s->respawn_at_ms < next))
            next = s->respawn_at_ms;
    }
    return next;
}

/* The rolling restart's next step: start the new worker of the current
 * slot; once it has reported its listeners, ask the old one to stop
 * (KTLSSHIM_GRACEFUL_SIGNAL, SIGKILL after KTLSSHIM_STOP_TIMEOUT); once the
 * old one is gone, the next slot. */
static void step_reload(int64_t now)
{
    const struct ks_config *cfg = ks_config();
    int n = sup.plan->nslots;
    if (!rl.active || sup.stopping)
        return;
    if (rl.old_pid > 0) {
        if (!rl.old_killed && now >= rl.old_deadline_ms) {
            ks_log_error("KTLSSHIM_RELOAD: old worker %d/%d (pid %d) still running %d s after "
                         "signal %d (KTLSSHIM_STOP_TIMEOUT): sending SIGKILL",
                         rl.slot, n, (int)rl.old_pid, cfg->stop_timeout, cfg->graceful_signal);
            kill(rl.old_pid, SIGKILL);
            rl.old_killed = true;
        }
        return;
    }
    struct slot *s = &sup.slots[rl.slot < n ? rl.slot : 0];
    if (rl.new_pid > 0) {
        if (ks_exec_reported(rl.new_pid) >= rl.need && s->state != SLOT_RUNNING) {
            /* the old one ended meanwhile (and is being respawned): the new
             * one is the slot's worker now */
            s->pid = rl.new_pid;
            s->rec = rl.new_rec;
            s->state = SLOT_RUNNING;
            s->started_ms = now;
            s->forwarded = 0;
            rl.new_pid = 0;
            rl.replaced++;
            rl.slot++;
            ks_count(KS_C_W_RELOADED, 1);
        } else if (ks_exec_reported(rl.new_pid) >= rl.need) {
            rl.old_pid = s->pid;
            rl.old_rec = s->rec;
            rl.old_killed = false;
            rl.old_deadline_ms = now + (int64_t)cfg->stop_timeout * 1000;
            s->pid = rl.new_pid;
            s->rec = rl.new_rec;
            s->started_ms = now;
            s->fails = 0;
            s->forwarded = 0;
            rl.new_pid = 0;
            rl.replaced++;
            ks_count(KS_C_W_RELOADED, 1);
            ks_log_debug("KTLSSHIM_RELOAD: worker %d/%d pid %d serves; asking pid %d to stop",
                         rl.slot, n, (int)s->pid, (int)rl.old_pid);
            kill(rl.old_pid, cfg->graceful_signal);
        } else if (now >= rl.ready_deadline_ms) {
            ks_log_error("KTLSSHIM_RELOAD: the new worker %d/%d (pid %d) did not report its "
                         "listeners within %d s; killing it, the old one (pid %d) keeps "
                         "serving; rolling restart stopped",
                         rl.slot, n, (int)rl.new_pid, cfg->stop_timeout, (int)s->pid);
            kill(rl.new_pid, SIGKILL);
            rl.abandoned_pid = rl.new_pid;
            rl.abandoned_rec = rl.new_rec;
            rl.new_pid = 0;
            rl.active = false;
        }
        return;
    }
    while (rl.slot < n && sup.slots[rl.slot].state != SLOT_RUNNING)
        rl.slot++;
    if (rl.slot >= n) {
        ks_log_info("KTLSSHIM_RELOAD: rolling restart done, %d workers replaced", rl.replaced);
        rl.active = false;
        return;
    }
    int rec = ks_stats_claim(KS_ROLE_WORKER, rl.slot);
    pid_t pid = start_incarnation(rl.slot, rec);
    if (pid <= 0) { /* never 0: exec mode's child does not return */
        ks_stats_release(rec);
        ks_log_error("KTLSSHIM_RELOAD: cannot start a new worker %d/%d; rolling restart stopped",
                     rl.slot, n);
        rl.active = false;
        return;
    }
    rl.new_pid = pid;
    rl.new_rec = rec;
    rl.need = ks_exec_held_count(rl.slot) > 0 ? ks_exec_held_count(rl.slot) : 1;
    rl.ready_deadline_ms = now + (int64_t)cfg->stop_timeout * 1000;
}

/* Waits for a signal (its number, with info) or for wait_ms; exec mode also
 * serves the workers' control sockets meanwhile (returns 0 then). */
static int wait_event(const sigset_t *set, siginfo_t *info, int64_t wait_ms)
{
    if (!sup.exec) {
        struct timespec ts = {wait_ms / 1000, (wait_ms % 1000) * 1000000};
        return sigtimedwait(set, info, &ts);
    }
    static struct pollfd pfd[1 + 2 * KS_MAX_SHARDS + 64];
    pfd[0] = (struct pollfd){.fd = sup.sigfd, .events = POLLIN};
    int n = 1 + ks_exec_poll_fds(pfd + 1, (int)KS_ARRAY_LEN(pfd) - 1);
    int r = poll(pfd, (nfds_t)n, wait_ms > INT_MAX ? INT_MAX : (int)wait_ms);
    if (r <= 0)
        return 0;
    for (int k = 1; k < n; k++)
        if (pfd[k].revents)
            ks_exec_handle(pfd[k].fd);
    struct signalfd_siginfo si;
    if ((pfd[0].revents & POLLIN) &&
        ks_libc()->read(sup.sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
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
    static struct slot slots[KS_MAX_SHARDS];
    sup.plan = plan;
    sup.slots = slots;
    sup.self = getpid();
    sup.exec = plan->exec_mode;
    sup.sigfd = -1;

    sigset_t wait_set;
    sigemptyset(&wait_set);
    for (size_t k = 0; k < KS_ARRAY_LEN(forwarded_signals); k++)
        sigaddset(&wait_set, forwarded_signals[k]);
    if (sup.exec && ks_config()->reload_signal)
        sigaddset(&wait_set, ks_config()->reload_signal);
    sigaddset(&wait_set, SIGCHLD);
    /* Everything is blocked in the supervisor: the program's own handlers
     * (an alarm() it set, say) must never run here. What is not waited for
     * stays pending, harmlessly. */
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, &sup.app_mask);
    /* The supervisor must see its workers' exit statuses even if the program
     * had set SIGCHLD to SIG_IGN (auto-reap). Workers get the program's. */
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    ks_sig_program_action(SIGCHLD, &dfl, &sup.app_chld);
    if (sup.exec) {
        /* A signal ignored (nohup's HUP) would be dropped before it could be
         * waited for: the supervisor takes it; exec'd workers get it ignored
         * again, as the program had it. */
        for (int sig = 1; sig < NSIG; sig++) {
            struct sigaction old;
            if (sig != SIGCHLD && sigismember(&wait_set, sig) == 1 &&
                ks_sig_program_action(sig, NULL, &old) == 0 && old.sa_handler == SIG_IGN) {
                sup.ignored_at_start[sig] = true;
                ks_sig_program_action(sig, &dfl, NULL);
            }
        }
        sup.sigfd = signalfd(-1, &wait_set, SFD_CLOEXEC | SFD_NONBLOCK);
        if (sup.sigfd < 0) {
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
    if (!ks_daemon_watch_prepare(sup.self))
        ks_log_error("no shared memory to watch for daemonization: %s", strerror(errno));

    sup.start_ms = now_ms();
    sup.window_steered = !sup.exec;
    for (int i = 0; i < plan->nslots; i++)
        if (spawn(i))
            return; /* in the new worker */

    int64_t all_done_ms = -1;
    for (;;) {
        if (!sup.stopping && ks_daemon_detected(sup.exited0, sup.nexited0, sup.self, have_adopted))
            restart_daemonized();
        if (!sup.stopping && !sup.exec)
            check_parent_checks();
        if (!sup.stopping && sup.fallback)
            fall_back();
        bool alive;
        int64_t next = next_deadline(&alive);
        if (!alive) {
            /* Every worker has ended. If one left a child behind after
             * exiting 0, it may be daemonizing with its setsid() not seen
             * yet: give it a moment to say so. */
            int64_t t = now_ms();
            if (all_done_ms < 0)
                all_done_ms = t;
            if (sup.nexited0 == 0 || t - all_done_ms >= DAEMON_GRACE_MS || !have_adopted())
                finish();
            next = t + 50;
        }
        if (sup.stopping && !sup.stop_killed && (next < 0 || sup.stop_deadline_ms < next))
            next = sup.stop_deadline_ms;
        int64_t window_end = sup.start_ms + START_WINDOW_MS;
        bool window_open = sup.window_steered && !sup.fallback && !sup.stopping;
        if (window_open && (next < 0 || window_end < next))
            next = window_end;
        int64_t rot = ks_shard_client.next_duty_ms ? ks_shard_client.next_duty_ms() : -1;
        if (rot >= 0 && (next < 0 || rot < next))
            next = rot;
        int64_t wait_ms = next < 0 ? 60000 : next - now_ms();
        if (wait_ms < 0)
            wait_ms = 0;
        siginfo_t info;
        int sig = wait_event(&wait_set, &info, wait_ms);
        if (sig == SIGCHLD)
            reap();
        else if (sig > 0)
            forward(sig, &info);
        int64_t now = now_ms();
        if (window_open && now >= window_end)
            start_window_end();
        kill_if_stop_overdue(now);
        step_reload(now);
        if (ks_shard_client.duty)
            ks_shard_client.duty(now);
        for (int i = 0; i < plan->nslots; i++) {
            struct slot *s = &slots[i];
            if (s->state == SLOT_WAITING && s->respawn_at_ms <= now && !sup.stopping) {
                ks_count(KS_C_W_RESPAWNED, 1);
                if (spawn(i))
                    return; /* in the respawned worker */
            }
        }
    }
}
