// A seeded random model of groups, tags, realloc, migration,
// pins, compaction and maintenance, checked after every step against a
// simple reference (contents, sizes, alignment, groups, tags, statistics,
// and ml__arena_check).
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "test_util.h"

namespace {

struct Ent {
    std::vector<unsigned char> data;
    size_t align = 16;  // as reported: at least 16
    ml_group group = ML_GROUP_NONE;
    std::string tag;
    int pins = 0;
};

uint64_t EnvU(const char *n, uint64_t d) {
    const char *s = getenv(n);
    return s ? strtoull(s, nullptr, 0) : d;
}

class HModel {
   public:
    HModel(ml_arena *a, uint64_t seed) : a_(a), rng_(seed), seed_(seed) {
        ml_config c;
        ml_arena_config(a, &c);
        threshold_ = c.threshold;
        slow_max_ = c.slow_lane_max_size;
        paging_ = c.enable_paging;
    }
    std::string Where() const { return "seed " + std::to_string(seed_) + " op " + std::to_string(op_) + " (" + last_ + ")"; }

    size_t RSize() {
        unsigned r = rng_() % 100;
        if (r < 50) return 1 + rng_() % 256;
        if (r < 70) return 257 + rng_() % 3840;
        if (r < 90) return 4097 + rng_() % 12000;
        return 16384 + rng_() % (96 * 1024);
    }
    ml_handle Pick() { return ml_handle{order_[rng_() % order_.size()]}; }
    std::string RTag() { return "t" + std::to_string(rng_() % 12); }

    void Fill(Ent &e, ml_handle h, size_t from) {
        uint64_t s = rng_();
        for (size_t i = from; i < e.data.size(); i++) e.data[i] = PatternByte(s, i / 64);
        if (from < e.data.size()) {
            ASSERT_EQ(ml_write(a_, h, from, e.data.data() + from, e.data.size() - from), 0) << Where();
        }
    }

    void Alloc() {
        size_t size = RSize();
        size_t align = rng_() % 3 == 0 ? (size_t)1 << (rng_() % 13) : 0;
        ml_group g = ML_GROUP_NONE;
        bool grp = !groups_.empty() && rng_() % 2;
        if (grp) {
            auto it = groups_.begin();
            std::advance(it, rng_() % groups_.size());
            g = it->second;
        }
        ml_handle h;
        int rc;
        if (grp || rng_() % 4 == 0) {
            last_ = "group_alloc";
            rc = ml_group_alloc(a_, g, size, align, &h);
        } else if (align) {
            last_ = "alloc_aligned";
            rc = ml_alloc_aligned(a_, size, align, &h);
        } else {
            last_ = "alloc";
            rc = ml_alloc(a_, size, &h);
        }
        if (size > slow_max_) {
            ASSERT_EQ(rc, -EINVAL) << Where();
            return;
        }
        if (rc == -ENOMEM) return;
        ASSERT_EQ(rc, 0) << Where() << " size " << size << " align " << align;
        ASSERT_EQ(live_.count(h.bits), 0u) << Where();
        Ent e;
        e.data.resize(size);
        e.align = std::max<size_t>(16, align);
        e.group = g;
        live_[h.bits] = e;
        order_.push_back(h.bits);
        if (g) members_[g].insert(h.bits);
        Fill(live_[h.bits], h, 0);
    }

    void Erase(uint64_t bits) {
        Ent &e = live_[bits];
        if (e.group) members_[e.group].erase(bits);
        live_.erase(bits);
        order_.erase(std::find(order_.begin(), order_.end(), bits));
    }

    void Free() {
        last_ = "free";
        ml_handle h = Pick();
        Ent &e = live_[h.bits];
        int rc = ml_free(a_, h);
        if (e.pins) {
            ASSERT_EQ(rc, -EBUSY) << Where();
            return;
        }
        ASSERT_EQ(rc, 0) << Where();
        Erase(h.bits);
        ASSERT_EQ(ml_free(a_, h), -ESTALE) << Where();
    }

    void Realloc() {
        last_ = "realloc";
        ml_handle h = Pick();
        Ent &e = live_[h.bits];
        size_t ns = rng_() % 3 == 0 ? 1 + rng_() % 64 : RSize();
        ml_handle_info before;
        ASSERT_EQ(ml_handle_info_get(a_, h, &before), 0) << Where();
        int rc = ml_realloc(a_, h, ns);
        if (ns > slow_max_) {
            ASSERT_EQ(rc, -EINVAL) << Where();
            return;
        }
        // A shrink can always stay where it is (ml_realloc): it never fails
        // for want of room, nor because the entry is pinned.
        bool can_stay = ns <= before.alloc_size && !(before.lane == ML_LANE_FAST && ns > threshold_);
        if (can_stay) {
            ASSERT_EQ(rc, 0) << Where() << " a shrink failed: " << before.size << " -> " << ns;
        }
        if (rc == -ENOMEM) return;
        if (rc == -EBUSY) {
            ASSERT_GT(e.pins, 0) << Where() << " EBUSY for an unpinned handle";
            return;
        }
        ASSERT_EQ(rc, 0) << Where() << " " << before.size << " -> " << ns;
        size_t old = e.data.size();
        e.data.resize(ns);
        ml_handle_info info;
        ASSERT_EQ(ml_handle_info_get(a_, h, &info), 0) << Where();
        ASSERT_EQ(info.size, ns) << Where();
        ASSERT_EQ(info.align, e.align) << Where();
        ASSERT_GE(info.alloc_size, ns) << Where();
        if (ns > threshold_) {
            ASSERT_EQ(info.lane, ML_LANE_SLOW) << Where() << " grew past threshold but stayed in FastLane";
        }
        if (e.pins) {
            ASSERT_EQ(info.offset, before.offset) << Where() << " a pinned entry moved";
            ASSERT_EQ(info.lane, before.lane) << Where();
        }
        Fill(e, h, std::min(old, ns));
    }

    void Migrate() {
        last_ = "migrate";
        ml_handle h = Pick();
        Ent &e = live_[h.bits];
        ml_lane to = rng_() % 2 ? ML_LANE_FAST : ML_LANE_SLOW;
        ml_handle_info before;
        ASSERT_EQ(ml_handle_info_get(a_, h, &before), 0) << Where();
        ml_move_cost cost;
        ASSERT_EQ(ml_migrate_cost(a_, h, to, &cost), 0) << Where();
        int rc = ml_migrate(a_, h, to);
        if (before.lane == to) {
            ASSERT_EQ(rc, -EALREADY) << Where();
            ASSERT_EQ(cost.reason, -EALREADY) << Where();
        } else if (to == ML_LANE_FAST && e.data.size() > threshold_) {
            ASSERT_EQ(rc, -EINVAL) << Where();
            ASSERT_EQ(cost.reason, -EINVAL) << Where();
        } else if (rc == -EINVAL) {
            ASSERT_EQ(cost.reason, -EINVAL) << Where();  // alignment with no class
        } else if (e.pins) {
            ASSERT_EQ(rc, -EBUSY) << Where();
            ASSERT_EQ(cost.reason, -EBUSY) << Where();
        } else if (rc != -ENOMEM) {
            ASSERT_EQ(rc, 0) << Where();
            ASSERT_TRUE(cost.possible) << Where();
            ml_handle_info info;
            ASSERT_EQ(ml_handle_info_get(a_, h, &info), 0) << Where();
            EXPECT_EQ(cost.bytes, e.data.size()) << Where();
            EXPECT_EQ(cost.dest_bytes, info.alloc_size) << Where() << " size " << e.data.size() << " align " << e.align;
            ASSERT_EQ(info.lane, to) << Where();
            ASSERT_EQ(info.migrations, before.migrations + 1) << Where();
            ASSERT_EQ(info.last_to, to) << Where();
            ASSERT_EQ(info.group, e.group) << Where();
            ASSERT_EQ(std::string(info.tag), e.tag) << Where();
        }
    }

    void Tag() {
        last_ = "set_tag";
        ml_handle h = Pick();
        Ent &e = live_[h.bits];
        std::string t = rng_() % 5 == 0 ? "" : RTag();
        ASSERT_EQ(ml_set_tag(a_, h, t.empty() ? nullptr : t.c_str()), 0) << Where();
        e.tag = t;
    }

    void GroupCreate() {
        last_ = "group_create";
        std::string n = "g" + std::to_string(rng_() % 8);
        ml_group g;
        int rc = ml_group_create(a_, n.c_str(), &g);
        if (groups_.count(n)) {
            ASSERT_EQ(rc, -EEXIST) << Where();
            return;
        }
        ASSERT_EQ(rc, 0) << Where();
        groups_[n] = g;
        members_[g];
    }

    ml_group PickGroup(std::string *name) {
        auto it = groups_.begin();
        std::advance(it, rng_() % groups_.size());
        *name = it->first;
        return it->second;
    }

    void GroupSet() {
        last_ = "group_set";
        ml_handle h = Pick();
        Ent &e = live_[h.bits];
        ml_group g = ML_GROUP_NONE;
        std::string n;
        if (!groups_.empty() && rng_() % 4) g = PickGroup(&n);
        ASSERT_EQ(ml_group_set(a_, h, g), 0) << Where();
        if (e.group) members_[e.group].erase(h.bits);
        e.group = g;
        if (g) members_[g].insert(h.bits);
    }

    void GroupFreeAll(bool destroy) {
        last_ = destroy ? "group_destroy" : "group_free_all";
        if (groups_.empty()) return;
        std::string n;
        ml_group g = PickGroup(&n);
        bool pinned = false;
        for (uint64_t b : members_[g]) pinned |= live_[b].pins > 0;
        size_t freed = 12345;
        int rc = destroy ? ml_group_destroy(a_, g) : ml_group_free_all(a_, g, &freed);
        if (pinned) {
            ASSERT_EQ(rc, -EBUSY) << Where();
            if (!destroy) {
                ASSERT_EQ(freed, 0u) << Where();
            }
            for (uint64_t b : members_[g]) ASSERT_TRUE(ml_is_valid(a_, ml_handle{b})) << Where();
            return;
        }
        ASSERT_EQ(rc, 0) << Where();
        if (!destroy) {
            ASSERT_EQ(freed, members_[g].size()) << Where();
        }
        std::vector<uint64_t> ms(members_[g].begin(), members_[g].end());
        for (uint64_t b : ms) {
            ASSERT_EQ(ml_handle_state(a_, ml_handle{b}), ML_STATE_FREED) << Where();
            Erase(b);
        }
        if (destroy) {
            groups_.erase(n);
            members_.erase(g);
            size_t c;
            ASSERT_EQ(ml_group_count(a_, g, &c), -ENOENT) << Where();
        }
    }

    void Pin() {
        last_ = "pin";
        ml_handle h = Pick();
        Ent &e = live_[h.bits];
        if (e.pins && rng_() % 2) {
            ASSERT_EQ(ml_unpin(a_, h), 0) << Where();
            e.pins--;
            return;
        }
        if (e.pins >= 2) return;
        void *p;
        bool cold = ml_handle_state(a_, h) > ML_STATE_SLOW;
        int rc = ml_pin(a_, h, &p);
        if (rc == -ENOMEM && cold) return;
        ASSERT_EQ(rc, 0) << Where();
        e.pins++;
        pinned_ptr_[h.bits] = p;
    }

    void Relocate() {
        unsigned r = rng_() % 4;
        if (r == 0) {
            last_ = "compact fast";
            ASSERT_EQ(ml_compact(a_, ML_LANE_FAST, nullptr), 0);
        } else if (r == 1) {
            last_ = "compact slow";
            ASSERT_EQ(ml_compact(a_, ML_LANE_SLOW, nullptr), 0);
        } else if (r == 2) {
            last_ = "maintain";
            ASSERT_EQ(ml_maintain(a_), 0);
        } else {
            last_ = "migrate_all";
            size_t moved;
            int rc = ml_migrate_all(a_, 0, &moved);
            ASSERT_TRUE(rc == 0 || rc == -ENOMEM) << Where();
        }
    }

    void Cold() {
#ifdef ML_TEST_PAGING
        ml_handle h = Pick();
        for (int k = 0; k < 20 && live_[h.bits].data.size() <= threshold_; k++) h = Pick();
        Ent &e = live_[h.bits];
        unsigned r = rng_() % 3;
        int rc;
        if (r == 0) {
            last_ = "evict";
            rc = ml_evict(a_, h);
        } else if (r == 1) {
            last_ = "compress";
            rc = ml_compress(a_, h);
        } else {
            last_ = "evict_many";
            std::vector<ml_handle> v;
            for (int i = 0; i < 8; i++) v.push_back(Pick());
            rc = ml_evict_many(a_, v.data(), v.size());
            ASSERT_GE(rc, 0) << Where();
            return;
        }
        if (e.pins) {
            ASSERT_TRUE(rc == -EBUSY || rc == -EINVAL || rc == -EALREADY) << Where() << " rc " << rc;
            return;
        }
        ASSERT_TRUE(rc == 0 || rc == -EINVAL || rc == -EALREADY || rc == -ENOMEM) << Where() << " rc " << rc;
        if (rc == 0) {
            cold_ok_++;
            ml_state st = ml_handle_state(a_, h);
            ASSERT_TRUE(st == ML_STATE_EVICTED || st == ML_STATE_COMPRESSED) << Where();
        }
#endif
    }

    void CheckAll() {
        ASSERT_EQ(ml__arena_check(a_), 0) << Where();
        uint64_t live[2] = {0, 0}, used[2] = {0, 0}, req[2] = {0, 0};
        std::set<std::string> tags;
        for (auto &kv : live_) {
            ml_handle h{kv.first};
            const Ent &e = kv.second;
            ml_handle_info info;
            ASSERT_EQ(ml_handle_info_get(a_, h, &info), 0) << Where();
            ASSERT_EQ(info.size, e.data.size()) << Where();
            ASSERT_EQ(info.align, e.align) << Where();
            ASSERT_EQ(info.group, e.group) << Where();
            ASSERT_EQ(std::string(info.tag), e.tag) << Where();
            ASSERT_EQ(info.pins, (uint32_t)e.pins) << Where();
            if (e.group) {
                std::string gn;
                for (auto &g : groups_)
                    if (g.second == e.group) gn = g.first;
                ASSERT_EQ(std::string(info.group_name), gn) << Where();
            }
            if (info.state == ML_STATE_FAST || info.state == ML_STATE_SLOW) {
                ASSERT_GE(info.alloc_size, info.size) << Where();
            }
            if (info.state == ML_STATE_EVICTED) {
                ASSERT_EQ(info.alloc_size, 0u) << Where();
            }
            live[info.lane]++;
            used[info.lane] += info.alloc_size;
            req[info.lane] += info.size;
            if (!e.tag.empty()) tags.insert(e.tag);
            std::vector<unsigned char> buf(e.data.size());
            ASSERT_EQ(ml_read(a_, h, 0, buf.data(), buf.size()), (int)buf.size()) << Where();
            ASSERT_TRUE(buf == e.data) << Where() << " contents differ, id " << info.id;
        }
        ml_stats st;
        ASSERT_EQ(ml_stats_get(a_, &st), 0);
        EXPECT_EQ(st.handles_live, live_.size()) << Where();
        EXPECT_EQ(st.tags, tags.size()) << Where();
        EXPECT_EQ(st.groups, groups_.size()) << Where();
        for (int l = 0; l < 2; l++) {
            EXPECT_EQ(st.lane[l].live, live[l]) << Where() << " lane " << l;
            EXPECT_EQ(st.lane[l].used, used[l]) << Where() << " lane " << l;
            EXPECT_EQ(st.lane[l].requested, req[l]) << Where() << " lane " << l;
            EXPECT_EQ(st.lane[l].free, st.lane[l].capacity - st.lane[l].used) << Where();
            EXPECT_LE(st.lane[l].largest_free, st.lane[l].free) << Where();
        }
        for (auto &kv : live_) {
            ml_handle h{kv.first};
            const Ent &e = kv.second;
            if (ml_handle_state(a_, h) > ML_STATE_SLOW && rng_() % 2) continue;
            void *p = nullptr;
            int grc = ml_try_get(a_, h, &p);
            if (grc == -ENOMEM) continue;
            ASSERT_EQ(grc, 0) << Where();
            ASSERT_NE(p, nullptr) << Where();
            ASSERT_EQ((uintptr_t)p % e.align, 0u) << Where() << " alignment lost";
            if (e.pins) {
                ASSERT_EQ(p, pinned_ptr_[kv.first]) << Where() << " pinned entry moved";
            }
        }
        for (auto &g : groups_) {
            size_t c = 0;
            ASSERT_EQ(ml_group_count(a_, g.second, &c), 0) << Where();
            ASSERT_EQ(c, members_[g.second].size()) << Where() << " group " << g.first;
            std::vector<ml_handle> v(c + 2);
            size_t c2;
            ASSERT_EQ(ml_group_list(a_, g.second, v.data(), v.size(), &c2), 0);
            ASSERT_EQ(c2, c);
            std::set<uint64_t> got;
            for (size_t i = 0; i < c2; i++) got.insert(v[i].bits);
            std::set<uint64_t> want(members_[g.second].begin(), members_[g.second].end());
            ASSERT_TRUE(got == want) << Where() << " group list differs";
        }
        if (::testing::Test::HasFailure()) FAIL() << Where();
    }

    void Run(long ops) {
        for (op_ = 0; op_ < ops; op_++) {
            unsigned r = rng_() % 100;
            if (order_.empty() || (r < 25 && live_.size() < 400)) Alloc();
            else if (r < 35) Free();
            else if (r < 47) Realloc();
            else if (r < 57) Migrate();
            else if (r < 65) Tag();
            else if (r < 68) GroupCreate();
            else if (r < 74) GroupSet();
            else if (r < 76) GroupFreeAll(false);
            else if (r < 77) GroupFreeAll(true);
            else if (r < 85) Pin();
            else if (r < 88) Relocate();
            else if (r < 97 && paging_) Cold();
            else {
                last_ = "check";
                CheckAll();
            }
            if (::testing::Test::HasFatalFailure()) return;
        }
        last_ = "final";
        CheckAll();
        if (getenv("ML_MODEL_VERBOSE")) printf("seed %lu cold ok %ld live %zu\n", (unsigned long)seed_, cold_ok_, live_.size());
    }

    ml_arena *a_;
    std::mt19937_64 rng_;
    uint64_t seed_;
    long op_ = 0;
    std::string last_;
    size_t threshold_, slow_max_;
    bool paging_ = false;
    long cold_ok_ = 0;
    std::map<uint64_t, Ent> live_;
    std::vector<uint64_t> order_;
    std::map<std::string, ml_group> groups_;
    std::map<ml_group, std::set<uint64_t>> members_;
    std::map<uint64_t, void *> pinned_ptr_;
};

}  // namespace

TEST(GroupsModel, GroupsTagsReallocMigrateMatchAModel) {
#if defined(__SANITIZE_THREAD__)
    // One thread: ThreadSanitizer has nothing to find here that the plain
    // and ASan runs of all 40 seeds would not, at ten times the cost.
    const uint64_t kSeeds = 6;
#else
    const uint64_t kSeeds = 40;
#endif
    uint64_t seeds = EnvU("ML_MODEL_SEEDS", kSeeds), ops = EnvU("ML_MODEL_OPS", 3000), base = EnvU("ML_MODEL_SEED", 1);
    for (uint64_t s = base; s < base + seeds; s++) {
        ml_config c = SmallUnpagedConfig();
#ifdef ML_TEST_PAGING
        c = SmallConfig();
        c.swap_size = 64 << 20;
        c.min_evict_size = 4096;
        c.compressed_stage = s % 2;
#endif
        if (s % 3 == 1) c.threshold = 1000;
        if (s % 4 == 2) c.fast_lane_max_size = 4 << 20;
        if (s % 5 == 3) c.slow_lane_max_size = 16 << 20;
        if (s % 6 == 4) c.failover_to_slow = false;
        ml_arena *a;
        ASSERT_EQ(ml_arena_create(&c, &a), 0);
        HModel m(a, s);
        m.Run((long)ops);
        ml_arena_destroy(a);
        if (::testing::Test::HasFailure()) {
            ADD_FAILURE() << "seed " << s;
            return;
        }
    }
}

TEST(GroupsModel, BoundaryConfigsRunAWorkload) {
    struct Cfg {
        const char *name;
        void (*mutate)(ml_config *);
    } cfgs[] = {
        {"threshold 16", [](ml_config *c) { c->threshold = 16; }},
        {"threshold 17", [](ml_config *c) { c->threshold = 17; }},
        {"threshold 65536", [](ml_config *c) { c->threshold = 65536; }},
        {"threshold 65536 fast 1", [](ml_config *c) { c->threshold = 65536; c->fast_lane_size = 1; }},
        {"threshold 4097", [](ml_config *c) { c->threshold = 4097; }},
        {"threshold 8193", [](ml_config *c) { c->threshold = 8193; }},
        {"fast_lane_size 1", [](ml_config *c) { c->fast_lane_size = 1; }},
        {"slow 64K", [](ml_config *c) { c->slow_lane_size = 65536; }},
        {"slow 64K max 128K", [](ml_config *c) { c->slow_lane_size = 65536; c->slow_lane_max_size = 131072; }},
        {"margin 0", [](ml_config *c) { c->slow_lane_safety_margin = 0; c->slow_lane_usage_threshold = 1.0; }},
        {"margin 0.49", [](ml_config *c) { c->slow_lane_safety_margin = 0.49; c->slow_lane_usage_threshold = 0.51; }},
        {"max_handles 1024", [](ml_config *c) { c->max_handles = 1024; }},
        {"max_handles 2^30", [](ml_config *c) { c->max_handles = size_t{1} << 30; }},
        {"fast max 1 TiB", [](ml_config *c) { c->fast_lane_max_size = size_t{1} << 40; }},
        {"slow max 1 TiB", [](ml_config *c) { c->slow_lane_max_size = size_t{1} << 40; }},
        {"no failover, no migrate", [](ml_config *c) { c->failover_to_slow = false; c->migrate_on_full = false; }},
        {"compaction_threshold 1 budget 0", [](ml_config *c) { c->compaction_threshold = 1.0; c->compaction_budget_us = 0; }},
    };
    for (const Cfg &cf : cfgs) {
        for (uint64_t seed = 1; seed <= EnvU("ML_MODEL_CFG_SEEDS", 4); seed++) {
            SCOPED_TRACE(cf.name);
            ml_config c = SmallUnpagedConfig();
            c.fast_lane_size = 256 << 10;
            c.slow_lane_size = 1 << 20;
            cf.mutate(&c);
            const char *why = nullptr;
            ASSERT_EQ(ml_config_check(&c, &why), 0) << (why ? why : "");
            ml_arena *a = nullptr;
            int rc = ml_arena_create(&c, &a);
#if defined(__SANITIZE_THREAD__)
            // ThreadSanitizer's share of the address space has no room for a
            // 1 TiB reservation: the library says so (-ENOMEM), and that is
            // all this build can check.
            if (rc == -ENOMEM && (c.fast_lane_max_size >> 40 || c.slow_lane_max_size >> 40)) break;
#endif
            ASSERT_EQ(rc, 0) << ml_strerror(rc);
            HModel m(a, seed);
            m.Run((long)EnvU("ML_MODEL_CFG_OPS", 2000));
            ml_arena_destroy(a);
            if (::testing::Test::HasFailure()) return;
        }
    }
}
