/*
 * hello: smoke test of the boot protocol, console, DTB and PSCI.
 * bootargs: exit=N  leave through the syscon-l4vmm exit register with code N
 *                   instead of PSCI SYSTEM_OFF.
 */
#include "guest.h"

int main(const void *dtb)
{
	const char *hvc_line = "hello: also via hvc print\n";
	const char *args;
	size_t len;
	uint64_t code;

	uart_puts("hello: pyned guest up\n");

	uart_puts("hello: EL");
	put_dec(current_el());
	uart_puts(" MIDR=");
	put_hex(read_midr());
	uart_puts(" MPIDR=");
	put_hex(read_mpidr());
	uart_putc('\n');

	uart_puts("hello: dtb at ");
	put_hex((uintptr_t)dtb);
	uart_putc('\n');

	uart_puts("hello: bootargs: ");
	args = bootargs(dtb, &len);
	if (args && len)
		uart_write(args, len);
	else
		uart_puts("(none)");
	uart_putc('\n');

	while (*hvc_line)
		hvc_putc(*hvc_line++);

	if (bootarg_u64(dtb, "exit", &code)) {
		uart_puts("hello: exit ");
		put_dec(code);
		uart_puts(" via syscon\n");
		mmio_write32(SYSCON_EXIT, (uint32_t)code);
		/* still here: the register is missing, fall back to PSCI */
	}

	uart_puts("hello: powering off\n");
	halt();
}
