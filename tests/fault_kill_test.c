/*
 * fault_kill_test.c: the reliable job queue under kill -9. Producer
 * processes send numbered jobs into a real chand; consumer processes take
 * them with leased receives, work, and ack; the test kills a random
 * consumer with SIGKILL again and again while that goes on, starting a new
 * one each time. At the end every job must have been acked exactly once,
 * with its bytes intact. A few consumers are frozen with SIGSTOP instead,
 * past their lease, and thawed: their jobs must go to others meanwhile and
 * their late acks must be refused.
 *
 * Consumers write what they do to a file of their own, one fixed-size
 * record per write(2): P (holding delivery d of job i) before the ack, A
 * once chan_ack returned 0 (the broker applied it), F when the ack was
 * refused. A kill between P and A leaves a P "in doubt": the ack may or may
 * not have reached the broker. The accounting that follows from the
 * contract (a message is redelivered, with its delivery count raised, only
 * when its holder never acked it):
 *   - every job has exactly one final delivery: the one with an A, or else
 *     one in doubt (the broker got that ack; its holder died before writing
 *     A). No job has two A records, no job is missing.
 *   - no delivery of a job is recorded after its final one, and no delivery
 *     number of a job is handed to two consumers.
 *   - every other delivery of a job was held by a killed consumer (in doubt)
 *     or refused (F); live consumers leave nothing in doubt.
 *   - in-doubt finals are at most one per coroutine per kill; the bytes of
 *     every final delivery hash to what the producers sent (count + checksum).
 *   - the broker ends with the channel closed, empty and nothing unacked.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "chan.h"
#include "testclient.h"

#define NJOBS 20000         /* jobs in all */
#define NPRODUCERS 2        /* producer processes; the second sends in batches */
#define NCONSUMERS 4        /* consumer processes alive at any time */
#define NCOROS 2            /* leased receivers per consumer: each holds one job at a time */
#define NKILLS 100          /* SIGKILLs */
#define CAP 64              /* the jobs channel's capacity */
#define LEASE_MS 2000       /* a job's lease */
#define WORK_MS 1           /* "work" per job */
#define KILL_GAP_MIN_MS 10  /* pause between kills: uniform in [MIN, MAX] */
#define KILL_GAP_MAX_MS 50
#define PAYLOAD 32          /* job bytes: the id, then bytes derived from it */
#define BATCH 16            /* send_many batch of the second producer */
#define PHASE_MS 60000      /* bound on each phase: producing, draining */
#define MIN_REDELIVERED 20  /* kills that hit a held job: far more are expected */
#define NFREEZES 3          /* consumers stopped past their lease, then continued */
#define FREEZE_EVERY (NKILLS / (NFREEZES + 1))  /* a freeze every this many kills */
#define FREEZE_MS (LEASE_MS + 500)

enum { REC_HOLD = 'P', REC_ACKED = 'A', REC_REFUSED = 'F' };

/* One consumer record, written with one write(2). */
struct rec {
    uint32_t kind;         /* REC_* */
    uint32_t deliveries;   /* the message's delivery count */
    uint64_t id;           /* job number, 0..NJOBS-1 */
    uint64_t hash;         /* FNV-1a of the bytes received */
};

/* One consumer process, past or present. */
struct consumer {
    pid_t pid;          /* 0 once reaped */
    int killed;         /* we SIGKILLed it */
    int frozen;         /* SIGSTOPped, until thaw_at */
    int64_t thaw_at;    /* tc_now_ms() to SIGCONT it */
    int status;         /* wait status once reaped */
    char path[128];     /* its record file */
};

static struct tc_server srv;
static char addr[64];
static char dir[96];
static struct consumer cons[NCONSUMERS + NKILLS];
static int ncons;

static uint64_t fnv1a(const uint8_t *p, size_t n)
{
    uint64_t h = 1469598103934665603ULL;

    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

/* Job id's bytes: the id (little endian), then a pattern that depends on it. */
static void job_bytes(uint64_t id, uint8_t *p)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(id >> (8 * i));
    for (int i = 8; i < PAYLOAD; i++)
        p[i] = (uint8_t)(id * 131 + (uint64_t)i * 7);
}

static uint64_t job_hash(uint64_t id)
{
    uint8_t p[PAYLOAD];

    job_bytes(id, p);
    return fnv1a(p, sizeof p);
}

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* ---- child processes ------------------------------------------------- */

static chan_t *child_open(const char *who, chan_client_t **cl)
{
    struct chan_opts o = {.client_name = who};
    chan_t *ch;

    *cl = chan_connect(addr, &o);
    if (*cl == NULL) {
        fprintf(stderr, "%s: connect %s: %s\n", who, addr, strerror(errno));
        _exit(2);
    }
    ch = chan_open(*cl, "jobs", CAP);
    if (ch == NULL) {
        fprintf(stderr, "%s: open: %s\n", who, strerror(errno));
        _exit(2);
    }
    return ch;
}

static void producer_main(int index)
{
    uint8_t bytes[BATCH][PAYLOAD];
    struct iovec iov[BATCH];
    chan_client_t *cl;
    chan_t *ch = child_open("producer", &cl);
    uint64_t lo = (uint64_t)index * NJOBS / NPRODUCERS;
    uint64_t hi = (uint64_t)(index + 1) * NJOBS / NPRODUCERS;

    for (uint64_t id = lo; id < hi;) {
        int n = index % 2 ? BATCH : 1, sent;
        if ((uint64_t)n > hi - id)
            n = (int)(hi - id);
        for (int i = 0; i < n; i++) {
            job_bytes(id + (uint64_t)i, bytes[i]);
            iov[i] = (struct iovec){.iov_base = bytes[i], .iov_len = PAYLOAD};
        }
        sent = n == 1 ? (chan_send(ch, bytes[0], PAYLOAD, chan_now() + PHASE_MS) == 0 ? 1 : -1)
                      : chan_send_many(ch, iov, n, chan_now() + PHASE_MS);
        if (sent < 1) {
            fprintf(stderr, "producer %d: send of job %" PRIu64 ": %s\n", index, id,
                    strerror(errno));
            _exit(1);
        }
        id += (uint64_t)sent;
    }
    chan_free(ch);
    chan_disconnect(cl);
    _exit(0);
}

struct coro_arg {
    chan_t *ch;
    int fd;       /* the record file */
    int failed;   /* 1 on anything but the expected */
};

static void consumer_record(struct coro_arg *a, uint32_t kind, const chan_msg_t *m, uint64_t id)
{
    struct rec r = {.kind = kind, .deliveries = m->deliveries, .id = id,
                    .hash = fnv1a(m->data, m->len)};

    if (write(a->fd, &r, sizeof r) != (ssize_t)sizeof r) {
        fprintf(stderr, "consumer: record: %s\n", strerror(errno));
        a->failed = 1;
    }
}

static void consumer_coro(void *arg)
{
    struct coro_arg *a = arg;

    for (;;) {
        chan_msg_t m;
        uint64_t id = 0;
        int rc = chan_recv_lease(a->ch, &m, LEASE_MS, chan_now() + PHASE_MS);

        if (rc == 0)
            return;   /* closed and drained */
        if (rc < 0) {
            fprintf(stderr, "consumer %d: recv: %s\n", (int)getpid(), strerror(errno));
            a->failed = 1;
            return;
        }
        if (m.len == PAYLOAD)
            for (int i = 0; i < 8; i++)
                id |= (uint64_t)((const uint8_t *)m.data)[i] << (8 * i);
        if (m.len != PAYLOAD || id >= NJOBS || fnv1a(m.data, m.len) != job_hash(id)) {
            fprintf(stderr, "consumer %d: a job of %zu bytes that no producer sent\n",
                    (int)getpid(), m.len);
            a->failed = 1;
        }
        consumer_record(a, REC_HOLD, &m, id);
        chan_sleep(chan_now() + WORK_MS);
        if (chan_ack(&m) == 0) {
            consumer_record(a, REC_ACKED, &m, id);
        } else {
            fprintf(stderr, "consumer %d: ack of job %" PRIu64 ": %s\n", (int)getpid(), id,
                    strerror(errno));
            consumer_record(a, REC_REFUSED, &m, id);
        }
        chan_msg_free(&m);
    }
}

static void consumer_main(const char *path)
{
    struct coro_arg a[NCOROS];
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    chan_client_t *cl;
    chan_t *ch;
    int cr[NCOROS], failed = 0;

    if (fd < 0)
        _exit(2);
    ch = child_open("consumer", &cl);
    for (int i = 0; i < NCOROS; i++) {
        a[i] = (struct coro_arg){.ch = ch, .fd = fd};
        cr[i] = chan_go(consumer_coro, &a[i]);
        if (cr[i] < 0)
            _exit(2);
    }
    for (int i = 0; i < NCOROS; i++) {
        chan_join(cr[i], -1);
        failed |= a[i].failed;
    }
    chan_free(ch);
    chan_disconnect(cl);
    _exit(failed ? 1 : 0);
}

static pid_t spawn_producer(int index)
{
    pid_t pid = fork();

    ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0)
        producer_main(index);
    return pid;
}

static void spawn_consumer(void)
{
    struct consumer *c = &cons[ncons];
    pid_t pid;

    ck_assert_int_lt(ncons, NCONSUMERS + NKILLS);
    snprintf(c->path, sizeof c->path, "%s/consumer.%d", dir, ncons);
    pid = fork();
    ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0)
        consumer_main(c->path);
    c->pid = pid;
    ncons++;
}

/* Wait for pid until deadline; its wait status, or -1 if it is still running. */
static int reap_by(pid_t pid, int64_t deadline)
{
    int status;

    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return status;
        ck_assert_msg(r == 0, "waitpid %d: %s", (int)pid, strerror(errno));
        if (tc_now_ms() >= deadline)
            return -1;
        pause_ms(5);
    }
}

/* ---- the accounting -------------------------------------------------- */

/* What the records say about one job. */
struct job {
    uint32_t acked;        /* A records */
    uint32_t final_d;      /* delivery of the A record, or of the in-doubt final */
    uint32_t max_d;        /* highest delivery recorded */
    uint32_t holds;        /* P records */
    uint32_t doubt;        /* P records in doubt (killed holder, no A/F after) */
    uint32_t doubt_max_d;  /* highest in-doubt delivery */
    uint64_t hash;         /* bytes hash of the final delivery */
};

struct tally {
    long holds, acked, refused, doubt, doubt_final, redelivered;
};

/* Records of one consumer file; *n of them, malloc'd. */
static struct rec *read_records(const struct consumer *c, size_t *n)
{
    struct stat st;
    struct rec *r;
    int fd = open(c->path, O_RDONLY | O_CLOEXEC);
    ssize_t got;

    *n = 0;
    if (fd < 0) {
        /* killed before it opened the file */
        ck_assert_msg(c->killed, "%s: %s", c->path, strerror(errno));
        return NULL;
    }
    ck_assert_int_eq(fstat(fd, &st), 0);
    /* A kill lands between writes, never inside one record. */
    ck_assert_msg(st.st_size % (off_t)sizeof *r == 0, "%s: torn record", c->path);
    r = malloc((size_t)st.st_size + 1);
    ck_assert_ptr_nonnull(r);
    got = read(fd, r, (size_t)st.st_size);
    ck_assert_int_eq(got, st.st_size);
    close(fd);
    *n = (size_t)st.st_size / sizeof *r;
    return r;
}

static void account_file(const struct consumer *c, struct job *jobs, uint8_t *seen,
                         struct tally *t)
{
    size_t n;
    struct rec *r = read_records(c, &n);

    for (size_t i = 0; i < n; i++) {
        struct job *j;
        int settled = 0;

        ck_assert_msg(r[i].id < NJOBS, "%s: job %" PRIu64 " out of range", c->path, r[i].id);
        j = &jobs[r[i].id];
        if (r[i].deliveries > j->max_d)
            j->max_d = r[i].deliveries;
        switch (r[i].kind) {
        case REC_HOLD:
            t->holds++;
            j->holds++;
            ck_assert_msg(r[i].hash == job_hash(r[i].id), "job %" PRIu64 ": bytes changed",
                          r[i].id);
            /* One delivery number of a job goes to one consumer only. */
            ck_assert_msg(r[i].deliveries >= 1 && r[i].deliveries < 256,
                          "job %" PRIu64 ": delivery %" PRIu32, r[i].id, r[i].deliveries);
            ck_assert_msg(!(seen[r[i].id * 32 + r[i].deliveries / 8] & (1u << (r[i].deliveries % 8))),
                          "job %" PRIu64 ": delivery %" PRIu32 " handed out twice", r[i].id,
                          r[i].deliveries);
            seen[r[i].id * 32 + r[i].deliveries / 8] |= (uint8_t)(1u << (r[i].deliveries % 8));
            /* Settled later in this file (same coroutine: P, then A or F of the same delivery)? */
            for (size_t k = i + 1; k < n && !settled; k++)
                settled = r[k].kind != REC_HOLD && r[k].id == r[i].id &&
                          r[k].deliveries == r[i].deliveries;
            if (!settled) {
                ck_assert_msg(c->killed, "%s (exit status 0x%x): job %" PRIu64
                              " delivery %" PRIu32 " held but never settled",
                              c->path, c->status, r[i].id, r[i].deliveries);
                t->doubt++;
                j->doubt++;
                if (r[i].deliveries > j->doubt_max_d)
                    j->doubt_max_d = r[i].deliveries;
            }
            break;
        case REC_ACKED:
            t->acked++;
            ck_assert_msg(++j->acked == 1, "job %" PRIu64 " acked twice (deliveries %" PRIu32
                          " and %" PRIu32 ")", r[i].id, j->final_d, r[i].deliveries);
            j->final_d = r[i].deliveries;
            j->hash = r[i].hash;
            break;
        case REC_REFUSED:
            t->refused++;
            break;
        default:
            ck_abort_msg("%s: record kind %" PRIu32, c->path, r[i].kind);
        }
    }
    free(r);
}

static void account_all(int kills_while_producing)
{
    struct job *jobs = calloc(NJOBS, sizeof *jobs);
    uint8_t *seen = calloc(NJOBS, 32);   /* bit per (job, delivery < 256) */
    struct tally t = {0};
    uint64_t sum = 0, want = 0;

    ck_assert_ptr_nonnull(jobs);
    ck_assert_ptr_nonnull(seen);
    for (int i = 0; i < ncons; i++)
        account_file(&cons[i], jobs, seen, &t);
    for (uint64_t id = 0; id < NJOBS; id++) {
        struct job *j = &jobs[id];

        want += job_hash(id);
        if (j->acked == 0) {
            /* The broker took an ack we have no A for: its sender died right after. */
            ck_assert_msg(j->doubt > 0, "job %" PRIu64 " lost: %" PRIu32 " deliveries recorded, "
                          "none acked or in doubt", id, j->holds);
            j->final_d = j->doubt_max_d;
            j->hash = job_hash(id);
            t.doubt_final++;
        }
        ck_assert_msg(j->max_d == j->final_d, "job %" PRIu64 ": delivery %" PRIu32
                      " came after the final one %" PRIu32, id, j->max_d, j->final_d);
        if (j->final_d > 1)
            t.redelivered++;
        sum += j->hash;
    }
    printf("fault_kill: %d jobs, %d kills (%d while producing), %d freezes past the lease, "
           "%d consumer processes: "
           "%ld deliveries held, %ld acked, %ld acks refused, %ld in doubt (%ld of them "
           "final), %ld jobs redelivered; checksum %016" PRIx64 "\n",
           NJOBS, NKILLS, kills_while_producing, NFREEZES, ncons, t.holds, t.acked, t.refused, t.doubt,
           t.doubt_final, t.redelivered, sum);
    ck_assert_uint_eq(t.acked + t.doubt_final, NJOBS);
    ck_assert_msg(sum == want, "checksum %016" PRIx64 ", want %016" PRIx64, sum, want);
    ck_assert_int_le(t.doubt_final, (long)NKILLS * NCOROS);
    ck_assert_int_le(t.doubt, (long)NKILLS * NCOROS);
    /* A frozen consumer held a job past its lease: the job went on, the late ack was refused. */
    ck_assert_msg(t.refused >= 1, "no late ack was refused after %d freezes past the lease",
                  NFREEZES);
    ck_assert_msg(t.redelivered >= MIN_REDELIVERED,
                  "only %ld jobs redelivered: the kills missed the consumers' held jobs",
                  t.redelivered);
    free(seen);
    free(jobs);
}

/* ---- the test -------------------------------------------------------- */

/* A random live consumer that is not frozen. */
static int pick_consumer(void)
{
    int alive = 0, slot, n = 0;

    for (int i = 0; i < ncons; i++)
        alive += cons[i].pid > 0 && !cons[i].frozen;
    ck_assert_int_gt(alive, 0);
    slot = rand() % alive;
    for (int i = 0; i < ncons; i++)
        if (cons[i].pid > 0 && !cons[i].frozen && n++ == slot)
            return i;
    return -1;
}

static void thaw(int64_t now)
{
    for (int i = 0; i < ncons; i++) {
        if (cons[i].frozen && now >= cons[i].thaw_at) {
            ck_assert_int_eq(kill(cons[i].pid, SIGCONT), 0);
            cons[i].frozen = 0;
        }
    }
}

static void setup(void)
{
    const char *tmp = getenv("TMPDIR");

    tc_server_start(&srv, "--log-level", "warn", NULL);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", srv.port);
    snprintf(dir, sizeof dir, "%s/fault_kill.XXXXXX", tmp != NULL && *tmp ? tmp : "/tmp");
    ck_assert_msg(mkdtemp(dir) != NULL, "mkdtemp: %s", strerror(errno));
}

static void teardown(void)
{
    for (int i = 0; i < ncons; i++) {
        if (cons[i].pid > 0) {
            kill(cons[i].pid, SIGKILL);
            waitpid(cons[i].pid, NULL, 0);
        }
        unlink(cons[i].path);
    }
    rmdir(dir);
    tc_server_stop(&srv, SIGKILL, 2000);
}

START_TEST(test_every_job_is_acked_once_across_a_hundred_consumer_kills)
{
    pid_t prod[NPRODUCERS];
    int running = NPRODUCERS, while_producing = 0;
    unsigned seed = (unsigned)time(NULL);
    const char *env = getenv("FAULT_SEED");
    struct tc_conn *obs;
    struct tc_stat st;
    uint64_t handle;
    int64_t deadline;

    if (env != NULL)
        seed = (unsigned)strtoul(env, NULL, 10);
    printf("fault_kill: seed %u (FAULT_SEED=%u repeats the kill schedule)\n", seed, seed);
    srand(seed);
    obs = tc_connect_hello(srv.port);
    TC_ASSERT_STATUS(tc_open(obs, "jobs", CAP, &handle), ST(OK));

    for (int i = 0; i < NCONSUMERS; i++)
        spawn_consumer();
    for (int i = 0; i < NPRODUCERS; i++)
        prod[i] = spawn_producer(i);

    for (int k = 0; k < NKILLS; k++) {
        int victim;

        pause_ms(KILL_GAP_MIN_MS + rand() % (KILL_GAP_MAX_MS - KILL_GAP_MIN_MS + 1));
        for (int i = 0; i < NPRODUCERS; i++) {
            int status;
            if (prod[i] > 0 && waitpid(prod[i], &status, WNOHANG) == prod[i]) {
                ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                              "producer %d: wait status 0x%x", i, status);
                prod[i] = 0;
                running--;
            }
        }
        while_producing += running > 0;
        thaw(tc_now_ms());
        if (k > 0 && k % FREEZE_EVERY == 0 && k / FREEZE_EVERY <= NFREEZES) {
            int f = pick_consumer();
            ck_assert_int_eq(kill(cons[f].pid, SIGSTOP), 0);
            cons[f].frozen = 1;
            cons[f].thaw_at = tc_now_ms() + FREEZE_MS;
        }
        victim = pick_consumer();
        ck_assert_int_ge(victim, 0);
        ck_assert_int_eq(kill(cons[victim].pid, SIGKILL), 0);
        ck_assert_int_eq(waitpid(cons[victim].pid, &cons[victim].status, 0), cons[victim].pid);
        /* It may have finished on its own first (nothing left to do): then it was not killed. */
        cons[victim].killed = WIFSIGNALED(cons[victim].status);
        ck_assert_msg(cons[victim].killed || cons[victim].status == 0,
                      "consumer %d: wait status 0x%x", victim, cons[victim].status);
        cons[victim].pid = 0;
        spawn_consumer();
    }

    /* The last frozen consumers sleep out their leases, then carry on. */
    for (int i = 0; i < ncons; i++)
        if (cons[i].frozen)
            pause_ms(cons[i].thaw_at - tc_now_ms() > 0 ? (long)(cons[i].thaw_at - tc_now_ms()) : 0);
    thaw(tc_now_ms());

    deadline = tc_now_ms() + PHASE_MS;
    for (int i = 0; i < NPRODUCERS; i++) {
        if (prod[i] == 0)
            continue;
        int status = reap_by(prod[i], deadline);
        ck_assert_msg(status != -1, "producer %d still sending after %d ms", i, PHASE_MS);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                      "producer %d: wait status 0x%x", i, status);
    }
    /* Every job is in; closing lets the consumers drain and leave. */
    TC_ASSERT_STATUS(tc_close(obs, handle), ST(OK));
    deadline = tc_now_ms() + PHASE_MS;
    for (int i = 0; i < ncons; i++) {
        if (cons[i].pid <= 0)
            continue;
        cons[i].status = reap_by(cons[i].pid, deadline);
        ck_assert_msg(cons[i].status != -1, "consumer %d still running after %d ms", i,
                      PHASE_MS);
        cons[i].pid = 0;
        ck_assert_msg(cons[i].status == 0, "consumer %d: wait status 0x%x", i, cons[i].status);
    }
    TC_ASSERT_STATUS(tc_stat(obs, "jobs", &st), ST(OK));
    ck_assert_uint_eq(st.len, 0);
    ck_assert_uint_eq(st.unacked, 0);
    ck_assert_int_eq(st.closed, 1);
    tc_conn_free(obs);
    account_all(while_producing);
}
END_TEST

static Suite *fault_kill_suite(void)
{
    Suite *s = suite_create("fault_kill");
    TCase *tc = tcase_create("kill9");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, test_every_job_is_acked_once_across_a_hundred_consumer_kills);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(fault_kill_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
