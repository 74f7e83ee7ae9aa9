/*
 * ctx_ucontext.c: the portable coroutine switch, used where there is no
 * hand-written one (configure --with-context=ucontext, or an unknown CPU).
 * swapcontext also saves and restores the signal mask, which costs a
 * system call per switch: correct everywhere, slower than the assembly.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <ucontext.h>

#include "internal.h"

/* makecontext passes only int arguments, so the ctx pointer travels in halves. */
static void ctx_start(unsigned hi, unsigned lo)
{
    struct ctx *c = (struct ctx *)(uintptr_t)(((uint64_t)hi << 32) | lo);

    c->fn(c->arg);
    abort(); /* fn switches away for good and never returns */
}

void ctx_make(struct ctx *c, void *lo, size_t size, void (*fn)(void *), void *arg)
{
    uint64_t p = (uintptr_t)c;

    if (getcontext(&c->uc) != 0) {
        perror("chan: getcontext");
        abort();
    }
    c->uc.uc_stack.ss_sp = lo;
    c->uc.uc_stack.ss_size = size;
    c->uc.uc_link = NULL;
    c->fn = fn;
    c->arg = arg;
    makecontext(&c->uc, (void (*)(void))ctx_start, 2, (unsigned)(p >> 32),
                (unsigned)(p & 0xffffffffu));
}

void ctx_switch(struct ctx *from, struct ctx *to)
{
    if (swapcontext(&from->uc, &to->uc) != 0) {
        perror("chan: swapcontext");
        abort();
    }
}
