"""`iworkflow status|logs|cancel|server` as a user runs them: subprocesses talking real HTTP."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest

import iworkflow


def cli(*args: str, token: str = "", check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, IWORKFLOW_TOKEN=token)
    env.pop("IWORKFLOW_SERVER_URL", None)
    proc = subprocess.run([sys.executable, "-c", "from iworkflow.cli import main; main()", *args],
                          capture_output=True, text=True, env=env, timeout=60, check=False)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def run_two_step_workflow() -> str:
    @iworkflow.work(map_results=True)
    def check(n):
        if n % 2:
            raise ValueError(f"odd input {n}")
        return n

    @iworkflow.work
    def report(results):
        return len(results.get_all_results())

    holder = {}

    @iworkflow.workflow(local=True, name="cli-demo")
    def demo():
        holder["id"] = iworkflow.current_workflow().internal_id
        return report(results=check(multi_jobs_kwargs_list=[{"n": n} for n in range(4)]))

    assert demo() == 2
    return holder["id"]


def test_status_prints_the_tree_and_logs_show_the_error(server):
    wf_id = run_two_step_workflow()
    deadline = time.monotonic() + 10
    while httpx.get(f"{server.url}/api/workflows/{wf_id}").json().get("status") != "subfinished":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    server.flush()

    out = cli("status", wf_id[:8], "--server", server.url).stdout
    lines = out.splitlines()
    assert lines[0].startswith(f"workflow cli-demo  {wf_id}  subfinished  (2 works, 5 jobs: 3 finished, 2 failed)")
    check_line = next(i for i, line in enumerate(lines) if " work check " in line)
    assert lines[check_line].startswith("├── work check ")
    assert lines[check_line].endswith("subfinished  4 jobs: 2 finished, 2 failed")
    failed = [line for line in lines[check_line + 1:check_line + 3]]
    assert all(line.startswith("│   ") and " failed job " in line for line in failed)
    assert sorted(re.search(r"ValueError: (odd input \d)", line).group(1) for line in failed) == \
        ["odd input 1", "odd input 3"]
    assert lines[-1].startswith("└── work report ") and lines[-1].endswith("finished  1 job: 1 finished")

    listing = cli("status", "--server", server.url).stdout
    assert wf_id in listing and "cli-demo" in listing

    job_id = re.search(r"\(id (\d+),", failed[0]).group(1)
    log = cli("logs", job_id, "--server", server.url).stdout
    assert "job_failed" in log and "Traceback (most recent call last)" in log and "ValueError: odd input" in log


def test_cli_errors_are_clear(server):
    proc = cli("status", "nope", "--server", server.url, check=False)
    assert proc.returncode == 1 and "no workflow with id 'nope'" in proc.stderr
    proc = cli("status", check=False)
    assert proc.returncode == 2 and "no server URL" in proc.stderr
    proc = cli("cancel", "whatever", "--server", server.url, check=False)
    assert proc.returncode == 1 and "HTTP 401" in proc.stderr and "bearer token" in proc.stderr


def test_cancel_via_cli(server):
    wf_id = run_two_step_workflow()
    deadline = time.monotonic() + 10
    while httpx.get(f"{server.url}/api/workflows/{wf_id}").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    out = cli("cancel", wf_id, "--server", server.url, token=server.token).stdout
    assert out.startswith(f"workflow {wf_id} ") and "unfinished jobs cancelled" in out


def test_server_command_serves_and_stops_on_sigterm(tmp_path):
    env = dict(os.environ, IWORKFLOW_HOME=str(tmp_path), IWORKFLOW_TOKEN="t0k3n")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from iworkflow.cli import main; main()", "server", "--port", "0",
         "--db", f"sqlite:///{tmp_path / 'srv.db'}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        match = re.search(r"listening on (http://\S+) ", line)
        assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
        url = match.group(1)
        assert httpx.get(f"{url}/api/health", timeout=10).json()["ok"] is True
        assert httpx.get(f"{url}/api/workflows", timeout=10).json() == []
        assert "iworkflow" in httpx.get(url, timeout=10).text
        assert (tmp_path / "srv.db").is_file(), "the server created and migrated its database"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def _ended(server, wf_id: str) -> None:
    deadline = time.monotonic() + 20
    while httpx.get(f"{server.url}/api/workflows/{wf_id}").json().get("status") != "subfinished":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    server.flush()


def test_logs_takes_the_short_ids_status_prints(server):
    wf_id = run_two_step_workflow()
    _ended(server, wf_id)
    lines = cli("status", wf_id[:8], "--server", server.url).stdout.splitlines()
    failed = next(line for line in lines if " failed job " in line)
    key = re.search(r" failed job (\S+) ", failed).group(1)
    work = re.search(r"work check +(\S+) ", next(line for line in lines if " work check " in line)).group(1)
    report = re.search(r"work report +(\S+) ", lines[-1]).group(1)
    for ref in (key, f"{work}:{key}"):
        out = cli("logs", ref, "--server", server.url).stdout
        assert out.startswith(f"job {key}") and "ValueError: odd input" in out, ref
    assert "finished, attempt 1" in cli("logs", report, "--server", server.url).stdout, "a work with one job"
    proc = cli("logs", work, "--server", server.url, check=False)
    assert proc.returncode == 1 and "has several jobs" in proc.stderr


def test_logs_tail_counts_lines(server):
    wf_id = run_two_step_workflow()
    _ended(server, wf_id)
    job_id = httpx.get(f"{server.url}/api/jobs", params={"status": "failed"}).json()[0]["id"]
    full = cli("logs", str(job_id), "--server", server.url, "--tail", "0").stdout.splitlines()
    assert len(full) > 8 and any(line.startswith("Traceback") for line in full)
    for n in (1, 3, 8):
        assert cli("logs", str(job_id), "--server", server.url, "--tail", str(n)).stdout.splitlines() == full[-n:]


def test_status_watch_returns_once_the_workflow_ended(server):
    wf_id = run_two_step_workflow()
    _ended(server, wf_id)
    out = cli("status", wf_id, "--watch", "--interval", "0.2", "--server", server.url).stdout
    assert out.startswith(f"workflow cli-demo  {wf_id}  subfinished")


def test_workers_lists_what_workers_reported(server):
    from iworkflow.messages import EVENTS_TOPIC, Event, encode_event

    assert cli("workers", "--server", server.url).stdout.strip() == "no workers reported"
    runtime = iworkflow.get_runtime()
    runtime.bus.broadcast(EVENTS_TOPIC, encode_event(Event("worker_heartbeat", data={
        "worker": "node7:123", "queue": "gpu", "slots": 4, "running": 3, "held": 5, "served": 10}), runtime.secret))
    server.flush()
    out = cli("workers", "--server", server.url).stdout
    assert out.startswith("node7:123  alive    queue gpu  slots 4  running 3  prefetched 5  served 10")


@pytest.mark.postgres
def test_server_on_a_missing_postgres_database_says_how_to_create_it(tmp_path):
    env = dict(os.environ, IWORKFLOW_HOME=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", "from iworkflow.cli import main; main()", "server", "--port", "0",
                           "--db", "postgresql+psycopg://127.0.0.1:5432/iwf_missing_db_for_test"],
                          capture_output=True, text=True, env=env, timeout=60, check=False)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "createdb -h 127.0.0.1 -p 5432 iwf_missing_db_for_test" in errors[0]
