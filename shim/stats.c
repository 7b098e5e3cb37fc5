/* stats.c — per-process counters and the exit records.
 *
 * A process counts into one record. Unsharded, that record is private.
 * When the program is sharded, the supervisor maps a shared pool before it
 * forks: every worker (and every child a worker forks) counts into a record
 * of its own in that pool, so counts survive a worker killed with SIGKILL,
 * and the supervisor's final record is the sum of them all.
 *
 * Records are written once, at exit: a one-line summary on stderr and, when
 * KTLSSHIM_STATS names a file, one JSON object appended to it with a single
 * write(2) (O_APPEND), so concurrent processes never interleave. */
#include "stats.h"
#include "config.h"
#include "log.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define POOL_RECORDS 1024

struct ks_pool {
    uint32_t nrec;
    uint32_t next;       /* atomic: next free record */
    struct ks_record rec[POOL_RECORDS]; /* the last one is the overflow */
};

static struct ks_record own = {.shard = -1};
struct ks_record *ks_cur = &own;
static struct ks_pool *pool;
static bool active; /* accessed with relaxed atomics */

static const char *const fallback_names[] = {
#define KS_FB_NAME(name, key) key,
    KS_FALLBACK_REASONS(KS_FB_NAME)
#undef KS_FB_NAME
};

const char *ks_fallback_name(enum ks_fallback r)
{
    return (unsigned)r < KS_FB_COUNT ? fallback_names[r] : "?";
}

static const struct { const char *group, *key; } counter_names[] = {
#define KS_C_NAME(name, group, key) {group, key},
    KS_COUNTERS(KS_C_NAME)
#undef KS_C_NAME
};

void ks_stats_mark_active(void)
{
    __atomic_store_n(&active, true, __ATOMIC_RELAXED);
}

void ks_stats_set_shards(int shards)
{
    own.shards = shards;
}

bool ks_stats_make_shared(void)
{
    void *p = mmap(NULL, sizeof(struct ks_pool), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return false;
    pool = p;
    pool->nrec = POOL_RECORDS;
    own.role = KS_ROLE_SUPERVISOR;
    own.pid = (int32_t)getpid();
    active = true;
    return true;
}

int ks_stats_claim(enum ks_role role, int shard)
{
    if (!pool)
        return -1;
    uint32_t i = __atomic_fetch_add(&pool->next, 1, __ATOMIC_RELAXED);
    struct ks_record *r;
    int idx;
    if (i >= pool->nrec - 1) {
        idx = (int)pool->nrec - 1; /* overflow: shared by the late-comers */
        r = &pool->rec[idx];
        r->role = KS_ROLE_WORKER_CHILD;
        r->shard = -1;
    } else {
        idx = (int)i;
        r = &pool->rec[idx];
        r->role = role;
        r->shard = shard;
    }
    r->shards = own.shards;
    __atomic_store_n(&r->in_use, 1, __ATOMIC_RELEASE);
    return idx;
}

void ks_stats_adopt(int idx, pid_t pid)
{
    if (!pool || idx < 0)
        return;
    ks_cur = &pool->rec[idx];
    ks_cur->pid = (int32_t)pid;
    active = true;
}

void ks_stats_after_fork_child(void)
{
    if (pool) {
        int parent_shard = ks_cur->shard;
        int idx = ks_stats_claim(KS_ROLE_WORKER_CHILD, parent_shard);
        ks_cur = &pool->rec[idx];
        ks_cur->pid = (int32_t)getpid();
        /* A worker's child is active only once it does something itself. */
        active = false;
    } else {
        memset(own.c, 0, sizeof own.c);
        own.pid = 0;
        active = false;
    }
}

/* ---- formatting ---- */

struct buf {
    char *p;
    size_t len, cap;
};

static void put(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct buf *b, const char *fmt, ...)
{
    if (b->len >= b->cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        b->len = b->len + (size_t)n < b->cap ? b->len + (size_t)n : b->cap;
}

static const char *role_name(int role)
{
    switch (role) {
    case KS_ROLE_SUPERVISOR: return "supervisor";
    case KS_ROLE_WORKER: return "worker";
    case KS_ROLE_WORKER_CHILD: return "worker_child";
    default: return "process";
    }
}

static void human_bytes(char *out, size_t n, uint64_t v)
{
    static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double d = (double)v;
    int u = 0;
    while (d >= 1024 && u < 4) {
        d /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(out, n, "%llu B", (unsigned long long)v);
    else
        snprintf(out, n, "%.1f %s", d, unit[u]);
}

static void program_name(char *out, size_t n)
{
    int fd = open("/proc/self/comm", O_RDONLY | O_CLOEXEC);
    ssize_t r = fd >= 0 ? read(fd, out, n - 1) : -1;
    if (fd >= 0)
        close(fd);
    if (r <= 0)
        r = 0;
    out[r] = '\0';
    char *nl = strchr(out, '\n');
    if (nl)
        *nl = '\0';
    for (char *p = out; *p; p++) /* keep the JSON simple and safe */
        if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20)
            *p = '_';
}

static void format_json(struct buf *b, const struct ks_record *r, const uint64_t *c,
                        int summed, const char *end)
{
    char prog[64];
    program_name(prog, sizeof prog);
    put(b, "{\"ktlsshim\":1,\"time\":%lld,\"pid\":%d,\"program\":\"%s\",\"role\":\"%s\","
           "\"shard\":%d,\"shards\":%d,\"end\":\"%s\"",
        (long long)time(NULL), (int)r->pid, prog, role_name(r->role), (int)r->shard,
        (int)(r->shards ? r->shards : 1), end);
    if (r->role == KS_ROLE_SUPERVISOR)
        put(b, ",\"summed_records\":%d", summed);
    const char *group = NULL;
    for (int i = 0; i < KS_C_COUNT; i++) {
        const char *g = counter_names[i].group;
        if (strcmp(g, "workers") == 0 && r->role != KS_ROLE_SUPERVISOR)
            continue;
        if (!group || strcmp(group, g) != 0) {
            put(b, "%s,\"%s\":{", group ? "}" : "", g);
            group = g;
        } else {
            put(b, ",");
        }
        put(b, "\"%s\":%llu", counter_names[i].key, (unsigned long long)c[i]);
    }
    put(b, "%s}\n", group ? "}" : "");
}

static void format_fallbacks(struct buf *b, const uint64_t *c, int first)
{
    bool any = false;
    for (int i = 0; i < KS_FB_COUNT; i++) {
        if (!c[first + i])
            continue;
        put(b, "%s%s %llu", any ? ", " : " (", fallback_names[i], (unsigned long long)c[first + i]);
        any = true;
    }
    if (any)
        put(b, ")");
}

static void format_line(struct buf *b, const struct ks_record *r, const uint64_t *c,
                        int summed, const char *end)
{
    put(b, "ktlsshim[%d]: ", (int)r->pid);
    switch (r->role) {
    case KS_ROLE_SUPERVISOR:
        put(b, "supervisor of %d workers, %s, sum of %d records: ", (int)r->shards, end, summed);
        break;
    case KS_ROLE_WORKER:
        put(b, "worker %d/%d %s: ", (int)r->shard, (int)r->shards, end);
        break;
    case KS_ROLE_WORKER_CHILD:
        put(b, "child of worker %d %s: ", (int)r->shard, end);
        break;
    default:
        put(b, "%s: ", end);
    }
    put(b, "%llu accepted", (unsigned long long)c[KS_C_ACCEPTED]);
    if (c[KS_C_TLS] == 0) {
        put(b, ", no TLS connections");
    } else {
        char kt[32], kr[32], sf[32], ut[32], ur[32];
        human_bytes(kt, sizeof kt, c[KS_C_B_KTLS_TX]);
        human_bytes(kr, sizeof kr, c[KS_C_B_KTLS_RX]);
        human_bytes(sf, sizeof sf, c[KS_C_B_SENDFILE]);
        human_bytes(ut, sizeof ut, c[KS_C_B_USER_TX]);
        human_bytes(ur, sizeof ur, c[KS_C_B_USER_RX]);
        put(b, ", %llu TLS (1.2: %llu, 1.3: %llu, resumed %llu); kTLS tx %llu (sw %llu, nic %llu%s), rx %llu "
               "(sw %llu, nic %llu)",
            (unsigned long long)c[KS_C_TLS], (unsigned long long)c[KS_C_TLS12],
            (unsigned long long)c[KS_C_TLS13], (unsigned long long)c[KS_C_TLS_RESUMED],
            (unsigned long long)c[KS_C_KTLS_TX],
            (unsigned long long)c[KS_C_KTLS_TX_SW], (unsigned long long)c[KS_C_KTLS_TX_NIC],
            c[KS_C_KTLS_OFFLOAD_ESTIMATED] ? ", estimated" : "",
            (unsigned long long)c[KS_C_KTLS_RX], (unsigned long long)c[KS_C_KTLS_RX_SW],
            (unsigned long long)c[KS_C_KTLS_RX_NIC]);
        put(b, "; user-space tx %llu",
            (unsigned long long)(c[KS_C_TLS] - c[KS_C_KTLS_TX]));
        format_fallbacks(b, c, KS_C_FB_TX_DISABLED);
        put(b, ", rx %llu", (unsigned long long)(c[KS_C_TLS] - c[KS_C_KTLS_RX]));
        format_fallbacks(b, c, KS_C_FB_RX_DISABLED);
        put(b, "; bytes: kTLS tx %s (sendfile %s) rx %s, user-space tx %s rx %s", kt, sf, kr,
            ut, ur);
    }
    if (r->role == KS_ROLE_SUPERVISOR)
        put(b, "; workers started %llu, respawned %llu, given up %llu",
            (unsigned long long)c[KS_C_W_STARTED], (unsigned long long)c[KS_C_W_RESPAWNED],
            (unsigned long long)c[KS_C_W_GAVE_UP]);
    if (b->len >= b->cap)
        b->len = b->cap - 1;
    b->p[b->len++] = '\n';
}

static void emit(const struct ks_record *r, const uint64_t *c, int summed, const char *end)
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
        int fd = open(cfg->stats_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (fd >= 0) {
            if (write(fd, b.p, b.len) != (ssize_t)b.len)
                ks_log_error("writing the stats record to %s failed", cfg->stats_path);
            close(fd);
        }
    }
    KS_RESTORE_ERRNO;
}

static void snapshot(const struct ks_record *r, uint64_t *c)
{
    for (int i = 0; i < KS_C_COUNT; i++)
        c[i] = __atomic_load_n(&r->c[i], __ATOMIC_RELAXED);
}

void ks_stats_write_own(const char *end)
{
    if (!__atomic_load_n(&active, __ATOMIC_RELAXED) || ks_cur->role == KS_ROLE_SUPERVISOR)
        return;
    if (__atomic_exchange_n(&ks_cur->written, 1, __ATOMIC_ACQ_REL))
        return;
    if (!ks_cur->pid)
        ks_cur->pid = (int32_t)getpid();
    uint64_t c[KS_C_COUNT];
    snapshot(ks_cur, c);
    emit(ks_cur, c, 0, end);
}

void ks_stats_write_for(int idx, const char *end)
{
    if (!pool || idx < 0 || idx >= (int)pool->nrec - 1)
        return;
    struct ks_record *r = &pool->rec[idx];
    if (__atomic_exchange_n(&r->written, 1, __ATOMIC_ACQ_REL))
        return;
    uint64_t c[KS_C_COUNT];
    snapshot(r, c);
    emit(r, c, 0, end);
}

void ks_stats_write_supervisor(const char *end)
{
    uint64_t sum[KS_C_COUNT], c[KS_C_COUNT];
    int summed = 0;
    snapshot(&own, sum);
    for (uint32_t i = 0; i < pool->nrec; i++) {
        if (!__atomic_load_n(&pool->rec[i].in_use, __ATOMIC_ACQUIRE))
            continue;
        snapshot(&pool->rec[i], c);
        for (int k = 0; k < KS_C_COUNT; k++)
            sum[k] += c[k];
        summed++;
    }
    emit(&own, sum, summed, end);
}
