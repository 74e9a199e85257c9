"""A long-lived process runs each job with exactly its own source tree (``iworkflow.source_version``)."""
from __future__ import annotations

import sys
import threading
import time

import pytest

import iworkflow
from iworkflow import Workflow, source_version, work
from iworkflow.messages import SourceRef
from iworkflow.source_cache import SourceStore


@pytest.fixture
def one_runner():
    """The embedded runtime with a single local runner process, which serves every job of the test."""
    yield iworkflow.configure(broker="memory://", executor="local", slots=1)
    iworkflow.shutdown()


@work
def import_and_read(name):
    import importlib
    import os

    return getattr(importlib.import_module(name), "VALUE", None), os.getpid()


def _in_workflow(tree, name):
    return Workflow(lambda: import_and_read(name), source_dir=str(tree)).run()


def test_a_module_deleted_from_the_tree_is_gone_in_the_next_run(one_runner, tmp_path):
    (tmp_path / "vanishing_helper.py").write_text("VALUE = 1\n")
    value, pid = _in_workflow(tmp_path, "vanishing_helper")
    assert value == 1
    (tmp_path / "vanishing_helper.py").unlink()
    with pytest.raises(ModuleNotFoundError):
        _in_workflow(tmp_path, "vanishing_helper")
    assert import_and_read("os")[1] == pid, "the same runner process served every run"


def test_a_job_without_a_tree_does_not_see_the_previous_jobs_tree(one_runner, tmp_path):
    (tmp_path / "tree_only_helper.py").write_text("VALUE = 1\n")
    assert _in_workflow(tmp_path, "tree_only_helper")[0] == 1
    with pytest.raises(ModuleNotFoundError):
        import_and_read("tree_only_helper")  # a work outside a workflow ships no tree


def _store_versions(tmp_path, n):
    store, tree, refs = SourceStore(tmp_path / "store"), tmp_path / "tree", []
    tree.mkdir()
    for i in range(n):
        (tree / "versioned_helper.py").write_text(f"VALUE = {i}\n")
        refs.append(SourceRef(store.add_tree(tree), store.location))
    return refs


def test_sys_path_holds_one_tree_however_many_versions_ran(tmp_path):
    refs = _store_versions(tmp_path, 5)
    before = list(sys.path)
    try:
        for i, ref in enumerate(refs + refs):
            with source_version.using(ref):
                import versioned_helper

                assert versioned_helper.VALUE == i % 5
                assert [p for p in sys.path if p not in before] == [source_version.active_path()]
    finally:
        with source_version.using(None):
            pass
    assert sys.path == before and "versioned_helper" not in sys.modules


def test_jobs_of_two_versions_never_overlap_in_one_process(tmp_path):
    first, second = _store_versions(tmp_path, 2)
    spans: dict[str, tuple[float, float]] = {}
    entered = threading.Event()

    def job(name, ref, hold):
        with source_version.using(ref):
            start = time.monotonic()
            entered.set()
            time.sleep(hold)
            spans[name] = (start, time.monotonic())

    try:
        a = threading.Thread(target=job, args=("a", first, 0.3))
        a.start()
        entered.wait(5)
        b = threading.Thread(target=job, args=("b", second, 0.0))
        b.start()
        a.join(5)
        b.join(5)
    finally:
        with source_version.using(None):
            pass
    assert spans["b"][0] >= spans["a"][1], "the job of the other version waited for the running one"
