/*
 * semantic_env.c: the switch between local and remote channels for the
 * semantic suite, the broker it starts for remote runs, and the small
 * helpers (integer messages, coroutine groups, settling) the tests share.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "semantic.h"

int sem_remote;

/* The broker of a remote run; started by the suite's main process. */
static struct {
    pid_t pid;          /* chand's pid, 0 when none */
    pid_t owner;        /* the process that started it (test children must not stop it) */
    int port;           /* where it listens on 127.0.0.1 */
    char dir[64];       /* private temp dir for the port file */
    char portfile[96];  /* dir + "/port" */
} env_broker;

/*
 * This test process's connections (remote runs), made and freed by the
 * fixtures: everything goes through env_client except the handles
 * sem_peer hands out, which play another process on env_peer.
 */
static chan_client_t *env_client, *env_peer;

/*
 * Every channel handle sem_mk or sem_lookup made in this test process. The
 * table owns the handles (teardown frees them) and the array itself.
 */
struct env_chan {
    chan_t *ch;
    char name[64]; /* broker name (remote), "" for local */
    int closed;    /* sem_close_all closed it */
};
static struct env_chan *env_chans;
static size_t env_nchans, env_capchans;
static unsigned long env_counter; /* makes names unique within this process */

/* ---- the broker ------------------------------------------------------- */

static void env_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

/* Runs in every process that exits, Check's test children included. */
static void env_stop_broker(void)
{
    int status;

    if (env_broker.pid <= 0 || getpid() != env_broker.owner)
        return;
    kill(env_broker.pid, SIGTERM);
    for (int i = 0; i < 200; i++) {
        if (waitpid(env_broker.pid, &status, WNOHANG) == env_broker.pid)
            goto reaped;
        env_sleep_ms(10);
    }
    fprintf(stderr, "semantic: chand ignored SIGTERM for 2 s, killing it\n");
    kill(env_broker.pid, SIGKILL);
    waitpid(env_broker.pid, &status, 0);
reaped:
    env_broker.pid = 0;
    unlink(env_broker.portfile);
    rmdir(env_broker.dir);
}

static void env_die(const char *what)
{
    fprintf(stderr, "semantic: %s\n", what);
    exit(EXIT_FAILURE);
}

/* The port chand wrote, or 0 while the file is missing or incomplete. */
static int env_read_port(void)
{
    char buf[32];
    ssize_t n;
    int fd = open(env_broker.portfile, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return 0;
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    long port = strtol(buf, NULL, 10);
    return port > 0 && port < 65536 ? (int)port : 0;
}

static void env_start_broker(void)
{
    const char *chand = getenv("CHAND");
    int status;

    if (!chand || !*chand)
        env_die("CHAN_KIND=remote needs CHAND, the path of the chand binary");
    if (access(chand, X_OK) != 0)
        env_die("CHAND is not an executable file");
    snprintf(env_broker.dir, sizeof env_broker.dir, "/tmp/semantic.XXXXXX");
    if (!mkdtemp(env_broker.dir))
        env_die("cannot make a temp dir for the port file");
    snprintf(env_broker.portfile, sizeof env_broker.portfile, "%s/port", env_broker.dir);

    env_broker.owner = getpid();
    env_broker.pid = fork();
    if (env_broker.pid < 0)
        env_die("fork failed");
    if (env_broker.pid == 0) {
        /* A crashed suite must not leave a daemon behind. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != env_broker.owner)
            _exit(127);
        execl(chand, chand, "--bind", "127.0.0.1", "--port", "0", "--port-file",
              env_broker.portfile, "--log-level", "warn", (char *)NULL);
        _exit(127);
    }
    atexit(env_stop_broker);

    for (int i = 0; i < 1000; i++) {
        env_broker.port = env_read_port();
        if (env_broker.port > 0)
            return;
        if (waitpid(env_broker.pid, &status, WNOHANG) == env_broker.pid) {
            env_broker.pid = 0;
            env_die("chand exited before writing its port file");
        }
        env_sleep_ms(10);
    }
    env_die("chand wrote no port within 10 s");
}

void sem_env_init(void)
{
    const char *kind = getenv("CHAN_KIND");

    if (!kind || !*kind || strcmp(kind, "local") == 0)
        sem_remote = 0;
    else if (strcmp(kind, "remote") == 0)
        sem_remote = 1;
    else
        env_die("CHAN_KIND must be local or remote");
    if (sem_remote)
        env_start_broker();
}

/* ---- fixtures and the channel table ----------------------------------- */

void sem_env_setup(void)
{
    char addr[32];
    struct chan_opts opts = {.client_name = "semantic"};

    if (!sem_remote)
        return;
    snprintf(addr, sizeof addr, "127.0.0.1:%d", env_broker.port);
    env_client = chan_connect(addr, &opts);
    ck_assert_msg(env_client != NULL, "chan_connect(%s): %s", addr, strerror(errno));
    opts.client_name = "semantic-peer";
    env_peer = chan_connect(addr, &opts);
    ck_assert_msg(env_peer != NULL, "chan_connect(%s) for the peer: %s", addr, strerror(errno));
}

void sem_env_teardown(void)
{
    for (size_t i = 0; i < env_nchans; i++)
        chan_free(env_chans[i].ch);
    free(env_chans);
    env_chans = NULL;
    env_nchans = env_capchans = 0;
    if (env_client) {
        chan_disconnect(env_client);
        env_client = NULL;
    }
    if (env_peer) {
        chan_disconnect(env_peer);
        env_peer = NULL;
    }
}

static struct env_chan *env_add(chan_t *ch, const char *name)
{
    if (env_nchans == env_capchans) {
        size_t ncap = env_capchans ? env_capchans * 2 : 64;
        struct env_chan *n = realloc(env_chans, ncap * sizeof *n);
        ck_assert_msg(n != NULL, "out of memory for the channel table");
        env_chans = n;
        env_capchans = ncap;
    }
    struct env_chan *e = &env_chans[env_nchans++];
    e->ch = ch;
    e->closed = 0;
    snprintf(e->name, sizeof e->name, "%s", name);
    return e;
}

static struct env_chan *env_find(chan_t *ch)
{
    for (size_t i = env_nchans; i-- > 0;)
        if (env_chans[i].ch == ch)
            return &env_chans[i];
    ck_abort_msg("channel %p was not made by sem_mk", (void *)ch);
    return NULL;
}

chan_t *sem_mk(size_t cap)
{
    char name[64];
    chan_t *ch;

    if (!sem_remote) {
        ch = chan_make(cap);
        ck_assert_msg(ch != NULL, "chan_make(%zu): %s", cap, strerror(errno));
        env_add(ch, "");
        return ch;
    }
    snprintf(name, sizeof name, "sem.%ld.%lu", (long)getpid(), ++env_counter);
    ch = chan_open(env_client, name, (long)cap);
    ck_assert_msg(ch != NULL, "chan_open(%s, %zu): %s", name, cap, strerror(errno));
    env_add(ch, name);
    return ch;
}

const char *sem_ref(chan_t *ch)
{
    static char refs[8][32];
    static int next;
    struct env_chan *e = env_find(ch);

    if (sem_remote)
        return e->name;
    /* A few rotating buffers: callers copy the ref into a message at once. */
    char *r = refs[next++ % 8];
    snprintf(r, sizeof refs[0], "L%zu", (size_t)(e - env_chans));
    return r;
}

chan_t *sem_lookup(const char *ref)
{
    if (!sem_remote) {
        unsigned long i;
        ck_assert_msg(ref[0] == 'L', "bad local ref %s", ref);
        i = strtoul(ref + 1, NULL, 10);
        ck_assert_msg(i < env_nchans, "stale local ref %s", ref);
        return env_chans[i].ch;
    }
    char name[64];

    /* ref may live in the table, which env_add can move. */
    snprintf(name, sizeof name, "%s", ref);
    chan_t *ch = chan_open(env_client, name, -1);
    ck_assert_msg(ch != NULL, "chan_open(%s, -1) to attach: %s", name, strerror(errno));
    env_add(ch, name);
    return ch;
}

chan_t *sem_peer(chan_t *ch)
{
    struct env_chan *e = env_find(ch);
    char name[64];

    if (!sem_remote)
        return ch;
    snprintf(name, sizeof name, "%s", e->name);
    chan_t *p = chan_open(env_peer, name, -1);
    ck_assert_msg(p != NULL, "chan_open(%s, -1) on the peer connection: %s", name,
                  strerror(errno));
    env_add(p, name);
    return p;
}

void sem_close_all(void)
{
    /* Index, not pointer: a close may run coroutines that grow the table. */
    for (size_t i = 0; i < env_nchans; i++) {
        if (env_chans[i].closed)
            continue;
        env_chans[i].closed = 1;
        if (chan_close(env_chans[i].ch) == -1)
            ck_assert_msg(errno == EPIPE, "closing for teardown: %s", strerror(errno));
    }
}

/* ---- waiting for observable state ------------------------------------- */

int sem_waiters(chan_t *ch, long *senders, long *receivers)
{
    struct chan_info info;
    struct env_chan *e = env_find(ch);

    if (!sem_remote)
        return -1;
    ck_assert_msg(chan_stat(env_client, e->name, &info) == 0, "chan_stat(%s): %s", e->name,
                  strerror(errno));
    *senders = info.senders;
    *receivers = info.receivers;
    return 0;
}

void sem_settle(chan_t *ch, long senders, long receivers)
{
    long s = -1, r = -1;

    /*
     * Local: a coroutine started with chan_go runs when the caller yields,
     * up to its first block; a few rounds cover chains of such hand-offs.
     */
    if (!sem_remote) {
        for (int i = 0; i < 8; i++)
            chan_yield();
        return;
    }
    int64_t until = sem_in(5000);
    for (;;) {
        sem_waiters(ch, &s, &r);
        if ((senders < 0 || s == senders) && (receivers < 0 || r == receivers))
            return;
        if (chan_now() > until)
            break;
        chan_sleep(sem_in(2));
    }
    ck_abort_msg("broker shows %ld senders/%ld receivers blocked, waited for %ld/%ld", s, r,
                 senders, receivers);
}

/* ---- small helpers ----------------------------------------------------- */

long sem_scale(long n, long rn)
{
    return sem_remote ? rn : n;
}

int64_t sem_in(int64_t ms)
{
    return chan_now() + ms;
}

int sem_send_int(chan_t *ch, long v, int64_t deadline)
{
    int64_t w = v;
    return chan_send(ch, &w, sizeof w, deadline);
}

long sem_msg_int(const chan_msg_t *msg)
{
    int64_t w;

    ck_assert_msg(msg->len == sizeof w, "message of %zu bytes, want %zu", msg->len, sizeof w);
    memcpy(&w, msg->data, sizeof w);
    return (long)w;
}

int sem_recv_int(chan_t *ch, long *v, int64_t deadline)
{
    chan_msg_t msg = {0};
    int r = chan_recv(ch, &msg, deadline);

    if (r == 1) {
        *v = sem_msg_int(&msg);
        chan_msg_free(&msg);
    }
    return r;
}

void sem_case_send(struct chan_case *c, chan_t *ch, const void *data, size_t len)
{
    memset(c, 0, sizeof *c);
    c->ch = ch;
    c->op = CHAN_SEND;
    c->data = data;
    c->len = len;
    c->result = SEM_UNTOUCHED;
}

void sem_case_recv(struct chan_case *c, chan_t *ch, chan_msg_t *msg)
{
    memset(c, 0, sizeof *c);
    memset(msg, 0, sizeof *msg);
    c->ch = ch;
    c->op = CHAN_RECV;
    c->msg = msg;
    c->result = SEM_UNTOUCHED;
}

int sem_go(void (*fn)(void *), void *arg)
{
    int cr = chan_go(fn, arg);
    ck_assert_msg(cr > 0, "chan_go: %s", strerror(errno));
    return cr;
}

void sem_join(int cr, int64_t ms)
{
    int r = chan_join(cr, sem_in(ms));
    ck_assert_msg(r == 0, "coroutine %d did not finish within %lld ms: %s", cr, (long long)ms,
                  strerror(errno));
}

int sem_group_go(struct sem_group *g, void (*fn)(void *), void *arg)
{
    if (g->n == g->cap) {
        int ncap = g->cap ? g->cap * 2 : 16;
        int *n = realloc(g->ids, (size_t)ncap * sizeof *n);
        ck_assert_msg(n != NULL, "out of memory for a coroutine group");
        g->ids = n;
        g->cap = ncap;
    }
    g->ids[g->n] = sem_go(fn, arg);
    return g->ids[g->n++];
}

void sem_group_join(struct sem_group *g, int64_t deadline)
{
    for (int i = 0; i < g->n; i++) {
        int r = chan_join(g->ids[i], deadline);
        ck_assert_msg(r == 0, "coroutine %d of %d did not finish in time: %s", i, g->n,
                      strerror(errno));
    }
    free(g->ids);
    g->ids = NULL;
    g->n = g->cap = 0;
}

void sem_op_send(void *arg)
{
    struct sem_op *o = arg;

    o->ret = sem_send_int(o->ch, o->v, o->deadline);
    o->err = errno;
    o->at = chan_now();
    o->done = 1;
}

void sem_op_recv(void *arg)
{
    struct sem_op *o = arg;

    o->ret = sem_recv_int(o->ch, &o->v, o->deadline);
    o->err = errno;
    o->at = chan_now();
    o->done = 1;
}

void sem_group_shutdown(struct sem_group *g, int64_t deadline)
{
    for (int i = 0; i < g->n;) {
        sem_close_all();
        if (chan_join(g->ids[i], sem_in(50)) == 0) {
            i++;
            continue;
        }
        ck_assert_msg(errno == ETIMEDOUT, "join during shutdown: %s", strerror(errno));
        ck_assert_msg(chan_now() < deadline, "coroutine %d of %d still runs after shutdown", i,
                      g->n);
    }
    free(g->ids);
    g->ids = NULL;
    g->n = g->cap = 0;
}

void sem_sel_run(void *arg)
{
    struct sem_sel *o = arg;
    int64_t w = 4242;

    sem_case_recv(&o->cs[0], o->r, &o->m);
    sem_case_send(&o->cs[1], o->s, &w, sizeof w);
    o->ret = chan_select(o->cs, 2, o->deadline);
    o->err = errno;
    o->done = 1;
}
