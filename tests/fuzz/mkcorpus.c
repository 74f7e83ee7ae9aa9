/*
 * mkcorpus.c: writes the broker fuzzer's seed corpus into a directory:
 * one file per request kind (and a few sequences that need state, such as
 * a receive then its ack), each a mode byte (tests/fuzz/fuzz.h) followed by
 * valid frames. Generated at build time so no binary file is committed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "fuzz.h"
#include "wire.h"

/* The handles a fresh broker gives the channels FUZZ_CHANNELS opens. */
#define CHAN_A 1   /* "a", cap 0 */
#define CHAN_B 2   /* "b", cap 2, one message buffered */

static const char *outdir;
static struct evbuffer *cur;   /* frames of the file being built */
static uint64_t next_id;
static int nfiles;

static void corpus_die(const char *what)
{
    fprintf(stderr, "mkcorpus: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void corpus_frame(Chanwire__ClientFrame *f, const char *const *payloads, size_t n)
{
    struct wire_payload pl[8] = {{0}};

    if (n > sizeof pl / sizeof pl[0])
        n = sizeof pl / sizeof pl[0];
    for (size_t i = 0; i < n; i++)
        pl[i] = (struct wire_payload){.data = payloads[i], .len = strlen(payloads[i])};
    if (wire_write(cur, &f->base, pl, n) < 0)
        corpus_die("wire_write");
}

/*
 * Write the file name: mode, under FUZZ_RESUME the first part's length
 * (split, two bytes little endian), then the frames built so far. Start
 * the next file.
 */
static void corpus_file_split(const char *name, uint8_t mode, size_t split)
{
    char path[4096];
    size_t len = evbuffer_get_length(cur);
    uint8_t head[3] = {mode, (uint8_t)split, (uint8_t)(split >> 8)};
    size_t hlen = mode & FUZZ_RESUME ? 3 : 1;
    FILE *f;

    snprintf(path, sizeof path, "%s/%s", outdir, name);
    f = fopen(path, "wb");
    if (f == NULL)
        corpus_die(path);
    if (fwrite(head, 1, hlen, f) != hlen ||
        (len > 0 && fwrite(evbuffer_pullup(cur, -1), 1, len, f) != len) || fclose(f) != 0)
        corpus_die(path);
    evbuffer_drain(cur, len);
    next_id = 1;
    nfiles++;
}

static void corpus_file(const char *name, uint8_t mode)
{
    corpus_file_split(name, mode, 0);
}

static Chanwire__ClientFrame corpus_req(int body)
{
    Chanwire__ClientFrame f = CHANWIRE__CLIENT_FRAME__INIT;

    f.id = ++next_id;   /* id 1 is the harness's own HELLO */
    f.body_case = body;
    return f;
}

static void put_hello(const char *token)
{
    static uint8_t session[16] = {'s', 'e', 'e', 'd'};
    Chanwire__ClientFrame f = corpus_req(CHANWIRE__CLIENT_FRAME__BODY_HELLO);
    Chanwire__Hello h = CHANWIRE__HELLO__INIT;

    h.version = WIRE_VERSION;
    h.session.data = session;
    h.session.len = sizeof session;
    if (token != NULL)
        h.token = (char *)token;
    h.client_name = "seed";
    f.hello = &h;
    corpus_frame(&f, NULL, 0);
}

static void put_open(const char *name, int64_t cap)
{
    Chanwire__ClientFrame f = corpus_req(CHANWIRE__CLIENT_FRAME__BODY_OPEN);
    Chanwire__Open o = CHANWIRE__OPEN__INIT;

    o.name = (char *)name;
    o.cap = cap;
    f.open = &o;
    corpus_frame(&f, NULL, 0);
}

static uint64_t put_send(uint64_t chan, int64_t timeout_ms, uint64_t seq,
                         const char *const *msgs, size_t n)
{
    Chanwire__ClientFrame f = corpus_req(CHANWIRE__CLIENT_FRAME__BODY_SEND);
    Chanwire__Send s = CHANWIRE__SEND__INIT;

    s.chan = chan;
    s.timeout_ms = timeout_ms;
    s.seq = seq;
    f.send = &s;
    corpus_frame(&f, msgs, n);
    return f.id;
}

static uint64_t put_recv(uint64_t chan, int64_t timeout_ms, uint32_t max, int64_t lease_ms)
{
    Chanwire__ClientFrame f = corpus_req(CHANWIRE__CLIENT_FRAME__BODY_RECV);
    Chanwire__Recv r = CHANWIRE__RECV__INIT;

    r.chan = chan;
    r.timeout_ms = timeout_ms;
    r.max = max;
    r.lease_ms = lease_ms;
    f.recv = &r;
    corpus_frame(&f, NULL, 0);
    return f.id;
}

static void put_tags(int body, const uint64_t *tags, size_t n)
{
    Chanwire__ClientFrame f = corpus_req(body);
    Chanwire__Tags t = CHANWIRE__TAGS__INIT;

    t.tags = (uint64_t *)tags;
    t.n_tags = n;
    if (body == CHANWIRE__CLIENT_FRAME__BODY_ACK)
        f.ack = &t;
    else
        f.nack = &t;
    corpus_frame(&f, NULL, 0);
}

/* A frame with id 0 and no request: acks only. */
static void put_ack_only(const uint64_t *tags, size_t n)
{
    Chanwire__ClientFrame f = CHANWIRE__CLIENT_FRAME__INIT;

    f.acks = (uint64_t *)tags;
    f.n_acks = n;
    corpus_frame(&f, NULL, 0);
}

static void put_select(const uint64_t *chans, const int *is_send, size_t n,
                       const char *const *msgs, size_t nmsgs, int64_t timeout_ms)
{
    Chanwire__ClientFrame f = corpus_req(CHANWIRE__CLIENT_FRAME__BODY_SELECT);
    Chanwire__Select s = CHANWIRE__SELECT__INIT;
    Chanwire__Case cases[8], *ptrs[8];

    for (size_t i = 0; i < n && i < 8; i++) {
        chanwire__case__init(&cases[i]);
        cases[i].chan = chans[i];
        cases[i].send = is_send[i];
        ptrs[i] = &cases[i];
    }
    s.cases = ptrs;
    s.n_cases = n < 8 ? n : 8;
    s.timeout_ms = timeout_ms;
    f.select = &s;
    corpus_frame(&f, msgs, nmsgs);
}

static void put_close(uint64_t chan)
{
    Chanwire__ClientFrame f = corpus_req(CHANWIRE__CLIENT_FRAME__BODY_CLOSE);
    Chanwire__Close c = CHANWIRE__CLOSE__INIT;

    c.chan = chan;
    f.close = &c;
    corpus_frame(&f, NULL, 0);
}

static void put_delete(const char *name)
{
    Chanwire__ClientFrame f = corpus_req(CHANWIRE__CLIENT_FRAME__BODY_DELETE);
    Chanwire__Delete d = CHANWIRE__DELETE__INIT;

    d.name = (char *)name;
    f.delete_ = &d;
    corpus_frame(&f, NULL, 0);
}

static void put_cancel(uint64_t target)
{
    Chanwire__ClientFrame f = corpus_req(CHANWIRE__CLIENT_FRAME__BODY_CANCEL);
    Chanwire__Cancel c = CHANWIRE__CANCEL__INIT;

    c.target = target;
    f.cancel = &c;
    corpus_frame(&f, NULL, 0);
}

static void put_stat(int body, const char *name)
{
    Chanwire__ClientFrame f = corpus_req(body);
    Chanwire__Stat s = CHANWIRE__STAT__INIT;

    s.name = (char *)name;
    if (body == CHANWIRE__CLIENT_FRAME__BODY_STAT)
        f.stat = &s;
    else
        f.list = &s;
    corpus_frame(&f, NULL, 0);
}

static void put_ping(const char *data)
{
    Chanwire__ClientFrame f = corpus_req(CHANWIRE__CLIENT_FRAME__BODY_PING);
    Chanwire__Ping p = CHANWIRE__PING__INIT;

    p.data.data = (uint8_t *)data;
    p.data.len = strlen(data);
    f.ping = &p;
    corpus_frame(&f, NULL, 0);
}

int main(int argc, char **argv)
{
    static const char *const one[] = {"x"};
    static const char *const three[] = {"m1", "m2", "m3"};
    static const char big[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
                              "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const char *const bigmsg[] = {big};
    const uint8_t ready = FUZZ_HELLO | FUZZ_CHANNELS;
    uint64_t t1[] = {1}, t12[] = {1, 2};

    if (argc != 2) {
        fprintf(stderr, "usage: mkcorpus DIR\n");
        return 2;
    }
    outdir = argv[1];
    cur = evbuffer_new();
    if (cur == NULL)
        corpus_die("evbuffer_new");
    next_id = 1;

    put_hello(NULL);
    corpus_file("hello", 0);
    put_hello(NULL);
    put_ping("twice");
    corpus_file("hello-twice", FUZZ_HELLO);
    put_ping("early");
    corpus_file("before-hello", 0);

    put_open("q", 3);
    put_open("q", -1);
    put_open("q", 4);
    put_open("nosuch", -1);
    corpus_file("open", FUZZ_HELLO);

    put_send(CHAN_B, 0, 0, one, 1);
    put_send(CHAN_B, 0, 0, one, 1);
    put_send(CHAN_A, 5, 0, one, 1);
    corpus_file("send", ready);
    put_send(CHAN_B, -1, 7, three, 3);
    put_send(CHAN_B, 0, 7, three, 3);
    corpus_file("send-many-seq", ready);
    put_send(CHAN_B, 0, 0, bigmsg, 1);
    corpus_file("send-oversize", ready | FUZZ_TIGHT);

    put_recv(CHAN_B, 0, 0, 0);
    put_tags(CHANWIRE__CLIENT_FRAME__BODY_ACK, t1, 1);
    put_recv(CHAN_B, 0, 0, 0);
    corpus_file("recv-ack", ready);
    put_send(CHAN_B, 0, 0, one, 1);
    put_recv(CHAN_B, 0, 8, 0);
    put_ack_only(t12, 2);
    corpus_file("recv-many-piggyback", ready);
    put_recv(CHAN_B, 0, 0, 1000);
    put_tags(CHANWIRE__CLIENT_FRAME__BODY_NACK, t1, 1);
    put_recv(CHAN_B, 0, 0, 1);
    put_tags(CHANWIRE__CLIENT_FRAME__BODY_ACK, t12, 2);
    corpus_file("recv-lease-nack", ready);
    {
        uint64_t id = put_recv(CHAN_A, -1, 0, 0);
        put_cancel(id);
        put_cancel(99);
        corpus_file("cancel", ready);
    }

    {
        uint64_t chans[] = {CHAN_A, CHAN_B, 0, CHAN_B};
        int sends[] = {1, 0, 0, 1};
        put_select(chans, sends, 4, three, 2, 0);
        put_select(chans, sends, 1, three, 1, 10);
        put_select(chans, sends, 0, NULL, 0, 0);
        corpus_file("select", ready);
    }

    put_close(CHAN_B);
    put_close(CHAN_B);
    put_send(CHAN_B, 0, 0, one, 1);
    put_recv(CHAN_B, 0, 0, 0);
    put_recv(CHAN_B, 0, 0, 0);
    corpus_file("close", ready);
    put_recv(CHAN_A, -1, 0, 0);
    put_delete("a");
    put_delete("a");
    put_send(CHAN_A, 0, 0, one, 1);
    corpus_file("delete", ready);

    put_stat(CHANWIRE__CLIENT_FRAME__BODY_STAT, "b");
    put_stat(CHANWIRE__CLIENT_FRAME__BODY_STAT, "nosuch");
    put_stat(CHANWIRE__CLIENT_FRAME__BODY_LIST, "");
    put_stat(CHANWIRE__CLIENT_FRAME__BODY_LIST, "b");
    corpus_file("stat-list", ready);
    put_ping("hi");
    corpus_file("ping", FUZZ_HELLO);

    /* A broker that wants a token: given, then missing. */
    put_hello(FUZZ_TOKEN);
    put_ping("in");
    corpus_file("auth", FUZZ_AUTH | FUZZ_CHANNELS);
    put_hello(NULL);
    put_ping("out");
    corpus_file("auth-missing", FUZZ_AUTH);

    /* Tight limits: channels, memory, blocked requests per connection. */
    put_open("t1", 1);
    put_open("t2", 1);
    put_open("t3", 1);
    put_send(CHAN_B, 0, 0, bigmsg, 1);
    put_send(CHAN_B, 0, 0, three, 3);
    put_send(CHAN_B, 50, 0, three, 3);
    for (int i = 0; i < 6; i++)
        put_recv(CHAN_A, -1, 0, 0);
    put_stat(CHANWIRE__CLIENT_FRAME__BODY_LIST, "");
    corpus_file("tight", ready | FUZZ_TIGHT);

    /*
     * One session on two connections, the second after the first closed or
     * while it is still open: a send repeated under its seq is dropped, a
     * lease the first held goes back.
     */
    for (int takeover = 0; takeover <= 1; takeover++) {
        uint64_t tag1[] = {1};
        size_t split;

        put_send(CHAN_B, 0, 5, one, 1);
        put_recv(CHAN_B, 0, 0, 60000);
        split = evbuffer_get_length(cur);
        next_id = 1;
        put_send(CHAN_B, 0, 5, one, 1);
        put_recv(CHAN_B, 0, 0, 60000);
        put_tags(CHANWIRE__CLIENT_FRAME__BODY_ACK, tag1, 1);
        corpus_file_split(takeover ? "takeover" : "resume",
                          ready | FUZZ_RESUME | (takeover ? FUZZ_TAKEOVER : 0), split);
    }

    /* Deadlines and leases of a millisecond or two, with time to run out. */
    put_recv(CHAN_A, 1, 0, 0);
    put_send(CHAN_A, 2, 0, one, 1);
    put_recv(CHAN_B, 0, 0, 1);
    put_select(NULL, NULL, 0, NULL, 0, 1);
    corpus_file("wait", ready | FUZZ_WAIT);
    put_send(CHAN_B, 0, 0, bigmsg, 1);
    put_send(CHAN_B, 0, 0, three, 3);
    put_send(CHAN_B, 2, 0, three, 3);
    put_send(CHAN_B, -1, 0, three, 3);
    corpus_file("tight-wait", ready | FUZZ_TIGHT | FUZZ_WAIT);

    /* A session's sequence numbers: the repeat is dropped. */
    put_send(CHAN_B, 0, 41, one, 1);
    put_send(CHAN_B, 0, 41, one, 1);
    put_send(CHAN_B, 0, 40, three, 3);
    corpus_file("session-seq", ready);

    /* A rendezvous on the unbuffered channel, within one connection, leased. */
    put_open("p", 0);
    put_send(3, -1, 0, one, 1);
    put_recv(3, -1, 0, 500);
    put_tags(CHANWIRE__CLIENT_FRAME__BODY_ACK, t1, 1);
    put_close(3);
    corpus_file("rendezvous", FUZZ_HELLO);

    /* Everything once, fed in small pieces. */
    put_open("q", 1);
    put_send(CHAN_B, 0, 0, one, 1);
    put_recv(CHAN_B, 0, 4, 100);
    put_tags(CHANWIRE__CLIENT_FRAME__BODY_NACK, t12, 2);
    put_recv(CHAN_B, 0, 0, 0);
    put_stat(CHANWIRE__CLIENT_FRAME__BODY_STAT, "q");
    put_ping("dribble");
    corpus_file("dribble", ready | FUZZ_DRIBBLE | (1 << FUZZ_PIECE_SHIFT));

    evbuffer_free(cur);
    printf("mkcorpus: %d seed inputs in %s\n", nfiles, outdir);
    return 0;
}
