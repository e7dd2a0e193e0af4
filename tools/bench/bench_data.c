/*
 * bench_data.c — the data every paging and store benchmark uses.
 *
 * A blob is built from a seed: segments of 256..1279 bytes, each either
 * English-like text (words from a 64-word vocabulary with spaces, commas and
 * newlines: 8 in 16 segments), little-endian 32-bit integers below 1000
 * (4 in 16), floats of similar magnitude (3 in 16) or random bytes (1 in
 * 16). zstd -1 compresses it about 1.8:1, like the mixed binaries and text
 * of the reference figures, and the same seed always gives the same bytes,
 * so readers can verify what they read.
 */
#include <string.h>

#include "bench.h"

static const char *words[64] = {
    "the",    "lane",   "handle", "memory", "of",     "and",    "to",     "in",     "blob",   "page",
    "swap",   "cold",   "fast",   "slow",   "asset",  "level",  "mesh",   "texture", "audio", "frame",
    "render", "player", "entity", "world",  "update", "value",  "index",  "buffer", "stream", "vertex",
    "shader", "light",  "shadow", "camera", "scene",  "node",   "child",  "parent", "system", "event",
    "queue",  "thread", "lock",   "atomic", "cache",  "line",   "block",  "span",   "class",  "size",
    "free",   "alloc",  "table",  "slot",   "stub",   "record", "header", "length", "codec",  "check",
    "disk",   "read",   "write",  "error"};

void gen_blob(uint64_t seed, unsigned char *p, size_t n)
{
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    size_t i = 0;
    while (i < n) {
        unsigned kind = (unsigned)(bench_rand(&s) % 16);
        size_t seg = 256 + bench_rand(&s) % 1024;
        size_t end = i + seg < n ? i + seg : n;
        if (kind < 8) { /* text */
            while (i < end) {
                const char *w = words[bench_rand(&s) % 64];
                for (size_t k = 0; w[k] && i < end; k++) p[i++] = (unsigned char)w[k];
                if (i < end) p[i++] = bench_rand(&s) % 9 ? ' ' : (bench_rand(&s) % 2 ? ',' : '\n');
            }
        } else if (kind < 12) { /* small integers, little-endian 32-bit */
            while (i + 4 <= end) {
                uint32_t v = (uint32_t)(bench_rand(&s) % 1000);
                memcpy(p + i, &v, 4);
                i += 4;
            }
            while (i < end) p[i++] = 0;
        } else if (kind < 15) { /* floats of similar magnitude */
            while (i + 4 <= end) {
                float f = 100.0f + (float)(bench_rand(&s) % 10000) / 100.0f;
                memcpy(p + i, &f, 4);
                i += 4;
            }
            while (i < end) p[i++] = 0;
        } else { /* incompressible */
            while (i < end) p[i++] = (unsigned char)bench_rand(&s);
        }
    }
}

