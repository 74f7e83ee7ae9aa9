/*
 * ctx_x86_64.S: the coroutine register switch for x86-64 (System V ABI).
 * Only what the ABI says a callee must preserve is saved: rbx, rbp,
 * r12-r15, the stack pointer, and the two floating-point control words
 * (MXCSR, x87 CW). Everything else is dead across a call anyway, so a
 * switch is a few loads and stores and no system call.
 *
 * Saved frame, at the stack pointer stored in struct ctx (low to high):
 *   0: MXCSR (4 bytes), 4: x87 control word (2 bytes, padded)
 *   8: r15  16: r14  24: r13  32: r12  40: rbx  48: rbp  56: return address
 */

	.text

/* void ctx_switch(struct ctx *from, struct ctx *to) */
	.globl	ctx_switch
	.hidden	ctx_switch
	.type	ctx_switch, @function
	.p2align 4
ctx_switch:
	.cfi_startproc
	pushq	%rbp
	pushq	%rbx
	pushq	%r12
	pushq	%r13
	pushq	%r14
	pushq	%r15
	subq	$8, %rsp
	stmxcsr	(%rsp)
	fnstcw	4(%rsp)
	movq	%rsp, (%rdi)
	movq	(%rsi), %rsp
	ldmxcsr	(%rsp)
	fldcw	4(%rsp)
	addq	$8, %rsp
	popq	%r15
	popq	%r14
	popq	%r13
	popq	%r12
	popq	%rbx
	popq	%rbp
	ret
	.cfi_endproc
	.size	ctx_switch, .-ctx_switch

/*
 * void ctx_make(struct ctx *c, void *lo, size_t size,
 *               void (*fn)(void *), void *arg)
 * Lay a frame at the top of [lo, lo + size) that ctx_switch pops into
 * ctx_start with fn in r12 and arg in r13. The return-address slot sits
 * so that ctx_start begins with rsp 16-byte aligned, as at a call site.
 */
	.globl	ctx_make
	.hidden	ctx_make
	.type	ctx_make, @function
	.p2align 4
ctx_make:
	.cfi_startproc
	leaq	(%rsi,%rdx), %rax
	andq	$-16, %rax
	subq	$80, %rax
	movl	$0x1f80, (%rax)
	movl	$0x037f, 4(%rax)
	movq	$0, 8(%rax)
	movq	$0, 16(%rax)
	movq	%r8, 24(%rax)
	movq	%rcx, 32(%rax)
	movq	$0, 40(%rax)
	movq	$0, 48(%rax)
	leaq	ctx_start(%rip), %rdx
	movq	%rdx, 56(%rax)
	movq	%rax, (%rdi)
	ret
	.cfi_endproc
	.size	ctx_make, .-ctx_make

/*
 * First code of every coroutine. rip is marked undefined so debuggers and
 * unwinders stop here instead of walking into garbage; fn never returns.
 */
	.type	ctx_start, @function
	.p2align 4
ctx_start:
	.cfi_startproc
	.cfi_undefined rip
	xorl	%ebp, %ebp
	movq	%r13, %rdi
	callq	*%r12
	ud2
	.cfi_endproc
	.size	ctx_start, .-ctx_start

	.section .note.GNU-stack,"",@progbits
