/*
 * events.c — a ring of recent lifecycle events, for the debug view's
 * `events` file (and anyone else who asks).
 *
 * Off unless enabled: the hot paths test one flag (events_on) and call here
 * only when it is set. Recording takes the events lock; readers copy under
 * it. Sequence numbers start at 1 and only grow, so a reader that fell
 * behind by more than the ring's capacity just skips what was overwritten,
 * and one whose cursor is older than the last ml_events_enable skips what
 * that call dropped (events_first).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"

const char *ml_event_name(ml_event_kind k)
{
    switch (k) {
    case ML_EVENT_ALLOC: return "alloc";
    case ML_EVENT_FREE: return "free";
    case ML_EVENT_MIGRATE: return "migrate";
    case ML_EVENT_COMPACT: return "compact";
    case ML_EVENT_COMPRESS: return "compress";
    case ML_EVENT_EVICT: return "evict";
    case ML_EVENT_PAGE_IN: return "page-in";
    }
    return "unknown";
}

int ml_events_enable(ml_arena *a, size_t capacity)
{
    if (!a || capacity > ((size_t)1 << 24)) return -EINVAL;
    ml_event *ring = NULL;
    if (capacity && !(ring = calloc(capacity, sizeof *ring))) return -ENOMEM;
    pthread_mutex_lock(&a->events_lock);
    free(a->events);
    a->events = ring;
    a->events_cap = capacity;
    a->events_first = a->events_seq + 1; /* what came before is dropped */
    __atomic_store_n(&a->events_on, capacity != 0, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&a->events_lock);
    return 0;
}

size_t ml_events_capacity(ml_arena *a)
{
    if (!a) return 0;
    pthread_mutex_lock(&a->events_lock);
    size_t cap = a->events_cap;
    pthread_mutex_unlock(&a->events_lock);
    return cap;
}

void ml__event(ml_arena *a, ml_event_kind kind, ml_handle h, uint64_t bytes, uint64_t count,
               ml_lane from, ml_lane to)
{
    pthread_mutex_lock(&a->events_lock);
    if (a->events_cap) {
        uint64_t seq = ++a->events_seq;
        ml_event *e = &a->events[(seq - 1) % a->events_cap];
        e->seq = seq;
        e->time_ns = ml__now(a);
        e->kind = kind;
        e->handle = h;
        e->id = ml_handle_id(h);
        e->bytes = bytes;
        e->count = count;
        e->from = from;
        e->to = to;
    }
    pthread_mutex_unlock(&a->events_lock);
}

int ml_events_read(ml_arena *a, uint64_t *cursor, ml_event *out, size_t max, size_t *n)
{
    if (!a || !cursor || !n || (!out && max)) return -EINVAL;
    *n = 0;
    pthread_mutex_lock(&a->events_lock);
    uint64_t last = a->events_seq;
    uint64_t first = a->events_cap && last > a->events_cap ? last - a->events_cap + 1 : 1;
    if (first < a->events_first) first = a->events_first;
    uint64_t from = *cursor > first ? *cursor : first;
    size_t k = 0;
    for (uint64_t s = from; a->events_cap && s <= last && k < max; s++, k++)
        out[k] = a->events[(s - 1) % a->events_cap];
    *cursor = from + k;
    pthread_mutex_unlock(&a->events_lock);
    *n = k;
    return 0;
}

void ml__events_fini(ml_arena *a)
{
    free(a->events);
    a->events = NULL;
    pthread_mutex_destroy(&a->events_lock);
}
