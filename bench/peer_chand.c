/*
 * peer_chand.c: the load-test roles against chand through libchanclient.
 * --conc K runs K coroutines per process on one connection (K concurrent
 * requests in flight); with --variant many each coroutine moves --batch
 * messages per call with chan_send_many/chan_recv_many. Consumers block
 * without a deadline and stop when the channel is closed and drained: the
 * last producer to finish closes it, as a Go program would.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <chan.h>

#include "harness.h"
#include "have_many.h"

#ifdef BENCH_HAVE_MANY
#include <sys/uio.h>
#endif

/* One coroutine's job: its channel and, for a producer, its share. */
struct chand_job {
    const struct bench_opts *o;
    chan_t *ch;
    uint64_t first;           /* producer: first sequence number */
    uint64_t count;           /* producer: how many */
    int failed;               /* set when an operation failed */
};

static int chand_batched(const struct bench_opts *o)
{
    return strcmp(o->variant, "many") == 0;
}

static void chand_produce_cr(void *arg)
{
    struct chand_job *j = arg;
    const struct bench_opts *o = j->o;
    unsigned char *buf = calloc((size_t)o->batch, o->size);
    uint64_t i = 0;

    if (buf == NULL) {
        j->failed = 1;
        return;
    }
#ifdef BENCH_HAVE_MANY
    if (chand_batched(o)) {
        struct iovec *iov = calloc((size_t)o->batch, sizeof *iov);

        if (iov == NULL) {
            j->failed = 1;
            goto out;
        }
        while (i < j->count) {
            int k = j->count - i < (uint64_t)o->batch ? (int)(j->count - i) : o->batch;
            int sent;

            for (int b = 0; b < k; b++) {
                iov[b].iov_base = buf + (size_t)b * o->size;
                iov[b].iov_len = o->size;
                bench_fill(iov[b].iov_base, j->first + i + (uint64_t)b);
            }
            sent = chan_send_many(j->ch, iov, k, -1);
            if (sent < 1) {
                perror("chand: send_many");
                j->failed = 1;
                break;
            }
            i += (uint64_t)sent;
        }
        free(iov);
        goto out;
    }
#endif
    for (; i < j->count; i++) {
        bench_fill(buf, j->first + i);
        if (chan_send(j->ch, buf, o->size, -1) < 0) {
            perror("chand: send");
            j->failed = 1;
            break;
        }
    }
#ifdef BENCH_HAVE_MANY
out:
#endif
    free(buf);
}

static void chand_consume_cr(void *arg)
{
    struct chand_job *j = arg;
    const struct bench_opts *o = j->o;
    int batch = chand_batched(o) ? o->batch : 1;
    chan_msg_t *m = calloc((size_t)batch, sizeof *m);

    if (m == NULL) {
        j->failed = 1;
        return;
    }
    for (;;) {
        int got;

#ifdef BENCH_HAVE_MANY
        if (batch > 1)
            got = chan_recv_many(j->ch, m, batch, -1);
        else
#endif
            got = chan_recv(j->ch, m, -1);
        if (got == 0)
            break; /* closed and drained: the last producer is done */
        if (got < 0) {
            perror("chand: recv");
            j->failed = 1;
            break;
        }
        for (int b = 0; b < got; b++) {
            if (bench_take(m[b].data, m[b].len) < 0)
                j->failed = 1;
            chan_msg_free(&m[b]);
        }
        if (j->failed)
            break;
    }
    free(m);
}

/* Run fn on K coroutines sharing ch, splitting [first, first+count). */
static int chand_run(const struct bench_opts *o, chan_t *ch, void (*fn)(void *),
                     uint64_t first, uint64_t count)
{
    struct chand_job *jobs = calloc((size_t)o->conc, sizeof *jobs);
    int *crs = calloc((size_t)o->conc, sizeof *crs);
    int failed = 0;

    if (jobs == NULL || crs == NULL) {
        free(jobs);
        free(crs);
        return -1;
    }
    for (int k = 0; k < o->conc; k++) {
        uint64_t share = count / (uint64_t)o->conc + ((uint64_t)k < count % (uint64_t)o->conc);

        jobs[k] = (struct chand_job){.o = o, .ch = ch, .first = first, .count = share};
        first += share;
        crs[k] = chan_go(fn, &jobs[k]);
        if (crs[k] < 0) {
            perror("chand: chan_go");
            failed = 1;
        }
    }
    for (int k = 0; k < o->conc; k++) {
        if (crs[k] > 0 && chan_join(crs[k], -1) < 0)
            failed = 1;
        failed |= jobs[k].failed;
    }
    free(jobs);
    free(crs);
    return failed ? -1 : 0;
}

static chan_client_t *chand_connect(const struct bench_opts *o)
{
    chan_client_t *cl = chan_connect(o->addr, NULL);

    if (cl == NULL)
        fprintf(stderr, "chand: connect %s: %s\n", o->addr, strerror(errno));
    return cl;
}

static chan_t *chand_open(chan_client_t *cl, const char *name, long cap)
{
    chan_t *ch = chan_open(cl, name, cap);

    if (ch == NULL)
        fprintf(stderr, "chand: open %s: %s\n", name, strerror(errno));
    return ch;
}

static int chand_produce(const struct bench_opts *o, int idx, uint64_t first, uint64_t count)
{
    chan_client_t *cl = chand_connect(o);
    chan_t *ch;
    int rc = -1;

    (void)idx;
    if (cl == NULL)
        return -1;
    ch = chand_open(cl, o->name, o->cap);
    if (ch != NULL) {
        bench_wait_go();
        rc = chand_run(o, ch, chand_produce_cr, first, count);
        /* as a Go program would: the last sender closes, receivers drain */
        if (bench_producer_done() && chan_close(ch) < 0) {
            perror("chand: close");
            rc = -1;
        }
        chan_free(ch);
    }
    chan_disconnect(cl);
    return rc;
}

static int chand_consume(const struct bench_opts *o, int idx)
{
    chan_client_t *cl = chand_connect(o);
    chan_t *ch;
    int rc = -1;

    (void)idx;
    if (cl == NULL)
        return -1;
    ch = chand_open(cl, o->name, o->cap);
    if (ch != NULL) {
        bench_ready();
        rc = chand_run(o, ch, chand_consume_cr, 0, 0);
        chan_free(ch);
    }
    chan_disconnect(cl);
    return rc;
}

/* The ping side's two channels, for bench_rtt_run's callbacks. */
struct chand_rtt {
    chan_t *a, *b;
    chan_msg_t m;             /* the last echo, freed at the next receive */
};

static int chand_rtt_send(void *ctx, const void *buf, size_t len)
{
    struct chand_rtt *r = ctx;

    if (chan_send(r->a, buf, len, -1) < 0) {
        perror("chand: ping send");
        return -1;
    }
    return 0;
}

static const void *chand_rtt_recv(void *ctx, size_t *len)
{
    struct chand_rtt *r = ctx;

    chan_msg_free(&r->m);
    if (chan_recv(r->b, &r->m, -1) != 1) {
        perror("chand: ping recv");
        return NULL;
    }
    *len = r->m.len;
    return r->m.data;
}

static int chand_ping(const struct bench_opts *o)
{
    chan_client_t *cl = chand_connect(o);
    struct chand_rtt r = {0};
    int rc = -1;

    if (cl == NULL)
        return -1;
    r.a = chand_open(cl, bench_name_a(o), o->cap);
    r.b = chand_open(cl, bench_name_b(o), o->cap);
    if (r.a != NULL && r.b != NULL) {
        bench_wait_go();
        rc = bench_rtt_run(o, &r, chand_rtt_send, chand_rtt_recv);
        chan_msg_free(&r.m);
        if (chan_close(r.a) < 0) /* the echo's end */
            rc = -1;
    }
    chan_free(r.a);
    chan_free(r.b);
    chan_disconnect(cl);
    return rc;
}

static int chand_echo(const struct bench_opts *o)
{
    chan_client_t *cl = chand_connect(o);
    chan_t *a, *b;
    int rc = -1;

    if (cl == NULL)
        return -1;
    a = chand_open(cl, bench_name_a(o), o->cap);
    b = chand_open(cl, bench_name_b(o), o->cap);
    if (a != NULL && b != NULL) {
        bench_ready();
        for (;;) {
            chan_msg_t m;
            int got = chan_recv(a, &m, -1);

            if (got == 1) {
                int s = chan_send(b, m.data, m.len, -1);

                chan_msg_free(&m);
                if (s < 0) {
                    perror("chand: echo send");
                    break;
                }
                continue;
            }
            if (got == 0) { /* the ping side closed a: done */
                rc = 0;
                break;
            }
            perror("chand: echo recv");
            break;
        }
    }
    chan_free(a);
    chan_free(b);
    chan_disconnect(cl);
    return rc;
}

static const struct bench_peer chand_peer = {
    .name = "chand",
    .produce = chand_produce,
    .consume = chand_consume,
    .ping = chand_ping,
    .echo = chand_echo,
};

int main(int argc, char **argv)
{
#ifndef BENCH_HAVE_MANY
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "many") == 0 || strcmp(argv[i], "--variant=many") == 0) {
            fprintf(stderr, "chand: this libchanclient has no chan_send_many\n");
            return 2;
        }
    }
#endif
    return bench_main(argc, argv, &chand_peer);
}
