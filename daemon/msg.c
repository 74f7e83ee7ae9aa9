/*
 * msg.c: where message bytes live between the socket they arrive on and
 * the one they leave by. Small payloads are copied into the msg's own
 * allocation (sized to 16 bytes, so the broker's overhead per buffered
 * message stays under 64 bytes); large ones keep the input evbuffer's
 * chains, moved without copying and later written out by reference. Freed
 * msgs of each size are kept on a short free list, so a steady stream
 * allocates nothing.
 */
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "daemon.h"

#define MSG_GRAIN 16
#define MSG_NCLASS (MSG_INLINE_MAX / MSG_GRAIN + 1)
/* msgs kept for reuse, all sizes together; none under ASan, which must see every free */
#ifdef CHAN_SANITIZERS
#define MSG_CACHE_MAX 0u
#else
#define MSG_CACHE_MAX 4096u
#endif

static struct msg *msg_cache[MSG_NCLASS];  /* free lists linked through core.next */
static size_t msg_ncached;
static uint64_t live_bytes;                /* payload bytes of every live msg */
static uint64_t live_count;

/* Size class of an inline payload; an evbuffer-backed msg uses class 0. */
static size_t msg_class(size_t len)
{
    return (len + MSG_GRAIN - 1) / MSG_GRAIN;
}

static struct msg *msg_alloc(size_t cls, size_t len)
{
    struct msg *m = msg_cache[cls];

    if (m != NULL) {
        msg_cache[cls] = m->core.next ? msg_of(m->core.next) : NULL;
        msg_ncached--;
    } else {
        m = malloc(sizeof *m + cls * MSG_GRAIN);
        if (m == NULL)
            return NULL;
    }
    m->core = (struct core_msg){.len = len};
    m->buf = NULL;
    live_bytes += len;
    live_count++;
    return m;
}

struct msg *msg_take(struct evbuffer *src, size_t len)
{
    struct msg *m;

    if (len <= MSG_INLINE_MAX) {
        m = msg_alloc(msg_class(len), len);
        if (m == NULL)
            return NULL;
        if (len > 0 && evbuffer_remove(src, m->data, len) != (int)len) {
            msg_free(m);
            return NULL;
        }
        return m;
    }
    m = msg_alloc(0, len);
    if (m == NULL)
        return NULL;
    m->buf = evbuffer_new();
    if (m->buf == NULL || evbuffer_remove_buffer(src, m->buf, len) != (int)len) {
        msg_free(m);
        return NULL;
    }
    return m;
}

struct msg *msg_new(const void *data, size_t len)
{
    struct msg *m;

    if (len <= MSG_INLINE_MAX) {
        m = msg_alloc(msg_class(len), len);
        if (m != NULL && len > 0)
            memcpy(m->data, data, len);
        return m;
    }
    m = msg_alloc(0, len);
    if (m == NULL)
        return NULL;
    m->buf = evbuffer_new();
    if (m->buf == NULL || evbuffer_add(m->buf, data, len) < 0) {
        msg_free(m);
        return NULL;
    }
    return m;
}

void msg_free(struct msg *m)
{
    size_t cls;

    if (m == NULL)
        return;
    live_bytes -= m->core.len;
    live_count--;
    if (mem_nwait != 0)
        mem_kick();
    if (m->core.len > MSG_INLINE_MAX) {
        /*
         * An output that still holds this payload by reference keeps the
         * evbuffer (libevent counts references to it and its chains), so
         * freeing here is safe while a reply is being flushed.
         */
        if (m->buf != NULL)
            evbuffer_free(m->buf);
        cls = 0;
    } else {
        cls = msg_class(m->core.len);
    }
    if (msg_ncached + 1 > MSG_CACHE_MAX) {
        free(m);
        return;
    }
    m->core.next = msg_cache[cls] ? &msg_cache[cls]->core : NULL;
    msg_cache[cls] = m;
    msg_ncached++;
}

void msg_payload(const struct msg *m, struct wire_payload *pl)
{
    /* the whole struct: a field left as it was (ref) would change how the bytes are written */
    *pl = (struct wire_payload){.data = m->buf ? NULL : m->data, .len = m->core.len, .buf = m->buf};
}

uint64_t msg_live_bytes(void)
{
    return live_bytes;
}

uint64_t msg_live_count(void)
{
    return live_count;
}

void msg_cache_drain(void)
{
    for (size_t i = 0; i < MSG_NCLASS; i++) {
        while (msg_cache[i] != NULL) {
            struct msg *m = msg_cache[i];
            msg_cache[i] = m->core.next ? msg_of(m->core.next) : NULL;
            free(m);
        }
    }
    msg_ncached = 0;
}
