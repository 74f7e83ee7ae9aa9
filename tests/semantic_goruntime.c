/*
 * semantic_goruntime.c: the checks of Go's src/runtime/chan_test.go,
 * restated in C over chan_t so that local and remote channels must pass
 * what Go's runtime channels pass.
 *
 * Ported: TestChan, TestNonblockRecvRace, TestNonblockSelectRace and
 * TestNonblockSelectRace2, TestSelfSelect, TestSelectStress,
 * TestSelectFairness, TestChanSendInterface, TestPseudoRandomSend,
 * TestMultiConsumer, TestSelectDuplicateChannel; BenchmarkChanClosed's
 * check (recv on a closed channel never blocks) is in semantic_gochan.c's
 * select3 table.
 *
 * Skipped, with the reason:
 *   TestShrinkStackDuringBlockedSend, TestNoShrinkStackWhileParking,
 *   TestSelectStackAdjust  Go GC stack shrinking.
 *   Benchmark*            timing only.
 */
#include <math.h>
#include <stdlib.h>

#include "semantic.h"

/* ---- runtime TestChan --------------------------------------------------- */

struct flag_recv {
    chan_t *c;
    int done;
};

static void goruntime_flag_recv(void *arg)
{
    struct flag_recv *f = arg;
    long v;

    ck_assert_int_ge(sem_recv_int(f->c, &v, -1), 0);
    f->done = 1;
}

/* Send 0..n-1 on c. */
struct range {
    chan_t *c;
    long n;
};

static void goruntime_send_range(void *arg)
{
    struct range *p = arg;

    for (long i = 0; i < p->n; i++)
        ck_assert_int_eq(sem_send_int(p->c, i, -1), 0);
}

struct tally {
    chan_t *c;
    long n;
    long *counts; /* counts[v] += 1 per received v; shared */
};

static void goruntime_tally(void *arg)
{
    struct tally *t = arg;
    long v;

    for (long i = 0; i < t->n; i++) {
        ck_assert_int_eq(sem_recv_int(t->c, &v, -1), 1);
        ck_assert(v >= 0 && v < t->n);
        t->counts[v]++;
    }
}

START_TEST(test_go_runtime_chan_basic_behaviour_for_many_capacities)
{
    const long ncap = sem_scale(20, 8);

    for (long cap = 0; cap < ncap; cap++) {
        long v;

        /* recv from an empty channel blocks; a nonblocking one does not. */
        {
            chan_t *c = sem_mk((size_t)cap);
            struct flag_recv r1 = {.c = c}, r2 = {.c = c};
            struct chan_case cs[1];
            chan_msg_t m;
            int a = sem_go(goruntime_flag_recv, &r1), b = sem_go(goruntime_flag_recv, &r2);

            sem_settle(c, 0, 2);
            ck_assert_msg(!r1.done && !r2.done, "cap %ld: recv from empty channel returned", cap);
            sem_case_recv(&cs[0], c, &m);
            SEM_FAILS(chan_select(cs, 1, 0), EAGAIN);
            SEM_RETURNS(sem_send_int(c, 0, sem_in(5000)), 0);
            SEM_RETURNS(sem_send_int(c, 0, sem_in(5000)), 0);
            sem_join(a, 5000);
            sem_join(b, 5000);
        }
        /* send to a full channel blocks; a nonblocking one does not. */
        {
            chan_t *c = sem_mk((size_t)cap);
            struct sem_op s = {.ch = c, .deadline = -1};
            struct chan_case cs[1];
            int64_t zero = 0;

            for (long i = 0; i < cap; i++)
                SEM_RETURNS(sem_send_int(c, i, -1), 0);
            int a = sem_go(sem_op_send, &s);
            sem_settle(c, 1, 0);
            ck_assert_msg(!s.done, "cap %ld: send to full channel returned", cap);
            sem_case_send(&cs[0], c, &zero, sizeof zero);
            SEM_FAILS(chan_select(cs, 1, 0), EAGAIN);
            SEM_RETURNS(sem_recv_int(c, &v, sem_in(5000)), 1);
            sem_join(a, 5000);
        }
        /* a closed channel yields its buffer, then "closed" again and again. */
        {
            chan_t *c = sem_mk((size_t)cap);
            for (long i = 0; i < cap; i++)
                SEM_RETURNS(sem_send_int(c, i, -1), 0);
            SEM_RETURNS(chan_close(c), 0);
            for (long i = 0; i < cap; i++) {
                SEM_RETURNS(sem_recv_int(c, &v, -1), 1);
                ck_assert_int_eq(v, i);
            }
            SEM_RETURNS(sem_recv_int(c, &v, -1), 0);
            SEM_RETURNS(sem_recv_int(c, &v, -1), 0);
        }
        /* close unblocks a receiver. */
        {
            chan_t *c = sem_mk((size_t)cap);
            struct sem_op r = {.ch = c, .v = -1, .deadline = -1};
            int a = sem_go(sem_op_recv, &r);
            sem_settle(c, 0, 1);
            SEM_RETURNS(chan_close(c), 0);
            sem_join(a, 5000);
            ck_assert_int_eq(r.ret, 0);
        }
        /* 100 values in FIFO order, then P senders and P receivers of L values each. */
        {
            const long l = sem_scale(1000, 200);
            enum { P = 4 };
            chan_t *c = sem_mk((size_t)cap);
            struct range pr = {c, 100}, prs[P];
            struct tally t[P];
            long *counts = calloc((size_t)l, sizeof *counts);
            struct sem_group g = {0};

            ck_assert(counts != NULL);
            for (int round = 0; round < 2; round++) {
                int a = sem_go(goruntime_send_range, &pr);
                for (long i = 0; i < 100; i++) {
                    SEM_RETURNS(sem_recv_int(c, &v, sem_in(5000)), 1);
                    ck_assert_msg(v == i, "cap %ld: received %ld, want %ld", cap, v, i);
                }
                sem_join(a, 5000);
            }
            for (int p = 0; p < P; p++) {
                prs[p].c = c;
                prs[p].n = l;
                sem_group_go(&g, goruntime_send_range, &prs[p]);
                t[p] = (struct tally){.c = c, .n = l, .counts = counts};
                sem_group_go(&g, goruntime_tally, &t[p]);
            }
            sem_group_join(&g, sem_in(sem_scale(10000, 60000)));
            for (long i = 0; i < l; i++)
                ck_assert_msg(counts[i] == P, "cap %ld: value %ld received %ld times, want %d",
                              cap, i, counts[i], P);
            free(counts);
        }
        /* len and cap. */
        {
            chan_t *c = sem_mk((size_t)cap);
            SEM_RETURNS(chan_len(c), 0);
            SEM_RETURNS(chan_cap(c), cap);
            for (long i = 0; i < cap; i++)
                SEM_RETURNS(sem_send_int(c, i, -1), 0);
            SEM_RETURNS(chan_len(c), cap);
            SEM_RETURNS(chan_cap(c), cap);
        }
    }
}
END_TEST

/* ---- runtime TestNonblockRecvRace, TestNonblockSelectRace(2) ----------- */

static void goruntime_must_recv_now(void *arg)
{
    struct chan_case cs[1];
    chan_msg_t m;

    sem_case_recv(&cs[0], arg, &m);
    int got = chan_select(cs, 1, 0);
    ck_assert_msg(got == 0, "a ready channel refused a nonblocking recv: %s", strerror(errno));
    chan_msg_free(&m);
}

START_TEST(test_go_nonblocking_recv_sees_a_ready_channel_while_it_closes)
{
    const long n = sem_scale(1000, 200);
    long v;

    for (long i = 0; i < n; i++) {
        chan_t *c = sem_mk(1);
        SEM_RETURNS(sem_send_int(c, 1, 0), 0);
        int cr = sem_go(goruntime_must_recv_now, c);
        SEM_RETURNS(chan_close(c), 0);
        ck_assert_int_ge(sem_recv_int(c, &v, sem_in(5000)), 0);
        sem_join(cr, 5000);
    }
}
END_TEST

struct nbsel {
    chan_t *c1, *c2, *done;
};

static void goruntime_nbsel(void *arg)
{
    struct nbsel *s = arg;
    struct chan_case cs[2];
    chan_msg_t m[2];

    sem_case_recv(&cs[0], s->c1, &m[0]);
    sem_case_recv(&cs[1], s->c2, &m[1]);
    int got = chan_select(cs, 2, 0);
    if (got >= 0)
        chan_msg_free(&m[got]);
    ck_assert_int_eq(sem_send_int(s->done, got >= 0, -1), 0);
}

START_TEST(test_go_nonblocking_select_acts_on_one_moment)
{
    const long n = sem_scale(1000, 200);
    chan_t *done = sem_mk(1);
    long ok;

    for (int variant = 0; variant < 2; variant++) {
        for (long i = 0; i < n; i++) {
            struct nbsel s = {.c1 = sem_mk(1), .c2 = sem_mk(variant ? 0 : 1), .done = done};
            struct chan_case cs[1];
            chan_msg_t m;

            SEM_RETURNS(sem_send_int(s.c1, 1, 0), 0);
            int cr = sem_go(goruntime_nbsel, &s);
            if (variant)
                SEM_RETURNS(chan_close(s.c2), 0);
            else
                SEM_RETURNS(sem_send_int(s.c2, 1, -1), 0);
            sem_case_recv(&cs[0], s.c1, &m);
            if (chan_select(cs, 1, 0) == 0)
                chan_msg_free(&m);
            SEM_RETURNS(sem_recv_int(done, &ok, sem_in(5000)), 1);
            ck_assert_msg(ok, "round %ld: neither channel was ready to the select", i);
            sem_join(cr, 5000);
        }
    }
}
END_TEST

/* ---- runtime TestSelfSelect --------------------------------------------- */

struct selfsel {
    chan_t *c;
    long p, iters;
    int unbuffered;
};

static void goruntime_selfsel(void *arg)
{
    struct selfsel *s = arg;

    for (long i = 0; i < s->iters; i++) {
        struct chan_case cs[2];
        chan_msg_t m;
        int64_t w = s->p;
        int send_first = s->p == 0 || i % 2 == 0;

        sem_case_send(&cs[send_first ? 0 : 1], s->c, &w, sizeof w);
        sem_case_recv(&cs[send_first ? 1 : 0], s->c, &m);
        int got = chan_select(cs, 2, sem_in(10000));
        ck_assert_msg(got >= 0, "self select: %s", strerror(errno));
        if (cs[got].op == CHAN_RECV) {
            long v = sem_msg_int(&m);
            chan_msg_free(&m);
            ck_assert_msg(!(s->unbuffered && v == s->p), "coroutine %ld received its own send",
                          s->p);
        }
    }
}

START_TEST(test_go_self_select_never_receives_its_own_send)
{
    static const size_t caps[] = {0, 10};

    for (int k = 0; k < 2; k++) {
        chan_t *c = sem_mk(caps[k]);
        struct selfsel s[2];
        struct sem_group g = {0};

        for (int p = 0; p < 2; p++) {
            s[p] = (struct selfsel){.c = c, .p = p, .iters = sem_scale(1000, 300),
                                    .unbuffered = caps[k] == 0};
            sem_group_go(&g, goruntime_selfsel, &s[p]);
        }
        sem_group_join(&g, sem_in(sem_scale(10000, 60000)));
    }
}
END_TEST

/* ---- runtime TestSelectStress ------------------------------------------- */

struct stress {
    chan_t *c[4];
    long n;
};

struct stress_one {
    struct stress *s;
    int k;
};

static void goruntime_stress_send(void *arg)
{
    struct stress_one *o = arg;
    for (long i = 0; i < o->s->n; i++)
        ck_assert_int_eq(sem_send_int(o->s->c[o->k], 0, -1), 0);
}

static void goruntime_stress_recv(void *arg)
{
    struct stress_one *o = arg;
    long v;
    for (long i = 0; i < o->s->n; i++)
        ck_assert_int_eq(sem_recv_int(o->s->c[o->k], &v, -1), 1);
}

/* One select over all four channels, each switched off after n operations. */
static void goruntime_stress_select(void *arg, int op)
{
    struct stress *s = arg;
    chan_t *c1[4];
    long n[4] = {0, 0, 0, 0};
    static const int order_send[4] = {3, 2, 0, 1};

    memcpy(c1, s->c, sizeof c1);
    for (long i = 0; i < 4 * s->n; i++) {
        struct chan_case cs[4];
        chan_msg_t m[4];
        int64_t zero = 0;
        for (int j = 0; j < 4; j++) {
            int k = op == CHAN_SEND ? order_send[j] : j;
            if (op == CHAN_SEND)
                sem_case_send(&cs[j], c1[k], &zero, sizeof zero);
            else
                sem_case_recv(&cs[j], c1[k], &m[j]);
        }
        int got = chan_select(cs, 4, -1);
        ck_assert_msg(got >= 0, "stress select: %s", strerror(errno));
        if (op == CHAN_RECV) {
            ck_assert_int_eq(cs[got].result, 1);
            chan_msg_free(&m[got]);
        }
        int k = op == CHAN_SEND ? order_send[got] : got;
        if (++n[k] == s->n)
            c1[k] = NULL;
    }
}

static void goruntime_stress_select_send(void *arg)
{
    goruntime_stress_select(arg, CHAN_SEND);
}

static void goruntime_stress_select_recv(void *arg)
{
    goruntime_stress_select(arg, CHAN_RECV);
}

START_TEST(test_go_select_stress_does_not_deadlock)
{
    struct stress s = {.c = {sem_mk(0), sem_mk(0), sem_mk(2), sem_mk(3)},
                       .n = sem_scale(10000, 2000)};
    struct stress_one one[4];
    struct sem_group g = {0};

    for (int k = 0; k < 4; k++) {
        one[k] = (struct stress_one){.s = &s, .k = k};
        sem_group_go(&g, goruntime_stress_send, &one[k]);
        sem_group_go(&g, goruntime_stress_recv, &one[k]);
    }
    sem_group_go(&g, goruntime_stress_select_send, &s);
    sem_group_go(&g, goruntime_stress_select_recv, &s);
    sem_group_join(&g, sem_in(sem_scale(30000, 90000)));
    for (int k = 0; k < 4; k++)
        SEM_RETURNS(chan_len(s.c[k]), 0);
}
END_TEST

/* ---- runtime TestSelectFairness ----------------------------------------- */

struct fair {
    chan_t *c1, *c2, *c3, *c4, *out, *done;
};

static void goruntime_fair_forwarder(void *arg)
{
    struct fair *f = arg;

    for (;;) {
        struct chan_case cs[4], os[2];
        chan_msg_t m[4], dm;

        sem_case_recv(&cs[0], f->c3, &m[0]);
        sem_case_recv(&cs[1], f->c4, &m[1]);
        sem_case_recv(&cs[2], f->c1, &m[2]);
        sem_case_recv(&cs[3], f->c2, &m[3]);
        int got = chan_select(cs, 4, -1);
        ck_assert_msg(got >= 0 && cs[got].result == 1, "fairness select: %s", strerror(errno));
        long b = sem_msg_int(&m[got]);
        chan_msg_free(&m[got]);
        int64_t w = b;
        sem_case_send(&os[0], f->out, &w, sizeof w);
        sem_case_recv(&os[1], f->done, &dm);
        if (chan_select(os, 2, -1) != 0)
            return;
    }
}

START_TEST(test_go_select_fairness_between_two_ready_channels)
{
    const long trials = sem_scale(10000, 3000);
    struct fair f = {.c1 = sem_mk((size_t)trials + 1), .c2 = sem_mk((size_t)trials + 1),
                     .c3 = sem_mk(0), .c4 = sem_mk(0), .out = sem_mk(0), .done = sem_mk(0)};
    long cnt1 = 0, cnt2 = 0, b;

    for (long i = 0; i < trials + 1; i++) {
        SEM_RETURNS(sem_send_int(f.c1, 1, 0), 0);
        SEM_RETURNS(sem_send_int(f.c2, 2, 0), 0);
    }
    int cr = sem_go(goruntime_fair_forwarder, &f);
    for (long i = 0; i < trials; i++) {
        SEM_RETURNS(sem_recv_int(f.out, &b, sem_in(5000)), 1);
        if (b == 1)
            cnt1++;
        else if (b == 2)
            cnt2++;
        else
            ck_abort_msg("unexpected value %ld", b);
    }
    /*
     * A fair choice makes cnt1 binomial(trials, 1/2). Go allows 10 sigma
     * for systematic bias; 6 sigma is stricter and still fails a fair
     * select only about once in 10^9 runs.
     */
    double sd = sqrt((double)trials * 0.25);
    ck_assert_msg(fabs((double)cnt1 - (double)trials / 2) <= 6 * sd,
                  "unfair select: %ld and %ld in %ld trials (6 sigma = %.0f)", cnt1, cnt2, trials,
                  6 * sd);
    SEM_RETURNS(chan_close(f.done), 0);
    sem_join(cr, 5000);
}
END_TEST

/* ---- runtime TestChanSendInterface -------------------------------------- */

START_TEST(test_go_nonblocking_select_sends_to_a_full_channel_do_nothing)
{
    chan_t *c = sem_mk(1);
    struct chan_case cs[2];
    int64_t m1 = 1, m2 = 2;
    long v;

    SEM_RETURNS(sem_send_int(c, 1, -1), 0);
    sem_case_send(&cs[0], c, &m1, sizeof m1);
    SEM_FAILS(chan_select(cs, 1, 0), EAGAIN);
    sem_case_send(&cs[0], c, &m1, sizeof m1);
    sem_case_send(&cs[1], c, &m2, sizeof m2);
    SEM_FAILS(chan_select(cs, 2, 0), EAGAIN);
    SEM_RETURNS(chan_len(c), 1);
    SEM_RETURNS(sem_recv_int(c, &v, 0), 1);
    ck_assert_int_eq(v, 1);
}
END_TEST

/* ---- runtime TestPseudoRandomSend --------------------------------------- */

struct collect {
    chan_t *c;
    long n, *l;
};

static void goruntime_collect(void *arg)
{
    struct collect *o = arg;

    for (long i = 0; i < o->n; i++) {
        chan_yield();
        ck_assert_int_eq(sem_recv_int(o->c, &o->l[i], -1), 1);
    }
}

START_TEST(test_go_select_between_two_sends_on_one_channel_is_random)
{
    enum { N = 100 };

    for (int k = 0; k < 2; k++) {
        chan_t *c = sem_mk(k ? N : 0);
        long l[N];
        struct collect o = {.c = c, .n = N, .l = l};
        long n0 = 0, n1 = 0;
        int64_t one = 1, zero = 0;

        int cr = sem_go(goruntime_collect, &o);
        for (int i = 0; i < N; i++) {
            struct chan_case cs[2];
            sem_case_send(&cs[0], c, &one, sizeof one);
            sem_case_send(&cs[1], c, &zero, sizeof zero);
            SEM_RETURNS(chan_select(cs, 2, sem_in(5000)) >= 0, 1);
        }
        sem_join(cr, 5000);
        for (int i = 0; i < N; i++) {
            n0 += l[i] == 0;
            n1 += l[i] == 1;
        }
        ck_assert_int_eq(n0 + n1, N);
        ck_assert_msg(n0 > N / 10 && n1 > N / 10,
                      "want pseudorandom, got %ld zeros and %ld ones (cap %d)", n0, n1, k ? N : 0);
    }
}
END_TEST

/* ---- runtime TestMultiConsumer ------------------------------------------ */

static const long goruntime_pn[] = {2, 3, 7, 11, 13, 17, 19, 23, 27, 31};

struct mc {
    chan_t *q, *r;
    long niter, expect;
    int workers_left; /* the last worker closes r */
};

struct mc_worker {
    struct mc *m;
    chan_t *q, *r; /* its handles: odd workers use the peer connection */
    int w;
};

static void goruntime_mc_worker(void *arg)
{
    struct mc_worker *x = arg;
    long v;

    while (sem_recv_int(x->q, &v, -1) == 1) {
        if (goruntime_pn[x->w % 10] == v)
            chan_yield();
        ck_assert_int_eq(sem_send_int(x->r, v, -1), 0);
    }
    if (--x->m->workers_left == 0)
        ck_assert_int_eq(chan_close(x->r), 0);
}

static void goruntime_mc_feeder(void *arg)
{
    struct mc *m = arg;

    for (long i = 0; i < m->niter; i++) {
        long v = goruntime_pn[i % 10];
        m->expect += v;
        ck_assert_int_eq(sem_send_int(m->q, v, -1), 0);
    }
    ck_assert_int_eq(chan_close(m->q), 0);
}

START_TEST(test_go_multi_consumer_sees_every_value_once)
{
    enum { NWORK = 23 };
    struct mc m = {.q = sem_mk(NWORK * 3), .r = sem_mk(NWORK * 3),
                   .niter = sem_scale(100000, 20000), .workers_left = NWORK};
    struct mc_worker w[NWORK];
    struct sem_group g = {0};
    long n = 0, s = 0, v;
    int r;

    for (int i = 0; i < NWORK; i++) {
        w[i] = (struct mc_worker){.m = &m, .q = i % 2 ? sem_peer(m.q) : m.q,
                                  .r = i % 2 ? sem_peer(m.r) : m.r, .w = i};
        sem_group_go(&g, goruntime_mc_worker, &w[i]);
    }
    sem_group_go(&g, goruntime_mc_feeder, &m);
    while ((r = sem_recv_int(m.r, &v, sem_in(10000))) == 1) {
        n++;
        s += v;
    }
    ck_assert_msg(r == 0, "recv of results: %s", strerror(errno));
    ck_assert_msg(n == m.niter && s == m.expect, "expected sum %ld (got %ld) from %ld iter (saw %ld)",
                  m.expect, s, m.niter, n);
    sem_group_join(&g, sem_in(5000));
}
END_TEST

/* ---- runtime TestSelectDuplicateChannel --------------------------------- */

struct dupc {
    chan_t *c, *d, *e;
};

static void goruntime_dup_a(void *arg)
{
    struct dupc *x = arg;
    struct chan_case cs[3];
    chan_msg_t m[3];

    sem_case_recv(&cs[0], x->c, &m[0]);
    sem_case_recv(&cs[1], x->c, &m[1]);
    sem_case_recv(&cs[2], x->d, &m[2]);
    int got = chan_select(cs, 3, -1);
    ck_assert_msg(got == 2, "select took case %d, want the d case", got);
    chan_msg_free(&m[got]);
    ck_assert_int_eq(sem_send_int(x->e, 9, -1), 0);
}

static void goruntime_dup_b(void *arg)
{
    long v;
    ck_assert_int_eq(sem_recv_int(((struct dupc *)arg)->c, &v, -1), 1);
    ck_assert_int_eq(v, 8);
}

START_TEST(test_go_select_queued_twice_on_one_channel_leaves_it_intact)
{
    struct dupc x = {.c = sem_mk(0), .d = sem_mk(0), .e = sem_mk(0)};
    long before_s = 0, before_r = 0, v;

    int a = sem_go(goruntime_dup_a, &x);
    sem_settle(x.d, 0, 1);
    int remote = sem_waiters(x.c, &before_s, &before_r) == 0;
    int b = sem_go(goruntime_dup_b, &x);
    sem_settle(x.c, 0, remote ? before_r + 1 : -1);
    SEM_RETURNS(sem_send_int(x.d, 7, sem_in(5000)), 0);
    SEM_RETURNS(sem_recv_int(x.e, &v, sem_in(5000)), 1);
    SEM_RETURNS(sem_send_int(x.c, 8, sem_in(5000)), 0);
    sem_join(a, 5000);
    sem_join(b, 5000);
}
END_TEST

void semantic_goruntime_add(Suite *s, double timeout)
{
    TCase *tc;

    tc = tcase_create("go_runtime");
    tcase_add_checked_fixture(tc, sem_env_setup, sem_env_teardown);
    tcase_set_timeout(tc, timeout);
    tcase_add_test(tc, test_go_runtime_chan_basic_behaviour_for_many_capacities);
    tcase_add_test(tc, test_go_nonblocking_recv_sees_a_ready_channel_while_it_closes);
    tcase_add_test(tc, test_go_nonblocking_select_acts_on_one_moment);
    tcase_add_test(tc, test_go_self_select_never_receives_its_own_send);
    tcase_add_test(tc, test_go_select_stress_does_not_deadlock);
    tcase_add_test(tc, test_go_select_fairness_between_two_ready_channels);
    tcase_add_test(tc, test_go_nonblocking_select_sends_to_a_full_channel_do_nothing);
    tcase_add_test(tc, test_go_select_between_two_sends_on_one_channel_is_random);
    tcase_add_test(tc, test_go_multi_consumer_sees_every_value_once);
    tcase_add_test(tc, test_go_select_queued_twice_on_one_channel_leaves_it_intact);
    suite_add_tcase(s, tc);
}
