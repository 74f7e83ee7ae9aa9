/*
 * pipeline.h: what the producer, the workers and the collector of the
 * example job pipeline agree on: channel names and capacities, the work
 * itself, and the closed forms the collector checks the results against.
 *
 * The run, end to end:
 *   producer   sends "1".."N" on PREFIX.jobs, then closes jobs.
 *   worker     (W processes, M coroutines each) receives jobs until jobs is
 *              closed and drained, sends "K F(K)" on PREFIX.results for
 *              each, then, once all its coroutines have ended, sends one
 *              "PID COUNT" on PREFIX.done.
 *   collector  prints results until results is closed and drained; a second
 *              coroutine of the collector takes W messages from done and then
 *              closes results. That is Go's WaitGroup-then-close idiom spread
 *              over processes: a worker's results are all sent before its
 *              done message, so closing results after the last done loses
 *              nothing, and close stays the one end-of-stream signal.
 * Every process opens every channel with the capacities below (create or
 * attach), so they may start in any order. The collector deletes the three
 * channels at the end, so the next run with the same PREFIX starts fresh.
 */
#ifndef PIPELINE_H
#define PIPELINE_H

#include <stdint.h>

#include <chan.h>

/* Capacities: enough slack that no process waits on another's pace. */
#define PIPELINE_JOBS_CAP 64
#define PIPELINE_RESULTS_CAP 64
#define PIPELINE_DONE_CAP 16

/* Largest N whose sums below fit the closed forms in 64 bits. */
#define PIPELINE_MAX_N 1000000

/* The work a job stands for: cheap and deterministic, so it can be checked. */
static inline uint64_t pipeline_work(uint64_t k)
{
    return k * k;
}

/* Sum of pipeline_work(k) for k = 1..n: n(n+1)(2n+1)/6, exact for n <= MAX_N. */
static inline uint64_t pipeline_expect_sum(uint64_t n)
{
    return n * (n + 1) * (2 * n + 1) / 6;
}

/* Sum of k * pipeline_work(k) for k = 1..n: (n(n+1)/2)^2, modulo 2^64. */
static inline uint64_t pipeline_expect_check(uint64_t n)
{
    uint64_t t = n * (n + 1) / 2;
    return t * t;
}

/* Options shared by the three programs; filled by pipeline_args. */
struct pipeline_opts {
    const char *addr;     /* broker "host:port" (-s, $CHAND_ADDR, 127.0.0.1:7070) */
    const char *prefix;   /* -p: run id put before every channel name, or "" */
    long n;               /* -n: number of jobs */
    long coroutines;      /* -c: coroutines per worker process */
    long workers;         /* -w: worker processes the collector waits for */
    long delay_ms;        /* -d: time each job takes a worker, ms */
    long timeout_ms;      /* -t: collector gives up after this long; -1 never */
};

/*
 * Parse argv with getopt for the options named in optstring (a subset of
 * "s:p:n:c:w:d:t:"); prints usage and exits 2 on anything else.
 */
void pipeline_args(struct pipeline_opts *o, int argc, char **argv, const char *optstring,
                   const char *usage);

/* Connect as client_name, or print why not and exit 1. */
chan_client_t *pipeline_connect(const struct pipeline_opts *o, const char *client_name);

/*
 * Open PREFIX.what with capacity cap, or print why not and exit 1. The
 * handle is the caller's to chan_free before chan_disconnect.
 */
chan_t *pipeline_open(chan_client_t *cl, const struct pipeline_opts *o, const char *what,
                      long cap);

/* Write PREFIX.what into buf (at least 256 bytes). */
void pipeline_name(char *buf, const struct pipeline_opts *o, const char *what);

#endif /* PIPELINE_H */
