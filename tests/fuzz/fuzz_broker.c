/*
 * fuzz_broker.c: a libFuzzer target around a real broker in this process.
 * Each input's bytes reach the frame decoder and the request dispatcher of
 * a fresh broker through one end of a socketpair (or two, one session
 * resumed or taken over), the loop runs until nothing moves, and a second,
 * well-behaved client must still be served afterwards. Every frame the
 * broker writes back must decode, and nothing may outlive broker_stop.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <linux/sockios.h>

#include "daemon.h"
#include "fuzz.h"

/* Loop iterations one settle may take before the broker counts as stuck. */
#define FUZZ_MAX_TURNS 100000
/* Quiet iterations in a row that make the broker idle (a zero timer needs one more). */
#define FUZZ_QUIET_TURNS 2

/* Request ids of the healthy client. */
enum {
    ID_HELLO = 1,
    ID_OPEN_A,
    ID_OPEN_B,
    ID_SEND_B,
    ID_PING_BUSY,   /* while the first fuzzed connection is still open */
    ID_PING_SECOND, /* after the second part */
    ID_PING_AFTER,  /* once every fuzzed connection is gone */
    ID_MAX
};

/* The client ends: the healthy client, then up to two fuzzed connections. */
enum { P_HEALTHY, P_FUZZ1, P_FUZZ2, P_MAX };

/* One client end of a socketpair whose other end the broker owns. */
struct peer {
    int fd;                /* ours; -1 when closed or never opened */
    struct evbuffer *in;   /* bytes from the broker not yet decoded, owned here */
    int eof;               /* the broker closed its end */
    int status[ID_MAX];    /* healthy client: reply status by id, -1 until it came */
};

static struct event_base *base;
static struct peer peers[P_MAX];
static int log_level;   /* enum log_level: LL_ERROR unless FUZZ_LOG says otherwise */

_Noreturn static void fuzz_die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void fuzz_die(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fputs("fuzz_broker: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    /* The broker writes to peers that may have closed, as chand does with SIGPIPE ignored. */
    signal(SIGPIPE, SIG_IGN);
    /* FUZZ_LOG=debug shows what the broker makes of a reproducer. */
    log_level = getenv("FUZZ_LOG") != NULL ? log_level_parse(getenv("FUZZ_LOG")) : -1;
    if (log_level < 0)
        log_level = LL_ERROR;
    log_set_level(log_level);
    base = event_base_new();
    if (base == NULL)
        fuzz_die("event_base_new failed");
    for (int i = 0; i < P_MAX; i++)
        peers[i].fd = -1;
    return 0;
}

static void fuzz_peer_open(struct peer *p)
{
    int sv[2];

    memset(p, 0, sizeof *p);
    for (int i = 0; i < ID_MAX; i++)
        p->status[i] = -1;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        fuzz_die("socketpair: %s", strerror(errno));
    p->in = evbuffer_new();
    if (p->in == NULL)
        fuzz_die("evbuffer_new failed");
    p->fd = sv[1];
    conn_accept(sv[0], NULL, 0, 0);
}

static void fuzz_peer_close(struct peer *p)
{
    if (p->fd >= 0)
        close(p->fd);
    p->fd = -1;
}

static void fuzz_peer_free(struct peer *p)
{
    fuzz_peer_close(p);
    if (p->in != NULL)
        evbuffer_free(p->in);
    p->in = NULL;
}

/* Read what the broker wrote; returns how many bytes came. */
static size_t fuzz_pump(struct peer *p)
{
    size_t got = 0;

    while (p->fd >= 0 && !p->eof) {
        int n = evbuffer_read(p->in, p->fd, 65536);
        if (n > 0) {
            got += (size_t)n;
        } else if (n == 0) {
            p->eof = 1;
        } else {
            if (errno != EAGAIN && errno != EINTR)
                p->eof = 1;   /* reset: the broker dropped us */
            break;
        }
    }
    return got;
}

/* Bytes of ours the broker has not read yet (a unix socket charges them to the writer). */
static int fuzz_unread(const struct peer *p)
{
    int q = 0;

    if (p->fd < 0 || ioctl(p->fd, SIOCOUTQ, &q) < 0)
        return 0;
    return q;
}

/* Run the loop until nothing moves: no bytes in either direction, nothing active. */
static void fuzz_settle(void)
{
    int quiet = 0, last_unread = -1;

    for (int turn = 0; turn < FUZZ_MAX_TURNS; turn++) {
        size_t got = 0;
        int unread = 0;

        event_base_loop(base, EVLOOP_NONBLOCK);
        for (int i = 0; i < P_MAX; i++) {
            got += fuzz_pump(&peers[i]);
            unread += fuzz_unread(&peers[i]);
        }
        if (got == 0 && unread == last_unread &&
            event_base_get_num_events(base, EVENT_BASE_COUNT_ACTIVE) == 0) {
            if (++quiet >= FUZZ_QUIET_TURNS)
                return;
        } else {
            quiet = 0;
        }
        last_unread = unread;
    }
    fuzz_die("the broker was still busy after %d loop iterations", FUZZ_MAX_TURNS);
}

/* Let FUZZ_WAIT_MS of real time pass in the loop (timers fire), then settle. */
static void fuzz_wait(void)
{
    struct timeval tv = {0, FUZZ_WAIT_MS * 1000};

    event_base_loopexit(base, &tv);
    event_base_loop(base, 0);
    fuzz_settle();
}

static int fuzz_drain_payload(void *arg, size_t index, const void *data, struct evbuffer *src,
                              size_t len)
{
    (void)arg, (void)index, (void)data;
    return src != NULL ? evbuffer_drain(src, len) : 0;
}

/*
 * Decode every whole frame the broker sent p; a frame that does not decode
 * is a broker bug. With record set, note each reply's status by id.
 */
static void fuzz_take_all(struct peer *p, int record)
{
    for (;;) {
        ProtobufCMessage *hdr = NULL;
        size_t npl = 0, need = 0;
        char err[160];
        int rc = wire_read(p->in, broker.max_frame, &chanwire__server_frame__descriptor, &hdr,
                           fuzz_drain_payload, NULL, &npl, &need, err, sizeof err);

        if (rc == 0)
            return;
        if (rc < 0)
            fuzz_die("the broker sent a frame that does not decode: %s", err);
        Chanwire__ServerFrame *sf = (Chanwire__ServerFrame *)hdr;
        if (record) {
            if (sf->id == 0 || sf->id >= ID_MAX)
                fuzz_die("healthy client: reply for id %llu, status %d (%s)",
                         (unsigned long long)sf->id, (int)sf->status,
                         sf->error ? sf->error : "");
            if (sf->status != CHANWIRE__STATUS__STATUS_OK)
                fuzz_die("healthy client: request %llu failed with status %d (%s)",
                         (unsigned long long)sf->id, (int)sf->status,
                         sf->error ? sf->error : "");
            p->status[sf->id] = sf->status;
        }
        wire_hdr_free(hdr);
    }
}

/* Write all of data to p's socket, the broker reading meanwhile. */
static void fuzz_write(struct peer *p, const void *data, size_t len)
{
    const uint8_t *b = data;

    while (len > 0 && p->fd >= 0) {
        ssize_t w = write(p->fd, b, len);
        if (w > 0) {
            b += w;
            len -= (size_t)w;
        } else if (w < 0 && errno == EAGAIN) {
            /* The broker stopped reading: give it a turn, and stop if it never will. */
            fuzz_settle();
            w = write(p->fd, b, len);
            if (w <= 0)
                return;   /* it is not reading us any more (closing): the rest would sit there */
            b += w;
            len -= (size_t)w;
        } else {
            return;       /* reset: the broker dropped the connection */
        }
    }
}

/* One frame with at most one payload. */
static void fuzz_request(struct peer *p, Chanwire__ClientFrame *f, const void *payload,
                         size_t plen)
{
    struct evbuffer *out = evbuffer_new();
    struct wire_payload pl = {.data = payload, .len = plen};

    if (out == NULL || wire_write(out, &f->base, &pl, payload != NULL) < 0)
        fuzz_die("cannot build request %llu", (unsigned long long)f->id);
    fuzz_write(p, evbuffer_pullup(out, -1), evbuffer_get_length(out));
    evbuffer_free(out);
}

/*
 * A HELLO. The healthy client has no session, so no input can take it over
 * (a HELLO naming a live session replaces that session's connection); the
 * fuzzed connections share one.
 */
static void fuzz_hello(struct peer *p, uint64_t id, int healthy)
{
    static uint8_t session[16] = {'f', 'u', 'z', 'z', 'e', 'd'};
    Chanwire__ClientFrame f = CHANWIRE__CLIENT_FRAME__INIT;
    Chanwire__Hello h = CHANWIRE__HELLO__INIT;

    h.version = WIRE_VERSION;
    if (!healthy) {
        h.session.data = session;
        h.session.len = sizeof session;
    }
    if (broker.opt.token != NULL)
        h.token = FUZZ_TOKEN;
    h.client_name = "fuzz";
    f.id = id;
    f.body_case = CHANWIRE__CLIENT_FRAME__BODY_HELLO;
    f.hello = &h;
    fuzz_request(p, &f, NULL, 0);
}

static void fuzz_expect(struct peer *p, uint64_t id)
{
    fuzz_settle();
    fuzz_take_all(p, 1);
    if (p->status[id] != CHANWIRE__STATUS__STATUS_OK)
        fuzz_die("healthy client: no reply to request %llu", (unsigned long long)id);
}

static void fuzz_healthy_start(struct peer *h, int channels)
{
    Chanwire__ClientFrame f;
    Chanwire__Open o = CHANWIRE__OPEN__INIT;
    Chanwire__Send s = CHANWIRE__SEND__INIT;

    fuzz_hello(h, ID_HELLO, 1);
    fuzz_expect(h, ID_HELLO);
    if (!channels)
        return;

    chanwire__client_frame__init(&f);
    f.body_case = CHANWIRE__CLIENT_FRAME__BODY_OPEN;
    f.open = &o;
    f.id = ID_OPEN_A;
    o.name = "a";
    o.cap = 0;
    fuzz_request(h, &f, NULL, 0);
    fuzz_expect(h, ID_OPEN_A);
    f.id = ID_OPEN_B;
    o.name = "b";
    o.cap = 2;
    fuzz_request(h, &f, NULL, 0);
    fuzz_expect(h, ID_OPEN_B);

    chanwire__client_frame__init(&f);
    f.body_case = CHANWIRE__CLIENT_FRAME__BODY_SEND;
    f.send = &s;
    f.id = ID_SEND_B;
    s.chan = 2;   /* handles count from 1 in a fresh broker */
    s.timeout_ms = 0;
    fuzz_request(h, &f, "seed", 4);
    fuzz_expect(h, ID_SEND_B);
}

static void fuzz_healthy_ping(struct peer *h, uint64_t id)
{
    Chanwire__ClientFrame f = CHANWIRE__CLIENT_FRAME__INIT;
    Chanwire__Ping ping = CHANWIRE__PING__INIT;

    if (h->eof)
        fuzz_die("the broker dropped the healthy client");
    ping.data.data = (uint8_t *)"alive";
    ping.data.len = 5;
    f.id = id;
    f.body_case = CHANWIRE__CLIENT_FRAME__BODY_PING;
    f.ping = &ping;
    fuzz_request(h, &f, NULL, 0);
    fuzz_expect(h, id);
}

/* Feed one part of the input to p as the mode says, and let the broker act on it. */
static void fuzz_feed(struct peer *p, uint8_t mode, const uint8_t *data, size_t size)
{
    if (mode & FUZZ_DRIBBLE) {
        size_t piece = ((size_t)(mode >> FUZZ_PIECE_SHIFT) + 1) * FUZZ_PIECE_UNIT;
        for (size_t off = 0; off < size && !p->eof; off += piece) {
            size_t len = size - off < piece ? size - off : piece;
            fuzz_write(p, data + off, len);
            fuzz_settle();
        }
    } else {
        fuzz_write(p, data, size);
    }
    fuzz_settle();
    if (!(mode & FUZZ_DRIBBLE) && (mode & FUZZ_WAIT))
        fuzz_wait();
    fuzz_take_all(p, 0);
}

static size_t fuzz_count_conns(void)
{
    size_t n = 0;
    struct conn *c;

    TAILQ_FOREACH(c, &broker.conns, link)
        n++;
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct peer *h = &peers[P_HEALTHY];
    size_t split;
    struct options opt;
    uint8_t mode, high;

    if (size == 0)
        return 0;
    mode = data[0];
    data++, size--;
    /* Under FUZZ_DRIBBLE the high bits are the piece size, not settings. */
    high = mode & FUZZ_DRIBBLE ? 0 : mode & 0xf0;
    split = size;
    if ((high & FUZZ_RESUME) && size >= 2) {
        split = (size_t)data[0] | (size_t)data[1] << 8;
        data += 2, size -= 2;
        if (split > size)
            split = size;
    }

    options_defaults(&opt);
    opt.log_level = log_level;
    if (mode & FUZZ_TIGHT) {
        opt.max_msg = FUZZ_TIGHT_MSG;
        opt.max_memory = FUZZ_TIGHT_MEMORY;
        opt.max_channels = FUZZ_TIGHT_CHANNELS;
        opt.max_pending = FUZZ_TIGHT_PENDING;
        opt.max_output = FUZZ_TIGHT_OUTPUT;
        opt.session_ttl = 0;
    }
    if (high & FUZZ_AUTH) {
        opt.token = FUZZ_TOKEN;
        opt.token_len = strlen(FUZZ_TOKEN);
    }
    if (broker_start(base, &opt) < 0)
        fuzz_die("broker_start failed");

    fuzz_peer_open(h);
    fuzz_healthy_start(h, (mode & FUZZ_CHANNELS) != 0);

    fuzz_peer_open(&peers[P_FUZZ1]);
    if (mode & FUZZ_HELLO)
        fuzz_hello(&peers[P_FUZZ1], 1, 0);
    fuzz_feed(&peers[P_FUZZ1], mode, data, split);
    fuzz_healthy_ping(h, ID_PING_BUSY);

    if (high & FUZZ_RESUME) {
        if (!(high & FUZZ_TAKEOVER)) {
            fuzz_peer_close(&peers[P_FUZZ1]);
            fuzz_settle();
        }
        fuzz_peer_open(&peers[P_FUZZ2]);
        fuzz_hello(&peers[P_FUZZ2], 1, 0);
        fuzz_feed(&peers[P_FUZZ2], mode, data + split, size - split);
        fuzz_healthy_ping(h, ID_PING_SECOND);
    }

    /* The fuzzed clients leave: the broker must let go of them and of all they held. */
    fuzz_peer_close(&peers[P_FUZZ1]);
    fuzz_peer_close(&peers[P_FUZZ2]);
    fuzz_settle();
    fuzz_healthy_ping(h, ID_PING_AFTER);
    if (broker.nconns != 1 || fuzz_count_conns() != 1)
        fuzz_die("%zu connections counted, %zu listed after the fuzzed ones closed (want 1)",
                 broker.nconns, fuzz_count_conns());

    broker_stop();
    if (msg_live_count() != 0)
        fuzz_die("%llu messages still live after broker_stop",
                 (unsigned long long)msg_live_count());
    for (int i = 0; i < P_MAX; i++)
        fuzz_peer_free(&peers[i]);
    return 0;
}
