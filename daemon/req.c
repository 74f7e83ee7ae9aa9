/*
 * req.c: requests that block. A request the core could not finish at once
 * becomes a struct req, parked on its connection with a deadline timer.
 * Whatever ends it first wins and withdraws the rest: a partner (the core
 * calls req_done), the deadline or a CANCEL (req_withdraw), the
 * connection's death (req_detach_all), shutdown (req_shutdown_all).
 *
 * Completions are queued, not answered, in the done callback: the core
 * calls done from inside another party's operation, and answering may
 * call back into the core (a RECV_MANY takes more messages, a SEND_MANY
 * sends its next one). req_drain answers them in completion order, from
 * the loop (an event made active by req_done) or at the end of a read
 * callback, in the same loop iteration either way.
 */
#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "daemon.h"

#define REQ_TIMEOUT_MAX_MS ((int64_t)315360000 * 1000)

static struct event_base *req_base;
static struct event *drain_ev;                    /* runs req_drain */
static TAILQ_HEAD(req_queue, req) done_q = TAILQ_HEAD_INITIALIZER(done_q);

static void req_drain_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    req_drain();
}

int req_init(struct event_base *base)
{
    req_base = base;
    drain_ev = event_new(base, -1, 0, req_drain_cb, NULL);
    return drain_ev ? 0 : -1;
}

void req_fini(void)
{
    DAEMON_ASSERT(TAILQ_EMPTY(&done_q));
    if (drain_ev != NULL)
        event_free(drain_ev);
    drain_ev = NULL;
}

struct req *req_new(struct conn *c, uint64_t id, int kind, size_t nextra)
{
    struct req *r = calloc(1, sizeof *r + nextra);

    if (r == NULL)
        return NULL;
    r->conn = c;
    r->id = id;
    r->kind = kind;
    r->w.ctx = r;
    r->w.done = req_done;
    r->msgs = &r->one;
    return r;
}

/* The channel a waiter operates on, or NULL for a nil select case. */
static struct chan *req_chan_of(const struct core_waiter *w)
{
    return w->ch ? CONTAINER_OF(w->ch, struct chan, core) : NULL;
}

void req_free(struct req *r)
{
    struct conn *c = r->conn;

    if (r->parked) {
        map_del(&c->reqs, r->id);
        TAILQ_REMOVE(&c->reqlist, r, clink);
        r->parked = 0;
    }
    if (r->completed) {
        TAILQ_REMOVE(&done_q, r, qlink);
        r->completed = 0;
    }
    mem_leave(r);
    if (r->timer_on) {
        event_del(&r->timer);
        r->timer_on = 0;
    }
    switch (r->kind) {
    case REQ_SEND:
        for (uint32_t i = r->next; i < r->nmsgs; i++)
            msg_free(r->msgs[i]);
        break;
    case REQ_RECV:
        /* Received but never handed on (its connection died first): back to the head. */
        if (r->w.msg != NULL)
            delivery_requeue(r->chan, msg_of(r->w.msg));
        break;
    case REQ_SELECT:
        for (int i = 0; i < r->ncases; i++) {
            struct core_waiter *w = &r->cases[i];
            if (w->msg == NULL)
                continue;
            if (w->op == CORE_RECV)
                delivery_requeue(req_chan_of(w), msg_of(w->msg));
            else if (!(r->taken && i == r->sel.fired))
                msg_free(msg_of(w->msg));
        }
        for (int i = 0; i < r->ncases; i++)
            if (r->cases[i].ch != NULL)
                registry_unref(req_chan_of(&r->cases[i]));
        break;
    default:
        DAEMON_ASSERT(0);
    }
    if (r->chan != NULL)
        registry_unref(r->chan);
    free(r);
}

int req_park(struct req *r)
{
    struct conn *c = r->conn;

    if (c->reqs.n >= broker.opt.max_pending)
        return EBUSY;
    if (map_put(&c->reqs, r->id, r, NULL) < 0)
        return ENOMEM;
    TAILQ_INSERT_TAIL(&c->reqlist, r, clink);
    r->parked = 1;
    return 0;
}

static int64_t req_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void req_timer_add(struct req *r, int64_t us)
{
    struct timeval tv = {(time_t)(us / 1000000), (suseconds_t)(us % 1000000)};

    event_add(&r->timer, &tv);
}

static void req_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct req *r = arg;
    int64_t left = r->ends_us - req_now_us();

    (void)fd, (void)what;
    /* libevent's coarse clock can fire a few ms early: a deadline is never cut short. */
    if (left > 0) {
        req_timer_add(r, left);
        return;
    }
    r->timer_on = 0;
    req_withdraw(r, ETIMEDOUT);
    req_drain();
}

void req_arm(struct req *r)
{
    int64_t ms = r->timeout_ms;

    if (ms <= 0 || r->timer_on)
        return;
    /* ten years is for ever, and keeps the arithmetic from overflowing */
    if (ms > REQ_TIMEOUT_MAX_MS)
        ms = REQ_TIMEOUT_MAX_MS;
    r->ends_us = req_now_us() + ms * 1000;
    event_assign(&r->timer, req_base, -1, 0, req_timeout_cb, r);
    req_timer_add(r, ms * 1000);
    r->timer_on = 1;
}

void req_done(struct core_waiter *w)
{
    struct req *r = w->ctx;

    DAEMON_ASSERT(!r->completed);
    /* Bookkeeping only: who owns the message now. No core call here. */
    if (r->kind == REQ_SEND) {
        r->msgs[r->next] = w->status == 0 ? NULL : msg_of(w->msg);
        /* Now, not at the reply: the connection may die before that. */
        if (w->status == 0 && r->seq != 0 && r->conn->sess != NULL)
            session_complete(r->conn->sess, r->seq + r->next);
    }
    else if (r->kind == REQ_SELECT && w->op == CORE_SEND)
        r->taken = w->status == 0;
    /* The deadline is over: the operation ended, or a SEND_MANY goes on without waiting. */
    if (r->timer_on) {
        event_del(&r->timer);
        r->timer_on = 0;
    }
    r->completed = 1;
    TAILQ_INSERT_TAIL(&done_q, r, qlink);
    /* broker_run drains at the end of the iteration: an active event would cost an epoll_wait */
    if (!broker.own_loop)
        event_active(drain_ev, EV_TIMEOUT, 0);
}

int req_pending(void)
{
    return !TAILQ_EMPTY(&done_q);
}

void req_drain(void)
{
    struct req *r;

    while ((r = TAILQ_FIRST(&done_q)) != NULL) {
        TAILQ_REMOVE(&done_q, r, qlink);
        r->completed = 0;
        op_resume(r);
    }
}

/* Are any of a select's cases in the core (queued, or fired and in flight)? */
static int req_select_live(const struct req *r)
{
    if (r->sel.fired >= 0)
        return 1;
    for (int i = 0; i < r->ncases; i++)
        if (r->cases[i].state != CORE_W_IDLE)
            return 1;
    return 0;
}

int req_withdraw(struct req *r, int err)
{
    /* Completed first: the completion is the answer, the deadline or cancel came too late. */
    if (r->completed)
        return 0;
    if (r->memwait) {
        /* Still outside the core: nothing happened. */
        mem_leave(r);
        op_withdrawn(r, err);
        return 1;
    }
    if (r->kind == REQ_SELECT) {
        /* A select with no live case (none, or all nil) only ever ends here. */
        if (!req_select_live(r) || core_cancel(&r->cases[0], err) == 0) {
            op_withdrawn(r, err);
            return 1;
        }
        return 0;
    }
    if (core_cancel(&r->w, err) == 0) {
        op_withdrawn(r, err);
        return 1;
    }
    /* In a receiver's hands (cap 0): its ack or nack will complete r. */
    return 0;
}

struct req *req_find(struct conn *c, uint64_t id)
{
    struct map_ent *e = map_get(&c->reqs, id);

    return e ? e->val : NULL;
}

/*
 * Take every waiter of r out of the core without completing it. A send in
 * flight (a cap-0 receiver holds its message unacked; the core may have
 * moved it there from sendq without telling us) leaves its message with
 * that receiver, so r gives up its ownership first.
 */
static void req_abandon(struct req *r)
{
    if (r->memwait)
        return;
    if (r->kind == REQ_SELECT) {
        if (r->sel.fired >= 0 && r->cases[r->sel.fired].state == CORE_W_INFLIGHT)
            r->taken = 1;
        if (r->ncases > 0)
            core_abandon(&r->cases[0]);
        return;
    }
    if (r->kind == REQ_SEND && r->w.state == CORE_W_INFLIGHT) {
        r->msgs[r->next] = NULL;
        /*
         * Completed as far as a resend is concerned: whatever the receiver
         * does, the message stays in the channel (ack: delivered; nack:
         * back at the head of the buffer).
         */
        if (r->seq != 0 && r->conn->sess != NULL)
            session_complete(r->conn->sess, r->seq + r->next);
    }
    core_abandon(&r->w);
}

void req_detach_all(struct conn *c)
{
    struct req *r, *next;

    /* Every waiter leaves the core first, so the messages given back below go to others. */
    for (r = TAILQ_FIRST(&c->reqlist); r != NULL; r = next) {
        next = TAILQ_NEXT(r, clink);
        if (r->completed)
            continue;
        req_abandon(r);
        req_free(r);
    }
    /*
     * Completed but not yet answered: newest first, so received messages
     * go back to the head of their channels in their original order. A
     * requeue may complete other connections' requests; they join the
     * queue's tail, behind this walk.
     */
    for (r = TAILQ_LAST(&done_q, req_queue); r != NULL; r = next) {
        next = TAILQ_PREV(r, req_queue, qlink);
        if (r->conn == c)
            req_free(r);
    }
    DAEMON_ASSERT(TAILQ_EMPTY(&c->reqlist));
    map_free(&c->reqs);
}

void req_shutdown_all(struct conn *c)
{
    struct req *r, *next;

    for (r = TAILQ_FIRST(&c->reqlist); r != NULL; r = next) {
        next = TAILQ_NEXT(r, clink);
        if (r->completed)
            continue;
        req_abandon(r);
        conn_status(c, r->id, CHANWIRE__STATUS__STATUS_SHUTDOWN, NULL);
        req_free(r);
    }
}
