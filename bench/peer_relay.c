/*
 * peer_relay.c: the load-test roles against relay.c, the raw TCP floor.
 * Producers write length-prefixed frames (--variant batch: --batch frames
 * per write); consumers read big chunks and split them into frames.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

/* A frame reader over a blocking socket; owns buf. */
struct relay_rd {
    int fd;
    unsigned char *buf;
    size_t size;              /* allocated: one frame and a large read fit */
    size_t off;               /* start of unparsed bytes */
    size_t len;               /* end of bytes held */
};

static int relay_rd_init(struct relay_rd *r, int fd, size_t frame)
{
    r->fd = fd;
    r->size = frame + 4 + 256 * 1024;
    r->off = r->len = 0;
    r->buf = malloc(r->size);
    return r->buf != NULL ? 0 : -1;
}

static uint32_t relay_get32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The next whole frame already read, or NULL. */
static const unsigned char *relay_rd_next(struct relay_rd *r, size_t *len)
{
    uint32_t n;

    if (r->len - r->off < 4)
        return NULL;
    n = relay_get32(r->buf + r->off);
    if (r->len - r->off < 4 + (size_t)n)
        return NULL;
    *len = n;
    r->off += 4 + (size_t)n;
    return r->buf + r->off - n;
}

/* Read more; waits at most ms (-1: for ever). 1 read, 0 timeout, -1 error/EOF. */
static int relay_rd_fill(struct relay_rd *r, int ms)
{
    struct pollfd p = {.fd = r->fd, .events = POLLIN};
    ssize_t got;

    if (r->off > 0) {
        memmove(r->buf, r->buf + r->off, r->len - r->off);
        r->len -= r->off;
        r->off = 0;
    }
    if (ms >= 0) {
        int pr = poll(&p, 1, ms);

        if (pr == 0)
            return 0;
        if (pr < 0)
            return errno == EINTR ? 0 : -1;
    }
    got = read(r->fd, r->buf + r->len, r->size - r->len);
    if (got < 0 && errno == EINTR)
        return 0;
    if (got <= 0) {
        fprintf(stderr, "relay: read: %s\n", got == 0 ? "EOF" : strerror(errno));
        return -1;
    }
    r->len += (size_t)got;
    return 1;
}

static int relay_open(const struct bench_opts *o, char role, int chan)
{
    int fd = bench_dial(o->addr);
    unsigned char hello[2] = {(unsigned char)role, (unsigned char)chan};

    char ack = 0;

    if (fd < 0)
        return -1;
    /* a consumer is in the relay's ring once the 'K' is back */
    if (bench_write_all(fd, hello, 2) < 0 ||
        (role == 'C' && (read(fd, &ack, 1) != 1 || ack != 'K'))) {
        fprintf(stderr, "relay: hello refused\n");
        close(fd);
        return -1;
    }
    return fd;
}

static void relay_put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static int relay_produce(const struct bench_opts *o, int idx, uint64_t first, uint64_t count)
{
    int fd = relay_open(o, 'P', 0), batch = strcmp(o->variant, "one") == 0 ? 1 : o->batch;
    size_t fsz = o->size + 4;
    unsigned char *buf = calloc((size_t)batch, fsz);
    int rc = -1;

    (void)idx;
    if (fd < 0 || buf == NULL)
        goto out;
    bench_wait_go();
    for (uint64_t i = 0; i < count;) {
        int k = 0;

        for (; k < batch && i < count; k++, i++) {
            relay_put32(buf + (size_t)k * fsz, (uint32_t)o->size);
            bench_fill(buf + (size_t)k * fsz + 4, first + i);
        }
        if (bench_write_all(fd, buf, (size_t)k * fsz) < 0)
            goto out;
    }
    rc = 0;
out:
    free(buf);
    if (fd >= 0)
        close(fd);
    return rc;
}

static int relay_consume(const struct bench_opts *o, int idx)
{
    int fd = relay_open(o, 'C', 0), rc = -1;
    struct relay_rd r = {.buf = NULL};

    (void)idx;
    if (fd < 0 || relay_rd_init(&r, fd, o->size) < 0)
        goto out;
    bench_ready();
    for (;;) {
        const unsigned char *f;
        size_t len;
        int got;

        while ((f = relay_rd_next(&r, &len)) != NULL)
            if (bench_take(f, len) < 0)
                goto out;
        got = relay_rd_fill(&r, BENCH_POLL_MS);
        if (got < 0)
            goto out;
        if (got == 0 && bench_finished())
            break;
    }
    rc = 0;
out:
    free(r.buf);
    if (fd >= 0)
        close(fd);
    return rc;
}

/* Ping side: frames out on channel 0, echoes back on channel 1. */
struct relay_rtt {
    int out;
    struct relay_rd in;
    unsigned char *frame;     /* header + payload being sent */
};

static int relay_rtt_send(void *ctx, const void *buf, size_t len)
{
    struct relay_rtt *t = ctx;

    relay_put32(t->frame, (uint32_t)len);
    memcpy(t->frame + 4, buf, len);
    return bench_write_all(t->out, t->frame, len + 4);
}

static const void *relay_rtt_recv(void *ctx, size_t *len)
{
    struct relay_rtt *t = ctx;
    const unsigned char *f;

    while ((f = relay_rd_next(&t->in, len)) == NULL)
        if (relay_rd_fill(&t->in, -1) < 0)
            return NULL;
    return f;
}

static int relay_ping(const struct bench_opts *o)
{
    struct relay_rtt t = {.out = relay_open(o, 'P', 0)};
    int in = relay_open(o, 'C', 1), rc = -1;

    t.frame = malloc(o->size + 4);
    if (t.out < 0 || in < 0 || t.frame == NULL || relay_rd_init(&t.in, in, o->size) < 0)
        goto out;
    bench_wait_go();
    rc = bench_rtt_run(o, &t, relay_rtt_send, relay_rtt_recv);
out:
    free(t.frame);
    free(t.in.buf);
    if (t.out >= 0)
        close(t.out);
    if (in >= 0)
        close(in);
    return rc;
}

static int relay_echo(const struct bench_opts *o)
{
    int in = relay_open(o, 'C', 0), out = relay_open(o, 'P', 1), rc = -1;
    struct relay_rd r = {.buf = NULL};

    if (in < 0 || out < 0 || relay_rd_init(&r, in, o->size) < 0)
        goto out;
    bench_ready();
    for (;;) {
        const unsigned char *f;
        size_t len;
        int got;

        /* the frame is still in r.buf with its header just before it */
        while ((f = relay_rd_next(&r, &len)) != NULL)
            if (bench_write_all(out, f - 4, len + 4) < 0)
                goto out;
        got = relay_rd_fill(&r, BENCH_POLL_MS);
        if (got < 0)
            goto out;
        if (got == 0 && bench_finished())
            break;
    }
    rc = 0;
out:
    free(r.buf);
    if (in >= 0)
        close(in);
    if (out >= 0)
        close(out);
    return rc;
}

static const struct bench_peer relay_peer = {
    .name = "relay",
    .produce = relay_produce,
    .consume = relay_consume,
    .ping = relay_ping,
    .echo = relay_echo,
};

int main(int argc, char **argv)
{
    return bench_main(argc, argv, &relay_peer);
}
