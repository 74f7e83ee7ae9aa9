/*
 * wire.h: framing and the status vocabulary shared by chand and
 * libchanclient. A frame is a 4-byte big-endian length N and N bytes of one
 * protobuf message (proto/chan.proto); message payloads ride in field 100
 * after every header field, so they move between evbuffers without being
 * decoded or, where chains allow, copied.
 */
#ifndef CHAN_WIRE_H
#define CHAN_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "chan.pb-c.h"

struct evbuffer;

/*
 * Protocol version carried in HELLO. Bump it when the meaning of an existing
 * field or request changes (adding fields or requests does not); the server
 * then keeps answering the previous version for one release.
 */
#define WIRE_VERSION 1

#define WIRE_LEN_BYTES 4        /* frame length prefix */
#define WIRE_HDR_MAX 65536      /* a frame's bytes beyond its payloads, at most */
#define WIRE_PAYLOAD_FIELD 100  /* field number of `payload` in both frames */
#define WIRE_NAME_MAX 255       /* channel name bytes */

/* Longest frame for messages of at most max_msg bytes each (one message). */
#define WIRE_FRAME_MAX(max_msg) ((size_t)(max_msg) + WIRE_HDR_MAX)

/* ---- status.c-like table (in wire.c) --------------------------------- */

/* Status -> errno for the client. Unknown statuses map to EPROTO. */
int wire_status_errno(int status);

/* errno -> Status for the server (core results, limits). */
int wire_errno_status(int err);

/* Short fixed text for a status, e.g. "channel closed". */
const char *wire_status_text(int status);

/*
 * DESIGN.md section 1: 1..255 bytes, printable UTF-8, no spaces or control
 * bytes. Returns 1 if name[0..len) is a valid channel name.
 */
int wire_name_ok(const char *name, size_t len);

/* ---- frames ---------------------------------------------------------- */

/*
 * One payload to write: either bytes at data (copied into the output) or,
 * when buf is not NULL, the contents of buf, added by reference so no byte
 * is copied; buf must then stay unmodified until the output has drained.
 */
struct wire_payload {
    const void *data;
    size_t len;
    struct evbuffer *buf;
};

/*
 * Append one frame to out: hdr (whose payload field must be empty) then the
 * n payloads. Returns 0, or -1 if the header is over WIRE_HDR_MAX (nothing
 * is appended then) or out refused memory (part of the frame may have been
 * appended: the stream is broken and the connection must be dropped).
 */
int wire_put(struct evbuffer *out, const ProtobufCMessage *hdr,
             const struct wire_payload *pl, size_t n);

/*
 * Called once per payload of a frame being taken, in order: remove exactly
 * len bytes from src (evbuffer_remove into memory of the callee's, or
 * evbuffer_remove_buffer into an evbuffer of its own, which moves whole
 * chains without copying). Return 0, or -1 to fail the frame (the callee
 * still removed the bytes, or wire_take drains them).
 */
typedef int wire_take_fn(void *arg, size_t index, struct evbuffer *src, size_t len);

/*
 * Take one frame from the front of in, if a whole one is there.
 * Returns 1: *hdr is the decoded header (payload field empty; free it with
 *   protobuf_c_message_free_unpacked(*hdr, NULL)), each payload was handed
 *   to take, and *npayload says how many there were.
 * Returns 0: more bytes are needed; *need says how many in all (length
 *   prefix included), so the caller can set a read watermark.
 * Returns -1: the stream is broken (length over max_frame, bytes that do
 *   not decode, or take failed); err holds a one-line reason. The caller
 *   must not read further frames from in.
 */
int wire_take(struct evbuffer *in, size_t max_frame, const ProtobufCMessageDescriptor *desc,
              ProtobufCMessage **hdr, wire_take_fn *take, void *arg, size_t *npayload,
              size_t *need, char *err, size_t errlen);

#endif /* CHAN_WIRE_H */
