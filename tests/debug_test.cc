// The debugging aids (ML_DEBUG_POISON, ML_DEBUG_MOVES): stale pointers, to
// freed entries or across relocation points, must meet poison, and
// AddressSanitizer must stop a program that uses one.
#include <stdlib.h>
#include <string.h>

#include <functional>
#include <map>
#include <vector>

#include "test_util.h"

#if defined(__SANITIZE_ADDRESS__)
#define ML_TEST_ASAN 1
extern "C" int __asan_address_is_poisoned(void const volatile *addr);
#else
#define ML_TEST_ASAN 0
#endif

namespace {

ml_config DebugConfig(unsigned flags, bool paging = false) {
    ml_config c = SmallConfig();
    c.enable_paging = paging;
    c.debug = flags;
    return c;
}

// Whether the n bytes at p are what a stale pointer must meet: poisoned
// under AddressSanitizer (reading them would stop the test), else 0xDF.
bool Poisoned(const void *p, size_t n) {
#if ML_TEST_ASAN
    for (size_t i = 0; i < n; i++)
        if (!__asan_address_is_poisoned((const char *)p + i)) return false;
    return true;
#else
    for (size_t i = 0; i < n; i++)
        if (((const unsigned char *)p)[i] != 0xDF) return false;
    return true;
#endif
}

struct MoveLog {
    std::vector<std::pair<void *, void *>> moves;
    static void Fn(void *ctx, ml_handle, void *old_addr, void *new_addr, ml_lane, ml_lane, uint64_t) {
        static_cast<MoveLog *>(ctx)->moves.emplace_back(old_addr, new_addr);
    }
};

uint64_t DebugMoves(ml_arena *a) {
    ml_stats st;
    EXPECT_EQ(ml_stats_get(a, &st), 0);
    return st.debug_moves;
}

TEST(DebugConfig, UnknownFlagsAreRejectedAndTheEffectiveOnesReported) {
    ml_config c = DebugConfig(0x4);
    const char *why = nullptr;
    EXPECT_EQ(ml_config_check(&c, &why), -EINVAL);
    ASSERT_NE(why, nullptr);
    EXPECT_NE(strstr(why, "debug"), nullptr);
    ml_arena *a = nullptr;
    EXPECT_EQ(ml_arena_create(&c, &a), -EINVAL);
    EXPECT_EQ(a, nullptr);

    c = DebugConfig(ML_DEBUG_MOVES); // implies POISON
    ArenaGuard g(&c);
    ml_config got;
    ASSERT_EQ(ml_arena_config(g, &got), 0);
    EXPECT_EQ(got.debug, ML_DEBUG_MOVES | ML_DEBUG_POISON);

    ml_config plain;
    ml_config_init(&plain);
    EXPECT_EQ(plain.debug, 0u);
}

TEST(DebugConfig, TheEnvironmentAddsFlags) {
    const struct {
        const char *value;
        unsigned want;
    } cases[] = {
        {"poison", ML_DEBUG_POISON},
        {"moves", ML_DEBUG_MOVES | ML_DEBUG_POISON},
        {"poison,moves", ML_DEBUG_MOVES | ML_DEBUG_POISON},
        {"1", ML_DEBUG_POISON},
        {"", 0},
        {"nonsense", 0},
    };
    for (const auto &k : cases) {
        ASSERT_EQ(setenv("MEMORYLANE_DEBUG", k.value, 1), 0);
        ml_config c = SmallUnpagedConfig();
        ArenaGuard g(&c);
        ml_config got;
        ASSERT_EQ(ml_arena_config(g, &got), 0);
        EXPECT_EQ(got.debug, k.want) << k.value;
    }
    unsetenv("MEMORYLANE_DEBUG");
}

// A freed entry's bytes are poisoned at once, and its place is not handed
// out again while the quarantine holds it; new bytes are 0xD0.
TEST(DebugPoison, FreedPlacesArePoisonedAndHeldBack) {
    ml_config c = DebugConfig(ML_DEBUG_POISON);
    ArenaGuard a(&c);
    for (size_t size : {size_t(48), size_t(3000), size_t(6000), size_t(100000)}) {
        SCOPED_TRACE(size);
        ml_handle h;
        ASSERT_EQ(ml_alloc(a, size, &h), 0);
        unsigned char *p = (unsigned char *)ml_get(a, h);
        ASSERT_NE(p, nullptr);
        for (size_t i = 0; i < size; i++) ASSERT_EQ(p[i], 0xD0) << i; // never written
        memset(p, 'A', size);
        ASSERT_EQ(ml_free(a, h), 0);
        EXPECT_TRUE(Poisoned(p, size));
        ml_stats st;
        ASSERT_EQ(ml_stats_get(a, &st), 0);
        EXPECT_GE(st.debug_quarantine_bytes, size);
        // The next allocations of the size land elsewhere.
        std::vector<ml_handle> next(8);
        for (auto &n : next) {
            ASSERT_EQ(ml_alloc(a, size, &n), 0);
            EXPECT_NE(ml_get(a, n), (void *)p);
        }
        ml_handle z;
        ASSERT_EQ(ml_alloc_zeroed(a, size, &z), 0);
        const unsigned char *zp = (const unsigned char *)ml_get(a, z);
        for (size_t i = 0; i < size; i++) ASSERT_EQ(zp[i], 0) << i;
        for (auto &n : next) ASSERT_EQ(ml_free(a, n), 0);
        ASSERT_EQ(ml_free(a, z), 0);
    }
    EXPECT_EQ(ml__arena_check(a), 0);
}

// Eviction and compression give up a blob's place too: poisoned as well.
TEST(DebugPoison, EvictedAndCompressedBlobsLeavePoisonBehind) {
    ml_config c = DebugConfig(ML_DEBUG_POISON, true);
    ArenaGuard a(&c);
    for (bool evict : {true, false}) {
        SCOPED_TRACE(evict);
        ml_handle h;
        ASSERT_EQ(ml_alloc(a, 64 << 10, &h), 0);
        char *p = (char *)ml_get(a, h);
        for (size_t i = 0; i < (64 << 10); i++) p[i] = (char)('a' + i % 7); // compresses
        ASSERT_EQ(evict ? ml_evict(a, h) : ml_compress(a, h), 0);
        EXPECT_TRUE(Poisoned(p, 64 << 10));
        const char *q = (const char *)ml_get(a, h);
        ASSERT_NE(q, nullptr);
        for (size_t i = 0; i < (64 << 10); i++) ASSERT_EQ(q[i], (char)('a' + i % 7)) << i;
        ASSERT_EQ(ml_free(a, h), 0);
    }
    EXPECT_EQ(ml__arena_check(a), 0);
}

// A freed place larger than its lane's share of the quarantine is held too
// (it used to go straight back, unpoisoned, as the one over the share).
TEST(DebugPoison, APlaceLargerThanTheShareIsHeldToo) {
    ml_config c = DebugConfig(ML_DEBUG_POISON); // SlowLane 4 MiB: share 512 KiB
    ArenaGuard a(&c);
    ml_handle h, again;
    ASSERT_EQ(ml_alloc(a, 1 << 20, &h), 0);
    void *p = ml_get(a, h);
    ASSERT_EQ(ml_free(a, h), 0);
    EXPECT_TRUE(Poisoned(p, 1 << 20));
    ASSERT_EQ(ml_alloc(a, 1 << 20, &again), 0);
    EXPECT_NE(ml_get(a, again), p);
    EXPECT_EQ(ml__arena_check(a), 0);
}

// With paging on, eviction's old places go to the quarantine, still
// allocated: an allocation that needs eviction to make room must get them
// back, or it fails with -ENOMEM although the room is there (found in
// review).
TEST(DebugPoison, AllocationsThatNeedEvictionGetTheHeldPlacesBack) {
    ml_config c = DebugConfig(ML_DEBUG_POISON, true);
    c.slow_lane_safety_margin = 0.02;
    ArenaGuard a(&c);
    std::vector<ml_handle> hs;
    for (int i = 0; i < 256; i++) { // 16 MiB through a 4 MiB SlowLane
        ml_handle h;
        int rc = ml_alloc(a, 64 << 10, &h);
        ASSERT_EQ(rc, 0) << "blob " << i << ": " << ml_strerror(rc);
        memset(ml_get(a, h), 'a' + i % 26, 64 << 10);
        hs.push_back(h);
    }
    for (size_t i = 0; i < hs.size(); i += 37) {
        const char *p = (const char *)ml_get(a, hs[i]);
        ASSERT_NE(p, nullptr);
        EXPECT_EQ(p[12345], (char)('a' + i % 26));
    }
    EXPECT_EQ(ml__arena_check(a), 0);
}

// The quarantine must not cost memory the program needs: allocating the
// lane full many times over, freeing as it goes, never runs out, and a
// full lane still fills to the last block.
TEST(DebugPoison, TheQuarantineGivesWayWhenTheLaneIsFull) {
    ml_config c = DebugConfig(ML_DEBUG_POISON);
    c.failover_to_slow = false;
    c.migrate_on_full = false;
    ArenaGuard a(&c);
    const size_t size = 1024, fit = c.fast_lane_size / size;
    for (int round = 0; round < 6; round++) {
        std::vector<ml_handle> hs;
        ml_handle h;
        while (ml_alloc(a, size, &h) == 0) hs.push_back(h);
        // Nearly every block (the span bookkeeping is outside the lane).
        EXPECT_GE(hs.size(), fit * 9 / 10) << "round " << round;
        for (auto x : hs) ASSERT_EQ(ml_free(a, x), 0);
    }
    EXPECT_EQ(ml__arena_check(a), 0);
}

// The mistake ML_DEBUG_MOVES is for: a pointer kept across an allocation.
TEST(DebugMoves, APointerKeptAcrossAnAllocationMeetsPoison) {
    ml_config c = DebugConfig(ML_DEBUG_MOVES);
    ArenaGuard a(&c);
    MoveLog log;
    ASSERT_EQ(ml_set_move_callback(a, MoveLog::Fn, &log), 0);
    for (size_t size : {size_t(64), size_t(20000)}) {
        SCOPED_TRACE(size);
        log.moves.clear();
        ml_handle h, other;
        ASSERT_EQ(ml_alloc(a, size, &h), 0);
        char *p = (char *)ml_get(a, h);
        ASSERT_NE(p, nullptr);
        memset(p, 'x', size);
        uint64_t before = DebugMoves(a);
        ASSERT_EQ(ml_alloc(a, 32, &other), 0); // a relocation point
        EXPECT_TRUE(Poisoned(p, size));
        char *q = (char *)ml_get(a, h);
        ASSERT_NE(q, nullptr);
        EXPECT_NE(q, p);
        for (size_t i = 0; i < size; i++) ASSERT_EQ(q[i], 'x') << i; // the data moved with it
        EXPECT_EQ(DebugMoves(a), before + 1);
        ASSERT_EQ(log.moves.size(), 1u);
        EXPECT_EQ(log.moves[0].first, (void *)p);
        EXPECT_EQ(log.moves[0].second, (void *)q);
        // Not exposed again: the next point leaves it (and other) alone.
        ASSERT_EQ(ml_maintain(a), 0);
        EXPECT_EQ(DebugMoves(a), before + 2); // (q was handed out: it moves once more)
        ASSERT_EQ(ml_maintain(a), 0);
        EXPECT_EQ(DebugMoves(a), before + 2);
        ASSERT_EQ(ml_free(a, h), 0);
        ASSERT_EQ(ml_free(a, other), 0);
    }
    EXPECT_EQ(ml__arena_check(a), 0);
}

// Each documented relocation point moves what was handed out; a pin keeps
// its entry in place until ml_unpin, and the next point moves it.
TEST(DebugMoves, EveryRelocationPointMovesAndPinsHold) {
    ml_config c = DebugConfig(ML_DEBUG_MOVES);
    ArenaGuard a(&c);
    ml_handle h, pinned, big;
    ASSERT_EQ(ml_alloc(a, 100, &h), 0);
    ASSERT_EQ(ml_alloc(a, 100, &pinned), 0);
    ASSERT_EQ(ml_alloc(a, 50000, &big), 0);
    void *pp;
    ASSERT_EQ(ml_pin(a, pinned, &pp), 0);
    memset(pp, 'p', 100);
    ml_compact_result r;
    size_t moved;
    const std::vector<std::pair<const char *, std::function<int()>>> points = {
        {"ml_maintain", [&] { return ml_maintain(a); }},
        {"ml_compact", [&] { return ml_compact(a, ML_LANE_FAST, &r); }},
        {"ml_compact_step", [&] { return ml_compact_step(a, ML_LANE_SLOW, 0, 1000000, &r); }},
        {"ml_migrate_all", [&] { return ml_migrate_all(a, 1000000, &moved); }},
        {"ml_alloc_zeroed", [&] {
             ml_handle t;
             int rc = ml_alloc_zeroed(a, 10, &t);
             return rc ? rc : ml_free(a, t);
         }},
    };
    for (const auto &pt : points) {
        SCOPED_TRACE(pt.first);
        void *p = ml_get(a, h);
        ASSERT_NE(p, nullptr);
        memset(p, 'h', 100);
        ASSERT_EQ(pt.second(), 0);
        EXPECT_TRUE(Poisoned(p, 100));
        void *now = ml_get(a, h);
        EXPECT_NE(now, p);
        EXPECT_EQ(memcmp(now, std::string(100, 'h').data(), 100), 0);
        // The pinned entry has not moved.
        void *pq = ml_get(a, pinned);
        EXPECT_EQ(pq, pp);
    }
    // ml_realloc of another handle moves only SlowLane entries (it may make
    // room there by compressing or evicting, nothing else).
    ml_handle slow;
    ASSERT_EQ(ml_alloc(a, 30000, &slow), 0);
    void *ph = ml_get(a, h), *psl = ml_get(a, slow);
    ASSERT_EQ(ml_realloc(a, big, 50001), 0);
    EXPECT_EQ(ml_get(a, h), ph);
    EXPECT_NE(ml_get(a, slow), psl);
    EXPECT_TRUE(Poisoned(psl, 30000));
    // ml_realloc moves the entry it names, even when the new size fits its
    // place (found by a bug hunt: it used to stay), and pins still hold.
    for (ml_handle e : {h, slow}) {
        void *p = ml_get(a, e);
        ASSERT_NE(p, nullptr);
        size_t size = 0;
        ASSERT_EQ(ml_size(a, e, &size), 0);
        memset(p, 'r', size);
        ASSERT_EQ(ml_realloc(a, e, size - 1), 0);
        EXPECT_TRUE(Poisoned(p, size));
        void *now = ml_get(a, e);
        EXPECT_NE(now, p);
        EXPECT_EQ(memcmp(now, std::string(size - 1, 'r').data(), size - 1), 0);
    }
    ASSERT_EQ(ml_realloc(a, pinned, 100), 0);
    EXPECT_EQ(ml_get(a, pinned), pp);

    ASSERT_EQ(ml_unpin(a, pinned), 0);
    ASSERT_EQ(ml_maintain(a), 0);
    void *after = ml_get(a, pinned);
    EXPECT_NE(after, pp);
    EXPECT_TRUE(Poisoned(pp, 100));
    EXPECT_EQ(memcmp(after, std::string(100, 'p').data(), 100), 0);
    EXPECT_EQ(ml__arena_check(a), 0);
}

// The move ML_DEBUG_MOVES adds to ml_realloc stays in the entry's lane and
// makes no room: with FastLane full, a FastLane entry stays where it is
// rather than fail over to SlowLane (from a review).
TEST(DebugMoves, ReallocsDebugMoveStaysInItsLane) {
    ml_config c = DebugConfig(ML_DEBUG_MOVES);
    c.fast_lane_size = 64 << 10;
    c.fast_lane_max_size = 64 << 10;
    c.migrate_on_full = false;
    c.failover_to_slow = true;
    ArenaGuard a(&c);
    ml_handle first;
    ASSERT_EQ(ml_alloc(a, 64, &first), 0);
    std::vector<ml_handle> fill;
    for (int i = 0; i < 100000; i++) {
        ml_handle h;
        ASSERT_EQ(ml_alloc(a, 64, &h), 0);
        fill.push_back(h);
        if (ml_handle_state(a, h) == ML_STATE_SLOW) break; // FastLane is full
    }
    ASSERT_EQ(ml_handle_state(a, fill.back()), ML_STATE_SLOW);
    ASSERT_EQ(ml_realloc(a, first, 63), 0);
    ml_handle_info info;
    ASSERT_EQ(ml_handle_info_get(a, first, &info), 0);
    EXPECT_EQ(info.lane, ML_LANE_FAST);
    EXPECT_EQ(info.migrations, 0u);
    EXPECT_EQ(ml__arena_check(a), 0);
}

// The move callback may call anything, relocation points included: a point
// reached from inside another moves nothing, or each level would move
// again what the one above exposed (2^k moves for k entries; found in
// review).
TEST(DebugMoves, APointInsideTheMoveCallbackMovesNothing) {
    ml_config c = DebugConfig(ML_DEBUG_MOVES);
    ArenaGuard a(&c);
    struct Ctx {
        ml_arena *a;
        int calls = 0;
    } ctx{a};
    ASSERT_EQ(ml_set_move_callback(
                  a,
                  [](void *x, ml_handle h, void *, void *, ml_lane, ml_lane, uint64_t) {
                      Ctx *k = static_cast<Ctx *>(x);
                      k->calls++;
                      EXPECT_NE(ml_get(k->a, h), nullptr); // exposes it again
                      ml_handle t;
                      ASSERT_EQ(ml_alloc(k->a, 24, &t), 0); // a point, nested
                      ASSERT_EQ(ml_free(k->a, t), 0);
                  },
                  &ctx),
              0);
    std::vector<ml_handle> hs(12);
    for (auto &h : hs) {
        ASSERT_EQ(ml_alloc(a, 40, &h), 0);
        ASSERT_NE(ml_get(a, h), nullptr);
    }
    ctx.calls = 0;
    uint64_t before = DebugMoves(a);
    ml_handle trigger;
    ASSERT_EQ(ml_alloc(a, 40, &trigger), 0);
    EXPECT_EQ(DebugMoves(a) - before, hs.size());
    EXPECT_EQ(ctx.calls, (int)hs.size());
    ASSERT_EQ(ml_set_move_callback(a, nullptr, nullptr), 0);
    EXPECT_EQ(ml__arena_check(a), 0);
}

// With paging on, an access to a SlowLane blob may bring it back from disk
// and make room by moving others: under ML_DEBUG_MOVES it moves the other
// SlowLane entries handed out, and leaves FastLane's alone. Without paging,
// an access moves nothing.
TEST(DebugMoves, AnAccessToABlobMovesOtherSlowLaneEntriesOnlyWithPaging) {
    for (bool paging : {false, true}) {
        SCOPED_TRACE(paging);
        ml_config c = DebugConfig(ML_DEBUG_MOVES, paging);
        ArenaGuard a(&c);
        ml_handle b1, b2, small;
        ASSERT_EQ(ml_alloc(a, 30000, &b1), 0);
        ASSERT_EQ(ml_alloc(a, 30000, &b2), 0);
        ASSERT_EQ(ml_alloc(a, 30, &small), 0);
        void *p1 = ml_get(a, b1), *ps = ml_get(a, small);
        ASSERT_NE(p1, nullptr);
        ASSERT_NE(ps, nullptr);
        ASSERT_NE(ml_get(a, b2), nullptr); // the access
        EXPECT_EQ(ml_get(a, small), ps);
        if (paging) {
            EXPECT_NE(ml_get(a, b1), p1);
            EXPECT_TRUE(Poisoned(p1, 30000));
        } else {
            EXPECT_EQ(ml_get(a, b1), p1);
        }
    }
}

// A random workload under ML_DEBUG_MOVES, every byte checked through the
// handles against a model, the heap consistent at the end: the moves and
// the quarantine lose nothing.
TEST(DebugMoves, ARandomWorkloadKeepsEveryByte) {
    ml_config c = DebugConfig(ML_DEBUG_MOVES);
    c.fast_lane_size = 4 << 20;
    ArenaGuard a(&c);
    std::mt19937_64 rng(7);
    std::map<uint64_t, std::pair<ml_handle, std::pair<size_t, uint64_t>>> live; // bits -> (h, (size, seed))
    uint64_t seed = 1;
    for (int op = 0; op < 20000; op++) {
        int k = (int)(rng() % 10);
        bool grow = live.size() < 200;
        if (live.empty() || (grow && k < 4)) {
            size_t size = rng() % 3 ? 1 + rng() % 512 : 4097 + rng() % 40000;
            ml_handle h;
            ASSERT_EQ(ml_alloc(a, size, &h), 0);
            ASSERT_TRUE(WritePatternPinned(a, h, size, ++seed));
            live[h.bits] = {h, {size, seed}};
            continue;
        }
        auto it = live.begin();
        std::advance(it, (long)(rng() % live.size()));
        ml_handle h = it->second.first;
        size_t size = it->second.second.first;
        uint64_t s = it->second.second.second;
        if (k < 4) {
            ASSERT_TRUE(PatternPinnedIntact(a, h, size, s)) << op;
            ASSERT_EQ(ml_free(a, h), 0);
            live.erase(it);
        } else if (k < 6) {
            const unsigned char *p = (const unsigned char *)ml_get(a, h);
            ASSERT_NE(p, nullptr);
            for (size_t i = 0; i < size; i += 61) ASSERT_EQ(p[i], PatternByte(s, i)) << op;
        } else if (k < 7) {
            size_t ns = 1 + rng() % 20000;
            int rc = ml_realloc(a, h, ns);
            ASSERT_TRUE(rc == 0 || rc == -ENOMEM) << rc; // (-ENOMEM: nothing changed)
            if (rc) {
                ASSERT_TRUE(PatternPinnedIntact(a, h, size, s)) << op;
                continue;
            }
            ASSERT_TRUE(WritePatternPinned(a, h, ns, ++seed));
            it->second.second = {ns, seed};
        } else if (k < 8) {
            ml_lane to = rng() % 2 ? ML_LANE_FAST : ML_LANE_SLOW;
            int rc = ml_migrate(a, h, to);
            // (-ENOMEM: FastLane's spans are all taken by other classes)
            ASSERT_TRUE(rc == 0 || rc == -EALREADY || rc == -EINVAL || rc == -ENOMEM) << rc;
        } else {
            ASSERT_TRUE(PatternPinnedIntact(a, h, size, s)) << op;
            ASSERT_EQ(ml_free(a, h), 0);
            live.erase(it);
        }
    }
    for (auto &e : live) ASSERT_TRUE(PatternPinnedIntact(a, e.second.first, e.second.second.first, e.second.second.second));
    EXPECT_GT(DebugMoves(a), 1000u);
    EXPECT_EQ(ml__arena_check(a), 0);
}

#if ML_TEST_ASAN
// What the flags are for, in a program built with -fsanitize=address: the
// stale read stops the program with AddressSanitizer's report.
TEST(DebugMovesDeathTest, AddressSanitizerStopsAStaleRead) {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    ml_config c = DebugConfig(ML_DEBUG_MOVES);
    ArenaGuard a(&c);
    ml_handle h, other;
    ASSERT_EQ(ml_alloc(a, 64, &h), 0);
    volatile char *p = (volatile char *)ml_get(a, h);
    p[0] = 1;
    ASSERT_EQ(ml_alloc(a, 64, &other), 0);
    EXPECT_DEATH((void)p[0], "use-after-poison");
    ml_handle f;
    ASSERT_EQ(ml_alloc(a, 64, &f), 0);
    volatile char *pf = (volatile char *)ml_get(a, f);
    ASSERT_EQ(ml_free(a, f), 0);
    EXPECT_DEATH(pf[3] = 7, "use-after-poison");
}
#endif

} // namespace

namespace {

// Threads under ML_DEBUG_MOVES, each touching its own entries only through
// pins (a pointer from ml_get is another thread's to move at any point),
// beside a thread running maintenance: every byte survives, and the heap
// is consistent. Run under tsan too.
TEST(DebugMovesThreads, PinnedAccessFromSeveralThreadsKeepsEveryByte) {
    ml_config c = DebugConfig(ML_DEBUG_MOVES);
    c.fast_lane_size = 4 << 20;
    c.slow_lane_size = 16 << 20;
    ArenaGuard a(&c);
    std::atomic<bool> stop{false};
    std::atomic<int> bad{0};
    std::thread maint([&] {
        while (!stop) ml_maintain(a);
    });
    auto worker = [&](uint64_t wseed) {
        std::mt19937_64 rng(wseed);
        std::vector<std::pair<ml_handle, std::pair<size_t, uint64_t>>> mine;
        uint64_t seed = wseed << 32;
        for (int op = 0; op < 3000; op++) {
            if (mine.size() < 50 || rng() % 2) {
                size_t size = rng() % 4 ? 1 + rng() % 300 : 5000 + rng() % 30000;
                ml_handle h;
                if (ml_alloc(a, size, &h) != 0 || !WritePatternPinned(a, h, size, ++seed)) {
                    ++bad;
                    return;
                }
                mine.push_back({h, {size, seed}});
            } else {
                size_t k = rng() % mine.size();
                auto e = mine[k];
                if (!PatternPinnedIntact(a, e.first, e.second.first, e.second.second) || ml_free(a, e.first) != 0) {
                    ++bad;
                    return;
                }
                mine[k] = mine.back();
                mine.pop_back();
            }
        }
        for (auto &e : mine)
            if (!PatternPinnedIntact(a, e.first, e.second.first, e.second.second) || ml_free(a, e.first) != 0) ++bad;
    };
    std::thread w1(worker, 1), w2(worker, 2);
    w1.join();
    w2.join();
    stop = true;
    maint.join();
    EXPECT_EQ(bad.load(), 0);
    EXPECT_GT(DebugMoves(a), 100u);
    EXPECT_EQ(ml__arena_check(a), 0);
    ml_stats st;
    ASSERT_EQ(ml_stats_get(a, &st), 0);
    EXPECT_EQ(st.handles_live, 0u);
}

} // namespace
