/*
 * crash: provokes a guest fault the VMM must report.  VBAR_EL1 is never set,
 * so any exception taken to EL1 also has nowhere sane to go.
 * bootargs: crash=s2|udf|store|jump  (default s2)
 */
#include "guest.h"

int main(const void *dtb)
{
	char mode[16];

	uart_puts("crash: pyned guest up\n");

	/* A truncated value is too long to equal any mode name. */
	if (bootarg_value(dtb, "crash", mode, sizeof(mode)) < 0)
		memcpy(mode, "s2", 3);

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
