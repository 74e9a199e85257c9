"""Mirrors iDDS's ``main/lib/idds/tests/test_iworkflow/test_asyncresults.py`` with the iworkflow import:
an AsyncResult built on a workflow's context, fed by a second AsyncResult with the same internal id."""
from __future__ import annotations

import pytest
from broker_cleanup import run_prefix

import iworkflow
from iworkflow.asyncresult import AsyncResult
from iworkflow.workflow import Workflow


def driver():
    print("test workflow starts")


def test_an_async_result_on_a_workflow_context_receives_what_a_twin_publishes(embedded):
    wf = Workflow(func=driver, service="idds")
    workflow_context = wf._context

    a_ret = AsyncResult(workflow_context, wait_num=1, timeout=30)
    a_ret.subscribe()
    async_ret = AsyncResult(workflow_context, internal_id=a_ret.internal_id)
    test_result = "AsyncResult test (request_id: %s)" % workflow_context.request_id
    async_ret.publish(test_result)

    assert a_ret.wait_result() == test_result
    assert a_ret.is_all_results_available and a_ret.is_finished


def test_async_results_on_one_context_get_distinct_internal_ids(embedded):
    wf = Workflow(func=driver, service="idds")
    one, two = AsyncResult(wf._context), AsyncResult(wf._context)
    assert one.internal_id != two.internal_id != wf.internal_id


@pytest.mark.rabbitmq
def test_the_results_channel_and_pre_run_work_over_rabbitmq():
    iworkflow.configure(broker="amqp://guest:guest@127.0.0.1:5672/", executor="thread",
                        destination_prefix=run_prefix("t"))
    try:
        wf = Workflow(func=driver, service="idds")
        assert wf.pre_run() is True
        a_ret = AsyncResult(wf._context, wait_num=1, timeout=30)
        a_ret.subscribe()
        AsyncResult(wf._context, internal_id=a_ret.internal_id).publish("over AMQP")
        assert a_ret.wait_result() == "over AMQP"
    finally:
        iworkflow.shutdown()
