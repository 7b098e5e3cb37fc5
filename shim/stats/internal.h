/* internal.h — what the three parts of the stats share, and nothing outside
 * shim/stats/ includes: stats.c (counting, the exit protocol), pool.c (the
 * live area and the shared pool of records) and emit.c (the record's text,
 * the stats file). */
#ifndef KTLSSHIM_STATS_INTERNAL_H
#define KTLSSHIM_STATS_INTERNAL_H

#include "stats/stats.h"

#include <stddef.h>

/* A record's `written` (atomic). */
enum { RECORD_UNWRITTEN = 0, RECORD_WRITING = 1, RECORD_WRITTEN = 2 };

/* ---- stats.c ---- */

/* The process's own record: private until it is published in a live area
 * (pool.c), then the area's copy. */
extern struct ks_record *ks_stats_self;
/* The process is active (stats.h: ks_stats_mark_active), once. */
void ks_stats_activate(void);

static inline void ks_stats_snapshot(const struct ks_record *r, uint64_t *c)
{
    for (int i = 0; i < KS_C_COUNT; i++)
        c[i] = __atomic_load_n(&r->c[i], __ATOMIC_RELAXED);
}

/* ---- pool.c ---- */

/* Unsharded, on activation: the own record moves into a live area of its
 * own, if it has none. */
void ks_stats_publish_private(void);
/* This process counts in a shared pool. */
bool ks_stats_pooled(void);
/* In a fork child, unsharded: the live area it inherited is its parent's.
 * Returns the parent's record there (and the mapping, *map and *size, for
 * the child to unmap), forgetting the area; NULL if there is none. */
struct ks_record *ks_stats_area_to_parent(void **map, size_t *size);
/* At exec, for a record r of the pool other than the supervisor's: a
 * worker's child gives it back, a worker keeps it with its counts so far
 * moved to the retired sum. False (nothing done) if r is not such. */
bool ks_stats_pool_at_exec(struct ks_record *r);
/* Worker record idx of the pool; NULL if there is no such. */
struct ks_record *ks_stats_pool_record(int idx);
/* Adds the whole pool (records in use and the retired sum) to sum[];
 * returns how many records that is. */
uint64_t ks_stats_pool_sum(uint64_t *sum);
/* The live area (live_abi.h layout) this process writes its counts in,
 * the pool's included; NULL if it has none. */
const unsigned char *ks_stats_live_area(void);

/* ---- emit.c ---- */

struct ks_counter_name {
    const char *group, *key;
};
extern const struct ks_counter_name ks_counter_names[KS_C_COUNT];

/* Writes record r with counts c: the line on stderr (log level info and
 * up), the JSON object to KTLSSHIM_STATS. Async-signal-safe, errno kept. */
void ks_stats_emit(const struct ks_record *r, const uint64_t *c, uint64_t summed, const char *end);
/* "exit 3", "signal 15" */
void ks_stats_end_text(char out[32], const char *what, int n);
/* fd moved out of the way of the numbers programs expect (close-on-exec). */
int ks_stats_move_high(int fd);

#endif
