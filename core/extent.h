/*
 * extent.h — the blob manager: variable-size extents of fixed units, with
 * out-of-band boundary tags, segregated free lists and coalescing.
 *
 * Caller holds the owning lane's lock for every call.
 */
#ifndef ML_CORE_EXTENT_H
#define ML_CORE_EXTENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ML_EXT_NIL UINT32_MAX
#define ML_EXT_SL_BITS 4
#define ML_EXT_SL (1u << ML_EXT_SL_BITS)
#define ML_EXT_FL 29

/* Kinds of used extents, stored beside the boundary tag. */
enum { ML_EXT_FREE = 0, ML_EXT_BLOB = 1, ML_EXT_SPAN = 2 };

typedef struct ml_ext {
    uint32_t cap;   /* units managed now: [0, cap) */
    uint32_t max;   /* units the arrays can describe */
    /* Boundary tags, at the first and at the last unit of every extent:
     * length in units (bits 0..29) and kind (bits 30..31). */
    uint32_t *tag;
    /* At the first unit: used extent -> owner (caller's value);
     * free extent -> next free extent in the same bin. */
    uint32_t *link;
    /* At the first unit of a free extent: previous in its bin. */
    uint32_t *prev;
    uint32_t fl_bitmap;
    uint32_t sl_bitmap[ML_EXT_FL];
    uint32_t head[ML_EXT_FL][ML_EXT_SL];
    uint64_t free_units;
    uint64_t free_extents;
    /* Every unit at or above clean_from has not been handed out since the
     * extents were created or since its pages were last returned to the
     * kernel (compaction's purge of the free tail lowers it): those pages
     * need no purge, and purging them again would count them again. */
    uint32_t clean_from;
} ml_ext;

int ml__ext_init(ml_ext *e, uint32_t cap, uint32_t max);
void ml__ext_fini(ml_ext *e);

/** Allocate n units (first unit of the extent) or ML_EXT_NIL. Good fit:
 *  the extent comes from the smallest bin whose every member fits. */
uint32_t ml__ext_alloc(ml_ext *e, uint32_t n, unsigned kind, uint32_t owner);
/** Free the used extent starting at start; coalesces with free neighbours.
 *  Returns the first unit of the resulting free extent. */
uint32_t ml__ext_free(ml_ext *e, uint32_t start);
/** Manage [cap, new_cap) too, as free space (merged with a free last extent). */
void ml__ext_grow(ml_ext *e, uint32_t new_cap);

static inline uint32_t ml__ext_len(const ml_ext *e, uint32_t start) { return e->tag[start] & 0x3fffffffu; }
static inline unsigned ml__ext_kind(const ml_ext *e, uint32_t start) { return e->tag[start] >> 30; }
static inline uint32_t ml__ext_owner(const ml_ext *e, uint32_t start) { return e->link[start]; }
static inline void ml__ext_set_owner(ml_ext *e, uint32_t start, uint32_t owner) { e->link[start] = owner; }

/** The used extent at `start` directly follows a free extent: move it (its
 *  tags and owner) down to that free extent's first unit; the free space
 *  ends up after it, merged with a following free extent. Only bookkeeping:
 *  the caller moves the data. Returns the new first unit. */
uint32_t ml__ext_slide_down(ml_ext *e, uint32_t start);
/** First unit of the extent before `start` (start > 0). */
static inline uint32_t ml__ext_prev(const ml_ext *e, uint32_t start)
{
    return start - (e->tag[start - 1] & 0x3fffffffu);
}

/** Length of the largest free extent (O(bin size) scan of the top bin). */
uint32_t ml__ext_largest_free(const ml_ext *e);
/** Number of free extents that are not the last extent (holes). */
uint64_t ml__ext_holes(const ml_ext *e);
/** Walk invariants; returns 0 when consistent (tests, debug builds). */
int ml__ext_check(const ml_ext *e);

#endif
