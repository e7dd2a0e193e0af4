/*
 * bench_compact.c — compaction speed and pause times.
 *
 * A 64 MiB lane is filled, then every other allocation is freed in random
 * order, leaving it half free in random holes. Then:
 *   - a full compaction: bytes moved per second of moving, against memcpy of
 *     the same number of bytes between two lane-sized buffers, source not in
 *     cache, same run; the page release that ends the pass (madvise of the
 *     freed tail) is timed and reported on its own, and the whole pass too;
 *   - on a fresh copy of the same heap, incremental steps with a 1 ms budget
 *     until the pass is done: the longest step; and again with 100 us
 *     steps (figures only: the longest step in thread CPU time and in wall
 *     time, and the share of steps over budget in CPU time).
 * SlowLane runs with 1-64 KiB allocations (blocks and blobs), FastLane with
 * 16-256 B objects (per-object work dominates there; reported, no target).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"
#include "memorylane/memorylane.h"

static double cpu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static ml_arena *fragmented(ml_lane lane, size_t lane_bytes, size_t lo, size_t hi, uint64_t seed,
                            size_t *live_bytes)
{
    ml_config c;
    ml_config_init(&c);
    c.enable_auto_compaction = false;
    c.fast_lane_size = lane == ML_LANE_FAST ? lane_bytes : 1 << 20;
    c.slow_lane_size = lane == ML_LANE_SLOW ? lane_bytes : 1 << 20;
    c.slow_lane_safety_margin = 0;
    c.failover_to_slow = false;
    c.migrate_on_full = false;
    ml_arena *a;
    if (ml_arena_create(&c, &a)) abort();
    size_t cap = lane_bytes / lo + 1, n = 0;
    ml_handle *hs = malloc(cap * sizeof *hs);
    uint64_t s = seed;
    for (;;) {
        size_t size = lo + bench_rand(&s) % (hi - lo + 1);
        if (n == cap || ml_alloc(a, size, &hs[n]) != 0) break;
        memset(ml_get(a, hs[n]), (int)n, size);
        n++;
    }
    /* Free a random half. */
    for (size_t i = n; i > 1; i--) {
        size_t j = bench_rand(&s) % i;
        ml_handle t = hs[i - 1];
        hs[i - 1] = hs[j];
        hs[j] = t;
    }
    for (size_t i = 0; i < n / 2; i++) ml_free(a, hs[i]);
    ml_stats st;
    ml_stats_get(a, &st);
    *live_bytes = st.lane[lane].used;
    free(hs);
    return a;
}

/* The baseline: memcpy of the same number of bytes, in pieces of the mean
 * entry size, between two buffers as large as the lane. Like the lane's
 * data, the source is not in cache: a 64 MiB sweep evicts it first. */
static double memcpy_gbs(size_t bytes, size_t chunk, size_t lane_bytes)
{
    char *src = malloc(lane_bytes), *dst = malloc(lane_bytes), *sweep = malloc(lane_bytes);
    memset(src, 1, lane_bytes);
    memset(dst, 2, lane_bytes);
    memset(sweep, 3, lane_bytes);
    if (bytes > lane_bytes) bytes = lane_bytes;
    double t0 = bench_now();
    for (size_t off = 0; off < bytes; off += chunk)
        memcpy(dst + off, src + off, off + chunk <= bytes ? chunk : bytes - off);
    double t = bench_now() - t0;
    volatile char sink = dst[bytes / 2];
    (void)sink;
    free(src);
    free(dst);
    free(sweep);
    return (double)bytes / t / 1e9;
}

/* Bounded steps of budget_ms on a fresh copy of the heap until the pass is
 * done: the longest step in wall and in thread CPU time (ms), and how many
 * steps ran over the budget (in wall time when by_wall, else in CPU time). */
typedef struct step_stats {
    double worst_wall, worst_cpu, over, steps;
} step_stats;

static void run_steps(ml_lane lane, size_t lane_bytes, size_t lo, size_t hi, uint64_t seed, double budget_ms,
                      bool by_wall, step_stats *st)
{
    size_t live;
    ml_arena *a = fragmented(lane, lane_bytes, lo, hi, seed, &live);
    ml_compact_result res;
    for (int steps = 0; steps < 1000000; steps++) {
        double s0 = bench_now(), c0 = cpu_now();
        ml_compact_step(a, lane, 0, (uint64_t)(budget_ms * 1e6), &res);
        double pause = (bench_now() - s0) * 1e3, cpu = (cpu_now() - c0) * 1e3;
        if (pause > st->worst_wall) st->worst_wall = pause;
        if (cpu > st->worst_cpu) st->worst_cpu = cpu;
        st->over += (by_wall ? pause : cpu) > budget_ms;
        st->steps++;
        if (res.done) break;
    }
    ml_arena_destroy(a);
}

static void one_lane(const bench_opts *o, ml_lane lane, size_t lo, size_t hi, const char *label,
                     bool targets)
{
    size_t lane_bytes = (size_t)64 << 20;
    int reps = o->reps > 16 ? 16 : o->reps;
    double bw[16], base[16], whole[16], rel_ms[16], moved_mb = 0, frag_before = 0, frag_after = 0;
    step_stats ms = {0, 0, 0, 0}, us = {0, 0, 0, 0}; /* 1 ms and 100 us steps */
    for (int r = 0; r < reps; r++) {
        bench_progress("compact %s: full pass, rep %d/%d", label, r + 1, reps);
        size_t live;
        ml_arena *a = fragmented(lane, lane_bytes, lo, hi, 100 + (uint64_t)r, &live);
        ml_stats st;
        ml_stats_get(a, &st);
        frag_before = st.lane[lane].fragmentation_permille / 10.0;
        ml_compact_result res;
        double t0 = bench_now();
        ml_compact(a, lane, &res);
        double t = bench_now() - t0;
        ml_stats_get(a, &st);
        frag_after = st.lane[lane].fragmentation_permille / 10.0;
        /* Bytes moved per second of moving; the page release that ends the
         * pass is reported on its own line. */
        double move_s = t - (double)res.release_ns * 1e-9;
        bw[r] = (double)res.moved_bytes / move_s / 1e9;
        whole[r] = (double)res.moved_bytes / t / 1e9;
        rel_ms[r] = (double)res.release_ns * 1e-6;
        moved_mb = (double)res.moved_bytes / 1048576.0;
        base[r] = memcpy_gbs(res.moved_bytes ? res.moved_bytes : 1 << 20, (lo + hi) / 2, lane_bytes);
        ml_arena_destroy(a);

        bench_progress("compact %s: 1 ms steps, rep %d/%d", label, r + 1, reps);
        run_steps(lane, lane_bytes, lo, hi, 100 + (uint64_t)r, 1.0, true, &ms);
        /* A frame-sized budget, 100 us: the work around the copies (finding
         * each class's spans, claims) must fit in it too. */
        bench_progress("compact %s: 100 us steps, rep %d/%d", label, r + 1, reps);
        run_steps(lane, lane_bytes, lo, hi, 100 + (uint64_t)r, 0.1, false, &us);
    }
    char name[64];
    snprintf(name, sizeof name, "%s compaction bandwidth", label);
    bench_report("compact", name, bench_median(bw, reps), "GB/s", "memcpy of the same bytes", bench_median(base, reps),
                 targets ? TARGET_AT_LEAST : TARGET_NONE, 0.5, NULL);
    snprintf(name, sizeof name, "%s pass incl. page release", label);
    bench_figure("compact", name, bench_median(whole, reps), "GB/s");
    snprintf(name, sizeof name, "%s page release", label);
    bench_figure("compact", name, bench_median(rel_ms, reps), "ms");
    snprintf(name, sizeof name, "%s longest 1 ms step", label);
    bench_report("compact", name, ms.worst_wall, "ms", "budget", 1.0, targets ? TARGET_AT_MOST : TARGET_NONE, 1.0,
                 NULL);
    /* Wall time includes being preempted on a shared 2-core machine; the
     * thread's CPU time is what the step itself spent. */
    snprintf(name, sizeof name, "%s longest step, thread CPU", label);
    bench_figure("compact", name, ms.worst_cpu, "ms");
    snprintf(name, sizeof name, "%s steps over 1 ms", label);
    bench_figure("compact", name, ms.steps ? 100.0 * ms.over / ms.steps : 0, "%");
    snprintf(name, sizeof name, "%s longest 100 us step, thread CPU", label);
    bench_figure("compact", name, us.worst_cpu * 1e3, "us");
    snprintf(name, sizeof name, "%s longest 100 us step, wall", label);
    bench_figure("compact", name, us.worst_wall * 1e3, "us");
    snprintf(name, sizeof name, "%s 100 us steps over in CPU time", label);
    bench_figure("compact", name, us.steps ? 100.0 * us.over / us.steps : 0, "%");
    snprintf(name, sizeof name, "%s moved per pass", label);
    bench_figure("compact", name, moved_mb, "MiB");
    bench_better(BETTER_NONE); /* the work, not a result */
    snprintf(name, sizeof name, "%s fragmentation before", label);
    bench_figure("compact", name, frag_before, "%");
    bench_better(BETTER_NONE); /* the input */
    snprintf(name, sizeof name, "%s fragmentation after", label);
    bench_figure("compact", name, frag_after, "%");
}

void bench_compact(const bench_opts *o)
{
    one_lane(o, ML_LANE_SLOW, 1024, 64 << 10, "slow 1-64KiB", true);
    one_lane(o, ML_LANE_FAST, 16, 256, "fast 16-256B", false);
}
