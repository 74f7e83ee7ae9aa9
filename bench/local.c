/*
 * local.c: workload 7, libchanclient's coroutines and local channels in
 * one thread, the counterpart of bench/go/local.go (same tests, same
 * output line). Tests: handoff (unbuffered ping-pong, ns per hand-off),
 * spawn (chan_go + chan_join, ns each), buffered (64-byte messages through
 * a cap-1024 channel, msgs/s, checked by count and checksum), parked (RSS
 * per coroutine blocked in chan_recv).
 *
 * usage: bench-local TEST N
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <chan.h>

#define LOCAL_MSG 64           /* bytes per buffered message */

static double local_secs(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void local_die(const char *what)
{
    fprintf(stderr, "bench-local: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* VmRSS of this process in bytes. */
static long local_rss(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;

    if (f == NULL)
        return -1;
    while (fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb * 1024;
}

/* The two ends of the ping-pong and how many round trips. */
struct local_pp {
    chan_t *ping, *pong;
    long n;
    int failed;
};

static void local_ponger(void *arg)
{
    struct local_pp *p = arg;
    chan_msg_t m;

    for (long i = 0; i < p->n; i++) {
        if (chan_recv(p->ping, &m, -1) != 1 || chan_send(p->pong, m.data, m.len, -1) < 0) {
            p->failed = 1;
            return;
        }
        chan_msg_free(&m);
    }
}

static int local_handoff(long n)
{
    struct local_pp p = {chan_make(0), chan_make(0), n, 0};
    chan_msg_t m;
    double t;
    int cr;

    if (p.ping == NULL || p.pong == NULL || (cr = chan_go(local_ponger, &p)) < 0)
        local_die("setup");
    t = local_secs();
    for (long i = 0; i < n; i++) {
        if (chan_send(p.ping, &i, sizeof i, -1) < 0 || chan_recv(p.pong, &m, -1) != 1)
            local_die("ping");
        if (m.len != sizeof i || memcmp(m.data, &i, sizeof i) != 0)
            p.failed = 1;
        chan_msg_free(&m);
    }
    t = local_secs() - t;
    chan_join(cr, -1);
    chan_free(p.ping);
    chan_free(p.pong);
    printf("workload=local test=handoff peer=chand n=%ld ns=%.1f ok=%d\n", 2 * n,
           t * 1e9 / (double)(2 * n), !p.failed);
    return p.failed;
}

static void local_nothing(void *arg)
{
    (void)arg;
}

static int local_spawn(long n)
{
    double t = local_secs();

    for (long i = 0; i < n; i++) {
        int cr = chan_go(local_nothing, NULL);

        if (cr < 0 || chan_join(cr, -1) < 0)
            local_die("spawn");
    }
    t = local_secs() - t;
    printf("workload=local test=spawn peer=chand n=%ld ns=%.1f ok=1\n", n, t * 1e9 / (double)n);
    return 0;
}

/* Producer of the buffered test: n messages numbered 0..n-1. */
struct local_buf {
    chan_t *ch;
    long n;
    int failed;
};

static void local_producer(void *arg)
{
    struct local_buf *b = arg;
    unsigned char msg[LOCAL_MSG] = {0};

    for (long i = 0; i < b->n; i++) {
        memcpy(msg, &i, sizeof i);
        if (chan_send(b->ch, msg, sizeof msg, -1) < 0) {
            b->failed = 1;
            break;
        }
    }
    chan_close(b->ch);
}

static int local_buffered(long n)
{
    struct local_buf b = {chan_make(1024), n, 0};
    unsigned long long sum = 0, xor = 0, want_sum = 0, want_xor = 0;
    long count = 0;
    chan_msg_t m;
    double t;
    int cr, ok;

    if (b.ch == NULL || (cr = chan_go(local_producer, &b)) < 0)
        local_die("setup");
    t = local_secs();
    while (chan_recv(b.ch, &m, -1) == 1) {
        long seq;

        memcpy(&seq, m.data, sizeof seq);
        if (m.len != LOCAL_MSG)
            b.failed = 1;
        count++;
        sum += (unsigned long long)seq;
        xor ^= (unsigned long long)seq;
        chan_msg_free(&m);
    }
    t = local_secs() - t;
    chan_join(cr, -1);
    chan_free(b.ch);
    for (long i = 0; i < n; i++) {
        want_sum += (unsigned long long)i;
        want_xor ^= (unsigned long long)i;
    }
    ok = !b.failed && count == n && sum == want_sum && xor == want_xor;
    printf("workload=local test=buffered peer=chand n=%ld msgs_per_s=%.0f ok=%d\n", n,
           (double)count / t, ok);
    return !ok;
}

/* Parked coroutines count themselves in before blocking. */
struct local_park {
    chan_t *ch;
    long started;
    long woken;
};

static void local_parked(void *arg)
{
    struct local_park *p = arg;
    chan_msg_t m;

    p->started++;
    if (chan_recv(p->ch, &m, -1) == 0)
        p->woken++;
}

static int local_park(long n)
{
    struct local_park p = {chan_make(0), 0, 0};
    int *crs = malloc((size_t)n * sizeof *crs);
    long before, after;
    int ok;

    if (p.ch == NULL || crs == NULL)
        local_die("setup");
    before = local_rss();
    for (long i = 0; i < n; i++)
        if ((crs[i] = chan_go(local_parked, &p)) < 0)
            local_die("chan_go");
    while (p.started < n)
        chan_yield();
    after = local_rss();
    chan_close(p.ch);
    for (long i = 0; i < n; i++)
        chan_join(crs[i], -1);
    ok = p.woken == n;
    printf("workload=local test=parked peer=chand n=%ld bytes=%.0f ok=%d\n", n,
           (double)(after - before) / (double)n, ok);
    chan_free(p.ch);
    free(crs);
    return !ok;
}

int main(int argc, char **argv)
{
    long n;

    if (argc != 3 || (n = atol(argv[2])) <= 0) {
        fprintf(stderr, "usage: bench-local handoff|spawn|buffered|parked N\n");
        return 2;
    }
    if (strcmp(argv[1], "handoff") == 0)
        return local_handoff(n);
    if (strcmp(argv[1], "spawn") == 0)
        return local_spawn(n);
    if (strcmp(argv[1], "buffered") == 0)
        return local_buffered(n);
    if (strcmp(argv[1], "parked") == 0)
        return local_park(n);
    fprintf(stderr, "bench-local: unknown test %s\n", argv[1]);
    return 2;
}
