/*
 * lane.h — a lane: a region, a blob manager (extents) and a block manager
 * (size classes in spans carved from the extents).
 *
 * Locking: every function here is called with lane->lock held, except
 * ml__lane_init/fini (single-threaded) and the inline helpers that only
 * compute. Lock order (see core/arena.h): slot claim -> thread cache ->
 * lane lock -> handle-table lock; a thread holding a lane lock never waits
 * for a slot claim, it only tries one.
 */
#ifndef ML_CORE_LANE_H
#define ML_CORE_LANE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/extent.h"
#include "core/region.h"
#include "memorylane/memorylane.h"

/* ---- size classes ---------------------------------------------------------- */

#define ML_NCLASSES 44
#define ML_MAX_CLASS_SIZE 65536u
#define ML_CLASS_NONE 0xffu

extern const uint32_t ml__class_size[ML_NCLASSES];

/** Smallest class holding size bytes (size 1..65536). */
static inline unsigned ml__size_class(size_t size)
{
    if (size <= 128) return (unsigned)((size + 15) >> 4) - (size != 0);
    unsigned k = 63u - (unsigned)__builtin_clzll((unsigned long long)(size - 1));
    size_t step = (size_t)1 << (k - 2);
    unsigned sub = (unsigned)((size - ((size_t)1 << k) + step - 1) / step); /* 1..4 */
    return 8 + (k - 7) * 4 + sub - 1;
}

extern const uint8_t ml__class_of16[257];
/** ml__size_class by table lookup when size is 1..4096 (the fast paths). */
static inline unsigned ml__size_class_fast(size_t size)
{
    return size <= 4096 ? ml__class_of16[(size + 15) >> 4] : ml__size_class(size);
}
/** Smallest class >= size whose size is a multiple of align (a power of two
 *  <= 4096), among the first nclasses; ML_CLASS_NONE if none. */
static inline unsigned ml__size_class_aligned(size_t size, size_t align, unsigned nclasses)
{
    if (size > ML_MAX_CLASS_SIZE) return ML_CLASS_NONE;
    for (unsigned c = ml__size_class(size); c < nclasses; c++)
        if ((ml__class_size[c] & (align - 1)) == 0) return c;
    return ML_CLASS_NONE;
}

/* ---- spans ----------------------------------------------------------------- */

#define ML_SPAN_NIL UINT32_MAX
/* owner[] values: slot index + 1 when live; 0 when handed out but not yet
 * (or no longer) owned (thread caches); FREE | next when on the free list. */
#define ML_OWNER_FREE 0x80000000u
#define ML_OWNER_NIL 0x7fffffffu

typedef struct ml_span {
    uint32_t *owner;   /* [nblocks] */
    uint32_t nblocks;  /* blocks in the span */
    uint32_t used;     /* blocks handed out (live or in thread caches) */
    uint32_t free_head;/* free list through owner[], ML_OWNER_NIL */
    uint32_t bump;     /* blocks [bump, nblocks) never handed out */
    uint32_t prev, next; /* list of the class's spans with free blocks */
    uint32_t units;    /* extent length */
    uint16_t cls;
    uint8_t in_partial;
    uint8_t pad;
} ml_span;

static inline uint32_t ml__owner_load(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void ml__owner_store(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }

/* ---- the lane -------------------------------------------------------------- */

typedef struct ml_lane_s {
    pthread_mutex_t lock;
    ml_lane kind;
    ml_region region;
    ml_ext ext;
    unsigned unit_shift;              /* bytes per extent unit = 1 << shift */
    unsigned nclasses;                /* classes served by spans here */
    uint32_t span_units[ML_NCLASSES]; /* units per span, by class */
    ml_span *spans;                   /* by first unit, [ext.max] */
    uint32_t *unit_span;              /* unit -> first unit of its span */
    uint64_t cls_magic[ML_NCLASSES];  /* 2^64 / class size, rounded up */
    uint32_t partial[ML_NCLASSES];    /* spans with free blocks */
    uint32_t cls_spans[ML_NCLASSES];  /* spans of each class */
    uint64_t cls_used[ML_NCLASSES];   /* blocks handed out, by class */
    /* statistics (lane lock) */
    uint64_t span_count, span_units_total;
    uint64_t blob_count, blob_units_total;
    uint64_t blocks_used_bytes;       /* bytes of blocks handed out */
    uint64_t grows, failovers, alloc_failures;
    uint64_t meta_bytes;              /* owner arrays */
    /* Scratch reserve (SlowLane safety margin): ordinary allocations may not
     * take the last reserve_units free units; compaction and migration may. */
    uint32_t reserve_units;
    double reserve_frac;
    /* relocation (lane lock) */
    uint64_t compactions, compacted_bytes, compacted_entries, purged_bytes;
    uint64_t migrated_in, migrated_out;
    unsigned compact_phase;           /* 0 evacuate, 1 slide, 2 purge the tail */
    uint32_t compact_cursor;          /* class (0), unit (1), units left to purge (2) */
    /* Phase 0, where a step that ran out of time stopped within its class:
     * the span (its unit + 1; 0: none) and its blocks already looked at.
     * A hint: spans come and go between steps. */
    uint32_t compact_skip, compact_block;
    bool compact_moved;               /* this pass moved something */
    uint64_t reclaim_floor;           /* ml__lane_reclaimable when the last
                                         pass ended, or less since: what
                                         compaction could not give back */
    uint64_t reclaim_floor_ns;        /* when that pass ended (ml__coarse_ns) */
    uint64_t purge_ns_per_mib;        /* what handing 1 MiB back to the kernel
                                         has cost lately (0: not yet known) */
    uint64_t compact_walks;           /* walks over every extent looking for
                                         a class's spans (tests read it) */
} ml_lane_t;

/* Is a compaction pass of l half done (left so by a bounded step)? Lock held. */
static inline bool ml__lane_in_pass(const ml_lane_t *l)
{
    return l->compact_phase != 0 || l->compact_cursor != 0 || l->compact_skip != 0 || l->compact_block != 0;
}

int ml__lane_init(ml_lane_t *l, ml_lane kind, const ml_prim *prim, size_t size, size_t max,
                  unsigned unit_shift, unsigned nclasses, bool lock);
void ml__lane_fini(ml_lane_t *l);

static inline char *ml__lane_base(const ml_lane_t *l) { return l->region.start; }
static inline size_t ml__lane_unit(const ml_lane_t *l) { return (size_t)1 << l->unit_shift; }
static inline char *ml__block_addr(const ml_lane_t *l, uint32_t span, uint32_t idx)
{
    return l->region.start + ((size_t)span << l->unit_shift) +
           (size_t)idx * ml__class_size[l->spans[span].cls];
}

/** Block index of lane offset `off`, which lies in span `span`. */
static inline uint32_t ml__block_index(const ml_lane_t *l, uint32_t span, size_t off)
{
    uint64_t in = off - ((size_t)span << l->unit_shift); /* < 2^32 */
    return (uint32_t)(((unsigned __int128)l->cls_magic[l->spans[span].cls] * in) >> 64);
}

/** Hand out up to n free blocks of class cls (as span<<32|idx); may carve a
 *  new span. Returns how many (0: no room without growing). */
unsigned ml__lane_blocks_take(ml_lane_t *l, unsigned cls, uint64_t *out, unsigned n, bool internal);
/** Take one free block of span s (its owner entry set to 0). */
bool ml__span_take_block(ml_lane_t *l, uint32_t s, uint32_t *idx);
/** Slide span s down over the free extent before it (bookkeeping only:
 *  span record, unit map, lists). Returns its new first unit. */
uint32_t ml__lane_span_slide(ml_lane_t *l, uint32_t s);
/** Release every span of class cls that holds no block (the one a class
 *  keeps when it empties, so that it does not thrash, included: compaction
 *  ends a class with it, so that an emptied lane is one free range).
 *  Returns how many. */
unsigned ml__lane_release_empty(ml_lane_t *l, unsigned cls);
/** Take back a block handed out earlier (its owner entry is rewritten). */
void ml__lane_block_put(ml_lane_t *l, uint32_t span, uint32_t idx);
/** Allocate a blob of `bytes` (rounded to units). ML_EXT_NIL if no room. */
uint32_t ml__lane_blob_alloc(ml_lane_t *l, size_t bytes, uint32_t owner, bool internal);
void ml__lane_blob_free(ml_lane_t *l, uint32_t start);
/** Grow the lane so that at least `bytes` more are free at its end (capped
 *  at its maximum). 0, or -ENOMEM when it cannot grow enough. */
int ml__lane_grow(ml_lane_t *l, size_t bytes);
/** Grow the lane to its maximum. 0, or -ENOMEM when it is there already. */
int ml__lane_grow_to_max(ml_lane_t *l);
/** Recompute reserve_units from reserve_frac and the current size. */
void ml__lane_set_reserve(ml_lane_t *l);
/** Bytes of spans a compaction pass could empty and give back: for each
 *  class, its free blocks (thread-cached ones count as used) divided by the
 *  blocks a span holds, in whole spans. At most: pinned or cached blocks
 *  can keep a span. Lock held. */
uint64_t ml__lane_reclaimable(const ml_lane_t *l);
/** Statistics snapshot (caller holds the lock). */
void ml__lane_stats(ml_lane_t *l, ml_lane_stats *s);

#endif
