/*
 * twoprint.c: two coroutines that each print, taking turns. A ball (the
 * round number) goes back and forth over two unbuffered channels; whoever
 * holds it prints one line and passes it on, so the output interleaves the
 * same way every time. After N rounds ping closes its channel to pong:
 * close is the "game over" pong is waiting for.
 *
 * No arguments: both coroutines in this process over local channels. With
 * -s HOST:PORT the channels are PREFIX.twoprint.ping and .pong on the
 * broker, and ping and pong may be two processes:
 *
 *     twoprint -s 127.0.0.1:7070 pong &
 *     twoprint -s 127.0.0.1:7070 ping
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <chan.h>

static const char usage[] =
    "usage: twoprint [-n ROUNDS] [-s HOST:PORT [-p PREFIX] [ping | pong]]\n";

/* One player's view of the game; lives on main's stack. */
struct player {
    chan_t *in;              /* the ball comes to me here */
    chan_t *out;             /* I pass it on here */
    long rounds;             /* ping: how many rounds to play */
    chan_client_t *cl;       /* remote only: pong tidies up with it */
    const char *names[2];    /* remote only: the two channels' names */
    int failed;
};

static void twoprint_fail(struct player *p, const char *who, const char *what)
{
    fprintf(stderr, "twoprint: %s: %s: %s\n", who, what, strerror(errno));
    p->failed = 1;
}

static void twoprint_ping(void *arg)
{
    struct player *p = arg;
    chan_msg_t m;
    char ball[32];
    long i;

    for (i = 1; i <= p->rounds; i++) {
        int len = snprintf(ball, sizeof ball, "%ld", i);
        printf("ping %ld\n", i);
        fflush(stdout); /* the other player may be another process */
        if (chan_send(p->out, ball, (size_t)len, -1) < 0) {
            twoprint_fail(p, "ping", "send");
            return;
        }
        if (chan_recv(p->in, &m, -1) != 1) {
            twoprint_fail(p, "ping", "recv");
            return;
        }
        chan_msg_free(&m);
    }
    if (chan_close(p->out) < 0)
        twoprint_fail(p, "ping", "close");
}

static void twoprint_pong(void *arg)
{
    struct player *p = arg;
    chan_msg_t m;
    int r;

    while ((r = chan_recv(p->in, &m, -1)) == 1) {
        printf("pong %s\n", (char *)m.data);
        fflush(stdout);
        if (chan_send(p->out, m.data, m.len, -1) < 0) {
            chan_msg_free(&m);
            twoprint_fail(p, "pong", "send");
            return;
        }
        chan_msg_free(&m);
    }
    if (r < 0) {
        twoprint_fail(p, "pong", "recv");
        return;
    }
    /* Pong is the last to touch the channels: remove them so the next game
     * with this prefix starts from open channels, not closed ones. */
    if (p->cl) {
        chan_delete(p->cl, p->names[0]);
        chan_delete(p->cl, p->names[1]);
    }
}

int main(int argc, char **argv)
{
    const char *addr = NULL, *prefix = NULL, *role = "both";
    chan_client_t *cl = NULL;
    chan_t *to_ping, *to_pong;
    char ping_name[256], pong_name[256];
    struct player pi = { 0 }, po = { 0 };
    long rounds = 3;
    int opt;

    while ((opt = getopt(argc, argv, "n:s:p:")) != -1) {
        switch (opt) {
        case 'n': rounds = strtol(optarg, NULL, 10); break;
        case 's': addr = optarg; break;
        case 'p': prefix = optarg; break;
        default: fputs(usage, stderr); return 2;
        }
    }
    if (optind < argc)
        role = argv[optind++];
    if (optind < argc || rounds < 1 || (strcmp(role, "both") && !addr) ||
        (strcmp(role, "both") && strcmp(role, "ping") && strcmp(role, "pong"))) {
        fputs(usage, stderr);
        return 2;
    }

    if (!addr) {
        to_ping = chan_make(0);
        to_pong = chan_make(0);
    } else {
        cl = chan_connect(addr, NULL);
        if (!cl) {
            fprintf(stderr, "twoprint: %s: %s\n", addr, strerror(errno));
            return 1;
        }
        snprintf(ping_name, sizeof ping_name, "%s%stwoprint.ping", prefix ? prefix : "",
                 prefix ? "." : "");
        snprintf(pong_name, sizeof pong_name, "%s%stwoprint.pong", prefix ? prefix : "",
                 prefix ? "." : "");
        to_ping = chan_open(cl, ping_name, 0);
        to_pong = chan_open(cl, pong_name, 0);
    }
    if (!to_ping || !to_pong) {
        fprintf(stderr, "twoprint: channel: %s\n", strerror(errno));
        return 1;
    }
    pi = (struct player){ .in = to_ping, .out = to_pong, .rounds = rounds };
    po = (struct player){ .in = to_pong, .out = to_ping, .cl = cl,
                          .names = { ping_name, pong_name } };

    if (strcmp(role, "ping") == 0) {
        twoprint_ping(&pi);
    } else if (strcmp(role, "pong") == 0) {
        twoprint_pong(&po);
    } else {
        /* Two coroutines; main just waits for both. */
        int crs[2] = { chan_go(twoprint_ping, &pi), chan_go(twoprint_pong, &po) };
        if (crs[0] < 0 || crs[1] < 0) {
            perror("twoprint: chan_go");
            return 1;
        }
        chan_join(crs[0], -1);
        chan_join(crs[1], -1);
    }
    chan_free(to_ping);
    chan_free(to_pong);
    if (cl)
        chan_disconnect(cl);
    return pi.failed || po.failed;
}
