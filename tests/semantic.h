/*
 * semantic.h: the semantic suite's shared table of contents. One set of
 * tests pins DESIGN.md section 1 on whichever channel kind CHAN_KIND picks
 * (local, the default, or remote on a chand the suite starts itself); the
 * tests only ever make channels through sem_mk, so they cannot tell.
 */
#ifndef CHAN_SEMANTIC_H
#define CHAN_SEMANTIC_H

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include <check.h>

#include "chan.h"

/* ---- semantic_env.c: the switch and the helpers every test uses ------- */

/* Nonzero when CHAN_KIND=remote; set once by sem_env_init. */
extern int sem_remote;

/*
 * Read CHAN_KIND and, for remote, start $CHAND --port 0 on 127.0.0.1 and
 * wait for its port. Called once from main before any test forks; the
 * daemon is stopped at exit and dies with this process in any case.
 * Exits the process when the switch is bad or the broker will not start,
 * so a remote run can never pass without a broker.
 */
void sem_env_init(void);

/* Checked fixture: connect this test process to the broker (remote only). */
void sem_env_setup(void);

/* Checked fixture: free every channel sem_mk made, then disconnect. */
void sem_env_teardown(void);

/*
 * A new channel of capacity cap of the selected kind; remote ones get a
 * name unique to this process. The suite owns every handle it returns
 * (teardown frees them): tests never chan_free one. Aborts on failure.
 */
chan_t *sem_mk(size_t cap);

/*
 * A string naming ch that sem_lookup turns back into a usable handle, so a
 * channel can travel inside a message: the broker name for remote
 * channels (the receiver attaches with cap -1), a table index for local.
 */
const char *sem_ref(chan_t *ch);

/* The handle a sem_ref string names (for remote: a new attached handle). */
chan_t *sem_lookup(const char *ref);

/*
 * The same channel as seen by another party: ch itself for local channels,
 * a handle through a second connection for remote ones, so that sender and
 * receiver really are different clients of the broker. Selects must not
 * mix a peer handle with the first connection's handles (ENOTSUP).
 */
chan_t *sem_peer(chan_t *ch);

/* Close every channel sem_mk made that this suite has not closed yet. */
void sem_close_all(void);

/*
 * Wait until the broker shows exactly senders blocked senders and
 * receivers blocked receivers on ch (a negative count is not checked);
 * local channels cannot be observed, so there it yields until every
 * started coroutine has run to its first block. Aborts after 5 s.
 */
void sem_settle(chan_t *ch, long senders, long receivers);

/* Blocked (senders, receivers) on a remote ch as the broker sees them; -1 for local. */
int sem_waiters(chan_t *ch, long *senders, long *receivers);

/* n for local channels, rn for remote ones (network round trips cost more). */
long sem_scale(long n, long rn);

/* Absolute deadline ms from now. */
int64_t sem_in(int64_t ms);

/* Send v as an 8-byte message; returns what chan_send returned (errno kept). */
int sem_send_int(chan_t *ch, long v, int64_t deadline);

/*
 * Receive one 8-byte message into *v; returns what chan_recv returned
 * (errno kept) and frees the message. A message of another size fails the test.
 */
int sem_recv_int(chan_t *ch, long *v, int64_t deadline);

/* What sem_case_* put in result: no select writes it, so the case was left alone. */
#define SEM_UNTOUCHED 12345

/* Set up a select case (result SEM_UNTOUCHED, recv msg zeroed). */
void sem_case_send(struct chan_case *c, chan_t *ch, const void *data, size_t len);
void sem_case_recv(struct chan_case *c, chan_t *ch, chan_msg_t *msg);

/* The long a received 8-byte msg carries (asserts the size). */
long sem_msg_int(const chan_msg_t *msg);

/*
 * A group of coroutines joined together, like a WaitGroup. Zero-initialise;
 * the group owns ids, which sem_group_join frees.
 */
struct sem_group {
    int n;    /* coroutines started */
    int cap;  /* room in ids */
    int *ids; /* their chan_go ids */
};

/* Start fn(arg) in g; aborts on failure. Returns the coroutine id. */
int sem_group_go(struct sem_group *g, void (*fn)(void *), void *arg);

/* Join every coroutine of g by one deadline (absolute ms); aborts if any is late. */
void sem_group_join(struct sem_group *g, int64_t deadline);

/*
 * One channel call made by its own coroutine, and what came of it, so a
 * test can hold the call blocked and look at it from outside.
 */
struct sem_op {
    chan_t *ch;       /* the channel */
    long v;           /* the value to send, or the value received */
    int64_t deadline; /* the call's deadline */
    int ret;          /* what the call returned */
    int err;          /* errno after it (meaningful when ret is -1) */
    int done;         /* 1 once the call returned */
    int64_t at;       /* chan_now() when it returned */
};

/* Coroutine bodies: sem_send_int / sem_recv_int on an sem_op. */
void sem_op_send(void *op);
void sem_op_recv(void *op);

/*
 * Tear a pipeline down: close every channel (again, as coroutines may make
 * new ones on the way out) until every coroutine of g has finished, and
 * free g's ids. Aborts at deadline.
 */
void sem_group_shutdown(struct sem_group *g, int64_t deadline);

/*
 * A select over a recv case on r and a send case (of 4242) on s, run as a
 * coroutine body or called directly; cs, m and the results stay readable
 * afterwards.
 */
struct sem_sel {
    chan_t *r, *s;        /* the channels of case 0 (recv) and case 1 (send) */
    int64_t deadline;     /* the select's deadline */
    chan_msg_t m;         /* case 0's message */
    struct chan_case cs[2];
    int ret, err, done;   /* what chan_select returned, errno, 1 once it did */
};

void sem_sel_run(void *sel);

/* Start one coroutine; aborts on failure. */
int sem_go(void (*fn)(void *), void *arg);

/* Join cr within ms; aborts if it does not finish. */
void sem_join(int cr, int64_t ms);

/*
 * Assert that expr returned -1 with errno want; the message names both
 * errno values so a failure says which rule broke and how.
 */
#define SEM_FAILS(expr, want)                                                              \
    do {                                                                                   \
        errno = 0;                                                                         \
        long sem_r_ = (long)(expr);                                                        \
        int sem_e_ = errno;                                                                \
        ck_assert_msg(sem_r_ == -1 && sem_e_ == (want),                                    \
                      "%s: got %ld errno %s, want -1 errno %s", #expr, sem_r_,             \
                      strerrorname_np(sem_e_) ? strerrorname_np(sem_e_) : "0",             \
                      strerrorname_np(want));                                              \
    } while (0)

/* Assert that expr returned want; on failure the message shows errno too. */
#define SEM_RETURNS(expr, want)                                                            \
    do {                                                                                   \
        errno = 0;                                                                         \
        long sem_r_ = (long)(expr);                                                        \
        int sem_e_ = errno;                                                                \
        ck_assert_msg(sem_r_ == (long)(want), "%s: got %ld (errno %s), want %ld", #expr,   \
                      sem_r_, strerrorname_np(sem_e_) ? strerrorname_np(sem_e_) : "0",     \
                      (long)(want));                                                       \
    } while (0)

/* ---- semantic_rules.c: DESIGN.md section 1, rule by rule --------------- */

void semantic_rules_add(Suite *s, double timeout);

/* ---- semantic_waits.c: deadlines, cancel, FIFO waiters, exactly once --- */

void semantic_waits_add(Suite *s, double timeout);

/* ---- semantic_gochan.c: Go's test/chan programs, in C ------------------ */

void semantic_gochan_add(Suite *s, double timeout);

/* ---- semantic_goruntime.c: Go's runtime chan_test.go, in C -------------- */

void semantic_goruntime_add(Suite *s, double timeout);

/* ---- semantic_powser.c: Go's powser1, power series as coroutine networks */

void semantic_powser_add(Suite *s, double timeout);

#endif /* CHAN_SEMANTIC_H */
