from scheduler_service.engine.dependencies import GateStatus, ParentState, find_cycle, gate


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
    status = gate([ParentState("a", "failed"), ParentState("b", "retrying")])
    assert status == GateStatus("wait", "parent 'b' is retrying")


def test_gate_skips_with_the_failed_parent_named():
    assert gate([ParentState("extract", "failed")]) == GateStatus("skip", "parent 'extract' failed")


def test_gate_skips_when_a_parent_never_ran():
    assert gate([ParentState("a", "success"), ParentState("b", "pending")]).reason == "parent 'b' has never run"
