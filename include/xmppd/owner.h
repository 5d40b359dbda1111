/*
 * owner.h — running a module's code on a chosen worker (public module API;
 * DESIGN.md 2: one owner worker per entity).
 *
 * A module entity that is not a stream (a MUC room, a pubsub node) is owned
 * by one worker: its state is touched on that worker only, without a lock,
 * and everyone else sends it a message.  The owner of an entity is a stable
 * function of a key (the room's bare JID): the same key gives the same
 * worker for the life of the process, on every thread.
 *
 *     unsigned w = xd_owner_of(room_jid);
 *     if (xd_owner_self() == (int)w) room_handle(ctx, st);   // already there
 *     else if (xd_module_post(ctx, w, room_msg, msg) != 0) { // stopping
 *         ... free msg, answer with an error ... }
 *
 * Messages posted from one thread to one worker run in the order posted.
 * A posted function runs with the instance held (module.h: the instance
 * does not stop while a post is in flight), on the worker's loop: it must
 * not block (storage goes through xd_module_submit / xd_db_async).
 */
#ifndef XMPPD_OWNER_H
#define XMPPD_OWNER_H

#include <stddef.h>

typedef struct xd_module_ctx xd_module_ctx_t; /* module.h */

/* The most workers there can be (the `workers` option's bound): a module
 * may keep a fixed array of per-worker state of this size. */
#define XD_OWNER_MAX_WORKERS 256

/* The number of worker loops (0 before they start or after they ended):
 * at most XD_OWNER_MAX_WORKERS.  Modules start before the workers do, so
 * a module's start sees 0. */
unsigned xd_owner_workers(void);

/* The index of the worker that owns entity `key` (a NUL-terminated
 * string, compared byte for byte: pass a normalised JID): a stable hash
 * (64-bit FNV-1a) modulo xd_owner_workers(); 0 when there are no workers. */
unsigned xd_owner_of(const char *key);
/* As xd_owner_of for the `len` bytes at key. */
unsigned xd_owner_of_n(const char *key, size_t len);

/* The index of the calling thread's worker, or -1 off the worker loops
 * (the main thread, the blocking pool, the control thread). */
int xd_owner_self(void);

/* A posted function: runs on the chosen worker with the instance held. */
typedef void (*xd_module_post_fn)(xd_module_ctx_t *ctx, void *arg);

/* Queues fn(ctx, arg) to run on worker `worker`'s loop (always queued,
 * also when called on that worker: fn never runs inside the caller).  The
 * instance is held until fn has returned.  Any thread.  0; XD_EINVAL for a
 * worker out of range or no fn; XD_ECLOSED when that worker has stopped
 * (the server is stopping): fn is then not called and arg stays the
 * caller's. */
int xd_module_post(xd_module_ctx_t *ctx, unsigned worker, xd_module_post_fn fn, void *arg);

#endif
