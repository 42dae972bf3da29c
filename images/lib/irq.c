/*
 * Interrupts and SMP for pyned guests: exception reporting, GICv3, the
 * virtual timer's arithmetic, a spinlock and the CPU count (see irq.h).
 *
 * All GIC registers are accessed 32 bits at a time, the one width every
 * GICv3 register (or half of one) supports.
 */
#include "irq.h"

#define GICD_CTLR		0x0000
#define GICD_CTLR_ENABLE_G1NS	(1u << 1)
#define GICD_CTLR_ARE_NS	(1u << 4)

#define GICR_WAKER		0x0014		/* RD frame */
#define GICR_WAKER_PS		(1u << 1)	/* ProcessorSleep */
#define GICR_WAKER_CA		(1u << 2)	/* ChildrenAsleep */
#define GICR_SGI		0x10000		/* SGI frame */
#define GICR_IGROUPR0		(GICR_SGI + 0x0080)
#define GICR_ISENABLER0		(GICR_SGI + 0x0100)
#define GICR_IPRIORITYR		(GICR_SGI + 0x0400)

#define GIC_PMR			0xF0		/* lets through priorities 0x00..0xE0 */

#pragma GCC visibility push(hidden)
extern const char vectors[];

/* Called from vectors.S only. */
void irq_dispatch(void);
__attribute__((noreturn)) void exc_unexpected(void);
#pragma GCC visibility pop

static const char *exc_name;

/* ---- exceptions ---------------------------------------------------------- */

void exc_init(const char *name)
{
	exc_name = name;
	__asm__ volatile("msr vbar_el1, %0\n\tisb" :: "r"(vectors) : "memory");
}

void exc_unexpected(void)
{
	uint64_t esr = READ_SYSREG(esr_el1);
	uint64_t elr = READ_SYSREG(elr_el1);
	uint64_t far = READ_SYSREG(far_el1);

	uart_puts(exc_name ? exc_name : "guest");
	uart_puts(": unexpected exception ESR=");
	put_hex(esr);
	uart_puts(" ELR=");
	put_hex(elr);
	uart_puts(" FAR=");
	put_hex(far);
	uart_putc('\n');
	halt();
}

/* One interrupt per exception: if another is pending, it is taken again
 * right after the eret. */
void irq_dispatch(void)
{
	uint64_t iar = READ_SYSREG(ICC_IAR1_EL1);
	uint32_t intid = iar & 0xffffff;

	if (intid >= INTID_SPURIOUS)
		return;
	irq_handler(intid);
	__asm__ volatile("msr ICC_EOIR1_EL1, %0" :: "r"(iar) : "memory");
}

/* ---- GICv3 --------------------------------------------------------------- */

void gic_dist_init(void)
{
	mmio_write32(GICD_BASE + GICD_CTLR, GICD_CTLR_ARE_NS | GICD_CTLR_ENABLE_G1NS);
}

void gic_cpu_init(unsigned cpu)
{
	uintptr_t rd = GICR_BASE + cpu * GICR_STRIDE;

	mmio_write32(rd + GICR_WAKER, mmio_read32(rd + GICR_WAKER) & ~GICR_WAKER_PS);
	while (mmio_read32(rd + GICR_WAKER) & GICR_WAKER_CA)
		;
	mmio_write32(rd + GICR_IGROUPR0, 0xffffffff);	/* all SGIs/PPIs: group 1 */

	__asm__ volatile("mrs x0, ICC_SRE_EL1\n\t"
			 "orr x0, x0, #1\n\t"			/* SRE */
			 "msr ICC_SRE_EL1, x0\n\t"
			 "isb\n\t"
			 "msr ICC_PMR_EL1, %0\n\t"
			 "msr ICC_IGRPEN1_EL1, %1\n\t"
			 "isb"
			 :: "r"((uint64_t)GIC_PMR), "r"((uint64_t)1) : "x0", "memory");
}

void gic_enable_private(unsigned cpu, unsigned intid, uint8_t prio)
{
	uintptr_t rd = GICR_BASE + cpu * GICR_STRIDE;
	uintptr_t pri = rd + GICR_IPRIORITYR + (intid & ~3u);
	unsigned shift = (intid & 3) * 8;

	mmio_write32(pri, (mmio_read32(pri) & ~(0xffu << shift)) | (uint32_t)prio << shift);
	mmio_write32(rd + GICR_ISENABLER0, 1u << intid);
}

void gic_send_sgi(unsigned intid, uint16_t targets)
{
	uint64_t v = (uint64_t)(intid & 0xf) << 24 | targets;

	/* dsb: what this CPU wrote is visible before the target takes the SGI. */
	__asm__ volatile("dsb ish\n\tmsr ICC_SGI1R_EL1, %0\n\tisb" :: "r"(v) : "memory");
}

/* ---- timer --------------------------------------------------------------- */

uint64_t ticks_to_us(uint64_t ticks, uint64_t freq)
{
	if (!freq)
		return 0;
	/* ticks % freq < freq < 2^44 for any real counter, so * 10^6 fits. */
	return ticks / freq * 1000000 + ticks % freq * 1000000 / freq;
}

/* ---- SMP ----------------------------------------------------------------- */

/*
 * Test-and-test-and-set: the exchange compiles to an ldaxr/stxr loop.  It is
 * unfair on purpose: under a VMM that time-slices the vCPUs on one thread, a
 * ticket lock would hand over on every release and need a vCPU switch per
 * acquisition; this one lets the running vCPU take it again.
 */
void spin_lock(spinlock_t *l)
{
	while (__atomic_exchange_n(&l->locked, 1, __ATOMIC_ACQUIRE))
		while (__atomic_load_n(&l->locked, __ATOMIC_RELAXED))
			;
}

void spin_unlock(spinlock_t *l)
{
	__atomic_store_n(&l->locked, 0, __ATOMIC_RELEASE);
}

/* The root opens depth 1, so /cpus is at depth 2 and each CPU node at 3. */
unsigned fdt_cpu_count(const void *dtb)
{
	struct fdt_walk w;
	struct fdt_token t;
	int depth = 0, in_cpus = 0, is_cpu = 0;
	unsigned n = 0;

	if (!fdt_walk_start(&w, dtb))
		return 1;
	while (fdt_walk_next(&w, &t)) {
		if (t.kind == FDT_BEGIN_NODE) {
			if (++depth == 2)
				in_cpus = fdt_name_is(&t, "cpus");
			else if (depth == 3)
				is_cpu = 0;
		} else if (t.kind == FDT_END_NODE) {
			if (depth == 0)
				break;
			if (depth == 3 && in_cpus)
				n += is_cpu;
			if (depth == 2)
				in_cpus = 0;
			depth--;
		} else if (depth == 3 && in_cpus && fdt_name_is(&t, "device_type") &&
			   t.len == 4 && !memcmp(t.value, "cpu", 4)) {
			is_cpu = 1;
		}
	}
	return n ? n : 1;
}
