/*
 * broker_conns_test.c: chand serving a thousand connections at once. Half
 * send on one unbuffered channel, half receive; every request is written
 * before any reply is read, so all of them are parked in the broker
 * together, and one poll loop collects the answers.
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "testclient.h"

#define NCONN 1000
#define NSEND (NCONN / 2)
/* Time for all of them to finish, ms (sanitizer builds are slower). */
#define ALL_DONE_MS 30000

START_TEST(test_thousand_connections_all_complete)
{
    static struct tc_conn *conn[NCONN];
    static uint64_t req[NCONN];
    static struct pollfd pfd[NCONN];
    static int done[NCONN], seen[NSEND];
    struct tc_server srv;
    struct tc_conn *ctl;
    struct tc_reply r;
    struct tc_stat st;
    char text[32];
    int ndone = 0;
    int64_t t0, deadline;

    /* the test holds NCONN sockets and chand inherits the limit for its end */
    ck_assert_msg(tc_raise_nofile(2 * NCONN + 200) >= 2 * NCONN + 200, "cannot raise RLIMIT_NOFILE");
    tc_server_start(&srv, "--max-conns", "1100", NULL);
    t0 = tc_now_ms();

    for (int i = 0; i < NCONN; i++)
        conn[i] = tc_connect(srv.port);
    for (int i = 0; i < NCONN; i++)
        req[i] = tc_hello_start(conn[i]);
    for (int i = 0; i < NCONN; i++) {
        TC_ASSERT_STATUS(tc_must_wait(conn[i], req[i], &r), ST(OK));
        tc_reply_free(&r);
    }
    for (int i = 0; i < NCONN; i++) {
        uint64_t ch;
        TC_ASSERT_STATUS(tc_open(conn[i], "fan", 0, &ch), ST(OK));
        if (i < NSEND) {
            int n = snprintf(text, sizeof text, "%d", i);
            req[i] = tc_send_start(conn[i], ch, text, (size_t)n, ALL_DONE_MS);
        } else {
            req[i] = tc_recv_start(conn[i], ch, ALL_DONE_MS);
        }
        pfd[i].fd = tc_conn_fd(conn[i]);
        pfd[i].events = POLLIN;
    }

    deadline = tc_now_ms() + ALL_DONE_MS;
    while (ndone < NCONN) {
        ck_assert_msg(tc_now_ms() < deadline, "only %d of %d connections finished", ndone, NCONN);
        int n = poll(pfd, NCONN, 100);
        ck_assert_msg(n >= 0, "poll failed");
        for (int i = 0; i < NCONN && n > 0; i++) {
            if (pfd[i].revents == 0)
                continue;
            n--;
            ck_assert_msg(tc_fill(conn[i]) > 0, "connection %d ended before its reply", i);
            while (tc_take(conn[i], &r) == 1) {
                ck_assert_msg(r.f->id == req[i] && !done[i], "connection %d: unexpected frame id %llu", i,
                              (unsigned long long)r.f->id);
                ck_assert_msg(r.f->status == ST(OK), "connection %d (%s): status %s", i,
                              i < NSEND ? "send" : "recv", tc_status_name(r.f->status));
                if (i >= NSEND) {
                    struct tc_msg m;
                    tc_reply_msg(&r, &m);
                    ck_assert_msg(m.len > 0 && m.len < sizeof text, "message of %zu bytes", m.len);
                    memcpy(text, m.data, m.len);
                    text[m.len] = '\0';
                    int k = atoi(text);
                    ck_assert_msg(k >= 0 && k < NSEND && !seen[k], "message %s delivered twice or unknown", text);
                    seen[k] = 1;
                    /* the sender's SEND completes on this ack */
                    ck_assert_int_eq(tc_ack_only(conn[i], m.tag), 0);
                    tc_msg_free(&m);
                }
                tc_reply_free(&r);
                done[i] = 1;
                pfd[i].fd = -1;
                ndone++;
            }
        }
    }
    for (int k = 0; k < NSEND; k++)
        ck_assert_msg(seen[k], "message %d never arrived", k);
    fprintf(stderr, "%d connections: HELLO, OPEN and a send or recv each, in %lld ms\n", NCONN,
            (long long)(tc_now_ms() - t0));

    for (int i = 0; i < NCONN; i++)
        tc_conn_free(conn[i]);
    ctl = tc_connect_hello(srv.port);
    TC_ASSERT_STATUS(tc_stat(ctl, "fan", &st), ST(OK));
    ck_assert_uint_eq(st.senders, 0);
    ck_assert_uint_eq(st.receivers, 0);
    ck_assert_uint_eq(st.len, 0);
    tc_wait_stat(ctl, "fan", TC_UNACKED, 0);
    tc_conn_free(ctl);
    tc_server_stop_ok(&srv);
}
END_TEST

START_TEST(test_connections_over_max_conns_are_refused_busy)
{
    struct tc_server srv;
    struct tc_conn *a, *b, *c = NULL;
    struct tc_reply r;
    int64_t deadline;
    int rc;

    tc_server_start(&srv, "--max-conns", "2", NULL);
    a = tc_connect_hello(srv.port);
    b = tc_connect_hello(srv.port);
    c = tc_connect(srv.port);
    rc = tc_read(c, TC_REPLY_MS, &r);
    ck_assert_msg(rc == 1, "third connection got %s instead of a BUSY frame", rc == 0 ? "silence" : "a close");
    TC_ASSERT_STATUS(r.f->status, ST(BUSY));
    tc_reply_free(&r);
    ck_assert_msg(tc_closed_within(c, TC_REPLY_MS), "refused connection was not closed");
    tc_conn_free(c);
    /* the two admitted ones are untouched */
    TC_ASSERT_STATUS(tc_open(b, "still", 0, NULL), ST(OK));

    /* once one leaves, a newcomer gets in (the broker notices the close soon) */
    tc_conn_free(a);
    deadline = tc_now_ms() + TC_REPLY_MS;
    for (;;) {
        c = tc_connect(srv.port);
        uint64_t id = tc_hello_start(c);
        rc = tc_wait(c, id, TC_REPLY_MS, &r);
        ck_assert_msg(rc == 1, "no answer to HELLO");
        int st = r.f->status;
        tc_reply_free(&r);
        if (st == ST(OK))
            break;
        TC_ASSERT_STATUS(st, ST(BUSY));
        tc_conn_free(c);
        ck_assert_msg(tc_now_ms() < deadline, "still BUSY %d ms after a connection closed", TC_REPLY_MS);
        struct pollfd none;
        poll(&none, 0, 5);
    }
    TC_ASSERT_STATUS(tc_open(c, "still", 0, NULL), ST(OK));
    tc_conn_free(b);
    tc_conn_free(c);
    tc_server_stop_ok(&srv);
}
END_TEST

static Suite *conns_suite(void)
{
    Suite *s = suite_create("broker_conns");
    TCase *tc = tcase_create("many");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_thousand_connections_all_complete);
    suite_add_tcase(s, tc);

    tc = tcase_create("limit");
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_connections_over_max_conns_are_refused_busy);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(conns_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
