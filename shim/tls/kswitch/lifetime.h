/* tls/kswitch/lifetime.h — the pure counting behind the limits of a
 * long-lived TLS 1.3 connection that the own switch serves
 * (tls/kswitch/lifetime.c): how many KeyUpdates the peer sent in the last
 * second, and when to ask the kernel how many records went out under the
 * current send key. No I/O here, so that tests/unit/test_lifetime.c can
 * drive it with any clock and any sizes. */
#ifndef KTLSSHIM_KSWITCH_LIFETIME_H
#define KTLSSHIM_KSWITCH_LIFETIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KS_NS_PER_SEC 1000000000ULL

/* The peer's KeyUpdates in the current window: a second that begins with
 * the first KeyUpdate after the previous window ended. */
struct ks_ku_rate {
    uint64_t start_ns;
    uint32_t n;
};

/* One KeyUpdate received at now_ns (a monotonic clock). True when it is
 * beyond limit in its window, i.e. the limit+1st within a second; limit 0
 * is no limit. */
static inline bool ks_ku_rate_over(struct ks_ku_rate *r, uint64_t now_ns, int limit)
{
    if (limit <= 0)
        return false;
    if (r->n == 0 || now_ns - r->start_ns >= KS_NS_PER_SEC) {
        r->start_ns = now_ns;
        r->n = 0;
    }
    if (r->n < UINT32_MAX)
        r->n++;
    return r->n > (uint32_t)limit;
}

/* The least plaintext a record that libssl writes may hold: libssl cuts
 * SSL_write into records of max_send_fragment bytes, 512 the least it
 * accepts; the kernel cuts the own switch's sends into records of up to
 * 16 KiB and ends one at the end of each call. */
#define KS_MIN_RECORD 512

/* The most records one send call of n bytes can add. */
static inline uint64_t ks_tx_records_most(size_t n)
{
    return (uint64_t)(n / KS_MIN_RECORD) + 1;
}

/* Before a send of n bytes: *budget is how many records may still go out
 * before the kernel's own count must be read (0: read it now). True when
 * it must be read before this send; otherwise the send's most records are
 * taken from the budget (down to 0: the next send reads it). */
static inline bool ks_tx_budget_spend(uint64_t *budget, size_t n)
{
    if (*budget == 0)
        return true;
    uint64_t most = ks_tx_records_most(n);
    *budget = most < *budget ? *budget - most : 0;
    return false;
}

/* The kernel says seq records went out under the current send key: the
 * budget until the next look (threshold - seq), or 0 when the key is due
 * for renewal (seq has reached threshold). */
static inline uint64_t ks_tx_budget_after(uint64_t seq, uint64_t threshold)
{
    return seq < threshold ? threshold - seq : 0;
}

#endif
