// Lifecycle events: off by default, a bounded ring when on, read with a cursor.
#include <cstring>
#include <vector>

#include "test_util.h"

namespace {
// Allocates n entries of `size` bytes (freeing each at once when asked).
void AllocMany(ml_arena *a, int n, size_t size, bool free_each = false) {
    for (int i = 0; i < n; i++) {
        ml_handle h;
        ASSERT_EQ(ml_alloc(a, size, &h), 0);
        if (free_each) {
            ASSERT_EQ(ml_free(a, h), 0);
        }
    }
}

std::vector<ml_event> ReadAll(ml_arena *a, uint64_t *cursor) {
    std::vector<ml_event> out(64);
    std::vector<ml_event> all;
    size_t n;
    do {
        EXPECT_EQ(ml_events_read(a, cursor, out.data(), out.size(), &n), 0);
        all.insert(all.end(), out.begin(), out.begin() + n);
    } while (n == out.size());
    return all;
}
}  // namespace

TEST(Events, OffByDefaultThenRecordsInOrder) {
    ArenaGuard a;
    ml_handle h;
    ASSERT_EQ(ml_alloc(a, 64, &h), 0);
    uint64_t cursor = 0;
    EXPECT_TRUE(ReadAll(a, &cursor).empty()) << "nothing recorded while off";
    ASSERT_EQ(ml_events_enable(a, 100), 0);
    ml_handle big;
    ASSERT_EQ(ml_alloc(a, 100000, &big), 0);
    ASSERT_EQ(ml_migrate(a, h, ML_LANE_SLOW), 0);
    ASSERT_EQ(ml_free(a, h), 0);
    ASSERT_EQ(ml_free(a, big), 0);
    auto ev = ReadAll(a, &cursor);
    ASSERT_EQ(ev.size(), 4u);
    EXPECT_EQ(ev[0].kind, ML_EVENT_ALLOC);
    EXPECT_EQ(ev[0].id, ml_handle_id(big));
    EXPECT_EQ(ev[0].bytes, 100000u);
    EXPECT_EQ(ev[0].to, ML_LANE_SLOW);
    EXPECT_EQ(ev[1].kind, ML_EVENT_MIGRATE);
    EXPECT_EQ(ev[1].from, ML_LANE_FAST);
    EXPECT_EQ(ev[1].to, ML_LANE_SLOW);
    EXPECT_EQ(ev[2].kind, ML_EVENT_FREE);
    EXPECT_EQ(ev[3].kind, ML_EVENT_FREE);
    for (size_t i = 1; i < ev.size(); i++) {
        EXPECT_EQ(ev[i].seq, ev[i - 1].seq + 1);
        EXPECT_GE(ev[i].time_ns, ev[i - 1].time_ns);
    }
    EXPECT_STREQ(ml_event_name(ML_EVENT_PAGE_IN), "page-in");
    EXPECT_TRUE(ReadAll(a, &cursor).empty()) << "the cursor moved past what was read";
}

TEST(Events, RingKeepsTheMostRecentAndSkipsOverwritten) {
    ArenaGuard a;
    ASSERT_EQ(ml_events_enable(a, 10), 0);
    AllocMany(a, 25, 32, true);
    uint64_t cursor = 0;
    auto ev = ReadAll(a, &cursor);
    ASSERT_EQ(ev.size(), 10u);
    EXPECT_EQ(ev.front().seq, 41u);
    EXPECT_EQ(ev.back().seq, 50u);
    ASSERT_EQ(ml_events_enable(a, 0), 0);
    ml_handle h;
    ASSERT_EQ(ml_alloc(a, 32, &h), 0);
    EXPECT_TRUE(ReadAll(a, &cursor).empty());
    size_t n;
    EXPECT_EQ(ml_events_read(a, nullptr, nullptr, 0, &n), -EINVAL);
    EXPECT_EQ(ml_events_enable(a, (size_t)1 << 30), -EINVAL);
}

// Turning the ring on again drops what it held: a reader whose cursor is
// older gets the events recorded since, never blank ones in their place.
TEST(Events, EnablingAgainDropsTheOldEventsWithoutBlanks) {
    ArenaGuard a;
    ASSERT_EQ(ml_events_enable(a, 100), 0);
    AllocMany(a, 5, 32);
    uint64_t cursor = 0;
    ASSERT_EQ(ReadAll(a, &cursor).size(), 5u);
    AllocMany(a, 3, 32);
    ASSERT_EQ(ml_events_enable(a, 100), 0);  // drops the three not read yet
    ml_handle h;
    ASSERT_EQ(ml_alloc(a, 48, &h), 0);
    auto ev = ReadAll(a, &cursor);
    ASSERT_EQ(ev.size(), 1u);
    EXPECT_EQ(ev[0].kind, ML_EVENT_ALLOC);
    EXPECT_EQ(ev[0].bytes, 48u);
    EXPECT_EQ(ev[0].seq, 9u) << "sequence numbers go on";
    uint64_t fresh = 0;
    ev = ReadAll(a, &fresh);
    ASSERT_EQ(ev.size(), 1u) << "a new reader sees only what the ring holds";
    EXPECT_EQ(ev[0].seq, 9u);
}

TEST(Events, CompactionIsOneEventPerStep) {
    ml_config c;
    ml_config_init(&c);
    c.enable_auto_compaction = false;
    ArenaGuard a(&c);
    std::vector<ml_handle> hs(2000);
    for (auto &h : hs) ASSERT_EQ(ml_alloc(a, 48, &h), 0);
    for (size_t i = 0; i < hs.size(); i += 2) ASSERT_EQ(ml_free(a, hs[i]), 0);
    ASSERT_EQ(ml_events_enable(a, 16), 0);
    ml_compact_result r;
    ASSERT_EQ(ml_compact(a, ML_LANE_FAST, &r), 0);
    uint64_t cursor = 0;
    auto ev = ReadAll(a, &cursor);
    ASSERT_FALSE(ev.empty());
    uint64_t moved = 0;
    for (auto &e : ev) {
        EXPECT_EQ(e.kind, ML_EVENT_COMPACT);
        EXPECT_TRUE(ml_handle_is_null(e.handle));
        moved += e.count;
    }
    EXPECT_EQ(moved, r.moved_entries);
}

TEST(LaneMap, ExtentsTileTheLaneAndNameTheirOwners) {
    ArenaGuard a;
    ml_handle blob, small;
    ASSERT_EQ(ml_alloc(a, 100000, &blob), 0);
    ASSERT_EQ(ml_alloc(a, 64, &small), 0);
    struct Acc {
        std::vector<ml_extent_info> v;
    } acc;
    auto cb = [](const ml_extent_info *e, void *ctx) {
        ((Acc *)ctx)->v.push_back(*e);
        return 0;
    };
    ASSERT_EQ(ml_lane_map(a, ML_LANE_SLOW, cb, &acc), 0);
    size_t next = 0;
    bool found = false;
    for (auto &e : acc.v) {
        EXPECT_EQ(e.offset, next);
        next = e.offset + e.length;
        if (e.kind == ML_EXTENT_BLOB && e.id == ml_handle_id(blob)) found = true;
    }
    ml_stats st;
    ASSERT_EQ(ml_stats_get(a, &st), 0);
    EXPECT_EQ(next, st.lane[ML_LANE_SLOW].capacity);
    EXPECT_TRUE(found);
    acc.v.clear();
    ASSERT_EQ(ml_lane_map(a, ML_LANE_FAST, cb, &acc), 0);
    ASSERT_FALSE(acc.v.empty());
    EXPECT_EQ(acc.v[0].kind, ML_EXTENT_SPAN);
    EXPECT_EQ(acc.v[0].block_size, 64u);
    EXPECT_GE(acc.v[0].used, 1u);
    EXPECT_EQ(ml_lane_map(a, (ml_lane)3, cb, &acc), -EINVAL);
    EXPECT_EQ(ml_lane_map(a, ML_LANE_FAST, [](const ml_extent_info *, void *) { return 7; }, nullptr), 7);
}
