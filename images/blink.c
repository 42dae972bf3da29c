/*
 * blink: blink an LED on a GPIO the VM owns.  The LED hangs on pin 0 of the
 * first enabled arm,pl061 node of the DT, which is the one uvmm left enabled
 * because the VM's vbus holds it.  The EL1 virtual timer paces the toggles
 * with absolute deadlines, so a late tick does not shift the later ones; the
 * tick handler toggles the pin with one address-masked store.  If the GPIO
 * node has an interrupt, rising edges on input pin 7 (a button) are counted
 * through it.  If the DT has an enabled arm,pl011 besides the console, the
 * guest greets on it too.
 *
 * bootargs: name=S          shown in the greeting (default blink)
 *           period_ms=N     time between toggles (default 150)
 *           toggles=N       power off after N toggles (default: forever)
 *           seconds=N       power off after N seconds
 *           crash_after=N   after N toggles, store outside the VM: a stage-2
 *                           fault ends the VM (the LED keeps its state)
 *           gpio=0xADDR     use the PL061 at ADDR, whatever the DT says
 */
#include "dev.h"

#define PERIOD_MS_DEFAULT	150
#define FREQ_DEFAULT		62500000
#define TICK_PRIO		0x80
#define GPIO_PRIO		0x90
#define LED_PIN			0
#define BUTTON_PIN		7
#define CONSOLE_BASE		0x9c090000UL
#define OUTSIDE			0x80000000UL	/* end of DRAM: never a VM's */

#define GPIODIR			0x400
#define GPIOIS			0x404
#define GPIOIBE			0x408
#define GPIOIEV			0x40c
#define GPIOIE			0x410
#define GPIOMIS			0x418
#define GPIOIC			0x41c
#define GPIO_DATA(mask)		((uint32_t)(mask) << 2)	/* address-masked GPIODATA */

#define PL011_DR		0x00
#define PL011_FR		0x18
#define PL011_FR_TXFF		(1u << 5)

static uintptr_t gpio;
static uint64_t period, deadline;
static volatile uint64_t toggles, late_max, buttons;
static volatile int level;

static void tick(void)
{
	uint64_t now = read_cntvct();

	if (now < deadline)		/* the level the GIC had not yet seen drop */
		return;
	if (now - deadline > late_max)
		late_max = now - deadline;
	level ^= 1;
	mmio_write32(gpio + GPIO_DATA(1u << LED_PIN), (uint32_t)level << LED_PIN);
	toggles++;
	deadline += period;
	vtimer_set_cval(deadline);
}

void irq_handler(uint32_t intid)
{
	if (intid == INTID_VTIMER) {
		tick();
		return;
	}
	if (mmio_read32(gpio + GPIOMIS) & (1u << BUTTON_PIN)) {
		mmio_write32(gpio + GPIOIC, 1u << BUTTON_PIN);
		buttons++;
	}
}

static void other_uart_puts(uintptr_t base, const char *s)
{
	for (; *s; s++) {
		while (mmio_read32(base + PL011_FR) & PL011_FR_TXFF)
			;
		mmio_write32(base + PL011_DR, (uint8_t)*s);
	}
}

static void greet_other_uart(const void *dtb, const char *name)
{
	struct dt_dev u;

	for (unsigned i = 0; dt_find(dtb, "compatible", "arm,pl011", i, &u); i++) {
		if (u.base == CONSOLE_BASE)
			continue;
		uart_puts("blink: greeting on uart at ");
		put_hex(u.base);
		uart_putc('\n');
		other_uart_puts(u.base, "blink: hello from ");
		other_uart_puts(u.base, name);
		other_uart_puts(u.base, "\n");
	}
}

int main(const void *dtb)
{
	uint64_t freq = read_cntfrq(), ms = PERIOD_MS_DEFAULT, limit = 0, crash = 0, secs;
	uint64_t shown_buttons = 0, next_report = 10, addr;
	char name[33] = "blink";
	struct dt_dev dev = { 0, 0, -1, 0 };
	int limited = 0, crashing = 0;

	exc_init("blink");
	if (!freq)
		freq = FREQ_DEFAULT;
	bootarg_value(dtb, "name", name, sizeof(name));
	bootarg_u64(dtb, "period_ms", &ms);
	if (!ms)
		ms = PERIOD_MS_DEFAULT;
	period = freq / 1000 * ms;
	if (bootarg_u64(dtb, "toggles", &limit))
		limited = 1;
	if (bootarg_u64(dtb, "seconds", &secs)) {
		limit = secs * 1000 / ms;
		limited = 1;
	}
	crashing = bootarg_u64(dtb, "crash_after", &crash);

	uart_puts("blink: pyned guest up name=");
	uart_puts(name);
	uart_putc('\n');
	if (bootarg_u64(dtb, "gpio", &addr)) {
		dev.base = addr;
	} else if (!dt_find(dtb, "compatible", "arm,pl061", 0, &dev)) {
		uart_puts("blink: no GPIO in the device tree (is one on the VM's vbus?)\n");
		halt();
	}
	gpio = dev.base;
	uart_puts("blink: led on gpio at ");
	put_hex(gpio);
	if (dev.intid >= 32) {
		uart_puts(" irq ");
		put_dec(dev.intid);
	}
	uart_puts(" period_ms=");
	put_dec(ms);
	uart_putc('\n');
	greet_other_uart(dtb, name);

	gic_dist_init();
	gic_cpu_init(0);
	gic_enable_private(0, INTID_VTIMER, TICK_PRIO);

	/* LED pin out and low; button pin in, rising edge, unmasked. */
	mmio_write32(gpio + GPIODIR, (mmio_read32(gpio + GPIODIR) | 1u << LED_PIN) &
		     ~(1u << BUTTON_PIN));
	mmio_write32(gpio + GPIO_DATA(1u << LED_PIN), 0);
	if (dev.intid >= 32) {
		mmio_write32(gpio + GPIOIS, mmio_read32(gpio + GPIOIS) & ~(1u << BUTTON_PIN));
		mmio_write32(gpio + GPIOIBE, mmio_read32(gpio + GPIOIBE) & ~(1u << BUTTON_PIN));
		mmio_write32(gpio + GPIOIEV, mmio_read32(gpio + GPIOIEV) | 1u << BUTTON_PIN);
		mmio_write32(gpio + GPIOIC, 1u << BUTTON_PIN);
		mmio_write32(gpio + GPIOIE, mmio_read32(gpio + GPIOIE) | 1u << BUTTON_PIN);
		gic_enable_spi(dev.intid, GPIO_PRIO, dev.edge);
	}

	deadline = read_cntvct() + period;
	vtimer_set_cval(deadline);
	vtimer_set_ctl(CNT_CTL_ENABLE);
	irq_enable();

	for (;;) {
		uint64_t t = toggles, b = buttons;

		if (b != shown_buttons) {
			shown_buttons = b;
			uart_puts("blink: button ");
			put_dec(b);
			uart_putc('\n');
		}
		if (t >= next_report) {
			next_report += 10;
			uart_puts("blink: toggles=");
			put_dec(t);
			uart_puts(" late_max_us=");
			put_dec(ticks_to_us(late_max, freq));
			uart_putc('\n');
		}
		if (crashing && t >= crash) {
			uart_puts("blink: crashing after ");
			put_dec(t);
			uart_puts(" toggles\n");
			*(volatile uint32_t *)OUTSIDE = 0xdead;
			uart_puts("blink: still alive?!\n");
			halt();
		}
		if (limited && t >= limit)
			break;
		/* See lib/irq.h: a wakeup lost here costs at most one tick. */
		wfi();
	}
	irq_disable();
	vtimer_set_ctl(0);
	uart_puts("blink: done toggles=");
	put_dec(toggles);
	uart_putc('\n');
	halt();
}
