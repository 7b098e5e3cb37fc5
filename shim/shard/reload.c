/* reload.c — KTLSSHIM_RELOAD: the rolling restart (exec mode), one slot at
 * a time, so that the listeners never close and no connection is refused:
 * a new worker is started with the slot's held listeners; once it has
 * reported every one of them it serves, and the old worker is asked to stop
 * (KTLSSHIM_GRACEFUL_SIGNAL, SIGKILL after KTLSSHIM_STOP_TIMEOUT); once that
 * one is gone, the next slot. The new and old workers are entries of the
 * supervisor's one table (proctab.h), so that reaping, forwarding and the
 * control sockets know them as they know the slots' workers.
 *
 * Never may a slot be left to a worker that does not listen on everything
 * the slot holds (a held listener nobody accepts on is a black hole):
 * - a new worker that has come up (reported listeners) but not on every
 *   address of its slot by KTLSSHIM_STOP_TIMEOUT is refused (one line), asked
 *   to stop like an old worker, and the restart goes on with the next slot;
 *   the listeners only it reported are closed;
 * - a slot's worker that ends by itself (exit 0, or a forwarded signal)
 *   while its new one comes up leaves the slot's listeners held for it
 *   (HANDOVER), instead of closing them as a slot that is done does. */
#include "shard/supervise.h"
#include "core/config.h"
#include "core/log.h"
#include "shard/execmode.h"
#include "stats/stats.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

static struct {
    bool active;
    int slot;     /* the slot being replaced */
    int replaced; /* workers replaced so far */
    int refused;  /* new workers refused so far */
} rl;

bool ks_reload_active(void)
{
    return rl.active;
}

void ks_reload_stop(void)
{
    rl.active = false;
}

void ks_reload_start(void)
{
    if (ks_sup.stopping)
        return;
    if (rl.active) {
        ks_log_info("KTLSSHIM_RELOAD: a rolling restart is already under way (slot %d/%d); "
                    "this signal is ignored",
                    rl.slot, ks_sup.plan->nslots);
        return;
    }
    rl.active = true;
    rl.slot = 0;
    rl.replaced = 0;
    rl.refused = 0;
    ks_log_info("KTLSSHIM_RELOAD: rolling restart of %d workers, one at a time",
                ks_sup.plan->nslots);
}

/* A process of the rolling restart, in any slot, or NULL. */
static struct ks_proc *find_role(int role)
{
    for (int k = ks_sup.plan->nslots; k < ks_pt_size(); k++)
        if (ks_pt_at(k)->role == role && ks_pt_at(k)->run.pid > 0)
            return ks_pt_at(k);
    return NULL;
}

bool ks_reload_takes_over(int i)
{
    struct ks_proc *nw = ks_pt_find(i, KS_PR_NEW);
    return nw && nw->run.pid > 0;
}

/* The listeners the slot's worker serves: held, and not first reported by
 * a new worker that does not serve yet. */
static uint64_t serving_mask(int slot)
{
    uint64_t m = 0;
    for (int k = 0; k < ks_pt_nheld(slot); k++)
        if (!ks_pt_held(slot, k)->fresh)
            m |= 1ULL << k;
    return m;
}

/* The new worker serves: what it reported is the slot's. */
static void keep_fresh(int slot)
{
    for (int k = 0; k < ks_pt_nheld(slot); k++)
        ks_pt_held(slot, k)->fresh = false;
}

/* The new worker will not serve: close what only it reported. */
static void drop_fresh(int slot)
{
    for (int k = ks_pt_nheld(slot) - 1; k >= 0; k--)
        if (ks_pt_held(slot, k)->fresh)
            ks_pt_drop_held(slot, k);
}

void ks_reload_reaped(struct ks_proc *e, int status)
{
    char how[32];
    ks_sup_describe(status, how, sizeof how);
    int slot = e->slot, n = ks_sup.plan->nslots;
    struct ks_proc *s = ks_pt_slot(slot);
    ks_stats_write_for(e->run.rec, how);
    ks_stats_release(e->run.rec);
    if (e->role == KS_PR_NEW) {
        if (s->run.pid > 0)
            ks_log_error("KTLSSHIM_RELOAD: the new worker %d/%d (pid %d) ended with %s before it "
                         "served; the old one (pid %d) keeps serving; rolling restart stopped",
                         slot, n, (int)e->run.pid, how, (int)s->run.pid);
        else
            ks_log_error("KTLSSHIM_RELOAD: the new worker %d/%d (pid %d) ended with %s before it "
                         "served, and the old one has ended: the slot is done; rolling restart "
                         "stopped",
                         slot, n, (int)e->run.pid, how);
        ks_pt_ended(e);
        drop_fresh(slot);
        if (s->state == KS_PS_HANDOVER)
            ks_sup_slot_done(s, slot);
        rl.active = false;
        return;
    }
    ks_log_debug("KTLSSHIM_RELOAD: old worker %d/%d (pid %d) ended with %s", slot, n,
                 (int)e->run.pid, how);
    bool steps = e->steps;
    ks_pt_ended(e);
    if (steps)
        rl.slot++;
}

/* The new worker nw has reported every listener its slot serves: it
 * becomes the slot's worker, and the one it replaces is asked to stop. */
static void take_over(struct ks_proc *nw, int64_t now)
{
    const struct ks_config *cfg = ks_config();
    int slot = nw->slot, n = ks_sup.plan->nslots;
    struct ks_proc *s = ks_pt_slot(slot);
    keep_fresh(slot);
    ks_pt_swap_runs(s, nw);
    s->run.start_ms = now;
    s->run.forwarded = 0;
    rl.replaced++;
    ks_count(KS_C_W_RELOADED, 1);
    if (s->state != KS_PS_RUNNING) {
        /* the old one ended meanwhile (and is being respawned, or left the
         * slot to it): the new one is the slot's worker now */
        s->state = KS_PS_RUNNING;
        ks_pt_ended(nw);
        rl.slot++;
        return;
    }
    s->fails = 0;
    nw->role = KS_PR_OLD;
    nw->steps = true;
    nw->killed = false;
    nw->due_ms = now + (int64_t)cfg->stop_timeout * 1000;
    ks_log_debug("KTLSSHIM_RELOAD: worker %d/%d pid %d serves; asking pid %d to stop", slot, n,
                 (int)s->run.pid, (int)nw->run.pid);
    kill(nw->run.pid, cfg->graceful_signal);
}

/* The addresses of `missing` (bits of the slot's held listeners), for a
 * log line: the first three. */
static void missing_text(int slot, uint64_t missing, char *out, size_t n)
{
    size_t len = 0;
    int shown = 0;
    out[0] = '\0';
    for (int k = 0; k < ks_pt_nheld(slot) && len < n; k++) {
        if (!(missing & (1ULL << k)))
            continue;
        char a[80];
        if (shown == 3) {
            snprintf(out + len, n - len, ", ...");
            return;
        }
        len += (size_t)snprintf(out + len, n - len, "%s%s", shown ? ", " : "",
                                ks_exec_addr_text(&ks_pt_held(slot, k)->addr, a, sizeof a));
        shown++;
    }
}

/* KTLSSHIM_STOP_TIMEOUT passed and the new worker nw does not listen on
 * every address its slot serves: refused if it came up at all (the old one
 * keeps serving, the restart goes on), else killed and the restart stops. */
static void not_ready(struct ks_proc *nw, uint64_t need, int64_t now)
{
    const struct ks_config *cfg = ks_config();
    int slot = nw->slot, n = ks_sup.plan->nslots;
    struct ks_proc *s = ks_pt_slot(slot);
    if (nw->run.reported == 0) {
        ks_log_error("KTLSSHIM_RELOAD: the new worker %d/%d (pid %d) did not report its "
                     "listeners within %d s; killing it, the old one (pid %d) keeps "
                     "serving; rolling restart stopped",
                     slot, n, (int)nw->run.pid, cfg->stop_timeout, (int)s->run.pid);
        kill(nw->run.pid, SIGKILL);
        nw->killed = true;
        rl.active = false;
    } else {
        char miss[256];
        missing_text(slot, need & ~nw->run.covers, miss, sizeof miss);
        char keeps[64];
        if (s->run.pid > 0)
            snprintf(keeps, sizeof keeps, "the old one (pid %d) keeps serving the slot",
                     (int)s->run.pid);
        else
            snprintf(keeps, sizeof keeps, "the old one has ended: the slot is done");
        ks_log_error("KTLSSHIM_RELOAD: the new worker %d/%d (pid %d) listens on %d of the %d "
                     "addresses its slot holds (not %s) after %d s: refused, asked to stop; %s",
                     slot, n, (int)nw->run.pid, __builtin_popcountll(nw->run.covers & need),
                     __builtin_popcountll(need), miss, cfg->stop_timeout, keeps);
        kill(nw->run.pid, cfg->graceful_signal);
        nw->killed = false;
        nw->steps = true;
        nw->due_ms = now + (int64_t)cfg->stop_timeout * 1000;
        rl.refused++;
    }
    nw->role = KS_PR_OLD;
    drop_fresh(slot);
    if (s->state == KS_PS_HANDOVER)
        ks_sup_slot_done(s, slot);
}

/* The rolling restart's next step: wait for an old worker to go (SIGKILL
 * when overdue); judge a new worker; or start the next slot's. */
void ks_reload_step(int64_t now)
{
    const struct ks_config *cfg = ks_config();
    int n = ks_sup.plan->nslots;
    if (!rl.active || ks_sup.stopping)
        return;
    struct ks_proc *old = find_role(KS_PR_OLD);
    if (old) {
        if (!old->killed && now >= old->due_ms) {
            ks_log_error("KTLSSHIM_RELOAD: old worker %d/%d (pid %d) still running %d s after "
                         "signal %d (KTLSSHIM_STOP_TIMEOUT): sending SIGKILL",
                         old->slot, n, (int)old->run.pid, cfg->stop_timeout, cfg->graceful_signal);
            kill(old->run.pid, SIGKILL);
            old->killed = true;
        }
        return;
    }
    struct ks_proc *nw = find_role(KS_PR_NEW);
    if (nw) {
        uint64_t need = serving_mask(nw->slot);
        if (nw->run.reported > 0 && (nw->run.covers & need) == need)
            take_over(nw, now);
        else if (now >= nw->due_ms)
            not_ready(nw, need, now);
        return;
    }
    while (rl.slot < n && ks_pt_slot(rl.slot)->state != KS_PS_RUNNING)
        rl.slot++;
    if (rl.slot >= n) {
        if (rl.refused)
            ks_log_info("KTLSSHIM_RELOAD: rolling restart done, %d workers replaced, %d refused "
                        "(their old workers serve)",
                        rl.replaced, rl.refused);
        else
            ks_log_info("KTLSSHIM_RELOAD: rolling restart done, %d workers replaced", rl.replaced);
        rl.active = false;
        return;
    }
    struct ks_proc *e = ks_pt_add(rl.slot, KS_PR_NEW);
    int rec = e ? ks_stats_claim(KS_ROLE_WORKER, rl.slot) : -1;
    pid_t pid = e ? ks_sup_start(e, rl.slot, rec) : -1;
    if (pid <= 0) { /* never 0: exec mode's child does not return */
        if (e) {
            ks_stats_release(rec);
            ks_pt_ended(e);
        }
        ks_log_error("KTLSSHIM_RELOAD: cannot start a new worker %d/%d; rolling restart stopped",
                     rl.slot, n);
        rl.active = false;
        return;
    }
    e->due_ms = now + (int64_t)cfg->stop_timeout * 1000;
}
