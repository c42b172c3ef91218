"""Inline SVG plots (no plotting dependency, no scripts): the two trade-off scatters and the sweep panels.

Hand-written rather than matplotlib: the site is a static page with no network assets and no image files, and
inline SVG keeps every label text-searchable and escaped. Every label goes through ``markupsafe.escape``; the
result is returned as ``Markup`` so the Jinja templates insert it as is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup, escape

PALETTE = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#17becf",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
)
CHAR_W = 6.2  # approximate width of one 11 px label character, for label placement


@dataclass
class Point:
    """One method configuration in a trade-off scatter (scores in 0-1)."""

    x: float
    y: float
    label: str
    tip: str
    pareto: bool = False
    control: bool = False


@dataclass
class Curve:
    """A strength sweep drawn as a connected curve through its points, in strength order."""

    name: str
    xy: list[tuple[float, float]] = field(default_factory=list)


def nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Round tick values covering ``[lo, hi]``: steps of 1, 2, 2.5 or 5 times a power of ten.

    Args:
        lo: Lowest data value.
        hi: Highest data value.
        target: Roughly how many intervals to aim for.

    Returns:
        Ascending ticks; the first is <= ``lo`` and the last >= ``hi``.
    """
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0) * 0.1
    raw = (hi - lo) / target
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step + 1e-9) * step
    ticks = []
    t = start
    while t < hi + step * 0.999:
        ticks.append(round(t, 10))
        t += step
    return ticks


def _fmt_tick(t: float) -> str:
    return f"{t:.0f}" if abs(t - round(t)) < 1e-9 else f"{t:g}"


def _tick(t: float, line: tuple[object, ...], label_at: tuple[object, object], anchor: str) -> list[str]:
    """The grid line (x1, y1, x2, y2) and the label of tick ``t``."""
    x1, y1, x2, y2 = line
    return [
        f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="#e3e3e3"/>',
        f'<text x="{label_at[0]}" y="{label_at[1]}" font-size="11" text-anchor="{anchor}">'
        f"{escape(_fmt_tick(t))}</text>",
    ]


@dataclass
class _Frame:
    """Plot area geometry and the data -> pixel mapping."""

    w: int
    h: int
    pad: tuple[int, int, int, int]  # left, right, top, bottom
    xt: list[float]
    yt: list[float]

    def px(self, x: float) -> float:
        left, right = self.pad[0], self.pad[1]
        return left + (x - self.xt[0]) / (self.xt[-1] - self.xt[0]) * (self.w - left - right)

    def py(self, y: float) -> float:
        top, bottom = self.pad[2], self.pad[3]
        return self.h - bottom - (y - self.yt[0]) / (self.yt[-1] - self.yt[0]) * (self.h - top - bottom)

    def axes(self, xlabel: str, ylabel: str) -> list[str]:
        left, right, top, bottom = self.pad
        w, h = self.w, self.h
        parts = [
            f'<rect x="{left}" y="{top}" width="{w - left - right}" height="{h - top - bottom}" '
            'fill="#fafafa" stroke="#999"/>'
        ]
        for t in self.xt:
            x = f"{self.px(t):.1f}"
            parts += _tick(t, (x, top, x, h - bottom), (x, h - bottom + 14), "middle")
        for t in self.yt:
            y = self.py(t)
            parts += _tick(t, (left, f"{y:.1f}", w - right, f"{y:.1f}"), (left - 5, f"{y + 4:.1f}"), "end")
        parts.append(
            f'<text x="{(left + w - right) / 2}" y="{h - 6}" font-size="12" text-anchor="middle">'
            f"{escape(xlabel)}</text>"
        )
        mid = (top + h - bottom) / 2
        parts.append(
            f'<text x="13" y="{mid}" font-size="12" text-anchor="middle" transform="rotate(-90 13 {mid})">'
            f"{escape(ylabel)}</text>"
        )
        return parts


def _pct_ticks(values: Sequence[float]) -> list[float]:
    """Round percentage ticks for values given as fractions (0.12 = 12), spanning at least 10 points; kept
    inside 0-100 only when every value is (rates), so signed changes and retentions above 100 % fit."""
    lo, hi = 100 * min(values), 100 * max(values)
    if hi - lo < 10:
        mid = (lo + hi) / 2
        lo, hi = mid - 5, mid + 5
    lo, hi = lo - 3, hi + 3
    if min(values) >= 0:
        lo = max(0.0, lo)
    if max(values) <= 1:
        hi = min(100.0, hi)
    return nice_ticks(lo, hi) or [0.0, 100.0]


def _place_labels(
    anchors: Sequence[tuple[float, float, str]], box: tuple[float, float, float, float]
) -> list[tuple[float, float, str]]:
    """Greedy label placement: for each point the first of a dozen offsets that overlaps no point or placed label.

    Args:
        anchors: (x px, y px, label) per point.
        box: Plot area (x0, y0, x1, y1) labels must stay in.

    Returns:
        (x, y, text-anchor) per point, in input order.
    """
    placed: list[tuple[float, float, float, float]] = [(x - 7, y - 7, x + 7, y + 7) for x, y, _ in anchors]
    out: list[tuple[float, float, str]] = []
    offsets = (
        (7, 4),
        (-7, 4),
        (7, -7),
        (-7, -7),
        (7, 15),
        (-7, 15),
        (0, -10),
        (0, 18),
        (7, -16),
        (-7, -16),
        (7, 24),
        (-7, 24),
    )
    for x, y, text in anchors:
        tw = CHAR_W * len(text)
        best = None
        for dx, dy in offsets:
            anchor = "start" if dx > 0 else ("end" if dx < 0 else "middle")
            x0 = x + dx if dx > 0 else (x + dx - tw if dx < 0 else x - tw / 2)
            rect = (x0, y + dy - 10, x0 + tw, y + dy + 2)
            inside = rect[0] >= box[0] and rect[2] <= box[2] and rect[1] >= box[1] and rect[3] <= box[3]
            free = not any(
                rect[0] < p[2] and p[0] < rect[2] and rect[1] < p[3] and p[1] < rect[3] for p in placed
            )
            if inside and free:
                best = (x + dx, y + dy, anchor, rect)
                break
            if best is None and inside:
                best = (x + dx, y + dy, anchor, rect)  # fallback: inside, overlapping
        if best is None:
            best = (x + 7, y + 4, "start", (x + 7, y - 6, x + 7 + tw, y + 6))
        placed.append(best[3])
        out.append(best[:3])
    return out


def tradeoff_svg(
    points: Sequence[Point],
    curves: Sequence[Curve],
    xlabel: str,
    ylabel: str,
    aria: str,
    w: int = 560,
    h: int = 400,
) -> Markup:
    """A labelled scatter of method configurations with sweeps as connected curves.

    Args:
        points: One per method configuration (scores in 0-1, drawn in %).
        curves: Strength sweeps, each drawn as a polyline in strength order.
        xlabel: X axis title.
        ylabel: Y axis title.
        aria: Accessible name of the figure.
        w: Width in px (the SVG scales down to its container).
        h: Height in px.
    """
    if not points:
        return Markup(f'<p class="muted">{escape(aria)}: no row has both scores yet.</p>')
    fr = _Frame(w, h, (48, 12, 12, 40), _pct_ticks([p.x for p in points]), _pct_ticks([p.y for p in points]))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" class="plot" role="img" '
        f'aria-label="{escape(aria)}">'
    ]
    parts += fr.axes(xlabel, ylabel)
    for i, c in enumerate(curves):
        if len(c.xy) > 1:
            d = " ".join(f"{fr.px(100 * x):.1f},{fr.py(100 * y):.1f}" for x, y in c.xy)
            parts.append(
                f'<polyline points="{d}" fill="none" stroke="{PALETTE[i % len(PALETTE)]}" stroke-width="1.5" '
                f'stroke-opacity="0.7"><title>{escape(c.name)}</title></polyline>'
            )
    for p in points:
        cx, cy = fr.px(100 * p.x), fr.py(100 * p.y)
        color = "#555" if p.control else ("#d62728" if p.pareto else "#1f77b4")
        fill = color if p.pareto or p.control else "white"
        tip = f"<title>{escape(p.tip)}</title>"
        if p.control:
            parts.append(
                f'<rect x="{cx - 4:.1f}" y="{cy - 4:.1f}" width="8" height="8" fill="{fill}" stroke="{color}" '
                f'stroke-width="1.5">{tip}</rect>'
            )
        else:
            parts.append(
                f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="4.5" fill="{fill}" stroke="{color}" '
                f'stroke-width="1.5">{tip}</circle>'
            )
    box = (fr.pad[0], fr.pad[2], w - fr.pad[1], h - fr.pad[3])
    anchors = [(fr.px(100 * p.x), fr.py(100 * p.y), p.label) for p in points]
    for (lx, ly, anchor), p in zip(_place_labels(anchors, box), points, strict=True):
        parts.append(
            f'<text x="{lx:.1f}" y="{ly:.1f}" font-size="11" text-anchor="{anchor}" fill="#333" '
            f'class="pt-label">{escape(p.label)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def sweep_svg(
    sweeps: Sequence[dict[str, Any]], field_name: str, title: str, xlabel: str, w: int = 380, h: int = 260,
    ylabel: str = "%",
) -> Markup:
    """One panel: ``field_name`` (a fraction, drawn x100: a rate or retention in %, a change in points) against
    strength, one line per sweep."""
    xs = [x for s in sweeps for x, y in zip(s["x"], s[field_name], strict=True) if y is not None]
    ys = [y for s in sweeps for y in s[field_name] if y is not None]
    if not xs:
        return Markup(f'<p class="muted">{escape(title)}: no data.</p>')
    fr = _Frame(w, h, (45, 12, 25, 38), nice_ticks(min(xs), max(xs)), _pct_ticks(ys))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" class="plot small-plot" role="img" '
        f'aria-label="{escape(title)}">'
    ]
    parts.append(f'<text x="{fr.pad[0]}" y="15" font-size="12" font-weight="bold">{escape(title)}</text>')
    parts += fr.axes(xlabel, ylabel)
    for i, s in enumerate(sweeps):
        color = PALETTE[i % len(PALETTE)]
        pts = [(x, y) for x, y in zip(s["x"], s[field_name], strict=True) if y is not None]
        if len(pts) > 1:
            d = " ".join(f"{fr.px(x):.1f},{fr.py(100 * y):.1f}" for x, y in pts)
            parts.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="1.5"/>')
        for x, y in pts:
            tip = f"{s['name']}: {s['key']}={x:g} -> {100 * y:.1f}"
            parts.append(
                f'<circle cx="{fr.px(x):.1f}" cy="{fr.py(100 * y):.1f}" r="3" fill="{color}">'
                f"<title>{escape(tip)}</title></circle>"
            )
    parts.append("</svg>")
    return Markup("".join(parts))
