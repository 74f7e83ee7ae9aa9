/*
 * chan.h: libchanclient, coroutines and Go-style channels for C. A channel
 * is local (chan_make) or hosted by a chand broker (chan_open); the same
 * calls work on both. See chan(3) in docs/ and DESIGN.md section 4.
 *
 * Conventions: calls return -1 (or NULL) and set errno on failure.
 * Deadlines are absolute milliseconds on the chan_now() clock; -1 means
 * never, 0 means do not block. Every call must be made from a coroutine of
 * the thread that owns the object (the thread's main is itself one).
 */
#ifndef CHAN_H
#define CHAN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(CHAN_BUILDING) && defined(__GNUC__)
#define CHAN_EXPORT __attribute__((visibility("default")))
#else
#define CHAN_EXPORT
#endif

/* ---- coroutines ------------------------------------------------------ */

/*
 * Start fn(arg) as a new coroutine of this thread; it first runs when the
 * caller blocks or yields. Returns its id (> 0).
 * ERRORS: ENOMEM (no memory for the stack or the coroutine).
 */
CHAN_EXPORT int chan_go(void (*fn)(void *arg), void *arg);

/*
 * As chan_go, with a stack of at least stack_size bytes (rounded up to
 * pages; 0 means the default, 256 KiB) for deep recursion. Stacks are
 * touched lazily, so a large size costs address space, not memory.
 * ERRORS: ENOMEM, EINVAL (stack_size over 1 GiB).
 */
CHAN_EXPORT int chan_go_stack(void (*fn)(void *arg), void *arg, size_t stack_size);

/*
 * Wait until coroutine cr has finished (0 at once if it already has).
 * ERRORS: ESRCH (no such coroutine), EDEADLK (cr is the caller),
 * ETIMEDOUT, ECANCELED.
 */
CHAN_EXPORT int chan_join(int cr, int64_t deadline);

/*
 * Cancel cr: its blocked and later blocking calls fail with ECANCELED and
 * have no effect on any channel. cr still runs to its end; join it.
 * ERRORS: ESRCH.
 */
CHAN_EXPORT int chan_cancel(int cr);

/* Let every other runnable coroutine run once. */
CHAN_EXPORT void chan_yield(void);

/* Sleep until deadline. ERRORS: ECANCELED. Returns 0 when it passed. */
CHAN_EXPORT int chan_sleep(int64_t deadline);

/* Milliseconds on a monotonic clock. */
CHAN_EXPORT int64_t chan_now(void);

/* The calling coroutine's id (the thread's main coroutine is 1). */
CHAN_EXPORT int chan_self(void);

/* ---- channels -------------------------------------------------------- */

typedef struct chan chan_t;

/*
 * A received message. data/len are the payload (data is NUL-terminated
 * one byte past len for convenience); deliveries counts how often the
 * channel handed this message out (1 the first time, one more after each
 * nack or expired lease). Release with chan_msg_free once, also after
 * chan_ack or chan_nack. The private fields are the library's; a copy of
 * the struct may be freed or settled in place of the original, but only
 * one of them.
 */
typedef struct chan_msg {
    void *data;
    size_t len;
    uint32_t deliveries;
    /* private fields follow */
    uint32_t priv_flags;
    uint64_t priv_tag;
    void *priv_owner;
    void *priv_peer;
    uint64_t priv_epoch;
} chan_msg_t;

/*
 * A local channel of capacity cap (0 = unbuffered), owned by this thread.
 * ERRORS: ENOMEM.
 */
CHAN_EXPORT chan_t *chan_make(size_t cap);

/*
 * Send len bytes at data. Returns 0 once the message is buffered or, for
 * an unbuffered channel, taken by a receiver. data may be reused at return.
 * Remote: if the connection drops while the send is in flight, the library
 * reconnects and sends it again under the same sequence number; a broker
 * that had completed it drops the repeat, so the message goes once and the
 * call reports what happened. Finding that out may take the client's
 * retry_ms past the deadline, and the call is not cancellable meanwhile.
 * An unbuffered send that a leased receiver (chan_recv_lease) took waits
 * for that lease's end even past its deadline: an ack means delivered (0),
 * a nack or expiry not delivered (ETIMEDOUT, ECANCELED, or EAGAIN for
 * deadline 0, as the wait had ended).
 * ERRORS: EPIPE (closed; not delivered), EAGAIN (deadline 0), ETIMEDOUT,
 * ECANCELED, EMSGSIZE, EINVAL, ESTALE, ENOTCONN (broker unreachable; not
 * delivered), ECONNRESET (the broker restarted, or stayed unreachable for
 * retry_ms, while the send was in flight: it may or may not have been
 * delivered; a restarted broker has forgotten what it had completed).
 */
CHAN_EXPORT int chan_send(chan_t *ch, const void *data, size_t len, int64_t deadline);

/*
 * Receive one message into *msg: returns 1 with a message (free it with
 * chan_msg_free), 0 when the channel is closed and drained.
 * ERRORS: EAGAIN, ETIMEDOUT, ECANCELED, ESTALE, ECONNRESET, ENOTCONN, ENOMEM.
 */
CHAN_EXPORT int chan_recv(chan_t *ch, chan_msg_t *msg, int64_t deadline);

/*
 * Release a received message's memory. NULL or an empty msg is a no-op.
 * Freeing a leased message does not settle it: unless chan_ack or
 * chan_nack came first, its lease runs on and it is redelivered.
 */
CHAN_EXPORT void chan_msg_free(chan_msg_t *msg);

/*
 * Send msgs[0..n) in order, as n consecutive chan_send calls would, in one
 * round trip where the channel is remote. Like write(2), it waits (until
 * deadline) only for the first message; the rest go while they can go at
 * once, so a short count means the next message would have had to wait, the
 * channel was closed meanwhile, or a message over the limit comes next.
 * Returns how many were sent (>= 1), message by message with the rules of
 * chan_send (capacity; for an unbuffered channel each one is taken by a
 * receiver). A batch over the broker's frame limit goes as several frames.
 * ERRORS (nothing was sent): EINVAL (n < 1, msgs NULL, a NULL base with a
 * length), and those of chan_send for the first message. ECONNRESET after a
 * broker restart means any message of the batch may have been delivered.
 */
CHAN_EXPORT int chan_send_many(chan_t *ch, const struct iovec *msgs, int n, int64_t deadline);

/*
 * Receive up to n messages into msgs[0..n). Like read(2), it waits (until
 * deadline) for the first one and then takes only what is there at once,
 * never waiting for n: returns how many it took (>= 1), or 0 when the
 * channel is closed and drained. Only the messages returned left the
 * channel; nothing is fetched ahead. Every msgs[i] is cleared first; free
 * each returned one with chan_msg_free.
 * ERRORS: EINVAL (n < 1, msgs NULL), and those of chan_recv.
 */
CHAN_EXPORT int chan_recv_many(chan_t *ch, chan_msg_t *msgs, int n, int64_t deadline);

/*
 * Leased receive, the reliable job queue: as chan_recv, but the message
 * stays the channel's (counted against its capacity; for an unbuffered
 * channel its sender still waits) until chan_ack. chan_nack, or lease_ms
 * milliseconds after the delivery without either, puts it back at the head
 * of the channel to be delivered again with deliveries + 1. A remote
 * message whose connection drops goes back the same way. Free msg with
 * chan_msg_free in any case.
 * ERRORS: EINVAL (lease_ms < 1), and those of chan_recv.
 */
CHAN_EXPORT int chan_recv_lease(chan_t *ch, chan_msg_t *msg, int64_t lease_ms, int64_t deadline);

/*
 * Settle a message from chan_recv_lease: chan_ack says done (the message is
 * gone for good; an unbuffered channel's sender completes), chan_nack gives
 * it back (head of the channel, deliveries + 1). Remote: one round trip,
 * so 0 means the broker applied it. At most one of the two, once.
 * ERRORS: EINVAL (msg is not a leased message, was settled already, or its
 * lease expired first: it was redelivered or is waiting to be), ESTALE
 * (local channel freed meanwhile), ECONNRESET (remote: the connection that
 * delivered it dropped, before the call or during it; the broker gave the
 * message back unless the ack reached it first), ECANCELED.
 */
CHAN_EXPORT int chan_ack(chan_msg_t *msg);
CHAN_EXPORT int chan_nack(chan_msg_t *msg);

/*
 * Close ch: blocked and future receivers drain the buffer, then get 0;
 * blocked and future senders get EPIPE. Remote: a close in flight when the
 * connection drops is sent again to the same broker; if the channel is then
 * found closed, the first one got through (or another client closed it in
 * between) and the call returns 0.
 * ERRORS: EPIPE (already closed), ESTALE, ECONNRESET (the broker restarted
 * or stayed unreachable while the close was in flight), ENOTCONN.
 */
CHAN_EXPORT int chan_close(chan_t *ch);

/* Buffered messages (not counting unacked ones), or -1. */
CHAN_EXPORT long chan_len(chan_t *ch);

/* Capacity, or -1. */
CHAN_EXPORT long chan_cap(chan_t *ch);

/* Drop this handle; never closes the channel. NULL is a no-op. */
CHAN_EXPORT void chan_free(chan_t *ch);

enum { CHAN_SEND = 1, CHAN_RECV = 2 };

struct chan_case {
    chan_t *ch;           /* NULL: this case never proceeds */
    int op;               /* CHAN_SEND or CHAN_RECV */
    const void *data;     /* CHAN_SEND */
    size_t len;           /* CHAN_SEND */
    chan_msg_t *msg;      /* CHAN_RECV */
    int result;           /* as chan_send / chan_recv would have returned */
};

/*
 * Wait until one case can proceed, run it, and return its index; when
 * several can, one is chosen uniformly at random. The chosen case's result
 * is set (a send case on a closed channel: result -1, errno EPIPE).
 * All cases must be local channels, or remote channels of one client.
 * A send case that a leased receiver took cannot be withdrawn any more:
 * the select then waits past its deadline for that lease's end (an ack:
 * the case proceeded; a nack or expiry: ETIMEDOUT, or EAGAIN for deadline 0).
 * ERRORS: EAGAIN (deadline 0), ETIMEDOUT, ECANCELED, EINVAL,
 * ENOTSUP (local and remote channels mixed, or two clients), ECONNRESET
 * (remote: the connection dropped while the select was out; if it had a
 * send case, that send may have happened).
 */
CHAN_EXPORT int chan_select(struct chan_case *cases, int n, int64_t deadline);

/* ---- remote channels ------------------------------------------------- */

struct chan_opts {                /* zero-initialise; a zero field means the default */
    const char *token;            /* auth token sent in HELLO, or NULL */
    const char *client_name;      /* shown in the broker's LIST and logs, or NULL */
    int64_t     retry_ms;         /* keep reconnecting this long before ECONNRESET (default 5000) */
    /* later fields only ever appended */
};

typedef struct chan_client chan_client_t;

/*
 * Connect to the broker at "host:port" (one address; a list of several,
 * for sharding, fails with ENOTSUP for now). opts may be NULL. The client
 * keeps one session across reconnects; its channel handles stay valid
 * while the broker is the same process, and are opened again by name and
 * capacity on a broker that restarted.
 * The first call raises glibc's malloc thresholds for the process (keep
 * up to 32 MiB of freed heap, mmap only above 8 MiB), without which every
 * large message is page-faulted in afresh; set CHAN_MALLOC_TUNE=0 in the
 * environment to leave malloc as the program set it.
 * ERRORS: EINVAL (bad address), ENOTSUP, ECONNREFUSED/ECONNRESET
 * (unreachable within retry_ms), EACCES (token refused), ENOMEM.
 */
CHAN_EXPORT chan_client_t *chan_connect(const char *addrs, const struct chan_opts *opts);

/*
 * Open channel name on the broker, creating it with capacity cap if it
 * does not exist; cap -1 attaches to an existing one of any capacity.
 * ERRORS: EINVAL (bad name), EEXIST (exists with another cap), ENOENT
 * (cap -1 and no such channel), ECONNRESET, ENOTCONN, ENOMEM.
 */
CHAN_EXPORT chan_t *chan_open(chan_client_t *cl, const char *name, long cap);

/*
 * Close the connection and free the client; its channel handles must be
 * freed first. Its leased messages not yet settled go back to their
 * channels; their chan_msg_t may still be freed, not acked.
 */
CHAN_EXPORT void chan_disconnect(chan_client_t *cl);

/* What STAT and LIST report about a channel. */
struct chan_info {
    char name[256];
    unsigned char incarnation[16];
    long cap;
    long len;             /* buffered messages */
    long unacked;         /* delivered, not yet acknowledged */
    long senders;         /* blocked senders */
    long receivers;       /* blocked receivers */
    int closed;
};

/* ERRORS: EINVAL, ENOENT, ECONNRESET, ENOTCONN. */
CHAN_EXPORT int chan_stat(chan_client_t *cl, const char *name, struct chan_info *info);

/*
 * Every channel whose name starts with prefix ("" for all): returns the
 * count and sets *infos to a malloc'd array the caller frees.
 * ERRORS: ECONNRESET, ENOTCONN, ENOMEM.
 */
CHAN_EXPORT int chan_list(chan_client_t *cl, const char *prefix, struct chan_info **infos);

/*
 * Delete channel name: its blocked operations fail with ENOENT, its
 * buffered messages are dropped, handles to it become stale. A delete in
 * flight when the connection drops is sent again to the same broker; if
 * the channel is then missing, the first one got through and the call
 * returns 0 (a channel of that name created in between by someone else
 * would be deleted by the repeat).
 * ERRORS: EINVAL, ENOENT, ECONNRESET (the broker restarted or stayed
 * unreachable while the delete was in flight), ENOTCONN.
 */
CHAN_EXPORT int chan_delete(chan_client_t *cl, const char *name);

#ifdef __cplusplus
}
#endif

#endif /* CHAN_H */
