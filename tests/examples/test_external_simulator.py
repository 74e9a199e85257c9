"""The external-simulator example: subprocess per job, parsed outputs, a hung run killed and reported."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[2] / "examples" / "external_simulator" / "run.py"


@pytest.fixture(scope="module")
def sim(load_example):
    return load_example("external_simulator")


def test_hung_run_is_killed_and_reported_while_the_others_finish(embedded, sim):
    # the timeout leaves the other runs (a Python start and 0.2 s each) ample time on a loaded machine
    scan = sim.energy_scan([1.0, 10.0, 100.0], hang_energy=10.0, timeout=8.0, events=50, work_seconds=0.2)
    assert sorted(scan["runs"]) == [1.0, 100.0]
    why = scan["failures"][10.0]
    assert "TimeoutError" in why and "simulator hung" in why and "killed" in why
    pid = int(re.search(r"pid (\d+)", why).group(1))
    with pytest.raises(ProcessLookupError):  # killed and reaped, not left running
        os.kill(pid, 0)
    # the parsed outputs carry the physics: energy is contained, and showers get deeper with energy
    for energy, run in scan["runs"].items():
        assert run["deposited_gev"] == pytest.approx(energy, rel=0.03)
        assert len(run["profile"]) == 30 and run["end"] > run["start"]
    assert scan["runs"][100.0]["mean_depth"] > scan["runs"][1.0]["mean_depth"] + 3


def test_at_most_one_simulator_per_worker_slot(embedded, sim):
    scan = sim.energy_scan([1.0, 2.0, 5.0, 10.0, 20.0], timeout=30.0, events=20, work_seconds=0.5)
    assert len(scan["runs"]) == 5 and not scan["failures"]
    assert sim.max_concurrent(scan["runs"]) <= 2  # the fixture gives the local executor two slots
    assert len({r["pid"] for r in scan["runs"].values()}) == 5  # a fresh simulator process per job


def test_simulator_error_exit_is_reported_with_its_output(embedded, sim):
    scan = sim.energy_scan([0.001, 5.0], timeout=30.0, events=10, work_seconds=0.0)
    assert list(scan["runs"]) == [5.0]
    why = scan["failures"][0.001]
    assert "exited with code 1" in why and "must exceed the critical energy" in why


def test_bad_input_is_refused(embedded, sim, tmp_path):
    with pytest.raises(ValueError, match="positive"):
        sim.energy_scan([])
    with pytest.raises(ValueError, match="timeout"):
        sim.energy_scan([1.0], timeout=0)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sim.energy_scan([1.0], simulator=str(tmp_path / "missing"))


def test_command_line_writes_plot_and_reports_the_hung_run(run_example, tmp_path):
    out = run_example("external_simulator", "--energies", "1,10,100", "--hang-energy", "10", "--timeout", "8",
                      "--events", "30", "--work-seconds", "0.1", "--slots", "2", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert re.search(r"10 GeV: FAILED: builtins.TimeoutError: simulator hung", out.stdout), out.stdout
    assert "2 runs ok, 1 failed" in out.stdout
    assert (tmp_path / "external_simulator.png").stat().st_size > 20_000


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _wait_until(condition, what: str, limit: float = 120.0):
    """Poll ``condition`` until it returns something true; the limit only stops a broken run from hanging."""
    deadline = time.monotonic() + limit
    while not (value := condition()):
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)
    return value


def _hung_simulator_pid(tmp: Path) -> int:
    pid_file = _wait_until(lambda: next(tmp.glob("sim-*20GeV-*/output/pid"), None), "the hung simulator to start")
    return int(_wait_until(lambda: pid_file.read_text().strip(), "its pid"))


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "driver-killed"])
def test_interrupted_driver_leaves_no_simulator_and_no_directory(tmp_path, how):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    driver = subprocess.Popen(
        [sys.executable, str(RUN), "--energies", "1,20", "--hang-energy", "20", "--timeout", "600", "--events", "10",
         "--work-seconds", "0", "--slots", "2", "--out", str(tmp_path / "out")],
        env={**os.environ, "TMPDIR": str(tmp)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        pid = _hung_simulator_pid(tmp)
        assert _alive(pid)
        driver.send_signal(how)
        driver.wait(timeout=120)
        _wait_until(lambda: not _alive(pid), f"simulator pid {pid} to be gone")
        _wait_until(lambda: not any(tmp.glob("sim-*")), "the simulator's directory to be removed")
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
