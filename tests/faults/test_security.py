"""Signed payloads, secrets and credentials, checked on real workers and brokers.

Tested elsewhere (see docs/reliability.md): the REST API refuses writes without the token
(``tests/server/test_api.py::test_writes_need_the_token``), tarballs with absolute, symlink and hard-link
members are refused (``tests/test_source_cache.py``), tampered jobs are dead-lettered
(``tests/bus/test_broker_e2e.py``).
"""
from __future__ import annotations

import io
import logging
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from iworkflow import work
from iworkflow.bus import connect
from iworkflow.config import load_settings
from iworkflow.errors import UnsafeArchiveError
from iworkflow.source_cache import safe_extract

from .conftest import BOTH, RABBIT, Cluster, capture_dispatched, wait_for

logger = logging.getLogger(__name__)


@work(return_work=True)
def negate(x: int) -> int:
    return -x


@pytest.mark.timeout(120)
@pytest.mark.parametrize("cluster", BOTH, indirect=True)
def test_a_worker_without_the_right_secret_refuses_and_dead_letters_the_job(cluster: Cluster) -> None:
    """A worker holding another IWORKFLOW_SECRET never runs the job: it goes to the DLQ intact, and the wait
    ends with a TimeoutError rather than a wrong result."""
    cluster.start_worker("stranger", slots=1, IWORKFLOW_SECRET="not-the-drivers-secret")
    runtime = cluster.driver()
    dead: list[bytes] = []
    bus = connect(cluster.url, load_settings(broker=cluster.url, destination_prefix=cluster.prefix))
    try:
        bus.consume("dlq", lambda d: (dead.append(d.body), d.ack()))
        w = negate(x=5)
        sent = capture_dispatched(runtime.executor(w.executor_name))
        w.submit()
        wait_for(lambda: dead, 30, "the job in the dead-letter queue")
        with pytest.raises(TimeoutError):
            w.wait_results(timeout=1)
    finally:
        bus.close()
    [job] = sent
    assert dead == [job.data], "the refused job is kept byte for byte, nothing lost"
    assert "signature does not match" in cluster.log("stranger")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("cluster", RABBIT, indirect=True)
def test_a_worker_without_any_secret_warns_clearly(cluster: Cluster) -> None:
    """Outside the embedded default, no IWORKFLOW_SECRET is a loud warning (messages get a random key)."""
    cluster.env.pop("IWORKFLOW_SECRET", None)
    cluster.start_worker("unset", slots=1)
    assert "IWORKFLOW_SECRET is not set" in cluster.log("unset")


SECRET_DRIVER = textwrap.dedent("""
    import iworkflow
    from iworkflow import work

    @work
    def inc(x):
        return x + 1

    iworkflow.configure(executor="broker")
    assert inc(1) == 2
    print("ok")
""")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("cluster", RABBIT, indirect=True)
def test_broker_password_is_never_logged_at_debug_level(cluster: Cluster, rabbit_user, tmp_path: Path) -> None:
    """A worker and a driver logging at DEBUG run a job; the broker password appears in neither log."""
    user, password = rabbit_user
    url = f"amqp://{user}:{password}@127.0.0.1:5672/"
    cluster.env["IWORKFLOW_BROKER"] = url
    cluster.start_worker("worker", slots=1, LOG_LEVEL="DEBUG")
    script = tmp_path / "driver.py"
    script.write_text(SECRET_DRIVER)
    driver = subprocess.run([sys.executable, "-c", f"import logging; logging.basicConfig(level='DEBUG'); "
                                                   f"exec(open({str(script)!r}).read())"],
                            env={**cluster.env, "IWORKFLOW_LOG_LEVEL": "DEBUG"}, capture_output=True, text=True,
                            timeout=90)
    assert driver.returncode == 0 and "ok" in driver.stdout, driver.stderr[-3000:]
    worker_log = cluster.log("worker")
    assert "DEBUG" in worker_log and "DEBUG" in driver.stderr, "both really logged at DEBUG"
    assert password not in worker_log
    assert password not in driver.stderr + driver.stdout


@pytest.mark.timeout(60)
@pytest.mark.parametrize("cluster", [pytest.param("activemq", marks=pytest.mark.activemq, id="activemq")],
                         indirect=True)
def test_stomp_passcode_is_never_logged_at_debug_level(cluster: Cluster) -> None:
    """stomp.py logs every frame at DEBUG; the CONNECT frame's passcode must not reach the worker log."""
    cluster.start_worker("worker", slots=1, LOG_LEVEL="DEBUG")
    cluster.driver()
    w = negate(x=1)
    w.submit()
    assert w.wait_results(timeout=30) == -1
    log = cluster.log("worker")
    assert "CONNECT" in log or "DEBUG" in log
    assert "passcode:admin" not in log and "'passcode': 'admin'" not in log and "admin:admin@" not in log


def test_a_tarball_member_climbing_out_with_dotdot_is_refused(tmp_path: Path) -> None:
    """``../`` in a member name would write outside the extraction directory: refused, nothing written."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        member = tarfile.TarInfo("pkg/../../escaped.py")
        member.size = 1
        tar.addfile(member, io.BytesIO(b"x"))
    with pytest.raises(UnsafeArchiveError):
        safe_extract(buf.getvalue(), tmp_path / "target")
    assert not (tmp_path / "escaped.py").exists()
