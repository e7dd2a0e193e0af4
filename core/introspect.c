/*
 * introspect.c — snapshots of handles and lanes, for programs and for the
 * debug view.
 *
 * Every snapshot of a handle is taken under that handle's claim, so it is
 * consistent (size, location, tracking fields all from the same instant)
 * and never races a move or a free; names (tag, group) are resolved after
 * the claim is dropped. Walks hold no lock while the caller's function
 * runs, so the callback may use the arena freely.
 *
 * Lane usage combines what the lane knows (blocks handed out, extents) with
 * what the thread caches know (which of those blocks are live): each cache
 * is read under its own lock.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/pager_iface.h"

/* Caller holds the claim of idx; m is its current meta word. */
static void fill_info(ml_arena *a, uint32_t idx, uint64_t m, ml_handle_info *out, uint32_t *tag)
{
    const ml_slot *s = &a->slots[idx];
    ml_cold c;
    ml__cold_peek(a, idx, m, &c);
    ml_loc loc = {ML_LANE_SLOW, true, 0, 0, ML_CLASS_NONE, 0};
    bool evicted = (m & ML_M_STATE) == ML_STATE_EVICTED;
    if (!evicted) ml__locate(a, idx, m, &loc);
    memset(out, 0, sizeof *out);
    out->handle = ml__handle_of(m, idx);
    out->id = ml_handle_id(out->handle);
    out->state = (ml_state)(m & ML_M_STATE);
    out->lane = loc.lane;
    out->born_lane = (ml__hi(m) & ML_HI_BORN_SLOW) ? ML_LANE_SLOW : ML_LANE_FAST;
    out->generation = ML_HI_GEN(ml__hi(m));
    out->size = s->size;
    out->alloc_size = loc.bytes;
    out->align = (size_t)1 << ((m & ML_M_ALIGN) >> ML_M_ALIGN_SHIFT);
    if (evicted) {
        uint64_t sl = ml__cold_loc(a, idx);
        out->offset = (size_t)(ml__swap_off(sl) * ML_PAGE_SIZE);
        out->stored_size = (size_t)(ml__swap_len(sl) * ML_PAGE_SIZE);
    } else {
        out->offset = (size_t)(ml__lane_addr(a, idx, m) - (uint64_t)(uintptr_t)ml__lane_base(&a->lanes[loc.lane]));
        if (!(m & ML_M_RESIDENT)) out->stored_size = loc.bytes; /* compressed record */
    }
    out->pins = (uint32_t)((m & ML_M_PINS) >> ML_M_PIN_SHIFT);
    out->group = (m & ML_M_GROUPED) ? c.group : ML_GROUP_NONE;
    out->created_ns = s->created_ns;
    out->last_access_ns = c.last_access_ns;
    out->accesses = c.accesses;
    out->migrations = c.migrations;
    out->last_migration_ns = c.last_migration_ns;
    out->last_from = (ml_lane)c.last_from;
    out->last_to = (ml_lane)c.last_to;
    out->blob = !(m & ML_M_RESIDENT) || (m & ML_M_BLOB);
    *tag = c.tag;
}

static void fill_names(ml_arena *a, uint32_t tag, ml_handle_info *out)
{
    if (tag) ml__tag_name(a, tag, out->tag, sizeof out->tag);
    if (out->group) ml_group_name(a, out->group, out->group_name, sizeof out->group_name);
}

int ml_size(ml_arena *a, ml_handle h, size_t *out)
{
    if (!a || !out) return -EINVAL;
    for (;;) {
        ml_slot *s;
        uint64_t m;
        int rc = ml__lookup(a, h, &s, &m);
        if (rc) return rc;
        /* Acquire: the check below reads meta after the size. Still the
         * same live handle then (a free in between would have made the size
         * some other allocation's): it was its size. */
        size_t size = __atomic_load_n(&s->size, __ATOMIC_ACQUIRE);
        if (ml__same(h, ml__load(&s->meta))) {
            *out = size;
            return 0;
        }
    }
}

int ml_handle_info_get(ml_arena *a, ml_handle h, ml_handle_info *out)
{
    if (!a || !out) return -EINVAL;
    uint64_t m;
    int rc = ml__claim(a, h, ML_CLAIM_ANY, &m);
    if (rc) return rc;
    uint32_t idx = ml__idx(h);
    uint32_t tag;
    /* Pins may change while claimed: report the current count. */
    fill_info(a, idx, ml__load(&a->slots[idx].meta), out, &tag);
    /* The names too while claimed (claim, then meta lock, as a free takes
     * them): a tag's ID is reused once its last handle lets it go, and the
     * claim keeps this handle's tag (and group) from going meanwhile. */
    fill_names(a, tag, out);
    ml__unclaim(a, idx);
    return 0;
}

int ml_handle_from_id(ml_arena *a, int64_t id, ml_handle *out)
{
    if (!a || !out) return -EINVAL;
    if (id == 0 || id == INT64_MIN) return -ENOENT;
    uint64_t mag = (uint64_t)(id < 0 ? -id : id);
    if (mag > __atomic_load_n(&a->slot_count, __ATOMIC_ACQUIRE)) return -ENOENT;
    uint32_t idx = (uint32_t)(mag - 1);
    uint64_t m = ml__load_acq(&a->slots[idx].meta);
    if (!ml__meta_live(m)) return -ENOENT;
    bool born_slow = (ml__hi(m) & ML_HI_BORN_SLOW) != 0;
    if (born_slow != (id < 0)) return -ENOENT;
    *out = ml__handle_of(m, idx);
    return 0;
}

int ml_foreach(ml_arena *a, ml_foreach_fn fn, void *ctx)
{
    if (!a || !fn) return -EINVAL;
    uint32_t n = __atomic_load_n(&a->slot_count, __ATOMIC_ACQUIRE);
    ml_handle_info info;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t m = ml__load_acq(&a->slots[i].meta);
        if (!ml__meta_live(m)) continue;
        ml_handle h = ml__handle_of(m, i);
        if (ml_handle_info_get(a, h, &info) != 0) continue; /* freed meanwhile */
        int rc = fn(&info, ctx);
        if (rc) return rc;
    }
    return 0;
}

int ml_foreach_handle(ml_arena *a, ml_foreach_handle_fn fn, void *ctx)
{
    if (!a || !fn) return -EINVAL;
    uint32_t n = __atomic_load_n(&a->slot_count, __ATOMIC_ACQUIRE);
    for (uint32_t i = 0; i < n; i++) {
        uint64_t m = ml__load_acq(&a->slots[i].meta);
        if (!ml__meta_live(m)) continue;
        int rc = fn(ml__handle_of(m, i), ctx);
        if (rc) return rc;
    }
    return 0;
}

void ml__lane_usage(ml_arena *a, ml_lane lane, uint64_t *used, uint64_t *requested,
                    int64_t *live, uint64_t *cached_blocks, uint64_t *allocs, uint64_t *frees)
{
    int64_t al, fr, us, rq;
    uint64_t cached = 0;
    pthread_mutex_lock(&a->tc_list_lock);
    al = a->gone_allocs[lane];
    fr = a->gone_frees[lane];
    us = a->gone_used[lane];
    rq = a->gone_requested[lane];
    for (ml_tcache *tc = a->tcaches; tc; tc = tc->next) {
        al += (int64_t)__atomic_load_n(&tc->allocs[lane], __ATOMIC_RELAXED);
        fr += (int64_t)__atomic_load_n(&tc->frees[lane], __ATOMIC_RELAXED);
        us += __atomic_load_n(&tc->used[lane], __ATOMIC_RELAXED);
        rq += __atomic_load_n(&tc->requested[lane], __ATOMIC_RELAXED);
        if (lane == ML_LANE_FAST) ml__tc_fast_counts(tc, &al, &fr, &us);
        if (lane == ML_LANE_FAST)
            for (unsigned c = 0; c < ML_NCLASSES; c++)
                cached += __atomic_load_n(&tc->cls[c].n, __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock(&a->tc_list_lock);
    /* Counters of different threads are read at slightly different times:
     * a snapshot taken while others run may be off by their operations in
     * flight, never below zero. */
    *allocs = al > 0 ? (uint64_t)al : 0;
    *frees = fr > 0 ? (uint64_t)fr : 0;
    *live = al - fr; /* per lane this may be negative: migrations balance it */
    *used = us > 0 ? (uint64_t)us : 0;
    *requested = rq > 0 ? (uint64_t)rq : 0;
    *cached_blocks = cached;
}

int ml_stats_get(ml_arena *a, ml_stats *out)
{
    if (!a || !out) return -EINVAL;
    memset(out, 0, sizeof *out);
    uint64_t meta = 0;
    int64_t lives[2];
    for (int lane = 0; lane < 2; lane++) {
        ml_lane_stats *s = &out->lane[lane];
        ml__lane_usage(a, (ml_lane)lane, &s->used, &s->requested, &lives[lane], &s->cached, &s->allocs,
                       &s->frees);
    }
    /* Both lanes' extents and migration counts at one instant (fast before
     * slow, the lock order): a migration counts its way out of one lane and
     * into the other under both locks, so an entry moving meanwhile is
     * counted live in exactly one of them. */
    pthread_mutex_lock(&a->lanes[ML_LANE_FAST].lock);
    pthread_mutex_lock(&a->lanes[ML_LANE_SLOW].lock);
    for (int lane = 0; lane < 2; lane++) {
        ml__lane_stats(&a->lanes[lane], &out->lane[lane]);
        meta += a->lanes[lane].meta_bytes;
    }
    pthread_mutex_unlock(&a->lanes[ML_LANE_SLOW].lock);
    pthread_mutex_unlock(&a->lanes[ML_LANE_FAST].lock);
    for (int lane = 0; lane < 2; lane++) {
        ml_lane_stats *s = &out->lane[lane];
        int64_t live = lives[lane];
        /* Entries migrated in count as live here, migrated out as gone. */
        live += (int64_t)s->migrated_in - (int64_t)s->migrated_out;
        s->live = live > 0 ? (uint64_t)live : 0;
        /* The counters lag the extents by the operations in flight (a
         * free gives the extent back before its thread's counter drops):
         * used is at most what the extents leave, so that largest_free
         * never exceeds free. */
        if (s->largest_free > s->capacity) s->largest_free = s->capacity; /* (cannot happen) */
        if (s->used > s->capacity - s->largest_free) s->used = s->capacity - s->largest_free;
        s->free = s->capacity - s->used;
        s->fragmentation_permille =
            s->free ? 1000 - (s->largest_free >= s->free ? 1000 : s->largest_free * 1000 / s->free)
                    : 0;
        out->handles_live += s->live;
    }
    pthread_mutex_lock(&a->table_lock);
    out->handles_capacity = a->next_fresh;
    out->handles_retired = a->retired;
    pthread_mutex_unlock(&a->table_lock);
    out->handles_max = a->cfg.max_handles;
    out->maintenance_cycles = __atomic_load_n(&a->maintenance_cycles, __ATOMIC_RELAXED);
    out->enomem = __atomic_load_n(&a->enomem, __ATOMIC_RELAXED);
    out->promotions = __atomic_load_n(&a->promotions, __ATOMIC_RELAXED);
    out->pressure_callbacks = __atomic_load_n(&a->pressure_calls, __ATOMIC_RELAXED);
    pthread_mutex_lock(&a->meta_lock);
    for (unsigned i = 0; i < ML_MAX_GROUPS; i++) out->groups += a->groups[i].live;
    out->tags = a->ntags - a->ntag_free; /* IDs issued and not given back */
    pthread_mutex_unlock(&a->meta_lock);
    size_t slots = out->handles_capacity;
    out->metadata_bytes = meta + slots * (sizeof(ml_slot) + sizeof(ml_cold));
    ml__debug_stats(a, &out->debug_moves, &out->debug_quarantine_bytes);
    return 0;
}

int ml_lane_map(ml_arena *a, ml_lane lane, ml_extent_fn fn, void *ctx)
{
    if (!a || !fn || (lane != ML_LANE_FAST && lane != ML_LANE_SLOW)) return -EINVAL;
    ml_lane_t *l = &a->lanes[lane];
    ml_extent_info *v = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    pthread_mutex_lock(&l->lock);
    size_t unit = ml__lane_unit(l);
    for (uint32_t s = 0; s < l->ext.cap; s += ml__ext_len(&l->ext, s)) {
        if (n == cap) {
            cap = cap ? cap * 2 : 256;
            ml_extent_info *nv = realloc(v, cap * sizeof *nv);
            if (!nv) {
                rc = -ENOMEM;
                break;
            }
            v = nv;
        }
        ml_extent_info *e = &v[n++];
        memset(e, 0, sizeof *e);
        e->offset = (size_t)s * unit;
        e->length = (size_t)ml__ext_len(&l->ext, s) * unit;
        unsigned kind = ml__ext_kind(&l->ext, s);
        e->kind = kind == ML_EXT_FREE ? ML_EXTENT_FREE : kind == ML_EXT_BLOB ? ML_EXTENT_BLOB : ML_EXTENT_SPAN;
        if (kind == ML_EXT_BLOB) {
            uint32_t owner = ml__ext_owner(&l->ext, s);
            uint64_t m = owner ? ml__load_acq(&a->slots[owner - 1].meta) : 0;
            /* Not live: a blob being placed, or the old place of an entry
             * freed after eviction that its batch has yet to release. */
            if (ml__meta_live(m)) e->id = ml_handle_id(ml__handle_of(m, owner - 1));
        } else if (kind == ML_EXT_SPAN) {
            e->block_size = ml__class_size[l->spans[s].cls];
            e->blocks = l->spans[s].nblocks;
            e->used = l->spans[s].used;
        }
    }
    pthread_mutex_unlock(&l->lock);
    for (size_t i = 0; rc == 0 && i < n; i++) rc = fn(&v[i], ctx);
    free(v);
    return rc;
}

/* ---- invariants (tests) ---------------------------------------------------------- */

/* Each tag's count is the number of live handles tagged with it, and the
 * hash finds exactly the tags in use. */
static int check_tags(ml_arena *a, uint32_t nslots)
{
    uint32_t *refs = calloc(ML_MAX_TAGS, sizeof *refs);
    if (!refs) return 0;
    int rc = 0;
    pthread_mutex_lock(&a->meta_lock);
    for (uint32_t i = 0; i < nslots && !rc; i++) {
        uint64_t m = ml__load_acq(&a->slots[i].meta);
        if (!ml__meta_live(m) || !(m & ML_M_TAGGED)) continue;
        uint32_t id = a->cold[i].tag;
        if (id == 0 || id > a->ntags) rc = -9;
        else refs[id - 1]++;
    }
    uint32_t live = 0, hashed = 0;
    for (uint32_t id = 1; id <= a->ntags && !rc; id++) {
        if (refs[id - 1] != a->tag_refs[id - 1]) rc = -10;
        live += refs[id - 1] != 0;
    }
    for (uint32_t h = 0; h < ML_TAG_HASH && !rc; h++) {
        uint16_t id = a->tag_hash[h];
        if (!id) continue;
        hashed++;
        if (a->tag_refs[id - 1] == 0) rc = -11;
        /* and the lookup of its name finds it */
        uint32_t j = 0;
        for (uint32_t k = 0; k < ML_TAG_HASH; k++) {
            j = (ml__tag_home(a->tags[id - 1]) + k) & (ML_TAG_HASH - 1);
            if (a->tag_hash[j] == id || a->tag_hash[j] == 0) break;
        }
        if (a->tag_hash[j] != id) rc = -12;
    }
    if (!rc && (hashed != live || live + a->ntag_free != a->ntags)) rc = -13;
    pthread_mutex_unlock(&a->meta_lock);
    free(refs);
    return rc;
}


/* For tests, with no other thread using the arena: extents tile each lane;
 * every live slot's block or blob is where its address says, is owned by it,
 * is aligned as asked and large enough; every span's used count equals its
 * live blocks plus blocks in thread caches; and check_tags. */
int ml__arena_check(ml_arena *a)
{
    int rc = 0;
    pthread_mutex_lock(&a->tc_list_lock);
    for (int lane = 0; lane < 2; lane++) pthread_mutex_lock(&a->lanes[lane].lock);

    for (int lane = 0; lane < 2 && !rc; lane++)
        if (ml__ext_check(&a->lanes[lane].ext)) rc = -100 - lane;
    uint32_t n = __atomic_load_n(&a->slot_count, __ATOMIC_ACQUIRE);
    uint64_t live_blocks[2] = {0, 0};
    for (uint32_t i = 0; i < n && !rc; i++) {
        uint64_t m = ml__load_acq(&a->slots[i].meta);
        if (!ml__meta_live(m) || (m & ML_M_STATE) == ML_STATE_EVICTED) continue;
        const ml_slot *s = &a->slots[i];
        ml_loc loc;
        ml__locate(a, i, m, &loc);
        ml_lane_t *l = &a->lanes[loc.lane];
        char *expect;
        if (loc.blob) {
            if (ml__ext_kind(&l->ext, loc.span) != ML_EXT_BLOB || ml__ext_owner(&l->ext, loc.span) != i + 1) {
                rc = -2;
                break;
            }
            expect = ml__lane_base(l) + ((size_t)loc.span << l->unit_shift);
        } else {
            if (ml__ext_kind(&l->ext, loc.span) != ML_EXT_SPAN || loc.index >= l->spans[loc.span].nblocks ||
                ml__owner_load(&l->spans[loc.span].owner[loc.index]) != i + 1) {
                rc = -3;
                break;
            }
            live_blocks[loc.lane]++;
            expect = ml__block_addr(l, loc.span, loc.index);
        }
        if ((uint64_t)(uintptr_t)expect != ml__lane_addr(a, i, m)) rc = -4;
        if ((uintptr_t)expect & (((uintptr_t)1 << ((m & ML_M_ALIGN) >> ML_M_ALIGN_SHIFT)) - 1)) rc = -5;
        if (s->size > loc.bytes && (m & ML_M_RESIDENT)) rc = -6;
    }
    uint64_t cached = 0;
    for (ml_tcache *tc = a->tcaches; tc; tc = tc->next)
        for (unsigned c = 0; c < ML_NCLASSES; c++) cached += tc->cls[c].n;
    for (int lane = 0; lane < 2 && !rc; lane++) {
        ml_lane_t *l = &a->lanes[lane];
        uint64_t handed_out = 0;
        uint32_t per_class[ML_NCLASSES] = {0};
        uint64_t used_class[ML_NCLASSES] = {0};
        for (uint32_t s = 0; s < l->ext.cap; s += ml__ext_len(&l->ext, s)) {
            if (ml__ext_kind(&l->ext, s) != ML_EXT_SPAN) continue;
            ml_span *sp = &l->spans[s];
            uint32_t used = 0;
            for (uint32_t b = 0; b < sp->bump; b++)
                if (!(ml__owner_load(&sp->owner[b]) & ML_OWNER_FREE)) used++;
            if (used != sp->used) rc = -7;
            /* a span with a free block is on its class's partial list */
            if (sp->used < sp->nblocks && !sp->in_partial) rc = -21;
            if (sp->cls < ML_NCLASSES) per_class[sp->cls]++, used_class[sp->cls] += used;
            handed_out += used;
        }
        /* (and blocks the debug quarantine holds) */
        if (handed_out != live_blocks[lane] + (lane == ML_LANE_FAST ? cached : 0) +
                              ml__debug_held_blocks(a, (ml_lane)lane))
            rc = -8;
        for (unsigned c = 0; c < ML_NCLASSES && !rc; c++)
            if (per_class[c] != l->cls_spans[c]) rc = -20; /* the per-class span counts */
            else if (used_class[c] != l->cls_used[c]) rc = -22; /* and block counts */
    }

    for (int lane = 1; lane >= 0; lane--) pthread_mutex_unlock(&a->lanes[lane].lock);
    pthread_mutex_unlock(&a->tc_list_lock);
    if (!rc) rc = check_tags(a, n);
    return rc;
}
