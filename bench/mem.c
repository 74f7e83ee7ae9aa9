/*
 * mem.c: workloads 5 and 6, the broker's memory per object. It reads the
 * broker's VmRSS from /proc/PID/status before and after making N objects
 * and prints the difference per object:
 *   chans: N channels (cap 1) empty, then holding one 64-byte message each;
 *          every message is received back and checked.
 *   msgs:  one channel holding N 64-byte messages (bytes beyond the payload).
 *   conns: N idle connections (chan_connect, HELLO answered).
 *
 * usage: bench-mem chans|msgs|conns --addr HOST:PORT --pid PID -n N
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <chan.h>

#define MEM_MSG 64            /* payload bytes */
#define MEM_CONC 64           /* coroutines issuing requests at once */

static const char *mem_addr;
static int mem_pid;

static void mem_die(const char *what)
{
    fprintf(stderr, "bench-mem: %s: %s\n", what, strerror(errno));
    exit(1);
}

static long mem_rss(void)
{
    char path[64], line[256];
    FILE *f;
    long kb = -1;

    snprintf(path, sizeof path, "/proc/%d/status", mem_pid);
    f = fopen(path, "r");
    if (f == NULL)
        mem_die(path);
    while (fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb * 1024;
}

/* Work shared by the coroutines of one phase: item k for k in [0, n). */
struct mem_work {
    chan_client_t *cl;
    chan_t **chans;           /* one per channel (chans) */
    long n;
    long next;                /* next item to take */
    int phase;                /* 0 open, 1 send, 2 recv and check */
    int failed;
    unsigned long long sum;   /* phase 2: sum of sequence numbers seen */
};

static void mem_worker(void *arg)
{
    struct mem_work *w = arg;
    unsigned char msg[MEM_MSG] = {0};
    char name[64];

    while (!w->failed && w->next < w->n) {
        long k = w->next++;
        chan_msg_t m;

        switch (w->phase) {
        case 0:
            snprintf(name, sizeof name, "mem.%ld", k);
            w->chans[k] = chan_open(w->cl, name, 1);
            if (w->chans[k] == NULL)
                w->failed = 1;
            break;
        case 1:
            memcpy(msg, &k, sizeof k);
            if (chan_send(w->chans[k], msg, sizeof msg, -1) < 0)
                w->failed = 1;
            break;
        default:
            if (chan_recv(w->chans[k], &m, -1) != 1 || m.len != MEM_MSG) {
                w->failed = 1;
                break;
            }
            {
                long got;

                memcpy(&got, m.data, sizeof got);
                if (got != k)
                    w->failed = 1;
                w->sum += (unsigned long long)got;
            }
            chan_msg_free(&m);
            break;
        }
    }
    if (w->failed)
        fprintf(stderr, "bench-mem: phase %d failed: %s\n", w->phase, strerror(errno));
}

static void mem_phase(struct mem_work *w, int phase)
{
    int crs[MEM_CONC];

    w->phase = phase;
    w->next = 0;
    for (int i = 0; i < MEM_CONC; i++)
        if ((crs[i] = chan_go(mem_worker, w)) < 0)
            mem_die("chan_go");
    for (int i = 0; i < MEM_CONC; i++)
        chan_join(crs[i], -1);
    if (w->failed)
        exit(1);
}

static int mem_chans(long n)
{
    struct mem_work w = {.n = n};
    long base, empty, full;
    int ok;

    w.cl = chan_connect(mem_addr, NULL);
    w.chans = calloc((size_t)n, sizeof *w.chans);
    if (w.cl == NULL || w.chans == NULL)
        mem_die("connect");
    base = mem_rss();
    mem_phase(&w, 0);
    empty = mem_rss();
    mem_phase(&w, 1);
    full = mem_rss();
    mem_phase(&w, 2);
    ok = w.sum == (unsigned long long)n * (unsigned long long)(n - 1) / 2;
    printf("workload=chans peer=chand n=%ld empty_chan_bytes=%.0f chan_with_msg_bytes=%.0f "
           "msg_overhead_bytes=%.0f ok=%d\n",
           n, (double)(empty - base) / (double)n, (double)(full - base) / (double)n,
           (double)(full - empty) / (double)n - MEM_MSG, ok);
    for (long k = 0; k < n; k++)
        chan_free(w.chans[k]);
    chan_disconnect(w.cl);
    free(w.chans);
    return !ok;
}

/* The msgs test's senders and receivers: the one channel, n messages. */
struct mem_one {
    chan_t *ch;
    long n, next;
    int failed;
    unsigned long long sum;
};

static void mem_one_send(void *arg)
{
    struct mem_one *o = arg;
    unsigned char msg[MEM_MSG] = {0};

    while (!o->failed && o->next < o->n) {
        long k = o->next++;

        memcpy(msg, &k, sizeof k);
        if (chan_send(o->ch, msg, sizeof msg, -1) < 0)
            o->failed = 1;
    }
}

static void mem_one_recv(void *arg)
{
    struct mem_one *o = arg;
    chan_msg_t m;

    while (!o->failed && o->next < o->n) {
        long got;

        o->next++;
        if (chan_recv(o->ch, &m, -1) != 1 || m.len != MEM_MSG) {
            o->failed = 1;
            break;
        }
        memcpy(&got, m.data, sizeof got);
        o->sum += (unsigned long long)got;
        chan_msg_free(&m);
    }
}

static void mem_one_phase(struct mem_one *o, void (*fn)(void *))
{
    int crs[MEM_CONC];

    o->next = 0;
    for (int i = 0; i < MEM_CONC; i++)
        if ((crs[i] = chan_go(fn, o)) < 0)
            mem_die("chan_go");
    for (int i = 0; i < MEM_CONC; i++)
        chan_join(crs[i], -1);
    if (o->failed)
        mem_die("msgs");
}

static int mem_msgs(long n)
{
    chan_client_t *cl = chan_connect(mem_addr, NULL);
    struct mem_one o = {.n = n};
    long base, full;
    int ok;

    if (cl == NULL)
        mem_die("connect");
    o.ch = chan_open(cl, "mem.buffered", n);
    if (o.ch == NULL)
        mem_die("open");
    base = mem_rss();
    mem_one_phase(&o, mem_one_send);
    full = mem_rss();
    mem_one_phase(&o, mem_one_recv);
    ok = o.sum == (unsigned long long)n * (unsigned long long)(n - 1) / 2;
    printf("workload=msgs peer=chand n=%ld msg_overhead_bytes=%.0f ok=%d\n", n,
           (double)(full - base) / (double)n - MEM_MSG, ok);
    chan_free(o.ch);
    chan_disconnect(cl);
    return !ok;
}

static int mem_conns(long n)
{
    chan_client_t **cls = calloc((size_t)n, sizeof *cls);
    struct rlimit rl;
    long base, after;
    int ok = 1;

    if (cls == NULL)
        mem_die("calloc");
    /* every client is a descriptor here and one in the broker */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    base = mem_rss();
    for (long i = 0; i < n; i++) {
        cls[i] = chan_connect(mem_addr, NULL);
        if (cls[i] == NULL) {
            fprintf(stderr, "bench-mem: connection %ld: %s\n", i, strerror(errno));
            ok = 0;
            n = i;
            break;
        }
    }
    after = mem_rss();
    /* the last one still answers: the broker kept every connection */
    if (ok && chan_stat(cls[n - 1], "mem.none", &(struct chan_info){0}) == 0)
        ok = 0;
    else if (ok && errno != ENOENT)
        ok = 0;
    printf("workload=conns peer=chand n=%ld conn_bytes=%.0f ok=%d\n", n,
           (double)(after - base) / (double)(n > 0 ? n : 1), ok);
    for (long i = 0; i < n; i++)
        chan_disconnect(cls[i]);
    free(cls);
    return !ok;
}

int main(int argc, char **argv)
{
    long n = 0;

    for (int i = 2; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--addr") == 0)
            mem_addr = argv[i + 1];
        else if (strcmp(argv[i], "--pid") == 0)
            mem_pid = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "-n") == 0)
            n = atol(argv[i + 1]);
    }
    if (argc < 2 || mem_addr == NULL || mem_pid <= 0 || n <= 0) {
        fprintf(stderr, "usage: bench-mem chans|msgs|conns --addr HOST:PORT --pid PID -n N\n");
        return 2;
    }
    if (strcmp(argv[1], "chans") == 0)
        return mem_chans(n);
    if (strcmp(argv[1], "msgs") == 0)
        return mem_msgs(n);
    if (strcmp(argv[1], "conns") == 0)
        return mem_conns(n);
    fprintf(stderr, "bench-mem: unknown test %s\n", argv[1]);
    return 2;
}
