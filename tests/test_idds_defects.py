"""The nine defects of the original iDDS iWorkflow (docs/idds.md), each fixed and proven here."""
from __future__ import annotations

import dataclasses
import importlib
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from iworkflow import work, workflow
from iworkflow.errors import UnsafeArchiveError
from iworkflow.source_cache import safe_extract


@work(map_results=True)
def square(x):
    return x * x


@work
def always_fails(x):
    raise RuntimeError(f"no luck with {x}")


@work
def sleepy(seconds):
    time.sleep(seconds)
    return seconds


@dataclasses.dataclass
class Point:
    x: float
    y: float


def test_defect1_map_results_keeps_every_result_not_just_the_last(embedded):
    entries = [{"x": i} for i in range(25)]
    results = square(group_kwargs=entries)
    assert [results.get_result(args=e) for e in entries] == [i * i for i in range(25)]


def test_defect2_a_job_that_never_succeeds_ends_with_its_error_instead_of_hanging(embedded):
    with pytest.raises(RuntimeError, match="no luck with 3") as info:
        always_fails(3)
    assert "Remote traceback" in info.value.__notes__[0]
    assert "always_fails" in info.value.remote_traceback


def test_defect3_results_come_back_in_list_order_and_duplicates_count_once(threaded):
    entries = [[0.2], [0.0], [0.1]]
    assert sleepy(group_kwargs=entries) == [0.2, 0.0, 0.1]

    from iworkflow import Work

    w = Work(square.__wrapped__, multi_jobs_kwargs_list=[{"x": 2}], map_results=True)
    w.submit()
    w.async_result.publish(4, key=w.job_keys[0])  # a duplicate, as a retried job would send
    mr = w.wait_results(timeout=30)
    assert len(mr) == 1 and mr.get_result(args={"x": 2}) == 4


def test_defect4_local_workflow_returns_the_functions_value_not_a_status(embedded):
    @workflow(local=True)
    def driver(n):
        return {"sum": sum(square(group_kwargs=[{"x": i} for i in range(n)]).get_all_results().values())}

    assert driver(4) == {"sum": 0 + 1 + 4 + 9}


def test_defect5_closures_lambdas_numpy_and_dataclasses_travel_both_ways(embedded):
    offset = np.arange(3)

    @work
    def shift(p: Point, scale=lambda v: v * 2):
        return Point(scale(p.x), p.y), offset + p.y

    moved, arr = shift(Point(1.5, 2.0))
    assert moved == Point(3.0, 2.0)
    np.testing.assert_array_equal(arr, np.array([2.0, 3.0, 4.0]))


def test_defect6_importing_needs_no_broker_client():
    code = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in ('stomp', 'pika'):
                    raise ImportError(f'blocked {name}')
        sys.meta_path.insert(0, Block())
        import iworkflow
        from iworkflow import workflow, work, Workflow, Work, AsyncResult, MapResult
        from iworkflow.workflow import workflow as wf2
        from iworkflow.work import work as w2
        from iworkflow.asyncresult import AsyncResult as a2
        try:
            iworkflow.configure(broker='stomp://admin:admin@127.0.0.1:61613')
            iworkflow.get_runtime().bus
        except iworkflow.ConfigurationError as e:
            print('clear error:', e)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "pip install 'iworkflow[stomp]'" in out.stdout


def test_defect7_workers_do_not_rerun_the_top_level_code_of_the_drivers_module(embedded, tmp_path, monkeypatch):
    marker = tmp_path / "imports.log"
    (tmp_path / "sideeffect_mod.py").write_text(textwrap.dedent(f"""
        from iworkflow import work
        with open({str(marker)!r}, "a") as fh:
            fh.write("imported\\n")

        @work
        def triple(x):
            return 3 * x
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = importlib.import_module("sideeffect_mod")
    assert mod.triple(group_kwargs=[{"x": 1}, {"x": 2}]) == [3, 6]
    assert marker.read_text().splitlines() == ["imported"]


def test_defect8_tarball_members_escaping_the_target_are_rejected(tmp_path):
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("../evil.py")
        payload = b"print('owned')"
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(UnsafeArchiveError, match="escapes"):
        safe_extract(buf.getvalue(), tmp_path / "target")
    assert not (tmp_path / "evil.py").exists()


def test_defect9_waits_raise_timeout_error_and_failures_raise(threaded):
    from iworkflow import Work

    w = Work(sleepy.__wrapped__, args=(2.0,))
    w.submit()
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="1 of 1 job results still missing"):
        w.wait_results(timeout=0.2)
    assert time.monotonic() - started < 1.5
    assert w.wait_results(timeout=30) == 2.0
