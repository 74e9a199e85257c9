"""The job runner: init_env prefixes, source trees on sys.path, walltime, captured output."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import psutil
import pytest
from waiting import wait_until

from iworkflow import serialization, work
from iworkflow.messages import JobPayload, SourceRef, decode_payload, encode_payload
from iworkflow.source_cache import SourceStore

SECRET = os.environ["IWORKFLOW_SECRET"].encode()


@work(init_env="env FOO=from-init-env")
def read_foo():
    return os.environ.get("FOO")


@work(init_env="nice -n 5")
def niceness():
    return os.nice(0)


@work(init_env="env SLEEP=1", max_walltime=1)
def overrun():
    import time

    time.sleep(30)


@work
def chatty_failure():
    print("about to fail: step 7 of 9")
    raise ValueError("diverged")


def test_init_env_env_prefix_sets_the_job_environment(embedded):
    assert read_foo() == "from-init-env"


def test_init_env_nice_prefix_runs_the_job_niced(embedded):
    assert niceness() == os.nice(0) + 5


def test_a_job_past_max_walltime_is_killed_and_fails_saying_so(embedded):
    with pytest.raises(TimeoutError, match="max_walltime=1"):
        overrun()


@work(max_walltime=1)
def sleeps_past_walltime():
    import time

    time.sleep(30)


def test_a_job_past_max_walltime_on_the_pool_path_is_killed_and_fails_saying_so(embedded):
    """No ``init_env``: the job runs in a long-lived pool process, which is killed (and replaced) at the walltime."""
    import time

    started = time.monotonic()
    with pytest.raises(TimeoutError, match="max_walltime=1"):
        sleeps_past_walltime()
    assert time.monotonic() - started < 5
    assert read_foo() == "from-init-env", "the pool keeps serving"


def test_a_failed_jobs_error_carries_the_tail_of_its_output(embedded):
    from iworkflow import Work

    w = Work(chatty_failure.__wrapped__, map_results=True)
    w.submit()
    w.wait_results(timeout=60)
    outcome = next(iter(w.async_result.outcomes.values()))
    assert "step 7 of 9" in outcome.error.output_tail


def _job(func, source: SourceRef | None, args=(), kwargs=None) -> bytes:
    fb = serialization.dumps_function(func)
    payload = JobPayload(func=fb, func_digest=hashlib.sha256(fb).hexdigest(),
                         args=serialization.dumps((args, kwargs or {})), source=source)
    return encode_payload("job", payload, SECRET, workflow_id="wf", work_id="w", job_key="k")


def _run_once(data: bytes):
    proc = subprocess.run([sys.executable, "-m", "iworkflow.runner", "once"], input=data, capture_output=True,
                          timeout=60, env={**os.environ, "IWORKFLOW_SECRET": SECRET.decode()})
    assert proc.returncode == 0, proc.stderr.decode()
    return decode_payload(proc.stdout, SECRET, "result")[1]


def test_the_runner_puts_the_shipped_source_tree_on_sys_path(tmp_path):
    src = tmp_path / "project"
    src.mkdir()
    (src / "shipped_helpers_mod.py").write_text("def answer():\n    return 'from the source cache'\n")
    store = SourceStore(tmp_path / "store")
    digest = store.add_tree(src)

    def uses_helper():
        import shipped_helpers_mod

        return shipped_helpers_mod.answer(), shipped_helpers_mod.__file__

    result = _run_once(_job(uses_helper, SourceRef(digest, store.location)))
    value, path = serialization.loads(result.value)
    assert value == "from the source cache"
    assert path.startswith(str(store.path / "unpacked" / digest))


def test_the_runner_reports_a_missing_source_as_a_job_failure(tmp_path):
    result = _run_once(_job(lambda: 1, SourceRef("a" * 64, str(tmp_path / "empty"))))
    assert not result.ok and "SourceUnavailable" in result.error.type_name and "source_store" in result.error.message


def test_the_runner_refuses_a_job_signed_with_another_secret():
    fb = serialization.dumps(lambda: 1)
    payload = JobPayload(func=fb, func_digest="x", args=serialization.dumps(((), {})))
    forged = encode_payload("job", payload, b"attacker", job_key="k")
    proc = subprocess.run([sys.executable, "-m", "iworkflow.runner", "once"], input=forged, capture_output=True,
                          timeout=60, env={**os.environ, "IWORKFLOW_SECRET": SECRET.decode()})
    assert proc.returncode != 0 and b"signature does not match" in proc.stderr


@work(init_env="echo shell-prefix >/dev/null;", max_walltime=1)
def overrun_behind_a_shell(pid_file):
    import time

    with open(pid_file, "w") as fh:
        fh.write(str(os.getpid()))
    time.sleep(30)


def test_walltime_kills_the_job_even_behind_a_shell_prefix(embedded, tmp_path):
    pid_file = tmp_path / "pid"
    with pytest.raises(TimeoutError):
        overrun_behind_a_shell(str(pid_file))
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@work(init_env="true;", max_walltime=1)
def overrun_leaving_a_daemon(pid_file):
    import subprocess
    import time

    daemon = subprocess.Popen(["sleep", "300"], start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    with open(pid_file, "w") as fh:
        fh.write(str(daemon.pid))
    time.sleep(30)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_walltime_behind_init_env_kills_what_the_job_started_in_a_session_of_its_own(threaded, tmp_path):
    """The thread executor runs an ``init_env`` job in a subprocess of the driver, where no runner ends what a job
    leaves running: the walltime kills the job's whole process tree, not only its process group."""
    pid_file = tmp_path / "pid"
    with pytest.raises(TimeoutError, match="max_walltime=1"):
        overrun_leaving_a_daemon(str(pid_file))
    daemon = int(pid_file.read_text())
    wait_until(lambda: _alive(daemon), lambda alive: not alive, what="the job's daemon killed")
