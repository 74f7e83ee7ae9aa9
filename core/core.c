/*
 * core.c: Go's channel semantics as one state machine over caller-owned
 * structs (DESIGN.md section 1, contract in core.h). No I/O, no clock, no
 * allocation: every call links or unlinks waiters and messages and calls
 * done callbacks for the parties it completed.
 *
 * Two shapes keep the code small. An "arriving" party (the waiter passed to
 * core_send/core_recv, or the chosen case of core_select) is answered by the
 * return value; a party that went pending (QUEUED or INFLIGHT) is answered
 * through waiter_finish, which withdraws its select siblings first and then
 * calls done. And chan_pump restores the channel's resting invariants
 * (nobody waits while a partner or buffer room is available) after any
 * change that can create a partner: a take from the buffer, an ack, a nack.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "core.h"

/* Always on, whatever NDEBUG says: a broken caller must stop loudly. */
#define CORE_ASSERT(x) \
    ((x) ? (void)0 : core_assert_fail(#x, __FILE__, __LINE__))

static _Noreturn void core_assert_fail(const char *what, const char *file, int line)
{
    fprintf(stderr, "%s:%d: core assertion failed: %s\n", file, line, what);
    abort();
}

/* splitmix64 state; any value (0 too) gives a full-period stream. */
static _Thread_local uint64_t core_rng = 0x853c49e6748fea9bULL;

void core_seed(uint64_t seed)
{
    core_rng = seed;
}

static uint64_t core_random(void)
{
    uint64_t z = (core_rng += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* ---- waiter queues --------------------------------------------------- */

static void queue_push_tail(struct core_queue *q, struct core_waiter *w)
{
    w->next = NULL;
    w->prev = q->last;
    if (q->last)
        q->last->next = w;
    else
        q->first = w;
    q->last = w;
    q->n++;
}

static void queue_push_head(struct core_queue *q, struct core_waiter *w)
{
    w->prev = NULL;
    w->next = q->first;
    if (q->first)
        q->first->prev = w;
    else
        q->last = w;
    q->first = w;
    q->n++;
}

static void queue_unlink(struct core_queue *q, struct core_waiter *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        q->first = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        q->last = w->prev;
    w->next = w->prev = NULL;
    q->n--;
}

/*
 * The first waiter of q that may pair with a party of select sel (a select
 * never meets itself). Only a select with a send and a recv case on one
 * channel leaves its own cases at the head of both queues, so this skips
 * at most that select's cases.
 */
static struct core_waiter *queue_first_other(const struct core_queue *q,
                                             const struct core_select *sel)
{
    struct core_waiter *w = q->first;

    while (w && sel && w->sel == sel)
        w = w->next;
    return w;
}

static struct core_queue *waiter_queue(struct core_waiter *w)
{
    return w->op == CORE_SEND ? &w->ch->sendq : &w->ch->recvq;
}

static void waiter_withdraw(struct core_waiter *w)
{
    if (w->state != CORE_W_QUEUED)
        return;
    queue_unlink(waiter_queue(w), w);
    w->state = CORE_W_IDLE;
}

/*
 * w is the case of its select that proceeds: every sibling leaves its queue
 * now, before anyone is told, so no second case can ever fire.
 */
static void select_settle(struct core_waiter *w)
{
    struct core_select *sel = w->sel;

    if (!sel)
        return;
    for (int i = 0; i < sel->n; i++)
        if (&sel->cases[i] != w)
            waiter_withdraw(&sel->cases[i]);
    sel->fired = w->index;
}

/* Complete a party that went pending (QUEUED or INFLIGHT). */
static void waiter_finish(struct core_waiter *w, int status)
{
    waiter_withdraw(w);
    select_settle(w);
    w->state = CORE_W_IDLE;
    w->status = status;
    w->done(w);
}

/* ---- the buffer ------------------------------------------------------ */

static int chan_room(const struct core_chan *ch)
{
    return ch->count + ch->unacked < ch->cap;
}

static void buf_push_tail(struct core_chan *ch, struct core_msg *m)
{
    m->next = NULL;
    m->sender = NULL;
    if (ch->tail)
        ch->tail->next = m;
    else
        ch->head = m;
    ch->tail = m;
    ch->count++;
    ch->bytes += m->len;
}

static void buf_push_head(struct core_chan *ch, struct core_msg *m)
{
    m->sender = NULL;
    m->next = ch->head;
    ch->head = m;
    if (!ch->tail)
        ch->tail = m;
    ch->count++;
    ch->bytes += m->len;
}

static struct core_msg *buf_pop_head(struct core_chan *ch)
{
    struct core_msg *m = ch->head;

    ch->head = m->next;
    if (!ch->head)
        ch->tail = NULL;
    m->next = NULL;
    ch->count--;
    ch->bytes -= m->len;
    return m;
}

/* ---- moving messages --------------------------------------------------- */

/* m becomes r's; with CORE_W_ACK it keeps its place against the capacity. */
static void msg_deliver(struct core_chan *ch, struct core_waiter *r, struct core_msg *m)
{
    r->msg = m;
    m->deliveries++;
    if (r->flags & CORE_W_ACK)
        ch->unacked++;
}

/* A cap-0 sender whose message an ACK receiver holds: it waits for the ack. */
static void sender_inflight(struct core_waiter *s)
{
    waiter_withdraw(s);
    select_settle(s);
    s->state = CORE_W_INFLIGHT;
    s->msg->sender = s;
}

/* Does handing a sender's message to r make the sender wait for r's ack? */
static int rendezvous_acked(const struct core_chan *ch, const struct core_waiter *r)
{
    return ch->cap == 0 && (r->flags & CORE_W_ACK);
}

/*
 * Pair waiting receivers with buffered messages or waiting senders, then
 * move waiting senders into freed buffer room, until neither applies.
 * Each turn completes at least one party, so the work is bounded by what
 * the triggering event made possible.
 */
static void chan_pump(struct core_chan *ch)
{
    for (;;) {
        struct core_waiter *r = ch->recvq.first;
        struct core_waiter *s;

        if (r && ch->count) {
            msg_deliver(ch, r, buf_pop_head(ch));
            waiter_finish(r, 0);
            continue;
        }
        if (r && (s = queue_first_other(&ch->sendq, r->sel))) {
            msg_deliver(ch, r, s->msg);
            if (rendezvous_acked(ch, r))
                sender_inflight(s);
            else
                waiter_finish(s, 0);
            waiter_finish(r, 0);
            continue;
        }
        if (ch->sendq.first && chan_room(ch)) {
            s = ch->sendq.first;
            buf_push_tail(ch, s->msg);
            waiter_finish(s, 0);
            continue;
        }
        return;
    }
}

/* The send rules for an arriving w (plain, or a select's chosen case). */
static int send_start(struct core_chan *ch, struct core_waiter *w, int block)
{
    struct core_waiter *r;

    if (ch->closed)
        return EPIPE;
    r = queue_first_other(&ch->recvq, w->sel);
    if (r) {
        int acked = rendezvous_acked(ch, r);

        msg_deliver(ch, r, w->msg);
        if (acked)
            sender_inflight(w);
        waiter_finish(r, 0);
        return acked ? CORE_PENDING : 0;
    }
    if (chan_room(ch)) {
        buf_push_tail(ch, w->msg);
        return 0;
    }
    if (!block)
        return EAGAIN;
    w->state = CORE_W_QUEUED;
    queue_push_tail(&ch->sendq, w);
    return CORE_PENDING;
}

/* The recv rules for an arriving w. */
static int recv_start(struct core_chan *ch, struct core_waiter *w, int block)
{
    struct core_waiter *s;

    if (ch->count) {
        msg_deliver(ch, w, buf_pop_head(ch));
        chan_pump(ch);
        return 0;
    }
    s = queue_first_other(&ch->sendq, w->sel);
    if (s) {
        msg_deliver(ch, w, s->msg);
        if (rendezvous_acked(ch, w))
            sender_inflight(s);
        else
            waiter_finish(s, 0);
        return 0;
    }
    if (ch->closed)
        return EPIPE;
    if (!block)
        return EAGAIN;
    w->state = CORE_W_QUEUED;
    queue_push_tail(&ch->recvq, w);
    return CORE_PENDING;
}

/* Would this case proceed now? Mirrors send_start/recv_start exactly. */
static int case_ready(const struct core_waiter *w)
{
    const struct core_chan *ch = w->ch;

    if (!ch)
        return 0;
    if (w->op == CORE_SEND)
        return ch->closed || queue_first_other(&ch->recvq, w->sel) || chan_room(ch);
    return ch->count || queue_first_other(&ch->sendq, w->sel) || ch->closed;
}

/* Reset the core's fields of w for a new operation on ch (NULL: nil case). */
static void waiter_begin(struct core_waiter *w, struct core_chan *ch)
{
    CORE_ASSERT(w->state == CORE_W_IDLE);
    CORE_ASSERT(w->op == CORE_SEND || w->op == CORE_RECV);
    w->ch = ch;
    w->next = w->prev = NULL;
    w->status = 0;
    w->cancel_status = 0;
    if (w->op == CORE_RECV)
        w->msg = NULL;
    if (!ch)
        return;
    CORE_ASSERT(!ch->dead);
    CORE_ASSERT(w->done != NULL);
    CORE_ASSERT(w->op == CORE_RECV || w->msg != NULL);
}

/* ---- the API ----------------------------------------------------------- */

void core_chan_init(struct core_chan *ch, size_t cap)
{
    *ch = (struct core_chan){.cap = cap};
}

int core_send(struct core_chan *ch, struct core_waiter *w, int block)
{
    CORE_ASSERT(ch != NULL && w->op == CORE_SEND);
    waiter_begin(w, ch);
    w->sel = NULL;
    w->index = 0;
    w->status = send_start(ch, w, block);
    return w->status;
}

int core_recv(struct core_chan *ch, struct core_waiter *w, int block)
{
    CORE_ASSERT(ch != NULL && w->op == CORE_RECV);
    waiter_begin(w, ch);
    w->sel = NULL;
    w->index = 0;
    w->status = recv_start(ch, w, block);
    return w->status;
}

int core_select(struct core_select *sel, struct core_waiter *cases, int n, int block)
{
    int ready = 0;
    int pick;
    int st;

    CORE_ASSERT(n >= 0 && (n == 0 || cases != NULL));
    sel->cases = cases;
    sel->n = n;
    sel->fired = -1;
    for (int i = 0; i < n; i++) {
        waiter_begin(&cases[i], cases[i].ch);
        cases[i].sel = sel;
        cases[i].index = i;
    }
    for (int i = 0; i < n; i++)
        ready += case_ready(&cases[i]);
    if (ready == 0) {
        if (!block)
            return CORE_WOULDBLOCK;
        /*
         * Queue from a random case onward: when several cases wait in one
         * channel's queue, the party that arrives there takes whichever is
         * first, and that must not always be the lowest index.
         */
        int start = n > 1 ? (int)(core_random() % (uint64_t)n) : 0;
        for (int k = 0; k < n; k++) {
            int i = (start + k) % n;
            if (!cases[i].ch)
                continue;
            cases[i].state = CORE_W_QUEUED;
            queue_push_tail(waiter_queue(&cases[i]), &cases[i]);
        }
        return CORE_PENDING;
    }

    /* k-th ready case, k uniform in [0, ready): bias is ready / 2^64. */
    pick = (int)(core_random() % (uint64_t)ready);
    for (int i = 0; i < n; i++) {
        if (!case_ready(&cases[i]))
            continue;
        if (pick-- == 0) {
            pick = i;
            break;
        }
    }
    sel->fired = pick;
    if (cases[pick].op == CORE_SEND)
        st = send_start(cases[pick].ch, &cases[pick], 0);
    else
        st = recv_start(cases[pick].ch, &cases[pick], 0);
    CORE_ASSERT(st != EAGAIN);
    if (st == CORE_PENDING)
        return CORE_PENDING;
    cases[pick].status = st;
    return pick;
}

/*
 * Withdraw every queued case of sel. A case back in sendq after a nack is
 * the select's only live case; withdrawing it undoes its firing too.
 */
static int select_cancel(struct core_select *sel, int status)
{
    int withdrew = 0;

    for (int i = 0; i < sel->n; i++) {
        struct core_waiter *c = &sel->cases[i];

        if (c->state == CORE_W_QUEUED) {
            waiter_withdraw(c);
            c->status = status;
            withdrew = 1;
        }
    }
    if (withdrew) {
        sel->fired = -1;
        return 0;
    }
    if (sel->fired >= 0 && sel->cases[sel->fired].state == CORE_W_INFLIGHT) {
        CORE_ASSERT(status != 0);
        sel->cases[sel->fired].cancel_status = status;
    }
    return -1;
}

int core_cancel(struct core_waiter *w, int status)
{
    if (w->sel)
        return select_cancel(w->sel, status);
    switch (w->state) {
    case CORE_W_QUEUED:
        waiter_withdraw(w);
        w->status = status;
        return 0;
    case CORE_W_INFLIGHT:
        CORE_ASSERT(status != 0);
        w->cancel_status = status;
        return -1;
    default:
        return -1;
    }
}

static void waiter_forget(struct core_waiter *w)
{
    if (w->state == CORE_W_QUEUED) {
        waiter_withdraw(w);
    } else if (w->state == CORE_W_INFLIGHT) {
        /* The receiver keeps the message; a nack requeues it ownerless. */
        w->msg->sender = NULL;
        w->state = CORE_W_IDLE;
    }
}

void core_abandon(struct core_waiter *w)
{
    if (!w->sel) {
        waiter_forget(w);
        return;
    }
    for (int i = 0; i < w->sel->n; i++)
        waiter_forget(&w->sel->cases[i]);
}

void core_ack(struct core_chan *ch, struct core_msg *m)
{
    struct core_waiter *s = m->sender;

    CORE_ASSERT(ch->unacked > 0);
    ch->unacked--;
    if (s) {
        CORE_ASSERT(s->state == CORE_W_INFLIGHT && s->msg == m);
        m->sender = NULL;
        waiter_finish(s, 0);
    }
    chan_pump(ch);
}

int core_nack(struct core_chan *ch, struct core_msg *m)
{
    struct core_waiter *s = m->sender;

    CORE_ASSERT(ch->unacked > 0);
    ch->unacked--;
    m->next = NULL;
    if (s) {
        CORE_ASSERT(s->state == CORE_W_INFLIGHT && s->msg == m);
        m->sender = NULL;
        if (s->cancel_status) {
            waiter_finish(s, s->cancel_status);
        } else if (ch->dead) {
            waiter_finish(s, ch->dead_status);
        } else if (ch->closed) {
            /* Closing refuses new sends, not one already handed over. */
            buf_push_head(ch, m);
            waiter_finish(s, 0);
        } else {
            s->state = CORE_W_QUEUED;
            queue_push_head(&ch->sendq, s);
        }
        chan_pump(ch);
        return 0;
    }
    if (ch->dead)
        return 1;
    buf_push_head(ch, m);
    chan_pump(ch);
    return 0;
}

int core_close(struct core_chan *ch)
{
    CORE_ASSERT(!ch->dead);
    if (ch->closed)
        return EPIPE;
    ch->closed = 1;
    while (ch->recvq.first)
        waiter_finish(ch->recvq.first, EPIPE);
    while (ch->sendq.first)
        waiter_finish(ch->sendq.first, EPIPE);
    return 0;
}

void core_chan_destroy(struct core_chan *ch, int status,
                       void (*msg_free)(struct core_msg *m, void *arg), void *arg)
{
    CORE_ASSERT(!ch->dead);
    ch->dead = 1;
    ch->dead_status = status;
    while (ch->recvq.first)
        waiter_finish(ch->recvq.first, status);
    while (ch->sendq.first)
        waiter_finish(ch->sendq.first, status);
    CORE_ASSERT(msg_free != NULL || ch->count == 0);
    while (ch->count)
        msg_free(buf_pop_head(ch), arg);
}

/* ---- the invariant checker ------------------------------------------- */

static int queue_check(const struct core_chan *ch, const struct core_queue *q, int op)
{
    const struct core_waiter *prev = NULL;
    const struct core_waiter *w = q->first;
    size_t n = 0;

    if ((q->first == NULL) != (q->last == NULL) || (q->first == NULL) != (q->n == 0))
        return __LINE__;
    for (; w; prev = w, w = w->next) {
        if (++n > q->n)
            return __LINE__;
        if (w->prev != prev || w->ch != ch || w->op != op || w->state != CORE_W_QUEUED)
            return __LINE__;
        if (w->sel && (w->index < 0 || w->index >= w->sel->n ||
                       &w->sel->cases[w->index] != w ||
                       (w->sel->fired != -1 && w->sel->fired != w->index)))
            return __LINE__;
    }
    if (n != q->n || prev != q->last)
        return __LINE__;
    return 0;
}

/* Is every waiter of q a case of sel? */
static int queue_all_of(const struct core_queue *q, const struct core_select *sel)
{
    for (const struct core_waiter *w = q->first; w; w = w->next)
        if (w->sel != sel)
            return 0;
    return 1;
}

int core_chan_check(const struct core_chan *ch)
{
    const struct core_msg *m;
    const struct core_msg *last = NULL;
    size_t n = 0;
    size_t bytes = 0;
    int rc;

    for (m = ch->head; m; last = m, m = m->next) {
        if (++n > ch->count || m->sender != NULL)
            return __LINE__;
        bytes += m->len;
    }
    if (n != ch->count || bytes != ch->bytes || last != ch->tail)
        return __LINE__;
    if ((rc = queue_check(ch, &ch->sendq, CORE_SEND)) != 0)
        return rc;
    if ((rc = queue_check(ch, &ch->recvq, CORE_RECV)) != 0)
        return rc;
    /* Nobody waits once the channel is closed or dead. */
    if ((ch->closed || ch->dead) && (ch->sendq.n || ch->recvq.n))
        return __LINE__;
    if (ch->dead && ch->count)
        return __LINE__;
    /* A receiver waits only on an empty buffer. */
    if (ch->recvq.n && ch->count)
        return __LINE__;
    /* A sender waits only when the buffer has no room. */
    if (ch->sendq.n && chan_room(ch))
        return __LINE__;
    /* Senders and receivers wait together only as one select's own cases. */
    if (ch->sendq.n && ch->recvq.n) {
        const struct core_select *sel = ch->sendq.first->sel;

        if (!sel || !queue_all_of(&ch->sendq, sel) || !queue_all_of(&ch->recvq, sel))
            return __LINE__;
    }
    return 0;
}
