// Allocation groups and debug tags.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "test_util.h"
#include "world.h"

namespace {

const ml_handle kSentinel = {0x5a5a5a5a5a5a5a5aull};

std::set<uint64_t> Bits(const std::vector<ml_handle> &v) {
    std::set<uint64_t> s;
    for (ml_handle h : v) s.insert(h.bits);
    return s;
}

std::set<uint64_t> ListAll(ml_arena *a, ml_group g) {
    size_t count = 0;
    EXPECT_EQ(ml_group_list(a, g, nullptr, 0, &count), 0);
    std::vector<ml_handle> v(count + 1);
    size_t count2 = 0;
    EXPECT_EQ(ml_group_list(a, g, v.data(), v.size(), &count2), 0);
    EXPECT_EQ(count, count2);
    v.resize(std::min(count, count2));
    return Bits(v);
}

size_t CountOf(ml_arena *a, ml_group g) {
    size_t n = 12345;
    EXPECT_EQ(ml_group_count(a, g, &n), 0);
    return n;
}

std::string NameOf(ml_arena *a, ml_group g) {
    char buf[ML_NAME_MAX];
    EXPECT_EQ(ml_group_name(a, g, buf, sizeof buf), 0);
    return buf;
}

ml_handle_info Info(ml_arena *a, ml_handle h) {
    ml_handle_info i;
    EXPECT_EQ(ml_handle_info_get(a, h, &i), 0);
    return i;
}

ml_stats Stats(ml_arena *a) {
    ml_stats s;
    EXPECT_EQ(ml_stats_get(a, &s), 0);
    return s;
}

class Groups : public ::testing::Test {
   protected:
    void SetUp() override {
        cfg_ = SmallConfig();
        ASSERT_EQ(ml_arena_create(&cfg_, &a_), 0);
    }
    void TearDown() override {
        EXPECT_EQ(ml__arena_check(a_), 0);
        ml_arena_destroy(a_);
    }
    ml_group Create(const char *name) {
        ml_group g = ML_GROUP_NONE;
        EXPECT_EQ(ml_group_create(a_, name, &g), 0) << name;
        EXPECT_NE(g, ML_GROUP_NONE);
        return g;
    }
    // The ID of a group that existed once and is gone.
    ml_group Missing() {
        ml_group g = Create("destroyed-for-its-id");
        EXPECT_EQ(ml_group_destroy(a_, g), 0);
        return g;
    }
    ml_handle Alloc(size_t size, ml_group g = ML_GROUP_NONE) {
        ml_handle h = ML_HANDLE_NULL;
        EXPECT_EQ(ml_group_alloc(a_, g, size, 0, &h), 0);
        return h;
    }

    ml_config cfg_;
    ml_arena *a_ = nullptr;
};

TEST_F(Groups, CreateFindAndName) {
    EXPECT_EQ(Stats(a_).groups, 0u);
    ml_group g1 = Create("level1");
    ml_group g2 = Create("Level1");  // names are case-sensitive
    ml_group g3 = Create(std::string(63, 'n').c_str());
    EXPECT_NE(g1, g2);
    EXPECT_NE(g2, g3);
    ml_group f = 0;
    ASSERT_EQ(ml_group_find(a_, "level1", &f), 0);
    EXPECT_EQ(f, g1);
    ASSERT_EQ(ml_group_find(a_, "Level1", &f), 0);
    EXPECT_EQ(f, g2);
    ASSERT_EQ(ml_group_find(a_, std::string(63, 'n').c_str(), &f), 0);
    EXPECT_EQ(f, g3);
    f = 77;
    EXPECT_EQ(ml_group_find(a_, "level2", &f), -ENOENT);
    EXPECT_EQ(ml_group_find(a_, "level", &f), -ENOENT);
    EXPECT_EQ(f, 77u);
    EXPECT_EQ(NameOf(a_, g1), "level1");
    EXPECT_EQ(NameOf(a_, g3), std::string(63, 'n'));
    char small[4];
    memset(small, 'Z', sizeof small);
    ASSERT_EQ(ml_group_name(a_, g1, small, sizeof small), 0);
    EXPECT_STREQ(small, "lev");  // truncated, terminated
    char one[1] = {'Z'};
    ASSERT_EQ(ml_group_name(a_, g1, one, 1), 0);
    EXPECT_EQ(one[0], '\0');
    EXPECT_EQ(CountOf(a_, g1), 0u);
    EXPECT_EQ(Stats(a_).groups, 3u);
    // Names at the edges of "printable, not '/'".
    for (const char *ok : {"!", "~", "...", ".hidden", "a.b", "mesh:hero", "x-y_z=1"}) {
        ml_group g;
        EXPECT_EQ(ml_group_create(a_, ok, &g), 0) << ok;
    }
}

TEST_F(Groups, DuplicateNameIsEexistAndChangesNothing) {
    ml_group g = Create("dup");
    ml_handle h = Alloc(32, g);
    World before = World::Take(a_);
    ml_group out = 77;
    EXPECT_EQ(ml_group_create(a_, "dup", &out), -EEXIST);
    EXPECT_EQ(out, 77u);
    ExpectSameWorld(before, World::Take(a_), "after duplicate create");
    EXPECT_EQ(CountOf(a_, g), 1u);
    // Once destroyed, the name is free again (and the new group is empty).
    ASSERT_EQ(ml_group_destroy(a_, g), 0);
    EXPECT_EQ(ml_handle_state(a_, h), ML_STATE_FREED);
    ml_group g2 = Create("dup");
    EXPECT_NE(g2, g);
    EXPECT_EQ(CountOf(a_, g2), 0u);
}

TEST_F(Groups, BadNamesAreEinvalAndChangeNothing) {
    Create("existing");
    World before = World::Take(a_);
    std::string n64(64, 'a'), n100(100, 'b'), slash_end = "abc/";
    const char *bad[] = {"", "a/b", "/", "/abc", slash_end.c_str(), ".", "..", n64.c_str(),
                         n100.c_str(), "\x01", "a\x1f", "a\tb", "new\nline", "\x7f", "del\x7f",
                         "\x80", "caf\xc3\xa9", "\xff"};
    for (const char *name : bad) {
        SCOPED_TRACE(testing::Message() << "name \"" << name << "\"");
        ml_group g = 77;
        EXPECT_EQ(ml_group_create(a_, name, &g), -EINVAL);
        EXPECT_EQ(g, 77u);
        EXPECT_EQ(ml_group_find(a_, name, &g), -ENOENT);
    }
    ExpectSameWorld(before, World::Take(a_), "after bad group names");
}

TEST_F(Groups, GroupAllocPutsTheHandleInTheGroup) {
    ml_group g = Create("assets");
    std::vector<ml_handle> members;
    for (size_t size : {1, 64, 4096, 5000, 100000}) members.push_back(Alloc(size, g));
    ml_handle aligned;
    ASSERT_EQ(ml_group_alloc(a_, g, 100, 256, &aligned), 0);
    members.push_back(aligned);
    EXPECT_EQ((uintptr_t)ml_get(a_, aligned) % 256, 0u);
    EXPECT_EQ(CountOf(a_, g), members.size());
    EXPECT_EQ(ListAll(a_, g), Bits(members));
    for (ml_handle h : members) {
        ml_handle_info i = Info(a_, h);
        EXPECT_EQ(i.group, g);
        EXPECT_STREQ(i.group_name, "assets");
        EXPECT_EQ(i.lane, i.size <= cfg_.threshold ? ML_LANE_FAST : ML_LANE_SLOW);
    }
    // ML_GROUP_NONE is a plain allocation.
    ml_handle plain = Alloc(64, ML_GROUP_NONE);
    ml_handle_info pi = Info(a_, plain);
    EXPECT_EQ(pi.group, ML_GROUP_NONE);
    EXPECT_STREQ(pi.group_name, "");
    EXPECT_EQ(CountOf(a_, g), members.size());

    // A group that does not exist: -ENOENT, nothing allocated.
    World before = World::Take(a_);
    ml_handle out = kSentinel;
    for (ml_group bad : {Missing(), g ^ 0x1000u, g ^ 0x2000u, 0xFFFFFFFFu, 1u, 4095u, 4096u}) {
        if (bad == g || bad == ML_GROUP_NONE) continue;
        EXPECT_EQ(ml_group_alloc(a_, bad, 64, 0, &out), -ENOENT) << bad;
        EXPECT_EQ(ml_group_alloc(a_, bad, 100000, 0, &out), -ENOENT) << bad;
    }
    EXPECT_EQ(out.bits, kSentinel.bits);
    ExpectSameWorld(before, World::Take(a_), "after alloc into missing groups");
}

// A grouped allocation takes the slow path; it must still find the FastLane
// block this thread has just freed (held in the thread's cache, not in the
// lane) instead of reporting a full FastLane.
TEST(GroupAlloc, FindsTheRoomThisThreadFreed) {
    ml_config c;
    ml_config_init(&c);
    c.fast_lane_size = 64 << 10;  // one span: 4096 blocks of 16 bytes
    c.slow_lane_size = 1 << 20;
    c.failover_to_slow = false;
    c.max_handles = 1 << 16;
    c.migrate_on_full = false;
    ArenaGuard a(&c);
    ml_group g;
    ASSERT_EQ(ml_group_create(a, "g", &g), 0);
    std::vector<ml_handle> hs;
    ml_handle h;
    while (ml_alloc(a, 16, &h) == 0) hs.push_back(h);
    ASSERT_EQ(hs.size(), 4096u) << "FastLane full";
    for (int i = 0; i < 3; i++) {
        ASSERT_EQ(ml_free(a, hs[i]), 0);  // an ungrouped one
        ml_handle gh = kSentinel;
        ASSERT_EQ(ml_group_alloc(a, g, 16, 0, &gh), 0) << "a 16-byte block is free, round " << i;
        EXPECT_GT(ml_handle_id(gh), 0) << "born in FastLane";
        EXPECT_EQ(Info(a, gh).group, g);
        hs[i] = gh;
    }
    size_t n = 0;
    ASSERT_EQ(ml_group_count(a, g, &n), 0);
    EXPECT_EQ(n, 3u);
    ml_handle x;
    EXPECT_EQ(ml_group_alloc(a, g, 16, 0, &x), -ENOMEM) << "and now it is full again";
    ml_stats st = Stats(a);
    EXPECT_EQ(st.handles_live, 4096u);
    EXPECT_EQ(st.lane[ML_LANE_SLOW].live, 0u);
    EXPECT_EQ(ml__arena_check(a), 0);
}

TEST_F(Groups, SetMovesBetweenGroupsAndOut) {
    ml_group g1 = Create("one"), g2 = Create("two");
    ml_handle h = Alloc(48, g1);
    ml_handle other = Alloc(48, g1);
    EXPECT_EQ(CountOf(a_, g1), 2u);
    ASSERT_EQ(ml_group_set(a_, h, g2), 0);
    EXPECT_EQ(CountOf(a_, g1), 1u);
    EXPECT_EQ(CountOf(a_, g2), 1u);
    EXPECT_EQ(ListAll(a_, g1), Bits({other}));
    EXPECT_EQ(ListAll(a_, g2), Bits({h}));
    EXPECT_EQ(Info(a_, h).group, g2);
    EXPECT_STREQ(Info(a_, h).group_name, "two");
    // Same group again: no change.
    ASSERT_EQ(ml_group_set(a_, h, g2), 0);
    EXPECT_EQ(CountOf(a_, g2), 1u);
    // Out of any group.
    ASSERT_EQ(ml_group_set(a_, h, ML_GROUP_NONE), 0);
    EXPECT_EQ(CountOf(a_, g2), 0u);
    EXPECT_EQ(Info(a_, h).group, ML_GROUP_NONE);
    EXPECT_STREQ(Info(a_, h).group_name, "");
    ASSERT_EQ(ml_group_set(a_, h, ML_GROUP_NONE), 0);  // already out
    // An ungrouped handle joins.
    ml_handle loose = Alloc(100000);
    ASSERT_EQ(ml_group_set(a_, loose, g2), 0);
    EXPECT_EQ(ListAll(a_, g2), Bits({loose}));
    // A pinned handle may change groups (it does not move).
    ASSERT_EQ(ml_pin(a_, loose, nullptr), 0);
    ASSERT_EQ(ml_group_set(a_, loose, g1), 0);
    EXPECT_EQ(ListAll(a_, g1), Bits({other, loose}));
    ASSERT_EQ(ml_unpin(a_, loose), 0);

    // Failures change nothing.
    ml_group missing = Missing();
    World before = World::Take(a_);
    EXPECT_EQ(ml_group_set(a_, other, missing), -ENOENT);
    EXPECT_EQ(ml_group_set(a_, other, 0xFFFFFFFFu), -ENOENT);
    ml_handle dead = Alloc(16, g2);
    ASSERT_EQ(ml_free(a_, dead), 0);
    before = World::Take(a_);
    EXPECT_EQ(ml_group_set(a_, dead, g1), -ESTALE);
    EXPECT_EQ(ml_group_set(a_, dead, ML_GROUP_NONE), -ESTALE);
    EXPECT_EQ(ml_group_set(a_, ML_HANDLE_NULL, g1), -EINVAL);
    ml_handle forged = {other.bits ^ (1ull << 63)};
    EXPECT_EQ(ml_group_set(a_, forged, g2), -EINVAL);
    ExpectSameWorld(before, World::Take(a_), "after failed group_set");
    EXPECT_EQ(CountOf(a_, g2), 0u);
}

TEST_F(Groups, ListWithACapSmallerThanTheCount) {
    ml_group g = Create("many");
    std::vector<ml_handle> members;
    for (int i = 0; i < 10; i++) members.push_back(Alloc(16 + 8 * i, g));
    std::set<uint64_t> all = Bits(members);
    std::vector<ml_handle> out(3, kSentinel);
    std::vector<ml_handle> big(20, kSentinel);
    size_t count = 0;
    ASSERT_EQ(ml_group_list(a_, g, out.data(), 3, &count), 0);
    EXPECT_EQ(count, 10u);
    std::set<uint64_t> got = Bits(out);
    EXPECT_EQ(got.size(), 3u) << "three distinct members";
    for (uint64_t b : got) EXPECT_EQ(all.count(b), 1u);
    ASSERT_EQ(ml_group_list(a_, g, big.data(), big.size(), &count), 0);
    EXPECT_EQ(count, 10u);
    EXPECT_EQ(Bits(std::vector<ml_handle>(big.begin(), big.begin() + 10)), all);
    for (size_t i = 10; i < big.size(); i++) EXPECT_EQ(big[i].bits, kSentinel.bits) << "wrote past count";
    count = 0;
    ASSERT_EQ(ml_group_list(a_, g, nullptr, 0, &count), 0);
    EXPECT_EQ(count, 10u);
    ml_handle one = kSentinel;
    ASSERT_EQ(ml_group_list(a_, g, &one, 0, &count), 0);
    EXPECT_EQ(one.bits, kSentinel.bits) << "cap 0 must copy nothing";
}

TEST_F(Groups, FreeAllFreesExactlyTheMembers) {
    ml_group g = Create("scratch"), other = Create("keep");
    std::vector<ml_handle> members, outsiders;
    for (size_t size : {16, 200, 4096, 6000, 50000}) members.push_back(Alloc(size, g));
    for (size_t size : {16, 6000}) outsiders.push_back(Alloc(size));
    outsiders.push_back(Alloc(64, other));
    // One that joined late, one that left.
    ml_handle joined = Alloc(32);
    ASSERT_EQ(ml_group_set(a_, joined, g), 0);
    members.push_back(joined);
    ml_handle left = Alloc(32, g);
    ASSERT_EQ(ml_group_set(a_, left, ML_GROUP_NONE), 0);
    outsiders.push_back(left);
    for (size_t i = 0; i < outsiders.size(); i++)
        ASSERT_EQ(ml_write(a_, outsiders[i], 0, "outsider", 9), 0);

    ml_stats before = Stats(a_);
    size_t freed = 12345;
    ASSERT_EQ(ml_group_free_all(a_, g, &freed), 0);
    EXPECT_EQ(freed, members.size());
    for (ml_handle h : members) EXPECT_EQ(ml_handle_state(a_, h), ML_STATE_FREED);
    for (ml_handle h : outsiders) {
        EXPECT_TRUE(ml_is_valid(a_, h));
        char buf[9];
        EXPECT_EQ(ml_read(a_, h, 0, buf, 9), 9);
        EXPECT_STREQ(buf, "outsider");
    }
    ml_stats after = Stats(a_);
    EXPECT_EQ(after.handles_live, before.handles_live - members.size());
    EXPECT_EQ(after.groups, before.groups) << "the group stays";
    EXPECT_EQ(CountOf(a_, g), 0u);
    EXPECT_EQ(CountOf(a_, other), 1u);
    EXPECT_EQ(ml__arena_check(a_), 0);
    // Empty now: frees nothing, and the group is still usable.
    ASSERT_EQ(ml_group_free_all(a_, g, &freed), 0);
    EXPECT_EQ(freed, 0u);
    ASSERT_EQ(ml_group_free_all(a_, g, nullptr), 0);
    ml_handle again = Alloc(16, g);
    EXPECT_EQ(CountOf(a_, g), 1u);
    EXPECT_EQ(ml_group_free_all(a_, g, &freed), 0);
    EXPECT_EQ(freed, 1u);
    EXPECT_EQ(ml_handle_state(a_, again), ML_STATE_FREED);
    // Missing group.
    freed = 12345;
    EXPECT_EQ(ml_group_free_all(a_, Missing(), &freed), -ENOENT);
    EXPECT_EQ(freed, 0u);
}

// All or nothing: one pinned member, wherever it sits in the list, and not
// a single member is freed.
TEST_F(Groups, FreeAllWithAPinnedMemberFreesNothing) {
    for (int pinned_at = 0; pinned_at < 5; pinned_at++) {
        SCOPED_TRACE(pinned_at);
        ml_group g = Create(("pin" + std::to_string(pinned_at)).c_str());
        std::vector<ml_handle> members;
        for (int i = 0; i < 5; i++) {
            members.push_back(Alloc(i % 2 ? 3000 : 100000, g));
            std::vector<unsigned char> b(i % 2 ? 3000 : 100000, (unsigned char)(i + 1));
            ASSERT_EQ(ml_write(a_, members.back(), 0, b.data(), b.size()), 0);
        }
        ml_handle p = members[pinned_at];
        ASSERT_EQ(ml_pin(a_, p, nullptr), 0);
        World before = World::Take(a_);
        size_t freed = 12345;
        EXPECT_EQ(ml_group_free_all(a_, g, &freed), -EBUSY);
        EXPECT_EQ(freed, 0u);
        EXPECT_EQ(ml_group_destroy(a_, g), -EBUSY);
        ExpectSameWorld(before, World::Take(a_), "after free_all/destroy with a pinned member");
        for (ml_handle h : members) EXPECT_TRUE(ml_is_valid(a_, h));
        EXPECT_EQ(CountOf(a_, g), 5u);
        ml_group f;
        EXPECT_EQ(ml_group_find(a_, ("pin" + std::to_string(pinned_at)).c_str(), &f), 0);
        EXPECT_EQ(f, g);
        // The claims taken for the attempt are all released: members work.
        for (ml_handle h : members) {
            ml_handle_info i;
            EXPECT_EQ(ml_handle_info_get(a_, h, &i), 0);
            if (!ml_handle_eq(h, p)) {
                ASSERT_EQ(ml_pin(a_, h, nullptr), 0);
                ASSERT_EQ(ml_unpin(a_, h), 0);
            }
        }
        ASSERT_EQ(ml_unpin(a_, p), 0);
        ASSERT_EQ(ml_group_free_all(a_, g, &freed), 0);
        EXPECT_EQ(freed, 5u);
        ASSERT_EQ(ml_group_destroy(a_, g), 0);
    }
    ml_stats s = Stats(a_);
    EXPECT_EQ(s.handles_live, 0u);
    EXPECT_EQ(s.groups, 0u);
}

TEST_F(Groups, DestroyFreesMembersAndDeletesTheGroup) {
    ml_group g = Create("level");
    ml_group keep = Create("other");
    std::vector<ml_handle> members = {Alloc(16, g), Alloc(5000, g), Alloc(100000, g)};
    ml_handle kept = Alloc(16, keep);
    ml_stats before = Stats(a_);
    ASSERT_EQ(ml_group_destroy(a_, g), 0);
    for (ml_handle h : members) EXPECT_EQ(ml_handle_state(a_, h), ML_STATE_FREED);
    ml_stats after = Stats(a_);
    EXPECT_EQ(after.groups, before.groups - 1);
    EXPECT_EQ(after.handles_live, before.handles_live - 3);
    ml_group f;
    EXPECT_EQ(ml_group_find(a_, "level", &f), -ENOENT);
    EXPECT_TRUE(ml_is_valid(a_, kept));
    EXPECT_EQ(CountOf(a_, keep), 1u);
    EXPECT_EQ(ml_group_destroy(a_, g), -ENOENT);
    // An empty group can be destroyed too.
    ml_group empty = Create("empty");
    EXPECT_EQ(ml_group_destroy(a_, empty), 0);
    EXPECT_EQ(Stats(a_).groups, 1u);
}

// A destroyed group's ID stays dead even when its table entry is reused.
TEST_F(Groups, StaleGroupIdIsEnoentEvenAfterReuse) {
    ml_group old = Create("a");
    ml_handle m = Alloc(16, old);
    ASSERT_EQ(ml_group_destroy(a_, old), 0);
    EXPECT_EQ(ml_handle_state(a_, m), ML_STATE_FREED);
    // Create many groups: one of them reuses old's entry.
    std::vector<ml_group> fresh;
    for (int i = 0; i < 4; i++) fresh.push_back(Create(("b" + std::to_string(i)).c_str()));
    for (ml_group g : fresh) EXPECT_NE(g, old);
    ml_handle fm = Alloc(16, fresh[0]);
    ml_handle loose = Alloc(16);

    World before = World::Take(a_);
    size_t n = 12345;
    char buf[16] = "untouched";
    ml_handle out = kSentinel;
    EXPECT_EQ(ml_group_count(a_, old, &n), -ENOENT);
    EXPECT_EQ(ml_group_list(a_, old, &out, 1, &n), -ENOENT);
    EXPECT_EQ(out.bits, kSentinel.bits);
    EXPECT_EQ(ml_group_name(a_, old, buf, sizeof buf), -ENOENT);
    EXPECT_EQ(ml_group_alloc(a_, old, 16, 0, &out), -ENOENT);
    EXPECT_EQ(out.bits, kSentinel.bits);
    EXPECT_EQ(ml_group_set(a_, loose, old), -ENOENT);
    EXPECT_EQ(ml_group_free_all(a_, old, &n), -ENOENT);
    EXPECT_EQ(ml_group_destroy(a_, old), -ENOENT);
    // ML_GROUP_NONE and never-issued IDs are not groups either.
    for (ml_group bad : {ML_GROUP_NONE, 0xFFFFFFFFu, 0x7FFFF000u, fresh.back() + 1}) {
        EXPECT_EQ(ml_group_count(a_, bad, &n), -ENOENT) << bad;
        EXPECT_EQ(ml_group_name(a_, bad, buf, sizeof buf), -ENOENT) << bad;
        EXPECT_EQ(ml_group_free_all(a_, bad, &n), -ENOENT) << bad;
    }
    ExpectSameWorld(before, World::Take(a_), "after stale group IDs");
    EXPECT_EQ(CountOf(a_, fresh[0]), 1u);
    EXPECT_EQ(NameOf(a_, fresh[0]), "b0");
    EXPECT_TRUE(ml_is_valid(a_, fm));
    EXPECT_EQ(Info(a_, loose).group, ML_GROUP_NONE);
}

TEST_F(Groups, ForeachVisitsEveryGroupWithoutHoldingALock) {
    std::map<ml_group, std::pair<std::string, size_t>> expect;
    for (int i = 0; i < 6; i++) {
        std::string name = "g" + std::to_string(i);
        ml_group g = Create(name.c_str());
        for (int k = 0; k < i; k++) Alloc(16, g);
        expect[g] = {name, (size_t)i};
    }
    ml_group gone = Create("gone");
    ASSERT_EQ(ml_group_destroy(a_, gone), 0);

    struct Ctx {
        ml_arena *a;
        std::map<ml_group, std::pair<std::string, size_t>> seen;
        int calls = 0;
        int stop_at = -1;
    } ctx{a_, {}, 0, -1};
    auto fn = [](ml_group g, const char *name, size_t count, void *p) -> int {
        Ctx *c = static_cast<Ctx *>(p);
        c->calls++;
        // Calling back into the arena must work (no lock held).
        size_t n = 0;
        if (ml_group_count(c->a, g, &n) != 0 || n != count) return -1000;
        ml_handle h;
        if (ml_group_alloc(c->a, g, 8, 0, &h) != 0 || ml_free(c->a, h) != 0) return -1001;
        c->seen[g] = {name, count};
        return c->calls == c->stop_at ? 42 : 0;
    };
    ASSERT_EQ(ml_group_foreach(a_, fn, &ctx), 0);
    EXPECT_EQ(ctx.seen, expect);
    EXPECT_EQ(ctx.calls, 6);
    // A non-zero return stops the walk and is passed through.
    ctx = Ctx{a_, {}, 0, 2};
    EXPECT_EQ(ml_group_foreach(a_, fn, &ctx), 42);
    EXPECT_EQ(ctx.calls, 2);
    EXPECT_EQ(ctx.seen.size(), 2u);
    // The callback may destroy groups.
    auto destroyer = [](ml_group g, const char *, size_t, void *p) -> int {
        return ml_group_destroy(static_cast<ml_arena *>(p), g);
    };
    EXPECT_EQ(ml_group_foreach(a_, destroyer, a_), 0);
    EXPECT_EQ(Stats(a_).groups, 0u);
    EXPECT_EQ(Stats(a_).handles_live, 0u);
}

// The header promises "at most 4096 groups per arena".
TEST_F(Groups, TableHolds4096GroupsThenEnospc) {
    std::vector<ml_group> gs;
    for (int i = 0; i < 4096; i++) {
        ml_group g;
        int rc = ml_group_create(a_, ("t" + std::to_string(i)).c_str(), &g);
        ASSERT_EQ(rc, 0) << "group #" << i + 1 << " refused: " << ml_strerror(rc);
        gs.push_back(g);
    }
    EXPECT_EQ(std::set<ml_group>(gs.begin(), gs.end()).size(), gs.size());
    World before = World::Take(a_);
    ml_group g = 77;
    EXPECT_EQ(ml_group_create(a_, "one-too-many", &g), -ENOSPC);
    EXPECT_EQ(g, 77u);
    EXPECT_EQ(ml_group_create(a_, "t0", &g), -EEXIST);
    ExpectSameWorld(before, World::Take(a_), "after a full group table");
    EXPECT_EQ(before.stats.groups, 4096u);
    // Every group works, the last one as well as the first.
    for (ml_group x : {gs.front(), gs[2048], gs.back()}) {
        ml_handle h = Alloc(16, x);
        EXPECT_EQ(Info(a_, h).group, x);
        EXPECT_EQ(ml_group_destroy(a_, x), 0);
        EXPECT_EQ(ml_handle_state(a_, h), ML_STATE_FREED);
    }
    ASSERT_EQ(ml_group_create(a_, "one-too-many", &g), 0) << "room after destroy";
}

// A group table entry issues about a million IDs (its generation has 20
// bits); when it has issued the last one, it is retired rather than
// reused, so a destroyed group's ID never names a later group (found by a
// probe: after 2^20 - 1 more create/destroy cycles the old ID came back and
// ml_group_free_all(old ID) freed the new group's members). The entry is
// fast-forwarded to its last generations here instead of cycled a million
// times.
TEST_F(Groups, ASpentTableEntryIsRetiredNotReused) {
    ml_group old;
    ASSERT_EQ(ml_group_create(a_, "first", &old), 0);
    const uint32_t index = old & 0xfff;
    ASSERT_EQ(ml_group_destroy(a_, old), 0);
    a_->groups[index].gen = (1u << 20) - 3;  // (no other thread: no lock needed)
    std::set<ml_group> ids;
    for (int i = 0; i < 4; i++) {
        ml_group g;
        ASSERT_EQ(ml_group_create(a_, "again", &g), 0);
        EXPECT_TRUE(ids.insert(g).second) << "an ID came back: " << g;
        EXPECT_NE(g, old);
        ASSERT_EQ(ml_group_destroy(a_, g), 0);
    }
    EXPECT_EQ(a_->groups[index].gen, (1u << 20) - 1) << "the entry reached its last generation";
    ml_group next;
    ASSERT_EQ(ml_group_create(a_, "after", &next), 0);
    EXPECT_NE(next & 0xfff, index) << "the spent entry is not reused";
    for (ml_group g : ids) {
        size_t n;
        EXPECT_EQ(ml_group_count(a_, g, &n), -ENOENT) << "destroyed IDs stay dead";
    }
}

// ---- tags ------------------------------------------------------------------

TEST_F(Groups, TagsSetClearAndShowInInfo) {
    ml_handle h = Alloc(64), k = Alloc(100000);
    EXPECT_STREQ(Info(a_, h).tag, "");
    ASSERT_EQ(ml_set_tag(a_, h, "texture"), 0);
    EXPECT_STREQ(Info(a_, h).tag, "texture");
    EXPECT_STREQ(Info(a_, k).tag, "");
    EXPECT_EQ(Stats(a_).tags, 1u);
    ASSERT_EQ(ml_set_tag(a_, k, "texture"), 0);  // interned once
    EXPECT_EQ(Stats(a_).tags, 1u);
    ASSERT_EQ(ml_set_tag(a_, h, "mesh:hero"), 0);
    EXPECT_STREQ(Info(a_, h).tag, "mesh:hero");
    EXPECT_STREQ(Info(a_, k).tag, "texture");
    EXPECT_EQ(Stats(a_).tags, 2u);
    std::string t63(63, 'T');
    ASSERT_EQ(ml_set_tag(a_, h, t63.c_str()), 0);
    EXPECT_EQ(std::string(Info(a_, h).tag), t63);
    ASSERT_EQ(ml_set_tag(a_, h, nullptr), 0);
    EXPECT_STREQ(Info(a_, h).tag, "");
    ASSERT_EQ(ml_set_tag(a_, k, ""), 0);
    EXPECT_STREQ(Info(a_, k).tag, "");
    ASSERT_EQ(ml_set_tag(a_, k, nullptr), 0);  // clearing twice is fine
    // Pinned handles can be tagged; a freed slot's next owner starts untagged.
    ASSERT_EQ(ml_pin(a_, k, nullptr), 0);
    ASSERT_EQ(ml_set_tag(a_, k, "pinned"), 0);
    EXPECT_STREQ(Info(a_, k).tag, "pinned");
    ASSERT_EQ(ml_unpin(a_, k), 0);
    ASSERT_EQ(ml_free(a_, k), 0);
    ml_handle k2 = Alloc(100000);
    EXPECT_EQ((uint32_t)k2.bits, (uint32_t)k.bits) << "slot reuse expected";
    EXPECT_STREQ(Info(a_, k2).tag, "");
}

TEST_F(Groups, BadTagsAreRejectedWithoutChangingAnything) {
    ml_handle h = Alloc(64);
    ASSERT_EQ(ml_set_tag(a_, h, "keep"), 0);
    ml_handle dead = Alloc(64);
    ASSERT_EQ(ml_free(a_, dead), 0);
    World before = World::Take(a_);
    std::string t64(64, 't'), t200(200, 'u');
    const char *bad[] = {"a/b", "/", "tag/", ".", "..", t64.c_str(), t200.c_str(), "\x01", "a\tb",
                         "\n", "\x7f", "\x80", "caf\xc3\xa9"};
    for (const char *t : bad) {
        SCOPED_TRACE(testing::Message() << "tag \"" << t << "\"");
        EXPECT_EQ(ml_set_tag(a_, h, t), -EINVAL);
    }
    // Good tags on bad handles are not interned.
    EXPECT_EQ(ml_set_tag(a_, dead, "fresh-tag-1"), -ESTALE);
    EXPECT_EQ(ml_set_tag(a_, ML_HANDLE_NULL, "fresh-tag-2"), -EINVAL);
    ml_handle forged = {h.bits + (1ull << 32)};
    EXPECT_EQ(ml_set_tag(a_, forged, "fresh-tag-3"), -EINVAL);
    ExpectSameWorld(before, World::Take(a_), "after bad tags");
    EXPECT_STREQ(Info(a_, h).tag, "keep");
}

// "At most 4096 distinct tags in use at once": the 4097th is -ENOSPC and
// changes nothing; tags in use keep working; once no handle has a tag any
// more, its place goes to the next.
TEST_F(Groups, TagTableFullIsEnospc) {
    std::vector<ml_handle> hs;
    for (int i = 0; i < 4096; i++) {
        hs.push_back(Alloc(64));
        ASSERT_EQ(ml_set_tag(a_, hs.back(), ("tag" + std::to_string(i)).c_str()), 0) << i;
    }
    ml_handle k = Alloc(64);
    ASSERT_EQ(ml_set_tag(a_, k, "tag17"), 0);
    World before = World::Take(a_);
    EXPECT_EQ(before.stats.tags, 4096u);
    EXPECT_EQ(ml_set_tag(a_, k, "tag4096"), -ENOSPC);
    ExpectSameWorld(before, World::Take(a_), "after a full tag table");
    EXPECT_STREQ(Info(a_, k).tag, "tag17");
    EXPECT_EQ(ml_set_tag(a_, k, "tag0"), 0);
    EXPECT_STREQ(Info(a_, k).tag, "tag0");
    // tag5's only handle goes: its place is free for a new one.
    ASSERT_EQ(ml_free(a_, hs[5]), 0);
    EXPECT_EQ(World::Take(a_).stats.tags, 4095u);
    EXPECT_EQ(ml_set_tag(a_, k, "tag4096"), 0);
    EXPECT_STREQ(Info(a_, k).tag, "tag4096");
    EXPECT_STREQ(Info(a_, hs[0]).tag, "tag0"); // k no longer has it; hs[0] does
    EXPECT_EQ(World::Take(a_).stats.tags, 4096u);
    EXPECT_EQ(ml_set_tag(a_, k, nullptr), 0);
    EXPECT_EQ(World::Take(a_).stats.tags, 4095u);
    EXPECT_EQ(ml__arena_check(a_), 0);
}

// At a full table, a handle that is the last with its tag can still be
// retagged: its old tag's place is what the new one takes. One that shares
// its tag cannot, and nothing changes.
TEST_F(Groups, RetagAtAFullTableReusesTheHandlesOwnPlace) {
    std::vector<ml_handle> hs;
    for (int i = 0; i < 4096; i++) {
        hs.push_back(Alloc(64));
        ASSERT_EQ(ml_set_tag(a_, hs.back(), ("tag" + std::to_string(i)).c_str()), 0) << i;
    }
    ASSERT_EQ(World::Take(a_).stats.tags, 4096u);
    ASSERT_EQ(ml_set_tag(a_, hs[7], "renamed"), 0);
    EXPECT_STREQ(Info(a_, hs[7]).tag, "renamed");
    EXPECT_EQ(World::Take(a_).stats.tags, 4096u);
    EXPECT_EQ(ml__arena_check(a_), 0);

    ml_handle k = Alloc(64);
    ASSERT_EQ(ml_set_tag(a_, k, "tag9"), 0); // tag9 now has two handles
    World before = World::Take(a_);
    EXPECT_EQ(ml_set_tag(a_, k, "other"), -ENOSPC);
    ExpectSameWorld(before, World::Take(a_), "after a refused retag");
    EXPECT_STREQ(Info(a_, k).tag, "tag9");
    EXPECT_STREQ(Info(a_, hs[9]).tag, "tag9");
    EXPECT_EQ(ml__arena_check(a_), 0);

    // Freed and forged handles change nothing either, even at a full table.
    ASSERT_EQ(ml_free(a_, hs[7]), 0);
    before = World::Take(a_);
    EXPECT_EQ(ml_set_tag(a_, hs[7], "x"), -ESTALE);
    ml_handle forged = hs[8];
    forged.bits ^= 1ull << 40;
    EXPECT_EQ(ml_set_tag(a_, forged, "x"), -EINVAL);
    ExpectSameWorld(before, World::Take(a_), "after bad handles");
    EXPECT_EQ(ml__arena_check(a_), 0);
}

// A tag lasts as long as some live handle has it: freeing the handle (one
// by one, or its whole group), retagging it or clearing its tag gives the
// tag back. A program that tags each short-lived allocation with its
// request ID never runs out (it used to, after 4096 IDs in all).
TEST_F(Groups, TagsGoWithTheirLastHandle) {
    for (int i = 0; i < 20000; i++) {
        ml_handle h = Alloc(64);
        ASSERT_EQ(ml_set_tag(a_, h, ("req-" + std::to_string(i)).c_str()), 0) << i;
        if (i % 3 == 0) {
            ASSERT_EQ(ml_set_tag(a_, h, ("re-" + std::to_string(i)).c_str()), 0) << i;
        } else if (i % 3 == 1) {
            ASSERT_EQ(ml_set_tag(a_, h, ""), 0) << i;
        }
        ASSERT_EQ(ml_free(a_, h), 0);
    }
    EXPECT_EQ(World::Take(a_).stats.tags, 0u);
    ml_group g;
    ASSERT_EQ(ml_group_create(a_, "batch", &g), 0);
    for (int i = 0; i < 4000; i++) {
        ml_handle h;
        ASSERT_EQ(ml_group_alloc(a_, g, 32, 0, &h), 0);
        ASSERT_EQ(ml_set_tag(a_, h, ("item-" + std::to_string(i)).c_str()), 0) << i;
    }
    EXPECT_EQ(World::Take(a_).stats.tags, 4000u);
    EXPECT_EQ(ml__arena_check(a_), 0);
    size_t freed = 0;
    ASSERT_EQ(ml_group_free_all(a_, g, &freed), 0);
    EXPECT_EQ(freed, 4000u);
    EXPECT_EQ(World::Take(a_).stats.tags, 0u);
    EXPECT_EQ(ml__arena_check(a_), 0);
}

// Random tagging, retagging, clearing and freeing over a few hundred names
// (many sharing a place in the tag hash, whose entries move when one goes),
// against a model: every live handle reads back the tag the model says,
// the count of tags in use is the model's, and the table stays consistent.
TEST_F(Groups, TagsMatchAModelThroughRandomChurn) {
    std::mt19937_64 r(11);
    std::vector<ml_handle> hs;
    std::vector<std::string> tag_of;
    std::map<std::string, int> uses;
    auto untag = [&](size_t i) {
        if (!tag_of[i].empty() && --uses[tag_of[i]] == 0) uses.erase(tag_of[i]);
        tag_of[i].clear();
    };
    for (int op = 0; op < 60000; op++) {
        unsigned what = r() % 10;
        if (hs.size() < 50 || what < 3) {
            hs.push_back(Alloc(16));
            tag_of.emplace_back();
        } else if (what < 7) {
            size_t i = r() % hs.size();
            std::string t = "t" + std::to_string(r() % 700);
            ASSERT_EQ(ml_set_tag(a_, hs[i], t.c_str()), 0);
            untag(i);
            tag_of[i] = t;
            uses[t]++;
        } else if (what < 8) {
            size_t i = r() % hs.size();
            ASSERT_EQ(ml_set_tag(a_, hs[i], nullptr), 0);
            untag(i);
        } else {
            size_t i = r() % hs.size();
            ASSERT_EQ(ml_free(a_, hs[i]), 0);
            untag(i);
            hs[i] = hs.back();
            tag_of[i] = tag_of.back();
            hs.pop_back();
            tag_of.pop_back();
        }
        if (op % 5000 == 4999) {
            ASSERT_EQ(World::Take(a_).stats.tags, uses.size()) << op;
            for (size_t i = 0; i < hs.size(); i++) ASSERT_STREQ(Info(a_, hs[i]).tag, tag_of[i].c_str()) << op;
            ASSERT_EQ(ml__arena_check(a_), 0) << op;
        }
    }
}

}  // namespace

// ml_group_set racing the destruction of its target group: either the
// handle joined the group before it went (and was freed with it), or the
// call says -ENOENT and the handle is still live, in its old group.
TEST_F(Groups, SetRacingTheTargetsDestructionLeavesTheHandleWhereItWas) {
    ml_group home;
    ASSERT_EQ(ml_group_create(a_, "home", &home), 0);
    int joined = 0, refused = 0;
    for (int i = 0; i < 2000; i++) {
        ml_group target;
        ASSERT_EQ(ml_group_create(a_, "target", &target), 0);
        ml_handle h;
        ASSERT_EQ(ml_group_alloc(a_, home, 64, 0, &h), 0);
        std::atomic<bool> go{false};
        std::thread destroyer([&] {
            while (!go) {
            }
            EXPECT_EQ(ml_group_destroy(a_, target), 0);
        });
        go = true;
        int rc = ml_group_set(a_, h, target);
        destroyer.join();
        if (rc == 0) {
            joined++;
            EXPECT_EQ(ml_handle_state(a_, h), ML_STATE_FREED) << "freed with its group";
        } else {
            ASSERT_EQ(rc, -ENOENT);
            refused++;
            ml_handle_info info;
            ASSERT_EQ(ml_handle_info_get(a_, h, &info), 0) << "iteration " << i;
            EXPECT_EQ(info.group, home) << "iteration " << i;
            ASSERT_EQ(ml_free(a_, h), 0);
        }
    }
    EXPECT_EQ(CountOf(a_, home), 0u);
    EXPECT_EQ(joined + refused, 2000);
}
