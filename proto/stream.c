/*
 * stream.c: socket I/O for both ends, without bufferevents. A bufferevent
 * probes the socket with ioctl(FIONREAD) before every read, reads at most
 * 4 KiB, and toggles EV_WRITE around every write: three system calls per
 * message that the loop-turn batching of chand and libchanclient makes
 * unnecessary. Here a read is one readv and a write one sendmsg.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#ifdef HAVE_MALLOC_H
#include <malloc.h>
#endif

#include <event2/buffer.h>
#include <event2/util.h>

#include "stream.h"

/* iovecs per write; a reply backlog longer than this goes out over several writes */
#define STREAM_WRITE_IOV 64

static void stream_read_cb(evutil_socket_t fd, short what, void *arg);
static void stream_write_cb(evutil_socket_t fd, short what, void *arg);

void stream_init(struct stream *s)
{
    memset(s, 0, sizeof *s);
    s->fd = -1;
}

static int stream_setup(struct stream *s, struct event_base *base, evutil_socket_t fd,
                        stream_cb *cb, void *arg)
{
    stream_init(s);
    s->fd = fd;
    s->cb = cb;
    s->arg = arg;
    s->in = evbuffer_new();
    s->out = evbuffer_new();
    if (s->in == NULL || s->out == NULL)
        return -1;
    event_assign(&s->rd, base, fd, EV_READ | EV_PERSIST, stream_read_cb, s);
    event_assign(&s->wr, base, fd, EV_WRITE | EV_PERSIST, stream_write_cb, s);
    return 0;
}

int stream_open(struct stream *s, struct event_base *base, evutil_socket_t fd, stream_cb *cb,
                void *arg)
{
    if (stream_setup(s, base, fd, cb, arg) < 0 || evutil_make_socket_nonblocking(fd) < 0) {
        stream_close(s);
        errno = ENOMEM;
        return -1;
    }
    stream_reading(s, 1);
    return 0;
}

int stream_connect(struct stream *s, struct event_base *base, const struct sockaddr *sa,
                   socklen_t len, stream_cb *cb, void *arg)
{
    evutil_socket_t fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int err;

    stream_init(s);
    if (fd < 0)
        return -1;
    if (stream_setup(s, base, fd, cb, arg) < 0) {
        stream_close(s);
        errno = ENOMEM;
        return -1;
    }
    if (connect(fd, sa, len) < 0 && errno != EINPROGRESS && errno != EINTR) {
        err = errno;
        stream_close(s);
        errno = err;
        return -1;
    }
    /* Done or not, the outcome is reported from the loop, never from inside this call. */
    s->connecting = 1;
    s->writing = 1;
    event_add(&s->wr, NULL);
    return 0;
}

void stream_reading(struct stream *s, int on)
{
    /* A failed stream stays stopped: its socket would only report the failure again. */
    if (s->fd < 0 || s->connecting || (on && s->err != 0) || !on == !s->reading)
        return;
    s->reading = (unsigned char)!!on;
    if (on)
        event_add(&s->rd, NULL);
    else
        event_del(&s->rd);
}

void stream_kick(struct stream *s)
{
    /* EV_TIMEOUT marks the activation as ours: the callback then reports without reading. */
    if (s->fd >= 0)
        event_active(&s->rd, EV_TIMEOUT, 0);
}

/* One readv into space for what the owner waits for; 1 read, 0 nothing, -1 EOF or error. */
static int stream_fill(struct stream *s)
{
    struct evbuffer_iovec v[2];
    struct iovec iov[3];
    size_t have = evbuffer_get_length(s->in), size = STREAM_READ_MIN, rest, room = 0, spilled;
    ssize_t n;
    int nv, niov;

    rest = s->want > have ? s->want - have : 0;
    if (s->spill != NULL) {
        /* hold no more than came: a small extent, or as much as a large frame already has */
        size = have > STREAM_HOLD_MIN ? have : STREAM_HOLD_MIN;
        if (rest > 0 && rest < size)
            size = rest;
    } else if (rest > size) {
        size = rest;
    }
    if (size > STREAM_READ_MAX)
        size = STREAM_READ_MAX;
    nv = evbuffer_reserve_space(s->in, (ev_ssize_t)size, v, 2);
    if (nv < 1) {
        s->err = ENOMEM;
        return -1;
    }
    for (int i = 0; i < nv; i++) {
        iov[i].iov_base = v[i].iov_base;
        iov[i].iov_len = v[i].iov_len;
        room += v[i].iov_len;
    }
    niov = nv;
    if (s->spill != NULL) {
        iov[niov].iov_base = s->spill;
        iov[niov++].iov_len = s->spill_len;
    }
    n = readv(s->fd, iov, niov);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return 0;
        s->err = errno;
        return -1;
    }
    if (n == 0) {
        s->err = 0;
        return -1;
    }
    spilled = (size_t)n > room ? (size_t)n - room : 0;
    /* Commit what arrived: the first extent, then the rest in the second. */
    for (int i = 0; i < nv; i++) {
        size_t take = (size_t)n < v[i].iov_len ? (size_t)n : v[i].iov_len;
        v[i].iov_len = take;
        n -= (ssize_t)take;
    }
    if (v[nv - 1].iov_len == 0 && nv == 2)
        nv = 1;
    evbuffer_commit_space(s->in, v, nv);
    if (spilled > 0 && evbuffer_add(s->in, s->spill, spilled) < 0) {
        s->err = ENOMEM;
        return -1;
    }
    return 1;
}

/*
 * The socket failed: nothing more is read, written or reported, whatever
 * the owner does before it closes (level-triggered events would repeat
 * the failure every turn, and a reset read once reads as EOF after).
 */
static void stream_stop(struct stream *s)
{
    /* Unconditional: a pending kick is an activation of rd even when it is not added. */
    event_del(&s->rd);
    event_del(&s->wr);
    s->reading = 0;
    s->writing = 0;
    s->connecting = 0;
}

static void stream_read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct stream *s = arg;
    int rc;

    (void)fd;
    /*
     * A kick is about bytes already in s->in: report them and read
     * nothing. Reading now could meet the peer's FIN and report EOF in
     * their place; a readable socket stays readable for the next turn.
     */
    if (what & EV_TIMEOUT) {
        s->cb(s, STREAM_READ, s->arg);
        return;
    }
    rc = stream_fill(s);
    if (rc < 0) {
        if (s->err != 0) {
            stream_stop(s);
            s->cb(s, STREAM_ERROR, s->arg);
        } else {
            /* Once: the socket reads EOF forever. Writing may go on (the peer only half-closed). */
            stream_reading(s, 0);
            s->cb(s, STREAM_EOF, s->arg);
        }
        return;
    }
    if (rc > 0)
        s->cb(s, STREAM_READ, s->arg);
}

/* One sendmsg of the front of out; 0, or -1 with s->err. */
static int stream_write(struct stream *s)
{
    struct evbuffer_iovec v[STREAM_WRITE_IOV];
    struct iovec iov[STREAM_WRITE_IOV];
    struct msghdr mh;
    ssize_t n;
    int nv;

    nv = evbuffer_peek(s->out, -1, NULL, v, STREAM_WRITE_IOV);
    if (nv > STREAM_WRITE_IOV)
        nv = STREAM_WRITE_IOV;
    if (nv <= 0)
        return 0;
    for (int i = 0; i < nv; i++) {
        iov[i].iov_base = v[i].iov_base;
        iov[i].iov_len = v[i].iov_len;
    }
    memset(&mh, 0, sizeof mh);
    mh.msg_iov = iov;
    mh.msg_iovlen = (size_t)nv;
    /* MSG_NOSIGNAL: a vanished peer is an error to report, not a SIGPIPE for the process */
    n = sendmsg(s->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return 0;
        s->err = errno;
        return -1;
    }
    evbuffer_drain(s->out, (size_t)n);
    return 0;
}

int stream_flush(struct stream *s)
{
    if (s->fd < 0 || s->connecting)
        return 0;
    if (s->err != 0)
        return -1;
    if (evbuffer_get_length(s->out) == 0)
        return 0;
    /*
     * Even with the write event armed: the socket may have room the loop
     * has not seen yet, and chand tells a slow reader from a stopped one
     * by whether a flush got anything out.
     */
    if (stream_write(s) < 0) {
        stream_stop(s);
        return -1;
    }
    /*
     * An armed event stays armed even if this emptied the output: its
     * callback then finds nothing left and reports STREAM_DRAINED, once.
     */
    if (!s->writing && evbuffer_get_length(s->out) > 0) {
        s->writing = 1;
        event_add(&s->wr, NULL);
    }
    return 0;
}

static void stream_write_cb(evutil_socket_t fd, short what, void *arg)
{
    struct stream *s = arg;

    (void)what;
    if (s->connecting) {
        int err = 0;
        socklen_t len = sizeof err;

        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err == EINPROGRESS || err == EINTR)
            return;
        s->connecting = 0;
        if (err != 0) {
            /* Disarmed first: left armed, the failed socket fires again and reads as DRAINED. */
            s->err = err;
            stream_stop(s);
            s->cb(s, STREAM_ERROR, s->arg);
            return;
        }
        event_del(&s->wr);
        s->writing = 0;
        stream_reading(s, 1);
        s->cb(s, STREAM_CONNECTED, s->arg);
        return;
    }
    if (stream_write(s) < 0) {
        stream_stop(s);
        s->cb(s, STREAM_ERROR, s->arg);
        return;
    }
    if (evbuffer_get_length(s->out) == 0) {
        event_del(&s->wr);
        s->writing = 0;
        s->cb(s, STREAM_DRAINED, s->arg);
    }
}

size_t stream_pending(const struct stream *s)
{
    return s->out != NULL ? evbuffer_get_length(s->out) : 0;
}

void stream_close(struct stream *s)
{
    if (s->fd >= 0) {
        /* Deleting an event that was never assigned is harmless only if it is zeroed. */
        if (s->in != NULL && s->out != NULL) {
            event_del(&s->rd);
            event_del(&s->wr);
        }
        evutil_closesocket(s->fd);
    }
    if (s->in != NULL)
        evbuffer_free(s->in);
    if (s->out != NULL)
        evbuffer_free(s->out);
    stream_init(s);
}

void stream_tune_malloc(void)
{
#if defined(HAVE_MALLOPT) && defined(M_TRIM_THRESHOLD) && defined(M_MMAP_THRESHOLD)
    mallopt(M_MMAP_THRESHOLD, 8 << 20);
    mallopt(M_TRIM_THRESHOLD, 32 << 20);
#endif
}
