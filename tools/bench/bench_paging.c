/*
 * bench_paging.c — eviction throughput, page-in latency, prefetch.
 *
 * Data: 64 KiB blobs from gen_blob (bench_data.c): about 1.8:1 with zstd -1,
 * like a mix of binaries and text.
 *
 * Baselines, measured by this program in the same run:
 *  - zstd alone: ZSTD_compressCCtx level 1 on the same blobs, one thread;
 *  - the disk: io_uring with O_DIRECT writing 64 KiB blocks at the same
 *    queue depth to a new file in the same directory as the swap file;
 *  - page-in: pread (O_DIRECT) of the very record MemoryLane reads, from
 *    its swap file through a descriptor of the benchmark's own (found in
 *    /proc/self/fd; the record's place from ml_handle_info_get), followed
 *    by ZSTD_decompressDCtx of its zstd frame with one context kept for the
 *    run (as the library keeps its own: a fresh context per call costs
 *    about 8 us more; the baseline checks no CRC), into
 *    the blob's own memory (each blob comes back to a place of its own, as
 *    MemoryLane's do: a page-in into one hot buffer would be a read that
 *    throws the data away), one at a time (queue depth 1), interleaved
 *    sample by sample with MemoryLane's page-ins (each side first in every
 *    other pair) so both see the same device state; repeated (all blobs
 *    evicted again each time) and the median of the repetitions' gaps
 *    reported, p50 and p99 both against the 10 us budget;
 *  - page-ins from two threads: the same 1000 blobs brought back on access
 *    by one thread (page-ins of different handles run at the same time:
 *    the figure shows how well they scale).
 */
#include <dirent.h>
#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

#include "bench.h"
#include "memorylane/memorylane.h"

#define BLOB ((size_t)64 << 10)

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static double pct(uint64_t *v, size_t n, double q)
{
    qsort(v, n, sizeof *v, cmp_u64);
    size_t k = (size_t)(q * (double)(n - 1));
    return (double)v[k] / 1000.0; /* us */
}

static const char *swap_dir(const bench_opts *o)
{
    if (o->swap_dir) return o->swap_dir;
    const char *t = getenv("TMPDIR");
    return t && *t ? t : "/var/tmp";
}

static ml_arena *paging_arena(const bench_opts *o, size_t slow_bytes)
{
    ml_config c;
    ml_config_init(&c);
    c.fast_lane_size = 1 << 20;
    c.slow_lane_size = slow_bytes;
    c.swap_size = (size_t)2 << 30;
    c.swap_dir = o->swap_dir;
    c.compressed_stage = false;
    c.enable_auto_compaction = false;
    c.io_engine = 0; /* the default: io_uring for the batches where it works (the eviction row notes which ran) */
    c.io_queue_depth = getenv("ML_BENCH_QD") ? (uint32_t)atoi(getenv("ML_BENCH_QD")) : 32;
    ml_arena *a;
    int rc = ml_arena_create(&c, &a);
    if (rc) {
        fprintf(stderr, "mlane_bench: arena: %s\n", ml_strerror(rc));
        exit(1);
    }
    return a;
}

static ml_handle *fill(ml_arena *a, size_t n, uint64_t seed0)
{
    ml_handle *hs = malloc(n * sizeof *hs);
    for (size_t i = 0; i < n; i++) {
        if (ml_alloc(a, BLOB, &hs[i])) {
            fprintf(stderr, "mlane_bench: alloc failed\n");
            exit(1);
        }
        gen_blob(seed0 + i, ml_get(a, hs[i]), BLOB);
    }
    return hs;
}

/* ---- baselines ------------------------------------------------------------------ */

/* zstd alone, on the same blobs laid out in memory as they are in the lane
 * (all generated first, so that, as for eviction, they are not in cache). */
static double zstd_mbs(size_t n, uint64_t seed0, double *ratio)
{
    unsigned char *src = malloc(n * BLOB), *dst = malloc(ZSTD_compressBound(BLOB));
    for (size_t i = 0; i < n; i++) gen_blob(seed0 + i, src + i * BLOB, BLOB);
    ZSTD_CCtx *cc = ZSTD_createCCtx();
    size_t in = 0, out = 0;
    double t0 = bench_now();
    for (size_t i = 0; i < n; i++) {
        size_t z = ZSTD_compressCCtx(cc, dst, ZSTD_compressBound(BLOB), src + i * BLOB, BLOB, 1);
        in += BLOB;
        out += ZSTD_isError(z) ? BLOB : z;
    }
    double t = bench_now() - t0;
    ZSTD_freeCCtx(cc);
    free(src);
    free(dst);
    *ratio = (double)in / (double)out;
    return (double)in / t / 1e6;
}

static int tmpfile_in(const char *dir, int flags)
{
    int fd = open(dir, O_TMPFILE | O_RDWR | flags, 0600);
    if (fd >= 0) return fd;
    char path[4096];
    snprintf(path, sizeof path, "%s/mlane-bench-XXXXXX", dir);
    fd = mkstemp(path);
    if (fd >= 0) {
        unlink(path);
        if (flags & O_DIRECT) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_DIRECT);
    }
    return fd;
}

static double disk_write_mbs(const char *dir, size_t n, unsigned depth)
{
    int fd = tmpfile_in(dir, O_DIRECT);
    if (fd < 0) return 0;
    if (ftruncate(fd, (off_t)(n * BLOB)) != 0) {
        close(fd);
        return 0;
    }
    struct io_uring ring;
    if (io_uring_queue_init(depth, &ring, 0)) {
        close(fd);
        return 0;
    }
    unsigned char *buf;
    if (posix_memalign((void **)&buf, 4096, depth * BLOB)) abort();
    for (size_t i = 0; i < depth * BLOB; i++) buf[i] = (unsigned char)(i * 131);
    double t0 = bench_now();
    size_t sent = 0, done = 0;
    while (done < n) {
        while (sent < n && sent - done < depth) {
            struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
            io_uring_prep_write(sqe, fd, buf + (sent % depth) * BLOB, BLOB, (off_t)(sent * BLOB));
            sent++;
        }
        io_uring_submit(&ring);
        struct io_uring_cqe *cqe;
        io_uring_wait_cqe(&ring, &cqe);
        io_uring_cqe_seen(&ring, cqe);
        done++;
        while (io_uring_peek_cqe(&ring, &cqe) == 0) {
            io_uring_cqe_seen(&ring, cqe);
            done++;
        }
    }
    double t = bench_now() - t0;
    io_uring_queue_exit(&ring);
    free(buf);
    close(fd);
    return (double)(n * BLOB) / t / 1e6;
}

/* ---- eviction throughput ------------------------------------------------------------ */

void bench_evict(const bench_opts *o)
{
    size_t n = o->quick ? 1024 : 4096; /* 64 or 256 MiB */
    int reps = o->reps > 16 ? 16 : o->reps;
    double ev[16], z[16], d[16], ratio = 0;
    char engine[48] = "engine: none";
    for (int r = 0; r < reps; r++) {
        bench_progress("evict: rep %d/%d (%zu blobs of 64 KiB)", r + 1, reps, n);
        ml_arena *a = paging_arena(o, n * BLOB + (n * BLOB) / 4);
        ml_handle *hs = fill(a, n, 1000);
        double t0 = bench_now();
        int got = ml_evict_many(a, hs, n);
        double t = bench_now() - t0;
        if (got != (int)n) fprintf(stderr, "mlane_bench: evicted %d of %zu\n", got, n);
        ml_paging_stats ps;
        if (ml_paging_stats_get(a, &ps) == 0) snprintf(engine, sizeof engine, "engine: %s", ps.engine);
        ev[r] = (double)(got > 0 ? got : 0) * BLOB / t / 1e6;
        ml_arena_destroy(a);
        free(hs);
        z[r] = zstd_mbs(n, 1000, &ratio);
        d[r] = disk_write_mbs(swap_dir(o), n, 32);
    }
    double zm = bench_median(z, reps), dm = bench_median(d, reps), em = bench_median(ev, reps);
    bench_figure("evict", "zstd -1 alone, 64 KiB", zm, "MB/s");
    bench_figure("evict", "disk write, O_DIRECT QD32 64 KiB", dm, "MB/s");
    bench_figure("evict", "zstd ratio of the data", ratio, "x");
    bench_better(BETTER_NONE); /* a property of the data */
    char base[48];
    snprintf(base, sizeof base, "slower of the two (%s)", zm < dm ? "zstd" : "disk");
    bench_report("evict", "eviction throughput (input)", em, "MB/s", base, zm < dm ? zm : dm, TARGET_AT_LEAST,
                 0.85, engine);
}

/* ---- page-in latency ------------------------------------------------------------------- */

/* A descriptor of its own (O_DIRECT, read-only) on the arena's swap file:
 * the one open file in dir that has no name, opened by the library (the
 * benchmark has none open while this runs). -1 if there is none. */
static int open_swap_file(const char *dir)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d) return -1;
    int found = -1, n = 0;
    size_t dl = strlen(dir);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char p[300], link[4096];
        snprintf(p, sizeof p, "/proc/self/fd/%s", e->d_name);
        ssize_t k = readlink(p, link, sizeof link - 1);
        if (k <= 0) continue;
        link[k] = 0;
        if (strncmp(link, dir, dl) == 0 && strstr(link, " (deleted)")) {
            found = atoi(e->d_name);
            n++;
        }
    }
    closedir(d);
    if (n != 1) return -1;
    char p[64];
    snprintf(p, sizeof p, "/proc/self/fd/%d", found);
    return open(p, O_RDONLY | O_DIRECT | O_CLOEXEC);
}

/* The zstd frame in a MemoryLane swap record (after its header). */
static const unsigned char *zstd_frame(const unsigned char *rec, size_t len, size_t *flen)
{
    static const unsigned char magic[4] = {0x28, 0xb5, 0x2f, 0xfd};
    for (size_t k = 0; k + 4 <= len && k < 512; k++)
        if (memcmp(rec + k, magic, 4) == 0) {
            size_t f = ZSTD_findFrameCompressedSize(rec + k, len - k);
            if (ZSTD_isError(f)) return NULL;
            *flen = f;
            return rec + k;
        }
    return NULL;
}

void bench_pagein(const bench_opts *o)
{
    size_t n = o->quick ? 500 : 2000;
    int reps = o->reps > 16 ? 16 : o->reps;
    bench_progress("page-in: %zu blobs of 64 KiB", n);
    ml_arena *a = paging_arena(o, n * BLOB + (n * BLOB) / 2 + ((size_t)16 << 20));
    ml_handle *hs = fill(a, n, 5000);
    if (ml_evict_many(a, hs, n) != (int)n) fprintf(stderr, "mlane_bench: page-in: not all evicted\n");
    /* The baseline reads the very records MemoryLane reads, from its swap
     * file, through a descriptor of its own: the same bytes at the same
     * place on the device, so that neither side's figure depends on where a
     * file happens to lie. */
    int fd = open_swap_file(swap_dir(o));
    if (fd < 0) {
        fprintf(stderr, "mlane_bench: page-in: cannot find the arena's swap file in %s\n", swap_dir(o));
        ml_arena_destroy(a);
        free(hs);
        return;
    }
    /* The baseline's blobs come back to n places, touched beforehand so that
     * it takes no page faults. */
    unsigned char *rec, *outs = malloc(n * BLOB);
    if (!outs) abort();
    memset(outs, 1, n * BLOB);
    size_t rec_cap = ZSTD_compressBound(BLOB) + 8192;
    if (posix_memalign((void **)&rec, 4096, rec_cap)) abort();
    uint64_t *lm = malloc(n * sizeof *lm), *lb = malloc(n * sizeof *lb);
    size_t *order = malloc(n * sizeof *order);
    ZSTD_DCtx *dc = ZSTD_createDCtx();
    if (!dc) abort();
    double m50[16], m99[16], b50[16], b99[16], g50[16], g99[16];
    volatile unsigned char sink = 0;
    for (int r = 0; r < reps; r++) {
        bench_progress("page-in: rep %d/%d, %zu samples at queue depth 1", r + 1, reps, n);
        if (r > 0 && ml_evict_many(a, hs, n) != (int)n) fprintf(stderr, "mlane_bench: page-in: not all evicted\n");
        uint64_t s = 99 + (uint64_t)r;
        for (size_t i = 0; i < n; i++) order[i] = i;
        for (size_t i = n; i > 1; i--) {
            size_t j = bench_rand(&s) % i, t = order[i - 1];
            order[i - 1] = order[j];
            order[j] = t;
        }
        for (size_t k = 0; k < n; k++) {
            size_t i = order[k];
            ml_handle_info info; /* where the record is (asking changes nothing) */
            if (ml_handle_info_get(a, hs[i], &info) != 0 || info.state != ML_STATE_EVICTED ||
                info.stored_size > rec_cap)
                abort();
            /* Each sample pairs the two, in turn first and second, so that
             * neither always finds the record in the device's cache. */
            for (int side = 0; side < 2; side++) {
                if ((side ^ (int)(k & 1)) == 0) {
                    double t0 = bench_now();
                    unsigned char *p = ml_get(a, hs[i]);
                    lm[k] = (uint64_t)((bench_now() - t0) * 1e9);
                    if (!p) abort();
                    sink ^= p[BLOB / 2];
                } else {
                    unsigned char *out = outs + i * BLOB;
                    size_t flen = 0;
                    double t0 = bench_now();
                    if (pread(fd, rec, info.stored_size, (off_t)info.offset) != (ssize_t)info.stored_size) abort();
                    const unsigned char *f = zstd_frame(rec, info.stored_size, &flen);
                    size_t got = f ? ZSTD_decompressDCtx(dc, out, BLOB, f, flen) : 0;
                    lb[k] = (uint64_t)((bench_now() - t0) * 1e9);
                    if (got != BLOB) abort();
                    sink ^= out[BLOB / 2];
                }
            }
        }
        m50[r] = pct(lm, n, 0.50);
        m99[r] = pct(lm, n, 0.99);
        b50[r] = pct(lb, n, 0.50);
        b99[r] = pct(lb, n, 0.99);
        g50[r] = m50[r] - b50[r];
        g99[r] = m99[r] - b99[r];
    }
    bench_figure("pagein", "memorylane p50", bench_median(m50, reps), "us");
    bench_figure("pagein", "memorylane p99", bench_median(m99, reps), "us");
    bench_figure("pagein", "pread+decompress p50", bench_median(b50, reps), "us");
    bench_figure("pagein", "pread+decompress p99", bench_median(b99, reps), "us");
    /* The gaps: per repetition, then the median of those. */
    bench_report("pagein", "p50 minus baseline p50", bench_median(g50, reps), "us", "budget", 10, TARGET_AT_MOST, 1.0,
                 NULL);
    bench_report("pagein", "p99 minus baseline p99", bench_median(g99, reps), "us", "budget", 10, TARGET_AT_MOST, 1.0,
                 NULL);
    ZSTD_freeDCtx(dc);
    close(fd);
    free(rec);
    free(outs);
    free(lm);
    free(lb);
    free(order);
    free(hs);
    ml_arena_destroy(a);
}

/* ---- prefetch --------------------------------------------------------------------------- */

/* An arena holding n evicted blobs (generated from seed), for the
 * benchmarks that bring random picks of them back. */
static ml_arena *evicted_arena(const bench_opts *o, const char *name, size_t n, uint64_t seed, ml_handle **hs)
{
    ml_arena *a = paging_arena(o, n * BLOB + (n * BLOB) / 2 + ((size_t)16 << 20));
    bench_progress("%s: %zu blobs evicted", name, n);
    *hs = fill(a, n, seed);
    ml_evict_many(a, *hs, n);
    return a;
}

typedef struct touch_job {
    ml_arena *a;
    const ml_handle *hs;
    size_t n;
} touch_job;

static void *touch_all(void *arg)
{
    touch_job *j = arg;
    for (size_t i = 0; i < j->n; i++)
        if (!ml_get(j->a, j->hs[i])) abort();
    return NULL;
}

void bench_prefetch(const bench_opts *o)
{
    size_t n = o->quick ? 2000 : 4000, pick = 1000;
    /* Twice the usual repetitions: ml_prefetch is CPU-bound (zstd on every
     * core) and one-by-one page-in is bound by disk latency, so a burst of
     * load from other tenants moves one and not the other; a rep costs about
     * half a second. */
    int reps = 2 * o->reps > 16 ? 16 : 2 * o->reps;
    double tp[16], ts[16];
    ml_handle *hs;
    ml_arena *a = evicted_arena(o, "prefetch", n, 9000, &hs);
    ml_handle *sel = malloc(pick * sizeof *sel);
    uint64_t s = 7;
    for (int r = 0; r < reps; r++) {
        bench_progress("prefetch: rep %d/%d", r + 1, reps);
        for (size_t i = 0; i < pick; i++) sel[i] = hs[bench_rand(&s) % n];
        double t0 = bench_now();
        int got = ml_prefetch(a, sel, pick);
        tp[r] = bench_now() - t0;
        if (got < 0) fprintf(stderr, "mlane_bench: prefetch: %s\n", ml_strerror(got));
        ml_evict_many(a, sel, pick);
        t0 = bench_now();
        for (size_t i = 0; i < pick; i++)
            if (!ml_get(a, sel[i])) abort();
        ts[r] = bench_now() - t0;
        ml_evict_many(a, sel, pick);
    }
    double p = bench_median(tp, reps) * 1e3, q = bench_median(ts, reps) * 1e3;
    bench_figure("prefetch", "ml_prefetch of 1000", p, "ms");
    bench_figure("prefetch", "one-by-one page-in of 1000", q, "ms");
    bench_report("prefetch", "speedup over one-by-one", q / p, "x", "one-by-one", 1.0, TARGET_AT_LEAST, 3.0, NULL);
    free(sel);
    free(hs);
    ml_arena_destroy(a);
}

/* ---- page-ins from two threads ---------------------------------------------------- */

/* 1000 random evicted blobs brought back on access by one thread, then the
 * same ones by two threads taking 500 each, in an arena of their own (so
 * that this does not disturb the prefetch figures). A handle picked twice
 * may be touched by both threads: one pages it in, the other waits for it
 * or finds it resident, as a program's threads would. */
void bench_parallel(const bench_opts *o)
{
    size_t n = o->quick ? 2000 : 4000, pick = 1000;
    int reps = o->reps > 16 ? 16 : o->reps;
    double t1[16], t2[16];
    ml_handle *hs;
    ml_arena *a = evicted_arena(o, "parallel", n, 13000, &hs);
    ml_handle *sel = malloc(pick * sizeof *sel);
    uint64_t s = 11;
    for (int r = 0; r < reps; r++) {
        bench_progress("parallel: rep %d/%d", r + 1, reps);
        for (size_t i = 0; i < pick; i++) sel[i] = hs[bench_rand(&s) % n];
        touch_job all = {a, sel, pick};
        double t0 = bench_now();
        touch_all(&all);
        t1[r] = bench_now() - t0;
        ml_evict_many(a, sel, pick);
        touch_job j[2] = {{a, sel, pick / 2}, {a, sel + pick / 2, pick - pick / 2}};
        pthread_t th;
        t0 = bench_now();
        if (pthread_create(&th, NULL, touch_all, &j[1])) abort();
        touch_all(&j[0]);
        pthread_join(th, NULL);
        t2[r] = bench_now() - t0;
        ml_evict_many(a, sel, pick);
    }
    double q1 = bench_median(t1, reps) * 1e3, q2 = bench_median(t2, reps) * 1e3;
    bench_figure("parallel", "page-in of 1000 on access, 1 thread", q1, "ms");
    bench_figure("parallel", "page-in of 1000 on access, 2 threads", q2, "ms");
    bench_report("parallel", "2 threads' page-ins vs one thread's", q1 / q2, "x", "one thread", 1.0, TARGET_NONE, 0,
                 NULL);
    free(sel);
    free(hs);
    ml_arena_destroy(a);
}
