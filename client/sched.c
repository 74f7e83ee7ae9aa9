/*
 * sched.c: the per-thread scheduler. A FIFO run queue of coroutines; when
 * it is empty the thread sleeps in its libevent loop, on the stack of
 * whichever coroutine parked last, until a callback wakes someone or a
 * deadline passes. Deadlines live in a min-heap that drives one libevent
 * timer. Wake-ups only enqueue, so a producer never runs a consumer's code.
 *
 * Coroutine ids grow from 2 (1 is the thread's main) and are not reused
 * until 2^31 - 1 coroutines have been started in the thread, so a finished
 * coroutine needs no record: an id that was handed out and is no longer
 * live has finished, and chan_join returns 0 for it at once. After the
 * counter wraps, ids are reused (skipping live ones), like process ids.
 *
 * When main() returns, the process exits and coroutines still parked or
 * runnable simply stop, as goroutines do in Go.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "internal.h"

#define SCHED_POLL_EVERY 64   /* dispatches between checks of timers and I/O while busy */

/* Always-on check of the scheduler's own invariants (programmer errors). */
#define SCHED_ASSERT(x)                                                              \
    do {                                                                             \
        if (!(x))                                                                    \
            sched_fail(__FILE__, __LINE__, #x);                                      \
    } while (0)

/* One coroutine waiting in chan_join; lives on that coroutine's stack. */
struct sched_joiner {
    struct sched_joiner *next;    /* list of the target's joiners */
    struct sched_joiner **pprev;  /* the pointer that points at this one */
    struct coro *c;               /* the joining coroutine */
    int done;                     /* the target finished */
};

/*
 * One thread's scheduler, malloc'd on first use and freed when the thread
 * exits (pthread key destructor). It owns the coroutines in its id table.
 */
struct sched {
    struct coro main;             /* the thread's own stack, id 1 */
    struct coro *cur;             /* the running coroutine */
    struct coro *rq_head;         /* run queue, FIFO */
    struct coro *rq_tail;
    struct coro *zombie;          /* finished; freed by the next coroutine to run */
    struct coro **table;          /* live coroutines by id, chained through hnext */
    size_t table_mask;            /* buckets - 1 (a power of two) */
    size_t live;                  /* coroutines in the table */
    struct coro **heap;           /* parked coroutines by deadline, min first */
    size_t heap_n;
    size_t heap_cap;
    struct event_base *base;      /* the thread's libevent loop */
    struct event *timer;          /* fires at heap[0]'s deadline */
    struct event *quit;           /* SIGQUIT dump, if asked for */
    int next_id;                  /* next id to hand out */
    int wrapped;                  /* next_id went past INT_MAX once */
    unsigned ticks;               /* dispatches since the last busy poll */
    int64_t last_poll;            /* chan_now() of the last I/O poll */
    struct sched_hook *hooks;     /* end-of-turn work queued by sched_defer, LIFO */
};

static _Thread_local struct sched *sched_tls __attribute__((tls_model("initial-exec")));
static pthread_once_t sched_once = PTHREAD_ONCE_INIT;
static pthread_key_t sched_key;
static _Atomic int sched_quit_taken;  /* one base may own a signal event */

static const char *const sched_state_names[CORO_STATE_MAX] = {
    [CORO_RUNNING] = "running",
    [CORO_RUNNABLE] = "runnable",
    [CORO_PARKED] = "parked",
    [CORO_DONE] = "done",
};

static void sched_fail(const char *file, int line, const char *what)
{
    fprintf(stderr, "chan: %s:%d: assertion failed: %s\n", file, line, what);
    abort();
}

int64_t chan_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- id table -------------------------------------------------------- */

static struct coro *sched_find(struct sched *s, int id)
{
    struct coro *c;

    for (c = s->table[(size_t)id & s->table_mask]; c; c = c->hnext)
        if (c->id == id)
            return c;
    return NULL;
}

static int sched_table_grow(struct sched *s)
{
    size_t n = (s->table_mask + 1) * 2;
    struct coro **t = calloc(n, sizeof *t);
    size_t i;

    if (!t)
        return -1;
    for (i = 0; i <= s->table_mask; i++) {
        struct coro *c = s->table[i], *next;

        for (; c; c = next) {
            next = c->hnext;
            c->hnext = t[(size_t)c->id & (n - 1)];
            t[(size_t)c->id & (n - 1)] = c;
        }
    }
    free(s->table);
    s->table = t;
    s->table_mask = n - 1;
    return 0;
}

static int sched_insert(struct sched *s, struct coro *c)
{
    struct coro **b;

    if (s->live > s->table_mask && sched_table_grow(s) != 0)
        return -1;
    b = &s->table[(size_t)c->id & s->table_mask];
    c->hnext = *b;
    *b = c;
    s->live++;
    return 0;
}

static void sched_remove(struct sched *s, struct coro *c)
{
    struct coro **p = &s->table[(size_t)c->id & s->table_mask];

    while (*p != c)
        p = &(*p)->hnext;
    *p = c->hnext;
    s->live--;
}

/* The next free id; ids are sequential, so a live one is skipped only after a wrap. */
static int sched_new_id(struct sched *s)
{
    for (;;) {
        int id = s->next_id;

        if (id == INT_MAX) {
            s->next_id = 2;
            s->wrapped = 1;
        } else {
            s->next_id = id + 1;
        }
        if (!s->wrapped || !sched_find(s, id))
            return id;
    }
}

/* Was id handed out at some point? */
static int sched_issued(const struct sched *s, int id)
{
    return id > 0 && (s->wrapped || id < s->next_id);
}

/* ---- deadline heap --------------------------------------------------- */

static void sched_heap_set(struct sched *s, size_t i, struct coro *c)
{
    s->heap[i] = c;
    c->heap_idx = i;
}

static void sched_heap_up(struct sched *s, size_t i)
{
    struct coro *c = s->heap[i];

    while (i > 0) {
        size_t parent = (i - 1) / 2;

        if (s->heap[parent]->deadline <= c->deadline)
            break;
        sched_heap_set(s, i, s->heap[parent]);
        i = parent;
    }
    sched_heap_set(s, i, c);
}

static void sched_heap_down(struct sched *s, size_t i)
{
    struct coro *c = s->heap[i];

    for (;;) {
        size_t l = 2 * i + 1, m = l;

        if (l >= s->heap_n)
            break;
        if (l + 1 < s->heap_n && s->heap[l + 1]->deadline < s->heap[l]->deadline)
            m = l + 1;
        if (c->deadline <= s->heap[m]->deadline)
            break;
        sched_heap_set(s, i, s->heap[m]);
        i = m;
    }
    sched_heap_set(s, i, c);
}

/*
 * Room for every live coroutine plus one being created, reserved before it
 * exists, so that parking never has to allocate.
 */
static int sched_heap_reserve(struct sched *s)
{
    size_t cap;
    struct coro **h;

    if (s->heap_cap > s->live)
        return 0;
    cap = s->heap_cap ? s->heap_cap * 2 : 64;
    h = realloc(s->heap, cap * sizeof *h);
    if (!h)
        return -1;
    s->heap = h;
    s->heap_cap = cap;
    return 0;
}

static void sched_heap_push(struct sched *s, struct coro *c)
{
    SCHED_ASSERT(s->heap_n < s->heap_cap);
    sched_heap_set(s, s->heap_n++, c);
    sched_heap_up(s, c->heap_idx);
}

static void sched_heap_remove(struct sched *s, struct coro *c)
{
    size_t i = c->heap_idx;
    struct coro *last;

    if (i == SIZE_MAX)
        return;
    c->heap_idx = SIZE_MAX;
    last = s->heap[--s->heap_n];
    if (last == c)
        return;
    sched_heap_set(s, i, last);
    sched_heap_up(s, i);
    sched_heap_down(s, last->heap_idx);
}

/* ---- run queue ------------------------------------------------------- */

static void sched_enqueue(struct sched *s, struct coro *c)
{
    c->state = CORO_RUNNABLE;
    c->next = NULL;
    if (s->rq_tail)
        s->rq_tail->next = c;
    else
        s->rq_head = c;
    s->rq_tail = c;
}

static struct coro *sched_dequeue(struct sched *s)
{
    struct coro *c = s->rq_head;

    s->rq_head = c->next;
    if (!s->rq_head)
        s->rq_tail = NULL;
    c->next = NULL;
    return c;
}

/* A parked coroutine stops waiting with result r (timeout or cancel). */
static void sched_unpark(struct sched *s, struct coro *c, int r)
{
    sched_heap_remove(s, c);
    c->park_result = r;
    if (c->withdraw)
        c->withdraw(c->withdraw_arg, r);
    sched_enqueue(s, c);
}

/* ---- the loop -------------------------------------------------------- */

static void sched_expire(struct sched *s, int64_t now)
{
    while (s->heap_n && s->heap[0]->deadline <= now)
        sched_unpark(s, s->heap[0], ETIMEDOUT);
}

static void sched_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    /* Only here to end event_base_loop; sched_poll expires the heap. */
    (void)fd;
    (void)what;
    (void)arg;
}

static void sched_deadlock(struct sched *s)
{
    (void)s;
    fprintf(stderr, "chan: deadlock: every coroutine of this thread is blocked "
                    "and nothing can wake them\n");
    sched_dump();
    abort();
}

/*
 * Run timers and, when block is set and nothing is runnable, the libevent
 * loop until something is; otherwise poll I/O without waiting, at most
 * once a millisecond, so busy coroutines do not starve the network.
 */
static void sched_poll(struct sched *s, int block)
{
    int64_t now;
    int rc;

    /* End of the turn: what the coroutines queued (requests, acks) goes out now, together. */
    while (s->hooks != NULL) {
        struct sched_hook *h = s->hooks;
        s->hooks = h->next;
        h->next = NULL;
        h->queued = 0;
        h->fn(h->arg);
    }
    now = chan_now();
    sched_expire(s, now);
    if (!block) {
        if (now - s->last_poll < 1)
            return;
        s->last_poll = now;
        if (event_base_loop(s->base, EVLOOP_NONBLOCK) < 0)
            sched_fail(__FILE__, __LINE__, "event_base_loop failed");
        return;
    }
    if (s->rq_head)
        return;
    if (s->heap_n) {
        int64_t ms = s->heap[0]->deadline - now;
        struct timeval tv = { .tv_sec = (time_t)(ms / 1000),
                              .tv_usec = (suseconds_t)(ms % 1000 * 1000) };

        evtimer_add(s->timer, &tv);
    } else {
        evtimer_del(s->timer);
    }
    rc = event_base_loop(s->base, EVLOOP_ONCE);
    if (rc < 0)
        sched_fail(__FILE__, __LINE__, "event_base_loop failed");
    s->last_poll = chan_now();
    sched_expire(s, s->last_poll);
    if (rc == 1 && !s->rq_head && !s->heap_n)
        sched_deadlock(s);
}

static void sched_reap(struct sched *s)
{
    struct coro *z = s->zombie;

    if (z) {
        s->zombie = NULL;
        coro_free(z);
    }
}

/*
 * Give the thread to the next runnable coroutine (possibly the caller, if
 * it queued itself). Returns when the caller runs again; a finished
 * caller never returns.
 */
static void sched_run_next(struct sched *s)
{
    struct coro *self = s->cur, *next;

    for (;;) {
        if (s->rq_head) {
            if (++s->ticks >= SCHED_POLL_EVERY) {
                s->ticks = 0;
                sched_poll(s, 0);
            }
            break;
        }
        sched_poll(s, 1);
    }
    next = sched_dequeue(s);
    next->state = CORO_RUNNING;
    s->cur = next;
    if (next == self)
        return;
    coro_switch(self, next);
    sched_reap(s);
}

/* ---- per-thread setup ------------------------------------------------ */

static void sched_destroy(void *arg)
{
    struct sched *s = arg;
    size_t i;

    if (!s)
        return;
    sched_tls = NULL;
    blk_thread_exit();
    /* A thread that exits from a coroutine stack cannot free them safely. */
    if (s->cur != &s->main)
        return;
    sched_reap(s);
    for (i = 0; i <= s->table_mask; i++) {
        struct coro *c = s->table[i], *next;

        for (; c; c = next) {
            next = c->hnext;
            if (c != &s->main)
                coro_free(c);
        }
    }
    if (s->quit)
        event_free(s->quit);
    event_free(s->timer);
    event_base_free(s->base);
    free(s->table);
    free(s->heap);
    coro_thread_exit();
    free(s);
}

static void sched_once_init(void)
{
    if (pthread_key_create(&sched_key, sched_destroy) != 0)
        sched_fail(__FILE__, __LINE__, "pthread_key_create");
}

static void sched_quit_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    sched_dump();
}

static struct sched *sched_init(void)
{
    struct sched *s = calloc(1, sizeof *s);
    struct event_config *cfg = NULL;

    pthread_once(&sched_once, sched_once_init);
    if (!s)
        goto fail;
    s->table_mask = 63;
    s->table = calloc(s->table_mask + 1, sizeof *s->table);
    if (!s->table)
        goto fail_s;
    cfg = event_config_new();
    if (!cfg)
        goto fail_table;
    /*
     * No EVENT_BASE_FLAG_PRECISE_TIMER: with it the epoll backend programs
     * a timerfd before every wait, a system call per message; deadlines
     * are in milliseconds, which epoll_wait's own timeout keeps (rounded up).
     */
    event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);
    s->base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    if (!s->base)
        goto fail_table;
    s->timer = evtimer_new(s->base, sched_timer_cb, s);
    if (!s->timer)
        goto fail_base;
    s->main.id = 1;
    s->main.state = CORO_RUNNING;
    s->main.what = "main";
    s->main.heap_idx = SIZE_MAX;
    s->main.deadline = -1;
    s->cur = &s->main;
    s->next_id = 2;
    s->last_poll = chan_now();
    if (sched_heap_reserve(s) != 0 || sched_insert(s, &s->main) != 0)
        goto fail_timer;
    if (coro_thread_init(&s->main) != 0)
        goto fail_timer;
    blk_thread_init();
    /* Opt-in, since a library should not take SIGQUIT's core dump away. */
    if (getenv("CHAN_SIGQUIT_DUMP") && !sched_quit_taken++) {
        s->quit = evsignal_new(s->base, SIGQUIT, sched_quit_cb, s);
        if (s->quit)
            evsignal_add(s->quit, NULL);
    }
    sched_tls = s;
    pthread_setspecific(sched_key, s);
    return s;

fail_timer:
    free(s->heap);
    event_free(s->timer);
fail_base:
    event_base_free(s->base);
fail_table:
    free(s->table);
fail_s:
    free(s);
fail:
    errno = ENOMEM;
    return NULL;
}

/* This thread's scheduler, created on first use; NULL with errno ENOMEM. */
static struct sched *sched_get(void)
{
    struct sched *s = sched_tls;

    if (__builtin_expect(s == NULL, 0))
        s = sched_init();
    return s;
}

/* ---- internal API (internal.h) --------------------------------------- */

struct coro *sched_self(void)
{
    struct sched *s = sched_get();

    return s ? s->cur : NULL;
}

struct event_base *sched_base(void)
{
    struct sched *s = sched_get();

    return s ? s->base : NULL;
}

int sched_cancelled(const struct coro *c)
{
    return c->cancelled;
}

void sched_label(const char *what)
{
    struct sched *s = sched_get();

    if (s)
        s->cur->what = what;
}

int sched_park(int64_t deadline, int cancellable)
{
    return sched_park_withdraw(deadline, cancellable, NULL, NULL);
}

int sched_park_withdraw(int64_t deadline, int cancellable,
                        void (*withdraw)(void *arg, int status), void *arg)
{
    struct sched *s = sched_get();
    struct coro *c;
    int r = 0;

    SCHED_ASSERT(s != NULL);
    c = s->cur;
    SCHED_ASSERT(c->state == CORO_RUNNING && !c->parked);
    if (cancellable && c->cancelled)
        r = ECANCELED;
    else if (deadline >= 0 && deadline <= chan_now())
        r = ETIMEDOUT;
    if (r) {
        if (withdraw)
            withdraw(arg, r);
        return r;
    }
    c->withdraw = withdraw;
    c->withdraw_arg = arg;
    c->parked = 1;
    c->woken = 0;
    c->cancellable = (unsigned char)(cancellable != 0);
    c->park_result = 0;
    c->deadline = deadline;
    if (deadline >= 0)
        sched_heap_push(s, c);
    c->state = CORO_PARKED;
    sched_run_next(s);
    c->parked = 0;
    c->deadline = -1;
    c->withdraw = NULL;
    c->withdraw_arg = NULL;
    return c->park_result;
}

void sched_defer(struct sched_hook *h)
{
    struct sched *s = sched_tls;

    if (h->queued || s == NULL)
        return;
    h->queued = 1;
    h->next = s->hooks;
    s->hooks = h;
}

void sched_undefer(struct sched_hook *h)
{
    struct sched *s = sched_tls;

    if (!h->queued || s == NULL)
        return;
    for (struct sched_hook **p = &s->hooks; *p != NULL; p = &(*p)->next) {
        if (*p == h) {
            *p = h->next;
            break;
        }
    }
    h->next = NULL;
    h->queued = 0;
}

void sched_wake(struct coro *c)
{
    struct sched *s = sched_tls;

    SCHED_ASSERT(s != NULL && c->parked && !c->woken);
    c->woken = 1;
    if (c->state == CORO_PARKED) {
        sched_heap_remove(s, c);
        c->park_result = 0;
        sched_enqueue(s, c);
        return;
    }
    /* Timed out or cancelled, not yet resumed: the completion wins. */
    SCHED_ASSERT(c->state == CORO_RUNNABLE && c->park_result != 0);
    c->park_result = 0;
}

void sched_dump(void)
{
    struct sched *s = sched_tls;
    size_t i;

    if (!s)
        return;
    fprintf(stderr, "chan: %zu coroutines (running: %d)\n", s->live, s->cur->id);
    for (i = 0; i <= s->table_mask; i++) {
        const struct coro *c;

        for (c = s->table[i]; c; c = c->hnext) {
            fprintf(stderr, "  %6d %-8s %-14s", c->id, sched_state_names[c->state],
                    c->state == CORO_PARKED && c->what ? c->what : "-");
            if (c->stack_size)
                fprintf(stderr, " stack %zu KiB", c->stack_size / 1024);
            if (c->state == CORO_PARKED && c->deadline >= 0)
                fprintf(stderr, " deadline in %" PRId64 " ms", c->deadline - chan_now());
            if (c->cancelled)
                fprintf(stderr, " cancelled");
            fputc('\n', stderr);
        }
    }
}

/* ---- public API ------------------------------------------------------ */

/* Every coroutine starts here, on its own stack. */
static void sched_entry(void *arg)
{
    struct coro *c = arg;
    struct sched *s = sched_tls;
    struct sched_joiner *j;

    coro_started(c);
    sched_reap(s);
    c->what = "run";
    c->fn(c->arg);

    c->state = CORO_DONE;
    c->what = "done";
    sched_remove(s, c);
    while ((j = c->joiners) != NULL) {
        c->joiners = j->next;
        j->done = 1;
        sched_wake(j->c);
    }
    s->zombie = c;
    sched_run_next(s);
    sched_fail(__FILE__, __LINE__, "a finished coroutine was resumed");
}

int chan_go_stack(void (*fn)(void *arg), void *arg, size_t stack_size)
{
    struct sched *s;
    struct coro *c;

    if (!fn || stack_size > CORO_STACK_MAX) {
        errno = EINVAL;
        return -1;
    }
    s = sched_get();
    if (!s)
        return -1;
    if (sched_heap_reserve(s) != 0) {
        errno = ENOMEM;
        return -1;
    }
    c = coro_new(stack_size ? stack_size : CORO_STACK_DEFAULT, sched_entry);
    if (!c)
        return -1;
    c->fn = fn;
    c->arg = arg;
    c->id = sched_new_id(s);
    if (sched_insert(s, c) != 0) {
        coro_free(c);
        errno = ENOMEM;
        return -1;
    }
    sched_enqueue(s, c);
    return c->id;
}

int chan_go(void (*fn)(void *arg), void *arg)
{
    return chan_go_stack(fn, arg, 0);
}

int chan_self(void)
{
    struct sched *s = sched_get();

    return s ? s->cur->id : -1;
}

void chan_yield(void)
{
    struct sched *s = sched_get();
    struct coro *c;

    if (!s)
        return;
    c = s->cur;
    sched_enqueue(s, c);
    sched_run_next(s);
}

int chan_sleep(int64_t deadline)
{
    struct sched *s = sched_get();
    int r;

    if (!s)
        return -1;
    if (deadline < -1)
        deadline = -1;
    for (;;) {
        s->cur->what = "sleep";
        r = sched_park(deadline, 1);
        if (r == ETIMEDOUT)
            return 0;
        if (r == ECANCELED) {
            errno = r;
            return -1;
        }
        /* A stray wake: nobody but the deadline or a cancel ends a sleep. */
    }
}

/* Deadline 0 polls: ETIMEDOUT while cr still runs (chan.h lists no EAGAIN here). */
int chan_join(int cr, int64_t deadline)
{
    struct sched *s = sched_get();
    struct sched_joiner j;
    struct coro *t;
    int r = 0;

    if (!s)
        return -1;
    if (cr == s->cur->id) {
        errno = EDEADLK;
        return -1;
    }
    t = sched_find(s, cr);
    if (!t) {
        if (sched_issued(s, cr))
            return 0;
        errno = ESRCH;
        return -1;
    }
    if (deadline < -1)
        deadline = -1;
    j.c = s->cur;
    j.done = 0;
    j.next = t->joiners;
    j.pprev = &t->joiners;
    if (t->joiners)
        t->joiners->pprev = &j.next;
    t->joiners = &j;
    while (!j.done) {
        s->cur->what = "join";
        r = sched_park(deadline, 1);
        if (r != 0)
            break;
    }
    if (j.done)
        return 0;
    /* Still waiting: t is alive and j is still on its list. */
    *j.pprev = j.next;
    if (j.next)
        j.next->pprev = j.pprev;
    errno = r;
    return -1;
}

int chan_cancel(int cr)
{
    struct sched *s = sched_get();
    struct coro *t;

    if (!s)
        return -1;
    t = sched_find(s, cr);
    if (!t) {
        if (sched_issued(s, cr))
            return 0; /* finished: nothing left to cancel */
        errno = ESRCH;
        return -1;
    }
    t->cancelled = 1;
    if (t->state == CORO_PARKED && t->cancellable)
        sched_unpark(s, t, ECANCELED);
    return 0;
}
