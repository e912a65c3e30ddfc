from datetime import datetime, timedelta, timezone

from scheduler_service.engine.dependencies import (
    GateStatus, ParentOutcome, ParentState, due_after_parents, find_cycle, gate,
)


def test_no_cycle_in_a_chain():
    parents_of = {2: [1], 3: [2]}
    assert find_cycle(4, [3], parents_of) is None


def test_self_dependency_is_a_cycle():
    assert find_cycle(1, [1], {}) == [1, 1]


def test_cycle_through_ancestors_is_reported_as_a_path():
    # 1 depends on nothing yet; 2 -> 1, 3 -> 2. Making 1 depend on 3 closes 1 -> 3 -> 2 -> 1.
    parents_of = {2: [1], 3: [2]}
    assert find_cycle(1, [3], parents_of) == [1, 3, 2, 1]


def test_diamond_is_not_a_cycle():
    parents_of = {2: [1], 3: [1], 4: [2, 3]}
    assert find_cycle(5, [4, 2], parents_of) is None


def test_gate_runs_when_all_parents_succeeded():
    assert gate([ParentState("a", "success"), ParentState("b", "success")]) == GateStatus("run")


def test_gate_waits_for_a_running_or_retrying_parent_before_judging_others():
    retrying = ParentState("b", "retrying", id=2)
    status = gate([ParentState("a", "failed", id=1), retrying])
    assert status == GateStatus("wait", "parent 'b' is retrying", retrying)


def test_gate_skips_with_the_failed_parent_named():
    failed = ParentState("extract", "failed", id=7)
    # The parent itself, not only its name in the message: alerts read it (structured, not parsed).
    assert gate([failed]) == GateStatus("skip", "parent 'extract' failed", failed)


def test_gate_skips_when_a_parent_never_ran():
    assert gate([ParentState("a", "success"), ParentState("b", "pending")]).reason == "parent 'b' has never run"


def test_a_dependency_only_child_is_due_once_every_parent_succeeded_since_it_ran():
    t0 = datetime(2026, 12, 1, 2, 0, tzinfo=timezone.utc)
    ok = lambda minutes: ParentOutcome("success", t0 + timedelta(minutes=minutes))  # noqa: E731
    assert due_after_parents([ok(1), ok(2)], child_last_run=None)
    assert due_after_parents([ok(1), ok(2)], child_last_run=t0)
    assert not due_after_parents([ok(1), ok(2)], child_last_run=t0 + timedelta(minutes=1))  # one is older
    assert not due_after_parents([ok(1), ParentOutcome("failed", t0)], child_last_run=None)
    assert not due_after_parents([ok(1), ParentOutcome("success", None)], child_last_run=None)  # never succeeded
    assert not due_after_parents([ok(1), ParentOutcome("running", t0 + timedelta(minutes=5))], child_last_run=t0)
