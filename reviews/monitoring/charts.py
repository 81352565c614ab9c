"""Inline SVG charts for the dashboard, drawn on the server.

The portal's content security policy allows no inline script and no inline style, so a chart is
plain SVG: geometry and colour through presentation attributes and classes from
`static/css/dashboard.css`, a tooltip per mark through a `<title>` child, and the whole chart
labelled by its own `<title>` and `<desc>`. Every chart also carries its numbers as a table
(headers and rows of strings) that the page shows under a `<details>`, so nothing is only a
picture. Every piece of text that reaches the SVG goes through `escape`; numbers are formatted
here, never interpolated raw.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH = 720
HEIGHT = 260
LEFT, RIGHT, TOP, BOTTOM = 52, 16, 34, 40
PALETTE_SIZE = 8  # series-0 … series-7 in dashboard.css
MAX_X_LABELS = 12
DASH = "\u2013"  # between the ends of a range
NOTHING = DASH  # a cell with no value


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float | None]  # one per bucket; None: nothing to show there
    # What a point says in its tooltip and in the table (e.g. "75.0% (3 of 4)"); the formatted
    # value when not given.
    notes: Sequence[str] | None = None


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    svg: SafeString
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    description: str = ""


@dataclass(frozen=True)
class Axis:
    kind: str = "count"  # "count" or "share" (a fraction, shown as a percentage)
    maximum: float | None = None  # fixed top of the scale; else a round number above the data
    label: str = ""


@dataclass
class _Svg:
    parts: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        self.parts.append(text)

    def text(self, x: float, y: float, content: str, cls: str, anchor: str = "start") -> None:
        self.add(
            f'<text x="{x:.1f}" y="{y:.1f}" class="{cls}" text-anchor="{anchor}">'
            f"{escape(content)}</text>"
        )


def format_count(value: float) -> str:
    return f"{round(value):,}"


def format_share(value: float) -> str:
    return f"{value * 100:.1f}%"


def format_value(value: float | None, kind: str) -> str:
    if value is None:
        return NOTHING
    return format_share(value) if kind == "share" else format_count(value)


def nice_step(value: float) -> float:
    """The smallest of 1, 2 or 5 times a power of ten at or above `value`."""
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5):
        if step * magnitude >= value * (1 - 1e-9):
            return float(step * magnitude)
    return float(10 * magnitude)


def scale(values: Sequence[float], axis: Axis) -> tuple[float, list[float]]:
    """The top of the y scale and its ticks: round steps, about four of them, whole numbers
    for counts."""
    if axis.maximum is not None:
        return axis.maximum, [axis.maximum * i / 4 for i in range(5)]
    highest = max(values, default=0.0)
    if highest <= 0:
        highest = 1.0 if axis.kind == "count" else 0.1
    step = nice_step(highest / 4)
    if axis.kind == "count":
        step = max(1.0, step)
    count = math.ceil(highest / step - 1e-9)
    return step * count, [step * i for i in range(count + 1)]


def _open(svg: _Svg, chart_id: str, title: str, description: str) -> None:
    cid = escape(chart_id)
    svg.add(
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{cid}" role="img" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'preserveAspectRatio="xMidYMid meet" aria-labelledby="{cid}-title {cid}-desc">'
    )
    svg.add(f'<title id="{cid}-title">{escape(title)}</title>')
    svg.add(f'<desc id="{cid}-desc">{escape(description)}</desc>')


def _legend(svg: _Svg, names: Sequence[str], classes: Sequence[str]) -> None:
    x = float(LEFT)
    for name, cls in zip(names, classes, strict=True):
        svg.add(
            f'<rect x="{x:.1f}" y="10" width="12" height="12" rx="2" class="swatch {cls}"></rect>'
        )
        svg.text(x + 17, 20, name, "legend")
        x += 17 + 7 * len(name) + 18


def _y_axis(svg: _Svg, top: float, ticks: Sequence[float], axis: Axis) -> None:
    plot_h = HEIGHT - TOP - BOTTOM
    for tick in ticks:
        y = TOP + plot_h * (1 - tick / top)
        svg.add(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"></line>'
        )
        svg.text(LEFT - 6, y + 4, format_value(tick, axis.kind), "tick", anchor="end")
    if axis.label:
        svg.text(LEFT, TOP - 4, axis.label, "axis-label")


def _x_labels(svg: _Svg, labels: Sequence[str], centre: Callable[[int], float]) -> None:
    step = max(1, math.ceil(len(labels) / MAX_X_LABELS))
    for i, label in enumerate(labels):
        if i % step == 0:
            svg.text(centre(i), HEIGHT - BOTTOM + 16, label, "tick", anchor="middle")
    svg.add(
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{HEIGHT - BOTTOM}" '
        f'y2="{HEIGHT - BOTTOM}" class="axis"></line>'
    )


def _series_class(i: int) -> str:
    return f"series-{i % PALETTE_SIZE}"


def _notes(series: Series, kind: str) -> list[str]:
    if series.notes is not None:
        return list(series.notes)
    return [format_value(v, kind) for v in series.values]


def _table(
    x_header: str, labels: Sequence[str], series: Sequence[Series], kind: str
) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
    notes = [_notes(s, kind) for s in series]
    headers = (x_header, *(s.name for s in series))
    rows = tuple((label, *(n[i] for n in notes)) for i, label in enumerate(labels))
    return headers, rows


def line_chart(
    *,
    chart_id: str,
    title: str,
    description: str,
    labels: Sequence[str],
    full_labels: Sequence[str],
    series: Sequence[Series],
    axis: Axis = Axis(),
    area: bool = False,
    x_header: str = "bucket",
) -> Chart:
    """Lines over time, one point per bucket (at its centre); a None breaks the line."""
    n = len(labels)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    values = [v for s in series for v in s.values if v is not None]
    top, ticks = scale(values, axis)

    def cx(i: int) -> float:
        return LEFT + (i + 0.5) * plot_w / max(n, 1)

    def cy(v: float) -> float:
        return TOP + plot_h * (1 - min(v, top) / top)

    svg = _Svg()
    _open(svg, chart_id, title, description)
    _y_axis(svg, top, ticks, axis)
    _x_labels(svg, labels, cx)
    classes = [_series_class(i) for i in range(len(series))]
    for s, cls in zip(series, classes, strict=True):
        runs: list[list[tuple[float, float]]] = [[]]
        for i, v in enumerate(s.values):
            if v is None:
                runs.append([])
            else:
                runs[-1].append((cx(i), cy(v)))
        for run in (r for r in runs if r):
            points = " ".join(f"{x:.1f},{y:.1f}" for x, y in run)
            if area and len(run) > 1:
                base = TOP + plot_h
                svg.add(
                    f'<polygon class="area {cls}" points="{run[0][0]:.1f},{base:.1f} {points} '
                    f'{run[-1][0]:.1f},{base:.1f}"></polygon>'
                )
            svg.add(f'<polyline class="line {cls}" fill="none" points="{points}"></polyline>')
        notes = _notes(s, axis.kind)
        for i, v in enumerate(s.values):
            if v is None:
                continue
            svg.add(
                f'<circle class="point {cls}" cx="{cx(i):.1f}" cy="{cy(v):.1f}" r="3">'
                f"<title>{escape(full_labels[i])} · {escape(s.name)}: {escape(notes[i])}</title>"
                f"</circle>"
            )
    _legend(svg, [s.name for s in series], classes)
    svg.add("</svg>")
    headers, rows = _table(x_header, full_labels, series, axis.kind)
    return Chart(chart_id, title, mark_safe("".join(svg.parts)), headers, rows, description)


def stacked_bars(
    *,
    chart_id: str,
    title: str,
    description: str,
    labels: Sequence[str],
    full_labels: Sequence[str],
    series: Sequence[Series],
    x_header: str = "bucket",
) -> Chart:
    """One column per bucket, its segments the series' counts stacked in order."""
    n = len(labels)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    totals = [sum(s.values[i] or 0 for s in series) for i in range(n)]
    top, ticks = scale(totals, Axis())
    slot = plot_w / max(n, 1)
    bar_w = max(1.0, slot * 0.78)

    def cx(i: int) -> float:
        return LEFT + (i + 0.5) * slot

    svg = _Svg()
    _open(svg, chart_id, title, description)
    _y_axis(svg, top, ticks, Axis())
    _x_labels(svg, labels, cx)
    classes = [_series_class(i) for i in range(len(series))]
    for i in range(n):
        base = 0.0
        for s, cls in zip(series, classes, strict=True):
            v = s.values[i] or 0
            if v <= 0:
                continue
            y_top = TOP + plot_h * (1 - (base + v) / top)
            h = plot_h * v / top
            svg.add(
                f'<rect class="column {cls}" x="{cx(i) - bar_w / 2:.1f}" y="{y_top:.1f}" '
                f'width="{bar_w:.1f}" height="{h:.1f}">'
                f"<title>{escape(full_labels[i])} · {escape(s.name)}: {format_count(v)}</title>"
                f"</rect>"
            )
            base += v
    _legend(svg, [s.name for s in series], classes)
    svg.add("</svg>")
    total = Series("total", totals)
    headers, rows = _table(x_header, full_labels, [*series, total], "count")
    return Chart(chart_id, title, mark_safe("".join(svg.parts)), headers, rows, description)


def overlaid_histogram(
    *,
    chart_id: str,
    title: str,
    description: str,
    edges: Sequence[float],
    recent: Sequence[int],
    reference: Sequence[int],
    recent_name: str = "this period",
    reference_name: str = "reference window",
) -> Chart:
    """Two distributions over the same bins, as shares of their own totals: the recent one as
    filled bars, the reference one as an outline over them."""
    bins = len(recent)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    recent_total, reference_total = sum(recent), sum(reference)
    recent_share = [c / recent_total if recent_total else None for c in recent]
    reference_share = [c / reference_total if reference_total else None for c in reference]
    shown = [v for v in (*recent_share, *reference_share) if v is not None]
    top, ticks = scale(shown, Axis(kind="share"))
    slot = plot_w / bins

    def x(i: int) -> float:
        return LEFT + i * slot

    def y(v: float) -> float:
        return TOP + plot_h * (1 - v / top)

    labels = [f"{edges[i]:.1f}{DASH}{edges[i + 1]:.1f}" for i in range(bins)]
    svg = _Svg()
    _open(svg, chart_id, title, description)
    _y_axis(svg, top, ticks, Axis(kind="share"))
    for i, edge in enumerate(edges):
        svg.text(LEFT + i * slot, HEIGHT - BOTTOM + 16, f"{edge:.1f}", "tick", anchor="middle")
    svg.add(
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{HEIGHT - BOTTOM}" '
        f'y2="{HEIGHT - BOTTOM}" class="axis"></line>'
    )
    svg.text((LEFT + WIDTH - RIGHT) / 2, HEIGHT - 6, "score", "axis-label", anchor="middle")
    for i, share in enumerate(recent_share):
        if not share:
            continue
        svg.add(
            f'<rect class="column series-0" x="{x(i) + 2:.1f}" y="{y(share):.1f}" '
            f'width="{slot - 4:.1f}" height="{plot_h * share / top:.1f}">'
            f"<title>{escape(labels[i])} · {escape(recent_name)}: {format_share(share)} "
            f"({format_count(recent[i])})</title></rect>"
        )
    for i, share in enumerate(reference_share):
        if not share:
            continue
        svg.add(
            f'<rect class="reference" fill="none" x="{x(i) + 2:.1f}" y="{y(share):.1f}" '
            f'width="{slot - 4:.1f}" height="{plot_h * share / top:.1f}">'
            f"<title>{escape(labels[i])} · {escape(reference_name)}: {format_share(share)} "
            f"({format_count(reference[i])})</title></rect>"
        )
    _legend(svg, [recent_name, reference_name], ["series-0", "reference"])
    svg.add("</svg>")

    def cell(share: float | None, count: int) -> str:
        return NOTHING if share is None else f"{format_share(share)} ({format_count(count)})"

    headers = ("score", recent_name, reference_name)
    rows = tuple(
        (labels[i], cell(recent_share[i], recent[i]), cell(reference_share[i], reference[i]))
        for i in range(bins)
    )
    return Chart(chart_id, title, mark_safe("".join(svg.parts)), headers, rows, description)
