/*
 * broadcast.c: one close wakes every waiter. M coroutines block receiving
 * on a channel nobody sends to; closing it releases all of them at once,
 * each with "closed and drained" (chan_recv returns 0), and every later
 * receiver learns it at once too. With -s HOST:PORT the channel is
 * PREFIX.broadcast on the broker, and waiters and closer may be processes:
 *
 *     broadcast -s 127.0.0.1:7070 -c 50 wait &
 *     broadcast -s 127.0.0.1:7070 -w 50 close   # once 50 receivers wait
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <chan.h>

static const char usage[] =
    "usage: broadcast [-c WAITERS] [-w EXPECT] [-s HOST:PORT [-p PREFIX] [wait | close]]\n"
    "  wait: WAITERS coroutines (default 50) block until the channel closes\n"
    "  close: close it once EXPECT receivers (default 0) are blocked on it\n";

/* Shared by the waiters; lives on main's stack. */
struct crowd {
    chan_t *ch;              /* the channel everyone waits on */
    long waiting;            /* coroutines that reached chan_recv */
    long released;           /* coroutines that saw the close */
    int failed;
};

static void broadcast_wait(void *arg)
{
    struct crowd *c = arg;
    chan_msg_t m;
    int r;

    c->waiting++;
    r = chan_recv(c->ch, &m, -1);
    if (r == 0) {
        c->released++;
        return;
    }
    if (r == 1) {
        fprintf(stderr, "broadcast: unexpected message\n");
        chan_msg_free(&m);
    } else {
        fprintf(stderr, "broadcast: recv: %s\n", strerror(errno));
    }
    c->failed = 1;
}

/* Receivers blocked on the channel: the broker's count when remote. */
static long broadcast_blocked(chan_client_t *cl, const char *name, const struct crowd *c)
{
    struct chan_info info;

    if (!cl)
        return c->waiting;
    if (chan_stat(cl, name, &info) < 0)
        return -1;
    return info.receivers;
}

/* Wait until expect receivers block on the channel, then close it. */
static int broadcast_close(chan_client_t *cl, const char *name, struct crowd *c, long expect)
{
    long n;

    /* Local waiters park inside chan_recv before control comes back here;
     * remote ones are parked once the broker counts them. Poll, never
     * guess with a fixed sleep. */
    while ((n = broadcast_blocked(cl, name, c)) < expect) {
        if (n < 0) {
            fprintf(stderr, "broadcast: stat: %s\n", strerror(errno));
            return -1;
        }
        if (cl)
            chan_sleep(chan_now() + 5);
        else
            chan_yield();
    }
    if (chan_close(c->ch) < 0) {
        fprintf(stderr, "broadcast: close: %s%s\n", strerror(errno),
                errno == EPIPE ? " (closed by an earlier run: use -p or chanctl rm)" : "");
        return -1;
    }
    printf("broadcast: closed with %ld receivers waiting\n", n);
    return 0;
}

int main(int argc, char **argv)
{
    const char *addr = NULL, *prefix = NULL, *role = "both";
    struct crowd c = { 0 };
    chan_client_t *cl = NULL;
    long waiters = 50, expect = 0, i;
    char name[256];
    int opt, *crs, rc = 0;

    while ((opt = getopt(argc, argv, "c:w:s:p:")) != -1) {
        switch (opt) {
        case 'c': waiters = strtol(optarg, NULL, 10); break;
        case 'w': expect = strtol(optarg, NULL, 10); break;
        case 's': addr = optarg; break;
        case 'p': prefix = optarg; break;
        default: fputs(usage, stderr); return 2;
        }
    }
    if (optind < argc)
        role = argv[optind++];
    if (optind < argc || waiters < 1 || expect < 0 || (strcmp(role, "both") && !addr) ||
        (strcmp(role, "both") && strcmp(role, "wait") && strcmp(role, "close"))) {
        fputs(usage, stderr);
        return 2;
    }
    if (strcmp(role, "both") == 0)
        expect = waiters;

    snprintf(name, sizeof name, "%s%sbroadcast", prefix ? prefix : "", prefix ? "." : "");
    if (!addr) {
        c.ch = chan_make(0);
    } else {
        cl = chan_connect(addr, NULL);
        if (!cl) {
            fprintf(stderr, "broadcast: %s: %s\n", addr, strerror(errno));
            return 1;
        }
        c.ch = chan_open(cl, name, 0);
    }
    if (!c.ch) {
        fprintf(stderr, "broadcast: channel: %s\n", strerror(errno));
        return 1;
    }

    if (strcmp(role, "close") == 0) {
        rc = broadcast_close(cl, name, &c, expect) < 0;
        goto out;
    }
    crs = calloc((size_t)waiters, sizeof *crs);
    if (!crs) {
        perror("broadcast");
        return 1;
    }
    for (i = 0; i < waiters; i++)
        if ((crs[i] = chan_go(broadcast_wait, &c)) < 0) {
            perror("broadcast: chan_go");
            c.failed = 1;
            break;
        }
    if (strcmp(role, "both") == 0 && !c.failed && broadcast_close(cl, name, &c, expect) < 0)
        c.failed = 1;
    while (i-- > 0) {
        if (c.failed)
            chan_cancel(crs[i]);
        chan_join(crs[i], -1);
    }
    free(crs);
    printf("broadcast: %ld of %ld waiting coroutines released by one close\n", c.released,
           waiters);
    rc = c.failed || c.released != waiters;
    /* Alone, this process was the whole show: leave no closed channel
     * behind for the next run. A separate closer keeps it, so that late
     * waiters still learn of the close. */
    if (cl && strcmp(role, "both") == 0)
        chan_delete(cl, name);
out:
    chan_free(c.ch);
    if (cl)
        chan_disconnect(cl);
    return rc;
}
