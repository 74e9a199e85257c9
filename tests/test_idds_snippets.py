"""iDDS iWorkflow code runs unchanged but for the import (``idds.iworkflow`` -> ``iworkflow``)."""
from __future__ import annotations

import textwrap

import pytest

SNIPPETS = {
    "hpo_map_results": """
        from iworkflow.workflow import workflow   # was: from idds.iworkflow.workflow import workflow
        from iworkflow.work import work           # was: from idds.iworkflow.work import work

        @work(map_results=True)
        def optimize_work(opt_params, opt_method=None, hist=True, saveModel=False, input_weight=None, **kwargs):
            return {"method": opt_method, "score": opt_params["lr"] * 10 + kwargs.get("depth", 0)}

        @workflow(service='panda', local=True, cloud='US', queue='BNL_OSG_2', init_env=None)
        def optimize_workflow():
            params = {"lr": 0.1}
            multi_jobs_kwargs_list = [{"depth": d} for d in (1, 2, 3)]
            ret = optimize_work(opt_params=params, opt_method='evolution', hist=True, saveModel=False,
                                input_weight=None, retMethods=['ks', 'cov'],
                                multi_jobs_kwargs_list=multi_jobs_kwargs_list)
            return [ret.get_result(args=kw)["score"] for kw in multi_jobs_kwargs_list]

        RESULT = optimize_workflow()
        EXPECTED = [2.0, 3.0, 4.0]
    """,
    "plain_fan_out_and_single_call": """
        from iworkflow.workflow import workflow
        from iworkflow.work import work

        @work
        def test_func(name, idds_method, idds_group_kwargs):
            return f"{name}:{idds_method}:{idds_group_kwargs['k']}"

        @work
        def test_func1(name, idds_method, idds_group_kwargs):
            return name.upper()

        @workflow(local=True)
        def test_workflow():
            print("test workflow starts")
            ret = test_func(name='idds', multi_jobs_kwargs_list=[
                {'idds_method': 'test_workflow_func1', 'idds_group_kwargs': {'k': 1}},
                {'idds_method': 'test_workflow_func2', 'idds_group_kwargs': {'k': 2}}])
            ret1 = test_func1(name='idds', idds_method='m', idds_group_kwargs={})
            return ret, ret1

        RESULT = test_workflow()
        EXPECTED = (["idds:test_workflow_func1:1", "idds:test_workflow_func2:2"], "IDDS")
    """,
    "classes_and_async_result": """
        from iworkflow.workflow import Workflow
        from iworkflow.work import Work
        from iworkflow.asyncresult import AsyncResult
        from iworkflow import get_unique_id_for_dict

        def scale(x, factor=2):
            return x * factor

        wf = Workflow(func=None, name="manual_wf")
        with wf:
            w = Work(func=scale, multi_jobs_kwargs_list=[{"x": 1}, {"x": 5}], map_results=True)
            w.submit()
            ret = w.wait_results(timeout=120)
        assert isinstance(w.async_result, AsyncResult) and w.is_finished()
        RESULT = (ret.get_result(args={"x": 5}), ret.get_result(key=get_unique_id_for_dict({"x": 1})))
        EXPECTED = (10, 2)
    """,
}


@pytest.mark.parametrize("name", sorted(SNIPPETS))
def test_idds_snippet_runs_with_only_the_import_changed(embedded, name):
    namespace: dict = {"__name__": f"idds_snippet_{name}"}
    exec(compile(textwrap.dedent(SNIPPETS[name]), f"<{name}>", "exec"), namespace)
    assert namespace["RESULT"] == namespace["EXPECTED"]
