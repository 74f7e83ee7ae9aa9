/*
 * batch_test.c: chan_send_many and chan_recv_many on local channels and on
 * channels of a real chand ($CHAND on 127.0.0.1, --port 0). Each batch must
 * behave message by message as consecutive single calls would: FIFO across
 * batches, capacity, one rendezvous per message on an unbuffered channel,
 * and, like write(2)/read(2), a wait for the first message only.
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

/* Each test runs once on a local channel and once on a remote one. */
static struct tc_server srv;
static chan_client_t *cl;
static int remote;
static int nchans;

static void setup_local(void)
{
    remote = 0;
}

static void start_remote(const char *max_msg)
{
    char addr[64];
    struct chan_opts o = {.client_name = "batch_test"};

    remote = 1;
    if (max_msg)
        tc_server_start(&srv, "--max-msg", max_msg, NULL);
    else
        tc_server_start(&srv, NULL);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", srv.port);
    cl = chan_connect(addr, &o);
    ck_assert_msg(cl != NULL, "chan_connect %s: %s", addr, strerror(errno));
}

static void setup_remote(void)
{
    start_remote(NULL);
}

static void teardown(void)
{
    if (!remote)
        return;
    chan_disconnect(cl);
    cl = NULL;
    tc_server_stop(&srv, SIGTERM, 2000);
}

/* A fresh channel of capacity cap of the kind under test. */
static chan_t *make(long cap)
{
    char name[32];
    chan_t *ch;

    if (!remote) {
        ch = chan_make((size_t)cap);
        ck_assert_ptr_nonnull(ch);
        return ch;
    }
    snprintf(name, sizeof name, "batch%d", ++nchans);
    ch = chan_open(cl, name, cap);
    ck_assert_msg(ch != NULL, "chan_open %s: %s", name, strerror(errno));
    return ch;
}

/* Buffered messages, as the channel reports them. */
static long len_of(chan_t *ch)
{
    long n = chan_len(ch);
    ck_assert_int_ge(n, 0);
    return n;
}

/* iov[i] = strs[i] */
static void iov_of(struct iovec *iov, const char **strs, int n)
{
    for (int i = 0; i < n; i++) {
        iov[i].iov_base = (void *)strs[i];
        iov[i].iov_len = strlen(strs[i]);
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

/* Wait (bounded) until the channel shows so many blocked receivers and senders. */
static void wait_blocked(chan_t *ch, long receivers, long senders)
{
    int64_t until = chan_now() + SOON;
    char name[32];

    snprintf(name, sizeof name, "batch%d", nchans);
    for (;;) {
        struct chan_info info;
        if (!remote) {
            /* a local waiter is queued the moment its coroutine parks */
            chan_yield();
            return;
        }
        ck_assert_int_eq(chan_stat(cl, name, &info), 0);
        if (info.receivers == receivers && info.senders == senders)
            return;
        ck_assert_msg(chan_now() < until, "%ld receivers, %ld senders blocked; want %ld, %ld",
                      info.receivers, info.senders, receivers, senders);
        chan_sleep(chan_now() + 2);
    }
    (void)ch;
}

/* ---- coroutine bodies ------------------------------------------------- */

struct op {
    chan_t *ch;
    const char *send;     /* message to send, or NULL to receive */
    int rc;
    int err;
    char got[64];
};

static void op_recv(void *arg)
{
    struct op *o = arg;
    chan_msg_t m;

    o->rc = chan_recv(o->ch, &m, chan_now() + SOON);
    o->err = errno;
    if (o->rc == 1) {
        snprintf(o->got, sizeof o->got, "%s", (char *)m.data);
        chan_msg_free(&m);
    }
}

static void op_send(void *arg)
{
    struct op *o = arg;

    o->rc = chan_send(o->ch, o->send, strlen(o->send), chan_now() + SOON);
    o->err = errno;
}

struct many {
    chan_t *ch;
    int n;
    int64_t deadline;
    int rc;
    int err;
    chan_msg_t msgs[16];
};

static void many_recv(void *arg)
{
    struct many *o = arg;

    o->rc = chan_recv_many(o->ch, o->msgs, o->n, o->deadline);
    o->err = errno;
}

static const char *abc[] = {"a", "b", "c", "d", "e", "f", "g", "h"};

static void many_send(void *arg)
{
    struct many *o = arg;
    struct iovec iov[8];

    iov_of(iov, abc, o->n);
    o->rc = chan_send_many(o->ch, iov, o->n, o->deadline);
    o->err = errno;
}

/* ---- the tests -------------------------------------------------------- */

START_TEST(test_bad_arguments_are_einval)
{
    chan_t *ch = make(4);
    struct iovec iov[2] = {{NULL, 1}, {"x", 1}};
    chan_msg_t m[2];

    ck_assert_int_eq(chan_send_many(ch, iov + 1, 0, 0), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(chan_send_many(ch, NULL, 1, 0), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(chan_send_many(ch, iov, 2, 0), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(chan_send_many(NULL, iov + 1, 1, 0), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(chan_recv_many(ch, m, 0, 0), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(chan_recv_many(ch, NULL, 2, 0), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(chan_recv_many(ch, m, 2, -2), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(len_of(ch), 0); /* none of it reached the channel */
    chan_free(ch);
}
END_TEST

START_TEST(test_send_many_stops_at_capacity_without_waiting)
{
    chan_t *ch = make(3);
    struct iovec iov[5];

    iov_of(iov, abc, 5);
    ck_assert_int_eq(chan_send_many(ch, iov, 5, chan_now() + SOON), 3);
    ck_assert_int_eq(len_of(ch), 3);
    /* full: a batch that may not wait sends nothing */
    ck_assert_int_eq(chan_send_many(ch, iov + 3, 2, 0), -1);
    ck_assert_int_eq(errno, EAGAIN);
    recv_str(ch, "a");
    recv_str(ch, "b");
    recv_str(ch, "c");
    chan_free(ch);
}
END_TEST

START_TEST(test_send_many_waits_for_the_first_message_only)
{
    chan_t *ch = make(1);
    struct many s = {.n = 3, .deadline = chan_now() + SOON};
    int cr;

    ck_assert_int_eq(chan_send(ch, "x", 1, 0), 0);
    s.ch = ch;
    cr = chan_go(many_send, &s);
    wait_blocked(ch, 0, 1);
    /* one slot frees: the first message takes it, the second would wait */
    recv_str(ch, "x");
    ck_assert_int_eq(chan_join(cr, chan_now() + SOON), 0);
    ck_assert_int_eq(s.rc, 1);
    recv_str(ch, "a");
    ck_assert_int_eq(len_of(ch), 0);
    chan_free(ch);
}
END_TEST

START_TEST(test_send_many_times_out_with_nothing_sent)
{
    chan_t *ch = make(1);
    struct iovec iov[2];
    int64_t d;

    iov_of(iov, abc, 2);
    ck_assert_int_eq(chan_send(ch, "x", 1, 0), 0);
    d = chan_now() + 50;
    ck_assert_int_eq(chan_send_many(ch, iov, 2, d), -1);
    ck_assert_int_eq(errno, ETIMEDOUT);
    ck_assert_int_ge(chan_now(), d);
    ck_assert_int_eq(len_of(ch), 1);
    chan_free(ch);
}
END_TEST

START_TEST(test_fifo_across_batches)
{
    enum { N = 3000, SENDB = 100, RECVB = 37 };
    chan_t *ch = make(N);
    static char bufs[N][12];
    struct iovec iov[SENDB];
    chan_msg_t m[RECVB];
    int next = 0, sent = 0;

    while (sent < N) {
        int k = N - sent < SENDB ? N - sent : SENDB;
        /* batches of varied sizes: 1..SENDB */
        k = k > 1 + sent % SENDB ? 1 + sent % SENDB : k;
        for (int i = 0; i < k; i++) {
            snprintf(bufs[sent + i], sizeof bufs[0], "%d", sent + i);
            iov[i].iov_base = bufs[sent + i];
            iov[i].iov_len = strlen(bufs[sent + i]);
        }
        ck_assert_int_eq(chan_send_many(ch, iov, k, 0), k);
        sent += k;
    }
    ck_assert_int_eq(len_of(ch), N);
    while (next < N) {
        int got = chan_recv_many(ch, m, RECVB, chan_now() + SOON);
        ck_assert_int_ge(got, 1);
        ck_assert_int_le(got, RECVB);
        for (int i = 0; i < got; i++) {
            ck_assert_int_eq(atoi(m[i].data), next);
            ck_assert_uint_eq(m[i].deliveries, 1);
            next++;
            chan_msg_free(&m[i]);
        }
    }
    ck_assert_int_eq(len_of(ch), 0);
    chan_free(ch);
}
END_TEST

START_TEST(test_recv_many_takes_what_is_there_and_no_more)
{
    chan_t *ch = make(10);
    struct iovec iov[5];
    chan_msg_t m[16];

    iov_of(iov, abc, 5);
    ck_assert_int_eq(chan_send_many(ch, iov, 5, 0), 5);
    /* asks for 2: only 2 leave the channel */
    ck_assert_int_eq(chan_recv_many(ch, m, 2, 0), 2);
    ck_assert_str_eq(m[0].data, "a");
    ck_assert_str_eq(m[1].data, "b");
    chan_msg_free(&m[0]);
    chan_msg_free(&m[1]);
    ck_assert_int_eq(len_of(ch), 3);
    /* asks for 16 with time to wait: gets the 3 there at once */
    ck_assert_int_eq(chan_recv_many(ch, m, 16, chan_now() + SOON), 3);
    ck_assert_str_eq(m[0].data, "c");
    ck_assert_str_eq(m[2].data, "e");
    ck_assert_ptr_null(m[3].data); /* the rest stay cleared */
    for (int i = 0; i < 16; i++)
        chan_msg_free(&m[i]);
    ck_assert_int_eq(chan_recv_many(ch, m, 16, 0), -1);
    ck_assert_int_eq(errno, EAGAIN);
    chan_free(ch);
}
END_TEST

START_TEST(test_recv_many_returns_on_the_first_message)
{
    chan_t *ch = make(10);
    struct many r = {.n = 16, .deadline = chan_now() + SOON};
    int cr;

    r.ch = ch;
    cr = chan_go(many_recv, &r);
    wait_blocked(ch, 1, 0);
    ck_assert_int_eq(chan_send(ch, "one", 3, 0), 0);
    ck_assert_int_eq(chan_join(cr, chan_now() + SOON), 0);
    ck_assert_int_eq(r.rc, 1);
    ck_assert_str_eq(r.msgs[0].data, "one");
    chan_msg_free(&r.msgs[0]);
    chan_free(ch);
}
END_TEST

START_TEST(test_recv_many_times_out)
{
    chan_t *ch = make(10);
    chan_msg_t m[4];
    int64_t d = chan_now() + 50;

    ck_assert_int_eq(chan_recv_many(ch, m, 4, d), -1);
    ck_assert_int_eq(errno, ETIMEDOUT);
    ck_assert_int_ge(chan_now(), d);
    chan_free(ch);
}
END_TEST

START_TEST(test_recv_many_drains_a_closed_channel_then_returns_0)
{
    chan_t *ch = make(10);
    struct iovec iov[3];
    chan_msg_t m[8];

    iov_of(iov, abc, 3);
    ck_assert_int_eq(chan_send_many(ch, iov, 3, 0), 3);
    ck_assert_int_eq(chan_close(ch), 0);
    ck_assert_int_eq(chan_send_many(ch, iov, 3, 0), -1);
    ck_assert_int_eq(errno, EPIPE);
    ck_assert_int_eq(chan_recv_many(ch, m, 8, 0), 3);
    for (int i = 0; i < 3; i++)
        chan_msg_free(&m[i]);
    ck_assert_int_eq(chan_recv_many(ch, m, 8, 0), 0);
    ck_assert_int_eq(chan_recv_many(ch, m, 8, -1), 0);
    ck_assert_ptr_null(m[0].data);
    chan_free(ch);
}
END_TEST

START_TEST(test_close_wakes_a_blocked_recv_many_with_0)
{
    chan_t *ch = make(0);
    struct many r = {.n = 4, .deadline = chan_now() + SOON};
    int cr;

    r.ch = ch;
    cr = chan_go(many_recv, &r);
    wait_blocked(ch, 1, 0);
    ck_assert_int_eq(chan_close(ch), 0);
    ck_assert_int_eq(chan_join(cr, chan_now() + SOON), 0);
    ck_assert_int_eq(r.rc, 0);
    chan_free(ch);
}
END_TEST

/*
 * Unbuffered: each message is its own rendezvous. Three receivers wait, so
 * three messages go, one to each in FIFO order; a fourth would wait.
 */
START_TEST(test_unbuffered_send_many_is_one_rendezvous_per_message)
{
    chan_t *ch = make(0);
    struct op r[3];
    struct iovec iov[5];
    int cr[3];

    iov_of(iov, abc, 5);
    ck_assert_int_eq(chan_send_many(ch, iov, 5, 0), -1);
    ck_assert_int_eq(errno, EAGAIN);
    for (int i = 0; i < 3; i++) {
        memset(&r[i], 0, sizeof r[i]);
        r[i].ch = ch;
        cr[i] = chan_go(op_recv, &r[i]);
        wait_blocked(ch, i + 1, 0);
    }
    ck_assert_int_eq(chan_send_many(ch, iov, 5, chan_now() + SOON), 3);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(chan_join(cr[i], chan_now() + SOON), 0);
        ck_assert_int_eq(r[i].rc, 1);
        ck_assert_str_eq(r[i].got, abc[i]);
    }
    ck_assert_int_eq(len_of(ch), 0);
    chan_free(ch);
}
END_TEST

START_TEST(test_unbuffered_recv_many_takes_from_waiting_senders)
{
    static const char *words[] = {"x0", "x1", "x2"};
    chan_t *ch = make(0);
    struct op s[3];
    chan_msg_t m[8];
    int cr[3];

    for (int i = 0; i < 3; i++) {
        memset(&s[i], 0, sizeof s[i]);
        s[i].ch = ch;
        s[i].send = words[i];
        cr[i] = chan_go(op_send, &s[i]);
        wait_blocked(ch, 0, i + 1);
    }
    /*
     * Locally one call takes all three. chand hands out past the first only
     * buffered messages, so there each call may take one: what matters is
     * that each is taken once, in order, and completes its own sender.
     */
    for (int next = 0; next < 3;) {
        int got = chan_recv_many(ch, m, 8, chan_now() + SOON);
        ck_assert_int_ge(got, 1);
        if (!remote)
            ck_assert_int_eq(got, 3);
        for (int i = 0; i < got; i++, next++) {
            ck_assert_int_lt(next, 3);
            ck_assert_str_eq(m[i].data, words[next]);
            chan_msg_free(&m[i]);
        }
    }
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(chan_join(cr[i], chan_now() + SOON), 0);
        ck_assert_int_eq(s[i].rc, 0);
    }
    ck_assert_int_eq(chan_recv_many(ch, m, 8, 0), -1);
    ck_assert_int_eq(errno, EAGAIN);
    chan_free(ch);
}
END_TEST

/* A message over the limit ends the batch before it; first in line, it fails the call. */
START_TEST(test_oversized_message_ends_the_batch)
{
    size_t big = remote ? 2000 : ((size_t)1 << 20) + 1;
    char *blob = calloc(1, big);
    chan_t *ch = make(10);
    struct iovec iov[4];

    ck_assert_ptr_nonnull(blob);
    iov_of(iov, abc, 4);
    iov[2].iov_base = blob;
    iov[2].iov_len = big;
    ck_assert_int_eq(chan_send_many(ch, iov, 4, 0), 2);
    ck_assert_int_eq(chan_send_many(ch, iov + 2, 2, 0), -1);
    ck_assert_int_eq(errno, EMSGSIZE);
    ck_assert_int_eq(len_of(ch), 2);
    free(blob);
    chan_free(ch);
}
END_TEST

/* ---- remote only ------------------------------------------------------- */

/*
 * A batch larger than one frame (1 MiB of messages plus header room) goes
 * as several frames, still in order, and the receiver gets every byte.
 */
START_TEST(test_batch_over_the_frame_limit_goes_in_several_frames)
{
    enum { N = 40, SIZE = 100 * 1024 };
    chan_t *ch = make(N);
    struct iovec iov[N];
    chan_msg_t m[16];
    char *bufs = malloc((size_t)N * SIZE);
    int next = 0;

    ck_assert_ptr_nonnull(bufs);
    for (int i = 0; i < N; i++) {
        memset(bufs + (size_t)i * SIZE, 'A' + i % 26, SIZE);
        iov[i].iov_base = bufs + (size_t)i * SIZE;
        iov[i].iov_len = SIZE;
    }
    ck_assert_int_eq(chan_send_many(ch, iov, N, chan_now() + SOON), N);
    while (next < N) {
        int got = chan_recv_many(ch, m, 16, chan_now() + SOON);
        ck_assert_int_ge(got, 1);
        for (int i = 0; i < got; i++, next++) {
            ck_assert_uint_eq(m[i].len, SIZE);
            ck_assert(memcmp(m[i].data, bufs + (size_t)next * SIZE, SIZE) == 0);
            chan_msg_free(&m[i]);
        }
    }
    free(bufs);
    chan_free(ch);
}
END_TEST

/* recv_many acks what it took and nothing else: the rest stays buffered, not held. */
START_TEST(test_recv_many_leaves_the_rest_in_the_channel)
{
    chan_t *ch = make(10);
    struct iovec iov[6];
    chan_msg_t m[2];
    struct chan_info info;
    int64_t until = chan_now() + SOON;
    char name[32];

    snprintf(name, sizeof name, "batch%d", nchans);
    iov_of(iov, abc, 6);
    ck_assert_int_eq(chan_send_many(ch, iov, 6, 0), 6);
    ck_assert_int_eq(chan_recv_many(ch, m, 2, 0), 2);
    chan_msg_free(&m[0]);
    chan_msg_free(&m[1]);
    for (;;) {
        ck_assert_int_eq(chan_stat(cl, name, &info), 0);
        if (info.unacked == 0)
            break;
        ck_assert_msg(chan_now() < until, "%ld unacked", info.unacked);
        chan_sleep(chan_now() + 2);
    }
    ck_assert_int_eq(info.len, 4);
    chan_free(ch);
}
END_TEST

/* Two clients, two coroutines: a stream of batches crosses the broker whole and in order. */
struct stream {
    chan_t *ch;
    int n;
    int done;
    long sum;
};

static void stream_send(void *arg)
{
    struct stream *st = arg;
    static char bufs[100][12];
    struct iovec iov[100];
    int sent = 0;

    while (sent < st->n) {
        int k = st->n - sent < 100 ? st->n - sent : 100;
        for (int i = 0; i < k; i++) {
            snprintf(bufs[i], sizeof bufs[i], "%d", sent + i);
            iov[i].iov_base = bufs[i];
            iov[i].iov_len = strlen(bufs[i]);
        }
        int r = chan_send_many(st->ch, iov, k, chan_now() + SOON);
        ck_assert_int_ge(r, 1);
        sent += r;
    }
    ck_assert_int_eq(chan_close(st->ch), 0);
    st->done = 1;
}

START_TEST(test_stream_of_batches_between_two_clients)
{
    enum { N = 20000 };
    char addr[64];
    chan_client_t *cl2;
    struct stream st = {.n = N};
    chan_t *in;
    chan_msg_t m[64];
    int next = 0, got, cr;

    snprintf(addr, sizeof addr, "127.0.0.1:%d", srv.port);
    cl2 = chan_connect(addr, NULL);
    ck_assert_ptr_nonnull(cl2);
    st.ch = chan_open(cl2, "stream", 64);
    ck_assert_ptr_nonnull(st.ch);
    in = chan_open(cl, "stream", 64);
    ck_assert_ptr_nonnull(in);
    cr = chan_go(stream_send, &st);
    while ((got = chan_recv_many(in, m, 64, chan_now() + SOON)) > 0) {
        for (int i = 0; i < got; i++, next++) {
            ck_assert_int_eq(atoi(m[i].data), next);
            chan_msg_free(&m[i]);
        }
    }
    ck_assert_int_eq(got, 0);
    ck_assert_int_eq(next, N);
    ck_assert_int_eq(chan_join(cr, chan_now() + SOON), 0);
    ck_assert(st.done);
    chan_free(in);
    chan_free(st.ch);
    chan_disconnect(cl2);
}
END_TEST

static void setup_remote_small(void)
{
    start_remote("1000");
}

static void add_common(TCase *tc)
{
    tcase_add_test(tc, test_bad_arguments_are_einval);
    tcase_add_test(tc, test_send_many_stops_at_capacity_without_waiting);
    tcase_add_test(tc, test_send_many_waits_for_the_first_message_only);
    tcase_add_test(tc, test_send_many_times_out_with_nothing_sent);
    tcase_add_test(tc, test_fifo_across_batches);
    tcase_add_test(tc, test_recv_many_takes_what_is_there_and_no_more);
    tcase_add_test(tc, test_recv_many_returns_on_the_first_message);
    tcase_add_test(tc, test_recv_many_times_out);
    tcase_add_test(tc, test_recv_many_drains_a_closed_channel_then_returns_0);
    tcase_add_test(tc, test_close_wakes_a_blocked_recv_many_with_0);
    tcase_add_test(tc, test_unbuffered_send_many_is_one_rendezvous_per_message);
    tcase_add_test(tc, test_unbuffered_recv_many_takes_from_waiting_senders);
}

static Suite *batch_suite(void)
{
    Suite *s = suite_create("batch");
    TCase *tc;

    tc = tcase_create("local");
    tcase_add_checked_fixture(tc, setup_local, teardown);
    tcase_set_timeout(tc, 10);
    add_common(tc);
    tcase_add_test(tc, test_oversized_message_ends_the_batch);
    suite_add_tcase(s, tc);

    tc = tcase_create("remote");
    tcase_add_checked_fixture(tc, setup_remote, teardown);
    tcase_set_timeout(tc, 20);
    add_common(tc);
    tcase_add_test(tc, test_batch_over_the_frame_limit_goes_in_several_frames);
    tcase_add_test(tc, test_recv_many_leaves_the_rest_in_the_channel);
    tcase_add_test(tc, test_stream_of_batches_between_two_clients);
    suite_add_tcase(s, tc);

    tc = tcase_create("remote_small_limit");
    tcase_add_checked_fixture(tc, setup_remote_small, teardown);
    tcase_set_timeout(tc, 10);
    tcase_add_test(tc, test_oversized_message_ends_the_batch);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(batch_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
