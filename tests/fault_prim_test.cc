// Failure paths through a memory-primitive table that fails on demand
// (tests/fault_prim.h): arena creation, lane growth, mlock.
#include <string>
#include <vector>

#include "fault_prim.h"
#include "test_util.h"
#include "world.h"

namespace {

ml_arena *const kUntouched = reinterpret_cast<ml_arena *>(uintptr_t{0xDEAD0});
const ml_handle kSentinel = {0x5a5a5a5a5a5a5a5aull};

ml_config Small(bool lock = false) {
    ml_config c;
    ml_config_init(&c);
    c.fast_lane_size = 256 << 10;
    c.slow_lane_size = 1 << 20;
    c.max_handles = 1 << 16;
    c.lock_lanes = lock;
    return c;
}

TEST(FaultPrim, PassThroughArenaWorksAndCleansUp) {
    FaultPrim fp;
    ml_config cfg = Small(true);
    ml_arena *a = nullptr;
    ASSERT_EQ(ml__arena_create_with(&cfg, fp.prim(), &a), 0);
    EXPECT_EQ(fp.reservations(), 2u);
    EXPECT_EQ(fp.committed_pages(), (size_t)((256 << 10) + (1 << 20)) / 4096);
    EXPECT_EQ(fp.locked_pages(), fp.committed_pages()) << "lock_lanes locks both lanes";
    ml_handle h;
    ASSERT_EQ(ml_alloc(a, 100, &h), 0);
    ASSERT_EQ(ml_write(a, h, 0, "hello", 6), 0);
    char *start;
    size_t size;
    ml__test_lane_range(a, ML_LANE_FAST, &start, &size);
    EXPECT_TRUE(fp.is_committed(start));
    EXPECT_TRUE(fp.is_committed(start + size - 1));
    EXPECT_FALSE(fp.is_committed(start - 1)) << "guard page";
    EXPECT_FALSE(fp.is_committed(start + size)) << "guard page";
    ml_arena_destroy(a);
    EXPECT_TRUE(fp.clean()) << "destroy gives everything back";
    EXPECT_EQ(fp.violations, 0);
    EXPECT_EQ(fp.commit.failures + fp.reserve.failures + fp.lock.failures, 0);
}

// Fail the n-th call of one primitive during creation, for every n that
// creation reaches: each time -ENOMEM, out untouched, nothing left behind.
void CreateFailsCleanlyAt(FaultPrim::Knob FaultPrim::*knob, bool lock, const char *what) {
    int failing_points = 0;
    for (long n = 0; n < 50; n++) {
        SCOPED_TRACE(testing::Message() << what << " call #" << n << " fails");
        FaultPrim fp;
        (fp.*knob).fail_after = n;
        ml_config cfg = Small(lock);
        ml_arena *a = kUntouched;
        int rc = ml__arena_create_with(&cfg, fp.prim(), &a);
        if ((fp.*knob).failures == 0) {  // creation needs fewer calls than n
            ASSERT_EQ(rc, 0);
            ASSERT_NE(a, kUntouched);
            ml_arena_destroy(a);
            EXPECT_TRUE(fp.clean());
            break;
        }
        failing_points++;
        EXPECT_EQ(rc, -ENOMEM);
        EXPECT_EQ(a, kUntouched) << "out must be untouched on failure";
        EXPECT_TRUE(fp.clean()) << "reservations " << fp.reservations() << ", committed pages "
                                << fp.committed_pages() << ", locked pages " << fp.locked_pages();
        EXPECT_EQ(fp.violations, 0);
    }
    EXPECT_GE(failing_points, 2) << "both lanes must hit the primitive";
}

TEST(FaultPrim, CreateFailsCleanlyWhenAReservationFails) {
    CreateFailsCleanlyAt(&FaultPrim::reserve, false, "reserve");
}

TEST(FaultPrim, CreateFailsCleanlyWhenACommitFails) {
    CreateFailsCleanlyAt(&FaultPrim::commit, false, "commit");
    CreateFailsCleanlyAt(&FaultPrim::commit, true, "commit (lock_lanes)");
}

TEST(FaultPrim, LockLanesWithAFailingLockRefusesCreation) {
    CreateFailsCleanlyAt(&FaultPrim::lock, true, "lock");
    // A lock that always fails: refused, and nothing stays committed.
    FaultPrim fp;
    fp.lock.fail_always = true;
    ml_config cfg = Small(true);
    ml_arena *a = kUntouched;
    EXPECT_EQ(ml__arena_create_with(&cfg, fp.prim(), &a), -ENOMEM);
    EXPECT_EQ(a, kUntouched);
    EXPECT_TRUE(fp.clean());
    // Without lock_lanes the lock is never called.
    FaultPrim fp2;
    fp2.lock.fail_always = true;
    ml_config cfg2 = Small(false);
    ASSERT_EQ(ml__arena_create_with(&cfg2, fp2.prim(), &a), 0);
    EXPECT_EQ(fp2.lock.calls, 0);
    ml_arena_destroy(a);
    EXPECT_TRUE(fp2.clean());
}

// What a failed allocation may change besides nothing: its failure counters,
// and the handle-table capacity when the thread's cache of free slots was
// refilled on the way (the slot goes back to that cache, not into use).
void ForgiveCacheRefill(const World &before, World *after) {
    EXPECT_GE(after->stats.handles_capacity, before.stats.handles_capacity);
    EXPECT_LE(after->stats.handles_capacity, before.stats.handles_capacity + ML_TC_SLOTS);
    after->stats.handles_capacity = before.stats.handles_capacity;
    after->stats.metadata_bytes = before.stats.metadata_bytes;
    after->stats.enomem = before.stats.enomem;
    for (int l = 0; l < 2; l++) after->stats.lane[l].alloc_failures = before.stats.lane[l].alloc_failures;
}

// A FastLane that is full and may grow; the growth fails.
class GrowthFault : public ::testing::Test {
   protected:
    void Make(bool failover, bool lock) {
        cfg_ = Small(lock);
        cfg_.fast_lane_size = 64 << 10;
        cfg_.fast_lane_max_size = 1 << 20;
        cfg_.slow_lane_size = 1 << 20;
        cfg_.slow_lane_max_size = 8 << 20;
        cfg_.failover_to_slow = failover;
        cfg_.migrate_on_full = false;  // growth is the only remedy under test
        ASSERT_EQ(ml__arena_create_with(&cfg_, fp_.prim(), &a_), 0);
        // Fill the initial FastLane exactly (one 64 KiB span of 16-byte blocks).
        for (int i = 0; i < (64 << 10) / 16; i++) {
            ml_handle h;
            ASSERT_EQ(ml_alloc(a_, 16, &h), 0);
            ASSERT_GT(ml_handle_id(h), 0);
            ASSERT_EQ(ml_write(a_, h, 0, &i, sizeof i), 0);
            hs_.push_back(h);
        }
        ml_stats st;
        ASSERT_EQ(ml_stats_get(a_, &st), 0);
        ASSERT_EQ(st.lane[ML_LANE_FAST].capacity, 64u << 10) << "no growth yet";
    }
    void TearDown() override {
        if (a_) {
            EXPECT_EQ(ml__arena_check(a_), 0);
            ml_arena_destroy(a_);
        }
        EXPECT_TRUE(fp_.clean());
        EXPECT_EQ(fp_.violations, 0);
    }
    size_t LaneSize(ml_lane lane) {
        char *start;
        size_t size;
        ml__test_lane_range(a_, lane, &start, &size);
        return size;
    }

    FaultPrim fp_;
    ml_config cfg_;
    ml_arena *a_ = nullptr;
    std::vector<ml_handle> hs_;
};

TEST_F(GrowthFault, FailedCommitGivesEnomemAndChangesNothing) {
    Make(/*failover=*/false, /*lock=*/false);
    World before = World::Take(a_);
    size_t pages = fp_.committed_pages();
    fp_.commit.fail_always = true;
    ml_handle h = kSentinel;
    EXPECT_EQ(ml_alloc(a_, 16, &h), -ENOMEM);
    EXPECT_EQ(h.bits, kSentinel.bits);
    EXPECT_GT(fp_.commit.failures, 0) << "growth was attempted";
    World after = World::Take(a_);
    // Only the failure counters move.
    EXPECT_EQ(after.stats.enomem, before.stats.enomem + 1);
    EXPECT_GT(after.stats.lane[ML_LANE_FAST].alloc_failures, before.stats.lane[ML_LANE_FAST].alloc_failures);
    ForgiveCacheRefill(before, &after);
    ExpectSameWorld(before, after, "after a failed growth");
    EXPECT_EQ(LaneSize(ML_LANE_FAST), 64u << 10);
    EXPECT_EQ(fp_.committed_pages(), pages);
    // When the system recovers, the same request grows the lane.
    fp_.ResetFaults();
    ASSERT_EQ(ml_alloc(a_, 16, &h), 0);
    EXPECT_GT(ml_handle_id(h), 0);
    ml_stats st;
    ASSERT_EQ(ml_stats_get(a_, &st), 0);
    EXPECT_EQ(st.lane[ML_LANE_FAST].grows, 1u);
    EXPECT_GT(st.lane[ML_LANE_FAST].capacity, 64u << 10);
    EXPECT_GT(fp_.committed_pages(), pages);
}

TEST_F(GrowthFault, FailedCommitFailsOverToSlowLane) {
    Make(/*failover=*/true, /*lock=*/false);
    ml_stats before;
    ASSERT_EQ(ml_stats_get(a_, &before), 0);
    fp_.commit.fail_always = true;
    ml_handle h;
    ASSERT_EQ(ml_alloc(a_, 16, &h), 0);
    EXPECT_LT(ml_handle_id(h), 0) << "born in SlowLane";
    EXPECT_EQ(ml_handle_state(a_, h), ML_STATE_SLOW);
    ml_stats st;
    ASSERT_EQ(ml_stats_get(a_, &st), 0);
    EXPECT_EQ(st.lane[ML_LANE_SLOW].failovers, before.lane[ML_LANE_SLOW].failovers + 1);
    EXPECT_EQ(st.lane[ML_LANE_FAST].capacity, 64u << 10);
    EXPECT_EQ(st.lane[ML_LANE_FAST].grows, 0u);
    EXPECT_EQ(st.enomem, 0u);
    for (size_t i = 0; i < hs_.size(); i++) {
        int v;
        ASSERT_EQ(ml_read(a_, hs_[i], 0, &v, sizeof v), (int)sizeof v);
        ASSERT_EQ(v, (int)i);
    }
}

TEST_F(GrowthFault, FailedLockOfTheGrowthRollsItBack) {
    Make(/*failover=*/false, /*lock=*/true);
    World before = World::Take(a_);
    size_t committed = fp_.committed_pages(), locked = fp_.locked_pages();
    ASSERT_EQ(committed, locked);
    fp_.lock.fail_always = true;
    ml_handle h = kSentinel;
    EXPECT_EQ(ml_alloc(a_, 16, &h), -ENOMEM);
    EXPECT_EQ(h.bits, kSentinel.bits);
    EXPECT_GT(fp_.lock.failures, 0);
    EXPECT_EQ(fp_.committed_pages(), committed) << "the pages committed for the growth are given back";
    EXPECT_EQ(fp_.locked_pages(), locked);
    World after = World::Take(a_);
    ForgiveCacheRefill(before, &after);
    ExpectSameWorld(before, after, "after a failed locked growth");
    EXPECT_EQ(LaneSize(ML_LANE_FAST), 64u << 10);
    // Recovery: growth works and the new pages are locked too.
    fp_.ResetFaults();
    ASSERT_EQ(ml_alloc(a_, 16, &h), 0);
    EXPECT_GT(LaneSize(ML_LANE_FAST), 64u << 10);
    EXPECT_EQ(fp_.locked_pages(), fp_.committed_pages());
}

TEST_F(GrowthFault, SlowLaneGrowthFailureGivesEnomemForLargeObjects) {
    Make(/*failover=*/true, /*lock=*/false);
    World before = World::Take(a_);
    fp_.commit.fail_always = true;
    ml_handle h = kSentinel;
    EXPECT_EQ(ml_alloc(a_, 4 << 20, &h), -ENOMEM);  // needs SlowLane to grow
    EXPECT_EQ(h.bits, kSentinel.bits);
    World after = World::Take(a_);
    EXPECT_EQ(after.stats.enomem, before.stats.enomem + 1);
    ForgiveCacheRefill(before, &after);
    ExpectSameWorld(before, after, "after a failed SlowLane growth");
    EXPECT_EQ(LaneSize(ML_LANE_SLOW), 1u << 20);
    // A blob that fits without growth is unaffected by the fault.
    ASSERT_EQ(ml_alloc(a_, 512 << 10, &h), 0);
    EXPECT_EQ(ml_free(a_, h), 0);
    fp_.ResetFaults();
    ASSERT_EQ(ml_alloc(a_, 4 << 20, &h), 0);
    EXPECT_GE(LaneSize(ML_LANE_SLOW), 4u << 20);
}

// A growth that fails once and then works: the allocation retries and
// succeeds (or fails over), and the books balance.
TEST_F(GrowthFault, TransientCommitFailure) {
    Make(/*failover=*/false, /*lock=*/false);
    fp_.commit.fail_after = 0;  // the next commit fails, later ones work
    ml_handle h = kSentinel;
    int rc = ml_alloc(a_, 16, &h);
    EXPECT_EQ(fp_.commit.failures, 1);
    if (rc == 0) {
        EXPECT_GT(ml_handle_id(h), 0);
        EXPECT_GT(LaneSize(ML_LANE_FAST), 64u << 10);
    } else {
        EXPECT_EQ(rc, -ENOMEM);
        EXPECT_EQ(LaneSize(ML_LANE_FAST), 64u << 10);
        ASSERT_EQ(ml_alloc(a_, 16, &h), 0);
    }
    ml_stats st;
    ASSERT_EQ(ml_stats_get(a_, &st), 0);
    EXPECT_EQ(st.lane[ML_LANE_FAST].grows, 1u);
    EXPECT_EQ((size_t)st.lane[ML_LANE_FAST].capacity + st.lane[ML_LANE_SLOW].capacity,
              fp_.committed_pages() * 4096);
}

}  // namespace
