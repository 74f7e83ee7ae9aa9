/*
 * fortytwo.c: a coroutine sends 42 over a channel to main, which prints it.
 * With no arguments the channel is local. With -s HOST:PORT it is the
 * broker channel "fortytwo" (PREFIX.fortytwo with -p), and sender and
 * receiver may be two processes:
 *
 *     fortytwo -s 127.0.0.1:7070 recv &
 *     fortytwo -s 127.0.0.1:7070 send
 *
 * The value travels as text, so the two ends need not share a byte order.
 * Exit status 1 if anything but 42 arrives.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <chan.h>

static const char usage[] = "usage: fortytwo [-s HOST:PORT [-p PREFIX] [send | recv]]\n";

static void fortytwo_die(const char *what)
{
    fprintf(stderr, "fortytwo: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void fortytwo_send(void *arg)
{
    if (chan_send(arg, "42", 2, -1) < 0)
        fortytwo_die("send");
}

static int fortytwo_recv(chan_t *ch)
{
    chan_msg_t m;
    long v;

    if (chan_recv(ch, &m, -1) != 1)
        fortytwo_die("recv");
    v = strtol(m.data, NULL, 10);
    chan_msg_free(&m);
    printf("main got %ld\n", v);
    return v == 42 ? 0 : 1;
}

int main(int argc, char **argv)
{
    const char *addr = NULL, *prefix = NULL, *role = "both";
    chan_client_t *cl = NULL;
    chan_t *ch;
    char name[256];
    int opt, rc = 0;

    while ((opt = getopt(argc, argv, "s:p:")) != -1) {
        switch (opt) {
        case 's': addr = optarg; break;
        case 'p': prefix = optarg; break;
        default: fputs(usage, stderr); return 2;
        }
    }
    if (optind < argc)
        role = argv[optind++];
    if (optind < argc || (strcmp(role, "both") && !addr) ||
        (strcmp(role, "both") && strcmp(role, "send") && strcmp(role, "recv"))) {
        fputs(usage, stderr);
        return 2;
    }

    if (!addr) {
        ch = chan_make(0);
    } else {
        cl = chan_connect(addr, NULL);
        if (!cl)
            fortytwo_die(addr);
        snprintf(name, sizeof name, "%s%sfortytwo", prefix ? prefix : "",
                 prefix ? "." : "");
        ch = chan_open(cl, name, 0);
    }
    if (!ch)
        fortytwo_die("channel");

    if (strcmp(role, "send") == 0) {
        fortytwo_send(ch);               /* returns once the receiver has the value */
    } else if (strcmp(role, "recv") == 0) {
        rc = fortytwo_recv(ch);
    } else {
        /* The coroutine first runs when main blocks in chan_recv. */
        int cr = chan_go(fortytwo_send, ch);
        if (cr < 0)
            fortytwo_die("chan_go");
        rc = fortytwo_recv(ch);
        /* Its send may still be finishing: never free a channel under it. */
        chan_join(cr, -1);
    }
    chan_free(ch);
    if (cl)
        chan_disconnect(cl);
    return rc;
}
