/*
 * prim.c — the operating system's memory calls, in one place.
 *
 * Reservations are PROT_NONE + MAP_NORESERVE, so reserving a lane's maximum
 * size costs address space, not memory; commit flips pages to read-write,
 * purge hands physical pages back with MADV_DONTNEED (anonymous private
 * memory then reads back as zeros, which the lanes rely on for nothing but
 * make no secret of). Errors come back as -errno, never through errno.
 */
#include "core/prim.h"

#include <errno.h>
#include <sys/mman.h>

static int os_reserve(void *ctx, size_t size, void **out)
{
    (void)ctx;
    void *p = mmap(NULL, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return -ENOMEM;
    *out = p;
    return 0;
}

static int os_release(void *ctx, void *p, size_t size)
{
    (void)ctx;
    return munmap(p, size) == 0 ? 0 : -errno;
}

static int os_commit(void *ctx, void *p, size_t size)
{
    (void)ctx;
    return mprotect(p, size, PROT_READ | PROT_WRITE) == 0 ? 0 : -ENOMEM;
}

static int os_decommit(void *ctx, void *p, size_t size)
{
    (void)ctx;
    if (madvise(p, size, MADV_DONTNEED) != 0) return -errno;
    return mprotect(p, size, PROT_NONE) == 0 ? 0 : -errno;
}

static int os_purge(void *ctx, void *p, size_t size)
{
    (void)ctx;
    return madvise(p, size, MADV_DONTNEED) == 0 ? 0 : -errno;
}

static int os_free_lazy(void *ctx, void *p, size_t size)
{
    (void)ctx;
#ifdef MADV_FREE
    if (madvise(p, size, MADV_FREE) == 0) return 0;
#endif
    return madvise(p, size, MADV_DONTNEED) == 0 ? 0 : -errno;
}

static int os_lock(void *ctx, void *p, size_t size)
{
    (void)ctx;
    return mlock(p, size) == 0 ? 0 : -ENOMEM;
}

static int os_unlock(void *ctx, void *p, size_t size)
{
    (void)ctx;
    return munlock(p, size) == 0 ? 0 : -errno;
}

static const ml_prim os_prim = {
    .reserve = os_reserve,
    .release = os_release,
    .commit = os_commit,
    .decommit = os_decommit,
    .purge = os_purge,
    .lock = os_lock,
    .unlock = os_unlock,
    .ctx = NULL,
    .free_lazy = os_free_lazy,
};

const ml_prim *ml__prim_os(void) { return &os_prim; }

void *ml__meta_map(size_t size)
{
    void *p = mmap(NULL, ml__align_up(size, ML_PAGE_SIZE), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

void ml__meta_unmap(void *p, size_t size)
{
    if (p) munmap(p, ml__align_up(size, ML_PAGE_SIZE));
}
