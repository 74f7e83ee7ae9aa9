/*
 * remote_test.c: remote channels of libchanclient against a real chand
 * ($CHAND on 127.0.0.1, --port 0): two processes on one channel, many
 * coroutines multiplexed on one connection, select, deadlines, cancel
 * without loss, a broker that dies or restarts, and the round-trip time.
 */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "chan.h"
#include "testclient.h"

/* Bound for anything the broker should answer at once, ms. */
#define SOON 5000

static struct tc_server srv;
static char addr[64];

static void setup(void)
{
    tc_server_start(&srv, NULL);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", srv.port);
}

static void teardown(void)
{
    if (srv.pid > 0)
        tc_server_stop(&srv, SIGTERM, 2000);
}

static chan_client_t *connect_ok(int64_t retry_ms)
{
    struct chan_opts o = {.client_name = "remote_test", .retry_ms = retry_ms};
    chan_client_t *cl = chan_connect(addr, &o);
    ck_assert_msg(cl != NULL, "chan_connect %s: %s", addr, strerror(errno));
    return cl;
}

static chan_t *open_ok(chan_client_t *cl, const char *name, long cap)
{
    chan_t *ch = chan_open(cl, name, cap);
    ck_assert_msg(ch != NULL, "chan_open %s: %s", name, strerror(errno));
    return ch;
}

/* Wait (bounded) until the broker shows receivers and senders blocked on name. */
static void wait_blocked(chan_client_t *cl, const char *name, long receivers, long senders)
{
    int64_t until = chan_now() + SOON;
    struct chan_info info;

    for (;;) {
        ck_assert_int_eq(chan_stat(cl, name, &info), 0);
        if (info.receivers == receivers && info.senders == senders)
            return;
        ck_assert_msg(chan_now() < until, "%s: %ld receivers, %ld senders blocked; want %ld, %ld",
                      name, info.receivers, info.senders, receivers, senders);
        chan_sleep(chan_now() + 2);
    }
}

static void recv_str(chan_t *ch, const char *want)
{
    chan_msg_t m;
    ck_assert_int_eq(chan_recv(ch, &m, chan_now() + SOON), 1);
    ck_assert_uint_eq(m.len, strlen(want));
    ck_assert_str_eq(m.data, want);
    chan_msg_free(&m);
}

/* ---- connect and open ------------------------------------------------- */

START_TEST(test_connect_rejects_bad_addresses)
{
    ck_assert_ptr_null(chan_connect("127.0.0.1", NULL));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_ptr_null(chan_connect("127.0.0.1:0", NULL));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_ptr_null(chan_connect("127.0.0.1:65536", NULL));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_ptr_null(chan_connect(":80", NULL));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_ptr_null(chan_connect("::1:80", NULL));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_ptr_null(chan_connect("127.0.0.1:1,127.0.0.1:2", NULL));
    ck_assert_int_eq(errno, ENOTSUP);
}
END_TEST

START_TEST(test_connect_to_nothing_fails_after_retry_budget)
{
    struct chan_opts o = {.retry_ms = 200};
    char dead[64];
    int64_t t0;

    /* a port that just had a broker on it and now has none */
    snprintf(dead, sizeof dead, "%s", addr);
    tc_server_stop(&srv, SIGKILL, 2000);
    t0 = chan_now();
    ck_assert_ptr_null(chan_connect(dead, &o));
    ck_assert_int_eq(errno, ECONNREFUSED);
    ck_assert_int_ge(chan_now() - t0, 200);
    ck_assert_int_lt(chan_now() - t0, 1500);
}
END_TEST

START_TEST(test_open_rejects_bad_names_before_sending)
{
    chan_client_t *cl = connect_ok(0);
    char big[300];

    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    ck_assert_ptr_null(chan_open(cl, "", 1));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_ptr_null(chan_open(cl, "has space", 1));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_ptr_null(chan_open(cl, "tab\there", 1));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_ptr_null(chan_open(cl, big, 1));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_ptr_null(chan_open(cl, "ok", -2));
    ck_assert_int_eq(errno, EINVAL);
    /* the connection survived: the broker never saw those */
    chan_t *ch = open_ok(cl, "ok", 1);
    ck_assert_int_eq(chan_cap(ch), 1);
    chan_free(ch);
    chan_disconnect(cl);
}
END_TEST

START_TEST(test_open_attach_and_capacity_errors)
{
    chan_client_t *cl = connect_ok(0);

    ck_assert_ptr_null(chan_open(cl, "missing", -1));
    ck_assert_int_eq(errno, ENOENT);
    chan_t *a = open_ok(cl, "capped", 3);
    ck_assert_ptr_null(chan_open(cl, "capped", 4));
    ck_assert_int_eq(errno, EEXIST);
    chan_t *b = open_ok(cl, "capped", -1);
    ck_assert_int_eq(chan_cap(b), 3);
    chan_free(a);
    chan_free(b);
    chan_disconnect(cl);
}
END_TEST

START_TEST(test_stat_list_len_and_delete)
{
    chan_client_t *cl = connect_ok(0);
    chan_t *ch = open_ok(cl, "stat.one", 3);
    chan_t *other = open_ok(cl, "other", 0);
    struct chan_info info, *all = NULL;
    int n;

    ck_assert_int_eq(chan_send(ch, "a", 1, 0), 0);
    ck_assert_int_eq(chan_send(ch, "b", 1, 0), 0);
    ck_assert_int_eq(chan_len(ch), 2);
    ck_assert_int_eq(chan_cap(ch), 3);
    ck_assert_int_eq(chan_stat(cl, "stat.one", &info), 0);
    ck_assert_str_eq(info.name, "stat.one");
    ck_assert_int_eq(info.cap, 3);
    ck_assert_int_eq(info.len, 2);
    ck_assert_int_eq(info.closed, 0);

    n = chan_list(cl, "stat.", &all);
    ck_assert_int_eq(n, 1);
    ck_assert_str_eq(all[0].name, "stat.one");
    free(all);
    n = chan_list(cl, "", &all);
    ck_assert_int_eq(n, 2);
    free(all);

    ck_assert_int_eq(chan_delete(cl, "stat.one"), 0);
    ck_assert_int_eq(chan_stat(cl, "stat.one", &info), -1);
    ck_assert_int_eq(errno, ENOENT);
    ck_assert_int_eq(chan_delete(cl, "stat.one"), -1);
    ck_assert_int_eq(errno, ENOENT);
    ck_assert_int_eq(chan_send(ch, "c", 1, 0), -1);
    ck_assert_int_eq(errno, ESTALE);
    ck_assert_int_eq(chan_len(ch), -1);
    ck_assert_int_eq(errno, ESTALE);

    /* a new channel of the same name is not the old handle's */
    chan_t *again = open_ok(cl, "stat.one", 3);
    ck_assert_int_eq(chan_send(ch, "c", 1, 0), -1);
    ck_assert_int_eq(errno, ESTALE);
    ck_assert_int_eq(chan_len(again), 0);
    chan_free(again);
    chan_free(ch);
    chan_free(other);
    chan_disconnect(cl);
}
END_TEST

/* ---- messages --------------------------------------------------------- */

START_TEST(test_close_semantics_over_the_wire)
{
    chan_client_t *cl = connect_ok(0);
    chan_t *ch = open_ok(cl, "closing", 2);
    chan_msg_t m;

    ck_assert_int_eq(chan_send(ch, "", 0, 0), 0);
    ck_assert_int_eq(chan_close(ch), 0);
    ck_assert_int_eq(chan_close(ch), -1);
    ck_assert_int_eq(errno, EPIPE);
    ck_assert_int_eq(chan_send(ch, "x", 1, 0), -1);
    ck_assert_int_eq(errno, EPIPE);
    /* a 0-byte message is a message, then closed-and-drained is 0 */
    ck_assert_int_eq(chan_recv(ch, &m, 0), 1);
    ck_assert_uint_eq(m.len, 0);
    ck_assert_int_eq(((char *)m.data)[0], '\0');
    chan_msg_free(&m);
    ck_assert_int_eq(chan_recv(ch, &m, chan_now() + SOON), 0);
    chan_free(ch);
    chan_disconnect(cl);
}
END_TEST

START_TEST(test_largest_message_round_trips_and_larger_is_refused)
{
    const size_t max = (size_t)1 << 20; /* chand's default --max-msg */
    chan_client_t *cl = connect_ok(0);
    chan_t *ch = open_ok(cl, "big", 1);
    char *buf = malloc(max + 1);
    chan_msg_t m;

    ck_assert_ptr_nonnull(buf);
    for (size_t i = 0; i <= max; i++)
        buf[i] = (char)('a' + i % 26);
    ck_assert_int_eq(chan_send(ch, buf, max + 1, 0), -1);
    ck_assert_int_eq(errno, EMSGSIZE);
    ck_assert_int_eq(chan_send(ch, buf, max, chan_now() + SOON), 0);
    ck_assert_int_eq(chan_recv(ch, &m, chan_now() + SOON), 1);
    ck_assert_uint_eq(m.len, max);
    ck_assert_int_eq(memcmp(m.data, buf, max), 0);
    ck_assert_int_eq(((char *)m.data)[max], '\0');
    chan_msg_free(&m);
    free(buf);
    chan_free(ch);
    chan_disconnect(cl);
}
END_TEST

/* The child half of the two-process test: an unbuffered producer. */
static int produce(int n)
{
    chan_client_t *cl = chan_connect(addr, NULL);
    chan_t *ch;

    if (cl == NULL || (ch = chan_open(cl, "pipe", 0)) == NULL)
        return 2;
    for (int i = 0; i < n; i++) {
        char b[32];
        int len = snprintf(b, sizeof b, "m%d", i);
        if (chan_send(ch, b, (size_t)len, chan_now() + SOON) != 0)
            return 3;
    }
    if (chan_close(ch) != 0)
        return 4;
    chan_free(ch);
    chan_disconnect(cl);
    return 0;
}

START_TEST(test_two_processes_rendezvous_in_order)
{
    pid_t pid;
    int status;

    /* fork before this process touches libchanclient: the child starts clean */
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        _exit(produce(200));

    chan_client_t *cl = connect_ok(0);
    chan_t *ch = open_ok(cl, "pipe", 0);
    chan_msg_t m;
    for (int i = 0; i < 200; i++) {
        char want[32];
        snprintf(want, sizeof want, "m%d", i);
        ck_assert_int_eq(chan_recv(ch, &m, chan_now() + SOON), 1);
        ck_assert_str_eq(m.data, want);
        ck_assert_uint_eq(m.deliveries, 1);
        chan_msg_free(&m);
    }
    ck_assert_int_eq(chan_recv(ch, &m, chan_now() + SOON), 0);
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "producer wait status 0x%x", status);
    chan_free(ch);
    chan_disconnect(cl);
}
END_TEST

#define NRECV 100

struct many {
    chan_t *ch;
    int got[NRECV];   /* times each message index arrived */
    int bad;          /* receivers that failed or got garbage */
};

static void many_recv(void *arg)
{
    struct many *m = arg;
    chan_msg_t msg;

    if (chan_recv(m->ch, &msg, chan_now() + 10000) != 1) {
        m->bad++;
        return;
    }
    int i = atoi(msg.data);
    if (i < 0 || i >= NRECV)
        m->bad++;
    else
        m->got[i]++;
    chan_msg_free(&msg);
}

START_TEST(test_hundred_coroutines_share_one_connection)
{
    chan_client_t *cl = connect_ok(0);
    static struct many m;
    int cr[NRECV];

    memset(&m, 0, sizeof m);
    m.ch = open_ok(cl, "many", 0);
    for (int i = 0; i < NRECV; i++) {
        cr[i] = chan_go(many_recv, &m);
        ck_assert_int_gt(cr[i], 0);
    }
    /* all of them blocked at the broker at once, over this client's one connection */
    wait_blocked(cl, "many", NRECV, 0);
    for (int i = 0; i < NRECV; i++) {
        char b[16];
        int len = snprintf(b, sizeof b, "%d", i);
        ck_assert_int_eq(chan_send(m.ch, b, (size_t)len, chan_now() + SOON), 0);
    }
    for (int i = 0; i < NRECV; i++)
        ck_assert_int_eq(chan_join(cr[i], chan_now() + SOON), 0);
    ck_assert_int_eq(m.bad, 0);
    for (int i = 0; i < NRECV; i++)
        ck_assert_msg(m.got[i] == 1, "message %d received %d times", i, m.got[i]);
    chan_free(m.ch);
    chan_disconnect(cl);
}
END_TEST

/* ---- select ----------------------------------------------------------- */

struct later_send {
    chan_client_t *cl;
    chan_t *ch;
    const char *name;
    int rc;
};

/* Send once the broker shows one receiver blocked on the channel. */
static void send_when_awaited(void *arg)
{
    struct later_send *s = arg;
    wait_blocked(s->cl, s->name, 1, 0);
    s->rc = chan_send(s->ch, "late", 4, chan_now() + SOON);
}

START_TEST(test_select_over_two_remote_channels)
{
    chan_client_t *cl = connect_ok(0);
    chan_t *a = open_ok(cl, "sel.a", 1);
    chan_t *b = open_ok(cl, "sel.b", 1);
    chan_t *c = open_ok(cl, "sel.c", 0);
    chan_msg_t ma, mb;
    int64_t d;

    /* ready recv case */
    ck_assert_int_eq(chan_send(b, "hello", 5, 0), 0);
    struct chan_case rc2[] = {
        {.ch = NULL, .op = CHAN_RECV, .msg = &ma},
        {.ch = a, .op = CHAN_RECV, .msg = &ma},
        {.ch = b, .op = CHAN_RECV, .msg = &mb},
    };
    ck_assert_int_eq(chan_select(rc2, 3, chan_now() + SOON), 2);
    ck_assert_int_eq(rc2[2].result, 1);
    ck_assert_str_eq(mb.data, "hello");
    chan_msg_free(&mb);

    /* nothing ready: deadline 0, then a short deadline */
    ck_assert_int_eq(chan_select(rc2, 3, 0), -1);
    ck_assert_int_eq(errno, EAGAIN);
    d = chan_now() + 50;
    ck_assert_int_eq(chan_select(rc2, 3, d), -1);
    ck_assert_int_eq(errno, ETIMEDOUT);
    ck_assert_int_ge(chan_now(), d);

    /* a send case with room proceeds */
    struct chan_case sc[] = {
        {.ch = a, .op = CHAN_SEND, .data = "x", .len = 1},
        {.ch = b, .op = CHAN_RECV, .msg = &mb},
    };
    ck_assert_int_eq(chan_select(sc, 2, chan_now() + SOON), 0);
    ck_assert_int_eq(sc[0].result, 0);
    ck_assert_int_eq(chan_len(a), 1);

    /* a blocked select is completed by a sender that comes later */
    struct later_send ls = {.cl = cl, .ch = c, .name = "sel.c", .rc = -2};
    int cr = chan_go(send_when_awaited, &ls);
    struct chan_case wc[] = {
        {.ch = b, .op = CHAN_RECV, .msg = &mb},
        {.ch = c, .op = CHAN_RECV, .msg = &ma},
    };
    ck_assert_int_eq(chan_select(wc, 2, chan_now() + SOON), 1);
    ck_assert_int_eq(wc[1].result, 1);
    ck_assert_str_eq(ma.data, "late");
    chan_msg_free(&ma);
    ck_assert_int_eq(chan_join(cr, chan_now() + SOON), 0);
    ck_assert_int_eq(ls.rc, 0);

    /* closed channels: recv case gives 0, send case gives -1/EPIPE */
    ck_assert_int_eq(chan_close(b), 0);
    struct chan_case cc[] = {{.ch = b, .op = CHAN_RECV, .msg = &mb}};
    ck_assert_int_eq(chan_select(cc, 1, chan_now() + SOON), 0);
    ck_assert_int_eq(cc[0].result, 0);
    struct chan_case cs[] = {{.ch = b, .op = CHAN_SEND, .data = "y", .len = 1}};
    errno = 0;
    ck_assert_int_eq(chan_select(cs, 1, chan_now() + SOON), 0);
    ck_assert_int_eq(cs[0].result, -1);
    ck_assert_int_eq(errno, EPIPE);

    chan_free(a);
    chan_free(b);
    chan_free(c);
    chan_disconnect(cl);
}
END_TEST

/* ---- deadlines -------------------------------------------------------- */

START_TEST(test_deadlines_are_kept)
{
    chan_client_t *cl = connect_ok(0);
    chan_t *ch = open_ok(cl, "slow", 1);
    chan_msg_t m;
    int64_t d;

    ck_assert_int_eq(chan_recv(ch, &m, 0), -1);
    ck_assert_int_eq(errno, EAGAIN);

    d = chan_now() + 50;
    ck_assert_int_eq(chan_recv(ch, &m, d), -1);
    ck_assert_int_eq(errno, ETIMEDOUT);
    ck_assert_int_ge(chan_now(), d);
    ck_assert_int_lt(chan_now(), d + 500);

    ck_assert_int_eq(chan_send(ch, "full", 4, 0), 0);
    ck_assert_int_eq(chan_send(ch, "more", 4, 0), -1);
    ck_assert_int_eq(errno, EAGAIN);
    d = chan_now() + 50;
    ck_assert_int_eq(chan_send(ch, "more", 4, d), -1);
    ck_assert_int_eq(errno, ETIMEDOUT);
    ck_assert_int_ge(chan_now(), d);
    ck_assert_int_lt(chan_now(), d + 500);
    /* the timed-out send was not delivered */
    ck_assert_int_eq(chan_len(ch), 1);
    recv_str(ch, "full");
    ck_assert_int_eq(chan_recv(ch, &m, 0), -1);
    ck_assert_int_eq(errno, EAGAIN);
    chan_free(ch);
    chan_disconnect(cl);
}
END_TEST

/* ---- cancel ----------------------------------------------------------- */

struct blocked_recv {
    chan_t *ch;
    int rc;
    int err;
    chan_msg_t msg;
};

static void recv_forever(void *arg)
{
    struct blocked_recv *b = arg;
    b->rc = chan_recv(b->ch, &b->msg, -1);
    b->err = errno;
}

struct one_send {
    chan_t *ch;
    int rc;
};

static void send_one(void *arg)
{
    struct one_send *s = arg;
    s->rc = chan_send(s->ch, "one", 3, chan_now() + SOON);
}

START_TEST(test_cancelled_recv_loses_no_message)
{
    chan_client_t *cl = connect_ok(0);
    chan_t *ch = open_ok(cl, "cancel", 1);
    struct blocked_recv b = {.ch = ch};

    int cr = chan_go(recv_forever, &b);
    wait_blocked(cl, "cancel", 1, 0);
    ck_assert_int_eq(chan_cancel(cr), 0);
    ck_assert_int_eq(chan_join(cr, chan_now() + SOON), 0);
    ck_assert_int_eq(b.rc, -1);
    ck_assert_int_eq(b.err, ECANCELED);
    /* the broker withdrew it: the next message is not swallowed by a ghost */
    wait_blocked(cl, "cancel", 0, 0);
    ck_assert_int_eq(chan_send(ch, "one", 3, 0), 0);
    recv_str(ch, "one");

    /* a cancelled coroutine's later calls fail at once and touch nothing */
    ck_assert_int_eq(chan_send(ch, "two", 3, 0), 0);
    cr = chan_go(recv_forever, &b);
    ck_assert_int_eq(chan_cancel(cr), 0);
    ck_assert_int_eq(chan_join(cr, chan_now() + SOON), 0);
    ck_assert_int_eq(b.err, ECANCELED);
    ck_assert_int_eq(chan_len(ch), 1);
    recv_str(ch, "two");
    chan_free(ch);
    chan_disconnect(cl);
}
END_TEST

/*
 * The message reaches the blocked receiver while its cancel is on the way:
 * the library gives it back (NACK) and the next receiver gets it.
 */
START_TEST(test_message_racing_a_cancel_is_given_back)
{
    chan_client_t *cl = connect_ok(0);
    chan_t *ch = open_ok(cl, "race", 1);
    struct blocked_recv b = {.ch = ch};
    struct one_send s = {.ch = ch, .rc = -2};
    chan_msg_t m;

    int cr = chan_go(recv_forever, &b);
    wait_blocked(cl, "race", 1, 0);
    int sr = chan_go(send_one, &s);
    chan_yield(); /* the SEND goes out first, the CANCEL right behind it */
    ck_assert_int_eq(chan_cancel(cr), 0);
    ck_assert_int_eq(chan_join(sr, chan_now() + SOON), 0);
    ck_assert_int_eq(s.rc, 0);
    ck_assert_int_eq(chan_join(cr, chan_now() + SOON), 0);
    if (b.rc == 1) {
        /* the reply beat the cancel: the receiver kept the message, nothing is left */
        ck_assert_str_eq(b.msg.data, "one");
        chan_msg_free(&b.msg);
        ck_assert_int_eq(chan_recv(ch, &m, 0), -1);
        ck_assert_int_eq(errno, EAGAIN);
        fprintf(stderr, "race: the reply came before the cancel\n");
    } else {
        ck_assert_int_eq(b.err, ECANCELED);
        ck_assert_int_eq(chan_recv(ch, &m, chan_now() + SOON), 1);
        ck_assert_str_eq(m.data, "one");
        ck_assert_uint_eq(m.deliveries, 2); /* handed out, given back, handed out again */
        chan_msg_free(&m);
    }
    chan_free(ch);
    chan_disconnect(cl);
}
END_TEST

struct blocked_send {
    chan_t *ch;
    int rc;
    int err;
};

static void send_forever(void *arg)
{
    struct blocked_send *b = arg;
    b->rc = chan_send(b->ch, "sent", 4, -1);
    b->err = errno;
}

START_TEST(test_cancelled_send_is_not_delivered)
{
    chan_client_t *cl = connect_ok(0);
    chan_t *ch = open_ok(cl, "fullsend", 1);
    struct blocked_send b = {.ch = ch};
    chan_msg_t m;

    ck_assert_int_eq(chan_send(ch, "first", 5, 0), 0);
    int cr = chan_go(send_forever, &b);
    wait_blocked(cl, "fullsend", 0, 1);
    ck_assert_int_eq(chan_cancel(cr), 0);
    ck_assert_int_eq(chan_join(cr, chan_now() + SOON), 0);
    ck_assert_int_eq(b.rc, -1);
    ck_assert_int_eq(b.err, ECANCELED);
    wait_blocked(cl, "fullsend", 0, 0);
    recv_str(ch, "first");
    ck_assert_int_eq(chan_recv(ch, &m, 0), -1);
    ck_assert_int_eq(errno, EAGAIN);
    chan_free(ch);
    chan_disconnect(cl);
}
END_TEST

/*
 * An unbuffered send whose receiver took the message before the CANCEL
 * reached the broker was delivered, so it reports success: never both
 * delivered and failed.
 */
START_TEST(test_send_completed_before_its_cancel_reports_success)
{
    chan_client_t *cl = connect_ok(0);
    chan_t *ch = open_ok(cl, "rendezvous", 0);
    struct blocked_send s = {.ch = ch};
    struct blocked_recv r = {.ch = ch};

    int sc = chan_go(send_forever, &s);
    wait_blocked(cl, "rendezvous", 0, 1);
    int rc = chan_go(recv_forever, &r);
    chan_yield(); /* the RECV goes out first, the sender's CANCEL right behind it */
    ck_assert_int_eq(chan_cancel(sc), 0);
    ck_assert_int_eq(chan_join(sc, chan_now() + SOON), 0);
    ck_assert_int_eq(chan_join(rc, chan_now() + SOON), 0);
    ck_assert_int_eq(r.rc, 1);
    ck_assert_str_eq(r.msg.data, "sent");
    chan_msg_free(&r.msg);
    ck_assert_msg(s.rc == 0, "delivered send reported %d (%s)", s.rc, strerror(s.err));
    chan_free(ch);
    chan_disconnect(cl);
}
END_TEST

/* ---- a broker that goes away ----------------------------------------- */

struct timed_op {
    chan_t *ch;
    int send;           /* send instead of recv */
    int64_t deadline;
    int rc;
    int err;
    int64_t ended;      /* chan_now() at return */
};

static void timed_op(void *arg)
{
    struct timed_op *t = arg;
    chan_msg_t m;

    if (t->send) {
        t->rc = chan_send(t->ch, "x", 1, t->deadline);
    } else {
        t->rc = chan_recv(t->ch, &m, t->deadline);
        if (t->rc == 1)
            chan_msg_free(&m);
    }
    t->err = errno;
    t->ended = chan_now();
}

START_TEST(test_killed_broker_fails_pending_ops_in_time)
{
    const int64_t retry = 1000;
    chan_client_t *cl = connect_ok(retry);
    chan_t *ch = open_ok(cl, "doomed", 0);
    int64_t t0 = chan_now(), tk;
    struct timed_op forever = {.ch = ch, .deadline = -1};
    struct timed_op shortly = {.ch = ch, .deadline = t0 + 300};
    struct timed_op sender = {.ch = ch, .send = 1, .deadline = -1};
    int cr[3];

    cr[0] = chan_go(timed_op, &forever);
    cr[1] = chan_go(timed_op, &shortly);
    wait_blocked(cl, "doomed", 2, 0);
    /* a cap-0 send is taken by a receiver before the broker dies; park a send on another channel */
    chan_t *full = open_ok(cl, "full", 1);
    ck_assert_int_eq(chan_send(full, "x", 1, 0), 0);
    sender.ch = full;
    cr[2] = chan_go(timed_op, &sender);
    wait_blocked(cl, "full", 0, 1);

    tk = chan_now();
    ck_assert_int_lt(tk, shortly.deadline);
    tc_server_stop(&srv, SIGKILL, 2000);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(chan_join(cr[i], tk + retry + 2000), 0);

    /*
     * A send in flight is resent under its seq once the broker is back;
     * this one never comes back, so the send fails when the retry budget
     * is spent, not before and not much after.
     */
    ck_assert_int_eq(sender.rc, -1);
    ck_assert_int_eq(sender.err, ECONNRESET);
    ck_assert_int_ge(sender.ended - tk, retry - 100);
    ck_assert_int_lt(sender.ended - tk, retry + 1000);
    /* a recv with a deadline before the retry budget ends at its deadline */
    ck_assert_int_eq(shortly.rc, -1);
    ck_assert_int_eq(shortly.err, ETIMEDOUT);
    ck_assert_int_ge(shortly.ended, shortly.deadline);
    ck_assert_int_lt(shortly.ended, shortly.deadline + 200);
    /* a recv without one ends with the retry budget */
    ck_assert_int_eq(forever.rc, -1);
    ck_assert_int_eq(forever.err, ECONNRESET);
    ck_assert_int_ge(forever.ended - tk, retry - 50);
    ck_assert_int_lt(forever.ended - tk, retry + 500);

    /* later calls try again, within their deadline or the budget */
    int64_t d = chan_now() + 100;
    ck_assert_int_eq(chan_send(ch, "x", 1, d), -1);
    ck_assert_int_eq(errno, ETIMEDOUT);
    ck_assert_int_ge(chan_now(), d);
    ck_assert_int_lt(chan_now(), d + 200);
    int64_t t1 = chan_now();
    struct chan_info info;
    ck_assert_int_eq(chan_stat(cl, "doomed", &info), -1);
    ck_assert_int_eq(errno, ENOTCONN);
    ck_assert_int_lt(chan_now() - t1, retry + 500);
    chan_free(full);
    chan_free(ch);
    chan_disconnect(cl);
}
END_TEST

/*
 * A broker that keeps the connection but answers nothing (stopped): a call
 * ends no later than its deadline plus two grace periods (2 s each: the
 * client CANCELs, then gives the connection up), and once the broker runs
 * again the client reconnects by itself.
 */
START_TEST(test_silent_broker_holds_no_call_for_ever)
{
    chan_client_t *cl = connect_ok(0);
    chan_t *ch = open_ok(cl, "frozen", 1);
    chan_msg_t m;
    int64_t d;

    ck_assert_int_eq(kill(srv.pid, SIGSTOP), 0);
    d = chan_now() + 100;
    ck_assert_int_eq(chan_recv(ch, &m, d), -1);
    ck_assert_int_eq(errno, ETIMEDOUT);
    ck_assert_int_ge(chan_now(), d);
    ck_assert_int_lt(chan_now(), d + 2 * 2000 + 700);
    ck_assert_int_eq(kill(srv.pid, SIGCONT), 0);
    ck_assert_int_eq(chan_send(ch, "thawed", 6, chan_now() + SOON), 0);
    recv_str(ch, "thawed");
    chan_free(ch);
    chan_disconnect(cl);
}
END_TEST

START_TEST(test_recv_survives_a_broker_restart)
{
    chan_client_t *cl = connect_ok(5000);
    chan_t *pad = open_ok(cl, "pad", 1);
    chan_t *ch = open_ok(cl, "phoenix", 1);
    struct timed_op waiting = {.ch = ch, .deadline = chan_now() + 10000};
    char port[16];

    int cr = chan_go(timed_op, &waiting);
    wait_blocked(cl, "phoenix", 1, 0);
    snprintf(port, sizeof port, "%d", srv.port);
    tc_server_stop(&srv, SIGKILL, 2000);
    tc_server_start(&srv, "--port", port, NULL);
    ck_assert_int_eq(srv.port, atoi(port));

    /*
     * The new broker numbers channels afresh: make its first channel one
     * that was not ours, so a handle kept blindly would name the wrong one.
     */
    chan_client_t *cl2 = connect_ok(0);
    chan_t *decoy = open_ok(cl2, "decoy", 1);
    chan_t *ph2 = open_ok(cl2, "phoenix", 1);
    wait_blocked(cl2, "phoenix", 1, 0); /* our recv came back by itself */
    ck_assert_int_eq(chan_send(ph2, "again", 5, chan_now() + SOON), 0);
    ck_assert_int_eq(chan_join(cr, chan_now() + SOON), 0);
    ck_assert_int_eq(waiting.rc, 1);
    /* and the old handles work on the new broker */
    ck_assert_int_eq(chan_send(pad, "p", 1, 0), 0);
    ck_assert_int_eq(chan_len(pad), 1);
    ck_assert_int_eq(chan_len(decoy), 0);
    chan_free(decoy);
    chan_free(ph2);
    chan_free(pad);
    chan_free(ch);
    chan_disconnect(cl2);
    chan_disconnect(cl);
}
END_TEST

/* ---- the round trip --------------------------------------------------- */

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

START_TEST(test_round_trip_time)
{
    enum { N = 10000 };
    static int64_t t[N];
    chan_client_t *cl = connect_ok(0);
    chan_t *ch = open_ok(cl, "rtt", 1);
    chan_msg_t m;

    for (int i = 0; i < N; i++) {
        int64_t t0 = now_ns();
        ck_assert_int_eq(chan_send(ch, "ping", 4, chan_now() + SOON), 0);
        ck_assert_int_eq(chan_recv(ch, &m, chan_now() + SOON), 1);
        t[i] = now_ns() - t0;
        ck_assert_uint_eq(m.len, 4);
        chan_msg_free(&m);
    }
    qsort(t, N, sizeof t[0], cmp_i64);
    printf("remote send+recv round trip on loopback: median %.1f us, p99 %.1f us (%d pairs)\n",
           t[N / 2] / 1000.0, t[N * 99 / 100] / 1000.0, N);
    /* two request/reply exchanges with the broker; far above this means a stall somewhere */
    ck_assert_int_lt(t[N / 2], 5 * 1000000);
    chan_free(ch);
    chan_disconnect(cl);
}
END_TEST

static Suite *remote_suite(void)
{
    Suite *s = suite_create("remote");
    TCase *tc;

    tc = tcase_create("connect");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 10);
    tcase_add_test(tc, test_connect_rejects_bad_addresses);
    tcase_add_test(tc, test_connect_to_nothing_fails_after_retry_budget);
    tcase_add_test(tc, test_open_rejects_bad_names_before_sending);
    tcase_add_test(tc, test_open_attach_and_capacity_errors);
    tcase_add_test(tc, test_stat_list_len_and_delete);
    suite_add_tcase(s, tc);

    tc = tcase_create("messages");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_close_semantics_over_the_wire);
    tcase_add_test(tc, test_largest_message_round_trips_and_larger_is_refused);
    tcase_add_test(tc, test_two_processes_rendezvous_in_order);
    tcase_add_test(tc, test_hundred_coroutines_share_one_connection);
    tcase_add_test(tc, test_select_over_two_remote_channels);
    tcase_add_test(tc, test_deadlines_are_kept);
    suite_add_tcase(s, tc);

    tc = tcase_create("cancel");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 10);
    tcase_add_test(tc, test_cancelled_recv_loses_no_message);
    tcase_add_test(tc, test_message_racing_a_cancel_is_given_back);
    tcase_add_test(tc, test_cancelled_send_is_not_delivered);
    tcase_add_test(tc, test_send_completed_before_its_cancel_reports_success);
    suite_add_tcase(s, tc);

    tc = tcase_create("outage");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_killed_broker_fails_pending_ops_in_time);
    tcase_add_test(tc, test_recv_survives_a_broker_restart);
    tcase_add_test(tc, test_silent_broker_holds_no_call_for_ever);
    suite_add_tcase(s, tc);

    tc = tcase_create("speed");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_round_trip_time);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(remote_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
