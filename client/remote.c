/*
 * remote.c: channels hosted by chand. Each operation is one request on the
 * client's connection (conn.c); the broker runs the channel semantics and
 * enforces the deadlines, and this file turns replies into chan.h results,
 * splits batches into frames the broker accepts, settles leased messages,
 * says which requests are safe to repeat after a reconnect (no side effect,
 * or one the same broker recognises when repeated), and re-opens a handle
 * that a restarted broker no longer knows.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "remote.h"

/*
 * A remote channel handle. Owned by chan_open's caller (chan_free); the
 * client must outlive it.
 */
struct remote_chan {
    struct chan base;             /* ops = &remote_ops */
    struct chan_client *cl;       /* whose connection carries its requests */
    uint64_t handle;              /* the broker's number for the channel */
    uint64_t gen;                 /* cl->inst_gen of the broker instance that gave handle */
    long cap;                     /* capacity, as the broker reported it */
    unsigned char inc[16];        /* incarnation UUID */
    char name[WIRE_NAME_MAX + 1]; /* NUL-terminated */
};

#define OK CHANWIRE__STATUS__STATUS_OK
#define CLOSED CHANWIRE__STATUS__STATUS_CLOSED
#define NOENT CHANWIRE__STATUS__STATUS_NOENT

/* Small selects build their request on the stack; larger ones allocate. */
#define SELECT_STACK_CASES 16

/* A SEND_MANY frame's payloads that fit on the stack. */
#define SEND_STACK_PAYLOADS 128

/* Bytes a payload adds to a frame beyond its own: field key (2) and length (at most 5). */
#define PAYLOAD_FIELD_BYTES 7

/* errno from a status; a reply that came after a cancel reports the cancel. */
static int remote_fail(int status, int gave_up)
{
    errno = gave_up ? ECANCELED : wire_status_errno(status);
    return -1;
}

/* conn_req_done without disturbing errno. */
static void remote_done(struct conn_req *r)
{
    int err = errno;
    conn_req_done(r);
    errno = err;
}

static int remote_name_ok(const char *name)
{
    return name != NULL && wire_name_ok(name, strnlen(name, WIRE_NAME_MAX + 1));
}

/* OPEN name: fills handle, cap, incarnation and the instance gen. 0, or -1 with errno. */
static int remote_open_req(struct chan_client *cl, const char *name, long cap, int64_t deadline,
                           uint64_t *handle, long *rcap, unsigned char inc[16], uint64_t *gen)
{
    Chanwire__ClientFrame f = CHANWIRE__CLIENT_FRAME__INIT;
    Chanwire__Open o = CHANWIRE__OPEN__INIT;
    struct conn_req r;
    int rc = -1;

    o.name = (char *)name;
    o.cap = cap;
    f.body_case = CHANWIRE__CLIENT_FRAME__BODY_OPEN;
    f.open = &o;
    conn_req_init(&r, &f, NULL, 0, NULL, deadline, REQ_RETRY_SAFE);
    sched_label("remote open");
    if (conn_call(cl, &r) < 0)
        goto out;
    if (r.gave_up || r.status != OK) {
        remote_fail(r.status, r.gave_up);
        goto out;
    }
    if (r.reply->body_case != CHANWIRE__SERVER_FRAME__BODY_OPEN) {
        errno = EPROTO;
        goto out;
    }
    *handle = r.reply->open->chan;
    *rcap = (long)r.reply->open->cap;
    *gen = r.reply_gen;
    memset(inc, 0, 16);
    memcpy(inc, r.reply->open->incarnation.data,
           r.reply->open->incarnation.len < 16 ? r.reply->open->incarnation.len : 16);
    rc = 0;
out:
    remote_done(&r);
    return rc;
}

/*
 * Make ch's handle good on the current broker. A handle is the broker's
 * number for a channel; it stays good across reconnects to the same broker
 * process (a deleted channel then answers ESTALE), but a restarted broker
 * (another instance UUID in HELLO's reply) has lost its channels and
 * numbers afresh, so the first operation after that OPENs the channel again
 * by name and capacity, re-creating it if nobody has yet. A channel now
 * under that name with another capacity is not ours: ESTALE.
 */
static int remote_fresh(struct remote_chan *ch, int64_t deadline)
{
    uint64_t handle, gen;
    long cap;
    unsigned char inc[16];

    if (ch->gen == ch->cl->inst_gen)
        return 0;
    if (remote_open_req(ch->cl, ch->name, ch->cap, deadline, &handle, &cap, inc, &gen) < 0) {
        if (errno == EEXIST)
            errno = ESTALE;
        return -1;
    }
    ch->handle = handle;
    ch->cap = cap;
    memcpy(ch->inc, inc, sizeof inc);
    ch->gen = gen;
    return 0;
}

/* Prepare a request that names ch's handle, checked good on the current broker. */
static void remote_req_init(struct conn_req *r, struct remote_chan *ch, Chanwire__ClientFrame *f,
                            const struct wire_payload *pl, size_t npl, int64_t *timeout,
                            int64_t deadline, unsigned flags)
{
    conn_req_init(r, f, pl, npl, timeout, deadline, flags | REQ_BOUND);
    r->gen = ch->gen;
}

/* Hand a received payload to msg; msg takes the block. */
static void remote_msg_fill(chan_msg_t *msg, struct conn_blk *b, uint64_t tag, uint32_t deliveries)
{
    msg->data = b->data;
    msg->len = b->len;
    msg->deliveries = deliveries ? deliveries : 1;
    msg->priv_flags = MSG_WITH_CLS(MSG_REMOTE, b->cls);
    msg->priv_tag = tag;
    msg->priv_owner = b->data;
    msg->priv_peer = NULL;
    msg->priv_epoch = 0;
    b->data = NULL;
}

/* ---- remote_ops ------------------------------------------------------ */

/*
 * One SEND of iov[0..n) (SEND_MANY when n > 1) under seqs seq..seq+n-1.
 * Sets *count to how many went. A SEND lost with its connection goes again
 * with the same seqs, and the broker drops the repeat of what it had
 * completed, so nothing is delivered twice; if the broker restarted or
 * forgot the session meanwhile the outcome is unknown: ECONNRESET. A send
 * that completed before a cancel reached the broker was delivered and
 * counts. 0, or -1 with errno.
 */
static int remote_send_req(struct remote_chan *ch, const struct iovec *iov, size_t n, uint64_t seq,
                           int64_t deadline, uint32_t *count)
{
    struct wire_payload plbuf[SEND_STACK_PAYLOADS], *pl = plbuf;
    int ret = -1;

    if (n > SEND_STACK_PAYLOADS && (pl = malloc(n * sizeof *pl)) == NULL) {
        errno = ENOMEM;
        return -1;
    }
    /* by reference: the request, and so the caller's bytes, outlives the frame in the output */
    for (size_t i = 0; i < n; i++)
        pl[i] = (struct wire_payload){iov[i].iov_base, iov[i].iov_len, NULL,
                                      iov[i].iov_len >= WIRE_REF_MIN};
    for (;;) {
        Chanwire__ClientFrame f = CHANWIRE__CLIENT_FRAME__INIT;
        Chanwire__Send s = CHANWIRE__SEND__INIT;
        struct conn_req r;
        int rc;

        if (remote_fresh(ch, deadline) < 0)
            break;
        s.chan = ch->handle;
        s.seq = seq;
        f.body_case = CHANWIRE__CLIENT_FRAME__BODY_SEND;
        f.send = &s;
        remote_req_init(&r, ch, &f, pl, n, &s.timeout_ms, deadline, REQ_RESEND | REQ_SESSION);
        sched_label("remote send");
        rc = conn_call(ch->cl, &r);
        if (rc == 1) {
            conn_req_done(&r);
            continue;
        }
        if (rc == 0 && r.status == OK) {
            uint32_t c = r.reply->body_case == CHANWIRE__SERVER_FRAME__BODY_SEND ? r.reply->send->count : 1;
            if (c < 1 || c > n) {
                errno = EPROTO;
            } else {
                *count = c;
                ret = 0;
            }
        } else if (rc == 0) {
            remote_fail(r.status, r.gave_up);
        }
        remote_done(&r);
        break;
    }
    if (pl != plbuf) {
        int err = errno;
        free(pl);
        errno = err;
    }
    return ret;
}

static int remote_send(chan_t *c, const void *data, size_t len, int64_t deadline)
{
    struct remote_chan *ch = (struct remote_chan *)c;
    struct iovec iov = {(void *)data, len};
    uint32_t count;

    if (len > ch->cl->max_msg) {
        errno = EMSGSIZE;
        return -1;
    }
    return remote_send_req(ch, &iov, 1, ++ch->cl->next_seq, deadline, &count);
}

/*
 * Frames of at most the broker's frame limit: max_msg payload bytes plus
 * 64 KiB of header, which piggybacked acks may fill a good part of. So a
 * frame carries messages while their bytes stay within max_msg (one message
 * at least); the first message over the limit ends the batch.
 */
static int remote_send_many(chan_t *c, const struct iovec *msgs, int n, int64_t deadline)
{
    struct remote_chan *ch = (struct remote_chan *)c;
    size_t max = ch->cl->max_msg;
    int sent = 0;

    if (msgs[0].iov_len > max) {
        errno = EMSGSIZE;
        return -1;
    }
    while (sent < n) {
        size_t k = 0, bytes = 0;
        uint32_t count;
        int first = sent == 0;

        while (sent + (int)k < n && msgs[sent + k].iov_len <= max) {
            size_t b = msgs[sent + k].iov_len + PAYLOAD_FIELD_BYTES;
            if (k > 0 && bytes + b > max)
                break;
            bytes += b;
            k++;
        }
        if (k == 0)
            break; /* the next one is over the limit */
        /* seqs are never reused: a short count burns the rest of the frame's */
        uint64_t seq = ch->cl->next_seq + 1;
        ch->cl->next_seq += k;
        /* later frames go only while they can go at once, like write(2) */
        if (remote_send_req(ch, &msgs[sent], k, seq, first ? deadline : 0, &count) < 0) {
            /* ECONNRESET: some of this frame may have gone; the caller cannot know which */
            if (first || errno == ECONNRESET)
                return -1;
            break;
        }
        sent += (int)count;
        if (count < k)
            break;
    }
    return sent;
}

/*
 * One RECV of up to n messages into msgs, leased for lease_ms if > 0. RECV
 * is safe to repeat: a message the broker handed to a connection that
 * dropped before our ack went back to the head of its channel. Returns the
 * count (>= 1), 0 for closed and drained, or -1 with errno.
 */
static int remote_recv_req(struct remote_chan *ch, chan_msg_t *msgs, size_t n, int64_t lease_ms,
                           int64_t deadline)
{
    for (;;) {
        Chanwire__ClientFrame f = CHANWIRE__CLIENT_FRAME__INIT;
        Chanwire__Recv rv = CHANWIRE__RECV__INIT;
        struct conn_req r;
        int rc, ret = -1;

        if (remote_fresh(ch, deadline) < 0)
            return -1;
        rv.chan = ch->handle;
        rv.max = n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
        rv.lease_ms = lease_ms;
        f.body_case = CHANWIRE__CLIENT_FRAME__BODY_RECV;
        f.recv = &rv;
        remote_req_init(&r, ch, &f, NULL, 0, &rv.timeout_ms, deadline,
                        REQ_RETRY_SAFE | (lease_ms > 0 ? REQ_LEASE : 0));
        sched_label(lease_ms > 0 ? "remote recv lease" : "remote recv");
        rc = conn_call(ch->cl, &r);
        if (rc < 0)
            goto out;
        if (rc == 1) {
            conn_req_done(&r);
            continue;
        }
        if (r.gave_up) {
            errno = ECANCELED; /* anything it delivered was NACKed back to the channel head */
        } else if (r.status == OK) {
            Chanwire__RecvReply *rr = r.reply->body_case == CHANWIRE__SERVER_FRAME__BODY_RECV ? r.reply->recv : NULL;
            if (r.nblk < 1 || r.nblk > n || rr == NULL || rr->n_tags != r.nblk) {
                errno = EPROTO;
                goto out;
            }
            for (size_t i = 0; i < r.nblk; i++) {
                remote_msg_fill(&msgs[i], &r.blk[i], rr->tags[i],
                                i < rr->n_deliveries ? rr->deliveries[i] : 1);
                if (lease_ms > 0) {
                    msgs[i].priv_flags |= MSG_LEASED;
                    msgs[i].priv_peer = ch->cl;
                    msgs[i].priv_epoch = r.reply_epoch;
                }
            }
            ret = (int)r.nblk;
        } else if (r.status == CLOSED) {
            ret = 0;
        } else {
            remote_fail(r.status, 0);
        }
    out:
        remote_done(&r);
        return ret;
    }
}

static int remote_recv(chan_t *c, chan_msg_t *msg, int64_t deadline)
{
    memset(msg, 0, sizeof *msg);
    return remote_recv_req((struct remote_chan *)c, msg, 1, 0, deadline);
}

static int remote_recv_many(chan_t *c, chan_msg_t *msgs, int n, int64_t deadline)
{
    return remote_recv_req((struct remote_chan *)c, msgs, (size_t)n, 0, deadline);
}

static int remote_recv_lease(chan_t *c, chan_msg_t *msg, int64_t lease_ms, int64_t deadline)
{
    memset(msg, 0, sizeof *msg);
    return remote_recv_req((struct remote_chan *)c, msg, 1, lease_ms, deadline);
}

/*
 * ACK or NACK one leased delivery, as a request of its own so that the
 * broker's answer (INVALID: the lease expired) reaches the caller. Tags
 * name deliveries of one connection; once it has dropped, the broker has
 * taken the message back. Requests of many coroutines in one loop turn
 * leave in one write. Never repeated: a drop during it leaves the outcome
 * to the broker's order of events (acked, or given back for redelivery).
 */
int remote_lease_settle(chan_msg_t *msg, int ack)
{
    struct chan_client *cl = msg->priv_peer;
    Chanwire__ClientFrame f = CHANWIRE__CLIENT_FRAME__INIT;
    Chanwire__Tags t = CHANWIRE__TAGS__INIT;
    uint64_t tag = msg->priv_tag;
    struct conn_req r;
    int ret = -1;

    if (msg->priv_flags & MSG_SETTLED) {
        errno = EINVAL;
        return -1;
    }
    if (cl->state != CONN_READY || cl->epoch != msg->priv_epoch) {
        msg->priv_flags |= MSG_SETTLED;
        errno = ECONNRESET;
        return -1;
    }
    t.tags = &tag;
    t.n_tags = 1;
    if (ack) {
        f.body_case = CHANWIRE__CLIENT_FRAME__BODY_ACK;
        f.ack = &t;
    } else {
        f.body_case = CHANWIRE__CLIENT_FRAME__BODY_NACK;
        f.nack = &t;
    }
    conn_req_init(&r, &f, NULL, 0, NULL, -1, 0);
    sched_label(ack ? "remote ack" : "remote nack");
    if (conn_call(cl, &r) < 0) {
        if (errno == ECONNRESET)
            msg->priv_flags |= MSG_SETTLED;
        goto out;
    }
    /* done or refused, the lease is over either way (even if the caller was cancelled meanwhile) */
    msg->priv_flags |= MSG_SETTLED;
    if (r.status == OK)
        ret = 0;
    else
        remote_fail(r.status, 0);
out:
    remote_done(&r);
    return ret;
}

/*
 * CLOSE lost with its connection goes again to the same broker; CLOSED
 * then means the first one (or someone else's in between) did it.
 */
static int remote_close(chan_t *c)
{
    struct remote_chan *ch = (struct remote_chan *)c;

    for (;;) {
        Chanwire__ClientFrame f = CHANWIRE__CLIENT_FRAME__INIT;
        Chanwire__Close cm = CHANWIRE__CLOSE__INIT;
        struct conn_req r;
        int rc, status, gave_up, resent;

        if (remote_fresh(ch, -1) < 0)
            return -1;
        cm.chan = ch->handle;
        f.body_case = CHANWIRE__CLIENT_FRAME__BODY_CLOSE;
        f.close = &cm;
        remote_req_init(&r, ch, &f, NULL, 0, NULL, -1, REQ_RESEND);
        sched_label("remote close");
        rc = conn_call(ch->cl, &r);
        status = r.status;
        gave_up = r.gave_up;
        resent = r.resent;
        remote_done(&r);
        if (rc < 0)
            return -1;
        if (rc == 1)
            continue;
        if (status == OK || (status == CLOSED && resent))
            return 0;
        return remote_fail(status, gave_up);
    }
}

/* STAT by name; a channel of the same name but another incarnation is not ours. */
static long remote_len(chan_t *c)
{
    struct remote_chan *ch = (struct remote_chan *)c;
    struct chan_info info;

    if (remote_fresh(ch, -1) < 0)
        return -1;
    if (chan_stat(ch->cl, ch->name, &info) < 0) {
        if (errno == ENOENT)
            errno = ESTALE;
        return -1;
    }
    if (memcmp(info.incarnation, ch->inc, sizeof ch->inc) != 0) {
        errno = ESTALE;
        return -1;
    }
    return info.len;
}

static long remote_cap(chan_t *c)
{
    return ((struct remote_chan *)c)->cap;
}

static void remote_free(chan_t *c)
{
    free(c);
}

/*
 * One SELECT request for cases whose channels all belong to one client.
 * Safe to repeat after a lost connection only when it has no send case.
 */
static int remote_select(struct chan_case *cases, int n, int64_t deadline)
{
    Chanwire__Case cbuf[SELECT_STACK_CASES], *cv = cbuf;
    Chanwire__Case *pbuf[SELECT_STACK_CASES], **pv = pbuf;
    struct wire_payload plbuf[SELECT_STACK_CASES], *pl = plbuf;
    struct chan_client *cl = NULL;
    size_t nsend = 0;
    int ret = -1;

    if (n < 0 || (n > 0 && cases == NULL)) {
        errno = EINVAL;
        return -1;
    }
    for (int i = 0; i < n; i++) {
        struct remote_chan *ch = (struct remote_chan *)cases[i].ch;
        if (cases[i].op != CHAN_SEND && cases[i].op != CHAN_RECV) {
            errno = EINVAL;
            return -1;
        }
        if (ch == NULL)
            continue;
        if (cl != NULL && ch->cl != cl) {
            errno = ENOTSUP;
            return -1;
        }
        cl = ch->cl;
        if (cases[i].op == CHAN_SEND) {
            if (cases[i].len > cl->max_msg) {
                errno = EMSGSIZE;
                return -1;
            }
            nsend++;
        } else if (cases[i].msg == NULL) {
            errno = EINVAL;
            return -1;
        }
    }
    if (cl == NULL) {
        /* only nil channels: nothing can ever proceed */
        if (deadline == 0) {
            errno = EAGAIN;
            return -1;
        }
        sched_label("select");
        int rc = sched_park(deadline, 1);
        errno = rc ? rc : ETIMEDOUT;
        return -1;
    }
    if (n > SELECT_STACK_CASES) {
        cv = calloc((size_t)n, sizeof *cv);
        pv = calloc((size_t)n, sizeof *pv);
        pl = calloc((size_t)n, sizeof *pl);
        if (cv == NULL || pv == NULL || pl == NULL) {
            errno = ENOMEM;
            goto out;
        }
    }

    for (;;) {
        Chanwire__ClientFrame f = CHANWIRE__CLIENT_FRAME__INIT;
        Chanwire__Select sel = CHANWIRE__SELECT__INIT;
        struct conn_req r;
        size_t k = 0;
        int rc;

        int moved = 0;
        for (int i = 0; i < n; i++)
            if (cases[i].ch != NULL && remote_fresh((struct remote_chan *)cases[i].ch, deadline) < 0)
                goto out;
        /* a broker restart between two of those checks: check again */
        for (int i = 0; i < n; i++)
            if (cases[i].ch != NULL && ((struct remote_chan *)cases[i].ch)->gen != cl->inst_gen)
                moved = 1;
        if (moved)
            continue;
        for (int i = 0; i < n; i++) {
            struct remote_chan *ch = (struct remote_chan *)cases[i].ch;
            chanwire__case__init(&cv[i]);
            cv[i].chan = ch != NULL ? ch->handle : 0;
            /* a nil send case carries no payload: the broker never pairs it */
            cv[i].send = ch != NULL && cases[i].op == CHAN_SEND;
            if (cv[i].send)
                pl[k++] = (struct wire_payload){cases[i].data, cases[i].len, NULL,
                                                cases[i].len >= WIRE_REF_MIN};
            pv[i] = &cv[i];
        }
        sel.cases = pv;
        sel.n_cases = (size_t)n;
        f.body_case = CHANWIRE__CLIENT_FRAME__BODY_SELECT;
        f.select = &sel;
        conn_req_init(&r, &f, pl, k, &sel.timeout_ms, deadline,
                      REQ_BOUND | (nsend == 0 ? REQ_RETRY_SAFE : 0));
        /* remote_fresh left every case's handle good on this broker */
        r.gen = cl->inst_gen;
        sched_label("remote select");
        rc = conn_call(cl, &r);
        if (rc < 0) {
            remote_done(&r);
            goto out;
        }
        if (rc == 1) {
            conn_req_done(&r);
            continue;
        }
        if (r.status != OK) {
            remote_fail(r.status, r.gave_up);
            remote_done(&r);
            goto out;
        }

        Chanwire__SelectReply *sr = r.reply->body_case == CHANWIRE__SERVER_FRAME__BODY_SELECT ? r.reply->select : NULL;
        if (sr == NULL || sr->index >= (uint32_t)n || cases[sr->index].ch == NULL) {
            errno = EPROTO;
            remote_done(&r);
            goto out;
        }
        struct chan_case *c = &cases[sr->index];
        if (c->op == CHAN_RECV) {
            if (r.gave_up) {
                errno = ECANCELED; /* a message it got was NACKed back */
            } else if (sr->result == OK && r.nblk >= 1) {
                remote_msg_fill(c->msg, &r.blk[0], sr->tag, sr->deliveries);
                c->result = 1;
                ret = (int)sr->index;
            } else if (sr->result == CLOSED) {
                c->result = 0;
                ret = (int)sr->index;
            } else {
                errno = EPROTO;
            }
        } else if (sr->result == OK) {
            c->result = 0; /* delivered, even if the caller was cancelled meanwhile */
            ret = (int)sr->index;
        } else if (r.gave_up) {
            errno = ECANCELED;
        } else if (sr->result == CLOSED) {
            c->result = -1;
            ret = (int)sr->index;
            remote_done(&r);
            errno = EPIPE;
            goto out;
        } else {
            errno = EPROTO;
        }
        remote_done(&r);
        break;
    }
out:
    if (cv != cbuf) {
        int err = errno;
        free(cv);
        free(pv);
        free(pl);
        errno = err;
    }
    return ret;
}

static const void *remote_select_domain(chan_t *c)
{
    return ((struct remote_chan *)c)->cl;
}

const struct chan_ops remote_ops = {
    .send = remote_send,
    .recv = remote_recv,
    .send_many = remote_send_many,
    .recv_many = remote_recv_many,
    .recv_lease = remote_recv_lease,
    .close = remote_close,
    .len = remote_len,
    .cap = remote_cap,
    .free = remote_free,
    .select = remote_select,
    .select_domain = remote_select_domain,
};

/* ---- public calls on a client ---------------------------------------- */

chan_t *chan_open(chan_client_t *cl, const char *name, long cap)
{
    struct remote_chan *ch;

    if (cl == NULL || !remote_name_ok(name) || cap < -1) {
        errno = EINVAL;
        return NULL;
    }
    ch = calloc(1, sizeof *ch);
    if (ch == NULL)
        return NULL;
    if (remote_open_req(cl, name, cap, -1, &ch->handle, &ch->cap, ch->inc, &ch->gen) < 0) {
        int err = errno;
        free(ch);
        errno = err;
        return NULL;
    }
    ch->base.ops = &remote_ops;
    ch->cl = cl;
    strcpy(ch->name, name);
    return &ch->base;
}

static void remote_info_fill(struct chan_info *info, const Chanwire__ChanInfo *ci)
{
    memset(info, 0, sizeof *info);
    if (ci->name != NULL) {
        strncpy(info->name, ci->name, sizeof info->name - 1);
    }
    memcpy(info->incarnation, ci->incarnation.data,
           ci->incarnation.len < sizeof info->incarnation ? ci->incarnation.len : sizeof info->incarnation);
    info->cap = (long)ci->cap;
    info->len = (long)ci->len;
    info->unacked = (long)ci->unacked;
    info->senders = (long)ci->senders;
    info->receivers = (long)ci->receivers;
    info->closed = ci->closed;
}

int chan_stat(chan_client_t *cl, const char *name, struct chan_info *info)
{
    Chanwire__ClientFrame f = CHANWIRE__CLIENT_FRAME__INIT;
    Chanwire__Stat st = CHANWIRE__STAT__INIT;
    struct conn_req r;
    int ret = -1;

    if (cl == NULL || info == NULL || !remote_name_ok(name)) {
        errno = EINVAL;
        return -1;
    }
    st.name = (char *)name;
    f.body_case = CHANWIRE__CLIENT_FRAME__BODY_STAT;
    f.stat = &st;
    conn_req_init(&r, &f, NULL, 0, NULL, -1, REQ_RETRY_SAFE);
    sched_label("remote stat");
    if (conn_call(cl, &r) < 0)
        goto out;
    if (r.gave_up || r.status != OK) {
        remote_fail(r.status, r.gave_up);
        goto out;
    }
    if (r.reply->body_case != CHANWIRE__SERVER_FRAME__BODY_STAT) {
        errno = EPROTO;
        goto out;
    }
    remote_info_fill(info, r.reply->stat);
    ret = 0;
out:
    remote_done(&r);
    return ret;
}

int chan_list(chan_client_t *cl, const char *prefix, struct chan_info **infos)
{
    Chanwire__ClientFrame f = CHANWIRE__CLIENT_FRAME__INIT;
    Chanwire__Stat st = CHANWIRE__STAT__INIT;
    struct conn_req r;
    int ret = -1;

    if (prefix == NULL)
        prefix = "";
    if (cl == NULL || infos == NULL || (prefix[0] != '\0' && !remote_name_ok(prefix))) {
        errno = EINVAL;
        return -1;
    }
    st.name = (char *)prefix;
    f.body_case = CHANWIRE__CLIENT_FRAME__BODY_LIST;
    f.list = &st;
    conn_req_init(&r, &f, NULL, 0, NULL, -1, REQ_RETRY_SAFE);
    sched_label("remote list");
    if (conn_call(cl, &r) < 0)
        goto out;
    if (r.gave_up || r.status != OK) {
        remote_fail(r.status, r.gave_up);
        goto out;
    }
    size_t n = r.reply->body_case == CHANWIRE__SERVER_FRAME__BODY_LIST ? r.reply->list->n_chans : 0;
    if (n > (size_t)0x7fffffff) {
        errno = EPROTO;
        goto out;
    }
    struct chan_info *v = calloc(n ? n : 1, sizeof *v);
    if (v == NULL) {
        errno = ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        remote_info_fill(&v[i], r.reply->list->chans[i]);
    *infos = v;
    ret = (int)n;
out:
    remote_done(&r);
    return ret;
}

/*
 * DELETE lost with its connection goes again to the same broker; NOENT
 * then means the first one did it.
 */
int chan_delete(chan_client_t *cl, const char *name)
{
    Chanwire__ClientFrame f = CHANWIRE__CLIENT_FRAME__INIT;
    Chanwire__Delete d = CHANWIRE__DELETE__INIT;
    struct conn_req r;
    int ret = -1;

    if (cl == NULL || !remote_name_ok(name)) {
        errno = EINVAL;
        return -1;
    }
    d.name = (char *)name;
    f.body_case = CHANWIRE__CLIENT_FRAME__BODY_DELETE;
    f.delete_ = &d;
    conn_req_init(&r, &f, NULL, 0, NULL, -1, REQ_RESEND);
    sched_label("remote delete");
    if (conn_call(cl, &r) < 0)
        goto out;
    if (r.status != OK && !(r.status == NOENT && r.resent)) {
        remote_fail(r.status, r.gave_up);
        goto out;
    }
    ret = 0; /* done, even if the caller was cancelled meanwhile */
out:
    remote_done(&r);
    return ret;
}
