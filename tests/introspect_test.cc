// Introspection: handle info, IDs, foreach, read/write, typed helpers,
// statistics, access tracking; FastLane failover and lane growth.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <set>
#include <thread>
#include <vector>

#include "test_util.h"

namespace {

const ml_handle kSentinel = {0x5a5a5a5a5a5a5a5aull};

ml_handle_info Info(ml_arena *a, ml_handle h) {
    ml_handle_info i;
    memset(&i, 0xCC, sizeof i);
    EXPECT_EQ(ml_handle_info_get(a, h, &i), 0);
    return i;
}

ml_stats Stats(ml_arena *a) {
    ml_stats s;
    EXPECT_EQ(ml_stats_get(a, &s), 0);
    return s;
}

std::vector<ml_handle_info> All(ml_arena *a) {
    std::vector<ml_handle_info> v;
    EXPECT_EQ(ml_foreach(
                  a,
                  [](const ml_handle_info *i, void *ctx) {
                      static_cast<std::vector<ml_handle_info> *>(ctx)->push_back(*i);
                      return 0;
                  },
                  &v),
              0);
    return v;
}

ml_config TinyFastLane(bool failover) {
    ml_config c;
    ml_config_init(&c);
    c.fast_lane_size = 64 << 10;
    c.fast_lane_max_size = 0;
    c.slow_lane_size = 4 << 20;
    c.failover_to_slow = failover;
    c.max_handles = 1 << 16;
    c.migrate_on_full = false;  // a full FastLane fails over (or fails) at once
    return c;
}

TEST(HandleInfo, FieldsDescribeTheAllocation) {
    ml_config cfg = SmallConfig();
    ArenaGuard a(&cfg);
    struct Case {
        size_t size, align, alloc_size;
        ml_lane lane;
    } cases[] = {
        {1, 0, 16, ML_LANE_FAST},        {16, 0, 16, ML_LANE_FAST},
        {17, 0, 32, ML_LANE_FAST},       {100, 0, 112, ML_LANE_FAST},
        {129, 0, 160, ML_LANE_FAST},     {4096, 0, 4096, ML_LANE_FAST},
        {4097, 0, 5120, ML_LANE_SLOW},   {8192, 0, 8192, ML_LANE_SLOW},
        {8193, 0, 12288, ML_LANE_SLOW},  {100000, 0, 102400, ML_LANE_SLOW},
        {100, 64, 128, ML_LANE_FAST},    {100, 4096, 4096, ML_LANE_FAST},
        {48, 32, 64, ML_LANE_FAST},      {5000, 4096, 8192, ML_LANE_SLOW},
        {100000, 4096, 102400, ML_LANE_SLOW},
    };
    for (const Case &c : cases) {
        SCOPED_TRACE(testing::Message() << "size " << c.size << " align " << c.align);
        ml_handle h = kSentinel;
        ASSERT_EQ(c.align ? ml_alloc_aligned(a, c.size, c.align, &h) : ml_alloc(a, c.size, &h), 0);
        ml_handle_info i = Info(a, h);
        EXPECT_EQ(i.handle.bits, h.bits);
        EXPECT_EQ(i.id, ml_handle_id(h));
        EXPECT_EQ(i.id > 0, c.lane == ML_LANE_FAST) << "ID sign names the birth lane";
        EXPECT_EQ(i.state, c.lane == ML_LANE_FAST ? ML_STATE_FAST : ML_STATE_SLOW);
        EXPECT_EQ(ml_handle_state(a, h), i.state);
        EXPECT_EQ(i.lane, c.lane);
        EXPECT_EQ(i.born_lane, c.lane);
        EXPECT_EQ(i.generation, ml_handle_generation(h));
        EXPECT_GE(i.generation, 1u);
        EXPECT_EQ(i.size, c.size);
        size_t size = 0;
        EXPECT_EQ(ml_size(a, h, &size), 0);
        EXPECT_EQ(size, c.size);
        EXPECT_EQ(i.alloc_size, c.alloc_size);
        EXPECT_GE(i.alloc_size, i.size);
        if (c.align >= 16) {
            EXPECT_EQ(i.align, c.align);
        }
        EXPECT_GE(i.align, c.align ? c.align : 16);
        EXPECT_EQ(i.align & (i.align - 1), 0u);
        char *start;
        size_t lane_size;
        ml__test_lane_range(a, c.lane, &start, &lane_size);
        char *p = static_cast<char *>(ml_get(a, h));
        EXPECT_EQ(p, start + i.offset) << "offset locates the data in its lane";
        EXPECT_LE(i.offset + i.alloc_size, lane_size);
        EXPECT_EQ((uintptr_t)p % i.align, 0u);
        EXPECT_EQ(i.pins, 0u);
        EXPECT_STREQ(i.tag, "");
        EXPECT_EQ(i.group, ML_GROUP_NONE);
        EXPECT_STREQ(i.group_name, "");
        EXPECT_LE(i.created_ns, i.last_access_ns);
        EXPECT_EQ(i.migrations, 0u);
        // Pins are counted while held.
        void *pp = nullptr;
        ASSERT_EQ(ml_pin(a, h, &pp), 0);
        EXPECT_EQ(pp, p);
        EXPECT_EQ(Info(a, h).pins, 1u);
        ASSERT_EQ(ml_pin(a, h, nullptr), 0);
        EXPECT_EQ(Info(a, h).pins, 2u);
        ASSERT_EQ(ml_unpin(a, h), 0);
        ASSERT_EQ(ml_unpin(a, h), 0);
        EXPECT_EQ(Info(a, h).pins, 0u);
    }
    // Offsets of live allocations never overlap within a lane.
    std::vector<ml_handle_info> all = All(a);
    EXPECT_EQ(all.size(), sizeof cases / sizeof cases[0]);
    for (size_t x = 0; x < all.size(); x++)
        for (size_t y = x + 1; y < all.size(); y++) {
            if (all[x].lane != all[y].lane) continue;
            bool disjoint = all[x].offset + all[x].alloc_size <= all[y].offset ||
                            all[y].offset + all[y].alloc_size <= all[x].offset;
            EXPECT_TRUE(disjoint) << all[x].id << " overlaps " << all[y].id;
        }
    EXPECT_EQ(ml__arena_check(a), 0);
}

// A small size with an alignment that no FastLane class is a multiple of
// (threshold 1000: the largest FastLane class is 1024) cannot live in
// FastLane; it belongs in SlowLane. That is not a failover (FastLane is not
// full) and never -ENOMEM in an empty arena, whatever failover_to_slow says.
TEST(Alignment, SmallSizeWithAnAlignmentNoFastClassHas) {
    for (bool failover : {false, true}) {
        SCOPED_TRACE(failover);
        ml_config c = SmallConfig();
        c.threshold = 1000;
        c.failover_to_slow = failover;
        ArenaGuard a(&c);
        ml_handle h = kSentinel;
        ASSERT_EQ(ml_alloc_aligned(a, 100, 2048, &h), 0);
        ml_handle_info i = Info(a, h);
        EXPECT_EQ((uintptr_t)ml_get(a, h) % 2048, 0u);
        EXPECT_EQ(i.lane, ML_LANE_SLOW);
        EXPECT_EQ(i.size, 100u);
        EXPECT_EQ(i.align, 2048u);
        // Same size, an alignment FastLane can honour: FastLane as usual.
        ml_handle f;
        ASSERT_EQ(ml_alloc_aligned(a, 100, 1024, &f), 0);
        EXPECT_GT(ml_handle_id(f), 0);
        EXPECT_EQ((uintptr_t)ml_get(a, f) % 1024, 0u);
        ml_stats st = Stats(a);
        EXPECT_EQ(st.lane[ML_LANE_SLOW].failovers, 0u) << "FastLane was never full";
        EXPECT_EQ(st.enomem, 0u);
        EXPECT_EQ(st.lane[ML_LANE_FAST].alloc_failures, 0u);
        EXPECT_EQ(ml__arena_check(a), 0);
    }
}

TEST(HandleInfo, CreationTimesFollowTheClock) {
    ArenaGuard a;
    ml_handle h1, h2;
    ASSERT_EQ(ml_alloc(a, 32, &h1), 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    ASSERT_EQ(ml_alloc(a, 32, &h2), 0);
    ml_handle_info i1 = Info(a, h1), i2 = Info(a, h2);
    EXPECT_GT(i2.created_ns, i1.created_ns);
    EXPECT_GE(i2.created_ns - i1.created_ns, 20u * 1000 * 1000) << "30 ms apart (coarse clock)";
    EXPECT_LT(i2.created_ns - i1.created_ns, 10ull * 1000 * 1000 * 1000);
}

TEST(HandleId, FromIdRoundTripsAndRejectsTheRest) {
    ml_config cfg = SmallConfig();
    ArenaGuard a(&cfg);
    std::vector<ml_handle> hs;
    for (size_t size : {8, 64, 4096, 4097, 100000, 24}) {
        ml_handle h;
        ASSERT_EQ(ml_alloc(a, size, &h), 0);
        hs.push_back(h);
    }
    std::set<int64_t> ids;
    for (ml_handle h : hs) {
        int64_t id = ml_handle_id(h);
        EXPECT_NE(id, 0);
        EXPECT_TRUE(ids.insert(id).second) << "IDs of live handles are unique";
        ml_handle back = kSentinel;
        ASSERT_EQ(ml_handle_from_id(a, id, &back), 0);
        EXPECT_TRUE(ml_handle_eq(back, h));
        // The other sign names no live handle (each slot has one birth lane).
        back = kSentinel;
        EXPECT_EQ(ml_handle_from_id(a, -id, &back), -ENOENT);
        EXPECT_EQ(back.bits, kSentinel.bits);
    }
    ml_handle out = kSentinel;
    for (int64_t bad : {int64_t{0}, INT64_MIN, INT64_MAX, -INT64_MAX, int64_t{1} << 32,
                        (int64_t{1} << 32) + 1, -(int64_t{1} << 32), int64_t{100000}, int64_t{-100000}}) {
        EXPECT_EQ(ml_handle_from_id(a, bad, &out), -ENOENT) << bad;
    }
    EXPECT_EQ(out.bits, kSentinel.bits);
    // Freed: -ENOENT. Reused: the ID names the new handle, not the old one.
    ml_handle old = hs[1];
    int64_t id = ml_handle_id(old);
    ASSERT_EQ(ml_free(a, old), 0);
    EXPECT_EQ(ml_handle_from_id(a, id, &out), -ENOENT);
    ml_handle fresh;
    ASSERT_EQ(ml_alloc(a, 64, &fresh), 0);
    ASSERT_EQ(ml_handle_id(fresh), id) << "slot reuse expected (same thread)";
    ASSERT_EQ(ml_handle_from_id(a, id, &out), 0);
    EXPECT_TRUE(ml_handle_eq(out, fresh));
    EXPECT_FALSE(ml_handle_eq(out, old));
    EXPECT_NE(ml_handle_generation(fresh), ml_handle_generation(old));
}

TEST(Foreach, VisitsExactlyTheLiveHandlesInSlotOrder) {
    ml_config cfg = SmallConfig();
    ArenaGuard a(&cfg);
    std::vector<ml_handle> hs;
    std::set<uint64_t> live;
    for (int i = 0; i < 300; i++) {
        ml_handle h;
        size_t size = i % 10 == 0 ? 20000 : i % 7 == 0 ? 6000 : 16 + i;
        ASSERT_EQ(ml_alloc(a, size, &h), 0);
        hs.push_back(h);
    }
    for (size_t i = 0; i < hs.size(); i++) {
        if (i % 3 == 1) {
            ASSERT_EQ(ml_free(a, hs[i]), 0);
        }
        else live.insert(hs[i].bits);
    }
    ASSERT_EQ(ml_set_tag(a, hs[0], "first"), 0);
    std::vector<ml_handle_info> seen = All(a);
    std::set<uint64_t> seen_bits;
    uint64_t prev_slot = 0;
    bool first = true;
    for (const ml_handle_info &i : seen) {
        EXPECT_TRUE(seen_bits.insert(i.handle.bits).second) << "visited twice";
        uint64_t slot = (uint64_t)(i.id < 0 ? -i.id : i.id);
        if (!first) {
            EXPECT_GT(slot, prev_slot) << "slot order";
        }
        first = false;
        prev_slot = slot;
        ml_handle_info direct = Info(a, i.handle);
        EXPECT_EQ(direct.size, i.size);
        EXPECT_EQ(direct.offset, i.offset);
        EXPECT_STREQ(direct.tag, i.tag);
    }
    EXPECT_EQ(seen_bits, live);
    EXPECT_EQ(seen.size(), Stats(a).handles_live);
    for (ml_handle h : hs)
        if (live.count(h.bits)) {
            ASSERT_EQ(ml_free(a, h), 0);
        }
    EXPECT_TRUE(All(a).empty());
}

// ml_foreach_handle visits the same handles as ml_foreach, in the same
// order, stops on a non-zero return, lets its callback free, and refuses
// NULL arguments.
TEST(ForeachHandle, VisitsWhatForeachVisitsStopsAndMayFree) {
    ml_config cfg = SmallConfig();
    ArenaGuard a(&cfg);
    std::vector<ml_handle> hs;
    for (int i = 0; i < 300; i++) {
        ml_handle h;
        ASSERT_EQ(ml_alloc(a, i % 10 == 0 ? 20000 : 16 + i, &h), 0);
        hs.push_back(h);
    }
    for (size_t i = 1; i < hs.size(); i += 3) ASSERT_EQ(ml_free(a, hs[i]), 0);
    std::vector<uint64_t> want, got;
    for (const ml_handle_info &i : All(a)) want.push_back(i.handle.bits);
    ASSERT_EQ(ml_foreach_handle(
                  a,
                  [](ml_handle h, void *p) {
                      static_cast<std::vector<uint64_t> *>(p)->push_back(h.bits);
                      return 0;
                  },
                  &got),
              0);
    EXPECT_EQ(got, want);
    EXPECT_EQ(got.size(), 200u);
    int calls = 0;
    EXPECT_EQ(ml_foreach_handle(
                  a, [](ml_handle, void *p) { return ++*static_cast<int *>(p) == 7 ? 99 : 0; }, &calls),
              99);
    EXPECT_EQ(calls, 7);
    struct Ctx {
        ml_arena *a;
        int errors = 0;
    } ctx{a, 0};
    EXPECT_EQ(ml_foreach_handle(
                  a,
                  [](ml_handle h, void *p) {
                      Ctx *c = static_cast<Ctx *>(p);
                      if (ml_free(c->a, h) != 0) c->errors++;
                      return 0;
                  },
                  &ctx),
              0);
    EXPECT_EQ(ctx.errors, 0);
    EXPECT_EQ(Stats(a).handles_live, 0u);
    EXPECT_EQ(ml_foreach_handle(nullptr, [](ml_handle, void *) { return 0; }, nullptr), -EINVAL);
    EXPECT_EQ(ml_foreach_handle(a, nullptr, nullptr), -EINVAL);
    EXPECT_EQ(ml__arena_check(a), 0);
}

TEST(Foreach, NonZeroReturnStopsTheWalkAndIsReturned) {
    ArenaGuard a;
    for (int i = 0; i < 20; i++) {
        ml_handle h;
        ASSERT_EQ(ml_alloc(a, 32, &h), 0);
    }
    struct Ctx {
        int calls = 0;
    } ctx;
    int rc = ml_foreach(
        a,
        [](const ml_handle_info *, void *p) {
            Ctx *c = static_cast<Ctx *>(p);
            return ++c->calls == 5 ? 42 : 0;
        },
        &ctx);
    EXPECT_EQ(rc, 42);
    EXPECT_EQ(ctx.calls, 5);
    ctx.calls = 0;
    rc = ml_foreach(a, [](const ml_handle_info *, void *) { return -7; }, &ctx);
    EXPECT_EQ(rc, -7);
    // Empty arena: no call, 0.
    ArenaGuard empty;
    int calls = 0;
    EXPECT_EQ(ml_foreach(
                  empty,
                  [](const ml_handle_info *, void *p) {
                      ++*static_cast<int *>(p);
                      return 1;
                  },
                  &calls),
              0);
    EXPECT_EQ(calls, 0);
}

// The callback may free handles (the one it is given and others). A freed
// handle is never visited afterwards.
TEST(Foreach, CallbackMayFreeHandles) {
    ml_config cfg = SmallConfig();
    ArenaGuard a(&cfg);
    std::vector<ml_handle> hs(200);
    for (size_t i = 0; i < hs.size(); i++) ASSERT_EQ(ml_alloc(a, i % 5 ? 40 : 9000, &hs[i]), 0);
    struct Ctx {
        ml_arena *a;
        std::set<uint64_t> freed;
        int visits = 0;
        int errors = 0;
    } ctx{a, {}, 0, 0};
    int rc = ml_foreach(
        a,
        [](const ml_handle_info *i, void *p) {
            Ctx *c = static_cast<Ctx *>(p);
            c->visits++;
            if (c->freed.count(i->handle.bits)) c->errors++;  // visited after its free
            // Free this one and the next slot's handle, if live.
            if (ml_free(c->a, i->handle) != 0) c->errors++;
            c->freed.insert(i->handle.bits);
            ml_handle next;
            if (ml_handle_from_id(c->a, i->id + (i->id > 0 ? 1 : -1), &next) == 0) {
                if (ml_free(c->a, next) != 0) c->errors++;
                c->freed.insert(next.bits);
            }
            return 0;
        },
        &ctx);
    EXPECT_EQ(rc, 0);
    EXPECT_EQ(ctx.errors, 0);
    EXPECT_GT(ctx.visits, 0);
    EXPECT_LT(ctx.visits, 200) << "handles freed ahead of the walk are not visited";
    ml_stats st = Stats(a);
    EXPECT_EQ(st.handles_live, 200u - ctx.freed.size());
    for (ml_handle h : hs)
        if (!ctx.freed.count(h.bits)) {
            ASSERT_EQ(ml_free(a, h), 0);
        }
    EXPECT_EQ(Stats(a).handles_live, 0u);
    EXPECT_EQ(ml__arena_check(a), 0);
}

TEST(ReadWrite, ReadAtOffsetsShortReadsAndPastTheEnd) {
    ArenaGuard a;
    ml_handle h;
    ASSERT_EQ(ml_alloc(a, 100, &h), 0);
    unsigned char src[100];
    for (int i = 0; i < 100; i++) src[i] = (unsigned char)(i * 7 + 3);
    ASSERT_EQ(ml_write(a, h, 0, src, 100), 0);
    unsigned char buf[128];
    auto fill = [&] { memset(buf, 0xEE, sizeof buf); };
    fill();
    EXPECT_EQ(ml_read(a, h, 0, buf, 100), 100);
    EXPECT_EQ(memcmp(buf, src, 100), 0);
    EXPECT_EQ(buf[100], 0xEE);
    fill();
    EXPECT_EQ(ml_read(a, h, 90, buf, 20), 10) << "short read at the end";
    EXPECT_EQ(memcmp(buf, src + 90, 10), 0);
    EXPECT_EQ(buf[10], 0xEE) << "nothing past the returned count";
    fill();
    EXPECT_EQ(ml_read(a, h, 0, buf, 128), 100);
    EXPECT_EQ(buf[100], 0xEE);
    fill();
    EXPECT_EQ(ml_read(a, h, 37, buf, 5), 5);
    EXPECT_EQ(memcmp(buf, src + 37, 5), 0);
    EXPECT_EQ(buf[5], 0xEE);
    for (size_t off : {size_t{100}, size_t{101}, size_t{4096}, SIZE_MAX}) {
        fill();
        EXPECT_EQ(ml_read(a, h, off, buf, 10), 0) << off;
        EXPECT_EQ(buf[0], 0xEE);
    }
    EXPECT_EQ(ml_read(a, h, 50, buf, 0), 0);
    EXPECT_EQ(ml_read(a, h, 99, buf, 1), 1);
    EXPECT_EQ(buf[0], src[99]);
}

TEST(ReadWrite, WriteThenReadRoundTripsInEveryLane) {
    ml_config cfg = SmallConfig();
    ArenaGuard a(&cfg);
    for (size_t size : {1, 15, 16, 100, 4096, 4097, 8192, 8193, 65536, 300000}) {
        SCOPED_TRACE(size);
        ml_handle h;
        ASSERT_EQ(ml_alloc(a, size, &h), 0);
        std::vector<unsigned char> src(size);
        for (size_t i = 0; i < size; i++) src[i] = PatternByte(size, i);
        // Written in uneven chunks, at offsets.
        for (size_t off = 0; off < size;) {
            size_t n = std::min<size_t>(size - off, 1 + (off * 13 + 7) % 1000);
            ASSERT_EQ(ml_write(a, h, off, src.data() + off, n), 0);
            off += n;
        }
        std::vector<unsigned char> back(size + 16, 0);
        ASSERT_EQ(ml_read(a, h, 0, back.data(), back.size()), (int)size);
        EXPECT_TRUE(std::equal(src.begin(), src.end(), back.begin()));
        EXPECT_EQ(memcmp(ml_get(a, h), src.data(), size), 0) << "same bytes through ml_get";
        // Overwrite the middle; the rest is kept.
        if (size >= 3) {
            unsigned char x[3] = {1, 2, 3};
            ASSERT_EQ(ml_write(a, h, size / 2 - 1, x, 3), 0);
            src[size / 2 - 1] = 1;
            src[size / 2] = 2;
            src[size / 2 + 1] = 3;
            ASSERT_EQ(ml_read(a, h, 0, back.data(), size), (int)size);
            EXPECT_TRUE(std::equal(src.begin(), src.end(), back.begin()));
        }
        ASSERT_EQ(ml_free(a, h), 0);
    }
}

struct Vec3 {
    double x, y, z;
};
struct alignas(64) Line {
    char bytes[64];
};
struct Big {
    char bytes[200];
};

TEST(TypedHelpers, AllocGetSetOfT) {
    ArenaGuard a;
    ml_handle h;
    ASSERT_EQ(ML_ALLOC_T(a, Vec3, &h), 0);
    ml_handle_info i = Info(a, h);
    EXPECT_EQ(i.size, sizeof(Vec3));
    EXPECT_GE(i.align, alignof(Vec3));
    // The value needs no parentheses around its commas (this compiles).
    EXPECT_EQ(ML_SET_T(a, h, Vec3, Vec3{1.5, -2.0, 3.25}), 0);
    Vec3 *v = ML_GET_T(a, h, Vec3);
    ASSERT_NE(v, nullptr);
    EXPECT_EQ(v->x, 1.5);
    EXPECT_EQ(v->y, -2.0);
    EXPECT_EQ(v->z, 3.25);
    EXPECT_EQ((void *)v, ml_get(a, h));
    // A smaller T fits; a larger one does not.
    EXPECT_NE(ML_GET_T(a, h, double), nullptr);
    EXPECT_EQ(ML_GET_T(a, h, Big), nullptr);
    EXPECT_EQ(ml_get_sized(a, h, sizeof(Vec3) + 1), nullptr) << "class slack does not count";
    EXPECT_NE(ml_get_sized(a, h, sizeof(Vec3)), nullptr);
    // ML_SET_T of a larger T is refused and writes nothing.
    Big big;
    memset(&big, 0x77, sizeof big);
    EXPECT_EQ(ML_SET_T(a, h, Big, big), -EINVAL);
    EXPECT_EQ(v->x, 1.5);
    EXPECT_EQ(v->z, 3.25);
    // Over-aligned types keep their alignment.
    ml_handle hl;
    ASSERT_EQ(ML_ALLOC_T(a, Line, &hl), 0);
    EXPECT_EQ((uintptr_t)ML_GET_T(a, hl, Line) % 64, 0u);
    EXPECT_EQ(Info(a, hl).align, 64u);
    // Stale handles give NULL.
    ASSERT_EQ(ml_free(a, h), 0);
    EXPECT_EQ(ML_GET_T(a, h, Vec3), nullptr);
    EXPECT_EQ(ML_SET_T(a, h, Vec3, (Vec3{0, 0, 0})), -ESTALE);
    EXPECT_EQ(ML_GET_T(a, ML_HANDLE_NULL, Vec3), nullptr);
    ASSERT_EQ(ml_free(a, hl), 0);
}

TEST(Stats, AgreeWithTheHandles) {
    ml_config cfg = SmallConfig();
    cfg.fast_lane_size = 4 << 20;  // room for every class's spans: no growth, no failover
    cfg.slow_lane_size = 8 << 20;
    ArenaGuard a(&cfg);
    std::vector<ml_handle> hs;
    for (int i = 0; i < 500; i++) {
        ml_handle h;
        size_t size = i % 11 == 0 ? 40000 + i : i % 5 == 0 ? 5000 + i : 1 + (i * 37) % 4096;
        ASSERT_EQ(ml_alloc(a, size, &h), 0);
        hs.push_back(h);
    }
    for (size_t i = 0; i < hs.size(); i += 4) ASSERT_EQ(ml_free(a, hs[i]), 0);
    ml_group g;
    ASSERT_EQ(ml_group_create(a, "g", &g), 0);
    ASSERT_EQ(ml_set_tag(a, hs[1], "t1"), 0);
    ASSERT_EQ(ml_set_tag(a, hs[2], "t2"), 0);

    uint64_t live[2] = {0, 0}, used[2] = {0, 0}, requested[2] = {0, 0};
    for (const ml_handle_info &i : All(a)) {
        live[i.lane]++;
        used[i.lane] += i.alloc_size;
        requested[i.lane] += i.size;
    }
    ml_stats st = Stats(a);
    ml_config rc;
    ASSERT_EQ(ml_arena_config(a, &rc), 0);
    EXPECT_EQ(st.handles_live, live[0] + live[1]);
    EXPECT_EQ(st.handles_live, hs.size() - (hs.size() + 3) / 4);
    EXPECT_GE(st.handles_capacity, st.handles_live);
    EXPECT_EQ(st.handles_max, cfg.max_handles);
    EXPECT_EQ(st.handles_retired, 0u);
    EXPECT_EQ(st.groups, 1u);
    EXPECT_EQ(st.tags, 2u);
    EXPECT_EQ(st.enomem, 0u);
    EXPECT_GT(st.metadata_bytes, 0u);
    for (int l = 0; l < 2; l++) {
        SCOPED_TRACE(l);
        const ml_lane_stats &s = st.lane[l];
        EXPECT_EQ(s.live, live[l]);
        EXPECT_EQ(s.used, used[l]);
        EXPECT_EQ(s.requested, requested[l]);
        EXPECT_GE(s.used, s.requested);
        EXPECT_EQ(s.allocs - s.frees, s.live);
        EXPECT_EQ(s.capacity, l == 0 ? rc.fast_lane_size : rc.slow_lane_size);
        EXPECT_EQ(s.max_capacity, l == 0 ? rc.fast_lane_max_size : rc.slow_lane_max_size);
        EXPECT_EQ(s.free, s.capacity - s.used);
        EXPECT_LE(s.largest_free, s.free);
        EXPECT_LE(s.fragmentation_permille, 1000u);
        uint64_t expect_frag = s.free ? 1000 - std::min<uint64_t>(1000, s.largest_free * 1000 / s.free) : 0;
        EXPECT_EQ(s.fragmentation_permille, expect_frag);
        EXPECT_LE(s.span_bytes + s.blob_bytes, s.capacity);
        EXPECT_GE(s.span_bytes + s.blob_bytes, s.used);
        EXPECT_EQ(s.failovers, 0u);
        EXPECT_EQ(s.grows, 0u);
        EXPECT_EQ(s.alloc_failures, 0u);
    }
    EXPECT_GT(st.lane[ML_LANE_FAST].spans, 0u);
    EXPECT_EQ(st.lane[ML_LANE_FAST].blobs, 0u) << "FastLane has no blobs";
    EXPECT_GT(st.lane[ML_LANE_SLOW].blobs, 0u);
    for (size_t i = 0; i < hs.size(); i++)
        if (i % 4) {
            ASSERT_EQ(ml_free(a, hs[i]), 0);
        }
    st = Stats(a);
    for (int l = 0; l < 2; l++) {
        EXPECT_EQ(st.lane[l].live, 0u);
        EXPECT_EQ(st.lane[l].used, 0u);
        EXPECT_EQ(st.lane[l].requested, 0u);
        EXPECT_EQ(st.lane[l].allocs, st.lane[l].frees);
        EXPECT_EQ(st.lane[l].free, st.lane[l].capacity);
    }
    EXPECT_EQ(st.lane[ML_LANE_SLOW].blobs, 0u);
    EXPECT_EQ(st.lane[ML_LANE_SLOW].blob_bytes, 0u);
    // Each class keeps its last (now empty) span, so the free space need not
    // be one extent; the largest free extent is what the spans leave.
    for (int l = 0; l < 2; l++) {
        EXPECT_LE(st.lane[l].largest_free + st.lane[l].span_bytes, st.lane[l].capacity);
        EXPECT_GT(st.lane[l].largest_free, 0u);
    }
}

// Holes between blobs: exact tombstones, largest_free and fragmentation.
TEST(Stats, FragmentationOfHolesBetweenBlobs) {
    ml_config cfg = SmallConfig();  // SlowLane 4 MiB
    ArenaGuard a(&cfg);
    const uint64_t kCap = 4 << 20, kBlob = 64 << 10;
    std::vector<ml_handle> blobs(10);
    for (auto &h : blobs) ASSERT_EQ(ml_alloc(a, kBlob, &h), 0);
    ml_stats st = Stats(a);
    EXPECT_EQ(st.lane[1].blobs, 10u);
    EXPECT_EQ(st.lane[1].blob_bytes, 10 * kBlob);
    EXPECT_EQ(st.lane[1].tombstones, 0u);
    EXPECT_EQ(st.lane[1].largest_free, kCap - 10 * kBlob);
    EXPECT_EQ(st.lane[1].fragmentation_permille, 0u);
    for (int i = 0; i < 10; i += 2) ASSERT_EQ(ml_free(a, blobs[i]), 0);
    st = Stats(a);
    const uint64_t free_bytes = kCap - 5 * kBlob, largest = kCap - 10 * kBlob;
    EXPECT_EQ(st.lane[1].tombstones, 5u);
    EXPECT_EQ(st.lane[1].free, free_bytes);
    EXPECT_EQ(st.lane[1].largest_free, largest);
    EXPECT_EQ(st.lane[1].fragmentation_permille, 1000 - largest * 1000 / free_bytes);
    EXPECT_GT(st.lane[1].fragmentation_permille, 0u);
    // Freeing the neighbours merges the holes back into one extent.
    for (int i = 1; i < 10; i += 2) ASSERT_EQ(ml_free(a, blobs[i]), 0);
    st = Stats(a);
    EXPECT_EQ(st.lane[1].tombstones, 0u);
    EXPECT_EQ(st.lane[1].largest_free, kCap);
    EXPECT_EQ(st.lane[1].fragmentation_permille, 0u);
}

// ml_get sets an access bit; ml_maintain turns it into a count and a time.
// ml_read and the snapshots do not count.
TEST(Maintain, FoldsAccessBitsIntoCounts) {
    ArenaGuard a;
    ml_handle h, other;
    ASSERT_EQ(ml_alloc(a, 64, &h), 0);
    ASSERT_EQ(ml_alloc(a, 64, &other), 0);
    uint64_t cycles0 = Stats(a).maintenance_cycles;
    ASSERT_EQ(ml_maintain(a), 0);
    ml_handle_info i0 = Info(a, h);
    EXPECT_GE(i0.accesses, 1u) << "the allocation itself counts";
    const uint64_t base = i0.accesses;
    // No access: nothing changes, however many cycles.
    for (int k = 0; k < 3; k++) ASSERT_EQ(ml_maintain(a), 0);
    ml_handle_info i1 = Info(a, h);
    EXPECT_EQ(i1.accesses, base);
    EXPECT_EQ(i1.last_access_ns, i0.last_access_ns);
    // Accesses that do not count.
    char buf[8];
    EXPECT_EQ(ml_read(a, h, 0, buf, 8), 8);
    EXPECT_TRUE(ml_is_valid(a, h));
    EXPECT_EQ(ml_handle_state(a, h), ML_STATE_FAST);
    Info(a, h);
    ASSERT_EQ(ml_maintain(a), 0);
    EXPECT_EQ(Info(a, h).accesses, base) << "read/info/state are not accesses";
    // ml_get counts once per cycle, however often it is called.
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    for (int k = 0; k < 10; k++) ASSERT_NE(ml_get(a, h), nullptr);
    ASSERT_EQ(ml_maintain(a), 0);
    ml_handle_info i2 = Info(a, h);
    EXPECT_EQ(i2.accesses, base + 1);
    EXPECT_GT(i2.last_access_ns, i1.last_access_ns);
    EXPECT_GE(i2.last_access_ns, i2.created_ns);
    EXPECT_EQ(Info(a, other).accesses, base) << "only the handle that was used";
    ASSERT_EQ(ml_maintain(a), 0);
    EXPECT_EQ(Info(a, h).accesses, base + 1);
    // ml_try_get, ml_write, ml_pin are accesses too.
    void *p;
    ASSERT_EQ(ml_try_get(a, h, &p), 0);
    ASSERT_EQ(ml_maintain(a), 0);
    EXPECT_EQ(Info(a, h).accesses, base + 2);
    ASSERT_EQ(ml_write(a, h, 0, "x", 1), 0);
    ASSERT_EQ(ml_maintain(a), 0);
    EXPECT_EQ(Info(a, h).accesses, base + 3);
    ASSERT_EQ(ml_pin(a, h, nullptr), 0);
    ASSERT_EQ(ml_unpin(a, h), 0);
    ASSERT_EQ(ml_maintain(a), 0);
    EXPECT_EQ(Info(a, h).accesses, base + 4);
    EXPECT_EQ(Stats(a).maintenance_cycles, cycles0 + 10);
}

// ---- failover and growth ------------------------------------------------------

TEST(Failover, FullFastLanePlacesSmallObjectsInSlowLane) {
    ml_config cfg = TinyFastLane(true);
    ArenaGuard a(&cfg);
    std::vector<ml_handle> fast, slow;
    for (int i = 0; i < 10000 && slow.size() < 100; i++) {
        ml_handle h;
        ASSERT_EQ(ml_alloc(a, 16, &h), 0) << i;
        if (ml_handle_id(h) > 0) {
            ASSERT_TRUE(slow.empty()) << "FastLane handle after failover started";
            fast.push_back(h);
        } else {
            slow.push_back(h);
        }
        ASSERT_EQ(ml_write(a, h, 0, &i, sizeof i), 0);
    }
    ASSERT_EQ(slow.size(), 100u) << "no failover happened";
    EXPECT_EQ(fast.size(), (64u << 10) / 16) << "FastLane filled completely first";
    for (ml_handle h : slow) {
        ml_handle_info i = Info(a, h);
        EXPECT_LT(i.id, 0);
        EXPECT_EQ(i.state, ML_STATE_SLOW);
        EXPECT_EQ(i.lane, ML_LANE_SLOW);
        EXPECT_EQ(i.born_lane, ML_LANE_SLOW);
        EXPECT_EQ(i.size, 16u);
    }
    ml_stats st = Stats(a);
    EXPECT_EQ(st.lane[ML_LANE_SLOW].failovers, slow.size());
    EXPECT_EQ(st.lane[ML_LANE_SLOW].live, slow.size());
    EXPECT_EQ(st.lane[ML_LANE_FAST].live, fast.size());
    EXPECT_EQ(st.lane[ML_LANE_FAST].capacity, 64u << 10);
    EXPECT_EQ(st.lane[ML_LANE_FAST].grows, 0u);
    EXPECT_EQ(st.enomem, 0u);
    EXPECT_EQ(ml__arena_check(a), 0);
    // Data in both lanes is intact.
    int n = 0;
    for (ml_handle h : fast) {
        int v;
        ASSERT_EQ(ml_read(a, h, 0, &v, sizeof v), (int)sizeof v);
        ASSERT_EQ(v, n++);
    }
    for (ml_handle h : slow) {
        int v;
        ASSERT_EQ(ml_read(a, h, 0, &v, sizeof v), (int)sizeof v);
        ASSERT_EQ(v, n++);
    }
    for (ml_handle h : fast) ASSERT_EQ(ml_free(a, h), 0);
    for (ml_handle h : slow) ASSERT_EQ(ml_free(a, h), 0);
    st = Stats(a);
    EXPECT_EQ(st.lane[0].used + st.lane[1].used, 0u);
    EXPECT_EQ(ml__arena_check(a), 0);
}

TEST(Failover, DisabledGivesEnomemAndCountsIt) {
    ml_config cfg = TinyFastLane(false);
    ArenaGuard a(&cfg);
    std::vector<ml_handle> hs;
    int rc = 0;
    for (int i = 0; i < 10000; i++) {
        ml_handle h = kSentinel;
        rc = ml_alloc(a, 16, &h);
        if (rc) {
            EXPECT_EQ(h.bits, kSentinel.bits) << "out untouched on -ENOMEM";
            break;
        }
        EXPECT_GT(ml_handle_id(h), 0);
        hs.push_back(h);
    }
    ASSERT_EQ(rc, -ENOMEM);
    EXPECT_EQ(hs.size(), (64u << 10) / 16);
    ml_stats st = Stats(a);
    EXPECT_EQ(st.enomem, 1u);
    EXPECT_EQ(st.lane[ML_LANE_SLOW].failovers, 0u);
    EXPECT_EQ(st.lane[ML_LANE_SLOW].live, 0u);
    EXPECT_EQ(st.lane[ML_LANE_SLOW].used, 0u);
    EXPECT_GT(st.lane[ML_LANE_FAST].alloc_failures, 0u);
    EXPECT_EQ(st.handles_live, hs.size());
    // Every further attempt is counted, and changes nothing else.
    ml_handle h;
    for (int k = 0; k < 3; k++) EXPECT_EQ(ml_alloc(a, 16, &h), -ENOMEM);
    ml_stats st2 = Stats(a);
    EXPECT_EQ(st2.enomem, 4u);
    EXPECT_EQ(st2.handles_live, st.handles_live);
    EXPECT_EQ(st2.lane[0].used, st.lane[0].used);
    // Large objects still go to SlowLane (not a failover).
    ASSERT_EQ(ml_alloc(a, 100000, &h), 0);
    EXPECT_LT(ml_handle_id(h), 0);
    EXPECT_EQ(Stats(a).lane[ML_LANE_SLOW].failovers, 0u);
    ASSERT_EQ(ml_free(a, h), 0);
    // Room comes back with a free.
    ASSERT_EQ(ml_free(a, hs.back()), 0);
    hs.pop_back();
    ASSERT_EQ(ml_alloc(a, 16, &h), 0);
    EXPECT_GT(ml_handle_id(h), 0);
    EXPECT_EQ(ml__arena_check(a), 0);
}

TEST(Growth, FastLaneGrowsInsteadOfFailingOver) {
    ml_config cfg = TinyFastLane(true);
    cfg.fast_lane_max_size = 1 << 20;
    cfg.max_handles = 1 << 20;  // 1 MiB of 16-byte objects is 65536 handles
    ArenaGuard a(&cfg);
    char *start0;
    size_t size0;
    ml__test_lane_range(a, ML_LANE_FAST, &start0, &size0);
    ASSERT_EQ(size0, 64u << 10);
    std::vector<ml_handle> hs;
    const size_t n = 3 * (64 << 10) / 16;  // three times the initial lane
    for (size_t i = 0; i < n; i++) {
        ml_handle h;
        ASSERT_EQ(ml_alloc(a, 16, &h), 0);
        ASSERT_GT(ml_handle_id(h), 0) << "failed over at " << i << " instead of growing";
        hs.push_back(h);
    }
    ml_stats st = Stats(a);
    EXPECT_GT(st.lane[ML_LANE_FAST].grows, 0u);
    EXPECT_GE(st.lane[ML_LANE_FAST].capacity, 3u * (64 << 10));
    EXPECT_LE(st.lane[ML_LANE_FAST].capacity, 1u << 20);
    EXPECT_EQ(st.lane[ML_LANE_FAST].max_capacity, 1u << 20);
    EXPECT_EQ(st.lane[ML_LANE_SLOW].failovers, 0u);
    char *start1;
    size_t size1;
    ml__test_lane_range(a, ML_LANE_FAST, &start1, &size1);
    EXPECT_EQ(start1, start0) << "a lane never moves";
    EXPECT_EQ(size1, st.lane[ML_LANE_FAST].capacity);
    // Up to the maximum, then failover.
    for (;;) {
        ml_handle h;
        ASSERT_EQ(ml_alloc(a, 16, &h), 0);
        hs.push_back(h);
        if (ml_handle_id(h) < 0) break;
        ASSERT_LT(hs.size(), 1000000u);
    }
    st = Stats(a);
    EXPECT_EQ(st.lane[ML_LANE_FAST].capacity, 1u << 20);
    EXPECT_EQ(st.lane[ML_LANE_FAST].live, (1u << 20) / 16);
    EXPECT_EQ(st.lane[ML_LANE_SLOW].failovers, 1u);
    EXPECT_EQ(ml__arena_check(a), 0);
}

TEST(Growth, SlowLaneGrowsForABlobLargerThanItsSize) {
    ml_config cfg = SmallConfig();
    cfg.slow_lane_max_size = 16 << 20;
    ArenaGuard a(&cfg);
    ml_handle h;
    ASSERT_EQ(ml_alloc(a, 6 << 20, &h), 0);
    ml_stats st = Stats(a);
    EXPECT_GT(st.lane[ML_LANE_SLOW].grows, 0u);
    EXPECT_GE(st.lane[ML_LANE_SLOW].capacity, 6u << 20);
    EXPECT_LE(st.lane[ML_LANE_SLOW].capacity, 16u << 20);
    std::vector<unsigned char> b(6 << 20, 0x3C);
    ASSERT_EQ(ml_write(a, h, 0, b.data(), b.size()), 0);
    unsigned char last;
    ASSERT_EQ(ml_read(a, h, b.size() - 1, &last, 1), 1);
    EXPECT_EQ(last, 0x3C);
    // Beyond the maximum: no room (not invalid: the lane could hold it empty).
    ml_handle h2 = kSentinel;
    EXPECT_EQ(ml_alloc(a, 12 << 20, &h2), -ENOMEM);
    EXPECT_EQ(h2.bits, kSentinel.bits);
    EXPECT_EQ(Stats(a).enomem, 1u);
    EXPECT_EQ(ml__arena_check(a), 0);
}

TEST(HandleTable, FullTableGivesEnomem) {
    ml_config cfg = SmallConfig();
    cfg.max_handles = 1024;
    ArenaGuard a(&cfg);
    std::vector<ml_handle> hs;
    for (int i = 0; i < 1024; i++) {
        ml_handle h;
        ASSERT_EQ(ml_alloc(a, i % 2 ? 16 : 5000, &h), 0) << i;
        hs.push_back(h);
    }
    ml_handle h = kSentinel;
    EXPECT_EQ(ml_alloc(a, 16, &h), -ENOMEM);
    EXPECT_EQ(ml_alloc(a, 100000, &h), -ENOMEM);
    EXPECT_EQ(h.bits, kSentinel.bits);
    ml_stats st = Stats(a);
    EXPECT_EQ(st.handles_live, 1024u);
    EXPECT_EQ(st.handles_capacity, 1024u);
    EXPECT_EQ(st.enomem, 2u);
    ASSERT_EQ(ml_free(a, hs[10]), 0);
    ASSERT_EQ(ml_alloc(a, 100000, &h), 0);
    EXPECT_EQ(ml__arena_check(a), 0);
}

}  // namespace
