/*
 * Device-tree lookup by property and SPI set-up (see dev.h).
 */
#include "dev.h"

#define DEPTH_MAX	16

#define GICD_IGROUPR	0x0080
#define GICD_ISENABLER	0x0100
#define GICD_IPRIORITYR	0x0400
#define GICD_ICFGR	0x0c00
#define GICD_IROUTER	0x6000

static uint64_t cells(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;

	while (n--) {
		v = v << 32 | fdt_be32(p);
		p += 4;
	}
	return v;
}

static int str_is(const uint8_t *p, uint32_t len, const char *s)
{
	size_t n = strlen(s);

	return len == n + 1 && !memcmp(p, s, n) && p[n] == 0;
}

static int strlist_has(const uint8_t *p, uint32_t len, const char *s)
{
	uint32_t off = 0;

	while (off < len) {
		size_t n = 0;

		while (off + n < len && p[off + n])
			n++;
		if (n == strlen(s) && !memcmp(p + off, s, n))
			return 1;
		off += n + 1;
	}
	return 0;
}

/* What the walk keeps of each open node. */
struct frame {
	unsigned ac, sc;			/* #address-cells / #size-cells for children */
	const uint8_t *ranges;			/* NULL: absent */
	uint32_t ranges_len;
	int enabled;
	const uint8_t *reg, *irqs;
	uint32_t reg_len, irqs_len;
	int match;
};

/* Map `addr` from the children's space of frame f up through every parent. */
static int translate(const struct frame *st, int f, uint64_t *addr)
{
	for (; f > 0; f--) {
		const struct frame *bus = &st[f], *up = &st[f - 1];
		unsigned step = bus->ac + up->ac + bus->sc;
		uint32_t i;

		if (!bus->ranges)
			return 0;
		if (!bus->ranges_len)
			continue;
		for (i = 0; i + step * 4 <= bus->ranges_len; i += step * 4) {
			uint64_t child = cells(bus->ranges + i, bus->ac);
			uint64_t parent = cells(bus->ranges + i + bus->ac * 4, up->ac);
			uint64_t size = cells(bus->ranges + i + (bus->ac + up->ac) * 4, bus->sc);

			if (*addr >= child && *addr - child < size) {
				*addr = *addr - child + parent;
				break;
			}
		}
		if (i + step * 4 > bus->ranges_len)
			return 0;
	}
	return 1;
}

static int fill(const struct frame *st, int depth, struct dt_dev *d)
{
	const struct frame *n = &st[depth], *parent = &st[depth - 1];
	unsigned step = parent->ac + parent->sc;

	d->base = d->size = 0;
	d->intid = -1;
	d->edge = 0;
	if (n->reg && step && n->reg_len >= step * 4) {
		d->base = cells(n->reg, parent->ac);
		d->size = cells(n->reg + parent->ac * 4, parent->sc);
		if (!translate(st, depth - 1, &d->base))
			return 0;
	}
	if (n->irqs && n->irqs_len >= 12) {
		uint32_t kind = fdt_be32(n->irqs), num = fdt_be32(n->irqs + 4), flags = fdt_be32(n->irqs + 8);

		d->intid = kind == 0 ? (int)(32 + num) : kind == 1 ? (int)(16 + num) : -1;
		d->edge = (flags & 3) != 0;
	}
	return 1;
}

int dt_find(const void *dtb, const char *prop, const char *value, unsigned nth,
	    struct dt_dev *d)
{
	struct frame st[DEPTH_MAX], *f;
	struct fdt_walk w;
	struct fdt_token t;
	int depth = -1;

	if (!fdt_walk_start(&w, dtb))
		return 0;
	while (fdt_walk_next(&w, &t)) {
		if (t.kind == FDT_BEGIN_NODE) {
			if (++depth >= DEPTH_MAX)
				return 0;
			f = &st[depth];
			memset(f, 0, sizeof(*f));
			f->ac = 2;
			f->sc = 1;
			f->enabled = depth == 0 || st[depth - 1].enabled;
			continue;
		}
		if (depth < 0)
			return 0;
		f = &st[depth];
		if (t.kind == FDT_END_NODE) {
			if (depth > 0 && f->match && f->enabled) {
				if (nth == 0)
					return fill(st, depth, d);
				nth--;
			}
			if (--depth < 0)
				break;
			continue;
		}
		if (fdt_name_is(&t, prop) && strlist_has(t.value, t.len, value))
			f->match = 1;
		if (fdt_name_is(&t, "#address-cells") && t.len == 4) {
			f->ac = fdt_be32(t.value);
		} else if (fdt_name_is(&t, "#size-cells") && t.len == 4) {
			f->sc = fdt_be32(t.value);
		} else if (fdt_name_is(&t, "ranges")) {
			f->ranges = t.value;
			f->ranges_len = t.len;
		} else if (fdt_name_is(&t, "status")) {
			f->enabled = f->enabled && (str_is(t.value, t.len, "okay") ||
						    str_is(t.value, t.len, "ok"));
		} else if (fdt_name_is(&t, "reg")) {
			f->reg = t.value;
			f->reg_len = t.len;
		} else if (fdt_name_is(&t, "interrupts")) {
			f->irqs = t.value;
			f->irqs_len = t.len;
		}
	}
	return 0;
}

void gic_enable_spi(unsigned intid, uint8_t prio, int edge)
{
	uintptr_t grp = GICD_BASE + GICD_IGROUPR + intid / 32 * 4;
	uintptr_t pri = GICD_BASE + GICD_IPRIORITYR + (intid & ~3u);
	uintptr_t cfg = GICD_BASE + GICD_ICFGR + intid / 16 * 4;
	unsigned shift = (intid & 3) * 8;
	uint32_t c = mmio_read32(cfg) & ~(2u << (intid % 16 * 2));

	mmio_write32(grp, mmio_read32(grp) | 1u << (intid % 32));
	mmio_write32(pri, (mmio_read32(pri) & ~(0xffu << shift)) | (uint32_t)prio << shift);
	mmio_write32(cfg, c | (edge ? 2u << (intid % 16 * 2) : 0));
	mmio_write32(GICD_BASE + GICD_IROUTER + intid * 8, 0);		/* Aff0 = 0 */
	mmio_write32(GICD_BASE + GICD_IROUTER + intid * 8 + 4, 0);
	mmio_write32(GICD_BASE + GICD_ISENABLER + intid / 32 * 4, 1u << (intid % 32));
}
