// Paging under concurrency (meant for --config=tsan as much as for a plain
// run): worker threads share a set of blobs in a tiny SlowLane and read,
// write, pin, prefetch, evict, free and reallocate them while the policy
// thread (every millisecond, cold after a few) compresses and evicts in the
// background; every byte is checked at the end. Also: two threads touching
// the same evicted handle at once both get the right data; page-ins of
// different handles read at the same time, and get through a long eviction
// batch or prefetch; destroying an
// arena while its policy thread is evicting shuts down cleanly.
//
// Contents are self-describing: a blob starts with a header (slot, version,
// length) and the rest is a pattern of (slot, version), so a reader that
// sees any complete version can check every byte of it. ml_read and ml_write
// claim the entry, so each sees or replaces a whole version; pointer readers
// and writers (through ml_pin) hold the slot's lock, as the header asks of a
// program that shares bytes between threads.
#include <dirent.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <shared_mutex>
#include <string>
#include <thread>
#include <vector>

#include "fault_io.h"
#include "test_util.h"

namespace {

#if defined(__SANITIZE_THREAD__)
constexpr int kScale = 3;
#elif defined(__SANITIZE_ADDRESS__)
constexpr int kScale = 2;
#else
constexpr int kScale = 1;
#endif

struct Hdr {
    uint32_t slot;
    uint32_t version;
    uint64_t len;
};

uint64_t Key(uint32_t slot, uint32_t version) { return (uint64_t)slot << 32 | version; }

// The pattern of (slot, version); two versions in three compress well.
void Fill(uint32_t slot, uint32_t version, unsigned char *p, size_t n) {
    Hdr h{slot, version, n};
    memcpy(p, &h, sizeof h);
    uint64_t k = Key(slot, version);
    bool text = version % 3 != 0;
    for (size_t i = sizeof h; i < n; i++)
        p[i] = text ? (unsigned char)('a' + (i / 7 + k) % 16) : PatternByte(k, i);
}

// Checks a whole copy: its own header, then every byte. Returns "" or why not.
std::string Check(const unsigned char *p, size_t n, uint32_t slot) {
    Hdr h;
    if (n < sizeof h) return "short";
    memcpy(&h, p, sizeof h);
    if (h.slot != slot) return "header names slot " + std::to_string(h.slot);
    if (h.len != n) return "header length " + std::to_string(h.len) + " for " + std::to_string(n) + " bytes";
    std::vector<unsigned char> want(n);
    Fill(slot, h.version, want.data(), n);
    if (memcmp(p, want.data(), n) == 0) return "";
    size_t i = 0;
    while (p[i] == want[i]) i++;
    return "byte " + std::to_string(i) + " of version " + std::to_string(h.version) + " differs";
}

ml_config TinyConfig(int engine) {
    ml_config c;
    ml_config_init(&c);
    c.fast_lane_size = 1 << 20;
    c.slow_lane_size = 2 << 20;
    c.swap_size = 256 << 20;
    c.max_handles = 1 << 16;
    c.io_engine = engine;
    return c;
}

using ArenaPtr = std::unique_ptr<ml_arena, void (*)(ml_arena *)>;

// An arena whose engines go through f (which must outlive it), for the tests
// that hold or slow the disk; without the compressed stage, evictions write.
ArenaPtr FaultArena(FaultIO &f, int engine, ml_config c) {
    f.which = engine;
    c.compressed_stage = false;
    return ArenaPtr(f.Create(&c), ml_arena_destroy);
}

// A new allocation of n bytes holding version 1 of slot's pattern.
void Written(ml_arena *a, uint32_t slot, size_t n, ml_handle *h) {
    std::vector<unsigned char> buf(n);
    Fill(slot, 1, buf.data(), n);
    ASSERT_EQ(ml_alloc(a, n, h), 0);
    ASSERT_EQ(ml_write(a, *h, 0, buf.data(), n), 0);
}

// One shared blob. `h` is the current handle (atomic: readers load it with
// no lock and may find it stale); `version` and `size` change only under
// the exclusive lock.
struct Slot {
    std::shared_mutex mu;
    std::atomic<uint64_t> h{0};
    uint32_t version = 0;
    size_t size = 0;
};

struct Counts {
    std::atomic<long> reads{0}, pinned_reads{0}, writes{0}, prefetched{0}, frees{0}, reallocs{0}, evicts{0},
        stale{0}, no_room{0};
};

class Shared {
  public:
    Shared(ml_arena *a, size_t nslots) : a_(a), slots_(nslots) {}

    size_t RandomSize(std::mt19937_64 &r) { return (16 << 10) + r() % (80 << 10); }

    // Even slots are written only through ml_write (and realloc), so ml_read
    // may read them with no lock; odd ones also through pinned pointers.
    static bool ClaimOnly(uint32_t i) { return i % 2 == 0; }

    // Allocate and fill the blob of slot i (exclusive lock held or no
    // other thread yet).
    void Make(uint32_t i, size_t size) {
        Slot &s = slots_[i];
        ml_handle h;
        int rc;
        // Other threads' pins and page-ins in flight can hold much of the
        // lane for a moment: -ENOMEM is counted (and bounded), then retried.
        for (int tries = 0; (rc = ml_alloc(a_, size, &h)) == -ENOMEM && tries < 100; tries++) {
            c.no_room++;
            std::this_thread::yield();
        }
        ASSERT_EQ(rc, 0) << "alloc " << size << ": " << ml_strerror(rc);
        s.version++;
        s.size = size;
        std::vector<unsigned char> buf(size);
        Fill(i, s.version, buf.data(), size);
        ASSERT_EQ(ml_write(a_, h, 0, buf.data(), size), 0);
        s.h.store(h.bits, std::memory_order_release);
    }

    // A pointer kept across other threads' page-ins: pinned.
    void PinnedRead(std::mt19937_64 &r) {
        uint32_t i = (uint32_t)(r() % slots_.size());
        Slot &s = slots_[i];
        std::shared_lock<std::shared_mutex> lk(s.mu);
        ml_handle h{s.h.load(std::memory_order_relaxed)};
        void *p = nullptr;
        int rc = ml_pin(a_, h, r() % 2 ? &p : nullptr);
        if (rc == -ENOMEM) {
            c.no_room++;
            return;
        }
        ASSERT_EQ(rc, 0) << "ml_pin: " << ml_strerror(rc);
        if (!p) p = ml_get(a_, h);  // valid while pinned
        ASSERT_NE(p, nullptr);
        EXPECT_EQ(ml_handle_state(a_, h), ML_STATE_SLOW) << "pinned, so resident";
        std::string why = Check((const unsigned char *)p, s.size, i);
        Hdr hd;
        memcpy(&hd, p, sizeof hd);
        EXPECT_EQ(hd.version, s.version) << "slot " << i;
        std::this_thread::yield();  // let the policy thread try to move it
        EXPECT_EQ(Check((const unsigned char *)p, s.size, i), why);
        ASSERT_EQ(ml_unpin(a_, h), 0);
        ASSERT_EQ(why, "") << "pinned read of slot " << i;
        c.pinned_reads++;
    }

    // A new version: through ml_write, or through a pinned pointer.
    void Write(std::mt19937_64 &r) {
        uint32_t i = (uint32_t)(r() % slots_.size());
        Slot &s = slots_[i];
        std::unique_lock<std::shared_mutex> lk(s.mu);
        ml_handle h{s.h.load(std::memory_order_relaxed)};
        std::vector<unsigned char> buf(s.size);
        Fill(i, s.version + 1, buf.data(), s.size);
        if (ClaimOnly(i) || r() % 2) {
            int rc = ml_write(a_, h, 0, buf.data(), buf.size());
            if (rc == -ENOMEM) {
                c.no_room++;
                return;
            }
            ASSERT_EQ(rc, 0) << "ml_write: " << ml_strerror(rc);
        } else {
            void *p;
            int rc = ml_pin(a_, h, &p);
            if (rc == -ENOMEM) {
                c.no_room++;
                return;
            }
            ASSERT_EQ(rc, 0) << "ml_pin: " << ml_strerror(rc);
            memcpy(p, buf.data(), buf.size());
            ASSERT_EQ(ml_unpin(a_, h), 0);
        }
        s.version++;
        c.writes++;
    }

    // Free and allocate anew (a new handle: the old one is stale for good).
    void Replace(std::mt19937_64 &r) {
        uint32_t i = (uint32_t)(r() % slots_.size());
        Slot &s = slots_[i];
        std::unique_lock<std::shared_mutex> lk(s.mu);
        ml_handle h{s.h.load(std::memory_order_relaxed)};
        ASSERT_EQ(ml_free(a_, h), 0);
        ASSERT_EQ(ml_handle_state(a_, h), ML_STATE_FREED);
        Make(i, RandomSize(r));
        c.frees++;
    }

    // Resize behind the same handle, then write the new version whole.
    void Realloc(std::mt19937_64 &r) {
        uint32_t i = (uint32_t)(r() % slots_.size());
        Slot &s = slots_[i];
        std::unique_lock<std::shared_mutex> lk(s.mu);
        ml_handle h{s.h.load(std::memory_order_relaxed)};
        size_t n = RandomSize(r);
        int rc = ml_realloc(a_, h, n);
        if (rc == -ENOMEM) {
            c.no_room++;
            return;
        }
        ASSERT_EQ(rc, 0) << "ml_realloc: " << ml_strerror(rc);
        // Until the write below, a reader may see the new size with the old
        // version's bytes: readers check the header's length first.
        std::vector<unsigned char> buf(n);
        Fill(i, s.version + 1, buf.data(), n);
        for (int tries = 0; (rc = ml_write(a_, h, 0, buf.data(), n)) == -ENOMEM && tries < 100; tries++) {
            c.no_room++;
            std::this_thread::yield();
        }
        ASSERT_EQ(rc, 0) << "ml_write after realloc: " << ml_strerror(rc);
        s.version++;
        s.size = n;
        c.reallocs++;
    }

    void Prefetch(std::mt19937_64 &r) {
        std::vector<ml_handle> hs;
        for (int k = 0, n = 1 + (int)(r() % 6); k < n; k++)
            hs.push_back(ml_handle{slots_[r() % slots_.size()].h.load(std::memory_order_acquire)});
        int rc = ml_prefetch(a_, hs.data(), hs.size());
        if (rc == -ENOMEM) {
            c.no_room++;
            return;
        }
        ASSERT_GE(rc, 0) << "ml_prefetch: " << ml_strerror(rc);
        ASSERT_LE(rc, (int)hs.size());
        c.prefetched += rc;
    }

    void Evict(std::mt19937_64 &r) {
        ml_handle h{slots_[r() % slots_.size()].h.load(std::memory_order_acquire)};
        int rc = r() % 2 ? ml_evict(a_, h) : ml_compress(a_, h);
        // Pinned by a reader, already cold, freed meanwhile, no room for a
        // compressed record, or incompressible: all fine here.
        ASSERT_TRUE(rc == 0 || rc == -EBUSY || rc == -EALREADY || rc == -ESTALE || rc == -ENOMEM ||
                    rc == -EMSGSIZE)
            << ml_strerror(rc);
        if (rc == 0) c.evicts++;
    }

    // ml_read: a whole version of the slot (ml_write and realloc claim the
    // entry, as ml_read does), or -ESTALE when it was freed meanwhile. Of a
    // realloc in progress it may see the new size with the old version's
    // bytes: the header's length tells. Slots that are also written through
    // pointers are read under their lock (a pointer write claims nothing).
    void Read(std::mt19937_64 &r) {
        uint32_t i = (uint32_t)(r() % slots_.size());
        std::shared_lock<std::shared_mutex> lk(slots_[i].mu, std::defer_lock);
        if (!ClaimOnly(i)) lk.lock();
        ml_handle h{slots_[i].h.load(std::memory_order_acquire)};
        std::vector<unsigned char> buf(256 << 10);
        int n = ml_read(a_, h, 0, buf.data(), buf.size());
        if (n == -ESTALE) {
            c.stale++;
            return;
        }
        ASSERT_GT(n, (int)sizeof(Hdr)) << "ml_read: " << ml_strerror(n);
        Hdr hd;
        memcpy(&hd, buf.data(), sizeof hd);
        ASSERT_EQ(hd.slot, i);
        size_t m = std::min<size_t>(hd.len, (size_t)n);
        std::vector<unsigned char> want(hd.len);
        Fill(i, hd.version, want.data(), hd.len);
        ASSERT_EQ(memcmp(buf.data(), want.data(), m), 0) << "slot " << i << " version " << hd.version;
        c.reads++;
    }

    void Worker(uint64_t seed, int ops) {
        std::mt19937_64 r(seed);
        for (int k = 0; k < ops && !::testing::Test::HasFatalFailure(); k++) {
            unsigned x = r() % 100;
            if (x < 30)
                Read(r);
            else if (x < 50)
                PinnedRead(r);
            else if (x < 65)
                Write(r);
            else if (x < 75)
                Prefetch(r);
            else if (x < 82)
                Replace(r);
            else if (x < 90)
                Realloc(r);
            else
                Evict(r);
        }
    }

    // With the workers stopped (the policy thread still runs): every byte of
    // every slot, through ml_read, then through ml_get.
    void VerifyAll() {
        for (uint32_t i = 0; i < slots_.size(); i++) {
            Slot &s = slots_[i];
            ml_handle h{s.h.load()};
            std::vector<unsigned char> buf(s.size), want(s.size);
            Fill(i, s.version, want.data(), s.size);
            ASSERT_EQ(ml_read(a_, h, 0, buf.data(), buf.size()), (int)s.size) << "slot " << i;
            ASSERT_TRUE(buf == want) << "slot " << i << ": " << Check(buf.data(), s.size, i);
        }
        for (uint32_t i = 0; i < slots_.size(); i++) {
            Slot &s = slots_[i];
            ml_handle h{s.h.load()};
            std::vector<unsigned char> want(s.size);
            Fill(i, s.version, want.data(), s.size);
            void *p;  // pinned: the policy thread may relocate at any moment
            ASSERT_EQ(ml_pin(a_, h, &p), 0) << "slot " << i;
            EXPECT_EQ(memcmp(p, want.data(), s.size), 0) << "slot " << i;
            ASSERT_EQ(ml_unpin(a_, h), 0);
        }
    }

    void FreeAll() {
        for (auto &s : slots_) ASSERT_EQ(ml_free(a_, ml_handle{s.h.load()}), 0);
    }

    Counts c;

  private:
    ml_arena *a_;
    std::vector<Slot> slots_;
};

std::string EngineName(const ::testing::TestParamInfo<int> &i) {
    return i.param == 1 ? "IoUring" : "PreadPwrite";
}

class Engines : public ::testing::TestWithParam<int> {};
INSTANTIATE_TEST_SUITE_P(Paging, Engines, ::testing::Values(1, 2), EngineName);

// The long-batch tests: an arena on a fault engine (FaultArena) with a
// SlowLane of slow_mib MiB holding `count` written blobs of kBlob bytes,
// hs[i] holding pattern i. Members in this order, so that the fault engine
// outlives the arena.
class LongBatch : public ::testing::TestWithParam<int> {
  protected:
    static constexpr size_t kBlob = 256 << 10;
    FaultIO f;
    ArenaPtr a{nullptr, ml_arena_destroy};
    std::vector<ml_handle> hs;
    void Make(size_t count, size_t slow_mib = 32, unsigned io_depth = 0) {
        ml_config c = TinyConfig(GetParam());
        c.slow_lane_size = slow_mib << 20;
        if (io_depth) c.io_queue_depth = io_depth;
        a = FaultArena(f, GetParam(), c);
        ASSERT_NE(a, nullptr);
        hs.resize(count);
        for (uint32_t i = 0; i < count; i++) ASSERT_NO_FATAL_FAILURE(Written(a.get(), i, kBlob, &hs[i]));
    }
    // A thread evicting hs[0..count) with ml_evict_many (into *evicted) on
    // a slow disk, 3 ms a write. Start it while no engine runs (the delay is
    // set first).
    std::thread SlowBatch(size_t count, int *evicted) {
        f.write_delay_us = 3000;
        return std::thread([this, count, evicted] { *evicted = ml_evict_many(a.get(), hs.data(), count); });
    }
    void AccessToTheFirstVictim(bool clean);
};
INSTANTIATE_TEST_SUITE_P(Paging, LongBatch, ::testing::Values(1, 2), EngineName);

}  // namespace

TEST_P(Engines, WorkersAndPolicyThreadShareBlobsInATinyLane) {
    ml_config c = TinyConfig(GetParam());
    c.policy_check_interval_ms = 1;
    c.cold_after_ms = 3;
    ArenaGuard a(&c);
    ASSERT_NE(a.a, nullptr);
    const size_t nslots = 96;  // ~5 MiB of blobs in a 2 MiB lane
    Shared sh(a, nslots);
    std::mt19937_64 r(GetParam());
    for (uint32_t i = 0; i < nslots; i++) {
        sh.Make(i, sh.RandomSize(r));
        if (::testing::Test::HasFatalFailure()) return;
    }
    const int nthreads = 4, ops = 2500 / kScale;
    std::vector<std::thread> ts;
    for (int t = 0; t < nthreads; t++) ts.emplace_back([&sh, t, ops] { sh.Worker(1000 + t, ops); });
    for (auto &t : ts) t.join();
    if (::testing::Test::HasFatalFailure()) return;
    // The policy thread is still running: pins for pointers.
    ml_paging_stats ps = PStats(a);
    EXPECT_GT(ps.evicted + ps.compressed, 0u);
    EXPECT_GT(ps.page_ins, 0u);
    EXPECT_EQ(ps.checksum_failures, 0u);
    EXPECT_EQ(ps.io_errors, 0u);
    sh.VerifyAll();
    if (::testing::Test::HasFatalFailure()) return;
    long total = nthreads * ops;
    printf(
        "%s: %ld ops: %ld reads, %ld pinned reads, %ld writes, %ld prefetched, %ld replaced, %ld reallocs, "
        "%ld evicts, %ld stale, %ld without room; pager: %llu evicted, %llu compressed, %llu page-ins\n",
        GetParam() == 1 ? "io_uring" : "pread/pwrite", total, sh.c.reads.load(), sh.c.pinned_reads.load(),
        sh.c.writes.load(), sh.c.prefetched.load(), sh.c.frees.load(), sh.c.reallocs.load(),
        sh.c.evicts.load(), sh.c.stale.load(), sh.c.no_room.load(), (unsigned long long)ps.evicted,
        (unsigned long long)ps.compressed, (unsigned long long)ps.page_ins);
    // -ENOMEM under concurrency (pins, other threads' claims) is allowed,
    // but it must stay the exception.
    EXPECT_LT(sh.c.no_room.load(), total / 20);
    sh.FreeAll();
    ps = PStats(a);
    EXPECT_EQ(ps.now_evicted, 0u);
    EXPECT_EQ(ps.now_compressed, 0u);
    EXPECT_EQ(ps.swap_used, 0u);
    ml_stats st;
    ASSERT_EQ(ml_stats_get(a, &st), 0);
    EXPECT_EQ(st.handles_live, 0u);
}

// Two threads hit the same cold handle at the same moment: one pages it in,
// the other waits for it (or reads the cold copy); both see every byte.
TEST_P(Engines, TwoThreadsTouchTheSameEvictedHandle) {
    ml_config c = TinyConfig(GetParam());
    ArenaGuard a(&c);
    ASSERT_NE(a.a, nullptr);
    std::vector<ml_handle> hs;
    std::vector<size_t> sizes;
    std::mt19937_64 r(7);
    for (uint32_t i = 0; i < 24; i++) {  // ~1.5 MiB: they all fit once back
        size_t n = (16 << 10) + r() % (100 << 10);
        ml_handle h;
        ASSERT_EQ(ml_alloc(a, n, &h), 0);
        std::vector<unsigned char> buf(n);
        Fill(i, 1, buf.data(), n);
        ASSERT_EQ(ml_write(a, h, 0, buf.data(), n), 0);
        hs.push_back(h);
        sizes.push_back(n);
    }
    const int rounds = 300 / kScale;
    std::atomic<int> go{0}, done{0};
    std::atomic<bool> stop{false};
    std::atomic<uint64_t> cur{0};
    std::atomic<int> failures{0};
    // Each round: the main thread makes one handle cold, then releases both
    // threads at once; each touches it in its own way and checks it.
    auto toucher = [&](int who) {
        std::mt19937_64 rr(who);
        for (int round = 1; round <= rounds; round++) {
            while (go.load(std::memory_order_acquire) < round) {
                if (stop.load()) return;
                std::this_thread::yield();
            }
            uint64_t v = cur.load();
            uint32_t i = (uint32_t)(v >> 32);
            ml_handle h = hs[i];
            size_t n = sizes[i];
            std::vector<unsigned char> buf(n);
            std::string why;
            switch ((rr() + (unsigned)who) % 4) {
                case 0: {  // ml_get: brings it back
                    const void *p = ml_get(a, h);
                    if (!p)
                        why = "ml_get failed";
                    else
                        why = Check((const unsigned char *)p, n, i);
                    break;
                }
                case 1: {  // pinned
                    void *p;
                    int rc = ml_pin(a, h, &p);
                    if (rc)
                        why = std::string("ml_pin: ") + ml_strerror(rc);
                    else {
                        why = Check((const unsigned char *)p, n, i);
                        ml_unpin(a, h);
                    }
                    break;
                }
                case 2: {  // a cold copy, or the resident data
                    int got = ml_read(a, h, 0, buf.data(), n);
                    if (got != (int)n)
                        why = "ml_read returned " + std::to_string(got);
                    else
                        why = Check(buf.data(), n, i);
                    break;
                }
                default: {  // prefetch, then get
                    int rc = ml_prefetch(a, &h, 1);
                    if (rc < 0 || rc > 1) why = "ml_prefetch returned " + std::to_string(rc);
                    const void *p = ml_get(a, h);
                    if (!p)
                        why = "ml_get after prefetch failed";
                    else if (why.empty())
                        why = Check((const unsigned char *)p, n, i);
                    break;
                }
            }
            if (!why.empty()) {
                failures++;
                ADD_FAILURE() << "round " << round << " thread " << who << " slot " << i << ": " << why;
            }
            done.fetch_add(1);
        }
    };
    std::thread t1(toucher, 1), t2(toucher, 2);
    for (int round = 1; round <= rounds && !failures.load(); round++) {
        uint32_t i = (uint32_t)(r() % hs.size());
        int rc = round % 3 == 0 ? ml_compress(a, hs[i]) : ml_evict(a, hs[i]);
        if (rc != 0 && rc != -EALREADY) {
            ADD_FAILURE() << "round " << round << ": " << ml_strerror(rc);
            break;
        }
        ml_state st = ml_handle_state(a, hs[i]);
        EXPECT_TRUE(round % 3 ? st == ML_STATE_EVICTED : st == ML_STATE_COMPRESSED || st == ML_STATE_EVICTED)
            << ml_state_name(st);
        cur.store((uint64_t)i << 32);
        go.store(round, std::memory_order_release);
        while (done.load() < 2 * round && !failures.load()) std::this_thread::yield();
    }
    stop = true;
    t1.join();
    t2.join();
    EXPECT_EQ(failures.load(), 0);
    EXPECT_GT(PStats(a).page_ins, 0u);
    EXPECT_EQ(PStats(a).checksum_failures, 0u);
    EXPECT_EQ(ml__arena_check(a), 0);
}

// Page-ins of different handles do not wait for each other: each reads and
// decodes with a reader of its own, outside the pager lock. The engine holds
// the first read until a second one has started; were page-ins serialised
// (the pager lock held across the read), the second could not start and the
// first would give up after the gate's 10 seconds, having seen one read.
TEST_P(Engines, PageInsOfDifferentHandlesReadAtTheSameTime) {
    FaultIO f;  // outlives the arena below (its engines call into f)
    ml_config c = TinyConfig(GetParam());
    ArenaPtr a = FaultArena(f, GetParam(), c);
    ASSERT_NE(a, nullptr);
    const size_t n = 64 << 10;
    ml_handle hs[2];
    for (uint32_t i = 0; i < 2; i++) {
        ASSERT_NO_FATAL_FAILURE(Written(a.get(), i, n, &hs[i]));
        ASSERT_EQ(ml_evict(a.get(), hs[i]), 0);
        ASSERT_EQ(ml_handle_state(a.get(), hs[i]), ML_STATE_EVICTED);
    }
    f.read_gate_ms = 10000;  // (no engine runs now: set before the threads start)
    std::string why[2];
    auto touch = [&](int i) {
        const unsigned char *p = (const unsigned char *)ml_get_ro(a.get(), hs[i]);
        why[i] = p ? Check(p, n, (uint32_t)i) : std::string("ml_get_ro returned NULL");
    };
    std::thread t0(touch, 0), t1(touch, 1);
    t0.join();
    t1.join();
    EXPECT_EQ(why[0], "");
    EXPECT_EQ(why[1], "");
    EXPECT_EQ(f.max_reads_at_once, 2) << "the second page-in waited for the first one's read";
    EXPECT_EQ(PStats(a.get()).page_ins, 2u);
    EXPECT_EQ(PStats(a.get()).checksum_failures, 0u);
}

// ml_read of a cold handle reads and decodes without the pager lock too: a
// page-in of another handle reads at the same time (the engine holds the
// first read until a second one starts, as above).
TEST_P(Engines, ColdReadAndPageInReadAtTheSameTime) {
    FaultIO f;  // outlives the arena below (its engines call into f)
    ml_config c = TinyConfig(GetParam());
    ArenaPtr a = FaultArena(f, GetParam(), c);
    ASSERT_NE(a, nullptr);
    const size_t n = 64 << 10;
    ml_handle hs[2];
    for (uint32_t i = 0; i < 2; i++) {
        ASSERT_NO_FATAL_FAILURE(Written(a.get(), i, n, &hs[i]));
        ASSERT_EQ(ml_evict(a.get(), hs[i]), 0);
    }
    f.read_gate_ms = 10000;  // (no engine runs now: set before the threads start)
    std::vector<unsigned char> copy(n);
    int read_rc = 0;
    std::string why;
    std::thread reader([&] { read_rc = ml_read(a.get(), hs[0], 0, copy.data(), n); });
    std::thread toucher([&] {
        const unsigned char *p = (const unsigned char *)ml_get_ro(a.get(), hs[1]);
        why = p ? Check(p, n, 1) : std::string("ml_get_ro returned NULL");
    });
    reader.join();
    toucher.join();
    EXPECT_EQ(read_rc, (int)n);
    EXPECT_EQ(Check(copy.data(), n, 0), "");
    EXPECT_EQ(why, "");
    EXPECT_EQ(f.max_reads_at_once, 2) << "one read waited for the other";
    EXPECT_EQ(ml_handle_state(a.get(), hs[0]), ML_STATE_EVICTED) << "ml_read leaves it cold";
    // The decoded copy is cached: reading again reads nothing from disk.
    const int reads = f.Reads();
    f.read_gate_ms = 0;
    EXPECT_EQ(ml_read(a.get(), hs[0], 0, copy.data(), n), (int)n);
    EXPECT_EQ(f.Reads(), reads);
    EXPECT_EQ(Check(copy.data(), n, 0), "");
}

// A long eviction batch lets a waiting page-in through between chunks: the
// disk takes 3 ms a write, a thread evicts 48 blobs of 256 KiB (12 MiB) in
// one ml_evict_many, and the main thread touches another evicted blob once
// the batch has begun. Its page-in must finish before the batch does (were
// the pager lock held for the whole batch, it would see all 48 writes).
TEST_P(LongBatch, PageInGetsThroughALongEvictionBatch) {
    const int kBatch = 48;
    ASSERT_NO_FATAL_FAILURE(Make(kBatch + 1));
    const size_t n = kBlob;
    ASSERT_EQ(ml_evict(a.get(), hs[kBatch]), 0);  // the one the main thread will touch
    const int before = f.Writes();
    int evicted = -1;
    std::thread batch = SlowBatch(kBatch, &evicted);
    while (f.Writes() < before + 2) std::this_thread::yield();
    const unsigned char *p = (const unsigned char *)ml_get_ro(a.get(), hs[kBatch]);
    const int seen = f.Writes() - before;
    std::string why = p ? Check(p, n, (uint32_t)kBatch) : std::string("ml_get_ro returned NULL");
    batch.join();
    EXPECT_EQ(why, "");
    EXPECT_EQ(evicted, kBatch);
    EXPECT_LT(seen, kBatch) << "the page-in waited for the whole batch";
    for (int i = 0; i < kBatch; i++) EXPECT_EQ(ml_handle_state(a.get(), hs[i]), ML_STATE_EVICTED) << i;
    EXPECT_EQ(ml__arena_check(a.get()), 0);
}

// A batch gives each victim back as soon as its record is on disk, so an
// access to one of its first victims waits for that write (and the next
// hand-over), not for the whole batch: before, every victim stayed claimed
// until the batch ended. A victim with a clean copy on disk (brought back
// read-only, unchanged since) is evicted without a write and given back at
// once.
void LongBatch::AccessToTheFirstVictim(bool clean) {
    const int kBatch = 48;
    // A victim is given back when its write is reaped. Until 0.7, with the
    // default ring (32), the first reap came only once the ring was full:
    // hs[0] showed EVICTED after 32 of the 48 writes, leaving ~48 ms for this
    // thread to notice and get through a hand-over, which a loaded or
    // sanitized run missed; so this test runs a shallow ring (and
    // AVictimGoesBackRightAfterItsWriteWithTheDefaultRing the default one).
    ASSERT_NO_FATAL_FAILURE(Make(kBatch, 32, 4));
    ASSERT_EQ(ml_evict(a.get(), hs[0]), 0);  // opens the engine
    // back writable (its record is dropped), or read-only (kept as a clean copy)
    ASSERT_NE(clean ? ml_get_ro(a.get(), hs[0]) : ml_get(a.get(), hs[0]), nullptr);
    const int before = f.Writes();
    int evicted = -1;
    std::thread batch = SlowBatch(kBatch, &evicted);
    // (the state is read without a claim: it shows once the write is reaped)
    while (ml_handle_state(a.get(), hs[0]) != ML_STATE_EVICTED) std::this_thread::yield();
    const unsigned char *p = (const unsigned char *)ml_get_ro(a.get(), hs[0]);
    const int seen = f.Writes() - before;
    std::string why = p ? Check(p, kBlob, 0) : std::string("ml_get_ro returned NULL");
    batch.join();
    const int writes = clean ? kBatch - 1 : kBatch;
    EXPECT_EQ(why, "");
    EXPECT_LT(seen, writes) << "the access waited for the whole batch";
    EXPECT_EQ(f.Writes() - before, writes);
    EXPECT_EQ(evicted, kBatch);
    for (int i = 1; i < kBatch; i++) EXPECT_EQ(ml_handle_state(a.get(), hs[i]), ML_STATE_EVICTED) << i;
    EXPECT_EQ(ml__arena_check(a.get()), 0);
}

TEST_P(LongBatch, AccessToAVictimAlreadyWrittenGetsThroughTheBatch) { AccessToTheFirstVictim(false); }

TEST_P(LongBatch, AccessToACleanVictimGetsThroughTheBatch) { AccessToTheFirstVictim(true); }

// The batch looks at the ring for completed writes before each victim, so a
// victim goes back right after its own write even with the default ring of
// 32: until 0.7 completions were reaped only once the ring was full (or the
// buffers ran out, or a page-in waited for the pager lock), and hs[0] came
// back after 32 of the 48 writes: an adopter's render thread waited 0.6 s
// to pin an asset the policy thread had picked.
TEST_P(LongBatch, AVictimGoesBackRightAfterItsWriteWithTheDefaultRing) {
    const int kBatch = 48;
    ASSERT_NO_FATAL_FAILURE(Make(kBatch));
    ASSERT_EQ(ml_evict(a.get(), hs[0]), 0);  // opens the engine
    ASSERT_NE(ml_get(a.get(), hs[0]), nullptr);
    const int before = f.Writes();
    int evicted = -1;
    std::thread batch = SlowBatch(kBatch, &evicted);
    while (ml_handle_state(a.get(), hs[0]) != ML_STATE_EVICTED) std::this_thread::yield();
    const int seen = f.Writes() - before;
    const unsigned char *p = (const unsigned char *)ml_get_ro(a.get(), hs[0]);
    std::string why = p ? Check(p, kBlob, 0) : std::string("ml_get_ro returned NULL");
    batch.join();
    EXPECT_EQ(why, "");
    EXPECT_LE(seen, 16) << "writes done when the first victim went back (32 until 0.7)";
    EXPECT_EQ(evicted, kBatch);
    EXPECT_EQ(f.Writes() - before, kBatch);
    EXPECT_EQ(ml__arena_check(a.get()), 0);
}

// Records too large for the bounce buffers get buffers of their own, and a
// batch holds at most 16 MiB of them in flight (or one, however large):
// until 0.7 it compressed a ring's worth before reaping any, and evicting
// ten 8 MiB blobs of random bytes took the process 88 MiB over its size.
// Completions show only to a reap that waits (a slow disk), so the batch
// must wait for the oldest writes itself.
TEST_P(Engines, ABatchHoldsAtMost16MiBOfLargeRecordsInFlight) {
    FaultIO f;
    f.only_waiting_reaps = true;
    ml_config c = TinyConfig(GetParam());
    c.slow_lane_size = 64 << 20;
    ArenaPtr a = FaultArena(f, GetParam(), c);
    ASSERT_NE(a, nullptr);
    std::vector<ml_handle> hs(10);
    std::mt19937_64 r(5);
    for (auto &h : hs) {
        ASSERT_EQ(ml_alloc(a.get(), 4 << 20, &h), 0);
        uint64_t *p = (uint64_t *)ml_get(a.get(), h);
        for (size_t i = 0; i < (4u << 20) / 8; i++) p[i] = r();  // incompressible
    }
    ASSERT_EQ(ml_evict_many(a.get(), hs.data(), hs.size()), (int)hs.size());
    EXPECT_EQ(f.writes, (int)hs.size());
    EXPECT_GT(f.max_write_bytes_held, 12u << 20) << "three records in flight at once";
    EXPECT_LE(f.max_write_bytes_held, 16u << 20);
    std::mt19937_64 again(5);
    for (auto &h : hs) {
        const uint64_t *p = (const uint64_t *)ml_get_ro(a.get(), h);
        ASSERT_NE(p, nullptr);
        size_t bad = 0;
        for (size_t i = 0; i < (4u << 20) / 8; i++) bad += p[i] != again();
        ASSERT_EQ(bad, 0u);
    }
    EXPECT_EQ(ml__arena_check(a.get()), 0);
}

// The policy thread's idle batch claims its victims 8 MiB at a time, so an
// access to one further down its list does not wait for all those before
// it: until 0.7 it claimed every idle blob for the whole batch, and a game's
// render thread waited 0.1 s to pin an asset picked last. The one pinned
// meanwhile stays: the batch skips it when its turn comes.
TEST_P(Engines, AnIdleBatchKeepsOnlyItsChunkAtWorkClaimed) {
    FaultIO f;
    ml_config c = TinyConfig(GetParam());
    c.slow_lane_size = 32 << 20;
    c.cold_after_ms = 200;
    ArenaPtr a = FaultArena(f, GetParam(), c);
    ASSERT_NE(a, nullptr);
    const int kCount = 64;  // 16 MiB of 256 KiB blobs: two chunks
    const size_t n = 256 << 10;
    std::vector<ml_handle> hs(kCount);
    for (int i = 0; i < kCount; i++) ASSERT_NO_FATAL_FAILURE(Written(a.get(), (uint32_t)i, n, &hs[i]));
    ASSERT_EQ(ml_maintain(a.get()), 0);  // their accesses are folded into their last-access times
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    ASSERT_NE(ml_get_ro(a.get(), hs[kCount - 1]), nullptr);  // used last: last of the coldest-first list
    ASSERT_EQ(ml_maintain(a.get()), 0);
    if (PStats(a.get()).evicted) GTEST_SKIP() << "this thread stalled for cold_after_ms: not idle as planned";
    std::this_thread::sleep_for(std::chrono::milliseconds(c.cold_after_ms + 50));
    f.write_delay_us = 3000;
    std::thread policy([&] { ml_maintain(a.get()); });
    while (f.Writes() == 0) std::this_thread::yield();
    const int at_start = f.Writes();
    void *p = nullptr;
    ASSERT_EQ(ml_pin(a.get(), hs[kCount - 1], &p), 0);
    const int seen = f.Writes();
    // (This thread descheduled between the two reads, while chunk 2 began:
    // not what is tested.)
    if (at_start > 4 && seen > kCount / 2) {
        ml_unpin(a.get(), hs[kCount - 1]);
        policy.join();
        GTEST_SKIP() << "stalled: " << at_start << " writes before the pin was tried";
    }
    std::string why = Check((const unsigned char *)p, n, kCount - 1);
    policy.join();
    EXPECT_EQ(why, "");
    EXPECT_LE(seen, kCount / 2) << "writes done when the pin got through (all until 0.7)";
    EXPECT_EQ(ml_handle_state(a.get(), hs[kCount - 1]), ML_STATE_SLOW) << "skipped: pinned";
    for (int i = 0; i < kCount - 1; i++) EXPECT_EQ(ml_handle_state(a.get(), hs[i]), ML_STATE_EVICTED) << i;
    EXPECT_EQ(f.Writes(), kCount - 1);
    ASSERT_EQ(ml_unpin(a.get(), hs[kCount - 1]), 0);
    EXPECT_EQ(ml__arena_check(a.get()), 0);
}

// Two batches and several page-ins interleave: one batch can run while the
// other is handed over. Each batch leaves out only the time it handed over
// itself, so the total stays within the wall time (a shared running total,
// subtracted by both, once wrapped evict_ns around 2^64; found in review).
TEST_P(LongBatch, EvictionTimeOfInterleavedBatchesStaysWithinWallTime) {
    const int kBatch = 24;
    ASSERT_NO_FATAL_FAILURE(Make(2 * kBatch + 4, 64));
    for (int k = 0; k < 4; k++) ASSERT_EQ(ml_evict(a.get(), hs[2 * kBatch + k]), 0);
    const int before = f.Writes();
    // (no engine runs now: set before the threads start)
    f.fail_open_from = f.opens;  // page-ins read under the pager lock
    f.write_delay_us = 3000;
    f.read_delay_us = 200000;
    const uint64_t ns0 = PStats(a.get()).evict_ns;
    auto t0 = std::chrono::steady_clock::now();
    std::thread first([&] { ml_evict_many(a.get(), hs.data(), kBatch); });
    while (f.Writes() < before + 1) std::this_thread::yield();
    std::thread second([&] { ml_evict_many(a.get(), hs.data() + kBatch, kBatch); });
    std::vector<std::thread> readers;
    for (int k = 0; k < 4; k++) {
        std::this_thread::sleep_for(std::chrono::milliseconds(30));
        readers.emplace_back([&, k] { EXPECT_NE(ml_get_ro(a.get(), hs[2 * kBatch + k]), nullptr); });
    }
    first.join();
    second.join();
    for (auto &t : readers) t.join();
    const uint64_t wall = (uint64_t)std::chrono::duration_cast<std::chrono::nanoseconds>(
                              std::chrono::steady_clock::now() - t0).count();
    const uint64_t evict_ns = PStats(a.get()).evict_ns - ns0;
    EXPECT_GT(evict_ns, 0u);
    EXPECT_LE(evict_ns, wall) << "evict_ns " << evict_ns << " of " << wall << " ns";
    EXPECT_EQ(ml__arena_check(a.get()), 0);
}

// Once a batch gives an evicted victim back, the program may free it while
// the batch still holds the victim's old lane space (until its next
// release). The lane map must not name that space after the freed slot: a
// freed slot's meta word has lost its born-in-SlowLane bit, so the ID would
// come out positive, an ID no handle of this arena ever had.
TEST_P(LongBatch, LaneMapNeverNamesSpaceAfterAFreedSlot) {
    const int kBatch = 48;
    ASSERT_NO_FATAL_FAILURE(Make(kBatch));
    ASSERT_EQ(ml_evict(a.get(), hs[0]), 0);  // opens the engine
    ASSERT_NE(ml_get(a.get(), hs[0]), nullptr);
    std::atomic<bool> stop{false};
    std::atomic<int> bogus{0}, maps{0};
    std::thread watcher([&] {
        while (!stop) {
            ml_lane_map(a.get(), ML_LANE_SLOW, [](const ml_extent_info *e, void *ctx) {
                if (e->kind == ML_EXTENT_BLOB && e->id > 0) ++*(std::atomic<int> *)ctx;
                return 0;
            }, &bogus);
            maps++;
        }
    });
    int evicted = -1;
    std::thread batch = SlowBatch(kBatch, &evicted);
    while (ml_handle_state(a.get(), hs[0]) != ML_STATE_EVICTED) std::this_thread::yield();
    EXPECT_EQ(ml_free(a.get(), hs[0]), 0);
    batch.join();
    stop = true;
    watcher.join();
    EXPECT_EQ(evicted, kBatch) << "the freed one was evicted before it was freed";
    EXPECT_GT(maps.load(), 0);
    EXPECT_EQ(bogus.load(), 0) << "a blob shown under a freed slot's (positive) ID";
    EXPECT_EQ(ml__arena_check(a.get()), 0);
}

// The pager's short calls count themselves as waiters too, so a long
// eviction batch lets them in as it lets page-ins in: freeing a cold entry,
// reading the paging statistics (the debug view's paging/stats), evicting
// or compressing one more entry. Each must be done before the batch is.
TEST_P(LongBatch, ShortPagerCallsGetThroughALongEvictionBatch) {
    const int kBatch = 48;
    ASSERT_NO_FATAL_FAILURE(Make(kBatch + 3));
    ml_handle cold = hs[kBatch], one = hs[kBatch + 1], two = hs[kBatch + 2];
    ASSERT_EQ(ml_evict(a.get(), cold), 0);
    const int before = f.Writes();
    int evicted = -1;
    std::thread batch = SlowBatch(kBatch, &evicted);
    std::vector<std::pair<const char *, int>> seen;  // writes the batch had made when each call returned
    auto after = [&](const char *what) { seen.push_back({what, f.Writes() - before}); };
    while (f.Writes() < before + 2) std::this_thread::yield();
    EXPECT_EQ(ml_free(a.get(), cold), 0);
    after("ml_free of an evicted entry");
    ml_paging_stats st;
    EXPECT_EQ(ml_paging_stats_get(a.get(), &st), 0);
    after("ml_paging_stats_get");
    EXPECT_EQ(ml_compress(a.get(), one), 0);
    after("ml_compress");
    EXPECT_EQ(ml_evict(a.get(), two), 0);
    after("ml_evict");
    batch.join();
    EXPECT_EQ(evicted, kBatch);
    for (auto &w : seen) EXPECT_LT(w.second, kBatch) << w.first << " waited for the whole batch";
    EXPECT_EQ(ml_handle_state(a.get(), one), ML_STATE_COMPRESSED);
    EXPECT_EQ(ml_handle_state(a.get(), two), ML_STATE_EVICTED);
    EXPECT_EQ(ml_handle_state(a.get(), cold), ML_STATE_FREED);
    EXPECT_EQ(ml__arena_check(a.get()), 0);
}

// evict_ns counts a batch's own work, not the time it spends handed over to
// a page-in. Here the page-in reads under the pager lock (no reader engine
// can be opened) from a disk that takes 300 ms a read, while the batch waits
// for the lock back: the batch's evict_ns must leave those 300 ms out.
TEST_P(LongBatch, EvictionTimeLeavesOutTheTimeHandedOver) {
    const int kBatch = 48;
    ASSERT_NO_FATAL_FAILURE(Make(kBatch + 1));
    const size_t n = kBlob;
    ASSERT_EQ(ml_evict(a.get(), hs[kBatch]), 0);  // opens the pager's engine
    const int before = f.Writes();
    // (no engine runs now: set before the thread starts)
    f.fail_open_from = f.opens;  // no reader engine: the page-in reads under the pager lock
    f.read_delay_us = 300000;
    const uint64_t ns0 = PStats(a.get()).evict_ns;
    auto t0 = std::chrono::steady_clock::now();
    int evicted = -1;
    std::thread batch = SlowBatch(kBatch, &evicted);
    while (f.Writes() < before + 2) std::this_thread::yield();
    const unsigned char *p = (const unsigned char *)ml_get_ro(a.get(), hs[kBatch]);
    batch.join();
    EXPECT_EQ(evicted, kBatch);
    const uint64_t wall = (uint64_t)std::chrono::duration_cast<std::chrono::nanoseconds>(
                              std::chrono::steady_clock::now() - t0).count();
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(Check(p, n, (uint32_t)kBatch), "");
    EXPECT_GE(f.injected, 1) << "a reader engine was refused";
    const uint64_t evict_ns = PStats(a.get()).evict_ns - ns0;
    EXPECT_GT(evict_ns, 0u);
    EXPECT_LE(evict_ns, wall - 250000000ull)
        << "evict_ns " << evict_ns / 1000000 << " ms of a " << wall / 1000000 << " ms batch";
}

// A batch hands the pager lock over to short calls only. Another batch that
// was waiting for the lock must not run its whole length inside that
// hand-over (holding up the first batch, whose unwritten victims stay
// claimed): it waits until the first batch has the lock back, and so ends
// after it. Here the hand-over is to a page-in that reads under the pager
// lock for 100 ms, while the second batch waits for the lock.
TEST_P(LongBatch, ABatchDoesNotRunInsideAnotherBatchsHandOver) {
    const int kBatch = 24;
    ASSERT_NO_FATAL_FAILURE(Make(2 * kBatch + 1, 64));
    ASSERT_EQ(ml_evict(a.get(), hs[2 * kBatch]), 0);  // opens the pager's engine
    const int before = f.Writes();
    // (no engine runs now: set before the threads start)
    f.fail_open_from = f.opens;  // no reader engine: the page-in reads under the pager lock
    f.write_delay_us = 3000;
    f.read_delay_us = 100000;
    std::atomic<int> order{0};
    int first_end = 0, second_end = 0, first_n = -1, second_n = -1;
    std::thread first([&] {
        first_n = ml_evict_many(a.get(), hs.data(), kBatch);
        first_end = ++order;
    });
    while (f.Writes() < before + 1) std::this_thread::yield();
    std::thread second([&] {
        second_n = ml_evict_many(a.get(), hs.data() + kBatch, kBatch);
        second_end = ++order;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // the second batch waits for the lock
    const unsigned char *p = (const unsigned char *)ml_get_ro(a.get(), hs[2 * kBatch]);
    first.join();
    second.join();
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(Check(p, kBlob, (uint32_t)(2 * kBatch)), "");
    EXPECT_EQ(first_n, kBatch);
    EXPECT_EQ(second_n, kBatch);
    EXPECT_EQ(first_end, 1) << "the second batch ran inside the first one's hand-over";
    EXPECT_EQ(second_end, 2);
    EXPECT_EQ(ml__arena_check(a.get()), 0);
}

// A page-in let in by a batch that has not yet freed enough for it must not
// fail: the batch's victims (everything cold) are claimed, so evicting on
// its own would find nothing; it waits for the batch instead. The lane is
// full of 256 KiB blobs that one thread evicts slowly (3 ms a write) while
// the main thread touches an evicted 1 MiB blob: at the first hand-overs
// only 512 KiB have come free, and the scratch reserve is smaller than 1 MiB.
TEST_P(Engines, PageInLetInBeforeTheBatchMadeRoomWaitsForIt) {
    FaultIO f;  // outlives the arena below (its engines call into f)
    ml_config c = TinyConfig(GetParam());
    c.slow_lane_size = 4 << 20;
    c.enable_auto_compaction = false;
    ArenaPtr a = FaultArena(f, GetParam(), c);
    ASSERT_NE(a, nullptr);
    const size_t big = 1 << 20, n = 256 << 10;
    ml_handle x;
    ASSERT_NO_FATAL_FAILURE(Written(a.get(), 1000, big, &x));
    ASSERT_EQ(ml_evict(a.get(), x), 0);
    std::vector<ml_handle> hs;
    for (uint32_t i = 0;; i++) {
        ml_stats st;
        ASSERT_EQ(ml_stats_get(a.get(), &st), 0);
        const ml_lane_stats &l = st.lane[ML_LANE_SLOW];
        if (l.free < n + l.reserve + (64 << 10)) {
            ASSERT_LT(l.reserve, big) << "the reserve alone would hold the big blob";
            ASSERT_LT(l.free, big + l.reserve) << "the big blob would fit without evicting";
            break;
        }
        ml_handle h;
        ASSERT_NO_FATAL_FAILURE(Written(a.get(), i, n, &h));
        hs.push_back(h);
    }
    ASSERT_GE(hs.size(), 8u);
    ASSERT_EQ(PStats(a.get()).evicted, 1u) << "filling evicted something";
    const int before = f.Writes();
    f.write_delay_us = 3000;  // (no engine runs now: set before the thread starts)
    int evicted = -1;
    std::thread batch([&] { evicted = ml_evict_many(a.get(), hs.data(), hs.size()); });
    while (f.Writes() < before + 1) std::this_thread::yield();
    void *p = nullptr;
    int rc = ml_try_get(a.get(), x, &p);
    batch.join();
    ASSERT_EQ(rc, 0) << ml_strerror(rc);
    EXPECT_EQ(Check((const unsigned char *)p, big, 1000), "");
    EXPECT_EQ(evicted, (int)hs.size());
    EXPECT_EQ(ml__arena_check(a.get()), 0);
}

// A long ml_prefetch lets a waiting page-in through between its chunks of
// reads: one thread prefetches 600 evicted blobs from a disk that takes
// 1 ms a read, and the main thread touches another evicted blob once the
// prefetch has begun. Its page-in must finish before the prefetch does
// (were the pager lock held throughout, it would see all 600 reads).
TEST_P(Engines, PageInGetsThroughALongPrefetch) {
    FaultIO f;  // outlives the arena below (its engines call into f)
    ml_config c = TinyConfig(GetParam());
    c.slow_lane_size = 64 << 20;
    ArenaPtr a = FaultArena(f, GetParam(), c);
    ASSERT_NE(a, nullptr);
    const size_t n = 64 << 10;
    const int kMany = 600;
    std::vector<ml_handle> hs(kMany + 1);
    for (uint32_t i = 0; i <= (uint32_t)kMany; i++) ASSERT_NO_FATAL_FAILURE(Written(a.get(), i, n, &hs[i]));
    ASSERT_EQ(ml_evict_many(a.get(), hs.data(), kMany + 1), kMany + 1);
    const int before = f.Reads();
    f.read_delay_us = 1000;  // (no engine runs now: set before the thread starts)
    int brought = -1;
    std::thread pf([&] { brought = ml_prefetch(a.get(), hs.data(), kMany); });
    while (f.Reads() < before + 1) std::this_thread::yield();
    const unsigned char *p = (const unsigned char *)ml_get_ro(a.get(), hs[kMany]);
    const int seen = f.Reads() - before;
    std::string why = p ? Check(p, n, (uint32_t)kMany) : std::string("ml_get_ro returned NULL");
    pf.join();
    EXPECT_EQ(why, "");
    EXPECT_EQ(brought, kMany);
    EXPECT_LT(seen, kMany) << "the page-in waited for the whole prefetch";
    EXPECT_EQ(ml__arena_check(a.get()), 0);
}

// ml_arena_destroy while the policy thread is compressing and evicting, at
// random moments: it stops the thread, waits for I/O in flight, and leaves
// no descriptor behind (ASan checks the memory).
TEST(PagingThreads, DestroyWhilePolicyThreadEvicts) {
    int fds = OpenFds();
    std::mt19937_64 r(11);
    const int rounds = 24 / kScale;
    uint64_t evicted = 0;
    for (int round = 0; round < rounds; round++) {
        ml_config c = TinyConfig(round % 2 ? 1 : 2);
        c.policy_check_interval_ms = 1;
        c.cold_after_ms = 1;
        c.compressed_stage = round % 4 < 2;
        ml_arena *a;
        ASSERT_EQ(ml_arena_create(&c, &a), 0);
        for (uint32_t i = 0; i < 48; i++) {
            size_t n = (16 << 10) + r() % (64 << 10);
            ml_handle h;
            int rc = ml_alloc(a, n, &h);
            ASSERT_EQ(rc, 0) << ml_strerror(rc);
            std::vector<unsigned char> buf(n);
            Fill(i, 1, buf.data(), n);
            ASSERT_EQ(ml_write(a, h, 0, buf.data(), n), 0);
        }
        // Once the policy thread is at work (idle after 1 ms: everything
        // goes), destroy at a random moment of it.
        // (A fresh arena counts from 0: sampling a base here raced with the
        // policy thread, which a slow fill lets finish all its work first,
        // leaving nothing more to count.)
        ml_paging_stats ps = PStats(a);
        const uint64_t base = 0;
        for (int k = 0; k < 200 && ps.evicted + ps.compressed == base; k++) {
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
            ps = PStats(a);
        }
        EXPECT_GT(ps.evicted + ps.compressed, base) << "round " << round << ": the policy thread evicts";
        std::this_thread::sleep_for(std::chrono::microseconds(r() % 3000));
        evicted += ps.evicted + ps.compressed;
        ml_arena_destroy(a);  // with entries cold, resident, and maybe in flight
    }
    EXPECT_GT(evicted, 0u);
    EXPECT_EQ(OpenFds(), fds) << "no descriptor left behind";
}

// Eviction hands its victims' pages back to the kernel without the lane
// lock, checking the range against the lane's size, while another thread's
// allocation grows the lane (a data race ThreadSanitizer reported until
// 0.7; harmless in effect, as the size only grows). Every byte is checked.
TEST(PagingThreads, LaneGrowthRacingAnEvictionsPageRelease) {
    ml_config c;
    ml_config_init(&c);
    c.slow_lane_size = 1 << 20;
    c.slow_lane_max_size = 256 << 20;
    c.compressed_stage = false;
    ArenaGuard a(&c);
    std::vector<ml_handle> ev(8);
    for (uint32_t i = 0; i < ev.size(); i++) {
        ASSERT_EQ(ml_alloc(a, 64 << 10, &ev[i]), 0);
        std::vector<unsigned char> buf(64 << 10);
        Fill(i, 1, buf.data(), buf.size());
        ASSERT_EQ(ml_write(a, ev[i], 0, buf.data(), buf.size()), 0);
    }
    std::atomic<bool> stop{false};
    std::atomic<long> evictions{0};
    std::thread evictor([&] {
        while (!stop)
            for (auto &h : ev) {
                if (ml_evict(a, h) == 0) evictions++;
                EXPECT_NE(ml_get(a, h), nullptr);
            }
    });
    std::vector<ml_handle> big;
    for (int i = 0; i < 200 / kScale; i++) {
        ml_handle h;
        if (ml_alloc(a, 1 << 20, &h) == 0) {
            memset(ml_get(a, h), i, 1 << 20);
            big.push_back(h);
        }
    }
    stop = true;
    evictor.join();
    EXPECT_GT(evictions.load(), 0);
    ml_stats st;
    ASSERT_EQ(ml_stats_get(a, &st), 0);
    EXPECT_GT(st.lane[ML_LANE_SLOW].grows, 0u);
    for (uint32_t i = 0; i < ev.size(); i++) {
        std::vector<unsigned char> buf(64 << 10);
        ASSERT_EQ(ml_read(a, ev[i], 0, buf.data(), buf.size()), (int)buf.size());
        EXPECT_EQ(Check(buf.data(), buf.size(), i), "") << i;
    }
    for (size_t i = 0; i < big.size(); i++) {
        unsigned char b[2];
        ASSERT_EQ(ml_read(a, big[i], (1 << 20) - 2, b, 2), 2);
        EXPECT_EQ(b[0], (unsigned char)i);
        EXPECT_EQ(b[1], (unsigned char)i);
    }
    EXPECT_EQ(ml__arena_check(a), 0);
}

// An allocation that finds SlowLane full asks the pager for room and waits
// for its lock. If the policy thread is meanwhile evicting every idle blob
// (a batch whose lane space is released at its end), nothing is left to
// evict once the allocation gets the lock, but the lane is empty: it must
// place again, not fail. (It used to return -ENOMEM there.) A slow disk
// keeps the policy thread's batch going while the allocation arrives.
TEST(PagingThreads, AllocWaitingForAnIdleEvictionPlacesAfterIt) {
    // Filling the lane must take well under cold_after_ms (sanitizers are slow).
    const uint32_t idle_ms = 40 * kScale;
    int tried = 0;
    // A fill that took longer than idle_ms (this thread descheduled) is tried
    // again, a few times per engine, instead of leaving the test untried.
    for (int engine : {1, 2})
    for (int attempt = 0; attempt < 5; attempt++) {
        FaultIO f;  // outlives the arena below (its engine calls into f)
        f.which = engine;
        f.write_delay_us = 1000;
        ml_config c = TinyConfig(engine);
        c.policy_check_interval_ms = 1;
        c.cold_after_ms = idle_ms;
        c.compressed_stage = false;
        c.slow_lane_usage_threshold = 0.9;  // with the 10% reserve: only idleness evicts
        c.enable_auto_compaction = false;
        std::unique_ptr<ml_arena, void (*)(ml_arena *)> a(f.Create(&c), ml_arena_destroy);
        ASSERT_NE(a, nullptr);
        // Fill SlowLane to the brim.
        ml_stats st;
        std::vector<unsigned char> buf(16 << 10);
        for (uint32_t i = 0;; i++) {
            ASSERT_EQ(ml_stats_get(a.get(), &st), 0);
            const ml_lane_stats &s = st.lane[ML_LANE_SLOW];
            if (s.free < buf.size() + s.reserve + (4 << 10)) break;
            ml_handle h;
            ASSERT_EQ(ml_alloc(a.get(), buf.size(), &h), 0);
            Fill(i, 1, buf.data(), buf.size());
            ASSERT_EQ(ml_write(a.get(), h, 0, buf.data(), buf.size()), 0);
        }
        if (PStats(a.get()).evicted) continue;  // the fill was too slow: no test here
        tried++;
        // Everything goes idle; the policy thread starts writing it all out,
        // a millisecond a record.
        std::this_thread::sleep_for(std::chrono::milliseconds(idle_ms + 10));
        ml_handle h;
        int rc = ml_alloc(a.get(), 64 << 10, &h);  // does not fit until the batch ends
        EXPECT_EQ(rc, 0) << (engine == 1 ? "io_uring: " : "pread/pwrite: ") << ml_strerror(rc);
        EXPECT_GT(PStats(a.get()).evicted, 0u);
        break;
    }
    EXPECT_GT(tried, 0) << "the lane never filled within cold_after_ms (5 attempts per engine)";
}

// ml_get takes no claim: it reads the meta word and the address. An entry
// going cold (compressed into a record in the lane, or evicted to a swap
// location) used to store its new place in the slot's address field first
// and clear RESIDENT after, so an ml_get between the two returned the
// record's address (a write through it corrupted the record: the entry was
// lost) or the swap location as a pointer. (Found by a review of the pager;
// failed within milliseconds for compress, seconds for evict.) The address
// field now only ever holds data: a cold entry's place is kept apart
// (core/arena.h). Storing it in the address field again, after the word,
// fails the evict case within a second.
namespace {
constexpr uint32_t kRecordMagic = 0x31524c4du;  // "MLR1", paging/pager.c

void GetRacingGoingCold(bool evict) {
    ml_config c = TinyConfig(2);
    c.slow_lane_size = 8 << 20;
    c.compressed_stage = true;
    ArenaGuard a(&c);
    const size_t n = 64 << 10;
    ml_handle h;
    ASSERT_EQ(ml_alloc(a, n, &h), 0);
    {
        // Data that never starts with the record magic: words and bytes.
        std::vector<unsigned char> buf(n);
        std::mt19937_64 r(7);
        static const char *w[] = {"lane ", "blob ", "swap ", "page "};
        for (size_t i = 0; i < n;) {
            const char *s = w[r() % 4];
            for (size_t k = 0; s[k] && i < n; k++) buf[i++] = (unsigned char)s[k];
            for (int k = 0; k < 4 && i < n; k++) buf[i++] = (unsigned char)r();
        }
        ASSERT_EQ(ml_write(a, h, 0, buf.data(), n), 0);
    }
    std::atomic<bool> stop{false};
    std::atomic<long> records{0}, locations{0}, gets{0};
    std::thread getter([&] {
        while (!stop.load(std::memory_order_relaxed)) {
            void *p = ml_get(a.a, h);  // brings it back writable, then hits the inline path
            if (!p) continue;
            gets++;
            if ((uintptr_t)p < ((uintptr_t)1 << 40)) {  // a swap location, not an address
                locations++;
                continue;
            }
            uint32_t first;
            memcpy(&first, p, sizeof first);
            if (first == kRecordMagic) records++;
        }
    });
    long moves = 0;
    auto t0 = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - t0 < std::chrono::seconds(3) && !records && !locations)
        if ((evict ? ml_evict(a, h) : ml_compress(a, h)) == 0) moves++;
    stop = true;
    getter.join();
    EXPECT_GT(moves, 100);
    EXPECT_GT(gets.load(), 100);
    EXPECT_EQ(records.load(), 0) << "ml_get returned the compressed record's address";
    EXPECT_EQ(locations.load(), 0) << "ml_get returned a swap location as a pointer";
}
}  // namespace

TEST(PagingThreads, GetRacingCompressNeverReturnsTheRecord) { GetRacingGoingCold(false); }
TEST(PagingThreads, GetRacingEvictNeverReturnsASwapLocation) { GetRacingGoingCold(true); }

// A page-in moves the data: the move callback reports it, numbered like
// every other move, from where the data last was (before it went cold) to
// where it is now, so that a program following an entry's reports by seq
// always knows where it is. (An adopter's review found the chain broken at
// every page-in: paging did not report.)
namespace {
struct Chains {
    std::mutex mu;
    std::map<uint64_t, std::map<uint64_t, std::pair<void *, void *>>> by_handle;  // seq -> (old, new)
    int duplicates = 0;
};
void Chain(void *ctx, ml_handle h, void *o, void *n, ml_lane, ml_lane, uint64_t seq) {
    Chains *c = (Chains *)ctx;
    std::lock_guard<std::mutex> l(c->mu);
    if (!c->by_handle[h.bits].emplace(seq, std::make_pair(o, n)).second) c->duplicates++;
}
// Reports of h must be numbered 1..k, each starting where the one before
// ended, the first at `start`; returns where the last one ended (start when
// there is none), or nullptr when the chain is broken.
void *Walk(Chains &c, ml_handle h, void *start) {
    void *at = start;
    uint64_t want = 1;
    for (auto &[seq, on] : c.by_handle[h.bits]) {
        if (seq != want++ || on.first != at) return nullptr;
        at = on.second;
    }
    return at;
}
}  // namespace

TEST(PagingCallbacks, APageInIsAMoveFromWhereTheDataLastWas) {
    ml_config c = TinyConfig(0);
    c.slow_lane_size = 4 << 20;
    c.compressed_stage = true;
    ArenaGuard a(&c);
    Chains ch;
    ml_handle h, other;
    ASSERT_EQ(ml_alloc(a, 64 << 10, &h), 0);
    ASSERT_EQ(ml_alloc(a, 64 << 10, &other), 0);  // keeps h's old place from being its next one
    ASSERT_TRUE(WritePatternPinned(a, h, 64 << 10, 1));
    // Moves made while no callback is set are not numbered: the first
    // report below must be seq 1.
    void *before = ml_get(a, h);
    ASSERT_EQ(ml_realloc(a, h, 8000), 0);  // under a quarter of its place: moves
    ASSERT_NE(ml_get(a, h), before);
    ASSERT_EQ(ml_realloc(a, h, 64 << 10), 0);
    void *start = ml_get(a, h);
    std::string text;
    while (text.size() < (64 << 10)) text += "a blob that compresses well; ";
    ASSERT_EQ(ml_write(a, h, 0, text.data(), 64 << 10), 0);
    ASSERT_EQ(ml_set_move_callback(a, Chain, &ch), 0);
    // Each way back: access, write, prefetch, pin, realloc (and its move).
    ASSERT_EQ(ml_evict(a, h), 0);
    ASSERT_NE(ml_get(a, h), nullptr);
    ASSERT_EQ(ml_compress(a, h), 0);
    unsigned char b = 7;
    ASSERT_EQ(ml_write(a, h, 0, &b, 1), 0);
    ASSERT_EQ(ml_evict(a, h), 0);
    ASSERT_EQ(ml_prefetch(a, &h, 1), 1);
    ASSERT_EQ(ml_evict(a, h), 0);
    void *p;
    ASSERT_EQ(ml_pin(a, h, &p), 0);
    ASSERT_EQ(ml_unpin(a, h), 0);
    ASSERT_EQ(ml_evict(a, h), 0);
    ASSERT_EQ(ml_realloc(a, h, 200 << 10), 0);
    ASSERT_EQ(ml_set_move_callback(a, nullptr, nullptr), 0);
    EXPECT_EQ(ch.duplicates, 0);
    EXPECT_EQ(ch.by_handle[h.bits].size(), 6u) << "5 page-ins and the realloc's move";
    void *end = Walk(ch, h, start);
    EXPECT_NE(end, nullptr) << "the chain of reports is broken";
    EXPECT_EQ(end, ml_get(a, h));
    EXPECT_EQ(ch.by_handle.count(other.bits), 0u);
}

// The same under load: threads evict, compress, prefetch, compact and touch
// entries at random; afterwards every entry's reports chain, gaplessly, from
// where it started to where it is.
TEST(PagingCallbacks, ReportsChainThroughPageInsUnderLoad) {
    ml_config c = TinyConfig(0);
    c.slow_lane_size = 8 << 20;
    c.compressed_stage = true;
    c.enable_auto_compaction = false;
    ArenaGuard a(&c);
    constexpr int kN = 48;
    std::vector<ml_handle> hs(kN);
    std::vector<void *> start(kN);
    for (int i = 0; i < kN; i++) {
        ASSERT_EQ(ml_alloc(a, 32 << 10, &hs[i]), 0);
        ASSERT_TRUE(WritePatternPinned(a, hs[i], 32 << 10, (uint64_t)i));
        start[i] = ml_get(a, hs[i]);
    }
    Chains ch;
    ASSERT_EQ(ml_set_move_callback(a, Chain, &ch), 0);
    std::atomic<bool> stop{false};
    auto worker = [&](int seed) {
        std::mt19937_64 r(seed);
        while (!stop) {
            ml_handle h = hs[r() % kN];
            switch (r() % 7) {
            case 0: ml_evict(a, h); break;
            case 1: ml_compress(a, h); break;
            case 2: ml_prefetch(a, &h, 1); break;
            case 3: ml_compact_step(a, ML_LANE_SLOW, 64 << 10, 0, nullptr); break;
            case 4: ml_realloc(a, h, r() % 2 ? 32 << 10 : 40 << 10); break;
            case 5: {
                unsigned char b;
                ml_read(a, h, 0, &b, 1);
                break;
            }
            default: ml_get(a, h); break;
            }
        }
    };
    std::thread t1(worker, 1), t2(worker, 2);
    std::this_thread::sleep_for(std::chrono::seconds(2));
    stop = true;
    t1.join();
    t2.join();
    for (auto h : hs) ASSERT_NE(ml_get(a, h), nullptr);  // back, and reported
    ASSERT_EQ(ml_set_move_callback(a, nullptr, nullptr), 0);
    EXPECT_EQ(ch.duplicates, 0);
    size_t reports = 0, broken = 0;
    for (int i = 0; i < kN; i++) {
        reports += ch.by_handle[hs[i].bits].size();
        void *end = Walk(ch, hs[i], start[i]);
        if (end != ml_get(a, hs[i])) broken++;
        ASSERT_TRUE(PatternPinnedIntact(a, hs[i], 32 << 10, (uint64_t)i)) << "entry " << i;
    }
    EXPECT_GT(reports, 100u);
    EXPECT_EQ(broken, 0u) << "of " << kN << " entries (" << reports << " reports)";
}
