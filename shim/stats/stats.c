/* stats.c — per-process counters and the records built from them.
 *
 * A process counts into one record. Unsharded, that record is private.
 * When the program is sharded, the supervisor maps a shared pool before it
 * forks: every worker (and every child a worker forks, from the first thing
 * it counts) counts into a record of its own in that pool, so counts survive
 * a worker killed with SIGKILL, and the supervisor's final record is the sum
 * of them all. Records of processes that are gone are recycled: their counts
 * move to the pool's retired sum first, so sums stay exact however many
 * processes come and go.
 *
 * A record is written once per process, however it ends (exit, _exit, a
 * signal left at its default action, exec): a one-line summary on stderr
 * and, when KTLSSHIM_STATS names a file, one JSON object appended to it with
 * a single write(2) (O_APPEND), so concurrent processes never interleave.
 * The file is opened at load, before the program can drop privileges, and
 * checked to be still ours before each write. Writing is async-signal-safe:
 * no stdio, no malloc, only syscalls and our own formatting. */
#include "stats/stats.h"
#include "core/libc.h"
#include "core/config.h"
#include "core/log.h"

#include "stats/live_abi.h"
#include "stats/sigcatch.h"

#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define POOL_RECORDS 1024

/* A record's `written` (atomic). */
enum { RECORD_UNWRITTEN = 0, RECORD_WRITING = 1, RECORD_WRITTEN = 2 };

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

static struct ks_record own = {.shard = -1}; /* until the area exists */
static struct ks_record *self_rec = &own;    /* own, or the area's copy */
struct ks_record *ks_cur = &own;
static struct ks_area *area;
static size_t area_size;
static bool keep_area_fd; /* exec mode: the supervisor passes the pool to workers by fd */
static int area_fd = -1;
pid_t ks_self_pid;
static struct ks_pool *pool;
static bool active;            /* accessed with atomics */
static int lineage_shard = -1; /* the worker this process descends from */
static int exit_status = -1;   /* exit(status) seen, for the destructor's record */

/* Unsharded, a forked child that does not become active (it serves what its
 * parent handed it: a connection whose handshake the parent did) writes no
 * record of its own: when it ends, what it counted is added to the record
 * of the nearest active process it descends from, in that process's live
 * area (shared memory, still mapped here), so that the server's record
 * includes its children's bytes. NULL when there is none (or once given). */
static struct ks_record *parent_rec;
static struct ks_area *parent_area;
static size_t parent_area_size;

/* KTLSSHIM_STATS, opened at load; identity checked before each write. */
static int stats_fd = -1;
static dev_t stats_dev;
static ino_t stats_ino;

static const char *const fallback_names[] = {
#define KS_FB_NAME(name, key) key,
    KS_FALLBACK_REASONS(KS_FB_NAME)
#undef KS_FB_NAME
};

const char *ks_fallback_name(enum ks_fallback r)
{
    return (unsigned)r < KS_FB_COUNT ? fallback_names[r] : "?";
}

static const struct {
    const char *group, *key;
} counter_names[] = {
#define KS_C_NAME(name, group, key) {group, key},
    KS_COUNTERS(KS_C_NAME)
#undef KS_C_NAME
};

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

static int move_high(int fd);

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
            area_fd = move_high(fd);
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
        size_t g = strlen(counter_names[i].group), k = strlen(counter_names[i].key);
        if (g + 1 + k < KS_LIVE_NAME_LEN) {
            memcpy(a->names[i], counter_names[i].group, g);
            a->names[i][g] = '.';
            memcpy(a->names[i] + g + 1, counter_names[i].key, k);
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
    a->self = *self_rec;
    for (int i = 0; i < KS_C_COUNT; i++)
        a->self.c[i] = 0;
    a->self.pid = (int32_t)getpid();
    area = a;
    area_size = size;
    struct ks_record *old = self_rec;
    self_rec = &a->self;
    struct ks_record *expect = old;
    __atomic_compare_exchange_n(&ks_cur, &expect, self_rec, false, __ATOMIC_ACQ_REL,
                                __ATOMIC_ACQUIRE);
    /* what was counted before (and what a racing thread added meanwhile) */
    for (int i = 0; i < KS_C_COUNT; i++)
        __atomic_fetch_add(&self_rec->c[i], __atomic_exchange_n(&old->c[i], 0, __ATOMIC_RELAXED),
                           __ATOMIC_RELAXED);
    if (named)
        __atomic_store_n(&a->h.magic, KS_LIVE_MAGIC, __ATOMIC_RELEASE);
}

static void activate(void)
{
    if (__atomic_exchange_n(&active, true, __ATOMIC_ACQ_REL))
        return;
    /* A record of its own from now on: nothing goes to the parent's. */
    if (__atomic_exchange_n(&parent_rec, NULL, __ATOMIC_ACQ_REL) && parent_area)
        munmap(parent_area, parent_area_size);
    parent_area = NULL;
    if (!pool && !area)
        publish_self(offsetof(struct ks_area, pool));
    ks_signals_catch();
}

void ks_stats_mark_active(void)
{
    if (KS_UNLIKELY(!__atomic_load_n(&active, __ATOMIC_ACQUIRE))) {
        if (!__atomic_load_n(&ks_cur, __ATOMIC_ACQUIRE))
            ks_stats_claim_lazily(); /* activates */
        else
            activate();
    }
}

void ks_stats_accepted(void)
{
    if (KS_UNLIKELY(!__atomic_load_n(&active, __ATOMIC_RELAXED)) && ks_config()->stats_path[0])
        ks_stats_mark_active();
    ks_count(KS_C_ACCEPTED, 1);
}

void ks_stats_set_shards(int shards)
{
    self_rec->shards = shards;
}

/* ---- the stats file ---- */

/* Moves fd out of the way of the fd numbers programs expect (0-2, systemd's
 * 3.., the lowest free ones): to the top of the first 1024, which select()
 * users keep free of nothing of ours since we never select() it. */
static int move_high(int fd)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return fd;
    rlim_t top = rl.rlim_cur < 1024 ? rl.rlim_cur : 1024;
    if (top <= 64 || (rlim_t)fd >= top - 32)
        return fd;
    int nfd = fcntl(fd, F_DUPFD_CLOEXEC, (int)(top - 32));
    if (nfd < 0)
        return fd;
    close(fd);
    return nfd;
}

/* Opens the stats file and remembers its identity. Async-signal-safe. */
static int open_stats(void)
{
    const char *path = ks_config()->stats_path;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0644);
    if (fd < 0)
        return -1;
    fd = move_high(fd);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        KS_SAVE_ERRNO;
        close(fd);
        KS_RESTORE_ERRNO;
        return -1;
    }
    stats_dev = st.st_dev;
    stats_ino = st.st_ino;
    __atomic_store_n(&stats_fd, fd, __ATOMIC_RELEASE);
    return fd;
}

void ks_stats_open_file(void)
{
    if (!ks_config()->stats_path[0])
        return;
    KS_SAVE_ERRNO;
    if (open_stats() < 0)
        ks_log_error("KTLSSHIM_STATS=%s: cannot open it: %s; will try again at exit",
                     ks_config()->stats_path, strerror(errno));
    KS_RESTORE_ERRNO;
}

/* The stats fd if it is still the file we opened (the program may have
 * closed it and opened something else at that number: that one is the
 * program's, left alone); else the file opened again, which fails if the
 * process has dropped the privileges it needs. Async-signal-safe. */
static int stats_file(void)
{
    int fd = __atomic_load_n(&stats_fd, __ATOMIC_ACQUIRE);
    struct stat st;
    if (fd >= 0 && fstat(fd, &st) == 0 && st.st_dev == stats_dev && st.st_ino == stats_ino)
        return fd;
    return open_stats();
}

void ks_stats_keep_file(void)
{
    if (!ks_config()->stats_path[0])
        return;
    KS_SAVE_ERRNO;
    (void)stats_file();
    KS_RESTORE_ERRNO;
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
    self_rec->role = KS_ROLE_SUPERVISOR;
    self_rec->pid = (int32_t)getpid();
    activate();
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
    self_rec = &a->self;
    ks_stats_adopt(idx, getpid());
    return true;
}

/* Moves a record's counts to the retired sum (exactly: each counter is
 * taken with an exchange, so concurrent increments land on one side). */
static void retire_counts(struct ks_record *r, bool whole_record)
{
    for (int i = 0; i < KS_C_COUNT; i++) {
        uint64_t v = __atomic_exchange_n(&r->c[i], 0, __ATOMIC_RELAXED);
        if (v)
            __atomic_fetch_add(&pool->retired[i], v, __ATOMIC_RELAXED);
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
            retire_counts(r, true);
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
    r->shards = self_rec->shards;
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
    activate();
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
    activate();
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
    retire_counts(r, true);
    __atomic_store_n(&r->written, RECORD_UNWRITTEN, __ATOMIC_RELAXED);
    __atomic_store_n(&r->in_use, 0, __ATOMIC_RELEASE);
}

void ks_stats_after_fork_child(void)
{
    own.shards = self_rec->shards;
    own.role = self_rec->role == KS_ROLE_SUPERVISOR ? KS_ROLE_WORKER_CHILD : self_rec->role;
    self_rec = &own;
    if (area && !pool) { /* the parent's live area is the parent's */
        if (parent_area)
            munmap(parent_area, parent_area_size);
        parent_area = area;
        parent_area_size = area_size;
        parent_rec = &area->self;
        area = NULL;
    }
    memset(own.c, 0, sizeof own.c);
    own.pid = 0;
    own.written = RECORD_UNWRITTEN;
    exit_status = -1;
    __atomic_store_n(&active, false, __ATOMIC_RELAXED);
    /* A worker's child claims a record of the pool only once it counts. */
    ks_cur = pool ? NULL : &own;
}

/* ---- formatting (async-signal-safe: no stdio, no malloc) ---- */

struct buf {
    char *p;
    size_t len, cap;
};

static void put(struct buf *b, const char *str)
{
    while (*str && b->len < b->cap)
        b->p[b->len++] = *str++;
}

static void put_u64(struct buf *b, uint64_t v)
{
    char tmp[21];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n > 0 && b->len < b->cap)
        b->p[b->len++] = tmp[--n];
}

static void put_i64(struct buf *b, int64_t v)
{
    if (v < 0) {
        put(b, "-");
        put_u64(b, (uint64_t)0 - (uint64_t)v);
    } else {
        put_u64(b, (uint64_t)v);
    }
}

static const char *role_name(int role)
{
    switch (role) {
    case KS_ROLE_SUPERVISOR:
        return "supervisor";
    case KS_ROLE_WORKER:
        return "worker";
    case KS_ROLE_WORKER_CHILD:
        return "worker_child";
    default:
        return "process";
    }
}

/* 1536 -> "1.5 KiB" (one decimal, rounded down). */
static void put_bytes(struct buf *b, uint64_t v)
{
    static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    uint64_t div = 1;
    while (u < 4 && v / div >= 1024) {
        div *= 1024;
        u++;
    }
    put_u64(b, v / div);
    if (u > 0) {
        put(b, ".");
        put_u64(b, (v % div) * 10 / div);
    }
    put(b, " ");
    put(b, unit[u]);
}

/* The program's name (the thread's comm; no file to open), made safe for
 * JSON. */
static void program_name(char out[17])
{
    memset(out, 0, 17);
    if (prctl(PR_GET_NAME, out, 0, 0, 0) != 0)
        out[0] = '\0';
    for (char *p = out; *p; p++)
        if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20)
            *p = '_';
}

static unsigned long openssl_num; /* atomic; 0: no OpenSSL hooked */

void ks_stats_set_openssl(unsigned long version_num)
{
    __atomic_store_n(&openssl_num, version_num, __ATOMIC_RELAXED);
}

/* An OpenSSL_version_num() as OpenSSL writes it: 0x1010117f "1.1.1w",
 * 0x30000020 "3.0.2" (3.x: MNN00PP0). */
static void put_openssl(struct buf *b, unsigned long n)
{
    put_u64(b, (n >> 28) & 0xf);
    put(b, ".");
    put_u64(b, (n >> 20) & 0xff);
    put(b, ".");
    if (n >> 28 >= 3) {
        put_u64(b, (n >> 4) & 0xff);
        return;
    }
    put_u64(b, (n >> 12) & 0xff);
    unsigned long letter = (n >> 4) & 0xff; /* 1: a, ... 26: z */
    if (letter >= 1 && letter <= 26) {
        char l[2] = {(char)('a' + letter - 1), 0};
        put(b, l);
    }
}

/* The fallback that started this image unsharded (daemonize.c), for the
 * record of that pid only. */
static const char *fallback_token;
static pid_t fallback_pid;

void ks_stats_set_fallback(const char *token, pid_t pid)
{
    fallback_token = token;
    fallback_pid = pid;
}

static void format_json(struct buf *b, const struct ks_record *r, const uint64_t *c,
                        uint64_t summed, const char *end)
{
    char prog[17];
    program_name(prog);
    put(b, "{\"ktlsshim\":1,\"time\":");
    put_i64(b, (int64_t)time(NULL));
    put(b, ",\"pid\":");
    put_i64(b, r->pid);
    put(b, ",\"program\":\"");
    put(b, prog);
    put(b, "\",\"role\":\"");
    put(b, role_name(r->role));
    put(b, "\",\"shard\":");
    put_i64(b, r->shard);
    put(b, ",\"shards\":");
    put_i64(b, r->shards ? r->shards : 1);
    put(b, ",\"end\":\"");
    put(b, end);
    put(b, "\"");
    unsigned long ossl = __atomic_load_n(&openssl_num, __ATOMIC_RELAXED);
    if (ossl && r->role != KS_ROLE_SUPERVISOR) {
        put(b, ",\"openssl\":\"");
        put_openssl(b, ossl);
        put(b, "\"");
    }
    const char *fb = fallback_pid && r->pid == fallback_pid ? fallback_token : NULL;
    if (fb) {
        put(b, ",\"shard_fallback\":\"");
        put(b, fb);
        put(b, "\"");
    }
    if (r->role == KS_ROLE_SUPERVISOR) {
        put(b, ",\"summed_records\":");
        put_u64(b, summed);
    }
    const char *group = NULL;
    for (int i = 0; i < KS_C_COUNT; i++) {
        const char *g = counter_names[i].group;
        if (strcmp(g, "workers") == 0 && r->role != KS_ROLE_SUPERVISOR)
            continue;
        if (!group || strcmp(group, g) != 0) {
            put(b, group ? "}," : ",");
            put(b, "\"");
            put(b, g);
            put(b, "\":{");
            group = g;
        } else {
            put(b, ",");
        }
        put(b, "\"");
        put(b, counter_names[i].key);
        put(b, "\":");
        put_u64(b, c[i]);
    }
    put(b, group ? "}}\n" : "}\n");
}

static void format_fallbacks(struct buf *b, const uint64_t *c, int first)
{
    bool any = false;
    for (int i = 0; i < KS_FB_COUNT; i++) {
        if (!c[first + i])
            continue;
        put(b, any ? ", " : " (");
        put(b, fallback_names[i]);
        put(b, " ");
        put_u64(b, c[first + i]);
        any = true;
    }
    if (any)
        put(b, ")");
}

static void format_line(struct buf *b, const struct ks_record *r, const uint64_t *c,
                        uint64_t summed, const char *end)
{
    put(b, "ktlsshim[");
    put_i64(b, r->pid);
    put(b, "]: ");
    switch (r->role) {
    case KS_ROLE_SUPERVISOR:
        put(b, "supervisor of ");
        put_i64(b, r->shards);
        put(b, " workers, ");
        put(b, end);
        put(b, ", sum of ");
        put_u64(b, summed);
        put(b, " records: ");
        break;
    case KS_ROLE_WORKER:
        put(b, "worker ");
        put_i64(b, r->shard);
        put(b, "/");
        put_i64(b, r->shards);
        put(b, " ");
        put(b, end);
        put(b, ": ");
        break;
    case KS_ROLE_WORKER_CHILD:
        put(b, "child of worker ");
        put_i64(b, r->shard);
        put(b, " ");
        put(b, end);
        put(b, ": ");
        break;
    default:
        put(b, end);
        put(b, ": ");
    }
    put_u64(b, c[KS_C_ACCEPTED]);
    put(b, " accepted");
    if (c[KS_C_TLS] == 0) {
        put(b, ", no TLS connections");
    } else {
        put(b, ", ");
        put_u64(b, c[KS_C_TLS]);
        put(b, " TLS (1.2: ");
        put_u64(b, c[KS_C_TLS12]);
        put(b, ", 1.3: ");
        put_u64(b, c[KS_C_TLS13]);
        put(b, ", resumed ");
        put_u64(b, c[KS_C_TLS_RESUMED]);
        put(b, "); kTLS tx ");
        put_u64(b, c[KS_C_KTLS_TX]);
        put(b, " (sw ");
        put_u64(b, c[KS_C_KTLS_TX_SW]);
        put(b, ", nic ");
        put_u64(b, c[KS_C_KTLS_TX_NIC]);
        put(b, c[KS_C_KTLS_OFFLOAD_ESTIMATED] ? ", estimated), rx " : "), rx ");
        put_u64(b, c[KS_C_KTLS_RX]);
        put(b, " (sw ");
        put_u64(b, c[KS_C_KTLS_RX_SW]);
        put(b, ", nic ");
        put_u64(b, c[KS_C_KTLS_RX_NIC]);
        put(b, "); user-space tx ");
        put_u64(b, c[KS_C_TLS] - c[KS_C_KTLS_TX]);
        format_fallbacks(b, c, KS_C_FB_TX_DISABLED);
        put(b, ", rx ");
        put_u64(b, c[KS_C_TLS] - c[KS_C_KTLS_RX]);
        format_fallbacks(b, c, KS_C_FB_RX_DISABLED);
        put(b, "; bytes: kTLS tx ");
        put_bytes(b, c[KS_C_B_KTLS_TX]);
        put(b, " (sendfile ");
        put_bytes(b, c[KS_C_B_SENDFILE]);
        put(b, ") rx ");
        put_bytes(b, c[KS_C_B_KTLS_RX]);
        put(b, ", user-space tx ");
        put_bytes(b, c[KS_C_B_USER_TX]);
        put(b, " rx ");
        put_bytes(b, c[KS_C_B_USER_RX]);
    }
    if (r->role == KS_ROLE_SUPERVISOR) {
        put(b, "; workers started ");
        put_u64(b, c[KS_C_W_STARTED]);
        put(b, ", respawned ");
        put_u64(b, c[KS_C_W_RESPAWNED]);
        put(b, ", given up ");
        put_u64(b, c[KS_C_W_GAVE_UP]);
        if (c[KS_C_W_RELOADED]) { /* only where a rolling restart happened */
            put(b, ", replaced by a rolling restart ");
            put_u64(b, c[KS_C_W_RELOADED]);
        }
    }
    if (b->len >= b->cap)
        b->len = b->cap - 1;
    b->p[b->len++] = '\n';
}

/* One message on stderr, async-signal-safe: "ktlsshim[pid]: a: strerror". */
static void say_failed(const char *what, int err)
{
    char mem[512];
    struct buf b = {mem, 0, sizeof mem - 1};
    put(&b, "ktlsshim[");
    put_i64(&b, getpid());
    put(&b, "]: ");
    put(&b, what);
    put(&b, ": errno ");
    put_i64(&b, err);
    put(&b, err == EACCES || err == EPERM ? " (permission denied: privileges dropped?)"
            : err == EBADF                ? " (bad file descriptor)"
                                          : "");
    mem[b.len++] = '\n';
    ks_log_raw(mem, b.len);
}

static void emit(const struct ks_record *r, const uint64_t *c, uint64_t summed, const char *end)
{
    KS_SAVE_ERRNO;
    const struct ks_config *cfg = ks_config();
    char mem[4096];
    struct buf b = {mem, 0, sizeof mem};
    if (cfg->log_level >= KS_LOG_INFO) {
        format_line(&b, r, c, summed, end);
        ks_log_raw(b.p, b.len);
    }
    if (cfg->stats_path[0]) {
        b.len = 0;
        format_json(&b, r, c, summed, end);
        int fd = stats_file();
        if (fd < 0) {
            say_failed("cannot open KTLSSHIM_STATS to write this process's record", errno);
        } else {
            ssize_t w;
            do
                w = ks_libc()->write(fd, b.p, b.len);
            while (w < 0 && errno == EINTR);
            if (w != (ssize_t)b.len)
                say_failed("writing the stats record to KTLSSHIM_STATS failed",
                           w < 0 ? errno : EIO);
        }
    }
    KS_RESTORE_ERRNO;
}

static void snapshot(const struct ks_record *r, uint64_t *c)
{
    for (int i = 0; i < KS_C_COUNT; i++)
        c[i] = __atomic_load_n(&r->c[i], __ATOMIC_RELAXED);
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
    snapshot(r, c);
    emit(r, c, 0, end);
    __atomic_store_n(&r->written, RECORD_WRITTEN, __ATOMIC_RELEASE);
    record_in_hand = false;
}

/* "exit 3", "signal 15" */
static void end_text(char out[32], const char *what, int n)
{
    struct buf b = {out, 0, 31};
    put(&b, what);
    put(&b, " ");
    put_i64(&b, n);
    out[b.len] = '\0';
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
        end_text(end, "exit", exit_status);
    ks_stats_write_own(end);
}

void ks_stats_at_exit(int status)
{
    if (!owner())
        return;
    char end[32];
    end_text(end, "exit", status & 0xff);
    ks_stats_write_own(end);
}

void ks_stats_at_signal(int sig)
{
    if (!owner())
        return;
    char end[32];
    end_text(end, "signal", sig);
    ks_stats_write_own(end);
}

void ks_stats_at_exec(void)
{
    if (owner())
        give_to_parent();
    if (!owner() || !__atomic_load_n(&active, __ATOMIC_ACQUIRE))
        return;
    struct ks_record *r = __atomic_load_n(&ks_cur, __ATOMIC_ACQUIRE);
    if (!r || r->role == KS_ROLE_SUPERVISOR)
        return;
    ks_stats_write_own("exec");
    /* From here the process is as if new: nothing counted, nothing caught. */
    ks_signals_release();
    __atomic_store_n(&active, false, __ATOMIC_RELEASE);
    if (pool && r != self_rec) {
        int idx = (int)(r - pool->rec);
        if (r->role == KS_ROLE_WORKER_CHILD) {
            __atomic_store_n(&ks_cur, NULL, __ATOMIC_RELEASE);
            ks_stats_release(idx);
        } else {
            /* a worker keeps its record (the supervisor watches it): its
             * counts so far move to the retired sum */
            retire_counts(r, false);
            __atomic_store_n(&r->written, RECORD_UNWRITTEN, __ATOMIC_RELEASE);
        }
    } else {
        for (int i = 0; i < KS_C_COUNT; i++)
            __atomic_store_n(&r->c[i], 0, __ATOMIC_RELAXED);
        __atomic_store_n(&r->written, RECORD_UNWRITTEN, __ATOMIC_RELEASE);
    }
}

void ks_stats_write_for(int idx, const char *end)
{
    if (!pool || idx < 0 || idx >= (int)pool->nrec - 1)
        return;
    struct ks_record *r = &pool->rec[idx];
    int32_t was = RECORD_UNWRITTEN;
    if (!__atomic_compare_exchange_n(&r->written, &was, RECORD_WRITING, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE))
        return; /* the worker wrote it (or died writing it) */
    uint64_t c[KS_C_COUNT];
    snapshot(r, c);
    emit(r, c, 0, end);
    __atomic_store_n(&r->written, RECORD_WRITTEN, __ATOMIC_RELEASE);
}

void ks_stats_write_supervisor(const char *end)
{
    uint64_t sum[KS_C_COUNT], c[KS_C_COUNT];
    uint64_t summed = __atomic_load_n(&pool->retired_records, __ATOMIC_RELAXED);
    snapshot(self_rec, sum);
    for (int k = 0; k < KS_C_COUNT; k++)
        sum[k] += __atomic_load_n(&pool->retired[k], __ATOMIC_RELAXED);
    for (uint32_t i = 0; i < pool->nrec; i++) {
        if (!__atomic_load_n(&pool->rec[i].in_use, __ATOMIC_ACQUIRE))
            continue;
        snapshot(&pool->rec[i], c);
        for (int k = 0; k < KS_C_COUNT; k++)
            sum[k] += c[k];
        summed++;
    }
    emit(self_rec, sum, summed, end);
}
