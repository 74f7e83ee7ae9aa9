/*
 * chan.c: the public channel calls. Each checks its arguments and hands
 * the call to the channel's kind through ch->ops, so local and remote
 * channels share one handle type and one set of functions.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static int chan_bad_deadline(int64_t deadline)
{
    return deadline < -1;
}

int chan_send(chan_t *ch, const void *data, size_t len, int64_t deadline)
{
    if (!ch || (!data && len) || chan_bad_deadline(deadline)) {
        errno = EINVAL;
        return -1;
    }
    return ch->ops->send(ch, data, len, deadline);
}

int chan_recv(chan_t *ch, chan_msg_t *msg, int64_t deadline)
{
    if (!ch || !msg || chan_bad_deadline(deadline)) {
        errno = EINVAL;
        return -1;
    }
    return ch->ops->recv(ch, msg, deadline);
}

int chan_send_many(chan_t *ch, const struct iovec *msgs, int n, int64_t deadline)
{
    int i;

    if (!ch || n < 1 || !msgs || chan_bad_deadline(deadline)) {
        errno = EINVAL;
        return -1;
    }
    for (i = 0; i < n; i++) {
        if (!msgs[i].iov_base && msgs[i].iov_len) {
            errno = EINVAL;
            return -1;
        }
    }
    return ch->ops->send_many(ch, msgs, n, deadline);
}

int chan_recv_many(chan_t *ch, chan_msg_t *msgs, int n, int64_t deadline)
{
    if (!ch || n < 1 || !msgs || chan_bad_deadline(deadline)) {
        errno = EINVAL;
        return -1;
    }
    memset(msgs, 0, (size_t)n * sizeof *msgs);
    return ch->ops->recv_many(ch, msgs, n, deadline);
}

int chan_recv_lease(chan_t *ch, chan_msg_t *msg, int64_t lease_ms, int64_t deadline)
{
    if (!ch || !msg || lease_ms < 1 || chan_bad_deadline(deadline)) {
        errno = EINVAL;
        return -1;
    }
    return ch->ops->recv_lease(ch, msg, lease_ms, deadline);
}

static int chan_settle(chan_msg_t *msg, int ack)
{
    if (!msg || !(msg->priv_flags & MSG_LEASED)) {
        errno = EINVAL;
        return -1;
    }
    if (msg->priv_flags & MSG_REMOTE)
        return remote_lease_settle(msg, ack);
    return local_lease_settle(msg, ack);
}

int chan_ack(chan_msg_t *msg)
{
    return chan_settle(msg, 1);
}

int chan_nack(chan_msg_t *msg)
{
    return chan_settle(msg, 0);
}

void chan_msg_free(chan_msg_t *msg)
{
    if (!msg)
        return;
    if ((msg->priv_flags & (MSG_LEASED | MSG_REMOTE)) == MSG_LEASED)
        local_lease_release(msg);
    else
        blk_free(msg->priv_owner, MSG_CLS(msg->priv_flags));
    memset(msg, 0, sizeof *msg);
}

int chan_close(chan_t *ch)
{
    if (!ch) {
        errno = EINVAL;
        return -1;
    }
    return ch->ops->close(ch);
}

long chan_len(chan_t *ch)
{
    if (!ch) {
        errno = EINVAL;
        return -1;
    }
    return ch->ops->len(ch);
}

long chan_cap(chan_t *ch)
{
    if (!ch) {
        errno = EINVAL;
        return -1;
    }
    return ch->ops->cap(ch);
}

void chan_free(chan_t *ch)
{
    if (ch)
        ch->ops->free(ch);
}

/*
 * Every case well formed, and every live channel of one kind and one
 * select domain (all local, or remote of one client): a select that
 * spans two would need a two-phase commit across them, not done yet.
 */
int chan_select(struct chan_case *cases, int n, int64_t deadline)
{
    const struct chan_ops *ops = NULL;
    const void *domain = NULL;
    int i;

    if (n < 0 || (n > 0 && !cases) || chan_bad_deadline(deadline)) {
        errno = EINVAL;
        return -1;
    }
    for (i = 0; i < n; i++) {
        const struct chan_case *c = &cases[i];

        if (c->op == CHAN_SEND) {
            if (!c->data && c->len) {
                errno = EINVAL;
                return -1;
            }
        } else if (c->op == CHAN_RECV) {
            if (!c->msg) {
                errno = EINVAL;
                return -1;
            }
        } else {
            errno = EINVAL;
            return -1;
        }
    }
    for (i = 0; i < n; i++) {
        chan_t *ch = cases[i].ch;

        if (!ch)
            continue;
        if (!ops) {
            ops = ch->ops;
            domain = ops->select_domain(ch);
        } else if (ch->ops != ops || ops->select_domain(ch) != domain) {
            errno = ENOTSUP;
            return -1;
        }
    }
    /* Only nil cases (or none): any kind can wait out the deadline. */
    if (!ops)
        ops = &local_ops;
    return ops->select(cases, n, deadline);
}
