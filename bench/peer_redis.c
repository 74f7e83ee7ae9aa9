/*
 * peer_redis.c: the load-test roles against Redis as a job queue: LPUSH
 * to enqueue, BRPOP to dequeue (the list's tail is its oldest element).
 * The batched variant pipelines --batch LPUSHes per round trip and takes
 * up to --batch elements with one RPOP key count, blocking in BRPOP only
 * when the list is empty. Built by run.sh: cc ... $(pkg-config hiredis).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "harness.h"

/* BRPOP's timeout in seconds when polling for the end of the run. */
#define REDIS_POLL_S "0.05"

static redisContext *redis_connect(const struct bench_opts *o)
{
    char host[256];
    int port;
    redisContext *c;

    if (bench_split_addr(o->addr, host, sizeof host, &port) < 0)
        return NULL;
    c = redisConnect(host, port);
    if (c == NULL || c->err) {
        fprintf(stderr, "redis: connect %s: %s\n", o->addr, c ? c->errstr : "no memory");
        if (c != NULL)
            redisFree(c);
        return NULL;
    }
    return c;
}

/* Read one reply that must be an integer (LPUSH's new length). */
static int redis_int_reply(redisContext *c)
{
    redisReply *r;
    int ok;

    if (redisGetReply(c, (void **)&r) != REDIS_OK) {
        fprintf(stderr, "redis: %s\n", c->errstr);
        return -1;
    }
    ok = r->type == REDIS_REPLY_INTEGER;
    if (!ok)
        fprintf(stderr, "redis: unexpected reply type %d\n", r->type);
    freeReplyObject(r);
    return ok ? 0 : -1;
}

static int redis_produce(const struct bench_opts *o, int idx, uint64_t first, uint64_t count)
{
    redisContext *c = redis_connect(o);
    int batch = strcmp(o->variant, "one") == 0 ? 1 : o->batch, rc = -1;
    unsigned char *msg = calloc(1, o->size);

    (void)idx;
    if (c == NULL || msg == NULL)
        goto out;
    bench_wait_go();
    for (uint64_t i = 0; i < count;) {
        int k = 0;

        for (; k < batch && i < count; k++, i++) {
            bench_fill(msg, first + i);
            redisAppendCommand(c, "LPUSH %s %b", o->name, msg, o->size);
        }
        while (k-- > 0)
            if (redis_int_reply(c) < 0)
                goto out;
    }
    rc = 0;
out:
    free(msg);
    if (c != NULL)
        redisFree(c);
    return rc;
}

/* Count one BRPOP reply ([key, value] or nil); 1 taken, 0 nil, -1 error. */
static int redis_take_brpop(redisReply *r)
{
    if (r->type == REDIS_REPLY_NIL)
        return 0;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
        fprintf(stderr, "redis: unexpected BRPOP reply type %d\n", r->type);
        return -1;
    }
    return bench_take(r->element[1]->str, r->element[1]->len) < 0 ? -1 : 1;
}

static int redis_consume(const struct bench_opts *o, int idx)
{
    redisContext *c = redis_connect(o);
    int batch = strcmp(o->variant, "one") == 0 ? 1 : o->batch, rc = -1;

    (void)idx;
    if (c == NULL)
        return -1;
    bench_ready();
    for (;;) {
        redisReply *r;
        int got;

        if (batch > 1) {
            r = redisCommand(c, "RPOP %s %d", o->name, batch);
            if (r == NULL)
                goto err;
            if (r->type == REDIS_REPLY_ARRAY) {
                for (size_t i = 0; i < r->elements; i++) {
                    if (bench_take(r->element[i]->str, r->element[i]->len) < 0) {
                        freeReplyObject(r);
                        goto out;
                    }
                }
                freeReplyObject(r);
                continue;
            }
            freeReplyObject(r);
        }
        r = redisCommand(c, "BRPOP %s " REDIS_POLL_S, o->name);
        if (r == NULL)
            goto err;
        got = redis_take_brpop(r);
        freeReplyObject(r);
        if (got < 0)
            goto out;
        if (got == 0 && bench_finished())
            break;
    }
    rc = 0;
    goto out;
err:
    fprintf(stderr, "redis: %s\n", c->errstr);
out:
    redisFree(c);
    return rc;
}

/* Ping side: LPUSH on list a, BRPOP the echo from list b. */
struct redis_rtt {
    redisContext *c;
    redisReply *last;         /* the last echo, freed at the next receive */
};

static const struct bench_opts *redis_o;   /* for the rtt callbacks' list names */

static int redis_rtt_push(void *ctx, const void *buf, size_t len)
{
    struct redis_rtt *t = ctx;
    redisReply *r = redisCommand(t->c, "LPUSH %s %b", bench_name_a(redis_o), buf, len);
    int ok = r != NULL && r->type == REDIS_REPLY_INTEGER;

    if (r != NULL)
        freeReplyObject(r);
    return ok ? 0 : -1;
}

static const void *redis_rtt_pop(void *ctx, size_t *len)
{
    struct redis_rtt *t = ctx;

    if (t->last != NULL)
        freeReplyObject(t->last);
    t->last = redisCommand(t->c, "BRPOP %s 30", bench_name_b(redis_o));
    if (t->last == NULL || t->last->type != REDIS_REPLY_ARRAY || t->last->elements != 2)
        return NULL;
    *len = t->last->element[1]->len;
    return t->last->element[1]->str;
}

static int redis_ping(const struct bench_opts *o)
{
    struct redis_rtt t = {.c = redis_connect(o)};
    int rc;

    redis_o = o;
    if (t.c == NULL)
        return -1;
    bench_wait_go();
    rc = bench_rtt_run(o, &t, redis_rtt_push, redis_rtt_pop);
    if (t.last != NULL)
        freeReplyObject(t.last);
    redisFree(t.c);
    return rc;
}

static int redis_echo(const struct bench_opts *o)
{
    redisContext *c = redis_connect(o);
    int rc = -1;

    if (c == NULL)
        return -1;
    bench_ready();
    for (;;) {
        redisReply *r = redisCommand(c, "BRPOP %s " REDIS_POLL_S, bench_name_a(o)), *w;

        if (r == NULL)
            break;
        if (r->type == REDIS_REPLY_NIL) {
            freeReplyObject(r);
            if (bench_finished()) {
                rc = 0;
                break;
            }
            continue;
        }
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            freeReplyObject(r);
            break;
        }
        w = redisCommand(c, "LPUSH %s %b", bench_name_b(o), r->element[1]->str,
                         r->element[1]->len);
        freeReplyObject(r);
        if (w == NULL)
            break;
        freeReplyObject(w);
    }
    redisFree(c);
    return rc;
}

static const struct bench_peer redis_peer = {
    .name = "redis",
    .produce = redis_produce,
    .consume = redis_consume,
    .ping = redis_ping,
    .echo = redis_echo,
};

int main(int argc, char **argv)
{
    return bench_main(argc, argv, &redis_peer);
}
