/*
 * semantic_waits.c: how waiting ends, per DESIGN.md section 1: deadlines
 * (never early, nothing delivered), chan_cancel (ECANCELED, no effect on
 * any channel), FIFO order of blocked senders and receivers, and the
 * invariant that each message reaches exactly one receiver.
 */
#include <stdlib.h>

#include "semantic.h"

/* ---- deadlines ---------------------------------------------------------- */

/* Sleep in a coroutine so that chan_join on it can time out. */
static void waits_sleeper(void *arg)
{
    int64_t *until = arg;
    chan_sleep(*until);
}

START_TEST(test_timed_out_calls_return_no_earlier_than_their_deadline)
{
    chan_t *u = sem_mk(0), *full = sem_mk(1);
    struct chan_case cs[2];
    chan_msg_t m;
    long v = 0;
    int64_t dl, x = 3;

    SEM_RETURNS(sem_send_int(full, 1, 0), 0);
    for (int round = 0; round < 3; round++) {
        int64_t ms = 5 + 15 * round;

        dl = sem_in(ms);
        SEM_FAILS(sem_recv_int(u, &v, dl), ETIMEDOUT);
        ck_assert_msg(chan_now() >= dl, "recv timed out early");
        dl = sem_in(ms);
        SEM_FAILS(sem_send_int(u, 1, dl), ETIMEDOUT);
        ck_assert_msg(chan_now() >= dl, "send on cap 0 timed out early");
        dl = sem_in(ms);
        SEM_FAILS(sem_send_int(full, 2, dl), ETIMEDOUT);
        ck_assert_msg(chan_now() >= dl, "send on a full channel timed out early");
        sem_case_recv(&cs[0], u, &m);
        sem_case_send(&cs[1], full, &x, sizeof x);
        dl = sem_in(ms);
        SEM_FAILS(chan_select(cs, 2, dl), ETIMEDOUT);
        ck_assert_msg(chan_now() >= dl, "select timed out early");
        dl = sem_in(ms);
        SEM_RETURNS(chan_sleep(dl), 0);
        ck_assert_msg(chan_now() >= dl, "sleep returned early");
    }
    int64_t until = sem_in(200);
    int cr = sem_go(waits_sleeper, &until);
    dl = sem_in(20);
    SEM_FAILS(chan_join(cr, dl), ETIMEDOUT);
    ck_assert_msg(chan_now() >= dl, "join timed out early");
    sem_join(cr, 2000);
}
END_TEST

/* Sleep as an sem_op: ret is chan_sleep's, at when it returned. */
static void waits_op_sleep(void *arg)
{
    struct sem_op *o = arg;

    o->ret = chan_sleep(o->deadline);
    o->err = errno;
    o->at = chan_now();
    o->done = 1;
}

START_TEST(test_staggered_deadlines_each_expire_no_earlier_than_their_own)
{
    enum { N = 48 };
    void (*kinds[3])(void *) = {sem_op_recv, sem_op_send, waits_op_sleep};
    chan_t *empty = sem_mk(0), *full = sem_mk(1);
    struct sem_op o[N];
    struct sem_group g = {0};
    int64_t base;

    SEM_RETURNS(sem_send_int(full, -1, 0), 0);
    base = sem_in(30);

    /*
     * Two deadlines per millisecond: when one expires, the others close
     * behind it must keep waiting until their own.
     */
    for (int i = 0; i < N; i++) {
        o[i] = (struct sem_op){.ch = i % 3 ? full : empty, .v = i, .deadline = base + i / 2};
        sem_group_go(&g, kinds[i % 3], &o[i]);
    }
    sem_group_join(&g, sem_in(5000));
    for (int i = 0; i < N; i++) {
        if (i % 3 == 2)
            ck_assert_msg(o[i].ret == 0, "sleep %d returned %d", i, o[i].ret);
        else
            ck_assert_msg(o[i].ret == -1 && o[i].err == ETIMEDOUT,
                          "waiter %d returned %d (%s), want ETIMEDOUT", i, o[i].ret,
                          strerror(o[i].err));
        ck_assert_msg(o[i].at >= o[i].deadline, "waiter %d woke %lld ms before its deadline", i,
                      (long long)(o[i].deadline - o[i].at));
    }
    sem_settle(empty, 0, 0);
    sem_settle(full, 0, 0);
    SEM_RETURNS(chan_len(full), 1);
}
END_TEST

START_TEST(test_timed_out_send_delivers_nothing)
{
    chan_t *u = sem_mk(0), *b = sem_mk(1);
    long v;

    SEM_FAILS(sem_send_int(u, 1, sem_in(20)), ETIMEDOUT);
    sem_settle(u, 0, 0);
    SEM_FAILS(sem_recv_int(u, &v, 0), EAGAIN);

    SEM_RETURNS(sem_send_int(b, 10, 0), 0);
    SEM_FAILS(sem_send_int(b, 11, sem_in(20)), ETIMEDOUT);
    sem_settle(b, 0, 0);
    SEM_RETURNS(sem_recv_int(b, &v, 0), 1);
    ck_assert_int_eq(v, 10);
    SEM_FAILS(sem_recv_int(b, &v, 0), EAGAIN);
    SEM_RETURNS(chan_len(b), 0);
}
END_TEST

START_TEST(test_timed_out_recv_consumes_nothing_and_leaves_no_waiter)
{
    chan_t *u = sem_mk(0), *b = sem_mk(1);
    long v;

    SEM_FAILS(sem_recv_int(u, &v, sem_in(20)), ETIMEDOUT);
    sem_settle(u, 0, 0);
    /* A receiver left behind would take this message and lose it. */
    SEM_FAILS(sem_send_int(u, 1, 0), EAGAIN);

    SEM_FAILS(sem_recv_int(b, &v, sem_in(20)), ETIMEDOUT);
    SEM_RETURNS(sem_send_int(b, 2, 0), 0);
    SEM_RETURNS(chan_len(b), 1);
    SEM_RETURNS(sem_recv_int(b, &v, 0), 1);
    ck_assert_int_eq(v, 2);
}
END_TEST

START_TEST(test_timed_out_select_withdraws_every_case)
{
    struct sem_sel o = {.r = sem_mk(0), .s = sem_mk(0)};
    long v;

    o.deadline = sem_in(20);
    sem_sel_run(&o);
    ck_assert_msg(o.ret == -1 && o.err == ETIMEDOUT, "select returned %d (%s), want ETIMEDOUT",
                  o.ret, strerror(o.err));
    sem_settle(o.r, 0, 0);
    sem_settle(o.s, 0, 0);
    SEM_FAILS(sem_send_int(o.r, 1, 0), EAGAIN);
    SEM_FAILS(sem_recv_int(o.s, &v, 0), EAGAIN);
}
END_TEST

/* Sender and receiver with tiny deadlines around each other, for the race test. */
struct race {
    chan_t *ch;         /* the sender's handle */
    chan_t *rx;         /* the receiver's handle (another connection when remote) */
    long n;             /* values to try to send */
    unsigned char *sent; /* sent[i]: send of i returned 0 */
    unsigned char *got;  /* got[i]: times i was received */
    int sender_done;
    long bad;           /* unexpected results */
};

static void waits_race_sender(void *arg)
{
    struct race *r = arg;

    for (long i = 0; i < r->n; i++) {
        int ret = sem_send_int(r->ch, i, sem_in(i % 3));
        if (ret == 0)
            r->sent[i] = 1;
        else if (errno != ETIMEDOUT && errno != EAGAIN)
            r->bad++;
    }
    r->sender_done = 1;
}

static void waits_race_receiver(void *arg)
{
    struct race *r = arg;
    long v;

    for (long i = 0; !r->sender_done; i++) {
        int ret = sem_recv_int(r->rx, &v, sem_in(i % 2));
        if (ret == 1 && v >= 0 && v < r->n)
            r->got[v]++;
        else if (ret == 1 || ret == 0 || (errno != ETIMEDOUT && errno != EAGAIN))
            r->bad++;
    }
}

START_TEST(test_timeouts_racing_completions_never_lose_or_duplicate)
{
    static const size_t caps[] = {0, 2};

    for (int k = 0; k < 2; k++) {
        struct race r = {.ch = sem_mk(caps[k]), .n = sem_scale(1500, 500)};
        struct sem_group g = {0};
        long v, sent = 0, got = 0;

        r.rx = sem_peer(r.ch);
        r.sent = calloc((size_t)r.n, 1);
        r.got = calloc((size_t)r.n, 1);
        ck_assert(r.sent && r.got);
        sem_group_go(&g, waits_race_sender, &r);
        sem_group_go(&g, waits_race_receiver, &r);
        sem_group_join(&g, sem_in(sem_scale(20000, 60000)));
        while (sem_recv_int(r.ch, &v, 0) == 1)
            r.got[v]++;
        ck_assert_int_eq(r.bad, 0);
        for (long i = 0; i < r.n; i++) {
            ck_assert_msg(r.got[i] == r.sent[i],
                          "cap %zu value %ld: send said %s, received %d times", caps[k], i,
                          r.sent[i] ? "delivered" : "not delivered", r.got[i]);
            sent += r.sent[i];
            got += r.got[i];
        }
        ck_assert_int_eq(sent, got);
        free(r.sent);
        free(r.got);
    }
}
END_TEST

/* ---- cancel ------------------------------------------------------------ */

START_TEST(test_cancelled_send_fails_with_ecanceled_and_delivers_nothing)
{
    static const size_t caps[] = {0, 1};

    for (int k = 0; k < 2; k++) {
        chan_t *c = sem_mk(caps[k]);
        struct sem_op s = {.ch = sem_peer(c), .v = 66, .deadline = -1};
        long v;

        if (caps[k])
            SEM_RETURNS(sem_send_int(c, 65, 0), 0);
        int cr = sem_go(sem_op_send, &s);
        sem_settle(c, 1, 0);
        SEM_RETURNS(chan_cancel(cr), 0);
        sem_join(cr, 2000);
        ck_assert_msg(s.ret == -1 && s.err == ECANCELED,
                      "cap %zu: cancelled send returned %d (%s), want -1 ECANCELED", caps[k],
                      s.ret, strerror(s.err));
        sem_settle(c, 0, 0);
        if (caps[k]) {
            SEM_RETURNS(sem_recv_int(c, &v, 0), 1);
            ck_assert_int_eq(v, 65);
        }
        SEM_FAILS(sem_recv_int(c, &v, 0), EAGAIN);
    }
}
END_TEST

START_TEST(test_cancelled_recv_fails_with_ecanceled_and_consumes_nothing)
{
    static const size_t caps[] = {0, 1};

    for (int k = 0; k < 2; k++) {
        chan_t *c = sem_mk(caps[k]);
        struct sem_op r = {.ch = sem_peer(c), .v = -1, .deadline = -1};
        long v;

        int cr = sem_go(sem_op_recv, &r);
        sem_settle(c, 0, 1);
        SEM_RETURNS(chan_cancel(cr), 0);
        sem_join(cr, 2000);
        ck_assert_msg(r.ret == -1 && r.err == ECANCELED,
                      "cap %zu: cancelled recv returned %d (%s), want -1 ECANCELED", caps[k],
                      r.ret, strerror(r.err));
        ck_assert_int_eq(r.v, -1);
        sem_settle(c, 0, 0);
        if (caps[k] == 0) {
            SEM_FAILS(sem_send_int(c, 1, 0), EAGAIN);
        } else {
            SEM_RETURNS(sem_send_int(c, 2, 0), 0);
            SEM_RETURNS(chan_len(c), 1);
            SEM_RETURNS(sem_recv_int(c, &v, 0), 1);
            ck_assert_int_eq(v, 2);
        }
    }
}
END_TEST

START_TEST(test_cancelled_select_fails_with_ecanceled_and_withdraws_every_case)
{
    struct sem_sel o = {.r = sem_mk(0), .s = sem_mk(0), .deadline = -1};
    long v;

    int cr = sem_go(sem_sel_run, &o);
    sem_settle(o.r, 0, 1);
    sem_settle(o.s, 1, 0);
    SEM_RETURNS(chan_cancel(cr), 0);
    sem_join(cr, 2000);
    ck_assert_msg(o.ret == -1 && o.err == ECANCELED,
                  "cancelled select returned %d (%s), want -1 ECANCELED", o.ret,
                  strerror(o.err));
    ck_assert(o.m.data == NULL);
    sem_settle(o.r, 0, 0);
    sem_settle(o.s, 0, 0);
    SEM_FAILS(sem_send_int(o.r, 1, 0), EAGAIN);
    SEM_FAILS(sem_recv_int(o.s, &v, 0), EAGAIN);
}
END_TEST

/* Block in recv, get cancelled, then try every other blocking call. */
struct after_cancel {
    chan_t *c;
    int first, recv_again, send, sel, sleep_, errs[4];
};

static void waits_after_cancel(void *arg)
{
    struct after_cancel *a = arg;
    struct chan_case none[1];
    long v;

    a->first = sem_recv_int(a->c, &v, -1);
    a->errs[0] = errno;
    errno = 0;
    a->recv_again = sem_recv_int(a->c, &v, -1);
    a->errs[1] = errno;
    errno = 0;
    a->send = sem_send_int(a->c, 1, -1);
    a->errs[2] = errno;
    errno = 0;
    a->sel = chan_select(none, 0, -1);
    a->errs[3] = errno;
    a->sleep_ = chan_sleep(sem_in(60000)) == -1 && errno == ECANCELED;
}

START_TEST(test_cancelled_coroutine_fails_its_later_blocking_calls)
{
    struct after_cancel a = {.c = sem_mk(0)};
    long v;

    int cr = sem_go(waits_after_cancel, &a);
    sem_settle(a.c, 0, 1);
    SEM_RETURNS(chan_cancel(cr), 0);
    sem_join(cr, 3000);
    ck_assert_msg(a.first == -1 && a.errs[0] == ECANCELED, "blocked recv: %d %s", a.first,
                  strerror(a.errs[0]));
    ck_assert_msg(a.recv_again == -1 && a.errs[1] == ECANCELED, "later recv: %d %s",
                  a.recv_again, strerror(a.errs[1]));
    ck_assert_msg(a.send == -1 && a.errs[2] == ECANCELED, "later send: %d %s", a.send,
                  strerror(a.errs[2]));
    ck_assert_msg(a.sel == -1 && a.errs[3] == ECANCELED, "later select: %d %s", a.sel,
                  strerror(a.errs[3]));
    ck_assert_msg(a.sleep_, "later sleep did not fail with ECANCELED");
    sem_settle(a.c, 0, 0);
    SEM_FAILS(sem_send_int(a.c, 1, 0), EAGAIN);
    SEM_FAILS(sem_recv_int(a.c, &v, 0), EAGAIN);
}
END_TEST

/* ---- FIFO waiters ------------------------------------------------------ */

/* A receiver that waits in a select (with a never-ready second case). */
struct sel_recv {
    chan_t *c, *idle;
    long v;
    int ret;
};

static void waits_sel_recv(void *arg)
{
    struct sel_recv *o = arg;
    struct chan_case cs[2];
    chan_msg_t m[2];

    sem_case_recv(&cs[0], o->idle, &m[0]);
    sem_case_recv(&cs[1], o->c, &m[1]);
    o->ret = chan_select(cs, 2, sem_in(5000));
    if (o->ret == 1 && cs[1].result == 1) {
        o->v = sem_msg_int(&m[1]);
        chan_msg_free(&m[1]);
    }
}

START_TEST(test_blocked_receivers_are_served_in_arrival_order)
{
    static const size_t caps[] = {0, 2};
    enum { N = 6 };

    for (int k = 0; k < 2; k++) {
        chan_t *c = sem_mk(caps[k]), *idle = sem_mk(0);
        struct sem_op r[N];
        struct sel_recv sr[N];
        int cr[N];

        /* Plain receivers and select receivers alternate in one queue. */
        for (int i = 0; i < N; i++) {
            if (i % 2 == 0) {
                r[i] = (struct sem_op){.ch = i % 4 ? c : sem_peer(c), .v = -1,
                                       .deadline = sem_in(5000)};
                cr[i] = sem_go(sem_op_recv, &r[i]);
            } else {
                sr[i] = (struct sel_recv){.c = c, .idle = idle, .v = -1};
                cr[i] = sem_go(waits_sel_recv, &sr[i]);
            }
            sem_settle(c, 0, i + 1);
        }
        for (long i = 0; i < N; i++)
            SEM_RETURNS(sem_send_int(c, i, sem_in(2000)), 0);
        for (int i = 0; i < N; i++) {
            sem_join(cr[i], 3000);
            long got = i % 2 == 0 ? r[i].v : sr[i].v;
            ck_assert_msg(got == i, "cap %zu: receiver %d (arrived %d-th) got %ld", caps[k], i,
                          i, got);
        }
    }
}
END_TEST

/* A sender that waits in a select (with a never-ready second case). */
static void waits_sel_send(void *arg)
{
    struct sem_op *o = arg;
    struct chan_case cs[2];
    chan_msg_t m;
    int64_t w = o->v;

    sem_case_recv(&cs[0], NULL, &m);
    sem_case_send(&cs[1], o->ch, &w, sizeof w);
    o->ret = chan_select(cs, 2, o->deadline);
    o->err = errno;
    o->done = 1;
}

START_TEST(test_blocked_senders_complete_in_arrival_order)
{
    static const size_t caps[] = {0, 2};
    enum { N = 6 };

    for (int k = 0; k < 2; k++) {
        chan_t *c = sem_mk(caps[k]);
        struct sem_op s[N];
        int cr[N];
        long v;

        for (size_t i = 0; i < caps[k]; i++)
            SEM_RETURNS(sem_send_int(c, 100 + (long)i, 0), 0);
        for (int i = 0; i < N; i++) {
            /* Plain senders alternate between the two connections. */
            s[i] = (struct sem_op){.ch = i % 4 == 2 ? sem_peer(c) : c, .v = i,
                                   .deadline = sem_in(5000)};
            cr[i] = sem_go(i % 2 ? waits_sel_send : sem_op_send, &s[i]);
            sem_settle(c, i + 1, 0);
        }
        for (size_t i = 0; i < caps[k]; i++) {
            SEM_RETURNS(sem_recv_int(c, &v, sem_in(2000)), 1);
            ck_assert_int_eq(v, 100 + (long)i);
        }
        for (long i = 0; i < N; i++) {
            SEM_RETURNS(sem_recv_int(c, &v, sem_in(2000)), 1);
            ck_assert_msg(v == i, "cap %zu: message %ld came out at position %ld", caps[k], v,
                          i);
        }
        for (int i = 0; i < N; i++) {
            sem_join(cr[i], 3000);
            ck_assert_msg(s[i].ret == (i % 2 ? 1 : 0), "sender %d returned %d (%s)", i,
                          s[i].ret, strerror(s[i].err));
        }
    }
}
END_TEST

/* ---- exactly once ------------------------------------------------------- */

struct consumer {
    chan_t *c, *idle;
    int use_select;
    long *seen; /* seen[v]: times v was received, shared */
    long count;
};

static void waits_consumer(void *arg)
{
    struct consumer *o = arg;
    long v;

    for (;;) {
        if (o->use_select) {
            struct chan_case cs[2];
            chan_msg_t m[2];
            sem_case_recv(&cs[0], o->c, &m[0]);
            sem_case_recv(&cs[1], o->idle, &m[1]);
            int got = chan_select(cs, 2, -1);
            ck_assert_msg(got == 0, "consumer select returned %d (%s)", got, strerror(errno));
            if (cs[0].result == 0)
                return;
            v = sem_msg_int(&m[0]);
            chan_msg_free(&m[0]);
        } else {
            int r = sem_recv_int(o->c, &v, -1);
            ck_assert_msg(r >= 0, "consumer recv: %s", strerror(errno));
            if (r == 0)
                return;
        }
        o->seen[v]++;
        o->count++;
        if (v % 7 == 0)
            chan_yield();
    }
}

struct producer {
    chan_t *c;
    long from, to;
};

static void waits_producer(void *arg)
{
    struct producer *p = arg;

    for (long i = p->from; i < p->to; i++)
        ck_assert_msg(sem_send_int(p->c, i, -1) == 0, "producer send: %s", strerror(errno));
}

START_TEST(test_each_message_is_delivered_to_exactly_one_receiver)
{
    static const size_t caps[] = {0, 4};
    enum { NCONS = 8, NPROD = 2 };

    for (int k = 0; k < 2; k++) {
        const long n = sem_scale(20000, 5000);
        chan_t *c = sem_mk(caps[k]), *idle = sem_mk(0);
        struct consumer cons[NCONS];
        struct producer prod[NPROD];
        struct sem_group pg = {0}, cg = {0};
        long *seen = calloc((size_t)n, sizeof *seen), total = 0;

        ck_assert(seen != NULL);
        for (int i = 0; i < NCONS; i++) {
            /* Plain consumers on the peer connection, select consumers on the first. */
            cons[i] = (struct consumer){.c = i % 2 ? c : sem_peer(c), .idle = idle,
                                        .use_select = i % 2, .seen = seen};
            sem_group_go(&cg, waits_consumer, &cons[i]);
        }
        for (int i = 0; i < NPROD; i++) {
            prod[i] = (struct producer){.c = i ? sem_peer(c) : c, .from = i * n / NPROD,
                                        .to = (i + 1) * n / NPROD};
            sem_group_go(&pg, waits_producer, &prod[i]);
        }
        sem_group_join(&pg, sem_in(sem_scale(20000, 60000)));
        SEM_RETURNS(chan_close(c), 0);
        sem_group_join(&cg, sem_in(10000));
        for (long v = 0; v < n; v++)
            ck_assert_msg(seen[v] == 1, "cap %zu: message %ld received %ld times", caps[k], v,
                          seen[v]);
        for (int i = 0; i < NCONS; i++)
            total += cons[i].count;
        ck_assert_int_eq(total, n);
        free(seen);
    }
}
END_TEST

void semantic_waits_add(Suite *s, double timeout)
{
    TCase *tc;

    tc = tcase_create("deadline");
    tcase_add_checked_fixture(tc, sem_env_setup, sem_env_teardown);
    tcase_set_timeout(tc, timeout);
    tcase_add_test(tc, test_timed_out_calls_return_no_earlier_than_their_deadline);
    tcase_add_test(tc, test_staggered_deadlines_each_expire_no_earlier_than_their_own);
    tcase_add_test(tc, test_timed_out_send_delivers_nothing);
    tcase_add_test(tc, test_timed_out_recv_consumes_nothing_and_leaves_no_waiter);
    tcase_add_test(tc, test_timed_out_select_withdraws_every_case);
    tcase_add_test(tc, test_timeouts_racing_completions_never_lose_or_duplicate);
    suite_add_tcase(s, tc);

    tc = tcase_create("cancel");
    tcase_add_checked_fixture(tc, sem_env_setup, sem_env_teardown);
    tcase_set_timeout(tc, timeout);
    tcase_add_test(tc, test_cancelled_send_fails_with_ecanceled_and_delivers_nothing);
    tcase_add_test(tc, test_cancelled_recv_fails_with_ecanceled_and_consumes_nothing);
    tcase_add_test(tc, test_cancelled_select_fails_with_ecanceled_and_withdraws_every_case);
    tcase_add_test(tc, test_cancelled_coroutine_fails_its_later_blocking_calls);
    suite_add_tcase(s, tc);

    tc = tcase_create("fifo");
    tcase_add_checked_fixture(tc, sem_env_setup, sem_env_teardown);
    tcase_set_timeout(tc, timeout);
    tcase_add_test(tc, test_blocked_receivers_are_served_in_arrival_order);
    tcase_add_test(tc, test_blocked_senders_complete_in_arrival_order);
    tcase_add_test(tc, test_each_message_is_delivered_to_exactly_one_receiver);
    suite_add_tcase(s, tc);
}
