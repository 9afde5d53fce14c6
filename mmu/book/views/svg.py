"""The book's figures as its own SVG: pure functions from data to an :class:`SvgFigure`.

Why not matplotlib: the live edition runs in the reader's browser (Pyodide), where
matplotlib is a 10 MB download from Pyodide's CDN and absent offline; these figures are a
few rectangles and labels.  Drawing them here keeps every chapter runnable offline and
makes each figure accessible by construction:

* a ``<title>`` and a ``<desc>`` (``role="img"``, ``aria-labelledby``), and every word
  as real ``<text>`` (a screen reader and a text search find it; matplotlib draws glyphs
  as paths);
* titles wrap to the figure's width instead of running off its edge;
* meaning never rests on colour: hatching, marker shape and hollow/filled markers carry
  it, and a legend names each series in words.

:class:`Canvas` is the drawing surface (rectangles, lines, markers, text, hatch
patterns); :func:`lanes`, :func:`grid` and :func:`bars` draw the three kinds of figure the
chapters use.  Output is deterministic: the same data give the same bytes.
"""
from __future__ import annotations

import dataclasses
import math
import zlib
from typing import Sequence

from mmu.book.views.common import esc

__all__ = ["SvgFigure", "Canvas", "Series", "lanes", "grid", "bars", "wrap", "wrap_chars", "text_width",
           "nice_ticks"]

#: Monospace: one character advances 0.6 em, so a label's width is known without fonts.
FONT = "DejaVu Sans Mono, Menlo, Consolas, monospace"
ADVANCE = 0.6
#: Hatch patterns by the names matplotlib uses ("" = none).
HATCHES = ("", "//", "..", "xx")


def text_width(text: str, size: float) -> float:
    """Width in px of ``text`` at font ``size`` in the monospace font."""
    return len(text) * size * ADVANCE


def wrap(text: str, width_px: float, size: float) -> list[str]:
    """Greedy word wrap of ``text`` into lines no wider than ``width_px``."""
    return wrap_chars(text, max(8, int(width_px / (size * ADVANCE))))


def wrap_chars(text: str, limit: int) -> list[str]:
    """Greedy word wrap into lines of at most ``limit`` characters (a longer word keeps
    a line of its own)."""
    lines, cur = [], ""
    for word in text.split():
        if cur and len(cur) + 1 + len(word) > limit:
            lines.append(cur)
            cur = word
        else:
            cur = f"{cur} {word}".strip()
    return lines + ([cur] if cur else [])


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values (1, 2 or 5 × 10^k apart) covering [lo, hi]."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _num(v: float) -> str:
    return f"{v:g}" if abs(v) < 1e6 else f"{v:.0e}"


@dataclasses.dataclass(frozen=True)
class SvgFigure:
    """An SVG picture: ``svg`` (the markup), its ``title`` and every ``label`` drawn."""

    svg: str
    title: str
    labels: tuple[str, ...]

    def _repr_svg_(self) -> str:
        return self.svg


class Canvas:
    """An SVG drawing surface of ``width`` px whose height grows with what is drawn.

    Element ids (title, desc, hatch patterns) carry a prefix derived from the title, so
    several figures on one page never share an id."""

    def __init__(self, width: float, title: str, desc: str, css_class: str, *,
                 title_size: float = 14):
        self.width = width
        self.title = title
        self.desc = desc
        self.css_class = css_class
        self.uid = f"f{zlib.crc32(title.encode()):08x}"
        self.parts: list[str] = []
        self.labels: list[str] = []
        self.patterns: set[str] = set()
        self.bottom = 0.0
        y = 8.0
        for line in wrap(title, width - 20, title_size):
            y += title_size * 1.3
            self.text(width / 2, y, line, size=title_size, anchor="middle", weight="bold")
        self.top = y + 10            # where the plot may start

    def _grow(self, y: float) -> None:
        self.bottom = max(self.bottom, y)

    def text(self, x: float, y: float, s: str, *, size: float = 12, anchor: str = "start",
             weight: str = "", rotate: float = 0) -> None:
        if anchor == "middle" and not rotate:
            # Keep a centred label inside the picture rather than cut at its edge.
            half = text_width(s, size) / 2
            x = min(max(x, half + 4), self.width - half - 4)
        attrs = f' text-anchor="{anchor}"' if anchor != "start" else ""
        attrs += f' font-weight="{weight}"' if weight else ""
        attrs += f' transform="rotate({rotate:g} {x:.1f} {y:.1f})"' if rotate else ""
        self.parts.append(f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size:g}"{attrs}>'
                          f'{esc(s)}</text>')
        self.labels.append(s)
        # Lowest point of the (rotated) baseline, from the anchor's share of the width.
        w = text_width(s, size)
        before = {"start": 0.0, "middle": w / 2, "end": w}[anchor]
        sin = math.sin(math.radians(rotate))
        self._grow(y + max(-before * sin, (w - before) * sin, 0) + size * 0.3)

    def rect(self, x: float, y: float, w: float, h: float, *, fill: str = "#ffffff",
             stroke: str = "#000000", hatch: str = "", width: float = 1, dash: bool = False,
             opacity: float = 1.0) -> None:
        extra = ' stroke-dasharray="6 3"' if dash else ""
        extra += f' fill-opacity="{opacity:g}"' if opacity < 1 else ""
        self.parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" '
                          f'fill="{fill}" stroke="{stroke}" stroke-width="{width:g}"{extra}/>')
        if hatch:
            self.parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" '
                              f'fill="url(#{self._pattern(hatch)})" stroke="none"/>')
        self._grow(y + h)

    def line(self, x1: float, y1: float, x2: float, y2: float, *, width: float = 1,
             stroke: str = "#000000") -> None:
        self.parts.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
                          f'stroke="{stroke}" stroke-width="{width:g}"/>')
        self._grow(max(y1, y2))

    def marker(self, shape: str, x: float, y: float, *, filled: bool, size: float = 7) -> None:
        """``^`` ``v`` triangles, ``s`` square, ``D`` diamond; hollow = white inside."""
        r = size / 2
        pts = {"^": [(0, -r), (r, r), (-r, r)], "v": [(0, r), (r, -r), (-r, -r)],
               "s": [(-r, -r), (r, -r), (r, r), (-r, r)],
               "D": [(0, -r * 1.3), (r, 0), (0, r * 1.3), (-r, 0)]}[shape]
        fill = "#000000" if filled else "#ffffff"
        self.parts.append('<polygon points="' + " ".join(f"{x + dx:.1f},{y + dy:.1f}"
                                                         for dx, dy in pts)
                          + f'" fill="{fill}" stroke="#000000" stroke-width="1.2"/>')
        self._grow(y + r * 1.3)

    def _pattern(self, hatch: str) -> str:
        if hatch not in HATCHES[1:]:
            raise ValueError(f"hatch {hatch!r} is not one of {HATCHES[1:]}")
        pid = f"{self.uid}-{('diag', 'dots', 'cross')[HATCHES.index(hatch) - 1]}"
        self.patterns.add(hatch)
        return pid

    def figure(self, pad: float = 12) -> SvgFigure:
        height = math.ceil(self.bottom + pad)
        defs = []
        for hatch in sorted(self.patterns):
            pid = self._pattern(hatch)
            body = {"//": '<path d="M0,8 L8,0 M-2,2 L2,-2 M6,10 L10,6" stroke="#000" '
                          'stroke-width="1"/>',
                    "..": '<circle cx="4" cy="4" r="1.2" fill="#000"/>',
                    "xx": '<path d="M0,0 L8,8 M8,0 L0,8" stroke="#000" stroke-width="0.8"/>'}[hatch]
            defs.append(f'<pattern id="{pid}" width="8" height="8" patternUnits="userSpaceOnUse">'
                        f'{body}</pattern>')
        head = (f'<svg xmlns="http://www.w3.org/2000/svg" class="mmu-figure {esc(self.css_class)}" '
                f'width="{self.width:g}" height="{height}" viewBox="0 0 {self.width:g} {height}" '
                f'role="img" aria-labelledby="{self.uid}-t {self.uid}-d" font-family="{FONT}">'
                f'<title id="{self.uid}-t">{esc(self.title)}</title>'
                f'<desc id="{self.uid}-d">{esc(self.desc)}</desc>'
                + (f"<defs>{''.join(defs)}</defs>" if defs else "")
                + f'<rect width="100%" height="100%" fill="#ffffff"/>')
        return SvgFigure(head + "".join(self.parts) + "</svg>", self.title, tuple(self.labels))


# ---- lanes: one horizontal lane per question, a bar where the answer is yes -------------

def lanes(title: str, desc: str, lane_labels: Sequence[str],
          spans: Sequence[Sequence[tuple[float, float]]], x_range: tuple[float, float],
          xlabel: str, ylabel: str, css_class: str, width: float = 900) -> SvgFigure:
    """``spans[i]`` = the (start, end) x intervals where lane i's answer is yes; each lane
    has its own hatch (and its label), so grey-scale prints and screen readers tell them
    apart."""
    if len(spans) != len(lane_labels):
        raise ValueError(f"{len(spans)} span lists for {len(lane_labels)} lanes")
    c = Canvas(width, title, desc, css_class)
    left = max(text_width(s, 12) for s in lane_labels) + 46
    right = width - 20
    lane_h, y0 = 30, c.top + 6
    lo, hi = x_range
    sx = (right - left) / (hi - lo)
    for i, (label, yes) in enumerate(zip(lane_labels, spans)):
        y = y0 + i * (lane_h + 8)
        c.text(left - 8, y + lane_h / 2 + 4, label, anchor="end")
        c.rect(left, y, right - left, lane_h, fill="#ffffff", stroke="#999999")
        for a, b in yes:
            c.rect(left + (a - lo) * sx, y + 3, max(1.0, (b - a) * sx), lane_h - 6,
                   fill="#8c8c8c", hatch=HATCHES[i % len(HATCHES)], width=0.5)
    axis_y = y0 + len(lane_labels) * (lane_h + 8)
    c.line(left, axis_y, right, axis_y)
    for t in nice_ticks(lo, hi, 8):
        x = left + (t - lo) * sx
        c.line(x, axis_y, x, axis_y + 5)
        c.text(x, axis_y + 18, _num(t), anchor="middle", size=11)
    c.text((left + right) / 2, axis_y + 38, xlabel, anchor="middle")
    c.text(14, y0 + (axis_y - y0) / 2, ylabel, anchor="middle", size=11, rotate=-90)
    return c.figure()


# ---- grid: numbered cells (the order of memory references) -------------------------------

def grid(title: str, desc: str, row_labels: Sequence[str], col_labels: Sequence[str],
         cells: Sequence[Sequence[int]], xlabel: str, ylabel: str, css_class: str,
         hatched_col: int | None = None) -> SvgFigure:
    """A table of squares: a number where the cell is used (the number carries the
    meaning, shading repeats it), ``·`` where not; ``hatched_col`` is drawn hatched."""
    cell = 52
    left = max(text_width(s, 12) for s in row_labels) + 40
    col_lab_h = max(text_width(s, 11) for s in col_labels) * 0.72 + 16
    width = max(left + cell * len(col_labels) + 30, text_width(xlabel, 12) + 40, 480)
    c = Canvas(width, title, desc, css_class)
    y0 = c.top + 4
    for i, (label, row) in enumerate(zip(row_labels, cells)):
        y = y0 + i * cell
        c.text(left - 8, y + cell / 2 + 4, label, anchor="end")
        for j, n in enumerate(row):
            x = left + j * cell
            face = "#d9d9d9" if n and j != hatched_col else ("#999999" if n else "#ffffff")
            c.rect(x + 3, y + 3, cell - 6, cell - 6, fill=face,
                   hatch="//" if n and j == hatched_col else "")
            c.rect(x + cell / 2 - 13, y + cell / 2 - 10, 26, 20, fill="#ffffff", stroke="none")
            c.text(x + cell / 2, y + cell / 2 + 5, str(n) if n else "·", anchor="middle",
                   size=13, weight="bold")
    yb = y0 + len(row_labels) * cell
    for j, label in enumerate(col_labels):
        x = left + j * cell + cell / 2
        c.text(x + 4, yb + 12, label, anchor="end", size=11, rotate=-35)
    c.text(left + cell * len(col_labels) / 2, yb + col_lab_h + 14, xlabel, anchor="middle")
    c.text(14, y0 + (yb - y0) / 2, ylabel, anchor="middle", size=11, rotate=-90)
    return c.figure()


# ---- bars: grouped bars with a marker on each, and a legend in words ----------------------

@dataclasses.dataclass(frozen=True)
class Series:
    """One series of a bar chart: its legend ``label``, one value per group (``None`` =
    no bar), and how it is told apart without colour: ``hatch``, marker ``shape`` and
    ``filled`` (hollow = False); ``fill`` only repeats it."""

    label: str
    values: tuple[float | None, ...]
    fill: str
    hatch: str
    shape: str
    filled: bool


def _scale(lo: float, hi: float, log: bool):
    if log:
        a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
        ticks = [10.0 ** k for k in range(a, b + 1)]
        return (lambda v: (math.log10(v) - a) / (b - a)), ticks
    ticks = nice_ticks(0, hi * 1.1, 5)
    top = max(ticks[-1], hi * 1.1)
    return (lambda v: v / top), ticks


def bars(canvas: Canvas, x: float, y: float, w: float, h: float, groups: Sequence[str],
         series: Sequence[Series], *, ylabel: str, xlabel: str, subtitle: str = "",
         log: bool = False, rotate_groups: bool = False) -> float:
    """Draw one bar panel into ``canvas`` at (x, y) of size w × h (plot area); returns
    the y below it (after the group labels, axis label and legend)."""
    values = [v for s in series for v in s.values if v is not None]
    if not values or (log and min(values) <= 0):
        raise ValueError("bars need positive values" if log else "bars need values")
    frac, ticks = _scale(min(values), max(values), log)
    if subtitle:
        canvas.text(x + w / 2, y - 8, subtitle, anchor="middle", size=12, weight="bold")
    canvas.rect(x, y, w, h, fill="#ffffff", stroke="#000000")
    for t in ticks:
        ty = y + h - frac(t) * h
        canvas.line(x - 5, ty, x, ty)
        canvas.line(x, ty, x + w, ty, width=0.3, stroke="#bbbbbb")
        canvas.text(x - 8, ty + 4, _num(t), anchor="end", size=11)
    canvas.text(x - 62, y + h / 2, ylabel, anchor="middle", size=11, rotate=-90)
    gw = w / len(groups)
    bw = gw * 0.8 / len(series)
    for g, name in enumerate(groups):
        for k, s in enumerate(series):
            v = s.values[g]
            if v is None:
                continue
            bx = x + g * gw + gw * 0.1 + k * bw
            top = y + h - frac(v) * h
            canvas.rect(bx, top, bw, y + h - top, fill=s.fill, hatch=s.hatch,
                        opacity=0.75 if s.hatch else 1.0)
            canvas.marker(s.shape, bx + bw / 2, top, filled=s.filled)
        gx = x + g * gw + gw / 2
        if rotate_groups:
            canvas.text(gx + 4, y + h + 14, name, anchor="end", size=11, rotate=-35)
        else:
            canvas.text(gx, y + h + 18, name, anchor="middle", size=11)
    below = y + h + (max(text_width(n, 11) for n in groups) * 0.6 + 22 if rotate_groups
                     else 30)
    canvas.text(x + w / 2, below + 8, xlabel, anchor="middle", size=11)
    # Legend: swatch (hatch) + marker (shape, hollow/filled) + words.
    ly = below + 30
    col_w = max(text_width(s.label, 11) for s in series) + 56
    per_row = max(1, int(w // col_w))
    for k, s in enumerate(series):
        lx = x + (k % per_row) * col_w
        yy = ly + (k // per_row) * 22
        canvas.rect(lx, yy - 10, 22, 14, fill=s.fill, hatch=s.hatch,
                    opacity=0.75 if s.hatch else 1.0)
        canvas.marker(s.shape, lx + 32, yy - 3, filled=s.filled)
        canvas.text(lx + 44, yy + 1, s.label, size=11)
    return ly + ((len(series) - 1) // per_row) * 22 + 14
