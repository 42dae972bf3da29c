/*
 * virtio: a driver for virtio-mmio devices, written to VIRTIO 1.2 (modern
 * register layout, Version 2; split virtqueues).  It finds every enabled
 * "virtio,mmio" node in the DTB (translating reg through the parents'
 * ranges), initialises each device (3.1.1), exercises it and prints what it
 * saw.  Supported: console (ID 3), entropy (4), block (2) and network (1).
 *
 * No MMU: the guest's addresses are physical, so a static buffer's address
 * is what goes into a descriptor.  The rings and buffers live in .bss.
 *
 * Waiting for the device: IRQs are masked, the used ring is checked, and
 * only then does the CPU wfi, unmasking afterwards.  The used ring lives in
 * memory, so progress is seen even if an interrupt is never taken, and an
 * interrupt that arrives between the check and the wfi keeps it pending and
 * wfi returns at once (no lost wakeup).  The EL1 virtual timer runs at
 * POLL_HZ so that the timeouts fire even if a device never interrupts.
 *
 * bootargs: see images/README.md ("virtio").
 */
#include "irq.h"

/* ---- virtio-mmio registers (VIRTIO 1.2, 4.2.2) --------------------------- */

#define VIRTIO_MMIO_MAGIC_VALUE		0x000
#define VIRTIO_MMIO_VERSION		0x004
#define VIRTIO_MMIO_DEVICE_ID		0x008
#define VIRTIO_MMIO_DEVICE_FEATURES	0x010
#define VIRTIO_MMIO_DEVICE_FEATURES_SEL	0x014
#define VIRTIO_MMIO_DRIVER_FEATURES	0x020
#define VIRTIO_MMIO_DRIVER_FEATURES_SEL	0x024
#define VIRTIO_MMIO_QUEUE_SEL		0x030
#define VIRTIO_MMIO_QUEUE_NUM_MAX	0x034
#define VIRTIO_MMIO_QUEUE_NUM		0x038
#define VIRTIO_MMIO_QUEUE_READY		0x044
#define VIRTIO_MMIO_QUEUE_NOTIFY	0x050
#define VIRTIO_MMIO_INTERRUPT_STATUS	0x060
#define VIRTIO_MMIO_INTERRUPT_ACK	0x064
#define VIRTIO_MMIO_STATUS		0x070
#define VIRTIO_MMIO_QUEUE_DESC_LOW	0x080
#define VIRTIO_MMIO_QUEUE_DESC_HIGH	0x084
#define VIRTIO_MMIO_QUEUE_DRIVER_LOW	0x090
#define VIRTIO_MMIO_QUEUE_DRIVER_HIGH	0x094
#define VIRTIO_MMIO_QUEUE_DEVICE_LOW	0x0a0
#define VIRTIO_MMIO_QUEUE_DEVICE_HIGH	0x0a4
#define VIRTIO_MMIO_CONFIG_GENERATION	0x0fc
#define VIRTIO_MMIO_CONFIG		0x100

#define VIRTIO_MAGIC			0x74726976	/* "virt" */

/* Device status (2.1) */
#define STATUS_ACKNOWLEDGE		1
#define STATUS_DRIVER			2
#define STATUS_DRIVER_OK		4
#define STATUS_FEATURES_OK		8
#define STATUS_NEEDS_RESET		64
#define STATUS_FAILED			128

/* Reserved feature bits (6) */
#define F_VERSION_1			(1ULL << 32)
#define F_ACCESS_PLATFORM		(1ULL << 33)

/* Device IDs (5) */
#define ID_NET				1
#define ID_BLOCK			2
#define ID_CONSOLE			3
#define ID_ENTROPY			4

/* Split virtqueue (2.7) */
#define VIRTQ_DESC_F_NEXT		1
#define VIRTQ_DESC_F_WRITE		2
#define VIRTQ_USED_F_NO_NOTIFY		1

/* ---- limits and timing --------------------------------------------------- */

#define MAX_DEVS	8
#define MAX_VQS		2
#define QMAX		16		/* largest queue size we ask for (a power of 2) */
#define DT_MAX_DEPTH	16
#define FREQ_DEFAULT	62500000	/* if CNTFRQ_EL0 reads 0 */
#define POLL_HZ		100		/* timer wakeups: bound the timeouts' latency */
#define IRQ_PRIO	0x80
#define TIMEOUT_S	2		/* waiting for one used buffer */

#define GICD_IGROUPR	0x0080
#define GICD_ISENABLER	0x0100
#define GICD_IPRIORITYR	0x0400
#define GICD_ICFGR	0x0c00
#define GICD_IROUTER	0x6000

/* ---- virtqueue structures ------------------------------------------------- */

struct virtq_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

struct virtq_avail {
	uint16_t flags;
	uint16_t idx;
	uint16_t ring[QMAX];
	uint16_t used_event;		/* unused: no VIRTIO_F_EVENT_IDX */
};

struct virtq_used_elem {
	uint32_t id;
	uint32_t len;
};

struct virtq_used {
	uint16_t flags;
	uint16_t idx;
	struct virtq_used_elem ring[QMAX];
	uint16_t avail_event;
};

/* One queue's rings: descriptors 16-aligned, driver area 2, device area 4. */
struct ring_mem {
	struct virtq_desc desc[QMAX];
	struct virtq_avail avail;
	struct virtq_used used __attribute__((aligned(16)));
} __attribute__((aligned(64)));

struct vdev;

struct vq {
	struct vdev *dev;
	unsigned index;
	uint16_t num;			/* 0: not set up */
	uint16_t num_free, free_head;
	uint16_t avail_idx;		/* next avail->idx */
	uint16_t last_used;		/* used->idx we have consumed up to */
	volatile struct virtq_desc *desc;
	volatile struct virtq_avail *avail;
	volatile struct virtq_used *used;
	/* Driver-private: the free list / chain links, chain lengths by head
	 * (0 = not in flight) and a cookie per chain.  Kept out of the rings
	 * so that a misbehaving device cannot corrupt the bookkeeping. */
	uint16_t link[QMAX];
	uint16_t chain[QMAX];
	uint32_t cookie[QMAX];
};

struct vdev {
	uintptr_t base;
	unsigned intid;			/* 0: none, polled */
	uint32_t id;
	const char *tag;
	uint64_t offered, features;	/* device features / negotiated ones */
	int failed;
	struct vq vq[MAX_VQS];
	volatile uint32_t irqs, isr;	/* interrupt count, InterruptStatus bits seen */
};

struct vbuf {
	uintptr_t addr;
	uint32_t len;
	int write;			/* device-writable */
};

static struct ring_mem rings[MAX_DEVS][MAX_VQS];
static struct vdev devs[MAX_DEVS];
static unsigned ndevs;

static const void *dtb;
static uint64_t freq, poll_period;
static char name[33] = "virtio";

/* ---- small helpers ------------------------------------------------------- */

static inline void dmb(void) { __asm__ volatile("dmb sy" ::: "memory"); }
static inline void dsb(void) { __asm__ volatile("dsb sy" ::: "memory"); }

static inline uint8_t mmio_read8(uintptr_t a) { return *(volatile uint8_t *)a; }

static uint64_t now(void) { return read_cntvct(); }

static uint64_t after_s(uint64_t s) { return read_cntvct() + s * freq; }

static uint64_t us_of(uint64_t ticks)
{
	return ticks_to_us(ticks, freq);
}

static void put_str_dec(const char *s, uint64_t v)
{
	uart_puts(s);
	put_dec(v);
}

static void put_bytes_hex(const volatile uint8_t *p, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		uart_putc("0123456789abcdef"[p[i] >> 4]);
		uart_putc("0123456789abcdef"[p[i] & 15]);
	}
}

/* Decimal digits of v into buf (no NUL); returns the length. */
static unsigned fmt_dec(char *buf, uint64_t v)
{
	char tmp[20];
	unsigned n = 0, len;

	do {
		tmp[n++] = '0' + v % 10;
		v /= 10;
	} while (v);
	for (len = 0; n; len++)
		buf[len] = tmp[--n];
	return len;
}

static unsigned str_copy(char *d, const char *s)
{
	unsigned n = 0;

	while (s[n]) {
		d[n] = s[n];
		n++;
	}
	return n;
}

/* ---- interrupts ---------------------------------------------------------- */

void irq_handler(uint32_t intid)
{
	if (intid == INTID_VTIMER) {
		vtimer_set_cval(read_cntvct() + poll_period);
		return;
	}
	for (unsigned i = 0; i < ndevs; i++) {
		struct vdev *d = &devs[i];
		uint32_t s;

		if (d->intid != intid)
			continue;
		s = mmio_read32(d->base + VIRTIO_MMIO_INTERRUPT_STATUS);
		if (s)
			mmio_write32(d->base + VIRTIO_MMIO_INTERRUPT_ACK, s);
		d->isr |= s;
		d->irqs++;
	}
}

/* SPI: group 1, level, routed to CPU 0, enabled.  PPI: via the redistributor. */
static void gic_enable_irq(unsigned intid)
{
	uintptr_t grp = GICD_BASE + GICD_IGROUPR + intid / 32 * 4;
	uintptr_t pri = GICD_BASE + GICD_IPRIORITYR + (intid & ~3u);
	uintptr_t cfg = GICD_BASE + GICD_ICFGR + intid / 16 * 4;
	unsigned shift = (intid & 3) * 8;

	if (intid < 32) {
		gic_enable_private(0, intid, IRQ_PRIO);
		return;
	}
	mmio_write32(grp, mmio_read32(grp) | 1u << (intid % 32));
	mmio_write32(pri, (mmio_read32(pri) & ~(0xffu << shift)) | (uint32_t)IRQ_PRIO << shift);
	mmio_write32(cfg, mmio_read32(cfg) & ~(2u << (intid % 16 * 2)));
	mmio_write32(GICD_BASE + GICD_IROUTER + intid * 8, 0);		/* Aff0 = 0 */
	mmio_write32(GICD_BASE + GICD_IROUTER + intid * 8 + 4, 0);
	mmio_write32(GICD_BASE + GICD_ISENABLER + intid / 32 * 4, 1u << (intid % 32));
}

/*
 * Returns 1 as soon as ready(arg) holds, 0 if deadline passed first.  The
 * check runs with IRQs masked and the wfi follows it, so an interrupt that
 * arrives in between stays pending and ends the wfi at once; the unmask
 * then takes it.
 */
static int wait_until(int (*ready)(void *), void *arg, uint64_t deadline)
{
	for (;;) {
		int r;

		irq_disable();
		r = ready(arg);
		if (!r && read_cntvct() < deadline)
			wfi();
		irq_enable();
		if (r)
			return 1;
		if (read_cntvct() >= deadline)
			return ready(arg);
	}
}

/* ---- device tree --------------------------------------------------------- */

#define FDT_MAGIC	0xd00dfeed
#define FDT_BEGIN_NODE	1
#define FDT_END_NODE	2
#define FDT_PROP	3
#define FDT_NOP		4

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* A value of n (<= 2) cells. */
static uint64_t cells(const uint8_t *p, unsigned n)
{
	return n == 2 ? (uint64_t)be32(p) << 32 | be32(p + 4) : n == 1 ? be32(p) : 0;
}

struct dt_frame {
	uint32_t acells, scells;	/* for this node's children */
	const uint8_t *ranges, *reg, *irqs;
	uint32_t ranges_len, reg_len, irqs_len;
	int has_ranges, virtio, disabled;
};

static int prop_is(const char *pn, size_t max, const char *want)
{
	size_t n = strlen(want);

	return n < max && !memcmp(pn, want, n + 1);
}

/* A stringlist contains s. */
static int strlist_has(const uint8_t *v, uint32_t len, const char *s)
{
	size_t n = strlen(s);

	for (uint32_t off = 0; off < len;) {
		uint32_t e = off;

		while (e < len && v[e])
			e++;
		if (e - off == n && !memcmp(v + off, s, n))
			return 1;
		off = e + 1;
	}
	return 0;
}

/* Translate a bus address of the node at depth d up to the root. */
static int dt_translate(const struct dt_frame *f, int d, uint64_t *addr)
{
	for (int k = d - 1; k >= 2; k--) {
		const struct dt_frame *bus = &f[k], *up = &f[k - 1];
		uint32_t entry = (bus->acells + up->acells + bus->scells) * 4;
		int found = 0;

		if (!bus->has_ranges)
			return -1;		/* no ranges: not memory-mapped */
		if (!bus->ranges_len)
			continue;		/* "ranges;": identity */
		if (bus->acells > 2 || up->acells > 2 || bus->scells > 2 || !entry)
			return -1;
		for (uint32_t off = 0; off + entry <= bus->ranges_len; off += entry) {
			const uint8_t *r = bus->ranges + off;
			uint64_t child = cells(r, bus->acells);
			uint64_t parent = cells(r + bus->acells * 4, up->acells);
			uint64_t size = cells(r + (bus->acells + up->acells) * 4, bus->scells);

			if (*addr >= child && *addr - child < size) {
				*addr = parent + (*addr - child);
				found = 1;
				break;
			}
		}
		if (!found)
			return -1;
	}
	return 0;
}

static void add_device(uint64_t addr, unsigned intid)
{
	struct vdev *d;

	if (ndevs == MAX_DEVS) {
		uart_puts("virtio: too many devices, ignoring the one at ");
		put_hex(addr);
		uart_putc('\n');
		return;
	}
	d = &devs[ndevs++];
	d->base = addr;
	d->intid = intid;
	d->tag = "virtio";
}

static void dt_node_done(const struct dt_frame *f, int d)
{
	const struct dt_frame *n = &f[d];
	uint32_t ac = f[d - 1].acells, sc = f[d - 1].scells;
	uint64_t addr;
	unsigned intid = 0;

	for (int k = 1; k <= d; k++)
		if (f[k].disabled)
			return;
	if (!n->virtio)
		return;
	if (!n->reg || ac < 1 || ac > 2 || n->reg_len < (ac + sc) * 4) {
		uart_puts("virtio: virtio,mmio node without a usable reg, skipped\n");
		return;
	}
	addr = cells(n->reg, ac);
	if (dt_translate(f, d, &addr)) {
		uart_puts("virtio: cannot translate reg ");
		put_hex(addr);
		uart_puts(" through the parents' ranges, skipped\n");
		return;
	}
	/* GIC specifier <type number flags>: SPI n = INTID 32 + n, PPI n = 16 + n. */
	if (n->irqs && n->irqs_len >= 12) {
		uint32_t type = be32(n->irqs), num = be32(n->irqs + 4);

		if (type == 0 && num < 988)
			intid = 32 + num;
		else if (type == 1 && num < 16)
			intid = 16 + num;
	}
	add_device(addr, intid);
}

/* Collect every enabled virtio,mmio node, in tree order. */
static void dt_scan(void)
{
	const uint8_t *fdt = dtb;
	struct dt_frame f[DT_MAX_DEPTH + 1];
	uint64_t total, off, strs;
	int depth = 0;

	if (!fdt_valid(dtb))
		return;
	total = be32(fdt + 4);
	off = be32(fdt + 8);
	strs = be32(fdt + 12);
	memset(f, 0, sizeof(f));

	while (off + 4 <= total) {
		uint32_t tok = be32(fdt + off);

		off += 4;
		if (tok == FDT_BEGIN_NODE) {
			size_t nlen = 0;

			while (off + nlen < total && fdt[off + nlen])
				nlen++;
			off += (nlen + 4) & ~3ULL;
			if (++depth > DT_MAX_DEPTH)
				return;
			memset(&f[depth], 0, sizeof(f[depth]));
			f[depth].acells = 2;		/* DT spec defaults */
			f[depth].scells = 1;
		} else if (tok == FDT_END_NODE) {
			if (depth == 0)
				return;
			if (depth >= 2)
				dt_node_done(f, depth);
			depth--;
		} else if (tok == FDT_PROP) {
			uint32_t len, nameoff;
			const uint8_t *v;
			const char *pn;
			size_t max;
			struct dt_frame *n = &f[depth];

			if (off + 8 > total || depth == 0)
				return;
			len = be32(fdt + off);
			nameoff = be32(fdt + off + 4);
			off += 8;
			if (off + len > total || strs + nameoff >= total)
				return;
			v = fdt + off;
			pn = (const char *)fdt + strs + nameoff;
			max = total - strs - nameoff;
			off += (len + 3) & ~3ULL;

			if (prop_is(pn, max, "#address-cells") && len == 4)
				n->acells = be32(v);
			else if (prop_is(pn, max, "#size-cells") && len == 4)
				n->scells = be32(v);
			else if (prop_is(pn, max, "ranges"))
				n->has_ranges = 1, n->ranges = v, n->ranges_len = len;
			else if (prop_is(pn, max, "reg"))
				n->reg = v, n->reg_len = len;
			else if (prop_is(pn, max, "interrupts"))
				n->irqs = v, n->irqs_len = len;
			else if (prop_is(pn, max, "compatible"))
				n->virtio = strlist_has(v, len, "virtio,mmio");
			else if (prop_is(pn, max, "status"))
				n->disabled = !strlist_has(v, len, "okay") && !strlist_has(v, len, "ok");
		} else if (tok != FDT_NOP) {
			return;			/* FDT_END or garbage */
		}
	}
}

/* ---- device status and diagnostics --------------------------------------- */

static uint32_t dev_status(struct vdev *d)
{
	return mmio_read32(d->base + VIRTIO_MMIO_STATUS);
}

static void dev_say(struct vdev *d)
{
	uart_puts("virtio: ");
	uart_puts(d->tag);
	uart_puts(" at ");
	put_hex(d->base);
}

/* Reset: write 0, then wait until Status reads back 0 (2.1.2, 4.2.3.1). */
static int dev_reset(struct vdev *d)
{
	uint64_t deadline = after_s(TIMEOUT_S);

	mmio_write32(d->base + VIRTIO_MMIO_STATUS, 0);
	while (dev_status(d)) {
		if (read_cntvct() >= deadline) {
			dev_say(d);
			uart_puts(": reset not complete, status ");
			put_hex(dev_status(d));
			uart_putc('\n');
			return -1;
		}
	}
	return 0;
}

/* Give up on the device: say why, set FAILED, then reset it so that it
 * stops using our buffers. */
static void dev_fail(struct vdev *d, const char *why)
{
	uint32_t st = dev_status(d);

	dev_say(d);
	uart_puts(": ");
	uart_puts(why);
	uart_puts(", status ");
	put_hex(st);
	if (st & STATUS_NEEDS_RESET)
		uart_puts(" (DEVICE_NEEDS_RESET)");
	uart_puts(", giving up\n");
	mmio_write32(d->base + VIRTIO_MMIO_STATUS, st | STATUS_FAILED);
	dev_reset(d);
	d->failed = 1;
}

static void vq_fail(struct vq *q, const char *why)
{
	struct vdev *d = q->dev;
	uint32_t st = dev_status(d);

	dev_say(d);
	put_str_dec(" queue ", q->index);
	uart_puts(": ");
	uart_puts(why);
	uart_puts(", status ");
	put_hex(st);
	uart_puts(" InterruptStatus ");
	put_hex(mmio_read32(d->base + VIRTIO_MMIO_INTERRUPT_STATUS));
	put_str_dec(" used.idx ", q->used->idx);
	put_str_dec(" expected ", (uint16_t)(q->last_used + 1));
	put_str_dec(" irqs ", d->irqs);
	uart_puts(", giving up\n");
	mmio_write32(d->base + VIRTIO_MMIO_STATUS, st | STATUS_FAILED);
	dev_reset(d);
	d->failed = 1;
}

/* ---- virtqueues ---------------------------------------------------------- */

/* 4.2.3.2: select, check not ready, size from QueueNumMax, addresses, ready. */
static int vq_setup(struct vdev *d, unsigned qi, unsigned want)
{
	struct vq *q = &d->vq[qi];
	struct ring_mem *m = &rings[d - devs][qi];
	uint32_t max;
	unsigned num = want;

	mmio_write32(d->base + VIRTIO_MMIO_QUEUE_SEL, qi);
	if (mmio_read32(d->base + VIRTIO_MMIO_QUEUE_READY)) {
		dev_say(d);
		put_str_dec(": queue ", qi);
		uart_puts(" is already ready after reset\n");
		return -1;
	}
	max = mmio_read32(d->base + VIRTIO_MMIO_QUEUE_NUM_MAX);
	if (!max) {
		dev_say(d);
		put_str_dec(": queue ", qi);
		uart_puts(" not available (QueueNumMax 0)\n");
		return -1;
	}
	while (num > max)
		num >>= 1;		/* stays a power of 2 */

	memset(m, 0, sizeof(*m));
	memset(q, 0, sizeof(*q));
	q->dev = d;
	q->index = qi;
	q->num = num;
	q->num_free = num;
	q->desc = m->desc;
	q->avail = &m->avail;
	q->used = &m->used;
	for (unsigned i = 0; i < num; i++)
		q->link[i] = i + 1;

	mmio_write32(d->base + VIRTIO_MMIO_QUEUE_NUM, num);
	mmio_write32(d->base + VIRTIO_MMIO_QUEUE_DESC_LOW, (uintptr_t)m->desc);
	mmio_write32(d->base + VIRTIO_MMIO_QUEUE_DESC_HIGH, (uint64_t)(uintptr_t)m->desc >> 32);
	mmio_write32(d->base + VIRTIO_MMIO_QUEUE_DRIVER_LOW, (uintptr_t)&m->avail);
	mmio_write32(d->base + VIRTIO_MMIO_QUEUE_DRIVER_HIGH, (uint64_t)(uintptr_t)&m->avail >> 32);
	mmio_write32(d->base + VIRTIO_MMIO_QUEUE_DEVICE_LOW, (uintptr_t)&m->used);
	mmio_write32(d->base + VIRTIO_MMIO_QUEUE_DEVICE_HIGH, (uint64_t)(uintptr_t)&m->used >> 32);
	dsb();
	mmio_write32(d->base + VIRTIO_MMIO_QUEUE_READY, 1);
	return 0;
}

/*
 * Put a chain of n buffers (device-readable ones first, 2.7.4.2) into the
 * available ring; no notification yet.  Returns the head, or -1 if there
 * are not enough free descriptors.
 */
static int vq_add(struct vq *q, const struct vbuf *b, unsigned n, uint32_t cookie)
{
	uint16_t head = q->free_head, i = head;

	if (!n || n > q->num_free)
		return -1;
	for (unsigned k = 0; k < n; k++) {
		volatile struct virtq_desc *desc = &q->desc[i];
		uint16_t next = q->link[i];

		desc->addr = b[k].addr;
		desc->len = b[k].len;
		desc->flags = (b[k].write ? VIRTQ_DESC_F_WRITE : 0) |
			      (k + 1 < n ? VIRTQ_DESC_F_NEXT : 0);
		desc->next = k + 1 < n ? next : 0;
		if (k + 1 < n)
			i = next;
		else
			q->free_head = next;
	}
	q->num_free -= n;
	q->chain[head] = n;
	q->cookie[head] = cookie;

	q->avail->ring[q->avail_idx % q->num] = head;
	dmb();				/* the entry before the index that publishes it */
	q->avail->idx = ++q->avail_idx;
	return head;
}

/* Notify unless the device asked not to be (2.7.10.1, no EVENT_IDX). */
static void vq_kick(struct vq *q)
{
	dsb();
	if (!(q->used->flags & VIRTQ_USED_F_NO_NOTIFY))
		mmio_write32(q->dev->base + VIRTIO_MMIO_QUEUE_NOTIFY, q->index);
}

static int vq_ready(void *arg)
{
	struct vq *q = arg;

	dmb();
	return q->used->idx != q->last_used;
}

/*
 * Take one used element: 1 (cookie and length filled in), 0 if none,
 * -1 if the device returned a descriptor that is not in flight (the device
 * is then failed).
 */
static int vq_pop(struct vq *q, uint32_t *cookie, uint32_t *len)
{
	volatile struct virtq_used_elem *e;
	uint32_t id;
	uint16_t i;

	if (!vq_ready(q))
		return 0;
	dmb();				/* the element after the index */
	e = &q->used->ring[q->last_used % q->num];
	id = e->id;
	if (len)
		*len = e->len;
	q->last_used++;
	if (id >= q->num || !q->chain[id]) {
		vq_fail(q, "used ring returned a descriptor not in flight");
		return -1;
	}
	if (cookie)
		*cookie = q->cookie[id];
	/* Put the chain back on the free list. */
	i = id;
	for (unsigned k = 1; k < q->chain[id]; k++)
		i = q->link[i];
	q->link[i] = q->free_head;
	q->free_head = id;
	q->num_free += q->chain[id];
	q->chain[id] = 0;
	return 1;
}

/* Wait up to TIMEOUT_S for a used element; on timeout report and fail. */
static int vq_wait(struct vq *q)
{
	if (wait_until(vq_ready, q, after_s(TIMEOUT_S)))
		return 0;
	vq_fail(q, "timeout waiting for used buffer");
	return -1;
}

/* Submit one chain, wait for it and take it back: 0, or -1 (device failed). */
static int vq_sync(struct vq *q, const struct vbuf *b, unsigned n, uint32_t *len)
{
	if (vq_add(q, b, n, 0) < 0) {
		vq_fail(q, "no free descriptors");
		return -1;
	}
	vq_kick(q);
	if (vq_wait(q))
		return -1;
	return vq_pop(q, NULL, len) == 1 ? 0 : -1;
}

/* ---- device initialisation (3.1.1) --------------------------------------- */

static void set_status(struct vdev *d, uint32_t bits)
{
	mmio_write32(d->base + VIRTIO_MMIO_STATUS, dev_status(d) | bits);
}

static uint64_t read_features(struct vdev *d)
{
	uint64_t f;

	mmio_write32(d->base + VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
	f = (uint64_t)mmio_read32(d->base + VIRTIO_MMIO_DEVICE_FEATURES) << 32;
	mmio_write32(d->base + VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
	return f | mmio_read32(d->base + VIRTIO_MMIO_DEVICE_FEATURES);
}

/*
 * Reset, ACKNOWLEDGE, DRIVER, negotiate (VERSION_1 required; the device's
 * own features from `want` plus ACCESS_PLATFORM if offered: addresses are
 * physical and identity-mapped either way), FEATURES_OK and check it,
 * queues 0..nq-1 of up to qsize[i] entries, DRIVER_OK.
 */
static int dev_start(struct vdev *d, uint64_t want, unsigned nq, const unsigned *qsize)
{
	uint64_t accept;

	if (dev_reset(d))
		return -1;
	set_status(d, STATUS_ACKNOWLEDGE);
	set_status(d, STATUS_DRIVER);
	d->offered = read_features(d);
	if (!(d->offered & F_VERSION_1)) {
		dev_fail(d, "VIRTIO_F_VERSION_1 not offered");
		return -1;
	}
	accept = d->offered & (want | F_VERSION_1 | F_ACCESS_PLATFORM);
	mmio_write32(d->base + VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
	mmio_write32(d->base + VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)accept);
	mmio_write32(d->base + VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
	mmio_write32(d->base + VIRTIO_MMIO_DRIVER_FEATURES, accept >> 32);
	set_status(d, STATUS_FEATURES_OK);
	if (!(dev_status(d) & STATUS_FEATURES_OK)) {
		dev_fail(d, "FEATURES_OK not accepted");
		return -1;
	}
	d->features = accept;
	dev_say(d);
	uart_puts(" features offered ");
	put_hex(d->offered);
	uart_puts(" accepted ");
	put_hex(accept);
	uart_putc('\n');

	for (unsigned i = 0; i < nq; i++) {
		if (vq_setup(d, i, qsize[i])) {
			dev_fail(d, "queue setup failed");
			return -1;
		}
	}
	set_status(d, STATUS_DRIVER_OK);
	if (dev_status(d) & STATUS_NEEDS_RESET) {
		dev_fail(d, "device needs reset after DRIVER_OK");
		return -1;
	}
	return 0;
}

/* Device configuration: generation-checked reads (2.5.4) of natural width (4.2.2.2). */
static uint32_t cfg_gen(struct vdev *d)
{
	return mmio_read32(d->base + VIRTIO_MMIO_CONFIG_GENERATION);
}

static uint64_t cfg_read64(struct vdev *d, unsigned off)
{
	uint32_t g, lo, hi;

	do {
		g = cfg_gen(d);
		lo = mmio_read32(d->base + VIRTIO_MMIO_CONFIG + off);
		hi = mmio_read32(d->base + VIRTIO_MMIO_CONFIG + off + 4);
	} while (g != cfg_gen(d));
	return (uint64_t)hi << 32 | lo;
}

static uint32_t cfg_read32(struct vdev *d, unsigned off)
{
	return mmio_read32(d->base + VIRTIO_MMIO_CONFIG + off);
}

/* ---- console (5.3) ------------------------------------------------------- */

#define CON_RX_BUFS	4
#define CON_CHUNK	4096

static char con_msg[96];
static uint8_t con_rx[CON_RX_BUFS][64];
static char con_bench_buf[CON_CHUNK] __attribute__((aligned(64)));

static void bench_console(struct vq *tx)
{
	uint64_t kb = 256, total, sent = 0, done = 0, t0, us;
	unsigned inflight = 0, max_inflight = tx->num < 8 ? tx->num : 8;

	bootarg_u64(dtb, "bench_kb", &kb);
	total = kb * 1024;
	/* Printable lines of 64 bytes. */
	for (unsigned i = 0; i < CON_CHUNK; i++)
		con_bench_buf[i] = i % 64 == 63 ? '\n' : 'a' + (i / 64 + i) % 26;

	t0 = now();
	while (done < total) {
		int added = 0;

		while (sent < total && inflight < max_inflight) {
			uint32_t n = total - sent < CON_CHUNK ? total - sent : CON_CHUNK;
			struct vbuf b = { (uintptr_t)con_bench_buf, n, 0 };

			if (vq_add(tx, &b, 1, n) < 0)
				break;
			sent += n;
			inflight++;
			added = 1;
		}
		if (added)
			vq_kick(tx);
		if (vq_wait(tx))
			return;
		for (;;) {
			uint32_t n;
			int r = vq_pop(tx, &n, NULL);

			if (r < 0)
				return;
			if (!r)
				break;
			done += n;
			inflight--;
		}
	}
	us = us_of(now() - t0);
	if (!us)
		us = 1;
	put_str_dec("bench console: ", total * 1000 / us);
	put_str_dec(" KB/s (", total);
	put_str_dec(" bytes in ", us);
	uart_puts(" us)\n");
}

static void run_console(struct vdev *d, const char *bench)
{
	static const unsigned qs[2] = { CON_RX_BUFS, QMAX };	/* receiveq0, transmitq0 */
	struct vq *rx = &d->vq[0], *tx = &d->vq[1];
	struct vbuf b;
	unsigned n;

	if (dev_start(d, 0, 2, qs))
		return;
	/* Input is not used, but give port 0's receiveq somewhere to put it. */
	for (unsigned i = 0; i < rx->num; i++) {
		b = (struct vbuf){ (uintptr_t)con_rx[i], sizeof(con_rx[i]), 1 };
		vq_add(rx, &b, 1, i);
	}
	vq_kick(rx);

	n = str_copy(con_msg, "virtio-console: hello from ");
	n += str_copy(con_msg + n, name);
	con_msg[n++] = '\n';
	b = (struct vbuf){ (uintptr_t)con_msg, n, 0 };
	if (vq_sync(tx, &b, 1, NULL))
		return;
	uart_puts("console: ok\n");

	if (!strcmp(bench, "console"))
		bench_console(tx);
}

/* ---- entropy (5.4) ------------------------------------------------------- */

static uint8_t rng_buf[16] __attribute__((aligned(16)));

static void run_rng(struct vdev *d)
{
	static const unsigned qs[1] = { 8 };
	unsigned have = 0, tries = 0;

	if (dev_start(d, 0, 1, qs))
		return;
	/* The device may return fewer bytes than asked for: ask again. */
	while (have < sizeof(rng_buf)) {
		struct vbuf b = { (uintptr_t)(rng_buf + have), sizeof(rng_buf) - have, 1 };
		uint32_t len;

		if (vq_sync(&d->vq[0], &b, 1, &len))
			return;
		if (len > sizeof(rng_buf) - have) {
			put_str_dec("rng: device claims ", len);
			put_str_dec(" bytes written into a buffer of ", sizeof(rng_buf) - have);
			uart_putc('\n');
			len = sizeof(rng_buf) - have;
		}
		have += len;
		if (++tries == 16 && have < sizeof(rng_buf)) {
			put_str_dec("rng: only ", have);
			uart_puts(" bytes after 16 requests\n");
			return;
		}
	}
	uart_puts("rng: ");
	put_bytes_hex(rng_buf, sizeof(rng_buf));
	uart_putc('\n');
}

/* ---- block (5.2) --------------------------------------------------------- */

#define BLK_F_SIZE_MAX	(1ULL << 1)
#define BLK_F_SEG_MAX	(1ULL << 2)
#define BLK_F_RO	(1ULL << 5)
#define BLK_F_FLUSH	(1ULL << 9)

#define BLK_T_IN	0
#define BLK_T_OUT	1
#define BLK_T_FLUSH	4
#define BLK_T_GET_ID	8

#define BLK_S_OK	0
#define BLK_S_IOERR	1
#define BLK_S_UNSUPP	2

#define BLK_CFG_CAPACITY	0
#define BLK_CFG_SIZE_MAX	8
#define BLK_CFG_SEG_MAX		12

#define SECTOR		512
#define BENCH_REQ	65536
#define BENCH_INFLIGHT	4

struct blk_hdr {
	uint32_t type;
	uint32_t reserved;
	uint64_t sector;
};

static struct blk_hdr blk_sync_hdr __attribute__((aligned(16)));
static volatile uint8_t blk_sync_status;
static uint8_t blk_sector[SECTOR] __attribute__((aligned(64)));
static uint8_t blk_pattern[SECTOR] __attribute__((aligned(64)));
static char blk_id[21];

/* Per in-flight bench request (indexed by its head descriptor). */
static struct blk_hdr blk_hdrs[QMAX] __attribute__((aligned(16)));
static volatile uint8_t blk_status[QMAX];
static uint8_t blk_data[BENCH_REQ] __attribute__((aligned(64)));

/* One request, synchronously: the status byte, or -1 if the device failed. */
static int blk_request(struct vdev *d, uint32_t type, uint64_t sector, void *data,
		       uint32_t len, int data_in)
{
	struct vbuf b[3];
	unsigned n = 0;

	blk_sync_hdr.type = type;
	blk_sync_hdr.reserved = 0;
	blk_sync_hdr.sector = sector;
	blk_sync_status = 0xff;		/* a device that does not write it shows */
	b[n++] = (struct vbuf){ (uintptr_t)&blk_sync_hdr, sizeof(blk_sync_hdr), 0 };
	if (len)
		b[n++] = (struct vbuf){ (uintptr_t)data, len, data_in };
	b[n++] = (struct vbuf){ (uintptr_t)&blk_sync_status, 1, 1 };
	if (vq_sync(&d->vq[0], b, n, NULL))
		return -1;
	return blk_sync_status;
}

static void blk_say_status(const char *what, int st)
{
	uart_puts("blk: ");
	uart_puts(what);
	put_str_dec(" failed, status ", st);
	uart_puts(st == BLK_S_IOERR ? " (IOERR)\n" : st == BLK_S_UNSUPP ? " (UNSUPP)\n" : "\n");
}

/* Data segment size and request size that the device's limits allow. */
static uint32_t blk_seg_size(struct vdev *d)
{
	uint32_t seg = BENCH_REQ;

	if (d->features & BLK_F_SIZE_MAX) {
		uint32_t m = cfg_read32(d, BLK_CFG_SIZE_MAX) & ~(SECTOR - 1);

		if (m && m < seg)
			seg = m;
	}
	return seg;
}

static void bench_blk(struct vdev *d, uint64_t capacity, int write)
{
	const char *what = write ? "bench blk-write: " : "bench blk-read: ";
	struct vq *q = &d->vq[0];
	uint32_t seg = blk_seg_size(d), req, segs;
	unsigned max_segs = q->num - 2, inflight = 0, max_inflight;
	uint64_t mb = 64, nreq, submitted = 0, completed = 0, sector = 0, t0, us, total;

	if ((d->features & BLK_F_SEG_MAX) && cfg_read32(d, BLK_CFG_SEG_MAX) &&
	    cfg_read32(d, BLK_CFG_SEG_MAX) < max_segs)
		max_segs = cfg_read32(d, BLK_CFG_SEG_MAX);
	req = (uint64_t)seg * max_segs < BENCH_REQ ? seg * max_segs : BENCH_REQ;
	if (capacity < req / SECTOR)
		req = capacity * SECTOR;
	if (!req) {
		uart_puts(what);
		uart_puts("skipped (empty disk or no room for a request)\n");
		return;
	}
	segs = (req + seg - 1) / seg;
	max_inflight = q->num / (segs + 2);
	if (max_inflight > BENCH_INFLIGHT)
		max_inflight = BENCH_INFLIGHT;

	bootarg_u64(dtb, "bench_mb", &mb);
	nreq = mb * 1024 * 1024 / req;
	if (!nreq)
		nreq = 1;
	for (unsigned i = 0; i < req; i++)
		blk_data[i] = i * 13 + 7;

	t0 = now();
	while (completed < nreq) {
		int added = 0;

		while (submitted < nreq && inflight < max_inflight) {
			struct vbuf b[QMAX];
			unsigned n = 0, slot = q->free_head;

			if (sector + req / SECTOR > capacity)
				sector = 0;		/* wrap around the disk */
			blk_hdrs[slot].type = write ? BLK_T_OUT : BLK_T_IN;
			blk_hdrs[slot].reserved = 0;
			blk_hdrs[slot].sector = sector;
			blk_status[slot] = 0xff;
			b[n++] = (struct vbuf){ (uintptr_t)&blk_hdrs[slot], sizeof(struct blk_hdr), 0 };
			for (uint32_t off = 0; off < req; off += seg)
				b[n++] = (struct vbuf){ (uintptr_t)blk_data + off,
							req - off < seg ? req - off : seg, !write };
			b[n++] = (struct vbuf){ (uintptr_t)&blk_status[slot], 1, 1 };
			if (vq_add(q, b, n, slot) < 0)
				break;
			sector += req / SECTOR;
			submitted++;
			inflight++;
			added = 1;
		}
		if (added)
			vq_kick(q);
		if (vq_wait(q))
			return;
		for (;;) {
			uint32_t slot;
			int r = vq_pop(q, &slot, NULL);

			if (r < 0)
				return;
			if (!r)
				break;
			if (blk_status[slot] != BLK_S_OK) {
				uart_puts(what);
				put_str_dec("request failed, status ", blk_status[slot]);
				uart_putc('\n');
				return;
			}
			completed++;
			inflight--;
		}
	}
	if (write && (d->features & BLK_F_FLUSH)) {
		int st = blk_request(d, BLK_T_FLUSH, 0, NULL, 0, 0);

		if (st) {
			if (st > 0)
				blk_say_status("bench flush", st);
			return;
		}
	}
	us = us_of(now() - t0);
	if (!us)
		us = 1;
	total = nreq * req;
	uart_puts(what);
	put_dec(total / us);			/* bytes per us = MB/s (10^6) */
	put_str_dec(" MB/s (", nreq);
	put_str_dec(" requests of ", req);
	put_str_dec(" bytes in ", us);
	uart_puts(" us)\n");
}

/* "pyned-virtio name=<name> count=<n>\n", then a byte pattern. */
static void blk_make_pattern(uint64_t count)
{
	unsigned n = str_copy((char *)blk_pattern, "pyned-virtio name=");

	n += str_copy((char *)blk_pattern + n, name);
	n += str_copy((char *)blk_pattern + n, " count=");
	n += fmt_dec((char *)blk_pattern + n, count);
	blk_pattern[n++] = '\n';
	for (; n < SECTOR; n++)
		blk_pattern[n] = (n * 31 + count) & 0xff;
}

/* The count of a pattern we wrote on an earlier run, or 0. */
static uint64_t blk_old_count(void)
{
	static const char magic[] = "pyned-virtio name=";
	uint64_t v = 0;

	if (memcmp(blk_sector, magic, sizeof(magic) - 1))
		return 0;
	for (unsigned i = sizeof(magic) - 1; i + 6 < 128; i++) {
		if (!memcmp(blk_sector + i, "count=", 6)) {
			unsigned j = i + 6;

			while (j < 128 && blk_sector[j] >= '0' && blk_sector[j] <= '9' && v < 1000000000)
				v = v * 10 + blk_sector[j++] - '0';
			return v;
		}
	}
	return 0;
}

static void blk_write_test(struct vdev *d, uint64_t capacity)
{
	uint64_t last = capacity - 1, count;
	int st;

	if (d->features & BLK_F_RO) {
		blk_make_pattern(0);
		st = blk_request(d, BLK_T_OUT, last, blk_pattern, SECTOR, 0);
		if (st < 0)
			return;
		if (st == BLK_S_IOERR)
			uart_puts("blk: read-only write refused ok\n");
		else
			put_str_dec("blk: read-only write NOT refused, status ", st), uart_putc('\n');
		return;
	}

	st = blk_request(d, BLK_T_IN, last, blk_sector, SECTOR, 1);
	if (st) {
		if (st > 0)
			blk_say_status("read of the last sector", st);
		return;
	}
	count = blk_old_count() + 1;
	blk_make_pattern(count);
	put_str_dec("blk: writing count ", count);
	put_str_dec(" to sector ", last);
	uart_putc('\n');

	st = blk_request(d, BLK_T_OUT, last, blk_pattern, SECTOR, 0);
	if (st) {
		if (st > 0)
			blk_say_status("write", st);
		return;
	}
	if (d->features & BLK_F_FLUSH) {
		st = blk_request(d, BLK_T_FLUSH, 0, NULL, 0, 0);
		if (st) {
			if (st > 0)
				blk_say_status("flush", st);
			return;
		}
	}
	memset(blk_sector, 0, SECTOR);
	st = blk_request(d, BLK_T_IN, last, blk_sector, SECTOR, 1);
	if (st) {
		if (st > 0)
			blk_say_status("readback", st);
		return;
	}
	if (memcmp(blk_sector, blk_pattern, SECTOR))
		uart_puts("blk: readback MISMATCH\n");
	else if (d->features & BLK_F_FLUSH)
		uart_puts("blk: write flush readback ok\n");
	else
		uart_puts("blk: write readback ok (no flush: VIRTIO_BLK_F_FLUSH not offered)\n");
}

static void run_blk(struct vdev *d, const char *bench)
{
	static const unsigned qs[1] = { QMAX };
	uint64_t capacity, blkwrite = 1;
	int st;

	if (dev_start(d, BLK_F_SIZE_MAX | BLK_F_SEG_MAX | BLK_F_RO | BLK_F_FLUSH, 1, qs))
		return;
	if (d->vq[0].num < 4) {
		dev_fail(d, "requestq smaller than 4 entries");
		return;
	}
	capacity = cfg_read64(d, BLK_CFG_CAPACITY);
	put_str_dec("blk: capacity ", capacity);
	uart_puts(" sectors\n");

	memset(blk_id, 0, sizeof(blk_id));
	st = blk_request(d, BLK_T_GET_ID, 0, blk_id, 20, 1);
	if (st < 0)
		return;
	if (st == BLK_S_OK) {
		uart_puts("blk: id ");
		for (unsigned i = 0; i < 20 && blk_id[i]; i++)
			uart_putc(blk_id[i] >= ' ' && blk_id[i] < 127 ? blk_id[i] : '.');
		uart_putc('\n');
	} else {
		blk_say_status("GET_ID", st);
	}

	if (!capacity) {
		uart_puts("blk: empty disk, no reads or writes\n");
		return;
	}
	st = blk_request(d, BLK_T_IN, 0, blk_sector, SECTOR, 1);
	if (st) {
		if (st > 0)
			blk_say_status("read of sector 0", st);
		return;
	}
	uart_puts("blk: sector0 ");
	put_bytes_hex(blk_sector, 16);
	uart_putc('\n');

	bootarg_u64(dtb, "blkwrite", &blkwrite);
	if (!blkwrite)
		uart_puts("blk: write test skipped (blkwrite=0)\n");
	else
		blk_write_test(d, capacity);
	if (d->failed)
		return;

	if (!strcmp(bench, "blk-read")) {
		bench_blk(d, capacity, 0);
	} else if (!strcmp(bench, "blk-write")) {
		if (d->features & BLK_F_RO)
			uart_puts("bench blk-write: skipped (read-only device)\n");
		else if (!blkwrite)
			uart_puts("bench blk-write: skipped (blkwrite=0)\n");
		else
			bench_blk(d, capacity, 1);
	}
}

/* ---- network (5.1) ------------------------------------------------------- */

#define NET_F_MAC	(1ULL << 5)
#define NET_HDR_LEN	12		/* struct virtio_net_hdr with VERSION_1 */
#define NET_RX_LEN	2048		/* >= 12 + 1514 (no GSO, no MRG_RXBUF) */
#define NET_TX_LEN	128
#define ETH_HLEN	14
#define ETH_ZLEN	60		/* minimum frame without FCS */
#define ETH_TYPE	0x88b5		/* IEEE local experimental */
#define MAX_RTT		4096
#define MAX_LOST_RUN	3

static uint8_t net_rx[QMAX][NET_RX_LEN] __attribute__((aligned(64)));
static uint8_t net_tx[QMAX][NET_TX_LEN] __attribute__((aligned(64)));
static uint8_t mac[6];
static const uint8_t bcast[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
static uint32_t rtts[MAX_RTT];

struct frame {
	uint8_t src[6];
	uint16_t type;
	char payload[32];		/* NUL-terminated copy of the start */
};

static void put_mac(const uint8_t *m)
{
	for (unsigned i = 0; i < 6; i++) {
		if (i)
			uart_putc(':');
		put_bytes_hex(m + i, 1);
	}
}

static void net_post(struct vq *rx, unsigned slot)
{
	struct vbuf b = { (uintptr_t)net_rx[slot], NET_RX_LEN, 1 };

	vq_add(rx, &b, 1, slot);
}

/* Take back transmitted buffers.  -1 if the device failed. */
static int net_reclaim(struct vq *tx)
{
	int r;

	while ((r = vq_pop(tx, NULL, NULL)) > 0)
		;
	return r;
}

/* Send a minimum-size frame of our ethertype with payload msg.  -1: failed. */
static int net_send(struct vdev *d, const uint8_t *dst, const char *msg)
{
	struct vq *tx = &d->vq[1];
	uint8_t *p;
	unsigned slot, n;
	struct vbuf b;

	if (net_reclaim(tx) < 0)
		return -1;
	if (!tx->num_free) {
		if (vq_wait(tx) || net_reclaim(tx) < 0)
			return -1;
	}
	slot = tx->free_head;		/* the descriptor index doubles as buffer slot */
	p = net_tx[slot];
	memset(p, 0, NET_HDR_LEN + ETH_ZLEN);	/* header: no csum, GSO_NONE, num_buffers 0 */
	memcpy(p + NET_HDR_LEN, dst, 6);
	memcpy(p + NET_HDR_LEN + 6, mac, 6);
	p[NET_HDR_LEN + 12] = ETH_TYPE >> 8;
	p[NET_HDR_LEN + 13] = ETH_TYPE & 0xff;
	n = strlen(msg);
	if (n > ETH_ZLEN - ETH_HLEN - 1)
		n = ETH_ZLEN - ETH_HLEN - 1;
	memcpy(p + NET_HDR_LEN + ETH_HLEN, msg, n);
	b = (struct vbuf){ (uintptr_t)p, NET_HDR_LEN + ETH_ZLEN, 0 };
	if (vq_add(tx, &b, 1, slot) < 0) {
		vq_fail(tx, "no free descriptors");
		return -1;
	}
	vq_kick(tx);
	return 0;
}

/* One received frame: 1 (copied into *f, buffer reposted), 0 none, -1 failed. */
static int net_recv(struct vdev *d, struct frame *f)
{
	struct vq *rx = &d->vq[0];
	uint32_t slot, len;
	int r = vq_pop(rx, &slot, &len);
	const uint8_t *p;
	unsigned plen;

	if (r <= 0)
		return r;
	p = net_rx[slot] + NET_HDR_LEN;
	memset(f, 0, sizeof(*f));
	if (len >= NET_HDR_LEN + ETH_HLEN && len <= NET_RX_LEN) {
		memcpy(f->src, p + 6, 6);
		f->type = p[12] << 8 | p[13];
		plen = len - NET_HDR_LEN - ETH_HLEN;
		if (plen > sizeof(f->payload) - 1)
			plen = sizeof(f->payload) - 1;
		memcpy(f->payload, p + ETH_HLEN, plen);
	}
	net_post(rx, slot);
	vq_kick(rx);
	return 1;
}

/* payload is "<word> <n>"?  Sets *n. */
static int net_msg(const struct frame *f, const char *word, uint64_t *n)
{
	size_t wl = strlen(word);
	const char *s = f->payload + wl + 1;
	uint64_t v = 0;

	if (f->type != ETH_TYPE || memcmp(f->payload, word, wl) || f->payload[wl] != ' ')
		return 0;
	if (*s < '0' || *s > '9')
		return 0;
	while (*s >= '0' && *s <= '9')
		v = v * 10 + (*s++ - '0');
	*n = v;
	return 1;
}

static void make_msg(char *buf, const char *word, uint64_t n)
{
	unsigned l = str_copy(buf, word);

	buf[l++] = ' ';
	l += fmt_dec(buf + l, n);
	buf[l] = '\0';
}

static void sort_u32(uint32_t *a, unsigned n)
{
	for (unsigned gap = n / 2; gap; gap /= 2)	/* Shell sort */
		for (unsigned i = gap; i < n; i++) {
			uint32_t v = a[i];
			unsigned j = i;

			for (; j >= gap && a[j - gap] > v; j -= gap)
				a[j] = a[j - gap];
			a[j] = v;
		}
}

/*
 * Send "ping i" for i = 1..frames to the broadcast address, each awaiting
 * "pong i": 2 s, then one resend and 2 s more.  Frame 1 is resent every
 * 2 s for up to net_wait seconds (the peer may still be starting).
 */
static void net_ping(struct vdev *d, uint64_t frames, uint64_t net_wait, int bench)
{
	struct vq *rx = &d->vq[0], *tx = &d->vq[1];
	uint64_t replies = 0, maxrtt = 0, t_first = 0, t_last = 0;
	unsigned nrtt = 0, lost_run = 0;
	char msg[32];

	for (uint64_t i = 1; i <= frames; i++) {
		uint64_t first_deadline = after_s(net_wait), t0 = 0, got = 0;

		make_msg(msg, "ping", i);
		for (unsigned tries = 0; !got; tries++) {
			uint64_t deadline;

			if (i == 1 ? tries && read_cntvct() >= first_deadline : tries >= 2)
				break;
			t0 = now();
			if (net_send(d, bcast, msg))
				return;
			deadline = t0 + TIMEOUT_S * freq;
			while (!got && wait_until(vq_ready, rx, deadline)) {
				struct frame f;
				uint64_t n;
				int r = net_recv(d, &f);

				if (r < 0)
					return;
				if (r && net_msg(&f, "pong", &n) && n == i)
					got = now();
			}
			if (net_reclaim(tx) < 0)
				return;
			if (!got && tx->num_free < tx->num) {
				vq_fail(tx, "timeout waiting for used buffer");
				return;
			}
		}
		if (!got) {
			put_str_dec("net: no reply to ping ", i);
			uart_putc('\n');
			if (++lost_run == MAX_LOST_RUN) {
				put_str_dec("net: giving up after ", lost_run);
				uart_puts(" lost frames in a row\n");
				break;
			}
			continue;
		}
		lost_run = 0;
		if (!replies)
			t_first = t0;
		t_last = got;
		replies++;
		if (got - t0 > maxrtt)
			maxrtt = got - t0;
		if (nrtt < MAX_RTT)
			rtts[nrtt++] = got - t0 > UINT32_MAX ? UINT32_MAX : got - t0;
	}

	sort_u32(rtts, nrtt);
	put_str_dec("net: ", replies);
	put_str_dec("/", frames);
	put_str_dec(" replies, rtt median ", nrtt ? us_of(rtts[nrtt / 2]) : 0);
	put_str_dec(" us max ", us_of(maxrtt));
	uart_puts(" us\n");
	if (bench) {
		uint64_t us = us_of(t_last - t_first);

		if (!us)
			us = 1;
		put_str_dec("bench net: ", replies * 1000000 / us);
		put_str_dec(" frames/s, rtt median ", nrtt ? us_of(rtts[nrtt / 2]) : 0);
		put_str_dec(" us p99 ", nrtt ? us_of(rtts[(nrtt * 99 + 99) / 100 - 1]) : 0);
		uart_puts(" us\n");
	}
}

/* Answer "ping i" with "pong i" to its sender until frames distinct pings
 * are answered, or none came for net_wait seconds. */
static void net_pong(struct vdev *d, uint64_t frames, uint64_t net_wait)
{
	struct vq *rx = &d->vq[0];
	uint64_t answered = 0, last = 0, deadline = after_s(net_wait);
	int timed_out = 0;
	char msg[32];

	while (answered < frames) {
		struct frame f;
		uint64_t n;
		int r;

		if (!wait_until(vq_ready, rx, deadline)) {
			timed_out = 1;
			break;
		}
		r = net_recv(d, &f);
		if (r < 0)
			return;
		if (!r || !net_msg(&f, "ping", &n) || !memcmp(f.src, mac, 6))
			continue;
		make_msg(msg, "pong", n);
		if (net_send(d, f.src, msg))
			return;
		if (n != last) {		/* a resent ping is answered, not counted */
			answered++;
			last = n;
		}
		deadline = after_s(net_wait);
	}
	put_str_dec("net: answered ", answered);
	uart_puts(timed_out ? " pings (timed out)\n" : " pings\n");
	/* Let the last pong leave before the VM goes away. */
	if (!net_reclaim(&d->vq[1]) && d->vq[1].num_free < d->vq[1].num)
		wait_until(vq_ready, &d->vq[1], after_s(TIMEOUT_S));
}

static void run_net(struct vdev *d, const char *bench)
{
	static const unsigned qs[2] = { QMAX, QMAX };	/* receiveq1, transmitq1 */
	struct vq *rx = &d->vq[0];
	char mode[8] = "off";
	uint64_t frames = 10, net_wait = 30;
	int is_bench = !strcmp(bench, "net");

	if (dev_start(d, NET_F_MAC, 2, qs))
		return;
	if (d->features & NET_F_MAC) {
		uint32_t g;

		do {
			g = cfg_gen(d);
			for (unsigned i = 0; i < 6; i++)
				mac[i] = mmio_read8(d->base + VIRTIO_MMIO_CONFIG + i);
		} while (g != cfg_gen(d));
		uart_puts("net: mac ");
		put_mac(mac);
		uart_putc('\n');
	} else {
		/* 5.1.4: no MAC from the device, make up a locally administered one. */
		uint64_t r = read_cntvct() * 0x9e3779b97f4a7c15ULL;

		for (unsigned i = 0; i < 6; i++)
			mac[i] = r >> (8 * i);
		mac[0] = (mac[0] & 0xfe) | 0x02;
		uart_puts("net: mac ");
		put_mac(mac);
		uart_puts(" (generated, VIRTIO_NET_F_MAC not offered)\n");
	}

	for (unsigned i = 0; i < rx->num; i++)
		net_post(rx, i);
	vq_kick(rx);

	bootarg_value(dtb, "net", mode, sizeof(mode));
	if (is_bench) {			/* bench=net: role ping, 1000 frames by default */
		frames = 1000;
		mode[str_copy(mode, "ping")] = '\0';
	}
	bootarg_u64(dtb, "frames", &frames);
	bootarg_u64(dtb, "net_wait", &net_wait);
	if (!strcmp(mode, "ping"))
		net_ping(d, frames, net_wait, is_bench);
	else if (!strcmp(mode, "pong"))
		net_pong(d, frames, net_wait);
	else if (strcmp(mode, "off")) {
		uart_puts("net: unknown mode ");
		uart_puts(mode);
		uart_putc('\n');
	}
}

/* ---- main ---------------------------------------------------------------- */

static const char *tag_of(uint32_t id)
{
	switch (id) {
	case ID_NET:		return "net";
	case ID_BLOCK:		return "blk";
	case ID_CONSOLE:	return "console";
	case ID_ENTROPY:	return "rng";
	default:		return NULL;
	}
}

/* Identify the device behind d->base: 1 to drive it, 0 to skip it. */
static int probe(struct vdev *d)
{
	uint32_t magic = mmio_read32(d->base + VIRTIO_MMIO_MAGIC_VALUE);
	uint32_t version = mmio_read32(d->base + VIRTIO_MMIO_VERSION);

	d->id = mmio_read32(d->base + VIRTIO_MMIO_DEVICE_ID);
	if (magic != VIRTIO_MAGIC) {
		dev_say(d);
		uart_puts(": bad MagicValue ");
		put_hex(magic);
		uart_puts(", skipped\n");
		return 0;
	}
	if (version != 2) {
		dev_say(d);
		put_str_dec(": Version ", version);
		uart_puts(version == 1 ? " (legacy) not supported, skipped\n" : " not supported, skipped\n");
		return 0;
	}
	if (d->id == 0) {
		dev_say(d);
		uart_puts(": no device (DeviceID 0)\n");
		return 0;
	}
	if (!tag_of(d->id)) {
		put_str_dec("virtio: device id ", d->id);
		uart_puts(" at ");
		put_hex(d->base);
		uart_puts(" ignored\n");
		return 0;
	}
	d->tag = tag_of(d->id);
	dev_say(d);
	if (d->intid)
		put_str_dec(" irq ", d->intid);
	else
		uart_puts(" no interrupt (polled)");
	uart_putc('\n');
	return 1;
}

int main(const void *fdt)
{
	char bench[16] = "";
	int bench_ran = 0;
	unsigned i;

	dtb = fdt;
	exc_init("virtio");
	freq = read_cntfrq();
	if (!freq)
		freq = FREQ_DEFAULT;
	poll_period = freq / POLL_HZ;
	if (bootarg_value(dtb, "name", name, sizeof(name)) <= 0)
		str_copy(name, "virtio");
	bootarg_value(dtb, "bench", bench, sizeof(bench));

	uart_puts("virtio: pyned guest up name=");
	uart_puts(name);
	uart_putc('\n');
	if (!fdt_valid(dtb))
		uart_puts("virtio: no device tree\n");

	gic_dist_init();
	gic_cpu_init(0);
	gic_enable_private(0, INTID_VTIMER, IRQ_PRIO);
	vtimer_set_cval(read_cntvct() + poll_period);
	vtimer_set_ctl(CNT_CTL_ENABLE);

	dt_scan();
	put_str_dec("virtio: ", ndevs);
	uart_puts(" virtio,mmio node(s)\n");
	for (i = 0; i < ndevs; i++)
		if (devs[i].intid)
			gic_enable_irq(devs[i].intid);
	irq_enable();

	for (i = 0; i < ndevs; i++) {
		struct vdev *d = &devs[i];

		if (!probe(d))
			continue;
		switch (d->id) {
		case ID_CONSOLE:
			run_console(d, bench);
			bench_ran |= !strcmp(bench, "console");
			break;
		case ID_ENTROPY:
			run_rng(d);
			break;
		case ID_BLOCK:
			run_blk(d, bench);
			bench_ran |= !strcmp(bench, "blk-read") || !strcmp(bench, "blk-write");
			break;
		case ID_NET:
			run_net(d, bench);
			bench_ran |= !strcmp(bench, "net");
			break;
		}
	}

	if (bench[0] && !bench_ran) {
		uart_puts("bench ");
		uart_puts(bench);
		uart_puts(!strcmp(bench, "console") || !strcmp(bench, "net") ||
			  !strcmp(bench, "blk-read") || !strcmp(bench, "blk-write")
			  ? ": no such device\n" : ": unknown benchmark\n");
	}
	uart_puts("virtio: done\n");
	if (bootarg_has(dtb, "stay")) {
		vtimer_set_ctl(0);
		for (;;)
			wfi();
	}
	halt();
}
