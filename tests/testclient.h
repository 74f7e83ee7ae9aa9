/*
 * testclient.h: a small blocking client for the broker's integration tests.
 * It starts a real chand on 127.0.0.1 with --port 0, speaks the wire
 * protocol over plain sockets (framing through proto/wire.c) and waits for
 * replies with poll, so every test bounds its own time.
 */
#ifndef CHAN_TESTCLIENT_H
#define CHAN_TESTCLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "wire.h"

/* Status values without the generated prefix: ST(OK), ST(CLOSED), ... */
#define ST(x) CHANWIRE__STATUS__STATUS_##x

/* How long a helper waits for a reply the broker owes at once, ms. */
#define TC_REPLY_MS 5000

/* Assert a status and name both sides in the failure message. */
#define TC_ASSERT_STATUS(expr, want)                                                    \
    do {                                                                                \
        int tc_got_ = (expr);                                                           \
        ck_assert_msg(tc_got_ == (want), "%s: got %s, want %s", #expr,                  \
                      tc_status_name(tc_got_), tc_status_name(want));                   \
    } while (0)

/* ---- the broker process ---------------------------------------------- */

struct tc_server {
    pid_t pid;          /* chand's pid, 0 once reaped */
    int port;           /* TCP port it listens on (127.0.0.1) */
    char dir[64];       /* private temp dir for the port file; "" once removed */
    char portfile[96];  /* dir + "/port"; "" once removed */
};

/*
 * Start $CHAND --port 0 --port-file F plus the NULL-terminated extra
 * arguments, and wait (bounded) until F names the port; F and its temp dir
 * are removed as soon as it is read. chand dies with the
 * calling process (PR_SET_PDEATHSIG), so a failed test leaves no daemon
 * behind. Aborts the test on failure.
 */
void tc_server_start(struct tc_server *s, ...);

/*
 * Send sig (0: none) and wait up to max_ms for chand to exit. Returns its
 * wait status, or -1 if it was still running (it is then killed and
 * reaped).
 */
int tc_server_stop(struct tc_server *s, int sig, int max_ms);

/*
 * How long chand may take from a stop signal to its exit, ms. The
 * sanitizers' leak scan at exit stops the world and walks the heap, which
 * on a loaded machine adds hundreds of ms that are not chand's own.
 */
#ifdef CHAN_SANITIZERS
#define TC_EXIT_MS 3000
#else
#define TC_EXIT_MS 1000
#endif

/* SIGTERM, then assert chand exited with status 0 within TC_EXIT_MS plus slack. */
void tc_server_stop_ok(struct tc_server *s);

/* Raise this process's RLIMIT_NOFILE soft limit to at least n (capped at the hard limit). */
long tc_raise_nofile(long n);

/* ---- connections ----------------------------------------------------- */

struct tc_conn;

/* One received message: data is malloc'd, owned by the holder, freed by tc_msg_free. */
struct tc_msg {
    uint8_t *data;
    size_t len;
    uint64_t tag;        /* delivery tag to ACK */
    uint32_t deliveries; /* 1 on first delivery */
};

/* One ServerFrame with its payloads; owned by the caller, freed by tc_reply_free. */
struct tc_reply {
    Chanwire__ServerFrame *f;
    size_t n;                  /* payloads */
    struct tc_msg *pl;         /* n payloads (only data/len set) */
};

/* Connect to 127.0.0.1:port (no HELLO). Owned by the caller; tc_conn_free closes it. Aborts on failure. */
struct tc_conn *tc_connect(int port);
/* Connect and complete HELLO; aborts unless it succeeds. */
struct tc_conn *tc_connect_hello(int port);
/* Close the socket and free everything; NULL does nothing. */
void tc_conn_free(struct tc_conn *c);
int tc_conn_fd(const struct tc_conn *c);
/* A fresh request id for this connection (never 0). */
uint64_t tc_next_id(struct tc_conn *c);

/* Write all of buf; 0, or -1 with errno (EPIPE/ECONNRESET once the peer closed). */
int tc_write_raw(struct tc_conn *c, const void *buf, size_t len);
/* Frame f (payload field left empty) with n payloads and write it; 0 or -1. */
int tc_write_frame(struct tc_conn *c, const Chanwire__ClientFrame *f, const struct wire_payload *pl,
                   size_t n);

/*
 * Next frame, stashed ones first. 1: *r holds it; 0: nothing within
 * timeout_ms; -1: the stream ended (EOF or reset) or broke.
 */
int tc_read(struct tc_conn *c, int timeout_ms, struct tc_reply *r);
/* Like tc_read, for the reply to request id; frames for other ids are stashed. */
int tc_wait(struct tc_conn *c, uint64_t id, int timeout_ms, struct tc_reply *r);
/* tc_wait that aborts the test unless the reply arrives in TC_REPLY_MS; returns its status. */
int tc_must_wait(struct tc_conn *c, uint64_t id, struct tc_reply *r);
/* 1 if the peer closed the stream (EOF or reset) within timeout_ms, 0 if not. */
int tc_closed_within(struct tc_conn *c, int timeout_ms);
void tc_reply_free(struct tc_reply *r);

/* Non-blocking pieces for tests that drive many connections with one poll. */
int tc_fill(struct tc_conn *c);                  /* one read: >0 bytes, 0 EOF, -1 error */
int tc_take(struct tc_conn *c, struct tc_reply *r); /* 1 frame, 0 need more, -1 broken */

/* ---- requests: *_start writes and returns the id; the rest wait --------- */

/* Give f a fresh id, write it with n payloads, return the id; aborts if the write fails. */
uint64_t tc_request_start(struct tc_conn *c, Chanwire__ClientFrame *f, const struct wire_payload *pl,
                          size_t n);

uint64_t tc_hello_start(struct tc_conn *c);
int tc_hello(struct tc_conn *c);
int tc_open_n(struct tc_conn *c, const char *name, size_t len, int64_t cap, uint64_t *chan);
int tc_open(struct tc_conn *c, const char *name, int64_t cap, uint64_t *chan);
uint64_t tc_send_start(struct tc_conn *c, uint64_t chan, const void *data, size_t len, int64_t timeout_ms);
int tc_send(struct tc_conn *c, uint64_t chan, const void *data, size_t len, int64_t timeout_ms);
int tc_send_str(struct tc_conn *c, uint64_t chan, const char *s);
uint64_t tc_recv_start(struct tc_conn *c, uint64_t chan, int64_t timeout_ms);
/* Receive one message into *m (zeroed unless the status is OK). */
int tc_recv(struct tc_conn *c, uint64_t chan, int64_t timeout_ms, struct tc_msg *m);
/* The message of a RECV reply; aborts unless it has exactly one tag and payload. */
void tc_reply_msg(struct tc_reply *r, struct tc_msg *m);
void tc_msg_free(struct tc_msg *m);
int tc_ack(struct tc_conn *c, uint64_t tag);
/* A frame with id 0 and no request carrying only this ack (no reply comes); 0 or -1. */
int tc_ack_only(struct tc_conn *c, uint64_t tag);
int tc_close(struct tc_conn *c, uint64_t chan);
int tc_delete(struct tc_conn *c, const char *name);
uint64_t tc_cancel_start(struct tc_conn *c, uint64_t target);
/*
 * SELECT over n cases: chans[i], a send case if is_send[i]; the send cases'
 * messages are pl[0..nsend) in case order.
 */
uint64_t tc_select_start(struct tc_conn *c, const uint64_t *chans, const int *is_send, size_t n,
                         const struct wire_payload *pl, size_t nsend, int64_t timeout_ms);

/* ---- sessions, seqs, leases, auth ------------------------------------ */

/* HELLO with this session UUID and auth token (NULL: none). */
uint64_t tc_hello_as_start(struct tc_conn *c, const uint8_t session[16], const char *token);
/* The same, waited for; *resumed (if not NULL) is HelloReply.resumed when OK. */
int tc_hello_as(struct tc_conn *c, const uint8_t session[16], const char *token, int *resumed);
/* SEND (SEND_MANY when n > 1) of pl[0..n) under seqs seq..seq+n-1. */
uint64_t tc_send_seq_start(struct tc_conn *c, uint64_t chan, const struct wire_payload *pl, size_t n,
                           int64_t timeout_ms, uint64_t seq);
/* The same without a deadline, waited for; *count (if not NULL) is SendReply.count when OK. */
int tc_send_seq(struct tc_conn *c, uint64_t chan, const struct wire_payload *pl, size_t n, uint64_t seq,
                uint32_t *count);
/* RECV leased for lease_ms. */
uint64_t tc_recv_lease_start(struct tc_conn *c, uint64_t chan, int64_t timeout_ms, int64_t lease_ms);
/* The same, waited for: one message into *m (zeroed unless the status is OK). */
int tc_recv_lease(struct tc_conn *c, uint64_t chan, int64_t timeout_ms, int64_t lease_ms, struct tc_msg *m);
int tc_nack(struct tc_conn *c, uint64_t tag);
/* PING carrying data[0..len). */
uint64_t tc_ping_start(struct tc_conn *c, const void *data, size_t len);
/* A PING round trip; its status. */
int tc_ping(struct tc_conn *c);

/* The counters of STAT that tests wait on. */
struct tc_stat {
    int64_t cap;
    uint64_t len, unacked;
    uint32_t senders, receivers;
    int closed;
};
int tc_stat(struct tc_conn *c, const char *name, struct tc_stat *st);

enum tc_field {
    TC_LEN,       /* buffered messages */
    TC_UNACKED,   /* delivered, not acked */
    TC_SENDERS,   /* blocked senders */
    TC_RECEIVERS, /* blocked receivers */
    TC_FIELD_MAX
};
/* Poll STAT until field == want (aborts after TC_REPLY_MS, naming the last value seen). */
void tc_wait_stat(struct tc_conn *c, const char *name, enum tc_field field, uint64_t want);

/* Short name of a status, e.g. "STATUS_CLOSED". */
const char *tc_status_name(int status);
/* Milliseconds on CLOCK_MONOTONIC. */
int64_t tc_now_ms(void);

#endif /* CHAN_TESTCLIENT_H */
