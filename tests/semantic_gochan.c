/*
 * semantic_gochan.c: the checks of Go's test/chan programs, restated
 * in C over chan_t so that local and remote channels must pass what Go's
 * channels pass. Messages carry an 8-byte integer unless a test needs
 * other sizes.
 *
 * Ported: fifo, goroutines, nonblock, select, select3, select4, select5 (the
 * enumeration, as a loop), select6, select7, sendstmt (channel of
 * channels), doubleselect, sieve1, sieve2, zerosize; powser1 lives in
 * semantic_powser.c.
 *
 * Skipped, with the reason:
 *   select2.go            measures Go heap growth (runtime.MemStats).
 *   select.go's counter   counts Go's evaluation of case expressions.
 *   select3.go nil ops    send/recv on a nil channel outside select block in
 *                         Go; in C a NULL handle is a bad argument.
 *   select5.go order      checks Go's left-to-right evaluation order.
 *   select8.go            break statements inside select (syntax).
 *   sendstmt.go sendprec  operator precedence of the send statement.
 *   perm.go               compile-time channel direction errors.
 *   sieve.go              prints forever, checks nothing.
 *   powser2.go            powser1 again, through Go interfaces.
 */
#include <stdlib.h>

#include "semantic.h"


/* ---- test/chan/fifo.go -------------------------------------------------- */

START_TEST(test_go_fifo_buffered_channel_is_a_fifo)
{
    enum { N = 10 };
    chan_t *c = sem_mk(N);
    long v;

    for (long i = 0; i < N; i++)
        SEM_RETURNS(sem_send_int(c, i, -1), 0);
    for (long i = 0; i < N; i++) {
        SEM_RETURNS(sem_recv_int(c, &v, -1), 1);
        ck_assert_int_eq(v, i);
    }
}
END_TEST

/* One link of the daisy chain: wait for the turn, take one value, pass the turn. */
struct fifo_link {
    chan_t *ch, *in, *out;
    long want;
};

static void gochan_fifo_link(void *arg)
{
    struct fifo_link *l = arg;
    long v;

    ck_assert_int_eq(sem_recv_int(l->in, &v, -1), 1);
    ck_assert_int_eq(sem_recv_int(l->ch, &v, -1), 1);
    ck_assert_msg(v == l->want, "link %ld received %ld", l->want, v);
    ck_assert_int_eq(sem_send_int(l->out, 1, -1), 0);
}

START_TEST(test_go_fifo_unbuffered_channel_serves_a_daisy_chain_in_order)
{
    enum { N = 10 };
    chan_t *ch = sem_mk(0), *in = sem_mk(0), *start = in;
    struct fifo_link links[N];
    struct sem_group g = {0};
    long v;

    for (long i = 0; i < N; i++) {
        chan_t *out = sem_mk(0);
        links[i] = (struct fifo_link){.ch = ch, .in = in, .out = out, .want = i};
        sem_group_go(&g, gochan_fifo_link, &links[i]);
        in = out;
    }
    SEM_RETURNS(sem_send_int(start, 0, -1), 0);
    for (long i = 0; i < N; i++)
        SEM_RETURNS(sem_send_int(ch, i, -1), 0);
    SEM_RETURNS(sem_recv_int(in, &v, -1), 1);
    sem_group_join(&g, sem_in(5000));
}
END_TEST

/* ---- test/chan/goroutines.go ------------------------------------------- */

struct relay {
    chan_t *left, *right;
};

static void gochan_relay(void *arg)
{
    struct relay *r = arg;
    long v;

    ck_assert_int_eq(sem_recv_int(r->right, &v, -1), 1);
    ck_assert_int_eq(sem_send_int(r->left, v + 1, -1), 0);
}

static void gochan_send_one(void *arg)
{
    ck_assert_int_eq(sem_send_int(arg, 1, -1), 0);
}

START_TEST(test_go_goroutines_long_chain_passes_one_value_through)
{
    const long n = sem_scale(5000, 1000);
    chan_t *leftmost = sem_mk(0), *left = leftmost, *right = leftmost;
    struct relay *rs = calloc((size_t)n, sizeof *rs);
    struct sem_group g = {0};
    long v;

    ck_assert(rs != NULL);
    for (long i = 0; i < n; i++) {
        right = sem_mk(0);
        rs[i] = (struct relay){.left = left, .right = right};
        sem_group_go(&g, gochan_relay, &rs[i]);
        left = right;
    }
    sem_group_go(&g, gochan_send_one, right);
    SEM_RETURNS(sem_recv_int(leftmost, &v, sem_in(sem_scale(10000, 60000))), 1);
    ck_assert_int_eq(v, n + 1);
    sem_group_join(&g, sem_in(10000));
    free(rs);
}
END_TEST

/* ---- test/chan/nonblock.go ---------------------------------------------- */

/* The operand kinds: a 4-byte int, an 8-byte int, a 1-byte bool, a string. */
struct nb_kind {
    const char *name;
    const void *to_recv, *to_send; /* what the peer expects / sends */
    size_t recv_len, send_len;
};

struct nb_peer {
    chan_t *c, *sync;
    const struct nb_kind *k;
    int bad;
};

static int gochan_msg_is(const chan_msg_t *m, const void *data, size_t len)
{
    return m->len == len && memcmp(m->data, data, len) == 0;
}

static void gochan_nb_receiver(void *arg)
{
    struct nb_peer *p = arg;
    chan_msg_t m = {0};

    if (chan_recv(p->c, &m, -1) != 1 || !gochan_msg_is(&m, p->k->to_recv, p->k->recv_len))
        p->bad = 1;
    chan_msg_free(&m);
    ck_assert_int_eq(sem_send_int(p->sync, 1, -1), 0);
}

static void gochan_nb_sender(void *arg)
{
    struct nb_peer *p = arg;

    if (chan_send(p->c, p->k->to_send, p->k->send_len, -1) != 0)
        p->bad = 1;
    ck_assert_int_eq(sem_send_int(p->sync, 1, -1), 0);
}

/* Let other coroutines (and the network) move before the next nonblocking try. */
static void gochan_pause(void)
{
    chan_yield();
    chan_sleep(sem_in(1));
}

START_TEST(test_go_nonblock_ops_succeed_once_a_peer_is_ready)
{
    static const int32_t i32r = 123, i32s = 234;
    static const int64_t i64r = 123456, i64s = 234567;
    static const unsigned char bt = 1;
    static const struct nb_kind kinds[] = {
        {"int32", &i32r, &i32s, 4, 4},
        {"int64", &i64r, &i64s, 8, 8},
        {"bool", &bt, &bt, 1, 1},
        {"string", "hello", "hello again", 5, 11},
    };
    const int max_tries = 2000;

    for (size_t buffer = 0; buffer < 2; buffer++) {
        chan_t *sync = sem_mk(0);
        for (int k = 0; k < 4; k++) {
            chan_t *c = sem_mk(buffer);
            struct nb_peer p = {.c = c, .sync = sync, .k = &kinds[k]};
            chan_msg_t m = {0};
            long v;
            int tries, cr;

            SEM_FAILS(chan_recv(c, &m, 0), EAGAIN);

            cr = sem_go(gochan_nb_receiver, &p);
            for (tries = 0; chan_send(c, kinds[k].to_recv, kinds[k].recv_len, 0) != 0; tries++) {
                ck_assert_msg(errno == EAGAIN, "%s: nonblocking send: %s", kinds[k].name,
                              strerror(errno));
                ck_assert_msg(tries < max_tries, "%s buffer %zu: receiver never became ready",
                              kinds[k].name, buffer);
                gochan_pause();
            }
            SEM_RETURNS(sem_recv_int(sync, &v, sem_in(5000)), 1);
            sem_join(cr, 2000);
            ck_assert_msg(!p.bad, "%s: receiver got the wrong message", kinds[k].name);

            cr = sem_go(gochan_nb_sender, &p);
            if (buffer > 0)
                SEM_RETURNS(sem_recv_int(sync, &v, sem_in(5000)), 1);
            for (tries = 0; chan_recv(c, &m, 0) != 1; tries++) {
                ck_assert_msg(errno == EAGAIN, "%s: nonblocking recv: %s", kinds[k].name,
                              strerror(errno));
                ck_assert_msg(tries < max_tries, "%s buffer %zu: sender never became ready",
                              kinds[k].name, buffer);
                gochan_pause();
            }
            ck_assert_msg(gochan_msg_is(&m, kinds[k].to_send, kinds[k].send_len),
                          "%s: received the wrong message", kinds[k].name);
            chan_msg_free(&m);
            if (buffer == 0)
                SEM_RETURNS(sem_recv_int(sync, &v, sem_in(5000)), 1);
            sem_join(cr, 2000);
            ck_assert(!p.bad);
        }
    }
}
END_TEST

/* ---- test/chan/select.go ------------------------------------------------ */

/* Send 1<<shift on whichever of a, b is ready, switching each off once used. */
static int gochan_send_each_once(chan_t *a, chan_t *b, int *shift)
{
    int n = 0;

    for (;;) {
        struct chan_case cs[2];
        int64_t w = (int64_t)1 << *shift;

        sem_case_send(&cs[0], a, &w, sizeof w);
        sem_case_send(&cs[1], b, &w, sizeof w);
        int got = chan_select(cs, 2, 0);
        if (got == -1) {
            ck_assert_msg(errno == EAGAIN, "select: %s", strerror(errno));
            return n;
        }
        ck_assert_int_eq(cs[got].result, 0);
        n++;
        if (got == 0)
            a = NULL;
        else
            b = NULL;
        (*shift)++;
    }
}

START_TEST(test_go_select_null_case_switches_a_send_off)
{
    chan_t *a = sem_mk(1), *b = sem_mk(1);
    int shift = 0;
    long av, bv;

    SEM_RETURNS(gochan_send_each_once(a, b, &shift), 2);
    SEM_RETURNS(sem_recv_int(a, &av, 0), 1);
    SEM_RETURNS(sem_recv_int(b, &bv, 0), 1);
    ck_assert_msg((av | bv) == 3, "values %ld and %ld, want 1 and 2 in some order", av, bv);
    SEM_RETURNS(gochan_send_each_once(a, NULL, &shift), 1);
    SEM_RETURNS(chan_len(a), 1);
}
END_TEST

/* ---- test/chan/select3.go ------------------------------------------------ */

/*
 * Go's select3 tells blocking from not blocking with a 0.1 s race. Here a
 * deadline says it directly: an operation that never blocks succeeds with
 * deadline 0; one that always blocks fails with EAGAIN at deadline 0 and
 * with ETIMEDOUT at a short deadline.
 */
START_TEST(test_go_select3_blocking_table)
{
    chan_t *closed = sem_mk(0), *idle = sem_mk(0), *async = sem_mk(1);
    struct chan_case cs[2];
    chan_msg_t m[2];
    int64_t seven = 7;
    long v;

    SEM_RETURNS(chan_close(closed), 0);

    /* A NULL case inside select is never chosen; alone, it blocks. */
    sem_case_send(&cs[0], NULL, &seven, sizeof seven);
    SEM_FAILS(chan_select(cs, 1, 0), EAGAIN);
    SEM_FAILS(chan_select(cs, 1, sem_in(20)), ETIMEDOUT);
    sem_case_recv(&cs[0], NULL, &m[0]);
    SEM_FAILS(chan_select(cs, 1, 0), EAGAIN);
    SEM_FAILS(chan_select(cs, 1, sem_in(20)), ETIMEDOUT);
    sem_case_recv(&cs[0], NULL, &m[0]);
    sem_case_send(&cs[1], NULL, &seven, sizeof seven);
    SEM_FAILS(chan_select(cs, 2, sem_in(20)), ETIMEDOUT);

    /* Sending to a buffered channel with room never blocks. */
    SEM_RETURNS(sem_send_int(async, 7, 0), 0);
    SEM_RETURNS(sem_recv_int(async, &v, 0), 1);

    /* Receiving from a closed channel never blocks, and yields "closed". */
    for (int i = 0; i < 10; i++)
        SEM_RETURNS(sem_recv_int(closed, &v, 0), 0);

    /* Sending to a closed channel fails (Go panics). */
    SEM_FAILS(sem_send_int(closed, 7, 0), EPIPE);
    SEM_FAILS(sem_send_int(closed, 7, -1), EPIPE);

    /* Receiving from a channel nobody sends on always blocks. */
    SEM_FAILS(sem_recv_int(idle, &v, 0), EAGAIN);
    SEM_FAILS(sem_recv_int(idle, &v, sem_in(20)), ETIMEDOUT);

    /* An empty select always blocks. */
    SEM_FAILS(chan_select(cs, 0, sem_in(20)), ETIMEDOUT);

    /* A select on a channel that is not ready blocks. */
    sem_case_recv(&cs[0], idle, &m[0]);
    SEM_FAILS(chan_select(cs, 1, 0), EAGAIN);
    SEM_FAILS(chan_select(cs, 1, sem_in(20)), ETIMEDOUT);

    /* A select on ready channels does not block. */
    sem_case_send(&cs[0], async, &seven, sizeof seven);
    SEM_RETURNS(chan_select(cs, 1, 0), 0);
    sem_case_recv(&cs[0], async, &m[0]);
    SEM_RETURNS(chan_select(cs, 1, 0), 0);
    ck_assert_int_eq(sem_msg_int(&m[0]), 7);
    chan_msg_free(&m[0]);

    /* A select on a closed channel acts like the plain operation. */
    for (int i = 0; i < 3; i++) {
        sem_case_recv(&cs[0], closed, &m[0]);
        SEM_RETURNS(chan_select(cs, 1, -1), 0);
        ck_assert_int_eq(cs[0].result, 0);
    }
    sem_case_send(&cs[0], closed, &seven, sizeof seven);
    SEM_RETURNS(chan_select(cs, 1, -1), 0);
    ck_assert_int_eq(cs[0].result, -1);

    /* A select that sees itself on both ends of a channel still blocks. */
    sem_case_send(&cs[0], idle, &seven, sizeof seven);
    sem_case_recv(&cs[1], idle, &m[1]);
    SEM_FAILS(chan_select(cs, 2, sem_in(20)), ETIMEDOUT);
}
END_TEST

/* ---- test/chan/select4.go ------------------------------------------------ */

START_TEST(test_go_select4_case_not_chosen_receives_nothing)
{
    chan_t *c = sem_mk(1), *c1 = sem_mk(0);
    struct chan_case cs[2];
    chan_msg_t m[2];

    SEM_RETURNS(sem_send_int(c, 42, 0), 0);
    sem_case_recv(&cs[0], c1, &m[0]);
    sem_case_recv(&cs[1], c, &m[1]);
    SEM_RETURNS(chan_select(cs, 2, -1), 1);
    ck_assert_int_eq(sem_msg_int(&m[1]), 42);
    chan_msg_free(&m[1]);
    ck_assert_msg(m[0].data == NULL && m[0].len == 0, "the case not chosen got a message");
}
END_TEST

/* ---- test/chan/select5.go ------------------------------------------------ */

/*
 * select5 generates every way to write one real send or recv next to
 * dummy and nil cases, with and without default. Here: every subset of
 * {send on idle, recv on idle, send on NULL, recv on NULL}, every position
 * of the real case among them, blocking or not; and the selects made only
 * of those extras, which must not proceed.
 */
START_TEST(test_go_select5_every_mix_of_real_idle_and_null_cases)
{
    chan_t *c = sem_mk(1), *dummy = sem_mk(0);
    long n = 1, v, combos = 0;
    int64_t one = 1;

    for (int op = 0; op < 3; op++) {           /* real recv, real send, none */
        for (int extras = 0; extras < 16; extras++) {
            int nextra = __builtin_popcount((unsigned)extras);
            int npos = op == 2 ? 1 : nextra + 1;
            for (int pos = 0; pos < npos; pos++) {
                for (int nb = 0; nb < 2; nb++) {
                    struct chan_case cs[5];
                    chan_msg_t m[5];
                    int64_t w = n;
                    int k = 0, real = -1;

                    if (op == 0)
                        SEM_RETURNS(sem_send_int(c, n, 0), 0);
                    for (int e = 0; e <= 4; e++) {
                        if (op != 2 && k == pos && real < 0) {
                            real = k;
                            if (op == 0)
                                sem_case_recv(&cs[k], c, &m[k]);
                            else
                                sem_case_send(&cs[k], c, &w, sizeof w);
                            k++;
                        }
                        if (e == 4 || !(extras & (1 << e)))
                            continue;
                        chan_t *ch = e < 2 ? dummy : NULL;
                        if (e % 2 == 0)
                            sem_case_send(&cs[k], ch, &one, sizeof one);
                        else
                            sem_case_recv(&cs[k], ch, &m[k]);
                        k++;
                    }
                    int got = chan_select(cs, k, nb ? 0 : sem_in(20));
                    if (op == 2) {
                        ck_assert_msg(got == -1 && errno == (nb ? EAGAIN : ETIMEDOUT),
                                      "extras %#x alone: select returned %d", extras, got);
                    } else {
                        ck_assert_msg(got == real, "extras %#x, real case at %d: chose %d",
                                      extras, real, got);
                        if (op == 0) {
                            ck_assert_int_eq(cs[got].result, 1);
                            ck_assert_int_eq(sem_msg_int(&m[got]), n);
                            chan_msg_free(&m[got]);
                        } else {
                            ck_assert_int_eq(cs[got].result, 0);
                            SEM_RETURNS(sem_recv_int(c, &v, 0), 1);
                            ck_assert_int_eq(v, n);
                        }
                    }
                    for (int j = 0; j < k; j++)
                        if (j != got)
                            ck_assert_msg(cs[j].result == SEM_UNTOUCHED, "case %d touched", j);
                    n++;
                    combos++;
                }
            }
        }
    }
    ck_assert_int_eq(combos, 224);
}
END_TEST

/* ---- test/chan/select6.go ------------------------------------------------ */

struct s6 {
    chan_t *c1, *c2, *c3;
    int chose;
};

static void gochan_s6_plain(void *arg)
{
    long v;
    ck_assert_int_eq(sem_recv_int(((struct s6 *)arg)->c1, &v, -1), 1);
}

static void gochan_s6_select(void *arg)
{
    struct s6 *s = arg;
    struct chan_case cs[2];
    chan_msg_t m[2];
    long v;

    sem_case_recv(&cs[0], s->c1, &m[0]);
    sem_case_recv(&cs[1], s->c2, &m[1]);
    s->chose = chan_select(cs, 2, -1);
    ck_assert_msg(s->chose == 1, "select took case %d, want the c2 case", s->chose);
    chan_msg_free(&m[1]);
    ck_assert_int_eq(sem_send_int(s->c3, 1, -1), 0);
    ck_assert_int_eq(sem_recv_int(s->c1, &v, -1), 1);
}

static void gochan_s6_sender(void *arg)
{
    ck_assert_int_eq(sem_send_int(((struct s6 *)arg)->c2, 1, -1), 0);
}

START_TEST(test_go_select6_losing_cases_leave_other_waiters_queued)
{
    struct s6 s = {.c1 = sem_mk(0), .c2 = sem_mk(0), .c3 = sem_mk(0)};
    struct sem_group g = {0};
    long v;

    /* The plain receiver queues on c1 first, the select last. */
    sem_group_go(&g, gochan_s6_plain, &s);
    sem_settle(s.c1, 0, 1);
    sem_group_go(&g, gochan_s6_select, &s);
    sem_settle(s.c1, 0, 2);
    sem_group_go(&g, gochan_s6_sender, &s);
    SEM_RETURNS(sem_recv_int(s.c3, &v, sem_in(5000)), 1);
    SEM_RETURNS(sem_send_int(s.c1, 1, sem_in(5000)), 0);
    SEM_RETURNS(sem_send_int(s.c1, 1, sem_in(5000)), 0);
    sem_group_join(&g, sem_in(5000));
}
END_TEST

/* ---- test/chan/select7.go ------------------------------------------------ */

static void gochan_recv1(void *arg)
{
    long v;
    ck_assert_int_eq(sem_recv_int(arg, &v, -1), 1);
}

static void gochan_recv2(void *arg)
{
    struct chan_case cs[1];
    chan_msg_t m;

    sem_case_recv(&cs[0], arg, &m);
    ck_assert_int_eq(chan_select(cs, 1, -1), 0);
    chan_msg_free(&m);
}

static void gochan_recv3(void *arg)
{
    struct chan_case cs[2];
    chan_msg_t m[2];
    chan_t *other = sem_mk(0);

    sem_case_recv(&cs[0], arg, &m[0]);
    sem_case_recv(&cs[1], other, &m[1]);
    ck_assert_int_eq(chan_select(cs, 2, -1), 0);
    chan_msg_free(&m[0]);
}

START_TEST(test_go_select7_every_send_form_meets_every_recv_form)
{
    void (*recvs[3])(void *) = {gochan_recv1, gochan_recv2, gochan_recv3};
    int64_t one = 1;

    for (int r = 0; r < 3; r++) {
        for (int s = 0; s < 3; s++) {
            chan_t *c = sem_mk(0);
            struct chan_case cs[2];
            int cr = sem_go(recvs[r], c);

            chan_yield();
            if (s == 0) {
                SEM_RETURNS(sem_send_int(c, 1, sem_in(5000)), 0);
            } else {
                sem_case_send(&cs[0], c, &one, sizeof one);
                sem_case_send(&cs[1], s == 2 ? sem_mk(0) : NULL, &one, sizeof one);
                SEM_RETURNS(chan_select(cs, s, sem_in(5000)), 0);
            }
            sem_join(cr, 5000);
        }
    }
}
END_TEST

/* ---- test/chan/sendstmt.go ---------------------------------------------- */

START_TEST(test_go_sendstmt_send_on_a_channel_received_from_a_channel)
{
    chan_t *cc = sem_mk(1), *c = sem_mk(1);
    const char *ref = sem_ref(c);
    chan_msg_t m = {0};
    struct chan_case cs[1];
    int64_t two = 2;
    long v;

    SEM_RETURNS(chan_send(cc, ref, strlen(ref), 0), 0);
    SEM_RETURNS(chan_recv(cc, &m, 0), 1);
    chan_t *got = sem_lookup(m.data);
    chan_msg_free(&m);
    sem_case_send(&cs[0], got, &two, sizeof two);
    SEM_RETURNS(chan_select(cs, 1, 0), 0);
    SEM_RETURNS(sem_recv_int(c, &v, 0), 1);
    ck_assert_int_eq(v, 2);
}
END_TEST

/* ---- test/chan/doubleselect.go ------------------------------------------ */

struct ds {
    chan_t *c[4], *mux;
    long n;
    int muxes_left; /* the last mux to finish closes the mux channel */
};

static void gochan_ds_sender(void *arg)
{
    struct ds *d = arg;

    for (long i = 0; i < d->n; i++) {
        struct chan_case cs[4];
        int64_t w = i;
        for (int k = 0; k < 4; k++)
            sem_case_send(&cs[k], d->c[k], &w, sizeof w);
        int got = chan_select(cs, 4, -1);
        ck_assert_msg(got >= 0 && cs[got].result == 0, "sender select: %s", strerror(errno));
    }
    for (int k = 0; k < 4; k++)
        ck_assert_int_eq(chan_close(d->c[k]), 0);
}

struct ds_mux {
    struct ds *d;
    chan_t *in, *out; /* c[k] and the mux channel */
};

static void gochan_ds_mux(void *arg)
{
    struct ds_mux *x = arg;
    long v;

    while (sem_recv_int(x->in, &v, -1) == 1)
        ck_assert_int_eq(sem_send_int(x->out, v, -1), 0);
    if (--x->d->muxes_left == 0)
        ck_assert_int_eq(chan_close(x->out), 0);
}

START_TEST(test_go_doubleselect_never_runs_two_cases_of_one_select)
{
    struct ds d = {.n = sem_scale(20000, 5000), .muxes_left = 4};
    struct ds_mux mx[4];
    struct sem_group g = {0};
    unsigned char *seen;
    long v, count = 0;

    for (int k = 0; k < 4; k++)
        d.c[k] = sem_mk(0);
    d.mux = sem_mk(0);
    seen = calloc((size_t)d.n, 1);
    ck_assert(seen != NULL);
    sem_group_go(&g, gochan_ds_sender, &d);
    for (int k = 0; k < 4; k++) {
        /* Each mux is its own party: its own handles, on the peer connection. */
        mx[k] = (struct ds_mux){.d = &d, .in = sem_peer(d.c[k]), .out = sem_peer(d.mux)};
        sem_group_go(&g, gochan_ds_mux, &mx[k]);
    }
    int r;
    while ((r = sem_recv_int(d.mux, &v, sem_in(10000))) == 1) {
        ck_assert_msg(v >= 0 && v < d.n, "value %ld out of range", v);
        ck_assert_msg(!seen[v], "value %ld arrived twice: two cases of one select ran", v);
        seen[v] = 1;
        count++;
    }
    ck_assert_msg(r == 0, "recv on the mux channel: %s", strerror(errno));
    ck_assert_int_eq(count, d.n);
    sem_group_join(&g, sem_in(5000));
    free(seen);
}
END_TEST

/* ---- test/chan/sieve1.go ------------------------------------------------ */

static const long gochan_primes[] = {2,  3,  5,  7,  11, 13, 17, 19, 23, 29, 31, 37, 41,
                                     43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97};
#define NPRIMES ((int)(sizeof gochan_primes / sizeof gochan_primes[0]))

/*
 * Every stage of both sieves stops on the first failed send or on a closed
 * input: the test tears a sieve down by closing all its channels.
 */
static void gochan_generate(void *arg)
{
    for (long i = 2; sem_send_int(arg, i, -1) == 0; i++)
        ;
}

struct filter {
    chan_t *in, *out;
    long prime;
};

static void gochan_filter(void *arg)
{
    struct filter *f = arg;
    long v;

    while (sem_recv_int(f->in, &v, -1) == 1)
        if (v % f->prime != 0 && sem_send_int(f->out, v, -1) != 0)
            break;
    free(f);
}

struct sieve {
    chan_t *primes;
    struct sem_group *g;
};

static void gochan_sieve1(void *arg)
{
    struct sieve *s = arg;
    chan_t *ch = sem_mk(0);
    long p;

    sem_group_go(s->g, gochan_generate, ch);
    while (sem_recv_int(ch, &p, -1) == 1 && sem_send_int(s->primes, p, -1) == 0) {
        struct filter *f = malloc(sizeof *f);
        ck_assert(f != NULL);
        *f = (struct filter){.in = ch, .out = sem_mk(0), .prime = p};
        ch = f->out;
        sem_group_go(s->g, gochan_filter, f);
    }
}

START_TEST(test_go_sieve1_filter_chain_yields_the_primes)
{
    struct sem_group g = {0};
    struct sieve s = {.primes = sem_mk(0), .g = &g};
    long p;

    sem_group_go(&g, gochan_sieve1, &s);
    for (int i = 0; i < NPRIMES; i++) {
        SEM_RETURNS(sem_recv_int(s.primes, &p, sem_in(10000)), 1);
        ck_assert_msg(p == gochan_primes[i], "prime %d is %ld, want %ld", i, p, gochan_primes[i]);
    }
    sem_group_shutdown(&g, sem_in(10000));
}
END_TEST

/* ---- test/chan/sieve2.go ------------------------------------------------ */

/* A generator of start, start + step, ... on its own buffered channel. */
struct progression {
    chan_t *out;
    long start, step;
};

static void gochan_progression(void *arg)
{
    struct progression *p = arg;

    for (long n = p->start; sem_send_int(p->out, n, -1) == 0; n += p->step)
        ;
    free(p);
}

static chan_t *gochan_progression_start(struct sem_group *g, size_t cap, long start, long step)
{
    struct progression *p = malloc(sizeof *p);

    ck_assert(p != NULL);
    *p = (struct progression){.out = sem_mk(cap), .start = start, .step = step};
    sem_group_go(g, gochan_progression, p);
    return p->out;
}

/*
 * sendproxy: forwards in to out through an unbounded ring, so the sender
 * never blocks; the send case is switched off (NULL) while the ring is empty.
 */
struct proxy {
    chan_t *in, *out;
};

static void gochan_proxy(void *arg)
{
    struct proxy *x = arg;
    size_t cap = 16, head = 0, count = 0;
    long *ring = malloc(cap * sizeof *ring);

    ck_assert(ring != NULL);
    for (;;) {
        struct chan_case cs[2];
        chan_msg_t m;
        int64_t w = count ? ring[head] : 0;

        sem_case_recv(&cs[0], x->in, &m);
        sem_case_send(&cs[1], count ? x->out : NULL, &w, sizeof w);
        int got = chan_select(cs, 2, -1);
        if (got < 0 || cs[got].result != (got == 0 ? 1 : 0))
            break;
        if (got == 0) {
            if (count == cap) {
                long *n = malloc(2 * cap * sizeof *n);
                ck_assert(n != NULL);
                for (size_t i = 0; i < count; i++)
                    n[i] = ring[(head + i) % cap];
                free(ring);
                ring = n;
                head = 0;
                cap *= 2;
            }
            ring[(head + count++) % cap] = sem_msg_int(&m);
            chan_msg_free(&m);
        } else {
            head = (head + 1) % cap;
            count--;
        }
    }
    free(ring);
}

/* A multiples stream with its next value, for the merge heap. */
struct peek {
    long head;
    chan_t *ch;
};

struct merge {
    chan_t *primes, *composites;
    struct sem_group *g;
};

static void gochan_heap_push(struct peek *h, int *n, struct peek x)
{
    int i = (*n)++;
    while (i > 0 && h[(i - 1) / 2].head > x.head) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = x;
}

static struct peek gochan_heap_pop(struct peek *h, int *n)
{
    struct peek top = h[0], last = h[--(*n)];
    int i = 0;

    for (;;) {
        int c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && h[c + 1].head < h[c].head)
            c++;
        if (h[c].head >= last.head)
            break;
        h[i] = h[c];
        i = c;
    }
    if (*n > 0)
        h[i] = last;
    return top;
}

/* Merge the multiples of every prime fed back on primes into one ordered stream. */
static void gochan_merge(void *arg)
{
    struct merge *mg = arg;
    struct peek heap[256];
    int n = 0;
    long min = 15, p, head;

#define TRY(call)                                                                             \
    do {                                                                                      \
        if ((call) != 1)                                                                      \
            return;                                                                           \
    } while (0)
    for (;;) {
        TRY(sem_recv_int(mg->primes, &p, -1));
        chan_t *m = gochan_progression_start(mg->g, 10, p * p, 2 * p);
        TRY(sem_recv_int(m, &head, -1));
        while (min < head) {
            if (sem_send_int(mg->composites, min, -1) != 0)
                return;
            struct peek x = gochan_heap_pop(heap, &n);
            min = x.head;
            TRY(sem_recv_int(x.ch, &x.head, -1));
            gochan_heap_push(heap, &n, x);
        }
        while (min == head) {
            struct peek x = gochan_heap_pop(heap, &n);
            min = x.head;
            TRY(sem_recv_int(x.ch, &x.head, -1));
            gochan_heap_push(heap, &n, x);
        }
        if (sem_send_int(mg->composites, head, -1) != 0)
            return;
        ck_assert(n < 256);
        struct peek x = {.ch = m};
        TRY(sem_recv_int(m, &x.head, -1));
        gochan_heap_push(heap, &n, x);
    }
#undef TRY
}

struct eratosthenes {
    chan_t *out, *primes, *composites;
    struct sem_group *g;
    struct proxy proxy; /* lives as long as the test, which outlasts the proxy coroutine */
};

/* Sieve the odd candidates against the merged composites. */
static void gochan_eratosthenes(void *arg)
{
    struct eratosthenes *e = arg;
    struct proxy *x = &e->proxy;
    long p, c;

    *x = (struct proxy){.in = sem_mk(10), .out = e->primes};
    sem_group_go(e->g, gochan_proxy, x);
    chan_t *candidates = gochan_progression_start(e->g, 50, 5, 2);
    if (sem_recv_int(candidates, &p, -1) != 1)
        return;
    for (;;) {
        if (sem_recv_int(e->composites, &c, -1) != 1)
            return;
        while (p < c) {
            if (sem_send_int(x->in, p, -1) != 0 || sem_send_int(e->out, p, -1) != 0 ||
                sem_recv_int(candidates, &p, -1) != 1)
                return;
        }
        if (p == c && sem_recv_int(candidates, &p, -1) != 1)
            return;
    }
}

START_TEST(test_go_sieve2_merged_multiples_yield_the_primes)
{
    struct sem_group g = {0};
    struct eratosthenes e = {.out = sem_mk(10), .primes = sem_mk(10), .composites = sem_mk(50),
                             .g = &g};
    struct merge mg = {.primes = e.primes, .composites = e.composites, .g = &g};
    long p;

    SEM_RETURNS(sem_send_int(e.out, 2, 0), 0);
    SEM_RETURNS(sem_send_int(e.out, 3, 0), 0);
    SEM_RETURNS(sem_send_int(e.primes, 3, 0), 0);
    sem_group_go(&g, gochan_merge, &mg);
    sem_group_go(&g, gochan_eratosthenes, &e);
    for (int i = 0; i < NPRIMES; i++) {
        SEM_RETURNS(sem_recv_int(e.out, &p, sem_in(10000)), 1);
        ck_assert_msg(p == gochan_primes[i], "prime %d is %ld, want %ld", i, p, gochan_primes[i]);
    }
    sem_group_shutdown(&g, sem_in(10000));
}
END_TEST

/* ---- test/chan/zerosize.go ---------------------------------------------- */

START_TEST(test_go_zerosize_channels_carry_empty_messages)
{
    static const size_t caps[] = {0, 1};
    char none = 0;

    for (int k = 0; k < 2; k++) {
        chan_t *c = sem_mk(caps[k]);
        struct chan_case cs[2];
        chan_msg_t m;

        SEM_RETURNS(chan_cap(c), (long)caps[k]);
        /* The two ends meet inside one select only if cap allows it. */
        sem_case_send(&cs[0], c, &none, 0);
        sem_case_recv(&cs[1], c, &m);
        int got = chan_select(cs, 2, 0);
        if (caps[k] == 0) {
            ck_assert_msg(got == -1 && errno == EAGAIN, "cap 0 select returned %d", got);
        } else {
            ck_assert_int_eq(got, 0);
            sem_case_recv(&cs[0], c, &m);
            SEM_RETURNS(chan_select(cs, 1, 0), 0);
            ck_assert_int_eq(cs[0].result, 1);
            ck_assert_uint_eq(m.len, 0);
            chan_msg_free(&m);
        }
    }
}
END_TEST

void semantic_gochan_add(Suite *s, double timeout)
{
    TCase *tc;

    tc = tcase_create("go_test_chan");
    tcase_add_checked_fixture(tc, sem_env_setup, sem_env_teardown);
    tcase_set_timeout(tc, timeout);
    tcase_add_test(tc, test_go_fifo_buffered_channel_is_a_fifo);
    tcase_add_test(tc, test_go_fifo_unbuffered_channel_serves_a_daisy_chain_in_order);
    tcase_add_test(tc, test_go_goroutines_long_chain_passes_one_value_through);
    tcase_add_test(tc, test_go_nonblock_ops_succeed_once_a_peer_is_ready);
    tcase_add_test(tc, test_go_select_null_case_switches_a_send_off);
    tcase_add_test(tc, test_go_select3_blocking_table);
    tcase_add_test(tc, test_go_select4_case_not_chosen_receives_nothing);
    tcase_add_test(tc, test_go_select5_every_mix_of_real_idle_and_null_cases);
    tcase_add_test(tc, test_go_select6_losing_cases_leave_other_waiters_queued);
    tcase_add_test(tc, test_go_select7_every_send_form_meets_every_recv_form);
    tcase_add_test(tc, test_go_sendstmt_send_on_a_channel_received_from_a_channel);
    tcase_add_test(tc, test_go_doubleselect_never_runs_two_cases_of_one_select);
    tcase_add_test(tc, test_go_sieve1_filter_chain_yields_the_primes);
    tcase_add_test(tc, test_go_sieve2_merged_multiples_yield_the_primes);
    tcase_add_test(tc, test_go_zerosize_channels_carry_empty_messages);
    suite_add_tcase(s, tc);
}
