/*
 * delivery.c: what a connection has received and not yet settled
 * (DESIGN.md section 2). Each delivery gets the connection's next tag; an
 * ACK frees the message, a NACK or the connection's death hands it back to
 * the head of its channel. Giving back several at once goes last-first, so
 * each channel gets them back in their original order.
 *
 * A leased delivery (RECV with lease_ms) also gets a timer: when it fires
 * before an ACK or NACK, the message goes back as a NACK would have sent
 * it and the tag is forgotten, so a late ACK or NACK answers INVALID.
 */
#include <inttypes.h>
#include <stdlib.h>

#include "daemon.h"

#define LEASE_MAX_MS ((int64_t)315360000 * 1000)

/* A leased delivery's timer. Owned by its table's leases map until settled or expired. */
struct lease {
    struct event ev;                 /* fires lease_ms after the delivery */
    struct delivery_table *t;        /* the table holding the delivery */
    uint64_t tag;                    /* the delivery */
};

void delivery_init(struct delivery_table *t)
{
    map_init(&t->map);
    map_init(&t->leases);
    t->next_tag = 1;
}

/* The delivery was settled (ack, nack, death): its lease, if any, ends unfired. */
static void delivery_unlease(struct delivery_table *t, uint64_t tag)
{
    struct map_ent *e;
    struct lease *l;

    if (t->leases.n == 0 || (e = map_get(&t->leases, tag)) == NULL)
        return;
    l = e->val;
    map_del(&t->leases, tag);
    event_del(&l->ev);
    free(l);
}

static void delivery_lease_cb(evutil_socket_t fd, short what, void *arg)
{
    struct lease *l = arg;
    struct delivery_table *t = l->t;
    uint64_t tag = l->tag;

    (void)fd, (void)what;
    log_msg(LL_DEBUG, "lease of delivery %" PRIu64 " ran out; back to its channel", tag);
    /* delivery_nack ends the lease (frees l) before giving the message back. */
    delivery_nack(t, &tag, 1);
    req_drain();
}

size_t delivery_count(const struct delivery_table *t)
{
    return t->map.n;
}

uint64_t delivery_add(struct delivery_table *t, struct chan *ch, struct msg *m, int64_t lease_ms)
{
    uint64_t tag = t->next_tag;
    struct lease *l = NULL;

    if (lease_ms > 0) {
        struct timeval tv;

        /* Ten years is for ever, and keeps the timer's arithmetic from overflowing. */
        if (lease_ms > LEASE_MAX_MS)
            lease_ms = LEASE_MAX_MS;
        tv.tv_sec = (time_t)(lease_ms / 1000);
        tv.tv_usec = (suseconds_t)(lease_ms % 1000) * 1000;

        l = malloc(sizeof *l);
        if (l == NULL || map_put(&t->leases, tag, l, NULL) < 0) {
            free(l);
            return 0;
        }
        l->t = t;
        l->tag = tag;
        evtimer_assign(&l->ev, broker.base, delivery_lease_cb, l);
        if (evtimer_add(&l->ev, &tv) < 0) {
            /* The timer heap could not grow: a lease that never ends is worse than none given. */
            map_del(&t->leases, tag);
            free(l);
            return 0;
        }
    }
    if (map_put(&t->map, tag, m, ch) < 0) {
        if (l != NULL)
            delivery_unlease(t, tag);
        return 0;
    }
    registry_ref(ch);
    t->next_tag++;
    return tag;
}

void delivery_requeue(struct chan *ch, struct msg *m)
{
    /* On a deleted channel with no sender to return it to, the core gives it back to us. */
    if (core_nack(&ch->core, &m->core) == 1)
        msg_free(m);
}

int delivery_ack(struct delivery_table *t, uint64_t tag)
{
    struct map_ent *e = map_get(&t->map, tag);
    struct msg *m;
    struct chan *ch;

    if (e == NULL)
        return -1;
    m = e->val;
    ch = e->aux;
    map_del(&t->map, tag);
    delivery_unlease(t, tag);
    core_ack(&ch->core, &m->core);
    msg_free(m);
    registry_unref(ch);
    return 0;
}

static int delivery_cmp_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a;
    uint64_t y = *(const uint64_t *)b;

    return x < y ? 1 : x > y ? -1 : 0;
}

/* Nack tags[0..n), which must be sorted from the newest delivery down. */
static int delivery_nack_sorted(struct delivery_table *t, const uint64_t *tags, size_t n)
{
    int rc = 0;

    for (size_t i = 0; i < n; i++) {
        struct map_ent *e = map_get(&t->map, tags[i]);
        struct msg *m;
        struct chan *ch;

        if (e == NULL) {
            rc = -1;
            continue;
        }
        m = e->val;
        ch = e->aux;
        map_del(&t->map, tags[i]);
        delivery_unlease(t, tags[i]);
        delivery_requeue(ch, m);
        registry_unref(ch);
    }
    return rc;
}

int delivery_nack(struct delivery_table *t, const uint64_t *tags, size_t n)
{
    uint64_t one;
    uint64_t *sorted = &one;
    int rc;

    if (n == 0)
        return 0;
    if (n > 1) {
        sorted = malloc(n * sizeof *sorted);
        if (sorted == NULL) {
            /* Still give them back; order within a channel may suffer. */
            log_msg(LL_WARN, "out of memory sorting %zu nacks", n);
            return delivery_nack_sorted(t, tags, n);
        }
    }
    for (size_t i = 0; i < n; i++)
        sorted[i] = tags[i];
    qsort(sorted, n, sizeof *sorted, delivery_cmp_desc);
    rc = delivery_nack_sorted(t, sorted, n);
    if (sorted != &one)
        free(sorted);
    return rc;
}

void delivery_nack_all(struct delivery_table *t)
{
    size_t n = t->map.n, k = 0;
    uint64_t *tags;

    if (n == 0) {
        map_free(&t->map);
        map_free(&t->leases);
        return;
    }
    tags = malloc(n * sizeof *tags);
    if (tags == NULL) {
        /*
         * No memory to sort: walk tags down from the newest. Each one probe;
         * slow only for a connection that held out-of-order acks for long.
         */
        log_msg(LL_WARN, "out of memory ordering %zu unacked messages", n);
        for (uint64_t tag = t->next_tag - 1; tag > 0 && t->map.n > 0; tag--)
            delivery_nack_sorted(t, &tag, 1);
        map_free(&t->map);
        map_free(&t->leases);
        return;
    }
    for (size_t i = 0; i < t->map.cap; i++)
        if (t->map.ents[i].key != 0)
            tags[k++] = t->map.ents[i].key;
    qsort(tags, k, sizeof *tags, delivery_cmp_desc);
    delivery_nack_sorted(t, tags, k);
    free(tags);
    map_free(&t->map);
    DAEMON_ASSERT(t->leases.n == 0);
    map_free(&t->leases);
}
