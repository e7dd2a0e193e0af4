/*
 * config.c — defaults, validation, and the names of things.
 *
 * Validation returns a sentence, not a print: ml_config_check hands the
 * first problem to the caller, and ml_arena_create refuses with -EINVAL for
 * exactly the same reasons (it calls the same function).
 */
#include <errno.h>
#include <limits.h>
#include <string.h>

#include "core/prim.h"
#include "memorylane/memorylane.h"

#define MiB ((size_t)1 << 20)

const char *ml_version(void) { return "0.7.0"; }

void ml_config_init(ml_config *cfg)
{
    if (!cfg) return;
    memset(cfg, 0, sizeof *cfg);
    cfg->fast_lane_size = 16 * MiB;
    cfg->fast_lane_max_size = 0;
    cfg->slow_lane_size = 64 * MiB;
    cfg->slow_lane_max_size = 0;
    cfg->threshold = 4096;
    cfg->failover_to_slow = true;
    cfg->lock_lanes = false;
    cfg->enable_auto_compaction = true;
    cfg->compaction_threshold = 0.5;
    cfg->slow_lane_usage_threshold = 0.85;
    cfg->slow_lane_safety_margin = 0.10;
    cfg->policy_check_interval_ms = 0;
    cfg->max_handles = (size_t)1 << 24;
    cfg->promote_age_ms = 0;
    cfg->migrate_on_full = true;
    cfg->compaction_budget_us = 2000;
    cfg->enable_paging = true;
    cfg->swap_dir = NULL;
    cfg->swap_size = (size_t)1 << 30;
    cfg->zstd_level = 1;
    cfg->cold_after_ms = 0;
    cfg->evict_hysteresis = 0.10;
    cfg->io_queue_depth = 32;
    cfg->direct_io = true;
    cfg->compressed_stage = true;
    cfg->io_engine = 0;
    cfg->min_evict_size = 16 << 10;
    cfg->debug = 0;
}

#define FAIL(msg)                  \
    do {                           \
        if (reason) *reason = msg; \
        return -EINVAL;            \
    } while (0)

int ml_config_check(const ml_config *c, const char **reason)
{
    if (reason) *reason = NULL;
    if (!c) FAIL("configuration is NULL");
    if (c->threshold < 16 || c->threshold > 65536) FAIL("threshold must be 16..65536 bytes");
    if (c->fast_lane_size == 0) FAIL("fast_lane_size must be > 0");
    if (c->slow_lane_size < 64 * 1024) FAIL("slow_lane_size must be at least 64 KiB");
    if (c->fast_lane_max_size && c->fast_lane_max_size < c->fast_lane_size)
        FAIL("fast_lane_max_size must be 0 or >= fast_lane_size");
    if (c->slow_lane_max_size && c->slow_lane_max_size < c->slow_lane_size)
        FAIL("slow_lane_max_size must be 0 or >= slow_lane_size");
    size_t fmax = c->fast_lane_max_size ? c->fast_lane_max_size : c->fast_lane_size;
    size_t smax = c->slow_lane_max_size ? c->slow_lane_max_size : c->slow_lane_size;
    if (fmax > ((size_t)1 << 40)) FAIL("fast_lane_size and fast_lane_max_size must not exceed 1 TiB");
    if (smax > ((size_t)1 << 40)) FAIL("slow_lane_size and slow_lane_max_size must not exceed 1 TiB");
    if (!(c->compaction_threshold > 0.0 && c->compaction_threshold <= 1.0))
        FAIL("compaction_threshold must be in (0, 1]");
    if (!(c->slow_lane_usage_threshold > 0.0 && c->slow_lane_usage_threshold <= 1.0))
        FAIL("slow_lane_usage_threshold must be in (0, 1]");
    if (!(c->slow_lane_safety_margin >= 0.0 && c->slow_lane_safety_margin < 0.5))
        FAIL("slow_lane_safety_margin must be in [0, 0.5)");
    if (c->slow_lane_usage_threshold + c->slow_lane_safety_margin > 1.0 + 1e-9)
        FAIL("slow_lane_usage_threshold + slow_lane_safety_margin must not exceed 1");
    if (c->max_handles < 1024 || c->max_handles > ((size_t)1 << 30))
        FAIL("max_handles must be 1024..2^30");
    if (c->debug & ~(ML_DEBUG_POISON | ML_DEBUG_MOVES)) FAIL("debug has flags other than ML_DEBUG_*");
    if (c->enable_paging) {
        if (c->swap_size < ((size_t)1 << 20) || c->swap_size / 4096 > 0x3fffffffu)
            FAIL("swap_size must be at least 1 MiB and below 4 TiB");
        if (c->zstd_level < 1 || c->zstd_level > 19) FAIL("zstd_level must be 1..19");
        if (!(c->evict_hysteresis >= 0.0 && c->evict_hysteresis < c->slow_lane_usage_threshold))
            FAIL("evict_hysteresis must be in [0, slow_lane_usage_threshold)");
        if (c->io_queue_depth < 1 || c->io_queue_depth > 4096) FAIL("io_queue_depth must be 1..4096");
        if (c->io_engine < 0 || c->io_engine > 2) FAIL("io_engine must be 0 (auto), 1 (io_uring) or 2 (pread/pwrite)");
        if (c->min_evict_size < 4096) FAIL("min_evict_size must be at least 4096");
    }
    return 0;
}

const char *ml_strerror(int err)
{
    if (err == INT_MIN) return "unknown error"; /* no positive twin */
    if (err < 0) err = -err;
    switch (err) {
    case 0: return "success";
    case EINVAL: return "invalid argument or handle";
    case ESTALE: return "stale handle (freed)";
    case ENOMEM: return "out of memory (no room in the arena, or no memory for the library)";
    case EBUSY: return "busy (handle pinned, or a resource in use)";
    case EOVERFLOW: return "too many pins on one handle";
    case ENOENT: return "no such name, ID, file or directory";
    case EEXIST: return "name already exists";
    case ENOSPC: return "no space (a fixed table, the swap budget or the swap file's disk is full)";
    case EIO: return "I/O error";
    case EBADMSG: return "corrupted or mismatched record";
    case ENOTSUP: return "not supported";
    case EALREADY: return "already done (already there, or already cold)";
    case EMSGSIZE: return "does not compress (zstd would save less than a tenth)";
    /* Codes passed on from the system (swap file, I/O engine, FUSE mount). */
    case EPERM: return "operation not permitted";
    case EACCES: return "permission denied";
    case ENODEV: return "no such device (FUSE or the I/O engine unavailable)";
    case ENOTDIR: return "not a directory";
    case ENOSYS: return "not implemented by this kernel";
    case EMFILE: return "too many open files";
    case EROFS: return "read-only";
    case ENOTEMPTY: return "directory not empty";
    }
    /* Anything else the C library knows: its description (a constant
     * string, unlike strerror's, so still thread-safe). */
    const char *d = strerrordesc_np(err);
    return d ? d : "unknown error";
}

const char *ml_state_name(ml_state s)
{
    switch (s) {
    case ML_STATE_INVALID: return "invalid";
    case ML_STATE_FAST: return "fast";
    case ML_STATE_SLOW: return "slow";
    case ML_STATE_COMPRESSED: return "compressed";
    case ML_STATE_EVICTED: return "evicted";
    case ML_STATE_FREED: return "freed";
    }
    return "unknown";
}

const char *ml_lane_name(ml_lane l)
{
    switch (l) {
    case ML_LANE_FAST: return "fast";
    case ML_LANE_SLOW: return "slow";
    }
    return "unknown";
}
