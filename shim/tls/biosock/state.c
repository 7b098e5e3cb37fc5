/* state.c — what is known of each program's own BIO (ex_data on the end of
 * its chain): the socket found under it, whether kTLS TX went in, why not;
 * and what tls/hooks.c asks of it. Which chains are the program's is
 * bioproof.c's answer, by the BIO's method. */
#include "tls/biosock/bs.h"
#include "tls/bioproof.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static int bs_bio_idx = -1; /* BIO ex_data: struct bs_bio */
static pthread_once_t bs_idx_once = PTHREAD_ONCE_INIT;

void bs_bio_unref(struct bs_bio *st)
{
    if (__atomic_sub_fetch(&st->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        free(st->held);
        free(st);
    }
}

static void bio_state_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                           void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    struct bs_bio *st = ptr;
    if (!st)
        return;
    if (st->tx_on)
        bs_frame_bio_gone(st->fd);
    if (st->fd >= 0)
        bs_rx_unwatch(st->fd, st->rx_id);
    __atomic_store_n(&st->orphan, true, __ATOMIC_RELEASE);
    bs_bio_unref(st);
}

static void make_index(void)
{
    bs_bio_idx = bs_api.get_ex_new_index(CRYPTO_EX_INDEX_BIO, 0, NULL, NULL, ks_ex_dup_keep_own,
                                         bio_state_free);
}

struct bs_bio *bs_bio_state(const BIO *b)
{
    if (__atomic_load_n(&bs_bio_idx, __ATOMIC_ACQUIRE) < 0 || !b)
        return NULL;
    return bs_api.get_ex_data(b, bs_bio_idx);
}

struct bs_bio *bs_bio_state_make(BIO *b)
{
    pthread_once(&bs_idx_once, make_index);
    struct bs_bio *st = bs_bio_state(b);
    if (st || bs_bio_idx < 0 || !(st = calloc(1, sizeof *st)))
        return st;
    st->fd = -1;
    st->refs = 1;
    if (!bs_api.set_ex_data(b, bs_bio_idx, st)) {
        free(st);
        return NULL;
    }
    return st;
}

/* A chain end that is libcrypto's own BIO (socket, fd, connect, accept,
 * datagram, memory, pair: by its method, bioproof.c), not the program's:
 * nothing for this module to watch under it. A program's BIO may carry a
 * socket type and even libcrypto's name and ctrl (PostgreSQL's is a copy
 * of BIO_s_socket's method with its own read and write): it is the
 * program's. */
bool bs_libcrypto_bio(BIO *end)
{
    return !ks_bio_end_is_programs(end);
}

/* The BIO at the end of the chain (libssl puts a buffering BIO on top of
 * the program's during the handshake). */
BIO *bs_chain_end(BIO *b)
{
    for (int i = 0; b && i < 16; i++) {
        BIO *n = bs_api.next(b);
        if (!n)
            return b;
        b = n;
    }
    return b;
}

/* ---- what tls/hooks.c asks ---- */

int ks_biosock_tx_fd(BIO *b)
{
    if (!b || !api_ready())
        return -1;
    struct bs_bio *st = bs_bio_state(bs_chain_end(b));
    return st && st->tx_on ? st->fd : -1;
}

/* A BIO with no socket behind it by design: a memory BIO (asyncio,
 * uvicorn) or a BIO pair. */
bool bs_memory_bio(BIO *b)
{
    BIO *end = b && api_ready() ? bs_chain_end(b) : NULL;
    if (!end)
        return true;
    const char *name = bs_api.method_name(end);
    return bs_api.method_type(end) == BIO_TYPE_BIO || (name && strcmp(name, "memory buffer") == 0);
}

bool ks_biosock_found(BIO *b, bool tx)
{
    if (!b || !api_ready())
        return false;
    if (!tx) /* libssl's refused (ctrl.c): the general reason, or the own switch's turn */
        return !bs_memory_bio(b);
    struct bs_bio *st = bs_bio_state(bs_chain_end(b));
    return st && st->fd >= 0 && !st->ambiguous;
}

enum ks_fallback ks_biosock_reason(BIO *b, bool tx, bool found)
{
    if (!found)
        return bs_memory_bio(b) ? KS_FB_NOT_SOCKET : KS_FB_BIO_NO_FD;
    if (!tx)
        return KS_FB_BIO_RX;
    struct bs_bio *st = bs_bio_state(bs_chain_end(b));
    return st && st->reason ? (enum ks_fallback)st->reason : KS_FB_OTHER;
}
