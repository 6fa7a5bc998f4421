"""A video job's timeline page: its rows read with the query API's functions, laid out on one
time axis (:mod:`service.ui.timeline`).

Lanes: scenes as blocks, sections as bars (one per time segment; critical ones marked, the
confidence in the bar's opacity and its label), OCR texts at their times, person appearances
(linking to each face's page), and the frame-activity curve. Each lane stacks overlapping
marks in rows. A selected range (``?t=``) is drawn across the lanes, and the marks and rows
it touches are flagged. At most :data:`LIMIT` rows of each entity are drawn.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from service import queries
from service.privacy.keys import Keyring
from service.ui import text, thumbnails
from service.ui.timeline import (
    Curve,
    Place,
    Scale,
    TimeRange,
    activity_curve,
    range_param,
    stack,
    ticks,
)

if TYPE_CHECKING:
    import numpy as np

Json = dict[str, Any]

LIMIT = 500
"""Rows of each entity drawn on a timeline (a note says when there are more)."""
ROW_HEIGHT = 22
LABEL_MIN_WIDTH = 7.0
"""Percent: a mark at least this wide carries its label inside."""


@dataclass(frozen=True, slots=True)
class Mark:
    kind: str
    place: Place
    label: str
    detail: str
    t: str | None  # the ``t`` that selects this mark's time
    selected: bool
    critical: bool = False
    opacity: float = 1.0
    face: tuple[int, int] | None = None  # (item_index, person_index) of a person mark
    shade: int = 0

    def drawn(self, place: Place) -> DrawnMark:
        """This mark at ``place`` (its stacked row), with every attribute the template
        writes computed once: a timeline draws hundreds of marks, and each lookup in a
        template costs more than here."""
        if self.face is not None:
            link = f"/persons/{self.face[0]}/{self.face[1]}"
        elif self.t:
            link = f"?t={self.t}#timeline"
        else:
            link = "#timeline"
        css = " ".join(["mark", self.kind, *(["critical"] if self.critical else []),
                        *(["selected"] if self.selected else []),
                        *(["shade"] if self.shade else [])])
        short = _short_label(self.label, place.width)
        y = place.row * ROW_HEIGHT + 2
        return DrawnMark(self.kind, place, link, css, self.detail,
                         self.detail if short is None else f"{short}. {self.detail}",
                         short, y, round(place.x + 0.5, 3), self.opacity, self.selected)


@dataclass(frozen=True, slots=True)
class DrawnMark:
    """A mark as the template writes it."""

    kind: str
    place: Place
    link: str  # appended to the job's page path: its face page, or its time selected
    css: str
    detail: str
    name: str  # the accessible name: the visible label first, then the details
    short_label: str | None  # the label drawn inside the mark, when it is wide enough
    y: int
    text_x: float
    opacity: float
    selected: bool


def _short_label(label: str, width: float) -> str | None:
    """The label as drawn inside a mark ``width`` percent wide; None when too narrow."""
    if width < LABEL_MIN_WIDTH:
        return None
    room = max(3, int(width * 1.1))
    return label if len(label) <= room else label[:room - 1] + "…"


@dataclass(slots=True)
class Lane:
    key: str
    title: str
    marks: list[DrawnMark]
    rows: int = 1

    @property
    def height(self) -> int:
        return self.rows * ROW_HEIGHT + 4


@dataclass(slots=True)
class VideoView:
    duration: float
    lanes: list[Lane]
    ticks: list[tuple[float, float, str]]  # (seconds, percent, label)
    curve: Curve | None
    selection: Place | None
    scenes: list[Json]
    sections: list[Json]
    ocr: list[Json]
    persons: list[Json]
    truncated: list[str] = field(default_factory=list)
    thumbnails: thumbnails.Readability = field(default_factory=thumbnails.Readability)

    def count(self, kind: str) -> int:
        return sum(len(lane.marks) for lane in self.lanes if lane.key == kind)

    def selected(self, kind: str) -> int:
        return sum(mark.selected for lane in self.lanes if lane.key == kind
                   for mark in lane.marks)


def _ends(rows: Iterable[Json]) -> Iterable[float]:
    for row in rows:
        for key in ("start_seconds", "end_seconds"):
            value = row.get(key)
            if isinstance(value, int | float) and math.isfinite(value):
                yield float(value)


def _segments(sections: list[Json]) -> list[Json]:
    return [segment for section in sections for segment in section["time_segments"] or ()]


def read(conn: sa.Connection, pk: int, keyring: Keyring | None,
         selected: TimeRange | None) -> VideoView:
    """The timeline of job ``pk`` (a video), in the caller's read."""
    scenes = queries.job_scenes(conn, pk, None, LIMIT)
    sections = queries.job_sections(conn, pk, None, LIMIT)
    ocr = queries.job_ocr(conn, pk, None, LIMIT)
    persons = queries.job_person_appearances(conn, pk, None, LIMIT)
    series = queries.activity_series(conn, pk)
    readability = thumbnails.readability(conn, pk, keyring, persons.rows)
    truncated = [name for name, page in (("scenes", scenes), ("sections", sections),
                                         ("OCR texts", ocr), ("persons", persons))
                 if page.next_position is not None]
    import numpy as np  # on the first timeline drawn, not in every worker at start

    values = np.frombuffer(next(iter(series.values())), dtype="<f8") if series else \
        np.zeros(0)
    return build(scenes.rows, sections.rows, ocr.rows, persons.rows, values, selected,
                 truncated, readability)


def build(scenes: list[Json], sections: list[Json], ocr: list[Json], persons: list[Json],
          activity: np.ndarray[Any, Any], selected: TimeRange | None,
          truncated: list[str] | None = None,
          readability: thumbnails.Readability | None = None) -> VideoView:
    """The layout from the rows as the query API returns them."""
    times = [*_ends(scenes), *_ends(_segments(sections)), *_ends(ocr), *_ends(persons)]
    if selected is not None:
        times.append(selected.end)
    duration = max(times, default=0.0)
    scale = Scale(duration)

    def hit(start: float | None, end: float | None) -> bool:
        return selected is not None and selected.overlaps(start, end)

    for rows in (scenes, ocr, persons):
        for row in rows:
            row["selected"] = hit(row["start_seconds"], row["end_seconds"])
            row["t"] = range_param(row["start_seconds"], row["end_seconds"])
    scene_marks = [Mark(
        "scene", scale.place(s["start_seconds"], s["end_seconds"]), f"Scene {s['index'] + 1}",
        f"Scene {s['index'] + 1}: {text.span(s['start_seconds'], s['end_seconds'])}",
        s["t"], s["selected"], shade=s["index"] % 2) for s in scenes]
    section_marks = []
    for section in sections:
        tag = section["section_tag"] or "(untagged)"
        confidence = section["confidence"]
        critical = bool(section["is_critical"])
        for segment in section["time_segments"] or ():
            start, end = segment["start_seconds"], segment["end_seconds"]
            facts = [f"confidence {text.percent(confidence)}"]
            if critical:
                facts.insert(0, "critical")
            section_marks.append(Mark(
                "section", scale.place(start, end),
                f"{'⚠ ' if critical else ''}{tag} {text.percent(confidence)}",
                f"Section {tag}: {', '.join(facts)}; {text.span(start, end)}",
                range_param(start, end), hit(start, end), critical=critical,
                opacity=_opacity(confidence)))
    ocr_marks = [Mark(
        "ocr", scale.place(o["start_seconds"], o["end_seconds"]),
        o["full_text"] or "(no text)",
        f"Text ({o['language_code'] or 'language unknown'}): {o['full_text'] or ''}; "
        f"{text.span(o['start_seconds'], o['end_seconds'])}",
        o["t"], o["selected"]) for o in ocr
        if o["start_seconds"] is not None or o["end_seconds"] is not None]
    person_marks = [Mark(
        "person", scale.place(p["start_seconds"], p["end_seconds"]),
        f"Person {p['index'] + 1}",
        f"Person {p['index'] + 1} (scene {(p['scene_index'] or 0) + 1}): "
        f"{text.span(p['start_seconds'], p['end_seconds'])}; opens the face page",
        p["t"], p["selected"], face=(p["item_index"], p["index"]))
        for p in persons]
    lanes = [_lane("scene", "Scenes", scene_marks), _lane("section", "Sections", section_marks),
             _lane("ocr", "Text (OCR)", ocr_marks), _lane("person", "Persons", person_marks)]
    for section in sections:
        segments = section["time_segments"] or ()
        section["selected"] = any(hit(s["start_seconds"], s["end_seconds"]) for s in segments)
        section["t"] = range_param(min((s["start_seconds"] for s in segments
                                        if s["start_seconds"] is not None), default=None),
                                   max((s["end_seconds"] for s in segments
                                        if s["end_seconds"] is not None), default=None))
    axis = [(t, scale.x(t), text.seconds(t)) for t in ticks(scale.duration)]
    selection = None if selected is None else scale.place(selected.start, selected.end)
    return VideoView(scale.duration, lanes, axis, activity_curve(activity), selection, scenes,
                     sections, ocr, persons, truncated or [],
                     readability or thumbnails.Readability())


def _opacity(confidence: float | None) -> float:
    if confidence is None or not math.isfinite(confidence):
        return 0.6
    return round(0.35 + 0.65 * min(1.0, max(0.0, confidence)), 2)


def _lane(key: str, title: str, marks: list[Mark]) -> Lane:
    placed, rows = stack([mark.place for mark in marks])
    return Lane(key, title, [m.drawn(p) for m, p in zip(marks, placed, strict=True)], rows)
