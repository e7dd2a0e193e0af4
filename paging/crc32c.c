/*
 * crc32c.c — CRC-32C with the SSE4.2 instruction when the CPU has it (three
 * interleaved streams, so the instruction's latency is hidden), a table
 * otherwise. Chosen once, at first use. Both give the same result (a unit
 * test checks them against each other and against known values).
 */
#include "paging/crc32c.h"

#include <pthread.h>
#include <string.h>

static uint32_t table[8][256];

static void table_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++) table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xff];
}

static uint32_t crc_sw(uint32_t crc, const unsigned char *p, size_t len)
{
    while (len >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        v ^= crc;
        crc = table[7][v & 0xff] ^ table[6][(v >> 8) & 0xff] ^ table[5][(v >> 16) & 0xff] ^
              table[4][(v >> 24) & 0xff] ^ table[3][(v >> 32) & 0xff] ^ table[2][(v >> 40) & 0xff] ^
              table[1][(v >> 48) & 0xff] ^ table[0][v >> 56];
        p += 8;
        len -= 8;
    }
    while (len--) crc = (crc >> 8) ^ table[0][(crc ^ *p++) & 0xff];
    return crc;
}

#if defined(__x86_64__)
/* The CRC register is linear over GF(2): appending n zero bytes multiplies
 * it by a fixed 32x32 matrix. shift_blk is that matrix for one 4 KiB block,
 * built once by repeated squaring (as zlib's crc32_combine does). */
static uint32_t shift_blk[32];

static uint32_t gf2_times(const uint32_t *mat, uint32_t vec)
{
    uint32_t sum = 0;
    for (; vec; vec >>= 1, mat++)
        if (vec & 1) sum ^= *mat;
    return sum;
}

static void gf2_square(uint32_t *sq, const uint32_t *mat)
{
    for (int n = 0; n < 32; n++) sq[n] = gf2_times(mat, mat[n]);
}

static void shift_init(void)
{
    uint32_t a[32], b[32];
    a[0] = 0x82F63B78u; /* one zero bit */
    for (int n = 1; n < 32; n++) a[n] = 1u << (n - 1);
    gf2_square(b, a); /* 2 bits */
    gf2_square(a, b); /* 4 bits */
    gf2_square(b, a); /* 1 byte */
    for (int i = 0; i < 12; i += 2) { /* 2^12 bytes */
        gf2_square(a, b);
        gf2_square(b, a);
    }
    memcpy(shift_blk, b, sizeof b);
}

static inline uint32_t shift_zeros(uint32_t crc) { return gf2_times(shift_blk, crc); }

__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t crc, const unsigned char *p, size_t len)
{
    /* Three streams over blocks of 3 x 4 KiB: the crc32 instruction has a
     * latency of 3 and a throughput of 1, so one stream runs at a third of
     * the speed. The streams are combined by shifting over a block of zeros
     * (a matrix product: 32 conditional xors). */
    const size_t blk = 4096;
    uint64_t c0 = crc;
    while (len >= 3 * blk) {
        uint64_t c1 = 0, c2 = 0;
        const unsigned char *p1 = p + blk, *p2 = p + 2 * blk;
        for (size_t i = 0; i < blk; i += 8) {
            uint64_t a, b, c;
            memcpy(&a, p + i, 8);
            memcpy(&b, p1 + i, 8);
            memcpy(&c, p2 + i, 8);
            c0 = __builtin_ia32_crc32di(c0, a);
            c1 = __builtin_ia32_crc32di(c1, b);
            c2 = __builtin_ia32_crc32di(c2, c);
        }
        uint32_t x = shift_zeros((uint32_t)c0) ^ (uint32_t)c1;
        c0 = shift_zeros(x) ^ (uint32_t)c2;
        p += 3 * blk;
        len -= 3 * blk;
    }
    while (len >= 8) {
        uint64_t a;
        memcpy(&a, p, 8);
        c0 = __builtin_ia32_crc32di(c0, a);
        p += 8;
        len -= 8;
    }
    uint32_t c = (uint32_t)c0;
    while (len--) c = __builtin_ia32_crc32qi(c, *p++);
    return c;
}
#endif

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int have_hw;

static void init(void)
{
    table_init();
#if defined(__x86_64__)
    __builtin_cpu_init();
    have_hw = __builtin_cpu_supports("sse4.2");
    shift_init();
#endif
}

uint32_t ml__crc32c(uint32_t crc, const void *buf, size_t len)
{
    pthread_once(&once, init);
    crc = ~crc;
#if defined(__x86_64__)
    if (have_hw) return ~crc_hw(crc, buf, len);
#endif
    return ~crc_sw(crc, buf, len);
}
