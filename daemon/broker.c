/*
 * broker.c: the broker without the process around it. broker_start sets up
 * every component on a loop the caller owns; connections come in through
 * conn_accept on any stream socket (TCP from main.c's listener, one end of
 * a socketpair from a test or fuzz harness); broker_stop frees it all, so
 * one process can start and stop brokers many times.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uuid/uuid.h>

#include "daemon.h"

struct broker broker;

_Noreturn void daemon_assert_fail(const char *what, const char *file, int line)
{
    fprintf(stderr, "%s:%d: assertion failed: %s\n", file, line, what);
    abort();
}

static void broker_reap_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c;

    (void)fd, (void)what, (void)arg;
    while ((c = TAILQ_FIRST(&broker.reap)) != NULL) {
        TAILQ_REMOVE(&broker.reap, c, link);
        conn_free(c);
    }
}

void broker_reap_soon(void)
{
    event_active(broker.reap_ev, EV_TIMEOUT, 0);
}

void broker_conn_gone(void)
{
    if (broker.stopping && TAILQ_EMPTY(&broker.conns))
        event_base_loopexit(broker.base, NULL);
}

void broker_run(void)
{
    struct event_base *base = broker.base;

    broker.own_loop = 1;
    for (;;) {
        int rc = event_base_loop(base, EVLOOP_ONCE);
        conn_flush_all();
        if (rc != 0 || event_base_got_exit(base) || event_base_got_break(base))
            break;
    }
    broker.own_loop = 0;
}

int broker_start(struct event_base *base, const struct options *opt)
{
    memset(&broker, 0, sizeof broker);
    broker.base = base;
    broker.opt = *opt;
    broker.max_frame = WIRE_FRAME_MAX(broker.opt.max_msg);
    /* A reader must be able to have a reply in the socket and the next one queued. */
    broker.max_output = broker.opt.max_output > 2 * broker.max_frame ? broker.opt.max_output
                                                                     : 2 * broker.max_frame;
    uuid_generate(broker.instance);
    TAILQ_INIT(&broker.conns);
    TAILQ_INIT(&broker.reap);
    if (registry_init() < 0 || req_init(base) < 0 || conn_init() < 0 || session_init() < 0 ||
        mem_init() < 0)
        goto fail;
    broker.reap_ev = event_new(base, -1, 0, broker_reap_cb, NULL);
    if (broker.reap_ev == NULL)
        goto fail;
    return 0;
fail:
    broker_stop();
    return -1;
}

void broker_shutdown(void)
{
    struct conn *c, *next;

    if (broker.stopping)
        return;
    broker.stopping = 1;
    /* Answer what completed already, then everything still waiting. */
    req_drain();
    TAILQ_FOREACH(c, &broker.conns, link)
        req_shutdown_all(c);
    for (c = TAILQ_FIRST(&broker.conns); c != NULL; c = next) {
        next = TAILQ_NEXT(c, link);
        conn_close_flush(c);
    }
    req_drain();
    broker_conn_gone();
}

void broker_stop(void)
{
    conn_teardown();
    registry_teardown();
    session_fini();
    mem_fini();
    req_fini();
    conn_fini();
    msg_cache_drain();
    if (broker.reap_ev != NULL)
        event_free(broker.reap_ev);
    broker.reap_ev = NULL;
    broker.base = NULL;
}
