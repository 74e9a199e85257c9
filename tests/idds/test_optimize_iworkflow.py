"""Mirrors iDDS's ``test_iworkflow/optimize_iworkflow.py``: a Bayesian-optimisation driver submitted as a
``Workflow(..., init_env=...)``; each iteration fans a ``map_results`` work out over suggested points and
reads each score back with ``get_result(name=None, args=point)``.

Not mirrored: iDDS trains an XGBoost BDT on data under ``/opt/bdt_0409`` inside a Singularity image on CERN
AFS (``init_env='singularity exec ...'``), neither of which exists here.  A toy score replaces the BDT's AUC
and ``init_env='env IDDS_OPTIMIZE_ENV=1'`` stands for the container prefix — and proves the works of the
workflow run behind the workflow's ``init_env``, as iDDS's ``WorkContext.setup()`` does."""
from __future__ import annotations

import os
import random

from iworkflow.utils import get_unique_id_for_dict
from iworkflow.work import work
from iworkflow.workflow import Workflow


def get_initial_parameter():
    return {"eta": (0, 0.1), "max_depth": (0, 50), "subsample": (0.1, 1)}


@work(map_results=True)
def optimize_work(opt_params, retMethod=None, hist=True, saveModel=False, input_weight=None, **kwargs):
    assert os.environ.get("IDDS_OPTIMIZE_ENV") == "1", "the job did not run behind the workflow's init_env"
    return 1.0 - (kwargs["eta"] - 0.05) ** 2 - ((kwargs["max_depth"] - 25) / 50) ** 2 - (kwargs["subsample"] - 0.5) ** 2


def optimize_workflow():
    opt_method = "auc"
    params = {"num_boost_round": 1000}
    opt_params = get_initial_parameter()
    rng = random.Random(7)
    best = None
    for _ in range(2):
        points, group_kwargs = {}, []
        for _ in range(3):
            x_probe = {k: rng.uniform(lo, hi) for k, (lo, hi) in opt_params.items()}
            u_id = get_unique_id_for_dict(x_probe)
            points[u_id] = {"kwargs": x_probe}
            group_kwargs.append(x_probe)
        results = optimize_work(opt_params=params, opt_method=opt_method, hist=True, saveModel=False,
                                input_weight=None, retMethod=opt_method, group_kwargs=group_kwargs)
        for u_id in points:
            points[u_id]["ret"] = results.get_result(name=None, args=points[u_id]["kwargs"])
            if best is None or points[u_id]["ret"] > best["ret"]:
                best = points[u_id]
    return best


def test_the_optimisation_driver_runs_detached_with_its_works_behind_init_env(embedded):
    wf = Workflow(func=optimize_workflow, service="idds", init_env="env IDDS_OPTIMIZE_ENV=1 ")
    wf.queue = "default"
    wf.cloud = "US"
    wf.prepare()
    wf.submit()
    best = wf.wait(timeout=180)
    assert 0 < best["ret"] <= 1 and set(best["kwargs"]) == {"eta", "max_depth", "subsample"}
