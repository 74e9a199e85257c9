"""A scenario for long-lived workers: run a workflow, edit a helper module of its source tree, run it again.

The job function lives in a module of the tree and binds the helper as a module global, so a worker
that served run 2 with a cached function, or with the helper module still in ``sys.modules``, returns
run 1's value.  Each job also reports its process id (the same worker serves both runs) and how many
unpacked source trees are on its ``sys.path`` (never more than one).
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

JOBS = '''import fresh_code_helper


def probe(x):
    import os
    import sys

    trees = [p for p in sys.path if os.sep + "unpacked" + os.sep in p]
    return fresh_code_helper.VALUE * x, os.getpid(), len(trees)
'''


def two_runs(tree: Path) -> tuple[list, list]:
    """Run the probe fan-out twice, with ``VALUE = 1`` then ``VALUE = 5``; returns both runs' results."""
    from iworkflow import Workflow, work

    tree.mkdir(parents=True, exist_ok=True)
    (tree / "fresh_code_helper.py").write_text("VALUE = 1\n")
    (tree / "fresh_code_jobs.py").write_text(JOBS)
    sys.path.insert(0, str(tree))
    try:  # as a driver script would, import the job's module (and so the helper) at the top
        probe = work(map_results=True)(importlib.import_module("fresh_code_jobs").probe)

        def driver():
            r = probe(multi_jobs_kwargs_list=[{"x": 1}, {"x": 2}])
            return [r.get_result(args={"x": x}) for x in (1, 2)]

        first = Workflow(driver, source_dir=str(tree)).run()
        (tree / "fresh_code_helper.py").write_text("VALUE = 5\n")
        second = Workflow(driver, source_dir=str(tree)).run()
    finally:
        sys.path.remove(str(tree))
        sys.modules.pop("fresh_code_jobs", None)
        sys.modules.pop("fresh_code_helper", None)
    return first, second


def check(first: list, second: list) -> None:
    """Run 2 saw the edited helper, in a process that served run 1, with one source tree on its path."""
    assert [value for value, _pid, _trees in first] == [1, 2]
    assert [value for value, _pid, _trees in second] == [5, 10], "run 2 must use the edited helper module"
    assert {pid for _v, pid, _t in second} <= {pid for _v, pid, _t in first}, "the same worker serves both runs"
    assert {trees for _v, _p, trees in first + second} == {1}, "exactly one source tree on sys.path"
