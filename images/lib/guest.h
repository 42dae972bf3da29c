/*
 * Minimal runtime for pyned guest images (see images/README.md).
 *
 * Everything runs at EL1 with the MMU off, so all data accesses are
 * Device-nGnRnE: the build uses -mstrict-align because unaligned accesses
 * would fault on real hardware.
 */
#ifndef PYNED_GUEST_H
#define PYNED_GUEST_H

#include <stddef.h>
#include <stdint.h>

/* Everything is linked into one static PIE: keep accesses PC-relative, no GOT. */
#pragma GCC visibility push(hidden)

#define UART_BASE		0x9C090000UL	/* PL011 */
#define SYSCON_EXIT		0xA0000000UL	/* syscon-l4vmm: write V -> VM exits with V */

#define PSCI_VERSION		0x84000000UL
#define PSCI_CPU_OFF		0x84000002UL
#define PSCI_CPU_ON		0xC4000003UL
#define PSCI_AFFINITY_INFO	0xC4000004UL
#define PSCI_SYSTEM_OFF		0x84000008UL
#define PSCI_SYSTEM_RESET	0x84000009UL
#define PSCI_FEATURES		0x8400000AUL
#define UVMM_PRINT		0x86000000UL	/* hvc #1, character in x1 */

static inline uint32_t mmio_read32(uintptr_t a)
{
	return *(volatile uint32_t *)a;
}

static inline void mmio_write32(uintptr_t a, uint32_t v)
{
	*(volatile uint32_t *)a = v;
}

/* SMCCC call: x4-x17 are not preserved by SMCCC 1.0 callees. */
static inline uint64_t hvc_call(uint64_t fn, uint64_t a1, uint64_t a2, uint64_t a3)
{
	register uint64_t x0 __asm__("x0") = fn;
	register uint64_t x1 __asm__("x1") = a1;
	register uint64_t x2 __asm__("x2") = a2;
	register uint64_t x3 __asm__("x3") = a3;

	__asm__ volatile("hvc #0"
			 : "+r"(x0), "+r"(x1), "+r"(x2), "+r"(x3)
			 :
			 : "x4", "x5", "x6", "x7", "x8", "x9", "x10", "x11",
			   "x12", "x13", "x14", "x15", "x16", "x17", "memory");
	return x0;
}

#define READ_SYSREG(r) ({ uint64_t v_; __asm__ volatile("mrs %0, " #r : "=r"(v_)); v_; })

/* isb: keep the counter read from being hoisted over earlier work. */
static inline uint64_t read_cntvct(void)
{
	uint64_t v;

	__asm__ volatile("isb\n\tmrs %0, cntvct_el0" : "=r"(v) :: "memory");
	return v;
}

static inline uint64_t read_cntfrq(void) { return READ_SYSREG(cntfrq_el0); }
static inline uint64_t read_midr(void)   { return READ_SYSREG(midr_el1); }
static inline uint64_t read_mpidr(void)  { return READ_SYSREG(mpidr_el1); }
static inline unsigned current_el(void)  { return (READ_SYSREG(CurrentEL) >> 2) & 3; }

/* Console (PL011, polled).  '\n' is sent as-is, without a '\r'. */
void uart_putc(char c);
void uart_puts(const char *s);
void uart_write(const char *s, size_t n);
int uart_getc(void);			/* -1 if the receive FIFO is empty */
void put_hex(uint64_t v);		/* "0x" + lower-case hex, no leading zeros */
void put_dec(uint64_t v);

void hvc_putc(char c);			/* uvmm print hypercall, bypasses the UART */
void psci_system_off(void);		/* these return only if the host refuses */
void psci_system_reset(void);
__attribute__((noreturn)) void halt(void);	/* SYSTEM_OFF, else spin */

/* Read-only flattened device tree access.  All return NULL / 0 / -1 when
 * dtb is NULL or does not carry the FDT magic. */
int fdt_valid(const void *dtb);
const void *fdt_find_prop(const void *dtb, const char *path, const char *name,
			  uint32_t *len);
uint32_t fdt_be32(const void *p);	/* a big-endian cell, by bytes (any alignment) */

/* A walk of the structure block one token at a time, NOPs skipped: every
 * pyned guest's device-tree lookup is built on it. */
#define FDT_BEGIN_NODE	1
#define FDT_END_NODE	2
#define FDT_PROP	3
struct fdt_token {
	uint32_t kind;			/* FDT_BEGIN_NODE, FDT_END_NODE or FDT_PROP */
	const char *name;		/* the node's or the property's name, */
	size_t name_len;		/* not counting its NUL */
	const uint8_t *value;		/* FDT_PROP: the value and its length */
	uint32_t len;
};
struct fdt_walk {
	const uint8_t *fdt;
	uint64_t total, off, strs;
};
int fdt_walk_start(struct fdt_walk *w, const void *dtb);	/* 0: no valid blob */
int fdt_walk_next(struct fdt_walk *w, struct fdt_token *t);	/* 0: FDT_END, malformed */
int fdt_name_is(const struct fdt_token *t, const char *s);

/* /chosen/bootargs, split on blanks into words ("key" or "key=value"). */
const char *bootargs(const void *dtb, size_t *len);	/* NULL if absent */
int bootarg_has(const void *dtb, const char *word);	/* "word" or "word=..." */
int bootarg_value(const void *dtb, const char *key, char *buf, size_t n);
int bootarg_u64(const void *dtb, const char *key, uint64_t *val);
int parse_u64(const char *s, size_t n, uint64_t *val);

size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
void *memmove(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);

int main(const void *dtb);

#pragma GCC visibility pop

#endif
