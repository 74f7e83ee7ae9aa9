/*
 * delivery.c: what a connection has received and not yet settled
 * (DESIGN.md section 2). Each delivery gets the connection's next tag; an
 * ACK frees the message, a NACK or the connection's death hands it back to
 * the head of its channel. Giving back several at once goes last-first, so
 * each channel gets them back in their original order.
 */
#include <stdlib.h>

#include "daemon.h"

void delivery_init(struct delivery_table *t)
{
    map_init(&t->map);
    t->next_tag = 1;
}

size_t delivery_count(const struct delivery_table *t)
{
    return t->map.n;
}

uint64_t delivery_add(struct delivery_table *t, struct chan *ch, struct msg *m)
{
    uint64_t tag = t->next_tag;

    if (map_put(&t->map, tag, m, ch) < 0)
        return 0;
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
        return;
    }
    for (size_t i = 0; i < t->map.cap; i++)
        if (t->map.ents[i].key != 0)
            tags[k++] = t->map.ents[i].key;
    qsort(tags, k, sizeof *tags, delivery_cmp_desc);
    delivery_nack_sorted(t, tags, k);
    free(tags);
    map_free(&t->map);
}
