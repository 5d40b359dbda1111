/*
 * arena.h — bump allocator for element trees (src/xml, internal).
 *
 * An arena is a singly linked list of blocks; the arena header lives at the
 * start of its first block, so an empty arena is one malloc.  Allocation
 * bumps a pointer; nothing is freed before xd_arena_free() releases every
 * block.  One arena holds one tree (and, once frozen, the xd_stanza_t
 * itself), so a parsed stanza costs one or two malloc calls.
 *
 * Invariants: cur <= end; cur is within the head block; blocks double in
 * size up to XD_ARENA_MAX_BLOCK, and a request larger than half a block gets
 * a block of its own (inserted behind the head, so the head keeps its free
 * space).  `bytes` counts every block's size (for memory accounting).
 * Owner: whoever owns the tree; not thread-safe.
 */
#ifndef XD_XML_ARENA_H
#define XD_XML_ARENA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define XD_ARENA_ALIGN     8
#define XD_ARENA_MAX_BLOCK (64 * 1024)

typedef struct xd_arena_block {
    struct xd_arena_block *next; /* older block, or NULL */
    size_t size;                 /* bytes in this block, header included */
} xd_arena_block_t;

typedef struct xd_arena {
    char *cur;              /* next free byte in the head block */
    char *end;              /* end of the head block */
    xd_arena_block_t *head; /* block being filled; the list owns all blocks */
    size_t next_size;       /* size of the next ordinary block */
    size_t bytes;           /* total bytes of all blocks */
    bool frozen;            /* set by xd_el_freeze: the tree is read-only */
} xd_arena_t;

/* A new arena whose first block has about `first_size` bytes. */
xd_arena_t *xd_arena_new(size_t first_size);

/* Frees every block (and so the arena itself).  NULL is a no-op. */
void xd_arena_free(xd_arena_t *a);

/* Moves every block of `from` into `a`; `from` is dead afterwards, but
 * memory allocated from it stays valid for as long as `a` lives. */
void xd_arena_adopt(xd_arena_t *a, xd_arena_t *from);

/* Slow path of xd_arena_alloc: adds a block. */
void *xd_arena_alloc_slow(xd_arena_t *a, size_t n);

/* `n` bytes aligned to XD_ARENA_ALIGN, uninitialised. */
static inline void *
xd_arena_alloc(xd_arena_t *a, size_t n)
{
    n = (n + (XD_ARENA_ALIGN - 1)) & ~(size_t)(XD_ARENA_ALIGN - 1);
    if ((size_t)(a->end - a->cur) >= n) {
        void *p = a->cur;
        a->cur += n;
        return p;
    }
    return xd_arena_alloc_slow(a, n);
}

/* A NUL-terminated copy of s[0..len). */
static inline char *
xd_arena_strndup(xd_arena_t *a, const char *s, size_t len)
{
    char *p = (char *)xd_arena_alloc(a, len + 1);
    if (len)
        memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

#endif
