/*
 * wire.c: frames on evbuffers and the status table, for both ends. The hot
 * frames go through a small varint codec of their own, the rest through
 * protobuf-c; payloads are located by a walk over the field tags and handed
 * over in place (small frames) or as evbuffer ranges (large ones), so their
 * bytes are never decoded and large ones never copied on the way.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "wire.h"

/* Field 100, wire type 2 (length-delimited), as a varint: 0xa2 0x06. */
#define PAYLOAD_TAG ((WIRE_PAYLOAD_FIELD << 3) | 2)

/* ---- status ---------------------------------------------------------- */

static const struct {
    int status;
    int err;
    const char *text;
} status_table[] = {
    {CHANWIRE__STATUS__STATUS_OK, 0, "ok"},
    {CHANWIRE__STATUS__STATUS_CLOSED, EPIPE, "channel closed"},
    {CHANWIRE__STATUS__STATUS_AGAIN, EAGAIN, "would block"},
    {CHANWIRE__STATUS__STATUS_TIMEDOUT, ETIMEDOUT, "deadline passed"},
    {CHANWIRE__STATUS__STATUS_CANCELED, ECANCELED, "canceled"},
    {CHANWIRE__STATUS__STATUS_INVALID, EINVAL, "invalid argument"},
    {CHANWIRE__STATUS__STATUS_MSGSIZE, EMSGSIZE, "message too large"},
    {CHANWIRE__STATUS__STATUS_NOENT, ENOENT, "no such channel"},
    {CHANWIRE__STATUS__STATUS_EXIST, EEXIST, "channel exists with another capacity"},
    {CHANWIRE__STATUS__STATUS_STALE, ESTALE, "stale channel handle"},
    {CHANWIRE__STATUS__STATUS_UNAUTHORIZED, EACCES, "unauthorized"},
    {CHANWIRE__STATUS__STATUS_NOMEM, ENOMEM, "broker limit reached"},
    {CHANWIRE__STATUS__STATUS_SHUTDOWN, ECONNRESET, "broker shutting down"},
    {CHANWIRE__STATUS__STATUS_PROTOCOL, EPROTO, "protocol error"},
    {CHANWIRE__STATUS__STATUS_BUSY, EBUSY, "too many connections or requests"},
};

#define NSTATUS (sizeof status_table / sizeof status_table[0])

int wire_status_errno(int status)
{
    for (size_t i = 0; i < NSTATUS; i++)
        if (status_table[i].status == status)
            return status_table[i].err;
    return EPROTO;
}

int wire_errno_status(int err)
{
    if (err == ESHUTDOWN)
        return CHANWIRE__STATUS__STATUS_SHUTDOWN;
    for (size_t i = 0; i < NSTATUS; i++)
        if (status_table[i].err == err)
            return status_table[i].status;
    return CHANWIRE__STATUS__STATUS_INVALID;
}

const char *wire_status_text(int status)
{
    for (size_t i = 0; i < NSTATUS; i++)
        if (status_table[i].status == status)
            return status_table[i].text;
    return "unknown status";
}

/* ---- names ----------------------------------------------------------- */

/* Length of the UTF-8 sequence at s (at most n bytes) and its code point, 0 if invalid. */
static size_t utf8_next(const unsigned char *s, size_t n, uint32_t *cp)
{
    size_t len;
    uint32_t c = s[0], min;

    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if ((c & 0xe0) == 0xc0) {
        len = 2, c &= 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
        len = 3, c &= 0x0f, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
        len = 4, c &= 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        c = (c << 6) | (s[i] & 0x3f);
    }
    /* overlong forms, UTF-16 surrogates and values past Unicode are not text */
    if (c < min || (c >= 0xd800 && c <= 0xdfff) || c > 0x10ffff)
        return 0;
    *cp = c;
    return len;
}

int wire_name_ok(const char *name, size_t len)
{
    const unsigned char *s = (const unsigned char *)name;

    if (name == NULL || len == 0 || len > WIRE_NAME_MAX)
        return 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t k = utf8_next(s + i, len - i, &cp);
        if (k == 0)
            return 0;
        /* spaces and C0/C1 controls would break chanctl output and logs */
        if (cp <= 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f) || cp == 0xa0)
            return 0;
        i += k;
    }
    return 1;
}

/* ---- varints --------------------------------------------------------- */

/* Decode a varint from p[0..n); returns its length, 0 if cut short or over 64 bits. */
static size_t varint_get(const uint8_t *p, size_t n, uint64_t *v)
{
    uint64_t x = 0;

    for (size_t i = 0; i < n && i < 10; i++) {
        x |= (uint64_t)(p[i] & 0x7f) << (7 * i);
        if (!(p[i] & 0x80)) {
            *v = x;
            return i + 1;
        }
    }
    return 0;
}

static size_t varint_put(uint8_t *p, uint64_t v)
{
    size_t i = 0;

    while (v >= 0x80) {
        p[i++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[i++] = (uint8_t)v;
    return i;
}

/*
 * Step over the field at p[0..n). Returns the field's length and sets *tag,
 * or 0 if the field runs past n or has a wire type we do not walk (groups).
 */
static size_t field_skip(const uint8_t *p, size_t n, uint64_t *tag)
{
    uint64_t len;
    size_t k = varint_get(p, n, tag), m;

    if (k == 0)
        return 0;
    switch (*tag & 7) {
    case 0:
        m = varint_get(p + k, n - k, &len);
        return m ? k + m : 0;
    case 1:
        return n - k >= 8 ? k + 8 : 0;
    case 2:
        m = varint_get(p + k, n - k, &len);
        if (m == 0 || len > n - k - m)
            return 0;
        return k + m + (size_t)len;
    case 5:
        return n - k >= 4 ? k + 4 : 0;
    default:
        return 0;
    }
}

/* ---- the hand codec --------------------------------------------------- */

/*
 * Frames are protobuf, but the few that carry traffic (SEND, RECV, their
 * replies, ACK/NACK, pure ack frames) are read and written here with a
 * plain varint codec: no descriptor walk, and a decoded header is one
 * allocation. Anything it does not know for sure goes to protobuf-c, so
 * both ways agree on every input (tests/wire_test.c checks that).
 */

/* Tags as varint values: field f with wire type varint or length-delimited. */
#define T_VARINT(f) ((unsigned)(f) << 3)
#define T_LEN(f) (((unsigned)(f) << 3) | 2)

/* Repeated arrays longer than this go to protobuf-c: no giant single blocks. */
#define HAND_ARRAY_MAX 4096

/* Round a block offset up so every part of a header block is aligned for uint64_t. */
#define BLOCK_ALIGN(x) (((x) + 7) & ~(size_t)7)

/*
 * base.unknown_fields of every header decoded here points at this (with
 * n_unknown_fields 0): protobuf-c stores only NULL or heap memory there, so
 * wire_hdr_free can tell the two kinds apart.
 */
static ProtobufCMessageUnknownField hand_mark;

enum { FRAME_NONE, FRAME_CLIENT, FRAME_SERVER };

static int frame_kind(const ProtobufCMessageDescriptor *desc)
{
    if (desc == &chanwire__client_frame__descriptor)
        return FRAME_CLIENT;
    if (desc == &chanwire__server_frame__descriptor)
        return FRAME_SERVER;
    return FRAME_NONE;
}

static inline size_t varint_size(uint64_t v)
{
    return v < 0x80 ? 1 : 1 + (size_t)(63 - __builtin_clzll(v)) / 7;
}

static uint64_t zigzag(int64_t v)
{
    return ((uint64_t)v << 1) ^ (v < 0 ? UINT64_MAX : 0);
}

static int64_t unzigzag(uint64_t v)
{
    return (int64_t)((v >> 1) ^ (0 - (v & 1)));
}

/* ---- decoding -------------------------------------------------------- */

/*
 * A 64-bit varint at p[*i..end). Declines (0) when cut short, or when a
 * tenth byte carries bits past 64, which protobuf-c would silently drop.
 */
static inline int rd64(const uint8_t *p, size_t end, size_t *i, uint64_t *v)
{
    size_t k = *i;   /* a local: stores through p could alias *i */
    uint64_t x = 0;

    if (k < end && p[k] < 0x80) {
        *v = p[k];
        *i = k + 1;
        return 1;
    }
    for (unsigned s = 0; k < end; s += 7) {
        uint8_t b = p[k++];
        if (s == 63 && b > 1)
            return 0;
        x |= (uint64_t)(b & 0x7f) << s;
        if (!(b & 0x80)) {
            *i = k;
            *v = x;
            return 1;
        }
    }
    return 0;
}

/* A 32-bit field's varint: at most 5 bytes and under 2^32, else declined (protobuf-c truncates). */
static int rd32(const uint8_t *p, size_t end, size_t *i, uint32_t *v)
{
    size_t k = *i;
    uint64_t x;

    if (!rd64(p, end, &k, &x) || k - *i > 5 || x > UINT32_MAX)
        return 0;
    *i = k;
    *v = (uint32_t)x;
    return 1;
}

/* A length-delimited field's body after its tag: [*s, *e), *i moves past it. */
static int rd_len(const uint8_t *p, size_t end, size_t *i, size_t *s, size_t *e)
{
    uint64_t len;

    if (!rd64(p, end, i, &len) || len > end - *i)
        return 0;
    *s = *i;
    *e = *i + (size_t)len;
    *i = *e;
    return 1;
}

/* Packed varints at p[s..e): n of them, each of at most `bits` bits. */
struct span {
    size_t s, e, n;
};

/* Check and count a packed run of varints; declines any protobuf-c would read differently. */
static int span_scan(const uint8_t *p, size_t s, size_t e, unsigned bits, struct span *sp)
{
    size_t n = 0, run = 0;
    size_t wmax = bits == 64 ? 10 : 5;
    uint8_t lastmax = bits == 64 ? 1 : 0x0f;

    for (size_t k = s; k < e; k++) {
        run++;
        if (!(p[k] & 0x80)) {
            if (run > wmax || (run == wmax && p[k] > lastmax))
                return 0;
            n++;
            run = 0;
        }
    }
    if (run != 0 || n > HAND_ARRAY_MAX)
        return 0;
    *sp = (struct span){s, e, n};
    return 1;
}

/* Decode a span checked by span_scan into out64 (bits 64) or out32. */
static void span_get(const uint8_t *p, const struct span *sp, uint64_t *out64, uint32_t *out32)
{
    size_t k = sp->s;

    for (size_t j = 0; j < sp->n; j++) {
        uint64_t x = 0;
        unsigned s = 0;
        uint8_t b;
        do {
            b = p[k++];
            x |= (uint64_t)(b & 0x7f) << s;
            s += 7;
        } while (b & 0x80);
        if (out64 != NULL)
            out64[j] = x;
        else
            out32[j] = (uint32_t)x;
    }
}

/* What the hand decoder found in a header, before it is laid out in a block. */
struct hand {
    unsigned body;             /* body field number (= body_case), 0 for none */
    unsigned seen;             /* bit per field already met: a second one declines */
    uint64_t id;
    uint64_t chan, seq;        /* Send, Recv */
    int64_t timeout_ms;        /* Send, Recv */
    int64_t lease_ms;          /* Recv */
    uint32_t max;              /* Recv */
    uint32_t count;            /* SendReply */
    uint32_t status;           /* ServerFrame */
    struct span acks;          /* ClientFrame.acks */
    struct span tags;          /* Tags.tags, RecvReply.tags */
    struct span deliv;         /* RecvReply.deliveries */
    size_t err_s, err_len;     /* ServerFrame.error bytes, if SEEN_ERR */
    size_t hlen;               /* bytes before the first payload field */
};

enum {
    SEEN_ACKS = 1, SEEN_TAGS = 2, SEEN_DELIV = 4, SEEN_ERR = 8,
};

/* The body sub-message at p[s..e) for body field `body` of frame kind `kind`. */
static int hand_body(int kind, unsigned body, const uint8_t *p, size_t s, size_t e, struct hand *h)
{
    size_t i = s, bs, be;
    uint64_t v;

    while (i < e) {
        unsigned tag = p[i++];
        if (kind == FRAME_CLIENT && (body == 12 || body == 13)) {
            /* Send and Recv share fields 1-2; Send's 3 is seq, Recv's 3-4 are max, lease */
            if (tag == T_VARINT(1)) {
                if (!rd64(p, e, &i, &h->chan))
                    return 0;
            } else if (tag == T_VARINT(2)) {
                if (!rd64(p, e, &i, &v))
                    return 0;
                h->timeout_ms = unzigzag(v);
            } else if (tag == T_VARINT(3) && body == 12) {
                if (!rd64(p, e, &i, &h->seq))
                    return 0;
            } else if (tag == T_VARINT(3)) {
                if (!rd32(p, e, &i, &h->max))
                    return 0;
            } else if (tag == T_VARINT(4) && body == 13) {
                if (!rd64(p, e, &i, &v))
                    return 0;
                h->lease_ms = (int64_t)v;
            } else {
                return 0;
            }
        } else if (kind == FRAME_CLIENT) {
            /* Tags */
            if (tag != T_LEN(1) || (h->seen & SEEN_TAGS) || !rd_len(p, e, &i, &bs, &be) ||
                !span_scan(p, bs, be, 64, &h->tags))
                return 0;
            h->seen |= SEEN_TAGS;
        } else if (body == 12) {
            /* SendReply */
            if (tag != T_VARINT(1) || !rd32(p, e, &i, &h->count))
                return 0;
        } else {
            /* RecvReply */
            if (tag == T_LEN(1) && !(h->seen & SEEN_TAGS)) {
                if (!rd_len(p, e, &i, &bs, &be) || !span_scan(p, bs, be, 64, &h->tags))
                    return 0;
                h->seen |= SEEN_TAGS;
            } else if (tag == T_LEN(2) && !(h->seen & SEEN_DELIV)) {
                if (!rd_len(p, e, &i, &bs, &be) || !span_scan(p, bs, be, 32, &h->deliv))
                    return 0;
                h->seen |= SEEN_DELIV;
            } else {
                return 0;
            }
        }
    }
    return 1;
}

/*
 * Parse the header fields of the frame at p[0..n) up to its first payload
 * field. Returns 1 with h filled (h->hlen: where the header ends), or 0 if
 * the frame is not one the hand codec takes: protobuf-c decides then.
 */
static int hand_parse(int kind, const uint8_t *p, size_t n, struct hand *h)
{
    size_t i = 0, s, e;

    memset(h, 0, sizeof *h);
    while (i < n) {
        unsigned tag = p[i];
        unsigned body = 0;

        if (tag == 0xa2) {
            /* field 100, length-delimited, is the two bytes a2 06: the payloads begin */
            if (i + 1 < n && p[i + 1] == 0x06)
                break;
            return 0;
        }
        i++;
        if (tag == T_VARINT(1)) {
            if (!rd64(p, n, &i, &h->id))
                return 0;
        } else if (tag == T_LEN(12) || tag == T_LEN(13)) {
            body = tag >> 3;
        } else if (kind == FRAME_CLIENT && tag == T_LEN(2) && !(h->seen & SEEN_ACKS)) {
            if (!rd_len(p, n, &i, &s, &e) || !span_scan(p, s, e, 64, &h->acks))
                return 0;
            h->seen |= SEEN_ACKS;
        } else if (kind == FRAME_CLIENT && (tag == 0x8a || tag == 0x92)) {
            /* fields 17 (ack) and 18 (nack) take two tag bytes: 8a 01, 92 01 */
            if (i >= n || p[i] != 0x01)
                return 0;
            i++;
            body = tag == 0x8a ? 17 : 18;
        } else if (kind == FRAME_SERVER && tag == T_VARINT(2)) {
            if (!rd32(p, n, &i, &h->status))
                return 0;
        } else if (kind == FRAME_SERVER && tag == T_LEN(3) && !(h->seen & SEEN_ERR)) {
            if (!rd_len(p, n, &i, &s, &e))
                return 0;
            h->err_s = s;
            h->err_len = e - s;
            h->seen |= SEEN_ERR;
        } else {
            return 0;
        }
        if (body != 0) {
            /* a second body (protobuf-c merges or replaces) is protobuf-c's business */
            if (h->body != 0 || !rd_len(p, n, &i, &s, &e) || !hand_body(kind, body, p, s, e, h))
                return 0;
            h->body = body;
        }
    }
    h->hlen = i;
    return 1;
}

/* Lay out what hand_parse found as one block; NULL if out of memory. */
static ProtobufCMessage *hand_build(int kind, const uint8_t *p, const struct hand *h)
{
    size_t fsize = kind == FRAME_CLIENT ? sizeof(Chanwire__ClientFrame) : sizeof(Chanwire__ServerFrame);
    size_t bsize = 0, n64 = h->acks.n + h->tags.n;
    char *b, *sub, *arr;

    switch (h->body) {
    case 12:
        bsize = kind == FRAME_CLIENT ? sizeof(Chanwire__Send) : sizeof(Chanwire__SendReply);
        break;
    case 13:
        bsize = kind == FRAME_CLIENT ? sizeof(Chanwire__Recv) : sizeof(Chanwire__RecvReply);
        break;
    case 17:
    case 18:
        bsize = sizeof(Chanwire__Tags);
        break;
    }
    b = malloc(BLOCK_ALIGN(fsize) + BLOCK_ALIGN(bsize) + n64 * sizeof(uint64_t) +
               h->deliv.n * sizeof(uint32_t) + ((h->seen & SEEN_ERR) ? h->err_len + 1 : 0));
    if (b == NULL)
        return NULL;
    sub = b + BLOCK_ALIGN(fsize);
    arr = sub + BLOCK_ALIGN(bsize);

    uint64_t *tags = NULL;
    if (h->tags.n > 0) {
        tags = (uint64_t *)(void *)arr;
        span_get(p, &h->tags, tags, NULL);
        arr += h->tags.n * sizeof(uint64_t);
    }

    if (kind == FRAME_CLIENT) {
        Chanwire__ClientFrame *f = (Chanwire__ClientFrame *)(void *)b;
        *f = (Chanwire__ClientFrame)CHANWIRE__CLIENT_FRAME__INIT;
        f->id = h->id;
        if (h->acks.n > 0) {
            f->acks = (uint64_t *)(void *)arr;
            f->n_acks = h->acks.n;
            span_get(p, &h->acks, f->acks, NULL);
        }
        if (h->body == 12) {
            Chanwire__Send *s = (Chanwire__Send *)(void *)sub;
            *s = (Chanwire__Send)CHANWIRE__SEND__INIT;
            s->chan = h->chan;
            s->timeout_ms = h->timeout_ms;
            s->seq = h->seq;
            f->send = s;
        } else if (h->body == 13) {
            Chanwire__Recv *r = (Chanwire__Recv *)(void *)sub;
            *r = (Chanwire__Recv)CHANWIRE__RECV__INIT;
            r->chan = h->chan;
            r->timeout_ms = h->timeout_ms;
            r->max = h->max;
            r->lease_ms = h->lease_ms;
            f->recv = r;
        } else if (h->body != 0) {
            Chanwire__Tags *t = (Chanwire__Tags *)(void *)sub;
            *t = (Chanwire__Tags)CHANWIRE__TAGS__INIT;
            t->tags = tags;
            t->n_tags = h->tags.n;
            if (h->body == 17)
                f->ack = t;
            else
                f->nack = t;
        }
        f->body_case = (Chanwire__ClientFrame__BodyCase)h->body;
        f->base.unknown_fields = &hand_mark;
        return &f->base;
    }

    Chanwire__ServerFrame *f = (Chanwire__ServerFrame *)(void *)b;
    *f = (Chanwire__ServerFrame)CHANWIRE__SERVER_FRAME__INIT;
    f->id = h->id;
    f->status = (Chanwire__Status)(int32_t)h->status;
    if (h->body == 12) {
        Chanwire__SendReply *s = (Chanwire__SendReply *)(void *)sub;
        *s = (Chanwire__SendReply)CHANWIRE__SEND_REPLY__INIT;
        s->count = h->count;
        f->send = s;
    } else if (h->body == 13) {
        Chanwire__RecvReply *r = (Chanwire__RecvReply *)(void *)sub;
        *r = (Chanwire__RecvReply)CHANWIRE__RECV_REPLY__INIT;
        r->tags = tags;
        r->n_tags = h->tags.n;
        if (h->deliv.n > 0) {
            r->deliveries = (uint32_t *)(void *)arr;
            r->n_deliveries = h->deliv.n;
            span_get(p, &h->deliv, NULL, r->deliveries);
            arr += h->deliv.n * sizeof(uint32_t);
        }
        f->recv = r;
    }
    if (h->seen & SEEN_ERR) {
        memcpy(arr, p + h->err_s, h->err_len);
        arr[h->err_len] = '\0';
        f->error = arr;
    }
    f->body_case = (Chanwire__ServerFrame__BodyCase)h->body;
    f->base.unknown_fields = &hand_mark;
    return &f->base;
}

int wire_hdr_is_block(const ProtobufCMessage *hdr)
{
    return hdr != NULL && hdr->unknown_fields == &hand_mark;
}

void wire_hdr_free(ProtobufCMessage *hdr)
{
    if (hdr == NULL)
        return;
    if (hdr->unknown_fields == &hand_mark)
        free(hdr);
    else
        protobuf_c_message_free_unpacked(hdr, NULL);
}

/*
 * Decode the header p[0..hlen) (no payload fields in it): by hand when
 * `hand` and the codec takes it, else by protobuf-c. NULL if it does not
 * decode or memory ran out (*nomem set for the hand codec's failure).
 */
static ProtobufCMessage *hdr_decode(const ProtobufCMessageDescriptor *desc, const uint8_t *p,
                                    size_t hlen, int hand, int *nomem)
{
    int kind = hand ? frame_kind(desc) : FRAME_NONE;
    struct hand h;

    if (kind != FRAME_NONE && hand_parse(kind, p, hlen, &h) && h.hlen == hlen) {
        ProtobufCMessage *m = hand_build(kind, p, &h);
        *nomem = m == NULL;
        return m;
    }
    return protobuf_c_message_unpack(desc, NULL, hlen, p);
}

/* ---- encoding -------------------------------------------------------- */

/* Output of the encoder: bytes go to p, or with p NULL are only counted. */
struct enc {
    uint8_t *p;
    size_t n;
};

/* What wire_write works out once before it sizes and writes a hot header. */
struct plan {
    const ProtobufCMessage *body;  /* the body sub-message to write, NULL for none */
    unsigned body_field;           /* its field number */
    size_t body_size;              /* its packed bytes */
    size_t acks, tags, deliv;      /* packed bytes of each repeated field present */
    size_t err_len;                /* ServerFrame.error bytes, 0: omitted */
    size_t size;                   /* the whole header's packed bytes */
};

static inline void enc_varint(struct enc *o, uint64_t v)
{
    if (o->p != NULL)
        o->n += varint_put(o->p + o->n, v);
    else
        o->n += varint_size(v);
}

/* A scalar field; proto3 leaves zero values out. */
static inline void enc_field(struct enc *o, unsigned tag, uint64_t v)
{
    if (v != 0) {
        enc_varint(o, tag);
        enc_varint(o, v);
    }
}

static size_t packed_size64(const uint64_t *a, size_t n)
{
    size_t sz = 0;

    for (size_t i = 0; i < n; i++)
        sz += varint_size(a[i]);
    return sz;
}

static size_t packed_size32(const uint32_t *a, size_t n)
{
    size_t sz = 0;

    for (size_t i = 0; i < n; i++)
        sz += varint_size(a[i]);
    return sz;
}

/* A packed repeated field of `bytes` packed bytes; omitted when empty. */
static void enc_packed(struct enc *o, unsigned tag, const uint64_t *a64, const uint32_t *a32,
                       size_t n, size_t bytes)
{
    if (n == 0)
        return;
    enc_varint(o, tag);
    enc_varint(o, bytes);
    if (o->p == NULL) {
        o->n += bytes;
        return;
    }
    for (size_t i = 0; i < n; i++)
        o->n += varint_put(o->p + o->n, a64 != NULL ? a64[i] : a32[i]);
}

/* The body sub-message's fields, in field number order as protobuf-c packs them. */
static void enc_body(struct enc *o, int kind, const struct plan *pl)
{
    if (kind == FRAME_CLIENT && pl->body_field == 12) {
        const Chanwire__Send *s = (const Chanwire__Send *)pl->body;
        enc_field(o, T_VARINT(1), s->chan);
        enc_field(o, T_VARINT(2), zigzag(s->timeout_ms));
        enc_field(o, T_VARINT(3), s->seq);
    } else if (kind == FRAME_CLIENT && pl->body_field == 13) {
        const Chanwire__Recv *r = (const Chanwire__Recv *)pl->body;
        enc_field(o, T_VARINT(1), r->chan);
        enc_field(o, T_VARINT(2), zigzag(r->timeout_ms));
        enc_field(o, T_VARINT(3), r->max);
        enc_field(o, T_VARINT(4), (uint64_t)r->lease_ms);
    } else if (kind == FRAME_CLIENT) {
        const Chanwire__Tags *t = (const Chanwire__Tags *)pl->body;
        enc_packed(o, T_LEN(1), t->tags, NULL, t->n_tags, pl->tags);
    } else if (pl->body_field == 12) {
        enc_field(o, T_VARINT(1), ((const Chanwire__SendReply *)pl->body)->count);
    } else {
        const Chanwire__RecvReply *r = (const Chanwire__RecvReply *)pl->body;
        enc_packed(o, T_LEN(1), r->tags, NULL, r->n_tags, pl->tags);
        enc_packed(o, T_LEN(2), NULL, r->deliveries, r->n_deliveries, pl->deliv);
    }
}

static void enc_frame(struct enc *o, int kind, const ProtobufCMessage *hdr, const struct plan *pl)
{
    if (kind == FRAME_CLIENT) {
        const Chanwire__ClientFrame *f = (const Chanwire__ClientFrame *)hdr;
        enc_field(o, T_VARINT(1), f->id);
        enc_packed(o, T_LEN(2), f->acks, NULL, f->n_acks, pl->acks);
    } else {
        const Chanwire__ServerFrame *f = (const Chanwire__ServerFrame *)hdr;
        enc_field(o, T_VARINT(1), f->id);
        /* an enum is an int32: negative values take ten bytes, sign-extended */
        enc_field(o, T_VARINT(2), (uint64_t)(int64_t)(int32_t)f->status);
        if (pl->err_len > 0) {
            enc_varint(o, T_LEN(3));
            enc_varint(o, pl->err_len);
            if (o->p != NULL)
                memcpy(o->p + o->n, f->error, pl->err_len);
            o->n += pl->err_len;
        }
    }
    if (pl->body != NULL) {
        enc_varint(o, T_LEN(pl->body_field));
        enc_varint(o, pl->body_size);
        enc_body(o, kind, pl);
    }
}

/*
 * Work out whether hdr is a hot frame the encoder writes (1, pl filled) or
 * one for protobuf-c (0): another type or body, unknown fields kept from a
 * decode, or a payload field that is not empty.
 */
static int enc_plan(const ProtobufCMessage *hdr, struct plan *pl)
{
    int kind = frame_kind(hdr->descriptor);
    unsigned body_case;
    struct enc o = {NULL, 0};

    memset(pl, 0, sizeof *pl);
    if (kind == FRAME_NONE || hdr->n_unknown_fields != 0)
        return 0;
    if (kind == FRAME_CLIENT) {
        const Chanwire__ClientFrame *f = (const Chanwire__ClientFrame *)hdr;
        if (f->n_payload != 0)
            return 0;
        body_case = f->body_case;
        pl->acks = packed_size64(f->acks, f->n_acks);
        switch (body_case) {
        case CHANWIRE__CLIENT_FRAME__BODY__NOT_SET:
            break;
        case CHANWIRE__CLIENT_FRAME__BODY_SEND:
            pl->body = (const ProtobufCMessage *)f->send;
            break;
        case CHANWIRE__CLIENT_FRAME__BODY_RECV:
            pl->body = (const ProtobufCMessage *)f->recv;
            break;
        case CHANWIRE__CLIENT_FRAME__BODY_ACK:
        case CHANWIRE__CLIENT_FRAME__BODY_NACK:
            pl->body = (const ProtobufCMessage *)(body_case == CHANWIRE__CLIENT_FRAME__BODY_ACK ? f->ack : f->nack);
            if (pl->body != NULL) {
                const Chanwire__Tags *t = (const Chanwire__Tags *)pl->body;
                pl->tags = packed_size64(t->tags, t->n_tags);
            }
            break;
        default:
            return 0;
        }
    } else {
        const Chanwire__ServerFrame *f = (const Chanwire__ServerFrame *)hdr;
        if (f->n_payload != 0)
            return 0;
        body_case = f->body_case;
        pl->err_len = f->error != NULL ? strlen(f->error) : 0;
        switch (body_case) {
        case CHANWIRE__SERVER_FRAME__BODY__NOT_SET:
            break;
        case CHANWIRE__SERVER_FRAME__BODY_SEND:
            pl->body = (const ProtobufCMessage *)f->send;
            break;
        case CHANWIRE__SERVER_FRAME__BODY_RECV:
            pl->body = (const ProtobufCMessage *)f->recv;
            if (pl->body != NULL) {
                pl->tags = packed_size64(f->recv->tags, f->recv->n_tags);
                pl->deliv = packed_size32(f->recv->deliveries, f->recv->n_deliveries);
            }
            break;
        default:
            return 0;
        }
    }
    /* protobuf-c leaves out a body whose pointer is NULL; so do we */
    if (pl->body != NULL) {
        if (pl->body->n_unknown_fields != 0)
            return 0;
        pl->body_field = body_case;
        enc_body(&o, kind, pl);
        pl->body_size = o.n;
        o.n = 0;
    }
    enc_frame(&o, kind, hdr, pl);
    pl->size = o.n;
    return 1;
}

/* ---- writing --------------------------------------------------------- */

/* Contiguous output extents grow to about this much before the next one starts. */
#define WRITE_EXTENT_MAX 65536

static size_t payload_pre_size(size_t len)
{
    return varint_size(PAYLOAD_TAG) + varint_size(len);
}

static size_t payload_pre_put(uint8_t *p, size_t len)
{
    size_t k = varint_put(p, PAYLOAD_TAG);
    return k + varint_put(p + k, len);
}

int wire_write(struct evbuffer *out, const ProtobufCMessage *hdr,
               const struct wire_payload *pl, size_t n)
{
    struct plan plan;
    int hand = enc_plan(hdr, &plan);
    size_t hsize = hand ? plan.size : protobuf_c_message_get_packed_size(hdr);
    size_t total = hsize, i = 0;
    int first = 1;

    if (hsize > WIRE_HDR_MAX)
        return -1;
    for (size_t k = 0; k < n; k++)
        total += payload_pre_size(pl[k].len) + pl[k].len;
    if (total > UINT32_MAX)
        return -1;

    /*
     * Length prefix, header and inline payloads go into as few reserved
     * extents as possible (a new one after each payload added by reference,
     * or past WRITE_EXTENT_MAX), written in place.
     */
    do {
        size_t ext = first ? WIRE_LEN_BYTES + hsize : 0, j = i, off = 0;
        struct evbuffer_iovec v;
        int ref;

        while (j < n && pl[j].buf == NULL && !pl[j].ref) {
            size_t add = payload_pre_size(pl[j].len) + pl[j].len;
            if (ext > 0 && ext + add > WRITE_EXTENT_MAX)
                break;
            ext += add;
            j++;
        }
        ref = j < n && (pl[j].buf != NULL || pl[j].ref);
        if (ref)
            ext += payload_pre_size(pl[j].len);
        if (evbuffer_reserve_space(out, (ev_ssize_t)ext, &v, 1) < 1)
            return -1;
        uint8_t *p = v.iov_base;
        if (first) {
            p[0] = (uint8_t)(total >> 24);
            p[1] = (uint8_t)(total >> 16);
            p[2] = (uint8_t)(total >> 8);
            p[3] = (uint8_t)total;
            off = WIRE_LEN_BYTES;
            if (hand) {
                struct enc o = {p + off, 0};
                enc_frame(&o, frame_kind(hdr->descriptor), hdr, &plan);
            } else {
                protobuf_c_message_pack(hdr, p + off);
            }
            off += hsize;
        }
        for (; i < j; i++) {
            off += payload_pre_put(p + off, pl[i].len);
            if (pl[i].len > 0)
                memcpy(p + off, pl[i].data, pl[i].len);
            off += pl[i].len;
        }
        if (ref)
            off += payload_pre_put(p + off, pl[j].len);
        v.iov_len = off;
        if (evbuffer_commit_space(out, &v, 1) < 0)
            return -1;
        if (ref) {
            if (pl[j].buf != NULL ? evbuffer_add_buffer_reference(out, pl[j].buf) < 0
                : pl[j].len > 0 && evbuffer_add_reference(out, pl[j].data, pl[j].len, NULL, NULL) < 0)
                return -1;
            i = j + 1;
        }
        first = 0;
    } while (i < n);
    return 0;
}

int wire_put(struct evbuffer *out, const ProtobufCMessage *hdr,
             const struct wire_payload *pl, size_t n)
{
    return wire_write(out, hdr, pl, n);
}

/* ---- reading --------------------------------------------------------- */

/* Frames up to this size (prefix included) are made contiguous and read in place. */
#define PULLUP_MAX 65536

/* The payload callback of either API. */
struct taker {
    wire_take_fn *old;      /* wire_take's: payloads as evbuffer ranges */
    wire_payload_fn *fn;    /* wire_read's: bytes in place, or an evbuffer range */
    void *arg;
};

/* Why the stream broke, for the error frame and the log. */
static void err_set(char *err, size_t errlen, const char *what, size_t n)
{
    if (errlen > 0)
        snprintf(err, errlen, "%s (frame of %zu bytes)", what, n);
}

/*
 * Is a whole frame at the front of in? 1: yes, *n is its length (prefix
 * not counted). 0: *need bytes are needed in all. -1: length over max_frame.
 */
static int frame_len(struct evbuffer *in, size_t max_frame, size_t *n, size_t *need,
                     char *err, size_t errlen)
{
    size_t avail = evbuffer_get_length(in);
    uint8_t tmp[WIRE_LEN_BYTES];
    const uint8_t *p = NULL;

    if (avail < WIRE_LEN_BYTES) {
        *need = WIRE_LEN_BYTES;
        return 0;
    }
    if (evbuffer_get_contiguous_space(in) >= WIRE_LEN_BYTES)
        p = evbuffer_pullup(in, WIRE_LEN_BYTES);
    if (p == NULL) {
        evbuffer_copyout(in, tmp, WIRE_LEN_BYTES);
        p = tmp;
    }
    *n = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
    if (*n > max_frame) {
        if (errlen > 0)
            snprintf(err, errlen, "frame length %zu over the limit of %zu bytes", *n, max_frame);
        return -1;
    }
    if (avail - WIRE_LEN_BYTES < *n) {
        *need = WIRE_LEN_BYTES + *n;
        return 0;
    }
    return 1;
}

/*
 * Where the header of the frame bytes p[0..n) ends: at the first field
 * numbered WIRE_PAYLOAD_FIELD, or at n. SIZE_MAX if a field that cannot be
 * stepped over comes first.
 */
static size_t head_end(const uint8_t *p, size_t n)
{
    size_t off = 0;

    while (off < n) {
        uint64_t tag = 0;
        size_t k = field_skip(p + off, n - off, &tag);
        if ((tag >> 3) == WIRE_PAYLOAD_FIELD)
            return off;
        if (k == 0)
            return SIZE_MAX;
        off += k;
    }
    return n;
}

/*
 * The payload field at p[*off..n): its bytes start at *start, len long;
 * *off moves past it. 0 if what is there is not a whole payload field.
 */
static int payload_next(const uint8_t *p, size_t n, size_t *off, size_t *start, size_t *len)
{
    uint64_t tag, l;
    size_t k, m;

    /* as our peers write them: a2 06 and a length under 16 KiB */
    if (n - *off >= 4 && p[*off] == 0xa2 && p[*off + 1] == 0x06) {
        size_t at = *off + 2;
        if (p[at] < 0x80)
            l = p[at++];
        else if (p[at + 1] < 0x80)
            l = (size_t)(p[at] & 0x7f) | (size_t)p[at + 1] << 7, at += 2;
        else
            goto slow;
        if (l > n - at)
            return 0;
        *start = at;
        *len = (size_t)l;
        *off = at + (size_t)l;
        return 1;
    }
slow:
    k = varint_get(p + *off, n - *off, &tag);

    if (k == 0 || tag != PAYLOAD_TAG)
        return 0;
    m = varint_get(p + *off + k, n - *off - k, &l);
    if (m == 0 || l > n - *off - k - m)
        return 0;
    *start = *off + k + m;
    *len = (size_t)l;
    *off = *start + *len;
    return 1;
}

/*
 * A frame whose payloads are not all at its end (a valid, if unusual,
 * encoding): decode it whole and hand over each payload from the decoded
 * copy. Never taken by our own peers.
 */
static int take_whole(struct evbuffer *in, size_t n, const ProtobufCMessageDescriptor *desc,
                      ProtobufCMessage **hdr, const struct taker *t,
                      size_t *npayload, char *err, size_t errlen)
{
    const ProtobufCFieldDescriptor *fd = protobuf_c_message_descriptor_get_field(desc, WIRE_PAYLOAD_FIELD);
    uint8_t *p = evbuffer_pullup(in, WIRE_LEN_BYTES + n);
    ProtobufCMessage *m;
    struct evbuffer *tmp = NULL;
    int rc = 0;

    if (p == NULL || fd == NULL) {
        err_set(err, errlen, "out of memory reading a frame", n);
        return -1;
    }
    m = protobuf_c_message_unpack(desc, NULL, n, p + WIRE_LEN_BYTES);
    evbuffer_drain(in, WIRE_LEN_BYTES + n);
    if (m == NULL) {
        err_set(err, errlen, "bytes do not decode as a frame", n);
        return -1;
    }

    size_t *cnt = (size_t *)((char *)m + fd->quantifier_offset);
    ProtobufCBinaryData **arr = (ProtobufCBinaryData **)((char *)m + fd->offset);
    if (t->old != NULL && (tmp = evbuffer_new()) == NULL)
        rc = -1;
    for (size_t i = 0; i < *cnt && rc == 0; i++) {
        const ProtobufCBinaryData *d = &(*arr)[i];
        if (t->fn != NULL) {
            /* protobuf-c leaves data NULL for an empty payload; the callback wants bytes */
            rc = t->fn(t->arg, i, d->data != NULL ? d->data : (const void *)"", NULL, d->len);
        } else {
            if (evbuffer_add(tmp, d->data, d->len) < 0 || t->old(t->arg, i, tmp, d->len) < 0)
                rc = -1;
            evbuffer_drain(tmp, evbuffer_get_length(tmp));
        }
    }
    if (tmp != NULL)
        evbuffer_free(tmp);
    *npayload = *cnt;
    /* Hand back the header without its payloads, as the fast path does. */
    for (size_t i = 0; i < *cnt; i++)
        free((*arr)[i].data);
    free(*arr);
    *arr = NULL;
    *cnt = 0;
    if (rc < 0) {
        protobuf_c_message_free_unpacked(m, NULL);
        err_set(err, errlen, "payload refused", n);
        return -1;
    }
    *hdr = m;
    return 1;
}

/*
 * wire_read for a frame whose n bytes lie contiguous at p (just past the
 * length prefix, at the front of in): header and payload bounds straight
 * from memory, payloads handed over in place, one drain at the end.
 */
static int read_flat(struct evbuffer *in, const uint8_t *p, size_t n,
                     const ProtobufCMessageDescriptor *desc, ProtobufCMessage **hdr,
                     const struct taker *t, size_t *npayload, char *err, size_t errlen)
{
    int kind = frame_kind(desc);
    struct hand h;
    int hand = kind != FRAME_NONE && hand_parse(kind, p, n, &h);
    size_t hlen = hand ? h.hlen : head_end(p, n), count = 0, off, start, len;
    ProtobufCMessage *m;
    int rc = 0;

    if (hlen == SIZE_MAX)
        return take_whole(in, n, desc, hdr, t, npayload, err, errlen);
    for (off = hlen; off < n; count++)
        if (!payload_next(p, n, &off, &start, &len))
            return take_whole(in, n, desc, hdr, t, npayload, err, errlen);

    m = hand ? hand_build(kind, p, &h) : protobuf_c_message_unpack(desc, NULL, hlen, p);
    if (m == NULL) {
        err_set(err, errlen, hand ? "out of memory reading a frame" : "bytes do not decode as a frame", n);
        evbuffer_drain(in, WIRE_LEN_BYTES + n);
        return -1;
    }
    off = hlen;
    for (size_t i = 0; i < count && rc == 0; i++) {
        payload_next(p, n, &off, &start, &len);
        rc = t->fn(t->arg, i, p + start, NULL, len);
    }
    evbuffer_drain(in, WIRE_LEN_BYTES + n);
    *npayload = count;
    if (rc < 0) {
        wire_hdr_free(m);
        err_set(err, errlen, "payload refused", n);
        return -1;
    }
    *hdr = m;
    return 1;
}

/* How much of a large frame's front is copied out to find where payloads begin. */
#define HEAD_PEEK 4096

/*
 * A frame left in in's chains: find the header in a copy of the frame's
 * front, check the payload fields through evbuffer positions, then hand
 * each payload over as a range of in, so large payloads keep their chains.
 */
static int read_chains(struct evbuffer *in, size_t n, const ProtobufCMessageDescriptor *desc,
                       ProtobufCMessage **hdr, const struct taker *t, int hand,
                       size_t *npayload, char *err, size_t errlen)
{
    uint8_t head[WIRE_LEN_BYTES + HEAD_PEEK];
    size_t peek = n < HEAD_PEEK ? n : HEAD_PEEK, off, hlen, count;
    uint64_t tag;
    int nomem = 0;

    /* Find where the header ends: the first payload field, or the frame's end. */
    evbuffer_copyout(in, head, WIRE_LEN_BYTES + peek);
    hlen = head_end(head + WIRE_LEN_BYTES, peek);
    /* a header cut by the peek is not known to end there */
    if (hlen == peek && peek < n)
        hlen = SIZE_MAX;
    if (hlen == SIZE_MAX)
        return take_whole(in, n, desc, hdr, t, npayload, err, errlen);

    /* Everything after the header must be payload fields, exactly to the end. */
    struct evbuffer_ptr pos;
    count = 0;
    off = hlen;
    if (off < n && evbuffer_ptr_set(in, &pos, WIRE_LEN_BYTES + off, EVBUFFER_PTR_SET) < 0)
        off = SIZE_MAX;
    while (off < n) {
        uint8_t pre[12];
        uint64_t len;
        size_t k, m;
        size_t want = n - off < sizeof pre ? n - off : sizeof pre;
        if (evbuffer_copyout_from(in, &pos, pre, want) != (ev_ssize_t)want)
            break;
        k = varint_get(pre, want, &tag);
        if (k == 0 || tag != PAYLOAD_TAG)
            break;
        m = varint_get(pre + k, want - k, &len);
        if (m == 0 || len > n - off - k - m)
            break;
        off += k + m + (size_t)len;
        count++;
        /* step from here, not from the buffer's start: one walk over the chains in all */
        if (off < n && evbuffer_ptr_set(in, &pos, k + m + (size_t)len, EVBUFFER_PTR_ADD) < 0)
            break;
    }
    if (off != n)
        return take_whole(in, n, desc, hdr, t, npayload, err, errlen);

    ProtobufCMessage *m = hdr_decode(desc, head + WIRE_LEN_BYTES, hlen, hand, &nomem);
    if (m == NULL) {
        err_set(err, errlen, nomem ? "out of memory reading a frame" : "bytes do not decode as a frame", n);
        evbuffer_drain(in, WIRE_LEN_BYTES + n);
        return -1;
    }
    evbuffer_drain(in, WIRE_LEN_BYTES + hlen);

    int rc = 0;
    for (size_t i = 0; i < count; i++) {
        uint8_t pre[12];
        uint64_t len = 0;
        size_t got = evbuffer_copyout(in, pre, sizeof pre);
        size_t k = varint_get(pre, got, &tag);
        size_t k2 = varint_get(pre + k, got - k, &len);
        evbuffer_drain(in, k + k2);
        size_t before = evbuffer_get_length(in);
        if (rc == 0) {
            int r = t->old != NULL ? t->old(t->arg, i, in, (size_t)len)
                                   : t->fn(t->arg, i, NULL, in, (size_t)len);
            if (r < 0)
                rc = -1;
        }
        /* Whatever take left of this payload (or all of it, after a failure) goes. */
        size_t used = before - evbuffer_get_length(in);
        if (used < len)
            evbuffer_drain(in, (size_t)len - used);
    }
    *npayload = count;
    if (rc < 0) {
        wire_hdr_free(m);
        err_set(err, errlen, "payload refused", n);
        return -1;
    }
    *hdr = m;
    return 1;
}

int wire_take(struct evbuffer *in, size_t max_frame, const ProtobufCMessageDescriptor *desc,
              ProtobufCMessage **hdr, wire_take_fn *take, void *arg, size_t *npayload,
              size_t *need, char *err, size_t errlen)
{
    struct taker t = {.old = take, .arg = arg};
    size_t n;
    int rc;

    *npayload = 0;
    rc = frame_len(in, max_frame, &n, need, err, errlen);
    if (rc <= 0)
        return rc;
    /* protobuf-c headers only: callers free them with protobuf_c_message_free_unpacked */
    return read_chains(in, n, desc, hdr, &t, 0, npayload, err, errlen);
}

int wire_read(struct evbuffer *in, size_t max_frame, const ProtobufCMessageDescriptor *desc,
              ProtobufCMessage **hdr, wire_payload_fn *take, void *arg, size_t *npayload,
              size_t *need, char *err, size_t errlen)
{
    struct taker t = {.fn = take, .arg = arg};
    size_t n;
    int rc;

    *hdr = NULL;
    *npayload = 0;
    rc = frame_len(in, max_frame, &n, need, err, errlen);
    if (rc <= 0)
        return rc;
    /*
     * Small frames are pulled into one extent (a copy only when they
     * straddle chains); big ones too if they already lie in one. Others
     * stay in their chains, so a 1 MiB payload is never copied here.
     */
    if (WIRE_LEN_BYTES + n <= PULLUP_MAX || evbuffer_get_contiguous_space(in) >= WIRE_LEN_BYTES + n) {
        const uint8_t *p = evbuffer_pullup(in, (ev_ssize_t)(WIRE_LEN_BYTES + n));
        if (p != NULL)
            return read_flat(in, p + WIRE_LEN_BYTES, n, desc, hdr, &t, npayload, err, errlen);
    }
    return read_chains(in, n, desc, hdr, &t, 1, npayload, err, errlen);
}
