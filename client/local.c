/*
 * local.c: channels in one thread's memory, run by the same core state
 * machine as the broker's, so their semantics match by construction. A
 * message is one block from blk.c's per-thread cache (the core's header,
 * the payload, a NUL): a send copies the caller's bytes once and a recv
 * hands the block itself to the receiver. Waiters live on the blocked
 * coroutine's stack and their done callbacks only wake it; the coroutine
 * reads its result when it runs.
 *
 * Local channels are not reference-counted: one handle, shared by the
 * thread's coroutines, freed once by chan_free. Freeing a channel that a
 * coroutine is still blocked on is a programmer error and aborts with a
 * message; a closed channel whose waiters were all woken may be freed at
 * once (they do not touch it again).
 *
 * Leased receives use the core's acked delivery (CORE_W_ACK): the block
 * stays counted against the channel until chan_ack, and chan_nack or a
 * libevent timer at the lease's end hands it back with core_nack. The
 * receiver reads a copy, so the block itself can go back to the channel
 * while the receiver still holds its chan_msg_t. On an unbuffered channel
 * such a receiver keeps the sender waiting until it acks, so a sender's
 * deadline or cancel may find its message already in a lease holder's
 * hands: it then waits for the ack (delivered) or the nack (not delivered).
 */
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "core.h"
#include "internal.h"

/* Same default limit as the broker's max_msg, so code moves between kinds. */
#define LOCAL_MAX_MSG ((size_t)1 << 20)

/* Cases of a select whose waiters fit on the stack. */
#define LOCAL_SELECT_STACK 8

struct local_lease;

/* A local channel. Ownership: chan_make's caller, until chan_free. */
struct local_chan {
    struct chan base;          /* ops = &local_ops; first, so chan_t * converts */
    struct core_chan core;     /* buffer, queues and closed flag */
    struct local_lease *leases;/* held leases, a list, so chan_free can end them */
};

/*
 * A message block from blk_alloc. Ownership: the sender until core takes
 * it, then the channel, then the receiver's chan_msg_t (priv_owner, with
 * cls in its priv_flags), freed by chan_msg_free; every other free is
 * local_msg_free.
 */
struct local_msg {
    struct core_msg m;         /* the core's header; m.len payload bytes */
    unsigned char cls;         /* blk_alloc's class of this block */
    /* payload, then a NUL; aligned as malloc's blocks, since callers cast it */
    _Alignas(max_align_t) char data[];
};

/*
 * One leased delivery. Ownership: two references, the receiver's chan_msg_t
 * (priv_owner, dropped by chan_msg_free) and the lease while it is held
 * (dropped when it ends: ack, nack, expiry, or chan_free of the channel);
 * freed when both are gone. While held, the lease owns the timer and the
 * delivered block m; the core counts m as unacked.
 */
struct local_lease {
    struct local_lease *next;  /* the channel's held leases */
    struct local_lease *prev;
    struct local_chan *lc;     /* its channel while held, NULL once ended */
    struct core_msg *m;        /* the delivered block, while held */
    struct event *timer;       /* fires at the end of the lease, while held */
    int64_t ends;              /* chan_now() at which the lease ends */
    int refs;                  /* 1 for the receiver's msg, 1 while held */
    int gone;                  /* ended because its channel was freed */
    unsigned char cls;         /* blk_alloc's class of this struct */
    /* the receiver's copy of the payload, then a NUL; aligned as in local_msg */
    _Alignas(max_align_t) char data[];
};

static _Thread_local int local_seeded;

static struct local_msg *local_msg_of(struct core_msg *m)
{
    return (struct local_msg *)((char *)m - offsetof(struct local_msg, m));
}

/* A block holding a copy of len bytes at data, or NULL (ENOMEM). */
static struct local_msg *local_msg_new(const void *data, size_t len)
{
    unsigned cls;
    struct local_msg *lm = blk_alloc(offsetof(struct local_msg, data) + len + 1, &cls);

    if (!lm) {
        errno = ENOMEM;
        return NULL;
    }
    memset(&lm->m, 0, sizeof lm->m);
    lm->cls = (unsigned char)cls;
    lm->m.len = len;
    if (len)
        memcpy(lm->data, data, len);
    lm->data[len] = '\0';
    return lm;
}

static void local_msg_free(struct core_msg *m)
{
    struct local_msg *lm = local_msg_of(m);

    blk_free(lm, lm->cls);
}

static void local_msg_destroy(struct core_msg *m, void *arg)
{
    (void)arg;
    local_msg_free(m);
}

/* Give a received block to msg: ownership moves to the caller. */
static void local_msg_give(chan_msg_t *msg, struct core_msg *m)
{
    struct local_msg *lm = local_msg_of(m);

    msg->data = lm->data;
    msg->len = m->len;
    msg->deliveries = m->deliveries;
    msg->priv_flags = MSG_WITH_CLS(0, lm->cls);
    msg->priv_tag = 0;
    msg->priv_owner = lm;
    msg->priv_peer = NULL;
    msg->priv_epoch = 0;
}

static void local_msg_clear(chan_msg_t *msg)
{
    memset(msg, 0, sizeof *msg);
}

static void local_done(struct core_waiter *w)
{
    sched_wake(w->ctx);
}

/* The scheduler's withdraw hook: the deadline passed or the coroutine was cancelled. */
static void local_withdraw(void *arg, int status)
{
    core_cancel(arg, status);
}

/* Is w's send (or, for a select, its fired send case) held by a leased receiver? */
static int local_inflight(const struct core_waiter *w)
{
    if (w->sel)
        return w->sel->fired >= 0 && w->sel->cases[w->sel->fired].state == CORE_W_INFLIGHT;
    return w->state == CORE_W_INFLIGHT;
}

/*
 * Wait for the pending operation w (a plain waiter, or any case of a
 * select). A timeout or a cancel withdraws it on the spot, before anyone
 * else runs, so it can no longer complete: nothing is lost or duplicated,
 * and a cancelled call has no effect. The one exception is a send that a
 * leased receiver already holds: withdrawing it only marks it (the core
 * records the status), and the lease's end decides, so the wait goes on,
 * not cancellable, until then. Returns 0 once w's operation completed (its
 * status in w, or in the fired case: the timeout or cancel status when the
 * holder gave the message back), or ETIMEDOUT / ECANCELED.
 */
static int local_wait(struct core_waiter *w, int64_t deadline, const char *what)
{
    int r;

    sched_label(what);
    r = sched_park_withdraw(deadline, 1, local_withdraw, w);
    if (r != 0 && local_inflight(w)) {
        sched_label("send held by a lease");
        sched_park(-1, 0);
        r = 0;
    }
    if (r == 0 && w->state != CORE_W_IDLE) {
        fprintf(stderr, "chan: local channel woke a waiter that is still queued\n");
        abort();
    }
    return r;
}

/* The calling coroutine, or NULL with errno set (cancelled, no scheduler). */
static struct coro *local_self(void)
{
    struct coro *self = sched_self();

    if (!self)
        return NULL;
    if (sched_cancelled(self)) {
        errno = ECANCELED;
        return NULL;
    }
    return self;
}

static void local_waiter_init(struct core_waiter *w, int op, struct coro *self)
{
    memset(w, 0, sizeof *w);
    w->op = op;
    w->done = local_done;
    w->ctx = self;
}

chan_t *chan_make(size_t cap)
{
    struct local_chan *lc;

    if (cap > LONG_MAX) {
        errno = EINVAL;
        return NULL;
    }
    if (!sched_self())
        return NULL;
    if (!local_seeded) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        core_seed((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^
                  (uint64_t)(uintptr_t)&local_seeded);
        local_seeded = 1;
    }
    lc = malloc(sizeof *lc);
    if (!lc) {
        errno = ENOMEM;
        return NULL;
    }
    lc->base.ops = &local_ops;
    core_chan_init(&lc->core, cap);
    lc->leases = NULL;
    return &lc->base;
}

/*
 * Send a copy of data[0..len) on lc; deadline 0 never waits. Returns 0 or
 * an errno value (the message was then not delivered).
 */
static int local_send_msg(struct local_chan *lc, struct coro *self, const void *data, size_t len,
                          int64_t deadline)
{
    struct core_waiter w;
    struct local_msg *lm;
    int st;

    if (len > LOCAL_MAX_MSG)
        return EMSGSIZE;
    if (!(lm = local_msg_new(data, len)))
        return ENOMEM;
    local_waiter_init(&w, CORE_SEND, self);
    w.msg = &lm->m;
    st = core_send(&lc->core, &w, deadline != 0);
    if (st == CORE_PENDING && deadline == 0) {
        /*
         * Only a leased receiver of an unbuffered channel makes a send that
         * may not wait pend: it holds the message now. Its nack means the
         * send would have had to wait.
         */
        core_cancel(&w, EAGAIN);
        sched_label("send held by a lease");
        sched_park(-1, 0);
        st = w.status;
    } else if (st == CORE_PENDING && (st = local_wait(&w, deadline, "send")) == 0) {
        st = w.status;
    }
    if (st != 0)
        local_msg_free(&lm->m); /* not delivered: still ours */
    return st;
}

/*
 * Receive one block from lc with waiter flags (CORE_W_ACK for a lease);
 * deadline 0 never waits. Returns 0 with *m the block (the caller's),
 * EPIPE for closed and drained, or an errno value.
 */
static int local_recv_msg(struct local_chan *lc, struct coro *self, unsigned flags, int64_t deadline,
                          struct core_msg **m)
{
    struct core_waiter w;
    int st;

    local_waiter_init(&w, CORE_RECV, self);
    w.flags = flags;
    st = core_recv(&lc->core, &w, deadline != 0);
    if (st == CORE_PENDING && (st = local_wait(&w, deadline, "recv")) == 0)
        st = w.status;
    if (st == 0)
        *m = w.msg;
    return st;
}

static int local_send(chan_t *ch, const void *data, size_t len, int64_t deadline)
{
    struct coro *self;
    int st;

    if (!(self = local_self()))
        return -1;
    st = local_send_msg((struct local_chan *)ch, self, data, len, deadline);
    if (st == 0)
        return 0;
    errno = st;
    return -1;
}

static int local_recv(chan_t *ch, chan_msg_t *msg, int64_t deadline)
{
    struct core_msg *m;
    struct coro *self;
    int st;

    local_msg_clear(msg);
    if (!(self = local_self()))
        return -1;
    st = local_recv_msg((struct local_chan *)ch, self, 0, deadline, &m);
    if (st == 0) {
        local_msg_give(msg, m);
        return 1;
    }
    if (st == EPIPE)
        return 0; /* closed and drained */
    errno = st;
    return -1;
}

/* The first message may wait; the others go while they can go at once, like write(2). */
static int local_send_many(chan_t *ch, const struct iovec *msgs, int n, int64_t deadline)
{
    struct coro *self;
    int i, st = 0;

    if (!(self = local_self()))
        return -1;
    for (i = 0; i < n; i++) {
        st = local_send_msg((struct local_chan *)ch, self, msgs[i].iov_base, msgs[i].iov_len,
                            i == 0 ? deadline : 0);
        if (st != 0)
            break;
    }
    if (i > 0)
        return i;
    errno = st;
    return -1;
}

/* The first message may wait; then only what is there at once, like read(2). */
static int local_recv_many(chan_t *ch, chan_msg_t *msgs, int n, int64_t deadline)
{
    struct local_chan *lc = (struct local_chan *)ch;
    struct core_msg *m;
    struct coro *self;
    int got = 0, st;

    if (!(self = local_self()))
        return -1;
    st = local_recv_msg(lc, self, 0, deadline, &m);
    if (st == EPIPE)
        return 0;
    if (st != 0) {
        errno = st;
        return -1;
    }
    local_msg_give(&msgs[got++], m);
    while (got < n && local_recv_msg(lc, self, 0, 0, &m) == 0)
        local_msg_give(&msgs[got++], m);
    return got;
}

/* ---- leases ------------------------------------------------------------ */

static void local_lease_unref(struct local_lease *l)
{
    if (--l->refs == 0)
        blk_free(l, l->cls);
}

/* Take l off its channel's list and stop its timer: it is no longer held. */
static void local_lease_detach(struct local_lease *l)
{
    struct local_chan *lc = l->lc;

    if (l->prev)
        l->prev->next = l->next;
    else
        lc->leases = l->next;
    if (l->next)
        l->next->prev = l->prev;
    l->next = l->prev = NULL;
    event_free(l->timer);
    l->timer = NULL;
    l->lc = NULL;
    l->m = NULL;
}

/*
 * End a held lease: ack (the block is gone; a waiting unbuffered sender
 * completes) or nack (the block goes back to the head of the channel, or
 * to its waiting sender). May wake coroutines; never parks, so it also
 * serves the expiry timer's libevent callback.
 */
static void local_lease_end(struct local_lease *l, int ack)
{
    struct local_chan *lc = l->lc;
    struct core_msg *m = l->m;

    local_lease_detach(l);
    if (ack) {
        core_ack(&lc->core, m);
        local_msg_free(m);
    } else if (core_nack(&lc->core, m) != 0) {
        /* only a destroyed channel hands the block back, and chan_free ends leases first */
        fprintf(stderr, "chan: nack on a local channel that was freed\n");
        abort();
    }
    local_lease_unref(l);
}

/* Arm l's timer for the rest of its lease. */
static void local_lease_arm(struct local_lease *l, int64_t ms)
{
    struct timeval tv = { .tv_sec = (time_t)(ms / 1000),
                          .tv_usec = (suseconds_t)(ms % 1000 * 1000) };

    evtimer_add(l->timer, &tv);
}

static void local_lease_expire(evutil_socket_t fd, short what, void *arg)
{
    struct local_lease *l = arg;
    int64_t now = chan_now();

    (void)fd;
    (void)what;
    /* libevent's coarse clock may fire a few ms early: a lease is never cut short. */
    if (now < l->ends) {
        local_lease_arm(l, l->ends - now);
        return;
    }
    local_lease_end(l, 0);
}

static int local_recv_lease(chan_t *ch, chan_msg_t *msg, int64_t lease_ms, int64_t deadline)
{
    struct local_chan *lc = (struct local_chan *)ch;
    struct local_lease *l;
    struct core_msg *m;
    struct coro *self;
    unsigned cls;
    int st;

    local_msg_clear(msg);
    if (!(self = local_self()))
        return -1;
    st = local_recv_msg(lc, self, CORE_W_ACK, deadline, &m);
    if (st == EPIPE)
        return 0;
    if (st != 0) {
        errno = st;
        return -1;
    }
    l = blk_alloc(offsetof(struct local_lease, data) + m->len + 1, &cls);
    if (l && !(l->timer = evtimer_new(sched_base(), local_lease_expire, l))) {
        blk_free(l, cls);
        l = NULL;
    }
    if (!l) {
        core_nack(&lc->core, m); /* back to the head, as if never taken */
        errno = ENOMEM;
        return -1;
    }
    l->lc = lc;
    l->m = m;
    l->refs = 2;
    l->gone = 0;
    l->cls = (unsigned char)cls;
    memcpy(l->data, local_msg_of(m)->data, m->len + 1);
    l->prev = NULL;
    l->next = lc->leases;
    if (l->next)
        l->next->prev = l;
    lc->leases = l;
    /* ten years is for ever, and keeps the sum and the timeval from overflowing */
    if (lease_ms > (int64_t)315360000 * 1000)
        lease_ms = (int64_t)315360000 * 1000;
    l->ends = chan_now() + lease_ms;
    local_lease_arm(l, lease_ms);
    msg->data = l->data;
    msg->len = m->len;
    msg->deliveries = m->deliveries;
    msg->priv_flags = MSG_LEASED;
    msg->priv_tag = 0;
    msg->priv_owner = l;
    return 1;
}

int local_lease_settle(chan_msg_t *msg, int ack)
{
    struct local_lease *l = msg->priv_owner;

    if (!l->lc) {
        errno = l->gone ? ESTALE : EINVAL; /* settled, or expired and given back */
        return -1;
    }
    local_lease_end(l, ack);
    return 0;
}

void local_lease_release(chan_msg_t *msg)
{
    local_lease_unref(msg->priv_owner);
}

static int local_close(chan_t *ch)
{
    struct local_chan *lc = (struct local_chan *)ch;

    if (core_close(&lc->core) != 0) {
        errno = EPIPE;
        return -1;
    }
    return 0;
}

static long local_len(chan_t *ch)
{
    return (long)((struct local_chan *)ch)->core.count;
}

static long local_cap(chan_t *ch)
{
    return (long)((struct local_chan *)ch)->core.cap;
}

static void local_free(chan_t *ch)
{
    struct local_chan *lc = (struct local_chan *)ch;

    struct local_lease *l;

    if (lc->core.sendq.n || lc->core.recvq.n) {
        fprintf(stderr, "chan: chan_free of a local channel with %zu blocked senders "
                        "and %zu blocked receivers\n",
                lc->core.sendq.n, lc->core.recvq.n);
        abort();
    }
    for (l = lc->leases; l; l = l->next) {
        if (l->m->sender) {
            fprintf(stderr, "chan: chan_free of a local channel whose sender waits "
                            "for a leased receiver's ack\n");
            abort();
        }
    }
    /* Held leases end with the channel: their messages go with its buffer. */
    while ((l = lc->leases)) {
        struct core_msg *m = l->m;

        local_lease_detach(l);
        local_msg_free(m);
        l->gone = 1;
        local_lease_unref(l);
    }
    core_chan_destroy(&lc->core, EPIPE, local_msg_destroy, NULL);
    free(lc);
}

/*
 * One core_select over every case. Send cases get their message blocks up
 * front (the core may hand any of them over); the ones not sent are freed.
 */
static int local_select(struct chan_case *cases, int n, int64_t deadline)
{
    struct core_waiter small[LOCAL_SELECT_STACK], *ws = small;
    struct core_select sel;
    struct coro *self;
    int idx, err = 0, i, st;

    if (!(self = local_self()))
        return -1;
    if (n > LOCAL_SELECT_STACK && !(ws = malloc((size_t)n * sizeof *ws))) {
        errno = ENOMEM;
        return -1;
    }
    for (i = 0; i < n; i++) {
        local_waiter_init(&ws[i], cases[i].op == CHAN_SEND ? CORE_SEND : CORE_RECV, self);
        if (cases[i].ch)
            ws[i].ch = &((struct local_chan *)cases[i].ch)->core;
    }
    for (i = 0; i < n; i++) {
        struct local_msg *lm;

        if (!ws[i].ch || ws[i].op != CORE_SEND)
            continue;
        if (cases[i].len > LOCAL_MAX_MSG) {
            err = EMSGSIZE;
            goto out;
        }
        if (!(lm = local_msg_new(cases[i].data, cases[i].len))) {
            err = ENOMEM;
            goto out;
        }
        ws[i].msg = &lm->m;
    }
    idx = core_select(&sel, ws, n, deadline != 0);
    if (idx == CORE_WOULDBLOCK) {
        err = EAGAIN;
        goto out;
    }
    if (idx == CORE_PENDING) {
        /* With no case at all nothing is registered: only the deadline or a cancel ends it. */
        if (n == 0) {
            sched_label("select");
            err = sched_park(deadline, 1);
        } else {
            err = local_wait(&ws[0], deadline, "select");
        }
        if (err)
            goto out;
        idx = sel.fired;
        if (idx < 0 || ws[idx].state != CORE_W_IDLE) {
            fprintf(stderr, "chan: local select woke without a fired case\n");
            abort();
        }
    }
    st = ws[idx].status;
    if (cases[idx].op == CHAN_SEND && (st == ETIMEDOUT || st == ECANCELED)) {
        /* a leased receiver gave back the message of a select that had timed out */
        err = st == ETIMEDOUT && deadline == 0 ? EAGAIN : st;
        goto out;
    }
    if (cases[idx].op == CHAN_SEND) {
        if (st == 0) {
            ws[idx].msg = NULL; /* delivered: the channel's now */
            cases[idx].result = 0;
        } else {
            cases[idx].result = -1;
        }
    } else if (st == 0) {
        local_msg_give(cases[idx].msg, ws[idx].msg);
        ws[idx].msg = NULL;
        cases[idx].result = 1;
    } else {
        local_msg_clear(cases[idx].msg);
        cases[idx].result = 0; /* closed and drained */
    }
    for (i = 0; i < n; i++)
        if (ws[i].op == CORE_SEND && ws[i].msg)
            local_msg_free(ws[i].msg);
    if (ws != small)
        free(ws);
    if (cases[idx].op == CHAN_SEND && st != 0)
        errno = st;
    return idx;

out:
    for (i = 0; i < n; i++)
        if (ws[i].op == CORE_SEND && ws[i].msg)
            local_msg_free(ws[i].msg);
    if (ws != small)
        free(ws);
    errno = err;
    return -1;
}

static const void *local_select_domain(chan_t *ch)
{
    (void)ch;
    return &local_ops;
}

const struct chan_ops local_ops = {
    .send = local_send,
    .recv = local_recv,
    .send_many = local_send_many,
    .recv_many = local_recv_many,
    .recv_lease = local_recv_lease,
    .close = local_close,
    .len = local_len,
    .cap = local_cap,
    .free = local_free,
    .select = local_select,
    .select_domain = local_select_domain,
};
