// FaultPrim: an ml_prim (core/prim.h) that forwards to the real OS table,
// can fail reserve/commit/lock on demand, and keeps books on every page it
// has handed out, so a test can check that a failed operation left nothing
// behind (no reservation, no committed or locked page).
//
//   FaultPrim fp;
//   fp.commit.fail_after = 1;      // the 2nd commit fails (once)
//   fp.commit.fail_always = true;  // every commit fails until cleared
//   ml__arena_create_with(&cfg, fp.prim(), &arena);
//
// mlock is simulated (recorded, never executed) so that tests do not depend
// on RLIMIT_MEMLOCK. The object must outlive every arena created with it.
#ifndef ML_TESTS_FAULT_PRIM_H
#define ML_TESTS_FAULT_PRIM_H

#include <errno.h>
#include <time.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <set>

extern "C" {
#include "core/prim.h"
}

class FaultPrim {
   public:
    // Failure control for one kind of call.
    struct Knob {
        long fail_after = -1;      // >= 0: this many calls succeed, the next fails (once)
        bool fail_always = false;  // every call fails
        int err = -ENOMEM;         // what a failing call returns
        long calls = 0;            // calls seen (failed ones included)
        long failures = 0;         // calls failed

        bool Fire() {
            calls++;
            bool fail = fail_always;
            if (!fail && fail_after >= 0) {
                if (fail_after == 0) fail = true;
                fail_after--;  // 0 -> -1: fires once
            }
            if (fail) failures++;
            return fail;
        }
        void Reset() {
            fail_after = -1;
            fail_always = false;
        }
    };

    Knob reserve, commit, lock;
    // Calls that must never fail in a correct library; counted for balance.
    long releases = 0, decommits = 0, unlocks = 0, purges = 0;
    // Extra time every purge takes per MiB (0: none), slept after the real one.
    std::atomic<uint64_t> purge_delay_ns_per_mib{0};
    // Contract violations seen (unknown release, misaligned range, ...).
    long violations = 0;

    FaultPrim() {
        const ml_prim *os = ml__prim_os();
        os_ = *os;
        prim_ = ml_prim{&Reserve, &Release, &Commit, &Decommit, &Purge, &Lock, &Unlock, this};
    }
    FaultPrim(const FaultPrim &) = delete;
    FaultPrim &operator=(const FaultPrim &) = delete;

    const ml_prim *prim() const { return &prim_; }

    size_t reserved_bytes() const {
        std::lock_guard<std::mutex> g(mu_);
        size_t n = 0;
        for (auto &r : reservations_) n += r.second;
        return n;
    }
    size_t reservations() const {
        std::lock_guard<std::mutex> g(mu_);
        return reservations_.size();
    }
    size_t committed_pages() const {
        std::lock_guard<std::mutex> g(mu_);
        return committed_.size();
    }
    size_t locked_pages() const {
        std::lock_guard<std::mutex> g(mu_);
        return locked_.size();
    }
    bool is_committed(const void *p) const {
        std::lock_guard<std::mutex> g(mu_);
        return committed_.count(Page(p)) != 0;
    }
    bool is_locked(const void *p) const {
        std::lock_guard<std::mutex> g(mu_);
        return locked_.count(Page(p)) != 0;
    }
    // Nothing reserved, committed or locked (after every arena is gone).
    bool clean() const {
        std::lock_guard<std::mutex> g(mu_);
        return reservations_.empty() && committed_.empty() && locked_.empty();
    }
    void ResetFaults() {
        reserve.Reset();
        commit.Reset();
        lock.Reset();
    }

   private:
    static uintptr_t Page(const void *p) { return (uintptr_t)p & ~(uintptr_t)(ML_PAGE_SIZE - 1); }
    static FaultPrim *Self(void *ctx) { return static_cast<FaultPrim *>(ctx); }
    bool Aligned(const void *p, size_t size) {
        if (((uintptr_t)p | size) % ML_PAGE_SIZE) {
            violations++;
            return false;
        }
        return true;
    }
    bool Inside(const void *p, size_t size) {  // caller holds mu_
        uintptr_t lo = (uintptr_t)p, hi = lo + size;
        for (auto &r : reservations_)
            if (lo >= r.first && hi <= r.first + r.second) return true;
        violations++;
        return false;
    }
    void AddPages(std::set<uintptr_t> &s, void *p, size_t size) {
        for (size_t off = 0; off < size; off += ML_PAGE_SIZE) s.insert((uintptr_t)p + off);
    }
    void DropPages(std::set<uintptr_t> &s, void *p, size_t size) {
        s.erase(s.lower_bound((uintptr_t)p), s.lower_bound((uintptr_t)p + size));
    }

    static int Reserve(void *ctx, size_t size, void **out) {
        FaultPrim *f = Self(ctx);
        std::lock_guard<std::mutex> g(f->mu_);
        if (size == 0 || size % ML_PAGE_SIZE) f->violations++;
        if (f->reserve.Fire()) return f->reserve.err;
        int rc = f->os_.reserve(f->os_.ctx, size, out);
        if (rc == 0) f->reservations_[(uintptr_t)*out] = size;
        return rc;
    }
    static int Release(void *ctx, void *p, size_t size) {
        FaultPrim *f = Self(ctx);
        std::lock_guard<std::mutex> g(f->mu_);
        f->releases++;
        auto it = f->reservations_.find((uintptr_t)p);
        if (it == f->reservations_.end() || it->second != size) {
            f->violations++;
        } else {
            f->reservations_.erase(it);
        }
        f->DropPages(f->committed_, p, size);
        f->DropPages(f->locked_, p, size);
        return f->os_.release(f->os_.ctx, p, size);
    }
    static int Commit(void *ctx, void *p, size_t size) {
        FaultPrim *f = Self(ctx);
        std::lock_guard<std::mutex> g(f->mu_);
        f->Aligned(p, size);
        f->Inside(p, size);
        if (f->commit.Fire()) return f->commit.err;
        int rc = f->os_.commit(f->os_.ctx, p, size);
        if (rc == 0) f->AddPages(f->committed_, p, size);
        return rc;
    }
    static int Decommit(void *ctx, void *p, size_t size) {
        FaultPrim *f = Self(ctx);
        std::lock_guard<std::mutex> g(f->mu_);
        f->decommits++;
        f->Aligned(p, size);
        f->Inside(p, size);
        f->DropPages(f->committed_, p, size);
        return f->os_.decommit(f->os_.ctx, p, size);
    }
    static int Purge(void *ctx, void *p, size_t size) {
        FaultPrim *f = Self(ctx);
        int rc;
        {
            std::lock_guard<std::mutex> g(f->mu_);
            f->purges++;
            f->Aligned(p, size);
            rc = f->os_.purge(f->os_.ctx, p, size);
        }
        // A slow host: handing pages back takes this long a MiB on top.
        uint64_t ns = (uint64_t)((unsigned __int128)size * f->purge_delay_ns_per_mib.load() >> 20);
        if (ns) {
            struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
            while (nanosleep(&ts, &ts) != 0) {
            }
        }
        return rc;
    }
    static int Lock(void *ctx, void *p, size_t size) {
        FaultPrim *f = Self(ctx);
        std::lock_guard<std::mutex> g(f->mu_);
        f->Aligned(p, size);
        f->Inside(p, size);
        if (f->lock.Fire()) return f->lock.err;
        f->AddPages(f->locked_, p, size);  // simulated: no mlock()
        return 0;
    }
    static int Unlock(void *ctx, void *p, size_t size) {
        FaultPrim *f = Self(ctx);
        std::lock_guard<std::mutex> g(f->mu_);
        f->unlocks++;
        f->Aligned(p, size);
        f->DropPages(f->locked_, p, size);
        return 0;
    }

    mutable std::mutex mu_;
    ml_prim os_;
    ml_prim prim_;
    std::map<uintptr_t, size_t> reservations_;
    std::set<uintptr_t> committed_, locked_;
};

#endif
