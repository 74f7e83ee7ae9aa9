/*
 * producer.c: the head of the example job pipeline (see pipeline.h). Sends
 * the jobs "1".."N" on PREFIX.jobs, then closes it: close is how the
 * workers learn there is no more work, however many of them there are.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "pipeline.h"

static const char usage[] =
    "usage: producer [-s HOST:PORT] [-p PREFIX] [-n N]\n"
    "  send the jobs 1..N (default 1000, at most 1000000) on PREFIX.jobs, then close it\n";

int main(int argc, char **argv)
{
    struct pipeline_opts o;
    chan_client_t *cl;
    chan_t *jobs;
    char job[32];
    long k;
    int rc = 0;

    pipeline_args(&o, argc, argv, "s:p:n:", usage);
    cl = pipeline_connect(&o, "producer");
    jobs = pipeline_open(cl, &o, "jobs", PIPELINE_JOBS_CAP);

    /* Each send returns once the job is in the broker's buffer; when the
     * workers fall behind, the buffer fills and the send waits: the
     * producer can never run away from the pool. */
    for (k = 1; k <= o.n; k++) {
        int len = snprintf(job, sizeof job, "%ld", k);
        if (chan_send(jobs, job, (size_t)len, -1) < 0) {
            fprintf(stderr, "producer: send job %ld: %s\n", k, strerror(errno));
            rc = 1;
            goto out;
        }
    }
    /* Buffered jobs stay receivable after close; only then do the
     * workers' receives return 0. */
    if (chan_close(jobs) < 0) {
        fprintf(stderr, "producer: close jobs: %s\n", strerror(errno));
        rc = 1;
        goto out;
    }
    fprintf(stderr, "producer: sent %ld jobs and closed jobs\n", o.n);
out:
    chan_free(jobs);
    chan_disconnect(cl);
    return rc;
}
