/*
 * remote.h: private to conn.c (the client's one connection to chand) and
 * remote.c (channels hosted by chand, built on that connection). Nothing
 * here is installed.
 *
 * Contents:
 *   struct conn_blk     one received payload, copied out of the socket
 *   struct conn_req     one request of one coroutine, on that coroutine's stack
 *   struct conn_waiter  a coroutine waiting for the connection to be up
 *   struct chan_client  the client: address, options, connection, pending table
 *   conn_call           send a request and wait for its reply
 */
#ifndef CHAN_REMOTE_H
#define CHAN_REMOTE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "internal.h"
#include "stream.h"
#include "wire.h"

struct event;

/*
 * Extra time past a request's deadline before the client CANCELs it
 * itself; and the time a CANCEL may then go unanswered before the client
 * declares a broker that stays connected but answers nothing dead.
 */
#define CONN_GRACE_MS 2000

/* Reconnect backoff: first retry, then doubling up to the cap (ms). */
#define CONN_BACKOFF_MIN_MS 10
#define CONN_BACKOFF_MAX_MS 500

/* chan_opts.retry_ms when zero. */
#define CONN_RETRY_DEFAULT_MS 5000

/* ---- conn.c ---------------------------------------------------------- */

/*
 * A payload copied out of the socket: one malloc'd block of len + 1 bytes,
 * NUL-terminated, the form chan_msg_free releases (priv_owner = data).
 */
struct conn_blk {
    void *data;                   /* NULL if the copy failed for want of memory */
    size_t len;                   /* payload bytes */
    unsigned cls;                 /* blk_alloc's class of data: blk_free(data, cls) releases it */
};

enum conn_req_state {
    REQ_IDLE = 0,   /* not on the wire (new, or its connection was lost) */
    REQ_SENT,       /* in the pending table, its caller parked */
    REQ_DONE,       /* the reply is in reply/blk */
    REQ_LOST,       /* its connection dropped before the reply */
    REQ_STATE_MAX
};

/* conn_req.flags */
#define REQ_RETRY_SAFE 0x1u  /* may be sent again on a new connection (no side effect) */
#define REQ_BOUND 0x2u       /* names channel handles known good on broker instance `gen` only */
#define REQ_RESEND 0x4u      /* has a side effect, but the same broker recognises a repeat
                                (CLOSE, DELETE): sent again after a drop if the broker is the same */
#define REQ_SESSION 0x8u     /* with REQ_RESEND: the repeat is recognised by its seq, so the
                                session must have been resumed too (SEND) */
#define REQ_LEASE 0x10u      /* RECV with a lease: its deliveries are not acked on arrival */

/*
 * One request. Lives on the caller's stack for the whole conn_call; the
 * frame, its body and the payloads it points at are the caller's too.
 * Ownership of the reply: conn_call hands reply and blk to the caller, who
 * takes what it keeps (setting blk[i].data to NULL) and calls conn_req_done,
 * which frees the rest.
 */
struct conn_req {
    struct conn_req *hnext;       /* pending table chain */
    uint64_t id;                  /* id on the current connection, 0 if none */
    struct coro *co;              /* the caller */
    Chanwire__ClientFrame *frame; /* the request (acks are filled in at each send) */
    const struct wire_payload *pl;/* payloads of the frame, npl of them */
    size_t npl;
    int64_t *timeout;             /* body's timeout_ms, refreshed from deadline at each send; or NULL */
    int64_t deadline;             /* absolute chan_now() ms; -1 never, 0 do not block */
    unsigned flags;               /* REQ_* */
    uint64_t gen;                 /* broker instance (cl->inst_gen) its handles were checked on,
                                     or (not REQ_BOUND) it was first sent to */
    uint64_t sess_gen;            /* cl->sess_gen when first sent */
    uint64_t reply_epoch;         /* cl->epoch of the connection the reply came on */
    uint64_t reply_gen;           /* cl->inst_gen of the broker that sent the reply */
    int state;                    /* enum conn_req_state */
    int sent;                     /* was on a connection at least once */
    int resent;                   /* REQ_RESEND: went again after a drop; the first may have done it */
    int gave_up;                  /* the caller was cancelled: any message delivered is NACKed */
    int cancel_sent;              /* a CANCEL for this request went out */
    int64_t cancel_at;            /* chan_now() when it did */
    int status;                   /* the reply's status (Chanwire__Status), once DONE */
    int err;                      /* DONE with a local failure (ENOMEM), else 0 */
    Chanwire__ServerFrame *reply; /* the reply header, owned until conn_req_done */
    struct conn_blk *blk;         /* its payloads, nblk of them */
    size_t nblk;
    struct conn_blk blk1;         /* storage for the common single payload */
};

/* A coroutine waiting for the connection (chan_connect, or a request while it is down). */
struct conn_waiter {
    struct conn_waiter *next;
    struct conn_waiter *prev;
    struct coro *co;
    int result;                   /* set when woken: 0 up, else an errno value */
    int woken;
};

enum conn_state {
    CONN_FAILED = 0,  /* no connection and no attempt under way (budget spent, or refused) */
    CONN_BACKOFF,     /* waiting for the next attempt */
    CONN_CONNECTING,  /* TCP connect in progress */
    CONN_HELLO,       /* HELLO sent, reply awaited */
    CONN_READY,       /* requests may go */
    CONN_STATE_MAX
};

/*
 * The client. Owned by chan_connect's caller until chan_disconnect; the
 * stream, timers, copies of the options and the arrays are its own.
 */
struct chan_client {
    struct sockaddr_storage addr; /* the broker, resolved once at chan_connect */
    socklen_t addrlen;
    char *token;                  /* HELLO token, "" if none (owned) */
    char *name;                   /* HELLO client_name (owned) */
    int64_t retry_ms;             /* reconnect budget per outage */
    unsigned char session[16];    /* session UUID, fixed for the client's life */

    int state;                    /* enum conn_state */
    struct stream io;             /* the connection (io.fd -1 when there is none) */
    struct sched_hook flush;      /* queued when io.out or the acks have bytes to send */
    uint64_t epoch;               /* count of connections that reached READY; delivery tags
                                     are good on the connection of their epoch only */
    unsigned char instance[16];   /* the broker process's UUID from the last HELLO reply */
    int have_instance;            /* that reply had one (an older broker sends none) */
    uint64_t inst_gen;            /* count of broker instances seen: channel handles are good
                                     while it stays the same (a broker without an instance
                                     counts as new at every connection) */
    uint64_t sess_gen;            /* count of session breaks: it stays the same across a
                                     reconnect that resumed the session on the same instance,
                                     so the broker still knows which seqs it completed */
    uint64_t next_seq;            /* last SEND seq handed out (seqs start at 1, never reused) */
    uint64_t next_id;             /* last request id handed out */
    uint64_t hello_id;            /* id of the HELLO on the current connection */
    size_t max_msg;               /* the broker's message limit (bytes) */
    int last_err;                 /* why the last attempt or connection failed (errno) */
    int64_t last_rx;              /* chan_now() when the broker last sent anything */

    int64_t down_since;           /* chan_now() when the current outage began */
    int64_t backoff_ms;           /* delay before the next attempt */
    struct event *retry_ev;       /* next attempt */
    struct event *budget_ev;      /* end of the outage's retry budget */

    struct conn_req **table;      /* pending requests by id, chained */
    size_t table_size;            /* buckets, a power of two */
    size_t table_count;           /* requests in it */

    struct conn_waiter *waiters;  /* coroutines waiting for READY, a list */

    uint64_t *acks;               /* delivery tags to ACK with the next frame */
    size_t nacks, acks_cap;
    uint64_t *nacks_tags;         /* delivery tags to NACK (their takers gave up) */
    size_t nnacks, nacks_cap;

    struct conn_blk *rx;          /* payloads of the frame being taken */
    size_t nrx, rx_cap;
};

/* Prepare r for a request of frame f (payloads pl[0..npl)) due by deadline. */
void conn_req_init(struct conn_req *r, Chanwire__ClientFrame *f, const struct wire_payload *pl,
                   size_t npl, int64_t *timeout, int64_t deadline, unsigned flags);

/*
 * Send r and park until its reply. Returns 1, without sending, when r is
 * REQ_BOUND and the broker instance is no longer r->gen (and r is not a
 * REQ_RESEND one already sent): the caller checks its handles again and
 * builds a new request. Returns 0 with r->status, r->reply and r->blk set;
 * the reply may be any status, and if r->gave_up is set the caller was
 * cancelled meanwhile (delivered messages were already NACKed, a completed
 * SEND stays completed); r->resent says a REQ_RESEND request went again
 * after a drop. Returns -1 with errno ECANCELED (cancelled before anything
 * could happen), ETIMEDOUT (the broker could not be reached before the
 * deadline), ENOTCONN (the broker could not be reached within the retry
 * budget), ECONNRESET (the connection dropped while the request was out,
 * and it was not safe to send again, or was REQ_RESEND but the broker
 * restarted, forgot the session, or did not come back within the retry
 * budget), EACCES, ENOMEM. Either way call conn_req_done after.
 *
 * A REQ_RESEND request lost with its connection waits for the next one
 * regardless of its deadline and of cancels (its outcome is unknown until
 * the broker answers the repeat; the retry budget bounds the wait); the
 * repeat carries what is left of the deadline (at least 1 ms), or 0 if the
 * caller was cancelled meanwhile. A reply TIMEDOUT never comes back before
 * the deadline.
 */
int conn_call(struct chan_client *cl, struct conn_req *r);

/* Free what r still owns of its reply. */
void conn_req_done(struct conn_req *r);

#endif /* CHAN_REMOTE_H */
