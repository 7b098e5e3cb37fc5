/* promfile.c — KTLSSHIM_PROM_FILE: the live counters where Prometheus
 * collects them, as a node_exporter textfile (the families of prom.c).
 *
 * Who writes: one process per file. Sharded, the supervisor, from its wait
 * loop (supervisor.c asks ks_prom_due_ms and calls ks_prom_tick): the file
 * holds every worker and their sum. Unsharded, a thread made the moment the
 * process becomes active (its first accept or TLS connection), only when
 * the variable is set: the file holds that process's own record. A process
 * forked later has no such thread and starts none: the processes of one
 * tree elect their writer through a shared word made at load (the first to
 * become active), so the workers of a prefork server that does not shard
 * never overwrite each other's files (the file then shows the one that
 * won: docs/config.md says to shard such servers, the supervisor's sum
 * covers them all).
 *
 * How: the text goes to "<file>.<pid>.tmp" in the same directory (not a
 * *.prom name: node_exporter skips it), which is then renamed over the
 * file, so a reader sees the old file or the new one, never half of one.
 * On an error (no directory, no permission, a full disk) the temp file is
 * removed, one line goes to stderr (once per distinct error) and the next
 * write tries again; the server is not disturbed. The hot path does
 * nothing: the writer reads the counters from the live area.
 *
 * The writer's end (exit, a deadly signal, exec, the supervisor's finish)
 * writes the file a last time, so that it holds the final counts; it is
 * left in place (node_exporter reports its mtime: a stale file is visible,
 * and counters that vanish would read as resets).
 *
 * Only syscalls and our own formatting: async-signal-safe, no lock held
 * across a fork (a write in progress is an atomic flag that only the
 * writer process ever takes), the library's own write (ks_libc). */
#include "stats/promfile.h"
#include "stats/internal.h"
#include "stats/prom.h"
#include "core/config.h"
#include "core/fds.h"
#include "core/libc.h"
#include "core/log.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static int32_t *elected;   /* shared (MAP_SHARED): the tree's unsharded writer, 0 none */
static pid_t writer_pid;   /* this process writes the file (thread or supervisor) */
static int busy;           /* atomic: a write in progress in the writer process */
static bool final_written; /* atomic */
static bool thread_made;
static int64_t due_ms = -1; /* supervisor: the next write */
static uint64_t *scratch;   /* mmap'd, ks_prom_scratch_words of the area */
static uint64_t *carried;   /* supervisor, mmap'd: KS_MAX_SHARDS x KS_C_COUNT (prom.h) */
static size_t scratch_bytes;

static bool enabled(void)
{
    const struct ks_config *c = ks_config();
    return c->prom_file[0] && !c->in_worker;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- one line per distinct error ---- */

/* Room for the path (config.c: under 4064 bytes) and what goes with it. */
struct text {
    char p[4096 + 256];
    size_t len;
};

static void add(struct text *t, const char *s)
{
    while (*s && t->len < sizeof t->p - 1)
        t->p[t->len++] = *s++;
}

static void add_num(struct text *t, uint64_t v)
{
    char d[24];
    size_t n = 0;
    do
        d[n++] = (char)('0' + v % 10);
    while ((v /= 10) && n < sizeof d);
    while (n && t->len < sizeof t->p - 1)
        t->p[t->len++] = d[--n];
}

static struct {
    int stage, err;
} reported[8];
static int nreported;

/* Once per (stage, errno) in the life of the writer. Writer-only (under
 * `busy`). */
static void report(int stage, const char *what, int err)
{
    for (int i = 0; i < nreported; i++)
        if (reported[i].stage == stage && reported[i].err == err)
            return;
    if (nreported < (int)KS_ARRAY_LEN(reported))
        reported[nreported++] = (typeof(reported[0])){stage, err};
    struct text t = {.len = 0};
    add(&t, "ktlsshim[");
    add_num(&t, (uint64_t)getpid());
    add(&t, "]: KTLSSHIM_PROM_FILE=");
    add(&t, ks_config()->prom_file);
    add(&t, ": ");
    add(&t, what);
    add(&t, ": ");
    const char *desc = strerrordesc_np(err);
    add(&t, desc ? desc : "error");
    add(&t, "; the server goes on, the file is tried again every ");
    add_num(&t, (uint64_t)ks_config()->prom_interval);
    add(&t, " s\n");
    t.p[t.len - 1] = '\n'; /* a line, even cut short */
    ks_log_raw(t.p, t.len);
}

/* ---- the write ---- */

struct sink {
    int fd;
    int err; /* the first write error: nothing more is written */
};

static void to_fd(void *ctx, const char *p, size_t n)
{
    struct sink *s = ctx;
    while (n && !s->err) {
        ssize_t w = ks_libc()->write(s->fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            s->err = w < 0 ? errno : EIO;
            break;
        }
        p += w;
        n -= (size_t)w;
    }
}

static bool have_scratch(const unsigned char *area)
{
    size_t need = ks_prom_scratch_words(area) * sizeof(uint64_t);
    if (scratch && scratch_bytes >= need)
        return true;
    if (scratch)
        munmap(scratch, scratch_bytes);
    void *p = mmap(NULL, need, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    scratch = p == MAP_FAILED ? NULL : p;
    scratch_bytes = p == MAP_FAILED ? 0 : need;
    return scratch != NULL;
}

enum { ST_AREA, ST_CREATE, ST_WRITE, ST_RENAME };

/* Writes the file once; the caller holds `busy`. */
static void write_file(void)
{
    const unsigned char *area = ks_stats_live_area();
    if (!area || !have_scratch(area)) {
        report(ST_AREA, "no live counters to write (no shared memory)", ENOMEM);
        return;
    }
    const char *path = ks_config()->prom_file;
    struct text tmp = {.len = 0};
    add(&tmp, path);
    add(&tmp, ".");
    add_num(&tmp, (uint64_t)getpid());
    add(&tmp, ".tmp");
    tmp.p[tmp.len] = '\0';
    int fd = open(tmp.p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0644);
    if (fd < 0) {
        report(ST_CREATE, "cannot create its temporary file", errno);
        return;
    }
    fd = ks_fd_move_high(fd, KS_STATS_FD_ROOM);
    struct sink s = {fd, 0};
    static struct ks_prom_out out; /* one write at a time: `busy` */
    out.len = 0;
    out.flush = to_fd;
    out.ctx = &s;
    ks_prom_format(&out, area, NULL, carried, scratch);
    ks_prom_flush(&out);
    if (close(fd) != 0 && !s.err && errno != EINTR)
        s.err = errno;
    if (s.err) {
        unlink(tmp.p);
        report(ST_WRITE, "cannot write it", s.err);
        return;
    }
    if (rename(tmp.p, path) != 0) {
        int err = errno;
        unlink(tmp.p);
        report(ST_RENAME, "cannot rename its temporary file over it", err);
    }
}

/* One write, unless another is in progress (it will have the counts) or
 * the last one is made (this one would be cut short by the process's
 * end, its temp file left behind). */
static void write_if_free(void)
{
    KS_SAVE_ERRNO;
    if (!__atomic_exchange_n(&busy, 1, __ATOMIC_ACQUIRE)) {
        if (!__atomic_load_n(&final_written, __ATOMIC_ACQUIRE))
            write_file();
        __atomic_store_n(&busy, 0, __ATOMIC_RELEASE);
    }
    KS_RESTORE_ERRNO;
}

/* ---- unsharded: the writer thread ---- */

static void *writer_main(void *arg)
{
    (void)arg;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    for (;;) {
        /* Once the process is a supervisor, its tick writes (the pool). */
        if (!ks_stats_pooled())
            write_if_free();
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        next.tv_sec += ks_config()->prom_interval;
        if (next.tv_sec < now.tv_sec) /* a write slower than the interval: no catching up */
            next.tv_sec = now.tv_sec + ks_config()->prom_interval;
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR)
            ;
    }
    return NULL;
}

void ks_prom_load(void)
{
    if (!enabled())
        return;
    void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    elected = p == MAP_FAILED ? NULL : p;
}

void ks_prom_on_active(void)
{
    if (!enabled() || thread_made || ks_stats_pooled() || getpid() != ks_self_pid)
        return;
    KS_SAVE_ERRNO;
    int32_t none = 0;
    if (elected && !__atomic_compare_exchange_n(elected, &none, (int32_t)getpid(), false,
                                                __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        KS_RESTORE_ERRNO;
        return; /* another process of the tree writes the file */
    }
    thread_made = true;
    writer_pid = getpid();
    /* The thread takes no signal: the program's go to its own threads. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 128 * 1024);
    pthread_t t;
    int err = pthread_create(&t, &attr, writer_main, NULL);
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err)
        ks_log_error("KTLSSHIM_PROM_FILE: cannot start the thread that writes it: %s; "
                     "the file is written only when the process ends",
                     strerror(err));
    else
        pthread_setname_np(t, "ktlsshim-prom");
    KS_RESTORE_ERRNO;
}

/* ---- sharded: the supervisor's tick ---- */

int64_t ks_prom_due_ms(void)
{
    if (!enabled())
        return -1;
    if (writer_pid != getpid()) { /* the supervisor's first wait: write at once */
        writer_pid = getpid();
        if (elected)
            __atomic_store_n(elected, (int32_t)writer_pid, __ATOMIC_RELEASE);
        due_ms = now_ms();
    }
    return due_ms;
}

void ks_prom_tick(int64_t now)
{
    if (due_ms < 0 || now < due_ms || writer_pid != getpid())
        return;
    write_if_free();
    due_ms = now + (int64_t)ks_config()->prom_interval * 1000;
}

/* The pool's retired sum does not say whose counts it holds: the
 * supervisor, which retires the records of workers that ended, keeps each
 * slot's share here, so that a worker's series never goes down when the
 * worker ends or is replaced (Prometheus would read a reset, and rate()
 * would count its counts twice, once more in "other"). */
void ks_prom_retired(int shard, const uint64_t *c)
{
    if (!enabled() || writer_pid != getpid() || shard < 0 || shard >= KS_MAX_SHARDS)
        return;
    if (!carried) {
        size_t size = (size_t)KS_MAX_SHARDS * KS_C_COUNT * sizeof(uint64_t);
        KS_SAVE_ERRNO;
        void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        KS_RESTORE_ERRNO;
        if (p == MAP_FAILED)
            return; /* they stay in "other": the sums are exact still */
        carried = p;
    }
    for (int i = 0; i < KS_C_COUNT; i++)
        carried[(size_t)shard * KS_C_COUNT + i] += c[i];
}

/* ---- the end ---- */

#define FINAL_WAIT_MAX_NS 2000000000LL /* a write stuck on a slow disk */

void ks_prom_final(void)
{
    if (!writer_pid || writer_pid != getpid() ||
        __atomic_exchange_n(&final_written, true, __ATOMIC_ACQ_REL))
        return;
    KS_SAVE_ERRNO;
    /* The thread may be writing: wait for it, within bounds (it takes no
     * signal, so this is never the thread waiting for itself). */
    struct timespec start, now, nap = {0, 200000};
    clock_gettime(CLOCK_MONOTONIC, &start);
    while (__atomic_exchange_n(&busy, 1, __ATOMIC_ACQUIRE)) {
        nanosleep(&nap, NULL);
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((now.tv_sec - start.tv_sec) * 1000000000LL + (now.tv_nsec - start.tv_nsec) >
            FINAL_WAIT_MAX_NS) {
            KS_RESTORE_ERRNO;
            return;
        }
    }
    write_file();
    __atomic_store_n(&busy, 0, __ATOMIC_RELEASE);
    KS_RESTORE_ERRNO;
}
