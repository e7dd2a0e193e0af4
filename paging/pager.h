/*
 * pager.h — paging/'s internal entry points (the rest goes through
 * core/pager_iface.h and the public header).
 */
#ifndef ML_PAGING_PAGER_H
#define ML_PAGING_PAGER_H

#include "memorylane/memorylane.h"
#include "paging/io.h"

/** ml_arena_create, with the pager's I/O engines made by open_io (tests
 *  inject faults this way). */
int ml__arena_create_io(const ml_config *cfg, ml_io_open_fn open_io, void *ctx, ml_arena **out);

#endif
