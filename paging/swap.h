/*
 * swap.h — the swap file: a private, unnamed file and the space in it.
 */
#ifndef ML_PAGING_SWAP_H
#define ML_PAGING_SWAP_H

#include <stdbool.h>
#include <stdint.h>

#include "core/extent.h"

#define ML_SWAP_BLOCK 4096u

typedef struct ml_swap {
    int fd;
    bool direct;      /* opened with O_DIRECT */
    uint64_t blocks;  /* budget in blocks */
    ml_ext ext;       /* free space (units = blocks); caller serialises */
    uint64_t used;    /* blocks in records */
} ml_swap;

/**
 * Create the swap file in dir (NULL: $TMPDIR, else /var/tmp): unnamed
 * (O_TMPFILE) where the filesystem allows, else created and unlinked at
 * once, so nothing is ever left behind. Mode 0600. Sized (sparse) to budget.
 * With direct, tries O_DIRECT first and falls back to buffered I/O where the
 * filesystem refuses it (tmpfs); s->direct says which.
 * @return 0; -errno of open/ftruncate.
 */
int ml__swap_open(ml_swap *s, const char *dir, uint64_t budget, bool direct);
/** Can a swap file be made in dir? Makes one the way ml__swap_open does
 *  and closes it at once (it has no name, or loses it at once).
 *  @return 0; -errno of the open. */
int ml__swap_probe(const char *dir);
void ml__swap_close(ml_swap *s);
/** First block of a free run of n blocks, or -ENOSPC (budget full). */
int64_t ml__swap_alloc(ml_swap *s, uint32_t n);
/** Would ml__swap_alloc(s, n) succeed now? */
bool ml__swap_can_alloc(const ml_swap *s, uint32_t n);
void ml__swap_free(ml_swap *s, uint64_t first);

#endif
