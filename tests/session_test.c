/*
 * session_test.c: what a remote client does when its connection breaks
 * with requests in flight, and the auth token. The client talks to a real
 * chand through a relay process of this test, which can swallow the
 * broker's replies and then die, cutting the connection after a request
 * reached the broker but before its reply reached the client; a relay
 * started again on the same port lets the client reconnect. A second
 * client, connected to chand directly, watches the channels.
 */
#include <check.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "chan.h"
#include "testclient.h"

/* Bound for anything that should happen at once, ms. */
#define SOON 5000

/* Connections a relay carries at once (the client reconnects through it). */
#define RELAY_PAIRS 8

/* ---- the relay ------------------------------------------------------------ */

struct relay {
    pid_t pid;        /* the relay process, 0 when none */
    int port;         /* where it listens (127.0.0.1), kept across restarts */
    int ctl;          /* our end of its control socket */
};

static struct tc_server srv;
static struct relay rl;
static chan_client_t *pcl;  /* through the relay */
static chan_client_t *dcl;  /* direct to chand, the observer */

/* Copy what fd has to to, unless blackholed; 0, or -1 once either side is gone. */
static int relay_pump(int from, int to, int swallow)
{
    char buf[65536];
    ssize_t n = read(from, buf, sizeof buf);

    if (n <= 0)
        return -1;
    if (swallow)
        return 0;
    for (ssize_t off = 0; off < n;) {
        ssize_t w = write(to, buf + off, (size_t)(n - off));
        if (w <= 0)
            return -1;
        off += w;
    }
    return 0;
}

/*
 * The relay process: accept clients on lfd, connect each to chand, copy
 * bytes both ways. A 'B' on the control socket makes it swallow from then
 * on everything chand sends (answered with 'b' once in force).
 */
static void relay_main(int lfd, int ctl, int broker_port)
{
    int cfd[RELAY_PAIRS], sfd[RELAY_PAIRS], npairs = 0, swallow = 0;

    for (;;) {
        struct pollfd p[2 + 2 * RELAY_PAIRS];
        int np = 0;

        p[np++] = (struct pollfd){.fd = lfd, .events = POLLIN};
        p[np++] = (struct pollfd){.fd = ctl, .events = POLLIN};
        for (int i = 0; i < npairs; i++) {
            p[np++] = (struct pollfd){.fd = cfd[i], .events = POLLIN};
            p[np++] = (struct pollfd){.fd = sfd[i], .events = POLLIN};
        }
        if (poll(p, (nfds_t)np, -1) < 0)
            continue;
        if (p[1].revents) {
            char c;
            if (read(ctl, &c, 1) != 1)
                _exit(0);
            swallow = 1;
            if (write(ctl, "b", 1) != 1)
                _exit(1);
        }
        for (int i = npairs - 1; i >= 0; i--) {
            int dead = 0;
            if (p[2 + 2 * i].revents)
                dead |= relay_pump(cfd[i], sfd[i], 0) < 0;
            if (p[3 + 2 * i].revents)
                dead |= relay_pump(sfd[i], cfd[i], swallow) < 0;
            if (dead) {
                close(cfd[i]);
                close(sfd[i]);
                cfd[i] = cfd[--npairs];
                sfd[i] = sfd[npairs];
            }
        }
        if (p[0].revents && npairs < RELAY_PAIRS) {
            struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)broker_port)};
            int c = accept(lfd, NULL, NULL), s;
            if (c < 0)
                continue;
            a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            s = socket(AF_INET, SOCK_STREAM, 0);
            if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) < 0) {
                close(c);
                if (s >= 0)
                    close(s);
                continue;
            }
            cfd[npairs] = c;
            sfd[npairs++] = s;
        }
    }
}

/* Start a relay to chand on rl.port (0: a free one, remembered). */
static void relay_start(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)rl.port)};
    socklen_t alen = sizeof a;
    int one = 1, sv[2], lfd;
    pid_t parent = getpid();

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    lfd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(lfd, 0);
    ck_assert_int_eq(setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one), 0);
    ck_assert_msg(bind(lfd, (struct sockaddr *)&a, sizeof a) == 0, "bind: %s", strerror(errno));
    ck_assert_int_eq(listen(lfd, 16), 0);
    ck_assert_int_eq(getsockname(lfd, (struct sockaddr *)&a, &alen), 0);
    rl.port = ntohs(a.sin_port);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    rl.pid = fork();
    ck_assert_int_ge(rl.pid, 0);
    if (rl.pid == 0) {
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
            _exit(127);
        close(sv[0]);
        relay_main(lfd, sv[1], srv.port);
        _exit(0);
    }
    close(sv[1]);
    close(lfd);
    rl.ctl = sv[0];
}

/* Kill the relay: every connection through it breaks at once. */
static void relay_kill(void)
{
    if (rl.pid <= 0)
        return;
    kill(rl.pid, SIGKILL);
    waitpid(rl.pid, NULL, 0);
    close(rl.ctl);
    rl.pid = 0;
}

/* From now on, nothing chand sends reaches the client. */
static void relay_swallow(void)
{
    struct pollfd p = {.fd = rl.ctl, .events = POLLIN};
    char c;

    ck_assert_int_eq(write(rl.ctl, "B", 1), 1);
    ck_assert_int_eq(poll(&p, 1, SOON), 1);
    ck_assert_int_eq(read(rl.ctl, &c, 1), 1);
}

/* ---- fixtures ------------------------------------------------------------- */

static chan_client_t *connect_ok(int port, int64_t retry_ms)
{
    char addr[64];
    struct chan_opts o = {.client_name = "session_test", .retry_ms = retry_ms};
    chan_client_t *c;

    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    c = chan_connect(addr, &o);
    ck_assert_msg(c != NULL, "chan_connect %s: %s", addr, strerror(errno));
    return c;
}

static void setup(void)
{
    tc_server_start(&srv, NULL);
    rl.port = 0;
    relay_start();
    pcl = connect_ok(rl.port, 5000);
    dcl = connect_ok(srv.port, 5000);
}

static void teardown(void)
{
    chan_disconnect(pcl);
    chan_disconnect(dcl);
    relay_kill();
    if (srv.pid > 0)
        tc_server_stop(&srv, SIGTERM, 2000);
}

static chan_t *open_ok(chan_client_t *c, const char *name, long cap)
{
    chan_t *ch = chan_open(c, name, cap);
    ck_assert_msg(ch != NULL, "chan_open %s: %s", name, strerror(errno));
    return ch;
}

/* Wait (bounded) until the observer sees name with len buffered (closed if closed >= 0). */
static void wait_chan(const char *name, long len, int closed)
{
    int64_t until = chan_now() + SOON;
    struct chan_info info;

    for (;;) {
        ck_assert_int_eq(chan_stat(dcl, name, &info), 0);
        if (info.len == len && (closed < 0 || info.closed == closed))
            return;
        ck_assert_msg(chan_now() < until, "%s: len %ld closed %d; want len %ld", name, info.len,
                      info.closed, len);
        chan_sleep(chan_now() + 2);
    }
}

static void wait_gone(const char *name)
{
    int64_t until = chan_now() + SOON;
    struct chan_info info;

    while (chan_stat(dcl, name, &info) == 0) {
        ck_assert_msg(chan_now() < until, "%s still exists", name);
        chan_sleep(chan_now() + 2);
    }
    ck_assert_int_eq(errno, ENOENT);
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

/* One call in a coroutine of its own. */
enum call { CALL_SEND, CALL_SEND_MANY, CALL_CLOSE, CALL_DELETE };

struct op {
    enum call call;
    chan_t *ch;
    const char *name;
    int64_t deadline;
    int rc;
    int err;
    int ended;
};

static void op_run(void *arg)
{
    struct op *o = arg;
    struct iovec iov[3] = {{"m1", 2}, {"m2", 2}, {"m3", 2}};

    switch (o->call) {
    case CALL_SEND:
        o->rc = chan_send(o->ch, "once", 4, o->deadline);
        break;
    case CALL_SEND_MANY:
        o->rc = chan_send_many(o->ch, iov, 3, o->deadline);
        break;
    case CALL_CLOSE:
        o->rc = chan_close(o->ch);
        break;
    case CALL_DELETE:
        o->rc = chan_delete(pcl, o->name);
        break;
    }
    o->err = errno;
    o->ended = 1;
}

/* ---- the tests ------------------------------------------------------------ */

/*
 * The SEND reaches chand and is done, its reply is lost with the
 * connection: after the reconnect the client sends it again under the same
 * seq, chand drops the repeat, and the caller hears 0: delivered once,
 * reported once.
 */
START_TEST(test_send_whose_reply_was_lost_is_delivered_once)
{
    chan_t *ch = open_ok(pcl, "once", 10);
    chan_t *watch = open_ok(dcl, "once", -1);
    struct op o = {.call = CALL_SEND, .ch = ch, .deadline = chan_now() + 3 * SOON};
    int cr;

    relay_swallow();
    cr = chan_go(op_run, &o);
    wait_chan("once", 1, -1);
    relay_kill();
    relay_start();
    ck_assert_int_eq(chan_join(cr, chan_now() + 2 * SOON), 0);
    ck_assert_msg(o.rc == 0, "send: %d, %s", o.rc, strerror(o.err));
    recv_str(watch, "once", 1);
    expect_empty(watch);
    /* the handle still works on the same broker */
    ck_assert_int_eq(chan_send(ch, "after", 5, chan_now() + SOON), 0);
    recv_str(watch, "after", 1);
    chan_free(watch);
    chan_free(ch);
}
END_TEST

START_TEST(test_send_many_whose_reply_was_lost_is_delivered_once)
{
    chan_t *ch = open_ok(pcl, "batch", 10);
    chan_t *watch = open_ok(dcl, "batch", -1);
    struct op o = {.call = CALL_SEND_MANY, .ch = ch, .deadline = chan_now() + 3 * SOON};
    int cr;

    relay_swallow();
    cr = chan_go(op_run, &o);
    wait_chan("batch", 3, -1);
    relay_kill();
    relay_start();
    ck_assert_int_eq(chan_join(cr, chan_now() + 2 * SOON), 0);
    ck_assert_msg(o.rc == 3, "send_many: %d, %s", o.rc, strerror(o.err));
    recv_str(watch, "m1", 1);
    recv_str(watch, "m2", 1);
    recv_str(watch, "m3", 1);
    expect_empty(watch);
    chan_free(watch);
    chan_free(ch);
}
END_TEST

/*
 * Unbuffered: a leased receiver holds the message when the sender's
 * connection breaks, then acks it. The message was delivered, so the
 * sender's repeat must be recognised as done: 0, and no second copy.
 */
START_TEST(test_unbuffered_send_acked_while_its_sender_was_away_is_done)
{
    chan_t *ch = open_ok(pcl, "rdv", 0);
    chan_t *watch = open_ok(dcl, "rdv", -1);
    struct op o = {.call = CALL_SEND, .ch = ch, .deadline = chan_now() + 3 * SOON};
    chan_msg_t m;
    int cr;

    cr = chan_go(op_run, &o);
    ck_assert_int_eq(chan_recv_lease(watch, &m, 60000, chan_now() + SOON), 1);
    ck_assert_str_eq(m.data, "once");
    relay_kill();
    ck_assert_int_eq(chan_ack(&m), 0);
    chan_msg_free(&m);
    relay_start();
    ck_assert_int_eq(chan_join(cr, chan_now() + 2 * SOON), 0);
    ck_assert_msg(o.rc == 0, "send: %d, %s", o.rc, strerror(o.err));
    ck_assert_int_eq(chan_recv(watch, &m, chan_now() + 300), -1);
    ck_assert_int_eq(errno, ETIMEDOUT);
    chan_free(watch);
    chan_free(ch);
}
END_TEST

/* A send still waiting when the connection broke was withdrawn: it goes again, once. */
START_TEST(test_blocked_send_goes_again_after_the_reconnect)
{
    chan_t *ch = open_ok(pcl, "full", 1);
    chan_t *watch = open_ok(dcl, "full", -1);
    struct op o = {.call = CALL_SEND, .ch = ch, .deadline = chan_now() + 3 * SOON};
    struct chan_info info;
    int64_t until = chan_now() + SOON;
    int cr;

    ck_assert_int_eq(chan_send(ch, "first", 5, 0), 0);
    cr = chan_go(op_run, &o);
    do {
        ck_assert_int_lt(chan_now(), until);
        chan_sleep(chan_now() + 2);
        ck_assert_int_eq(chan_stat(dcl, "full", &info), 0);
    } while (info.senders != 1);
    relay_kill();
    relay_start();
    recv_str(watch, "first", 1);
    ck_assert_int_eq(chan_join(cr, chan_now() + 2 * SOON), 0);
    ck_assert_msg(o.rc == 0, "send: %d, %s", o.rc, strerror(o.err));
    recv_str(watch, "once", 1);
    expect_empty(watch);
    chan_free(watch);
    chan_free(ch);
}
END_TEST

/*
 * Across a broker restart the broker forgot what it had done: a send in
 * flight may or may not have been delivered, and the caller hears
 * ECONNRESET. The handle then opens the channel again by itself.
 */
START_TEST(test_send_in_flight_across_a_broker_restart_is_econnreset)
{
    chan_t *ch = open_ok(pcl, "phoenix", 10);
    struct op o = {.call = CALL_SEND, .ch = ch, .deadline = chan_now() + 3 * SOON};
    char port[16];
    int cr;

    relay_swallow();
    cr = chan_go(op_run, &o);
    wait_chan("phoenix", 1, -1);
    snprintf(port, sizeof port, "%d", srv.port);
    relay_kill();
    tc_server_stop(&srv, SIGKILL, 2000);
    tc_server_start(&srv, "--port", port, NULL);
    relay_start();
    ck_assert_int_eq(chan_join(cr, chan_now() + 2 * SOON), 0);
    ck_assert_int_eq(o.rc, -1);
    ck_assert_int_eq(o.err, ECONNRESET);
    /* the old handle re-opens "phoenix" (gone with the old broker) */
    ck_assert_int_eq(chan_send(ch, "reborn", 6, chan_now() + SOON), 0);
    wait_chan("phoenix", 1, -1);
    chan_free(ch);
}
END_TEST

/*
 * Handles outlive a reconnect to the same broker: if the channel was
 * deleted and created again meanwhile, the old handle names the deleted
 * one (ESTALE), not the newcomer of the same name.
 */
START_TEST(test_handle_kept_across_a_reconnect_sees_a_recreated_channel_as_stale)
{
    chan_t *ch = open_ok(pcl, "swap", 4);
    chan_t *nw;

    relay_kill();
    ck_assert_int_eq(chan_delete(dcl, "swap"), 0);
    nw = open_ok(dcl, "swap", 4);
    relay_start();
    ck_assert_int_eq(chan_send(ch, "x", 1, chan_now() + SOON), -1);
    ck_assert_int_eq(errno, ESTALE);
    wait_chan("swap", 0, -1);
    chan_free(nw);
    chan_free(ch);
}
END_TEST

/* A CLOSE done by chand whose reply was lost: the repeat finds it closed and reports 0. */
START_TEST(test_close_whose_reply_was_lost_reports_success)
{
    chan_t *ch = open_ok(pcl, "shut", 4);
    struct op o = {.call = CALL_CLOSE, .ch = ch};
    int cr;

    relay_swallow();
    cr = chan_go(op_run, &o);
    wait_chan("shut", 0, 1);
    relay_kill();
    relay_start();
    ck_assert_int_eq(chan_join(cr, chan_now() + 2 * SOON), 0);
    ck_assert_msg(o.rc == 0, "close: %d, %s", o.rc, strerror(o.err));
    /* a second close is a real one, and fails */
    ck_assert_int_eq(chan_close(ch), -1);
    ck_assert_int_eq(errno, EPIPE);
    chan_free(ch);
}
END_TEST

START_TEST(test_delete_whose_reply_was_lost_reports_success)
{
    chan_t *ch = open_ok(pcl, "gone", 4);
    struct op o = {.call = CALL_DELETE, .name = "gone"};
    int cr;

    relay_swallow();
    cr = chan_go(op_run, &o);
    wait_gone("gone");
    relay_kill();
    relay_start();
    ck_assert_int_eq(chan_join(cr, chan_now() + 2 * SOON), 0);
    ck_assert_msg(o.rc == 0, "delete: %d, %s", o.rc, strerror(o.err));
    ck_assert_int_eq(chan_delete(pcl, "gone"), -1);
    ck_assert_int_eq(errno, ENOENT);
    chan_free(ch);
}
END_TEST

/* A lease dies with its connection: the message is redelivered, and a late ack says so. */
START_TEST(test_ack_after_the_connection_dropped_is_econnreset)
{
    chan_t *ch = open_ok(pcl, "jobs", 4);
    chan_t *watch = open_ok(dcl, "jobs", -1);
    chan_msg_t m;

    ck_assert_int_eq(chan_send(watch, "job", 3, 0), 0);
    ck_assert_int_eq(chan_recv_lease(ch, &m, 60000, chan_now() + SOON), 1);
    relay_kill();
    wait_chan("jobs", 1, -1); /* chand took it back */
    relay_start();
    ck_assert_int_eq(chan_ack(&m), -1);
    ck_assert_int_eq(errno, ECONNRESET);
    ck_assert_int_eq(chan_ack(&m), -1);
    ck_assert_int_eq(errno, EINVAL);
    chan_msg_free(&m);
    recv_str(ch, "job", 2);
    chan_free(watch);
    chan_free(ch);
}
END_TEST

/* With a broker that never comes back, a send in flight ends with the retry budget. */
START_TEST(test_send_in_flight_ends_with_the_retry_budget)
{
    chan_client_t *c = connect_ok(rl.port, 500);
    chan_t *ch = open_ok(c, "lost", 4);
    struct op o = {.call = CALL_SEND, .ch = ch, .deadline = chan_now() + 100};
    int64_t t0;
    int cr;

    relay_swallow();
    cr = chan_go(op_run, &o);
    wait_chan("lost", 1, -1);
    t0 = chan_now();
    relay_kill();
    ck_assert_int_eq(chan_join(cr, chan_now() + SOON), 0);
    ck_assert_int_eq(o.rc, -1);
    ck_assert_int_eq(o.err, ECONNRESET);
    ck_assert_int_ge(chan_now() - t0, 450);
    ck_assert_int_lt(chan_now() - t0, 500 + 1000);
    chan_free(ch);
    chan_disconnect(c);
}
END_TEST

/* ---- auth ----------------------------------------------------------------- */

static char tokdir[64];
static char tokfile[96];

static void setup_auth(void)
{
    FILE *f;

    snprintf(tokdir, sizeof tokdir, "/tmp/session-test.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tokdir));
    snprintf(tokfile, sizeof tokfile, "%s/token", tokdir);
    f = fopen(tokfile, "w");
    ck_assert_ptr_nonnull(f);
    fputs("s3cret-token\n", f);
    fclose(f);
    tc_server_start(&srv, "--auth-token-file", tokfile, NULL);
}

static void teardown_auth(void)
{
    unlink(tokfile);
    rmdir(tokdir);
    if (srv.pid > 0)
        tc_server_stop(&srv, SIGTERM, 2000);
}

START_TEST(test_token_is_required_and_checked)
{
    char addr[64];
    struct chan_opts o = {.retry_ms = 3000};
    chan_client_t *c;
    chan_t *ch;
    int64_t t0;

    snprintf(addr, sizeof addr, "127.0.0.1:%d", srv.port);
    /* refused at once, not after the retry budget: retrying cannot help */
    t0 = chan_now();
    ck_assert_ptr_null(chan_connect(addr, &o));
    ck_assert_int_eq(errno, EACCES);
    ck_assert_int_lt(chan_now() - t0, 1500);
    o.token = "wrong";
    ck_assert_ptr_null(chan_connect(addr, &o));
    ck_assert_int_eq(errno, EACCES);
    o.token = "s3cret-token";
    c = chan_connect(addr, &o);
    ck_assert_msg(c != NULL, "chan_connect with the token: %s", strerror(errno));
    ch = open_ok(c, "private", 1);
    ck_assert_int_eq(chan_send(ch, "ok", 2, 0), 0);
    chan_free(ch);
    chan_disconnect(c);
}
END_TEST

static Suite *session_suite(void)
{
    Suite *s = suite_create("session");
    TCase *tc;

    tc = tcase_create("reconnect");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_send_whose_reply_was_lost_is_delivered_once);
    tcase_add_test(tc, test_send_many_whose_reply_was_lost_is_delivered_once);
    tcase_add_test(tc, test_blocked_send_goes_again_after_the_reconnect);
    tcase_add_test(tc, test_unbuffered_send_acked_while_its_sender_was_away_is_done);
    tcase_add_test(tc, test_send_in_flight_across_a_broker_restart_is_econnreset);
    tcase_add_test(tc, test_handle_kept_across_a_reconnect_sees_a_recreated_channel_as_stale);
    tcase_add_test(tc, test_close_whose_reply_was_lost_reports_success);
    tcase_add_test(tc, test_delete_whose_reply_was_lost_reports_success);
    tcase_add_test(tc, test_ack_after_the_connection_dropped_is_econnreset);
    tcase_add_test(tc, test_send_in_flight_ends_with_the_retry_budget);
    suite_add_tcase(s, tc);

    tc = tcase_create("auth");
    tcase_add_checked_fixture(tc, setup_auth, teardown_auth);
    tcase_set_timeout(tc, 10);
    tcase_add_test(tc, test_token_is_required_and_checked);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(session_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
