/*
 * stream.h: a nonblocking TCP socket with an input and an output evbuffer,
 * shared by chand and libchanclient. Reads are one readv per readable
 * event, sized to the frame the owner awaits (no FIONREAD probe, no 4 KiB
 * cap); writes happen only when the owner calls stream_flush, once per
 * loop turn, and EV_WRITE is armed only for bytes the socket refused. So a
 * request and its reply cost one read and one write on each side and no
 * epoll_ctl.
 */
#ifndef CHAN_STREAM_H
#define CHAN_STREAM_H

#include <stddef.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <event2/event_struct.h>

struct evbuffer;
struct stream;

/* What a stream reports to its owner's callback. */
enum stream_event {
    STREAM_READ = 1,       /* new bytes in s->in (or stream_kick was called) */
    STREAM_DRAINED = 2,    /* bytes the socket had refused are all written now (once per refusal) */
    STREAM_EOF = 3,        /* the peer closed its side; reported once, reading stops */
    STREAM_ERROR = 4,      /* the socket failed; s->err says why. Final: nothing follows */
    STREAM_CONNECTED = 5,  /* stream_connect finished */
};

/*
 * The owner's callback. It may call stream_close (and free the memory
 * holding s): the stream touches nothing of s after the call returns.
 */
typedef void stream_cb(struct stream *s, enum stream_event what, void *arg);

/*
 * A connection. Lives inside its owner's struct. Owns fd, in and out
 * (stream_close releases all three); the events are embedded.
 */
struct stream {
    evutil_socket_t fd;       /* -1 when closed */
    struct evbuffer *in;      /* bytes read, not yet taken by the owner */
    struct evbuffer *out;     /* bytes queued, not yet written */
    struct event rd;          /* EV_READ | EV_PERSIST, added while reading is on */
    struct event wr;          /* EV_WRITE | EV_PERSIST, added while out has refused bytes */
    stream_cb *cb;
    void *arg;
    size_t want;              /* input bytes the owner waits for in all: sizes the next read */
    char *spill;              /* owner's read overflow buffer (may serve many streams), or NULL */
    size_t spill_len;
    int err;                  /* errno behind the last STREAM_ERROR or failed flush */
    unsigned char reading;    /* rd is added */
    unsigned char writing;    /* wr is added */
    unsigned char connecting; /* wr waits for a nonblocking connect */
};

/*
 * Smallest and largest single read; large frames are read in one go up to
 * the latter. With a spill buffer, input memory grows only with the bytes
 * that came: a read goes into at most STREAM_HOLD_MIN bytes of the input
 * (or as many as it already holds, for a large frame), the rest into the
 * spill buffer, copied into the input after. A server with many peers sets
 * one, so a peer cannot make it hold 64 KiB or a whole announced frame for
 * the few bytes it sent.
 */
#define STREAM_READ_MIN 65536
#define STREAM_READ_MAX (4u << 20)
#define STREAM_HOLD_MIN 4000

/*
 * Take over a connected nonblocking socket fd (closed by stream_close even
 * when this fails). Reading starts at once. 0, or -1 with errno ENOMEM.
 */
int stream_open(struct stream *s, struct event_base *base, evutil_socket_t fd, stream_cb *cb,
                void *arg);

/*
 * Open a nonblocking, close-on-exec socket to sa and start connecting:
 * STREAM_CONNECTED or STREAM_ERROR follows from the loop. 0, or -1 with
 * errno (a refusal the kernel knew at once, or ENOMEM); s is closed then.
 */
int stream_connect(struct stream *s, struct event_base *base, const struct sockaddr *sa,
                   socklen_t len, stream_cb *cb, void *arg);

/* Turn reading on or off (a paused reader leaves bytes in the kernel). */
void stream_reading(struct stream *s, int on);

/*
 * Report STREAM_READ from the loop without reading (bytes left in s->in
 * when reading was paused). Runs in this loop iteration or the next; a
 * stream_reading(s, 0) or stream_close before then cancels it.
 */
void stream_kick(struct stream *s);

/*
 * Write as much of s->out as the socket takes now, in one writev (also
 * while the loop is still finishing an earlier refusal); what it refuses
 * is finished by the loop, and STREAM_DRAINED says when. Returns 0, or -1
 * with s->err set when the socket failed, now or before (the caller ends
 * the connection; no callback reports it).
 */
int stream_flush(struct stream *s);

/* Bytes queued and not yet written. */
size_t stream_pending(const struct stream *s);

/* Stop everything, close the socket, free the buffers. Safe on a closed stream. */
void stream_close(struct stream *s);

/*
 * Large messages pass through buffers of up to a frame each. glibc's
 * default gives such a buffer back to the kernel as soon as it is freed
 * (mmap above 128 KiB, heap trimming above a few MiB), so the next one is
 * page-faulted in afresh: most of the time a 1 MiB message costs. This
 * keeps up to 32 MiB of freed heap for reuse and maps only blocks over
 * 8 MiB. Process-wide; a no-op where mallopt is missing.
 */
void stream_tune_malloc(void);

/* A zeroed stream is closed; this sets fd -1 so stream_close knows. */
void stream_init(struct stream *s);

#endif /* CHAN_STREAM_H */
