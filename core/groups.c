/*
 * groups.c — allocation groups and debug tags.
 *
 * A group is a named set of handles that can be listed, counted and freed
 * at once (a level's assets, a frame's scratch, a cache shard). Members are
 * linked through their cold stubs (gprev/gnext), so joining and leaving are
 * O(1) and a group costs no memory per member beyond the stub. A group ID
 * carries a generation beside its table index, so the ID of a destroyed
 * group never names a later group that reuses the entry.
 *
 * A tag is a short string for diagnostics ("texture", "mesh:hero"). Tags are
 * interned per arena; a stub holds the tag's number, and the meta word's
 * TAGGED bit says that it holds one of the tag's references. A tag counts
 * its references (the live handles with it); the last one to go frees the
 * name, its hash entry and its number for reuse. A tagged handle's free
 * takes the claim path (ml__free_claimed gives the reference back), and
 * anything that reads a handle's tag number and then its name does both
 * under the handle's claim, or the number may have been reused.
 *
 * Locking: the meta lock guards the group table, membership links and the
 * tag table. A member's cold `group` field changes only while the member is
 * claimed *and* the meta lock is held, so a claimed snapshot reads it safely.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"

#define GROUP_INDEX_BITS 12
#define GROUP_INDEX_MASK ((1u << GROUP_INDEX_BITS) - 1)
/* The last generation an entry issues: destroyed then, the entry is retired
 * (never reused), so that no destroyed group's ID ever names a later one,
 * as with handle slots. 4096 entries x (2^20 - 1) groups before the table
 * is spent. */
#define GROUP_GEN_MAX ((1u << (32 - GROUP_INDEX_BITS)) - 1)

static bool name_ok(const char *s)
{
    if (!s || !*s) return false;
    size_t n = 0;
    for (; s[n]; n++)
        if (n >= ML_NAME_MAX - 1 || s[n] < 0x21 || s[n] > 0x7e || s[n] == '/') return false;
    return !(n == 1 && s[0] == '.') && !(n == 2 && s[0] == '.' && s[1] == '.');
}

/* Caller holds meta lock. */
static ml_group_rec *group_get(ml_arena *a, ml_group g)
{
    /* ID = generation << 12 | index; live generations are >= 1, so no ID
     * is ML_GROUP_NONE even with index 0, and all 4096 entries are usable. */
    uint32_t i = g & GROUP_INDEX_MASK;
    if (i >= ML_MAX_GROUPS) return NULL;
    ml_group_rec *r = &a->groups[i];
    if (!r->live || r->gen != (g >> GROUP_INDEX_BITS)) return NULL;
    return r;
}

int ml_group_create(ml_arena *a, const char *name, ml_group *out)
{
    if (!a || !out || !name_ok(name)) return -EINVAL;
    pthread_mutex_lock(&a->meta_lock);
    int free_i = -1;
    for (int i = 0; i < ML_MAX_GROUPS; i++) {
        ml_group_rec *r = &a->groups[i];
        if (r->live && strcmp(r->name, name) == 0) {
            pthread_mutex_unlock(&a->meta_lock);
            return -EEXIST;
        }
        if (!r->live && r->gen < GROUP_GEN_MAX && free_i < 0) free_i = i;
    }
    if (free_i < 0) {
        pthread_mutex_unlock(&a->meta_lock);
        return -ENOSPC;
    }
    ml_group_rec *r = &a->groups[free_i];
    strcpy(r->name, name);
    r->live = true;
    r->head = ML_NIL32;
    r->count = 0;
    r->gen++; /* 1.. GROUP_GEN_MAX: never 0, so no ID is ML_GROUP_NONE */
    *out = (r->gen << GROUP_INDEX_BITS) | (uint32_t)free_i;
    pthread_mutex_unlock(&a->meta_lock);
    return 0;
}

int ml_group_find(ml_arena *a, const char *name, ml_group *out)
{
    if (!a || !out || !name) return -EINVAL;
    pthread_mutex_lock(&a->meta_lock);
    for (int i = 0; i < ML_MAX_GROUPS; i++) {
        ml_group_rec *r = &a->groups[i];
        if (r->live && strcmp(r->name, name) == 0) {
            *out = (r->gen << GROUP_INDEX_BITS) | (uint32_t)i;
            pthread_mutex_unlock(&a->meta_lock);
            return 0;
        }
    }
    pthread_mutex_unlock(&a->meta_lock);
    return -ENOENT;
}

/* Both with the meta lock held and the claim of idx. */
static void link_locked(ml_arena *a, uint32_t idx, ml_group_rec *r, ml_group g)
{
    ml_cold *c = ml__cold(a, idx, ml__load(&a->slots[idx].meta));
    c->group = g;
    c->gprev = ML_NIL32;
    c->gnext = r->head;
    if (r->head != ML_NIL32) a->cold[r->head].gprev = idx;
    r->head = idx;
    r->count++;
    __atomic_fetch_or(&a->slots[idx].meta, ML_M_GROUPED, __ATOMIC_RELAXED);
}

static void unlink_locked(ml_arena *a, uint32_t idx)
{
    if (!(ml__load(&a->slots[idx].meta) & ML_M_GROUPED)) return;
    ml_cold *c = &a->cold[idx];
    ml_group_rec *r = group_get(a, c->group);
    if (r) {
        if (c->gprev != ML_NIL32) a->cold[c->gprev].gnext = c->gnext;
        else r->head = c->gnext;
        if (c->gnext != ML_NIL32) a->cold[c->gnext].gprev = c->gprev;
        r->count--;
    }
    c->group = 0;
    c->gprev = c->gnext = ML_NIL32;
    __atomic_fetch_and(&a->slots[idx].meta, ~ML_M_GROUPED, __ATOMIC_RELAXED);
}

/* Caller holds the claim of idx. */
int ml__group_link(ml_arena *a, uint32_t idx, ml_group g)
{
    pthread_mutex_lock(&a->meta_lock);
    ml_group_rec *r = group_get(a, g);
    if (r) link_locked(a, idx, r, g);
    pthread_mutex_unlock(&a->meta_lock);
    return r ? 0 : -ENOENT;
}

/* Caller holds the claim of idx. */
void ml__group_unlink(ml_arena *a, uint32_t idx)
{
    if (!(ml__load(&a->slots[idx].meta) & ML_M_GROUPED)) return;
    pthread_mutex_lock(&a->meta_lock);
    unlink_locked(a, idx);
    pthread_mutex_unlock(&a->meta_lock);
}

/* Group of claimed slot idx with meta m. */
static ml_group group_of(ml_arena *a, uint32_t idx, uint64_t m)
{
    return (m & ML_M_GROUPED) ? a->cold[idx].group : ML_GROUP_NONE;
}

bool ml__group_exists(ml_arena *a, ml_group g)
{
    pthread_mutex_lock(&a->meta_lock);
    bool exists = group_get(a, g) != NULL;
    pthread_mutex_unlock(&a->meta_lock);
    return exists;
}

int ml_group_alloc(ml_arena *a, ml_group g, size_t size, size_t align, ml_handle *out)
{
    if (!a || !out) return -EINVAL;
    return ml__alloc(a, size, align ? align : 16, g, out);
}

int ml_group_set(ml_arena *a, ml_handle h, ml_group g)
{
    if (!a) return -EINVAL;
    uint64_t m;
    int rc = ml__claim(a, h, ML_CLAIM_ANY, &m);
    if (rc) return rc;
    uint32_t idx = ml__idx(h);
    /* One step under the meta lock: a group destroyed meanwhile leaves the
     * handle where it was. */
    pthread_mutex_lock(&a->meta_lock);
    ml_group_rec *r = g != ML_GROUP_NONE ? group_get(a, g) : NULL;
    if (g != ML_GROUP_NONE && !r) {
        rc = -ENOENT;
    } else if (group_of(a, idx, m) != g) {
        unlink_locked(a, idx);
        if (r) link_locked(a, idx, r, g);
    }
    pthread_mutex_unlock(&a->meta_lock);
    ml__unclaim(a, idx);
    return rc;
}

/* Snapshot a group's members (meta lock inside). Returns the count, or -ENOENT. */
static long snapshot(ml_arena *a, ml_group g, ml_handle **out)
{
    pthread_mutex_lock(&a->meta_lock);
    ml_group_rec *r = group_get(a, g);
    if (!r) {
        pthread_mutex_unlock(&a->meta_lock);
        return -ENOENT;
    }
    ml_handle *v = malloc((r->count ? r->count : 1) * sizeof *v);
    if (!v) {
        pthread_mutex_unlock(&a->meta_lock);
        return -ENOMEM;
    }
    long n = 0;
    for (uint32_t i = r->head; i != ML_NIL32; i = a->cold[i].gnext)
        v[n++] = ml__handle_of(ml__load_acq(&a->slots[i].meta), i);
    pthread_mutex_unlock(&a->meta_lock);
    *out = v;
    return n;
}

int ml_group_free_all(ml_arena *a, ml_group g, size_t *freed)
{
    if (freed) *freed = 0;
    if (!a) return -EINVAL;
    ml_handle *v;
    long n = snapshot(a, g, &v);
    if (n < 0) return (int)n;
    /* Claim every member first; only if none is pinned, free them all. */
    uint64_t *ms = malloc((n ? (size_t)n : 1) * sizeof *ms);
    if (!ms) {
        free(v);
        return -ENOMEM;
    }
    size_t got = ml__claim_many(a, v, (size_t)n, ms);
    long claimed = 0;
    int rc = 0;
    for (size_t i = 0; i < got; i++) {
        bool member = group_of(a, ml__idx(v[i]), ms[i]) == g; /* (it may have left meanwhile) */
        if (member && (ms[i] & ML_M_PINS)) rc = -EBUSY;
        if (rc || !member) {
            ml__unclaim(a, ml__idx(v[i])); /* left the group meanwhile, or we give up */
            continue;
        }
        v[claimed++] = v[i];
    }
    free(ms);
    if (rc) {
        for (long i = 0; i < claimed; i++) ml__unclaim(a, ml__idx(v[i]));
    } else {
        for (long i = 0; i < claimed; i++) ml__free_claimed(a, ml__idx(v[i]));
        if (freed) *freed = (size_t)claimed;
    }
    free(v);
    return rc;
}

int ml_group_destroy(ml_arena *a, ml_group g)
{
    if (!a) return -EINVAL;
    for (int tries = 0; tries < 16; tries++) {
        int rc = ml_group_free_all(a, g, NULL);
        if (rc) return rc;
        pthread_mutex_lock(&a->meta_lock);
        ml_group_rec *r = group_get(a, g);
        if (!r) {
            pthread_mutex_unlock(&a->meta_lock);
            return -ENOENT;
        }
        if (r->count == 0) {
            r->live = false;
            r->name[0] = 0;
            pthread_mutex_unlock(&a->meta_lock);
            return 0;
        }
        pthread_mutex_unlock(&a->meta_lock); /* members added meanwhile */
    }
    return -EBUSY;
}

int ml_group_count(ml_arena *a, ml_group g, size_t *count)
{
    if (!a || !count) return -EINVAL;
    pthread_mutex_lock(&a->meta_lock);
    ml_group_rec *r = group_get(a, g);
    if (r) *count = r->count;
    pthread_mutex_unlock(&a->meta_lock);
    return r ? 0 : -ENOENT;
}

int ml_group_list(ml_arena *a, ml_group g, ml_handle *out, size_t cap, size_t *count)
{
    if (!a || !count || (!out && cap)) return -EINVAL;
    pthread_mutex_lock(&a->meta_lock);
    ml_group_rec *r = group_get(a, g);
    if (!r) {
        pthread_mutex_unlock(&a->meta_lock);
        return -ENOENT;
    }
    size_t n = 0;
    for (uint32_t i = r->head; i != ML_NIL32 && n < cap; i = a->cold[i].gnext)
        out[n++] = ml__handle_of(ml__load_acq(&a->slots[i].meta), i);
    *count = r->count;
    pthread_mutex_unlock(&a->meta_lock);
    return 0;
}

int ml_group_name(ml_arena *a, ml_group g, char *buf, size_t len)
{
    if (!a || !buf || len == 0) return -EINVAL;
    pthread_mutex_lock(&a->meta_lock);
    ml_group_rec *r = group_get(a, g);
    if (r) {
        strncpy(buf, r->name, len - 1);
        buf[len - 1] = 0;
    }
    pthread_mutex_unlock(&a->meta_lock);
    return r ? 0 : -ENOENT;
}

int ml_group_foreach(ml_arena *a, ml_group_fn fn, void *ctx)
{
    if (!a || !fn) return -EINVAL;
    for (int i = 0; i < ML_MAX_GROUPS; i++) {
        char name[ML_NAME_MAX];
        pthread_mutex_lock(&a->meta_lock);
        ml_group_rec *r = &a->groups[i];
        bool live = r->live;
        ml_group g = (r->gen << GROUP_INDEX_BITS) | (uint32_t)i;
        size_t count = r->count;
        memcpy(name, r->name, sizeof name);
        pthread_mutex_unlock(&a->meta_lock);
        if (!live) continue;
        int rc = fn(g, name, count, ctx);
        if (rc) return rc;
    }
    return 0;
}

/* ---- tags ----------------------------------------------------------------------- */

static uint32_t hash_str(const char *s)
{
    uint32_t h = 2166136261u;
    while (*s) h = (h ^ (uint8_t)*s++) * 16777619u;
    return h;
}

uint32_t ml__tag_home(const char *tag) { return hash_str(tag) & (ML_TAG_HASH - 1); }

/* Intern a tag and take a reference to it; caller holds the meta lock.
 * Returns its ID, or -ENOSPC with ML_MAX_TAGS in use. */
static int tag_ref(ml_arena *a, const char *tag)
{
    uint32_t h = ml__tag_home(tag);
    for (;; h = (h + 1) & (ML_TAG_HASH - 1)) {
        uint16_t id = a->tag_hash[h];
        if (id == 0) break;
        if (strcmp(a->tags[id - 1], tag) == 0) {
            a->tag_refs[id - 1]++;
            return id;
        }
    }
    uint32_t id;
    if (a->ntag_free) id = a->tag_free[--a->ntag_free];
    else if (a->ntags < ML_MAX_TAGS) id = ++a->ntags;
    else return -ENOSPC;
    strcpy(a->tags[id - 1], tag);
    a->tag_hash[h] = (uint16_t)id;
    a->tag_refs[id - 1] = 1;
    return (int)id;
}

/* Take tag ID id out of the hash (linear probing: the entries after it in
 * its run move back into the hole when their home allows). Meta lock. */
static void tag_unhash(ml_arena *a, uint32_t id)
{
    const uint32_t mask = ML_TAG_HASH - 1;
    uint32_t i = ml__tag_home(a->tags[id - 1]);
    while (a->tag_hash[i] != id) i = (i + 1) & mask;
    for (uint32_t j = i;;) {
        j = (j + 1) & mask;
        uint16_t e = a->tag_hash[j];
        if (e == 0) break;
        uint32_t home = ml__tag_home(a->tags[e - 1]);
        /* e may fill the hole at i unless its home lies in (i, j]. */
        bool stays = i < j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            a->tag_hash[i] = e;
            i = j;
        }
    }
    a->tag_hash[i] = 0;
}

static void tag_unref_locked(ml_arena *a, uint32_t id)
{
    if (id == 0 || id > a->ntags || a->tag_refs[id - 1] == 0) return; /* (cannot happen) */
    if (--a->tag_refs[id - 1]) return;
    tag_unhash(a, id);
    a->tags[id - 1][0] = 0;
    a->tag_free[a->ntag_free++] = (uint16_t)id;
}

void ml__tag_unref(ml_arena *a, uint32_t id)
{
    pthread_mutex_lock(&a->meta_lock);
    tag_unref_locked(a, id);
    pthread_mutex_unlock(&a->meta_lock);
}

int ml__tag_name(ml_arena *a, uint32_t tag, char *buf, size_t len)
{
    pthread_mutex_lock(&a->meta_lock);
    int ok = tag >= 1 && tag <= a->ntags && a->tag_refs[tag - 1] != 0;
    if (ok) {
        strncpy(buf, a->tags[tag - 1], len - 1);
        buf[len - 1] = 0;
    }
    pthread_mutex_unlock(&a->meta_lock);
    return ok ? 0 : -ENOENT;
}

int ml_set_tag(ml_arena *a, ml_handle h, const char *tag)
{
    if (!a) return -EINVAL;
    bool set = tag && *tag;
    if (set && !name_ok(tag)) return -EINVAL;
    /* Claim first (a bad or freed handle changes nothing), then swap the
     * tag references under the meta lock (lock order: claim -> meta lock,
     * as for group links). */
    uint64_t m;
    int rc = ml__claim(a, h, ML_CLAIM_ANY, &m);
    if (rc) return rc;
    uint32_t idx = ml__idx(h);
    ml_cold *c = ml__cold(a, idx, m);
    uint32_t old = (m & ML_M_TAGGED) ? c->tag : 0;
    int id = 0;
    pthread_mutex_lock(&a->meta_lock);
    if (set) {
        id = tag_ref(a, tag);
        /* A full table: if this handle is the last with its old tag, that
         * tag's place is free once the handle leaves it. */
        if (id == -ENOSPC && old && a->tag_refs[old - 1] == 1) {
            tag_unref_locked(a, old);
            old = 0;
            id = tag_ref(a, tag);
        }
    }
    if (id >= 0 && old) tag_unref_locked(a, old);
    pthread_mutex_unlock(&a->meta_lock);
    if (id < 0) {
        ml__unclaim(a, idx);
        return id;
    }
    c->tag = (uint32_t)id;
    if (id) __atomic_fetch_or(&a->slots[idx].meta, ML_M_TAGGED, __ATOMIC_RELAXED);
    else __atomic_fetch_and(&a->slots[idx].meta, ~ML_M_TAGGED, __ATOMIC_RELAXED);
    ml__unclaim(a, idx);
    return 0;
}
