/*
 * compact.c — live compaction: data slides together, handles stay valid.
 *
 * A pass over a lane has two phases, both under the lane lock:
 *
 *  1. Evacuation, per size class: the spans of the class are taken in
 *     address order; live blocks of the highest span move into free blocks of
 *     the lowest one, until the two meet. A span whose last block leaves is
 *     released to the extent allocator (the whole span becomes a free hole).
 *
 *  2. Sliding: walking the extents from the bottom, every used extent that
 *     sits right above a free one slides down over it (memmove), and the hole
 *     moves up; holes merge as they go and end as one free tail. Blobs slide
 *     with their data; spans slide whole, and every live block in them is
 *     re-pointed.
 *
 * Nothing moves without its claim (ml__try_claim_idx: live, unpinned, not
 * claimed by anyone else). An entry that cannot be claimed, or a span that
 * holds one, or a span with blocks sitting in some thread's cache (those are
 * referenced by span and index), stays put and the pass works around it. A
 * block's owner word is only a hint: it is trusted once the claimed slot
 * points back at the very same address.
 *
 * A step can be bounded by bytes copied and by time; the phase and cursor
 * survive between steps, so a program can compact a little every frame.
 * A pass ends by handing the pages of the free tail back to the kernel, a
 * MiB at most per budget check, so the resident size really drops.
 *
 * Moves are reported to the move callback after the lane lock is released.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/arena.h"

typedef struct budget {
    uint64_t max_bytes, max_ns, t0, bytes, ops;
    uint64_t t_first; /* when the first copy of the step began (0: none yet) */
    uint64_t scanned; /* blocks and extents looked at (for time checks) */
    ml_compact_result *res;
    ml_moves *mv;
    bool stop;
    bool notify; /* a move callback is registered */
} budget;

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* May a copy of `next` more bytes start? The time it would take is
 * estimated from what this step's copies have cost per byte so far (claims
 * and bookkeeping included), and never below 4 GB/s: a copy into pages the
 * kernel has to fault in first (never written, or handed back by an
 * earlier pass) runs several times slower than memmove. A tenth of the
 * budget is kept for the work around the copies, so that a step ends
 * within its budget. The first copy of a step always goes ahead, so that
 * every step makes progress. */
static bool may_copy(budget *b, size_t next)
{
    if (b->stop) return false;
    if (b->max_bytes && b->bytes && b->bytes + next > b->max_bytes) return (b->stop = true, false);
    if (b->max_ns) {
        uint64_t now = mono_ns();
        if (!b->ops) {
            b->t_first = now;
            return true;
        }
        uint64_t el = now - b->t0, est = next / 4;
        if (b->bytes && b->t_first) {
            /* ns per byte so far, times next (in 128-bit: a slow first
             * copy of a large blob must not wrap the estimate) */
            unsigned __int128 seen = (unsigned __int128)(now - b->t_first) * next / b->bytes;
            if (seen > est) est = seen > UINT64_MAX / 2 ? UINT64_MAX / 2 : (uint64_t)seen;
        }
        if (el + est > b->max_ns - b->max_ns / 10) return (b->stop = true, false);
    }
    return true;
}

/* Looking at entries costs time even when nothing moves (owner hints of
 * cached or freed blocks, pinned or busy entries): check the clock every
 * 256 looks, so that a step that finds little or nothing to move still ends
 * within its budget. Callers keep where they stopped, so that the next
 * step goes on from there: a step always advances, even without a copy. */
static bool scan_over(budget *b)
{
    if (!b->max_ns || (++b->scanned & 255)) return b->stop;
    if (mono_ns() - b->t0 > b->max_ns - b->max_ns / 10) b->stop = true;
    return b->stop;
}

static void copied(budget *b, ml_lane_t *l, size_t n)
{
    b->bytes += n;
    b->ops++;
    b->res->moved_bytes += n;
    b->res->moved_entries++;
    l->compacted_bytes += n;
    l->compacted_entries++;
}

/* Is meta word m of an entry whose bytes are in `lane`? (A compressed entry
 * keeps its record in SlowLane, and moves like any blob.) */
static bool in_lane(uint64_t m, ml_lane lane)
{
    uint64_t st = m & ML_M_STATE;
    return lane == ML_LANE_FAST ? st == ML_STATE_FAST : (st == ML_STATE_SLOW || st == ML_STATE_COMPRESSED);
}

/* Claim the slot named by an owner hint if it really owns `addr` in this
 * lane. Counts pinned/busy entries. */
static bool claim_owner(ml_arena *a, ml_lane lane, uint32_t owner, const char *addr, budget *b)
{
    if (!owner || (owner & ML_OWNER_FREE)) return false;
    uint32_t idx = owner - 1;
    uint64_t m;
    if (!ml__try_claim_idx(a, idx, &m)) {
        uint64_t cur = ml__load_acq(&a->slots[idx].meta);
        if (in_lane(cur, lane) && ml__lane_addr(a, idx, cur) == (uint64_t)(uintptr_t)addr)
            b->res->skipped_pinned++;
        return false;
    }
    if (!in_lane(m, lane) || ml__lane_addr(a, idx, m) != (uint64_t)(uintptr_t)addr) {
        ml__unclaim(a, idx);
        return false;
    }
    return true;
}

/* Note a move for the move callback (only when one is registered: the
 * list costs memory and the walk a cache miss per entry). A compressed
 * entry's record is not the program's data: its moves are not reported.
 * Caller holds the entry's claim (its move number is taken under it). */
static void record(ml_arena *a, budget *b, uint32_t idx, void *from, void *to, ml_lane lane)
{
    if (!b->notify) return;
    uint64_t m = ml__load(&a->slots[idx].meta);
    if (!(m & ML_M_RESIDENT)) return;
    ml_move ev = {ml__handle_of(m, idx), from, to, lane, lane, ++ml__cold(a, idx, m)->moves};
    ml__moves_add(b->mv, &ev);
}

/* ---- phase 1: evacuate the spans of one class ------------------------------- */

/* Returns false when the budget ran out. Caller holds the lane lock. */
static bool evacuate_class(ml_arena *a, ml_lane lane, unsigned cls, budget *b)
{
    ml_lane_t *l = &a->lanes[lane];
    uint32_t *spans = NULL;
    size_t n = 0, cap = 0;
    l->compact_walks++;
    for (uint32_t s = 0; s < l->ext.cap; s += ml__ext_len(&l->ext, s)) {
        if (ml__ext_kind(&l->ext, s) != ML_EXT_SPAN || l->spans[s].cls != cls) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            uint32_t *v = realloc(spans, cap * sizeof *v);
            if (!v) {
                free(spans);
                l->compact_skip = l->compact_block = 0;
                return true;
            }
            spans = v;
        }
        spans[n++] = s;
    }
    size_t csize = ml__class_size[cls];
    /* Resume in the span where an earlier step of this pass stopped, named
     * by its unit (spans come and go between steps), or in the highest one
     * below it if that span is gone. */
    size_t lo = 0, hi = n ? n - 1 : 0;
    uint32_t first_bi = 0;
    if (l->compact_skip && n) {
        uint32_t at = l->compact_skip - 1;
        while (hi > 0 && spans[hi] > at) hi--;
        if (spans[hi] == at) first_bi = l->compact_block;
    }
    bool ok = true;
    while (n && lo < hi) {
        uint32_t src = spans[hi];
        ml_span *sp = &l->spans[src];
        uint32_t bi = first_bi < sp->bump ? first_bi : 0;
        first_bi = 0;
        for (; bi < sp->bump && lo < hi; bi++) {
            if (scan_over(b)) {
                l->compact_skip = src + 1;
                l->compact_block = bi;
                ok = false;
                break;
            }
            char *from = ml__block_addr(l, src, bi);
            if (!claim_owner(a, lane, ml__owner_load(&sp->owner[bi]), from, b)) continue;
            uint32_t idx = ml__owner_load(&sp->owner[bi]) - 1;
            if (!may_copy(b, csize)) {
                ml__unclaim(a, idx);
                l->compact_skip = src + 1;
                l->compact_block = bi;
                ok = false;
                break;
            }
            uint32_t di = 0;
            while (lo < hi && !ml__span_take_block(l, spans[lo], &di)) lo++;
            if (lo >= hi) {
                ml__unclaim(a, idx);
                break;
            }
            char *to = ml__block_addr(l, spans[lo], di);
            memcpy(to, from, a->slots[idx].size);
            ml__owner_store(&l->spans[spans[lo]].owner[di], idx + 1);
            ml__set_lane_addr(a, idx, ml__load(&a->slots[idx].meta), (uint64_t)(uintptr_t)to);
            record(a, b, idx, from, to, lane);
            ml__unclaim(a, idx);
            copied(b, l, csize);
            ml__lane_block_put(l, src, bi);
            if (ml__ext_kind(&l->ext, src) != ML_EXT_SPAN || l->spans[src].nblocks == 0)
                break; /* its last block left: the span is gone */
        }
        if (!ok) break;
        hi--;
    }
    free(spans);
    if (ok) l->compact_skip = l->compact_block = 0;
    return ok;
}

/* ---- phase 2: slide extents down -------------------------------------------- */

/* Claims every live block of span s; false (and nothing claimed) if one is
 * busy or some blocks are in thread caches. */
static bool claim_span(ml_arena *a, ml_lane lane, uint32_t s, uint32_t **out, uint32_t *nout,
                       budget *b)
{
    ml_lane_t *l = &a->lanes[lane];
    ml_span *sp = &l->spans[s];
    uint32_t *v = malloc((sp->used ? sp->used : 1) * sizeof *v);
    if (!v) return false;
    uint32_t n = 0;
    bool ok = true;
    for (uint32_t bi = 0; bi < sp->bump; bi++) {
        uint32_t o = ml__owner_load(&sp->owner[bi]);
        if (!o || (o & ML_OWNER_FREE)) continue;
        if (n == sp->used || !claim_owner(a, lane, o, ml__block_addr(l, s, bi), b)) continue;
        v[n++] = o - 1;
    }
    if (n != sp->used) ok = false; /* pinned, busy, or cached blocks */
    if (!ok) {
        for (uint32_t i = 0; i < n; i++) ml__unclaim(a, v[i]);
        free(v);
        return false;
    }
    *out = v;
    *nout = n;
    return true;
}

/* Returns false when the budget ran out (cursor left at the stopping point). */
static bool slide(ml_arena *a, ml_lane lane, budget *b)
{
    ml_lane_t *l = &a->lanes[lane];
    size_t unit = ml__lane_unit(l);
    char *base = ml__lane_base(l);
    uint32_t s = l->compact_cursor;
    if (s >= l->ext.cap) s = 0;
    /* The cursor may point into the middle of an extent after other threads
     * changed the lane between steps: realign from the start. */
    if (s) {
        uint32_t x = 0;
        while (x < l->ext.cap && x + ml__ext_len(&l->ext, x) <= s) x += ml__ext_len(&l->ext, x);
        s = x;
    }
    while (s < l->ext.cap) {
        if (scan_over(b)) {
            l->compact_cursor = s;
            return false;
        }
        uint32_t len = ml__ext_len(&l->ext, s);
        unsigned kind = ml__ext_kind(&l->ext, s);
        if (kind == ML_EXT_FREE || s == 0 || ml__ext_kind(&l->ext, ml__ext_prev(&l->ext, s)) != ML_EXT_FREE) {
            s += len;
            continue;
        }
        size_t bytes = (size_t)len * unit;
        if (kind == ML_EXT_BLOB) {
            uint32_t owner = ml__ext_owner(&l->ext, s);
            char *from = base + (size_t)s * unit;
            if (!claim_owner(a, lane, owner, from, b)) {
                s += len;
                continue;
            }
            if (!may_copy(b, bytes)) {
                ml__unclaim(a, owner - 1);
                l->compact_cursor = s;
                return false;
            }
            uint32_t ns = ml__ext_slide_down(&l->ext, s);
            char *to = base + (size_t)ns * unit;
            memmove(to, from, bytes);
            ml__set_lane_addr(a, owner - 1, ml__load(&a->slots[owner - 1].meta), (uint64_t)(uintptr_t)to);
            record(a, b, owner - 1, from, to, lane);
            ml__unclaim(a, owner - 1);
            copied(b, l, bytes);
            s = ns + len;
        } else { /* a span */
            uint32_t *idx, n;
            if (!claim_span(a, lane, s, &idx, &n, b)) {
                s += len;
                continue;
            }
            if (!may_copy(b, bytes)) {
                for (uint32_t i = 0; i < n; i++) ml__unclaim(a, idx[i]);
                free(idx);
                l->compact_cursor = s;
                return false;
            }
            uint32_t ns = ml__lane_span_slide(l, s);
            char *from = base + (size_t)s * unit, *to = base + (size_t)ns * unit;
            memmove(to, from, bytes);
            size_t delta = (size_t)(from - to);
            for (uint32_t i = 0; i < n; i++) {
                uint64_t mi = ml__load(&a->slots[idx[i]].meta);
                char *old = (char *)(uintptr_t)ml__lane_addr(a, idx[i], mi);
                ml__set_lane_addr(a, idx[i], mi, (uint64_t)(uintptr_t)(old - delta));
                record(a, b, idx[i], old, old - delta, lane);
                ml__unclaim(a, idx[i]);
                b->res->moved_entries++;
                l->compacted_entries++;
            }
            free(idx);
            b->bytes += bytes;
            b->ops++;
            b->res->moved_bytes += bytes;
            l->compacted_bytes += bytes;
            s = ns + len;
        }
    }
    l->compact_cursor = 0;
    return true;
}

/* Hand the pages of the free tail back to the kernel, a MiB at a time
 * within the budget (a large madvise can take milliseconds). Only the part
 * handed out since its last purge (below ext.clean_from) needs it: the
 * purge goes down from there to the start of the tail, lowering clean_from
 * as it goes, so a step that runs out of time leaves it exact, and an idle
 * lane's pages are neither purged nor counted twice. Returns false when
 * the budget ran out. Caller holds the lock. */
static bool purge_tail(ml_lane_t *l, budget *b)
{
    uint32_t cap = l->ext.cap;
    if (!cap) return true;
    uint32_t last = cap - ml__ext_len(&l->ext, cap - 1);
    if (ml__ext_kind(&l->ext, last) != ML_EXT_FREE || l->region.locked) return true;
    size_t unit = ml__lane_unit(l);
    const uint32_t chunk = (uint32_t)(((size_t)1 << 20) / unit ? ((size_t)1 << 20) / unit : 1);
    if (l->ext.clean_from > cap) l->ext.clean_from = cap;
    /* A pass purges at most what was dirty when its purge began (kept in
     * compact_cursor, UINT32_MAX until then): tail memory dirtied again
     * between bounded steps waits for the next pass, so a pass always ends. */
    if (l->compact_cursor == UINT32_MAX) l->compact_cursor = l->ext.clean_from > last ? l->ext.clean_from - last : 0;
    const uint64_t probe = ((size_t)64 << 10) / unit ? ((size_t)64 << 10) / unit : 1;
    uint64_t probe_per_mib = 0; /* what this step's first call cost */
    while (l->compact_cursor > 0 && l->ext.clean_from > last) {
        uint32_t to = l->ext.clean_from;
        uint32_t n = to - last < chunk ? to - last : chunk;
        if (n > l->compact_cursor) n = l->compact_cursor;
        if (b->max_ns) {
            /* Hand back what fits in the time left, at what it has cost
             * lately (100 us a MiB until measured; it ranged from 100 to
             * 200 us here), or at what this step's first call cost when
             * that was more than twice as much (a small call is mostly its
             * fixed cost, and twice trips at 12.5 us for 64 KiB; yet four
             * times left more FastLane 100 us steps over budget here, 13-16%
             * against 9-10%): the cost moves from call to call, and on a
             * busy host ten-fold for a while (1-2.3 ms a MiB were seen
             * here). So the step's first call is a probe of 64 KiB
             * (one unit where units are larger: FastLane's spans with a
             * high threshold), which goes ahead even when no time is left
             * if the step has done nothing yet, so that every step makes
             * progress. */
            uint64_t per_mib = l->purge_ns_per_mib ? l->purge_ns_per_mib : 100000;
            if (probe_per_mib > 2 * per_mib) per_mib = probe_per_mib;
            uint64_t per_unit = (per_mib * unit >> 20) + 1;
            uint64_t el = mono_ns() - b->t0, usable = b->max_ns - b->max_ns / 10;
            uint64_t fit = el < usable ? (usable - el) / per_unit : 0;
            if (fit == 0 && b->ops) return false;
            if (!probe_per_mib) fit = fit && fit < probe ? fit : probe;
            if (fit < n) n = (uint32_t)fit;
        }
        uint32_t from = to - n;
        uint64_t t = mono_ns();
        int rc = ml__region_purge(&l->region, (size_t)from * unit, (size_t)n * unit);
        uint64_t took = mono_ns() - t;
        b->res->release_ns += took;
        b->ops++;
        if (!probe_per_mib)
            probe_per_mib = (uint64_t)((unsigned __int128)took * (1u << 20) / ((size_t)n * unit)) + 1;
        /* Learn the cost from chunks of 256 KiB or more (a smaller one is
         * mostly the call's fixed cost): at once when it rose, an eighth at
         * a time when it fell (it varies from call to call; erring long
         * keeps steps within budget), but at most 4x in one go (a thread
         * preempted during the call must not shrink the next forty steps'
         * chunks to the minimum). */
        if ((size_t)n * unit >= ((size_t)256 << 10)) {
            uint64_t seen = (uint64_t)((unsigned __int128)took * (1u << 20) / ((size_t)n * unit));
            uint64_t was = l->purge_ns_per_mib;
            if (was && seen > 4 * was) seen = 4 * was;
            l->purge_ns_per_mib = seen >= was ? seen : (7 * was + seen) / 8;
        }
        if (rc != 0) return true; /* the pages stay; the next pass tries again */
        l->purged_bytes += (size_t)n * unit;
        b->res->released_bytes += (size_t)n * unit;
        l->ext.clean_from = from;
        l->compact_cursor -= n;
    }
    return true;
}

/* ---- the step ------------------------------------------------------------------ */

/* Ask every thread to hand back cached FastLane blocks (they pin spans);
 * this thread does it at once. */
static void request_flush(ml_arena *a)
{
    ml_tcache *own = ml__tc_get(a);
    if (own) ml__tc_flush(a, own);
    pthread_mutex_lock(&a->tc_list_lock);
    for (ml_tcache *tc = a->tcaches; tc; tc = tc->next)
        if (tc != own) __atomic_store_n(&tc->flush_req, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&a->tc_list_lock);
}

static int step(ml_arena *a, ml_lane lane, uint64_t max_bytes, uint64_t max_ns, ml_compact_result *res)
{
    ml_lane_t *l = &a->lanes[lane];
    ml_moves mv = {0};
    budget b = {.max_bytes = max_bytes, .max_ns = max_ns, .t0 = mono_ns(), .res = res, .mv = &mv,
                .notify = __atomic_load_n(&a->move_fn, __ATOMIC_ACQUIRE) != NULL};
    if (lane == ML_LANE_FAST) request_flush(a);
    pthread_mutex_lock(&l->lock);
    bool finished = false;
    if (l->compact_phase == 0) {
        /* Finding a class's spans walks every extent of the lane, so walk
         * only for classes with two spans or more (one has nowhere to go),
         * and start another walk only while the budget lasts: a step over
         * a large lane ends within it even before its first copy. */
        bool walked = false;
        while (l->compact_cursor < l->nclasses) {
            /* The empty span a class keeps goes too: a compacted lane with
             * nothing in it is one free range, and says 0 fragmentation. */
            if (l->cls_spans[l->compact_cursor] < 2) {
                ml__lane_release_empty(l, l->compact_cursor);
                l->compact_skip = l->compact_block = 0; /* (a resume point in it is gone) */
                l->compact_cursor++;
                continue;
            }
            if (walked && b.max_ns && mono_ns() - b.t0 > b.max_ns - b.max_ns / 10) {
                b.stop = true;
                break;
            }
            walked = true;
            if (!evacuate_class(a, lane, l->compact_cursor, &b)) break;
            ml__lane_release_empty(l, l->compact_cursor);
            l->compact_cursor++;
        }
        if (l->compact_cursor >= l->nclasses) {
            l->compact_phase = 1;
            l->compact_cursor = 0;
        }
    }
    if (l->compact_phase == 1 && !b.stop && slide(a, lane, &b)) {
        l->compact_phase = 2;
        l->compact_cursor = UINT32_MAX; /* purge_tail sets what to purge */
    }
    if (l->compact_phase == 2 && !b.stop && purge_tail(l, &b)) {
        l->compact_phase = 0;
        l->compact_cursor = 0;
        l->compactions++;
        /* What this pass could not empty (pinned or cached blocks) does not
         * start the next one: see compaction_worth in policy.c. */
        l->reclaim_floor = ml__lane_reclaimable(l);
        l->reclaim_floor_ns = ml__coarse_ns();
        finished = true;
    }
    pthread_mutex_unlock(&l->lock);
    ml__moves_fire(a, &mv);
    if (b.ops && ML_EVENT_ON(a) && (b.bytes || b.res->released_bytes))
        ml__event(a, ML_EVENT_COMPACT, ML_HANDLE_NULL, b.bytes, res->moved_entries, lane, lane);
    res->done = finished;
    res->elapsed_ns += mono_ns() - b.t0;
    return 0;
}

int ml_compact_step(ml_arena *a, ml_lane lane, uint64_t max_bytes, uint64_t max_ns,
                    ml_compact_result *res)
{
    if (!a || (lane != ML_LANE_FAST && lane != ML_LANE_SLOW)) return -EINVAL;
    ml_compact_result local;
    if (!res) res = &local;
    memset(res, 0, sizeof *res);
    ML_DEBUG_POINT(a, ML_DEBUG_ALL_LANES, UINT32_MAX);
    return step(a, lane, max_bytes, max_ns, res);
}

int ml_compact(ml_arena *a, ml_lane lane, ml_compact_result *res)
{
    if (!a || (lane != ML_LANE_FAST && lane != ML_LANE_SLOW)) return -EINVAL;
    ml_compact_result local;
    if (!res) res = &local;
    memset(res, 0, sizeof *res);
    ML_DEBUG_POINT(a, ML_DEBUG_ALL_LANES, UINT32_MAX);
    /* Finish a pass left half done by bounded steps, then do a whole one. */
    ml_lane_t *l = &a->lanes[lane];
    pthread_mutex_lock(&l->lock);
    bool fresh = !ml__lane_in_pass(l);
    pthread_mutex_unlock(&l->lock);
    if (!fresh) step(a, lane, 0, 0, res);
    step(a, lane, 0, 0, res);
    res->done = true;
    return 0;
}

int ml__compact_for_room(ml_arena *a, ml_lane lane)
{
    ml_lane_t *l = &a->lanes[lane];
    pthread_mutex_lock(&l->lock);
    uint64_t free_units = l->ext.free_units;
    uint64_t largest = ml__ext_largest_free(&l->ext);
    uint64_t span_free = l->span_units_total * ml__lane_unit(l) - l->blocks_used_bytes;
    pthread_mutex_unlock(&l->lock);
    /* Worth it only if free space exists outside the largest hole. */
    if (free_units <= largest && span_free < 2 * ml__lane_unit(l)) return 0;
    ml_compact_result r;
    ml_compact(a, lane, &r);
    return r.moved_bytes > 0 || r.released_bytes > 0;
}
