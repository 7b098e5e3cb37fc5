/* sigcatch.c — a record even when a signal ends the process.
 *
 * Servers are usually stopped with SIGTERM or SIGINT, and many leave them at
 * their default action: the process dies without running a destructor, so
 * the library would write nothing. Once a process is active (stats.c says
 * so: it has something to write), each signal below that the program left at
 * SIG_DFL gets our handler, which writes the record with async-signal-safe
 * code, puts the default action back, unblocks the signal and raises it
 * again: the process dies of it exactly as it would have, exit status and
 * core dump included.
 *
 * The program must not be able to tell. Every way it reads or sets a
 * disposition (sigaction, signal, bsd_signal, ssignal, sysv_signal, sigset,
 * siginterrupt) goes through the hooks here: for a signal we caught, it sees
 * the struct sigaction the kernel held when we took over (its SIG_DFL, with
 * its own flags and mask, as the kernel reported them), and whatever it sets
 * replaces our handler; a SIG_DFL it sets later is caught again. Blocked
 * signals (sigwait, signalfd users) stay pending as with SIG_DFL and are
 * consumed by the program: the handler never runs for them. Crash signals
 * (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT) are not caught: after a crash,
 * the program's state cannot be trusted, and a handler there could hang.
 *
 * A vfork() child shares our memory: the hooks pass straight through there.
 * The state is changed under a lock taken with every signal blocked, so a
 * program handler that calls sigaction() cannot deadlock against it. */
#include "stats/sigcatch.h"
#include "core/libc.h"
#include "stats/stats.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Signals whose default action ends the process and that are sent to stop
 * or signal a server, or end it on a resource limit. */
static const int caught_signals[] = {SIGHUP,  SIGINT,  SIGQUIT, SIGTERM, SIGUSR1,
                                     SIGUSR2, SIGALRM, SIGPIPE, SIGXCPU, SIGXFSZ};

static struct sigaction program_view[NSIG]; /* what the program set, for caught ones */
static bool caught[NSIG];                   /* our handler is installed */
static bool catching;                       /* the process is active */
/* The lock: a word taken with every signal blocked, held only around a few
 * sigaction calls (never a fork). Fork handling (init.c registers it): the
 * forking thread takes it before fork, as any holder would, so a fork
 * while another thread holds it waits for that thread to finish, and both
 * sides let it go after, the child with the guarded state whole. Between
 * the two, fork handlers that run in the forking thread (other libraries'
 * or the program's, calling sigaction) find it theirs (held_across_fork),
 * rather than waiting for themselves. */
static int lock_word;
static __thread bool held_across_fork __attribute__((tls_model("initial-exec")));
static sigset_t fork_mask; /* the forking thread's mask; under the lock */

struct held {
    sigset_t mask; /* the caller's, restored at unlock */
    bool nested;   /* the thread holds the lock across a fork already */
};

static bool is_ours_to_catch(int sig)
{
    for (size_t i = 0; i < KS_ARRAY_LEN(caught_signals); i++)
        if (caught_signals[i] == sig)
            return true;
    return false;
}

static bool in_vfork_child(void)
{
    return getpid() != ks_self_pid;
}

static void lock(struct held *h)
{
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &h->mask);
    h->nested = held_across_fork;
    if (h->nested)
        return;
    while (__atomic_exchange_n(&lock_word, 1, __ATOMIC_ACQUIRE))
        sched_yield();
}

static void unlock(const struct held *h)
{
    if (!h->nested)
        __atomic_store_n(&lock_word, 0, __ATOMIC_RELEASE);
    pthread_sigmask(SIG_SETMASK, &h->mask, NULL);
}

static void on_signal(int sig, siginfo_t *info, void *uctx)
{
    (void)info;
    (void)uctx;
    int saved_errno = errno;
    ks_stats_at_signal(sig);
    /* The default action, as the program had it, and the signal again. */
    const struct ks_libc *libc = ks_libc();
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    libc->sigaction(sig, &dfl, NULL);
    if (!in_vfork_child())
        __atomic_store_n(&caught[sig], false, __ATOMIC_RELAXED);
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, sig);
    syscall(SYS_tgkill, getpid(), syscall(SYS_gettid), sig);
    pthread_sigmask(SIG_UNBLOCK, &one, NULL); /* delivered here: the process ends */
    errno = saved_errno;
}

/* Installs our handler on sig if the program's disposition is SIG_DFL.
 * Under the lock. */
static void take(int sig)
{
    const struct ks_libc *libc = ks_libc();
    struct sigaction ours, before;
    memset(&ours, 0, sizeof ours);
    ours.sa_sigaction = on_signal;
    ours.sa_flags = SA_SIGINFO | SA_RESTART;
    sigfillset(&ours.sa_mask);
    if (caught[sig] || libc->sigaction(sig, NULL, &before) != 0 || before.sa_handler != SIG_DFL)
        return;
    if (libc->sigaction(sig, &ours, &program_view[sig]) != 0)
        return;
    if (program_view[sig].sa_handler != SIG_DFL) /* changed meanwhile: put it back */
        libc->sigaction(sig, &program_view[sig], NULL);
    else
        caught[sig] = true;
}

/* Puts the program's own disposition back in the kernel. Under the lock. */
static void give_back(int sig)
{
    if (!caught[sig])
        return;
    ks_libc()->sigaction(sig, &program_view[sig], NULL);
    caught[sig] = false;
}

void ks_signals_catch(void)
{
    if (in_vfork_child())
        return;
    struct held saved;
    lock(&saved);
    catching = true;
    for (size_t i = 0; i < KS_ARRAY_LEN(caught_signals); i++)
        take(caught_signals[i]);
    unlock(&saved);
}

void ks_signals_release(void)
{
    if (in_vfork_child())
        return;
    struct held saved;
    lock(&saved);
    catching = false;
    for (size_t i = 0; i < KS_ARRAY_LEN(caught_signals); i++)
        give_back(caught_signals[i]);
    unlock(&saved);
}

void ks_signals_before_fork(void)
{
    struct held h;
    lock(&h);
    fork_mask = h.mask;
    held_across_fork = true;
}

void ks_signals_after_fork(void)
{
    sigset_t mask = fork_mask; /* before another fork's prepare can set it */
    held_across_fork = false;
    __atomic_store_n(&lock_word, 0, __ATOMIC_RELEASE);
    pthread_sigmask(SIG_SETMASK, &mask, NULL);
}

/* ---- hooks ---- */

int ks_sig_program_action(int sig, const struct sigaction *act, struct sigaction *old)
{
    const struct ks_libc *libc = ks_libc();
    if (sig <= 0 || sig >= NSIG || !is_ours_to_catch(sig) || in_vfork_child())
        return libc->sigaction(sig, act, old);
    struct held saved;
    lock(&saved);
    int r;
    if (caught[sig]) {
        struct sigaction view = program_view[sig];
        r = 0;
        if (act) {
            /* The program's new disposition goes to the kernel as it gave
             * it (so that it reads back exactly as without us); a SIG_DFL
             * is caught again just after. */
            r = libc->sigaction(sig, act, NULL);
            if (r == 0) {
                caught[sig] = false;
                if (catching)
                    take(sig);
            } else {
                int e = errno;
                unlock(&saved);
                errno = e;
                return r;
            }
        }
        if (old)
            *old = view;
    } else {
        r = libc->sigaction(sig, act, old);
        int e = errno;
        if (r == 0 && act && catching)
            take(sig);
        errno = e;
    }
    int e = errno;
    unlock(&saved);
    errno = e;
    return r;
}

/* The signal()-like calls: glibc implements them with its internal
 * sigaction, below our hook, so each is called with the program's own
 * disposition in the kernel, and what it leaves there is caught again if it
 * is SIG_DFL. */
static ks_sighandler_t with_program_view(int sig, ks_sighandler_t h,
                                         ks_sighandler_t (*real)(int, ks_sighandler_t))
{
    if (sig <= 0 || sig >= NSIG || !is_ours_to_catch(sig) || in_vfork_child())
        return real(sig, h);
    struct held saved;
    lock(&saved);
    give_back(sig);
    ks_sighandler_t r = real(sig, h);
    int e = errno;
    if (catching)
        take(sig);
    unlock(&saved);
    errno = e;
    return r;
}

KS_EXPORT int sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
    return ks_sig_program_action(sig, act, old);
}

ks_sighandler_t ks_sig_program_signal(int sig, ks_sighandler_t h)
{
    return with_program_view(sig, h, ks_libc()->signal);
}

KS_EXPORT ks_sighandler_t signal(int sig, ks_sighandler_t h)
{
    return ks_sig_program_signal(sig, h);
}

KS_EXPORT ks_sighandler_t bsd_signal(int sig, ks_sighandler_t h)
{
    return with_program_view(sig, h, ks_libc()->bsd_signal);
}

KS_EXPORT ks_sighandler_t ssignal(int sig, ks_sighandler_t h)
{
    return with_program_view(sig, h, ks_libc()->ssignal);
}

KS_EXPORT ks_sighandler_t sysv_signal(int sig, ks_sighandler_t h)
{
    return with_program_view(sig, h, ks_libc()->sysv_signal);
}

KS_EXPORT ks_sighandler_t sigset(int sig, ks_sighandler_t h)
{
    return with_program_view(sig, h, ks_libc()->sigset);
}

KS_EXPORT int siginterrupt(int sig, int flag)
{
    const struct ks_libc *libc = ks_libc();
    if (sig <= 0 || sig >= NSIG || !is_ours_to_catch(sig) || in_vfork_child())
        return libc->siginterrupt(sig, flag);
    struct held saved;
    lock(&saved);
    give_back(sig);
    int r = libc->siginterrupt(sig, flag);
    int e = errno;
    if (catching)
        take(sig);
    unlock(&saved);
    errno = e;
    return r;
}
