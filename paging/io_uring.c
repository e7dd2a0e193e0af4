/*
 * io_uring.c — the io_uring engine (liburing).
 *
 * Requests are prepared into the submission ring and handed to the kernel
 * in one io_uring_submit per batch; with registered buffers, writes and reads
 * use the fixed-buffer opcodes so the kernel skips pinning pages per request.
 * Completions are reaped in batches. Errors come back per request in cqe->res
 * as -errno.
 *
 * Short transfers. The kernel moves at most MAX_RW_COUNT (2 GiB less a
 * page) per read or write, and may stop early for other reasons (a signal,
 * a device limit), so a completion can carry fewer bytes than asked; and a
 * submission entry's length has 32 bits. A request asks the ring for at
 * most ml__io_uring_max_part bytes (1 GiB), and when its completion comes
 * back short, the reap finishes it with pread/pwrite from where it stopped
 * (ml__io_full_rw, looping as the other engine does) before reporting it
 * whole, or with the error or end of file that stopped it. Short transfers
 * happen only for records over 1 GiB, or rarely: finishing them in the
 * reap (which the pager serialises anyway) keeps the ring's bookkeeping to
 * one entry per request. Requests are kept in a table of `depth` entries;
 * a submission entry carries its request's index.
 */
#include <errno.h>
#include <liburing.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#include "paging/io.h"

#define SUBMIT_TRIES 4        /* submissions of one batch before it is taken back */
#define SUBMIT_BACKOFF_US 50  /* first pause between them; doubles */

size_t ml__io_uring_max_part = (size_t)1 << 30;

typedef struct {
    char *buf;
    size_t len;
    uint64_t off, tag;
    int bi;
    bool writing, used;
    uint32_t gen;       /* bumped each time the entry is given up */
    uint32_t next_free;
} u_req;

#define REQ_NIL UINT32_MAX
/* A submission entry of ours carries REQ_MARK | its request's generation
 * (31 bits) << 32 | its index; any other (tests queue their own through
 * ml__io_uring_ring) is reported with its user_data as the tag, as it is.
 * A completion whose generation is not its entry's is a request the pager
 * wrote off (below): it is dropped. */
#define REQ_MARK (1ull << 63)
#define REQ_GEN(d) ((uint32_t)((d) >> 32) & 0x7fffffffu)

typedef struct {
    ml_io io;
    struct io_uring ring;
    unsigned nbufs;
    u_req *reqs; /* [depth] */
    uint32_t free_head;
    uint32_t nused; /* entries in use: requests queued or in the kernel */
} uring_io;

/* Queue the part of request i not yet done. Caller made sure of an entry. */
static void prep_part(uring_io *u, uint32_t i, struct io_uring_sqe *sqe)
{
    u_req *r = &u->reqs[i];
    size_t n = r->len < ml__io_uring_max_part ? r->len : ml__io_uring_max_part;
    char *b = r->buf;
    uint64_t off = r->off;
    bool fixed = r->bi >= 0 && (unsigned)r->bi < u->nbufs;
    if (r->writing) {
        if (fixed) io_uring_prep_write_fixed(sqe, u->io.fd, b, (unsigned)n, off, r->bi);
        else io_uring_prep_write(sqe, u->io.fd, b, (unsigned)n, off);
    } else {
        if (fixed) io_uring_prep_read_fixed(sqe, u->io.fd, b, (unsigned)n, off, r->bi);
        else io_uring_prep_read(sqe, u->io.fd, b, (unsigned)n, off);
    }
    io_uring_sqe_set_data64(sqe, REQ_MARK | (uint64_t)(r->gen & 0x7fffffffu) << 32 | i);
}

static void req_put(uring_io *u, uint32_t i)
{
    if (u->reqs[i].used) u->nused--;
    u->reqs[i].used = false;
    u->reqs[i].gen++;
    u->reqs[i].next_free = u->free_head;
    u->free_head = i;
}

/* The pager writes requests off when its engine failed as a whole and no
 * other could be opened: it sets the in-flight count to 0 (renew_engine),
 * while the kernel may still hold them. Their entries are given up here
 * at once (their generation moves on, so their completions, if they ever
 * come, are dropped: never finished with pread/pwrite into buffers and
 * extents the pager has reused, never reported against a new request),
 * and the table has room for new requests again. */
static void write_off_check(uring_io *u)
{
    if (u->io.inflight >= u->nused) return;
    for (uint32_t i = 0; i < u->io.depth; i++)
        if (u->reqs[i].used) req_put(u, i);
}

static int u_queue(ml_io *io, void *buf, size_t len, uint64_t off, int bi, uint64_t tag, bool writing)
{
    uring_io *u = (uring_io *)io;
    write_off_check(u);
    if (io->inflight >= io->depth || u->free_head == REQ_NIL) return -EAGAIN;
    struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
    if (!sqe) return -EAGAIN;
    uint32_t i = u->free_head;
    u->free_head = u->reqs[i].next_free;
    u->reqs[i] = (u_req){(char *)buf, len, off, tag, bi, writing, true, u->reqs[i].gen, REQ_NIL};
    u->nused++;
    prep_part(u, i, sqe);
    io->inflight++;
    return 0;
}

static int u_write(ml_io *io, const void *buf, size_t len, uint64_t off, int bi, uint64_t tag)
{
    return u_queue(io, (void *)buf, len, off, bi, tag, true);
}

static int u_read(ml_io *io, void *buf, size_t len, uint64_t off, int bi, uint64_t tag)
{
    return u_queue(io, buf, len, off, bi, tag, false);
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
    for (unsigned k = head; k != sq->sqe_tail; k++) {
        uint64_t d = sq->sqes[k & *sq->kring_mask].user_data;
        uint32_t i = (uint32_t)d;
        if ((d & REQ_MARK) && i < u->io.depth && u->reqs[i].used && REQ_GEN(d) == (u->reqs[i].gen & 0x7fffffffu))
            req_put(u, i);
    }
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
    write_off_check(u);
    if (min > io->inflight) min = io->inflight;
    unsigned n = 0;
    while (n < max) {
        struct io_uring_cqe *cqe;
        int r = n < min ? io_uring_wait_cqe(&u->ring, &cqe) : io_uring_peek_cqe(&u->ring, &cqe);
        if (r == -EINTR) continue;
        if (r == -EAGAIN) break; /* nothing more ready */
        if (r < 0) return n ? (int)n : r;
        uint64_t d = io_uring_cqe_get_data64(cqe);
        int res = cqe->res;
        io_uring_cqe_seen(&u->ring, cqe);
        if (!(d & REQ_MARK)) { /* (a test's own entry) */
            out[n].tag = d;
            out[n].res = res;
            if (io->inflight) io->inflight--;
            n++;
            continue;
        }
        uint32_t i = (uint32_t)d;
        u_req *q = &u->reqs[i];
        if (i >= io->depth || !q->used || REQ_GEN(d) != (q->gen & 0x7fffffffu)) continue; /* written off */
        long got = res;
        if (res > 0 && (size_t)res < q->len) {
            /* Short: the rest goes with pread/pwrite (see the top). */
            long more = ml__io_full_rw(io->fd, q->buf + res, q->len - (size_t)res, q->off + (uint64_t)res,
                                       q->writing);
            got = more < 0 ? more : res + more;
        }
        out[n].tag = q->tag;
        out[n].res = got;
        req_put(u, i);
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
    free(u->reqs);
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
    u->reqs = calloc(depth, sizeof *u->reqs);
    if (!u->reqs) {
        io_uring_queue_exit(&u->ring);
        free(u);
        return -ENOMEM;
    }
    u->free_head = REQ_NIL;
    for (uint32_t i = depth; i-- > 0;) req_put(u, i);
    u->io = (ml_io){&uring_ops, fd, depth, 0};
    *out = &u->io;
    return 0;
}
