/* stats.c — per-process counters, and the exit protocol that writes the
 * record built from them.
 *
 * A process counts into one record: private, or in shared memory (pool.c:
 * the live area, and the shared pool when the program is sharded; a
 * worker's child claims a record there from the first thing it counts).
 *
 * A record is written once per process, however it ends (exit, _exit, a
 * signal left at its default action, exec): a one-line summary on stderr
 * and, when KTLSSHIM_STATS names a file, one JSON object appended to it
 * (emit.c). Whichever thread gets there first writes it; another that ends
 * the process meanwhile waits for it, within bounds. A fork child starts a
 * fresh record; an unsharded child that never becomes active gives what it
 * counted to its parent's record at its end. Writing is async-signal-safe:
 * no stdio, no malloc, only syscalls and our own formatting.
 *
 * No lock here for a fork to leave held: a record being written
 * (RECORD_WRITING) is waited for within RECORD_WAIT_MAX_NS only, and a
 * fork child counts into a fresh record (ks_stats_after_fork_child). */
#include "stats/internal.h"
#include "core/libc.h"
#include "core/config.h"

#include "stats/promfile.h"
#include "stats/sigcatch.h"

#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static struct ks_record own = {.shard = -1}; /* until the area exists */
struct ks_record *ks_stats_self = &own;      /* own, or the area's copy */
struct ks_record *ks_cur = &own;
pid_t ks_self_pid;
static bool active;          /* accessed with atomics */
static int exit_status = -1; /* exit(status) seen, for the destructor's record */

/* Unsharded, a forked child that does not become active (it serves what its
 * parent handed it: a connection whose handshake the parent did) writes no
 * record of its own: when it ends, what it counted is added to the record
 * of the nearest active process it descends from, in that process's live
 * area (shared memory, still mapped here), so that the server's record
 * includes its children's bytes. NULL when there is none (or once given). */
static struct ks_record *parent_rec;
static void *parent_area;
static size_t parent_area_size;

void ks_stats_activate(void)
{
    if (__atomic_exchange_n(&active, true, __ATOMIC_ACQ_REL))
        return;
    /* A record of its own from now on: nothing goes to the parent's. */
    if (__atomic_exchange_n(&parent_rec, NULL, __ATOMIC_ACQ_REL) && parent_area)
        munmap(parent_area, parent_area_size);
    parent_area = NULL;
    ks_stats_publish_private();
    ks_signals_catch();
    ks_prom_on_active();
}

void ks_stats_mark_active(void)
{
    if (KS_UNLIKELY(!__atomic_load_n(&active, __ATOMIC_ACQUIRE))) {
        if (!__atomic_load_n(&ks_cur, __ATOMIC_ACQUIRE))
            ks_stats_claim_lazily(); /* activates */
        else
            ks_stats_activate();
    }
}

void ks_stats_accepted(void)
{
    if (KS_UNLIKELY(!__atomic_load_n(&active, __ATOMIC_RELAXED)) &&
        (ks_config()->stats_path[0] || ks_config()->prom_file[0]))
        ks_stats_mark_active();
    ks_count(KS_C_ACCEPTED, 1);
}

void ks_stats_set_shards(int shards)
{
    ks_stats_self->shards = shards;
}

void ks_stats_after_fork_child(void)
{
    own.shards = ks_stats_self->shards;
    own.role =
        ks_stats_self->role == KS_ROLE_SUPERVISOR ? KS_ROLE_WORKER_CHILD : ks_stats_self->role;
    ks_stats_self = &own;
    void *map;
    size_t size;
    struct ks_record *p = ks_stats_area_to_parent(&map, &size);
    if (p) { /* the live area inherited is the parent's */
        if (parent_area)
            munmap(parent_area, parent_area_size);
        parent_area = map;
        parent_area_size = size;
        parent_rec = p;
    }
    memset(own.c, 0, sizeof own.c);
    own.pid = 0;
    own.written = RECORD_UNWRITTEN;
    exit_status = -1;
    __atomic_store_n(&active, false, __ATOMIC_RELAXED);
    /* A worker's child claims a record of the pool only once it counts. */
    ks_cur = ks_stats_pooled() ? NULL : &own;
}

/* This thread is writing (or waiting for) the process's record: a signal
 * that ends the process arriving in the middle must not wait for itself. */
static __thread bool record_in_hand __attribute__((tls_model("initial-exec")));

#define RECORD_WAIT_MAX_NS 2000000000LL /* a writer stuck on a full stderr pipe */

/* Another thread is writing the record: the caller is about to end the
 * process (h2o's threads each call _exit when their last connection
 * closes; exit() in one thread races _exit in another), and ending it now
 * would kill the writer halfway. So wait until it is out, within bounds.
 * Async-signal-safe: only clock_gettime and nanosleep. */
static void wait_for_record(const struct ks_record *r)
{
    KS_SAVE_ERRNO;
    struct timespec start, now, nap = {0, 200000};
    clock_gettime(CLOCK_MONOTONIC, &start);
    while (__atomic_load_n(&r->written, __ATOMIC_ACQUIRE) == RECORD_WRITING) {
        nanosleep(&nap, NULL);
        clock_gettime(CLOCK_MONOTONIC, &now);
        long long ns = (now.tv_sec - start.tv_sec) * 1000000000LL + (now.tv_nsec - start.tv_nsec);
        if (ns > RECORD_WAIT_MAX_NS)
            break;
    }
    KS_RESTORE_ERRNO;
}

/* An inactive child's counts go to its parent's record (parent_rec), once;
 * each counter is taken with an exchange, so a thread still counting loses
 * nothing to a double count. Async-signal-safe. */
static void give_to_parent(void)
{
    if (__atomic_load_n(&active, __ATOMIC_ACQUIRE) ||
        __atomic_load_n(&ks_cur, __ATOMIC_ACQUIRE) != &own)
        return;
    struct ks_record *p = __atomic_exchange_n(&parent_rec, NULL, __ATOMIC_ACQ_REL);
    if (!p)
        return;
    for (int i = 0; i < KS_C_COUNT; i++) {
        uint64_t v = __atomic_exchange_n(&own.c[i], 0, __ATOMIC_RELAXED);
        if (v)
            __atomic_fetch_add(&p->c[i], v, __ATOMIC_RELAXED);
    }
}

void ks_stats_write_own(const char *end)
{
    give_to_parent();
    struct ks_record *r = __atomic_load_n(&ks_cur, __ATOMIC_ACQUIRE);
    if (!__atomic_load_n(&active, __ATOMIC_ACQUIRE) || !r || r->role == KS_ROLE_SUPERVISOR)
        return;
    if (record_in_hand)
        return; /* a signal in this thread's own write or wait */
    record_in_hand = true;
    int32_t was = RECORD_UNWRITTEN;
    if (!__atomic_compare_exchange_n(&r->written, &was, RECORD_WRITING, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE)) {
        if (was == RECORD_WRITING)
            wait_for_record(r);
        record_in_hand = false;
        return;
    }
    if (!r->pid)
        r->pid = (int32_t)getpid();
    uint64_t c[KS_C_COUNT];
    ks_stats_snapshot(r, c);
    ks_stats_emit(r, c, 0, end);
    __atomic_store_n(&r->written, RECORD_WRITTEN, __ATOMIC_RELEASE);
    record_in_hand = false;
}

static bool owner(void)
{
    return getpid() == ks_self_pid;
}

void ks_stats_note_exit_status(int status)
{
    if (owner())
        exit_status = status & 0xff;
}

void ks_stats_at_destructor(void)
{
    if (!owner())
        return;
    char end[32] = "exit";
    if (exit_status >= 0)
        ks_stats_end_text(end, "exit", exit_status);
    ks_stats_write_own(end);
    ks_prom_final();
}

void ks_stats_at_exit(int status)
{
    if (!owner())
        return;
    char end[32];
    ks_stats_end_text(end, "exit", status & 0xff);
    ks_stats_write_own(end);
    ks_prom_final();
}

void ks_stats_at_signal(int sig)
{
    if (!owner())
        return;
    char end[32];
    ks_stats_end_text(end, "signal", sig);
    ks_stats_write_own(end);
    ks_prom_final();
}

void ks_stats_at_exec(void)
{
    if (owner()) {
        give_to_parent();
        ks_prom_final();
    }
    if (!owner() || !__atomic_load_n(&active, __ATOMIC_ACQUIRE))
        return;
    struct ks_record *r = __atomic_load_n(&ks_cur, __ATOMIC_ACQUIRE);
    if (!r || r->role == KS_ROLE_SUPERVISOR)
        return;
    ks_stats_write_own("exec");
    /* From here the process is as if new: nothing counted, nothing caught. */
    ks_signals_release();
    __atomic_store_n(&active, false, __ATOMIC_RELEASE);
    if (!ks_stats_pool_at_exec(r)) {
        for (int i = 0; i < KS_C_COUNT; i++)
            __atomic_store_n(&r->c[i], 0, __ATOMIC_RELAXED);
        __atomic_store_n(&r->written, RECORD_UNWRITTEN, __ATOMIC_RELEASE);
    }
}

void ks_stats_write_for(int idx, const char *end)
{
    struct ks_record *r = ks_stats_pool_record(idx);
    if (!r)
        return;
    int32_t was = RECORD_UNWRITTEN;
    if (!__atomic_compare_exchange_n(&r->written, &was, RECORD_WRITING, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE))
        return; /* the worker wrote it (or died writing it) */
    uint64_t c[KS_C_COUNT];
    ks_stats_snapshot(r, c);
    ks_stats_emit(r, c, 0, end);
    __atomic_store_n(&r->written, RECORD_WRITTEN, __ATOMIC_RELEASE);
}

void ks_stats_write_supervisor(const char *end)
{
    uint64_t sum[KS_C_COUNT];
    ks_stats_snapshot(ks_stats_self, sum);
    uint64_t summed = ks_stats_pool_sum(sum);
    ks_stats_emit(ks_stats_self, sum, summed, end);
}
