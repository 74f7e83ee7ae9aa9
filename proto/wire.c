/*
 * wire.c: frames on evbuffers and the status table, for both ends. The
 * header part of a frame goes through protobuf-c; payloads are located by a
 * small walk over the field tags and handed over as evbuffer ranges, so
 * their bytes are neither decoded nor copied on the way.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "wire.h"

/* Field 100, wire type 2 (length-delimited), as a varint: 0xa2 0x06. */
#define PAYLOAD_TAG ((WIRE_PAYLOAD_FIELD << 3) | 2)

/* How much of a frame's front is copied out to find where payloads begin. */
#define HEAD_PEEK 4096

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

/* ---- writing --------------------------------------------------------- */

int wire_put(struct evbuffer *out, const ProtobufCMessage *hdr,
             const struct wire_payload *pl, size_t n)
{
    size_t hsize = protobuf_c_message_get_packed_size(hdr);
    size_t total = hsize;
    struct evbuffer_iovec v;

    if (hsize > WIRE_HDR_MAX)
        return -1;
    for (size_t i = 0; i < n; i++) {
        uint8_t tmp[10];
        total += 2 + varint_put(tmp, pl[i].len) + pl[i].len;
    }
    if (total > UINT32_MAX)
        return -1;

    /* Length prefix and header packed straight into the output's memory. */
    if (evbuffer_reserve_space(out, WIRE_LEN_BYTES + hsize, &v, 1) < 1)
        return -1;
    uint8_t *p = v.iov_base;
    p[0] = (uint8_t)(total >> 24);
    p[1] = (uint8_t)(total >> 16);
    p[2] = (uint8_t)(total >> 8);
    p[3] = (uint8_t)total;
    protobuf_c_message_pack(hdr, p + WIRE_LEN_BYTES);
    v.iov_len = WIRE_LEN_BYTES + hsize;
    if (evbuffer_commit_space(out, &v, 1) < 0)
        return -1;

    for (size_t i = 0; i < n; i++) {
        uint8_t pre[12];
        size_t k = varint_put(pre, PAYLOAD_TAG);
        k += varint_put(pre + k, pl[i].len);
        if (pl[i].buf != NULL) {
            if (evbuffer_add(out, pre, k) < 0 || evbuffer_add_buffer_reference(out, pl[i].buf) < 0)
                return -1;
            continue;
        }
        /* Small payloads: tag, length and bytes in one reserved extent. */
        if (evbuffer_reserve_space(out, k + pl[i].len, &v, 1) < 1)
            return -1;
        memcpy(v.iov_base, pre, k);
        if (pl[i].len > 0)
            memcpy((uint8_t *)v.iov_base + k, pl[i].data, pl[i].len);
        v.iov_len = k + pl[i].len;
        if (evbuffer_commit_space(out, &v, 1) < 0)
            return -1;
    }
    return 0;
}

/* ---- reading --------------------------------------------------------- */

/* Why the stream broke, for the error frame and the log. */
static void err_set(char *err, size_t errlen, const char *what, size_t n)
{
    if (errlen > 0)
        snprintf(err, errlen, "%s (frame of %zu bytes)", what, n);
}

/*
 * A frame whose payloads are not all at its end (a valid, if unusual,
 * encoding): decode it whole and feed each payload to take from a scratch
 * buffer. Costs a copy; never taken by our own peers.
 */
static int take_whole(struct evbuffer *in, size_t n, const ProtobufCMessageDescriptor *desc,
                      ProtobufCMessage **hdr, wire_take_fn *take, void *arg,
                      size_t *npayload, char *err, size_t errlen)
{
    const ProtobufCFieldDescriptor *fd = protobuf_c_message_descriptor_get_field(desc, WIRE_PAYLOAD_FIELD);
    uint8_t *p = evbuffer_pullup(in, WIRE_LEN_BYTES + n);
    ProtobufCMessage *m;
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
    struct evbuffer *tmp = evbuffer_new();
    if (tmp == NULL)
        rc = -1;
    for (size_t i = 0; i < *cnt && rc == 0; i++) {
        if (evbuffer_add(tmp, (*arr)[i].data, (*arr)[i].len) < 0 ||
            take(arg, i, tmp, (*arr)[i].len) < 0)
            rc = -1;
        evbuffer_drain(tmp, evbuffer_get_length(tmp));
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

int wire_take(struct evbuffer *in, size_t max_frame, const ProtobufCMessageDescriptor *desc,
              ProtobufCMessage **hdr, wire_take_fn *take, void *arg, size_t *npayload,
              size_t *need, char *err, size_t errlen)
{
    uint8_t head[WIRE_LEN_BYTES + HEAD_PEEK];
    size_t avail = evbuffer_get_length(in), n, peek, off, hlen, count;
    uint64_t tag;

    *npayload = 0;
    if (avail < WIRE_LEN_BYTES) {
        *need = WIRE_LEN_BYTES;
        return 0;
    }
    evbuffer_copyout(in, head, WIRE_LEN_BYTES);
    n = (size_t)head[0] << 24 | (size_t)head[1] << 16 | (size_t)head[2] << 8 | head[3];
    if (n > max_frame) {
        if (errlen > 0)
            snprintf(err, errlen, "frame length %zu over the limit of %zu bytes", n, max_frame);
        return -1;
    }
    if (avail - WIRE_LEN_BYTES < n) {
        *need = WIRE_LEN_BYTES + n;
        return 0;
    }

    /* Find where the header ends: the first payload field, or the frame's end. */
    peek = n < HEAD_PEEK ? n : HEAD_PEEK;
    evbuffer_copyout(in, head, WIRE_LEN_BYTES + peek);
    hlen = SIZE_MAX;
    for (off = 0; off < peek;) {
        tag = 0;
        size_t k = field_skip(head + WIRE_LEN_BYTES + off, peek - off, &tag);
        if ((tag >> 3) == WIRE_PAYLOAD_FIELD) {
            hlen = off;
            break;
        }
        if (k == 0)
            break;
        off += k;
    }
    if (hlen == SIZE_MAX && off == n)
        hlen = n;
    if (hlen == SIZE_MAX)
        return take_whole(in, n, desc, hdr, take, arg, npayload, err, errlen);

    /* Everything after the header must be payload fields, exactly to the end. */
    struct evbuffer_ptr pos;
    count = 0;
    for (off = hlen; off < n; count++) {
        uint8_t pre[12];
        uint64_t len;
        size_t k, m;
        if (evbuffer_ptr_set(in, &pos, WIRE_LEN_BYTES + off, EVBUFFER_PTR_SET) < 0)
            break;
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
    }
    if (off != n)
        return take_whole(in, n, desc, hdr, take, arg, npayload, err, errlen);

    ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, hlen, head + WIRE_LEN_BYTES);
    if (m == NULL) {
        err_set(err, errlen, "bytes do not decode as a frame", n);
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
        if (rc == 0 && take(arg, i, in, (size_t)len) < 0)
            rc = -1;
        /* Whatever take left of this payload (or all of it, after a failure) goes. */
        size_t used = before - evbuffer_get_length(in);
        if (used < len)
            evbuffer_drain(in, (size_t)len - used);
    }
    *npayload = count;
    if (rc < 0) {
        protobuf_c_message_free_unpacked(m, NULL);
        err_set(err, errlen, "payload refused", n);
        return -1;
    }
    *hdr = m;
    return 1;
}
