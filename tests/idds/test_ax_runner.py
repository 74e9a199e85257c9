"""An Ax/MOBO-style runner as published detector-design projects write them against iDDS, with only the
import changed: a registered local workflow (``return_workflow=True``, ``pre_run()``, ``store()``,
``prepare()``, ``submit()``), then per trial batch a ``return_work`` work over positional list entries with
torch-free objects in ``pre_kwargs``, polled with ``is_terminated()`` / ``is_finished(status)``, and every
trial whose ``get_result`` came back ``None`` submitted again."""
from __future__ import annotations

import dataclasses
import datetime
import time
from pathlib import Path

import numpy as np

from iworkflow.work import work as work_def
from iworkflow.workflow import workflow as workflow_def


@dataclasses.dataclass(frozen=True)
class DetectorConfig:
    """What a MOBO runner passes to every trial besides the design point (torch-free: numpy and plain data)."""

    name: str
    layer_weights: np.ndarray
    flaky_marker: str


def evaluate_design(thickness, radius, config: DetectorConfig = None):
    """Two objectives of a design point; the point (2.0, 1.5) crashes on its first attempt."""
    marker = Path(config.flaky_marker)
    if (thickness, radius) == (2.0, 1.5) and not marker.exists():
        marker.write_text("crashed once")
        raise RuntimeError("simulation crashed (segfault in the geometry step)")
    return {"resolution": float(config.layer_weights @ [thickness, radius]), "cost": thickness * radius}


def empty_workflow_func():
    pass


class AxStyleRunner:
    """The shape of the published PanDA/iDDS runners: one workflow per experiment, one work per trial batch."""

    def __init__(self, name: str, source_dir: str, config: DetectorConfig):
        self.name = name
        self.source_dir = source_dir
        self.config = config
        self.workflow = None
        self.submissions = 0

    def submit_workflow(self):
        if self.workflow is None:
            workflow_name = f"{self.name}_{datetime.datetime.now().strftime('%Y%m%d_%H_%M_%S')}"
            workflow = workflow_def(func=empty_workflow_func, name=workflow_name, service="panda", cloud="US",
                                    queue="BNL_PanDA_1", init_env=None, source_dir=self.source_dir,
                                    source_dir_parent_level=0, exclude_source_files=[r".*\.root", "outputs"],
                                    max_walltime=3600, core_count=1, total_memory=2000, enable_separate_log=True,
                                    local=True, return_workflow=True)()
            assert workflow.pre_run(), "AsyncResult test failed"
            workflow.store()
            workflow.prepare()
            req_id = workflow.submit()
            if not req_id:
                raise RuntimeError(f"failed to submit workflow for experiment {workflow_name}")
            self.workflow = workflow
        return self.workflow

    def run_trials(self, trials: list[list[float]], poll_interval: float = 0.05):
        workflow = self.submit_workflow()
        work_name = f"{self.name}.batch{self.submissions}.evaluate_design"
        self.submissions += 1
        work = work_def(func=evaluate_design, workflow=workflow, return_work=True, map_results=True,
                        name=work_name, pre_kwargs={"config": self.config},
                        log_dataset_name=f"{work_name}.log/")(multi_jobs_kwargs_list=trials)
        tf_id = work.submit()
        if not tf_id:
            raise RuntimeError(f"failed to submit {work_name}")
        work.init_async_result()
        while not work.is_terminated():
            time.sleep(poll_interval)
        status = work.get_status()
        results = work.get_results()
        return status, work.is_finished(status), results

    def optimise(self, trials: list[list[float]], max_rounds: int = 3):
        values, pending, history = {}, list(trials), []
        for _ in range(max_rounds):
            if not pending:
                break
            status, finished, results = self.run_trials(pending)
            history.append((status, finished, dict(results.get_failures())))
            retry = []
            for trial in pending:
                value = results.get_result(args=trial)
                if value is None:
                    retry.append(trial)
                else:
                    values[tuple(trial)] = value
            pending = retry
        return values, pending, history


def test_an_ax_style_runner_retries_the_trials_whose_result_came_back_none(embedded, tmp_path):
    (tmp_path / "runner.py").write_text("# the experiment's code\n")
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "big.root").write_bytes(b"\0" * 1024)
    config = DetectorConfig("epic-barrel", np.array([0.5, 2.0]), str(tmp_path / "flaky.marker"))
    runner = AxStyleRunner("mobo_epic", str(tmp_path), config)
    trials = [[1.0, 1.0], [2.0, 1.5], [3.0, 0.5]]

    values, unresolved, history = runner.optimise(trials)

    assert not unresolved and runner.submissions == 2
    assert values == {(1.0, 1.0): {"resolution": 2.5, "cost": 1.0}, (2.0, 1.5): {"resolution": 4.0, "cost": 3.0},
                      (3.0, 0.5): {"resolution": 2.5, "cost": 1.5}}
    (first_status, first_finished, first_failures), (second_status, second_finished, _) = history
    assert (first_status, first_finished) == ("subfinished", False) and (second_status, second_finished) == (
        "finished", True)
    [failure] = first_failures.values()
    assert "segfault in the geometry step" in failure["error"] and "evaluate_design" in failure["traceback"]
    stored = Path(embedded.settings.home, "contexts", f"{runner.workflow.name}.json")
    assert stored.is_file() and runner.workflow.prepared
