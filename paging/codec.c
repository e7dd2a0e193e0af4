/*
 * codec.c — zstd with reused contexts; raw when compression does not pay.
 *
 * Like zswap rejecting pages that compress poorly, a blob that does not
 * shrink by at least min_saving is stored as it is: decoding it then costs
 * a memcpy, and the disk space is the same either way.
 */
#include "paging/codec.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

struct ml_codec {
    ZSTD_CCtx *cctx;
    ZSTD_DCtx *dctx;
    int level;
};

ml_codec *ml__codec_new(int level)
{
    ml_codec *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->cctx = ZSTD_createCCtx();
    c->dctx = ZSTD_createDCtx();
    c->level = level;
    if (!c->cctx || !c->dctx) {
        ml__codec_free(c);
        return NULL;
    }
    ZSTD_CCtx_setParameter(c->cctx, ZSTD_c_compressionLevel, level);
    /* The record carries its own checksum; no frame checksum needed. */
    ZSTD_CCtx_setParameter(c->cctx, ZSTD_c_checksumFlag, 0);
    return c;
}

void ml__codec_free(ml_codec *c)
{
    if (!c) return;
    ZSTD_freeCCtx(c->cctx);
    ZSTD_freeDCtx(c->dctx);
    free(c);
}

size_t ml__codec_bound(size_t n)
{
    size_t z = ZSTD_compressBound(n);
    return z > n ? z : n;
}

uint64_t ml__codec_encodes;

long ml__codec_encode(ml_codec *c, const void *src, size_t n, void *dst, size_t cap,
                      double min_saving, int *codec)
{
    __atomic_fetch_add(&ml__codec_encodes, 1, __ATOMIC_RELAXED);
    size_t limit = (size_t)((double)n * (1.0 - min_saving));
    size_t z = ZSTD_compress2(c->cctx, dst, cap, src, n);
    if (ZSTD_isError(z)) return -EIO; /* cap >= bound: not a size problem */
    if (z <= limit) {
        *codec = ML_CODEC_ZSTD;
        return (long)z;
    }
    if (cap < n) return -EIO;
    memcpy(dst, src, n);
    *codec = ML_CODEC_RAW;
    return (long)n;
}

int ml__codec_decode(ml_codec *c, int codec, const void *src, size_t len, void *dst, size_t n)
{
    if (codec == ML_CODEC_RAW) {
        if (len != n) return -EBADMSG;
        memcpy(dst, src, n);
        return 0;
    }
    if (codec != ML_CODEC_ZSTD) return -EBADMSG;
    size_t r = ZSTD_decompressDCtx(c->dctx, dst, n, src, len);
    if (ZSTD_isError(r) || r != n) return -EBADMSG;
    return 0;
}
