/*
 * swap.c — the swap file and its free space.
 *
 * The file is private to the arena: opened with O_TMPFILE (no name at all,
 * so it disappears with the descriptor, even if the process is killed), or,
 * where the filesystem lacks O_TMPFILE, created with mkstemp and unlinked at
 * once. It is truncated to the budget up front: a sparse file whose blocks
 * the filesystem allocates as records are written. It never grows past the
 * budget, and space is reused: the same extent allocator as the lanes
 * (boundary tags, coalescing, good fit) manages it in 4 KiB blocks.
 */
#include "paging/swap.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* An unnamed file in dir (O_TMPFILE), or a named one unlinked at once. */
static int open_in(const char *dir, int flags)
{
    int fd;
#ifdef O_TMPFILE
    fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC | flags, 0600);
    if (fd >= 0) return fd;
#endif
    char path[4096];
    if (snprintf(path, sizeof path, "%s/memorylane-swap-XXXXXX", dir) >= (int)sizeof path)
        return -ENAMETOOLONG;
    fd = mkostemp(path, O_CLOEXEC);
    if (fd < 0) return -errno;
    unlink(path);
    if (flags & O_DIRECT) {
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl | O_DIRECT) != 0) {
            int e = -errno;
            close(fd);
            return e;
        }
    }
    return fd;
}

int ml__swap_probe(const char *dir)
{
    int fd = open_in(dir, 0);
    if (fd < 0) return fd;
    close(fd);
    return 0;
}

int ml__swap_open(ml_swap *s, const char *dir, uint64_t budget, bool direct)
{
    memset(s, 0, sizeof *s);
    s->fd = -1;
    if (!dir || !*dir) {
        dir = getenv("TMPDIR");
        if (!dir || !*dir) dir = "/var/tmp";
    }
    uint64_t blocks = budget / ML_SWAP_BLOCK;
    if (blocks == 0 || blocks > 0x3fffffffu) return -EINVAL;
    int fd = -1;
    if (direct) {
        fd = open_in(dir, O_DIRECT);
        if (fd >= 0) s->direct = true;
    }
    if (fd < 0) fd = open_in(dir, 0);
    if (fd < 0) return fd;
    if (ftruncate(fd, (off_t)(blocks * ML_SWAP_BLOCK)) != 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    if (ml__ext_init(&s->ext, (uint32_t)blocks, (uint32_t)blocks) != 0) {
        close(fd);
        return -ENOMEM;
    }
    s->fd = fd;
    s->blocks = blocks;
    return 0;
}

void ml__swap_close(ml_swap *s)
{
    if (s->fd >= 0) close(s->fd);
    if (s->ext.tag) ml__ext_fini(&s->ext);
    s->fd = -1;
}

int64_t ml__swap_alloc(ml_swap *s, uint32_t n)
{
    uint32_t first = ml__ext_alloc(&s->ext, n, ML_EXT_BLOB, 0);
    if (first == ML_EXT_NIL) return -ENOSPC;
    s->used += n;
    return first;
}

bool ml__swap_can_alloc(const ml_swap *s, uint32_t n) { return ml__ext_largest_free(&s->ext) >= n; }

void ml__swap_free(ml_swap *s, uint64_t first)
{
    s->used -= ml__ext_len(&s->ext, (uint32_t)first);
    ml__ext_free(&s->ext, (uint32_t)first);
}
