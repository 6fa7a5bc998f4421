"""The explorer's pure parts: the timeline's layout math (time ranges, placing and stacking
marks, ticks, the downsampled activity curve), search matches picked out of a text, stored
errors shown as code and message, and where a sign-in may lead."""

from __future__ import annotations

import numpy as np
import pytest

from service.ui import text
from service.ui.security import safe_next
from service.ui.timeline import (
    CURVE_HEIGHT,
    InvalidRange,
    Place,
    Scale,
    TimeRange,
    activity_curve,
    parse_range,
    range_param,
    stack,
    ticks,
)


@pytest.mark.parametrize(("raw", "expected"), [
    ("3.0-5.2", TimeRange(3.0, 5.2)), ("4", TimeRange(4.0, 4.0)), (" 0-10 ", TimeRange(0, 10)),
    (None, None), ("", None),
])
def test_a_time_range_parses_from_start_dash_end(raw, expected):
    assert parse_range(raw) == expected


@pytest.mark.parametrize("raw", ["5-3", "-1-2", "a-b", "nan-1", "1-inf", "1e9-2e9", "1-2-3",
                                 "9" * 70])
def test_a_malformed_or_backwards_time_range_is_refused(raw):
    with pytest.raises(InvalidRange):
        parse_range(raw)


def test_range_param_is_short_and_round_trips():
    assert range_param(3.0, 5.2) == "3-5.2"
    assert range_param(None, 4.25) == "4.25-4.25"
    assert range_param(None, None) is None
    assert parse_range(range_param(0.1, 10.125)) == TimeRange(0.1, 10.125)


def test_overlap_counts_touching_ends_and_takes_a_missing_end_as_the_other():
    selected = TimeRange(3.0, 5.0)
    assert selected.overlaps(5.0, 8.0)
    assert selected.overlaps(None, 4.0)
    assert not selected.overlaps(5.01, 6.0)
    assert not selected.overlaps(None, None)


def test_marks_are_placed_in_percent_with_a_minimum_width_inside_the_axis():
    scale = Scale(40.0)
    assert scale.place(10.0, 20.0) == Place(25.0, 25.0)
    point = scale.place(40.0, 40.0)
    assert point.width >= 0.4
    assert point.x + point.width <= 100.0
    assert Scale(0).duration == 1.0  # nothing timed: a unit axis, never a division by zero


def test_overlapping_marks_stack_in_the_fewest_rows_and_touching_ones_share_a_row():
    places = [Place(0, 50), Place(50, 50), Place(10, 20), Place(20, 20), Place(35, 10)]
    placed, rows = stack(places)
    assert [p.row for p in placed] == [0, 0, 1, 2, 1]
    assert rows == 3
    assert stack([])[1] == 1


@pytest.mark.parametrize(("duration", "step"), [(10.7, 2.0), (40, 5.0), (3600, 500.0),
                                                (0.3, 0.05)])
def test_ticks_are_round_steps_from_zero(duration, step):
    found = ticks(duration)
    assert found[0] == 0
    assert found[1] == pytest.approx(step)
    assert found[-1] <= duration
    assert 4 <= len(found) <= 12


def test_a_long_activity_series_is_downsampled_to_a_fixed_size_and_keeps_its_spike():
    values = np.full(108_000, 0.02)
    values[54_321] = 1.0
    curve = activity_curve(values)
    assert curve is not None
    assert curve.frames == 108_000
    assert curve.points == 500
    assert curve.band
    coordinates = curve.path.replace("M", "").replace(" Z", "").split(" L")
    assert len(coordinates) == 1000  # each bucket's highest, then lowest
    tops = [float(c.split(",")[1]) for c in coordinates[:500]]
    assert min(tops) == pytest.approx(2.0)  # the spike reaches the top
    assert tops.index(min(tops)) == int(54_321 / 108_000 * 500)


def test_a_short_activity_series_is_drawn_point_by_point_as_a_line():
    curve = activity_curve(np.array([0.01, 0.15, 0.08]))
    assert curve is not None
    assert not curve.band
    assert curve.path.count(",") == 3
    assert "Z" not in curve.path
    assert activity_curve(np.zeros(0)) is None
    flat = activity_curve(np.array([float("nan"), 0.0]))
    assert flat is not None
    assert all(0 <= float(c.split(",")[1]) <= CURVE_HEIGHT
               for c in flat.path[1:].split(" L"))


def test_highlight_picks_out_the_query_and_its_words_case_insensitively():
    assert text.highlight("No dogs off leash", "DOGS") == [
        ("No ", False), ("dogs", True), (" off leash", False)]
    assert text.highlight("<b>dogs</b>", "dogs leash") == [
        ("<b>", False), ("dogs", True), ("</b>", False)]
    assert text.highlight("a.b*c", ".b*") == [("a", False), (".b*", True), ("c", False)]
    assert text.highlight(None, "x") == []


def test_a_stored_error_is_shown_as_its_code_and_message():
    assert text.error_parts({"code": "E1", "message": "boom"}) == ("E1", "boom")
    assert text.error_parts("plain words") == (None, "plain words")
    code, message = text.error_parts({"code": 7, "detail": {"x": 1}})
    assert code == "7"
    assert '"detail"' in message
    assert text.error_parts(None) == (None, "")
    assert text.error_parts([1, 2]) == (None, "[1,2]")


def test_times_and_sizes_read_naturally():
    assert text.seconds(5.23) == "5.2 s"
    assert text.seconds(65.2) == "1:05.2"
    assert text.seconds(3725) == "1:02:05"
    assert text.size(2048) == "2.0 KB"
    assert text.size(10) == "10 bytes"


@pytest.mark.parametrize(("raw", "root", "expected"), [
    ("/ui/jobs?status=failed", "", "/ui/jobs?status=failed"),
    ("/ui", "", "/ui"),
    ("/results/ui/search?q=a", "/results", "/results/ui/search?q=a"),
    ("/ui/jobs", "/results", None),
    ("/uinot", "", None),
    ("//evil.example/ui", "", None),
    ("https://evil.example/ui", "", None),
    ("/ui/%2e%2e/v1/jobs", "", None),
    ("/ui/\\evil", "", None),
    ("/ui/jobs\n", "", None),
    (None, "", None),
])
def test_only_paths_of_this_explorer_are_places_to_go_after_sign_in(raw, root, expected):
    assert safe_next(raw, root) == expected
