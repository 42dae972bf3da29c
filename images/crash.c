/*
 * crash: provokes a guest fault the VMM must report.  VBAR_EL1 is never set,
 * so any exception taken to EL1 also has nowhere sane to go.
 * bootargs: crash=s2|udf|store|jump|boot  (default s2); boot faults (udf)
 * before the greeting, as a guest that dies early in its boot.
 * Before it faults, it leaves a marker 8 MiB above its load address; a VM
 * restarted on the same RAM that finds it says so ("crash: RAM holds a marker
 * of an earlier run"), one that does not says "crash: RAM clean".
 */
#include "guest.h"

#define MARKER_OFFSET	0x800000UL
#define MARKER		0x6d61726b65723a31UL	/* "1:rekram" */

extern char __ehdr_start[];

int main(const void *dtb)
{
	char mode[16];

	/* A truncated value is too long to equal any mode name. */
	if (bootarg_value(dtb, "crash", mode, sizeof(mode)) < 0)
		memcpy(mode, "s2", 3);
	if (!strcmp(mode, "boot"))
		__asm__ volatile("udf #1");

	uart_puts("crash: pyned guest up\n");

	volatile uint64_t *marker = (volatile uint64_t *)((uintptr_t)__ehdr_start + MARKER_OFFSET);
	uart_puts(*marker == MARKER ? "crash: RAM holds a marker of an earlier run\n"
				    : "crash: RAM clean\n");
	*marker = MARKER;

	if (!strcmp(mode, "s2")) {
		uart_puts("crash: loading from 0x80000000\n");
		(void)*(volatile uint32_t *)0x80000000UL;
	} else if (!strcmp(mode, "udf")) {
		uart_puts("crash: executing udf\n");
		__asm__ volatile("udf #0");
	} else if (!strcmp(mode, "store")) {
		uart_puts("crash: storing to 0x7ff00000\n");
		*(volatile uint64_t *)0x7ff00000UL = 0x1234;
	} else if (!strcmp(mode, "jump")) {
		uart_puts("crash: jumping to 0x7fe00000\n");
		((void (*)(void))0x7fe00000UL)();
	} else {
		uart_puts("crash: unknown mode ");
		uart_puts(mode);
		uart_putc('\n');
		halt();
	}

	uart_puts("crash: still alive?!\n");
	halt();
}
