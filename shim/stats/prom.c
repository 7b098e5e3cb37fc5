/* prom.c — the Prometheus text exposition of a live stats area (prom.h).
 *
 * Names follow Prometheus' conventions, derived from each counter's
 * "group.key" (stats.h's table, copied into the area):
 *   - a counter is ktlsshim_<group>_<key>_total;
 *   - bytes (group "bytes") are ktlsshim_<key>_bytes_total (the unit last);
 *   - the fallback reasons are one family, ktlsshim_fallback_total, with
 *     labels direction ("tx", "rx") and reason (the JSON key);
 *   - a sharded group also has the gauge ktlsshim_summed_records.
 * One # HELP and # TYPE per family. Labels: worker (prom.h). Values are
 * read with relaxed atomic loads: the process counts while we read. */
#include "stats/prom.h"
#include "stats/live_abi.h"

#include <string.h>

struct area {
    const unsigned char *base;
    const struct ks_live_header *h;
};

static uint64_t load_u64(const unsigned char *p)
{
    if (((uintptr_t)p & 7) == 0)
        return __atomic_load_n((const uint64_t *)(const void *)p, __ATOMIC_RELAXED);
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static int32_t field(const struct area *a, const unsigned char *rec, int f)
{
    int32_t v;
    memcpy(&v, rec + (size_t)a->h->ncounters * 8 + (size_t)f * 4, sizeof v);
    return v;
}

static const unsigned char *pool_rec(const struct area *a, uint32_t k)
{
    return a->base + a->h->pool_records_offset + (size_t)k * a->h->record_size;
}

/* ---- output ---- */

void ks_prom_flush(struct ks_prom_out *o)
{
    if (o->len)
        o->flush(o->ctx, o->buf, o->len);
    o->len = 0;
}

static void put_n(struct ks_prom_out *o, const char *s, size_t n)
{
    while (n) {
        if (o->len == sizeof o->buf)
            ks_prom_flush(o);
        size_t k = sizeof o->buf - o->len;
        if (k > n)
            k = n;
        memcpy(o->buf + o->len, s, k);
        o->len += k;
        s += k;
        n -= k;
    }
}

static void put(struct ks_prom_out *o, const char *s)
{
    put_n(o, s, strlen(s));
}

static void put_u64(struct ks_prom_out *o, uint64_t v)
{
    char d[24];
    int n = 0;
    do
        d[sizeof d - 1 - n++] = (char)('0' + v % 10);
    while ((v /= 10) && n < (int)sizeof d);
    put_n(o, d + sizeof d - n, (size_t)n);
}

/* A name's characters as Prometheus allows them ([a-z0-9_]; anything
 * else, from a newer library's table, becomes '_'). */
static void put_name(struct ks_prom_out *o, const char *s, size_t n)
{
    for (size_t i = 0; i < n && s[i]; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
        put_n(o, ok ? &c : "_", 1);
    }
}

/* ---- names ---- */

struct name {
    char full[KS_LIVE_NAME_LEN + 1];
    size_t group_len; /* "group" of "group.key" */
    const char *key;
};

static void name_of(const struct area *a, uint32_t i, struct name *n)
{
    memcpy(n->full, a->base + a->h->names_offset + (size_t)i * KS_LIVE_NAME_LEN, KS_LIVE_NAME_LEN);
    n->full[KS_LIVE_NAME_LEN] = '\0';
    const char *dot = strchr(n->full, '.');
    n->group_len = dot ? (size_t)(dot - n->full) : strlen(n->full);
    n->key = dot ? dot + 1 : "";
}

static bool in_group(const struct name *n, const char *group)
{
    return n->group_len == strlen(group) && strncmp(n->full, group, n->group_len) == 0;
}

static bool is_fallback(const struct name *n)
{
    return in_group(n, "fallback_tx") || in_group(n, "fallback_rx");
}

static void put_family(struct ks_prom_out *o, const struct name *n)
{
    put(o, "ktlsshim_");
    if (in_group(n, "bytes")) {
        put_name(o, n->key, strlen(n->key));
        put(o, "_bytes_total");
        return;
    }
    put_name(o, n->full, n->group_len);
    put(o, "_");
    put_name(o, n->key, strlen(n->key));
    put(o, "_total");
}

/* ---- series ---- */

/* The series of the area: how many, and the counts of each in scratch
 * (series s, counter i at scratch[s * ncounters + i]). */
static uint32_t sum_series(const struct area *a, uint64_t *scratch, int32_t *shards,
                           const uint64_t *carried)
{
    uint32_t nc = a->h->ncounters;
    const unsigned char *self = a->base + a->h->self_offset;
    *shards = a->h->pool_nrec ? field(a, self, KS_LIVE_SHARDS) : 0;
    if (*shards < 1 || *shards > 1024)
        *shards = a->h->pool_nrec ? 1 : 0;
    uint32_t nseries = (uint32_t)*shards + 1;
    memset(scratch, 0, (size_t)nseries * nc * sizeof *scratch);
    uint64_t *other = scratch + (size_t)(nseries - 1) * nc;
    for (uint32_t i = 0; i < nc; i++)
        other[i] = load_u64(self + (size_t)i * 8);
    if (!a->h->pool_nrec)
        return nseries;
    const unsigned char *ret = a->base + a->h->pool_retired_offset;
    for (uint32_t i = 0; i < nc; i++)
        other[i] += load_u64(ret + (size_t)i * 8);
    for (uint32_t k = 0; k < a->h->pool_nrec; k++) {
        const unsigned char *r = pool_rec(a, k);
        if (!__atomic_load_n(
                (const int32_t *)(const void *)(r + (size_t)nc * 8 + KS_LIVE_IN_USE * 4),
                __ATOMIC_ACQUIRE))
            continue;
        int32_t w = field(a, r, KS_LIVE_SHARD);
        uint64_t *dst = w >= 0 && w < *shards ? scratch + (size_t)w * nc : other;
        for (uint32_t i = 0; i < nc; i++)
            dst[i] += load_u64(r + (size_t)i * 8);
    }
    /* what ended workers counted: in the retired sum, shown as theirs */
    for (int32_t w = 0; carried && w < *shards; w++)
        for (uint32_t i = 0; i < nc; i++) {
            uint64_t v = carried[(size_t)w * nc + i];
            v = v < other[i] ? v : other[i];
            scratch[(size_t)w * nc + i] += v;
            other[i] -= v;
        }
    return nseries;
}

/* How many records the group's sum holds (in use, and recycled). */
static uint64_t summed_records(const struct area *a)
{
    uint32_t nc = a->h->ncounters;
    uint64_t n = load_u64(a->base + a->h->pool_retired_offset + (size_t)nc * 8);
    for (uint32_t k = 0; k < a->h->pool_nrec; k++)
        if (__atomic_load_n((const int32_t *)(const void *)(pool_rec(a, k) + (size_t)nc * 8 +
                                                            KS_LIVE_IN_USE * 4),
                            __ATOMIC_ACQUIRE))
            n++;
    return n;
}

/* worker label of series s: s < shards its number, else "other"; -1 as
 * shards: no label (an unsharded process). */
static void put_labels(struct ks_prom_out *o, const struct name *fb, int32_t worker, int32_t shards)
{
    bool labelled = shards > 0 || worker >= 0;
    if (!fb && !labelled) {
        put(o, " ");
        return;
    }
    put(o, "{");
    if (fb) {
        put(o, "direction=\"");
        put_name(o, fb->full + strlen("fallback_"), fb->group_len - strlen("fallback_"));
        put(o, "\",reason=\"");
        put_name(o, fb->key, strlen(fb->key));
        put(o, labelled ? "\"," : "\"");
    }
    if (labelled) {
        put(o, "worker=\"");
        if (worker >= 0 && (shards <= 0 || worker < shards))
            put_u64(o, (uint64_t)worker);
        else
            put(o, "other");
        put(o, "\"");
    }
    put(o, "} ");
}

size_t ks_prom_scratch_words(const unsigned char *area)
{
    const struct ks_live_header *h = (const struct ks_live_header *)(const void *)area;
    return (size_t)(h->pool_nrec ? 1024 + 1 : 1) * h->ncounters;
}

void ks_prom_format(struct ks_prom_out *o, const unsigned char *base, const unsigned char *rec,
                    const uint64_t *carried, uint64_t *scratch)
{
    struct area a = {base, (const struct ks_live_header *)(const void *)base};
    uint32_t nc = a.h->ncounters, nseries = 1;
    int32_t shards = 0, one_worker = -1;
    if (rec) {
        for (uint32_t i = 0; i < nc; i++)
            scratch[i] = load_u64(rec + (size_t)i * 8);
        one_worker = field(&a, rec, KS_LIVE_SHARD);
        shards = -1;
    } else {
        nseries = sum_series(&a, scratch, &shards, carried);
    }
    struct name n;
    bool any_fallback = false;
    for (uint32_t i = 0; i < nc; i++) {
        name_of(&a, i, &n);
        if (is_fallback(&n)) {
            any_fallback = true;
            continue;
        }
        put(o, "# HELP ");
        put_family(o, &n);
        put(o, " ktlsshim counter ");
        put_name(o, n.full, n.group_len);
        put(o, ".");
        put_name(o, n.key, strlen(n.key));
        put(o, in_group(&n, "bytes") ? ", in bytes (docs/stats.md).\n# TYPE "
                                     : " (docs/stats.md).\n# TYPE ");
        put_family(o, &n);
        put(o, " counter\n");
        for (uint32_t s = 0; s < nseries; s++) {
            put_family(o, &n);
            put_labels(o, NULL, rec ? one_worker : shards > 0 ? (int32_t)s : -1, shards);
            put_u64(o, scratch[(size_t)s * nc + i]);
            put(o, "\n");
        }
    }
    if (any_fallback) {
        put(o, "# HELP ktlsshim_fallback_total TLS connections left in user space, per "
               "direction and reason (docs/stats.md).\n"
               "# TYPE ktlsshim_fallback_total counter\n");
        for (uint32_t i = 0; i < nc; i++) {
            name_of(&a, i, &n);
            if (!is_fallback(&n))
                continue;
            for (uint32_t s = 0; s < nseries; s++) {
                put(o, "ktlsshim_fallback_total");
                put_labels(o, &n, rec ? one_worker : shards > 0 ? (int32_t)s : -1, shards);
                put_u64(o, scratch[(size_t)s * nc + i]);
                put(o, "\n");
            }
        }
    }
    if (!rec && a.h->pool_nrec) {
        put(o, "# HELP ktlsshim_summed_records Records in the group's sum, recycled ones "
               "included.\n# TYPE ktlsshim_summed_records gauge\nktlsshim_summed_records ");
        put_u64(o, summed_records(&a));
        put(o, "\n");
    }
}
