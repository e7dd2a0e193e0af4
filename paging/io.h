/*
 * io.h — the I/O engine interface of the pager, and its two engines.
 *
 * The pager queues reads and writes, submits them, and reaps completions;
 * an engine does the rest. io_uring is the real one (O_DIRECT, batched
 * submissions, registered buffers); pread/pwrite is the fallback when
 * io_uring is unavailable (old kernel, io_uring_disabled, seccomp) and the
 * seam tests use: tests/fault_io.c wraps either engine to inject EIO,
 * ENOSPC, short writes and bit flips at chosen operations.
 *
 * Engines are not thread-safe: the pager serialises calls.
 */
#ifndef ML_PAGING_IO_H
#define ML_PAGING_IO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

typedef struct ml_io ml_io;

typedef struct ml_io_cqe {
    uint64_t tag; /* as given to read/write */
    long res;     /* bytes transferred, or -errno */
} ml_io_cqe;

typedef struct ml_io_ops {
    const char *name;
    /** Queue a write / read of len bytes at file offset off. buf_index is
     *  the registered buffer holding buf, or -1. 0, or -EAGAIN when the
     *  queue is full (reap first). */
    int (*write)(ml_io *io, const void *buf, size_t len, uint64_t off, int buf_index, uint64_t tag);
    int (*read)(ml_io *io, void *buf, size_t len, uint64_t off, int buf_index, uint64_t tag);
    /** Hand queued requests to the device. 0, or -errno when some could
     *  not be handed over: those are dropped (they will never run and
     *  leave `inflight`), so the caller reaps what is in flight and treats
     *  every request it gets no completion for as failed. */
    int (*submit)(ml_io *io);
    /** Wait for at least min completions (at most the number in flight) and
     *  return up to max of them. Count or -errno. */
    int (*reap)(ml_io *io, ml_io_cqe *out, unsigned max, unsigned min);
    /** Register buffers for fixed I/O (may do nothing). 0 or -errno. */
    int (*register_buffers)(ml_io *io, const struct iovec *iov, unsigned n);
    void (*destroy)(ml_io *io);
    /** Optional (NULL: submit, then reap waits): hand queued requests over
     *  and wait for wait_nr completions in one system call. Fails as
     *  submit does; 0 does not promise the completions came (reap waits). */
    int (*submit_wait)(ml_io *io, unsigned wait_nr);
} ml_io_ops;

struct ml_io {
    const ml_io_ops *ops;
    int fd;
    unsigned depth;    /* most requests in flight */
    unsigned inflight; /* queued or submitted, not yet reaped */
};

/** pread/pwrite of len bytes, looping over partial transfers: the bytes
 *  moved (fewer only at end of file), or -errno. */
long ml__io_full_rw(int fd, void *buf, size_t len, uint64_t off, int writing);
/** Most bytes one io_uring submission asks for (1 GiB); the rest of a
 *  larger request goes with ml__io_full_rw. Test hook: tests lower it. */
extern size_t ml__io_uring_max_part;

/** Open an engine on fd. io_uring: -ENOSYS/-EPERM/... when unavailable. */
int ml__io_uring_open(int fd, unsigned depth, ml_io **out);
int ml__io_sync_open(int fd, unsigned depth, ml_io **out);

/** Test hook (not exported): the ring of an engine ml__io_uring_open made,
 *  for tests that must queue requests the engine itself never makes (one
 *  the kernel refuses while taking the ones before it). */
struct io_uring;
struct io_uring *ml__io_uring_ring(ml_io *io);

/** The last resort when a broken engine must be replaced and the factory
 *  (below) cannot make another: ml__io_sync_open. Test hook (not
 *  exported): fault tests make it fail to reach the case where the broken
 *  engine has to stay. */
extern int (*ml__io_fallback_open)(int fd, unsigned depth, ml_io **out);

/** Makes engines for a pager: the default tries io_uring, then pread/pwrite
 *  (fallback_used says which). Tests install their own. Called from any
 *  thread, possibly several at once (page-in readers open theirs without
 *  the pager lock): a factory with state must lock it. */
typedef int (*ml_io_open_fn)(void *ctx, int fd, unsigned depth, int which, ml_io **out);
enum { ML_IO_WHICH_AUTO = 0, ML_IO_WHICH_URING = 1, ML_IO_WHICH_SYNC = 2 };
int ml__io_open_default(void *ctx, int fd, unsigned depth, int which, ml_io **out);

#endif
