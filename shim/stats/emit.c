/* emit.c — a record as text, and where it goes: the one-line summary on
 * stderr, the JSON object appended to KTLSSHIM_STATS.
 *
 * The JSON object goes with a single write(2) on a file opened O_APPEND, so
 * records of concurrent processes never interleave. The file is opened at
 * load, before the program can drop privileges, kept at a high fd number,
 * and checked to be still ours before each write. All of it is
 * async-signal-safe (a signal handler writes the record): no stdio, no
 * malloc, only syscalls and our own formatting into a buffer on the stack.
 * Nothing here is locked. */
#include "stats/internal.h"
#include "core/fds.h"
#include "core/libc.h"
#include "core/config.h"
#include "core/log.h"

#include <fcntl.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *const fallback_names[] = {
#define KS_FB_NAME(name, key) key,
    KS_FALLBACK_REASONS(KS_FB_NAME)
#undef KS_FB_NAME
};

const char *ks_fallback_name(enum ks_fallback r)
{
    return (unsigned)r < KS_FB_COUNT ? fallback_names[r] : "?";
}

const struct ks_counter_name ks_counter_names[KS_C_COUNT] = {
#define KS_C_NAME(name, group, key) {group, key},
    KS_COUNTERS(KS_C_NAME)
#undef KS_C_NAME
};

/* ---- the stats file ---- */

/* KTLSSHIM_STATS, opened at load; identity checked before each write. */
static int stats_fd = -1;
static dev_t stats_dev;
static ino_t stats_ino;

/* Opens the stats file and remembers its identity. Async-signal-safe. */
static int open_stats(void)
{
    const char *path = ks_config()->stats_path;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0644);
    if (fd < 0)
        return -1;
    fd = ks_fd_move_high(fd, KS_STATS_FD_ROOM);
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
        const char *g = ks_counter_names[i].group;
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
        put(b, ks_counter_names[i].key);
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

/* The summary line's runs of "text, count": each count follows its text. */
struct text_count {
    const char *text;
    enum ks_counter counter;
};

static const struct text_count tls_counts[] = {
    {", ", KS_C_TLS},
    {" TLS (1.2: ", KS_C_TLS12},
    {", 1.3: ", KS_C_TLS13},
    {", resumed ", KS_C_TLS_RESUMED},
    {"); kTLS tx ", KS_C_KTLS_TX},
    {" (sw ", KS_C_KTLS_TX_SW},
    {", nic ", KS_C_KTLS_TX_NIC},
};
static const struct text_count rx_counts[] = {
    {"", KS_C_KTLS_RX},
    {" (sw ", KS_C_KTLS_RX_SW},
    {", nic ", KS_C_KTLS_RX_NIC},
};
static const struct text_count byte_counts[] = {
    {"; bytes: kTLS tx ", KS_C_B_KTLS_TX},
    {" (sendfile ", KS_C_B_SENDFILE},
    {") rx ", KS_C_B_KTLS_RX},
    {", user-space tx ", KS_C_B_USER_TX},
    {" rx ", KS_C_B_USER_RX},
};
static const struct text_count worker_counts[] = {
    {"; workers started ", KS_C_W_STARTED},
    {", respawned ", KS_C_W_RESPAWNED},
    {", given up ", KS_C_W_GAVE_UP},
};

static void put_counts(struct buf *b, const uint64_t *c, const struct text_count *t, size_t n,
                       void (*number)(struct buf *, uint64_t))
{
    for (size_t i = 0; i < n; i++) {
        put(b, t[i].text);
        number(b, c[t[i].counter]);
    }
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
        put_counts(b, c, tls_counts, KS_ARRAY_LEN(tls_counts), put_u64);
        put(b, c[KS_C_KTLS_OFFLOAD_ESTIMATED] ? ", estimated), rx " : "), rx ");
        put_counts(b, c, rx_counts, KS_ARRAY_LEN(rx_counts), put_u64);
        put(b, "); user-space tx ");
        put_u64(b, c[KS_C_TLS] - c[KS_C_KTLS_TX]);
        format_fallbacks(b, c, KS_C_FB_TX_DISABLED);
        put(b, ", rx ");
        put_u64(b, c[KS_C_TLS] - c[KS_C_KTLS_RX]);
        format_fallbacks(b, c, KS_C_FB_RX_DISABLED);
        put_counts(b, c, byte_counts, KS_ARRAY_LEN(byte_counts), put_bytes);
    }
    if (r->role == KS_ROLE_SUPERVISOR) {
        put_counts(b, c, worker_counts, KS_ARRAY_LEN(worker_counts), put_u64);
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

void ks_stats_emit(const struct ks_record *r, const uint64_t *c, uint64_t summed, const char *end)
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

void ks_stats_end_text(char out[32], const char *what, int n)
{
    struct buf b = {out, 0, 31};
    put(&b, what);
    put(&b, " ");
    put_i64(&b, n);
    out[b.len] = '\0';
}
