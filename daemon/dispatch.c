/*
 * dispatch.c: one decoded frame to the handler of its request, after the
 * checks that keep the stream trustworthy (HELLO first and once, a request
 * for every non-zero id, no reuse of a pending id, valid channel names).
 * Those failures are stream-level: conn_fail answers PROTOCOL and closes.
 * The requests that never block are handled here; SEND, RECV and SELECT
 * go to op.c.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"

#define ST(x) CHANWIRE__STATUS__STATUS_##x

/* LIST answers with at most this many header bytes (the frame limit holds the rest). */
#define LIST_BUDGET (WIRE_HDR_MAX - 4096)

static void dispatch_ok(struct conn *c, uint64_t id)
{
    conn_status(c, id, ST(OK), "");
}

/* A channel name from the wire: bad ones are a client that skipped its own check. */
static int dispatch_name(struct conn *c, uint64_t id, const char *name, const char *what)
{
    if (!wire_name_ok(name, strlen(name))) {
        conn_fail(c, id, "%s: bad channel name (1..255 bytes of printable UTF-8, no spaces)", what);
        return 0;
    }
    return 1;
}

/* Copy s into dst for logs, printable ASCII only. */
static void dispatch_clean(char *dst, size_t size, const char *s)
{
    size_t i = 0;

    for (; s[i] != '\0' && i + 1 < size; i++)
        dst[i] = s[i] > 0x20 && s[i] < 0x7f ? s[i] : '?';
    dst[i] = '\0';
}

/*
 * Does the HELLO token equal --auth-token-file's? Every byte of the wanted
 * token is looked at whatever the given one holds, with no branch on the
 * bytes, so the time taken says nothing about how much of it matched.
 */
static int dispatch_token_ok(const char *given)
{
    const unsigned char *want = (const unsigned char *)broker.opt.token;
    size_t wlen = broker.opt.token_len, glen = strlen(given);
    unsigned diff = (unsigned)(wlen != glen);

    for (size_t i = 0; i < wlen; i++) {
        /* Past the end of given, compare with its NUL: the length check has failed already. */
        size_t mask = (size_t)0 - (size_t)(i < glen);
        diff |= want[i] ^ (unsigned char)given[i & mask];
    }
    return diff == 0;
}

static void dispatch_hello(struct conn *c, Chanwire__ClientFrame *f)
{
    const Chanwire__Hello *h = f->hello;
    Chanwire__ServerFrame sf = CHANWIRE__SERVER_FRAME__INIT;
    Chanwire__HelloReply hr = CHANWIRE__HELLO_REPLY__INIT;
    static const unsigned char none[16];
    char server[64];
    int resumed = 0;

    if (h->version != WIRE_VERSION) {
        conn_fail(c, f->id, "protocol version %" PRIu32 " not supported (this server speaks %d)",
                  h->version, WIRE_VERSION);
        return;
    }
    if (h->session.len != 0 && h->session.len != sizeof c->session) {
        conn_fail(c, f->id, "session must be %zu bytes, got %zu", sizeof c->session,
                  h->session.len);
        return;
    }
    dispatch_clean(c->name, sizeof c->name, h->client_name);
    if (broker.opt.token != NULL && !dispatch_token_ok(h->token)) {
        log_msg(LL_WARN, "conn %" PRIu64 " (%s): HELLO from '%s' %s auth token; closing",
                c->serial, c->peer, c->name, h->token[0] ? "with a wrong" : "without an");
        conn_status(c, f->id, CHANWIRE__STATUS__STATUS_UNAUTHORIZED,
                    h->token[0] ? "wrong auth token" : "this broker requires an auth token");
        conn_close_flush(c);
        return;
    }
    if (h->session.len != 0)
        memcpy(c->session, h->session.data, sizeof c->session);
    if (memcmp(c->session, none, sizeof none) != 0 &&
        session_attach(c, c->session, &resumed) < 0) {
        log_msg(LL_WARN, "conn %" PRIu64 ": out of memory creating its session", c->serial);
        conn_status(c, f->id, CHANWIRE__STATUS__STATUS_NOMEM, "out of memory creating the session");
        conn_close_flush(c);
        return;
    }
    c->state = CONN_READY;
    log_msg(LL_INFO, "conn %" PRIu64 " (%s): hello from '%s'%s", c->serial, c->peer, c->name,
            resumed ? ", session resumed" : "");

    snprintf(server, sizeof server, "chand %s", PACKAGE_VERSION);
    hr.version = WIRE_VERSION;
    hr.session = h->session;
    hr.max_msg = broker.opt.max_msg;
    hr.server = server;
    hr.instance.data = broker.instance;
    hr.instance.len = sizeof broker.instance;
    hr.resumed = resumed;
    sf.id = f->id;
    sf.body_case = CHANWIRE__SERVER_FRAME__BODY_HELLO;
    sf.hello = &hr;
    conn_reply(c, &sf, NULL, 0);
}

static void dispatch_open(struct conn *c, Chanwire__ClientFrame *f)
{
    const Chanwire__Open *o = f->open;
    Chanwire__ServerFrame sf = CHANWIRE__SERVER_FRAME__INIT;
    Chanwire__OpenReply orep = CHANWIRE__OPEN_REPLY__INIT;
    size_t len = strlen(o->name);
    struct chan *ch;
    int created = 0;

    if (!dispatch_name(c, f->id, o->name, "OPEN"))
        return;
    if (o->cap < -1) {
        conn_status(c, f->id, ST(INVALID), "capacity must be >= 0, or -1 to attach");
        return;
    }
    ch = registry_by_name(o->name, len);
    if (ch == NULL) {
        if (o->cap == -1) {
            conn_status(c, f->id, ST(NOENT), "no such channel");
            return;
        }
        if (broker.opt.max_channels != 0 && registry_count() >= broker.opt.max_channels) {
            char text[96];
            snprintf(text, sizeof text, "channel limit of %zu reached (--max-channels)",
                     broker.opt.max_channels);
            conn_status(c, f->id, ST(NOMEM), text);
            return;
        }
        ch = registry_create(o->name, len, (size_t)o->cap);
        if (ch == NULL) {
            log_msg(LL_WARN, "out of memory creating channel '%s'", o->name);
            conn_status(c, f->id, ST(NOMEM), "out of memory creating the channel");
            return;
        }
        created = 1;
        log_msg(LL_INFO, "channel '%s' created, cap %" PRId64 ", handle %" PRIu64,
                ch->name, o->cap, ch->handle);
    } else if (o->cap != -1 && (size_t)o->cap != ch->core.cap) {
        char text[96];
        snprintf(text, sizeof text, "channel exists with capacity %zu", ch->core.cap);
        conn_status(c, f->id, ST(EXIST), text);
        return;
    }
    orep.chan = ch->handle;
    orep.incarnation.data = ch->incarnation;
    orep.incarnation.len = sizeof ch->incarnation;
    orep.cap = (int64_t)ch->core.cap;
    orep.created = created;
    sf.id = f->id;
    sf.body_case = CHANWIRE__SERVER_FRAME__BODY_OPEN;
    sf.open = &orep;
    conn_reply(c, &sf, NULL, 0);
}

static void dispatch_close(struct conn *c, Chanwire__ClientFrame *f)
{
    struct chan *ch = registry_by_handle(f->close->chan);

    if (ch == NULL) {
        conn_status(c, f->id, ST(STALE), "unknown or deleted channel handle");
        return;
    }
    /* Waiters complete through req_done; their replies go out from the drain. */
    if (core_close(&ch->core) == EPIPE) {
        conn_status(c, f->id, ST(CLOSED), "channel already closed");
        return;
    }
    log_msg(LL_DEBUG, "channel '%s' closed", ch->name);
    registry_closed(ch);
    dispatch_ok(c, f->id);
}

static void dispatch_delete(struct conn *c, Chanwire__ClientFrame *f)
{
    const char *name = f->delete_->name;
    struct chan *ch;

    if (!dispatch_name(c, f->id, name, "DELETE"))
        return;
    ch = registry_by_name(name, strlen(name));
    if (ch == NULL) {
        conn_status(c, f->id, ST(NOENT), "no such channel");
        return;
    }
    log_msg(LL_INFO, "channel '%s' deleted (%zu buffered, %zu unacked)",
            ch->name, ch->core.count, ch->core.unacked);
    registry_delete(ch);
    dispatch_ok(c, f->id);
}

static void dispatch_ack(struct conn *c, Chanwire__ClientFrame *f)
{
    const Chanwire__Tags *t = f->ack;
    size_t bad = 0;

    for (size_t i = 0; i < t->n_tags; i++)
        bad += delivery_ack(&c->dl, t->tags[i]) < 0;
    if (bad > 0) {
        conn_status(c, f->id, ST(INVALID), "unknown delivery tag");
        return;
    }
    dispatch_ok(c, f->id);
}

static void dispatch_nack(struct conn *c, Chanwire__ClientFrame *f)
{
    const Chanwire__Tags *t = f->nack;

    if (delivery_nack(&c->dl, t->tags, t->n_tags) < 0) {
        conn_status(c, f->id, ST(INVALID), "unknown delivery tag");
        return;
    }
    dispatch_ok(c, f->id);
}

static void dispatch_cancel(struct conn *c, Chanwire__ClientFrame *f)
{
    struct req *r = req_find(c, f->cancel->target);

    /* Unknown or finished: a no-op, as the protocol says. */
    if (r != NULL)
        req_withdraw(r, ECANCELED);
    dispatch_ok(c, f->id);
}

static void dispatch_info(const struct chan *ch, Chanwire__ChanInfo *ci)
{
    chanwire__chan_info__init(ci);
    ci->name = (char *)ch->name;
    ci->incarnation.data = (uint8_t *)ch->incarnation;
    ci->incarnation.len = sizeof ch->incarnation;
    ci->cap = (int64_t)ch->core.cap;
    ci->len = ch->core.count;
    ci->unacked = ch->core.unacked;
    ci->senders = (uint32_t)ch->core.sendq.n;
    ci->receivers = (uint32_t)ch->core.recvq.n;
    ci->closed = ch->core.closed != 0;
    ci->bytes = ch->core.bytes;
}

static void dispatch_stat(struct conn *c, Chanwire__ClientFrame *f)
{
    const char *name = f->stat->name;
    Chanwire__ServerFrame sf = CHANWIRE__SERVER_FRAME__INIT;
    Chanwire__ChanInfo ci;
    struct chan *ch;

    if (!dispatch_name(c, f->id, name, "STAT"))
        return;
    ch = registry_by_name(name, strlen(name));
    if (ch == NULL) {
        conn_status(c, f->id, ST(NOENT), "no such channel");
        return;
    }
    dispatch_info(ch, &ci);
    sf.id = f->id;
    sf.body_case = CHANWIRE__SERVER_FRAME__BODY_STAT;
    sf.stat = &ci;
    conn_reply(c, &sf, NULL, 0);
}

static void dispatch_list(struct conn *c, Chanwire__ClientFrame *f)
{
    const char *prefix = f->list->name;
    size_t plen = strlen(prefix), n = 0, k = 0, size = 0;
    Chanwire__ServerFrame sf = CHANWIRE__SERVER_FRAME__INIT;
    Chanwire__ListReply lr = CHANWIRE__LIST_REPLY__INIT;
    Chanwire__ChanInfo *infos = NULL;
    Chanwire__ChanInfo **ptrs = NULL;
    struct chan **chans = NULL;
    char text[96];

    if (plen > 0 && !dispatch_name(c, f->id, prefix, "LIST"))
        return;
    if (registry_list(prefix, plen, &chans, &n) < 0)
        goto nomem;
    infos = malloc((n ? n : 1) * sizeof *infos);
    ptrs = malloc((n ? n : 1) * sizeof *ptrs);
    if (infos == NULL || ptrs == NULL)
        goto nomem;
    /* Stop before the header limit; the client learns from the text that more exist. */
    for (; k < n; k++) {
        dispatch_info(chans[k], &infos[k]);
        size_t one = protobuf_c_message_get_packed_size(&infos[k].base) + 8;
        if (size + one > LIST_BUDGET)
            break;
        size += one;
        ptrs[k] = &infos[k];
    }
    lr.n_chans = k;
    lr.chans = ptrs;
    sf.id = f->id;
    sf.body_case = CHANWIRE__SERVER_FRAME__BODY_LIST;
    sf.list = &lr;
    if (k < n) {
        snprintf(text, sizeof text, "list truncated: %zu of %zu channels", k, n);
        sf.error = text;
    }
    conn_reply(c, &sf, NULL, 0);
    goto out;
nomem:
    conn_status(c, f->id, ST(NOMEM), "out of memory listing channels");
out:
    free(ptrs);
    free(infos);
    free(chans);
}

static void dispatch_ping(struct conn *c, Chanwire__ClientFrame *f)
{
    Chanwire__ServerFrame sf = CHANWIRE__SERVER_FRAME__INIT;
    Chanwire__Ping p = CHANWIRE__PING__INIT;

    p.data = f->ping->data;
    sf.id = f->id;
    sf.body_case = CHANWIRE__SERVER_FRAME__BODY_PING;
    sf.ping = &p;
    conn_reply(c, &sf, NULL, 0);
}

void dispatch_frame(struct conn *c, Chanwire__ClientFrame *f)
{
    if (c->state == CONN_HELLO) {
        if (f->body_case != CHANWIRE__CLIENT_FRAME__BODY_HELLO) {
            conn_fail(c, f->id, "request before HELLO");
            return;
        }
    } else if (f->body_case == CHANWIRE__CLIENT_FRAME__BODY_HELLO) {
        conn_fail(c, f->id, "second HELLO");
        return;
    }
    if (f->id == 0 && f->body_case != CHANWIRE__CLIENT_FRAME__BODY__NOT_SET) {
        conn_fail(c, 0, "request with id 0 (0 is for frames that only carry acks)");
        return;
    }
    if (f->id != 0 && f->body_case == CHANWIRE__CLIENT_FRAME__BODY__NOT_SET) {
        conn_fail(c, f->id, "frame carries no request, or one this server does not know");
        return;
    }
    /* c->reqs.n counts the blocked requests: the per-connection bound on them goes here. */
    if (f->id != 0 && req_find(c, f->id) != NULL) {
        conn_fail(c, f->id, "request id %" PRIu64 " is still pending", f->id);
        return;
    }
    /* Piggybacked acks first: the capacity they free serves this very request. */
    for (size_t i = 0; i < f->n_acks; i++)
        if (delivery_ack(&c->dl, f->acks[i]) < 0)
            log_msg(LL_DEBUG, "conn %" PRIu64 ": ack of unknown tag %" PRIu64, c->serial,
                    f->acks[i]);
    if (log_enabled(LL_DEBUG) && f->id != 0)
        log_msg(LL_DEBUG, "conn %" PRIu64 ": request %" PRIu64 " kind %d, %zu payloads",
                c->serial, f->id, (int)f->body_case, c->npl);

    switch (f->body_case) {
    case CHANWIRE__CLIENT_FRAME__BODY__NOT_SET:
        break;
    case CHANWIRE__CLIENT_FRAME__BODY_HELLO:
        dispatch_hello(c, f);
        break;
    case CHANWIRE__CLIENT_FRAME__BODY_OPEN:
        dispatch_open(c, f);
        break;
    case CHANWIRE__CLIENT_FRAME__BODY_SEND:
        op_send(c, f);
        break;
    case CHANWIRE__CLIENT_FRAME__BODY_RECV:
        op_recv(c, f);
        break;
    case CHANWIRE__CLIENT_FRAME__BODY_SELECT:
        op_select(c, f);
        break;
    case CHANWIRE__CLIENT_FRAME__BODY_CLOSE:
        dispatch_close(c, f);
        break;
    case CHANWIRE__CLIENT_FRAME__BODY_DELETE:
        dispatch_delete(c, f);
        break;
    case CHANWIRE__CLIENT_FRAME__BODY_ACK:
        dispatch_ack(c, f);
        break;
    case CHANWIRE__CLIENT_FRAME__BODY_NACK:
        dispatch_nack(c, f);
        break;
    case CHANWIRE__CLIENT_FRAME__BODY_CANCEL:
        dispatch_cancel(c, f);
        break;
    case CHANWIRE__CLIENT_FRAME__BODY_STAT:
        dispatch_stat(c, f);
        break;
    case CHANWIRE__CLIENT_FRAME__BODY_LIST:
        dispatch_list(c, f);
        break;
    case CHANWIRE__CLIENT_FRAME__BODY_PING:
        dispatch_ping(c, f);
        break;
    default:
        conn_fail(c, f->id, "unknown request kind %d", (int)f->body_case);
        break;
    }
}
