/*
 * bench.h — the benchmark harness: every measurement is taken in one
 * process, beside its baselines, repeated and interleaved, and reported as
 * a value, its baseline's value and their ratio.
 */
#ifndef ML_BENCH_H
#define ML_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct bench_opts {
    bool quick;  /* smaller sizes, fewer repetitions */
    int reps;    /* repetitions of each measurement (median reported) */
    const char *filter; /* run only benchmarks whose name contains this */
    const char *swap_dir;
} bench_opts;

/* How a ratio is judged against its target. */
typedef enum { TARGET_NONE, TARGET_AT_MOST, TARGET_AT_LEAST } target_kind;

/* One reported line. `ratio` is value / baseline (1 = as fast/big). */
void bench_report(const char *bench, const char *name, double value, const char *unit,
                  const char *baseline, double base_value, target_kind kind, double target,
                  const char *note);
/* A figure with no baseline (latency percentiles, sizes...). */
void bench_figure(const char *bench, const char *name, double value, const char *unit);

/* Which way a value is better: the "better" field of the JSON results.
 * BETTER_AUTO derives it from the unit (times lower, rates higher; for "x",
 * "%" and sizes the target's direction if there is one, else "x" higher,
 * "%" and sizes lower; an unknown unit gives null). */
typedef enum { BETTER_AUTO, BETTER_LOWER, BETTER_HIGHER, BETTER_NONE } better_kind;
/* Overrides it for the result reported last: call right after bench_report
 * or bench_figure when the unit alone is ambiguous (BETTER_NONE: null, a
 * figure with no better direction, such as a property of the input). */
void bench_better(better_kind b);
/* Progress to stderr ("[alloc] glibc rep 2/5"). */
void bench_progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

double bench_now(void);               /* seconds, monotonic */
double bench_median(double *v, int n); /* sorts v */
uint64_t bench_rand(uint64_t *state); /* xorshift64* */

/* The benchmarks' data (bench_data.c): compresses about 1.8:1 with zstd -1. */
void gen_blob(uint64_t seed, unsigned char *p, size_t n);

/* The benchmarks. */
void bench_alloc(const bench_opts *o);
void bench_get(const bench_opts *o);
void bench_compact(const bench_opts *o);
void bench_evict(const bench_opts *o);
void bench_pagein(const bench_opts *o);
void bench_prefetch(const bench_opts *o);
void bench_parallel(const bench_opts *o);
void bench_store(const bench_opts *o);
void bench_scaling(const bench_opts *o);
/* mlane_bench --store-child ...: one system of the store benchmark. */
int bench_store_child(int argc, char **argv);

#endif
