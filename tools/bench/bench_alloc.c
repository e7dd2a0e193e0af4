/*
 * bench_alloc.c — FastLane allocation and ml_get, against the allocators a
 * C programmer would otherwise use.
 *
 * alloc: allocate+free pairs with random sizes 16..256 B, each pair freeing a
 * random one of 64k live objects and allocating its replacement. The index
 * and size sequences are generated once and replayed for every allocator,
 * so all do exactly the same work. The allocators:
 *   glibc     __libc_malloc/__libc_free (glibc's own, whatever else is linked)
 *   jemalloc  the process malloc: this binary links Debian's libjemalloc
 *   mimalloc  mi_malloc/mi_free from Debian's libmimalloc, opened with dlopen
 *             (RTLD_LOCAL, so it does not replace the process malloc)
 * Repetitions are interleaved (glibc, jemalloc, mimalloc, memorylane, glibc,
 * ...) and the median of each is reported, against the fastest malloc.
 *
 * get: reading 8 bytes through ml_get against reading them through a plain
 * array of the same pointers: "hot" cycles over 256 handles (all in L1),
 * "random" jumps among 64k (cache and TLB misses dominate both).
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "memorylane/memorylane.h"

extern void *__libc_malloc(size_t);
extern void __libc_free(void *);

#define LIVE 65536

typedef struct {
    const char *name;
    void *(*alloc)(size_t);
    void (*free)(void *);
} mallocator;

static double run_malloc(const mallocator *m, const uint16_t *idx, const uint16_t *sz, size_t n)
{
    void **live = calloc(LIVE, sizeof *live);
    for (size_t i = 0; i < LIVE; i++) live[i] = m->alloc(16 + i % 241);
    double t0 = bench_now();
    for (size_t i = 0; i < n; i++) {
        uint16_t k = idx[i];
        m->free(live[k]);
        live[k] = m->alloc(sz[i]);
    }
    double t = bench_now() - t0;
    for (size_t i = 0; i < LIVE; i++) m->free(live[i]);
    free(live);
    return t * 1e9 / (double)n;
}

static ml_arena *bench_arena(void)
{
    ml_config c;
    ml_config_init(&c);
    c.fast_lane_size = 64 << 20;
    c.slow_lane_size = 64 << 20;
    ml_arena *a;
    if (ml_arena_create(&c, &a)) {
        fprintf(stderr, "mlane_bench: cannot create arena\n");
        exit(1);
    }
    return a;
}

static double run_ml(const uint16_t *idx, const uint16_t *sz, size_t n)
{
    ml_arena *a = bench_arena();
    ml_handle *live = calloc(LIVE, sizeof *live);
    for (size_t i = 0; i < LIVE; i++)
        if (ml_alloc(a, 16 + i % 241, &live[i])) abort();
    double t0 = bench_now();
    for (size_t i = 0; i < n; i++) {
        uint16_t k = idx[i];
        ml_free(a, live[k]);
        if (__builtin_expect(ml_alloc(a, sz[i], &live[k]) != 0, 0)) abort();
    }
    double t = bench_now() - t0;
    for (size_t i = 0; i < LIVE; i++) ml_free(a, live[i]);
    free(live);
    ml_arena_destroy(a);
    return t * 1e9 / (double)n;
}

static void *mi_lib;
static void *(*mi_malloc_p)(size_t);
static void (*mi_free_p)(void *);
static void *mi_alloc_fn(size_t n) { return mi_malloc_p(n); }
static void mi_free_fn(void *p) { mi_free_p(p); }

void bench_alloc(const bench_opts *o)
{
    size_t n = o->quick ? (size_t)2 << 20 : (size_t)8 << 20;
    uint16_t *idx = malloc(n * sizeof *idx), *sz = malloc(n * sizeof *sz);
    uint64_t s = 42;
    for (size_t i = 0; i < n; i++) {
        idx[i] = (uint16_t)(bench_rand(&s) % LIVE);
        sz[i] = (uint16_t)(16 + bench_rand(&s) % 241);
    }
    mallocator ms[3] = {
        {"glibc", __libc_malloc, __libc_free},
        {"jemalloc", malloc, free},
        {"mimalloc", NULL, NULL},
    };
    int nm = 2;
    mi_lib = dlopen("libmimalloc.so.2", RTLD_NOW | RTLD_LOCAL);
    if (mi_lib) {
        mi_malloc_p = (void *(*)(size_t))dlsym(mi_lib, "mi_malloc");
        mi_free_p = (void (*)(void *))dlsym(mi_lib, "mi_free");
        if (mi_malloc_p && mi_free_p) {
            ms[2].alloc = mi_alloc_fn;
            ms[2].free = mi_free_fn;
            nm = 3;
        }
    }
    if (nm < 3) fprintf(stderr, "mlane_bench: libmimalloc.so.2 not found: mimalloc skipped\n");
    double t[4][32];
    int reps = o->reps > 32 ? 32 : o->reps;
    for (int r = 0; r < reps; r++) {
        for (int m = 0; m < nm; m++) {
            bench_progress("alloc: %s rep %d/%d", ms[m].name, r + 1, reps);
            t[m][r] = run_malloc(&ms[m], idx, sz, n);
        }
        bench_progress("alloc: memorylane rep %d/%d", r + 1, reps);
        t[3][r] = run_ml(idx, sz, n);
    }
    double med[4];
    int best = 0;
    for (int m = 0; m < nm; m++) {
        med[m] = bench_median(t[m], reps);
        if (med[m] < med[best]) best = m;
    }
    med[3] = bench_median(t[3], reps);
    for (int m = 0; m < nm; m++) {
        char name[64];
        snprintf(name, sizeof name, "pair %s", ms[m].name);
        bench_figure("alloc", name, med[m], "ns");
    }
    char base[48];
    snprintf(base, sizeof base, "fastest malloc (%s)", ms[best].name);
    bench_report("alloc", "pair memorylane (16-256B; 64k live)", med[3], "ns", base, med[best],
                 TARGET_AT_MOST, 1.0, NULL);
    free(idx);
    free(sz);
}

/* ---- ml_get ------------------------------------------------------------------ */

static volatile uint64_t sink;

/* The four loops, each its own function, compiled without auto-vectorisation:
 * the raw-pointer loops would otherwise become AVX-512 gathers, which
 * measures the vector unit rather than the cost of one dereference. */
#define SCALAR __attribute__((noinline, aligned(64), optimize("no-tree-vectorize", "align-loops=64")))

static SCALAR uint64_t raw_hot(uint64_t **ptrs, size_t n)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++) sum += *ptrs[i & 255];
    return sum;
}

static SCALAR uint64_t ml_hot(ml_arena *a, const ml_handle *hs, size_t n)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++) sum += *(uint64_t *)ml_get(a, hs[i & 255]);
    return sum;
}

/* The leanest check a handle can have, for reference: a table of one word
 * per handle, the address with a 17-bit key in its top bits; the handle
 * carries the key in its own top bits and the index in the low ones. One
 * load, one xor, one compare, no NULL or bounds test (the table covers the
 * whole index range), no access tracking. What a checked handle costs in
 * this loop at the least, whatever its design. */
#define FLOOR_TOP 0xFFFF800000000000ull
static SCALAR uint64_t floor_hot(const uint64_t *table, const uint64_t *keyed, size_t n)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t h = keyed[i & 255];
        uint64_t p = table[(uint8_t)h] ^ (h & FLOOR_TOP);
        if (__builtin_expect(p >= (1ull << 47), 0)) abort();
        sum += *(uint64_t *)(uintptr_t)p;
    }
    return sum;
}

static SCALAR uint64_t raw_rand(uint64_t **ptrs, const uint32_t *ridx, size_t n)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++) sum += *ptrs[ridx[i]];
    return sum;
}

static SCALAR uint64_t ml_rand(ml_arena *a, const ml_handle *hs, const uint32_t *ridx, size_t n)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++) sum += *(uint64_t *)ml_get(a, hs[ridx[i]]);
    return sum;
}

void bench_get(const bench_opts *o)
{
    ml_arena *a = bench_arena();
    ml_handle *hs = malloc(LIVE * sizeof *hs);
    uint64_t **ptrs = malloc(LIVE * sizeof *ptrs);
    for (size_t i = 0; i < LIVE; i++) {
        if (ml_alloc(a, 64, &hs[i])) abort();
        ptrs[i] = ml_get(a, hs[i]);
        *ptrs[i] = i;
    }
    size_t n_hot = o->quick ? (size_t)50 << 20 : (size_t)200 << 20;
    size_t n_rand = o->quick ? (size_t)4 << 20 : (size_t)16 << 20;
    uint32_t *ridx = malloc(n_rand * sizeof *ridx);
    uint64_t s = 7;
    for (size_t i = 0; i < n_rand; i++) ridx[i] = (uint32_t)(bench_rand(&s) % LIVE);
    uint64_t table[256], keyed[256];
    for (size_t i = 0; i < 256; i++) {
        uint64_t key = (uint64_t)(i * 37 + 1) << 47;
        table[i] = (uint64_t)(uintptr_t)ptrs[i] ^ key;
        keyed[i] = key | i;
    }
    int reps = o->reps > 32 ? 32 : o->reps;
    double th[3][32], tr[2][32];
    for (int r = 0; r < reps; r++) {
        bench_progress("get: rep %d/%d", r + 1, reps);
        uint64_t sum = 0;
        double t0 = bench_now();
        sum += raw_hot(ptrs, n_hot);
        th[0][r] = (bench_now() - t0) * 1e9 / (double)n_hot;
        t0 = bench_now();
        sum += ml_hot(a, hs, n_hot);
        th[1][r] = (bench_now() - t0) * 1e9 / (double)n_hot;
        t0 = bench_now();
        sum += floor_hot(table, keyed, n_hot);
        th[2][r] = (bench_now() - t0) * 1e9 / (double)n_hot;
        t0 = bench_now();
        sum += raw_rand(ptrs, ridx, n_rand);
        tr[0][r] = (bench_now() - t0) * 1e9 / (double)n_rand;
        t0 = bench_now();
        sum += ml_rand(a, hs, ridx, n_rand);
        tr[1][r] = (bench_now() - t0) * 1e9 / (double)n_rand;
        sink = sum;
    }
    bench_report("get", "ml_get hot (256 handles)", bench_median(th[1], reps), "ns",
                 "raw pointer array", bench_median(th[0], reps), TARGET_AT_MOST, 1.3, NULL);
    bench_report("get", "leanest possible check, hot", bench_median(th[2], reps), "ns",
                 "raw pointer array", bench_median(th[0], reps), TARGET_NONE, 0, NULL);
    bench_report("get", "ml_get random (64k handles)", bench_median(tr[1], reps), "ns",
                 "raw pointer array", bench_median(tr[0], reps), TARGET_NONE, 0, NULL);
    free(ridx);
    free(ptrs);
    free(hs);
    ml_arena_destroy(a);
}
