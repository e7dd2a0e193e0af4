/*
 * bench_store.c — a larger-than-memory blob store: MemoryLane against what a
 * program would use instead, at the same memory budget, on the same machine,
 * in the same run.
 *
 * Workload: N blobs of 16..256 KiB (sizes fixed per key; data from gen_blob,
 * ~1.8:1 with zstd -1) whose total is a multiple of the memory budget
 * (4x for the comparison, 1x..8x for the scaling series). After loading
 * (not timed), a run of Zipf-distributed operations (theta 0.99, ranks
 * scattered over the keys by a hash): 90% reads, which touch one byte of
 * every 64 of the value (every cache line) and check its first 64 bytes
 * against the expected version, and
 * 10% updates, which write a new version of the whole value.
 *
 * Systems (each runs in its own child process, so that peak resident sizes
 * are its own; VmHWM is reset after loading and read after the run):
 *  - memorylane: blobs behind handles; SlowLane sized to the budget (minus
 *    what the library itself keeps: FastLane, tables, I/O buffers), paging
 *    on (compressed stage, then disk through io_uring with O_DIRECT); every
 *    blob is evicted after loading, so that it starts cold like the others;
 *  - rocksdb: Debian's librocksdb set up for large values as its authors
 *    advise: values in blob files (zstd), the LRU cache (= the budget)
 *    shared by blocks and blob values, a Bloom filter, direct reads and
 *    direct flush/compaction I/O (so that the kernel's page cache adds no
 *    memory beyond the budget), WAL off, compacted after loading;
 *  - mmap+cgroup: the blobs in one file mapped shared, the child process in
 *    a memory cgroup limited to the budget (cgroup v1 memory.limit_in_bytes,
 *    or v2 memory.max), so the kernel pages under the same limit;
 *  - pread/pwrite: one O_DIRECT pread or pwrite per access, no cache, no
 *    compression (the floor any cache must beat).
 * Reported: operations per second, p50, p99, p99.9 and worst latency, peak
 * resident size, and the operations run (each system runs until it has done
 * `ops` or `seconds` have passed, so slow systems run fewer). A system that
 * read back a wrong value is reported as such and gets no ratio.
 * Each system runs once per workload, in a fresh process, in a fixed order.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <rocksdb/c.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "memorylane/memorylane.h"

#define MIN_BLOB ((size_t)16 << 10)
#define MAX_BLOB ((size_t)256 << 10)
#define CHECK 64

typedef struct {
    size_t budget;   /* bytes */
    size_t n;        /* keys */
    size_t *size;    /* per key */
    uint64_t *off;   /* per key, in a flat file (mmap, pread) */
    uint64_t total;  /* bytes of data */
    long ops;        /* at most this many operations... */
    double seconds;  /* ...or for at most this long (whichever ends first) */
    const char *dir;
} wl;

typedef struct {
    double ops_s, p50_us, p99_us, p999_us, max_us;
    long peak_kib;
    long base_kib; /* resident before the store opened: the program itself */
    int ok;
    long ops_done;
    char note[96];
} result;

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

static uint64_t seed_of(size_t key, uint32_t version) { return mix(key * 1000003u + version); }

/* ---- Zipf (Gray et al., as in YCSB) ------------------------------------------------ */

typedef struct {
    size_t n;
    double theta, alpha, zetan, eta;
    uint64_t rng;
} zipf;

static void zipf_init(zipf *z, size_t n, double theta, uint64_t seed)
{
    z->n = n;
    z->theta = theta;
    double zeta2 = 0;
    z->zetan = 0;
    for (size_t i = 1; i <= n; i++) z->zetan += 1.0 / pow((double)i, theta);
    for (size_t i = 1; i <= 2; i++) zeta2 += 1.0 / pow((double)i, theta);
    z->alpha = 1.0 / (1.0 - theta);
    z->eta = (1 - pow(2.0 / (double)n, 1 - theta)) / (1 - zeta2 / z->zetan);
    z->rng = seed;
}

static size_t zipf_next(zipf *z)
{
    double u = (double)(bench_rand(&z->rng) >> 11) / 9007199254740992.0;
    double uz = u * z->zetan;
    size_t rank;
    if (uz < 1.0) rank = 0;
    else if (uz < 1.0 + pow(0.5, z->theta)) rank = 1;
    else rank = (size_t)((double)z->n * pow(z->eta * u - z->eta + 1, z->alpha));
    if (rank >= z->n) rank = z->n - 1;
    return (size_t)(mix(rank) % z->n); /* popular keys scattered over the key space */
}

/* ---- helpers ---------------------------------------------------------------------- */

static long status_kib(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t fl = strlen(field);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, field, fl)) v = atol(line + fl + 1);
    if (f) fclose(f);
    return v;
}

static void reset_peak(void)
{
    int fd = open("/proc/self/clear_refs", O_WRONLY);
    if (fd >= 0) {
        if (write(fd, "5", 1) != 1) { /* older kernels: the peak stays from loading */
        }
        close(fd);
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static uint64_t value_sum(const unsigned char *p, size_t n)
{
    uint64_t s = 0;
    for (size_t i = 0; i < n; i += 64) s += p[i];
    return s;
}

static bool check_prefix(const unsigned char *p, size_t key, uint32_t version)
{
    unsigned char want[CHECK];
    gen_blob(seed_of(key, version), want, CHECK);
    return memcmp(p, want, CHECK) == 0;
}

/* The generator is deterministic per seed; a value of n bytes starts with
 * the same CHECK bytes whatever n is. */

/* ---- the systems ---------------------------------------------------------------------- */

typedef struct store store;
typedef struct {
    const char *name;
    int (*open)(store *s, wl *w);
    /* Read the whole value into (or through) memory; returns 0 and the first
     * CHECK bytes in head. */
    int (*get)(store *s, size_t key, unsigned char *head, uint64_t *sum);
    int (*put)(store *s, size_t key, const unsigned char *val);
    void (*close)(store *s);
} store_ops;

struct store {
    wl *w;
    unsigned char *buf; /* scratch, MAX_BLOB, 4 KiB aligned */
    /* memorylane */
    ml_arena *a;
    ml_handle *h;
    /* rocksdb */
    rocksdb_t *db;
    rocksdb_options_t *opt;
    rocksdb_readoptions_t *ro;
    rocksdb_writeoptions_t *wo;
    rocksdb_cache_t *cache;
    rocksdb_block_based_table_options_t *bbt;
    char path[512];
    /* mmap, pread */
    int fd;
    unsigned char *map;
};

/* memorylane */
static int ml_open(store *s, wl *w)
{
    ml_config c;
    ml_config_init(&c);
    c.fast_lane_size = 1 << 20;
    /* The budget covers the lanes and what the library keeps beside them:
     * I/O bounce buffers (8 MiB), handle tables, the swap-space map. */
    size_t overhead = ((size_t)12 << 20) + w->budget / 32;
    c.slow_lane_size = w->budget > overhead + ((size_t)16 << 20) ? w->budget - overhead : (size_t)16 << 20;
    c.swap_size = (size_t)((w->total * 2 + ((size_t)1 << 20) - 1) & ~(((uint64_t)1 << 20) - 1));
    c.swap_dir = w->dir;
    c.enable_auto_compaction = true;
    c.io_engine = 0; /* the default */
    c.policy_check_interval_ms = 10; /* CLOCK bits folded, room kept ahead */
    int rc = ml_arena_create(&c, &s->a);
    if (rc) return rc;
    s->h = calloc(w->n, sizeof *s->h);
    for (size_t k = 0; k < w->n; k++) {
        if ((rc = ml_alloc(s->a, w->size[k], &s->h[k])) != 0) return rc;
        unsigned char *p;
        if ((rc = ml_pin(s->a, s->h[k], (void **)&p)) != 0) return rc;
        gen_blob(seed_of(k, 0), p, w->size[k]);
        ml_unpin(s->a, s->h[k]);
    }
    /* Start cold, as the others do (the page cache dropped, RocksDB's cache
     * empty after its compaction): what loading left resident goes out. */
    rc = ml_evict_many(s->a, s->h, w->n);
    return rc < 0 ? rc : 0;
}

static int ml_get_v(store *s, size_t key, unsigned char *head, uint64_t *sum)
{
    const unsigned char *p;
    int rc = ml_pin_ro(s->a, s->h[key], (const void **)&p); /* pages in if cold */
    if (rc) return rc;
    *sum += value_sum(p, s->w->size[key]);
    memcpy(head, p, CHECK);
    ml_unpin(s->a, s->h[key]);
    return 0;
}

static int ml_put_v(store *s, size_t key, const unsigned char *val)
{
    return ml_write(s->a, s->h[key], 0, val, s->w->size[key]);
}

static void ml_close_s(store *s)
{
    ml_arena_destroy(s->a);
    free(s->h);
}

/* rocksdb */
static int rdb_open(store *s, wl *w)
{
    snprintf(s->path, sizeof s->path, "%s/mlane-bench-rocksdb-%d", w->dir, (int)getpid());
    s->opt = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(s->opt, 1);
    rocksdb_options_set_compression(s->opt, rocksdb_zstd_compression);
    rocksdb_options_set_use_direct_reads(s->opt, 1);
    rocksdb_options_set_use_direct_io_for_flush_and_compaction(s->opt, 1);
    rocksdb_options_increase_parallelism(s->opt, 2);
    /* Memtables count against memory too: keep them small (2 x 8 MiB). */
    rocksdb_options_set_write_buffer_size(s->opt, (size_t)8 << 20);
    rocksdb_options_set_max_write_buffer_number(s->opt, 2);
    s->cache = rocksdb_cache_create_lru(w->budget);
    s->bbt = rocksdb_block_based_options_create();
    rocksdb_block_based_options_set_block_cache(s->bbt, s->cache);
    rocksdb_block_based_options_set_block_size(s->bbt, 64 << 10);
    rocksdb_block_based_options_set_filter_policy(s->bbt, rocksdb_filterpolicy_create_bloom(10));
    rocksdb_options_set_block_based_table_factory(s->opt, s->bbt);
    /* Values of 16..256 KiB: in blob files, as RocksDB advises for large
     * values, cached uncompressed in the same budgeted cache as the blocks;
     * garbage of updated values collected by compaction. */
    rocksdb_options_set_enable_blob_files(s->opt, 1);
    rocksdb_options_set_min_blob_size(s->opt, 4096);
    rocksdb_options_set_blob_compression_type(s->opt, rocksdb_zstd_compression);
    rocksdb_options_set_enable_blob_gc(s->opt, 1);
    rocksdb_options_set_blob_cache(s->opt, s->cache);
    char *err = NULL;
    s->db = rocksdb_open(s->opt, s->path, &err);
    if (err) {
        fprintf(stderr, "mlane_bench: rocksdb: %s\n", err);
        free(err);
        return -EIO;
    }
    s->ro = rocksdb_readoptions_create();
    s->wo = rocksdb_writeoptions_create();
    rocksdb_writeoptions_disable_WAL(s->wo, 1);
    for (size_t k = 0; k < w->n; k++) {
        gen_blob(seed_of(k, 0), s->buf, w->size[k]);
        uint64_t key = k;
        rocksdb_put(s->db, s->wo, (const char *)&key, sizeof key, (const char *)s->buf, w->size[k], &err);
        if (err) {
            free(err);
            return -EIO;
        }
    }
    /* Everything to SST files, so the run starts from disk like the others. */
    rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
    rocksdb_flushoptions_set_wait(fo, 1);
    rocksdb_flush(s->db, fo, &err);
    rocksdb_flushoptions_destroy(fo);
    free(err);
    rocksdb_compact_range(s->db, NULL, 0, NULL, 0); /* settled, as after a long life */
    return 0;
}

static int rdb_get(store *s, size_t k, unsigned char *head, uint64_t *sum)
{
    char *err = NULL;
    size_t len;
    uint64_t key = k;
    char *v = rocksdb_get(s->db, s->ro, (const char *)&key, sizeof key, &len, &err);
    if (err || !v || len != s->w->size[k]) {
        free(err);
        free(v);
        return -EIO;
    }
    *sum += value_sum((unsigned char *)v, len);
    memcpy(head, v, CHECK);
    free(v);
    return 0;
}

static int rdb_put(store *s, size_t k, const unsigned char *val)
{
    char *err = NULL;
    uint64_t key = k;
    rocksdb_put(s->db, s->wo, (const char *)&key, sizeof key, (const char *)val, s->w->size[k], &err);
    if (err) {
        free(err);
        return -EIO;
    }
    return 0;
}

static void rdb_close(store *s)
{
    rocksdb_close(s->db);
    char *err = NULL;
    rocksdb_destroy_db(s->opt, s->path, &err);
    free(err);
    rocksdb_readoptions_destroy(s->ro);
    rocksdb_writeoptions_destroy(s->wo);
    rocksdb_options_destroy(s->opt);
    rocksdb_block_based_options_destroy(s->bbt);
    rocksdb_cache_destroy(s->cache);
}

/* the kernel: one shared mapping (the child runs in a memory cgroup) */
static int file_create(store *s, wl *w, int flags)
{
    char path[512];
    snprintf(path, sizeof path, "%s/mlane-bench-flat-XXXXXX", w->dir);
    s->fd = mkstemp(path);
    if (s->fd < 0) return -errno;
    unlink(path);
    if (ftruncate(s->fd, (off_t)w->total) != 0) return -errno;
    for (size_t k = 0; k < w->n; k++) {
        gen_blob(seed_of(k, 0), s->buf, w->size[k]);
        if (pwrite(s->fd, s->buf, w->size[k], (off_t)w->off[k]) != (ssize_t)w->size[k]) return -EIO;
    }
    fsync(s->fd);
    /* Start cold: what the loading left in the page cache goes. */
    posix_fadvise(s->fd, 0, 0, POSIX_FADV_DONTNEED);
    if (flags & O_DIRECT) {
        int fl = fcntl(s->fd, F_GETFL);
        if (fcntl(s->fd, F_SETFL, fl | O_DIRECT) != 0) return -errno;
    }
    return 0;
}

static int mm_open(store *s, wl *w)
{
    int rc = file_create(s, w, 0);
    if (rc) return rc;
    s->map = mmap(NULL, w->total, PROT_READ | PROT_WRITE, MAP_SHARED, s->fd, 0);
    return s->map == MAP_FAILED ? -errno : 0;
}

static int mm_get(store *s, size_t k, unsigned char *head, uint64_t *sum)
{
    const unsigned char *p = s->map + s->w->off[k];
    *sum += value_sum(p, s->w->size[k]);
    memcpy(head, p, CHECK);
    return 0;
}

static int mm_put(store *s, size_t k, const unsigned char *val)
{
    memcpy(s->map + s->w->off[k], val, s->w->size[k]);
    return 0;
}

static void mm_close(store *s)
{
    munmap(s->map, s->w->total);
    close(s->fd);
}

/* plain file, O_DIRECT, no cache */
static int pr_open(store *s, wl *w) { return file_create(s, w, O_DIRECT); }

static int pr_get(store *s, size_t k, unsigned char *head, uint64_t *sum)
{
    if (pread(s->fd, s->buf, s->w->size[k], (off_t)s->w->off[k]) != (ssize_t)s->w->size[k]) return -EIO;
    *sum += value_sum(s->buf, s->w->size[k]);
    memcpy(head, s->buf, CHECK);
    return 0;
}

static int pr_put(store *s, size_t k, const unsigned char *val)
{
    memcpy(s->buf, val, s->w->size[k]);
    return pwrite(s->fd, s->buf, s->w->size[k], (off_t)s->w->off[k]) == (ssize_t)s->w->size[k] ? 0 : -EIO;
}

static void pr_close(store *s) { close(s->fd); }

enum { SYS_ML, SYS_ROCKS, SYS_MMAP, SYS_PREAD, NSYS };
static const store_ops systems[NSYS] = {
    {"memorylane", ml_open, ml_get_v, ml_put_v, ml_close_s},
    {"rocksdb", rdb_open, rdb_get, rdb_put, rdb_close},
    {"mmap+cgroup", mm_open, mm_get, mm_put, mm_close},
    {"pread/pwrite", pr_open, pr_get, pr_put, pr_close},
};

/* ---- cgroups -------------------------------------------------------------------------- */

/* Put this process in a new memory cgroup limited to `bytes`. Returns the
 * cgroup's directory (to remove later) or NULL. */
static char *cgroup_enter(size_t bytes, char *why, size_t whylen)
{
    static char dir[256];
    char file[320], val[64];
    const char *base, *limit;
    if (access("/sys/fs/cgroup/memory/memory.limit_in_bytes", F_OK) == 0) {
        base = "/sys/fs/cgroup/memory";
        limit = "memory.limit_in_bytes";
    } else if (access("/sys/fs/cgroup/cgroup.controllers", F_OK) == 0) {
        base = "/sys/fs/cgroup";
        limit = "memory.max";
    } else {
        snprintf(why, whylen, "no memory cgroup controller");
        return NULL;
    }
    snprintf(dir, sizeof dir, "%s/mlane-bench-%d", base, (int)getpid());
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        snprintf(why, whylen, "cannot create a cgroup: %s", strerror(errno));
        return NULL;
    }
    snprintf(file, sizeof file, "%s/%s", dir, limit);
    FILE *f = fopen(file, "w");
    snprintf(val, sizeof val, "%zu", bytes);
    if (!f || fputs(val, f) < 0 || fclose(f) != 0) {
        snprintf(why, whylen, "cannot set the cgroup limit");
        rmdir(dir);
        return NULL;
    }
    snprintf(file, sizeof file, "%s/cgroup.procs", dir);
    f = fopen(file, "w");
    if (!f || fprintf(f, "%d", (int)getpid()) < 0 || fclose(f) != 0) {
        snprintf(why, whylen, "cannot join the cgroup");
        rmdir(dir);
        return NULL;
    }
    return dir;
}

/* ---- running one system in a child ------------------------------------------------------- */

static void run_child(int sys, wl *w, int out_fd)
{
    result r = {0};
    store s = {.w = w, .fd = -1};
    if (posix_memalign((void **)&s.buf, 4096, MAX_BLOB)) _exit(1);
    r.base_kib = status_kib("VmRSS:");
    if (sys == SYS_MMAP) {
        if (!cgroup_enter(w->budget, r.note, sizeof r.note)) {
            if (write(out_fd, &r, sizeof r) != (ssize_t)sizeof r) _exit(1);
            _exit(0);
        }
    }
    int rc = systems[sys].open(&s, w);
    if (rc) {
        snprintf(r.note, sizeof r.note, "open: %s", strerror(-rc));
        if (write(out_fd, &r, sizeof r) != (ssize_t)sizeof r) _exit(1);
        _exit(0);
    }
    uint32_t *version = calloc(w->n, sizeof *version);
    uint64_t *lat = malloc((size_t)w->ops * sizeof *lat);
    unsigned char *val;
    if (posix_memalign((void **)&val, 4096, MAX_BLOB)) _exit(1);
    zipf z;
    zipf_init(&z, w->n, 0.99, 12345);
    uint64_t rng = 777, sum = 0, bad = 0;
    reset_peak();
    double t0 = bench_now();
    long done = 0;
    for (long i = 0; i < w->ops; i++, done++) {
        if ((i & 63) == 0 && bench_now() - t0 > w->seconds) break;
        size_t k = zipf_next(&z);
        double s0 = bench_now();
        if (bench_rand(&rng) % 10 == 0) {
            version[k]++;
            gen_blob(seed_of(k, version[k]), val, w->size[k]);
            s0 = bench_now(); /* generating the new value is not the store's work */
            if (systems[sys].put(&s, k, val)) bad++;
        } else {
            unsigned char head[CHECK];
            if (systems[sys].get(&s, k, head, &sum) || !check_prefix(head, k, version[k])) bad++;
        }
        lat[i] = (uint64_t)((bench_now() - s0) * 1e9);
    }
    double t = bench_now() - t0;
    r.peak_kib = status_kib("VmHWM:");
    if (done == 0) done = 1;
    qsort(lat, (size_t)done, sizeof *lat, cmp_u64);
    r.ops_s = (double)done / t;
    r.p50_us = (double)lat[(size_t)done / 2] / 1000.0;
    r.p99_us = (double)lat[(size_t)((double)done * 0.99)] / 1000.0;
    r.p999_us = (double)lat[(size_t)((double)done * 0.999)] / 1000.0;
    r.max_us = (double)lat[done - 1] / 1000.0;
    r.ok = bad == 0;
    r.ops_done = done;
    if (bad) snprintf(r.note, sizeof r.note, "%llu wrong values", (unsigned long long)bad);
    systems[sys].close(&s);
    if (write(out_fd, &r, sizeof r) != (ssize_t)sizeof r) _exit(1);
    _exit(sum == 42 ? 3 : 0); /* (keeps sum alive) */
}

/* Each system runs in a fresh process (fork, then exec of this program with
 * --store-child), so that its resident size is its own and nothing of the
 * benchmarks that ran before it is mapped in. */
static result run_system(int sys, wl *w, double factor)
{
    int pfd[2];
    result r = {0};
    if (pipe(pfd) != 0) return r;
    pid_t pid = fork();
    if (pid == 0) {
        close(pfd[0]);
        char a_sys[16], a_budget[32], a_factor[32], a_ops[32], a_secs[32], a_fd[16];
        snprintf(a_sys, sizeof a_sys, "%d", sys);
        snprintf(a_budget, sizeof a_budget, "%zu", w->budget);
        snprintf(a_factor, sizeof a_factor, "%g", factor);
        snprintf(a_ops, sizeof a_ops, "%ld", w->ops);
        snprintf(a_secs, sizeof a_secs, "%g", w->seconds);
        snprintf(a_fd, sizeof a_fd, "%d", pfd[1]);
        char *args[] = {"mlane_bench", "--store-child", a_sys, a_budget, a_factor, a_ops, a_secs,
                        (char *)w->dir, a_fd, NULL};
        execv("/proc/self/exe", args);
        _exit(127);
    }
    close(pfd[1]);
    ssize_t got = read(pfd[0], &r, sizeof r);
    close(pfd[0]);
    int st;
    waitpid(pid, &st, 0);
    if (got != (ssize_t)sizeof r) {
        memset(&r, 0, sizeof r);
        snprintf(r.note, sizeof r.note, "child died (status %d)", st);
    }
    if (sys == SYS_MMAP) { /* remove the child's cgroup */
        char dir[256];
        snprintf(dir, sizeof dir, "/sys/fs/cgroup/memory/mlane-bench-%d", (int)pid);
        rmdir(dir);
        snprintf(dir, sizeof dir, "/sys/fs/cgroup/mlane-bench-%d", (int)pid);
        rmdir(dir);
    }
    return r;
}

static void make_workload(wl *w, size_t budget, double factor, long ops, double seconds, const char *dir);

int bench_store_child(int argc, char **argv)
{
    if (argc != 7) return 2;
    wl w;
    make_workload(&w, (size_t)strtoull(argv[1], NULL, 10), atof(argv[2]), atol(argv[3]), atof(argv[4]), argv[5]);
    run_child(atoi(argv[0]), &w, atoi(argv[6]));
    return 0;
}

static void make_workload(wl *w, size_t budget, double factor, long ops, double seconds, const char *dir)
{
    memset(w, 0, sizeof *w);
    w->budget = budget;
    w->ops = ops;
    w->seconds = seconds;
    w->dir = dir;
    uint64_t target = (uint64_t)((double)budget * factor);
    size_t cap = target / MIN_BLOB + 1;
    w->size = malloc(cap * sizeof *w->size);
    w->off = malloc(cap * sizeof *w->off);
    uint64_t s = 2024;
    while (w->total < target && w->n < cap) {
        size_t sz = MIN_BLOB + (bench_rand(&s) % ((MAX_BLOB - MIN_BLOB) / 4096 + 1)) * 4096;
        w->size[w->n] = sz;
        w->off[w->n] = w->total;
        w->total += sz;
        w->n++;
    }
}

static const char *dir_of(const bench_opts *o)
{
    if (o->swap_dir) return o->swap_dir;
    const char *t = getenv("TMPDIR");
    return t && *t ? t : "/var/tmp";
}

void bench_store(const bench_opts *o)
{
    size_t budget = (o->quick ? (size_t)32 : (size_t)256) << 20;
    long ops = o->quick ? 20000 : 200000;
    wl w;
    make_workload(&w, budget, 4.0, ops, o->quick ? 3.0 : 20.0, dir_of(o));
    char what[96];
    snprintf(what, sizeof what, "%zu blobs, %.0f MiB of data, budget %zu MiB", w.n, (double)w.total / 1048576.0,
             budget >> 20);
    bench_progress("store: %s, up to %ld Zipf ops or %.0f s per system (90%% reads)", what, ops, w.seconds);
    result r[NSYS];
    for (int s = 0; s < NSYS; s++) {
        bench_progress("store: %s", systems[s].name);
        r[s] = run_system(s, &w, 4.0);
        char name[64];
        if (!r[s].ops_s) {
            snprintf(name, sizeof name, "%s: not run (%s)", systems[s].name, r[s].note);
            bench_figure("store", name, 0, "");
            continue;
        }
        snprintf(name, sizeof name, "%s ops/s", systems[s].name);
        bench_figure("store", name, r[s].ops_s, "op/s");
        snprintf(name, sizeof name, "%s p50", systems[s].name);
        bench_figure("store", name, r[s].p50_us, "us");
        snprintf(name, sizeof name, "%s p99", systems[s].name);
        bench_figure("store", name, r[s].p99_us, "us");
        snprintf(name, sizeof name, "%s p99.9", systems[s].name);
        bench_figure("store", name, r[s].p999_us, "us");
        snprintf(name, sizeof name, "%s worst", systems[s].name);
        bench_figure("store", name, r[s].max_us, "us");
        snprintf(name, sizeof name, "%s peak RSS", systems[s].name);
        bench_figure("store", name, (double)r[s].peak_kib / 1024.0, "MiB");
        snprintf(name, sizeof name, "%s peak RSS above program", systems[s].name);
        bench_figure("store", name, (double)(r[s].peak_kib - r[s].base_kib) / 1024.0, "MiB");
        snprintf(name, sizeof name, "%s operations run", systems[s].name);
        bench_figure("store", name, (double)r[s].ops_done, "ops");
        bench_better(BETTER_NONE);
        if (!r[s].ok) {
            fprintf(stderr, "mlane_bench: %s: %s\n", systems[s].name, r[s].note);
            snprintf(name, sizeof name, "%s wrong values read back", systems[s].name);
            bench_figure("store", name, 1, "flag");
            bench_better(BETTER_NONE);
        }
    }
    if (r[SYS_ML].ops_s && r[SYS_ROCKS].ops_s && r[SYS_ML].ok && r[SYS_ROCKS].ok)
        bench_report("store", "memorylane vs rocksdb throughput", r[SYS_ML].ops_s, "op/s", "rocksdb",
                     r[SYS_ROCKS].ops_s, TARGET_AT_LEAST, 2.0, what);
    /* The store's own memory: the peak less what the benchmark program had
     * resident before opening it (its code, including librocksdb's). */
    if (r[SYS_ML].ops_s && r[SYS_ML].ok)
        bench_report("store", "memorylane memory vs budget", (double)(r[SYS_ML].peak_kib - r[SYS_ML].base_kib) / 1024.0,
                     "MiB", "budget", (double)(budget >> 20), TARGET_AT_MOST, 1.10, NULL);
    free(w.size);
    free(w.off);
}

void bench_scaling(const bench_opts *o)
{
    size_t budget = (o->quick ? (size_t)16 : (size_t)128) << 20;
    long ops = o->quick ? 5000 : 100000;
    static const double factors[] = {1, 2, 4, 8};
    for (int f = 0; f < 4; f++) {
        wl w;
        make_workload(&w, budget, factors[f], ops, o->quick ? 1.0 : 8.0, dir_of(o));
        for (int s = 0; s < NSYS; s++) {
            bench_progress("scaling: %gx budget, %s", factors[f], systems[s].name);
            result r = run_system(s, &w, factors[f]);
            char name[160];
            /* A system that did not run, or read wrong values back, gets no
             * point in the series (plot.sh leaves a gap), not a zero. */
            if (!r.ops_s || !r.ok) {
                snprintf(name, sizeof name, "%gx %s: %s (%s)", factors[f], systems[s].name,
                         r.ops_s ? "wrong values read back" : "not run", r.note);
                bench_figure("scaling", name, r.ops_s ? 1 : 0, r.ops_s ? "flag" : "");
                if (r.ops_s) fprintf(stderr, "mlane_bench: %gx %s: %s\n", factors[f], systems[s].name, r.note);
                continue;
            }
            snprintf(name, sizeof name, "%gx %s ops/s", factors[f], systems[s].name);
            bench_figure("scaling", name, r.ops_s, "op/s");
            snprintf(name, sizeof name, "%gx %s p99", factors[f], systems[s].name);
            bench_figure("scaling", name, r.p99_us, "us");
        }
        free(w.size);
        free(w.off);
    }
}
