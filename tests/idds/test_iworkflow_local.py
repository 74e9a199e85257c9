"""Mirrors iDDS's ``test_iworkflow/test_iworkflow_local.py``: ``@workflow(service='panda', local=True, cloud=...,
queue=...)`` runs the driver here; its ``@work`` call runs as a job.  (iDDS returns a status; iworkflow the
driver's value — defect 4.)"""
from __future__ import annotations

from iworkflow.work import work
from iworkflow.workflow import workflow


@work
def func(name):
    return "test result: %s" % name


@workflow(service="panda", local=True, cloud="US", queue="default")
def local_workflow():
    return func(name="idds")


def test_a_local_workflow_runs_its_work_and_returns_the_value(embedded):
    assert local_workflow() == "test result: idds"
