/*
 * session.c: a client across its reconnects (docs/protocol.md, "Sessions
 * and duplicate drop"). HELLO names a session UUID; the session remembers
 * which SEND seqs it completed, so a SEND resent after a lost reply is
 * answered without being delivered twice. At most one connection is
 * attached at a time: a newer HELLO with the same UUID takes over and the
 * older connection is closed. A session with no connection is kept for
 * --session-ttl seconds, oldest first on one list, so one timer serves all.
 *
 * The window is a ring of seqs in completion order, grown by doubling up to
 * SESSION_WINDOW. It is only searched for a SEND whose seq a previous
 * connection could have carried (seqs are never reused and only grow per
 * client), so the search, a linear scan, stays off the common path.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon.h"

/* Detached sessions kept at most, whatever their age: a flood of one-shot UUIDs stays bounded. */
#define SESSION_IDLE_MIN 1024

/*
 * A session. Owned by the table from creation until it expires (or the
 * broker stops); a connection only borrows it while attached.
 */
struct session {
    unsigned char id[16];            /* the UUID */
    struct session *hnext;           /* chain of sessions whose ids share a table key */
    struct conn *conn;               /* attached connection, or NULL */
    uint64_t *ring;                  /* completed seqs, cap slots, malloc'd, owned */
    uint32_t cap;                    /* slots in ring (0 until the first completion) */
    uint32_t n;                      /* seqs in ring */
    uint32_t head;                   /* slot of the oldest */
    uint64_t seen_hi;                /* highest seq any SEND of the session carried */
    int64_t idle_since_ms;           /* detached: when its last connection went (monotonic) */
    int taking_over;                 /* session_attach is closing its old connection: keep it */
    TAILQ_ENTRY(session) ilink;      /* the idle list, while detached */
};

static struct {
    struct map table;                /* key (from the id) -> val: first session of the chain */
    size_t n;                        /* sessions */
    size_t nidle;                    /* detached sessions */
    TAILQ_HEAD(, session) idle;      /* detached, oldest first */
    struct event *expire_ev;         /* frees the idle sessions whose ttl ran out */
} ses = {.idle = TAILQ_HEAD_INITIALIZER(ses.idle)};

static int64_t session_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A UUID is random enough that its halves folded together spread well; 0 is not a key. */
static uint64_t session_key(const unsigned char id[16])
{
    uint64_t a, b;

    memcpy(&a, id, 8);
    memcpy(&b, id + 8, 8);
    a ^= b;
    return a ? a : 1;
}

static void session_unlink(struct session *s)
{
    uint64_t key = session_key(s->id);
    struct map_ent *e = map_get(&ses.table, key);
    struct session **pp;

    DAEMON_ASSERT(e != NULL);
    pp = (struct session **)&e->val;
    while (*pp != s)
        pp = &(*pp)->hnext;
    *pp = s->hnext;
    if (e->val == NULL)
        map_del(&ses.table, key);
}

static void session_free(struct session *s)
{
    DAEMON_ASSERT(s->conn == NULL);
    session_unlink(s);
    TAILQ_REMOVE(&ses.idle, s, ilink);
    ses.nidle--;
    ses.n--;
    free(s->ring);
    free(s);
}

static void session_expire_arm(void)
{
    struct session *s = TAILQ_FIRST(&ses.idle);
    int64_t wait_ms;
    struct timeval tv;

    if (s == NULL || ses.expire_ev == NULL)
        return;
    wait_ms = s->idle_since_ms + broker.opt.session_ttl * 1000 - session_now_ms();
    if (wait_ms < 0)
        wait_ms = 0;
    tv.tv_sec = (time_t)(wait_ms / 1000);
    tv.tv_usec = (suseconds_t)(wait_ms % 1000) * 1000;
    evtimer_add(ses.expire_ev, &tv);
}

static void session_expire_cb(evutil_socket_t fd, short what, void *arg)
{
    int64_t cutoff = session_now_ms() - broker.opt.session_ttl * 1000;
    struct session *s;

    (void)fd, (void)what, (void)arg;
    while ((s = TAILQ_FIRST(&ses.idle)) != NULL && s->idle_since_ms <= cutoff)
        session_free(s);
    session_expire_arm();
}

int session_init(void)
{
    map_init(&ses.table);
    TAILQ_INIT(&ses.idle);
    ses.n = ses.nidle = 0;
    ses.expire_ev = evtimer_new(broker.base, session_expire_cb, NULL);
    return ses.expire_ev ? 0 : -1;
}

void session_fini(void)
{
    struct session *s;

    while ((s = TAILQ_FIRST(&ses.idle)) != NULL)
        session_free(s);
    DAEMON_ASSERT(ses.n == 0);
    map_free(&ses.table);
    if (ses.expire_ev != NULL)
        event_free(ses.expire_ev);
    ses.expire_ev = NULL;
}

static struct session *session_find(const unsigned char id[16])
{
    struct map_ent *e = map_get(&ses.table, session_key(id));

    for (struct session *s = e ? e->val : NULL; s != NULL; s = s->hnext)
        if (memcmp(s->id, id, 16) == 0)
            return s;
    return NULL;
}

static struct session *session_new(const unsigned char id[16])
{
    uint64_t key = session_key(id);
    struct session *s = calloc(1, sizeof *s);
    struct map_ent *e;

    if (s == NULL)
        return NULL;
    memcpy(s->id, id, 16);
    e = map_get(&ses.table, key);
    if (e != NULL) {
        s->hnext = e->val;
        e->val = s;
    } else if (map_put(&ses.table, key, s, NULL) < 0) {
        free(s);
        return NULL;
    }
    ses.n++;
    /* Born detached: session_attach takes it off the idle list at once. */
    TAILQ_INSERT_TAIL(&ses.idle, s, ilink);
    ses.nidle++;
    return s;
}

int session_attach(struct conn *c, const unsigned char id[16], int *resumed)
{
    struct session *s = session_find(id);

    *resumed = s != NULL;
    if (s == NULL && (s = session_new(id)) == NULL)
        return -1;
    if (s->conn != NULL) {
        log_msg(LL_INFO, "conn %" PRIu64 ": session taken over by conn %" PRIu64 "; closing",
                s->conn->serial, c->serial);
        /* Its detach records what it completed and leaves s detached (but kept). */
        s->taking_over = 1;
        conn_close_flush(s->conn);
        s->taking_over = 0;
        DAEMON_ASSERT(s->conn == NULL);
    }
    TAILQ_REMOVE(&ses.idle, s, ilink);
    ses.nidle--;
    s->conn = c;
    c->sess = s;
    c->resume_hi = s->seen_hi;
    return 0;
}

void session_detach(struct conn *c)
{
    struct session *s = c->sess;
    size_t keep = broker.opt.max_conns > SESSION_IDLE_MIN ? broker.opt.max_conns
                                                           : SESSION_IDLE_MIN;

    if (s == NULL)
        return;
    DAEMON_ASSERT(s->conn == c);
    s->conn = NULL;
    c->sess = NULL;
    s->idle_since_ms = session_now_ms();
    TAILQ_INSERT_TAIL(&ses.idle, s, ilink);
    ses.nidle++;
    if ((broker.opt.session_ttl == 0 && !s->taking_over) || ses.nidle > keep) {
        struct session *old = TAILQ_FIRST(&ses.idle);
        if (!old->taking_over) {
            session_free(old);
            return;
        }
    }
    if (TAILQ_FIRST(&ses.idle) == s)
        session_expire_arm();
}

void session_complete(struct session *s, uint64_t seq)
{
    if (s->n == s->cap && s->cap < SESSION_WINDOW) {
        uint32_t cap = s->cap ? s->cap * 2 : 8;
        uint64_t *ring = malloc(cap * sizeof *ring);

        if (ring != NULL) {
            /* Unroll into the new ring, oldest first. */
            for (uint32_t i = 0; i < s->n; i++)
                ring[i] = s->ring[(s->head + i) % s->cap];
            free(s->ring);
            s->ring = ring;
            s->cap = cap;
            s->head = 0;
        } else if (s->cap == 0) {
            /* Nowhere to write it down: a resend of this seq would go again. */
            log_msg(LL_WARN, "out of memory recording a session's seq");
            return;
        }
    }
    if (s->n == s->cap) {
        /* Full (or could not grow): the oldest makes room. */
        s->ring[s->head] = seq;
        s->head = (s->head + 1) % s->cap;
        return;
    }
    s->ring[(s->head + s->n) % s->cap] = seq;
    s->n++;
}

void session_seen(struct session *s, uint64_t seq, size_t n)
{
    uint64_t last = seq + n - 1;

    if (last > s->seen_hi)
        s->seen_hi = last;
}

size_t session_done_prefix(const struct session *s, uint64_t seq, size_t n)
{
    unsigned char small[64], *seen = small;
    size_t k = 0;

    if (n > sizeof small && (seen = calloc(n, 1)) == NULL) {
        /* Cannot mark them all: look for the first alone, it decides most cases. */
        n = 1;
        seen = small;
    }
    if (seen == small)
        memset(small, 0, sizeof small);
    for (uint32_t i = 0; i < s->n; i++) {
        uint64_t v = s->ring[(s->head + i) % s->cap];
        if (v >= seq && v - seq < n)
            seen[v - seq] = 1;
    }
    while (k < n && seen[k])
        k++;
    if (seen != small)
        free(seen);
    return k;
}

size_t session_count(void)
{
    return ses.n;
}
