/*
 * lease_test.c: chan_recv_lease, chan_ack and chan_nack on local channels
 * and on channels of a real chand ($CHAND on 127.0.0.1, --port 0): an ack
 * removes the message for good, a nack or an expired lease puts it back
 * first with its delivery count raised, a leased message holds its place
 * against the capacity (and an unbuffered sender) until then, and settling
 * twice, settling a plain message or an expired lease is refused.
 */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "chan.h"
#include "testclient.h"

/* Bound for anything that should happen at once, ms. */
#define SOON 5000

static struct tc_server srv;
static char addr[64];
static chan_client_t *cl;
static int remote;
static int nchans;
static char cur[32];   /* name of the newest remote channel */

static void setup_local(void)
{
    remote = 0;
}

static void setup_remote(void)
{
    struct chan_opts o = {.client_name = "lease_test"};

    remote = 1;
    tc_server_start(&srv, NULL);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", srv.port);
    cl = chan_connect(addr, &o);
    ck_assert_msg(cl != NULL, "chan_connect %s: %s", addr, strerror(errno));
}

static void teardown(void)
{
    if (!remote)
        return;
    chan_disconnect(cl);
    cl = NULL;
    tc_server_stop(&srv, SIGTERM, 2000);
}

static chan_t *make(long cap)
{
    chan_t *ch;

    if (!remote) {
        ch = chan_make((size_t)cap);
        ck_assert_ptr_nonnull(ch);
        return ch;
    }
    snprintf(cur, sizeof cur, "lease%d", ++nchans);
    ch = chan_open(cl, cur, cap);
    ck_assert_msg(ch != NULL, "chan_open %s: %s", cur, strerror(errno));
    return ch;
}

static void send_str(chan_t *ch, const char *s)
{
    ck_assert_int_eq(chan_send(ch, s, strlen(s), chan_now() + SOON), 0);
}

/* Leased receive of want, with deliveries as its count. */
static void lease_str(chan_t *ch, chan_msg_t *m, int64_t lease_ms, const char *want,
                      uint32_t deliveries)
{
    ck_assert_int_eq(chan_recv_lease(ch, m, lease_ms, chan_now() + SOON), 1);
    ck_assert_str_eq(m->data, want);
    ck_assert_uint_eq(m->len, strlen(want));
    ck_assert_uint_eq(m->deliveries, deliveries);
}

static void recv_str(chan_t *ch, const char *want, uint32_t deliveries)
{
    chan_msg_t m;

    ck_assert_int_eq(chan_recv(ch, &m, chan_now() + SOON), 1);
    ck_assert_str_eq(m.data, want);
    ck_assert_uint_eq(m.deliveries, deliveries);
    chan_msg_free(&m);
}

static void expect_empty(chan_t *ch)
{
    chan_msg_t m;

    ck_assert_int_eq(chan_recv(ch, &m, 0), -1);
    ck_assert_int_eq(errno, EAGAIN);
}

/* Unacked messages of the current channel (remote: STAT; local: not visible, -1). */
static long unacked(void)
{
    struct chan_info info;

    if (!remote)
        return -1;
    ck_assert_int_eq(chan_stat(cl, cur, &info), 0);
    return info.unacked;
}

struct sender {
    chan_t *ch;
    const char *msg;
    int64_t deadline;
    int rc;
    int err;
    int64_t ended;
};

static void sender_run(void *arg)
{
    struct sender *s = arg;

    s->rc = chan_send(s->ch, s->msg, strlen(s->msg), s->deadline);
    s->err = errno;
    s->ended = chan_now();
}

/* Wait (bounded) until a sender waits on the current channel, queued or held. */
static void wait_sender(chan_t *ch, int cr)
{
    if (!remote) {
        chan_yield();
        return;
    }
    int64_t until = chan_now() + SOON;
    for (;;) {
        struct chan_info info;
        ck_assert_int_eq(chan_stat(cl, cur, &info), 0);
        if (info.senders == 1)
            return;
        ck_assert_msg(chan_now() < until, "no sender blocked");
        chan_sleep(chan_now() + 2);
    }
    (void)ch, (void)cr;
}

/* ---- the tests -------------------------------------------------------- */

START_TEST(test_bad_arguments_are_einval)
{
    chan_t *ch = make(2);
    chan_msg_t m;

    ck_assert_int_eq(chan_recv_lease(ch, &m, 0, 0), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(chan_recv_lease(ch, &m, -5, 0), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(chan_recv_lease(ch, NULL, 100, 0), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(chan_ack(NULL), -1);
    ck_assert_int_eq(errno, EINVAL);
    memset(&m, 0, sizeof m);
    ck_assert_int_eq(chan_nack(&m), -1);
    ck_assert_int_eq(errno, EINVAL);
    chan_free(ch);
}
END_TEST

START_TEST(test_ack_removes_the_message_for_good)
{
    chan_t *ch = make(4);
    chan_msg_t m;

    send_str(ch, "job");
    lease_str(ch, &m, 10000, "job", 1);
    ck_assert_int_eq(chan_len(ch), 0);
    if (remote)
        ck_assert_int_eq(unacked(), 1);
    ck_assert_int_eq(chan_ack(&m), 0);
    chan_msg_free(&m);
    expect_empty(ch);
    if (remote)
        ck_assert_int_eq(unacked(), 0);
    chan_free(ch);
}
END_TEST

START_TEST(test_nack_redelivers_first_with_one_more_delivery)
{
    chan_t *ch = make(4);
    chan_msg_t m;

    send_str(ch, "first");
    send_str(ch, "second");
    lease_str(ch, &m, 10000, "first", 1);
    ck_assert_int_eq(chan_nack(&m), 0);
    chan_msg_free(&m);
    lease_str(ch, &m, 10000, "first", 2);
    ck_assert_int_eq(chan_nack(&m), 0);
    chan_msg_free(&m);
    recv_str(ch, "first", 3);
    recv_str(ch, "second", 1);
    expect_empty(ch);
    chan_free(ch);
}
END_TEST

START_TEST(test_settling_twice_or_a_plain_message_is_einval)
{
    chan_t *ch = make(4);
    chan_msg_t m, p;

    send_str(ch, "a");
    send_str(ch, "b");
    ck_assert_int_eq(chan_recv(ch, &p, 0), 1);
    ck_assert_int_eq(chan_ack(&p), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(chan_nack(&p), -1);
    ck_assert_int_eq(errno, EINVAL);
    chan_msg_free(&p);
    lease_str(ch, &m, 10000, "b", 1);
    ck_assert_int_eq(chan_ack(&m), 0);
    ck_assert_int_eq(chan_ack(&m), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(chan_nack(&m), -1);
    ck_assert_int_eq(errno, EINVAL);
    chan_msg_free(&m);
    /* freed: nothing left to settle */
    ck_assert_int_eq(chan_ack(&m), -1);
    ck_assert_int_eq(errno, EINVAL);
    expect_empty(ch);
    chan_free(ch);
}
END_TEST

/* A held message keeps its slot: the channel is full until the ack. */
START_TEST(test_leased_message_counts_against_capacity_until_acked)
{
    chan_t *ch = make(1);
    chan_msg_t m;

    send_str(ch, "held");
    lease_str(ch, &m, 10000, "held", 1);
    ck_assert_int_eq(chan_send(ch, "next", 4, 0), -1);
    ck_assert_int_eq(errno, EAGAIN);
    ck_assert_int_eq(chan_ack(&m), 0);
    chan_msg_free(&m);
    ck_assert_int_eq(chan_send(ch, "next", 4, 0), 0);
    recv_str(ch, "next", 1);
    chan_free(ch);
}
END_TEST

START_TEST(test_expired_lease_is_redelivered_and_its_ack_refused)
{
    chan_t *ch = make(4);
    chan_msg_t m, again;
    int64_t t0;

    send_str(ch, "slow job");
    send_str(ch, "other");
    t0 = chan_now();
    lease_str(ch, &m, 150, "slow job", 1);
    ck_assert_int_eq(chan_len(ch), 1);
    /* back in the channel once the lease has run out, and not before */
    while (chan_len(ch) != 2) {
        ck_assert_int_lt(chan_now() - t0, 150 + 2000);
        chan_sleep(chan_now() + 5);
    }
    ck_assert_int_ge(chan_now() - t0, 150);
    /* first in line */
    lease_str(ch, &again, 10000, "slow job", 2);
    ck_assert_int_eq(chan_ack(&m), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(chan_nack(&m), -1);
    ck_assert_int_eq(errno, EINVAL);
    chan_msg_free(&m);
    ck_assert_int_eq(chan_ack(&again), 0);
    chan_msg_free(&again);
    recv_str(ch, "other", 1);
    expect_empty(ch);
    chan_free(ch);
}
END_TEST

/* Freeing the memory does not settle: the lease runs out and the message comes back. */
START_TEST(test_freed_unsettled_message_comes_back_at_lease_end)
{
    chan_t *ch = make(4);
    chan_msg_t m;

    send_str(ch, "dropped");
    lease_str(ch, &m, 100, "dropped", 1);
    chan_msg_free(&m);
    recv_str(ch, "dropped", 2);
    chan_free(ch);
}
END_TEST

/* Unbuffered: the sender completes only when the leased receiver acks. */
START_TEST(test_unbuffered_sender_completes_on_ack)
{
    chan_t *ch = make(0);
    struct sender s = {.msg = "rendezvous", .deadline = chan_now() + SOON};
    chan_msg_t m;
    int cr;

    s.ch = ch;
    cr = chan_go(sender_run, &s);
    wait_sender(ch, cr);
    lease_str(ch, &m, 10000, "rendezvous", 1);
    chan_sleep(chan_now() + 50);
    ck_assert_int_eq(chan_join(cr, 0), -1); /* still waiting for the ack */
    ck_assert_int_eq(chan_ack(&m), 0);
    chan_msg_free(&m);
    ck_assert_int_eq(chan_join(cr, chan_now() + SOON), 0);
    ck_assert_int_eq(s.rc, 0);
    expect_empty(ch);
    chan_free(ch);
}
END_TEST

/* Unbuffered nack: the sender is first in line again, and its message is redelivered. */
START_TEST(test_unbuffered_nack_puts_the_sender_back_first)
{
    chan_t *ch = make(0);
    struct sender s = {.msg = "retry me", .deadline = chan_now() + SOON};
    chan_msg_t m;
    int cr;

    s.ch = ch;
    cr = chan_go(sender_run, &s);
    wait_sender(ch, cr);
    lease_str(ch, &m, 10000, "retry me", 1);
    ck_assert_int_eq(chan_nack(&m), 0);
    chan_msg_free(&m);
    lease_str(ch, &m, 10000, "retry me", 2);
    ck_assert_int_eq(chan_ack(&m), 0);
    chan_msg_free(&m);
    ck_assert_int_eq(chan_join(cr, chan_now() + SOON), 0);
    ck_assert_int_eq(s.rc, 0);
    chan_free(ch);
}
END_TEST

/*
 * An unbuffered sender whose deadline passes while a lease holds its
 * message cannot be withdrawn: it waits for the lease's end. A nack then
 * means "not delivered" (ETIMEDOUT, and the message is gone from the
 * channel); an ack means delivered (0).
 */
START_TEST(test_unbuffered_sender_past_its_deadline_learns_from_the_lease)
{
    chan_t *ch = make(0);
    struct sender s = {.msg = "late"};
    chan_msg_t m;
    int cr;

    for (int round = 0; round < 2; round++) {
        int ack = round == 1;

        s.ch = ch;
        s.deadline = chan_now() + 100;
        cr = chan_go(sender_run, &s);
        wait_sender(ch, cr);
        lease_str(ch, &m, 10000, "late", 1);
        chan_sleep(s.deadline + 150);
        ck_assert_int_eq(chan_join(cr, 0), -1); /* still held */
        ck_assert_int_eq(ack ? chan_ack(&m) : chan_nack(&m), 0);
        chan_msg_free(&m);
        ck_assert_int_eq(chan_join(cr, chan_now() + SOON), 0);
        if (ack) {
            ck_assert_int_eq(s.rc, 0);
        } else {
            ck_assert_int_eq(s.rc, -1);
            ck_assert_int_eq(s.err, ETIMEDOUT);
        }
        expect_empty(ch);
    }
    chan_free(ch);
}
END_TEST

/* ---- local only --------------------------------------------------------- */

START_TEST(test_local_free_ends_held_leases)
{
    chan_t *ch = make(2);
    chan_msg_t m;

    send_str(ch, "orphan");
    lease_str(ch, &m, 100, "orphan", 1);
    chan_free(ch);
    /* the payload is still readable, but the lease went with the channel */
    ck_assert_str_eq(m.data, "orphan");
    ck_assert_int_eq(chan_ack(&m), -1);
    ck_assert_int_eq(errno, ESTALE);
    chan_msg_free(&m);
    /* and its timer is gone: nothing fires on freed memory */
    chan_sleep(chan_now() + 200);
}
END_TEST

struct leaser {
    chan_t *ch;
    int64_t lease_ms;
    int ack;          /* settle at once: ack, or -1 nack, or 0 keep */
    int rc;
    chan_msg_t m;
};

static void leaser_run(void *arg)
{
    struct leaser *l = arg;

    l->rc = chan_recv_lease(l->ch, &l->m, l->lease_ms, chan_now() + SOON);
    if (l->rc == 1 && l->ack) {
        ck_assert_int_eq(l->ack > 0 ? chan_ack(&l->m) : chan_nack(&l->m), 0);
        chan_msg_free(&l->m);
    }
}

/*
 * A select whose send case a leased receiver took cannot withdraw it at its
 * deadline: it waits for the lease's end. Expiry (a nack) means the send
 * did not happen: the select fails ETIMEDOUT and the message is gone.
 * An ack means it did: the select returns that case.
 */
START_TEST(test_local_select_send_held_by_a_lease_waits_for_its_end)
{
    chan_t *ch = make(0);
    struct chan_case c = {.ch = ch, .op = CHAN_SEND, .data = "sel", .len = 3};
    struct leaser l = {.ch = ch, .lease_ms = 200};
    int64_t t0;
    int cr;

    cr = chan_go(leaser_run, &l);
    chan_yield(); /* the leaser waits in the channel */
    t0 = chan_now();
    ck_assert_int_eq(chan_select(&c, 1, t0 + 50), -1);
    ck_assert_int_eq(errno, ETIMEDOUT);
    ck_assert_int_ge(chan_now() - t0, 200);
    ck_assert_int_eq(chan_join(cr, 0), 0);
    ck_assert_int_eq(l.rc, 1);
    ck_assert_str_eq(l.m.data, "sel");
    ck_assert_int_eq(chan_ack(&l.m), -1);
    ck_assert_int_eq(errno, EINVAL);
    chan_msg_free(&l.m);
    expect_empty(ch);

    /*
     * A select that may not wait, whose send a leased receiver takes:
     * an ack means it happened; a nack that it would have had to wait.
     */
    l.lease_ms = 10000;
    l.ack = 1;
    cr = chan_go(leaser_run, &l);
    chan_yield();
    c.result = 99;
    ck_assert_int_eq(chan_select(&c, 1, 0), 0);
    ck_assert_int_eq(c.result, 0);
    ck_assert_int_eq(chan_join(cr, 0), 0);
    ck_assert_int_eq(l.rc, 1);
    l.ack = -1;
    cr = chan_go(leaser_run, &l);
    chan_yield();
    ck_assert_int_eq(chan_select(&c, 1, 0), -1);
    ck_assert_int_eq(errno, EAGAIN);
    ck_assert_int_eq(chan_join(cr, 0), 0);
    ck_assert_int_eq(l.rc, 1);
    expect_empty(ch);
    /* and the same for chan_send and chan_send_many */
    for (int ack = -1; ack <= 1; ack += 2) {
        struct iovec iov[2] = {{"s1", 2}, {"s2", 2}};
        l.ack = ack;
        cr = chan_go(leaser_run, &l);
        chan_yield();
        if (ack > 0) {
            ck_assert_int_eq(chan_send_many(ch, iov, 2, 0), 1);
        } else {
            ck_assert_int_eq(chan_send(ch, "s", 1, 0), -1);
            ck_assert_int_eq(errno, EAGAIN);
        }
        ck_assert_int_eq(chan_join(cr, 0), 0);
        ck_assert_int_eq(l.rc, 1);
        expect_empty(ch);
    }
    chan_free(ch);
}
END_TEST

/* ---- remote only -------------------------------------------------------- */

/* A client that goes away with a leased message loses no job: it is redelivered. */
START_TEST(test_disconnect_gives_leased_messages_back)
{
    chan_client_t *other = chan_connect(addr, NULL);
    chan_t *ch = make(4), *och;
    chan_msg_t m;

    ck_assert_ptr_nonnull(other);
    och = chan_open(other, cur, -1);
    ck_assert_ptr_nonnull(och);
    send_str(ch, "job1");
    send_str(ch, "job2");
    lease_str(och, &m, 60000, "job1", 1);
    chan_msg_free(&m);
    chan_free(och);
    chan_disconnect(other);
    lease_str(ch, &m, 60000, "job1", 2);
    ck_assert_int_eq(chan_ack(&m), 0);
    chan_msg_free(&m);
    recv_str(ch, "job2", 1);
    chan_free(ch);
}
END_TEST

/* Many coroutines settle at once over one connection, each getting its own answer. */
struct worker {
    chan_t *ch;
    int done;
    int acked;
};

static void worker_run(void *arg)
{
    struct worker *w = arg;
    chan_msg_t m;
    int r;

    while ((r = chan_recv_lease(w->ch, &m, 10000, chan_now() + SOON)) == 1) {
        /* every third message fails once */
        int fail = atoi(m.data) % 3 == 0 && m.deliveries == 1;
        ck_assert_int_eq(fail ? chan_nack(&m) : chan_ack(&m), 0);
        if (!fail)
            w->acked++;
        chan_msg_free(&m);
    }
    ck_assert_int_eq(r, 0);
    w->done = 1;
}

START_TEST(test_workers_ack_and_nack_concurrently)
{
    enum { N = 600, W = 8 };
    chan_t *ch = make(N);
    struct worker w[W];
    int cr[W], total = 0;
    char buf[16];

    for (int i = 0; i < N; i++) {
        snprintf(buf, sizeof buf, "%d", i);
        send_str(ch, buf);
    }
    ck_assert_int_eq(chan_close(ch), 0);
    for (int i = 0; i < W; i++) {
        w[i] = (struct worker){.ch = ch};
        cr[i] = chan_go(worker_run, &w[i]);
    }
    for (int i = 0; i < W; i++) {
        ck_assert_int_eq(chan_join(cr[i], chan_now() + 15000), 0);
        ck_assert(w[i].done);
        total += w[i].acked;
    }
    ck_assert_int_eq(total, N);
    if (remote)
        ck_assert_int_eq(unacked(), 0);
    chan_free(ch);
}
END_TEST

static void add_common(TCase *tc)
{
    tcase_add_test(tc, test_bad_arguments_are_einval);
    tcase_add_test(tc, test_ack_removes_the_message_for_good);
    tcase_add_test(tc, test_nack_redelivers_first_with_one_more_delivery);
    tcase_add_test(tc, test_settling_twice_or_a_plain_message_is_einval);
    tcase_add_test(tc, test_leased_message_counts_against_capacity_until_acked);
    tcase_add_test(tc, test_expired_lease_is_redelivered_and_its_ack_refused);
    tcase_add_test(tc, test_freed_unsettled_message_comes_back_at_lease_end);
    tcase_add_test(tc, test_unbuffered_sender_completes_on_ack);
    tcase_add_test(tc, test_unbuffered_nack_puts_the_sender_back_first);
    tcase_add_test(tc, test_unbuffered_sender_past_its_deadline_learns_from_the_lease);
}

static Suite *lease_suite(void)
{
    Suite *s = suite_create("lease");
    TCase *tc;

    tc = tcase_create("local");
    tcase_add_checked_fixture(tc, setup_local, teardown);
    tcase_set_timeout(tc, 10);
    add_common(tc);
    tcase_add_test(tc, test_local_free_ends_held_leases);
    tcase_add_test(tc, test_local_select_send_held_by_a_lease_waits_for_its_end);
    tcase_add_test(tc, test_workers_ack_and_nack_concurrently);
    suite_add_tcase(s, tc);

    tc = tcase_create("remote");
    tcase_add_checked_fixture(tc, setup_remote, teardown);
    tcase_set_timeout(tc, 20);
    add_common(tc);
    tcase_add_test(tc, test_disconnect_gives_leased_messages_back);
    tcase_add_test(tc, test_workers_ack_and_nack_concurrently);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(lease_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
