"""GIC register offsets, bit fields and system-register encodings (Arm IHI 0069, IHI 0048B).

Names follow the architecture specifications. Arrays of registers (``GICD_ISENABLER<n>``) are
given by the offset of their first element; ``GICR_*`` registers of the SGI frame are given
relative to the start of one CPU's redistributor (RD frame at 0, SGI frame at 0x10000).
Only what pyned models is listed: no LPI, ITS, virtualization or Secure-only registers.
"""

from __future__ import annotations

from enum import IntEnum


class GicdReg(IntEnum):
    """Distributor (GICD) offsets, GICv3 and GICv2."""

    GICD_CTLR = 0x0000
    GICD_TYPER = 0x0004
    GICD_IIDR = 0x0008
    GICD_TYPER2 = 0x000C  # v3
    GICD_STATUSR = 0x0010  # v3
    GICD_IGROUPR = 0x0080
    GICD_ISENABLER = 0x0100
    GICD_ICENABLER = 0x0180
    GICD_ISPENDR = 0x0200
    GICD_ICPENDR = 0x0280
    GICD_ISACTIVER = 0x0300
    GICD_ICACTIVER = 0x0380
    GICD_IPRIORITYR = 0x0400
    GICD_ITARGETSR = 0x0800  # v2 (v3 with affinity routing: RAZ/WI)
    GICD_ICFGR = 0x0C00
    GICD_IGRPMODR = 0x0D00  # v3 (RAZ/WI when DS=1)
    GICD_NSACR = 0x0E00
    GICD_SGIR = 0x0F00  # v2
    GICD_CPENDSGIR = 0x0F10  # v2
    GICD_SPENDSGIR = 0x0F20  # v2
    GICD_IROUTER = 0x6000  # v3, 64-bit; IROUTER<n> at 0x6000 + 8n for n >= 32
    GICD_PIDR2 = 0xFFE8  # v3; v2 has its ID block at 0xFD0..0xFFC (GICD_PIDR2 at 0xFE8)


GICD_PIDR2_V2 = 0x0FE8
GICD_ID_BLOCK_V3 = 0xFFD0  # PIDR4..PIDR7, PIDR0..PIDR3, CIDR0..CIDR3
GICD_ID_BLOCK_V2 = 0x0FD0


class GicrReg(IntEnum):
    """Redistributor (GICR) offsets within one CPU's 128 KiB: RD frame, then SGI frame."""

    GICR_CTLR = 0x0000
    GICR_IIDR = 0x0004
    GICR_TYPER = 0x0008  # 64-bit
    GICR_STATUSR = 0x0010
    GICR_WAKER = 0x0014
    GICR_PIDR2 = 0xFFE8
    # SGI frame (SGI_base = RD_base + 0x10000)
    GICR_IGROUPR0 = 0x10080
    GICR_ISENABLER0 = 0x10100
    GICR_ICENABLER0 = 0x10180
    GICR_ISPENDR0 = 0x10200
    GICR_ICPENDR0 = 0x10280
    GICR_ISACTIVER0 = 0x10300
    GICR_ICACTIVER0 = 0x10380
    GICR_IPRIORITYR = 0x10400  # IPRIORITYR0..7
    GICR_ICFGR0 = 0x10C00
    GICR_ICFGR1 = 0x10C04
    GICR_IGRPMODR0 = 0x10D00  # RAZ/WI when DS=1
    GICR_NSACR = 0x10E00


GICR_ID_BLOCK = 0xFFD0
GICR_SGI_BASE = 0x10000
GICR_STRIDE = 0x20000  # RD frame + SGI frame per CPU


class GiccReg(IntEnum):
    """GICv2 CPU interface (GICC) offsets."""

    GICC_CTLR = 0x0000
    GICC_PMR = 0x0004
    GICC_BPR = 0x0008
    GICC_IAR = 0x000C
    GICC_EOIR = 0x0010
    GICC_RPR = 0x0014
    GICC_HPPIR = 0x0018
    GICC_ABPR = 0x001C
    GICC_AIAR = 0x0020
    GICC_AEOIR = 0x0024
    GICC_AHPPIR = 0x0028
    GICC_APR0 = 0x00D0
    GICC_NSAPR0 = 0x00E0
    GICC_IIDR = 0x00FC
    GICC_DIR = 0x1000


# -- bit fields ---------------------------------------------------------------------------

# GICD_CTLR with DS=1 (v3) and GICv2 without Security Extensions: same low two bits.
GICD_CTLR_ENABLE_GRP0 = 1 << 0
GICD_CTLR_ENABLE_GRP1 = 1 << 1
GICD_CTLR_ARE = 1 << 4  # v3, RAO/WI: this GIC only does affinity routing
GICD_CTLR_DS = 1 << 6  # v3, RAO/WI: a single Security state

GICD_TYPER_IDBITS_SHIFT = 19
GICD_TYPER_A3V = 1 << 24
GICD_TYPER_RSS = 1 << 26

GICD_IROUTER_IRM = 1 << 31  # Interrupt_Routing_Mode: 1 of N
GICD_IROUTER_MASK = 0xFF_0000_0000 | GICD_IROUTER_IRM | 0xFF_FFFF  # Aff3, IRM, Aff2..Aff0

GICD_SGIR_FILTER_LIST = 0
GICD_SGIR_FILTER_OTHERS = 1
GICD_SGIR_FILTER_SELF = 2

GICR_TYPER_LAST = 1 << 4
GICR_WAKER_PROCESSOR_SLEEP = 1 << 1
GICR_WAKER_CHILDREN_ASLEEP = 1 << 2

# GICv2 GICC_CTLR, layout of a GIC without Security Extensions.
GICC_CTLR_ENABLE_GRP0 = 1 << 0
GICC_CTLR_ENABLE_GRP1 = 1 << 1
GICC_CTLR_ACKCTL = 1 << 2
GICC_CTLR_FIQEN = 1 << 3
GICC_CTLR_CBPR = 1 << 4
GICC_CTLR_EOIMODE = 1 << 9  # EOImodeS; Linux calls it EOImodeNS (bit 9 of the NS view)
GICC_CTLR_MASK = 0x7FF

ICC_CTLR_CBPR = 1 << 0
ICC_CTLR_EOIMODE = 1 << 1
ICC_CTLR_PRIBITS_SHIFT = 8
ICC_CTLR_IDBITS_SHIFT = 11
ICC_CTLR_A3V = 1 << 15
ICC_CTLR_RSS = 1 << 18

ICC_SRE_VALUE = 0x7  # SRE, DFB, DIB: system-register interface only

# ICC_SGI0R/SGI1R/ASGI1R_EL1 fields
SGIR_TARGETLIST_MASK = 0xFFFF
SGIR_AFF1_SHIFT = 16
SGIR_INTID_SHIFT = 24
SGIR_AFF2_SHIFT = 32
SGIR_IRM = 1 << 40
SGIR_RS_SHIFT = 44
SGIR_AFF3_SHIFT = 48

INTID_SPURIOUS = 1023
INTID_GROUP1_PENDING = 1022  # GICv2 GICC_IAR with AckCtl=0 and a Group 1 interrupt highest

# -- identification -----------------------------------------------------------------------

# Implementer Arm (JEP106 0x43B), product 0: matches no Linux erratum entry.
GICD_IIDR_VALUE = 0x0000_043B
GICC_IIDR_VALUE = 0x0002_043B  # ArchitectureVersion 2


def id_block(arch_rev: int) -> tuple[int, ...]:
    """PIDR4..7, PIDR0..3, CIDR0..3 of a GIC with architecture revision ``arch_rev``."""
    # PIDR2: JEP106 bits [6:4] = 0b011 (Arm), JEDEC bit, ArchRev in [7:4].
    pidr2 = (arch_rev << 4) | 0x0B
    return (0x04, 0, 0, 0, 0x92, 0xB4, pidr2, 0x00, 0x0D, 0xF0, 0x05, 0xB1)


# -- GICv3 CPU interface system registers --------------------------------------------------

ICC_REGISTERS: dict[str, tuple[int, int, int, int, int]] = {
    # name: (op0, op1, CRn, CRm, op2)
    "ICC_PMR_EL1": (3, 0, 4, 6, 0),
    "ICC_IAR0_EL1": (3, 0, 12, 8, 0),
    "ICC_EOIR0_EL1": (3, 0, 12, 8, 1),
    "ICC_HPPIR0_EL1": (3, 0, 12, 8, 2),
    "ICC_BPR0_EL1": (3, 0, 12, 8, 3),
    "ICC_AP0R0_EL1": (3, 0, 12, 8, 4),
    "ICC_AP1R0_EL1": (3, 0, 12, 9, 0),
    "ICC_DIR_EL1": (3, 0, 12, 11, 1),
    "ICC_RPR_EL1": (3, 0, 12, 11, 3),
    "ICC_SGI1R_EL1": (3, 0, 12, 11, 5),
    "ICC_ASGI1R_EL1": (3, 0, 12, 11, 6),
    "ICC_SGI0R_EL1": (3, 0, 12, 11, 7),
    "ICC_IAR1_EL1": (3, 0, 12, 12, 0),
    "ICC_EOIR1_EL1": (3, 0, 12, 12, 1),
    "ICC_HPPIR1_EL1": (3, 0, 12, 12, 2),
    "ICC_BPR1_EL1": (3, 0, 12, 12, 3),
    "ICC_CTLR_EL1": (3, 0, 12, 12, 4),
    "ICC_SRE_EL1": (3, 0, 12, 12, 5),
    "ICC_IGRPEN0_EL1": (3, 0, 12, 12, 6),
    "ICC_IGRPEN1_EL1": (3, 0, 12, 12, 7),
}

# Accesses the architecture makes UNDEFINED, for a VMM that wants to raise them; the model
# itself reads write-only registers as 0 and ignores writes to read-only ones.
ICC_READ_ONLY = frozenset({"ICC_IAR0_EL1", "ICC_IAR1_EL1", "ICC_HPPIR0_EL1", "ICC_HPPIR1_EL1",
                           "ICC_RPR_EL1"})
ICC_WRITE_ONLY = frozenset({"ICC_EOIR0_EL1", "ICC_EOIR1_EL1", "ICC_DIR_EL1", "ICC_SGI0R_EL1",
                            "ICC_SGI1R_EL1", "ICC_ASGI1R_EL1"})

# -- priorities ----------------------------------------------------------------------------

PRIORITY_BITS = 5
PRIORITY_MASK = (0xFF << (8 - PRIORITY_BITS)) & 0xFF  # 0xF8: low three bits RAZ/WI
PRIORITY_IDLE = 0xFF
BPR0_MIN = 7 - PRIORITY_BITS  # 2: group priority [7:3], all implemented bits
BPR1_MIN = BPR0_MIN + 1
