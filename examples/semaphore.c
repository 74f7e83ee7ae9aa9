/*
 * semaphore.c: a limit on concurrent work, built from a buffered channel of
 * capacity K. Sending a token acquires (the send waits while K tokens are
 * out), receiving one releases. With -s HOST:PORT the channel lives on the
 * broker, so the limit holds across every process that uses the same
 * PREFIX:
 *
 *     semaphore -s 127.0.0.1:7070 -k 3 & semaphore -s 127.0.0.1:7070 -k 3
 *
 * To show the limit holds, each holder also drops a token in a second,
 * roomy channel ("active") while it works and reads that channel's length:
 * the number of holders at that instant, whichever process they are in.
 * The program prints the largest count it saw and fails if it exceeds K.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <chan.h>

static const char usage[] =
    "usage: semaphore [-k K] [-c COROUTINES] [-r ROUNDS] [-s HOST:PORT [-p PREFIX]]\n"
    "  COROUTINES coroutines (default 8) each do ROUNDS (default 10) units of\n"
    "  work, at most K (default 3) at a time across all processes\n";

/* Capacity of the gauge channel: far above any sane K, so a broken limit
 * shows up as a count above K instead of a stall. */
#define ACTIVE_CAP 4096

/* Shared by this process's coroutines; lives on main's stack. */
struct limit {
    chan_t *sem;             /* capacity K: one token per unit of work in progress */
    chan_t *active;          /* gauge: one token per holder that is working */
    chan_client_t *cl;       /* remote only, for chan_stat of the gauge */
    char active_name[256];   /* remote only */
    long rounds;             /* units of work per coroutine */
    long max_seen;           /* most holders observed at once */
    int failed;
};

/* Holders working right now, as the gauge channel's length says. */
static long semaphore_holders(struct limit *l)
{
    struct chan_info info;

    if (!l->cl)
        return chan_len(l->active);
    /* The broker's view, which counts the holders of every process. */
    if (chan_stat(l->cl, l->active_name, &info) < 0)
        return -1;
    return info.len;
}

static void semaphore_fail(struct limit *l, const char *what)
{
    fprintf(stderr, "semaphore: %s: %s\n", what, strerror(errno));
    l->failed = 1;
}

static void semaphore_worker(void *arg)
{
    struct limit *l = arg;
    chan_msg_t m;
    long r, n;

    for (r = 0; r < l->rounds && !l->failed; r++) {
        if (chan_send(l->sem, "", 0, -1) < 0) {        /* acquire */
            semaphore_fail(l, "acquire");
            return;
        }
        if (chan_send(l->active, "", 0, -1) < 0) {
            semaphore_fail(l, "gauge up");
            return;
        }
        n = semaphore_holders(l);
        if (n < 0) {
            semaphore_fail(l, "gauge");
            return;
        }
        if (n > l->max_seen)
            l->max_seen = n;
        chan_sleep(chan_now() + 2);                   /* the work */
        /* Leave the gauge before releasing, so it never counts a
         * coroutine that no longer holds a token. */
        if (chan_recv(l->active, &m, -1) != 1) {
            semaphore_fail(l, "gauge down");
            return;
        }
        chan_msg_free(&m);
        if (chan_recv(l->sem, &m, -1) != 1) {         /* release */
            semaphore_fail(l, "release");
            return;
        }
        chan_msg_free(&m);
    }
}

int main(int argc, char **argv)
{
    const char *addr = NULL, *prefix = NULL;
    struct limit l = { .rounds = 10 };
    long k = 3, coroutines = 8, i;
    char sem_name[256];
    int opt, *crs;

    while ((opt = getopt(argc, argv, "k:c:r:s:p:")) != -1) {
        switch (opt) {
        case 'k': k = strtol(optarg, NULL, 10); break;
        case 'c': coroutines = strtol(optarg, NULL, 10); break;
        case 'r': l.rounds = strtol(optarg, NULL, 10); break;
        case 's': addr = optarg; break;
        case 'p': prefix = optarg; break;
        default: fputs(usage, stderr); return 2;
        }
    }
    if (optind < argc || k < 1 || k >= ACTIVE_CAP || coroutines < 1 || l.rounds < 1) {
        fputs(usage, stderr);
        return 2;
    }

    if (!addr) {
        l.sem = chan_make((size_t)k);
        l.active = chan_make(ACTIVE_CAP);
    } else {
        l.cl = chan_connect(addr, NULL);
        if (!l.cl) {
            fprintf(stderr, "semaphore: %s: %s\n", addr, strerror(errno));
            return 1;
        }
        snprintf(sem_name, sizeof sem_name, "%s%ssemaphore", prefix ? prefix : "",
                 prefix ? "." : "");
        snprintf(l.active_name, sizeof l.active_name, "%s%ssemaphore.active",
                 prefix ? prefix : "", prefix ? "." : "");
        /* Every process must agree on K: another K is EEXIST. */
        l.sem = chan_open(l.cl, sem_name, k);
        l.active = chan_open(l.cl, l.active_name, ACTIVE_CAP);
    }
    if (!l.sem || !l.active) {
        fprintf(stderr, "semaphore: channel: %s\n", strerror(errno));
        return 1;
    }

    crs = calloc((size_t)coroutines, sizeof *crs);
    if (!crs) {
        perror("semaphore");
        return 1;
    }
    for (i = 0; i < coroutines; i++)
        if ((crs[i] = chan_go(semaphore_worker, &l)) < 0) {
            perror("semaphore: chan_go");
            l.failed = 1;
            break;
        }
    while (i-- > 0)
        chan_join(crs[i], -1);
    free(crs);

    printf("semaphore: limit %ld, %ld coroutines x %ld rounds, at most %ld at once: %s\n",
           k, coroutines, l.rounds, l.max_seen,
           l.failed ? "FAILED" : l.max_seen > k ? "LIMIT BROKEN" : "OK");
    chan_free(l.sem);
    chan_free(l.active);
    if (l.cl)
        chan_disconnect(l.cl);
    return l.failed || l.max_seen > k;
}
