"""The LED timeline of a run, as an SVG plot (or CSV/JSON for other tools).

One lane per LED: a bar while it is lit. Vertical lines mark what happened
to the VMs (start, crash, restart, shutdown) from the lifecycle journal, so a
crash shows as a frozen lane beside lanes that keep their rhythm. Each lane
ends with its toggle count and median period. Plain SVG text, no dependency.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence
from xml.sax.saxutils import escape

from pyned.devices.leds import LedEvent

WIDTH = 1000
LEFT, RIGHT, TOP = 70, 230, 56
LANE = 44
LIT, DARK = "#f5a623", "#d0d0d0"
MARK_COLOURS = {"crash": "#d0021b", "killed": "#d0021b", "start": "#417505",
                "restart": "#417505", "shutdown": "#4a4a4a", "reboot": "#4a90e2"}


@dataclass(frozen=True)
class Marker:
    t_ns: int
    label: str
    kind: str          # a journal event: start, crash, restart, shutdown, reboot, killed


def _nice_step(span_s: float) -> float:
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600):
        if span_s / step <= 12:
            return step
    return 7200.0


def _periods_ms(times: list[int]) -> list[float]:
    return [(b - a) / 1e6 for a, b in zip(times, times[1:])]


def render_svg(events: list[LedEvent], leds: list[str], start_ns: int, end_ns: int,
               markers: Sequence[Marker] = (), title: str = "LED timeline") -> str:
    end_ns = max(end_ns, start_ns + 1)
    plot_w = WIDTH - LEFT - RIGHT
    height = TOP + LANE * len(leds) + 40

    def x(t: int) -> float:
        return LEFT + (min(max(t, start_ns), end_ns) - start_ns) * plot_w / (end_ns - start_ns)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
           f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
           f'<text x="{LEFT}" y="20" font-size="15" font-weight="bold">{escape(title)}</text>']
    span = (end_ns - start_ns) / 1e9
    step = _nice_step(span)
    axis_y = TOP + LANE * len(leds) + 8
    n = 0
    while n * step <= span + 1e-9:
        tx = x(start_ns + int(n * step * 1e9))
        out.append(f'<line x1="{tx:.1f}" y1="{TOP - 6}" x2="{tx:.1f}" y2="{axis_y}" '
                   f'stroke="#eeeeee"/>')
        out.append(f'<text x="{tx:.1f}" y="{axis_y + 14}" text-anchor="middle" '
                   f'fill="#555">{n * step:g} s</text>')
        n += 1
    for i, led in enumerate(leds):
        y = TOP + i * LANE
        times = [e.t_ns for e in events if e.led == led]
        out.append(f'<text x="{LEFT - 10}" y="{y + LANE / 2 + 4:.1f}" text-anchor="end" '
                   f'font-weight="bold">{escape(led)}</text>')
        out.append(f'<line x1="{LEFT}" y1="{y + LANE - 12}" x2="{LEFT + plot_w}" '
                   f'y2="{y + LANE - 12}" stroke="{DARK}"/>')
        on_since = None
        for e in (e for e in events if e.led == led):
            if e.on and on_since is None:
                on_since = e.t_ns
            elif not e.on and on_since is not None:
                out.append(_bar(x(on_since), x(e.t_ns), y))
                on_since = None
        if on_since is not None:
            out.append(_bar(x(on_since), x(end_ns), y))
        periods = _periods_ms(times)
        note = f"{len(times)} changes"
        if periods:
            note += f", every {statistics.median(periods):.0f} ms (median)"
        out.append(f'<text x="{LEFT + plot_w + 10}" y="{y + LANE / 2 + 4:.1f}" '
                   f'fill="#333">{escape(note)}</text>')
    for k, m in enumerate(markers):
        mx = x(m.t_ns)
        colour = MARK_COLOURS.get(m.kind, "#4a4a4a")
        out.append(f'<line x1="{mx:.1f}" y1="{TOP - 14}" x2="{mx:.1f}" y2="{axis_y}" '
                   f'stroke="{colour}" stroke-dasharray="4,3"/>')
        out.append(f'<text x="{mx + 3:.1f}" y="{TOP - 16 - (k % 2) * 12}" fill="{colour}">'
                   f'{escape(m.label)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _bar(x0: float, x1: float, y: float) -> str:
    return (f'<rect x="{x0:.1f}" y="{y + 6}" width="{max(x1 - x0, 0.8):.1f}" '
            f'height="{LANE - 18}" fill="{LIT}"/>')


def write_trace(path: Path, events: list[LedEvent], leds: list[str], start_ns: int,
                end_ns: int, markers: Sequence[Marker] = (),
                title: str = "LED timeline") -> None:
    """Write the timeline as SVG, CSV or JSON, by the file's suffix (SVG otherwise)."""
    rows = [((e.t_ns - start_ns) / 1e9, e.led, int(e.on)) for e in events]
    suffix = path.suffix.lower()
    if suffix == ".csv":
        text = "t_s,led,on\n" + "".join(f"{t:.6f},{led},{on}\n" for t, led, on in rows)
    elif suffix == ".json":
        text = json.dumps({"leds": leds, "events": [
            {"t_s": round(t, 6), "led": led, "on": bool(on)} for t, led, on in rows],
            "markers": [{"t_s": round((m.t_ns - start_ns) / 1e9, 6), "label": m.label,
                         "kind": m.kind} for m in markers]}, indent=1) + "\n"
    else:
        text = render_svg(events, leds, start_ns, end_ns, markers, title)
    path.write_text(text)
