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
 * One payload to write: bytes at data, copied into the output; or, when
 * buf is not NULL, the contents of buf, added by reference so no byte is
 * copied, and buf must stay unmodified until the output has drained; or,
 * when ref is set, the bytes at data added by reference likewise (data
 * must stay valid and unmodified until then, or until the output is freed).
 */
struct wire_payload {
    const void *data;
    size_t len;
    struct evbuffer *buf;
    int ref;
};

/* Payloads from this size up are worth adding by reference rather than copying. */
#define WIRE_REF_MIN 4096

/*
 * Append one frame to out: hdr (whose payload field must be empty) then the
 * n payloads. Returns 0, or -1 if the header is over WIRE_HDR_MAX (nothing
 * is appended then) or out refused memory (part of the frame may have been
 * appended: the stream is broken and the connection must be dropped).
 */
int wire_write(struct evbuffer *out, const ProtobufCMessage *hdr,
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

/* ---- frames, the fast path -------------------------------------------- */

/*
 * The hot frames (ClientFrame with no body, SEND, RECV, ACK or NACK;
 * ServerFrame with no body, SEND or RECV reply) are encoded and decoded by
 * a varint codec in codec.c; every other frame, and any frame that codec is
 * unsure of (an unknown field, an unexpected wire type, a field given
 * twice, unpacked repeated values, a varint wider than its field), goes
 * through protobuf-c. Both give the same bytes and the same decoded
 * values; only the allocation of a decoded header differs:
 *
 * - hand-decoded: ONE malloc'd block holding the frame struct, its body
 *   sub-message, its repeated arrays and its error string. It is marked by
 *   base.n_unknown_fields == 0 and base.unknown_fields pointing at a static
 *   sentinel in codec.c (protobuf-c only ever stores NULL or a heap pointer
 *   there). protobuf_c_message_free_unpacked must never see it.
 * - protobuf-c: as protobuf_c_message_unpack returns it.
 *
 * Either way the header reads exactly like protobuf-c's unpacked message
 * (same struct types, sub-messages, arrays, body_case; payload field
 * empty), is owned by the caller of wire_read, may be kept for as long as
 * the caller likes, and is freed only by wire_hdr_free. Its fields must
 * not be re-pointed at other memory or stolen.
 */

/*
 * Payload callback of wire_read, called once per payload in order. Exactly
 * one of data and src is non-NULL:
 * - data: the payload's len bytes, contiguous, valid only during the call
 *   (copy what you keep; they sit in wire_read's input, which the callee
 *   must not touch). Frames that fit 64 KiB, or already lie in one extent
 *   of the input, come this way.
 * - src: an evbuffer whose first len bytes are the payload (larger frames,
 *   so big payloads are never copied here): remove them as with
 *   wire_take_fn (evbuffer_remove_buffer moves whole chains).
 * Return 0, or -1 to fail the frame (wire_read then skips the remaining
 * payloads and drains the frame).
 */
typedef int wire_payload_fn(void *arg, size_t index, const void *data, struct evbuffer *src,
                            size_t len);

/*
 * wire_take with the fast decoder and wire_payload_fn; same return
 * contract (1: a frame, 0: *need bytes are needed, -1: broken stream, err
 * says why). On 1, *hdr must be freed with wire_hdr_free. On 0 and -1,
 * *hdr is NULL.
 */
int wire_read(struct evbuffer *in, size_t max_frame, const ProtobufCMessageDescriptor *desc,
              ProtobufCMessage **hdr, wire_payload_fn *take, void *arg, size_t *npayload,
              size_t *need, char *err, size_t errlen);

/* Free a header from wire_read, of either kind. NULL does nothing. */
void wire_hdr_free(ProtobufCMessage *hdr);

/* 1 if hdr was decoded by the hand codec in codec.c (one block), 0 if by protobuf-c. */
int wire_hdr_is_block(const ProtobufCMessage *hdr);


#endif /* CHAN_WIRE_H */
