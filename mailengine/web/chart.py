"""The dashboard's traffic chart: received, sent, deferred, failed per minute, last hour (SVG).

Rendered on the server: no script library, nothing fetched from the internet.
Stats intervals, summed into bins of about a sixtieth of the span (a minute for
the hour), are steps at their rate per minute, so intervals of different lengths
compare.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import attrs

from mailengine.observe.counters import Interval
from mailengine.web.render import Html, count, el, local_time

WIDTH, HEIGHT = 960, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 14, 30
# Received counts messages; the others recipients (as the stats lines do).
SERIES: tuple[tuple[str, str, Callable[[Interval], int]], ...] = (
    ("received", "#2563eb", lambda iv: iv.recv_inbound + iv.recv_relay),
    ("sent", "#16a34a", lambda iv: iv.sent),
    ("deferred", "#d97706", lambda iv: iv.deferred),
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


BIN_SECONDS = (1, 2, 5, 10, 15, 30, 60)


def bin_seconds(window: float) -> int:
    """Bins of about a sixtieth of the window (a minute for the hour): a line one can read."""
    return next((b for b in BIN_SECONDS if window / b <= 60), BIN_SECONDS[-1])


def binned(intervals: Sequence[Interval], seconds: int) -> list[Interval]:
    """Intervals shorter than ``seconds`` summed into one per clock bin; longer ones as
    they are. (An interval ending exactly on a bin boundary closes the bin before.)"""

    def bin_of(end: float) -> int:
        return int((end - 1e-6) // seconds)

    out: list[Interval] = []
    for iv in intervals:
        last = out[-1] if out else None
        if (
            last is not None
            and last.elapsed + iv.elapsed <= seconds
            and bin_of(last.end) == bin_of(iv.end)
        ):
            out[-1] = Interval(
                end=iv.end,
                elapsed=last.elapsed + iv.elapsed,
                recv_inbound=last.recv_inbound + iv.recv_inbound,
                recv_relay=last.recv_relay + iv.recv_relay,
                sent=last.sent + iv.sent,
                failed_hard=last.failed_hard + iv.failed_hard,
                failed_soft=last.failed_soft + iv.failed_soft,
                deferred=last.deferred + iv.deferred,
            )
        else:
            out.append(iv)
    return out


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


MIN_WINDOW = 30.0
LABEL_STEPS = (5, 10, 15, 30, 60, 120, 300, 600)  # seconds between time labels


def chart_window(intervals: Sequence[Interval], now: float, window: float) -> float:
    """Seconds the x axis spans: the last hour, or less while the engine is young
    (half a minute at least), so the first minutes are not a sliver at the right edge."""
    if not intervals:
        return window
    first = intervals[0].end - intervals[0].elapsed
    return max(MIN_WINDOW, min(window, now - first))


@attrs.frozen
class Frame:
    """Where time and rate land on the drawing."""

    now: float
    window: float
    top: float

    def x(self, t: float) -> float:
        plot_w = WIDTH - LEFT - RIGHT
        return (
            LEFT
            + plot_w * (max(t, self.now - self.window) - (self.now - self.window)) / self.window
        )

    def y(self, v: float) -> float:
        return TOP + (HEIGHT - TOP - BOTTOM) * (1 - v / self.top)


def axes(f: Frame) -> list[Html]:
    plot_h = HEIGHT - TOP - BOTTOM
    parts = []
    for i in range(5):  # horizontal grid lines and the y axis labels
        value = f.top * i / 4
        y = f"{f.y(value):.1f}"
        parts.append(el("line", x1=LEFT, x2=WIDTH - RIGHT, y1=y, y2=y, class_="grid"))
        label = count(value) if value >= 10 or value == 0 else f"{value:g}"
        parts.append(el("text", label, x=LEFT - 8, y=f"{f.y(value) + 4:.1f}", class_="ylabel"))
    step = next((s for s in LABEL_STEPS if f.window / s <= 7), LABEL_STEPS[-1])
    for t in range(math.ceil((f.now - f.window) / step) * step, int(f.now) + 1, step):
        x = f"{f.x(t):.1f}"
        parts.append(el("line", x1=x, x2=x, y1=TOP, y2=HEIGHT - BOTTOM, class_="grid"))
        label = local_time(t, "%H:%M" if step >= 60 else "%H:%M:%S")
        near_edge = f.x(t) > WIDTH - RIGHT - 30  # anchored at its end: not cut off
        parts.append(
            el("text", label, x=x, y=HEIGHT - 10, class_="xlabel last" if near_edge else "xlabel")
        )
    middle = TOP + plot_h / 2
    parts.append(
        el(
            "text",
            "per minute",
            x=12,
            y=middle,
            class_="axis",
            transform=f"rotate(-90 12 {middle:.0f})",
        )
    )
    return parts


def series(f: Frame, shown: Sequence[Interval]) -> list[Html]:
    """Steps: each interval's rate held from its start to its end; received also filled."""
    parts = []
    for name, colour, pick in SERIES:
        for run in _segments(shown):
            points = " ".join(
                f"{f.x(iv.end - iv.elapsed):.1f},{f.y(rate_per_minute(pick(iv), iv)):.1f} "
                f"{f.x(iv.end):.1f},{f.y(rate_per_minute(pick(iv), iv)):.1f}"
                for iv in run
            )
            if name == "received":
                left, right = f.x(run[0].end - run[0].elapsed), f.x(run[-1].end)
                area = f"{left:.1f},{f.y(0):.1f} {points} {right:.1f},{f.y(0):.1f}"
                parts.append(el("polygon", points=area, fill=colour, fill_opacity="0.12"))
            width = "2.5" if name in ("received", "sent") else "1.8"
            parts.append(
                el(
                    "polyline",
                    points=points,
                    fill="none",
                    stroke=colour,
                    stroke_width=width,
                    stroke_dasharray="5 3" if name == "deferred" else None,
                    stroke_linejoin="round",
                    class_=f"series {name}",
                )
            )
    return parts


def traffic_chart(intervals: Sequence[Interval], now: float, window: float = 3600.0) -> Html:
    """An SVG chart of the intervals ending within ``window`` seconds before ``now``."""
    recent = [iv for iv in intervals if iv.end > now - window and iv.elapsed > 0]
    window = chart_window(recent, now, window)
    shown = binned(recent, bin_seconds(window))
    peak = max(
        (rate_per_minute(pick(iv), iv) for iv in shown for _, _, pick in SERIES), default=0.0
    )
    f = Frame(now, window, nice_ceiling(peak))
    parts = axes(f) + series(f, shown)
    if not shown:
        parts.append(
            el(
                "text",
                "no stats intervals in the last hour yet",
                x=LEFT + (WIDTH - LEFT - RIGHT) / 2,
                y=TOP + (HEIGHT - TOP - BOTTOM) / 2,
                class_="empty",
            )
        )
    return el(
        "svg",
        el("title", "Messages received; recipients sent, deferred and failed; per minute"),
        parts,
        xmlns="http://www.w3.org/2000/svg",
        viewBox=f"0 0 {WIDTH} {HEIGHT}",
        class_="chart",
        role="img",
    )
