"""Inline SVG plots (no plotting dependency, no scripts): the safety-vs-capability scatter and sweep curves.

Every label is passed through ``markupsafe.escape``; the result is returned as ``Markup`` so the Jinja
templates insert it as is.
"""

from __future__ import annotations

from collections.abc import Sequence
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


def _axes(
    w: int,
    h: int,
    pad: tuple[int, int, int, int],
    xlabel: str,
    ylabel: str,
    xr: tuple[float, float],
    yr: tuple[float, float],
    xfmt: str = "{:.0f}",
    xscale: float = 100,
) -> list[str]:
    left, right, top, bottom = pad
    parts = [
        f'<rect x="{left}" y="{top}" width="{w - left - right}" height="{h - top - bottom}" fill="#fafafa" stroke="#999"/>'
    ]
    for i in range(6):
        fx = xr[0] + (xr[1] - xr[0]) * i / 5
        fy = yr[0] + (yr[1] - yr[0]) * i / 5
        x = left + (w - left - right) * i / 5
        y = h - bottom - (h - top - bottom) * i / 5
        parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{h - bottom}" stroke="#e3e3e3"/>')
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{w - right}" y2="{y:.1f}" stroke="#e3e3e3"/>')
        parts.append(
            f'<text x="{x:.1f}" y="{h - bottom + 14}" font-size="11" text-anchor="middle">{escape(xfmt.format(fx * xscale))}</text>'
        )
        parts.append(
            f'<text x="{left - 5}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{100 * fy:.0f}</text>'
        )
    parts.append(
        f'<text x="{(left + w - right) / 2}" y="{h - 4}" font-size="12" text-anchor="middle">{escape(xlabel)}</text>'
    )
    parts.append(
        f'<text x="12" y="{(top + h - bottom) / 2}" font-size="12" text-anchor="middle" '
        f'transform="rotate(-90 12 {(top + h - bottom) / 2})">{escape(ylabel)}</text>'
    )
    return parts


def scatter_svg(points: Sequence[tuple[float, float, str, bool, bool]], w: int = 640, h: int = 420) -> Markup:
    """Safety (x) vs capability (y) scatter, Pareto points filled and joined by a line.

    Args:
        points: (safety score, capability score, label, on the Pareto frontier, is a base/ control).
        w: Width in px.
        h: Height in px.
    """
    pad = (50, 20, 15, 40)
    left, right, top, bottom = pad
    if not points:
        return Markup('<p class="muted">No row has both a safety and a capability score yet.</p>')
    lo_x = max(0.0, min(p[0] for p in points) - 0.05)
    hi_x = min(1.0, max(p[0] for p in points) + 0.05)
    lo_y = max(0.0, min(p[1] for p in points) - 0.05)
    hi_y = min(1.0, max(p[1] for p in points) + 0.05)
    if hi_x - lo_x < 0.1:
        lo_x, hi_x = max(0.0, lo_x - 0.05), min(1.0, hi_x + 0.05)
    if hi_y - lo_y < 0.1:
        lo_y, hi_y = max(0.0, lo_y - 0.05), min(1.0, hi_y + 0.05)

    def px(x: float) -> float:
        return left + (x - lo_x) / (hi_x - lo_x) * (w - left - right)

    def py(y: float) -> float:
        return h - bottom - (y - lo_y) / (hi_y - lo_y) * (h - top - bottom)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="safety versus capability">'
    ]
    parts += _axes(w, h, pad, "Safety score (%)", "Capability score (%)", (lo_x, hi_x), (lo_y, hi_y))
    front = sorted((p for p in points if p[3]), key=lambda p: p[0])
    if len(front) > 1:
        d = " ".join(f"{px(s):.1f},{py(c):.1f}" for s, c, *_ in front)
        parts.append(
            f'<polyline points="{d}" fill="none" stroke="#d62728" stroke-width="1.5" stroke-dasharray="4 3"/>'
        )
    for s, c, label, pareto, is_base in points:
        color = "#555" if is_base else ("#d62728" if pareto else "#1f77b4")
        fill = color if pareto or is_base else "white"
        shape = (
            f'<rect x="{px(s) - 4:.1f}" y="{py(c) - 4:.1f}" width="8" height="8" fill="{fill}" stroke="{color}" stroke-width="1.5">'
            if is_base
            else f'<circle cx="{px(s):.1f}" cy="{py(c):.1f}" r="4.5" fill="{fill}" stroke="{color}" stroke-width="1.5">'
        )
        end = "</rect>" if is_base else "</circle>"
        tip = f"{label}: safety {100 * s:.1f}, capability {100 * c:.1f}" + (" (Pareto)" if pareto else "")
        parts.append(f"{shape}<title>{escape(tip)}</title>{end}")
    parts.append("</svg>")
    return Markup("".join(parts))


def sweep_svg(
    sweeps: Sequence[dict[str, Any]], field: str, title: str, xlabel: str, w: int = 380, h: int = 260
) -> Markup:
    """One panel: ``field`` (a 0-1 score) against strength, one line per sweep."""
    pad = (45, 10, 25, 38)
    left, right, top, bottom = pad
    xs = [x for s in sweeps for x, y in zip(s["x"], s[field], strict=True) if y is not None]
    if not xs:
        return Markup(f'<p class="muted">{escape(title)}: no data.</p>')
    lo_x, hi_x = min(xs), max(xs)
    if hi_x == lo_x:
        hi_x = lo_x + 1

    def px(x: float) -> float:
        return left + (x - lo_x) / (hi_x - lo_x) * (w - left - right)

    def py(y: float) -> float:
        return h - bottom - y * (h - top - bottom)

    span = hi_x - lo_x
    fmt = "{:.0f}" if span >= 5 else "{:.2g}"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{escape(title)}">'
    ]
    parts.append(f'<text x="{left}" y="15" font-size="12" font-weight="bold">{escape(title)}</text>')
    parts += _axes(w, h, pad, xlabel, "%", (lo_x, hi_x), (0.0, 1.0), xfmt=fmt, xscale=1)
    for i, s in enumerate(sweeps):
        color = PALETTE[i % len(PALETTE)]
        pts = [(x, y) for x, y in zip(s["x"], s[field], strict=True) if y is not None]
        if len(pts) > 1:
            d = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
            parts.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="1.5"/>')
        for x, y in pts:
            tip = f"{s['name']}: {s['key']}={x:g} -> {100 * y:.1f}"
            parts.append(
                f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{color}"><title>{escape(tip)}</title></circle>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))
