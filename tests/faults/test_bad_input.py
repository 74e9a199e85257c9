"""Bad input over real brokers: each case ends with a clear outcome and nothing lost.

Cases tested elsewhere (see docs/reliability.md): unpicklable argument, non-callable ``@work``, a
``multi_jobs_kwargs_list`` that is not a list, kwargs not matching the signature and an unknown executor
(``tests/test_work_api.py``); tampered and foreign job messages (``tests/bus/test_broker_e2e.py``).
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import pytest

from iworkflow import serialization, work
from iworkflow.bus import connect
from iworkflow.config import load_settings
from iworkflow.messages import JobPayload, encode_payload, jobs_destination
from iworkflow.result_store import REF_MAGIC, RESULTS_DIR, resolve, spill

from .conftest import BOTH, Cluster, wait_for

logger = logging.getLogger(__name__)


@work(return_work=True)
def blob(size: int) -> bytes:
    """A result of ``size`` bytes."""
    return os.urandom(size)


def _stored(store: Path) -> list[Path]:
    folder = store / RESULTS_DIR
    return sorted(folder.glob("*.tar.gz")) if folder.exists() else []


@pytest.mark.timeout(120)
@pytest.mark.parametrize("cluster", BOTH, indirect=True)
def test_a_result_too_large_for_the_bus_travels_through_the_result_store(cluster: Cluster, tmp_path: Path) -> None:
    """A 3 MiB result goes to the worker's result store, the message carries a reference, the caller gets it."""
    store = tmp_path / "worker-store"
    cluster.start_worker("worker", slots=1, IWORKFLOW_SOURCE_STORE=str(store))
    cluster.driver()
    small, large = blob(size=512 * 1024), blob(size=3 * 2**20)
    small.submit()
    value = small.wait_results(timeout=60)
    assert len(value) == 512 * 1024 and _stored(store) == [], "a result under 1 MiB travels inline"
    large.submit()
    value = large.wait_results(timeout=60)
    assert len(value) == 3 * 2**20
    [path] = _stored(store)
    assert path.name.startswith(hashlib.sha256(serialization.dumps(value)).hexdigest()), "stored by content hash"


def test_the_inline_threshold_is_a_setting(tmp_path: Path) -> None:
    """``result_inline_max_mb`` moves the threshold; a reference resolves to the very bytes stored."""
    settings = load_settings(source_store=str(tmp_path), result_inline_max_mb=0.05)
    inline = serialization.dumps(b"x" * 40_000)
    spilled = serialization.dumps(b"x" * 60_000)
    assert spill(inline, settings) == inline
    ref = spill(spilled, settings)
    assert ref.startswith(REF_MAGIC) and len(ref) < 200
    assert resolve(ref, token="") == spilled


def test_a_missing_stored_result_is_a_clear_error(tmp_path: Path) -> None:
    """A reference whose blob is gone names the digest and the store instead of failing obscurely."""
    settings = load_settings(source_store=str(tmp_path), result_inline_max_mb=0.05)
    ref = spill(serialization.dumps(b"y" * 100_000), settings)
    for path in (tmp_path / RESULTS_DIR).iterdir():
        path.unlink()
    with pytest.raises(FileNotFoundError, match="result store"):
        resolve(ref, token="")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("cluster", BOTH, indirect=True)
def test_truncated_and_unpicklable_job_messages_are_dead_lettered(cluster: Cluster) -> None:
    """A cut-off job message (its signature no longer matches) and a correctly signed one whose body is not a
    pickle both go to the DLQ, named in the worker log."""
    cluster.start_worker("worker", slots=1)
    runtime = cluster.driver()
    secret = runtime.secret
    valid = encode_payload("job", JobPayload(func=serialization.dumps(abs), func_digest="abs",
                                             args=serialization.dumps(((-1,), {}))), secret, work_id="w", job_key="k")
    truncated = valid[:-16]  # cut inside the body: the header still parses, the signature no longer matches
    from iworkflow.envelope import Envelope, encode

    unpicklable = encode(Envelope(kind="job", body=b"definitely not a pickle", work_id="w", job_key="k2"), secret)
    dead: list[bytes] = []
    bus = connect(cluster.url, load_settings(broker=cluster.url, destination_prefix=cluster.prefix))
    try:
        bus.consume("dlq", lambda d: (dead.append(d.body), d.ack()))
        bus.publish_many(jobs_destination(cluster.queue), [truncated, unpicklable])
        wait_for(lambda: len(dead) >= 2, 30, "both bad messages in the dead-letter queue")
        assert sorted(dead) == sorted([truncated, unpicklable]), "dead-lettered byte for byte"
        ok = blob(size=10)
        ok.submit()
        assert len(ok.wait_results(timeout=30)) == 10, "the worker keeps serving"
    finally:
        bus.close()
    log = cluster.log("worker")
    assert "signature does not match" in log and "cannot unpickle job body" in log, log[-3000:]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("cluster", BOTH, indirect=True)
def test_a_corrupted_result_message_is_dead_lettered_and_the_real_result_still_arrives(cluster: Cluster) -> None:
    """Garbage on the driver's results queue is dead-lettered by the driver; the job's own result is kept."""
    cluster.start_worker("worker", slots=1)
    cluster.driver()
    w = blob(size=10)
    dead: list[bytes] = []
    bus = connect(cluster.url, load_settings(broker=cluster.url, destination_prefix=cluster.prefix))
    try:
        bus.consume("dlq", lambda d: (dead.append(d.body), d.ack()))
        bus.publish(w.runtime.inbox.destination, b"IWF\x01garbage")
        w.submit()
        assert len(w.wait_results(timeout=30)) == 10
        wait_for(lambda: dead == [b"IWF\x01garbage"], 30, "the corrupted result in the dead-letter queue")
    finally:
        bus.close()
