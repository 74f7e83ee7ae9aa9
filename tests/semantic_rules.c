/*
 * semantic_rules.c: DESIGN.md section 1 rule by rule: send 1-5, recv 1-5,
 * close and select with their decided edge cases, each test named after
 * the behaviour it pins. Blocked calls run in their own coroutines
 * (struct sem_op) so a test can look at them while they wait.
 */
#include <math.h>
#include <stdlib.h>

#include "semantic.h"

/* ---- send and recv ---------------------------------------------------- */

START_TEST(test_unbuffered_send_completes_only_when_a_receiver_takes_it)
{
    chan_t *c = sem_mk(0);
    struct sem_op s = {.ch = sem_peer(c), .v = 7, .deadline = -1};
    struct sem_op r = {.ch = sem_peer(c), .deadline = -1};
    long v = 0;

    int cr = sem_go(sem_op_send, &s);
    sem_settle(c, 1, 0);
    ck_assert_msg(!s.done, "send on cap 0 returned %d before any receiver came", s.ret);
    SEM_RETURNS(chan_len(c), 0);
    SEM_RETURNS(sem_recv_int(c, &v, sem_in(2000)), 1);
    ck_assert_int_eq(v, 7);
    sem_join(cr, 2000);
    ck_assert_int_eq(s.ret, 0);

    /* The other way round: the receiver waits first and the send hands over. */
    cr = sem_go(sem_op_recv, &r);
    sem_settle(c, 0, 1);
    ck_assert(!r.done);
    SEM_RETURNS(sem_send_int(c, 8, sem_in(2000)), 0);
    sem_join(cr, 2000);
    ck_assert_int_eq(r.ret, 1);
    ck_assert_int_eq(r.v, 8);
    SEM_RETURNS(chan_len(c), 0);
    SEM_RETURNS(chan_cap(c), 0);
}
END_TEST

START_TEST(test_buffered_channel_keeps_messages_in_fifo_order)
{
    const long n = 10;
    chan_t *c = sem_mk((size_t)n);
    long v;

    SEM_RETURNS(chan_cap(c), n);
    for (long i = 0; i < n; i++) {
        SEM_RETURNS(chan_len(c), i);
        SEM_RETURNS(sem_send_int(c, 100 + i, 0), 0);
    }
    SEM_RETURNS(chan_len(c), n);
    for (long i = 0; i < n; i++) {
        SEM_RETURNS(sem_recv_int(c, &v, 0), 1);
        ck_assert_msg(v == 100 + i, "message %ld came out as %ld", 100 + i, v);
    }
    SEM_RETURNS(chan_len(c), 0);
}
END_TEST

START_TEST(test_send_on_full_channel_waits_until_a_recv_makes_room)
{
    chan_t *c = sem_mk(3);
    struct sem_op s = {.ch = c, .v = 99, .deadline = -1};
    long v;

    for (long i = 0; i < 3; i++)
        SEM_RETURNS(sem_send_int(c, i, 0), 0);
    int cr = sem_go(sem_op_send, &s);
    sem_settle(c, 1, 0);
    ck_assert_msg(!s.done, "send on a full channel returned %d", s.ret);
    SEM_FAILS(sem_send_int(c, 50, 0), EAGAIN);
    SEM_RETURNS(chan_len(c), 3);

    /* recv rule 1: take the head, move the waiting sender's message to the tail. */
    SEM_RETURNS(sem_recv_int(c, &v, sem_in(2000)), 1);
    ck_assert_int_eq(v, 0);
    sem_join(cr, 2000);
    ck_assert_int_eq(s.ret, 0);
    SEM_RETURNS(chan_len(c), 3);
    long want[] = {1, 2, 99};
    for (int i = 0; i < 3; i++) {
        SEM_RETURNS(sem_recv_int(c, &v, 0), 1);
        ck_assert_msg(v == want[i], "position %d holds %ld, want %ld", i, v, want[i]);
    }
    SEM_FAILS(sem_recv_int(c, &v, 0), EAGAIN);
}
END_TEST

START_TEST(test_recv_frees_a_slot_for_the_next_nonblocking_send)
{
    chan_t *c = sem_mk(1);
    long v;

    SEM_RETURNS(sem_send_int(c, 1, 0), 0);
    SEM_FAILS(sem_send_int(c, 2, 0), EAGAIN);
    SEM_RETURNS(sem_recv_int(c, &v, 0), 1);
    SEM_RETURNS(sem_send_int(c, 3, 0), 0);
    SEM_RETURNS(sem_recv_int(c, &v, 0), 1);
    ck_assert_int_eq(v, 3);
}
END_TEST

START_TEST(test_close_wakes_every_blocked_receiver_with_zero)
{
    static const size_t caps[] = {0, 2};

    for (int k = 0; k < 2; k++) {
        chan_t *c = sem_mk(caps[k]);
        struct sem_op r[4];
        int cr[4];

        for (int i = 0; i < 4; i++) {
            r[i] = (struct sem_op){.ch = i % 2 ? sem_peer(c) : c, .v = -1, .deadline = -1};
            cr[i] = sem_go(sem_op_recv, &r[i]);
        }
        sem_settle(c, 0, 4);
        SEM_RETURNS(chan_close(c), 0);
        for (int i = 0; i < 4; i++) {
            sem_join(cr[i], 2000);
            ck_assert_msg(r[i].ret == 0, "cap %zu receiver %d: recv returned %d (%s), want 0",
                          caps[k], i, r[i].ret, strerror(r[i].err));
        }
        SEM_RETURNS(sem_recv_int(c, &(long){0}, -1), 0);
    }
}
END_TEST

START_TEST(test_close_fails_every_blocked_sender_with_epipe)
{
    static const size_t caps[] = {0, 1};

    for (int k = 0; k < 2; k++) {
        chan_t *c = sem_mk(caps[k]);
        struct sem_op s[3];
        int cr[3];
        long v;

        if (caps[k])
            SEM_RETURNS(sem_send_int(c, 500, 0), 0);
        for (int i = 0; i < 3; i++) {
            s[i] = (struct sem_op){.ch = i % 2 ? sem_peer(c) : c, .v = i, .deadline = -1};
            cr[i] = sem_go(sem_op_send, &s[i]);
        }
        sem_settle(c, 3, 0);
        SEM_RETURNS(chan_close(c), 0);
        for (int i = 0; i < 3; i++) {
            sem_join(cr[i], 2000);
            ck_assert_msg(s[i].ret == -1 && s[i].err == EPIPE,
                          "cap %zu sender %d: send returned %d (%s), want -1 EPIPE", caps[k], i,
                          s[i].ret, strerror(s[i].err));
        }
        /* The buffered message survives the close; the refused ones never arrive. */
        if (caps[k]) {
            SEM_RETURNS(sem_recv_int(c, &v, 0), 1);
            ck_assert_int_eq(v, 500);
        }
        SEM_RETURNS(sem_recv_int(c, &v, 0), 0);
    }
}
END_TEST

START_TEST(test_close_of_closed_channel_fails_with_epipe)
{
    chan_t *c = sem_mk(1);

    SEM_RETURNS(chan_close(c), 0);
    SEM_FAILS(chan_close(c), EPIPE);
    SEM_FAILS(chan_close(c), EPIPE);
}
END_TEST

START_TEST(test_recv_drains_the_buffer_after_close_then_returns_zero)
{
    chan_t *c = sem_mk(5);
    long v;

    for (long i = 0; i < 5; i++)
        SEM_RETURNS(sem_send_int(c, i, 0), 0);
    SEM_RETURNS(chan_close(c), 0);
    /* send rule 1 comes before rule 4: a closed channel says EPIPE, never EAGAIN. */
    SEM_FAILS(sem_send_int(c, 9, 0), EPIPE);
    SEM_FAILS(sem_send_int(c, 9, -1), EPIPE);
    SEM_RETURNS(chan_len(c), 5);
    for (long i = 0; i < 5; i++) {
        SEM_RETURNS(sem_recv_int(c, &v, -1), 1);
        ck_assert_int_eq(v, i);
    }
    for (int i = 0; i < 3; i++) {
        SEM_RETURNS(sem_recv_int(c, &v, -1), 0);
        SEM_RETURNS(sem_recv_int(c, &v, 0), 0);
    }
    SEM_RETURNS(chan_len(c), 0);
}
END_TEST

START_TEST(test_nonblocking_calls_fail_with_eagain_and_change_nothing)
{
    chan_t *u = sem_mk(0), *b = sem_mk(2);
    long v;

    SEM_FAILS(sem_recv_int(u, &v, 0), EAGAIN);
    SEM_FAILS(sem_send_int(u, 1, 0), EAGAIN);
    SEM_FAILS(sem_recv_int(b, &v, 0), EAGAIN);
    SEM_RETURNS(sem_send_int(b, 1, 0), 0);
    SEM_RETURNS(sem_send_int(b, 2, 0), 0);
    SEM_FAILS(sem_send_int(b, 3, 0), EAGAIN);
    SEM_RETURNS(chan_len(b), 2);
    SEM_RETURNS(sem_recv_int(b, &v, 0), 1);
    ck_assert_int_eq(v, 1);
    SEM_RETURNS(sem_recv_int(b, &v, 0), 1);
    ck_assert_int_eq(v, 2);
    /* A failed nonblocking send left no sender behind for this recv to find. */
    SEM_FAILS(sem_recv_int(u, &v, 0), EAGAIN);
    SEM_FAILS(sem_recv_int(b, &v, 0), EAGAIN);
}
END_TEST

START_TEST(test_nonblocking_calls_proceed_when_a_partner_waits)
{
    chan_t *c = sem_mk(0);
    struct sem_op r = {.ch = c, .deadline = -1};
    struct sem_op s = {.ch = c, .v = 31, .deadline = -1};
    long v;

    /* send rule 2 comes before rule 4, and recv rule 2 before rule 4. */
    int cr = sem_go(sem_op_recv, &r);
    sem_settle(c, 0, 1);
    SEM_RETURNS(sem_send_int(c, 30, 0), 0);
    sem_join(cr, 2000);
    ck_assert_int_eq(r.ret, 1);
    ck_assert_int_eq(r.v, 30);

    cr = sem_go(sem_op_send, &s);
    sem_settle(c, 1, 0);
    SEM_RETURNS(sem_recv_int(c, &v, 0), 1);
    ck_assert_int_eq(v, 31);
    sem_join(cr, 2000);
    ck_assert_int_eq(s.ret, 0);
}
END_TEST

START_TEST(test_zero_byte_message_is_a_message)
{
    static const size_t caps[] = {1, 3};
    char none = 'x';

    for (int k = 0; k < 2; k++) {
        chan_t *c = sem_mk(caps[k]);
        chan_msg_t m = {0}, cm;
        struct chan_case cs[2];

        SEM_RETURNS(chan_send(c, &none, 0, 0), 0);
        SEM_RETURNS(chan_len(c), 1);
        SEM_RETURNS(chan_recv(c, &m, 0), 1);
        ck_assert_msg(m.len == 0, "0-byte message came back with %zu bytes", m.len);
        ck_assert_msg(m.data != NULL && ((char *)m.data)[0] == '\0',
                      "a 0-byte message's data is NULL or not NUL-terminated");
        chan_msg_free(&m);

        /* Through select both ways, then past a close: still a message, then 0. */
        sem_case_send(&cs[0], c, &none, 0);
        SEM_RETURNS(chan_select(cs, 1, 0), 0);
        ck_assert_int_eq(cs[0].result, 0);
        sem_case_recv(&cs[1], c, &cm);
        SEM_RETURNS(chan_select(&cs[1], 1, 0), 0);
        ck_assert_int_eq(cs[1].result, 1);
        ck_assert_uint_eq(cm.len, 0);
        chan_msg_free(&cm);
        SEM_RETURNS(chan_send(c, &none, 0, 0), 0);
        SEM_RETURNS(chan_close(c), 0);
        memset(&m, 0, sizeof m);
        SEM_RETURNS(chan_recv(c, &m, 0), 1);
        ck_assert_uint_eq(m.len, 0);
        chan_msg_free(&m);
        memset(&m, 0, sizeof m);
        SEM_RETURNS(chan_recv(c, &m, 0), 0);
    }
}
END_TEST

/* A receiver that keeps the raw message (any size). */
struct raw_recv {
    chan_t *ch;
    chan_msg_t msg;
    int ret;
};

static void rules_raw_recv(void *arg)
{
    struct raw_recv *r = arg;
    r->ret = chan_recv(r->ch, &r->msg, -1);
}

START_TEST(test_zero_byte_message_meets_a_receiver_on_unbuffered_channel)
{
    chan_t *c = sem_mk(0);
    struct raw_recv r = {.ch = c};
    char none = 'x';

    int cr = sem_go(rules_raw_recv, &r);
    sem_settle(c, 0, 1);
    SEM_RETURNS(chan_send(c, &none, 0, sem_in(2000)), 0);
    sem_join(cr, 2000);
    ck_assert_msg(r.ret == 1, "recv of a 0-byte message returned %d, want 1", r.ret);
    ck_assert_uint_eq(r.msg.len, 0);
    chan_msg_free(&r.msg);
}
END_TEST

START_TEST(test_payload_bytes_arrive_intact)
{
    static const size_t sizes[] = {1, 7, 255, 4096, 65536};
    chan_t *c = sem_mk(5);
    unsigned char *buf = malloc(65536);
    chan_msg_t m;

    ck_assert(buf != NULL);
    for (int k = 0; k < 5; k++) {
        for (size_t i = 0; i < sizes[k]; i++)
            buf[i] = (unsigned char)(i * 131 + (size_t)k);
        SEM_RETURNS(chan_send(c, buf, sizes[k], 0), 0);
    }
    for (int k = 0; k < 5; k++) {
        memset(&m, 0, sizeof m);
        SEM_RETURNS(chan_recv(c, &m, 0), 1);
        ck_assert_uint_eq(m.len, sizes[k]);
        for (size_t i = 0; i < sizes[k]; i++)
            buf[i] = (unsigned char)(i * 131 + (size_t)k);
        ck_assert_msg(memcmp(m.data, buf, sizes[k]) == 0, "message %d arrived altered", k);
        ck_assert_msg(((char *)m.data)[m.len] == '\0', "message %d not NUL-terminated", k);
        ck_assert_uint_eq(m.deliveries, 1);
        chan_msg_free(&m);
    }
    free(buf);
}
END_TEST

/* ---- select ------------------------------------------------------------ */

/* |count - n p| stays within 6 binomial sigmas; a fair select fails this about once in 10^9 runs. */
static void rules_assert_fair(const char *what, long count, long n, double p)
{
    double sd = sqrt((double)n * p * (1.0 - p));
    ck_assert_msg(fabs((double)count - (double)n * p) <= 6.0 * sd,
                  "%s: chosen %ld times in %ld, expected %.0f +- %.0f (6 sigma)", what, count, n,
                  (double)n * p, 6.0 * sd);
}

START_TEST(test_select_chooses_uniformly_among_ready_recv_cases)
{
    const long n = sem_scale(6000, 2000);
    chan_t *c[3], *idle = sem_mk(0);
    long count[3] = {0, 0, 0};
    struct chan_case cs[5];
    chan_msg_t m[5];

    for (int k = 0; k < 3; k++) {
        c[k] = sem_mk((size_t)n);
        for (long i = 0; i < n; i++)
            SEM_RETURNS(sem_send_int(c[k], k, 0), 0);
    }
    for (long i = 0; i < n; i++) {
        /* Never-ready cases between the ready ones must not skew the draw. */
        sem_case_recv(&cs[0], c[0], &m[0]);
        sem_case_recv(&cs[1], NULL, &m[1]);
        sem_case_recv(&cs[2], c[1], &m[2]);
        sem_case_recv(&cs[3], idle, &m[3]);
        sem_case_recv(&cs[4], c[2], &m[4]);
        int got = chan_select(cs, 5, 0);
        ck_assert_msg(got == 0 || got == 2 || got == 4, "select chose case %d (errno %s)", got,
                      strerror(errno));
        ck_assert_int_eq(cs[got].result, 1);
        long k = sem_msg_int(&m[got]);
        ck_assert_msg(k == got / 2, "case %d delivered a message of channel %ld", got, k);
        chan_msg_free(&m[got]);
        count[k]++;
        for (int j = 0; j < 5; j++)
            if (j != got)
                ck_assert_msg(cs[j].result == SEM_UNTOUCHED && m[j].data == NULL,
                              "case %d not chosen but touched", j);
    }
    for (int k = 0; k < 3; k++) {
        rules_assert_fair("ready recv case", count[k], n, 1.0 / 3);
        SEM_RETURNS(chan_len(c[k]), n - count[k]);
    }
}
END_TEST

START_TEST(test_select_chooses_uniformly_among_ready_send_cases)
{
    const long n = sem_scale(6000, 2000);
    chan_t *c[3];
    long count[3] = {0, 0, 0};
    struct chan_case cs[3];
    int64_t w[3] = {0, 1, 2};

    for (int k = 0; k < 3; k++)
        c[k] = sem_mk((size_t)n);
    for (long i = 0; i < n; i++) {
        for (int k = 0; k < 3; k++)
            sem_case_send(&cs[k], c[k], &w[k], sizeof w[k]);
        int got = chan_select(cs, 3, 0);
        ck_assert_msg(got >= 0 && got < 3, "select returned %d (%s)", got, strerror(errno));
        ck_assert_int_eq(cs[got].result, 0);
        count[got]++;
    }
    /* Each chosen send happened exactly once, and only the chosen one. */
    for (int k = 0; k < 3; k++) {
        rules_assert_fair("ready send case", count[k], n, 1.0 / 3);
        SEM_RETURNS(chan_len(c[k]), count[k]);
    }
}
END_TEST

START_TEST(test_select_null_case_never_proceeds)
{
    chan_t *c = sem_mk(1);
    struct chan_case cs[3];
    chan_msg_t m[3];
    long x = 1;

    for (int i = 0; i < 50; i++) {
        SEM_RETURNS(sem_send_int(c, i, 0), 0);
        sem_case_send(&cs[0], NULL, &x, sizeof x);
        sem_case_recv(&cs[1], c, &m[1]);
        sem_case_recv(&cs[2], NULL, &m[2]);
        SEM_RETURNS(chan_select(cs, 3, -1), 1);
        ck_assert_int_eq(sem_msg_int(&m[1]), i);
        chan_msg_free(&m[1]);
        ck_assert(cs[0].result == SEM_UNTOUCHED && cs[2].result == SEM_UNTOUCHED && m[2].data == NULL);
    }

    /* Only NULL cases: as if there were none. */
    sem_case_send(&cs[0], NULL, &x, sizeof x);
    sem_case_recv(&cs[1], NULL, &m[1]);
    SEM_FAILS(chan_select(cs, 2, 0), EAGAIN);
    int64_t dl = sem_in(30);
    SEM_FAILS(chan_select(cs, 2, dl), ETIMEDOUT);
    ck_assert_msg(chan_now() >= dl, "select of NULL cases timed out %lld ms early",
                  (long long)(dl - chan_now()));
    ck_assert(cs[0].result == SEM_UNTOUCHED && cs[1].result == SEM_UNTOUCHED && m[1].data == NULL);
}
END_TEST

/* A select with no cases, run by a coroutine that will be cancelled. */
struct empty_select {
    int ret, err;
};

static void rules_empty_select(void *arg)
{
    struct empty_select *e = arg;
    struct chan_case none[1];

    e->ret = chan_select(none, 0, -1);
    e->err = errno;
}

START_TEST(test_select_without_cases_waits_for_its_deadline_or_a_cancel)
{
    struct chan_case none[1];
    struct empty_select e = {0, 0};

    SEM_FAILS(chan_select(none, 0, 0), EAGAIN);
    int64_t dl = sem_in(30);
    SEM_FAILS(chan_select(none, 0, dl), ETIMEDOUT);
    ck_assert_msg(chan_now() >= dl, "empty select returned %lld ms before its deadline",
                  (long long)(dl - chan_now()));

    int cr = sem_go(rules_empty_select, &e);
    chan_yield();
    chan_yield();
    SEM_RETURNS(chan_cancel(cr), 0);
    sem_join(cr, 2000);
    ck_assert_msg(e.ret == -1 && e.err == ECANCELED,
                  "cancelled empty select returned %d (%s), want -1 ECANCELED", e.ret,
                  strerror(e.err));
}
END_TEST

START_TEST(test_select_send_on_closed_channel_returns_its_index_with_epipe)
{
    chan_t *open_ = sem_mk(0), *closed = sem_mk(1);
    struct chan_case cs[2];
    chan_msg_t m;
    long x = 5;
    static const int64_t deadlines[] = {0, -1};

    SEM_RETURNS(chan_close(closed), 0);
    for (int k = 0; k < 2; k++) {
        sem_case_recv(&cs[0], open_, &m);
        sem_case_send(&cs[1], closed, &x, sizeof x);
        errno = 0;
        int got = chan_select(cs, 2, deadlines[k]);
        int err = errno;
        ck_assert_msg(got == 1, "select returned %d (%s), want index 1", got, strerror(err));
        ck_assert_msg(cs[1].result == -1 && err == EPIPE,
                      "send case on closed channel: result %d errno %s, want -1 EPIPE",
                      cs[1].result, strerror(err));
        ck_assert(cs[0].result == SEM_UNTOUCHED && m.data == NULL);
    }
    SEM_RETURNS(sem_recv_int(closed, &x, 0), 0);
}
END_TEST

START_TEST(test_select_recv_on_closed_drained_channel_proceeds_with_zero)
{
    chan_t *idle = sem_mk(0), *closed = sem_mk(2);
    struct chan_case cs[2];
    chan_msg_t m[2];

    SEM_RETURNS(sem_send_int(closed, 77, 0), 0);
    SEM_RETURNS(chan_close(closed), 0);
    sem_case_recv(&cs[0], idle, &m[0]);
    sem_case_recv(&cs[1], closed, &m[1]);
    SEM_RETURNS(chan_select(cs, 2, 0), 1);
    ck_assert_int_eq(cs[1].result, 1);
    ck_assert_int_eq(sem_msg_int(&m[1]), 77);
    chan_msg_free(&m[1]);
    for (int i = 0; i < 3; i++) {
        sem_case_recv(&cs[0], idle, &m[0]);
        sem_case_recv(&cs[1], closed, &m[1]);
        SEM_RETURNS(chan_select(cs, 2, -1), 1);
        ck_assert_int_eq(cs[1].result, 0);
        ck_assert(cs[0].result == SEM_UNTOUCHED);
    }
}
END_TEST

START_TEST(test_close_wakes_a_blocked_select)
{
    for (int which = 0; which < 2; which++) {
        struct sem_sel o = {.r = sem_mk(0), .s = sem_mk(0), .deadline = -1};
        int cr = sem_go(sem_sel_run, &o);

        sem_settle(o.r, 0, 1);
        sem_settle(o.s, 1, 0);
        SEM_RETURNS(chan_close(which == 0 ? o.r : o.s), 0);
        sem_join(cr, 2000);
        ck_assert_msg(o.ret == which, "select woken by close returned %d (%s), want %d", o.ret,
                      strerror(o.err), which);
        if (which == 0)
            ck_assert_int_eq(o.cs[0].result, 0);
        else
            ck_assert_msg(o.cs[1].result == -1 && o.err == EPIPE,
                          "send case woken by close: result %d errno %s, want -1 EPIPE",
                          o.cs[1].result, strerror(o.err));
    }
}
END_TEST

START_TEST(test_select_never_pairs_its_own_send_with_its_own_recv)
{
    chan_t *c = sem_mk(0);
    struct chan_case cs[2];
    chan_msg_t m;
    long x = 1, v;

    sem_case_send(&cs[0], c, &x, sizeof x);
    sem_case_recv(&cs[1], c, &m);
    SEM_FAILS(chan_select(cs, 2, 0), EAGAIN);
    int64_t dl = sem_in(40);
    SEM_FAILS(chan_select(cs, 2, dl), ETIMEDOUT);
    ck_assert(chan_now() >= dl);
    ck_assert(cs[0].result == SEM_UNTOUCHED && cs[1].result == SEM_UNTOUCHED && m.data == NULL);
    SEM_FAILS(sem_send_int(c, 2, 0), EAGAIN);
    SEM_FAILS(sem_recv_int(c, &v, 0), EAGAIN);

    /* Two such selects do pair: one sends, the other receives what it sent. */
    struct sem_sel a = {.r = c, .s = c, .deadline = sem_in(3000)};
    struct sem_sel b = {.r = c, .s = c, .deadline = sem_in(3000)};
    int ca = sem_go(sem_sel_run, &a);
    int cb = sem_go(sem_sel_run, &b);
    sem_join(ca, 4000);
    sem_join(cb, 4000);
    ck_assert_msg((a.ret == 0 && b.ret == 1) || (a.ret == 1 && b.ret == 0),
                  "two send-or-recv selects returned %d (%s) and %d (%s)", a.ret,
                  strerror(a.err), b.ret, strerror(b.err));
    struct sem_sel *rx = a.ret == 0 ? &a : &b;
    ck_assert_int_eq(rx->cs[0].result, 1);
    ck_assert_int_eq(sem_msg_int(&rx->m), 4242);
    chan_msg_free(&rx->m);
}
END_TEST

/* A select of recv cases on the same channel c (twice) and on d. */
struct dup_op {
    chan_t *c, *d;
    chan_msg_t m[3];
    struct chan_case cs[3];
    int ret;
};

static void rules_dup_select(void *arg)
{
    struct dup_op *o = arg;

    sem_case_recv(&o->cs[0], o->c, &o->m[0]);
    sem_case_recv(&o->cs[1], o->c, &o->m[1]);
    sem_case_recv(&o->cs[2], o->d, &o->m[2]);
    o->ret = chan_select(o->cs, 3, sem_in(5000));
}

START_TEST(test_select_may_name_one_channel_in_several_cases)
{
    struct dup_op o = {.c = sem_mk(0), .d = sem_mk(0)};
    struct chan_case cs[2];
    int64_t a = 1, b = 2;
    long v;

    int cr = sem_go(rules_dup_select, &o);
    sem_settle(o.d, 0, 1);
    sem_settle(o.c, 0, -1);
    SEM_RETURNS(sem_send_int(o.c, 61, sem_in(2000)), 0);
    sem_join(cr, 3000);
    ck_assert_msg(o.ret == 0 || o.ret == 1, "select returned %d, want a case on c", o.ret);
    ck_assert_int_eq(o.cs[o.ret].result, 1);
    ck_assert_int_eq(sem_msg_int(&o.m[o.ret]), 61);
    chan_msg_free(&o.m[o.ret]);
    ck_assert_msg(o.m[1 - o.ret].data == NULL, "both cases on c received");
    /* The other registration on c went away with the select. */
    sem_settle(o.c, 0, 0);
    SEM_FAILS(sem_send_int(o.c, 62, 0), EAGAIN);
    SEM_FAILS(sem_send_int(o.d, 63, 0), EAGAIN);

    /* Two send cases on one buffered channel: exactly one message goes in. */
    chan_t *e = sem_mk(1);
    sem_case_send(&cs[0], e, &a, sizeof a);
    sem_case_send(&cs[1], e, &b, sizeof b);
    int got = chan_select(cs, 2, 0);
    ck_assert_msg(got == 0 || got == 1, "select returned %d (%s)", got, strerror(errno));
    SEM_RETURNS(chan_len(e), 1);
    SEM_RETURNS(sem_recv_int(e, &v, 0), 1);
    ck_assert_int_eq(v, got + 1);
}
END_TEST

void semantic_rules_add(Suite *s, double timeout)
{
    TCase *tc;

    tc = tcase_create("send_recv");
    tcase_add_checked_fixture(tc, sem_env_setup, sem_env_teardown);
    tcase_set_timeout(tc, timeout);
    tcase_add_test(tc, test_unbuffered_send_completes_only_when_a_receiver_takes_it);
    tcase_add_test(tc, test_buffered_channel_keeps_messages_in_fifo_order);
    tcase_add_test(tc, test_send_on_full_channel_waits_until_a_recv_makes_room);
    tcase_add_test(tc, test_recv_frees_a_slot_for_the_next_nonblocking_send);
    tcase_add_test(tc, test_nonblocking_calls_fail_with_eagain_and_change_nothing);
    tcase_add_test(tc, test_nonblocking_calls_proceed_when_a_partner_waits);
    tcase_add_test(tc, test_zero_byte_message_is_a_message);
    tcase_add_test(tc, test_zero_byte_message_meets_a_receiver_on_unbuffered_channel);
    tcase_add_test(tc, test_payload_bytes_arrive_intact);
    suite_add_tcase(s, tc);

    tc = tcase_create("close");
    tcase_add_checked_fixture(tc, sem_env_setup, sem_env_teardown);
    tcase_set_timeout(tc, timeout);
    tcase_add_test(tc, test_close_wakes_every_blocked_receiver_with_zero);
    tcase_add_test(tc, test_close_fails_every_blocked_sender_with_epipe);
    tcase_add_test(tc, test_close_of_closed_channel_fails_with_epipe);
    tcase_add_test(tc, test_recv_drains_the_buffer_after_close_then_returns_zero);
    tcase_add_test(tc, test_close_wakes_a_blocked_select);
    suite_add_tcase(s, tc);

    tc = tcase_create("select");
    tcase_add_checked_fixture(tc, sem_env_setup, sem_env_teardown);
    tcase_set_timeout(tc, timeout);
    tcase_add_test(tc, test_select_chooses_uniformly_among_ready_recv_cases);
    tcase_add_test(tc, test_select_chooses_uniformly_among_ready_send_cases);
    tcase_add_test(tc, test_select_null_case_never_proceeds);
    tcase_add_test(tc, test_select_without_cases_waits_for_its_deadline_or_a_cancel);
    tcase_add_test(tc, test_select_send_on_closed_channel_returns_its_index_with_epipe);
    tcase_add_test(tc, test_select_recv_on_closed_drained_channel_proceeds_with_zero);
    tcase_add_test(tc, test_select_never_pairs_its_own_send_with_its_own_recv);
    tcase_add_test(tc, test_select_may_name_one_channel_in_several_cases);
    suite_add_tcase(s, tc);
}
