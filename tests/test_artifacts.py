"""Versioned artifacts on the embedded default (a blob directory + SQLite): round trips from jobs, lineage,
concurrent saves from several processes, tags, and corrupted blobs refused."""
from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

import iworkflow
from iworkflow import artifacts, work, workflow
from iworkflow.artifact_catalog import ArtifactNotFound
from iworkflow.artifacts import ArtifactCorrupted, Artifacts, LocalBackend
from iworkflow.errors import ConfigurationError
from iworkflow.runner import WORKER_NAME


@pytest.fixture
def home(tmp_path):
    """A runtime (local executor) whose jobs and driver share a fresh iworkflow home."""
    os.environ["IWORKFLOW_HOME"], old = str(tmp_path / "home"), os.environ["IWORKFLOW_HOME"]
    iworkflow.configure(broker="memory://", executor="local", slots=2)
    yield tmp_path / "home"
    iworkflow.shutdown()
    os.environ["IWORKFLOW_HOME"] = old


def _blob(home: Path, digest: str) -> Path:
    return home / "artifacts" / "blobs" / digest[:2] / digest


@work(map_results=True, cache=True)
def train(seed):
    model = {"seed": seed, "weights": [seed * 0.5, seed * 1.5]}
    record = artifacts.save("toy-model", model, metadata={"seed": seed, "score": 1.0 / (1 + seed)})
    return record.version, os.getpid()


def test_a_job_on_the_local_executor_saves_and_the_driver_loads_it_with_the_lineage_of_that_job(home):
    seen = {}

    @workflow(local=True, name="artifact-lineage")
    def run():
        wf = iworkflow.current_workflow()
        out = train(multi_jobs_kwargs_list=[{"seed": 3}])
        (w,) = wf.works
        seen.update(workflow_id=wf.internal_id, work=w, source=wf.source_ref())
        return out.get_result(args={"seed": 3})

    version, job_pid = run()
    assert job_pid != os.getpid(), "the job ran in a runner process"
    assert artifacts.load("toy-model", version) == {"seed": 3, "weights": [1.5, 4.5]}
    record = artifacts.show("toy-model", version)
    assert record.metadata == {"seed": 3, "score": 0.25} and record.kind == "object"
    w = seen["work"]
    (key,) = w.job_keys
    identity, _record = w._calls[key]
    lin = artifacts.lineage("toy-model", version)
    assert (lin.workflow_id, lin.work_id, lin.work_name, lin.job_key, lin.attempt) == (
        seen["workflow_id"], w.internal_id, "train", key, 1)
    assert lin.call_identity == identity, "the job's call identity is the one the driver computed"
    assert lin.func_digest == w._digest and lin.source_digest == seen["source"].digest
    assert lin.executor == "local" and lin.worker.endswith(f":{job_pid}")
    assert len(lin.args_digest) == 64


def test_a_save_in_the_driver_records_the_driver_and_its_workflow(home):
    @workflow(local=True)
    def run():
        return iworkflow.current_workflow().internal_id, artifacts.save("cfg", {"lr": 0.1})

    wf_id, record = run()
    assert record.lineage.workflow_id == wf_id and record.lineage.job_key is None
    assert (record.lineage.executor, record.lineage.worker) == ("driver", WORKER_NAME)


def test_files_and_folders_round_trip_as_saved(home, tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights.bin").write_bytes(os.urandom(3000))
    (tmp_path / "model" / "sub").mkdir()
    (tmp_path / "model" / "sub" / "config.json").write_text('{"depth": 4}')
    (tmp_path / "score.txt").write_text("0.93")
    folder = artifacts.save("bdt", tmp_path / "model")
    single = artifacts.save("score", tmp_path / "score.txt")
    assert (folder.kind, single.kind) == ("directory", "file")
    loaded = artifacts.load("bdt")
    assert (loaded / "weights.bin").read_bytes() == (tmp_path / "model" / "weights.bin").read_bytes()
    assert (loaded / "sub" / "config.json").read_text() == '{"depth": 4}'
    assert artifacts.load("score").read_text() == "0.93"
    out = artifacts.get("bdt", 1, tmp_path / "out")
    assert (out / "sub" / "config.json").read_text() == '{"depth": 4}'
    assert artifacts.save("bdt", tmp_path / "model").digest == folder.digest, "equal folders, equal digests"


def test_versions_are_numbered_and_a_tag_moves_while_versions_stay(home):
    v1 = artifacts.save("m", "first", kind="object")
    v2 = artifacts.save("m", "second", kind="object")
    assert (v1.version, v2.version) == (1, 2)
    artifacts.promote("m", 1, tag="production")
    assert artifacts.load("m", "production") == "first"
    artifacts.promote("m", "latest", tag="production")
    assert artifacts.load("m", "production") == "second"
    assert artifacts.load("m", 1) == "first" and artifacts.load("m", v1.digest[:12]) == "first"
    assert [v.tags for v in artifacts.list("m")] == [(), ("production",)]
    with pytest.raises(ArtifactNotFound, match="has no version 3"):
        artifacts.load("m", 3)
    with pytest.raises(ArtifactNotFound, match="no artifact named 'nope'"):
        artifacts.load("nope")


def test_a_corrupted_blob_is_refused_on_load_naming_the_digest(home, tmp_path):
    record = artifacts.save("fragile", {"w": list(range(100))})
    blob = _blob(home, record.digest)
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[-5] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(ArtifactCorrupted, match=f"{record.digest} .* is corrupted"):
        artifacts.load("fragile")
    (tmp_path / "f.txt").write_text("abc")
    record = artifacts.save("fragile-file", tmp_path / "f.txt")
    artifacts.load("fragile-file")
    blob = _blob(home, record.digest)
    blob.chmod(0o644)
    blob.write_text("abd")
    with pytest.raises(ArtifactCorrupted):
        artifacts.load("fragile-file")
    with pytest.raises(ArtifactCorrupted):
        artifacts.get("fragile-file", 1, tmp_path / "copy.txt")
    assert not (tmp_path / "copy.txt").exists(), "nothing is left behind from a corrupted blob"


def test_bad_input_is_refused_with_the_fix(home, tmp_path):
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(ConfigurationError, match="is not valid"):
        artifacts.save("no/slashes", 1)
    with pytest.raises(ConfigurationError, match="pass pathlib.Path"):
        artifacts.save("p", str(tmp_path / "x.txt"))
    with pytest.raises(ConfigurationError, match="must be JSON"):
        artifacts.save("p", 1, metadata={"f": object()})
    artifacts.save("p", 1)
    with pytest.raises(ConfigurationError, match="tag 'latest' is not valid"):
        artifacts.promote("p", 1, "latest")
    assert artifacts.save("p", str(tmp_path / "x.txt"), kind="object").kind == "object"
    assert artifacts.save("p", str(tmp_path / "x.txt"), kind="path").kind == "file"


def _save_many(root: str, worker: int, count: int, barrier) -> None:
    store = Artifacts(LocalBackend(root), Path(root) / "files")
    barrier.wait()
    for i in range(count):
        store.save("shared", {"worker": worker, "i": i})


def save_concurrently(make_backend, root: str, processes: int = 4, count: int = 8) -> list:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes)
    procs = [ctx.Process(target=make_backend, args=(root, w, count, barrier)) for w in range(processes)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert [p.exitcode for p in procs] == [0] * processes
    return [(p, c) for p in range(processes) for c in range(count)]


def test_concurrent_saves_from_several_processes_on_sqlite_get_every_version_once(tmp_path):
    root = str(tmp_path / "store")
    expected = save_concurrently(_save_many, root)
    store = Artifacts(LocalBackend(root), tmp_path / "files")
    versions = store.list("shared")
    assert [v.version for v in versions] == list(range(1, len(expected) + 1))
    values = sorted((store.load("shared", v.version)["worker"], store.load("shared", v.version)["i"])
                    for v in versions)
    assert values == expected, "every save is one version: none lost, none twice"


@work
def save_from_a_thread():
    import threading

    out = {}
    thread = threading.Thread(target=lambda: out.update(v=artifacts.save("threaded", 1).version))
    thread.start()
    thread.join()
    return out["v"]


def test_a_thread_a_job_starts_in_a_runner_process_saves_with_that_jobs_lineage(home):
    version = save_from_a_thread()
    lin = artifacts.lineage("threaded", version)
    assert lin.executor == "local" and lin.work_name == "save_from_a_thread" and lin.job_key
