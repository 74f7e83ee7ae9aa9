/*
 * worker.c: one process of the example pipeline's worker pool (see
 * pipeline.h). M coroutines share one broker connection; each takes jobs
 * from PREFIX.jobs, does the work, and sends the result on PREFIX.results,
 * until jobs is closed and drained. The process then reports on PREFIX.done
 * so the collector can tell when the last worker has finished.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pipeline.h"

static const char usage[] =
    "usage: worker [-s HOST:PORT] [-p PREFIX] [-c M] [-d MS]\n"
    "  run M coroutines (default 8) that turn jobs into results until jobs is\n"
    "  closed; each job takes MS milliseconds more (default 0)\n";

/* What every coroutine of this process shares; lives on main's stack. */
struct pool {
    chan_t *jobs;      /* borrowed: main owns the handles */
    chan_t *results;
    long delay_ms;     /* simulated time a job takes */
    long done;         /* jobs finished by all coroutines so far */
    int failed;        /* some coroutine hit an error */
};

static void worker_run(void *arg)
{
    struct pool *p = arg;
    chan_msg_t job;
    char result[64];
    int r;

    /* chan_recv parks only this coroutine; the others keep working and the
     * connection carries all their requests at once. */
    while ((r = chan_recv(p->jobs, &job, -1)) == 1) {
        uint64_t k = strtoull(job.data, NULL, 10);
        int len;

        chan_msg_free(&job);
        if (p->delay_ms > 0)
            chan_sleep(chan_now() + p->delay_ms);
        len = snprintf(result, sizeof result, "%llu %llu", (unsigned long long)k,
                       (unsigned long long)pipeline_work(k));
        if (chan_send(p->results, result, (size_t)len, -1) < 0) {
            fprintf(stderr, "worker %d: send result: %s\n", (int)getpid(), strerror(errno));
            p->failed = 1;
            return;
        }
        p->done++;
    }
    if (r < 0) {
        fprintf(stderr, "worker %d: recv job: %s\n", (int)getpid(), strerror(errno));
        p->failed = 1;
    }
}

int main(int argc, char **argv)
{
    struct pipeline_opts o;
    struct pool p = { 0 };
    chan_client_t *cl;
    chan_t *done;
    char report[64];
    int *crs, len, rc = 0;
    long i;

    pipeline_args(&o, argc, argv, "s:p:c:d:", usage);
    cl = pipeline_connect(&o, "worker");
    p.jobs = pipeline_open(cl, &o, "jobs", PIPELINE_JOBS_CAP);
    p.results = pipeline_open(cl, &o, "results", PIPELINE_RESULTS_CAP);
    done = pipeline_open(cl, &o, "done", PIPELINE_DONE_CAP);
    p.delay_ms = o.delay_ms;

    crs = calloc((size_t)o.coroutines, sizeof *crs);
    if (!crs) {
        perror("worker");
        return 1;
    }
    for (i = 0; i < o.coroutines; i++) {
        crs[i] = chan_go(worker_run, &p);
        if (crs[i] < 0) {
            fprintf(stderr, "worker: chan_go: %s\n", strerror(errno));
            p.failed = 1;
            break;
        }
    }
    /* Every coroutine ends when jobs is closed and drained (or on error). */
    while (i-- > 0)
        chan_join(crs[i], -1);
    free(crs);

    /* Report even after a failure, so the collector is not left waiting
     * for us; its count check then shows what went missing. */
    len = snprintf(report, sizeof report, "%d %ld", (int)getpid(), p.done);
    if (chan_send(done, report, (size_t)len, -1) < 0) {
        fprintf(stderr, "worker: send done: %s\n", strerror(errno));
        rc = 1;
    }
    fprintf(stderr, "worker %d: %ld jobs on %ld coroutines\n", (int)getpid(), p.done,
            o.coroutines);
    chan_free(done);
    chan_free(p.results);
    chan_free(p.jobs);
    chan_disconnect(cl);
    return rc || p.failed;
}
