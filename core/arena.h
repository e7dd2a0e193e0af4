/*
 * arena.h — the arena, the handle table (slots = stubs) and thread caches.
 *
 * Internal to the library; tests include it to reach what the public API
 * hides (lane addresses for guard-page tests, generation wrap).
 *
 * ---------------------------------------------------------------------------
 * Locking design
 * ---------------------------------------------------------------------------
 * The arena has these locks, always taken in this order (a lock may be taken
 * while holding only locks above it):
 *
 *   1. g_registry        global list of live arenas (create, destroy, thread
 *                        exit); core/tcache.c.
 *   2. slot claim        the LOCKED bit of one slot's meta word: a tiny
 *                        per-handle mutex over the stub's cold fields and the
 *                        data's location. Taken to free, move, snapshot,
 *                        read/write through the API, tag. Never held across
 *                        a callback. A thread holding a lane lock never waits
 *                        for a claim; it only tries one (and skips the slot).
 *   3. tc_list lock      the arena's list of thread caches and the counters
 *                        of exited threads. Taken before any cache lock by
 *                        whoever walks the caches (stats, compaction, exit).
 *   4. thread cache      tc->lock: owned by its thread for every fast-path
 *                        operation, taken by others (stats, compaction,
 *                        thread exit) to look inside. Never contended on the
 *                        fast path.
 *   5. lane lock         lanes[i].lock: extents, spans, free lists, lane
 *                        statistics. Fast before slow when both are needed.
 *   6. table lock        free-slot list and table growth.
 *   7. meta lock         groups, tags (interning), group membership links.
 *
 * Pins are not a lock: they are a count in the meta word that forbids moving
 * and freeing. Claims and pins exclude each other as follows: a claim for a
 * move or a free needs pins == 0; a pin waits while the slot is claimed.
 *
 * ml_get takes no lock: one load of the meta word, one compare against the
 * handle, one load of the address. The meta word and the address are
 * accessed with atomic operations only (relaxed on the hot path; the
 * publishing store of an allocation is a release), so concurrent readers
 * never race in the C11 sense, and ThreadSanitizer agrees.
 */
#ifndef ML_CORE_ARENA_H
#define ML_CORE_ARENA_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/lane.h"
#include "core/prim.h"
#include "memorylane/memorylane.h"

/* ---- handle bits ------------------------------------------------------------
 *   bits  0..31  slot index
 *   bits 32..55  generation (1..ML_GEN_MAX)
 *   bits 56..62  arena tag (1..127)
 *   bit  63      born in SlowLane
 * The upper half of a live slot's meta word equals the upper half of its
 * handle, so validating a handle is one compare.
 */
#define ML_GEN_BITS 24
#define ML_GEN_MAX ((1u << ML_GEN_BITS) - 2) /* last generation ever issued */
#define ML_GEN_RETIRED ((1u << ML_GEN_BITS) - 1)
#define ML_HI_GEN(hi) ((hi) & ((1u << ML_GEN_BITS) - 1))
#define ML_HI_TAG(hi) (((hi) >> 24) & 0x7fu)
#define ML_HI_BORN_SLOW (1u << 31)

/* ---- meta word (low half) ---------------------------------------------------- */
#define ML_M_STATE 0x7ull          /* ml_state of a live slot; 0 when free */
#define ML_M_RESIDENT (1ull << 3)  /* state is FAST or SLOW */
#define ML_M_ACCESSED (1ull << 4)  /* CLOCK bit, folded by maintenance */
#define ML_M_LOCKED (1ull << 5)    /* claimed */
#define ML_M_PIN_SHIFT 16
#define ML_M_PIN_ONE (1ull << ML_M_PIN_SHIFT)
#define ML_M_PINS (0xffffull << ML_M_PIN_SHIFT)
#define ML_PIN_MAX 0xffffu

typedef struct ml_slot {
    uint64_t meta; /* atomic: see above */
    uint64_t addr; /* atomic: data address while resident */
} ml_slot;

#define ML_NIL32 UINT32_MAX
#define ML_INDEX_BLOB UINT32_MAX

/* Cold half of a stub: written only by the thread that holds the slot's
 * claim (or owns the slot before it is published / after it is freed). */
typedef struct ml_cold {
    uint64_t size;         /* bytes requested; free slot: next free index */
    uint32_t span;         /* first lane unit of the span or blob */
    uint32_t index;        /* block index in the span; ML_INDEX_BLOB */
    uint8_t lane;          /* ml_lane holding the data */
    uint8_t cls;           /* size class, ML_CLASS_NONE for blobs */
    uint8_t align_log2;
    uint8_t pad;
    uint32_t tag;          /* interned tag ID, 0 = none */
    uint32_t group;        /* ml_group, 0 = none (meta lock + claim) */
    uint32_t gprev, gnext; /* group list (meta lock) */
    uint32_t migrations;
    uint64_t created_ns;
    uint64_t last_access_ns;
    uint64_t accesses;
} ml_cold;

/* ---- thread caches ------------------------------------------------------------ */
#define ML_TC_SLOTS 64
#define ML_TC_BLOCKS 32

typedef struct ml_tcache {
    int lock;
    uint32_t nslots;
    uint32_t slots[ML_TC_SLOTS];
    struct ml_tcache *next, *prev; /* arena's list (tc_list lock) */
    struct ml_arena *arena;
    /* statistics of operations done by this thread (tc lock) */
    int64_t allocs[2], frees[2], used[2], requested[2];
    struct {
        uint32_t n;
        uint64_t b[ML_TC_BLOCKS]; /* span << 32 | index */
    } cls[ML_NCLASSES];
} ml_tcache;

/* ---- groups and tags ----------------------------------------------------------- */
#define ML_MAX_GROUPS 4095
#define ML_MAX_TAGS 4096
#define ML_TAG_HASH 8192

typedef struct ml_group_rec {
    char name[ML_NAME_MAX];
    uint32_t gen;   /* bumped when destroyed */
    bool live;
    uint32_t head;  /* first member slot, ML_NIL32 */
    uint64_t count;
} ml_group_rec;

/* ---- the arena ------------------------------------------------------------------ */
struct ml_arena {
    /* Read on every ml_get: keep together. */
    ml_slot *slots;
    uint32_t slot_count; /* atomic: slots initialised so far */
    uint32_t tag;        /* 7-bit arena tag */
    uint64_t serial;     /* unique per arena in this process */

    ml_cold *cold;
    ml_config cfg;
    const ml_prim *prim;
    uint64_t epoch_ns;   /* creation time, CLOCK_MONOTONIC_COARSE */

    ml_lane_t lanes[2];

    pthread_mutex_t table_lock;
    uint32_t next_fresh; /* first never-used slot index */
    uint32_t free_head;  /* free-slot list through cold[].size */
    uint64_t retired;

    pthread_mutex_t tc_list_lock;
    ml_tcache *tcaches;
    /* statistics of threads that have exited (tc_list lock) */
    int64_t gone_allocs[2], gone_frees[2], gone_used[2], gone_requested[2];

    pthread_mutex_t meta_lock;
    ml_group_rec groups[ML_MAX_GROUPS];
    uint32_t ngroups;
    char (*tags)[ML_TAG_MAX]; /* [ML_MAX_TAGS], ID = index + 1 */
    uint32_t ntags;
    uint16_t tag_hash[ML_TAG_HASH]; /* ID, 0 = empty */

    uint64_t maintenance_cycles; /* atomic */
    uint64_t enomem;             /* atomic */

    struct ml_arena *reg_next;   /* g_registry list */
};

/* ---- helpers shared by the core's files ------------------------------------------ */

static inline uint64_t ml__load(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline uint64_t ml__load_acq(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void ml__store_rel(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline uint32_t ml__hi(uint64_t x) { return (uint32_t)(x >> 32); }
static inline uint32_t ml__idx(ml_handle h) { return (uint32_t)h.bits; }

static inline bool ml__meta_live(uint64_t m) { return (m & ML_M_STATE) != 0; }

/** Nanoseconds since the arena was created (coarse clock, ~4 ms). */
uint64_t ml__now(const ml_arena *a);
uint64_t ml__coarse_ns(void);

/** Validate h against the meta word m of its slot (bounds already checked).
 *  0 when h names the live allocation in that slot; else -EINVAL/-ESTALE. */
int ml__check(const ml_arena *a, ml_handle h, uint64_t m);
/** Bounds + tag + generation check. On success *slot is the slot and the
 *  return is 0; -EINVAL/-ESTALE otherwise. */
int ml__lookup(ml_arena *a, ml_handle h, ml_slot **slot, uint64_t *meta);

enum { ML_CLAIM_ANY = 0, ML_CLAIM_UNPINNED = 1 };
/** Claim the slot of h (set LOCKED), waiting while another thread holds it.
 *  With ML_CLAIM_UNPINNED, fails with -EBUSY when pinned. Returns 0 and the
 *  meta word seen (with LOCKED set) in *meta, or the error of ml__check. */
int ml__claim(ml_arena *a, ml_handle h, int mode, uint64_t *meta);
/** Try to claim slot idx for a move: live, unpinned, not claimed. */
bool ml__try_claim_idx(ml_arena *a, uint32_t idx, uint64_t *meta);
/** Drop a claim (keeps concurrent ACCESSED/pin updates). */
static inline void ml__unclaim(ml_arena *a, uint32_t idx)
{
    __atomic_fetch_and(&a->slots[idx].meta, ~ML_M_LOCKED, __ATOMIC_RELEASE);
}
/** Spin politely (used by every wait on a claim or a cache lock). */
void ml__pause(unsigned *spins);

/** Free a slot the caller has claimed (pins == 0). Always succeeds. */
void ml__free_claimed(ml_arena *a, uint32_t idx);
/** Allocation with everything: group (0 = none), alignment (power of 2). */
int ml__alloc(ml_arena *a, size_t size, size_t align, ml_group group, ml_handle *out);

/* thread caches (core/tcache.c) */
ml_tcache *ml__tc_get_slow(ml_arena *a);
void ml__tc_lock(ml_tcache *tc);
static inline void ml__tc_unlock(ml_tcache *tc) { __atomic_store_n(&tc->lock, 0, __ATOMIC_RELEASE); }
/** Return a cache's free blocks and slots to the lanes and the table.
 *  Caller holds tc->lock. */
void ml__tc_flush(ml_arena *a, ml_tcache *tc);
int ml__registry_add(ml_arena *a);
void ml__registry_remove(ml_arena *a);
/** Free every thread cache of a dying arena (no thread uses it any more). */
void ml__tc_destroy_all(ml_arena *a);

typedef struct ml_tls_ent {
    ml_arena *arena;
    uint64_t serial;
    ml_tcache *tc;
} ml_tls_ent;
#define ML_TLS_ENTS 8
extern __thread ml_tls_ent ml__tls[ML_TLS_ENTS];

static inline ml_tcache *ml__tc_get(ml_arena *a)
{
    ml_tls_ent *e = &ml__tls[0];
    if (__builtin_expect(e->arena == a && e->serial == a->serial, 1)) return e->tc;
    return ml__tc_get_slow(a);
}

/* handle table (core/handles.c) */
/** Take up to n free slot indices (fresh ones when the list is empty).
 *  Returns how many; 0 means the table is full. */
unsigned ml__table_take(ml_arena *a, uint32_t *out, unsigned n);
/** Give slot indices back (they must be free, not retired). */
void ml__table_put(ml_arena *a, const uint32_t *idx, unsigned n);

/* groups and tags (core/groups.c) */
int ml__group_link(ml_arena *a, uint32_t idx, ml_group g);  /* meta lock inside */
void ml__group_unlink(ml_arena *a, uint32_t idx);           /* meta lock inside */
int ml__tag_name(ml_arena *a, uint32_t tag, char *buf, size_t len);
void ml__meta_fini(ml_arena *a);

/* statistics (core/introspect.c) */
void ml__lane_usage(ml_arena *a, ml_lane lane, uint64_t *used, uint64_t *requested,
                    uint64_t *live, uint64_t *cached_blocks, uint64_t *allocs,
                    uint64_t *frees);

/* Test hooks (tests/ only). */
int ml__arena_create_with(const ml_config *cfg, const ml_prim *prim, ml_arena **out);
/** Set the next generation a free slot will issue (to test wrapping). */
int ml__test_set_next_gen(ml_arena *a, uint32_t idx, uint32_t gen);
/** Usable range of a lane (guard-page tests). */
void ml__test_lane_range(ml_arena *a, ml_lane lane, char **start, size_t *size);
/** Check every internal invariant; 0 when all hold. Stops the world. */
int ml__arena_check(ml_arena *a);

#endif
