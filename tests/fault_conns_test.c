/*
 * fault_conns_test.c: 10,000 client connections to one chand at once.
 * Worker processes (libchanclient, one chan_client_t per connection) each
 * connect their share, open a channel per connection and leave a message
 * in it; with all 10,000 connected the test reads chand's memory from
 * /proc (VmRSS, VmHWM) and holds it to a bound per connection; then every
 * connection takes its message back and leaves. The time per operation of
 * each phase is printed: connect (with HELLO), open, send, recv.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "chan.h"
#include "testclient.h"

#ifndef NCONNS
#define NCONNS 10000
#endif
#define NWORKERS 4
#define PER_WORKER (NCONNS / NWORKERS)
#define MSG_BYTES 64
#define FD_SLACK 200          /* descriptors beyond the connections: logs, pipes, libraries */
#define PHASE_MS 90000        /* bound on each phase of a worker */
/*
 * The bound: chand's resident memory with every connection holding a
 * channel and a buffered message may grow by at most this much per
 * connection over its idle size. ASan's redzones and quarantine take
 * several times that, so builds with the sanitizers get a looser bound.
 */
#ifdef CHAN_SANITIZERS
#define KIB_PER_CONN 64
#else
#define KIB_PER_CONN 16
#endif

enum { PH_CONNECT, PH_OPEN, PH_SEND, PH_RECV, PH_MAX };
static const char *const phase_name[PH_MAX] = {"connect", "open", "send", "recv"};

/* What a worker reports through its pipe, twice: after PH_SEND, and at the end. */
struct report {
    int worker;
    int failed_phase;        /* -1, or the phase that failed */
    int err;                 /* its errno */
    int64_t us[PH_MAX];      /* wall time of each phase done so far, microseconds */
};

static struct tc_server srv;
static char addr[64];

static int64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void worker_send_report(int fd, const struct report *r)
{
    if (write(fd, r, sizeof *r) != (ssize_t)sizeof *r)
        _exit(3);
}

/* A worker: PER_WORKER connections, each with its own channel and message. */
static void worker_main(int w, int rep_fd, int go_fd)
{
    static chan_client_t *cl[PER_WORKER];
    static chan_t *ch[PER_WORKER];
    struct chan_opts o = {.client_name = "fault_conns"};
    struct report r = {.worker = w, .failed_phase = -1};
    char name[64], msg[MSG_BYTES], go;
    int64_t t0;

    memset(msg, 'm', sizeof msg);
    t0 = now_us();
    for (int i = 0; i < PER_WORKER; i++) {
        cl[i] = chan_connect(addr, &o);
        if (cl[i] == NULL)
            goto fail_connect;
    }
    r.us[PH_CONNECT] = now_us() - t0;
    t0 = now_us();
    for (int i = 0; i < PER_WORKER; i++) {
        snprintf(name, sizeof name, "conns.%d.%d", w, i);
        ch[i] = chan_open(cl[i], name, 4);
        if (ch[i] == NULL) {
            r.failed_phase = PH_OPEN;
            goto fail;
        }
    }
    r.us[PH_OPEN] = now_us() - t0;
    t0 = now_us();
    for (int i = 0; i < PER_WORKER; i++) {
        snprintf(msg, sizeof msg, "%d.%d", w, i);
        if (chan_send(ch[i], msg, sizeof msg, chan_now() + PHASE_MS) < 0) {
            r.failed_phase = PH_SEND;
            goto fail;
        }
    }
    r.us[PH_SEND] = now_us() - t0;
    worker_send_report(rep_fd, &r);

    /* All connected: hold still while the broker is measured. */
    if (read(go_fd, &go, 1) != 1)
        _exit(3);
    t0 = now_us();
    for (int i = 0; i < PER_WORKER; i++) {
        chan_msg_t m;
        char want[MSG_BYTES];

        memset(want, 'm', sizeof want);
        snprintf(want, sizeof want, "%d.%d", w, i);
        if (chan_recv(ch[i], &m, chan_now() + PHASE_MS) != 1) {
            r.failed_phase = PH_RECV;
            goto fail;
        }
        if (m.len != sizeof want || memcmp(m.data, want, sizeof want) != 0) {
            errno = EBADMSG;
            r.failed_phase = PH_RECV;
            goto fail;
        }
        chan_msg_free(&m);
    }
    r.us[PH_RECV] = now_us() - t0;
    for (int i = 0; i < PER_WORKER; i++) {
        chan_free(ch[i]);
        chan_disconnect(cl[i]);
    }
    worker_send_report(rep_fd, &r);
    _exit(0);

fail_connect:
    r.failed_phase = PH_CONNECT;
fail:
    r.err = errno;
    worker_send_report(rep_fd, &r);
    _exit(1);
}

static int fcntl_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);

    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* VmRSS and VmHWM of pid, KiB. */
static void proc_mem(pid_t pid, long *rss, long *hwm)
{
    char path[64], line[256];
    FILE *f;

    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    f = fopen(path, "r");
    ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
    *rss = *hwm = -1;
    while (fgets(line, sizeof line, f) != NULL) {
        sscanf(line, "VmRSS: %ld", rss);
        sscanf(line, "VmHWM: %ld", hwm);
    }
    fclose(f);
    ck_assert_int_gt(*rss, 0);
    ck_assert_int_gt(*hwm, 0);
}

/* Read one report from each worker (bounded), summing the phase times. */
static void collect(const int *rep, struct report *sum, const char *when)
{
    memset(sum, 0, sizeof *sum);
    for (int w = 0; w < NWORKERS; w++) {
        struct report r;
        int64_t deadline = tc_now_ms() + PHASE_MS;
        ssize_t n;

        for (;;) {
            n = read(rep[w], &r, sizeof r);
            if (n >= 0 || errno != EAGAIN)
                break;
            ck_assert_msg(tc_now_ms() < deadline, "worker %d: no report %s within %d ms", w,
                          when, PHASE_MS);
            usleep(2000);
        }
        ck_assert_msg(n == (ssize_t)sizeof r, "worker %d died %s", w, when);
        ck_assert_msg(r.failed_phase < 0, "worker %d: %s failed: %s", w,
                      phase_name[r.failed_phase], strerror(r.err));
        for (int p = 0; p < PH_MAX; p++)
            if (r.us[p] > sum->us[p])
                sum->us[p] = r.us[p];   /* the slowest worker's wall time */
    }
}

static long count_fds(pid_t pid)
{
    char cmd[96];
    long n = -1;
    FILE *p;

    snprintf(cmd, sizeof cmd, "ls /proc/%d/fd | wc -l", (int)pid);
    p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    if (fscanf(p, "%ld", &n) != 1)
        n = -1;
    pclose(p);
    return n;
}

START_TEST(test_ten_thousand_connections_each_with_a_channel_stay_within_the_memory_bound)
{
    struct rlimit rl;
    int rep[NWORKERS], go[NWORKERS];
    pid_t pids[NWORKERS];
    struct report ready, done;
    long rss0, hwm0, rss1, hwm1, rss2, hwm2, fds, bound;
    char maxc[16];

    /* Each worker needs its share; chand raises its own limit to the hard one. */
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    ck_assert_msg(rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= NCONNS + FD_SLACK,
                  "the hard descriptor limit %ld is below the %d connections this test makes "
                  "(raise it: ulimit -Hn)", (long)rl.rlim_max, NCONNS + FD_SLACK);
    ck_assert_int_ge(tc_raise_nofile((long)(rl.rlim_max == RLIM_INFINITY ? 1048576 : rl.rlim_max)),
                     PER_WORKER + FD_SLACK);

    snprintf(maxc, sizeof maxc, "%d", NCONNS + FD_SLACK);
    tc_server_start(&srv, "--max-conns", maxc, "--log-level", "warn", NULL);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", srv.port);
    proc_mem(srv.pid, &rss0, &hwm0);

    for (int w = 0; w < NWORKERS; w++) {
        int rp[2], gp[2];
        ck_assert_int_eq(pipe(rp), 0);
        ck_assert_int_eq(pipe(gp), 0);
        pids[w] = fork();
        ck_assert_int_ge(pids[w], 0);
        if (pids[w] == 0) {
            close(rp[0]);
            close(gp[1]);
            worker_main(w, rp[1], gp[0]);
        }
        close(rp[1]);
        close(gp[0]);
        rep[w] = rp[0];
        go[w] = gp[1];
        ck_assert_int_eq(fcntl_nonblock(rep[w]), 0);
    }

    collect(rep, &ready, "after connecting");
    fds = count_fds(srv.pid);
    proc_mem(srv.pid, &rss1, &hwm1);
    for (int w = 0; w < NWORKERS; w++)
        ck_assert_int_eq(write(go[w], "g", 1), 1);
    collect(rep, &done, "at the end");
    for (int w = 0; w < NWORKERS; w++) {
        int status;
        ck_assert_int_eq(waitpid(pids[w], &status, 0), pids[w]);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "worker %d: status 0x%x",
                      w, status);
        close(rep[w]);
        close(go[w]);
    }
    proc_mem(srv.pid, &rss2, &hwm2);

    printf("fault_conns: %d connections from %d processes, a channel and a %d-byte message "
           "each; chand holds %ld descriptors\n", NCONNS, NWORKERS, MSG_BYTES, fds);
    printf("fault_conns: chand VmRSS idle %ld KiB, all connected %ld KiB (%.1f KiB per "
           "connection), after they left %ld KiB; VmHWM %ld KiB\n", rss0, rss1,
           (double)(rss1 - rss0) / NCONNS, rss2, hwm2);
    for (int p = 0; p < PH_MAX; p++) {
        const struct report *r = p == PH_RECV ? &done : &ready;
        printf("fault_conns: %-7s %8.1f us per operation (%d per process in sequence, %d "
               "processes at once: %.0f ms, %.0f ops/s)\n",
               phase_name[p], (double)r->us[p] / PER_WORKER, PER_WORKER, NWORKERS,
               (double)r->us[p] / 1000, (double)NCONNS * 1e6 / (double)(r->us[p] ? r->us[p] : 1));
    }
    ck_assert_msg(fds >= NCONNS, "chand had %ld descriptors open with %d clients connected",
                  fds, NCONNS);
    bound = rss0 + (long)KIB_PER_CONN * NCONNS;
    ck_assert_msg(rss1 <= bound, "chand's VmRSS %ld KiB with %d connections is over the bound "
                  "of %ld KiB (idle %ld + %d KiB per connection)", rss1, NCONNS, bound, rss0,
                  KIB_PER_CONN);
    tc_server_stop_ok(&srv);
}
END_TEST

static Suite *fault_conns_suite(void)
{
    Suite *s = suite_create("fault_conns");
    TCase *tc = tcase_create("conns");

    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, test_ten_thousand_connections_each_with_a_channel_stay_within_the_memory_bound);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(fault_conns_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
