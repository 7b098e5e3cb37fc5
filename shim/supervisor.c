/* supervisor.c — the process that called listen() becomes the supervisor:
 * it forks the workers, keeps every worker's sockets open (so connections
 * queued on a worker that dies wait for its successor), respawns workers
 * that crash (with backoff, giving up on a crash loop), forwards the usual
 * control signals, writes the summed stats and exits with a status that
 * reflects the workers'. It never returns into the program.
 *
 * Signals are taken synchronously (blocked, then sigtimedwait), so nothing
 * runs in signal context. Workers get PR_SET_PDEATHSIG and check getppid(),
 * so they never outlive the supervisor. */
#include "shard.h"
#include "config.h"
#include "log.h"
#include "resume.h"
#include "stats.h"

#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CRASH_LOOP_MAX 5        /* failures in a row before giving up */
#define HEALTHY_AFTER_MS 10000  /* a worker that ran this long resets its count */
#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS 5000

bool ks_supervisor_forking;

enum slot_state { SLOT_RUNNING, SLOT_WAITING, SLOT_DONE };

struct slot {
    pid_t pid;
    int rec;              /* stats record of the current incarnation */
    int state;
    int fails;            /* failures in a row */
    int64_t started_ms, respawn_at_ms;
    int last_status;      /* wait status of the last incarnation */
    int forwarded;        /* last signal forwarded to it, 0 if none */
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
} sup;

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
    if (clean || asked || sup.stopping) {
        s->state = SLOT_DONE;
        return;
    }
    int64_t now = now_ms();
    if (now - s->started_ms >= HEALTHY_AFTER_MS)
        s->fails = 0;
    s->fails++;
    if (s->fails >= CRASH_LOOP_MAX) {
        ks_log_error("worker %d/%d (pid %d) ended with %s, %d failures in a row: "
                     "crash loop, not respawning it", i, sup.plan->nslots, (int)pid, how,
                     s->fails);
        s->state = SLOT_DONE;
        s->gave_up = true;
        ks_count(KS_C_W_GAVE_UP, 1);
        return;
    }
    int64_t delay = BACKOFF_FIRST_MS << (s->fails - 1);
    if (delay > BACKOFF_MAX_MS)
        delay = BACKOFF_MAX_MS;
    ks_log_info("worker %d/%d (pid %d) ended with %s; respawning in %lld ms", i,
                sup.plan->nslots, (int)pid, how, (long long)delay);
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
        sup.stopping = true;
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
            s->state = SLOT_DONE;
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

    for (int i = 0; i < plan->nslots; i++)
        if (spawn(i))
            return; /* in the new worker */

    for (;;) {
        bool alive;
        int64_t next = next_deadline(&alive);
        if (!alive)
            finish();
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
