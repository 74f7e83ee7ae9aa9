/*
 * codec.h: the hand codec of codec.c as wire.c sees it, private to
 * libchanwire. wire.c frames and picks a codec; codec.c only says whether a
 * header is one of its own and, if so, decodes or encodes it.
 */
#ifndef CHAN_CODEC_H
#define CHAN_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "wire.h"

/* ---- varints, shared by the codec and the payload prefixes ------------ */

/* Bytes the varint encoding of v takes, 1..10. */
static inline size_t codec_varint_size(uint64_t v)
{
    return v < 0x80 ? 1 : 1 + (size_t)(63 - __builtin_clzll(v)) / 7;
}

/* Write v as a varint at p (room for codec_varint_size(v) bytes); returns its length. */
static inline size_t codec_varint_put(uint8_t *p, uint64_t v)
{
    size_t i = 0;

    while (v >= 0x80) {
        p[i++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[i++] = (uint8_t)v;
    return i;
}

/* ---- codec.c: decoding ------------------------------------------------ */

/* Packed varints at p[s..e): n of them, each of at most `bits` bits. */
struct codec_span {
    size_t s, e, n;
};

/*
 * What the hand decoder found in a header, before it is laid out in a
 * block. Offsets are into the frame bytes given to codec_parse, which must
 * stay unchanged until codec_build; it owns no memory.
 */
struct codec_hand {
    int kind;                  /* which frame type (codec.c's FRAME_*) */
    unsigned body;             /* body field number (= body_case), 0 for none */
    unsigned seen;             /* bit per field already met: a second one declines */
    uint64_t id;
    uint64_t chan, seq;        /* Send, Recv */
    int64_t timeout_ms;        /* Send, Recv */
    int64_t lease_ms;          /* Recv */
    uint32_t max;              /* Recv */
    uint32_t count;            /* SendReply */
    uint32_t status;           /* ServerFrame */
    struct codec_span acks;    /* ClientFrame.acks */
    struct codec_span tags;    /* Tags.tags, RecvReply.tags */
    struct codec_span deliv;   /* RecvReply.deliveries */
    size_t err_s, err_len;     /* ServerFrame.error bytes, if seen */
    size_t hlen;               /* bytes before the first payload field */
};

/*
 * Parse the header fields of a desc frame at p[0..n) up to its first
 * payload field. Returns 1 with h filled (h->hlen: where the header ends),
 * or 0 if the frame is not one the hand codec takes: protobuf-c decides
 * then. Allocates nothing.
 */
int codec_parse(const ProtobufCMessageDescriptor *desc, const uint8_t *p, size_t n,
                struct codec_hand *h);

/*
 * Lay out what codec_parse found in p as one malloc'd block, the header
 * wire_read hands out: the caller owns it and frees it with wire_hdr_free.
 * NULL if out of memory.
 */
ProtobufCMessage *codec_build(const uint8_t *p, const struct codec_hand *h);

/* ---- codec.c: encoding ------------------------------------------------ */

/* What the encoder works out once before wire_write sizes and writes a hot header. */
struct codec_plan {
    const ProtobufCMessage *body;  /* the body sub-message to write, NULL for none */
    unsigned body_field;           /* its field number */
    size_t body_size;              /* its packed bytes */
    size_t acks, tags, deliv;      /* packed bytes of each repeated field present */
    size_t err_len;                /* ServerFrame.error bytes, 0: omitted */
    size_t size;                   /* the whole header's packed bytes */
};

/*
 * Work out whether hdr is a hot frame the encoder writes (1, pl filled,
 * pl->size its packed bytes) or one for protobuf-c (0): another type or
 * body, unknown fields kept from a decode, or a payload field that is not
 * empty. pl points into hdr, which must not change until codec_pack.
 */
int codec_plan(const ProtobufCMessage *hdr, struct codec_plan *pl);

/* Write hdr, planned by codec_plan, as pl->size bytes at out: the same bytes protobuf-c packs. */
void codec_pack(const ProtobufCMessage *hdr, const struct codec_plan *pl, uint8_t *out);

#endif /* CHAN_CODEC_H */
