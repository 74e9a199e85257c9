"""Mirrors iDDS's ``test_iworkflow/test_iworkflow1.py``: a bare ``@workflow`` driver, called, is submitted
as a job and returns at once; the plain functions beside it keep their names and signatures."""
from __future__ import annotations

import inspect

from iworkflow.work import work
from iworkflow.workflow import Workflow, workflow


@work
def func(name):
    return "test result: %s" % name


@workflow
def workflow1():
    print("test workflow starts")
    return "workflow1 done"


def test_a_bare_workflow_call_returns_the_submitted_workflow_at_once(embedded):
    wf = workflow1()
    assert isinstance(wf, Workflow) and wf.name.startswith("workflow1_")
    assert wf.wait(timeout=120) == "workflow1 done"


def test_decorated_functions_keep_name_module_and_signature():
    assert workflow1.__name__ == "workflow1" and func.__name__ == "func"
    assert inspect.getmodule(func).__name__ == __name__
    assert str(inspect.signature(func)) == "(name)"
