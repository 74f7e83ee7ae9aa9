/*
 * hello.c: the first program. A coroutine prints the greeting main sends
 * it over a channel. Run with no arguments, the channel is local; with
 * -s HOST:PORT it is the broker channel "hello" (PREFIX.hello with -p), and
 * the two halves may run as two processes, even on two machines:
 *
 *     hello -s 127.0.0.1:7070 print &       # waits, then prints
 *     hello -s 127.0.0.1:7070 say "hi there"
 *
 * The only difference between the local and the remote program is the line
 * that makes the channel: chan_make(0) or chan_open(client, "hello", 0).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <chan.h>

static const char usage[] =
    "usage: hello [-s HOST:PORT [-p PREFIX] [print | say [TEXT]]]\n";

static void hello_die(const char *what)
{
    fprintf(stderr, "hello: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* The coroutine: wait for a greeting, print it. */
static void hello_print(void *arg)
{
    chan_t *ch = arg;
    chan_msg_t m;

    if (chan_recv(ch, &m, -1) != 1)
        hello_die("recv");
    printf("%s\n", (char *)m.data); /* data is NUL-terminated past len */
    chan_msg_free(&m);
}

int main(int argc, char **argv)
{
    const char *addr = NULL, *prefix = NULL, *role = "both", *text = "hello, world";
    chan_client_t *cl = NULL;
    chan_t *ch;
    char name[256];
    int opt, cr;

    while ((opt = getopt(argc, argv, "s:p:")) != -1) {
        switch (opt) {
        case 's': addr = optarg; break;
        case 'p': prefix = optarg; break;
        default: fputs(usage, stderr); return 2;
        }
    }
    if (optind < argc)
        role = argv[optind++];
    if (optind < argc && strcmp(role, "say") == 0)
        text = argv[optind++];
    if (optind < argc || (strcmp(role, "both") && !addr) ||
        (strcmp(role, "both") && strcmp(role, "print") && strcmp(role, "say"))) {
        fputs(usage, stderr);
        return 2;
    }

    if (!addr) {
        ch = chan_make(0);           /* unbuffered: send waits for the printer */
    } else {
        cl = chan_connect(addr, NULL);
        if (!cl)
            hello_die(addr);
        snprintf(name, sizeof name, "%s%shello", prefix ? prefix : "", prefix ? "." : "");
        ch = chan_open(cl, name, 0); /* created by whoever comes first */
    }
    if (!ch)
        hello_die("channel");

    if (strcmp(role, "print") == 0) {
        hello_print(ch);                 /* main is a coroutine too */
    } else if (strcmp(role, "say") == 0) {
        if (chan_send(ch, text, strlen(text), -1) < 0)
            hello_die("send");
    } else {
        cr = chan_go(hello_print, ch);
        if (cr < 0)
            hello_die("chan_go");
        /* Returns when the printer has taken the greeting... */
        if (chan_send(ch, text, strlen(text), -1) < 0)
            hello_die("send");
        /* ...and this when it has printed it. */
        chan_join(cr, -1);
    }
    chan_free(ch);
    if (cl)
        chan_disconnect(cl);
    return 0;
}
