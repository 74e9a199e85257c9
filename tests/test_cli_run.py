"""``iworkflow run script.py:func`` runs a workflow function here and prints its value."""
from __future__ import annotations

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
