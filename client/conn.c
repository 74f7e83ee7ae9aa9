/*
 * conn.c: a client's one connection to chand. Every coroutine's requests
 * share it: each request gets a fresh id and its coroutine parks while the
 * request sits in the pending table; the read callback files each reply
 * and wakes exactly the coroutine that asked. Received messages are acked
 * as soon as their bytes are in the process, in batches (leased ones wait
 * for the application). When the connection drops it comes back with
 * exponential backoff under the same session UUID, and each request that
 * was out either goes again (it had no side effect; or it is one the broker
 * recognises when repeated, and the broker is the same process and, for a
 * SEND, still knows the session's seqs) or fails ECONNRESET. The broker's
 * instance UUID in each HELLO reply tells a reconnect to the same broker,
 * whose channel handles stay good, from a restarted one.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <uuid/uuid.h>

#include "remote.h"

/* The broker's --max-msg default, until HELLO's reply says otherwise. */
#define MAX_MSG_DEFAULT ((size_t)1 << 20)

/* Acks held at most before they go out in a frame of their own (keeps headers small). */
#define ACK_BATCH_MAX 4096

#define CONN_ASSERT(cond)                                                              \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "%s:%d: libchanclient: %s failed\n", __FILE__, __LINE__, #cond); \
            abort();                                                                   \
        }                                                                              \
    } while (0)

static void conn_lost(struct chan_client *cl, int err);

/* ---- the pending table ----------------------------------------------- */

/* Ids are handed out in sequence, so their low bits spread them evenly. */
static int conn_table_put(struct chan_client *cl, struct conn_req *r)
{
    if (cl->table_count >= cl->table_size) {
        size_t size = cl->table_size ? cl->table_size * 2 : 64;
        struct conn_req **t = calloc(size, sizeof *t);
        if (t != NULL) {
            for (size_t i = 0; i < cl->table_size; i++) {
                struct conn_req *q, *next;
                for (q = cl->table[i]; q != NULL; q = next) {
                    next = q->hnext;
                    q->hnext = t[q->id & (size - 1)];
                    t[q->id & (size - 1)] = q;
                }
            }
            free(cl->table);
            cl->table = t;
            cl->table_size = size;
        } else if (cl->table_size == 0) {
            return -1;
        }
        /* out of memory with a table in place: longer chains, still correct */
    }
    size_t b = r->id & (cl->table_size - 1);
    r->hnext = cl->table[b];
    cl->table[b] = r;
    cl->table_count++;
    return 0;
}

static struct conn_req *conn_table_take(struct chan_client *cl, uint64_t id)
{
    if (cl->table_size == 0)
        return NULL;
    for (struct conn_req **p = &cl->table[id & (cl->table_size - 1)]; *p != NULL; p = &(*p)->hnext) {
        struct conn_req *r = *p;
        if (r->id == id) {
            *p = r->hnext;
            r->hnext = NULL;
            cl->table_count--;
            return r;
        }
    }
    return NULL;
}

/* ---- writing --------------------------------------------------------- */

/*
 * Append frame f with its payloads to the output, carrying every pending
 * ack. Returns 0, or -1 with errno ENOTCONN (no connection) or ENOMEM.
 */
static int conn_write(struct chan_client *cl, Chanwire__ClientFrame *f,
                      const struct wire_payload *pl, size_t npl)
{
    size_t before;
    int rc;

    if (cl->io.fd < 0) {
        errno = ENOTCONN;
        return -1;
    }
    f->acks = cl->acks;
    f->n_acks = cl->nacks;
    before = evbuffer_get_length(cl->io.out);
    rc = wire_write(cl->io.out, &f->base, pl, npl);
    f->acks = NULL;
    f->n_acks = 0;
    if (rc < 0) {
        /*
         * Part of a frame is in the output: the stream is broken, and the
         * part may point at the caller's bytes, which must not be read
         * after this call fails. The connection goes.
         */
        if (evbuffer_get_length(cl->io.out) != before)
            conn_lost(cl, ENOMEM);
        errno = ENOMEM;
        return -1;
    }
    cl->nacks = 0;
    sched_defer(&cl->flush);
    return 0;
}

/* Send the NACKs and then the ACKs still pending; NACKs are requests (a fresh id, reply ignored). */
static void conn_flush(struct chan_client *cl)
{
    if (cl->io.fd < 0)
        return;
    if (cl->nnacks > 0) {
        Chanwire__ClientFrame f = CHANWIRE__CLIENT_FRAME__INIT;
        Chanwire__Tags t = CHANWIRE__TAGS__INIT;
        t.tags = cl->nacks_tags;
        t.n_tags = cl->nnacks;
        f.id = ++cl->next_id;
        f.body_case = CHANWIRE__CLIENT_FRAME__BODY_NACK;
        f.nack = &t;
        if (conn_write(cl, &f, NULL, 0) == 0)
            cl->nnacks = 0;
    }
    if (cl->nacks > 0) {
        Chanwire__ClientFrame f = CHANWIRE__CLIENT_FRAME__INIT;
        conn_write(cl, &f, NULL, 0);
    }
}

/* Grow a tag array to hold one more; 0, or -1 if memory ran out. */
static int conn_tags_room(uint64_t **tags, size_t n, size_t *cap)
{
    if (n < *cap)
        return 0;
    size_t ncap = *cap ? *cap * 2 : 64;
    uint64_t *t = realloc(*tags, ncap * sizeof *t);
    if (t == NULL)
        return -1;
    *tags = t;
    *cap = ncap;
    return 0;
}

/*
 * Settle a delivery: ack (the message is ours) or nack (nobody will take
 * it: back to the head of its channel). Both go out by the end of the
 * current read callback at the latest.
 */
static void conn_settle(struct chan_client *cl, uint64_t tag, int nack)
{
    if (nack) {
        if (conn_tags_room(&cl->nacks_tags, cl->nnacks, &cl->nacks_cap) < 0) {
            conn_flush(cl);
            if (conn_tags_room(&cl->nacks_tags, cl->nnacks, &cl->nacks_cap) < 0)
                return; /* the broker requeues it when the connection ends */
        }
        cl->nacks_tags[cl->nnacks++] = tag;
        return;
    }
    if (cl->nacks >= ACK_BATCH_MAX || conn_tags_room(&cl->acks, cl->nacks, &cl->acks_cap) < 0) {
        conn_flush(cl);
        if (conn_tags_room(&cl->acks, cl->nacks, &cl->acks_cap) < 0)
            return; /* the broker redelivers it after a reconnect: duplicate, not loss */
    }
    cl->acks[cl->nacks++] = tag;
}

/* ---- reading --------------------------------------------------------- */

/* wire_read callback: copy one payload into a block of its own. */
static int conn_take(void *arg, size_t index, const void *data, struct evbuffer *src, size_t len)
{
    struct chan_client *cl = arg;
    struct conn_blk *b;

    (void)index;
    if (cl->nrx == cl->rx_cap) {
        size_t ncap = cl->rx_cap ? cl->rx_cap * 2 : 4;
        struct conn_blk *rx = realloc(cl->rx, ncap * sizeof *rx);
        if (rx == NULL)
            return -1; /* breaks the stream; the broker requeues what we had not acked */
        cl->rx = rx;
        cl->rx_cap = ncap;
    }
    b = &cl->rx[cl->nrx++];
    b->len = len;
    b->data = blk_alloc(len + 1, &b->cls);
    if (b->data == NULL)
        return 0; /* wire_read drains the bytes; the request gets ENOMEM, the message a NACK */
    if (data != NULL)
        memcpy(b->data, data, len);
    else
        evbuffer_remove(src, b->data, len);
    ((char *)b->data)[len] = '\0';
    return 0;
}

static void conn_rx_free(struct chan_client *cl)
{
    for (size_t i = 0; i < cl->nrx; i++)
        blk_free(cl->rx[i].data, cl->rx[i].cls);
    cl->nrx = 0;
}

static void conn_wake_waiters(struct chan_client *cl, int result)
{
    struct conn_waiter *w;

    while ((w = cl->waiters) != NULL) {
        cl->waiters = w->next;
        if (w->next != NULL)
            w->next->prev = NULL;
        w->next = w->prev = NULL;
        w->result = result;
        w->woken = 1;
        sched_wake(w->co);
    }
}

static void conn_hello_reply(struct chan_client *cl, Chanwire__ServerFrame *f)
{
    int status = f->status;

    cl->hello_id = 0;
    if (status == CHANWIRE__STATUS__STATUS_OK) {
        const Chanwire__HelloReply *h =
            f->body_case == CHANWIRE__SERVER_FRAME__BODY_HELLO ? f->hello : NULL;
        int has = h != NULL && h->instance.len == sizeof cl->instance;
        int same = has && cl->have_instance &&
                   memcmp(h->instance.data, cl->instance, sizeof cl->instance) == 0;

        if (h != NULL && h->max_msg > 0)
            cl->max_msg = (size_t)h->max_msg;
        /* A broker that cannot say who it is might have restarted: assume it did. */
        if (!same) {
            cl->inst_gen++;
            cl->have_instance = has;
            if (has)
                memcpy(cl->instance, h->instance.data, sizeof cl->instance);
        }
        if (!same || !h->resumed)
            cl->sess_gen++;
        cl->state = CONN_READY;
        cl->epoch++;
        cl->backoff_ms = CONN_BACKOFF_MIN_MS;
        evtimer_del(cl->retry_ev);
        evtimer_del(cl->budget_ev);
        conn_wake_waiters(cl, 0);
        return;
    }
    if (status == CHANWIRE__STATUS__STATUS_UNAUTHORIZED) {
        /* Retrying cannot help: tell everyone now. */
        conn_lost(cl, EACCES);
        evtimer_del(cl->retry_ev);
        evtimer_del(cl->budget_ev);
        cl->state = CONN_FAILED;
        conn_wake_waiters(cl, EACCES);
        return;
    }
    conn_lost(cl, wire_status_errno(status)); /* BUSY and the like: try again later */
}

/*
 * File one reply: settle the deliveries it carries, then hand it to its
 * request and wake that request's coroutine. Takes f and the rx blocks.
 */
static void conn_reply(struct chan_client *cl, Chanwire__ServerFrame *f)
{
    struct conn_req *r;
    const uint64_t *tags = NULL;
    size_t ntags = 0;
    int nack;

    /* A refused HELLO may be answered on id 0, as a connection-level error. */
    if ((f->id != 0 && f->id == cl->hello_id) ||
        (cl->state == CONN_HELLO && f->status == CHANWIRE__STATUS__STATUS_UNAUTHORIZED)) {
        conn_rx_free(cl);
        conn_hello_reply(cl, f);
        wire_hdr_free(&f->base);
        return;
    }
    r = f->id != 0 ? conn_table_take(cl, f->id) : NULL;
    if (f->body_case == CHANWIRE__SERVER_FRAME__BODY_RECV) {
        tags = f->recv->tags;
        ntags = f->recv->n_tags;
    } else if (f->body_case == CHANWIRE__SERVER_FRAME__BODY_SELECT && cl->nrx > 0) {
        tags = &f->select->tag;
        ntags = 1;
    }

    if (r == NULL) {
        /*
         * A reply to a CANCEL or NACK (nothing to do), or, with f->id 0, the
         * broker's last word before it closes the connection.
         */
        for (size_t i = 0; i < ntags; i++)
            conn_settle(cl, tags[i], 1);
        conn_rx_free(cl);
        int fatal = f->id == 0 && f->status != CHANWIRE__STATUS__STATUS_OK;
        if (fatal)
            fprintf(stderr, "libchanclient: broker closed the connection: %s\n",
                    f->error != NULL && f->error[0] ? f->error : wire_status_text(f->status));
        wire_hdr_free(&f->base);
        if (fatal)
            conn_lost(cl, EPROTO);
        return;
    }

    r->status = f->status;
    r->reply = f;
    r->err = 0;
    r->reply_epoch = cl->epoch;
    r->reply_gen = cl->inst_gen;
    if (ntags != cl->nrx && cl->nrx > 0)
        r->err = EPROTO;
    /* more messages than asked for would be lost to the caller: give them all back */
    if (r->frame->body_case == CHANWIRE__CLIENT_FRAME__BODY_RECV &&
        ntags > (r->frame->recv->max > 1 ? r->frame->recv->max : 1))
        r->err = EPROTO;
    if (cl->nrx == 1) {
        r->blk1 = cl->rx[0];
        r->blk = &r->blk1;
        r->nblk = 1;
    } else if (cl->nrx > 1) {
        r->blk = malloc(cl->nrx * sizeof *r->blk);
        if (r->blk != NULL) {
            memcpy(r->blk, cl->rx, cl->nrx * sizeof *r->blk);
            r->nblk = cl->nrx;
        } else {
            r->err = ENOMEM;
            conn_rx_free(cl);
        }
    }
    for (size_t i = 0; i < r->nblk; i++)
        if (r->blk[i].data == NULL)
            r->err = ENOMEM;
    cl->nrx = 0;

    /* A message nobody will take goes back to the head of its channel. */
    nack = r->gave_up || r->err != 0;
    /* a leased one stays unacked until the application says */
    if (nack || !(r->flags & REQ_LEASE))
        for (size_t i = 0; i < ntags; i++)
            conn_settle(cl, tags[i], nack);
    r->state = REQ_DONE;
    sched_wake(r->co);
}

static void conn_read(struct chan_client *cl)
{
    struct evbuffer *in = cl->io.in;

    cl->last_rx = chan_now();
    for (;;) {
        ProtobufCMessage *hdr = NULL;
        size_t np = 0, need = 0;
        char err[160];
        int rc;

        cl->nrx = 0;
        rc = wire_read(in, WIRE_FRAME_MAX(cl->max_msg), &chanwire__server_frame__descriptor, &hdr,
                       conn_take, cl, &np, &need, err, sizeof err);
        if (rc == 0) {
            cl->io.want = need;
            break;
        }
        if (rc < 0) {
            conn_rx_free(cl);
            fprintf(stderr, "libchanclient: bad frame from broker: %s\n", err);
            conn_lost(cl, EPROTO);
            return;
        }
        conn_reply(cl, (Chanwire__ServerFrame *)hdr);
        /* the reply may have ended this connection (an error frame, a refused HELLO) */
        if (cl->io.in != in)
            return;
    }
    /*
     * Unbuffered senders wait for the acks: they go at the end of this
     * scheduler turn, riding on the woken coroutines' next requests where
     * there are any.
     */
    if (cl->nacks > 0 || cl->nnacks > 0)
        sched_defer(&cl->flush);
}

/* End of a scheduler turn: acks not yet carried by a request, then one write of it all. */
static void conn_turn_end(void *arg)
{
    struct chan_client *cl = arg;

    conn_flush(cl);
    if (stream_flush(&cl->io) < 0)
        conn_lost(cl, cl->io.err ? cl->io.err : ECONNRESET);
}

/* ---- connection life ------------------------------------------------- */

/*
 * Forget the current connection: requests on it learn they were LOST and
 * wake; acks not yet sent are moot (the broker requeues those messages).
 */
static void conn_drop(struct chan_client *cl)
{
    stream_close(&cl->io);
    cl->hello_id = 0;
    cl->nacks = 0;
    cl->nnacks = 0;
    conn_rx_free(cl);
    for (size_t i = 0; i < cl->table_size; i++) {
        struct conn_req *r;
        while ((r = cl->table[i]) != NULL) {
            cl->table[i] = r->hnext;
            r->hnext = NULL;
            r->state = REQ_LOST;
            sched_wake(r->co);
        }
    }
    cl->table_count = 0;
}

static void conn_backoff(struct chan_client *cl)
{
    struct timeval tv = {cl->backoff_ms / 1000, (cl->backoff_ms % 1000) * 1000};

    cl->state = CONN_BACKOFF;
    evtimer_add(cl->retry_ev, &tv);
    cl->backoff_ms *= 2;
    if (cl->backoff_ms > CONN_BACKOFF_MAX_MS)
        cl->backoff_ms = CONN_BACKOFF_MAX_MS;
}

/* An outage begins: try at once, then back off, for at most retry_ms. */
static void conn_outage_begin(struct chan_client *cl)
{
    struct timeval now = {0, 0};
    struct timeval budget = {cl->retry_ms / 1000, (cl->retry_ms % 1000) * 1000};

    cl->down_since = chan_now();
    cl->backoff_ms = CONN_BACKOFF_MIN_MS;
    cl->state = CONN_BACKOFF;
    evtimer_add(cl->budget_ev, &budget);
    evtimer_add(cl->retry_ev, &now);
}

static void conn_lost(struct chan_client *cl, int err)
{
    int was = cl->state;

    conn_drop(cl);
    cl->last_err = err;
    if (was == CONN_READY)
        conn_outage_begin(cl);
    else if (was != CONN_FAILED)
        conn_backoff(cl);
}

static void conn_connected(struct chan_client *cl)
{
    Chanwire__ClientFrame f = CHANWIRE__CLIENT_FRAME__INIT;
    Chanwire__Hello h = CHANWIRE__HELLO__INIT;
    int one = 1;

    /* requests are small and latency-bound: never hold one back */
    setsockopt(cl->io.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    h.version = WIRE_VERSION;
    h.session.data = cl->session;
    h.session.len = sizeof cl->session;
    h.token = cl->token;
    h.client_name = cl->name;
    f.id = cl->hello_id = ++cl->next_id;
    f.body_case = CHANWIRE__CLIENT_FRAME__BODY_HELLO;
    f.hello = &h;
    if (conn_write(cl, &f, NULL, 0) < 0) {
        conn_lost(cl, ENOMEM);
        return;
    }
    cl->state = CONN_HELLO;
}

static void conn_io_cb(struct stream *s, enum stream_event what, void *arg)
{
    struct chan_client *cl = arg;

    (void)s;
    switch (what) {
    case STREAM_READ:
        conn_read(cl);
        break;
    case STREAM_CONNECTED:
        conn_connected(cl);
        break;
    case STREAM_DRAINED:
        break;
    case STREAM_EOF:
        conn_lost(cl, ECONNRESET);
        break;
    case STREAM_ERROR:
        conn_lost(cl, cl->io.err ? cl->io.err : ECONNRESET);
        break;
    }
}

static void conn_attempt(struct chan_client *cl)
{
    cl->state = CONN_CONNECTING;
    /* close-on-exec: a program it runs must not hold the connection (and its leases) open */
    if (stream_connect(&cl->io, sched_base(), (struct sockaddr *)&cl->addr, cl->addrlen,
                       conn_io_cb, cl) < 0)
        conn_lost(cl, errno ? errno : ECONNREFUSED);
}

static void conn_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    conn_attempt(arg);
}

/* The outage lasted retry_ms: give up until someone asks again. */
static void conn_budget_cb(evutil_socket_t fd, short what, void *arg)
{
    struct chan_client *cl = arg;

    (void)fd, (void)what;
    if (cl->state == CONN_READY)
        return;
    conn_drop(cl);
    evtimer_del(cl->retry_ev);
    cl->state = CONN_FAILED;
    conn_wake_waiters(cl, cl->last_err ? cl->last_err : ECONNREFUSED);
}

/*
 * Park until the connection is READY. Returns 0, or an errno value:
 * ETIMEDOUT / ECANCELED (the caller's deadline or cancel), EAGAIN
 * (deadline 0 during a reconnect), EACCES, or the network error that ended
 * the retry budget. A client that had given up starts a new outage.
 */
static int conn_wait_ready(struct chan_client *cl, int64_t deadline, int cancellable)
{
    while (cl->state != CONN_READY) {
        int failed = cl->state == CONN_FAILED;
        if (failed)
            conn_outage_begin(cl);
        if (deadline == 0)
            return failed ? (cl->last_err ? cl->last_err : ENOTCONN) : EAGAIN;

        struct conn_waiter w = {.co = sched_self()};
        w.next = cl->waiters;
        if (w.next != NULL)
            w.next->prev = &w;
        cl->waiters = &w;
        sched_label("connect");
        int rc = sched_park(deadline, cancellable);
        if (w.woken) {
            if (w.result != 0)
                return w.result;
            continue;
        }
        if (w.prev != NULL)
            w.prev->next = w.next;
        else
            cl->waiters = w.next;
        if (w.next != NULL)
            w.next->prev = w.prev;
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* ---- requests -------------------------------------------------------- */

void conn_req_init(struct conn_req *r, Chanwire__ClientFrame *f, const struct wire_payload *pl,
                   size_t npl, int64_t *timeout, int64_t deadline, unsigned flags)
{
    memset(r, 0, sizeof *r);
    r->frame = f;
    r->pl = pl;
    r->npl = npl;
    r->timeout = timeout;
    r->deadline = deadline;
    r->flags = flags;
}

void conn_req_done(struct conn_req *r)
{
    if (r->reply != NULL)
        wire_hdr_free(&r->reply->base);
    r->reply = NULL;
    for (size_t i = 0; i < r->nblk; i++)
        blk_free(r->blk[i].data, r->blk[i].cls);
    if (r->blk != NULL && r->blk != &r->blk1)
        free(r->blk);
    r->blk = NULL;
    r->nblk = 0;
}

/* The broker enforces deadlines; it gets what is left, at least 1 ms when any was asked. */
static int64_t conn_timeout(int64_t deadline)
{
    if (deadline < 0)
        return -1;
    if (deadline == 0)
        return 0;
    int64_t left = deadline - chan_now();
    return left < 1 ? 1 : left;
}

/* Withdraw r at the broker; its reply (CANCELED, or the completion that won) still comes. */
static void conn_cancel(struct chan_client *cl, struct conn_req *r)
{
    Chanwire__ClientFrame f = CHANWIRE__CLIENT_FRAME__INIT;
    Chanwire__Cancel c = CHANWIRE__CANCEL__INIT;

    c.target = r->id;
    f.id = ++cl->next_id;
    f.body_case = CHANWIRE__CLIENT_FRAME__BODY_CANCEL;
    f.cancel = &c;
    conn_write(cl, &f, NULL, 0);
    r->cancel_sent = 1;
    r->cancel_at = chan_now();
}

/* Put r on the current (READY) connection. 0, or -1 with errno ENOMEM. */
static int conn_send(struct chan_client *cl, struct conn_req *r)
{
    /* a repeat for a cancelled caller only asks whether the first one happened */
    if (r->timeout != NULL)
        *r->timeout = r->gave_up ? 0 : conn_timeout(r->deadline);
    if (!r->sent) {
        r->sess_gen = cl->sess_gen;
        if (!(r->flags & REQ_BOUND))
            r->gen = cl->inst_gen;
    }
    r->id = ++cl->next_id;
    r->frame->id = r->id;
    if (conn_table_put(cl, r) < 0) {
        errno = ENOMEM;
        return -1;
    }
    if (conn_write(cl, r->frame, r->pl, r->npl) < 0) {
        int err = errno;
        conn_table_take(cl, r->id);
        errno = err;
        return -1;
    }
    r->state = REQ_SENT;
    r->sent = 1;
    r->cancel_sent = 0;
    return 0;
}

/*
 * Park until r is DONE or LOST. The broker enforces the deadline; if no
 * reply has come a grace period past it, the connection may be fine but
 * the reply late: CANCEL and keep waiting, since exactly one reply is
 * coming. A cancelled caller withdraws the request the same way and then
 * waits without being cancellable, so whatever the reply delivered can be
 * given back. A broker that sends nothing at all (not even the CANCEL's
 * own reply) within another grace period is as good as gone: the
 * connection is dropped, so no call outlives its deadline by more than
 * twice the grace. One that does answer is alive and the request is merely
 * stuck where the broker cannot withdraw it (a send to an unbuffered
 * channel whose leased receiver has not acked yet): the wait goes on, with
 * one more CANCEL per grace period as the probe.
 */
static void conn_await(struct chan_client *cl, struct conn_req *r)
{
    int64_t safety = -1;

    if (r->deadline >= 0) {
        int64_t now = chan_now();
        safety = (r->deadline > now ? r->deadline : now) + CONN_GRACE_MS;
    }
    while (r->state == REQ_SENT) {
        int64_t until = r->cancel_sent ? r->cancel_at + CONN_GRACE_MS : safety;
        int rc = sched_park(until, !r->gave_up);
        if (r->state != REQ_SENT)
            break;
        if (rc == ECANCELED) {
            r->gave_up = 1;
            if (!r->cancel_sent)
                conn_cancel(cl, r);
        } else if (rc == ETIMEDOUT && !r->cancel_sent) {
            conn_cancel(cl, r);
        } else if (rc == ETIMEDOUT && cl->last_rx >= r->cancel_at) {
            conn_cancel(cl, r);
        } else if (rc == ETIMEDOUT) {
            fprintf(stderr, "libchanclient: broker answers nothing for %d ms; reconnecting\n",
                    2 * CONN_GRACE_MS);
            /* out of the table first: the drop wakes everyone else, not the running caller */
            conn_table_take(cl, r->id);
            r->state = REQ_LOST;
            conn_lost(cl, ETIMEDOUT);
        }
    }
}

int conn_call(struct chan_client *cl, struct conn_req *r)
{
    int rc;

    r->co = sched_self();
    if (sched_cancelled(r->co)) {
        errno = ECANCELED;
        return -1;
    }
    for (;;) {
        /* lost while out with a side effect: only the broker can say whether it happened */
        int unsure = r->sent && (r->flags & REQ_RESEND);

        rc = conn_wait_ready(cl, unsure ? -1 : r->deadline, !unsure);
        if (rc != 0) {
            switch (rc) {
            case ECANCELED:
            case ETIMEDOUT:
            case EAGAIN:
            case EACCES:
            case ENOMEM:
                break;
            default:
                rc = r->sent ? ECONNRESET : ENOTCONN;
            }
            errno = rc;
            return -1;
        }
        if (unsure) {
            /*
             * A restarted broker has forgotten what it did, and one that
             * lost the session has forgotten the seqs: a repeat could do
             * it twice.
             */
            if (r->gen != cl->inst_gen ||
                ((r->flags & REQ_SESSION) && r->sess_gen != cl->sess_gen)) {
                errno = ECONNRESET;
                return -1;
            }
            r->resent = 1;
            if (sched_cancelled(r->co))
                r->gave_up = 1;
        } else if ((r->flags & REQ_BOUND) && r->gen != cl->inst_gen) {
            /* a broker that restarted numbers its channels afresh */
            return 1;
        }
        if (conn_send(cl, r) < 0)
            return -1;
        conn_await(cl, r);
        if (r->state == REQ_DONE)
            break;
        /* LOST with the connection: the broker withdrew it, unless it had already happened */
        r->state = REQ_IDLE;
        r->id = 0;
        if (!(r->flags & (REQ_RETRY_SAFE | REQ_RESEND))) {
            errno = ECONNRESET;
            return -1;
        }
        if (r->gave_up && !(r->flags & REQ_RESEND)) {
            errno = ECANCELED;
            return -1;
        }
    }
    if (r->err != 0) {
        errno = r->err;
        return -1;
    }
    /* our own safety CANCEL: for the caller that is a timeout */
    if (r->status == CHANWIRE__STATUS__STATUS_CANCELED && !r->gave_up)
        r->status = CHANWIRE__STATUS__STATUS_TIMEDOUT;
    /* a broker clock a hair ahead of ours must not end a call before its deadline */
    if (r->status == CHANWIRE__STATUS__STATUS_TIMEDOUT && r->deadline > 0)
        while (chan_now() < r->deadline)
            sched_park(r->deadline, 0);
    return 0;
}

/* ---- the client ------------------------------------------------------ */

/* "host:port" or "[v6]:port" into cl->addr. 0, or -1 (EINVAL). */
static int conn_resolve(struct chan_client *cl, const char *addr)
{
    char host[256];
    const char *port, *end;
    size_t hlen;
    struct addrinfo hints, *res = NULL;

    if (addr[0] == '[') {
        end = strchr(addr, ']');
        if (end == NULL || end[1] != ':')
            return -1;
        hlen = (size_t)(end - addr - 1);
        if (hlen == 0 || hlen >= sizeof host)
            return -1;
        memcpy(host, addr + 1, hlen);
        port = end + 2;
    } else {
        end = strrchr(addr, ':');
        if (end == NULL)
            return -1;
        hlen = (size_t)(end - addr);
        if (hlen == 0 || hlen >= sizeof host || memchr(addr, ':', hlen) != NULL)
            return -1;
        memcpy(host, addr, hlen);
        port = end + 1;
    }
    host[hlen] = '\0';
    if (port[0] == '\0' || strspn(port, "0123456789") != strlen(port) || strlen(port) > 5 ||
        atoi(port) < 1 || atoi(port) > 65535)
        return -1;

    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    if (getaddrinfo(host, port, &hints, &res) != 0 || res == NULL)
        return -1;
    memcpy(&cl->addr, res->ai_addr, res->ai_addrlen);
    cl->addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

/*
 * The connection is about to close: write what is queued now (acks above
 * all, or the broker would deliver those messages again), bypassing the
 * loop, then end our side cleanly. Best effort: a full socket buffer or a
 * dead peer loses only acks, which means redelivery, never loss.
 */
static void conn_write_now(struct chan_client *cl)
{
    evutil_socket_t fd = cl->io.fd;
    char sink[1024];

    if (fd < 0 || cl->state != CONN_READY)
        return;
    conn_flush(cl);
    stream_flush(&cl->io);
    shutdown(fd, SHUT_WR);
    /* unread input at close makes the kernel reset the connection, which can drop what we just sent */
    while (recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0)
        ;
}

/* Free everything of cl; no coroutine may still wait on it. */
static void conn_free(struct chan_client *cl)
{
    CONN_ASSERT(cl->table_count == 0 && cl->waiters == NULL);
    if (cl->io.fd >= 0)
        conn_write_now(cl);
    conn_drop(cl);
    /* last: writing the final acks above queues the hook again */
    sched_undefer(&cl->flush);
    if (cl->retry_ev != NULL)
        event_free(cl->retry_ev);
    if (cl->budget_ev != NULL)
        event_free(cl->budget_ev);
    free(cl->table);
    free(cl->acks);
    free(cl->nacks_tags);
    free(cl->rx);
    free(cl->token);
    free(cl->name);
    free(cl);
}

/* Once per process, unless the program said no (chan.h, chan_connect). */
static void conn_tune_malloc(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    const char *v = getenv("CHAN_MALLOC_TUNE");

    if (v == NULL || strcmp(v, "0") != 0)
        pthread_once(&once, stream_tune_malloc);
}

chan_client_t *chan_connect(const char *addrs, const struct chan_opts *opts)
{
    struct event_base *base = sched_base();
    struct chan_client *cl;
    const char *name;
    int rc;

    if (base == NULL)
        return NULL;
    conn_tune_malloc();
    if (addrs == NULL || (opts != NULL && opts->retry_ms < 0)) {
        errno = EINVAL;
        return NULL;
    }
    if (strchr(addrs, ',') != NULL) {
        errno = ENOTSUP; /* sharding over several brokers arrives with the scale-out work */
        return NULL;
    }
    cl = calloc(1, sizeof *cl);
    if (cl == NULL)
        return NULL;
    stream_init(&cl->io);
    cl->flush.fn = conn_turn_end;
    cl->flush.arg = cl;
    if (conn_resolve(cl, addrs) < 0) {
        free(cl);
        errno = EINVAL;
        return NULL;
    }
    name = opts != NULL && opts->client_name != NULL ? opts->client_name : program_invocation_short_name;
    cl->token = strdup(opts != NULL && opts->token != NULL ? opts->token : "");
    cl->name = strdup(name != NULL ? name : "");
    cl->retry_ms = opts != NULL && opts->retry_ms > 0 ? opts->retry_ms : CONN_RETRY_DEFAULT_MS;
    cl->max_msg = MAX_MSG_DEFAULT;
    cl->retry_ev = evtimer_new(base, conn_retry_cb, cl);
    cl->budget_ev = evtimer_new(base, conn_budget_cb, cl);
    if (cl->token == NULL || cl->name == NULL || cl->retry_ev == NULL || cl->budget_ev == NULL) {
        conn_free(cl);
        errno = ENOMEM;
        return NULL;
    }
    uuid_generate(cl->session);

    conn_outage_begin(cl);
    rc = conn_wait_ready(cl, -1, 1);
    if (rc != 0) {
        conn_free(cl);
        errno = rc;
        return NULL;
    }
    return cl;
}

void chan_disconnect(chan_client_t *cl)
{
    if (cl != NULL)
        conn_free(cl);
}
