/* promfile_stub.h — for unit programs that include stats.c and pool.c but
 * test nothing of the textfile (stats/promfile.c, whose statics would
 * collide in one translation unit): its hooks do nothing here. */
#ifndef KTLSSHIM_TEST_PROMFILE_STUB_H
#define KTLSSHIM_TEST_PROMFILE_STUB_H
#include "stats/promfile.h"
void ks_prom_on_active(void)
{
}
void ks_prom_retired(int shard, const uint64_t *c)
{
    (void)shard;
    (void)c;
}
void ks_prom_final(void)
{
}
#endif
