/*
 * lane.c — FastLane and SlowLane: one mechanism, two parameter sets.
 *
 * A lane is a region (core/region.c) tiled by extents (core/extent.c, the
 * blob manager). The block manager for small and mid-sized objects sits on
 * top of it: a *span* is an extent handed to one size class and cut into
 * equal blocks. Spans are carved when a class runs out of free blocks and
 * given back to the extent allocator when their last block returns, so the
 * split between block space and blob space follows demand by construction
 * (the seed's "dynamic repartitioning between block and blob regions").
 *
 *   FastLane: unit = span size (64 KiB, or 8 blocks of the largest class);
 *             only size classes up to the threshold; no blobs.
 *   SlowLane: unit = 4 KiB page; spans of 64 KiB for classes up to 8 KiB
 *             (failover and migrated small objects live there); anything
 *             larger is a blob rounded to pages.
 *
 * Per-block bookkeeping is one 32-bit word outside the lane (owner[]): the
 * owning slot while live, a free-list link while free. So the allocator
 * never writes into lane memory (a freed block's bytes stay as they were
 * until reused), compaction can find the slot of every block it moves, and
 * the debug view can draw a lane map without touching user data. Blocks are
 * handed out from the lowest free index of a span first (bump, then list),
 * and classes prefer their most recently refilled span.
 *
 * Caller holds l->lock for everything but init/fini.
 */
#include "core/lane.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

const uint32_t ml__class_size[ML_NCLASSES] = {
    16,    32,    48,    64,    80,    96,    112,   128,   160,   192,   224,
    256,   320,   384,   448,   512,   640,   768,   896,   1024,  1280,  1536,
    1792,  2048,  2560,  3072,  3584,  4096,  5120,  6144,  7168,  8192,  10240,
    12288, 14336, 16384, 20480, 24576, 28672, 32768, 40960, 49152, 57344, 65536,
};

/* ml__size_class for sizes 1..4096 by (size + 15) / 16: every class
 * boundary up to 4096 is a multiple of 16 (checked against the formula by
 * the unit test SizeClass.TableMatchesFormula). */
const uint8_t ml__class_of16[257] = {
     0,  0,  1,  2,  3,  4,  5,  6,  7,  8,  8,  9,  9, 10, 10, 11,
    11, 12, 12, 12, 12, 13, 13, 13, 13, 14, 14, 14, 14, 15, 15, 15,
    15, 16, 16, 16, 16, 16, 16, 16, 16, 17, 17, 17, 17, 17, 17, 17,
    17, 18, 18, 18, 18, 18, 18, 18, 18, 19, 19, 19, 19, 19, 19, 19,
    19, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20,
    20, 21, 21, 21, 21, 21, 21, 21, 21, 21, 21, 21, 21, 21, 21, 21,
    21, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22,
    22, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23,
    23, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24,
    24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24,
    24, 25, 25, 25, 25, 25, 25, 25, 25, 25, 25, 25, 25, 25, 25, 25,
    25, 25, 25, 25, 25, 25, 25, 25, 25, 25, 25, 25, 25, 25, 25, 25,
    25, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26,
    26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26,
    26, 27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 27,
    27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 27,
    27,
};

#define SLOW_SPAN_BYTES ((size_t)64 << 10)

int ml__lane_init(ml_lane_t *l, ml_lane kind, const ml_prim *prim, size_t size, size_t max,
                  unsigned unit_shift, unsigned nclasses, bool lock)
{
    memset(l, 0, sizeof *l);
    l->kind = kind;
    l->unit_shift = unit_shift;
    l->nclasses = nclasses;
    size_t unit = (size_t)1 << unit_shift;
    for (unsigned c = 0; c < nclasses; c++) {
        size_t bytes = kind == ML_LANE_FAST ? unit : SLOW_SPAN_BYTES;
        while (bytes < 8 * (size_t)ml__class_size[c]) bytes *= 2;
        l->span_units[c] = (uint32_t)(bytes >> unit_shift);
        l->partial[c] = ML_SPAN_NIL;
        l->cls_magic[c] = UINT64_MAX / ml__class_size[c] + 1;
    }
    int rc = ml__region_init(&l->region, prim, size, max, lock);
    if (rc) return rc;
    if (ml__ext_init(&l->ext, (uint32_t)(size >> unit_shift), (uint32_t)(max >> unit_shift))) {
        ml__region_fini(&l->region);
        return -ENOMEM;
    }
    l->spans = ml__meta_map((size_t)l->ext.max * sizeof(ml_span));
    l->unit_span = ml__meta_map((size_t)l->ext.max * sizeof(uint32_t));
    if (!l->spans || !l->unit_span) {
        ml__meta_unmap(l->spans, (size_t)l->ext.max * sizeof(ml_span));
        ml__meta_unmap(l->unit_span, (size_t)l->ext.max * sizeof(uint32_t));
        ml__ext_fini(&l->ext);
        ml__region_fini(&l->region);
        return -ENOMEM;
    }
    pthread_mutex_init(&l->lock, NULL);
    return 0;
}

void ml__lane_fini(ml_lane_t *l)
{
    if (!l->region.base) return;
    for (uint32_t s = 0; s < l->ext.cap; s += ml__ext_len(&l->ext, s))
        if (ml__ext_kind(&l->ext, s) == ML_EXT_SPAN) free(l->spans[s].owner);
    ml__meta_unmap(l->spans, (size_t)l->ext.max * sizeof(ml_span));
    ml__meta_unmap(l->unit_span, (size_t)l->ext.max * sizeof(uint32_t));
    ml__ext_fini(&l->ext);
    ml__region_fini(&l->region);
    pthread_mutex_destroy(&l->lock);
    memset(l, 0, sizeof *l);
}

static void partial_push(ml_lane_t *l, uint32_t s)
{
    ml_span *sp = &l->spans[s];
    sp->prev = ML_SPAN_NIL;
    sp->next = l->partial[sp->cls];
    if (sp->next != ML_SPAN_NIL) l->spans[sp->next].prev = s;
    l->partial[sp->cls] = s;
    sp->in_partial = 1;
}

static void partial_remove(ml_lane_t *l, uint32_t s)
{
    ml_span *sp = &l->spans[s];
    if (sp->prev != ML_SPAN_NIL) l->spans[sp->prev].next = sp->next;
    else l->partial[sp->cls] = sp->next;
    if (sp->next != ML_SPAN_NIL) l->spans[sp->next].prev = sp->prev;
    sp->in_partial = 0;
}

/* May `units` more units be taken from the free extents? */
static inline bool room_for(const ml_lane_t *l, uint32_t units, bool internal)
{
    return internal || l->ext.free_units >= (uint64_t)units + l->reserve_units;
}

static uint32_t span_new(ml_lane_t *l, unsigned cls, bool internal)
{
    uint32_t units = l->span_units[cls];
    if (!room_for(l, units, internal)) return ML_SPAN_NIL;
    uint32_t nblocks = (uint32_t)(((size_t)units << l->unit_shift) / ml__class_size[cls]);
    uint32_t *owner = calloc(nblocks, sizeof *owner);
    if (!owner) return ML_SPAN_NIL;
    uint32_t s = ml__ext_alloc(&l->ext, units, ML_EXT_SPAN, 0);
    if (s == ML_EXT_NIL) {
        free(owner);
        return ML_SPAN_NIL;
    }
    ml_span *sp = &l->spans[s];
    memset(sp, 0, sizeof *sp);
    sp->owner = owner;
    sp->nblocks = nblocks;
    sp->free_head = ML_OWNER_NIL;
    sp->units = units;
    sp->cls = (uint16_t)cls;
    for (uint32_t u = 0; u < units; u++) l->unit_span[s + u] = s;
    l->span_count++;
    l->cls_spans[cls]++;
    l->span_units_total += units;
    l->meta_bytes += (uint64_t)nblocks * sizeof *owner;
    partial_push(l, s);
    return s;
}

static void span_release(ml_lane_t *l, uint32_t s)
{
    ml_span *sp = &l->spans[s];
    if (sp->in_partial) partial_remove(l, s);
    l->span_count--;
    l->cls_spans[sp->cls]--;
    l->span_units_total -= sp->units;
    l->meta_bytes -= (uint64_t)sp->nblocks * sizeof *sp->owner;
    free(sp->owner);
    memset(sp, 0, sizeof *sp);
    ml__ext_free(&l->ext, s);
}

unsigned ml__lane_blocks_take(ml_lane_t *l, unsigned cls, uint64_t *out, unsigned n, bool internal)
{
    unsigned got = 0;
    size_t csize = ml__class_size[cls];
    while (got < n) {
        uint32_t s = l->partial[cls];
        if (s == ML_SPAN_NIL && (s = span_new(l, cls, internal)) == ML_SPAN_NIL) break;
        ml_span *sp = &l->spans[s];
        while (got < n && sp->used < sp->nblocks) {
            uint32_t idx;
            if (sp->free_head != ML_OWNER_NIL) {
                idx = sp->free_head;
                sp->free_head = ml__owner_load(&sp->owner[idx]) & ~ML_OWNER_FREE;
            } else {
                idx = sp->bump++;
            }
            ml__owner_store(&sp->owner[idx], 0);
            sp->used++;
            out[got++] = ((uint64_t)s << 32) | idx;
        }
        if (sp->used == sp->nblocks) partial_remove(l, s);
    }
    l->blocks_used_bytes += (uint64_t)got * csize;
    l->cls_used[cls] += got;
    return got;
}

bool ml__span_take_block(ml_lane_t *l, uint32_t s, uint32_t *idx)
{
    ml_span *sp = &l->spans[s];
    if (sp->used == sp->nblocks) return false;
    uint32_t i;
    if (sp->free_head != ML_OWNER_NIL) {
        i = sp->free_head;
        sp->free_head = ml__owner_load(&sp->owner[i]) & ~ML_OWNER_FREE;
    } else {
        i = sp->bump++;
    }
    ml__owner_store(&sp->owner[i], 0);
    sp->used++;
    l->cls_used[sp->cls]++;
    l->blocks_used_bytes += ml__class_size[sp->cls];
    if (sp->used == sp->nblocks && sp->in_partial) partial_remove(l, s);
    *idx = i;
    return true;
}

uint32_t ml__lane_span_slide(ml_lane_t *l, uint32_t s)
{
    ml_span rec = l->spans[s];
    bool listed = rec.in_partial;
    if (listed) partial_remove(l, s);
    memset(&l->spans[s], 0, sizeof l->spans[s]);
    uint32_t ns = ml__ext_slide_down(&l->ext, s);
    rec.in_partial = 0;
    l->spans[ns] = rec;
    for (uint32_t u = 0; u < rec.units; u++) l->unit_span[ns + u] = ns;
    if (listed) partial_push(l, ns);
    return ns;
}

unsigned ml__lane_release_empty(ml_lane_t *l, unsigned cls)
{
    unsigned n = 0;
    for (uint32_t s = l->partial[cls], next; s != ML_SPAN_NIL; s = next) {
        next = l->spans[s].next;
        if (l->spans[s].used == 0) {
            span_release(l, s);
            n++;
        }
    }
    return n;
}

void ml__lane_block_put(ml_lane_t *l, uint32_t s, uint32_t idx)
{
    ml_span *sp = &l->spans[s];
    ml__owner_store(&sp->owner[idx], ML_OWNER_FREE | sp->free_head);
    sp->free_head = idx;
    sp->used--;
    l->cls_used[sp->cls]--;
    l->blocks_used_bytes -= ml__class_size[sp->cls];
    if (sp->used == 0 && (sp->in_partial ? sp->prev != ML_SPAN_NIL || sp->next != ML_SPAN_NIL
                                         : l->partial[sp->cls] != ML_SPAN_NIL)) {
        /* Empty, and the class has another span to allocate from: give the
         * extent back so any size (or a blob) can use it. The last span of
         * a class stays, so a class that empties and refills does not
         * thrash. */
        span_release(l, s);
        return;
    }
    if (!sp->in_partial) partial_push(l, s);
}

uint32_t ml__lane_blob_alloc(ml_lane_t *l, size_t bytes, uint32_t owner, bool internal)
{
    size_t units = (bytes + ml__lane_unit(l) - 1) >> l->unit_shift;
    if (units == 0 || units > l->ext.max || !room_for(l, (uint32_t)units, internal)) return ML_EXT_NIL;
    uint32_t s = ml__ext_alloc(&l->ext, (uint32_t)units, ML_EXT_BLOB, owner);
    if (s != ML_EXT_NIL) {
        l->blob_count++;
        l->blob_units_total += units;
    }
    return s;
}

void ml__lane_blob_free(ml_lane_t *l, uint32_t start)
{
    l->blob_count--;
    l->blob_units_total -= ml__ext_len(&l->ext, start);
    ml__ext_free(&l->ext, start);
}

int ml__lane_grow(ml_lane_t *l, size_t bytes)
{
    size_t unit = ml__lane_unit(l);
    size_t cur = l->region.size;
    if (cur >= l->region.max) return -ENOMEM;
    /* Grow by at least what was asked (counting a free tail) and at least
     * by a quarter, so growth is geometric and rare. */
    size_t tail = 0;
    uint32_t cap = l->ext.cap;
    if (cap && ml__ext_kind(&l->ext, cap - ml__ext_len(&l->ext, cap - 1)) == ML_EXT_FREE)
        tail = (size_t)ml__ext_len(&l->ext, cap - 1) << l->unit_shift;
    size_t need = bytes > tail ? bytes - tail : unit;
    if (need < cur / 4) need = cur / 4;
    size_t target = ml__align_up(cur + need, unit);
    if (target > l->region.max) target = l->region.max;
    if (target - cur + tail < bytes) return -ENOMEM;
    int rc = ml__region_grow(&l->region, target);
    if (rc) return rc;
    ml__ext_grow(&l->ext, (uint32_t)(target >> l->unit_shift));
    l->grows++;
    ml__lane_set_reserve(l);
    return 0;
}

int ml__lane_grow_to_max(ml_lane_t *l)
{
    if (l->region.size >= l->region.max) return -ENOMEM;
    int rc = ml__region_grow(&l->region, l->region.max);
    if (rc) return rc;
    ml__ext_grow(&l->ext, (uint32_t)(l->region.max >> l->unit_shift));
    l->grows++;
    ml__lane_set_reserve(l);
    return 0;
}

void ml__lane_set_reserve(ml_lane_t *l)
{
    l->reserve_units = (uint32_t)((double)(l->region.size >> l->unit_shift) * l->reserve_frac);
}

uint64_t ml__lane_reclaimable(const ml_lane_t *l)
{
    uint64_t bytes = 0;
    for (unsigned c = 0; c < l->nclasses; c++) {
        if (!l->cls_spans[c]) continue;
        uint64_t span = (uint64_t)l->span_units[c] << l->unit_shift;
        uint64_t per = span / ml__class_size[c]; /* as span_new counts them */
        uint64_t free = (uint64_t)l->cls_spans[c] * per - l->cls_used[c];
        bytes += free / per * span;
    }
    return bytes;
}

void ml__lane_stats(ml_lane_t *l, ml_lane_stats *s)
{
    size_t unit = ml__lane_unit(l);
    s->capacity = l->region.size;
    s->max_capacity = l->region.max;
    s->spans = l->span_count;
    s->span_bytes = l->span_units_total * unit;
    s->blobs = l->blob_count;
    s->blob_bytes = l->blob_units_total * unit;
    s->largest_free = (uint64_t)ml__ext_largest_free(&l->ext) * unit;
    s->tombstones = ml__ext_holes(&l->ext);
    s->grows = l->grows;
    s->failovers = l->failovers;
    s->alloc_failures = l->alloc_failures;
    s->compactions = l->compactions;
    s->compacted_bytes = l->compacted_bytes;
    s->compacted_entries = l->compacted_entries;
    s->purged_bytes = l->purged_bytes;
    s->migrated_in = l->migrated_in;
    s->migrated_out = l->migrated_out;
    s->reserve = (uint64_t)l->reserve_units * unit;
    s->reclaimable = ml__lane_reclaimable(l);
    /* used/free/live/fragmentation need the thread caches: arena.c. */
}
