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
#include "shard.h"
#include "config.h"
#include "daemonize.h"
#include "log.h"
#include "resume.h"
#include "stats.h"

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
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
} sup;

/* Closes the sockets the supervisor holds for slot i: once no worker will
 * serve it, its listener must leave the reuseport group, or the kernel keeps
 * giving it connections that nobody accepts. */
static void close_slot_sockets(int i)
{
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

/* Forks the worker of slot i. Returns 0 in the supervisor, 1 in the child. */
static int spawn(int i)
{
    struct slot *s = &sup.slots[i];
    int rec = ks_stats_claim(KS_ROLE_WORKER, i);
    ks_supervisor_forking = true;
    pid_t pid = fork();
    ks_supervisor_forking = false;
    if (pid < 0) {
        ks_log_error("worker %d/%d: fork failed: %s; retrying", i, sup.plan->nslots,
                     strerror(errno));
        s->state = SLOT_WAITING;
        s->respawn_at_ms = now_ms() + BACKOFF_MAX_MS;
        return 0;
    }
    if (pid == 0) {
        ks_stats_adopt(rec, getpid());
        if (ks_config()->pin) {
            cpu_set_t one;
            CPU_ZERO(&one);
            CPU_SET(ks_shard_pin_cpu(i), &one);
            if (sched_setaffinity(0, sizeof one, &one) != 0)
                ks_log_error("worker %d: cannot pin to CPU %d: %s", i, ks_shard_pin_cpu(i),
                             strerror(errno));
        }
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != sup.self)
            _exit(0); /* the supervisor is already gone */
        char v[32];
        snprintf(v, sizeof v, "%d/%d", i, sup.plan->nslots);
        setenv("KTLSSHIM_WORKER", v, 1);
        ks_plan_enter_worker(sup.plan, i);
        ks_ossl_worker_started();
        sigaction(SIGCHLD, &sup.app_chld, NULL);
        sigprocmask(SIG_SETMASK, &sup.app_mask, NULL);
        return 1;
    }
    s->pid = pid;
    s->rec = rec;
    s->state = SLOT_RUNNING;
    s->started_ms = now_ms();
    s->forwarded = 0;
    ks_count(KS_C_W_STARTED, 1);
    ks_log_debug("worker %d/%d started, pid %d", i, sup.plan->nslots, (int)pid);
    return 0;
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

static void reap(void)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (int i = 0; i < sup.plan->nslots; i++)
            if (sup.slots[i].pid == pid && sup.slots[i].state == SLOT_RUNNING)
                worker_ended(&sup.slots[i], i, status);
    }
}

static void forward(int sig, const siginfo_t *info)
{
    if (sig == SIGTERM || sig == SIGINT || sig == SIGQUIT)
        begin_stop();
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
        _exit(code);
    if (sig && same_sig) {
        signal(sig, SIG_DFL);
        sigset_t one;
        sigemptyset(&one);
        sigaddset(&one, sig);
        sigprocmask(SIG_UNBLOCK, &one, NULL);
        kill(getpid(), sig);
    }
    _exit(sig ? 128 + sig : 0);
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
    ssize_t n = read(fd, buf, sizeof buf - 1);
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

/* The program daemonized in its workers. Stop every process of the group
 * (each is ours: a worker, or adopted once its worker exited), close every
 * socket, and exec the program again without sharding, so that the user's
 * command does what it does without the library. */
static void restart_unsharded(void)
{
    ks_log_error("KTLSSHIM_SHARDS=%d: not sharding: the program daemonized (fork and setsid() "
                 "in a worker), which would leave %d copies that nobody supervises; stopping "
                 "them and starting it again unsharded. To shard it, run it in the foreground "
                 "(nginx: \"daemon off;\", Apache: -DFOREGROUND, redis: --daemonize no)",
                 sup.plan->nslots, sup.plan->nslots);
    sup.stopping = true;
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    int64_t until = now_ms() + 10000;
    for (;;) {
        pid_t kids[256];
        int n = list_children(kids, 256);
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
    for (int i = 0; i < sup.plan->nslots; i++)
        close_slot_sockets(i);
    ks_daemon_reexec_unsharded(&sup.app_mask, sup.app_chld.sa_handler == SIG_IGN);
    _exit(1); /* it said why */
}

/* KTLSSHIM_STOP_TIMEOUT: a stop must end. */
static void kill_if_stop_overdue(int64_t now)
{
    if (!sup.stopping || sup.stop_killed || now < sup.stop_deadline_ms)
        return;
    sup.stop_killed = true;
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
    *any_alive = false;
    for (int i = 0; i < sup.plan->nslots; i++) {
        struct slot *s = &sup.slots[i];
        if (s->state != SLOT_DONE)
            *any_alive = true;
        if (s->state == SLOT_WAITING && (next < 0 || s->respawn_at_ms < next))
            next = s->respawn_at_ms;
    }
    return next;
}

void ks_supervise(struct ks_plan *plan)
{
    static struct slot slots[KS_MAX_SHARDS];
    sup.plan = plan;
    sup.slots = slots;
    sup.self = getpid();

    sigset_t wait_set;
    sigemptyset(&wait_set);
    for (size_t k = 0; k < KS_ARRAY_LEN(forwarded_signals); k++)
        sigaddset(&wait_set, forwarded_signals[k]);
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
    sigaction(SIGCHLD, &dfl, &sup.app_chld);
    fflush(NULL); /* or buffered output would be written once per worker */
    /* Orphans of the group (a daemonizing worker's child) become ours. */
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0)
        ks_log_error("prctl(PR_SET_CHILD_SUBREAPER): %s; a daemonizing program would "
                     "escape supervision",
                     strerror(errno));
    if (!ks_daemon_watch_prepare(sup.self))
        ks_log_error("no shared memory to watch for daemonization: %s", strerror(errno));

    for (int i = 0; i < plan->nslots; i++)
        if (spawn(i))
            return; /* in the new worker */

    int64_t all_done_ms = -1;
    for (;;) {
        if (!sup.stopping && ks_daemon_detected(sup.exited0, sup.nexited0, sup.self, have_adopted))
            restart_unsharded();
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
        int64_t rot = ks_resume_next_rotation_ms();
        if (rot >= 0 && (next < 0 || rot < next))
            next = rot;
        int64_t wait_ms = next < 0 ? 60000 : next - now_ms();
        if (wait_ms < 0)
            wait_ms = 0;
        struct timespec ts = {wait_ms / 1000, (wait_ms % 1000) * 1000000};
        siginfo_t info;
        int sig = sigtimedwait(&wait_set, &info, &ts);
        if (sig == SIGCHLD)
            reap();
        else if (sig > 0)
            forward(sig, &info);
        int64_t now = now_ms();
        kill_if_stop_overdue(now);
        ks_resume_rotate_if_due(now);
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
