/*
 * chanctl.c: the shell's door to a chand broker. Each subcommand is one
 * short client session (connect, one operation or one stream of them,
 * disconnect), so shell scripts can feed, drain, inspect and end channels
 * that C programs use.
 *
 * Exit status: 0 done, 1 an operation failed, 2 bad usage, 3 the -t
 * deadline passed before send/recv/work finished (what was done stays done).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "chan.h"

enum {
    CTL_EXIT_FAIL = 1,    /* an operation failed */
    CTL_EXIT_USAGE = 2,   /* the command line made no sense */
    CTL_EXIT_TIMEOUT = 3, /* a -t deadline passed */
};

/* Capacity a missing channel gets when send (or recv -c) creates it. */
#define CTL_DEFAULT_CAP 1024

/* work: how long a job may run before its message is handed out again, ms. */
#define CTL_DEFAULT_LEASE_MS 60000

/* What the command line asked for; one per run. */
struct ctl {
    const char *addr;       /* broker "host:port" */
    long cap;               /* -c: capacity to create with; -1 not given */
    long count;             /* -n: messages to receive; -1 until closed */
    long timeout_ms;        /* -t: per message, ms; -1 never */
    long lease_ms;          /* -l: work's lease, ms; -1 not given */
    int delim;              /* message separator on stdin/stdout */
    const char *token_file; /* -T or $CHAND_TOKEN_FILE; NULL for none */
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
    "  work NAME -- CMD [ARG...]\n"
    "                           for each message of NAME run CMD with the message\n"
    "                           on its stdin; exit status 0 acks the message, any\n"
    "                           other gives it back to be delivered again; stops\n"
    "                           when NAME is closed and drained, or after -n N\n"
    "\n"
    "options:\n"
    "  -s, --server HOST:PORT   broker address (default $CHAND_ADDR, else\n"
    "                           127.0.0.1:7070)\n"
    "  -T, --token-file FILE    send the first line of FILE as the broker's auth\n"
    "                           token (default $CHAND_TOKEN_FILE, else none)\n"
    "  -c, --cap CAP            send, recv, work: create a missing channel with\n"
    "                           capacity CAP (an existing one must have it)\n"
    "  -n, --count N            recv, work: stop after N messages\n"
    "  -t, --timeout MS         send, recv, work: give up when one message takes\n"
    "                           more than MS milliseconds (0: never wait)\n"
    "  -l, --lease MS           work: a message whose CMD runs longer than MS\n"
    "                           milliseconds is handed out again (default 60000)\n"
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
    "work takes each message on a lease: until CMD ends nobody else gets it, and\n"
    "if chanctl dies meanwhile (or the lease runs out first) the message goes\n"
    "back to the head of NAME, so no job is lost. CMD gets the message bytes\n"
    "as they are, without a separator; its stdout and stderr are chanctl's.\n"
    "A job may therefore run more than once: make it safe to repeat.\n"
    "\n"
    "exit status: 0 done (recv, work: closed and drained, or N messages), 1 an\n"
    "operation failed (work: also when CMD cannot be started), 2 bad usage, 3\n"
    "the -t deadline passed.\n";

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

/*
 * The token is the file's first line without its line end. Returns a
 * malloc'd string (the caller frees it), or NULL with errno set.
 */
static char *chanctl_read_token(const char *path)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int err;

    if (!f)
        return NULL;
    n = getline(&line, &cap, f);
    err = ferror(f) ? errno : 0;
    fclose(f);
    if (n < 0) {
        free(line);
        if (err) {
            errno = err;
            return NULL;
        }
        return strdup(""); /* an empty file: an empty token */
    }
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    return line;
}

static int chanctl_connect(struct ctl *ctl)
{
    /* A shell user wants a dead broker reported promptly, not after the
     * library's default retry budget. */
    struct chan_opts opts = { .client_name = "chanctl", .retry_ms = 1000 };
    char *token = NULL;

    if (ctl->token_file) {
        token = chanctl_read_token(ctl->token_file);
        if (!token)
            return chanctl_fail("token file", ctl->token_file, errno);
        opts.token = token;
    }
    ctl->cl = chan_connect(ctl->addr, &opts);
    free(token);
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

/*
 * Run cmd with the message on its stdin and wait for it. Returns its wait
 * status, or -1 with errno set if it could not be started (the child
 * reports a failed exec through a close-on-exec pipe, so a command that
 * merely exits 127 is not mistaken for one that is missing).
 */
static int chanctl_job(char **cmd, const chan_msg_t *msg)
{
    int in[2], rep[2], status, err = 0;
    const char *p = msg->data;
    size_t left = msg->len;
    pid_t pid;
    ssize_t n;

    if (pipe(in) < 0)
        return -1;
    if (pipe2(rep, O_CLOEXEC) < 0) {
        err = errno;
        goto close_in;
    }
    fflush(stdout);
    pid = fork();
    if (pid < 0) {
        err = errno;
        goto close_rep;
    }
    if (pid == 0) {
        /* chanctl ignores SIGPIPE for itself; the job gets the usual default */
        signal(SIGPIPE, SIG_DFL);
        if (dup2(in[0], STDIN_FILENO) >= 0) {
            close(in[0]);
            close(in[1]);
            execvp(cmd[0], cmd);
        }
        err = errno;
        if (write(rep[1], &err, sizeof err) < 0)
            _exit(127);
        _exit(127);
    }
    close(in[0]);
    close(rep[1]);
    /* a job that does not read all of its stdin gets EPIPE here, which is its business */
    while (left > 0 && (n = write(in[1], p, left)) != 0) {
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        p += n;
        left -= (size_t)n;
    }
    close(in[1]);
    while ((n = read(rep[0], &err, sizeof err)) < 0 && errno == EINTR)
        ;
    if (n != (ssize_t)sizeof err)
        err = 0;
    close(rep[0]);
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            return -1;
    }
    if (err) {
        errno = err;
        return -1;
    }
    return status;

close_rep:
    close(rep[0]);
    close(rep[1]);
close_in:
    close(in[0]);
    close(in[1]);
    errno = err;
    return -1;
}

/*
 * The worker loop: lease a message, run the job, ack on exit status 0,
 * else nack. A settle that fails (the job outlived its lease, or the
 * connection dropped) is reported and the loop goes on: the message was
 * or will be handed out again.
 */
static int chanctl_work(struct ctl *ctl, const char *name, char **cmd)
{
    int64_t lease = ctl->lease_ms > 0 ? ctl->lease_ms : CTL_DEFAULT_LEASE_MS;
    chan_t *ch;
    chan_msg_t msg;
    long done;
    int r, rc = 0;

    ch = chanctl_open(ctl, name, ctl->cap >= 0);
    if (!ch)
        return chanctl_fail("work", name, errno);
    for (done = 0; ctl->count < 0 || done < ctl->count; done++) {
        int status, ok;

        r = chan_recv_lease(ch, &msg, lease, chanctl_deadline(ctl));
        if (r < 0) {
            rc = chanctl_fail("work", name, errno);
            break;
        }
        if (r == 0)
            break; /* closed and drained */
        status = chanctl_job(cmd, &msg);
        if (status < 0) {
            int err = errno;
            chan_nack(&msg);
            chan_msg_free(&msg);
            fprintf(stderr, "chanctl: work %s: cannot run %s: %s\n", name, cmd[0], strerror(err));
            rc = CTL_EXIT_FAIL;
            break;
        }
        ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
        if ((ok ? chan_ack(&msg) : chan_nack(&msg)) < 0)
            fprintf(stderr, "chanctl: work %s: %s after the job: %s; the message is delivered again\n",
                    name, ok ? "ack" : "nack",
                    errno == EINVAL ? "the lease had run out" : chanctl_errtext(errno));
        chan_msg_free(&msg);
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
        { "lease", required_argument, NULL, 'l' },
        { "token-file", required_argument, NULL, 'T' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    struct ctl ctl = { .cap = -1, .count = -1, .timeout_ms = -1, .lease_ms = -1, .delim = '\n' };
    const char *cmd, *name;
    int opt, nargs, rc;
    char **args;

    /* A closed stdout (`| head`) shows up as EPIPE, and the tool ends quietly. */
    signal(SIGPIPE, SIG_IGN);
    ctl.addr = getenv("CHAND_ADDR");
    if (!ctl.addr || !*ctl.addr)
        ctl.addr = "127.0.0.1:7070";
    ctl.token_file = getenv("CHAND_TOKEN_FILE");
    if (ctl.token_file && !*ctl.token_file)
        ctl.token_file = NULL;
    /* Options may follow the subcommand (`recv jobs -n 3`); `--` ends them,
     * for messages that start with '-'. */
    while ((opt = getopt_long(argc, argv, "s:c:n:t:zl:T:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 's': ctl.addr = optarg; break;
        case 'T': ctl.token_file = optarg; break;
        case 'l': ctl.lease_ms = chanctl_number("-l", optarg, 1); break;
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

    if (ctl.count >= 0 && strcmp(cmd, "recv") != 0 && strcmp(cmd, "work") != 0)
        chanctl_usage("-n only applies to recv and work");
    if (ctl.lease_ms >= 0 && strcmp(cmd, "work") != 0)
        chanctl_usage("-l only applies to work");
    if (ctl.delim != '\n' && strcmp(cmd, "send") != 0 && strcmp(cmd, "recv") != 0)
        chanctl_usage("-z only applies to send and recv");
    if ((ctl.cap >= 0 || ctl.timeout_ms >= 0) && strcmp(cmd, "send") != 0 &&
        strcmp(cmd, "recv") != 0 && strcmp(cmd, "work") != 0)
        chanctl_usage("-c and -t only apply to send, recv and work");
    if (strcmp(cmd, "ls") == 0) {
        if (nargs > 1)
            chanctl_usage("ls takes at most one PREFIX");
    } else if (strcmp(cmd, "send") == 0) {
        if (nargs < 1)
            chanctl_usage("send needs a channel NAME");
    } else if (strcmp(cmd, "work") == 0) {
        if (nargs < 2)
            chanctl_usage("work needs a channel NAME and, after --, a CMD to run");
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
    else if (strcmp(cmd, "work") == 0)
        rc = chanctl_work(&ctl, name, args + 1);
    else if (strcmp(cmd, "close") == 0)
        rc = chanctl_close(&ctl, name);
    else
        rc = chanctl_rm(&ctl, name);
    chan_disconnect(ctl.cl);
    if (fflush(stdout) != 0 && rc == 0)
        rc = errno == EPIPE ? CTL_EXIT_FAIL : chanctl_fail("stdout", NULL, errno);
    return rc;
}
