/*
 * conn.c: one client connection. Bytes in: every complete frame in the
 * input is taken (payloads moved into msgs as they go) and dispatched; a
 * partial one sizes the next read to the frame's full size. Bytes out:
 * replies are packed straight into the stream's output; at the end of the
 * loop iteration (broker_run) each connection's output goes out with one
 * writev. Only what the socket refused waits for a write event, so a
 * request costs no epoll_ctl calls on the fast path (proto/stream.h).
 *
 * Death comes in two phases. Phase one (conn_detach) takes the connection
 * out of the channel world: its blocked requests are withdrawn and its
 * unacked messages go back to their channels, in order. Phase two
 * (conn_free) frees the struct from the reap event, when no callback of
 * this loop iteration can still be holding it. A connection that broke
 * the protocol detaches at once, but lingers (CLOSING) until the error
 * frame is flushed or a timer gives up on the peer.
 *
 * Bounds that keep one client from costing others (docs/protocol.md,
 * "Limits"): output the socket refused beyond --max-output drops the
 * client (a consumer that stopped reading); a connection that sits on an
 * incomplete frame, or has not said HELLO, for --idle-timeout seconds is
 * dropped (checked lazily, so it goes between one and two timeouts); a
 * reply whose header could not fit a frame answers PROTOCOL and closes.
 */
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <event2/buffer.h>

#include "daemon.h"

/* How long a closing connection may take to read its last frame, ms. */
#define CONN_LINGER_MS 2000

static void conn_io_cb(struct stream *s, enum stream_event what, void *arg);
static void conn_idle_arm(struct conn *c);

static TAILQ_HEAD(conn_flushq, conn) flushq = TAILQ_HEAD_INITIALIZER(flushq);
static struct event *flush_ev;       /* runs conn_flush_all when broker_run does not */
static char conn_spill[256 * 1024];  /* every connection's read overflow (one loop, one reader) */

static void conn_gone(struct conn *c, const char *why)
{
    log_msg(LL_INFO, "conn %" PRIu64 " (%s): %s", c->serial, c->peer, why);
    conn_kill(c);
}

/* One writev of c's output; the stream finishes the rest from the loop. */
static void conn_flush(struct conn *c)
{
    size_t before = stream_pending(&c->io), left;

    if (before == 0)
        return;
    if (stream_flush(&c->io) < 0) {
        conn_gone(c, evutil_socket_error_to_string(c->io.err));
        return;
    }
    left = stream_pending(&c->io);
    if (left > broker.max_output && (left == before || left / 2 > broker.max_output)) {
        /*
         * Only what the socket refused counts, and only when it took
         * nothing now (or the backlog is twice the bound): a burst of
         * replies to a client that reads is not a client that stopped.
         */
        log_msg(LL_WARN, "conn %" PRIu64 " (%s): %zu reply bytes the client does not read "
                "(over --max-output); dropping it", c->serial, c->peer, left);
        conn_kill(c);
    }
}

void conn_flush_all(void)
{
    struct conn *c;

    /*
     * A reader dropped here gives its messages back, and their new
     * receivers' replies must go out in this turn too: until nothing is left.
     */
    do {
        req_drain();
        while ((c = TAILQ_FIRST(&flushq)) != NULL) {
            TAILQ_REMOVE(&flushq, c, flink);
            c->flushing = 0;
            if (c->state <= CONN_READY)
                conn_flush(c);
        }
    } while (req_pending());
}

static void conn_flush_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    conn_flush_all();
}

static void conn_flush_soon(struct conn *c)
{
    if (c->flushing)
        return;
    c->flushing = 1;
    TAILQ_INSERT_TAIL(&flushq, c, flink);
    if (!broker.own_loop)
        event_active(flush_ev, EV_TIMEOUT, 0);
}

static void conn_unflush(struct conn *c)
{
    if (!c->flushing)
        return;
    TAILQ_REMOVE(&flushq, c, flink);
    c->flushing = 0;
}

int conn_init(void)
{
    flush_ev = event_new(broker.base, -1, 0, conn_flush_cb, NULL);
    return flush_ev ? 0 : -1;
}

void conn_fini(void)
{
    if (flush_ev != NULL)
        event_free(flush_ev);
    flush_ev = NULL;
}

static void conn_peer(char *dst, size_t size, const struct sockaddr *sa)
{
    char host[INET6_ADDRSTRLEN];

    if (sa == NULL) {
        snprintf(dst, size, "local");
    } else if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        snprintf(dst, size, "%s:%u", host, ntohs(in->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        snprintf(dst, size, "[%s]:%u", host, ntohs(in6->sin6_port));
    } else {
        snprintf(dst, size, "?");
    }
}

static void conn_idle_arm(struct conn *c)
{
    struct timeval tv = {(time_t)broker.opt.idle_timeout, 0};

    if (c->idle_on || broker.opt.idle_timeout == 0 || c->state > CONN_READY)
        return;
    c->idle_frames = c->frames_in;
    c->idle_on = 1;
    evtimer_add(&c->idle_ev, &tv);
}

/*
 * An idle timeout since the timer was armed: a connection that took no
 * complete frame in that time while bytes of one wait (or before HELLO)
 * goes. One that made progress, or was held back by us, gets another.
 */
static void conn_idle_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;

    (void)fd, (void)what;
    c->idle_on = 0;
    if (c->state > CONN_READY || c->broken)
        return;
    if (c->state == CONN_READY && evbuffer_get_length(c->io.in) == 0)
        return;
    if (c->state == CONN_READY && (c->frames_in != c->idle_frames || c->read_paused)) {
        conn_idle_arm(c);
        return;
    }
    log_msg(LL_INFO, "conn %" PRIu64 " (%s): %s for %ld s; dropping it", c->serial, c->peer,
            c->state == CONN_HELLO ? "no HELLO" : "no complete frame", broker.opt.idle_timeout);
    conn_kill(c);
    req_drain();
}

void conn_accept(int fd, const struct sockaddr *addr, int addrlen, int reject)
{
    struct conn *c = calloc(1, sizeof *c);
    int one = 1;

    (void)addrlen;
    if (c == NULL) {
        log_msg(LL_WARN, "out of memory accepting a connection");
        close(fd);
        return;
    }
    if (stream_open(&c->io, broker.base, fd, conn_io_cb, c) < 0) {
        log_msg(LL_WARN, "out of memory accepting a connection");
        free(c);
        return;
    }
    /* A peer that sends a few bytes makes chand hold about that many, not a whole read. */
    c->io.spill = conn_spill;
    c->io.spill_len = sizeof conn_spill;
    /* Replies are small and latency-bound; broker_run already batches them per loop turn. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->serial = ++broker.next_serial;
    conn_peer(c->peer, sizeof c->peer, addr);
    map_init(&c->reqs);
    TAILQ_INIT(&c->reqlist);
    delivery_init(&c->dl);
    evtimer_assign(&c->idle_ev, broker.base, conn_idle_cb, c);
    TAILQ_INSERT_TAIL(&broker.conns, c, link);

    if (reject) {
        log_msg(LL_WARN, "conn %" PRIu64 " (%s): refused, %zu connections already",
                c->serial, c->peer, broker.nconns);
        conn_status(c, 0, CHANWIRE__STATUS__STATUS_BUSY, "too many connections");
        conn_close_flush(c);
        return;
    }
    c->counted = 1;
    broker.nconns++;
    /* HELLO is due within the idle timeout too: a silent socket holds a connection slot. */
    conn_idle_arm(c);
    log_msg(LL_DEBUG, "conn %" PRIu64 " (%s): connected", c->serial, c->peer);
}

/* wire_read's payload callback: each payload of the frame becomes a msg in c->pl. */
static int conn_take(void *arg, size_t index, const void *data, struct evbuffer *src, size_t len)
{
    struct conn *c = arg;
    struct msg *m;

    if (index >= c->plcap) {
        size_t cap = c->plcap ? c->plcap * 2 : 8;
        while (cap <= index)
            cap *= 2;
        struct msg **pl = realloc(c->pl, cap * sizeof *pl);
        if (pl == NULL) {
            c->pl_nomem = 1;
            return 0;   /* wire_read drains the bytes */
        }
        c->pl = pl;
        c->plcap = cap;
    }
    /* Slots stay contiguous: a payload we do not keep leaves NULL and a flag. */
    while (c->npl < index)
        c->pl[c->npl++] = NULL;
    c->pl[index] = NULL;
    c->npl = index + 1;
    if (len > broker.opt.max_msg) {
        c->pl_oversize = 1;
        return 0;
    }
    /* Small frames come as bytes in place; large payloads as chains to move, not copy. */
    m = data != NULL ? msg_new(data, len) : msg_take(src, len);
    if (m == NULL) {
        c->pl_nomem = 1;
        return 0;
    }
    c->pl[index] = m;
    return 0;
}

static void conn_free_payloads(struct conn *c)
{
    for (size_t i = 0; i < c->npl; i++)
        msg_free(c->pl[i]);
    c->npl = 0;
    c->pl_oversize = 0;
    c->pl_nomem = 0;
}

static void conn_read(struct conn *c)
{
    struct evbuffer *in = c->io.in;

    while ((c->state == CONN_HELLO || c->state == CONN_READY) && !c->broken && !c->read_paused) {
        ProtobufCMessage *hdr = NULL;
        size_t npl = 0, need = 0;
        char err[160];
        int rc;

        rc = wire_read(in, broker.max_frame, &chanwire__client_frame__descriptor, &hdr,
                       conn_take, c, &npl, &need, err, sizeof err);
        if (rc == 0) {
            conn_free_payloads(c);
            c->io.want = need;
            break;
        }
        if (rc < 0) {
            conn_free_payloads(c);
            conn_fail(c, 0, "%s", err);
            break;
        }
        c->frames_in++;
        dispatch_frame(c, (Chanwire__ClientFrame *)hdr);
        wire_hdr_free(hdr);
        conn_free_payloads(c);
    }
    /* Part of a frame is waiting: it must become whole within the idle timeout. */
    if (c->state <= CONN_READY && evbuffer_get_length(in) > 0)
        conn_idle_arm(c);
    req_drain();
}

void conn_pause_read(struct conn *c)
{
    if (c->read_paused)
        return;
    c->read_paused = 1;
    if (c->state <= CONN_READY && !c->broken)
        stream_reading(&c->io, 0);
}

void conn_resume_read(struct conn *c)
{
    if (!c->read_paused)
        return;
    c->read_paused = 0;
    if (c->state > CONN_READY || c->broken)
        return;
    stream_reading(&c->io, 1);
    /* Frames that arrived while paused are in the input already: no read event will say so. */
    if (evbuffer_get_length(c->io.in) > 0)
        stream_kick(&c->io);
}

static void conn_io_cb(struct stream *s, enum stream_event what, void *arg)
{
    struct conn *c = arg;

    (void)s;
    if (c->state == CONN_DEAD)
        return;
    switch (what) {
    case STREAM_READ:
        if (c->state <= CONN_READY)
            conn_read(c);
        return;
    case STREAM_DRAINED:
        /* A closing connection's last frames are out. */
        if (c->state == CONN_CLOSING)
            conn_kill(c);
        return;
    case STREAM_EOF:
        conn_gone(c, "closed by peer");
        break;
    case STREAM_ERROR:
    case STREAM_CONNECTED:
        conn_gone(c, evutil_socket_error_to_string(c->io.err));
        break;
    }
    req_drain();
}

/* Phase one: nothing of c is left in any channel. */
static void conn_detach(struct conn *c)
{
    if (c->state >= CONN_CLOSING)
        return;
    /* Freeing its requests that wait for memory must not turn reading back on. */
    c->read_paused = 0;
    req_detach_all(c);
    delivery_nack_all(&c->dl);
    /* After the requests: an abandoned in-flight send still writes its seq down. */
    session_detach(c);
    if (c->idle_on) {
        evtimer_del(&c->idle_ev);
        c->idle_on = 0;
    }
    if (c->counted) {
        broker.nconns--;
        c->counted = 0;
    }
}

static void conn_linger_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;

    (void)fd, (void)what;
    if (c->fail_flush && c->state < CONN_CLOSING)
        conn_close_flush(c);
    else
        conn_kill(c);
    req_drain();
}

/* Run conn_kill from the loop after delay_ms (0: this iteration). */
static void conn_kill_later(struct conn *c, int delay_ms)
{
    struct timeval tv = {delay_ms / 1000, (delay_ms % 1000) * 1000};

    if (c->close_timer == NULL)
        c->close_timer = evtimer_new(broker.base, conn_linger_cb, c);
    if (c->close_timer == NULL) {
        /* No memory even for a timer: the peer's next event or shutdown ends it. */
        log_msg(LL_WARN, "conn %" PRIu64 ": out of memory arming its close timer", c->serial);
        return;
    }
    evtimer_add(c->close_timer, &tv);
}

void conn_close_flush(struct conn *c)
{
    if (c->state >= CONN_CLOSING)
        return;
    conn_detach(c);
    c->state = CONN_CLOSING;
    stream_reading(&c->io, 0);
    conn_unflush(c);
    if (stream_flush(&c->io) < 0 || stream_pending(&c->io) == 0) {
        conn_kill(c);
        return;
    }
    /* The rest goes from the stream's write event; STREAM_DRAINED ends it, or the timer. */
    conn_kill_later(c, CONN_LINGER_MS);
}

void conn_kill(struct conn *c)
{
    if (c->state == CONN_DEAD)
        return;
    conn_detach(c);
    c->state = CONN_DEAD;
    /* The socket goes now; the struct waits for the reap, when no callback can hold it. */
    stream_close(&c->io);
    conn_unflush(c);
    if (c->close_timer != NULL)
        evtimer_del(c->close_timer);
    TAILQ_REMOVE(&broker.conns, c, link);
    TAILQ_INSERT_TAIL(&broker.reap, c, link);
    broker_reap_soon();
}

void conn_doom(struct conn *c)
{
    if (c->state >= CONN_CLOSING)
        return;
    if (c->broken)
        return;
    c->broken = 1;
    log_msg(LL_WARN, "conn %" PRIu64 " (%s): a reply could not be written; dropping it",
            c->serial, c->peer);
    stream_reading(&c->io, 0);
    conn_kill_later(c, 0);
}

void conn_free(struct conn *c)
{
    DAEMON_ASSERT(c->state == CONN_DEAD);
    log_msg(LL_DEBUG, "conn %" PRIu64 " freed after %" PRIu64 " frames", c->serial, c->frames_in);
    stream_close(&c->io);
    if (c->close_timer != NULL)
        event_free(c->close_timer);
    map_free(&c->reqs);
    map_free(&c->dl.map);
    map_free(&c->dl.leases);
    evtimer_del(&c->idle_ev);
    free(c->pl);
    free(c);
    broker_conn_gone();
}

void conn_teardown(void)
{
    struct conn *c;

    while ((c = TAILQ_FIRST(&broker.conns)) != NULL)
        conn_kill(c);
    while ((c = TAILQ_FIRST(&broker.reap)) != NULL) {
        TAILQ_REMOVE(&broker.reap, c, link);
        conn_free(c);
    }
}

/*
 * A reply too big for any frame (its header over WIRE_HDR_MAX: a PING
 * echoing 64 KiB): nothing of it was written, so the stream is intact and
 * the client learns why with a PROTOCOL frame. The close waits for the
 * loop, because the caller may still be using c.
 */
static void conn_reply_too_big(struct conn *c, uint64_t id)
{
    char text[128];

    snprintf(text, sizeof text, "the reply to request %" PRIu64 " would need a header over %d "
             "bytes (the request carried too much)", id, WIRE_HDR_MAX);
    log_msg(LL_INFO, "conn %" PRIu64 " (%s): protocol error: %s", c->serial, c->peer, text);
    conn_status(c, id, CHANWIRE__STATUS__STATUS_PROTOCOL, text);
    c->broken = 1;
    c->fail_flush = 1;
    stream_reading(&c->io, 0);
    conn_kill_later(c, 0);
}

int conn_reply(struct conn *c, Chanwire__ServerFrame *f, const struct wire_payload *pl, size_t n)
{
    struct evbuffer *out;
    size_t before;

    if (c->state >= CONN_CLOSING || c->broken)
        return 0;
    out = c->io.out;
    before = evbuffer_get_length(out);
    if (wire_write(out, &f->base, pl, n) < 0) {
        if (evbuffer_get_length(out) == before && f->status == CHANWIRE__STATUS__STATUS_OK) {
            conn_reply_too_big(c, f->id);
            return -1;
        }
        /* A frame may be half written: nothing after it could be trusted. */
        conn_doom(c);
        return -1;
    }
    conn_flush_soon(c);
    return 0;
}

void conn_status(struct conn *c, uint64_t id, int status, const char *text)
{
    Chanwire__ServerFrame sf = CHANWIRE__SERVER_FRAME__INIT;

    sf.id = id;
    sf.status = status;
    if (text != NULL)
        sf.error = (char *)text;
    else if (status != CHANWIRE__STATUS__STATUS_OK)
        sf.error = (char *)wire_status_text(status);
    conn_reply(c, &sf, NULL, 0);
}

void conn_fail(struct conn *c, uint64_t id, const char *fmt, ...)
{
    char text[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    log_msg(LL_INFO, "conn %" PRIu64 " (%s): protocol error: %s", c->serial, c->peer, text);
    conn_status(c, id, CHANWIRE__STATUS__STATUS_PROTOCOL, text);
    conn_close_flush(c);
}
