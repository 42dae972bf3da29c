/*
 * wdog: drives the SBSA generic watchdog of dts/virt-r82-wdt.dts (control
 * frame 0xA0010000, refresh frame 0xA0011000, WS0 = SPI 20 = INTID 52).
 * A 100 Hz virtual-timer tick wakes the main loop, which refreshes the
 * watchdog every half period while it is fed; otherwise the CPU idles in wfi.
 * bootargs: period_ms=N  watchdog offset (WOR) in ms (default 200)
 *           feed=N       refresh for N seconds, then stop (default: forever)
 *           ws0=refresh  refresh from the WS0 interrupt handler (default: report only)
 *           hang         once feeding stops, spin with IRQs masked instead of idling
 *           seconds=N    power off after N seconds (default: run forever)
 */
#include "irq.h"

#define WDT_CTRL	0xA0010000UL
#define WDT_REFRESH	0xA0011000UL
#define WCS		0x000
#define WOR_LO		0x008
#define WOR_HI		0x00C
#define W_IIDR		0xFCC
#define WRR		0x000
#define INTID_WS0	52

#define GICD_IGROUPR	0x0080
#define GICD_ISENABLER	0x0100
#define GICD_ICENABLER	0x0180
#define GICD_IPRIORITYR	0x0400
#define GICD_ICFGR	0x0C00
#define GICD_IROUTER	0x6000
#define IRQ_PRIO	0x80
#define TICK_HZ		100

static uint64_t freq, period, tick_period, deadline;
static volatile uint64_t ticks, refreshes;
static volatile int ws0_seen, refresh_at_ws0;

static void refresh(void)
{
	mmio_write32(WDT_REFRESH + WRR, 0);
	refreshes++;
}

void irq_handler(uint32_t intid)
{
	if (intid == INTID_VTIMER) {
		deadline += tick_period;
		vtimer_set_cval(deadline);
		ticks++;
	} else if (intid == INTID_WS0) {
		ws0_seen++;
		uart_puts("wdog: WS0 interrupt WCS=");
		put_hex(mmio_read32(WDT_CTRL + WCS));
		uart_putc('\n');
		if (refresh_at_ws0) {
			refresh();	/* drops WS0, so the level interrupt goes away */
			uart_puts("wdog: refreshed at WS0\n");
		} else {
			/* WS0 stays asserted until a refresh: stop taking it. */
			mmio_write32(GICD_BASE + GICD_ICENABLER + INTID_WS0 / 32 * 4,
				     1u << (INTID_WS0 % 32));
		}
	}
}

/* SPI: group 1, level, routed to CPU 0, enabled. */
static void enable_spi(unsigned intid)
{
	uintptr_t grp = GICD_BASE + GICD_IGROUPR + intid / 32 * 4;
	uintptr_t pri = GICD_BASE + GICD_IPRIORITYR + (intid & ~3u);
	uintptr_t cfg = GICD_BASE + GICD_ICFGR + intid / 16 * 4;
	unsigned shift = (intid & 3) * 8;

	mmio_write32(grp, mmio_read32(grp) | 1u << (intid % 32));
	mmio_write32(pri, (mmio_read32(pri) & ~(0xffu << shift)) | (uint32_t)IRQ_PRIO << shift);
	mmio_write32(cfg, mmio_read32(cfg) & ~(2u << (intid % 16 * 2)));
	mmio_write32(GICD_BASE + GICD_IROUTER + intid * 8, 0);
	mmio_write32(GICD_BASE + GICD_IROUTER + intid * 8 + 4, 0);
	mmio_write32(GICD_BASE + GICD_ISENABLER + intid / 32 * 4, 1u << (intid % 32));
}

int main(const void *dtb)
{
	uint64_t period_ms = 200, feed = 0, seconds = 0, last_refresh, seen_ticks = 0;
	int limited, announced = 0, hang = bootarg_has(dtb, "hang");
	int bounded = bootarg_u64(dtb, "seconds", &seconds);
	char mode[16];

	exc_init("wdog");
	freq = read_cntfrq();
	bootarg_u64(dtb, "period_ms", &period_ms);
	limited = bootarg_u64(dtb, "feed", &feed);
	refresh_at_ws0 = bootarg_value(dtb, "ws0", mode, sizeof(mode)) >= 0
			 && !strcmp(mode, "refresh");
	period = freq / 1000 * period_ms;
	tick_period = freq / TICK_HZ;

	gic_dist_init();
	gic_cpu_init(0);
	gic_enable_private(0, INTID_VTIMER, IRQ_PRIO);
	enable_spi(INTID_WS0);

	uart_puts("wdog: started period_ms=");
	put_dec(period_ms);
	uart_puts(" W_IIDR=");
	put_hex(mmio_read32(WDT_CTRL + W_IIDR));
	uart_putc('\n');

	mmio_write32(WDT_CTRL + WOR_LO, (uint32_t)period);
	mmio_write32(WDT_CTRL + WOR_HI, (uint32_t)(period >> 32));
	mmio_write32(WDT_CTRL + WCS, 1);	/* enable; also a refresh */
	last_refresh = read_cntvct();

	deadline = read_cntvct() + tick_period;
	vtimer_set_cval(deadline);
	vtimer_set_ctl(CNT_CTL_ENABLE);
	irq_enable();

	for (;;) {
		uint64_t now = read_cntvct(), t = ticks;
		int feeding = !limited || t < feed * TICK_HZ;

		if (feeding && now - last_refresh >= period / 2) {
			refresh();
			last_refresh = now;
		}
		if (t / TICK_HZ != seen_ticks / TICK_HZ) {
			uart_puts("wdog: alive s=");
			put_dec(t / TICK_HZ);
			uart_puts(" refreshes=");
			put_dec(refreshes);
			uart_putc('\n');
		}
		if (bounded && t >= seconds * TICK_HZ) {
			uart_puts("wdog: done\n");
			psci_system_off();
		}
		if (!feeding && !announced) {
			announced = 1;
			uart_puts(hang ? "wdog: stopped feeding, hanging\n" : "wdog: stopped feeding\n");
			if (hang) {
				irq_disable();
				for (;;)
					__asm__ volatile("" ::: "memory");
			}
		}
		seen_ticks = t;
		if (ticks == t)
			wfi();
	}
}
