"""ARM PrimeCell UART PL011 (ARM DDI 0183G), DT binding ``arm,pl011``.

Transmission is instantaneous: every byte written to DR goes to the
character sink at once, so TXFF never sets and TX "FIFO empty" is always
true. Received bytes queue in a 32-entry FIFO (PL011 r1p5 depth; one entry
when LCR_H.FEN is clear). The receive-timeout interrupt is approximated as
"data waiting", because guests only use it to learn that a partial FIFO is
ready. Baud rate, line control, modem lines, IrDA and DMA are stored and
otherwise ignored. Linux only probes the device if the DT gives it the
``apb_pclk`` clock (see dts/virt-r82.dts), and it checks the PrimeCell ID.
"""

from __future__ import annotations

import collections
import threading
from enum import IntEnum

from pyned.devices.base import CharSink, IrqLine

FIFO_DEPTH = 32


class Pl011Reg(IntEnum):
    DR = 0x000
    RSR_ECR = 0x004
    FR = 0x018
    ILPR = 0x020
    IBRD = 0x024
    FBRD = 0x028
    LCR_H = 0x02C
    CR = 0x030
    IFLS = 0x034
    IMSC = 0x038
    RIS = 0x03C
    MIS = 0x040
    ICR = 0x044
    DMACR = 0x048


# FR bits
FR_BUSY = 1 << 3
FR_RXFE = 1 << 4
FR_TXFF = 1 << 5
FR_RXFF = 1 << 6
FR_TXFE = 1 << 7
# Interrupt bits (IMSC/RIS/MIS/ICR)
INT_RX = 1 << 4
INT_TX = 1 << 5
INT_RT = 1 << 6
INT_ALL = 0x7FF
LCR_H_FEN = 1 << 4
CR_RESET = 0x300  # TXE | RXE

# PeriphID0-3 then PCellID0-3 at 0xFE0..0xFFC: part 0x011, designer ARM, r1p5.
ID_REGS = (0x11, 0x10, 0x34, 0x00, 0x0D, 0xF0, 0x05, 0xB1)


BACKLOG = 4096


class Pl011:
    """One PL011: registers, receive FIFO, and a level interrupt output."""

    def __init__(self, sink: CharSink, irq: IrqLine) -> None:
        self._sink = sink
        self._irq = irq
        self._lock = threading.Lock()
        self._rx: collections.deque[int] = collections.deque()
        # Typed input beyond the FIFO waits here (a terminal's flow control)
        # and moves in as the guest reads, so a pasted line is not cut short.
        self._backlog: collections.deque[int] = collections.deque()
        self.tx_bytes = 0
        self.rx_bytes = 0
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._rx.clear()
            self._backlog.clear()
            self._regs = {Pl011Reg.IBRD: 0, Pl011Reg.FBRD: 0, Pl011Reg.LCR_H: 0,
                          Pl011Reg.CR: CR_RESET, Pl011Reg.IFLS: 0x12, Pl011Reg.IMSC: 0,
                          Pl011Reg.DMACR: 0, Pl011Reg.ILPR: 0}
            self._ris = 0
            self._update()

    # -- guest side ---------------------------------------------------------

    def read(self, offset: int, size: int, cpu: int) -> int:
        with self._lock:
            if offset == Pl011Reg.DR:
                return self._pop()
            if offset == Pl011Reg.FR:
                return self._fr()
            if offset == Pl011Reg.RIS:
                return self._ris
            if offset == Pl011Reg.MIS:
                return self._ris & self._regs[Pl011Reg.IMSC]
            if offset == Pl011Reg.RSR_ECR:
                return 0
            if 0xFE0 <= offset <= 0xFFC and offset % 4 == 0:
                return ID_REGS[(offset - 0xFE0) // 4]
            return self._regs.get(offset, 0)

    def write(self, offset: int, size: int, value: int, cpu: int) -> None:
        with self._lock:
            if offset == Pl011Reg.DR:
                self.tx_bytes += 1
                self._ris |= INT_TX
                self._update()
                byte = bytes([value & 0xFF])
            else:
                if offset == Pl011Reg.ICR:
                    self._ris &= ~value
                elif offset in self._regs:
                    self._regs[offset] = value & 0xFFFF
                    if offset == Pl011Reg.LCR_H:
                        self._trim_fifo()
                self._update()
                return
        # Outside the lock: the sink may block on a terminal.
        self._sink.write(byte)

    # -- host side ----------------------------------------------------------

    def push_input(self, data: bytes) -> int:
        """Queue received bytes; returns how many were taken (a full backlog drops the rest)."""
        with self._lock:
            taken = 0
            for b in data:
                if len(self._rx) < self._depth() and not self._backlog:
                    self._rx.append(b)
                elif len(self._backlog) < BACKLOG:
                    self._backlog.append(b)
                else:
                    break
                taken += 1
            self.rx_bytes += taken
            self._update()
            return taken

    @property
    def reading(self) -> bool:
        """Whether the guest takes receive interrupts (a driver has the port open)."""
        return bool(self._regs[Pl011Reg.IMSC] & (INT_RX | INT_RT))

    # -- internals ----------------------------------------------------------

    def _depth(self) -> int:
        return FIFO_DEPTH if self._regs[Pl011Reg.LCR_H] & LCR_H_FEN else 1

    def _trim_fifo(self) -> None:
        while len(self._rx) > self._depth():
            self._rx.popleft()

    def _pop(self) -> int:
        value = self._rx.popleft() if self._rx else 0
        if self._backlog and len(self._rx) < self._depth():
            self._rx.append(self._backlog.popleft())
        self._update()
        return value

    def _fr(self) -> int:
        fr = FR_TXFE
        if not self._rx:
            fr |= FR_RXFE
        elif len(self._rx) >= self._depth():
            fr |= FR_RXFF
        return fr

    def _rx_trigger(self) -> int:
        # IFLS RXIFLSEL: 1/8, 1/4, 1/2, 3/4, 7/8 of the FIFO.
        sel = (self._regs[Pl011Reg.IFLS] >> 3) & 7
        eighths = {0: 1, 1: 2, 2: 4, 3: 6, 4: 7}.get(sel, 4)
        return max(1, self._depth() * eighths // 8)

    def _update(self) -> None:
        self._ris &= ~(INT_RX | INT_RT)
        if self._rx:
            self._ris |= INT_RT
            if len(self._rx) >= self._rx_trigger():
                self._ris |= INT_RX
        self._irq.set_level(bool(self._ris & self._regs[Pl011Reg.IMSC]))
