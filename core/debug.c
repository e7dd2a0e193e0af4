/*
 * debug.c — making pointer mistakes show: a poisoned quarantine, and moves
 * at every relocation point (ML_DEBUG_POISON, ML_DEBUG_MOVES).
 *
 * A moving allocator has two silent mistakes: a pointer used after a
 * relocation point, and one used after ml_free. Both read whatever the old
 * place holds by then, usually the right bytes still, so they show only
 * under memory pressure, far from their cause. In debug mode:
 *
 * The quarantine. A place given up by a free or by a move with a copy
 * (ml__move_claimed: migration, realloc, the debug moves) is not given back
 * to its lane: it is filled with 0xDF, poisoned for AddressSanitizer, and
 * held in a first-in first-out ring, per arena, until the lane's share
 * (an eighth of the lane, at least 256 KiB; at most ML_DBG_HELD places in
 * all) is exceeded; then the oldest go back, unpoisoned. A held place keeps
 * its block or blob allocated in the lane, with no owner (owner word 0, as
 * a block in a thread cache), so nothing else is placed there, compaction
 * neither moves it nor slides its span (an unowned block or blob is never
 * claimed), and the heap check counts it (ml__debug_held_blocks). When an
 * allocation finds no room, the remedies give all of it back first.
 *
 * AddressSanitizer. Its poisoning interface is declared weak here: a
 * program built with -fsanitize=address has the runtime that defines it
 * (whether or not this library was built so), anything else leaves the
 * pointers NULL and only the fill bytes remain. Nothing but the stale
 * pointers touches a held place: the library fills it before poisoning and
 * unpoisons it before giving it back (the asan test build instruments the
 * library too, so a library access to a held place would be reported).
 *
 * Moves. With ML_DEBUG_MOVES the inline ml_get is off (the arena head's
 * get_limit is 0), so every address handed out passes through the library,
 * which notes its slot (a bitmap against duplicates, and a list). Each
 * relocation point then moves every noted entry of the lanes it concerns
 * to a new place in the same lane, with a copy, so the old one goes to the
 * quarantine. Only entries that can be claimed at once move: pinned ones,
 * ones another thread holds, and ones whose lane has no room stay noted
 * for the next point. Entries no longer resident (compressed or evicted
 * meanwhile) are dropped: their place is gone already.
 *
 * Locking: dbg->lock guards the ring, the bitmap and the list. It is a
 * leaf: nothing is locked or claimed while it is held (callers may hold a
 * claim, the pager lock, or, in the heap check, the lane locks).
 *
 * Re-entrancy: a point moves entries and then fires the move callback,
 * which may call anything, relocation points included; a point reached
 * from inside another on the same thread does nothing (thread-local
 * flag), or each level would move again what the one above exposed.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"

void __asan_poison_memory_region(void const volatile *addr, size_t size) __attribute__((weak));
void __asan_unpoison_memory_region(void const volatile *addr, size_t size) __attribute__((weak));

#define ML_DBG_HELD 65536u             /* most places held at once */
#define ML_DBG_MIN_SHARE ((size_t)256 << 10)
#define ML_DBG_FREED_BYTE 0xDF
#define ML_DBG_NEW_BYTE 0xD0

struct ml_debug {
    pthread_mutex_t lock;
    /* quarantine: a ring of held places, oldest at head */
    ml_loc *ring;
    uint32_t head, n;
    size_t held_bytes[2], share[2];
    uint32_t held_blocks[2];
    /* exposed entries (ML_DEBUG_MOVES) */
    uint64_t *bits;
    uint32_t *list;
    size_t nlist, cap;
    uint64_t moves; /* atomic */
};

static void poison(void *p, size_t n)
{
    if (__asan_poison_memory_region) __asan_poison_memory_region(p, n);
}

static void unpoison(void *p, size_t n)
{
    if (__asan_unpoison_memory_region) __asan_unpoison_memory_region(p, n);
}

unsigned ml__debug_env(void)
{
    const char *e = getenv("MEMORYLANE_DEBUG");
    if (!e || !*e) return 0;
    char *end;
    unsigned long v = strtoul(e, &end, 0);
    if (end != e && *end == '\0') return (unsigned)v & (ML_DEBUG_POISON | ML_DEBUG_MOVES);
    unsigned f = 0;
    for (const char *p = e; *p;) {
        size_t n = strcspn(p, ",");
        if (n == 6 && !strncmp(p, "poison", 6)) f |= ML_DEBUG_POISON;
        else if (n == 5 && !strncmp(p, "moves", 5)) f |= ML_DEBUG_MOVES;
        p += n;
        if (*p == ',') p++;
    }
    return f;
}

int ml__debug_init(ml_arena *a)
{
    if (a->debug & ML_DEBUG_MOVES) a->debug |= ML_DEBUG_POISON;
    if (!a->debug) return 0;
    ml_debug *d = calloc(1, sizeof *d);
    if (!d) return -ENOMEM;
    d->ring = malloc(ML_DBG_HELD * sizeof *d->ring);
    if (a->debug & ML_DEBUG_MOVES) {
        d->bits = calloc((a->max_handles + 63) / 64, sizeof *d->bits);
        if (!d->bits) {
            free(d->ring);
            d->ring = NULL;
        }
    }
    if (!d->ring) {
        free(d);
        return -ENOMEM;
    }
    for (int l = 0; l < 2; l++) {
        size_t lane = l == ML_LANE_FAST ? a->cfg.fast_lane_size : a->cfg.slow_lane_size;
        d->share[l] = lane / 8 > ML_DBG_MIN_SHARE ? lane / 8 : ML_DBG_MIN_SHARE;
    }
    pthread_mutex_init(&d->lock, NULL);
    a->dbg = d;
    return 0;
}

static char *place_addr(ml_arena *a, const ml_loc *loc)
{
    ml_lane_t *l = &a->lanes[loc->lane];
    return loc->blob ? ml__lane_base(l) + ((size_t)loc->span << l->unit_shift)
                     : ml__block_addr(l, loc->span, loc->index);
}

/* Give held places back to their lanes (taken off the ring already). */
static void give_back(ml_arena *a, const ml_loc *v, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        const ml_loc *loc = &v[i];
        ml_lane_t *l = &a->lanes[loc->lane];
        unpoison(place_addr(a, loc), loc->bytes);
        pthread_mutex_lock(&l->lock);
        if (loc->blob) ml__lane_blob_free(l, loc->span);
        else ml__lane_block_put(l, loc->span, loc->index);
        pthread_mutex_unlock(&l->lock);
    }
}

/* Take the oldest places off the ring (at most max): all of them, or,
 * with all false, while a lane's share or the ring is exceeded; the caller
 * holds d->lock and gives them back after dropping it. */
static uint32_t take_oldest(ml_debug *d, ml_loc *out, uint32_t max, bool all)
{
    uint32_t k = 0;
    /* (Over the shares, the newest place stays all the same: one larger
     * than its lane's share is held until the next comes.) */
    while (k < max && d->n > (all ? 0u : 1u)) {
        const ml_loc *h = &d->ring[d->head];
        ml_lane lane = h->lane;
        bool over = d->held_bytes[ML_LANE_FAST] > d->share[ML_LANE_FAST] ||
                    d->held_bytes[ML_LANE_SLOW] > d->share[ML_LANE_SLOW] || d->n >= ML_DBG_HELD;
        if (!all && !over) break;
        out[k++] = *h;
        d->held_bytes[lane] -= h->bytes;
        if (!h->blob) d->held_blocks[lane]--;
        d->head = (d->head + 1) % ML_DBG_HELD;
        d->n--;
    }
    return k;
}

bool ml__debug_hold(ml_arena *a, const ml_loc *loc)
{
    ml_debug *d = a->dbg;
    if (!d) return false;
    ml_lane_t *l = &a->lanes[loc->lane];
    char *p = place_addr(a, loc);
    /* No owner any more: nothing claims, moves or names it. */
    pthread_mutex_lock(&l->lock);
    if (loc->blob) ml__ext_set_owner(&l->ext, loc->span, 0);
    else ml__owner_store(&l->spans[loc->span].owner[loc->index], 0);
    pthread_mutex_unlock(&l->lock);
    memset(p, ML_DBG_FREED_BYTE, loc->bytes);
    poison(p, loc->bytes);

    ml_loc out[16];
    uint32_t k;
    pthread_mutex_lock(&d->lock);
    /* Room in the ring first (it holds at most ML_DBG_HELD). */
    k = d->n == ML_DBG_HELD ? take_oldest(d, out, 1, true) : 0;
    d->ring[(d->head + d->n) % ML_DBG_HELD] = *loc;
    d->n++;
    d->held_bytes[loc->lane] += loc->bytes;
    if (!loc->blob) d->held_blocks[loc->lane]++;
    pthread_mutex_unlock(&d->lock);
    give_back(a, out, k);
    /* Then back to the shares, a few at a time. */
    do {
        pthread_mutex_lock(&d->lock);
        k = take_oldest(d, out, 16, false);
        pthread_mutex_unlock(&d->lock);
        give_back(a, out, k);
    } while (k == 16);
    return true;
}

bool ml__debug_drain(ml_arena *a)
{
    ml_debug *d = a->dbg;
    if (!d) return false;
    bool any = false;
    ml_loc out[64];
    uint32_t k;
    do {
        pthread_mutex_lock(&d->lock);
        k = take_oldest(d, out, 64, true);
        pthread_mutex_unlock(&d->lock);
        give_back(a, out, k);
        any |= k != 0;
    } while (k);
    return any;
}

void ml__debug_fill_new(ml_arena *a, void *p, size_t size)
{
    if (a->dbg) memset(p, ML_DBG_NEW_BYTE, size);
}

void ml__debug_fini(ml_arena *a)
{
    ml_debug *d = a->dbg;
    if (!d) return;
    /* The lanes are about to be unmapped: their shadow must not stay
     * poisoned for whatever is mapped there next. */
    for (uint32_t i = 0; i < d->n; i++) {
        const ml_loc *loc = &d->ring[(d->head + i) % ML_DBG_HELD];
        unpoison(place_addr(a, loc), loc->bytes);
    }
    pthread_mutex_destroy(&d->lock);
    free(d->ring);
    free(d->bits);
    free(d->list);
    free(d);
    a->dbg = NULL;
}

void ml__debug_stats(ml_arena *a, uint64_t *moves, uint64_t *held_bytes)
{
    ml_debug *d = a->dbg;
    *moves = *held_bytes = 0;
    if (!d) return;
    *moves = __atomic_load_n(&d->moves, __ATOMIC_RELAXED);
    pthread_mutex_lock(&d->lock);
    *held_bytes = d->held_bytes[0] + d->held_bytes[1];
    pthread_mutex_unlock(&d->lock);
}

uint32_t ml__debug_held_blocks(ml_arena *a, ml_lane lane)
{
    ml_debug *d = a->dbg;
    if (!d) return 0;
    pthread_mutex_lock(&d->lock);
    uint32_t n = d->held_blocks[lane];
    pthread_mutex_unlock(&d->lock);
    return n;
}

/* Note idx, unless noted already. Caller holds d->lock. Returns false when
 * the list cannot grow (the entry then simply does not move). */
static bool note(ml_debug *d, uint32_t idx)
{
    uint64_t bit = 1ull << (idx & 63);
    if (d->bits[idx / 64] & bit) return true;
    if (d->nlist == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 256;
        uint32_t *v = realloc(d->list, cap * sizeof *v);
        if (!v) return false;
        d->list = v;
        d->cap = cap;
    }
    d->list[d->nlist++] = idx;
    d->bits[idx / 64] |= bit;
    return true;
}

void ml__debug_expose(ml_arena *a, uint32_t idx)
{
    ml_debug *d = a->dbg;
    if (!d || !d->bits) return;
    pthread_mutex_lock(&d->lock);
    note(d, idx);
    pthread_mutex_unlock(&d->lock);
}

static __thread bool in_point;

void ml__debug_point(ml_arena *a, unsigned lane_mask, uint32_t except)
{
    ml_debug *d = a->dbg;
    if (!d || !d->bits || in_point) return;
    in_point = true;
    pthread_mutex_lock(&d->lock);
    uint32_t *v = d->list;
    size_t n = d->nlist;
    d->list = NULL;
    d->nlist = d->cap = 0;
    for (size_t i = 0; i < n; i++) d->bits[v[i] / 64] &= ~(1ull << (v[i] & 63));
    pthread_mutex_unlock(&d->lock);

    ml_moves mv = {0};
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t idx = v[i];
        uint64_t m;
        bool keep = false;
        if (idx == except) {
            keep = true;
        } else if (!ml__try_claim_idx(a, idx, &m)) {
            /* pinned or held by another thread: later; freed: never */
            keep = ml__meta_live(ml__load_acq(&a->slots[idx].meta));
        } else {
            ml_lane lane = (m & ML_M_STATE) == ML_STATE_FAST ? ML_LANE_FAST : ML_LANE_SLOW;
            if ((m & ML_M_RESIDENT) && (lane_mask & (1u << lane))) {
                ml_move ev;
                size_t size = ml__load(&a->slots[idx].size);
                if (ml__move_claimed(a, idx, lane, size, false, &ev) == 0) {
                    __atomic_fetch_add(&d->moves, 1, __ATOMIC_RELAXED);
                    ml__moves_add(&mv, &ev);
                } else {
                    keep = true; /* no room: next time */
                }
            } else {
                keep = (m & ML_M_RESIDENT) != 0; /* another lane's: later */
            }
            ml__unclaim(a, idx);
        }
        if (keep) v[kept++] = idx;
    }
    if (kept) {
        pthread_mutex_lock(&d->lock);
        for (size_t i = 0; i < kept; i++) note(d, v[i]);
        pthread_mutex_unlock(&d->lock);
    }
    free(v);
    ml__moves_fire(a, &mv);
    in_point = false;
}
