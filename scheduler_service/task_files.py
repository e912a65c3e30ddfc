"""Tasks as files: the document that describes every task, read and checked.

The document is ``{"tasks": {NAME: {field: value, ...}}}``: tasks keyed by name, ``depends_on``
by parent names, only the fields a person sets (``audit.TASK_FIELDS``). ``tasks export`` writes
it; ``tasks apply`` and ``POST /api/apply/`` make the database match it (task_files_store.py
plans and writes).

Each task is validated by the API's own ``TaskSchema``, so a file and a request obey the same
rules, and the graph is checked as a whole (parents that exist, no cycle across the final
graph). Nothing here touches the database: the rules are functions of plain values, so a file is
refused, naming every task and field at fault, before anything changes.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import marshmallow as ma
import yaml

from .audit import TASK_FIELDS
from .clock import utcnow
from .engine.dependencies import find_cycle
from .database import db
from .masking import MaskError, restore_action, restore_notify
from .models import Pool
from .schemas import TaskSchema
from .task_schedules import schedule_problems

#: What a file says about a task: every field a person sets but the name, which is the key.
FILE_FIELDS = tuple(field for field in TASK_FIELDS if field != "name")
DOCUMENT_KEY = "tasks"
# A YAML file can describe values bigger than itself (aliases) or nested in themselves:
# walking it is bounded so that such a file is refused rather than hanging the CLI.
MAX_VALUES = 1_000_000
MAX_DEPTH = 64

Path = tuple[str, ...]


# --- problems --------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a document: where (``("tasks", NAME, "action", "url")``) and why."""

    path: Path
    message: str

    def line(self) -> str:
        """One line a person reads: ``task 'load': cron_expression: ...``."""
        path = tuple(part for part in self.path if part != "_schema")
        if len(path) >= 2 and path[0] == DOCUMENT_KEY:
            field = ".".join(path[2:])
            return f"task {path[1]!r}: {field + ': ' if field else ''}{self.message}"
        return f"{'.'.join(path) + ': ' if path else ''}{self.message}"


# Where the messages about a path itself go while errors() builds its tree.
_HERE = None


class InvalidDocument(ValueError):
    """The document cannot be applied; ``problems`` says each reason. Nothing was changed."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(problem.line() for problem in problems))
        self.problems = problems

    def errors(self) -> dict[str, Any]:
        """The problems nested by path, in the shape marshmallow gives the API's other 422s."""
        tree: dict[Any, Any] = {}
        for problem in self.problems:
            node = tree
            for part in problem.path:
                node = node.setdefault(part, {})
            node.setdefault(_HERE, []).append(problem.message)
        return _nested(tree) if tree.keys() != {_HERE} else {"_schema": tree[_HERE]}


def _nested(node: dict[Any, Any]) -> Any:
    """A field's messages as a list when it has no parts at fault, else its parts (and its own as ``_schema``)."""
    if node.keys() == {_HERE}:
        return node[_HERE]
    nested = {key: _nested(value) for key, value in node.items() if key is not _HERE}
    if _HERE in node:
        nested["_schema"] = [*node[_HERE], *nested.get("_schema", [])]
    return nested


def _flatten(messages: Any, path: Path) -> Iterator[Problem]:
    """marshmallow's nested error messages as problems with paths."""
    if isinstance(messages, dict):
        for key, value in messages.items():
            yield from _flatten(value, (*path, str(key)))
    elif isinstance(messages, list):
        for message in messages:
            yield from _flatten(message, path) if isinstance(message, (dict, list)) else [Problem(path, str(message))]
    else:
        yield Problem(path, str(messages))


# --- YAML ----------------------------------------------------------------------------


class _SafeLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice (it would keep the last silently: a task would vanish)."""


def _construct_mapping(loader: _SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *defaults` then a key of its own overrides, as YAML means
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:
            continue  # unhashable: construct_mapping refuses it with its own message
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}", key_node.start_mark
            )
    return loader.construct_mapping(node, deep=deep)


_SafeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class _Dumper(yaml.SafeDumper):
    """PyYAML's safe dumper, writing multi-line strings (shell commands) as literal blocks a person can read."""

    def ignore_aliases(self, data: Any) -> bool:
        return True  # a value written twice is written out twice, never as an &anchor a person must follow


def _represent_str(dumper: _Dumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _represent_str)


def load_yaml(text: str | bytes) -> Any:
    """The document in ``text``; InvalidDocument (one line) for anything that is not YAML."""
    try:
        return yaml.load(text, Loader=_SafeLoader)  # noqa: S506 - a SafeLoader subclass: safe loading only
    except yaml.YAMLError as exc:
        raise InvalidDocument([Problem((), f"Not valid YAML: {_yaml_error(exc)}")]) from None
    except RecursionError:
        raise InvalidDocument([Problem((), "Not valid YAML: nested too deeply.")]) from None


def _yaml_error(error: yaml.YAMLError) -> str:
    """PyYAML's error as one line: what, and where (its own text quotes the line over several)."""
    if not isinstance(error, yaml.MarkedYAMLError) or error.problem is None:
        return " ".join(str(error).split())
    mark = error.problem_mark
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"{error.context + ': ' if error.context else ''}{error.problem}{where}."


def dump_yaml(document: Mapping[str, Any]) -> str:
    return yaml.dump(
        document, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=100,
    )


# --- reading a document ----------------------------------------------------------------------


def task_bodies(document: Any) -> tuple[dict[str, Any], list[Problem]]:
    """``name -> body`` of every task, and the problems of the document's shape.

    Raises InvalidDocument at once when there is no mapping of tasks to look into.
    """
    if not isinstance(document, dict):
        found = "empty" if document is None else f"a {type(document).__name__}"
        message = f"The document must be a mapping with a '{DOCUMENT_KEY}' key; it is {found}."
        raise InvalidDocument([Problem((), message)])
    problems = [
        Problem((str(key),), f"Unknown field: the document has only '{DOCUMENT_KEY}'.")
        for key in document if key != DOCUMENT_KEY
    ]
    tasks = document.get(DOCUMENT_KEY)
    if DOCUMENT_KEY not in document:
        problems.append(Problem((DOCUMENT_KEY,), "Missing: a mapping of task names to tasks (it may be empty: {})."))
    elif not isinstance(tasks, dict):
        problems.append(Problem((DOCUMENT_KEY,), "Must be a mapping of task names to tasks."))
    if problems:
        raise InvalidDocument(problems)
    bodies = {name: body for name, body in tasks.items() if isinstance(name, str)}
    problems += [
        Problem((DOCUMENT_KEY,), f"Task names must be strings; {name!r} is not (quote it).")
        for name in tasks if not isinstance(name, str)
    ]
    problems += [
        Problem((DOCUMENT_KEY, name, "_schema"), "Must be a mapping of the task's fields.")
        for name, body in bodies.items() if not isinstance(body, dict)
    ]
    return bodies, problems


def non_json_values(value: Any, path: Path) -> list[Problem]:
    """Where ``value`` holds what JSON (and so the database and the API) cannot: YAML's dates, binary
    and sets, infinite numbers, keys that are not strings; bounded in size and depth."""
    problems: list[Problem] = []
    stack: list[tuple[Any, Path]] = [(value, path)]
    for _ in range(MAX_VALUES):
        if not stack:
            return problems
        node, where = stack.pop()
        if len(where) - len(path) > MAX_DEPTH:
            return [*problems, Problem(where[: len(path) + 1], f"Nested more than {MAX_DEPTH} levels deep.")]
        if isinstance(node, dict):
            for key, item in node.items():
                if isinstance(key, str):
                    stack.append((item, (*where, key)))
                else:
                    problems.append(Problem(where, f"Keys must be strings; {key!r} is not (quote it)."))
        elif isinstance(node, list):
            stack.extend((item, (*where, str(index))) for index, item in enumerate(node))
        elif isinstance(node, float) and not math.isfinite(node):
            problems.append(Problem(where, "Must be a finite number."))
        elif not isinstance(node, (str, int, float, bool, type(None))):
            kind = type(node).__name__
            problems.append(Problem(where, f"A {kind} is not a JSON value; quote it to make it a string."))
    return [*problems, Problem(path[:1], f"More than {MAX_VALUES} values.")]


def _parent_names(value: Any, where: Path) -> tuple[list[str], list[Problem]]:
    """A task's ``depends_on`` in a file: a list of task names, deduplicated and sorted (order means nothing)."""
    if not isinstance(value, list):
        return [], [Problem((*where, "depends_on"), "Must be a list of task names.")]
    problems = [
        Problem((*where, "depends_on", str(index)), "Must be a task name (a string).")
        for index, name in enumerate(value) if not isinstance(name, str)
    ]
    return sorted({name for name in value if isinstance(name, str)}), problems


def load_task(
    name: str, body: Mapping[str, Any], stored: Mapping[str, Any] | None
) -> tuple[dict[str, Any] | None, list[Problem]]:
    """One task of a file, validated by the API's TaskSchema, with ``"***"`` restored from ``stored``.

    Returns its ``FILE_FIELDS`` values (``depends_on`` as names), or None and the problems.
    """
    where = (DOCUMENT_KEY, name)
    body = dict(body)
    problems: list[Problem] = []
    if "name" in body and body.pop("name") != name:
        problems.append(Problem((*where, "name"), "The task's key is its name: leave this out or make it the same."))
    parents, parent_problems = _parent_names(body.pop("depends_on", []), where)
    problems += parent_problems
    try:
        # Parents are checked by name across the file (check_graph); the schema sees none.
        values = TaskSchema().load({**body, "name": name, "depends_on": []})
    except ma.ValidationError as exc:
        return None, [*problems, *_flatten(exc.messages, where)]
    del values["name"]
    values["depends_on"] = parents
    for field in FILE_FIELDS:
        # A field the schema leaves out when absent (notify: a PUT keeps it) is, in a file, cleared:
        # the file describes the whole task.
        values.setdefault(field, None)
    for field, restore in (("action", restore_action), ("notify", restore_notify)):
        try:
            values[field] = restore(values[field], stored[field] if stored else None)
        except MaskError as exc:
            problems.append(Problem((*where, *exc.field.split(".", 2)), str(exc)))
    return (None if problems else values), problems


def check_graph(desired: Mapping[str, Mapping[str, Any]], file_names: set[str],
                stored_parents: Mapping[str, list[str]], prune: bool) -> list[Problem]:
    """The rules that look across tasks: parents exist in the file or are kept in the database,
    and no cycle in the graph as it will be."""
    kept = {} if prune else {name: parents for name, parents in stored_parents.items() if name not in file_names}
    known = file_names | kept.keys()
    problems: list[Problem] = []
    for name in sorted(desired):
        parents = desired[name]["depends_on"]
        where = (DOCUMENT_KEY, name, "depends_on")
        if name in parents:
            problems.append(Problem(where, "A task cannot depend on itself."))
        pruned = [parent for parent in parents if parent not in known and parent in stored_parents]
        unknown = [parent for parent in parents if parent not in known and parent not in stored_parents]
        if unknown:
            problems.append(Problem(where, f"Unknown tasks (in neither the file nor the database): {_names(unknown)}."))
        if pruned:
            problems.append(Problem(where, f"Deleted by prune (not in the file): {_names(pruned)}."))
    return problems + _cycles(desired, kept)


def _cycles(desired: Mapping[str, Mapping[str, Any]], kept: Mapping[str, list[str]]) -> list[Problem]:
    graph = {**kept, **{name: values["depends_on"] for name, values in desired.items()}}
    problems, reported = [], set()
    for name in sorted(desired):
        # find_cycle walks any hashable nodes; here they are names.
        cycle = find_cycle(name, [parent for parent in graph[name] if parent != name], graph)  # type: ignore[arg-type]
        if cycle and frozenset(cycle) not in reported:
            reported.add(frozenset(cycle))
            path = " -> ".join(repr(node) for node in cycle)
            problems.append(Problem((DOCUMENT_KEY, name, "depends_on"), f"Would create a cycle: {path}."))
    return problems


def _names(names: list[str]) -> str:
    return ", ".join(repr(name) for name in names)


def read_document(document: Any, stored: Mapping[str, Mapping[str, Any]], prune: bool) -> dict[str, dict[str, Any]]:
    """The tasks a document wants (``name -> FILE_FIELDS values``), each valid and with its secrets
    restored; InvalidDocument naming every problem of every task otherwise."""
    bodies, problems = task_bodies(document)
    walked = non_json_values(bodies, (DOCUMENT_KEY,))
    if any(len(problem.path) < 2 for problem in walked):
        raise InvalidDocument(problems + walked)  # too big to look at further
    problems += walked
    unreadable = {problem.path[1] for problem in problems if len(problem.path) > 1}
    desired: dict[str, dict[str, Any]] = {}
    for name in sorted(bodies):
        if name in unreadable:
            continue  # not a mapping, or not JSON: the schema has nothing sound to check
        values, task_problems = load_task(name, bodies[name], stored.get(name))
        problems += task_problems
        if values is not None:
            desired[name] = values
            # The API's schedule rules; a one-off already past is fine while the file keeps its time.
            run_at_changed = values["run_at"] != (stored.get(name) or {}).get("run_at")
            problems += [Problem((DOCUMENT_KEY, name, field), message) for field, message in schedule_problems(
                values, has_parents=bool(values["depends_on"]), run_at_changed=run_at_changed, now=utcnow())]
            if values["pool"] is not None and db.session.get(Pool, values["pool"]) is None:
                problems.append(Problem((DOCUMENT_KEY, name, "pool"), f"Unknown pool {values['pool']!r}."))
    stored_parents = {name: values["depends_on"] for name, values in stored.items()}
    problems += check_graph(desired, set(bodies), stored_parents, prune)
    if problems:
        raise InvalidDocument(sorted(problems, key=lambda problem: problem.path))
    return desired
