// Bad input: every bad argument gets its documented error code and changes
// nothing observable (statistics, handle infos, data bytes, invariants).
#include <climits>
#include <cmath>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "test_util.h"
#include "world.h"

namespace {

constexpr size_t kSlowMax = 8u << 20;

ml_config BadInputConfig() {
    ml_config c = SmallConfig();
    c.slow_lane_max_size = kSlowMax;
    return c;
}

const ml_handle kSentinel = {0x5a5a5a5a5a5a5a5aull};
void *const kSentinelPtr = reinterpret_cast<void *>(uintptr_t{0x1234});

// Where the fields of a handle sit. The layout is internal (core/arena.h)
// and has changed before; only the near-miss forgeries need it.
constexpr uint64_t kGenField = uint64_t{(1u << ML_GEN_BITS) - 1} << 32;
#ifdef ML_TAG_SHIFT
constexpr unsigned kTagShift = 32 + ML_TAG_SHIFT;
#else
constexpr unsigned kTagShift = 32 + ML_GEN_BITS;
#endif
constexpr uint64_t kTagField = uint64_t{0x7f} << kTagShift;
constexpr uint64_t kBornBit = uint64_t{ML_HI_BORN_SLOW} << 32;

uint32_t TagOf(ml_handle h) { return ML_HI_TAG((uint32_t)(h.bits >> 32)); }
ml_handle WithGen(ml_handle h, uint64_t gen) { return {(h.bits & ~kGenField) | (gen << 32)}; }
ml_handle WithTag(ml_handle h, uint64_t tag) { return {(h.bits & ~kTagField) | (tag << kTagShift)}; }
ml_handle WithIndex(ml_handle h, uint64_t idx) { return {(h.bits & ~0xFFFFFFFFull) | idx}; }

// Either -EINVAL or -ESTALE, as long as every function agrees.
constexpr int kAnyRejection = 1;

// Every handle-taking function, called with a handle that must be rejected
// with `code` (-EINVAL or -ESTALE, or kAnyRejection). Returns without
// asserting on the world.
void ExpectHandleRejected(ml_arena *a, ml_handle h, int code, ml_group g) {
    SCOPED_TRACE(testing::Message() << "handle bits 0x" << std::hex << h.bits);
    if (code == kAnyRejection) {
        void *q = kSentinelPtr;
        code = ml_try_get(a, h, &q);
        ASSERT_TRUE(code == -EINVAL || code == -ESTALE) << "accepted: " << code;
    }
    EXPECT_EQ(ml_get(a, h), nullptr);
    EXPECT_EQ(ml_get_sized(a, h, 0), nullptr);
    void *p = kSentinelPtr;
    EXPECT_EQ(ml_try_get(a, h, &p), code);
    EXPECT_EQ(p, nullptr);
    EXPECT_EQ(ml_free(a, h), code);
    p = kSentinelPtr;
    EXPECT_EQ(ml_pin(a, h, &p), code);
    EXPECT_EQ(p, nullptr);
    EXPECT_EQ(ml_pin(a, h, nullptr), code);
    EXPECT_EQ(ml_unpin(a, h), code);
    unsigned char buf[64];
    memset(buf, 0xEE, sizeof buf);
    EXPECT_EQ(ml_read(a, h, 0, buf, sizeof buf), code);
    for (unsigned char b : buf) ASSERT_EQ(b, 0xEE) << "ml_read wrote into buf on failure";
    EXPECT_EQ(ml_write(a, h, 0, buf, 1), code);
    EXPECT_EQ(ml_write(a, h, 0, buf, 0), code);
    ml_handle_info info;
    EXPECT_EQ(ml_handle_info_get(a, h, &info), code);
    size_t size = 777;
    EXPECT_EQ(ml_size(a, h, &size), code);
    EXPECT_EQ(size, 777u) << "ml_size wrote out on failure";
    EXPECT_EQ(ml_set_tag(a, h, "forged-tag"), code);
    EXPECT_EQ(ml_set_tag(a, h, nullptr), code);
    EXPECT_EQ(ml_set_tag(a, h, ""), code);
    EXPECT_EQ(ml_handle_state(a, h), code == -ESTALE ? ML_STATE_FREED : ML_STATE_INVALID);
    EXPECT_FALSE(ml_is_valid(a, h));
    EXPECT_EQ(ml_group_set(a, h, ML_GROUP_NONE), code);
    EXPECT_EQ(ml_group_set(a, h, g), code);
}

// An arena with a little of everything: FastLane blocks, a SlowLane block, a
// blob, a tagged handle, a grouped handle, a pinned handle.
class BadInput : public ::testing::Test {
   protected:
    void SetUp() override {
        cfg_ = BadInputConfig();
        ASSERT_EQ(ml_arena_create(&cfg_, &a_), 0);
        ASSERT_EQ(ml_group_create(a_, "grp", &g_), 0);
        size_t sizes[] = {1, 16, 100, 4096, 5000, 100000};
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            ml_handle h;
            ASSERT_EQ(ml_alloc(a_, sizes[i], &h), 0);
            std::vector<unsigned char> b(sizes[i]);
            for (size_t j = 0; j < b.size(); j++) b[j] = PatternByte(i, j);
            ASSERT_EQ(ml_write(a_, h, 0, b.data(), b.size()), 0);
            live_.push_back(h);
        }
        ml_handle gh;
        ASSERT_EQ(ml_group_alloc(a_, g_, 64, 0, &gh), 0);
        live_.push_back(gh);
        ASSERT_EQ(ml_set_tag(a_, live_[1], "tagged"), 0);
        ASSERT_EQ(ml_pin(a_, live_[2], nullptr), 0);
        ASSERT_EQ(ml_alloc(a_, 48, &stale_), 0);
        ASSERT_EQ(ml_free(a_, stale_), 0);
        ASSERT_EQ(ml_maintain(a_), 0);
    }
    void TearDown() override {
        EXPECT_EQ(ml__arena_check(a_), 0);
        ml_arena_destroy(a_);
    }

    ml_config cfg_;
    ml_arena *a_ = nullptr;
    ml_group g_ = ML_GROUP_NONE;
    std::vector<ml_handle> live_;
    ml_handle stale_;
};

TEST_F(BadInput, RandomForgedHandlesAreRejectedEverywhere) {
    World before = World::Take(a_);
    std::set<uint64_t> live;
    for (ml_handle h : live_) live.insert(h.bits);
    std::mt19937_64 rng(0xC0FFEE);
    int tested = 0;
    for (int i = 0; i < 5000 && !HasFailure(); i++) {
        ml_handle h = {rng()};
        ASSERT_EQ(live.count(h.bits), 0u);
        ExpectHandleRejected(a_, h, -EINVAL, g_);
        tested++;
    }
    EXPECT_EQ(tested, 5000);
    ExpectSameWorld(before, World::Take(a_), "after random handles");
}

// Near misses of live handles: the values a cheap check could let through.
TEST_F(BadInput, NearMissForgedHandlesAreRejectedEverywhere) {
    World before = World::Take(a_);
    ml_stats st;
    ASSERT_EQ(ml_stats_get(a_, &st), 0);
    const uint64_t slots = st.handles_capacity;
    ASSERT_GT(slots, 0u);
    std::set<uint64_t> live;
    for (ml_handle h : live_) live.insert(h.bits);
    std::mt19937_64 rng(12345);
    std::vector<ml_handle> forged;
    for (ml_handle h : live_) {
        const uint64_t gen = ml_handle_generation(h);
        // A generation above the slot's: never issued.
        forged.push_back(WithGen(h, gen + 1));
        forged.push_back(WithGen(h, gen + 1 + rng() % 1000));
        forged.push_back(WithGen(h, ML_GEN_MAX));
        forged.push_back(WithGen(h, ML_GEN_RETIRED));
        // Generation 0: never issued.
        forged.push_back(WithGen(h, 0));
        // The other birth lane: the live slot, but not this handle.
        forged.push_back({h.bits ^ kBornBit});
        // Every other arena tag.
        for (uint64_t t = 0; t < 128; t++)
            if (t != TagOf(h)) forged.push_back(WithTag(h, t));
        // Index past the table, or far past it.
        forged.push_back(WithIndex(h, slots + rng() % 1000));
        forged.push_back(WithIndex(h, 0xFFFFFFFFull));
    }
    // Generations above everything issued, any index in the table.
    for (int i = 0; i < 2000; i++) {
        ml_handle h = WithIndex(WithGen(live_[0], 1000 + rng() % (ML_GEN_RETIRED - 1000)), rng() % slots);
        if (rng() & 1) h.bits ^= kBornBit;
        forged.push_back(h);
    }
    for (ml_handle h : forged) {
        if (HasFailure()) break;
        ASSERT_EQ(live.count(h.bits), 0u);
        ExpectHandleRejected(a_, h, -EINVAL, g_);
    }
    ExpectSameWorld(before, World::Take(a_), "after near-miss handles");
}

// Any single bit flipped in a live handle gives a value that was never
// issued (or, for a lower generation or another slot, one that is stale):
// whatever the layout, nothing may accept it.
TEST_F(BadInput, EverySingleBitFlipOfALiveHandleIsRejected) {
    World before = World::Take(a_);
    std::set<uint64_t> live;
    for (ml_handle h : live_) live.insert(h.bits);
    for (ml_handle h : live_) {
        for (int bit = 0; bit < 64 && !HasFailure(); bit++) {
            ml_handle f = {h.bits ^ (1ull << bit)};
            if (live.count(f.bits)) continue;  // another live handle (index bits)
            ExpectHandleRejected(a_, f, kAnyRejection, g_);
        }
    }
    ExpectSameWorld(before, World::Take(a_), "after single-bit flips");
}

// The slot of a freed handle still remembers where the data was. Values
// near its next generation, with any pattern of the upper flag bits, must
// not reach that memory (nor any other).
TEST_F(BadInput, ForgeriesOfAFreedSlotDoNotReachItsOldData) {
    for (size_t size : {40, 100000}) {
        SCOPED_TRACE(size);
        ml_handle h;
        ASSERT_EQ(ml_alloc(a_, size, &h), 0);
        ASSERT_EQ(ml_free(a_, h), 0);
        ASSERT_EQ(ml_maintain(a_), 0);
        World before = World::Take(a_);
        const uint64_t gen = ml_handle_generation(h);
        for (uint64_t g : {gen, gen + 1, gen + 2}) {
            for (uint64_t top = 0; top < 8; top++) {
                ml_handle f = WithGen(h, g);
                f.bits = (f.bits & ~(7ull << 61)) | (top << 61);
                if (f.bits == h.bits) continue;
                ExpectHandleRejected(a_, f, kAnyRejection, g_);
            }
        }
        ExpectHandleRejected(a_, h, -ESTALE, g_);
        ExpectSameWorld(before, World::Take(a_), "after forgeries of a freed slot");
    }
}

TEST_F(BadInput, NullHandleIsRejectedEverywhere) {
    EXPECT_TRUE(ml_handle_is_null(ML_HANDLE_NULL));
    EXPECT_EQ(ml_handle_id(ML_HANDLE_NULL), 0);
    EXPECT_EQ(ml_handle_generation(ML_HANDLE_NULL), 0u);
    for (ml_handle h : live_) {
        EXPECT_FALSE(ml_handle_is_null(h));
        EXPECT_NE(ml_handle_id(h), 0);
    }
    World before = World::Take(a_);
    ExpectHandleRejected(a_, ML_HANDLE_NULL, -EINVAL, g_);
    ExpectSameWorld(before, World::Take(a_), "after null handle");
}

TEST_F(BadInput, HandlesOfAnotherArenaAreRejected) {
    ml_config c = BadInputConfig();
    ml_arena *b = nullptr;
    ASSERT_EQ(ml_arena_create(&c, &b), 0);
    // Same shapes, so the slot indices of b's handles exist in a as well.
    std::vector<ml_handle> theirs;
    for (size_t size : {1, 16, 100, 4096, 5000, 100000, 64, 48}) {
        ml_handle h;
        ASSERT_EQ(ml_alloc(b, size, &h), 0);
        theirs.push_back(h);
    }
    ASSERT_NE(TagOf(theirs[0]), TagOf(live_[0])) << "consecutive arenas must have different tags";
    World before_a = World::Take(a_);
    World before_b = World::Take(b);
    bool some_index_shared = false;
    for (ml_handle h : theirs) {
        for (ml_handle mine : live_) some_index_shared |= (uint32_t)mine.bits == (uint32_t)h.bits;
        ExpectHandleRejected(a_, h, -EINVAL, g_);
    }
    ml_group gb;
    ASSERT_EQ(ml_group_create(b, "grp", &gb), 0);
    before_b = World::Take(b);
    for (ml_handle h : live_) ExpectHandleRejected(b, h, -EINVAL, gb);
    EXPECT_TRUE(some_index_shared);
    ExpectSameWorld(before_a, World::Take(a_), "arena a after b's handles");
    ExpectSameWorld(before_b, World::Take(b), "arena b after a's handles");
    for (ml_handle h : theirs) EXPECT_EQ(ml_free(b, h), 0);
    EXPECT_EQ(ml__arena_check(b), 0);
    ml_arena_destroy(b);
}

// Two arenas alive at once never share a tag while fewer than 128 are: an
// arena created and destroyed over and over beside a long-lived one (a
// program that makes a scratch arena per request) never takes its tag, so
// the long-lived arena's handles stay foreign to every one of them. (Tags
// used to be dealt in turn: every 127th arena had the long-lived one's.)
TEST_F(BadInput, ArenasAliveTogetherNeverShareATag) {
    ml_config c = BadInputConfig();
    c.max_handles = 1024;
    c.enable_paging = false;
    for (int i = 0; i < 300; i++) {
        ml_arena *b = nullptr;
        ASSERT_EQ(ml_arena_create(&c, &b), 0);
        ml_handle h;
        ASSERT_EQ(ml_alloc(b, 16, &h), 0);
        ASSERT_NE(TagOf(h), TagOf(live_[0])) << "arena " << i;
        EXPECT_FALSE(ml_is_valid(b, live_[0])) << "arena " << i;
        ml_arena_destroy(b);
    }
    // Handles of a destroyed arena's tag are not handed out again at once:
    // the next arena gets another tag than the one just destroyed.
    ml_arena *b = nullptr, *d = nullptr;
    ASSERT_EQ(ml_arena_create(&c, &b), 0);
    ml_handle hb, hd;
    ASSERT_EQ(ml_alloc(b, 16, &hb), 0);
    ml_arena_destroy(b);
    ASSERT_EQ(ml_arena_create(&c, &d), 0);
    ASSERT_EQ(ml_alloc(d, 16, &hd), 0);
    EXPECT_NE(TagOf(hb), TagOf(hd));
    EXPECT_FALSE(ml_is_valid(d, hb));
    ml_arena_destroy(d);
}

TEST_F(BadInput, DoubleFreeIsStaleAndChangesNothing) {
    for (size_t size : {16, 4096, 5000, 100000}) {
        SCOPED_TRACE(size);
        ml_handle h;
        ASSERT_EQ(ml_alloc(a_, size, &h), 0);
        ASSERT_EQ(ml_free(a_, h), 0);
        World before = World::Take(a_);
        EXPECT_EQ(ml_free(a_, h), -ESTALE);
        EXPECT_EQ(ml_free(a_, h), -ESTALE);
        ExpectSameWorld(before, World::Take(a_), "after double free");
    }
}

TEST_F(BadInput, UseAfterFreeIsStaleEverywhere) {
    World before = World::Take(a_);
    ExpectHandleRejected(a_, stale_, -ESTALE, g_);
    ExpectSameWorld(before, World::Take(a_), "after use of a freed handle");
}

// The freed handle's slot is reused at once (same thread, LIFO cache): the
// old handle must not reach the new allocation.
TEST_F(BadInput, StaleHandleDoesNotReachTheSlotsNextOwner) {
    for (size_t size : {32, 100000}) {
        SCOPED_TRACE(size);
        ml_handle old_h, new_h;
        ASSERT_EQ(ml_alloc(a_, size, &old_h), 0);
        ASSERT_EQ(ml_free(a_, old_h), 0);
        ASSERT_EQ(ml_alloc(a_, size, &new_h), 0);
        ASSERT_EQ((uint32_t)new_h.bits, (uint32_t)old_h.bits) << "slot was not reused";
        EXPECT_EQ(ml_handle_id(new_h), ml_handle_id(old_h));
        EXPECT_GT(ml_handle_generation(new_h), ml_handle_generation(old_h));
        std::vector<unsigned char> pat(size, 0x77);
        ASSERT_EQ(ml_write(a_, new_h, 0, pat.data(), pat.size()), 0);
        World before = World::Take(a_);
        ExpectHandleRejected(a_, old_h, -ESTALE, g_);
        ExpectSameWorld(before, World::Take(a_), "after stale use of a reused slot");
        EXPECT_TRUE(ml_is_valid(a_, new_h));
        EXPECT_EQ(ml_free(a_, new_h), 0);
    }
}

TEST_F(BadInput, SizeZeroIsInvalid) {
    World before = World::Take(a_);
    ml_handle h = kSentinel;
    EXPECT_EQ(ml_alloc(a_, 0, &h), -EINVAL);
    EXPECT_EQ(ml_alloc_aligned(a_, 0, 16, &h), -EINVAL);
    EXPECT_EQ(ml_alloc_aligned(a_, 0, 4096, &h), -EINVAL);
    EXPECT_EQ(ml_alloc_zeroed(a_, 0, &h), -EINVAL);
    EXPECT_EQ(ml_group_alloc(a_, g_, 0, 0, &h), -EINVAL);
    EXPECT_EQ(ml_group_alloc(a_, ML_GROUP_NONE, 0, 0, &h), -EINVAL);
    EXPECT_EQ(h.bits, kSentinel.bits) << "out must be untouched on failure";
    ExpectSameWorld(before, World::Take(a_), "after size 0");
    // Control: one byte is fine.
    ASSERT_EQ(ml_alloc(a_, 1, &h), 0);
    EXPECT_EQ(ml_free(a_, h), 0);
}

TEST_F(BadInput, SizeBeyondTheSlowLaneMaximumIsInvalid) {
    World before = World::Take(a_);
    ml_config rc;
    ASSERT_EQ(ml_arena_config(a_, &rc), 0);
    ASSERT_EQ(rc.slow_lane_max_size, kSlowMax);
    for (size_t size : {kSlowMax + 1, kSlowMax + 4096, kSlowMax * 2, SIZE_MAX / 2, SIZE_MAX - 4095,
                        SIZE_MAX}) {
        SCOPED_TRACE(size);
        ml_handle h = kSentinel;
        EXPECT_EQ(ml_alloc(a_, size, &h), -EINVAL);
        EXPECT_EQ(ml_alloc_aligned(a_, size, 64, &h), -EINVAL);
        EXPECT_EQ(ml_alloc_aligned(a_, size, 4096, &h), -EINVAL);
        EXPECT_EQ(ml_alloc_zeroed(a_, size, &h), -EINVAL);
        EXPECT_EQ(ml_group_alloc(a_, g_, size, 0, &h), -EINVAL);
        EXPECT_EQ(h.bits, kSentinel.bits);
    }
    ExpectSameWorld(before, World::Take(a_), "after oversized allocations");

    // Control: exactly the maximum fits an empty SlowLane (it grows to it)
    // when no safety margin is kept.
    ml_config c = BadInputConfig();
    c.slow_lane_safety_margin = 0;
    ArenaGuard e(&c);
    ml_handle h;
    ASSERT_EQ(ml_alloc(e, kSlowMax, &h), 0);
    ml_stats st;
    ASSERT_EQ(ml_stats_get(e, &st), 0);
    EXPECT_EQ(st.lane[ML_LANE_SLOW].capacity, kSlowMax);
    EXPECT_EQ(ml_free(e, h), 0);
}

TEST_F(BadInput, BadAlignmentIsInvalid) {
    World before = World::Take(a_);
    const size_t bad[] = {0,    3,    5,     6,       7,        12,       24,        48,
                          96,   100,  1000,  4095,    4097,     6144,     8192,      65536,
                          1 << 20, SIZE_MAX, SIZE_MAX / 2 + 1, (SIZE_MAX >> 1) ^ 1};
    for (size_t align : bad) {
        for (size_t size : {1, 100, 5000, 100000}) {
            SCOPED_TRACE(testing::Message() << "align " << align << " size " << size);
            ml_handle h = kSentinel;
            EXPECT_EQ(ml_alloc_aligned(a_, size, align, &h), -EINVAL);
            if (align != 0) {  // 0 means "default" for groups
                EXPECT_EQ(ml_group_alloc(a_, g_, size, align, &h), -EINVAL);
            }
            EXPECT_EQ(h.bits, kSentinel.bits);
        }
    }
    ExpectSameWorld(before, World::Take(a_), "after bad alignments");

    // Control: every power of two up to the page size works and is honoured.
    for (size_t align = 1; align <= 4096; align *= 2) {
        for (size_t size : {1, 100, 5000, 100000}) {
            SCOPED_TRACE(testing::Message() << "align " << align << " size " << size);
            ml_handle h;
            ASSERT_EQ(ml_alloc_aligned(a_, size, align, &h), 0);
            void *p = ml_get(a_, h);
            ASSERT_NE(p, nullptr);
            EXPECT_EQ((uintptr_t)p % align, 0u);
            EXPECT_EQ(ml_free(a_, h), 0);
        }
    }
}

TEST_F(BadInput, NullArenaIsRejectedEverywhere) {
    ml_handle h = live_[0];
    ml_handle out = kSentinel;
    void *p = kSentinelPtr;
    char buf[16];
    ml_handle_info info;
    ml_stats st;
    ml_config c;
    ml_group g = 77;
    size_t n = 99;
    EXPECT_EQ(ml_alloc(nullptr, 16, &out), -EINVAL);
    EXPECT_EQ(ml_alloc_aligned(nullptr, 16, 16, &out), -EINVAL);
    EXPECT_EQ(ml_alloc_zeroed(nullptr, 16, &out), -EINVAL);
    EXPECT_EQ(out.bits, kSentinel.bits);
    EXPECT_EQ(ml_free(nullptr, h), -EINVAL);
    EXPECT_EQ(ml_get(nullptr, h), nullptr);
    EXPECT_EQ(ml_get_sized(nullptr, h, 1), nullptr);
    EXPECT_EQ(ml_try_get(nullptr, h, &p), -EINVAL);
    EXPECT_EQ(p, nullptr);
    EXPECT_FALSE(ml_is_valid(nullptr, h));
    EXPECT_EQ(ml_handle_state(nullptr, h), ML_STATE_INVALID);
    p = kSentinelPtr;
    EXPECT_EQ(ml_pin(nullptr, h, &p), -EINVAL);
    EXPECT_EQ(p, nullptr);
    EXPECT_EQ(ml_unpin(nullptr, h), -EINVAL);
    EXPECT_EQ(ml_read(nullptr, h, 0, buf, sizeof buf), -EINVAL);
    EXPECT_EQ(ml_write(nullptr, h, 0, buf, 1), -EINVAL);
    EXPECT_EQ(ml_maintain(nullptr), -EINVAL);
    EXPECT_EQ(ml_handle_info_get(nullptr, h, &info), -EINVAL);
    size_t size = 777;
    EXPECT_EQ(ml_size(nullptr, h, &size), -EINVAL);
    EXPECT_EQ(size, 777u);
    EXPECT_EQ(ml_size(a_, h, nullptr), -EINVAL);
    EXPECT_EQ(ml_handle_from_id(nullptr, ml_handle_id(h), &out), -EINVAL);
    EXPECT_EQ(ml_foreach(nullptr, [](const ml_handle_info *, void *) { return 0; }, nullptr), -EINVAL);
    EXPECT_EQ(ml_stats_get(nullptr, &st), -EINVAL);
    EXPECT_EQ(ml_arena_config(nullptr, &c), -EINVAL);
    EXPECT_EQ(ml_set_tag(nullptr, h, "x"), -EINVAL);
    EXPECT_EQ(ml_set_tag(nullptr, h, nullptr), -EINVAL);
    EXPECT_EQ(ml_group_create(nullptr, "x", &g), -EINVAL);
    EXPECT_EQ(ml_group_find(nullptr, "grp", &g), -EINVAL);
    EXPECT_EQ(g, 77u);
    EXPECT_EQ(ml_group_alloc(nullptr, g_, 16, 0, &out), -EINVAL);
    EXPECT_EQ(ml_group_set(nullptr, h, g_), -EINVAL);
    EXPECT_EQ(ml_group_free_all(nullptr, g_, &n), -EINVAL);
    EXPECT_EQ(ml_group_destroy(nullptr, g_), -EINVAL);
    EXPECT_EQ(ml_group_count(nullptr, g_, &n), -EINVAL);
    EXPECT_EQ(ml_group_list(nullptr, g_, &out, 1, &n), -EINVAL);
    EXPECT_EQ(ml_group_name(nullptr, g_, buf, sizeof buf), -EINVAL);
    EXPECT_EQ(ml_group_foreach(nullptr, [](ml_group, const char *, size_t, void *) { return 0; },
                               nullptr),
              -EINVAL);
    ml_arena_destroy(nullptr);  // ignored
    // The real arena saw none of it.
    EXPECT_TRUE(ml_is_valid(a_, h));
    size_t count = 0;
    ASSERT_EQ(ml_group_count(a_, g_, &count), 0);
    EXPECT_EQ(count, 1u);
}

TEST_F(BadInput, NullOutPointersAreRejectedAndChangeNothing) {
    World before = World::Take(a_);
    ml_handle h = live_[0];
    EXPECT_EQ(ml_alloc(a_, 16, nullptr), -EINVAL);
    EXPECT_EQ(ml_alloc(a_, 100000, nullptr), -EINVAL);
    EXPECT_EQ(ml_alloc_aligned(a_, 16, 64, nullptr), -EINVAL);
    EXPECT_EQ(ml_alloc_zeroed(a_, 16, nullptr), -EINVAL);
    EXPECT_EQ(ml_alloc_zeroed(a_, 100000, nullptr), -EINVAL);
    EXPECT_EQ(ml_group_alloc(a_, g_, 16, 0, nullptr), -EINVAL);
    EXPECT_EQ(ml_group_alloc(a_, ML_GROUP_NONE, 16, 0, nullptr), -EINVAL);
    EXPECT_EQ(ml_try_get(a_, h, nullptr), -EINVAL);
    EXPECT_EQ(ml_read(a_, h, 0, nullptr, 1), -EINVAL);
    EXPECT_EQ(ml_write(a_, h, 0, nullptr, 1), -EINVAL);
    EXPECT_EQ(ml_handle_info_get(a_, h, nullptr), -EINVAL);
    EXPECT_EQ(ml_handle_from_id(a_, ml_handle_id(h), nullptr), -EINVAL);
    EXPECT_EQ(ml_foreach(a_, nullptr, nullptr), -EINVAL);
    EXPECT_EQ(ml_stats_get(a_, nullptr), -EINVAL);
    EXPECT_EQ(ml_arena_config(a_, nullptr), -EINVAL);
    EXPECT_EQ(ml_group_create(a_, "new-group", nullptr), -EINVAL);
    ml_group g = 77;
    EXPECT_EQ(ml_group_create(a_, nullptr, &g), -EINVAL);
    EXPECT_EQ(ml_group_find(a_, nullptr, &g), -EINVAL);
    EXPECT_EQ(ml_group_find(a_, "grp", nullptr), -EINVAL);
    EXPECT_EQ(g, 77u);
    EXPECT_EQ(ml_group_count(a_, g_, nullptr), -EINVAL);
    size_t n = 99;
    EXPECT_EQ(ml_group_list(a_, g_, nullptr, 1, &n), -EINVAL);
    ml_handle one;
    EXPECT_EQ(ml_group_list(a_, g_, &one, 1, nullptr), -EINVAL);
    char buf[8];
    EXPECT_EQ(ml_group_name(a_, g_, nullptr, 8), -EINVAL);
    EXPECT_EQ(ml_group_name(a_, g_, buf, 0), -EINVAL);
    EXPECT_EQ(ml_group_foreach(a_, nullptr, nullptr), -EINVAL);
    ml_config c = BadInputConfig();
    EXPECT_EQ(ml_arena_create(&c, nullptr), -EINVAL);
    EXPECT_EQ(ml_arena_create(nullptr, nullptr), -EINVAL);
    const char *reason = nullptr;
    EXPECT_EQ(ml_config_check(nullptr, &reason), -EINVAL);
    EXPECT_NE(reason, nullptr);
    EXPECT_EQ(ml_config_check(nullptr, nullptr), -EINVAL);
    EXPECT_EQ(ml_group_find(a_, "new-group", &g), -ENOENT) << "group created with NULL out";
    ExpectSameWorld(before, World::Take(a_), "after NULL out pointers");

    // Documented as optional: ml_pin's out, ml_group_free_all's freed, a
    // zero-length read/write with NULL buf, ml_config_check's reason.
    EXPECT_EQ(ml_read(a_, h, 0, nullptr, 0), 0);
    EXPECT_EQ(ml_write(a_, h, 0, nullptr, 0), 0);
    EXPECT_EQ(ml_group_list(a_, g_, nullptr, 0, &n), 0);
    EXPECT_EQ(n, 1u);
    EXPECT_EQ(ml_config_check(&c, nullptr), 0);
    ASSERT_EQ(ml_pin(a_, h, nullptr), 0);
    ml_handle_info info;
    ASSERT_EQ(ml_handle_info_get(a_, h, &info), 0);
    EXPECT_EQ(info.pins, 1u);
    EXPECT_EQ(ml_unpin(a_, h), 0);
}

struct BadConfig {
    const char *name;
    void (*mutate)(ml_config *);
    const char *reason_has;  // a word the reason must contain
};

const BadConfig kBadConfigs[] = {
    {"threshold 0", [](ml_config *c) { c->threshold = 0; }, "threshold"},
    {"threshold 15", [](ml_config *c) { c->threshold = 15; }, "threshold"},
    {"threshold 65537", [](ml_config *c) { c->threshold = 65537; }, "threshold"},
    {"threshold huge", [](ml_config *c) { c->threshold = SIZE_MAX; }, "threshold"},
    {"fast_lane_size 0", [](ml_config *c) { c->fast_lane_size = 0; }, "fast_lane_size"},
    {"slow_lane_size 0", [](ml_config *c) { c->slow_lane_size = 0; }, "slow_lane_size"},
    {"slow_lane_size 64K-1", [](ml_config *c) { c->slow_lane_size = 65535; }, "slow_lane_size"},
    {"fast max < size",
     [](ml_config *c) {
         c->fast_lane_size = 1 << 20;
         c->fast_lane_max_size = (1 << 20) - 1;
     },
     "fast_lane_max_size"},
    {"slow max < size",
     [](ml_config *c) {
         c->slow_lane_size = 4 << 20;
         c->slow_lane_max_size = 1 << 20;
     },
     "slow_lane_max_size"},
    {"fast > 1 TiB", [](ml_config *c) { c->fast_lane_size = (size_t{1} << 40) + 1; }, "fast_lane_size"},
    {"fast max > 1 TiB", [](ml_config *c) { c->fast_lane_max_size = (size_t{1} << 40) + 65536; },
     "fast_lane_max_size"},
    {"slow > 1 TiB", [](ml_config *c) { c->slow_lane_size = (size_t{1} << 40) + 65536; }, "slow_lane_size"},
    {"slow max > 1 TiB", [](ml_config *c) { c->slow_lane_max_size = SIZE_MAX; }, "slow_lane_max_size"},
    {"compaction_threshold 0", [](ml_config *c) { c->compaction_threshold = 0.0; },
     "compaction_threshold"},
    {"compaction_threshold < 0", [](ml_config *c) { c->compaction_threshold = -0.5; },
     "compaction_threshold"},
    {"compaction_threshold > 1", [](ml_config *c) { c->compaction_threshold = 1.01; },
     "compaction_threshold"},
    {"compaction_threshold NaN", [](ml_config *c) { c->compaction_threshold = NAN; },
     "compaction_threshold"},
    {"usage 0", [](ml_config *c) { c->slow_lane_usage_threshold = 0.0; }, "slow_lane_usage_threshold"},
    {"usage > 1", [](ml_config *c) { c->slow_lane_usage_threshold = 1.5; }, "slow_lane_usage_threshold"},
    {"usage NaN", [](ml_config *c) { c->slow_lane_usage_threshold = NAN; }, "slow_lane_usage_threshold"},
    {"margin < 0", [](ml_config *c) { c->slow_lane_safety_margin = -0.01; }, "slow_lane_safety_margin"},
    {"margin 0.5",
     [](ml_config *c) {
         c->slow_lane_usage_threshold = 0.4;
         c->slow_lane_safety_margin = 0.5;
     },
     "slow_lane_safety_margin"},
    {"margin NaN", [](ml_config *c) { c->slow_lane_safety_margin = NAN; }, "slow_lane_safety_margin"},
    {"usage + margin > 1",
     [](ml_config *c) {
         c->slow_lane_usage_threshold = 0.95;
         c->slow_lane_safety_margin = 0.10;
     },
     "exceed"},
    {"max_handles 0", [](ml_config *c) { c->max_handles = 0; }, "max_handles"},
    {"max_handles 1023", [](ml_config *c) { c->max_handles = 1023; }, "max_handles"},
    {"max_handles 2^31+1", [](ml_config *c) { c->max_handles = (size_t{1} << 31) + 1; }, "max_handles"},
    {"max_handles huge", [](ml_config *c) { c->max_handles = SIZE_MAX; }, "max_handles"},
};

TEST(ConfigCheck, EveryRuleRejectsWithAReasonAndCreateLeavesOutUntouched) {
    for (const BadConfig &bc : kBadConfigs) {
        SCOPED_TRACE(bc.name);
        ml_config c;
        ml_config_init(&c);
        bc.mutate(&c);
        const char *reason = "not set";
        EXPECT_EQ(ml_config_check(&c, &reason), -EINVAL);
        ASSERT_NE(reason, nullptr);
        EXPECT_NE(std::string(reason), "not set");
        EXPECT_NE(std::string(reason).find(bc.reason_has), std::string::npos)
            << "reason \"" << reason << "\" does not mention " << bc.reason_has;
        ml_arena *out = reinterpret_cast<ml_arena *>(uintptr_t{0xDEAD0});
        EXPECT_EQ(ml_arena_create(&c, &out), -EINVAL);
        EXPECT_EQ(out, reinterpret_cast<ml_arena *>(uintptr_t{0xDEAD0}));
    }
}

TEST(ConfigCheck, BoundaryValuesAreAccepted) {
    struct Good {
        const char *name;
        void (*mutate)(ml_config *);
        bool create;  // small enough to create for real
    } goods[] = {
        {"defaults", [](ml_config *) {}, true},
        {"threshold 16", [](ml_config *c) { c->threshold = 16; }, true},
        {"threshold 65536", [](ml_config *c) { c->threshold = 65536; }, true},
        {"fast_lane_size 1", [](ml_config *c) { c->fast_lane_size = 1; }, true},
        {"slow_lane_size 64K", [](ml_config *c) { c->slow_lane_size = 65536; }, true},
        {"fast max == size", [](ml_config *c) { c->fast_lane_max_size = c->fast_lane_size; }, true},
        {"slow max == size", [](ml_config *c) { c->slow_lane_max_size = c->slow_lane_size; }, true},
        {"fast max 1 TiB", [](ml_config *c) { c->fast_lane_max_size = size_t{1} << 40; }, false},
        {"slow max 1 TiB", [](ml_config *c) { c->slow_lane_max_size = size_t{1} << 40; }, false},
        {"compaction_threshold 1", [](ml_config *c) { c->compaction_threshold = 1.0; }, true},
        {"usage 1, margin 0",
         [](ml_config *c) {
             c->slow_lane_usage_threshold = 1.0;
             c->slow_lane_safety_margin = 0.0;
         },
         true},
        {"usage + margin == 1",
         [](ml_config *c) {
             c->slow_lane_usage_threshold = 0.6;
             c->slow_lane_safety_margin = 0.4;
         },
         true},
        {"max_handles 1024", [](ml_config *c) { c->max_handles = 1024; }, true},
    };
    for (const Good &gd : goods) {
        SCOPED_TRACE(gd.name);
        ml_config c;
        ml_config_init(&c);
        c.fast_lane_size = 1 << 20;
        c.slow_lane_size = 1 << 20;
        c.max_handles = 1 << 16;
        gd.mutate(&c);
        const char *reason = "not set";
        EXPECT_EQ(ml_config_check(&c, &reason), 0);
        EXPECT_EQ(reason, nullptr);
        if (!gd.create) continue;
        ml_arena *a = nullptr;
        ASSERT_EQ(ml_arena_create(&c, &a), 0);
        ml_handle h;
        EXPECT_EQ(ml_alloc(a, 1, &h), 0);
        ml_arena_destroy(a);
    }
}

TEST_F(BadInput, FreeOfAPinnedHandleIsBusyAndFreesNothing) {
    for (ml_handle h : live_) {
        if (ml_handle_eq(h, live_[2])) continue;  // pinned by SetUp already
        ASSERT_EQ(ml_pin(a_, h, nullptr), 0);
    }
    World before = World::Take(a_);
    for (ml_handle h : live_) {
        EXPECT_EQ(ml_free(a_, h), -EBUSY);
        EXPECT_TRUE(ml_is_valid(a_, h));
    }
    ExpectSameWorld(before, World::Take(a_), "after freeing pinned handles");
    // Nested pins: one unpin is not enough.
    ASSERT_EQ(ml_pin(a_, live_[0], nullptr), 0);
    ASSERT_EQ(ml_unpin(a_, live_[0]), 0);
    EXPECT_EQ(ml_free(a_, live_[0]), -EBUSY);
    ASSERT_EQ(ml_unpin(a_, live_[0]), 0);
    EXPECT_EQ(ml_free(a_, live_[0]), 0);
    EXPECT_EQ(ml_free(a_, live_[0]), -ESTALE);
}

TEST_F(BadInput, UnpinOfAnUnpinnedHandleIsInvalid) {
    World before = World::Take(a_);
    for (ml_handle h : live_) {
        if (ml_handle_eq(h, live_[2])) continue;  // the pinned one
        EXPECT_EQ(ml_unpin(a_, h), -EINVAL);
    }
    ExpectSameWorld(before, World::Take(a_), "after unpinning unpinned handles");
    // One pin, one unpin; the second unpin is refused.
    ASSERT_EQ(ml_unpin(a_, live_[2]), 0);
    before = World::Take(a_);
    EXPECT_EQ(ml_unpin(a_, live_[2]), -EINVAL);
    ExpectSameWorld(before, World::Take(a_), "after an extra unpin");
    EXPECT_EQ(ml_free(a_, live_[2]), 0);
}

TEST_F(BadInput, PinCountOverflowIsRefused) {
    ml_handle h = live_[3];
    for (unsigned i = 0; i < 65535; i++) ASSERT_EQ(ml_pin(a_, h, nullptr), 0) << i;
    World before = World::Take(a_);
    void *p = kSentinelPtr;
    EXPECT_EQ(ml_pin(a_, h, &p), -EOVERFLOW);
    EXPECT_EQ(p, nullptr);
    ExpectSameWorld(before, World::Take(a_), "after pin overflow");
    EXPECT_EQ(before.info.at(h.bits).pins, 65535u);
    for (unsigned i = 0; i < 65535; i++) ASSERT_EQ(ml_unpin(a_, h), 0) << i;
    EXPECT_EQ(ml_unpin(a_, h), -EINVAL);
    EXPECT_EQ(ml_free(a_, h), 0);
}

TEST_F(BadInput, WritePastTheEndIsInvalidAndWritesNothing) {
    ml_handle small, blob;
    ASSERT_EQ(ml_alloc(a_, 10, &small), 0);  // a 16-byte block: 6 bytes of slack
    ASSERT_EQ(ml_alloc(a_, 10000, &blob), 0);
    unsigned char *ps = static_cast<unsigned char *>(ml_get(a_, small));
    unsigned char *pb = static_cast<unsigned char *>(ml_get(a_, blob));
    ASSERT_NE(ps, nullptr);
    ASSERT_NE(pb, nullptr);
    memset(ps, 0x11, 16);
    memset(pb, 0x22, 12288);
    World before = World::Take(a_);
    std::vector<unsigned char> junk(20000, 0xFF);
    struct Case {
        size_t off, len;
    } cases[] = {{0, 11},         {10, 1},       {9, 2},        {11, 0},      {16, 1},
                 {SIZE_MAX, 2},   {1, SIZE_MAX}, {SIZE_MAX, 0}, {5, SIZE_MAX - 4}};
    for (const Case &c : cases) {
        SCOPED_TRACE(testing::Message() << "off " << c.off << " len " << c.len);
        EXPECT_EQ(ml_write(a_, small, c.off, junk.data(), c.len), -EINVAL);
    }
    for (const Case &c : {Case{0, 10001}, Case{9999, 2}, Case{10000, 1}, Case{10001, 0},
                          Case{4096, 10000}}) {
        EXPECT_EQ(ml_write(a_, blob, c.off, junk.data(), c.len), -EINVAL);
    }
    for (int i = 0; i < 16; i++) ASSERT_EQ(ps[i], 0x11) << "byte " << i << " of the block";
    for (int i = 0; i < 12288; i++) ASSERT_EQ(pb[i], 0x22) << "byte " << i << " of the blob";
    ExpectSameWorld(before, World::Take(a_), "after writes past the end");
    // The edges themselves are fine.
    EXPECT_EQ(ml_write(a_, small, 10, junk.data(), 0), 0);
    EXPECT_EQ(ml_write(a_, small, 9, junk.data(), 1), 0);
    EXPECT_EQ(ps[9], 0xFF);
    EXPECT_EQ(ps[10], 0x11);
    EXPECT_EQ(ml_write(a_, blob, 0, junk.data(), 10000), 0);
    EXPECT_EQ(pb[10000], 0x22);
}

TEST_F(BadInput, BadReadArgumentsAreInvalid) {
    ml_handle h = live_[2];
    std::vector<unsigned char> buf(8, 0xAB);
    World before = World::Take(a_);
    EXPECT_EQ(ml_read(a_, h, 0, buf.data(), size_t{INT_MAX} + 1), -EINVAL);
    EXPECT_EQ(ml_read(a_, h, 0, buf.data(), SIZE_MAX), -EINVAL);
    EXPECT_EQ(ml_read(a_, h, 0, nullptr, 8), -EINVAL);
    for (unsigned char b : buf) EXPECT_EQ(b, 0xAB);
    ExpectSameWorld(before, World::Take(a_), "after bad reads");
}

TEST_F(BadInput, BadTagsAndNamesChangeNothing) {
    World before = World::Take(a_);
    std::string long_name(64, 'x');
    const char *bad[] = {"a/b", "/", ".", "..", long_name.c_str(), "\x01", "a\tb", "a\nb", "\x7f",
                         "caf\xc3\xa9"};
    ml_group g = 77;
    for (const char *t : bad) {
        SCOPED_TRACE(testing::Message() << "name \"" << t << "\"");
        EXPECT_EQ(ml_set_tag(a_, live_[0], t), -EINVAL);
        EXPECT_EQ(ml_set_tag(a_, live_[1], t), -EINVAL);  // the tagged one
        EXPECT_EQ(ml_group_create(a_, t, &g), -EINVAL);
        EXPECT_EQ(g, 77u);
    }
    ExpectSameWorld(before, World::Take(a_), "after bad tags and names");
}

// Generation wrap: a slot that has issued ML_GEN_MAX is retired, never
// reused, and no handle it ever issued validates again.
TEST_F(BadInput, GenerationWrapRetiresTheSlotForGood) {
    for (size_t size : {24, 100000}) {
        SCOPED_TRACE(size);
        ml_stats st0;
        ASSERT_EQ(ml_stats_get(a_, &st0), 0);
        ml_handle h;
        ASSERT_EQ(ml_alloc(a_, size, &h), 0);
        const uint32_t idx = (uint32_t)h.bits;
        std::vector<ml_handle> issued = {h};
        ASSERT_EQ(ml_free(a_, h), 0);
        // The hook refuses nonsense.
        EXPECT_EQ(ml__test_set_next_gen(a_, idx, 0), -EINVAL);
        EXPECT_EQ(ml__test_set_next_gen(a_, idx, ML_GEN_RETIRED), -EINVAL);
        EXPECT_EQ(ml__test_set_next_gen(a_, (uint32_t)live_[0].bits, 5), -EBUSY);
        ASSERT_EQ(ml__test_set_next_gen(a_, idx, ML_GEN_MAX - 2), 0);

        std::vector<uint32_t> gens;
        for (int round = 0; round < 10; round++) {
            ASSERT_EQ(ml_alloc(a_, size, &h), 0);
            if ((uint32_t)h.bits != idx) {  // the slot is gone: a fresh one was used
                ASSERT_EQ(ml_free(a_, h), 0);
                break;
            }
            gens.push_back(ml_handle_generation(h));
            issued.push_back(h);
            // Every earlier handle of the slot is stale while this one lives.
            for (size_t i = 0; i + 1 < issued.size(); i++) {
                EXPECT_EQ(ml_handle_state(a_, issued[i]), ML_STATE_FREED);
                EXPECT_EQ(ml_get(a_, issued[i]), nullptr);
            }
            ASSERT_EQ(ml_free(a_, h), 0);
        }
        EXPECT_EQ(gens, (std::vector<uint32_t>{ML_GEN_MAX - 2, ML_GEN_MAX - 1, ML_GEN_MAX}));
        ml_stats st;
        ASSERT_EQ(ml_stats_get(a_, &st), 0);
        EXPECT_EQ(st.handles_retired, st0.handles_retired + 1);
        EXPECT_EQ(st.handles_live, st0.handles_live);

        // Lots of churn afterwards: the slot never comes back.
        std::vector<ml_handle> more;
        for (int i = 0; i < 300; i++) {
            ml_handle x;
            ASSERT_EQ(ml_alloc(a_, size, &x), 0);
            ASSERT_NE((uint32_t)x.bits, idx) << "retired slot reused";
            more.push_back(x);
            if (more.size() > 8) {  // bounded: 8 blobs fit the SlowLane easily
                ASSERT_EQ(ml_free(a_, more.front()), 0);
                more.erase(more.begin());
            }
        }
        for (ml_handle x : more) ASSERT_EQ(ml_free(a_, x), 0);
        World before = World::Take(a_);
        for (ml_handle old : issued) ExpectHandleRejected(a_, old, -ESTALE, g_);
        // Generations never issued by the retired slot are forgeries.
        ml_handle forged = WithGen(issued.back(), ML_GEN_RETIRED);
        ExpectHandleRejected(a_, forged, -EINVAL, g_);
        ml_handle out = kSentinel;
        EXPECT_EQ(ml_handle_from_id(a_, ml_handle_id(issued.back()), &out), -ENOENT);
        EXPECT_EQ(out.bits, kSentinel.bits);
        ExpectSameWorld(before, World::Take(a_), "after stale uses of a retired slot");
    }
}

}  // namespace

// Every code a public function is documented to return has a name of its
// own (the debug view's mount errors and the paging engine's too: a user
// running `mlane demo --mount` without access to /dev/fuse once read
// "unknown error"). Sign does not matter; other errnos get the C
// library's description; a number that is no errno is "unknown error".
TEST(Errors, EveryDocumentedCodeHasAName) {
    const int documented[] = {EINVAL, ESTALE, ENOMEM,  EBUSY,  EOVERFLOW, ENOENT, EEXIST, ENOSPC,
                              EIO,    EBADMSG, ENOTSUP, EALREADY, EPERM, EACCES, ENODEV, ENOTDIR,
                              ENOSYS, EMFILE, EROFS, ENOTEMPTY, EMSGSIZE};
    std::set<std::string> names;
    for (int e : documented) {
        std::string n = ml_strerror(-e);
        EXPECT_NE(n, "unknown error") << e;
        EXPECT_EQ(n, ml_strerror(e)) << e;
        names.insert(n);
    }
    EXPECT_EQ(names.size(), sizeof documented / sizeof documented[0]) << "names are distinct";
    EXPECT_STREQ(ml_strerror(0), "success");
    EXPECT_STRNE(ml_strerror(-ETIMEDOUT), "unknown error");
    EXPECT_STREQ(ml_strerror(-99999), "unknown error");
    EXPECT_STREQ(ml_strerror(INT_MIN + 1), "unknown error");
    EXPECT_STREQ(ml_strerror(INT_MIN), "unknown error");
}
