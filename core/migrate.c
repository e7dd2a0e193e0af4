/*
 * migrate.c — moving entries between lanes (the seed's OneWayLane, both
 * ways), resizing behind a handle, and making room in a full FastLane.
 *
 * Every move follows the same steps, under the entry's claim (so no pin can
 * be taken and no free can happen meanwhile, and a pin that arrives waits
 * and then sees the new place):
 *   1. find a place in the destination lane (migration may use SlowLane's
 *      scratch reserve: that is what the reserve is for);
 *   2. copy the bytes straight from the old place to the new one (both are
 *      lane memory, so no buffer and no allocation per move);
 *   3. rewrite the stub: address first, then the state bits in the meta word;
 *   4. give the old place back to its lane;
 *   5. record the move in the entry's history and, for the move callback, in
 *      the caller's list (fired once every lock is released).
 * A move that cannot find a place changes nothing.
 *
 * Live counts per lane stay exact across moves: a lane's live entries are
 * its allocations - frees + entries migrated in - entries migrated out.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/pager_iface.h"

void ml__moves_add(ml_moves *mv, const ml_move *m)
{
    if (mv->n == mv->cap) {
        size_t cap = mv->cap ? mv->cap * 2 : 64;
        ml_move *v = realloc(mv->v, cap * sizeof *v);
        if (!v) return; /* the move happened; only its notification is lost */
        mv->v = v;
        mv->cap = cap;
    }
    mv->v[mv->n++] = *m;
}

void ml__moves_fire(ml_arena *a, ml_moves *mv)
{
    void *ctx;
    ml_move_fn fn = mv->n ? ml__move_cb(a, &ctx) : NULL;
    if (fn)
        for (size_t i = 0; i < mv->n; i++)
            if (mv->v[i].seq)
                fn(ctx, mv->v[i].h, mv->v[i].old_addr, mv->v[i].new_addr, mv->v[i].from, mv->v[i].to,
                   mv->v[i].seq);
    free(mv->v);
    mv->v = NULL;
    mv->n = mv->cap = 0;
}

void ml__fire_move(ml_arena *a, const ml_move *ev)
{
    void *ctx;
    ml_move_fn fn = ev->seq ? ml__move_cb(a, &ctx) : NULL;
    if (fn) fn(ctx, ev->h, ev->old_addr, ev->new_addr, ev->from, ev->to, ev->seq);
}

uint64_t ml__next_seq(ml_arena *a, uint32_t idx, uint64_t m)
{
    if (!__atomic_load_n(&a->move_fn, __ATOMIC_ACQUIRE)) return 0;
    return ++ml__cold(a, idx, m)->moves;
}

bool ml__pagein_report(ml_arena *a, uint32_t idx, uint64_t m, uint64_t old, ml_move *ev)
{
    uint64_t seq = ml__next_seq(a, idx, m);
    if (!seq) return false;
    ev->h = ml__handle_of(m, idx);
    ev->old_addr = (void *)(uintptr_t)old;
    ev->new_addr = (void *)(uintptr_t)ml__load(&a->slots[idx].addr);
    ev->from = ev->to = ML_LANE_SLOW; /* (a cold entry's record is SlowLane's or the swap file's) */
    ev->seq = seq;
    return true;
}

/* Usage counters follow the data: the moving thread's cache accounts for it. */
static void count_move(ml_arena *a, ml_lane from, ml_lane to, size_t old_bytes, size_t new_bytes,
                       size_t old_size, size_t new_size)
{
    ml__account(a, from, -(int64_t)old_bytes, -(int64_t)old_size);
    ml__account(a, to, (int64_t)new_bytes, (int64_t)new_size);
    if (from != to) {
        /* Out of one and into the other at once (both locks, fast before
         * slow), so that ml_stats_get never counts the entry in both lanes
         * or in neither. */
        pthread_mutex_lock(&a->lanes[ML_LANE_FAST].lock);
        pthread_mutex_lock(&a->lanes[ML_LANE_SLOW].lock);
        a->lanes[from].migrated_out++;
        a->lanes[to].migrated_in++;
        pthread_mutex_unlock(&a->lanes[ML_LANE_SLOW].lock);
        pthread_mutex_unlock(&a->lanes[ML_LANE_FAST].lock);
    }
}

/* A kept swap record (clean copy) does not follow a move: release it. */
static void drop_copy(ml_arena *a, uint32_t idx)
{
    uint64_t m = ml__load(&a->slots[idx].meta);
    if (!(m & ML_M_HASCOPY)) return;
    ml__pager->drop_copy(a, idx, m);
    __atomic_fetch_and(&a->slots[idx].meta, ~(ML_M_HASCOPY | ML_M_CLEAN), __ATOMIC_RELAXED);
}

int ml__move_claimed(ml_arena *a, uint32_t idx, ml_lane to, size_t new_size, bool internal,
                     ml_move *ev)
{
    ml_slot *s = &a->slots[idx];
    drop_copy(a, idx);
    uint64_t m = ml__load(&s->meta);
    ml_loc old;
    ml__locate(a, idx, m, &old);
    size_t size = s->size;
    size_t align = (size_t)1 << ((m & ML_M_ALIGN) >> ML_M_ALIGN_SHIFT);
    ml_place np;
    int rc = ml__place(a, to, new_size, align, idx + 1, internal, &np);
    if (rc) return rc;

    char *src = (char *)(uintptr_t)ml__load(&s->addr);
    memcpy(np.addr, src, size < new_size ? size : new_size);
    __atomic_store_n(&s->addr, (uint64_t)(uintptr_t)np.addr, __ATOMIC_RELEASE);
    __atomic_store_n(&s->size, new_size, __ATOMIC_RELAXED);
    uint64_t st = to == ML_LANE_FAST ? ML_STATE_FAST : ML_STATE_SLOW;
    uint64_t cur = ml__load(&s->meta), want;
    do {
        want = (cur & ~(ML_M_STATE | ML_M_BLOB)) | st | (np.blob ? ML_M_BLOB : 0);
    } while (!__atomic_compare_exchange_n(&s->meta, &cur, want, true, __ATOMIC_RELEASE,
                                          __ATOMIC_RELAXED));

    ml_lane_t *ol = &a->lanes[old.lane];
    if (!ml__debug_hold(a, &old)) {
        pthread_mutex_lock(&ol->lock);
        if (old.blob) ml__lane_blob_free(ol, old.span);
        else ml__lane_block_put(ol, old.span, old.index);
        pthread_mutex_unlock(&ol->lock);
    }
    count_move(a, old.lane, to, old.bytes, np.bytes, size, new_size);

    if (old.lane != to && ML_EVENT_ON(a))
        ml__event(a, ML_EVENT_MIGRATE, ml__handle_of(m, idx), new_size, 1, old.lane, to);
    uint64_t seq = ml__next_seq(a, idx, m);
    ml_cold *c = ml__cold(a, idx, m);
    if (old.lane != to) {
        c->migrations++;
        c->last_migration_ns = ml__now(a);
        c->last_from = (uint8_t)old.lane;
        c->last_to = (uint8_t)to;
    }
    if (ev) {
        ev->h = ml__handle_of(m, idx);
        ev->old_addr = src;
        ev->new_addr = np.addr;
        ev->from = old.lane;
        ev->to = to;
        ev->seq = seq;
    }
    return 0;
}

/* Can an entry of this size and meta word (its alignment) live in
 * FastLane at all: at most the threshold, and a size class for it? */
static bool fits_fast(const ml_arena *a, size_t size, uint64_t m)
{
    size_t align = (size_t)1 << ((m & ML_M_ALIGN) >> ML_M_ALIGN_SHIFT);
    return size <= a->cfg.threshold &&
           ml__size_class_aligned(size, align < 16 ? 16 : align, a->lanes[ML_LANE_FAST].nclasses) != ML_CLASS_NONE;
}

int ml_migrate(ml_arena *a, ml_handle h, ml_lane to)
{
    if (!a || (to != ML_LANE_FAST && to != ML_LANE_SLOW)) return -EINVAL;
    ML_DEBUG_POINT(a, 1u << ML_LANE_SLOW, ml__idx(h));
    uint64_t m;
    int rc = ml__claim(a, h, ML_CLAIM_ANY, &m);
    if (rc) return rc;
    uint32_t idx = ml__idx(h);
    ml_lane from = (m & ML_M_STATE) == ML_STATE_FAST ? ML_LANE_FAST : ML_LANE_SLOW;
    size_t size = a->slots[idx].size;
    ml_move back = {.seq = 0};
    if (!(m & ML_M_RESIDENT) && to == ML_LANE_FAST && !(m & ML_M_PINS) && fits_fast(a, size, m)) {
        /* A cold entry comes back into SlowLane first, as on any access
         * (compacting SlowLane if its free space is in pieces), and moves
         * on from there. Between the claims another thread may have
         * changed it: everything is read again. */
        ml__unclaim(a, idx);
        rc = ml__claim_resident(a, h, false, 0, 0, &m, &back);
        if (rc) return rc;
        from = (m & ML_M_STATE) == ML_STATE_FAST ? ML_LANE_FAST : ML_LANE_SLOW;
        size = a->slots[idx].size;
    }
    if (from == to) rc = -EALREADY;
    else if (to == ML_LANE_FAST && !fits_fast(a, size, m)) rc = -EINVAL;
    else if (m & ML_M_PINS) rc = -EBUSY;
    ml_move ev;
    if (rc == 0) rc = ml__move_claimed(a, idx, to, size, to == ML_LANE_SLOW, &ev);
    ml__unclaim(a, idx);
    ml__fire_move(a, &back); /* (it came back: reported first, by its seq too) */
    if (rc == 0) ml__fire_move(a, &ev);
    return rc;
}

int ml_migrate_cost(ml_arena *a, ml_handle h, ml_lane to, ml_move_cost *out)
{
    if (!a || !out || (to != ML_LANE_FAST && to != ML_LANE_SLOW)) return -EINVAL;
    uint64_t m;
    int rc = ml__claim(a, h, ML_CLAIM_ANY, &m);
    if (rc) return rc;
    uint32_t idx = ml__idx(h);
    memset(out, 0, sizeof *out);
    size_t size = a->slots[idx].size;
    size_t align = (size_t)1 << ((m & ML_M_ALIGN) >> ML_M_ALIGN_SHIFT);
    ml_lane from = (m & ML_M_STATE) == ML_STATE_FAST ? ML_LANE_FAST : ML_LANE_SLOW;
    bool pinned = (m & ML_M_PINS) != 0;
    ml__unclaim(a, idx);

    out->bytes = size;
    ml_lane_t *l = &a->lanes[to];
    unsigned c = ml__size_class_aligned(size, align < 16 ? 16 : align, l->nclasses);
    if (c != ML_CLASS_NONE) out->dest_bytes = ml__class_size[c];
    else out->dest_bytes = ml__align_up(size, ml__lane_unit(l));
    if (from == to) out->reason = -EALREADY;
    else if (to == ML_LANE_FAST && !fits_fast(a, size, m)) out->reason = -EINVAL;
    else if (pinned) out->reason = -EBUSY;
    out->possible = out->reason == 0;

    pthread_mutex_lock(&l->lock);
    bool room;
    if (c != ML_CLASS_NONE)
        room = l->partial[c] != ML_SPAN_NIL || ml__ext_largest_free(&l->ext) >= l->span_units[c];
    else
        room = (uint64_t)ml__ext_largest_free(&l->ext) << l->unit_shift >= out->dest_bytes;
    pthread_mutex_unlock(&l->lock);
    out->needs_room = !room;
    return 0;
}

/* Age at `now` of something created at `born`: 0 if it was created after
 * `now` was read (another thread allocated meanwhile, on a later tick of
 * the coarse clock), never a wrapped-around huge age. */
static inline uint64_t age_at(uint64_t now, uint64_t born) { return born < now ? now - born : 0; }

int ml_migrate_all(ml_arena *a, uint32_t min_age_ms, size_t *moved)
{
    if (moved) *moved = 0;
    if (!a) return -EINVAL;
    ML_DEBUG_POINT(a, ML_DEBUG_ALL_LANES, UINT32_MAX);
    uint32_t n = __atomic_load_n(&a->slot_count, __ATOMIC_ACQUIRE);
    uint64_t now = ml__now(a), min_age = (uint64_t)min_age_ms * 1000000u;
    ml_moves mv = {0};
    int rc = 0;
    size_t count = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t m = ml__load_acq(&a->slots[i].meta);
        if ((m & ML_M_STATE) != ML_STATE_FAST) continue;
        if (age_at(now, ml__load(&a->slots[i].created_ns)) < min_age) continue;
        if (!ml__try_claim_idx(a, i, &m)) continue; /* pinned, busy or freed */
        /* Re-check under the claim: the slot may have been reused. */
        if ((m & ML_M_STATE) != ML_STATE_FAST || age_at(now, a->slots[i].created_ns) < min_age) {
            ml__unclaim(a, i);
            continue;
        }
        ml_move ev;
        rc = ml__move_claimed(a, i, ML_LANE_SLOW, a->slots[i].size, true, &ev);
        ml__unclaim(a, i);
        if (rc) break;
        ml__moves_add(&mv, &ev);
        count++;
    }
    if (count) {
        /* The classes it emptied keep their last span (so that a class that
         * empties and refills does not thrash), and this thread's cache
         * keeps free blocks in others: those go back too, once per call, so
         * that a FastLane emptied of old entries is free space in one
         * piece, not a lane full of empty spans. */
        ml_lane_t *fl = &a->lanes[ML_LANE_FAST];
        ml_tcache *own = ml__tc_get(a); /* (its cached blocks hold spans) */
        if (own) ml__tc_flush(a, own);
        pthread_mutex_lock(&fl->lock);
        for (unsigned c = 0; c < fl->nclasses; c++) ml__lane_release_empty(fl, c);
        pthread_mutex_unlock(&fl->lock);
    }
    ml__moves_fire(a, &mv);
    if (moved) *moved = count;
    return rc;
}

int ml_realloc(ml_arena *a, ml_handle h, size_t new_size)
{
    if (!a || new_size == 0 || new_size > a->cfg.slow_lane_max_size) return -EINVAL;
    uint64_t m;
    ml_slot *slot;
    int rc = ml__lookup(a, h, &slot, &m);
    if (rc) return rc;
    /* A blob size no room could hold fails before anything moves (a cold
     * handle would be brought back first, making room for it): larger than
     * any size class, no place the entry has can hold it either. */
    if (new_size > ML_MAX_CLASS_SIZE && ml__slow_never_holds(a, new_size)) return -ENOMEM;
    ML_DEBUG_POINT(a, 1u << ML_LANE_SLOW, ml__idx(h));
    ml_move back;
    rc = ml__claim_resident(a, h, false, 0, 0, &m, &back);
    if (rc) return rc;
    uint32_t idx = ml__idx(h);
    ml_slot *s = &a->slots[idx];
    ml_loc loc;
    ml__locate(a, idx, m, &loc);
    size_t size = s->size;
    /* Its lane for the new size, as for an allocation: FastLane only with a
     * class for the size at the entry's alignment (threshold 1000 has none
     * for 2048-aligned entries: those belong in SlowLane, not by failover). */
    ml_lane want = fits_fast(a, new_size, m) ? ML_LANE_FAST : ML_LANE_SLOW;
    /* In place when it fits what is reserved. Two entries that fit would
     * rather move: a small entry grown past the threshold (to SlowLane,
     * where an allocation of its new size would go), and a shrink that
     * would waste most of its place. Both move only for the lane's sake:
     * pinned, or with no room elsewhere, they stay where they are. */
    bool grew_past = loc.lane == ML_LANE_FAST && want == ML_LANE_SLOW;
    bool wasteful = new_size < loc.bytes / 4 && loc.bytes > ML_PAGE_SIZE;
    bool can_stay = new_size <= loc.bytes;
    /* ML_DEBUG_MOVES: the entry moves whenever it can, within its lane, so
     * that a pointer to it kept across the call meets poison. */
    bool debug_move = (a->debug & ML_DEBUG_MOVES) != 0;
    if (can_stay && (!(wasteful || grew_past || debug_move) || (m & ML_M_PINS))) {
    in_place:
        drop_copy(a, idx); /* the bytes change */
        __atomic_store_n(&s->size, new_size, __ATOMIC_RELAXED);
        ml__unclaim(a, idx);
        count_move(a, loc.lane, loc.lane, 0, 0, size, new_size);
        ml__fire_move(a, &back);
        return 0;
    }
    if (m & ML_M_PINS) {
        ml__unclaim(a, idx);
        ml__fire_move(a, &back);
        return -EBUSY;
    }
    ml_lane to = grew_past ? ML_LANE_SLOW : (loc.lane == ML_LANE_SLOW && !wasteful ? ML_LANE_SLOW : want);
    /* A move made only for ML_DEBUG_MOVES stays in its lane, and makes no
     * room: with none, the entry stays where it is. */
    bool debug_only = can_stay && !grew_past && !wasteful;
    /* No remedy could make room in SlowLane: fail before evicting anything. */
    bool never = ml__slow_never_holds(a, new_size);
    if (to == ML_LANE_SLOW && !can_stay && never) {
        ml__unclaim(a, idx);
        ml__fire_move(a, &back);
        return -ENOMEM;
    }
    ml_move ev;
    rc = ml__move_claimed(a, idx, to, new_size, false, &ev);
    if (rc && to == ML_LANE_FAST && a->cfg.failover_to_slow && !debug_only) {
        to = ML_LANE_SLOW;
        rc = ml__move_claimed(a, idx, ML_LANE_SLOW, new_size, false, &ev);
    }
    if (rc && can_stay) goto in_place; /* (nothing moved: the data is where it was) */
    /* SlowLane full: cold blobs can leave it, as for ml_alloc (this entry is
     * claimed, so it is not among them). */
    for (int round = 0; rc == -ENOMEM && to == ML_LANE_SLOW && !never && round < 8; round++) {
        if (ml__slow_make_room(a, new_size) == 0) break;
        rc = ml__move_claimed(a, idx, ML_LANE_SLOW, new_size, false, &ev);
    }
    ml__unclaim(a, idx);
    ml__fire_move(a, &back);
    if (rc == 0) ml__fire_move(a, &ev);
    return rc;
}

/* ---- making room in FastLane ------------------------------------------------ */

int ml__make_room_fast(ml_arena *a)
{
    /* Our own cached blocks keep spans alive for nothing: return them. */
    ml_tcache *tc = ml__tc_get(a);
    if (tc) ml__tc_flush(a, tc);

    ml_lane_t *l = &a->lanes[ML_LANE_FAST];
    /* Pick the span whose live entries are oldest on average. */
    pthread_mutex_lock(&l->lock);
    uint32_t best = ML_SPAN_NIL;
    double best_age = -1;
    uint64_t now = ml__now(a);
    for (uint32_t s = 0; s < l->ext.cap; s += ml__ext_len(&l->ext, s)) {
        if (ml__ext_kind(&l->ext, s) != ML_EXT_SPAN) continue;
        ml_span *sp = &l->spans[s];
        double sum = 0;
        uint32_t live = 0;
        for (uint32_t b = 0; b < sp->bump; b++) {
            uint32_t o = ml__owner_load(&sp->owner[b]);
            if (!o || (o & ML_OWNER_FREE)) continue;
            sum += (double)age_at(now, ml__load(&a->slots[o - 1].created_ns));
            live++;
        }
        if (live && sum / live > best_age) {
            best_age = sum / live;
            best = s;
        }
    }
    if (best == ML_SPAN_NIL) {
        pthread_mutex_unlock(&l->lock);
        return 0;
    }
    /* Claim its entries (skipping pinned or busy ones), then move them
     * without the lane lock (moving takes it). */
    ml_span *sp = &l->spans[best];
    char *base = ml__block_addr(l, best, 0);
    size_t csize = ml__class_size[sp->cls];
    uint32_t *claimed = malloc(sp->bump * sizeof *claimed);
    uint32_t n = 0;
    for (uint32_t b = 0; claimed && b < sp->bump; b++) {
        uint32_t o = ml__owner_load(&sp->owner[b]);
        if (!o || (o & ML_OWNER_FREE)) continue;
        uint64_t m;
        if (!ml__try_claim_idx(a, o - 1, &m)) continue;
        if ((m & ML_M_STATE) != ML_STATE_FAST ||
            ml__load(&a->slots[o - 1].addr) != (uint64_t)(uintptr_t)(base + b * csize)) {
            ml__unclaim(a, o - 1); /* a stale owner hint */
            continue;
        }
        claimed[n++] = o - 1;
    }
    pthread_mutex_unlock(&l->lock);
    ml_moves mv = {0};
    int moved = 0;
    for (uint32_t i = 0; i < n; i++) {
        ml_move ev;
        if (ml__move_claimed(a, claimed[i], ML_LANE_SLOW, a->slots[claimed[i]].size, true, &ev) == 0) {
            ml__moves_add(&mv, &ev);
            moved++;
        }
        ml__unclaim(a, claimed[i]);
    }
    free(claimed);
    ml__moves_fire(a, &mv);
    return moved;
}
