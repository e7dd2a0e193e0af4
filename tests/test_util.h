// Helpers shared by the test suites.
#ifndef ML_TESTS_TEST_UTIL_H
#define ML_TESTS_TEST_UTIL_H

#include <dirent.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <random>
#include <string>
#include <thread>

extern "C" {
#include "core/arena.h"
}
#include "memorylane/memorylane.h"

// An arena that is destroyed at the end of the scope.
struct ArenaGuard {
    ml_arena *a = nullptr;
    explicit ArenaGuard(const ml_config *cfg = nullptr) {
        int rc = ml_arena_create(cfg, &a);
        EXPECT_EQ(rc, 0) << ml_strerror(rc);
    }
    ~ArenaGuard() { ml_arena_destroy(a); }
    ArenaGuard(const ArenaGuard &) = delete;
    ArenaGuard &operator=(const ArenaGuard &) = delete;
    operator ml_arena *() const { return a; }
};

// Small lanes so that tests reach "full" quickly.
inline ml_config SmallConfig() {
    ml_config c;
    ml_config_init(&c);
    c.fast_lane_size = 1 << 20;
    c.slow_lane_size = 4 << 20;
    c.max_handles = 1 << 20;
    return c;
}

// SmallConfig with paging off: nothing goes cold behind a test's back.
inline ml_config SmallUnpagedConfig() {
    ml_config c = SmallConfig();
    c.enable_paging = false;
    return c;
}

// Deterministic byte pattern for (seed, offset).
inline unsigned char PatternByte(uint64_t seed, size_t i) {
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + i * 0xBF58476D1CE4E5B9ull;
    x ^= x >> 31;
    return (unsigned char)(x * 0x94D049BB133111EBull >> 56);
}

// Write / check PatternByte(seed, i) over the first size bytes of h through
// a pin, so that relocation running meanwhile cannot move them mid-way.
// False if h cannot be pinned (or, for the check, the bytes differ).
inline bool WritePatternPinned(ml_arena *a, ml_handle h, size_t size, uint64_t seed) {
    void *p;
    if (ml_pin(a, h, &p) != 0) return false;
    for (size_t i = 0; i < size; i++) ((unsigned char *)p)[i] = PatternByte(seed, i);
    ml_unpin(a, h);
    return true;
}

inline bool PatternPinnedIntact(ml_arena *a, ml_handle h, size_t size, uint64_t seed) {
    void *p;
    if (ml_pin(a, h, &p) != 0) return false;
    bool ok = true;
    for (size_t i = 0; i < size && ok; i++) ok = ((unsigned char *)p)[i] == PatternByte(seed, i);
    ml_unpin(a, h);
    return ok;
}

// Resident size of this process, KiB (-1 if unknown).
inline long RssKiB() {
    std::ifstream f("/proc/self/status");
    std::string line;
    while (std::getline(f, line))
        if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
    return -1;
}

// Open file descriptors of this process.
inline int OpenFds() {
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    while (d && readdir(d)) n++;
    if (d) closedir(d);
    return n;
}

// Paging counters (paging suites).
inline ml_paging_stats PStats(ml_arena *a) {
    ml_paging_stats st;
    EXPECT_EQ(ml_paging_stats_get(a, &st), 0);
    return st;
}

// The churn that the groups tests run beside their workers: until stop,
// every `pause` one of n groups at random is freed whole, or destroyed and
// created again under its name (gids[k] then names the new one). Codes the
// header does not allow go to report(what, rc).
template <class Report>
void ChurnGroups(ml_arena *a, std::atomic<ml_group> *gids, const char *const *names, int n, uint64_t seed,
                 std::chrono::microseconds pause, const std::atomic<bool> &stop, Report report) {
    std::mt19937_64 rng(seed);
    while (!stop) {
        int k = (int)(rng() % (uint64_t)n);
        ml_group g = gids[k];
        if (rng() % 2) {
            size_t freed;
            int rc = ml_group_free_all(a, g, &freed);
            if (rc != 0 && rc != -EBUSY) report("free_all", rc);
        } else {
            int rc = ml_group_destroy(a, g);
            if (rc != 0 && rc != -EBUSY) report("destroy", rc);
            if (rc == 0) {
                ml_group ng;
                rc = ml_group_create(a, names[k], &ng);
                if (rc != 0) report("recreate", rc);
                gids[k] = ng;
            }
        }
        std::this_thread::sleep_for(pause);
    }
}

#endif
