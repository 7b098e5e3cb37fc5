/* execmode.c — sharding by exec ("exec mode").
 *
 * Fork mode copies the process at its first listen(): that is unsafe once
 * it has threads (fork copies one) or an event loop (epoll, io_uring: the
 * copies would share one instance). Those programs, and every program when
 * KTLSSHIM_RELOAD asks for rolling restarts (a new worker must load the
 * program afresh, not fork the old state), are sharded here instead:
 *
 * 1. At the first listen() on a TCP socket, before the real listen, the
 *    process execs itself (/proc/self/exe, same pid) with the command line,
 *    environment, working directory, signal mask and ignored signals it had
 *    when the library loaded, every fd the program made since closed at
 *    exec, and KTLSSHIM_EXEC_SUPERVISOR=<pid>. The new image runs the
 *    supervisor (supervisor.c) before main(): no program code runs there
 *    (its libraries' constructors do, as for any exec).
 * 2. The supervisor starts each worker the same way from main(), with
 *    KTLSSHIM_WORKER=i/N and KTLSSHIM_EXEC_WORKER naming a control socket
 *    (SOCK_SEQPACKET) and the shared stats pool (a memfd).
 * 3. In a worker, bind() sets SO_REUSEPORT on TCP sockets, and each
 *    successful listen() sends the supervisor a copy of the listener
 *    (SCM_RIGHTS). The supervisor holds it for the worker's slot, so that
 *    connections queued on a worker that dies are served by its successor:
 *    a new worker of the slot gets the held listeners first on its control
 *    socket, and its bind() to a held address puts the held listener at the
 *    program's fd instead of binding a new socket (the listener never
 *    closes: that is what makes a rolling restart lose nothing).
 * A worker has reported its listeners once it has sent as many as its slot
 * holds (at least one): it serves then. setsid() in a worker is reported on
 * the control socket too (daemonize.c). The environment variables carry the
 * pid they are meant for, so a program the worker execs is never taken for
 * a worker or a supervisor. */
#include "shard/execmode.h"
#include "core/config.h"
#include "shard/daemonize.h"
#include "core/fds.h"
#include "core/log.h"
#include "core/libc.h"
#include "shard/proctab.h"
#include "shard/shard.h"
#include "shard/startstate.h"
#include "stats/stats.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

extern char **environ;

#define ENV_SUPERVISOR "KTLSSHIM_EXEC_SUPERVISOR"
#define ENV_WORKER "KTLSSHIM_EXEC_WORKER"

enum { MSG_HELD = 1, MSG_HELD_END, MSG_LISTENING, MSG_SETSID };

struct ctl_msg {
    int32_t type;
    int32_t pid, ppid;
    uint32_t addrlen;
    struct sockaddr_storage addr;
};

/* ---- the worker side ---- */

struct worker_held {
    int fd; /* ours, close-on-exec, high; -1 once given to the program */
    socklen_t len;
    struct sockaddr_storage addr;
};

static bool exec_worker;
static int worker_ctl = -1;
static struct worker_held worker_held[KS_MAX_REPLICATED];
static int worker_nheld;

bool ks_exec_is_worker(void)
{
    return exec_worker;
}

/* Held listeners (received close-on-exec) go out of the way of the low
 * numbers programs expect, below the stats' fds (core/fds.h). */
static int move_high_cloexec(int fd)
{
    return ks_fd_move_high(fd, 128);
}

static int recv_msg(int fd, struct ctl_msg *m, int *passed, int flags)
{
    char cbuf[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {m, sizeof *m};
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
    *passed = -1;
    ssize_t r;
    do
        r = ks_libc()->recvmsg(fd, &mh, flags | MSG_CMSG_CLOEXEC);
    while (r < 0 && errno == EINTR);
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); r >= 0 && c; c = CMSG_NXTHDR(&mh, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
            c->cmsg_len == CMSG_LEN(sizeof(int)))
            memcpy(passed, CMSG_DATA(c), sizeof(int));
    if (r > 0 && (size_t)r != sizeof *m) {
        if (*passed >= 0)
            close(*passed);
        *passed = -1;
        errno = EPROTO;
        return -1;
    }
    return (int)r;
}

static int send_msg(int fd, const struct ctl_msg *m, int pass)
{
    char cbuf[CMSG_SPACE(sizeof(int))];
    memset(cbuf, 0, sizeof cbuf);
    struct iovec iov = {(void *)m, sizeof *m};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (pass >= 0) {
        mh.msg_control = cbuf;
        mh.msg_controllen = sizeof cbuf;
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &pass, sizeof(int));
    }
    ssize_t r;
    do
        r = ks_libc()->sendmsg(fd, &mh, MSG_NOSIGNAL);
    while (r < 0 && errno == EINTR);
    return r == (ssize_t)sizeof *m ? 0 : -1;
}

/* The listeners the slot holds, queued on the control socket before the
 * worker was forked. */
static void read_held(void)
{
    for (;;) {
        struct ctl_msg m;
        int fd;
        if (recv_msg(worker_ctl, &m, &fd, MSG_DONTWAIT) <= 0)
            break;
        if (m.type == MSG_HELD_END)
            break;
        if (m.type != MSG_HELD || fd < 0)
            continue;
        if (worker_nheld >= KS_MAX_REPLICATED || m.addrlen > sizeof m.addr) {
            close(fd);
            continue;
        }
        struct worker_held *h = &worker_held[worker_nheld++];
        h->fd = move_high_cloexec(fd);
        h->len = m.addrlen;
        h->addr = m.addr;
    }
}

void ks_exec_load(void)
{
    KS_SAVE_ERRNO;
    const struct ks_config *cfg = ks_config();
    const char *v = getenv(ENV_WORKER);
    int ctl, pid, sfd, rec, rfd;
    if (cfg->in_worker && v && sscanf(v, "%d,%d,%d,%d,%d", &ctl, &pid, &sfd, &rec, &rfd) == 5 &&
        pid == getpid()) {
        struct stat st;
        ks_start_take_comm(v);
        if (fstat(ctl, &st) == 0 && S_ISSOCK(st.st_mode)) {
            fcntl(ctl, F_SETFD, FD_CLOEXEC); /* programs it execs are not workers */
            worker_ctl = ctl;
            exec_worker = true;
            read_held();
        }
        if (sfd >= 0 && !ks_stats_attach_shared(sfd, rec))
            ks_log_error("exec-mode worker: cannot map the supervisor's stats pool (fd %d); "
                         "this worker's counts are not in the supervisor's sum",
                         sfd);
        if (rfd >= 0 && !(ks_shard_client.shared_attach && ks_shard_client.shared_attach(rfd)))
            ks_log_error("exec-mode worker: cannot map the supervisor's session state (fd %d); "
                         "this worker resumes only the sessions it made",
                         rfd);
    }
    KS_RESTORE_ERRNO;
}

bool ks_exec_bind_held(int fd, const struct sockaddr *addr, socklen_t len)
{
    for (int i = 0; i < worker_nheld; i++) {
        struct worker_held *h = &worker_held[i];
        if (h->fd < 0 || !ks_same_address(addr, len, &h->addr))
            continue;
        int fdfl = fcntl(fd, F_GETFD), flfl = fcntl(fd, F_GETFL);
        if (fdfl < 0 || flfl < 0)
            return false;
        if (dup3(h->fd, fd, (fdfl & FD_CLOEXEC) ? O_CLOEXEC : 0) < 0) {
            ks_log_error("exec-mode worker: cannot put the held listener at fd %d: %s; "
                         "binding a new socket",
                         fd, strerror(errno));
            return false;
        }
        fcntl(fd, F_SETFL, flfl); /* O_NONBLOCK as the program set it */
        close(h->fd);
        h->fd = -1;
        /* Reported now: a program may not listen() again on a socket that
         * already listens (HAProxy checks SO_ACCEPTCONN), and the
         * supervisor counts a worker as started once it reports. */
        ks_exec_report_listener(fd);
        return true;
    }
    return false;
}

void ks_exec_report_listener(int fd)
{
    if (worker_ctl < 0)
        return;
    KS_SAVE_ERRNO;
    int domain = 0, type = 0;
    socklen_t l = sizeof domain;
    struct ctl_msg m = {.type = MSG_LISTENING, .pid = getpid()};
    socklen_t al = sizeof m.addr;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &l) == 0 &&
        (domain == AF_INET || domain == AF_INET6) && (l = sizeof type) &&
        getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l) == 0 && type == SOCK_STREAM &&
        getsockname(fd, (struct sockaddr *)&m.addr, &al) == 0) {
        m.addrlen = al;
        if (send_msg(worker_ctl, &m, fd) != 0)
            ks_log_error("exec-mode worker: cannot hand listener fd %d to the supervisor: %s; "
                         "connections queued on it are lost if this worker dies",
                         fd, strerror(errno));
    }
    KS_RESTORE_ERRNO;
}

void ks_exec_report_setsid(void)
{
    if (worker_ctl < 0)
        return;
    KS_SAVE_ERRNO;
    struct ctl_msg m = {.type = MSG_SETSID, .pid = getpid(), .ppid = ks_libc()->getppid()};
    send_msg(worker_ctl, &m, -1);
    KS_RESTORE_ERRNO;
}

/* ---- the program's side: becoming the supervisor ---- */

/* fds we set close-on-exec, to undo if the exec fails */
#define UNDO_BITS 4096
static uint64_t undo_cloexec[UNDO_BITS / 64];

static void cloexec_made(int fd, void *arg)
{
    (void)arg;
    if (fd <= 2 || ks_fd_was_inherited(fd))
        return;
    int fl = fcntl(fd, F_GETFD);
    if (fl >= 0 && !(fl & FD_CLOEXEC) && fcntl(fd, F_SETFD, fl | FD_CLOEXEC) == 0 && fd < UNDO_BITS)
        undo_cloexec[fd / 64] |= 1ULL << (fd % 64);
}

static void undo_made(void)
{
    for (int fd = 0; fd < UNDO_BITS; fd++)
        if (undo_cloexec[fd / 64] & (1ULL << (fd % 64))) {
            int fl = fcntl(fd, F_GETFD);
            if (fl >= 0)
                fcntl(fd, F_SETFD, fl & ~FD_CLOEXEC);
        }
    memset(undo_cloexec, 0, sizeof undo_cloexec);
}

const char *ks_exec_addr_text(const struct sockaddr_storage *ss, char *out, size_t n)
{
    char host[INET6_ADDRSTRLEN] = "?";
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const void *)ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        snprintf(out, n, "%s:%d", host, ntohs(a->sin_port));
    } else {
        const struct sockaddr_in6 *a = (const void *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
        snprintf(out, n, "[%s]:%d", host, ntohs(a->sin6_port));
    }
    return out;
}

bool ks_exec_become_supervisor(int fd, bool port0, const char *fork_unsafe, char *why, size_t n)
{
    const struct ks_config *cfg = ks_config();
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (port0) {
        snprintf(why, n,
                 "%s, and exec mode cannot shard a listener bound to port 0 (each worker "
                 "would get a different port); bind a fixed port to shard it",
                 fork_unsafe);
        return false;
    }
    if (geteuid() != ks_start.euid || getegid() != ks_start.egid) {
        snprintf(why, n,
                 "%s, and the program changed its user or group before its first listen(): "
                 "exec mode would start its workers without the privileges it started with",
                 fork_unsafe);
        return false;
    }
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0 ||
        (ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                 : ((struct sockaddr_in6 *)&ss)->sin6_port) == 0) {
        snprintf(why, n, "%s, and fd %d is not bound to a port", fork_unsafe, fd);
        return false;
    }
    char **argv = ks_start_argv();
    size_t envc = 0;
    char **envp = ks_start_env(1, &envc);
    if (!argv || !envp) {
        snprintf(why, n,
                 "%s, and exec mode needs the command line and environment the program "
                 "started with, which were not kept (unreadable or too long)",
                 fork_unsafe);
        free(argv);
        free(envp);
        return false;
    }
    char var[64];
    snprintf(var, sizeof var, ENV_SUPERVISOR "=%d:%s", (int)getpid(), ks_start.comm);
    envp[envc] = var;

    char a[80];
    ks_log_info("sharding %s over %d workers in exec mode (%s): the program starts again from "
                "main() in each worker; pid %d supervises",
                ks_exec_addr_text(&ss, a, sizeof a), cfg->shards, fork_unsafe, (int)getpid());
    /* What the program printed and has not flushed yet would be lost at
     * exec. Only stdout and stderr, and only if no other thread holds them
     * (one blocked writing to a full pipe would hang us): a hang is worse. */
    FILE *const streams[] = {stdout, stderr};
    for (size_t i = 0; i < KS_ARRAY_LEN(streams); i++)
        if (ftrylockfile(streams[i]) == 0) {
            fflush_unlocked(streams[i]);
            funlockfile(streams[i]);
        }
    ks_stats_at_exec();

    /* As the program was when the library loaded. */
    ks_for_each_fd(cloexec_made, NULL);
    char cwd_now[PATH_MAX];
    bool have_cwd = getcwd(cwd_now, sizeof cwd_now) != NULL;
    if (ks_start.cwd[0] && chdir(ks_start.cwd) != 0)
        ks_log_error("exec mode: cannot go back to the start directory %s: %s; staying in the "
                     "current one",
                     ks_start.cwd, strerror(errno));
    struct sigaction saved[64];
    sigset_t mask_now;
    sigprocmask(SIG_SETMASK, NULL, &mask_now);
    for (int sig = 1; sig < 64 && sig < NSIG; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP || ks_libc()->sigaction(sig, NULL, &saved[sig]) != 0)
            continue;
        bool ign_then = ks_start.ignored & (1ULL << sig),
             ign_now = saved[sig].sa_handler == SIG_IGN;
        if (ign_then != ign_now) {
            struct sigaction sa = {.sa_handler = ign_then ? SIG_IGN : SIG_DFL};
            ks_libc()->sigaction(sig, &sa, NULL);
        }
    }
    sigprocmask(SIG_SETMASK, &ks_start.mask, NULL);

    ks_libc()->execve("/proc/self/exe", argv, envp);

    int err = errno;
    sigprocmask(SIG_SETMASK, &mask_now, NULL);
    for (int sig = 1; sig < 64 && sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            ks_libc()->sigaction(sig, &saved[sig], NULL);
    if (have_cwd && chdir(cwd_now) != 0)
        ks_log_error("exec mode: cannot go back to %s: %s", cwd_now, strerror(errno));
    undo_made();
    snprintf(why, n, "%s, and exec mode failed: execve /proc/self/exe %s: %s", fork_unsafe, argv[0],
             strerror(err));
    free(argv);
    free(envp);
    return false;
}

/* ---- the supervisor side ---- */

static int sup_nslots;
static int sup_stats_fd = -1;
static int sup_resume_fd = -1; /* the shared session state (resume.c) */
static char **worker_argv, **worker_envp;
static size_t worker_envc;

bool ks_exec_spawn_prepare(int slot, int *sup_end, int *child_end)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
        ks_log_error("worker %d/%d: cannot make its control socket: %s", slot, sup_nslots,
                     strerror(errno));
        return false;
    }
    for (int k = 0; k < ks_pt_nheld(slot); k++) {
        struct ks_held *h = ks_pt_held(slot, k);
        struct ctl_msg m = {.type = MSG_HELD, .addrlen = h->len, .addr = h->addr};
        if (send_msg(sv[0], &m, h->fd) != 0)
            ks_log_error("worker %d/%d: cannot pass it a held listener: %s; it binds a new one",
                         slot, sup_nslots, strerror(errno));
    }
    struct ctl_msg end = {.type = MSG_HELD_END};
    send_msg(sv[0], &end, -1);
    *sup_end = sv[0];
    *child_end = sv[1];
    return true;
}

void ks_exec_worker_exec(int slot, int nslots, int rec, int child_end)
{
    /* Ours for the worker: not close-on-exec, and out of the program's way. */
    int ctl = fcntl(child_end, F_DUPFD, 200);
    if (ctl < 0)
        ctl = fcntl(child_end, F_DUPFD, 3); /* a low RLIMIT_NOFILE */
    int sfd = sup_stats_fd >= 0 ? fcntl(sup_stats_fd, F_DUPFD, 200) : -1;
    if (sfd < 0 && sup_stats_fd >= 0)
        sfd = fcntl(sup_stats_fd, F_DUPFD, 3);
    int rfd = sup_resume_fd >= 0 ? fcntl(sup_resume_fd, F_DUPFD, 200) : -1;
    if (rfd < 0 && sup_resume_fd >= 0)
        rfd = fcntl(sup_resume_fd, F_DUPFD, 3);
    static char w[64], x[128];
    snprintf(w, sizeof w, "KTLSSHIM_WORKER=%d/%d", slot, nslots);
    snprintf(x, sizeof x, ENV_WORKER "=%d,%d,%d,%d,%d:%s", ctl, (int)getpid(), sfd, rec, rfd,
             ks_start.comm);
    worker_envp[worker_envc] = w;
    worker_envp[worker_envc + 1] = x;
    worker_envp[worker_envc + 2] = NULL;
    ks_libc()->execve("/proc/self/exe", worker_argv, worker_envp);
    ks_log_error("worker %d/%d: execve /proc/self/exe %s: %s", slot, nslots, worker_argv[0],
                 strerror(errno));
    ks_libc()->_exit(127);
    __builtin_unreachable();
}

/* A listener the worker of e reported: the slot holds it (once). */
static void hold(struct ks_proc *e, int fd, const struct ctl_msg *m)
{
    struct stat st;
    if (e->run.reported++ == 0 && e->run.held_sigs) {
        /* Its program is past its first listen(): the signals kept for it
         * now (supervisor.c, forward()). */
        for (int sig = 1; sig < 64; sig++)
            if (e->run.held_sigs & (1ULL << sig))
                kill(e->run.pid, sig);
        e->run.held_sigs = 0;
    }
    if (fstat(fd, &st) != 0 || m->addrlen > sizeof m->addr) {
        close(fd);
        return;
    }
    int slot = e->slot, k = ks_pt_held_index(slot, st.st_dev, st.st_ino);
    if (k >= 0) {
        close(fd); /* the listener the slot holds already */
        e->run.covers |= 1ULL << k;
        return;
    }
    fd = move_high_cloexec(fd);
    k = ks_pt_add_held(slot, fd, st.st_dev, st.st_ino, &m->addr, m->addrlen);
    if (k < 0) {
        ks_log_error("worker %d/%d: more than %d listeners; not holding more", slot, sup_nslots,
                     KS_MAX_REPLICATED);
        close(fd);
        return;
    }
    e->run.covers |= 1ULL << k;
    char a[80];
    ks_log_debug("worker %d/%d (pid %d) listens on %s: held", slot, sup_nslots, (int)m->pid,
                 ks_exec_addr_text(&m->addr, a, sizeof a));
}

void ks_exec_handle(struct ks_proc *e)
{
    int fd = e->run.chan;
    for (int n = 0; n < 256; n++) {
        struct ctl_msg m;
        int passed;
        int r = recv_msg(fd, &m, &passed, MSG_DONTWAIT);
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (r <= 0 && !(r < 0 && errno == EPROTO)) {
            ks_pt_chan_closed(e); /* every holder of the worker's end is gone */
            return;
        }
        if (r < 0)
            continue;
        if (m.type == MSG_LISTENING && passed >= 0 && e->slot >= 0 && e->slot < sup_nslots)
            hold(e, passed, &m);
        else if (passed >= 0)
            close(passed);
        if (m.type == MSG_SETSID)
            ks_daemon_add_report(m.pid, m.ppid);
    }
}

void ks_exec_supervisor_if_asked(void)
{
    const char *v = getenv(ENV_SUPERVISOR);
    const struct ks_config *cfg = ks_config();
    if (!v || atoi(v) != (int)getpid() || cfg->shards < 2 || cfg->in_worker)
        return;
    ks_start_take_comm(v);
    int nslots = cfg->shards;
    sigset_t mask;
    sigprocmask(SIG_SETMASK, NULL, &mask);
    struct sigaction chld;
    ks_libc()->sigaction(SIGCHLD, NULL, &chld);
    worker_argv = ks_start_argv();
    size_t envc = 0;
    for (char **e = environ; e && *e; e++)
        envc++;
    worker_envp = calloc(envc + 3, sizeof *worker_envp);
    if (!worker_argv || !worker_envp || !ks_pt_init(nslots, true) ||
        !ks_stats_make_shared_for_exec(&sup_stats_fd)) {
        ks_log_error("KTLSSHIM_SHARDS=%d: not sharding: the exec-mode supervisor cannot start "
                     "(out of memory, or no command line kept); starting the program again "
                     "unsharded",
                     nslots);
        ks_daemon_reexec_unsharded(&mask, chld.sa_handler == SIG_IGN, NULL, NULL, 0);
        ks_libc()->_exit(1);
    }
    for (char **e = environ; e && *e; e++)
        if (strncmp(*e, "KTLSSHIM_EXEC_", 14) != 0 && strncmp(*e, "KTLSSHIM_WORKER=", 16) != 0)
            worker_envp[worker_envc++] = *e;
    sup_nslots = nslots;
    sup_resume_fd =
        ks_shard_client.shared_prepare_for_exec ? ks_shard_client.shared_prepare_for_exec() : -1;
    if (sup_resume_fd < 0)
        ks_log_error("no shared memory for session resumption: each worker resumes only the "
                     "sessions it made");
    if (sup_stats_fd < 0)
        ks_log_error("exec mode: the stats pool is not a memfd here; each worker writes its own "
                     "record and the supervisor's sum leaves them out");
    ks_stats_set_shards(nslots);
    if (cfg->pin)
        ks_log_error("KTLSSHIM_PIN=on: not applied in exec mode (fork mode only); workers run "
                     "on every CPU");
    static struct ks_plan plan;
    plan.nslots = nslots;
    plan.nsock = 0;
    plan.exec_mode = true;
    ks_supervise(&plan); /* never returns in exec mode */
    ks_libc()->_exit(1);
}
