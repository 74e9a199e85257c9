"""``iworkflow run script.py:func`` runs a workflow function here and prints its value."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from iworkflow.cli import main; main()"]


def test_run_executes_a_workflow_from_a_script_with_json_kwargs():
    out = subprocess.run(CLI + ["run", "examples/toy/run.py:optimise", "--kwargs", '{"iterations": 1, "points": 4}'],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "iteration 1: best of 4" in out.stdout and "'value':" in out.stdout


def test_run_names_a_missing_function():
    out = subprocess.run(CLI + ["run", "examples/toy/run.py:nope"], capture_output=True, text=True, timeout=60,
                         cwd=ROOT)
    assert out.returncode != 0 and "has no attribute 'nope'" in out.stderr


RESUMABLE = '''
import sys
from iworkflow import work, workflow

@work(map_results=True)
def record(x, log):
    with open(log, "a") as fh:
        fh.write(f"{x}\\n")
    return x * x

@workflow(local=True)
def squares(log):
    r = record(log=log, group_kwargs=[{"x": x} for x in range(3)])
    return [r.get_result(args={"x": x}) for x in range(3)]
'''


def test_run_resume_reuses_the_last_runs_results_and_a_plain_run_runs_everything(tmp_path):
    (tmp_path / "project").mkdir()
    script, log = tmp_path / "project" / "resumable.py", tmp_path / "ran.log"  # the log is not in the sources
    script.write_text(RESUMABLE)
    env = {**os.environ, "IWORKFLOW_HOME": str(tmp_path / "home")}

    def run(*extra):
        out = subprocess.run(CLI + ["run", f"{script}:squares", "--kwargs", json.dumps({"log": str(log)}), *extra],
                             capture_output=True, text=True, timeout=120, env=env)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "[0, 1, 4]"
        return log.read_text().split()

    assert len(run()) == 3
    assert len(run("--resume")) == 3, "the resumed run reused all three results"
    assert len(run()) == 6, "a plain run runs every job again"
