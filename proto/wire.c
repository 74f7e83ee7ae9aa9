/*
 * wire.c: frames on evbuffers, the status table and channel names, for both
 * ends. Headers go through codec.c (hot frames) or protobuf-c; payloads are
 * handed over in place or as evbuffer ranges, never decoded.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "codec.h"
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

/* ---- writing --------------------------------------------------------- */

/* Contiguous output extents grow to about this much before the next one starts. */
#define WRITE_EXTENT_MAX 65536

static size_t payload_pre_size(size_t len)
{
    return codec_varint_size(PAYLOAD_TAG) + codec_varint_size(len);
}

static size_t payload_pre_put(uint8_t *p, size_t len)
{
    size_t k = codec_varint_put(p, PAYLOAD_TAG);
    return k + codec_varint_put(p + k, len);
}

int wire_write(struct evbuffer *out, const ProtobufCMessage *hdr,
               const struct wire_payload *pl, size_t n)
{
    struct codec_plan plan;
    int hand = codec_plan(hdr, &plan);
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
            if (hand)
                codec_pack(hdr, &plan, p + off);
            else
                protobuf_c_message_pack(hdr, p + off);
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
            const struct wire_payload *r = &pl[j];
            int bad = r->buf != NULL ? evbuffer_add_buffer_reference(out, r->buf) < 0
                      : r->len > 0 && evbuffer_add_reference(out, r->data, r->len, NULL, NULL) < 0;
            if (bad)
                return -1;
            i = j + 1;
        }
        first = 0;
    } while (i < n);
    return 0;
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
    const ProtobufCFieldDescriptor *fd =
        protobuf_c_message_descriptor_get_field(desc, WIRE_PAYLOAD_FIELD);
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
    struct codec_hand h;
    int hand = codec_parse(desc, p, n, &h);
    size_t hlen = hand ? h.hlen : head_end(p, n), count = 0, off, start, len;
    ProtobufCMessage *m;
    int rc = 0;

    if (hlen == SIZE_MAX)
        return take_whole(in, n, desc, hdr, t, npayload, err, errlen);
    for (off = hlen; off < n; count++)
        if (!payload_next(p, n, &off, &start, &len))
            return take_whole(in, n, desc, hdr, t, npayload, err, errlen);

    m = hand ? codec_build(p, &h) : protobuf_c_message_unpack(desc, NULL, hlen, p);
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

/*
 * Decode the header p[0..hlen) (no payload fields in it): by hand when
 * `hand` and the codec takes it, else by protobuf-c. NULL if it does not
 * decode or memory ran out (*nomem set for the hand codec's failure).
 */
static ProtobufCMessage *hdr_decode(const ProtobufCMessageDescriptor *desc, const uint8_t *p,
                                    size_t hlen, int hand, int *nomem)
{
    struct codec_hand h;

    if (hand && codec_parse(desc, p, hlen, &h) && h.hlen == hlen) {
        ProtobufCMessage *m = codec_build(p, &h);
        *nomem = m == NULL;
        return m;
    }
    return protobuf_c_message_unpack(desc, NULL, hlen, p);
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
