/* connwatch.c — the count behind the hot path's one test (connwatch.h):
 * 1 at load, tls/hooks.c gives it back once its table is ready. */
#include "tls/connwatch.h"

int ks_conns_watched = 1;

void ks_conns_watch_for_good(void)
{
    static int done;
    if (!__atomic_exchange_n(&done, 1, __ATOMIC_RELAXED))
        ks_conns_watch(1);
}
