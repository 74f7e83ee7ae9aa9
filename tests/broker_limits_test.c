/*
 * broker_limits_test.c: what keeps chand reliable and shared, against a
 * real chand on 127.0.0.1: leases that run out, a SEND resent under its
 * session seq after a reconnect, --max-memory, --max-channels,
 * --max-pending, a consumer that stops reading (--max-output), a client
 * that sends half a frame and sleeps (--idle-timeout), --expire-closed,
 * the auth token and the refusal to bind beyond loopback without one.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testclient.h"

/* Generous bound for what must happen "soon", ms. */
#define SOON 5000

static struct tc_server srv;

static void stop_server(void)
{
    tc_server_stop_ok(&srv);
}

static struct wire_payload payload_of(const char *s)
{
    return (struct wire_payload){.data = s, .len = strlen(s)};
}

/* Receive one message that must be text, then ack it; returns its delivery count. */
static uint32_t recv_expect(struct tc_conn *c, uint64_t chan, const char *text)
{
    struct tc_msg m;
    uint32_t deliveries;

    TC_ASSERT_STATUS(tc_recv(c, chan, 2000, &m), ST(OK));
    ck_assert_msg(m.len == strlen(text) && memcmp(m.data, text, m.len) == 0,
                  "got '%.*s', want '%s'", (int)m.len, (const char *)m.data, text);
    deliveries = m.deliveries;
    TC_ASSERT_STATUS(tc_ack(c, m.tag), ST(OK));
    tc_msg_free(&m);
    return deliveries;
}

/* ---- leases --------------------------------------------------------- */

START_TEST(test_expired_lease_redelivers_with_one_more_delivery_and_late_ack_is_invalid)
{
    struct tc_conn *worker, *other;
    struct tc_reply r;
    struct tc_msg m, again;
    uint64_t ch, och, id;
    int64_t t0;

    tc_server_start(&srv, NULL);
    worker = tc_connect_hello(srv.port);
    other = tc_connect_hello(srv.port);
    TC_ASSERT_STATUS(tc_open(worker, "jobs", 4, &ch), ST(OK));
    TC_ASSERT_STATUS(tc_open(other, "jobs", 4, &och), ST(OK));
    TC_ASSERT_STATUS(tc_send_str(other, och, "job-1"), ST(OK));

    t0 = tc_now_ms();
    TC_ASSERT_STATUS(tc_recv_lease(worker, ch, 0, 300, &m), ST(OK));
    ck_assert_uint_eq(m.deliveries, 1);
    /* another receiver waits; the lease's end hands the job to it */
    id = tc_recv_start(other, och, SOON);
    tc_wait_stat(other, "jobs", TC_RECEIVERS, 1);
    TC_ASSERT_STATUS(tc_must_wait(other, id, &r), ST(OK));
    ck_assert_msg(tc_now_ms() - t0 >= 290, "redelivered after %lld ms, lease was 300",
                  (long long)(tc_now_ms() - t0));
    tc_reply_msg(&r, &again);
    tc_reply_free(&r);
    ck_assert_msg(again.len == 5 && memcmp(again.data, "job-1", 5) == 0, "another message came back");
    ck_assert_uint_eq(again.deliveries, 2);

    /* the expired tag is forgotten: both settle calls are refused */
    TC_ASSERT_STATUS(tc_ack(worker, m.tag), ST(INVALID));
    TC_ASSERT_STATUS(tc_nack(worker, m.tag), ST(INVALID));
    TC_ASSERT_STATUS(tc_ack(other, again.tag), ST(OK));
    tc_msg_free(&m);
    tc_msg_free(&again);
    tc_wait_stat(other, "jobs", TC_UNACKED, 0);
    tc_wait_stat(other, "jobs", TC_LEN, 0);

    tc_conn_free(worker);
    tc_conn_free(other);
    stop_server();
}
END_TEST

START_TEST(test_acked_lease_and_plain_delivery_are_not_redelivered)
{
    struct tc_conn *a;
    struct tc_msg m, plain;
    uint64_t ch;

    tc_server_start(&srv, NULL);
    a = tc_connect_hello(srv.port);
    TC_ASSERT_STATUS(tc_open(a, "q", 4, &ch), ST(OK));
    TC_ASSERT_STATUS(tc_send_str(a, ch, "leased"), ST(OK));
    TC_ASSERT_STATUS(tc_send_str(a, ch, "plain"), ST(OK));
    TC_ASSERT_STATUS(tc_recv_lease(a, ch, 0, 150, &m), ST(OK));
    TC_ASSERT_STATUS(tc_ack(a, m.tag), ST(OK));
    tc_msg_free(&m);
    /* a plain delivery keeps no timer: it stays unacked as long as its connection lives */
    TC_ASSERT_STATUS(tc_recv(a, ch, 0, &plain), ST(OK));
    /* three lease lengths: a timer that should not exist would have fired */
    TC_ASSERT_STATUS(tc_recv(a, ch, 450, &m), ST(TIMEDOUT));
    tc_wait_stat(a, "q", TC_UNACKED, 1);
    TC_ASSERT_STATUS(tc_ack(a, plain.tag), ST(OK));
    tc_msg_free(&plain);
    tc_wait_stat(a, "q", TC_UNACKED, 0);

    tc_conn_free(a);
    stop_server();
}
END_TEST

START_TEST(test_nacked_lease_comes_back_at_once)
{
    struct tc_conn *a;
    struct tc_msg m;
    uint64_t ch;

    tc_server_start(&srv, NULL);
    a = tc_connect_hello(srv.port);
    TC_ASSERT_STATUS(tc_open(a, "q", 2, &ch), ST(OK));
    TC_ASSERT_STATUS(tc_send_str(a, ch, "x"), ST(OK));
    TC_ASSERT_STATUS(tc_recv_lease(a, ch, 0, 60000, &m), ST(OK));
    TC_ASSERT_STATUS(tc_nack(a, m.tag), ST(OK));
    tc_msg_free(&m);
    TC_ASSERT_STATUS(tc_recv_lease(a, ch, 0, 60000, &m), ST(OK));
    ck_assert_uint_eq(m.deliveries, 2);
    TC_ASSERT_STATUS(tc_ack(a, m.tag), ST(OK));
    tc_msg_free(&m);

    tc_conn_free(a);
    stop_server();
}
END_TEST

/* ---- sessions ------------------------------------------------------- */

static const uint8_t session_a[16] = {0x5e, 0x55, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14};
static const uint8_t session_b[16] = {0x5e, 0x55, 2, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14};

START_TEST(test_resent_send_with_the_same_session_and_seq_is_delivered_once)
{
    struct wire_payload one = payload_of("one");
    struct wire_payload many[3] = {payload_of("two"), payload_of("three"), payload_of("four")};
    struct tc_conn *c, *obs;
    uint64_t ch, och;
    uint32_t count;
    int resumed = -1;

    tc_server_start(&srv, NULL);
    obs = tc_connect_hello(srv.port);
    TC_ASSERT_STATUS(tc_open(obs, "once", 16, &och), ST(OK));

    c = tc_connect(srv.port);
    TC_ASSERT_STATUS(tc_hello_as(c, session_a, NULL, &resumed), ST(OK));
    ck_assert_int_eq(resumed, 0);
    TC_ASSERT_STATUS(tc_open(c, "once", 16, &ch), ST(OK));
    TC_ASSERT_STATUS(tc_send_seq(c, ch, &one, 1, 1, &count), ST(OK));
    TC_ASSERT_STATUS(tc_send_seq(c, ch, many, 3, 2, &count), ST(OK));
    ck_assert_uint_eq(count, 3);
    tc_conn_free(c);

    /* as a client that lost both replies: reconnect, send both again under their seqs */
    c = tc_connect(srv.port);
    TC_ASSERT_STATUS(tc_hello_as(c, session_a, NULL, &resumed), ST(OK));
    ck_assert_int_eq(resumed, 1);
    TC_ASSERT_STATUS(tc_send_seq(c, ch, &one, 1, 1, &count), ST(OK));
    ck_assert_uint_eq(count, 1);
    TC_ASSERT_STATUS(tc_send_seq(c, ch, many, 3, 2, &count), ST(OK));
    ck_assert_uint_eq(count, 3);
    tc_wait_stat(obs, "once", TC_LEN, 4);

    /* a new seq goes; so does the same seq of another session */
    TC_ASSERT_STATUS(tc_send_seq(c, ch, &one, 1, 5, &count), ST(OK));
    tc_wait_stat(obs, "once", TC_LEN, 5);
    tc_conn_free(c);
    c = tc_connect(srv.port);
    TC_ASSERT_STATUS(tc_hello_as(c, session_b, NULL, &resumed), ST(OK));
    ck_assert_int_eq(resumed, 0);
    TC_ASSERT_STATUS(tc_send_seq(c, ch, &one, 1, 1, &count), ST(OK));
    tc_wait_stat(obs, "once", TC_LEN, 6);

    ck_assert_uint_eq(recv_expect(obs, och, "one"), 1);
    ck_assert_uint_eq(recv_expect(obs, och, "two"), 1);
    ck_assert_uint_eq(recv_expect(obs, och, "three"), 1);
    ck_assert_uint_eq(recv_expect(obs, och, "four"), 1);
    ck_assert_uint_eq(recv_expect(obs, och, "one"), 1);
    ck_assert_uint_eq(recv_expect(obs, och, "one"), 1);
    tc_wait_stat(obs, "once", TC_LEN, 0);

    tc_conn_free(c);
    tc_conn_free(obs);
    stop_server();
}
END_TEST

START_TEST(test_send_many_resent_after_a_partial_send_sends_only_the_rest)
{
    struct wire_payload many[3] = {payload_of("a"), payload_of("b"), payload_of("c")};
    struct tc_conn *c, *obs;
    uint64_t ch, och;
    uint32_t count;
    int resumed;

    tc_server_start(&srv, NULL);
    obs = tc_connect_hello(srv.port);
    TC_ASSERT_STATUS(tc_open(obs, "part", 2, &och), ST(OK));
    c = tc_connect(srv.port);
    TC_ASSERT_STATUS(tc_hello_as(c, session_a, NULL, &resumed), ST(OK));
    TC_ASSERT_STATUS(tc_open(c, "part", 2, &ch), ST(OK));
    /* room for two: the third does not go, like write(2) */
    TC_ASSERT_STATUS(tc_send_seq(c, ch, many, 3, 10, &count), ST(OK));
    ck_assert_uint_eq(count, 2);
    tc_conn_free(c);
    ck_assert_uint_eq(recv_expect(obs, och, "a"), 1);
    ck_assert_uint_eq(recv_expect(obs, och, "b"), 1);

    c = tc_connect(srv.port);
    TC_ASSERT_STATUS(tc_hello_as(c, session_a, NULL, &resumed), ST(OK));
    ck_assert_int_eq(resumed, 1);
    TC_ASSERT_STATUS(tc_send_seq(c, ch, many, 3, 10, &count), ST(OK));
    ck_assert_uint_eq(count, 3);
    ck_assert_uint_eq(recv_expect(obs, och, "c"), 1);
    tc_wait_stat(obs, "part", TC_LEN, 0);

    tc_conn_free(c);
    tc_conn_free(obs);
    stop_server();
}
END_TEST

START_TEST(test_unbuffered_send_held_by_a_receiver_when_its_sender_dropped_is_not_resent)
{
    struct wire_payload one = payload_of("rendezvous");
    struct tc_conn *c, *rx;
    struct tc_msg m;
    uint64_t ch, rch;
    uint32_t count;
    int resumed;

    tc_server_start(&srv, NULL);
    rx = tc_connect_hello(srv.port);
    TC_ASSERT_STATUS(tc_open(rx, "rv", 0, &rch), ST(OK));
    c = tc_connect(srv.port);
    TC_ASSERT_STATUS(tc_hello_as(c, session_a, NULL, &resumed), ST(OK));
    TC_ASSERT_STATUS(tc_open(c, "rv", 0, &ch), ST(OK));
    tc_send_seq_start(c, ch, &one, 1, -1, 7);
    /* the receiver holds it unacked, so the send is in flight when its connection goes */
    TC_ASSERT_STATUS(tc_recv(rx, rch, 2000, &m), ST(OK));
    tc_conn_free(c);

    c = tc_connect(srv.port);
    TC_ASSERT_STATUS(tc_hello_as(c, session_a, NULL, &resumed), ST(OK));
    ck_assert_int_eq(resumed, 1);
    TC_ASSERT_STATUS(tc_send_seq(c, ch, &one, 1, 7, &count), ST(OK));
    ck_assert_uint_eq(count, 1);
    /* whatever the receiver does now, the message is delivered once */
    TC_ASSERT_STATUS(tc_nack(rx, m.tag), ST(OK));
    tc_msg_free(&m);
    ck_assert_uint_eq(recv_expect(rx, rch, "rendezvous"), 2);
    TC_ASSERT_STATUS(tc_recv(rx, rch, 300, &m), ST(TIMEDOUT));

    tc_conn_free(c);
    tc_conn_free(rx);
    stop_server();
}
END_TEST

START_TEST(test_newer_connection_of_a_session_takes_over_and_the_older_is_closed)
{
    struct tc_conn *old, *fresh;
    int resumed;

    tc_server_start(&srv, NULL);
    old = tc_connect(srv.port);
    TC_ASSERT_STATUS(tc_hello_as(old, session_a, NULL, &resumed), ST(OK));
    fresh = tc_connect(srv.port);
    TC_ASSERT_STATUS(tc_hello_as(fresh, session_a, NULL, &resumed), ST(OK));
    ck_assert_int_eq(resumed, 1);
    ck_assert_msg(tc_closed_within(old, SOON), "the older connection of the session stayed open");
    TC_ASSERT_STATUS(tc_ping(fresh), ST(OK));

    tc_conn_free(old);
    tc_conn_free(fresh);
    stop_server();
}
END_TEST

START_TEST(test_session_is_forgotten_after_its_ttl)
{
    struct tc_conn *c;
    int resumed;

    tc_server_start(&srv, "--session-ttl", "1", NULL);
    c = tc_connect(srv.port);
    TC_ASSERT_STATUS(tc_hello_as(c, session_a, NULL, &resumed), ST(OK));
    tc_conn_free(c);
    c = tc_connect(srv.port);
    TC_ASSERT_STATUS(tc_hello_as(c, session_a, NULL, &resumed), ST(OK));
    ck_assert_int_eq(resumed, 1);
    tc_conn_free(c);
    /* Nothing shows the ttl running out except a HELLO after it, and a HELLO restarts it. */
    usleep(1600 * 1000);
    c = tc_connect(srv.port);
    TC_ASSERT_STATUS(tc_hello_as(c, session_a, NULL, &resumed), ST(OK));
    ck_assert_int_eq(resumed, 0);
    tc_conn_free(c);
    stop_server();
}
END_TEST

/* ---- --max-memory ----------------------------------------------------- */

START_TEST(test_send_over_max_memory_waits_until_a_receiver_frees_memory)
{
    static char blob[1500];
    struct tc_conn *p, *q;
    struct tc_reply r;
    struct tc_msg m;
    uint64_t ch, qch, id, late;

    memset(blob, 'm', sizeof blob);
    tc_server_start(&srv, "--max-memory", "4000", NULL);
    p = tc_connect_hello(srv.port);
    q = tc_connect_hello(srv.port);
    TC_ASSERT_STATUS(tc_open(p, "mem", 100, &ch), ST(OK));
    TC_ASSERT_STATUS(tc_open(q, "mem", 100, &qch), ST(OK));
    TC_ASSERT_STATUS(tc_send(p, ch, blob, sizeof blob, -1), ST(OK));
    TC_ASSERT_STATUS(tc_send(p, ch, blob, sizeof blob, -1), ST(OK));
    /* 3000 bytes held: 1500 more would pass 4000, though the channel has room */
    TC_ASSERT_STATUS(tc_send(p, ch, blob, sizeof blob, 0), ST(AGAIN));
    TC_ASSERT_STATUS(tc_send(p, ch, blob, sizeof blob, 200), ST(TIMEDOUT));
    id = tc_send_start(p, ch, blob, sizeof blob, SOON);
    /* a small send queues behind it (admission is FIFO) */
    late = tc_send_start(p, ch, "x", 1, 0);
    TC_ASSERT_STATUS(tc_must_wait(p, late, &r), ST(AGAIN));
    tc_reply_free(&r);
    ck_assert_int_eq(tc_wait(p, id, 100, &r), 0);
    tc_wait_stat(q, "mem", TC_LEN, 2);

    /* receiving is not enough (unacked bytes are held); the ack frees them */
    TC_ASSERT_STATUS(tc_recv(q, qch, 0, &m), ST(OK));
    ck_assert_int_eq(tc_wait(p, id, 100, &r), 0);
    TC_ASSERT_STATUS(tc_ack(q, m.tag), ST(OK));
    tc_msg_free(&m);
    TC_ASSERT_STATUS(tc_must_wait(p, id, &r), ST(OK));
    tc_reply_free(&r);
    tc_wait_stat(q, "mem", TC_LEN, 2);

    tc_conn_free(q);
    tc_conn_free(p);
    stop_server();
}
END_TEST

START_TEST(test_send_waiting_for_memory_is_withdrawn_with_its_connection)
{
    static char blob[3000];
    struct tc_conn *p, *q;
    struct tc_msg m;
    uint64_t ch, qch;

    memset(blob, 'w', sizeof blob);
    tc_server_start(&srv, "--max-memory", "4000", NULL);
    p = tc_connect_hello(srv.port);
    q = tc_connect_hello(srv.port);
    TC_ASSERT_STATUS(tc_open(p, "mem", 10, &ch), ST(OK));
    TC_ASSERT_STATUS(tc_open(q, "mem", 10, &qch), ST(OK));
    TC_ASSERT_STATUS(tc_send(p, ch, blob, sizeof blob, -1), ST(OK));
    tc_send_start(p, ch, blob, sizeof blob, -1);
    TC_ASSERT_STATUS(tc_ping(p), ST(OK));
    tc_conn_free(p);
    /* its connection went: the waiting send is gone, not delivered */
    TC_ASSERT_STATUS(tc_recv(q, qch, 0, &m), ST(OK));
    TC_ASSERT_STATUS(tc_ack(q, m.tag), ST(OK));
    tc_msg_free(&m);
    TC_ASSERT_STATUS(tc_recv(q, qch, 300, &m), ST(TIMEDOUT));
    /* and the memory it asked for is there for others */
    TC_ASSERT_STATUS(tc_send(q, qch, blob, sizeof blob, 0), ST(OK));

    tc_conn_free(q);
    stop_server();
}
END_TEST

START_TEST(test_select_waiting_for_memory_on_a_deleted_channel_answers_noent)
{
    static char blob[3000];
    struct wire_payload pl = {.data = blob, .len = sizeof blob};
    struct tc_conn *p;
    struct tc_reply r;
    struct tc_msg m;
    uint64_t a, b, id, chans[2];
    int is_send[2] = {1, 0};

    memset(blob, 'd', sizeof blob);
    tc_server_start(&srv, "--max-memory", "4000", NULL);
    p = tc_connect_hello(srv.port);
    TC_ASSERT_STATUS(tc_open(p, "a", 4, &a), ST(OK));
    TC_ASSERT_STATUS(tc_open(p, "b", 4, &b), ST(OK));
    TC_ASSERT_STATUS(tc_send(p, a, blob, sizeof blob, -1), ST(OK));
    chans[0] = b;
    chans[1] = b;
    id = tc_select_start(p, chans, is_send, 2, &pl, 1, SOON);
    /* queued behind it, one that may not wait gives up at once */
    TC_ASSERT_STATUS(tc_must_wait(p, tc_select_start(p, chans, is_send, 2, &pl, 1, 0), &r), ST(AGAIN));
    tc_reply_free(&r);
    TC_ASSERT_STATUS(tc_delete(p, "b"), ST(OK));
    TC_ASSERT_STATUS(tc_recv(p, a, 0, &m), ST(OK));
    TC_ASSERT_STATUS(tc_ack(p, m.tag), ST(OK));
    tc_msg_free(&m);
    TC_ASSERT_STATUS(tc_must_wait(p, id, &r), ST(NOENT));
    tc_reply_free(&r);
    TC_ASSERT_STATUS(tc_ping(p), ST(OK));

    tc_conn_free(p);
    stop_server();
}
END_TEST

/* ---- --max-channels, --max-pending -------------------------------------- */

START_TEST(test_max_channels_refuses_creating_one_more)
{
    struct tc_conn *c;
    uint64_t ch;

    tc_server_start(&srv, "--max-channels", "3", NULL);
    c = tc_connect_hello(srv.port);
    TC_ASSERT_STATUS(tc_open(c, "c1", 1, &ch), ST(OK));
    TC_ASSERT_STATUS(tc_open(c, "c2", 1, &ch), ST(OK));
    TC_ASSERT_STATUS(tc_open(c, "c3", 1, &ch), ST(OK));
    TC_ASSERT_STATUS(tc_open(c, "c4", 1, &ch), ST(NOMEM));
    /* attaching to one that exists creates nothing */
    TC_ASSERT_STATUS(tc_open(c, "c2", 1, &ch), ST(OK));
    TC_ASSERT_STATUS(tc_open(c, "c2", -1, &ch), ST(OK));
    TC_ASSERT_STATUS(tc_delete(c, "c1"), ST(OK));
    TC_ASSERT_STATUS(tc_open(c, "c4", 1, &ch), ST(OK));

    tc_conn_free(c);
    stop_server();
}
END_TEST

START_TEST(test_max_pending_answers_busy_to_one_blocked_request_too_many)
{
    struct tc_conn *c, *other;
    struct tc_reply r;
    uint64_t ch, id1, id2, id3, cancel;

    tc_server_start(&srv, "--max-pending", "2", NULL);
    c = tc_connect_hello(srv.port);
    other = tc_connect_hello(srv.port);
    TC_ASSERT_STATUS(tc_open(c, "empty", 1, &ch), ST(OK));
    id1 = tc_recv_start(c, ch, -1);
    id2 = tc_recv_start(c, ch, -1);
    id3 = tc_recv_start(c, ch, -1);
    TC_ASSERT_STATUS(tc_must_wait(c, id3, &r), ST(BUSY));
    ck_assert_msg(r.f->error != NULL && r.f->error[0] != '\0', "BUSY without a reason");
    tc_reply_free(&r);
    /* requests that do not block still go, and other connections have their own bound */
    TC_ASSERT_STATUS(tc_ping(c), ST(OK));
    TC_ASSERT_STATUS(tc_open(other, "empty", 1, &ch), ST(OK));
    for (int i = 0; i < 2; i++)
        tc_recv_start(other, ch, -1);
    tc_wait_stat(other, "empty", TC_RECEIVERS, 4);
    /* one ends: there is room for one more */
    cancel = tc_cancel_start(c, id1);
    TC_ASSERT_STATUS(tc_must_wait(c, id1, &r), ST(CANCELED));
    tc_reply_free(&r);
    TC_ASSERT_STATUS(tc_must_wait(c, cancel, &r), ST(OK));
    tc_reply_free(&r);
    id3 = tc_recv_start(c, ch, -1);
    tc_wait_stat(other, "empty", TC_RECEIVERS, 4);
    (void)id2;

    tc_conn_free(other);
    tc_conn_free(c);
    stop_server();
}
END_TEST

/* ---- slow and stuck clients ------------------------------------------ */

/* A PING round trip on c must take less than max_ms. */
static void assert_prompt(struct tc_conn *c, int max_ms)
{
    int64_t t0 = tc_now_ms();

    TC_ASSERT_STATUS(tc_ping(c), ST(OK));
    ck_assert_msg(tc_now_ms() - t0 < max_ms, "a PING took %lld ms", (long long)(tc_now_ms() - t0));
}

START_TEST(test_consumer_that_stops_reading_is_dropped_and_its_messages_go_to_the_next)
{
    enum { NMSG = 256, MSGLEN = 65536 };
    static char blob[MSGLEN];
    struct tc_conn *stuck, *p, *next;
    uint64_t ch, sch;
    int small = 4096;

    memset(blob, 's', sizeof blob);
    tc_server_start(&srv, "--max-msg", "65536", "--max-output", "1M", NULL);
    p = tc_connect_hello(srv.port);
    next = tc_connect_hello(srv.port);
    stuck = tc_connect_hello(srv.port);
    setsockopt(tc_conn_fd(stuck), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    TC_ASSERT_STATUS(tc_open(p, "big", NMSG, &ch), ST(OK));
    TC_ASSERT_STATUS(tc_open(stuck, "big", NMSG, &sch), ST(OK));
    for (int i = 0; i < NMSG; i++)
        TC_ASSERT_STATUS(tc_send(p, ch, blob, sizeof blob, -1), ST(OK));

    /*
     * 16 MiB of replies asked for and never read. The broker may drop the
     * connection before all the requests are written: a write then fails.
     */
    for (int i = 0; i < NMSG; i++) {
        Chanwire__ClientFrame f = CHANWIRE__CLIENT_FRAME__INIT;
        Chanwire__Recv rv = CHANWIRE__RECV__INIT;
        rv.chan = sch;
        f.id = tc_next_id(stuck);
        f.body_case = CHANWIRE__CLIENT_FRAME__BODY_RECV;
        f.recv = &rv;
        if (tc_write_frame(stuck, &f, NULL, 0) < 0) {
            ck_assert_msg(errno == ECONNRESET || errno == EPIPE, "write: %s", strerror(errno));
            break;
        }
    }
    /* meanwhile everyone else is served at once */
    for (int i = 0; i < 20; i++)
        assert_prompt(next, 1000);
    /* the stuck one went: nothing unacked, every message buffered again */
    tc_wait_stat(p, "big", TC_UNACKED, 0);
    tc_wait_stat(p, "big", TC_LEN, NMSG);
    assert_prompt(p, 1000);
    {
        struct tc_msg m;
        TC_ASSERT_STATUS(tc_recv(next, ch, 0, &m), ST(OK));
        ck_assert_uint_eq(m.len, MSGLEN);
        ck_assert_uint_eq(m.deliveries, 2);
        TC_ASSERT_STATUS(tc_ack(next, m.tag), ST(OK));
        tc_msg_free(&m);
    }

    tc_conn_free(stuck);
    tc_conn_free(next);
    tc_conn_free(p);
    stop_server();
}
END_TEST

START_TEST(test_half_frame_sleeper_delays_nobody_and_is_dropped_after_the_idle_timeout)
{
    static const uint8_t half[] = {0, 0, 0, 100, 0x08, 0x01};
    struct tc_conn *sleeper, *silent, *quiet, *busy;
    int64_t t0;
    uint64_t ch;

    tc_server_start(&srv, "--idle-timeout", "1", NULL);
    busy = tc_connect_hello(srv.port);
    quiet = tc_connect_hello(srv.port);
    sleeper = tc_connect_hello(srv.port);
    silent = tc_connect(srv.port);
    TC_ASSERT_STATUS(tc_open(busy, "rt", 1, &ch), ST(OK));

    t0 = tc_now_ms();
    ck_assert_int_eq(tc_write_raw(sleeper, half, sizeof half), 0);
    while (tc_now_ms() - t0 < 700) {
        assert_prompt(busy, 300);
        TC_ASSERT_STATUS(tc_send_str(busy, ch, "x"), ST(OK));
        ck_assert_uint_eq(recv_expect(busy, ch, "x"), 1);
    }
    ck_assert_msg(tc_closed_within(sleeper, SOON), "a client sitting on half a frame stayed");
    ck_assert_msg(tc_now_ms() - t0 >= 900, "dropped after %lld ms, the timeout is 1 s",
                  (long long)(tc_now_ms() - t0));
    ck_assert_msg(tc_closed_within(silent, SOON), "a client that never said HELLO stayed");
    /* idle between whole frames is fine: a consumer may wait for hours */
    assert_prompt(quiet, 1000);
    assert_prompt(busy, 1000);

    tc_conn_free(silent);
    tc_conn_free(sleeper);
    tc_conn_free(quiet);
    tc_conn_free(busy);
    stop_server();
}
END_TEST

/* ---- --expire-closed ------------------------------------------------------- */

START_TEST(test_closed_drained_channel_expires_and_open_ones_stay)
{
    struct tc_conn *c;
    struct tc_stat st;
    uint64_t ch, keep;
    int64_t t0;

    tc_server_start(&srv, "--expire-closed", "1", NULL);
    c = tc_connect_hello(srv.port);
    TC_ASSERT_STATUS(tc_open(c, "done", 2, &ch), ST(OK));
    TC_ASSERT_STATUS(tc_open(c, "open", 2, &keep), ST(OK));
    TC_ASSERT_STATUS(tc_send_str(c, ch, "last"), ST(OK));
    TC_ASSERT_STATUS(tc_close(c, ch), ST(OK));
    /* closed but not drained: it stays, however long */
    t0 = tc_now_ms();
    while (tc_now_ms() - t0 < 1600) {
        TC_ASSERT_STATUS(tc_stat(c, "done", &st), ST(OK));
        usleep(50 * 1000);
    }
    ck_assert_uint_eq(recv_expect(c, ch, "last"), 1);
    t0 = tc_now_ms();
    while (tc_stat(c, "done", &st) == ST(OK)) {
        ck_assert_msg(tc_now_ms() - t0 < SOON, "drained closed channel never expired");
        usleep(20 * 1000);
    }
    ck_assert_msg(tc_now_ms() - t0 >= 900, "expired after %lld ms, want 1 s",
                  (long long)(tc_now_ms() - t0));
    TC_ASSERT_STATUS(tc_send_str(c, ch, "stale"), ST(STALE));
    TC_ASSERT_STATUS(tc_stat(c, "open", &st), ST(OK));
    /* the name is free again */
    TC_ASSERT_STATUS(tc_open(c, "done", 5, &ch), ST(OK));

    tc_conn_free(c);
    stop_server();
}
END_TEST

/* ---- auth and bind ---------------------------------------------------- */

static char tokdir[64], tokfile[96];

static void write_token_file(const char *content)
{
    FILE *f;

    snprintf(tokdir, sizeof tokdir, "/tmp/chand-token.XXXXXX");
    ck_assert_msg(mkdtemp(tokdir) != NULL, "mkdtemp: %s", strerror(errno));
    snprintf(tokfile, sizeof tokfile, "%s/token", tokdir);
    f = fopen(tokfile, "w");
    ck_assert_msg(f != NULL, "%s: %s", tokfile, strerror(errno));
    fputs(content, f);
    fclose(f);
}

static void remove_token_file(void)
{
    unlink(tokfile);
    rmdir(tokdir);
}

START_TEST(test_auth_token_is_required_checked_and_accepted)
{
    struct tc_conn *c;
    struct tc_reply r;

    write_token_file("open-sesame\n");
    tc_server_start(&srv, "--auth-token-file", tokfile, NULL);
    remove_token_file();

    c = tc_connect(srv.port);
    TC_ASSERT_STATUS(tc_must_wait(c, tc_hello_as_start(c, session_a, NULL), &r), ST(UNAUTHORIZED));
    ck_assert_msg(r.f->error != NULL && r.f->error[0] != '\0', "UNAUTHORIZED without a reason");
    tc_reply_free(&r);
    ck_assert_msg(tc_closed_within(c, SOON), "connection without a token stayed open");
    tc_conn_free(c);

    const char *wrong[] = {"open-sesamE", "open-sesame\n", "open", "open-sesame-and-more", "x"};
    for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
        c = tc_connect(srv.port);
        TC_ASSERT_STATUS(tc_must_wait(c, tc_hello_as_start(c, session_a, wrong[i]), &r),
                         ST(UNAUTHORIZED));
        tc_reply_free(&r);
        ck_assert_msg(tc_closed_within(c, SOON), "connection with token '%s' stayed open", wrong[i]);
        tc_conn_free(c);
    }

    c = tc_connect(srv.port);
    TC_ASSERT_STATUS(tc_hello_as(c, session_a, "open-sesame", NULL), ST(OK));
    TC_ASSERT_STATUS(tc_ping(c), ST(OK));
    tc_conn_free(c);
    stop_server();
}
END_TEST

/* Run chand with argv (NULL-terminated), expecting it to exit at once; its stderr into err. */
static int run_chand_fails(char *err, size_t errlen, const char *const *args)
{
    const char *chand = getenv("CHAND");
    const char *argv[16];
    int pfd[2], status = -1;
    size_t n = 0, len = 0;
    int64_t deadline;
    pid_t pid;

    ck_assert_ptr_nonnull(chand);
    argv[n++] = chand;
    for (; *args != NULL && n < 15; args++)
        argv[n++] = *args;
    argv[n] = NULL;
    ck_assert_int_eq(pipe(pfd), 0);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(pfd[1], 2);
        close(pfd[0]);
        execv(chand, (char *const *)argv);
        _exit(127);
    }
    close(pfd[1]);
    deadline = tc_now_ms() + SOON;
    for (;;) {
        struct pollfd p = {.fd = pfd[0], .events = POLLIN};
        ssize_t k;
        int left = (int)(deadline - tc_now_ms());
        ck_assert_msg(left > 0, "chand did not exit within %d ms", SOON);
        if (poll(&p, 1, left) <= 0)
            continue;
        k = read(pfd[0], err + len, errlen - 1 - len);
        if (k <= 0)
            break;
        len += (size_t)k;
    }
    err[len] = '\0';
    close(pfd[0]);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    ck_assert_msg(WIFEXITED(status), "chand did not exit normally");
    return WEXITSTATUS(status);
}

static int count_lines(const char *s)
{
    int n = 0;

    for (; *s; s++)
        n += *s == '\n';
    return n;
}

START_TEST(test_bad_token_files_and_non_loopback_bind_refuse_to_start_with_one_line)
{
    char err[1024];

    write_token_file("\n");
    const char *empty[] = {"--port", "0", "--auth-token-file", tokfile, NULL};
    ck_assert_int_eq(run_chand_fails(err, sizeof err, empty), 2);
    ck_assert_msg(count_lines(err) == 1 && strstr(err, tokfile) != NULL, "stderr: %s", err);
    remove_token_file();

    const char *missing[] = {"--port", "0", "--auth-token-file", "/nonexistent/chand-token", NULL};
    ck_assert_int_eq(run_chand_fails(err, sizeof err, missing), 2);
    ck_assert_msg(count_lines(err) == 1 && strstr(err, "/nonexistent/chand-token"), "stderr: %s", err);

    const char *any4[] = {"--port", "0", "--bind", "0.0.0.0", NULL};
    ck_assert_int_eq(run_chand_fails(err, sizeof err, any4), 2);
    ck_assert_msg(count_lines(err) == 1 && strstr(err, "--insecure") != NULL, "stderr: %s", err);

    const char *any6[] = {"--port", "0", "--bind", "::", NULL};
    ck_assert_int_eq(run_chand_fails(err, sizeof err, any6), 2);
    ck_assert_msg(count_lines(err) == 1 && strstr(err, "--auth-token-file") != NULL, "stderr: %s", err);
}
END_TEST

START_TEST(test_loopback_binds_need_no_token)
{
    struct tc_conn *c;

    tc_server_start(&srv, "--bind", "127.0.0.1", NULL);
    c = tc_connect_hello(srv.port);
    TC_ASSERT_STATUS(tc_ping(c), ST(OK));
    tc_conn_free(c);
    stop_server();
}
END_TEST

static Suite *limits_suite(void)
{
    Suite *s = suite_create("broker_limits");
    TCase *tc;

    tc = tcase_create("leases");
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_expired_lease_redelivers_with_one_more_delivery_and_late_ack_is_invalid);
    tcase_add_test(tc, test_acked_lease_and_plain_delivery_are_not_redelivered);
    tcase_add_test(tc, test_nacked_lease_comes_back_at_once);
    suite_add_tcase(s, tc);

    tc = tcase_create("sessions");
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_resent_send_with_the_same_session_and_seq_is_delivered_once);
    tcase_add_test(tc, test_send_many_resent_after_a_partial_send_sends_only_the_rest);
    tcase_add_test(tc, test_unbuffered_send_held_by_a_receiver_when_its_sender_dropped_is_not_resent);
    tcase_add_test(tc, test_newer_connection_of_a_session_takes_over_and_the_older_is_closed);
    tcase_add_test(tc, test_session_is_forgotten_after_its_ttl);
    suite_add_tcase(s, tc);

    tc = tcase_create("limits");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_send_over_max_memory_waits_until_a_receiver_frees_memory);
    tcase_add_test(tc, test_send_waiting_for_memory_is_withdrawn_with_its_connection);
    tcase_add_test(tc, test_select_waiting_for_memory_on_a_deleted_channel_answers_noent);
    tcase_add_test(tc, test_max_channels_refuses_creating_one_more);
    tcase_add_test(tc, test_max_pending_answers_busy_to_one_blocked_request_too_many);
    tcase_add_test(tc, test_consumer_that_stops_reading_is_dropped_and_its_messages_go_to_the_next);
    tcase_add_test(tc, test_half_frame_sleeper_delays_nobody_and_is_dropped_after_the_idle_timeout);
    tcase_add_test(tc, test_closed_drained_channel_expires_and_open_ones_stay);
    suite_add_tcase(s, tc);

    tc = tcase_create("auth");
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_auth_token_is_required_checked_and_accepted);
    tcase_add_test(tc, test_bad_token_files_and_non_loopback_bind_refuse_to_start_with_one_line);
    tcase_add_test(tc, test_loopback_binds_need_no_token);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(limits_suite());
    int failed;

    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
