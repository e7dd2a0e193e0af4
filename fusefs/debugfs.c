/*
 * debugfs.c — the debug view: a live arena as a read-only FUSE filesystem.
 *
 * A pure client. Everything shown here comes from the public API
 * (ml_foreach, ml_handle_info_get, ml_read, ml_stats_get, ml_lane_map,
 * ml_events_read, groups); this file includes only memorylane.h and
 * debugfs.h. It needs no lock of the arena's and no hook in core/: the
 * library already takes snapshots under its own locks and hands them out
 * with no lock held, so a slow reader of the view (one that reads slowly
 * from its side of FUSE) never stalls the program, and nothing shown can be
 * more "inside" than what a program could print itself. The library's own
 * calls do hold one entry briefly: ml_read of a cold entry keeps it claimed
 * while its record is read and decompressed, so a program thread touching
 * that entry meanwhile waits that long (about the time of a page-in). It
 * never writes, frees or moves memory; data is read with
 * ml_read, which decompresses a copy of a cold handle and leaves it cold.
 *
 * Which libfuse API. The high-level (path) API of libfuse 3: the layout is a
 * small tree whose every node is named by its path, so resolving a path
 * from scratch on each request is simple and needs no inode table of ours
 * (the library keeps one). By default kernel caching is switched off
 * (entry, attribute and negative timeouts 0), so that a handle freed or
 * allocated shows at once; with the cache_ms option, names and attributes
 * may be cached that long, and listings carry attributes (readdirplus, see
 * op_readdir), which is what makes whole-tree walks fast. Negative entries
 * are never cached. Every file is opened with direct_io, so that each read
 * reaches us (that is how an open data file of a freed handle reports
 * ESTALE) and a text file is not limited to the size the kernel last
 * cached. We do not use
 * fuse_loop: each serving thread runs its own loop over the public session
 * calls (fuse_session_receive_buf / fuse_session_process_buf), polling the
 * FUSE device (non-blocking) and an eventfd, so that it can be told to stop
 * at any moment without a signal. One thread serves by default; with the
 * threads option several do, each with a buffer of its own, taking turns
 * to wait on the device (next_request), so that a slow request (a large
 * rendering, a cold blob decompressed for a read) does not hold up the
 * others. Handing each request from one thread to the next costs a few
 * context switches, which on two cores made a whole-tree walk about twice
 * as slow as with one thread: hence the default.
 *
 * Sizes. A text file is rendered at lookup/getattr time to report its exact
 * size, and an open file keeps a snapshot it reads from. Each reader sees
 * one consistent file: the kernel sends fstat as a plain getattr by path
 * (no file handle), so a getattr from a reader that has the file open
 * answers with its snapshot's size; and a reader that opens a file right
 * after a stat (within MEMO_MS: tar's lstat, open, read st_size bytes)
 * gets, once, the rendering it was told the size of. Others, and the same
 * reader later, see the file as it is now. A reader is a process: FUSE
 * names the calling thread, and /proc/<tid>/status its process (reader_of,
 * cached for a second); 0 from outside our pid namespace: no memory at
 * all for those. A data file's size is the allocation's size; an
 * open data file keeps the ml_handle (not the ID, which is reused), so once
 * that handle is freed every read answers ESTALE even if its ID lives again.
 *
 * Unmount. The rule (see DESIGN.md, "Build facts"): a FUSE request that is
 * never answered leaves its caller in uninterruptible sleep, so the server
 * must keep answering until the kernel has let go of the connection, and
 * must not stop reading first and detach later. ml_debugfs_unmount
 *   0. waits (within the grace period below) until every directory the
 *      kernel opened has been released: a release is sent in the background
 *      after close, and one still queued when the connection ends is lost
 *      (and with it the record libfuse keeps for that directory: one batch
 *      of its listing, see op_readdir).
 *   1. unmounts for real (umount2 without MNT_DETACH; fusermount3 -u when
 *      not privileged) while the threads still serve. When the mount is not
 *      busy this succeeds; the kernel ends the connection and the loop
 *      reads ENODEV and returns. While files are open the kernel says EBUSY:
 *      we retry for a short grace period, so a `cat` in progress finishes.
 *   2. If still busy (a reader holds a file open), it aborts the connection
 *      (fusectl's connections/N/abort, else umount2 MNT_FORCE, which aborts
 *      FUSE): every pending and later request fails at once (ENOTCONN /
 *      ECONNABORTED), so nobody can hang, and the loop ends. Then it retries
 *      the real unmount while readers notice their errors and close.
 *   3. If something still holds the mount (a shell's working directory),
 *      the connection being dead, a detach is harmless: it does so, so that
 *      no stale mount stays in the namespace, and returns -EBUSY.
 * Then it wakes the loop through the eventfd (for the paths where the kernel
 * did not end it), joins the threads, and closes the device, which aborts
 * whatever might remain (a copy of the mount in another namespace keeps the
 * connection alive past our unmount); libfuse's own lazy unmount is then a
 * no-op, since the device polls POLLERR (see close_device). Only when our
 * mount is still there does libfuse close the device and unmount (the
 * unprivileged fallback). fuse_session_exit is never used
 * while the connection lives: libfuse drops a request read after exit.
 *
 * One thing no server can fix: if the program dies (a crash, abort) while
 * one of its own threads is inside a request to this view, the kernel cannot
 * finish the exit, since that thread waits for an answer from a thread that
 * is gone, until someone aborts the connection (fusectl). Readers in other
 * processes are safe: the dying program closes the device, which aborts it.
 *
 * Mount options: ro (the kernel refuses writes with EROFS before asking us;
 * the write operations below refuse too), default_permissions (the kernel
 * applies the 0500/0400 modes), nosuid, nodev, noexec; allow_other only when
 * asked. Events: the view turns the ring on at mount unless it is on
 * already (ml_events_capacity), and the last unmount turns it off again
 * only if the first mount turned it on.
 *
 * Locking. The fs object is immutable after mount except for the
 * open-directory count (an atomic the serving threads change and unmount
 * reads) and the per-reader state: the list of open files and the stat
 * memos, which fs->lock guards. It is a leaf lock, held only to link,
 * unlink, look up or copy a snapshot (never while rendering, never across
 * an arena call).
 * Each snapshot is taken by the public API under the arena's locks and
 * released before we reply. An open file's own fields are written at open,
 * before it is linked, and read by the requests on it, which the kernel
 * sends only after the open was answered. The other lock, events_lock,
 * guards the registry that tells whether a mount turned events on (so the
 * last unmount of an arena turns them off again, and only then).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <fuse3/fuse.h>
#include <fuse3/fuse_lowlevel.h>

#include "memorylane/debugfs.h"
#include "memorylane/memorylane.h"

extern char **environ;

/* ---- tunables ---------------------------------------------------------------- */

#define EVENTS_DEFAULT 4096
#define UMOUNT_GRACE_MS 500   /* real unmount retried while files are open */
#define UMOUNT_ABORTED_MS 1000 /* after the abort, for readers to close */
#define UMOUNT_RETRY_US 5000
#define RELEASE_WAIT_US 200   /* poll for directory releases still on their way */
#define THREADS_DEFAULT 1
#define NOMEM_RETRY_US 10000      /* a serving thread short of memory tries again, */
#define NOMEM_RETRY_MAX_US 1000000 /* backing off up to a second */

/* ---- data structures ----------------------------------------------------------- */

/* A file the kernel has opened and not released yet, or a directory: its
 * listing (with attributes under cache_ms, for readdirplus). Linked in
 * fs->open (under fs->lock); the ones the kernel never released (connection
 * aborted) are freed by unmount after the threads are joined. */
typedef struct open_file {
    struct open_file *prev, *next;
    bool is_data;
    ml_handle h;   /* data: the handle, as it was at open */
    char *text;    /* text: the snapshot rendered at open */
    size_t len;
    char *path;    /* text: its path, and the reader (process) that opened it */
    pid_t pid;
    bool closed;   /* text: its reader closed it (the flush came); the
                      release, sent in the background, may come later */
    char **names;  /* directory: the listing taken at offset 0 */
    struct stat *attrs; /* and, under cache_ms, each entry's attributes */
    size_t nents;
} open_file;

struct ml_debugfs {
    ml_arena *arena;
    char *mountpoint; /* as given */
    char *abspath;    /* canonical: what we unmount */
    struct fuse *fuse;
    struct fuse_session *se;
    int wake_fd;      /* eventfd: the loops stop when it is readable */
    pthread_t threads[ML_DEBUGFS_THREADS_MAX];
    unsigned nthreads; /* started */
    bool have_conn;
    unsigned conn;    /* FUSE connection number (minor of st_dev) */
    uid_t uid;
    gid_t gid;
    struct timespec mounted_at;
    unsigned cache_ms; /* how long the kernel may cache names and attributes */
    pthread_mutex_t lock; /* open, memo and readers (a leaf lock) */
    pthread_mutex_t recv_lock; /* held by the one thread waiting on the device */
    /* The last text files rendered for a stat, per reader: one that opens
     * the file right after gets the very bytes it was told the size of
     * (tar: lstat, open, read st_size bytes). */
    struct memo {
        char *path;
        pid_t pid;
        ml_handle h; /* the handle a handle's file was rendered for */
        uint64_t at_ms;
        char *text;
        size_t len;
        bool opened; /* an open took it: the next lookup renders afresh */
    } memo[8];
    unsigned memo_next;
    /* The process of each thread seen lately (reader_of). */
    struct reader_ref {
        pid_t tid, process;
        uint64_t at_ms;
    } readers[16];
    unsigned readers_next;
    open_file *open;
    int open_dirs;    /* opened and not released yet; atomic: read by unmount */
    bool stopping;    /* atomic: unmount is stopping the threads (with wake_fd) */
    bool proc_ok;     /* /proc is our pid namespace's: reader_of may use it */
};

/* Registry of the arenas whose events the view turned on. events_lock
 * guards it; it is a leaf lock (ml_events_enable takes only the arena's
 * events lock). */
typedef struct events_ref {
    struct events_ref *next;
    ml_arena *arena;
    unsigned mounts;
    bool ours; /* events were off before the first mount: turn them off after the last */
} events_ref;

static pthread_mutex_t events_lock = PTHREAD_MUTEX_INITIALIZER;
static events_ref *events_refs;

/* What a path names. */
typedef enum { N_DIR, N_TEXT, N_DATA, N_LINK } ntype;
typedef enum { D_ROOT, D_ARENA, D_LANES, D_LANE, D_PAGING, D_HANDLES, D_HANDLE, D_GROUPS, D_GROUP, D_TAGS, D_TAG } dkind;
typedef enum { T_CONFIG, T_ARENA_STATS, T_LANE_STATS, T_LANE_MAP, T_PAGING_STATS, T_STATE, T_INFO, T_EVENTS } tkind;

typedef struct node {
    ntype type;
    int kind;      /* dkind for N_DIR, tkind for N_TEXT */
    ml_lane lane;  /* D_LANE and its files */
    ml_handle h;   /* D_HANDLE, its files, links */
    int64_t id;
    ml_group group;            /* D_GROUP */
    char name[ML_NAME_MAX > ML_TAG_MAX ? ML_NAME_MAX : ML_TAG_MAX]; /* group or tag */
} node;

/* The fixed part of the tree. */
typedef struct entry {
    const char *name;
    ntype type;
    int kind;
} entry;

static const entry root_entries[] = {
    {"arena", N_DIR, D_ARENA},     {"lanes", N_DIR, D_LANES}, {"paging", N_DIR, D_PAGING},
    {"handles", N_DIR, D_HANDLES}, {"groups", N_DIR, D_GROUPS}, {"tags", N_DIR, D_TAGS},
    {"events", N_TEXT, T_EVENTS},
};
static const entry arena_entries[] = {{"config", N_TEXT, T_CONFIG}, {"stats", N_TEXT, T_ARENA_STATS}};
static const entry lanes_entries[] = {{"fast", N_DIR, D_LANE}, {"slow", N_DIR, D_LANE}};
static const entry lane_entries[] = {{"stats", N_TEXT, T_LANE_STATS}, {"map", N_TEXT, T_LANE_MAP}};
static const entry paging_entries[] = {{"stats", N_TEXT, T_PAGING_STATS}};
static const entry handle_entries[] = {{"state", N_TEXT, T_STATE}, {"info", N_TEXT, T_INFO}, {"data", N_DATA, 0}};

#define NENTRIES(a) (sizeof(a) / sizeof(a)[0])

static const entry *static_entries(int kind, size_t *n)
{
    switch (kind) {
    case D_ROOT: *n = NENTRIES(root_entries); return root_entries;
    case D_ARENA: *n = NENTRIES(arena_entries); return arena_entries;
    case D_LANES: *n = NENTRIES(lanes_entries); return lanes_entries;
    case D_LANE: *n = NENTRIES(lane_entries); return lane_entries;
    case D_PAGING: *n = NENTRIES(paging_entries); return paging_entries;
    case D_HANDLE: *n = NENTRIES(handle_entries); return handle_entries;
    }
    *n = 0;
    return NULL;
}

/* ---- helpers: text buffer -------------------------------------------------------- */

typedef struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
} sbuf;

__attribute__((format(printf, 2, 3))) static void sb_printf(sbuf *b, const char *fmt, ...)
{
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = b->cap - b->len;
        int n = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap : 512;
        while (cap - b->len <= (size_t)n) cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
}

static void sb_free(sbuf *b)
{
    free(b->p);
    *b = (sbuf){0};
}

/* ---- helpers: names ----------------------------------------------------------------- */

/* A handle ID as the view spells it: -?[1-9][0-9]*, within int64. Anything
 * else ("abc", "0", "05", "+5", "-0") names nothing. */
static bool parse_id(const char *s, int64_t *out)
{
    bool neg = *s == '-';
    if (neg) s++;
    if (*s < '1' || *s > '9') return false;
    uint64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return false;
        if (v > (uint64_t)INT64_MAX / 10) return false;
        v = v * 10 + (uint64_t)(*s - '0');
        if (v > (uint64_t)INT64_MAX) return false;
    }
    *out = neg ? -(int64_t)v : (int64_t)v;
    return true;
}

static const char *bool_word(bool b) { return b ? "true" : "false"; }

/* ---- helpers: walks ------------------------------------------------------------------ */

typedef struct tag_walk {
    const char *tag;
    bool found;
} tag_walk;

static int tag_exists_fn(const ml_handle_info *info, void *ctx)
{
    tag_walk *w = ctx;
    if (strcmp(info->tag, w->tag) == 0) {
        w->found = true;
        return 1;
    }
    return 0;
}

/* A set of tag names (open addressing), for listing tags/. */
typedef struct tag_set {
    char **slot;
    size_t cap, n;
    bool oom;
} tag_set;

static uint64_t str_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static void tag_set_add(tag_set *t, const char *tag)
{
    if (t->oom) return;
    if ((t->n + 1) * 2 > t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        char **ns = calloc(cap, sizeof *ns);
        if (!ns) {
            t->oom = true;
            return;
        }
        for (size_t i = 0; i < t->cap; i++) {
            if (!t->slot[i]) continue;
            size_t j = str_hash(t->slot[i]) & (cap - 1);
            while (ns[j]) j = (j + 1) & (cap - 1);
            ns[j] = t->slot[i];
        }
        free(t->slot);
        t->slot = ns;
        t->cap = cap;
    }
    size_t j = str_hash(tag) & (t->cap - 1);
    for (; t->slot[j]; j = (j + 1) & (t->cap - 1))
        if (strcmp(t->slot[j], tag) == 0) return;
    if (!(t->slot[j] = strdup(tag))) {
        t->oom = true;
        return;
    }
    t->n++;
}

static void tag_set_free(tag_set *t)
{
    for (size_t i = 0; i < t->cap; i++) free(t->slot[i]);
    free(t->slot);
}

static int tag_collect_fn(const ml_handle_info *info, void *ctx)
{
    if (info->tag[0]) tag_set_add(ctx, info->tag);
    return 0;
}

/* ---- path resolution ------------------------------------------------------------------- */

/* Step from directory n to its child `name`. Caller has checked that n is a
 * directory. @return 0 or -ENOENT. */
static int child(ml_debugfs *fs, node *n, const char *name)
{
    size_t cnt;
    const entry *e = static_entries(n->kind, &cnt);
    if (e) {
        for (size_t i = 0; i < cnt; i++) {
            if (strcmp(e[i].name, name) != 0) continue;
            if (n->kind == D_LANES) n->lane = i == 0 ? ML_LANE_FAST : ML_LANE_SLOW;
            n->type = e[i].type;
            n->kind = e[i].kind;
            return 0;
        }
        return -ENOENT;
    }
    int64_t id;
    ml_handle h;
    ml_handle_info info;
    switch (n->kind) {
    case D_HANDLES:
        if (!parse_id(name, &id) || ml_handle_from_id(fs->arena, id, &h) != 0) return -ENOENT;
        n->kind = D_HANDLE;
        n->h = h;
        n->id = id;
        return 0;
    case D_GROUPS: {
        ml_group g;
        if (strlen(name) >= sizeof n->name || ml_group_find(fs->arena, name, &g) != 0) return -ENOENT;
        n->kind = D_GROUP;
        n->group = g;
        strcpy(n->name, name);
        return 0;
    }
    case D_TAGS: {
        if (strlen(name) >= ML_TAG_MAX) return -ENOENT;
        tag_walk w = {name, false};
        ml_foreach(fs->arena, tag_exists_fn, &w);
        if (!w.found) return -ENOENT;
        n->kind = D_TAG;
        strcpy(n->name, name);
        return 0;
    }
    case D_GROUP:
    case D_TAG:
        if (!parse_id(name, &id) || ml_handle_from_id(fs->arena, id, &h) != 0) return -ENOENT;
        if (ml_handle_info_get(fs->arena, h, &info) != 0) return -ENOENT;
        if (n->kind == D_GROUP ? info.group != n->group : strcmp(info.tag, n->name) != 0) return -ENOENT;
        n->type = N_LINK;
        n->h = h;
        n->id = id;
        return 0;
    }
    return -ENOENT;
}

/* Resolve an absolute path of the view. @return 0, -ENOENT, -ENOTDIR. */
static int resolve(ml_debugfs *fs, const char *path, node *n)
{
    memset(n, 0, sizeof *n);
    n->type = N_DIR;
    n->kind = D_ROOT;
    char comp[NAME_MAX + 1];
    const char *p = path;
    for (;;) {
        while (*p == '/') p++;
        if (!*p) return 0;
        size_t len = strcspn(p, "/");
        if (n->type != N_DIR) return -ENOTDIR;
        if (len > NAME_MAX) return -ENOENT;
        memcpy(comp, p, len);
        comp[len] = '\0';
        p += len;
        int rc = child(fs, n, comp);
        if (rc) return rc;
    }
}

/* ---- renderers (one list, many views: stats come from the X-macro lists) ---------------- */

static int render_config(ml_debugfs *fs, sbuf *b)
{
    ml_config c;
    int rc = ml_arena_config(fs->arena, &c);
    if (rc) return rc;
    sb_printf(b, "fast_lane_size %zu\n", c.fast_lane_size);
    sb_printf(b, "fast_lane_max_size %zu\n", c.fast_lane_max_size);
    sb_printf(b, "slow_lane_size %zu\n", c.slow_lane_size);
    sb_printf(b, "slow_lane_max_size %zu\n", c.slow_lane_max_size);
    sb_printf(b, "threshold %zu\n", c.threshold);
    sb_printf(b, "failover_to_slow %s\n", bool_word(c.failover_to_slow));
    sb_printf(b, "lock_lanes %s\n", bool_word(c.lock_lanes));
    sb_printf(b, "enable_auto_compaction %s\n", bool_word(c.enable_auto_compaction));
    sb_printf(b, "compaction_threshold %g\n", c.compaction_threshold);
    sb_printf(b, "slow_lane_usage_threshold %g\n", c.slow_lane_usage_threshold);
    sb_printf(b, "slow_lane_safety_margin %g\n", c.slow_lane_safety_margin);
    sb_printf(b, "policy_check_interval_ms %" PRIu32 "\n", c.policy_check_interval_ms);
    sb_printf(b, "max_handles %zu\n", c.max_handles);
    sb_printf(b, "promote_age_ms %" PRIu32 "\n", c.promote_age_ms);
    sb_printf(b, "migrate_on_full %s\n", bool_word(c.migrate_on_full));
    sb_printf(b, "compaction_budget_us %" PRIu32 "\n", c.compaction_budget_us);
    sb_printf(b, "enable_paging %s\n", bool_word(c.enable_paging));
    sb_printf(b, "swap_dir %s\n", c.swap_dir ? c.swap_dir : "-");
    sb_printf(b, "swap_size %zu\n", c.swap_size);
    sb_printf(b, "zstd_level %d\n", c.zstd_level);
    sb_printf(b, "cold_after_ms %" PRIu32 "\n", c.cold_after_ms);
    sb_printf(b, "evict_hysteresis %g\n", c.evict_hysteresis);
    sb_printf(b, "io_queue_depth %" PRIu32 "\n", c.io_queue_depth);
    sb_printf(b, "direct_io %s\n", bool_word(c.direct_io));
    sb_printf(b, "compressed_stage %s\n", bool_word(c.compressed_stage));
    sb_printf(b, "io_engine %d\n", c.io_engine);
    sb_printf(b, "min_evict_size %zu\n", c.min_evict_size);
    /* (as MEMORYLANE_DEBUG spells them; ML_DEBUG_MOVES implies poison) */
    sb_printf(b, "debug %s\n", (c.debug & ML_DEBUG_MOVES) ? "poison,moves" : (c.debug & ML_DEBUG_POISON) ? "poison" : "none");
    return 0;
}

static int render_arena_stats(ml_debugfs *fs, sbuf *b)
{
    ml_stats s;
    int rc = ml_stats_get(fs->arena, &s);
    if (rc) return rc;
#define PRINT_STAT(name, desc) sb_printf(b, "%s %" PRIu64 "\n", #name, (uint64_t)s.name);
    ML_ARENA_STATS(PRINT_STAT)
#undef PRINT_STAT
    return 0;
}

static int render_lane_stats(ml_debugfs *fs, ml_lane lane, sbuf *b)
{
    ml_stats s;
    int rc = ml_stats_get(fs->arena, &s);
    if (rc) return rc;
    const ml_lane_stats *l = &s.lane[lane];
#define PRINT_STAT(name, desc) sb_printf(b, "%s %" PRIu64 "\n", #name, (uint64_t)l->name);
    ML_LANE_STATS(PRINT_STAT)
#undef PRINT_STAT
    return 0;
}

static int map_line_fn(const ml_extent_info *e, void *ctx)
{
    sbuf *b = ctx;
    switch (e->kind) {
    case ML_EXTENT_BLOB:
        sb_printf(b, "%zu %zu blob id=%" PRId64 "\n", e->offset, e->length, e->id);
        break;
    case ML_EXTENT_SPAN:
        sb_printf(b, "%zu %zu span block_size=%zu blocks=%" PRIu32 " used=%" PRIu32 "\n", e->offset,
                  e->length, e->block_size, e->blocks, e->used);
        break;
    default:
        sb_printf(b, "%zu %zu free\n", e->offset, e->length);
        break;
    }
    return 0;
}

static int render_lane_map(ml_debugfs *fs, ml_lane lane, sbuf *b)
{
    return ml_lane_map(fs->arena, lane, map_line_fn, b);
}

static int render_paging_stats(ml_debugfs *fs, sbuf *b)
{
    ml_paging_stats p;
    int rc = ml_paging_stats_get(fs->arena, &p);
    if (rc == -ENOTSUP) { /* library built without paging: the counters are all 0 */
        memset(&p, 0, sizeof p);
        strcpy(p.engine, "none");
    } else if (rc) {
        return rc;
    }
#define PRINT_STAT(name, desc) sb_printf(b, "%s %" PRIu64 "\n", #name, (uint64_t)p.name);
    ML_PAGING_STATS(PRINT_STAT)
#undef PRINT_STAT
    p.engine[sizeof p.engine - 1] = '\0';
    sb_printf(b, "engine %s\n", p.engine[0] ? p.engine : "none");
    return 0;
}

/* "-" stands for "none" (no tag, no group, no move yet). */
static int render_info(ml_debugfs *fs, ml_handle h, sbuf *b)
{
    ml_handle_info i;
    if (ml_handle_info_get(fs->arena, h, &i) != 0) return -ENOENT;
    sb_printf(b, "id %" PRId64 "\n", i.id);
    sb_printf(b, "state %s\n", ml_state_name(i.state));
    sb_printf(b, "lane %s\n", ml_lane_name(i.lane));
    sb_printf(b, "born_lane %s\n", ml_lane_name(i.born_lane));
    sb_printf(b, "size %zu\n", i.size);
    sb_printf(b, "alloc_size %zu\n", i.alloc_size);
    sb_printf(b, "align %zu\n", i.align);
    sb_printf(b, "generation %" PRIu32 "\n", i.generation);
    sb_printf(b, "pins %" PRIu32 "\n", i.pins);
    sb_printf(b, "tag %s\n", i.tag[0] ? i.tag : "-");
    sb_printf(b, "group %s\n", i.group ? i.group_name : "-");
    sb_printf(b, "group_id %" PRIu32 "\n", (uint32_t)i.group);
    sb_printf(b, "created %" PRIu64 "\n", i.created_ns);
    sb_printf(b, "last_access %" PRIu64 "\n", i.last_access_ns);
    sb_printf(b, "accesses %" PRIu64 "\n", i.accesses);
    sb_printf(b, "migrations %" PRIu32 "\n", i.migrations);
    sb_printf(b, "last_migration %" PRIu64 "\n", i.last_migration_ns);
    sb_printf(b, "last_from %s\n", i.migrations ? ml_lane_name(i.last_from) : "-");
    sb_printf(b, "last_to %s\n", i.migrations ? ml_lane_name(i.last_to) : "-");
    sb_printf(b, "offset %zu\n", i.offset);
    sb_printf(b, "stored_size %zu\n", i.stored_size);
    sb_printf(b, "kind %s\n", i.blob ? "blob" : "block");
    sb_printf(b, "handle 0x%016" PRIx64 "\n", i.handle.bits);
    return 0;
}

static int render_state(ml_debugfs *fs, ml_handle h, sbuf *b)
{
    ml_state s = ml_handle_state(fs->arena, h);
    if (s == ML_STATE_FREED || s == ML_STATE_INVALID) return -ENOENT;
    sb_printf(b, "%s\n", ml_state_name(s));
    return 0;
}

/* seq time_ns kind id bytes count from to */
static int render_events(ml_debugfs *fs, sbuf *b)
{
    /* The ring as it is now: copied in one call (one hold of the events
     * lock) when it fits in a buffer of 64 Ki events, else in batches of
     * that; at most its capacity of events from the oldest at the first
     * batch, in a row. Events recorded meanwhile wait for the next open; if
     * the ring laps us between batches (a gap), the file ends there rather
     * than chase the program. */
    size_t cap = ml_events_capacity(fs->arena), max = cap ? (cap < 65536 ? cap : 65536) : 1;
    ml_event *ev = malloc(max * sizeof *ev);
    if (!ev) return -ENOMEM;
    uint64_t cursor = 0, end = 0, prev = 0;
    for (;;) {
        size_t n = 0;
        int rc = ml_events_read(fs->arena, &cursor, ev, max, &n);
        if (rc || n == 0) {
            free(ev);
            return rc;
        }
        if (!end) end = ev[0].seq + (cap ? cap : 1);
        for (size_t i = 0; i < n; i++) {
            const ml_event *e = &ev[i];
            if (e->seq >= end || (prev && e->seq != prev + 1)) {
                free(ev);
                return 0;
            }
            prev = e->seq;
            sb_printf(b, "%" PRIu64 " %" PRIu64 " %s %" PRId64 " %" PRIu64 " %" PRIu64 " %s %s\n", e->seq,
                      e->time_ns, ml_event_name(e->kind), e->id, e->bytes, e->count, ml_lane_name(e->from),
                      ml_lane_name(e->to));
        }
    }
}

/* Render text node n into b. @return 0 or a negative errno (-ENOENT when
 * the handle went away). */
static int render(ml_debugfs *fs, const node *n, sbuf *b)
{
    int rc;
    switch (n->kind) {
    case T_CONFIG: rc = render_config(fs, b); break;
    case T_ARENA_STATS: rc = render_arena_stats(fs, b); break;
    case T_LANE_STATS: rc = render_lane_stats(fs, n->lane, b); break;
    case T_LANE_MAP: rc = render_lane_map(fs, n->lane, b); break;
    case T_PAGING_STATS: rc = render_paging_stats(fs, b); break;
    case T_STATE: rc = render_state(fs, n->h, b); break;
    case T_INFO: rc = render_info(fs, n->h, b); break;
    case T_EVENTS: rc = render_events(fs, b); break;
    default: rc = -ENOENT; break;
    }
    if (rc == 0 && b->oom) rc = -ENOMEM;
    if (rc) sb_free(b);
    return rc;
}

static int link_target(const node *n, char *buf, size_t len)
{
    int k = snprintf(buf, len, "../../handles/%" PRId64, n->id);
    return k < 0 ? 0 : k;
}

/* ---- FUSE operations --------------------------------------------------------------------- */

static ml_debugfs *current_fs(void) { return fuse_get_context()->private_data; }

static void fill_stat(const ml_debugfs *fs, struct stat *st, ntype type, size_t size)
{
    memset(st, 0, sizeof *st);
    switch (type) {
    case N_DIR:
        st->st_mode = S_IFDIR | 0500;
        st->st_nlink = 2;
        break;
    case N_LINK:
        st->st_mode = S_IFLNK | 0777;
        st->st_nlink = 1;
        break;
    default:
        st->st_mode = S_IFREG | 0400;
        st->st_nlink = 1;
        break;
    }
    st->st_uid = fs->uid;
    st->st_gid = fs->gid;
    st->st_size = (off_t)size;
    st->st_blksize = 4096;
    st->st_blocks = (blkcnt_t)((size + 511) / 512);
    st->st_atim = st->st_mtim = st->st_ctim = fs->mounted_at;
}

static void *op_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
    ml_debugfs *fs = current_fs();
    /* By default nothing is cached in the kernel: the heap changes under
     * the view. With cache_ms, names and attributes may be cached that
     * long, and listings carry attributes (readdirplus), so that a walk of
     * the tree asks once per directory rather than twice per entry. A name
     * not found is never cached (a new handle shows at once), and contents
     * are never cached (direct_io). */
    double t = fs->cache_ms / 1000.0;
    cfg->entry_timeout = t;
    cfg->attr_timeout = t;
    cfg->negative_timeout = 0;
    cfg->direct_io = 1;
    cfg->kernel_cache = 0;
    cfg->auto_cache = 0;
    cfg->use_ino = 0;
    if (!fs->cache_ms) conn->want &= ~(unsigned)(FUSE_CAP_READDIRPLUS | FUSE_CAP_READDIRPLUS_AUTO);
    return fs;
}

/* ---- per-reader consistency of text files ----------------------------------- */

/* How long a rendering made for one reader's stat is what that reader
 * opens: long enough for lstat-then-open (tar, cp), short enough that a
 * reader polling a file sees it move. */
#define MEMO_MS 100
/* How long a thread's process is taken as known (thread IDs are reused
 * only after the kernel has gone round its whole range). */
#define READER_MS 1000

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The process of thread tid, from /proc/<tid>/status; 0 if it cannot be
 * read. */
static pid_t process_of(pid_t tid)
{
    char p[64], line[128];
    snprintf(p, sizeof p, "/proc/%d/status", (int)tid);
    FILE *f = fopen(p, "re");
    if (!f) return 0;
    pid_t tgid = 0;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "Tgid:", 5)) {
            tgid = (pid_t)atoi(line + 5);
            break;
        }
    fclose(f);
    return tgid > 0 ? tgid : 0;
}

/* Whether thread tid still belongs to process (its ID not reused since). */
static bool still_in(pid_t process, pid_t tid)
{
    return syscall(SYS_tgkill, process, tid, 0) == 0 || errno == EPERM;
}

/* The reader a request comes from: the calling thread's process (the
 * thread itself when /proc cannot say), 0 from outside our pid namespace
 * (FUSE gives no thread then). */
static pid_t reader_of(ml_debugfs *fs)
{
    pid_t tid = fuse_get_context()->pid;
    if (tid <= 0) return 0;
    if (!fs->proc_ok) return tid;
    uint64_t now = now_ms();
    pid_t process = 0;
    pthread_mutex_lock(&fs->lock);
    for (unsigned i = 0; i < sizeof fs->readers / sizeof fs->readers[0] && !process; i++)
        if (fs->readers[i].tid == tid && now - fs->readers[i].at_ms <= READER_MS) process = fs->readers[i].process;
    pthread_mutex_unlock(&fs->lock);
    if (process && still_in(process, tid)) return process;
    process = process_of(tid);
    if (!process) return tid; /* (not kept: the next request asks again) */
    pthread_mutex_lock(&fs->lock);
    fs->readers[fs->readers_next++ % (sizeof fs->readers / sizeof fs->readers[0])] =
        (struct reader_ref){tid, process, now};
    pthread_mutex_unlock(&fs->lock);
    return process;
}

/* Whether /proc shows our own pid namespace (it may be another's after
 * unshare without a remount): /proc/self must name this process. */
static bool proc_is_ours(void)
{
    char link[32];
    ssize_t k = readlink("/proc/self", link, sizeof link - 1);
    if (k <= 0) return false;
    link[k] = 0;
    return atoi(link) == (int)getpid();
}

/* The reader's rendering of path, however old; NULL if none. */
static struct memo *memo_of(ml_debugfs *fs, const char *path, pid_t pid, ml_handle h)
{
    for (unsigned i = 0; i < sizeof fs->memo / sizeof fs->memo[0]; i++) {
        struct memo *m = &fs->memo[i];
        if (m->path && m->pid == pid && m->h.bits == h.bits && !strcmp(m->path, path)) return m;
    }
    return NULL;
}

/* The reader's rendering of path if it is recent (MEMO_MS). */
static struct memo *memo_find(ml_debugfs *fs, const char *path, pid_t pid, ml_handle h)
{
    struct memo *m = memo_of(fs, path, pid, h);
    return m && now_ms() - m->at_ms <= MEMO_MS ? m : NULL;
}

/* Keep a rendering (takes text; frees it if it cannot keep it), in place
 * of the reader's older one of the same file, if any. */
static void memo_put(ml_debugfs *fs, const char *path, pid_t pid, ml_handle h, char *text, size_t len)
{
    struct memo *m = memo_of(fs, path, pid, h);
    if (!m) m = &fs->memo[fs->memo_next++ % (sizeof fs->memo / sizeof fs->memo[0])];
    char *p = strdup(path);
    free(m->path);
    free(m->text);
    *m = (struct memo){p, pid, h, now_ms(), p ? text : NULL, len, false};
    if (!p) free(text);
}

static void memo_free(ml_debugfs *fs)
{
    for (unsigned i = 0; i < sizeof fs->memo / sizeof fs->memo[0]; i++) {
        free(fs->memo[i].path);
        free(fs->memo[i].text);
    }
}

/* The size of text file `path` as the asking reader sees it: its own open
 * snapshot (the newest it still holds: not one it has closed, whose
 * release may still be on the way), else what it was just told (if no
 * open has taken that rendering yet), else rendered now. Reader 0 (a
 * caller outside our pid namespace) gets no memory. */
static int text_size(ml_debugfs *fs, const char *path, const node *n, size_t *size)
{
    pid_t pid = reader_of(fs);
    if (pid != 0) {
        bool known = false;
        pthread_mutex_lock(&fs->lock);
        for (const open_file *of = fs->open; of && !known; of = of->next)
            if (!of->is_data && !of->closed && of->path && of->pid == pid && of->h.bits == n->h.bits &&
                !strcmp(of->path, path)) {
                /* (Its size only: the next open renders afresh. Handing
                 * the snapshot on to it, as this once did, kept a reader
                 * that fstat()s what it opens, as stdio does, on one
                 * rendering for as long as it came back within MEMO_MS.) */
                *size = of->len;
                known = true;
            }
        const struct memo *m = known ? NULL : memo_find(fs, path, pid, n->h);
        if (m && !m->opened) {
            *size = m->len;
            known = true;
        }
        pthread_mutex_unlock(&fs->lock);
        if (known) return 0;
    }
    sbuf b = {0};
    int rc = render(fs, n, &b);
    if (rc) return rc;
    *size = b.len;
    if (pid != 0) {
        pthread_mutex_lock(&fs->lock);
        memo_put(fs, path, pid, n->h, b.p, b.len);
        pthread_mutex_unlock(&fs->lock);
    } else {
        sb_free(&b);
    }
    return 0;
}

/* The attributes of a resolved node: sizes are exact (a text file is
 * rendered to measure it). @return 0, -ENOENT (freed meanwhile), -ENOMEM. */
static int node_attr(ml_debugfs *fs, const node *n, struct stat *st)
{
    switch (n->type) {
    case N_DIR:
        fill_stat(fs, st, N_DIR, 0);
        return 0;
    case N_LINK: {
        char t[64];
        fill_stat(fs, st, N_LINK, (size_t)link_target(n, t, sizeof t));
        return 0;
    }
    case N_DATA: {
        ml_handle_info info;
        if (ml_handle_info_get(fs->arena, n->h, &info) != 0) return -ENOENT;
        fill_stat(fs, st, N_DATA, info.size);
        return 0;
    }
    case N_TEXT: {
        sbuf b = {0};
        int rc = render(fs, n, &b);
        if (rc) return rc;
        fill_stat(fs, st, N_TEXT, b.len);
        sb_free(&b);
        return 0;
    }
    }
    return -ENOENT;
}

/* Whether the asking reader has data file `path` open (called when the
 * path names no live handle: the one it has open was freed). */
static bool data_open_by_reader(ml_debugfs *fs, const char *path)
{
    pid_t pid = reader_of(fs);
    if (pid == 0) return false;
    bool open = false;
    pthread_mutex_lock(&fs->lock);
    for (const open_file *of = fs->open; of && !open; of = of->next)
        open = of->is_data && of->pid == pid && of->path && !strcmp(of->path, path);
    pthread_mutex_unlock(&fs->lock);
    return open;
}

static int op_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
    ml_debugfs *fs = current_fs();
    if (fi && fi->fh) { /* an open file: its own snapshot or handle */
        const open_file *of = (const open_file *)(uintptr_t)fi->fh;
        if (!of->is_data) {
            fill_stat(fs, st, N_TEXT, of->len);
            return 0;
        }
        ml_handle_info info;
        if (ml_handle_info_get(fs->arena, of->h, &info) != 0) return -ESTALE;
        fill_stat(fs, st, N_DATA, info.size);
        return 0;
    }
    node n;
    int rc = resolve(fs, path, &n);
    /* fstat of an open data file comes as a getattr by path: if the path
     * names no live handle and this reader holds it open, its handle was
     * freed: answer as its reads do. */
    if (rc == -ENOENT && data_open_by_reader(fs, path)) return -ESTALE;
    if (rc) return rc;
    if (n.type == N_TEXT) {
        size_t size;
        rc = text_size(fs, path, &n, &size);
        if (rc == 0) fill_stat(fs, st, N_TEXT, size);
        return rc;
    }
    return node_attr(fs, &n, st);
}

static int op_access(const char *path, int mask)
{
    node n;
    int rc = resolve(current_fs(), path, &n);
    if (rc) return rc;
    if (mask & W_OK) return -EROFS;
    if ((mask & X_OK) && n.type != N_DIR) return -EACCES;
    return 0;
}

static int op_readlink(const char *path, char *buf, size_t size)
{
    node n;
    int rc = resolve(current_fs(), path, &n);
    if (rc) return rc;
    if (n.type != N_LINK) return -EINVAL;
    if (size == 0) return -EINVAL;
    link_target(&n, buf, size); /* truncated and terminated, as readlink wants */
    return 0;
}

typedef struct dir_fill {
    void *buf;
    fuse_fill_dir_t filler;
} dir_fill;

static void fill_id(dir_fill *d, int64_t id)
{
    char name[24];
    snprintf(name, sizeof name, "%" PRId64, id);
    d->filler(d->buf, name, NULL, 0, (enum fuse_fill_dir_flags)0);
}

static int fill_handle_fn(const ml_handle_info *info, void *ctx)
{
    fill_id(ctx, info->id);
    return 0;
}

static bool is_dot(const char *name) { return !strcmp(name, ".") || !strcmp(name, ".."); }

static int fill_group_fn(ml_group g, const char *name, size_t count, void *ctx)
{
    (void)g;
    (void)count;
    dir_fill *d = ctx;
    if (!is_dot(name)) /* cannot be a folder */
        d->filler(d->buf, name, NULL, 0, (enum fuse_fill_dir_flags)0);
    return 0;
}

typedef struct tag_fill {
    dir_fill d;
    const char *tag;
} tag_fill;

static int fill_tagged_fn(const ml_handle_info *info, void *ctx)
{
    tag_fill *t = ctx;
    if (strcmp(info->tag, t->tag) == 0) fill_id(&t->d, info->id);
    return 0;
}

static int fill_group_members(ml_debugfs *fs, ml_group g, dir_fill *d)
{
    size_t cap = 64, count = 0;
    ml_handle *v = NULL;
    for (;;) {
        ml_handle *nv = realloc(v, cap * sizeof *nv);
        if (!nv) {
            free(v);
            return -ENOMEM;
        }
        v = nv;
        int rc = ml_group_list(fs->arena, g, v, cap, &count);
        if (rc) {
            free(v);
            return rc == -ENOENT ? -ENOENT : rc;
        }
        if (count <= cap) break;
        cap = count + count / 4 + 16; /* grew meanwhile: ask again */
    }
    for (size_t i = 0; i < count; i++) fill_id(d, ml_handle_id(v[i]));
    free(v);
    return 0;
}

/* Every name of directory n (resolved), "." and ".." first, through filler
 * (offsets 0: libfuse keeps the listing). */
static int list_dir(ml_debugfs *fs, const node *dir, void *buf, fuse_fill_dir_t filler)
{
    int rc;
    node n = *dir;
    dir_fill d = {buf, filler};
    filler(buf, ".", NULL, 0, (enum fuse_fill_dir_flags)0);
    filler(buf, "..", NULL, 0, (enum fuse_fill_dir_flags)0);
    size_t cnt;
    const entry *e = static_entries(n.kind, &cnt);
    if (e) {
        for (size_t i = 0; i < cnt; i++) filler(buf, e[i].name, NULL, 0, (enum fuse_fill_dir_flags)0);
        return 0;
    }
    switch (n.kind) {
    case D_HANDLES:
        rc = ml_foreach(fs->arena, fill_handle_fn, &d);
        return rc < 0 ? rc : 0;
    case D_GROUPS:
        rc = ml_group_foreach(fs->arena, fill_group_fn, &d);
        return rc < 0 ? rc : 0;
    case D_GROUP:
        return fill_group_members(fs, n.group, &d);
    case D_TAGS: {
        tag_set t = {0};
        ml_foreach(fs->arena, tag_collect_fn, &t);
        if (!t.oom)
            for (size_t i = 0; i < t.cap; i++)
                if (t.slot[i]) filler(buf, t.slot[i], NULL, 0, (enum fuse_fill_dir_flags)0);
        rc = t.oom ? -ENOMEM : 0;
        tag_set_free(&t);
        return rc;
    }
    case D_TAG: {
        tag_fill t = {d, n.name};
        ml_foreach(fs->arena, fill_tagged_fn, &t);
        return 0;
    }
    }
    return 0;
}

/* Collects a listing's names (list_dir's filler). */
typedef struct name_list {
    char **v;
    size_t n, cap;
    bool oom;
} name_list;

static int collect_name(void *buf, const char *name, const struct stat *st, off_t off,
                        enum fuse_fill_dir_flags flags)
{
    (void)st;
    (void)off;
    (void)flags;
    name_list *l = buf;
    if (l->oom) return 1;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        char **v = realloc(l->v, cap * sizeof *v);
        if (!v) {
            l->oom = true;
            return 1;
        }
        l->v = v;
        l->cap = cap;
    }
    if (!(l->v[l->n] = strdup(name))) {
        l->oom = true;
        return 1;
    }
    l->n++;
    return 0;
}

static void names_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++) free(v[i]);
    free(v);
}

/* Take the listing of dir (names only, kept to size); with attrs, also
 * each entry's attributes, dropping entries freed meanwhile. */
static int snapshot_dir(ml_debugfs *fs, const node *dir, open_file *of, bool attrs)
{
    name_list l = {0};
    int rc = list_dir(fs, dir, &l, collect_name);
    if (!rc && l.oom) rc = -ENOMEM;
    struct stat *st = NULL;
    if (!rc && attrs && !(st = malloc((l.n ? l.n : 1) * sizeof *st))) rc = -ENOMEM;
    if (rc) {
        names_free(l.v, l.n);
        return rc;
    }
    size_t kept = l.n;
    if (attrs) {
        kept = 0;
        for (size_t i = 0; i < l.n; i++) {
            node c = *dir;
            if (is_dot(l.v[i])) {
                fill_stat(fs, &st[kept], N_DIR, 0);
            } else if (child(fs, &c, l.v[i]) != 0 || node_attr(fs, &c, &st[kept]) != 0) {
                free(l.v[i]); /* freed meanwhile */
                continue;
            }
            l.v[kept++] = l.v[i];
        }
    }
    char **fit = realloc(l.v, (kept ? kept : 1) * sizeof *fit); /* (the doubling's spare room goes) */
    if (fit) l.v = fit;
    names_free(of->names, of->nents);
    free(of->attrs);
    of->names = l.v;
    of->attrs = st;
    of->nents = kept;
    return 0;
}

static int op_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t off,
                      struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
    ml_debugfs *fs = current_fs();
    open_file *of = fi ? (open_file *)(uintptr_t)fi->fh : NULL;
    /* The open directory keeps its listing, taken at offset 0, and every
     * later batch of it is served from there with real offsets, numbered
     * alike, without resolving the path again (a group destroyed meanwhile
     * must not cut a listing short). With real offsets libfuse keeps only
     * one batch per open directory, not the whole listing: a directory
     * whose release an aborted connection never delivers leaks that little.
     * With cache_ms the entries carry attributes (readdirplus), which
     * libfuse 3.14 passes on to the kernel only with real offsets (plus or
     * not: the kernel may switch between batches). */
    if (!of || off == 0 || !of->names) {
        node n;
        int rc = resolve(fs, path, &n);
        if (rc) return rc;
        if (n.type != N_DIR) return -ENOTDIR;
        if (!of) return list_dir(fs, &n, buf, filler); /* (libfuse keeps the listing) */
        rc = snapshot_dir(fs, &n, of, fs->cache_ms != 0);
        if (rc) return rc;
    }
    for (size_t i = (size_t)off; i < of->nents; i++) {
        const char *name = of->names[i];
        const struct stat *st = of->attrs ? &of->attrs[i] : NULL; /* (no attributes: the type unknown) */
        /* Not "." and "..": libfuse 3.14 would pass their attributes with
         * inode number 0, and glibc's readdir skips such entries. */
        bool plus = (flags & FUSE_READDIR_PLUS) && st && !is_dot(name);
        if (filler(buf, name, st, (off_t)(i + 1), plus ? FUSE_FILL_DIR_PLUS : (enum fuse_fill_dir_flags)0))
            break;
    }
    return 0;
}

static void open_file_link(ml_debugfs *fs, open_file *of);

/* Fault injection for tests (not API, not exported): when set, called at
 * the start of every open ("open") and release ("release") of a file, with
 * its path, on the serving thread that answers it. A hook that waits makes
 * a slow request. */
extern void (*ml__debugfs_hook)(const char *op, const char *path);
void (*ml__debugfs_hook)(const char *op, const char *path);

static void test_hook(const char *op, const char *path)
{
    void (*hook)(const char *, const char *) = __atomic_load_n(&ml__debugfs_hook, __ATOMIC_ACQUIRE);
    if (hook) hook(op, path ? path : "");
}

static int op_open(const char *path, struct fuse_file_info *fi)
{
    test_hook("open", path);
    ml_debugfs *fs = current_fs();
    if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & (O_TRUNC | O_CREAT))) return -EROFS;
    node n;
    int rc = resolve(fs, path, &n);
    if (rc) return rc;
    if (n.type == N_DIR) return -EISDIR;
    if (n.type != N_TEXT && n.type != N_DATA) return -ENOENT;
    open_file *of = calloc(1, sizeof *of);
    if (!of) return -ENOMEM;
    of->h = n.h; /* data: the handle read; text: the handle (if any) it shows */
    if (n.type == N_DATA) {
        of->is_data = true;
        of->pid = reader_of(fs);
        of->path = of->pid != 0 ? strdup(path) : NULL;
        if (of->pid != 0 && !of->path) {
            free(of);
            return -ENOMEM;
        }
    } else {
        /* What this reader was just told the size of (once: a later open
         * renders afresh), else rendered now. */
        of->pid = reader_of(fs);
        of->path = of->pid != 0 ? strdup(path) : NULL;
        bool told = false;
        if (of->pid != 0) {
            pthread_mutex_lock(&fs->lock);
            struct memo *m = memo_find(fs, path, of->pid, n.h);
            if (m && !m->opened) { /* (an empty rendering has no text) */
                of->text = malloc(m->len ? m->len : 1);
                if (of->text && m->len) memcpy(of->text, m->text, m->len);
                of->len = m->len;
                m->opened = true;
                told = true;
            }
            pthread_mutex_unlock(&fs->lock);
        }
        if (!told) {
            sbuf b = {0};
            rc = render(fs, &n, &b);
            if (rc) {
                free(of->path);
                free(of);
                return rc;
            }
            of->text = b.p ? b.p : malloc(1);
            of->len = b.len;
        }
        if (!of->text || (of->pid != 0 && !of->path)) {
            free(of->text);
            free(of->path);
            free(of);
            return -ENOMEM;
        }
    }
    open_file_link(fs, of);
    fi->fh = (uint64_t)(uintptr_t)of;
    fi->direct_io = 1;
    fi->noflush = of->is_data; /* (see op_flush) */
    fi->keep_cache = 0;
    return 0;
}

/* Directories are counted so that unmount can wait for the releases the
 * kernel has sent but we have not read yet (see unmount_kernel): libfuse
 * keeps a record of each open directory until its release arrives, and a
 * release still queued when the connection ends is dropped. */
static void open_file_link(ml_debugfs *fs, open_file *of)
{
    pthread_mutex_lock(&fs->lock);
    of->next = fs->open;
    if (fs->open) fs->open->prev = of;
    fs->open = of;
    pthread_mutex_unlock(&fs->lock);
}

static void open_file_free(ml_debugfs *fs, open_file *of);

/* An open directory keeps its listing (fi->fh; libfuse passes it to
 * readdir and releasedir): see op_readdir. */
static int op_opendir(const char *path, struct fuse_file_info *fi)
{
    (void)path;
    ml_debugfs *fs = current_fs();
    open_file *of = calloc(1, sizeof *of);
    if (!of) return -ENOMEM;
    open_file_link(fs, of);
    fi->fh = (uint64_t)(uintptr_t)of;
    __atomic_add_fetch(&fs->open_dirs, 1, __ATOMIC_RELEASE);
    return 0;
}

static int op_releasedir(const char *path, struct fuse_file_info *fi)
{
    (void)path;
    ml_debugfs *fs = current_fs();
    open_file *of = (open_file *)(uintptr_t)fi->fh;
    if (of) open_file_free(fs, of);
    fi->fh = 0;
    __atomic_sub_fetch(&fs->open_dirs, 1, __ATOMIC_RELEASE);
    return 0;
}

static int op_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
    (void)path;
    ml_debugfs *fs = current_fs();
    const open_file *of = (const open_file *)(uintptr_t)fi->fh;
    if (!of || off < 0) return -EINVAL;
    if (size > INT_MAX) size = INT_MAX;
    if (!of->is_data) {
        if ((uint64_t)off >= of->len) return 0;
        size_t k = of->len - (size_t)off < size ? of->len - (size_t)off : size;
        memcpy(buf, of->text + off, k);
        return (int)k;
    }
    int rc = ml_read(fs->arena, of->h, (size_t)off, buf, size);
    if (rc == -EINVAL) rc = -ESTALE; /* the handle is no longer a live one (slot retired) */
    return rc;
}

static void open_file_free(ml_debugfs *fs, open_file *of)
{
    pthread_mutex_lock(&fs->lock);
    if (of->prev) of->prev->next = of->next;
    else fs->open = of->next;
    if (of->next) of->next->prev = of->prev;
    pthread_mutex_unlock(&fs->lock);
    free(of->text);
    free(of->path);
    names_free(of->names, of->nents);
    free(of->attrs);
    free(of);
}

/* close(2) of a text file sends a flush and waits for it (data files ask
 * for none: noflush), while the release comes later, in the background,
 * and with several serving threads can be served after the reader's next
 * lookup. From the flush on, the reader's stat and open see the file as it
 * is now, and agree with each other (the open takes what the stat
 * measured), not this snapshot. (A dup of the descriptor closed alone
 * flushes too: an fstat through the one left then sees the file as now.) */
static int op_flush(const char *path, struct fuse_file_info *fi)
{
    (void)path;
    ml_debugfs *fs = current_fs();
    open_file *of = (open_file *)(uintptr_t)fi->fh;
    if (of && !of->is_data) {
        pthread_mutex_lock(&fs->lock);
        of->closed = true;
        pthread_mutex_unlock(&fs->lock);
    }
    return 0;
}

static int op_release(const char *path, struct fuse_file_info *fi)
{
    test_hook("release", path);
    open_file *of = (open_file *)(uintptr_t)fi->fh;
    if (of) open_file_free(current_fs(), of);
    fi->fh = 0;
    return 0;
}

/* Everything that would change the tree: refused (the mount is also
 * read-only in the kernel, which usually answers before we are asked). */
static int op_mknod(const char *p, mode_t m, dev_t d) { (void)p; (void)m; (void)d; return -EROFS; }
static int op_mkdir(const char *p, mode_t m) { (void)p; (void)m; return -EROFS; }
static int op_unlink(const char *p) { (void)p; return -EROFS; }
static int op_rmdir(const char *p) { (void)p; return -EROFS; }
static int op_symlink(const char *a, const char *b) { (void)a; (void)b; return -EROFS; }
static int op_rename(const char *a, const char *b, unsigned f) { (void)a; (void)b; (void)f; return -EROFS; }
static int op_link(const char *a, const char *b) { (void)a; (void)b; return -EROFS; }
static int op_chmod(const char *p, mode_t m, struct fuse_file_info *fi) { (void)p; (void)m; (void)fi; return -EROFS; }
static int op_chown(const char *p, uid_t u, gid_t g, struct fuse_file_info *fi)
{
    (void)p; (void)u; (void)g; (void)fi;
    return -EROFS;
}
static int op_truncate(const char *p, off_t o, struct fuse_file_info *fi) { (void)p; (void)o; (void)fi; return -EROFS; }
static int op_write(const char *p, const char *b, size_t s, off_t o, struct fuse_file_info *fi)
{
    (void)p; (void)b; (void)s; (void)o; (void)fi;
    return -EROFS;
}
static int op_create(const char *p, mode_t m, struct fuse_file_info *fi) { (void)p; (void)m; (void)fi; return -EROFS; }
static int op_utimens(const char *p, const struct timespec tv[2], struct fuse_file_info *fi)
{
    (void)p; (void)tv; (void)fi;
    return -EROFS;
}
static int op_setxattr(const char *p, const char *n, const char *v, size_t s, int f)
{
    (void)p; (void)n; (void)v; (void)s; (void)f;
    return -EROFS;
}
static int op_removexattr(const char *p, const char *n) { (void)p; (void)n; return -EROFS; }
static int op_fallocate(const char *p, int m, off_t o, off_t l, struct fuse_file_info *fi)
{
    (void)p; (void)m; (void)o; (void)l; (void)fi;
    return -EROFS;
}

static const struct fuse_operations debugfs_ops = {
    .init = op_init,
    .getattr = op_getattr,
    .access = op_access,
    .readlink = op_readlink,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .releasedir = op_releasedir,
    .open = op_open,
    .read = op_read,
    .flush = op_flush,
    .release = op_release,
    .mknod = op_mknod,
    .mkdir = op_mkdir,
    .unlink = op_unlink,
    .rmdir = op_rmdir,
    .symlink = op_symlink,
    .rename = op_rename,
    .link = op_link,
    .chmod = op_chmod,
    .chown = op_chown,
    .truncate = op_truncate,
    .write = op_write,
    .create = op_create,
    .utimens = op_utimens,
    .setxattr = op_setxattr,
    .removexattr = op_removexattr,
    .fallocate = op_fallocate,
};

/* ---- the serving threads------------------------------------------------------------------ */

/* A serving thread short of memory waits and tries again, from 10 ms up to
 * a second between tries. */
static void nomem_wait(unsigned *backoff)
{
    *backoff = *backoff ? (*backoff * 2 < NOMEM_RETRY_MAX_US ? *backoff * 2 : NOMEM_RETRY_MAX_US) : NOMEM_RETRY_US;
    usleep(*backoff);
}

/* Wait for the next request and read it into buf. Only the thread holding
 * recv_lock waits on the device: the kernel wakes every poller of it for
 * each request, so with all threads polling, each request would wake them
 * all to find one request (a herd). The others wait for the lock, and the
 * one that read a request lets the next one in before serving it.
 * @return true with a request in buf; false to stop: the eventfd says so
 *         (level-triggered and never drained, so every thread sees it in
 *         turn), the kernel ended the connection (unmount, abort: the device
 *         reads ENODEV, and polls POLLERR for the others), or an error. */
static bool next_request(ml_debugfs *fs, struct fuse_buf *buf)
{
    struct fuse_session *se = fs->se;
    struct pollfd pf[2] = {{.fd = fuse_session_fd(se), .events = POLLIN}, {.fd = fs->wake_fd, .events = POLLIN}};
    bool got = false;
    unsigned backoff = 0;
    pthread_mutex_lock(&fs->recv_lock);
    while (!fuse_session_exited(se) && !__atomic_load_n(&fs->stopping, __ATOMIC_ACQUIRE)) {
        pf[0].revents = pf[1].revents = 0;
        int res = poll(pf, 2, -1);
        if (res < 0 && errno == EINTR) continue;
        if (res < 0 && errno != ENOMEM) break;
        if (res > 0 && pf[1].revents) break;
        if (res > 0 && !pf[0].revents) continue;
        if (res > 0) {
            res = fuse_session_receive_buf(se, buf);
            if (res == -EINTR || res == -EAGAIN) continue;
            if (res != -ENOMEM) {
                got = res > 0; /* 0: connection ended (ENODEV); < 0: device error */
                break;
            }
        }
        /* Short of memory (poll, or libfuse's buffer: it says so on
         * stderr; the request stays queued): wait, and let another
         * thread, which may have its buffer, watch the device meanwhile. */
        pthread_mutex_unlock(&fs->recv_lock);
        nomem_wait(&backoff);
        pthread_mutex_lock(&fs->recv_lock);
    }
    pthread_mutex_unlock(&fs->recv_lock);
    return got;
}

/* Serve until next_request says stop. The device is non-blocking, so a
 * read never sleeps where the eventfd cannot reach it. */
static void *serve(void *arg)
{
    ml_debugfs *fs = arg;
    struct fuse_buf buf = {.mem = NULL};
    while (next_request(fs, &buf)) fuse_session_process_buf(fs->se, &buf);
    free(buf.mem);
    return NULL;
}

/* ---- mount table ------------------------------------------------------------------------------ */

/* Undo the octal escapes of /proc/self/mountinfo (\040 for a space...). */
static void unescape(char *s)
{
    char *w = s;
    for (char *r = s; *r;) {
        if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' && r[3] >= '0' &&
            r[3] <= '7') {
            *w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
            r += 4;
        } else {
            *w++ = *r++;
        }
    }
    *w = '\0';
}

/* Look up the topmost mount at path in /proc/self/mountinfo. @return true
 * when one is there; *dev its device, *fuse whether it is a FUSE mount. */
static bool mount_at(const char *path, dev_t *dev, bool *fuse)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f) return false;
    char *line = NULL;
    size_t cap = 0;
    bool found = false;
    while (getline(&line, &cap, f) > 0) {
        /* id parent major:minor root mountpoint options [optional...] - fstype source superopts
         * (spaces inside fields are escaped, so " - " is the separator) */
        char *sep = strstr(line, " - ");
        if (!sep) continue;
        *sep = '\0';
        char *save = NULL, *tok[5];
        int k = 0;
        for (char *t = strtok_r(line, " ", &save); t && k < 5; t = k < 5 ? strtok_r(NULL, " ", &save) : NULL)
            tok[k++] = t;
        unsigned maj, min;
        if (k < 5 || sscanf(tok[2], "%u:%u", &maj, &min) != 2) continue;
        unescape(tok[4]);
        if (strcmp(tok[4], path) != 0) continue;
        found = true;
        *dev = makedev(maj, min);
        *fuse = strncmp(sep + 3, "fuse ", 5) == 0 || strncmp(sep + 3, "fuse.", 5) == 0;
    }
    free(line);
    fclose(f);
    return found;
}

/* ---- unmount steps --------------------------------------------------------------------------- */

/* fusermount3 -u (no -z) for an unprivileged owner. @return 0 or -EBUSY/-EPERM. */
static int fusermount_u(const char *path)
{
    char *argv[] = {(char *)"fusermount3", (char *)"-u", (char *)"-q", (char *)"--", (char *)path, NULL};
    pid_t pid;
    if (posix_spawnp(&pid, "fusermount3", NULL, NULL, argv, environ) != 0) return -EPERM;
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) return -EPERM;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -EBUSY;
}

/* A real (not lazy) unmount. @return 0; -EBUSY while files are open;
 * -EINVAL when nothing is mounted there any more; -EPERM. */
static int real_umount(ml_debugfs *fs)
{
    if (umount2(fs->abspath, UMOUNT_NOFOLLOW) == 0) return 0;
    int e = errno;
    if (e == EPERM && geteuid() != 0) {
        dev_t dev;
        bool fuse;
        if (!mount_at(fs->abspath, &dev, &fuse) || !fuse) return -EINVAL;
        return fusermount_u(fs->abspath);
    }
    return -e;
}

/* Abort the FUSE connection: the kernel fails every pending and later
 * request, and the serving loop reads ENODEV. @return true when the mount
 * went away as well (MNT_FORCE on an idle mount unmounts it). */
static bool abort_conn(ml_debugfs *fs)
{
    if (fs->have_conn) {
        char p[64];
        snprintf(p, sizeof p, "/sys/fs/fuse/connections/%u/abort", fs->conn);
        int fd = open(p, O_WRONLY | O_CLOEXEC);
        if (fd >= 0) {
            ssize_t w = write(fd, "1", 1);
            close(fd);
            if (w == 1) return false;
        }
    }
    return umount2(fs->abspath, MNT_FORCE | UMOUNT_NOFOLLOW) == 0;
}

static int unmount_kernel(ml_debugfs *fs)
{
    int r;
    uint64_t deadline = now_ms() + UMOUNT_GRACE_MS;
    /* 0. A directory closed just now is released in the background: its
     * release may still be queued in the kernel, and an unmount now would
     * drop it (libfuse would keep the directory's listing for ever). A
     * directory really held open keeps the mount busy, so waiting for it
     * costs nothing the busy retries below would not spend anyway. */
    while (__atomic_load_n(&fs->open_dirs, __ATOMIC_ACQUIRE) > 0 && now_ms() < deadline) usleep(RELEASE_WAIT_US);
    for (;;) { /* 1. real unmount while the threads serve */
        r = real_umount(fs);
        if (r == 0 || r == -EINVAL) return 0;
        if (r != -EBUSY || now_ms() >= deadline) break;
        usleep(UMOUNT_RETRY_US);
    }
    /* 2. Abort: nobody can wait on us any more. From here on the caller
     * hears -EBUSY, which says readers were cut off, mount gone or not. */
    if (abort_conn(fs)) return -EBUSY;
    deadline = now_ms() + UMOUNT_ABORTED_MS;
    for (;;) { /* readers now get errors and close their files */
        r = real_umount(fs);
        if (r == 0 || r == -EINVAL) return -EBUSY;
        if (r != -EBUSY || now_ms() >= deadline) break;
        usleep(UMOUNT_RETRY_US);
    }
    /* 3. Still held (a working directory, a file never closed): the
     * connection is dead, so detaching cannot leave anyone waiting. */
    if (umount2(fs->abspath, MNT_DETACH | UMOUNT_NOFOLLOW) == 0) return -EBUSY;
    return r;
}

/* ---- events registry --------------------------------------------------------------------- */

static int events_hold(ml_arena *a, size_t capacity)
{
    int rc = 0;
    pthread_mutex_lock(&events_lock);
    events_ref *r = events_refs;
    while (r && r->arena != a) r = r->next;
    if (r) {
        r->mounts++;
    } else if (!(r = calloc(1, sizeof *r))) {
        rc = -ENOMEM;
    } else {
        /* A ring the program turned on stays as the program set it. */
        if (ml_events_capacity(a) == 0) {
            rc = ml_events_enable(a, capacity);
            r->ours = true;
        }
        if (rc) {
            free(r);
        } else {
            r->arena = a;
            r->mounts = 1;
            r->next = events_refs;
            events_refs = r;
        }
    }
    pthread_mutex_unlock(&events_lock);
    return rc;
}

static void events_release(ml_arena *a)
{
    pthread_mutex_lock(&events_lock);
    for (events_ref **pp = &events_refs; *pp; pp = &(*pp)->next) {
        events_ref *r = *pp;
        if (r->arena != a) continue;
        if (--r->mounts == 0) {
            if (r->ours) ml_events_enable(a, 0);
            *pp = r->next;
            free(r);
        }
        break;
    }
    pthread_mutex_unlock(&events_lock);
}

/* ---- entry points ---------------------------------------------------------------------------- */

static void fs_free(ml_debugfs *fs)
{
    while (fs->open) open_file_free(fs, fs->open);
    memo_free(fs);
    if (fs->wake_fd >= 0) close(fs->wake_fd);
    pthread_mutex_destroy(&fs->lock);
    pthread_mutex_destroy(&fs->recv_lock);
    free(fs->mountpoint);
    free(fs->abspath);
    free(fs);
}

static int mount_errno(int e)
{
    switch (e) {
    case EPERM: case EACCES: case EBUSY: case ENODEV: case ENOENT: case ENOTDIR: case ENOMEM:
        return -e;
    }
    return -EPERM;
}

/* A mount point must be empty: the view would hide what is there (a
 * mistyped path over a project directory). 0, -ENOTEMPTY, or the error of
 * opening it. */
static int dir_empty(const char *path)
{
    DIR *d = opendir(path);
    if (!d) return -errno;
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) rc = -ENOTEMPTY;
    closedir(d);
    return rc;
}

int ml_debugfs_mount(ml_arena *arena, const char *mountpoint, const ml_debugfs_options *options,
                     ml_debugfs **out)
{
    if (!arena || !mountpoint || !*mountpoint || !out) return -EINVAL;
    ml_debugfs_options opt = {0};
    if (options) opt = *options;
    size_t capacity = opt.events_capacity ? opt.events_capacity : EVENTS_DEFAULT;
    if (capacity > ((size_t)1 << 24)) return -EINVAL;
    if (opt.cache_ms > ML_DEBUGFS_CACHE_MS_MAX) return -EINVAL;
    if (opt.threads > ML_DEBUGFS_THREADS_MAX) return -EINVAL;

    struct stat st;
    if (stat(mountpoint, &st) != 0) return errno == ENOTCONN ? -EBUSY : -errno; /* ENOTCONN: a dead FUSE mount */
    if (!S_ISDIR(st.st_mode)) return -ENOTDIR;
    int dev_fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
    if (dev_fd < 0) {
        int e = errno;
        return e == EACCES || e == EPERM ? -EACCES : e == ENOMEM ? -ENOMEM : -ENODEV;
    }
    close(dev_fd);

    ml_debugfs *fs = calloc(1, sizeof *fs);
    if (!fs) return -ENOMEM;
    fs->wake_fd = -1;
    pthread_mutex_init(&fs->lock, NULL);
    pthread_mutex_init(&fs->recv_lock, NULL);
    fs->proc_ok = proc_is_ours();
    fs->arena = arena;
    fs->cache_ms = opt.cache_ms;
    fs->uid = geteuid();
    fs->gid = getegid();
    clock_gettime(CLOCK_REALTIME, &fs->mounted_at);
    fs->mountpoint = strdup(mountpoint);
    fs->abspath = realpath(mountpoint, NULL);
    if (!fs->mountpoint || !fs->abspath) {
        int e = fs->abspath ? ENOMEM : errno;
        fs_free(fs);
        return -e;
    }
    dev_t dev;
    bool fuse;
    int rc;
    if (mount_at(fs->abspath, &dev, &fuse) && fuse) {
        fs_free(fs);
        return -EBUSY;
    }
    if ((rc = dir_empty(fs->abspath)) != 0) {
        fs_free(fs);
        return rc;
    }
    if ((fs->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
        fs_free(fs);
        return -ENOMEM;
    }
    rc = events_hold(arena, capacity);
    if (rc) {
        fs_free(fs);
        return rc;
    }

    char mopts[128];
    snprintf(mopts, sizeof mopts, "ro,nosuid,nodev,noexec,default_permissions,fsname=memorylane,subtype=memorylane%s",
             opt.allow_other ? ",allow_other" : "");
    struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
    if (fuse_opt_add_arg(&args, "memorylane") || fuse_opt_add_arg(&args, "-o") ||
        fuse_opt_add_arg(&args, mopts) || (opt.debug && fuse_opt_add_arg(&args, "-d"))) {
        fuse_opt_free_args(&args);
        events_release(arena);
        fs_free(fs);
        return -ENOMEM;
    }
    fs->fuse = fuse_new(&args, &debugfs_ops, sizeof debugfs_ops, fs);
    fuse_opt_free_args(&args);
    if (!fs->fuse) {
        events_release(arena);
        fs_free(fs);
        return -ENOMEM;
    }
    errno = 0;
    if (fuse_mount(fs->fuse, fs->abspath) != 0) {
        rc = mount_errno(errno);
        fuse_destroy(fs->fuse);
        events_release(arena);
        fs_free(fs);
        return rc;
    }
    fs->se = fuse_get_session(fs->fuse);
    int dfd = fuse_session_fd(fs->se);
    fcntl(dfd, F_SETFL, fcntl(dfd, F_GETFL) | O_NONBLOCK);
    if (mount_at(fs->abspath, &dev, &fuse) && fuse) {
        fs->have_conn = true;
        fs->conn = minor(dev);
    }

    /* The threads take no signal: the program's handlers run elsewhere.
     * If the system refuses some of them, fewer serve; if it refuses the
     * first, the mount fails. */
    unsigned want = opt.threads ? opt.threads : THREADS_DEFAULT;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (rc = 0; fs->nthreads < want && rc == 0;) {
        rc = -pthread_create(&fs->threads[fs->nthreads], NULL, serve, fs);
        if (rc == 0) pthread_setname_np(fs->threads[fs->nthreads++], "ml_debugfs");
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (fs->nthreads == 0) {
        /* Nobody serves: closing the device aborts the connection first,
         * so libfuse's unmount cannot leave anyone waiting. */
        fuse_unmount(fs->fuse);
        fuse_destroy(fs->fuse);
        events_release(arena);
        fs_free(fs);
        return rc == -EAGAIN ? -ENOMEM : rc;
    }
    *out = fs;
    return 0;
}

/* Is our mount still at its path (not gone, nor covered by another)?
 * @return 1 yes, 0 no, -1 cannot tell (no /proc/self/mountinfo). */
static int still_mounted(const ml_debugfs *fs)
{
    if (access("/proc/self/mountinfo", R_OK) != 0) return -1;
    dev_t dev;
    bool fuse;
    return mount_at(fs->abspath, &dev, &fuse) && fuse && (!fs->have_conn || minor(dev) == fs->conn);
}

/* Close the FUSE device so that libfuse's unmount, which comes next, does
 * not unmount again: it skips that when the device polls POLLERR (an ended
 * connection), and otherwise would unmount whatever is at the path now, or
 * print "failed to unmount" when nothing is. The connection can outlive our
 * unmount: a copy of the mount in another mount namespace (one made while
 * the view was mounted) keeps it. Closing the device ends it, so the copy's
 * users get errors instead of waiting for a server that is gone; a pipe
 * with no reader, which polls POLLERR, takes the descriptor's number for
 * libfuse to close. */
static void close_device(ml_debugfs *fs)
{
    int fd = fuse_session_fd(fs->se), pp[2];
    if (fd < 0 || pipe2(pp, O_CLOEXEC) != 0) return; /* libfuse closes it, and may print */
    close(pp[0]);
    (void)dup3(pp[1], fd, O_CLOEXEC); /* closes the device; on failure libfuse does */
    close(pp[1]);
}

int ml_debugfs_unmount(ml_debugfs *fs)
{
    if (!fs) return 0;
    int rc = unmount_kernel(fs);
    uint64_t one = 1;
    __atomic_store_n(&fs->stopping, true, __ATOMIC_RELEASE); /* (for a thread that cannot poll) */
    ssize_t w = write(fs->wake_fd, &one, sizeof one); /* the loops end even if the kernel did not end it */
    (void)w;
    for (unsigned i = 0; i < fs->nthreads; i++) pthread_join(fs->threads[i], NULL);
    /* The device is closed (aborting the connection if it still lived, so
     * no request stays pending): here when our mount is gone, else by
     * libfuse, which then unmounts what we could not (without privilege:
     * fusermount3 -u -z, harmless once the device is closed). */
    if (still_mounted(fs) == 0) close_device(fs); /* unknown: libfuse closes it and unmounts, as before */
    fuse_unmount(fs->fuse);
    /* What the caller is told matches what is left: 0 when libfuse's
     * unmount removed a mount we could not; -EBUSY ("held: readers cut
     * off") never while it is still there. */
    bool gone = still_mounted(fs) != 1;
    if (rc && rc != -EBUSY && gone) rc = 0;
    else if (rc == -EBUSY && !gone) rc = -EPERM;
    fuse_destroy(fs->fuse);
    events_release(fs->arena);
    fs_free(fs);
    return rc;
}

const char *ml_debugfs_mountpoint(const ml_debugfs *fs) { return fs ? fs->mountpoint : NULL; }
