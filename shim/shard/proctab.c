/* proctab.c — the supervisor's one table of processes (see proctab.h):
 * entries 0..nslots-1 are the slots' current workers, the others the
 * processes a rolling restart adds and ended workers whose control socket
 * is still open; and the listeners held per slot in exec mode. */
#include "shard/proctab.h"
#include "core/config.h"
#include "core/log.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Past the slots: a new and an old worker per slot at most during a
 * rolling restart, and ended workers whose children keep their control
 * socket open. */
#define EXTRA_ENTRIES 64
#define MAX_ENTRIES (2 * KS_MAX_SHARDS + EXTRA_ENTRIES)

static struct ks_proc entries[MAX_ENTRIES];

static struct {
    struct ks_proc *e;
    int n, nslots;
    struct ks_held (*held)[KS_MAX_REPLICATED]; /* [slot][k] */
    int *nheld;                                /* [slot] */
} pt;

bool ks_pt_init(int nslots, bool exec)
{
    pt.n = 2 * nslots + EXTRA_ENTRIES;
    pt.nslots = nslots;
    pt.e = entries;
    if (exec && !pt.held) {
        pt.held = calloc((size_t)nslots, sizeof *pt.held);
        pt.nheld = calloc((size_t)nslots, sizeof *pt.nheld);
    }
    if (exec && (!pt.held || !pt.nheld))
        return false;
    for (int k = 0; k < pt.n; k++) {
        pt.e[k].role = k < nslots ? KS_PR_CURRENT : KS_PR_FREE;
        pt.e[k].slot = k < nslots ? k : -1;
        pt.e[k].run.chan = -1;
    }
    return true;
}

int ks_pt_nslots(void)
{
    return pt.nslots;
}

int ks_pt_size(void)
{
    return pt.n;
}

struct ks_proc *ks_pt_at(int k)
{
    return &pt.e[k];
}

struct ks_proc *ks_pt_by_pid(pid_t pid)
{
    for (int k = 0; pid > 0 && k < pt.n; k++)
        if (pt.e[k].run.pid == pid && pt.e[k].role != KS_PR_FREE && pt.e[k].role != KS_PR_GONE)
            return &pt.e[k];
    return NULL;
}

struct ks_proc *ks_pt_by_chan(int fd)
{
    for (int k = 0; fd >= 0 && k < pt.n; k++)
        if (pt.e[k].run.chan == fd && pt.e[k].role != KS_PR_FREE)
            return &pt.e[k];
    return NULL;
}

struct ks_proc *ks_pt_find(int slot, int role)
{
    for (int k = pt.nslots; k < pt.n; k++)
        if (pt.e[k].role == role && pt.e[k].slot == slot)
            return &pt.e[k];
    return NULL;
}

struct ks_proc *ks_pt_add(int slot, int role)
{
    for (int k = pt.nslots; k < pt.n; k++)
        if (pt.e[k].role == KS_PR_FREE) {
            pt.e[k] = (struct ks_proc){.role = role, .slot = slot, .run = {.chan = -1}};
            return &pt.e[k];
        }
    return NULL;
}

static void free_entry(struct ks_proc *e)
{
    *e = (struct ks_proc){.role = KS_PR_FREE, .slot = -1, .run = {.chan = -1}};
}

void ks_pt_ended(struct ks_proc *e)
{
    int chan = e->run.chan, slot = e->slot;
    e->run.pid = 0;
    e->run.chan = -1;
    if (e->role != KS_PR_CURRENT)
        free_entry(e);
    if (chan < 0)
        return;
    struct ks_proc *g = e->role == KS_PR_FREE ? e : ks_pt_add(slot, KS_PR_GONE);
    if (!g) {
        close(chan); /* table full: its children's reports are lost */
        return;
    }
    g->role = KS_PR_GONE;
    g->slot = slot;
    g->run.chan = chan;
}

void ks_pt_chan_closed(struct ks_proc *e)
{
    close(e->run.chan);
    e->run.chan = -1;
    if (e->role == KS_PR_GONE)
        free_entry(e);
}

void ks_pt_swap_runs(struct ks_proc *a, struct ks_proc *b)
{
    struct ks_run t = a->run;
    a->run = b->run;
    b->run = t;
}

int ks_pt_nheld(int slot)
{
    return pt.nheld && slot >= 0 && slot < pt.nslots ? pt.nheld[slot] : 0;
}

struct ks_held *ks_pt_held(int slot, int k)
{
    return &pt.held[slot][k];
}

uint64_t ks_pt_held_mask(int slot)
{
    int n = ks_pt_nheld(slot);
    return n >= 64 ? ~0ULL : (1ULL << n) - 1;
}

int ks_pt_held_index(int slot, dev_t dev, ino_t ino)
{
    for (int k = 0; k < ks_pt_nheld(slot); k++)
        if (pt.held[slot][k].dev == dev && pt.held[slot][k].ino == ino)
            return k;
    return -1;
}

int ks_pt_add_held(int slot, int fd, dev_t dev, ino_t ino, const struct sockaddr_storage *addr,
                   socklen_t len)
{
    if (!pt.nheld || slot < 0 || slot >= pt.nslots || pt.nheld[slot] >= KS_MAX_REPLICATED)
        return -1;
    int k = pt.nheld[slot]++;
    pt.held[slot][k] =
        (struct ks_held){.fd = fd, .dev = dev, .ino = ino, .len = len, .addr = *addr};
    return k;
}

/* Bit k of every entry of the slot goes; the bits above it move down. */
static uint64_t without_bit(uint64_t m, int k)
{
    uint64_t low = m & ((1ULL << k) - 1);
    uint64_t high = k < 63 ? (m >> (k + 1)) << k : 0;
    return low | high;
}

void ks_pt_drop_held(int slot, int k)
{
    if (k < 0 || k >= ks_pt_nheld(slot))
        return;
    close(pt.held[slot][k].fd);
    memmove(&pt.held[slot][k], &pt.held[slot][k + 1],
            (size_t)(pt.nheld[slot] - k - 1) * sizeof pt.held[slot][0]);
    pt.nheld[slot]--;
    for (int j = 0; j < pt.n; j++)
        if (pt.e[j].slot == slot)
            pt.e[j].run.covers = without_bit(pt.e[j].run.covers, k);
}

void ks_pt_close_held(int slot)
{
    for (int k = 0; k < ks_pt_nheld(slot); k++)
        close(pt.held[slot][k].fd);
    if (pt.nheld && slot >= 0 && slot < pt.nslots)
        pt.nheld[slot] = 0;
    for (int j = 0; j < pt.n; j++)
        if (pt.e[j].slot == slot)
            pt.e[j].run.covers = 0;
}
