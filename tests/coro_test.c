/*
 * coro_test.c: the coroutine runtime of libchanclient: context switches,
 * the FIFO run queue, join/cancel and their errnos, deadlines, stacks (big,
 * many, overflowing) and the deadlock check. Also prints the runtime's
 * costs (spawn+join, RSS per parked coroutine) for the notes.
 */
#include <check.h>
#include <errno.h>
#include <fenv.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "chan.h"

/* ---- helpers --------------------------------------------------------- */

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Resident set size of this process in KiB, from /proc/self/status. */
static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;

    ck_assert_ptr_nonnull(f);
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    ck_assert_int_gt(kib, 0);
    return kib;
}

/*
 * Run fn in a forked child with stderr captured; returns the child's wait
 * status and puts what it wrote to stderr in buf. The child is killed if
 * it has not ended within limit_ms.
 */
static int run_child(void (*fn)(void), char *buf, size_t size, int limit_ms)
{
    int fds[2], status = 0;
    size_t got = 0;
    int64_t end = now_ns() + (int64_t)limit_ms * 1000000;
    pid_t pid;

    ck_assert_int_eq(pipe(fds), 0);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(fds[1], STDERR_FILENO);
        close(fds[0]);
        close(fds[1]);
        fn();
        _exit(0);
    }
    close(fds[1]);
    for (;;) {
        ssize_t n;

        if (now_ns() > end) {
            kill(pid, SIGKILL);
            break;
        }
        n = read(fds[0], buf + got, size - 1 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
        if (got == size - 1)
            break;
    }
    buf[got] = '\0';
    close(fds[0]);
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    return status;
}

/* ---- switching and ordering ------------------------------------------ */

static int order_log[64];
static int order_n;

static void order_fn(void *arg)
{
    int id = (int)(intptr_t)arg;

    order_log[order_n++] = id;
    chan_yield();
    order_log[order_n++] = id + 100;
}

START_TEST(test_yield_runs_coroutines_in_fifo_order)
{
    int ids[5], i;

    order_n = 0;
    for (i = 0; i < 5; i++) {
        ids[i] = chan_go(order_fn, (void *)(intptr_t)i);
        ck_assert_int_gt(ids[i], 0);
    }
    ck_assert_int_eq(order_n, 0); /* a new coroutine runs only when main lets it */
    chan_yield();
    ck_assert_int_eq(order_n, 5);
    for (i = 0; i < 5; i++)
        ck_assert_int_eq(order_log[i], i);
    chan_yield();
    ck_assert_int_eq(order_n, 10);
    for (i = 0; i < 5; i++)
        ck_assert_int_eq(order_log[5 + i], 100 + i);
    for (i = 0; i < 5; i++)
        ck_assert_int_eq(chan_join(ids[i], -1), 0);
}
END_TEST

#define SW_COROS 500
#define SW_ROUNDS 50

static int sw_ok;

/*
 * Keeps values in callee-saved registers and on the stack across many
 * switches; any register the switch forgot shows up as a wrong sum.
 */
static void switch_fn(void *arg)
{
    long seed = (long)(intptr_t)arg;
    long a = seed, b = seed * 3, c = seed * 7;
    double d = (double)seed * 0.5;
    volatile long on_stack[8];
    int r, k;

    for (k = 0; k < 8; k++)
        on_stack[k] = seed + k;
    for (r = 0; r < SW_ROUNDS; r++) {
        a += 1;
        b += 3;
        c += 7;
        d += 0.5;
        chan_yield();
    }
    for (k = 0; k < 8; k++)
        if (on_stack[k] != seed + k)
            return;
    if (a == seed + SW_ROUNDS && b == seed * 3 + 3 * SW_ROUNDS &&
        c == seed * 7 + 7 * SW_ROUNDS && d == (double)seed * 0.5 + 0.5 * SW_ROUNDS)
        sw_ok++;
}

START_TEST(test_many_coroutines_keep_their_registers_across_switches)
{
    static int ids[SW_COROS];
    int i;

    sw_ok = 0;
    for (i = 0; i < SW_COROS; i++)
        ids[i] = chan_go(switch_fn, (void *)(intptr_t)(i * 1000 + 1));
    for (i = 0; i < SW_COROS; i++)
        ck_assert_int_eq(chan_join(ids[i], -1), 0);
    ck_assert_int_eq(sw_ok, SW_COROS);
}
END_TEST

static int fp_mode_seen[2];

static void fp_upward_fn(void *arg)
{
    (void)arg;
    fesetround(FE_UPWARD);
    chan_yield();
    fp_mode_seen[0] = fegetround();
}

static void fp_default_fn(void *arg)
{
    (void)arg;
    fp_mode_seen[1] = fegetround();
    chan_yield();
}

START_TEST(test_rounding_mode_belongs_to_each_coroutine)
{
    int a = chan_go(fp_upward_fn, NULL);
    int b = chan_go(fp_default_fn, NULL);

    ck_assert_int_eq(chan_join(a, -1), 0);
    ck_assert_int_eq(chan_join(b, -1), 0);
    ck_assert_int_eq(fp_mode_seen[0], FE_UPWARD);
    ck_assert_int_eq(fp_mode_seen[1], FE_TONEAREST);
    ck_assert_int_eq(fegetround(), FE_TONEAREST);
}
END_TEST

static int self_seen;

static void self_fn(void *arg)
{
    (void)arg;
    self_seen = chan_self();
}

START_TEST(test_ids_are_positive_distinct_and_main_is_one)
{
    int a, b;

    ck_assert_int_eq(chan_self(), 1);
    a = chan_go(self_fn, NULL);
    ck_assert_int_gt(a, 1);
    ck_assert_int_eq(chan_join(a, -1), 0);
    ck_assert_int_eq(self_seen, a);
    b = chan_go(self_fn, NULL);
    ck_assert_int_gt(b, a);
    ck_assert_int_eq(chan_join(b, -1), 0);
    ck_assert_int_eq(self_seen, b);
}
END_TEST

/* ---- join ------------------------------------------------------------ */

static void noop_fn(void *arg)
{
    (void)arg;
}

static void sleep_ms_fn(void *arg)
{
    chan_sleep(chan_now() + (int64_t)(intptr_t)arg);
}

START_TEST(test_join_of_a_finished_coroutine_returns_zero)
{
    int id = chan_go(noop_fn, NULL);

    ck_assert_int_eq(chan_join(id, -1), 0);
    /* Long gone, joined again, polled: still 0. */
    ck_assert_int_eq(chan_join(id, -1), 0);
    ck_assert_int_eq(chan_join(id, 0), 0);
}
END_TEST

START_TEST(test_join_errors)
{
    errno = 0;
    ck_assert_int_eq(chan_join(chan_self(), -1), -1);
    ck_assert_int_eq(errno, EDEADLK);
    ck_assert_int_eq(chan_join(0, -1), -1);
    ck_assert_int_eq(errno, ESRCH);
    ck_assert_int_eq(chan_join(-3, -1), -1);
    ck_assert_int_eq(errno, ESRCH);
    ck_assert_int_eq(chan_join(1000000, -1), -1);
    ck_assert_int_eq(errno, ESRCH);
}
END_TEST

START_TEST(test_join_times_out_never_early)
{
    int id = chan_go(sleep_ms_fn, (void *)(intptr_t)200);
    int64_t deadline = chan_now() + 20;

    ck_assert_int_eq(chan_join(id, deadline), -1);
    ck_assert_int_eq(errno, ETIMEDOUT);
    ck_assert_int_ge(chan_now(), deadline);
    ck_assert_int_eq(chan_join(id, 0), -1); /* deadline 0 polls */
    ck_assert_int_eq(errno, ETIMEDOUT);
    ck_assert_int_eq(chan_join(id, -1), 0);
}
END_TEST

static int joiners_done;

static void joiner_fn(void *arg)
{
    if (chan_join((int)(intptr_t)arg, -1) == 0)
        joiners_done++;
}

START_TEST(test_join_wakes_every_joiner)
{
    int target = chan_go(sleep_ms_fn, (void *)(intptr_t)10);
    int ids[3], i;

    joiners_done = 0;
    for (i = 0; i < 3; i++)
        ids[i] = chan_go(joiner_fn, (void *)(intptr_t)target);
    ck_assert_int_eq(chan_join(target, -1), 0);
    for (i = 0; i < 3; i++)
        ck_assert_int_eq(chan_join(ids[i], -1), 0);
    ck_assert_int_eq(joiners_done, 3);
}
END_TEST

/* ---- cancel ---------------------------------------------------------- */

static int cancel_rc, cancel_errno;
static int64_t cancel_after_rc;

static void cancel_sleeper_fn(void *arg)
{
    (void)arg;
    errno = 0;
    cancel_rc = chan_sleep(-1);
    cancel_errno = errno;
    /* Later blocking calls fail at once, even a sleep that has no deadline. */
    cancel_after_rc = chan_sleep(chan_now() + 10000);
}

START_TEST(test_cancel_ends_a_sleep_with_ecanceled)
{
    int id = chan_go(cancel_sleeper_fn, NULL);
    int64_t t0;

    chan_yield(); /* let it block */
    t0 = chan_now();
    ck_assert_int_eq(chan_cancel(id), 0);
    ck_assert_int_eq(chan_join(id, -1), 0);
    ck_assert_int_eq(cancel_rc, -1);
    ck_assert_int_eq(cancel_errno, ECANCELED);
    ck_assert_int_eq(cancel_after_rc, -1);
    ck_assert_int_lt(chan_now() - t0, 5000);
}
END_TEST

START_TEST(test_cancel_errors)
{
    int id = chan_go(noop_fn, NULL);

    ck_assert_int_eq(chan_cancel(999999), -1);
    ck_assert_int_eq(errno, ESRCH);
    ck_assert_int_eq(chan_cancel(0), -1);
    ck_assert_int_eq(errno, ESRCH);
    ck_assert_int_eq(chan_join(id, -1), 0);
    ck_assert_int_eq(chan_cancel(id), 0); /* finished: nothing to do */
}
END_TEST

static int join_cancel_rc, join_cancel_errno;

static void cancelled_joiner_fn(void *arg)
{
    join_cancel_rc = chan_join((int)(intptr_t)arg, -1);
    join_cancel_errno = errno;
}

START_TEST(test_cancel_ends_a_join_and_the_target_lives_on)
{
    int target = chan_go(sleep_ms_fn, (void *)(intptr_t)30);
    int j = chan_go(cancelled_joiner_fn, (void *)(intptr_t)target);

    chan_yield();
    ck_assert_int_eq(chan_cancel(j), 0);
    ck_assert_int_eq(chan_join(j, -1), 0);
    ck_assert_int_eq(join_cancel_rc, -1);
    ck_assert_int_eq(join_cancel_errno, ECANCELED);
    ck_assert_int_eq(chan_join(target, -1), 0);
}
END_TEST

START_TEST(test_cancel_of_self_fails_later_blocking_calls)
{
    ck_assert_int_eq(chan_cancel(chan_self()), 0);
    ck_assert_int_eq(chan_sleep(chan_now() + 1000), -1);
    ck_assert_int_eq(errno, ECANCELED);
    chan_yield(); /* not a blocking call: still fine */
}
END_TEST

/* ---- deadlines ------------------------------------------------------- */

START_TEST(test_sleep_never_returns_early)
{
    static const int ms[] = { 1, 2, 5, 13, 30 };
    size_t i;

    for (i = 0; i < sizeof ms / sizeof ms[0]; i++) {
        int64_t deadline = chan_now() + ms[i];

        ck_assert_int_eq(chan_sleep(deadline), 0);
        ck_assert_int_ge(chan_now(), deadline);
        ck_assert_int_lt(chan_now(), deadline + 1000);
    }
    ck_assert_int_eq(chan_sleep(0), 0);
    ck_assert_int_eq(chan_sleep(chan_now() - 5), 0);
}
END_TEST

static int wake_log[8], wake_n;

static void timed_fn(void *arg)
{
    int ms = (int)(intptr_t)arg;
    int64_t deadline = chan_now() + ms;

    chan_sleep(deadline);
    if (chan_now() >= deadline)
        wake_log[wake_n++] = ms;
}

START_TEST(test_sleepers_wake_in_deadline_order)
{
    static const int ms[] = { 40, 10, 30, 20, 1 };
    int ids[5], i;

    wake_n = 0;
    for (i = 0; i < 5; i++)
        ids[i] = chan_go(timed_fn, (void *)(intptr_t)ms[i]);
    for (i = 0; i < 5; i++)
        ck_assert_int_eq(chan_join(ids[i], -1), 0);
    ck_assert_int_eq(wake_n, 5);
    ck_assert_int_eq(wake_log[0], 1);
    ck_assert_int_eq(wake_log[1], 10);
    ck_assert_int_eq(wake_log[2], 20);
    ck_assert_int_eq(wake_log[3], 30);
    ck_assert_int_eq(wake_log[4], 40);
}
END_TEST

static volatile int spin_flag;

static void set_flag_later_fn(void *arg)
{
    (void)arg;
    chan_sleep(chan_now() + 5);
    spin_flag = 1;
}

START_TEST(test_busy_yielding_does_not_starve_sleepers)
{
    int id = chan_go(set_flag_later_fn, NULL);
    int64_t give_up = chan_now() + 5000;

    spin_flag = 0;
    while (!spin_flag && chan_now() < give_up)
        chan_yield();
    ck_assert_int_eq(spin_flag, 1);
    ck_assert_int_eq(chan_join(id, -1), 0);
}
END_TEST

/* ---- stacks ---------------------------------------------------------- */

/* Each frame holds 256 bytes that are read after the call, so no compiler can fold it into a loop. */
static long deep(long n)
{
    volatile char pad[256];
    long r;

    pad[0] = 1;
    pad[255] = 0;
    if (n == 0)
        return 0;
    r = deep(n - 1);
    return r + pad[0] + pad[255];
}

static long deep_result;

static void deep_fn(void *arg)
{
    deep_result = deep((long)(intptr_t)arg);
}

START_TEST(test_big_stack_allows_deep_recursion)
{
    /* ~100,000 frames of 300+ bytes: far past the default 256 KiB. */
    int id = chan_go_stack(deep_fn, (void *)(intptr_t)100000, (size_t)256 << 20);

    ck_assert_int_gt(id, 0);
    ck_assert_int_eq(chan_join(id, -1), 0);
    ck_assert_int_eq(deep_result, 100000);
}
END_TEST

START_TEST(test_go_stack_rejects_sizes_over_1gib)
{
    ck_assert_int_eq(chan_go_stack(noop_fn, NULL, ((size_t)1 << 30) + 1), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(chan_go(NULL, NULL), -1);
    ck_assert_int_eq(errno, EINVAL);
}
END_TEST

static void overflow_fn(void *arg)
{
    (void)arg;
    deep(1L << 40);
}

static void overflow_child(void)
{
    chan_join(chan_go(overflow_fn, NULL), -1);
}

START_TEST(test_stack_overflow_dies_with_a_message)
{
    char buf[4096];
    int status = run_child(overflow_child, buf, sizeof buf, 20000);

    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
                  "child status %#x, stderr: %s", status, buf);
    ck_assert_msg(strstr(buf, "stack overflow") != NULL, "stderr: %s", buf);
    ck_assert_msg(strstr(buf, "chan_go_stack") != NULL, "stderr: %s", buf);
}
END_TEST

static void deadlock_child(void)
{
    chan_t *ch = chan_make(0);
    chan_msg_t m;

    chan_recv(ch, &m, -1);
}

START_TEST(test_deadlock_aborts_with_a_message)
{
    char buf[4096];
    int status = run_child(deadlock_child, buf, sizeof buf, 20000);

    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
                  "child status %#x, stderr: %s", status, buf);
    ck_assert_msg(strstr(buf, "deadlock") != NULL, "stderr: %s", buf);
    ck_assert_msg(strstr(buf, "recv") != NULL, "stderr: %s", buf);
}
END_TEST

static void dump_child(void)
{
    chan_go(sleep_ms_fn, (void *)(intptr_t)60000);
    chan_yield();
    raise(SIGQUIT);
    chan_sleep(chan_now() + 20);
}

START_TEST(test_sigquit_dumps_coroutines_when_asked)
{
    char buf[4096];
    int status;

    setenv("CHAN_SIGQUIT_DUMP", "1", 1);
    status = run_child(dump_child, buf, sizeof buf, 20000);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %#x: %s", status, buf);
    ck_assert_msg(strstr(buf, "2 coroutines") != NULL, "stderr: %s", buf);
    ck_assert_msg(strstr(buf, "sleep") != NULL, "stderr: %s", buf);
}
END_TEST

/* ---- threads --------------------------------------------------------- */

struct thread_run {
    int ids_ok;     /* coroutine ids started at 2 in this thread */
    long sum;       /* what its coroutines sent to its main */
};

static void thread_sender_fn(void *arg)
{
    chan_t *ch = arg;
    int me = chan_self();

    chan_send(ch, &me, sizeof me, -1);
}

static void *thread_main(void *arg)
{
    struct thread_run *tr = arg;
    chan_t *ch = chan_make(0);
    chan_msg_t m;
    int i, first = 0;

    for (i = 0; i < 50; i++) {
        int id = chan_go(thread_sender_fn, ch);

        if (i == 0)
            first = id;
    }
    tr->ids_ok = chan_self() == 1 && first == 2;
    for (i = 0; i < 50; i++) {
        if (chan_recv(ch, &m, chan_now() + 5000) != 1)
            break;
        tr->sum += *(int *)m.data;
        chan_msg_free(&m);
    }
    chan_sleep(chan_now() + 2);
    chan_free(ch);
    return NULL;
}

START_TEST(test_each_thread_has_its_own_scheduler)
{
    pthread_t th[2];
    struct thread_run tr[2];
    int i, mine = chan_go(noop_fn, NULL); /* this thread's ids are its own */

    memset(tr, 0, sizeof tr);
    for (i = 0; i < 2; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, thread_main, &tr[i]), 0);
    for (i = 0; i < 2; i++) {
        ck_assert_int_eq(pthread_join(th[i], NULL), 0);
        ck_assert_int_eq(tr[i].ids_ok, 1);
        ck_assert_int_eq(tr[i].sum, 50 * (2 + 51) / 2); /* ids 2..51 */
    }
    ck_assert_int_eq(mine, 2);
    ck_assert_int_eq(chan_join(mine, -1), 0);
}
END_TEST

/* ---- scale and cost -------------------------------------------------- */

/*
 * ASan's swapcontext interceptor clears the shadow of the whole target
 * stack on every switch; only that debugging combination gets fewer.
 */
#if defined(CHAN_CTX_UCONTEXT) && defined(CHAN_SANITIZERS)
#define PARKED 20000
#else
#define PARKED 100000
#endif

static int parked_done;

static void parked_fn(void *arg)
{
    chan_t *ch = arg;
    chan_msg_t m;

    if (chan_recv(ch, &m, -1) == 1) {
        chan_msg_free(&m);
        parked_done++;
    }
}

START_TEST(test_100k_coroutines_park_on_channels_and_all_finish)
{
    chan_t *chs[4];
    long before, after;
    int64_t t0;
    int i, bad = 0;

    for (i = 0; i < 4; i++)
        chs[i] = chan_make(0);
    parked_done = 0;
    before = rss_kib();
    t0 = now_ns();
    for (i = 0; i < PARKED; i++)
        bad += chan_go(parked_fn, chs[i % 4]) <= 0;
    ck_assert_int_eq(bad, 0);
    chan_yield(); /* each runs once and parks in chan_recv */
    after = rss_kib();
    for (i = 0; i < 4; i++)
        ck_assert_int_eq(chan_len(chs[i]), 0);
    printf("coro: %d parked coroutines: RSS +%ld KiB (%.1f KiB each), spawned and parked in %.0f ms\n",
           PARKED, after - before, (double)(after - before) / PARKED,
           (double)(now_ns() - t0) / 1e6);
    ck_assert_int_lt(after, 1L << 20); /* KiB: under 1 GiB */
    for (i = 0; i < PARKED; i++)
        bad += chan_send(chs[i % 4], "x", 1, 0) != 0; /* a receiver waits for each */
    ck_assert_int_eq(bad, 0);
    for (i = 0; i < 4; i++)
        ck_assert_int_eq(chan_send(chs[i], "x", 1, 0), -1); /* and no more */
    chan_sleep(chan_now() + 1); /* let them all finish */
    ck_assert_int_eq(parked_done, PARKED);
    for (i = 0; i < 4; i++)
        chan_free(chs[i]);
}
END_TEST

START_TEST(test_measure_spawn_and_join)
{
    int n = 100000, i, bad = 0;
    int64_t t0 = now_ns();
    double ns;

    /* No ck_assert in the timed loop: each one costs a write to Check's pipe. */
    for (i = 0; i < n; i++)
        bad += chan_join(chan_go(noop_fn, NULL), -1) != 0;
    ns = (double)(now_ns() - t0) / n;
    ck_assert_int_eq(bad, 0);
    printf("coro: spawn+join %.0f ns\n", ns);
    ck_assert_double_lt(ns, 100000.0);
}
END_TEST

static void yielder_fn(void *arg)
{
    int n = (int)(intptr_t)arg;

    while (n--)
        chan_yield();
}

START_TEST(test_measure_switch)
{
    int n = 1000000;
    int id = chan_go(yielder_fn, (void *)(intptr_t)n);
    int64_t t0 = now_ns();
    double ns;
    int i;

    for (i = 0; i < n; i++)
        chan_yield();
    ns = (double)(now_ns() - t0) / (2.0 * n);
    ck_assert_int_eq(chan_join(id, -1), 0);
    printf("coro: yield switch %.0f ns\n", ns);
    ck_assert_double_lt(ns, 100000.0);
}
END_TEST

/* ---- suite ----------------------------------------------------------- */

static Suite *coro_suite(void)
{
    Suite *s = suite_create("coro");
    TCase *tc;

    tc = tcase_create("switch");
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_yield_runs_coroutines_in_fifo_order);
    tcase_add_test(tc, test_many_coroutines_keep_their_registers_across_switches);
    tcase_add_test(tc, test_rounding_mode_belongs_to_each_coroutine);
    tcase_add_test(tc, test_ids_are_positive_distinct_and_main_is_one);
    suite_add_tcase(s, tc);

    tc = tcase_create("join_cancel");
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_join_of_a_finished_coroutine_returns_zero);
    tcase_add_test(tc, test_join_errors);
    tcase_add_test(tc, test_join_times_out_never_early);
    tcase_add_test(tc, test_join_wakes_every_joiner);
    tcase_add_test(tc, test_cancel_ends_a_sleep_with_ecanceled);
    tcase_add_test(tc, test_cancel_errors);
    tcase_add_test(tc, test_cancel_ends_a_join_and_the_target_lives_on);
    tcase_add_test(tc, test_cancel_of_self_fails_later_blocking_calls);
    suite_add_tcase(s, tc);

    tc = tcase_create("deadlines");
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_sleep_never_returns_early);
    tcase_add_test(tc, test_sleepers_wake_in_deadline_order);
    tcase_add_test(tc, test_busy_yielding_does_not_starve_sleepers);
    suite_add_tcase(s, tc);

    tc = tcase_create("stacks");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_big_stack_allows_deep_recursion);
    tcase_add_test(tc, test_go_stack_rejects_sizes_over_1gib);
    tcase_add_test(tc, test_stack_overflow_dies_with_a_message);
    tcase_add_test(tc, test_deadlock_aborts_with_a_message);
    tcase_add_test(tc, test_sigquit_dumps_coroutines_when_asked);
    suite_add_tcase(s, tc);

    tc = tcase_create("threads");
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_each_thread_has_its_own_scheduler);
    suite_add_tcase(s, tc);

    /* Page faults dominate here; a loaded 2-core machine under ASan needs room. */
    tc = tcase_create("scale");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_100k_coroutines_park_on_channels_and_all_finish);
    tcase_add_test(tc, test_measure_spawn_and_join);
    tcase_add_test(tc, test_measure_switch);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(coro_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
