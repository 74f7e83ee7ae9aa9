/*
 * internal.h: libchanclient's private table of contents. Nothing here is
 * installed or exported; the public API is chan.h.
 *
 * Layers: coro (stacks, context switch) -> sched (run queue, parking,
 * libevent loop) -> chan (one handle type dispatching to local or remote
 * channels through struct chan_ops) -> local (core/) and remote (wire).
 */
#ifndef CHAN_INTERNAL_H
#define CHAN_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "chan.h"

struct event_base;
struct coro;
struct sched_joiner;

/* ---- ctx_x86_64.S, ctx_aarch64.S, ctx_ucontext.c: register switch --- */

#ifdef CHAN_CTX_UCONTEXT
#include <ucontext.h>
struct ctx {
    ucontext_t uc;               /* registers and signal mask while switched out */
    void (*fn)(void *);          /* first function, for ctx_make's trampoline */
    void *arg;
};
#else
struct ctx {
    void *sp;                    /* stack pointer; the saved registers sit there */
};
#endif

/*
 * Prepare c so that the first ctx_switch to it calls fn(arg) on the stack
 * [lo, lo + size). fn must never return: it ends by switching away for good.
 */
void ctx_make(struct ctx *c, void *lo, size_t size, void (*fn)(void *), void *arg);

/* Save the running registers into from and resume to. */
void ctx_switch(struct ctx *from, struct ctx *to);

/* ---- coro.c: coroutines, their stacks and the guard handler ----------- */

enum coro_state {
    CORO_RUNNING = 0,  /* executing on its thread (exactly one per thread) */
    CORO_RUNNABLE,     /* in the run queue */
    CORO_PARKED,       /* in sched_park, waiting for a wake, its deadline or a cancel */
    CORO_DONE,         /* its function returned; the stack goes at the next switch */
    CORO_STATE_MAX
};

#define CORO_STACK_DEFAULT (256u * 1024)   /* bytes, chan_go's stacks */
#define CORO_STACK_MIN (64u * 1024)        /* libevent callbacks run on any stack */
#define CORO_STACK_MAX ((size_t)1 << 30)   /* chan_go_stack's limit */
#define CORO_GUARD (64u * 1024)            /* inaccessible bytes below each stack */

/*
 * A coroutine. Ownership: a spawned coroutine's struct sits at the top of
 * its own stack mapping and is freed with it by coro_free (called by the
 * scheduler once the coroutine has finished and been switched away from);
 * a thread's main coroutine is embedded in that thread's scheduler.
 */
struct coro {
    struct ctx ctx;               /* registers while switched out */
    int id;                       /* chan_go's return value; 1 is the thread's main */
    int state;                    /* enum coro_state */
    const char *what;             /* what it waits for ("recv", "sleep"...), for dumps */
    int park_result;              /* what sched_park returns: 0, ETIMEDOUT, ECANCELED */
    unsigned char cancelled;      /* chan_cancel was called on it */
    unsigned char parked;         /* inside sched_park, until that returns */
    unsigned char cancellable;    /* the current park may end with ECANCELED */
    unsigned char woken;          /* sched_wake was called during the current park */
    int64_t deadline;             /* current park's deadline, chan_now() ms; -1 none */
    size_t heap_idx;              /* slot in the scheduler's deadline heap, or SIZE_MAX */
    struct coro *next;            /* run queue link */
    struct coro *hnext;           /* id table chain */
    struct sched_joiner *joiners; /* coroutines waiting in chan_join for this one */
    void (*withdraw)(void *arg, int status); /* sched_park_withdraw's hook, or NULL */
    void *withdraw_arg;           /* and its argument */
    void (*fn)(void *);           /* the coroutine's body */
    void *arg;                    /* and its argument */
    char *map;                    /* mapping: CORO_GUARD bytes, then the stack; NULL for main */
    size_t map_size;              /* bytes of map */
    size_t stack_size;            /* usable stack bytes, as asked (rounded to pages) */
    unsigned vg_stack;            /* valgrind's id of the stack (0 outside valgrind) */
#ifdef CHAN_SANITIZERS
    void *asan_fake;              /* ASan's fake stack while switched out */
    const void *asan_bottom;      /* the stack as ASan knows it */
    size_t asan_size;
    const char *asan_low;         /* lowest live frame when it finished */
#endif
};

/*
 * A coroutine with a stack of stack_size bytes (CORO_STACK_MIN at least)
 * whose first switch-in runs entry(c) on that stack. Returns NULL with
 * errno ENOMEM. The caller owns it and gives it back with coro_free.
 */
struct coro *coro_new(size_t stack_size, void (*entry)(void *));

/* Free a coroutine made by coro_new that is not running; NULL is a no-op. */
void coro_free(struct coro *c);

/*
 * Switch from the running coroutine to another of the same thread. from
 * may be CORO_DONE: it is then never resumed.
 */
void coro_switch(struct coro *from, struct coro *to);

/* First call of a coroutine's entry, before anything else. */
void coro_started(struct coro *c);

/*
 * The thread starts running coroutines: main is its own stack. Installs
 * the guard-page handler (once per process) and a signal stack for this
 * thread. Returns 0, or -1 with errno ENOMEM.
 */
int coro_thread_init(struct coro *main);

/* The thread is exiting from its main coroutine: free its stack cache. */
void coro_thread_exit(void);

/* ---- sched.c: the per-thread scheduler ------------------------------ */

/*
 * The running coroutine. The thread's main is coroutine 1, created on
 * first use of any chan_ call.
 */
struct coro *sched_self(void);

/*
 * Park the running coroutine until sched_wake() names it, its deadline
 * (absolute chan_now() ms, -1 never) passes, or, if cancellable, it is
 * cancelled. Returns 0 (woken), ETIMEDOUT, or ECANCELED. While every
 * coroutine is parked the thread sleeps in the libevent loop; libevent
 * callbacks run on whatever stack is current and must never park.
 * A coroutine already cancelled gets ECANCELED at once when cancellable.
 */
int sched_park(int64_t deadline, int cancellable);

/*
 * Make c runnable again (it returns 0 from sched_park). Safe from libevent
 * callbacks and from core done callbacks. Waking a coroutine that is not
 * parked is a programmer error (asserted).
 */
void sched_wake(struct coro *c);

/* Has c been chan_cancel'ed? */
int sched_cancelled(const struct coro *c);

/*
 * The thread's libevent base (created with the scheduler), or NULL with
 * errno ENOMEM if the scheduler could not be created.
 */
struct event_base *sched_base(void);

/*
 * Notes on the functions above:
 *
 * A coroutine counts as parked from the entry of sched_park until it
 * returns. Its deadline or a cancel may already have made it runnable
 * with ETIMEDOUT/ECANCELED before it got to run again; a sched_wake in
 * that window still counts and turns the result into 0 (the completion
 * wins, nothing has seen the timeout yet). So after a non-zero result no
 * completion callback for that park can still be pending in the
 * scheduler; the caller only has to withdraw its registration (core_cancel,
 * a CANCEL request). Two wakes in one park are asserted.
 *
 * Deadlines and chan_cancel run sched_park_withdraw's hooks on the spot,
 * so chan_cancel is for coroutine code only, never for a libevent or core
 * callback.
 *
 * If every coroutine of the thread is parked, nothing is runnable and no
 * libevent event (nor a deadline) is pending, nothing can ever wake them:
 * the process aborts with "chan: deadlock", as Go does.
 */

/*
 * As sched_park, for an operation that can be withdrawn synchronously (a
 * local channel's waiter): whenever the result is ETIMEDOUT or ECANCELED,
 * withdraw(arg, result) has already been called, at the moment the
 * deadline passed or chan_cancel was called and before any other coroutine
 * ran, so the operation can no longer complete. withdraw runs on the
 * scheduler's side, never inside a core done callback, so it may call
 * core_cancel; it must not park.
 */
int sched_park_withdraw(int64_t deadline, int cancellable,
                        void (*withdraw)(void *arg, int status), void *arg);

/* Label the running coroutine's current wait ("recv", "send"...) for dumps. */
void sched_label(const char *what);

/*
 * Work for the end of a scheduler turn: run once, after every runnable
 * coroutine has run, before the thread polls or sleeps. A connection
 * queues its flush here, so the requests and acks of all its coroutines
 * leave in one write. The owner embeds the hook (fn and arg set by it)
 * and calls sched_undefer before freeing it. Both are no-ops when already
 * in the wanted state; a hook runs on the thread that queued it.
 */
struct sched_hook {
    void (*fn)(void *arg);
    void *arg;
    struct sched_hook *next;  /* the queue (sched.c) */
    int queued;
};
void sched_defer(struct sched_hook *h);
void sched_undefer(struct sched_hook *h);

/* Print every coroutine of this thread (id, state, label) to stderr. */
void sched_dump(void);

/* ---- blk.c: per-thread cache of message blocks ----------------------- */

/*
 * A block of at least size bytes, or NULL (malloc failed; errno ENOMEM).
 * *cls is set to the block's size class, which blk_free needs back: 0 for
 * a plain malloc'd block (too big to cache, or a sanitizer build), else
 * 1..255. The caller owns the block and gives it back with blk_free, on
 * any thread; class 0 blocks may also go to free().
 */
void *blk_alloc(size_t size, unsigned *cls);

/* Give back a block from blk_alloc with its class; NULL is a no-op. */
void blk_free(void *p, unsigned cls);

/*
 * The scheduler's thread setup and teardown: turn this thread's cache on,
 * and off again, freeing every block it holds. Without a cache blk_free
 * goes to free(). The thread that calls exit() (main() returning) never
 * gets sched_destroy; blk.c empties its cache from a destructor instead.
 */
void blk_thread_init(void);
void blk_thread_exit(void);

/* ---- chan.c: one handle type, two kinds ------------------------------ */

/*
 * What a channel kind implements. Every member has the contract of the
 * chan_ call of the same name (chan.h), arguments already checked for NULL.
 * select gets only cases whose channels are all of this kind (and, for
 * remote, of one client); NULL-channel cases are passed through.
 */
struct chan_ops {
    int (*send)(chan_t *ch, const void *data, size_t len, int64_t deadline);
    int (*recv)(chan_t *ch, chan_msg_t *msg, int64_t deadline);
    /* n >= 1, every iovec checked; msgs[0..n) cleared by the kind */
    int (*send_many)(chan_t *ch, const struct iovec *msgs, int n, int64_t deadline);
    int (*recv_many)(chan_t *ch, chan_msg_t *msgs, int n, int64_t deadline);
    /* lease_ms >= 1 */
    int (*recv_lease)(chan_t *ch, chan_msg_t *msg, int64_t lease_ms, int64_t deadline);
    int (*close)(chan_t *ch);
    long (*len)(chan_t *ch);
    long (*cap)(chan_t *ch);
    void (*free)(chan_t *ch);
    int (*select)(struct chan_case *cases, int n, int64_t deadline);
    /* key that cases must share to be selected together (the client for remote) */
    const void *(*select_domain)(chan_t *ch);
};

/* Every channel kind's struct starts with this. */
struct chan {
    const struct chan_ops *ops;
};

/*
 * Received messages: the kind allocates one block holding the payload
 * (NUL-terminated) with blk_alloc and sets msg->data, msg->len,
 * msg->deliveries, msg->priv_owner to the block and the block's class in
 * bits 8..15 of msg->priv_flags (MSG_WITH_CLS); chan_msg_free gives
 * priv_owner back with blk_free and that class (never derived from the
 * public len), except for a local leased message (MSG_LEASED without
 * MSG_REMOTE), whose priv_owner is its struct local_lease, released by
 * local_lease_release. A remote leased message also has priv_tag (its
 * delivery tag), priv_peer (its struct chan_client) and priv_epoch (the
 * connection that delivered it).
 */
#define MSG_LEASED 0x1u   /* from chan_recv_lease: chan_ack/chan_nack apply */
#define MSG_REMOTE 0x2u   /* delivered by chand */
#define MSG_SETTLED 0x4u  /* remote: chan_ack/chan_nack got an answer (or the lease is lost) */
/* blk_alloc class of priv_owner, kept in priv_flags bits 8..15 */
#define MSG_CLS(flags) ((unsigned)(((flags) >> 8) & 0xffu))
#define MSG_WITH_CLS(flags, cls) \
    ((uint32_t)(((flags) & ~(uint32_t)0xff00u) | (((uint32_t)(cls) & 0xffu) << 8)))

/* ---- local.c: local channels on core/ -------------------------------- */
extern const struct chan_ops local_ops;

/* chan_ack (ack set) or chan_nack of a local leased message. */
int local_lease_settle(chan_msg_t *msg, int ack);

/* chan_msg_free of a local leased message: drops the receiver's reference. */
void local_lease_release(chan_msg_t *msg);

/* ---- remote.c: channels hosted by chand ------------------------------ */
extern const struct chan_ops remote_ops;

/* chan_ack (ack set) or chan_nack of a remote leased message. */
int remote_lease_settle(chan_msg_t *msg, int ack);

#endif /* CHAN_INTERNAL_H */
