/*
 * codec.c: the hand-written varint codec for the hot frames (SEND, RECV,
 * their replies, ACK/NACK, bare ack frames): headers decoded into one block
 * and encoded without protobuf-c's descriptor walk. wire.c does the framing.
 */
#include <stdlib.h>
#include <string.h>

#include "codec.h"

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

/* Check and count a packed run of varints; declines any protobuf-c would read differently. */
static int span_scan(const uint8_t *p, size_t s, size_t e, unsigned bits, struct codec_span *sp)
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
    *sp = (struct codec_span){s, e, n};
    return 1;
}

/* Decode a span checked by span_scan into out64 (bits 64) or out32. */
static void span_get(const uint8_t *p, const struct codec_span *sp, uint64_t *out64,
                     uint32_t *out32)
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

enum {
    SEEN_ACKS = 1, SEEN_TAGS = 2, SEEN_DELIV = 4, SEEN_ERR = 8,
};

/* The body sub-message at p[s..e) for body field `body` of frame kind `kind`. */
static int hand_body(int kind, unsigned body, const uint8_t *p, size_t s, size_t e,
                     struct codec_hand *h)
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

int codec_parse(const ProtobufCMessageDescriptor *desc, const uint8_t *p, size_t n,
                struct codec_hand *h)
{
    int kind = frame_kind(desc);
    size_t i = 0, s, e;

    if (kind == FRAME_NONE)
        return 0;
    memset(h, 0, sizeof *h);
    h->kind = kind;
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

ProtobufCMessage *codec_build(const uint8_t *p, const struct codec_hand *h)
{
    int kind = h->kind;
    size_t fsize = kind == FRAME_CLIENT ? sizeof(Chanwire__ClientFrame)
                                        : sizeof(Chanwire__ServerFrame);
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

/* ---- encoding -------------------------------------------------------- */

/* Output of the encoder: bytes go to p, or with p NULL are only counted. */
struct enc {
    uint8_t *p;
    size_t n;
};

static inline void enc_varint(struct enc *o, uint64_t v)
{
    if (o->p != NULL)
        o->n += codec_varint_put(o->p + o->n, v);
    else
        o->n += codec_varint_size(v);
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
        sz += codec_varint_size(a[i]);
    return sz;
}

static size_t packed_size32(const uint32_t *a, size_t n)
{
    size_t sz = 0;

    for (size_t i = 0; i < n; i++)
        sz += codec_varint_size(a[i]);
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
        o->n += codec_varint_put(o->p + o->n, a64 != NULL ? a64[i] : a32[i]);
}

/* The body sub-message's fields, in field number order as protobuf-c packs them. */
static void enc_body(struct enc *o, int kind, const struct codec_plan *pl)
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

static void enc_frame(struct enc *o, int kind, const ProtobufCMessage *hdr,
                      const struct codec_plan *pl)
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

int codec_plan(const ProtobufCMessage *hdr, struct codec_plan *pl)
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
            pl->body = (const ProtobufCMessage *)(body_case == CHANWIRE__CLIENT_FRAME__BODY_ACK
                                                  ? f->ack : f->nack);
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

void codec_pack(const ProtobufCMessage *hdr, const struct codec_plan *pl, uint8_t *out)
{
    struct enc o = {out, 0};

    enc_frame(&o, frame_kind(hdr->descriptor), hdr, pl);
}
