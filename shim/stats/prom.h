/* prom.h — the Prometheus text exposition of a live stats area
 * (live_abi.h), the one formatter behind both KTLSSHIM_PROM_FILE (the
 * library, promfile.c) and `ktls-probe --stats PID --prometheus`.
 *
 * It reads only the area (the counters' names are in it), allocates
 * nothing and calls no stdio: async-signal-safe, so that a process's last
 * write of the file may happen on its way out of a signal. Output goes
 * through a small buffer to the caller's flush function. */
#ifndef KTLSSHIM_STATS_PROM_H
#define KTLSSHIM_STATS_PROM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ks_prom_out {
    char buf[4096];
    size_t len;
    /* called with every full buffer, and by ks_prom_flush */
    void (*flush)(void *ctx, const char *p, size_t n);
    void *ctx;
};

/* uint64_t words of scratch ks_prom_format needs for this area. */
size_t ks_prom_scratch_words(const unsigned char *area);

/* Writes every family of the area `area` (a valid live area: header,
 * names, records): with `rec` NULL, the area's process (unsharded: one
 * series per family, no label; a sharded group: one series per worker,
 * worker="0".."N-1", each the sum of the records of that worker and of
 * the children it forked, plus worker="other": the supervisor's own record
 * and the counts of records since recycled (less `carried`); the series of
 * a family add up to the group's sum); with `rec`, that record of the pool alone (labelled
 * with its worker). `carried` (NULL, or ncounters words per worker): what
 * workers that ended had counted, moved from "other" to their worker's
 * series (the supervisor knows it: promfile.c). `scratch` holds
 * ks_prom_scratch_words(area) words. */
void ks_prom_format(struct ks_prom_out *o, const unsigned char *area, const unsigned char *rec,
                    const uint64_t *carried, uint64_t *scratch);
/* Writes out what the buffer still holds. */
void ks_prom_flush(struct ks_prom_out *o);

#endif
