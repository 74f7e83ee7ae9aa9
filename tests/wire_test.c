/*
 * wire_test.c: the framing and codec (proto/wire.c, proto/codec.c) against
 * protobuf-c. Random hot and other frames, and random field soup, go both ways: wire_write
 * must give protobuf-c's bytes, wire_read must give protobuf-c's decode and
 * the old wire_take's verdict, whatever the chain layout. Ends with a small
 * benchmark of the old and new paths.
 */
#include <check.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>

#include "wire.h"

/*
 * Check's ck_assert writes to a pipe on every call, passing or not; the
 * helpers below run millions of times, so they test first and only call
 * into Check to fail.
 */
#define MUST(cond)                                                     \
    do {                                                               \
        if (!(cond))                                                   \
            ck_abort_msg("%s:%d: %s", __FILE__, __LINE__, #cond);      \
    } while (0)

/* ---- randomness -------------------------------------------------------- */

static uint64_t rng_state;

static uint64_t rnd(void)
{
    /* xorshift64*: fast, and a printed seed reproduces a run */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dULL;
}

static size_t rnd_below(size_t n)
{
    return n ? (size_t)(rnd() % n) : 0;
}

/* WIRE_SEED in the environment replays a run; else the time picks one, printed. */
static void rng_seed(const char *test)
{
    const char *s = getenv("WIRE_SEED");

    rng_state = s != NULL ? strtoull(s, NULL, 0) : (uint64_t)time(NULL) * 2654435761u + 1;
    if (rng_state == 0)
        rng_state = 1;
    printf("%s: WIRE_SEED=%" PRIu64 "\n", test, rng_state);
    fflush(stdout);
}

/* Edge values first: zero, all ones, one-byte, width boundaries. */
static uint64_t r_u64(void)
{
    switch (rnd_below(9)) {
    case 0:
        return 0;
    case 1:
        return UINT64_MAX;
    case 2:
        return rnd_below(128);
    case 3:
        return rnd_below(20000);
    case 4:
        return (uint64_t)1 << rnd_below(64);
    case 5:
        return ((uint64_t)1 << rnd_below(64)) - 1;
    default:
        return rnd() >> rnd_below(64);
    }
}

static int64_t r_i64(void)
{
    switch (rnd_below(7)) {
    case 0:
        return 0;
    case 1:
        return INT64_MIN;
    case 2:
        return INT64_MAX;
    case 3:
        return -1;
    case 4:
        return -(int64_t)rnd_below(100000);
    default:
        return (int64_t)r_u64();
    }
}

static uint32_t r_u32(void)
{
    return rnd_below(6) == 0 ? UINT32_MAX : (uint32_t)r_u64();
}

/* Array lengths: often empty, sometimes 100, rarely past the hand codec's bound. */
static size_t r_count(void)
{
    switch (rnd_below(10)) {
    case 0:
    case 1:
    case 2:
        return 0;
    case 3:
        return 100;
    case 4:
        return rnd_below(200);
    case 5:
        return rnd_below(40) == 0 ? 4090 + rnd_below(20) : 1;
    default:
        return 1 + rnd_below(5);
    }
}

/* ---- frames as protobuf-c structs ------------------------------------ */

#define ARR_MAX 4200
#define PL_MAX 100
#define POOL_SIZE (1u << 20)

static uint8_t *pool;  /* random bytes payloads are cut from; owner: setup/teardown */

/* Storage for one random frame; every pointer in the frame points in here. */
struct gen {
    int client;
    Chanwire__ClientFrame cf;
    Chanwire__ServerFrame sf;
    Chanwire__Send send;
    Chanwire__Recv recv;
    Chanwire__Tags tags;
    Chanwire__SendReply send_r;
    Chanwire__RecvReply recv_r;
    Chanwire__Hello hello;
    Chanwire__HelloReply hello_r;
    Chanwire__Open open;
    Chanwire__OpenReply open_r;
    Chanwire__Select select;
    Chanwire__Case cases[3], *casep[3];
    Chanwire__SelectReply select_r;
    Chanwire__Close close;
    Chanwire__Delete del;
    Chanwire__Cancel cancel;
    Chanwire__Stat stat;
    Chanwire__Ping ping;
    Chanwire__ChanInfo info[3], *infop[3];
    Chanwire__ListReply list;
    uint64_t a64[2][ARR_MAX];
    uint32_t a32[ARR_MAX];
    char str[3][64];
    struct wire_payload pl[PL_MAX];
    struct evbuffer *plbuf[PL_MAX];  /* by-reference payloads; freed by gen_clear */
    size_t npl;
};

static struct gen G;

static ProtobufCMessage *gen_hdr(struct gen *g)
{
    return g->client ? &g->cf.base : &g->sf.base;
}

static void gen_clear(struct gen *g)
{
    for (size_t i = 0; i < g->npl; i++)
        if (g->plbuf[i] != NULL)
            evbuffer_free(g->plbuf[i]);
    memset(g, 0, sizeof *g);
}

static char *r_str(char *buf, size_t cap)
{
    size_t n = rnd_below(4) == 0 ? 0 : rnd_below(cap);

    for (size_t i = 0; i < n; i++)
        buf[i] = (char)(' ' + rnd_below(95));
    buf[n] = '\0';
    return buf;
}

static ProtobufCBinaryData r_bytes(void)
{
    size_t n = rnd_below(3) == 0 ? 0 : rnd_below(40);

    return (ProtobufCBinaryData){n, n ? pool + rnd_below(POOL_SIZE - n) : NULL};
}

static size_t fill64(uint64_t *a)
{
    size_t n = r_count();

    for (size_t i = 0; i < n; i++)
        a[i] = r_u64();
    return n;
}

static size_t fill32(uint32_t *a)
{
    size_t n = r_count();

    for (size_t i = 0; i < n; i++)
        a[i] = r_u32();
    return n;
}

static void gen_client(struct gen *g)
{
    Chanwire__ClientFrame *f = &g->cf;

    *f = (Chanwire__ClientFrame)CHANWIRE__CLIENT_FRAME__INIT;
    f->id = r_u64();
    f->n_acks = fill64(g->a64[0]);
    f->acks = f->n_acks ? g->a64[0] : NULL;
    switch (rnd_below(14)) {
    case 0:
    case 1:
        f->body_case = CHANWIRE__CLIENT_FRAME__BODY_SEND;
        g->send = (Chanwire__Send)CHANWIRE__SEND__INIT;
        g->send.chan = r_u64();
        g->send.timeout_ms = r_i64();
        g->send.seq = r_u64();
        f->send = &g->send;
        break;
    case 2:
    case 3:
        f->body_case = CHANWIRE__CLIENT_FRAME__BODY_RECV;
        g->recv = (Chanwire__Recv)CHANWIRE__RECV__INIT;
        g->recv.chan = r_u64();
        g->recv.timeout_ms = r_i64();
        g->recv.max = r_u32();
        g->recv.lease_ms = r_i64();
        f->recv = &g->recv;
        break;
    case 4:
    case 5:
        f->body_case = rnd_below(2) ? CHANWIRE__CLIENT_FRAME__BODY_ACK : CHANWIRE__CLIENT_FRAME__BODY_NACK;
        g->tags = (Chanwire__Tags)CHANWIRE__TAGS__INIT;
        g->tags.n_tags = fill64(g->a64[1]);
        g->tags.tags = g->tags.n_tags ? g->a64[1] : NULL;
        f->ack = &g->tags; /* same union slot as nack */
        break;
    case 6:
        break; /* a pure ack frame */
    case 7:
        f->body_case = CHANWIRE__CLIENT_FRAME__BODY_HELLO;
        g->hello = (Chanwire__Hello)CHANWIRE__HELLO__INIT;
        g->hello.version = r_u32();
        g->hello.session = r_bytes();
        g->hello.token = r_str(g->str[0], sizeof g->str[0]);
        g->hello.client_name = r_str(g->str[1], sizeof g->str[1]);
        f->hello = &g->hello;
        break;
    case 8:
        f->body_case = CHANWIRE__CLIENT_FRAME__BODY_OPEN;
        g->open = (Chanwire__Open)CHANWIRE__OPEN__INIT;
        g->open.name = r_str(g->str[0], sizeof g->str[0]);
        g->open.cap = r_i64();
        f->open = &g->open;
        break;
    case 9:
        f->body_case = CHANWIRE__CLIENT_FRAME__BODY_SELECT;
        g->select = (Chanwire__Select)CHANWIRE__SELECT__INIT;
        g->select.n_cases = rnd_below(4);
        for (size_t i = 0; i < g->select.n_cases; i++) {
            g->cases[i] = (Chanwire__Case)CHANWIRE__CASE__INIT;
            g->cases[i].chan = r_u64();
            g->cases[i].send = (protobuf_c_boolean)rnd_below(2);
            g->casep[i] = &g->cases[i];
        }
        g->select.cases = g->select.n_cases ? g->casep : NULL;
        g->select.timeout_ms = r_i64();
        f->select = &g->select;
        break;
    case 10:
        f->body_case = CHANWIRE__CLIENT_FRAME__BODY_CLOSE;
        g->close = (Chanwire__Close)CHANWIRE__CLOSE__INIT;
        g->close.chan = r_u64();
        f->close = &g->close;
        break;
    case 11:
        f->body_case = CHANWIRE__CLIENT_FRAME__BODY_CANCEL;
        g->cancel = (Chanwire__Cancel)CHANWIRE__CANCEL__INIT;
        g->cancel.target = r_u64();
        f->cancel = &g->cancel;
        break;
    case 12:
        f->body_case = rnd_below(2) ? CHANWIRE__CLIENT_FRAME__BODY_STAT : CHANWIRE__CLIENT_FRAME__BODY_LIST;
        g->stat = (Chanwire__Stat)CHANWIRE__STAT__INIT;
        g->stat.name = r_str(g->str[0], sizeof g->str[0]);
        f->stat = &g->stat;
        break;
    default:
        f->body_case = rnd_below(2) ? CHANWIRE__CLIENT_FRAME__BODY_PING : CHANWIRE__CLIENT_FRAME__BODY_DELETE;
        if (f->body_case == CHANWIRE__CLIENT_FRAME__BODY_PING) {
            g->ping = (Chanwire__Ping)CHANWIRE__PING__INIT;
            g->ping.data = r_bytes();
            f->ping = &g->ping;
        } else {
            g->del = (Chanwire__Delete)CHANWIRE__DELETE__INIT;
            g->del.name = r_str(g->str[0], sizeof g->str[0]);
            f->delete_ = &g->del;
        }
        break;
    }
    /* a body case whose pointer is NULL: protobuf-c writes no body */
    if (f->body_case != CHANWIRE__CLIENT_FRAME__BODY__NOT_SET && rnd_below(50) == 0)
        f->send = NULL;
}

static void r_info(Chanwire__ChanInfo *c, char *name, size_t cap)
{
    *c = (Chanwire__ChanInfo)CHANWIRE__CHAN_INFO__INIT;
    c->name = r_str(name, cap);
    c->incarnation = r_bytes();
    c->cap = r_i64();
    c->len = r_u64();
    c->unacked = r_u64();
    c->senders = r_u32();
    c->receivers = r_u32();
    c->closed = (protobuf_c_boolean)rnd_below(2);
    c->bytes = r_u64();
}

static void gen_server(struct gen *g)
{
    Chanwire__ServerFrame *f = &g->sf;
    static const int32_t odd_status[] = {-1, INT32_MIN, INT32_MAX, 15, 1000};

    *f = (Chanwire__ServerFrame)CHANWIRE__SERVER_FRAME__INIT;
    f->id = r_u64();
    f->status = (Chanwire__Status)(rnd_below(8) == 0 ? odd_status[rnd_below(5)] : (int32_t)rnd_below(15));
    switch (rnd_below(4)) {
    case 0:
        f->error = NULL;
        break;
    case 1:
        f->error = r_str(g->str[2], sizeof g->str[2]);
        break;
    default:
        break; /* the INIT's empty string */
    }
    switch (rnd_below(10)) {
    case 0:
    case 1:
        f->body_case = CHANWIRE__SERVER_FRAME__BODY_SEND;
        g->send_r = (Chanwire__SendReply)CHANWIRE__SEND_REPLY__INIT;
        g->send_r.count = r_u32();
        f->send = &g->send_r;
        break;
    case 2:
    case 3:
    case 4:
        f->body_case = CHANWIRE__SERVER_FRAME__BODY_RECV;
        g->recv_r = (Chanwire__RecvReply)CHANWIRE__RECV_REPLY__INIT;
        g->recv_r.n_tags = fill64(g->a64[0]);
        g->recv_r.tags = g->recv_r.n_tags ? g->a64[0] : NULL;
        g->recv_r.n_deliveries = fill32(g->a32);
        g->recv_r.deliveries = g->recv_r.n_deliveries ? g->a32 : NULL;
        f->recv = &g->recv_r;
        break;
    case 5:
        break;
    case 6:
        f->body_case = CHANWIRE__SERVER_FRAME__BODY_HELLO;
        g->hello_r = (Chanwire__HelloReply)CHANWIRE__HELLO_REPLY__INIT;
        g->hello_r.version = r_u32();
        g->hello_r.session = r_bytes();
        g->hello_r.max_msg = r_u64();
        g->hello_r.server = r_str(g->str[0], sizeof g->str[0]);
        g->hello_r.instance = r_bytes();
        g->hello_r.resumed = (protobuf_c_boolean)rnd_below(2);
        f->hello = &g->hello_r;
        break;
    case 7:
        f->body_case = CHANWIRE__SERVER_FRAME__BODY_OPEN;
        g->open_r = (Chanwire__OpenReply)CHANWIRE__OPEN_REPLY__INIT;
        g->open_r.chan = r_u64();
        g->open_r.incarnation = r_bytes();
        g->open_r.cap = r_i64();
        g->open_r.created = (protobuf_c_boolean)rnd_below(2);
        f->open = &g->open_r;
        break;
    case 8:
        f->body_case = CHANWIRE__SERVER_FRAME__BODY_SELECT;
        g->select_r = (Chanwire__SelectReply)CHANWIRE__SELECT_REPLY__INIT;
        g->select_r.index = r_u32();
        g->select_r.result = (int32_t)r_u32();
        g->select_r.tag = r_u64();
        g->select_r.deliveries = r_u32();
        f->select = &g->select_r;
        break;
    default:
        if (rnd_below(2)) {
            f->body_case = CHANWIRE__SERVER_FRAME__BODY_STAT;
            r_info(&g->info[0], g->str[0], sizeof g->str[0]);
            f->stat = &g->info[0];
        } else {
            f->body_case = CHANWIRE__SERVER_FRAME__BODY_LIST;
            g->list = (Chanwire__ListReply)CHANWIRE__LIST_REPLY__INIT;
            g->list.n_chans = rnd_below(4);
            for (size_t i = 0; i < g->list.n_chans; i++) {
                r_info(&g->info[i], g->str[i], sizeof g->str[i]);
                g->infop[i] = &g->info[i];
            }
            g->list.chans = g->list.n_chans ? g->infop : NULL;
            f->list = &g->list;
        }
        break;
    }
    if (f->body_case != CHANWIRE__SERVER_FRAME__BODY__NOT_SET && rnd_below(50) == 0)
        f->send = NULL;
}

/* 0..N payloads of 0..70000 bytes, mostly small; some added by reference. */
static void gen_payloads(struct gen *g, int big_ok)
{
    size_t n;

    switch (rnd_below(6)) {
    case 0:
        n = 0;
        break;
    case 1:
        n = PL_MAX;
        break;
    default:
        n = 1 + rnd_below(4);
        break;
    }
    for (size_t i = 0; i < n; i++) {
        size_t len;
        switch (rnd_below(12)) {
        case 0:
            len = 0;
            break;
        case 1:
            len = big_ok && n < 10 ? 60000 + rnd_below(10001) : 300;
            break;
        case 2:
            len = rnd_below(5000);
            break;
        default:
            len = rnd_below(130);
            break;
        }
        const uint8_t *d = pool + rnd_below(POOL_SIZE - len);
        g->pl[i] = (struct wire_payload){.data = d, .len = len};
        if (rnd_below(5) == 0) {
            g->plbuf[i] = evbuffer_new();
            MUST(g->plbuf[i] != NULL);
            MUST(evbuffer_add(g->plbuf[i], d, len) == 0);
            g->pl[i].buf = g->plbuf[i];
        } else if (rnd_below(4) == 0) {
            g->pl[i].ref = 1; /* the pool outlives every output buffer */
        }
    }
    g->npl = n;
}

static void gen_frame(struct gen *g, int big_ok)
{
    gen_clear(g);
    g->client = (int)rnd_below(2);
    if (g->client)
        gen_client(g);
    else
        gen_server(g);
    gen_payloads(g, big_ok);
}

/* ---- byte buffers -------------------------------------------------------- */

struct bytes {
    uint8_t *p;
    size_t n, cap;
};

static void b_room(struct bytes *b, size_t more)
{
    if (b->n + more <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + more)
        cap *= 2;
    b->p = realloc(b->p, cap);
    MUST(b->p != NULL);
    b->cap = cap;
}

static void b_add(struct bytes *b, const void *d, size_t n)
{
    b_room(b, n);
    if (n > 0)
        memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void b_byte(struct bytes *b, uint8_t c)
{
    b_add(b, &c, 1);
}

/* A varint padded to `width` bytes (non-canonical when wider than needed). */
static void b_varint_w(struct bytes *b, uint64_t v, size_t width)
{
    size_t i = 0;

    do {
        uint8_t c = (uint8_t)(v & 0x7f);
        v >>= 7;
        i++;
        if (v != 0 || i < width)
            c |= 0x80;
        b_byte(b, c);
    } while (v != 0 || i < width);
}

static void b_varint(struct bytes *b, uint64_t v)
{
    b_varint_w(b, v, 1);
}

static void b_free(struct bytes *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

/*
 * What the codec had to produce before: protobuf-c's packing of hdr, the
 * payload fields after it, the length prefix in front.
 */
static void ref_encode(struct bytes *b, const ProtobufCMessage *hdr, const struct wire_payload *pl, size_t n)
{
    size_t hs = protobuf_c_message_get_packed_size(hdr), total = hs, at;
    struct bytes body = {0};

    for (size_t i = 0; i < n; i++) {
        b_byte(&body, 0xa2);
        b_byte(&body, 0x06);
        b_varint(&body, pl[i].len);
        at = body.n;
        b_room(&body, pl[i].len);
        body.n += pl[i].len;
        if (pl[i].buf != NULL)
            evbuffer_copyout(pl[i].buf, body.p + at, pl[i].len);
        else if (pl[i].len > 0)
            memcpy(body.p + at, pl[i].data, pl[i].len);
    }
    total += body.n;
    b_room(b, 4 + hs);
    b->p[b->n] = (uint8_t)(total >> 24);
    b->p[b->n + 1] = (uint8_t)(total >> 16);
    b->p[b->n + 2] = (uint8_t)(total >> 8);
    b->p[b->n + 3] = (uint8_t)total;
    MUST(protobuf_c_message_pack(hdr, b->p + b->n + 4) == hs);
    b->n += 4 + hs;
    b_add(b, body.p, body.n);
    b_free(&body);
}

/* ---- comparing decoded messages ---------------------------------------- */

static int value_equal(const ProtobufCFieldDescriptor *f, const void *a, const void *b);

/* Field by field through the descriptor, as a caller would read them. */
static int msg_equal(const ProtobufCMessage *a, const ProtobufCMessage *b, int skip_payload)
{
    const ProtobufCMessageDescriptor *d = a->descriptor;

    if (a->descriptor != b->descriptor || a->n_unknown_fields != b->n_unknown_fields)
        return 0;
    for (size_t i = 0; i < a->n_unknown_fields; i++) {
        const ProtobufCMessageUnknownField *x = &a->unknown_fields[i], *y = &b->unknown_fields[i];
        if (x->tag != y->tag || x->wire_type != y->wire_type || x->len != y->len ||
            memcmp(x->data, y->data, x->len) != 0)
            return 0;
    }
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const char *pa = (const char *)a + f->offset, *pb = (const char *)b + f->offset;

        if (skip_payload && f->id == WIRE_PAYLOAD_FIELD)
            continue;
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            uint32_t ca = *(const uint32_t *)(const void *)((const char *)a + f->quantifier_offset);
            uint32_t cb = *(const uint32_t *)(const void *)((const char *)b + f->quantifier_offset);
            if (ca != cb)
                return 0;
            if (ca != f->id)
                continue;
        }
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t na = *(const size_t *)(const void *)((const char *)a + f->quantifier_offset);
            size_t nb = *(const size_t *)(const void *)((const char *)b + f->quantifier_offset);
            const char *xa = *(char *const *)(const void *)pa, *xb = *(char *const *)(const void *)pb;
            size_t el;
            if (na != nb)
                return 0;
            switch (f->type) {
            case PROTOBUF_C_TYPE_INT64:
            case PROTOBUF_C_TYPE_UINT64:
            case PROTOBUF_C_TYPE_SINT64:
                el = 8;
                break;
            case PROTOBUF_C_TYPE_UINT32:
            case PROTOBUF_C_TYPE_INT32:
            case PROTOBUF_C_TYPE_ENUM:
                el = 4;
                break;
            case PROTOBUF_C_TYPE_BYTES:
                el = sizeof(ProtobufCBinaryData);
                break;
            default:
                el = sizeof(void *);
                break;
            }
            for (size_t k = 0; k < na; k++)
                if (!value_equal(f, xa + k * el, xb + k * el))
                    return 0;
            continue;
        }
        if (!value_equal(f, pa, pb))
            return 0;
    }
    return 1;
}

static int value_equal(const ProtobufCFieldDescriptor *f, const void *a, const void *b)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_ENUM:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_SFIXED32:
        return memcmp(a, b, 4) == 0;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_SFIXED64:
        return memcmp(a, b, 8) == 0;
    case PROTOBUF_C_TYPE_BOOL:
        return *(const protobuf_c_boolean *)a == *(const protobuf_c_boolean *)b;
    case PROTOBUF_C_TYPE_STRING: {
        const char *x = *(char *const *)a, *y = *(char *const *)b;
        return strcmp(x ? x : "", y ? y : "") == 0;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *x = a, *y = b;
        return x->len == y->len && (x->len == 0 || memcmp(x->data, y->data, x->len) == 0);
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *x = *(ProtobufCMessage *const *)a, *y = *(ProtobufCMessage *const *)b;
        if (x == NULL || y == NULL)
            return x == y;
        return msg_equal(x, y, 0);
    }
    default:
        return memcmp(a, b, 8) == 0;
    }
}

/* ---- collecting payloads ------------------------------------------------ */

struct got {
    size_t n;                 /* payloads handed over */
    struct bytes data[PL_MAX + 8];
    int by_ref[PL_MAX + 8];   /* 1: came as an evbuffer range */
    size_t fail_at;           /* refuse this index; SIZE_MAX: none */
    size_t keep_half;         /* in src mode leave half of this index's bytes in place */
    size_t cap;               /* payloads beyond this are counted, not kept */
};

static void got_init(struct got *g)
{
    memset(g, 0, sizeof *g);
    g->fail_at = SIZE_MAX;
    g->keep_half = SIZE_MAX;
    g->cap = PL_MAX + 8;
}

static void got_free(struct got *g)
{
    for (size_t i = 0; i < g->n && i < g->cap; i++)
        b_free(&g->data[i]);
    g->n = 0;
}

static int got_take(void *arg, size_t index, const void *data, struct evbuffer *src, size_t len)
{
    struct got *g = arg;

    MUST((data == NULL) != (src == NULL));   /* exactly one of them */
    MUST(index == g->n);
    g->n++;
    if (index < g->cap) {
        struct bytes *b = &g->data[index];
        g->by_ref[index] = src != NULL;
        b_room(b, len);
        if (data != NULL) {
            b_add(b, data, len);
        } else {
            MUST(evbuffer_get_length(src) >= len);
            size_t take = index == g->keep_half ? len / 2 : len;
            MUST(evbuffer_remove(src, b->p, take) == (int)take);
            if (take < len)
                evbuffer_copyout(src, b->p + take, len - take);
            b->n = len;
        }
    }
    return index == g->fail_at ? -1 : 0;
}

static int got_take_old(void *arg, size_t index, struct evbuffer *src, size_t len)
{
    return got_take(arg, index, NULL, src, len);
}

/* ---- feeding evbuffers ----------------------------------------------------- */

#define MAX_CUTS 16

/* Cut points for b[0..n): where chain boundaries fall. */
struct cuts {
    size_t n;
    size_t at[MAX_CUTS];
    int ref[MAX_CUTS + 1];   /* piece added by reference (an immutable chain) */
};

static void cuts_random(struct cuts *c, size_t len)
{
    c->n = len > 1 ? rnd_below(MAX_CUTS + 1) : 0;
    for (size_t i = 0; i < c->n; i++)
        c->at[i] = 1 + rnd_below(len - 1);
    /* sort: few elements */
    for (size_t i = 1; i < c->n; i++)
        for (size_t j = i; j > 0 && c->at[j - 1] > c->at[j]; j--) {
            size_t t = c->at[j];
            c->at[j] = c->at[j - 1];
            c->at[j - 1] = t;
        }
    for (size_t i = 0; i <= c->n; i++)
        c->ref[i] = rnd_below(4) == 0;
}

/* Append b[0..n) to in as one chain per piece. Referenced bytes must outlive in. */
static void feed(struct evbuffer *in, const uint8_t *b, size_t n, const struct cuts *c)
{
    size_t from = 0;

    for (size_t i = 0; i <= c->n; i++) {
        size_t to = i < c->n ? c->at[i] : n;
        if (to > from) {
            struct evbuffer *piece = evbuffer_new();
            MUST(piece != NULL);
            if (c->ref[i])
                MUST(evbuffer_add_reference(piece, b + from, to - from, NULL, NULL) == 0);
            else
                MUST(evbuffer_add(piece, b + from, to - from) == 0);
            MUST(evbuffer_add_buffer(in, piece) == 0);
            evbuffer_free(piece);
        }
        from = to;
    }
}

/* ---- the differential checks ----------------------------------------------- */

#define MAX_FRAME (WIRE_FRAME_MAX(1u << 20))

struct verdict {
    int rc;
    size_t need, npl, left;
    ProtobufCMessage *hdr;
    struct got got;
    char err[160];
};

static void verdict_free(struct verdict *v, int hand)
{
    if (hand)
        wire_hdr_free(v->hdr);
    else if (v->hdr != NULL)
        protobuf_c_message_free_unpacked(v->hdr, NULL);
    v->hdr = NULL;
    got_free(&v->got);
}

/*
 * Read one frame from in with wire_read (hand = 1) or wire_take, into v.
 */
static void read_one(struct evbuffer *in, const ProtobufCMessageDescriptor *desc, int hand,
                     struct verdict *v, size_t fail_at, size_t keep_half)
{
    got_init(&v->got);
    v->got.fail_at = fail_at;
    v->got.keep_half = keep_half;
    v->hdr = NULL;
    v->need = 0;
    if (hand)
        v->rc = wire_read(in, MAX_FRAME, desc, &v->hdr, got_take, &v->got, &v->npl, &v->need,
                          v->err, sizeof v->err);
    else
        v->rc = wire_take(in, MAX_FRAME, desc, &v->hdr, got_take_old, &v->got, &v->npl, &v->need,
                          v->err, sizeof v->err);
    v->left = evbuffer_get_length(in);
}

/* The decoded header and payloads equal protobuf-c's decode of the whole frame at f[0..n). */
static void assert_like_protobuf_c(const struct verdict *v, const ProtobufCMessageDescriptor *desc,
                                   const uint8_t *f, size_t n)
{
    ProtobufCMessage *whole = protobuf_c_message_unpack(desc, NULL, n, f);
    const ProtobufCFieldDescriptor *fd = protobuf_c_message_descriptor_get_field(desc, WIRE_PAYLOAD_FIELD);

    MUST(whole != NULL);   /* protobuf-c takes what wire_read took */
    MUST(msg_equal(v->hdr, whole, 1));
    size_t cnt = *(const size_t *)(const void *)((const char *)whole + fd->quantifier_offset);
    const ProtobufCBinaryData *arr =
        *(ProtobufCBinaryData *const *)(const void *)((const char *)whole + fd->offset);
    MUST(v->npl == cnt);
    MUST(v->got.n == cnt);
    for (size_t i = 0; i < cnt && i < v->got.cap; i++) {
        MUST(v->got.data[i].n == arr[i].len);
        MUST(arr[i].len == 0 || memcmp(v->got.data[i].p, arr[i].data, arr[i].len) == 0);
    }
    /* the header carries no payloads, as documented */
    MUST(*(const size_t *)(const void *)((const char *)v->hdr + fd->quantifier_offset) == 0);
    protobuf_c_message_free_unpacked(whole, NULL);
}

/* Both readers said the same about the same bytes. */
static void assert_same_verdict(const struct verdict *a, const struct verdict *b)
{
    MUST(a->rc == b->rc);
    MUST(a->left == b->left);
    if (a->rc == 0)
        MUST(a->need == b->need);
    if (a->rc == 1) {
        MUST(msg_equal(a->hdr, b->hdr, 0));
        MUST(a->npl == b->npl);
        MUST(a->got.n == b->got.n);
        for (size_t i = 0; i < a->got.n && i < a->got.cap; i++) {
            MUST(a->got.data[i].n == b->got.data[i].n);
            MUST(a->got.data[i].n == 0 ||
                      memcmp(a->got.data[i].p, b->got.data[i].p, a->got.data[i].n) == 0);
        }
    }
}

static const ProtobufCMessageDescriptor *gen_desc(const struct gen *g)
{
    return g->client ? &chanwire__client_frame__descriptor : &chanwire__server_frame__descriptor;
}

/* Is this one of the frames the hand codec is meant to take? */
static int gen_is_hot(const struct gen *g)
{
    /* a body case whose pointer is NULL is written as no body at all */
    if (g->client && g->cf.send == NULL)
        return g->cf.n_acks <= 4096;
    if (!g->client && g->sf.send == NULL)
        return (int32_t)g->sf.status >= 0;
    if (g->client) {
        const Chanwire__ClientFrame *f = &g->cf;
        size_t nt = f->body_case == CHANWIRE__CLIENT_FRAME__BODY_ACK ||
                            f->body_case == CHANWIRE__CLIENT_FRAME__BODY_NACK
                        ? (f->ack ? f->ack->n_tags : 0)
                        : 0;
        return (f->body_case == CHANWIRE__CLIENT_FRAME__BODY__NOT_SET ||
                f->body_case == CHANWIRE__CLIENT_FRAME__BODY_SEND ||
                f->body_case == CHANWIRE__CLIENT_FRAME__BODY_RECV ||
                f->body_case == CHANWIRE__CLIENT_FRAME__BODY_ACK ||
                f->body_case == CHANWIRE__CLIENT_FRAME__BODY_NACK) &&
               f->n_acks <= 4096 && nt <= 4096;
    }
    const Chanwire__ServerFrame *f = &g->sf;
    int body = f->body_case == CHANWIRE__SERVER_FRAME__BODY__NOT_SET ||
               f->body_case == CHANWIRE__SERVER_FRAME__BODY_SEND ||
               f->body_case == CHANWIRE__SERVER_FRAME__BODY_RECV;
    int small = f->body_case != CHANWIRE__SERVER_FRAME__BODY_RECV || f->recv == NULL ||
                (f->recv->n_tags <= 4096 && f->recv->n_deliveries <= 4096);
    /* negative statuses are ten-byte varints, over a 32-bit field's width: protobuf-c's */
    return body && small && (int32_t)f->status >= 0;
}

/* ---- tests ------------------------------------------------------------------ */

static void setup(void)
{
    pool = malloc(POOL_SIZE);
    ck_assert_ptr_nonnull(pool);
    rng_state = 0x9e3779b97f4a7c15ULL;   /* the pool is the same every run */
    for (size_t i = 0; i < POOL_SIZE; i += 8) {
        uint64_t r = rnd();
        memcpy(pool + i, &r, 8);
    }
    memset(&G, 0, sizeof G);
}

static void teardown(void)
{
    gen_clear(&G);
    free(pool);
    pool = NULL;
}

/* Iterations of the randomised tests; WIRE_ITER scales them. */
static size_t iters(size_t base)
{
    const char *s = getenv("WIRE_ITER");
    size_t k = s != NULL ? strtoul(s, NULL, 0) : 0;
    return k ? k : base;
}

START_TEST(test_wire_write_gives_protobuf_c_bytes_for_random_frames)
{
    size_t hand = 0, n = iters(4000);

    rng_seed("wire_write");
    for (size_t it = 0; it < n; it++) {
        struct bytes ref = {0};
        struct evbuffer *out = evbuffer_new();

        gen_frame(&G, 1);
        ref_encode(&ref, gen_hdr(&G), G.pl, G.npl);
        ck_assert_ptr_nonnull(out);
        /* something already in the output must stay in front, untouched */
        size_t junk = rnd_below(3) * 700;
        if (junk)
            ck_assert_int_eq(evbuffer_add(out, pool, junk), 0);
        if (protobuf_c_message_get_packed_size(gen_hdr(&G)) > WIRE_HDR_MAX) {
            ck_assert_int_eq(wire_write(out, gen_hdr(&G), G.pl, G.npl), -1);
            ck_assert_uint_eq(evbuffer_get_length(out), junk);
            evbuffer_free(out);
            b_free(&ref);
            continue;
        }
        ck_assert_int_eq(wire_write(out, gen_hdr(&G), G.pl, G.npl), 0);
        ck_assert_uint_eq(evbuffer_get_length(out), junk + ref.n);
        const uint8_t *p = evbuffer_pullup(out, -1);
        ck_assert(memcmp(p, pool, junk) == 0);
        ck_assert_msg(memcmp(p + junk, ref.p, ref.n) == 0, "wire_write differs from protobuf-c (iteration %zu)", it);
        hand += gen_is_hot(&G);
        evbuffer_free(out);
        b_free(&ref);
    }
    /* the run must have covered both codecs */
    ck_assert_uint_gt(hand, n / 4);
    ck_assert_uint_lt(hand, n);
}
END_TEST

START_TEST(test_wire_write_refuses_a_header_over_the_limit_and_appends_nothing)
{
    struct evbuffer *out = evbuffer_new();
    static uint64_t tags[10000];
    Chanwire__ClientFrame f = CHANWIRE__CLIENT_FRAME__INIT;
    Chanwire__Tags t = CHANWIRE__TAGS__INIT;

    ck_assert_ptr_nonnull(out);
    for (size_t i = 0; i < 10000; i++)
        tags[i] = UINT64_MAX - i;   /* ten bytes each: 100,000 header bytes */
    t.tags = tags;
    t.n_tags = 10000;
    f.body_case = CHANWIRE__CLIENT_FRAME__BODY_ACK;
    f.ack = &t;
    ck_assert_int_eq(evbuffer_add(out, "x", 1), 0);
    ck_assert_int_eq(wire_write(out, &f.base, NULL, 0), -1);
    ck_assert_uint_eq(evbuffer_get_length(out), 1);
    t.n_tags = 6000;   /* 60,000 bytes: fits */
    ck_assert_int_eq(wire_write(out, &f.base, NULL, 0), 0);
    ck_assert_uint_gt(evbuffer_get_length(out), 60000);
    evbuffer_free(out);
}
END_TEST

/*
 * Random frames, several back to back, cut into chains at random points:
 * wire_read equals protobuf-c's decode and wire_take's verdict frame by
 * frame, hot headers come as one block, and the stream ends on a need.
 */
START_TEST(test_wire_read_decodes_random_frames_like_protobuf_c)
{
    size_t n = iters(3000), blocks = 0, frames = 0, flat = 0, ranged = 0;

    rng_seed("wire_read");
    for (size_t it = 0; it < n; it++) {
        struct bytes stream = {0};
        size_t nf = 1 + rnd_below(4), start[5], len[5];
        const ProtobufCMessageDescriptor *desc[4];
        int hot[4];
        int client = (int)rnd_below(2);

        for (size_t k = 0; k < nf; k++) {
            do
                gen_frame(&G, nf == 1 || rnd_below(3) == 0);
            while (G.client != client);
            desc[k] = gen_desc(&G);
            hot[k] = gen_is_hot(&G);
            start[k] = stream.n;
            ref_encode(&stream, gen_hdr(&G), G.pl, G.npl);
            len[k] = stream.n - start[k];
            /* a frame over 64 KiB across chains with a header over 4 KiB: protobuf-c's, or ours if in one chain */
            if (len[k] > 65536 && protobuf_c_message_get_packed_size(gen_hdr(&G)) >= 4096)
                hot[k] = -1;
        }
        /* a partial next frame at the end, sometimes */
        size_t tail = rnd_below(3) == 0 ? 1 + rnd_below(len[0] - 1 > 0 ? len[0] - 1 : 1) : 0;
        if (tail >= len[0])
            tail = len[0] - 1;
        b_room(&stream, tail);
        memcpy(stream.p + stream.n, stream.p + start[0], tail);
        stream.n += tail;

        struct cuts c;
        cuts_random(&c, stream.n);
        struct evbuffer *a = evbuffer_new(), *b = evbuffer_new();
        ck_assert_ptr_nonnull(a);
        ck_assert_ptr_nonnull(b);
        feed(a, stream.p, stream.n, &c);
        feed(b, stream.p, stream.n, &c);
        for (size_t k = 0; k < nf; k++) {
            struct verdict va, vb;
            read_one(a, desc[k], 1, &va, SIZE_MAX, SIZE_MAX);
            read_one(b, desc[k], 0, &vb, SIZE_MAX, SIZE_MAX);
            ck_assert_msg(va.rc == 1, "frame %zu of iteration %zu: rc %d (%s)", k, it, va.rc, va.err);
            assert_same_verdict(&va, &vb);
            assert_like_protobuf_c(&va, desc[k], stream.p + start[k] + 4, len[k] - 4);
            if (hot[k] >= 0 && wire_hdr_is_block(va.hdr) != hot[k]) {
                const Chanwire__ClientFrame *cf = (const void *)va.hdr;
                const Chanwire__ServerFrame *sf = (const void *)va.hdr;
                ck_abort_msg("frame %zu of iteration %zu: hand-decoded %d, meant %d (%s frame, body %d, status %d)",
                             k, it, wire_hdr_is_block(va.hdr), hot[k], client ? "client" : "server",
                             client ? (int)cf->body_case : (int)sf->body_case, client ? 0 : (int)sf->status);
            }
            ck_assert_int_eq(wire_hdr_is_block(vb.hdr), 0);
            blocks += (size_t)wire_hdr_is_block(va.hdr);
            frames++;
            for (size_t i = 0; i < va.got.n; i++) {
                ranged += va.got.by_ref[i];
                flat += !va.got.by_ref[i];
                /* frames up to 64 KiB are always read in place */
                if (len[k] <= 65536)
                    ck_assert(!va.got.by_ref[i]);
            }
            verdict_free(&va, 1);
            verdict_free(&vb, 0);
        }
        struct verdict va, vb;
        read_one(a, desc[0], 1, &va, SIZE_MAX, SIZE_MAX);
        read_one(b, desc[0], 0, &vb, SIZE_MAX, SIZE_MAX);
        ck_assert_int_eq(va.rc, 0);
        assert_same_verdict(&va, &vb);
        ck_assert_uint_eq(va.left, tail);
        ck_assert_uint_eq(va.need, tail < 4 ? 4 : len[0]);
        evbuffer_free(a);
        evbuffer_free(b);
        b_free(&stream);
    }
    printf("wire_read: %zu frames, %zu hand-decoded, payloads %zu in place, %zu as ranges\n", frames,
           blocks, flat, ranged);
    ck_assert_uint_gt(blocks, frames / 4);
    ck_assert_uint_gt(ranged, 0);
}
END_TEST

/* Bytes arriving a few at a time: every prefix asks for the right amount, then the frame comes whole. */
START_TEST(test_wire_read_reports_the_bytes_a_partial_frame_needs)
{
    size_t n = iters(300);

    rng_seed("partial");
    for (size_t it = 0; it < n; it++) {
        struct bytes f = {0};
        struct evbuffer *a = evbuffer_new();
        size_t fed = 0;

        ck_assert_ptr_nonnull(a);
        gen_frame(&G, 0);
        ref_encode(&f, gen_hdr(&G), G.pl, G.npl);
        while (fed < f.n) {
            struct verdict v;
            read_one(a, gen_desc(&G), 1, &v, SIZE_MAX, SIZE_MAX);
            ck_assert_int_eq(v.rc, 0);
            ck_assert_ptr_null(v.hdr);
            ck_assert_uint_eq(v.need, fed < 4 ? 4 : f.n);
            ck_assert_uint_eq(v.left, fed);
            size_t step = 1 + rnd_below(fed < 8 ? 3 : f.n / 3 + 1);
            if (step > f.n - fed)
                step = f.n - fed;
            ck_assert_int_eq(evbuffer_add(a, f.p + fed, step), 0);
            fed += step;
        }
        struct verdict v;
        read_one(a, gen_desc(&G), 1, &v, SIZE_MAX, SIZE_MAX);
        ck_assert_int_eq(v.rc, 1);
        ck_assert_uint_eq(v.left, 0);
        assert_like_protobuf_c(&v, gen_desc(&G), f.p + 4, f.n - 4);
        verdict_free(&v, 1);
        evbuffer_free(a);
        b_free(&f);
    }
}
END_TEST

/* ---- field soup: valid, odd and broken encodings of the hot frames ---- */

/* Random bytes for a field's value of wire type wt; sometimes cut or overlong. */
static void soup_value(struct bytes *b, unsigned wt)
{
    switch (wt) {
    case 0:
        switch (rnd_below(8)) {
        case 0:
            b_varint_w(b, r_u64(), 10);                 /* ten bytes, valid top bit */
            break;
        case 1:
            for (int i = 0; i < 9; i++)
                b_byte(b, 0xff);
            b_byte(b, (uint8_t)(2 + rnd_below(126)));   /* bits past 64 */
            break;
        case 2:
            b_varint_w(b, r_u64(), 2 + rnd_below(6));   /* non-canonical padding */
            break;
        case 3:
            for (int i = 0; i < 11; i++)
                b_byte(b, 0x80);                        /* unterminated */
            b_byte(b, 0);
            break;
        default:
            b_varint(b, r_u64());
            break;
        }
        break;
    case 1:
        for (int i = 0; i < 8; i++)
            b_byte(b, (uint8_t)rnd());
        break;
    case 5:
        for (int i = 0; i < 4; i++)
            b_byte(b, (uint8_t)rnd());
        break;
    default: {
        size_t n = rnd_below(12);
        b_varint(b, n + (rnd_below(20) == 0 ? 5 : 0));  /* sometimes longer than what follows */
        for (size_t i = 0; i < n; i++)
            b_byte(b, (uint8_t)rnd());
        break;
    }
    }
}

/* A packed run of varints, sometimes with an odd one in it. */
static void soup_packed(struct bytes *b, unsigned field)
{
    struct bytes in = {0};
    size_t n = r_count();

    if (n > 200 && rnd_below(2))
        n = 200;
    for (size_t i = 0; i < n; i++) {
        if (rnd_below(60) == 0)
            soup_value(&in, 0);
        else
            b_varint(&in, rnd_below(2) ? r_u64() : r_u32());
    }
    b_varint(b, ((uint64_t)field << 3) | 2);
    b_varint(b, in.n);
    b_add(b, in.p, in.n);
    b_free(&in);
}

/* Fields of a body sub-message of field number body, in a random order, some odd. */
static void soup_body(struct bytes *b, int client, unsigned body)
{
    size_t nf = rnd_below(6);

    for (size_t i = 0; i < nf; i++) {
        unsigned f = 1 + (unsigned)rnd_below(body == 13 && client ? 4 : 3);
        unsigned r = (unsigned)rnd_below(20);
        int tags = client ? body == 17 || body == 18 : body == 13;
        if (r == 0) {
            f = 5 + (unsigned)rnd_below(30);   /* unknown here */
        }
        if (tags && f <= 2 && r != 1) {
            if (rnd_below(8) == 0) {
                b_varint(b, (uint64_t)f << 3);   /* one unpacked element */
                soup_value(b, 0);
            } else {
                soup_packed(b, f);
            }
            continue;
        }
        unsigned wt = r == 1 ? (unsigned)rnd_below(6) : 0;
        if (wt == 3 || wt == 4)
            wt = 2;
        b_varint(b, ((uint64_t)f << 3) | wt);
        soup_value(b, wt);
    }
}

/* A frame of random fields: mostly the hot ones, some unknown, doubled, misplaced or broken. */
static void soup_frame(struct bytes *out, int client)
{
    struct bytes b = {0};
    size_t nf = rnd_below(7), npl = rnd_below(4);
    static const unsigned cbody[] = {12, 13, 17, 18, 15, 19};
    static const unsigned sbody[] = {12, 13, 11, 22};

    for (size_t i = 0; i < nf; i++) {
        switch (rnd_below(12)) {
        case 0:
        case 1:
            b_byte(&b, 0x08);
            soup_value(&b, 0);
            break;
        case 2:
            if (client) {
                soup_packed(&b, 2);
            } else {
                b_byte(&b, 0x10);
                soup_value(&b, 0);
            }
            break;
        case 3:
            if (client) {
                b_byte(&b, 0x10);   /* acks, unpacked */
                soup_value(&b, 0);
            } else {
                b_byte(&b, 0x1a);   /* error text */
                soup_value(&b, 2);
            }
            break;
        case 4:
        case 5:
        case 6:
        case 7: {
            unsigned body = client ? cbody[rnd_below(6)] : sbody[rnd_below(4)];
            struct bytes sub = {0};
            soup_body(&sub, client, body);
            b_varint(&b, ((uint64_t)body << 3) | 2);
            b_varint(&b, sub.n);
            b_add(&b, sub.p, sub.n);
            b_free(&sub);
            break;
        }
        case 8: {
            /* an unknown field of any wire type, or a known one with the wrong wire type */
            unsigned f = rnd_below(2) ? 1 + (unsigned)rnd_below(3) : 23 + (unsigned)rnd_below(2000);
            unsigned wt = (unsigned)rnd_below(8);
            if (f == WIRE_PAYLOAD_FIELD)
                f++;
            b_varint(&b, ((uint64_t)f << 3) | wt);
            soup_value(&b, wt);
            break;
        }
        case 9:
            /* a payload field in the middle of the header */
            b_byte(&b, 0xa2);
            b_byte(&b, 0x06);
            soup_value(&b, 2);
            break;
        case 10:
            /* a tag with padding bytes, or a field number of 0 */
            if (rnd_below(2))
                b_varint_w(&b, 0x08, 2 + rnd_below(5));
            else
                b_byte(&b, (uint8_t)rnd_below(8));
            soup_value(&b, 0);
            break;
        default:
            b_byte(&b, (uint8_t)rnd());
            break;
        }
    }
    for (size_t i = 0; i < npl; i++) {
        size_t len = rnd_below(4) == 0 ? rnd_below(3000) : rnd_below(70);
        if (rnd_below(15) == 0) {
            b_varint_w(&b, ((uint64_t)WIRE_PAYLOAD_FIELD << 3) | 2, 3);   /* padded tag */
        } else {
            b_byte(&b, 0xa2);
            b_byte(&b, 0x06);
        }
        b_varint_w(&b, len, rnd_below(10) == 0 ? 3 : 1);
        b_add(&b, pool + rnd_below(POOL_SIZE - len), len);
        if (rnd_below(15) == 0) {
            b_byte(&b, 0x08);     /* a header field after a payload */
            b_varint(&b, r_u64());
        }
    }
    /* sometimes the length prefix cuts the last field short */
    size_t n = b.n;
    if (n > 0 && rnd_below(10) == 0)
        n -= 1 + rnd_below(n < 5 ? n : 5);
    b_byte(out, (uint8_t)(n >> 24));
    b_byte(out, (uint8_t)(n >> 16));
    b_byte(out, (uint8_t)(n >> 8));
    b_byte(out, (uint8_t)n);
    b_add(out, b.p, n);
    b_free(&b);
}

/*
 * Field soup: for every frame wire_read gives wire_take's verdict (taken,
 * refused, bytes left) and, when taken, protobuf-c's decode; a frame
 * protobuf-c refuses is refused.
 */
START_TEST(test_wire_read_gives_the_old_verdict_on_odd_and_broken_frames)
{
    size_t n = iters(20000), ok = 0, bad = 0, blocks = 0;

    rng_seed("soup");
    for (size_t it = 0; it < n; it++) {
        struct bytes f = {0};
        int client = (int)rnd_below(2);
        const ProtobufCMessageDescriptor *desc =
            client ? &chanwire__client_frame__descriptor : &chanwire__server_frame__descriptor;

        soup_frame(&f, client);
        /* a good frame after it shows where the reader stopped */
        b_add(&f, "\0\0\0\x02\x08\x07", 6);
        struct cuts c;
        cuts_random(&c, f.n);
        struct evbuffer *a = evbuffer_new(), *b = evbuffer_new();
        ck_assert_ptr_nonnull(a);
        ck_assert_ptr_nonnull(b);
        feed(a, f.p, f.n, &c);
        feed(b, f.p, f.n, &c);

        struct verdict va, vb;
        read_one(a, desc, 1, &va, SIZE_MAX, SIZE_MAX);
        read_one(b, desc, 0, &vb, SIZE_MAX, SIZE_MAX);
        assert_same_verdict(&va, &vb);
        size_t len = (size_t)f.p[0] << 24 | (size_t)f.p[1] << 16 | (size_t)f.p[2] << 8 | f.p[3];
        ProtobufCMessage *whole = protobuf_c_message_unpack(desc, NULL, len, f.p + 4);
        ck_assert_int_eq(va.rc, whole != NULL ? 1 : -1);
        if (va.rc == 1) {
            assert_like_protobuf_c(&va, desc, f.p + 4, len);
            blocks += (size_t)wire_hdr_is_block(va.hdr);
            ok++;
        } else {
            bad++;
        }
        ck_assert_uint_eq(va.left, 6);
        protobuf_c_message_free_unpacked(whole, NULL);
        verdict_free(&va, 1);
        verdict_free(&vb, 0);
        evbuffer_free(a);
        evbuffer_free(b);
        b_free(&f);
    }
    printf("soup: %zu taken (%zu hand-decoded), %zu refused\n", ok, blocks, bad);
    ck_assert_uint_gt(ok, n / 10);
    ck_assert_uint_gt(bad, n / 10);
    ck_assert_uint_gt(blocks, ok / 10);
}
END_TEST

/* A refused payload fails the frame, drains exactly it, and frees the header. */
START_TEST(test_a_refused_payload_fails_the_frame_and_drains_it)
{
    size_t n = iters(500), fails = 0;

    rng_seed("refuse");
    for (size_t it = 0; it < n; it++) {
        struct bytes f = {0};

        do
            gen_frame(&G, 1);
        while (G.npl == 0);
        ref_encode(&f, gen_hdr(&G), G.pl, G.npl);
        b_add(&f, "\0\0\0\x02\x08\x07", 6);
        struct cuts c;
        cuts_random(&c, f.n);
        struct evbuffer *a = evbuffer_new(), *b = evbuffer_new();
        ck_assert_ptr_nonnull(a);
        ck_assert_ptr_nonnull(b);
        feed(a, f.p, f.n, &c);
        feed(b, f.p, f.n, &c);
        size_t fail_at = rnd_below(G.npl + 1);   /* npl: no refusal, half kept instead */
        size_t keep = rnd_below(G.npl);
        struct verdict va, vb;
        read_one(a, gen_desc(&G), 1, &va, fail_at, keep);
        read_one(b, gen_desc(&G), 0, &vb, fail_at, keep);
        ck_assert_int_eq(va.rc, fail_at < G.npl ? -1 : 1);
        ck_assert_int_eq(vb.rc, va.rc);
        ck_assert_uint_eq(va.left, 6);
        ck_assert_uint_eq(vb.left, 6);
        if (va.rc < 0) {
            ck_assert_ptr_null(va.hdr);
            ck_assert_uint_eq(va.got.n, fail_at + 1);
            ck_assert_msg(strstr(va.err, "payload refused") != NULL, "%s", va.err);
            fails++;
        } else {
            assert_like_protobuf_c(&va, gen_desc(&G), f.p + 4, f.n - 10);
        }
        verdict_free(&va, 1);
        verdict_free(&vb, 0);
        evbuffer_free(a);
        evbuffer_free(b);
        b_free(&f);
    }
    ck_assert_uint_gt(fails, 0);
}
END_TEST

START_TEST(test_a_frame_over_max_frame_is_refused_and_nothing_is_drained)
{
    struct evbuffer *in = evbuffer_new();
    uint8_t pre[8] = {0, 0, 0x10, 0x01, 0x08, 0x01, 0, 0};
    ProtobufCMessage *hdr = (ProtobufCMessage *)&hdr;
    size_t npl = 7, need = 0;
    char err[160] = "";

    ck_assert_ptr_nonnull(in);
    ck_assert_int_eq(evbuffer_add(in, pre, sizeof pre), 0);
    ck_assert_int_eq(wire_read(in, 4096, &chanwire__client_frame__descriptor, &hdr, got_take, NULL,
                               &npl, &need, err, sizeof err),
                     -1);
    ck_assert_ptr_null(hdr);
    ck_assert_uint_eq(npl, 0);
    ck_assert_uint_eq(evbuffer_get_length(in), sizeof pre);
    ck_assert_msg(strstr(err, "over the limit") != NULL, "%s", err);
    evbuffer_free(in);
}
END_TEST

/* A hot header outlives the input it came from, and frees with wire_hdr_free alone. */
START_TEST(test_a_hand_decoded_header_is_one_block_that_outlives_its_input)
{
    static uint64_t tags[100];
    static uint32_t dl[100];
    Chanwire__ServerFrame f = CHANWIRE__SERVER_FRAME__INIT;
    Chanwire__RecvReply r = CHANWIRE__RECV_REPLY__INIT;
    struct evbuffer *in = evbuffer_new();
    ProtobufCMessage *hdr = NULL;
    size_t npl, need;
    char err[160];
    struct got g;

    for (size_t i = 0; i < 100; i++) {
        tags[i] = (uint64_t)1 << 40 | i;
        dl[i] = (uint32_t)i % 3 + 1;
    }
    r.tags = tags;
    r.n_tags = 100;
    r.deliveries = dl;
    r.n_deliveries = 100;
    f.id = 42;
    f.status = CHANWIRE__STATUS__STATUS_TIMEDOUT;
    f.error = "deadline passed";
    f.body_case = CHANWIRE__SERVER_FRAME__BODY_RECV;
    f.recv = &r;
    ck_assert_ptr_nonnull(in);
    ck_assert_int_eq(wire_write(in, &f.base, NULL, 0), 0);
    got_init(&g);
    ck_assert_int_eq(wire_read(in, 1 << 20, &chanwire__server_frame__descriptor, &hdr, got_take, &g,
                               &npl, &need, err, sizeof err),
                     1);
    evbuffer_free(in);
    ck_assert(wire_hdr_is_block(hdr));
    ck_assert_uint_eq(hdr->n_unknown_fields, 0);
    Chanwire__ServerFrame *d = (Chanwire__ServerFrame *)hdr;
    ck_assert_uint_eq(d->id, 42);
    ck_assert_int_eq(d->status, CHANWIRE__STATUS__STATUS_TIMEDOUT);
    ck_assert_str_eq(d->error, "deadline passed");
    ck_assert_int_eq(d->body_case, CHANWIRE__SERVER_FRAME__BODY_RECV);
    ck_assert_uint_eq(d->recv->n_tags, 100);
    ck_assert_uint_eq(d->recv->n_deliveries, 100);
    ck_assert_ptr_eq(d->recv->base.descriptor, &chanwire__recv_reply__descriptor);
    /* the sub-message and arrays sit inside the one block */
    ck_assert((char *)d->recv > (char *)d && (char *)d->recv->deliveries > (char *)d->recv->tags);
    ck_assert(memcmp(d->recv->tags, tags, sizeof tags) == 0);
    ck_assert(memcmp(d->recv->deliveries, dl, sizeof dl) == 0);
    ck_assert(protobuf_c_message_check(hdr));
    wire_hdr_free(hdr);
    wire_hdr_free(NULL);
    ck_assert(!wire_hdr_is_block(NULL));
}
END_TEST

/* ---- benchmark ---------------------------------------------------------- */

/* The encoder as it was: protobuf-c sizes and packs the header every time. */
static int old_put(struct evbuffer *out, const ProtobufCMessage *hdr, const struct wire_payload *pl, size_t n)
{
    size_t hs = protobuf_c_message_get_packed_size(hdr), total = hs;
    struct evbuffer_iovec v;
    uint8_t tmp[16];

    for (size_t i = 0; i < n; i++) {
        struct bytes b = {tmp, 0, sizeof tmp};
        b_varint(&b, pl[i].len);
        total += 2 + b.n + pl[i].len;
    }
    if (evbuffer_reserve_space(out, (ev_ssize_t)(4 + hs), &v, 1) < 1)
        return -1;
    uint8_t *p = v.iov_base;
    p[0] = (uint8_t)(total >> 24);
    p[1] = (uint8_t)(total >> 16);
    p[2] = (uint8_t)(total >> 8);
    p[3] = (uint8_t)total;
    protobuf_c_message_pack(hdr, p + 4);
    v.iov_len = 4 + hs;
    if (evbuffer_commit_space(out, &v, 1) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        struct bytes b = {tmp, 0, sizeof tmp};
        b_byte(&b, 0xa2);
        b_byte(&b, 0x06);
        b_varint(&b, pl[i].len);
        if (evbuffer_reserve_space(out, (ev_ssize_t)(b.n + pl[i].len), &v, 1) < 1)
            return -1;
        memcpy(v.iov_base, tmp, b.n);
        memcpy((uint8_t *)v.iov_base + b.n, pl[i].data, pl[i].len);
        v.iov_len = b.n + pl[i].len;
        if (evbuffer_commit_space(out, &v, 1) < 0)
            return -1;
    }
    return 0;
}

static uint8_t bench_sink[128];
static size_t bench_bytes;

static int bench_take_old(void *arg, size_t index, struct evbuffer *src, size_t len)
{
    (void)arg, (void)index;
    bench_bytes += len;
    return evbuffer_remove(src, bench_sink, len < sizeof bench_sink ? len : sizeof bench_sink) < 0 ? -1 : 0;
}

static int bench_take(void *arg, size_t index, const void *data, struct evbuffer *src, size_t len)
{
    (void)arg, (void)index;
    bench_bytes += len;
    if (data != NULL) {
        memcpy(bench_sink, data, len < sizeof bench_sink ? len : sizeof bench_sink);
        return 0;
    }
    return evbuffer_remove(src, bench_sink, len < sizeof bench_sink ? len : sizeof bench_sink) < 0 ? -1 : 0;
}

static double least(double a, double b)
{
    return a < b ? a : b;
}

static double now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static uint64_t frame_id(const ProtobufCMessage *m)
{
    if (m->descriptor == &chanwire__client_frame__descriptor)
        return ((const Chanwire__ClientFrame *)m)->id;
    return ((const Chanwire__ServerFrame *)m)->id;
}

/* ns per encode+decode of hdr with its payloads, through the old path (0) or the new (1). */
static double bench_one(const ProtobufCMessage *hdr, const struct wire_payload *pl, size_t npl,
                        size_t rounds, int fresh)
{
    struct evbuffer *buf = evbuffer_new();
    const ProtobufCMessageDescriptor *desc = hdr->descriptor;
    double t0;

    ck_assert_ptr_nonnull(buf);
    bench_bytes = 0;
    /* no ck_assert in the loop: each one writes to Check's pipe, which would be the cost measured */
    size_t bad = 0;
    t0 = now_ns();
    for (size_t i = 0; i < rounds; i++) {
        ProtobufCMessage *m = NULL;
        size_t n = 0, need;
        char err[160];
        int rc;
        if (fresh) {
            bad += wire_write(buf, hdr, pl, npl) != 0;
            rc = wire_read(buf, 1 << 20, desc, &m, bench_take, NULL, &n, &need, err, sizeof err);
        } else {
            bad += old_put(buf, hdr, pl, npl) != 0;
            rc = wire_take(buf, 1 << 20, desc, &m, bench_take_old, NULL, &n, &need, err, sizeof err);
        }
        if (rc != 1) {
            bad++;
            break;
        }
        bad += n != npl || frame_id(m) != frame_id(hdr);
        if (fresh)
            wire_hdr_free(m);
        else
            protobuf_c_message_free_unpacked(m, NULL);
    }
    double ns = (now_ns() - t0) / (double)rounds;
    ck_assert_uint_eq(bad, 0);
    ck_assert_uint_eq(evbuffer_get_length(buf), 0);
    evbuffer_free(buf);
    return ns;
}

START_TEST(test_benchmark_old_and_new_frame_paths)
{
#ifdef CHAN_SANITIZERS
    size_t rounds = 20000;
#else
    size_t rounds = 300000;
#endif
    if (getenv("WIRE_BENCH_ROUNDS") != NULL)
        rounds = strtoul(getenv("WIRE_BENCH_ROUNDS"), NULL, 0);
    if (rounds < 100)
        rounds = 100;
    static uint64_t tags[100];
    static uint32_t dl[100];
    static struct wire_payload pl[100];
    Chanwire__ClientFrame cf = CHANWIRE__CLIENT_FRAME__INIT;
    Chanwire__Send s = CHANWIRE__SEND__INIT;
    Chanwire__ServerFrame sf = CHANWIRE__SERVER_FRAME__INIT;
    Chanwire__RecvReply rr = CHANWIRE__RECV_REPLY__INIT;
    uint64_t acks[2] = {1234567, 1234568};

    s.chan = 17;
    s.timeout_ms = -1;
    s.seq = 123456789;
    cf.id = 4242;
    cf.acks = acks;
    cf.n_acks = 2;
    cf.body_case = CHANWIRE__CLIENT_FRAME__BODY_SEND;
    cf.send = &s;
    for (size_t i = 0; i < 100; i++) {
        pl[i] = (struct wire_payload){.data = pool + 64 * i, .len = 64};
        tags[i] = 1000000 + i;
        dl[i] = 1;
    }
    rr.tags = tags;
    rr.n_tags = 100;
    rr.deliveries = dl;
    rr.n_deliveries = 100;
    sf.id = 4242;
    sf.body_case = CHANWIRE__SERVER_FRAME__BODY_RECV;
    sf.recv = &rr;

    /*
     * The best of several alternating runs: other processes on the machine
     * only ever add time. WIRE_BENCH=old or new runs that path alone, for
     * perf stat and the like.
     */
    const char *only = getenv("WIRE_BENCH");
    int run_old = only == NULL || strcmp(only, "new") != 0;
    int run_new = only == NULL || strcmp(only, "old") != 0;
    double old1 = 1e300, new1 = 1e300, old100 = 1e300, new100 = 1e300;
    for (int r = 0; r < 5; r++) {
        if (run_old) {
            old1 = least(old1, bench_one(&cf.base, pl, 1, rounds / 5, 0));
            old100 = least(old100, bench_one(&sf.base, pl, 100, rounds / 100, 0));
        }
        if (run_new) {
            new1 = least(new1, bench_one(&cf.base, pl, 1, rounds / 5, 1));
            new100 = least(new100, bench_one(&sf.base, pl, 100, rounds / 100, 1));
        }
    }
    if (run_old && run_new) {
        printf("bench: SEND + one 64 B payload, encode+decode: old %.0f ns, new %.0f ns (%.1fx)\n", old1,
               new1, old1 / new1);
        printf("bench: RECV reply, 100 tags + 100 x 64 B, encode+decode: old %.0f ns, new %.0f ns (%.1fx)\n",
               old100, new100, old100 / new100);
    } else {
        printf("bench (%s path only): SEND + one 64 B payload %.0f ns; RECV reply of 100 %.0f ns\n",
               run_old ? "old" : "new", run_old ? old1 : new1, run_old ? old100 : new100);
    }
    fflush(stdout);
    ck_assert_uint_gt(bench_bytes, 0);
}
END_TEST

static Suite *wire_suite(void)
{
    Suite *s = suite_create("wire");
    struct {
        const char *name;
        int timeout;
        const TTest *tests[8];
    } groups[] = {
        {"encode",
         60,
         {test_wire_write_gives_protobuf_c_bytes_for_random_frames,
          test_wire_write_refuses_a_header_over_the_limit_and_appends_nothing}},
        {"decode",
         120,
         {test_wire_read_decodes_random_frames_like_protobuf_c,
          test_wire_read_reports_the_bytes_a_partial_frame_needs,
          test_wire_read_gives_the_old_verdict_on_odd_and_broken_frames,
          test_a_refused_payload_fails_the_frame_and_drains_it,
          test_a_frame_over_max_frame_is_refused_and_nothing_is_drained,
          test_a_hand_decoded_header_is_one_block_that_outlives_its_input}},
        {"bench", 60, {test_benchmark_old_and_new_frame_paths}},
    };

    for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++) {
        TCase *tc = tcase_create(groups[g].name);

        tcase_set_timeout(tc, groups[g].timeout);
        tcase_add_checked_fixture(tc, setup, teardown);
        for (int i = 0; groups[g].tests[i]; i++)
            tcase_add_test(tc, groups[g].tests[i]);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(wire_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
