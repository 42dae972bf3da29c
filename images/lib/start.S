/*
 * Entry point of every pyned guest.
 *
 * Entered at EL1h with the MMU off, x0 = DTB physical address and SP = 0.
 * The image is loaded at an arbitrary 2 MiB-aligned base and nobody has
 * applied its relocations, so only PC-relative addressing (adr/adrp) may be
 * used until the R_AARCH64_RELATIVE entries below have been processed.
 */

#define R_AARCH64_RELATIVE	1027
#define PSCI_SYSTEM_OFF		0x84000008

	.section .text.start, "ax", %progbits
	.globl	_start
	.type	_start, %function
_start:
	mov	x19, x0				/* keep the DTB pointer for main */

	/* Linked at 0, so the runtime address of the ELF header is the load base. */
	adrp	x20, __ehdr_start
	add	x20, x20, :lo12:__ehdr_start

	adrp	x1, __rela_start
	add	x1, x1, :lo12:__rela_start
	adrp	x2, __rela_end
	add	x2, x2, :lo12:__rela_end
1:	cmp	x1, x2
	b.hs	2f
	ldp	x3, x4, [x1], #16		/* r_offset, r_info */
	ldr	x5, [x1], #8			/* r_addend */
	cmp	w4, #R_AARCH64_RELATIVE		/* type = low 32 bits of r_info */
	b.ne	1b				/* the build guarantees there are no others */
	add	x5, x5, x20
	str	x5, [x20, x3]
	b	1b

	/* The host may or may not zero the memsz tail; do not rely on it. */
2:	adrp	x1, __bss_start
	add	x1, x1, :lo12:__bss_start
	adrp	x2, __bss_end
	add	x2, x2, :lo12:__bss_end
3:	cmp	x1, x2
	b.hs	4f
	stp	xzr, xzr, [x1], #16
	b	3b

4:	adrp	x1, stack_top
	add	x1, x1, :lo12:stack_top
	mov	sp, x1
	mov	x29, xzr			/* terminate frame-pointer chains */
	mov	x30, xzr

	mov	x0, x19
	bl	main

	/* main returned: power off, and never run past here if that fails. */
	mov	x0, #(PSCI_SYSTEM_OFF & 0xffff)
	movk	x0, #(PSCI_SYSTEM_OFF >> 16), lsl #16
	hvc	#0
5:	wfe
	b	5b
	.size	_start, . - _start

	.section .bss.stack, "aw", %nobits
	.balign	16
	.space	16 * 1024
stack_top:

	.section .note.GNU-stack, "", %progbits
