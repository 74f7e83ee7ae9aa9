/*
 * broker_test.c: channel semantics through a real chand over TCP: send,
 * recv and close across connections, rendezvous, requeue of unacked
 * messages, deadlines, select, cancel, delete and shutdown on SIGTERM.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include <check.h>
#include <event2/buffer.h>

#include "testclient.h"

/* Assert that m holds exactly the bytes of s. */
#define ASSERT_MSG(m, s)                                                                        \
    do {                                                                                        \
        const char *want_ = (s);                                                                \
        ck_assert_msg((m).len == strlen(want_) && memcmp((m).data, want_, (m).len) == 0,        \
                      "got %zu bytes \"%.*s\", want \"%s\"", (m).len, (int)(m).len,             \
                      (const char *)(m).data, want_);                                           \
    } while (0)

/* Receive one message, check its bytes and delivery count, ack it. */
static void recv_expect(struct tc_conn *c, uint64_t chan, const char *want, uint32_t deliveries)
{
    struct tc_msg m;

    TC_ASSERT_STATUS(tc_recv(c, chan, -1, &m), ST(OK));
    ASSERT_MSG(m, want);
    ck_assert_uint_eq(m.deliveries, deliveries);
    TC_ASSERT_STATUS(tc_ack(c, m.tag), ST(OK));
    tc_msg_free(&m);
}

START_TEST(test_send_recv_close_across_two_connections)
{
    struct tc_server srv;
    struct tc_conn *a, *b;
    uint64_t ca, cb, wa, wb;
    struct tc_msg m;
    struct tc_stat st;

    tc_server_start(&srv, NULL);
    a = tc_connect_hello(srv.port);
    b = tc_connect_hello(srv.port);
    TC_ASSERT_STATUS(tc_open(a, "jobs", 4, &ca), ST(OK));
    TC_ASSERT_STATUS(tc_open(b, "jobs", 4, &cb), ST(OK));

    TC_ASSERT_STATUS(tc_send_str(a, ca, "hello"), ST(OK));
    TC_ASSERT_STATUS(tc_send_str(a, ca, ""), ST(OK));
    TC_ASSERT_STATUS(tc_send_str(a, ca, "world"), ST(OK));
    TC_ASSERT_STATUS(tc_stat(b, "jobs", &st), ST(OK));
    ck_assert_int_eq(st.cap, 4);
    ck_assert_uint_eq(st.len, 3);
    recv_expect(b, cb, "hello", 1);
    /* a 0-byte message is a message, not a close */
    recv_expect(b, cb, "", 1);
    recv_expect(b, cb, "world", 1);
    TC_ASSERT_STATUS(tc_stat(b, "jobs", &st), ST(OK));
    ck_assert_uint_eq(st.len, 0);
    ck_assert_uint_eq(st.unacked, 0);

    /* close: what is buffered stays receivable, then CLOSED */
    TC_ASSERT_STATUS(tc_send_str(a, ca, "a"), ST(OK));
    TC_ASSERT_STATUS(tc_send_str(a, ca, "b"), ST(OK));
    TC_ASSERT_STATUS(tc_close(a, ca), ST(OK));
    recv_expect(b, cb, "a", 1);
    recv_expect(b, cb, "b", 1);
    TC_ASSERT_STATUS(tc_recv(b, cb, -1, &m), ST(CLOSED));
    TC_ASSERT_STATUS(tc_recv(b, cb, 0, &m), ST(CLOSED));
    TC_ASSERT_STATUS(tc_send_str(a, ca, "late"), ST(CLOSED));
    TC_ASSERT_STATUS(tc_send_str(b, cb, "late"), ST(CLOSED));
    TC_ASSERT_STATUS(tc_close(a, ca), ST(CLOSED));
    TC_ASSERT_STATUS(tc_close(b, cb), ST(CLOSED));
    TC_ASSERT_STATUS(tc_stat(a, "jobs", &st), ST(OK));
    ck_assert_int_eq(st.closed, 1);

    /* close wakes a receiver blocked on another connection */
    TC_ASSERT_STATUS(tc_open(a, "wake", 0, &wa), ST(OK));
    TC_ASSERT_STATUS(tc_open(b, "wake", 0, &wb), ST(OK));
    uint64_t id = tc_recv_start(b, wb, -1);
    tc_wait_stat(a, "wake", TC_RECEIVERS, 1);
    TC_ASSERT_STATUS(tc_close(a, wa), ST(OK));
    struct tc_reply r;
    TC_ASSERT_STATUS(tc_must_wait(b, id, &r), ST(CLOSED));
    tc_reply_free(&r);

    tc_conn_free(a);
    tc_conn_free(b);
    tc_server_stop_ok(&srv);
}
END_TEST

START_TEST(test_unbuffered_send_waits_for_a_receiver)
{
    struct tc_server srv;
    struct tc_conn *a, *b;
    struct tc_reply r;
    struct tc_msg m;
    struct tc_stat st;
    uint64_t ca, cb, id;

    tc_server_start(&srv, NULL);
    a = tc_connect_hello(srv.port);
    b = tc_connect_hello(srv.port);
    TC_ASSERT_STATUS(tc_open(a, "rv", 0, &ca), ST(OK));
    TC_ASSERT_STATUS(tc_open(b, "rv", 0, &cb), ST(OK));

    id = tc_send_start(a, ca, "ping", 4, -1);
    ck_assert_msg(tc_wait(a, id, 100, &r) == 0, "unbuffered SEND completed with no receiver");
    tc_wait_stat(b, "rv", TC_SENDERS, 1);
    TC_ASSERT_STATUS(tc_stat(b, "rv", &st), ST(OK));
    ck_assert_uint_eq(st.len, 0);

    TC_ASSERT_STATUS(tc_recv(b, cb, -1, &m), ST(OK));
    ASSERT_MSG(m, "ping");
    /* the sender completes on the receiver's ack, not before */
    ck_assert_msg(tc_wait(a, id, 50, &r) == 0, "unbuffered SEND completed before the receiver acked");
    TC_ASSERT_STATUS(tc_ack(b, m.tag), ST(OK));
    tc_msg_free(&m);
    TC_ASSERT_STATUS(tc_must_wait(a, id, &r), ST(OK));
    ck_assert_msg(r.f->body_case == CHANWIRE__SERVER_FRAME__BODY_SEND && r.f->send->count == 1,
                  "SEND reply without count 1");
    tc_reply_free(&r);
    TC_ASSERT_STATUS(tc_stat(b, "rv", &st), ST(OK));
    ck_assert_uint_eq(st.senders, 0);
    ck_assert_uint_eq(st.unacked, 0);

    tc_conn_free(a);
    tc_conn_free(b);
    tc_server_stop_ok(&srv);
}
END_TEST

START_TEST(test_unacked_messages_of_a_dropped_receiver_go_to_the_next_in_order)
{
    struct tc_server srv;
    struct tc_conn *a, *b, *c;
    struct tc_msg m;
    uint64_t ca, cb, cc;
    char want[16];

    tc_server_start(&srv, NULL);
    a = tc_connect_hello(srv.port);
    b = tc_connect_hello(srv.port);
    c = tc_connect_hello(srv.port);
    TC_ASSERT_STATUS(tc_open(a, "q", 10, &ca), ST(OK));
    TC_ASSERT_STATUS(tc_open(b, "q", 10, &cb), ST(OK));
    TC_ASSERT_STATUS(tc_open(c, "q", 10, &cc), ST(OK));
    for (int i = 0; i < 10; i++) {
        snprintf(want, sizeof want, "m%d", i);
        TC_ASSERT_STATUS(tc_send_str(a, ca, want), ST(OK));
    }
    /* b takes five and never acks them */
    for (int i = 0; i < 5; i++) {
        TC_ASSERT_STATUS(tc_recv(b, cb, -1, &m), ST(OK));
        snprintf(want, sizeof want, "m%d", i);
        ASSERT_MSG(m, want);
        ck_assert_uint_eq(m.deliveries, 1);
        tc_msg_free(&m);
    }
    tc_wait_stat(c, "q", TC_UNACKED, 5);
    tc_wait_stat(c, "q", TC_LEN, 5);
    /* unacked messages still count against the capacity */
    TC_ASSERT_STATUS(tc_send(a, ca, "extra", 5, 0), ST(AGAIN));

    tc_conn_free(b);
    tc_wait_stat(c, "q", TC_UNACKED, 0);
    tc_wait_stat(c, "q", TC_LEN, 10);
    for (int i = 0; i < 10; i++) {
        snprintf(want, sizeof want, "m%d", i);
        recv_expect(c, cc, want, i < 5 ? 2 : 1);
    }
    TC_ASSERT_STATUS(tc_recv(c, cc, 0, &m), ST(AGAIN));

    tc_conn_free(a);
    tc_conn_free(c);
    tc_server_stop_ok(&srv);
}
END_TEST

START_TEST(test_unbuffered_sender_waits_on_when_its_receiver_drops)
{
    struct tc_server srv;
    struct tc_conn *a, *b, *c;
    struct tc_reply r;
    struct tc_msg m;
    uint64_t ca, cb, cc, id;

    tc_server_start(&srv, NULL);
    a = tc_connect_hello(srv.port);
    b = tc_connect_hello(srv.port);
    c = tc_connect_hello(srv.port);
    TC_ASSERT_STATUS(tc_open(a, "u", 0, &ca), ST(OK));
    TC_ASSERT_STATUS(tc_open(b, "u", 0, &cb), ST(OK));
    TC_ASSERT_STATUS(tc_open(c, "u", 0, &cc), ST(OK));

    id = tc_send_start(a, ca, "x", 1, -1);
    tc_wait_stat(c, "u", TC_SENDERS, 1);
    TC_ASSERT_STATUS(tc_recv(b, cb, -1, &m), ST(OK));
    ASSERT_MSG(m, "x");
    tc_msg_free(&m);
    tc_conn_free(b);

    TC_ASSERT_STATUS(tc_recv(c, cc, 2000, &m), ST(OK));
    ASSERT_MSG(m, "x");
    ck_assert_uint_eq(m.deliveries, 2);
    ck_assert_msg(tc_wait(a, id, 50, &r) == 0, "SEND completed though no receiver acked");
    TC_ASSERT_STATUS(tc_ack(c, m.tag), ST(OK));
    tc_msg_free(&m);
    TC_ASSERT_STATUS(tc_must_wait(a, id, &r), ST(OK));
    tc_reply_free(&r);

    tc_conn_free(a);
    tc_conn_free(c);
    tc_server_stop_ok(&srv);
}
END_TEST

START_TEST(test_deadlines_time_out_without_delivering)
{
    struct tc_server srv;
    struct tc_conn *a, *b;
    struct tc_reply r;
    struct tc_msg m;
    uint64_t ca, cb, bb, id;
    int64_t t0, dt;

    tc_server_start(&srv, NULL);
    a = tc_connect_hello(srv.port);
    b = tc_connect_hello(srv.port);
    TC_ASSERT_STATUS(tc_open(a, "dl", 0, &ca), ST(OK));
    TC_ASSERT_STATUS(tc_open(b, "dl", 0, &cb), ST(OK));

    t0 = tc_now_ms();
    TC_ASSERT_STATUS(tc_recv(b, cb, 50, &m), ST(TIMEDOUT));
    dt = tc_now_ms() - t0;
    ck_assert_msg(dt >= 50 && dt < 500, "RECV with a 50 ms deadline answered after %lld ms", (long long)dt);
    TC_ASSERT_STATUS(tc_recv(b, cb, 50, &m), ST(TIMEDOUT));

    t0 = tc_now_ms();
    TC_ASSERT_STATUS(tc_recv(b, cb, 0, &m), ST(AGAIN));
    TC_ASSERT_STATUS(tc_send(a, ca, "no", 2, 0), ST(AGAIN));
    dt = tc_now_ms() - t0;
    ck_assert_msg(dt < 50, "timeout 0 took %lld ms", (long long)dt);

    t0 = tc_now_ms();
    TC_ASSERT_STATUS(tc_send(a, ca, "no", 2, 50), ST(TIMEDOUT));
    dt = tc_now_ms() - t0;
    ck_assert_msg(dt >= 50 && dt < 500, "SEND with a 50 ms deadline answered after %lld ms", (long long)dt);

    /* neither timed-out recv is still parked to swallow the next message */
    tc_wait_stat(a, "dl", TC_RECEIVERS, 0);
    tc_wait_stat(a, "dl", TC_SENDERS, 0);
    id = tc_recv_start(b, cb, -1);
    tc_wait_stat(a, "dl", TC_RECEIVERS, 1);
    uint64_t sid = tc_send_start(a, ca, "later", 5, 2000);
    TC_ASSERT_STATUS(tc_must_wait(b, id, &r), ST(OK));
    tc_reply_msg(&r, &m);
    tc_reply_free(&r);
    ASSERT_MSG(m, "later");
    ck_assert_uint_eq(m.deliveries, 1);
    TC_ASSERT_STATUS(tc_ack(b, m.tag), ST(OK));
    tc_msg_free(&m);
    TC_ASSERT_STATUS(tc_must_wait(a, sid, &r), ST(OK));
    tc_reply_free(&r);

    /* a send that timed out on a full buffer was not delivered */
    TC_ASSERT_STATUS(tc_open(a, "dlb", 1, &bb), ST(OK));
    TC_ASSERT_STATUS(tc_send_str(a, bb, "first"), ST(OK));
    TC_ASSERT_STATUS(tc_send(a, bb, "second", 6, 50), ST(TIMEDOUT));
    recv_expect(a, bb, "first", 1);
    TC_ASSERT_STATUS(tc_recv(a, bb, 0, &m), ST(AGAIN));

    tc_conn_free(a);
    tc_conn_free(b);
    tc_server_stop_ok(&srv);
}
END_TEST

START_TEST(test_select_takes_one_case_and_withdraws_the_others)
{
    struct tc_server srv;
    struct tc_conn *a, *b;
    struct tc_reply r;
    struct tc_stat st;
    uint64_t sa, sb, sc, bsa, bsb, id, sid;

    tc_server_start(&srv, NULL);
    a = tc_connect_hello(srv.port);
    b = tc_connect_hello(srv.port);
    TC_ASSERT_STATUS(tc_open(a, "sa", 0, &sa), ST(OK));
    TC_ASSERT_STATUS(tc_open(a, "sb", 0, &sb), ST(OK));
    TC_ASSERT_STATUS(tc_open(a, "sc", 1, &sc), ST(OK));
    TC_ASSERT_STATUS(tc_open(b, "sa", 0, &bsa), ST(OK));
    TC_ASSERT_STATUS(tc_open(b, "sb", 0, &bsb), ST(OK));

    uint64_t recv2[2] = {sa, sb};
    int norecv[2] = {0, 0};
    id = tc_select_start(a, recv2, norecv, 2, NULL, 0, -1);
    tc_wait_stat(b, "sa", TC_RECEIVERS, 1);
    tc_wait_stat(b, "sb", TC_RECEIVERS, 1);
    sid = tc_send_start(b, bsb, "chosen", 6, 2000);
    TC_ASSERT_STATUS(tc_must_wait(a, id, &r), ST(OK));
    ck_assert_msg(r.f->body_case == CHANWIRE__SERVER_FRAME__BODY_SELECT, "SELECT reply without SelectReply");
    ck_assert_uint_eq(r.f->select->index, 1);
    TC_ASSERT_STATUS(r.f->select->result, ST(OK));
    ck_assert_uint_eq(r.n, 1);
    ck_assert_msg(r.pl[0].len == 6 && memcmp(r.pl[0].data, "chosen", 6) == 0, "SELECT got the wrong message");
    uint64_t tag = r.f->select->tag;
    tc_reply_free(&r);
    TC_ASSERT_STATUS(tc_ack(a, tag), ST(OK));
    TC_ASSERT_STATUS(tc_must_wait(b, sid, &r), ST(OK));
    tc_reply_free(&r);
    /* the case that did not proceed was withdrawn */
    TC_ASSERT_STATUS(tc_stat(b, "sa", &st), ST(OK));
    ck_assert_uint_eq(st.receivers, 0);
    TC_ASSERT_STATUS(tc_send(b, bsa, "nobody", 6, 0), ST(AGAIN));

    /* nothing ready and timeout 0 */
    id = tc_select_start(a, recv2, norecv, 2, NULL, 0, 0);
    TC_ASSERT_STATUS(tc_must_wait(a, id, &r), ST(AGAIN));
    tc_reply_free(&r);

    /* a ready send case proceeds at once; its message is in the buffer */
    uint64_t mixed[2] = {sa, sc};
    int sendc[2] = {0, 1};
    struct wire_payload pl = {.data = "sel", .len = 3};
    id = tc_select_start(a, mixed, sendc, 2, &pl, 1, -1);
    TC_ASSERT_STATUS(tc_must_wait(a, id, &r), ST(OK));
    ck_assert_msg(r.f->body_case == CHANWIRE__SERVER_FRAME__BODY_SELECT, "SELECT reply without SelectReply");
    ck_assert_uint_eq(r.f->select->index, 1);
    TC_ASSERT_STATUS(r.f->select->result, ST(OK));
    tc_reply_free(&r);
    recv_expect(a, sc, "sel", 1);
    TC_ASSERT_STATUS(tc_stat(a, "sa", &st), ST(OK));
    ck_assert_uint_eq(st.receivers, 0);

    tc_conn_free(a);
    tc_conn_free(b);
    tc_server_stop_ok(&srv);
}
END_TEST

START_TEST(test_cancel_withdraws_a_blocked_recv_without_losing_messages)
{
    struct tc_server srv;
    struct tc_conn *a, *b;
    struct tc_reply r;
    uint64_t ca, cb, id, cid;

    tc_server_start(&srv, NULL);
    a = tc_connect_hello(srv.port);
    b = tc_connect_hello(srv.port);
    TC_ASSERT_STATUS(tc_open(a, "cx", 1, &ca), ST(OK));
    TC_ASSERT_STATUS(tc_open(b, "cx", 1, &cb), ST(OK));

    id = tc_recv_start(a, ca, -1);
    tc_wait_stat(b, "cx", TC_RECEIVERS, 1);
    cid = tc_cancel_start(a, id);
    TC_ASSERT_STATUS(tc_must_wait(a, id, &r), ST(CANCELED));
    ck_assert_uint_eq(r.n, 0);
    tc_reply_free(&r);
    TC_ASSERT_STATUS(tc_must_wait(a, cid, &r), ST(OK));
    tc_reply_free(&r);
    tc_wait_stat(b, "cx", TC_RECEIVERS, 0);

    TC_ASSERT_STATUS(tc_send_str(b, cb, "after"), ST(OK));
    tc_wait_stat(b, "cx", TC_LEN, 1);
    recv_expect(a, ca, "after", 1);

    /* cancelling a finished or unknown request is a no-op */
    cid = tc_cancel_start(a, id);
    TC_ASSERT_STATUS(tc_must_wait(a, cid, &r), ST(OK));
    tc_reply_free(&r);
    cid = tc_cancel_start(a, 999999);
    TC_ASSERT_STATUS(tc_must_wait(a, cid, &r), ST(OK));
    tc_reply_free(&r);

    tc_conn_free(a);
    tc_conn_free(b);
    tc_server_stop_ok(&srv);
}
END_TEST

START_TEST(test_delete_fails_blocked_ops_and_stales_handles)
{
    struct tc_server srv;
    struct tc_conn *a, *b, *c;
    struct tc_reply r;
    struct tc_msg m;
    struct tc_stat st;
    uint64_t d1, d2, bd1, cd2, nd1, rid, sid;

    tc_server_start(&srv, NULL);
    a = tc_connect_hello(srv.port);
    b = tc_connect_hello(srv.port);
    c = tc_connect_hello(srv.port);
    TC_ASSERT_STATUS(tc_open(a, "del", 0, &d1), ST(OK));
    TC_ASSERT_STATUS(tc_open(a, "del2", 0, &d2), ST(OK));
    TC_ASSERT_STATUS(tc_open(b, "del", 0, &bd1), ST(OK));
    TC_ASSERT_STATUS(tc_open(c, "del2", 0, &cd2), ST(OK));

    rid = tc_recv_start(b, bd1, -1);
    sid = tc_send_start(c, cd2, "gone", 4, -1);
    tc_wait_stat(a, "del", TC_RECEIVERS, 1);
    tc_wait_stat(a, "del2", TC_SENDERS, 1);

    TC_ASSERT_STATUS(tc_delete(a, "del"), ST(OK));
    TC_ASSERT_STATUS(tc_must_wait(b, rid, &r), ST(NOENT));
    tc_reply_free(&r);
    TC_ASSERT_STATUS(tc_delete(a, "del2"), ST(OK));
    TC_ASSERT_STATUS(tc_must_wait(c, sid, &r), ST(NOENT));
    tc_reply_free(&r);

    TC_ASSERT_STATUS(tc_send_str(b, bd1, "x"), ST(STALE));
    TC_ASSERT_STATUS(tc_recv(b, bd1, 0, &m), ST(STALE));
    TC_ASSERT_STATUS(tc_close(b, bd1), ST(STALE));
    TC_ASSERT_STATUS(tc_send_str(c, cd2, "x"), ST(STALE));
    TC_ASSERT_STATUS(tc_delete(a, "del"), ST(NOENT));
    TC_ASSERT_STATUS(tc_stat(a, "del", &st), ST(NOENT));

    /* a channel of the same name is a new channel; old handles stay stale */
    TC_ASSERT_STATUS(tc_open(a, "del", 1, &nd1), ST(OK));
    ck_assert_msg(nd1 != d1 && nd1 != bd1, "a new channel reused handle %llu", (unsigned long long)nd1);
    TC_ASSERT_STATUS(tc_send_str(b, bd1, "x"), ST(STALE));
    TC_ASSERT_STATUS(tc_send_str(a, nd1, "fresh"), ST(OK));
    recv_expect(a, nd1, "fresh", 1);

    tc_conn_free(a);
    tc_conn_free(b);
    tc_conn_free(c);
    tc_server_stop_ok(&srv);
}
END_TEST

START_TEST(test_send_many_and_recv_many_keep_order)
{
    struct tc_server srv;
    struct tc_conn *a;
    struct tc_reply r;
    uint64_t ch, id;
    Chanwire__ClientFrame f = CHANWIRE__CLIENT_FRAME__INIT;
    Chanwire__Send s = CHANWIRE__SEND__INIT;
    Chanwire__Recv rv = CHANWIRE__RECV__INIT;
    struct wire_payload pl[3] = {{.data = "one", .len = 3}, {.data = "", .len = 0}, {.data = "three", .len = 5}};
    static const char *const want[3] = {"one", "", "three"};

    tc_server_start(&srv, NULL);
    a = tc_connect_hello(srv.port);
    TC_ASSERT_STATUS(tc_open(a, "many", 5, &ch), ST(OK));

    s.chan = ch;
    s.timeout_ms = -1;
    f.body_case = CHANWIRE__CLIENT_FRAME__BODY_SEND;
    f.send = &s;
    id = tc_request_start(a, &f, pl, 3);
    TC_ASSERT_STATUS(tc_must_wait(a, id, &r), ST(OK));
    ck_assert_msg(r.f->body_case == CHANWIRE__SERVER_FRAME__BODY_SEND, "SEND reply without SendReply");
    ck_assert_uint_eq(r.f->send->count, 3);
    tc_reply_free(&r);
    tc_wait_stat(a, "many", TC_LEN, 3);

    rv.chan = ch;
    rv.timeout_ms = -1;
    rv.max = 5;
    f.body_case = CHANWIRE__CLIENT_FRAME__BODY_RECV;
    f.recv = &rv;
    id = tc_request_start(a, &f, NULL, 0);
    TC_ASSERT_STATUS(tc_must_wait(a, id, &r), ST(OK));
    ck_assert_msg(r.f->body_case == CHANWIRE__SERVER_FRAME__BODY_RECV, "RECV reply without RecvReply");
    ck_assert_uint_eq(r.f->recv->n_tags, 3);
    ck_assert_uint_eq(r.n, 3);
    for (size_t i = 0; i < 3; i++) {
        ck_assert_msg(r.pl[i].len == strlen(want[i]) && memcmp(r.pl[i].data, want[i], r.pl[i].len) == 0,
                      "RECV_MANY message %zu out of order", i);
        TC_ASSERT_STATUS(tc_ack(a, r.f->recv->tags[i]), ST(OK));
    }
    tc_reply_free(&r);
    tc_wait_stat(a, "many", TC_UNACKED, 0);

    tc_conn_free(a);
    tc_server_stop_ok(&srv);
}
END_TEST

START_TEST(test_nack_puts_the_message_back_at_the_head)
{
    struct tc_server srv;
    struct tc_conn *a;
    struct tc_reply r;
    struct tc_msg m;
    uint64_t ch, id;
    Chanwire__ClientFrame f = CHANWIRE__CLIENT_FRAME__INIT;
    Chanwire__Tags t = CHANWIRE__TAGS__INIT;

    tc_server_start(&srv, NULL);
    a = tc_connect_hello(srv.port);
    TC_ASSERT_STATUS(tc_open(a, "nq", 3, &ch), ST(OK));
    TC_ASSERT_STATUS(tc_send_str(a, ch, "first"), ST(OK));
    TC_ASSERT_STATUS(tc_send_str(a, ch, "second"), ST(OK));
    TC_ASSERT_STATUS(tc_recv(a, ch, -1, &m), ST(OK));
    ASSERT_MSG(m, "first");

    t.n_tags = 1;
    t.tags = &m.tag;
    f.body_case = CHANWIRE__CLIENT_FRAME__BODY_NACK;
    f.nack = &t;
    id = tc_request_start(a, &f, NULL, 0);
    TC_ASSERT_STATUS(tc_must_wait(a, id, &r), ST(OK));
    tc_reply_free(&r);
    /* the tag is settled: a second NACK or an ACK of it is refused */
    id = tc_request_start(a, &f, NULL, 0);
    TC_ASSERT_STATUS(tc_must_wait(a, id, &r), ST(INVALID));
    tc_reply_free(&r);
    TC_ASSERT_STATUS(tc_ack(a, m.tag), ST(INVALID));
    tc_msg_free(&m);

    recv_expect(a, ch, "first", 2);
    recv_expect(a, ch, "second", 1);

    tc_conn_free(a);
    tc_server_stop_ok(&srv);
}
END_TEST

START_TEST(test_ping_echoes_and_list_filters_by_prefix)
{
    struct tc_server srv;
    struct tc_conn *a;
    struct tc_reply r;
    uint64_t ch, id;
    Chanwire__ClientFrame f = CHANWIRE__CLIENT_FRAME__INIT;
    Chanwire__Ping p = CHANWIRE__PING__INIT;
    Chanwire__Stat l = CHANWIRE__STAT__INIT;

    tc_server_start(&srv, NULL);
    a = tc_connect_hello(srv.port);
    p.data.data = (uint8_t *)"echo";
    p.data.len = 4;
    f.body_case = CHANWIRE__CLIENT_FRAME__BODY_PING;
    f.ping = &p;
    id = tc_request_start(a, &f, NULL, 0);
    TC_ASSERT_STATUS(tc_must_wait(a, id, &r), ST(OK));
    ck_assert_msg(r.f->body_case == CHANWIRE__SERVER_FRAME__BODY_PING && r.f->ping->data.len == 4 &&
                      memcmp(r.f->ping->data.data, "echo", 4) == 0,
                  "PING did not echo its data");
    tc_reply_free(&r);

    TC_ASSERT_STATUS(tc_open(a, "job.a", 0, &ch), ST(OK));
    TC_ASSERT_STATUS(tc_open(a, "job.b", 2, &ch), ST(OK));
    TC_ASSERT_STATUS(tc_open(a, "other", 1, &ch), ST(OK));
    l.name = "job.";
    f.body_case = CHANWIRE__CLIENT_FRAME__BODY_LIST;
    f.list = &l;
    id = tc_request_start(a, &f, NULL, 0);
    TC_ASSERT_STATUS(tc_must_wait(a, id, &r), ST(OK));
    ck_assert_msg(r.f->body_case == CHANWIRE__SERVER_FRAME__BODY_LIST, "LIST reply without ListReply");
    ck_assert_uint_eq(r.f->list->n_chans, 2);
    int seen_a = 0, seen_b = 0;
    for (size_t i = 0; i < r.f->list->n_chans; i++) {
        seen_a += strcmp(r.f->list->chans[i]->name, "job.a") == 0;
        seen_b += strcmp(r.f->list->chans[i]->name, "job.b") == 0 && r.f->list->chans[i]->cap == 2;
    }
    ck_assert_msg(seen_a == 1 && seen_b == 1, "LIST job. did not return job.a and job.b (cap 2)");
    tc_reply_free(&r);
    l.name = "";
    id = tc_request_start(a, &f, NULL, 0);
    TC_ASSERT_STATUS(tc_must_wait(a, id, &r), ST(OK));
    ck_assert_uint_eq(r.f->list->n_chans, 3);
    tc_reply_free(&r);

    tc_conn_free(a);
    tc_server_stop_ok(&srv);
}
END_TEST

START_TEST(test_disconnect_withdraws_blocked_requests)
{
    struct tc_server srv;
    struct tc_conn *a, *b;
    struct tc_msg m;
    uint64_t aw, aw2, bw, bw2;

    tc_server_start(&srv, NULL);
    a = tc_connect_hello(srv.port);
    b = tc_connect_hello(srv.port);
    TC_ASSERT_STATUS(tc_open(a, "w", 0, &aw), ST(OK));
    TC_ASSERT_STATUS(tc_open(a, "w2", 0, &aw2), ST(OK));
    TC_ASSERT_STATUS(tc_open(b, "w", 0, &bw), ST(OK));
    TC_ASSERT_STATUS(tc_open(b, "w2", 0, &bw2), ST(OK));
    tc_recv_start(a, aw, -1);
    tc_send_start(a, aw2, "never", 5, -1);
    tc_wait_stat(b, "w", TC_RECEIVERS, 1);
    tc_wait_stat(b, "w2", TC_SENDERS, 1);

    tc_conn_free(a);
    tc_wait_stat(b, "w", TC_RECEIVERS, 0);
    tc_wait_stat(b, "w2", TC_SENDERS, 0);
    TC_ASSERT_STATUS(tc_send(b, bw, "lost?", 5, 0), ST(AGAIN));
    TC_ASSERT_STATUS(tc_recv(b, bw2, 0, &m), ST(AGAIN));

    tc_conn_free(b);
    tc_server_stop_ok(&srv);
}
END_TEST

START_TEST(test_replies_come_in_completion_order)
{
    struct tc_server srv;
    struct tc_conn *a, *b;
    struct tc_reply r;
    struct tc_msg m;
    uint64_t a1, a2, b1, b2, id1, id2;

    tc_server_start(&srv, NULL);
    a = tc_connect_hello(srv.port);
    b = tc_connect_hello(srv.port);
    TC_ASSERT_STATUS(tc_open(a, "o1", 1, &a1), ST(OK));
    TC_ASSERT_STATUS(tc_open(a, "o2", 1, &a2), ST(OK));
    TC_ASSERT_STATUS(tc_open(b, "o1", 1, &b1), ST(OK));
    TC_ASSERT_STATUS(tc_open(b, "o2", 1, &b2), ST(OK));
    id1 = tc_recv_start(a, a1, -1);
    id2 = tc_recv_start(a, a2, -1);
    tc_wait_stat(b, "o2", TC_RECEIVERS, 1);
    TC_ASSERT_STATUS(tc_send_str(b, b2, "second first"), ST(OK));
    ck_assert_msg(tc_read(a, TC_REPLY_MS, &r) == 1, "no reply to the second RECV");
    ck_assert_msg(r.f->id == id2, "reply for request %llu, want %llu", (unsigned long long)r.f->id,
                  (unsigned long long)id2);
    TC_ASSERT_STATUS(r.f->status, ST(OK));
    tc_reply_msg(&r, &m);
    tc_reply_free(&r);
    ASSERT_MSG(m, "second first");
    TC_ASSERT_STATUS(tc_ack(a, m.tag), ST(OK));
    tc_msg_free(&m);
    ck_assert_msg(tc_wait(a, id1, 50, &r) == 0, "first RECV answered with nothing sent");

    TC_ASSERT_STATUS(tc_send_str(b, b1, "first last"), ST(OK));
    TC_ASSERT_STATUS(tc_must_wait(a, id1, &r), ST(OK));
    tc_reply_msg(&r, &m);
    tc_reply_free(&r);
    ASSERT_MSG(m, "first last");
    TC_ASSERT_STATUS(tc_ack(a, m.tag), ST(OK));
    tc_msg_free(&m);

    tc_conn_free(a);
    tc_conn_free(b);
    tc_server_stop_ok(&srv);
}
END_TEST

START_TEST(test_select_nil_and_empty_cases_only_time_out)
{
    struct tc_server srv;
    struct tc_conn *a, *b;
    struct tc_reply r;
    uint64_t ch, bch, id, cid;
    int64_t t0, dt;

    tc_server_start(&srv, NULL);
    a = tc_connect_hello(srv.port);
    b = tc_connect_hello(srv.port);
    TC_ASSERT_STATUS(tc_open(a, "sn", 1, &ch), ST(OK));
    TC_ASSERT_STATUS(tc_open(b, "sn", 1, &bch), ST(OK));

    /* no cases: waits for its deadline */
    t0 = tc_now_ms();
    id = tc_select_start(a, NULL, NULL, 0, NULL, 0, 50);
    TC_ASSERT_STATUS(tc_must_wait(a, id, &r), ST(TIMEDOUT));
    tc_reply_free(&r);
    dt = tc_now_ms() - t0;
    ck_assert_msg(dt >= 50 && dt < 500, "empty SELECT timed out after %lld ms", (long long)dt);
    id = tc_select_start(a, NULL, NULL, 0, NULL, 0, 0);
    TC_ASSERT_STATUS(tc_must_wait(a, id, &r), ST(AGAIN));
    tc_reply_free(&r);

    /* a nil send case never proceeds, even with a message ready to go */
    uint64_t nil_send[2] = {0, ch};
    int kinds[2] = {1, 0};
    struct wire_payload pl = {.data = "nil", .len = 3};
    id = tc_select_start(a, nil_send, kinds, 2, &pl, 1, -1);
    tc_wait_stat(b, "sn", TC_RECEIVERS, 1);
    ck_assert_msg(tc_wait(a, id, 50, &r) == 0, "SELECT with a nil send case proceeded");
    cid = tc_cancel_start(a, id);
    TC_ASSERT_STATUS(tc_must_wait(a, id, &r), ST(CANCELED));
    tc_reply_free(&r);
    TC_ASSERT_STATUS(tc_must_wait(a, cid, &r), ST(OK));
    tc_reply_free(&r);
    tc_wait_stat(b, "sn", TC_RECEIVERS, 0);
    /* the cancelled select left nothing behind to swallow this */
    TC_ASSERT_STATUS(tc_send_str(b, bch, "kept"), ST(OK));
    recv_expect(b, bch, "kept", 1);

    tc_conn_free(a);
    tc_conn_free(b);
    tc_server_stop_ok(&srv);
}
END_TEST

START_TEST(test_a_frame_dribbled_byte_by_byte_is_understood)
{
    struct tc_server srv;
    struct tc_conn *a, *b;
    struct tc_reply r;
    uint64_t ch;
    Chanwire__ClientFrame f = CHANWIRE__CLIENT_FRAME__INIT;
    Chanwire__Send s = CHANWIRE__SEND__INIT;
    struct wire_payload pl = {.data = "dribble", .len = 7};
    struct evbuffer *out = evbuffer_new();

    tc_server_start(&srv, NULL);
    a = tc_connect_hello(srv.port);
    b = tc_connect_hello(srv.port);
    TC_ASSERT_STATUS(tc_open(a, "slow", 1, &ch), ST(OK));
    s.chan = ch;
    s.timeout_ms = -1;
    f.id = tc_next_id(a);
    f.body_case = CHANWIRE__CLIENT_FRAME__BODY_SEND;
    f.send = &s;
    ck_assert_ptr_nonnull(out);
    ck_assert_int_eq(wire_write(out, &f.base, &pl, 1), 0);
    size_t len = evbuffer_get_length(out);
    const uint8_t *p = evbuffer_pullup(out, -1);
    for (size_t i = 0; i < len; i++) {
        ck_assert_int_eq(tc_write_raw(a, p + i, 1), 0);
        /* the broker answers others while a's frame is incomplete */
        if (i % 4 == 0) {
            struct tc_stat st;
            TC_ASSERT_STATUS(tc_stat(b, "slow", &st), ST(OK));
        }
    }
    evbuffer_free(out);
    TC_ASSERT_STATUS(tc_must_wait(a, f.id, &r), ST(OK));
    tc_reply_free(&r);
    recv_expect(b, ch, "dribble", 1);

    tc_conn_free(a);
    tc_conn_free(b);
    tc_server_stop_ok(&srv);
}
END_TEST

START_TEST(test_blocked_sender_on_full_buffer_completes_on_ack)
{
    struct tc_server srv;
    struct tc_conn *a, *b;
    struct tc_reply r;
    struct tc_msg m;
    uint64_t ca, cb, id;

    tc_server_start(&srv, NULL);
    a = tc_connect_hello(srv.port);
    b = tc_connect_hello(srv.port);
    TC_ASSERT_STATUS(tc_open(a, "full", 1, &ca), ST(OK));
    TC_ASSERT_STATUS(tc_open(b, "full", 1, &cb), ST(OK));
    TC_ASSERT_STATUS(tc_send_str(a, ca, "a"), ST(OK));
    id = tc_send_start(b, cb, "b", 1, -1);
    tc_wait_stat(a, "full", TC_SENDERS, 1);

    TC_ASSERT_STATUS(tc_recv(a, ca, -1, &m), ST(OK));
    ASSERT_MSG(m, "a");
    /* the unacked "a" still holds the only slot */
    ck_assert_msg(tc_wait(b, id, 50, &r) == 0, "SEND into a full channel completed before the ack");
    TC_ASSERT_STATUS(tc_ack(a, m.tag), ST(OK));
    tc_msg_free(&m);
    TC_ASSERT_STATUS(tc_must_wait(b, id, &r), ST(OK));
    tc_reply_free(&r);
    recv_expect(a, ca, "b", 1);

    /* close fails a blocked sender, keeps what is buffered */
    TC_ASSERT_STATUS(tc_send_str(a, ca, "c"), ST(OK));
    id = tc_send_start(b, cb, "d", 1, -1);
    tc_wait_stat(a, "full", TC_SENDERS, 1);
    TC_ASSERT_STATUS(tc_close(a, ca), ST(OK));
    TC_ASSERT_STATUS(tc_must_wait(b, id, &r), ST(CLOSED));
    tc_reply_free(&r);
    recv_expect(a, ca, "c", 1);
    TC_ASSERT_STATUS(tc_recv(a, ca, -1, &m), ST(CLOSED));

    tc_conn_free(a);
    tc_conn_free(b);
    tc_server_stop_ok(&srv);
}
END_TEST

START_TEST(test_piggybacked_acks_apply_before_the_request)
{
    struct tc_server srv;
    struct tc_conn *a;
    struct tc_reply r;
    struct tc_msg m;
    uint64_t ch, id;
    Chanwire__ClientFrame f = CHANWIRE__CLIENT_FRAME__INIT;
    Chanwire__Send s = CHANWIRE__SEND__INIT;
    struct wire_payload pl = {.data = "next", .len = 4};

    tc_server_start(&srv, NULL);
    a = tc_connect_hello(srv.port);
    TC_ASSERT_STATUS(tc_open(a, "pig", 1, &ch), ST(OK));
    TC_ASSERT_STATUS(tc_send_str(a, ch, "held"), ST(OK));
    TC_ASSERT_STATUS(tc_recv(a, ch, -1, &m), ST(OK));
    TC_ASSERT_STATUS(tc_send(a, ch, "next", 4, 0), ST(AGAIN));

    /* the ack frees the slot this very SEND needs */
    s.chan = ch;
    s.timeout_ms = 0;
    f.n_acks = 1;
    f.acks = &m.tag;
    f.body_case = CHANWIRE__CLIENT_FRAME__BODY_SEND;
    f.send = &s;
    id = tc_request_start(a, &f, &pl, 1);
    TC_ASSERT_STATUS(tc_must_wait(a, id, &r), ST(OK));
    tc_reply_free(&r);
    tc_msg_free(&m);
    tc_wait_stat(a, "pig", TC_UNACKED, 0);
    recv_expect(a, ch, "next", 1);

    /* an id may be used again once its request is finished */
    TC_ASSERT_STATUS(tc_send_str(a, ch, "again"), ST(OK));
    Chanwire__Recv rv = CHANWIRE__RECV__INIT;
    rv.chan = ch;
    rv.timeout_ms = -1;
    f.n_acks = 0;
    f.acks = NULL;
    f.body_case = CHANWIRE__CLIENT_FRAME__BODY_RECV;
    f.recv = &rv;
    f.id = id;
    ck_assert_int_eq(tc_write_frame(a, &f, NULL, 0), 0);
    TC_ASSERT_STATUS(tc_must_wait(a, id, &r), ST(OK));
    tc_reply_msg(&r, &m);
    tc_reply_free(&r);
    ASSERT_MSG(m, "again");
    TC_ASSERT_STATUS(tc_ack(a, m.tag), ST(OK));
    tc_msg_free(&m);

    tc_conn_free(a);
    tc_server_stop_ok(&srv);
}
END_TEST

START_TEST(test_unacked_message_of_a_deleted_channel_stays_gone)
{
    struct tc_server srv;
    struct tc_conn *a, *b;
    struct tc_msg m;
    struct tc_stat st;
    uint64_t ca, cb, nb;

    tc_server_start(&srv, NULL);
    a = tc_connect_hello(srv.port);
    b = tc_connect_hello(srv.port);
    TC_ASSERT_STATUS(tc_open(a, "gone", 2, &ca), ST(OK));
    TC_ASSERT_STATUS(tc_open(b, "gone", 2, &cb), ST(OK));
    TC_ASSERT_STATUS(tc_send_str(a, ca, "one"), ST(OK));
    TC_ASSERT_STATUS(tc_send_str(a, ca, "two"), ST(OK));
    TC_ASSERT_STATUS(tc_recv(b, cb, -1, &m), ST(OK));
    tc_msg_free(&m);
    struct tc_msg m2;
    TC_ASSERT_STATUS(tc_recv(b, cb, -1, &m2), ST(OK));
    TC_ASSERT_STATUS(tc_delete(a, "gone"), ST(OK));
    /* settling a delivery of a deleted channel is harmless */
    tc_ack(b, m2.tag);
    tc_msg_free(&m2);
    TC_ASSERT_STATUS(tc_open(a, "gone", 2, &nb), ST(OK));
    tc_conn_free(b);

    /* b's unacked "one" belonged to the old channel, not to the new one */
    b = tc_connect_hello(srv.port);
    TC_ASSERT_STATUS(tc_stat(b, "gone", &st), ST(OK));
    ck_assert_uint_eq(st.len, 0);
    ck_assert_uint_eq(st.unacked, 0);
    TC_ASSERT_STATUS(tc_recv(a, nb, 0, &m), ST(AGAIN));

    tc_conn_free(a);
    tc_conn_free(b);
    tc_server_stop_ok(&srv);
}
END_TEST

/*
 * A SELECT reply waiting behind a backlog of output still carries its own
 * bytes after the message is acked (a pipelined ACK) and its memory reused
 * by another SEND: the reply must hold a copy, not a reference.
 */
START_TEST(test_select_reply_queued_behind_a_backlog_keeps_its_bytes)
{
    enum { NBIG = 12, BIG = 1 << 20 };
    struct tc_server srv;
    struct tc_conn *a, *b;
    struct tc_reply rep;
    uint64_t big, q, r, sel;
    char *blob = malloc(BIG);
    int is_send = 0;

    ck_assert_ptr_nonnull(blob);
    memset(blob, 'x', BIG);
    tc_server_start(&srv, NULL);
    a = tc_connect_hello(srv.port);
    b = tc_connect_hello(srv.port);
    TC_ASSERT_STATUS(tc_open(b, "big", NBIG, &big), ST(OK));
    TC_ASSERT_STATUS(tc_open(b, "q", 1, &q), ST(OK));
    TC_ASSERT_STATUS(tc_open(b, "r", 1, &r), ST(OK));
    TC_ASSERT_STATUS(tc_open(a, "big", NBIG, &big), ST(OK));
    TC_ASSERT_STATUS(tc_open(a, "q", 1, &q), ST(OK));
    for (int i = 0; i < NBIG; i++)
        TC_ASSERT_STATUS(tc_send(b, big, blob, BIG, -1), ST(OK));
    TC_ASSERT_STATUS(tc_send_str(b, q, "hello"), ST(OK));
    /* a reads nothing from here on: 12 MiB of replies back its output up */
    for (int i = 0; i < NBIG; i++)
        tc_recv_start(a, big, -1);
    sel = tc_select_start(a, &q, &is_send, 1, NULL, 0, -1);
    tc_wait_stat(b, "q", TC_UNACKED, 1);
    /* tags 1..12 went to the RECVs, 13 to the select */
    ck_assert_int_eq(tc_ack_only(a, NBIG + 1), 0);
    tc_wait_stat(b, "q", TC_UNACKED, 0);
    TC_ASSERT_STATUS(tc_send_str(b, r, "WORLD"), ST(OK));
    ck_assert_int_eq(tc_wait(a, sel, 10000, &rep), 1);
    ck_assert_uint_eq(rep.n, 1);
    ASSERT_MSG(rep.pl[0], "hello");
    tc_reply_free(&rep);
    tc_conn_free(a);
    tc_conn_free(b);
    tc_server_stop_ok(&srv);
    free(blob);
}
END_TEST

START_TEST(test_select_never_pairs_its_own_send_and_recv)
{
    struct tc_server srv;
    struct tc_conn *a;
    struct tc_reply r;
    uint64_t ch, cl, id;

    tc_server_start(&srv, NULL);
    a = tc_connect_hello(srv.port);
    TC_ASSERT_STATUS(tc_open(a, "self", 0, &ch), ST(OK));
    uint64_t both[2] = {ch, ch};
    int kinds[2] = {1, 0};
    struct wire_payload pl = {.data = "me", .len = 2};
    id = tc_select_start(a, both, kinds, 2, &pl, 1, 50);
    TC_ASSERT_STATUS(tc_must_wait(a, id, &r), ST(TIMEDOUT));
    tc_reply_free(&r);
    tc_wait_stat(a, "self", TC_SENDERS, 0);
    tc_wait_stat(a, "self", TC_RECEIVERS, 0);

    /* a send case on a closed channel fires with CLOSED as its own result */
    TC_ASSERT_STATUS(tc_open(a, "shut", 1, &cl), ST(OK));
    TC_ASSERT_STATUS(tc_close(a, cl), ST(OK));
    uint64_t one[1] = {cl};
    int send1[1] = {1};
    id = tc_select_start(a, one, send1, 1, &pl, 1, -1);
    TC_ASSERT_STATUS(tc_must_wait(a, id, &r), ST(OK));
    ck_assert_msg(r.f->body_case == CHANWIRE__SERVER_FRAME__BODY_SELECT, "SELECT reply without SelectReply");
    ck_assert_uint_eq(r.f->select->index, 0);
    TC_ASSERT_STATUS(r.f->select->result, ST(CLOSED));
    tc_reply_free(&r);
    /* and a recv case on it, closed and drained, too */
    int recv1[1] = {0};
    id = tc_select_start(a, one, recv1, 1, NULL, 0, -1);
    TC_ASSERT_STATUS(tc_must_wait(a, id, &r), ST(OK));
    TC_ASSERT_STATUS(r.f->select->result, ST(CLOSED));
    ck_assert_uint_eq(r.n, 0);
    tc_reply_free(&r);

    tc_conn_free(a);
    tc_server_stop_ok(&srv);
}
END_TEST

START_TEST(test_blocked_receivers_are_served_first_come_first_served)
{
    enum { N = 100 };
    struct tc_server srv;
    struct tc_conn *a, *b;
    struct tc_reply r;
    struct tc_msg m;
    uint64_t ca, cb, ids[N];
    char want[16];

    tc_server_start(&srv, NULL);
    a = tc_connect_hello(srv.port);
    b = tc_connect_hello(srv.port);
    TC_ASSERT_STATUS(tc_open(a, "fifo", 0, &ca), ST(OK));
    TC_ASSERT_STATUS(tc_open(b, "fifo", 0, &cb), ST(OK));
    for (int i = 0; i < N; i++)
        ids[i] = tc_recv_start(a, ca, -1);
    tc_wait_stat(b, "fifo", TC_RECEIVERS, N);
    for (int i = 0; i < N; i++) {
        int n = snprintf(want, sizeof want, "%d", i);
        uint64_t sid = tc_send_start(b, cb, want, (size_t)n, -1);
        TC_ASSERT_STATUS(tc_must_wait(a, ids[i], &r), ST(OK));
        tc_reply_msg(&r, &m);
        tc_reply_free(&r);
        ASSERT_MSG(m, want);
        ck_assert_int_eq(tc_ack_only(a, m.tag), 0);
        tc_msg_free(&m);
        TC_ASSERT_STATUS(tc_must_wait(b, sid, &r), ST(OK));
        tc_reply_free(&r);
    }
    /* every request got exactly one reply */
    ck_assert_msg(tc_read(a, 50, &r) == 0, "a reply too many, for request %llu", (unsigned long long)r.f->id);

    tc_conn_free(a);
    tc_conn_free(b);
    tc_server_stop_ok(&srv);
}
END_TEST

START_TEST(test_cancel_after_timeout_is_a_no_op)
{
    struct tc_server srv;
    struct tc_conn *a;
    struct tc_reply r;
    uint64_t ch, id, cid;

    tc_server_start(&srv, NULL);
    a = tc_connect_hello(srv.port);
    TC_ASSERT_STATUS(tc_open(a, "late", 0, &ch), ST(OK));
    id = tc_recv_start(a, ch, 20);
    TC_ASSERT_STATUS(tc_must_wait(a, id, &r), ST(TIMEDOUT));
    tc_reply_free(&r);
    cid = tc_cancel_start(a, id);
    TC_ASSERT_STATUS(tc_must_wait(a, cid, &r), ST(OK));
    tc_reply_free(&r);
    ck_assert_msg(tc_read(a, 50, &r) == 0, "a second reply, for request %llu", (unsigned long long)r.f->id);

    tc_conn_free(a);
    tc_server_stop_ok(&srv);
}
END_TEST

static const int stop_signals[] = {SIGTERM, SIGINT};

START_TEST(test_sigterm_answers_blocked_ops_and_exits_zero)
{
    int sig = stop_signals[_i];
    struct tc_server srv;
    struct tc_conn *a;
    struct tc_reply r;
    uint64_t ca, cs, id, sid;
    int64_t t0, dt;
    int st;

    tc_server_start(&srv, NULL);
    a = tc_connect_hello(srv.port);
    TC_ASSERT_STATUS(tc_open(a, "t", 0, &ca), ST(OK));
    TC_ASSERT_STATUS(tc_open(a, "ts", 0, &cs), ST(OK));
    id = tc_recv_start(a, ca, -1);
    sid = tc_send_start(a, cs, "stuck", 5, -1);
    tc_wait_stat(a, "t", TC_RECEIVERS, 1);
    tc_wait_stat(a, "ts", TC_SENDERS, 1);

    t0 = tc_now_ms();
    ck_assert_int_eq(kill(srv.pid, sig), 0);
    ck_assert_msg(tc_wait(a, id, 1000, &r) == 1, "no reply to the blocked RECV within 1 s of signal %d", sig);
    TC_ASSERT_STATUS(r.f->status, ST(SHUTDOWN));
    tc_reply_free(&r);
    ck_assert_msg(tc_wait(a, sid, 1000, &r) == 1, "no reply to the blocked SEND within 1 s of signal %d", sig);
    TC_ASSERT_STATUS(r.f->status, ST(SHUTDOWN));
    tc_reply_free(&r);
    /* chand's own part, answering and closing, has one second in every build */
    ck_assert_msg(tc_closed_within(a, 1000), "connection still open 1 s after signal %d", sig);
    st = tc_server_stop(&srv, 0, TC_EXIT_MS);
    dt = tc_now_ms() - t0;
    ck_assert_msg(st != -1, "chand still running %d ms after signal %d", TC_EXIT_MS, sig);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "chand ended with wait status 0x%x, want exit 0", st);
    ck_assert_msg(dt < TC_EXIT_MS, "chand took %lld ms to exit", (long long)dt);
    tc_conn_free(a);
}
END_TEST

START_TEST(test_repeated_stop_signals_still_exit_zero)
{
    struct tc_server srv;
    struct tc_conn *a;
    int64_t deadline;
    int st = -1, sent = 0;

    tc_server_start(&srv, NULL);
    a = tc_connect_hello(srv.port);
    /* supervisors signal the process and then its group: chand sees it twice or more */
    deadline = tc_now_ms() + 2 * TC_EXIT_MS;
    for (;;) {
        pid_t r = waitpid(srv.pid, &st, WNOHANG);
        if (r == srv.pid)
            break;
        ck_assert_msg(tc_now_ms() < deadline, "chand still running %d ms into repeated SIGTERMs",
                      2 * TC_EXIT_MS);
        kill(srv.pid, SIGTERM);
        sent++;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    srv.pid = 0;
    tc_server_stop(&srv, 0, 0);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                  "after %d SIGTERMs chand ended with %s %d, want exit 0", sent,
                  WIFEXITED(st) ? "exit status" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    tc_conn_free(a);
}
END_TEST

static Suite *broker_suite(void)
{
    Suite *s = suite_create("broker");
    TCase *tc;

    tc = tcase_create("channels");
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_send_recv_close_across_two_connections);
    tcase_add_test(tc, test_unbuffered_send_waits_for_a_receiver);
    tcase_add_test(tc, test_send_many_and_recv_many_keep_order);
    tcase_add_test(tc, test_ping_echoes_and_list_filters_by_prefix);
    tcase_add_test(tc, test_replies_come_in_completion_order);
    tcase_add_test(tc, test_a_frame_dribbled_byte_by_byte_is_understood);
    suite_add_tcase(s, tc);

    tc = tcase_create("delivery");
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_unacked_messages_of_a_dropped_receiver_go_to_the_next_in_order);
    tcase_add_test(tc, test_unbuffered_sender_waits_on_when_its_receiver_drops);
    tcase_add_test(tc, test_nack_puts_the_message_back_at_the_head);
    tcase_add_test(tc, test_disconnect_withdraws_blocked_requests);
    tcase_add_test(tc, test_blocked_sender_on_full_buffer_completes_on_ack);
    tcase_add_test(tc, test_piggybacked_acks_apply_before_the_request);
    tcase_add_test(tc, test_unacked_message_of_a_deleted_channel_stays_gone);
    suite_add_tcase(s, tc);

    tc = tcase_create("waiting");
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_deadlines_time_out_without_delivering);
    tcase_add_test(tc, test_select_takes_one_case_and_withdraws_the_others);
    tcase_add_test(tc, test_cancel_withdraws_a_blocked_recv_without_losing_messages);
    tcase_add_test(tc, test_delete_fails_blocked_ops_and_stales_handles);
    tcase_add_test(tc, test_select_nil_and_empty_cases_only_time_out);
    tcase_add_test(tc, test_select_never_pairs_its_own_send_and_recv);
    tcase_add_test(tc, test_select_reply_queued_behind_a_backlog_keeps_its_bytes);
    tcase_add_test(tc, test_blocked_receivers_are_served_first_come_first_served);
    tcase_add_test(tc, test_cancel_after_timeout_is_a_no_op);
    suite_add_tcase(s, tc);

    tc = tcase_create("shutdown");
    tcase_set_timeout(tc, 20);
    tcase_add_loop_test(tc, test_sigterm_answers_blocked_ops_and_exits_zero, 0,
                        (int)(sizeof stop_signals / sizeof stop_signals[0]));
    tcase_add_test(tc, test_repeated_stop_signals_still_exit_zero);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(broker_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
