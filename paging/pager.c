/*
 * pager.c — cold SlowLane blobs: compressed in RAM, written to disk, brought
 * back on access.
 *
 * States of a paged entry (all with the slot's BLOB bit set):
 *
 *   SLOW (resident)  --compress-->  COMPRESSED: a record (header + zstd or
 *        ^  ^                        raw payload) in a smaller SlowLane blob
 *        |  |                              |
 *        |  +---------evict----------+     | evict (the record is written
 *        |                           v     v  as it is)
 *        +-------page-in--------  EVICTED: the record in the swap file
 *
 * A record is self-describing and checked: magic, version, codec, handle ID,
 * generation, both lengths, a CRC-32C of the payload and of the header.
 * Anything that does not match the slot reading it is -EBADMSG.
 *
 * No data is lost on any failure, by construction: an entry changes state
 * only after its new copy exists (the record in RAM, or a write that
 * completed with the full length), and the old copy is released after the
 * stub points at the new one. A failed write leaves the entry resident; a
 * failed read leaves the record where it is, for a retry.
 *
 * Eviction overlaps compression with I/O: records are compressed into
 * aligned bounce buffers (registered with io_uring) and their writes queued;
 * writes are submitted in groups and completions reaped while the next
 * records are compressed. Page-in on access is synchronous; ml_prefetch
 * queues many reads at once.
 *
 * Which entries go: under pressure (SlowLane usage above its threshold, or an
 * allocation or page-in that found no room), the coldest resident blobs and
 * compressed records, by the CLOCK bits and last-access times maintenance
 * keeps; with cold_after_ms, anything idle that long. With the compressed
 * stage, a resident blob is first compressed in RAM; records go to disk as
 * pressure persists. Blobs under min_evict_size and pinned entries stay.
 *
 * Locking: the pager lock serialises the pager (ring, swap space, buffers,
 * codec, counters); it is taken with entries already claimed. Lane locks are
 * taken inside it (claim -> pager -> lane). Victims are only ever
 * try-claimed, so a thread holding the pager lock never waits for a claim.
 * Evictions and ml_prefetch hold it across their I/O. A page-in on access
 * does not: it reserves its place under the lock, then reads and decodes
 * with a reader of its own (an engine on the swap file, a bounce buffer and
 * a codec, taken from a small pool) while other threads page in, evict and
 * allocate, and takes the lock again to install the data. ml_read of a cold
 * entry does the same, decoding into a buffer that then joins the cache of
 * cold copies (rc_put). The claim it holds is what keeps its record and
 * its place from changing meanwhile: every other path that touches an
 * entry's record claims the entry first. The pool lock is a leaf: a thread
 * holding a reader takes no other lock until it gives the reader back.
 *
 * Long batches do not shut page-ins out: while the policy thread or
 * ml_evict_many evicts, or ml_prefetch brings entries back (between its
 * chunks), a thread that waits for the pager lock to page in, or for one
 * of the short calls (ml_read of a cold entry, freeing a cold entry,
 * statistics, ml_evict, ml_compress), counts itself in `waiters`
 * (lock_as_waiter); the batch
 * then finishes the writes it has in flight, releases their lane space,
 * and hands the lock over before going on (let_waiters_in). Only those two
 * top-level batches do this (`yieldable`): nothing of theirs is half done
 * at that point, whereas a holder that evicts to make room for its own
 * placement keeps the lock. Their victims not yet written stay claimed
 * meanwhile, so a thread let in that finds no room does not evict on its
 * own: it gives the lock back until the batch ends (`paused`, place_back's
 * -EAGAIN). A victim whose record is on disk is given back at once
 * (give_back_early(), `early`): an access to it waits for that write (none
 * for a clean copy), not for the whole batch.
 */
#include <errno.h>
#include <malloc.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/arena.h"
#include "core/pager_iface.h"
#include "paging/codec.h"
#include "paging/crc32c.h"
#include "paging/io.h"
#include "paging/pager.h"
#include "paging/swap.h"

#define REC_MAGIC 0x31524c4du /* "MLR1" */
#define REC_VERSION 2
#define BUF_BYTES ((size_t)128 << 10) /* larger records get their own buffer */
#define START_RETRY_MS 100            /* a failed start of the swap file is tried again after this */
#define NOROOM_SLOTS 64             /* entries remembered as not fitting the swap budget */
#define NOROOM_MS 1000              /* ... for at most this long */
#define DISK_FULL_RETRY_MS 1000       /* after a write found the disk full, writes wait this long */
#define RC_WAYS 4                     /* cold copies ml_read keeps decoded */
#define RC_BYTES ((size_t)32 << 20)   /* ... while they hold at most this (the newest always stays) */
#define MAX_BUFS 64
#define IDLE_CHUNK ((size_t)8 << 20) /* the policy's idle victims are claimed this much at a time */
#define OWN_INFLIGHT ((size_t)16 << 20) /* own buffers of large records a batch holds at most (one always) */
#define REFUSALS_MAX 3 /* prefetch: submissions in a row not taken whole before a chunk gives up */

typedef struct rec_hdr {
    uint32_t magic;
    uint16_t version;
    uint16_t codec;
    int64_t id;
    uint32_t generation;
    uint32_t payload_crc;
    uint64_t orig_len;
    uint64_t stored_len;
    uint64_t seq;      /* the pager's record count when made: which of the
                          entry's records this is (ml_cold.rec_seq) */
    uint64_t reserved;
    uint32_t pad;
    uint32_t hdr_crc;
} rec_hdr;
_Static_assert(sizeof(rec_hdr) == 64, "record header is 64 bytes");

typedef struct noroom_rec {
    uint32_t idx, gen, blocks; /* the entry, and the blocks its record needed */
    uint64_t ns;               /* when (0: unused) */
} noroom_rec;

typedef struct ml_pager {
    ml_arena *a;
    pthread_mutex_t lock;
    bool started;
    int start_err;      /* why the last start failed (0: it did not) ... */
    uint64_t start_err_ns; /* ... and when: it is tried again START_RETRY_MS later */
    uint64_t disk_full_ns;   /* when a write last found the disk full (0: none since) ... */
    uint64_t disk_full_used; /* ... and swap.used then (disk_full_now) */
    noroom_rec noroom[NOROOM_SLOTS]; /* entries whose record found no room (noroom_known) */
    unsigned noroom_next;
    ml_swap swap;
    uint64_t rec_seq;   /* records made so far (pager lock): their sequence numbers */
    ml_io *io;
    uint32_t batch; /* serial of the eviction batch, in its write tags */
    ml_codec *codec;
    unsigned nbufs;
    char *bufs; /* nbufs x BUF_BYTES, 4 KiB aligned, registered */
    char *scratch; /* BUF_BYTES for compressing in RAM */
    bool busy[MAX_BUFS];
    ml_paging_stats st;
    /* ml_read of a cold entry decompresses it whole: the last few copies
     * are kept (see read_cold). An invalid entry may keep its buffer for
     * the next miss. */
    struct rc_ent {
        uint32_t idx, gen;
        bool valid;
        char *buf;
        size_t cap;
        uint64_t used; /* rc_tick at the last hit or fill: least is oldest */
    } rc[RC_WAYS];
    uint64_t rc_tick;
    ml_io_open_fn open_io;
    void *open_ctx;
    int io_which; /* the engine kind asked for (readers ask for the same) */
    /* Long evictions let page-ins in (see let_waiters_in): how many threads
     * wait for the lock to page in (atomic), and whether the
     * holder may hand the lock over between chunks of its batch. */
    uint32_t waiters;
    uint64_t admitted; /* times a waiter got the lock (written under it, read by a batch handing it over) */
    bool yieldable;
    unsigned paused; /* batches that have handed the lock over just now */
    size_t chunk; /* bytes compressed since the batch last let waiters in */
    size_t own_bytes;  /* own buffers of the batch's records in flight */
    /* Page-in readers (see "Locking" above): rd_lock guards the free list
     * and the count; a reader out of the list belongs to one thread. */
    pthread_mutex_t rd_lock;
    pthread_cond_t rd_cond;
    struct reader *rd_free;
    unsigned rd_count;
} ml_pager;

static void rc_forget(ml_pager *p, uint32_t idx);

/* What a page-in needs to read and decode without the pager lock. */
typedef struct reader {
    struct reader *next;
    ml_codec *codec;
    ml_io *io;  /* opened at its first read of the swap file */
    char *buf;  /* BUF_BYTES, 4 KiB aligned, registered with io */
} reader;

/* At most this many page-ins read at once; more wait for a reader. */
#define MAX_READERS 8
/* A yieldable batch lets waiting page-ins in after at least this many bytes
 * (about 1.5 ms of compression: what a waiting page-in may wait). */
#define EVICT_CHUNK ((size_t)512 << 10)

static __thread ml_io_open_fn pending_open;
static __thread void *pending_ctx;

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline ml_pager *pager_of(ml_arena *a) { return (ml_pager *)a->pager; }

/* Take the pager lock as a thread a batch should let in. */
static void lock_as_waiter(ml_pager *p)
{
    __atomic_fetch_add(&p->waiters, 1, __ATOMIC_RELAXED);
    pthread_mutex_lock(&p->lock);
    __atomic_fetch_sub(&p->waiters, 1, __ATOMIC_RELAXED);
    __atomic_store_n(&p->admitted, p->admitted + 1, __ATOMIC_RELAXED);
}

/* The longest a batch waits for the threads it hands the lock to. A waiter
 * on a busy machine may take a few scheduler periods to run once woken; a
 * bound of about one period (it was 5 ms) could miss every hand-over of a
 * long batch there and keep page-ins out until its end. */
#define HANDOVER_MAX_NS 200000000u

/* Between two chunks of a yieldable batch (lock held, nothing in flight):
 * if threads wait, hand them the lock and take it back once each of those
 * waiting then has had it (or none waits any more, or HANDOVER_MAX_NS have
 * passed). Counting admissions, not waiters, ends the hand-over for a
 * thread that is let in, finds it must wait for the batch (place_back's
 * -EAGAIN) and queues again. They run with yieldable clear: a batch they
 * start to make room keeps the lock. */
static uint64_t let_waiters_in(ml_pager *p)
{
    uint32_t n = __atomic_load_n(&p->waiters, __ATOMIC_RELAXED);
    if (!p->yieldable || !n) return 0;
    uint64_t target = p->admitted + n;
    p->yieldable = false;
    p->paused++;
    pthread_mutex_unlock(&p->lock);
    uint64_t t0 = mono_ns();
    for (uint64_t waited = 0; __atomic_load_n(&p->waiters, __ATOMIC_RELAXED) &&
                              __atomic_load_n(&p->admitted, __ATOMIC_RELAXED) < target &&
                              (waited = mono_ns() - t0) < HANDOVER_MAX_NS;) {
        /* Usually a few yields; past a millisecond the waiters are slow to
         * run or hold the lock a while: stop spinning. */
        if (waited < 1000000) sched_yield();
        else usleep(100);
    }
    pthread_mutex_lock(&p->lock);
    p->paused--;
    p->yieldable = true;
    /* The time handed over, which is not the batch's own (evict_ns,
     * pagein_ns): each batch subtracts only what it handed over itself,
     * since another batch may run inside this one's hand-over. */
    return mono_ns() - t0;
}

/* A point where the lock holder has nothing half done (nothing in flight,
 * every buffer free) and may let waiting page-ins in, although it is not a
 * yieldable batch as a whole. */
static uint64_t yield_point(ml_pager *p)
{
    bool was = p->yieldable;
    p->yieldable = true;
    uint64_t handed = let_waiters_in(p);
    p->yieldable = was;
    return handed;
}

/* While a batch has handed the lock over (paused), its victims - the
 * coldest entries - are claimed, so room made now would come from warmer
 * ones, or not at all; and the batch is making room anyway. A thread that
 * is to make room, or to start a batch of its own (maintain, ml_evict_many,
 * ml_prefetch), and gets the lock then gives it back until the paused batch
 * has the lock again: a whole batch run inside a hand-over would stretch
 * it from one short call to that batch's length. */
static void lock_unpaused(ml_pager *p)
{
    for (;;) {
        pthread_mutex_lock(&p->lock);
        if (!p->paused) return;
        pthread_mutex_unlock(&p->lock);
        sched_yield();
    }
}

/* ---- set-up ---------------------------------------------------------------- */

/* Register the bounce buffers with the pager's engine (optional: plain
 * I/O works too). */
static void register_bufs(ml_pager *p)
{
    struct iovec iov[MAX_BUFS];
    for (unsigned i = 0; i < p->nbufs; i++) iov[i] = (struct iovec){p->bufs + i * BUF_BYTES, BUF_BYTES};
    p->io->ops->register_buffers(p->io, iov, p->nbufs);
}

/* Open the swap file, the I/O engine, the buffers and the codec on first
 * need (the first eviction or page-in from disk). Caller holds the pager
 * lock. A failure is reported to every caller for START_RETRY_MS, then
 * tried again: a transient one (out of file descriptors, of memory) does
 * not turn paging to disk off for good, and a lasting one (no access to
 * swap_dir) costs one attempt per period. */
/* fork(): a child inherits the swap file's descriptor and the io_uring
 * ring, whose memory the kernel shares with the parent, but its own copy of
 * their bookkeeping (which blocks are free, what is in flight). One
 * submission from the child corrupts the parent's ring (the parent then
 * waits forever), one write overwrites a record the parent still needs. So
 * in a child nothing of an inherited arena touches them: everything that
 * needs the disk fails with -ENOTSUP (resident and compressed entries work
 * on, in the child's copy of memory), and destroying the arena there leaves
 * them alone (ml__inherited, core/policy.c). */
static int ensure_started(ml_pager *p)
{
    if (ml__inherited(p->a)) return -ENOTSUP;
    if (p->started) return 0;
    if (p->start_err && mono_ns() - p->start_err_ns < (uint64_t)START_RETRY_MS * 1000000) return p->start_err;
    const ml_config *c = &p->a->cfg;
    int rc = ml__swap_open(&p->swap, c->swap_dir, c->swap_size, c->direct_io);
    if (rc == 0) {
        int which = c->io_engine == 1 ? ML_IO_WHICH_URING : c->io_engine == 2 ? ML_IO_WHICH_SYNC : ML_IO_WHICH_AUTO;
        p->io_which = which;
        rc = p->open_io(p->open_ctx, p->swap.fd, c->io_queue_depth, which, &p->io);
    }
    if (rc == 0) {
        /* Twice the queue depth: while records wait to be decoded (prefetch)
         * or written, as many reads or writes can still be in flight. */
        p->nbufs = 2 * c->io_queue_depth < MAX_BUFS ? 2 * c->io_queue_depth : MAX_BUFS;
        if (p->nbufs < 2) p->nbufs = 2;
        if (posix_memalign((void **)&p->bufs, 4096, p->nbufs * BUF_BYTES) != 0) rc = -ENOMEM;
    }
    if (rc == 0) {
        register_bufs(p);
        if (!p->codec) p->codec = ml__codec_new(c->zstd_level);
        if (!p->codec) rc = -ENOMEM;
    }
    if (rc) {
        if (p->io) p->io->ops->destroy(p->io);
        p->io = NULL;
        free(p->bufs);
        p->bufs = NULL;
        ml__swap_close(&p->swap);
        p->start_err = rc;
        p->start_err_ns = mono_ns();
        p->st.start_errno = (uint64_t)-rc;
        return rc;
    }
    p->st.swap_capacity = p->swap.blocks * ML_SWAP_BLOCK;
    p->st.direct_io = p->swap.direct;
    p->st.io_uring = strcmp(p->io->ops->name, "io_uring") == 0;
    snprintf(p->st.engine, sizeof p->st.engine, "%s", p->io->ops->name);
    p->started = true;
    p->start_err = 0;
    p->st.start_errno = 0;
    return 0;
}

/* A swap_dir the program names must be a directory it may create files
 * in: checked when the arena is made (by making a swap file the way
 * ml__swap_open will, and closing it at once: it never has a name, or
 * loses it at once), so that a wrong path fails there, not as -ENOMEM once
 * the arena is full. Permission bits alone said yes to /proc and /sys. */
static int check_swap_dir(const char *dir)
{
    struct stat st;
    if (stat(dir, &st) != 0) return -errno;
    if (!S_ISDIR(st.st_mode)) return -ENOTDIR;
    if (access(dir, W_OK | X_OK) != 0) return -errno;
    return ml__swap_probe(dir);
}

static int attach(ml_arena *a)
{
    if (!a->cfg.enable_paging) return 0;
    if (a->cfg.swap_dir) {
        int rc = check_swap_dir(a->cfg.swap_dir);
        if (rc) return rc;
    }
    ml_pager *p = calloc(1, sizeof *p);
    if (!p) return -ENOMEM;
    p->a = a;
    pthread_mutex_init(&p->lock, NULL);
    pthread_mutex_init(&p->rd_lock, NULL);
    pthread_cond_init(&p->rd_cond, NULL);
    p->open_io = pending_open ? pending_open : ml__io_open_default;
    p->open_ctx = pending_ctx;
    snprintf(p->st.engine, sizeof p->st.engine, "none");
    p->st.swap_capacity = a->cfg.swap_size / ML_SWAP_BLOCK * ML_SWAP_BLOCK;
    a->pager = p;
    return 0;
}

static void detach(ml_arena *a)
{
    ml_pager *p = pager_of(a);
    if (!p) return;
    /* In a forked child the engines are the parent's (ensure_started): an
     * engine's destroy would wait for the parent's I/O. Their memory stays
     * (the child's copy), their descriptors go with the child. */
    bool mine = !ml__inherited(p->a);
    /* Every reader is back in the list: page-ins end before destroy. */
    while (p->rd_free) {
        reader *r = p->rd_free;
        p->rd_free = r->next;
        if (r->io && mine) r->io->ops->destroy(r->io);
        free(r->buf);
        ml__codec_free(r->codec);
        free(r);
    }
    pthread_cond_destroy(&p->rd_cond);
    pthread_mutex_destroy(&p->rd_lock);
    if (p->io && mine) p->io->ops->destroy(p->io); /* waits for anything in flight */
    ml__codec_free(p->codec);
    free(p->bufs);
    free(p->scratch);
    for (int i = 0; i < RC_WAYS; i++) free(p->rc[i].buf);
    if (p->started) ml__swap_close(&p->swap);
    pthread_mutex_destroy(&p->lock);
    free(p);
    a->pager = NULL;
}

/* ---- records --------------------------------------------------------------- */

static uint32_t hdr_crc(const rec_hdr *h)
{
    rec_hdr t = *h;
    t.hdr_crc = 0;
    return ml__crc32c(0, &t, sizeof t);
}

/* Encode `size` bytes at src into a record at dst (capacity cap); `raw`:
 * known not to compress (a compress attempt just failed), so store it as is
 * without a second zstd pass. Returns the record length rounded to 4 KiB,
 * or a negative error. */
static long make_record(ml_pager *p, uint32_t idx, uint64_t m, const void *src, size_t size,
                        char *dst, size_t cap, bool raw)
{
    rec_hdr *h = (rec_hdr *)dst;
    int codec = ML_CODEC_RAW;
    long z = (long)size;
    if (raw) memcpy(dst + sizeof *h, src, size); /* cap >= bound >= size */
    else z = ml__codec_encode(p->codec, src, size, dst + sizeof *h, cap - sizeof *h, 0.10, &codec);
    if (z < 0) {
        p->st.compress_failed++;
        return z;
    }
    memset(h, 0, sizeof *h);
    h->magic = REC_MAGIC;
    h->version = REC_VERSION;
    h->codec = (uint16_t)codec;
    h->id = ml_handle_id(ml__handle_of(m, idx));
    h->generation = ML_HI_GEN(ml__hi(m));
    h->orig_len = size;
    h->stored_len = (uint64_t)z;
    h->seq = ++p->rec_seq;
    ml__cold(p->a, idx, m)->rec_seq = h->seq; /* the entry's newest record */
    h->payload_crc = ml__crc32c(0, dst + sizeof *h, (size_t)z);
    h->hdr_crc = hdr_crc(h);
    size_t len = ml__align_up(sizeof *h + (size_t)z, ML_SWAP_BLOCK);
    memset(dst + sizeof *h + z, 0, len - sizeof *h - (size_t)z); /* no stale bytes on disk */
    return (long)len;
}

/* Check a record against the slot that reads it (and its newest record's
 * sequence number, seq) and decode it into dst, with the given codec (any
 * thread may do this for a claimed entry). An intact record of the same
 * entry but an older eviction is refused like a corrupt one. */
static int check_record(ml_codec *codec, uint32_t idx, uint64_t m, uint64_t seq, size_t size, const char *rec,
                        size_t len, void *dst)
{
    const rec_hdr *h = (const rec_hdr *)rec;
    if (len < sizeof *h || h->magic != REC_MAGIC || h->version != REC_VERSION || h->hdr_crc != hdr_crc(h) ||
        h->id != ml_handle_id(ml__handle_of(m, idx)) || h->generation != ML_HI_GEN(ml__hi(m)) || h->seq != seq ||
        h->orig_len != size || h->stored_len > len - sizeof *h ||
        h->payload_crc != ml__crc32c(0, rec + sizeof *h, (size_t)h->stored_len))
        return -EBADMSG;
    /* dst is lane space that was often handed to the kernel lazily
     * (MADV_FREE) when something was evicted from it: its pages are still
     * ours, but their first write each has the CPU mark the page dirty
     * again. One store per page first, then the decoder: in the middle of
     * zstd's stream of stores each of those marks costs far more (a 64 KiB
     * page-in measured about 6 us slower without this). The bytes are all
     * overwritten next. */
    for (size_t off = 0; off < size; off += ML_PAGE_SIZE) ((volatile char *)dst)[off] = 0;
    if (ml__codec_decode(codec, h->codec, rec + sizeof *h, (size_t)h->stored_len, dst, size) != 0) return -EBADMSG;
    return 0;
}

/* ---- stub updates (entry claimed) ------------------------------------------ */

/* New state (and place) of a claimed entry. A cold state never keeps the
 * clean-copy bits; a resident one gets exactly `bits` of them (and loses
 * ACCESSED when it becomes CLEAN: see the invariant in core/arena.h).
 *
 * `where` is the data's new address for a resident state; for a cold one,
 * the record's place in the lane or its swap location, which goes to the
 * slot's cold location (ml__set_cold_loc), never to its addr: ml_get reads
 * the meta word, then addr, without a claim (core/arena.h, "where a live
 * entry keeps its bytes"). Coming back, the address is stored before the
 * word. */
static void set_state_bits(ml_arena *a, uint32_t idx, uint64_t where, uint64_t state, uint64_t bits)
{
    ml_slot *s = &a->slots[idx];
    bool resident = state == ML_STATE_SLOW;
    if (resident) __atomic_store_n(&s->addr, where, __ATOMIC_RELEASE);
    else ml__set_cold_loc(a, idx, where);
    uint64_t cur = ml__load(&s->meta), want;
    do {
        want = (cur & ~(ML_M_STATE | ML_M_RESIDENT | ML_M_CLEAN | ML_M_HASCOPY | ML_M_NOCOMP)) | state |
               (resident ? ML_M_RESIDENT : 0) | ML_M_BLOB | bits;
        if (bits & ML_M_CLEAN) want &= ~ML_M_ACCESSED;
    } while (!__atomic_compare_exchange_n(&s->meta, &cur, want, true, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED));
}

static void set_state(ml_arena *a, uint32_t idx, uint64_t where, uint64_t state)
{
    set_state_bits(a, idx, where, state, 0);
}

/* Release the swap record kept for claimed slot idx. Caller holds the pager
 * lock; the caller clears the bits. */
static void drop_copy_locked(ml_pager *p, uint32_t idx)
{
    ml_cold *c = &p->a->cold[idx];
    if (!c->swap_copy) return;
    ml__swap_free(&p->swap, ml__swap_off(c->swap_copy));
    c->swap_copy = 0;
    p->st.now_clean_copies--;
}

/* The swap budget is full: release kept records (clean copies), which are
 * only a cache. First those written over since they came back (stale: of
 * no use at all), then clean ones, one at a time, until `blocks` blocks
 * can be had. Entries are claimed without waiting (pinned ones too: their
 * copy is no use while pinned, and dropping it moves nothing); busy ones,
 * this batch's victims among them, are skipped. Caller holds the pager
 * lock. Returns whether the blocks can be had now. */
static bool reclaim_copies(ml_pager *p, uint32_t blocks)
{
    ml_arena *a = p->a;
    uint32_t n = __atomic_load_n(&a->slot_count, __ATOMIC_ACQUIRE);
    for (int stale = 1; stale >= 0; stale--) {
        for (uint32_t idx = 0; idx < n && p->st.now_clean_copies > 0; idx++) {
            uint64_t m = ml__load_acq(&a->slots[idx].meta);
            if (!ml__meta_live(m) || !(m & ML_M_HASCOPY) || (m & ML_M_LOCKED)) continue;
            if (stale ? (m & ML_M_CLEAN) != 0 : (m & ML_M_CLEAN) == 0) continue;
            if (!__atomic_compare_exchange_n(&a->slots[idx].meta, &m, m | ML_M_LOCKED, false, __ATOMIC_ACQUIRE,
                                             __ATOMIC_RELAXED))
                continue;
            drop_copy_locked(p, idx);
            __atomic_fetch_and(&a->slots[idx].meta, ~(ML_M_HASCOPY | ML_M_CLEAN), __ATOMIC_RELAXED);
            ml__unclaim(a, idx);
            p->st.copies_reclaimed++;
            if (!stale && ml__swap_can_alloc(&p->swap, blocks)) return true;
        }
        if (ml__swap_can_alloc(&p->swap, blocks)) return true;
    }
    return false;
}

static size_t lane_bytes_of(ml_arena *a, uint32_t idx, uint64_t m)
{
    ml_loc loc;
    ml__locate(a, idx, m, &loc);
    return loc.bytes;
}

static void free_lane_blob(ml_arena *a, uint32_t idx, uint64_t m)
{
    ml_loc loc;
    ml__locate(a, idx, m, &loc);
    ml_lane_t *l = &a->lanes[ML_LANE_SLOW];
    pthread_mutex_lock(&l->lock);
    ml__lane_blob_free(l, loc.span);
    pthread_mutex_unlock(&l->lock);
    ml__account(a, ML_LANE_SLOW, -(int64_t)loc.bytes, 0);
}

static bool eligible(const ml_arena *a, uint32_t idx, uint64_t m)
{
    uint64_t st = m & ML_M_STATE;
    if (!(m & ML_M_BLOB) || (m & ML_M_PINS)) return false;
    if (st == ML_STATE_COMPRESSED) return true;
    return st == ML_STATE_SLOW && ml__load(&a->slots[idx].size) >= a->cfg.min_evict_size;
}

/* ---- compress in RAM ------------------------------------------------------- */

/* Resident blob -> COMPRESSED record in SlowLane. Caller holds the claim
 * and the pager lock. -EMSGSIZE when it does not compress (left as is). */
static int compress_one(ml_pager *p, uint32_t idx)
{
    ml_arena *a = p->a;
    ml_slot *s = &a->slots[idx];
    uint64_t m = ml__load(&s->meta);
    /* (The policies send clean entries to disk instead: that is free. An
     * explicit ml_compress of one drops its copy and compresses.) */
    if (m & ML_M_HASCOPY) {
        drop_copy_locked(p, idx);
        __atomic_fetch_and(&s->meta, ~(ML_M_HASCOPY | ML_M_CLEAN), __ATOMIC_RELAXED);
        m = ml__load(&s->meta);
    }
    size_t size = s->size;
    size_t cap = sizeof(rec_hdr) + ml__codec_bound(size) + ML_SWAP_BLOCK;
    char *buf = NULL;
    bool own = cap > BUF_BYTES;
    /* Before the first eviction nothing else has made the codec. */
    if (!p->codec && !(p->codec = ml__codec_new(a->cfg.zstd_level))) return -ENOMEM;
    if (own) {
        if (posix_memalign((void **)&buf, 4096, cap) != 0) return -ENOMEM;
    } else {
        if (!p->scratch && posix_memalign((void **)&p->scratch, 4096, BUF_BYTES) != 0) return -ENOMEM;
        buf = p->scratch;
    }
    uint64_t t0 = mono_ns();
    const void *src = (const void *)(uintptr_t)ml__load(&s->addr);
    long len = make_record(p, idx, m, src, size, buf, cap, false);
    int rc = 0;
    if (len < 0) rc = (int)len;
    else if (((const rec_hdr *)buf)->codec == ML_CODEC_RAW) { /* no gain in RAM */
        rc = -EMSGSIZE;
        p->st.compress_poor++;
    }
    ml_place pl;
    if (rc == 0 && (rc = ml__place(a, ML_LANE_SLOW, (size_t)len, ML_PAGE_SIZE, idx + 1, ML_PLACE_INTERNAL | ML_PLACE_BLOB, &pl)) == 0) {
        memcpy(pl.addr, buf, (size_t)len);
        ml_loc oloc; /* (the data's place, as it is resident: a blob) */
        ml__locate(a, idx, m, &oloc);
        set_state(a, idx, (uint64_t)(uintptr_t)pl.addr, ML_STATE_COMPRESSED);
        ml_lane_t *l = &a->lanes[ML_LANE_SLOW];
        if (!ml__debug_hold(a, &oloc)) {
            pthread_mutex_lock(&l->lock);
            ml__lane_blob_free(l, oloc.span);
            pthread_mutex_unlock(&l->lock);
        }
        ml__account(a, ML_LANE_SLOW, (int64_t)pl.bytes - (int64_t)oloc.bytes, 0);
        if (ML_EVENT_ON(a)) ml__event(a, ML_EVENT_COMPRESS, ml__handle_of(m, idx), size, 1, ML_LANE_SLOW, ML_LANE_SLOW);
        p->st.compressed++;
        p->st.now_compressed++;
        p->st.now_compressed_bytes += size;
        p->st.bytes_in += size;
        p->st.bytes_out += ((const rec_hdr *)buf)->stored_len;
    }
    p->st.evict_ns += mono_ns() - t0;
    if (own) free(buf);
    return rc;
}

/* ---- evict to disk ----------------------------------------------------------- */

typedef struct victim {
    uint32_t idx;
    uint64_t m;       /* meta when claimed */
    int buf;          /* bounce buffer, -1: written from the lane or own */
    char *own;        /* large record: its own buffer ... */
    size_t own_cap;   /* ... of this many bytes (pager.own_bytes) */
    int64_t blk;      /* first swap block, -1 */
    long len;         /* record bytes */
    uint64_t stored;  /* payload bytes (for the counters) */
    char *old;        /* evicted: its lane blob, released after the batch */
    size_t old_bytes;
    int result;       /* 0 evicted, else why not */
    bool queued;
    bool raw;         /* a compress attempt found it incompressible */
    bool raw_record;  /* its record is stored raw (counted once written) */
    bool early;       /* the batch owns the claim: give it back once evicted */
    bool unclaimed;   /* ... which happened */
} victim;

static int take_buf(ml_pager *p)
{
    for (unsigned i = 0; i < p->nbufs; i++)
        if (!p->busy[i]) {
            p->busy[i] = true;
            return (int)i;
        }
    return -1;
}

/* Done with an evicted victim (only its old lane space, v->old, is left to
 * release, and that no longer belongs to the slot): a batch lets it go now
 * rather than at its end, so that an access to it waits for its own write
 * (or none, for a clean copy), not for the whole batch. */
static void give_back_early(ml_arena *a, victim *v)
{
    if (v->early) {
        ml__unclaim(a, v->idx);
        v->unclaimed = true;
    }
}

/* A write found the disk (or the user's quota) full: for the next
 * DISK_FULL_RETRY_MS, or until the swap file gives up a record (whose
 * extent can take another without the file growing), an eviction to disk
 * fails at once with -ENOSPC instead of compressing a record that cannot
 * be written: without this, every allocation short of room recompressed
 * the same victims (tens of ms each) only to fail again. Caller holds the
 * pager lock. */
static bool disk_full_now(ml_pager *p)
{
    if (!p->disk_full_ns) return false;
    if (p->swap.used < p->disk_full_used || mono_ns() - p->disk_full_ns >= (uint64_t)DISK_FULL_RETRY_MS * 1000000) {
        p->disk_full_ns = 0;
        return false;
    }
    return true;
}

/* Entries whose record found no room in the swap budget lately, and how
 * many blocks that record needed: while the largest free run of the file
 * is still shorter, and no clean copy could be given up for room, the same
 * entry is refused at once with -ENOSPC instead of being compressed again
 * (for NOROOM_MS at most: a write may have changed what it compresses to).
 * Other victims are tried as usual: one entry that does not fit says
 * nothing about the next. Without this, an allocation short of room
 * compressed the same victims over and over only to find no room for
 * their records. Caller holds the pager lock. */
static bool noroom_known(ml_pager *p, uint32_t idx, uint64_t m)
{
    if (p->st.now_clean_copies > 0) return false;
    uint64_t now = mono_ns();
    for (unsigned i = 0; i < NOROOM_SLOTS; i++) {
        const noroom_rec *r = &p->noroom[i];
        if (r->ns && r->idx == idx && r->gen == ML_HI_GEN(ml__hi(m)) &&
            now - r->ns < (uint64_t)NOROOM_MS * 1000000)
            return !ml__swap_can_alloc(&p->swap, r->blocks);
    }
    return false;
}

static void noroom_note(ml_pager *p, uint32_t idx, uint64_t m, uint32_t blocks)
{
    unsigned at = p->noroom_next;
    for (unsigned i = 0; i < NOROOM_SLOTS; i++)
        if (p->noroom[i].ns && p->noroom[i].idx == idx) at = i; /* one record per entry */
    p->noroom[at] = (noroom_rec){.idx = idx, .gen = ML_HI_GEN(ml__hi(m)), .blocks = blocks, .ns = mono_ns()};
    if (at == p->noroom_next) p->noroom_next = (at + 1) % NOROOM_SLOTS;
}

/* Free the victim's own record buffer, if it has one. */
static void drop_own(ml_pager *p, victim *v)
{
    if (!v->own) return;
    free(v->own);
    v->own = NULL;
    p->own_bytes -= v->own_cap;
    v->own_cap = 0;
}

static void finish(ml_pager *p, victim *v, long res)
{
    ml_arena *a = p->a;
    v->queued = false;
    if (v->buf >= 0) p->busy[v->buf] = false;
    drop_own(p, v);
    if (res != v->len) {
        /* Failed or short: the entry stays where it is, intact. */
        p->st.io_errors++;
        ml__swap_free(&p->swap, (uint64_t)v->blk);
        v->result = res < 0 ? (int)res : -EIO;
        if (res == -ENOSPC || res == -EDQUOT) {
            p->disk_full_ns = mono_ns();
            p->disk_full_used = p->swap.used;
        }
        return;
    }
    uint64_t m = ml__load(&a->slots[v->idx].meta);
    size_t size = a->slots[v->idx].size;
    bool was_compressed = (m & ML_M_STATE) == ML_STATE_COMPRESSED;
    size_t lane_bytes = lane_bytes_of(a, v->idx, m);
    char *old = (char *)(uintptr_t)ml__lane_addr(a, v->idx, m); /* data, or a compressed record */
    set_state(a, v->idx, ml__swap_loc((uint64_t)v->blk, (uint64_t)v->len / ML_SWAP_BLOCK), ML_STATE_EVICTED);
    /* Only now, with the record safely on disk, may the lane space go; that
     * happens for the whole batch at the end of evict_many (release_old). */
    v->old = old;
    v->old_bytes = lane_bytes;
    if (was_compressed) {
        p->st.now_compressed--;
        p->st.now_compressed_bytes -= size;
    } else {
        p->st.bytes_in += size;
        p->st.bytes_out += v->stored;
        if (v->raw_record) p->st.stored_raw++;
    }
    if (ML_EVENT_ON(a)) ml__event(a, ML_EVENT_EVICT, ml__handle_of(m, v->idx), size, 1, ML_LANE_SLOW, ML_LANE_SLOW);
    p->st.evicted++;
    p->st.now_evicted++;
    p->st.now_evicted_bytes += size;
    v->result = 0;
    give_back_early(a, v);
}

/* The pager's engine failed as a whole (its reap failed), or a request
 * is still counted in it after one did: its count no longer says what the
 * kernel holds, and a request it took may still complete into a bounce
 * buffer or a swap extent we are about to give back. Open a fresh engine
 * (pread/pwrite if no other can be opened: it needs nothing but memory),
 * then close the old one, which waits for whatever the kernel still holds
 * of it. Only if not even that can be opened does the old one stay, with
 * nothing counted in flight. Caller holds the pager lock. */
int (*ml__io_fallback_open)(int fd, unsigned depth, ml_io **out) = ml__io_sync_open;

static void renew_engine(ml_pager *p)
{
    ml_io *fresh = NULL;
    unsigned depth = p->a->cfg.io_queue_depth;
    if (p->open_io(p->open_ctx, p->swap.fd, depth, p->io_which, &fresh) != 0 &&
        ml__io_fallback_open(p->swap.fd, depth, &fresh) != 0) {
        p->io->inflight = 0;
        return;
    }
    p->io->ops->destroy(p->io);
    p->io = fresh;
    register_bufs(p);
    p->st.io_uring = strcmp(p->io->ops->name, "io_uring") == 0;
    snprintf(p->st.engine, sizeof p->st.engine, "%s", p->io->ops->name);
}

/* The tag of the write of vs[i] in the batch with serial `batch`. */
static uint64_t write_tag(uint32_t batch, size_t i) { return (uint64_t)batch << 32 | (uint32_t)i; }

/* Reap completions of the current batch (vs[0..nvs)). A completion that is
 * not one of its queued writes is ignored: it can only be a late one from
 * an engine that broke and could not be replaced (renew_engine), and its
 * tag must not pick a victim of this batch, or one past its end. */
static void reap(ml_pager *p, victim *vs, size_t nvs, uint32_t batch, unsigned min)
{
    ml_io_cqe cq[64];
    while (min > 0 || p->io->inflight) {
        int n = p->io->ops->reap(p->io, cq, 64, min);
        if (n <= 0) {
            /* The engine failed as a whole: every request still in it is
             * lost (failed by the caller once this returns). */
            if (n < 0) renew_engine(p);
            break;
        }
        for (int i = 0; i < n; i++) {
            uint64_t k = (uint32_t)cq[i].tag;
            if (cq[i].tag == write_tag(batch, k) && k < nvs && vs[k].queued) finish(p, &vs[k], cq[i].res);
        }
        min = (unsigned)n >= min ? 0 : min - (unsigned)n;
        if (min == 0) break;
    }
}

/* Whatever of vs[0..n) the engine took and never completed (after a reap
 * of everything in flight, or when it broke) failed: those entries stay
 * where they are, intact. Returns how many. */
static size_t fail_unfinished(ml_pager *p, victim *vs, size_t n)
{
    size_t lost = 0;
    for (size_t k = 0; k < n; k++)
        if (vs[k].queued) {
            finish(p, &vs[k], -EIO);
            lost++;
        }
    return lost;
}

static int cmp_old(const void *x, const void *y)
{
    const victim *a = *(victim *const *)x, *b = *(victim *const *)y;
    return (a->old > b->old) - (a->old < b->old);
}

/* Release the lane space of the batch's evicted entries: their pages first
 * (lazily, MADV_FREE: reused soon, they cost no fault), in as few calls as
 * adjacent ranges allow, while the ranges are still ours; then the extents,
 * under one lane lock. Caller holds the pager lock. */
static void release_old(ml_pager *p, victim *vs, size_t n)
{
    ml_arena *a = p->a;
    ml_lane_t *l = &a->lanes[ML_LANE_SLOW];
    if (a->dbg) {
        /* Debug mode: the old places go to the quarantine, poisoned. */
        int64_t held = 0;
        for (size_t i = 0; i < n; i++)
            if (vs[i].result == 0 && vs[i].old) {
                ml_loc loc = {.lane = ML_LANE_SLOW, .blob = true, .bytes = vs[i].old_bytes,
                              .span = (uint32_t)((size_t)(vs[i].old - ml__lane_base(l)) >> l->unit_shift)};
                ml__debug_hold(a, &loc);
                held += (int64_t)vs[i].old_bytes;
                vs[i].old = NULL;
            }
        if (held) ml__account(a, ML_LANE_SLOW, -held, 0);
        return;
    }
    victim **v = malloc((n ? n : 1) * sizeof *v);
    size_t k = 0;
    int64_t bytes = 0;
    for (size_t i = 0; i < n; i++)
        if (vs[i].result == 0 && vs[i].old) {
            if (v) v[k++] = &vs[i];
            else ml__region_release_lazy(&l->region, (size_t)(vs[i].old - ml__lane_base(l)), vs[i].old_bytes);
        }
    if (v) {
        qsort(v, k, sizeof *v, cmp_old);
        for (size_t i = 0; i < k;) {
            size_t j = i + 1, len = v[i]->old_bytes;
            while (j < k && v[j]->old == v[i]->old + len) len += v[j++]->old_bytes;
            ml__region_release_lazy(&l->region, (size_t)(v[i]->old - ml__lane_base(l)), len);
            i = j;
        }
    }
    pthread_mutex_lock(&l->lock);
    for (size_t i = 0; i < n; i++)
        if (vs[i].result == 0 && vs[i].old) {
            ml__lane_blob_free(l, (uint32_t)((size_t)(vs[i].old - ml__lane_base(l)) >> l->unit_shift));
            bytes += (int64_t)vs[i].old_bytes;
            vs[i].old = NULL;
        }
    pthread_mutex_unlock(&l->lock);
    if (bytes) ml__account(a, ML_LANE_SLOW, -bytes, 0);
    free(v);
}

/* Evict claimed victims; each gets a result. Caller holds the pager lock. */
static void evict_many(ml_pager *p, victim *vs, size_t n)
{
    ml_arena *a = p->a;
    uint64_t t0 = mono_ns(), handed = 0;
    unsigned unsubmitted = 0, group = p->io->depth / 4 ? p->io->depth / 4 : 1;
    size_t unsubmitted_src = 0; /* bytes of blobs behind the writes not submitted yet */
    size_t chunk = 0; /* bytes since the batch last let waiters in */
    /* Its own serial: a batch run inside this one's hand-over (ml_evict
     * lets itself in) takes the next one. */
    const uint32_t batch = ++p->batch;
    for (size_t i = 0; i < n; i++) {
        victim *v = &vs[i];
        if (chunk >= EVICT_CHUNK && p->yieldable && __atomic_load_n(&p->waiters, __ATOMIC_RELAXED)) {
            /* Someone waits: complete what is in flight (buffers free, ring
             * idle), give back the lane space of what is written, let them
             * in. */
            if (unsubmitted) p->io->ops->submit(p->io);
            unsubmitted = 0, unsubmitted_src = 0;
            reap(p, vs, n, batch, p->io->inflight);
            fail_unfinished(p, vs, i);
            release_old(p, vs, i);
            handed += let_waiters_in(p);
            chunk = 0;
        }
        /* Finish the writes that have completed (a look at the ring, no
         * wait): their victims go back at once, so that an access to one
         * waits for its own write rather than for a ring's worth of others
         * to be compressed, and so do their buffers. (Their lane space
         * goes back at the end, or at a hand-over: giving it back every
         * 4 MiB cost some 5% of the eviction throughput.) */
        if (p->io->inflight) reap(p, vs, n, batch, 0);
        chunk += a->slots[v->idx].size;
        ml_slot *s = &a->slots[v->idx];
        v->buf = -1;
        v->own = NULL;
        v->own_cap = 0;
        v->blk = -1;
        v->queued = false;
        v->old = NULL;
        uint64_t m = ml__load(&s->meta);
        v->m = m;
        const char *rec;
        if ((m & ML_M_CLEAN) && a->cold[v->idx].swap_copy) {
            /* Unmodified since it came back: its record is still on disk.
             * Nothing to compress, nothing to write. */
            uint64_t copy = a->cold[v->idx].swap_copy;
            a->cold[v->idx].swap_copy = 0;
            p->st.now_clean_copies--;
            v->old = (char *)(uintptr_t)ml__load(&s->addr);
            v->old_bytes = lane_bytes_of(a, v->idx, m);
            set_state(a, v->idx, copy, ML_STATE_EVICTED);
            p->st.evicted++;
            p->st.evicted_clean++;
            p->st.now_evicted++;
            p->st.now_evicted_bytes += s->size;
            if (ML_EVENT_ON(a)) ml__event(a, ML_EVENT_EVICT, ml__handle_of(m, v->idx), s->size, 1, ML_LANE_SLOW, ML_LANE_SLOW);
            v->result = 0;
            give_back_early(a, v);
            continue;
        }
        if (m & ML_M_HASCOPY) { /* written since it came back: the copy is stale */
            drop_copy_locked(p, v->idx);
            __atomic_fetch_and(&s->meta, ~(ML_M_HASCOPY | ML_M_CLEAN), __ATOMIC_RELAXED);
            m = v->m = ml__load(&s->meta);
        }
        if (disk_full_now(p)) {
            p->st.disk_full++;
            v->result = -ENOSPC;
            continue;
        }
        if ((m & ML_M_STATE) != ML_STATE_COMPRESSED && noroom_known(p, v->idx, m)) {
            p->st.budget_full++;
            v->result = -ENOSPC;
            continue;
        }
        if ((m & ML_M_STATE) == ML_STATE_COMPRESSED) {
            /* The record exists already, page-aligned in the lane. */
            rec = (const char *)(uintptr_t)ml__cold_loc(a, v->idx);
            v->len = (long)lane_bytes_of(a, v->idx, m);
        } else {
            size_t cap = sizeof(rec_hdr) + ml__codec_bound(s->size) + ML_SWAP_BLOCK;
            char *dst;
            if (cap > BUF_BYTES) {
                /* Large records in flight hold OWN_INFLIGHT at most (or
                 * one, however large): wait for the oldest to complete. */
                while (p->own_bytes && p->own_bytes + cap > OWN_INFLIGHT && p->io->inflight) {
                    if (unsubmitted) {
                        p->io->ops->submit(p->io);
                        unsubmitted = 0, unsubmitted_src = 0;
                    }
                    reap(p, vs, n, batch, 1);
                }
                if (p->own_bytes && p->own_bytes + cap > OWN_INFLIGHT) fail_unfinished(p, vs, i); /* (engine lost them) */
                if (posix_memalign((void **)&v->own, 4096, cap) != 0) {
                    v->own = NULL;
                    v->result = -ENOMEM;
                    continue;
                }
                v->own_cap = cap;
                p->own_bytes += cap;
                dst = v->own;
            } else {
                while ((v->buf = take_buf(p)) < 0) {
                    if (unsubmitted) {
                        p->io->ops->submit(p->io);
                        unsubmitted = 0, unsubmitted_src = 0;
                    }
                    if (!p->io->inflight) {
                        /* Every buffer busy with nothing in flight: the
                         * engine failed as a whole and lost the writes that
                         * hold them (reap counted them gone). They failed:
                         * those entries stay where they are, intact. */
                        if (fail_unfinished(p, vs, i)) continue;
                        break;
                    }
                    reap(p, vs, n, batch, 1);
                }
                if (v->buf < 0) { /* (cannot happen: no victim holds one) */
                    v->result = -EIO;
                    continue;
                }
                dst = p->bufs + (size_t)v->buf * BUF_BYTES;
            }
            v->len = make_record(p, v->idx, m, (const void *)(uintptr_t)ml__load(&s->addr), s->size, dst, cap,
                                 v->raw);
            if (v->len < 0) {
                v->result = (int)v->len;
                if (v->buf >= 0) p->busy[v->buf] = false;
                drop_own(p, v);
                continue;
            }
            v->stored = ((const rec_hdr *)dst)->stored_len;
            v->raw_record = ((const rec_hdr *)dst)->codec == ML_CODEC_RAW;
            rec = dst;
        }
        v->blk = ml__swap_alloc(&p->swap, (uint32_t)(v->len / ML_SWAP_BLOCK));
        if (v->blk < 0 && p->st.now_clean_copies > 0 && reclaim_copies(p, (uint32_t)(v->len / ML_SWAP_BLOCK)))
            v->blk = ml__swap_alloc(&p->swap, (uint32_t)(v->len / ML_SWAP_BLOCK));
        if (v->blk < 0) {
            p->st.budget_full++;
            noroom_note(p, v->idx, m, (uint32_t)(v->len / ML_SWAP_BLOCK));
            v->result = -ENOSPC;
            v->blk = -1;
            if (v->buf >= 0) p->busy[v->buf] = false;
            drop_own(p, v);
            continue;
        }
        int rc;
        while ((rc = p->io->ops->write(p->io, rec, (size_t)v->len, (uint64_t)v->blk * ML_SWAP_BLOCK, v->buf,
                                       write_tag(batch, i))) == -EAGAIN) {
            p->io->ops->submit(p->io);
            unsubmitted = 0, unsubmitted_src = 0;
            reap(p, vs, n, batch, 1);
        }
        if (rc) {
            finish(p, v, rc);
            continue;
        }
        v->queued = true;
        /* Writes go in groups (fewer calls: submitting every 128 KiB of
         * 64 KiB blobs cost 8% of the eviction throughput), but no later
         * than after EVICT_CHUNK of blobs compressed, so that a victim is
         * not kept waiting long for the next ones' compression. */
        unsubmitted_src += a->slots[v->idx].size;
        if (++unsubmitted >= group || unsubmitted_src >= EVICT_CHUNK) {
            p->io->ops->submit(p->io);
            unsubmitted = 0, unsubmitted_src = 0;
        }
    }
    if (unsubmitted) p->io->ops->submit(p->io);
    reap(p, vs, n, batch, p->io->inflight);
    fail_unfinished(p, vs, n);
    release_old(p, vs, n);
    p->st.evict_ns += mono_ns() - t0 - handed;
}

/* ---- page-in ------------------------------------------------------------------ */

static size_t make_room_locked(ml_pager *p, size_t bytes, uint32_t keep);

/* A SlowLane place for a blob coming back; makes room if needed. With
 * can_wait, -EAGAIN asks the caller to release the lock and retry. */
static int place_back(ml_pager *p, uint32_t idx, uint64_t m, size_t size, ml_place *pl, bool can_wait)
{
    ml_arena *a = p->a;
    size_t align = (size_t)1 << ((m & ML_M_ALIGN) >> ML_M_ALIGN_SHIFT);
    /* Always a blob: the entry was one (only blobs are paged). */
    if (ml__place(a, ML_LANE_SLOW, size, align, idx + 1, ML_PLACE_BLOB, pl) == 0) return 0;
    /* A paused batch is making room with the coldest entries claimed: the
     * caller lets it go on and comes back (see "Locking"). */
    if (can_wait && p->paused) return -EAGAIN;
    /* The bytes freed may be in pieces none of which fits: free more (as
     * the allocation path does, a bounded number of rounds). */
    for (int round = 0; round < 8 && make_room_locked(p, size, idx); round++)
        if (ml__place(a, ML_LANE_SLOW, size, align, idx + 1, ML_PLACE_BLOB, pl) == 0) return 0;
    /* Last resort: the scratch reserve (better than failing an access). */
    return ml__place(a, ML_LANE_SLOW, size, align, idx + 1, ML_PLACE_INTERNAL | ML_PLACE_BLOB, pl);
}

/* Read the swap record at loc into dst (4 KiB aligned) through engine io,
 * waiting for it. *failed is set when the device failed the read (an I/O
 * error to count), as opposed to the request not being made. */
static int read_record(ml_io *io, uint64_t loc, char *dst, int buf_index, bool *failed)
{
    size_t len = (size_t)ml__swap_len(loc) * ML_SWAP_BLOCK;
    int rc = io->ops->read(io, dst, len, ml__swap_off(loc) * ML_SWAP_BLOCK, buf_index, UINT64_MAX);
    if (rc == 0) rc = io->ops->submit_wait ? io->ops->submit_wait(io, 1) : io->ops->submit(io);
    if (rc) return rc;
    ml_io_cqe cq;
    int n;
    /* Only this read's completion counts. Nothing else of ours is in the
     * engine (a lone read), so any other can only be a late one of an
     * engine that broke and had to stay (renew_engine), which was written
     * off and never counted: reaping it took our read's count, so give
     * that back and wait on. */
    const unsigned ours = io->inflight;
    while ((n = io->ops->reap(io, &cq, 1, 1)) > 0 && cq.tag != UINT64_MAX) io->inflight = ours;
    if (n == 0) return -EIO; /* (cannot happen: ours is counted, so reap waits for one) */
    if (n < 0) return n;
    if (cq.res != (long)len) {
        *failed = true;
        return cq.res < 0 ? (int)cq.res : -EIO;
    }
    return 0;
}

/* ---- readers ---------------------------------------------------------------- */

/* A reader for this thread's page-in: a free one, a new one while there are
 * fewer than MAX_READERS, or the next one given back. NULL on ENOMEM. */
static reader *take_reader(ml_pager *p)
{
    pthread_mutex_lock(&p->rd_lock);
    while (!p->rd_free && p->rd_count >= MAX_READERS) pthread_cond_wait(&p->rd_cond, &p->rd_lock);
    reader *r = p->rd_free;
    if (r) {
        p->rd_free = r->next;
        pthread_mutex_unlock(&p->rd_lock);
        return r;
    }
    p->rd_count++;
    pthread_mutex_unlock(&p->rd_lock);
    r = calloc(1, sizeof *r);
    if (r && !(r->codec = ml__codec_new(p->a->cfg.zstd_level))) {
        free(r);
        r = NULL;
    }
    if (!r) {
        pthread_mutex_lock(&p->rd_lock);
        p->rd_count--;
        pthread_cond_signal(&p->rd_cond);
        pthread_mutex_unlock(&p->rd_lock);
    }
    return r;
}

static void put_reader(ml_pager *p, reader *r)
{
    pthread_mutex_lock(&p->rd_lock);
    r->next = p->rd_free;
    p->rd_free = r;
    pthread_cond_signal(&p->rd_cond);
    pthread_mutex_unlock(&p->rd_lock);
}

/* Open the reader's engine (through the pager's factory) and its buffer.
 * A reader makes one read at a time and its thread waits for it, so it asks
 * for pread/pwrite unless io_uring was asked for alone (io_engine 1): at
 * queue depth 1 a blocking pread answers sooner. On this machine (ext4 on
 * virtio) a 64 KiB O_DIRECT page-in took about 5 us longer through io_uring
 * (why is not confirmed: io_uring had worker threads running, so it may
 * hand such a read to one instead of issuing it inline). io_uring stays the engine of the batches (eviction,
 * prefetch), where queueing many requests at once is what counts. The
 * pager is started, so the swap file is open. */
static int reader_open(ml_pager *p, reader *r)
{
    if (r->io) return 0;
    if (posix_memalign((void **)&r->buf, 4096, BUF_BYTES) != 0) {
        r->buf = NULL;
        return -ENOMEM;
    }
    int which = p->io_which == ML_IO_WHICH_URING ? ML_IO_WHICH_URING : ML_IO_WHICH_SYNC;
    int rc = p->open_io(p->open_ctx, p->swap.fd, 2, which, &r->io);
    if (rc) {
        r->io = NULL;
        free(r->buf);
        r->buf = NULL;
        return rc;
    }
    struct iovec iov = {r->buf, BUF_BYTES};
    r->io->ops->register_buffers(r->io, &iov, 1); /* optional, as for the pager's */
    return 0;
}

/* Install decoded data: stub to the new place, old record released. */
static void installed(ml_pager *p, uint32_t idx, uint64_t m, const ml_place *pl, bool keep_copy)
{
    ml_arena *a = p->a;
    size_t size = a->slots[idx].size;
    uint64_t loc = ml__cold_loc(a, idx);
    bool evicted = (m & ML_M_STATE) == ML_STATE_EVICTED;
    size_t rec_bytes = evicted ? 0 : lane_bytes_of(a, idx, m);
    keep_copy = keep_copy && evicted;
    if (keep_copy) ml__cold(a, idx, m)->swap_copy = loc; /* (the entry is claimed) */
    set_state_bits(a, idx, (uint64_t)(uintptr_t)pl->addr, ML_STATE_SLOW,
                   keep_copy ? ML_M_CLEAN | ML_M_HASCOPY | ML_M_REFERENCED : ML_M_ACCESSED);
    if (evicted) {
        if (keep_copy) p->st.now_clean_copies++;
        else ml__swap_free(&p->swap, ml__swap_off(loc));
        p->st.now_evicted--;
        p->st.now_evicted_bytes -= size;
    } else {
        ml_lane_t *l = &a->lanes[ML_LANE_SLOW];
        pthread_mutex_lock(&l->lock);
        ml__lane_blob_free(l, (uint32_t)((size_t)((char *)(uintptr_t)loc - ml__lane_base(l)) >> l->unit_shift));
        pthread_mutex_unlock(&l->lock);
        p->st.now_compressed--;
        p->st.now_compressed_bytes -= size;
    }
    ml__account(a, ML_LANE_SLOW, (int64_t)pl->bytes - (int64_t)rec_bytes, 0);
    rc_forget(p, idx);
    if (ML_EVENT_ON(a)) ml__event(a, ML_EVENT_PAGE_IN, ml__handle_of(m, idx), size, 1, ML_LANE_SLOW, ML_LANE_SLOW);
}

static void give_back_place(ml_arena *a, const ml_place *pl)
{
    ml__release_place(a, ML_LANE_SLOW, pl->addr, pl->blob);
}

/* Read (if on disk) and decode the record of claimed cold slot idx (meta m,
 * record at loc) into dst, with the given codec, engine and bounce buffer
 * (registered as index 0 of the engine, BUF_BYTES; larger records get their
 * own). *io_failed / *bad report what to count. */
static int decode_cold(ml_pager *p, ml_codec *codec, ml_io **iop, char *bounce, uint32_t idx, uint64_t m,
                       size_t size, uint64_t loc, void *dst, bool *io_failed, bool *bad)
{
    int rc;
    if ((m & ML_M_STATE) == ML_STATE_COMPRESSED) {
        rc = check_record(codec, idx, m, p->a->cold[idx].rec_seq, size, (const char *)(uintptr_t)loc,
                          lane_bytes_of(p->a, idx, m), dst);
        *bad = rc != 0;
        return rc;
    }
    size_t len = (size_t)ml__swap_len(loc) * ML_SWAP_BLOCK;
    char *buf = bounce;
    int bi = 0;
    if (len > BUF_BYTES) {
        bi = -1;
        if (posix_memalign((void **)&buf, 4096, len) != 0) return -ENOMEM;
    }
    rc = read_record(*iop, loc, buf, bi, io_failed);
    if (rc == 0) {
        rc = check_record(codec, idx, m, p->a->cold[idx].rec_seq, size, buf, len, dst);
        *bad = rc != 0;
    }
    if ((*iop)->inflight) {
        /* The engine failed with the read still in it, which may yet land
         * in buf: close it first (that waits for the read). The pager's
         * own gets a fresh one (its users hold the pager lock); a reader's
         * is gone (*iop NULL) and its next user opens another. */
        if (iop == &p->io) {
            renew_engine(p);
        } else {
            (*iop)->ops->destroy(*iop);
            *iop = NULL;
        }
    }
    if (bi < 0) free(buf);
    return rc;
}

/* Decode the record of claimed cold slot idx into dst with reader r, no
 * lock held. *mine is false when the reader could not open an engine (the
 * caller then does the work with the pager's own, under the lock). */
static int reader_decode(ml_pager *p, reader *r, uint32_t idx, uint64_t m, size_t size, uint64_t loc,
                         void *dst, bool *io_failed, bool *bad, bool *mine)
{
    if ((m & ML_M_STATE) == ML_STATE_EVICTED && reader_open(p, r) != 0) return 0;
    *mine = true;
    int rc = decode_cold(p, r->codec, &r->io, r->buf, idx, m, size, loc, dst, io_failed, bad);
    if (!r->io) { /* its engine failed and was closed: the next user opens another */
        free(r->buf);
        r->buf = NULL;
    }
    return rc;
}

/* The end of a page-in, under the pager lock: count what went wrong, then
 * install the data, or give the place back (the record stays, for a
 * retry). by_prefetch: one of ml_prefetch's entries, counted as prefetched
 * (its time is in the prefetch's own pagein_ns, so t0 is unused), not as a
 * page-in on access. */
static void page_in_end(ml_pager *p, uint32_t idx, uint64_t m, ml_place *pl, bool keep_copy, int rc,
                        bool io_failed, bool bad, uint64_t t0, bool by_prefetch)
{
    if (io_failed) p->st.io_errors++;
    if (bad) p->st.checksum_failures++;
    if (rc) {
        give_back_place(p->a, pl);
        return;
    }
    installed(p, idx, m, pl, keep_copy);
    if (by_prefetch) {
        p->st.prefetched++;
        return;
    }
    p->st.page_ins++;
    p->st.pagein_ns += mono_ns() - t0;
}

/* Page-in with the pager lock held throughout (ml_prefetch's one-by-one
 * cases), on the pager's own engine, buffer and codec. */
static int page_in_locked(ml_pager *p, uint32_t idx, bool keep_copy, bool *no_place)
{
    ml_arena *a = p->a;
    uint64_t m = ml__load(&a->slots[idx].meta);
    if (m & ML_M_RESIDENT) return 0;
    size_t size = a->slots[idx].size;
    ml_place pl;
    int rc = place_back(p, idx, m, size, &pl, false);
    if (rc) {
        *no_place = true;
        return rc;
    }
    /* (a compressed entry implies the codec exists) */
    if ((m & ML_M_STATE) == ML_STATE_EVICTED) rc = ensure_started(p);
    bool io_failed = false, bad = false;
    if (rc == 0)
        rc = decode_cold(p, p->codec, &p->io, p->bufs, idx, m, size, ml__cold_loc(a, idx), pl.addr,
                         &io_failed, &bad);
    page_in_end(p, idx, m, &pl, keep_copy, rc, io_failed, bad, 0, true);
    return rc;
}

/* Page-in on access: the I/O and the decoding run without the pager lock,
 * with a reader from the pool (see "Locking" at the top). */
static int page_in(ml_arena *a, uint32_t idx, bool keep_copy)
{
    ml_pager *p = pager_of(a);
    if (!p) return -EIO;
    /* The reader first (a leaf: nothing waits for it while holding the
     * pager lock), so that a page-in waiting for one holds no place. NULL:
     * the pager's own engine will do (step 3). */
    reader *r = take_reader(p);
    /* 1. Under the pager lock: a place to come back to (making room if
     *    needed) and, for a record on disk, a started pager. */
    uint64_t t0 = mono_ns(), m, loc;
    size_t size;
    ml_place pl;
    int rc;
    for (;;) {
        lock_as_waiter(p);
        m = ml__load(&a->slots[idx].meta);
        if (m & ML_M_RESIDENT) {
            pthread_mutex_unlock(&p->lock);
            if (r) put_reader(p, r);
            return 0;
        }
        size = a->slots[idx].size;
        loc = ml__cold_loc(a, idx);
        rc = place_back(p, idx, m, size, &pl, true);
        if (rc != -EAGAIN) break;
        pthread_mutex_unlock(&p->lock);
        sched_yield();
    }
    if (rc) {
        pthread_mutex_unlock(&p->lock);
        if (r) put_reader(p, r);
        return rc;
    }
    bool evicted = (m & ML_M_STATE) == ML_STATE_EVICTED;
    if (evicted) rc = ensure_started(p);
    pthread_mutex_unlock(&p->lock);
    /* 2. Without it: read and decode. The claim keeps the record and the
     *    place as they are. */
    bool io_failed = false, bad = false, mine = false;
    if (r && rc == 0) rc = reader_decode(p, r, idx, m, size, loc, pl.addr, &io_failed, &bad, &mine);
    if (r) put_reader(p, r);
    /* 3. Under the lock again: install, or give the place back. Without a
     *    reader (no memory, or no engine could be opened: out of file
     *    descriptors, io_uring limits), the pager's own engine, buffer and
     *    codec do the work under the lock, as before readers existed: an
     *    access does not fail for want of parallelism. */
    lock_as_waiter(p);
    if (rc == 0 && !mine)
        rc = decode_cold(p, p->codec, &p->io, p->bufs, idx, m, size, loc, pl.addr, &io_failed, &bad);
    page_in_end(p, idx, m, &pl, keep_copy, rc, io_failed, bad, t0, false);
    pthread_mutex_unlock(&p->lock);
    return rc;
}

/* ---- the cache of cold copies (pager lock held) ------------------------------------- */

/* ml_read of a cold entry decodes the whole record. The last RC_WAYS
 * copies are kept, so that reads taking a few cold entries in turn (two
 * `cat`s of the debug view, a program scanning some blobs piecewise)
 * decode each once. An entry is known by slot and generation; a page-in
 * or a free forgets it (a later eviction may write other bytes under the
 * same generation). Copies beyond the newest are kept only while all the
 * buffers hold at most RC_BYTES. */
static struct rc_ent *rc_find(ml_pager *p, uint32_t idx, uint32_t gen)
{
    for (int i = 0; i < RC_WAYS; i++)
        if (p->rc[i].valid && p->rc[i].idx == idx && p->rc[i].gen == gen) return &p->rc[i];
    return NULL;
}

static void rc_forget(ml_pager *p, uint32_t idx)
{
    for (int i = 0; i < RC_WAYS; i++)
        if (p->rc[i].valid && p->rc[i].idx == idx) p->rc[i].valid = false;
}

/* A buffer of at least size bytes (and at most twice that: a large buffer
 * is not kept alive behind a small copy) from an invalid entry, taken out
 * of the cache; its real size in *cap. NULL when none fits. */
static char *rc_take_buf(ml_pager *p, size_t size, size_t *cap)
{
    for (int i = 0; i < RC_WAYS; i++) {
        struct rc_ent *e = &p->rc[i];
        if (!e->valid && e->buf && e->cap >= size && e->cap / 2 <= size) {
            char *b = e->buf;
            *cap = e->cap;
            e->buf = NULL;
            e->cap = 0;
            return b;
        }
    }
    return NULL;
}

/* Give buf (cap bytes: its real size) to the cache: as the copy of
 * (idx, gen) when valid, else as an empty buffer for a later miss, kept
 * only if an entry has no buffer at all (an empty buffer never pushes a
 * copy out). It takes an entry without a buffer, else the oldest invalid
 * one, else the oldest copy; then other buffers go (empty ones first, then
 * the oldest copies) until all of them together hold at most RC_BYTES: the
 * newest always stays. */
static void rc_put(ml_pager *p, char *buf, size_t cap, bool valid, uint32_t idx, uint32_t gen)
{
    struct rc_ent *e = NULL;
    if (valid) rc_forget(p, idx); /* a concurrent miss of the same entry may have filled one */
    for (int i = 0; i < RC_WAYS && !e; i++)
        if (!p->rc[i].valid && !p->rc[i].buf) e = &p->rc[i];
    if (!e && !valid) {
        free(buf);
        return;
    }
    for (int pass = 0; pass < 2 && !e; pass++) /* the oldest invalid one, then the oldest copy */
        for (int i = 0; i < RC_WAYS; i++)
            if (p->rc[i].valid == (pass == 1) && (!e || p->rc[i].used < e->used)) e = &p->rc[i];
    free(e->buf);
    *e = (struct rc_ent){.idx = idx, .gen = gen, .valid = valid, .buf = buf, .cap = cap, .used = ++p->rc_tick};
    for (;;) {
        size_t held = 0;
        struct rc_ent *old = NULL;
        for (int i = 0; i < RC_WAYS; i++) {
            struct rc_ent *o = &p->rc[i];
            if (o == e || !o->buf) continue;
            held += o->cap;
            if (!old || o->valid < old->valid || (o->valid == old->valid && o->used < old->used)) old = o;
        }
        if (!old || held + cap <= RC_BYTES) break;
        free(old->buf);
        *old = (struct rc_ent){0};
    }
}

/* ---- reading a cold copy ------------------------------------------------------ */

static int read_cold(ml_arena *a, uint32_t idx, size_t off, void *dst, size_t len)
{
    ml_pager *p = pager_of(a);
    if (!p) return -EIO;
    lock_as_waiter(p);
    uint64_t m = ml__load(&a->slots[idx].meta);
    uint32_t gen = ML_HI_GEN(ml__hi(m));
    size_t size = a->slots[idx].size;
    struct rc_ent *hit = rc_find(p, idx, gen);
    if (hit) {
        memcpy(dst, hit->buf + off, len);
        hit->used = ++p->rc_tick;
        p->st.cold_reads++;
        pthread_mutex_unlock(&p->lock);
        return (int)len;
    }
    /* A miss: decode into a buffer of its own (an invalid entry's, taken
     * out of the cache, or a new one) without the lock, as a page-in does;
     * the claim ml_read holds keeps the record. */
    size_t cap = size;
    char *buf = rc_take_buf(p, size, &cap);
    uint64_t loc = ml__cold_loc(a, idx);
    int rc = (m & ML_M_STATE) == ML_STATE_EVICTED ? ensure_started(p) : 0;
    pthread_mutex_unlock(&p->lock);
    if (rc == 0 && !buf && !(buf = malloc(size))) rc = -ENOMEM;
    bool io_failed = false, bad = false, mine = false;
    reader *r = rc == 0 ? take_reader(p) : NULL;
    if (r) rc = reader_decode(p, r, idx, m, size, loc, buf, &io_failed, &bad, &mine);
    if (r) put_reader(p, r);
    lock_as_waiter(p);
    if (rc == 0 && !mine) /* no reader: the pager's own engine, under the lock */
        rc = decode_cold(p, p->codec, &p->io, p->bufs, idx, m, size, loc, buf, &io_failed, &bad);
    if (io_failed) p->st.io_errors++;
    if (bad) p->st.checksum_failures++;
    if (rc == 0) {
        memcpy(dst, buf + off, len);
        p->st.cold_reads++;
        p->st.cold_read_decodes++;
        rc = (int)len;
    }
    /* The copy joins the cache (a failed one's buffer is kept, empty, for
     * the next miss). */
    if (buf) rc_put(p, buf, cap, rc >= 0, idx, gen);
    pthread_mutex_unlock(&p->lock);
    return rc;
}

/* ---- freeing a cold entry ------------------------------------------------------- */

static void drop(ml_arena *a, uint32_t idx, uint64_t m)
{
    ml_pager *p = pager_of(a);
    lock_as_waiter(p);
    size_t size = a->slots[idx].size;
    uint64_t loc = ml__cold_loc(a, idx);
    if ((m & ML_M_STATE) == ML_STATE_EVICTED) {
        ml__swap_free(&p->swap, ml__swap_off(loc));
        p->st.now_evicted--;
        p->st.now_evicted_bytes -= size;
    } else {
        free_lane_blob(a, idx, m);
        p->st.now_compressed--;
        p->st.now_compressed_bytes -= size;
    }
    rc_forget(p, idx);
    pthread_mutex_unlock(&p->lock);
}

/* SlowLane bytes in use, as the lane sees them. */
static size_t lane_used(ml_arena *a, size_t *cap)
{
    ml_lane_t *l = &a->lanes[ML_LANE_SLOW];
    pthread_mutex_lock(&l->lock);
    size_t used = l->blocks_used_bytes + l->blob_units_total * ml__lane_unit(l);
    *cap = l->region.size;
    pthread_mutex_unlock(&l->lock);
    return used;
}

/* ---- choosing victims ------------------------------------------------------------ */

typedef struct cand {
    uint32_t idx;
    uint64_t last; /* last access, ns since arena creation */
} cand;

static int cmp_cand(const void *x, const void *y)
{
    const cand *a = x, *b = y;
    return (a->last > b->last) - (a->last < b->last);
}

/* Claim the coldest eligible entries (CLOCK: entries whose access bit is
 * clear first, by last access) until their lane bytes reach `bytes`, or
 * all idle at least `idle_ns` (when bytes is 0). Returns how many. */
static size_t pick(ml_pager *p, size_t bytes, uint64_t idle_ns, uint32_t keep, victim **out)
{
    ml_arena *a = p->a;
    uint32_t n = __atomic_load_n(&a->slot_count, __ATOMIC_ACQUIRE);
    uint64_t now = ml__now(a);
    cand *cs = NULL;
    size_t nc = 0, cap = 0;
    size_t est = 0;
    for (int pass = 0; pass < 2; pass++) {
        /* Pass 0: entries whose access bit is clear (not used since the last
         * cycle); pass 1, only if those are not enough: the others. */
        if (pass == 1 && (!bytes || est >= bytes)) break;
        for (uint32_t i = 0; i < n; i++) {
            if (i == keep) continue;
            uint64_t m = ml__load_acq(&a->slots[i].meta);
            if (!ml__meta_live(m) || (m & ML_M_LOCKED) || !eligible(a, i, m)) continue;
            if ((pass == 0) == ((m & ML_M_ACCESSED) != 0)) continue;
            if (nc == cap) {
                cap = cap ? cap * 2 : 256;
                cand *v = realloc(cs, cap * sizeof *v);
                if (!v) break;
                cs = v;
            }
            cs[nc++] = (cand){i, 0};
            est += ml__load(&a->slots[i].size);
        }
    }
    /* Claim them and read their last access under the claim. */
    size_t nclaimed = 0;
    for (size_t k = 0; k < nc; k++) {
        uint64_t m;
        if (!ml__try_claim_idx(a, cs[k].idx, &m)) continue;
        if (!eligible(a, cs[k].idx, m)) {
            ml__unclaim(a, cs[k].idx);
            continue;
        }
        ml_cold c;
        ml__cold_peek(a, cs[k].idx, m, &c);
        /* (used since the last cycle folded its bits, read-only or not:
         * not idle) */
        cs[nclaimed++] = (cand){cs[k].idx, (m & (ML_M_ACCESSED | ML_M_REFERENCED)) ? now : c.last_access_ns};
    }
    if (nclaimed) qsort(cs, nclaimed, sizeof *cs, cmp_cand); /* cs is NULL when there were none */
    victim *vs = calloc(nclaimed ? nclaimed : 1, sizeof *vs);
    size_t nv = 0, got = 0;
    for (size_t k = 0; k < nclaimed; k++) {
        uint32_t i = cs[k].idx;
        uint64_t m = ml__load(&a->slots[i].meta);
        /* (an entry created after `now` was read is not idle at all) */
        bool take = vs != NULL && (bytes ? got < bytes : cs[k].last < now && now - cs[k].last >= idle_ns);
        if (!take) {
            ml__unclaim(a, i);
            continue;
        }
        vs[nv++] = (victim){.idx = i, .m = m, .buf = -1, .blk = -1, .raw = (m & ML_M_NOCOMP) != 0};
        got += lane_bytes_of(a, i, m);
    }
    free(cs);
    *out = vs;
    return nv;
}

/* compress_one for a victim of the policies; one that does not compress is
 * marked so that its eviction stores it raw without trying zstd again, and
 * the entry (ML_M_NOCOMP) so that the policies do not try it again until it
 * is written: without that, a SlowLane full of incompressible blobs had
 * every allocation short of room run zstd over the same victims. */
static bool compress_victim(ml_pager *p, victim *v)
{
    ml_slot *s = &p->a->slots[v->idx];
    if (ml__load(&s->meta) & ML_M_NOCOMP) {
        v->raw = true;
        return false;
    }
    int rc = compress_one(p, v->idx);
    v->raw = rc == -EMSGSIZE;
    if (v->raw) {
        uint64_t cur = ml__load(&s->meta);
        while (!__atomic_compare_exchange_n(&s->meta, &cur, (cur | ML_M_NOCOMP) & ~ML_M_ACCESSED, true,
                                            __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
        }
    }
    /* Compressed or not, nothing is half done: a yieldable batch may let
     * waiting page-ins in here, every EVICT_CHUNK bytes of work. */
    p->chunk += p->a->slots[v->idx].size;
    if (p->chunk >= EVICT_CHUNK && p->yieldable && __atomic_load_n(&p->waiters, __ATOMIC_RELAXED)) {
        let_waiters_in(p);
        p->chunk = 0;
    }
    return rc == 0;
}

/* Make `bytes` of SlowLane free (make_room, page-in) or bring usage under
 * the low-water mark (pressure). Victims compress in RAM first when the
 * compressed stage is on and that frees enough, else go to disk. Returns
 * lane bytes freed. Caller holds the pager lock. */
static size_t make_room_locked(ml_pager *p, size_t bytes, uint32_t keep)
{
    ml_arena *a = p->a;
    size_t cap, start = lane_used(a, &cap), freed = 0;
    for (int round = 0; round < 2 && freed < bytes; round++) {
        victim *vs;
        size_t n = pick(p, bytes - freed, 0, keep, &vs);
        victim *todisk = n ? malloc(n * sizeof *todisk) : NULL;
        if (!n || !todisk) {
            for (size_t i = 0; i < n; i++) ml__unclaim(a, vs[i].idx);
            free(vs);
            free(todisk);
            break;
        }
        /* First round with the compressed stage: resident blobs are
         * compressed in RAM and records (colder) go to disk. Otherwise all
         * go to disk, and whatever cannot (no disk, budget full, I/O error)
         * is compressed in RAM instead. */
        bool stage = round == 0 && a->cfg.compressed_stage;
        size_t nd = 0;
        for (size_t i = 0; i < n; i++) {
            bool resident = (vs[i].m & ML_M_STATE) == ML_STATE_SLOW;
            bool clean = (ml__load(&a->slots[vs[i].idx].meta) & ML_M_CLEAN) != 0;
            if (stage && resident && !clean && compress_victim(p, &vs[i])) {
                ml__unclaim(a, vs[i].idx); /* done with it: see finish() */
                continue;
            }
            todisk[nd] = vs[i];
            todisk[nd++].early = true;
        }
        bool disk = nd && ensure_started(p) == 0;
        if (disk) evict_many(p, todisk, nd);
        for (size_t i = 0; i < nd; i++)
            if ((!disk || todisk[i].result) && a->cfg.compressed_stage && !todisk[i].raw &&
                (ml__load(&a->slots[todisk[i].idx].meta) & ML_M_STATE) == ML_STATE_SLOW)
                compress_one(p, todisk[i].idx);
        for (size_t i = 0; i < nd; i++)
            if (!todisk[i].unclaimed) ml__unclaim(a, todisk[i].idx);
        free(todisk);
        free(vs);
        size_t now = lane_used(a, &cap);
        freed = start > now ? start - now : 0;
    }
    return freed;
}

static size_t make_room(ml_arena *a, size_t bytes)
{
    ml_pager *p = pager_of(a);
    if (!p) return 0;
    lock_unpaused(p);
    size_t freed = make_room_locked(p, bytes, UINT32_MAX);
    pthread_mutex_unlock(&p->lock);
    return freed;
}

static void maintain(ml_arena *a)
{
    ml_pager *p = pager_of(a);
    if (!p) return;
    lock_unpaused(p); /* not inside another batch's hand-over */
    p->yieldable = true;
    p->chunk = 0;
    /* 1. Idle entries: compress (first stage) or evict, IDLE_CHUNK bytes
     *    of them at a time. Only the chunk at work stays claimed: an access
     *    to an entry further down the list must not wait for everything
     *    before it (a pin waited 0.2-0.3 s behind 40 blobs of 2 MiB). The rest
     *    are claimed again when their turn comes, and skipped if they were
     *    freed, pinned, or used meanwhile. */
    if (a->cfg.cold_after_ms) {
        uint64_t idle = (uint64_t)a->cfg.cold_after_ms * 1000000u;
        victim *vs;
        size_t n = pick(p, 0, idle, UINT32_MAX, &vs);
        size_t held = n, bytes = 0;
        for (size_t i = 0; i < n; i++) {
            if (i > 0 && bytes >= IDLE_CHUNK) {
                if (held == n) held = i;
                ml__unclaim(a, vs[i].idx);
                continue;
            }
            bytes += a->slots[vs[i].idx].size;
        }
        for (size_t from = 0; from < n;) {
            size_t to = from, k = from;
            bytes = 0;
            for (; to < n && (to == from || bytes < IDLE_CHUNK); to++) {
                victim v = vs[to];
                if (to >= held) {
                    uint64_t m;
                    if (!ml__try_claim_idx(a, v.idx, &m)) continue;
                    if (ML_HI_GEN(ml__hi(m)) != ML_HI_GEN(ml__hi(v.m)) || !eligible(a, v.idx, m) ||
                        (m & (ML_M_ACCESSED | ML_M_REFERENCED))) {
                        ml__unclaim(a, v.idx);
                        continue;
                    }
                    v.m = m;
                    v.raw = (m & ML_M_NOCOMP) != 0;
                }
                bytes += a->slots[v.idx].size;
                vs[k++] = v;
            }
            size_t nd = from;
            for (size_t i = from; i < k; i++) {
                bool resident = (vs[i].m & ML_M_STATE) == ML_STATE_SLOW;
                bool clean = (ml__load(&a->slots[vs[i].idx].meta) & ML_M_CLEAN) != 0;
                if (resident && !clean && a->cfg.compressed_stage && compress_victim(p, &vs[i])) {
                    ml__unclaim(a, vs[i].idx);
                    continue;
                }
                /* Compressed records (or blobs that do not compress) go to
                 * disk once idle twice as long. */
                vs[nd] = vs[i];
                vs[nd++].early = true;
            }
            if (nd > from && ensure_started(p) == 0) evict_many(p, vs + from, nd - from);
            for (size_t i = from; i < nd; i++)
                if (!vs[i].unclaimed) ml__unclaim(a, vs[i].idx);
            from = to;
        }
        free(vs);
    }
    /* 2. Pressure, with hysteresis. */
    size_t cap, used = lane_used(a, &cap);
    double hi = a->cfg.slow_lane_usage_threshold, lo = hi - a->cfg.evict_hysteresis;
    if ((double)used > hi * (double)cap) make_room_locked(p, used - (size_t)(lo * (double)cap), UINT32_MAX);
    p->yieldable = false;
    pthread_mutex_unlock(&p->lock);
}

static void drop_copy(ml_arena *a, uint32_t idx, uint64_t m)
{
    (void)m;
    ml_pager *p = pager_of(a);
    if (!p) return;
    lock_as_waiter(p);
    drop_copy_locked(p, idx);
    pthread_mutex_unlock(&p->lock);
}

static const ml_pager_ops ops = {attach, detach, page_in, drop_copy, read_cold, drop, make_room, maintain};

__attribute__((constructor)) static void register_pager(void) { ml__pager_register(&ops); }

/* ---- public API ------------------------------------------------------------------- */

int ml_paging_stats_get(ml_arena *a, ml_paging_stats *out)
{
    if (!a || !out) return -EINVAL;
    ml_pager *p = pager_of(a);
    if (!p) {
        memset(out, 0, sizeof *out);
        snprintf(out->engine, sizeof out->engine, "none");
        return 0;
    }
    lock_as_waiter(p);
    *out = p->st;
    if (p->started) out->swap_used = p->swap.used * ML_SWAP_BLOCK;
    out->cold_copy_bytes = 0; /* what the buffers really hold, not what the cache thinks */
    for (int i = 0; i < RC_WAYS; i++)
        if (p->rc[i].buf) out->cold_copy_bytes += malloc_usable_size(p->rc[i].buf);
    pthread_mutex_unlock(&p->lock);
    return 0;
}

/* Claim h for an explicit compress/evict: a SlowLane blob, unpinned. */
static int claim_victim(ml_arena *a, ml_handle h, uint64_t *m)
{
    if (!a) return -EINVAL;
    if (!pager_of(a)) return -EINVAL;
    int rc = ml__claim(a, h, ML_CLAIM_ANY, m);
    if (rc) return rc;
    uint64_t st = *m & ML_M_STATE;
    if (!(*m & ML_M_BLOB) || st == ML_STATE_FAST) rc = -EINVAL;
    else if (*m & ML_M_PINS) rc = -EBUSY;
    if (rc) ml__unclaim(a, ml__idx(h));
    return rc;
}

int ml_evict(ml_arena *a, ml_handle h)
{
    if (a) ML_DEBUG_POINT(a, 1u << ML_LANE_SLOW, ml__idx(h));
    uint64_t m;
    int rc = claim_victim(a, h, &m);
    if (rc) return rc;
    uint32_t idx = ml__idx(h);
    ml_pager *p = pager_of(a);
    if ((m & ML_M_STATE) == ML_STATE_EVICTED) rc = -EALREADY;
    else {
        lock_as_waiter(p);
        rc = ensure_started(p);
        if (rc == 0) {
            victim v = {.idx = idx, .m = m, .buf = -1, .blk = -1};
            evict_many(p, &v, 1);
            rc = v.result;
        }
        pthread_mutex_unlock(&p->lock);
    }
    ml__unclaim(a, idx);
    return rc;
}

int ml_evict_many(ml_arena *a, const ml_handle *hs, size_t n)
{
    if (!a || (!hs && n) || !pager_of(a)) return -EINVAL;
    ML_DEBUG_POINT(a, 1u << ML_LANE_SLOW, UINT32_MAX);
    ml_pager *p = pager_of(a);
    victim *vs = calloc(n ? n : 1, sizeof *vs);
    ml_handle *hv = malloc((n ? n : 1) * sizeof *hv);
    uint64_t *ms = malloc((n ? n : 1) * sizeof *ms);
    if (!vs || !hv || !ms) {
        free(vs);
        free(hv);
        free(ms);
        return -ENOMEM;
    }
    memcpy(hv, hs, n * sizeof *hv);
    size_t got = ml__claim_many(a, hv, n, ms), nv = 0;
    for (size_t i = 0; i < got; i++) {
        if (!eligible(a, ml__idx(hv[i]), ms[i])) ml__unclaim(a, ml__idx(hv[i]));
        else vs[nv++] = (victim){.idx = ml__idx(hv[i]), .m = ms[i], .buf = -1, .blk = -1, .early = true};
    }
    free(hv);
    free(ms);
    lock_unpaused(p); /* not inside another batch's hand-over */
    int rc = nv ? ensure_started(p) : 0;
    int done = 0, err = 0;
    if (rc == 0 && nv) {
        p->yieldable = true;
        p->chunk = 0;
        evict_many(p, vs, nv);
        p->yieldable = false;
        for (size_t i = 0; i < nv; i++) {
            if (vs[i].result == 0) done++;
            else if (!err) err = vs[i].result;
        }
    }
    pthread_mutex_unlock(&p->lock);
    for (size_t i = 0; i < nv; i++)
        if (!vs[i].unclaimed) ml__unclaim(a, vs[i].idx);
    free(vs);
    if (rc) return rc;
    return done || !err ? done : err;
}

int ml_compress(ml_arena *a, ml_handle h)
{
    if (a) ML_DEBUG_POINT(a, 1u << ML_LANE_SLOW, ml__idx(h));
    uint64_t m;
    int rc = claim_victim(a, h, &m);
    if (rc) return rc;
    uint32_t idx = ml__idx(h);
    ml_pager *p = pager_of(a);
    if ((m & ML_M_STATE) != ML_STATE_SLOW) rc = -EALREADY;
    else {
        lock_as_waiter(p);
        rc = compress_one(p, idx);
        pthread_mutex_unlock(&p->lock);
    }
    ml__unclaim(a, idx);
    return rc;
}

/* ---- prefetch: a read stream with parallel decoding --------------------------- */

typedef struct pf {
    uint32_t idx;
    uint64_t m;
    uint64_t seq; /* its newest record's sequence number */
    size_t size, off, len;
    ml_place pl;
    int rc;
} pf;

/* Decoder threads (one per spare core, at most 3) take completed reads from
 * a queue, check and decode them, and hand them back; the prefetching
 * thread decodes too whenever it has nothing else to do. */
typedef struct decoders {
    ml_pager *p;
    pthread_mutex_t mu;
    pthread_cond_t work, done;
    struct job {
        pf *f;
        unsigned buf;
    } q[MAX_BUFS], out[MAX_BUFS];
    unsigned nq, nout, busy;
    bool stop;
    unsigned nthreads;
    pthread_t th[3];
} decoders;

static void decode_job(ml_pager *p, ml_codec *codec, struct job *j)
{
    pf *f = j->f;
    if (f->rc == 0)
        f->rc = check_record(codec, f->idx, f->m, f->seq, f->size, p->bufs + (size_t)j->buf * BUF_BYTES, f->len,
                             f->pl.addr);
}

static void *decoder_main(void *arg)
{
    decoders *d = arg;
    ml_codec *codec = ml__codec_new(1);
    pthread_mutex_lock(&d->mu);
    for (;;) {
        while (!d->nq && !d->stop) pthread_cond_wait(&d->work, &d->mu);
        if (!d->nq) break;
        struct job j = d->q[--d->nq];
        d->busy++;
        pthread_mutex_unlock(&d->mu);
        if (codec) decode_job(d->p, codec, &j);
        else if (j.f->rc == 0) j.f->rc = -ENOMEM;
        pthread_mutex_lock(&d->mu);
        d->busy--;
        d->out[d->nout++] = j;
        pthread_cond_signal(&d->done);
    }
    pthread_mutex_unlock(&d->mu);
    ml__codec_free(codec);
    return NULL;
}

static decoders *decoders_start(ml_pager *p)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned n = cpus > 1 ? (unsigned)(cpus - 1) : 0;
    if (n > 3) n = 3;
    if (!n) return NULL;
    decoders *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    d->p = p;
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->work, NULL);
    pthread_cond_init(&d->done, NULL);
    for (unsigned i = 0; i < n; i++)
        if (pthread_create(&d->th[d->nthreads], NULL, decoder_main, d) == 0) d->nthreads++;
    return d;
}

static void decoders_stop(decoders *d)
{
    if (!d) return;
    pthread_mutex_lock(&d->mu);
    d->stop = true;
    pthread_cond_broadcast(&d->work);
    pthread_mutex_unlock(&d->mu);
    for (unsigned i = 0; i < d->nthreads; i++) pthread_join(d->th[i], NULL);
    pthread_cond_destroy(&d->work);
    pthread_cond_destroy(&d->done);
    pthread_mutex_destroy(&d->mu);
    free(d);
}

/* Finish a decoded read: install it, or give its place back. Frees its
 * buffer. Caller holds the pager lock. */
static void settle(ml_pager *p, struct job *j, int *brought, int *first_err)
{
    pf *f = j->f;
    p->busy[j->buf] = false;
    if (f->rc) {
        if (f->rc == -EBADMSG) p->st.checksum_failures++;
        give_back_place(p->a, &f->pl);
        if (!*first_err) *first_err = f->rc;
        return;
    }
    installed(p, f->idx, f->m, &f->pl, true);
    p->st.prefetched++; /* (not a page-in on access) */
    (*brought)++;
}

/* Hand a completed read to the decoders (or decode it here without them). */
static void completed(ml_pager *p, decoders *d, struct job j, size_t *decoding, int *brought, int *first_err)
{
    if (!d) {
        decode_job(p, p->codec, &j);
        settle(p, &j, brought, first_err);
        return;
    }
    pthread_mutex_lock(&d->mu);
    d->q[d->nq++] = j;
    (*decoding)++;
    pthread_cond_signal(&d->work);
    pthread_mutex_unlock(&d->mu);
}

/* Completed reads of a chunk go to the decoders; their buffers' owners
 * are forgotten. */
static void take_reads(ml_pager *p, decoders *d, pf **owner, const ml_io_cqe *cq, int got, size_t *reading,
                       size_t *decoding, int *brought, int *first_err)
{
    for (int i = 0; i < got; i++) {
        unsigned b = (unsigned)cq[i].tag;
        pf *f = b < MAX_BUFS ? owner[b] : NULL;
        if (!f) continue; /* a late completion of a read already given up (an engine that broke and stayed) */
        owner[b] = NULL;
        (*reading)--;
        f->rc = cq[i].res == (long)f->len ? 0 : (p->st.io_errors++, cq[i].res < 0 ? (int)cq[i].res : -EIO);
        completed(p, d, (struct job){f, b}, decoding, brought, first_err);
    }
}

/* The engine failed (err): the reads it holds will never complete, and,
 * unless `go_on`, the chunk's entries not read yet are not tried. Their
 * records stay on disk and their places go back. */
static void lose_reads(ml_pager *p, pf *ch, size_t cn, size_t *next, pf **owner, size_t *reading, int *first_err,
                       int err, bool go_on)
{
    for (unsigned b = 0; b < p->nbufs; b++)
        if (p->busy[b] && owner[b]) {
            p->busy[b] = false;
            give_back_place(p->a, &owner[b]->pl);
            owner[b] = NULL;
        }
    for (; !go_on && *next < cn; (*next)++) give_back_place(p->a, &ch[*next].pl);
    if (!*first_err) *first_err = err;
    *reading = 0;
}

/* The engine failed as a whole (a reap said err): replace it, and lose
 * the chunk's reads (lose_reads). */
static void engine_broke(ml_pager *p, pf *ch, size_t cn, size_t *next, pf **owner, size_t *reading, int *first_err,
                         int err)
{
    renew_engine(p);
    lose_reads(p, ch, cn, next, owner, reading, first_err, err, false);
}

static void stream_chunk(ml_pager *p, decoders *d, pf *ch, size_t cn, int *brought, int *first_err)
{
    size_t next = 0, reading = 0, decoding = 0;
    unsigned refused = 0; /* submissions in a row the engine did not take whole */
    pf *owner[MAX_BUFS] = {0};
    ml_io_cqe cq[MAX_BUFS];
    for (;;) {
        /* 1. Every free buffer takes the next read. */
        bool queued = false;
        for (unsigned b = 0; b < p->nbufs && next < cn; b++) {
            if (p->busy[b]) continue;
            pf *f = &ch[next];
            int rc = p->io->ops->read(p->io, p->bufs + (size_t)b * BUF_BYTES, f->len, f->off, (int)b, b);
            if (rc == -EAGAIN) break;
            next++;
            if (rc) {
                give_back_place(p->a, &f->pl);
                if (!*first_err) *first_err = rc;
                continue;
            }
            p->busy[b] = true;
            owner[b] = f;
            reading++;
            queued = true;
        }
        int sub = queued ? p->io->ops->submit(p->io) : 0;
        if (sub < 0) {
            /* Some reads were not handed over, and never will be: take
             * the completions of those that were, then the rest failed.
             * The chunk goes on unless that keeps happening (or the engine
             * broke). */
            int got = 0;
            while (reading && p->io->inflight && (got = p->io->ops->reap(p->io, cq, MAX_BUFS, p->io->inflight)) > 0)
                take_reads(p, d, owner, cq, got, &reading, &decoding, brought, first_err);
            if (got < 0) engine_broke(p, ch, cn, &next, owner, &reading, first_err, got);
            else lose_reads(p, ch, cn, &next, owner, &reading, first_err, sub,
                            ++refused < REFUSALS_MAX && !p->io->inflight);
        } else if (queued) {
            refused = 0;
        }
        /* 2. Settle what the decoders finished (frees their buffers). */
        if (d) {
            struct job fin[MAX_BUFS];
            pthread_mutex_lock(&d->mu);
            unsigned nf = d->nout;
            memcpy(fin, d->out, nf * sizeof *fin);
            d->nout = 0;
            pthread_mutex_unlock(&d->mu);
            for (unsigned i = 0; i < nf; i++) settle(p, &fin[i], brought, first_err);
            decoding -= nf;
            if (nf) continue; /* buffers came free: refill first */
        }
        if (!reading && !decoding && next >= cn) break;
        /* 3. Completed reads go to the decode queue. */
        int got = reading ? p->io->ops->reap(p->io, cq, MAX_BUFS, 0) : 0;
        if (got < 0) {
            engine_broke(p, ch, cn, &next, owner, &reading, first_err, got);
            got = 0;
        }
        take_reads(p, d, owner, cq, got, &reading, &decoding, brought, first_err);
        /* 4. Decode one here if any is waiting; otherwise wait for a read or
         * for a decoder. */
        if (d) {
            struct job mine = {NULL, 0};
            pthread_mutex_lock(&d->mu);
            if (d->nq) {
                mine = d->q[--d->nq];
                d->busy++;
            }
            pthread_mutex_unlock(&d->mu);
            if (mine.f) {
                decode_job(p, p->codec, &mine);
                pthread_mutex_lock(&d->mu);
                d->busy--;
                d->out[d->nout++] = mine;
                pthread_mutex_unlock(&d->mu);
                continue;
            }
        }
        if (got) continue;
        if (reading && (!d || !decoding)) {
            got = p->io->ops->reap(p->io, cq, MAX_BUFS, 1);
            if (got < 0) {
                engine_broke(p, ch, cn, &next, owner, &reading, first_err, got);
                got = 0;
            }
            take_reads(p, d, owner, cq, got, &reading, &decoding, brought, first_err);
        } else if (d && decoding) {
            pthread_mutex_lock(&d->mu);
            while (!d->nout && !d->nq && d->busy) pthread_cond_wait(&d->done, &d->mu);
            pthread_mutex_unlock(&d->mu);
        }
    }
}

static int cmp_u32(const void *x, const void *y)
{
    uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;
    return (a > b) - (a < b);
}

/* One pass of ml_prefetch over hs: adds the entries brought back to
 * *brought and keeps the first error in *first_err; the slots of entries
 * that found no place in SlowLane go to no_room (room for n), their count
 * to *nno_room.
 * A retry pass (`only`: the sorted slots the first pass found no place
 * for) brings back only those, and keeps every resident entry of hs claimed
 * until it ends: the ones the first pass brought back are the coldest
 * entries there are, and making room for the others must not evict them. */
static void prefetch_pass(ml_arena *a, ml_pager *p, const ml_handle *hs, size_t n, const uint32_t *only,
                          size_t nonly, uint32_t *no_room, size_t *nno_room, int *brought_out,
                          int *first_err_out)
{
    int brought = 0, first_err = 0;
    /* Claim the cold ones (waiting for claims held elsewhere). */
    uint32_t *cold = malloc((n ? 3 * n : 1) * sizeof *cold);
    ml_handle *hv = malloc((n ? n : 1) * sizeof *hv);
    uint64_t *ms = malloc((n ? n : 1) * sizeof *ms);
    uint64_t *last = malloc((n ? n : 1) * sizeof *last); /* where each cold one's data last was */
    if (!cold || !hv || !ms || !last) {
        free(cold);
        free(hv);
        free(ms);
        free(last);
        if (!*first_err_out) *first_err_out = -ENOMEM;
        return;
    }
    uint32_t *rest = cold + n; /* the ones read in batches */
    uint32_t *held = cold + 2 * n; /* a retry's resident ones */
    size_t nheld = 0;
    memcpy(hv, hs, n * sizeof *hv);
    size_t nclaimed = ml__claim_many(a, hv, n, ms), nc = 0;
    for (size_t i = 0; i < nclaimed; i++) {
        uint32_t idx = ml__idx(hv[i]);
        if (only && (ms[i] & ML_M_RESIDENT)) held[nheld++] = idx;
        else if ((ms[i] & ML_M_RESIDENT) || (only && !bsearch(&idx, only, nonly, sizeof *only, cmp_u32)))
            ml__unclaim(a, idx);
        else {
            last[nc] = ml__load(&a->slots[idx].addr);
            cold[nc++] = idx;
        }
    }
    free(hv);
    free(ms);
    /* A batch itself: it does not start inside another batch's hand-over. */
    lock_unpaused(p);
    uint64_t t0 = mono_ns(), handed = 0;
    /* Records in RAM, and records too big for a bounce buffer, one by one. */
    size_t nr = 0;
    for (size_t k = 0; k < nc; k++) {
        uint32_t idx = cold[k];
        uint64_t m = ml__load(&a->slots[idx].meta);
        uint64_t loc = ml__cold_loc(a, idx);
        if ((m & ML_M_STATE) == ML_STATE_COMPRESSED || (size_t)ml__swap_len(loc) * ML_SWAP_BLOCK > BUF_BYTES) {
            p->chunk += a->slots[idx].size;
            if (p->chunk >= EVICT_CHUNK) {
                handed += yield_point(p);
                p->chunk = 0;
            }
            bool no_place = false;
            int rc = page_in_locked(p, idx, true, &no_place);
            if (rc == 0) brought++;
            else if (!first_err) first_err = rc;
            if (no_place) no_room[(*nno_room)++] = idx; /* (not a failed buffer or engine) */
        } else {
            rest[nr++] = idx;
        }
    }
    /* The rest stream through the bounce buffers in chunks: first every
     * entry of a chunk gets its place in SlowLane (making room may evict,
     * which uses the ring, so no read may be in flight then); then reads
     * keep the buffers busy, and as each completes its record is checked
     * and decoded into place (by this thread or a decoder thread: zstd is
     * the bottleneck), after which its buffer takes the next read. */
    const size_t chunk = 256;
    pf *ch = nr ? malloc(chunk * sizeof *ch) : NULL;
    int start_rc = !nr ? 0 : !ch ? -ENOMEM : ensure_started(p);
    if (start_rc && !first_err) first_err = start_rc; /* (those stay cold, intact) */
    decoders *dec = !start_rc && nr > 2 * (size_t)p->nbufs ? decoders_start(p) : NULL;
    for (size_t k0 = 0; k0 < nr && !start_rc; k0 += chunk) {
        if (k0 && (start_rc = ensure_started(p)) != 0) { /* (an engine lost on the way) */
            if (!first_err) first_err = start_rc;
            break;
        }
        /* Between chunks nothing is in flight and every buffer is free:
         * let waiting page-ins in, so that a long prefetch holds them up
         * for one chunk at most. (Only here: evictions made to place this
         * prefetch's entries keep the lock.) */
        if (k0) handed += yield_point(p);
        size_t cn = 0;
        for (size_t k = k0; k < nr && k < k0 + chunk; k++) {
            uint32_t idx = rest[k];
            uint64_t m = ml__load(&a->slots[idx].meta);
            if (place_back(p, idx, m, a->slots[idx].size, &ch[cn].pl, false) != 0) {
                if (!first_err) first_err = -ENOMEM;
                no_room[(*nno_room)++] = idx;
                continue;
            }
            ch[cn].idx = idx;
            ch[cn].m = m;
            ch[cn].seq = a->cold[idx].rec_seq;
            ch[cn].size = a->slots[idx].size;
            uint64_t loc = ml__cold_loc(a, idx);
            ch[cn].off = ml__swap_off(loc) * ML_SWAP_BLOCK;
            ch[cn].len = (size_t)ml__swap_len(loc) * ML_SWAP_BLOCK;
            cn++;
        }
        stream_chunk(p, dec, ch, cn, &brought, &first_err);
    }
    decoders_stop(dec);
    free(ch);
    p->st.pagein_ns += mono_ns() - t0 - handed;
    pthread_mutex_unlock(&p->lock);
    /* The ones that came back are moves: numbered under their claims,
     * reported once none is held. */
    ml_moves mv = {0};
    for (size_t i = 0; i < nc; i++) {
        uint64_t m = ml__load(&a->slots[cold[i]].meta);
        ml_move ev;
        if ((m & ML_M_RESIDENT) && ml__pagein_report(a, cold[i], m, last[i], &ev)) ml__moves_add(&mv, &ev);
        ml__unclaim(a, cold[i]);
    }
    for (size_t i = 0; i < nheld; i++) ml__unclaim(a, held[i]);
    ml__moves_fire(a, &mv);
    free(last);
    free(cold);
    *brought_out += brought;
    if (!*first_err_out) *first_err_out = first_err;
}

int ml_prefetch(ml_arena *a, const ml_handle *hs, size_t n)
{
    if (!a || (!hs && n)) return -EINVAL;
    ml_pager *p = pager_of(a);
    if (!p) return 0;
    ML_DEBUG_POINT(a, 1u << ML_LANE_SLOW, UINT32_MAX);
    int brought = 0, first_err = 0;
    uint32_t *no_room = malloc((n ? 2 * n : 1) * sizeof *no_room);
    if (!no_room) return -ENOMEM;
    size_t nno_room = 0, nagain = 0;
    prefetch_pass(a, p, hs, n, NULL, 0, no_room, &nno_room, &brought, &first_err);
    /* Entries that found no place may fit once SlowLane's free pieces are
     * joined, as on access: compact it once (nothing claimed: compaction
     * calls the program's move callback) and try those again, and only
     * those. */
    if (nno_room && ml__compact_for_room(a, ML_LANE_SLOW)) {
        qsort(no_room, nno_room, sizeof *no_room, cmp_u32);
        int again_err = 0;
        prefetch_pass(a, p, hs, n, no_room, nno_room, no_room + n, &nagain, &brought, &again_err);
        if (!brought) first_err = again_err ? again_err : first_err;
    }
    free(no_room);
    return brought ? brought : first_err;
}

/* ---- test seam -------------------------------------------------------------------- */

int ml__arena_create_io(const ml_config *cfg, ml_io_open_fn open_io, void *ctx, ml_arena **out)
{
    pending_open = open_io;
    pending_ctx = ctx;
    int rc = ml_arena_create(cfg, out);
    pending_open = NULL;
    pending_ctx = NULL;
    return rc;
}
