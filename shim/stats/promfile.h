/* promfile.h — KTLSSHIM_PROM_FILE: the live counters as a node_exporter
 * textfile, rewritten atomically every KTLSSHIM_PROM_INTERVAL seconds by
 * the supervisor (sharded) or by a thread of the process (unsharded). */
#ifndef KTLSSHIM_STATS_PROMFILE_H
#define KTLSSHIM_STATS_PROMFILE_H

#include "core/common.h"

/* At load: with the variable set, the shared word that elects one writer
 * among the processes a program forks. */
void ks_prom_load(void);
/* The process became active (stats.c): unsharded, the first such process
 * of the tree starts the writer thread. */
void ks_prom_on_active(void);
/* The supervisor's tick (supervisor.c): when the file is due next
 * (CLOCK_MONOTONIC milliseconds; -1: never), and the write when it is. */
int64_t ks_prom_due_ms(void);
void ks_prom_tick(int64_t now_ms);
/* The supervisor retired the record of a worker of slot `shard` (it
 * ended), whose counts were c[KS_C_COUNT]: its series keeps them. */
void ks_prom_retired(int shard, const uint64_t *c);
/* The writer ends (its exit, a signal, exec, the supervisor's end): the
 * file written a last time, with the final counts. Does nothing in any
 * other process. Async-signal-safe, errno kept. */
void ks_prom_final(void);

#endif
