/*
 * smp: PSCI CPU_ON, GICv3 SGIs in both directions, and a spinlock under
 * contention.  CPU 0 reads the CPU count from the DTB and starts the others
 * (CPU i has MPIDR i and gets i as its CPU_ON context).  Every CPU adds 1 to
 * a shared counter iters times under the lock.  CPU 0 sends SGI 2 to each
 * secondary, which notes it in a flag.  A secondary that has finished
 * counting sends SGI 1 to CPU 0 and parks in wfi.  The secondaries send
 * their SGI 1 one at a time, each waiting until CPU 0 has taken it: with
 * affinity routing an SGI's pending state is one bit per CPU, so two SGI 1
 * sent before CPU 0 acknowledges either would arrive as one.  CPU 0 waits
 * in wfi for all of that, checks the sum and powers off.  Meanwhile CPU 0's
 * virtual timer ticks at 100 Hz: it bounds a lost wfi wakeup (lib/irq.h)
 * and drives a watchdog that turns a lost CPU or IPI into FAIL instead of a
 * hang.
 * bootargs: iters=N    increments per CPU (default 100000)
 *           timeout=N  watchdog in seconds (default 60; 0 = none)
 */
#include "irq.h"

#define SGI_DONE	1		/* secondary -> CPU 0: finished counting */
#define SGI_PING	2		/* CPU 0 -> every secondary */
#define IRQ_PRIO	0x80
#define POLL_HZ		100		/* CPU 0's timer while it waits */
#define FREQ_DEFAULT	62500000	/* if CNTFRQ_EL0 reads 0 */

static uint64_t iters = 100000;
static spinlock_t lock;
static volatile uint64_t counter;
static spinlock_t done_lock;			/* one SGI 1 in flight at a time */

/* Each CPU writes only its own slot; CPU 0 reads them. */
static volatile uint32_t online[CPU_MAX];	/* IRQs on, ready for SGI 2 */
static volatile uint32_t done[CPU_MAX];		/* finished counting */
static volatile uint32_t pinged[CPU_MAX];	/* SGI 2 arrivals */

/* Written by CPU 0 only. */
static volatile uint32_t ipis;			/* SGI 1 arrivals */
static uint64_t poll_period;

void irq_handler(uint32_t intid)
{
	unsigned cpu = cpu_index();

	if (intid == SGI_DONE && cpu == 0) {
		ipis++;
	} else if (intid == SGI_PING && cpu < CPU_MAX) {
		pinged[cpu]++;
	} else if (intid == INTID_VTIMER && cpu == 0) {
		/* Only wakes CPU 0 up; a deadline in the future drops the line. */
		vtimer_set_cval(read_cntvct() + poll_period);
	}
}

static void count_up(void)
{
	for (uint64_t i = 0; i < iters; i++) {
		spin_lock(&lock);
		counter++;
		spin_unlock(&lock);
	}
}

void secondary_main(uint64_t cpu)
{
	exc_init("smp");
	gic_cpu_init(cpu);
	gic_enable_private(cpu, SGI_PING, IRQ_PRIO);
	irq_enable();
	__atomic_store_n(&online[cpu], 1, __ATOMIC_RELEASE);

	count_up();
	__atomic_store_n(&done[cpu], 1, __ATOMIC_RELEASE);

	spin_lock(&done_lock);
	{
		uint32_t seen = ipis;

		gic_send_sgi(SGI_DONE, 1u << 0);
		while (ipis == seen)		/* until CPU 0 has taken it */
			;
	}
	spin_unlock(&done_lock);

	/* SGI 2 may still be on its way: parked with IRQs on, it is still taken. */
	for (;;)
		wfi();
}

/* Everything CPU 0 waits for from the CPUs in `started`. */
static int all_reported(uint32_t started)
{
	unsigned n = 0;

	for (unsigned i = 1; i < CPU_MAX; i++) {
		if (!(started & (1u << i)))
			continue;
		if (!done[i] || !pinged[i])
			return 0;
		n++;
	}
	return ipis >= n;
}

static int expired(uint64_t deadline)
{
	return deadline && read_cntvct() >= deadline;
}

int main(const void *dtb)
{
	uint64_t timeout = 60, freq = read_cntfrq(), expected, watchdog = 0;
	unsigned ncpus = fdt_cpu_count(dtb), i;
	uint32_t started = 0;
	int ok = 1;

	exc_init("smp");
	bootarg_u64(dtb, "iters", &iters);
	bootarg_u64(dtb, "timeout", &timeout);
	if (!freq)
		freq = FREQ_DEFAULT;
	if (ncpus > CPU_MAX)
		ncpus = CPU_MAX;

	uart_puts("smp: cpus=");
	put_dec(ncpus);
	uart_putc('\n');

	gic_dist_init();
	gic_cpu_init(0);
	gic_enable_private(0, SGI_DONE, IRQ_PRIO);
	gic_enable_private(0, INTID_VTIMER, IRQ_PRIO);
	poll_period = freq / POLL_HZ;
	if (timeout && timeout <= UINT64_MAX / 4 / freq)
		watchdog = read_cntvct() + timeout * freq;
	vtimer_set_cval(read_cntvct() + poll_period);
	vtimer_set_ctl(CNT_CTL_ENABLE);
	irq_enable();

	for (i = 1; i < ncpus; i++) {
		uint64_t r = hvc_call(PSCI_CPU_ON, i, (uintptr_t)secondary_entry, i);

		if (r) {
			uart_puts("smp: cpu");
			put_dec(i);
			uart_puts(" CPU_ON failed ");
			put_hex(r);
			uart_putc('\n');
			ok = 0;
		} else {
			started |= 1u << i;
		}
	}

	/* Bring-up is over when each started CPU has its IRQs on. */
	for (i = 1; i < ncpus; i++)
		while ((started & (1u << i)) && !online[i] && !expired(watchdog))
			;
	for (i = 1; i < ncpus; i++) {
		uint64_t r;

		if (!(started & (1u << i)))
			continue;
		r = hvc_call(PSCI_AFFINITY_INFO, i, 0, 0);
		uart_puts("smp: cpu");
		put_dec(i);
		if (r == 0 && online[i]) {
			uart_puts(" on\n");
		} else {
			uart_puts(" not on: affinity_info=");
			put_hex(r);
			uart_puts(online[i] ? "\n" : ", never ran\n");
			ok = 0;
		}
	}

	if (started)
		gic_send_sgi(SGI_PING, started);
	count_up();

	/* See lib/irq.h: a wakeup lost here costs at most one poll tick. */
	while (!all_reported(started) && !expired(watchdog))
		wfi();
	vtimer_set_ctl(0);

	if (!all_reported(started)) {
		uart_puts("smp: timeout after ");
		put_dec(timeout);
		uart_puts(" s\n");
		ok = 0;
	}
	expected = ncpus * iters;
	uart_puts("smp: counter=");
	put_dec(counter);
	uart_puts(" expected=");
	put_dec(expected);
	uart_puts(" ipis=");
	put_dec(ipis);
	uart_putc('\n');

	for (i = 1; i < ncpus; i++)
		if (!pinged[i])
			ok = 0;
	uart_puts(ok && counter == expected && ipis == ncpus - 1 ? "smp: PASS\n" : "smp: FAIL\n");
	halt();
}
