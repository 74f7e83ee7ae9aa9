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
 * broker handed this message out (1 the first time). Release with
 * chan_msg_free once.
 */
typedef struct chan_msg {
    void *data;
    size_t len;
    uint32_t deliveries;
    /* private fields follow */
    uint32_t priv_flags;
    uint64_t priv_tag;
    void *priv_owner;
} chan_msg_t;

/*
 * A local channel of capacity cap (0 = unbuffered), owned by this thread.
 * ERRORS: ENOMEM.
 */
CHAN_EXPORT chan_t *chan_make(size_t cap);

/*
 * Send len bytes at data. Returns 0 once the message is buffered or, for
 * an unbuffered channel, taken by a receiver. data may be reused at return.
 * ERRORS: EPIPE (closed; not delivered), EAGAIN (deadline 0), ETIMEDOUT,
 * ECANCELED, EMSGSIZE, EINVAL, ESTALE, ECONNRESET, ENOTCONN.
 */
CHAN_EXPORT int chan_send(chan_t *ch, const void *data, size_t len, int64_t deadline);

/*
 * Receive one message into *msg: returns 1 with a message (free it with
 * chan_msg_free), 0 when the channel is closed and drained.
 * ERRORS: EAGAIN, ETIMEDOUT, ECANCELED, ESTALE, ECONNRESET, ENOTCONN, ENOMEM.
 */
CHAN_EXPORT int chan_recv(chan_t *ch, chan_msg_t *msg, int64_t deadline);

/* Release a received message's memory. NULL or an empty msg is a no-op. */
CHAN_EXPORT void chan_msg_free(chan_msg_t *msg);

/*
 * Close ch: blocked and future receivers drain the buffer, then get 0;
 * blocked and future senders get EPIPE.
 * ERRORS: EPIPE (already closed), ESTALE, ECONNRESET, ENOTCONN.
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
 * ERRORS: EAGAIN (deadline 0), ETIMEDOUT, ECANCELED, EINVAL,
 * ENOTSUP (local and remote channels mixed, or two clients), ECONNRESET.
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
 * for sharding, fails with ENOTSUP for now). opts may be NULL.
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

/* Close the connection and free the client; its channel handles must be freed first. */
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
 * buffered messages are dropped, handles to it become stale.
 * ERRORS: EINVAL, ENOENT, ECONNRESET, ENOTCONN.
 */
CHAN_EXPORT int chan_delete(chan_client_t *cl, const char *name);

#ifdef __cplusplus
}
#endif

#endif /* CHAN_H */
