/*
 * handles.c — the handle table: slots (stubs), generations, claims.
 *
 * A slot is 32 hot bytes (meta word, address, size, creation time) in one
 * dense array, with its cold half (tag, group, access history) in a
 * parallel array, so ml_get, ml_alloc and ml_free touch one cache line per
 * handle. Both arrays are reserved for max_handles up
 * front (lazily backed) and never move, which is what lets ml_get run
 * without a lock while the table grows.
 *
 * Generations: a free slot's meta word holds the generation its next
 * allocation will carry. Freeing bumps it, so every copy of the old handle
 * is stale from that instant. A slot that has issued ML_GEN_MAX is retired
 * instead of reused: a stale handle can never validate again, at the cost of
 * one table slot (32 + 88 bytes: the slot, its cold half and its cold
 * location) per 4 million (2^22 - 2) reuses of that slot.
 *
 * Telling stale from forged: generations only grow, so a handle whose
 * generation is below the slot's current one was issued and freed
 * (-ESTALE); one above it, or for a slot never used, or with the wrong
 * arena tag or birth lane, was never issued (-EINVAL).
 */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>

#include "core/arena.h"

int64_t ml_handle_id(ml_handle h)
{
    if (h.bits == 0) return 0;
    int64_t id = (int64_t)(uint32_t)h.bits + 1;
    return (ml__hi(h.bits) & ML_HI_BORN_SLOW) ? -id : id;
}

uint32_t ml_handle_generation(ml_handle h) { return ML_HI_GEN(ml__hi(h.bits)); }

void ml__pause(unsigned *spins)
{
    if (++*spins < 64) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    } else {
        sched_yield();
    }
}

int ml__check(const ml_arena *a, ml_handle h, uint64_t m)
{
    if (ml__same(h, m)) return 0;
    uint32_t hh = ml__hi(h.bits), hm = ml__hi(m);
    if ((hh & ML_HI_HANDLE) != ML_HI_HANDLE || ML_HI_TAG(hh) != a->tag) return -EINVAL;
    uint32_t gh = ML_HI_GEN(hh), gm = ML_HI_GEN(hm);
    if (gh == 0) return -EINVAL;
    if (gh < gm) return -ESTALE;
    /* Same generation: a free slot has not issued it yet; a live one was
     * issued with the other birth lane (forged). Higher: never issued. */
    return -EINVAL;
}

int ml__lookup(ml_arena *a, ml_handle h, ml_slot **slot, uint64_t *meta)
{
    uint32_t idx = ml__idx(h);
    if (ML_HI_TAG(ml__hi(h.bits)) != a->tag) return -EINVAL;
    if (idx >= __atomic_load_n(&a->slot_count, __ATOMIC_ACQUIRE)) return -EINVAL;
    ml_slot *s = &a->slots[idx];
    uint64_t m = ml__load_acq(&s->meta);
    int rc = ml__check(a, h, m);
    if (rc) return rc;
    *slot = s;
    *meta = m;
    return 0;
}

int ml__claim(ml_arena *a, ml_handle h, int mode, uint64_t *meta)
{
    ml_slot *s;
    uint64_t m;
    int rc = ml__lookup(a, h, &s, &m);
    if (rc) return rc;
    unsigned spins = 0;
    for (;;) {
        if ((rc = ml__check(a, h, m)) != 0) return rc;
        if (m & ML_M_LOCKED) {
            ml__pause(&spins);
            m = ml__load_acq(&s->meta);
            continue;
        }
        if (mode == ML_CLAIM_UNPINNED && (m & ML_M_PINS)) return -EBUSY;
        if (__atomic_compare_exchange_n(&s->meta, &m, m | ML_M_LOCKED, true, __ATOMIC_ACQUIRE,
                                        __ATOMIC_ACQUIRE)) {
            *meta = m | ML_M_LOCKED;
            return 0;
        }
    }
}

static int cmp_idx(const void *x, const void *y)
{
    uint32_t a = (uint32_t)((const ml_handle *)x)->bits, b = (uint32_t)((const ml_handle *)y)->bits;
    return (a > b) - (a < b);
}

size_t ml__claim_many(ml_arena *a, ml_handle *hs, size_t n, uint64_t *metas)
{
    /* Ascending slot order, each slot once: two threads claiming overlapping
     * sets then always meet in the same order and cannot deadlock, and a
     * handle listed twice is not claimed twice (which would wait forever). */
    qsort(hs, n, sizeof *hs, cmp_idx);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (k && ml__idx(hs[k - 1]) == ml__idx(hs[i])) continue;
        uint64_t m;
        if (ml__claim(a, hs[i], ML_CLAIM_ANY, &m) != 0) continue;
        if (metas) metas[k] = m;
        hs[k++] = hs[i];
    }
    return k;
}

bool ml__try_claim_idx(ml_arena *a, uint32_t idx, uint64_t *meta)
{
    uint64_t m = ml__load_acq(&a->slots[idx].meta);
    if (!ml__meta_live(m) || (m & (ML_M_LOCKED | ML_M_PINS))) return false;
    if (!__atomic_compare_exchange_n(&a->slots[idx].meta, &m, m | ML_M_LOCKED, false,
                                     __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
        return false;
    *meta = m | ML_M_LOCKED;
    return true;
}

unsigned ml__table_take(ml_arena *a, uint32_t *out, unsigned n)
{
    unsigned got = 0;
    pthread_mutex_lock(&a->table_lock);
    while (got < n && a->free_head != ML_NIL32) {
        uint32_t idx = a->free_head;
        a->free_head = (uint32_t)ml__load(&a->slots[idx].size);
        out[got++] = idx;
    }
    if (got < n) {
        /* Fresh slots go out lowest first: callers pop from the end. */
        uint32_t fresh = a->next_fresh;
        uint32_t nfresh = n - got;
        if (nfresh > a->cfg.max_handles - fresh) nfresh = (uint32_t)(a->cfg.max_handles - fresh);
        for (uint32_t k = 0; k < nfresh; k++) {
            uint32_t i = fresh + nfresh - 1 - k;
            __atomic_store_n(&a->slots[i].meta, ml__free_meta(a, 1), __ATOMIC_RELAXED);
            out[got++] = i;
        }
        fresh += nfresh;
        a->next_fresh = fresh;
        __atomic_store_n(&a->slot_count, fresh, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&a->table_lock);
    return got;
}

void ml__table_put(ml_arena *a, const uint32_t *idx, unsigned n)
{
    pthread_mutex_lock(&a->table_lock);
    for (unsigned i = 0; i < n; i++) {
        /* Release: a reader that loads this link as a "size" with acquire
         * (ml_size) then sees the freeing meta store made before it. */
        __atomic_store_n(&a->slots[idx[i]].size, a->free_head, __ATOMIC_RELEASE);
        a->free_head = idx[i];
    }
    pthread_mutex_unlock(&a->table_lock);
}

int ml__test_set_next_gen(ml_arena *a, uint32_t idx, uint32_t gen)
{
    if (idx >= __atomic_load_n(&a->slot_count, __ATOMIC_ACQUIRE) || gen == 0 || gen > ML_GEN_MAX)
        return -EINVAL;
    uint64_t m = ml__load_acq(&a->slots[idx].meta);
    if (ml__meta_live(m)) return -EBUSY;
    __atomic_store_n(&a->slots[idx].meta, ml__free_meta(a, gen), __ATOMIC_RELEASE);
    return 0;
}

bool ml_is_valid(ml_arena *a, ml_handle h)
{
    ml_slot *s;
    uint64_t m;
    return a && ml__lookup(a, h, &s, &m) == 0;
}

ml_state ml_handle_state(ml_arena *a, ml_handle h)
{
    if (!a) return ML_STATE_INVALID;
    ml_slot *s;
    uint64_t m;
    int rc = ml__lookup(a, h, &s, &m);
    if (rc == -ESTALE) return ML_STATE_FREED;
    if (rc) return ML_STATE_INVALID;
    return (ml_state)(m & ML_M_STATE);
}
