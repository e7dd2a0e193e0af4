// World: a snapshot of everything a program can observe about an arena
// (statistics, every live handle's info, every live handle's bytes), to
// check that a rejected call changed nothing.
//
//   World before = World::Take(a);
//   EXPECT_EQ(ml_free(a, forged), -EINVAL);
//   ExpectSameWorld(before, World::Take(a));
//
// Taking a snapshot changes nothing itself: it uses ml_stats_get,
// ml_foreach/ml_handle_info_get and ml_read, none of which counts an access.
#ifndef ML_TESTS_WORLD_H
#define ML_TESTS_WORLD_H

#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "test_util.h"

struct World {
    ml_stats stats;
    std::map<uint64_t, ml_handle_info> info;               // by handle bits
    std::map<uint64_t, std::vector<unsigned char>> bytes;  // by handle bits
    int check = -1;                                        // ml__arena_check

    static World Take(ml_arena *a) {
        World w;
        EXPECT_EQ(ml_stats_get(a, &w.stats), 0);
        EXPECT_EQ(ml_foreach(
                      a,
                      [](const ml_handle_info *i, void *ctx) {
                          static_cast<World *>(ctx)->info[i->handle.bits] = *i;
                          return 0;
                      },
                      &w),
                  0);
        for (auto &kv : w.info) {
            std::vector<unsigned char> b(kv.second.size);
            int n = ml_read(a, kv.second.handle, 0, b.data(), b.size());
            EXPECT_EQ(n, (int)b.size());
            w.bytes[kv.first] = std::move(b);
        }
        w.check = ml__arena_check(a);
        return w;
    }
};

inline void ExpectSameStats(const ml_stats &x, const ml_stats &y, const char *what = "") {
#define ML_T_ARENA(name, desc) EXPECT_EQ(x.name, y.name) << what << ": stats." #name;
    ML_ARENA_STATS(ML_T_ARENA)
#undef ML_T_ARENA
    for (int l = 0; l < 2; l++) {
#define ML_T_LANE(name, desc) EXPECT_EQ(x.lane[l].name, y.lane[l].name) << what << ": lane " << l << " " #name;
        ML_LANE_STATS(ML_T_LANE)
#undef ML_T_LANE
    }
}

inline void ExpectSameInfo(const ml_handle_info &x, const ml_handle_info &y, const char *what = "") {
    EXPECT_EQ(x.handle.bits, y.handle.bits) << what;
    EXPECT_EQ(x.id, y.id) << what;
    EXPECT_EQ(x.state, y.state) << what;
    EXPECT_EQ(x.lane, y.lane) << what;
    EXPECT_EQ(x.born_lane, y.born_lane) << what;
    EXPECT_EQ(x.generation, y.generation) << what;
    EXPECT_EQ(x.size, y.size) << what;
    EXPECT_EQ(x.alloc_size, y.alloc_size) << what;
    EXPECT_EQ(x.align, y.align) << what;
    EXPECT_EQ(x.offset, y.offset) << what;
    EXPECT_EQ(x.pins, y.pins) << what;
    EXPECT_STREQ(x.tag, y.tag) << what;
    EXPECT_EQ(x.group, y.group) << what;
    EXPECT_STREQ(x.group_name, y.group_name) << what;
    EXPECT_EQ(x.created_ns, y.created_ns) << what;
    EXPECT_EQ(x.last_access_ns, y.last_access_ns) << what;
    EXPECT_EQ(x.accesses, y.accesses) << what;
    EXPECT_EQ(x.migrations, y.migrations) << what;
}

// Everything observable is the same, and the internal invariants hold.
inline void ExpectSameWorld(const World &before, const World &after, const char *what = "") {
    EXPECT_EQ(after.check, 0) << what << ": ml__arena_check";
    ExpectSameStats(before.stats, after.stats, what);
    ASSERT_EQ(before.info.size(), after.info.size()) << what << ": live handles";
    for (auto &kv : before.info) {
        auto it = after.info.find(kv.first);
        ASSERT_NE(it, after.info.end()) << what << ": handle " << kv.first << " vanished";
        ExpectSameInfo(kv.second, it->second, what);
        EXPECT_TRUE(before.bytes.at(kv.first) == after.bytes.at(kv.first))
            << what << ": bytes of handle id " << kv.second.id << " changed";
    }
}

#endif
