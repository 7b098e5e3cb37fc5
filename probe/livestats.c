/* livestats.c — `ktls-probe --stats PID [--prometheus]`: the counters of a
 * process running under ktlsshim, read while it runs from its live area
 * (shim/live_abi.h): a memfd the process maps, found in /proc/PID/maps and
 * opened through /proc/PID/map_files (root). Given a supervisor, every
 * worker's record and their sum (recycled records included) are shown;
 * given a worker or an unsharded process, its own record.
 *
 * --prometheus prints the node_exporter textfile format instead: the
 * families KTLSSHIM_PROM_FILE holds (one formatter, shim/stats/prom.c:
 * a supervisor's workers labelled worker="N" plus worker="other", which add
 * up to the group's sum), and the kernel's /proc/net/tls_stat, whose
 * names are kept as printed in the label `counter` (metric names must be
 * snake_case): ktlsshim_kernel_tls_total (counters) and
 * ktlsshim_kernel_tls_current (TlsCurr*: gauges). */
#include "probe.h"
#include "../shim/stats/live_abi.h"
#include "../shim/stats/prom.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

struct live {
    const unsigned char *base;
    size_t size;
    const struct ks_live_header *h;
};

static const char *const role_names[] = {"process", "supervisor", "worker", "worker_child"};

static const unsigned char *record_at(const struct live *l, uint32_t offset)
{
    if (offset > l->size || l->size - offset < l->h->record_size)
        return NULL;
    return l->base + offset;
}

static uint64_t counter(const struct live *l, const unsigned char *rec, uint32_t i)
{
    (void)l;
    uint64_t v;
    memcpy(&v, rec + (size_t)i * 8, sizeof v);
    return v;
}

static int32_t field(const struct live *l, const unsigned char *rec, int f)
{
    int32_t v;
    memcpy(&v, rec + (size_t)l->h->ncounters * 8 + (size_t)f * 4, sizeof v);
    return v;
}

static const char *name_of(const struct live *l, uint32_t i, char out[KS_LIVE_NAME_LEN + 1])
{
    memcpy(out, l->base + l->h->names_offset + (size_t)i * KS_LIVE_NAME_LEN, KS_LIVE_NAME_LEN);
    out[KS_LIVE_NAME_LEN] = '\0';
    return out;
}

static const unsigned char *pool_record(const struct live *l, uint32_t k)
{
    return record_at(l, l->h->pool_records_offset + k * l->h->record_size);
}

/* The header is sane and everything it points at lies inside the area. */
static bool valid(const struct live *l)
{
    const struct ks_live_header *h = l->h;
    if (l->size < sizeof *h || h->magic != KS_LIVE_MAGIC || h->version != KS_LIVE_VERSION)
        return false;
    uint64_t rec_min = (uint64_t)h->ncounters * 8 + KS_LIVE_NFIELDS * 4;
    if (h->ncounters == 0 || h->ncounters > 4096 || h->record_size < rec_min)
        return false;
    if ((uint64_t)h->names_offset + (uint64_t)h->ncounters * KS_LIVE_NAME_LEN > l->size)
        return false;
    if (!record_at(l, h->self_offset))
        return false;
    if (h->pool_nrec) {
        if ((uint64_t)h->pool_records_offset + (uint64_t)h->pool_nrec * h->record_size > l->size)
            return false;
        if ((uint64_t)h->pool_retired_offset + ((uint64_t)h->ncounters + 1) * 8 > l->size)
            return false;
    }
    return true;
}

/* Maps every live area of pid and keeps the one that describes it: its own
 * (made by pid), else the sharded group's whose pool has a record of pid.
 * *rec is set to pid's record in a group's area, NULL for its own area. */
static int find_live(pid_t pid, struct live *out, const unsigned char **rec, char *err,
                     size_t errlen)
{
    char path[64], line[512];
    snprintf(path, sizeof path, "/proc/%d/maps", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    bool found = false, seen = false;
    int open_errno = 0;
    while (!found && fgets(line, sizeof line, f)) {
        if (!strstr(line, "/memfd:" KS_LIVE_MEMFD_NAME))
            continue;
        seen = true;
        unsigned long start, end;
        if (sscanf(line, "%lx-%lx", &start, &end) != 2 || end <= start)
            continue;
        char mf[96];
        snprintf(mf, sizeof mf, "/proc/%d/map_files/%lx-%lx", (int)pid, start, end);
        int fd = open(mf, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            open_errno = errno;
            continue;
        }
        size_t size = end - start;
        void *p = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
        close(fd);
        if (p == MAP_FAILED) {
            open_errno = errno;
            continue;
        }
        struct live l = {p, size, p};
        if (!valid(&l)) {
            munmap(p, size);
            continue;
        }
        if (l.h->pid == pid) {
            *out = l;
            *rec = NULL;
            found = true;
            break;
        }
        for (uint32_t k = 0; k < l.h->pool_nrec; k++) {
            const unsigned char *r = pool_record(&l, k);
            if (r && field(&l, r, KS_LIVE_IN_USE) && field(&l, r, KS_LIVE_PID) == pid) {
                *out = l;
                *rec = r;
                found = true;
                break;
            }
        }
        if (!found)
            munmap(p, size);
    }
    fclose(f);
    if (found)
        return 0;
    if (open_errno)
        snprintf(err, errlen, "cannot open its live stats through /proc/%d/map_files: %s%s",
                 (int)pid, strerror(open_errno),
                 open_errno == EPERM || open_errno == EACCES ? " (needs root)" : "");
    else if (seen)
        snprintf(err, errlen, "its live stats area is not one this ktls-probe can read");
    else
        snprintf(err, errlen,
                 "no live stats: the library is not loaded there, or has had "
                 "nothing to count yet");
    return -1;
}

static const char *role_of(const struct live *l, const unsigned char *r)
{
    int32_t role = field(l, r, KS_LIVE_ROLE);
    return role >= 0 && role < 4 ? role_names[role] : "?";
}

/* ---- text ---- */

static void print_record(FILE *out, const struct live *l, const unsigned char *r, bool all)
{
    char name[KS_LIVE_NAME_LEN + 1];
    fprintf(out, "pid %d %s", (int)field(l, r, KS_LIVE_PID), role_of(l, r));
    if (field(l, r, KS_LIVE_SHARD) >= 0)
        fprintf(out, " %d/%d", (int)field(l, r, KS_LIVE_SHARD), (int)field(l, r, KS_LIVE_SHARDS));
    fputc(':', out);
    for (uint32_t i = 0; i < l->h->ncounters; i++) {
        uint64_t v = counter(l, r, i);
        if (v || all)
            fprintf(out, " %s=%" PRIu64, name_of(l, i, name), v);
    }
    fputc('\n', out);
}

/* self + every record in use + the retired sum */
static void group_sum(const struct live *l, uint64_t *sum, uint64_t *nrec)
{
    const unsigned char *self = l->base + l->h->self_offset;
    const unsigned char *ret = l->base + l->h->pool_retired_offset;
    for (uint32_t i = 0; i < l->h->ncounters; i++) {
        uint64_t v;
        memcpy(&v, ret + (size_t)i * 8, sizeof v);
        sum[i] = counter(l, self, i) + v;
    }
    memcpy(nrec, ret + (size_t)l->h->ncounters * 8, sizeof *nrec);
    for (uint32_t k = 0; k < l->h->pool_nrec; k++) {
        const unsigned char *r = pool_record(l, k);
        if (!r || !field(l, r, KS_LIVE_IN_USE))
            continue;
        (*nrec)++;
        for (uint32_t i = 0; i < l->h->ncounters; i++)
            sum[i] += counter(l, r, i);
    }
}

static void report_text(FILE *out, const struct live *l, const unsigned char *mine)
{
    if (mine) {
        print_record(out, l, mine, true);
        return;
    }
    const unsigned char *self = l->base + l->h->self_offset;
    if (!l->h->pool_nrec) {
        print_record(out, l, self, true);
        return;
    }
    for (uint32_t k = 0; k < l->h->pool_nrec; k++) {
        const unsigned char *r = pool_record(l, k);
        if (r && field(l, r, KS_LIVE_IN_USE))
            print_record(out, l, r, false);
    }
    uint64_t *sum = calloc(l->h->ncounters, sizeof *sum), nrec = 0;
    if (!sum)
        return;
    group_sum(l, sum, &nrec);
    char name[KS_LIVE_NAME_LEN + 1];
    fprintf(out, "pid %d sum of %" PRIu64 " records:", (int)l->h->pid, nrec);
    for (uint32_t i = 0; i < l->h->ncounters; i++)
        fprintf(out, " %s=%" PRIu64, name_of(l, i, name), sum[i]);
    fputc('\n', out);
    free(sum);
}

/* ---- Prometheus text exposition ---- */

static void prom_kernel(FILE *out)
{
    FILE *f = fopen("/proc/net/tls_stat", "re");
    if (!f)
        return; /* no tls module: nothing to expose */
    char line[256], names[64][64];
    unsigned long long vals[64];
    int n = 0;
    while (n < 64 && fgets(line, sizeof line, f))
        if (sscanf(line, "%63s %llu", names[n], &vals[n]) == 2)
            n++;
    fclose(f);
    for (int pass = 0; pass < 2; pass++) {
        bool gauge = pass == 1;
        const char *m = gauge ? "ktlsshim_kernel_tls_current" : "ktlsshim_kernel_tls_total";
        fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", m,
                gauge ? "The kernel's current TLS connections (/proc/net/tls_stat TlsCurr*)."
                      : "The kernel's TLS counters (/proc/net/tls_stat, all but TlsCurr*).",
                m, gauge ? "gauge" : "counter");
        for (int i = 0; i < n; i++)
            if ((strncmp(names[i], "TlsCurr", 7) == 0) == gauge)
                fprintf(out, "%s{counter=\"%s\"} %llu\n", m, names[i], vals[i]);
    }
}

static void to_file(void *ctx, const char *p, size_t n)
{
    fwrite(p, 1, n, ctx);
}

/* The library's own formatter (shim/stats/prom.c): the same families as
 * KTLSSHIM_PROM_FILE, then the kernel's counters. */
static void report_prometheus(FILE *out, const struct live *l, const unsigned char *mine)
{
    uint64_t *scratch = calloc(ks_prom_scratch_words(l->base), sizeof *scratch);
    if (!scratch)
        return;
    static struct ks_prom_out o;
    o.len = 0;
    o.flush = to_file;
    o.ctx = out;
    ks_prom_format(&o, l->base, mine, NULL, scratch);
    ks_prom_flush(&o);
    free(scratch);
    prom_kernel(out);
}

int live_stats_main(pid_t pid, bool prometheus)
{
    struct live l;
    const unsigned char *mine;
    char err[256];
    if (find_live(pid, &l, &mine, err, sizeof err) != 0) {
        fprintf(stderr, "ktls-probe: --stats %d: %s\n", (int)pid, err);
        return EXIT_UNUSABLE;
    }
    if (prometheus)
        report_prometheus(stdout, &l, mine);
    else
        report_text(stdout, &l, mine);
    munmap((void *)l.base, l.size);
    return fflush(stdout) == 0 ? 0 : EXIT_UNUSABLE;
}
