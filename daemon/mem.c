/*
 * mem.c: the --max-memory gate. Every message byte the broker holds counts
 * (msg_live_bytes: buffered, unacked, riding in a blocked sender), except
 * the payloads of requests that wait here, which are not in the channel
 * world yet. A SEND (or a SELECT with send cases) that would take the
 * count over the limit waits like a send on a full channel: AGAIN with
 * deadline 0, TIMEDOUT when its deadline passes, CANCELED by CANCEL; it is
 * admitted in arrival order as memory frees. When nothing at all is held,
 * one request is admitted whatever its size, so a limit under the largest
 * message cannot wedge the broker.
 *
 * What a waiting request holds is bounded too: a connection whose waiting
 * requests hold a frame's worth of bytes is not read from until they are
 * admitted (its own TCP window then pushes back on its client).
 */
#include "daemon.h"

size_t mem_nwait;

static TAILQ_HEAD(mem_queue, req) memq = TAILQ_HEAD_INITIALIZER(memq);
static uint64_t wait_bytes;           /* payload bytes of the requests in memq */
static struct event *admit_ev;        /* runs mem_admit_cb */

uint64_t mem_used(void)
{
    return msg_live_bytes() - wait_bytes;
}

/* Would bytes more (not yet counted in used) fit? */
static int mem_fits(uint64_t used, uint64_t bytes)
{
    uint64_t max = broker.opt.max_memory;

    return max == 0 || used == 0 || (used <= max && bytes <= max - used);
}

int mem_admit_now(uint64_t bytes)
{
    if (broker.opt.max_memory == 0)
        return 1;
    if (!TAILQ_EMPTY(&memq))
        return 0;
    /* The request's own payloads are live already; they are the bytes asking to come in. */
    return mem_fits(mem_used() - bytes, bytes);
}

void mem_wait(struct req *r, uint64_t bytes)
{
    struct conn *c = r->conn;

    DAEMON_ASSERT(!r->memwait);
    r->memwait = 1;
    r->membytes = bytes;
    TAILQ_INSERT_TAIL(&memq, r, mlink);
    mem_nwait++;
    wait_bytes += bytes;
    c->mem_bytes += bytes;
    if (c->mem_bytes >= broker.max_frame)
        conn_pause_read(c);
}

void mem_leave(struct req *r)
{
    struct conn *c = r->conn;

    if (!r->memwait)
        return;
    TAILQ_REMOVE(&memq, r, mlink);
    r->memwait = 0;
    mem_nwait--;
    wait_bytes -= r->membytes;
    c->mem_bytes -= r->membytes;
    r->membytes = 0;
    if (c->read_paused && c->mem_bytes < broker.max_frame)
        conn_resume_read(c);
    /* The next in line may fit where this one did not. */
    if (!TAILQ_EMPTY(&memq))
        mem_kick();
}

static void mem_admit_cb(evutil_socket_t fd, short what, void *arg)
{
    struct req *r;

    (void)fd, (void)what, (void)arg;
    while ((r = TAILQ_FIRST(&memq)) != NULL) {
        uint64_t bytes = r->membytes;
        if (!mem_fits(mem_used(), bytes))
            break;
        mem_leave(r);
        op_admitted(r);
    }
    req_drain();
}

void mem_kick(void)
{
    if (admit_ev != NULL)
        event_active(admit_ev, EV_TIMEOUT, 0);
}

int mem_init(void)
{
    TAILQ_INIT(&memq);
    mem_nwait = 0;
    wait_bytes = 0;
    admit_ev = event_new(broker.base, -1, 0, mem_admit_cb, NULL);
    return admit_ev ? 0 : -1;
}

void mem_fini(void)
{
    DAEMON_ASSERT(TAILQ_EMPTY(&memq));
    if (admit_ev != NULL)
        event_free(admit_ev);
    admit_ev = NULL;
}
