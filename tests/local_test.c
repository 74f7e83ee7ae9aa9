/*
 * local_test.c: local channels as the runtime sees them: rendezvous,
 * buffered FIFO, close, select, deadlines and cancel on local channels,
 * argument errors of the public calls. The full semantic suite runs the
 * rules of DESIGN.md section 1 against every kind of channel; this one
 * pins the glue between coroutines and the core, and the message blocks'
 * memory across sizes and free orders. Also prints the cost of an
 * unbuffered hand-off.
 */
#include <check.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chan.h"

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Receive one message and check its bytes. */
static void expect_msg(chan_t *ch, const char *want, int64_t deadline)
{
    chan_msg_t m;

    ck_assert_int_eq(chan_recv(ch, &m, deadline), 1);
    ck_assert_uint_eq(m.len, strlen(want));
    ck_assert_mem_eq(m.data, want, m.len);
    ck_assert_int_eq(((char *)m.data)[m.len], '\0');
    chan_msg_free(&m);
}

/* ---- rendezvous and buffering ---------------------------------------- */

static int sent_at_step, step;

static void sender_fn(void *arg)
{
    chan_t *ch = arg;

    ck_assert_int_eq(chan_send(ch, "hello", 5, -1), 0);
    sent_at_step = step;
}

START_TEST(test_unbuffered_send_completes_only_when_received)
{
    chan_t *ch = chan_make(0);
    int id;

    step = 0;
    sent_at_step = -1;
    id = chan_go(sender_fn, ch);
    chan_yield();
    ck_assert_int_eq(sent_at_step, -1); /* still blocked: nobody received */
    ck_assert_int_eq(chan_len(ch), 0);
    step = 1;
    expect_msg(ch, "hello", -1);
    ck_assert_int_eq(chan_join(id, -1), 0);
    ck_assert_int_eq(sent_at_step, 1);
    chan_free(ch);
}
END_TEST

START_TEST(test_buffered_channel_is_fifo_and_counts)
{
    chan_t *ch = chan_make(3);
    char buf[8];
    int i;

    ck_assert_int_eq(chan_cap(ch), 3);
    for (i = 0; i < 3; i++) {
        snprintf(buf, sizeof buf, "m%d", i);
        ck_assert_int_eq(chan_send(ch, buf, strlen(buf), 0), 0);
    }
    ck_assert_int_eq(chan_len(ch), 3);
    ck_assert_int_eq(chan_send(ch, "x", 1, 0), -1);
    ck_assert_int_eq(errno, EAGAIN);
    for (i = 0; i < 3; i++) {
        snprintf(buf, sizeof buf, "m%d", i);
        expect_msg(ch, buf, 0);
    }
    ck_assert_int_eq(chan_len(ch), 0);
    chan_free(ch);
}
END_TEST

START_TEST(test_zero_length_message_is_a_message)
{
    chan_t *ch = chan_make(1);
    chan_msg_t m;

    ck_assert_int_eq(chan_send(ch, NULL, 0, 0), 0);
    ck_assert_int_eq(chan_recv(ch, &m, 0), 1);
    ck_assert_uint_eq(m.len, 0);
    ck_assert_uint_eq(m.deliveries, 1);
    chan_msg_free(&m);
    chan_msg_free(&m); /* emptied: a no-op now */
    chan_msg_free(NULL);
    chan_free(ch);
}
END_TEST

START_TEST(test_message_over_1mib_is_emsgsize)
{
    chan_t *ch = chan_make(1);
    char *big = calloc(1, (1 << 20) + 1);

    ck_assert_int_eq(chan_send(ch, big, (1 << 20) + 1, 0), -1);
    ck_assert_int_eq(errno, EMSGSIZE);
    ck_assert_int_eq(chan_send(ch, big, 1 << 20, 0), 0);
    free(big);
    chan_free(ch); /* frees the buffered message too (ASan checks) */
}
END_TEST

/* ---- close ----------------------------------------------------------- */

static int closed_rc[3];

static void closed_receiver_fn(void *arg)
{
    chan_msg_t m;
    static int k;

    closed_rc[k++] = chan_recv(arg, &m, -1);
}

START_TEST(test_close_wakes_receivers_and_drains_buffer)
{
    chan_t *ch = chan_make(2);
    chan_t *un = chan_make(0);
    chan_msg_t m;
    int ids[3], i;

    for (i = 0; i < 3; i++)
        ids[i] = chan_go(closed_receiver_fn, un);
    chan_yield();
    ck_assert_int_eq(chan_close(un), 0);
    for (i = 0; i < 3; i++) {
        ck_assert_int_eq(chan_join(ids[i], -1), 0);
        ck_assert_int_eq(closed_rc[i], 0);
    }
    ck_assert_int_eq(chan_close(un), -1);
    ck_assert_int_eq(errno, EPIPE);
    ck_assert_int_eq(chan_send(un, "x", 1, -1), -1);
    ck_assert_int_eq(errno, EPIPE);

    ck_assert_int_eq(chan_send(ch, "a", 1, 0), 0);
    ck_assert_int_eq(chan_close(ch), 0);
    expect_msg(ch, "a", -1);
    ck_assert_int_eq(chan_recv(ch, &m, -1), 0);
    ck_assert_ptr_null(m.data);
    chan_free(ch);
    chan_free(un);
}
END_TEST

/* ---- deadlines and cancel -------------------------------------------- */

START_TEST(test_recv_and_send_time_out_never_early)
{
    chan_t *ch = chan_make(0);
    chan_msg_t m;
    int64_t d = chan_now() + 15;

    ck_assert_int_eq(chan_recv(ch, &m, d), -1);
    ck_assert_int_eq(errno, ETIMEDOUT);
    ck_assert_int_ge(chan_now(), d);
    d = chan_now() + 15;
    ck_assert_int_eq(chan_send(ch, "x", 1, d), -1);
    ck_assert_int_eq(errno, ETIMEDOUT);
    ck_assert_int_ge(chan_now(), d);
    /* The timed-out send was withdrawn: nothing to receive. */
    ck_assert_int_eq(chan_recv(ch, &m, 0), -1);
    ck_assert_int_eq(errno, EAGAIN);
    chan_free(ch);
}
END_TEST

static int cancelled_rc, cancelled_errno;

static void blocked_receiver_fn(void *arg)
{
    chan_msg_t m;

    errno = 0;
    cancelled_rc = chan_recv(arg, &m, -1);
    cancelled_errno = errno;
}

START_TEST(test_cancel_withdraws_a_blocked_receiver_at_once)
{
    chan_t *ch = chan_make(0);
    int id = chan_go(blocked_receiver_fn, ch);

    chan_yield();
    ck_assert_int_eq(chan_cancel(id), 0);
    /* Gone from the channel before it even ran again: nobody takes this. */
    ck_assert_int_eq(chan_send(ch, "x", 1, 0), -1);
    ck_assert_int_eq(errno, EAGAIN);
    ck_assert_int_eq(chan_join(id, -1), 0);
    ck_assert_int_eq(cancelled_rc, -1);
    ck_assert_int_eq(cancelled_errno, ECANCELED);
    chan_free(ch);
}
END_TEST

static void blocked_sender_fn(void *arg)
{
    errno = 0;
    cancelled_rc = chan_send(arg, "lost?", 5, -1);
    cancelled_errno = errno;
}

START_TEST(test_cancelled_send_is_not_delivered)
{
    chan_t *ch = chan_make(0);
    chan_msg_t m;
    int id = chan_go(blocked_sender_fn, ch);

    chan_yield();
    ck_assert_int_eq(chan_cancel(id), 0);
    ck_assert_int_eq(chan_recv(ch, &m, 0), -1);
    ck_assert_int_eq(errno, EAGAIN);
    ck_assert_int_eq(chan_join(id, -1), 0);
    ck_assert_int_eq(cancelled_rc, -1);
    ck_assert_int_eq(cancelled_errno, ECANCELED);
    chan_free(ch);
}
END_TEST

START_TEST(test_cancelled_coroutine_cannot_touch_a_channel)
{
    chan_t *ch = chan_make(4);
    chan_msg_t m;
    struct chan_case c = { .ch = ch, .op = CHAN_RECV, .msg = &m };

    ck_assert_int_eq(chan_send(ch, "a", 1, 0), 0);
    ck_assert_int_eq(chan_cancel(chan_self()), 0);
    ck_assert_int_eq(chan_send(ch, "b", 1, 0), -1);
    ck_assert_int_eq(errno, ECANCELED);
    ck_assert_int_eq(chan_recv(ch, &m, 0), -1);
    ck_assert_int_eq(errno, ECANCELED);
    ck_assert_int_eq(chan_select(&c, 1, 0), -1);
    ck_assert_int_eq(errno, ECANCELED);
    ck_assert_int_eq(chan_len(ch), 1);
    chan_free(ch);
}
END_TEST

/* ---- select ---------------------------------------------------------- */

START_TEST(test_select_picks_a_ready_case)
{
    chan_t *a = chan_make(1), *b = chan_make(1);
    chan_msg_t m;
    struct chan_case cs[3] = {
        { .ch = a, .op = CHAN_RECV, .msg = &m },
        { .ch = NULL, .op = CHAN_RECV, .msg = &m },
        { .ch = b, .op = CHAN_SEND, .data = "to-b", .len = 4 },
    };
    int i;

    /* Only the send to b can proceed. */
    ck_assert_int_eq(chan_select(cs, 3, 0), 2);
    ck_assert_int_eq(cs[2].result, 0);
    ck_assert_int_eq(chan_len(b), 1);
    /* Now nothing can: a is empty, b is full. */
    ck_assert_int_eq(chan_select(cs, 3, 0), -1);
    ck_assert_int_eq(errno, EAGAIN);
    ck_assert_int_eq(chan_send(a, "to-a", 4, 0), 0);
    ck_assert_int_eq(chan_select(cs, 3, -1), 0);
    ck_assert_int_eq(cs[0].result, 1);
    ck_assert_mem_eq(m.data, "to-a", 4);
    chan_msg_free(&m);
    expect_msg(b, "to-b", 0);
    /* A send case on a closed channel fires with EPIPE. */
    chan_close(b);
    errno = 0;
    ck_assert_int_eq(chan_select(cs, 3, -1), 2);
    ck_assert_int_eq(cs[2].result, -1);
    ck_assert_int_eq(errno, EPIPE);
    for (i = 0; i < 2; i++)
        ck_assert_int_eq(chan_len(a), 0);
    chan_free(a);
    chan_free(b);
}
END_TEST

static void later_send_fn(void *arg)
{
    chan_sleep(chan_now() + 5);
    chan_send(arg, "late", 4, -1);
}

START_TEST(test_select_blocks_until_a_case_proceeds)
{
    chan_t *chs[12];
    chan_msg_t m;
    struct chan_case cs[12];
    int i, id, r;

    /* More cases than fit on the stack path. */
    for (i = 0; i < 12; i++) {
        chs[i] = chan_make(0);
        cs[i] = (struct chan_case){ .ch = chs[i], .op = CHAN_RECV, .msg = &m };
    }
    id = chan_go(later_send_fn, chs[7]);
    r = chan_select(cs, 12, chan_now() + 5000);
    ck_assert_int_eq(r, 7);
    ck_assert_int_eq(cs[7].result, 1);
    ck_assert_mem_eq(m.data, "late", 4);
    chan_msg_free(&m);
    ck_assert_int_eq(chan_join(id, -1), 0);
    /* Every other registration was withdrawn. */
    for (i = 0; i < 12; i++) {
        ck_assert_int_eq(chan_send(chs[i], "x", 1, 0), -1);
        ck_assert_int_eq(errno, EAGAIN);
        chan_free(chs[i]);
    }
}
END_TEST

START_TEST(test_select_times_out_and_withdraws)
{
    chan_t *a = chan_make(0);
    chan_msg_t m;
    struct chan_case c = { .ch = a, .op = CHAN_SEND, .data = "x", .len = 1 };
    int64_t d = chan_now() + 10;

    ck_assert_int_eq(chan_select(&c, 1, d), -1);
    ck_assert_int_eq(errno, ETIMEDOUT);
    ck_assert_int_ge(chan_now(), d);
    ck_assert_int_eq(chan_recv(a, &m, 0), -1);
    ck_assert_int_eq(errno, EAGAIN);
    /* No cases at all: deadline 0 is EAGAIN, a deadline waits it out. */
    ck_assert_int_eq(chan_select(NULL, 0, 0), -1);
    ck_assert_int_eq(errno, EAGAIN);
    d = chan_now() + 5;
    ck_assert_int_eq(chan_select(NULL, 0, d), -1);
    ck_assert_int_eq(errno, ETIMEDOUT);
    ck_assert_int_ge(chan_now(), d);
    chan_free(a);
}
END_TEST

START_TEST(test_select_is_roughly_fair)
{
    chan_t *a = chan_make(1000), *b = chan_make(1000);
    chan_msg_t m;
    struct chan_case cs[2] = {
        { .ch = a, .op = CHAN_RECV, .msg = &m },
        { .ch = b, .op = CHAN_RECV, .msg = &m },
    };
    int hits[2] = { 0, 0 }, i, r;

    for (i = 0; i < 1000; i++) {
        chan_send(a, "a", 1, 0);
        chan_send(b, "b", 1, 0);
    }
    for (i = 0; i < 1000; i++) {
        r = chan_select(cs, 2, 0);
        ck_assert(r == 0 || r == 1);
        hits[r]++;
        chan_msg_free(&m);
    }
    /* Binomial(1000, 0.5): outside 400..600 happens with p < 1e-9. */
    ck_assert_int_gt(hits[0], 400);
    ck_assert_int_gt(hits[1], 400);
    chan_free(a);
    chan_free(b);
}
END_TEST

/* ---- argument errors -------------------------------------------------- */

START_TEST(test_bad_arguments_are_einval)
{
    chan_t *ch = chan_make(1);
    chan_msg_t m;
    struct chan_case c = { .ch = ch, .op = 7 };

    ck_assert_int_eq(chan_send(NULL, "x", 1, 0), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(chan_send(ch, NULL, 3, 0), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(chan_send(ch, "x", 1, -2), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(chan_recv(ch, NULL, 0), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(chan_recv(NULL, &m, 0), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(chan_close(NULL), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(chan_len(NULL), -1);
    ck_assert_int_eq(chan_cap(NULL), -1);
    ck_assert_int_eq(chan_select(&c, 1, 0), -1);
    ck_assert_int_eq(errno, EINVAL);
    c.op = CHAN_RECV; /* recv case without a msg */
    ck_assert_int_eq(chan_select(&c, 1, 0), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(chan_select(NULL, 1, 0), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(chan_select(&c, -1, 0), -1);
    ck_assert_int_eq(errno, EINVAL);
    chan_free(NULL);
    chan_free(ch);
}
END_TEST

/* ---- message blocks of every size ------------------------------------ */

/*
 * Sizes 0..SIZES_MAX cross every block size class of the library's cache
 * and its upper bound, so blocks of one class are reused for messages of
 * another size only within the class. Each payload's bytes depend on its
 * size and a round number, so a reused block that kept stale bytes, was
 * handed out twice, or is too short for its message shows up.
 */
#define SIZES_MAX 2000
#define SIZES (SIZES_MAX + 1)
#define SIZES_STRIDE 7919 /* prime, not a factor of SIZES: i * STRIDE % SIZES is a permutation */

static unsigned char size_byte(size_t size, size_t j, int round)
{
    return (unsigned char)(j * 131 + size * 7 + (size_t)round * 29 + 1);
}

static void size_fill(unsigned char *buf, size_t size, int round)
{
    for (size_t j = 0; j < size; j++)
        buf[j] = size_byte(size, j, round);
}

/* Every byte of m is the payload of a message of size bytes sent in round. */
static void size_check(const chan_msg_t *m, size_t size, int round)
{
    const unsigned char *p = m->data;
    size_t j;

    ck_assert_uint_eq(m->len, size);
    /* callers cast the payload to their own types, as they would a malloc'd block */
    ck_assert_uint_eq((uintptr_t)m->data % _Alignof(max_align_t), 0);
    for (j = 0; j < size && p[j] == size_byte(size, j, round); j++)
        ;
    ck_assert_msg(j == size, "size %zu round %d: byte %zu differs", size, round, j);
    ck_assert_int_eq(p[size], '\0');
}

/* Send sizes 0..SIZES_MAX in order on ch (cap 0 or more), for a coroutine. */
struct size_sender {
    chan_t *ch;
    int round;
    int failed;
};

static void size_sender_fn(void *arg)
{
    struct size_sender *ss = arg;
    unsigned char buf[SIZES_MAX];

    for (size_t size = 0; size < SIZES; size++) {
        size_fill(buf, size, ss->round);
        if (chan_send(ss->ch, buf, size, -1) != 0)
            ss->failed = 1;
    }
}

START_TEST(test_buffered_messages_of_every_size_keep_their_bytes)
{
    chan_t *ch = chan_make(SIZES);
    chan_msg_t *msgs = calloc(SIZES, sizeof *msgs);
    unsigned char buf[SIZES_MAX];
    int round;

    ck_assert_ptr_nonnull(ch);
    ck_assert_ptr_nonnull(msgs);
    /* Round 0 fills the cache from malloc; later rounds take its blocks back. */
    for (round = 0; round < 3; round++) {
        size_t size, got = 0;

        for (size = 0; size < SIZES; size++) {
            size_fill(buf, size, round);
            if (size % 3 == 1) {
                struct chan_case c = { .ch = ch, .op = CHAN_SEND, .data = buf, .len = size };

                ck_assert_int_eq(chan_select(&c, 1, 0), 0);
                ck_assert_int_eq(c.result, 0);
            } else {
                ck_assert_int_eq(chan_send(ch, buf, size, 0), 0);
            }
        }
        ck_assert_int_eq(chan_len(ch), SIZES);
        while (got < SIZES) {
            /* chan_recv_many clears all n slots it is given, so never more than are left */
            int want = got % 2 ? 5 : 1, n;

            if ((size_t)want > SIZES - got)
                want = (int)(SIZES - got);
            n = chan_recv_many(ch, &msgs[got], want, 0);

            ck_assert_int_ge(n, 1);
            got += (size_t)n;
        }
        for (size = 0; size < SIZES; size++)
            size_check(&msgs[size], size, round);
        /* freed in an order unrelated to the sizes and the allocations */
        for (size_t i = 0; i < SIZES; i++) {
            chan_msg_t *m = &msgs[(i * SIZES_STRIDE + (size_t)round) % SIZES];

            ck_assert_ptr_nonnull(m->data);
            chan_msg_free(m);
            ck_assert_ptr_null(m->data);
        }
    }
    free(msgs);
    chan_free(ch);
}
END_TEST

START_TEST(test_unbuffered_messages_of_every_size_keep_their_bytes)
{
    chan_t *ch = chan_make(0);
    chan_msg_t *kept = calloc(SIZES, sizeof *kept);
    int round;

    ck_assert_ptr_nonnull(ch);
    ck_assert_ptr_nonnull(kept);
    for (round = 0; round < 2; round++) {
        struct size_sender ss = { ch, round, 0 };
        int id = chan_go(size_sender_fn, &ss);
        size_t size, nkept = 0;

        ck_assert_int_gt(id, 0);
        for (size = 0; size < SIZES; size++) {
            chan_msg_t m;

            ck_assert_int_eq(chan_recv(ch, &m, -1), 1);
            size_check(&m, size, round);
            /* every third one is held to the end, the rest go at once */
            if (size % 3 == 0)
                kept[nkept++] = m;
            else
                chan_msg_free(&m);
        }
        ck_assert_int_eq(chan_join(id, -1), 0);
        ck_assert_int_eq(ss.failed, 0);
        while (nkept > 0) {
            chan_msg_t *m = &kept[--nkept];

            size_check(m, nkept * 3, round);
            chan_msg_free(m);
        }
    }
    free(kept);
    chan_free(ch);
}
END_TEST

#define LEASES_HELD 4

START_TEST(test_leased_messages_of_every_size_keep_their_bytes)
{
    chan_t *ch = chan_make(LEASES_HELD);
    struct size_sender ss = { ch, 5, 0 };
    chan_msg_t held[LEASES_HELD];
    int id, nheld = 0, nacks = 0;
    size_t size;

    ck_assert_ptr_nonnull(ch);
    id = chan_go(size_sender_fn, &ss);
    ck_assert_int_gt(id, 0);
    for (size = 0; size < SIZES; size++) {
        chan_msg_t *m = &held[nheld];

        ck_assert_int_eq(chan_recv_lease(ch, m, 60000, -1), 1);
        size_check(m, size, ss.round);
        ck_assert_uint_eq(m->deliveries, 1);
        if (size % 5 == 2) {
            /* given back: it comes again, first, with deliveries 2 */
            ck_assert_int_eq(chan_nack(m), 0);
            chan_msg_free(m);
            ck_assert_int_eq(chan_recv_lease(ch, m, 60000, -1), 1);
            size_check(m, size, ss.round);
            ck_assert_uint_eq(m->deliveries, 2);
        }
        if (++nheld == LEASES_HELD) {
            /* settle oldest first, free newest first */
            for (int i = 0; i < nheld; i++, nacks++)
                ck_assert_int_eq(chan_ack(&held[i]), 0);
            while (nheld > 0) {
                chan_msg_t *h = &held[--nheld];

                size_check(h, size - (size_t)(LEASES_HELD - 1 - nheld), ss.round);
                chan_msg_free(h);
            }
        }
    }
    for (int i = 0; i < nheld; i++, nacks++) {
        ck_assert_int_eq(chan_ack(&held[i]), 0);
        chan_msg_free(&held[i]);
    }
    ck_assert_int_eq(nacks, SIZES);
    ck_assert_int_eq(chan_join(id, -1), 0);
    ck_assert_int_eq(ss.failed, 0);
    ck_assert_int_eq(chan_len(ch), 0);
    chan_free(ch);
}
END_TEST

/* ---- cost ------------------------------------------------------------ */

#define PINGS 200000

static void ponger_fn(void *arg)
{
    chan_t **ch = arg;
    chan_msg_t m;

    while (chan_recv(ch[0], &m, -1) == 1) {
        chan_send(ch[1], m.data, m.len, -1);
        chan_msg_free(&m);
    }
}

START_TEST(test_measure_unbuffered_handoff)
{
    chan_t *ch[2] = { chan_make(0), chan_make(0) };
    chan_msg_t m;
    int id = chan_go(ponger_fn, ch);
    int64_t t0 = now_ns();
    double ns;
    int i, bad = 0;

    /* No ck_assert in the timed loop: each one costs a write to Check's pipe. */
    for (i = 0; i < PINGS; i++) {
        bad += chan_send(ch[0], "ping", 4, -1) != 0;
        bad += chan_recv(ch[1], &m, -1) != 1;
        chan_msg_free(&m);
    }
    ns = (double)(now_ns() - t0) / (2.0 * PINGS);
    ck_assert_int_eq(bad, 0);
    chan_close(ch[0]);
    ck_assert_int_eq(chan_join(id, -1), 0);
    printf("local: unbuffered hand-off %.0f ns (ping-pong, %d round trips)\n", ns, PINGS);
    ck_assert_double_lt(ns, 100000.0);
    chan_free(ch[0]);
    chan_free(ch[1]);
}
END_TEST

static Suite *local_suite(void)
{
    Suite *s = suite_create("local");
    TCase *tc;

    tc = tcase_create("basics");
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_unbuffered_send_completes_only_when_received);
    tcase_add_test(tc, test_buffered_channel_is_fifo_and_counts);
    tcase_add_test(tc, test_zero_length_message_is_a_message);
    tcase_add_test(tc, test_message_over_1mib_is_emsgsize);
    tcase_add_test(tc, test_close_wakes_receivers_and_drains_buffer);
    tcase_add_test(tc, test_bad_arguments_are_einval);
    suite_add_tcase(s, tc);

    tc = tcase_create("deadlines_cancel");
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_recv_and_send_time_out_never_early);
    tcase_add_test(tc, test_cancel_withdraws_a_blocked_receiver_at_once);
    tcase_add_test(tc, test_cancelled_send_is_not_delivered);
    tcase_add_test(tc, test_cancelled_coroutine_cannot_touch_a_channel);
    suite_add_tcase(s, tc);

    tc = tcase_create("select");
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_select_picks_a_ready_case);
    tcase_add_test(tc, test_select_blocks_until_a_case_proceeds);
    tcase_add_test(tc, test_select_times_out_and_withdraws);
    tcase_add_test(tc, test_select_is_roughly_fair);
    suite_add_tcase(s, tc);

    tc = tcase_create("sizes");
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_buffered_messages_of_every_size_keep_their_bytes);
    tcase_add_test(tc, test_unbuffered_messages_of_every_size_keep_their_bytes);
    tcase_add_test(tc, test_leased_messages_of_every_size_keep_their_bytes);
    suite_add_tcase(s, tc);

    tc = tcase_create("cost");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_measure_unbuffered_handoff);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(local_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
