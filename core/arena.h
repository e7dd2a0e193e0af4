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
 *   0. maintain lock     one maintenance cycle at a time (core/policy.c);
 *                        taken with nothing else held.
 *   1. slot claim        the LOCKED bit of one slot's meta word: a tiny
 *                        per-handle mutex over the stub's cold fields and the
 *                        data's location. Taken to free, move, snapshot,
 *                        read/write through the API, tag. Never held across
 *                        a callback. A thread holding a lane lock never waits
 *                        for a claim; it only tries one (and skips the slot).
 *                        A thread that waits for several claims takes them
 *                        in ascending slot order (ml__claim_many).
 *   2. g_registry        global list of live arenas (create, destroy, thread
 *                        exit, and a new thread cache retiring the least
 *                        recently used one, which can happen under claims);
 *                        core/tcache.c. Its holders never wait for a claim.
 *   3. tc_list lock      the arena's list of thread caches and the counters
 *                        of exited threads; a cache is freed only after it
 *                        is unlinked under this lock.
 *   4. (thread caches)   not a lock: a cache belongs to one thread, which
 *                        alone touches its contents; others read its
 *                        counters (relaxed atomics) under the tc_list lock and
 *                        may ask it to flush (flush_req).
 *   5. lane lock         lanes[i].lock: extents, spans, free lists, lane
 *                        statistics. Fast before slow when both are needed.
 *   6. table lock        free-slot list and table growth.
 *   7. meta lock         groups, tags (interning), group membership links.
 *
 * Leaf (nothing is taken while holding it): the events lock (the event
 * ring, core/events.c). Move reports are delivered with no lock held.
 * Outside all of them: the fork gate (core/policy.c, g_cycles_mu), taken
 * at a maintenance cycle's entry and exit with no other lock held, and
 * held by the atfork prepare handler across a fork.
 *
 * Pins are not a lock: they are a count in the meta word that forbids moving
 * and freeing. Claims and pins exclude each other as follows: a claim for a
 * move or a free needs pins == 0; a pin waits while the slot is claimed.
 *
 * ml_get takes no lock: one load of the meta word, one compare against the
 * handle, one load of the address (which only ever holds data: see "where a
 * live entry keeps its bytes" below). The meta word and the address are
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
 *   bits 32..53  generation (1..ML_GEN_MAX)
 *   bits 54..60  arena tag (1..127)
 *   bit  61      born in SlowLane
 *   bits 62..63  always 1 in a handle: in a slot's meta word they are the
 *                RESIDENT and ACCESSED bits
 * The upper half of a meta word equals the upper half of its handle exactly
 * when the handle is the live one and its data is resident and marked
 * accessed: the inline ml_get compares the two 32-bit halves and nothing
 * else. Every other check compares the identity bits (0..29 of the half).
 */
#define ML_GEN_BITS 22
#define ML_GEN_MASK ((1u << ML_GEN_BITS) - 1)
#define ML_GEN_MAX (ML_GEN_MASK - 1)  /* last generation ever issued */
#define ML_GEN_RETIRED ML_GEN_MASK
#define ML_TAG_SHIFT 22
#define ML_HI_GEN(hi) ((hi) & ML_GEN_MASK)
#define ML_HI_TAG(hi) (((hi) >> ML_TAG_SHIFT) & 0x7fu)
#define ML_HI_BORN_SLOW (1u << 29)
#define ML_HI_RESIDENT (1u << 30)
#define ML_HI_ACCESSED (1u << 31)
#define ML_HI_ID_MASK (ML_HI_RESIDENT - 1)
#define ML_HI_HANDLE (ML_HI_RESIDENT | ML_HI_ACCESSED)

/* ---- meta word (low half) ---------------------------------------------------- */
#define ML_M_STATE 0x7ull          /* ml_state of a live slot; 0 when free */
#define ML_M_NOCOMP (1ull << 3)    /* resident, and zstd found it would save
                                      less than a tenth, with no writable
                                      access since: the policies do not try
                                      again (an eviction stores it raw). A
                                      hint: set with ACCESSED cleared, so
                                      the next writable access takes the
                                      slow path, which clears it. */
#define ML_M_RESIDENT ((uint64_t)ML_HI_RESIDENT << 32) /* state is FAST or SLOW */
#define ML_M_ACCESSED ((uint64_t)ML_HI_ACCESSED << 32) /* CLOCK bit (maintenance) */
#define ML_M_LOCKED (1ull << 5)    /* claimed */
#define ML_M_GROUPED (1ull << 6)   /* member of a group (cold stub is live) */
#define ML_M_BLOB (1ull << 7)      /* data is a blob (else a block of a span) */
#define ML_M_ALIGN_SHIFT 8         /* bits 8..11: log2 of the alignment asked */
#define ML_M_ALIGN (0xfull << ML_M_ALIGN_SHIFT)
#define ML_M_REFERENCED (1ull << 12) /* read-only access since the last cycle */
#define ML_M_CLEAN (1ull << 13)    /* resident, and its swap record (cold
                                      swap_copy) still holds exactly its bytes:
                                      evicting it again writes nothing */
#define ML_M_HASCOPY (1ull << 14)  /* cold swap_copy names a swap record to
                                      release (clean, or stale once written) */
#define ML_M_TAGGED (1ull << 15)   /* cold tag holds a reference to a tag
                                      (freeing it gives the reference back) */
/* Invariant: CLEAN implies ACCESSED is clear, so the inline ml_get never
 * returns a writable pointer without the slow path clearing CLEAN first
 * (except to a get that overlaps an eviction and a read-only page-in of the
 * same handle: it read the word before them and the address after; see
 * "pointer validity" in memorylane.h). */
#define ML_M_PIN_SHIFT 16
#define ML_M_PIN_ONE (1ull << ML_M_PIN_SHIFT)
#define ML_M_PINS (0xffffull << ML_M_PIN_SHIFT)
#define ML_PIN_MAX 0xffffu

/* The hot half of a stub: 32 bytes, two per cache line. Everything that
 * alloc, free and get need is here, so they touch one line per handle.
 * meta and addr are atomics; size and created_ns are written before the
 * publishing store of meta (and size doubles as the free-list link while
 * the slot is free, under the table lock). */
typedef ml__slot ml_slot;

#define ML_NIL32 UINT32_MAX

/* The cold half of a stub: tracking that alloc and free never touch. It is
 * initialised lazily: its fields belong to generation `gen`, and for any
 * other generation of the slot they read as defaults (no tag, no group, no
 * accesses folded yet, last access = creation). Written only by the thread
 * that holds the slot's claim (or owns an unpublished slot). */
typedef struct ml_cold {
    uint32_t gen;
    uint32_t tag;          /* interned tag ID, 0 = none */
    uint32_t group;        /* ml_group, 0 = none (meta lock + claim) */
    uint32_t gprev, gnext; /* group list (meta lock) */
    uint32_t migrations;   /* moves between lanes */
    uint8_t last_from, last_to;
    uint64_t accesses;
    uint64_t last_access_ns;
    uint64_t last_migration_ns;
    uint64_t swap_copy;    /* swap record kept after a read-only page-in */
    uint64_t rec_seq;      /* sequence number of the entry's newest record
                              (pager lock + claim): an older record of the
                              same entry (a misdirected read, a lost write)
                              is refused */
    uint64_t moves;        /* data moves reported (claim): a report's seq */
} ml_cold;

/* ---- thread caches ------------------------------------------------------------ */
#define ML_TC_SLOTS 64
#define ML_TC_BLOCKS 32

/* Owned by one thread: only that thread reads or writes its slots and
 * blocks. Other threads read the counters (relaxed atomics, single writer)
 * and may set flush_req, which the owner honours on its next operation. */
typedef struct ml_tcache {
    uint32_t nslots;
    uint32_t flush_req; /* atomic */
    uint32_t npaired;   /* ML_TC_PAIRED entries in cls[].b (at most arena's paired_max) */
    uint32_t slots[ML_TC_SLOTS];
    struct ml_tcache *next, *prev; /* arena's list (tc_list lock) */
    struct ml_arena *arena;
    /* statistics of operations done by this thread: relaxed atomics */
    uint64_t allocs[2], frees[2];
    int64_t used[2], requested[2];
    struct {
        uint32_t n; /* atomic (read by statistics) */
        /* FastLane allocations and frees of this class by the fast paths
         * (relaxed atomics, single writer): statistics derive allocs, frees
         * and used bytes from them, so the fast paths count with two adds
         * (this and `requested`) instead of three. */
        uint64_t fa, ff;
        uint64_t b[ML_TC_BLOCKS]; /* span << 32 | index, or ML_TC_PAIRED | slot */
    } cls[ML_NCLASSES];
} ml_tcache;

/* A cached block freed by ml_free's fast path stays paired with the slot
 * that held it: the entry is ML_TC_PAIRED | slot index, the free slot's
 * addr still names the block and the block's owner entry the slot, so the
 * fast ml_alloc that takes it writes neither (nor pops a slot). Whoever
 * hands such an entry back to the lane (spill, flush) gives the slot back
 * too. Other entries come from the lane, without a slot, or from a fast
 * free that found `paired_max` entries paired already: slots held that way
 * are out of other threads' reach until this one flushes (or allocates
 * them), so their number is capped by a share of max_handles. */
#define ML_TC_PAIRED (1ull << 63)

/** Fold a cache's per-class fast-path counts into lane totals (FastLane):
 *  allocs, frees, and used bytes. Readers may race the owner (relaxed). */
void ml__tc_fast_counts(const struct ml_tcache *tc, int64_t *allocs, int64_t *frees, int64_t *used);

/* Single-writer counters: a plain add, published for relaxed readers. */
#define ML_TC_ADD(field, v) \
    __atomic_store_n(&(field), __atomic_load_n(&(field), __ATOMIC_RELAXED) + (v), __ATOMIC_RELAXED)

/* ---- groups and tags ----------------------------------------------------------- */
#define ML_MAX_GROUPS 4096
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
    /* Read by the inline ml_get: must stay first (ml__arena_head). */
    ml_slot *slots;
    uint64_t get_limit; /* max_handles, or 0 under ML_DEBUG_MOVES */
    uint64_t max_handles;
    /* Read on every handle check. */
    uint32_t slot_count; /* atomic: slots initialised so far */
    uint32_t tag;        /* 7-bit arena tag */
    uint64_t serial;     /* unique per arena in this process */
    uint64_t fast_max;   /* ml_alloc's fast path serves sizes 1..fast_max */
    uint32_t paired_max; /* most ML_TC_PAIRED entries a thread cache keeps */

    ml_cold *cold;
    uint64_t *locs; /* per slot: where a cold entry's record is (ml__cold_loc) */
    uint64_t fork_gen; /* the process's fork count when made (ml__inherited) */
    ml_config cfg;
    const ml_prim *prim;
    uint64_t epoch_ns;   /* creation time, CLOCK_MONOTONIC_COARSE */

    ml_lane_t lanes[2];

    pthread_mutex_t table_lock;
    uint32_t next_fresh; /* first never-used slot index */
    uint32_t free_head;  /* free-slot list through slots[].size */
    uint64_t retired;

    pthread_mutex_t tc_list_lock;
    ml_tcache *tcaches;
    /* statistics of threads that have exited (tc_list lock) */
    int64_t gone_allocs[2], gone_frees[2], gone_used[2], gone_requested[2];

    pthread_mutex_t meta_lock;
    ml_group_rec groups[ML_MAX_GROUPS];
    uint32_t ngroups;
    /* Tags (meta lock): interned names, each counted by the live handles
     * tagged with it; one no handle has any more is forgotten and its ID
     * reused. */
    char (*tags)[ML_TAG_MAX]; /* [ML_MAX_TAGS], ID = index + 1 */
    uint32_t ntags;           /* IDs ever issued (the rest are fresh); in use:
                                 ntags - ntag_free */
    uint32_t tag_refs[ML_MAX_TAGS];
    uint16_t tag_free[ML_MAX_TAGS]; /* IDs given back, to reuse */
    uint32_t ntag_free;
    uint16_t tag_hash[ML_TAG_HASH]; /* ID, 0 = empty (linear probing) */

    uint64_t maintenance_cycles; /* atomic */
    uint64_t enomem;             /* atomic */
    uint64_t promotions;         /* atomic */
    uint64_t pressure_calls;     /* atomic */

    /* Callbacks: each function and its ctx are one pair, written and read
     * together under the meta lock (ml__move_cb, ml__pressure_cb); the
     * function pointers are also peeked at without it (atomic, relaxed) to
     * skip the lock when none is set. A change applies to operations that
     * read the pair after it. */
    ml_move_fn move_fn;
    void *move_ctx;
    ml_pressure_fn pressure_fn;
    void *pressure_ctx;

    /* Background policy thread (core/policy.c). */
    pthread_t policy_thread;
    bool policy_running;
    bool policy_stop;            /* policy_lock */
    pthread_mutex_t policy_lock;
    pthread_cond_t policy_cond;
    pthread_mutex_t maintain_lock; /* one maintenance cycle at a time */

    /* Lifecycle events (core/events.c): a ring, off unless enabled. */
    int events_on;               /* atomic flag read on hot paths */
    pthread_mutex_t events_lock;
    ml_event *events;
    size_t events_cap;
    uint64_t events_seq;         /* of the last event recorded (0: none yet) */
    uint64_t events_first;       /* first sequence number the ring may hold */

    struct ml_arena *reg_next;   /* g_registry list */
    void *pager;                 /* paging/'s state, NULL without paging */
    char *swap_dir;              /* our copy of cfg.swap_dir */
    /* Debugging aids (core/debug.c): cfg.debug with the environment's
     * flags added, and their state (NULL when debug is 0). */
    unsigned debug;
    struct ml_debug *dbg;
};

/* ---- debugging aids (core/debug.c) ------------------------------------------------ */
struct ml_loc;
typedef struct ml_debug ml_debug;
/** Flags from MEMORYLANE_DEBUG ("poison", "moves", both comma-separated, or
 *  a number); 0 when unset or unreadable. */
unsigned ml__debug_env(void);
/** Set up a->dbg for a->debug (at creation, single-threaded). -ENOMEM. */
int ml__debug_init(ml_arena *a);
/** Unpoison what the quarantine holds and free a->dbg (at destroy, before
 *  the lanes are unmapped). */
void ml__debug_fini(ml_arena *a);
/** ML_DEBUG_POISON: take a place being given up (described by loc) into
 *  the quarantine instead of its lane: filled with 0xDF,
 *  poisoned for AddressSanitizer. Returns false when not in debug mode (the
 *  caller gives the place back itself). Takes the lane lock; the caller
 *  holds none. */
bool ml__debug_hold(ml_arena *a, const struct ml_loc *loc);
/** Give everything the quarantine holds back to the lanes; true if it held
 *  anything. */
bool ml__debug_drain(ml_arena *a);
/** ML_DEBUG_POISON: fill a new allocation's bytes with 0xD0. */
void ml__debug_fill_new(ml_arena *a, void *p, size_t size);
/** debug_moves and debug_quarantine_bytes of ml_stats (0 without debug). */
void ml__debug_stats(ml_arena *a, uint64_t *moves, uint64_t *held_bytes);
/** Blocks of a lane the quarantine holds (the heap check counts them). */
uint32_t ml__debug_held_blocks(ml_arena *a, ml_lane lane);
/** ML_DEBUG_MOVES: note that slot idx's address was handed out. */
void ml__debug_expose(ml_arena *a, uint32_t idx);
/** ML_DEBUG_MOVES: a relocation point. Move the exposed entries (of the
 *  lanes in lane_mask, 1 << ml_lane; all but slot `except`, UINT32_MAX for
 *  none). The caller holds no claim and no lock. */
void ml__debug_point(ml_arena *a, unsigned lane_mask, uint32_t except);
#define ML_DEBUG_ALL_LANES 3u
#define ML_DEBUG_POINT(a, mask, except)                                                  \
    do {                                                                                 \
        if (__builtin_expect((a)->debug & ML_DEBUG_MOVES, 0)) ml__debug_point((a), (mask), (except)); \
    } while (0)
#define ML_DEBUG_EXPOSE(a, idx)                                                   \
    do {                                                                          \
        if (__builtin_expect((a)->debug & ML_DEBUG_MOVES, 0)) ml__debug_expose((a), (idx)); \
    } while (0)

/* ---- helpers shared by the core's files ------------------------------------------ */

static inline uint64_t ml__load(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline uint64_t ml__load_acq(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void ml__store_rel(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline uint32_t ml__hi(uint64_t x) { return (uint32_t)(x >> 32); }
static inline uint32_t ml__idx(ml_handle h) { return (uint32_t)h.bits; }

/* The move (pressure) callback and its ctx, read as one pair under the
 * meta lock (policy.c): NULL when none is set. Called with no other lock
 * held, once per operation that reports moves (or per pressure call). */
ml_move_fn ml__move_cb(ml_arena *a, void **ctx);
ml_pressure_fn ml__pressure_cb(ml_arena *a, void **ctx);

/* ---- where a live entry keeps its bytes ----------------------------------------
 * A slot's addr only ever holds the entry's data address: while the entry
 * is cold it keeps the last one (stale: that space was released). Where a
 * cold entry's record is lives apart, in locs[]: a place in SlowLane while
 * COMPRESSED, a swap location (ml__swap_loc) while EVICTED. So the
 * unlocked ml_get, which reads the meta word and then addr, can never hand
 * out a record or a swap location: if the word it read said resident, the
 * address it reads after is one the data had at or after that moment (an
 * entry coming back stores its address before its word). locs[] is written
 * by the claim holder before the meta word says cold, and read by claim
 * holders (compaction's unclaimed look at an owner hint only counts it). */
static inline uint64_t ml__cold_loc(const struct ml_arena *a, uint32_t idx)
{
    return __atomic_load_n(&a->locs[idx], __ATOMIC_RELAXED);
}
static inline void ml__set_cold_loc(struct ml_arena *a, uint32_t idx, uint64_t loc)
{
    __atomic_store_n(&a->locs[idx], loc, __ATOMIC_RELAXED);
}
/** The lane address of what live slot idx (meta m, not EVICTED) keeps in a
 *  lane: its data while resident, its record while COMPRESSED. */
static inline uint64_t ml__lane_addr(const struct ml_arena *a, uint32_t idx, uint64_t m)
{
    return (m & ML_M_RESIDENT) ? __atomic_load_n(&a->slots[idx].addr, __ATOMIC_RELAXED) : ml__cold_loc(a, idx);
}
/** Move what claimed slot idx (meta m, not EVICTED) keeps in a lane to addr
 *  (compaction: data or a compressed record). */
static inline void ml__set_lane_addr(struct ml_arena *a, uint32_t idx, uint64_t m, uint64_t addr)
{
    if (m & ML_M_RESIDENT) __atomic_store_n(&a->slots[idx].addr, addr, __ATOMIC_RELEASE);
    else ml__set_cold_loc(a, idx, addr);
}

/** The span and block index of the FastLane block slot idx's addr names
 *  (the caller owns the slot: claimed, or freed by it and not yet reused). */
static inline void ml__fast_block_of(const struct ml_arena *a, uint32_t idx, uint32_t *span, uint32_t *bi)
{
    const ml_lane_t *l = &a->lanes[ML_LANE_FAST];
    size_t off = (size_t)(__atomic_load_n(&a->slots[idx].addr, __ATOMIC_RELAXED) -
                          (uint64_t)(uintptr_t)l->region.start);
    *span = (uint32_t)(off >> l->unit_shift); /* FastLane spans are one unit */
    *bi = ml__block_index(l, *span, off);
}

/** Hand the n cached entries b[] (see ML_TC_PAIRED) back to FastLane
 *  (caller holds its lock and owns the cache); the slots of paired ones go
 *  to paired[] (room for n). Returns how many did. */
uint32_t ml__tc_put_entries(struct ml_arena *a, const uint64_t *b, uint32_t n, uint32_t *paired);

static inline bool ml__meta_live(uint64_t m) { return (m & ML_M_STATE) != 0; }
/** The handle of the allocation whose meta word is m, in slot idx. */
static inline ml_handle ml__handle_of(uint64_t m, uint32_t idx)
{
    return (ml_handle){((uint64_t)((ml__hi(m) & ML_HI_ID_MASK) | ML_HI_HANDLE) << 32) | idx};
}
/** h names the live allocation whose meta word is m. */
static inline bool ml__same(ml_handle h, uint64_t m)
{
    uint32_t hh = ml__hi(h.bits);
    return ((hh ^ ml__hi(m)) & ML_HI_ID_MASK) == 0 && (hh & ML_HI_HANDLE) == ML_HI_HANDLE &&
           ml__meta_live(m);
}
/** Meta word of a free slot that will issue generation gen. */
static inline uint64_t ml__free_meta(const ml_arena *a, uint32_t gen)
{
    return (uint64_t)(gen | (a->tag << ML_TAG_SHIFT)) << 32;
}

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
/** Claim many handles, blocking: sorts hs by slot, drops duplicates and the
 *  handles that cannot be claimed (freed, forged), and claims the rest in
 *  ascending slot order (the one order every multi-claim uses). hs is
 *  rewritten to the claimed handles, their meta words go to metas (if not
 *  NULL, n entries). Returns how many. */
size_t ml__claim_many(ml_arena *a, ml_handle *hs, size_t n, uint64_t *metas);
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
bool ml__group_exists(ml_arena *a, ml_group g); /* takes meta_lock */

/** The cold stub of claimed slot idx (meta m), initialised for m's
 *  generation if it still holds an older one. */
ml_cold *ml__cold(ml_arena *a, uint32_t idx, uint64_t m);
/** Is this a forked child's copy of an arena its parent made? Its swap file
 *  and io_uring ring are the parent's (paging/pager.c refuses them) and its
 *  policy thread does not exist here. */
bool ml__inherited(const ml_arena *a);
/** This process's fork count (core/policy.c), for ml__inherited. */
uint64_t ml__fork_gen(void);
/** Home position of a tag name in the tag hash. */
uint32_t ml__tag_home(const char *tag);
/** Give back one reference to tag ID id (meta lock not held). */
void ml__tag_unref(ml_arena *a, uint32_t id);
/** Copy of the cold stub of claimed slot idx as seen for meta m. */
void ml__cold_peek(ml_arena *a, uint32_t idx, uint64_t m, ml_cold *out);

/** A place found in a lane for an allocation or a move. */
typedef struct ml_place {
    char *addr;
    bool blob;
    size_t bytes; /* reserved */
} ml_place;
/** ml__place flags: an internal move (may use the scratch reserve); a blob
 *  even if a size class would fit (page-aligned, page-granular: paging). */
enum { ML_PLACE_INTERNAL = 1, ML_PLACE_BLOB = 2 };
/** Find a place of `size` bytes aligned to `align` in `lane`, owned by
 *  `owner` (slot + 1); grows the lane once if needed. Takes the lane lock.
 *  0 or -ENOMEM. */
int ml__place(ml_arena *a, ml_lane lane, size_t size, size_t align, uint32_t owner, unsigned flags,
              ml_place *out);
/** Give a place back to its lane (a block or a blob). Takes the lane lock. */
void ml__release_place(ml_arena *a, ml_lane lane, char *addr, bool blob);

/** A move to report to the move callback once locks are released. */
typedef struct ml_move {
    ml_handle h;
    void *old_addr, *new_addr;
    ml_lane from, to;
    uint64_t seq; /* the entry's move number (ml_cold.moves), taken under its
                     claim; 0: not numbered (no callback was set), not reported */
} ml_move;
typedef struct ml_moves {
    ml_move *v;
    size_t n, cap;
} ml_moves;
void ml__moves_add(ml_moves *mv, const ml_move *m);
/** Call the move callback for each recorded move, then empty the list. */
void ml__moves_fire(ml_arena *a, ml_moves *mv);
/** Call the move callback for one move (none when ev->seq is 0). No lock
 *  or claim held. */
void ml__fire_move(ml_arena *a, const ml_move *ev);
/** The next move number of claimed slot idx (meta m): 0, and none taken,
 *  when no move callback is set (moves are numbered only to be reported). */
uint64_t ml__next_seq(ml_arena *a, uint32_t idx, uint64_t m);
/** The report of claimed slot idx's page-in: it was cold with its data
 *  last at `old` (the slot's stale address), and is resident now (meta m).
 *  False, with nothing numbered, when no move callback is set. */
bool ml__pagein_report(ml_arena *a, uint32_t idx, uint64_t m, uint64_t old, ml_move *ev);

/** Move claimed slot idx (pins 0) to lane `to` with size new_size
 *  (realloc) or its own size; copies, rewrites the stub, frees the old
 *  place, records history. No lock held by the caller. 0 or -ENOMEM. */
int ml__move_claimed(ml_arena *a, uint32_t idx, ml_lane to, size_t new_size, bool internal,
                     ml_move *ev);
/** FastLane is full: migrate the live entries of its oldest span to
 *  SlowLane. Returns how many moved (0: nothing could). */
int ml__make_room_fast(ml_arena *a);
/** A placement failed although free space may exist in pieces: compact the
 *  lane. Returns bytes moved or released (0: nothing to gain). */
int ml__compact_for_room(ml_arena *a, ml_lane lane);
/** SlowLane has no place for `size` bytes: let paging move cold blobs out
 *  (over the scratch reserve). Returns bytes freed, or 1 when none were but
 *  the lane has room now (made by another thread meanwhile): non-zero means
 *  "place again". 0 without paging. */
size_t ml__slow_make_room(ml_arena *a, size_t size);

/* True when SlowLane could not hold an entry of `size` bytes even empty
 * and grown to its maximum, its scratch reserve left free: no remedy can
 * make room for it, so callers fail at once instead of evicting and
 * compacting everything first. */
bool ml__slow_never_holds(const ml_arena *a, size_t size);
/** Stop and join the policy thread, if running. */
void ml__policy_stop(ml_arena *a);
int ml__policy_start(ml_arena *a);

/** Adjust this thread's usage counters of a lane (bytes reserved in the
 *  lane, bytes requested by the program) when an entry changes place. */
void ml__account(ml_arena *a, ml_lane lane, int64_t used, int64_t requested);

/** Record an event (call only when events_on: see ML_EVENT_ON). */
void ml__event(ml_arena *a, ml_event_kind kind, ml_handle h, uint64_t bytes, uint64_t count,
               ml_lane from, ml_lane to);
#define ML_EVENT_ON(a) __builtin_expect(__atomic_load_n(&(a)->events_on, __ATOMIC_RELAXED), 0)
void ml__events_fini(ml_arena *a);

/** Bring claimed slot idx (meta m) back into SlowLane if it is cold.
 *  read_only: keep the swap record as a clean copy. */
int ml__page_in_claimed(ml_arena *a, uint32_t idx, uint64_t m, bool read_only);
/** Claim h and make it resident: page it in if cold, and if no place can
 *  be found, give the claim back, compact SlowLane once and try again. On
 *  0 the claim is held and *m is the meta word. -EINVAL, without paging
 *  anything in, when [offset, offset + len) is not inside the entry (pass
 *  0, 0 for no range). read_only: keep the swap record as a clean copy.
 *  pagein (may be NULL): the page-in's move report, for the caller to fire
 *  (ml__fire_move) once it holds no claim; its seq is 0 when there is none
 *  (it was resident, or no move callback is set). */
int ml__claim_resident(ml_arena *a, ml_handle h, bool read_only, size_t offset, size_t len, uint64_t *m,
                       ml_move *pagein);

/** Where a block or blob lives (the data of a resident entry, the record of
 *  a compressed one), derived from its lane address (ml__lane_addr). */
typedef struct ml_loc {
    ml_lane lane;
    bool blob;
    uint32_t span;  /* first unit of the span or blob */
    uint32_t index; /* block index (spans) */
    unsigned cls;   /* size class (spans) */
    size_t bytes;   /* bytes reserved: class size or blob extent */
} ml_loc;
/** Of live slot idx with meta m (not EVICTED). Caller holds the claim, or
 *  otherwise owns the slot. */
void ml__locate(ml_arena *a, uint32_t idx, uint64_t m, ml_loc *out);

/* thread caches (core/tcache.c) */
ml_tcache *ml__tc_get_slow(ml_arena *a);
/** Return the calling thread's cache contents to the lanes and the table. */
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
/* initial-exec: the library's TLS sits in the static TLS block, so the fast
 * paths of a shared libmemorylane.so reach their cache with one
 * %fs-relative load instead of a call to __tls_get_addr (what mimalloc and
 * jemalloc do too). The block is small (200 bytes), so a dlopen'ed copy
 * still fits in glibc's static TLS surplus. */
#define ML_TLS __thread __attribute__((tls_model("initial-exec")))
extern ML_TLS ml_tls_ent ml__tls[ML_TLS_ENTS];

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
                    int64_t *live, uint64_t *cached_blocks, uint64_t *allocs,
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
