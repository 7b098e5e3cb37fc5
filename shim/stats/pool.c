/* pool.c — the live area and the shared pool of records.
 *
 * The live area (live_abi.h) is shared memory that holds the process's own
 * record, with the counters' names, so that `ktls-probe --stats` reads it
 * while the process runs: a memfd it finds by name, or anonymous memory
 * where there can be no memfd. Unsharded, a process publishes its record
 * there when it becomes active.
 *
 * Sharded, the supervisor's area also holds the pool, mapped before it
 * forks: every worker, and every child a worker forks (from the first thing
 * it counts), counts into a record of its own there, so counts survive a
 * worker killed with SIGKILL and the supervisor sums them all at the end.
 * Records of processes that are gone are recycled: their counts move to the
 * pool's retired sum first (each counter taken with an exchange), so sums
 * stay exact however many processes come and go. Claiming a record is one
 * compare-and-exchange on its `in_use`, no lock: a fork in the middle
 * leaves the child nothing to wait for (the claiming thread finishes in
 * the parent, in the shared memory). */
#include "stats/internal.h"
#include "core/libc.h"
#include "core/common.h"

#include "stats/live_abi.h"
#include "stats/promfile.h"

#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define POOL_RECORDS 1024

struct ks_pool {
    uint32_t nrec;
    uint32_t hint;                      /* atomic: where the next search for a free record starts */
    uint64_t retired[KS_C_COUNT];       /* atomic: counts of records since recycled */
    uint64_t retired_records;           /* atomic: how many records those were */
    struct ks_record rec[POOL_RECORDS]; /* the last one is the overflow */
};

/* The live area (live_abi.h): where `ktls-probe --stats` reads the records
 * while the process runs. */
struct ks_area {
    struct ks_live_header h;
    char names[KS_C_COUNT][KS_LIVE_NAME_LEN];
    struct ks_record self;
    struct ks_pool pool; /* sharded only: the unsharded area ends before it */
};

static struct ks_area *area;
static size_t area_size;
static bool keep_area_fd; /* exec mode: the supervisor passes the pool to workers by fd */
static int area_fd = -1;
static struct ks_pool *pool;
static int lineage_shard = -1; /* the worker this process descends from */

/* Under a seccomp filter, a syscall the filter does not expect may kill the
 * process (memfd_create is newer than many filters): no memfd then. Also
 * when it cannot be told (no /proc). */
static bool under_seccomp_filter(void)
{
    char buf[4096];
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return true;
    size_t got = 0;
    ssize_t r;
    while (got < sizeof buf - 1 && (r = ks_libc()->read(fd, buf + got, sizeof buf - 1 - got)) > 0)
        got += (size_t)r;
    close(fd);
    buf[got] = '\0';
    const char *p = strstr(buf, "\nSeccomp:");
    if (!p)
        return false; /* a kernel without seccomp */
    p += strlen("\nSeccomp:");
    while (*p == ' ' || *p == '\t')
        p++;
    return *p != '0';
}

/* Maps a live area: a memfd (the library keeps no fd: the mapping is
 * enough), or anonymous shared memory where there can be no memfd. */
static struct ks_area *map_area(size_t size, bool *named)
{
    KS_SAVE_ERRNO;
    void *p = MAP_FAILED;
    int fd = under_seccomp_filter() ? -1 : memfd_create(KS_LIVE_MEMFD_NAME, MFD_CLOEXEC);
    *named = false;
    if (fd >= 0) {
        if (ftruncate(fd, (off_t)size) == 0) {
            p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            *named = p != MAP_FAILED;
        }
        if (keep_area_fd && p != MAP_FAILED)
            area_fd = ks_stats_move_high(fd);
        else
            close(fd);
    }
    if (p == MAP_FAILED)
        p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    KS_RESTORE_ERRNO;
    if (p == MAP_FAILED)
        return NULL;
    struct ks_area *a = p;
    for (int i = 0; i < KS_C_COUNT; i++) {
        size_t g = strlen(ks_counter_names[i].group), k = strlen(ks_counter_names[i].key);
        if (g + 1 + k < KS_LIVE_NAME_LEN) {
            memcpy(a->names[i], ks_counter_names[i].group, g);
            a->names[i][g] = '.';
            memcpy(a->names[i] + g + 1, ks_counter_names[i].key, k);
        }
    }
    a->h.version = KS_LIVE_VERSION;
    a->h.ncounters = KS_C_COUNT;
    a->h.record_size = sizeof(struct ks_record);
    a->h.names_offset = offsetof(struct ks_area, names);
    a->h.self_offset = offsetof(struct ks_area, self);
    a->h.pid = (int32_t)getpid();
    return a;
}

/* The process's own record moves into a new live area. */
static void publish_self(size_t size)
{
    bool named;
    struct ks_area *a = map_area(size, &named);
    if (!a)
        return; /* counts stay private: no live view */
    a->self = *ks_stats_self;
    for (int i = 0; i < KS_C_COUNT; i++)
        a->self.c[i] = 0;
    a->self.pid = (int32_t)getpid();
    area = a;
    area_size = size;
    struct ks_record *old = ks_stats_self;
    ks_stats_self = &a->self;
    struct ks_record *expect = old;
    __atomic_compare_exchange_n(&ks_cur, &expect, ks_stats_self, false, __ATOMIC_ACQ_REL,
                                __ATOMIC_ACQUIRE);
    /* what was counted before (and what a racing thread added meanwhile) */
    for (int i = 0; i < KS_C_COUNT; i++)
        __atomic_fetch_add(&ks_stats_self->c[i],
                           __atomic_exchange_n(&old->c[i], 0, __ATOMIC_RELAXED), __ATOMIC_RELAXED);
    if (named)
        __atomic_store_n(&a->h.magic, KS_LIVE_MAGIC, __ATOMIC_RELEASE);
}

/* ---- the shared pool ---- */

bool ks_stats_make_shared(void)
{
    struct ks_area *old_area = area;
    size_t old_size = area_size;
    area = NULL;
    publish_self(sizeof(struct ks_area));
    if (!area) {
        area = old_area;
        return false;
    }
    if (old_area)
        munmap(old_area, old_size); /* its counts moved into the new one */
    area->h.pool_nrec = POOL_RECORDS;
    area->h.pool_records_offset = offsetof(struct ks_area, pool.rec);
    area->h.pool_retired_offset = offsetof(struct ks_area, pool.retired);
    pool = &area->pool;
    pool->nrec = POOL_RECORDS;
    ks_stats_self->role = KS_ROLE_SUPERVISOR;
    ks_stats_self->pid = (int32_t)getpid();
    ks_stats_activate();
    return true;
}

/* Exec mode (execmode.c): the supervisor's pool is a memfd it keeps open, so
 * that workers it execs can map the same pool (the fd is their only way to
 * it: an exec leaves no mapping behind). -1 when the pool is anonymous
 * memory (no memfd here): workers then count privately. */
bool ks_stats_make_shared_for_exec(int *fd_out)
{
    keep_area_fd = true;
    bool ok = ks_stats_make_shared();
    keep_area_fd = false;
    *fd_out = ok ? area_fd : -1;
    return ok;
}

/* In an exec-mode worker, at load: map the supervisor's pool from fd (then
 * closed) and count into record idx, which the supervisor claimed for it. */
bool ks_stats_attach_shared(int fd, int idx)
{
    struct stat st;
    size_t size = sizeof(struct ks_area);
    void *p = MAP_FAILED;
    if (fstat(fd, &st) == 0 && (size_t)st.st_size == size)
        p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED)
        return false;
    struct ks_area *a = p;
    if (a->h.version != KS_LIVE_VERSION || a->h.record_size != sizeof(struct ks_record) ||
        a->pool.nrec != POOL_RECORDS || idx < 0 || idx >= POOL_RECORDS - 1) {
        munmap(p, size);
        return false;
    }
    area = a;
    area_size = size;
    pool = &a->pool;
    ks_stats_self = &a->self;
    ks_stats_adopt(idx, getpid());
    return true;
}

/* Moves a record's counts to the retired sum (exactly: each counter is
 * taken with an exchange, so concurrent increments land on one side);
 * what was taken goes to taken[] too, if given. */
static void retire_counts(struct ks_record *r, bool whole_record, uint64_t *taken)
{
    for (int i = 0; i < KS_C_COUNT; i++) {
        uint64_t v = __atomic_exchange_n(&r->c[i], 0, __ATOMIC_RELAXED);
        if (v)
            __atomic_fetch_add(&pool->retired[i], v, __ATOMIC_RELAXED);
        if (taken)
            taken[i] = v;
    }
    if (whole_record)
        __atomic_fetch_add(&pool->retired_records, 1, __ATOMIC_RELAXED);
}

static bool process_gone(pid_t pid)
{
    KS_SAVE_ERRNO;
    bool gone = pid > 0 && kill(pid, 0) != 0 && errno == ESRCH;
    KS_RESTORE_ERRNO;
    return gone;
}

/* A free record (in_use 0), else the record of a worker's child that has
 * been reaped (its process is gone: it wrote its record, or could not). The
 * record returned is in state 2, zeroed. -1 if there is none. */
static int find_free_record(void)
{
    uint32_t n = pool->nrec - 1;
    uint32_t start = __atomic_fetch_add(&pool->hint, 1, __ATOMIC_RELAXED) % n;
    for (uint32_t k = 0; k < n; k++) {
        uint32_t i = (start + k) % n;
        int32_t expect = 0;
        if (__atomic_compare_exchange_n(&pool->rec[i].in_use, &expect, 2, false, __ATOMIC_ACQ_REL,
                                        __ATOMIC_RELAXED))
            return (int)i;
    }
    for (uint32_t k = 0; k < n; k++) {
        uint32_t i = (start + k) % n;
        struct ks_record *r = &pool->rec[i];
        if (__atomic_load_n(&r->in_use, __ATOMIC_ACQUIRE) != 1 || r->role != KS_ROLE_WORKER_CHILD ||
            !process_gone(r->pid))
            continue;
        int32_t expect = 1;
        if (__atomic_compare_exchange_n(&r->in_use, &expect, 2, false, __ATOMIC_ACQ_REL,
                                        __ATOMIC_RELAXED)) {
            retire_counts(r, true, NULL);
            return (int)i;
        }
    }
    return -1;
}

static int claim(enum ks_role role, int shard, pid_t pid)
{
    int idx = find_free_record();
    struct ks_record *r;
    if (idx < 0) {
        idx = (int)pool->nrec - 1; /* overflow: shared by the late-comers */
        r = &pool->rec[idx];
        r->role = KS_ROLE_WORKER_CHILD;
        r->shard = -1;
        r->pid = (int32_t)pid;
    } else {
        r = &pool->rec[idx];
        r->role = role;
        r->shard = shard;
        r->pid = (int32_t)pid;
        __atomic_store_n(&r->written, RECORD_UNWRITTEN, __ATOMIC_RELAXED);
    }
    r->shards = ks_stats_self->shards;
    __atomic_store_n(&r->in_use, 1, __ATOMIC_RELEASE);
    return idx;
}

int ks_stats_claim(enum ks_role role, int shard)
{
    if (!pool)
        return -1;
    return claim(role, shard, 0);
}

struct ks_record *ks_stats_claim_lazily(void)
{
    struct ks_record *r = __atomic_load_n(&ks_cur, __ATOMIC_ACQUIRE);
    if (r)
        return r;
    int idx = claim(KS_ROLE_WORKER_CHILD, lineage_shard, getpid());
    struct ks_record *mine = &pool->rec[idx];
    struct ks_record *expect = NULL;
    if (!__atomic_compare_exchange_n(&ks_cur, &expect, mine, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE)) {
        /* another thread claimed first: give ours back */
        if (idx != (int)pool->nrec - 1)
            __atomic_store_n(&pool->rec[idx].in_use, 0, __ATOMIC_RELEASE); /* nothing counted */
        mine = expect;
    }
    ks_stats_activate();
    return mine;
}

void ks_stats_adopt(int idx, pid_t pid)
{
    if (!pool || idx < 0)
        return;
    ks_cur = &pool->rec[idx];
    ks_cur->pid = (int32_t)pid;
    lineage_shard = ks_cur->shard;
    ks_self_pid = pid;
    ks_stats_activate();
}

void ks_stats_release(int idx)
{
    if (!pool || idx < 0 || idx >= (int)pool->nrec - 1)
        return;
    struct ks_record *r = &pool->rec[idx];
    int32_t expect = 1;
    if (!__atomic_compare_exchange_n(&r->in_use, &expect, 2, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_RELAXED))
        return;
    uint64_t taken[KS_C_COUNT];
    retire_counts(r, true, taken);
    ks_prom_retired(r->shard, taken); /* the textfile keeps them under their worker */
    __atomic_store_n(&r->written, RECORD_UNWRITTEN, __ATOMIC_RELAXED);
    __atomic_store_n(&r->in_use, 0, __ATOMIC_RELEASE);
}

void ks_stats_publish_private(void)
{
    if (!pool && !area)
        publish_self(offsetof(struct ks_area, pool));
}

bool ks_stats_pooled(void)
{
    return pool != NULL;
}

struct ks_record *ks_stats_area_to_parent(void **map, size_t *size)
{
    if (!area || pool)
        return NULL;
    *map = area;
    *size = area_size;
    struct ks_record *r = &area->self;
    area = NULL;
    return r;
}

bool ks_stats_pool_at_exec(struct ks_record *r)
{
    if (!pool || r == ks_stats_self)
        return false;
    int idx = (int)(r - pool->rec);
    if (r->role == KS_ROLE_WORKER_CHILD) {
        __atomic_store_n(&ks_cur, NULL, __ATOMIC_RELEASE);
        ks_stats_release(idx);
    } else {
        /* a worker keeps its record (the supervisor watches it): its
         * counts so far move to the retired sum */
        retire_counts(r, false, NULL);
        __atomic_store_n(&r->written, RECORD_UNWRITTEN, __ATOMIC_RELEASE);
    }
    return true;
}

struct ks_record *ks_stats_pool_record(int idx)
{
    if (!pool || idx < 0 || idx >= (int)pool->nrec - 1)
        return NULL;
    return &pool->rec[idx];
}

uint64_t ks_stats_pool_sum(uint64_t *sum)
{
    uint64_t c[KS_C_COUNT];
    uint64_t summed = __atomic_load_n(&pool->retired_records, __ATOMIC_RELAXED);
    for (int k = 0; k < KS_C_COUNT; k++)
        sum[k] += __atomic_load_n(&pool->retired[k], __ATOMIC_RELAXED);
    for (uint32_t i = 0; i < pool->nrec; i++) {
        if (!__atomic_load_n(&pool->rec[i].in_use, __ATOMIC_ACQUIRE))
            continue;
        ks_stats_snapshot(&pool->rec[i], c);
        for (int k = 0; k < KS_C_COUNT; k++)
            sum[k] += c[k];
        summed++;
    }
    return summed;
}

const unsigned char *ks_stats_live_area(void)
{
    return (const unsigned char *)area;
}
