"""Mirrors iDDS's ``test_iworkflow/test_iworkflow_local_mul.py``: in a local workflow, one call with a call
kwarg and ``multi_jobs_kwargs_list`` entries that override it: five jobs, results in list order."""
from __future__ import annotations

from iworkflow.work import work
from iworkflow.workflow import workflow


@work
def func(name):
    return "test result: %s" % name


@workflow(service="panda", local=True, cloud="US", queue="default")
def local_workflow():
    return func(name="idds", multi_jobs_kwargs_list=[{"name": "idds1"}, {"name": "idds2"}, {"name": "idds3"},
                                                      {"name": "idds4"}, {"name": "idds5"}])


def test_multi_jobs_kwargs_entries_override_the_call_kwarg_in_order(embedded):
    assert local_workflow() == [f"test result: idds{i}" for i in range(1, 6)]
