// FaultIO: an I/O engine (paging/io.h) that wraps a real one (io_uring or
// pread/pwrite) and injects faults at chosen operations: a write that fails
// with an errno, a short write, a read that fails, a read whose data gets
// one bit flipped, a read served from another offset (a stale record), an
// engine that breaks: it takes writes (or reads) and never completes them, and its reap
// then fails as a whole; a submission the kernel refuses (io_uring only: the
// ring's descriptor is swapped for /dev/null during the call, so the real
// io_uring_enter fails and the real engine must cope).
// Everything else goes to the real engine, on the real swap file.
//
// The pager may open several engines through one FaultIO (page-ins read
// with engines of their own, without the pager lock), so the counters are
// shared and locked, and operation numbers count across all of them.
#ifndef ML_TESTS_FAULT_IO_H
#define ML_TESTS_FAULT_IO_H

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

extern "C" {
#include "paging/io.h"
#include "paging/pager.h"
}

struct FaultIO {
    // Rules: operation numbers count from 0 per kind; -1 = never.
    int fail_write_at = -1;
    int fail_write_err = EIO;
    bool short_write = false;  // the failing write completes half its bytes
    int fail_all_writes_from = -1;
    int lose_writes_from = -1;  // taken, never completed: the engine broke
    int lose_reads_from = -1;   // the same for reads
    // The lost requests are reported done after all, late: once the test
    // calls DeliverLate, the next reap of their engine returns their
    // completions first (successes, with their original tags), as a kernel
    // that still held them would. (Nothing is written: whoever takes one
    // of them for a write of its own loses that entry.)
    bool late_lost = false;
    int fail_read_at = -1;
    int fail_read_err = EIO;
    int flip_read_at = -1;      // flip one bit of the data read
    int redirect_read_at = -1;  // read from redirect_off instead
    uint64_t redirect_off = 0;
    int which = ML_IO_WHICH_AUTO;  // inner engine
    unsigned write_delay_us = 0;   // every write waits this long first (a slow disk)
    // Completions are delivered only to a reap that waits for some (min > 0):
    // a look at the ring (min 0) finds none, as on a disk slower than the CPU.
    bool only_waiting_reaps = false;
    unsigned read_delay_us = 0;    // every read too
    // A concurrency probe: a read waits (up to this long) until another read
    // has started too; max_reads_at_once records the most reads seen inside
    // the engine at the same time.
    unsigned read_gate_ms = 0;
    int max_reads_at_once = 0;
    int fail_open_from = -1;  // engines opened from this one on fail (EMFILE)
    int fail_submit_at = -1;  // this submission (counted across engines) is refused; io_uring only


    // What happened.
    int writes = 0, reads = 0, injected = 0, opens = 0, submits = 0;
    // Bytes of writes taken by the inner engine and not yet reaped by the
    // pager (the record buffers it holds), and the most seen at once.
    size_t write_bytes_held = 0, max_write_bytes_held = 0;
    std::string inner_name;
    std::vector<int> asked;  // the engine kind each open asked for (ML_IO_WHICH_*)

    // Counters read while engines may be running.
    int Writes() {
        std::lock_guard<std::mutex> g(mu_);
        return writes;
    }
    int Reads() {
        std::lock_guard<std::mutex> g(mu_);
        return reads;
    }
    int Submits() {
        std::lock_guard<std::mutex> g(mu_);
        return submits;
    }
    void DeliverLate() {
        std::lock_guard<std::mutex> g(mu_);
        deliver_late_ = true;
    }
    // Refuse the next submission, whichever engine makes it.
    void RefuseNextSubmit() {
        std::lock_guard<std::mutex> g(mu_);
        fail_submit_at = submits;
    }

    // The io_uring instances this process has open (their descriptors).
    static std::set<int> IoUringFds() {
        std::set<int> fds;
        DIR *d = opendir("/proc/self/fd");
        if (!d) return fds;
        while (struct dirent *e = readdir(d)) {
            char link[64];
            std::string p = std::string("/proc/self/fd/") + e->d_name;
            ssize_t k = readlink(p.c_str(), link, sizeof link - 1);
            if (k <= 0) continue;
            link[k] = 0;
            if (strcmp(link, "anon_inode:[io_uring]") == 0) fds.insert(atoi(e->d_name));
        }
        closedir(d);
        return fds;
    }

    static int Open(void *ctx, int fd, unsigned depth, int which, ml_io **out) {
        FaultIO *f = (FaultIO *)ctx;
        std::lock_guard<std::mutex> g(f->mu_);
        if (f->fail_open_from >= 0 && f->opens >= f->fail_open_from) {
            f->injected++;
            return -EMFILE;
        }
        f->opens++;
        f->asked.push_back(which);
        auto *w = new Wrap;
        w->f = f;
        std::set<int> rings = IoUringFds();
        int rc = ml__io_open_default(nullptr, fd, depth, f->which != ML_IO_WHICH_AUTO ? f->which : which, &w->inner);
        if (rc) {
            delete w;
            return rc;
        }
        for (int r : IoUringFds())
            if (!rings.count(r)) w->ring_fd = r;
        f->inner_name = w->inner->ops->name;
        w->io = ml_io{&ops_, fd, depth, 0};
        *out = &w->io;
        return 0;
    }

    ml_arena *Create(const ml_config *cfg) {
        ml_arena *a = nullptr;
        int rc = ml__arena_create_io(cfg, &FaultIO::Open, this, &a);
        return rc == 0 ? a : nullptr;
    }

  private:
    std::mutex mu_;  // the rules and counters above, once engines exist
    std::condition_variable gate_;
    int reads_now_ = 0;
    bool deliver_late_ = false;

    struct Wrap {
        ml_io io;  // first: the pager sees this
        ml_io *inner;
        FaultIO *f;
        std::deque<ml_io_cqe> fake;                // injected completions
        unsigned lost = 0;                         // requests taken and never completed
        std::deque<ml_io_cqe> late;                // their completions, for late_lost
        int ring_fd = -1;                          // the inner engine's io_uring, if any
        std::map<uint64_t, std::pair<char *, size_t>> flips;  // tag -> read buffer to corrupt
        std::map<uint64_t, size_t> write_len;                 // tag -> bytes of a write not reaped yet
    };
    static Wrap *W(ml_io *io) { return (Wrap *)io; }

    // Take a request and never complete it (the engine broke), or -EAGAIN
    // when the queue is full (the operation is not counted: *counted--).
    // Caller holds mu_.
    static int Lose(Wrap *w, int *counted, uint64_t tag, size_t len) {
        if (w->io.inflight >= w->io.depth) {
            (*counted)--;
            return -EAGAIN;
        }
        w->f->injected++;
        w->lost++;
        w->late.push_back(ml_io_cqe{tag, (long)len});
        w->io.inflight++;
        return 0;
    }

    static int Write(ml_io *io, const void *buf, size_t len, uint64_t off, int bi, uint64_t tag) {
        Wrap *w = W(io);
        FaultIO *f = w->f;
        if (f->write_delay_us) usleep(f->write_delay_us);
        std::lock_guard<std::mutex> g(f->mu_);
        int n = f->writes++;
        if (f->lose_writes_from >= 0 && n >= f->lose_writes_from) return Lose(w, &f->writes, tag, len);
        bool fail = n == f->fail_write_at || (f->fail_all_writes_from >= 0 && n >= f->fail_all_writes_from);
        if (fail) {
            if (io->inflight >= io->depth) {
                f->writes--;
                return -EAGAIN;
            }
            f->injected++;
            if (f->short_write) {
                // Really write half, then report the short count.
                size_t part = len > 4096 ? len - 4096 : len / 2;
                int rc = w->inner->ops->write(w->inner, buf, part, off, -1, tag);
                if (rc) return rc;
                io->inflight++;
                return 0;
            }
            w->fake.push_back(ml_io_cqe{tag, -(long)f->fail_write_err});
            io->inflight++;
            return 0;
        }
        int rc = w->inner->ops->write(w->inner, buf, len, off, bi, tag);
        if (rc == 0) {
            io->inflight++;
            w->write_len[tag] = len;
            f->write_bytes_held += len;
            f->max_write_bytes_held = std::max(f->max_write_bytes_held, f->write_bytes_held);
        } else {
            f->writes--;
        }
        return rc;
    }

    static int Read(ml_io *io, void *buf, size_t len, uint64_t off, int bi, uint64_t tag) {
        Wrap *w = W(io);
        FaultIO *f = w->f;
        if (f->read_delay_us) usleep(f->read_delay_us);
        std::unique_lock<std::mutex> g(f->mu_);
        if (f->read_gate_ms) {
            f->reads_now_++;
            f->max_reads_at_once = std::max(f->max_reads_at_once, f->reads_now_);
            f->gate_.notify_all();
            f->gate_.wait_for(g, std::chrono::milliseconds(f->read_gate_ms),
                              [f] { return f->max_reads_at_once >= 2; });
            f->reads_now_--;
        }
        int n = f->reads++;
        if (f->lose_reads_from >= 0 && n >= f->lose_reads_from) return Lose(w, &f->reads, tag, len);
        if (n == f->fail_read_at) {
            f->injected++;
            w->fake.push_back(ml_io_cqe{tag, -(long)f->fail_read_err});
            io->inflight++;
            return 0;
        }
        if (n == f->redirect_read_at) {
            f->injected++;
            off = f->redirect_off;
        }
        int rc = w->inner->ops->read(w->inner, buf, len, off, bi, tag);
        if (rc) {
            f->reads--;
            return rc;
        }
        if (n == f->flip_read_at) {
            f->injected++;
            w->flips[tag] = {(char *)buf, len};
        }
        io->inflight++;
        return 0;
    }

    static int Submit(ml_io *io) { return SubmitWait(io, 0); }

    // The real engine's submit_wait where it has one (as the pager uses
    // it), waiting only for requests really in it (not for injected ones).
    static int SubmitWait(ml_io *io, unsigned wait_nr) {
        Wrap *w = W(io);
        FaultIO *f = w->f;
        bool refuse;
        {
            std::lock_guard<std::mutex> g(f->mu_);
            refuse = f->submits++ == f->fail_submit_at && w->ring_fd >= 0;
            if (refuse) f->injected++;
        }
        ml_io *in = w->inner;
        unsigned before = in->inflight;
        if (wait_nr > before) wait_nr = before;
        auto submit = [&] { return wait_nr && in->ops->submit_wait ? in->ops->submit_wait(in, wait_nr) : in->ops->submit(in); };
        int rc;
        if (refuse) {
            // io_uring_enter on a descriptor that is no io_uring fails
            // (EOPNOTSUPP) with the requests still in the ring.
            int saved = dup(w->ring_fd), nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
            dup3(nul, w->ring_fd, O_CLOEXEC);
            rc = submit();
            dup3(saved, w->ring_fd, O_CLOEXEC);
            close(saved);
            close(nul);
        } else {
            rc = submit();
        }
        io->inflight -= before - in->inflight;  // what the engine took back
        return rc;
    }

    static int Reap(ml_io *io, ml_io_cqe *out, unsigned max, unsigned min) {
        Wrap *w = W(io);
        unsigned n = 0;
        if (min == 0 && w->f->only_waiting_reaps) return 0;
        {
            std::lock_guard<std::mutex> g(w->f->mu_);
            if (w->f->late_lost && w->f->deliver_late_ && !w->late.empty()) {
                w->fake.insert(w->fake.begin(), w->late.begin(), w->late.end());
                w->late.clear();
                w->lost = 0;
            }
        }
        while (n < max && !w->fake.empty()) {
            out[n++] = w->fake.front();
            w->fake.pop_front();
        }
        if (n < max && w->inner->inflight) {
            int r = w->inner->ops->reap(w->inner, out + n, max - n, min > n ? min - n : 0);
            if (r < 0) return n ? (int)n : r;
            for (int i = 0; i < r; i++) {
                auto it = w->flips.find(out[n + i].tag);
                if (it != w->flips.end() && out[n + i].res > 0) {
                    // Flip a bit in the middle of the payload.
                    it->second.first[it->second.second / 2] ^= 0x10;
                    w->flips.erase(it);
                }
            }
            n += (unsigned)r;
        }
        // Only lost requests left, and the caller wants one: the engine failed.
        if (n == 0 && min > 0 && w->lost) return -EIO;
        // Whoever gave up on lost requests stopped counting them: late
        // completions never take the count below zero.
        io->inflight -= std::min(n, io->inflight);
        {
            std::lock_guard<std::mutex> g(w->f->mu_);
            for (unsigned i = 0; i < n; i++) {
                auto it = w->write_len.find(out[i].tag);
                if (it == w->write_len.end()) continue;
                w->f->write_bytes_held -= it->second;
                w->write_len.erase(it);
            }
        }
        return (int)n;
    }

    static int Register(ml_io *io, const struct iovec *iov, unsigned n) {
        return W(io)->inner->ops->register_buffers(W(io)->inner, iov, n);
    }

    static void Destroy(ml_io *io) {
        Wrap *w = W(io);
        w->inner->ops->destroy(w->inner);
        delete w;
    }

    static const ml_io_ops ops_;
};

inline const ml_io_ops FaultIO::ops_ = {"fault",        &FaultIO::Write,    &FaultIO::Read,
                                        &FaultIO::Submit, &FaultIO::Reap,     &FaultIO::Register,
                                        &FaultIO::Destroy, &FaultIO::SubmitWait};

#endif
