/* shard/listen.c — the socket hooks (bind, listen, accept) and the plan of
 * per-worker sockets.
 *
 * With KTLSSHIM_SHARDS=N (N > 1), bind() sets SO_REUSEPORT on TCP sockets,
 * and the first listen() on a TCP socket turns the process into a
 * supervisor with N workers (supervisor.c). Before forking, every bound,
 * unconnected TCP socket of the program gets N-1 replicas: same family,
 * address (the real port when the program bound port 0), socket options
 * and fd flags. Slot 0 keeps the program's own sockets. All replicas are
 * bound before any of them listens, so a failure leaves nothing listening
 * that would have to be closed (closing a listener in a reuseport group
 * drops the connections queued on it). */
#include "shard/shard.h"
#include "shard/startstate.h"
#include "shard/daemonize.h"
#include "core/config.h"
#include "shard/execmode.h"
#include "core/fds.h"
#include "core/log.h"
#include "core/libc.h"
#include "stats/stats.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/filter.h>
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

enum { SHARD_OFF, SHARD_PENDING, SHARD_BUSY, SHARD_WORKER };
static int shard_state = -1; /* atomic; -1 = not decided yet */

static int state(void)
{
    int s = __atomic_load_n(&shard_state, __ATOMIC_ACQUIRE);
    if (KS_UNLIKELY(s < 0)) {
        const struct ks_config *cfg = ks_config();
        int want = cfg->shards > 1 && !cfg->in_worker ? SHARD_PENDING
                   : ks_exec_is_worker()              ? SHARD_WORKER
                                                      : SHARD_OFF;
        __atomic_compare_exchange_n(&shard_state, &s, want, false, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE);
        s = __atomic_load_n(&shard_state, __ATOMIC_ACQUIRE);
    }
    return s;
}

static bool is_inet_tcp(int fd, int *domain_out)
{
    int domain = 0, type = 0, proto = 0;
    socklen_t l = sizeof domain;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &l) != 0)
        return false;
    if (domain != AF_INET && domain != AF_INET6)
        return false;
    l = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l) != 0 || type != SOCK_STREAM)
        return false;
    l = sizeof proto;
    if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &l) != 0 || proto != IPPROTO_TCP)
        return false;
    if (domain_out)
        *domain_out = domain;
    return true;
}

static const char *addr_str(const struct sockaddr_storage *ss, char *out, size_t n)
{
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const void *)ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        port = ntohs(a->sin_port);
        snprintf(out, n, "%s:%d", host, port);
    } else {
        const struct sockaddr_in6 *a = (const void *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
        port = ntohs(a->sin6_port);
        snprintf(out, n, "[%s]:%d", host, port);
    }
    return out;
}

struct ks_shard_client ks_shard_client;

void ks_shard_load(void)
{
    ks_start_snapshot();
    ks_daemon_take_held();
    ks_exec_load();
}

bool ks_shard_in_worker(void)
{
    return state() == SHARD_WORKER;
}

/* fds on which bind() set SO_REUSEPORT for us (not the program), so that a
 * refusal takes back only what we set. */
#define OURS_BITS 65536
static uint64_t ours[OURS_BITS / 64];

static void mark_ours(int fd, bool on)
{
    if (fd < 0 || fd >= OURS_BITS)
        return;
    if (on)
        __atomic_fetch_or(&ours[fd / 64], 1ULL << (fd % 64), __ATOMIC_RELAXED);
    else
        __atomic_fetch_and(&ours[fd / 64], ~(1ULL << (fd % 64)), __ATOMIC_RELAXED);
}

static bool is_ours(int fd)
{
    return fd >= 0 && fd < OURS_BITS &&
           (__atomic_load_n(&ours[fd / 64], __ATOMIC_RELAXED) & (1ULL << (fd % 64)));
}

bool ks_shard_reuseport_ours(int fd)
{
    return is_ours(fd);
}

/* fds the program bound to port 0 (any free port): exec mode cannot shard
 * them, each worker would get its own port. */
static uint64_t port0[OURS_BITS / 64];

static void mark_port0(int fd, const struct sockaddr *addr, socklen_t len)
{
    if (fd < 0 || fd >= OURS_BITS)
        return;
    in_port_t port = 1;
    if (addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in))
        port = ((const struct sockaddr_in *)addr)->sin_port;
    else if (addr->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6))
        port = ((const struct sockaddr_in6 *)addr)->sin6_port;
    if (port == 0)
        __atomic_fetch_or(&port0[fd / 64], 1ULL << (fd % 64), __ATOMIC_RELAXED);
    else
        __atomic_fetch_and(&port0[fd / 64], ~(1ULL << (fd % 64)), __ATOMIC_RELAXED);
}

static bool bound_port0(int fd)
{
    return fd >= 0 && fd < OURS_BITS &&
           (__atomic_load_n(&port0[fd / 64], __ATOMIC_RELAXED) & (1ULL << (fd % 64)));
}

/* ---- hooks ---- */

KS_EXPORT int bind(int fd, const struct sockaddr *addr, socklen_t len)
{
    int s = state();
    if ((s == SHARD_PENDING || s == SHARD_WORKER) && addr &&
        (addr->sa_family == AF_INET || addr->sa_family == AF_INET6)) {
        KS_SAVE_ERRNO;
        int one = 1, had = 0;
        socklen_t l = sizeof had;
        if (is_inet_tcp(fd, NULL)) {
            if (s == SHARD_WORKER && ks_exec_is_worker() && ks_exec_bind_held(fd, addr, len)) {
                KS_RESTORE_ERRNO;
                return 0; /* the slot's held listener is at fd now */
            }
            if (s == SHARD_PENDING)
                mark_port0(fd, addr, len);
            getsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &had, &l);
            mark_ours(fd, !had && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) == 0);
        }
        KS_RESTORE_ERRNO;
    } else if (s == SHARD_OFF && addr && ks_daemon_has_held()) {
        KS_SAVE_ERRNO;
        bool took = is_inet_tcp(fd, NULL) && ks_daemon_bind_held(fd, addr, len);
        KS_RESTORE_ERRNO;
        if (took)
            return 0; /* a listener kept across a fallback to unsharded is at fd now */
    }
    return ks_libc()->bind(fd, addr, len);
}

/* accept()ed a TCP connection? The family comes free in the address the
 * caller asked for; only a caller that asked for none costs a getsockopt().
 * (Not AF_UNIX: h2o's privilege-separation socket is no connection.) */
static void count_if_tcp(int cfd, const struct sockaddr *addr, socklen_t asked,
                         const socklen_t *len)
{
    sa_family_t family;
    if (addr && len && asked >= sizeof family && *len >= sizeof family) {
        family = addr->sa_family;
    } else {
        KS_SAVE_ERRNO;
        int domain = 0;
        socklen_t l = sizeof domain;
        if (getsockopt(cfd, SOL_SOCKET, SO_DOMAIN, &domain, &l) != 0)
            domain = AF_UNSPEC;
        family = (sa_family_t)domain;
        KS_RESTORE_ERRNO;
    }
    if (family == AF_INET || family == AF_INET6)
        ks_stats_accepted();
}

KS_EXPORT int accept(int fd, struct sockaddr *addr, socklen_t *len)
{
    socklen_t asked = addr && len ? *len : 0;
    int r = ks_libc()->accept(fd, addr, len);
    if (r >= 0)
        count_if_tcp(r, addr, asked, len);
    return r;
}

KS_EXPORT int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    socklen_t asked = addr && len ? *len : 0;
    int r = ks_libc()->accept4(fd, addr, len, flags);
    if (r >= 0)
        count_if_tcp(r, addr, asked, len);
    return r;
}

static int shard_at_listen(int fd, int backlog);

KS_EXPORT int listen(int fd, int backlog)
{
    int s = state();
    if (s == SHARD_PENDING)
        return shard_at_listen(fd, backlog);
    int r = ks_libc()->listen(fd, backlog);
    if (r == 0 && s == SHARD_WORKER && ks_exec_is_worker())
        ks_exec_report_listener(fd);
    if (s == SHARD_OFF && ks_daemon_listen_watched()) {
        KS_SAVE_ERRNO;
        if (is_inet_tcp(fd, NULL))
            ks_daemon_at_listen();
        KS_RESTORE_ERRNO;
    }
    return r;
}

/* ---- what would make forking unsafe ---- */

static int thread_count(void)
{
    char buf[1024];
    const char *p = ks_proc_stat_fields(0, buf, sizeof buf);
    if (!p)
        return -1;
    /* After ") ": state ppid pgrp session tty_nr tpgid flags minflt cminflt
     * majflt cmajflt utime stime cutime cstime priority nice num_threads */
    int field = 2;
    for (; *p && field < 20; p++)
        if (*p == ' ')
            field++;
    return atoi(p);
}

struct anon_scan {
    int fd;
    const char *what;
};

static void find_shared_event_fd(int fd, void *arg)
{
    struct anon_scan *s = arg;
    char path[64], link[64];
    if (s->what)
        return;
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(path, link, sizeof link - 1);
    if (n <= 0)
        return;
    link[n] = '\0';
    if (strcmp(link, "anon_inode:[eventpoll]") == 0)
        s->what = "an epoll instance";
    else if (strcmp(link, "anon_inode:[io_uring]") == 0)
        s->what = "an io_uring instance";
    if (s->what)
        s->fd = fd;
}

/* ---- the plan ---- */

static void collect_bound_tcp(int fd, void *arg)
{
    struct ks_plan *p = arg;
    struct ks_sock_tmpl t = {.fd = fd};
    if (!is_inet_tcp(fd, &t.domain))
        return;
    int acc = 0;
    socklen_t l = sizeof acc;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &l) == 0 && acc)
        return; /* already listening (inherited): stays one shared socket */
    struct sockaddr_storage peer;
    socklen_t pl = sizeof peer;
    if (getpeername(fd, (struct sockaddr *)&peer, &pl) == 0 || errno != ENOTCONN)
        return; /* connected */
    t.addrlen = sizeof t.addr;
    if (getsockname(fd, (struct sockaddr *)&t.addr, &t.addrlen) != 0)
        return;
    int port = t.addr.ss_family == AF_INET ? ((struct sockaddr_in *)&t.addr)->sin_port
                                           : ((struct sockaddr_in6 *)&t.addr)->sin6_port;
    if (port == 0)
        return; /* not bound */
    if (p->nsock >= KS_MAX_REPLICATED) {
        p->nsock = KS_MAX_REPLICATED + 1; /* marks "too many" */
        return;
    }
    t.fd_flags = fcntl(fd, F_GETFD);
    t.fl_flags = fcntl(fd, F_GETFL);
    p->sock[p->nsock++] = t;
}

/* Socket options copied to replicas when they differ from a fresh socket's. */
static const struct {
    int level, name;
    const char *label;
} copied_opts[] = {
    {SOL_SOCKET, SO_REUSEADDR, "SO_REUSEADDR"},
    {SOL_SOCKET, SO_KEEPALIVE, "SO_KEEPALIVE"},
    {SOL_SOCKET, SO_SNDBUF, "SO_SNDBUF"},
    {SOL_SOCKET, SO_RCVBUF, "SO_RCVBUF"},
    {SOL_SOCKET, SO_LINGER, "SO_LINGER"},
    {SOL_SOCKET, SO_PRIORITY, "SO_PRIORITY"},
    {SOL_SOCKET, SO_MARK, "SO_MARK"},
    {SOL_SOCKET, SO_RCVLOWAT, "SO_RCVLOWAT"},
    {SOL_SOCKET, SO_OOBINLINE, "SO_OOBINLINE"},
    {SOL_SOCKET, SO_BINDTODEVICE, "SO_BINDTODEVICE"},
    {SOL_SOCKET, SO_BUSY_POLL, "SO_BUSY_POLL"},
    {SOL_SOCKET, SO_TIMESTAMP, "SO_TIMESTAMP"},
    {SOL_SOCKET, SO_TIMESTAMPNS, "SO_TIMESTAMPNS"},
    {IPPROTO_TCP, TCP_NODELAY, "TCP_NODELAY"},
    {IPPROTO_TCP, TCP_MAXSEG, "TCP_MAXSEG"},
    {IPPROTO_TCP, TCP_CORK, "TCP_CORK"},
    {IPPROTO_TCP, TCP_KEEPIDLE, "TCP_KEEPIDLE"},
    {IPPROTO_TCP, TCP_KEEPINTVL, "TCP_KEEPINTVL"},
    {IPPROTO_TCP, TCP_KEEPCNT, "TCP_KEEPCNT"},
    {IPPROTO_TCP, TCP_SYNCNT, "TCP_SYNCNT"},
    {IPPROTO_TCP, TCP_LINGER2, "TCP_LINGER2"},
    {IPPROTO_TCP, TCP_DEFER_ACCEPT, "TCP_DEFER_ACCEPT"},
    {IPPROTO_TCP, TCP_WINDOW_CLAMP, "TCP_WINDOW_CLAMP"},
    {IPPROTO_TCP, TCP_CONGESTION, "TCP_CONGESTION"},
    {IPPROTO_TCP, TCP_USER_TIMEOUT, "TCP_USER_TIMEOUT"},
    {IPPROTO_TCP, TCP_FASTOPEN, "TCP_FASTOPEN"},
    {IPPROTO_TCP, TCP_NOTSENT_LOWAT, "TCP_NOTSENT_LOWAT"},
    {IPPROTO_TCP, TCP_SAVE_SYN, "TCP_SAVE_SYN"},
    {IPPROTO_IP, IP_TOS, "IP_TOS"},
    {IPPROTO_IP, IP_TTL, "IP_TTL"},
    {IPPROTO_IP, IP_FREEBIND, "IP_FREEBIND"},
    {IPPROTO_IP, IP_TRANSPARENT, "IP_TRANSPARENT"},
    {IPPROTO_IP, IP_MTU_DISCOVER, "IP_MTU_DISCOVER"},
    {IPPROTO_IPV6, IPV6_V6ONLY, "IPV6_V6ONLY"},
    {IPPROTO_IPV6, IPV6_TCLASS, "IPV6_TCLASS"},
    {IPPROTO_IPV6, IPV6_UNICAST_HOPS, "IPV6_UNICAST_HOPS"},
    {IPPROTO_IPV6, IPV6_TRANSPARENT, "IPV6_TRANSPARENT"},
    {IPPROTO_IPV6, IPV6_MTU_DISCOVER, "IPV6_MTU_DISCOVER"},
};

static int copy_options(int from, int to, int domain, const char **failed)
{
    for (size_t i = 0; i < KS_ARRAY_LEN(copied_opts); i++) {
        int level = copied_opts[i].level, name = copied_opts[i].name;
        if (level == IPPROTO_IPV6 && domain != AF_INET6)
            continue;
        unsigned char a[64], b[64];
        socklen_t la = sizeof a, lb = sizeof b;
        if (getsockopt(from, level, name, a, &la) != 0)
            continue; /* not supported here: nothing to copy */
        if (getsockopt(to, level, name, b, &lb) == 0 && la == lb && memcmp(a, b, la) == 0)
            continue;
        if (level == SOL_SOCKET && (name == SO_SNDBUF || name == SO_RCVBUF) && la == sizeof(int)) {
            int v;
            memcpy(&v, a, sizeof v);
            v /= 2; /* the kernel doubles what is set and reports the double */
            memcpy(a, &v, sizeof v);
        }
        if (setsockopt(to, level, name, a, la) != 0) {
            *failed = copied_opts[i].label;
            return -1;
        }
    }
    return 0;
}

static int make_replica(const struct ks_sock_tmpl *t, const char **step)
{
    int s = socket(t->domain, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP);
    if (s < 0) {
        *step = "socket";
        return -1;
    }
    int one = 1;
    const char *opt = NULL;
    if (copy_options(t->fd, s, t->domain, &opt) != 0) {
        *step = opt;
    } else if (setsockopt(s, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
        *step = "SO_REUSEPORT";
    } else if (ks_libc()->bind(s, (const struct sockaddr *)&t->addr, t->addrlen) != 0) {
        *step = "bind";
    } else {
        return s;
    }
    KS_SAVE_ERRNO;
    close(s);
    KS_RESTORE_ERRNO;
    return -1;
}

static void close_slots(struct ks_plan *p, int from_slot)
{
    for (int s = from_slot; s < p->nslots; s++)
        for (int t = 0; t < p->nsock; t++)
            if (*ks_plan_fd(p, s, t) >= 0)
                close(*ks_plan_fd(p, s, t));
}

/* Creates the replicas for slots 1..N-1 (bound, not listening). On failure,
 * closes them all and says why. */
static bool make_replicas(struct ks_plan *p)
{
    size_t bytes = sizeof(int) * (size_t)p->nslots * (size_t)p->nsock;
    p->slot_fd = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p->slot_fd == MAP_FAILED) {
        p->slot_fd = NULL;
        ks_log_error("KTLSSHIM_SHARDS=%d: not sharding: out of memory; running unsharded",
                     p->nslots);
        return false;
    }
    for (int t = 0; t < p->nsock; t++)
        *ks_plan_fd(p, 0, t) = p->sock[t].fd;
    for (int s = 1; s < p->nslots; s++)
        for (int t = 0; t < p->nsock; t++)
            *ks_plan_fd(p, s, t) = -1;
    for (int s = 1; s < p->nslots; s++) {
        for (int t = 0; t < p->nsock; t++) {
            const char *step = "?";
            int r = make_replica(&p->sock[t], &step);
            if (r < 0) {
                char a[80];
                ks_log_error("KTLSSHIM_SHARDS=%d: not sharding: cannot make worker %d's copy "
                             "of fd %d (%s): %s: %s%s; running unsharded",
                             p->nslots, s, p->sock[t].fd, addr_str(&p->sock[t].addr, a, sizeof a),
                             step, strerror(errno),
                             errno == EADDRINUSE ? " (was the socket bound before the library "
                                                   "could set SO_REUSEPORT?)"
                                                 : "");
                close_slots(p, 1);
                return false;
            }
            *ks_plan_fd(p, s, t) = r;
        }
    }
    return true;
}

void ks_plan_enter_worker(struct ks_plan *p, int slot)
{
    for (int t = 0; slot > 0 && t < p->nsock; t++) {
        int orig = p->sock[t].fd;
        dup2(*ks_plan_fd(p, slot, t), orig);
        fcntl(orig, F_SETFD, p->sock[t].fd_flags);
        fcntl(orig, F_SETFL, p->sock[t].fl_flags);
    }
    close_slots(p, 1);
    munmap(p->slot_fd, sizeof(int) * (size_t)p->nslots * (size_t)p->nsock);
    p->slot_fd = NULL;
    __atomic_store_n(&shard_state, SHARD_WORKER, __ATOMIC_RELEASE);
}

/* KTLSSHIM_PIN: worker i runs on the i-th CPU this process may use, and a
 * reuseport CBPF program hands each new connection to the worker whose CPU
 * received it (the group's sockets are indexed in listen() order: slot 0
 * first). CPUs without a worker fall back to cpu % N. */
static int pin_cpus[KS_MAX_SHARDS];

int ks_shard_pin_cpu(int slot)
{
    return pin_cpus[slot];
}

static void steer_by_cpu(struct ks_plan *p, int lt)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        return;
    int n = 0, allowed = CPU_COUNT(&set);
    for (int cpu = 0; cpu < CPU_SETSIZE && n < p->nslots; cpu++)
        if (CPU_ISSET(cpu, &set))
            pin_cpus[n++] = cpu;
    for (int i = n; i < p->nslots; i++)
        pin_cpus[i] = pin_cpus[i % (n ? n : 1)]; /* more workers than CPUs */
    static struct sock_filter code[2 * KS_MAX_SHARDS + 3];
    int k = 0;
    code[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, SKF_AD_OFF + SKF_AD_CPU);
    for (int i = 0; i < p->nslots && i < n; i++) {
        code[k++] =
            (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)pin_cpus[i], 0, 1);
        code[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, (unsigned)i);
    }
    code[k++] = (struct sock_filter)BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, (unsigned)p->nslots);
    code[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_A, 0);
    struct sock_fprog prog = {.len = (unsigned short)k, .filter = code};
    if (setsockopt(p->sock[lt].fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof prog) != 0) {
        ks_log_error("KTLSSHIM_PIN=on: cannot attach the CPU steering program: %s; workers are "
                     "pinned, connections spread by hash",
                     strerror(errno));
    } else {
        ks_log_info("KTLSSHIM_PIN=on: worker i on the i-th of %d usable CPUs, connections "
                    "steered to the worker on the CPU that received them",
                    allowed);
    }
}

static void clear_ours(int fd, void *arg)
{
    (void)arg;
    int zero = 0;
    if (is_ours(fd) && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &zero, sizeof zero) == 0)
        mark_ours(fd, false);
}

/* Unsharded after all: the sockets we gave SO_REUSEPORT lose it again, so
 * that the program is as exposed as it would be without us. The program's
 * own SO_REUSEPORT is left alone. */
static void take_back_reuseport(void)
{
    ks_for_each_fd(clear_ours, NULL);
}

static int refuse(int fd, int backlog, const char *msg)
{
    ks_log_error("KTLSSHIM_SHARDS=%d: not sharding: %s; running unsharded", ks_config()->shards,
                 msg);
    take_back_reuseport();
    __atomic_store_n(&shard_state, SHARD_OFF, __ATOMIC_RELEASE);
    return ks_libc()->listen(fd, backlog);
}

static int shard_at_listen(int fd, int backlog)
{
    int domain;
    if (!is_inet_tcp(fd, &domain))
        return ks_libc()->listen(fd, backlog); /* not a trigger */
    int expected = SHARD_PENDING;
    if (!__atomic_compare_exchange_n(&shard_state, &expected, SHARD_BUSY, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE))
        return ks_libc()->listen(fd, backlog);

    char why[200], unsafe[200] = "";
    int threads = thread_count();
    struct anon_scan scan = {-1, NULL};
    if (threads != 1) {
        snprintf(unsafe, sizeof unsafe,
                 "the program has %d threads at its first listen() "
                 "(fork would copy only one)",
                 threads);
    } else {
        ks_for_each_fd(find_shared_event_fd, &scan);
        if (scan.what)
            snprintf(unsafe, sizeof unsafe,
                     "the program made %s (fd %d) before its first listen(); "
                     "forked workers would share it",
                     scan.what, scan.fd);
    }
    if (unsafe[0] || ks_config()->reload_signal) {
        /* Exec mode (execmode.c): returns only if it cannot be used. */
        char no_exec[600];
        if (!unsafe[0])
            snprintf(unsafe, sizeof unsafe, "KTLSSHIM_RELOAD is set");
        ks_exec_become_supervisor(fd, bound_port0(fd), unsafe, no_exec, sizeof no_exec);
        return refuse(fd, backlog, no_exec);
    }

    static struct ks_plan plan;
    plan.nslots = ks_config()->shards;
    plan.backlog = backlog;
    plan.nsock = 0;
    ks_for_each_fd(collect_bound_tcp, &plan);
    if (plan.nsock > KS_MAX_REPLICATED) {
        snprintf(why, sizeof why, "more than %d bound TCP sockets to copy", KS_MAX_REPLICATED);
        return refuse(fd, backlog, why);
    }
    int lt = -1;
    for (int t = 0; t < plan.nsock; t++)
        if (plan.sock[t].fd == fd)
            lt = t;
    if (lt < 0) {
        int acc = 0;
        socklen_t al = sizeof acc;
        if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &al) == 0 && acc)
            snprintf(why, sizeof why,
                     "fd %d was already listening when the program got it (socket "
                     "activation): an inherited listener cannot be replicated",
                     fd);
        else
            snprintf(why, sizeof why, "fd %d is not bound to a port", fd);
        return refuse(fd, backlog, why);
    }
    plan.sock[lt].listener = true;

    /* The program's own listen() first: its failure is the program's to see. */
    int r = ks_libc()->listen(fd, backlog);
    if (r != 0) {
        __atomic_store_n(&shard_state, SHARD_PENDING, __ATOMIC_RELEASE);
        return r;
    }
    /* Re-read the address: a port-0 bind has its real port now. */
    plan.sock[lt].addrlen = sizeof plan.sock[lt].addr;
    getsockname(fd, (struct sockaddr *)&plan.sock[lt].addr, &plan.sock[lt].addrlen);

    bool ready = make_replicas(&plan); /* says why not, and closes what it made */
    if (ready && !ks_stats_make_shared()) {
        ks_log_error("KTLSSHIM_SHARDS=%d: not sharding: no shared memory for the stats; "
                     "running unsharded",
                     plan.nslots);
        close_slots(&plan, 1); /* bound, not listening yet: safe to close */
        ready = false;
    }
    if (!ready) {
        take_back_reuseport();
        __atomic_store_n(&shard_state, SHARD_OFF, __ATOMIC_RELEASE);
        return 0;
    }
    for (int s = 1; s < plan.nslots; s++) {
        if (ks_libc()->listen(*ks_plan_fd(&plan, s, lt), backlog) != 0) {
            /* Unexpected after a good bind. Run with the slots that listen
             * (those that do must not be closed: see the top of the file). */
            ks_log_error("KTLSSHIM_SHARDS=%d: listen() on worker %d's socket failed: %s; "
                         "running %d workers",
                         plan.nslots, s, strerror(errno), s);
            close_slots(&plan, s);
            plan.nslots = s;
            break;
        }
    }
    ks_stats_set_shards(plan.nslots);
    if (ks_config()->pin)
        steer_by_cpu(&plan, lt);
    if (ks_shard_client.shared_prepare && !ks_shard_client.shared_prepare())
        ks_log_error("no shared memory for session resumption: each worker resumes only the "
                     "sessions it made");
    char a[80];
    ks_log_info("sharding %s (fd %d) over %d workers, %d bound socket%s copied per worker",
                addr_str(&plan.sock[lt].addr, a, sizeof a), fd, plan.nslots, plan.nsock,
                plan.nsock == 1 ? "" : "s");
    ks_supervise(&plan); /* returns in the workers only */
    return 0;
}

bool ks_same_address(const struct sockaddr *a, socklen_t alen, const struct sockaddr_storage *b)
{
    if (a->sa_family != b->ss_family)
        return false;
    if (a->sa_family == AF_INET && alen >= sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->sa_family == AF_INET6 && alen >= sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return x->sin6_port == y->sin6_port && x->sin6_scope_id == y->sin6_scope_id &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0;
    }
    return false;
}
