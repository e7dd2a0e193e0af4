/*
 * region.c — reservations with guard pages that move as a lane grows.
 *
 * A lane never moves in the address space: its whole maximum is reserved up
 * front (address space only), and growth commits more of it. A stray write
 * one byte before the usable start or at the usable end hits a PROT_NONE
 * page and dies with SIGSEGV instead of corrupting a neighbour. With
 * lock=true the usable range is mlock'ed, and so is every later growth.
 */
#include "core/region.h"

#include <errno.h>
#include <string.h>

int ml__region_init(ml_region *r, const ml_prim *prim, size_t size, size_t max, bool lock)
{
    memset(r, 0, sizeof *r);
    if (size == 0 || size > max || (size | max) % ML_PAGE_SIZE) return -EINVAL;
    r->prim = prim;
    r->reserved = max + 2 * ML_PAGE_SIZE;
    void *base;
    int rc = prim->reserve(prim->ctx, r->reserved, &base);
    if (rc) return rc;
    r->base = base;
    r->start = r->base + ML_PAGE_SIZE;
    r->max = max;
    rc = prim->commit(prim->ctx, r->start, size);
    if (rc == 0 && lock) {
        rc = prim->lock(prim->ctx, r->start, size);
        if (rc) prim->decommit(prim->ctx, r->start, size);
    }
    if (rc) {
        prim->release(prim->ctx, r->base, r->reserved);
        memset(r, 0, sizeof *r);
        return rc;
    }
    r->size = size;
    r->locked = lock;
    return 0;
}

int ml__region_grow(ml_region *r, size_t new_size)
{
    if (new_size <= r->size) return 0;
    if (new_size > r->max || new_size % ML_PAGE_SIZE) return -ENOMEM;
    char *p = r->start + r->size;
    size_t len = new_size - r->size;
    int rc = r->prim->commit(r->prim->ctx, p, len);
    if (rc) return rc;
    if (r->locked && (rc = r->prim->lock(r->prim->ctx, p, len)) != 0) {
        r->prim->decommit(r->prim->ctx, p, len);
        return rc;
    }
    /* (atomic: eviction releases pages of its victims below the size
     * without the lane lock, ml__region_release_lazy) */
    __atomic_store_n(&r->size, new_size, __ATOMIC_RELAXED);
    return 0;
}

int ml__region_purge(ml_region *r, size_t off, size_t len)
{
    if (len == 0) return 0;
    if (off % ML_PAGE_SIZE || len % ML_PAGE_SIZE || off + len > r->size) return -EINVAL;
    /* mlock'ed pages cannot be dropped (the lock is the point of them). */
    if (r->locked) return 0;
    return r->prim->purge(r->prim->ctx, r->start + off, len);
}

int ml__region_release_lazy(ml_region *r, size_t off, size_t len)
{
    if (len == 0 || r->locked) return 0;
    /* Called without the lane lock while the lane may grow: the size only
     * grows, and the range is below what it was. */
    if (off % ML_PAGE_SIZE || len % ML_PAGE_SIZE || off + len > __atomic_load_n(&r->size, __ATOMIC_RELAXED))
        return -EINVAL;
    if (!r->prim->free_lazy) return r->prim->purge(r->prim->ctx, r->start + off, len);
    return r->prim->free_lazy(r->prim->ctx, r->start + off, len);
}

void ml__region_fini(ml_region *r)
{
    if (!r->base) return;
    if (r->locked) r->prim->unlock(r->prim->ctx, r->start, r->size);
    r->prim->release(r->prim->ctx, r->base, r->reserved);
    memset(r, 0, sizeof *r);
}
