/*
 * ptbench: what pass-through costs, measured with CNTVCT.  It uses the first
 * enabled arm,sp804 node of the DT (a board timer the VM owns through its vbus).
 *
 * bench=mmio: n reads of the SP804's Timer1Load (pass-through: the board's
 *   device model) against n reads of the console PL011's FR (emulated: a
 *   model inside the VM's uvmm); both registers cost their model next to
 *   nothing, so the figures compare the access paths.  Prints nanoseconds
 *   per read of each.
 * bench=irq: n one-shot expiries of the SP804's second timer, load_us
 *   microseconds each; prints the latency from the counter reaching zero to
 *   the guest's handler (through the kernel's IRQ object and the virtual GIC).
 *
 * bootargs: bench=mmio|irq  (default mmio)
 *           n=N             (default 20000 reads, or 200 expiries)
 *           load_us=N       (default 1000)
 */
#include "dev.h"

#define FREQ_DEFAULT	62500000
#define SAMPLES_MAX	4096
#define TIMER_PRIO	0x80

#define T1_LOAD		0x00
#define T2_LOAD		0x20
#define T2_CONTROL	0x28
#define T2_INTCLR	0x2c
#define CTRL_ONESHOT	(1u << 0)
#define CTRL_32BIT	(1u << 1)
#define CTRL_INTEN	(1u << 5)
#define CTRL_ENABLE	(1u << 7)

#define CONSOLE_FR	(UART_BASE + 0x18)

static uintptr_t timer;
static int timer_intid = -1;
static volatile uint64_t fired_at;
static volatile int fired;
static uint64_t samples[SAMPLES_MAX];

void irq_handler(uint32_t intid)
{
	if ((int)intid != timer_intid)
		return;
	fired_at = read_cntvct();
	mmio_write32(timer + T2_INTCLR, 1);
	fired = 1;
}

static uint64_t ns_of(uint64_t ticks, uint64_t freq)
{
	return ticks_to_us(ticks * 1000, freq);
}

static void sort(uint64_t *a, unsigned n)
{
	for (unsigned i = 1; i < n; i++) {
		uint64_t v = a[i];
		unsigned j = i;

		for (; j && a[j - 1] > v; j--)
			a[j] = a[j - 1];
		a[j] = v;
	}
}

static void bench_mmio(uint64_t n, uint64_t freq)
{
	uint64_t t0, pass, emul;
	volatile uint32_t sink = 0;

	t0 = read_cntvct();
	for (uint64_t i = 0; i < n; i++)
		sink += mmio_read32(timer + T1_LOAD);
	pass = read_cntvct() - t0;
	t0 = read_cntvct();
	for (uint64_t i = 0; i < n; i++)
		sink += mmio_read32(CONSOLE_FR);
	emul = read_cntvct() - t0;
	(void)sink;
	uart_puts("ptbench: mmio pass-through ");
	put_dec(ns_of(pass, freq) / n);
	uart_puts(" ns/read, emulated ");
	put_dec(ns_of(emul, freq) / n);
	uart_puts(" ns/read, n=");
	put_dec(n);
	uart_putc('\n');
}

static void bench_irq(uint64_t n, uint64_t load_us, uint64_t freq)
{
	uint64_t load_ticks = load_us * freq / 1000000, worst = 0;
	unsigned got = 0;

	gic_enable_spi(timer_intid, TIMER_PRIO, 0);
	irq_enable();
	for (uint64_t i = 0; i < n; i++) {
		uint64_t t0, late;

		mmio_write32(timer + T2_CONTROL, 0);
		mmio_write32(timer + T2_INTCLR, 1);
		mmio_write32(timer + T2_LOAD, (uint32_t)load_us);
		fired = 0;
		t0 = read_cntvct();
		mmio_write32(timer + T2_CONTROL, CTRL_ENABLE | CTRL_ONESHOT | CTRL_32BIT | CTRL_INTEN);
		for (;;) {
			int done;

			irq_disable();
			done = fired;
			if (!done && read_cntvct() - t0 < 10 * freq)
				wfi();
			irq_enable();
			if (done || read_cntvct() - t0 >= 10 * freq)
				break;
		}
		if (!fired) {
			uart_puts("ptbench: timer interrupt never came\n");
			return;
		}
		late = fired_at - t0 > load_ticks ? fired_at - t0 - load_ticks : 0;
		worst = late > worst ? late : worst;
		if (got < SAMPLES_MAX)
			samples[got++] = late;
	}
	sort(samples, got);
	uart_puts("ptbench: irq latency median ");
	put_dec(ns_of(samples[got / 2], freq));
	uart_puts(" ns p99 ");
	put_dec(ns_of(samples[got * 99 / 100], freq));
	uart_puts(" ns max ");
	put_dec(ns_of(worst, freq));
	uart_puts(" ns, n=");
	put_dec(n);
	uart_puts(" load_us=");
	put_dec(load_us);
	uart_putc('\n');
}

int main(const void *dtb)
{
	uint64_t freq = read_cntfrq(), n = 0, load_us = 1000;
	char bench[8] = "mmio";
	struct dt_dev dev;

	exc_init("ptbench");
	if (!freq)
		freq = FREQ_DEFAULT;
	bootarg_value(dtb, "bench", bench, sizeof(bench));
	bootarg_u64(dtb, "n", &n);
	bootarg_u64(dtb, "load_us", &load_us);
	if (!dt_find(dtb, "compatible", "arm,sp804", 0, &dev)) {
		uart_puts("ptbench: no SP804 in the device tree (is one on the VM's vbus?)\n");
		halt();
	}
	timer = dev.base;
	timer_intid = dev.intid;
	uart_puts("ptbench: sp804 at ");
	put_hex(timer);
	uart_puts(" irq ");
	put_dec(timer_intid);
	uart_putc('\n');
	gic_dist_init();
	gic_cpu_init(0);

	if (!strcmp(bench, "irq")) {
		if (timer_intid < 32) {
			uart_puts("ptbench: the SP804 node has no shared interrupt\n");
			halt();
		}
		bench_irq(n ? n : 200, load_us ? load_us : 1000, freq);
	} else if (!strcmp(bench, "mmio")) {
		bench_mmio(n ? n : 20000, freq);
	} else {
		uart_puts("ptbench: unknown benchmark ");
		uart_puts(bench);
		uart_putc('\n');
	}
	halt();
}
