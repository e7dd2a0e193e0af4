// Groups and tags on cold (compressed / evicted) entries, with
// the policy thread evicting idle blobs while other threads tag, regroup,
// free whole groups, walk and read.
#include <atomic>
#include <chrono>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "test_util.h"

namespace {
bool In(int rc, std::initializer_list<int> ok) {
    for (int x : ok)
        if (rc == x) return true;
    return false;
}
struct Obj {
    ml_handle h;
    size_t size;
    uint64_t seed;
};
}  // namespace

TEST(GroupsPagingThreads, GroupsAndTagsOnColdEntriesUnderThePolicyThread) {
    ml_config c;
    ml_config_init(&c);
    c.fast_lane_size = 1 << 20;
    c.slow_lane_size = 2 << 20;
    c.max_handles = 1 << 16;
    c.swap_size = 128 << 20;
    c.min_evict_size = 4096;
    c.cold_after_ms = 1;
    c.policy_check_interval_ms = 1;
    c.compaction_threshold = 0.05;
    c.compaction_budget_us = 300;
    ArenaGuard a(&c);
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
    const int kOps = 3000;
#else
    const int kOps = 30000;
#endif
    const char *names[3] = {"pa", "pb", "pc"};
    std::atomic<ml_group> gids[3];
    for (int i = 0; i < 3; i++) {
        ml_group g;
        ASSERT_EQ(ml_group_create(a, names[i], &g), 0);
        gids[i] = g;
    }
    std::atomic<int> bad{0};
    std::atomic<bool> stop{false};
    auto report = [&](const std::string &what, int rc) {
        if (bad++ < 20) ADD_FAILURE() << what << " returned " << rc << " " << ml_strerror(rc);
    };
    auto worker = [&](int id) {
        std::mt19937_64 rng(id * 77 + 5);
        std::vector<Obj> mine;
        for (int op = 0; op < kOps; op++) {
            unsigned r = rng() % 100;
            if (mine.empty() || (r < 25 && mine.size() < 60)) {
                ml_group g = rng() % 3 ? gids[rng() % 3].load() : ML_GROUP_NONE;
                Obj o{ML_HANDLE_NULL, 5000 + rng() % 40000, rng()};
                int rc = ml_group_alloc(a, g, o.size, 0, &o.h);
                if (rc == 0) {
                    std::vector<unsigned char> b(o.size);
                    for (size_t i = 0; i < o.size; i++) b[i] = PatternByte(o.seed, i / 32);
                    rc = ml_write(a, o.h, 0, b.data(), b.size());
                    if (rc == 0) mine.push_back(o);
                    else if (!In(rc, {-ESTALE, -ENOMEM})) report("write", rc);
                } else if (!In(rc, {-ENOENT, -ENOMEM})) {
                    report("group_alloc", rc);
                }
                continue;
            }
            size_t i = rng() % mine.size();
            Obj &o = mine[i];
            int rc;
            if (r < 40) {
                char t[8];
                snprintf(t, sizeof t, "c%d", (int)(rng() % 20));
                rc = ml_set_tag(a, o.h, rng() % 5 ? t : nullptr);
                if (!In(rc, {0, -ESTALE})) report("set_tag", rc);
            } else if (r < 50) {
                rc = ml_group_set(a, o.h, rng() % 4 ? gids[rng() % 3].load() : ML_GROUP_NONE);
                if (!In(rc, {0, -ESTALE, -ENOENT})) report("group_set", rc);
            } else if (r < 65) {
                std::vector<unsigned char> b(o.size);
                rc = ml_read(a, o.h, 0, b.data(), b.size());
                if (rc == (int)o.size) {
                    for (size_t k = 0; k < o.size; k++)
                        if (b[k] != PatternByte(o.seed, k / 32)) {
                            report("contents differ", k);
                            break;
                        }
                } else if (rc != -ESTALE) {
                    report("read", rc);
                }
            } else if (r < 72) {
                rc = ml_realloc(a, o.h, o.size + 100);
                if (rc == 0) {
                    uint64_t z[13] = {0};
                    std::vector<unsigned char> b(100);
                    for (size_t k = 0; k < 100; k++) b[k] = PatternByte(o.seed, (o.size + k) / 32);
                    (void)z;
                    rc = ml_write(a, o.h, o.size, b.data(), 100);
                    if (rc == 0) o.size += 100;
                    else if (rc != -ESTALE && rc != -ENOMEM) report("write after realloc", rc);
                    if (rc != 0) {
                        // leave it: its size in the model is now unknown
                        mine[i] = mine.back();
                        mine.pop_back();
                    }
                } else if (!In(rc, {-ESTALE, -ENOMEM})) {
                    report("realloc", rc);
                }
            } else if (r < 80) {
                ml_handle_info info;
                rc = ml_handle_info_get(a, o.h, &info);
                if (rc == 0) {
                    if (info.size != o.size) report("info size", (int)info.size);
                } else if (rc != -ESTALE) {
                    report("info", rc);
                }
            } else if (r < 85) {
                rc = ml_evict(a, o.h);
                if (!In(rc, {0, -ESTALE, -EALREADY, -EBUSY, -ENOSPC}) && !(rc == -EINVAL && o.size <= 8192)) report("evict", rc);
            } else {
                rc = ml_free(a, o.h);
                if (!In(rc, {0, -ESTALE})) report("free", rc);
                mine[i] = mine.back();
                mine.pop_back();
            }
        }
        for (Obj &o : mine) {
            int rc = ml_free(a, o.h);
            if (!In(rc, {0, -ESTALE})) report("final free", rc);
        }
    };
    std::thread killer([&] { ChurnGroups(a, gids, names, 3, 3, std::chrono::milliseconds(3), stop, report); });
    std::thread walker([&] {
        while (!stop) {
            ml_foreach(
                a, [](const ml_handle_info *i, void *) { return i->size == 0 ? 1 : 0; }, nullptr);
            ml_stats st;
            ml_stats_get(a, &st);
            std::this_thread::sleep_for(std::chrono::microseconds(500));
        }
    });
    std::vector<std::thread> ts;
    for (int i = 0; i < 2; i++) ts.emplace_back(worker, i);
    for (auto &t : ts) t.join();
    stop = true;
    killer.join();
    walker.join();
    EXPECT_EQ(bad.load(), 0);
    ml_stats st;
    ASSERT_EQ(ml_stats_get(a, &st), 0);
    EXPECT_EQ(st.handles_live, 0u);
    EXPECT_EQ(st.tags, 0u);
    ml_paging_stats ps = PStats(a);
    printf("evicted %lu compressed %lu page_ins %lu\n", (unsigned long)ps.evicted, (unsigned long)ps.compressed,
           (unsigned long)ps.page_ins);
    EXPECT_EQ(ps.now_evicted, 0u);
    EXPECT_EQ(ps.now_compressed, 0u);
    EXPECT_EQ(ml__arena_check(a), 0);
}
