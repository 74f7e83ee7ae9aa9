/*
 * pipeline.c: the plumbing the three pipeline programs share (options,
 * connecting, channel names), so that producer.c, worker.c and collector.c
 * show only their part of the job.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pipeline.h"

static long pipeline_number(const char *s, const char *usage)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 0) {
        fprintf(stderr, "bad number '%s'\n%s", s, usage);
        exit(2);
    }
    return v;
}

void pipeline_args(struct pipeline_opts *o, int argc, char **argv, const char *optstring,
                   const char *usage)
{
    int opt;

    *o = (struct pipeline_opts){
        .addr = getenv("CHAND_ADDR"),
        .prefix = "",
        .n = 1000,
        .coroutines = 8,
        .workers = 1,
        .delay_ms = 0,
        .timeout_ms = -1,
    };
    if (!o->addr || !*o->addr)
        o->addr = "127.0.0.1:7070";
    while ((opt = getopt(argc, argv, optstring)) != -1) {
        switch (opt) {
        case 's': o->addr = optarg; break;
        case 'p': o->prefix = optarg; break;
        case 'n': o->n = pipeline_number(optarg, usage); break;
        case 'c': o->coroutines = pipeline_number(optarg, usage); break;
        case 'w': o->workers = pipeline_number(optarg, usage); break;
        case 'd': o->delay_ms = pipeline_number(optarg, usage); break;
        case 't': o->timeout_ms = pipeline_number(optarg, usage); break;
        default: fputs(usage, stderr); exit(2);
        }
    }
    if (optind != argc || o->n < 1 || o->n > PIPELINE_MAX_N || o->coroutines < 1 ||
        o->workers < 1) {
        fputs(usage, stderr);
        exit(2);
    }
}

chan_client_t *pipeline_connect(const struct pipeline_opts *o, const char *client_name)
{
    struct chan_opts opts = { .client_name = client_name };
    chan_client_t *cl = chan_connect(o->addr, &opts);

    if (!cl) {
        fprintf(stderr, "%s: connect %s: %s\n", client_name, o->addr, strerror(errno));
        exit(1);
    }
    return cl;
}

void pipeline_name(char *buf, const struct pipeline_opts *o, const char *what)
{
    snprintf(buf, 256, "%s%s%s", o->prefix, *o->prefix ? "." : "", what);
}

chan_t *pipeline_open(chan_client_t *cl, const struct pipeline_opts *o, const char *what,
                      long cap)
{
    char name[256];
    chan_t *ch;

    pipeline_name(name, o, what);
    ch = chan_open(cl, name, cap);
    if (!ch) {
        fprintf(stderr, "open %s: %s\n", name, strerror(errno));
        exit(1);
    }
    return ch;
}
