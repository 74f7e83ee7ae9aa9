/*
 * harness.c: forks a load test's processes, starts them together, checks
 * exactly-once delivery and prints the result line (see harness.h). The
 * processes share one anonymous mapping, the board, where each consumer
 * keeps its running tally in a slot of its own cache line.
 */
#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

/* One process's tally; written by that process only, read by all. */
struct bench_slot {
    _Atomic uint64_t count;   /* messages taken */
    _Atomic uint64_t sum;     /* sum of their sequence numbers */
    _Atomic uint64_t xor;     /* xor of their sequence numbers */
    _Atomic uint64_t last_ns; /* bench_ns() when the last one was taken */
} __attribute__((aligned(64)));

/* Shared by every process of the run (MAP_SHARED anonymous). */
struct bench_board {
    _Atomic int ping_done;    /* rtt: the ping side finished (or failed) */
    _Atomic int producers_done; /* producers that sent all their messages */
    uint64_t t0;              /* bench_ns() when the processes were released */
    double p50, p99, p999;    /* rtt: microseconds, written by the ping process */
    double mean, max;         /* rtt: microseconds */
    long rtt_count;           /* rtt: round trips measured and checked */
    struct bench_slot slot[BENCH_MAX_PROCS]; /* producers first, then consumers */
};

static struct bench_board *bench_board;   /* the shared mapping */
static const struct bench_opts *bench_o;  /* this run's options */
static int bench_slot_idx = -1;           /* this process's slot */
static int bench_ready_fd = -1;           /* write end: one byte per ready child */
static int bench_go_fd = -1;              /* read end: EOF means go */
static uint64_t bench_t_count, bench_t_sum, bench_t_xor; /* this consumer's tally */

uint64_t bench_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Little-endian 64-bit stores and loads; a few instructions each, so the
 * harness costs the clients next to nothing per message. */
static void bench_put64(void *p, uint64_t v)
{
    v = htole64(v);
    memcpy(p, &v, sizeof v);
}

static uint64_t bench_get64(const void *p)
{
    uint64_t v;

    memcpy(&v, p, sizeof v);
    return le64toh(v);
}

void bench_fill(void *buf, uint64_t seq)
{
    bench_put64(buf, seq);
    bench_put64((unsigned char *)buf + 8, ~seq);
}

int64_t bench_seq(const void *data, size_t len, size_t want_len)
{
    uint64_t seq;

    if (len != want_len || len < BENCH_HDR)
        return -1;
    seq = bench_get64(data);
    if (bench_get64((const unsigned char *)data + 8) != ~seq || seq >= (uint64_t)INT64_MAX)
        return -1;
    return (int64_t)seq;
}

int bench_take(const void *data, size_t len)
{
    struct bench_slot *s = &bench_board->slot[bench_slot_idx];
    int64_t seq = bench_seq(data, len, bench_o->size);

    if (seq < 0) {
        fprintf(stderr, "bench: bad message (len %zu, want %zu)\n", len, bench_o->size);
        return -1;
    }
    bench_t_count++;
    bench_t_sum += (uint64_t)seq;
    bench_t_xor ^= (uint64_t)seq;
    atomic_store_explicit(&s->sum, bench_t_sum, memory_order_relaxed);
    atomic_store_explicit(&s->xor, bench_t_xor, memory_order_relaxed);
    atomic_store_explicit(&s->last_ns, bench_ns(), memory_order_relaxed);
    atomic_store_explicit(&s->count, bench_t_count, memory_order_release);
    return 0;
}

int bench_finished(void)
{
    uint64_t total = 0;

    if (strcmp(bench_o->workload, "rtt") == 0)
        return atomic_load(&bench_board->ping_done);
    for (int i = 0; i < BENCH_MAX_PROCS; i++)
        total += atomic_load_explicit(&bench_board->slot[i].count, memory_order_acquire);
    return total >= (uint64_t)bench_o->n;
}

int bench_producer_done(void)
{
    return atomic_fetch_add(&bench_board->producers_done, 1) + 1 == bench_o->producers;
}

void bench_ready(void)
{
    char c = 'r';

    if (write(bench_ready_fd, &c, 1) != 1)
        perror("bench: ready");
}

void bench_wait_go(void)
{
    char c;

    bench_ready();
    while (read(bench_go_fd, &c, 1) < 0 && errno == EINTR)
        ;
}

int bench_split_addr(const char *addr, char *host, size_t hostsz, int *port)
{
    const char *colon = strrchr(addr, ':');
    size_t hl;

    if (colon == NULL)
        return -1;
    hl = (size_t)(colon - addr);
    if (hl == 0 || hl >= hostsz)
        return -1;
    memcpy(host, addr, hl);
    host[hl] = '\0';
    *port = atoi(colon + 1);
    return *port > 0 && *port < 65536 ? 0 : -1;
}

const char *bench_name_a(const struct bench_opts *o)
{
    static char buf[256];

    snprintf(buf, sizeof buf, "%s.a", o->name);
    return buf;
}

const char *bench_name_b(const struct bench_opts *o)
{
    static char buf[256];

    snprintf(buf, sizeof buf, "%s.b", o->name);
    return buf;
}

static int bench_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* Value at quantile q of sorted v[0..n-1], nearest rank. */
static double bench_quantile_us(const uint64_t *v, long n, double q)
{
    long i = (long)(q * (double)n + 0.999999) - 1;

    if (i < 0)
        i = 0;
    if (i >= n)
        i = n - 1;
    return (double)v[i] / 1000.0;
}

static int bench_write_latencies(const char *path, const uint64_t *v, long n)
{
    FILE *f = fopen(path, "w");

    if (f == NULL) {
        perror(path);
        return -1;
    }
    fprintf(f, "# latency_us cumulative_fraction\n");
    for (long i = 0; i < n; i++)
        fprintf(f, "%.3f %.6f\n", (double)v[i] / 1000.0, (double)(i + 1) / (double)n);
    return fclose(f) == 0 ? 0 : -1;
}

int bench_rtt_run(const struct bench_opts *o, void *ctx,
                  int (*send)(void *ctx, const void *buf, size_t len),
                  const void *(*recv)(void *ctx, size_t *len))
{
    unsigned char *buf = calloc(1, o->size);
    uint64_t *lat = calloc((size_t)o->n, sizeof *lat);
    double total = 0;
    int rc = -1;

    if (buf == NULL || lat == NULL)
        goto out;
    for (long i = 0; i < o->warmup + o->n; i++) {
        const void *got;
        size_t len;
        uint64_t t;

        bench_fill(buf, (uint64_t)i);
        t = bench_ns();
        if (send(ctx, buf, o->size) < 0)
            goto out;
        got = recv(ctx, &len);
        if (got == NULL)
            goto out;
        t = bench_ns() - t;
        if (bench_seq(got, len, o->size) != i) {
            fprintf(stderr, "bench: round trip %ld came back wrong\n", i);
            goto out;
        }
        if (i >= o->warmup)
            lat[i - o->warmup] = t;
    }
    for (long i = 0; i < o->n; i++)
        total += (double)lat[i];
    qsort(lat, (size_t)o->n, sizeof *lat, bench_cmp_u64);
    bench_board->p50 = bench_quantile_us(lat, o->n, 0.50);
    bench_board->p99 = bench_quantile_us(lat, o->n, 0.99);
    bench_board->p999 = bench_quantile_us(lat, o->n, 0.999);
    bench_board->max = (double)lat[o->n - 1] / 1000.0;
    bench_board->mean = total / (double)o->n / 1000.0;
    bench_board->rtt_count = o->n;
    rc = 0;
    if (o->latfile != NULL && bench_write_latencies(o->latfile, lat, o->n) < 0)
        rc = -1;
out:
    atomic_store(&bench_board->ping_done, 1);
    free(buf);
    free(lat);
    return rc;
}

enum bench_role { ROLE_PRODUCE, ROLE_CONSUME, ROLE_PING, ROLE_ECHO };

/* Fork one child that runs role and exits; returns its pid or -1. */
static pid_t bench_spawn(const struct bench_peer *peer, const struct bench_opts *o,
                         enum bench_role role, int idx, uint64_t first, uint64_t count,
                         int go_wr)
{
    pid_t pid = fork();
    int rc = -1;

    if (pid != 0)
        return pid;
    close(go_wr);
    bench_slot_idx = idx;
    switch (role) {
    case ROLE_PRODUCE:
        rc = peer->produce(o, idx, first, count);
        break;
    case ROLE_CONSUME:
        rc = peer->consume(o, idx);
        break;
    case ROLE_PING:
        rc = peer->ping(o);
        break;
    case ROLE_ECHO:
        rc = peer->echo(o);
        break;
    }
    fflush(NULL);
    _exit(rc == 0 ? 0 : 1);
}

static const char bench_usage[] =
    "usage: %s --addr HOST:PORT [--workload queue|rtt] [--label L] [--variant one|batch]\n"
    "       [-n N] [--warmup N] [--size BYTES] [--producers P] [--consumers C]\n"
    "       [--conc K] [--batch B] [--cap CAP] [--name NAME] [--timeout S] [--latfile F]\n";

static int bench_parse(int argc, char **argv, struct bench_opts *o)
{
    static const struct option lo[] = {
        {"workload", required_argument, NULL, 'w'}, {"variant", required_argument, NULL, 'v'},
        {"label", required_argument, NULL, 'l'},    {"addr", required_argument, NULL, 'a'},
        {"name", required_argument, NULL, 'N'},     {"warmup", required_argument, NULL, 'W'},
        {"size", required_argument, NULL, 's'},     {"producers", required_argument, NULL, 'p'},
        {"consumers", required_argument, NULL, 'c'}, {"conc", required_argument, NULL, 'k'},
        {"batch", required_argument, NULL, 'b'},    {"cap", required_argument, NULL, 'C'},
        {"timeout", required_argument, NULL, 't'},  {"latfile", required_argument, NULL, 'L'},
        {NULL, 0, NULL, 0}};
    int ch;

    *o = (struct bench_opts){.workload = "queue", .variant = "one", .name = "bench",
                             .n = 100000, .warmup = 1000, .size = 64, .producers = 1,
                             .consumers = 1, .conc = 1, .batch = 100, .cap = 1024,
                             .timeout_s = 120};
    while ((ch = getopt_long(argc, argv, "n:", lo, NULL)) != -1) {
        switch (ch) {
        case 'w': o->workload = optarg; break;
        case 'v': o->variant = optarg; break;
        case 'l': o->label = optarg; break;
        case 'a': o->addr = optarg; break;
        case 'N': o->name = optarg; break;
        case 'n': o->n = atol(optarg); break;
        case 'W': o->warmup = atol(optarg); break;
        case 's': o->size = (size_t)atol(optarg); break;
        case 'p': o->producers = atoi(optarg); break;
        case 'c': o->consumers = atoi(optarg); break;
        case 'k': o->conc = atoi(optarg); break;
        case 'b': o->batch = atoi(optarg); break;
        case 'C': o->cap = atol(optarg); break;
        case 't': o->timeout_s = atoi(optarg); break;
        case 'L': o->latfile = optarg; break;
        default: return -1;
        }
    }
    if (o->label == NULL)
        o->label = o->workload;
    if (o->addr == NULL || o->n <= 0 || o->warmup < 0 || o->size < BENCH_HDR ||
        o->producers < 1 || o->consumers < 1 || o->producers + o->consumers > BENCH_MAX_PROCS ||
        o->conc < 1 || o->batch < 1 || o->timeout_s < 1 ||
        (strcmp(o->workload, "queue") != 0 && strcmp(o->workload, "rtt") != 0))
        return -1;
    return 0;
}

/* Wait for nready bytes on fd, or until deadline_ns; 0 or -1. */
static int bench_wait_ready(int fd, int nready, uint64_t deadline_ns)
{
    char buf[BENCH_MAX_PROCS];
    int got = 0;

    while (got < nready) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        uint64_t now = bench_ns();
        ssize_t r;

        if (now >= deadline_ns)
            return -1;
        if (poll(&p, 1, (int)((deadline_ns - now) / 1000000 + 1)) <= 0)
            continue;
        r = read(fd, buf, sizeof buf);
        if (r <= 0)
            return -1;
        got += (int)r;
    }
    return 0;
}

/* Reap every child by deadline_ns, killing the rest then; 0 if all exited 0. */
static int bench_reap(pid_t *pids, int npids, uint64_t deadline_ns)
{
    int left = npids, bad = 0;

    while (left > 0) {
        int st;
        pid_t pid = waitpid(-1, &st, WNOHANG);

        if (pid > 0) {
            for (int i = 0; i < npids; i++) {
                if (pids[i] == pid) {
                    pids[i] = 0;
                    left--;
                    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                        bad = 1;
                }
            }
            continue;
        }
        if (pid < 0 && errno != EINTR)
            break;
        if (bench_ns() >= deadline_ns) {
            fprintf(stderr, "bench: timed out, killing %d process(es)\n", left);
            for (int i = 0; i < npids; i++)
                if (pids[i] > 0)
                    kill(pids[i], SIGKILL);
            while (waitpid(-1, NULL, 0) > 0)
                ;
            return -1;
        }
        usleep(2000);
    }
    return bad ? -1 : 0;
}

int bench_main(int argc, char **argv, const struct bench_peer *peer)
{
    static struct bench_opts o;
    int ready[2], go[2], rtt, nprocs = 0, ok;
    pid_t pids[BENCH_MAX_PROCS];
    uint64_t deadline, count = 0, sum = 0, xor = 0, want_sum = 0, want_xor = 0, t_end = 0;

    if (bench_parse(argc, argv, &o) < 0) {
        fprintf(stderr, bench_usage, argv[0]);
        return 2;
    }
    bench_o = &o;
    rtt = strcmp(o.workload, "rtt") == 0;
    bench_board = mmap(NULL, sizeof *bench_board, PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (bench_board == MAP_FAILED || pipe(ready) < 0 || pipe(go) < 0) {
        perror("bench: setup");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    bench_ready_fd = ready[1];
    bench_go_fd = go[0];
    deadline = bench_ns() + (uint64_t)o.timeout_s * 1000000000u;
    fflush(NULL);

    if (rtt) {
        pids[nprocs++] = bench_spawn(peer, &o, ROLE_ECHO, 1, 0, 0, go[1]);
        pids[nprocs++] = bench_spawn(peer, &o, ROLE_PING, 0, 0, 0, go[1]);
    } else {
        uint64_t first = 0;

        for (int c = 0; c < o.consumers; c++)
            pids[nprocs++] = bench_spawn(peer, &o, ROLE_CONSUME, o.producers + c, 0, 0, go[1]);
        for (int p = 0; p < o.producers; p++) {
            uint64_t share = (uint64_t)o.n / (uint64_t)o.producers +
                             ((uint64_t)p < (uint64_t)o.n % (uint64_t)o.producers);

            pids[nprocs++] = bench_spawn(peer, &o, ROLE_PRODUCE, p, first, share, go[1]);
            first += share;
        }
    }
    for (int i = 0; i < nprocs; i++) {
        if (pids[i] < 0) {
            perror("bench: fork");
            return 1;
        }
    }
    close(ready[1]);
    close(go[0]);
    if (bench_wait_ready(ready[0], nprocs, deadline) < 0) {
        fprintf(stderr, "bench: not every process got ready\n");
        close(go[1]);
        bench_reap(pids, nprocs, bench_ns());
        return 1;
    }
    bench_board->t0 = bench_ns();
    close(go[1]);
    ok = bench_reap(pids, nprocs, deadline) == 0;

    if (rtt) {
        ok = ok && bench_board->rtt_count == o.n;
        printf("workload=%s variant=%s peer=%s n=%ld size=%zu p50_us=%.2f p99_us=%.2f "
               "p999_us=%.2f mean_us=%.2f max_us=%.2f ok=%d\n",
               o.label, o.variant, peer->name, o.n, o.size, bench_board->p50, bench_board->p99,
               bench_board->p999, bench_board->mean, bench_board->max, ok);
        return ok ? 0 : 1;
    }
    for (int i = 0; i < BENCH_MAX_PROCS; i++) {
        struct bench_slot *s = &bench_board->slot[i];

        count += s->count;
        sum += s->sum;
        xor ^= s->xor;
        if (s->last_ns > t_end)
            t_end = s->last_ns;
    }
    for (uint64_t q = 0; q < (uint64_t)o.n; q++) {
        want_sum += q;
        want_xor ^= q;
    }
    if (count != (uint64_t)o.n || sum != want_sum || xor != want_xor) {
        fprintf(stderr, "bench: delivery check failed: count %" PRIu64 "/%ld sum %s xor %s\n",
                count, o.n, sum == want_sum ? "ok" : "wrong", xor == want_xor ? "ok" : "wrong");
        ok = 0;
    }
    {
        double secs = t_end > bench_board->t0 ? (double)(t_end - bench_board->t0) / 1e9 : 0;
        double rate = secs > 0 ? (double)count / secs : 0;

        printf("workload=%s variant=%s peer=%s n=%ld size=%zu producers=%d consumers=%d "
               "conc=%d batch=%d secs=%.4f msgs_per_s=%.0f mb_per_s=%.1f ok=%d\n",
               o.label, o.variant, peer->name, o.n, o.size, o.producers, o.consumers, o.conc,
               o.batch, secs, rate, rate * (double)o.size / 1e6, ok);
    }
    return ok ? 0 : 1;
}

int bench_dial(const char *addr)
{
    char host[256];
    int port, fd, one = 1;
    struct sockaddr_in sa = {.sin_family = AF_INET};

    if (bench_split_addr(addr, host, sizeof host, &port) < 0 ||
        inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "bench: bad address %s (want IPv4 host:port)\n", addr);
        return -1;
    }
    sa.sin_port = htons((uint16_t)port);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        fprintf(stderr, "bench: connect %s: %s\n", addr, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

int bench_write_all(int fd, const void *p, size_t n)
{
    const unsigned char *b = p;

    while (n > 0) {
        ssize_t w = write(fd, b, n);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            perror("bench: write");
            return -1;
        }
        b += w;
        n -= (size_t)w;
    }
    return 0;
}
