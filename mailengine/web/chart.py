"""The dashboard's traffic chart: received, sent, failed per minute over the last hour (pure SVG).

Rendered on the server: no script library, nothing fetched from the internet.
Each stats interval is one point at its end time, as a rate per minute so
intervals of different lengths compare.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from mailengine.observe.counters import Interval
from mailengine.web.render import Html, count, el, local_time

WIDTH, HEIGHT = 960, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 14, 30
SERIES: tuple[tuple[str, str, Callable[[Interval], int]], ...] = (
    ("received", "#2563eb", lambda iv: iv.recv_inbound + iv.recv_relay),
    ("sent", "#16a34a", lambda iv: iv.sent),
    ("failed", "#dc2626", lambda iv: iv.failed_hard + iv.failed_soft),
)


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 x 10^k that is >= ``value`` (axis top)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power


def rate_per_minute(n: int, iv: Interval) -> float:
    return n * 60.0 / iv.elapsed if iv.elapsed > 0 else 0.0


def _segments(intervals: Sequence[Interval]) -> list[list[Interval]]:
    """Runs of back-to-back intervals; a gap (engine stopped, stats off) breaks the line."""
    runs: list[list[Interval]] = []
    previous: Interval | None = None
    for iv in intervals:
        start = iv.end - iv.elapsed
        if previous is None or start - previous.end > max(2.0, previous.elapsed):
            runs.append([])
        runs[-1].append(iv)
        previous = iv
    return runs


def traffic_chart(intervals: Sequence[Interval], now: float, window: float = 3600.0) -> Html:
    """An SVG line chart of the intervals ending within ``window`` seconds before ``now``."""
    shown = [iv for iv in intervals if iv.end > now - window and iv.elapsed > 0]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    peak = max(
        (rate_per_minute(pick(iv), iv) for iv in shown for _, _, pick in SERIES), default=0.0
    )
    top = nice_ceiling(peak)

    def x(t: float) -> float:
        return LEFT + plot_w * (t - (now - window)) / window

    def y(v: float) -> float:
        return TOP + plot_h * (1 - v / top)

    parts: list[Html] = []
    for i in range(5):  # horizontal grid lines and the y axis labels
        value = top * i / 4
        parts.append(
            el(
                "line",
                x1=LEFT,
                x2=WIDTH - RIGHT,
                y1=f"{y(value):.1f}",
                y2=f"{y(value):.1f}",
                class_="grid",
            )
        )
        label = count(value) if value >= 10 or value == 0 else f"{value:g}"
        parts.append(el("text", label, x=LEFT - 8, y=f"{y(value) + 4:.1f}", class_="ylabel"))
    first_tick = math.ceil((now - window) / 600) * 600
    for t in range(int(first_tick), int(now) + 1, 600):  # every 10 minutes
        parts.append(
            el(
                "line",
                x1=f"{x(t):.1f}",
                x2=f"{x(t):.1f}",
                y1=TOP,
                y2=HEIGHT - BOTTOM,
                class_="grid",
            )
        )
        parts.append(
            el("text", local_time(t, "%H:%M"), x=f"{x(t):.1f}", y=HEIGHT - 10, class_="xlabel")
        )
    parts.append(
        el(
            "text",
            "messages / minute",
            x=12,
            y=TOP + plot_h / 2,
            class_="axis",
            transform=f"rotate(-90 12 {TOP + plot_h / 2:.0f})",
        )
    )
    for name, colour, pick in SERIES:
        for run in _segments(shown):
            points = " ".join(
                f"{x(iv.end):.1f},{y(rate_per_minute(pick(iv), iv)):.1f}" for iv in run
            )
            if name == "received" and len(run) > 1:
                area = f"{x(run[0].end):.1f},{y(0):.1f} {points} {x(run[-1].end):.1f},{y(0):.1f}"
                parts.append(el("polygon", points=area, fill=colour, fill_opacity="0.12"))
            parts.append(
                el(
                    "polyline",
                    points=points,
                    fill="none",
                    stroke=colour,
                    stroke_width="2.5" if name != "failed" else "1.5",
                    stroke_linejoin="round",
                    class_=f"series {name}",
                )
            )
    if not shown:
        parts.append(
            el(
                "text",
                "no stats intervals in the last hour yet",
                x=LEFT + plot_w / 2,
                y=TOP + plot_h / 2,
                class_="empty",
            )
        )
    return el(
        "svg",
        el("title", "Received, sent and failed messages per minute, last hour"),
        parts,
        xmlns="http://www.w3.org/2000/svg",
        viewBox=f"0 0 {WIDTH} {HEIGHT}",
        class_="chart",
        role="img",
    )
