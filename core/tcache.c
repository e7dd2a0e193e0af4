/*
 * tcache.c — per-thread caches of free slots and free FastLane blocks.
 *
 * Allocation speed comes from not sharing: each thread that uses an arena
 * gets a cache (as mimalloc gives each thread a heap) holding a few dozen
 * free slot indices and, per FastLane size class, a few dozen free blocks.
 * The fast path of ml_alloc/ml_free touches only the cache; the lane and
 * table locks are taken once per refill or flush of half a cache. A block
 * the fast free puts in the cache keeps its slot with it (ML_TC_PAIRED), so
 * that the next allocation of the class reuses both as they are, with no
 * owner-entry store: flushes give such slots back to the table.
 *
 * A cache belongs to its thread, and only that thread touches its slots and
 * blocks, so the fast path needs no lock and no atomic read-modify-write.
 * Other threads only read its counters (single-writer relaxed atomics) and
 * may set flush_req, which asks the owner to hand its cached blocks back on
 * its next operation (compaction uses it; a thread that never returns keeps
 * at most ML_TC_BLOCKS blocks per class, which compaction works around).
 *
 * A thread finds its cache through a small thread-local array of
 * (arena, serial, cache) entries, most recently used first. The serial makes
 * an entry left behind by a destroyed arena harmless even if a new arena is
 * created at the same address. When a thread exits, a pthread key destructor
 * (running on that thread) returns each cache's contents to its arena, if
 * the arena is still alive: the global registry of live arenas answers that,
 * under its lock, which ml_arena_destroy also takes to unregister. A thread
 * using more than ML_TLS_ENTS arenas flushes the least recently used cache
 * the same way.
 */
#include <errno.h>
#include <stdlib.h>

#include "core/arena.h"

ML_TLS ml_tls_ent ml__tls[ML_TLS_ENTS];
static ML_TLS bool tls_key_set;

static pthread_mutex_t g_registry = PTHREAD_MUTEX_INITIALIZER;
static ml_arena *g_arenas;
static pthread_key_t g_key;
static pthread_once_t g_key_once = PTHREAD_ONCE_INIT;

uint32_t ml__tc_put_entries(ml_arena *a, const uint64_t *b, uint32_t n, uint32_t *paired)
{
    ml_lane_t *fast = &a->lanes[ML_LANE_FAST];
    uint32_t np = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t span = (uint32_t)(b[i] >> 32), bi = (uint32_t)b[i];
        if (b[i] & ML_TC_PAIRED) {
            ml__fast_block_of(a, (uint32_t)b[i], &span, &bi);
            paired[np++] = (uint32_t)b[i];
        }
        ml__lane_block_put(fast, span, bi);
    }
    return np;
}

void ml__tc_flush(ml_arena *a, ml_tcache *tc)
{
    ml_lane_t *fast = &a->lanes[ML_LANE_FAST];
    bool any = false;
    for (unsigned c = 0; c < fast->nclasses && !any; c++) any = tc->cls[c].n != 0;
    if (any) {
        uint32_t paired[ML_NCLASSES * ML_TC_BLOCKS], np = 0;
        pthread_mutex_lock(&fast->lock);
        for (unsigned c = 0; c < fast->nclasses; c++) {
            np += ml__tc_put_entries(a, tc->cls[c].b, tc->cls[c].n, paired + np);
            __atomic_store_n(&tc->cls[c].n, 0, __ATOMIC_RELAXED);
        }
        pthread_mutex_unlock(&fast->lock);
        tc->npaired = 0;
        if (np) ml__table_put(a, paired, np);
    }
    if (tc->nslots) {
        ml__table_put(a, tc->slots, tc->nslots);
        tc->nslots = 0;
    }
    __atomic_store_n(&tc->flush_req, 0, __ATOMIC_RELAXED);
}

/* Detach and free the calling thread's cache. Caller holds g_registry and
 * knows a is alive. */
static void tc_retire(ml_arena *a, ml_tcache *tc)
{
    ml__tc_flush(a, tc);
    pthread_mutex_lock(&a->tc_list_lock);
    for (int l = 0; l < 2; l++) {
        a->gone_allocs[l] += (int64_t)tc->allocs[l];
        a->gone_frees[l] += (int64_t)tc->frees[l];
        a->gone_used[l] += tc->used[l];
        a->gone_requested[l] += tc->requested[l];
    }
    ml__tc_fast_counts(tc, &a->gone_allocs[ML_LANE_FAST], &a->gone_frees[ML_LANE_FAST],
                       &a->gone_used[ML_LANE_FAST]);
    if (tc->prev) tc->prev->next = tc->next;
    else a->tcaches = tc->next;
    if (tc->next) tc->next->prev = tc->prev;
    pthread_mutex_unlock(&a->tc_list_lock);
    free(tc);
}

void ml__tc_fast_counts(const ml_tcache *tc, int64_t *allocs, int64_t *frees, int64_t *used)
{
    for (unsigned c = 0; c < ML_NCLASSES; c++) {
        uint64_t fa = __atomic_load_n(&tc->cls[c].fa, __ATOMIC_RELAXED);
        uint64_t ff = __atomic_load_n(&tc->cls[c].ff, __ATOMIC_RELAXED);
        *allocs += (int64_t)fa;
        *frees += (int64_t)ff;
        *used += ((int64_t)fa - (int64_t)ff) * (int64_t)ml__class_size[c];
    }
}

static bool arena_alive(ml_arena *a, uint64_t serial)
{
    for (ml_arena *x = g_arenas; x; x = x->reg_next)
        if (x == a && x->serial == serial) return true;
    return false;
}

static void release_entry(ml_tls_ent *e)
{
    if (!e->arena) return;
    pthread_mutex_lock(&g_registry);
    if (arena_alive(e->arena, e->serial)) tc_retire(e->arena, e->tc);
    pthread_mutex_unlock(&g_registry);
    e->arena = NULL;
    e->tc = NULL;
}

/* Set once this thread's caches are retired at its exit: a call made later
 * in the exit (from another key's destructor, run after ours) must not make
 * a new cache, since nothing would retire it, and its blocks and slots
 * would be out of every thread's reach until the arena is destroyed. Such
 * calls go without a cache, as when one cannot be allocated. */
static ML_TLS bool tls_exiting;

static void thread_exit(void *p)
{
    (void)p;
    tls_exiting = true;
    for (int i = 0; i < ML_TLS_ENTS; i++) release_entry(&ml__tls[i]);
}

static void key_init(void) { pthread_key_create(&g_key, thread_exit); }

ml_tcache *ml__tc_get_slow(ml_arena *a)
{
    for (int i = 1; i < ML_TLS_ENTS; i++) {
        if (ml__tls[i].arena == a && ml__tls[i].serial == a->serial) {
            ml_tls_ent e = ml__tls[i];
            for (int j = i; j > 0; j--) ml__tls[j] = ml__tls[j - 1];
            ml__tls[0] = e;
            return e.tc;
        }
    }
    /* No cache in debug mode: every allocation and free takes the shared
     * path, where freed places go to the quarantine (core/debug.c). */
    if (tls_exiting || a->debug) return NULL;
    if (!tls_key_set) {
        pthread_once(&g_key_once, key_init);
        pthread_setspecific(g_key, (void *)1);
        tls_key_set = true;
    }
    ml_tcache *tc = calloc(1, sizeof *tc);
    if (!tc) return NULL;
    tc->arena = a;
    pthread_mutex_lock(&a->tc_list_lock);
    tc->next = a->tcaches;
    if (tc->next) tc->next->prev = tc;
    a->tcaches = tc;
    pthread_mutex_unlock(&a->tc_list_lock);
    /* Make room: the least recently used entry goes (if it is stale, its
     * arena is gone and there is nothing to give back). */
    release_entry(&ml__tls[ML_TLS_ENTS - 1]);
    for (int j = ML_TLS_ENTS - 1; j > 0; j--) ml__tls[j] = ml__tls[j - 1];
    ml__tls[0] = (ml_tls_ent){.arena = a, .serial = a->serial, .tc = tc};
    return tc;
}

/* The arena tag (1..127) for a new arena: the next in turn that no live
 * arena has, so that two arenas alive at once share one only when more than
 * 127 are; and in turn, so that a tag freed by a destroyed arena is reused
 * as late as possible (its handles stay foreign to the new arena). With all
 * 127 taken, the next in turn. Caller holds g_registry. */
static uint32_t pick_tag(void)
{
    static uint32_t next_tag = 0;
    bool used[128] = {false};
    for (ml_arena *x = g_arenas; x; x = x->reg_next) used[x->tag & 127] = true;
    uint32_t k = 0;
    while (k < 127 && used[(next_tag + k) % 127 + 1]) k++;
    if (k == 127) k = 0;
    uint32_t tag = (next_tag + k) % 127 + 1;
    next_tag += k + 1;
    return tag;
}

int ml__registry_add(ml_arena *a)
{
    static uint64_t next_serial = 1;
    pthread_mutex_lock(&g_registry);
    a->serial = next_serial++;
    a->tag = pick_tag();
    a->reg_next = g_arenas;
    g_arenas = a;
    pthread_mutex_unlock(&g_registry);
    return 0;
}

void ml__registry_remove(ml_arena *a)
{
    pthread_mutex_lock(&g_registry);
    for (ml_arena **p = &g_arenas; *p; p = &(*p)->reg_next)
        if (*p == a) {
            *p = a->reg_next;
            break;
        }
    pthread_mutex_unlock(&g_registry);
    /* This thread's entry would otherwise keep a dangling cache pointer
     * until overwritten; clear it (other threads' entries are caught by the
     * serial check). */
    for (int i = 0; i < ML_TLS_ENTS; i++)
        if (ml__tls[i].arena == a && ml__tls[i].serial == a->serial) ml__tls[i].arena = NULL;
}

void ml__tc_destroy_all(ml_arena *a)
{
    ml_tcache *tc = a->tcaches;
    while (tc) {
        ml_tcache *n = tc->next;
        free(tc);
        tc = n;
    }
    a->tcaches = NULL;
}
