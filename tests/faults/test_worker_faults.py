"""Jobs that attack or trip up the worker and its runners, on real brokers and real ``iworkflow worker`` processes.

Each test is one of the failures found by probing the worker as an adversary and as an unlucky user would
(issue 16): unpickling that kills the process, forks returning into the runner, walltimes, children left
behind, exceptions that cannot be printed, replayed messages, archive bombs, passwords on the command line,
an unbounded dead-letter queue.  Broker restarts and lost consumers are in ``test_broker_restart.py``.
"""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import psutil
import pytest
from test_source_cache import zeros_tarball

from iworkflow import Work, serialization, work
from iworkflow.bus import connect
from iworkflow.config import load_settings
from iworkflow.errors import JobLostError, RemoteError
from iworkflow.messages import JobPayload, SourceRef, decode_payload, encode_payload, jobs_destination
from iworkflow.source_cache import SourceStore

from .conftest import BOTH, CLI, RABBIT, Cluster, capture_dispatched, wait_for

pytestmark = pytest.mark.timeout(120)


# --- 1. unpickling that kills the process --------------------------------------------------------------
class ExitsWhenUnpickled:
    """A job function whose unpickling ends the process that unpickles it (``os._exit(7)``)."""

    def __reduce__(self):
        return os._exit, (7,)

    def __call__(self):
        return "never"


class CrashesWhenUnpickled:
    """A job function whose unpickling makes the process that unpickles it crash (SIGSEGV)."""

    def __reduce__(self):
        import ctypes

        return ctypes.string_at, (0,)

    def __call__(self):
        return "never"


@work
def plus_one(x: int) -> int:
    return x + 1


@pytest.mark.parametrize("cluster, bomb, code", [
    pytest.param("rabbitmq", ExitsWhenUnpickled, 7, marks=pytest.mark.rabbitmq, id="rabbitmq-exit"),
    pytest.param("activemq", ExitsWhenUnpickled, 7, marks=pytest.mark.activemq, id="activemq-exit"),
    pytest.param("rabbitmq", CrashesWhenUnpickled, -signal.SIGSEGV, marks=pytest.mark.rabbitmq, id="rabbitmq-segv"),
], indirect=["cluster"])
def test_a_job_that_kills_whoever_unpickles_it_fails_once_and_every_worker_survives(cluster: Cluster, bomb, code):
    """Workers never unpickle a job (what they need is in the signed header): only its runner dies, the job
    fails with JobLostError naming the exit code, once, and both workers keep serving."""
    workers = [cluster.start_worker(f"w{i}", slots=1) for i in range(2)]
    cluster.driver()
    w = Work(bomb(), name="bomb")
    w.submit()
    with pytest.raises(JobLostError, match=f"exited with code {code}"):
        w.wait_results(timeout=60)
    assert [p.poll() for p in workers] == [None, None], "no worker died"
    assert [plus_one(i) for i in range(4)] == [1, 2, 3, 4], "the workers keep serving"
    assert w.init_async_result().duplicates == 0, "the job ran once"


# --- 2. a forked child returning into the runner ---------------------------------------------------------
@work
def fork_and_return_in_the_child() -> str:
    pid = os.fork()
    if pid == 0:
        return "child"  # returns into the runner instead of exiting
    os.waitpid(pid, 0)
    return "parent"


@pytest.mark.parametrize("cluster", RABBIT, indirect=True)
def test_a_child_forked_by_a_job_that_returns_never_answers_for_it(cluster: Cluster):
    """The child of a fork that returns instead of exiting ends there: the job's answer is the parent's, and
    the runner serves the next jobs (it neither hangs nor mixes up results)."""
    cluster.start_worker("worker", slots=1)
    cluster.driver()
    assert fork_and_return_in_the_child() == "parent"
    assert [plus_one(i) for i in range(5)] == [1, 2, 3, 4, 5]
    assert fork_and_return_in_the_child() == "parent"


# --- 3. max_walltime on the pool path ------------------------------------------------------------------
@work(max_walltime=2)
def overstays(seconds: float) -> str:
    time.sleep(seconds)
    return "done"


@pytest.mark.parametrize("cluster", BOTH, indirect=True)
def test_a_job_past_its_walltime_is_killed_and_fails_with_timeout_error(cluster: Cluster):
    """``max_walltime=2`` on a job sleeping 8 s: it fails with TimeoutError within a tick of 2 s, and the worker
    replaces the killed runner."""
    cluster.start_worker("worker", slots=1)
    cluster.driver()
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="max_walltime=2"):
        overstays(8)
    assert time.monotonic() - started < 6, "killed at its walltime, not when it would have ended"
    assert plus_one(1) == 2


# --- 4. what a job leaves running ----------------------------------------------------------------------
@work
def fork_a_sleeper_and_exit(pid_file: str) -> str:
    pid = os.fork()
    if pid == 0:
        time.sleep(300)
        os._exit(0)
    Path(pid_file).write_text(str(pid))
    os._exit(3)  # the runner dies; its child would hold the result pipe


@work
def leave_a_child_and_a_daemon(pid_file: str) -> int:
    child = subprocess.Popen(["sleep", "300"])
    first = os.fork()
    if first == 0:  # a daemon: detached from the job by a double fork and a new session
        os.setsid()
        if os.fork() == 0:
            Path(pid_file).write_text(f"{child.pid} {os.getpid()}")
            time.sleep(300)
        os._exit(0)
    os.waitpid(first, 0)
    while not Path(pid_file).exists():
        time.sleep(0.01)
    return os.getpid()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("cluster", RABBIT, indirect=True)
def test_a_job_that_forks_a_long_lived_child_and_exits_is_reported_at_once(cluster: Cluster, tmp_path: Path):
    """The child does not inherit the result pipe: the runner's death is seen at once (not when the child
    ends), the job fails saying so, and the child is killed with its runner."""
    pid_file = tmp_path / "child.pid"
    cluster.start_worker("worker", slots=1)
    cluster.driver()
    started = time.monotonic()
    with pytest.raises(JobLostError, match="exited with code 3"):
        fork_a_sleeper_and_exit(str(pid_file))
    assert time.monotonic() - started < 20
    wait_for(lambda: not _alive(int(pid_file.read_text())), 10, "the forked child killed")
    assert plus_one(1) == 2


@pytest.mark.parametrize("cluster", RABBIT, indirect=True)
def test_what_a_job_leaves_running_is_killed_when_it_ends(cluster: Cluster, tmp_path: Path):
    """A child process and a daemon (double fork, new session) started by a job do not outlive it."""
    pid_file = tmp_path / "left.pids"
    cluster.start_worker("worker", slots=1)
    cluster.driver()
    runner = leave_a_child_and_a_daemon(str(pid_file))
    child, daemon = map(int, pid_file.read_text().split())
    wait_for(lambda: not _alive(child) and not _alive(daemon), 10, "the job's child and daemon killed")
    assert _alive(runner), "the runner itself lives on for the next job"
    assert plus_one(1) == 2


# --- 5. an exception that cannot be printed ------------------------------------------------------------
class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("this exception cannot be printed")


@work
def raise_unprintable() -> None:
    raise Unprintable("boom")


@pytest.mark.parametrize("cluster", RABBIT, indirect=True)
def test_an_exception_whose_str_raises_is_reported_with_its_own_type(cluster: Cluster):
    cluster.start_worker("worker", slots=1)
    cluster.driver()
    with pytest.raises(Exception) as err:  # noqa: PT011 - the type is rebuilt from the job's own class
        raise_unprintable()
    assert not isinstance(err.value, JobLostError), "the runner survived and reported the job's own error"
    name = err.value.type_name if isinstance(err.value, RemoteError) else type(err.value).__qualname__
    assert name.endswith("Unprintable")
    assert plus_one(1) == 2


# --- 6. replayed job messages ------------------------------------------------------------------------
@work(return_work=True)
def append_line(path: str, tag: str) -> str:
    with open(path, "a") as fh:
        fh.write(tag + "\n")
    return tag


@pytest.mark.parametrize("cluster", BOTH, indirect=True)
def test_a_captured_job_message_replayed_later_never_runs_again(cluster: Cluster, tmp_path: Path):
    """A signed job message republished after it ran: the worker that ran it drops the copy; on another queue a
    worker refuses it as older than job_max_age and dead-letters it.  It ran exactly once."""
    lines = tmp_path / "runs.txt"
    cluster.start_worker("worker", slots=1)
    _, ready = cluster.spawn("elsewhere", ["worker", "--queue", "other", "--slots", "1"], IWORKFLOW_JOB_MAX_AGE="1",
                             IWORKFLOW_CLOCK_SKEW="0")
    assert "ready" in ready, cluster.log("elsewhere")
    runtime = cluster.driver()
    w = append_line(path=str(lines), tag="ran")
    sent = capture_dispatched(runtime.executor(w.executor_name))
    w.submit()
    assert w.wait_results(timeout=60) == "ran"
    [job] = sent
    settings = load_settings(broker=cluster.url, destination_prefix=cluster.prefix)
    dead: list[bytes] = []
    with connect(cluster.url, settings) as bus:
        bus.consume("dlq", lambda d: (dead.append(d.body), d.ack()))
        bus.publish(jobs_destination(cluster.queue), job.data)
        # the copy is dropped as already run, or (if it arrives before the worker has settled the original,
        # which may come after the driver has the result) settled together with the original
        dropped = ("already ran job", "its copy is settled with it")
        wait_for(lambda: any(d in cluster.log("worker") for d in dropped) or lines.read_text().count("ran") > 1, 30,
                 "the worker dropping the replayed copy")
        time.sleep(max(0.0, job_age_deadline(job.data) - time.time()))
        bus.publish(jobs_destination("other"), job.data)
        wait_for(lambda: dead, 30, "the replay on the other queue dead-lettered")
    assert dead == [job.data]
    assert "refused as a possible replay" in cluster.log("elsewhere")
    assert lines.read_text() == "ran\n", "the job ran exactly once"


def job_age_deadline(data: bytes) -> float:
    """When a job message becomes older than a 1 s job_max_age."""
    from iworkflow.envelope import peek_header

    return float(peek_header(data)["ts"]) + 1.5


# --- 8. an archive bomb as source ---------------------------------------------------------------------
@pytest.mark.parametrize("cluster", RABBIT, indirect=True)
def test_a_source_tarball_unpacking_past_the_bound_is_refused_before_it_fills_the_disk(cluster: Cluster,
                                                                                    tmp_path: Path):
    """A 64 MiB gzip bomb (a few KiB on the wire) against ``max_unpacked_source_mb=8``: the job fails with
    UnsafeArchiveError naming the bound, and nothing is unpacked."""
    store = SourceStore(tmp_path / "store")
    data = zeros_tarball(64 * 2**20)
    digest = hashlib.sha256(data).hexdigest()
    store.put(digest, data)
    assert len(data) < 2**20
    cluster.start_worker("worker", slots=1, IWORKFLOW_MAX_UNPACKED_SOURCE_MB="8")
    runtime = cluster.driver()
    payload = JobPayload(func=serialization.dumps_function(abs), func_digest="abs",
                         args=serialization.dumps(((-1,), {})), source=SourceRef(digest, store.location))
    reply = f"results.bomb-{uuid.uuid4().hex[:8]}"
    results: list[bytes] = []
    with connect(cluster.url, load_settings(broker=cluster.url, destination_prefix=cluster.prefix)) as bus:
        bus.consume(reply, lambda d: (results.append(d.body), d.ack()))
        bus.publish(jobs_destination(cluster.queue), encode_payload("job", payload, runtime.secret, work_id="w",
                                                                    job_key="bomb", reply_to=reply))
        wait_for(lambda: results, 60, "the bomb job's result")
    _env, result = decode_payload(results[0], runtime.secret, "result")
    assert not result.ok and result.error.type_name.endswith("UnsafeArchiveError"), result.error
    assert "max_unpacked_source_mb" in result.error.message
    unpacked = store.path / "unpacked"
    assert not unpacked.exists() or not any(f.is_file() for f in unpacked.rglob("*")), "nothing was unpacked"


# --- 9. credentials and dead letters -----------------------------------------------------------------
def test_a_broker_password_on_the_worker_command_line_is_refused():
    done = subprocess.run([*CLI, "worker", "--broker", "amqp://guest:hunter2@127.0.0.1:5672/", "--queue", "q"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "ps" in done.stderr and "--broker-password-file" in done.stderr and "IWORKFLOW_BROKER_PASSWORD" in done.stderr
    assert "hunter2" not in done.stderr + done.stdout


@pytest.mark.parametrize("cluster", RABBIT, indirect=True)
def test_a_worker_reads_its_broker_password_from_a_file_and_ps_never_shows_it(cluster: Cluster, rabbit_user,
                                                                              tmp_path: Path):
    user, password = rabbit_user
    secret_file = tmp_path / "broker.password"
    secret_file.write_text(password + "\n")
    cluster.env["IWORKFLOW_BROKER"] = f"amqp://{user}@127.0.0.1:5672/"
    proc, line = cluster.spawn("worker", ["worker", "--queue", cluster.queue, "--slots", "1",
                                          "--broker-password-file", str(secret_file)])
    assert "ready" in line, cluster.log("worker")
    cluster.driver()
    assert plus_one(1) == 2, "the worker reached the broker with the password from the file"
    processes = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    assert len(processes) >= 2, "the worker and its runner processes"
    for p in processes:
        assert password not in " ".join(p.cmdline()), f"pid {p.pid} shows the password to ps"


@pytest.mark.parametrize("cluster", RABBIT, indirect=True)
def test_the_dead_letter_queue_is_bounded_by_length(cluster: Cluster):
    """``dlq_max_length=3``: six bad job messages, the three newest stay dead-lettered."""
    cluster.env.update(IWORKFLOW_DLQ_MAX_LENGTH="3")
    cluster.start_worker("worker", slots=1)
    bad = [f"not a job {i}".encode() for i in range(6)]
    settings = load_settings(broker=cluster.url, destination_prefix=cluster.prefix, dlq_max_length=3)
    with connect(cluster.url, settings) as bus:
        bus.publish_many(jobs_destination(cluster.queue), bad)
        wait_for(lambda: cluster.log("worker").count("dead-letters") >= 6, 30, "six messages dead-lettered")
        dead: list[bytes] = []
        bus.consume("dlq", lambda d: (dead.append(d.body), d.ack()), prefetch=0)
        wait_for(lambda: len(dead) >= 3, 10, "the dead letters")
        time.sleep(0.5)
    assert dead == bad[3:]


@pytest.mark.activemq
def test_dead_letters_on_activemq_expire_after_dlq_ttl(private_activemq, tmp_path: Path):
    """STOMP cannot bound a queue's length from a client: dead letters carry an expiration of ``dlq_ttl``
    (on the session's own ActiveMQ, configured to drop expired messages rather than keep them elsewhere)."""
    cluster = Cluster("activemq", tmp_path, url=private_activemq.url)
    try:
        cluster.start_worker("worker", slots=1, IWORKFLOW_DLQ_TTL="1")
        settings = load_settings(broker=cluster.url, destination_prefix=cluster.prefix)
        with connect(cluster.url, settings) as bus:
            bus.publish(jobs_destination(cluster.queue), b"not a job")
            wait_for(lambda: "dead-letters" in cluster.log("worker"), 30, "the message dead-lettered")
            time.sleep(2.5)
            dead: list[bytes] = []
            bus.consume("dlq", lambda d: (dead.append(d.body), d.ack()))
            time.sleep(2.0)
        assert dead == [], "the dead letter expired"
    finally:
        cluster.close()

