// Model-based test of the paging layer: long, seeded, reproducible random
// sequences of operations on an arena whose SlowLane is tiny (2 MiB) next to
// a data set several times its size, so that most accesses page in and most
// allocations evict. Every operation is checked against a reference model
// kept here: contents byte for byte, sizes, pins, error codes, and the state
// rules of the paging API (ml_read never changes a state, any access brings
// a cold handle back, a pinned handle is never cold, explicit compress/evict
// codes). A failure prints the configuration, the seed and the operation
// number; rerun with ML_MODEL_SEED=<seed> (and ML_MODEL_OPS=<n>) to
// reproduce. Runs on io_uring and on pread/pwrite, with and without the
// compressed stage, and with idle eviction by maintenance.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "test_util.h"

namespace {

#if defined(__SANITIZE_THREAD__)
constexpr long kOpsDivisor = 8;
#elif defined(__SANITIZE_ADDRESS__)
constexpr long kOpsDivisor = 2;
#else
constexpr long kOpsDivisor = 1;
#endif

constexpr size_t kThreshold = 4096;  // default FastLane threshold
constexpr size_t kMaxClass = 8192;   // largest SlowLane size class: above it, blobs
constexpr size_t kMinEvict = 16 << 10;

uint64_t SeedFromEnv(uint64_t dflt) {
    const char *s = getenv("ML_MODEL_SEED");
    return s ? strtoull(s, nullptr, 0) : dflt;
}

long OpsFromEnv(long dflt) {
    const char *s = getenv("ML_MODEL_OPS");
    return s ? strtol(s, nullptr, 0) : dflt / kOpsDivisor;
}

// A cheap generator for contents (splitmix64): the model fills megabytes.
struct Mix {
    uint64_t x;
    uint64_t operator()() {
        uint64_t z = (x += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
};

// Compressible, text-like bytes (zstd -1 gets about 3:1): words from a small
// vocabulary with the odd random byte.
void TextBytes(uint64_t seed, unsigned char *p, size_t n) {
    static const char *words[] = {"lane ", "handle ", "blob ",  "stub ", "zstd ", "page ",  "swap ",
                                  "fast ", "slow ",   "evict ", "cold ", "ring ", "arena ", "pin "};
    Mix r{seed};
    for (size_t i = 0; i < n;) {
        uint64_t v = r();
        const char *w = words[(v & 0xffff) % 14];
        for (size_t k = 0; w[k] && i < n; k++) p[i++] = (unsigned char)w[k];
        if (i < n && (v >> 16) % 4 == 0) p[i++] = (unsigned char)(v >> 32);
    }
}

// Incompressible bytes.
void RandomBytes(uint64_t seed, unsigned char *p, size_t n) {
    Mix r{seed};
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v = r();
        memcpy(p + i, &v, 8);
    }
    for (; i < n; i++) p[i] = (unsigned char)r();
}

enum Blob { kNotBlob = 0, kIsBlob = 1, kBlobUnknown = 2 };

struct Entry {
    std::vector<unsigned char> data;
    bool text;  // content kind: compressible or not (writes keep it)
    int pins = 0;
    Blob blob;  // a SlowLane blob (the only thing paging moves)?
};

bool Cold(ml_state s) { return s == ML_STATE_COMPRESSED || s == ML_STATE_EVICTED; }

struct Cfg {
    const char *name;
    int engine;         // io_engine: 1 io_uring, 2 pread/pwrite
    bool stage;         // compressed_stage
    uint32_t cold_ms;   // cold_after_ms
    bool auto_compact;  // enable_auto_compaction
    bool direct;        // direct_io (O_DIRECT), else through the page cache
    uint64_t seed;      // default seed (ML_MODEL_SEED overrides)
};

// Operation counters, for the report at the end of a run.
struct Tally {
    long ops = 0, allocs = 0, frees = 0, writes = 0, cold_reads = 0, cold_gets = 0, evicts = 0,
         compresses = 0, prefetched = 0, enomem_access = 0, busy = 0, reused = 0, pins = 0, reallocs = 0,
         migrates = 0, maintains = 0, enomem_migrate = 0, enomem_compress = 0;
};

class PagingModel {
  public:
    PagingModel(ml_arena *a, const Cfg &cfg, uint64_t seed) : a_(a), cfg_(cfg), rng_(seed), seed_(seed) {}

    std::string Where() const {
        return std::string("[") + cfg_.name + " seed " + std::to_string(seed_) + " op " +
               std::to_string(op_) + "]";
    }

    // ---- helpers --------------------------------------------------------------

    void Fill(bool text, unsigned char *p, size_t n) {
        uint64_t s = rng_();
        if (text)
            TextBytes(s, p, n);
        else
            RandomBytes(s, p, n);
    }

    // 16 KiB .. 256 KiB, most of them small (every page-in costs an
    // eviction of as many bytes: the average size sets the run time).
    size_t BlobSize() {
        unsigned r = rng_() % 100;
        if (r < 60) return kMinEvict + rng_() % (8 << 10);    // 16..24 KiB
        if (r < 85) return (24 << 10) + rng_() % (40 << 10);  // 24..64 KiB
        if (r < 95) return (64 << 10) + rng_() % (64 << 10);  // 64..128 KiB
        return (128 << 10) + rng_() % (128 << 10) + 1;        // 128..256 KiB
    }

    // Small sizes: FastLane classes, and one SlowLane class (4097..5120).
    // Every size class that lands in SlowLane (failover, migration) costs
    // it a 64 KiB span that paging cannot move out, so SlowLane sees few.
    size_t SmallSize() {
        unsigned r = rng_() % 100;
        if (r < 80) return 1 + rng_() % 256;
        if (r < 97) return 257 + rng_() % (kThreshold - 256);
        return kThreshold + 1 + rng_() % 1024;
    }

    ml_state StateOf(ml_handle h, Entry &e) {
        ml_state st = ml_handle_state(a_, h);
        EXPECT_TRUE(st == ML_STATE_FAST || st == ML_STATE_SLOW || Cold(st))
            << Where() << " state " << ml_state_name(st);
        if (e.pins) {
            EXPECT_FALSE(Cold(st)) << Where() << " a pinned handle went cold";
        }
        if (Cold(st)) {
            EXPECT_NE(e.blob, kNotBlob) << Where() << " only blobs go cold";
            e.blob = kIsBlob;
        }
        if (st == ML_STATE_FAST) {
            EXPECT_LE(e.data.size(), kThreshold) << Where();
            EXPECT_NE(e.blob, kIsBlob) << Where() << " a blob in FastLane";
            e.blob = kNotBlob;
        }
        return st;
    }

    void ExpectContents(ml_handle h, const Entry &e, const unsigned char *p, const char *how) {
        ASSERT_NE(p, nullptr) << Where() << " " << how;
        if (memcmp(p, e.data.data(), e.data.size()) != 0) {
            size_t i = 0;
            while (p[i] == e.data[i]) i++;
            FAIL() << Where() << " " << how << ": contents differ at byte " << i << " of " << e.data.size()
                   << " (id " << ml_handle_id(h) << ", state " << ml_state_name(ml_handle_state(a_, h))
                   << ")";
        }
    }

    // A live handle; with want_blob, a few tries to find a blob candidate.
    size_t PickIndex(bool want_blob) {
        size_t i = rng_() % order_.size();
        for (int t = 0; want_blob && t < 6; t++) {
            if (live_[order_[i]].data.size() > kMaxClass) break;
            i = rng_() % order_.size();
        }
        return i;
    }
    ml_handle Pick(bool want_blob) { return ml_handle{order_[PickIndex(want_blob)]}; }

    size_t PinnedSlowBytes() const {
        size_t n = 0;
        for (auto &kv : live_)
            if (kv.second.pins && kv.second.data.size() > kThreshold) n += kv.second.data.size();
        return n;
    }

    // Entries that could still leave SlowLane to make room: resident
    // unpinned blobs of at least min_evict_size, and records compressed in
    // RAM; `held` are the ones the failing call itself holds.
    std::string EvictableLeft(const std::vector<uint64_t> &held) {
        std::string left;
        for (auto &kv : live_) {
            if (std::find(held.begin(), held.end(), kv.first) != held.end()) continue;
            const Entry &e = kv.second;
            ml_state st = ml_handle_state(a_, ml_handle{kv.first});
            bool evictable = st == ML_STATE_COMPRESSED || (st == ML_STATE_SLOW && e.blob == kIsBlob &&
                                                           e.data.size() >= kMinEvict && e.pins == 0);
            if (evictable) left += " " + std::to_string(e.data.size()) + "(" + ml_state_name(st) + ")";
        }
        return left;
    }

    // An access may fail with -ENOMEM (the handle stays cold and intact) only
    // when SlowLane has no hole of its size once everything that could leave
    // has left: pinned blobs, block spans, small blobs and the entries held by
    // the same call stay, and a page-in does not compact, so the free space
    // can remain in pieces. Anything else is a bug.
    void ExpectNoRoom(ml_handle h, Entry &e, ml_state before, size_t size, const char *what,
                      std::vector<uint64_t> held = {}) {
        ml_stats st;
        ASSERT_EQ(ml_stats_get(a_, &st), 0);
        size_t need = (size + 4095) & ~(size_t)4095;
        ASSERT_LT(st.lane[ML_LANE_SLOW].largest_free, need)
            << Where() << " " << what << " of " << size << " bytes failed with -ENOMEM although a hole of "
            << st.lane[ML_LANE_SLOW].largest_free << " bytes is free" << Lanes();
        held.push_back(h.bits);
        std::string left = EvictableLeft(held);
        ASSERT_EQ(left, "") << Where() << " " << what << " of " << size
                            << " bytes failed with -ENOMEM although these could have left:" << Lanes();
        ml_state now = StateOf(h, e);
        if (Cold(before)) {
            ASSERT_EQ(now, before) << Where() << " a failed " << what << " changed the state";
        }
        std::vector<unsigned char> buf(e.data.size());
        ASSERT_EQ(ml_read(a_, h, 0, buf.data(), buf.size()), (int)buf.size()) << Where();
        ExpectContents(h, e, buf.data(), "after -ENOMEM");
        t_.enomem_access++;
    }

    // Data set size, kept as entries come and go.
    void Count(size_t size, int sign) {
        if (size > kMaxClass)
            blob_bytes_ += sign * (long)size;
        else
            nsmall_ += sign;
    }

    // ---- operations -------------------------------------------------------------

    void Alloc(bool blob) {
        size_t size = blob ? BlobSize() : SmallSize();
        ml_handle h;
        int rc = ml_alloc(a_, size, &h);
        ASSERT_EQ(rc, 0) << Where() << " alloc " << size << ": " << ml_strerror(rc) << Lanes();
        ASSERT_EQ(live_.count(h.bits), 0u) << Where() << " handle issued twice";
        Entry e;
        e.data.resize(size);
        e.text = size > kMaxClass ? rng_() % 5 != 0 : true;
        e.blob = size > kMaxClass ? kIsBlob : kNotBlob;
        Fill(e.text, e.data.data(), size);
        if (rng_() % 2) {
            unsigned char *p = (unsigned char *)ml_get(a_, h);
            ASSERT_NE(p, nullptr) << Where();
            memcpy(p, e.data.data(), size);
        } else {
            ASSERT_EQ(ml_write(a_, h, 0, e.data.data(), size), 0) << Where();
        }
        ml_state st = StateOf(h, e);
        if (size > kThreshold) {
            ASSERT_EQ(st, ML_STATE_SLOW) << Where() << " a new entry is resident";
        }
        Count(size, +1);
        live_[h.bits] = std::move(e);
        order_.push_back(h.bits);
        t_.allocs++;
    }

    void Free() {
        if (!pinned_list_.empty() && rng_() % 16 == 0) {
            ml_handle p{pinned_list_[rng_() % pinned_list_.size()]};
            ASSERT_EQ(ml_free(a_, p), -EBUSY) << Where();
            t_.busy++;
            return;
        }
        size_t i = PickIndex(false);
        ml_handle h{order_[i]};
        Entry &e = live_[h.bits];
        if (e.pins) {
            ASSERT_EQ(ml_free(a_, h), -EBUSY) << Where();
            t_.busy++;
            return;
        }
        ASSERT_EQ(ml_free(a_, h), 0) << Where();
        ASSERT_EQ(ml_handle_state(a_, h), ML_STATE_FREED) << Where();
        Count(e.data.size(), -1);
        live_.erase(h.bits);
        order_[i] = order_.back();
        order_.pop_back();
        dead_.push_back(h.bits);
        if (dead_.size() > 4096) dead_.erase(dead_.begin(), dead_.begin() + 2048);
        t_.frees++;
    }

    void Write() {
        ml_handle h = Pick(true);
        Entry &e = live_[h.bits];
        ml_state before = StateOf(h, e);
        size_t off = rng_() % e.data.size();
        size_t len =
            rng_() % 4 == 0 ? e.data.size() - off : 1 + rng_() % std::min<size_t>(e.data.size() - off, 8192);
        std::vector<unsigned char> buf(len);
        Fill(e.text, buf.data(), len);
        if (rng_() % 2) {
            int rc = ml_write(a_, h, off, buf.data(), len);
            if (rc == -ENOMEM) return ExpectNoRoom(h, e, before, e.data.size(), "ml_write");
            ASSERT_EQ(rc, 0) << Where() << " " << ml_strerror(rc);
        } else {
            unsigned char *p = (unsigned char *)ml_get(a_, h);
            if (!p && Cold(before)) return ExpectNoRoom(h, e, before, e.data.size(), "ml_get (write)");
            ASSERT_NE(p, nullptr) << Where() << Lanes();
            memcpy(p + off, buf.data(), len);
        }
        memcpy(e.data.data() + off, buf.data(), len);
        ml_state st = StateOf(h, e);
        ASSERT_FALSE(Cold(st)) << Where() << " a write brings it back";
        // Writes past the end change nothing.
        if (rng_() % 8 == 0) {
            unsigned char b[2] = {1, 2};
            ASSERT_EQ(ml_write(a_, h, e.data.size() - 1, b, 2), -EINVAL) << Where();
            ASSERT_EQ(ml_write(a_, h, e.data.size() + 1, b, 0), -EINVAL) << Where();
        }
        t_.writes++;
    }

    // ml_read: a copy; the state never changes.
    void Read() {
        ml_handle h = Pick(true);
        Entry &e = live_[h.bits];
        ml_state before = StateOf(h, e);
        size_t off, len;
        if (rng_() % 3 == 0) {
            off = 0;
            len = e.data.size();
        } else {
            off = rng_() % (e.data.size() + 8);
            len = rng_() % (e.data.size() + 8);
        }
        std::vector<unsigned char> buf(len + 1);
        int n = ml_read(a_, h, off, buf.data(), len);
        size_t expect = off >= e.data.size() ? 0 : std::min(len, e.data.size() - off);
        ASSERT_EQ(n, (int)expect) << Where() << " " << ml_strerror(n < 0 ? n : 0);
        ASSERT_EQ(memcmp(buf.data(), e.data.data() + std::min(off, e.data.size()), expect), 0)
            << Where() << " ml_read contents differ (state " << ml_state_name(before) << ")";
        ml_state after = StateOf(h, e);
        ASSERT_EQ(before, after) << Where() << " ml_read changed the state";
        if (Cold(before)) t_.cold_reads++;
    }

    // ml_get / ml_try_get / ml_get_sized: the handle comes back (SLOW).
    void Get() {
        ml_handle h = Pick(true);
        Entry &e = live_[h.bits];
        ml_state before = StateOf(h, e);
        const unsigned char *p = nullptr;
        switch (rng_() % 3) {
            case 0:
                p = (const unsigned char *)ml_get(a_, h);
                break;
            case 1: {
                void *q = nullptr;
                int rc = ml_try_get(a_, h, &q);
                if (rc == -ENOMEM) return ExpectNoRoom(h, e, before, e.data.size(), "ml_try_get");
                ASSERT_EQ(rc, 0) << Where() << " try_get of " << e.data.size() << " bytes, "
                                 << ml_state_name(before) << ": " << ml_strerror(rc) << Lanes();
                p = (const unsigned char *)q;
                break;
            }
            default:
                ASSERT_EQ(ml_get_sized(a_, h, e.data.size() + 1), nullptr) << Where();
                p = (const unsigned char *)ml_get_sized(a_, h, e.data.size());
                break;
        }
        if (!p && Cold(before)) return ExpectNoRoom(h, e, before, e.data.size(), "ml_get");
        ASSERT_NE(p, nullptr) << Where() << " get of " << e.data.size() << " bytes, " << ml_state_name(before)
                              << Lanes();
        ml_state after = StateOf(h, e);
        if (Cold(before)) {
            ASSERT_EQ(after, ML_STATE_SLOW) << Where() << " ml_get brings a cold handle back";
            t_.cold_gets++;
        } else {
            ASSERT_EQ(after, before) << Where();
        }
        ExpectContents(h, e, p, "ml_get");
    }

    // ml_evict and ml_compress on a random entry: both refuse what is not a
    // SlowLane blob (-EINVAL) and pinned entries (-EBUSY); `outcome` checks
    // the rest. A refusal never changes the state.
    template <typename Outcome>
    void PagingOp(int (*op)(ml_arena *, ml_handle), const char *what, Outcome outcome) {
        ml_handle h = PickMaybePinned(true);
        Entry &e = live_[h.bits];
        ml_state before = StateOf(h, e);
        int rc = op(a_, h);
        ml_state after = StateOf(h, e);
        if (before != ML_STATE_FAST && e.blob == kBlobUnknown) e.blob = rc == -EINVAL ? kNotBlob : kIsBlob;
        if (before == ML_STATE_FAST || e.blob == kNotBlob) {
            ASSERT_EQ(rc, -EINVAL) << Where() << " only SlowLane blobs are paged";
        } else if (e.pins) {
            ASSERT_EQ(rc, -EBUSY) << Where();
            t_.busy++;
        } else {
            outcome(rc, e, before, after);
        }
        if (rc != 0) {
            ASSERT_EQ(before, after) << Where() << " a refused " << what << " changed the state";
        }
    }

    void Evict() {
        PagingOp(ml_evict, "eviction", [&](int rc, Entry &, ml_state before, ml_state after) {
            if (before == ML_STATE_EVICTED) {
                ASSERT_EQ(rc, -EALREADY) << Where();
            } else {
                ASSERT_EQ(rc, 0) << Where() << " " << ml_strerror(rc) << " from " << ml_state_name(before);
                ASSERT_EQ(after, ML_STATE_EVICTED) << Where();
                t_.evicts++;
            }
        });
    }

    void Compress() {
        PagingOp(ml_compress, "compression", [&](int rc, Entry &e, ml_state before, ml_state after) {
            if (Cold(before)) {
                ASSERT_EQ(rc, -EALREADY) << Where();
            } else if (!e.text) {
                // Incompressible: no gain in RAM, stays resident.
                ASSERT_EQ(rc, -EMSGSIZE) << Where();
            } else if (rc == -ENOMEM) {
                t_.enomem_compress++;  // no room for the record (documented): stays resident
            } else {
                ASSERT_EQ(rc, 0) << Where() << " " << ml_strerror(rc) << Lanes();
                ASSERT_EQ(after, ML_STATE_COMPRESSED) << Where();
                t_.compresses++;
            }
        });
    }

    // ml_prefetch of a random subset (distinct handles), with resident,
    // stale and forged ones mixed in: the cold ones come back.
    void Prefetch() {
        std::vector<ml_handle> hs;
        std::vector<uint64_t> picked;
        size_t n = 1 + rng_() % 8, cold_bytes = 0;
        for (size_t k = 0; k < n; k++) {
            ml_handle h = Pick(true);
            if (std::find(picked.begin(), picked.end(), h.bits) != picked.end()) continue;
            Entry &e = live_[h.bits];
            ml_state st = StateOf(h, e);
            if (Cold(st)) {
                if (cold_bytes + e.data.size() > (512u << 10)) continue;
                cold_bytes += e.data.size();
            }
            picked.push_back(h.bits);
            hs.push_back(h);
        }
        if (!dead_.empty() && rng_() % 4 == 0) hs.push_back(ml_handle{dead_[rng_() % dead_.size()]});
        if (rng_() % 4 == 0) hs.push_back(ml_handle{rng_()});
        if (rng_() % 8 == 0) hs.push_back(ML_HANDLE_NULL);
        std::shuffle(hs.begin(), hs.end(), rng_);
        std::map<uint64_t, ml_state> before;
        int cold = 0;
        for (uint64_t b : picked) {
            before[b] = StateOf(ml_handle{b}, live_[b]);
            cold += Cold(before[b]);
        }
        int rc = ml_prefetch(a_, hs.data(), hs.size());
        // Every cold one comes back, unless there is no room for it (below).
        int back = 0;
        std::vector<uint64_t> failed;
        for (uint64_t b : picked) {
            ml_state st = StateOf(ml_handle{b}, live_[b]);
            if (!Cold(before[b])) continue;
            if (Cold(st)) {
                ASSERT_EQ(st, before[b]) << Where() << " prefetch changed a cold state";
                failed.push_back(b);
            } else {
                ASSERT_EQ(st, ML_STATE_SLOW) << Where();
                back++;
            }
        }
        if (failed.empty()) {
            ASSERT_EQ(rc, cold) << Where() << " prefetch of " << hs.size() << " handles, " << cold << " cold";
        } else {
            ASSERT_EQ(rc, back ? back : -ENOMEM)
                << Where() << " prefetch: " << back << " of " << cold << " back";
            for (uint64_t b : failed) {
                ExpectNoRoom(ml_handle{b}, live_[b], before[b], live_[b].data.size(), "ml_prefetch", picked);
                if (::testing::Test::HasFatalFailure()) return;
            }
        }
        t_.prefetched += back;
    }

    // Pins come and go: at most 4 pinned entries (3 pins each), and at most
    // 384 KiB of pinned SlowLane data, so that the lane keeps room to page in.
    void Pin() {
        if (!pinned_list_.empty() && (rng_() % 2 || pinned_list_.size() >= 4)) {
            size_t k = rng_() % pinned_list_.size();
            ml_handle h{pinned_list_[k]};
            Entry &e = live_[h.bits];
            ml_state st = StateOf(h, e);
            ASSERT_FALSE(Cold(st)) << Where();
            ASSERT_EQ(ml_unpin(a_, h), 0) << Where();
            if (--e.pins == 0) {
                pinned_list_[k] = pinned_list_.back();
                pinned_list_.pop_back();
                // Once unpinned it is fair game again; an extra unpin is refused.
                ASSERT_EQ(ml_unpin(a_, h), -EINVAL) << Where();
            }
            return;
        }
        ml_handle h = Pick(rng_() % 2);
        Entry &e = live_[h.bits];
        ml_state before = StateOf(h, e);
        if (e.pins >= 3) return;
        if (e.pins == 0 && e.data.size() > kThreshold && PinnedSlowBytes() + e.data.size() > (384u << 10))
            return;
        void *p;
        int rc = ml_pin(a_, h, &p);
        if (rc == -ENOMEM) return ExpectNoRoom(h, e, before, e.data.size(), "ml_pin");
        ASSERT_EQ(rc, 0) << Where() << " pin of " << e.data.size() << " bytes, " << ml_state_name(before)
                         << ": " << ml_strerror(rc) << Lanes();
        if (e.pins++ == 0) pinned_list_.push_back(h.bits);
        ml_state after = StateOf(h, e);
        if (Cold(before)) {
            ASSERT_EQ(after, ML_STATE_SLOW) << Where() << " a pin brings it back";
        }
        ExpectContents(h, e, (const unsigned char *)p, "ml_pin");
        t_.pins++;
    }

    // The pager keeps the last cold copy it decoded for ml_read: it must
    // never serve it once the entry has changed. Cold read, write (which
    // brings it back), cold again, cold read; then free it, allocate (the
    // slot is likely reused, with the next generation), cold, cold read.
    // Compress (text) or evict; a compression with no room for its record
    // (-ENOMEM, documented) evicts instead.
    int MakeCold(ml_handle h, bool text) {
        int rc = text && rng_() % 2 ? ml_compress(a_, h) : -ENOMEM;
        return rc == -ENOMEM ? ml_evict(a_, h) : rc;
    }

    void ColdCycle() {
        ml_handle h = Pick(true);
        Entry &e = live_[h.bits];
        if (e.blob != kIsBlob || e.pins) return;
        ml_state st = StateOf(h, e);
        if (!Cold(st)) {
            int rc = MakeCold(h, e.text);
            ASSERT_EQ(rc, 0) << Where() << " " << ml_strerror(rc);
        }
        std::vector<unsigned char> buf(e.data.size());
        ASSERT_EQ(ml_read(a_, h, 0, buf.data(), buf.size()), (int)buf.size()) << Where();
        ExpectContents(h, e, buf.data(), "cold read (cycle)");
        size_t off = rng_() % e.data.size(), len = 1 + rng_() % std::min<size_t>(e.data.size() - off, 512);
        std::vector<unsigned char> w(len);
        Fill(e.text, w.data(), len);
        int rc = ml_write(a_, h, off, w.data(), len);
        if (rc == -ENOMEM) return ExpectNoRoom(h, e, ML_STATE_EVICTED, e.data.size(), "ml_write (cycle)");
        ASSERT_EQ(rc, 0) << Where();
        memcpy(e.data.data() + off, w.data(), len);
        rc = MakeCold(h, e.text);
        ASSERT_EQ(rc, 0) << Where() << " " << ml_strerror(rc);
        ASSERT_EQ(ml_read(a_, h, 0, buf.data(), buf.size()), (int)buf.size()) << Where();
        ExpectContents(h, e, buf.data(), "cold read after a write (cycle)");
        // Same slot, next generation.
        size_t size = e.data.size();
        bool text = e.text;
        for (size_t i = 0; i < order_.size(); i++)
            if (order_[i] == h.bits) {
                order_[i] = order_.back();
                order_.pop_back();
                break;
            }
        Count(size, -1);
        live_.erase(h.bits);
        ASSERT_EQ(ml_free(a_, h), 0) << Where();
        dead_.push_back(h.bits);
        ml_handle n;
        rc = ml_alloc(a_, size, &n);
        ASSERT_EQ(rc, 0) << Where() << " " << ml_strerror(rc);
        Entry ne;
        ne.data.resize(size);
        ne.text = text;
        ne.blob = kIsBlob;
        Fill(text, ne.data.data(), size);
        ASSERT_EQ(ml_write(a_, n, 0, ne.data.data(), size), 0) << Where();
        rc = MakeCold(n, text);
        ASSERT_EQ(rc, 0) << Where() << " " << ml_strerror(rc);
        ASSERT_EQ(ml_read(a_, n, 0, buf.data(), size), (int)size) << Where();
        Count(size, +1);
        live_[n.bits] = std::move(ne);
        order_.push_back(n.bits);
        ExpectContents(n, live_[n.bits], buf.data(), "cold read of a reused slot (cycle)");
        if ((uint32_t)n.bits == (uint32_t)h.bits) t_.reused++;
    }

    // Sometimes aim at a pinned entry (for -EBUSY).
    ml_handle PickMaybePinned(bool want_blob) {
        if (!pinned_list_.empty() && rng_() % 8 == 0)
            return ml_handle{pinned_list_[rng_() % pinned_list_.size()]};
        return Pick(want_blob);
    }

    void Realloc() {
        size_t i = PickIndex(rng_() % 2);
        ml_handle h{order_[i]};
        Entry &e = live_[h.bits];
        size_t n;
        unsigned r = rng_() % 100;
        if (e.blob == kIsBlob) {
            n = r < 75 ? BlobSize() : r < 90 ? kMaxClass + 1 + rng_() % (kMinEvict - kMaxClass) : SmallSize();
        } else {
            n = r < 85 ? SmallSize() : BlobSize();
        }
        ml_state before = StateOf(h, e);
        int rc = ml_realloc(a_, h, n);
        if (rc == -ENOMEM) {
            // Nothing changed. A cold entry comes back first (at its old
            // size): if it is still cold, that is what found no room.
            bool page_in = Cold(ml_handle_state(a_, h));
            size_t need = page_in ? e.data.size() : n;
            ml_stats st;
            ASSERT_EQ(ml_stats_get(a_, &st), 0);
            ASSERT_LT(st.lane[ML_LANE_SLOW].largest_free, (need + 4095) & ~(size_t)4095)
                << Where() << " realloc " << e.data.size() << " -> " << n << (page_in ? " (page-in)" : "")
                << " failed with a hole free" << Lanes();
            std::string left = EvictableLeft({h.bits});
            ASSERT_EQ(left, "") << Where() << " realloc to " << n
                                << " failed although these could have left:";
            if (page_in) {
                ASSERT_EQ(ml_handle_state(a_, h), before) << Where();
            }
            t_.enomem_access++;
            return;
        }
        if (rc == -EBUSY) {
            ASSERT_GT(e.pins, 0) << Where();
            return;
        }
        ASSERT_EQ(rc, 0) << Where() << " realloc " << e.data.size() << " -> " << n << ": " << ml_strerror(rc)
                         << Lanes();
        size_t old = e.data.size();
        Count(old, -1);
        Count(n, +1);
        e.data.resize(n);
        if (n > old) {  // new bytes are undefined: give them known values
            Fill(e.text, e.data.data() + old, n - old);
            ASSERT_EQ(ml_write(a_, h, old, e.data.data() + old, n - old), 0) << Where();
        }
        if (n > kMaxClass)
            e.blob = kIsBlob;
        else if (e.blob != kNotBlob)
            e.blob = kBlobUnknown;  // in place (a blob) or moved (a block)
        ml_state after = StateOf(h, e);
        ASSERT_FALSE(Cold(after)) << Where() << " realloc brings a cold handle back";
        if (n > kThreshold) {
            ASSERT_EQ(after, ML_STATE_SLOW) << Where();
        }
        t_.reallocs++;
    }

    void Migrate() {
        ml_handle h = Pick(rng_() % 2);
        Entry &e = live_[h.bits];
        ml_state before = StateOf(h, e);
        ml_lane to = rng_() % 2 ? ML_LANE_FAST : ML_LANE_SLOW;
        // To SlowLane only from the 16-byte class (one span there).
        if (before == ML_STATE_FAST && to == ML_LANE_SLOW && e.data.size() > 16) to = ML_LANE_FAST;
        bool here = (before == ML_STATE_FAST) == (to == ML_LANE_FAST);
        int rc = ml_migrate(a_, h, to);
        // Moved: a block of a size class, in either lane, whatever it was
        // (a cold blob small enough comes back and moves to FastLane).
        if (rc == 0) e.blob = kNotBlob;
        ml_state after = StateOf(h, e);
        // Precedence: already there, then too large for FastLane, then pinned.
        if (here) {
            ASSERT_EQ(rc, -EALREADY) << Where();
            ASSERT_EQ(before, after) << Where() << " a refused migration changed the state";
        } else if (to == ML_LANE_FAST && e.data.size() > kThreshold) {
            ASSERT_EQ(rc, -EINVAL) << Where();
            ASSERT_EQ(before, after) << Where() << " a refused migration changed the state";
        } else if (e.pins) {
            ASSERT_EQ(rc, -EBUSY) << Where();
        } else if (rc == -ENOMEM) {
            t_.enomem_migrate++;
        } else {
            ASSERT_EQ(rc, 0) << Where() << " " << ml_strerror(rc);
            ASSERT_EQ(after, to == ML_LANE_FAST ? ML_STATE_FAST : ML_STATE_SLOW) << Where();
            t_.migrates++;
        }
    }

    void Compact() {
        ml_lane lane = rng_() % 4 ? ML_LANE_SLOW : ML_LANE_FAST;
        ml_compact_result r;
        if (rng_() % 8 == 0) {
            ASSERT_EQ(ml_compact(a_, lane, &r), 0) << Where();
        } else {
            ASSERT_EQ(ml_compact_step(a_, lane, 1 + rng_() % (512 << 10), 0, &r), 0) << Where();
        }
    }

    void Maintain() {
        ASSERT_EQ(ml_maintain(a_), 0) << Where();
        for (auto &kv : live_)
            if (kv.second.pins) {
                ASSERT_FALSE(Cold(ml_handle_state(a_, ml_handle{kv.first})))
                    << Where() << " maintenance made a pinned handle cold";
            }
        t_.maintains++;
    }

    // Snapshot of one handle: agrees with the model and with its state.
    void Info() {
        ml_handle h = Pick(rng_() % 2);
        Entry &e = live_[h.bits];
        ml_state st = StateOf(h, e);
        ml_handle_info info;
        ASSERT_EQ(ml_handle_info_get(a_, h, &info), 0) << Where();
        ASSERT_EQ(info.state, st) << Where() << " info changed the state";
        ASSERT_EQ(info.size, e.data.size()) << Where();
        ASSERT_EQ((int)info.pins, e.pins) << Where();
        ASSERT_EQ(info.stored_size > 0, Cold(st)) << Where();
        if (Cold(st)) {
            ASSERT_EQ(info.lane, ML_LANE_SLOW) << Where();
            if (e.text) {
                ASSERT_LT(info.stored_size, e.data.size() + 4096) << Where();
            }
        } else {
            ASSERT_GE(info.alloc_size, info.size) << Where();
        }
        ASSERT_EQ(ml_handle_state(a_, h), st) << Where();
    }

    // Forged and stale handles: rejected by every entry point, never cold.
    void Bad() {
        ml_handle h;
        bool stale = !dead_.empty() && rng_() % 2;
        if (stale) {
            h = ml_handle{dead_[rng_() % dead_.size()]};
        } else {
            // Random bits, or a live handle with its generation bumped.
            h = ml_handle{rng_()};
            if (!order_.empty() && rng_() % 2) h = ml_handle{order_[rng_() % order_.size()] + (1ull << 40)};
            if (live_.count(h.bits)) return;
        }
        int want = stale ? -ESTALE : -EINVAL;
        ml_state st = ml_handle_state(a_, h);
        if (stale) {
            ASSERT_EQ(st, ML_STATE_FREED) << Where();
        } else
            ASSERT_TRUE(st == ML_STATE_INVALID || st == ML_STATE_FREED) << Where();
        if (!stale && st == ML_STATE_FREED) want = -ESTALE;  // a forged value that looks issued
        ASSERT_EQ(ml_get(a_, h), nullptr) << Where();
        void *p = &p;
        int rc = ml_try_get(a_, h, &p);
        ASSERT_TRUE(rc == want || (!stale && rc == -EINVAL)) << Where() << " " << rc;
        ASSERT_EQ(p, nullptr) << Where();
        char buf[16];
        rc = ml_read(a_, h, 0, buf, sizeof buf);
        ASSERT_TRUE(rc == want || (!stale && rc == -EINVAL)) << Where() << " " << rc;
        rc = ml_evict(a_, h);
        ASSERT_TRUE(rc == want || (!stale && rc == -EINVAL)) << Where() << " " << rc;
        rc = ml_compress(a_, h);
        ASSERT_TRUE(rc == want || (!stale && rc == -EINVAL)) << Where() << " " << rc;
        ASSERT_EQ(ml_prefetch(a_, &h, 1), 0) << Where();
        rc = ml_pin(a_, h, &p);
        ASSERT_TRUE(rc == want || (!stale && rc == -EINVAL)) << Where() << " " << rc;
        if (stale) {
            ASSERT_EQ(ml_write(a_, h, 0, buf, 1), -ESTALE) << Where();
            ASSERT_EQ(ml_realloc(a_, h, 100), -ESTALE) << Where();
            ASSERT_EQ(ml_migrate(a_, h, ML_LANE_SLOW), -ESTALE) << Where();
            ASSERT_EQ(ml_free(a_, h), -ESTALE) << Where();
            ASSERT_FALSE(ml_is_valid(a_, h)) << Where();
        }
    }

    // ---- driver -----------------------------------------------------------------

    void Step() {
        op_++;
        t_.ops++;
        size_t blob_bytes = blob_bytes_, nsmall = nsmall_;
        unsigned r = rng_() % 1000;
        // Keep the data set at 2..4x the 2 MiB lane, and a few hundred small ones.
        if (order_.empty() || (r < 60 && blob_bytes < (8u << 20)) || blob_bytes < (4u << 20))
            return Alloc(true);
        if (r < 100 && nsmall < 300) return Alloc(false);
        if (r < 100) return Free();
        if (r < 150 || blob_bytes > (8u << 20) || nsmall > 400) return Free();
        if (r < 270) return Write();
        if (r < 450) return Read();
        if (r < 590) return Get();
        if (r < 660) return Evict();
        if (r < 730) return Compress();
        if (r < 760) return Prefetch();
        if (r < 820) return Pin();
        if (r < 860) return Realloc();
        if (r < 890) return Migrate();
        if (r < 910) return Compact();
        if (r < 930) return Maintain();
        if (r < 962) return Info();
        if (r < 975) return ColdCycle();
        return Bad();
    }

    // Everything agrees: invariants, counters against the model's states,
    // contents through ml_read (no state change), then through ml_get.
    void CheckAll(bool through_get) {
        ASSERT_EQ(ml__arena_check(a_), 0) << Where();
        ml_stats st;
        ASSERT_EQ(ml_stats_get(a_, &st), 0);
        ASSERT_EQ(st.handles_live, live_.size()) << Where();
        uint64_t requested = st.lane[0].requested + st.lane[1].requested, model = 0;
        for (auto &kv : live_) model += kv.second.data.size();
        ASSERT_EQ(requested, model) << Where();
        uint64_t ne = 0, nc = 0, neb = 0, ncb = 0;
        std::map<uint64_t, ml_state> states;
        for (auto &kv : live_) {
            ml_state s = StateOf(ml_handle{kv.first}, kv.second);
            states[kv.first] = s;
            if (s == ML_STATE_EVICTED) ne++, neb += kv.second.data.size();
            if (s == ML_STATE_COMPRESSED) nc++, ncb += kv.second.data.size();
        }
        ml_paging_stats ps;
        ASSERT_EQ(ml_paging_stats_get(a_, &ps), 0);
        ASSERT_EQ(ps.now_evicted, ne) << Where();
        ASSERT_EQ(ps.now_compressed, nc) << Where();
        ASSERT_EQ(ps.now_evicted_bytes, neb) << Where();
        ASSERT_EQ(ps.now_compressed_bytes, ncb) << Where();
        ASSERT_EQ(ps.swap_used == 0, ne == 0) << Where() << " swap_used " << ps.swap_used;
        ASSERT_LE(ps.swap_used, ps.swap_capacity) << Where();
        ASSERT_EQ(ps.checksum_failures, 0u) << Where();
        ASSERT_EQ(ps.io_errors, 0u) << Where();
        std::vector<unsigned char> buf;
        for (auto &kv : live_) {
            buf.assign(kv.second.data.size(), 0);
            int n = ml_read(a_, ml_handle{kv.first}, 0, buf.data(), buf.size());
            ASSERT_EQ(n, (int)buf.size()) << Where();
            ExpectContents(ml_handle{kv.first}, kv.second, buf.data(), "ml_read (check)");
            ASSERT_EQ(ml_handle_state(a_, ml_handle{kv.first}), states[kv.first])
                << Where() << " ml_read changed the state";
        }
        if (!through_get) return;
        std::vector<uint64_t> order(order_);
        std::shuffle(order.begin(), order.end(), rng_);
        for (uint64_t b : order) {
            ml_state before = StateOf(ml_handle{b}, live_[b]);
            const unsigned char *p = (const unsigned char *)ml_get(a_, ml_handle{b});
            if (!p && Cold(before)) {
                ExpectNoRoom(ml_handle{b}, live_[b], before, live_[b].data.size(), "ml_get (check)");
                if (::testing::Test::HasFatalFailure()) return;
                continue;
            }
            ASSERT_NE(p, nullptr) << Where() << Lanes();
            ExpectContents(ml_handle{b}, live_[b], p, "ml_get (check)");
        }
        ASSERT_EQ(ml__arena_check(a_), 0) << Where();
    }

    void Drain() {
        for (auto &kv : live_) {
            while (kv.second.pins--) ASSERT_EQ(ml_unpin(a_, ml_handle{kv.first}), 0) << Where();
            ASSERT_EQ(ml_free(a_, ml_handle{kv.first}), 0) << Where();
        }
        live_.clear();
        order_.clear();
        pinned_list_.clear();
        blob_bytes_ = nsmall_ = 0;
    }

    std::string Lanes() const {
        ml_stats st;
        ml_paging_stats ps;
        if (ml_stats_get(a_, &st) || ml_paging_stats_get(a_, &ps)) return "";
        const ml_lane_stats &s = st.lane[ML_LANE_SLOW];
        return " (SlowLane used " + std::to_string(s.used) + "/" + std::to_string(s.capacity) +
               ", largest free " + std::to_string(s.largest_free) + ", spans " +
               std::to_string(s.span_bytes) + ", blobs " + std::to_string(s.blob_bytes) +
               ", pinned slow bytes " + std::to_string(PinnedSlowBytes()) + "; evicted " +
               std::to_string(ps.now_evicted) + ", compressed " + std::to_string(ps.now_compressed) + ")";
    }

    const Tally &tally() const { return t_; }

  private:
    ml_arena *a_;
    Cfg cfg_;
    std::mt19937_64 rng_;
    uint64_t seed_;
    long op_ = 0;
    std::vector<uint64_t> pinned_list_;  // entries with pins
    long blob_bytes_ = 0, nsmall_ = 0;
    std::map<uint64_t, Entry> live_;
    std::vector<uint64_t> order_;
    std::vector<uint64_t> dead_;
    Tally t_;
};

ml_config ModelConfig(const Cfg &m) {
    ml_config c;
    ml_config_init(&c);
    c.fast_lane_size = 2 << 20;
    c.slow_lane_size = 2 << 20;
    c.swap_size = 256 << 20;
    c.max_handles = 1 << 16;
    c.io_engine = m.engine;
    c.compressed_stage = m.stage;
    c.cold_after_ms = m.cold_ms;
    c.enable_auto_compaction = m.auto_compact;
    c.direct_io = m.direct;
    return c;
}

void RunModel(const Cfg &m, uint64_t dflt_seed, long dflt_ops) {
    ml_config c = ModelConfig(m);
    ArenaGuard a(&c);
    ASSERT_NE(a.a, nullptr);
    uint64_t seed = SeedFromEnv(dflt_seed);
    long ops = OpsFromEnv(dflt_ops);
    PagingModel model(a, m, seed);
    for (long i = 0; i < ops; i++) {
        model.Step();
        if (::testing::Test::HasFatalFailure() || ::testing::Test::HasNonfatalFailure()) return;
        if (i % 5000 == 4999) {
            model.CheckAll(i % 20000 == 19999);
            if (::testing::Test::HasFatalFailure()) return;
        }
    }
    model.CheckAll(true);
    if (::testing::Test::HasFatalFailure()) return;
    ml_paging_stats ps;
    ASSERT_EQ(ml_paging_stats_get(a, &ps), 0);
    EXPECT_STREQ(ps.engine, m.engine == 1 ? "io_uring" : "pread/pwrite");
    EXPECT_EQ(ps.direct_io, m.direct ? 1u : 0u) << "the swap file is on ext4: O_DIRECT works";
    EXPECT_GT(ps.page_ins, 0u);
    EXPECT_GT(ps.evicted, 0u);
    if (m.stage) {
        EXPECT_GT(ps.compressed, 0u);
    }
    const Tally &t = model.tally();
    // Most accesses really do page in: the lane holds a fraction of the data.
    EXPECT_GT(t.cold_gets + t.cold_reads, t.ops / 20) << model.Where();
    model.Drain();
    ASSERT_EQ(ml_paging_stats_get(a, &ps), 0);
    EXPECT_EQ(ps.now_evicted, 0u) << model.Where();
    EXPECT_EQ(ps.now_compressed, 0u) << model.Where();
    EXPECT_EQ(ps.now_evicted_bytes, 0u) << model.Where();
    EXPECT_EQ(ps.now_compressed_bytes, 0u) << model.Where();
    EXPECT_EQ(ps.swap_used, 0u) << model.Where();
    ml_stats st;
    ASSERT_EQ(ml_stats_get(a, &st), 0);
    EXPECT_EQ(st.handles_live, 0u);
    EXPECT_EQ(st.lane[0].used + st.lane[1].used, 0u);
    EXPECT_EQ(st.lane[0].requested + st.lane[1].requested, 0u);
    EXPECT_EQ(ml__arena_check(a), 0);
    printf(
        "%s seed %llu: %ld ops, %ld allocs, %ld frees, %ld writes, %ld cold reads, %ld cold gets, "
        "%ld evicts, %ld compresses (%ld ENOMEM), %ld accesses without room, %ld prefetched, %ld pins (%ld "
        "EBUSY), %ld reallocs, "
        "%ld migrations (%ld ENOMEM), %ld maintenance, %ld slots reused cold; pager: %llu evicted, %llu "
        "compressed, "
        "%llu page-ins, %llu raw\n",
        m.name, (unsigned long long)seed, t.ops, t.allocs, t.frees, t.writes, t.cold_reads, t.cold_gets,
        t.evicts, t.compresses, t.enomem_compress, t.enomem_access, t.prefetched, t.pins, t.busy, t.reallocs,
        t.migrates, t.enomem_migrate, t.maintains, t.reused, (unsigned long long)ps.evicted,
        (unsigned long long)ps.compressed, (unsigned long long)ps.page_ins,
        (unsigned long long)ps.stored_raw);
}

class PagingModelTest : public ::testing::TestWithParam<Cfg> {};

void PrintTo(const Cfg &c, std::ostream *os) { *os << c.name; }

}  // namespace

// 5 x 32k operations here and 4 x 5k below: 180k in all.
TEST_P(PagingModelTest, MatchesReference) { RunModel(GetParam(), GetParam().seed, 32000); }

INSTANTIATE_TEST_SUITE_P(Paging, PagingModelTest,
                         ::testing::Values(Cfg{"IoUringStaged", 1, true, 0, false, true, 20260301},
                                           Cfg{"IoUringNoStage", 1, false, 0, true, true, 20260302},
                                           Cfg{"PreadStagedBuffered", 2, true, 0, true, false, 20260303},
                                           Cfg{"PreadNoStage", 2, false, 0, false, true, 20260304},
                                           Cfg{"IoUringIdleBuffered", 1, true, 2, true, false, 20260305}),
                         [](const ::testing::TestParamInfo<Cfg> &i) { return std::string(i.param.name); });

// Several seeds, shorter, so that a bug one seed misses shows up.
TEST(PagingModel, ManySeedsShortRuns) {
    for (uint64_t seed = 1; seed <= 4; seed++) {
        Cfg m{"ShortRun",    seed % 2 ? 1 : 2, seed % 3 != 0, seed == 4 ? 1u : 0u,
              seed % 2 == 0, seed != 2,        seed};
        ml_config c = ModelConfig(m);
        ArenaGuard a(&c);
        PagingModel model(a, m, seed);
        long ops = 5000 / kOpsDivisor;
        for (long i = 0; i < ops; i++) {
            model.Step();
            if (::testing::Test::HasFatalFailure() || ::testing::Test::HasNonfatalFailure()) return;
        }
        model.CheckAll(true);
        if (::testing::Test::HasFatalFailure()) return;
        model.Drain();
        ml_paging_stats ps;
        ASSERT_EQ(ml_paging_stats_get(a, &ps), 0);
        EXPECT_EQ(ps.now_evicted + ps.now_compressed, 0u) << model.Where();
        EXPECT_EQ(ps.swap_used, 0u) << model.Where();
    }
}
