"""Server-rendered SVG charts: geometry computed and formatted here, drawn by templates. No chart library,
no JS.

Coordinates leave this module as strings with one decimal (`_c`): the template only places them. Django's
`floatformat` filter costs about 0.1 ms per number, several hundred times per overview, and would follow
the locale's decimal separator, which SVG does not read.
"""

import math
from dataclasses import dataclass, field

from writeback.services.metrics import Dashboard

SERIES = (
    ("committed", "Committed", "ok"),
    ("retried", "Retried", "warn"),
    ("conflicts", "Conflict", "conflict"),
    ("failed", "Failed", "bad"),
)


def nice_max(value: float) -> float:
    """A round axis maximum at or above `value` (1, 2, 2.5, 5 x 10^n)."""
    if value <= 0:
        return 1
    exp = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * exp:
            return step * exp
    return 10 * exp


def _c(v: float) -> str:
    """An SVG coordinate."""
    return f"{v:.1f}"


def _fmt(v: float) -> str:
    return f"{v:g}" if v < 10_000 else f"{v / 1000:g}k"


@dataclass
class Rect:
    x: float
    y: float
    w: float
    h: float
    tone: str
    title: str

    @property
    def box(self) -> tuple[str, str, str, str]:
        return _c(self.x), _c(self.y), _c(self.w), _c(self.h)


@dataclass
class Chart:
    width: int
    height: int
    left: int
    top: int
    plot_w: float
    plot_h: float
    rects: list[Rect] = field(default_factory=list)
    y_ticks: list[tuple[str, str]] = field(default_factory=list)
    x_labels: list[tuple[str, str]] = field(default_factory=list)
    points: str = ""
    dots: list[tuple[str, str, str]] = field(default_factory=list)
    legend: list[tuple[str, str]] = field(default_factory=list)
    empty: bool = False

    @property
    def mid_x(self) -> str:
        return _c(self.left + self.plot_w / 2)

    @property
    def mid_y(self) -> str:
        return _c(self.top + self.plot_h / 2)

    @property
    def right_edge(self) -> str:
        return _c(self.left + self.plot_w)


def _frame(
    width: int, height: int, left: int = 44, top: int = 12, right: int = 12, bottom: int = 28
) -> Chart:
    return Chart(width, height, left, top, width - left - right, height - top - bottom)


def _y_axis(chart: Chart, top_value: float) -> None:
    for frac in (0, 0.25, 0.5, 0.75, 1):
        chart.y_ticks.append((_c(chart.top + chart.plot_h * (1 - frac)), _fmt(top_value * frac)))


def hourly_outcomes(board: Dashboard) -> Chart:
    chart = _frame(760, 262)
    series = board.series
    n = max(len(series), 1)
    band = chart.plot_w / n
    top_value = nice_max(max((p.sends for p in series), default=0))
    _y_axis(chart, top_value)
    chart.empty = all(p.sends == 0 for p in series)
    for i, p in enumerate(series):
        x = chart.left + i * band + band * 0.15
        y = chart.top + chart.plot_h
        for key, label, tone in SERIES:
            value = getattr(p, key)
            if not value:
                continue
            h = chart.plot_h * value / top_value
            y -= h
            chart.rects.append(Rect(x, y, band * 0.7, h, tone, f"{p.hour:%H:%M}: {value} {label.lower()}"))
        if i % 3 == 0 or i == n - 1:
            chart.x_labels.append((_c(chart.left + i * band + band / 2), f"{p.hour:%H:%M}"))
    chart.legend = [(label, tone) for _, label, tone in SERIES]
    return chart


def hourly_events(board: Dashboard) -> Chart:
    chart = _frame(560, 200)
    series = board.series
    n = max(len(series), 1)
    band = chart.plot_w / n
    top_value = nice_max(max((p.events for p in series), default=0))
    _y_axis(chart, top_value)
    chart.empty = all(p.events == 0 for p in series)
    coords = []
    for i, p in enumerate(series):
        x = chart.left + i * band + band / 2
        y = chart.top + chart.plot_h * (1 - p.events / top_value)
        coords.append(f"{_c(x)},{_c(y)}")
        chart.dots.append((_c(x), _c(y), f"{p.hour:%H:%M}: {p.events} events"))
        if i % 4 == 0 or i == n - 1:
            chart.x_labels.append((_c(x), f"{p.hour:%H:%M}"))
    chart.points = " ".join(coords)
    return chart


def latency_bars(board: Dashboard) -> Chart:
    rows = [r for r in board.latency if r["p95"] is not None]
    chart = _frame(380, 40 + 40 * max(len(rows), 1), left=76, right=34, bottom=24)
    top_value = nice_max(max((r["p95"] for r in rows), default=0))
    chart.empty = not rows
    for i, r in enumerate(rows):
        y = chart.top + i * 40
        for j, (key, tone) in enumerate((("p50", "p50"), ("p95", "p95"))):
            value = r[key] or 0
            chart.rects.append(
                Rect(
                    chart.left,
                    y + j * 18,
                    chart.plot_w * value / top_value,
                    14,
                    tone,
                    f"{r['vendor']} {key}: {value:.0f} ms",
                )
            )
        chart.y_ticks.append((_c(y + 16), r["vendor"]))
    for frac in (0, 0.5, 1):
        chart.x_labels.append((_c(chart.left + chart.plot_w * frac), f"{_fmt(top_value * frac)} ms"))
    chart.legend = [("p50", "p50"), ("p95", "p95")]
    return chart
