/*
 * arena.c — bump allocator for element trees (src/xml; see arena.h for the
 * layout and invariants).
 */
#include "xml/arena.h"

#include "xmppd/alloc.h"
#include "xmppd/assert.h"

#define ARENA_HDR                                                                        \
    ((sizeof(xd_arena_block_t) + XD_ARENA_ALIGN - 1) & ~(size_t)(XD_ARENA_ALIGN - 1))
#define ARENA_SELF ((sizeof(xd_arena_t) + XD_ARENA_ALIGN - 1) & ~(size_t)(XD_ARENA_ALIGN - 1))

xd_arena_t *
xd_arena_new(size_t first_size)
{
    size_t size = ARENA_HDR + ARENA_SELF + first_size;
    xd_arena_block_t *b = xd_malloc(size);
    b->next = NULL;
    b->size = size;
    xd_arena_t *a = (xd_arena_t *)((char *)b + ARENA_HDR);
    a->head = b;
    a->cur = (char *)a + ARENA_SELF;
    a->end = (char *)b + size;
    a->next_size = first_size < 512 ? 1024 : first_size * 2;
    a->bytes = size;
    a->frozen = false;
    return a;
}

void
xd_arena_free(xd_arena_t *a)
{
    if (!a)
        return;
    /* The arena header lives in one of the blocks: read the list first. */
    xd_arena_block_t *b = a->head;
    while (b) {
        xd_arena_block_t *next = b->next;
        xd_free(b);
        b = next;
    }
}

void *
xd_arena_alloc_slow(xd_arena_t *a, size_t n)
{
    if (n > a->next_size / 2) {
        /* A big object gets a block of its own, linked behind the head so
         * the head's free space is not wasted. */
        xd_arena_block_t *b = xd_malloc(ARENA_HDR + n);
        b->size = ARENA_HDR + n;
        b->next = a->head->next;
        a->head->next = b;
        a->bytes += b->size;
        return (char *)b + ARENA_HDR;
    }
    size_t size = a->next_size;
    if (a->next_size < XD_ARENA_MAX_BLOCK)
        a->next_size *= 2;
    xd_arena_block_t *b = xd_malloc(size);
    b->size = size;
    b->next = a->head;
    a->head = b;
    a->bytes += size;
    char *p = (char *)b + ARENA_HDR;
    a->cur = p + n;
    a->end = (char *)b + size;
    return p;
}

void
xd_arena_adopt(xd_arena_t *a, xd_arena_t *from)
{
    XD_ASSERT(a != from);
    /* Splice from's blocks behind a's head block. */
    xd_arena_block_t *last = from->head;
    while (last->next)
        last = last->next;
    last->next = a->head->next;
    a->head->next = from->head;
    a->bytes += from->bytes;
}
