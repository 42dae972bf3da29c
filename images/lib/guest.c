/*
 * Minimal runtime for pyned guest images: console, hypercalls, FDT and
 * bootargs parsing, and the libc routines GCC may emit calls to.
 *
 * AArch64 has a hardware divider, so '/' and '%' on 64-bit values compile to
 * udiv/msub and never pull in libgcc.
 */
#include "guest.h"

#define UART_DR		0x00
#define UART_FR		0x18
#define UART_FR_RXFE	(1u << 4)
#define UART_FR_TXFF	(1u << 5)

void uart_putc(char c)
{
	while (mmio_read32(UART_BASE + UART_FR) & UART_FR_TXFF)
		;
	mmio_write32(UART_BASE + UART_DR, (uint8_t)c);
}

void uart_write(const char *s, size_t n)
{
	while (n--)
		uart_putc(*s++);
}

void uart_puts(const char *s)
{
	while (*s)
		uart_putc(*s++);
}

int uart_getc(void)
{
	if (mmio_read32(UART_BASE + UART_FR) & UART_FR_RXFE)
		return -1;
	return mmio_read32(UART_BASE + UART_DR) & 0xff;
}

void put_hex(uint64_t v)
{
	int shift = 60;

	while (shift > 0 && !(v >> shift))
		shift -= 4;
	uart_puts("0x");
	for (; shift >= 0; shift -= 4)
		uart_putc("0123456789abcdef"[(v >> shift) & 0xf]);
}

void put_dec(uint64_t v)
{
	char buf[20];
	int i = sizeof(buf);

	do {
		buf[--i] = '0' + v % 10;
		v /= 10;
	} while (v);
	uart_write(buf + i, sizeof(buf) - i);
}

void hvc_putc(char c)
{
	register uint64_t x0 __asm__("x0") = UVMM_PRINT;
	register uint64_t x1 __asm__("x1") = (uint8_t)c;

	__asm__ volatile("hvc #1"
			 : "+r"(x0), "+r"(x1)
			 :
			 : "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x9", "x10",
			   "x11", "x12", "x13", "x14", "x15", "x16", "x17", "memory");
}

void psci_system_off(void)
{
	hvc_call(PSCI_SYSTEM_OFF, 0, 0, 0);
}

void psci_system_reset(void)
{
	hvc_call(PSCI_SYSTEM_RESET, 0, 0, 0);
}

void halt(void)
{
	psci_system_off();
	for (;;)
		__asm__ volatile("wfe");
}

/* ---- flattened device tree ---------------------------------------------- */

#define FDT_MAGIC	0xd00dfeed
#define FDT_NOP		4

/* Byte loads: the blob's alignment is the host's promise, not ours to trust. */
uint32_t fdt_be32(const void *ptr)
{
	const uint8_t *p = ptr;

	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static size_t strnlen_(const char *s, size_t max)
{
	size_t n = 0;

	while (n < max && s[n])
		n++;
	return n;
}

int fdt_valid(const void *dtb)
{
	return dtb && fdt_be32(dtb) == FDT_MAGIC;
}

int fdt_walk_start(struct fdt_walk *w, const void *dtb)
{
	if (!fdt_valid(dtb))
		return 0;
	w->fdt = dtb;
	w->total = fdt_be32(w->fdt + 4);
	w->off = fdt_be32(w->fdt + 8);
	w->strs = fdt_be32(w->fdt + 12);
	return 1;
}

int fdt_walk_next(struct fdt_walk *w, struct fdt_token *t)
{
	const uint8_t *fdt = w->fdt;
	uint64_t total = w->total;

	while (w->off + 4 <= total) {
		uint32_t tok = fdt_be32(fdt + w->off), nameoff;

		w->off += 4;
		t->kind = tok;
		switch (tok) {
		case FDT_BEGIN_NODE:
			t->name = (const char *)fdt + w->off;
			t->name_len = strnlen_(t->name, total - w->off);
			w->off += (t->name_len + 4) & ~3ULL;
			return 1;
		case FDT_END_NODE:
			return 1;
		case FDT_PROP:
			if (w->off + 8 > total)
				return 0;
			t->len = fdt_be32(fdt + w->off);
			nameoff = fdt_be32(fdt + w->off + 4);
			w->off += 8;
			if (w->off + t->len > total || w->strs + nameoff >= total)
				return 0;
			t->value = fdt + w->off;
			t->name = (const char *)fdt + w->strs + nameoff;
			t->name_len = strnlen_(t->name, total - w->strs - nameoff);
			w->off += (t->len + 3) & ~3ULL;
			return 1;
		case FDT_NOP:
			break;
		default:		/* FDT_END or garbage */
			return 0;
		}
	}
	return 0;
}

int fdt_name_is(const struct fdt_token *t, const char *s)
{
	size_t n = strlen(s);

	return t->name_len == n && !memcmp(t->name, s, n);
}

/* Component idx of a '/'-separated path (empty components skipped). */
static const char *path_comp(const char *path, int idx, size_t *len)
{
	for (;;) {
		while (*path == '/')
			path++;
		if (!*path)
			return NULL;
		*len = 0;
		while (path[*len] && path[*len] != '/')
			(*len)++;
		if (idx-- == 0)
			return path;
		path += *len;
	}
}

static int path_depth(const char *path)
{
	size_t len;
	int n = 0;

	while (path_comp(path, n, &len))
		n++;
	return n;
}

/* "memory" matches "memory@80000000"; "memory@80000000" only itself. */
static int node_matches(const char *comp, size_t clen, const char *name, size_t nlen)
{
	if (nlen < clen || memcmp(comp, name, clen))
		return 0;
	if (nlen == clen)
		return 1;
	if (name[clen] != '@')
		return 0;
	while (clen--)
		if (comp[clen] == '@')
			return 0;
	return 1;
}

const void *fdt_find_prop(const void *dtb, const char *path, const char *name,
			  uint32_t *lenp)
{
	struct fdt_walk w;
	struct fdt_token t;
	int want, depth = 0, match = 0;
	const char *c;
	size_t clen;

	if (!fdt_walk_start(&w, dtb))
		return NULL;
	want = path_depth(path);

	/*
	 * depth counts open nodes (the root opens depth 1); match counts path
	 * components matched by the chain of currently open nodes.
	 */
	while (fdt_walk_next(&w, &t)) {
		if (t.kind == FDT_BEGIN_NODE) {
			depth++;
			if (depth >= 2 && match == depth - 2 && match < want &&
			    (c = path_comp(path, match, &clen)) &&
			    node_matches(c, clen, t.name, t.name_len))
				match++;
		} else if (t.kind == FDT_END_NODE) {
			if (depth == 0)
				return NULL;
			if (depth >= 2 && match == depth - 1)
				match--;
			depth--;
		} else if (depth == want + 1 && match == want && fdt_name_is(&t, name)) {
			if (lenp)
				*lenp = t.len;
			return t.value;
		}
	}
	return NULL;
}

/* ---- bootargs ------------------------------------------------------------ */

const char *bootargs(const void *dtb, size_t *len)
{
	uint32_t plen;
	const char *s = fdt_find_prop(dtb, "/chosen", "bootargs", &plen);

	if (s)
		*len = strnlen_(s, plen);
	return s;
}

static int is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* First word that is `key` or starts with `key=`. */
static const char *find_word(const void *dtb, const char *key, size_t *wlen)
{
	size_t len, klen = strlen(key);
	const char *s = bootargs(dtb, &len), *end;

	if (!s)
		return NULL;
	for (end = s + len; s < end;) {
		const char *w;

		while (s < end && is_blank(*s))
			s++;
		for (w = s; s < end && !is_blank(*s); s++)
			;
		if ((size_t)(s - w) >= klen && !memcmp(w, key, klen) &&
		    ((size_t)(s - w) == klen || w[klen] == '=')) {
			*wlen = s - w;
			return w;
		}
	}
	return NULL;
}

int bootarg_has(const void *dtb, const char *word)
{
	size_t wlen;

	return find_word(dtb, word, &wlen) != NULL;
}

/*
 * Copy the value of `key=value` into buf (truncated, always NUL-terminated
 * when n > 0).  Returns the full value length, or -1 if there is no such
 * word or it has no '='.
 */
int bootarg_value(const void *dtb, const char *key, char *buf, size_t n)
{
	size_t wlen, klen = strlen(key), vlen;
	const char *w = find_word(dtb, key, &wlen);

	if (!w || wlen == klen)
		return -1;
	vlen = wlen - klen - 1;
	if (n) {
		size_t c = vlen < n - 1 ? vlen : n - 1;

		memcpy(buf, w + klen + 1, c);
		buf[c] = '\0';
	}
	return vlen;
}

/* Decimal, or hex with a 0x prefix; rejects empty strings and overflow. */
int parse_u64(const char *s, size_t n, uint64_t *val)
{
	unsigned base = 10;
	uint64_t v = 0;

	if (n > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		s += 2;
		n -= 2;
	}
	if (!n)
		return 0;
	for (; n; s++, n--) {
		unsigned d;

		if (*s >= '0' && *s <= '9')
			d = *s - '0';
		else if (base == 16 && (*s | 0x20) >= 'a' && (*s | 0x20) <= 'f')
			d = (*s | 0x20) - 'a' + 10;
		else
			return 0;
		if (v > (UINT64_MAX - d) / base)
			return 0;
		v = v * base + d;
	}
	*val = v;
	return 1;
}

/* Sets *val and returns 1 if `key=number` is present; else leaves *val alone. */
int bootarg_u64(const void *dtb, const char *key, uint64_t *val)
{
	size_t wlen, klen = strlen(key);
	const char *w = find_word(dtb, key, &wlen);

	if (!w || wlen == klen)
		return 0;
	return parse_u64(w + klen + 1, wlen - klen - 1, val);
}

/* ---- libc ---------------------------------------------------------------- */
/* Byte-wise: with the MMU off every access must be naturally aligned.  The
 * build passes -fno-tree-loop-distribute-patterns so these loops are not
 * turned back into calls to themselves. */

size_t strlen(const char *s)
{
	size_t n = 0;

	while (s[n])
		n++;
	return n;
}

int strcmp(const char *a, const char *b)
{
	while (*a && *a == *b)
		a++, b++;
	return (unsigned char)*a - (unsigned char)*b;
}

void *memset(void *d, int c, size_t n)
{
	unsigned char *p = d;

	while (n--)
		*p++ = c;
	return d;
}

void *memcpy(void *d, const void *s, size_t n)
{
	unsigned char *dp = d;
	const unsigned char *sp = s;

	while (n--)
		*dp++ = *sp++;
	return d;
}

void *memmove(void *d, const void *s, size_t n)
{
	unsigned char *dp = d;
	const unsigned char *sp = s;

	if (dp <= sp || dp >= sp + n)
		return memcpy(d, s, n);
	while (n--)
		dp[n] = sp[n];
	return d;
}

int memcmp(const void *a, const void *b, size_t n)
{
	const unsigned char *ap = a, *bp = b;

	for (; n; ap++, bp++, n--)
		if (*ap != *bp)
			return *ap - *bp;
	return 0;
}
