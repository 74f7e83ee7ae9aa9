/*
 * core_test.c: unit tests of the channel state machine (core/core.c), one
 * rule of DESIGN.md section 1 per test, plus a randomised run that checks
 * conservation of messages. core_chan_check runs after every step.
 */
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

/* ---- harness ----------------------------------------------------------- */

/* A test message: the core's header first, so a core_msg * casts back. */
struct tmsg {
    struct core_msg m;
    int id;
};

/* Every message the test allocates; freed by the teardown (owner: harness). */
#define MAX_MSGS 8192
static struct tmsg *all_msgs[MAX_MSGS];
static int n_msgs;

/* One done callback as seen by the layer. */
struct done_rec {
    struct core_waiter *w;
    int status;
    struct core_msg *msg;
    int fired;           /* w->sel->fired at the time, or -2 for a plain waiter */
    size_t probe;        /* probe_fn() at the time */
};

#define MAX_LOG 512
static struct done_rec done_log[MAX_LOG];
static int n_done;
static size_t (*probe_fn)(void);
static void (*done_hook)(struct core_waiter *w);

static void t_done(struct core_waiter *w)
{
    ck_assert_int_eq(w->state, CORE_W_IDLE);
    if (done_hook) {
        done_hook(w);
        return;
    }
    ck_assert_int_lt(n_done, MAX_LOG);
    done_log[n_done++] = (struct done_rec){
        .w = w,
        .status = w->status,
        .msg = w->op == CORE_RECV ? w->msg : NULL,
        .fired = w->sel ? w->sel->fired : -2,
        .probe = probe_fn ? probe_fn() : 0,
    };
}

static struct core_msg *msg_new(int id, size_t len)
{
    struct tmsg *t = calloc(1, sizeof *t);

    ck_assert_ptr_nonnull(t);
    ck_assert_int_lt(n_msgs, MAX_MSGS);
    t->id = id;
    t->m.len = len;
    all_msgs[n_msgs++] = t;
    return &t->m;
}

static struct core_msg *mk(int id)
{
    return msg_new(id, 10 + (size_t)id);
}

static int id_of(const struct core_msg *m)
{
    return m ? ((const struct tmsg *)m)->id : -1;
}

static void wset(struct core_waiter *w, int op, struct core_msg *m, unsigned flags)
{
    memset(w, 0, sizeof *w);
    w->op = op;
    w->msg = m;
    w->flags = flags;
    w->done = t_done;
}

#define CHECK_CHAN(ch) ck_assert_int_eq(core_chan_check(ch), 0)

static int snd(struct core_chan *ch, struct core_waiter *w, struct core_msg *m, int block)
{
    int rc;

    wset(w, CORE_SEND, m, 0);
    rc = core_send(ch, w, block);
    CHECK_CHAN(ch);
    return rc;
}

static int rcv(struct core_chan *ch, struct core_waiter *w, unsigned flags, int block)
{
    int rc;

    wset(w, CORE_RECV, NULL, flags);
    rc = core_recv(ch, w, block);
    CHECK_CHAN(ch);
    return rc;
}

/* A non-blocking recv that must return message id. */
static void recv_expect(struct core_chan *ch, int id)
{
    struct core_waiter w;

    ck_assert_int_eq(rcv(ch, &w, 0, 0), 0);
    ck_assert_int_eq(id_of(w.msg), id);
}

static void setup(void)
{
    n_done = 0;
    n_msgs = 0;
    probe_fn = NULL;
    done_hook = NULL;
    core_seed(1);
}

static void teardown(void)
{
    for (int i = 0; i < n_msgs; i++)
        free(all_msgs[i]);
    n_msgs = 0;
}

/* ---- unbuffered -------------------------------------------------------- */

START_TEST(test_unbuffered_send_pends_until_a_receiver_takes_it)
{
    struct core_chan ch;
    struct core_waiter s, r;
    struct core_msg *m = mk(1);

    core_chan_init(&ch, 0);
    ck_assert_int_eq(snd(&ch, &s, m, 1), CORE_PENDING);
    ck_assert_int_eq(s.state, CORE_W_QUEUED);
    ck_assert_uint_eq(ch.sendq.n, 1);
    ck_assert_uint_eq(ch.count, 0);
    ck_assert_int_eq(n_done, 0);

    ck_assert_int_eq(rcv(&ch, &r, 0, 1), 0);
    ck_assert_ptr_eq(r.msg, m);
    ck_assert_uint_eq(m->deliveries, 1);
    ck_assert_int_eq(n_done, 1);
    ck_assert_ptr_eq(done_log[0].w, &s);
    ck_assert_int_eq(done_log[0].status, 0);
    ck_assert_uint_eq(ch.sendq.n, 0);
}
END_TEST

START_TEST(test_unbuffered_recv_pends_until_a_sender_arrives)
{
    struct core_chan ch;
    struct core_waiter s, r;
    struct core_msg *m = mk(1);

    core_chan_init(&ch, 0);
    ck_assert_int_eq(rcv(&ch, &r, 0, 1), CORE_PENDING);
    ck_assert_uint_eq(ch.recvq.n, 1);
    ck_assert_int_eq(n_done, 0);

    ck_assert_int_eq(snd(&ch, &s, m, 1), 0);
    ck_assert_int_eq(n_done, 1);
    ck_assert_ptr_eq(done_log[0].w, &r);
    ck_assert_int_eq(done_log[0].status, 0);
    ck_assert_ptr_eq(done_log[0].msg, m);
    ck_assert_uint_eq(m->deliveries, 1);
    ck_assert_uint_eq(ch.count, 0);
}
END_TEST

START_TEST(test_unbuffered_nonblocking_ops_are_eagain_and_change_nothing)
{
    struct core_chan ch;
    struct core_waiter s, r;

    core_chan_init(&ch, 0);
    ck_assert_int_eq(snd(&ch, &s, mk(1), 0), EAGAIN);
    ck_assert_int_eq(rcv(&ch, &r, 0, 0), EAGAIN);
    ck_assert_int_eq(s.state, CORE_W_IDLE);
    ck_assert_int_eq(r.state, CORE_W_IDLE);
    ck_assert_uint_eq(ch.sendq.n + ch.recvq.n + ch.count, 0);
    ck_assert_int_eq(n_done, 0);
}
END_TEST

/* ---- buffered ---------------------------------------------------------- */

START_TEST(test_buffered_messages_come_out_fifo)
{
    struct core_chan ch;
    struct core_waiter s;

    core_chan_init(&ch, 3);
    for (int i = 1; i <= 3; i++)
        ck_assert_int_eq(snd(&ch, &s, mk(i), 0), 0);
    ck_assert_uint_eq(ch.count, 3);
    ck_assert_int_eq(snd(&ch, &s, mk(4), 0), EAGAIN);
    for (int i = 1; i <= 3; i++)
        recv_expect(&ch, i);
    ck_assert_uint_eq(ch.count, 0);
    ck_assert_int_eq(n_done, 0);
}
END_TEST

START_TEST(test_bytes_track_buffered_payload)
{
    struct core_chan ch;
    struct core_waiter s;

    core_chan_init(&ch, 4);
    ck_assert_int_eq(snd(&ch, &s, msg_new(1, 100), 0), 0);
    ck_assert_int_eq(snd(&ch, &s, msg_new(2, 7), 0), 0);
    ck_assert_uint_eq(ch.bytes, 107);
    recv_expect(&ch, 1);
    ck_assert_uint_eq(ch.bytes, 7);
    recv_expect(&ch, 2);
    ck_assert_uint_eq(ch.bytes, 0);
}
END_TEST

START_TEST(test_send_on_full_pends_then_completes_when_a_receiver_makes_room)
{
    struct core_chan ch;
    struct core_waiter s1, s2, s3, s4;

    core_chan_init(&ch, 2);
    ck_assert_int_eq(snd(&ch, &s1, mk(1), 1), 0);
    ck_assert_int_eq(snd(&ch, &s2, mk(2), 1), 0);
    ck_assert_int_eq(snd(&ch, &s3, mk(3), 1), CORE_PENDING);
    ck_assert_int_eq(snd(&ch, &s4, mk(4), 1), CORE_PENDING);
    ck_assert_uint_eq(ch.sendq.n, 2);

    recv_expect(&ch, 1);
    /* the first blocked sender's message moved to the buffer tail */
    ck_assert_int_eq(n_done, 1);
    ck_assert_ptr_eq(done_log[0].w, &s3);
    ck_assert_int_eq(done_log[0].status, 0);
    ck_assert_uint_eq(ch.count, 2);
    ck_assert_int_eq(id_of(ch.tail), 3);

    recv_expect(&ch, 2);
    ck_assert_int_eq(n_done, 2);
    ck_assert_ptr_eq(done_log[1].w, &s4);
    recv_expect(&ch, 3);
    recv_expect(&ch, 4);
    ck_assert_uint_eq(ch.sendq.n, 0);
}
END_TEST

START_TEST(test_a_zero_byte_message_is_a_message)
{
    struct core_chan ch;
    struct core_waiter s, r;
    struct core_msg *m = msg_new(7, 0);

    core_chan_init(&ch, 1);
    ck_assert_int_eq(snd(&ch, &s, m, 0), 0);
    ck_assert_uint_eq(ch.count, 1);
    ck_assert_uint_eq(ch.bytes, 0);
    ck_assert_int_eq(snd(&ch, &s, msg_new(8, 0), 0), EAGAIN);
    ck_assert_int_eq(rcv(&ch, &r, 0, 0), 0);
    ck_assert_ptr_eq(r.msg, m);
    ck_assert_uint_eq(m->len, 0);
    ck_assert_int_eq(rcv(&ch, &r, 0, 0), EAGAIN);
}
END_TEST

/* ---- waiters are FIFO --------------------------------------------------- */

START_TEST(test_blocked_senders_are_served_fifo)
{
    struct core_chan ch;
    struct core_waiter s[4];

    core_chan_init(&ch, 0);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(snd(&ch, &s[i], mk(i), 1), CORE_PENDING);
    for (int i = 0; i < 4; i++) {
        recv_expect(&ch, i);
        ck_assert_int_eq(n_done, i + 1);
        ck_assert_ptr_eq(done_log[i].w, &s[i]);
    }
}
END_TEST

START_TEST(test_blocked_receivers_are_served_fifo)
{
    struct core_chan ch;
    struct core_waiter r[4], s;

    core_chan_init(&ch, 2);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(rcv(&ch, &r[i], 0, 1), CORE_PENDING);
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(snd(&ch, &s, mk(i), 0), 0);
        ck_assert_int_eq(n_done, i + 1);
        ck_assert_ptr_eq(done_log[i].w, &r[i]);
        ck_assert_int_eq(id_of(done_log[i].msg), i);
    }
    ck_assert_uint_eq(ch.count, 0);
}
END_TEST

/* ---- close --------------------------------------------------------------- */

START_TEST(test_close_wakes_every_receiver_with_epipe)
{
    struct core_chan ch;
    struct core_waiter r[3];

    core_chan_init(&ch, 1);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(rcv(&ch, &r[i], 0, 1), CORE_PENDING);
    ck_assert_int_eq(core_close(&ch), 0);
    CHECK_CHAN(&ch);
    ck_assert_int_eq(n_done, 3);
    for (int i = 0; i < 3; i++) {
        ck_assert_ptr_eq(done_log[i].w, &r[i]);
        ck_assert_int_eq(done_log[i].status, EPIPE);
        ck_assert_ptr_null(done_log[i].msg);
    }
    ck_assert_uint_eq(ch.recvq.n, 0);
}
END_TEST

START_TEST(test_close_wakes_every_sender_with_epipe_and_keeps_their_messages)
{
    struct core_chan ch;
    struct core_waiter s[3], b;
    struct core_msg *m[3];

    core_chan_init(&ch, 1);
    ck_assert_int_eq(snd(&ch, &b, mk(9), 1), 0);
    for (int i = 0; i < 3; i++) {
        m[i] = mk(i);
        ck_assert_int_eq(snd(&ch, &s[i], m[i], 1), CORE_PENDING);
    }
    ck_assert_int_eq(core_close(&ch), 0);
    CHECK_CHAN(&ch);
    ck_assert_int_eq(n_done, 3);
    for (int i = 0; i < 3; i++) {
        ck_assert_ptr_eq(done_log[i].w, &s[i]);
        ck_assert_int_eq(done_log[i].status, EPIPE);
        ck_assert_ptr_eq(s[i].msg, m[i]);
        ck_assert_uint_eq(m[i]->deliveries, 0);
    }
    /* only the message buffered before the close is receivable */
    recv_expect(&ch, 9);
    ck_assert_int_eq(rcv(&ch, &b, 0, 1), EPIPE);
}
END_TEST

START_TEST(test_close_of_a_closed_channel_is_epipe)
{
    struct core_chan ch;

    core_chan_init(&ch, 0);
    ck_assert_int_eq(core_close(&ch), 0);
    ck_assert_int_eq(core_close(&ch), EPIPE);
    ck_assert_int_eq(ch.closed, 1);
    CHECK_CHAN(&ch);
}
END_TEST

START_TEST(test_recv_drains_the_buffer_after_close_then_gets_epipe)
{
    struct core_chan ch;
    struct core_waiter w;

    core_chan_init(&ch, 3);
    ck_assert_int_eq(snd(&ch, &w, mk(1), 0), 0);
    ck_assert_int_eq(snd(&ch, &w, mk(2), 0), 0);
    ck_assert_int_eq(core_close(&ch), 0);
    ck_assert_int_eq(snd(&ch, &w, mk(3), 1), EPIPE);
    recv_expect(&ch, 1);
    recv_expect(&ch, 2);
    ck_assert_int_eq(rcv(&ch, &w, 0, 1), EPIPE);
    ck_assert_ptr_null(w.msg);
    ck_assert_int_eq(rcv(&ch, &w, 0, 0), EPIPE);
    ck_assert_int_eq(n_done, 0);
}
END_TEST

/* ---- select -------------------------------------------------------------- */

static void case_set(struct core_waiter *c, struct core_chan *ch, int op, struct core_msg *m)
{
    wset(c, op, m, 0);
    c->ch = ch;
}

START_TEST(test_select_picks_uniformly_among_ready_cases)
{
    enum { TRIALS = 30000, NREADY = 3 };
    struct core_chan ch[4];
    struct core_waiter c[5], w;
    struct core_select sel;
    long hits[5] = {0};

    /* three ready cases (two buffered recvs, one send with room), one
     * recv on an empty channel and one nil case, which never fire */
    core_chan_init(&ch[0], 1);
    core_chan_init(&ch[1], 1);
    core_chan_init(&ch[2], 1);
    core_chan_init(&ch[3], 1);
    ck_assert_int_eq(snd(&ch[0], &w, mk(0), 0), 0);
    ck_assert_int_eq(snd(&ch[2], &w, mk(2), 0), 0);
    struct core_msg *out = mk(100);
    for (int t = 0; t < TRIALS; t++) {
        case_set(&c[0], &ch[0], CORE_RECV, NULL);
        case_set(&c[1], &ch[3], CORE_RECV, NULL);
        case_set(&c[2], &ch[1], CORE_SEND, out);
        case_set(&c[3], NULL, CORE_RECV, NULL);
        case_set(&c[4], &ch[2], CORE_RECV, NULL);
        int i = core_select(&sel, c, 5, 1);
        ck_assert_int_ge(i, 0);
        ck_assert_int_lt(i, 5);
        ck_assert_int_eq(sel.fired, i);
        ck_assert_int_eq(c[i].status, 0);
        hits[i]++;
        /* put the world back as it was */
        if (i == 2) {
            recv_expect(&ch[1], 100);
        } else {
            ck_assert_int_eq(snd(&ch[i == 0 ? 0 : 2], &w, c[i].msg, 0), 0);
        }
    }
    ck_assert_int_eq(n_done, 0);
    ck_assert_int_eq(hits[1], 0);
    ck_assert_int_eq(hits[3], 0);
    /*
     * Each ready case is expected TRIALS/3 = 10000 times; binomial sigma is
     * sqrt(30000 * 1/3 * 2/3) = 81.6. A 5% band (+-500) is 6.1 sigma: a
     * fair picker fails it with probability below 1e-8, while a picker
     * that favours any case by 5% fails it always.
     */
    const long expect = TRIALS / NREADY, band = expect / 20;
    ck_assert_int_le(labs(hits[0] - expect), band);
    ck_assert_int_le(labs(hits[2] - expect), band);
    ck_assert_int_le(labs(hits[4] - expect), band);
}
END_TEST

static struct core_chan *probe_a, *probe_b, *probe_c;

static size_t probe_queues(void)
{
    return probe_a->recvq.n + probe_a->sendq.n + probe_b->recvq.n + probe_b->sendq.n +
           probe_c->recvq.n + probe_c->sendq.n;
}

START_TEST(test_select_withdraws_its_other_cases_before_done)
{
    struct core_chan a, b, c;
    struct core_waiter cs[3], s;
    struct core_select sel;
    struct core_msg *mine = mk(1), *theirs = mk(2);

    core_chan_init(&a, 0);
    core_chan_init(&b, 0);
    core_chan_init(&c, 0);
    case_set(&cs[0], &a, CORE_RECV, NULL);
    case_set(&cs[1], &b, CORE_RECV, NULL);
    case_set(&cs[2], &c, CORE_SEND, mine);
    ck_assert_int_eq(core_select(&sel, cs, 3, 1), CORE_PENDING);
    ck_assert_int_eq(sel.fired, -1);
    ck_assert_uint_eq(a.recvq.n, 1);
    ck_assert_uint_eq(b.recvq.n, 1);
    ck_assert_uint_eq(c.sendq.n, 1);
    CHECK_CHAN(&a);
    CHECK_CHAN(&c);

    probe_a = &a;
    probe_b = &b;
    probe_c = &c;
    probe_fn = probe_queues;
    ck_assert_int_eq(snd(&b, &s, theirs, 1), 0);
    ck_assert_int_eq(n_done, 1);
    ck_assert_ptr_eq(done_log[0].w, &cs[1]);
    ck_assert_int_eq(done_log[0].fired, 1);
    ck_assert_ptr_eq(done_log[0].msg, theirs);
    /* nothing of the select was queued anywhere when done ran */
    ck_assert_uint_eq(done_log[0].probe, 0);
    CHECK_CHAN(&a);
    CHECK_CHAN(&c);

    /* the withdrawn cases can no longer be matched */
    ck_assert_int_eq(snd(&a, &s, mk(3), 0), EAGAIN);
    ck_assert_int_eq(rcv(&c, &s, 0, 0), EAGAIN);
    ck_assert_uint_eq(mine->deliveries, 0);
}
END_TEST

START_TEST(test_select_never_pairs_its_own_send_with_its_own_recv)
{
    struct core_chan ch;
    struct core_waiter cs[2], w;
    struct core_select sel;
    struct core_msg *mine = mk(1);

    core_chan_init(&ch, 0);
    case_set(&cs[0], &ch, CORE_SEND, mine);
    case_set(&cs[1], &ch, CORE_RECV, NULL);
    ck_assert_int_eq(core_select(&sel, cs, 2, 0), CORE_WOULDBLOCK);
    ck_assert_int_eq(core_select(&sel, cs, 2, 1), CORE_PENDING);
    CHECK_CHAN(&ch);
    ck_assert_uint_eq(ch.sendq.n, 1);
    ck_assert_uint_eq(ch.recvq.n, 1);
    ck_assert_int_eq(n_done, 0);

    /* another party pairs with one case; the other is withdrawn */
    ck_assert_int_eq(rcv(&ch, &w, 0, 0), 0);
    ck_assert_ptr_eq(w.msg, mine);
    ck_assert_int_eq(n_done, 1);
    ck_assert_int_eq(done_log[0].fired, 0);
    ck_assert_uint_eq(ch.sendq.n + ch.recvq.n, 0);

    /* and the other way round */
    case_set(&cs[0], &ch, CORE_SEND, mine);
    case_set(&cs[1], &ch, CORE_RECV, NULL);
    ck_assert_int_eq(core_select(&sel, cs, 2, 1), CORE_PENDING);
    ck_assert_int_eq(snd(&ch, &w, mk(2), 0), 0);
    ck_assert_int_eq(n_done, 2);
    ck_assert_int_eq(done_log[1].fired, 1);
    ck_assert_int_eq(id_of(done_log[1].msg), 2);
    ck_assert_uint_eq(ch.sendq.n + ch.recvq.n, 0);
}
END_TEST

START_TEST(test_select_own_cases_stay_apart_when_an_ack_frees_room)
{
    struct core_chan ch;
    struct core_waiter cs[2], w;
    struct core_select sel;
    struct core_msg *m1 = mk(1), *mine = mk(2);

    /* cap 1 held by one unacked message: neither case is ready, both queue */
    core_chan_init(&ch, 1);
    ck_assert_int_eq(snd(&ch, &w, m1, 0), 0);
    ck_assert_int_eq(rcv(&ch, &w, CORE_W_ACK, 0), 0);
    case_set(&cs[0], &ch, CORE_SEND, mine);
    case_set(&cs[1], &ch, CORE_RECV, NULL);
    ck_assert_int_eq(core_select(&sel, cs, 2, 1), CORE_PENDING);
    ck_assert_uint_eq(ch.sendq.n + ch.recvq.n, 2);

    /* the ack makes room: the send case goes to the buffer, the recv case
     * is withdrawn rather than handed the select's own message */
    core_ack(&ch, m1);
    CHECK_CHAN(&ch);
    ck_assert_int_eq(n_done, 1);
    ck_assert_ptr_eq(done_log[0].w, &cs[0]);
    ck_assert_int_eq(done_log[0].fired, 0);
    ck_assert_int_eq(done_log[0].status, 0);
    ck_assert_ptr_null(cs[1].msg);
    ck_assert_uint_eq(mine->deliveries, 0);
    ck_assert_uint_eq(ch.recvq.n, 0);
    recv_expect(&ch, 2);
}
END_TEST

START_TEST(test_select_may_name_one_channel_in_several_cases)
{
    struct core_chan ch;
    struct core_waiter cs[3], w;
    struct core_select sel;

    core_chan_init(&ch, 0);
    case_set(&cs[0], &ch, CORE_RECV, NULL);
    case_set(&cs[1], &ch, CORE_RECV, NULL);
    case_set(&cs[2], &ch, CORE_RECV, NULL);
    ck_assert_int_eq(core_select(&sel, cs, 3, 1), CORE_PENDING);
    ck_assert_uint_eq(ch.recvq.n, 3);
    ck_assert_int_eq(snd(&ch, &w, mk(1), 0), 0);
    ck_assert_int_eq(n_done, 1);
    ck_assert_int_ge(done_log[0].fired, 0);
    ck_assert_int_lt(done_log[0].fired, 3);
    ck_assert_ptr_eq(done_log[0].w, &cs[done_log[0].fired]);
    ck_assert_uint_eq(ch.recvq.n, 0);
    /* a second sender finds nobody: exactly one case proceeded */
    ck_assert_int_eq(snd(&ch, &w, mk(2), 0), EAGAIN);
}
END_TEST

/*
 * Two blocked recv cases on one channel: the sender that arrives must find
 * either first in the queue, at random (Go's select2-of-one-channel test).
 * 2,000 trials, each case expected 1,000 times, sd 22.4: the bound of 800
 * is 8.9 sd away, so a false failure is beyond reach with the fixed seed.
 */
START_TEST(test_select_queues_its_cases_in_random_order)
{
    int wins[2] = {0, 0};

    for (int t = 0; t < 2000; t++) {
        struct core_chan ch;
        struct core_waiter cs[2], w;
        struct core_select sel;
        n_done = 0;
        core_chan_init(&ch, 0);
        case_set(&cs[0], &ch, CORE_RECV, NULL);
        case_set(&cs[1], &ch, CORE_RECV, NULL);
        ck_assert_int_eq(core_select(&sel, cs, 2, 1), CORE_PENDING);
        ck_assert_int_eq(snd(&ch, &w, mk(1), 0), 0);
        ck_assert_int_eq(n_done, 1);
        wins[done_log[0].fired]++;
        teardown();
    }
    ck_assert_int_gt(wins[0], 800);
    ck_assert_int_gt(wins[1], 800);
}
END_TEST

START_TEST(test_select_nil_case_never_proceeds)
{
    struct core_chan ch;
    struct core_waiter cs[3];
    struct core_select sel;

    case_set(&cs[0], NULL, CORE_SEND, mk(1));
    case_set(&cs[1], NULL, CORE_RECV, NULL);
    ck_assert_int_eq(core_select(&sel, cs, 2, 0), CORE_WOULDBLOCK);
    ck_assert_int_eq(core_select(&sel, cs, 2, 1), CORE_PENDING);
    ck_assert_int_eq(cs[0].state, CORE_W_IDLE);
    ck_assert_int_eq(cs[1].state, CORE_W_IDLE);

    /* with one ready case beside nil ones, the ready one always wins */
    core_chan_init(&ch, 0);
    ck_assert_int_eq(core_close(&ch), 0);
    for (int t = 0; t < 200; t++) {
        case_set(&cs[0], NULL, CORE_SEND, mk(1));
        case_set(&cs[1], &ch, CORE_RECV, NULL);
        case_set(&cs[2], NULL, CORE_RECV, NULL);
        ck_assert_int_eq(core_select(&sel, cs, 3, 1), 1);
        ck_assert_int_eq(cs[1].status, EPIPE);
    }
    ck_assert_int_eq(n_done, 0);
}
END_TEST

START_TEST(test_select_with_no_cases_waits_or_would_block)
{
    struct core_select sel;

    ck_assert_int_eq(core_select(&sel, NULL, 0, 0), CORE_WOULDBLOCK);
    ck_assert_int_eq(core_select(&sel, NULL, 0, 1), CORE_PENDING);
    ck_assert_int_eq(sel.fired, -1);
}
END_TEST

START_TEST(test_select_send_case_on_closed_channel_proceeds_with_epipe)
{
    struct core_chan open_ch, closed_ch;
    struct core_waiter cs[2];
    struct core_select sel;

    core_chan_init(&open_ch, 0);
    core_chan_init(&closed_ch, 4);
    ck_assert_int_eq(core_close(&closed_ch), 0);
    case_set(&cs[0], &open_ch, CORE_RECV, NULL);
    case_set(&cs[1], &closed_ch, CORE_SEND, mk(1));
    ck_assert_int_eq(core_select(&sel, cs, 2, 0), 1);
    ck_assert_int_eq(cs[1].status, EPIPE);
    ck_assert_uint_eq(closed_ch.count, 0);
    ck_assert_uint_eq(open_ch.recvq.n, 0);
}
END_TEST

START_TEST(test_select_pending_cases_are_woken_by_close)
{
    struct core_chan a, b;
    struct core_waiter cs[2];
    struct core_select sel;

    core_chan_init(&a, 0);
    core_chan_init(&b, 0);
    case_set(&cs[0], &a, CORE_SEND, mk(1));
    case_set(&cs[1], &b, CORE_RECV, NULL);
    ck_assert_int_eq(core_select(&sel, cs, 2, 1), CORE_PENDING);
    ck_assert_int_eq(core_close(&b), 0);
    CHECK_CHAN(&a);
    CHECK_CHAN(&b);
    ck_assert_int_eq(n_done, 1);
    ck_assert_int_eq(done_log[0].fired, 1);
    ck_assert_int_eq(done_log[0].status, EPIPE);
    ck_assert_uint_eq(a.sendq.n, 0);
}
END_TEST

/* ---- cancel / abandon ---------------------------------------------------- */

START_TEST(test_a_cancelled_send_is_never_delivered)
{
    struct core_chan ch;
    struct core_waiter s, r;
    struct core_msg *m = mk(1);

    core_chan_init(&ch, 0);
    ck_assert_int_eq(snd(&ch, &s, m, 1), CORE_PENDING);
    ck_assert_int_eq(core_cancel(&s, ETIMEDOUT), 0);
    CHECK_CHAN(&ch);
    ck_assert_int_eq(s.state, CORE_W_IDLE);
    ck_assert_uint_eq(ch.sendq.n, 0);
    ck_assert_int_eq(rcv(&ch, &r, 0, 0), EAGAIN);
    ck_assert_int_eq(rcv(&ch, &r, 0, 1), CORE_PENDING);
    ck_assert_int_eq(n_done, 0);
    ck_assert_uint_eq(m->deliveries, 0);
    /* a second cancel is too late: nothing is pending */
    ck_assert_int_eq(core_cancel(&s, ETIMEDOUT), -1);
}
END_TEST

START_TEST(test_a_cancelled_recv_never_receives)
{
    struct core_chan ch;
    struct core_waiter s, r;

    core_chan_init(&ch, 1);
    ck_assert_int_eq(rcv(&ch, &r, 0, 1), CORE_PENDING);
    ck_assert_int_eq(core_cancel(&r, ECANCELED), 0);
    CHECK_CHAN(&ch);
    ck_assert_int_eq(snd(&ch, &s, mk(1), 0), 0);
    ck_assert_uint_eq(ch.count, 1);
    ck_assert_int_eq(n_done, 0);
    ck_assert_ptr_null(r.msg);
}
END_TEST

START_TEST(test_cancelling_one_case_withdraws_the_whole_select)
{
    struct core_chan a, b;
    struct core_waiter cs[2], w;
    struct core_select sel;

    core_chan_init(&a, 0);
    core_chan_init(&b, 0);
    case_set(&cs[0], &a, CORE_RECV, NULL);
    case_set(&cs[1], &b, CORE_SEND, mk(1));
    ck_assert_int_eq(core_select(&sel, cs, 2, 1), CORE_PENDING);
    ck_assert_int_eq(core_cancel(&cs[1], ETIMEDOUT), 0);
    CHECK_CHAN(&a);
    CHECK_CHAN(&b);
    ck_assert_uint_eq(a.recvq.n + b.sendq.n, 0);
    ck_assert_int_eq(snd(&a, &w, mk(2), 0), EAGAIN);
    ck_assert_int_eq(rcv(&b, &w, 0, 0), EAGAIN);
    ck_assert_int_eq(n_done, 0);
}
END_TEST

START_TEST(test_abandon_of_a_queued_waiter_leaves_no_trace)
{
    struct core_chan ch;
    struct core_waiter s[2], cs[2], w;
    struct core_select sel;

    core_chan_init(&ch, 0);
    ck_assert_int_eq(snd(&ch, &s[0], mk(1), 1), CORE_PENDING);
    ck_assert_int_eq(snd(&ch, &s[1], mk(2), 1), CORE_PENDING);
    core_abandon(&s[0]);
    CHECK_CHAN(&ch);
    ck_assert_uint_eq(ch.sendq.n, 1);
    recv_expect(&ch, 2);

    case_set(&cs[0], &ch, CORE_RECV, NULL);
    case_set(&cs[1], &ch, CORE_RECV, NULL);
    ck_assert_int_eq(core_select(&sel, cs, 2, 1), CORE_PENDING);
    core_abandon(&cs[0]);
    CHECK_CHAN(&ch);
    ck_assert_uint_eq(ch.recvq.n, 0);
    ck_assert_int_eq(snd(&ch, &w, mk(3), 0), EAGAIN);
    /* only s[1] ever completed */
    ck_assert_int_eq(n_done, 1);
    ck_assert_ptr_eq(done_log[0].w, &s[1]);
}
END_TEST

/* ---- ack / nack ---------------------------------------------------------- */

START_TEST(test_unacked_messages_count_against_capacity)
{
    struct core_chan ch;
    struct core_waiter w, s3;
    struct core_msg *m1 = mk(1);

    core_chan_init(&ch, 2);
    ck_assert_int_eq(snd(&ch, &w, m1, 0), 0);
    ck_assert_int_eq(snd(&ch, &w, mk(2), 0), 0);
    ck_assert_int_eq(rcv(&ch, &w, CORE_W_ACK, 0), 0);
    ck_assert_ptr_eq(w.msg, m1);
    ck_assert_uint_eq(ch.count, 1);
    ck_assert_uint_eq(ch.unacked, 1);
    /* one buffered + one unacked = cap: still full */
    ck_assert_int_eq(snd(&ch, &w, mk(9), 0), EAGAIN);
    ck_assert_int_eq(snd(&ch, &s3, mk(3), 1), CORE_PENDING);

    core_ack(&ch, m1);
    CHECK_CHAN(&ch);
    ck_assert_uint_eq(ch.unacked, 0);
    ck_assert_int_eq(n_done, 1);
    ck_assert_ptr_eq(done_log[0].w, &s3);
    ck_assert_int_eq(done_log[0].status, 0);
    recv_expect(&ch, 2);
    recv_expect(&ch, 3);
}
END_TEST

START_TEST(test_nack_last_first_restores_original_order)
{
    struct core_chan ch;
    struct core_waiter w;
    struct core_msg *m[3];

    core_chan_init(&ch, 3);
    for (int i = 0; i < 3; i++) {
        m[i] = mk(i);
        ck_assert_int_eq(snd(&ch, &w, m[i], 0), 0);
    }
    ck_assert_int_eq(rcv(&ch, &w, CORE_W_ACK, 0), 0);
    ck_assert_int_eq(rcv(&ch, &w, CORE_W_ACK, 0), 0);
    ck_assert_uint_eq(ch.unacked, 2);
    ck_assert_int_eq(core_nack(&ch, m[1]), 0);
    CHECK_CHAN(&ch);
    ck_assert_int_eq(core_nack(&ch, m[0]), 0);
    CHECK_CHAN(&ch);
    ck_assert_uint_eq(ch.unacked, 0);
    ck_assert_uint_eq(ch.count, 3);
    recv_expect(&ch, 0);
    recv_expect(&ch, 1);
    recv_expect(&ch, 2);
    /* deliveries count every hand-over, redeliveries included */
    ck_assert_uint_eq(m[0]->deliveries, 2);
    ck_assert_uint_eq(m[1]->deliveries, 2);
    ck_assert_uint_eq(m[2]->deliveries, 1);
}
END_TEST

START_TEST(test_nack_may_overfill_and_serves_a_waiting_receiver)
{
    struct core_chan ch;
    struct core_waiter w, r, s;
    struct core_msg *m1 = mk(1);

    core_chan_init(&ch, 1);
    ck_assert_int_eq(snd(&ch, &w, m1, 0), 0);
    ck_assert_int_eq(rcv(&ch, &w, CORE_W_ACK, 0), 0);
    /* a receiver that arrives with the buffer empty takes a blocked sender */
    ck_assert_int_eq(snd(&ch, &s, mk(2), 1), CORE_PENDING);
    ck_assert_int_eq(rcv(&ch, &r, 0, 0), 0);
    ck_assert_int_eq(id_of(r.msg), 2);
    ck_assert_int_eq(n_done, 1);

    /* full again (one unacked), and a receiver waits */
    ck_assert_int_eq(rcv(&ch, &r, 0, 1), CORE_PENDING);
    ck_assert_int_eq(core_nack(&ch, m1), 0);
    CHECK_CHAN(&ch);
    ck_assert_int_eq(n_done, 2);
    ck_assert_ptr_eq(done_log[1].w, &r);
    ck_assert_ptr_eq(done_log[1].msg, m1);
    ck_assert_uint_eq(m1->deliveries, 2);

    /* waiting receivers take senders' messages past cap; nacked, they
     * all go back even though count then exceeds cap */
    struct core_waiter ra, rb;
    struct core_msg *m3 = mk(3), *m4 = mk(4);

    ck_assert_uint_eq(ch.unacked + ch.count, 0);
    ck_assert_int_eq(rcv(&ch, &ra, CORE_W_ACK, 1), CORE_PENDING);
    ck_assert_int_eq(rcv(&ch, &rb, CORE_W_ACK, 1), CORE_PENDING);
    ck_assert_int_eq(snd(&ch, &s, m3, 0), 0);
    ck_assert_int_eq(snd(&ch, &s, m4, 0), 0);
    ck_assert_uint_eq(ch.unacked, 2);
    ck_assert_int_eq(core_nack(&ch, m4), 0);
    ck_assert_int_eq(core_nack(&ch, m3), 0);
    CHECK_CHAN(&ch);
    ck_assert_uint_eq(ch.count, 2);
    ck_assert_int_eq(snd(&ch, &s, mk(5), 0), EAGAIN);
    recv_expect(&ch, 3);
    recv_expect(&ch, 4);
}
END_TEST

START_TEST(test_unbuffered_ack_receiver_keeps_sender_inflight_until_ack)
{
    struct core_chan ch;
    struct core_waiter s, r;
    struct core_msg *m = mk(1);

    core_chan_init(&ch, 0);
    ck_assert_int_eq(rcv(&ch, &r, CORE_W_ACK, 1), CORE_PENDING);
    ck_assert_int_eq(snd(&ch, &s, m, 0), CORE_PENDING);
    ck_assert_int_eq(s.state, CORE_W_INFLIGHT);
    ck_assert_ptr_eq(m->sender, &s);
    ck_assert_uint_eq(ch.unacked, 1);
    ck_assert_int_eq(n_done, 1);
    ck_assert_ptr_eq(done_log[0].w, &r);
    ck_assert_ptr_eq(done_log[0].msg, m);

    core_ack(&ch, m);
    CHECK_CHAN(&ch);
    ck_assert_int_eq(n_done, 2);
    ck_assert_ptr_eq(done_log[1].w, &s);
    ck_assert_int_eq(done_log[1].status, 0);
    ck_assert_ptr_null(m->sender);
    ck_assert_uint_eq(ch.unacked, 0);

    /* the same when the sender was there first */
    m = mk(2);
    ck_assert_int_eq(snd(&ch, &s, m, 1), CORE_PENDING);
    ck_assert_int_eq(rcv(&ch, &r, CORE_W_ACK, 0), 0);
    ck_assert_int_eq(s.state, CORE_W_INFLIGHT);
    ck_assert_uint_eq(ch.sendq.n, 0);
    ck_assert_int_eq(n_done, 2);
    core_ack(&ch, m);
    ck_assert_int_eq(n_done, 3);
    ck_assert_ptr_eq(done_log[2].w, &s);
}
END_TEST

START_TEST(test_unbuffered_nack_puts_the_sender_back_first_in_sendq)
{
    struct core_chan ch;
    struct core_waiter s1, s2, r;
    struct core_msg *m1 = mk(1);

    core_chan_init(&ch, 0);
    ck_assert_int_eq(snd(&ch, &s1, m1, 1), CORE_PENDING);
    ck_assert_int_eq(snd(&ch, &s2, mk(2), 1), CORE_PENDING);
    ck_assert_int_eq(rcv(&ch, &r, CORE_W_ACK, 0), 0);
    ck_assert_ptr_eq(r.msg, m1);
    ck_assert_int_eq(s1.state, CORE_W_INFLIGHT);
    ck_assert_int_eq(core_nack(&ch, m1), 0);
    CHECK_CHAN(&ch);
    ck_assert_int_eq(s1.state, CORE_W_QUEUED);
    ck_assert_ptr_eq(ch.sendq.first, &s1);
    ck_assert_uint_eq(ch.sendq.n, 2);
    ck_assert_int_eq(n_done, 0);

    recv_expect(&ch, 1);
    ck_assert_uint_eq(m1->deliveries, 2);
    ck_assert_int_eq(n_done, 1);
    ck_assert_ptr_eq(done_log[0].w, &s1);
    ck_assert_int_eq(done_log[0].status, 0);
    recv_expect(&ch, 2);
}
END_TEST

START_TEST(test_unbuffered_nack_hands_the_sender_to_a_waiting_receiver)
{
    struct core_chan ch;
    struct core_waiter s, r1, r2;
    struct core_msg *m = mk(1);

    core_chan_init(&ch, 0);
    ck_assert_int_eq(snd(&ch, &s, m, 1), CORE_PENDING);
    ck_assert_int_eq(rcv(&ch, &r1, CORE_W_ACK, 0), 0);
    ck_assert_int_eq(rcv(&ch, &r2, CORE_W_ACK, 1), CORE_PENDING);
    ck_assert_int_eq(core_nack(&ch, m), 0);
    CHECK_CHAN(&ch);
    /* r2 holds it now, unacked, and the sender still waits on that */
    ck_assert_int_eq(n_done, 1);
    ck_assert_ptr_eq(done_log[0].w, &r2);
    ck_assert_ptr_eq(done_log[0].msg, m);
    ck_assert_int_eq(s.state, CORE_W_INFLIGHT);
    ck_assert_uint_eq(ch.unacked, 1);
    core_ack(&ch, m);
    ck_assert_int_eq(n_done, 2);
    ck_assert_ptr_eq(done_log[1].w, &s);
}
END_TEST

START_TEST(test_cancel_during_inflight_then_nack_completes_sender_with_cancel_status)
{
    struct core_chan ch;
    struct core_waiter s, r;
    struct core_msg *m = mk(1);

    core_chan_init(&ch, 0);
    ck_assert_int_eq(snd(&ch, &s, m, 1), CORE_PENDING);
    ck_assert_int_eq(rcv(&ch, &r, CORE_W_ACK, 0), 0);
    ck_assert_int_eq(core_cancel(&s, ETIMEDOUT), -1);
    ck_assert_int_eq(n_done, 0);
    ck_assert_int_eq(core_nack(&ch, m), 0);
    CHECK_CHAN(&ch);
    ck_assert_int_eq(n_done, 1);
    ck_assert_ptr_eq(done_log[0].w, &s);
    ck_assert_int_eq(done_log[0].status, ETIMEDOUT);
    ck_assert_ptr_eq(s.msg, m);
    /* not delivered: nothing is left in the channel */
    ck_assert_uint_eq(ch.count + ch.sendq.n + ch.unacked, 0);
    ck_assert_int_eq(rcv(&ch, &r, 0, 0), EAGAIN);
}
END_TEST

START_TEST(test_cancel_during_inflight_then_ack_completes_sender_with_success)
{
    struct core_chan ch;
    struct core_waiter s, r;
    struct core_msg *m = mk(1);

    core_chan_init(&ch, 0);
    ck_assert_int_eq(snd(&ch, &s, m, 1), CORE_PENDING);
    ck_assert_int_eq(rcv(&ch, &r, CORE_W_ACK, 0), 0);
    ck_assert_int_eq(core_cancel(&s, ECANCELED), -1);
    core_ack(&ch, m);
    ck_assert_int_eq(n_done, 1);
    ck_assert_int_eq(done_log[0].status, 0);
}
END_TEST

START_TEST(test_unbuffered_nack_after_close_buffers_the_message_and_sender_succeeds)
{
    struct core_chan ch;
    struct core_waiter s, r;
    struct core_msg *m = mk(1);

    core_chan_init(&ch, 0);
    ck_assert_int_eq(snd(&ch, &s, m, 1), CORE_PENDING);
    ck_assert_int_eq(rcv(&ch, &r, CORE_W_ACK, 0), 0);
    ck_assert_int_eq(core_close(&ch), 0);
    ck_assert_int_eq(n_done, 0);
    ck_assert_int_eq(core_nack(&ch, m), 0);
    CHECK_CHAN(&ch);
    ck_assert_int_eq(n_done, 1);
    ck_assert_int_eq(done_log[0].status, 0);
    recv_expect(&ch, 1);
    ck_assert_int_eq(rcv(&ch, &r, 0, 0), EPIPE);
}
END_TEST

START_TEST(test_abandoned_inflight_sender_is_never_called_and_message_survives)
{
    struct core_chan ch;
    struct core_waiter s, r;
    struct core_msg *m = mk(1), *m2 = mk(2);

    core_chan_init(&ch, 0);
    ck_assert_int_eq(snd(&ch, &s, m, 1), CORE_PENDING);
    ck_assert_int_eq(rcv(&ch, &r, CORE_W_ACK, 0), 0);
    core_abandon(&s);
    ck_assert_int_eq(s.state, CORE_W_IDLE);
    ck_assert_ptr_null(m->sender);
    /* nacked, the ownerless message waits at the head of the channel */
    ck_assert_int_eq(core_nack(&ch, m), 0);
    CHECK_CHAN(&ch);
    ck_assert_int_eq(n_done, 0);
    recv_expect(&ch, 1);

    /* acked, nobody is told */
    ck_assert_int_eq(snd(&ch, &s, m2, 1), CORE_PENDING);
    ck_assert_int_eq(rcv(&ch, &r, CORE_W_ACK, 0), 0);
    core_abandon(&s);
    core_ack(&ch, m2);
    CHECK_CHAN(&ch);
    ck_assert_int_eq(n_done, 0);
}
END_TEST

START_TEST(test_select_send_case_taken_by_ack_receiver_fires_on_ack)
{
    struct core_chan a, b;
    struct core_waiter cs[2], r;
    struct core_select sel;
    struct core_msg *m = mk(1);

    core_chan_init(&a, 0);
    core_chan_init(&b, 0);
    case_set(&cs[0], &a, CORE_SEND, m);
    case_set(&cs[1], &b, CORE_RECV, NULL);
    ck_assert_int_eq(core_select(&sel, cs, 2, 1), CORE_PENDING);
    ck_assert_int_eq(rcv(&a, &r, CORE_W_ACK, 0), 0);
    CHECK_CHAN(&b);
    /* committed: the other case is gone, done waits for the ack */
    ck_assert_uint_eq(b.recvq.n, 0);
    ck_assert_int_eq(sel.fired, 0);
    ck_assert_int_eq(cs[0].state, CORE_W_INFLIGHT);
    ck_assert_int_eq(n_done, 0);
    /* nack: back first in sendq, alone */
    ck_assert_int_eq(core_nack(&a, m), 0);
    CHECK_CHAN(&a);
    ck_assert_ptr_eq(a.sendq.first, &cs[0]);
    ck_assert_int_eq(rcv(&a, &r, CORE_W_ACK, 0), 0);
    core_ack(&a, m);
    ck_assert_int_eq(n_done, 1);
    ck_assert_ptr_eq(done_log[0].w, &cs[0]);
    ck_assert_int_eq(done_log[0].fired, 0);
    ck_assert_int_eq(done_log[0].status, 0);

    /* arriving select meeting a waiting ACK receiver goes pending too */
    ck_assert_int_eq(rcv(&a, &r, CORE_W_ACK, 1), CORE_PENDING);
    case_set(&cs[0], &a, CORE_SEND, m);
    case_set(&cs[1], &b, CORE_RECV, NULL);
    ck_assert_int_eq(core_select(&sel, cs, 2, 0), CORE_PENDING);
    ck_assert_int_eq(sel.fired, 0);
    ck_assert_uint_eq(b.recvq.n, 0);
    ck_assert_int_eq(n_done, 2);
    ck_assert_ptr_eq(done_log[1].w, &r);
    core_ack(&a, m);
    ck_assert_int_eq(n_done, 3);
    ck_assert_ptr_eq(done_log[2].w, &cs[0]);
}
END_TEST

START_TEST(test_cancel_of_a_select_case_requeued_by_nack_withdraws_it)
{
    struct core_chan ch;
    struct core_waiter cs[1], r;
    struct core_select sel;
    struct core_msg *m = mk(1);

    core_chan_init(&ch, 0);
    case_set(&cs[0], &ch, CORE_SEND, m);
    ck_assert_int_eq(core_select(&sel, cs, 1, 1), CORE_PENDING);
    ck_assert_int_eq(rcv(&ch, &r, CORE_W_ACK, 0), 0);
    ck_assert_int_eq(sel.fired, 0);
    ck_assert_int_eq(core_nack(&ch, m), 0);
    ck_assert_int_eq(cs[0].state, CORE_W_QUEUED);
    ck_assert_int_eq(core_cancel(&cs[0], ETIMEDOUT), 0);
    CHECK_CHAN(&ch);
    /* the select did not proceed after all */
    ck_assert_int_eq(sel.fired, -1);
    ck_assert_int_eq(rcv(&ch, &r, 0, 0), EAGAIN);
    ck_assert_int_eq(n_done, 0);
}
END_TEST

/* ---- destroy ------------------------------------------------------------- */

static int n_freed;

static void count_free(struct core_msg *m, void *arg)
{
    ck_assert_ptr_eq(arg, &n_freed);
    ck_assert_ptr_null(m->sender);
    n_freed++;
}

START_TEST(test_destroy_completes_waiters_with_status_and_frees_the_buffer)
{
    struct core_chan ch, ch2;
    struct core_waiter w, s[2], r[2];

    core_chan_init(&ch, 2);
    ck_assert_int_eq(snd(&ch, &w, mk(1), 0), 0);
    ck_assert_int_eq(snd(&ch, &w, mk(2), 0), 0);
    ck_assert_int_eq(snd(&ch, &s[0], mk(3), 1), CORE_PENDING);
    ck_assert_int_eq(snd(&ch, &s[1], mk(4), 1), CORE_PENDING);
    n_freed = 0;
    core_chan_destroy(&ch, ENOENT, count_free, &n_freed);
    CHECK_CHAN(&ch);
    ck_assert_int_eq(ch.dead, 1);
    ck_assert_int_eq(n_freed, 2);
    ck_assert_uint_eq(ch.count, 0);
    ck_assert_uint_eq(ch.bytes, 0);
    ck_assert_int_eq(n_done, 2);
    ck_assert_int_eq(done_log[0].status, ENOENT);
    ck_assert_int_eq(done_log[1].status, ENOENT);

    core_chan_init(&ch2, 0);
    ck_assert_int_eq(rcv(&ch2, &r[0], 0, 1), CORE_PENDING);
    ck_assert_int_eq(rcv(&ch2, &r[1], 0, 1), CORE_PENDING);
    core_chan_destroy(&ch2, ESTALE, NULL, NULL);
    CHECK_CHAN(&ch2);
    ck_assert_int_eq(n_done, 4);
    ck_assert_ptr_eq(done_log[2].w, &r[0]);
    ck_assert_int_eq(done_log[2].status, ESTALE);
    ck_assert_int_eq(done_log[3].status, ESTALE);
}
END_TEST

START_TEST(test_settling_after_destroy_stays_valid)
{
    struct core_chan ch, ch0;
    struct core_waiter w, s;
    struct core_msg *m1 = mk(1), *m2 = mk(2), *m3 = mk(3);

    /* buffered: a nack after destroy hands the message back to be freed */
    core_chan_init(&ch, 2);
    ck_assert_int_eq(snd(&ch, &w, m1, 0), 0);
    ck_assert_int_eq(snd(&ch, &w, m2, 0), 0);
    ck_assert_int_eq(rcv(&ch, &w, CORE_W_ACK, 0), 0);
    ck_assert_int_eq(rcv(&ch, &w, CORE_W_ACK, 0), 0);
    core_chan_destroy(&ch, ENOENT, NULL, NULL);
    ck_assert_int_eq(core_nack(&ch, m2), 1);
    core_ack(&ch, m1);
    CHECK_CHAN(&ch);
    ck_assert_uint_eq(ch.unacked, 0);

    /* unbuffered: the INFLIGHT sender hears the destroy status on nack */
    core_chan_init(&ch0, 0);
    ck_assert_int_eq(snd(&ch0, &s, m3, 1), CORE_PENDING);
    ck_assert_int_eq(rcv(&ch0, &w, CORE_W_ACK, 0), 0);
    core_chan_destroy(&ch0, ENOENT, NULL, NULL);
    ck_assert_int_eq(n_done, 0);
    ck_assert_int_eq(core_nack(&ch0, m3), 0);
    CHECK_CHAN(&ch0);
    ck_assert_int_eq(n_done, 1);
    ck_assert_ptr_eq(done_log[0].w, &s);
    ck_assert_int_eq(done_log[0].status, ENOENT);
}
END_TEST

/* ---- randomised conservation ------------------------------------------- */

/*
 * Random operations over three channels (cap 0, 1, 3) mixing plain and
 * select sends and recvs, blocking or not, ACK receivers, ack, nack,
 * cancel, abandon and close. Each round ends with a close (or a destroy),
 * after which every message must have been received exactly once, or have
 * come back to its sender undelivered, or (destroy) have been handed to
 * msg_free; a second receive without a nack in between fails at once.
 */
enum { R_CHANS = 3, R_SLOTS = 16, R_ROUNDS = 12, R_STEPS = 2000 };

struct rmsg {
    struct core_msg m;
    int id;                /* same layout as struct tmsg */
    int received;          /* held by a receiver (unacked or for good) */
    int failed;            /* its send ended without delivering it */
    int discarded;         /* handed back by destroy */
    struct core_chan *ch;  /* channel it was received from */
};

struct rslot {
    struct core_waiter w[3];   /* a plain op uses w[0]; a select up to 3 */
    struct core_select sel;
    int n;                     /* waiters in the current operation */
    int busy;                  /* an operation is pending */
};

static struct core_chan r_ch[R_CHANS];
static struct rslot r_slot[R_SLOTS];
static struct rmsg *r_unacked[3 * R_SLOTS];
static int r_n_unacked;
static struct rmsg *r_msgs[3 * R_STEPS];
static int r_n_msgs;
static uint64_t r_x = 0x2545f4914f6cdd1dULL;

static uint64_t r_rand(void)
{
    r_x ^= r_x << 13;
    r_x ^= r_x >> 7;
    r_x ^= r_x << 17;
    return r_x;
}

static struct rmsg *rm(struct core_msg *m)
{
    return (struct rmsg *)m;
}

static void r_receive(struct core_waiter *w)
{
    struct rmsg *m = rm(w->msg);

    ck_assert_int_eq(m->received, 0);
    ck_assert_int_eq(m->failed + m->discarded, 0);
    m->received = 1;
    m->ch = w->ch;
    if (w->flags & CORE_W_ACK) {
        ck_assert_int_lt(r_n_unacked, 3 * R_SLOTS);
        r_unacked[r_n_unacked++] = m;
    }
}

/* The send cases of sl's operation, other than except, did not deliver. */
static void r_unsent(struct rslot *sl, int except)
{
    for (int i = 0; i < sl->n; i++) {
        struct core_waiter *c = &sl->w[i];

        if (i != except && c->op == CORE_SEND && c->state != CORE_W_INFLIGHT)
            rm(c->msg)->failed = 1;
    }
}

/* One operation of sl ended with w (its fired case, for a select). */
static void r_outcome(struct rslot *sl, struct core_waiter *w)
{
    int idx = (int)(w - sl->w);

    r_unsent(sl, idx);
    if (w->op == CORE_SEND && w->status != 0)
        rm(w->msg)->failed = 1;
    else if (w->op == CORE_RECV && w->status == 0)
        r_receive(w);
}

static void r_done(struct core_waiter *w)
{
    struct rslot *sl = w->ctx;

    ck_assert(sl->busy);
    if (w->sel)
        ck_assert_int_eq(w->sel->fired, w->index);
    sl->busy = 0;
    r_outcome(sl, w);
}

static int r_idle(const struct rslot *sl)
{
    for (int i = 0; i < sl->n; i++)
        if (sl->w[i].state != CORE_W_IDLE)
            return 0;
    return 1;
}

static void r_setw(struct rslot *sl, int i, struct core_chan *ch, int op, unsigned flags)
{
    struct core_waiter *w = &sl->w[i];

    memset(w, 0, sizeof *w);
    w->op = op;
    w->ch = ch;
    w->flags = flags;
    w->done = r_done;
    w->ctx = sl;
    if (op == CORE_SEND) {
        struct rmsg *m = calloc(1, sizeof *m);

        ck_assert_ptr_nonnull(m);
        ck_assert_int_lt(r_n_msgs, 3 * R_STEPS);
        m->id = r_n_msgs;
        m->m.len = (size_t)(r_n_msgs % 5);
        r_msgs[r_n_msgs++] = m;
        w->msg = &m->m;
    }
}

static void r_discard(struct core_msg *m, void *arg)
{
    (void)arg;
    rm(m)->discarded = 1;
}

static void r_check_all(void)
{
    for (int c = 0; c < R_CHANS; c++)
        CHECK_CHAN(&r_ch[c]);
}

static void r_settle(int k, int ack)
{
    struct rmsg *m = r_unacked[k];

    r_unacked[k] = r_unacked[--r_n_unacked];
    if (ack) {
        core_ack(m->ch, &m->m);
    } else {
        m->received = 0;
        if (core_nack(m->ch, &m->m))
            m->discarded = 1;
    }
}

static void r_step(void)
{
    uint64_t x = r_rand();
    unsigned op = (unsigned)(x % 100);
    struct rslot *sl = &r_slot[(x >> 8) % R_SLOTS];
    struct core_chan *ch = &r_ch[(x >> 16) % R_CHANS];
    unsigned flags = ((x >> 20) & 1) ? CORE_W_ACK : 0;
    int block = (int)((x >> 21) & 3) != 0;
    int rc;

    if (op < 70 && !sl->busy) {
        int kind = (int)((x >> 24) % 3);

        if (kind < 2) {
            sl->n = 1;
            r_setw(sl, 0, ch, kind == 0 ? CORE_SEND : CORE_RECV, flags);
            rc = kind == 0 ? core_send(ch, &sl->w[0], block) : core_recv(ch, &sl->w[0], block);
            if (rc == CORE_PENDING)
                sl->busy = 1;
            else
                r_outcome(sl, &sl->w[0]);
            return;
        }
        sl->n = 1 + (int)((x >> 28) % 3);
        for (int i = 0; i < sl->n; i++) {
            uint64_t y = x >> (32 + 8 * i);
            struct core_chan *cch = (y >> 2) % 8 == 0 ? NULL : &r_ch[(y >> 3) % R_CHANS];

            r_setw(sl, i, cch, (y & 1) ? CORE_SEND : CORE_RECV,
                   ((y >> 1) & 1) ? CORE_W_ACK : 0);
        }
        rc = core_select(&sl->sel, sl->w, sl->n, block);
        if (rc == CORE_PENDING)
            sl->busy = 1;
        else if (rc == CORE_WOULDBLOCK)
            r_unsent(sl, -1);
        else
            r_outcome(sl, &sl->w[rc]);
    } else if (op < 78 && sl->busy) {
        /* -1 with every case IDLE: a select of nil cases, which only its
         * deadline ends */
        if (core_cancel(&sl->w[(x >> 30) % (uint64_t)sl->n], ETIMEDOUT) == 0 || r_idle(sl)) {
            sl->busy = 0;
            r_unsent(sl, -1);
        }
    } else if (op < 81 && sl->busy) {
        r_unsent(sl, -1);
        sl->busy = 0;
        core_abandon(&sl->w[0]);
    } else if (op < 99 && r_n_unacked > 0) {
        r_settle((int)((x >> 40) % (uint64_t)r_n_unacked), (int)((x >> 50) & 1));
    } else if (op == 99 && !ch->closed && (x >> 56) % 8 == 0) {
        ck_assert_int_eq(core_close(ch), 0);
    }
}

/* Close or destroy everything, settle and drain, then account for each message. */
static void r_finish(int destroy)
{
    struct core_waiter w;

    for (int c = 0; c < R_CHANS; c++) {
        if (destroy)
            core_chan_destroy(&r_ch[c], ENOENT, r_discard, NULL);
        else if (!r_ch[c].closed)
            ck_assert_int_eq(core_close(&r_ch[c]), 0);
    }
    r_check_all();
    while (r_n_unacked)
        r_settle(r_n_unacked - 1, (int)(r_rand() & 1));
    for (int i = 0; i < R_SLOTS; i++) {
        struct rslot *sl = &r_slot[i];

        if (sl->busy && r_idle(sl)) {
            ck_assert_int_eq(core_cancel(&sl->w[0], ETIMEDOUT), -1);
            r_unsent(sl, -1);
            sl->busy = 0;
        }
        ck_assert_msg(!sl->busy, "slot %d still pending after close and settle", i);
    }
    for (int c = 0; c < R_CHANS && !destroy; c++) {
        int rc;

        w.ctx = NULL;
        while ((rc = rcv(&r_ch[c], &w, 0, 1)) == 0) {
            struct rmsg *m = rm(w.msg);

            ck_assert_int_eq(m->received, 0);
            m->received = 1;
        }
        ck_assert_int_eq(rc, EPIPE);
    }
    r_check_all();
    for (int i = 0; i < r_n_msgs; i++) {
        struct rmsg *m = r_msgs[i];

        ck_assert_msg(m->received + m->failed + m->discarded == 1,
                      "message %d: received %d failed %d discarded %d", m->id, m->received,
                      m->failed, m->discarded);
        free(m);
    }
    r_n_msgs = 0;
}

START_TEST(test_random_operations_never_lose_or_duplicate_a_message)
{
    static const size_t caps[R_CHANS] = {0, 1, 3};

    done_hook = r_done;
    for (int round = 0; round < R_ROUNDS; round++) {
        for (int c = 0; c < R_CHANS; c++)
            core_chan_init(&r_ch[c], caps[c]);
        memset(r_slot, 0, sizeof r_slot);
        r_n_unacked = 0;
        for (int step = 0; step < R_STEPS; step++) {
            r_step();
            r_check_all();
        }
        r_finish(round % 3 == 2);
    }
    done_hook = NULL;
}
END_TEST

/* ---- suite --------------------------------------------------------------- */

static Suite *core_suite(void)
{
    Suite *s = suite_create("core");
    struct {
        const char *name;
        const TTest *tests[16];
    } groups[] = {
        {"rendezvous",
         {test_unbuffered_send_pends_until_a_receiver_takes_it,
          test_unbuffered_recv_pends_until_a_sender_arrives,
          test_unbuffered_nonblocking_ops_are_eagain_and_change_nothing,
          test_blocked_senders_are_served_fifo, test_blocked_receivers_are_served_fifo}},
        {"buffer",
         {test_buffered_messages_come_out_fifo, test_bytes_track_buffered_payload,
          test_send_on_full_pends_then_completes_when_a_receiver_makes_room,
          test_a_zero_byte_message_is_a_message}},
        {"close",
         {test_close_wakes_every_receiver_with_epipe,
          test_close_wakes_every_sender_with_epipe_and_keeps_their_messages,
          test_close_of_a_closed_channel_is_epipe,
          test_recv_drains_the_buffer_after_close_then_gets_epipe}},
        {"select",
         {test_select_picks_uniformly_among_ready_cases,
          test_select_withdraws_its_other_cases_before_done,
          test_select_never_pairs_its_own_send_with_its_own_recv,
          test_select_own_cases_stay_apart_when_an_ack_frees_room,
          test_select_may_name_one_channel_in_several_cases,
          test_select_queues_its_cases_in_random_order,
          test_select_nil_case_never_proceeds, test_select_with_no_cases_waits_or_would_block,
          test_select_send_case_on_closed_channel_proceeds_with_epipe,
          test_select_pending_cases_are_woken_by_close}},
        {"cancel",
         {test_a_cancelled_send_is_never_delivered, test_a_cancelled_recv_never_receives,
          test_cancelling_one_case_withdraws_the_whole_select,
          test_abandon_of_a_queued_waiter_leaves_no_trace}},
        {"ack",
         {test_unacked_messages_count_against_capacity,
          test_nack_last_first_restores_original_order,
          test_nack_may_overfill_and_serves_a_waiting_receiver,
          test_unbuffered_ack_receiver_keeps_sender_inflight_until_ack,
          test_unbuffered_nack_puts_the_sender_back_first_in_sendq,
          test_unbuffered_nack_hands_the_sender_to_a_waiting_receiver,
          test_cancel_during_inflight_then_nack_completes_sender_with_cancel_status,
          test_cancel_during_inflight_then_ack_completes_sender_with_success,
          test_unbuffered_nack_after_close_buffers_the_message_and_sender_succeeds,
          test_abandoned_inflight_sender_is_never_called_and_message_survives,
          test_select_send_case_taken_by_ack_receiver_fires_on_ack,
          test_cancel_of_a_select_case_requeued_by_nack_withdraws_it}},
        {"destroy",
         {test_destroy_completes_waiters_with_status_and_frees_the_buffer,
          test_settling_after_destroy_stays_valid}},
        {"random", {test_random_operations_never_lose_or_duplicate_a_message}},
    };

    for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++) {
        TCase *tc = tcase_create(groups[g].name);

        tcase_set_timeout(tc, 20);
        tcase_add_checked_fixture(tc, setup, teardown);
        for (int i = 0; groups[g].tests[i]; i++)
            tcase_add_test(tc, groups[g].tests[i]);
        suite_add_tcase(s, tc);
    }
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(core_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
