/*
 * collector.c: the tail of the example job pipeline (see pipeline.h).
 * Receives every result until PREFIX.results is closed and drained, checks
 * that each job 1..N came back exactly once with the right value and that
 * the sums match their closed forms, and prints one line saying so. A
 * second coroutine closes results once all W workers have reported done.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline.h"

static const char usage[] =
    "usage: collector [-s HOST:PORT] [-p PREFIX] [-n N] [-w W] [-t MS]\n"
    "  collect the results of jobs 1..N (default 1000) from W worker processes\n"
    "  (default 1), verify them and print a summary; give up after MS ms\n"
    "  (default: never). Exit status 0 only when every check passed.\n";

/* State of the closing coroutine; lives on main's stack. */
struct closer {
    chan_t *done;        /* borrowed from main */
    chan_t *results;     /* borrowed from main */
    long workers;        /* reports to wait for */
    int64_t deadline;    /* give up at this chan_now() time; -1 never */
    long reported;       /* jobs the workers say they did */
    int failed;
};

/* Wait for every worker's done report, then end the results stream. */
static void collector_closer(void *arg)
{
    struct closer *c = arg;
    chan_msg_t m;
    const char *sp;
    long i;

    for (i = 0; i < c->workers; i++) {
        int r = chan_recv(c->done, &m, c->deadline);
        if (r != 1) {
            fprintf(stderr, "collector: waiting for worker %ld of %ld: %s\n", i + 1,
                    c->workers, r == 0 ? "done channel closed" : strerror(errno));
            c->failed = 1;
            return;
        }
        /* "PID COUNT" */
        sp = strchr(m.data, ' ');
        if (sp)
            c->reported += strtol(sp + 1, NULL, 10);
        chan_msg_free(&m);
    }
    /* All results were sent before the last report: after this close the
     * main loop drains what is buffered and then sees the end. */
    if (chan_close(c->results) < 0) {
        fprintf(stderr, "collector: close results: %s\n", strerror(errno));
        c->failed = 1;
    }
}

/* Delete the run's channels so the next run with this prefix starts fresh. */
static void collector_tidy(chan_client_t *cl, const struct pipeline_opts *o)
{
    static const char *const names[] = { "jobs", "results", "done" };
    char name[256];
    size_t i;

    for (i = 0; i < sizeof names / sizeof names[0]; i++) {
        pipeline_name(name, o, names[i]);
        if (chan_delete(cl, name) < 0 && errno != ENOENT)
            fprintf(stderr, "collector: delete %s: %s\n", name, strerror(errno));
    }
}

int main(int argc, char **argv)
{
    struct pipeline_opts o;
    struct closer c = { 0 };
    chan_client_t *cl;
    chan_t *results, *done;
    unsigned char *seen;
    uint64_t count = 0, sum = 0, check = 0, bad = 0, dup = 0;
    chan_msg_t m;
    int cr, r, ok;

    pipeline_args(&o, argc, argv, "s:p:n:w:t:", usage);
    seen = calloc((size_t)o.n + 1, 1);
    if (!seen) {
        perror("collector");
        return 1;
    }
    cl = pipeline_connect(&o, "collector");
    results = pipeline_open(cl, &o, "results", PIPELINE_RESULTS_CAP);
    done = pipeline_open(cl, &o, "done", PIPELINE_DONE_CAP);

    c.done = done;
    c.results = results;
    c.workers = o.workers;
    c.deadline = o.timeout_ms < 0 ? -1 : chan_now() + o.timeout_ms;
    cr = chan_go(collector_closer, &c);
    if (cr < 0) {
        perror("collector: chan_go");
        return 1;
    }

    while ((r = chan_recv(results, &m, c.deadline)) == 1) {
        unsigned long long k, f;

        /* "K F(K)": check it is a job we sent, seen once, done right. */
        if (sscanf(m.data, "%llu %llu", &k, &f) != 2 || k < 1 || k > (uint64_t)o.n ||
            f != pipeline_work(k))
            bad++;
        else if (seen[k])
            dup++;
        else {
            seen[k] = 1;
            sum += f;
            check += k * f;
        }
        count++;
        chan_msg_free(&m);
    }
    if (r < 0)
        fprintf(stderr, "collector: recv result %" PRIu64 ": %s\n", count + 1,
                strerror(errno));
    /* On a timeout the closer may still be parked: cancel before joining. */
    chan_cancel(cr);
    chan_join(cr, -1);

    ok = r == 0 && !c.failed && count == (uint64_t)o.n && bad == 0 && dup == 0 &&
         sum == pipeline_expect_sum((uint64_t)o.n) &&
         check == pipeline_expect_check((uint64_t)o.n) && c.reported == o.n;
    printf("pipeline: %" PRIu64 " results of %ld jobs from %ld workers: "
           "sum %" PRIu64 " (expected %" PRIu64 "), checksum %" PRIu64
           " (expected %" PRIu64 "), %" PRIu64 " wrong, %" PRIu64 " duplicate: %s\n",
           count, o.n, o.workers, sum, pipeline_expect_sum((uint64_t)o.n), check,
           pipeline_expect_check((uint64_t)o.n), bad, dup, ok ? "OK" : "FAILED");

    chan_free(done);
    chan_free(results);
    if (ok)
        collector_tidy(cl, &o);
    chan_disconnect(cl);
    free(seen);
    return ok ? 0 : 1;
}
