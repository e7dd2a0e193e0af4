// The extent allocator (core/extent.h) on its own: allocation, freeing with
// coalescing, good fit, growth, statistics, and a long seeded random run
// against a reference model.
#include <algorithm>
#include <map>
#include <random>
#include <vector>

#include "test_util.h"

extern "C" {
#include "core/extent.h"
}

namespace {

constexpr uint32_t kLenMask = 0x3fffffffu;

// An ml_ext that is finalised at the end of the scope.
struct Ext {
    ml_ext e;
    Ext(uint32_t cap, uint32_t max) { EXPECT_EQ(ml__ext_init(&e, cap, max), 0); }
    ~Ext() { ml__ext_fini(&e); }
    ml_ext *operator->() { return &e; }
    ml_ext *get() { return &e; }
};

// ---- the reference model ----------------------------------------------------

// Bins as the header describes them: below 16 units one bin per length;
// above, each power of two split in 16 equal steps. Written from that
// description, not from extent.c.
int BinOf(uint64_t n) {
    if (n < 16) return (int)n;
    int f = 63 - __builtin_clzll(n);
    return (f - 3) * 16 + (int)((n >> (f - 4)) - 16);
}
// Smallest length that falls in bin b.
uint64_t BinMin(int b) {
    if (b < 16) return (uint64_t)b;
    int f = b / 16 + 3, sl = b % 16;
    return (uint64_t)(16 + sl) << (f - 4);
}

struct Piece {
    uint32_t len;
    bool used;
    unsigned kind;
    uint32_t owner;
};

struct Model {
    uint32_t cap;
    std::map<uint32_t, Piece> m;  // start -> extent; tiles [0, cap)

    explicit Model(uint32_t c) : cap(c) { m[0] = {c, false, ML_EXT_FREE, 0}; }

    uint64_t FreeUnits() const {
        uint64_t n = 0;
        for (auto &kv : m) n += kv.second.used ? 0 : kv.second.len;
        return n;
    }
    uint64_t FreeExtents() const {
        uint64_t n = 0;
        for (auto &kv : m) n += !kv.second.used;
        return n;
    }
    uint32_t Largest() const {
        uint32_t n = 0;
        for (auto &kv : m)
            if (!kv.second.used) n = std::max(n, kv.second.len);
        return n;
    }
    uint64_t Holes() const {
        uint64_t n = FreeExtents();
        if (!m.empty() && !std::prev(m.end())->second.used) n--;
        return n;
    }
    // Can an allocation of n units succeed, and from which bins (good fit)?
    // Returns the set of acceptable free-extent lengths' bins: the lowest
    // non-empty bin whose every member fits, or else the bin of n itself
    // (holding an extent >= n).
    bool Acceptable(uint32_t n, uint32_t start, std::string *why) const {
        auto it = m.find(start);
        if (it == m.end() || it->second.used) {
            *why = "not the start of a free extent";
            return false;
        }
        if (it->second.len < n) {
            *why = "free extent too short";
            return false;
        }
        int search = 0;
        while (BinMin(search) < n) search++;
        int best = -1;
        for (auto &kv : m)
            if (!kv.second.used && BinOf(kv.second.len) >= search &&
                (best < 0 || BinOf(kv.second.len) < best))
                best = BinOf(kv.second.len);
        int got = BinOf(it->second.len);
        if (best >= 0 && got != best) {
            *why = "not good fit: bin " + std::to_string(got) + ", expected " + std::to_string(best);
            return false;
        }
        if (best < 0 && got != BinOf(n)) {
            *why = "fallback from the wrong bin";
            return false;
        }
        return true;
    }
    bool CanFit(uint32_t n) const { return n > 0 && Largest() >= n; }
    void Alloc(uint32_t start, uint32_t n, unsigned kind, uint32_t owner) {
        Piece p = m.at(start);
        m[start] = {n, true, kind, owner};
        if (p.len > n) m[start + n] = {p.len - n, false, ML_EXT_FREE, 0};
    }
    uint32_t Free(uint32_t start) {
        auto it = m.find(start);
        it->second.used = false;
        it->second.kind = ML_EXT_FREE;
        if (it != m.begin()) {
            auto prev = std::prev(it);
            if (!prev->second.used) {
                prev->second.len += it->second.len;
                m.erase(it);
                it = prev;
            }
        }
        auto next = std::next(it);
        if (next != m.end() && !next->second.used) {
            it->second.len += next->second.len;
            m.erase(next);
        }
        return it->first;
    }
    void Grow(uint32_t new_cap) {
        if (new_cap <= cap) return;
        m[cap] = {new_cap - cap, false, ML_EXT_FREE, 0};
        cap = new_cap;
        Free(std::prev(m.end())->first);  // merge with a free predecessor
    }
};

// The allocator's extents, walked through the boundary tags, equal the model.
void ExpectMatches(ml_ext *e, const Model &model) {
    ASSERT_EQ(ml__ext_check(e), 0);
    ASSERT_EQ(e->cap, model.cap);
    auto it = model.m.begin();
    for (uint32_t s = 0; s < e->cap; s += ml__ext_len(e, s), ++it) {
        ASSERT_NE(it, model.m.end()) << "extra extent at " << s;
        ASSERT_EQ(s, it->first);
        ASSERT_EQ(ml__ext_len(e, s), it->second.len) << "at " << s;
        if (it->second.used) {
            ASSERT_EQ(ml__ext_kind(e, s), it->second.kind) << "at " << s;
            ASSERT_EQ(ml__ext_owner(e, s), it->second.owner) << "at " << s;
        } else {
            ASSERT_EQ(ml__ext_kind(e, s), (unsigned)ML_EXT_FREE) << "at " << s;
        }
    }
    ASSERT_EQ(it, model.m.end()) << "extent missing at the end";
    EXPECT_EQ(e->free_units, model.FreeUnits());
    EXPECT_EQ(e->free_extents, model.FreeExtents());
    EXPECT_EQ(ml__ext_largest_free(e), model.Largest());
    EXPECT_EQ(ml__ext_holes(e), model.Holes());
}

// ---- directed tests -----------------------------------------------------------

TEST(Extent, InitIsOneFreeExtent) {
    Ext e(100, 1000);
    EXPECT_EQ(e->cap, 100u);
    EXPECT_EQ(e->max, 1000u);
    EXPECT_EQ(e->free_units, 100u);
    EXPECT_EQ(e->free_extents, 1u);
    EXPECT_EQ(ml__ext_largest_free(e.get()), 100u);
    EXPECT_EQ(ml__ext_holes(e.get()), 0u);
    EXPECT_EQ(ml__ext_len(e.get(), 0), 100u);
    EXPECT_EQ(ml__ext_kind(e.get(), 0), (unsigned)ML_EXT_FREE);
    EXPECT_EQ(ml__ext_check(e.get()), 0);
}

TEST(Extent, InitRefusesBadSizes) {
    ml_ext e;
    EXPECT_NE(ml__ext_init(&e, 0, 10), 0);
    EXPECT_NE(ml__ext_init(&e, 11, 10), 0);
    EXPECT_NE(ml__ext_init(&e, 1, kLenMask + 1), 0);
    ml__ext_fini(&e);  // harmless after a refused init
    ASSERT_EQ(ml__ext_init(&e, 1, 1), 0);
    EXPECT_EQ(ml__ext_alloc(&e, 1, ML_EXT_BLOB, 5), 0u);
    EXPECT_EQ(ml__ext_alloc(&e, 1, ML_EXT_BLOB, 6), ML_EXT_NIL);
    EXPECT_EQ(ml__ext_check(&e), 0);
    ml__ext_fini(&e);
}

TEST(Extent, AllocSplitsAndRecordsKindAndOwner) {
    Ext e(100, 100);
    uint32_t a = ml__ext_alloc(e.get(), 10, ML_EXT_BLOB, 111);
    uint32_t b = ml__ext_alloc(e.get(), 20, ML_EXT_SPAN, 222);
    ASSERT_EQ(a, 0u);
    ASSERT_EQ(b, 10u);
    EXPECT_EQ(ml__ext_len(e.get(), a), 10u);
    EXPECT_EQ(ml__ext_kind(e.get(), a), (unsigned)ML_EXT_BLOB);
    EXPECT_EQ(ml__ext_owner(e.get(), a), 111u);
    EXPECT_EQ(ml__ext_len(e.get(), b), 20u);
    EXPECT_EQ(ml__ext_kind(e.get(), b), (unsigned)ML_EXT_SPAN);
    EXPECT_EQ(ml__ext_owner(e.get(), b), 222u);
    ml__ext_set_owner(e.get(), b, 333);
    EXPECT_EQ(ml__ext_owner(e.get(), b), 333u);
    EXPECT_EQ(e->free_units, 70u);
    EXPECT_EQ(e->free_extents, 1u);
    EXPECT_EQ(ml__ext_largest_free(e.get()), 70u);
    EXPECT_EQ(ml__ext_holes(e.get()), 0u);
    EXPECT_EQ(ml__ext_check(e.get()), 0);
}

TEST(Extent, ZeroOversizeAndFullAllocationsFail) {
    Ext e(64, 64);
    EXPECT_EQ(ml__ext_alloc(e.get(), 0, ML_EXT_BLOB, 1), ML_EXT_NIL);
    EXPECT_EQ(ml__ext_alloc(e.get(), 65, ML_EXT_BLOB, 1), ML_EXT_NIL);
    EXPECT_EQ(ml__ext_alloc(e.get(), kLenMask + 1, ML_EXT_BLOB, 1), ML_EXT_NIL);
    EXPECT_EQ(ml__ext_alloc(e.get(), UINT32_MAX, ML_EXT_BLOB, 1), ML_EXT_NIL);
    EXPECT_EQ(e->free_units, 64u) << "failures change nothing";
    ASSERT_EQ(ml__ext_alloc(e.get(), 64, ML_EXT_BLOB, 1), 0u);
    EXPECT_EQ(ml__ext_alloc(e.get(), 1, ML_EXT_BLOB, 2), ML_EXT_NIL);
    EXPECT_EQ(e->free_units, 0u);
    EXPECT_EQ(e->free_extents, 0u);
    EXPECT_EQ(ml__ext_largest_free(e.get()), 0u);
    EXPECT_EQ(ml__ext_holes(e.get()), 0u);
    EXPECT_EQ(ml__ext_check(e.get()), 0);
}

TEST(Extent, FreeCoalescesWithBothNeighbours) {
    Ext e(100, 100);
    uint32_t a = ml__ext_alloc(e.get(), 10, ML_EXT_BLOB, 1);  // [0,10)
    uint32_t b = ml__ext_alloc(e.get(), 20, ML_EXT_BLOB, 2);  // [10,30)
    uint32_t c = ml__ext_alloc(e.get(), 30, ML_EXT_BLOB, 3);  // [30,60)
    uint32_t d = ml__ext_alloc(e.get(), 15, ML_EXT_BLOB, 4);  // [60,75), tail [75,100)
    ASSERT_EQ(d, 60u);
    EXPECT_EQ(ml__ext_free(e.get(), a), 0u);  // hole at the start
    EXPECT_EQ(ml__ext_holes(e.get()), 1u);
    EXPECT_EQ(ml__ext_free(e.get(), c), 30u);  // second hole
    EXPECT_EQ(ml__ext_holes(e.get()), 2u);
    EXPECT_EQ(e->free_extents, 3u);
    EXPECT_EQ(ml__ext_largest_free(e.get()), 30u);
    EXPECT_EQ(ml__ext_check(e.get()), 0);
    // b joins both: one extent [0,60).
    EXPECT_EQ(ml__ext_free(e.get(), b), 0u);
    EXPECT_EQ(ml__ext_len(e.get(), 0), 60u);
    EXPECT_EQ(ml__ext_holes(e.get()), 1u);
    EXPECT_EQ(ml__ext_largest_free(e.get()), 60u);
    EXPECT_EQ(ml__ext_check(e.get()), 0);
    // d joins the hole before it and the tail after it: all free again.
    EXPECT_EQ(ml__ext_free(e.get(), d), 0u);
    EXPECT_EQ(ml__ext_len(e.get(), 0), 100u);
    EXPECT_EQ(e->free_extents, 1u);
    EXPECT_EQ(e->free_units, 100u);
    EXPECT_EQ(ml__ext_holes(e.get()), 0u);
    EXPECT_EQ(ml__ext_check(e.get()), 0);
}

TEST(Extent, FreeAtTheVeryEndMergesOnlyBackwards) {
    Ext e(40, 40);
    uint32_t a = ml__ext_alloc(e.get(), 20, ML_EXT_BLOB, 1);
    uint32_t b = ml__ext_alloc(e.get(), 20, ML_EXT_BLOB, 2);  // ends at cap
    ASSERT_EQ(b, 20u);
    EXPECT_EQ(ml__ext_free(e.get(), b), 20u);
    EXPECT_EQ(ml__ext_len(e.get(), 20), 20u);
    EXPECT_EQ(ml__ext_holes(e.get()), 0u) << "a free last extent is not a hole";
    EXPECT_EQ(ml__ext_free(e.get(), a), 0u);
    EXPECT_EQ(ml__ext_len(e.get(), 0), 40u);
    EXPECT_EQ(ml__ext_check(e.get()), 0);
}

// Holes of 100, 20 and 50 units between used single units: each request
// takes the hole of the smallest bin that surely fits, not the first or
// largest one.
TEST(Extent, GoodFitPicksTheSmallestBinThatFits) {
    Ext e(200, 200);
    uint32_t h100 = ml__ext_alloc(e.get(), 100, ML_EXT_BLOB, 1);
    ml__ext_alloc(e.get(), 1, ML_EXT_BLOB, 2);
    uint32_t h20 = ml__ext_alloc(e.get(), 20, ML_EXT_BLOB, 3);
    ml__ext_alloc(e.get(), 1, ML_EXT_BLOB, 4);
    uint32_t h50 = ml__ext_alloc(e.get(), 50, ML_EXT_BLOB, 5);
    ml__ext_alloc(e.get(), 200 - 172, ML_EXT_BLOB, 6);  // no tail
    ASSERT_EQ(e->free_units, 0u);
    ml__ext_free(e.get(), h100);
    ml__ext_free(e.get(), h20);
    ml__ext_free(e.get(), h50);
    ASSERT_EQ(ml__ext_holes(e.get()), 3u);
    EXPECT_EQ(ml__ext_alloc(e.get(), 20, ML_EXT_BLOB, 7), h20);
    EXPECT_EQ(ml__ext_alloc(e.get(), 45, ML_EXT_BLOB, 8), h50);
    EXPECT_EQ(ml__ext_alloc(e.get(), 60, ML_EXT_BLOB, 9), h100);
    EXPECT_EQ(ml__ext_len(e.get(), h100 + 60), 40u) << "the rest stays free";
    EXPECT_EQ(ml__ext_check(e.get()), 0);
}

// An extent that fits exactly but sits in a bin that does not *surely* fit
// is still found when nothing larger exists.
TEST(Extent, ExactFitInALowerBinIsFoundWhenNothingElseFits) {
    Ext e(100, 100);
    uint32_t hole = ml__ext_alloc(e.get(), 33, ML_EXT_BLOB, 1);
    ml__ext_alloc(e.get(), 67, ML_EXT_BLOB, 2);
    ml__ext_free(e.get(), hole);
    ASSERT_EQ(BinOf(33), BinOf(32)) << "33 shares a bin with 32 (test premise)";
    EXPECT_EQ(ml__ext_alloc(e.get(), 34, ML_EXT_BLOB, 3), ML_EXT_NIL);
    EXPECT_EQ(ml__ext_alloc(e.get(), 33, ML_EXT_BLOB, 3), hole);
    EXPECT_EQ(e->free_units, 0u);
    EXPECT_EQ(ml__ext_check(e.get()), 0);
}

TEST(Extent, GrowAddsFreeSpaceAndMergesWithAFreeTail) {
    Ext e(10, 100);
    ASSERT_EQ(ml__ext_alloc(e.get(), 10, ML_EXT_BLOB, 1), 0u);  // full
    ml__ext_grow(e.get(), 30);
    EXPECT_EQ(e->cap, 30u);
    EXPECT_EQ(e->free_units, 20u);
    EXPECT_EQ(ml__ext_len(e.get(), 10), 20u);
    EXPECT_EQ(ml__ext_holes(e.get()), 0u);
    EXPECT_EQ(ml__ext_check(e.get()), 0);
    EXPECT_EQ(ml__ext_alloc(e.get(), 5, ML_EXT_BLOB, 2), 10u);  // tail [15,30)
    ml__ext_grow(e.get(), 50);  // merges with the free tail
    EXPECT_EQ(ml__ext_len(e.get(), 15), 35u);
    EXPECT_EQ(e->free_extents, 1u);
    EXPECT_EQ(ml__ext_largest_free(e.get()), 35u);
    EXPECT_EQ(ml__ext_check(e.get()), 0);
    // Not past the maximum, not backwards.
    ml__ext_grow(e.get(), 101);
    EXPECT_EQ(e->cap, 50u);
    ml__ext_grow(e.get(), 40);
    EXPECT_EQ(e->cap, 50u);
    ml__ext_grow(e.get(), 100);
    EXPECT_EQ(e->cap, 100u);
    EXPECT_EQ(ml__ext_alloc(e.get(), 85, ML_EXT_BLOB, 3), 15u);
    EXPECT_EQ(e->free_units, 0u);
    EXPECT_EQ(ml__ext_check(e.get()), 0);
}

TEST(Extent, CheckDetectsCorruption) {
    Ext e(100, 100);
    uint32_t a = ml__ext_alloc(e.get(), 10, ML_EXT_BLOB, 1);
    ml__ext_alloc(e.get(), 10, ML_EXT_BLOB, 2);
    ASSERT_EQ(ml__ext_check(e.get()), 0);
    uint32_t saved = e->tag[a + 9];
    e->tag[a + 9] = 7;  // end tag disagrees with the start tag
    EXPECT_NE(ml__ext_check(e.get()), 0);
    e->tag[a + 9] = saved;
    e->free_units++;
    EXPECT_NE(ml__ext_check(e.get()), 0);
    e->free_units--;
    EXPECT_EQ(ml__ext_check(e.get()), 0);
}

// Sizes that span many bins, including the largest first levels.
TEST(Extent, LargeExtentsAcrossBins) {
    const uint32_t cap = 1u << 22;  // 4M units: 48 MiB of tag arrays, lazily backed
    Ext e(cap, cap);
    std::vector<uint32_t> starts;
    for (uint32_t n : {1u, 15u, 16u, 17u, 1000u, 65535u, 65536u, 1u << 20, 3u << 19}) {
        uint32_t s = ml__ext_alloc(e.get(), n, ML_EXT_BLOB, n);
        ASSERT_NE(s, ML_EXT_NIL) << n;
        EXPECT_EQ(ml__ext_len(e.get(), s), n);
        starts.push_back(s);
    }
    EXPECT_EQ(ml__ext_check(e.get()), 0);
    for (uint32_t s : starts) ml__ext_free(e.get(), s);
    EXPECT_EQ(e->free_extents, 1u);
    EXPECT_EQ(ml__ext_largest_free(e.get()), cap);
    EXPECT_EQ(ml__ext_alloc(e.get(), cap, ML_EXT_BLOB, 1), 0u);
    EXPECT_EQ(ml__ext_check(e.get()), 0);
}

// ---- the long random run --------------------------------------------------------

TEST(Extent, RandomOperationsMatchTheModel) {
    const uint32_t kMax = 4096;
    for (uint64_t seed : {1u, 2u, 3u}) {
        SCOPED_TRACE(seed);
        std::mt19937_64 rng(seed);
        uint32_t cap = 256;
        Ext e(cap, kMax);
        Model model(cap);
        std::vector<uint32_t> used;  // starts of used extents
        uint32_t next_owner = 1;
        int allocs = 0, failures = 0, frees = 0, grows = 0;
        for (int op = 0; op < 6000 && !HasFailure(); op++) {
            uint64_t r = rng() % 100;
            if (r < 55) {
                uint32_t n = rng() % 8 == 0 ? 1 + rng() % 600 : 1 + rng() % 40;
                unsigned kind = rng() & 1 ? ML_EXT_BLOB : ML_EXT_SPAN;
                uint32_t owner = next_owner++;
                uint32_t s = ml__ext_alloc(e.get(), n, kind, owner);
                if (!model.CanFit(n)) {
                    ASSERT_EQ(s, ML_EXT_NIL) << "op " << op << ": allocated " << n << " with no room";
                    failures++;
                } else {
                    ASSERT_NE(s, ML_EXT_NIL) << "op " << op << ": refused " << n << ", largest free "
                                             << model.Largest();
                    std::string why;
                    ASSERT_TRUE(model.Acceptable(n, s, &why)) << "op " << op << " n " << n << ": " << why;
                    model.Alloc(s, n, kind, owner);
                    used.push_back(s);
                    allocs++;
                }
            } else if (r < 97) {
                if (used.empty()) continue;
                size_t k = rng() % used.size();
                uint32_t s = used[k];
                used[k] = used.back();
                used.pop_back();
                uint32_t merged = ml__ext_free(e.get(), s);
                ASSERT_EQ(merged, model.Free(s)) << "op " << op;
                frees++;
            } else {
                uint32_t nc = std::min<uint32_t>(kMax, model.cap + 1 + rng() % 200);
                ml__ext_grow(e.get(), nc);
                model.Grow(nc);
                grows++;
            }
            ExpectMatches(e.get(), model);
        }
        EXPECT_GT(allocs, 1000);
        EXPECT_GT(frees, 1000);
        EXPECT_GT(failures, 10) << "the run should reach full";
        EXPECT_GT(grows, 10);
        // Freeing everything leaves one free extent.
        for (uint32_t s : used) ASSERT_EQ(ml__ext_free(e.get(), s), model.Free(s));
        ExpectMatches(e.get(), model);
        EXPECT_EQ(e->free_extents, 1u);
        EXPECT_EQ(e->free_units, (uint64_t)e->cap);
    }
}

}  // namespace
