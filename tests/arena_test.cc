#include <cstring>
#include <vector>

#include "test_util.h"

TEST(Arena, CreateDestroyDefaults) {
    ml_arena *a = nullptr;
    ASSERT_EQ(ml_arena_create(nullptr, &a), 0);
    ASSERT_NE(a, nullptr);
    ml_config c;
    ASSERT_EQ(ml_arena_config(a, &c), 0);
    EXPECT_EQ(c.threshold, 4096u);
    EXPECT_EQ(c.fast_lane_size, 16u << 20);
    ml_arena_destroy(a);
}

TEST(Arena, AllocWriteReadFree) {
    ArenaGuard a;
    std::vector<ml_handle> hs;
    for (size_t size : {1, 16, 17, 100, 256, 4096, 4097, 10000, 100000, 1 << 20}) {
        ml_handle h;
        ASSERT_EQ(ml_alloc(a, size, &h), 0) << size;
        void *p = ml_get(a, h);
        ASSERT_NE(p, nullptr);
        memset(p, (int)(size & 0xff), size);
        EXPECT_EQ(ml_handle_state(a, h), size <= 4096 ? ML_STATE_FAST : ML_STATE_SLOW);
        EXPECT_EQ(ml_handle_id(h) > 0, size <= 4096);
        hs.push_back(h);
    }
    EXPECT_EQ(ml__arena_check(a), 0);
    for (ml_handle h : hs) {
        ml_handle_info info;
        ASSERT_EQ(ml_handle_info_get(a, h, &info), 0);
        std::vector<unsigned char> buf(info.size);
        ASSERT_EQ(ml_read(a, h, 0, buf.data(), buf.size()), (int)info.size);
        for (unsigned char b : buf) ASSERT_EQ(b, (unsigned char)(info.size & 0xff));
        ASSERT_EQ(ml_free(a, h), 0);
        EXPECT_EQ(ml_free(a, h), -ESTALE);
        EXPECT_EQ(ml_handle_state(a, h), ML_STATE_FREED);
        EXPECT_EQ(ml_get(a, h), nullptr);
    }
    EXPECT_EQ(ml__arena_check(a), 0);
    ml_stats st;
    ASSERT_EQ(ml_stats_get(a, &st), 0);
    EXPECT_EQ(st.handles_live, 0u);
    EXPECT_EQ(st.lane[0].used, 0u);
    EXPECT_EQ(st.lane[1].used, 0u);
}
