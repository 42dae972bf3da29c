/*
 * Device-tree lookup by property and SPI set-up (see dev.h).
 */
#include "dev.h"

#define FDT_BEGIN_NODE	1
#define FDT_END_NODE	2
#define FDT_PROP	3
#define FDT_NOP		4
#define DEPTH_MAX	16

#define GICD_IGROUPR	0x0080
#define GICD_ISENABLER	0x0100
#define GICD_IPRIORITYR	0x0400
#define GICD_ICFGR	0x0c00
#define GICD_IROUTER	0x6000

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t cells(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;

	while (n--) {
		v = v << 32 | be32(p);
		p += 4;
	}
	return v;
}

static size_t name_len(const uint8_t *p, size_t max)
{
	size_t n = 0;

	while (n < max && p[n])
		n++;
	return n;
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
		size_t n = name_len(p + off, len - off);

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
		uint32_t kind = be32(n->irqs), num = be32(n->irqs + 4), flags = be32(n->irqs + 8);

		d->intid = kind == 0 ? (int)(32 + num) : kind == 1 ? (int)(16 + num) : -1;
		d->edge = (flags & 3) != 0;
	}
	return 1;
}

int dt_find(const void *dtb, const char *prop, const char *value, unsigned nth,
	    struct dt_dev *d)
{
	const uint8_t *fdt = dtb;
	struct frame st[DEPTH_MAX];
	uint64_t total, off, strs;
	int depth = -1;

	if (!fdt_valid(dtb))
		return 0;
	total = be32(fdt + 4);
	off = be32(fdt + 8);
	strs = be32(fdt + 12);

	while (off + 4 <= total) {
		uint32_t tok = be32(fdt + off);

		off += 4;
		if (tok == FDT_BEGIN_NODE) {
			size_t nlen = name_len(fdt + off, total - off);
			struct frame *f;

			if (++depth >= DEPTH_MAX)
				return 0;
			f = &st[depth];
			memset(f, 0, sizeof(*f));
			f->ac = 2;
			f->sc = 1;
			f->enabled = depth == 0 || st[depth - 1].enabled;
			off += (nlen + 4) & ~3ULL;
		} else if (tok == FDT_END_NODE) {
			if (depth < 0)
				return 0;
			if (depth > 0 && st[depth].match && st[depth].enabled) {
				if (nth == 0)
					return fill(st, depth, d);
				nth--;
			}
			if (--depth < 0)
				break;
		} else if (tok == FDT_PROP) {
			uint32_t len, nameoff;
			const uint8_t *v;
			const char *pn;
			struct frame *f;

			if (off + 8 > total || depth < 0)
				return 0;
			len = be32(fdt + off);
			nameoff = be32(fdt + off + 4);
			off += 8;
			if (off + len > total || strs + nameoff >= total)
				return 0;
			v = fdt + off;
			pn = (const char *)fdt + strs + nameoff;
			f = &st[depth];
			if (!strcmp(pn, prop) && strlist_has(v, len, value))
				f->match = 1;
			if (!strcmp(pn, "#address-cells") && len == 4)
				f->ac = be32(v);
			else if (!strcmp(pn, "#size-cells") && len == 4)
				f->sc = be32(v);
			else if (!strcmp(pn, "ranges")) {
				f->ranges = v;
				f->ranges_len = len;
			} else if (!strcmp(pn, "status"))
				f->enabled = f->enabled && (str_is(v, len, "okay") || str_is(v, len, "ok"));
			else if (!strcmp(pn, "reg")) {
				f->reg = v;
				f->reg_len = len;
			} else if (!strcmp(pn, "interrupts")) {
				f->irqs = v;
				f->irqs_len = len;
			}
			off += (len + 3) & ~3ULL;
		} else if (tok != FDT_NOP) {
			break;
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
