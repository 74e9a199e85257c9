"""Mirrors iDDS's ``test_iworkflow/test_iworkflow.py``: a ``Workflow`` object built from a driver function,
given a queue and cloud, serialised to JSON, prepared and submitted (its driver then runs as a job)."""
from __future__ import annotations

from iworkflow.utils import json_dumps, json_loads
from iworkflow.work import work
from iworkflow.workflow import Workflow


@work
def func(name):
    return "test result: %s" % name


@work
def get_params():
    return [i for i in range(10)]


def driver():
    return func(name="idds")


def driver_multiple_work():
    list_params = get_params()
    return func(list_params)


def test_a_workflow_prepared_and_submitted_runs_its_driver_as_a_job(embedded):
    wf = Workflow(func=driver, service="idds")
    wf.queue = "default"  # iDDS: a PanDA queue; here the broker job queue (the embedded default ignores it)
    wf.cloud = "US"

    wf_json = json_dumps(wf)
    assert json_loads(wf_json)["name"] == wf.name

    wf.prepare()
    req_id = wf.submit()
    assert req_id == wf.request_id
    assert wf.wait(timeout=120) == "test result: idds"


def test_a_work_result_passed_positionally_to_the_next_work(embedded):
    wf = Workflow(func=driver_multiple_work, service="idds", local=True)
    assert wf.run() == "test result: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]"
