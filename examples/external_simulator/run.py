"""An external simulator run as iworkflow jobs: one subprocess per job, killed and reported if it hangs.

Each job writes an input card, runs ``simulator.py`` (a stand-in for any executable: it reads the card and
writes output files) in its own working directory with a timeout, and parses the output files into the
result.  A worker slot runs one job at a time, so at most ``--slots`` simulators run at once.  One run can
be made to hang (``--hang-energy``): it is killed when its timeout expires and reported as a failure.

Run:  python examples/external_simulator/run.py --energies 1,2,5,10,20,50,100 --hang-energy 20
"""
from __future__ import annotations

import argparse
import ctypes
import csv
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from iworkflow import work, workflow
from iworkflow.script import add_runtime_arguments, configure_from_args

logger = logging.getLogger(__name__)

SIMULATOR = str(Path(__file__).resolve().with_name("simulator.py"))
#: signals on which a job kills its simulator and removes its directory before it ends
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


#: how often a job waiting for its simulator checks that its runner's parent (driver or worker) is still there
POLL_SECONDS = 0.2
#: the file in a job's working directory naming the simulator's process (group and session leader)
PID_FILE = "simulator.pid"
PR_SET_PDEATHSIG = 1


class Stopped(Exception):
    """The job was told to stop (a signal), or the process that ran it is gone."""


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` by which the simulator gets SIGKILL when the runner that started it dies, however it dies
    (Linux ``PR_SET_PDEATHSIG``; None elsewhere).  libc is looked up here, not in the forked child."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _raise_stopped(signum: int, _frame) -> None:
    raise Stopped(f"stopped by signal {signal.Signals(signum).name}")


def _wait(proc: subprocess.Popen, timeout: float, parent: int) -> int:
    """The simulator's exit code; raises TimeoutError after ``timeout`` s, Stopped if this job's parent goes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return proc.wait(timeout=min(POLL_SECONDS, max(deadline - time.monotonic(), 0.0)))
        except subprocess.TimeoutExpired:
            if os.getppid() != parent:
                raise Stopped("the driver or worker that ran this job is gone") from None
            if time.monotonic() >= deadline:
                raise TimeoutError from None


@work(map_results=True)
def simulate(energy_gev: float, simulator: str, events: int = 200, layers: int = 30, seed: int = 1,
             work_seconds: float = 1.0, hang: bool = False, timeout: float = 10.0, scan: str = "") -> dict:
    """Run the simulator once in a fresh directory and return its parsed outputs (profile and summary).

    Whatever way the job ends (result, timeout, error, a stop signal, its driver or worker gone), the simulator's
    whole session is killed and the directory removed; if the runner itself is killed outright, the simulator
    dies with it (``PR_SET_PDEATHSIG``), and a driver on the same machine removes the directories of its ``scan``.
    """
    parent = os.getppid()
    if parent == 1:  # the driver died before this job started: nobody wants its result
        raise Stopped("the driver or worker that ran this job is gone")
    workdir = tempfile.mkdtemp(prefix=f"sim-{scan}{energy_gev:g}GeV-")
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, _raise_stopped) for sig in STOP_SIGNALS} if in_main_thread else {}
    proc: subprocess.Popen | None = None
    try:
        card = os.path.join(workdir, "input.card")
        with open(card, "w") as fh:
            fh.write(f"energy_gev = {energy_gev}\nevents = {events}\nlayers = {layers}\nseed = {seed}\n"
                     f"work_seconds = {work_seconds}\nhang = {int(hang)}\n")
        out = os.path.join(workdir, "output")
        # a .py stand-in runs under this job's interpreter; any other executable runs as it is
        command = [sys.executable, simulator] if simulator.endswith(".py") else [simulator]
        with open(os.path.join(workdir, "stdout.txt"), "w") as log:
            # a session of its own: on timeout or stop the whole session goes, children included
            proc = subprocess.Popen([*command, card, out], stdout=log, stderr=subprocess.STDOUT, cwd=workdir,
                                    start_new_session=True, preexec_fn=_die_with_parent())
        Path(workdir, PID_FILE).write_text(str(proc.pid))
        try:
            code = _wait(proc, timeout, parent)
        except TimeoutError:
            raise TimeoutError(f"simulator hung: no exit after {timeout:g} s for {energy_gev:g} GeV, "
                               f"killed (pid {proc.pid})") from None
        if code != 0:
            tail = Path(workdir, "stdout.txt").read_text()[-2000:]
            raise RuntimeError(f"simulator exited with code {code} for {energy_gev:g} GeV: {tail.strip()}")
        return parse_outputs(out)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if proc is not None:
            kill_session(proc.pid)
            proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def kill_session(pid: int, workdir: str | None = None) -> None:
    """SIGKILL the process group (= session) that the simulator ``pid`` leads; nothing if it is gone already.
    With ``workdir``, only if that process still runs there (a pid file may outlive its process)."""
    try:
        if workdir is not None and (os.getsid(pid) != pid or os.readlink(f"/proc/{pid}/cwd") != workdir):
            return
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        pass


def parse_outputs(out: str) -> dict:
    """Read ``run.log`` (key: value lines) and ``profile.csv`` into one dict, with the shower's mean depth."""
    summary: dict = {}
    with open(os.path.join(out, "run.log")) as fh:
        for line in fh:
            key, _, value = line.partition(":")
            summary[key.strip()] = value.strip()
    if summary.get("status") != "OK":
        raise RuntimeError(f"simulator output in {out} does not say status: OK: {summary}")
    with open(os.path.join(out, "profile.csv")) as fh:
        profile = [float(row["mean_gev"]) for row in csv.DictReader(fh)]
    total = sum(profile)
    return {
        "energy_gev": float(summary["energy_gev"]),
        "deposited_gev": float(summary["deposited_gev"]),
        "profile": profile,
        # centre of gravity of the shower in radiation lengths (layer i spans depth i..i+1)
        "mean_depth": sum((i + 0.5) * e for i, e in enumerate(profile)) / total,
        "start": float(summary["start"]),
        "end": float(summary["end"]),
        "pid": int(summary["pid"]),
    }


@workflow(local=True, exclude_source_files=["output"])  # output/ is not shipped to workers
def energy_scan(energies: list[float], simulator: str = SIMULATOR, hang_energy: float | None = None,
                timeout: float = 10.0, events: int = 200, work_seconds: float = 1.0) -> dict:
    """One simulator job per beam energy; returns ``{"runs": {energy: outputs}, "failures": {energy: why}}``."""
    if not energies or any(e <= 0 for e in energies):
        raise ValueError(f"energies must be a non-empty list of positive values in GeV, got {energies}")
    if timeout <= 0:
        raise ValueError(f"timeout must be > 0 s, got {timeout}")
    if not os.path.exists(simulator):
        raise FileNotFoundError(f"simulator {simulator} does not exist")
    entries = [{"energy_gev": float(e), "hang": hang_energy is not None and math.isclose(e, hang_energy)}
               for e in energies]
    # interrupted (Ctrl-C, an error), the driver kills the simulators of this scan still running on this machine
    # and removes their directories (jobs on other machines clean up after themselves)
    scan = f"{uuid.uuid4().hex[:8]}-"
    try:
        results = simulate(simulator=simulator, timeout=timeout, events=events, work_seconds=work_seconds,
                           scan=scan, multi_jobs_kwargs_list=entries)
        runs, failures = {}, {}
        for entry in entries:
            value, details = results.get_result(args=entry, with_details=True)
            if details["status"] == "finished":
                runs[entry["energy_gev"]] = value
            else:
                failures[entry["energy_gev"]] = details["error"]
                logger.warning("%g GeV failed: %s", entry["energy_gev"], details["error"])
    finally:
        for workdir in Path(tempfile.gettempdir()).glob(f"sim-{scan}*"):
            pid = (workdir / PID_FILE).read_text().strip() if (workdir / PID_FILE).exists() else ""
            if pid.isdigit():
                kill_session(int(pid), workdir=str(workdir))
            shutil.rmtree(workdir, ignore_errors=True)
    return {"runs": runs, "failures": failures}


def max_concurrent(runs: dict) -> int:
    """The largest number of simulator processes that were running at the same moment."""
    edges = sorted([(r["start"], 1) for r in runs.values()] + [(r["end"], -1) for r in runs.values()])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def _kind(why: str) -> str:
    """The exception's class name from a job's error text ("builtins.TimeoutError: ..." -> "TimeoutError")."""
    return why.split(":", 1)[0].rsplit(".", 1)[-1]


def plot(scan: dict, path: Path) -> None:
    """Longitudinal shower profiles per energy, and the shower depth against ln E with a straight-line fit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    runs = dict(sorted(scan["runs"].items()))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    colours = plt.cm.plasma(np.linspace(0, 0.85, max(len(runs), 1)))
    for (energy, r), colour in zip(runs.items(), colours):
        left.plot(np.arange(len(r["profile"])) + 0.5, np.array(r["profile"]) / energy, color=colour,
                  label=f"{energy:g} GeV")
    for energy, why in sorted(scan["failures"].items()):  # a failed run is named, not silently left out
        left.plot([], [], ls="none", marker="x", color="tab:red", label=f"{energy:g} GeV: failed ({_kind(why)})")
    left.set_xlabel("depth (radiation lengths)")
    left.set_ylabel("energy fraction per layer")
    left.set_title("mean longitudinal shower profile")
    left.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    if runs:
        e = np.array(list(runs))
        depth = np.array([r["mean_depth"] for r in runs.values()])
        right.plot(np.log(e), depth, "o", label="simulator runs")
        if len(runs) >= 2:
            slope, icpt = np.polyfit(np.log(e), depth, 1)
            xs = np.linspace(np.log(e).min(), np.log(e).max(), 50)
            right.plot(xs, icpt + slope * xs, "-", color="grey", label=f"fit: {slope:.2f} X0 per unit ln E")
    for energy, why in scan["failures"].items():
        right.axvline(math.log(energy), color="tab:red", ls=":", lw=1)
        right.annotate(f"{energy:g} GeV failed ({_kind(why)})", (math.log(energy), 0.05),
                       xycoords=("data", "axes fraction"), fontsize=7, color="tab:red", rotation=90, va="bottom")
    right.set_xlabel("ln(E / GeV)")
    right.set_ylabel("shower centre of gravity (radiation lengths)")
    right.set_title("shower depth grows like ln E")
    right.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--energies", default="1,2,5,10,20,50,100", help="comma-separated beam energies (GeV)")
    parser.add_argument("--hang-energy", type=float, default=None, help="make the run at this energy hang")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds before a simulator run is killed")
    parser.add_argument("--events", type=int, default=200, help="showers per run")
    parser.add_argument("--work-seconds", type=float, default=1.0, help="extra run time of each simulator")
    parser.add_argument("--simulator", default=SIMULATOR, help="the executable (a .py runs under python)")
    add_runtime_arguments(parser, out_dir=Path(__file__).resolve().parent / "output",
                          slots_help="simulators at once (default: one per core)")
    args = parser.parse_args(argv)
    configure_from_args(args, progress_logger=logger)
    try:
        energies = [float(e) for e in args.energies.split(",")]
    except ValueError:
        parser.error(f"--energies must be comma-separated numbers, got {args.energies!r}")

    start = time.monotonic()
    try:
        scan = energy_scan(energies, simulator=args.simulator, hang_energy=args.hang_energy, timeout=args.timeout,
                           events=args.events, work_seconds=args.work_seconds)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    wall = time.monotonic() - start
    args.out.mkdir(parents=True, exist_ok=True)
    plot(scan, args.out / "external_simulator.png")
    (args.out / "external_simulator.json").write_text(json.dumps({**scan, "wall_time_s": wall}, indent=1))
    for energy, r in sorted(scan["runs"].items()):
        print(f"{energy:7g} GeV: deposited {r['deposited_gev']:8.3f} GeV, shower depth {r['mean_depth']:5.2f} X0, "
              f"{r['end'] - r['start']:.1f} s in pid {r['pid']}")
    for energy, why in sorted(scan["failures"].items()):
        print(f"{energy:7g} GeV: FAILED: {why}")
    print(f"{len(scan['runs'])} runs ok, {len(scan['failures'])} failed, at most {max_concurrent(scan['runs'])} "
          f"simulators at once; wall time {wall:.1f} s; plot: {args.out / 'external_simulator.png'}")
    return scan


if __name__ == "__main__":
    main()
