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
    a->cfg = cfg;

    int rc = -ENOMEM;
    a->slots = ml__meta_map(cfg.max_handles * sizeof(ml_slot));
    a->cold = ml__meta_map(cfg.max_handles * sizeof(ml_cold));
    a->tags = ml__meta_map((size_t)ML_MAX_TAGS * ML_TAG_MAX);
    if (!a->slots || !a->cold || !a->tags) goto fail;

    unsigned fast_classes = ml__size_class(cfg.threshold) + 1;
    unsigned slow_classes = ml__size_class(8192) + 1;
    rc = ml__lane_init(&a->lanes[ML_LANE_FAST], ML_LANE_FAST, prim, cfg.fast_lane_size,
                       cfg.fast_lane_max_size, fshift, fast_classes, cfg.lock_lanes);
    if (rc) goto fail;
    rc = ml__lane_init(&a->lanes[ML_LANE_SLOW], ML_LANE_SLOW, prim, cfg.slow_lane_size,
                       cfg.slow_lane_max_size, ML_PAGE_SHIFT, slow_classes, cfg.lock_lanes);
    if (rc) goto fail;

    pthread_mutex_init(&a->table_lock, NULL);
    pthread_mutex_init(&a->tc_list_lock, NULL);
    pthread_mutex_init(&a->meta_lock, NULL);
    a->free_head = ML_NIL32;
    for (unsigned i = 0; i < ML_MAX_GROUPS; i++) a->groups[i].head = ML_NIL32;
    a->epoch_ns = ml__coarse_ns();
    ml__registry_add(a);
    *out = a;
    return 0;

fail:
    ml__lane_fini(&a->lanes[ML_LANE_SLOW]);
    ml__lane_fini(&a->lanes[ML_LANE_FAST]);
    ml__meta_unmap(a->tags, (size_t)ML_MAX_TAGS * ML_TAG_MAX);
    ml__meta_unmap(a->cold, cfg.max_handles * sizeof(ml_cold));
    ml__meta_unmap(a->slots, cfg.max_handles * sizeof(ml_slot));
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
    ml__registry_remove(a);
    ml__tc_destroy_all(a);
    ml__lane_fini(&a->lanes[ML_LANE_SLOW]);
    ml__lane_fini(&a->lanes[ML_LANE_FAST]);
    ml__meta_unmap(a->tags, (size_t)ML_MAX_TAGS * ML_TAG_MAX);
    ml__meta_unmap(a->cold, a->cfg.max_handles * sizeof(ml_cold));
    ml__meta_unmap(a->slots, a->cfg.max_handles * sizeof(ml_slot));
    pthread_mutex_destroy(&a->table_lock);
    pthread_mutex_destroy(&a->tc_list_lock);
    pthread_mutex_destroy(&a->meta_lock);
    free(a);
}

int ml_arena_config(const ml_arena *a, ml_config *out)
{
    if (!a || !out) return -EINVAL;
    *out = a->cfg;
    return 0;
}

/* ---- allocation ------------------------------------------------------------ */

/* Write the stub of a freshly allocated slot and make it visible. With
 * `locked`, the slot is published claimed (the caller finishes setting it up
 * and then drops the claim). Returns the handle. */
static ml_handle publish(ml_arena *a, uint32_t idx, ml_lane lane, ml_lane born, uint32_t span,
                         uint32_t index, unsigned cls, size_t size, size_t align, bool locked)
{
    ml_slot *s = &a->slots[idx];
    ml_cold *c = &a->cold[idx];
    ml_lane_t *l = &a->lanes[lane];
    char *addr = index == ML_INDEX_BLOB ? ml__lane_base(l) + ((size_t)span << l->unit_shift)
                                        : ml__block_addr(l, span, index);
    c->size = size;
    c->span = span;
    c->index = index;
    c->lane = (uint8_t)lane;
    c->cls = (uint8_t)cls;
    c->align_log2 = (uint8_t)__builtin_ctzll(align);
    c->tag = 0;
    c->group = 0;
    c->gprev = c->gnext = ML_NIL32;
    c->migrations = 0;
    c->created_ns = ml__now(a);
    c->last_access_ns = c->created_ns;
    c->accesses = 0;
    __atomic_store_n(&s->addr, (uint64_t)(uintptr_t)addr, __ATOMIC_RELAXED);
    uint64_t hi = ml__hi(__atomic_load_n(&s->meta, __ATOMIC_RELAXED));
    hi = (hi & ~ML_HI_BORN_SLOW) | (born == ML_LANE_SLOW ? ML_HI_BORN_SLOW : 0);
    uint64_t st = lane == ML_LANE_FAST ? ML_STATE_FAST : ML_STATE_SLOW;
    uint64_t m = (hi << 32) | st | ML_M_RESIDENT | ML_M_ACCESSED | (locked ? ML_M_LOCKED : 0);
    ml__store_rel(&s->meta, m);
    return (ml_handle){(hi << 32) | idx};
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

static void tc_put_slot(ml_arena *a, ml_tcache *tc, uint32_t idx)
{
    if (!tc) {
        ml__table_put(a, &idx, 1);
        return;
    }
    ml__tc_lock(tc);
    tc_push_slot(a, tc, idx);
    ml__tc_unlock(tc);
}

/* FastLane refill: caller holds tc->lock. */
static bool tc_refill_blocks(ml_arena *a, ml_tcache *tc, unsigned cls)
{
    ml_lane_t *l = &a->lanes[ML_LANE_FAST];
    pthread_mutex_lock(&l->lock);
    unsigned got = ml__lane_blocks_take(l, cls, tc->cls[cls].b, ML_TC_BLOCKS / 2);
    if (got == 0 && ml__lane_grow(l, (size_t)l->span_units[cls] << l->unit_shift) == 0)
        got = ml__lane_blocks_take(l, cls, tc->cls[cls].b, ML_TC_BLOCKS / 2);
    pthread_mutex_unlock(&l->lock);
    tc->cls[cls].n = got;
    return got != 0;
}

/* Place `size` bytes in SlowLane (or, with lane == FAST, in FastLane without
 * the thread cache). Caller holds nothing. Fills span/index/cls. */
static int lane_place(ml_arena *a, ml_lane lane, size_t size, size_t align, uint32_t owner,
                      uint32_t *span, uint32_t *index, unsigned *cls)
{
    ml_lane_t *l = &a->lanes[lane];
    unsigned c = ml__size_class_aligned(size, align, l->nclasses);
    int rc = -ENOMEM;
    pthread_mutex_lock(&l->lock);
    for (int attempt = 0; attempt < 2; attempt++) {
        if (c != ML_CLASS_NONE) {
            uint64_t b;
            if (ml__lane_blocks_take(l, c, &b, 1) == 1) {
                *span = (uint32_t)(b >> 32);
                *index = (uint32_t)b;
                ml__owner_store(&l->spans[*span].owner[*index], owner);
                rc = 0;
                break;
            }
        } else if (lane == ML_LANE_SLOW) {
            uint32_t s = ml__lane_blob_alloc(l, size, owner);
            if (s != ML_EXT_NIL) {
                *span = s;
                *index = ML_INDEX_BLOB;
                rc = 0;
                break;
            }
        } else {
            break; /* FastLane has no blobs */
        }
        size_t need = c != ML_CLASS_NONE ? (size_t)l->span_units[c] << l->unit_shift : size;
        if (attempt == 0 && ml__lane_grow(l, need) != 0) break;
    }
    if (rc) l->alloc_failures++;
    pthread_mutex_unlock(&l->lock);
    *cls = c;
    return rc;
}

static void count_alloc(ml_arena *a, ml_tcache *tc, ml_lane lane, size_t used, size_t size)
{
    if (!tc) return;
    ml__tc_lock(tc);
    tc->allocs[lane]++;
    tc->used[lane] += (int64_t)used;
    tc->requested[lane] += (int64_t)size;
    ml__tc_unlock(tc);
    (void)a;
}

static size_t placed_bytes(const ml_arena *a, ml_lane lane, unsigned cls, uint32_t span,
                           uint32_t index)
{
    const ml_lane_t *l = &a->lanes[lane];
    if (index != ML_INDEX_BLOB) return ml__class_size[cls];
    return (size_t)ml__ext_len(&l->ext, span) << l->unit_shift;
}

/* The general path: SlowLane, or FastLane when its cache path failed. */
static int alloc_slow(ml_arena *a, ml_tcache *tc, size_t size, size_t align, ml_group group,
                      ml_handle *out)
{
    uint32_t idx;
    bool have_slot;
    if (tc) {
        ml__tc_lock(tc);
        have_slot = tc_pop_slot(a, tc, &idx);
        ml__tc_unlock(tc);
    } else {
        have_slot = ml__table_take(a, &idx, 1) == 1;
    }
    if (!have_slot) {
        __atomic_fetch_add(&a->enomem, 1, __ATOMIC_RELAXED);
        return -ENOMEM;
    }
    ml_lane born = size <= a->cfg.threshold ? ML_LANE_FAST : ML_LANE_SLOW;
    ml_lane lane = born;
    uint32_t span, index;
    unsigned cls;
    int rc = -ENOMEM;
    if (born == ML_LANE_FAST)
        rc = lane_place(a, ML_LANE_FAST, size, align, idx + 1, &span, &index, &cls);
    if (rc && (born == ML_LANE_SLOW || a->cfg.failover_to_slow)) {
        lane = ML_LANE_SLOW;
        rc = lane_place(a, ML_LANE_SLOW, size, align, idx + 1, &span, &index, &cls);
        if (rc == 0 && born == ML_LANE_FAST) {
            born = ML_LANE_SLOW; /* failover: born where it landed */
            pthread_mutex_lock(&a->lanes[ML_LANE_SLOW].lock);
            a->lanes[ML_LANE_SLOW].failovers++;
            pthread_mutex_unlock(&a->lanes[ML_LANE_SLOW].lock);
        }
    }
    if (rc) {
        tc_put_slot(a, tc, idx);
        __atomic_fetch_add(&a->enomem, 1, __ATOMIC_RELAXED);
        return rc;
    }
    if (index == ML_INDEX_BLOB) ml__ext_set_owner(&a->lanes[lane].ext, span, idx + 1);
    bool grouped = group != ML_GROUP_NONE;
    ml_handle h = publish(a, idx, lane, born, span, index, cls, size, align, grouped);
    count_alloc(a, tc, lane, placed_bytes(a, lane, cls, span, index), size);
    if (grouped) {
        rc = ml__group_link(a, idx, group);
        if (rc) {
            ml__free_claimed(a, idx);
            return rc;
        }
        ml__unclaim(a, idx);
    }
    *out = h;
    return 0;
}

int ml__alloc(ml_arena *a, size_t size, size_t align, ml_group group, ml_handle *out)
{
    if (!a || !out || size == 0) return -EINVAL;
    if (align == 0) align = 16;
    if ((align & (align - 1)) || align > ML_PAGE_SIZE) return -EINVAL;
    if (size > a->cfg.slow_lane_max_size) return -EINVAL;
    if (align < 16) align = 16;
    ml_tcache *tc = ml__tc_get(a);
    if (__builtin_expect(size <= a->cfg.threshold && group == ML_GROUP_NONE && tc != NULL, 1)) {
        unsigned cls = align <= 16 ? ml__size_class(size)
                                   : ml__size_class_aligned(size, align, a->lanes[0].nclasses);
        if (cls < a->lanes[ML_LANE_FAST].nclasses) {
            ml__tc_lock(tc);
            uint32_t idx;
            if (tc_pop_slot(a, tc, &idx)) {
                if (tc->cls[cls].n || tc_refill_blocks(a, tc, cls)) {
                    uint64_t b = tc->cls[cls].b[--tc->cls[cls].n];
                    uint32_t span = (uint32_t)(b >> 32), bi = (uint32_t)b;
                    ml_lane_t *l = &a->lanes[ML_LANE_FAST];
                    ml__owner_store(&l->spans[span].owner[bi], idx + 1);
                    *out = publish(a, idx, ML_LANE_FAST, ML_LANE_FAST, span, bi, cls, size, align,
                                   false);
                    tc->allocs[ML_LANE_FAST]++;
                    tc->used[ML_LANE_FAST] += ml__class_size[cls];
                    tc->requested[ML_LANE_FAST] += (int64_t)size;
                    ml__tc_unlock(tc);
                    return 0;
                }
                tc_push_slot(a, tc, idx);
            }
            ml__tc_unlock(tc);
        }
    }
    return alloc_slow(a, tc, size, align, group, out);
}

int ml_alloc(ml_arena *a, size_t size, ml_handle *out) { return ml__alloc(a, size, 16, 0, out); }

int ml_alloc_aligned(ml_arena *a, size_t size, size_t align, ml_handle *out)
{
    if (align == 0) return -EINVAL;
    return ml__alloc(a, size, align, 0, out);
}

/* ---- free ------------------------------------------------------------------- */

void ml__free_claimed(ml_arena *a, uint32_t idx)
{
    ml_slot *s = &a->slots[idx];
    ml_cold *c = &a->cold[idx];
    if (c->group) ml__group_unlink(a, idx);
    ml_lane lane = (ml_lane)c->lane;
    uint32_t span = c->span, index = c->index;
    unsigned cls = c->cls;
    size_t size = c->size;
    ml_lane_t *l = &a->lanes[lane];
    size_t used = placed_bytes(a, lane, cls, span, index);

    /* The handle dies here: bump the generation (or retire the slot). */
    uint64_t m = ml__load(&s->meta);
    uint32_t gen = ML_HI_GEN(ml__hi(m));
    bool retire = gen >= ML_GEN_MAX;
    uint64_t hi = (retire ? ML_GEN_RETIRED : gen + 1) | (a->tag << 24);
    ml__store_rel(&s->meta, hi << 32);

    ml_tcache *tc = ml__tc_get(a);
    if (index != ML_INDEX_BLOB && lane == ML_LANE_FAST && tc) {
        ml__tc_lock(tc);
        ml__owner_store(&l->spans[span].owner[index], 0);
        if (tc->cls[cls].n == ML_TC_BLOCKS) {
            pthread_mutex_lock(&l->lock);
            for (unsigned i = ML_TC_BLOCKS / 2; i < ML_TC_BLOCKS; i++) {
                uint64_t b = tc->cls[cls].b[i];
                ml__lane_block_put(l, (uint32_t)(b >> 32), (uint32_t)b);
            }
            pthread_mutex_unlock(&l->lock);
            tc->cls[cls].n = ML_TC_BLOCKS / 2;
        }
        tc->cls[cls].b[tc->cls[cls].n++] = ((uint64_t)span << 32) | index;
    } else {
        pthread_mutex_lock(&l->lock);
        if (index == ML_INDEX_BLOB) ml__lane_blob_free(l, span);
        else ml__lane_block_put(l, span, index);
        pthread_mutex_unlock(&l->lock);
        if (tc) ml__tc_lock(tc);
    }
    if (tc) {
        tc->frees[lane]++;
        tc->used[lane] -= (int64_t)used;
        tc->requested[lane] -= (int64_t)size;
        if (!retire) tc_push_slot(a, tc, idx);
        ml__tc_unlock(tc);
    } else {
        pthread_mutex_lock(&a->tc_list_lock);
        a->gone_frees[lane]++;
        a->gone_used[lane] -= (int64_t)used;
        a->gone_requested[lane] -= (int64_t)size;
        pthread_mutex_unlock(&a->tc_list_lock);
        if (!retire) ml__table_put(a, &idx, 1);
    }
    if (retire) {
        pthread_mutex_lock(&a->table_lock);
        a->retired++;
        pthread_mutex_unlock(&a->table_lock);
    }
}

int ml_free(ml_arena *a, ml_handle h)
{
    if (!a) return -EINVAL;
    uint64_t m;
    int rc = ml__claim(a, h, ML_CLAIM_UNPINNED, &m);
    if (rc) return rc;
    ml__free_claimed(a, ml__idx(h));
    return 0;
}

/* ---- access ------------------------------------------------------------------ */

static int get_slow(ml_arena *a, ml_handle h, void **out)
{
    ml_slot *s;
    uint64_t m;
    int rc = ml__lookup(a, h, &s, &m);
    if (rc) return rc;
    if (!(m & ML_M_ACCESSED)) __atomic_fetch_or(&s->meta, ML_M_ACCESSED, __ATOMIC_RELAXED);
    *out = (void *)(uintptr_t)__atomic_load_n(&s->addr, __ATOMIC_RELAXED);
    return 0;
}

static inline void *get_fast(ml_arena *a, ml_handle h)
{
    uint32_t idx = (uint32_t)h.bits;
    if (__builtin_expect(idx < __atomic_load_n(&a->slot_count, __ATOMIC_RELAXED), 1)) {
        ml_slot *s = &a->slots[idx];
        uint64_t m = __atomic_load_n(&s->meta, __ATOMIC_ACQUIRE);
        const uint64_t want = ML_M_RESIDENT | ML_M_ACCESSED;
        if (__builtin_expect((((m ^ h.bits) >> 32) | ((m & want) ^ want)) == 0, 1))
            return (void *)(uintptr_t)__atomic_load_n(&s->addr, __ATOMIC_RELAXED);
    }
    return NULL;
}

void *ml_get(ml_arena *a, ml_handle h)
{
    if (!a) return NULL;
    void *p = get_fast(a, h);
    if (__builtin_expect(p != NULL, 1)) return p;
    return get_slow(a, h, &p) == 0 ? p : NULL;
}

int ml_try_get(ml_arena *a, ml_handle h, void **out)
{
    if (!out) return -EINVAL;
    *out = NULL;
    if (!a) return -EINVAL;
    void *p = get_fast(a, h);
    if (p) {
        *out = p;
        return 0;
    }
    return get_slow(a, h, out);
}

void *ml_get_sized(ml_arena *a, ml_handle h, size_t min_size)
{
    void *p = ml_get(a, h);
    if (!p) return NULL;
    /* size never changes for a live handle; a racing free makes the whole
     * call a use-after-free the caller owns, as with ml_get. */
    size_t size = __atomic_load_n(&a->cold[ml__idx(h)].size, __ATOMIC_RELAXED);
    return size >= min_size ? p : NULL;
}

int ml_pin(ml_arena *a, ml_handle h, void **out)
{
    if (out) *out = NULL;
    if (!a) return -EINVAL;
    ml_slot *s;
    uint64_t m;
    int rc = ml__lookup(a, h, &s, &m);
    if (rc) return rc;
    unsigned spins = 0;
    for (;;) {
        if ((rc = ml__check(a, h, m)) != 0) return rc;
        if (m & ML_M_LOCKED) {
            ml__pause(&spins);
            m = ml__load_acq(&s->meta);
            continue;
        }
        if (((m & ML_M_PINS) >> ML_M_PIN_SHIFT) == ML_PIN_MAX) return -EOVERFLOW;
        if (__atomic_compare_exchange_n(&s->meta, &m, (m + ML_M_PIN_ONE) | ML_M_ACCESSED, true,
                                        __ATOMIC_ACQUIRE, __ATOMIC_ACQUIRE))
            break;
    }
    if (out) *out = (void *)(uintptr_t)__atomic_load_n(&s->addr, __ATOMIC_RELAXED);
    return 0;
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
    size_t size = a->cold[idx].size;
    size_t n = offset >= size ? 0 : (size - offset < len ? size - offset : len);
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
    int rc = ml__claim(a, h, ML_CLAIM_ANY, &m);
    if (rc) return rc;
    uint32_t idx = ml__idx(h);
    size_t size = a->cold[idx].size;
    if (offset > size || len > size - offset) {
        ml__unclaim(a, idx);
        return -EINVAL;
    }
    char *p = (char *)(uintptr_t)__atomic_load_n(&a->slots[idx].addr, __ATOMIC_RELAXED);
    if (len) memcpy(p + offset, buf, len);
    __atomic_fetch_and(&a->slots[idx].meta, ~ML_M_LOCKED, __ATOMIC_RELEASE);
    if (!(m & ML_M_ACCESSED)) __atomic_fetch_or(&a->slots[idx].meta, ML_M_ACCESSED, __ATOMIC_RELAXED);
    return 0;
}

/* ---- maintenance ---------------------------------------------------------------- */

/* Turn access bits into times and counts (CLOCK): one pass over the table;
 * a slot that is claimed by someone else right now keeps its bit for the
 * next cycle. */
static void fold_access_bits(ml_arena *a)
{
    uint32_t n = __atomic_load_n(&a->slot_count, __ATOMIC_ACQUIRE);
    uint64_t now = ml__now(a);
    for (uint32_t i = 0; i < n; i++) {
        uint64_t m = ml__load(&a->slots[i].meta);
        if (!ml__meta_live(m) || !(m & ML_M_ACCESSED) || (m & ML_M_LOCKED)) continue;
        if (!__atomic_compare_exchange_n(&a->slots[i].meta, &m, (m | ML_M_LOCKED) & ~ML_M_ACCESSED,
                                         false, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
            continue;
        a->cold[i].last_access_ns = now;
        a->cold[i].accesses++;
        ml__unclaim(a, i);
    }
}

int ml_maintain(ml_arena *a)
{
    if (!a) return -EINVAL;
    fold_access_bits(a);
    __atomic_fetch_add(&a->maintenance_cycles, 1, __ATOMIC_RELAXED);
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
