/*
 * Interrupts and SMP for pyned guests that need them (see images/README.md):
 * the EL1 vector table (vectors.S), the GICv3 distributor, redistributors
 * and CPU interface, the EL1 virtual timer, a spinlock, and the CPU count
 * from the DTB.  Only guests that use these link vectors.o and irq.o, so the
 * other images stay as they are.
 */
#ifndef PYNED_IRQ_H
#define PYNED_IRQ_H

#define CPU_MAX			16		/* GICR window in the DT: room for 16 */
#define CPU_STACK_SIZE		(16 * 1024)	/* per secondary CPU (cpu_stacks) */

#ifndef __ASSEMBLER__

#include "guest.h"

#pragma GCC visibility push(hidden)

#define GICD_BASE		0xAF000000UL
#define GICR_BASE		0xAF100000UL
#define GICR_STRIDE		0x20000UL	/* RD frame, then SGI frame at +0x10000 */

#define INTID_VTIMER		27		/* PPI 11: EL1 virtual timer, level */
#define INTID_SPURIOUS		1020		/* IAR values >= this are not interrupts */

#define CNT_CTL_ENABLE		(1u << 0)
#define CNT_CTL_IMASK		(1u << 1)
#define CNT_CTL_ISTATUS		(1u << 2)

/* ---- exceptions (vectors.S, irq.c) -------------------------------------- */

/*
 * Point VBAR_EL1 of the calling CPU at the vector table.  IRQs taken from
 * EL1h call irq_handler(intid) (which the guest defines) between an
 * ICC_IAR1_EL1 read and an ICC_EOIR1_EL1 write.  Every other exception
 * prints "<name>: unexpected exception ESR=0x.. ELR=0x.. FAR=0x.." and
 * powers the VM off.  Each CPU calls this before it unmasks anything.
 */
void exc_init(const char *name);
void irq_handler(uint32_t intid);

/*
 * PSCI CPU_ON entry point for secondary CPUs: pass the CPU index (< CPU_MAX)
 * as the context.  It sets SP to the top of that CPU's 16 KiB stack and
 * calls secondary_main(index), which the guest defines; if that returns, the
 * CPU parks in wfi.
 */
void secondary_entry(void);
void secondary_main(uint64_t cpu);

/*
 * The guests idle with IRQs unmasked: "if (nothing to do) wfi();".  If the
 * IRQ that brings work is taken between the check and the wfi, the wfi
 * sleeps until the next interrupt, so a guest that waits keeps a periodic
 * timer running to bound that delay.  (Checking with IRQs masked, then wfi, then
 * unmasking has no such gap on hardware, but it relies on the interrupt
 * being taken the moment the guest unmasks.  A VMM that injects only
 * between slices of guest execution would find the guest masked each time,
 * and the guest would spin through wfi without ever taking it.)
 */
static inline void irq_enable(void)  { __asm__ volatile("msr daifclr, #2" ::: "memory"); }
static inline void irq_disable(void) { __asm__ volatile("msr daifset, #2" ::: "memory"); }
static inline void wfi(void)         { __asm__ volatile("dsb sy\n\twfi" ::: "memory"); }

/* ---- GICv3 --------------------------------------------------------------- */

void gic_dist_init(void);		/* once, on the boot CPU */
void gic_cpu_init(unsigned cpu);	/* on each CPU: redistributor + ICC_* */
/* On CPU `cpu`'s redistributor: group 1, priority prio, enabled. */
void gic_enable_private(unsigned cpu, unsigned intid, uint8_t prio);
/* SGI intid (0..15) to the CPUs in targets (bit i = MPIDR Aff0 i, Aff1-3 0). */
void gic_send_sgi(unsigned intid, uint16_t targets);

/* ---- EL1 virtual timer --------------------------------------------------- */

static inline void vtimer_set_cval(uint64_t v)
{
	__asm__ volatile("msr cntv_cval_el0, %0\n\tisb" :: "r"(v) : "memory");
}

static inline void vtimer_set_ctl(uint32_t v)
{
	__asm__ volatile("msr cntv_ctl_el0, %0\n\tisb" :: "r"((uint64_t)v) : "memory");
}

/* Ticks of a CNTFRQ-rate counter as microseconds, without overflow. */
uint64_t ticks_to_us(uint64_t ticks, uint64_t freq);

/* ---- SMP ----------------------------------------------------------------- */

/* Test-and-set lock on ldaxr/stxr (Armv8.0 has no LSE); 0 = free. */
typedef struct {
	volatile uint32_t locked;
} spinlock_t;

void spin_lock(spinlock_t *l);
void spin_unlock(spinlock_t *l);

static inline unsigned cpu_index(void)	/* MPIDR Aff0 */
{
	return read_mpidr() & 0xff;
}

/* Children of /cpus with device_type = "cpu"; 1 if none or no DTB. */
unsigned fdt_cpu_count(const void *dtb);

#pragma GCC visibility pop

#endif /* __ASSEMBLER__ */

#endif
