"""The @work / @workflow API (docs/api.md), one behaviour per test."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import iworkflow
from iworkflow import ConfigurationError, MapResult, Work, Workflow, get_unique_id_for_dict, work, workflow


@work
def add(a, b=0, c=0):
    return a + b + c


@work(map_results=True)
def flaky(x):
    if x == 2:
        raise KeyError(f"x={x} is cursed")
    return x * 10


@work(map_results=True, job_key=lambda entry: f"point-{entry['x']}")
def keyed(x):
    return x


def test_a_single_call_returns_the_value(embedded):
    assert add(1, b=2) == 3


def test_group_kwargs_is_an_alias_of_multi_jobs_kwargs_list(embedded):
    assert add(1, group_kwargs=[{"b": 1}, {"b": 2}]) == add(1, multi_jobs_kwargs_list=[{"b": 1}, {"b": 2}]) == [2, 3]


def test_dict_entries_merge_over_call_kwargs_and_pre_kwargs_sit_underneath(embedded):
    f = work(pre_kwargs={"b": 100, "c": 1000})(add.__wrapped__)
    assert f(1, c=5, group_kwargs=[{"b": 1}, {"c": 7}]) == [1 + 1 + 5, 1 + 100 + 7]


def test_list_entries_replace_the_positional_args(embedded):
    assert add(999, c=1, group_kwargs=[[1], [2, 3]]) == [1 + 0 + 1, 2 + 3 + 1]


def test_map_results_looks_up_by_kwargs_and_by_key(embedded):
    entries = [{"x": 1}, {"x": 3}]
    res = flaky(group_kwargs=entries)
    assert isinstance(res, MapResult)
    assert res.get_result(args={"x": 3}) == 30
    assert res.get_result(key=get_unique_id_for_dict({"x": 1})) == 10
    assert res.has_result(args={"x": 1}) and not res.has_result(args={"x": 99})


def test_a_failed_job_reads_as_none_its_details_keep_the_error_and_result_raises_it(embedded):
    res = flaky(group_kwargs=[{"x": 1}, {"x": 2}, {"x": 3}])
    assert res.get_result(args={"x": 2}) is None  # iDDS semantics: retry loops test for None
    value, details = res.get_result(args={"x": 2}, with_details=True)
    assert value is None and details["status"] == "failed"
    assert "x=2 is cursed" in details["error"] and "KeyError" in details["error"]
    assert details["metrics"]["worker"]
    with pytest.raises(KeyError, match="cursed"):
        res.result(args={"x": 2})
    assert list(res.get_all_results().values()) == [10, 30]
    assert list(res.get_failures()) == [get_unique_id_for_dict({"x": 2})]


def test_fan_out_without_map_results_raises_the_first_failure_naming_the_job(embedded):
    f = work(flaky.__wrapped__)
    with pytest.raises(KeyError) as info:
        f(group_kwargs=[{"x": 1}, {"x": 2}])
    assert any("1 of 2 jobs failed" in note for note in info.value.__notes__)


def test_job_key_callable_names_each_job(embedded):
    res = keyed(group_kwargs=[{"x": 1}, {"x": 2}])
    assert res.get_result(key="point-2") == 2
    assert res.get_result(args={"x": 1}) == 1


def test_work_status_reports_subfinished_and_failed(embedded):
    sub = Work(flaky.__wrapped__, multi_jobs_kwargs_list=[{"x": 1}, {"x": 2}], map_results=True)
    sub.submit()
    sub.wait_results(timeout=60)
    assert sub.is_subfinished() and not sub.is_finished() and not sub.is_failed() and sub.is_terminated()
    bad = Work(flaky.__wrapped__, multi_jobs_kwargs_list=[{"x": 2}], map_results=True)
    bad.submit()
    bad.wait_results(timeout=60)
    assert bad.is_failed() and bad.get_status() == "failed"


def test_return_work_gives_the_unsubmitted_work(embedded):
    f = work(return_work=True)(add.__wrapped__)
    w = f(1, group_kwargs=[{"b": 2}])
    assert isinstance(w, Work) and w.get_status() == "new"
    w.submit()
    assert w.wait_results(timeout=60) == [3]
    assert w.is_finished()


def test_work_called_outside_any_workflow_still_runs(embedded):
    assert iworkflow.current_workflow() is None
    assert add(2, 3) == 5


def test_work_calls_inside_a_workflow_belong_to_it(embedded):
    @workflow(local=True)
    def driver():
        add(1)
        add(2)
        return iworkflow.current_workflow()

    wf = driver()
    assert [w.name for w in wf.works] == ["add", "add"]
    assert all(w.workflow_id == wf.internal_id for w in wf.works)


def test_return_workflow_gives_the_workflow_without_running_it(embedded):
    ran = []

    @workflow(return_workflow=True, local=True)
    def driver(x):
        ran.append(x)
        return x + 1

    wf = driver(1)
    assert isinstance(wf, Workflow) and not ran
    assert wf.run() == 2 and ran == [1]


def test_default_workflow_name_is_function_name_and_utc_timestamp(embedded):
    @workflow(return_workflow=True)
    def my_driver():
        pass

    wf = my_driver()
    prefix, stamp = wf.name[: len("my_driver_")], wf.name[len("my_driver_"):]
    assert prefix == "my_driver_" and time.strptime(stamp, "%Y_%m_%d_%H_%M_%S")
    assert wf.max_attempt == 5 and wf.request_id == wf.internal_id


def test_nested_workflow_runs_inside_its_parent_and_records_the_parent(embedded):
    @workflow(local=True)
    def inner(x):
        return add(x, 1), iworkflow.current_workflow()

    @workflow(local=True)
    def outer():
        value, child = inner(1)
        return value, child, iworkflow.current_workflow()

    value, child, parent = outer()
    assert value == 2 and child.parent_id == parent.internal_id


def test_detached_workflow_returns_at_once_and_its_result_can_be_awaited(embedded):
    @workflow
    def driver(n):
        return sum(add(i) for i in range(n))

    wf = driver(4)
    assert isinstance(wf, Workflow)
    assert wf.wait(timeout=120) == 6


def test_workflow_is_a_context_manager_owning_the_works_inside(embedded):
    wf = Workflow(name="manual")
    with wf:
        assert add(5) == 5
    assert len(wf.works) == 1 and wf.works[0].workflow_id == wf.internal_id


def test_kwargs_not_matching_the_signature_are_caught_before_submission(embedded):
    with pytest.raises(ConfigurationError, match=r"job 1 of add.*unexpected keyword argument 'd'"):
        add(1, group_kwargs=[{"b": 1}, {"d": 2}])


def test_multi_jobs_kwargs_list_that_is_not_a_list_is_refused(embedded):
    with pytest.raises(ConfigurationError, match="must be a list"):
        add(1, group_kwargs={"b": 1})


def test_duplicate_entries_are_refused_because_their_keys_collide(embedded):
    with pytest.raises(ConfigurationError, match="entries 0 and 2 give the same job key"):
        add(1, group_kwargs=[{"b": 1}, {"b": 2}, {"b": 1}])


def test_an_unpicklable_argument_is_named_in_the_error(embedded):
    with pytest.raises(ConfigurationError, match="argument 'b' of type lock"):
        add(1, b=threading.Lock())


def test_a_non_callable_passed_to_work_is_refused():
    with pytest.raises(ConfigurationError, match="@work needs a function"):
        work(42)


def test_an_unknown_executor_error_lists_the_known_ones(embedded):
    iworkflow.configure(executor="quantum")
    with pytest.raises(ConfigurationError, match="unknown executor 'quantum'; known executors: .*local"):
        add(1)


def test_wait_results_raises_timeout_error(embedded):
    w = Work(time.sleep, args=(3,), name="sleep")
    w.submit()
    with pytest.raises(TimeoutError):
        w.wait_results(timeout=0.3)


def test_cancel_drops_jobs_that_have_not_started_and_each_ends_cancelled(threaded):
    iworkflow.configure(executor="thread", slots=1)
    w = Work(time.sleep, multi_jobs_kwargs_list=[[0.5], [0.01], [0.02]], map_results=True)
    w.submit()
    assert w.cancel() == 2
    res = w.wait_results(timeout=30)
    failures = res.get_failures()
    assert len(failures) == 2 and all("cancelled" in d["error"] for d in failures.values())


@pytest.mark.parametrize("var", ["IDDS_IGNORE_WORK_DECORATOR", "IWORKFLOW_IGNORE_WORK_DECORATOR"])
def test_ignore_decorator_env_returns_the_plain_function(var):
    code = textwrap.dedent("""
        from iworkflow import work, workflow
        def f(x): return x
        assert work(f) is f
        assert work(map_results=True)(f) is f
        print("plain")
    """)
    env = {**os.environ, var: "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "plain", out.stderr


def test_a_ten_thousand_job_fan_out_returns_every_result_keyed_correctly(embedded):
    entries = [{"x": i} for i in range(10_000)]
    res = flaky(group_kwargs=[e for e in entries if e["x"] != 2])
    assert len(res) == 9_999
    assert all(res.get_result(args=e) == e["x"] * 10 for e in entries if e["x"] != 2)


def test_a_work_fed_with_another_works_results_records_it_as_parent(embedded):
    @work(map_results=True)
    def make(x):
        return [x] * 3

    @work
    def consume(values):
        return sum(values)

    @workflow(local=True)
    def driver():
        made = make(group_kwargs=[{"x": 1}, {"x": 2}])
        total = consume(made.get_result(args={"x": 2}))
        unrelated = consume([5, 5])
        return total, unrelated, iworkflow.current_workflow()

    total, unrelated, wf = driver()
    first, second, third = wf.works
    assert (total, unrelated) == (6, 10)
    assert second.parents == [first.internal_id] and third.parents == []
