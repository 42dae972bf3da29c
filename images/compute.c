/*
 * compute: fixed, deterministic CPU-bound workload for the speed benchmark.
 * bootargs: iters=N  (default 50000000)
 *
 * The same image also serves the bare-Unicorn baseline: the benchmark maps
 * the PT_LOAD segments, a PL011 stub at 0x9C090000 (FR reading 0) and enters
 * _start with x0 = 0; without a valid DTB the defaults apply, and it stops at
 * the PSCI SYSTEM_OFF hvc.  compute_workload() is kept as a global symbol so
 * the benchmark can also call it directly (x0 = iteration count, result in x0).
 */
#include "guest.h"

#define BUF_WORDS	(64 * 1024 / 8)

static uint64_t buf[BUF_WORDS];

__attribute__((noinline, visibility("default")))
uint64_t compute_workload(uint64_t iters)
{
	uint64_t x = 0x9e3779b97f4a7c15ULL, acc = 0;

	/* Re-seed the buffer so every run, however entered, is identical. */
	for (uint64_t i = 0; i < BUF_WORDS; i++)
		buf[i] = i;

	for (uint64_t i = 0; i < iters; i++) {
		uint64_t *p;

		x ^= x << 13;			/* xorshift64 */
		x ^= x >> 7;
		x ^= x << 17;
		p = &buf[(x >> 20) & (BUF_WORDS - 1)];
		*p = *p * 6364136223846793005ULL + 1442695040888963407ULL; /* LCG */
		acc = (acc ^ *p) + (acc << 5) + buf[i & (BUF_WORDS - 1)];
	}
	return acc;
}

int main(const void *dtb)
{
	uint64_t iters = 50000000, t0, result;

	bootarg_u64(dtb, "iters", &iters);

	uart_puts("compute: start\n");
	t0 = read_cntvct();
	result = compute_workload(iters);
	t0 = read_cntvct() - t0;

	uart_puts("compute: done result=");
	put_hex(result);
	uart_puts(" ticks=");
	put_dec(t0);
	uart_putc('\n');
	halt();
}
