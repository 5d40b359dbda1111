/*
 * map.h — a hash map from strings to pointers (open addressing with linear
 * probing, FNV-1a, grows at 3/4 load, tombstone-free deletion).
 *
 * For the in-memory tables of modules (avatar hashes, lists keyed by bare
 * JID, …).  Not thread-safe: the owner guards it (a rwlock for read-mostly
 * tables).  Keys are copied; values are the caller's, the map never frees
 * them (xd_map_free takes a callback for that).
 */
#ifndef XMPPD_MAP_H
#define XMPPD_MAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "xmppd/str.h"

typedef struct xd_map_slot {
    char *key;       /* owned, NUL-terminated; NULL = empty slot */
    size_t klen;     /* its length */
    uint64_t hash;   /* FNV-1a of the key */
    void *val;       /* the caller's value */
} xd_map_slot_t;

typedef struct xd_map {
    xd_map_slot_t *slots; /* cap slots, NULL before the first put */
    size_t cap;           /* a power of two, or 0 */
    size_t n;             /* keys held */
} xd_map_t;

#define XD_MAP_INIT ((xd_map_t){ 0 })

/* FNV-1a, 64 bits (exposed for sharding by the same hash). */
uint64_t xd_map_hash(xd_str_t key);

/* The value of key, or NULL when absent. */
void *xd_map_get(const xd_map_t *m, xd_str_t key);

/* Sets key to val.  The previous value (or NULL when the key is new) is
 * returned so the caller can free it. */
void *xd_map_put(xd_map_t *m, xd_str_t key, void *val);

/* Removes key; returns its value, or NULL when absent. */
void *xd_map_del(xd_map_t *m, xd_str_t key);

/* Number of keys. */
static inline size_t
xd_map_count(const xd_map_t *m)
{
    return m->n;
}

/* Calls fn for every key and value in no particular order.  fn must not
 * change the map; returning non-zero stops the walk. */
void xd_map_foreach(const xd_map_t *m, int (*fn)(void *arg, const char *key, void *val),
                    void *arg);

/* Frees the map's storage, calling free_val (if not NULL) on each value;
 * the map is empty and reusable afterwards. */
void xd_map_free(xd_map_t *m, void (*free_val)(void *val));

#endif
