/*
 * codec.h — how a blob is stored when it goes cold: zstd, or raw when zstd
 * would barely help.
 */
#ifndef ML_PAGING_CODEC_H
#define ML_PAGING_CODEC_H

#include <stddef.h>
#include <stdint.h>

enum { ML_CODEC_RAW = 0, ML_CODEC_ZSTD = 1 };

typedef struct ml_codec ml_codec;

/** A compressor/decompressor pair with reusable contexts (one per thread of
 *  use: not thread-safe). level: zstd level (1..19). NULL on ENOMEM. */
ml_codec *ml__codec_new(int level);
void ml__codec_free(ml_codec *c);

/** Largest output ml__codec_encode may produce for n input bytes. */
size_t ml__codec_bound(size_t n);

/**
 * Encode src into dst (capacity cap >= ml__codec_bound(n)). Picks zstd, or
 * raw when the result would not be at least min_saving (fraction, e.g. 0.1)
 * smaller. Returns the encoded length and sets *codec; negative on a zstd
 * error (-EIO).
 */
long ml__codec_encode(ml_codec *c, const void *src, size_t n, void *dst, size_t cap,
                      double min_saving, int *codec);

/** Calls of ml__codec_encode so far, all codecs of the process (relaxed;
 *  for tests that check which paths compress). */
extern uint64_t ml__codec_encodes;

/** Decode exactly n bytes into dst. 0, or -EBADMSG when the input is not a
 *  valid encoding of n bytes. */
int ml__codec_decode(ml_codec *c, int codec, const void *src, size_t len, void *dst, size_t n);

#endif
