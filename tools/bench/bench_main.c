/*
 * bench_main.c — `mlane_bench`: MemoryLane's benchmarks, with baselines.
 *
 *   mlane_bench [--quick] [--reps N] [--filter LIST] [--json FILE|-] [--csv FILE|-]
 *
 * Prints a table to stdout while it runs (progress goes to stderr), and the
 * same results as JSON or CSV on request. Every line carries the baseline it
 * was measured against in the same run and the ratio, since absolute figures
 * on a shared machine mean little.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "memorylane/memorylane.h"

typedef struct result {
    char bench[32], name[64], unit[16], baseline[48], note[96];
    double value, base_value, ratio, target;
    target_kind kind;
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

/* --filter: a comma-separated list; a benchmark runs when its name contains
 * any item. */
static bool selected(const char *filter, const char *name)
{
    for (const char *p = filter; *p;) {
        size_t n = strcspn(p, ",");
        for (const char *q = name; n && strlen(q) >= n; q++)
            if (!strncmp(q, p, n)) return true;
        p += n;
        if (*p == ',') p++;
    }
    return false;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: mlane_bench [--quick] [--reps N] [--filter LIST] [--json FILE|-] [--csv FILE|-]\n"
            "  --quick        smaller workloads and fewer repetitions (about a minute)\n"
            "  --reps N       repetitions per measurement, median reported (default 5, quick 3)\n"
            "  --filter LIST  run only benchmarks whose name contains an item of the\n"
            "                 comma-separated LIST\n"
            "                 (alloc, get, compact, evict, pagein, prefetch, parallel,\n"
            "                 store, scaling)\n"
            "  --json FILE    also write results as JSON ('-' for stdout, after the table)\n"
            "  --csv FILE     also write results as CSV\n"
            "  --swap-dir DIR where paging benchmarks put swap files (default $TMPDIR or /var/tmp)\n");
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

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "--store-child")) return bench_store_child(argc - 2, argv + 2);
    bench_opts o = {.reps = 0};
    const char *json = NULL, *csv = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--quick")) o.quick = true;
        else if (!strcmp(a, "--reps") && i + 1 < argc) o.reps = atoi(argv[++i]);
        else if (!strcmp(a, "--filter") && i + 1 < argc) o.filter = argv[++i];
        else if (!strcmp(a, "--json") && i + 1 < argc) json = argv[++i];
        else if (!strcmp(a, "--csv") && i + 1 < argc) csv = argv[++i];
        else if (!strcmp(a, "--swap-dir") && i + 1 < argc) o.swap_dir = argv[++i];
        else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "mlane_bench: unknown argument '%s' (try --help)\n", a);
            return 2;
        }
    }
    if (o.reps <= 0) o.reps = o.quick ? 3 : 5;
    printf("%-10s %-34s %12s %-7s %-26s %12s %7s %-7s %s\n", "bench", "case", "value", "unit",
           "baseline", "base value", "ratio", "target", "");
    for (size_t i = 0; i < sizeof benches / sizeof benches[0]; i++) {
        if (o.filter && !selected(o.filter, benches[i].name)) continue;
        fprintf(stderr, "[%s] %s\n", benches[i].name, benches[i].what);
        benches[i].fn(&o);
    }
    if (json) {
        FILE *f = strcmp(json, "-") ? fopen(json, "w") : stdout;
        if (!f) {
            fprintf(stderr, "mlane_bench: cannot write %s: %s\n", json, strerror(errno));
            return 1;
        }
        write_json(f, &o);
        if (f != stdout) fclose(f);
    }
    if (csv) {
        FILE *f = strcmp(csv, "-") ? fopen(csv, "w") : stdout;
        if (!f) {
            fprintf(stderr, "mlane_bench: cannot write %s: %s\n", csv, strerror(errno));
            return 1;
        }
        write_csv(f);
        if (f != stdout) fclose(f);
    }
    return 0;
}
