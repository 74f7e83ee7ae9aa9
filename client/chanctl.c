/*
 * chanctl.c: the shell's door to a chand broker. Each subcommand is one
 * short client session (connect, one operation or one stream of them,
 * disconnect), so shell scripts can feed, drain, inspect and end channels
 * that C programs use.
 *
 * Exit status: 0 done, 1 an operation failed, 2 bad usage, 3 the -t
 * deadline passed before send/recv finished (what was done stays done).
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chan.h"

enum {
    CTL_EXIT_FAIL = 1,    /* an operation failed */
    CTL_EXIT_USAGE = 2,   /* the command line made no sense */
    CTL_EXIT_TIMEOUT = 3, /* a -t deadline passed */
};

/* Capacity a missing channel gets when send (or recv -c) creates it. */
#define CTL_DEFAULT_CAP 1024

/* What the command line asked for; one per run. */
struct ctl {
    const char *addr;       /* broker "host:port" */
    long cap;               /* -c: capacity to create with; -1 not given */
    long count;             /* -n: messages to receive; -1 until closed */
    long timeout_ms;        /* -t: per message, ms; -1 never */
    int delim;              /* message separator on stdin/stdout */
    chan_client_t *cl;      /* owned; NULL until chanctl_connect */
};

static const char chanctl_help[] =
    "usage: chanctl [-s HOST:PORT] COMMAND [ARGS]\n"
    "\n"
    "commands:\n"
    "  ls [PREFIX]              list channels (all, or those whose name starts\n"
    "                           with PREFIX): name cap len unacked senders\n"
    "                           receivers closed\n"
    "  stat NAME                show one channel, one field per line\n"
    "  send NAME [MSG...]       send each MSG as one message; with no MSG, send\n"
    "                           each line of stdin (without its newline)\n"
    "  recv NAME [-n N]         print one message per line until the channel is\n"
    "                           closed and drained, or N messages have come\n"
    "  close NAME               close NAME: receivers drain it, then see the end\n"
    "  rm NAME                  delete NAME and drop its buffered messages\n"
    "\n"
    "options:\n"
    "  -s, --server HOST:PORT   broker address (default $CHAND_ADDR, else\n"
    "                           127.0.0.1:7070)\n"
    "  -c, --cap CAP            send, recv: create a missing channel with\n"
    "                           capacity CAP (an existing one must have it)\n"
    "  -n, --count N            recv: stop after N messages\n"
    "  -t, --timeout MS         send, recv: give up when one message takes more\n"
    "                           than MS milliseconds (0: never wait)\n"
    "  -z, --null               send, recv: messages end with NUL, not newline\n"
    "  -h, --help               this text\n"
    "\n"
    "send attaches to NAME whatever its capacity; when NAME does not exist it\n"
    "creates it with capacity 1024 (or -c CAP), so `seq 1000 | chanctl send\n"
    "jobs` returns before anyone reads. recv attaches only: a missing channel\n"
    "is an error unless -c CAP is given. Messages containing the separator are\n"
    "printed as they are; use -z for arbitrary text. recv -n N takes exactly N:\n"
    "a reader that quits early (`| head`) loses the message then in flight.\n"
    "\n"
    "exit status: 0 done (recv: closed and drained, or N messages), 1 an\n"
    "operation failed, 2 bad usage, 3 the -t deadline passed.\n";

static void chanctl_usage(const char *why)
{
    fprintf(stderr, "chanctl: %s\nTry 'chanctl --help'.\n", why);
    exit(CTL_EXIT_USAGE);
}

/* strerror, with the channel meaning where the C library's text misleads. */
static const char *chanctl_errtext(int err)
{
    switch (err) {
    case ENOENT: return "no such channel";
    case EPIPE: return "channel is closed";
    case EEXIST: return "channel exists with another capacity";
    case ESTALE: return "channel was deleted or recreated";
    case EAGAIN:
    case ETIMEDOUT: return "timed out";
    case EMSGSIZE: return "message too long for the broker";
    default: return strerror(err);
    }
}

/* Report a failed operation and return the exit status it deserves. */
static int chanctl_fail(const char *what, const char *name, int err)
{
    if (name)
        fprintf(stderr, "chanctl: %s %s: %s\n", what, name, chanctl_errtext(err));
    else
        fprintf(stderr, "chanctl: %s: %s\n", what, chanctl_errtext(err));
    return err == ETIMEDOUT || err == EAGAIN ? CTL_EXIT_TIMEOUT : CTL_EXIT_FAIL;
}

static long chanctl_number(const char *opt, const char *s, long min)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min) {
        fprintf(stderr, "chanctl: %s: bad value '%s'\nTry 'chanctl --help'.\n", opt, s);
        exit(CTL_EXIT_USAGE);
    }
    return v;
}

/* -t MS as the API's absolute deadline; -t 0 is the API's "never wait". */
static int64_t chanctl_deadline(const struct ctl *ctl)
{
    if (ctl->timeout_ms <= 0)
        return ctl->timeout_ms;
    return chan_now() + ctl->timeout_ms;
}

static int chanctl_connect(struct ctl *ctl)
{
    /* A shell user wants a dead broker reported promptly, not after the
     * library's default retry budget. */
    struct chan_opts opts = { .client_name = "chanctl", .retry_ms = 1000 };

    ctl->cl = chan_connect(ctl->addr, &opts);
    if (!ctl->cl)
        return chanctl_fail("connect", ctl->addr, errno);
    return 0;
}

/*
 * Open name: with -c exactly that capacity (create or attach); otherwise
 * attach at any capacity, and when create is set and the channel is
 * missing, create it with the default capacity. Returns the handle (the
 * caller frees it) or NULL with errno set.
 */
static chan_t *chanctl_open(struct ctl *ctl, const char *name, int create)
{
    chan_t *ch;

    if (ctl->cap >= 0)
        return chan_open(ctl->cl, name, ctl->cap);
    ch = chan_open(ctl->cl, name, -1);
    if (ch || errno != ENOENT || !create)
        return ch;
    ch = chan_open(ctl->cl, name, CTL_DEFAULT_CAP);
    /* Someone created it meanwhile with another capacity: use theirs. */
    if (!ch && errno == EEXIST)
        ch = chan_open(ctl->cl, name, -1);
    return ch;
}

static int chanctl_byname(const void *a, const void *b)
{
    const struct chan_info *x = a, *y = b;

    return strcmp(x->name, y->name);
}

static int chanctl_ls(struct ctl *ctl, const char *prefix)
{
    struct chan_info *infos;
    int n, i, width = 4;

    n = chan_list(ctl->cl, prefix, &infos);
    if (n < 0)
        return chanctl_fail("ls", NULL, errno);
    qsort(infos, (size_t)n, sizeof *infos, chanctl_byname);
    for (i = 0; i < n; i++) {
        int w = (int)strlen(infos[i].name);
        if (w > width)
            width = w;
    }
    printf("%-*s %8s %8s %8s %8s %9s %6s\n", width, "NAME", "CAP", "LEN", "UNACKED",
           "SENDERS", "RECEIVERS", "CLOSED");
    for (i = 0; i < n; i++) {
        const struct chan_info *c = &infos[i];
        printf("%-*s %8ld %8ld %8ld %8ld %9ld %6s\n", width, c->name, c->cap, c->len,
               c->unacked, c->senders, c->receivers, c->closed ? "yes" : "no");
    }
    free(infos);
    return 0;
}

static int chanctl_stat(struct ctl *ctl, const char *name)
{
    struct chan_info c;
    const unsigned char *u = c.incarnation;

    if (chan_stat(ctl->cl, name, &c) < 0)
        return chanctl_fail("stat", name, errno);
    printf("name        %s\n", c.name);
    printf("incarnation %02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
           "%02x%02x%02x%02x%02x%02x\n",
           u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11],
           u[12], u[13], u[14], u[15]);
    printf("cap         %ld\n", c.cap);
    printf("len         %ld\n", c.len);
    printf("unacked     %ld\n", c.unacked);
    printf("senders     %ld\n", c.senders);
    printf("receivers   %ld\n", c.receivers);
    printf("closed      %s\n", c.closed ? "yes" : "no");
    return 0;
}

static int chanctl_send(struct ctl *ctl, const char *name, char **msgs, int nmsgs)
{
    chan_t *ch;
    char *line = NULL;
    size_t linecap = 0;
    ssize_t len;
    int i, rc = 0;

    ch = chanctl_open(ctl, name, 1);
    if (!ch)
        return chanctl_fail("send", name, errno);
    if (nmsgs > 0) {
        for (i = 0; i < nmsgs && rc == 0; i++)
            if (chan_send(ch, msgs[i], strlen(msgs[i]), chanctl_deadline(ctl)) < 0)
                rc = chanctl_fail("send", name, errno);
        goto out;
    }
    while ((len = getdelim(&line, &linecap, ctl->delim, stdin)) >= 0) {
        if (len > 0 && line[len - 1] == ctl->delim)
            len--;
        if (chan_send(ch, line, (size_t)len, chanctl_deadline(ctl)) < 0) {
            rc = chanctl_fail("send", name, errno);
            goto out;
        }
    }
    if (ferror(stdin))
        rc = chanctl_fail("stdin", NULL, errno);
out:
    free(line);
    chan_free(ch);
    return rc;
}

static int chanctl_recv(struct ctl *ctl, const char *name)
{
    chan_t *ch;
    chan_msg_t msg;
    long got;
    int r, rc = 0;

    ch = chanctl_open(ctl, name, ctl->cap >= 0);
    if (!ch)
        return chanctl_fail("recv", name, errno);
    for (got = 0; ctl->count < 0 || got < ctl->count; got++) {
        r = chan_recv(ch, &msg, chanctl_deadline(ctl));
        if (r < 0) {
            rc = chanctl_fail("recv", name, errno);
            break;
        }
        if (r == 0)
            break; /* closed and drained: the normal end */
        fwrite(msg.data, 1, msg.len, stdout);
        putchar(ctl->delim);
        chan_msg_free(&msg);
        /* A reader at the other end of a pipe wants each message as it
         * comes, not when a stdio buffer fills. */
        if (fflush(stdout) != 0) {
            /* The reader went away (`| head`): end quietly, as a tool
             * killed by SIGPIPE would; other write errors are reported. */
            rc = errno == EPIPE ? CTL_EXIT_FAIL : chanctl_fail("stdout", NULL, errno);
            break;
        }
    }
    chan_free(ch);
    return rc;
}

static int chanctl_close(struct ctl *ctl, const char *name)
{
    chan_t *ch;
    int rc = 0;

    ch = chan_open(ctl->cl, name, -1);
    if (!ch)
        return chanctl_fail("close", name, errno);
    if (chan_close(ch) < 0)
        rc = chanctl_fail("close", name, errno);
    chan_free(ch);
    return rc;
}

static int chanctl_rm(struct ctl *ctl, const char *name)
{
    if (chan_delete(ctl->cl, name) < 0)
        return chanctl_fail("rm", name, errno);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "server", required_argument, NULL, 's' },
        { "cap", required_argument, NULL, 'c' },
        { "count", required_argument, NULL, 'n' },
        { "timeout", required_argument, NULL, 't' },
        { "null", no_argument, NULL, 'z' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    struct ctl ctl = { .cap = -1, .count = -1, .timeout_ms = -1, .delim = '\n' };
    const char *cmd, *name;
    int opt, nargs, rc;
    char **args;

    ctl.addr = getenv("CHAND_ADDR");
    if (!ctl.addr || !*ctl.addr)
        ctl.addr = "127.0.0.1:7070";
    /* Options may follow the subcommand (`recv jobs -n 3`); `--` ends them,
     * for messages that start with '-'. */
    while ((opt = getopt_long(argc, argv, "s:c:n:t:zh", longopts, NULL)) != -1) {
        switch (opt) {
        case 's': ctl.addr = optarg; break;
        case 'c': ctl.cap = chanctl_number("-c", optarg, 0); break;
        case 'n': ctl.count = chanctl_number("-n", optarg, 0); break;
        case 't': ctl.timeout_ms = chanctl_number("-t", optarg, 0); break;
        case 'z': ctl.delim = '\0'; break;
        case 'h': fputs(chanctl_help, stdout); return 0;
        default: fputs("Try 'chanctl --help'.\n", stderr); return CTL_EXIT_USAGE;
        }
    }
    if (optind >= argc)
        chanctl_usage("no command");
    cmd = argv[optind];
    args = argv + optind + 1;
    nargs = argc - optind - 1;
    name = nargs > 0 ? args[0] : NULL;

    if (ctl.count >= 0 && strcmp(cmd, "recv") != 0)
        chanctl_usage("-n only applies to recv");
    if ((ctl.cap >= 0 || ctl.timeout_ms >= 0 || ctl.delim != '\n') &&
        strcmp(cmd, "send") != 0 && strcmp(cmd, "recv") != 0)
        chanctl_usage("-c, -t and -z only apply to send and recv");
    if (strcmp(cmd, "ls") == 0) {
        if (nargs > 1)
            chanctl_usage("ls takes at most one PREFIX");
    } else if (strcmp(cmd, "send") == 0) {
        if (nargs < 1)
            chanctl_usage("send needs a channel NAME");
    } else if (strcmp(cmd, "stat") == 0 || strcmp(cmd, "recv") == 0 ||
               strcmp(cmd, "close") == 0 || strcmp(cmd, "rm") == 0) {
        if (nargs != 1) {
            fprintf(stderr, "chanctl: %s needs exactly one channel NAME\n"
                    "Try 'chanctl --help'.\n", cmd);
            return CTL_EXIT_USAGE;
        }
    } else {
        fprintf(stderr, "chanctl: unknown command '%s'\nTry 'chanctl --help'.\n", cmd);
        return CTL_EXIT_USAGE;
    }

    rc = chanctl_connect(&ctl);
    if (rc)
        return rc;
    if (strcmp(cmd, "ls") == 0)
        rc = chanctl_ls(&ctl, name ? name : "");
    else if (strcmp(cmd, "stat") == 0)
        rc = chanctl_stat(&ctl, name);
    else if (strcmp(cmd, "send") == 0)
        rc = chanctl_send(&ctl, name, args + 1, nargs - 1);
    else if (strcmp(cmd, "recv") == 0)
        rc = chanctl_recv(&ctl, name);
    else if (strcmp(cmd, "close") == 0)
        rc = chanctl_close(&ctl, name);
    else
        rc = chanctl_rm(&ctl, name);
    chan_disconnect(ctl.cl);
    if (fflush(stdout) != 0 && rc == 0)
        rc = errno == EPIPE ? CTL_EXIT_FAIL : chanctl_fail("stdout", NULL, errno);
    return rc;
}
