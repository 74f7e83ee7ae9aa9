/*
 * registry.c: every channel the broker hosts, found by name (OPEN, STAT,
 * DELETE, LIST) and by handle (everything else). Handles count up from 1
 * and are never reused, so a handle that outlived its channel can only
 * miss: that miss is the client's STALE. A channel struct outlives its
 * listing while deliveries or requests still reference it.
 *
 * With --expire-closed, closed channels are watched on a list a periodic
 * sweep walks: one seen drained (nothing buffered, nothing unacked, no
 * waiter) on every sweep for the configured time is deleted, so a broker
 * that runs for months does not keep every name it ever saw.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <uuid/uuid.h>

#include "daemon.h"

/* Sweeps per --expire-closed period (so a channel goes within 1.25 periods), ms bounds. */
#define REGISTRY_SWEEPS 4
#define REGISTRY_SWEEP_MIN_MS 50
#define REGISTRY_SWEEP_MAX_MS 60000

static struct {
    struct chan **buckets;   /* name hash chains, nbuckets of them */
    size_t nbuckets;         /* a power of two */
    size_t n;                /* listed channels */
    struct map by_handle;    /* handle -> val: struct chan */
    uint64_t next_handle;    /* handle for the next channel */
    TAILQ_HEAD(, chan) closed;  /* closed listed channels, with --expire-closed */
    struct event *sweep_ev;  /* walks closed while it is not empty */
} reg;

/* FNV-1a: short keys, no attacker can do worse than a long chain of one bucket. */
static uint32_t registry_hash(const char *name, size_t len)
{
    uint32_t h = 2166136261u;

    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)name[i];
        h *= 16777619u;
    }
    return h;
}

static int64_t registry_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void registry_sweep_arm(void)
{
    int64_t ms = broker.opt.expire_closed * 1000 / REGISTRY_SWEEPS;
    struct timeval tv;

    if (ms < REGISTRY_SWEEP_MIN_MS)
        ms = REGISTRY_SWEEP_MIN_MS;
    if (ms > REGISTRY_SWEEP_MAX_MS)
        ms = REGISTRY_SWEEP_MAX_MS;
    tv.tv_sec = (time_t)(ms / 1000);
    tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
    evtimer_add(reg.sweep_ev, &tv);
}

static void registry_sweep_cb(evutil_socket_t fd, short what, void *arg)
{
    int64_t now = registry_now_ms();
    struct chan *ch, *next;

    (void)fd, (void)what, (void)arg;
    for (ch = TAILQ_FIRST(&reg.closed); ch != NULL; ch = next) {
        const struct core_chan *cc = &ch->core;

        next = TAILQ_NEXT(ch, closed_link);
        if (cc->count != 0 || cc->unacked != 0 || cc->sendq.n != 0 || cc->recvq.n != 0) {
            ch->idle_since_ms = 0;
            continue;
        }
        if (ch->idle_since_ms == 0) {
            ch->idle_since_ms = now;
            continue;
        }
        if (now - ch->idle_since_ms >= broker.opt.expire_closed * 1000) {
            log_msg(LL_INFO, "channel '%s' closed and unused for %ld s: deleted", ch->name,
                    broker.opt.expire_closed);
            registry_delete(ch);
        }
    }
    if (!TAILQ_EMPTY(&reg.closed))
        registry_sweep_arm();
    req_drain();
}

void registry_closed(struct chan *ch)
{
    if (broker.opt.expire_closed == 0 || ch->on_closed_list || ch->deleted)
        return;
    ch->on_closed_list = 1;
    ch->idle_since_ms = 0;
    TAILQ_INSERT_TAIL(&reg.closed, ch, closed_link);
    if (!evtimer_pending(reg.sweep_ev, NULL))
        registry_sweep_arm();
}

int registry_init(void)
{
    reg.nbuckets = 64;
    reg.buckets = calloc(reg.nbuckets, sizeof *reg.buckets);
    if (reg.buckets == NULL)
        return -1;
    map_init(&reg.by_handle);
    reg.next_handle = 1;
    TAILQ_INIT(&reg.closed);
    reg.sweep_ev = evtimer_new(broker.base, registry_sweep_cb, NULL);
    return reg.sweep_ev ? 0 : -1;
}

static void registry_free_buffered(struct core_msg *m, void *arg)
{
    (void)arg;
    msg_free(msg_of(m));
}

void registry_teardown(void)
{
    for (size_t i = 0; i < reg.nbuckets; i++)
        while (reg.buckets != NULL && reg.buckets[i] != NULL)
            registry_delete(reg.buckets[i]);
    free(reg.buckets);
    reg.buckets = NULL;
    reg.nbuckets = 0;
    map_free(&reg.by_handle);
    if (reg.sweep_ev != NULL)
        event_free(reg.sweep_ev);
    reg.sweep_ev = NULL;
}

struct chan *registry_by_name(const char *name, size_t len)
{
    uint32_t h = registry_hash(name, len);

    for (struct chan *ch = reg.buckets[h & (reg.nbuckets - 1)]; ch; ch = ch->name_next)
        if (ch->name_hash == h && ch->namelen == len && memcmp(ch->name, name, len) == 0)
            return ch;
    return NULL;
}

struct chan *registry_by_handle(uint64_t handle)
{
    struct map_ent *e = map_get(&reg.by_handle, handle);

    return e ? e->val : NULL;
}

/* Double the buckets once chains average one entry; on failure keep going slower. */
static void registry_grow(void)
{
    size_t nb = reg.nbuckets * 2;
    struct chan **b = calloc(nb, sizeof *b);

    if (b == NULL)
        return;
    for (size_t i = 0; i < reg.nbuckets; i++) {
        struct chan *ch = reg.buckets[i];
        while (ch != NULL) {
            struct chan *next = ch->name_next;
            size_t k = ch->name_hash & (nb - 1);
            ch->name_next = b[k];
            b[k] = ch;
            ch = next;
        }
    }
    free(reg.buckets);
    reg.buckets = b;
    reg.nbuckets = nb;
}

struct chan *registry_create(const char *name, size_t len, size_t cap)
{
    struct chan *ch = calloc(1, sizeof *ch + len + 1);
    size_t k;

    if (ch == NULL)
        return NULL;
    core_chan_init(&ch->core, cap);
    ch->handle = reg.next_handle;
    uuid_generate(ch->incarnation);
    ch->refs = 1;
    ch->name_hash = registry_hash(name, len);
    ch->namelen = len;
    memcpy(ch->name, name, len);
    ch->name[len] = '\0';
    if (map_put(&reg.by_handle, ch->handle, ch, NULL) < 0) {
        free(ch);
        return NULL;
    }
    reg.next_handle++;
    if (reg.n >= reg.nbuckets)
        registry_grow();
    k = ch->name_hash & (reg.nbuckets - 1);
    ch->name_next = reg.buckets[k];
    reg.buckets[k] = ch;
    reg.n++;
    return ch;
}

void registry_delete(struct chan *ch)
{
    struct chan **pp = &reg.buckets[ch->name_hash & (reg.nbuckets - 1)];

    DAEMON_ASSERT(!ch->deleted);
    while (*pp != ch)
        pp = &(*pp)->name_next;
    *pp = ch->name_next;
    ch->name_next = NULL;
    map_del(&reg.by_handle, ch->handle);
    reg.n--;
    ch->deleted = 1;
    if (ch->on_closed_list) {
        TAILQ_REMOVE(&reg.closed, ch, closed_link);
        ch->on_closed_list = 0;
    }
    /* Waiters complete with ENOENT through their done callbacks (queued, not run here). */
    core_chan_destroy(&ch->core, ENOENT, registry_free_buffered, NULL);
    registry_unref(ch);
}

static int registry_cmp(const void *a, const void *b)
{
    const struct chan *x = *(struct chan *const *)a;
    const struct chan *y = *(struct chan *const *)b;

    return strcmp(x->name, y->name);
}

int registry_list(const char *prefix, size_t len, struct chan ***out, size_t *n)
{
    struct chan **v = malloc((reg.n ? reg.n : 1) * sizeof *v);
    size_t k = 0;

    if (v == NULL)
        return -1;
    for (size_t i = 0; i < reg.nbuckets; i++)
        for (struct chan *ch = reg.buckets[i]; ch; ch = ch->name_next)
            if (ch->namelen >= len && memcmp(ch->name, prefix, len) == 0)
                v[k++] = ch;
    qsort(v, k, sizeof *v, registry_cmp);
    *out = v;
    *n = k;
    return 0;
}

size_t registry_count(void)
{
    return reg.n;
}

void registry_ref(struct chan *ch)
{
    ch->refs++;
}

void registry_unref(struct chan *ch)
{
    DAEMON_ASSERT(ch->refs > 0);
    if (--ch->refs > 0)
        return;
    /* Only a deleted channel loses its last reference; the core holds nothing now. */
    DAEMON_ASSERT(ch->deleted && ch->core.unacked == 0 && ch->core.count == 0);
    free(ch);
}
