/*
 * debugfs.h — see a live MemoryLane heap as files (FUSE).
 *
 * Link //:memorylane_debugfs (or -lmemorylane_debugfs) in addition to the
 * library; programs that do not want FUSE never link libfuse.
 *
 * ml_debugfs_mount mounts a read-only filesystem at a directory and serves it
 * from threads of its own, inside the program that owns the arena. It is a pure
 * client of the public API (introspection, ml_read, statistics, events): it
 * shows nothing a program could not get itself, and it never writes, frees
 * or moves memory. Reading a cold (compressed or evicted) handle's data
 * decompresses a copy; it does not bring the handle back.
 *
 * Layout (every file: "key value" lines unless said otherwise):
 *
 *   arena/config                the configuration the arena runs with
 *   arena/stats                 arena-wide statistics
 *   lanes/fast/stats            per-lane statistics
 *   lanes/fast/map              one line per extent: offset length kind,
 *                               then per kind: "blob id=<id>", "span
 *                               block_size=<n> blocks=<n> used=<n>", "free"
 *   lanes/slow/stats, lanes/slow/map
 *   paging/stats                paging counters and the I/O engine
 *   handles/<id>/state          one word: fast slow compressed evicted
 *   handles/<id>/info           lane size generation pins tag group created
 *                               last_access accesses migrations ... kind
 *                               (blob: paging may compress or evict it;
 *                               block: it stays resident)
 *   handles/<id>/data           the bytes (size = the allocation's size)
 *   groups/<name>/<id>          one entry per member handle (a symlink to
 *                               ../../handles/<id>)
 *   tags/<tag>/<id>             likewise, per tag
 *   events                      recent lifecycle events, oldest first, one
 *                               per line: seq time_ns kind id bytes count
 *                               from to (the fields of ml_event; kind as
 *                               ml_event_name, from and to as ml_lane_name):
 *                               at most the ring's capacity of consecutive
 *                               events, as the ring held them when opened
 *
 * <id> is the signed handle ID (ml_handle_id): positive for handles born in
 * FastLane, negative for SlowLane. Modes are 0500 for directories and 0400
 * for files, owned by the mounting user. FUSE lets only that user in, root
 * included, unless the mount has allow_other (see ml_debugfs_options): then
 * root gets in too, and other users still stop at the modes.
 * Unknown or malformed paths get ENOENT; writes get EROFS (or EACCES).
 * A handle freed while its data file is open gives ESTALE on the next read,
 * and on fstat of that descriptor until the handle's ID lives again in a
 * new handle: FUSE sends fstat as a stat of the path, and the path-based
 * API gives the old descriptor and the path one inode, so fstat then
 * answers for the new handle (its size). Reads through the old descriptor
 * stay ESTALE: they never show the new handle's bytes. Text files of a
 * handle (info, state) that a reader holds open are snapshots of that
 * handle; once its ID is reused, a stat or new open of the path shows the
 * new handle.
 * File sizes are exact (unless the mount caches attributes: cache_ms),
 * so cat, cp, tar and hexdump work; data reads at any offset. A reader
 * sees a text file as one consistent snapshot: while it has the file open,
 * its stat and fstat give the snapshot's size, and its first open of the
 * file just after a stat (within 0.1 s) reads the content that stat
 * measured. "Reader" means process (any of its threads): FUSE names the
 * calling thread, and the view looks up its process in /proc. Callers in
 * another pid namespace (FUSE names none) get no such memory. A text file (all but data) is a snapshot taken when it is
 * opened: an open events file does not grow; open it again to see new
 * events.
 */
#ifndef MEMORYLANE_DEBUGFS_H
#define MEMORYLANE_DEBUGFS_H

#include "memorylane/memorylane.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ml_debugfs ml_debugfs;

/** Options of a debug mount; zero-initialise, then set what you need. */
typedef struct ml_debugfs_options {
    /** Capacity of the events ring the mount turns on (0 = 4096; at most
     *  2^24). If the ring is on already (turned on by the program with
     *  ml_events_enable, or by another mount of the same arena), the view
     *  uses it as it is and this is ignored. The ring stays on after the
     *  last unmount only if the program had turned it on before the first
     *  mount. */
    size_t events_capacity;
    /** FUSE allow_other: let root (sudo, a tool run as root) into a view
     *  mounted by another user; other users still stop at the view's modes.
     *  Without root it needs user_allow_other in /etc/fuse.conf (else the
     *  mount fails with -EPERM). Default false. */
    bool allow_other;
    /** Print FUSE's own debug output to stderr. Default false. */
    bool debug;
    /** How long, in milliseconds, the kernel may cache the view's names and
     *  attributes (at most ML_DEBUGFS_CACHE_MS_MAX). 0, the default: nothing
     *  is cached, every stat asks the view, and a freed handle disappears at
     *  once. A positive value makes whole-tree walks (find, ls -lR, du,
     *  tar) several times faster: listings carry each entry's attributes
     *  (readdirplus), and lookups and stats are answered by the kernel for
     *  that long. The price, staleness:
     *  - a freed handle's directory may still answer stat (opening its
     *    files then fails with ENOENT, reading an open one with ESTALE);
     *  - a size may be old: attributes come from the listing taken when the
     *    directory was opened (or rewound), so they can be as old as that
     *    plus cache_ms. An ID reused by a new handle may show the old
     *    handle's data size while reads return the new one's bytes, and
     *    tools that seek by size (tail) may miss the newest lines of
     *    `events`, or print a cut-off last line or nothing: read it whole
     *    (cat events | tail).
     *  A new handle shows at once either way (names not found are never
     *  cached), and contents are always read live. libfuse (3.14) keeps a
     *  small record for the last entry of each full listing batch until
     *  unmount; IDs are reused, so these are bounded by the names seen. */
    unsigned cache_ms;
    /** How many threads serve the view (0 = 1; at most
     *  ML_DEBUGFS_THREADS_MAX). With more than one, a slow request (a large
     *  listing rendered, a cold blob decompressed for a read) does not hold
     *  up the others: a walk in one terminal and a `cat` in another go on
     *  side by side. The price: the threads take turns waiting for
     *  requests, and handing each request over costs a few context
     *  switches, so a single walk is slower (`ls -lR` about twice as slow
     *  on two cores). Idle threads sleep and cost nothing. If the system
     *  refuses to create some of them, fewer serve. */
    unsigned threads;
} ml_debugfs_options;

/** The largest ml_debugfs_options.cache_ms (one minute). */
#define ML_DEBUGFS_CACHE_MS_MAX 60000u
/** The largest ml_debugfs_options.threads. */
#define ML_DEBUGFS_THREADS_MAX 16u

/**
 * Mount the debug view of `arena` at `mountpoint` (an existing, empty
 * directory) and serve it from new threads (options->threads, named
 * "ml_debugfs").
 * @param options  NULL for defaults.
 * @param out      receives the mount; untouched on failure.
 * Without root, libfuse mounts through the setuid fusermount3 helper (and
 * ml_debugfs_unmount unmounts through `fusermount3 -u`); the caller needs
 * read-write access to /dev/fuse (mode 0666 on usual systems) and write
 * access to the mount point.
 * @return 0; -EINVAL (NULL arena/mountpoint/out, empty mountpoint,
 *         events_capacity over 2^24, cache_ms over ML_DEBUGFS_CACHE_MS_MAX,
 *         threads over ML_DEBUGFS_THREADS_MAX), -ENOENT/-ENOTDIR (mountpoint; other
 *         codes of stat(2), realpath(3) and opendir(3) on it pass on too),
 *         -ENOTEMPTY (mountpoint has entries: the view would hide them), -EBUSY
 *         (already mounted there, or a dead FUSE mount there), -EPERM/-EACCES
 *         (no permission to mount, allow_other refused by fusermount3, or
 *         /dev/fuse closed to the caller), -ENODEV (no FUSE device),
 *         -ENOMEM.
 * Thread-safe. The arena must outlive the mount: unmount before
 * ml_arena_destroy.
 *
 * Reading the view from the program that serves it works, but a program
 * killed while one of its own threads waits for an answer from the view
 * cannot finish dying: the kernel waits for the answer, and the thread
 * that would give it is gone. The process stays a zombie, `ls` on the
 * mount hangs, and `fusermount3 -u` says "busy". Only aborting the FUSE
 * connection ends it: as root, `umount -f MOUNTPOINT`, or
 * `echo 1 > /sys/fs/fuse/connections/N/abort` (mount fusectl there first:
 * `mount -t fusectl none /sys/fs/fuse/connections`; N is the minor number
 * of the mount's device: `mountpoint -d MOUNTPOINT` prints MAJOR:MINOR),
 * then `fusermount3 -u`.
 * Read the view from another process where a kill is likely.
 */
ML_API int ml_debugfs_mount(ml_arena *arena, const char *mountpoint,
                            const ml_debugfs_options *options, ml_debugfs **out);

/**
 * Unmount and stop the serving threads: a real unmount (no lazy detach),
 * waiting for requests in progress to be answered, so that no thread is
 * left blocked and no stale mount stays behind. NULL is ignored. Safe to
 * call while another process is reading the view. If a file stays open (or
 * a working directory inside) for a grace period (500 ms), the connection is
 * aborted (its holders get errors from then on) and the mount, still held,
 * is detached. It first waits (within the same grace period) for the
 * releases of directories just closed, which the kernel sends after close
 * returns: one lost to the unmount would leak libfuse's record of that
 * open directory (one batch of the listing: up to 32 KiB with glibc's
 * readdir, however long the listing). A directory
 * still open when the connection is aborted leaks that record all the same
 * (libfuse's high-level API offers no way to free it).
 * @return 0 (nothing held the view: a clean unmount); -EBUSY (something
 *         held it through the grace period: the connection was aborted,
 *         so its readers got errors, and the mount was removed, detached
 *         if still held; nothing is left mounted); -EPERM (or another negative errno) if the unmount
 *         failed and the mount remains (without root: fusermount3 could
 *         not unmount it). The threads are stopped and fs is freed either way.
 * Call it once per mount: fs must not be used afterwards, so it must not
 * run twice on the same mount, nor concurrently with itself or with
 * ml_debugfs_mountpoint on that mount.
 */
ML_API int ml_debugfs_unmount(ml_debugfs *fs);

/** The mount point of a mount, as given to ml_debugfs_mount; NULL for a
 *  NULL fs. The string belongs to the mount and is freed by
 *  ml_debugfs_unmount. Thread-safe, but not concurrently with
 *  ml_debugfs_unmount of the same mount. */
ML_API const char *ml_debugfs_mountpoint(const ml_debugfs *fs);

#ifdef __cplusplus
}
#endif

#endif
