/*
 * region.h — one lane's address range: a reservation with guard pages.
 */
#ifndef ML_CORE_REGION_H
#define ML_CORE_REGION_H

#include <stdbool.h>
#include <stddef.h>

#include "core/prim.h"

/*
 * Layout of a reservation of max + 2 pages:
 *
 *   base           start                 start+size          base+reserved
 *   | guard page  | usable (read-write)  | PROT_NONE ... up to max + guard |
 *
 * Growing flips pages after start+size to read-write: the inaccessible
 * range above the usable end is the upper guard, and it moves with it.
 */
typedef struct ml_region {
    const ml_prim *prim;
    char *base;      /* reservation */
    size_t reserved; /* bytes reserved: max + 2 guard pages */
    char *start;     /* first usable byte (base + one page) */
    size_t size;     /* usable bytes now */
    size_t max;      /* usable bytes at most */
    bool locked;     /* usable range is mlock'ed */
} ml_region;

/** Reserve max (+guards), commit size. Sizes are page multiples. */
int ml__region_init(ml_region *r, const ml_prim *prim, size_t size, size_t max, bool lock);
/** Grow the usable range to new_size (<= max). Nothing changes on error. */
int ml__region_grow(ml_region *r, size_t new_size);
/** Give the pages of [off, off+len) back to the kernel; stays usable. */
int ml__region_purge(ml_region *r, size_t off, size_t len);
/** Let the kernel take the pages of [off, off+len) lazily (MADV_FREE): the
 *  range must be one the caller still owns. */
int ml__region_release_lazy(ml_region *r, size_t off, size_t len);
void ml__region_fini(ml_region *r);

#endif
