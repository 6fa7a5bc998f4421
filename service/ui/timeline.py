"""The layout of a video's timeline, computed on the server: where each mark goes on one time
axis, in how many rows overlapping marks stack, the axis ticks, the selected range of the
``?t=`` parameter, and the frame-activity curve, downsampled to a fixed number of points
whatever the video's length.

Positions are percentages of the axis width: the template draws them as SVG attributes
(``x="12.5%"``), which scale with the page and need no inline style (the explorer's
Content-Security-Policy forbids those). The curve is an SVG path in a 1000 x 100 box.
Pure functions: no database, no request.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

MIN_WIDTH = 0.4
"""Percent of the axis: the narrowest mark (a zero-length OCR mark stays visible and clickable)."""
CURVE_BUCKETS = 500
"""The most points per side of the activity curve: a longer series is downsampled to this."""
CURVE_WIDTH, CURVE_HEIGHT = 1000, 100
_TOUCHING = 0.01
"""Percent: marks that meet (one ends where the next starts) share a row despite rounding."""
MAX_SECONDS = 1e7
"""A time beyond this (about 116 days) is not a video time."""


class InvalidRange(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class TimeRange:
    """A selected stretch of the video, in seconds (``?t=3.0-5.2``)."""

    start: float
    end: float

    def overlaps(self, start: float | None, end: float | None) -> bool:
        """Whether ``[start, end]`` (either may be unknown) touches this range."""
        bounds = _bounds(start, end)
        return bounds is not None and bounds[0] <= self.end and bounds[1] >= self.start

    @property
    def param(self) -> str:
        return f"{_number(self.start)}-{_number(self.end)}"


def _bounds(start: float | None, end: float | None) -> tuple[float, float] | None:
    """``(start, end)`` with a missing one taken as the other; None when both are."""
    if start is None:
        return None if end is None else (end, end)
    return (start, start) if end is None else (start, end)


def _number(value: float) -> str:
    """Seconds as short as they stay exact to the millisecond: 3, 5.2, 10.125."""
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return text or "0"


def range_param(start: float | None, end: float | None) -> str | None:
    """The ``t`` value selecting ``[start, end]``; None when neither is known."""
    bounds = _bounds(start, end)
    return None if bounds is None else f"{_number(bounds[0])}-{_number(bounds[1])}"


def parse_range(raw: str | None) -> TimeRange | None:
    """``"3.0-5.2"`` (or one time, ``"4"``) as a range; None when absent or empty. Anything
    else raises :class:`InvalidRange`."""
    if raw is None or not raw.strip():
        return None
    text = raw.strip()
    if len(text) > 64:
        raise InvalidRange("a time range is START-END in seconds, e.g. 3.0-5.2")
    first, dash, second = text.partition("-")
    try:
        start = float(first)
        end = float(second) if dash else start
    except ValueError:
        raise InvalidRange("a time range is START-END in seconds, e.g. 3.0-5.2") from None
    if not (math.isfinite(start) and math.isfinite(end)) or not (
            0 <= start <= end <= MAX_SECONDS):
        raise InvalidRange("a time range needs 0 <= START <= END, in seconds")
    return TimeRange(start, end)


@dataclass(frozen=True, slots=True)
class Place:
    """Where a mark goes: left edge and width in percent of the axis, and its row."""

    x: float
    width: float
    row: int = 0


class Scale:
    """Seconds to percent of an axis of ``duration`` seconds."""

    def __init__(self, duration: float) -> None:
        self.duration = duration if math.isfinite(duration) and duration > 0 else 1.0

    def x(self, seconds: float) -> float:
        return min(100.0, max(0.0, seconds / self.duration * 100.0))

    def place(self, start: float | None, end: float | None) -> Place:
        low = start if start is not None else end if end is not None else 0.0
        high = end if end is not None else low
        x = self.x(low)
        width = max(self.x(max(low, high)) - x, MIN_WIDTH)
        x = min(x, 100.0 - width)
        return Place(round(x, 3), round(width, 3))


def stack(places: Sequence[Place]) -> tuple[list[Place], int]:
    """The places, each given the lowest row where it overlaps no earlier mark (marks taken
    left to right: the fewest rows an interval graph needs); and the number of rows."""
    order = sorted(range(len(places)), key=lambda i: (places[i].x, places[i].width))
    row_ends: list[float] = []
    rows = [0] * len(places)
    for i in order:
        place = places[i]
        row = next((r for r, end in enumerate(row_ends) if end <= place.x + _TOUCHING),
                   len(row_ends))
        if row == len(row_ends):
            row_ends.append(0.0)
        row_ends[row] = place.x + place.width
        rows[i] = row
    placed = [Place(p.x, p.width, row) for p, row in zip(places, rows, strict=True)]
    return placed, max(1, len(row_ends))


def ticks(duration: float, count: int = 8) -> list[float]:
    """Round times (steps of 1, 2 or 5 times a power of ten) from 0 to ``duration``, about
    ``count`` of them."""
    if not math.isfinite(duration) or duration <= 0:
        return [0.0]
    raw = duration / max(1, count)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    return [round(i * step, 6) for i in range(int(duration / step + 1e-9) + 1)]


@dataclass(frozen=True, slots=True)
class Curve:
    """The activity curve: an SVG path (the band between each bucket's lowest and highest
    value; a line when no downsampling was needed) in a ``CURVE_WIDTH`` x ``CURVE_HEIGHT``
    box, the frames it summarizes and how many points per side it has."""

    path: str
    frames: int
    points: int
    peak: float

    @property
    def band(self) -> bool:
        """Whether the path is a band of ranges (downsampled) rather than a line."""
        return self.points < self.frames


def activity_curve(values: npt.NDArray[np.float64],
                   buckets: int = CURVE_BUCKETS) -> Curve | None:
    """The curve of a frame-activity series spread over the whole axis; None when empty.

    A series longer than ``buckets`` is cut into ``buckets`` equal runs of frames, each drawn
    by its minimum and maximum, so a one-frame spike in a long video still shows."""
    frames = len(values)
    if frames == 0:
        return None
    import numpy as np  # on the first page that draws a curve, not in every worker at start

    series = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0, posinf=0.0,
                           neginf=0.0)
    if frames > buckets:
        edges = np.linspace(0, frames, buckets + 1).astype(np.int64)[:-1]
        high = np.maximum.reduceat(series, edges)
        low = np.minimum.reduceat(series, edges)
    else:
        high = low = series
    count = len(high)
    floor = min(0.0, float(low.min()))
    peak = float(high.max())
    span = peak - floor if peak > floor else 1.0
    xs = (np.arange(count) + 0.5) / count * CURVE_WIDTH

    def ys(row: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return CURVE_HEIGHT - (row - floor) / span * (CURVE_HEIGHT - 4) - 2

    # Python floats (tolist) format several times faster than numpy scalars.
    top = [f"{x:.1f},{y:.1f}" for x, y in zip(xs.tolist(), ys(high).tolist(), strict=True)]
    if high is low:
        path = "M" + " L".join(top)
    else:
        bottom = [f"{x:.1f},{y:.1f}"
                  for x, y in zip(xs[::-1].tolist(), ys(low)[::-1].tolist(), strict=True)]
        path = "M" + " L".join(top + bottom) + " Z"
    return Curve(path, frames, count, peak)
