/*
 * local.c: channels in one thread's memory, run by the same core state
 * machine as the broker's, so their semantics match by construction. A
 * message is one malloc'd block (the core's header, the payload, a NUL):
 * a send copies the caller's bytes once and a recv hands the block itself
 * to the receiver. Waiters live on the blocked coroutine's stack and their
 * done callbacks only wake it; the coroutine reads its result when it runs.
 *
 * Local channels are not reference-counted: one handle, shared by the
 * thread's coroutines, freed once by chan_free. Freeing a channel that a
 * coroutine is still blocked on is a programmer error and aborts with a
 * message; a closed channel whose waiters were all woken may be freed at
 * once (they do not touch it again).
 */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core.h"
#include "internal.h"

/* Same default limit as the broker's max_msg, so code moves between kinds. */
#define LOCAL_MAX_MSG ((size_t)1 << 20)

/* Cases of a select whose waiters fit on the stack. */
#define LOCAL_SELECT_STACK 8

/* A local channel. Ownership: chan_make's caller, until chan_free. */
struct local_chan {
    struct chan base;          /* ops = &local_ops; first, so chan_t * converts */
    struct core_chan core;     /* buffer, queues and closed flag */
};

/*
 * A message block. Ownership: the sender until core takes it, then the
 * channel, then the receiver's chan_msg_t (priv_owner), freed by
 * chan_msg_free.
 */
struct local_msg {
    struct core_msg m;         /* the core's header; m.len payload bytes */
    char data[];               /* payload, then a NUL */
};

static _Thread_local int local_seeded;

static struct local_msg *local_msg_of(struct core_msg *m)
{
    return (struct local_msg *)((char *)m - offsetof(struct local_msg, m));
}

/* A block holding a copy of len bytes at data, or NULL (ENOMEM). */
static struct local_msg *local_msg_new(const void *data, size_t len)
{
    struct local_msg *lm = malloc(sizeof *lm + len + 1);

    if (!lm) {
        errno = ENOMEM;
        return NULL;
    }
    memset(&lm->m, 0, sizeof lm->m);
    lm->m.len = len;
    if (len)
        memcpy(lm->data, data, len);
    lm->data[len] = '\0';
    return lm;
}

static void local_msg_destroy(struct core_msg *m, void *arg)
{
    (void)arg;
    free(local_msg_of(m));
}

/* Give a received block to msg: ownership moves to the caller. */
static void local_msg_give(chan_msg_t *msg, struct core_msg *m)
{
    struct local_msg *lm = local_msg_of(m);

    msg->data = lm->data;
    msg->len = m->len;
    msg->deliveries = m->deliveries;
    msg->priv_flags = 0;
    msg->priv_tag = 0;
    msg->priv_owner = lm;
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

/*
 * Wait for the pending operation w (a plain waiter, or any case of a
 * select). A timeout or a cancel withdraws it on the spot, before anyone
 * else runs, so it can no longer complete: nothing is lost or duplicated,
 * and a cancelled call has no effect. Returns 0 once w's operation
 * completed (its status in w), or ETIMEDOUT / ECANCELED.
 */
static int local_wait(struct core_waiter *w, int64_t deadline, const char *what)
{
    int r;

    sched_label(what);
    r = sched_park_withdraw(deadline, 1, local_withdraw, w);
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
    return &lc->base;
}

static int local_send(chan_t *ch, const void *data, size_t len, int64_t deadline)
{
    struct local_chan *lc = (struct local_chan *)ch;
    struct core_waiter w;
    struct local_msg *lm;
    struct coro *self;
    int st;

    if (!(self = local_self()))
        return -1;
    if (len > LOCAL_MAX_MSG) {
        errno = EMSGSIZE;
        return -1;
    }
    if (!(lm = local_msg_new(data, len)))
        return -1;
    local_waiter_init(&w, CORE_SEND, self);
    w.msg = &lm->m;
    st = core_send(&lc->core, &w, deadline != 0);
    if (st == CORE_PENDING && (st = local_wait(&w, deadline, "send")) == 0)
        st = w.status;
    if (st == 0)
        return 0;
    free(lm); /* not delivered: still ours */
    errno = st;
    return -1;
}

static int local_recv(chan_t *ch, chan_msg_t *msg, int64_t deadline)
{
    struct local_chan *lc = (struct local_chan *)ch;
    struct core_waiter w;
    struct coro *self;
    int st;

    local_msg_clear(msg);
    if (!(self = local_self()))
        return -1;
    local_waiter_init(&w, CORE_RECV, self);
    st = core_recv(&lc->core, &w, deadline != 0);
    if (st == CORE_PENDING && (st = local_wait(&w, deadline, "recv")) == 0)
        st = w.status;
    if (st == 0) {
        local_msg_give(msg, w.msg);
        return 1;
    }
    if (st == EPIPE)
        return 0; /* closed and drained */
    errno = st;
    return -1;
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

    if (lc->core.sendq.n || lc->core.recvq.n) {
        fprintf(stderr, "chan: chan_free of a local channel with %zu blocked senders "
                        "and %zu blocked receivers\n",
                lc->core.sendq.n, lc->core.recvq.n);
        abort();
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
            free(local_msg_of(ws[i].msg));
    if (ws != small)
        free(ws);
    if (cases[idx].op == CHAN_SEND && st != 0)
        errno = st;
    return idx;

out:
    for (i = 0; i < n; i++)
        if (ws[i].op == CORE_SEND && ws[i].msg)
            free(local_msg_of(ws[i].msg));
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
    .close = local_close,
    .len = local_len,
    .cap = local_cap,
    .free = local_free,
    .select = local_select,
    .select_domain = local_select_domain,
};
