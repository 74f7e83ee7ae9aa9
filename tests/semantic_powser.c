/*
 * semantic_powser.c: Go's test/chan/powser1.go in C, McIlroy's power
 * series as networks of coroutines. A series is a demand channel pair
 * (ask on req, read the next coefficient on dat); operators are
 * coroutines that grow without bound (Mul recurses, split spawns a
 * generation per coefficient), which makes this a stress test of select
 * with NULL-switched cases and of duplicate channels in one select.
 *
 * Coefficients are exact rationals sent as 16-byte messages; a zero
 * denominator ends a series. Every coroutine is a struct ps_task whose
 * channel calls jump back to its start once the test closes every
 * channel, so the whole network can be torn down and joined.
 */
#include <setjmp.h>
#include <stdlib.h>

#include "semantic.h"

struct rat {
    int64_t num, den; /* den 0: end of series */
};

/* A demand channel: a request on req is answered by one coefficient on dat. */
struct dch {
    chan_t *req, *dat;
};

/* Two outputs of split; the generations of one split share and swap them. */
struct dch2 {
    struct dch *d[2];
};

/* One operator coroutine and its arguments (which fields mean what depends on body). */
struct ps_task {
    jmp_buf out;                     /* a failed channel call lands here: torn down */
    void (*body)(struct ps_task *t); /* the operator */
    struct dch *u, *v, *z;           /* inputs and output */
    struct dch2 *pair;               /* split's outputs */
    chan_t *wait;                    /* split: the previous generation's release */
    struct rat c;                    /* a constant */
    long n;                          /* a count */
};

/*
 * Everything the network allocates (tasks, dch, dch2) is owned by this
 * list and freed after the network is joined: operators share these
 * structs freely, so no single coroutine could own them.
 */
static void **ps_blocks;
static size_t ps_nblocks, ps_capblocks;
static struct sem_group *ps_group; /* every operator coroutine of the running test */
static int64_t ps_seqno;           /* request tokens; their value does not matter */

static const struct rat ps_zero = {0, 1}, ps_one = {1, 1}, ps_finis = {1, 0};

static void *ps_alloc(size_t n)
{
    if (ps_nblocks == ps_capblocks) {
        size_t ncap = ps_capblocks ? 2 * ps_capblocks : 256;
        void **nb = realloc(ps_blocks, ncap * sizeof *nb);
        ck_assert(nb != NULL);
        ps_blocks = nb;
        ps_capblocks = ncap;
    }
    void *p = calloc(1, n);
    ck_assert(p != NULL);
    ps_blocks[ps_nblocks++] = p;
    return p;
}

static void ps_free_all(void)
{
    for (size_t i = 0; i < ps_nblocks; i++)
        free(ps_blocks[i]);
    free(ps_blocks);
    ps_blocks = NULL;
    ps_nblocks = ps_capblocks = 0;
}

/* ---- rationals ---------------------------------------------------------- */

static int64_t ps_gcd(int64_t u, int64_t v)
{
    if (u < 0)
        u = -u;
    while (u != 0) {
        int64_t t = v % u;
        v = u;
        u = t;
    }
    return v;
}

static struct rat ps_rat(int64_t u, int64_t v)
{
    int64_t g = ps_gcd(u, v);

    if (g < 0)
        g = -g;
    if (v < 0)
        return (struct rat){-u / g, -v / g};
    return (struct rat){u / g, v / g};
}

static int ps_end(struct rat u)
{
    return u.den == 0;
}

static struct rat ps_add(struct rat u, struct rat v)
{
    int64_t g = ps_gcd(u.den, v.den);
    return ps_rat(u.num * (v.den / g) + v.num * (u.den / g), u.den * (v.den / g));
}

static struct rat ps_mul(struct rat u, struct rat v)
{
    return ps_rat(u.num * v.num, u.den * v.den);
}

static struct rat ps_neg(struct rat u)
{
    return ps_rat(-u.num, u.den);
}

/* ---- channel calls that unwind the task when the network is torn down -- */

static void ps_fail(struct ps_task *t, const char *what)
{
    if (t)
        longjmp(t->out, 1);
    ck_abort_msg("%s failed in the test body: %s", what, strerror(errno));
}

static void ps_send_rat(struct ps_task *t, chan_t *c, struct rat r)
{
    if (chan_send(c, &r, sizeof r, -1) != 0)
        ps_fail(t, "send of a coefficient");
}

static struct rat ps_msg_rat(struct ps_task *t, chan_msg_t *m)
{
    struct rat r;

    if (m->len != sizeof r) {
        chan_msg_free(m);
        ps_fail(t, "coefficient of the wrong size");
    }
    memcpy(&r, m->data, sizeof r);
    chan_msg_free(m);
    return r;
}

static struct rat ps_recv_rat(struct ps_task *t, chan_t *c)
{
    chan_msg_t m = {0};

    if (chan_recv(c, &m, -1) != 1)
        ps_fail(t, "recv of a coefficient");
    return ps_msg_rat(t, &m);
}

static void ps_send_req(struct ps_task *t, chan_t *c)
{
    if (sem_send_int(c, ++ps_seqno, -1) != 0)
        ps_fail(t, "send of a request");
}

static void ps_recv_req(struct ps_task *t, chan_t *c)
{
    long v;

    if (sem_recv_int(c, &v, -1) != 1)
        ps_fail(t, "recv of a request");
}

/* Run a select; unwind unless the chosen case did its normal thing. */
static int ps_select(struct ps_task *t, struct chan_case *cs, int n)
{
    int got = chan_select(cs, n, -1);

    if (got < 0 || cs[got].result != (cs[got].op == CHAN_RECV ? 1 : 0))
        ps_fail(t, "select");
    return got;
}

static void ps_put(struct ps_task *t, struct rat r, struct dch *out)
{
    ps_recv_req(t, out->req);
    ps_send_rat(t, out->dat, r);
}

static struct rat ps_get(struct ps_task *t, struct dch *in)
{
    ps_send_req(t, in->req);
    return ps_recv_rat(t, in->dat);
}

/* One coefficient from each of two series, asking and reading in whatever order is ready. */
static void ps_get2(struct ps_task *t, struct dch *in0, struct dch *in1, struct rat out[2])
{
    chan_t *req[2] = {in0->req, in1->req}, *dat[2] = {NULL, NULL};
    struct dch *in[2] = {in0, in1};

    for (int n = 4; n > 0; n--) {
        struct chan_case cs[4];
        chan_msg_t m[4];
        int64_t seq = ++ps_seqno;

        sem_case_send(&cs[0], req[0], &seq, sizeof seq);
        sem_case_send(&cs[1], req[1], &seq, sizeof seq);
        sem_case_recv(&cs[2], dat[0], &m[2]);
        sem_case_recv(&cs[3], dat[1], &m[3]);
        int got = ps_select(t, cs, 4);
        if (got < 2) {
            dat[got] = in[got]->dat;
            req[got] = NULL;
        } else {
            out[got - 2] = ps_msg_rat(t, &m[got]);
            dat[got - 2] = NULL;
        }
    }
}

static void ps_copy(struct ps_task *t, struct dch *in, struct dch *out)
{
    for (;;) {
        ps_recv_req(t, out->req);
        ps_send_rat(t, out->dat, ps_get(t, in));
    }
}

/* ---- operators ----------------------------------------------------------- */

static void ps_run(void *arg)
{
    struct ps_task *t = arg;

    if (setjmp(t->out) == 0)
        t->body(t);
}

static struct ps_task *ps_spawn(void (*body)(struct ps_task *), struct dch *u, struct dch *v,
                                struct rat c)
{
    struct ps_task *t = ps_alloc(sizeof *t);

    t->body = body;
    t->u = u;
    t->v = v;
    t->c = c;
    return t;
}

static void ps_start(struct ps_task *t)
{
    sem_group_go(ps_group, ps_run, t);
}

static struct dch *ps_mkdch(void)
{
    struct dch *d = ps_alloc(sizeof *d);

    d->req = sem_mk(0);
    d->dat = sem_mk(0);
    return d;
}

static struct dch2 *ps_mkdch2(void)
{
    struct dch2 *d = ps_alloc(sizeof *d);

    d->d[0] = ps_mkdch();
    d->d[1] = ps_mkdch();
    return d;
}

/*
 * One generation of split: serve the first request on either output (on
 * out->d[0] only until the previous generation releases us), fetch one
 * coefficient, start the next generation, hand the coefficient to both
 * outputs, then release the next generation.
 */
static void ps_dosplit(struct ps_task *t)
{
    struct dch2 *out = t->pair;
    struct chan_case cs[2];
    chan_msg_t m[2];
    int both = 0;

    sem_case_recv(&cs[0], out->d[0]->req, &m[0]);
    sem_case_recv(&cs[1], t->wait, &m[1]);
    int got = ps_select(t, cs, 2);
    chan_msg_free(&m[got]);
    if (got == 1) {
        both = 1;
        sem_case_recv(&cs[0], out->d[0]->req, &m[0]);
        sem_case_recv(&cs[1], out->d[1]->req, &m[1]);
        got = ps_select(t, cs, 2);
        chan_msg_free(&m[got]);
        if (got == 1) {
            struct dch *x = out->d[0];
            out->d[0] = out->d[1];
            out->d[1] = x;
        }
    }
    ps_send_req(t, t->u->req);
    struct ps_task *next = ps_spawn(ps_dosplit, t->u, NULL, ps_zero);
    next->pair = out;
    next->wait = sem_mk(0);
    ps_start(next);
    struct rat dat = ps_recv_rat(t, t->u->dat);
    ps_send_rat(t, out->d[0]->dat, dat);
    if (!both)
        ps_recv_req(t, t->wait);
    ps_recv_req(t, out->d[1]->req);
    ps_send_rat(t, out->d[1]->dat, dat);
    ps_send_req(t, next->wait);
}

/* Start splitting in onto out; t is the caller (NULL for the test body). */
static void ps_split(struct ps_task *t, struct dch *in, struct dch2 *out)
{
    struct ps_task *first = ps_spawn(ps_dosplit, in, NULL, ps_zero);

    first->pair = out;
    first->wait = sem_mk(0);
    ps_start(first);
    ps_send_req(t, first->wait);
}

static void ps_split_body(struct ps_task *t)
{
    ps_split(t, t->u, t->pair);
}

static struct dch2 *ps_Split(struct dch *u)
{
    struct dch2 *uu = ps_mkdch2();
    struct ps_task *t = ps_spawn(ps_split_body, u, NULL, ps_zero);

    t->pair = uu;
    ps_start(t);
    return uu;
}

static void ps_repeat_body(struct ps_task *t)
{
    for (;;)
        ps_put(t, t->c, t->z);
}

static struct dch *ps_op(void (*body)(struct ps_task *), struct dch *u, struct dch *v,
                         struct rat c, long n)
{
    struct ps_task *t = ps_spawn(body, u, v, c);

    t->z = ps_mkdch();
    t->n = n;
    ps_start(t);
    return t->z;
}

static struct dch *ps_Rep(struct rat c)
{
    return ps_op(ps_repeat_body, NULL, NULL, c, 0);
}

static void ps_add_body(struct ps_task *t)
{
    struct rat uv[2];

    for (;;) {
        ps_recv_req(t, t->z->req);
        ps_get2(t, t->u, t->v, uv);
        switch (ps_end(uv[0]) + 2 * ps_end(uv[1])) {
        case 0:
            ps_send_rat(t, t->z->dat, ps_add(uv[0], uv[1]));
            break;
        case 1:
            ps_send_rat(t, t->z->dat, uv[1]);
            ps_copy(t, t->v, t->z);
            break;
        case 2:
            ps_send_rat(t, t->z->dat, uv[0]);
            ps_copy(t, t->u, t->z);
            break;
        default:
            ps_send_rat(t, t->z->dat, ps_finis);
            break;
        }
    }
}

static struct dch *ps_Add(struct dch *u, struct dch *v)
{
    return ps_op(ps_add_body, u, v, ps_zero, 0);
}

static void ps_cmul_body(struct ps_task *t)
{
    for (;;) {
        ps_recv_req(t, t->z->req);
        struct rat u = ps_get(t, t->u);
        if (ps_end(u)) {
            ps_send_rat(t, t->z->dat, ps_finis);
            return;
        }
        ps_send_rat(t, t->z->dat, ps_mul(t->c, u));
    }
}

static struct dch *ps_Cmul(struct rat c, struct dch *u)
{
    return ps_op(ps_cmul_body, u, NULL, c, 0);
}

static struct dch *ps_Sub(struct dch *u, struct dch *v)
{
    return ps_Add(u, ps_Cmul(ps_neg(ps_one), v));
}

static struct dch *ps_Mul(struct dch *u, struct dch *v);

/* (u + x UU)(v + x VV) = uv + x (u VV + v UU) + x^2 UU VV */
static void ps_mul_body(struct ps_task *t)
{
    struct rat uv[2];

    ps_recv_req(t, t->z->req);
    ps_get2(t, t->u, t->v, uv);
    if (ps_end(uv[0]) || ps_end(uv[1])) {
        ps_send_rat(t, t->z->dat, ps_finis);
        return;
    }
    ps_send_rat(t, t->z->dat, ps_mul(uv[0], uv[1]));
    struct dch2 *uu = ps_Split(t->u), *vv = ps_Split(t->v);
    struct dch *w = ps_Add(ps_Cmul(uv[0], vv->d[0]), ps_Cmul(uv[1], uu->d[0]));
    ps_recv_req(t, t->z->req);
    ps_send_rat(t, t->z->dat, ps_get(t, w));
    ps_copy(t, ps_Add(w, ps_Mul(uu->d[1], vv->d[1])), t->z);
}

static struct dch *ps_Mul(struct dch *u, struct dch *v)
{
    return ps_op(ps_mul_body, u, v, ps_zero, 0);
}

static void ps_diff_body(struct ps_task *t)
{
    ps_recv_req(t, t->z->req);
    struct rat u = ps_get(t, t->u);
    if (!ps_end(u)) {
        for (int64_t i = 1;; i++) {
            u = ps_get(t, t->u);
            if (ps_end(u))
                break;
            ps_send_rat(t, t->z->dat, ps_mul(ps_rat(i, 1), u));
            ps_recv_req(t, t->z->req);
        }
    }
    ps_send_rat(t, t->z->dat, ps_finis);
}

static struct dch *ps_Diff(struct dch *u)
{
    return ps_op(ps_diff_body, u, NULL, ps_zero, 0);
}

static void ps_integ_body(struct ps_task *t)
{
    ps_put(t, t->c, t->z);
    for (int64_t i = 1;; i++) {
        ps_recv_req(t, t->z->req);
        struct rat u = ps_get(t, t->u);
        if (ps_end(u)) {
            ps_send_rat(t, t->z->dat, ps_finis);
            return;
        }
        ps_send_rat(t, t->z->dat, ps_mul(ps_rat(1, i), u));
    }
}

/* The integral of u with constant of integration c. */
static struct dch *ps_Integ(struct rat c, struct dch *u)
{
    return ps_op(ps_integ_body, u, NULL, c, 0);
}

/* exp(U) for U without constant term: Z' = Z U', integrated; Z feeds back through split. */
static struct dch *ps_Exp(struct dch *u)
{
    struct dch2 *zz = ps_mkdch2();

    ps_split(NULL, ps_Integ(ps_one, ps_Mul(zz->d[0], ps_Diff(u))), zz);
    return zz->d[1];
}

/* U(c x^n): coefficient i times c^i, followed by n - 1 zeros. */
static void ps_monsubst_body(struct ps_task *t)
{
    struct rat c = ps_one;

    for (;;) {
        ps_recv_req(t, t->z->req);
        struct rat u = ps_get(t, t->u);
        if (ps_end(u)) {
            ps_send_rat(t, t->z->dat, ps_finis);
            return;
        }
        ps_send_rat(t, t->z->dat, ps_mul(u, c));
        c = ps_mul(c, t->c);
        for (long i = 1; i < t->n; i++)
            ps_put(t, ps_zero, t->z);
    }
}

static struct dch *ps_MonSubst(struct dch *u, struct rat c0, long n)
{
    return ps_op(ps_monsubst_body, u, NULL, c0, n);
}

/* ---- the checks ------------------------------------------------------------ */

static void ps_expect(struct dch *u, const struct rat *want, int n, const char *what)
{
    for (int i = 0; i < n; i++) {
        struct rat r = ps_get(NULL, u);
        ck_assert_msg(r.num == want[i].num && r.den == want[i].den,
                      "%s: coefficient %d is %lld/%lld, want %lld/%lld", what, i,
                      (long long)r.num, (long long)r.den, (long long)want[i].num,
                      (long long)want[i].den);
    }
}

static void ps_expect_const(struct dch *u, struct rat c, int n, const char *what)
{
    struct rat want[16];

    for (int i = 0; i < n; i++)
        want[i] = c;
    ps_expect(u, want, n, what);
}

START_TEST(test_go_powser1_power_series_networks_compute_exact_coefficients)
{
    /* A remote run pays a round trip per call, and Exp's network grows fast. */
    const int n = (int)sem_scale(10, 10);
    struct sem_group g = {0};
    struct rat a[10];

    ps_group = &g;
    struct dch *ones = ps_Rep(ps_one), *twos = ps_Rep(ps_rat(2, 1));

    ps_expect_const(ones, ps_one, 5, "Ones");
    ps_expect_const(ps_Add(ones, twos), ps_rat(3, 1), 5, "Add(Ones, Twos)");
    for (int i = 0; i < 10; i++)
        a[i] = ps_rat(i + 1, 1);
    ps_expect(ps_Diff(ones), a, n, "Diff(Ones)");
    a[0] = ps_zero;
    for (int i = 1; i < 10; i++)
        a[i] = ps_rat(1, i);
    ps_expect(ps_Integ(ps_zero, ones), a, n, "Integ(0, Ones)");
    ps_expect_const(ps_Cmul(ps_neg(ps_one), twos), ps_rat(-2, 1), n, "Cmul(-1, Twos)");
    ps_expect_const(ps_Sub(ones, twos), ps_rat(-1, 1), 5, "Sub(Ones, Twos)");
    for (int i = 0; i < 10; i++)
        a[i] = ps_rat(i + 1, 1);
    ps_expect(ps_Mul(ones, ones), a, n, "Mul(Ones, Ones)");

    /* exp(x / (1 - x)) */
    static const struct rat e[10] = {{1, 1},       {1, 1},     {3, 2},       {13, 6},
                                     {73, 24},     {167, 40},  {4051, 720},  {37633, 5040},
                                     {43817, 4480}, {4596553, 362880}};
    ps_expect(ps_Exp(ones), e, n, "Exp(Ones)");

    /* atan(x) = integral of 1 / (1 + x^2) */
    for (int i = 0, sign = 1; i < 10; i++) {
        if (i % 2 == 0) {
            a[i] = ps_zero;
        } else {
            a[i] = ps_rat(sign, i);
            sign = -sign;
        }
    }
    ps_expect(ps_Integ(ps_zero, ps_MonSubst(ones, ps_neg(ps_one), 2)), a, n, "ATan");

    sem_group_shutdown(&g, sem_in(sem_scale(10000, 60000)));
    ps_group = NULL;
    ps_free_all();
}
END_TEST

void semantic_powser_add(Suite *s, double timeout)
{
    TCase *tc = tcase_create("go_powser");

    tcase_add_checked_fixture(tc, sem_env_setup, sem_env_teardown);
    tcase_set_timeout(tc, timeout);
    tcase_add_test(tc, test_go_powser1_power_series_networks_compute_exact_coefficients);
    suite_add_tcase(s, tc);
}
