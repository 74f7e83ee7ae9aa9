/*
 * ctx_aarch64.S: the coroutine register switch for AArch64 (AAPCS64).
 * Saves what a callee must preserve: x19-x28, the frame pointer x29, the
 * link register x30, the stack pointer and the low halves of v8-v15
 * (d8-d15). No system call.
 *
 * Saved frame, 176 bytes at the stack pointer stored in struct ctx:
 *   0: x19 x20  16: x21 x22  32: x23 x24  48: x25 x26  64: x27 x28
 *   80: x29 x30  96: d8 d9  112: d10 d11  128: d12 d13  144: d14 d15
 *   160: padding that keeps sp 16-byte aligned
 */

	.text

/* void ctx_switch(struct ctx *from, struct ctx *to) */
	.globl	ctx_switch
	.hidden	ctx_switch
	.type	ctx_switch, %function
	.p2align 4
ctx_switch:
	.cfi_startproc
	sub	sp, sp, #176
	stp	x19, x20, [sp, #0]
	stp	x21, x22, [sp, #16]
	stp	x23, x24, [sp, #32]
	stp	x25, x26, [sp, #48]
	stp	x27, x28, [sp, #64]
	stp	x29, x30, [sp, #80]
	stp	d8, d9, [sp, #96]
	stp	d10, d11, [sp, #112]
	stp	d12, d13, [sp, #128]
	stp	d14, d15, [sp, #144]
	mov	x2, sp
	str	x2, [x0]
	ldr	x2, [x1]
	mov	sp, x2
	ldp	x19, x20, [sp, #0]
	ldp	x21, x22, [sp, #16]
	ldp	x23, x24, [sp, #32]
	ldp	x25, x26, [sp, #48]
	ldp	x27, x28, [sp, #64]
	ldp	x29, x30, [sp, #80]
	ldp	d8, d9, [sp, #96]
	ldp	d10, d11, [sp, #112]
	ldp	d12, d13, [sp, #128]
	ldp	d14, d15, [sp, #144]
	add	sp, sp, #176
	ret
	.cfi_endproc
	.size	ctx_switch, .-ctx_switch

/*
 * void ctx_make(struct ctx *c, void *lo, size_t size,
 *               void (*fn)(void *), void *arg)
 * Lay a frame at the top of [lo, lo + size) that ctx_switch pops into
 * ctx_start with fn in x19 and arg in x20.
 */
	.globl	ctx_make
	.hidden	ctx_make
	.type	ctx_make, %function
	.p2align 4
ctx_make:
	.cfi_startproc
	add	x5, x1, x2
	and	x5, x5, #0xfffffffffffffff0
	sub	x5, x5, #176
	stp	x3, x4, [x5, #0]
	stp	xzr, xzr, [x5, #16]
	stp	xzr, xzr, [x5, #32]
	stp	xzr, xzr, [x5, #48]
	stp	xzr, xzr, [x5, #64]
	adr	x6, ctx_start
	stp	xzr, x6, [x5, #80]
	stp	xzr, xzr, [x5, #96]
	stp	xzr, xzr, [x5, #112]
	stp	xzr, xzr, [x5, #128]
	stp	xzr, xzr, [x5, #144]
	str	x5, [x0]
	ret
	.cfi_endproc
	.size	ctx_make, .-ctx_make

/*
 * First code of every coroutine. The link register is marked undefined so
 * unwinders stop here; fn never returns.
 */
	.type	ctx_start, %function
	.p2align 4
ctx_start:
	.cfi_startproc
	.cfi_undefined x30
	mov	x29, xzr
	mov	x0, x20
	blr	x19
	brk	#0
	.cfi_endproc
	.size	ctx_start, .-ctx_start

	.section .note.GNU-stack,"",%progbits
