/*
 * relay.c: the floor. A single-threaded epoll server that forwards
 * 4-byte big-endian length-prefixed frames from producers to consumers and
 * does nothing else: no acks, no buffering policy, no protocol. No broker
 * that also keeps a queue, acks and FIFO per channel can beat it on the
 * same machine, so run.sh reports every broker as a fraction of it.
 *
 * A connection opens with two bytes: 'P' or 'C' (producer or consumer) and
 * a channel number 0..255; the relay answers a consumer's hello with one
 * byte 'K' once it is in the channel's ring. The whole frames of one read
 * from a producer go, in one piece, to the next consumer of its channel
 * (round robin); a partial frame waits in the producer's buffer for its
 * rest, so frames of different producers never interleave. A channel with
 * no consumer keeps its frames until one comes. When a consumer's output
 * passes RELAY_HIGH bytes, producers are not read until every output is
 * below RELAY_LOW (the only backpressure).
 *
 * usage: relay [--port N] [--port-file F]   (listens on 127.0.0.1 only)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define RELAY_READ (256u * 1024)        /* bytes per read() */
#define RELAY_HIGH (8u * 1024 * 1024)   /* a consumer's output above this pauses producers */
#define RELAY_LOW (1u * 1024 * 1024)    /* ... until every output is below this */

/* A growable byte queue; owns data. */
struct relay_buf {
    unsigned char *data;
    size_t off;               /* first unsent byte */
    size_t len;               /* end of the bytes held */
    size_t size;              /* allocated */
};

enum relay_kind {
    KIND_NEW = 0,     /* hello not read yet */
    KIND_PRODUCER,    /* sends frames */
    KIND_CONSUMER,    /* receives frames */
    KIND_MAX
};

/* One client connection; owned by the relay_conns table, indexed by fd. */
struct relay_conn {
    int fd;
    int kind;                 /* enum relay_kind */
    int chan;                 /* channel number */
    unsigned char hello[2];   /* hello bytes read so far */
    int nhello;
    /* producer */
    struct relay_buf in;      /* bytes read, not forwarded yet: at most one partial frame */
    /* consumer */
    struct relay_buf out;     /* bytes waiting for the socket */
    int want_out;             /* EPOLLOUT armed */
    struct relay_conn *next;  /* ring of the channel's consumers */
};

/* A channel: a ring of consumers and a backlog for when there is none. */
struct relay_chan {
    struct relay_conn *ring;  /* next consumer to get a frame */
    struct relay_buf backlog;
};

static struct relay_conn **relay_conns;    /* by fd */
static size_t relay_nconns;                /* slots in relay_conns */
static struct relay_chan relay_chans[256];
static int relay_epfd;
static int relay_paused;                   /* producers not being read */

static void relay_die(const char *what)
{
    perror(what);
    exit(1);
}

static int relay_buf_put(struct relay_buf *b, const unsigned char *p, size_t n)
{
    if (b->off > 0 && b->off == b->len)
        b->off = b->len = 0;
    if (b->len + n > b->size) {
        size_t live = b->len - b->off, want = b->size ? b->size : 65536;
        unsigned char *d;

        if (b->off > 0) {
            memmove(b->data, b->data + b->off, live);
            b->off = 0;
            b->len = live;
        }
        while (live + n > want)
            want *= 2;
        if (want > b->size) {
            d = realloc(b->data, want);
            if (d == NULL)
                return -1;
            b->data = d;
            b->size = want;
        }
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

static void relay_set_events(struct relay_conn *c, uint32_t ev)
{
    struct epoll_event e = {.events = ev, .data.fd = c->fd};

    if (epoll_ctl(relay_epfd, EPOLL_CTL_MOD, c->fd, &e) < 0)
        relay_die("epoll_ctl");
}

/* Pause or resume reading every producer. */
static void relay_pause(int on)
{
    if (relay_paused == on)
        return;
    relay_paused = on;
    for (size_t fd = 0; fd < relay_nconns; fd++) {
        struct relay_conn *c = relay_conns[fd];

        if (c != NULL && c->kind == KIND_PRODUCER)
            relay_set_events(c, on ? 0 : EPOLLIN);
    }
}

static void relay_close(struct relay_conn *c)
{
    struct relay_chan *ch = &relay_chans[c->chan];

    if (c->kind == KIND_CONSUMER && ch->ring != NULL) {
        struct relay_conn *p = ch->ring;

        /* unlink from the ring; frames it was sent are lost with it */
        while (p->next != c)
            p = p->next;
        if (p == c)
            ch->ring = NULL;
        else {
            p->next = c->next;
            if (ch->ring == c)
                ch->ring = c->next;
        }
    }
    epoll_ctl(relay_epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    relay_conns[c->fd] = NULL;
    free(c->out.data);
    free(c->in.data);
    free(c);
}

/* Write what c holds; 0, or -1 when c failed (and was closed). */
static int relay_flush(struct relay_conn *c)
{
    while (c->out.off < c->out.len) {
        ssize_t w = write(c->fd, c->out.data + c->out.off, c->out.len - c->out.off);

        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                break;
            relay_close(c);
            return -1;
        }
        c->out.off += (size_t)w;
    }
    if (c->out.off == c->out.len)
        c->out.off = c->out.len = 0;
    if ((c->out.len > 0) != c->want_out) {
        c->want_out = c->out.len > 0;
        relay_set_events(c, EPOLLIN | (c->want_out ? EPOLLOUT : 0));
    }
    return 0;
}

/* The largest output of any consumer, for the pause decision. */
static size_t relay_max_out(void)
{
    size_t m = 0;

    for (size_t fd = 0; fd < relay_nconns; fd++) {
        struct relay_conn *c = relay_conns[fd];

        if (c != NULL && c->kind == KIND_CONSUMER && c->out.len - c->out.off > m)
            m = c->out.len - c->out.off;
    }
    return m;
}

static uint32_t relay_get32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Forward the whole frames p holds to the next consumer; 0 or -1 (memory). */
static int relay_forward(struct relay_conn *p)
{
    struct relay_chan *ch = &relay_chans[p->chan];
    struct relay_conn *to = ch->ring;
    size_t end = p->in.off;

    while (p->in.len - end >= 4 && p->in.len - end - 4 >= relay_get32(p->in.data + end))
        end += 4 + relay_get32(p->in.data + end);
    if (end == p->in.off)
        return 0;
    if (relay_buf_put(to != NULL ? &to->out : &ch->backlog, p->in.data + p->in.off,
                      end - p->in.off) < 0)
        return -1;
    p->in.off = end;
    if (to == NULL)
        return 0;
    ch->ring = to->next;
    if (relay_flush(to) == 0 && to->out.len - to->out.off > RELAY_HIGH)
        relay_pause(1);
    return 0;
}

/* Room for a read of RELAY_READ bytes, or for the rest of the partial frame. */
static int relay_in_room(struct relay_buf *b)
{
    size_t live = b->len - b->off, want = RELAY_READ;

    if (live >= 4 && relay_get32(b->data + b->off) + 4 > want)
        want = relay_get32(b->data + b->off) + 4;
    if (b->off > 0 && b->size - b->len < RELAY_READ) {
        memmove(b->data, b->data + b->off, live);
        b->off = 0;
        b->len = live;
    }
    if (b->size - b->off < want || b->size - b->len < 4096) {
        size_t size = want + RELAY_READ;
        unsigned char *d = realloc(b->data, size);

        if (d == NULL)
            return -1;
        b->data = d;
        b->size = size;
    }
    return 0;
}

static void relay_producer_read(struct relay_conn *p)
{
    for (int rounds = 0; rounds < 4 && !relay_paused; rounds++) {
        ssize_t r;

        if (relay_in_room(&p->in) < 0) {
            fprintf(stderr, "relay: out of memory\n");
            relay_close(p);
            return;
        }
        r = read(p->fd, p->in.data + p->in.len, p->in.size - p->in.len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN)
            return;
        if (r <= 0) {
            relay_close(p);
            return;
        }
        p->in.len += (size_t)r;
        if (relay_forward(p) < 0) {
            fprintf(stderr, "relay: out of memory\n");
            relay_close(p);
            return;
        }
        if (p->in.off == p->in.len)
            p->in.off = p->in.len = 0;
        if ((size_t)r < RELAY_READ)
            return;
    }
}

static void relay_hello(struct relay_conn *c)
{
    while (c->nhello < 2) {
        ssize_t r = read(c->fd, c->hello + c->nhello, (size_t)(2 - c->nhello));

        if (r < 0 && errno == EAGAIN)
            return;
        if (r <= 0 || (c->nhello == 0 && c->hello[0] != 'P' && c->hello[0] != 'C')) {
            relay_close(c);
            return;
        }
        c->nhello += (int)r;
    }
    c->chan = c->hello[1];
    if (c->hello[0] == 'P') {
        c->kind = KIND_PRODUCER;
        relay_set_events(c, relay_paused ? 0 : EPOLLIN);
        return;
    }
    {
        struct relay_chan *ch = &relay_chans[c->chan];

        c->kind = KIND_CONSUMER;
        if (ch->ring == NULL) {
            c->next = c;
            ch->ring = c;
        } else {
            c->next = ch->ring->next;
            ch->ring->next = c;
        }
        if (relay_buf_put(&c->out, (const unsigned char *)"K", 1) < 0)
            relay_die("relay: hello");
        if (ch->backlog.len > ch->backlog.off) {
            if (relay_buf_put(&c->out, ch->backlog.data + ch->backlog.off,
                              ch->backlog.len - ch->backlog.off) < 0)
                relay_die("relay: backlog");
            ch->backlog.off = ch->backlog.len = 0;
        }
        relay_set_events(c, EPOLLIN);
        relay_flush(c);
    }
}

static void relay_accept(int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC), one = 1;
        struct relay_conn *c;
        struct epoll_event e = {.events = EPOLLIN};

        if (fd < 0)
            return;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if ((size_t)fd >= relay_nconns) {
            size_t n = (size_t)fd * 2 + 16;
            struct relay_conn **t = realloc(relay_conns, n * sizeof *t);

            if (t == NULL)
                relay_die("relay: conns");
            memset(t + relay_nconns, 0, (n - relay_nconns) * sizeof *t);
            relay_conns = t;
            relay_nconns = n;
        }
        c = calloc(1, sizeof *c);
        if (c == NULL)
            relay_die("relay: conn");
        c->fd = fd;
        relay_conns[fd] = c;
        e.data.fd = fd;
        if (epoll_ctl(relay_epfd, EPOLL_CTL_ADD, fd, &e) < 0)
            relay_die("epoll_ctl");
    }
}

static int relay_listen(int port, int *bound)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    socklen_t sl = sizeof sa;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;

    if (fd < 0)
        return -1;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 4096) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) < 0) {
        close(fd);
        return -1;
    }
    *bound = ntohs(sa.sin_port);
    return fd;
}

int main(int argc, char **argv)
{
    const char *port_file = NULL;
    int port = 0, bound, lfd;
    struct epoll_event ev[256];
    struct epoll_event le = {.events = EPOLLIN, .data.fd = -1};

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--port") == 0 && i + 1 < argc)
            port = atoi(argv[++i]);
        else if (strcmp(argv[i], "--port-file") == 0 && i + 1 < argc)
            port_file = argv[++i];
        else {
            fprintf(stderr, "usage: relay [--port N] [--port-file F]\n");
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    lfd = relay_listen(port, &bound);
    if (lfd < 0)
        relay_die("relay: listen");
    relay_epfd = epoll_create1(EPOLL_CLOEXEC);
    if (relay_epfd < 0 || epoll_ctl(relay_epfd, EPOLL_CTL_ADD, lfd, &le) < 0)
        relay_die("relay: epoll");
    if (port_file != NULL) {
        FILE *f = fopen(port_file, "w");

        if (f == NULL || fprintf(f, "%d\n", bound) < 0 || fclose(f) != 0)
            relay_die(port_file);
    } else
        printf("%d\n", bound);
    fflush(stdout);

    for (;;) {
        int n = epoll_wait(relay_epfd, ev, 256, -1);

        if (n < 0 && errno != EINTR)
            relay_die("epoll_wait");
        for (int i = 0; i < n; i++) {
            int fd = ev[i].data.fd;
            struct relay_conn *c;

            if (fd < 0) {
                relay_accept(lfd);
                continue;
            }
            c = (size_t)fd < relay_nconns ? relay_conns[fd] : NULL;
            if (c == NULL)
                continue;
            if (c->kind == KIND_NEW)
                relay_hello(c);
            else if (c->kind == KIND_PRODUCER)
                relay_producer_read(c);
            else if (ev[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                /* a consumer sends nothing after its hello: this is its end */
                char junk[64];

                if (read(fd, junk, sizeof junk) <= 0)
                    relay_close(c);
            } else if (ev[i].events & EPOLLOUT)
                relay_flush(c);
        }
        if (relay_paused && relay_max_out() < RELAY_LOW)
            relay_pause(0);
    }
}
