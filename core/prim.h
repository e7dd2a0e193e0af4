/*
 * prim.h — the memory primitives every other part of the core goes through.
 *
 * All mmap/mprotect/madvise/mlock calls of the library sit behind this one
 * table, so that tests can substitute a table whose calls fail on demand
 * (see tests/fault_prim.h). Contract, stated once: every function returns 0
 * or a negative errno; addresses and sizes are multiples of ML_PAGE_SIZE.
 */
#ifndef ML_CORE_PRIM_H
#define ML_CORE_PRIM_H

#include <stddef.h>
#include <stdint.h>

#define ML_PAGE_SIZE ((size_t)4096)
#define ML_PAGE_SHIFT 12

typedef struct ml_prim {
    /** Reserve size bytes of address space, inaccessible (PROT_NONE). */
    int (*reserve)(void *ctx, size_t size, void **out);
    /** Give back a whole reservation. */
    int (*release)(void *ctx, void *p, size_t size);
    /** Make [p, p+size) readable and writable. */
    int (*commit)(void *ctx, void *p, size_t size);
    /** Make [p, p+size) inaccessible again (a guard) and drop its pages. */
    int (*decommit)(void *ctx, void *p, size_t size);
    /** Return the physical pages of [p, p+size) to the kernel; the range
     *  stays accessible and reads back as zeros. */
    int (*purge)(void *ctx, void *p, size_t size);
    /** mlock / munlock [p, p+size). */
    int (*lock)(void *ctx, void *p, size_t size);
    int (*unlock)(void *ctx, void *p, size_t size);
    void *ctx;
    /** Optional: let the kernel take the pages of [p, p+size) when it needs
     *  memory (MADV_FREE); they stay ours until then, so reuse costs no
     *  fault. NULL: purge is used instead. */
    int (*free_lazy)(void *ctx, void *p, size_t size);
} ml_prim;

/** The real thing: mmap, mprotect, madvise, mlock. */
const ml_prim *ml__prim_os(void);

/** Zero-filled, read-write, lazily backed memory for bookkeeping arrays
 *  (MAP_NORESERVE: only touched pages cost memory). NULL on failure. */
void *ml__meta_map(size_t size);
void ml__meta_unmap(void *p, size_t size);

static inline size_t ml__align_up(size_t x, size_t a) { return (x + a - 1) & ~(a - 1); }

#endif
