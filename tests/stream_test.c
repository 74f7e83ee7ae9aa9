/*
 * stream_test.c: proto/stream.c over loopback TCP, driven one libevent
 * loop turn at a time: what each event reports and in which order, how
 * many reads and DRAINED events a transfer costs, and that a callback may
 * close and free the stream (run under ASan to make the last count).
 */
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/event.h>

#include "stream.h"

/* How long a test waits for a state it expects before it fails, ms. */
#define WAIT_MS 5000

/* ---- libevent's live heap, counted through its allocator hooks --------- */

static size_t live_bytes; /* bytes libevent holds now */

/* A header in front of each block remembers its size; 16 bytes keep the alignment. */
#define HDR 16

static void *cnt_malloc(size_t n)
{
    char *p = malloc(n + HDR);

    if (p == NULL)
        return NULL;
    memcpy(p, &n, sizeof n);
    live_bytes += n;
    return p + HDR;
}

static void cnt_free(void *q)
{
    char *p = q;
    size_t n;

    if (p == NULL)
        return;
    memcpy(&n, p - HDR, sizeof n);
    live_bytes -= n;
    free(p - HDR);
}

static void *cnt_realloc(void *q, size_t n)
{
    char *p = q, *r;
    size_t old = 0;

    if (p == NULL)
        return cnt_malloc(n);
    memcpy(&old, p - HDR, sizeof old);
    r = realloc(p - HDR, n + HDR);
    if (r == NULL)
        return NULL;
    memcpy(r, &n, sizeof n);
    live_bytes = live_bytes - old + n;
    return r + HDR;
}

/* ---- the loop ----------------------------------------------------------- */

static struct event_base *base;
static struct event tick; /* bounds a blocking loop turn */

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
}

static void setup(void)
{
    /* Without this a missing MSG_NOSIGNAL could hide behind an inherited SIG_IGN. */
    signal(SIGPIPE, SIG_DFL);
    base = event_base_new();
    ck_assert_ptr_nonnull(base);
    evtimer_assign(&tick, base, tick_cb, NULL);
}

static void teardown(void)
{
    evtimer_del(&tick);
    event_base_free(base);
    base = NULL;
}

static long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One loop turn: runs what is ready, or waits for the first event, at most ms. */
static void turn(int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

    evtimer_add(&tick, &tv);
    ck_assert_int_ge(event_base_loop(base, EVLOOP_ONCE), 0);
    evtimer_del(&tick);
}

/*
 * Turns that never wait: whatever the loop has ready now, n times over.
 * EVLOOP_NONBLOCK alone would go on for as long as something stays ready.
 */
static void spin(int n)
{
    for (int i = 0; i < n; i++)
        ck_assert_int_ge(event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK), 0);
}

#define WAIT_FOR(cond)                                                              \
    do {                                                                            \
        long long until_ = now_ms() + WAIT_MS;                                      \
        while (!(cond)) {                                                           \
            ck_assert_msg(now_ms() < until_, "timed out waiting for %s", #cond);    \
            turn(20);                                                               \
        }                                                                           \
    } while (0)

/* ---- sockets ------------------------------------------------------------ */

/* Socket buffer sizes to set, 0 for the kernel's default. */
struct bufs {
    int our_rcv, our_snd, their_rcv, their_snd;
};

static void set_buf(int fd, int opt, int size)
{
    if (size > 0)
        ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, opt, &size, sizeof size), 0);
}

static int listener(struct sockaddr_in *sa, int rcv, int snd)
{
    socklen_t len = sizeof *sa;
    int l = socket(AF_INET, SOCK_STREAM, 0);

    ck_assert_int_ge(l, 0);
    set_buf(l, SO_RCVBUF, rcv);
    set_buf(l, SO_SNDBUF, snd);
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(l, (struct sockaddr *)sa, sizeof *sa), 0);
    ck_assert_int_eq(listen(l, 8), 0);
    ck_assert_int_eq(getsockname(l, (struct sockaddr *)sa, &len), 0);
    return l;
}

/* A connected loopback pair: *ours for the stream, *theirs (blocking) for the test. */
static void tcp_pair(int *ours, int *theirs, const struct bufs *b)
{
    struct bufs none = {0, 0, 0, 0};
    struct sockaddr_in sa;
    int l, c;

    if (b == NULL)
        b = &none;
    l = listener(&sa, b->our_rcv, b->our_snd);
    c = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(c, 0);
    set_buf(c, SO_RCVBUF, b->their_rcv);
    set_buf(c, SO_SNDBUF, b->their_snd);
    ck_assert_int_eq(connect(c, (struct sockaddr *)&sa, sizeof sa), 0);
    *ours = accept(l, NULL, NULL);
    ck_assert_int_ge(*ours, 0);
    *theirs = c;
    close(l);
}

static void send_all(int fd, const void *p, size_t n)
{
    const char *c = p;

    while (n > 0) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        ck_assert_int_gt(w, 0);
        c += w;
        n -= (size_t)w;
    }
}

/* Bytes the kernel holds for fd's reader. */
static int kernel_bytes(int fd)
{
    int n = -1;

    ck_assert_int_eq(ioctl(fd, FIONREAD, &n), 0);
    return n;
}

/* Wait, outside the loop, until poll says fd is ready for ev. */
static void poll_for(int fd, short ev)
{
    struct pollfd p = {.fd = fd, .events = ev};

    ck_assert_int_eq(poll(&p, 1, WAIT_MS), 1);
    ck_assert_msg(p.revents & ev, "revents 0x%x, wanted 0x%x", p.revents, ev);
}

static unsigned char pattern(size_t i)
{
    return (unsigned char)(i % 251);
}

/* ---- a stream owner that writes everything down ------------------------- */

#define LOG_MAX 64

struct probe {
    struct stream s;
    int count[STREAM_CONNECTED + 1];   /* callbacks per event */
    int log[LOG_MAX];                  /* the events, in order */
    size_t in_len[LOG_MAX];            /* bytes in s->in at each callback */
    int nlog;
    int err_at_error;                  /* s->err at the first STREAM_ERROR */
    int consume;                       /* take s->in into got at each READ */
    int pause_at_read;                 /* reading off at READ number this (1-based) */
    size_t want;                       /* set s->want to this at every READ */
    struct evbuffer *got;              /* what consume took */
};

static void probe_cb(struct stream *s, enum stream_event what, void *arg)
{
    struct probe *p = arg;

    ck_assert_ptr_eq(s, &p->s);
    ck_assert_int_ge(what, STREAM_READ);
    ck_assert_int_le(what, STREAM_CONNECTED);
    p->count[what]++;
    if (p->nlog < LOG_MAX) {
        p->in_len[p->nlog] = s->in != NULL ? evbuffer_get_length(s->in) : 0;
        p->log[p->nlog++] = what;
    }
    if (what == STREAM_ERROR && p->count[STREAM_ERROR] == 1)
        p->err_at_error = s->err;
    if (what != STREAM_READ)
        return;
    if (p->want != 0)
        s->want = p->want;
    if (p->consume)
        evbuffer_add_buffer(p->got, s->in);
    if (p->pause_at_read == p->count[STREAM_READ])
        stream_reading(s, 0);
}

static void probe_open(struct probe *p, int fd)
{
    memset(p, 0, sizeof *p);
    p->got = evbuffer_new();
    ck_assert_ptr_nonnull(p->got);
    ck_assert_int_eq(stream_open(&p->s, base, fd, probe_cb, p), 0);
}

static void probe_close(struct probe *p)
{
    stream_close(&p->s);
    evbuffer_free(p->got);
}

static int probe_total(const struct probe *p)
{
    int n = 0;

    for (int i = STREAM_READ; i <= STREAM_CONNECTED; i++)
        n += p->count[i];
    return n;
}

/* ---- reading ------------------------------------------------------------ */

START_TEST(test_read_reports_each_piece_as_it_arrives)
{
    const char *pieces[] = {"a", "bcd", "efghijk"};
    struct probe p;
    int ours, theirs;
    size_t total = 0;

    tcp_pair(&ours, &theirs, NULL);
    probe_open(&p, ours);
    p.consume = 1;
    for (int i = 0; i < 3; i++) {
        send_all(theirs, pieces[i], strlen(pieces[i]));
        total += strlen(pieces[i]);
        WAIT_FOR(evbuffer_get_length(p.got) == total);
        ck_assert_int_eq(p.count[STREAM_READ], i + 1);
    }
    ck_assert_int_eq(evbuffer_get_length(p.s.in), 0);
    ck_assert_int_eq(evbuffer_get_length(p.got), 11);
    ck_assert_mem_eq(evbuffer_pullup(p.got, -1), "abcdefghijk", 11);
    ck_assert_int_eq(probe_total(&p), 3);
    probe_close(&p);
    close(theirs);
}
END_TEST

/*
 * 1 MiB and its 4-byte length, all in the kernel before the first read
 * (a 2 MiB receive buffer holds it). The owner learns the size from the
 * first read and sets want; loop variant 1 leaves want alone as the control.
 */
START_TEST(test_frame_over_read_min_is_read_in_few_reads_when_want_is_set)
{
    const size_t n = 1u << 20;
    struct bufs b = {.our_rcv = 2 << 20};
    unsigned char *frame = malloc(n + 4);
    struct probe p;
    int ours, theirs;

    ck_assert_ptr_nonnull(frame);
    frame[0] = 0, frame[1] = 0x10, frame[2] = 0, frame[3] = 0;
    for (size_t i = 0; i < n; i++)
        frame[4 + i] = pattern(i);
    tcp_pair(&ours, &theirs, &b);
    send_all(theirs, frame, n + 4);
    /* Loopback moves it to our side at once; wait for all of it all the same. */
    for (long long until = now_ms() + WAIT_MS; kernel_bytes(ours) < (int)(n + 4);)
        ck_assert_msg(now_ms() < until, "only %d bytes arrived", kernel_bytes(ours));
    probe_open(&p, ours);
    if (_i == 0)
        p.want = n + 4;
    WAIT_FOR(evbuffer_get_length(p.s.in) == n + 4);
    printf("1 MiB frame, want %s: %d reads\n", _i == 0 ? "set" : "unset", p.count[STREAM_READ]);
    if (_i == 0)
        ck_assert_int_le(p.count[STREAM_READ], 3);
    else
        ck_assert_int_ge(p.count[STREAM_READ], 5);
    ck_assert_mem_eq(evbuffer_pullup(p.s.in, -1), frame, n + 4);
    probe_close(&p);
    close(theirs);
    free(frame);
}
END_TEST

START_TEST(test_eof_after_data_reports_the_data_first_and_eof_once)
{
    struct probe p;
    int ours, theirs;

    tcp_pair(&ours, &theirs, NULL);
    probe_open(&p, ours);
    send_all(theirs, "last words", 10);
    close(theirs);
    WAIT_FOR(p.count[STREAM_EOF] == 1);
    ck_assert_int_ge(p.nlog, 2);
    ck_assert_int_eq(p.log[0], STREAM_READ);
    ck_assert_int_eq(p.log[p.nlog - 1], STREAM_EOF);
    ck_assert_int_eq(p.count[STREAM_ERROR], 0);
    ck_assert_int_eq(evbuffer_get_length(p.s.in), 10);
    ck_assert_mem_eq(evbuffer_pullup(p.s.in, -1), "last words", 10);
    /* An owner that keeps the stream open is not told again (level-triggered EOF). */
    spin(5);
    ck_assert_int_eq(p.count[STREAM_EOF], 1);
    ck_assert_int_eq(probe_total(&p), p.nlog);
    ck_assert_int_eq(p.log[p.nlog - 1], STREAM_EOF);
    probe_close(&p);
}
END_TEST

START_TEST(test_reset_is_reported_once_as_an_error_and_no_eof_follows)
{
    struct linger lg = {1, 0};
    struct probe p;
    int ours, theirs;

    tcp_pair(&ours, &theirs, NULL);
    probe_open(&p, ours);
    /* Unread input at close, and linger 0: the peer's kernel answers with a reset. */
    ck_assert_int_eq(setsockopt(theirs, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    close(theirs);
    WAIT_FOR(p.count[STREAM_ERROR] + p.count[STREAM_EOF] > 0);
    ck_assert_int_eq(p.count[STREAM_ERROR], 1);
    ck_assert_int_eq(p.err_at_error, ECONNRESET);
    spin(5);
    ck_assert_int_eq(p.count[STREAM_EOF], 0);
    ck_assert_int_eq(probe_total(&p), 1);
    /* A failed stream writes nothing more and says so. */
    evbuffer_add(p.s.out, "x", 1);
    ck_assert_int_eq(stream_flush(&p.s), -1);
    ck_assert_int_eq(p.s.err, ECONNRESET);
    probe_close(&p);
}
END_TEST

START_TEST(test_paused_reading_leaves_bytes_in_the_kernel_until_resumed_and_kicked)
{
    struct probe p;
    int ours, theirs;

    tcp_pair(&ours, &theirs, NULL);
    probe_open(&p, ours);
    stream_reading(&p.s, 0);
    ck_assert_int_eq(p.s.reading, 0);
    send_all(theirs, "xyz", 3);
    poll_for(ours, POLLIN);
    spin(3);
    ck_assert_int_eq(probe_total(&p), 0);
    ck_assert_int_eq(evbuffer_get_length(p.s.in), 0);
    ck_assert_int_eq(kernel_bytes(ours), 3);
    stream_reading(&p.s, 1);
    stream_kick(&p.s);
    WAIT_FOR(evbuffer_get_length(p.s.in) == 3);
    ck_assert_int_ge(p.count[STREAM_READ], 1);
    ck_assert_mem_eq(evbuffer_pullup(p.s.in, -1), "xyz", 3);
    ck_assert_int_eq(kernel_bytes(ours), 0);
    probe_close(&p);
    close(theirs);
}
END_TEST

START_TEST(test_kick_reports_bytes_left_in_the_input_with_nothing_in_the_kernel)
{
    struct probe p;
    int ours, theirs;

    tcp_pair(&ours, &theirs, NULL);
    probe_open(&p, ours);
    p.pause_at_read = 1;
    send_all(theirs, "half a frame", 12);
    WAIT_FOR(p.count[STREAM_READ] == 1);
    ck_assert_int_eq(p.s.reading, 0);
    /* Reading back on: the kernel has nothing, so only the kick can say the bytes are there. */
    stream_reading(&p.s, 1);
    spin(3);
    ck_assert_int_eq(p.count[STREAM_READ], 1);
    stream_kick(&p.s);
    WAIT_FOR(p.count[STREAM_READ] == 2);
    ck_assert_int_eq(p.in_len[1], 12);
    ck_assert_int_eq(probe_total(&p), 2);
    probe_close(&p);
    close(theirs);
}
END_TEST

/*
 * The owner paused with bytes in s->in; meanwhile the peer sent its FIN.
 * On resume the kick and the readable socket land in one callback: the
 * bytes must be reported before the EOF, or the owner ends the connection
 * with frames it never saw (chand's conn_resume_read after a memory wait).
 */
START_TEST(test_kick_after_eof_arrived_reports_the_input_before_the_eof)
{
    struct probe p;
    int ours, theirs;

    tcp_pair(&ours, &theirs, NULL);
    probe_open(&p, ours);
    p.pause_at_read = 1;
    send_all(theirs, "frames", 6);
    WAIT_FOR(p.count[STREAM_READ] == 1);
    ck_assert_int_eq(shutdown(theirs, SHUT_WR), 0);
    poll_for(ours, POLLRDHUP);
    stream_reading(&p.s, 1);
    stream_kick(&p.s);
    WAIT_FOR(p.count[STREAM_EOF] + p.count[STREAM_ERROR] > 0);
    ck_assert_int_eq(p.nlog, 3);
    ck_assert_int_eq(p.log[1], STREAM_READ);
    ck_assert_int_eq(p.in_len[1], 6);
    ck_assert_int_eq(p.log[2], STREAM_EOF);
    probe_close(&p);
    close(theirs);
}
END_TEST

/* ---- memory ------------------------------------------------------------- */

START_TEST(test_idle_stream_holds_no_read_buffer_once_its_input_is_taken)
{
    struct probe p;
    int ours, theirs;
    size_t base_bytes, partial;

    tcp_pair(&ours, &theirs, NULL);
    probe_open(&p, ours);
    base_bytes = live_bytes;
    p.consume = 1;
    send_all(theirs, "ping", 4);
    WAIT_FOR(evbuffer_get_length(p.got) == 4);
    evbuffer_drain(p.got, 4);
    ck_assert_int_le(live_bytes, base_bytes + 256);
    /* A partial frame waits in the read buffer: that one costs, and it is printed. */
    p.consume = 0;
    send_all(theirs, "par", 3);
    WAIT_FOR(evbuffer_get_length(p.s.in) == 3);
    partial = live_bytes - base_bytes;
    printf("stream with 3 bytes of a frame waiting: %zu bytes of read buffer\n", partial);
    ck_assert_int_le(partial, 2 * STREAM_READ_MIN + 1024);
    evbuffer_drain(p.s.in, 3);
    ck_assert_int_le(live_bytes, base_bytes + 256);
    probe_close(&p);
    close(theirs);
}
END_TEST

START_TEST(test_with_a_spill_buffer_input_memory_grows_only_with_what_came)
{
    static char spill[256 * 1024];
    struct probe p;
    int ours, theirs;
    size_t base_bytes, partial, total = 300000, sent = 0;
    unsigned char *frame = malloc(total);

    ck_assert_ptr_nonnull(frame);
    for (size_t i = 0; i < total; i++)
        frame[i] = pattern(i);
    tcp_pair(&ours, &theirs, NULL);
    probe_open(&p, ours);
    p.s.spill = spill;
    p.s.spill_len = sizeof spill;
    base_bytes = live_bytes;
    /* a few bytes of a frame cost a few KiB, not a whole read */
    send_all(theirs, frame, 3);
    WAIT_FOR(evbuffer_get_length(p.s.in) == 3);
    partial = live_bytes - base_bytes;
    printf("stream with a spill buffer, 3 bytes waiting: %zu bytes of read buffer\n", partial);
    ck_assert_int_le(partial, 8192 + 256);
    sent = 3;
    /* a large announced frame trickling in: held memory stays near what arrived */
    p.want = total;
    while (sent < total) {
        size_t k = total - sent < 7000 ? total - sent : 7000;
        send_all(theirs, frame + sent, k);
        sent += k;
        WAIT_FOR(evbuffer_get_length(p.s.in) == sent);
        /* chains round up to powers of two: within a small factor of what arrived */
        ck_assert_msg(live_bytes - base_bytes <= 4 * sent + 16384,
                      "%zu bytes held for %zu received", live_bytes - base_bytes, sent);
    }
    /* and the bytes are all there, in order, across the spill copies */
    ck_assert_mem_eq(evbuffer_pullup(p.s.in, -1), frame, total);
    probe_close(&p);
    close(theirs);
    free(frame);
}
END_TEST

/* ---- writing ------------------------------------------------------------ */

/* Read whatever theirs has, checking the pattern from *at on; returns bytes read. */
static size_t take_pattern(int theirs, size_t *at)
{
    static unsigned char buf[1 << 16];
    size_t got = 0;
    ssize_t n;

    while ((n = recv(theirs, buf, sizeof buf, MSG_DONTWAIT)) > 0) {
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] != pattern(*at + (size_t)i))
                ck_abort_msg("byte %zu is %u, not %u", *at + (size_t)i, buf[i],
                             pattern(*at + (size_t)i));
        *at += (size_t)n;
        got += (size_t)n;
    }
    ck_assert_msg(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK), "recv: %s",
                  n == 0 ? "EOF" : strerror(errno));
    return got;
}

static void add_pattern(struct evbuffer *out, size_t from, size_t n)
{
    unsigned char *b = malloc(n);

    ck_assert_ptr_nonnull(b);
    for (size_t i = 0; i < n; i++)
        b[i] = pattern(from + i);
    ck_assert_int_eq(evbuffer_add(out, b, n), 0);
    free(b);
}

static const struct bufs small_bufs = {.our_snd = 4096, .their_rcv = 4096};

START_TEST(test_write_over_the_socket_buffer_finishes_from_the_loop_with_one_drained)
{
    const size_t piece = 256 << 10, total = 4 * piece;
    struct probe p;
    int ours, theirs;
    size_t queued = 0, at = 0;
    long long until = now_ms() + WAIT_MS;

    tcp_pair(&ours, &theirs, &small_bufs);
    probe_open(&p, ours);
    add_pattern(p.s.out, 0, piece);
    queued = piece;
    ck_assert_int_eq(stream_flush(&p.s), 0);
    /* The socket refused most of it: the write event has the rest. */
    ck_assert_int_gt(stream_pending(&p.s), 0);
    ck_assert_int_eq(p.s.writing, 1);
    ck_assert(event_pending(&p.s.wr, EV_WRITE, NULL));
    while (at < total) {
        ck_assert_msg(now_ms() < until, "only %zu of %zu bytes arrived", at, total);
        take_pattern(theirs, &at);
        /* More replies while the backlog is out: still one DRAINED at the very end. */
        if (queued < total && at > queued / 2) {
            add_pattern(p.s.out, queued, piece);
            queued += piece;
            ck_assert_int_eq(stream_flush(&p.s), 0);
        }
        if (queued < total)
            ck_assert_int_eq(p.count[STREAM_DRAINED], 0);
        turn(20);
    }
    WAIT_FOR(p.count[STREAM_DRAINED] > 0);
    spin(5);
    ck_assert_int_eq(p.count[STREAM_DRAINED], 1);
    ck_assert_int_eq(probe_total(&p), 1);
    ck_assert_int_eq(stream_pending(&p.s), 0);
    ck_assert_int_eq(p.s.writing, 0);
    ck_assert(!event_pending(&p.s.wr, EV_WRITE, NULL));
    ck_assert_int_eq(at, total);
    probe_close(&p);
    close(theirs);
}
END_TEST

/*
 * chand drops a client whose refused output is over --max-output when the
 * socket "took nothing now": that needs the flush to try the socket even
 * while the write event waits, as stream.h promises ("as much as the
 * socket takes now").
 */
START_TEST(test_flush_while_the_write_event_waits_writes_what_the_socket_takes)
{
    const size_t total = 1 << 20;
    struct probe p;
    int ours, theirs;
    size_t at = 0, before;

    tcp_pair(&ours, &theirs, &small_bufs);
    probe_open(&p, ours);
    add_pattern(p.s.out, 0, total);
    ck_assert_int_eq(stream_flush(&p.s), 0);
    ck_assert_int_eq(p.s.writing, 1);
    /* The peer reads, the loop does not run: the socket has room only the flush can use. */
    take_pattern(theirs, &at);
    poll_for(ours, POLLOUT);
    before = stream_pending(&p.s);
    ck_assert_int_eq(stream_flush(&p.s), 0);
    ck_assert_int_lt(stream_pending(&p.s), before);
    ck_assert_int_eq(probe_total(&p), 0);
    /* The rest still ends in exactly one DRAINED. */
    for (long long until = now_ms() + WAIT_MS; at < total;) {
        ck_assert_msg(now_ms() < until, "only %zu of %zu bytes arrived", at, total);
        take_pattern(theirs, &at);
        turn(20);
    }
    WAIT_FOR(p.count[STREAM_DRAINED] > 0);
    spin(5);
    ck_assert_int_eq(p.count[STREAM_DRAINED], 1);
    ck_assert_int_eq(probe_total(&p), 1);
    probe_close(&p);
    close(theirs);
}
END_TEST

/* A flush that empties the output while the write event waits still ends in one DRAINED. */
START_TEST(test_flush_that_empties_a_waiting_output_is_followed_by_one_drained)
{
    const size_t total = 256 << 10;
    struct bufs b = {.our_snd = 4096, .their_rcv = 4096};
    struct probe p;
    int ours, theirs;
    size_t at = 0;

    tcp_pair(&ours, &theirs, &b);
    probe_open(&p, ours);
    add_pattern(p.s.out, 0, total);
    ck_assert_int_eq(stream_flush(&p.s), 0);
    ck_assert_int_eq(p.s.writing, 1);
    /* Flush by hand, loop stopped, until the output is empty. */
    for (long long until = now_ms() + WAIT_MS; stream_pending(&p.s) > 0;) {
        ck_assert_msg(now_ms() < until, "%zu bytes still queued", stream_pending(&p.s));
        take_pattern(theirs, &at);
        poll_for(ours, POLLOUT);
        ck_assert_int_eq(stream_flush(&p.s), 0);
    }
    ck_assert_int_eq(probe_total(&p), 0);
    WAIT_FOR(p.count[STREAM_DRAINED] == 1);
    spin(5);
    ck_assert_int_eq(p.count[STREAM_DRAINED], 1);
    ck_assert(!event_pending(&p.s.wr, EV_WRITE, NULL));
    for (long long until = now_ms() + WAIT_MS; at < total;) {
        ck_assert_msg(now_ms() < until, "only %zu of %zu bytes arrived", at, total);
        poll_for(theirs, POLLIN);
        take_pattern(theirs, &at);
    }
    probe_close(&p);
    close(theirs);
}
END_TEST

START_TEST(test_flush_to_a_closed_peer_fails_with_epipe_and_no_sigpipe)
{
    struct probe p;
    int ours, theirs, rc = 0;

    tcp_pair(&ours, &theirs, NULL);
    probe_open(&p, ours);
    /* Reading off: the error must come out of the flush, not out of a read. */
    stream_reading(&p.s, 0);
    close(theirs);
    poll_for(ours, POLLRDHUP);
    /* The first write reaches a closed socket, whose reset makes the next one fail. */
    for (int i = 0; i < 2 && rc == 0; i++) {
        evbuffer_add(p.s.out, "after close", 11);
        rc = stream_flush(&p.s);
        if (rc == 0)
            poll_for(ours, POLLERR | POLLHUP);
    }
    ck_assert_int_eq(rc, -1);
    ck_assert_msg(p.s.err == EPIPE || p.s.err == ECONNRESET, "err %d (%s)", p.s.err,
                  strerror(p.s.err));
    printf("flush to a closed peer: %s\n", strerror(p.s.err));
    /* No write after the error, and no event: the owner was told by the return value. */
    ck_assert_int_eq(stream_flush(&p.s), -1);
    spin(5);
    ck_assert_int_eq(probe_total(&p), 0);
    probe_close(&p);
}
END_TEST

/* ---- connecting --------------------------------------------------------- */

static void probe_connect_init(struct probe *p)
{
    memset(p, 0, sizeof *p);
    p->got = evbuffer_new();
    ck_assert_ptr_nonnull(p->got);
}

START_TEST(test_connect_to_a_listening_port_reports_connected_then_reads_and_writes)
{
    struct sockaddr_in sa;
    struct probe p;
    char buf[8];
    int l = listener(&sa, 0, 0), theirs;

    probe_connect_init(&p);
    ck_assert_int_eq(stream_connect(&p.s, base, (struct sockaddr *)&sa, sizeof sa, probe_cb, &p), 0);
    ck_assert_int_eq(p.s.connecting, 1);
    /* Queued while connecting: nothing goes before the connection is there. */
    evbuffer_add(p.s.out, "hello", 5);
    ck_assert_int_eq(stream_flush(&p.s), 0);
    ck_assert_int_eq(stream_pending(&p.s), 5);
    WAIT_FOR(p.count[STREAM_CONNECTED] == 1);
    ck_assert_int_eq(p.s.connecting, 0);
    ck_assert_int_eq(p.s.reading, 1);
    ck_assert_int_eq(probe_total(&p), 1);
    ck_assert_int_eq(stream_flush(&p.s), 0);
    ck_assert_int_eq(stream_pending(&p.s), 0);
    theirs = accept(l, NULL, NULL);
    ck_assert_int_ge(theirs, 0);
    ck_assert_int_eq(recv(theirs, buf, 5, MSG_WAITALL), 5);
    ck_assert_mem_eq(buf, "hello", 5);
    send_all(theirs, "hi", 2);
    WAIT_FOR(evbuffer_get_length(p.s.in) == 2);
    spin(3);
    ck_assert_int_eq(p.count[STREAM_CONNECTED], 1);
    ck_assert_int_eq(p.count[STREAM_DRAINED], 0);
    probe_close(&p);
    close(theirs);
    close(l);
}
END_TEST

/* A bound socket that does not listen keeps the port ours and refuses every connect. */
static int refusing_port(struct sockaddr_in *sa)
{
    socklen_t len = sizeof *sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    ck_assert_int_ge(fd, 0);
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)sa, sizeof *sa), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)sa, &len), 0);
    return fd;
}

START_TEST(test_connect_to_a_closed_port_fails_once_with_econnrefused)
{
    struct sockaddr_in sa;
    struct probe p;
    int hold = refusing_port(&sa), rc;

    probe_connect_init(&p);
    rc = stream_connect(&p.s, base, (struct sockaddr *)&sa, sizeof sa, probe_cb, &p);
    if (rc < 0) {
        /* The kernel knew at once: the stream is closed already. */
        ck_assert_int_eq(errno, ECONNREFUSED);
        ck_assert_int_eq(p.s.fd, -1);
        printf("connect to a closed port: refused at once\n");
    } else {
        WAIT_FOR(probe_total(&p) > 0);
        ck_assert_int_eq(p.count[STREAM_ERROR], 1);
        ck_assert_int_eq(p.err_at_error, ECONNREFUSED);
        /* The owner has not closed it yet: nothing else may come, no DRAINED above all. */
        spin(5);
        ck_assert_int_eq(probe_total(&p), 1);
        ck_assert(!event_pending(&p.s.wr, EV_WRITE, NULL));
        ck_assert_int_eq(stream_flush(&p.s), -1);
        printf("connect to a closed port: refused from the loop\n");
    }
    probe_close(&p);
    close(hold);
}
END_TEST

/* ---- callbacks that close and free -------------------------------------- */

/* Memory that holds a stream and goes with it. */
struct holder {
    struct stream s;
    struct holder *also;     /* freed by the same callback, if set */
    int free_at;             /* the event that frees it, 0: any */
};

static int freed_calls;           /* callbacks that freed their holder */
static int calls_total;           /* callbacks of any holder */
static enum stream_event freed_by;

static void holder_free(struct holder *h)
{
    stream_close(&h->s);
    /* Poison it so that a stream callback after this reads garbage, with or without ASan. */
    memset(h, 0xa5, sizeof *h);
    free(h);
}

static void holder_cb(struct stream *s, enum stream_event what, void *arg)
{
    struct holder *h = arg;

    calls_total++;
    ck_assert_ptr_eq(s, &h->s);
    if (h->free_at != 0 && (int)what != h->free_at)
        return;
    freed_calls++;
    freed_by = what;
    if (h->also != NULL)
        holder_free(h->also);
    holder_free(h);
}

static struct holder *holder_open(int fd, int free_at)
{
    struct holder *h = calloc(1, sizeof *h);

    ck_assert_ptr_nonnull(h);
    h->free_at = free_at;
    ck_assert_int_eq(stream_open(&h->s, base, fd, holder_cb, h), 0);
    return h;
}

static void reset_counts(void)
{
    freed_calls = calls_total = 0;
    freed_by = 0;
}

START_TEST(test_read_callback_may_close_and_free_the_stream)
{
    int ours, theirs;

    reset_counts();
    tcp_pair(&ours, &theirs, NULL);
    holder_open(ours, STREAM_READ);
    /* Data and EOF together: the EOF must not reach the freed stream. */
    send_all(theirs, "bye", 3);
    close(theirs);
    WAIT_FOR(freed_calls == 1);
    spin(5);
    ck_assert_int_eq(calls_total, 1);
    ck_assert_int_eq(freed_by, STREAM_READ);
}
END_TEST

START_TEST(test_eof_callback_may_close_and_free_the_stream)
{
    int ours, theirs;

    reset_counts();
    tcp_pair(&ours, &theirs, NULL);
    holder_open(ours, STREAM_EOF);
    close(theirs);
    WAIT_FOR(freed_calls == 1);
    spin(5);
    ck_assert_int_eq(calls_total, 1);
    ck_assert_int_eq(freed_by, STREAM_EOF);
}
END_TEST

START_TEST(test_drained_callback_may_close_and_free_the_stream)
{
    int ours, theirs;
    size_t at = 0;
    struct holder *h;

    reset_counts();
    tcp_pair(&ours, &theirs, &small_bufs);
    h = holder_open(ours, STREAM_DRAINED);
    add_pattern(h->s.out, 0, 256 << 10);
    ck_assert_int_eq(stream_flush(&h->s), 0);
    ck_assert_int_eq(h->s.writing, 1);
    for (long long until = now_ms() + WAIT_MS; freed_calls == 0;) {
        ck_assert_msg(now_ms() < until, "no DRAINED after %zu bytes", at);
        take_pattern(theirs, &at);
        turn(20);
    }
    spin(5);
    ck_assert_int_eq(calls_total, 1);
    ck_assert_int_eq(freed_by, STREAM_DRAINED);
    close(theirs);
}
END_TEST

START_TEST(test_connect_callbacks_may_close_and_free_the_stream)
{
    struct sockaddr_in sa;
    struct holder *h = calloc(1, sizeof *h);
    int l = _i == 0 ? listener(&sa, 0, 0) : refusing_port(&sa);

    reset_counts();
    ck_assert_ptr_nonnull(h);
    if (stream_connect(&h->s, base, (struct sockaddr *)&sa, sizeof sa, holder_cb, h) < 0) {
        ck_assert_int_eq(_i, 1);
        ck_assert_int_eq(errno, ECONNREFUSED);
        free(h);
        close(l);
        return;
    }
    WAIT_FOR(freed_calls == 1);
    spin(5);
    ck_assert_int_eq(calls_total, 1);
    ck_assert_int_eq(freed_by, _i == 0 ? STREAM_CONNECTED : STREAM_ERROR);
    close(l);
}
END_TEST

/* A callback frees its own stream while that stream's write event is ready too. */
START_TEST(test_callback_that_frees_the_stream_cancels_its_other_ready_event)
{
    int ours, theirs;
    size_t at = 0;
    struct holder *h;

    reset_counts();
    tcp_pair(&ours, &theirs, &small_bufs);
    h = holder_open(ours, STREAM_READ);
    add_pattern(h->s.out, 0, 1 << 20);
    ck_assert_int_eq(stream_flush(&h->s), 0);
    ck_assert_int_eq(h->s.writing, 1);
    take_pattern(theirs, &at);
    poll_for(ours, POLLOUT);
    /* The kick runs first; the write event is ready in the same turn. */
    stream_kick(&h->s);
    turn(20);
    ck_assert_int_eq(freed_calls, 1);
    spin(5);
    ck_assert_int_eq(calls_total, 1);
    close(theirs);
}
END_TEST

/* The first of two ready streams frees both: the second must not be called. */
START_TEST(test_callback_may_close_and_free_another_ready_stream)
{
    int a_ours, a_theirs, b_ours, b_theirs;
    struct holder *a, *b;

    reset_counts();
    tcp_pair(&a_ours, &a_theirs, NULL);
    tcp_pair(&b_ours, &b_theirs, NULL);
    a = holder_open(a_ours, 0);
    b = holder_open(b_ours, 0);
    a->also = b;
    b->also = a;
    send_all(a_theirs, "a", 1);
    send_all(b_theirs, "b", 1);
    poll_for(a_ours, POLLIN);
    poll_for(b_ours, POLLIN);
    stream_kick(&a->s);
    stream_kick(&b->s);
    turn(20);
    ck_assert_int_eq(freed_calls, 1);
    spin(5);
    ck_assert_int_eq(calls_total, 1);
    close(a_theirs);
    close(b_theirs);
}
END_TEST

START_TEST(test_close_with_a_kick_pending_reports_nothing)
{
    struct probe p;
    int ours, theirs;

    tcp_pair(&ours, &theirs, NULL);
    probe_open(&p, ours);
    stream_kick(&p.s);
    stream_close(&p.s);
    ck_assert_int_eq(p.s.fd, -1);
    spin(3);
    ck_assert_int_eq(probe_total(&p), 0);
    /* Closing twice, and calls on a closed stream, are harmless. */
    stream_close(&p.s);
    stream_reading(&p.s, 1);
    stream_kick(&p.s);
    ck_assert_int_eq(stream_flush(&p.s), 0);
    ck_assert_int_eq(stream_pending(&p.s), 0);
    spin(3);
    ck_assert_int_eq(probe_total(&p), 0);
    evbuffer_free(p.got);
    close(theirs);
}
END_TEST

static Suite *stream_suite(void)
{
    Suite *s = suite_create("stream");
    TCase *tc;

    tc = tcase_create("read");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_read_reports_each_piece_as_it_arrives);
    tcase_add_loop_test(tc, test_frame_over_read_min_is_read_in_few_reads_when_want_is_set, 0, 2);
    tcase_add_test(tc, test_eof_after_data_reports_the_data_first_and_eof_once);
    tcase_add_test(tc, test_reset_is_reported_once_as_an_error_and_no_eof_follows);
    tcase_add_test(tc, test_paused_reading_leaves_bytes_in_the_kernel_until_resumed_and_kicked);
    tcase_add_test(tc, test_kick_reports_bytes_left_in_the_input_with_nothing_in_the_kernel);
    tcase_add_test(tc, test_kick_after_eof_arrived_reports_the_input_before_the_eof);
    tcase_add_test(tc, test_idle_stream_holds_no_read_buffer_once_its_input_is_taken);
    tcase_add_test(tc, test_with_a_spill_buffer_input_memory_grows_only_with_what_came);
    suite_add_tcase(s, tc);

    tc = tcase_create("write");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_write_over_the_socket_buffer_finishes_from_the_loop_with_one_drained);
    tcase_add_test(tc, test_flush_while_the_write_event_waits_writes_what_the_socket_takes);
    tcase_add_test(tc, test_flush_that_empties_a_waiting_output_is_followed_by_one_drained);
    tcase_add_test(tc, test_flush_to_a_closed_peer_fails_with_epipe_and_no_sigpipe);
    suite_add_tcase(s, tc);

    tc = tcase_create("connect");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_connect_to_a_listening_port_reports_connected_then_reads_and_writes);
    tcase_add_test(tc, test_connect_to_a_closed_port_fails_once_with_econnrefused);
    suite_add_tcase(s, tc);

    tc = tcase_create("lifetime");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_read_callback_may_close_and_free_the_stream);
    tcase_add_test(tc, test_eof_callback_may_close_and_free_the_stream);
    tcase_add_test(tc, test_drained_callback_may_close_and_free_the_stream);
    tcase_add_loop_test(tc, test_connect_callbacks_may_close_and_free_the_stream, 0, 2);
    tcase_add_test(tc, test_callback_that_frees_the_stream_cancels_its_other_ready_event);
    tcase_add_test(tc, test_callback_may_close_and_free_another_ready_stream);
    tcase_add_test(tc, test_close_with_a_kick_pending_reports_nothing);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr;
    int failed;

    /* Before the first libevent allocation, so every block is counted. */
    event_set_mem_functions(cnt_malloc, cnt_realloc, cnt_free);
    sr = srunner_create(stream_suite());
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
