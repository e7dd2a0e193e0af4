/*
 * extent.c — the blob manager (a TLSF-style allocator over lane units).
 *
 * The seed's BlobMgr kept large allocations in a list with tombstones. Here
 * the lane is a sequence of extents that tile [0, cap) with no gaps: used
 * extents (blobs, or spans handed to the block manager) and free ones (the
 * tombstones). Each extent carries a boundary tag at its first and last
 * unit, kept *outside* the lane in parallel arrays, so a program that
 * overruns a buffer can corrupt its own data but never the allocator, and
 * lane memory is never touched by bookkeeping (it may be purged, locked or
 * evicted freely).
 *
 * Freeing merges an extent with free neighbours found through the tags in
 * O(1): the unit before `start` is the last unit of the previous extent,
 * the unit after the end is the first of the next. Free extents sit in
 * two-level segregated lists (first level: power of two; second level: 16
 * linear steps), found through two bitmaps, so allocation is O(1) too and
 * returns a block from the smallest class guaranteed to fit ("good fit").
 */
#include "core/extent.h"

#include <string.h>

#include "core/prim.h"

#define LEN_MASK 0x3fffffffu

static inline unsigned fls32(uint32_t x) { return 31u - (unsigned)__builtin_clz(x); }

/* Bin of a free extent of n units (rounding down). */
static void mapping_insert(uint32_t n, unsigned *fl, unsigned *sl)
{
    if (n < ML_EXT_SL) {
        *fl = 0;
        *sl = n;
    } else {
        unsigned f = fls32(n);
        *fl = f - ML_EXT_SL_BITS + 1;
        *sl = (n >> (f - ML_EXT_SL_BITS)) - ML_EXT_SL;
    }
}

/* First bin whose members are all >= n. */
static void mapping_search(uint32_t n, unsigned *fl, unsigned *sl)
{
    if (n >= ML_EXT_SL) {
        uint32_t round = (1u << (fls32(n) - ML_EXT_SL_BITS)) - 1;
        if (n > UINT32_MAX - round) {
            *fl = ML_EXT_FL;
            *sl = 0;
            return;
        }
        n += round;
    }
    mapping_insert(n, fl, sl);
}

static void set_tags(ml_ext *e, uint32_t start, uint32_t len, unsigned kind)
{
    uint32_t t = len | ((uint32_t)kind << 30);
    e->tag[start] = t;
    e->tag[start + len - 1] = t;
}

static void bin_insert(ml_ext *e, uint32_t start, uint32_t len)
{
    unsigned fl, sl;
    mapping_insert(len, &fl, &sl);
    uint32_t h = e->head[fl][sl];
    e->link[start] = h;
    e->prev[start] = ML_EXT_NIL;
    if (h != ML_EXT_NIL) e->prev[h] = start;
    e->head[fl][sl] = start;
    e->fl_bitmap |= 1u << fl;
    e->sl_bitmap[fl] |= 1u << sl;
    e->free_units += len;
    e->free_extents++;
}

static void bin_remove(ml_ext *e, uint32_t start, uint32_t len)
{
    unsigned fl, sl;
    mapping_insert(len, &fl, &sl);
    uint32_t n = e->link[start], p = e->prev[start];
    if (p != ML_EXT_NIL) e->link[p] = n;
    else e->head[fl][sl] = n;
    if (n != ML_EXT_NIL) e->prev[n] = p;
    if (e->head[fl][sl] == ML_EXT_NIL) {
        e->sl_bitmap[fl] &= ~(1u << sl);
        if (!e->sl_bitmap[fl]) e->fl_bitmap &= ~(1u << fl);
    }
    e->free_units -= len;
    e->free_extents--;
}

int ml__ext_init(ml_ext *e, uint32_t cap, uint32_t max)
{
    memset(e, 0, sizeof *e);
    if (cap == 0 || cap > max || max > LEN_MASK) return -1;
    size_t bytes = (size_t)max * sizeof(uint32_t);
    e->tag = ml__meta_map(bytes);
    e->link = ml__meta_map(bytes);
    e->prev = ml__meta_map(bytes);
    if (!e->tag || !e->link || !e->prev) {
        ml__ext_fini(e);
        return -1;
    }
    e->max = max;
    for (unsigned f = 0; f < ML_EXT_FL; f++)
        for (unsigned s = 0; s < ML_EXT_SL; s++) e->head[f][s] = ML_EXT_NIL;
    e->cap = cap;
    set_tags(e, 0, cap, ML_EXT_FREE);
    bin_insert(e, 0, cap);
    return 0;
}

void ml__ext_fini(ml_ext *e)
{
    size_t bytes = (size_t)e->max * sizeof(uint32_t);
    ml__meta_unmap(e->tag, bytes);
    ml__meta_unmap(e->link, bytes);
    ml__meta_unmap(e->prev, bytes);
    memset(e, 0, sizeof *e);
}

static uint32_t find_free(ml_ext *e, uint32_t n)
{
    unsigned fl, sl;
    mapping_search(n, &fl, &sl);
    if (fl >= ML_EXT_FL) return ML_EXT_NIL;
    uint32_t sl_map = e->sl_bitmap[fl] & (~0u << sl);
    if (!sl_map) {
        uint32_t fl_map = fl + 1 < 32 ? e->fl_bitmap & (~0u << (fl + 1)) : 0;
        if (!fl_map) return ML_EXT_NIL;
        fl = (unsigned)__builtin_ctz(fl_map);
        sl_map = e->sl_bitmap[fl];
    }
    sl = (unsigned)__builtin_ctz(sl_map);
    return e->head[fl][sl];
}

uint32_t ml__ext_alloc(ml_ext *e, uint32_t n, unsigned kind, uint32_t owner)
{
    if (n == 0 || n > LEN_MASK) return ML_EXT_NIL;
    uint32_t start = find_free(e, n);
    if (start == ML_EXT_NIL) {
        /* The good-fit bin may be empty while a smaller bin still holds an
         * extent of exactly n or more (bins round down): look there too. */
        unsigned fl, sl;
        mapping_insert(n, &fl, &sl);
        for (uint32_t s = e->head[fl][sl]; s != ML_EXT_NIL; s = e->link[s])
            if (ml__ext_len(e, s) >= n) {
                start = s;
                break;
            }
        if (start == ML_EXT_NIL) return ML_EXT_NIL;
    }
    uint32_t len = ml__ext_len(e, start);
    bin_remove(e, start, len);
    if (len > n) {
        set_tags(e, start + n, len - n, ML_EXT_FREE);
        bin_insert(e, start + n, len - n);
    }
    set_tags(e, start, n, kind);
    e->link[start] = owner;
    if (start + n > e->clean_from) e->clean_from = start + n;
    return start;
}

uint32_t ml__ext_free(ml_ext *e, uint32_t start)
{
    uint32_t len = ml__ext_len(e, start);
    if (start > 0) {
        uint32_t pt = e->tag[start - 1];
        if ((pt >> 30) == ML_EXT_FREE) {
            uint32_t plen = pt & LEN_MASK;
            uint32_t pstart = start - plen;
            bin_remove(e, pstart, plen);
            start = pstart;
            len += plen;
        }
    }
    uint32_t end = start + len;
    if (end < e->cap && ml__ext_kind(e, end) == ML_EXT_FREE) {
        uint32_t nlen = ml__ext_len(e, end);
        bin_remove(e, end, nlen);
        len += nlen;
    }
    set_tags(e, start, len, ML_EXT_FREE);
    bin_insert(e, start, len);
    return start;
}

void ml__ext_grow(ml_ext *e, uint32_t new_cap)
{
    if (new_cap <= e->cap || new_cap > e->max) return;
    uint32_t start = e->cap, len = new_cap - e->cap;
    set_tags(e, start, len, ML_EXT_BLOB); /* temporarily used, then freed */
    e->cap = new_cap;
    ml__ext_free(e, start);
}

uint32_t ml__ext_slide_down(ml_ext *e, uint32_t start)
{
    uint32_t ps = ml__ext_prev(e, start);
    uint32_t plen = ml__ext_len(e, ps), len = ml__ext_len(e, start);
    unsigned kind = ml__ext_kind(e, start);
    uint32_t owner = e->link[start];
    bin_remove(e, ps, plen);
    set_tags(e, ps, len, kind);
    e->link[ps] = owner;
    /* The hole now follows; mark it used for a moment so that freeing it
     * merges it with a free successor through the usual path. */
    set_tags(e, ps + len, plen, ML_EXT_BLOB);
    ml__ext_free(e, ps + len);
    return ps;
}

uint32_t ml__ext_largest_free(const ml_ext *e)
{
    if (!e->fl_bitmap) return 0;
    unsigned fl = fls32(e->fl_bitmap);
    unsigned sl = fls32(e->sl_bitmap[fl]);
    uint32_t best = 0;
    for (uint32_t s = e->head[fl][sl]; s != ML_EXT_NIL; s = e->link[s]) {
        uint32_t l = ml__ext_len(e, s);
        if (l > best) best = l;
    }
    return best;
}

uint64_t ml__ext_holes(const ml_ext *e)
{
    uint64_t n = e->free_extents;
    if (n && e->cap && ml__ext_kind(e, e->cap - ml__ext_len(e, e->cap - 1)) == ML_EXT_FREE) n--;
    return n;
}

int ml__ext_check(const ml_ext *e)
{
    uint64_t free_units = 0, free_ext = 0;
    bool prev_free = false;
    for (uint32_t s = 0; s < e->cap;) {
        uint32_t t = e->tag[s], len = t & LEN_MASK;
        if (len == 0 || s + len > e->cap) return -1;
        if (e->tag[s + len - 1] != t) return -2;
        bool is_free = (t >> 30) == ML_EXT_FREE;
        if (is_free && prev_free) return -3; /* not coalesced */
        if (is_free) {
            free_units += len;
            free_ext++;
        }
        prev_free = is_free;
        s += len;
    }
    if (free_units != e->free_units || free_ext != e->free_extents) return -4;
    /* Every listed extent is free and in the right bin. */
    uint64_t listed = 0;
    for (unsigned f = 0; f < ML_EXT_FL; f++)
        for (unsigned s = 0; s < ML_EXT_SL; s++)
            for (uint32_t x = e->head[f][s]; x != ML_EXT_NIL; x = e->link[x]) {
                unsigned ff, ss;
                if (ml__ext_kind(e, x) != ML_EXT_FREE) return -5;
                mapping_insert(ml__ext_len(e, x), &ff, &ss);
                if (ff != f || ss != s) return -6;
                if (++listed > free_ext) return -7;
            }
    return listed == free_ext ? 0 : -8;
}
