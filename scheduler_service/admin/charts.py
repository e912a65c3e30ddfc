"""Chart geometry for the dashboard: plain values in, coordinates out.

Pure functions, no database and no clock, so the layouts are tested alone.
The templates turn these shapes into inline SVG: the pages need no script and
no third-party files, and a chart is visible the moment the page loads.
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

# --- stacked bars: runs per hour by outcome ------------------------------------------------


@dataclass(frozen=True)
class Segment:
    series: str
    count: int
    y: float
    height: float


@dataclass(frozen=True)
class Bar:
    label: str
    x: float
    width: float
    total: int
    segments: tuple[Segment, ...]
    show_label: bool


@dataclass(frozen=True)
class Tick:
    value: float
    position: float
    label: str


@dataclass(frozen=True)
class BarChart:
    width: float
    height: float
    plot_left: float
    plot_top: float
    plot_bottom: float
    plot_right: float
    bars: tuple[Bar, ...]
    y_ticks: tuple[Tick, ...]
    series: tuple[str, ...]
    totals: Mapping[str, int]

    @property
    def empty(self) -> bool:
        return not any(bar.total for bar in self.bars)


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten that is >= ``value`` (at least 1)."""
    if value <= 1:
        return 1
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power  # pragma: no cover - the loop always returns


def stacked_bars(
    columns: Sequence[tuple[str, Mapping[str, int]]],
    series: Sequence[str],
    *,
    width: float = 1100,
    height: float = 250,
    label_every: int = 3,
) -> BarChart:
    """Bars of ``columns`` (label, counts by series), each stacked bottom-up in ``series`` order."""
    left, right, top, bottom = 44.0, width - 8.0, 12.0, height - 28.0
    plot_height = bottom - top
    highest = max((sum(counts.get(name, 0) for name in series) for _, counts in columns), default=0)
    scale_max = nice_ceiling(highest)
    slot = (right - left) / max(len(columns), 1)
    bar_width = max(slot * 0.72, 1.0)
    bars = []
    for index, (label, counts) in enumerate(columns):
        y = bottom
        segments = []
        for name in series:
            count = counts.get(name, 0)
            if count:
                segment_height = plot_height * count / scale_max
                y -= segment_height
                segments.append(Segment(name, count, round(y, 2), round(segment_height, 2)))
        bars.append(
            Bar(
                label=label,
                x=round(left + index * slot + (slot - bar_width) / 2, 2),
                width=round(bar_width, 2),
                total=sum(segment.count for segment in segments),
                segments=tuple(segments),
                show_label=index % label_every == 0,
            )
        )
    ticks = tuple(
        Tick(value, round(bottom - plot_height * value / scale_max, 2), _count_label(value))
        for value in _tick_values(scale_max)
    )
    totals = {name: sum(counts.get(name, 0) for _, counts in columns) for name in series}
    return BarChart(width, height, left, top, bottom, right, tuple(bars), ticks, tuple(series), totals)


def _tick_values(scale_max: float) -> list[float]:
    """Whole-number ticks: 1/2/5 x 10^k split in 5, 4 and 5 steps (a count has no half runs)."""
    leading = scale_max / 10 ** math.floor(math.log10(scale_max))
    step = max(scale_max / (4 if round(leading) == 2 else 5), 1)
    return [step * index for index in range(int(round(scale_max / step)) + 1)]


def _count_label(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:g}"


# --- horizontal bars: average duration per task ----------------------------------------------


@dataclass(frozen=True)
class HBar:
    label: str
    value: float
    y: float
    length: float
    link_id: int


@dataclass(frozen=True)
class HBarChart:
    width: float
    height: float
    label_width: float
    bar_height: float
    max_length: float
    bars: tuple[HBar, ...]


def horizontal_bars(
    items: Sequence[tuple[int, str, float]], *, width: float = 440, label_width: float = 130, row: float = 26
) -> HBarChart:
    """One bar per (id, label, value), longest value full length; room on the right for the value's text."""
    max_length = width - label_width - 70
    highest = max((value for _, _, value in items), default=0) or 1
    bars = tuple(
        HBar(label, value, round(index * row + 4, 2), round(max(max_length * value / highest, 2), 2), item_id)
        for index, (item_id, label, value) in enumerate(items)
    )
    return HBarChart(width, max(len(items) * row + 8, row), label_width, row - 10, max_length, bars)


# --- donut: success rate -----------------------------------------------------------------------


@dataclass(frozen=True)
class Donut:
    radius: float
    circumference: float
    filled: float  # length of the arc drawn for the rate

    @property
    def gap(self) -> float:
        return round(self.circumference - self.filled, 2)


def donut(rate: float | None, radius: float = 34) -> Donut:
    circumference = 2 * math.pi * radius
    return Donut(radius, round(circumference, 2), round(circumference * (rate or 0), 2))


# --- timeline: the next runs ---------------------------------------------------------------------

TIMELINE_WINDOWS = (timedelta(hours=1), timedelta(hours=6), timedelta(hours=24), timedelta(days=7))


@dataclass(frozen=True)
class Mark:
    at: datetime
    x: float


@dataclass(frozen=True)
class Lane:
    task_id: int
    name: str
    y: float
    marks: tuple[Mark, ...]
    first: datetime
    beyond: bool  # the first run is past the window's end


@dataclass(frozen=True)
class Timeline:
    width: float
    height: float
    left: float
    right: float
    start: datetime
    end: datetime
    lanes: tuple[Lane, ...]
    ticks: tuple[Tick, ...]
    lane_height: float


def timeline_window(now: datetime, firsts: Iterable[datetime]) -> timedelta:
    """The shortest of 1 h, 6 h, 24 h, 7 d that shows every lane's first run (7 d at most)."""
    latest = max(firsts, default=now)
    for window in TIMELINE_WINDOWS:
        if latest - now <= window:
            return window
    return TIMELINE_WINDOWS[-1]


def timeline(
    now: datetime,
    lanes: Sequence[tuple[int, str, Sequence[datetime]]],
    *,
    width: float = 660,
    label_width: float = 130,
    lane_height: float = 28,
) -> Timeline:
    """Lanes of (task id, name, its coming fire times) on one time axis starting at ``now``.

    A run already due (the scheduler is behind) is drawn at the start.
    """
    window = timeline_window(now, (times[0] for _, _, times in lanes if times))
    end = now + window
    left, right = label_width, width - 16
    span = window.total_seconds()

    def x_of(moment: datetime) -> float:
        fraction = min(max((moment - now).total_seconds() / span, 0.0), 1.0)
        return round(left + (right - left) * fraction, 2)

    shaped = []
    for index, (task_id, name, times) in enumerate(lanes):
        if not times:
            continue
        marks = _thinned([Mark(at, x_of(at)) for at in times if at <= end])
        shaped.append(Lane(task_id, name, 26 + index * lane_height, marks, times[0], times[0] > end))
    ticks = tuple(
        Tick(0, x_of(now + window * step / 6), _offset_label(window * step / 6)) for step in range(7)
    )
    height = 26 + max(len(shaped), 1) * lane_height + 6
    return Timeline(width, height, left, right, now, end, tuple(shaped), ticks, lane_height)


MIN_MARK_GAP = 6.0  # px: closer marks would draw one blot; keep every run a person can tell apart


def _thinned(marks: list[Mark]) -> tuple[Mark, ...]:
    kept: list[Mark] = []
    for mark in marks:
        if not kept or mark.x - kept[-1].x >= MIN_MARK_GAP:
            kept.append(mark)
    return tuple(kept)


def _offset_label(offset: timedelta) -> str:
    seconds = int(offset.total_seconds())
    if seconds == 0:
        return "now"
    if seconds % 86400 == 0:
        return f"+{seconds // 86400}d"
    if seconds % 3600 == 0:
        return f"+{seconds // 3600}h"
    return f"+{seconds // 60}m"


# --- the dependency graph ------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    id: int
    label: str
    status: str
    enabled: bool
    x: float
    y: float


@dataclass(frozen=True)
class Edge:
    parent: int
    child: int
    path: str


@dataclass
class Graph:
    width: float
    height: float
    node_width: float
    node_height: float
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)


@dataclass(frozen=True)
class GraphTask:
    id: int
    name: str
    status: str
    enabled: bool


def layer_of(ids: Iterable[int], edges: Iterable[tuple[int, int]]) -> dict[int, int]:
    """Each node's column: 0 for roots, else one past its deepest parent (edges are (parent, child)).

    The service refuses cycles; should one exist anyway, its nodes stay in column 0
    rather than looping.
    """
    parents: dict[int, list[int]] = defaultdict(list)
    children: dict[int, list[int]] = defaultdict(list)
    for parent, child in edges:
        parents[child].append(parent)
        children[parent].append(child)
    layer = {node: 0 for node in ids}
    waiting = {node: len(parents[node]) for node in layer}
    ready = [node for node, count in waiting.items() if count == 0]
    while ready:
        node = ready.pop()
        for child in children[node]:
            layer[child] = max(layer[child], layer[node] + 1)
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    return layer


def _order_layers(layers: dict[int, list[int]], edges: Sequence[tuple[int, int]]) -> None:
    """Reorder each column by the mean position of its neighbours (barycentre sweeps): fewer crossings."""
    up: dict[int, list[int]] = defaultdict(list)
    down: dict[int, list[int]] = defaultdict(list)
    for parent, child in edges:
        up[child].append(parent)
        down[parent].append(child)
    columns = sorted(layers)
    for sweep in range(4):
        forward = sweep % 2 == 0
        sequence = columns[1:] if forward else list(reversed(columns[:-1]))
        neighbours = up if forward else down
        for column in sequence:
            position = {node: index for nodes in layers.values() for index, node in enumerate(nodes)}
            current = layers[column]

            def weight(node: int) -> float:
                linked = [position[other] for other in neighbours[node] if other in position]
                return sum(linked) / len(linked) if linked else position[node]

            current.sort(key=weight)


def layered_graph(
    tasks: Sequence[GraphTask],
    edges: Sequence[tuple[int, int]],
    *,
    node_width: float = 136,
    node_height: float = 34,
    gap_x: float = 46,
    gap_y: float = 18,
    margin: float = 10,
) -> Graph:
    """A left-to-right layered drawing: parents to the left of their children, edges as curves."""
    by_id = {task.id: task for task in tasks}
    edges = [(parent, child) for parent, child in edges if parent in by_id and child in by_id]
    layer = layer_of(by_id, edges)
    layers: dict[int, list[int]] = defaultdict(list)
    for task in sorted(tasks, key=lambda task: task.name.lower()):
        layers[layer[task.id]].append(task.id)
    _order_layers(layers, edges)

    tallest = max((len(nodes) for nodes in layers.values()), default=0)
    height = 2 * margin + tallest * node_height + max(tallest - 1, 0) * gap_y
    width = 2 * margin + len(layers) * node_width + max(len(layers) - 1, 0) * gap_x
    graph = Graph(width, height, node_width, node_height)
    centre: dict[int, tuple[float, float]] = {}
    for column, nodes in sorted(layers.items()):
        column_height = len(nodes) * node_height + (len(nodes) - 1) * gap_y
        top = margin + (height - 2 * margin - column_height) / 2
        for index, node_id in enumerate(nodes):
            task = by_id[node_id]
            x = margin + column * (node_width + gap_x)
            y = top + index * (node_height + gap_y)
            graph.nodes.append(Node(task.id, _fit(task.name, node_width), task.status, task.enabled, x, y))
            centre[node_id] = (x, y + node_height / 2)
    for parent, child in edges:
        (x1, y1), (x2, y2) = centre[parent], centre[child]
        x1 += node_width
        bend = max((x2 - x1) / 2, 20)
        path = f"M{x1:.1f},{y1:.1f} C{x1 + bend:.1f},{y1:.1f} {x2 - bend:.1f},{y2:.1f} {x2 - 6:.1f},{y2:.1f}"
        graph.edges.append(Edge(parent, child, path))
    return graph


def _fit(label: str, node_width: float) -> str:
    # About 7 px per character at the graph's font size, with room for the status dot.
    room = int((node_width - 28) / 7)
    return label if len(label) <= room else label[: room - 1] + "…"
