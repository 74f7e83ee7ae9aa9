/*
 * peer_beanstalk.c: the load-test roles against beanstalkd, with a minimal
 * client of its text protocol (put, use, watch, reserve-with-timeout,
 * delete). The batched variant pipelines --batch puts per write, and on the
 * consumer side --batch non-blocking reserves together with the deletes of
 * the previous round, which is as close to a batch as the protocol gets.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define BS_TTR 600            /* seconds a reserved job stays ours */

/* A connection with its read buffer; owns buf. */
struct bs {
    int fd;
    char *buf;
    size_t size, off, len;    /* allocated, first unparsed byte, end of data */
    char *out;                /* a request being assembled; owned */
    size_t out_len, out_size;
};

static int bs_open(struct bs *b, const struct bench_opts *o)
{
    *b = (struct bs){.fd = bench_dial(o->addr), .size = 256 * 1024};
    b->buf = malloc(b->size);
    return b->fd >= 0 && b->buf != NULL ? 0 : -1;
}

static void bs_close(struct bs *b)
{
    if (b->fd >= 0)
        close(b->fd);
    free(b->buf);
    free(b->out);
}

/* Make room for n more unparsed bytes and read at least one. */
static int bs_fill(struct bs *b, size_t need)
{
    ssize_t r;

    if (b->off > 0) {
        memmove(b->buf, b->buf + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
    }
    if (need + 1 > b->size) {
        char *nb = realloc(b->buf, need + 1 + 65536);

        if (nb == NULL)
            return -1;
        b->buf = nb;
        b->size = need + 1 + 65536;
    }
    r = read(b->fd, b->buf + b->len, b->size - b->len);
    if (r < 0 && errno == EINTR)
        return 0;
    if (r <= 0) {
        fprintf(stderr, "beanstalk: read: %s\n", r == 0 ? "EOF" : strerror(errno));
        return -1;
    }
    b->len += (size_t)r;
    return 0;
}

/* The next reply line without its CRLF (NUL-terminated in place), or NULL. */
static char *bs_line(struct bs *b)
{
    for (;;) {
        char *s = b->buf + b->off, *e = memchr(s, '\n', b->len - b->off);

        if (e != NULL && e > s && e[-1] == '\r') {
            e[-1] = '\0';
            b->off = (size_t)(e + 1 - b->buf);
            return s;
        }
        if (bs_fill(b, b->len - b->off + 4096) < 0)
            return NULL;
    }
}

/* The n-byte body that follows a RESERVED line, and its CRLF. */
static char *bs_body(struct bs *b, size_t n)
{
    char *s;

    while (b->len - b->off < n + 2)
        if (bs_fill(b, n + 2) < 0)
            return NULL;
    s = b->buf + b->off;
    b->off += n + 2;
    return s;
}

static int bs_add(struct bs *b, const void *p, size_t n)
{
    if (b->out_len + n > b->out_size) {
        size_t want = (b->out_len + n) * 2;
        char *nb = realloc(b->out, want);

        if (nb == NULL)
            return -1;
        b->out = nb;
        b->out_size = want;
    }
    memcpy(b->out + b->out_len, p, n);
    b->out_len += n;
    return 0;
}

/* Append "verb v\r\n". */
static int bs_addf(struct bs *b, const char *verb, unsigned long long v)
{
    char line[128];
    int n = snprintf(line, sizeof line, "%s %llu\r\n", verb, v);

    return bs_add(b, line, (size_t)n);
}

static int bs_add_put(struct bs *b, const void *data, size_t len)
{
    char line[64];
    int n = snprintf(line, sizeof line, "put 0 0 %d %zu\r\n", BS_TTR, len);

    return bs_add(b, line, (size_t)n) < 0 || bs_add(b, data, len) < 0 ||
                   bs_add(b, "\r\n", 2) < 0
               ? -1
               : 0;
}

static int bs_send(struct bs *b)
{
    int rc = bench_write_all(b->fd, b->out, b->out_len);

    b->out_len = 0;
    return rc;
}

/* Read one reply line and check it starts with want. */
static int bs_expect(struct bs *b, const char *want)
{
    char *l = bs_line(b);

    if (l == NULL)
        return -1;
    if (strncmp(l, want, strlen(want)) != 0) {
        fprintf(stderr, "beanstalk: got \"%s\", want %s\n", l, want);
        return -1;
    }
    return 0;
}

/* Send one command line and check its reply. */
static int bs_cmd(struct bs *b, const char *cmd, const char *arg, const char *want)
{
    char line[300];
    int n = snprintf(line, sizeof line, "%s %s\r\n", cmd, arg);

    return bench_write_all(b->fd, line, (size_t)n) < 0 ? -1 : bs_expect(b, want);
}

/* Watch tube and only it. */
static int bs_watch(struct bs *b, const char *tube)
{
    return bs_cmd(b, "watch", tube, "WATCHING") < 0 ||
                   bs_cmd(b, "ignore", "default", "WATCHING") < 0
               ? -1
               : 0;
}

/*
 * Read one reply to a reserve: 1 with *id and the body, 0 for TIMED_OUT,
 * -1 on anything else.
 */
static int bs_reserved(struct bs *b, unsigned long long *id, const char **data, size_t *len)
{
    char *l = bs_line(b);
    unsigned long long n;

    if (l == NULL)
        return -1;
    if (strcmp(l, "TIMED_OUT") == 0)
        return 0;
    if (sscanf(l, "RESERVED %llu %llu", id, &n) != 2) {
        fprintf(stderr, "beanstalk: got \"%s\" for reserve\n", l);
        return -1;
    }
    *len = (size_t)n;
    *data = bs_body(b, *len);
    return *data != NULL ? 1 : -1;
}

static int bs_produce(const struct bench_opts *o, int idx, uint64_t first, uint64_t count)
{
    struct bs b;
    int batch = strcmp(o->variant, "one") == 0 ? 1 : o->batch, rc = -1;
    unsigned char *msg = calloc(1, o->size);

    (void)idx;
    if (bs_open(&b, o) < 0 || msg == NULL || bs_cmd(&b, "use", o->name, "USING") < 0)
        goto out;
    bench_wait_go();
    for (uint64_t i = 0; i < count;) {
        int k = 0;

        for (; k < batch && i < count; k++, i++) {
            bench_fill(msg, first + i);
            if (bs_add_put(&b, msg, o->size) < 0)
                goto out;
        }
        if (bs_send(&b) < 0)
            goto out;
        while (k-- > 0)
            if (bs_expect(&b, "INSERTED") < 0)
                goto out;
    }
    rc = 0;
out:
    free(msg);
    bs_close(&b);
    return rc;
}

static int bs_consume(const struct bench_opts *o, int idx)
{
    struct bs b;
    int batch = strcmp(o->variant, "one") == 0 ? 1 : o->batch, rc = -1, ndel = 0;
    unsigned long long *ids = calloc((size_t)batch, sizeof *ids);

    (void)idx;
    if (bs_open(&b, o) < 0 || ids == NULL || bs_watch(&b, o->name) < 0)
        goto out;
    bench_ready();
    for (;;) {
        int got = 0, ask = batch, wait = batch == 1;

        /* the deletes of the last round ride along with the next reserves */
        for (int i = 0; i < ndel; i++)
            if (bs_addf(&b, "delete", ids[i]) < 0)
                goto out;
        for (int i = 0; i < ask; i++)
            if (bs_addf(&b, "reserve-with-timeout", wait ? 1 : 0) < 0)
                goto out;
        if (bs_send(&b) < 0)
            goto out;
        for (; ndel > 0; ndel--)
            if (bs_expect(&b, "DELETED") < 0)
                goto out;
        for (int i = 0; i < ask; i++) {
            const char *data;
            size_t len;
            int r = bs_reserved(&b, &ids[got], &data, &len);

            if (r < 0)
                goto out;
            if (r == 1) {
                if (bench_take(data, len) < 0)
                    goto out;
                got++;
            }
        }
        ndel = got;
        if (got > 0)
            continue;
        if (!wait) {
            /* nothing ready: block in one reserve instead of spinning */
            const char *data;
            size_t len;
            int r;

            if (bs_addf(&b, "reserve-with-timeout", 1) < 0 || bs_send(&b) < 0)
                goto out;
            r = bs_reserved(&b, &ids[0], &data, &len);
            if (r < 0 || (r == 1 && bench_take(data, len) < 0))
                goto out;
            ndel = r;
            if (r == 1)
                continue;
        }
        if (bench_finished())
            break;
    }
    rc = 0;
out:
    free(ids);
    bs_close(&b);
    return rc;
}

/* Ping side: puts on tube a, reserves from tube b; a delete rides with the next put. */
struct bs_rtt {
    struct bs b;
    unsigned long long last;  /* reserved job to delete, or 0 */
};

static int bs_rtt_send(void *ctx, const void *buf, size_t len)
{
    struct bs_rtt *t = ctx;
    int del = t->last != 0;

    if ((del && bs_addf(&t->b, "delete", t->last) < 0) ||
        bs_add_put(&t->b, buf, len) < 0 || bs_send(&t->b) < 0)
        return -1;
    t->last = 0;
    if (del && bs_expect(&t->b, "DELETED") < 0)
        return -1;
    return bs_expect(&t->b, "INSERTED");
}

static const void *bs_rtt_recv(void *ctx, size_t *len)
{
    struct bs_rtt *t = ctx;
    const char *data;

    if (bs_addf(&t->b, "reserve-with-timeout", 30) < 0 || bs_send(&t->b) < 0 ||
        bs_reserved(&t->b, &t->last, &data, len) != 1)
        return NULL;
    return data;
}

static int bs_ping(const struct bench_opts *o)
{
    struct bs_rtt t = {.last = 0};
    int rc = -1;

    if (bs_open(&t.b, o) < 0 || bs_cmd(&t.b, "use", bench_name_a(o), "USING") < 0 ||
        bs_watch(&t.b, bench_name_b(o)) < 0)
        goto out;
    bench_wait_go();
    rc = bench_rtt_run(o, &t, bs_rtt_send, bs_rtt_recv);
out:
    bs_close(&t.b);
    return rc;
}

static int bs_echo(const struct bench_opts *o)
{
    struct bs b;
    int rc = -1;
    unsigned long long id;
    const char *data;
    size_t len;

    if (bs_open(&b, o) < 0 || bs_cmd(&b, "use", bench_name_b(o), "USING") < 0 ||
        bs_watch(&b, bench_name_a(o)) < 0)
        goto out;
    bench_ready();
    if (bs_addf(&b, "reserve-with-timeout", 1) < 0 || bs_send(&b) < 0)
        goto out;
    for (;;) {
        int r = bs_reserved(&b, &id, &data, &len);

        if (r < 0)
            goto out;
        if (r == 0) {
            if (bench_finished())
                break;
            if (bs_addf(&b, "reserve-with-timeout", 1) < 0 || bs_send(&b) < 0)
                goto out;
            continue;
        }
        /* delete, put the echo and reserve the next one in one write */
        if (bs_addf(&b, "delete", id) < 0 || bs_add_put(&b, data, len) < 0 ||
            bs_addf(&b, "reserve-with-timeout", 1) < 0 || bs_send(&b) < 0)
            goto out;
        if (bs_expect(&b, "DELETED") < 0 || bs_expect(&b, "INSERTED") < 0)
            goto out;
    }
    rc = 0;
out:
    bs_close(&b);
    return rc;
}

static const struct bench_peer bs_peer = {
    .name = "beanstalkd",
    .produce = bs_produce,
    .consume = bs_consume,
    .ping = bs_ping,
    .echo = bs_echo,
};

int main(int argc, char **argv)
{
    return bench_main(argc, argv, &bs_peer);
}
