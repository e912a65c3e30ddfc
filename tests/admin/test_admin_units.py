"""The admin's pure parts, without an app or a database: chart geometry, form conversion, formatting."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from werkzeug.datastructures import MultiDict

from scheduler_service.admin import charts, formatting
from scheduler_service.admin.task_form import errors_from_messages, payload_from_form

UTC = timezone.utc
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


# --- charts ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "ceiling"), [(0, 1), (1, 1), (3, 5), (5, 5), (7, 10), (11, 20), (140, 200), (501, 1000)])
def test_nice_ceiling(value, ceiling):
    assert charts.nice_ceiling(value) == ceiling


def test_stacked_bars_stack_each_series_bottom_up_on_one_scale():
    chart = charts.stacked_bars(
        [("10:00", {"success": 3, "failed": 1}), ("11:00", {}), ("12:00", {"failed": 5})],
        ("success", "failed"), width=300, height=140,
    )
    assert chart.plot_bottom - chart.plot_top == 100  # 140 - 12 - 28
    first, empty, last = chart.bars
    assert [(s.series, s.count, s.height) for s in first.segments] == [("success", 3, 60.0), ("failed", 1, 20.0)]
    assert first.segments[0].y + first.segments[0].height == chart.plot_bottom  # success sits on the axis
    assert first.segments[1].y + first.segments[1].height == first.segments[0].y  # failed on top of it
    assert empty.total == 0 and empty.segments == ()
    assert last.segments[0].height == 100  # the tallest bar fills the plot (scale 5)
    assert [tick.label for tick in chart.y_ticks] == ["0", "1", "2", "3", "4", "5"]
    assert chart.totals == {"success": 3, "failed": 6}
    assert [bar.show_label for bar in chart.bars] == [True, False, False]
    assert not chart.empty


def test_y_ticks_are_whole_counts():
    for highest in (1, 2, 4, 9, 17, 60, 420):
        chart = charts.stacked_bars([("a", {"s": highest})], ("s",))
        values = [tick.value for tick in chart.y_ticks]
        assert values[0] == 0 and values[-1] >= highest
        assert all(value == int(value) for value in values), values


def test_timeline_picks_the_shortest_window_that_shows_every_lane():
    assert charts.timeline_window(NOW, [NOW + timedelta(minutes=50)]) == timedelta(hours=1)
    assert charts.timeline_window(NOW, [NOW + timedelta(minutes=5), NOW + timedelta(hours=5)]) == timedelta(hours=6)
    assert charts.timeline_window(NOW, [NOW + timedelta(days=40)]) == timedelta(days=7)
    assert charts.timeline_window(NOW, []) == timedelta(hours=1)


def test_timeline_places_runs_by_time_and_marks_a_lane_beyond_the_window():
    every_ten = [NOW + timedelta(minutes=10 * n) for n in range(1, 20)]
    line = charts.timeline(NOW, [(1, "often", every_ten), (2, "late", [NOW + timedelta(days=30)])],
                           width=700, label_width=100)
    often, late = line.lanes
    assert line.end == NOW + timedelta(days=7)
    assert often.marks[0].x > line.left and all(mark.x <= line.right for mark in often.marks)
    assert late.beyond and late.marks == ()
    assert [tick.label for tick in line.ticks][:2] == ["now", "+28h"]


def test_timeline_thins_marks_that_would_overlap():
    every_second = [NOW + timedelta(seconds=n) for n in range(1, 3600)]
    (lane,) = charts.timeline(NOW, [(1, "busy", every_second)], width=700, label_width=100).lanes
    gaps = [b.x - a.x for a, b in zip(lane.marks, lane.marks[1:])]
    assert min(gaps) >= charts.MIN_MARK_GAP and len(lane.marks) < 120


def test_an_overdue_run_is_drawn_at_now():
    (lane,) = charts.timeline(NOW, [(1, "late", [NOW - timedelta(minutes=3)])], label_width=100).lanes
    assert lane.marks[0].x == 100


def test_layers_put_each_task_one_column_right_of_its_deepest_parent():
    #  1 -> 2 -> 3, 1 -> 3, 4 alone
    assert charts.layer_of([1, 2, 3, 4], [(1, 2), (2, 3), (1, 3)]) == {1: 0, 2: 1, 3: 2, 4: 0}


def test_layered_graph_draws_parents_left_of_children_with_an_edge_each():
    tasks = [charts.GraphTask(n, name, "success", True) for n, name in [(1, "extract"), (2, "clean"), (3, "load"),
                                                                         (4, "report")]]
    graph = charts.layered_graph(tasks, [(1, 2), (2, 3), (2, 4), (9, 1)], node_width=100, gap_x=40)
    x = {node.id: node.x for node in graph.nodes}
    assert x[1] < x[2] < x[3] == x[4]
    assert len(graph.edges) == 3  # the edge from an unknown task is dropped
    assert graph.width == 2 * 10 + 3 * 100 + 2 * 40
    ys = sorted(node.y for node in graph.nodes if node.id in (3, 4))
    assert ys[1] - ys[0] >= 34  # siblings do not overlap
    assert all(edge.path.startswith("M") for edge in graph.edges)


def test_barycentre_ordering_uncrosses_edges():
    # a -> y and b -> x: sorted by name the edges cross; the sweep puts x next to b.
    tasks = [charts.GraphTask(n, name, "pending", True) for n, name in [(1, "a"), (2, "b"), (3, "x"), (4, "y")]]
    graph = charts.layered_graph(tasks, [(1, 4), (2, 3)])
    y = {node.id: node.y for node in graph.nodes}
    assert (y[1] < y[2]) == (y[4] < y[3])


def test_long_names_are_cut_to_fit_their_node():
    (node,) = charts.layered_graph([charts.GraphTask(1, "x" * 80, "failed", False)], []).nodes
    assert node.label.endswith("…") and len(node.label) < 20


def test_donut_fills_the_rate():
    ring = charts.donut(0.25, radius=10)
    assert ring.filled == pytest.approx(ring.circumference / 4, abs=0.01)
    assert charts.donut(None).filled == 0


# --- the task form --------------------------------------------------------------------------------------


def test_form_fields_become_the_api_json_shape():
    payload, unreadable = payload_from_form(MultiDict([
        ("name", " n "), ("cron_expression", ""), ("timezone", "UTC"), ("concurrency_policy", "allow"),
        ("description", "a\r\nb"), ("timeout_seconds", ""), ("max_retries", "2"), ("retry_delay_seconds", "x"),
        ("depends_on", "3"), ("depends_on", "5"), ("action_type", "http"), ("http_url", " http://h/ "),
        ("http_method", "PUT"), ("http_headers", "A: 1\nB:2"), ("http_body", "[1]"), ("http_body_format", "json"),
        ("http_expect_status", "201"), ("shell_command", "ignored: not the chosen type"),
    ]))
    assert unreadable == {}
    assert payload == {
        "name": "n", "cron_expression": None, "timezone": "UTC", "concurrency_policy": "allow", "description": "a\nb",
        "enabled": False, "timeout_seconds": None, "max_retries": 2, "retry_delay_seconds": "x", "depends_on": [3, 5],
        "action": {"type": "http", "url": "http://h/", "method": "PUT", "headers": {"A": "1", "B": "2"},
                   "body": [1], "expect_status": 201},
    }


def test_nested_action_errors_land_on_their_inputs():
    messages = {
        "name": ["Already taken."],
        "action": {"url": ["Not a valid URL."], "type": ["Must be one of: shell, http, python."], "bogus": ["x"]},
        "_schema": ["Whole form."],
    }
    assert errors_from_messages(messages, "http") == {
        "name": ["Already taken."],
        "http_url": ["Not a valid URL."],
        "action_type": ["Must be one of: shell, http, python.", "x"],
        "": ["Whole form."],
    }
    assert errors_from_messages({"action": ["Must be an object."]}, "shell") == {"action_type": ["Must be an object."]}


# --- formatting -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "—"), (0.4213, "0.42 s"), (12.34, "12.3 s"), (60, "1 min"), (184, "3 min 4 s"), (3600, "1 h"),
     (7500, "2 h 5 min")],
)
def test_durations_read_like_a_person_says_them(seconds, text):
    assert formatting.duration(seconds) == text


def test_relative_times_and_rates():
    assert formatting.relative_time(NOW + timedelta(minutes=5), NOW) == "in 5 min"
    assert formatting.relative_time(NOW - timedelta(hours=3), NOW) == "3 h ago"
    assert formatting.relative_time(NOW - timedelta(seconds=2), NOW) == "just now"
    assert formatting.relative_time(None) == "—"
    assert (formatting.percent(0.5), formatting.percent(0.9091), formatting.percent(None)) == ("50%", "90.9%", "—")
