"""The driver's progress bars: drawn per work on a terminal, absent from logs and pipes, and switchable."""
from __future__ import annotations

import os
import pty
import subprocess
import sys
import textwrap

import pytest

from iworkflow import progress
from iworkflow.errors import ConfigurationError

DRIVER = textwrap.dedent('''
    import time
    import iworkflow

    iworkflow.configure(broker="memory://", executor="thread", slots=4)

    @iworkflow.work
    def square(x):
        time.sleep(1.5)
        return x * x

    @iworkflow.workflow(local=True, name="progress-demo")
    def flow():
        return square(multi_jobs_kwargs_list=[{"x": i} for i in range(3)])

    print("result", flow(), flush=True)
''')


def run_driver(stderr_on_terminal: bool, **env: str) -> tuple[str, str]:
    """Run the driver in a fresh interpreter; returns (stdout, stderr) with stderr on a pty or a pipe."""
    environ = {k: v for k, v in os.environ.items() if k != "IWORKFLOW_PROGRESS"} | env
    if not stderr_on_terminal:
        done = subprocess.run([sys.executable, "-c", DRIVER], capture_output=True, text=True, env=environ, timeout=120,
                              check=True)
        return done.stdout, done.stderr
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, stderr=slave, env=environ, text=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    out = proc.stdout.read()
    assert proc.wait(timeout=120) == 0
    return out, b"".join(chunks).decode(errors="replace")


def test_a_bar_per_work_is_drawn_when_stderr_is_a_terminal():
    out, err = run_driver(stderr_on_terminal=True)
    assert "result [0, 1, 4]" in out
    assert "square" in err and "3/3" in err, err[-2000:]


def test_no_bar_is_written_to_a_pipe():
    out, err = run_driver(stderr_on_terminal=False)
    assert "result [0, 1, 4]" in out
    assert "3/3" not in err and "━" not in err, err[-2000:]


def test_progress_off_hides_the_bar_on_a_terminal():
    out, err = run_driver(stderr_on_terminal=True, IWORKFLOW_PROGRESS="off")
    assert "result [0, 1, 4]" in out
    assert "3/3" not in err, err[-2000:]


def test_progress_on_draws_the_bar_into_a_pipe():
    out, err = run_driver(stderr_on_terminal=False, IWORKFLOW_PROGRESS="on")
    assert "result [0, 1, 4]" in out
    assert "square" in err and "3/3" in err, err[-2000:]


def test_an_unknown_progress_setting_is_refused_naming_the_choices():
    with pytest.raises(ConfigurationError, match="progress='sometimes' must be one of auto, on, off"):
        progress.enabled("sometimes")
