/*
 * mlane.c — the MemoryLane command-line tool.
 *
 *   mlane demo [options]   a game-engine-like workload on one arena, with an
 *                          optional live debug view (--mount DIR)
 *   mlane bench [args]     run the benchmarks (mlane_bench; see mlane bench --help)
 *   mlane help             this text
 *
 * The demo is the kind of program the library was made for. Every frame it
 *  - makes a few hundred short-lived scratch allocations (FastLane), freed as
 *    a group at the end of the frame;
 *  - updates a population of long-lived entities (small objects that outlive
 *    many frames: maintenance promotes them to SlowLane by age);
 *  - streams large asset blobs (textures, meshes, audio) for the levels that
 *    are loaded: each level is a group, each asset is tagged by kind. Three
 *    levels stay loaded, several times the SlowLane budget, so idle assets
 *    are compressed and evicted to disk and come back when touched;
 *  - runs maintenance (promotion, compaction, eviction).
 * Every object it reads is checked against what it wrote, so a run that ends
 * with "0 corrupt" has verified the library as it went. A status line shows
 * the lanes and paging while it runs; Ctrl-C (SIGINT) or SIGTERM stops it
 * cleanly, unmounting the debug view.
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "memorylane/debugfs.h"
#include "memorylane/memorylane.h"

static volatile sig_atomic_t g_stop;
static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static void die_usage(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("mlane: ", stderr);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (try 'mlane %s --help')\n", cmd);
    va_end(ap);
    exit(2);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void)
{
    uint64_t x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* Object contents: a function of (key, offset), so any reader can check any
 * object. Assets look like real assets to zstd (text-like runs and small
 * noise: zstd gets about 2.5:1); small objects use a cheap hash. */
static inline unsigned char fill_byte(uint64_t key, size_t i)
{
    uint64_t x = (key + i) * 0x9E3779B97F4A7C15ull;
    return (unsigned char)(x >> 56);
}

static inline unsigned char asset_byte(uint64_t key, size_t i)
{
    static const char text[] = "vertex normal uv tangent bone weight index material ";
    size_t block = i >> 6;
    uint64_t h = (key ^ block) * 0x9E3779B97F4A7C15ull;
    if ((h >> 60) < 9) return (unsigned char)text[(i + (h >> 32)) % (sizeof text - 1)];
    uint64_t x = key ^ (i * 0x9E3779B97F4A7C15ull); /* noise */
    x ^= x >> 29;
    x *= 0xBF58476D1CE4E5B9ull;
    return (unsigned char)(x >> 56);
}

static void fill(unsigned char *p, size_t n, uint64_t key, bool asset)
{
    for (size_t i = 0; i < n; i++) p[i] = asset ? asset_byte(key, i) : fill_byte(key, i);
}

static bool check(const unsigned char *p, size_t n, uint64_t key, bool asset)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != (asset ? asset_byte(key, i) : fill_byte(key, i))) return false;
    return true;
}

/* ---- demo ------------------------------------------------------------------- */

typedef struct {
    ml_handle h;
    size_t size;
    uint64_t key;
} object;

#define LEVELS 3
#define ASSETS_PER_LEVEL 160

typedef struct {
    ml_group group;
    int number;
    object assets[ASSETS_PER_LEVEL];
    int n;
} level;

typedef struct {
    double seconds;
    long frames;
    size_t fast_mb, slow_mb, swap_mb;
    int entities;
    const char *mount, *swap_dir;
    bool quiet;
    unsigned cache_ms, threads;
} demo_opts;

static void demo_usage(FILE *f)
{
    fprintf(f,
            "usage: mlane demo [options]\n"
            "  --seconds N     run for N seconds (default 10; 0 = until Ctrl-C)\n"
            "  --frames N      stop after N frames (default: no limit)\n"
            "  --mount DIR     serve the debug view at DIR while running (an empty\n"
            "                  directory, made if missing and then removed at exit;\n"
            "                  unmounted on exit): try ls, cat, hexdump on it\n"
            "  --cache-ms N    with --mount: the kernel may cache the view's names and\n"
            "                  sizes for N ms (default 0: exact; 1000 makes find, ls -lR\n"
            "                  and du several times faster, at up to N ms of staleness)\n"
            "  --threads N     with --mount: threads serving the view (default 1)\n"
            "  --swap-dir DIR  directory of the (private, unnamed) swap file\n"
            "                  (default $TMPDIR, else /var/tmp)\n"
            "  --slow-mb N     SlowLane size in MiB: the memory budget (default 48)\n"
            "  --fast-mb N     FastLane size in MiB (default 16)\n"
            "  --swap-mb N     swap budget in MiB (default 1024)\n"
            "  --entities N    long-lived entities to keep alive (default 20000)\n"
            "  --quiet         no status line, only the summary\n"
            "  --help          this text\n"
            "Three levels of %d assets (64 KiB..1 MiB each) stay loaded: several times the\n"
            "SlowLane budget, so idle assets are compressed, evicted, and brought back.\n",
            ASSETS_PER_LEVEL);
}

static long parse_num(const char *opt, const char *v, long lo, long hi)
{
    char *end;
    errno = 0;
    long x = strtol(v ? v : "", &end, 10);
    if (!v || errno || *end || end == v || x < lo || x > hi)
        die_usage("demo", "%s needs a number in %ld..%ld, got '%s'", opt, lo, hi, v ? v : "");
    return x;
}

static void status(ml_arena *a, long frame, double t, bool final)
{
    ml_stats st;
    ml_paging_stats ps;
    ml_stats_get(a, &st);
    ml_paging_stats_get(a, &ps);
    fprintf(stderr,
            "%sframe %6ld %5.1fs | fast %5.1f/%.0f MiB | slow %5.1f/%.0f MiB | cold: %4llu compressed, "
            "%4llu evicted (%6.1f MiB) | page-ins %6llu | handles %6llu%s",
            final ? "" : "\r", frame, t, st.lane[ML_LANE_FAST].used / 1048576.0,
            st.lane[ML_LANE_FAST].capacity / 1048576.0, st.lane[ML_LANE_SLOW].used / 1048576.0,
            st.lane[ML_LANE_SLOW].capacity / 1048576.0, (unsigned long long)ps.now_compressed,
            (unsigned long long)ps.now_evicted, ps.now_evicted_bytes / 1048576.0,
            (unsigned long long)ps.page_ins, (unsigned long long)st.handles_live, final ? "\n" : " ");
    fflush(stderr);
}

static int demo(int argc, char **argv)
{
    demo_opts o = {.seconds = 10, .frames = -1, .fast_mb = 16, .slow_mb = 48, .swap_mb = 1024, .entities = 20000};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            demo_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--seconds")) {
            o.seconds = (double)parse_num(a, v, 0, 86400L * 365);
            i++;
        } else if (!strcmp(a, "--frames")) {
            o.frames = parse_num(a, v, 1, LONG_MAX);
            i++;
        } else if (!strcmp(a, "--fast-mb")) {
            o.fast_mb = (size_t)parse_num(a, v, 1, 1 << 20);
            i++;
        } else if (!strcmp(a, "--slow-mb")) {
            o.slow_mb = (size_t)parse_num(a, v, 8, 1 << 20);
            i++;
        } else if (!strcmp(a, "--swap-mb")) {
            o.swap_mb = (size_t)parse_num(a, v, 16, 1 << 22);
            i++;
        } else if (!strcmp(a, "--entities")) {
            o.entities = (int)parse_num(a, v, 1, 10000000);
            i++;
        } else if (!strcmp(a, "--mount")) {
            if (!v || !*v) die_usage("demo", "--mount needs a directory");
            o.mount = v;
            i++;
        } else if (!strcmp(a, "--cache-ms")) {
            o.cache_ms = (unsigned)parse_num(a, v, 0, ML_DEBUGFS_CACHE_MS_MAX);
            i++;
        } else if (!strcmp(a, "--threads")) {
            o.threads = (unsigned)parse_num(a, v, 1, ML_DEBUGFS_THREADS_MAX);
            i++;
        } else if (!strcmp(a, "--swap-dir")) {
            if (!v || !*v) die_usage("demo", "--swap-dir needs a directory");
            o.swap_dir = v;
            i++;
        } else if (!strcmp(a, "--quiet")) {
            o.quiet = true;
        } else {
            die_usage("demo", "unknown option '%s'", a);
        }
    }

    ml_config cfg;
    ml_config_init(&cfg);
    cfg.fast_lane_size = o.fast_mb << 20;
    cfg.slow_lane_size = o.slow_mb << 20;
    cfg.swap_size = o.swap_mb << 20;
    cfg.swap_dir = o.swap_dir;
    cfg.promote_age_ms = 2000;   /* entities that live 2 s move to SlowLane */
    cfg.cold_after_ms = 1500;    /* assets idle 1.5 s go cold */
    const char *why;
    if (ml_config_check(&cfg, &why)) {
        fprintf(stderr, "mlane: bad configuration: %s\n", why);
        return 2;
    }
    ml_arena *a;
    int rc = ml_arena_create(&cfg, &a);
    if (rc) {
        fprintf(stderr, "mlane: cannot create arena: %s\n", ml_strerror(rc));
        return 1;
    }

    /* Before mounting: a signal from here on stops the loop below, which
     * unmounts (and removes a directory made here) on the way out. */
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    ml_debugfs *fs = NULL;
    bool made_dir = false; /* --mount's directory was made here: removed at exit */
    if (o.mount) {
        ml_debugfs_options mo = {.cache_ms = o.cache_ms, .threads = o.threads};
        if (mkdir(o.mount, 0755) == 0) made_dir = true;
        rc = ml_debugfs_mount(a, o.mount, &mo, &fs);
        if (rc) {
            fprintf(stderr, "mlane: cannot mount the debug view at %s: %s\n", o.mount, ml_strerror(rc));
            if (made_dir) rmdir(o.mount);
            ml_arena_destroy(a);
            return 1;
        }
        fprintf(stderr, "mlane: debug view mounted at %s (try: ls %s/handles | head; cat %s/arena/stats)\n",
                o.mount, o.mount, o.mount);
    }

    static const char *kinds[] = {"texture", "mesh", "audio", "script"};
    ml_group scratch;
    ml_group_create(a, "frame-scratch", &scratch);
    object *ents = calloc((size_t)o.entities, sizeof *ents);
    level *levels = calloc(LEVELS, sizeof *levels);
    int nents = 0, level_no = 0, cur = -1;
    uint64_t key = 1, corrupt = 0, verified = 0, enomem = 0;
    double t0 = now_s(), last_status = -1;
    long frame = 0;

    while (!g_stop) {
        double t = now_s() - t0;
        if (o.seconds > 0 && t >= o.seconds) break;
        if (o.frames >= 0 && frame >= o.frames) break;
        frame++;

        /* 1. scratch: a few hundred small allocations that die with the frame */
        int nscratch = 200 + (int)(rnd() % 600);
        for (int i = 0; i < nscratch; i++) {
            ml_handle h;
            size_t n = 16 + rnd() % 241;
            if (ml_group_alloc(a, scratch, n, 0, &h)) {
                enomem++;
                break;
            }
            ml_write(a, h, 0, &frame, n < sizeof frame ? n : sizeof frame);
        }

        /* 2. entities: births, deaths and updates of long-lived objects */
        for (int i = 0; i < 200; i++) {
            if (nents < o.entities && (nents < 16 || rnd() % 3)) {
                object *e = &ents[nents];
                e->size = 32 + rnd() % 480;
                e->key = key++;
                if (ml_alloc(a, e->size, &e->h)) {
                    enomem++;
                    break;
                }
                fill(ml_get(a, e->h), e->size, e->key, false);
                nents++;
            } else if (nents > 0) {
                int k = (int)(rnd() % (uint64_t)nents);
                unsigned char *p = ml_get(a, ents[k].h);
                verified++;
                if (!p || !check(p, ents[k].size, ents[k].key, false)) corrupt++;
                if (rnd() % 2) {
                    ml_free(a, ents[k].h);
                    ents[k] = ents[--nents];
                } else if (p) {
                    ents[k].key = key++;
                    fill(p, ents[k].size, ents[k].key, false);
                }
            }
        }

        /* 3. levels: load a new one every 5 s, unloading the oldest */
        if (cur < 0 || frame % 600 == 0) {
            cur = (cur + 1) % LEVELS;
            level *lv = &levels[cur];
            if (lv->number) {
                for (int i = 0; i < lv->n; i++) { /* check on the way out (a cold read) */
                    unsigned char buf[4096];
                    size_t n = lv->assets[i].size < sizeof buf ? lv->assets[i].size : sizeof buf;
                    verified++;
                    if (ml_read(a, lv->assets[i].h, 0, buf, n) != (int)n ||
                        !check(buf, n, lv->assets[i].key, true))
                        corrupt++;
                }
                ml_group_destroy(a, lv->group);
            }
            char name[32];
            lv->number = ++level_no;
            lv->n = 0;
            snprintf(name, sizeof name, "level-%d", lv->number);
            ml_group_create(a, name, &lv->group);
        }
        /* stream in assets for the current level */
        level *lv = &levels[cur];
        for (int k = 0; k < 2 && lv->n < ASSETS_PER_LEVEL; k++) {
            object *as = &lv->assets[lv->n];
            as->size = ((size_t)64 << 10) + rnd() % ((size_t)960 << 10);
            as->key = key++;
            unsigned char *p;
            /* Allocated pinned, as a program with a policy thread must:
             * nothing can evict the asset before it is filled. */
            if (ml_alloc_ex(a, as->size, 0, lv->group, ML_ALLOC_PINNED, &as->h, (void **)&p) == 0) {
                fill(p, as->size, as->key, true);
                ml_unpin(a, as->h);
                ml_set_tag(a, as->h, kinds[rnd() % 4]);
                lv->n++;
            } else {
                enomem++;
            }
        }
        /* touch a few assets: mostly the current level's, sometimes older ones
         * (those have often gone cold and come back from disk) */
        for (int k = 0; k < 3; k++) {
            level *tl = rnd() % 4 ? lv : &levels[rnd() % LEVELS];
            if (!tl->n) continue;
            object *as = &tl->assets[rnd() % (uint64_t)tl->n];
            unsigned char *p;
            if (ml_pin(a, as->h, (void **)&p) != 0) {
                corrupt++;
                continue;
            }
            verified++;
            size_t n = as->size < 65536 ? as->size : 65536; /* check the first 64 KiB */
            if (!check(p, n, as->key, true)) corrupt++;
            ml_unpin(a, as->h);
        }

        /* 4. end of frame */
        ml_group_free_all(a, scratch, NULL);
        ml_maintain(a);
        if (!o.quiet && t - last_status >= 0.1) {
            status(a, frame, t, false);
            last_status = t;
        }
        /* ~120 frames per second */
        double next = t0 + (double)frame / 120.0;
        double wait = next - now_s();
        if (wait > 0) {
            struct timespec ts = {(time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9)};
            nanosleep(&ts, NULL);
        }
    }
    double t = now_s() - t0;
    if (!o.quiet) status(a, frame, t, true);
    /* Final check of everything still alive, entities and assets. */
    for (int i = 0; i < nents; i++) {
        unsigned char *p = ml_get(a, ents[i].h);
        verified++;
        if (!p || !check(p, ents[i].size, ents[i].key, false)) corrupt++;
    }
    for (int l = 0; l < LEVELS; l++)
        for (int i = 0; i < levels[l].n; i++) {
            object *as = &levels[l].assets[i];
            unsigned char *p = ml_get(a, as->h);
            verified++;
            if (!p || !check(p, as->size, as->key, true)) corrupt++;
        }
    if (fs) {
        rc = ml_debugfs_unmount(fs);
        if (rc == -EBUSY)
            fprintf(stderr, "mlane: the debug view was still in use (an open file or a working directory): "
                            "its connection was aborted (its readers got errors) and it was unmounted\n");
        else if (rc)
            fprintf(stderr, "mlane: unmount: %s\n", ml_strerror(rc));
    }
    if (made_dir) rmdir(o.mount);
    ml_stats st;
    ml_paging_stats ps;
    ml_stats_get(a, &st);
    ml_paging_stats_get(a, &ps);
    printf("mlane demo: %ld frames in %.1fs, %llu objects verified, %llu corrupt, %llu allocation failures\n",
           frame, t, (unsigned long long)verified, (unsigned long long)corrupt, (unsigned long long)enomem);
    printf("  fast lane: %llu allocs, %llu live, %.1f MiB used of %.1f MiB\n",
           (unsigned long long)st.lane[0].allocs, (unsigned long long)st.lane[0].live,
           st.lane[0].used / 1048576.0, st.lane[0].capacity / 1048576.0);
    printf("  slow lane: %llu allocs, %llu live, %.1f MiB used of %.1f MiB, %llu promoted from FastLane\n",
           (unsigned long long)st.lane[1].allocs, (unsigned long long)st.lane[1].live,
           st.lane[1].used / 1048576.0, st.lane[1].capacity / 1048576.0, (unsigned long long)st.promotions);
    printf("  paging (%s%s): %llu compressed in RAM, %llu evicted, %llu page-ins, %.1f MiB in -> %.1f MiB stored\n",
           ps.engine, ps.direct_io ? ", O_DIRECT" : "", (unsigned long long)ps.compressed,
           (unsigned long long)ps.evicted, (unsigned long long)ps.page_ins, ps.bytes_in / 1048576.0,
           ps.bytes_out / 1048576.0);
    free(ents);
    free(levels);
    ml_arena_destroy(a);
    return corrupt ? 1 : 0;
}

/* ---- bench ------------------------------------------------------------------- */

static int bench(int argc, char **argv)
{
    /* The benchmark binary sits beside this one (Bazel: tools/bench/). */
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
        fprintf(stderr, "mlane: cannot find myself\n");
        return 1;
    }
    self[n] = 0;
    char *slash = strrchr(self, '/');
    if (slash) *slash = 0;
    const char *env = getenv("MLANE_BENCH");
    char path[PATH_MAX + 32];
    const char *cands[3];
    int nc = 0;
    if (env && *env) cands[nc++] = env;
    snprintf(path, sizeof path, "%s/bench/mlane_bench", self);
    cands[nc++] = path;
    static char path2[PATH_MAX + 32];
    snprintf(path2, sizeof path2, "%s/mlane_bench", self);
    cands[nc++] = path2;
    char **args = calloc((size_t)argc + 2, sizeof *args);
    for (int i = 0; i < argc; i++) args[i + 1] = argv[i];
    for (int i = 0; i < nc; i++) {
        if (access(cands[i], X_OK) != 0) continue;
        args[0] = (char *)cands[i];
        execv(cands[i], args);
    }
    fprintf(stderr, "mlane: mlane_bench not found next to mlane (build //tools/bench:mlane_bench, "
                    "or set MLANE_BENCH)\n");
    free(args);
    return 1;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: mlane <command> [options]\n"
            "commands:\n"
            "  demo     run a game-engine-like workload on one arena (see 'mlane demo --help')\n"
            "  bench    run the benchmarks (see 'mlane bench --help')\n"
            "  help     this text\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "demo")) return demo(argc - 2, argv + 2);
    if (!strcmp(cmd, "bench")) return bench(argc - 2, argv + 2);
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "mlane: unknown command '%s' (try 'mlane help')\n", cmd);
    return 2;
}
