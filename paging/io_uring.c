/*
 * io_uring.c — the io_uring engine (liburing).
 *
 * Requests are prepared into the submission ring and handed to the kernel
 * in one io_uring_submit per batch; with registered buffers, writes and reads
 * use the fixed-buffer opcodes so the kernel skips pinning pages per request.
 * Completions are reaped in batches. Errors come back per request in cqe->res
 * as -errno; a short transfer comes back as a smaller count, which the pager
 * treats as a failure.
 */
#include <errno.h>
#include <liburing.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#include "paging/io.h"

#define SUBMIT_TRIES 4        /* submissions of one batch before it is taken back */
#define SUBMIT_BACKOFF_US 50  /* first pause between them; doubles */

typedef struct {
    ml_io io;
    struct io_uring ring;
    unsigned nbufs;
} uring_io;

static int u_write(ml_io *io, const void *buf, size_t len, uint64_t off, int bi, uint64_t tag)
{
    uring_io *u = (uring_io *)io;
    if (io->inflight >= io->depth) return -EAGAIN;
    struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
    if (!sqe) return -EAGAIN;
    if (bi >= 0 && (unsigned)bi < u->nbufs)
        io_uring_prep_write_fixed(sqe, io->fd, buf, (unsigned)len, off, bi);
    else
        io_uring_prep_write(sqe, io->fd, buf, (unsigned)len, off);
    io_uring_sqe_set_data64(sqe, tag);
    io->inflight++;
    return 0;
}

static int u_read(ml_io *io, void *buf, size_t len, uint64_t off, int bi, uint64_t tag)
{
    uring_io *u = (uring_io *)io;
    if (io->inflight >= io->depth) return -EAGAIN;
    struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
    if (!sqe) return -EAGAIN;
    if (bi >= 0 && (unsigned)bi < u->nbufs)
        io_uring_prep_read_fixed(sqe, io->fd, buf, (unsigned)len, off, bi);
    else
        io_uring_prep_read(sqe, io->fd, buf, (unsigned)len, off);
    io_uring_sqe_set_data64(sqe, tag);
    io->inflight++;
    return 0;
}

/* Requests left in the submission ring after a failed or partial
 * io_uring_enter (-EAGAIN or -ENOMEM under memory pressure, -EBUSY, a broken
 * ring) are taken back out: without SQPOLL only io_uring_enter reads the
 * ring, so nothing can take them meanwhile, and a later submission would
 * otherwise run them long after their caller gave up on them (a write of a
 * reused buffer over a reused swap extent). They will never run, and they
 * leave the in-flight count. Returns how many were taken back. */
static unsigned u_retract(uring_io *u)
{
    struct io_uring_sq *sq = &u->ring.sq;
    unsigned head = io_uring_smp_load_acquire(sq->khead);
    unsigned n = sq->sqe_tail - head;
    sq->sqe_tail = sq->sqe_head = head;
    io_uring_smp_store_release(sq->ktail, head);
    u->io.inflight -= n;
    return n;
}

/* What a short submission may be waiting out: a shortage the kernel reports
 * as such, or a count that stopped early. */
static bool transient(int r) { return r >= 0 || r == -EAGAIN || r == -EBUSY || r == -ENOMEM; }

/* Hand the queued requests over, waiting for wait_nr completions when the
 * kernel takes all of them. What it does not take is tried again a few
 * times (a transient shortage), then taken back (u_retract) and reported as
 * an error: the caller reaps what was taken and fails the rest. */
static int u_enter(uring_io *u, unsigned wait_nr)
{
    for (unsigned tries = 1;; tries++) {
        int r;
        do {
            r = wait_nr ? io_uring_submit_and_wait(&u->ring, wait_nr) : io_uring_submit(&u->ring);
        } while (r == -EINTR);
        if (io_uring_sq_ready(&u->ring) == 0) return 0; /* all taken: the caller reaps them */
        if (!transient(r) || tries >= SUBMIT_TRIES) {
            u_retract(u);
            return r < 0 ? r : -EAGAIN;
        }
        wait_nr = 0; /* the caller's reap waits for what was taken */
        usleep(SUBMIT_BACKOFF_US << (tries - 1));
    }
}

static int u_submit(ml_io *io) { return u_enter((uring_io *)io, 0); }

static int u_submit_wait(ml_io *io, unsigned wait_nr) { return u_enter((uring_io *)io, wait_nr); }

static int u_reap(ml_io *io, ml_io_cqe *out, unsigned max, unsigned min)
{
    uring_io *u = (uring_io *)io;
    if (min > io->inflight) min = io->inflight;
    unsigned n = 0;
    while (n < max) {
        struct io_uring_cqe *cqe;
        int r = n < min ? io_uring_wait_cqe(&u->ring, &cqe) : io_uring_peek_cqe(&u->ring, &cqe);
        if (r == -EINTR) continue;
        if (r == -EAGAIN) break; /* nothing more ready */
        if (r < 0) return n ? (int)n : r;
        out[n].tag = io_uring_cqe_get_data64(cqe);
        out[n].res = cqe->res;
        io_uring_cqe_seen(&u->ring, cqe);
        if (io->inflight) io->inflight--; /* (0: a late one the pager wrote off) */
        n++;
    }
    return (int)n;
}

static int u_register(ml_io *io, const struct iovec *iov, unsigned n)
{
    uring_io *u = (uring_io *)io;
    int r = io_uring_register_buffers(&u->ring, iov, n);
    if (r == 0) u->nbufs = n;
    return r;
}

static void u_destroy(ml_io *io)
{
    uring_io *u = (uring_io *)io;
    /* Whatever was queued and never handed over will not be: only what the
     * kernel took is waited for. Everything in flight completes before the
     * ring goes away. */
    u_retract(u);
    while (io->inflight) {
        struct io_uring_cqe *cqe;
        if (io_uring_wait_cqe(&u->ring, &cqe) < 0) break;
        io_uring_cqe_seen(&u->ring, cqe);
        io->inflight--;
    }
    io_uring_queue_exit(&u->ring);
    free(u);
}

static const ml_io_ops uring_ops = {"io_uring", u_write,   u_read,    u_submit,
                                    u_reap,     u_register, u_destroy, u_submit_wait};

struct io_uring *ml__io_uring_ring(ml_io *io) { return &((uring_io *)io)->ring; }

int ml__io_uring_open(int fd, unsigned depth, ml_io **out)
{
    uring_io *u = calloc(1, sizeof *u);
    if (!u) return -ENOMEM;
    int r = io_uring_queue_init(depth, &u->ring, 0);
    if (r < 0) {
        free(u);
        return r;
    }
    u->io = (ml_io){&uring_ops, fd, depth, 0};
    *out = &u->io;
    return 0;
}
