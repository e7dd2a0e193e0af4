/*
 * bench_main.c — `mlane_bench`: MemoryLane's benchmarks, with baselines.
 *
 *   mlane_bench [--quick] [--reps N] [--filter LIST] [--json FILE|-] [--csv FILE|-]
 *               [--swap-dir DIR]
 *
 * Prints a table to stdout while it runs (progress goes to stderr), and the
 * same results as JSON or CSV on request. Every line carries the baseline it
 * was measured against in the same run and the ratio, since absolute figures
 * on a shared machine mean little.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "memorylane/memorylane.h"

typedef struct result {
    char bench[32], name[64], unit[16], baseline[48], note[96];
    double value, base_value, ratio, target;
    target_kind kind;
    better_kind better; /* BETTER_AUTO: from the unit (see better_of) */
    bool has_baseline;
} result;

static result *results;
static size_t nresults, capresults;

double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

uint64_t bench_rand(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

void bench_progress(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("  .. ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static result *add(void)
{
    if (nresults == capresults) {
        capresults = capresults ? capresults * 2 : 64;
        results = realloc(results, capresults * sizeof *results);
        if (!results) abort();
    }
    result *r = &results[nresults++];
    memset(r, 0, sizeof *r);
    return r;
}

static const char *verdict(const result *r)
{
    if (!r->has_baseline || r->kind == TARGET_NONE) return "";
    bool ok = r->kind == TARGET_AT_MOST ? r->ratio <= r->target : r->ratio >= r->target;
    return ok ? "met" : "MISSED";
}

static void print_row(const result *r)
{
    char tgt[32] = "";
    if (r->kind != TARGET_NONE)
        snprintf(tgt, sizeof tgt, "%s%.2f", r->kind == TARGET_AT_MOST ? "<=" : ">=", r->target);
    if (r->has_baseline)
        printf("%-10s %-34s %12.3f %-7s %-26s %12.3f %7.3f %-7s %s\n", r->bench, r->name, r->value,
               r->unit, r->baseline, r->base_value, r->ratio, tgt, verdict(r));
    else
        printf("%-10s %-34s %12.3f %-7s\n", r->bench, r->name, r->value, r->unit);
    fflush(stdout);
}

void bench_report(const char *bench, const char *name, double value, const char *unit,
                  const char *baseline, double base_value, target_kind kind, double target,
                  const char *note)
{
    result *r = add();
    snprintf(r->bench, sizeof r->bench, "%s", bench);
    snprintf(r->name, sizeof r->name, "%s", name);
    snprintf(r->unit, sizeof r->unit, "%s", unit);
    snprintf(r->baseline, sizeof r->baseline, "%s", baseline);
    snprintf(r->note, sizeof r->note, "%s", note ? note : "");
    r->value = value;
    r->base_value = base_value;
    r->ratio = base_value != 0 ? value / base_value : NAN;
    r->kind = kind;
    r->target = target;
    r->has_baseline = true;
    print_row(r);
}

void bench_figure(const char *bench, const char *name, double value, const char *unit)
{
    result *r = add();
    snprintf(r->bench, sizeof r->bench, "%s", bench);
    snprintf(r->name, sizeof r->name, "%s", name);
    snprintf(r->unit, sizeof r->unit, "%s", unit);
    r->value = value;
    print_row(r);
}

void bench_better(better_kind b)
{
    if (nresults) results[nresults - 1].better = b;
}

/* Which way a value is better, from its unit: times lower, rates higher.
 * "x", "%" and sizes say less, so a target (value / baseline at most or at
 * least) decides when there is one, then a default: "x" (speedups, ratios)
 * higher, "%" and sizes (fragmentation, RSS) lower. An unknown unit gives
 * BETTER_NONE (JSON null) rather than a guess; a caller that knows better
 * says so with bench_better(). */
static better_kind better_of(const result *r)
{
    if (r->better != BETTER_AUTO) return r->better;
    static const char *const lower[] = {"ns", "us", "\xc2\xb5s", "\xce\xbcs", "ms", "s"}; /* µs, μs */
    static const char *const sizes[] = {"B", "KB", "MB", "GB", "KiB", "MiB", "GiB"};
    const char *u = r->unit;
    size_t n = strlen(u);
    for (size_t i = 0; i < sizeof lower / sizeof lower[0]; i++)
        if (!strcmp(u, lower[i])) return BETTER_LOWER;
    if (n > 2 && !strcmp(u + n - 2, "/s")) return BETTER_HIGHER; /* GB/s, MB/s, op/s, ops/s */
    bool x = !strcmp(u, "x"), pct = !strcmp(u, "%"), size = false;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (!strcmp(u, sizes[i])) size = true;
    if (!x && !pct && !size) return BETTER_NONE;
    if (r->has_baseline && r->kind == TARGET_AT_MOST) return BETTER_LOWER;
    if (r->has_baseline && r->kind == TARGET_AT_LEAST) return BETTER_HIGHER;
    return x ? BETTER_HIGHER : BETTER_LOWER;
}

static void machine(char *cpu, size_t len)
{
    snprintf(cpu, len, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[256];
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10)) {
            char *p = strchr(line, ':');
            if (p) {
                p += 2;
                p[strcspn(p, "\n")] = 0;
                snprintf(cpu, len, "%s", p);
            }
            break;
        }
    fclose(f);
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fputc('\\', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

static void json_num(FILE *f, double v)
{
    if (isfinite(v)) fprintf(f, "%.6g", v);
    else fputs("null", f);
}

static void write_json(FILE *f, const bench_opts *o)
{
    char cpu[128];
    struct utsname u;
    uname(&u);
    machine(cpu, sizeof cpu);
    time_t t = time(NULL);
    char date[32];
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
    fprintf(f, "{\n  \"library\": \"memorylane %s\",\n  \"date\": \"%s\",\n", ml_version(), date);
    fprintf(f, "  \"machine\": {\"cpu\": ");
    json_str(f, cpu);
    fprintf(f, ", \"cores\": %ld, \"kernel\": ", sysconf(_SC_NPROCESSORS_ONLN));
    json_str(f, u.release);
    fprintf(f, "},\n  \"quick\": %s,\n  \"reps\": %d,\n  \"results\": [\n", o->quick ? "true" : "false",
            o->reps);
    for (size_t i = 0; i < nresults; i++) {
        result *r = &results[i];
        fprintf(f, "    {\"bench\": ");
        json_str(f, r->bench);
        fprintf(f, ", \"name\": ");
        json_str(f, r->name);
        fprintf(f, ", \"value\": ");
        json_num(f, r->value);
        fprintf(f, ", \"unit\": ");
        json_str(f, r->unit);
        better_kind b = better_of(r);
        fprintf(f, ", \"better\": %s",
                b == BETTER_LOWER ? "\"lower\"" : b == BETTER_HIGHER ? "\"higher\"" : "null");
        if (r->has_baseline) {
            fprintf(f, ", \"baseline\": ");
            json_str(f, r->baseline);
            fprintf(f, ", \"baseline_value\": ");
            json_num(f, r->base_value);
            fprintf(f, ", \"ratio\": ");
            json_num(f, r->ratio);
            if (r->kind != TARGET_NONE) {
                fprintf(f, ", \"target\": \"%s%g\", \"met\": %s",
                        r->kind == TARGET_AT_MOST ? "<=" : ">=", r->target,
                        strcmp(verdict(r), "met") == 0 ? "true" : "false");
            }
        }
        if (r->note[0]) {
            fprintf(f, ", \"note\": ");
            json_str(f, r->note);
        }
        fprintf(f, "}%s\n", i + 1 < nresults ? "," : "");
    }
    fprintf(f, "  ]\n}\n");
}

/* CSV fields are written bare: any comma in a name becomes ';'. */
static void csv_field(FILE *f, const char *s)
{
    for (; *s; s++) fputc(*s == ',' ? ';' : *s, f);
    fputc(',', f);
}

static void write_csv(FILE *f)
{
    fprintf(f, "bench,name,value,unit,baseline,baseline_value,ratio,target,met\n");
    for (size_t i = 0; i < nresults; i++) {
        result *r = &results[i];
        csv_field(f, r->bench);
        csv_field(f, r->name);
        fprintf(f, "%.6g,", r->value);
        csv_field(f, r->unit);
        csv_field(f, r->has_baseline ? r->baseline : "");
        if (r->has_baseline) fprintf(f, "%.6g,%.6g,", r->base_value, r->ratio);
        else fprintf(f, ",,");
        if (r->kind != TARGET_NONE)
            fprintf(f, "%s%g,%s\n", r->kind == TARGET_AT_MOST ? "<=" : ">=", r->target,
                    strcmp(verdict(r), "met") == 0 ? "true" : "false");
        else
            fprintf(f, ",\n");
    }
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: mlane_bench [--quick] [--reps N] [--filter LIST] [--json FILE|-] [--csv FILE|-]\n"
            "                   [--swap-dir DIR]\n"
            "  --quick        smaller workloads and fewer repetitions (about a minute)\n"
            "  --reps N       repetitions per measurement, median reported: 1 to 16\n"
            "                 (default 5, quick 3)\n"
            "  --filter LIST  run only benchmarks whose name contains an item of the\n"
            "                 comma-separated LIST; every item must match a name:\n"
            "                 alloc, get, compact, evict, pagein, prefetch, parallel,\n"
            "                 store, scaling\n"
            "  --json FILE    also write results as JSON ('-' for stdout, after the table)\n"
            "  --csv FILE     also write results as CSV ('-' for stdout)\n"
            "                 (both files are opened before the first benchmark runs and\n"
            "                 written when the last one ends)\n"
            "  --swap-dir DIR where paging benchmarks put swap files (default $TMPDIR or /var/tmp);\n"
            "                 must be an existing, writable directory\n");
}

typedef struct {
    const char *name;
    void (*fn)(const bench_opts *);
    const char *what;
} bench_entry;

static const bench_entry benches[] = {
    {"alloc", bench_alloc, "FastLane alloc+free pairs vs glibc, jemalloc, mimalloc"},
    {"get", bench_get, "ml_get vs a raw pointer array (hot and random)"},
    {"compact", bench_compact, "compaction of a 64 MiB lane left half free in random holes"},
    {"evict", bench_evict, "eviction of 64 KiB blobs vs zstd alone and the raw disk"},
    {"pagein", bench_pagein, "page-in latency at queue depth 1 vs pread + decompress"},
    {"prefetch", bench_prefetch, "ml_prefetch of 1000 random evicted blobs vs one by one"},
    {"parallel", bench_parallel, "page-ins on access from 2 threads vs 1"},
    {"store", bench_store, "larger-than-memory blob store: memorylane, rocksdb, mmap+cgroup, pread"},
    {"scaling", bench_scaling, "the blob store at 1x, 2x, 4x, 8x the memory budget"},
};
#define NBENCHES (sizeof benches / sizeof benches[0])

/* Does the filter item p[0..n) select this benchmark? Case-sensitive; an
 * item selects every benchmark whose name contains it (as --help says). */
static bool item_selects(const char *p, size_t n, const char *name)
{
    for (const char *q = name; n && strlen(q) >= n; q++)
        if (!strncmp(q, p, n)) return true;
    return false;
}

/* --filter: a comma-separated list; a benchmark runs when an item selects
 * it. */
static bool selected(const char *filter, const char *name)
{
    for (const char *p = filter; *p;) {
        size_t n = strcspn(p, ",");
        if (item_selects(p, n, name)) return true;
        p += n;
        if (*p == ',') p++;
    }
    return false;
}

static void list_names(FILE *f)
{
    for (size_t i = 0; i < NBENCHES; i++) fprintf(f, "%s%s", i ? ", " : "", benches[i].name);
    fputc('\n', f);
}

/* Every item of the filter must select some benchmark: an empty item (as in
 * "", "get," or "a,,b") or one naming no benchmark is an error. */
static bool check_filter(const char *filter)
{
    const char *p = filter;
    for (;;) {
        size_t n = strcspn(p, ",");
        bool hit = false;
        for (size_t i = 0; i < NBENCHES && !hit; i++) hit = item_selects(p, n, benches[i].name);
        if (!hit) {
            if (n) fprintf(stderr, "mlane_bench: --filter: no benchmark matches '%.*s'", (int)n, p);
            else fprintf(stderr, "mlane_bench: --filter: empty item in '%s'", filter);
            fprintf(stderr, "; the benchmarks are: ");
            list_names(stderr);
            return false;
        }
        p += n;
        if (!*p) return true;
        p++; /* past the ',' */
    }
}

/* --reps: a whole decimal number in 1..REPS_MAX (the benchmarks cap their
 * repetitions at 16 anyway; prefetch runs 2 x N, capped at 16). */
#define REPS_MAX 16
static bool parse_reps(const char *s, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end || errno == ERANGE || v < 1 || v > REPS_MAX) {
        fprintf(stderr, "mlane_bench: --reps: '%s' is not a number from 1 to %d\n", s, REPS_MAX);
        return false;
    }
    *out = (int)v;
    return true;
}

static bool check_swap_dir(const char *dir)
{
    struct stat st;
    if (!*dir) {
        fprintf(stderr, "mlane_bench: --swap-dir: empty directory name\n");
        return false;
    }
    if (stat(dir, &st)) {
        fprintf(stderr, "mlane_bench: --swap-dir %s: %s\n", dir, strerror(errno));
        return false;
    }
    if (!S_ISDIR(st.st_mode)) {
        fprintf(stderr, "mlane_bench: --swap-dir %s: %s\n", dir, strerror(ENOTDIR));
        return false;
    }
    /* A file made and removed again: access() says yes to root on a
     * read-only mount or in /sys. */
    char probe[PATH_MAX];
    int fd = -1;
    if (snprintf(probe, sizeof probe, "%s/.mlane_bench-XXXXXX", dir) >= (int)sizeof probe)
        errno = ENAMETOOLONG;
    else if ((fd = mkstemp(probe)) >= 0) {
        unlink(probe);
        close(fd);
        return true;
    }
    fprintf(stderr, "mlane_bench: --swap-dir %s: cannot create files there: %s\n", dir, strerror(errno));
    return false;
}

/* An output file, opened before the benchmarks run so that a bad path fails
 * at once. It is not truncated until the results are written, so a run that
 * dies on the way leaves an existing file as it was. */
typedef struct {
    const char *path;
    FILE *f;
    bool regular; /* a regular file: truncated before writing */
    bool created; /* by out_open: removed again if the run does not start */
} outfile;

static bool out_open(outfile *o, const char *path)
{
    o->path = path;
    o->regular = false;
    if (!strcmp(path, "-")) {
        o->f = stdout;
        return true;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    o->created = fd >= 0;
    if (fd < 0 && errno == EEXIST) fd = open(path, O_WRONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) || !(o->f = fdopen(fd, "w"))) {
        fprintf(stderr, "mlane_bench: cannot write %s: %s\n", path, strerror(errno));
        if (fd >= 0) close(fd);
        if (o->created) unlink(path);
        return false;
    }
    o->regular = S_ISREG(st.st_mode);
    return true;
}

/* Writes the results with `emit` and closes the file; false (with a
 * message) on any write error. */
static bool out_write(outfile *o, void (*emit)(FILE *, const bench_opts *), const bench_opts *opts)
{
    if (o->regular && ftruncate(fileno(o->f), 0)) {
        fprintf(stderr, "mlane_bench: cannot write %s: %s\n", o->path, strerror(errno));
        if (o->f != stdout) fclose(o->f);
        return false;
    }
    errno = 0;
    emit(o->f, opts);
    bool ok = !ferror(o->f);
    int err = ok ? 0 : errno ? errno : EIO;
    if (fflush(o->f)) ok = false, err = errno;
    if (o->f != stdout && fclose(o->f) && ok) ok = false, err = errno;
    if (!ok)
        fprintf(stderr, "mlane_bench: error writing %s: %s\n", o->f == stdout ? "stdout" : o->path,
                strerror(err));
    return ok;
}

static void write_csv_opts(FILE *f, const bench_opts *o)
{
    (void)o;
    write_csv(f);
}

/* Bad usage: the message is already out; the synopsis follows. */
static int bad_usage(void)
{
    fputc('\n', stderr);
    usage(stderr);
    return 2;
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "--store-child")) return bench_store_child(argc - 2, argv + 2);
    bench_opts o = {.reps = 0};
    const char *json = NULL, *csv = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--quick")) {
            o.quick = true;
            continue;
        }
        bool takes_value = !strcmp(a, "--reps") || !strcmp(a, "--filter") || !strcmp(a, "--json") ||
                           !strcmp(a, "--csv") || !strcmp(a, "--swap-dir");
        if (!takes_value) {
            fprintf(stderr, "mlane_bench: unknown argument '%s'\n", a);
            return bad_usage();
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "mlane_bench: %s needs a value\n", a);
            return bad_usage();
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--reps")) {
            if (!parse_reps(v, &o.reps)) return bad_usage();
        } else if (!strcmp(a, "--filter")) {
            if (!check_filter(v)) return 2;
            o.filter = v;
        } else if (!strcmp(a, "--json")) {
            json = v;
        } else if (!strcmp(a, "--csv")) {
            csv = v;
        } else {
            if (!check_swap_dir(v)) return 2;
            o.swap_dir = v;
        }
    }
    if (o.reps <= 0) o.reps = o.quick ? 3 : 5;

    outfile jf = {0}, cf = {0};
    if (json && !out_open(&jf, json)) return 2;
    if (csv && !out_open(&cf, csv)) {
        if (json && jf.f != stdout) {
            fclose(jf.f);
            if (jf.created) unlink(jf.path);
        }
        return 2;
    }

    printf("%-10s %-34s %12s %-7s %-26s %12s %7s %-7s %s\n", "bench", "case", "value", "unit",
           "baseline", "base value", "ratio", "target", "");
    for (size_t i = 0; i < NBENCHES; i++) {
        if (o.filter && !selected(o.filter, benches[i].name)) continue;
        fprintf(stderr, "[%s] %s\n", benches[i].name, benches[i].what);
        benches[i].fn(&o);
    }
    bool ok = true;
    if (json && !out_write(&jf, write_json, &o)) ok = false;
    if (csv && !out_write(&cf, write_csv_opts, &o)) ok = false;
    errno = 0;
    if (fflush(stdout) || ferror(stdout)) {
        fprintf(stderr, "mlane_bench: error writing stdout: %s\n", strerror(errno ? errno : EIO));
        ok = false;
    }
    return ok ? 0 : 1;
}
