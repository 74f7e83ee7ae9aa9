/*
 * blk.c: a per-thread cache of small message blocks. Each message lives in
 * one heap block for a few microseconds, and a channel's buffer holds more
 * of them than glibc's per-thread cache, so without this every message
 * would go through malloc's bins twice. Blocks come in size classes of
 * BLK_STEP bytes; a freed block waits on its class's free list in the
 * freeing thread, and that thread's next allocation of the class takes it.
 *
 * Cached blocks are plain malloc'd blocks of the class size, so a block
 * may be freed on another thread than the one that allocated it, or on a
 * thread without a cache (free() then takes it). Each thread caches at
 * most BLK_CACHE_BYTES; the scheduler turns the cache on and off with the
 * thread (blk_thread_init / blk_thread_exit). Sanitizer builds cache
 * nothing and allocate exact sizes, so ASan sees every overrun and free.
 */
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

#define BLK_STEP 16u                       /* bytes between size classes */
#define BLK_MAX 1024u                      /* largest cached block, headers included */
#define BLK_CLASSES (BLK_MAX / BLK_STEP)   /* class k (1..BLK_CLASSES) is k * BLK_STEP bytes */
#define BLK_CACHE_BYTES (256u * 1024)      /* bytes one thread keeps on its free lists */

_Static_assert(BLK_CLASSES <= 0xff, "a class must fit MSG_CLS's 8 bits");

/* A cached block: its first bytes link it into its class's free list. */
struct blk_node {
    struct blk_node *next;
};

/*
 * One thread's cache. Ownership: the thread, from blk_thread_init to
 * blk_thread_exit; it owns every block on its lists.
 */
struct blk_cache {
    struct blk_node *head[BLK_CLASSES];  /* free blocks of class k + 1, last freed first */
    size_t bytes;                        /* bytes on all lists, at most BLK_CACHE_BYTES */
};

#ifndef CHAN_SANITIZERS
/* NULL: no cache on this thread (no scheduler yet, or it has gone). */
static _Thread_local struct blk_cache *blk_tls __attribute__((tls_model("initial-exec")));
#endif

void *blk_alloc(size_t size, unsigned *cls)
{
#ifndef CHAN_SANITIZERS
    if (size <= BLK_MAX) {
        struct blk_cache *c = blk_tls;
        unsigned k = size ? (unsigned)((size + BLK_STEP - 1) / BLK_STEP) : 1;
        struct blk_node *n;

        *cls = k;
        if (c && (n = c->head[k - 1])) {
            c->head[k - 1] = n->next;
            c->bytes -= k * BLK_STEP;
            return n;
        }
        return malloc(k * BLK_STEP);
    }
#endif
    *cls = 0;
    return malloc(size);
}

void blk_free(void *p, unsigned cls)
{
#ifndef CHAN_SANITIZERS
    struct blk_cache *c = blk_tls;

    if (cls > BLK_CLASSES) {
        fprintf(stderr, "chan: %s:%d: block of class %u freed, the largest is %u\n",
                __FILE__, __LINE__, cls, BLK_CLASSES);
        abort();
    }
    if (p && cls && c && c->bytes + cls * BLK_STEP <= BLK_CACHE_BYTES) {
        struct blk_node *n = p;

        n->next = c->head[cls - 1];
        c->head[cls - 1] = n;
        c->bytes += cls * BLK_STEP;
        return;
    }
#else
    (void)cls;
#endif
    free(p);
}

void blk_thread_init(void)
{
#ifndef CHAN_SANITIZERS
    /* Without memory for the cache the thread simply runs without one. */
    if (!blk_tls)
        blk_tls = calloc(1, sizeof *blk_tls);
#endif
}

void blk_thread_exit(void)
{
#ifndef CHAN_SANITIZERS
    struct blk_cache *c = blk_tls;

    if (!c)
        return;
    blk_tls = NULL; /* blocks freed from here on go to free() */
    for (unsigned k = 0; k < BLK_CLASSES; k++) {
        struct blk_node *n, *next;

        for (n = c->head[k]; n; n = next) {
            next = n->next;
            free(n);
        }
    }
    free(c);
#endif
}

/*
 * A thread that leaves through exit() (main() returning) never runs the
 * scheduler's teardown, so its sched and cache would stay allocated to
 * the end. Emptying the cache here keeps a leak checker's view of such a
 * program what it was without the cache; later frees go to free().
 */
__attribute__((destructor)) static void blk_process_exit(void)
{
    blk_thread_exit();
}
