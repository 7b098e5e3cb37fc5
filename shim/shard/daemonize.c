/* daemonize.c — following a sharded program that daemonizes.
 *
 * A daemonizing server (nginx with its default `daemon on`, apachectl,
 * redis with daemonize yes) forks, lets the parent exit 0, and calls
 * setsid() in the child. Under sharding each worker would do that, and the
 * daemons would be reparented away from the supervisor: N unsupervised
 * copies, a pid file naming one of them. We cannot know before listen()
 * that a program will daemonize, so we watch for it: setsid() (and daemon(),
 * whose internal setsid libc does not route through us) in a worker or a
 * worker's child is reported in a shared page. The supervisor, a child
 * subreaper, sees the reporting process outlive its exited worker, stops the
 * whole group and execs the program again unsharded, after one line telling
 * the user to run it in the foreground to shard it. The user's command then
 * behaves as it does without the library: it daemonizes once, and its pid
 * file names the one daemon.
 *
 * For that exec, the library keeps what the program was started with: its
 * command line (read from /proc/self/cmdline when the library loads, before
 * a program such as nginx rewrites its argv for ps) and the set of fds it
 * inherited; every fd the program made itself is closed at exec.
 *
 * The same exec serves the supervisor's other fallback to one unsharded
 * copy (supervisor.c: workers that fail at start-up, or whose children
 * check a parent pid recorded before listen()); for it this file also
 * keeps worker 0's listeners across the exec, and watches worker children's
 * getppid() for that check (below). */
#include "shard/daemonize.h"
#include "core/config.h"
#include "shard/execmode.h"
#include "core/fds.h"
#include "core/log.h"
#include "core/libc.h"
#include "shard/shard.h"
#include "shard/startstate.h"
#include "stats/stats.h"
#include "stats/sigcatch.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define REPORTS_MAX 256

struct watch {
    pid_t supervisor;
    uint32_t pid_checks;  /* worker children that ended after a parent check */
    pid_t pid_check_last; /* the last of them */
    uint32_t n;           /* reports made (may exceed REPORTS_MAX) */
    struct {
        pid_t pid, ppid; /* the setsid() caller, its parent at the time */
    } r[REPORTS_MAX];
};

static struct watch *watch_page; /* shared; NULL when not sharded */

/* ---- the watch ---- */

bool ks_daemon_watch_prepare(pid_t supervisor)
{
    void *p =
        mmap(NULL, sizeof(struct watch), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return false;
    watch_page = p;
    watch_page->supervisor = supervisor;
    return true;
}

static void report_setsid(void)
{
    KS_SAVE_ERRNO;
    uint32_t i = __atomic_fetch_add(&watch_page->n, 1, __ATOMIC_ACQ_REL);
    if (i < REPORTS_MAX) {
        watch_page->r[i].ppid = (pid_t)syscall(SYS_getppid); /* not ours: no parent check */
        __atomic_store_n(&watch_page->r[i].pid, getpid(), __ATOMIC_RELEASE);
    }
    kill(watch_page->supervisor, SIGCHLD); /* wakes it; it reaps nothing extra */
    KS_RESTORE_ERRNO;
}

/* The system call itself (all libc's setsid() is): a child between fork()
 * and exec() (Python's subprocess with start_new_session) may call this,
 * and must not resolve symbols there (dlsym is not async-signal-safe). */
static pid_t setsid_noting(void)
{
    pid_t r = (pid_t)syscall(SYS_setsid);
    if (r >= 0 && watch_page && ks_shard_in_worker())
        report_setsid();
    else if (r >= 0 && ks_exec_is_worker())
        ks_exec_report_setsid(); /* exec mode: no shared page, the control socket */
    return r;
}

KS_EXPORT pid_t setsid(void)
{
    return setsid_noting();
}

/* glibc's daemon() calls its internal setsid, which we do not see: in a
 * worker, do what it does with our setsid(). Elsewhere it is untouched. */
KS_EXPORT int daemon(int nochdir, int noclose)
{
    if ((!watch_page && !ks_exec_is_worker()) || !ks_shard_in_worker())
        return ks_libc()->daemon(nochdir, noclose);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid > 0)
        ks_exit_as_program(0);
    if (setsid_noting() < 0)
        return -1;
    if (!nochdir && chdir("/") != 0)
        return -1;
    if (!noclose) {
        int fd = open("/dev/null", O_RDWR);
        if (fd < 0)
            return -1;
        dup2(fd, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        if (fd > 2)
            close(fd);
    }
    return 0;
}

/* ---- a parent's pid checked against the one recorded before listen() ----
 *
 * A program that notes getpid() before its first listen() and later checks
 * it from its own children (gunicorn's workers compare os.getppid() with the
 * arbiter's recorded pid, and exit when they differ) breaks under fork mode:
 * the worker that forked them is not the pid the program recorded (the
 * supervisor kept it). We cannot see the comparison, only its trace: a
 * process forked by a worker asks for its parent's pid, gets the worker's
 * (which the program never saw before listen()), and ends on its own within
 * 5 seconds while that parent still runs. Each such end is counted in the
 * shared page; the supervisor falls back on the second. */

#define PARENT_CHECK_EXIT_MS 5000

static pid_t my_worker;         /* in a fork-mode worker and its children: the worker */
static int64_t asked_parent_ms; /* atomic: when getppid() last said my_worker */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void ks_daemon_worker_started(void)
{
    my_worker = getpid();
    __atomic_store_n(&asked_parent_ms, 0, __ATOMIC_RELAXED);
}

KS_EXPORT pid_t getppid(void)
{
    pid_t r = (pid_t)syscall(SYS_getppid);
    if (my_worker > 0 && r == my_worker && watch_page)
        __atomic_store_n(&asked_parent_ms, mono_ms(), __ATOMIC_RELAXED);
    return r;
}

void ks_daemon_at_exit(void)
{
    if (my_worker <= 0 || !watch_page)
        return;
    int64_t asked = __atomic_load_n(&asked_parent_ms, __ATOMIC_RELAXED);
    if (asked == 0 || mono_ms() - asked > PARENT_CHECK_EXIT_MS)
        return;
    KS_SAVE_ERRNO;
    if ((pid_t)syscall(SYS_getppid) == my_worker && getpid() != my_worker) {
        __atomic_store_n(&asked_parent_ms, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&watch_page->pid_check_last, getpid(), __ATOMIC_RELAXED);
        __atomic_fetch_add(&watch_page->pid_checks, 1, __ATOMIC_ACQ_REL);
        kill(watch_page->supervisor, SIGCHLD); /* wakes it */
    }
    KS_RESTORE_ERRNO;
}

unsigned ks_daemon_parent_checks(pid_t *last)
{
    if (!watch_page)
        return 0;
    *last = __atomic_load_n(&watch_page->pid_check_last, __ATOMIC_RELAXED);
    return __atomic_load_n(&watch_page->pid_checks, __ATOMIC_ACQUIRE);
}

pid_t ks_daemon_parent_of(pid_t pid)
{
    char buf[512];
    const char *p = pid > 0 ? ks_proc_stat_fields((int)pid, buf, sizeof buf) : NULL;
    char st;
    int ppid;
    if (!p || sscanf(p, " %c %d", &st, &ppid) != 2 || st == 'Z')
        return -1;
    return ppid;
}

bool ks_daemon_detected(const pid_t *exited0, int n, pid_t self, bool (*have_adopted)(void))
{
    if (!watch_page)
        return false;
    uint32_t count = __atomic_load_n(&watch_page->n, __ATOMIC_ACQUIRE);
    for (uint32_t i = 0; i < count && i < REPORTS_MAX; i++) {
        pid_t pid = __atomic_load_n(&watch_page->r[i].pid, __ATOMIC_ACQUIRE);
        if (pid <= 0)
            continue;
        /* Made by a worker that then exited 0, or already orphaned when it
         * called setsid(): a daemonizing fork. A session of its own made
         * by a worker that goes on serving (or that crashed) is not. */
        pid_t made_by = watch_page->r[i].ppid;
        bool daemon_like = made_by == self;
        for (int k = 0; k < n && !daemon_like; k++)
            daemon_like = made_by == exited0[k];
        if (!daemon_like)
            continue;
        /* Still running, or gone after forking again (double fork): what it
         * left is ours now (subreaper). */
        if (ks_daemon_parent_of(pid) == self || have_adopted())
            return true;
    }
    return false;
}

int ks_daemon_reported(pid_t *out, int max)
{
    int k = 0;
    if (!watch_page)
        return 0;
    uint32_t count = __atomic_load_n(&watch_page->n, __ATOMIC_ACQUIRE);
    for (uint32_t i = 0; i < count && i < REPORTS_MAX && k < max; i++) {
        pid_t pid = __atomic_load_n(&watch_page->r[i].pid, __ATOMIC_ACQUIRE);
        if (pid > 0)
            out[k++] = pid;
    }
    return k;
}

/* An fd the program made since the library loaded gets close-on-exec. */
static void cloexec_made(int fd, void *arg)
{
    (void)arg;
    if (fd > 2 && !ks_fd_was_inherited(fd)) {
        int fl = fcntl(fd, F_GETFD);
        if (fl >= 0 && !(fl & FD_CLOEXEC))
            fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
    }
}

void ks_daemon_add_report(pid_t pid, pid_t ppid)
{
    if (!watch_page || pid <= 0)
        return;
    uint32_t i = __atomic_fetch_add(&watch_page->n, 1, __ATOMIC_ACQ_REL);
    if (i < REPORTS_MAX) {
        watch_page->r[i].ppid = ppid;
        __atomic_store_n(&watch_page->r[i].pid, pid, __ATOMIC_RELEASE);
    }
}

/* ---- the listeners kept across the unsharded exec ----
 *
 * A fallback to one unsharded copy happens while clients may be connecting:
 * slot 0's listeners (the program's own sockets) are kept open across the
 * exec, named in KTLSSHIM_EXEC_HELD=<pid>:<fd>[r],..., and the new image's
 * bind() to one of their addresses puts the kept listener at the program's
 * fd instead of binding a new socket (as an exec-mode worker takes its
 * slot's). Connections queued on it meanwhile are served. "r": the library,
 * not the program, had set SO_REUSEPORT on it; it is cleared again. Kept
 * listeners the program has not bound again by its first listen() are
 * closed then. */

#define ENV_HELD "KTLSSHIM_EXEC_HELD"
#define ENV_FALLBACK "KTLSSHIM_EXEC_FALLBACK"
#define HELD_MAX 64

static struct {
    int fd;
    bool clear_reuseport;
    bool lent; /* bound by the program with connections queued: kept for its child */
    socklen_t len;
    struct sockaddr_storage addr;
} held[HELD_MAX];
static int nheld;
static bool held_any;   /* atomic */
static bool lent_child; /* a child of the process that lent one (see lend_*) */
static void lend_prepare(void);
static void lend_parent(void);
static void lend_child(void);
static char fallback_token[32];
static pid_t fallback_pid;

/* Ours to read only if made for this very process (a child inherits the
 * environment, not the listeners' meaning). */
void ks_daemon_take_held(void)
{
    KS_SAVE_ERRNO;
    const char *v = getenv(ENV_FALLBACK);
    int pid;
    char tok[32];
    int at = 0;
    if (v && sscanf(v, "%d:%31[a-z_]:%n", &pid, tok, &at) == 2 && at > 0 && pid == getpid()) {
        memcpy(fallback_token, tok, sizeof tok);
        fallback_pid = pid;
        ks_stats_set_fallback(fallback_token, pid);
        if (v[at]) /* the program's name, not "exe" (from /proc/self/exe) */
            prctl(PR_SET_NAME, v + at, 0, 0, 0);
    }
    v = getenv(ENV_HELD);
    char *end;
    if (v && strtol(v, &end, 10) == getpid() && *end == ':') {
        for (const char *p = end + 1; *p && nheld < HELD_MAX;) {
            long fd = strtol(p, &end, 10);
            if (end == p)
                break;
            bool r = *end == 'r';
            p = end + (r ? 1 : 0);
            if (*p == ',')
                p++;
            int acc = 0;
            socklen_t al = sizeof acc;
            if (fd < 3 || getsockopt((int)fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &al) != 0 || !acc)
                continue;
            held[nheld].fd = (int)fd;
            held[nheld].clear_reuseport = r;
            held[nheld].len = sizeof held[nheld].addr;
            if (getsockname((int)fd, (struct sockaddr *)&held[nheld].addr, &held[nheld].len) != 0)
                continue;
            fcntl((int)fd, F_SETFD, FD_CLOEXEC); /* never leaked to a program it runs */
            nheld++;
        }
        __atomic_store_n(&held_any, nheld > 0, __ATOMIC_RELEASE);
        if (nheld > 0)
            pthread_atfork(lend_prepare, lend_parent, lend_child);
        ks_log_debug("%d listener%s kept across the unsharded exec", nheld, nheld == 1 ? "" : "s");
    }
    KS_RESTORE_ERRNO;
}

bool ks_daemon_has_held(void)
{
    return __atomic_load_n(&held_any, __ATOMIC_ACQUIRE);
}

/* Connections waiting in a listener's accept queue (-1: unknown). */
static int accept_queue(int fd)
{
    struct tcp_info ti;
    socklen_t l = sizeof ti;
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l) != 0 || ti.tcpi_state != TCP_LISTEN)
        return -1;
    return (int)ti.tcpi_unacked;
}

/* ---- a kept listener the program closes for a child to listen again ----
 *
 * Some programs bind and listen in the parent, close that listener, and
 * let each child bind its own SO_REUSEPORT socket to the same address
 * (hitch: its master listens only to check the address). Without the
 * library that leaves no connection behind; with a kept listener, the
 * connections queued on it during the fallback would be reset by the
 * program's close(). So when the program takes a kept listener that has
 * connections queued, the library keeps its own descriptor of it (lent)
 * until the program's next fork(): if the program still has the listener
 * then, the library's copy is closed before the fork; if not, the child
 * gets the copy as a kept listener (its bind() to that address takes it,
 * with what is queued, and its first listen() closes it if not), and the
 * parent closes its own. */

struct sock_search {
    int skip; /* the library's own descriptor */
    dev_t dev;
    ino_t ino;
    bool found; /* another fd of the program's is that socket */
};

static void find_socket(int fd, void *arg)
{
    struct sock_search *w = arg;
    struct stat st;
    if (fd != w->skip && !w->found && fstat(fd, &st) == 0 && st.st_dev == w->dev &&
        st.st_ino == w->ino)
        w->found = true;
}

static void lend_prepare(void)
{
    for (int i = 0; i < nheld; i++) {
        if (!held[i].lent || held[i].fd < 0)
            continue;
        struct stat st;
        struct sock_search w = {held[i].fd, 0, 0, false};
        if (fstat(held[i].fd, &st) == 0) {
            w.dev = st.st_dev;
            w.ino = st.st_ino;
            ks_for_each_fd(find_socket, &w);
        }
        if (w.found) { /* the program has it: its children get its own */
            close(held[i].fd);
            held[i].fd = -1;
            held[i].lent = false;
        }
    }
}

static void lend_parent(void)
{
    for (int i = 0; i < nheld; i++)
        if (held[i].lent && held[i].fd >= 0) {
            close(held[i].fd);
            held[i].fd = -1;
            held[i].lent = false;
        }
}

static void lend_child(void)
{
    bool any = false;
    for (int i = 0; i < nheld; i++)
        if (held[i].lent && held[i].fd >= 0) {
            held[i].lent = false; /* a kept listener again, for this child */
            any = true;
        }
    if (any) {
        lent_child = true;
        __atomic_store_n(&held_any, true, __ATOMIC_RELEASE);
    }
}

bool ks_daemon_bind_held(int fd, const struct sockaddr *addr, socklen_t len)
{
    if (!__atomic_load_n(&held_any, __ATOMIC_ACQUIRE) || !addr)
        return false;
    for (int i = 0; i < nheld; i++) {
        if (held[i].fd < 0 || !ks_same_address(addr, len, &held[i].addr))
            continue;
        int fdfl = fcntl(fd, F_GETFD), flfl = fcntl(fd, F_GETFL);
        if (fdfl < 0 || flfl < 0 || dup3(held[i].fd, fd, (fdfl & FD_CLOEXEC) ? O_CLOEXEC : 0) < 0)
            return false;
        fcntl(fd, F_SETFL, flfl);
        /* the fallback's steering to slot 0 is no part of the program's
         * group (its own reuseport listeners spread by hash again) */
        int none = 0;
        setsockopt(fd, SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, &none, sizeof none);
        if (held[i].clear_reuseport) {
            int zero = 0;
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &zero, sizeof zero);
        }
        ks_log_debug("the program's bind() on fd %d takes the kept listener (%d queued)", fd,
                     accept_queue(fd));
        if (!lent_child && accept_queue(fd) > 0)
            held[i].lent = true; /* see lend_prepare() */
        else {
            close(held[i].fd);
            held[i].fd = -1;
        }
        return true;
    }
    return false;
}

static bool marked_active; /* atomic */

bool ks_daemon_listen_watched(void)
{
    return __atomic_load_n(&held_any, __ATOMIC_ACQUIRE) ||
           (fallback_token[0] && !__atomic_load_n(&marked_active, __ATOMIC_ACQUIRE));
}

void ks_daemon_at_listen(void)
{
    if (fallback_token[0] && getpid() == fallback_pid &&
        !__atomic_exchange_n(&marked_active, true, __ATOMIC_ACQ_REL) && ks_config()->stats_path[0])
        ks_stats_mark_active(); /* its record says the fallback happened */
    if (!__atomic_exchange_n(&held_any, false, __ATOMIC_ACQ_REL))
        return;
    for (int i = 0; i < nheld; i++)
        if (held[i].fd >= 0 && !held[i].lent) {
            close(held[i].fd);
            held[i].fd = -1;
        }
}

void ks_daemon_reexec_unsharded(const void *app_mask, bool chld_ignored, const char *token,
                                const struct ks_held_fd *keep, int nkeep)
{
    if (!ks_start_cmdline_kept()) {
        ks_log_error("cannot start the program again: its command line was not kept "
                     "(unreadable or longer than 64 KiB)");
        return;
    }
    char **argv = ks_start_argv();
    /* The environment the user started it with, if kept: the program may
     * have cleaned its own before listen() (dovecot keeps 3 variables). */
    size_t envc = 0;
    char **from = ks_start_env(0, &envc);
    if (!from) {
        for (char **e = environ; e && *e; e++)
            envc++;
    }
    char **envp = calloc(envc + 3, sizeof *envp);
    if (!argv || !envp) {
        ks_log_error("cannot start the program again: out of memory");
        free(argv);
        free(envp);
        free(from);
        return;
    }
    size_t k = 0;
    for (char **e = from ? from : environ; e && *e; e++)
        if (strncmp(*e, "KTLSSHIM_SHARDS=", 16) != 0 && strncmp(*e, "KTLSSHIM_WORKER=", 16) != 0 &&
            strncmp(*e, "KTLSSHIM_EXEC_", 14) != 0)
            envp[k++] = *e;
    static char tokvar[96], heldvar[64 + 16 * HELD_MAX];
    if (token) {
        char comm[17] = "";
        prctl(PR_GET_NAME, comm, 0, 0, 0);
        snprintf(tokvar, sizeof tokvar, ENV_FALLBACK "=%d:%s:%s", (int)getpid(), token, comm);
        envp[k++] = tokvar;
    }

    ks_for_each_fd(cloexec_made, NULL);
    if (nkeep > 0) {
        size_t at = (size_t)snprintf(heldvar, sizeof heldvar, ENV_HELD "=%d:", (int)getpid());
        for (int i = 0; i < nkeep && i < HELD_MAX; i++) {
            /* out of the way of the fd numbers the program will get */
            int fd = fcntl(keep[i].fd, F_DUPFD, 900 - HELD_MAX);
            if (fd < 0)
                fd = fcntl(keep[i].fd, F_DUPFD, 3);
            if (fd < 0)
                continue;
            close(keep[i].fd);
            at += (size_t)snprintf(heldvar + at, sizeof heldvar - at, "%s%d%s",
                                   heldvar[at - 1] == ':' ? "" : ",", fd,
                                   keep[i].clear_reuseport ? "r" : "");
            if (at >= sizeof heldvar)
                break;
        }
        envp[k++] = heldvar;
    }
    prctl(PR_SET_CHILD_SUBREAPER, 0);
    /* exec resets handlers but keeps SIG_IGN: as the program had it. */
    struct sigaction chld = {.sa_handler = chld_ignored ? SIG_IGN : SIG_DFL};
    ks_sig_program_action(SIGCHLD, &chld, NULL);
    sigprocmask(SIG_SETMASK, (const sigset_t *)app_mask, NULL);
    ks_stats_at_exec();
    ks_libc()->execve("/proc/self/exe", argv, envp);
    int err = errno;
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, NULL);
    ks_log_error("cannot start the program again (execve /proc/self/exe %s): %s", argv[0],
                 strerror(err));
    free(argv);
    free(envp);
    free(from);
}
