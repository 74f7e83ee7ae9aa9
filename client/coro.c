/*
 * coro.c: coroutines as the machine sees them. Each one owns a mapping: an
 * inaccessible guard region, then its stack, with its struct coro at the
 * top. Pages are touched lazily, so a parked coroutine costs the few pages
 * its call chain reached. A stack overflow runs into the guard, and a
 * SIGSEGV handler on a signal stack turns that fault into a message that
 * says so instead of silent corruption of a neighbour.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifdef HAVE_VALGRIND_VALGRIND_H
#include <valgrind/valgrind.h>
#endif
#ifdef CHAN_SANITIZERS
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#include "internal.h"

/*
 * Linux 6.13 can mark pages as guards without a mapping of their own. An
 * mprotect'ed guard splits the mapping, so every stack would cost two of
 * the vm.max_map_count (65530 by default) mappings and 100,000 coroutines
 * could not exist; guard markers let adjacent stacks merge into one.
 */
#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

#define CORO_CACHE 32               /* default-size stacks a thread keeps for reuse */
#define CORO_SIGSTACK (64 * 1024)   /* bytes of the per-thread signal stack */

#define CORO_TLS __attribute__((tls_model("initial-exec")))

enum coro_guard_mode {
    CORO_GUARD_UNKNOWN = 0, /* not tried yet */
    CORO_GUARD_MADVISE,     /* MADV_GUARD_INSTALL works */
    CORO_GUARD_MPROTECT,    /* older kernel: PROT_NONE, one more mapping per stack */
    CORO_GUARD_MODE_MAX
};

/* A cached stack mapping, linked through the place its struct coro used. */
struct coro_cached {
    struct coro_cached *next;
};

static _Thread_local struct coro *coro_cur CORO_TLS;      /* running coroutine */
static _Thread_local struct coro *coro_prev CORO_TLS;     /* the one that switched to it */
static _Thread_local struct coro_cached *coro_cache CORO_TLS; /* free default stacks */
static _Thread_local int coro_ncached CORO_TLS;           /* entries in coro_cache */
static _Thread_local void *coro_sigstack CORO_TLS;        /* our signal stack, if we made it */
static _Thread_local size_t coro_sigstack_size CORO_TLS;

/* Process-wide, written once under coro_once before the handler can run. */
static pthread_once_t coro_once = PTHREAD_ONCE_INIT;
static size_t coro_page;                 /* bytes per page */
static size_t coro_guard;                /* guard bytes, CORO_GUARD rounded to pages */
static size_t coro_default_map;          /* mapping size of a default stack */
static struct sigaction coro_old_segv;   /* the handler ours replaced, for other faults */
static _Atomic int coro_guard_mode;      /* enum coro_guard_mode */

static size_t coro_round(size_t n, size_t to)
{
    return (n + to - 1) / to * to;
}

/* Append the decimal form of v at p; returns the new end. Signal-safe. */
static char *coro_fmt_num(char *p, unsigned long long v)
{
    char tmp[24];
    int n = 0;

    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

static char *coro_fmt_str(char *p, const char *s)
{
    while (*s)
        *p++ = *s++;
    return p;
}

/* The guard was hit: say which coroutine and how to fix it, then abort. */
static void coro_overflow(const struct coro *c)
{
    char buf[200];
    char *p = buf;

    p = coro_fmt_str(p, "chan: coroutine ");
    p = coro_fmt_num(p, (unsigned long long)c->id);
    p = coro_fmt_str(p, " stack overflow (stack size ");
    p = coro_fmt_num(p, (unsigned long long)(c->stack_size / 1024));
    p = coro_fmt_str(p, " KiB); use chan_go_stack for more\n");
    if (write(STDERR_FILENO, buf, (size_t)(p - buf)) < 0) {
        /* nothing left to tell anyone */
    }
    abort();
}

/*
 * SIGSEGV on the signal stack. Only the running coroutine's stack can
 * overflow, so one range check decides; any other fault goes to whatever
 * handler was there before (ASan's, the default action).
 */
static void coro_segv(int sig, siginfo_t *si, void *uctx)
{
    const struct coro *c = coro_cur;
    const char *a = si->si_addr;
    struct sigaction dfl;

    if (c && c->map && a >= c->map && a < c->map + coro_guard)
        coro_overflow(c);
    if (coro_old_segv.sa_flags & SA_SIGINFO) {
        if (coro_old_segv.sa_sigaction) {
            coro_old_segv.sa_sigaction(sig, si, uctx);
            return;
        }
    } else if (coro_old_segv.sa_handler != SIG_DFL && coro_old_segv.sa_handler != SIG_IGN) {
        coro_old_segv.sa_handler(sig);
        return;
    }
    /* Default action: pending now, delivered as this handler returns. */
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(sig, &dfl, NULL);
    raise(sig);
}

static void coro_once_init(void)
{
    struct sigaction sa;

    coro_page = (size_t)sysconf(_SC_PAGESIZE);
    coro_guard = coro_round(CORO_GUARD, coro_page);
    coro_default_map = coro_guard + coro_round(CORO_STACK_DEFAULT, coro_page);

    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = coro_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &coro_old_segv);
}

int coro_thread_init(struct coro *main)
{
    stack_t ss;
    size_t size = CORO_SIGSTACK;
    void *p;

    pthread_once(&coro_once, coro_once_init);
    coro_cur = main;
    /* Keep a signal stack someone else (ASan, the program) already set up. */
    if (sigaltstack(NULL, &ss) == 0 && !(ss.ss_flags & SS_DISABLE))
        return 0;
#ifdef _SC_SIGSTKSZ
    {
        long min = sysconf(_SC_SIGSTKSZ);

        if (min > 0 && (size_t)min > size)
            size = coro_round((size_t)min, coro_page);
    }
#endif
    p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (p == MAP_FAILED) {
        errno = ENOMEM;
        return -1;
    }
    memset(&ss, 0, sizeof ss);
    ss.ss_sp = p;
    ss.ss_size = size;
    if (sigaltstack(&ss, NULL) != 0) {
        munmap(p, size);
        errno = ENOMEM;
        return -1;
    }
    coro_sigstack = p;
    coro_sigstack_size = size;
    return 0;
}

void coro_thread_exit(void)
{
    struct coro_cached *k;
    stack_t ss;

    while ((k = coro_cache) != NULL) {
        coro_cache = k->next;
        munmap((char *)k + sizeof(struct coro_cached) - coro_default_map, coro_default_map);
    }
    coro_ncached = 0;
    if (coro_sigstack) {
        memset(&ss, 0, sizeof ss);
        ss.ss_flags = SS_DISABLE;
        sigaltstack(&ss, NULL);
        munmap(coro_sigstack, coro_sigstack_size);
        coro_sigstack = NULL;
    }
    coro_cur = NULL;
}

/* A fresh mapping of size bytes with its guard region in place, or NULL. */
static char *coro_map(size_t size)
{
    char *map = mmap(NULL, size, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    int mode = coro_guard_mode;

    if (map == MAP_FAILED) {
        errno = ENOMEM;
        return NULL;
    }
    if (mode != CORO_GUARD_MPROTECT) {
        if (madvise(map, coro_guard, MADV_GUARD_INSTALL) == 0) {
            if (mode == CORO_GUARD_UNKNOWN)
                coro_guard_mode = CORO_GUARD_MADVISE;
            return map;
        }
        if (mode == CORO_GUARD_MADVISE) /* it worked before: out of memory */
            goto fail;
        coro_guard_mode = CORO_GUARD_MPROTECT;
    }
    if (mprotect(map, coro_guard, PROT_NONE) != 0)
        goto fail;
    return map;

fail:
    munmap(map, size);
    errno = ENOMEM;
    return NULL;
}

/* The address where a mapping of map_size bytes keeps its struct coro. */
static struct coro *coro_at_top(char *map, size_t map_size)
{
    uintptr_t top = (uintptr_t)(map + map_size);

    return (struct coro *)((top - sizeof(struct coro)) & ~(uintptr_t)63);
}

struct coro *coro_new(size_t stack_size, void (*entry)(void *))
{
    size_t map_size;
    char *map = NULL;
    struct coro *c;
    char *lo;

    pthread_once(&coro_once, coro_once_init);
    if (stack_size < CORO_STACK_MIN)
        stack_size = CORO_STACK_MIN;
    stack_size = coro_round(stack_size, coro_page);
    map_size = coro_guard + stack_size;
    if (map_size == coro_default_map && coro_cache) {
        struct coro_cached *k = coro_cache;

        coro_cache = k->next;
        coro_ncached--;
        map = (char *)k + sizeof *k - map_size;
    } else {
        map = coro_map(map_size);
        if (!map)
            return NULL;
    }
    c = coro_at_top(map, map_size);
    memset(c, 0, sizeof *c);
    c->map = map;
    c->map_size = map_size;
    c->stack_size = stack_size;
    c->heap_idx = SIZE_MAX;
    c->deadline = -1;
    lo = map + coro_guard;
#ifdef CHAN_SANITIZERS
    c->asan_bottom = lo;
    c->asan_size = (size_t)((char *)c - lo);
#endif
#ifdef HAVE_VALGRIND_VALGRIND_H
    /* Under memcheck a switch between stacks would otherwise look like one stack jumping. */
    c->vg_stack = VALGRIND_STACK_REGISTER(lo, (char *)c);
#endif
    ctx_make(&c->ctx, lo, (size_t)((char *)c - lo), entry, c);
    return c;
}

void coro_free(struct coro *c)
{
    char *map;
    size_t map_size;

    if (!c)
        return;
    map = c->map;
    map_size = c->map_size;
#ifdef HAVE_VALGRIND_VALGRIND_H
    VALGRIND_STACK_DEREGISTER(c->vg_stack);
#endif
#ifdef CHAN_SANITIZERS
    /*
     * The frames that were live when it finished never returned, so their
     * redzones are still poisoned; a later stack at this address (cached or
     * mapped anew) would trip on them. A coroutine freed unfinished may have
     * them anywhere.
     */
    {
        const char *lo = c->asan_low ? c->asan_low - 256 : (const char *)c->asan_bottom;

        if (lo < (const char *)c->asan_bottom)
            lo = c->asan_bottom;
        __asan_unpoison_memory_region(lo, (size_t)((const char *)c - lo));
    }
#endif
    if (map_size == coro_default_map && coro_ncached < CORO_CACHE) {
        /* The last word of the mapping links it into the cache. */
        struct coro_cached *k = (struct coro_cached *)(map + map_size) - 1;

        k->next = coro_cache;
        coro_cache = k;
        coro_ncached++;
        return;
    }
    munmap(map, map_size);
}

void coro_switch(struct coro *from, struct coro *to)
{
#ifdef CHAN_SANITIZERS
    /* A finished coroutine's fake stack is released by passing NULL. */
    if (from->state == CORO_DONE)
        from->asan_low = __builtin_frame_address(0);
    __sanitizer_start_switch_fiber(from->state == CORO_DONE ? NULL : &from->asan_fake,
                                   to->asan_bottom, to->asan_size);
#endif
    coro_prev = from;
    coro_cur = to;
    ctx_switch(&from->ctx, &to->ctx);
#ifdef CHAN_SANITIZERS
    __sanitizer_finish_switch_fiber(from->asan_fake, &coro_prev->asan_bottom,
                                    &coro_prev->asan_size);
#endif
}

void coro_started(struct coro *c)
{
    (void)c;
#ifdef CHAN_SANITIZERS
    /* This also teaches ASan the bounds of the thread's own stack. */
    __sanitizer_finish_switch_fiber(NULL, &coro_prev->asan_bottom, &coro_prev->asan_size);
#endif
}
