/*
 * daemon.h: chand's private header. It reads as a table of contents: the
 * forward declarations, then one section per .c file with its types and
 * functions. Layers, bottom up: msg/registry/delivery hold state around the
 * channel core (core/core.h); conn frames bytes; dispatch and op turn
 * requests into core calls; req parks the ones that block; main runs the
 * loop.
 *
 *   log.c       leveled, timestamped lines on stderr
 *   options.c   the command line
 *   map.c       a u64-keyed hash table (handles, delivery tags, request ids)
 *   msg.c       message storage: small payloads inline, large ones as evbuffers
 *   registry.c  channels by name and by handle; the refcounted struct chan
 *   delivery.c  a connection's unacked deliveries, by tag; lease timers
 *   session.c   sessions by UUID: takeover, the completed-seq window, expiry
 *   mem.c       the --max-memory gate: sends wait FIFO for message memory
 *   conn.c      one client connection: framing, replies, two-phase death
 *   dispatch.c  a frame to its handler; the requests that never block
 *   op.c        SEND, RECV, SELECT: fast paths, parking, replies
 *   req.c       blocked requests: timers, cancel, the completion queue
 *   broker.c    the broker on a caller's loop: start, graceful shutdown, stop
 *   main.c      the process: listener, signals, port file, startup line
 *
 * Everything but main.c is libchand.la, so a test or fuzz harness can run
 * a real broker in its own process: broker_start on its event_base, then
 * conn_accept on one end of a socketpair, then broker_stop.
 */
#ifndef CHAND_DAEMON_H
#define CHAND_DAEMON_H

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <event2/event_struct.h>

#include "core.h"
#include "stream.h"
#include "wire.h"

struct bufferevent;
struct evbuffer;
struct options;
struct map;
struct msg;
struct chan;
struct delivery_table;
struct conn;
struct req;
struct broker;
struct session;
struct lease;

/* Programmer errors stop loudly, whatever NDEBUG says; input never gets here. */
#define DAEMON_ASSERT(x) ((x) ? (void)0 : daemon_assert_fail(#x, __FILE__, __LINE__))
_Noreturn void daemon_assert_fail(const char *what, const char *file, int line);

#define CONTAINER_OF(p, type, field) ((type *)(void *)((char *)(p) - offsetof(type, field)))

/* ---- log.c ------------------------------------------------------------ */

enum log_level {
    LL_ERROR = 0,  /* the daemon cannot do what it must (startup failures) */
    LL_WARN,       /* something refused or lost: out of memory, accept errors */
    LL_INFO,       /* connections, protocol errors, channel creation */
    LL_DEBUG,      /* every request */
    LL_MAX
};

void log_set_level(int level);
int log_enabled(int level);
/* One line "YYYY-mm-ddTHH:MM:SS.mmm LEVEL text" on stderr, if level is enabled. */
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The level named by s ("error", "warn", "info", "debug"), or -1. */
int log_level_parse(const char *s);

/* ---- options.c -------------------------------------------------------- */

struct options {
    const char *bind;        /* address to listen on (numeric or a name) */
    long port;               /* TCP port, 0 = a free one the kernel picks */
    const char *port_file;   /* where to write the port once listening, or NULL */
    size_t max_msg;          /* largest message payload, bytes */
    size_t max_conns;        /* live client connections at most */
    uint64_t max_memory;     /* message bytes the broker holds at most, 0 = no limit */
    size_t max_channels;     /* channels at most, 0 = no limit */
    size_t max_pending;      /* blocked requests per connection at most */
    size_t max_output;       /* reply bytes queued to one connection at most */
    long idle_timeout;       /* s a connection may sit on an incomplete frame, 0 = for ever */
    long session_ttl;        /* s a session outlives its last connection */
    long expire_closed;      /* s before a closed, drained, idle channel is deleted, 0 = never */
    const char *token;       /* --auth-token-file's first line (static storage), or NULL */
    size_t token_len;        /* bytes in token */
    int insecure;            /* --insecure: a non-loopback --bind without a token is fine */
    int log_level;           /* enum log_level */
};

/*
 * Fill o from argv. Returns 0 to run; 1 when --help or --version was
 * printed (exit 0); 2 after printing one line naming the bad option or
 * value on stderr (exit 2).
 */
int options_parse(struct options *o, int argc, char **argv);
/* The defaults options_parse starts from (for an in-process broker). */
void options_defaults(struct options *o);

/* ---- map.c ------------------------------------------------------------ */

/*
 * Open addressing with linear probing and backward-shift deletion. Key 0
 * marks an empty slot, so 0 is never a key (handles, tags and request ids
 * all start at 1). The table is allocated on the first put, so an idle
 * connection's maps cost nothing.
 */
struct map_ent {
    uint64_t key;    /* 0 = empty */
    void *val;       /* the owner's */
    void *aux;       /* the owner's */
};

struct map {
    struct map_ent *ents;  /* cap slots, owned by the map */
    size_t cap;            /* slots, a power of two (0 before the first put) */
    size_t n;              /* keys stored */
};

void map_init(struct map *m);
/* Free the table (not what the values point to). */
void map_free(struct map *m);
/* Insert a new key (not already present, not 0). 0, or -1 if out of memory. */
int map_put(struct map *m, uint64_t key, void *val, void *aux);
/* The entry for key, or NULL. Valid until the next put or del. */
struct map_ent *map_get(const struct map *m, uint64_t key);
/* Remove key if present. */
void map_del(struct map *m, uint64_t key);

/* ---- msg.c ------------------------------------------------------------ */

/*
 * Payloads up to MSG_INLINE_MAX bytes live in the msg's own allocation
 * (one malloc per message, recycled through a small per-size cache); a copy
 * of that size costs less than the evbuffer and chain bookkeeping that
 * moving would take. Larger payloads are moved out of the socket's input
 * evbuffer whole chains at a time and written out by reference, so their
 * bytes are never copied between sockets.
 */
#define MSG_INLINE_MAX 512

/*
 * A message. Owner: whoever holds its core_msg (see core.h): a sender's
 * request, a channel's buffer, a delivery table entry; the last of them
 * frees it with msg_free.
 */
struct msg {
    struct core_msg core;    /* the core's view; core.len is the payload size */
    struct evbuffer *buf;    /* payload when over MSG_INLINE_MAX, else NULL */
    unsigned char data[];    /* payload when inline */
};

static inline struct msg *msg_of(struct core_msg *cm)
{
    return CONTAINER_OF(cm, struct msg, core);
}

/*
 * Remove len bytes from the front of src into a new message (the caller
 * owns it). NULL if out of memory; src may then have lost some bytes.
 */
struct msg *msg_take(struct evbuffer *src, size_t len);
/* A new message holding a copy of data[0..len); NULL if out of memory. */
struct msg *msg_new(const void *data, size_t len);
void msg_free(struct msg *m);
/* For wire_write: inline bytes, or the evbuffer by reference (no copy). */
void msg_payload(const struct msg *m, struct wire_payload *pl);
/* Bytes and count of every live message: the seam for --max-memory. */
uint64_t msg_live_bytes(void);
uint64_t msg_live_count(void);
/* Release the cache (at exit). */
void msg_cache_drain(void);

/* ---- registry.c ------------------------------------------------------- */

/*
 * A channel. Owner: the registry holds one reference while the channel is
 * listed; every delivery table entry and every blocked request on it holds
 * one more, so an ack for a deleted channel still finds its core. Freed by
 * the last registry_unref.
 */
struct chan {
    struct core_chan core;          /* buffer, queues, closed flag */
    uint64_t handle;                /* OPEN's answer; never reused */
    unsigned char incarnation[16];  /* UUID fixed at creation */
    unsigned refs;                  /* see above */
    int deleted;                    /* DELETE'd: out of the registry, core destroyed */
    struct chan *name_next;         /* registry name-hash chain */
    TAILQ_ENTRY(chan) closed_link;  /* registry's closed list (--expire-closed) */
    int on_closed_list;             /* in that list */
    int64_t idle_since_ms;          /* closed list: first sweep that saw it drained, unused; 0 none */
    uint32_t name_hash;             /* hash of name, kept for rehashing */
    size_t namelen;                 /* bytes in name */
    char name[];                    /* NUL-terminated */
};

int registry_init(void);
/* Delete every channel (at exit); buffered messages are freed. */
void registry_teardown(void);
struct chan *registry_by_name(const char *name, size_t len);
/* The live channel with this handle, or NULL (never was, or deleted). */
struct chan *registry_by_handle(uint64_t handle);
/* A new listed channel (the registry's reference); NULL if out of memory. */
struct chan *registry_create(const char *name, size_t len, size_t cap);
/*
 * DELETE: unlist ch, complete its waiters with ENOENT, free its buffered
 * messages, drop the registry's reference.
 */
void registry_delete(struct chan *ch);
/*
 * Listed channels whose name starts with prefix, sorted by name, into a
 * malloc'd array the caller frees (the pointers are borrowed). -1 if out
 * of memory.
 */
int registry_list(const char *prefix, size_t len, struct chan ***out, size_t *n);
size_t registry_count(void);
/*
 * ch was just closed: with --expire-closed, it is watched and deleted once
 * it stayed drained, unacked-free and waiter-free for that long.
 */
void registry_closed(struct chan *ch);
void registry_ref(struct chan *ch);
void registry_unref(struct chan *ch);

/* ---- delivery.c ------------------------------------------------------- */

/*
 * The messages a connection received and has not settled. Each entry owns
 * its message and a reference to its channel. Tags are per connection,
 * start at 1 and only grow. A leased delivery also owns a struct lease (its
 * timer), kept apart so a plain delivery costs no more than its map slot.
 */
struct delivery_table {
    struct map map;        /* tag -> val: struct msg, aux: struct chan */
    struct map leases;     /* tag -> val: struct lease, for leased deliveries only */
    uint64_t next_tag;     /* tag for the next delivery */
};

void delivery_init(struct delivery_table *t);
/*
 * Record m (delivered from ch with CORE_W_ACK): the table takes m and a
 * reference to ch. lease_ms > 0: unless settled within lease_ms, the
 * message goes back to its channel as a NACK would, and its tag is
 * forgotten. Returns the tag, or 0 if out of memory (nothing taken).
 */
uint64_t delivery_add(struct delivery_table *t, struct chan *ch, struct msg *m, int64_t lease_ms);
/* ACK one tag: the message is gone for good. 0, or -1 for an unknown tag. */
int delivery_ack(struct delivery_table *t, uint64_t tag);
/*
 * NACK the tags: each known message goes back to the head of its channel,
 * the set in its original order. 0, or -1 if any tag was unknown (the
 * known ones are still nacked).
 */
int delivery_nack(struct delivery_table *t, const uint64_t *tags, size_t n);
/*
 * Give every message back (a connection's death), in order; stop every
 * lease; empty both maps.
 */
void delivery_nack_all(struct delivery_table *t);
size_t delivery_count(const struct delivery_table *t);
/* Settle one message with core_nack on ch and drop what the core hands back. */
void delivery_requeue(struct chan *ch, struct msg *m);

/* ---- conn.c ----------------------------------------------------------- */

enum conn_state {
    CONN_HELLO = 0,  /* accepted; only HELLO is acceptable */
    CONN_READY,      /* serving requests */
    CONN_CLOSING,    /* detached; flushing its last frames, then freed */
    CONN_DEAD,       /* detached and closed; freed on the next loop turn */
    CONN_STATE_MAX
};

/*
 * One client connection. Owned by the broker's list until conn_kill moves
 * it to the reap list; freed there on the next loop turn. Everything it
 * points to is its own.
 */
struct conn {
    struct stream io;             /* the socket and its buffers, closed when freed */
    uint64_t serial;              /* 1, 2, ... for logs */
    int state;                    /* enum conn_state */
    int counted;                  /* counts against --max-conns */
    int broken;                   /* a reply failed half-written: write and read nothing more */
    char peer[64];                /* "addr:port" of the client */
    char name[64];                /* HELLO client_name, for logs */
    unsigned char session[16];    /* HELLO session UUID (zeros if none) */
    struct session *sess;         /* its session while attached (the table owns it), or NULL */
    uint64_t resume_hi;           /* highest seq the session had seen before this connection */
    struct map reqs;              /* blocked requests by id: val struct req */
    TAILQ_HEAD(, req) reqlist;    /* the same requests, for walking */
    struct delivery_table dl;     /* unacked deliveries */
    struct msg **pl;              /* payloads of the frame being taken */
    size_t npl;                   /* payloads taken into pl */
    size_t plcap;                 /* slots in pl */
    int pl_oversize;              /* some payload of this frame was over --max-msg */
    int pl_nomem;                 /* some payload could not be stored */
    struct event *close_timer;    /* CLOSING: give up on the peer after this */
    int fail_flush;               /* close_timer: close after flushing (an error frame) */
    struct event idle_ev;         /* --idle-timeout: checks progress on an incomplete frame */
    int idle_on;                  /* idle_ev is pending */
    uint64_t idle_frames;         /* frames_in when idle_ev was armed */
    uint64_t mem_bytes;           /* payload bytes of c's requests waiting for memory */
    int read_paused;              /* reading stopped until those are admitted */
    uint64_t frames_in;           /* frames taken */
    int flushing;                 /* on the flush queue */
    TAILQ_ENTRY(conn) flink;      /* the flush queue (conn.c) */
    TAILQ_ENTRY(conn) link;       /* broker.conns or broker.reap */
};

/* The flush event (needs broker.base); freed at exit. */
int conn_init(void);
void conn_fini(void);
/*
 * Write every connection's queued replies, one writev each. broker_run
 * calls it at the end of each loop iteration; a program that runs the
 * loop itself gets it from an event instead.
 */
void conn_flush_all(void);

/* Accept fd from addr as a new connection (reject: answer BUSY and close). */
void conn_accept(int fd, const struct sockaddr *addr, int addrlen, int reject);
/*
 * Write one ServerFrame (payload field empty) and n payloads to c's output.
 * Dropped silently when c is CLOSING or DEAD. 0, or -1 if it could not be
 * written (logged).
 */
int conn_reply(struct conn *c, Chanwire__ServerFrame *f, const struct wire_payload *pl, size_t n);
/* A reply with just a status (text NULL: the status's standard text). */
void conn_status(struct conn *c, uint64_t id, int status, const char *text);
/*
 * A stream-level error: one PROTOCOL frame whose text is fmt, then the
 * connection is detached and closes once that frame is flushed.
 */
void conn_fail(struct conn *c, uint64_t id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Detach c and close it once its output drained (shutdown, errors). */
void conn_close_flush(struct conn *c);
/* Detach c, close it now, free it on the next loop turn. */
void conn_kill(struct conn *c);
/* A reply could not be written: the stream is broken; kill c from the loop, not from here. */
void conn_doom(struct conn *c);
/*
 * Stop reading c's requests (its requests waiting for memory hold a frame's
 * worth), or read on and take what is already buffered.
 */
void conn_pause_read(struct conn *c);
void conn_resume_read(struct conn *c);
/* Phase two: free a connection taken off the reap list. */
void conn_free(struct conn *c);
/* Free every connection at once (exit). */
void conn_teardown(void);

/* ---- dispatch.c ------------------------------------------------------- */

/*
 * Act on one decoded frame of c (its payloads in c->pl, which handlers
 * take by setting slots to NULL). Never aborts on input: a bad frame ends
 * in conn_fail.
 */
void dispatch_frame(struct conn *c, Chanwire__ClientFrame *f);

/* ---- op.c ------------------------------------------------------------- */

/* Most messages one RECV_MANY reply carries (the reply header stays small). */
#define OP_RECV_MAX 1024
/* Most cases in one SELECT. */
#define OP_SELECT_MAX 1024

/* The handlers: f's body is of the named kind; payloads in c->pl. */
void op_send(struct conn *c, Chanwire__ClientFrame *f);
void op_recv(struct conn *c, Chanwire__ClientFrame *f);
void op_select(struct conn *c, Chanwire__ClientFrame *f);
/*
 * A parked request's waiter completed (drained from the completion queue,
 * outside the core): continue it (SEND_MANY, RECV_MANY) or reply and free.
 */
void op_resume(struct req *r);
/* Reply with status to a withdrawn request (its waiters are out of the core) and free it. */
void op_withdrawn(struct req *r, int err);
/* r waited for memory and was admitted: go on into the core. */
void op_admitted(struct req *r);

/* ---- req.c ------------------------------------------------------------ */

enum req_kind {
    REQ_SEND = 1,  /* SEND or SEND_MANY */
    REQ_RECV,      /* RECV or RECV_MANY */
    REQ_SELECT,    /* SELECT */
    REQ_KIND_MAX
};

/*
 * A request that went pending in the core. Owned by its connection (reqs
 * and reqlist) from req_park until op_resume or op_withdrawn frees it, or
 * until the connection detaches it. Holds a reference to every channel its
 * waiters name, and owns the messages of its send waiters that the core
 * has not taken.
 */
struct req {
    struct conn *conn;           /* the requester */
    uint64_t id;                 /* the client's request id */
    int kind;                    /* enum req_kind */
    int parked;                  /* in conn->reqs / reqlist */
    int completed;               /* a done callback fired; in the completion queue */
    int64_t timeout_ms;          /* as requested: -1 never, 0 no wait, > 0 ms */
    struct event timer;          /* deadline, when timeout_ms > 0 */
    int64_t ends_us;             /* the deadline on CLOCK_MONOTONIC, when armed */
    int timer_on;                /* timer was added */
    int memwait;                 /* in the memory queue (mem.c), not yet in the core */
    uint64_t membytes;           /* payload bytes it holds while there */
    TAILQ_ENTRY(req) mlink;      /* the memory queue */
    TAILQ_ENTRY(req) qlink;      /* completion queue */
    TAILQ_ENTRY(req) clink;      /* conn->reqlist */
    struct chan *chan;           /* SEND/RECV: the channel (referenced) */
    struct core_waiter w;        /* SEND/RECV: the waiter */
    /*
     * SEND: msgs[next..n) are still ours; msgs[next] rides in w and leaves
     * us when w completes with 0, or when req_abandon finds it in flight.
     */
    struct msg **msgs;           /* n slots (points at one or at the trailing array) */
    struct msg *one;             /* the slot of a single-message SEND */
    uint32_t nmsgs;              /* messages in the request */
    uint32_t next;               /* index of the message in w */
    uint32_t count;              /* messages sent so far (or found sent by a previous connection) */
    uint64_t seq;                /* session seq of msgs[0] (msgs[i] has seq + i), 0 = none */
    /* RECV */
    uint32_t max;                /* messages the reply may carry */
    int64_t lease_ms;            /* > 0: the deliveries are leased for that long */
    /*
     * SELECT: cases[i].ch names the channel (referenced), NULL = nil case;
     * a send case's msg is ours unless it is the fired case and taken.
     */
    struct core_select sel;
    int ncases;
    int taken;                   /* the fired send case's message left us */
    struct core_waiter *cases;   /* ncases waiters (trailing array) */
};

int req_init(struct event_base *base);
void req_fini(void);
/*
 * A new request of c with room for nextra trailing bytes (SEND_MANY slots,
 * SELECT cases), zeroed, not yet parked. NULL if out of memory.
 */
struct req *req_new(struct conn *c, uint64_t id, int kind, size_t nextra);
/*
 * Free r: unpark it, stop its timer, free the messages it owns, give back
 * (nack) a message it received but did not hand on, drop its channel
 * references. Never from inside a done callback.
 */
void req_free(struct req *r);
/*
 * Make r one of its connection's pending requests (before the blocking
 * core call, so that call can no longer fail). 0, or EBUSY (the
 * connection has --max-pending of them already) or ENOMEM.
 */
int req_park(struct req *r);
/* Start r's deadline timer, if it has one. */
void req_arm(struct req *r);
/* The core_waiter done callback of every parked waiter: queue r for op_resume. */
void req_done(struct core_waiter *w);
/* Run op_resume for every completed request, in completion order. */
void req_drain(void);
/* Completed requests wait for req_drain. */
int req_pending(void);
/*
 * Withdraw r with err (deadline, CANCEL, shutdown): if its waiters were
 * still queued, they leave the core and r is answered with err and freed;
 * returns 1. If a cap-0 send of r is already in a receiver's hands, the
 * ack or nack will decide; returns 0.
 */
int req_withdraw(struct req *r, int err);
/* The pending request of c with this id, or NULL. */
struct req *req_find(struct conn *c, uint64_t id);
/* Phase one of c's death: withdraw every request, give back what they hold. */
void req_detach_all(struct conn *c);
/* Shutdown: answer every parked, uncompleted request of c with SHUTDOWN. */
void req_shutdown_all(struct conn *c);

/* ---- session.c -------------------------------------------------------- */

/* Completed seqs a session remembers: the most recent ones stay. */
#define SESSION_WINDOW 4096

int session_init(void);
/* Free every session (at exit, after every connection is gone). */
void session_fini(void);
/*
 * HELLO with session id: attach c to that session, creating it if new
 * (*resumed = 0) or taking it over (*resumed = 1). A live connection
 * already attached is closed first (the newer one wins: its client
 * reconnected and the old socket is a leftover). 0, or -1 if out of memory.
 */
int session_attach(struct conn *c, const unsigned char id[16], int *resumed);
/* c is going away: its session starts its --session-ttl. */
void session_detach(struct conn *c);
/* Record seq as completed (buffered, or taken by a receiver) in s's window. */
void session_complete(struct session *s, uint64_t seq);
/* A SEND with seqs seq..seq+n-1 arrived: raise the highest seq seen. */
void session_seen(struct session *s, uint64_t seq, size_t n);
/*
 * How many of seq, seq+1, ... (n at most) are completed, counting from
 * seq and stopping at the first that is not. O(window + n).
 */
size_t session_done_prefix(const struct session *s, uint64_t seq, size_t n);
size_t session_count(void);

/* ---- mem.c ------------------------------------------------------------ */

/* Requests waiting in the memory queue (nonzero: msg_free calls mem_kick). */
extern size_t mem_nwait;

int mem_init(void);
void mem_fini(void);
/* May a send of bytes (already taken from the socket) go now? FIFO behind the waiters. */
int mem_admit_now(uint64_t bytes);
/*
 * Queue r (parked, holding bytes of payloads) until memory frees; then
 * op_admitted(r) runs from the loop. Its deadline timer keeps running.
 */
void mem_wait(struct req *r, uint64_t bytes);
/* Take r out of the queue (withdrawn, freed). */
void mem_leave(struct req *r);
/* Memory was freed: admit waiters from the loop. */
void mem_kick(void);
/* Message bytes counted against --max-memory. */
uint64_t mem_used(void);

/* ---- broker.c --------------------------------------------------------- */

/* The one broker of this process. */
struct broker {
    struct event_base *base;       /* the loop (the caller's) */
    struct options opt;            /* the command line */
    size_t max_frame;              /* WIRE_FRAME_MAX(opt.max_msg) */
    size_t max_output;             /* opt.max_output, at least two frames */
    size_t nconns;                 /* connections counting against --max-conns */
    uint64_t next_serial;          /* for conn.serial */
    TAILQ_HEAD(, conn) conns;      /* every connection not yet reaped */
    TAILQ_HEAD(, conn) reap;       /* connections to free on the next turn */
    struct event *reap_ev;         /* frees the reap list */
    int stopping;                  /* broker_shutdown ran */
    int own_loop;                  /* broker_run drives the loop: it flushes, no flush event */
    unsigned char instance[16];    /* UUID of this process, in HELLO replies: changes on restart */
};

extern struct broker broker;

/*
 * Set the broker up on base (which stays the caller's and must outlive
 * broker_stop) with a copy of *opt; a fresh instance UUID. Connections are
 * then added with conn_accept(fd, addr, addrlen, reject), fd any connected
 * stream socket (addr may be an AF_UNIX one). 0, or -1 if out of memory
 * (everything undone).
 */
int broker_start(struct event_base *base, const struct options *opt);
/*
 * Graceful stop: answer every blocked request with SHUTDOWN, flush and
 * close every connection; event_base_loopexit once the last is gone.
 */
void broker_shutdown(void);
/*
 * Free every connection (closing its socket), channel, message and event
 * broker_start made, at once. Harmless twice. broker_start may follow.
 */
void broker_stop(void);
/*
 * Run the loop until event_base_loopexit or _loopbreak: one libevent
 * iteration, then every reply it produced written (conn_flush_all), so
 * a turn costs one epoll_wait and at most one write per connection.
 */
void broker_run(void);
/* A connection was freed: when stopping and none is left, leave the loop. */
void broker_conn_gone(void);
/* Schedule the reap list to be freed. */
void broker_reap_soon(void);

#endif /* CHAND_DAEMON_H */
