/*
 * core.h: the one channel state machine (DESIGN.md section 1), shared by
 * chand and by libchanclient's local channels. Pure C: no I/O, no clock, no
 * allocation. The embedding layer owns every struct below; the core only
 * links them into queues and moves messages between them.
 *
 * Contents:
 *   struct core_msg      a message as the core sees it (embedded by layers)
 *   struct core_waiter   one blocked send or recv (or one case of a select)
 *   struct core_select   the group of waiters of one select
 *   struct core_chan     a channel: buffer, sendq, recvq, closed flag
 *   core_send / core_recv / core_select    start an operation
 *   core_cancel / core_abandon             withdraw one (deadline, cancel, disconnect)
 *   core_ack / core_nack                   settle a delivery made with CORE_W_ACK
 *   core_close / core_chan_destroy
 *
 * Status values are errno numbers: 0 done; EPIPE closed (a send on a closed
 * channel, or a recv on a closed and drained one: the layer turns the latter
 * into "returns 0"); EAGAIN would block and block was 0; anything else was
 * passed in by the layer through core_cancel or core_chan_destroy.
 *
 * Re-entrancy: the core calls a waiter's done callback from inside
 * core_send/core_recv/core_close/core_ack/core_nack when that call completes
 * another party. A done callback must not call back into the core; it
 * records the completion (queues a reply, marks a coroutine runnable) and
 * returns. Wake-ups are then drained by the layer's loop, which keeps FIFO
 * order and keeps a producer off a consumer's stack.
 */
#ifndef CHAN_CORE_H
#define CHAN_CORE_H

#include <stddef.h>
#include <stdint.h>

struct core_msg;
struct core_waiter;
struct core_select;
struct core_chan;

/*
 * A message. The layer allocates it inside its own struct (payload
 * alongside) and frees it. Ownership: the sender's waiter until the send
 * completes, then the channel while buffered, then the receiving layer once
 * a recv completes with it (w->msg). A message delivered with CORE_W_ACK
 * stays counted against its channel's capacity until core_ack or core_nack.
 */
struct core_msg {
    struct core_msg *next;       /* buffer link; the holder's to use otherwise */
    size_t len;                  /* payload bytes, for the channel's byte count */
    uint32_t deliveries;         /* times handed to a receiver (1 on first delivery) */
    struct core_waiter *sender;  /* cap 0, delivered unacked: the sender that completes on ack */
};

enum core_op {
    CORE_SEND = 1,  /* w->msg is the message to send */
    CORE_RECV = 2   /* w->msg receives the message */
};

enum core_wstate {
    CORE_W_IDLE = 0,  /* not known to the core (new, or done) */
    CORE_W_QUEUED,    /* in its channel's sendq or recvq */
    CORE_W_INFLIGHT,  /* cap-0 sender whose message a receiver holds unacked */
    CORE_W_STATE_MAX
};

/* waiter flags */
#define CORE_W_ACK 0x1u  /* recv: the message stays unacked until core_ack/core_nack */

/*
 * Completion callback: called once, when an operation that went pending
 * (returned CORE_PENDING) completes; w->status holds the result and, for a
 * recv that got a message, w->msg the message. For a select, it is called
 * on the one case that proceeded, after every other case was withdrawn.
 */
typedef void core_done_fn(struct core_waiter *w);

/*
 * A blocked operation. Owned by the layer (on a coroutine stack, in a
 * request struct); it must stay alive while its state is not IDLE.
 */
struct core_waiter {
    struct core_waiter *next;    /* sendq/recvq links, the core's */
    struct core_waiter *prev;
    struct core_chan *ch;        /* channel operated on; NULL = nil select case */
    struct core_select *sel;     /* select group, or NULL for a plain send/recv */
    int op;                      /* enum core_op */
    int index;                   /* case index within its select */
    int state;                   /* enum core_wstate, the core's */
    int status;                  /* result: 0 or an errno value */
    int cancel_status;           /* INFLIGHT cancelled: status to report if nacked */
    unsigned flags;              /* CORE_W_* */
    struct core_msg *msg;        /* send: the message; recv: set on completion */
    core_done_fn *done;          /* completion callback, see above */
    void *ctx;                   /* the layer's */
};

/* A select: n waiters in an array, each with sel pointing here. */
struct core_select {
    struct core_waiter *cases;   /* the layer's array of n waiters */
    int n;
    int fired;                   /* index of the case that proceeded, -1 while pending */
};

/* A FIFO of waiters. */
struct core_queue {
    struct core_waiter *first;
    struct core_waiter *last;
    size_t n;
};

/*
 * A channel. Embedded in the layer's channel struct; initialised with
 * core_chan_init. Its buffered messages belong to it until received or
 * handed back by core_chan_destroy.
 */
struct core_chan {
    size_t cap;                  /* capacity in messages, 0 = unbuffered */
    size_t count;                /* buffered messages */
    size_t unacked;              /* delivered with CORE_W_ACK, not yet settled */
    size_t bytes;                /* payload bytes of buffered messages */
    struct core_msg *head;       /* buffer FIFO */
    struct core_msg *tail;
    struct core_queue sendq;     /* blocked senders, FIFO */
    struct core_queue recvq;     /* blocked receivers, FIFO */
    int closed;                  /* core_close was called */
    int dead;                    /* core_chan_destroy was called */
    int dead_status;             /* status given to core_chan_destroy: what an
                                    INFLIGHT sender gets if its message is nacked
                                    after the channel died */
};

#define CORE_PENDING    (-1)     /* registered; done will be called */
#define CORE_WOULDBLOCK (-2)     /* core_select: nothing ready and block was 0 */

void core_chan_init(struct core_chan *ch, size_t cap);

/*
 * Start a send of w->msg on ch (w->op, w->ch, w->done, w->ctx set by the
 * caller). Returns the status if the send completed now (0, EPIPE, EAGAIN
 * when !block; w->done is not called), or CORE_PENDING. On any status but 0
 * the message still belongs to the caller (w->msg). An unbuffered send
 * to a CORE_W_ACK receiver completes only when that receiver acks; it
 * returns CORE_PENDING (state INFLIGHT) even when !block, because the
 * message is already in the receiver's hands.
 */
int core_send(struct core_chan *ch, struct core_waiter *w, int block);

/*
 * Start a recv on ch. Returns 0 with w->msg set (ownership moves to the
 * caller), EPIPE (closed and drained), EAGAIN (!block), or CORE_PENDING.
 */
int core_recv(struct core_chan *ch, struct core_waiter *w, int block);

/*
 * Start a select over cases[0..n-1] (op, ch, msg for sends, done, ctx set
 * by the caller; a NULL ch never proceeds). If cases are ready, one chosen
 * uniformly at random proceeds now and its index is returned, its result in
 * cases[i].status (and cases[i].msg for a recv). Otherwise CORE_WOULDBLOCK
 * when !block, or CORE_PENDING: later exactly one case's done is called.
 * A ready send case that an unbuffered CORE_W_ACK receiver took also
 * returns CORE_PENDING (sel->fired is already set, every other case is
 * withdrawn): done is called when the receiver acks, as for core_send.
 * n may be 0 (nothing is registered; only the layer's deadline ends it).
 */
int core_select(struct core_select *sel, struct core_waiter *cases, int n, int block);

/*
 * Withdraw a pending operation (its deadline passed, it was cancelled).
 * QUEUED: w (and, for a select, every case of its group) leaves its queue,
 * done is not called, returns 0; the caller reports status itself.
 * INFLIGHT: too late to withdraw; returns -1, and if the receiver later
 * nacks, done is called with status instead of requeueing (the message was
 * not delivered); if it acks, done is called with 0 (delivered after all).
 * status must then be nonzero. IDLE: returns -1.
 */
int core_cancel(struct core_waiter *w, int status);

/*
 * The owner of w is going away (its connection dropped, its coroutine is
 * being freed): after this call the core holds no reference to w and never
 * calls its done. A QUEUED w is withdrawn (with its select group); an
 * INFLIGHT sender is forgotten, and its message stays with the receiver.
 */
void core_abandon(struct core_waiter *w);

/*
 * Settle a message delivered with CORE_W_ACK. ack: the message is gone for
 * good (the caller frees it); a cap-0 sender waiting on it completes with 0;
 * the freed capacity admits blocked senders. nack: the message goes back to
 * the head of the buffer (deliveries kept), or for cap 0 its sender back to
 * the head of sendq; waiting receivers are then served. To give back several
 * messages in their original order, nack them last-first. A cap-0 sender
 * that was cancelled meanwhile completes with its cancel status instead
 * (message back to it, not delivered); on a closed channel the message goes
 * to the buffer head and the sender completes with 0 (nothing lost).
 * On a destroyed channel nack completes an INFLIGHT sender with its cancel
 * status or else the destroy status (the message is the sender's again) and
 * returns 0; with no sender it returns 1 to tell the caller to free the
 * message. Otherwise it returns 0.
 */
void core_ack(struct core_chan *ch, struct core_msg *m);
int core_nack(struct core_chan *ch, struct core_msg *m);

/*
 * Close ch: returns EPIPE if it was already closed, else 0, after every
 * blocked receiver completed with EPIPE (closed) and every blocked sender
 * with EPIPE (message not delivered, still the sender's).
 */
int core_close(struct core_chan *ch);

/*
 * The channel is being deleted: every queued waiter completes with status,
 * and the buffered messages are handed to msg_free (may be NULL if the
 * buffer is known empty). Messages delivered unacked stay with their
 * receivers; their later core_ack/core_nack calls remain valid.
 */
void core_chan_destroy(struct core_chan *ch, int status,
                       void (*msg_free)(struct core_msg *m, void *arg), void *arg);

/* Seed the per-thread generator that core_select uses to pick a case. */
void core_seed(uint64_t seed);

/*
 * Debugging aid for tests and asserts: walks ch's buffer and queues and
 * returns 0 if links, lengths, byte count and the queue invariants agree,
 * else the source line of the first check that failed. O(length).
 */
int core_chan_check(const struct core_chan *ch);

#endif /* CHAN_CORE_H */
