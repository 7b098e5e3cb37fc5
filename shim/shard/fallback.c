/* fallback.c — when sharding cannot go on (the program daemonized in its
 * workers, or sharding made it fail in the start-up window), the
 * supervisor stops every process of the group, keeps slot 0's listeners,
 * and execs the program again unsharded (daemonize.c), so that the user's
 * command does what it does without the library. The decision is
 * supervisor.c's (and check_parent_checks here); this is the ladder down. */
#include "shard/supervise.h"
#include "core/log.h"
#include "core/fds.h"
#include "core/libc.h"
#include "shard/daemonize.h"
#include "stats/stats.h"

#include <fcntl.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FALLBACK_TERM_MS 3000 /* the fallback's SIGTERM, then SIGKILL */
#define PARENT_CHECKS_MAX 2   /* worker children ending after a parent check: fallback */

/* The supervisor's children (workers, and what it adopted as subreaper),
 * from /proc/self/task/<pid>/children; -1 if that file cannot be read. */
static int list_children(pid_t *out, int max)
{
    char path[64], buf[8192];
    snprintf(path, sizeof path, "/proc/self/task/%d/children", (int)ks_sup.self);
    if (ks_read_text(path, buf, sizeof buf) < 0)
        return -1;
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

/* Children that are not workers: a worker's children that outlived it. */
bool ks_sup_have_adopted(void)
{
    pid_t kids[256];
    int n = list_children(kids, 256);
    for (int k = 0; k < n; k++)
        if (!ks_pt_by_pid(kids[k]))
            return true;
    return false;
}

/* Slot 0's listeners, kept across the unsharded exec (daemonize.c) so that
 * connections queued on them meanwhile are served by the program again. */
static int slot0_listeners(struct ks_held_fd *out, int max)
{
    int k = 0;
    if (ks_sup.exec) {
        for (int j = 0; j < ks_pt_nheld(0) && k < max; j++)
            out[k++] = (struct ks_held_fd){ks_pt_held(0, j)->fd, true};
        return k;
    }
    for (int t = 0; t < ks_sup.plan->nsock && k < max; t++) {
        int fd = *ks_plan_fd(ks_sup.plan, 0, t), acc = 0;
        socklen_t l = sizeof acc;
        if (fd >= 0 && getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &l) == 0 && acc)
            out[k++] = (struct ks_held_fd){fd, ks_shard_reuseport_ours(ks_sup.plan->sock[t].fd)};
    }
    return k;
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
    if (ks_sup.exec)
        return;
    struct sock_filter code[] = {BPF_STMT(BPF_RET | BPF_K, 0)};
    struct sock_fprog prog = {.len = 1, .filter = code};
    for (int t = 0; t < ks_sup.plan->nsock; t++) {
        int fd = *ks_plan_fd(ks_sup.plan, 0, t);
        if (fd >= 0 && ks_sup.plan->sock[t].listener &&
            setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof prog) != 0)
            ks_log_debug("fallback: cannot steer connections to slot 0: %s", strerror(errno));
    }
    int64_t until = ks_sup_now_ms() + 1000;
    for (;;) {
        bool queued = false;
        for (int i = 1; i < ks_sup.plan->nslots && !queued; i++) {
            if (ks_pt_slot(i)->state != KS_PS_RUNNING)
                continue;
            for (int t = 0; t < ks_sup.plan->nsock && !queued; t++) {
                int fd = *ks_plan_fd(ks_sup.plan, i, t);
                struct tcp_info ti;
                socklen_t l = sizeof ti;
                if (fd >= 0 && getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l) == 0 &&
                    ti.tcpi_state == TCP_LISTEN && ti.tcpi_unacked > 0)
                    queued = true;
            }
        }
        if (!queued || ks_sup_now_ms() >= until)
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
__attribute__((noreturn)) static void restart_unsharded(const char *token, int64_t term_ms)
{
    ks_sup.stopping = true;
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    if (term_ms > 0)
        for (int i = 0; i < ks_sup.plan->nslots; i++)
            if (ks_pt_slot(i)->run.pid > 0 && ks_pt_slot(i)->state == KS_PS_RUNNING)
                kill(ks_pt_slot(i)->run.pid, SIGTERM);
    int64_t term_until = ks_sup_now_ms() + term_ms, until = ks_sup_now_ms() + term_ms + 10000;
    for (;;) {
        pid_t kids[256];
        bool terming = ks_sup_now_ms() < term_until;
        int n = terming ? 0 : list_children(kids, 256);
        for (int k = 0; k < n; k++)
            kill(kids[k], SIGKILL); /* our children: unreaped, so never a reused pid */
        if (n < 0) {
            /* No children file (CONFIG_PROC_CHILDREN off): the workers, and
             * the setsid() callers that are our children now, with their
             * process groups (a daemon's own workers). */
            for (int k = 0; k < ks_pt_size(); k++)
                if (ks_pt_at(k)->run.pid > 0)
                    kill(ks_pt_at(k)->run.pid, SIGKILL);
            n = ks_daemon_reported(kids, 256);
            for (int k = 0; k < n; k++)
                if (ks_daemon_parent_of(kids[k]) == ks_sup.self) /* alive: its group too */
                    kill(getpgid(kids[k]) == kids[k] ? -kids[k] : kids[k], SIGKILL);
        }
        int status;
        pid_t pid;
        while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
            for (struct ks_proc *e; (e = ks_pt_by_pid(pid));)
                e->run.pid = 0;
        if (pid < 0 && errno == ECHILD)
            break;
        if (ks_sup_now_ms() > until) {
            ks_log_error("processes of the group are still running after 10 s; starting "
                         "the program again anyway");
            break;
        }
        struct timespec ts = {0, 20 * 1000000};
        sigtimedwait(&chld, NULL, &ts);
    }
    for (int i = 1; i < ks_sup.plan->nslots; i++)
        ks_sup_close_slot_sockets(i);
    struct ks_held_fd keep[KS_MAX_REPLICATED];
    int nkeep = slot0_listeners(keep, KS_MAX_REPLICATED);
    ks_daemon_reexec_unsharded(&ks_sup.app_mask, ks_sup.app_chld.sa_handler == SIG_IGN, token, keep,
                               nkeep);
    ks_exit_as_program(1); /* it said why */
}

/* The program daemonized in its workers. */
void ks_sup_restart_daemonized(void)
{
    ks_log_error("KTLSSHIM_SHARDS=%d: not sharding: the program daemonized (fork and setsid() "
                 "in a worker), which would leave %d copies that nobody supervises; stopping "
                 "them and starting it again unsharded. To shard it, run it in the foreground "
                 "(nginx: \"daemon off;\", Apache: -DFOREGROUND, redis: --daemonize no)",
                 ks_sup.plan->nslots, ks_sup.plan->nslots);
    restart_unsharded("daemonized", 0);
}

/* Sharding itself made the program fail (or would): the one line, then one
 * copy unsharded, the workers given SIGTERM first (a server's clean stop
 * leaves no stale pid or lock file for its successor). */
void ks_sup_fall_back(void)
{
    ks_log_error("KTLSSHIM_SHARDS=%d: not sharding: %s; stopping the workers and starting the "
                 "program again unsharded",
                 ks_sup.plan->nslots, ks_sup.fallback_why);
    steer_to_slot0();
    restart_unsharded(ks_sup.fallback, FALLBACK_TERM_MS);
}

/* Children of the workers that ended right after checking their parent's
 * pid (daemonize.c): the program compares getppid() with a pid it recorded
 * before listen(), which fork mode changed. */
void ks_sup_check_parent_checks(void)
{
    pid_t last = 0;
    unsigned n = ks_daemon_parent_checks(&last);
    if (n < PARENT_CHECKS_MAX || ks_sup.fallback)
        return;
    ks_sup.fallback = "parent_pid_check";
    snprintf(ks_sup.fallback_why, sizeof ks_sup.fallback_why,
             "%u processes the workers forked ended within 5 s of asking their parent's "
             "pid (getppid(), the last pid %d) while that parent ran: the program compares it "
             "with a pid it recorded before listen(), which is not the worker's in fork mode",
             n, (int)last);
}
