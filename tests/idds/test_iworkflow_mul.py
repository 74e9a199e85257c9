"""Mirrors iDDS's ``test_iworkflow/test_iworkflow_mul.py``: a submitted workflow whose driver fans two works
out over ``group_kwargs``, one returning a list, the other (``map_results=True``) a MapResult."""
from __future__ import annotations

from iworkflow.work import work
from iworkflow.workflow import Workflow

GROUP_KWARGS = [{"name": 1, "name1": 2}, {"name": 3, "name1": 4}]


@work
def func(name, name1=None):
    return "test result: %s, %s" % (name, name1)


@work(map_results=True)
def func1(name, name1=None):
    return "test result1: %s, %s" % (name, name1)


def driver():
    ret = func(name="idds", group_kwargs=GROUP_KWARGS)
    ret1 = func1(name="idds", group_kwargs=GROUP_KWARGS)
    return ret, [ret1.get_result(args=kw) for kw in GROUP_KWARGS]


def test_both_fan_outs_of_a_submitted_workflow_come_back(embedded):
    wf = Workflow(func=driver, service="idds")
    wf.queue = "default"
    wf.cloud = "US"
    wf.prepare()
    wf.submit()
    listed, mapped = wf.wait(timeout=120)
    assert listed == ["test result: 1, 2", "test result: 3, 4"]
    assert mapped == ["test result1: 1, 2", "test result1: 3, 4"]
