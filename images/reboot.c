/* reboot: PSCI SYSTEM_RESET (the VM exits with 0x66).  No bootargs. */
#include "guest.h"

int main(const void *dtb)
{
	(void)dtb;
	uart_puts("reboot: pyned guest up\n");
	uart_puts("reboot: resetting\n");
	psci_system_reset();
	uart_puts("reboot: reset returned\n");
	for (;;)
		__asm__ volatile("");
}
