/*
 * map.c — string-keyed hash map (see include/xmppd/map.h).
 *
 * Deletion shifts the following entries of the probe run back (Knuth's
 * algorithm R), so lookups never wade through tombstones and a table that
 * sees many puts and deletes keeps its probe lengths.
 */
#include <string.h>

#include "xmppd/alloc.h"
#include "xmppd/map.h"

uint64_t
xd_map_hash(xd_str_t key)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < key.len; i++)
        h = (h ^ (unsigned char)key.p[i]) * 1099511628211ull;
    return h;
}

/* The slot holding key, or the empty slot where it would go. */
static size_t
map_find(const xd_map_t *m, xd_str_t key, uint64_t h)
{
    size_t mask = m->cap - 1;
    size_t i = (size_t)h & mask;
    for (;;) {
        const xd_map_slot_t *s = &m->slots[i];
        if (!s->key || (s->hash == h && s->klen == key.len && !memcmp(s->key, key.p, key.len)))
            return i;
        i = (i + 1) & mask;
    }
}

void *
xd_map_get(const xd_map_t *m, xd_str_t key)
{
    if (!m->n)
        return NULL;
    const xd_map_slot_t *s = &m->slots[map_find(m, key, xd_map_hash(key))];
    return s->key ? s->val : NULL;
}

static void
map_grow(xd_map_t *m)
{
    size_t ncap = m->cap ? m->cap * 2 : 16;
    xd_map_slot_t *old = m->slots;
    size_t ocap = m->cap;
    m->slots = xd_calloc(ncap, sizeof *m->slots);
    m->cap = ncap;
    for (size_t i = 0; i < ocap; i++)
        if (old[i].key) {
            size_t mask = ncap - 1, j = (size_t)old[i].hash & mask;
            while (m->slots[j].key)
                j = (j + 1) & mask;
            m->slots[j] = old[i];
        }
    xd_free(old);
}

void *
xd_map_put(xd_map_t *m, xd_str_t key, void *val)
{
    if ((m->n + 1) * 4 > m->cap * 3)
        map_grow(m);
    uint64_t h = xd_map_hash(key);
    xd_map_slot_t *s = &m->slots[map_find(m, key, h)];
    if (s->key) {
        void *prev = s->val;
        s->val = val;
        return prev;
    }
    s->key = xd_strndup(key.p, key.len);
    s->klen = key.len;
    s->hash = h;
    s->val = val;
    m->n++;
    return NULL;
}

void *
xd_map_del(xd_map_t *m, xd_str_t key)
{
    if (!m->n)
        return NULL;
    size_t mask = m->cap - 1;
    size_t i = map_find(m, key, xd_map_hash(key));
    if (!m->slots[i].key)
        return NULL;
    void *val = m->slots[i].val;
    xd_free(m->slots[i].key);
    m->slots[i] = (xd_map_slot_t){ 0 };
    m->n--;
    /* Move back every later entry of the run that may sit at i. */
    for (size_t j = (i + 1) & mask; m->slots[j].key; j = (j + 1) & mask) {
        size_t home = (size_t)m->slots[j].hash & mask;
        /* j's entry may move to i unless its home lies cyclically in (i, j]. */
        bool stays = (i <= j) ? (i < home && home <= j) : (i < home || home <= j);
        if (stays)
            continue;
        m->slots[i] = m->slots[j];
        m->slots[j] = (xd_map_slot_t){ 0 };
        i = j;
    }
    return val;
}

void
xd_map_foreach(const xd_map_t *m, int (*fn)(void *arg, const char *key, void *val), void *arg)
{
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].key && fn(arg, m->slots[i].key, m->slots[i].val))
            return;
}

void
xd_map_free(xd_map_t *m, void (*free_val)(void *val))
{
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].key) {
            if (free_val)
                free_val(m->slots[i].val);
            xd_free(m->slots[i].key);
        }
    xd_free(m->slots);
    *m = XD_MAP_INIT;
}
