/*
 * mlane.c — the MemoryLane command-line tool.
 *
 *   mlane demo [options]   a game-engine-like workload on one arena
 *   mlane help             this text
 *
 * The demo is the kind of program the library was made for: every frame it
 * makes short-lived scratch allocations (FastLane, freed as a group at the end
 * of the frame), updates a population of long-lived entities (small objects
 * that outlive many frames), and streams large asset blobs that belong to
 * levels (SlowLane, tagged by kind, grouped by level, unloaded with the level).
 * It checks every object it reads against what it wrote, so a run that ends
 * with "0 corrupt" has verified the library as it went. Maintenance runs once
 * per frame. A status line shows the lanes while it runs; Ctrl-C stops it.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "memorylane/memorylane.h"

static volatile sig_atomic_t g_stop;
static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static void die_usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("mlane: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs(" (try 'mlane demo --help')\n", stderr);
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

/* Content of object `key` at byte i: lets any reader check any object. */
static inline unsigned char fill_byte(uint64_t key, size_t i)
{
    uint64_t x = (key + i) * 0x9E3779B97F4A7C15ull;
    return (unsigned char)(x >> 56);
}

static void fill(unsigned char *p, size_t n, uint64_t key)
{
    for (size_t i = 0; i < n; i++) p[i] = fill_byte(key, i);
}

static bool check(const unsigned char *p, size_t n, uint64_t key)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != fill_byte(key, i)) return false;
    return true;
}

/* ---- demo ------------------------------------------------------------------- */

typedef struct {
    ml_handle h;
    size_t size;
    uint64_t key;
} object;

typedef struct {
    double seconds;
    long frames;
    size_t fast_mb, slow_mb;
    int entities, levels;
    bool quiet;
} demo_opts;

static void demo_usage(FILE *f)
{
    fprintf(f,
            "usage: mlane demo [options]\n"
            "  --seconds N     run for N seconds (default 10; 0 = until Ctrl-C)\n"
            "  --frames N      stop after N frames (default: no limit)\n"
            "  --fast-mb N     FastLane size in MiB (default 16)\n"
            "  --slow-mb N     SlowLane size in MiB (default 128)\n"
            "  --entities N    long-lived entities to keep alive (default 20000)\n"
            "  --quiet         no status line, only the summary\n"
            "  --help          this text\n");
}

static long parse_num(const char *opt, const char *v, long lo, long hi)
{
    char *end;
    errno = 0;
    long x = strtol(v ? v : "", &end, 10);
    if (!v || errno || *end || end == v || x < lo || x > hi)
        die_usage("%s needs a number in %ld..%ld, got '%s'", opt, lo, hi, v ? v : "");
    return x;
}

static void status(ml_arena *a, long frame, double t, bool final)
{
    ml_stats st;
    ml_stats_get(a, &st);
    fprintf(stderr,
            "%sframe %6ld  %5.1fs  fast %6.1f/%.0f MiB  slow %6.1f/%.0f MiB  frag %3.0f%%  handles %7llu%s",
            final ? "" : "\r", frame, t, st.lane[ML_LANE_FAST].used / 1048576.0,
            st.lane[ML_LANE_FAST].capacity / 1048576.0, st.lane[ML_LANE_SLOW].used / 1048576.0,
            st.lane[ML_LANE_SLOW].capacity / 1048576.0,
            st.lane[ML_LANE_SLOW].fragmentation_permille / 10.0,
            (unsigned long long)st.handles_live, final ? "\n" : "  ");
}

static int demo(int argc, char **argv)
{
    demo_opts o = {.seconds = 10, .frames = -1, .fast_mb = 16, .slow_mb = 128, .entities = 20000};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            demo_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--seconds")) {
            o.seconds = (double)parse_num(a, v, 0, 86400 * 365);
            i++;
        } else if (!strcmp(a, "--frames")) {
            o.frames = parse_num(a, v, 1, 1L << 40);
            i++;
        } else if (!strcmp(a, "--fast-mb")) {
            o.fast_mb = (size_t)parse_num(a, v, 1, 1 << 20);
            i++;
        } else if (!strcmp(a, "--slow-mb")) {
            o.slow_mb = (size_t)parse_num(a, v, 1, 1 << 20);
            i++;
        } else if (!strcmp(a, "--entities")) {
            o.entities = (int)parse_num(a, v, 1, 10000000);
            i++;
        } else if (!strcmp(a, "--quiet")) {
            o.quiet = true;
        } else {
            die_usage("unknown option '%s'", a);
        }
    }

    ml_config cfg;
    ml_config_init(&cfg);
    cfg.fast_lane_size = o.fast_mb << 20;
    cfg.slow_lane_size = o.slow_mb << 20;
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
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    ml_group scratch;
    ml_group_create(a, "frame-scratch", &scratch);
    object *ents = calloc((size_t)o.entities, sizeof *ents);
    int nents = 0;
    enum { MAX_ASSETS = 256 };
    object assets[MAX_ASSETS];
    int nassets = 0;
    ml_group level = ML_GROUP_NONE;
    int level_no = 0;
    static const char *kinds[] = {"texture", "mesh", "audio", "script"};
    uint64_t key = 1, corrupt = 0, verified = 0, enomem = 0;
    double t0 = now_s(), last_status = 0;
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
            memset(ml_get(a, h), (int)(i & 0xff), n);
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
                fill(ml_get(a, e->h), e->size, e->key);
                nents++;
            } else if (nents > 0) {
                int k = (int)(rnd() % (uint64_t)nents);
                unsigned char *p = ml_get(a, ents[k].h);
                verified++;
                if (!p || !check(p, ents[k].size, ents[k].key)) corrupt++;
                if (rnd() % 2) {
                    ml_free(a, ents[k].h);
                    ents[k] = ents[--nents];
                } else {
                    ents[k].key = key++;
                    fill(p, ents[k].size, ents[k].key);
                }
            }
        }

        /* 3. assets: stream in blobs for the current level; switch levels */
        if (level == ML_GROUP_NONE || frame % 600 == 0) {
            if (level != ML_GROUP_NONE) {
                for (int i = 0; i < nassets; i++) {
                    unsigned char *p = ml_get(a, assets[i].h);
                    verified++;
                    if (!p || !check(p, assets[i].size, assets[i].key)) corrupt++;
                }
                ml_group_destroy(a, level);
                nassets = 0;
            }
            char name[32];
            snprintf(name, sizeof name, "level-%d", ++level_no);
            ml_group_create(a, name, &level);
        }
        if (nassets < MAX_ASSETS && rnd() % 4 == 0) {
            object *as = &assets[nassets];
            as->size = (64 << 10) + rnd() % (448 << 10);
            as->key = key++;
            if (ml_group_alloc(a, level, as->size, 0, &as->h) == 0) {
                fill(ml_get(a, as->h), as->size, as->key);
                ml_set_tag(a, as->h, kinds[rnd() % 4]);
                nassets++;
            } else {
                enomem++;
            }
        }
        if (nassets > 0) { /* touch one asset a frame */
            object *as = &assets[rnd() % (uint64_t)nassets];
            unsigned char *p = ml_get(a, as->h);
            verified++;
            if (!p || !check(p, as->size, as->key)) corrupt++;
        }

        /* 4. end of frame */
        ml_group_free_all(a, scratch, NULL);
        ml_maintain(a);
        if (!o.quiet && t - last_status >= 0.1) {
            status(a, frame, t, false);
            last_status = t;
        }
        /* ~120 frames per second, like a game loop with vsync off */
        double next = t0 + (double)frame / 120.0;
        double wait = next - now_s();
        if (wait > 0) {
            struct timespec ts = {(time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9)};
            nanosleep(&ts, NULL);
        }
    }
    double t = now_s() - t0;
    if (!o.quiet) status(a, frame, t, true);
    /* Final check of everything still alive. */
    for (int i = 0; i < nents; i++) {
        unsigned char *p = ml_get(a, ents[i].h);
        verified++;
        if (!p || !check(p, ents[i].size, ents[i].key)) corrupt++;
    }
    ml_stats st;
    ml_stats_get(a, &st);
    printf("mlane demo: %ld frames in %.1fs, %llu objects verified, %llu corrupt, %llu allocation failures\n",
           frame, t, (unsigned long long)verified, (unsigned long long)corrupt,
           (unsigned long long)enomem);
    printf("  fast lane: %llu allocs, %llu live, %.1f MiB used of %.1f MiB\n",
           (unsigned long long)st.lane[0].allocs, (unsigned long long)st.lane[0].live,
           st.lane[0].used / 1048576.0, st.lane[0].capacity / 1048576.0);
    printf("  slow lane: %llu allocs, %llu live, %.1f MiB used of %.1f MiB, fragmentation %.1f%%\n",
           (unsigned long long)st.lane[1].allocs, (unsigned long long)st.lane[1].live,
           st.lane[1].used / 1048576.0, st.lane[1].capacity / 1048576.0,
           st.lane[1].fragmentation_permille / 10.0);
    free(ents);
    ml_arena_destroy(a);
    return corrupt ? 1 : 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: mlane <command> [options]\n"
            "commands:\n"
            "  demo     run a game-engine-like workload on one arena (see 'mlane demo --help')\n"
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
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "mlane: unknown command '%s' (try 'mlane help')\n", cmd);
    return 2;
}
