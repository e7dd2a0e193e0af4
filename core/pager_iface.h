/*
 * pager_iface.h — the one narrow interface between core/ and paging/.
 *
 * core/ never calls into paging/ directly (the dependency runs the other
 * way): paging/ registers this table when it is linked in (a constructor in
 * paging/pager.c), and core/ calls through it. Without paging/ the table is
 * empty and no handle is ever cold.
 *
 * Every call that names a slot is made with that slot claimed by the caller
 * (the LOCKED bit), so the pager owns the entry for the duration.
 */
#ifndef ML_CORE_PAGER_IFACE_H
#define ML_CORE_PAGER_IFACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "memorylane/memorylane.h"

typedef struct ml_pager_ops {
    /** Set up paging for a new arena (resources are created lazily). */
    int (*attach)(ml_arena *a);
    /** Tear down: waits for I/O in flight, closes and removes the swap file. */
    void (*detach)(ml_arena *a);
    /** Bring claimed cold slot idx back into SlowLane. With keep_copy (a
     *  read-only access), a swap record is kept as a clean copy. 0, -ENOMEM,
     *  -EIO, -EBADMSG. */
    int (*page_in)(ml_arena *a, uint32_t idx, bool keep_copy);
    /** Release the swap record kept for claimed resident slot idx (HASCOPY). */
    void (*drop_copy)(ml_arena *a, uint32_t idx, uint64_t m);
    /** Copy bytes of claimed cold slot idx without changing its state.
     *  Returns bytes copied or a negative error. */
    int (*read_cold)(ml_arena *a, uint32_t idx, size_t off, void *buf, size_t len);
    /** Release the cold storage of slot idx (record in RAM or on disk), whose
     *  meta word was m; the slot is being freed. */
    void (*drop)(ml_arena *a, uint32_t idx, uint64_t m);
    /** SlowLane needs `bytes` more: evict cold blobs. Returns bytes freed. */
    size_t (*make_room)(ml_arena *a, size_t bytes);
    /** Maintenance: evict by idle time and by pressure. */
    void (*maintain)(ml_arena *a);
} ml_pager_ops;

/* The address word of an EVICTED slot names its record in the swap file:
 * offset and length in 4 KiB blocks. */
#define ML_SWAP_LEN_BITS 24
static inline uint64_t ml__swap_loc(uint64_t off_blocks, uint64_t len_blocks)
{
    return (off_blocks << ML_SWAP_LEN_BITS) | len_blocks;
}
static inline uint64_t ml__swap_off(uint64_t loc) { return loc >> ML_SWAP_LEN_BITS; }
static inline uint64_t ml__swap_len(uint64_t loc) { return loc & ((1u << ML_SWAP_LEN_BITS) - 1); }

/** Installed by paging/ (NULL when paging/ is not linked). */
extern const ml_pager_ops *ml__pager;
void ml__pager_register(const ml_pager_ops *ops);

#endif
