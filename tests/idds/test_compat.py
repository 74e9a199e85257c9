"""The iDDS names and behaviours real iWorkflow code depends on, one per test (issue: 'runs unchanged but
for the import')."""
from __future__ import annotations

import enum
import json
import logging
import os
import time
from pathlib import Path

import pytest

import iworkflow
from iworkflow import MapResult
from iworkflow.runner import job_command
from iworkflow.work import Work, work
from iworkflow.workflow import Workflow, workflow


def square(x):
    return x * x


def flaky(x):
    if x == 2:
        raise ValueError(f"x={x} diverged")
    return x * 10


def env_var(name):
    return os.environ.get(name)


class TransformStatus(enum.Enum):
    """The shape of iDDS's status enum: users pass its members to ``is_finished(status)``."""

    Finished = 1
    SubFinished = 2
    Failed = 3


def test_workflow_pre_run_store_load_and_work_store_behave_as_in_idds(embedded):
    wf = Workflow(func=square, name="stored_wf", multi_jobs_kwargs_list=[{"x": 1}, {"x": 2}])
    assert wf.pre_run() is True
    wf.store()
    record = json.loads(Path(embedded.settings.home, "contexts", "stored_wf.json").read_text())
    assert record["name"] == "stored_wf" and record["multi_jobs_kwargs_list"] == [{"x": 1}, {"x": 2}]
    again = Workflow(func=square, name="stored_wf")
    again.load()
    assert again.multi_jobs_kwargs_list == [{"x": 1}, {"x": 2}]

    w = Work(square, workflow=wf, name="stored_work", multi_jobs_kwargs_list=[{"x": 3}])
    w.store()
    assert w.pre_run() is True
    fresh = Work(square, workflow=wf, name="stored_work", multi_jobs_kwargs_list=[{"x": 9}])
    fresh.load()
    assert fresh.multi_jobs_kwargs_list == [{"x": 3}] and fresh.run() == [9]


def test_pre_run_reports_false_when_results_cannot_come_back(embedded, monkeypatch):
    wf = Workflow(func=square)
    monkeypatch.setattr(embedded.bus, "publish", lambda destination, data: None)  # every result is lost
    assert iworkflow.AsyncResult(wf, timeout=0.3).is_ok() is False


def test_panda_and_rucio_work_arguments_are_kept_not_refused(embedded, caplog):
    wf = Workflow(func=square, name="panda_style", local=True)
    caplog.set_level(logging.DEBUG, logger="iworkflow.idds_compat")
    w = work(func=square, workflow=wf, return_work=True, map_results=True, name="panda_style.job1",
             job_key="panda_style.job1", log_dataset_name="panda_style.job1.log/", output_file_name="out.root",
             output_dataset_name="user.me.out/", num_events=100, num_events_per_job=10, input_datasets=["ds"],
             parent_internal_id="0a1b2c3d", parent_workload_id=7, no_wait_parent=True,
             parent_transform_id=3, enable_separate_log=True)(x=4)
    assert w.log_dataset_name == "panda_style.job1.log/" and w.parent_internal_id == "0a1b2c3d"
    assert w.get_parent_internal_id() == "0a1b2c3d" and w.other_attributes["num_events"] == 100
    assert "log_dataset_name='panda_style.job1.log/'" in caplog.text and "not used by iworkflow" in caplog.text
    assert w.submit() and w.parents == ["0a1b2c3d"]  # the parent is recorded as a DAG edge
    assert w.wait_results(timeout=60).get_result(key="panda_style.job1") == 16


def test_status_checks_take_the_status_the_caller_already_has(embedded):
    w = Work(flaky, multi_jobs_kwargs_list=[{"x": 1}, {"x": 2}], map_results=True)
    w.submit()
    w.init_async_result()
    while not w.is_terminated():
        time.sleep(0.02)
    status = w.get_status()
    assert status == "subfinished" and w.is_subfinished(status) and not w.is_finished(status)
    assert w.is_finished("finished") and w.is_finished(TransformStatus.Finished)
    assert w.is_failed(TransformStatus.Failed) and not w.is_failed(TransformStatus.SubFinished)
    assert w.is_terminated(TransformStatus.SubFinished) and not w.is_terminated("running")


def test_get_result_verbose_logs_the_lookup_and_set_result_takes_value(caplog):
    mr = MapResult()
    mr.set_result(args={"x": 1}, value=10, verbose=True)
    mr.set_result(name="f", key="k2", value=20)
    caplog.set_level(logging.INFO, logger="iworkflow.asyncresult")
    assert mr.get_result(args={"x": 1}, verbose=True) == 10
    assert "get_result: name None, args {'x': 1}" in caplog.text
    assert mr.get_result(name="f", key="k2") == 20 and mr.get_result(key="f:k2") == 20
    assert mr.get_dict_results() == {"results": {mr._find(None, {"x": 1}, None): 10, "k2": 20},
                                     "name_results": {"f:k2": 20}}


def test_a_failed_or_missing_job_reads_as_none_and_its_error_stays_reachable(embedded):
    res = work(map_results=True)(flaky)(group_kwargs=[{"x": 1}, {"x": 2}])
    assert res.get_result(args={"x": 2}) is None and res.get_result(args={"x": 99}) is None
    value, details = res.get_result(args={"x": 2}, with_details=True)
    assert value is None and details["status"] == "failed" and "x=2 diverged" in details["error"]
    assert res.get_result(args={"x": 99}, with_details=True)[1]["status"] == "missing"
    assert list(res.get_failures().values())[0]["traceback"]
    with pytest.raises(ValueError, match="x=2 diverged"):
        res.result(args={"x": 2})
    with pytest.raises(LookupError, match="no result for args"):
        res.result(args={"x": 99})
    assert res.result(args={"x": 1}) == 10


def test_works_run_behind_their_workflows_init_env_unless_they_have_their_own(embedded):
    own = work(init_env="env IWF_FROM=work")(env_var)

    @workflow(local=True, init_env="env IWF_FROM=workflow")
    def driver():
        return work(env_var)("IWF_FROM"), own("IWF_FROM")

    assert driver() == ("workflow", "work")


def test_works_inherit_their_workflows_container_options_unless_they_have_their_own(embedded):
    image = {"container_image": "docker.io/library/python:3.11", "runtime": "podman"}
    wf = Workflow(func=square, container_options=image, init_env="env A=1")
    inherited = Work(square, workflow=wf, args=(2,))
    own = Work(square, workflow=wf, args=(2,), container_options={**image, "container_image": "mine:1"})
    assert inherited.container_options == image and own.container_options["container_image"] == "mine:1"
    executor = embedded.executor("thread")
    job = next(inherited._job_chunks(executor, inherited._prepare(executor)))[0]  # the job as it would be sent
    from iworkflow.messages import decode_payload

    _, payload = decode_payload(job.data, embedded.secret, "job")
    command = " ".join(job_command(payload))
    assert payload.container_options == image and "podman run" in command and "python:3.11" in command
    assert "env A=1 python3 -m iworkflow.runner once" in command  # the workflow's init_env, inside the image


def test_a_workflow_with_distributed_false_runs_its_works_in_the_driver_process(embedded):
    @workflow(local=True, distributed=False)
    def driver():
        return work(os.getpid)()

    assert driver() == os.getpid()


def test_a_registered_local_workflow_returns_a_request_id_and_its_works_join_it(embedded):
    wf = workflow(func=square, name="ax_experiment", local=True, return_workflow=True)()
    req_id = wf.submit()
    assert req_id and req_id == wf.request_id
    w = work(func=square, workflow=wf, return_work=True)(x=3)
    assert w.workflow_id == wf.internal_id and w.run() == 9
    wf.close()


def test_workflow_canvas_tracks_the_current_workflow():
    from iworkflow.workflow import WorkflowCanvas

    wf = Workflow(func=square)
    assert WorkflowCanvas.get_current_workflow() is None
    WorkflowCanvas.push_managed_workflow(wf)
    assert WorkflowCanvas.get_current_workflow() is wf is iworkflow.current_workflow()
    assert WorkflowCanvas.pop_managed_workflow() is wf and WorkflowCanvas.get_current_workflow() is None


def test_map_result_dict_views_have_the_idds_shapes():
    mr = MapResult()
    mr.add_result(name="f", args={"x": 1}, result=10)
    mr.add_result(key="k2", result=20)
    key1 = next(iter(mr.get_all_results()))
    assert mr.get_all_results() == {key1: 10, "k2": 20}
    dumped = mr.get_dict_results()
    assert dumped == {"results": {key1: 10, "k2": 20}, "name_results": {f"f:{key1}": 10}}
    copy = MapResult()
    copy.set_from_dict_results(dumped)
    assert copy.get_result(key=f"f:{key1}") == 10 and copy.get_result(key="k2") == 20
    assert str(mr) == str({key1: 10, "k2": 20})


def test_async_result_takes_current_job_kwargs_and_idds_keywords(embedded):
    w = Work(square, multi_jobs_kwargs_list=[{"x": 1}, {"x": 2}], map_results=True)
    collector = w.init_async_result()
    collector.subscribe(force=True)
    reporter = iworkflow.AsyncResult(w, current_job_kwargs={"x": 2})
    reporter.publish(4, force=True)
    reporter.publish(1, key=w.job_keys[0])
    assert collector.wait_keys == set(w.job_keys)
    assert collector.wait_results(timeout=30).get_result(args={"x": 2}) == 4
    assert collector.get_results(nologs=True).get_result(args={"x": 1}) == 1
    assert collector.waiting_result_terminated and not collector.is_stop
    w.stop_async_result()
    assert collector.is_stop


def test_inputs_group_and_input_map_become_keyword_arguments(embedded):
    def join(files, tag="none"):
        return f"{tag}:{files}"

    w = Work(join, inputs=["a.root", "b.root"], input_map="files", inputs_group={"tag": "run3"})
    assert w.run() == "run3:a.root,b.root"


def test_no_wraps_is_unique_func_name_and_the_status_lists(embedded):
    bare = work(no_wraps=True)(square)
    assert bare.__name__ == "wrapper" and bare(x=3) == 9
    assert workflow(no_wraps=True, return_workflow=True)(square)(2).name.startswith("square_")
    assert Workflow(func=square, is_unique_func_name=True).name == "square"
    assert Work.get_terminated_status() == ["finished", "subfinished", "failed", "cancelled"]


def test_a_cancelled_work_reads_cancelled_only_once_its_running_jobs_ended(threaded):
    iworkflow.configure(executor="thread", slots=1)
    w = Work(time.sleep, multi_jobs_kwargs_list=[[0.3], [0.01]], map_results=True)
    w.submit()
    assert w.cancel() == 1
    assert w.get_status() == "running" and not w.is_terminated()
    w.wait_results(timeout=30)
    assert w.get_status() == "cancelled" and w.is_failed() and w.is_terminated()


def test_clean_env_and_post_script_are_refused_loudly_not_dropped(caplog):
    caplog.set_level(logging.WARNING, logger="iworkflow.workflow")
    Workflow(func=square, clean_env="rm -rf scratch", post_script="upload.sh")
    assert "clean_env='rm -rf scratch' is accepted but not applied" in caplog.text
    assert "post_script='upload.sh' is accepted but not applied" in caplog.text


def test_the_idds_utils_helpers(embedded, capsys):
    from iworkflow.utils import json_dumps, json_loads, perform_workflow, show_relation_map
    from iworkflow.work import run_work_distributed

    wf = Workflow(func=square, name="perform_me", kwargs={"x": 7}, local=True)
    assert perform_workflow(wf) == 49
    assert json_loads(json_dumps({"wf": wf}))["wf"]["name"] == "perform_me"
    assert run_work_distributed(Work(square, args=(5,))) == 25
    show_relation_map([{"work": {"workload_id": 1}, "next_works": [{"work": {"workload_id": 2}}]}])
    assert capsys.readouterr().out == "1\n    2\n"
