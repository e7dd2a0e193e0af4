// A seeded model of everything the core does at once, over random
// configurations: tiny lanes near full that grow inside their reservations,
// thresholds at and around class sizes, failover and migrate_on_full on and
// off, auto-compaction, debug modes (poison, moves); operations: every
// allocation call with boundary sizes, realloc, pins (kept pointers
// checked), groups, tags, compaction, migration. Every byte, the move
// reports' chain and the heap check are verified. (Written by a bug hunt,
// where it found ml_realloc refusing to grow within its block past the
// threshold.) MIXED_MODEL_SEED / _SEEDS / _OPS / _PAGING=1 widen a run.
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
    size_t align = 16;
    ml_group group = ML_GROUP_NONE;
    int pins = 0;
    void *pinptr = nullptr;
    std::string tag;
};

uint64_t EnvU(const char *n, uint64_t d) {
    const char *s = getenv(n);
    return s ? strtoull(s, nullptr, 0) : d;
}

struct Chain {
    void *at;
    uint64_t seq;
};
std::map<uint64_t, Chain> g_chain;
std::vector<std::string> g_chain_err;
void OnMove(void *, ml_handle h, void *o, void *n, ml_lane, ml_lane, uint64_t seq) {
    auto it = g_chain.find(h.bits);
    if (it == g_chain.end()) {
        g_chain_err.push_back("report for unknown handle seq " + std::to_string(seq));
        return;
    }
    if (seq != it->second.seq + 1 || o != it->second.at)
        g_chain_err.push_back("chain broken: seq " + std::to_string(seq) + " after " +
                              std::to_string(it->second.seq) + (o != it->second.at ? " old_addr mismatch" : ""));
    it->second.seq = seq;
    it->second.at = n;
}

struct Cfg {
    size_t fast, fast_max, slow, slow_max, threshold;
    bool failover, migrate_on_full, autoc;
    unsigned debug;
    bool paging;
};

class M {
   public:
    M(ml_arena *a, uint64_t seed, const Cfg &cfg) : a_(a), rng_(seed), seed_(seed), cfg_(cfg) {
        ml_config c;
        ml_arena_config(a, &c);
        threshold_ = c.threshold;
        slow_max_ = c.slow_lane_max_size;
        fast_max_ = c.fast_lane_max_size;
    }
    std::string Where() const {
        return "seed " + std::to_string(seed_) + " op " + std::to_string(op_) + " (" + last_ + ")";
    }

    size_t RSize() {
        unsigned r = rng_() % 100;
        static const size_t edges[] = {1, 15, 16, 17, 127, 128, 129, 255, 256, 257, 1023, 1024, 1025, 2048, 2049,
                                       4095, 4096, 4097, 8191, 8192, 8193, 12288, 16384, 65536, 65537};
        if (r < 15) return edges[rng_() % (sizeof edges / sizeof edges[0])];
        if (r < 20) {
            long d = (long)(rng_() % 5) - 2;
            long s = (long)threshold_ + d;
            return s < 1 ? 1 : (size_t)s;
        }
        if (r < 60) return 1 + rng_() % 256;
        if (r < 80) return 257 + rng_() % 3840;
        if (r < 92) return 4097 + rng_() % 12000;
        if (r < 99) return 16384 + rng_() % (64 * 1024);
        return 64 * 1024 + rng_() % (slow_max_ / 2);
    }
    bool Cold(ml_handle h) {
        ml_state st = ml_handle_state(a_, h);
        return st == ML_STATE_COMPRESSED || st == ML_STATE_EVICTED;
    }
#define PAGEIN_OK(expr, h)                                  \
    do {                                                    \
        bool cold_ = Cold(h);                               \
        int rc_ = (expr);                                   \
        if (rc_ == -ENOMEM && cold_) { coldfail_++; return; } \
        ASSERT_EQ(rc_, 0) << Where();                       \
    } while (0)
    ml_handle Pick() { return ml_handle{order_[rng_() % order_.size()]}; }

    void Fill(Ent &e, ml_handle h, size_t from) {
        uint64_t s = rng_();
        for (size_t i = from; i < e.data.size(); i++) e.data[i] = PatternByte(s, i);
        if (from < e.data.size()) {
            ASSERT_EQ(ml_write(a_, h, from, e.data.data() + from, e.data.size() - from), 0) << Where();
        }
    }

    // Every refused call must change nothing we can see.
    struct Snap {
        uint64_t live, req;
    };
    Snap Take() {
        ml_stats st;
        EXPECT_EQ(ml_stats_get(a_, &st), 0);
        return Snap{st.handles_live, st.lane[0].requested + st.lane[1].requested};
    }

    void Alloc() {
        size_t size = RSize();
        size_t align = rng_() % 3 == 0 ? (size_t)1 << (rng_() % 13) : 0;
        ml_group g = ML_GROUP_NONE;
        if (!groups_.empty() && rng_() % 3 == 0) {
            auto it = groups_.begin();
            std::advance(it, rng_() % groups_.size());
            g = it->second;
        }
        ml_handle h{0};
        int rc;
        unsigned how = rng_() % 6;
        unsigned flags = 0;
        void *ptr = nullptr;
        Snap before = Take();
        if (g != ML_GROUP_NONE && how < 3) how = 5;
        if (how == 0) {
            last_ = "alloc";
            rc = ml_alloc(a_, size, &h);
            align = 0;
        } else if (how == 1) {
            last_ = "alloc_aligned";
            if (!align) align = 16;
            rc = ml_alloc_aligned(a_, size, align, &h);
        } else if (how == 2) {
            last_ = "alloc_zeroed";
            rc = ml_alloc_zeroed(a_, size, &h);
            flags = ML_ALLOC_ZEROED;
            align = 0;
        } else if (how == 3 || how == 5) {
            last_ = "alloc_ex";
            flags = (unsigned)(rng_() % 4);
            rc = ml_alloc_ex(a_, size, align, g, flags, &h, &ptr);
        } else {
            last_ = "group_alloc";
            rc = ml_group_alloc(a_, g, size, align, &h);
        }
        last_ += " size " + std::to_string(size) + " align " + std::to_string(align);
        if (size > slow_max_) {
            ASSERT_EQ(rc, -EINVAL) << Where();
            return;
        }
        if (rc == -ENOMEM) {
            nomem_++;
            Snap after = Take();
            ASSERT_EQ(after.live, before.live) << Where();
            ASSERT_EQ(after.req, before.req) << Where();
            if (ptr) FAIL() << Where() << " ptr set on failure";
            return;
        }
        ASSERT_EQ(rc, 0) << Where() << " " << ml_strerror(rc);
        ASSERT_EQ(live_.count(h.bits), 0u) << Where();
        ASSERT_EQ(ml_handle_generation(h) != 0, true);
        void *p = nullptr;
        if (flags & ML_ALLOC_PINNED) {
            ASSERT_NE(ptr, nullptr) << Where();
            p = ptr;
        } else {
            ASSERT_EQ(ml_try_get(a_, h, &p), 0) << Where();
            if (ptr) { ASSERT_EQ(ptr, p) << Where() << " ptr != get right after alloc"; }
        }
        size_t al = align ? align : 16;
        if (al < 16) al = 16;
        ASSERT_EQ((uintptr_t)p % al, 0u) << Where();
        if (flags & ML_ALLOC_ZEROED) {
            for (size_t i = 0; i < size; i++)
                if (((unsigned char *)p)[i]) FAIL() << Where() << " not zero at " << i;
        }
        bool born_fast = ml_handle_id(h) > 0;
        if (size > threshold_) { ASSERT_FALSE(born_fast) << Where(); }
        Ent e;
        e.align = al;
        e.group = g;
        e.data.resize(size);
        uint64_t s = rng_();
        for (size_t i = 0; i < size; i++) e.data[i] = PatternByte(s, i);
        memcpy(p, e.data.data(), size);
        if (flags & ML_ALLOC_PINNED) {
            e.pins = 1;
            e.pinptr = p;
        }
        live_[h.bits] = std::move(e);
        order_.push_back(h.bits);
        if (g) members_[g].insert(h.bits);
        g_chain[h.bits] = Chain{p, 0};
    }

    void Forget(uint64_t bits) {
        auto &e = live_[bits];
        if (e.group) members_[e.group].erase(bits);
        live_.erase(bits);
        g_chain.erase(bits);
        order_.erase(std::find(order_.begin(), order_.end(), bits));
        dead_.push_back(bits);
        if (dead_.size() > 4096) dead_.erase(dead_.begin(), dead_.begin() + 2048);
    }

    void Free() {
        last_ = "free";
        ml_handle h = Pick();
        Ent &e = live_[h.bits];
        if (e.pins) {
            Snap b = Take();
            ASSERT_EQ(ml_free(a_, h), -EBUSY) << Where();
            Snap c = Take();
            ASSERT_EQ(b.live, c.live) << Where();
            return;
        }
        ASSERT_EQ(ml_free(a_, h), 0) << Where();
        Forget(h.bits);
    }

    void Write() {
        last_ = "write";
        ml_handle h = Pick();
        Ent &e = live_[h.bits];
        size_t off = rng_() % e.data.size();
        size_t len = 1 + rng_() % (e.data.size() - off);
        std::vector<unsigned char> buf(len);
        uint64_t s = rng_();
        for (size_t i = 0; i < len; i++) buf[i] = PatternByte(s, i);
        unsigned how = rng_() % 3;
        if (how == 0) {
            PAGEIN_OK(ml_write(a_, h, off, buf.data(), len), h);
        } else if (how == 1) {
            void *pv = nullptr;
            PAGEIN_OK(ml_try_get(a_, h, &pv), h);
            unsigned char *p = (unsigned char *)pv;
            memcpy(p + off, buf.data(), len);
        } else {
            // out of range write: refused, nothing changes
            ASSERT_EQ(ml_write(a_, h, e.data.size() - len + 1, buf.data(), len), -EINVAL) << Where();
            return;
        }
        memcpy(e.data.data() + off, buf.data(), len);
    }

    void Read() {
        last_ = "read";
        ml_handle h = Pick();
        Ent &e = live_[h.bits];
        unsigned how = rng_() % 4;
        if (how == 0) {
            size_t off = rng_() % (e.data.size() + 8);
            size_t len = rng_() % (e.data.size() + 8);
            std::vector<unsigned char> buf(len + 1);
            int n = ml_read(a_, h, off, buf.data(), len);
            size_t expect = off >= e.data.size() ? 0 : std::min(len, e.data.size() - off);
            ASSERT_EQ(n, (int)expect) << Where();
            ASSERT_EQ(memcmp(buf.data(), e.data.data() + std::min(off, e.data.size()), expect), 0) << Where();
        } else if (how == 1) {
            const void *p = nullptr;
            PAGEIN_OK(ml_try_get_ro(a_, h, &p), h);
            ASSERT_EQ(memcmp(p, e.data.data(), e.data.size()), 0) << Where();
        } else if (how == 2) {
            size_t mn = rng_() % (e.data.size() + 2);
            bool cold = Cold(h);
            void *p = ml_get_sized(a_, h, mn);
            if (!p && cold && mn <= e.data.size()) { coldfail_++; return; }
            if (mn > e.data.size()) {
                ASSERT_EQ(p, nullptr) << Where();
            } else {
                ASSERT_NE(p, nullptr) << Where();
                ASSERT_EQ(memcmp(p, e.data.data(), e.data.size()), 0) << Where();
            }
        } else {
            void *p = nullptr;
            PAGEIN_OK(ml_try_get(a_, h, &p), h);
            ASSERT_EQ(memcmp(p, e.data.data(), e.data.size()), 0) << Where();
        }
    }

    void Info() {
        last_ = "info";
        if (!dead_.empty() && rng_() % 3 == 0) {
            ml_handle h{dead_[rng_() % dead_.size()]};
            if (live_.count(h.bits)) return;
            ASSERT_EQ(ml_handle_state(a_, h), ML_STATE_FREED) << Where();
            ASSERT_EQ(ml_get(a_, h), nullptr) << Where();
            ASSERT_EQ(ml_free(a_, h), -ESTALE) << Where();
            ASSERT_EQ(ml_pin(a_, h, nullptr), -ESTALE) << Where();
            ASSERT_EQ(ml_unpin(a_, h), -ESTALE) << Where();
            ASSERT_EQ(ml_realloc(a_, h, 10), -ESTALE) << Where();
            ASSERT_EQ(ml_migrate(a_, h, ML_LANE_SLOW), -ESTALE) << Where();
            size_t sz;
            ASSERT_EQ(ml_size(a_, h, &sz), -ESTALE) << Where();
            return;
        }
        ml_handle h = Pick();
        Ent &e = live_[h.bits];
        ml_handle_info info;
        ASSERT_EQ(ml_handle_info_get(a_, h, &info), 0) << Where();
        ASSERT_EQ(info.size, e.data.size()) << Where();
        ASSERT_EQ((int)info.pins, e.pins) << Where();
        bool res = info.state == ML_STATE_FAST || info.state == ML_STATE_SLOW;
        if (res) { ASSERT_GE(info.alloc_size, info.size) << Where(); }
        ASSERT_EQ(info.group, e.group) << Where();
        ASSERT_EQ(info.align, e.align) << Where();
        ASSERT_EQ(std::string(info.tag), e.tag) << Where();
        if (res) { ASSERT_EQ(info.offset % e.align, 0u) << Where(); }
        size_t sz = 0;
        ASSERT_EQ(ml_size(a_, h, &sz), 0);
        ASSERT_EQ(sz, e.data.size());
        if (info.state == ML_STATE_FAST) { ASSERT_EQ(info.lane, ML_LANE_FAST) << Where(); }
        if (info.state == ML_STATE_SLOW) { ASSERT_EQ(info.lane, ML_LANE_SLOW) << Where(); }
        ml_handle back;
        ASSERT_EQ(ml_handle_from_id(a_, info.id, &back), 0) << Where();
        ASSERT_EQ(back.bits, h.bits) << Where();
    }

    void Pin() {
        ml_handle h = Pick();
        Ent &e = live_[h.bits];
        if (e.pins && rng_() % 2) {
            last_ = "unpin";
            ASSERT_EQ(ml_unpin(a_, h), 0) << Where();
            if (--e.pins == 0) e.pinptr = nullptr;
        } else if (e.pins < 3) {
            last_ = "pin";
            void *p;
            if (rng_() % 2) {
                PAGEIN_OK(ml_pin(a_, h, &p), h);
            } else {
                const void *q;
                PAGEIN_OK(ml_pin_ro(a_, h, &q), h);
                p = (void *)q;
            }
            ASSERT_EQ(memcmp(p, e.data.data(), e.data.size()), 0) << Where();
            if (e.pins) { ASSERT_EQ(p, e.pinptr) << Where() << " pinned entry moved"; }
            e.pinptr = p;
            e.pins++;
        } else {
            last_ = "unpin-unpinned";
        }
    }

    void Compact() {
        ml_lane lane = rng_() % 2 ? ML_LANE_FAST : ML_LANE_SLOW;
        ml_compact_result r;
        unsigned k = rng_() % 4;
        if (k == 0) {
            last_ = "compact";
            ASSERT_EQ(ml_compact(a_, lane, &r), 0) << Where();
        } else if (k == 1) {
            last_ = "compact_step bytes";
            ASSERT_EQ(ml_compact_step(a_, lane, 1 + rng_() % (64 << 10), 0, &r), 0) << Where();
        } else if (k == 2) {
            last_ = "compact_step ns";
            ASSERT_EQ(ml_compact_step(a_, lane, 0, 1 + rng_() % 20000, &r), 0) << Where();
        } else {
            last_ = "maintain";
            ASSERT_EQ(ml_maintain(a_), 0) << Where();
        }
    }

    bool FitsFast(size_t size, size_t align) {
        if (size > threshold_) return false;
        // a class among FastLane's that is a multiple of align
        static const unsigned cs[] = {16,    32,    48,    64,    80,    96,    112,   128,   160,   192,   224,
                                      256,   320,   384,   448,   512,   640,   768,   896,   1024,  1280,  1536,
                                      1792,  2048,  2560,  3072,  3584,  4096,  5120,  6144,  7168,  8192,  10240,
                                      12288, 14336, 16384, 20480, 24576, 28672, 32768, 40960, 49152, 57344, 65536};
        unsigned top = 0;
        while (top < 44 && cs[top] < threshold_) top++;  // class of threshold
        for (unsigned c = 0; c <= top && c < 44; c++)
            if (cs[c] >= size && cs[c] % align == 0) return true;
        return false;
    }

    void Migrate() {
        last_ = "migrate";
        ml_handle h = Pick();
        Ent &e = live_[h.bits];
        ml_lane to = rng_() % 2 ? ML_LANE_FAST : ML_LANE_SLOW;
        ml_state before = ml_handle_state(a_, h);
        bool here = (before == ML_STATE_FAST) == (to == ML_LANE_FAST);
        ml_move_cost cost;
        ASSERT_EQ(ml_migrate_cost(a_, h, to, &cost), 0) << Where();
        int rc = ml_migrate(a_, h, to);
        int want;
        if (here) want = -EALREADY;
        else if (to == ML_LANE_FAST && !FitsFast(e.data.size(), e.align)) want = -EINVAL;
        else if (e.pins) want = -EBUSY;
        else want = 0;
        ASSERT_EQ(cost.reason, want) << Where() << " migrate_cost";
        if (want == 0 && rc == -ENOMEM) {
            nomem_++;
            ml_state now = ml_handle_state(a_, h);
            if (before == ML_STATE_COMPRESSED || before == ML_STATE_EVICTED) {
                ASSERT_TRUE(now == before || now == ML_STATE_SLOW) << Where();
            } else {
                ASSERT_EQ(now, before) << Where();
            }
            return;
        }
        ASSERT_EQ(rc, want) << Where() << " size " << e.data.size() << " align " << e.align << " to " << to;
        if (rc == 0) {
            ASSERT_EQ(ml_handle_state(a_, h), to == ML_LANE_FAST ? ML_STATE_FAST : ML_STATE_SLOW) << Where();
        }
    }

    void Realloc() {
        ml_handle h = Pick();
        Ent &e = live_[h.bits];
        size_t n = rng_() % 8 == 0 ? slow_max_ + 1 + rng_() % 10 : RSize();
        last_ = "realloc " + std::to_string(e.data.size()) + " -> " + std::to_string(n) + " pins " +
                std::to_string(e.pins);
        ml_handle_info before;
        ASSERT_EQ(ml_handle_info_get(a_, h, &before), 0);
        int rc = ml_realloc(a_, h, n);
        if (n > slow_max_) {
            ASSERT_EQ(rc, -EINVAL) << Where();
            return;
        }
        if (rc == -EBUSY) {
            ASSERT_GT(e.pins, 0) << Where();
                        ASSERT_GT(n, before.alloc_size) << Where() << " EBUSY though it fits its place";
            return;
        }
        if (rc == -ENOMEM) {
            nomem_++;
            if (before.state != ML_STATE_COMPRESSED && before.state != ML_STATE_EVICTED) {
                ASSERT_GT(n, e.data.size()) << Where() << " shrink failed for want of room";
                ASSERT_GT(n, before.alloc_size) << Where() << " ENOMEM though it fits its place";
            }
            size_t sz;
            ASSERT_EQ(ml_size(a_, h, &sz), 0);
            ASSERT_EQ(sz, e.data.size()) << Where();
            return;
        }
        ASSERT_EQ(rc, 0) << Where();
        size_t old = e.data.size();
        e.data.resize(n);
        if (e.pins) {
            void *p = ml_get(a_, h);
            ASSERT_EQ(p, e.pinptr) << Where() << " pinned entry moved by realloc";
        }
        void *p = ml_get(a_, h);
        ASSERT_EQ((uintptr_t)p % e.align, 0u) << Where() << " alignment lost";
        ASSERT_EQ(memcmp(p, e.data.data(), std::min(old, n)), 0) << Where() << " contents lost";
        if (n > old) Fill(e, h, old);
    }

    void Groups() {
        unsigned k = rng_() % 8;
        if (k == 0 && groups_.size() < 6) {
            last_ = "group_create";
            std::string name = "g" + std::to_string(rng_() % 10);
            ml_group g;
            int rc = ml_group_create(a_, name.c_str(), &g);
            if (groups_.count(name)) {
                ASSERT_EQ(rc, -EEXIST) << Where();
            } else {
                ASSERT_EQ(rc, 0) << Where();
                groups_[name] = g;
                members_[g];
            }
            return;
        }
        if (groups_.empty()) return;
        auto it = groups_.begin();
        std::advance(it, rng_() % groups_.size());
        ml_group g = it->second;
        auto &mem = members_[g];
        bool anypin = false;
        for (auto b : mem) anypin |= live_[b].pins > 0;
        if (k == 1 || k == 2) {
            last_ = "group_free_all";
            size_t freed = 77;
            Snap b = Take();
            int rc = ml_group_free_all(a_, g, &freed);
            if (anypin) {
                ASSERT_EQ(rc, -EBUSY) << Where();
                Snap c = Take();
                ASSERT_EQ(b.live, c.live) << Where();
                for (auto x : mem) ASSERT_TRUE(ml_is_valid(a_, ml_handle{x})) << Where();
                return;
            }
            ASSERT_EQ(rc, 0) << Where();
            ASSERT_EQ(freed, mem.size()) << Where();
            std::vector<uint64_t> v(mem.begin(), mem.end());
            for (auto x : v) {
                ASSERT_EQ(ml_handle_state(a_, ml_handle{x}), ML_STATE_FREED) << Where();
                Forget(x);
            }
        } else if (k == 3) {
            last_ = "group_destroy";
            int rc = ml_group_destroy(a_, g);
            if (anypin) {
                ASSERT_EQ(rc, -EBUSY) << Where();
                return;
            }
            ASSERT_EQ(rc, 0) << Where();
            std::vector<uint64_t> v(mem.begin(), mem.end());
            for (auto x : v) Forget(x);
            members_.erase(g);
            groups_.erase(it);
            size_t cnt;
            ASSERT_EQ(ml_group_count(a_, g, &cnt), -ENOENT) << Where();
            ml_handle hh;
            ASSERT_EQ(ml_group_alloc(a_, g, 10, 0, &hh), -ENOENT) << Where();
        } else if (k == 4 && !order_.empty()) {
            last_ = "group_set";
            ml_handle h = Pick();
            Ent &e = live_[h.bits];
            ml_group ng = rng_() % 3 == 0 ? ML_GROUP_NONE : g;
            ASSERT_EQ(ml_group_set(a_, h, ng), 0) << Where();
            if (e.group) members_[e.group].erase(h.bits);
            e.group = ng;
            if (ng) members_[ng].insert(h.bits);
        } else {
            last_ = "group_list";
            size_t cnt;
            ASSERT_EQ(ml_group_count(a_, g, &cnt), 0) << Where();
            ASSERT_EQ(cnt, mem.size()) << Where();
            std::vector<ml_handle> v(cnt + 1);
            size_t c2;
            ASSERT_EQ(ml_group_list(a_, g, v.data(), v.size(), &c2), 0) << Where();
            ASSERT_EQ(c2, mem.size()) << Where();
            std::set<uint64_t> got;
            for (size_t i = 0; i < c2; i++) got.insert(v[i].bits);
            ASSERT_TRUE(got == mem) << Where();
        }
    }

    void Tag() {
        last_ = "tag";
        ml_handle h = Pick();
        Ent &e = live_[h.bits];
        std::string t = rng_() % 4 == 0 ? "" : "t" + std::to_string(rng_() % 5);
        ASSERT_EQ(ml_set_tag(a_, h, t.c_str()), 0) << Where();
        e.tag = t;
        ASSERT_EQ(ml_set_tag(a_, h, "bad/tag"), -EINVAL) << Where();
    }

    void MigrateAll() {
        last_ = "migrate_all";
        size_t moved;
        int rc = ml_migrate_all(a_, 0, &moved);
        ASSERT_TRUE(rc == 0 || rc == -ENOMEM) << Where() << rc;
    }

    void Step() {
        op_++;
        unsigned r = rng_() % 100;
        const size_t target = 300; // live entries the walk keeps around
        if (order_.empty() || (r < 30 && order_.size() < target)) return Alloc();
        if (r < 10) return Alloc();
        if (r < 30) return Free();
        if (r < 42) return Write();
        if (r < 55) return Read();
        if (r < 63) return Info();
        if (r < 70) return Pin();
        if (r < 75) return Compact();
        if (r < 82) return Migrate();
        if (r < 90) return Realloc();
        if (r < 95) return Groups();
        if (r < 98) return Tag();
        if (r < 99) return MigrateAll();
        if (rng_() % 4 == 0) return CheckAll();
    }

    void CheckAll() {
        std::string l = last_;
        last_ = "checkall after " + l;
        int ck = ml__arena_check(a_);
        ASSERT_EQ(ck, 0) << Where();
        ml_stats st;
        ASSERT_EQ(ml_stats_get(a_, &st), 0);
        ASSERT_EQ(st.handles_live, live_.size()) << Where();
        uint64_t requested = st.lane[0].requested + st.lane[1].requested;
        uint64_t model = 0;
        for (auto &kv : live_) model += kv.second.data.size();
        ASSERT_EQ(requested, model) << Where();
        for (int i = 0; i < 2; i++) {
            ASSERT_LE(st.lane[i].used, st.lane[i].capacity) << Where();
            ASSERT_LE(st.lane[i].capacity, st.lane[i].max_capacity) << Where();
        }
        if (!g_chain_err.empty()) {
            std::string e = g_chain_err[0];
            g_chain_err.clear();
            FAIL() << Where() << " move reports: " << e;
        }
        for (auto &kv : live_) {
            void *p = nullptr;
            bool cold = Cold(ml_handle{kv.first});
            int rc = ml_try_get(a_, ml_handle{kv.first}, &p);
            if (rc == -ENOMEM && cold) continue;
            ASSERT_EQ(rc, 0) << Where();
            ASSERT_EQ(p, g_chain[kv.first].at) << Where() << " move chain does not end at the data";
            if (kv.second.pins) { ASSERT_EQ(p, kv.second.pinptr) << Where() << " pinned moved"; }
            ASSERT_EQ(memcmp(p, kv.second.data.data(), kv.second.data.size()), 0) << Where() << " size "
                                                                                    << kv.second.data.size();
        }
        last_ = l;
    }

    void Drain() {
        for (auto &kv : live_) {
            while (kv.second.pins--) ASSERT_EQ(ml_unpin(a_, ml_handle{kv.first}), 0);
            ASSERT_EQ(ml_free(a_, ml_handle{kv.first}), 0);
        }
        live_.clear();
        order_.clear();
    }

    long nomem_ = 0, coldfail_ = 0;

   private:
    ml_arena *a_;
    std::mt19937_64 rng_;
    uint64_t seed_;
    Cfg cfg_;
    size_t threshold_, slow_max_, fast_max_;
    long op_ = 0;
    std::string last_;
    std::map<uint64_t, Ent> live_;
    std::vector<uint64_t> order_;
    std::vector<uint64_t> dead_;
    std::map<std::string, ml_group> groups_;
    std::map<ml_group, std::set<uint64_t>> members_;
};

Cfg CfgFor(uint64_t s) {
    Cfg c;
    std::mt19937_64 r(s * 7919 + 1);
    static const size_t th[] = {16, 100, 1000, 4096, 4097, 8192, 65536, 2048};
    c.threshold = th[r() % 8];
    c.fast = (size_t)64 << 10 << (r() % 3);
    c.fast_max = r() % 2 ? 0 : c.fast * (2 + r() % 4);
    c.slow = (size_t)256 << 10 << (r() % 3);
    c.slow_max = r() % 2 ? 0 : c.slow * (2 + r() % 4);
    c.failover = r() % 4 != 0;
    c.migrate_on_full = r() % 3 != 0;
    c.autoc = r() % 2;
    c.debug = (unsigned)(r() % 4);
    c.paging = getenv("MIXED_MODEL_PAGING") && r() % 2;
    return c;
}

void RunSeed(uint64_t seed, long ops) {
    Cfg cf = CfgFor(seed);
    ml_config c;
    ml_config_init(&c);
    c.enable_paging = cf.paging;
    c.swap_size = 64 << 20;
    c.min_evict_size = 4096;
    c.fast_lane_size = cf.fast;
    c.fast_lane_max_size = cf.fast_max;
    c.slow_lane_size = cf.slow;
    c.slow_lane_max_size = cf.slow_max;
    c.threshold = cf.threshold;
    c.failover_to_slow = cf.failover;
    c.migrate_on_full = cf.migrate_on_full;
    c.enable_auto_compaction = cf.autoc;
    c.debug = cf.debug;
    c.max_handles = 4096;
    ml_arena *a = nullptr;
    int rc = ml_arena_create(&c, &a);
    ASSERT_EQ(rc, 0) << "seed " << seed << " " << ml_strerror(rc);
    g_chain.clear();
    g_chain_err.clear();
    ASSERT_EQ(ml_set_move_callback(a, OnMove, nullptr), 0);
    {
        M m(a, seed, cf);
        for (long i = 0; i < ops; i++) {
            m.Step();
            if (::testing::Test::HasFatalFailure()) {
                fprintf(stderr, "cfg: th %zu fast %zu/%zu slow %zu/%zu fo %d mof %d ac %d dbg %u pg %d\n", cf.threshold,
                        cf.fast, cf.fast_max, cf.slow, cf.slow_max, cf.failover, cf.migrate_on_full, cf.autoc,
                        cf.debug, cf.paging);
                break;
            }
            if (i % 97 == 0) {
                m.CheckAll();
                if (::testing::Test::HasFatalFailure()) {
                    fprintf(stderr, "cfg: th %zu fast %zu/%zu slow %zu/%zu fo %d mof %d ac %d dbg %u pg %d\n",
                            cf.threshold, cf.fast, cf.fast_max, cf.slow, cf.slow_max, cf.failover,
                            cf.migrate_on_full, cf.autoc, cf.debug, cf.paging);
                    break;
                }
            }
        }
        if (!::testing::Test::HasFatalFailure()) {
            m.CheckAll();
            m.Drain();
            EXPECT_EQ(ml__arena_check(a), 0);
        }
    }
    ml_arena_destroy(a);
}

}  // namespace

TEST(MixedModel, RandomConfigurationsAndOperationsMatchTheModel) {
#if defined(__SANITIZE_THREAD__)
    const uint64_t seeds = 30; // one thread: ThreadSanitizer adds 30x time and nothing to check
#else
    const uint64_t seeds = 200;
#endif
    uint64_t first = EnvU("MIXED_MODEL_SEED", 1), n = EnvU("MIXED_MODEL_SEEDS", seeds);
    long ops = (long)EnvU("MIXED_MODEL_OPS", 6000);
    for (uint64_t s = first; s < first + n; s++) {
        RunSeed(s, ops);
        if (::testing::Test::HasFatalFailure()) return;
    }
}
