"""The README's main command: the toy optimisation loop runs end to end and prints the best point."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_toy_loop_runs_three_iterations_of_eight_points_and_prints_the_best():
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "toy" / "run.py")], capture_output=True,
                         text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert len(re.findall(r"^iteration \d: best of 8", out.stdout, re.M)) == 3
    best = re.search(r"best point: x=(\S+) y=(\S+) f=(\S+) \(24 jobs", out.stdout)
    assert best, out.stdout
    x, y, f = map(float, best.groups())
    assert abs(f - ((1 - x) ** 2 + 100 * (y - x * x) ** 2)) < 1e-3
