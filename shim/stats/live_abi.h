/* live_abi.h — the layout of a process's live stats area, shared by the
 * library (which writes it) and `ktls-probe --stats` (which reads it from
 * another process). Self-describing: the counter names are in it, so a probe
 * of another build still reads what it finds. Only fixed-size types.
 *
 * The area is a memfd named KS_LIVE_MEMFD_NAME, mapped MAP_SHARED by the
 * process (and, sharded, inherited by every worker); the library keeps no
 * fd to it. A reader finds it in /proc/PID/maps ("/memfd:ktlsshim-stats")
 * and opens it through /proc/PID/map_files/ (root: CAP_SYS_ADMIN). */
#ifndef KTLSSHIM_LIVE_ABI_H
#define KTLSSHIM_LIVE_ABI_H

#include <stdint.h>

#define KS_LIVE_MEMFD_NAME "ktlsshim-stats"
#define KS_LIVE_MAGIC 0x316576696c736b74ULL /* the bytes "tkslive1" */
#define KS_LIVE_VERSION 1
#define KS_LIVE_NAME_LEN 32 /* "group.key", NUL-padded */

/* A record: `ncounters` uint64_t counters (relaxed atomics), then these
 * int32_t fields, in this order; `record_size` bytes in all. */
enum ks_live_field {
    KS_LIVE_PID,
    KS_LIVE_ROLE,
    KS_LIVE_SHARD,
    KS_LIVE_SHARDS,
    KS_LIVE_WRITTEN,
    KS_LIVE_IN_USE,
    KS_LIVE_NFIELDS
};
/* role: 0 process (unsharded), 1 supervisor, 2 worker, 3 worker_child.
 * in_use (pool records): 0 free, 1 in use, 2 being claimed. */

struct ks_live_header {
    uint64_t magic;
    uint32_t version;
    uint32_t ncounters;
    uint32_t record_size;
    uint32_t names_offset; /* ncounters names of KS_LIVE_NAME_LEN bytes */
    uint32_t self_offset;  /* the process's own record (unsharded, or the supervisor's) */
    uint32_t pool_nrec;    /* 0 unsharded; else the pool's records: */
    uint32_t pool_records_offset;
    uint32_t pool_retired_offset; /* ncounters uint64_t: counts of recycled records, then
                                     one uint64_t: how many records those were */
    int32_t pid;                  /* the process that made the area */
    int32_t reserved;
};

#endif
