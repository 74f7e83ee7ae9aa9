/*
 * internal.h: libchanclient's private table of contents. Nothing here is
 * installed or exported; the public API is chan.h.
 *
 * Layers: coro (stacks, context switch) -> sched (run queue, parking,
 * libevent loop) -> chan (one handle type dispatching to local or remote
 * channels through struct chan_ops) -> local (core/) and remote (wire).
 */
#ifndef CHAN_INTERNAL_H
#define CHAN_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "chan.h"

struct event_base;
struct coro;

/* ---- sched.c: the per-thread scheduler ------------------------------ */

/*
 * The running coroutine. The thread's main is coroutine 1, created on
 * first use of any chan_ call.
 */
struct coro *sched_self(void);

/*
 * Park the running coroutine until sched_wake() names it, its deadline
 * (absolute chan_now() ms, -1 never) passes, or, if cancellable, it is
 * cancelled. Returns 0 (woken), ETIMEDOUT, or ECANCELED. While every
 * coroutine is parked the thread sleeps in the libevent loop; libevent
 * callbacks run on whatever stack is current and must never park.
 * A coroutine already cancelled gets ECANCELED at once when cancellable.
 */
int sched_park(int64_t deadline, int cancellable);

/*
 * Make c runnable again (it returns 0 from sched_park). Safe from libevent
 * callbacks and from core done callbacks. Waking a coroutine that is not
 * parked is a programmer error (asserted).
 */
void sched_wake(struct coro *c);

/* Has c been chan_cancel'ed? */
int sched_cancelled(const struct coro *c);

/* The thread's libevent base (created with the scheduler). */
struct event_base *sched_base(void);

/* ---- chan.c: one handle type, two kinds ------------------------------ */

/*
 * What a channel kind implements. Every member has the contract of the
 * chan_ call of the same name (chan.h), arguments already checked for NULL.
 * select gets only cases whose channels are all of this kind (and, for
 * remote, of one client); NULL-channel cases are passed through.
 */
struct chan_ops {
    int (*send)(chan_t *ch, const void *data, size_t len, int64_t deadline);
    int (*recv)(chan_t *ch, chan_msg_t *msg, int64_t deadline);
    int (*close)(chan_t *ch);
    long (*len)(chan_t *ch);
    long (*cap)(chan_t *ch);
    void (*free)(chan_t *ch);
    int (*select)(struct chan_case *cases, int n, int64_t deadline);
    /* key that cases must share to be selected together (the client for remote) */
    const void *(*select_domain)(chan_t *ch);
};

/* Every channel kind's struct starts with this. */
struct chan {
    const struct chan_ops *ops;
};

/*
 * Received messages: the kind allocates one block holding the payload
 * (NUL-terminated) and sets msg->data, msg->len, msg->deliveries and
 * msg->priv_owner to the block; chan_msg_free frees priv_owner.
 */

/* ---- local.c: local channels on core/ -------------------------------- */
extern const struct chan_ops local_ops;

/* ---- remote.c: channels hosted by chand ------------------------------ */
extern const struct chan_ops remote_ops;

#endif /* CHAN_INTERNAL_H */
