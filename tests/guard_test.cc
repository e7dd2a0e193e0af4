// Guard pages: one byte before a lane's usable start and one byte at its
// usable end are inaccessible, before and after the lane grows.
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>

#include <string>
#include <vector>

#include "test_util.h"

namespace {

// A store the compiler must emit.
void Poke(char *p) { *static_cast<volatile char *>(p) = 0x5A; }

class Guard : public ::testing::Test {
   protected:
    static void SetUpTestSuite() {
        GTEST_FLAG_SET(death_test_style, "threadsafe");
        // The children re-run this binary: let SIGSEGV kill them for real
        // under the sanitizers too (ASan/TSan would otherwise report and
        // exit with their own status), and leave no core files behind.
        AppendEnv("ASAN_OPTIONS", "handle_segv=0");
        AppendEnv("UBSAN_OPTIONS", "handle_segv=0");
        AppendEnv("TSAN_OPTIONS", "handle_segv=0");
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
    }
    static void AppendEnv(const char *name, const char *opt) {
        const char *old = getenv(name);
        std::string v = old && *old ? std::string(old) + ":" + opt : std::string(opt);
        setenv(name, v.c_str(), 1);
    }
};

ml_config GuardConfig(size_t fast_max, size_t slow_max) {
    ml_config c;
    ml_config_init(&c);
    c.fast_lane_size = 64 << 10;
    c.fast_lane_max_size = fast_max;
    c.slow_lane_size = 256 << 10;
    c.slow_lane_max_size = slow_max;
    c.max_handles = 1 << 16;
    c.slow_lane_safety_margin = 0;  // blobs may fill SlowLane to the last byte
    return c;
}

struct Range {
    char *start;
    size_t size;
};

Range LaneRange(ml_arena *a, ml_lane lane) {
    Range r;
    ml__test_lane_range(a, lane, &r.start, &r.size);
    return r;
}

TEST_F(Guard, UsableRangeIsWritableEdgeToEdge) {
    ml_config cfg = GuardConfig(0, 0);
    ArenaGuard a(&cfg);
    for (ml_lane lane : {ML_LANE_FAST, ML_LANE_SLOW}) {
        Range r = LaneRange(a, lane);
        ASSERT_NE(r.start, nullptr);
        EXPECT_EQ((uintptr_t)r.start % 4096, 0u);
        EXPECT_EQ(r.size, lane == ML_LANE_FAST ? 64u << 10 : 256u << 10);
        Poke(r.start);
        Poke(r.start + r.size - 1);
    }
}

TEST_F(Guard, ByteBeforeEachLaneDies) {
    ml_config cfg = GuardConfig(0, 0);
    ArenaGuard a(&cfg);
    Range fast = LaneRange(a, ML_LANE_FAST);
    Range slow = LaneRange(a, ML_LANE_SLOW);
    EXPECT_EXIT(Poke(fast.start - 1), ::testing::KilledBySignal(SIGSEGV), "");
    EXPECT_EXIT(Poke(slow.start - 1), ::testing::KilledBySignal(SIGSEGV), "");
}

TEST_F(Guard, ByteAtTheEndOfEachLaneDies) {
    // Lanes at their maximum (the end guard is the reservation's last page)
    // and lanes below it (the end guard is uncommitted reservation).
    for (size_t max : {size_t{0}, size_t{4} << 20}) {
        SCOPED_TRACE(max);
        ml_config cfg = GuardConfig(max, max);
        ArenaGuard a(&cfg);
        Range fast = LaneRange(a, ML_LANE_FAST);
        Range slow = LaneRange(a, ML_LANE_SLOW);
        EXPECT_EXIT(Poke(fast.start + fast.size), ::testing::KilledBySignal(SIGSEGV), "");
        EXPECT_EXIT(Poke(slow.start + slow.size), ::testing::KilledBySignal(SIGSEGV), "");
    }
}

// Allocating to the very edges of a lane never brings a guard within reach
// of a legal write: the last allocation ends exactly at the lane's end.
TEST_F(Guard, LastAllocationEndsAtTheGuard) {
    ml_config cfg = GuardConfig(0, 0);
    ArenaGuard a(&cfg);
    ml_handle h;
    ASSERT_EQ(ml_alloc(a, 256 << 10, &h), 0);  // the whole SlowLane
    Range slow = LaneRange(a, ML_LANE_SLOW);
    char *p = static_cast<char *>(ml_get(a, h));
    EXPECT_EQ(p, slow.start);
    Poke(p + (256 << 10) - 1);
    EXPECT_EXIT(Poke(p + (256 << 10)), ::testing::KilledBySignal(SIGSEGV), "");
    EXPECT_EXIT(Poke(p - 1), ::testing::KilledBySignal(SIGSEGV), "");
}

// Growth commits more of the reservation: the old end becomes writable, the
// new end is guarded, the start does not move and keeps its guard.
TEST_F(Guard, GuardMovesWithGrowth) {
    ml_config cfg = GuardConfig(1 << 20, 4 << 20);
    ArenaGuard a(&cfg);
    Range fast0 = LaneRange(a, ML_LANE_FAST);
    Range slow0 = LaneRange(a, ML_LANE_SLOW);
    // Grow FastLane with small objects, SlowLane with one big blob.
    std::vector<ml_handle> hs;
    for (int i = 0; i < 3 * (64 << 10) / 64; i++) {
        ml_handle h;
        ASSERT_EQ(ml_alloc(a, 64, &h), 0);
        ASSERT_GT(ml_handle_id(h), 0) << "failed over instead of growing";
        hs.push_back(h);
    }
    ml_handle big;
    ASSERT_EQ(ml_alloc(a, 1 << 20, &big), 0);
    Range fast1 = LaneRange(a, ML_LANE_FAST);
    Range slow1 = LaneRange(a, ML_LANE_SLOW);
    ASSERT_GT(fast1.size, fast0.size);
    ASSERT_GT(slow1.size, slow0.size);
    EXPECT_EQ(fast1.start, fast0.start);
    EXPECT_EQ(slow1.start, slow0.start);
    ml_stats st;
    ASSERT_EQ(ml_stats_get(a, &st), 0);
    EXPECT_GT(st.lane[ML_LANE_FAST].grows, 0u);
    EXPECT_GT(st.lane[ML_LANE_SLOW].grows, 0u);
    // The old ends are ordinary memory now.
    Poke(fast0.start + fast0.size);
    Poke(slow0.start + slow0.size);
    Poke(fast1.start + fast1.size - 1);
    Poke(slow1.start + slow1.size - 1);
    // The new ends and the starts are guarded.
    EXPECT_EXIT(Poke(fast1.start + fast1.size), ::testing::KilledBySignal(SIGSEGV), "");
    EXPECT_EXIT(Poke(slow1.start + slow1.size), ::testing::KilledBySignal(SIGSEGV), "");
    EXPECT_EXIT(Poke(fast1.start - 1), ::testing::KilledBySignal(SIGSEGV), "");
    EXPECT_EXIT(Poke(slow1.start - 1), ::testing::KilledBySignal(SIGSEGV), "");
}

// Grown all the way: the end guard is the reservation's last page.
TEST_F(Guard, LaneGrownToItsMaximumIsGuarded) {
    ml_config cfg = GuardConfig(256 << 10, 1 << 20);
    cfg.failover_to_slow = false;
    ArenaGuard a(&cfg);
    ml_handle h;
    ASSERT_EQ(ml_alloc(a, 1 << 20, &h), 0);  // SlowLane to its maximum
    int rc;
    do {
        rc = ml_alloc(a, 2048, &h);  // FastLane until full
    } while (rc == 0);
    ASSERT_EQ(rc, -ENOMEM);
    Range fast = LaneRange(a, ML_LANE_FAST);
    Range slow = LaneRange(a, ML_LANE_SLOW);
    ASSERT_EQ(fast.size, 256u << 10);
    ASSERT_EQ(slow.size, 1u << 20);
    Poke(fast.start + fast.size - 1);
    EXPECT_EXIT(Poke(fast.start + fast.size), ::testing::KilledBySignal(SIGSEGV), "");
    EXPECT_EXIT(Poke(slow.start + slow.size), ::testing::KilledBySignal(SIGSEGV), "");
}

}  // namespace
