/*
 * rtos: a small tick-driven kernel.  The EL1 virtual timer interrupts hz
 * times a second through the GICv3.  Each tick measures how late it was
 * taken, re-arms the timer for the next absolute deadline and releases the
 * next task, round-robin.  The tasks run to completion in the main loop
 * between ticks.  With nothing to run, the CPU waits in wfi.
 * At the end it prints the median and 99th percentile of all lateness
 * samples, from a histogram with one bucket per microsecond.
 * bootargs: hz=N       tick rate (default 1000; 0 or above CNTFRQ: default)
 *           seconds=N  power off after N seconds (default: run forever)
 */
#include "irq.h"

#define HZ_DEFAULT	1000
#define FREQ_DEFAULT	62500000	/* if CNTFRQ_EL0 reads 0 */
#define TICK_PRIO	0x80
#define SUM_WORDS	256
#define HIST_US		10000		/* the last bucket holds everything later */

struct task {
	void (*run)(void);
	volatile int ready;		/* set by the tick, cleared when picked */
};

struct stats {
	uint64_t tick;			/* total ticks at the end of the second */
	uint64_t worst, sum, n;		/* lateness over that second, in counter ticks */
	uint64_t task_a, task_b;
};

static void task_a(void);
static void task_b(void);

static struct task tasks[] = { { task_a, 0 }, { task_b, 0 } };
#define NTASKS	(sizeof(tasks) / sizeof(tasks[0]))

/* Shared between the tick handler and the main loop (one CPU). */
static volatile uint64_t ticks, spurious;
static volatile int stopped, report_ready;
static struct stats second, report;	/* accumulating / last complete second */
static uint64_t deadline;		/* the CVAL the timer is armed with */

/* Lateness of every counted tick, in whole microseconds; tick handler only. */
static uint32_t hist[HIST_US + 1];
static uint64_t worst_ever;

/* Set by main before the timer starts. */
static uint64_t hz, period, limit, freq;
static int limited;

/* The tasks' own state: only the main loop touches it (the tick reads it). */
static volatile uint64_t counter_a, runs_b;
static volatile uint32_t checksum;
static uint32_t sum_buf[SUM_WORDS];

/* Task A: count. */
static void task_a(void)
{
	counter_a++;
}

/* Task B: a Fletcher-32 over a buffer it then changes, so each run differs. */
static void task_b(void)
{
	uint32_t s1 = 0xffff, s2 = 0xffff;

	for (unsigned i = 0; i < SUM_WORDS; i++) {
		s1 = (s1 + (sum_buf[i] & 0xffff)) % 65535;
		s2 = (s2 + s1) % 65535;
		s1 = (s1 + (sum_buf[i] >> 16)) % 65535;
		s2 = (s2 + s1) % 65535;
	}
	checksum = s2 << 16 | s1;
	sum_buf[runs_b % SUM_WORDS] ^= checksum;
	runs_b++;
}

/* The scheduler: release the next task in round-robin order. */
static void schedule(void)
{
	static unsigned next;

	tasks[next].ready = 1;
	next = (next + 1) % NTASKS;
}

static void tick(void)
{
	uint64_t now = read_cntvct(), late;

	/* A level that the GIC had not yet seen drop: not a deadline. */
	if (now < deadline) {
		spurious++;
		return;
	}
	/* Past the end: keep ticking (an idle main loop needs a wakeup), uncounted. */
	if (stopped) {
		deadline += period;
		vtimer_set_cval(deadline);
		return;
	}
	late = now - deadline;
	ticks++;
	if (late > second.worst)
		second.worst = late;
	if (late > worst_ever)
		worst_ever = late;
	{
		uint64_t us = ticks_to_us(late, freq);

		hist[us < HIST_US ? us : HIST_US]++;
	}
	second.sum += late;
	second.n++;

	/* Absolute: a late tick does not push the later ones back. */
	deadline += period;
	vtimer_set_cval(deadline);
	if (limited && ticks >= limit)
		stopped = 1;

	if (ticks % hz == 0) {
		second.tick = ticks;
		second.task_a = counter_a;
		second.task_b = runs_b;
		report = second;
		report_ready = 1;
		second.worst = second.sum = second.n = 0;
	}
	schedule();
}

void irq_handler(uint32_t intid)
{
	if (intid == INTID_VTIMER)
		tick();
}

static void print_report(void)
{
	struct stats r;

	irq_disable();
	r = report;
	report_ready = 0;
	irq_enable();

	uart_puts("rtos: tick=");
	put_dec(r.tick);
	uart_puts(" worst_late_us=");
	put_dec(ticks_to_us(r.worst, freq));
	uart_puts(" mean_late_us=");
	put_dec(ticks_to_us(r.n ? r.sum / r.n : 0, freq));
	uart_puts(" taskA=");
	put_dec(r.task_a);
	uart_puts(" taskB=");
	put_dec(r.task_b);
	uart_putc('\n');
}

/* Take the next ready task after the one that ran last, or NULL. */
static struct task *pick(void)
{
	static unsigned last;
	struct task *t = NULL;

	irq_disable();			/* the tick may be setting ready right now */
	for (unsigned i = 1; i <= NTASKS; i++) {
		unsigned n = (last + i) % NTASKS;

		if (tasks[n].ready) {
			tasks[n].ready = 0;
			last = n;
			t = &tasks[n];
			break;
		}
	}
	irq_enable();
	return t;
}

static int have_work(void)
{
	if (report_ready || stopped)
		return 1;
	for (unsigned i = 0; i < NTASKS; i++)
		if (tasks[i].ready)
			return 1;
	return 0;
}

/* The smallest lateness (us) that at least pct percent of the samples do not exceed. */
static uint64_t percentile(uint64_t n, unsigned pct)
{
	uint64_t want = (n * pct + 99) / 100, seen = 0;

	for (unsigned us = 0; us <= HIST_US; us++) {
		seen += hist[us];
		if (seen >= want)
			return us;
	}
	return HIST_US;
}

static void print_latency(void)
{
	uint64_t n = 0;

	for (unsigned us = 0; us <= HIST_US; us++)
		n += hist[us];
	uart_puts("rtos: latency_us n=");
	put_dec(n);
	uart_puts(" p50=");
	put_dec(n ? percentile(n, 50) : 0);
	uart_puts(" p99=");
	put_dec(n ? percentile(n, 99) : 0);
	uart_puts(" max=");
	put_dec(ticks_to_us(worst_ever, freq));
	uart_putc('\n');
}

int main(const void *dtb)
{
	uint64_t seconds;
	unsigned cpu = cpu_index();

	exc_init("rtos");
	freq = read_cntfrq();

	if (!freq)
		freq = FREQ_DEFAULT;
	hz = HZ_DEFAULT;
	bootarg_u64(dtb, "hz", &hz);
	if (!hz || hz > freq)
		hz = HZ_DEFAULT;
	period = freq / hz;
	if (bootarg_u64(dtb, "seconds", &seconds) && seconds <= UINT64_MAX / hz) {
		limited = 1;
		limit = seconds * hz;
	}
	for (unsigned i = 0; i < SUM_WORDS; i++)
		sum_buf[i] = i * 0x9e3779b9u;

	uart_puts("rtos: started hz=");
	put_dec(hz);
	uart_putc('\n');

	gic_dist_init();
	gic_cpu_init(cpu);
	gic_enable_private(cpu, INTID_VTIMER, TICK_PRIO);

	stopped = limited && limit == 0;
	deadline = read_cntvct() + period;
	vtimer_set_cval(deadline);
	vtimer_set_ctl(CNT_CTL_ENABLE);
	irq_enable();

	for (;;) {
		struct task *t;

		if (report_ready)
			print_report();
		if (stopped)
			break;
		t = pick();
		if (t) {
			t->run();
			continue;
		}
		/* See lib/irq.h: a wakeup lost here costs at most one tick. */
		if (!have_work())
			wfi();
	}

	irq_disable();
	vtimer_set_ctl(0);
	/* The last tick may have set both report_ready and stopped. */
	if (report_ready)
		print_report();
	print_latency();
	uart_puts("rtos: done ticks=");
	put_dec(ticks);
	/* Ticks taken before their deadline: an early timer interrupt, never right. */
	uart_puts(" spurious=");
	put_dec(spurious);
	uart_putc('\n');
	halt();
}
