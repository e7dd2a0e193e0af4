/*
 * memorylane.h — memory behind stable, generation-checked handles.
 *
 * MemoryLane hands out memory as handles (ml_handle) instead of raw
 * pointers. Every access goes through the handle, so the library may move
 * the memory behind it: compact a fragmented lane, migrate an object from the
 * small-object FastLane to the large-object SlowLane, compress a cold blob
 * or write it to disk, and bring it back on the next access.
 *
 * Life cycle:  ml_config_init -> (set fields) -> ml_arena_create -> use ->
 *              ml_arena_destroy.
 *
 * ---------------------------------------------------------------------------
 * Errors
 * ---------------------------------------------------------------------------
 * Every function that can fail returns 0 (or a non-negative count where its
 * comment says so) or a negative errno value. The global errno is never
 * used, and nothing is ever printed. ml_strerror() names every code:
 *
 *   -EINVAL     bad argument, invalid configuration, or a handle that was
 *               never issued by this arena (forged, random, foreign, NULL)
 *   -ESTALE     the handle was issued by this arena but has been freed
 *   -ENOMEM     no room, even after failover, growth, migration, eviction
 *               and compaction (and the pressure callback, where set); all
 *               max_handles handles live; or no memory for the library's
 *               own buffers and bookkeeping
 *   -EBUSY      the handle is pinned (free, move, eviction), or a resource
 *               is in use (a group still being filled, a mount point)
 *   -EOVERFLOW  a counter would overflow (too many pins on one handle)
 *   -ENOENT     no such name or ID (groups, ml_handle_from_id)
 *   -EEXIST     a group of that name exists already
 *   -ENOSPC     a fixed table is full (groups, tags), or the swap budget
 *               (swap_size) or the swap file's disk is full     (paging)
 *   -EALREADY   the entry is already where it was asked to go (migration,
 *               paging)
 *   -EMSGSIZE   the data does not compress: zstd saves less than a tenth
 *               of it (ml_compress; before 0.4, -EALREADY)
 *   -EIO        an I/O operation failed                         (paging)
 *   -EBADMSG    a record read back from disk is corrupted/stale  (paging)
 *
 * Codes passed on from the system: paging passes on what opening the swap
 * file and the I/O engine returns (-EACCES, -ENOENT, -ENOTDIR, -EROFS,
 * -EMFILE for swap_dir; -ENOSYS, -EPERM where io_uring is refused), and a
 * failed read or write may return the system's code instead of -EIO (a
 * full disk: -ENOSPC); ml_arena_create passes on what checking a swap_dir
 * it is given returns. The debug view (debugfs.h) passes on mount errors
 * (-EPERM, -EACCES, -ENOENT, -ENOTDIR, -ENODEV) and refuses a mount point
 * that is not empty (-ENOTEMPTY).
 *
 * The functions that return a pointer to a handle's data and can fail
 * return NULL and have a try_ twin that returns the code (ml_get /
 * ml_try_get, ml_get_ro / ml_try_get_ro). ml_get_sized and ML_GET_T have
 * none: ml_try_get tells why a handle failed, ml_handle_info_get its size.
 *
 * ---------------------------------------------------------------------------
 * Thread safety
 * ---------------------------------------------------------------------------
 * Every function may be called from any number of threads at once on the
 * same arena, except ml_arena_destroy, which must be the last call on that
 * arena (no other call may be running or start afterwards). Operations on
 * one handle are serialised by the library; two threads freeing the same
 * handle get 0 and -ESTALE. Touching the *bytes* of one allocation from
 * several threads is, as with malloc, the program's business. A few
 * functions have a finer rule (callbacks, ml_debugfs_unmount): their
 * comments say so.
 *
 * fork(): a child may go on using an arena its parent made only if no
 * thread of the program was inside the library at the fork (as for any
 * library with locks; the library holds its own policy threads out of
 * their cycles across a fork, but not the debug view's threads: unmount it
 * first), and then only its memory: the swap file and the io_uring ring
 * stay the parent's, so in the child everything that needs them fails with
 * -ENOTSUP (evicting; bringing back an evicted entry; ml_read of one,
 * unless a copy of it is cached) while resident and compressed entries
 * work on in the child's copy; ml_arena_destroy there releases the copy
 * without touching the parent's I/O or its policy thread. Not from inside
 * a move or pressure callback. The parent is not affected.
 *
 * ---------------------------------------------------------------------------
 * Pointer validity (the one rule)
 * ---------------------------------------------------------------------------
 * A pointer returned by ml_get, ml_try_get, ml_get_ro, ml_try_get_ro,
 * ml_get_sized or ML_GET_T is valid until the next *relocation point* in
 * the arena, in any thread. Relocation points are:
 *   - ml_maintain, ml_compact, ml_compact_step and ml_migrate_all;
 *   - ml_migrate, ml_realloc, ml_evict, ml_evict_many and ml_compress, for
 *     the handles they name (and for others, as below);
 *   - the arena's background policy thread, when policy_check_interval_ms
 *     is non-zero (it may relocate at any moment: with it running, use pins
 *     for any pointer you keep);
 *   - an allocation (ml_alloc, ml_alloc_aligned, ml_alloc_zeroed,
 *     ml_alloc_ex, ml_group_alloc) that finds
 *     its lane full: before it gives up it may migrate FastLane's oldest
 *     entries to SlowLane, compact either lane, and compress or evict cold
 *     SlowLane blobs (and it calls the pressure callback, where set). A
 *     full FastLane is enough, however empty SlowLane is (migrate_on_full):
 *     in a program with several threads, any thread's small allocation may
 *     move entries other threads hold unpinned pointers to;
 *   - ml_realloc that finds SlowLane full: it may compress or evict other
 *     cold blobs;
 *   - any access that brings a cold handle back (ml_get, ml_try_get,
 *     ml_get_ro, ml_try_get_ro, ml_get_sized, ML_GET_T, ml_pin, ml_pin_ro,
 *     ml_write, ml_realloc, ml_migrate to FastLane), and ml_prefetch: to
 *     make room they may compress or evict other SlowLane blobs and compact
 *     SlowLane.
 * A pointer from ml_pin stays valid, in every thread, until the matching
 * ml_unpin: relocation skips pinned entries, and a move claims its entry
 * atomically before copying, so a write through a pinned pointer is never
 * lost. A pin taken while an entry is being moved waits for the move and
 * returns the new location. ml_free of a pinned handle fails with -EBUSY.
 * Once freed, a handle never becomes valid again (see ml_handle).
 * A call that overlaps a relocation or a free of the same handle in another
 * thread (ml_get and its kin above) can succeed and return a pointer that
 * is already invalid when it returns: the entry's old place; its new place
 * while the library still counts the entry unmodified since a read-only
 * page-in (a write through it can be lost at the next eviction); after a
 * free, the place of whatever the slot holds next. A pointer got just
 * before the overlap would be invalid a moment later all the same, so the
 * library does not spend time on the hot path to narrow that window: a
 * program whose gets may overlap relocations of the same handle must pin
 * (with the policy thread running, any get may).
 * To find pointers kept too long: ML_DEBUG_MOVES (ml_config.debug, or the
 * environment's MEMORYLANE_DEBUG=moves) moves, at every relocation point,
 * every entry whose address was handed out, and poisons the old place; see
 * "Debugging pointer mistakes" at ml_config.
 */
#ifndef MEMORYLANE_H
#define MEMORYLANE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define ML_API __attribute__((visibility("default")))
#else
#define ML_API
#endif

#define ML_VERSION_MAJOR 0
#define ML_VERSION_MINOR 7
#define ML_VERSION_PATCH 0

/** Library version as "MAJOR.MINOR.PATCH" (the ML_VERSION_* macros of the
 *  header it was built with). Before 1.0 a minor version may change the
 *  API: 0.2 added seq to ml_move_fn; 0.3 reports page-ins as moves and
 *  numbers only the moves it reports; 0.4 added ml_alloc_ex and returns
 *  -EMSGSIZE, not -EALREADY, from ml_compress for data that does not
 *  compress. Thread-safe. */
ML_API const char *ml_version(void);

/* ========================================================================= */
/* Handles                                                                   */
/* ========================================================================= */

/**
 * A handle: a 64-bit value naming one allocation in one arena.
 *
 * Copy it, store it, compare it with ml_handle_eq. Its bits encode a slot
 * index, the slot's generation, a tag of the issuing arena and the lane the
 * allocation was born in. A handle is checked on every use: a freed handle
 * (-ESTALE), a handle of another arena, a forged or random value (-EINVAL)
 * is rejected, never dereferenced. When a slot's generation would wrap, the
 * slot is retired for good, so a stale handle can never become valid again.
 * Handles from another arena are caught by a 7-bit arena tag: arenas alive
 * at the same time have different tags while there are at most 127 of
 * them (a new arena takes the next tag in turn that no live arena has).
 * Beyond that, two arenas may share a tag, and only the generation check
 * still tells their handles apart.
 *
 * Layout, which this major version keeps: bits 0-31 slot index, 32-53
 * generation, 54-60 arena tag, 61 born in SlowLane, and bits 62 and 63
 * always set in an issued handle. So a 64-bit word with either top bit
 * clear is never a handle: a program that stores handles beside other
 * values (an interpreter's tagged words) can tell them apart by those two
 * bits (ML_HANDLE_MARK_BITS). No bit of an issued handle is free for the
 * program's own use.
 */
#define ML_HANDLE_MARK_BITS 0xC000000000000000ull
typedef struct ml_handle {
    uint64_t bits;
} ml_handle;

/** A group ID; 0 (ML_GROUP_NONE) means "no group". */
typedef uint32_t ml_group;
#define ML_GROUP_NONE ((ml_group)0)

/** The null handle: never valid. ml_alloc never returns it. */
#ifdef __cplusplus
#define ML_HANDLE_NULL (ml_handle{0})
#else
#define ML_HANDLE_NULL ((ml_handle){0})
#endif

/** True when h is the null handle. */
static inline bool ml_handle_is_null(ml_handle h) { return h.bits == 0; }

/** True when a and b are the same handle (same slot and generation). */
static inline bool ml_handle_eq(ml_handle a, ml_handle b) { return a.bits == b.bits; }

/**
 * The handle's public ID: positive for handles born in FastLane, negative
 * for handles born in SlowLane, never 0 for a non-null handle (0 for
 * ML_HANDLE_NULL). The ID names a slot, so it is unique among the live
 * handles of an arena and names the handle's folder in the debug view; it
 * is reused after the handle is freed (the generation is not). Pure
 * function of the bits: thread-safe, no arena needed.
 */
ML_API int64_t ml_handle_id(ml_handle h);

/** Generation of the handle: 1..2^22-2 (4194302) for an issued handle, 0
 *  for the null handle. A slot that has issued the last generation is
 *  retired (see ml_handle). Pure function of the bits: thread-safe. */
ML_API uint32_t ml_handle_generation(ml_handle h);

/** Where a handle's data is. */
typedef enum ml_state {
    ML_STATE_INVALID = 0,    /**< never issued by this arena */
    ML_STATE_FAST = 1,       /**< resident in FastLane */
    ML_STATE_SLOW = 2,       /**< resident in SlowLane */
    ML_STATE_COMPRESSED = 3, /**< cold, compressed in RAM (paging) */
    ML_STATE_EVICTED = 4,    /**< cold, compressed on disk (paging) */
    ML_STATE_FREED = 5,      /**< issued, then freed: the handle is stale */
} ml_state;

/** Lower-case name of a state ("fast", "slow", "compressed", "evicted",
 *  "freed", "invalid"); "unknown" for other values. Thread-safe. */
ML_API const char *ml_state_name(ml_state s);

/** The two lanes. */
typedef enum ml_lane {
    ML_LANE_FAST = 0, /**< small, short-lived objects: size classes */
    ML_LANE_SLOW = 1, /**< long-lived and large objects: blocks + blobs */
} ml_lane;

/** "fast" or "slow" ("unknown" otherwise). Thread-safe. */
ML_API const char *ml_lane_name(ml_lane l);

/* ========================================================================= */
/* Configuration                                                             */
/* ========================================================================= */

/**
 * Arena configuration. Always start from ml_config_init(), then change the
 * fields you care about: later versions add fields, and init gives each
 * a sensible default. Sizes are in bytes. The limits given on each field
 * are those ml_config_check (and ml_arena_create) enforce; the paging
 * fields' limits are checked only when enable_paging is true.
 */
typedef struct ml_config {
    /** FastLane usable size at creation (rounded up to its span size).
     *  > 0, and at most 1 TiB when fast_lane_max_size is 0. Default 16 MiB. */
    size_t fast_lane_size;
    /** Most FastLane may grow to, inside its reservation; 0 = never grows
     *  past fast_lane_size. 0, or fast_lane_size..1 TiB. ml_arena_config
     *  reports the effective value (fast_lane_size, rounded, for 0).
     *  Default 0. */
    size_t fast_lane_max_size;
    /** SlowLane usable size at creation (rounded up to 64 KiB). This is
     *  also the paging memory budget. At least 64 KiB, and at most 1 TiB
     *  when slow_lane_max_size is 0. Default 64 MiB. */
    size_t slow_lane_size;
    /** Most SlowLane may grow to; 0 = never grows past slow_lane_size. 0,
     *  or slow_lane_size..1 TiB. No allocation may be larger (-EINVAL).
     *  ml_arena_config reports the effective value (slow_lane_size,
     *  rounded, for 0). Default 0. */
    size_t slow_lane_max_size;
    /** Allocations of at most this many bytes go to FastLane, larger ones
     *  to SlowLane. 16..65536. Default 4096. */
    size_t threshold;
    /** When FastLane is full, place small allocations in SlowLane instead
     *  of failing (the handle is then born in SlowLane). Default true. */
    bool failover_to_slow;
    /** mlock() both lanes so the kernel never pages them out behind the
     *  library's back (needs RLIMIT_MEMLOCK room). Default false. */
    bool lock_lanes;
    /** Run compaction from ml_maintain/the policy thread when a lane's
     *  fragmentation or reclaimable span bytes pass
     *  compaction_threshold. Default true. */
    bool enable_auto_compaction;
    /** Auto-compaction starts a pass on a lane when either measure passes
     *  this fraction, 0 < x <= 1. Default 0.5.
     *  - Fragmentation (see ml_lane_stats): how free space is split, 1 -
     *    largest free range / free bytes. A large free range (a lane sized
     *    well above its use) keeps it low however empty the spans are.
     *  - Reclaimable span bytes (ml_lane_stats.reclaimable) over the bytes
     *    in spans: what a garbage collector's sweep leaves behind, blocks
     *    freed all over. Counted above what the last pass could not empty
     *    (pinned entries, blocks in thread caches), which is forgotten
     *    after a second, so a pass that cannot gain is not started every
     *    cycle.
     *  Either way at least 1% of the lane (and 4 of its units) must be at
     *  stake. To give back spans a smaller sweep emptied, call ml_compact
     *  or ml_compact_step yourself. */
    double compaction_threshold;
    /** SlowLane usage fraction (used / capacity) above which cold blobs are
     *  compressed/evicted, 0 < x <= 1, and x + slow_lane_safety_margin
     *  <= 1. Default 0.85. */
    double slow_lane_usage_threshold;
    /** Fraction of SlowLane kept free as scratch room for compaction and
     *  migration, 0 <= x < 0.5, and slow_lane_usage_threshold + x <= 1.
     *  Default 0.10. */
    double slow_lane_safety_margin;
    /** Period of the background policy thread in milliseconds; 0 = no
     *  thread (policies run only from ml_maintain). Default 0. */
    uint32_t policy_check_interval_ms;
    /** Most live handles the arena can hold (table reserved, committed as
     *  it fills). 1024..2^30. Default 2^24. Freed handles' slots wait in
     *  the freeing thread's cache for reuse (up to 64, plus up to
     *  max_handles / 256, at least 64, kept with their FastLane blocks); a
     *  thread that finds the table full takes its own back, but not other
     *  threads' until they allocate, flush or exit, so leave that much
     *  headroom per thread. */
    size_t max_handles;

    /* ---- relocation (compaction, migration, policies) ---- */
    /** Entries older than this many milliseconds are promoted from FastLane
     *  to SlowLane by maintenance; 0 = never by age. Default 0. */
    uint32_t promote_age_ms;
    /** When FastLane cannot place a small allocation, first migrate its
     *  oldest entries to SlowLane to make room (before failing over).
     *  Default true. */
    bool migrate_on_full;
    /** Time budget of the compaction work one maintenance cycle may do, in
     *  microseconds; 0 = compact fully when triggered. Default 2000. */
    uint32_t compaction_budget_us;

    /* ---- paging (cold SlowLane blobs: compressed in RAM, or on disk) ---- */
    /** Compress and evict cold SlowLane blobs instead of failing when
     *  SlowLane is full. Nothing is created (no file, no ring) until the
     *  first eviction. Default true. */
    bool enable_paging;
    /** Directory of the swap file; NULL = $TMPDIR, else /var/tmp. The file
     *  is private and unnamed (O_TMPFILE, else created and unlinked at
     *  once): nothing is left behind, even after a crash. The arena keeps
     *  its own copy of the string. Default NULL. */
    const char *swap_dir;
    /** Most bytes the swap file may hold; when full, eviction stops (and
     *  says so in ml_paging_stats.budget_full): an entry whose record has
     *  found no room, with no clean copy left to give up, is refused at
     *  once with -ENOSPC, without being compressed again, for up to a
     *  second while the file's largest free run stays shorter than that
     *  record (other entries are tried as usual). At least 1 MiB and below
     *  4 TiB (checked only with paging on). Default 1 GiB. */
    size_t swap_size;
    /** zstd level, 1 (fast) .. 19 (small) (checked only with paging on).
     *  Default 1. */
    int zstd_level;
    /** A blob not accessed for this many milliseconds is cold: maintenance
     *  compresses or evicts it. 0 = only under pressure. Default 0. */
    uint32_t cold_after_ms;
    /** Under pressure, evict until SlowLane usage is this far below
     *  slow_lane_usage_threshold (hysteresis),
     *  0 <= x < slow_lane_usage_threshold (checked only with paging on).
     *  Default 0.10. */
    double evict_hysteresis;
    /** Most I/O requests in flight, 1..4096 (checked only with paging on).
     *  Default 32. */
    uint32_t io_queue_depth;
    /** Open the swap file with O_DIRECT (falls back to buffered I/O where
     *  the filesystem refuses it). Default true. */
    bool direct_io;
    /** Use the in-RAM compressed stage: cold blobs are first compressed
     *  into a smaller SlowLane record (like zswap) and go to disk only under
     *  further pressure. false = straight to disk. Default true. */
    bool compressed_stage;
    /** I/O engine: 0 auto (io_uring, else pread/pwrite), 1 io_uring only,
     *  2 pread/pwrite (checked only with paging on). Default 0. It runs the
     *  batches (eviction, ml_prefetch). A lone read that its thread waits
     *  for (a page-in on access, ml_read of a cold blob) uses pread, which
     *  answers sooner at queue depth 1, except with 1. An engine that fails
     *  as a whole is replaced by a fresh one of the same kind, or, if none
     *  can be opened, by pread/pwrite even with 1 (the paging statistics'
     *  `engine` says which runs the batches). Under valgrind use 2:
     *  valgrind cannot see what io_uring reads into memory and reports
     *  every byte of a record read that way as uninitialised. */
    int io_engine;
    /** Blobs smaller than this stay resident (not worth an I/O): the
     *  policies and ml_evict_many skip them (ml_evict and ml_compress do
     *  not). Bytes, >= 4096 (checked only with paging on). Default 16 KiB. */
    size_t min_evict_size;

    /* ---- debugging ---- */
    /** Debugging aids, ML_DEBUG_* flags (see "Debugging pointer mistakes"
     *  below); the environment variable MEMORYLANE_DEBUG adds to them at
     *  ml_arena_create. For finding bugs, not for production: they slow
     *  every call down. Unknown bits are -EINVAL. Default 0. */
    unsigned debug;
} ml_config;

/**
 * ---------------------------------------------------------------------------
 * Debugging pointer mistakes
 * ---------------------------------------------------------------------------
 * Two mistakes go unnoticed with a moving allocator until memory runs short:
 * using a pointer after a relocation point (see "Pointer validity"), and
 * using a pointer after ml_free. These flags make both show at once.
 *
 * ML_DEBUG_POISON: a freed entry's place, and the old place of every entry
 * the library moves with a copy (migration, ml_realloc, compression,
 * eviction, the moves below; not compaction's slides, whose old places are
 * mostly other entries' new ones), is filled with 0xDF bytes and held back from reuse (a quarantine of up
 * to an eighth of each lane, at least 256 KiB; the oldest go back first,
 * and all of it when an allocation finds no room). In a program built with
 * -fsanitize=address, the held places are also poisoned, so a read or write
 * through a stale pointer stops the program with AddressSanitizer's
 * "use-after-poison" report and the stack of the access (this needs no
 * special build of the library: it finds AddressSanitizer's interface at
 * run time). New allocations that are not zeroed are filled with 0xD0, so
 * reading bytes never written is not hidden by whatever was there before.
 * Thread caches are off, so every allocation and free takes the shared
 * path. ml_stats_get counts held places as free (used and requested leave
 * them out), although nothing is placed there until they go back (their
 * total is debug_quarantine_bytes); the lane maps show them as blobs with
 * no ID, or in their spans' used blocks.
 *
 * ML_DEBUG_MOVES (implies ML_DEBUG_POISON): every relocation point moves
 * every entry whose address was handed out (ml_get and its kin, ml_pin
 * once unpinned, ml_alloc_ex's ptr) since its last move, as if memory
 * were short at each of them: every allocation, the explicit relocation
 * calls, and, with paging on, every access to a SlowLane blob (which moves
 * the other SlowLane entries, as bringing a cold blob back may);
 * ml_realloc also moves the entry it resizes, even when the new size fits
 * its place. A pointer kept across one then points at poisoned bytes.
 * Pinned entries stay
 * (they move after ml_unpin, at the next relocation point); an entry
 * another thread holds at that moment, or for which its lane has no room,
 * stays too, and is tried again at the next point. A relocation point
 * reached from the move callback of another (on the same thread) moves
 * nothing. ml_get never takes its
 * inline fast path. The move callback hears every move, with old and new
 * address. A program correct only because it knows its arena never
 * fills, or that no handle is ever cold, will fail under this flag: that
 * is what it is for. ml_stats_get counts the moves (debug_moves).
 *
 * MEMORYLANE_DEBUG takes "poison", "moves" or "poison,moves" (or a
 * number: the flags), and is read by every ml_arena_create.
 */
#define ML_DEBUG_POISON 0x1u
#define ML_DEBUG_MOVES 0x2u

/** Fill cfg with the defaults listed above (NULL is ignored). Thread-safe:
 *  it touches nothing but *cfg. */
ML_API void ml_config_init(ml_config *cfg);

/**
 * Check a configuration without creating an arena.
 * @param cfg     the configuration (NULL is refused).
 * @param reason  if not NULL, receives a static, human-readable sentence
 *                naming the first problem found, or NULL when valid.
 * @return 0 when valid, -EINVAL otherwise. Thread-safe.
 */
ML_API int ml_config_check(const ml_config *cfg, const char **reason);

/* ========================================================================= */
/* Arena                                                                     */
/* ========================================================================= */

typedef struct ml_arena ml_arena;

/**
 * Create an arena: reserves both lanes (with guard pages) and the handle
 * table, commits the initial lane sizes.
 * @param cfg  configuration; NULL means all defaults.
 * @param out  receives the arena; untouched on failure.
 * @return 0; -EINVAL (cfg invalid: ml_config_check tells why; out NULL),
 *         -ENOMEM (address space or memory unavailable, mlock refused);
 *         with paging on and swap_dir set, -ENOENT, -ENOTDIR, -EACCES,
 *         -EROFS, -EPERM (or what else creating a file there returned)
 *         when swap_dir is not a directory this process may create files
 *         in (checked now, by making a swap file there and closing it at
 *         once, so that a typo fails here rather than at the first
 *         eviction; the default directory is not checked).
 * Thread-safe.
 */
ML_API int ml_arena_create(const ml_config *cfg, ml_arena **out);

/**
 * Destroy an arena and every allocation in it; all its handles become
 * invalid. Stops the policy thread. NULL is ignored. Not thread-safe: it
 * must be the last call on the arena, with no other call running (in any
 * thread, the policy thread's callbacks included) or starting afterwards.
 * Unmount any debug view of the arena first (debugfs.h).
 */
ML_API void ml_arena_destroy(ml_arena *arena);

/**
 * Copy the configuration the arena runs with into out: the effective
 * values, with sizes rounded and a maximum of 0 replaced by the lane's
 * (rounded) initial size. out->swap_dir points to the arena's own copy
 * (valid until ml_arena_destroy).
 * @return 0; -EINVAL if an argument is NULL. Thread-safe.
 */
ML_API int ml_arena_config(const ml_arena *arena, ml_config *out);

/* ========================================================================= */
/* Allocation                                                                */
/* ========================================================================= */

/**
 * Allocate size bytes, aligned to 16 bytes (or to the size's natural class
 * alignment). Sizes <= cfg.threshold go to FastLane, larger to SlowLane.
 * The memory is not zeroed.
 * @param out  receives the handle; untouched on failure.
 * @return 0; -EINVAL (arena or out NULL, size 0, size larger than the
 *         effective slow_lane_max_size: slow_lane_size, rounded, when that
 *         field is 0; see ml_arena_config), -ENOMEM (no room, or
 *         max_handles handles live; also, at once, without making room
 *         or calling the pressure callback, for a size that SlowLane could
 *         not hold even empty and at slow_lane_max_size, its scratch
 *         reserve, slow_lane_safety_margin, left free).
 * Thread-safe. A relocation point when its lane is full (see the top of
 * this header); it may then call the pressure callback.
 */
ML_API int ml_alloc(ml_arena *arena, size_t size, ml_handle *out);

/**
 * Like ml_alloc, with the data zeroed (as calloc). The bytes are zero
 * before the handle exists, so no other thread (the debug view, an
 * eviction) sees them otherwise.
 * @return as ml_alloc. Thread-safe; a relocation point when the arena is
 *         full, as ml_alloc.
 */
ML_API int ml_alloc_zeroed(ml_arena *arena, size_t size, ml_handle *out);

/**
 * Like ml_alloc, with the data aligned to align bytes: any power of two
 * from 1 up to the page size (4096). The alignment is kept whenever the
 * data moves.
 * @return as ml_alloc; -EINVAL also when align is 0, not a power of two or
 *         larger than the page size.
 * Thread-safe; a relocation point when its lane is full, as ml_alloc.
 */
ML_API int ml_alloc_aligned(ml_arena *arena, size_t size, size_t align,
                            ml_handle *out);

/** ml_alloc_ex flags. */
#define ML_ALLOC_ZEROED 0x1u /**< zero the bytes, as ml_alloc_zeroed */
#define ML_ALLOC_PINNED 0x2u /**< hand the handle out pinned (see below) */

/**
 * Allocate with every option at once (as jemalloc's mallocx): alignment,
 * group, zeroing and pinning.
 *
 * ML_ALLOC_PINNED hands the handle out already pinned once (as by ml_pin),
 * with *ptr valid until the matching ml_unpin. This is how to fill a new
 * allocation while relocations may run (the policy thread, other threads'
 * allocations on a full arena): with ml_alloc then ml_pin, the new entry
 * can be moved, compressed or evicted between the two calls, and an
 * eviction of a blob nobody has written yet is wasted I/O. A pinned entry
 * is never relocated, so unpin it when it is filled; ml_free of it fails
 * with -EBUSY until then.
 *
 * @param size   bytes, as ml_alloc.
 * @param align  0 for the default (16), or a power of two up to the page
 *               size (4096), as ml_alloc_aligned.
 * @param group  ML_GROUP_NONE, or the group to allocate into (as
 *               ml_group_alloc).
 * @param flags  0 or an OR of ML_ALLOC_ZEROED and ML_ALLOC_PINNED.
 * @param out    receives the handle; untouched on failure.
 * @param ptr    NULL, or receives the data's address (NULL on failure).
 *               Without ML_ALLOC_PINNED it is valid until the next
 *               relocation point, as a pointer from ml_get.
 * @return 0; as ml_alloc (-EINVAL, -ENOMEM); -EINVAL also for an align
 *         that is not 0 or a power of two up to 4096, and for unknown
 *         flags; -ENOENT when the group does not exist (or is destroyed
 *         meanwhile: nothing is allocated). On failure nothing is
 *         allocated and nothing is pinned.
 * Thread-safe; a relocation point when its lane is full, as ml_alloc.
 */
ML_API int ml_alloc_ex(ml_arena *arena, size_t size, size_t align,
                       ml_group group, unsigned flags, ml_handle *out,
                       void **ptr);

/**
 * Free an allocation. The handle (and every copy of it) becomes stale.
 * @return 0; -EINVAL (never issued / foreign / null handle, arena NULL),
 *         -ESTALE (already freed), -EBUSY (pinned: nothing is freed).
 * Thread-safe: of two concurrent frees of one handle, one gets 0.
 */
ML_API int ml_free(ml_arena *arena, ml_handle h);

/* ========================================================================= */
/* Access                                                                    */
/* ========================================================================= */

/**
 * Pointer to the handle's data, or NULL when the handle is not valid (see
 * ml_try_get for the reason). A cold (compressed/evicted) handle is brought
 * back first (a relocation point for other SlowLane blobs). The pointer is
 * valid until the next relocation point (see the top of this header).
 * Marks the handle accessed (for age/idle policies).
 * Thread-safe. Fast: an inline check of the slot's generation.
 */
ML_API void *ml_get(ml_arena *arena, ml_handle h);

/**
 * ml_get that says why.
 * @param out  receives the pointer (NULL on failure).
 * @return 0; -EINVAL (never issued, foreign, null; arena or out NULL),
 *         -ESTALE (freed), -ENOMEM/-EIO/-EBADMSG (a cold handle could not
 *         be brought back: it stays cold and intact; -ENOMEM only after
 *         eviction and one SlowLane compaction found no place for it),
 *         -ENOTSUP (an evicted handle, in a forked child: see fork at the
 *         top).
 * Thread-safe; like ml_get, a relocation point when it brings a cold
 * handle back.
 */
ML_API int ml_try_get(ml_arena *arena, ml_handle h, void **out);

/**
 * Read-only access: like ml_get / ml_try_get, but the program promises not
 * to write through the pointer. It lets paging keep a brought-back blob's
 * swap record as a clean copy, so that evicting it again (unmodified) writes
 * nothing: for read-mostly data this makes paging several times cheaper. Any
 * writable access (ml_get, ml_try_get, ml_pin, ml_write) ends the copy.
 * A copy is a cache: its swap space goes back when the entry is evicted
 * again, moved or freed, or when an eviction finds the swap budget full
 * (copies written over first, then clean ones: ml_paging_stats
 * copies_reclaimed), so copies never make an eviction fail.
 * Counts as an access. ml_try_get_ro returns the codes of ml_try_get.
 * Thread-safe; pointer validity and relocation as for ml_get.
 */
ML_API const void *ml_get_ro(ml_arena *arena, ml_handle h);
ML_API int ml_try_get_ro(ml_arena *arena, ml_handle h, const void **out);

/**
 * Pointer to the data if the handle is valid and the allocation is at
 * least min_size bytes long, else NULL. Used by ML_GET_T. It has no try_
 * twin: ml_try_get tells why a handle is refused, ml_handle_info_get gives
 * its size. Brings a cold handle back, as ml_get, but only when it is
 * large enough: a refusal changes nothing. Thread-safe.
 */
ML_API void *ml_get_sized(ml_arena *arena, ml_handle h, size_t min_size);

/** True when h is a live handle of this arena (false for arena NULL).
 *  Never changes state. Thread-safe; another thread may free h right
 *  after. */
ML_API bool ml_is_valid(ml_arena *arena, ml_handle h);

/**
 * State of a handle: FAST, SLOW, COMPRESSED, EVICTED for live handles,
 * FREED for stale ones, INVALID for anything else (also arena NULL).
 * Never changes state. Thread-safe.
 */
ML_API ml_state ml_handle_state(ml_arena *arena, ml_handle h);

/**
 * Pin a handle: its data will not move until ml_unpin, and the pointer
 * stays valid in every thread. Pins nest (up to 65535 on one handle). A
 * cold handle is brought back first (a relocation point for other SlowLane
 * blobs, as ml_get).
 * @param out  if not NULL, receives the pointer.
 * @return 0; -EINVAL (bad handle, arena NULL), -ESTALE (freed);
 *         -EOVERFLOW (65535 pins); -ENOMEM/-EIO/-EBADMSG (a cold handle
 *         could not be brought back, as ml_try_get: nothing is pinned).
 * Thread-safe; waits (briefly) for a move of this handle in progress. A
 * handle an eviction batch has picked is the batch's until its record is
 * written: the pin waits for that, and for the victims the batch takes
 * before it (see the README's Known limits).
 */
ML_API int ml_pin(ml_arena *arena, ml_handle h, void **out);

/** A read-only pin (see ml_get_ro): the pointer must not be written
 *  through. Same codes as ml_pin (the paging codes included); ml_unpin
 *  drops it like any other pin. Thread-safe, as ml_pin. */
ML_API int ml_pin_ro(ml_arena *arena, ml_handle h, const void **out);

/**
 * Drop one pin. Pins are counted per handle, not per thread: any thread
 * may drop a pin another took.
 * @return 0; -EINVAL (bad handle, arena NULL, or not pinned), -ESTALE
 *         (freed).
 * Thread-safe.
 */
ML_API int ml_unpin(ml_arena *arena, ml_handle h);

/**
 * Copy len bytes from data offset `offset` into buf. Never changes the
 * handle's state: a cold handle's record is decompressed into a copy, not
 * brought back; the access is not counted. The last four copies are kept
 * (those beyond the newest while they hold 32 MiB at most), so reading a
 * cold handle piece by piece, or a few in turn, decompresses each once.
 * Safe against concurrent relocation. Thread-safe.
 * @return the number of bytes copied (less than len when the data ends
 *         first; 0 at or past the end), or -EINVAL (bad handle, buf NULL
 *         with len > 0, len > INT_MAX), -ESTALE, -EIO, -EBADMSG, -ENOMEM
 *         (no memory for a cold handle's copy).
 */
ML_API int ml_read(ml_arena *arena, ml_handle h, size_t offset, void *buf,
                   size_t len);

/**
 * Copy len bytes from buf into the data at `offset`. Safe against
 * concurrent relocation (the entry is locked against moves while it is
 * written). A cold handle is brought back first (a relocation point for
 * other SlowLane blobs, as ml_get). Counts as an access.
 * @return 0; -EINVAL (bad handle, arena NULL, buf NULL with len > 0,
 *         offset+len past the end: nothing is written), -ESTALE, and
 *         ml_try_get's paging errors (-ENOMEM, -EIO, -EBADMSG).
 * Thread-safe.
 */
ML_API int ml_write(ml_arena *arena, ml_handle h, size_t offset,
                    const void *buf, size_t len);

/* ---- Typed helpers ------------------------------------------------------ */

#if defined(__cplusplus)
#define ML__ALIGNOF(T) alignof(T)
#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
#define ML__ALIGNOF(T) _Alignof(T)
#else /* C99 and older: the GNU spelling, with no -pedantic warning */
#define ML__ALIGNOF(T) __alignof__(T)
#endif

/** Allocate one T (size and alignment of T). Evaluates to ml_alloc's code. */
#define ML_ALLOC_T(arena, T, hp) \
    ml_alloc_aligned((arena), sizeof(T), ML__ALIGNOF(T), (hp))

/** Pointer to T, or NULL when h is invalid or its size is below sizeof(T). */
#define ML_GET_T(arena, h, T) ((T *)ml_get_sized((arena), (h), sizeof(T)))

/** Store a value of type T into the handle's data through ml_write; the
 *  value may be a compound literal with commas in it, unparenthesised:
 *  ML_SET_T(a, h, monster, (monster){1.5f, 2.5f, 100}).
 *  Evaluates to ml_write's code: -EINVAL when the allocation is smaller
 *  than T. GNU C statement expression (gcc, clang). */
#define ML_SET_T(arena, h, T, ...)                                   \
    __extension__({                                                  \
        T ml__set_v_ = (__VA_ARGS__);                                \
        ml_write((arena), (h), 0, &ml__set_v_, sizeof(T));           \
    })

/**
 * Resize an allocation behind the same handle (the handle does not change).
 * A cold handle is brought back first. Grows or shrinks in place when the
 * new size fits the space already reserved; otherwise moves the data
 * (keeping its alignment) to a place of the new size: in SlowLane when the
 * entry is there or grows past the threshold (it is then migrated: it
 * counts in its history), else in FastLane (SlowLane when FastLane is full
 * and failover_to_slow is set). Two entries that fit their place move all
 * the same, to the lane new_size belongs to, unless they are pinned or no
 * place can be had there (then they stay, and the call succeeds): a
 * FastLane entry grown past the threshold within its block, and one that
 * shrinks to under a quarter of a place larger than a page (so a realloc
 * within the space reserved never fails for want of room).
 * Contents up to min(old, new) size are kept; new bytes are not zeroed.
 * A relocation point for this handle; also for other SlowLane blobs when
 * it brings a cold handle back or finds SlowLane full (it may compress or
 * evict them to make room).
 * @return 0; -EINVAL (bad handle, arena NULL, new_size 0 or larger than
 *         the effective slow_lane_max_size, see ml_alloc), -ESTALE, -EBUSY
 *         (pinned and growing past its place), -ENOMEM (growing, and no
 *         room: size and data unchanged; at once, with nothing evicted,
 *         for a size no room could hold: see ml_alloc), and for a cold handle ml_try_get's paging
 *         errors (-ENOMEM, -EIO, -EBADMSG).
 * Thread-safe.
 */
ML_API int ml_realloc(ml_arena *arena, ml_handle h, size_t new_size);

/* ========================================================================= */
/* Relocation: compaction, migration, maintenance                            */
/* ========================================================================= */

/**
 * Compaction: live data slides together; handle slots are updated to the
 * new addresses, handles stay valid, contents are unchanged. FastLane:
 * blocks of each size class are moved out of the highest spans into free
 * blocks of lower ones and empty spans are released; then spans slide down
 * over free space. SlowLane: the same for its block spans, and blobs slide
 * down over free holes (tombstones). Pinned entries, and spans holding
 * them, stay where they are and compaction works around them. Afterwards
 * the pages of the free tail are returned to the kernel (madvise), so
 * resident size drops.
 */
typedef struct ml_compact_result {
    uint64_t moved_bytes;   /**< bytes copied */
    uint64_t moved_entries; /**< entries moved */
    uint64_t skipped_pinned;/**< entries that could not move (pinned/busy) */
    uint64_t released_bytes;/**< bytes of lane pages returned to the kernel
                                 (only pages handed out since they were last
                                 returned: an idle lane returns none again) */
    uint64_t elapsed_ns;    /**< time the call took */
    uint64_t release_ns;    /**< part of elapsed_ns spent returning pages */
    bool done;              /**< a whole pass finished */
} ml_compact_result;

/**
 * Compact one lane fully. A relocation point.
 * @param res  if not NULL, receives what was done.
 * @return 0; -EINVAL (NULL arena, bad lane).
 * Thread-safe; other threads' allocations in that lane wait for it.
 */
ML_API int ml_compact(ml_arena *arena, ml_lane lane, ml_compact_result *res);

/**
 * One bounded step of compaction, for programs that compact a little each
 * frame: stops once max_bytes have been copied or max_ns have passed
 * (whichever comes first; 0 = no limit for that one), and continues where
 * the previous step stopped. res->done tells that a whole pass finished
 * with nothing left to move. A relocation point.
 * Timing: the step checks the clock before each copy (estimating the copy
 * from what this step's copies have cost per byte, and never as faster
 * than 4 GB/s), before each search of the lane for a size class's spans,
 * every 256 entries it looks at, and before handing free pages back to the
 * kernel (sized by what that has cost lately, or by what the step's first
 * hand-back of 64 KiB cost, when that was more than twice as
 * much), and keeps a tenth of max_ns for its bookkeeping. So, on a CPU it
 * is not preempted from, it ends within max_ns, give or take the variation
 * of a single operation: handing back a MiB took 100-200 us here on a quiet
 * day and 1-2.3 ms on a busy one, and with a 100 us budget about one step
 * in ten still ran 5-60% over (tools/bench: "100 us steps").
 * Its first operation always goes ahead (every step progresses), so a
 * single blob that takes longer than max_ns to copy overruns; a step that
 * starts by handing pages back hands back at least 64 KiB, or one span in a
 * FastLane whose spans are larger (threshold above 8192) (so with a budget
 * of nearly nothing, a pass ends after a step per 64 KiB of tail). A step
 * that finds nothing it may move (everything pinned) stops on time too, and
 * the next step goes on from where it stopped.
 * @param res  if not NULL, receives what this step did.
 * @return 0; -EINVAL (NULL arena, bad lane).
 * Thread-safe, like ml_compact.
 */
ML_API int ml_compact_step(ml_arena *arena, ml_lane lane, uint64_t max_bytes, uint64_t max_ns,
                           ml_compact_result *res);

/** What moving a handle to another lane would cost (ml_migrate_cost). */
typedef struct ml_move_cost {
    bool possible;     /**< the move is allowed (size fits the lane, unpinned) */
    int reason;        /**< when not possible: -EBUSY (pinned), -EINVAL (too
                            large for FastLane, or an alignment none of its
                            size classes has), -EALREADY (already there) */
    size_t bytes;      /**< bytes that would be copied */
    size_t dest_bytes; /**< bytes the destination would reserve */
    bool needs_room;   /**< the destination has no free place of that size
                            now: the move would grow the lane, and fail with
                            -ENOMEM where it cannot */
} ml_move_cost;

/**
 * Ask what ml_migrate(arena, h, to) would cost, without doing it. A cold
 * entry is not brought back; it counts as being in SlowLane.
 * @return 0 (see out->possible); -EINVAL, -ESTALE (bad handle or args).
 * Thread-safe; the answer may be out of date as soon as it is returned.
 */
ML_API int ml_migrate_cost(ml_arena *arena, ml_handle h, ml_lane to, ml_move_cost *out);

/**
 * Move one entry to lane `to`: FastLane to SlowLane always; SlowLane to
 * FastLane when the size fits the threshold. The handle, its ID and
 * contents stay; its migration history records the move. Copies directly
 * between lanes (no allocation per move). A relocation point for this
 * handle. A cold entry (compressed or evicted) counts as in SlowLane; bound
 * for FastLane, it comes back into SlowLane first, as on access (a
 * relocation point for other SlowLane blobs, as ml_get); if the move to
 * FastLane then fails, it stays resident in SlowLane.
 * @return 0; -EINVAL (bad handle/lane, arena NULL, too large for
 *         FastLane, or no FastLane size class for the entry's alignment,
 *         as ml_migrate_cost says), -ESTALE, -EBUSY (pinned), -EALREADY
 *         (already in `to`), -ENOMEM (no room in `to`: nothing changed),
 *         and for a cold entry bound
 *         for FastLane ml_try_get's paging errors (-ENOMEM, -EIO, -EBADMSG).
 *         When several apply: -EALREADY, then -EINVAL, then -EBUSY.
 * Thread-safe.
 */
ML_API int ml_migrate(ml_arena *arena, ml_handle h, ml_lane to);

/**
 * Migrate every FastLane entry at least min_age_ms old to SlowLane. Pinned
 * entries, and entries another thread holds at that moment, are skipped. A
 * relocation point. The move callback runs for each move, on this thread,
 * once all are done.
 * @param moved  if not NULL, receives how many moved.
 * @return 0; -EINVAL (arena NULL); -ENOMEM when SlowLane filled up
 *         (entries moved so far stay moved).
 * Thread-safe.
 */
ML_API int ml_migrate_all(ml_arena *arena, uint32_t min_age_ms, size_t *moved);

/**
 * Run the policies once: fold access bits into per-handle access times and
 * counts; promote FastLane entries older than promote_age_ms; compact a
 * lane whose fragmentation or reclaimable span bytes pass
 * compaction_threshold (see there; within
 * compaction_budget_us); and, with paging, evict by idle time and
 * pressure. A relocation point.
 * @return 0; -EINVAL (arena NULL); -EBUSY when called from the move
 *         callback during a cycle of the same arena (nothing is done).
 *         Thread-safe: cycles never overlap, a call waits for a cycle in
 *         progress (the policy thread's too).
 */
ML_API int ml_maintain(ml_arena *arena);

/** Called after an entry moved (compaction, migration, realloc, and a cold
 *  entry coming back: any access, ml_prefetch), on the thread that moved
 *  it, after the move is complete and with no lock of the arena held, so fn
 *  may call any function but ml_arena_destroy. Moves made by ml_maintain or
 *  the policy thread are reported during their maintenance cycle:
 *  ml_maintain called from fn then returns -EBUSY rather than wait for the
 *  cycle it is part of. old_addr is no longer valid memory for this entry.
 *  Only data is reported: going cold is not a move (the entry has no data
 *  address until it comes back, and its last place stays the end of its
 *  chain, invalid meanwhile); coming back is, from that last place to the
 *  new one (from = to = ML_LANE_SLOW; the new place is often the old one
 *  again, old_addr == new_addr, when nothing took its lane space
 *  meanwhile); compaction also moves the records of
 *  COMPRESSED entries, and those moves are not reported. Must not block for
 *  long.
 *
 *  seq numbers the reported moves of one handle (1, 2, ...; taken while the
 *  entry is held for the move): moves made while no callback is set are
 *  neither reported nor numbered, so a chain does not carry across a time
 *  without a callback: a program that sets one again must take its entries'
 *  places afresh (ml_get or ml_handle_info_get) and follow the reports from
 *  there. (A callback set or cleared while moves are under way may leave a
 *  gap.) Reports of one handle can reach fn out of
 *  order: compaction reports a step's moves when the step ends, and by then
 *  another thread (or fn itself) may have moved the entry on and reported
 *  that. Order them by seq: the report with the highest seq names where
 *  the entry is (or, while it is cold, where it last was), and each
 *  report's old_addr is the new_addr of the report with the seq before it.
 *  The chain starts at the place the entry was born in (seq 0): take it
 *  from ml_alloc_ex's ptr, the address at the allocation itself. A pointer
 *  taken later (ml_get after ml_alloc) may already be a later place, and
 *  the report of the move that took it there (seq 1, from the birth place)
 *  can reach fn after the program recorded it: with the policy thread
 *  running, keep the report with the highest seq, not the place recorded
 *  last. (Delivering all reports in one order instead would make one thread run
 *  other threads' callbacks, or wait for them.) A report is lost, the move
 *  made all the same, only when the library cannot get memory to queue it. */
typedef void (*ml_move_fn)(void *ctx, ml_handle h, void *old_addr, void *new_addr,
                           ml_lane from, ml_lane to, uint64_t seq);

/** Register fn as the move callback, called with ctx as its first
 *  argument, or remove it with fn NULL.
 *  Thread-safe: fn and ctx change as one pair (a callback never gets the
 *  other's ctx). A move that read the old pair before this call may still
 *  call it after this returns, so keep the old ctx valid until the moves
 *  under way are done.
 *  @return 0; -EINVAL (arena NULL). */
ML_API int ml_set_move_callback(ml_arena *arena, ml_move_fn fn, void *ctx);

/** Called when an allocation (ml_alloc, ml_alloc_aligned, ml_alloc_zeroed,
 *  ml_alloc_ex, ml_group_alloc) of `size` bytes is about to fail with -ENOMEM after every built-in
 *  remedy, on the allocating thread, at most once per allocation (ml_realloc
 *  and page-ins never call it, nor does an allocation of a size no room
 *  could hold: see ml_alloc). No lock is held, so it may free handles
 *  (any function but ml_arena_destroy is allowed). Return non-zero if it
 *  freed something: the remedies then run again, without a second call. */
typedef int (*ml_pressure_fn)(void *ctx, ml_arena *arena, size_t size);

/** Register fn as the pressure callback, called with ctx as its first
 *  argument, or remove it with fn NULL.
 *  Thread-safe, as ml_set_move_callback: fn and ctx change as one pair; an
 *  allocation that read the old pair may still call it after this returns.
 *  @return 0; -EINVAL (arena NULL). */
ML_API int ml_set_pressure_callback(ml_arena *arena, ml_pressure_fn fn, void *ctx);

/* ========================================================================= */
/* Introspection (used by the debug view; everything it shows is here)       */
/* ========================================================================= */

#define ML_TAG_MAX 64   /**< tag buffer size, including the NUL */
#define ML_NAME_MAX 64  /**< group name buffer size, including the NUL */

/**
 * A snapshot of one handle. Times are nanoseconds since the arena was
 * created (CLOCK_MONOTONIC_COARSE: a few milliseconds resolution).
 * last_access and accesses are sampled: ml_get sets an access bit, and each
 * maintenance cycle turns a set bit into "accessed now" and one more count.
 * Allocation, pin and write set the bit too, so accesses is the number of
 * maintenance cycles in which the handle was used.
 */
typedef struct ml_handle_info {
    ml_handle handle;
    int64_t id;                /**< ml_handle_id(handle) */
    ml_state state;
    ml_lane lane;              /**< lane that holds (or held) the data */
    ml_lane born_lane;         /**< lane it was born in (sign of the ID) */
    uint32_t generation;
    size_t size;               /**< bytes requested */
    size_t alloc_size;         /**< bytes reserved in the lane (size class /
                                    pages); 0 while evicted (the lane holds
                                    nothing of it; stored_size says what the
                                    swap file does) */
    size_t align;              /**< alignment kept across moves: the one
                                    requested, raised to at least 16 */
    size_t offset;             /**< offset of the data in its lane; of the
                                    record in the swap file when evicted */
    size_t stored_size;        /**< bytes the cold copy takes (compressed
                                    record, in RAM or on disk); 0 if resident */
    uint32_t pins;
    char tag[ML_TAG_MAX];      /**< "" when untagged */
    ml_group group;            /**< ML_GROUP_NONE when in no group */
    char group_name[ML_NAME_MAX];
    uint64_t created_ns;
    uint64_t last_access_ns;
    uint64_t accesses;
    uint32_t migrations;       /**< moves between lanes */
    uint64_t last_migration_ns;/**< time of the last move between lanes */
    ml_lane last_from, last_to;/**< lanes of the last move (if migrations) */
    bool blob;                 /**< the data is a blob: page-granular SlowLane
                                    space of its own, the only kind of entry
                                    paging compresses or evicts (a cold entry
                                    is one). Every FastLane entry is a block
                                    of a size class, and so is a SlowLane
                                    entry placed with 8192 bytes or less
                                    (a blob that ml_realloc shrinks in place
                                    stays a blob): blocks are never paged,
                                    and ml_evict and ml_compress refuse them
                                    with -EINVAL. */
} ml_handle_info;

/**
 * Snapshot one handle into out, consistent as of one instant. Never
 * changes its state (a cold handle stays cold).
 * @return 0; -EINVAL (bad handle, NULL argument), -ESTALE (freed).
 * Thread-safe; waits (briefly) for a move of this handle in progress.
 */
ML_API int ml_handle_info_get(ml_arena *arena, ml_handle h,
                              ml_handle_info *out);

/**
 * The size of a live handle: the bytes it was allocated (or last
 * reallocated) with. Cheaper than ml_handle_info_get, and like it never
 * changes the handle's state (a cold handle stays cold, the access is not
 * counted).
 * @param out  receives the size; untouched on failure.
 * @return 0; -EINVAL (bad handle, arena or out NULL), -ESTALE (freed).
 * Thread-safe; a size read while another thread reallocates the handle is
 * the old one or the new one.
 */
ML_API int ml_size(ml_arena *arena, ml_handle h, size_t *out);

/**
 * The live handle whose ID is id (see ml_handle_id).
 * @return 0; -ENOENT (no live handle has that ID), -EINVAL (NULL args).
 * Thread-safe; another thread may free the handle right after.
 */
ML_API int ml_handle_from_id(ml_arena *arena, int64_t id, ml_handle *out);

/** ml_foreach callback: return 0 to go on, anything else to stop. */
typedef int (*ml_foreach_fn)(const ml_handle_info *info, void *ctx);

/**
 * Call fn for each live handle, in slot order, with a snapshot of it. No
 * lock is held while fn runs, so fn may call any function on the arena but
 * ml_arena_destroy (handles allocated or freed meanwhile may or may not be
 * visited).
 * @return 0 after visiting all; fn's non-zero value if it stopped the walk;
 *         -EINVAL (NULL args).
 * Thread-safe.
 */
ML_API int ml_foreach(ml_arena *arena, ml_foreach_fn fn, void *ctx);

/** ml_foreach_handle callback: return 0 to go on, anything else to stop. */
typedef int (*ml_foreach_handle_fn)(ml_handle h, void *ctx);

/**
 * Call fn with each live handle, in slot order, and nothing else: no
 * snapshot is taken and no entry is claimed, so a walk costs about one
 * read of each slot (ml_foreach fills a whole ml_handle_info per handle,
 * tens of nanoseconds each). For sweeps over many handles, such as a
 * garbage collector's: ask ml_size, ml_handle_info_get or ml_read for the
 * few that need more. No lock is held while fn runs, so fn may call any
 * function on the arena but ml_arena_destroy, ml_free of the handle it is
 * given included (handles allocated or freed meanwhile may or may not be
 * visited; a handle fn is given may be freed by another thread before fn
 * uses it, which then gets -ESTALE).
 * @return 0 after visiting all; fn's non-zero value if it stopped the walk;
 *         -EINVAL (NULL args).
 * Thread-safe.
 */
ML_API int ml_foreach_handle(ml_arena *arena, ml_foreach_handle_fn fn, void *ctx);

/**
 * Per-lane statistics: one list, many views. Each X(name, description)
 * is a uint64_t field of ml_lane_stats. Fragmentation is
 *   1 - largest_free / free        (0 when nothing is free),
 * in per-mille (0..1000): 0 means all free space is one contiguous block;
 * near 1000 means it is scattered in small holes. `reclaimable` is the
 * span bytes a compaction pass could empty and give back: per size class,
 * its free blocks divided by the blocks a span holds, in whole spans (blocks
 * in thread caches count as used; pinned entries may keep some spans).
 * SlowLane's `live` and
 * `requested` count its cold entries too (compressed or evicted), while
 * `used` counts only the lane space they hold (a compressed record's
 * pages; nothing for an evicted one), so with paging `requested` may
 * exceed `capacity`: ml_paging_stats says how much is cold.
 */
#define ML_LANE_STATS(X)                                                       \
    X(capacity, "usable bytes committed now")                                  \
    X(max_capacity, "most the lane may grow to")                               \
    X(used, "bytes the lane holds for live allocations (classes / pages)")     \
    X(requested, "bytes asked for in live allocations, cold ones included")    \
    X(free, "capacity - used")                                                 \
    X(largest_free, "largest contiguous free range usable by any size")        \
    X(fragmentation_permille, "1000 * (1 - largest_free / free)")              \
    X(reclaimable, "span bytes compaction could empty (free blocks, by class)") \
    X(live, "live allocations")                                                \
    X(allocs, "allocations made since creation")                               \
    X(frees, "allocations freed since creation")                               \
    X(spans, "spans of blocks (size-class pages)")                             \
    X(span_bytes, "bytes in spans")                                            \
    X(blobs, "blobs (page-granular allocations)")                              \
    X(blob_bytes, "bytes in blobs")                                            \
    X(tombstones, "free holes between used extents")                           \
    X(cached, "free blocks held in per-thread caches")                         \
    X(failovers, "small allocations placed here because FastLane was full")    \
    X(grows, "times the lane grew")                                            \
    X(alloc_failures, "allocations this lane could not place")                 \
    X(compactions, "compaction passes completed")                              \
    X(compacted_bytes, "bytes moved by compaction")                            \
    X(compacted_entries, "entries moved by compaction")                        \
    X(purged_bytes, "bytes of free pages returned to the kernel")              \
    X(migrated_in, "entries migrated into this lane")                          \
    X(migrated_out, "entries migrated out of this lane")                       \
    X(reserve, "bytes kept free as scratch (SlowLane safety margin)")

/** Arena-wide statistics, same scheme as ML_LANE_STATS. */
#define ML_ARENA_STATS(X)                                                      \
    X(handles_live, "live handles")                                            \
    X(handles_capacity, "slots committed in the handle table")                 \
    X(handles_max, "most live handles (max_handles)")                          \
    X(handles_retired, "slots retired because their generation wrapped")       \
    X(maintenance_cycles, "ml_maintain runs and policy-thread cycles")         \
    X(promotions, "entries promoted to SlowLane by age")                       \
    X(pressure_callbacks, "times the pressure callback was called")            \
    X(enomem, "allocations that returned -ENOMEM")                             \
    X(groups, "groups")                                                        \
    X(tags, "distinct tags held by live handles")                              \
    X(metadata_bytes, "bytes of bookkeeping outside the lanes")             \
    X(debug_moves, "entries moved at relocation points by ML_DEBUG_MOVES")     \
    X(debug_quarantine_bytes, "freed or moved-from bytes held poisoned")

#define ML__STAT_FIELD(name, desc) uint64_t name;

typedef struct ml_lane_stats {
    ML_LANE_STATS(ML__STAT_FIELD)
} ml_lane_stats;

typedef struct ml_stats {
    ML_ARENA_STATS(ML__STAT_FIELD)
    ml_lane_stats lane[2]; /**< indexed by ml_lane */
} ml_stats;

/**
 * Fill out with current statistics. Both lanes' extents (capacity,
 * largest_free, spans, blobs) and migration counts are read at one instant,
 * under both lane locks, so an entry migrating meanwhile counts as live in
 * exactly one lane. The allocation counters (used, requested, allocs,
 * frees) are the threads' own, read just before, so while other threads
 * allocate they (and live) may be off by the operations in flight. Always
 * free = capacity - used and largest_free <= free.
 * @return 0; -EINVAL (NULL args). Thread-safe.
 */
ML_API int ml_stats_get(ml_arena *arena, ml_stats *out);

/**
 * Set (or, with NULL or "", clear) a handle's debug tag. A tag is 1..63
 * printable ASCII characters other than space and '/', and not "." or ".."
 * (it names a folder in the debug view). Handles share a tag by name, and a
 * tag lasts while some live handle has it: freeing (one by one, or with
 * its group), retagging or clearing the last handle with it lets it go. At
 * most 4096 distinct tags are in use per arena at once; at that limit a
 * handle that is the last with its tag can still be given a new one (the
 * old tag's place is reused).
 * @return 0; -EINVAL (bad handle or tag, arena NULL), -ESTALE, -ENOSPC
 *         (4096 tags in use, this one not among them, and the handle's own
 *         tag, if any, is shared; nothing changes). Thread-safe.
 */
ML_API int ml_set_tag(ml_arena *arena, ml_handle h, const char *tag);

/* ---- Lane maps ---------------------------------------------------------- */

/** Kinds of extents that tile a lane. */
typedef enum ml_extent_kind {
    ML_EXTENT_FREE = 0, /**< a hole (tombstone) or the free tail */
    ML_EXTENT_BLOB = 1, /**< one allocation, page-granular */
    ML_EXTENT_SPAN = 2, /**< equal blocks of one size class */
} ml_extent_kind;

/** One extent of a lane map. */
typedef struct ml_extent_info {
    size_t offset;        /**< bytes from the lane's start */
    size_t length;        /**< bytes */
    ml_extent_kind kind;
    int64_t id;           /**< blob: its handle's ID (0 for a blob in
                               transit: being placed, or being released); else 0 */
    size_t block_size;    /**< span: its size class; else 0 */
    uint32_t blocks;      /**< span: blocks in it */
    uint32_t used;        /**< span: blocks handed out */
} ml_extent_info;

/** Callback of ml_lane_map: one extent (info valid during the call only)
 *  and the caller's ctx. Return 0 to go on; non-zero stops the walk, and
 *  ml_lane_map returns that value. */
typedef int (*ml_extent_fn)(const ml_extent_info *info, void *ctx);

/**
 * Call fn for every extent of a lane, lowest offset first, from a snapshot
 * taken under the lane's lock (no lock is held while fn runs, so fn may
 * call any function on the arena but ml_arena_destroy).
 * @return 0, fn's non-zero value, -EINVAL (NULL args, bad lane), -ENOMEM.
 * Thread-safe.
 */
ML_API int ml_lane_map(ml_arena *arena, ml_lane lane, ml_extent_fn fn, void *ctx);

/* ---- Lifecycle events --------------------------------------------------- */

/** What happened to a handle (or a lane). */
typedef enum ml_event_kind {
    ML_EVENT_ALLOC = 0,
    ML_EVENT_FREE = 1,
    ML_EVENT_MIGRATE = 2,  /**< moved between lanes (from -> to) */
    ML_EVENT_COMPACT = 3,  /**< a compaction step: bytes and entries moved */
    ML_EVENT_COMPRESS = 4, /**< compressed into RAM */
    ML_EVENT_EVICT = 5,    /**< written to the swap file */
    ML_EVENT_PAGE_IN = 6,  /**< brought back into SlowLane */
} ml_event_kind;

/** One recorded event. */
typedef struct ml_event {
    uint64_t seq;       /**< 1, 2, 3... in the order recorded */
    uint64_t time_ns;   /**< since arena creation */
    ml_event_kind kind;
    ml_handle handle;   /**< ML_HANDLE_NULL for lane events (compact) */
    int64_t id;         /**< ml_handle_id(handle) */
    uint64_t bytes;     /**< size of the entry, or bytes moved */
    uint64_t count;     /**< entries (compact), else 1 */
    ml_lane from, to;   /**< lanes involved (equal when one lane) */
} ml_event;

/** "alloc", "free", "migrate", "compact", "compress", "evict", "page-in";
 *  "unknown" for any other value. Never NULL. Thread-safe. */
ML_API const char *ml_event_name(ml_event_kind kind);

/**
 * Start (capacity > 0) or stop (0) recording lifecycle events into a ring of
 * the `capacity` most recent ones. Off by default: recording costs a lock per
 * allocation and free, so it is for debugging (the debug view turns it on).
 * Every call drops what was recorded; sequence numbers go on, and a
 * reader's cursor from before the call resumes at the first new event.
 * @return 0; -EINVAL (arena NULL, capacity over 2^24); -ENOMEM (nothing
 *         changed).
 * Thread-safe.
 */
ML_API int ml_events_enable(ml_arena *arena, size_t capacity);

/** Capacity of the events ring; 0 when recording is off (or arena NULL).
 *  Thread-safe. */
ML_API size_t ml_events_capacity(ml_arena *arena);

/**
 * Copy up to max recorded events with seq >= *cursor into out, oldest first,
 * and advance *cursor past the last one copied (start with *cursor = 0).
 * Events overwritten in the ring before being read are skipped.
 * @param n  receives how many were copied.
 * @return 0; -EINVAL (NULL args, out NULL with max > 0).
 * Thread-safe: each reader keeps its own cursor.
 */
ML_API int ml_events_read(ml_arena *arena, uint64_t *cursor, ml_event *out, size_t max,
                          size_t *n);

/* ---- Allocation groups --------------------------------------------------- */

/**
 * Create a named group. A name is 1..63 printable ASCII characters other
 * than space and '/', and not "." or "..". At most 4096 groups per arena.
 * The ID of a destroyed group never names a later one.
 * @return 0; -EINVAL (bad name, NULL args), -EEXIST (name taken),
 *         -ENOSPC (4096 groups live, or no table entry left: each of the
 *         4096 issues about a million IDs, 2^20 - 1, and is then retired).
 * Thread-safe: of two threads creating the same name, one gets -EEXIST.
 */
ML_API int ml_group_create(ml_arena *arena, const char *name, ml_group *out);

/** Find a group by name. Thread-safe.
 *  @return 0; -ENOENT (no such group); -EINVAL (NULL args). */
ML_API int ml_group_find(ml_arena *arena, const char *name, ml_group *out);

/**
 * Allocate into a group (align 0 means the default alignment); with
 * ML_GROUP_NONE, an allocation in no group.
 * @return as ml_alloc_aligned; -ENOENT when the group does not exist (or
 *         is destroyed meanwhile: nothing is allocated).
 * Thread-safe; a relocation point when its lane is full, as ml_alloc.
 */
ML_API int ml_group_alloc(ml_arena *arena, ml_group g, size_t size,
                          size_t align, ml_handle *out);

/**
 * Put an existing handle into group g (taking it out of its previous group),
 * or out of any group with ML_GROUP_NONE.
 * @return 0; -EINVAL (bad handle, arena NULL), -ESTALE, -ENOENT (no such
 *         group, or destroyed meanwhile: the handle stays where it was).
 * Thread-safe.
 */
ML_API int ml_group_set(ml_arena *arena, ml_handle h, ml_group g);

/**
 * Free every handle in the group, all or nothing: if any of them is pinned,
 * nothing is freed and -EBUSY is returned. The group stays (empty, unless
 * other threads add members meanwhile: those stay).
 * @param freed  if not NULL, receives how many handles were freed.
 * @return 0; -ENOENT (no such group), -EINVAL (arena NULL), -EBUSY,
 *         -ENOMEM (nothing freed).
 * Thread-safe; waits for moves of its members in progress.
 */
ML_API int ml_group_free_all(ml_arena *arena, ml_group g, size_t *freed);

/**
 * Free every handle in the group (as ml_group_free_all) and delete it.
 * @return 0; -ENOENT (no such group), -EINVAL (arena NULL), -ENOMEM, -EBUSY
 *         (a member is pinned: nothing freed, group kept; or other threads
 *         kept adding members through 16 rounds: group kept).
 * Thread-safe.
 */
ML_API int ml_group_destroy(ml_arena *arena, ml_group g);

/** Number of handles in the group. Thread-safe.
 *  @return 0; -ENOENT (no such group); -EINVAL (NULL args). */
ML_API int ml_group_count(ml_arena *arena, ml_group g, size_t *count);

/**
 * Copy up to cap of the group's handles into out (in no particular order);
 * *count receives the group's total size, which may exceed cap.
 * @return 0; -ENOENT; -EINVAL (arena or count NULL, or out NULL with
 *         cap > 0).
 * Thread-safe: the handles and the count are one consistent snapshot.
 */
ML_API int ml_group_list(ml_arena *arena, ml_group g, ml_handle *out,
                         size_t cap, size_t *count);

/** Copy the group's name into buf (truncated to len, always terminated).
 *  Thread-safe.
 *  @return 0; -ENOENT (no such group); -EINVAL (arena or buf NULL,
 *          len 0). */
ML_API int ml_group_name(ml_arena *arena, ml_group g, char *buf, size_t len);

/** ml_group_foreach callback: return 0 to go on. */
typedef int (*ml_group_fn)(ml_group g, const char *name, size_t count,
                           void *ctx);

/**
 * Call fn for every group (no lock held while fn runs, so fn may call any
 * function on the arena but ml_arena_destroy; groups created or destroyed
 * meanwhile may or may not be visited).
 * @return 0, fn's non-zero value, or -EINVAL (NULL args).
 * Thread-safe.
 */
ML_API int ml_group_foreach(ml_arena *arena, ml_group_fn fn, void *ctx);

/* ========================================================================= */
/* Paging                                                                    */
/* ========================================================================= */

/**
 * Paging moves cold SlowLane blobs out of the lane (SlowLane places an
 * entry of more than 8192 bytes as a blob, a smaller one as a block of a
 * size class, which stays resident, as FastLane's do: ml_handle_info.blob
 * tells): COMPRESSED (zstd, kept
 * in RAM as a smaller SlowLane record) or EVICTED (the record written to the
 * swap file through io_uring with O_DIRECT). Each record carries the
 * handle's ID and generation, both lengths, the codec and CRC-32C checksums;
 * a record that does not match is reported as -EBADMSG, never handed out.
 * A blob that zstd shrinks by less than a tenth is stored raw. Lane memory is released only
 * after its record is safely written; on any I/O error the blob stays
 * resident and intact. Any access (ml_get, ml_try_get, ml_pin, ml_write,
 * migration to FastLane, realloc) brings a cold handle back first; ml_read
 * decompresses a copy and leaves it cold.
 *
 * Concurrency: threads bringing back different handles, or reading cold
 * ones with ml_read, read and decompress at the same time (up to 8 per
 * arena, each with an engine and buffer of its own, made on first need); a
 * thread touching a handle another thread is bringing back waits for it.
 * Evictions and ml_prefetch run one at a time per arena. A page-in needs
 * the arena's paging lock for two short moments (to reserve its place, to
 * install the data); a long eviction batch (the policy thread's, or
 * ml_evict_many) lets it in every 512 KiB or so of work (unless it needs
 * more room than the batch has freed so far: then it waits for the batch),
 * and ml_prefetch between its chunks of 256 reads.
 */

/** Paging counters, zswap style: one per outcome and rejection reason. */
#define ML_PAGING_STATS(X)                                                     \
    X(evicted, "entries sent to the swap file")                                \
    X(evicted_clean, "of those, unmodified copies already on disk (no write)") \
    X(compressed, "entries compressed into RAM (compressed stage)")            \
    X(stored_raw, "records stored uncompressed (compressed too poorly)")       \
    X(compress_failed, "compression errors (entry stayed resident)")           \
    X(compress_poor, "compressions that would save under a tenth (not tried again by the policies until the entry is written)") \
    X(budget_full, "evictions refused because the swap budget was full")      \
    X(disk_full, "evictions refused at once after a write found the disk full") \
    X(copies_reclaimed, "clean copies released to make room in the swap budget") \
    X(io_errors, "reads or writes that failed (nothing lost)")                 \
    X(checksum_failures, "records rejected: checksum, identity or length")     \
    X(page_ins, "entries brought back on access")                              \
    X(prefetched, "entries brought back by ml_prefetch")                       \
    X(cold_reads, "ml_read calls served from a cold copy")                     \
    X(cold_read_decodes, "of those, the ones that decompressed the record")    \
    X(bytes_in, "uncompressed bytes compressed or evicted")                    \
    X(bytes_out, "bytes stored after compression")                             \
    X(evict_ns, "compressing and evicting, pauses for page-ins not counted")   \
    X(pagein_ns, "time bringing entries back (an access's wait included)")     \
    X(now_evicted, "entries on disk now")                                      \
    X(now_evicted_bytes, "uncompressed bytes of entries on disk now")          \
    X(now_compressed, "entries compressed in RAM now")                         \
    X(now_compressed_bytes, "uncompressed bytes of entries compressed now")    \
    X(now_clean_copies, "swap records kept as clean copies of resident blobs") \
    X(swap_capacity, "swap budget, bytes")                                     \
    X(swap_used, "swap bytes holding records")                                 \
    X(cold_copy_bytes, "bytes held by ml_read's copies of cold entries")       \
    X(direct_io, "1 when the swap file uses O_DIRECT")                         \
    X(io_uring, "1 when the io_uring engine runs, 0 for pread/pwrite")         \
    X(start_errno, "why paging to disk could not start (errno), 0 if it did")

typedef struct ml_paging_stats {
    ML_PAGING_STATS(ML__STAT_FIELD)
    char engine[16]; /**< "io_uring", "pread/pwrite", or "none" (not started) */
} ml_paging_stats;

/**
 * Paging counters.
 * @return 0 (all counters 0 and engine "none" when paging is off);
 *         -EINVAL (NULL args).
 * Thread-safe.
 */
ML_API int ml_paging_stats_get(ml_arena *arena, ml_paging_stats *out);

/**
 * Compress one SlowLane blob and write it to the swap file now (EVICTED). A
 * COMPRESSED entry's record is written as it is. min_evict_size does not
 * apply. A relocation point for h.
 * @return 0; -EINVAL (bad handle, arena NULL, not a SlowLane blob (see
 *         ml_handle_info.blob: FastLane entries and SlowLane entries of
 *         8192 bytes or less are blocks, never paged), paging
 *         off), -ESTALE, -EBUSY (pinned), -EALREADY (already evicted),
 *         -ENOSPC (swap budget full: budget_full in the paging statistics,
 *         and for up to a second the same entry is refused without being
 *         compressed again, see swap_size; or the disk: after a write found
 *         the disk full, evictions to disk fail at once with -ENOSPC for a
 *         second, or until a record leaves the swap file, instead of
 *         compressing what cannot be written; paging statistics:
 *         disk_full), -EIO (compression or write failed; a failed write
 *         may pass on the system's code instead), -ENOMEM
 *         (no memory for the record), -ENOTSUP (in a forked child: see fork
 *         at the top): on any error the entry stays where it was, intact. The first eviction opens the swap file and the
 *         I/O engine and passes on their errors (-ENOSYS/-EPERM with
 *         io_engine = 1 where io_uring is unavailable; -EACCES, -ENOENT,
 *         -ENOTDIR for swap_dir, -EMFILE); such an error is returned
 *         again, without a new attempt, for 100 ms, and then opening is
 *         tried again.
 * Thread-safe; evictions run one at a time per arena.
 */
ML_API int ml_evict(ml_arena *arena, ml_handle h);

/**
 * Evict many at once (a level's assets, a cache shard): compression of one
 * overlaps the writes of the others, writes go out in batches. Handles that
 * are not evictable SlowLane blobs (FastLane, small, pinned, stale, already
 * evicted) are skipped. A relocation point for the handles listed.
 * @return the number evicted (>= 0; 0 when none was evictable); -EINVAL
 *         (arena NULL, handles NULL with n > 0, paging off); -ENOMEM;
 *         when nothing could be written, one entry's error (-ENOSPC, -EIO,
 *         -ENOMEM, as ml_evict: those stay where they were, intact);
 *         the errors of opening the swap file, as ml_evict.
 * Thread-safe; waits for accesses to the listed handles in progress, and
 * for another eviction batch to end.
 */
ML_API int ml_evict_many(ml_arena *arena, const ml_handle *handles, size_t n);

/**
 * Compress one SlowLane blob into RAM (COMPRESSED): its lane space shrinks to
 * the compressed record. Needs no swap file. min_evict_size does not
 * apply. A relocation point for h.
 * @return 0; -EINVAL (bad handle, arena NULL, not a SlowLane blob (see
 *         ml_handle_info.blob: FastLane entries and SlowLane entries of
 *         8192 bytes or less are blocks, never paged), paging
 *         off), -ESTALE, -EBUSY (pinned), -EALREADY (already cold),
 *         -EMSGSIZE (the data does not compress: zstd saves less than a
 *         tenth of it; it stays resident, and an ml_evict of it stores it
 *         as it is), -ENOMEM (no memory, or no
 *         SlowLane room for the record), -EIO (compression failed).
 * Thread-safe.
 */
ML_API int ml_compress(ml_arena *arena, ml_handle h);

/**
 * Bring many cold handles back at once, with batched reads (up to
 * io_queue_depth in flight). Resident, stale or invalid handles are skipped.
 * To make room it may compress or evict other SlowLane blobs (a relocation
 * point). When some entries find no free run in SlowLane even after
 * eviction, the call compacts SlowLane once and tries those entries again,
 * keeping the list's resident entries locked against eviction meanwhile
 * (room is not made by evicting what it just brought back; an access to
 * one of them waits).
 * @return the number brought back, if any; else the first error (-ENOMEM,
 *         -EIO, -EBADMSG, or the I/O engine's own when it refused the
 *         reads, such as -EAGAIN: those entries stay cold), else 0 (also
 *         when paging is off); -EINVAL (arena NULL, handles NULL with n > 0).
 * Thread-safe. It is a batch: it waits for another eviction or prefetch
 * batch to end, but lets waiting accesses in between its chunks.
 */
ML_API int ml_prefetch(ml_arena *arena, const ml_handle *handles, size_t n);

/* ========================================================================= */
/* Inline fast path of ml_get (not API: layout may change in any release)    */
/* ========================================================================= */

/* ml_get is a macro over this inline function, so the common case costs one
 * load of the slot's meta word, one compare and one load of the address,
 * with no call. The address field only ever holds the data's address (a
 * cold entry keeps its record's place elsewhere), and an entry coming back
 * stores its address before its meta word, so an address read after a
 * word that said resident is the data's.
 * `(ml_get)(a, h)` or defining ML_NO_INLINE before including this header
 * calls the exported function instead (for FFI and function pointers). */
typedef struct ml__slot {
    uint64_t meta;       /* generation | arena tag | born lane | state bits */
    uint64_t addr;       /* data address (cold: the last one, stale) */
    uint64_t size;       /* bytes requested */
    uint64_t created_ns; /* creation time */
} ml__slot;

typedef struct ml__arena_head {
    ml__slot *slots;
    uint64_t get_limit; /* max_handles; 0 sends every ml_get to the slow path */
} ml__arena_head;

/* On x86-64 every load is an acquire load: a volatile load is enough and,
 * unlike an atomic builtin, lets the compiler keep loop-invariant values in
 * registers. Elsewhere, and under ThreadSanitizer (which must see the
 * atomics), use the atomic builtins. */
#if defined(__x86_64__) && !defined(__SANITIZE_THREAD__) && !defined(ML__TSAN)
#define ML__META_HI(s) (((const volatile uint32_t *)&(s)->meta)[1])
#define ML__ADDR(s) (*(const volatile uint64_t *)&(s)->addr)
#else
#define ML__META_HI(s) ((uint32_t)(__atomic_load_n(&(s)->meta, __ATOMIC_ACQUIRE) >> 32))
#define ML__ADDR(s) __atomic_load_n(&(s)->addr, __ATOMIC_ACQUIRE)
#endif

/** Slow path of the inline ml_get (bounds, stale handles, access bit, cold
 *  handles). Same contract as ml_get (thread-safe); programs need not call
 *  it. */
ML_API void *ml_get_slow(ml_arena *arena, ml_handle h);

/* The upper half of a slot's meta word equals the upper half of the handle
 * exactly when the handle is live, resident and already marked accessed. */
static inline void *ml__get_fast(ml_arena *arena, ml_handle h)
{
    const ml__arena_head *hd = (const ml__arena_head *)(const void *)arena;
    uint32_t idx = (uint32_t)h.bits, hi = (uint32_t)(h.bits >> 32);
    /* Every issued handle has both top bits set; a meta word has them only
     * while live, resident and accessed. Test them on the handle too, or a
     * forged value equal to the meta word of a free or not-yet-accessed slot
     * would pass the compare (and reach freed memory). */
    if (__builtin_expect(arena != NULL && idx < hd->get_limit && hi >= 0xC0000000u, 1)) {
        ml__slot *s = &hd->slots[idx];
        if (__builtin_expect(ML__META_HI(s) == hi, 1)) return (void *)(uintptr_t)ML__ADDR(s);
    }
    return NULL;
}

static inline void *ml__get_inline(ml_arena *arena, ml_handle h)
{
    const ml__arena_head *hd = (const ml__arena_head *)(const void *)arena;
    uint32_t idx = (uint32_t)h.bits, hi = (uint32_t)(h.bits >> 32);
    /* The misses jump straight to the slow path: a live, resident slot's
     * address is never NULL, so the hit needs no second test. */
    if (__builtin_expect(arena != NULL && idx < hd->get_limit && hi >= 0xC0000000u, 1)) {
        ml__slot *s = &hd->slots[idx];
        if (__builtin_expect(ML__META_HI(s) == hi, 1)) return (void *)(uintptr_t)ML__ADDR(s);
    }
    return ml_get_slow(arena, h);
}

#ifndef ML_NO_INLINE
#define ml_get(arena, h) ml__get_inline((arena), (h))
#endif

/* ========================================================================= */
/* Errors                                                                    */
/* ========================================================================= */

/** Name of an error code (negative or positive errno), "success" for 0:
 *  the library's own wording for the codes it documents (the system's
 *  codes it passes on included: EPERM, EACCES, ENODEV, ENOTDIR, ENOSYS,
 *  EMFILE, EROFS), the C library's description for any other errno, and
 *  "unknown error" for a number that is none. Never NULL. Thread-safe. */
ML_API const char *ml_strerror(int err);

#ifdef __cplusplus
}
#endif

#endif /* MEMORYLANE_H */
