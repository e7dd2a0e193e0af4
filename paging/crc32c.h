/*
 * crc32c.h — CRC-32C (Castagnoli), the checksum of swap records.
 */
#ifndef ML_PAGING_CRC32C_H
#define ML_PAGING_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/** CRC-32C of buf, continuing from crc (start with 0). */
uint32_t ml__crc32c(uint32_t crc, const void *buf, size_t len);

#endif
