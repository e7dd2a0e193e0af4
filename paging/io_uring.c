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
#include <stdlib.h>

#include "paging/io.h"

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

static int u_submit(ml_io *io)
{
    uring_io *u = (uring_io *)io;
    int r;
    do {
        r = io_uring_submit(&u->ring);
    } while (r == -EINTR);
    return r < 0 ? r : 0;
}

static int u_submit_wait(ml_io *io, unsigned wait_nr)
{
    uring_io *u = (uring_io *)io;
    int r;
    do {
        r = io_uring_submit_and_wait(&u->ring, wait_nr);
    } while (r == -EINTR);
    return r < 0 ? r : 0;
}

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
        io->inflight--;
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
    /* Everything in flight completes before the ring goes away. */
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
