/*
 * busy: a noisy neighbour.  Computes at full speed forever: it never idles
 * and never powers off, and prints a line every 2^28 loop iterations so a
 * test can see it is still being scheduled.  No timer, no interrupts.
 * bootargs: seconds=N  stop after N seconds of CNTVCT and power off
 *                      (default: run forever)
 */
#include "guest.h"

#define FREQ_DEFAULT	62500000	/* if CNTFRQ_EL0 reads 0 */
#define CHUNK_BITS	20		/* iterations between clock checks */
#define LINE_BITS	28		/* iterations between lines */

int main(const void *dtb)
{
	uint64_t seconds, freq = read_cntfrq(), end = 0, x = 0x9e3779b97f4a7c15ULL;
	int limited = 0;

	if (!freq)
		freq = FREQ_DEFAULT;
	if (bootarg_u64(dtb, "seconds", &seconds) && seconds <= UINT64_MAX / 2 / freq) {
		limited = 1;
		end = read_cntvct() + seconds * freq;
	}

	uart_puts("busy: started\n");
	for (uint64_t k = 1;; k++) {
		for (unsigned c = 0; c < 1u << (LINE_BITS - CHUNK_BITS); c++) {
			for (unsigned i = 0; i < 1u << CHUNK_BITS; i++) {
				x ^= x << 13;		/* xorshift64 */
				x ^= x >> 7;
				x ^= x << 17;
			}
			/* Keep the work: x is an input to nothing else. */
			__asm__ volatile("" : "+r"(x));
			if (limited && read_cntvct() >= end) {
				uart_puts("busy: done\n");
				halt();
			}
		}
		uart_puts("busy: still busy ");
		put_dec(k);
		uart_putc('\n');
	}
}
