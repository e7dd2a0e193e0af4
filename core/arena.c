/*
 * arena.c — creating arenas, allocating, freeing, and getting at the data.
 *
 * An allocation is routed by size: at most cfg.threshold bytes go to
 * FastLane through the thread cache (no shared lock on the fast path);
 * larger ones go to SlowLane, whose block manager takes mid sizes and whose
 * blob manager takes the rest. When FastLane cannot place a small object it
 * grows (up to fast_lane_max_size), then fails over to SlowLane (the handle
 * is then born in SlowLane: negative ID); -ENOMEM is returned only when
 * nothing can make room.
 *
 * Publishing an allocation writes the cold stub and the address first and
 * the meta word last, with release order: whoever sees the new generation in
 * the meta word sees everything else.
 *
 * The order of failure handling is "change nothing": a request that fails
 * leaves the slot and the block it may have taken back where they came from.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/arena.h"
#include "core/pager_iface.h"

uint64_t ml__coarse_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t ml__now(const ml_arena *a) { return ml__coarse_ns() - a->epoch_ns; }

/* ---- creation ------------------------------------------------------------- */

static unsigned fast_unit_shift(size_t threshold)
{
    size_t span = (size_t)64 << 10;
    unsigned c = ml__size_class(threshold);
    while (span < 8 * (size_t)ml__class_size[c]) span *= 2;
    return (unsigned)__builtin_ctzll(span);
}

int ml__arena_create_with(const ml_config *cfg_in, const ml_prim *prim, ml_arena **out)
{
    ml_config cfg;
    if (!out) return -EINVAL;
    if (cfg_in) cfg = *cfg_in;
    else ml_config_init(&cfg);
    if (ml_config_check(&cfg, NULL)) return -EINVAL;

    ml_arena *a = calloc(1, sizeof *a);
    if (!a) return -ENOMEM;
    a->prim = prim;

    unsigned fshift = fast_unit_shift(cfg.threshold);
    size_t funit = (size_t)1 << fshift;
    cfg.fast_lane_size = ml__align_up(cfg.fast_lane_size, funit);
    size_t fmax = cfg.fast_lane_max_size ? cfg.fast_lane_max_size : cfg.fast_lane_size;
    cfg.fast_lane_max_size = ml__align_up(fmax < cfg.fast_lane_size ? cfg.fast_lane_size : fmax, funit);
    size_t sunit = (size_t)64 << 10;
    cfg.slow_lane_size = ml__align_up(cfg.slow_lane_size, sunit);
    size_t smax = cfg.slow_lane_max_size ? cfg.slow_lane_max_size : cfg.slow_lane_size;
    cfg.slow_lane_max_size = ml__align_up(smax < cfg.slow_lane_size ? cfg.slow_lane_size : smax, sunit);
    if (cfg.swap_dir) { /* the arena keeps its own copy of the string */
        a->swap_dir = strdup(cfg.swap_dir);
        if (!a->swap_dir) {
            free(a);
            return -ENOMEM;
        }
        cfg.swap_dir = a->swap_dir;
    }
    a->cfg = cfg;
    a->fast_max = cfg.threshold < cfg.slow_lane_max_size ? cfg.threshold : cfg.slow_lane_max_size;
    /* A thread may keep 1/256 of the table paired (at least ML_TC_SLOTS). */
    a->paired_max = (uint32_t)(cfg.max_handles / 256 > ML_TC_SLOTS ? cfg.max_handles / 256 : ML_TC_SLOTS);
    a->max_handles = cfg.max_handles;
    /* Debugging aids: the configuration's, plus the environment's. Under
     * ML_DEBUG_MOVES every ml_get takes the slow path (get_limit 0). */
    a->debug = cfg.debug | ml__debug_env();
    a->get_limit = (a->debug & ML_DEBUG_MOVES) ? 0 : cfg.max_handles;
    a->fork_gen = ml__fork_gen();

    int rc = -ENOMEM;
    a->slots = ml__meta_map(cfg.max_handles * sizeof(ml_slot));
    a->cold = ml__meta_map(cfg.max_handles * sizeof(ml_cold));
    a->locs = ml__meta_map(cfg.max_handles * sizeof(uint64_t));
    a->tags = ml__meta_map((size_t)ML_MAX_TAGS * ML_TAG_MAX);
    if (!a->slots || !a->cold || !a->locs || !a->tags) goto fail;

    unsigned fast_classes = ml__size_class(cfg.threshold) + 1;
    unsigned slow_classes = ml__size_class(8192) + 1;
    rc = ml__lane_init(&a->lanes[ML_LANE_FAST], ML_LANE_FAST, prim, cfg.fast_lane_size,
                       cfg.fast_lane_max_size, fshift, fast_classes, cfg.lock_lanes);
    if (rc) goto fail;
    rc = ml__lane_init(&a->lanes[ML_LANE_SLOW], ML_LANE_SLOW, prim, cfg.slow_lane_size,
                       cfg.slow_lane_max_size, ML_PAGE_SHIFT, slow_classes, cfg.lock_lanes);
    if (rc) goto fail;

    a->lanes[ML_LANE_SLOW].reserve_frac = cfg.slow_lane_safety_margin;
    ml__lane_set_reserve(&a->lanes[ML_LANE_SLOW]);
    rc = ml__debug_init(a);
    if (rc) goto fail;
    a->cfg.debug = a->debug; /* (ml_arena_config reports what is in effect) */

    pthread_mutex_init(&a->table_lock, NULL);
    pthread_mutex_init(&a->tc_list_lock, NULL);
    pthread_mutex_init(&a->meta_lock, NULL);
    pthread_mutex_init(&a->events_lock, NULL);
    a->free_head = ML_NIL32;
    for (unsigned i = 0; i < ML_MAX_GROUPS; i++) a->groups[i].head = ML_NIL32;
    a->epoch_ns = ml__coarse_ns();
    ml__registry_add(a);
    if (ml__pager && (rc = ml__pager->attach(a)) != 0) {
        ml__policy_start(a); /* initialises what destroy tears down */
        ml_arena_destroy(a);
        return rc;
    }
    rc = ml__policy_start(a);
    if (rc) {
        ml_arena_destroy(a);
        return rc;
    }
    *out = a;
    return 0;

fail:
    ml__debug_fini(a);
    ml__lane_fini(&a->lanes[ML_LANE_SLOW]);
    ml__lane_fini(&a->lanes[ML_LANE_FAST]);
    ml__meta_unmap(a->tags, (size_t)ML_MAX_TAGS * ML_TAG_MAX);
    ml__meta_unmap(a->locs, cfg.max_handles * sizeof(uint64_t));
    ml__meta_unmap(a->cold, cfg.max_handles * sizeof(ml_cold));
    ml__meta_unmap(a->slots, cfg.max_handles * sizeof(ml_slot));
    free(a->swap_dir);
    free(a);
    return rc;
}

int ml_arena_create(const ml_config *cfg, ml_arena **out)
{
    return ml__arena_create_with(cfg, ml__prim_os(), out);
}

void ml_arena_destroy(ml_arena *a)
{
    if (!a) return;
    ml__policy_stop(a);
    if (ml__pager) ml__pager->detach(a);
    ml__registry_remove(a);
    ml__tc_destroy_all(a);
    ml__debug_fini(a);
    ml__lane_fini(&a->lanes[ML_LANE_SLOW]);
    ml__lane_fini(&a->lanes[ML_LANE_FAST]);
    ml__meta_unmap(a->tags, (size_t)ML_MAX_TAGS * ML_TAG_MAX);
    ml__meta_unmap(a->locs, a->cfg.max_handles * sizeof(uint64_t));
    ml__meta_unmap(a->cold, a->cfg.max_handles * sizeof(ml_cold));
    ml__meta_unmap(a->slots, a->cfg.max_handles * sizeof(ml_slot));
    pthread_mutex_destroy(&a->table_lock);
    pthread_mutex_destroy(&a->tc_list_lock);
    pthread_mutex_destroy(&a->meta_lock);
    ml__events_fini(a);
    free(a->swap_dir);
    free(a);
}

int ml_arena_config(const ml_arena *a, ml_config *out)
{
    if (!a || !out) return -EINVAL;
    *out = a->cfg;
    return 0;
}

/* ---- stubs ---------------------------------------------------------------- */

/* A cold stub as it reads before anything was recorded for generation gen. */
static void cold_defaults(ml_arena *a, uint32_t idx, uint32_t gen, ml_cold *c)
{
    memset(c, 0, sizeof *c);
    c->gen = gen;
    c->gprev = c->gnext = ML_NIL32;
    c->last_access_ns = a->slots[idx].created_ns;
}

ml_cold *ml__cold(ml_arena *a, uint32_t idx, uint64_t m)
{
    ml_cold *c = &a->cold[idx];
    uint32_t gen = ML_HI_GEN(ml__hi(m));
    if (c->gen != gen) cold_defaults(a, idx, gen, c);
    return c;
}

void ml__cold_peek(ml_arena *a, uint32_t idx, uint64_t m, ml_cold *out)
{
    const ml_cold *c = &a->cold[idx];
    if (c->gen == ML_HI_GEN(ml__hi(m))) {
        /* Field by field: the group links (gprev, gnext) belong to the meta
         * lock, and a neighbour's link or unlink rewrites them while this
         * slot is claimed; they are not ours to read here. */
        memset(out, 0, sizeof *out);
        out->gen = c->gen;
        out->tag = c->tag;
        out->group = c->group;
        out->gprev = out->gnext = ML_NIL32;
        out->migrations = c->migrations;
        out->last_from = c->last_from;
        out->last_to = c->last_to;
        out->accesses = c->accesses;
        out->last_access_ns = c->last_access_ns;
        out->last_migration_ns = c->last_migration_ns;
        out->swap_copy = c->swap_copy;
        return;
    }
    cold_defaults(a, idx, ML_HI_GEN(ml__hi(m)), out);
}

void ml__locate(ml_arena *a, uint32_t idx, uint64_t m, ml_loc *out)
{
    ml_lane lane = (m & ML_M_STATE) == ML_STATE_FAST ? ML_LANE_FAST : ML_LANE_SLOW;
    ml_lane_t *l = &a->lanes[lane];
    size_t off = (size_t)(ml__lane_addr(a, idx, m) - (uint64_t)(uintptr_t)l->region.start);
    out->lane = lane;
    out->blob = (m & ML_M_BLOB) != 0;
    if (out->blob) {
        out->span = (uint32_t)(off >> l->unit_shift);
        out->index = 0;
        out->cls = ML_CLASS_NONE;
        out->bytes = (size_t)ml__ext_len(&l->ext, out->span) << l->unit_shift;
    } else {
        out->span = l->unit_span[off >> l->unit_shift];
        out->index = ml__block_index(l, out->span, off);
        out->cls = l->spans[out->span].cls;
        out->bytes = ml__class_size[out->cls];
    }
}

/* ---- allocation ------------------------------------------------------------ */

/* Write the stub of a freshly allocated slot and make it visible. `extra`
 * holds meta bits to publish with it (LOCKED, GROUPED, BLOB); `now` is the
 * creation time (ml__now). Returns the handle. The cold stub is not
 * touched: it is initialised on first need. */
static inline ml_handle publish_at(ml_arena *a, uint32_t idx, ml_lane lane, ml_lane born, size_t size,
                                   size_t align, uint64_t extra, uint64_t now)
{
    ml_slot *s = &a->slots[idx];
    /* Atomics: policy walks read these without claiming the slot. The size
     * is a release store: a reader that sees it (ml_size) also sees the
     * free of the slot's previous handle, and so rejects that handle. */
    __atomic_store_n(&s->size, size, __ATOMIC_RELEASE);
    __atomic_store_n(&s->created_ns, now, __ATOMIC_RELAXED);
    uint64_t hi = ml__hi(__atomic_load_n(&s->meta, __ATOMIC_RELAXED)) & (ML_GEN_MASK | (0x7fu << ML_TAG_SHIFT));
    hi |= (born == ML_LANE_SLOW ? ML_HI_BORN_SLOW : 0) | ML_HI_HANDLE;
    uint64_t st = lane == ML_LANE_FAST ? ML_STATE_FAST : ML_STATE_SLOW;
    uint64_t m = (hi << 32) | st | ((uint64_t)__builtin_ctzll(align) << ML_M_ALIGN_SHIFT) | extra;
    ml__store_rel(&s->meta, m);
    return (ml_handle){(hi << 32) | idx};
}

/* publish_at, with the slot's address set to addr first (publish_at alone
 * is for a slot whose addr already names its place: a paired one). */
static inline ml_handle publish(ml_arena *a, uint32_t idx, ml_lane lane, ml_lane born, char *addr,
                                size_t size, size_t align, uint64_t extra, uint64_t now)
{
    __atomic_store_n(&a->slots[idx].addr, (uint64_t)(uintptr_t)addr, __ATOMIC_RELAXED);
    return publish_at(a, idx, lane, born, size, align, extra, now);
}

static inline bool tc_pop_slot(ml_arena *a, ml_tcache *tc, uint32_t *idx)
{
    if (__builtin_expect(tc->nslots == 0, 0)) {
        tc->nslots = ml__table_take(a, tc->slots, ML_TC_SLOTS / 2);
        if (tc->nslots == 0) return false;
    }
    *idx = tc->slots[--tc->nslots];
    return true;
}

static inline void tc_push_slot(ml_arena *a, ml_tcache *tc, uint32_t idx)
{
    if (__builtin_expect(tc->nslots == ML_TC_SLOTS, 0)) {
        ml__table_put(a, tc->slots + ML_TC_SLOTS / 2, ML_TC_SLOTS / 2);
        tc->nslots = ML_TC_SLOTS / 2;
    }
    tc->slots[tc->nslots++] = idx;
}

static void put_slot(ml_arena *a, ml_tcache *tc, uint32_t idx)
{
    if (tc) tc_push_slot(a, tc, idx);
    else ml__table_put(a, &idx, 1);
}

/* Take the last of the n (> 0) cached blocks of class cls for slot idx:
 * its owner entry names the slot from now on (a slot paired with it goes to
 * the slot cache). Returns its address. */
static inline char *tc_take_block(ml_arena *a, ml_tcache *tc, unsigned cls, uint32_t n, uint32_t idx)
{
    ml_lane_t *l = &a->lanes[ML_LANE_FAST];
    uint64_t b = tc->cls[cls].b[n - 1];
    __atomic_store_n(&tc->cls[cls].n, n - 1, __ATOMIC_RELAXED);
    uint32_t span = (uint32_t)(b >> 32), bi = (uint32_t)b;
    if (__builtin_expect((b & ML_TC_PAIRED) != 0, 0)) {
        ml__fast_block_of(a, (uint32_t)b, &span, &bi);
        tc->npaired--;
        tc_push_slot(a, tc, (uint32_t)b);
    }
    ml__owner_store(&l->spans[span].owner[bi], idx + 1);
    /* (the class is known: no need to read it from the span) */
    return l->region.start + ((size_t)span << l->unit_shift) + (size_t)bi * ml__class_size[cls];
}

/* FastLane refill of the calling thread's cache. */
static bool tc_refill_blocks(ml_arena *a, ml_tcache *tc, unsigned cls)
{
    ml_lane_t *l = &a->lanes[ML_LANE_FAST];
    if (__atomic_load_n(&tc->flush_req, __ATOMIC_RELAXED)) ml__tc_flush(a, tc); /* compaction asked */
    pthread_mutex_lock(&l->lock);
    unsigned got = ml__lane_blocks_take(l, cls, tc->cls[cls].b, ML_TC_BLOCKS / 2, false);
    if (got == 0 && ml__lane_grow(l, (size_t)l->span_units[cls] << l->unit_shift) == 0)
        got = ml__lane_blocks_take(l, cls, tc->cls[cls].b, ML_TC_BLOCKS / 2, false);
    pthread_mutex_unlock(&l->lock);
    __atomic_store_n(&tc->cls[cls].n, got, __ATOMIC_RELAXED);
    return got != 0;
}

void ml__release_place(ml_arena *a, ml_lane lane, char *addr, bool blob)
{
    ml_lane_t *l = &a->lanes[lane];
    size_t off = (size_t)(addr - ml__lane_base(l));
    pthread_mutex_lock(&l->lock);
    if (blob) {
        ml__lane_blob_free(l, (uint32_t)(off >> l->unit_shift));
    } else {
        uint32_t span = l->unit_span[off >> l->unit_shift];
        ml__lane_block_put(l, span, ml__block_index(l, span, off));
    }
    pthread_mutex_unlock(&l->lock);
}

static int place_once(ml_arena *a, ml_lane lane, size_t size, size_t align, uint32_t owner, unsigned flags,
                      ml_place *out)
{
    ml_lane_t *l = &a->lanes[lane];
    bool internal = (flags & ML_PLACE_INTERNAL) != 0;
    unsigned c = (flags & ML_PLACE_BLOB) && lane == ML_LANE_SLOW ? ML_CLASS_NONE
                                                                  : ml__size_class_aligned(size, align, l->nclasses);
    if (c == ML_CLASS_NONE && lane == ML_LANE_FAST) return -ENOMEM; /* no blobs there */
    int rc = -ENOMEM;
    pthread_mutex_lock(&l->lock);
    /* Growing raises the SlowLane reserve with the capacity: a growth is
     * sized for the item and the reserve of the grown lane, (item + today's
     * reserve) / (1 - reserve fraction), or, where that passes the lane's
     * maximum, reaches the maximum (a size near the largest the lane can
     * hold needs all of it). Another round covers what a growth still
     * falls short by (each adds at least a quarter). */
    for (int attempt = 0; attempt < 4; attempt++) {
        if (c != ML_CLASS_NONE) {
            uint64_t b;
            if (ml__lane_blocks_take(l, c, &b, 1, internal) == 1) {
                uint32_t span = (uint32_t)(b >> 32), index = (uint32_t)b;
                ml__owner_store(&l->spans[span].owner[index], owner);
                out->addr = ml__block_addr(l, span, index);
                out->blob = false;
                out->bytes = ml__class_size[c];
                rc = 0;
                break;
            }
        } else {
            uint32_t s = ml__lane_blob_alloc(l, size, owner, internal);
            if (s != ML_EXT_NIL) {
                out->addr = ml__lane_base(l) + ((size_t)s << l->unit_shift);
                out->blob = true;
                out->bytes = (size_t)ml__ext_len(&l->ext, s) << l->unit_shift;
                rc = 0;
                break;
            }
        }
        size_t need = c != ML_CLASS_NONE ? (size_t)l->span_units[c] << l->unit_shift : size;
        need += (size_t)l->reserve_units << l->unit_shift;
        if (l->reserve_frac > 0) need = (size_t)((double)need / (1.0 - l->reserve_frac)) + ml__lane_unit(l);
        if (attempt == 3 || (ml__lane_grow(l, need) != 0 && ml__lane_grow_to_max(l) != 0)) break;
    }
    pthread_mutex_unlock(&l->lock);
    return rc;
}

int ml__place(ml_arena *a, ml_lane lane, size_t size, size_t align, uint32_t owner, unsigned flags,
              ml_place *out)
{
    int rc = place_once(a, lane, size, align, owner, flags, out);
    /* Debug mode: what the quarantine holds goes back before anything
     * fails for want of room (core/debug.c). */
    if (rc == -ENOMEM && a->dbg && ml__debug_drain(a)) rc = place_once(a, lane, size, align, owner, flags, out);
    return rc;
}

static inline void count_alloc(ml_tcache *tc, ml_lane lane, size_t bytes, size_t size)
{
    ML_TC_ADD(tc->allocs[lane], 1);
    ML_TC_ADD(tc->used[lane], (int64_t)bytes);
    ML_TC_ADD(tc->requested[lane], (int64_t)size);
}

void ml__account(ml_arena *a, ml_lane lane, int64_t used, int64_t requested)
{
    ml_tcache *tc = ml__tc_get(a);
    if (tc) {
        ML_TC_ADD(tc->used[lane], used);
        ML_TC_ADD(tc->requested[lane], requested);
        return;
    }
    pthread_mutex_lock(&a->tc_list_lock);
    a->gone_used[lane] += used;
    a->gone_requested[lane] += requested;
    pthread_mutex_unlock(&a->tc_list_lock);
}

static inline void count_free(ml_arena *a, ml_tcache *tc, ml_lane lane, size_t bytes, size_t size)
{
    if (tc) {
        ML_TC_ADD(tc->frees[lane], 1);
        ML_TC_ADD(tc->used[lane], -(int64_t)bytes);
        ML_TC_ADD(tc->requested[lane], -(int64_t)size);
        return;
    }
    pthread_mutex_lock(&a->tc_list_lock);
    a->gone_frees[lane]++;
    a->gone_used[lane] -= (int64_t)bytes;
    a->gone_requested[lane] -= (int64_t)size;
    pthread_mutex_unlock(&a->tc_list_lock);
}

/* Blocks this thread has freed wait in its cache, where ml__place does not
 * look (grouped allocations never take from the cache). Hand them back to
 * FastLane; true if there were any. */
static bool flush_own_blocks(ml_arena *a)
{
    ml_tcache *tc = ml__tc_get(a);
    if (!tc) return false;
    bool any = false;
    for (unsigned c = 0; c < a->lanes[ML_LANE_FAST].nclasses && !any; c++) any = tc->cls[c].n != 0;
    if (any) ml__tc_flush(a, tc);
    return any;
}

size_t ml__slow_make_room(ml_arena *a, size_t size)
{
    if (!a->pager) return 0;
    ml_lane_t *sl = &a->lanes[ML_LANE_SLOW];
    pthread_mutex_lock(&sl->lock);
    size_t reserve = (size_t)sl->reserve_units << sl->unit_shift;
    pthread_mutex_unlock(&sl->lock);
    /* Ordinary placements leave the reserve free: room must exceed it. */
    size_t freed = ml__pager->make_room(a, ml__align_up(size, ML_PAGE_SIZE) + reserve);
    if (freed) return freed;
    /* Debug mode: what eviction gave up sits in the quarantine, still
     * allocated (so the pager saw nothing freed): give it back. */
    if (ml__debug_drain(a)) return 1;
    /* Nothing left to move out, but another thread (the policy thread
     * evicting, a free) may have made the room while this one waited for
     * the pager: then the caller's next placement finds it. */
    size_t units = ml__align_up(size, ML_PAGE_SIZE) >> sl->unit_shift;
    pthread_mutex_lock(&sl->lock);
    bool room = ml__ext_largest_free(&sl->ext) >= units && sl->ext.free_units >= units + sl->reserve_units;
    pthread_mutex_unlock(&sl->lock);
    return room;
}

bool ml__slow_never_holds(const ml_arena *a, size_t size)
{
    const ml_lane_t *sl = &a->lanes[ML_LANE_SLOW];
    uint64_t max_units = sl->region.max >> sl->unit_shift;
    uint64_t reserve = (uint64_t)((double)max_units * sl->reserve_frac);
    uint64_t need = ml__align_up(size, (size_t)1 << sl->unit_shift) >> sl->unit_shift;
    /* A size SlowLane keeps in blocks of a class needs a whole span of the
     * smallest class that can take it (any alignment). */
    unsigned c0 = size <= ML_MAX_CLASS_SIZE ? ml__size_class(size) : ML_CLASS_NONE;
    if (c0 != ML_CLASS_NONE && c0 < sl->nclasses) {
        need = UINT64_MAX;
        for (unsigned c = c0; c < sl->nclasses; c++)
            if (sl->span_units[c] < need) need = sl->span_units[c];
    }
    return need > max_units - reserve;
}

static void count_alloc_failure(ml_arena *a, ml_lane lane)
{
    pthread_mutex_lock(&a->lanes[lane].lock);
    a->lanes[lane].alloc_failures++;
    pthread_mutex_unlock(&a->lanes[lane].lock);
}

/* Try to place an allocation, making room step by step: FastLane (growing
 * it), then migrating FastLane's oldest entries out, then SlowLane (by
 * failover for small sizes), then compaction, then the program's pressure
 * callback. `born` comes back as the lane the handle is born in. */
static int place_with_remedies(ml_arena *a, size_t size, size_t align, uint32_t owner,
                               ml_lane *born, ml_lane *lane, ml_place *pl)
{
    /* Small: FastLane has a class for it. It may not, for an alignment no
     * FastLane class is a multiple of (threshold 1000, align 2048): such an
     * allocation belongs in SlowLane, and that is not a failover. */
    bool small = size <= a->cfg.threshold &&
                 ml__size_class_aligned(size, align, a->lanes[ML_LANE_FAST].nclasses) != ML_CLASS_NONE;
    if (!small && ml__slow_never_holds(a, size)) {
        count_alloc_failure(a, ML_LANE_SLOW);
        return -ENOMEM;
    }
    bool pressure_tried = false;
    /* This thread's cached free blocks go back to the lane at the first
     * shortage, and again after the pressure callback: what it frees lands
     * in this cache, where no placement looks. */
    bool flush_due = true;
    for (int round = 0;; round++) {
        if (small) {
            if (ml__place(a, ML_LANE_FAST, size, align, owner, false, pl) == 0) {
                *born = *lane = ML_LANE_FAST;
                return 0;
            }
            bool flush = flush_due;
            flush_due = false;
            if (flush && flush_own_blocks(a) &&
                ml__place(a, ML_LANE_FAST, size, align, owner, false, pl) == 0) {
                *born = *lane = ML_LANE_FAST;
                return 0;
            }
            if (round == 0 && a->cfg.migrate_on_full && ml__make_room_fast(a) > 0) continue;
        }
        if (!small || a->cfg.failover_to_slow) {
            if (ml__place(a, ML_LANE_SLOW, size, align, owner, false, pl) == 0) {
                *born = *lane = ML_LANE_SLOW;
                if (small) {
                    pthread_mutex_lock(&a->lanes[ML_LANE_SLOW].lock);
                    a->lanes[ML_LANE_SLOW].failovers++;
                    pthread_mutex_unlock(&a->lanes[ML_LANE_SLOW].lock);
                }
                return 0;
            }
        }
        if (round == 0) {
            /* Free space may exist in pieces: compact what would take it. */
            int moved = 0;
            if (small) moved += ml__compact_for_room(a, ML_LANE_FAST);
            if (!small || a->cfg.failover_to_slow) moved += ml__compact_for_room(a, ML_LANE_SLOW);
            if (moved) continue;
        }
        /* Cold blobs can leave SlowLane (compressed, or to disk). */
        if (round < 8 && (!small || a->cfg.failover_to_slow) && ml__slow_make_room(a, size)) continue;
        void *pctx;
        ml_pressure_fn pfn = ml__pressure_cb(a, &pctx);
        if (!pressure_tried && pfn) {
            pressure_tried = true;
            __atomic_fetch_add(&a->pressure_calls, 1, __ATOMIC_RELAXED);
            if (pfn(pctx, a, size)) {
                flush_due = true;
                continue;
            }
        }
        count_alloc_failure(a, small ? ML_LANE_FAST : ML_LANE_SLOW);
        return -ENOMEM;
    }
}

/* The meta bits a handle allocated with these ml_alloc_ex flags is
 * published with: one pin (as a write pin: accessed) for ML_ALLOC_PINNED. */
static inline uint64_t pin_bits(unsigned flags)
{
    return (flags & ML_ALLOC_PINNED) ? ML_M_PIN_ONE | ML_M_ACCESSED : 0;
}

/* The general path: SlowLane, groups, or FastLane when its cache path failed. */
static int alloc_slow(ml_arena *a, ml_tcache *tc, size_t size, size_t align, ml_group group, unsigned flags,
                      ml_handle *out, void **ptr)
{
    uint32_t idx;
    bool have_slot = tc ? tc_pop_slot(a, tc, &idx) : ml__table_take(a, &idx, 1) == 1;
    if (!have_slot && tc) {
        /* Every slot is taken, but this thread's cache may hold freed ones
         * paired with their blocks: give them (and the blocks) back. */
        ml__tc_flush(a, tc);
        have_slot = tc_pop_slot(a, tc, &idx);
    }
    if (!have_slot) {
        __atomic_fetch_add(&a->enomem, 1, __ATOMIC_RELAXED);
        return -ENOMEM;
    }
    ml_lane born, lane;
    ml_place pl;
    int rc = place_with_remedies(a, size, align, idx + 1, &born, &lane, &pl);
    if (rc) {
        /* The remedies may have run on this thread's cache: fetch it again. */
        put_slot(a, ml__tc_get(a), idx);
        __atomic_fetch_add(&a->enomem, 1, __ATOMIC_RELAXED);
        return rc;
    }
    tc = ml__tc_get(a);
    if (flags & ML_ALLOC_ZEROED) memset(pl.addr, 0, size);
    else ml__debug_fill_new(a, pl.addr, size);
    bool grouped = group != ML_GROUP_NONE;
    uint64_t extra = (pl.blob ? ML_M_BLOB : 0) | (grouped ? ML_M_LOCKED | ML_M_GROUPED : 0) | pin_bits(flags);
    ml_handle h = publish(a, idx, lane, born, pl.addr, size, align, extra, ml__now(a));
    if (tc) count_alloc(tc, lane, pl.bytes, size);
    else {
        pthread_mutex_lock(&a->tc_list_lock);
        a->gone_allocs[lane]++;
        a->gone_used[lane] += (int64_t)pl.bytes;
        a->gone_requested[lane] += (int64_t)size;
        pthread_mutex_unlock(&a->tc_list_lock);
    }
    /* (before the group link: a link that fails frees the handle, and its
     * FREE event must follow this one) */
    if (ML_EVENT_ON(a)) ml__event(a, ML_EVENT_ALLOC, h, size, 1, lane, lane);
    if (grouped) {
        rc = ml__group_link(a, idx, group);
        if (rc) {
            __atomic_fetch_and(&a->slots[idx].meta, ~ML_M_GROUPED, __ATOMIC_RELAXED);
            ml__free_claimed(a, idx);
            return rc;
        }
        ml__unclaim(a, idx);
    }
    if (ptr) *ptr = pl.addr;
    *out = h;
    return 0;
}

/* ml__alloc with ml_alloc_ex's flags; with ML_ALLOC_ZEROED, the bytes are
 * zeroed before the handle is published, so nothing (the debug view, an
 * eviction) sees them otherwise; with ML_ALLOC_PINNED the handle is
 * published pinned, so no relocation can come between its birth and the
 * program's first write. ptr (optional) receives the data's address. */
static int alloc_general(ml_arena *a, size_t size, size_t align, ml_group group, unsigned flags,
                         ml_handle *out, void **ptr)
{
    if (!a || !out || size == 0) return -EINVAL;
    if ((align & (align - 1)) || align > ML_PAGE_SIZE || align == 0) return -EINVAL;
    if (size > a->cfg.slow_lane_max_size) return -EINVAL;
    /* (a group destroyed after this check makes the link fail, and then
     * nothing is allocated either) */
    if (group != ML_GROUP_NONE && !ml__group_exists(a, group)) return -ENOENT;
    if (align < 16) align = 16;
    /* (debug mode: every allocation is a relocation point, as one that
     * finds the arena full is) */
    ML_DEBUG_POINT(a, ML_DEBUG_ALL_LANES, UINT32_MAX);
    ml_tcache *tc = ml__tc_get(a);
    if (__builtin_expect(size <= a->cfg.threshold && group == ML_GROUP_NONE && tc != NULL, 1)) {
        ml_lane_t *l = &a->lanes[ML_LANE_FAST];
        unsigned cls = align == 16 ? ml__size_class(size)
                                   : ml__size_class_aligned(size, align, l->nclasses);
        if (cls < l->nclasses) {
            uint32_t idx;
            if (tc_pop_slot(a, tc, &idx)) {
                uint32_t n = tc->cls[cls].n;
                if (n || (tc_refill_blocks(a, tc, cls) && (n = tc->cls[cls].n) != 0)) {
                    char *p = tc_take_block(a, tc, cls, n, idx);
                    if (flags & ML_ALLOC_ZEROED) memset(p, 0, size);
                    *out = publish(a, idx, ML_LANE_FAST, ML_LANE_FAST, p, size, align, pin_bits(flags),
                                   ml__now(a));
                    if (ptr) *ptr = p;
                    count_alloc(tc, ML_LANE_FAST, ml__class_size[cls], size);
                    if (ML_EVENT_ON(a)) ml__event(a, ML_EVENT_ALLOC, *out, size, 1, ML_LANE_FAST, ML_LANE_FAST);
                    return 0;
                }
                tc_push_slot(a, tc, idx);
            }
        }
    }
    return alloc_slow(a, tc, size, align, group, flags, out, ptr);
}

int ml__alloc(ml_arena *a, size_t size, size_t align, ml_group group, ml_handle *out)
{
    return alloc_general(a, size, align, group, 0, out, NULL);
}

/* ml_alloc's fast path: a FastLane size with both a free slot and a free
 * block of its class in this thread's cache. It is the general path above
 * with everything that case does not need left out (alignment and group
 * arguments, refills, remedies), so that it needs no stack frame beyond the
 * clock call; anything else goes to ml__alloc. */
int ml_alloc(ml_arena *a, size_t size, ml_handle *out)
{
    if (__builtin_expect(a != NULL && out != NULL && size - 1 < a->fast_max, 1)) {
        /* The clock first: fewer values live across the call. */
        uint64_t now = ml__now(a);
        const ml_tls_ent *e = &ml__tls[0];
        if (__builtin_expect(e->arena == a && e->serial == a->serial, 1)) {
            ml_tcache *tc = e->tc;
            unsigned cls = ml__size_class_fast(size);
            uint32_t nb = tc->cls[cls].n;
            if (__builtin_expect(nb != 0, 1)) {
                uint64_t b = tc->cls[cls].b[nb - 1];
                uint32_t idx, ns;
                ml_handle h;
                if (__builtin_expect((b & ML_TC_PAIRED) != 0, 1)) {
                    /* A block freed here with its slot: both are reused as they are. */
                    idx = (uint32_t)b;
                    __atomic_store_n(&tc->cls[cls].n, nb - 1, __ATOMIC_RELAXED);
                    tc->npaired--;
                    h = publish_at(a, idx, ML_LANE_FAST, ML_LANE_FAST, size, 16, 0, now);
                } else if ((ns = tc->nslots) != 0) {
                    idx = tc->slots[ns - 1];
                    tc->nslots = ns - 1;
                    h = publish(a, idx, ML_LANE_FAST, ML_LANE_FAST, tc_take_block(a, tc, cls, nb, idx), size,
                                16, 0, now);
                } else {
                    goto general;
                }
                *out = h;
                ML_TC_ADD(tc->cls[cls].fa, 1);
                ML_TC_ADD(tc->requested[ML_LANE_FAST], (int64_t)size);
                if (ML_EVENT_ON(a)) ml__event(a, ML_EVENT_ALLOC, h, size, 1, ML_LANE_FAST, ML_LANE_FAST);
                return 0;
            }
        }
    }
general:
    return ml__alloc(a, size, 16, 0, out);
}

int ml_alloc_aligned(ml_arena *a, size_t size, size_t align, ml_handle *out)
{
    return ml__alloc(a, size, align, 0, out);
}

int ml_alloc_zeroed(ml_arena *a, size_t size, ml_handle *out)
{
    return alloc_general(a, size, 16, ML_GROUP_NONE, ML_ALLOC_ZEROED, out, NULL);
}

int ml_alloc_ex(ml_arena *a, size_t size, size_t align, ml_group group, unsigned flags, ml_handle *out,
                void **ptr)
{
    if (ptr) *ptr = NULL;
    if (!a || !out || (flags & ~(unsigned)(ML_ALLOC_ZEROED | ML_ALLOC_PINNED))) return -EINVAL;
    int rc = alloc_general(a, size, align ? align : 16, group, flags, out, ptr);
    if (rc == 0 && ptr) ML_DEBUG_EXPOSE(a, ml__idx(*out));
    return rc;
}

/* ---- free ------------------------------------------------------------------- */

static uint32_t tc_spill(ml_arena *a, ml_tcache *tc, unsigned cls);

/* A freed slot goes back for reuse, unless its generation is spent. */
static void slot_back(ml_arena *a, ml_tcache *tc, uint32_t idx, uint64_t m)
{
    if (ML_HI_GEN(ml__hi(m)) >= ML_GEN_MAX) {
        pthread_mutex_lock(&a->table_lock);
        a->retired++;
        pthread_mutex_unlock(&a->table_lock);
    } else {
        put_slot(a, tc, idx);
    }
}

/* Give back the storage of a slot whose meta word (m, as it was while live)
 * has just been replaced by a free one. The caller owns the slot. */
static void release(ml_arena *a, uint32_t idx, uint64_t m)
{
    ml_slot *s = &a->slots[idx];
    size_t size = s->size;
    if (ML_EVENT_ON(a)) {
        ml_lane l = (m & ML_M_STATE) == ML_STATE_FAST ? ML_LANE_FAST : ML_LANE_SLOW;
        ml__event(a, ML_EVENT_FREE, ml__handle_of(m, idx), size, 1, l, l);
    }
    if (!(m & ML_M_RESIDENT)) {
        /* Cold: the pager releases its record (and the lane space of an
         * in-RAM one) and its accounting; the slot goes back here. */
        ml__pager->drop(a, idx, m);
        ml_tcache *tc = ml__tc_get(a);
        count_free(a, tc, ML_LANE_SLOW, 0, size);
        slot_back(a, tc, idx, m);
        return;
    }
    if ((m & ML_M_HASCOPY) && ml__pager) ml__pager->drop_copy(a, idx, m);
    ml_loc loc;
    ml__locate(a, idx, m, &loc);
    ml_lane_t *l = &a->lanes[loc.lane];
    ml_tcache *tc = ml__tc_get(a);
    if (!loc.blob && loc.lane == ML_LANE_FAST && tc) {
        /* The block's owner entry still names this slot: a stale hint that
         * compaction checks against the slot (see lane.h). */
        uint32_t n = tc->cls[loc.cls].n;
        if (__builtin_expect(n == ML_TC_BLOCKS, 0)) n = tc_spill(a, tc, loc.cls);
        tc->cls[loc.cls].b[n] = ((uint64_t)loc.span << 32) | loc.index;
        __atomic_store_n(&tc->cls[loc.cls].n, n + 1, __ATOMIC_RELAXED);
    } else if (!ml__debug_hold(a, &loc)) {
        pthread_mutex_lock(&l->lock);
        if (loc.blob) ml__lane_blob_free(l, loc.span);
        else ml__lane_block_put(l, loc.span, loc.index);
        pthread_mutex_unlock(&l->lock);
    }
    count_free(a, tc, loc.lane, loc.bytes, size);
    slot_back(a, tc, idx, m);
}

/* The meta word of slot with live meta m once freed: next generation (or
 * retired), same arena tag, no state. */
static inline uint64_t freed_meta(const ml_arena *a, uint64_t m)
{
    uint32_t gen = ML_HI_GEN(ml__hi(m));
    return ml__free_meta(a, gen >= ML_GEN_MAX ? ML_GEN_RETIRED : gen + 1);
}

void ml__free_claimed(ml_arena *a, uint32_t idx)
{
    ml_slot *s = &a->slots[idx];
    uint64_t m = ml__load(&s->meta);
    if (m & ML_M_GROUPED) {
        ml__group_unlink(a, idx);
        m &= ~ML_M_GROUPED;
    }
    uint32_t tag = (m & ML_M_TAGGED) ? a->cold[idx].tag : 0;
    ml__store_rel(&s->meta, freed_meta(a, m));
    release(a, idx, m);
    if (tag) ml__tag_unref(a, tag);
}

/* Make room in a full class cache (out of the fast path): give half of it
 * back to FastLane, or all of every class when compaction asked for a
 * flush. Returns the class's count afterwards: ML_TC_BLOCKS / 2, or 0. */
static __attribute__((noinline)) uint32_t tc_spill(ml_arena *a, ml_tcache *tc, unsigned cls)
{
    ml_lane_t *l = &a->lanes[ML_LANE_FAST];
    if (__atomic_load_n(&tc->flush_req, __ATOMIC_RELAXED)) {
        ml__tc_flush(a, tc);
        return 0;
    }
    uint32_t paired[ML_TC_BLOCKS / 2];
    pthread_mutex_lock(&l->lock);
    uint32_t np = ml__tc_put_entries(a, tc->cls[cls].b + ML_TC_BLOCKS / 2, ML_TC_BLOCKS / 2, paired);
    pthread_mutex_unlock(&l->lock);
    __atomic_store_n(&tc->cls[cls].n, ML_TC_BLOCKS / 2, __ATOMIC_RELAXED);
    tc->npaired -= np;
    /* Their slots stay in this cache, loose: a thread that frees one size
     * and allocates another takes them back from there, not from the table. */
    for (uint32_t i = 0; i < np; i++) tc_push_slot(a, tc, paired[i]);
    return ML_TC_BLOCKS / 2;
}

static __attribute__((noinline)) int free_slow(ml_arena *a, ml_handle h)
{
    uint32_t idx = ml__idx(h);
    ml_slot *s = &a->slots[idx];
    uint64_t m = ml__load_acq(&s->meta);
    for (;;) {
        if (!ml__same(h, m)) return ml__check(a, h, m);
        if (m & ML_M_PINS) return -EBUSY;
        if (m & (ML_M_LOCKED | ML_M_GROUPED | ML_M_TAGGED)) break; /* wait, or unlink first */
        /* One step from live to free: the handle is stale from here on. */
        if (__atomic_compare_exchange_n(&s->meta, &m, freed_meta(a, m), true, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE)) {
            release(a, idx, m);
            return 0;
        }
    }
    int rc = ml__claim(a, h, ML_CLAIM_UNPINNED, &m);
    if (rc) return rc;
    ml__free_claimed(a, idx);
    return 0;
}

/* The rest of ml_free's fast path when a cache is full, paired_max slots
 * are paired already, or events are on (the slot is already freed: this
 * only files its block and slot). Out of line, so the fast path needs no
 * stack frame. */
static __attribute__((noinline)) int free_fast_finish(ml_arena *a, ml_tcache *tc, ml_handle h, unsigned cls)
{
    uint32_t idx = ml__idx(h);
    ml_slot *s = &a->slots[idx];
    uint32_t n = tc->cls[cls].n;
    if (n == ML_TC_BLOCKS) n = tc_spill(a, tc, cls);
    if (tc->npaired < a->paired_max) {
        tc->cls[cls].b[n] = ML_TC_PAIRED | idx;
        tc->npaired++;
    } else {
        /* Enough slots are paired: this one goes where any thread can get it. */
        uint32_t span, bi;
        ml__fast_block_of(a, idx, &span, &bi);
        tc->cls[cls].b[n] = ((uint64_t)span << 32) | bi;
        tc_push_slot(a, tc, idx);
    }
    __atomic_store_n(&tc->cls[cls].n, n + 1, __ATOMIC_RELAXED);
    count_free(a, tc, ML_LANE_FAST, ml__class_size[cls], s->size);
    if (ML_EVENT_ON(a)) ml__event(a, ML_EVENT_FREE, h, s->size, 1, ML_LANE_FAST, ML_LANE_FAST);
    return 0;
}

int ml_free(ml_arena *a, ml_handle h)
{
    if (__builtin_expect(a == NULL, 0)) return -EINVAL;
    uint32_t idx = ml__idx(h);
    if (__builtin_expect(idx >= a->max_handles, 0)) return -EINVAL;
    ml_slot *s = &a->slots[idx];
    uint64_t m = ml__load_acq(&s->meta);
    /* Fast path: an unpinned, unclaimed, ungrouped FastLane block whose slot
     * is not about to retire, freed by a thread whose cache for this arena
     * is its most recent one, goes straight back to that cache. */
    const uint64_t mask = ML_M_STATE | ML_M_LOCKED | ML_M_GROUPED | ML_M_TAGGED | ML_M_BLOB | ML_M_PINS;
    const ml_tls_ent *e = &ml__tls[0];
    /* The handle's RESIDENT|ACCESSED bits must be set: a forged value with
     * them clear equals the meta word of a live entry not accessed since
     * the last maintenance cycle. */
    if (__builtin_expect(((m ^ h.bits) >> 32) == 0 && (m & mask) == ML_STATE_FAST &&
                             (ml__hi(h.bits) & ML_HI_HANDLE) == ML_HI_HANDLE &&
                             ML_HI_GEN(ml__hi(m)) < ML_GEN_MAX && e->arena == a &&
                             e->serial == a->serial,
                         1) &&
        __atomic_compare_exchange_n(&s->meta, &m, freed_meta(a, m), false, __ATOMIC_ACQ_REL,
                                    __ATOMIC_RELAXED)) {
        /* The slot is ours now; its address cannot move any more (a move
         * needs a claim, which needs the generation we just retired). */
        ml_tcache *tc = e->tc;
        ml_lane_t *l = &a->lanes[ML_LANE_FAST];
        size_t off = (size_t)(ml__load(&s->addr) - (uint64_t)(uintptr_t)l->region.start);
        unsigned cls = l->spans[off >> l->unit_shift].cls; /* FastLane spans are one unit */
        uint32_t n = tc->cls[cls].n, np = tc->npaired;
        if (__builtin_expect(n == ML_TC_BLOCKS || np >= a->paired_max || ML_EVENT_ON(a), 0))
            return free_fast_finish(a, tc, h, cls);
        /* The block stays paired with its slot (ML_TC_PAIRED). */
        tc->cls[cls].b[n] = ML_TC_PAIRED | idx;
        __atomic_store_n(&tc->cls[cls].n, n + 1, __ATOMIC_RELAXED);
        tc->npaired = np + 1;
        ML_TC_ADD(tc->cls[cls].ff, 1);
        ML_TC_ADD(tc->requested[ML_LANE_FAST], -(int64_t)s->size);
        return 0;
    }
    return free_slow(a, h);
}

/* ---- access ------------------------------------------------------------------ */

const ml_pager_ops *ml__pager;

void ml__pager_register(const ml_pager_ops *ops) { ml__pager = ops; }

int ml__page_in_claimed(ml_arena *a, uint32_t idx, uint64_t m, bool read_only)
{
    if (m & ML_M_RESIDENT) return 0;
    if (!ml__pager) return -EIO; /* cannot happen: nothing made it cold */
    return ml__pager->page_in(a, idx, read_only);
}

/* Mark an access: a writable one sets ACCESSED and ends a clean copy's
 * cleanliness; a read-only one sets REFERENCED. Only writes when a bit must
 * change (CLOCK). Unclaimed callers race frees: the word is only changed
 * while it still holds the same handle (its identity bits: a free moves the
 * generation on), so a late mark never lands on the slot's next handle. */
static inline void mark_access(ml_slot *s, uint64_t m, bool read_only)
{
    const uint32_t id = ml__hi(m) & ML_HI_ID_MASK;
    uint64_t want;
    if (read_only) {
        if (m & (ML_M_ACCESSED | ML_M_REFERENCED)) return;
        do {
            if ((ml__hi(m) & ML_HI_ID_MASK) != id) return;
            want = m | ML_M_REFERENCED;
        } while (!__atomic_compare_exchange_n(&s->meta, &m, want, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
        return;
    }
    if ((m & (ML_M_ACCESSED | ML_M_CLEAN | ML_M_NOCOMP)) == ML_M_ACCESSED) return;
    do {
        if ((ml__hi(m) & ML_HI_ID_MASK) != id) return;
        want = (m | ML_M_ACCESSED) & ~(ML_M_CLEAN | ML_M_NOCOMP);
    } while (!__atomic_compare_exchange_n(&s->meta, &m, want, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
}

int ml__claim_resident(ml_arena *a, ml_handle h, bool read_only, size_t offset, size_t len, uint64_t *m_out,
                       ml_move *pagein)
{
    uint32_t idx = ml__idx(h);
    if (pagein) pagein->seq = 0;
    for (int round = 0;; round++) {
        uint64_t m;
        int rc = ml__claim(a, h, ML_CLAIM_ANY, &m);
        if (rc) return rc;
        size_t size = a->slots[idx].size;
        /* A cold entry's address is where its data last was (core/arena.h). */
        uint64_t last = ml__load(&a->slots[idx].addr);
        if (offset > size || len > size - offset) rc = -EINVAL;
        else rc = ml__page_in_claimed(a, idx, m, read_only);
        if (rc == 0 && pagein && !(m & ML_M_RESIDENT))
            ml__pagein_report(a, idx, ml__load(&a->slots[idx].meta), last, pagein);
        if (rc == 0) {
            /* Acquire: a pin may have been released since the claim (ML_CLAIM_ANY
             * claims pinned entries too), and a caller that sees no pins must
             * see the writes made through them before it moves the bytes. */
            *m_out = ml__load_acq(&a->slots[idx].meta);
            return 0;
        }
        ml__unclaim(a, idx);
        /* No place found: the free space may be in pieces that eviction
         * cannot join (pinned or small entries between them). Compact
         * SlowLane once, unclaimed (compaction calls the program's move
         * callback, which may touch this very handle), and try again. */
        if (rc != -ENOMEM || round > 0 || !ml__compact_for_room(a, ML_LANE_SLOW)) return rc;
    }
}

/* Bring a cold handle back (any access does): claim it, page it in (a
 * read-only access keeps the swap record as a clean copy), and take its
 * address and mark the access while still holding the claim, so that an
 * eviction racing this access cannot send it out again in between. */
static int make_resident(ml_arena *a, ml_handle h, bool read_only, void **out)
{
    uint64_t m;
    ml_move back;
    int rc = ml__claim_resident(a, h, read_only, 0, 0, &m, &back);
    if (rc) return rc;
    uint32_t idx = ml__idx(h);
    ml_slot *s = &a->slots[idx];
    mark_access(s, m, read_only);
    if (out) {
        *out = (void *)(uintptr_t)__atomic_load_n(&s->addr, __ATOMIC_RELAXED);
        ML_DEBUG_EXPOSE(a, idx);
    }
    ml__unclaim(a, idx);
    ml__fire_move(a, &back);
    return 0;
}

/* ml__lookup for an access. In debug mode (ML_DEBUG_MOVES) an access to a
 * SlowLane blob, with paging on, is also a relocation point for the other
 * SlowLane entries, as bringing a cold blob back may be; the handle is
 * looked up again after it (it may have been freed meanwhile). */
static int lookup_access(ml_arena *a, ml_handle h, ml_slot **s, uint64_t *m)
{
    int rc = ml__lookup(a, h, s, m);
    if (rc || !__builtin_expect(a->debug & ML_DEBUG_MOVES, 0) || !a->cfg.enable_paging || !(*m & ML_M_BLOB))
        return rc;
    ml__debug_point(a, 1u << ML_LANE_SLOW, ml__idx(h));
    return ml__lookup(a, h, s, m);
}

/* Unclaimed: the meta word says resident, so the address read after it is
 * the data's, then or later (a slot's addr never holds a cold entry's
 * record: core/arena.h, "where a live entry keeps its bytes"). */
static int get_common(ml_arena *a, ml_handle h, void **out, bool read_only)
{
    ml_slot *s;
    uint64_t m;
    int rc = lookup_access(a, h, &s, &m);
    if (rc) return rc;
    if (!(m & ML_M_RESIDENT)) return make_resident(a, h, read_only, out);
    mark_access(s, m, read_only);
    *out = (void *)(uintptr_t)__atomic_load_n(&s->addr, __ATOMIC_ACQUIRE);
    ML_DEBUG_EXPOSE(a, ml__idx(h));
    return 0;
}

static int get_slow(ml_arena *a, ml_handle h, void **out) { return get_common(a, h, out, false); }

const void *ml_get_ro(ml_arena *a, ml_handle h)
{
    void *p;
    if (!a) return NULL;
    return get_common(a, h, &p, true) == 0 ? p : NULL;
}

int ml_try_get_ro(ml_arena *a, ml_handle h, const void **out)
{
    if (!out) return -EINVAL;
    *out = NULL;
    if (!a) return -EINVAL;
    void *p;
    int rc = get_common(a, h, &p, true);
    if (rc == 0) *out = p;
    return rc;
}

void *ml_get_slow(ml_arena *a, ml_handle h)
{
    void *p;
    if (!a) return NULL;
    return get_slow(a, h, &p) == 0 ? p : NULL;
}

void *(ml_get)(ml_arena *a, ml_handle h) { return ml__get_inline(a, h); }

int ml_try_get(ml_arena *a, ml_handle h, void **out)
{
    if (!out) return -EINVAL;
    *out = NULL;
    if (!a) return -EINVAL;
    void *p = ml__get_fast(a, h);
    if (p) {
        *out = p;
        return 0;
    }
    return get_slow(a, h, out);
}

void *ml_get_sized(ml_arena *a, ml_handle h, size_t min_size)
{
    /* The size first, so that a refusal changes nothing: a cold handle is
     * not brought back, the access is not counted. (For a handle that is
     * not live this reads some slot's size; ml_get then says NULL.) */
    if (!a || ml__idx(h) >= a->max_handles || ml__load(&a->slots[ml__idx(h)].size) < min_size) return NULL;
    void *p = ml_get(a, h);
    if (!p) return NULL;
    /* Checked again now that the handle is known live: only ml_realloc
     * changes a live handle's size, and one racing this call (or a racing
     * free) is the caller's business, as with any pointer from ml_get.
     * (An atomic load: a move stores the size, unchanged, as it goes.) */
    return ml__load(&a->slots[ml__idx(h)].size) >= min_size ? p : NULL;
}

static int pin_common(ml_arena *a, ml_handle h, void **out, bool read_only)
{
    if (out) *out = NULL;
    if (!a) return -EINVAL;
    ml_slot *s;
    uint64_t m;
    int rc = lookup_access(a, h, &s, &m);
    if (rc) return rc;
    unsigned spins = 0;
    for (;;) {
        if ((rc = ml__check(a, h, m)) != 0) return rc;
        if (m & ML_M_LOCKED) {
            ml__pause(&spins);
            m = ml__load_acq(&s->meta);
            continue;
        }
        if (!(m & ML_M_RESIDENT)) { /* cold: bring it back, then pin */
            if ((rc = make_resident(a, h, read_only, NULL)) != 0) return rc;
            m = ml__load_acq(&s->meta);
            continue;
        }
        if (((m & ML_M_PINS) >> ML_M_PIN_SHIFT) == ML_PIN_MAX) return -EOVERFLOW;
        uint64_t want = read_only ? (m + ML_M_PIN_ONE) | ML_M_REFERENCED
                                  : ((m + ML_M_PIN_ONE) | ML_M_ACCESSED) & ~(ML_M_CLEAN | ML_M_NOCOMP);
        if (__atomic_compare_exchange_n(&s->meta, &m, want, true, __ATOMIC_ACQUIRE, __ATOMIC_ACQUIRE))
            break;
    }
    if (out) *out = (void *)(uintptr_t)__atomic_load_n(&s->addr, __ATOMIC_RELAXED);
    ML_DEBUG_EXPOSE(a, ml__idx(h)); /* (moves once unpinned) */
    return 0;
}

int ml_pin(ml_arena *a, ml_handle h, void **out) { return pin_common(a, h, out, false); }

int ml_pin_ro(ml_arena *a, ml_handle h, const void **out)
{
    void *p;
    int rc = pin_common(a, h, &p, true);
    if (out) *out = rc == 0 ? p : NULL;
    return rc;
}

int ml_unpin(ml_arena *a, ml_handle h)
{
    if (!a) return -EINVAL;
    ml_slot *s;
    uint64_t m;
    int rc = ml__lookup(a, h, &s, &m);
    if (rc) return rc;
    for (;;) {
        if ((rc = ml__check(a, h, m)) != 0) return rc;
        if (!(m & ML_M_PINS)) return -EINVAL;
        if (__atomic_compare_exchange_n(&s->meta, &m, m - ML_M_PIN_ONE, true, __ATOMIC_RELEASE,
                                        __ATOMIC_ACQUIRE))
            return 0;
    }
}

int ml_read(ml_arena *a, ml_handle h, size_t offset, void *buf, size_t len)
{
    if (!a || (!buf && len) || len > INT_MAX) return -EINVAL;
    uint64_t m;
    int rc = ml__claim(a, h, ML_CLAIM_ANY, &m);
    if (rc) return rc;
    uint32_t idx = ml__idx(h);
    size_t size = a->slots[idx].size;
    size_t n = offset >= size ? 0 : (size - offset < len ? size - offset : len);
    if (n && !(m & ML_M_RESIDENT)) {
        /* Cold: decompress a copy, leave the entry where it is. */
        rc = ml__pager ? ml__pager->read_cold(a, idx, offset, buf, n) : -EIO;
        ml__unclaim(a, idx);
        return rc;
    }
    if (n) {
        const char *p = (const char *)(uintptr_t)__atomic_load_n(&a->slots[idx].addr, __ATOMIC_RELAXED);
        memcpy(buf, p + offset, n);
    }
    ml__unclaim(a, idx);
    return (int)n;
}

int ml_write(ml_arena *a, ml_handle h, size_t offset, const void *buf, size_t len)
{
    if (!a || (!buf && len)) return -EINVAL;
    uint64_t m;
    if (__builtin_expect(a->debug != 0, 0)) { /* (its errors come from the claim below) */
        ml_slot *s;
        (void)lookup_access(a, h, &s, &m);
    }
    ml_move back;
    int rc = ml__claim_resident(a, h, false, offset, len, &m, &back);
    if (rc) return rc;
    uint32_t idx = ml__idx(h);
    char *p = (char *)(uintptr_t)__atomic_load_n(&a->slots[idx].addr, __ATOMIC_RELAXED);
    if (len) memcpy(p + offset, buf, len);
    mark_access(&a->slots[idx], ml__load(&a->slots[idx].meta), false); /* also ends a clean copy */
    ml__unclaim(a, idx);
    ml__fire_move(a, &back);
    return 0;
}

/* ---- test hooks ------------------------------------------------------------------- */

void ml__test_lane_range(ml_arena *a, ml_lane lane, char **start, size_t *size)
{
    pthread_mutex_lock(&a->lanes[lane].lock);
    *start = a->lanes[lane].region.start;
    *size = a->lanes[lane].region.size;
    pthread_mutex_unlock(&a->lanes[lane].lock);
}
