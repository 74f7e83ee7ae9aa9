/*
 * peer_nats.c: the load-test roles against NATS core with a queue group:
 * producers publish on a subject, consumers share it through one queue
 * group, so each message goes to one of them. NATS core is at-most-once;
 * the subscriptions' pending limits are lifted (and run.sh raises the
 * server's) so that no message is dropped for a slow consumer and the
 * exactly-once check holds. The batched variant is NATS's natural one
 * (publishes are buffered by the library); one op per call flushes after
 * each publish, a round trip, as a confirmed send would. Built by run.sh:
 * cc ... $(pkg-config libnats).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nats/nats.h>

#include "harness.h"

#define NATS_QUEUE "workers"

static natsConnection *nats_connect(const struct bench_opts *o, int send_asap)
{
    char url[300];
    natsOptions *opts = NULL;
    natsConnection *nc = NULL;
    natsStatus s;

    snprintf(url, sizeof url, "nats://%s", o->addr);
    s = natsOptions_Create(&opts);
    if (s == NATS_OK)
        s = natsOptions_SetURL(opts, url);
    if (s == NATS_OK)
        s = natsOptions_SetSendAsap(opts, send_asap);
    if (s == NATS_OK && o->size > 16384)
        s = natsOptions_SetIOBufSize(opts, 1 << 20);
    if (s == NATS_OK)
        s = natsConnection_Connect(&nc, opts);
    natsOptions_Destroy(opts);
    if (s != NATS_OK) {
        fprintf(stderr, "nats: connect %s: %s\n", url, natsStatus_GetText(s));
        return NULL;
    }
    return nc;
}

static int nats_produce(const struct bench_opts *o, int idx, uint64_t first, uint64_t count)
{
    natsConnection *nc = nats_connect(o, 0);
    unsigned char *msg = calloc(1, o->size);
    int one = strcmp(o->variant, "one") == 0, rc = -1;
    natsStatus s = NATS_OK;

    (void)idx;
    if (nc == NULL || msg == NULL)
        goto out;
    bench_wait_go();
    for (uint64_t i = 0; i < count && s == NATS_OK; i++) {
        bench_fill(msg, first + i);
        s = natsConnection_Publish(nc, o->name, msg, (int)o->size);
        if (s == NATS_OK && one)
            s = natsConnection_FlushTimeout(nc, 30000);
    }
    if (s == NATS_OK)
        s = natsConnection_FlushTimeout(nc, 60000);
    if (s != NATS_OK)
        fprintf(stderr, "nats: publish: %s\n", natsStatus_GetText(s));
    else
        rc = 0;
out:
    free(msg);
    if (nc != NULL)
        natsConnection_Destroy(nc);
    return rc;
}

static natsSubscription *nats_sub(natsConnection *nc, const char *subj)
{
    natsSubscription *sub = NULL;
    natsStatus s = natsConnection_QueueSubscribeSync(&sub, nc, subj, NATS_QUEUE);

    if (s == NATS_OK)
        s = natsSubscription_SetPendingLimits(sub, -1, -1); /* no limit */
    /* the server knows the subscription once the flush's PONG is back */
    if (s == NATS_OK)
        s = natsConnection_FlushTimeout(nc, 10000);
    if (s != NATS_OK) {
        fprintf(stderr, "nats: subscribe %s: %s\n", subj, natsStatus_GetText(s));
        natsSubscription_Destroy(sub);
        return NULL;
    }
    return sub;
}

static int nats_consume(const struct bench_opts *o, int idx)
{
    natsConnection *nc = nats_connect(o, 0);
    natsSubscription *sub = nc ? nats_sub(nc, o->name) : NULL;
    int rc = -1;

    (void)idx;
    if (sub == NULL)
        goto out;
    bench_ready();
    for (;;) {
        natsMsg *m = NULL;
        natsStatus s = natsSubscription_NextMsg(&m, sub, BENCH_POLL_MS);

        if (s == NATS_OK) {
            int bad = bench_take(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m)) < 0;

            natsMsg_Destroy(m);
            if (bad)
                goto out;
            continue;
        }
        if (s == NATS_TIMEOUT) {
            if (bench_finished())
                break;
            continue;
        }
        fprintf(stderr, "nats: next: %s\n", natsStatus_GetText(s));
        goto out;
    }
    rc = 0;
out:
    natsSubscription_Destroy(sub);
    if (nc != NULL)
        natsConnection_Destroy(nc);
    return rc;
}

/* Ping side: publish on subject a, the echo comes back on b. */
struct nats_rtt {
    natsConnection *nc;
    natsSubscription *sub;
    natsMsg *last;            /* the last echo, destroyed at the next receive */
    const char *subj;
};

static int nats_rtt_send(void *ctx, const void *buf, size_t len)
{
    struct nats_rtt *t = ctx;

    return natsConnection_Publish(t->nc, t->subj, buf, (int)len) == NATS_OK ? 0 : -1;
}

static const void *nats_rtt_recv(void *ctx, size_t *len)
{
    struct nats_rtt *t = ctx;

    natsMsg_Destroy(t->last);
    t->last = NULL;
    if (natsSubscription_NextMsg(&t->last, t->sub, 30000) != NATS_OK)
        return NULL;
    *len = (size_t)natsMsg_GetDataLength(t->last);
    return natsMsg_GetData(t->last);
}

static int nats_ping(const struct bench_opts *o)
{
    struct nats_rtt t = {.nc = nats_connect(o, 1), .subj = bench_name_a(o)};
    char b[256];
    int rc = -1;

    snprintf(b, sizeof b, "%s", bench_name_b(o));
    if (t.nc == NULL || (t.sub = nats_sub(t.nc, b)) == NULL)
        goto out;
    bench_wait_go();
    rc = bench_rtt_run(o, &t, nats_rtt_send, nats_rtt_recv);
out:
    natsMsg_Destroy(t.last);
    natsSubscription_Destroy(t.sub);
    if (t.nc != NULL)
        natsConnection_Destroy(t.nc);
    return rc;
}

static int nats_echo(const struct bench_opts *o)
{
    natsConnection *nc = nats_connect(o, 1);
    natsSubscription *sub = nc ? nats_sub(nc, bench_name_a(o)) : NULL;
    char b[256];
    int rc = -1;

    snprintf(b, sizeof b, "%s", bench_name_b(o));
    if (sub == NULL)
        goto out;
    bench_ready();
    for (;;) {
        natsMsg *m = NULL;
        natsStatus s = natsSubscription_NextMsg(&m, sub, BENCH_POLL_MS);

        if (s == NATS_OK) {
            s = natsConnection_Publish(nc, b, natsMsg_GetData(m), natsMsg_GetDataLength(m));
            natsMsg_Destroy(m);
            if (s != NATS_OK)
                goto out;
            continue;
        }
        if (s == NATS_TIMEOUT && bench_finished())
            break;
        if (s != NATS_TIMEOUT)
            goto out;
    }
    rc = 0;
out:
    natsSubscription_Destroy(sub);
    if (nc != NULL)
        natsConnection_Destroy(nc);
    return rc;
}

static const struct bench_peer nats_peer = {
    .name = "nats",
    .produce = nats_produce,
    .consume = nats_consume,
    .ping = nats_ping,
    .echo = nats_echo,
};

int main(int argc, char **argv)
{
    return bench_main(argc, argv, &nats_peer);
}
