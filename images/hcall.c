/*
 * hcall: cost of a null hypercall (PSCI_VERSION via hvc #0).
 * bootargs: n=N  (default 100000)
 */
#include "guest.h"

int main(const void *dtb)
{
	uint64_t n = 100000, version = 0, t0;

	bootarg_u64(dtb, "n", &n);

	t0 = read_cntvct();
	for (uint64_t i = 0; i < n; i++)
		version = hvc_call(PSCI_VERSION, 0, 0, 0);
	t0 = read_cntvct() - t0;

	uart_puts("hcall: n=");
	put_dec(n);
	uart_puts(" ticks=");
	put_dec(t0);
	uart_puts(" version=");
	put_hex(version);
	uart_putc('\n');
	halt();
}
