/*
 * policy.c — the maintenance cycle (the seed's RunMaintenanceCycle), the
 * background policy thread, and the program's callbacks.
 *
 * One cycle, in order:
 *   1. fold access bits into last-access times and access counts (CLOCK:
 *      ml_get only sets a bit when it is clear; the cycle clears it);
 *   2. promote FastLane entries older than promote_age_ms to SlowLane;
 *   3. compact a lane whose fragmentation, or whose span bytes a pass could
 *      give back, passes compaction_threshold (compaction_worth),
 *      within compaction_budget_us (bounded steps continue next cycle);
 *   4. (paging) evict cold blobs by idle time and by pressure.
 * Cycles never overlap: ml_maintain called while the policy thread is in a
 * cycle waits for it.
 *
 * The policy thread, when policy_check_interval_ms > 0, runs a cycle every
 * interval. It sleeps on a condition variable, so ml_arena_destroy wakes it
 * and joins it at once instead of waiting out the interval.
 */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "core/arena.h"
#include "core/pager_iface.h"

static void fold_access_bits(ml_arena *a)
{
    uint32_t n = __atomic_load_n(&a->slot_count, __ATOMIC_ACQUIRE);
    uint64_t now = ml__now(a);
    for (uint32_t i = 0; i < n; i++) {
        uint64_t m = ml__load(&a->slots[i].meta);
        const uint64_t bits = ML_M_ACCESSED | ML_M_REFERENCED;
        if (!ml__meta_live(m) || !(m & bits) || (m & ML_M_LOCKED)) continue;
        /* Claim and clear the bits in one step; a slot someone else holds
         * keeps its bits for the next cycle. */
        if (!__atomic_compare_exchange_n(&a->slots[i].meta, &m, (m | ML_M_LOCKED) & ~bits, false,
                                         __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
            continue;
        ml_cold *c = ml__cold(a, i, m);
        c->last_access_ns = now;
        c->accesses++;
        ml__unclaim(a, i);
    }
}

/* Is a compaction pass of lane l worth starting? Either measure passes
 * compaction_threshold:
 *  - fragmentation as the lane itself sees it (thread-cached blocks count
 *    as used), 1 - largest free range / free bytes: holes between extents;
 *  - the span bytes a pass could empty (ml__lane_reclaimable) over the span
 *    bytes in use: blocks freed all over, a garbage collector's sweep. A
 *    large free range beyond the spans keeps the first measure low however
 *    empty they are, and only this one sees it. Counted above what the
 *    last pass could not give back (pins, cached blocks: reclaim_floor), so
 *    that a pass that cannot gain is not started again every cycle; after
 *    RECLAIM_RETRY_NS the floor is forgotten (the pins may be gone), so a
 *    lane whose spans stay pinned is tried once a second at most.
 * Either way at least 4 units and 1% of the lane must be at stake. */
#define RECLAIM_RETRY_NS 1000000000ull
static bool compaction_worth(const ml_arena *a, ml_lane_t *l)
{
    uint64_t unit = ml__lane_unit(l), min = l->region.size / 100;
    if (min < 4 * unit) min = 4 * unit;
    double th = a->cfg.compaction_threshold;
    uint64_t used = l->blocks_used_bytes + l->blob_units_total * unit;
    uint64_t cap = l->region.size;
    uint64_t fr = cap > used ? cap - used : 0;
    uint64_t largest = (uint64_t)ml__ext_largest_free(&l->ext) * unit;
    if (fr >= min && largest < fr && (double)(fr - largest) > th * (double)fr) return true;
    uint64_t rec = ml__lane_reclaimable(l);
    if (rec < l->reclaim_floor) l->reclaim_floor = rec;
    if (l->reclaim_floor && ml__coarse_ns() - l->reclaim_floor_ns >= RECLAIM_RETRY_NS) l->reclaim_floor = 0;
    uint64_t gain = rec - l->reclaim_floor, spans = l->span_units_total * unit;
    return gain >= min && (double)gain > th * (double)spans;
}

static void auto_compact(ml_arena *a)
{
    for (int lane = 0; lane < 2; lane++) {
        ml_lane_t *l = &a->lanes[lane];
        pthread_mutex_lock(&l->lock);
        /* A pass left half done by a bounded step goes on regardless. */
        bool go = ml__lane_in_pass(l) || compaction_worth(a, l);
        pthread_mutex_unlock(&l->lock);
        if (!go) continue;
        ml_compact_result r;
        if (a->cfg.compaction_budget_us)
            ml_compact_step(a, (ml_lane)lane, 0, (uint64_t)a->cfg.compaction_budget_us * 1000u, &r);
        else
            ml_compact(a, (ml_lane)lane, &r);
    }
}

/* The arena whose cycle this thread is running, if any. A cycle reports
 * its moves to the move callback during the cycle (each report numbered by
 * its entry's move count: see ml_move_fn), so the callback runs inside the
 * cycle: a call to ml_maintain from there, for the same arena, would wait
 * for its own cycle. It gets -EBUSY instead. */
static __thread const ml_arena *maintaining;

/* fork(): a cycle holds locks and claims (the policy thread's, any time),
 * and a child forked in the middle of one would inherit them held forever:
 * the thread does not follow into the child. So fork() waits, in the
 * prepare handler, until no cycle of any arena is under way, and no new one
 * starts until it is done. Cycles are counted from outside every lock (a
 * cycle that a callback starts inside another is part of that one), so the
 * wait needs no lock a cycle may hold, whatever the callbacks do. A fork
 * from inside a cycle (a callback) waits for the others only: its own locks
 * unwind in the child with its stack. */
static pthread_mutex_t g_cycles_mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t g_fork_gen; /* forks this process came out of: an arena made
                               at another count is a parent's (ml__inherited) */
static pthread_cond_t g_cycles_cv = PTHREAD_COND_INITIALIZER;
static unsigned g_cycles;  /* outermost cycles under way */
static bool g_forking;     /* a fork waits: no new cycle */

static void fork_prepare(void)
{
    pthread_mutex_lock(&g_cycles_mu);
    g_forking = true;
    unsigned mine = maintaining ? 1 : 0;
    while (g_cycles > mine) pthread_cond_wait(&g_cycles_cv, &g_cycles_mu);
    /* held across the fork: the child's copy is then unlocked by us */
}

static void fork_parent(void)
{
    g_forking = false;
    pthread_cond_broadcast(&g_cycles_cv);
    pthread_mutex_unlock(&g_cycles_mu);
}

static void fork_child(void)
{
    __atomic_fetch_add(&g_fork_gen, 1, __ATOMIC_RELAXED);
    /* The waiters on the copy of the condition variable are the parent's. */
    pthread_cond_init(&g_cycles_cv, NULL);
    g_cycles = maintaining ? 1 : 0;
    g_forking = false;
    pthread_mutex_unlock(&g_cycles_mu);
}

__attribute__((constructor)) static void hold_cycles_across_forks(void)
{
    pthread_atfork(fork_prepare, fork_parent, fork_child);
}

uint64_t ml__fork_gen(void) { return __atomic_load_n(&g_fork_gen, __ATOMIC_RELAXED); }
bool ml__inherited(const ml_arena *a) { return ml__fork_gen() != a->fork_gen; }

int ml_maintain(ml_arena *a)
{
    if (!a) return -EINVAL;
    if (maintaining == a) return -EBUSY;
    const ml_arena *outer = maintaining; /* a callback may maintain another arena */
    if (!outer) {
        pthread_mutex_lock(&g_cycles_mu);
        while (g_forking) pthread_cond_wait(&g_cycles_cv, &g_cycles_mu);
        g_cycles++;
        pthread_mutex_unlock(&g_cycles_mu);
    }
    pthread_mutex_lock(&a->maintain_lock);
    maintaining = a;
    ML_DEBUG_POINT(a, ML_DEBUG_ALL_LANES, UINT32_MAX);
    fold_access_bits(a);
    if (a->cfg.promote_age_ms) {
        size_t moved = 0;
        ml_migrate_all(a, a->cfg.promote_age_ms, &moved);
        __atomic_fetch_add(&a->promotions, moved, __ATOMIC_RELAXED);
    }
    if (a->cfg.enable_auto_compaction) auto_compact(a);
    if (a->pager) ml__pager->maintain(a);
    __atomic_fetch_add(&a->maintenance_cycles, 1, __ATOMIC_RELAXED);
    maintaining = outer;
    pthread_mutex_unlock(&a->maintain_lock);
    if (!outer) {
        pthread_mutex_lock(&g_cycles_mu);
        if (--g_cycles == 0 && g_forking) pthread_cond_broadcast(&g_cycles_cv);
        pthread_mutex_unlock(&g_cycles_mu);
    }
    return 0;
}

/* ---- the policy thread ------------------------------------------------------- */

static void *policy_main(void *p)
{
    ml_arena *a = p;
    pthread_mutex_lock(&a->policy_lock);
    while (!a->policy_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t ns = (uint64_t)ts.tv_nsec + (uint64_t)a->cfg.policy_check_interval_ms * 1000000u;
        ts.tv_sec += (time_t)(ns / 1000000000u);
        ts.tv_nsec = (long)(ns % 1000000000u);
        while (!a->policy_stop && pthread_cond_timedwait(&a->policy_cond, &a->policy_lock, &ts) == 0) {
        }
        if (a->policy_stop) break;
        pthread_mutex_unlock(&a->policy_lock);
        ml_maintain(a);
        pthread_mutex_lock(&a->policy_lock);
    }
    pthread_mutex_unlock(&a->policy_lock);
    return NULL;
}

int ml__policy_start(ml_arena *a)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&a->policy_cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&a->policy_lock, NULL);
    pthread_mutex_init(&a->maintain_lock, NULL);
    a->policy_stop = false;
    if (a->cfg.policy_check_interval_ms == 0) return 0;
    if (pthread_create(&a->policy_thread, NULL, policy_main, a) != 0) return -ENOMEM;
    a->policy_running = true;
    return 0;
}

void ml__policy_stop(ml_arena *a)
{
    /* In a forked child the thread is the parent's: there is none to stop,
     * and the copy of its condition variable still counts it waiting
     * (destroying that would wait for it forever). */
    if (ml__inherited(a)) return;
    if (a->policy_running) {
        pthread_mutex_lock(&a->policy_lock);
        a->policy_stop = true;
        pthread_cond_broadcast(&a->policy_cond);
        pthread_mutex_unlock(&a->policy_lock);
        pthread_join(a->policy_thread, NULL);
        a->policy_running = false;
    }
    pthread_cond_destroy(&a->policy_cond);
    pthread_mutex_destroy(&a->policy_lock);
    pthread_mutex_destroy(&a->maintain_lock);
}

/* ---- callbacks ---------------------------------------------------------------- */

int ml_set_move_callback(ml_arena *a, ml_move_fn fn, void *ctx)
{
    if (!a) return -EINVAL;
    pthread_mutex_lock(&a->meta_lock);
    __atomic_store_n(&a->move_fn, fn, __ATOMIC_RELAXED);
    a->move_ctx = ctx;
    pthread_mutex_unlock(&a->meta_lock);
    return 0;
}

ml_move_fn ml__move_cb(ml_arena *a, void **ctx)
{
    *ctx = NULL;
    if (!__atomic_load_n(&a->move_fn, __ATOMIC_RELAXED)) return NULL;
    pthread_mutex_lock(&a->meta_lock);
    ml_move_fn fn = a->move_fn;
    *ctx = a->move_ctx;
    pthread_mutex_unlock(&a->meta_lock);
    return fn;
}

int ml_set_pressure_callback(ml_arena *a, ml_pressure_fn fn, void *ctx)
{
    if (!a) return -EINVAL;
    pthread_mutex_lock(&a->meta_lock);
    __atomic_store_n(&a->pressure_fn, fn, __ATOMIC_RELAXED);
    a->pressure_ctx = ctx;
    pthread_mutex_unlock(&a->meta_lock);
    return 0;
}

ml_pressure_fn ml__pressure_cb(ml_arena *a, void **ctx)
{
    *ctx = NULL;
    if (!__atomic_load_n(&a->pressure_fn, __ATOMIC_RELAXED)) return NULL;
    pthread_mutex_lock(&a->meta_lock);
    ml_pressure_fn fn = a->pressure_fn;
    *ctx = a->pressure_ctx;
    pthread_mutex_unlock(&a->meta_lock);
    return fn;
}
