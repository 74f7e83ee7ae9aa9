/*
 * op.c: SEND, RECV and SELECT, the requests that may block. Each first
 * tries the core without blocking on a waiter of its own stack frame (no
 * allocation: the common case of a channel with room or with messages);
 * only when that would block, and the client allows a wait, does it build
 * a struct req, park it and ask the core again with block set. Nothing
 * changes in between, so the second try registers the waiter.
 *
 * One exception: a send that reaches an unbuffered channel always takes
 * the parked path, because the core answers it only when the receiver
 * acks (DESIGN.md section 2), even with timeout 0.
 *
 * Every RECV (and SELECT recv case) uses CORE_W_ACK: a message stays
 * counted against its channel until its connection ACKs the tag it got.
 *
 * Two gates come before the core for a SEND: the session's window (a
 * resent SEND whose seqs completed already is answered without sending),
 * then --max-memory (mem.c), where a send over the limit waits its turn
 * like one on a full channel. A SEND's seq is written down the moment the
 * core takes its message: op_sent here, req_done and req_abandon for the
 * parked ones.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "daemon.h"

#define ST(x) CHANWIRE__STATUS__STATUS_##x

/* Reply scratch; single-threaded and never re-entered while a reply is built. */
static uint64_t s_tags[OP_RECV_MAX];
static uint32_t s_deliv[OP_RECV_MAX];
static struct wire_payload s_pl[OP_RECV_MAX];
static struct msg *s_msgs[OP_RECV_MAX];
static struct core_waiter s_cases[OP_SELECT_MAX];
static struct chan *s_chans[OP_SELECT_MAX];

/* The done callback of stack waiters: the core never calls it when block is 0. */
static void op_fast_done(struct core_waiter *w)
{
    (void)w;
    daemon_assert_fail("a non-blocking waiter went pending", __FILE__, __LINE__);
}

static void op_error(struct conn *c, uint64_t id, int err)
{
    conn_status(c, id, wire_errno_status(err), NULL);
}

/* req_park refused: the per-connection bound, or memory. */
static void op_park_failed(struct conn *c, uint64_t id, int err)
{
    if (err == EBUSY) {
        char text[96];
        snprintf(text, sizeof text, "more than %zu blocked requests on this connection",
                 broker.opt.max_pending);
        conn_status(c, id, ST(BUSY), text);
        return;
    }
    conn_status(c, id, ST(NOMEM), "out of memory parking the request");
}

/* A message of c's SEND with this seq is the channel's now. */
static void op_sent(struct conn *c, uint64_t seq)
{
    if (seq != 0 && c->sess != NULL)
        session_complete(c->sess, seq);
}

/* The channel behind a handle, or a STALE reply and NULL. */
static struct chan *op_chan(struct conn *c, uint64_t id, uint64_t handle)
{
    struct chan *ch = registry_by_handle(handle);
    char text[80];

    if (ch == NULL) {
        snprintf(text, sizeof text, "unknown or deleted channel handle %" PRIu64, handle);
        conn_status(c, id, ST(STALE), text);
    }
    return ch;
}

/* Payload problems found while the frame was taken answer the request, not the stream. */
static int op_payloads_ok(struct conn *c, uint64_t id)
{
    char text[80];

    if (c->pl_oversize) {
        snprintf(text, sizeof text, "message over the limit of %zu bytes", broker.opt.max_msg);
        conn_status(c, id, ST(MSGSIZE), text);
        return 0;
    }
    if (c->pl_nomem) {
        conn_status(c, id, ST(NOMEM), "out of memory storing the message");
        return 0;
    }
    return 1;
}

/* ---- SEND ------------------------------------------------------------- */

static void op_reply_send(struct conn *c, uint64_t id, uint32_t count)
{
    Chanwire__ServerFrame sf = CHANWIRE__SERVER_FRAME__INIT;
    Chanwire__SendReply sr = CHANWIRE__SEND_REPLY__INIT;

    sr.count = count;
    sf.id = id;
    sf.body_case = CHANWIRE__SERVER_FRAME__BODY_SEND;
    sf.send = &sr;
    conn_reply(c, &sf, NULL, 0);
}

/* Answer a SEND request and free it. */
static void op_send_finish(struct req *r, int err)
{
    if (r->count > 0)
        op_reply_send(r->conn, r->id, r->count);
    else
        op_error(r->conn, r->id, err);
    req_free(r);
}

/*
 * Send r's messages from r->next on, as consecutive SENDs would: the first
 * may wait (if the client allows), later ones never do, like write(2).
 */
static void op_send_step(struct req *r)
{
    int rc = 0;

    while (r->next < r->nmsgs) {
        int block = r->count == 0 && r->timeout_ms != 0;

        if (r->chan->deleted) {
            rc = ENOENT;
            break;
        }
        r->w = (struct core_waiter){
            .op = CORE_SEND,
            .msg = &r->msgs[r->next]->core,
            .done = req_done,
            .ctx = r,
        };
        rc = core_send(&r->chan->core, &r->w, block);
        if (rc == 0) {
            op_sent(r->conn, r->seq ? r->seq + r->next : 0);
            r->msgs[r->next++] = NULL;
            r->count++;
            continue;
        }
        if (rc != CORE_PENDING)
            break;
        /* Queued or in flight, msgs[next] stays ours on paper; see req_abandon. */
        if (!block) {
            /* In flight though we may not wait: a nack then means "would block". */
            core_cancel(&r->w, EAGAIN);
        } else {
            req_arm(r);
        }
        return;
    }
    op_send_finish(r, rc);
}

void op_send(struct conn *c, Chanwire__ClientFrame *f)
{
    const Chanwire__Send *s = f->send;
    size_t n = c->npl, done = 0;
    uint64_t bytes = 0;
    struct chan *ch;
    struct req *r;
    int rc, wait_mem;

    if (!op_payloads_ok(c, f->id))
        return;
    if (n == 0) {
        conn_status(c, f->id, ST(INVALID), "SEND carries no message");
        return;
    }
    if (s->seq != 0 && c->sess != NULL) {
        /* Only a seq an earlier connection carried can be a resend (seqs only grow). */
        if (s->seq <= c->resume_hi)
            done = session_done_prefix(c->sess, s->seq, n);
        session_seen(c->sess, s->seq, n);
        if (done == n) {
            log_msg(LL_DEBUG, "conn %" PRIu64 ": SEND seq %" PRIu64 "+%zu done already",
                    c->serial, s->seq, n);
            op_reply_send(c, f->id, (uint32_t)n);
            return;
        }
    }
    /* After the window: a send that completed stays OK even if its channel went since. */
    if ((ch = op_chan(c, f->id, s->chan)) == NULL)
        return;
    for (size_t i = done; i < n; i++)
        bytes += c->pl[i]->core.len;
    wait_mem = !mem_admit_now(bytes);
    if (wait_mem && (s->timeout_ms == 0 || done > 0)) {
        /* Like a full channel: no wait allowed, or the rest of a SEND_MANY that went in part. */
        if (done > 0)
            op_reply_send(c, f->id, (uint32_t)done);
        else
            conn_status(c, f->id, ST(AGAIN), "over --max-memory");
        return;
    }

    if (ch->core.cap > 0 && !wait_mem) {
        struct core_waiter w = {.op = CORE_SEND, .done = op_fast_done};
        uint32_t count = (uint32_t)done;

        rc = 0;
        for (size_t i = done; i < n; i++) {
            w.msg = &c->pl[i]->core;
            rc = core_send(&ch->core, &w, 0);
            if (rc != 0)
                break;
            c->pl[i] = NULL;
            op_sent(c, s->seq ? s->seq + i : 0);
            count++;
        }
        DAEMON_ASSERT(rc != CORE_PENDING);
        if (count > 0) {
            op_reply_send(c, f->id, count);
            return;
        }
        if (rc != EAGAIN || s->timeout_ms == 0) {
            op_error(c, f->id, rc);
            return;
        }
    }

    r = req_new(c, f->id, REQ_SEND, n > 1 ? n * sizeof(struct msg *) : 0);
    if (r == NULL || (rc = req_park(r)) != 0) {
        if (r != NULL)
            req_free(r);
        op_park_failed(c, f->id, r == NULL ? ENOMEM : rc);
        return;
    }
    if (n > 1)
        r->msgs = (struct msg **)(void *)(r + 1);
    for (size_t i = 0; i < n; i++) {
        /* Slots before done stay NULL: a previous connection sent those. */
        r->msgs[i] = i < done ? NULL : c->pl[i];
        c->pl[i] = i < done ? c->pl[i] : NULL;
    }
    r->nmsgs = (uint32_t)n;
    r->next = (uint32_t)done;
    r->count = (uint32_t)done;
    r->seq = s->seq;
    r->timeout_ms = s->timeout_ms;
    r->chan = ch;
    registry_ref(ch);
    if (wait_mem) {
        req_arm(r);
        mem_wait(r, bytes);
        return;
    }
    op_send_step(r);
}

/* ---- RECV ------------------------------------------------------------- */

/*
 * Take up to max messages from ch without blocking into out[n..], after n
 * already taken holding bytes. Past the first, only buffered messages are
 * taken, and only while the reply's payloads stay within --max-msg, so a
 * RECV_MANY reply always fits the frame limit a client reads with.
 * Returns the new count; *rcp is the status of the last core_recv.
 */
static size_t op_take(struct chan *ch, size_t max, struct msg **out, size_t n,
                      uint64_t bytes, int *rcp)
{
    struct core_waiter w = {.op = CORE_RECV, .flags = CORE_W_ACK, .done = op_fast_done};
    int rc = 0;

    while (n < max && !ch->deleted) {
        if (n > 0 && (ch->core.count == 0 ||
                      bytes + ch->core.head->len > broker.opt.max_msg))
            break;
        rc = core_recv(&ch->core, &w, 0);
        if (rc != 0)
            break;
        out[n] = msg_of(w.msg);
        bytes += out[n]->core.len;
        n++;
    }
    DAEMON_ASSERT(rc != CORE_PENDING);
    *rcp = rc;
    return n;
}

/*
 * Tag msgs[0..n) (received from ch) as c's deliveries, leased for lease_ms
 * if > 0, and send them in one reply.
 */
static void op_reply_recv(struct conn *c, uint64_t id, struct chan *ch, struct msg **msgs, size_t n,
                          int64_t lease_ms)
{
    Chanwire__ServerFrame sf = CHANWIRE__SERVER_FRAME__INIT;
    Chanwire__RecvReply rr = CHANWIRE__RECV_REPLY__INIT;

    for (size_t i = 0; i < n; i++) {
        uint64_t tag = delivery_add(&c->dl, ch, msgs[i], lease_ms);
        if (tag == 0) {
            /* Out of memory: what could not be recorded goes back, newest first. */
            for (size_t j = n; j-- > i;)
                delivery_requeue(ch, msgs[j]);
            n = i;
            break;
        }
        s_tags[i] = tag;
        s_deliv[i] = msgs[i]->core.deliveries;
        msg_payload(msgs[i], &s_pl[i]);
    }
    if (n == 0) {
        conn_status(c, id, ST(NOMEM), "out of memory recording the delivery");
        return;
    }
    rr.n_tags = n;
    rr.tags = s_tags;
    rr.n_deliveries = n;
    rr.deliveries = s_deliv;
    sf.id = id;
    sf.body_case = CHANWIRE__SERVER_FRAME__BODY_RECV;
    sf.recv = &rr;
    conn_reply(c, &sf, s_pl, n);
}

static void op_recv_finish(struct conn *c, uint64_t id, int err)
{
    /* EPIPE on a recv is "closed and drained", the client's 0 return. */
    op_error(c, id, err);
}

void op_recv(struct conn *c, Chanwire__ClientFrame *f)
{
    const Chanwire__Recv *q = f->recv;
    size_t max = q->max <= 1 ? 1 : q->max > OP_RECV_MAX ? OP_RECV_MAX : q->max;
    struct chan *ch;
    struct req *r;
    size_t n;
    int rc;

    if ((ch = op_chan(c, f->id, q->chan)) == NULL)
        return;
    n = op_take(ch, max, s_msgs, 0, 0, &rc);
    if (n > 0) {
        op_reply_recv(c, f->id, ch, s_msgs, n, q->lease_ms);
        return;
    }
    if (rc != EAGAIN || q->timeout_ms == 0) {
        op_recv_finish(c, f->id, rc);
        return;
    }

    r = req_new(c, f->id, REQ_RECV, 0);
    if (r == NULL || (rc = req_park(r)) != 0) {
        if (r != NULL)
            req_free(r);
        op_park_failed(c, f->id, r == NULL ? ENOMEM : rc);
        return;
    }
    r->chan = ch;
    registry_ref(ch);
    r->max = (uint32_t)max;
    r->lease_ms = q->lease_ms;
    r->timeout_ms = q->timeout_ms;
    r->w.op = CORE_RECV;
    r->w.flags = CORE_W_ACK;
    rc = core_recv(&ch->core, &r->w, 1);
    DAEMON_ASSERT(rc == CORE_PENDING);
    req_arm(r);
}

static void op_recv_resume(struct req *r)
{
    struct msg *m;
    size_t n;
    int rc;

    if (r->w.status != 0) {
        op_recv_finish(r->conn, r->id, r->w.status);
        req_free(r);
        return;
    }
    m = msg_of(r->w.msg);
    r->w.msg = NULL;
    s_msgs[0] = m;
    n = op_take(r->chan, r->max, s_msgs, 1, m->core.len, &rc);
    op_reply_recv(r->conn, r->id, r->chan, s_msgs, n, r->lease_ms);
    req_free(r);
}

/* ---- SELECT ----------------------------------------------------------- */

static void op_reply_select(struct conn *c, uint64_t id, struct core_waiter *cases, int idx);

/* Register a parked select's cases (r->ncases built, r parked) and answer what is ready. */
static void op_select_go(struct req *r)
{
    struct conn *c = r->conn;
    int rc;

    /* After a wait for memory, a channel may have been deleted meanwhile, as for a parked select */
    for (int i = 0; i < r->ncases; i++) {
        if (r->cases[i].ch != NULL && CONTAINER_OF(r->cases[i].ch, struct chan, core)->deleted) {
            op_error(c, r->id, ENOENT);
            req_free(r);
            return;
        }
    }
    rc = core_select(&r->sel, r->cases, r->ncases, r->timeout_ms != 0);

    if (rc >= 0) {
        r->taken = r->cases[rc].op == CORE_SEND && r->cases[rc].status == 0;
        op_reply_select(c, r->id, r->cases, rc);
        req_free(r);
        return;
    }
    if (rc == CORE_WOULDBLOCK) {
        op_error(c, r->id, EAGAIN);
        req_free(r);
        return;
    }
    if (r->sel.fired >= 0 && r->timeout_ms == 0) {
        /* A send case is in a cap-0 receiver's hands; a nack then means "would block". */
        core_cancel(&r->cases[0], EAGAIN);
    }
    req_arm(r);
}

/*
 * Answer a select whose case idx proceeded (cases[idx].status). A recv
 * case's message is tagged and handed on (its slot cleared); the caller
 * settles the ownership of send messages.
 */
static void op_reply_select(struct conn *c, uint64_t id, struct core_waiter *cases, int idx)
{
    Chanwire__ServerFrame sf = CHANWIRE__SERVER_FRAME__INIT;
    Chanwire__SelectReply sr = CHANWIRE__SELECT_REPLY__INIT;
    struct core_waiter *w = &cases[idx];
    struct wire_payload pl = {0};
    size_t npl = 0;

    if (w->status != 0 && w->status != EPIPE) {
        /* Deleted channel, or a nacked in-flight send that was cancelled meanwhile. */
        op_error(c, id, w->status);
        return;
    }
    sr.index = (uint32_t)idx;
    sr.result = w->status == 0 ? ST(OK) : ST(CLOSED);
    if (w->op == CORE_RECV && w->status == 0) {
        struct chan *ch = CONTAINER_OF(w->ch, struct chan, core);
        struct msg *m = msg_of(w->msg);
        uint64_t tag = delivery_add(&c->dl, ch, m, 0);

        w->msg = NULL;
        if (tag == 0) {
            delivery_requeue(ch, m);
            conn_status(c, id, ST(NOMEM), "out of memory recording the delivery");
            return;
        }
        sr.tag = tag;
        sr.deliveries = m->core.deliveries;
        msg_payload(m, &pl);
        npl = 1;
    }
    sf.id = id;
    sf.body_case = CHANWIRE__SERVER_FRAME__BODY_SELECT;
    sf.select = &sr;
    conn_reply(c, &sf, &pl, npl);
}

void op_select(struct conn *c, Chanwire__ClientFrame *f)
{
    const Chanwire__Select *s = f->select;
    size_t n = s->n_cases, nsend = 0, k;
    int cap0_send = 0, wait_mem = 0;
    uint64_t bytes = 0;
    struct core_select sel;
    struct req *r;
    int rc;

    if (n > OP_SELECT_MAX) {
        conn_status(c, f->id, ST(INVALID), "too many select cases");
        return;
    }
    if (!op_payloads_ok(c, f->id))
        return;
    for (size_t i = 0; i < n; i++)
        nsend += s->cases[i]->send != 0;
    if (nsend != c->npl) {
        char text[96];
        snprintf(text, sizeof text, "SELECT has %zu send cases but %zu messages", nsend, c->npl);
        conn_status(c, f->id, ST(INVALID), text);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        s_chans[i] = NULL;
        if (s->cases[i]->chan != 0 && (s_chans[i] = op_chan(c, f->id, s->cases[i]->chan)) == NULL)
            return;
        if (s_chans[i] != NULL && s->cases[i]->send && s_chans[i]->core.cap == 0)
            cap0_send = 1;
    }
    if (nsend > 0) {
        /* Send cases pass the memory gate as a whole select, before any case is tried. */
        for (size_t i = 0; i < nsend; i++)
            bytes += c->pl[i]->core.len;
        wait_mem = !mem_admit_now(bytes);
        if (wait_mem && s->timeout_ms == 0) {
            conn_status(c, f->id, ST(AGAIN), "over --max-memory");
            return;
        }
    }

    if (!cap0_send && !wait_mem) {
        for (size_t i = 0, k2 = 0; i < n; i++) {
            int send = s->cases[i]->send != 0;
            s_cases[i] = (struct core_waiter){
                .op = send ? CORE_SEND : CORE_RECV,
                .flags = send ? 0 : CORE_W_ACK,
                .ch = s_chans[i] ? &s_chans[i]->core : NULL,
                .msg = send ? &c->pl[k2++]->core : NULL,
                .done = op_fast_done,
            };
        }
        rc = core_select(&sel, s_cases, (int)n, 0);
        DAEMON_ASSERT(rc != CORE_PENDING);
        if (rc >= 0) {
            if (s_cases[rc].op == CORE_SEND && s_cases[rc].status == 0) {
                /* That message is the channel's now: find its payload slot. */
                k = 0;
                for (int i = 0; i < rc; i++)
                    k += s_cases[i].op == CORE_SEND;
                c->pl[k] = NULL;
            }
            op_reply_select(c, f->id, s_cases, rc);
            return;
        }
        if (s->timeout_ms == 0) {
            op_error(c, f->id, EAGAIN);
            return;
        }
    }

    r = req_new(c, f->id, REQ_SELECT, n * sizeof(struct core_waiter));
    if (r == NULL || (rc = req_park(r)) != 0) {
        if (r != NULL)
            req_free(r);
        op_park_failed(c, f->id, r == NULL ? ENOMEM : rc);
        return;
    }
    r->cases = (struct core_waiter *)(void *)(r + 1);
    r->ncases = (int)n;
    r->timeout_ms = s->timeout_ms;
    k = 0;
    for (size_t i = 0; i < n; i++) {
        int send = s->cases[i]->send != 0;
        r->cases[i] = (struct core_waiter){
            .op = send ? CORE_SEND : CORE_RECV,
            .flags = send ? 0 : CORE_W_ACK,
            .ch = s_chans[i] ? &s_chans[i]->core : NULL,
            .done = req_done,
            .ctx = r,
        };
        if (send) {
            r->cases[i].msg = &c->pl[k]->core;
            c->pl[k++] = NULL;
        }
        if (s_chans[i] != NULL)
            registry_ref(s_chans[i]);
    }
    if (wait_mem) {
        req_arm(r);
        mem_wait(r, bytes);
        return;
    }
    op_select_go(r);
}

static void op_select_resume(struct req *r)
{
    op_reply_select(r->conn, r->id, r->cases, r->sel.fired);
    req_free(r);
}

/* ---- the completion queue's entry points ------------------------------ */

void op_resume(struct req *r)
{
    switch (r->kind) {
    case REQ_SEND:
        if (r->w.status == 0) {
            /* req_done already cleared the slot: the message is the channel's. */
            r->next++;
            r->count++;
            op_send_step(r);
        } else {
            op_send_finish(r, r->w.status);
        }
        break;
    case REQ_RECV:
        op_recv_resume(r);
        break;
    case REQ_SELECT:
        op_select_resume(r);
        break;
    default:
        DAEMON_ASSERT(0);
    }
}

void op_admitted(struct req *r)
{
    if (r->kind == REQ_SEND)
        op_send_step(r);
    else
        op_select_go(r);
}

void op_withdrawn(struct req *r, int err)
{
    if (r->kind == REQ_SEND)
        op_send_finish(r, err);
    else {
        op_error(r->conn, r->id, err);
        req_free(r);
    }
}
