/*
 * EL1 exception vectors and the secondary-CPU entry point (see lib/irq.h).
 *
 * The guests run at EL1h, so the only exception they expect is an IRQ from
 * "current EL with SP_ELx".  Every entry saves the registers a C function
 * may clobber (x0-x18, x29, x30) plus ELR_EL1 and SPSR_EL1 on the current
 * stack.  The IRQ entry calls irq_dispatch() (irq.c), restores them and
 * returns with eret; every other entry calls exc_unexpected(), which reports
 * ESR/ELR/FAR on the console and powers the VM off.
 */
#include "irq.h"

#define FRAME		(12 * 16)	/* 23 registers, rounded to keep SP 16-aligned */

	.macro	ventry, target
	.balign	0x80
	sub	sp, sp, #FRAME
	stp	x0, x1, [sp, #16 * 0]
	stp	x2, x3, [sp, #16 * 1]
	stp	x4, x5, [sp, #16 * 2]
	stp	x6, x7, [sp, #16 * 3]
	stp	x8, x9, [sp, #16 * 4]
	stp	x10, x11, [sp, #16 * 5]
	stp	x12, x13, [sp, #16 * 6]
	stp	x14, x15, [sp, #16 * 7]
	stp	x16, x17, [sp, #16 * 8]
	stp	x18, x29, [sp, #16 * 9]
	mrs	x0, elr_el1
	mrs	x1, spsr_el1
	stp	x30, x0, [sp, #16 * 10]
	str	x1, [sp, #16 * 11]
	b	\target
	.endm

	.section .text.vectors, "ax", %progbits
	.balign	2048			/* VBAR_EL1[10:0] are RES0 */
	.globl	vectors
	.hidden	vectors
	.type	vectors, %function
vectors:
	ventry	unexpected		/* current EL, SP_EL0: sync */
	ventry	unexpected		/*                     IRQ */
	ventry	unexpected		/*                     FIQ */
	ventry	unexpected		/*                     SError */
	ventry	unexpected		/* current EL, SP_ELx: sync */
	ventry	irq			/*                     IRQ */
	ventry	unexpected		/*                     FIQ */
	ventry	unexpected		/*                     SError */
	ventry	unexpected		/* lower EL, AArch64:  sync */
	ventry	unexpected		/*                     IRQ */
	ventry	unexpected		/*                     FIQ */
	ventry	unexpected		/*                     SError */
	ventry	unexpected		/* lower EL, AArch32:  sync */
	ventry	unexpected		/*                     IRQ */
	ventry	unexpected		/*                     FIQ */
	ventry	unexpected		/*                     SError */
	.size	vectors, . - vectors

irq:
	bl	irq_dispatch
	ldr	x1, [sp, #16 * 11]
	ldp	x30, x0, [sp, #16 * 10]
	msr	spsr_el1, x1
	msr	elr_el1, x0
	ldp	x0, x1, [sp, #16 * 0]
	ldp	x2, x3, [sp, #16 * 1]
	ldp	x4, x5, [sp, #16 * 2]
	ldp	x6, x7, [sp, #16 * 3]
	ldp	x8, x9, [sp, #16 * 4]
	ldp	x10, x11, [sp, #16 * 5]
	ldp	x12, x13, [sp, #16 * 6]
	ldp	x14, x15, [sp, #16 * 7]
	ldp	x16, x17, [sp, #16 * 8]
	ldp	x18, x29, [sp, #16 * 9]
	add	sp, sp, #FRAME
	eret

unexpected:
	bl	exc_unexpected		/* does not return */
1:	wfe
	b	1b

/*
 * PSCI CPU_ON entry: EL1h, MMU off, SP = 0, x0 = the context = CPU index.
 * CPU 0 runs on start.S's stack, so CPU i (1 <= i < CPU_MAX) takes slot
 * i - 1 of cpu_stacks, whose top is cpu_stacks + i * CPU_STACK_SIZE.  The
 * image is already relocated: CPU 0 did that before starting anyone.
 */
	.section .text.secondary_entry, "ax", %progbits
	.globl	secondary_entry
	.hidden	secondary_entry
	.type	secondary_entry, %function
secondary_entry:
	cbz	x0, 2f
	cmp	x0, #CPU_MAX
	b.hs	2f
	adrp	x1, cpu_stacks
	add	x1, x1, :lo12:cpu_stacks
	mov	x2, #CPU_STACK_SIZE
	madd	x1, x0, x2, x1
	mov	sp, x1
	mov	x29, xzr
	mov	x30, xzr
	bl	secondary_main
2:	wfi				/* bad index, or secondary_main returned */
	b	2b
	.size	secondary_entry, . - secondary_entry

	.section .bss.cpu_stacks, "aw", %nobits
	.balign	16
cpu_stacks:
	.space	(CPU_MAX - 1) * CPU_STACK_SIZE

	.section .note.GNU-stack, "", %progbits
