/*
 * testclient.c: the blocking protocol client and chand launcher behind the
 * broker integration tests. Frames go through wire_write/wire_read on
 * evbuffers filled from plain blocking sockets; every wait is a poll with a
 * deadline, so a silent broker fails a test instead of hanging it.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <check.h>
#include <event2/buffer.h>

#include "testclient.h"

/* Largest frame the tests accept from the broker: room for any test message. */
#define TC_FRAME_MAX (64u << 20)

/* How long chand may take to write its port file (sanitizer builds start slowly), ms. */
#define TC_START_MS 10000

#define TC_MAX_ARGS 32

/* A frame read while waiting for another id; owned by the connection's stash. */
struct tc_stashed {
    struct tc_reply r;
    struct tc_stashed *next;
};

/* One client connection; owns its socket, input buffer and stash. */
struct tc_conn {
    int fd;                    /* blocking TCP socket */
    struct evbuffer *in;       /* bytes read, not yet taken as frames */
    uint64_t next_id;          /* last request id handed out */
    int ended;                 /* the peer closed or reset the stream */
    struct tc_stashed *head;   /* frames that arrived out of turn, oldest first */
    struct tc_stashed **tail;
};

int64_t tc_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void tc_pause_ms(int ms)
{
    struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)ms * 1000000};

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

const char *tc_status_name(int status)
{
    /* A few rotating buffers, so one message can name two statuses. */
    static char buf[4][32];
    static unsigned turn;
    const ProtobufCEnumValue *v;

    if (status == -1)
        return "no reply";
    v = protobuf_c_enum_descriptor_get_value(&chanwire__status__descriptor, status);
    if (v != NULL)
        return v->name;
    turn = (turn + 1) % 4;
    snprintf(buf[turn], sizeof buf[turn], "status %d", status);
    return buf[turn];
}

long tc_raise_nofile(long n)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return -1;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)n) {
        rl.rlim_cur = (rl.rlim_max == RLIM_INFINITY || rl.rlim_max > (rlim_t)n) ? (rlim_t)n : rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            return -1;
    }
    return (long)rl.rlim_cur;
}

/* ---- the broker process ---------------------------------------------- */

/* The port in the file, or -1 while it is missing or incomplete. */
static int tc_read_port(const char *path)
{
    char buf[32];
    ssize_t n;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    char *end;
    long port;

    if (fd < 0)
        return -1;
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    port = strtol(buf, &end, 10);
    if (end == buf || (*end != '\0' && *end != '\n') || port <= 0 || port > 65535)
        return -1;
    return (int)port;
}

/*
 * The port file has served its purpose once read: remove it and its dir at
 * once, since a failed assertion ends the test process with _exit and no
 * cleanup would run later.
 */
static void tc_server_tidy(struct tc_server *s)
{
    if (s->portfile[0] != '\0')
        unlink(s->portfile);
    if (s->dir[0] != '\0')
        rmdir(s->dir);
    s->portfile[0] = s->dir[0] = '\0';
}

void tc_server_start(struct tc_server *s, ...)
{
    const char *chand = getenv("CHAND");
    const char *tmp = getenv("TMPDIR");
    const char *argv[TC_MAX_ARGS];
    size_t argc = 0;
    pid_t parent = getpid();
    int64_t deadline;
    va_list ap;

    ck_assert_msg(chand != NULL && *chand != '\0', "CHAND is not set: run through make check");
    memset(s, 0, sizeof *s);
    snprintf(s->dir, sizeof s->dir, "%s/chand-test.XXXXXX", tmp != NULL && *tmp ? tmp : "/tmp");
    ck_assert_msg(mkdtemp(s->dir) != NULL, "mkdtemp %s: %s", s->dir, strerror(errno));
    snprintf(s->portfile, sizeof s->portfile, "%s/port", s->dir);

    argv[argc++] = chand;
    argv[argc++] = "--port";
    argv[argc++] = "0";
    argv[argc++] = "--port-file";
    argv[argc++] = s->portfile;
    va_start(ap, s);
    for (const char *a; (a = va_arg(ap, const char *)) != NULL;) {
        ck_assert_msg(argc < TC_MAX_ARGS - 1, "too many chand arguments");
        argv[argc++] = a;
    }
    va_end(ap);
    argv[argc] = NULL;

    s->pid = fork();
    ck_assert_msg(s->pid >= 0, "fork: %s", strerror(errno));
    if (s->pid == 0) {
        /* The daemon must not outlive a test that failed before stopping it. */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
            _exit(127);
        execv(chand, (char *const *)argv);
        fprintf(stderr, "exec %s: %s\n", chand, strerror(errno));
        _exit(127);
    }

    deadline = tc_now_ms() + TC_START_MS;
    for (;;) {
        int status;
        s->port = tc_read_port(s->portfile);
        if (s->port > 0) {
            tc_server_tidy(s);
            return;
        }
        if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
            s->pid = 0;
            tc_server_tidy(s);
            ck_abort_msg("chand exited (wait status 0x%x) before writing its port file", status);
        }
        if (tc_now_ms() >= deadline) {
            tc_server_tidy(s);
            ck_abort_msg("chand wrote no port file within %d ms", TC_START_MS);
        }
        tc_pause_ms(2);
    }
}

int tc_server_stop(struct tc_server *s, int sig, int max_ms)
{
    int status = -1;

    if (s->pid > 0) {
        int64_t deadline = tc_now_ms() + max_ms;
        if (sig != 0)
            kill(s->pid, sig);
        for (;;) {
            pid_t r = waitpid(s->pid, &status, WNOHANG);
            if (r == s->pid)
                break;
            if (tc_now_ms() >= deadline) {
                kill(s->pid, SIGKILL);
                waitpid(s->pid, NULL, 0);
                status = -1;
                break;
            }
            tc_pause_ms(1);
        }
        s->pid = 0;
    }
    tc_server_tidy(s);
    return status;
}

void tc_server_stop_ok(struct tc_server *s)
{
    int st = tc_server_stop(s, SIGTERM, 2 * TC_EXIT_MS);

    ck_assert_msg(st != -1, "chand still running %d ms after SIGTERM", 2 * TC_EXIT_MS);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                  "chand ended with %s %d after SIGTERM, want exit 0",
                  WIFEXITED(st) ? "exit status" : "signal",
                  WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
}

/* ---- connections ----------------------------------------------------- */

struct tc_conn *tc_connect(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    struct tc_conn *c = calloc(1, sizeof *c);
    int one = 1;

    ck_assert_msg(c != NULL, "out of memory");
    /* A broker that closed on us must fail a write, not kill the test. */
    signal(SIGPIPE, SIG_IGN);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_msg(c->fd >= 0, "socket: %s", strerror(errno));
    ck_assert_msg(connect(c->fd, (struct sockaddr *)&sa, sizeof sa) == 0, "connect to port %d: %s", port,
                  strerror(errno));
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->in = evbuffer_new();
    ck_assert_msg(c->in != NULL, "out of memory");
    c->tail = &c->head;
    return c;
}

struct tc_conn *tc_connect_hello(int port)
{
    struct tc_conn *c = tc_connect(port);

    TC_ASSERT_STATUS(tc_hello(c), ST(OK));
    return c;
}

void tc_reply_free(struct tc_reply *r)
{
    if (r == NULL)
        return;
    if (r->f != NULL)
        wire_hdr_free(&r->f->base);
    for (size_t i = 0; i < r->n; i++)
        free(r->pl[i].data);
    free(r->pl);
    memset(r, 0, sizeof *r);
}

void tc_conn_free(struct tc_conn *c)
{
    if (c == NULL)
        return;
    while (c->head != NULL) {
        struct tc_stashed *s = c->head;
        c->head = s->next;
        tc_reply_free(&s->r);
        free(s);
    }
    evbuffer_free(c->in);
    close(c->fd);
    free(c);
}

int tc_conn_fd(const struct tc_conn *c)
{
    return c->fd;
}

uint64_t tc_next_id(struct tc_conn *c)
{
    return ++c->next_id;
}

int tc_write_raw(struct tc_conn *c, const void *buf, size_t len)
{
    const uint8_t *p = buf;

    while (len > 0) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int tc_write_frame(struct tc_conn *c, const Chanwire__ClientFrame *f, const struct wire_payload *pl,
                   size_t n)
{
    struct evbuffer *out = evbuffer_new();
    int rc = -1;

    ck_assert_msg(out != NULL, "out of memory");
    ck_assert_msg(wire_write(out, &f->base, pl, n) == 0, "wire_write refused a frame");
    size_t len = evbuffer_get_length(out);
    uint8_t *p = evbuffer_pullup(out, -1);
    ck_assert_msg(p != NULL || len == 0, "out of memory");
    rc = tc_write_raw(c, p, len);
    evbuffer_free(out);
    return rc;
}

/* wire_read callback: copy payload index (from data, or out of src) into the reply being built. */
static int tc_take_payload(void *arg, size_t index, const void *data, struct evbuffer *src, size_t len)
{
    struct tc_reply *r = arg;
    struct tc_msg *pl = realloc(r->pl, (index + 1) * sizeof *pl);

    if (pl == NULL)
        return -1;
    r->pl = pl;
    memset(&pl[index], 0, sizeof pl[index]);
    r->n = index + 1;
    pl[index].data = malloc(len > 0 ? len : 1);
    if (pl[index].data == NULL)
        return -1;
    pl[index].len = len;
    if (data != NULL) {
        if (len > 0)
            memcpy(pl[index].data, data, len);
    } else if (len > 0 && evbuffer_remove(src, pl[index].data, len) != (int)len) {
        return -1;
    }
    return 0;
}

int tc_take(struct tc_conn *c, struct tc_reply *r)
{
    ProtobufCMessage *hdr = NULL;
    size_t np = 0, need = 0;
    char err[160];
    int rc;

    memset(r, 0, sizeof *r);
    rc = wire_read(c->in, TC_FRAME_MAX, &chanwire__server_frame__descriptor, &hdr, tc_take_payload, r, &np,
                   &need, err, sizeof err);
    if (rc < 0) {
        fprintf(stderr, "testclient: broken frame from chand: %s\n", err);
        tc_reply_free(r);
        c->ended = 1;
        return -1;
    }
    if (rc == 0) {
        tc_reply_free(r);
        return 0;
    }
    r->f = (Chanwire__ServerFrame *)hdr;
    return 1;
}

int tc_fill(struct tc_conn *c)
{
    int n;

    do
        n = evbuffer_read(c->in, c->fd, 65536);
    while (n < 0 && errno == EINTR);
    if (n <= 0)
        c->ended = 1;
    return n;
}

/* Next frame from the socket (not the stash); as tc_read. */
static int tc_read_wire(struct tc_conn *c, int64_t deadline, struct tc_reply *r)
{
    for (;;) {
        int rc = tc_take(c, r);
        if (rc != 0)
            return rc;
        if (c->ended)
            return -1;
        int64_t left = deadline - tc_now_ms();
        if (left < 0)
            left = 0;
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        rc = poll(&p, 1, (int)left);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc == 0)
            return 0;
        if (tc_fill(c) <= 0 && evbuffer_get_length(c->in) == 0)
            return -1;
    }
}

int tc_read(struct tc_conn *c, int timeout_ms, struct tc_reply *r)
{
    if (c->head != NULL) {
        struct tc_stashed *s = c->head;
        c->head = s->next;
        if (c->head == NULL)
            c->tail = &c->head;
        *r = s->r;
        free(s);
        return 1;
    }
    return tc_read_wire(c, tc_now_ms() + timeout_ms, r);
}

static void tc_stash(struct tc_conn *c, struct tc_reply *r)
{
    struct tc_stashed *s = malloc(sizeof *s);

    ck_assert_msg(s != NULL, "out of memory");
    s->r = *r;
    s->next = NULL;
    *c->tail = s;
    c->tail = &s->next;
}

/* A connection-level error frame ends any wait: the caller must see it. */
static int tc_is_match(const struct tc_reply *r, uint64_t id)
{
    return r->f->id == id || (r->f->id == 0 && r->f->status != ST(OK));
}

int tc_wait(struct tc_conn *c, uint64_t id, int timeout_ms, struct tc_reply *r)
{
    int64_t deadline = tc_now_ms() + timeout_ms;

    for (struct tc_stashed **pp = &c->head; *pp != NULL; pp = &(*pp)->next) {
        struct tc_stashed *s = *pp;
        if (!tc_is_match(&s->r, id))
            continue;
        *pp = s->next;
        if (c->tail == &s->next)
            c->tail = pp;
        *r = s->r;
        free(s);
        return 1;
    }
    for (;;) {
        int rc = tc_read_wire(c, deadline, r);
        if (rc <= 0)
            return rc;
        if (tc_is_match(r, id))
            return 1;
        tc_stash(c, r);
    }
}

int tc_must_wait(struct tc_conn *c, uint64_t id, struct tc_reply *r)
{
    int rc = tc_wait(c, id, TC_REPLY_MS, r);

    ck_assert_msg(rc != 0, "no reply to request %llu within %d ms", (unsigned long long)id, TC_REPLY_MS);
    ck_assert_msg(rc == 1, "connection ended while waiting for request %llu", (unsigned long long)id);
    return r->f->status;
}

int tc_closed_within(struct tc_conn *c, int timeout_ms)
{
    int64_t deadline = tc_now_ms() + timeout_ms;
    struct tc_reply r;

    for (;;) {
        int rc = tc_read_wire(c, deadline, &r);
        if (rc < 0)
            return 1;
        if (rc == 0)
            return 0;
        fprintf(stderr, "testclient: unexpected frame id %llu status %s while waiting for close\n",
                (unsigned long long)r.f->id, tc_status_name(r.f->status));
        tc_stash(c, &r);
    }
}

/* ---- requests -------------------------------------------------------- */

uint64_t tc_request_start(struct tc_conn *c, Chanwire__ClientFrame *f, const struct wire_payload *pl,
                          size_t n)
{
    f->id = tc_next_id(c);
    ck_assert_msg(tc_write_frame(c, f, pl, n) == 0, "writing request %llu: %s", (unsigned long long)f->id,
                  strerror(errno));
    return f->id;
}

/* Wait for the reply to id and return its status, dropping the reply. */
static int tc_status_of(struct tc_conn *c, uint64_t id)
{
    struct tc_reply r;
    int st = tc_must_wait(c, id, &r);

    tc_reply_free(&r);
    return st;
}

uint64_t tc_hello_start(struct tc_conn *c)
{
    static uint32_t session_counter;
    Chanwire__ClientFrame f = CHANWIRE__CLIENT_FRAME__INIT;
    Chanwire__Hello h = CHANWIRE__HELLO__INIT;
    uint8_t session[16] = {0};
    uint32_t pid = (uint32_t)getpid(), k = ++session_counter;

    memcpy(session, &pid, sizeof pid);
    memcpy(session + 4, &k, sizeof k);
    memcpy(session + 8, &c, sizeof c < 8 ? sizeof c : 8);
    h.version = WIRE_VERSION;
    h.session.data = session;
    h.session.len = sizeof session;
    h.client_name = "broker-test";
    f.body_case = CHANWIRE__CLIENT_FRAME__BODY_HELLO;
    f.hello = &h;
    return tc_request_start(c, &f, NULL, 0);
}

int tc_hello(struct tc_conn *c)
{
    struct tc_reply r;
    uint64_t id = tc_hello_start(c);
    int st = tc_must_wait(c, id, &r);

    if (st == ST(OK))
        ck_assert_msg(r.f->body_case == CHANWIRE__SERVER_FRAME__BODY_HELLO, "HELLO reply without HelloReply");
    tc_reply_free(&r);
    return st;
}

int tc_open_n(struct tc_conn *c, const char *name, size_t len, int64_t cap, uint64_t *chan)
{
    Chanwire__ClientFrame f = CHANWIRE__CLIENT_FRAME__INIT;
    Chanwire__Open o = CHANWIRE__OPEN__INIT;
    struct tc_reply r;
    char *copy = malloc(len + 1);
    int st;

    /* protobuf-c packs strings with strlen: no embedded NUL can be sent. */
    ck_assert_msg(copy != NULL, "out of memory");
    memcpy(copy, name, len);
    copy[len] = '\0';
    o.name = copy;
    o.cap = cap;
    f.body_case = CHANWIRE__CLIENT_FRAME__BODY_OPEN;
    f.open = &o;
    st = tc_must_wait(c, tc_request_start(c, &f, NULL, 0), &r);
    free(copy);
    if (st == ST(OK)) {
        ck_assert_msg(r.f->body_case == CHANWIRE__SERVER_FRAME__BODY_OPEN, "OPEN reply without OpenReply");
        ck_assert_msg(r.f->open->chan != 0, "OPEN returned handle 0");
        if (chan != NULL)
            *chan = r.f->open->chan;
    }
    tc_reply_free(&r);
    return st;
}

int tc_open(struct tc_conn *c, const char *name, int64_t cap, uint64_t *chan)
{
    return tc_open_n(c, name, strlen(name), cap, chan);
}

uint64_t tc_send_start(struct tc_conn *c, uint64_t chan, const void *data, size_t len, int64_t timeout_ms)
{
    Chanwire__ClientFrame f = CHANWIRE__CLIENT_FRAME__INIT;
    Chanwire__Send s = CHANWIRE__SEND__INIT;
    struct wire_payload pl = {.data = data, .len = len};

    s.chan = chan;
    s.timeout_ms = timeout_ms;
    f.body_case = CHANWIRE__CLIENT_FRAME__BODY_SEND;
    f.send = &s;
    return tc_request_start(c, &f, &pl, 1);
}

int tc_send(struct tc_conn *c, uint64_t chan, const void *data, size_t len, int64_t timeout_ms)
{
    return tc_status_of(c, tc_send_start(c, chan, data, len, timeout_ms));
}

int tc_send_str(struct tc_conn *c, uint64_t chan, const char *s)
{
    return tc_send(c, chan, s, strlen(s), -1);
}

uint64_t tc_recv_start(struct tc_conn *c, uint64_t chan, int64_t timeout_ms)
{
    Chanwire__ClientFrame f = CHANWIRE__CLIENT_FRAME__INIT;
    Chanwire__Recv rv = CHANWIRE__RECV__INIT;

    rv.chan = chan;
    rv.timeout_ms = timeout_ms;
    f.body_case = CHANWIRE__CLIENT_FRAME__BODY_RECV;
    f.recv = &rv;
    return tc_request_start(c, &f, NULL, 0);
}

void tc_reply_msg(struct tc_reply *r, struct tc_msg *m)
{
    ck_assert_msg(r->f->body_case == CHANWIRE__SERVER_FRAME__BODY_RECV, "RECV reply without RecvReply");
    ck_assert_msg(r->f->recv->n_tags == 1 && r->n == 1, "RECV reply with %zu tags and %zu payloads, want 1 and 1",
                  r->f->recv->n_tags, r->n);
    *m = r->pl[0];
    r->pl[0].data = NULL;
    m->tag = r->f->recv->tags[0];
    m->deliveries = r->f->recv->n_deliveries > 0 ? r->f->recv->deliveries[0] : 0;
}

int tc_recv(struct tc_conn *c, uint64_t chan, int64_t timeout_ms, struct tc_msg *m)
{
    struct tc_reply r;
    int st;

    memset(m, 0, sizeof *m);
    /* A blocking recv may legitimately wait; callers bound it with timeout_ms. */
    uint64_t id = tc_recv_start(c, chan, timeout_ms);
    int rc = tc_wait(c, id, TC_REPLY_MS + (timeout_ms > 0 ? (int)timeout_ms : 0), &r);
    ck_assert_msg(rc != 0, "no reply to RECV %llu", (unsigned long long)id);
    ck_assert_msg(rc == 1, "connection ended while waiting for RECV %llu", (unsigned long long)id);
    st = r.f->status;
    if (st == ST(OK))
        tc_reply_msg(&r, m);
    tc_reply_free(&r);
    return st;
}

void tc_msg_free(struct tc_msg *m)
{
    free(m->data);
    memset(m, 0, sizeof *m);
}

int tc_ack(struct tc_conn *c, uint64_t tag)
{
    Chanwire__ClientFrame f = CHANWIRE__CLIENT_FRAME__INIT;
    Chanwire__Tags t = CHANWIRE__TAGS__INIT;

    t.n_tags = 1;
    t.tags = &tag;
    f.body_case = CHANWIRE__CLIENT_FRAME__BODY_ACK;
    f.ack = &t;
    return tc_status_of(c, tc_request_start(c, &f, NULL, 0));
}

int tc_ack_only(struct tc_conn *c, uint64_t tag)
{
    Chanwire__ClientFrame f = CHANWIRE__CLIENT_FRAME__INIT;

    f.n_acks = 1;
    f.acks = &tag;
    return tc_write_frame(c, &f, NULL, 0);
}

int tc_close(struct tc_conn *c, uint64_t chan)
{
    Chanwire__ClientFrame f = CHANWIRE__CLIENT_FRAME__INIT;
    Chanwire__Close cl = CHANWIRE__CLOSE__INIT;

    cl.chan = chan;
    f.body_case = CHANWIRE__CLIENT_FRAME__BODY_CLOSE;
    f.close = &cl;
    return tc_status_of(c, tc_request_start(c, &f, NULL, 0));
}

int tc_delete(struct tc_conn *c, const char *name)
{
    Chanwire__ClientFrame f = CHANWIRE__CLIENT_FRAME__INIT;
    Chanwire__Delete d = CHANWIRE__DELETE__INIT;

    d.name = (char *)name;
    f.body_case = CHANWIRE__CLIENT_FRAME__BODY_DELETE;
    f.delete_ = &d;
    return tc_status_of(c, tc_request_start(c, &f, NULL, 0));
}

uint64_t tc_cancel_start(struct tc_conn *c, uint64_t target)
{
    Chanwire__ClientFrame f = CHANWIRE__CLIENT_FRAME__INIT;
    Chanwire__Cancel k = CHANWIRE__CANCEL__INIT;

    k.target = target;
    f.body_case = CHANWIRE__CLIENT_FRAME__BODY_CANCEL;
    f.cancel = &k;
    return tc_request_start(c, &f, NULL, 0);
}

uint64_t tc_select_start(struct tc_conn *c, const uint64_t *chans, const int *is_send, size_t n,
                         const struct wire_payload *pl, size_t nsend, int64_t timeout_ms)
{
    Chanwire__ClientFrame f = CHANWIRE__CLIENT_FRAME__INIT;
    Chanwire__Select sel = CHANWIRE__SELECT__INIT;
    Chanwire__Case cases[8], *ptrs[8];
    uint64_t id;

    ck_assert_msg(n <= 8, "at most 8 select cases in tests");
    for (size_t i = 0; i < n; i++) {
        chanwire__case__init(&cases[i]);
        cases[i].chan = chans[i];
        cases[i].send = is_send[i] != 0;
        ptrs[i] = &cases[i];
    }
    sel.n_cases = n;
    sel.cases = ptrs;
    sel.timeout_ms = timeout_ms;
    f.body_case = CHANWIRE__CLIENT_FRAME__BODY_SELECT;
    f.select = &sel;
    id = tc_request_start(c, &f, pl, nsend);
    return id;
}

int tc_stat(struct tc_conn *c, const char *name, struct tc_stat *st)
{
    Chanwire__ClientFrame f = CHANWIRE__CLIENT_FRAME__INIT;
    Chanwire__Stat s = CHANWIRE__STAT__INIT;
    struct tc_reply r;
    int status;

    s.name = (char *)name;
    f.body_case = CHANWIRE__CLIENT_FRAME__BODY_STAT;
    f.stat = &s;
    status = tc_must_wait(c, tc_request_start(c, &f, NULL, 0), &r);
    memset(st, 0, sizeof *st);
    if (status == ST(OK)) {
        ck_assert_msg(r.f->body_case == CHANWIRE__SERVER_FRAME__BODY_STAT, "STAT reply without ChanInfo");
        const Chanwire__ChanInfo *i = r.f->stat;
        st->cap = i->cap;
        st->len = i->len;
        st->unacked = i->unacked;
        st->senders = i->senders;
        st->receivers = i->receivers;
        st->closed = i->closed;
    }
    tc_reply_free(&r);
    return status;
}

static uint64_t tc_stat_field(const struct tc_stat *st, enum tc_field field)
{
    switch (field) {
    case TC_LEN:
        return st->len;
    case TC_UNACKED:
        return st->unacked;
    case TC_SENDERS:
        return st->senders;
    case TC_RECEIVERS:
        return st->receivers;
    default:
        ck_abort_msg("bad stat field %d", (int)field);
    }
    return 0;
}

void tc_wait_stat(struct tc_conn *c, const char *name, enum tc_field field, uint64_t want)
{
    static const char *const names[TC_FIELD_MAX] = {"len", "unacked", "senders", "receivers"};
    int64_t deadline = tc_now_ms() + TC_REPLY_MS;
    struct tc_stat st;

    for (;;) {
        TC_ASSERT_STATUS(tc_stat(c, name, &st), ST(OK));
        uint64_t got = tc_stat_field(&st, field);
        if (got == want)
            return;
        ck_assert_msg(tc_now_ms() < deadline, "STAT %s: %s stayed %llu, want %llu", name, names[field],
                      (unsigned long long)got, (unsigned long long)want);
        tc_pause_ms(2);
    }
}

/* ---- sessions, seqs, leases, auth ------------------------------------ */

uint64_t tc_hello_as_start(struct tc_conn *c, const uint8_t session[16], const char *token)
{
    Chanwire__ClientFrame f = CHANWIRE__CLIENT_FRAME__INIT;
    Chanwire__Hello h = CHANWIRE__HELLO__INIT;

    h.version = WIRE_VERSION;
    h.session.data = (uint8_t *)session;
    h.session.len = 16;
    h.token = (char *)(token != NULL ? token : "");
    h.client_name = "broker-test";
    f.body_case = CHANWIRE__CLIENT_FRAME__BODY_HELLO;
    f.hello = &h;
    return tc_request_start(c, &f, NULL, 0);
}

int tc_hello_as(struct tc_conn *c, const uint8_t session[16], const char *token, int *resumed)
{
    struct tc_reply r;
    int st = tc_must_wait(c, tc_hello_as_start(c, session, token), &r);

    if (st == ST(OK)) {
        ck_assert_msg(r.f->body_case == CHANWIRE__SERVER_FRAME__BODY_HELLO, "HELLO reply without HelloReply");
        ck_assert_msg(r.f->hello->instance.len == 16, "HELLO reply without a 16-byte instance");
        if (resumed != NULL)
            *resumed = r.f->hello->resumed;
    }
    tc_reply_free(&r);
    return st;
}

uint64_t tc_send_seq_start(struct tc_conn *c, uint64_t chan, const struct wire_payload *pl, size_t n,
                           int64_t timeout_ms, uint64_t seq)
{
    Chanwire__ClientFrame f = CHANWIRE__CLIENT_FRAME__INIT;
    Chanwire__Send s = CHANWIRE__SEND__INIT;

    s.chan = chan;
    s.timeout_ms = timeout_ms;
    s.seq = seq;
    f.body_case = CHANWIRE__CLIENT_FRAME__BODY_SEND;
    f.send = &s;
    return tc_request_start(c, &f, pl, n);
}

int tc_send_seq(struct tc_conn *c, uint64_t chan, const struct wire_payload *pl, size_t n, uint64_t seq,
                uint32_t *count)
{
    struct tc_reply r;
    int st = tc_must_wait(c, tc_send_seq_start(c, chan, pl, n, -1, seq), &r);

    if (st == ST(OK) && count != NULL) {
        ck_assert_msg(r.f->body_case == CHANWIRE__SERVER_FRAME__BODY_SEND, "SEND reply without SendReply");
        *count = r.f->send->count;
    }
    tc_reply_free(&r);
    return st;
}

uint64_t tc_recv_lease_start(struct tc_conn *c, uint64_t chan, int64_t timeout_ms, int64_t lease_ms)
{
    Chanwire__ClientFrame f = CHANWIRE__CLIENT_FRAME__INIT;
    Chanwire__Recv rv = CHANWIRE__RECV__INIT;

    rv.chan = chan;
    rv.timeout_ms = timeout_ms;
    rv.lease_ms = lease_ms;
    f.body_case = CHANWIRE__CLIENT_FRAME__BODY_RECV;
    f.recv = &rv;
    return tc_request_start(c, &f, NULL, 0);
}

int tc_recv_lease(struct tc_conn *c, uint64_t chan, int64_t timeout_ms, int64_t lease_ms, struct tc_msg *m)
{
    struct tc_reply r;
    uint64_t id = tc_recv_lease_start(c, chan, timeout_ms, lease_ms);
    int rc = tc_wait(c, id, TC_REPLY_MS + (timeout_ms > 0 ? (int)timeout_ms : 0), &r);
    int st;

    memset(m, 0, sizeof *m);
    ck_assert_msg(rc == 1, "leased RECV %llu: %s", (unsigned long long)id, rc == 0 ? "no reply" : "connection ended");
    st = r.f->status;
    if (st == ST(OK))
        tc_reply_msg(&r, m);
    tc_reply_free(&r);
    return st;
}

int tc_nack(struct tc_conn *c, uint64_t tag)
{
    Chanwire__ClientFrame f = CHANWIRE__CLIENT_FRAME__INIT;
    Chanwire__Tags t = CHANWIRE__TAGS__INIT;

    t.n_tags = 1;
    t.tags = &tag;
    f.body_case = CHANWIRE__CLIENT_FRAME__BODY_NACK;
    f.nack = &t;
    return tc_status_of(c, tc_request_start(c, &f, NULL, 0));
}

uint64_t tc_ping_start(struct tc_conn *c, const void *data, size_t len)
{
    Chanwire__ClientFrame f = CHANWIRE__CLIENT_FRAME__INIT;
    Chanwire__Ping p = CHANWIRE__PING__INIT;

    p.data.data = (uint8_t *)data;
    p.data.len = len;
    f.body_case = CHANWIRE__CLIENT_FRAME__BODY_PING;
    f.ping = &p;
    return tc_request_start(c, &f, NULL, 0);
}

int tc_ping(struct tc_conn *c)
{
    return tc_status_of(c, tc_ping_start(c, "ping", 4));
}
