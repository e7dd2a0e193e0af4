/*
 * io_sync.c — the pread/pwrite engine: each request runs when it is queued
 * (looping over partial transfers, as pread and pwrite may stop early), and
 * its completion waits in a small queue until reaped.
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "paging/io.h"

typedef struct {
    ml_io io;
    ml_io_cqe *done;
    unsigned head, count;
} sync_io;

static int push(sync_io *s, uint64_t tag, long res)
{
    if (s->count == s->io.depth) return -EAGAIN;
    s->done[(s->head + s->count) % s->io.depth] = (ml_io_cqe){tag, res};
    s->count++;
    s->io.inflight++;
    return 0;
}

long ml__io_full_rw(int fd, void *buf, size_t len, uint64_t off, int writing)
{
    size_t done = 0;
    while (done < len) {
        ssize_t r = writing ? pwrite(fd, (const char *)buf + done, len - done, (off_t)(off + done))
                            : pread(fd, (char *)buf + done, len - done, (off_t)(off + done));
        if (r < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        if (r == 0) break; /* end of file: a short read */
        done += (size_t)r;
    }
    return (long)done;
}

static int s_write(ml_io *io, const void *buf, size_t len, uint64_t off, int bi, uint64_t tag)
{
    (void)bi;
    sync_io *s = (sync_io *)io;
    if (s->count == io->depth) return -EAGAIN;
    return push(s, tag, ml__io_full_rw(io->fd, (void *)buf, len, off, 1));
}

static int s_read(ml_io *io, void *buf, size_t len, uint64_t off, int bi, uint64_t tag)
{
    (void)bi;
    sync_io *s = (sync_io *)io;
    if (s->count == io->depth) return -EAGAIN;
    return push(s, tag, ml__io_full_rw(io->fd, buf, len, off, 0));
}

static int s_submit(ml_io *io)
{
    (void)io;
    return 0;
}

static int s_reap(ml_io *io, ml_io_cqe *out, unsigned max, unsigned min)
{
    (void)min; /* everything queued has completed already */
    sync_io *s = (sync_io *)io;
    unsigned n = 0;
    while (n < max && s->count) {
        out[n++] = s->done[s->head];
        s->head = (s->head + 1) % io->depth;
        s->count--;
        io->inflight--;
    }
    return (int)n;
}

static int s_register(ml_io *io, const struct iovec *iov, unsigned n)
{
    (void)io, (void)iov, (void)n;
    return 0;
}

static void s_destroy(ml_io *io)
{
    sync_io *s = (sync_io *)io;
    free(s->done);
    free(s);
}

static const ml_io_ops sync_ops = {"pread/pwrite", s_write, s_read, s_submit, s_reap, s_register, s_destroy};

int ml__io_sync_open(int fd, unsigned depth, ml_io **out)
{
    sync_io *s = calloc(1, sizeof *s);
    if (!s) return -ENOMEM;
    s->done = calloc(depth, sizeof *s->done);
    if (!s->done) {
        free(s);
        return -ENOMEM;
    }
    s->io = (ml_io){&sync_ops, fd, depth, 0};
    *out = &s->io;
    return 0;
}

int ml__io_open_default(void *ctx, int fd, unsigned depth, int which, ml_io **out)
{
    (void)ctx;
    if (which != ML_IO_WHICH_SYNC) {
        int rc = ml__io_uring_open(fd, depth, out);
        if (rc == 0 || which == ML_IO_WHICH_URING) return rc;
    }
    return ml__io_sync_open(fd, depth, out);
}
