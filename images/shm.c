/*
 * shm: two VMs talk through memory they share and doorbells, as uvmm offers
 * them: a memory node with l4vmm,dscap = "shm" is the shared dataspace, an
 * l4vmm,virq-snd node is a window where a store rings the peer, and an
 * l4vmm,virq-rcv node is the peer's ring as an interrupt.
 *
 * The shared memory starts with two 64-byte mailboxes, 0 from ping to pong
 * and 1 back: { u32 seq; u32 len; char text[56]; }.  A sender writes text
 * and len, then seq (with barriers in between), then rings.  The receiver
 * waits until seq has the value it expects, so a ring is only a wake-up and
 * one that comes early or twice changes nothing.  The virtual timer runs at
 * 100 Hz as well, so the wait also ends if a ring were lost.
 *
 * bootargs: role=ping|pong  (default pong)
 *           rounds=N        messages each way (default 100)
 *           name=S          put into the messages (default the role)
 *           timeout=N       seconds to wait for one message (default 10)
 */
#include "dev.h"

#define ROUNDS_DEFAULT		100
#define TIMEOUT_DEFAULT		10
#define DOORBELL_PRIO		0x80
#define TICK_PRIO		0x90
#define RTT_MAX			4096
#define TEXT_MAX		56

struct mailbox {
	volatile uint32_t seq;
	volatile uint32_t len;
	volatile char text[TEXT_MAX];
};

static struct mailbox *box_out, *box_in;
static uintptr_t bell;
static int bell_intid = -1;
static volatile uint64_t rings;
static uint64_t tick_period;
static uint32_t rtt[RTT_MAX];

static inline void dsb(void) { __asm__ volatile("dsb sy" ::: "memory"); }

void irq_handler(uint32_t intid)
{
	if ((int)intid == bell_intid)
		rings++;
	else if (intid == INTID_VTIMER)
		vtimer_set_cval(read_cntvct() + tick_period);
}

static unsigned fmt(char *buf, const char *word, uint64_t n, const char *name)
{
	char digits[20];
	unsigned len = 0, d = 0;

	for (; *word && len < TEXT_MAX - 1; word++)
		buf[len++] = *word;
	do {
		digits[d++] = '0' + n % 10;
		n /= 10;
	} while (n);
	while (d && len < TEXT_MAX - 1)
		buf[len++] = digits[--d];
	for (const char *s = " from "; *s && len < TEXT_MAX - 1; s++)
		buf[len++] = *s;
	for (; *name && len < TEXT_MAX - 1; name++)
		buf[len++] = *name;
	buf[len] = 0;
	return len;
}

static void send(uint32_t seq, const char *word, const char *name)
{
	char buf[TEXT_MAX];
	unsigned len = fmt(buf, word, seq, name);

	for (unsigned i = 0; i <= len; i++)
		box_out->text[i] = buf[i];
	box_out->len = len;
	dsb();
	box_out->seq = seq;
	dsb();
	mmio_write32(bell, 1);
}

/*
 * Wait until the inbox holds `seq`; 0 on timeout.  The check runs with IRQs
 * masked and the wfi follows it, so a ring that comes in between keeps the
 * wfi from sleeping; the unmask then takes it.
 */
static int receive(uint32_t seq, uint64_t timeout)
{
	uint64_t end = read_cntvct() + timeout;

	for (;;) {
		int here;

		irq_disable();
		here = box_in->seq == seq;
		if (!here && read_cntvct() < end)
			wfi();
		irq_enable();
		if (here)
			break;
		if (read_cntvct() >= end)
			return 0;
	}
	dsb();
	return 1;
}

static int text_is(const char *word, uint64_t n)
{
	char want[TEXT_MAX];
	unsigned len = fmt(want, word, n, ""), i;

	len -= 6;	/* without " from " */
	for (i = 0; i < len; i++)
		if (box_in->text[i] != want[i])
			return 0;
	return box_in->text[len] == ' ';
}

static void put_text(void)
{
	uint32_t len = box_in->len < TEXT_MAX ? box_in->len : TEXT_MAX - 1;

	uart_putc('"');
	for (uint32_t i = 0; i < len; i++)
		uart_putc(box_in->text[i]);
	uart_putc('"');
}

/* Wait for message n and check its word; say why not (or, for the first, what came). */
static int expect_message(uint64_t n, uint64_t timeout, const char *word, const char *what)
{
	if (!receive(n, timeout)) {
		uart_puts("shm: timeout waiting for ");
		uart_puts(what);
		uart_putc(' ');
		put_dec(n);
		uart_putc('\n');
		return 0;
	}
	if (!text_is(word, n)) {
		uart_puts("shm: ");
		uart_puts(what);
		uart_putc(' ');
		put_dec(n);
		uart_puts(" is wrong: ");
		put_text();
		uart_putc('\n');
		return 0;
	}
	if (n == 1) {
		uart_puts("shm: first ");
		uart_puts(what);
		uart_putc(' ');
		put_text();
		uart_putc('\n');
	}
	return 1;
}

static void sort(uint32_t *a, unsigned n)
{
	for (unsigned i = 1; i < n; i++) {
		uint32_t v = a[i];
		unsigned j = i;

		for (; j && a[j - 1] > v; j--)
			a[j] = a[j - 1];
		a[j] = v;
	}
}

int main(const void *dtb)
{
	uint64_t freq = read_cntfrq(), rounds = ROUNDS_DEFAULT, timeout = TIMEOUT_DEFAULT;
	char role[8] = "pong", name[33] = "";
	struct dt_dev mem, snd, rcv;
	int ping;

	exc_init("shm");
	bootarg_value(dtb, "role", role, sizeof(role));
	ping = !strcmp(role, "ping");
	if (!bootarg_value(dtb, "name", name, sizeof(name)))
		memcpy(name, role, sizeof(role));
	bootarg_u64(dtb, "rounds", &rounds);
	bootarg_u64(dtb, "timeout", &timeout);
	timeout *= freq;
	tick_period = freq / 100;

	uart_puts("shm: pyned guest up name=");
	uart_puts(name);
	uart_puts(" role=");
	uart_puts(ping ? "ping" : "pong");
	uart_putc('\n');
	if (!dt_find(dtb, "l4vmm,dscap", "shm", 0, &mem) || mem.size < 128 ||
	    !dt_find(dtb, "compatible", "l4vmm,virq-snd", 0, &snd) ||
	    !dt_find(dtb, "compatible", "l4vmm,virq-rcv", 0, &rcv) || rcv.intid < 32) {
		uart_puts("shm: no shared memory or doorbells in the device tree\n");
		halt();
	}
	box_out = (struct mailbox *)(uintptr_t)(mem.base + (ping ? 0 : 64));
	box_in = (struct mailbox *)(uintptr_t)(mem.base + (ping ? 64 : 0));
	bell = snd.base;
	bell_intid = rcv.intid;
	uart_puts("shm: shared memory at ");
	put_hex(mem.base);
	uart_puts(" size ");
	put_hex(mem.size);
	uart_puts(", doorbell out at ");
	put_hex(bell);
	uart_puts(", doorbell in irq ");
	put_dec(bell_intid);
	uart_putc('\n');

	gic_dist_init();
	gic_cpu_init(0);
	gic_enable_private(0, INTID_VTIMER, TICK_PRIO);
	gic_enable_spi(bell_intid, DOORBELL_PRIO, rcv.edge);
	vtimer_set_cval(read_cntvct() + tick_period);
	vtimer_set_ctl(CNT_CTL_ENABLE);
	irq_enable();

	if (ping) {
		uint64_t done = 0, worst = 0;

		for (uint64_t i = 1; i <= rounds; i++) {
			uint64_t t0 = read_cntvct(), t;

			send(i, "ping ", name);
			if (!expect_message(i, timeout, "pong ", "reply"))
				break;
			t = read_cntvct() - t0;
			if (done < RTT_MAX)
				rtt[done] = t;
			worst = t > worst ? t : worst;
			done++;
		}
		sort(rtt, done < RTT_MAX ? done : RTT_MAX);
		uart_puts("shm: ");
		put_dec(done);
		uart_putc('/');
		put_dec(rounds);
		uart_puts(" round trips, rtt median ");
		put_dec(done ? ticks_to_us(rtt[(done < RTT_MAX ? done : RTT_MAX) / 2], freq) : 0);
		uart_puts(" us max ");
		put_dec(ticks_to_us(worst, freq));
		uart_puts(" us, doorbells ");
		put_dec(rings);
		uart_putc('\n');
	} else {
		uint64_t i;

		for (i = 1; i <= rounds; i++) {
			if (!expect_message(i, timeout, "ping ", "message"))
				break;
			send(i, "pong ", name);
		}
		uart_puts("shm: answered ");
		put_dec(i - 1);
		uart_puts(" messages, doorbells ");
		put_dec(rings);
		uart_putc('\n');
	}
	halt();
}
