/*
 * Devices from the device tree, and shared interrupts, for guests that drive
 * hardware they find there (see images/README.md): the pass-through guests
 * look up the nodes uvmm left enabled for them.  Linked only by the guests
 * that use it (DEV_GUESTS in the Makefile).
 */
#ifndef PYNED_DEV_H
#define PYNED_DEV_H

#include "irq.h"

#pragma GCC visibility push(hidden)

struct dt_dev {
	uint64_t base, size;	/* first reg entry, as a CPU physical address */
	int intid;		/* first interrupt as a GIC INTID; -1 if none */
	int edge;		/* that interrupt is edge-triggered (flags bit 0 or 1) */
};

/*
 * The nth (from 0) node whose string-list property `prop` holds `value`,
 * counting only nodes that are enabled, as are all their parents.  reg is
 * translated through each parent's ranges; interrupts are read as 3-cell GIC
 * specifiers.  Returns 1 and fills *d, or 0 if there is no such node.
 */
int dt_find(const void *dtb, const char *prop, const char *value, unsigned nth,
	    struct dt_dev *d);

/* An SPI (INTID >= 32): group 1, priority prio, level or edge, routed to CPU 0, enabled. */
void gic_enable_spi(unsigned intid, uint8_t prio, int edge);

#pragma GCC visibility pop

#endif
