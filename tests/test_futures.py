"""A Future per job: concurrent.futures interplay, completion order, partial waits, failure results in one place."""
from __future__ import annotations

import concurrent.futures
import os
import pathlib
import re
import threading
import time

import pytest

from iworkflow import JobFuture, as_completed, work
from iworkflow.errors import BrokerError, ConfigurationError

ROOT = pathlib.Path(__file__).resolve().parent.parent


def held(tag: int, folder: str) -> int:
    """A job that runs until the test releases it (a file named for it appears): completion order is the test's."""
    while not os.path.exists(os.path.join(folder, f"go-{tag}")):
        time.sleep(0.01)
    return tag * 10


def square(x: int) -> int:
    if x < 0:
        raise ValueError(f"negative: {x}")
    return x * x


def release(folder, tag: int) -> None:
    (pathlib.Path(folder) / f"go-{tag}").touch()


def submitted(func, entries, **options):
    w = work(return_work=True, **options)(func)(multi_jobs_kwargs_list=entries)
    w.submit()
    return w


def test_job_futures_mix_with_a_process_pool_future_in_wait_and_as_completed(threaded):
    w = submitted(square, [{"x": i} for i in range(5)])
    with concurrent.futures.ProcessPoolExecutor(1) as pool:
        other = pool.submit(pow, 2, 10)
        mixed = [*w.futures, other]
        done, not_done = concurrent.futures.wait(mixed, timeout=60)
        assert not not_done and len(done) == 6
        seen = {f.result() for f in concurrent.futures.as_completed(mixed, timeout=60)}
    assert seen == {0, 1, 4, 9, 16, 1024}
    assert all(isinstance(f, JobFuture) and f.done() for f in w.futures)


def test_futures_are_found_by_their_kwargs_entry_like_get_result(threaded):
    w = submitted(square, [{"x": 3}, {"x": 4}])
    assert w.futures.get(args={"x": 4}).result(timeout=60) == 16
    assert w.futures.get(args={"x": 3}).args == {"x": 3}
    with pytest.raises(LookupError, match="no job with args"):
        w.futures.get(args={"x": 5})


def test_a_failed_jobs_future_raises_its_own_exception_and_as_completed_yields_it(threaded):
    w = submitted(square, [{"x": 2}, {"x": -1}])
    with pytest.raises(ValueError, match="negative: -1"):
        w.futures.get(args={"x": -1}).result(timeout=60)
    got = dict((args["x"], value) for args, value in as_completed(w, timeout=60))
    assert got[2] == 4 and isinstance(got[-1], ValueError)


def test_as_completed_yields_jobs_in_the_order_they_finish(threaded, tmp_path):
    folder = str(tmp_path)
    w = submitted(held, [{"tag": i, "folder": folder} for i in range(3)])
    finishing = [2, 0, 1]  # the opposite of submission order for the first: ordering is by completion
    release(folder, finishing[0])
    order = []
    for args, value in as_completed(w.async_result, timeout=120):
        order.append(args["tag"])
        assert value == args["tag"] * 10
        if len(order) < len(finishing):
            release(folder, finishing[len(order)])  # the next job may finish only once this one was yielded
    assert order == finishing


def test_as_completed_over_job_futures_yields_args_and_values(threaded):
    w = submitted(square, [{"x": i} for i in range(4)])
    assert sorted(value for _args, value in as_completed(w.futures, timeout=60)) == [0, 1, 4, 9]


def test_wait_fraction_returns_before_the_slowest_jobs_and_their_results_still_land(threaded, tmp_path):
    folder = str(tmp_path)
    for tag in range(8):
        release(folder, tag)  # 8 of 10 jobs finish at once; 8 and 9 run until released
    w = submitted(held, [{"tag": i, "folder": folder} for i in range(10)], map_results=True)
    res = w.async_result
    assert res.wait(fraction=0.8, timeout=120)
    slow = [w.futures.get(args={"tag": t, "folder": folder}) for t in (8, 9)]
    assert not any(f.done() for f in slow) and res.get_results_percentage() == pytest.approx(0.8)
    release(folder, 8)
    release(folder, 9)
    results = w.wait_results(timeout=120)
    assert [results.get_result(args={"tag": t, "folder": folder}) for t in (8, 9)] == [80, 90]
    assert [f.result() for f in slow] == [80, 90]


def test_wait_fraction_outside_zero_to_one_is_refused(threaded):
    w = submitted(square, [{"x": 1}])
    with pytest.raises(ConfigurationError, match="fraction"):
        w.async_result.wait(fraction=1.5)


def test_a_wait_ends_with_the_brokers_error_when_the_inbox_is_lost(threaded, tmp_path):
    w = submitted(held, [{"tag": 0, "folder": str(tmp_path)}])
    raised: list[BaseException] = []
    waiter = threading.Thread(target=lambda: _wait_catching(w, raised))
    waiter.start()
    threaded.bus.delete_queue(threaded.inbox.destination)  # the broker drops the inbox's queue for good
    waiter.join(60)
    release(str(tmp_path), 0)
    assert not waiter.is_alive() and raised and isinstance(raised[0], BrokerError)


def _wait_catching(w, raised: list) -> None:
    try:
        w.async_result.wait()
    except BaseException as err:  # noqa: BLE001 - the test inspects it
        raised.append(err)


def test_failure_results_are_built_in_one_function():
    """Only iworkflow/failures.py makes a ResultPayload with ok=False or an ErrorInfo (its error_info)."""
    builders = re.compile(r"ResultPayload\(\s*ok=False|ErrorInfo\(")
    found = [str(path.relative_to(ROOT)) for top in ("iworkflow", "executors", "server")
             for path in (ROOT / top).rglob("*.py") if builders.search(path.read_text())]
    assert found == ["iworkflow/failures.py"], found


def test_a_pending_job_costs_the_driver_under_a_kibibyte():
    """A large fan-out sent to the broker keeps no job message, Future or lock per pending job in the driver."""
    import gc
    import tracemalloc

    import iworkflow
    from iworkflow.messages import jobs_destination

    runtime = iworkflow.configure(broker="memory://", executor="broker")
    try:
        n = 20_000
        w = work(return_work=True)(square)(multi_jobs_kwargs_list=[{"x": i} for i in range(n)])
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            w.submit()
            runtime.bus.delete_queue(jobs_destination(w.queue))  # the messages now belong to the broker
            gc.collect()
            grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename"))
        finally:
            tracemalloc.stop()
        assert w.async_result.get_results_percentage() == 0  # every job is still pending
        assert grown / n < 1024, f"{grown / n:.0f} bytes per pending job"
    finally:
        iworkflow.shutdown()


def test_futures_of_several_works_steer_an_asynchronous_loop(threaded):
    """Asynchronous HPO's shape: two evaluations in flight, a new one submitted as each ends."""
    in_flight: dict = {}
    submitted_x = []
    values = []

    def launch(x: int) -> None:
        w = submitted(square, [{"x": x}])
        in_flight[w.futures[0]] = w
        submitted_x.append(x)

    for x in range(2):
        launch(x)
    while in_flight:
        done, _ = concurrent.futures.wait(list(in_flight), timeout=60,
                                          return_when=concurrent.futures.FIRST_COMPLETED)
        assert done, "no evaluation ended within 60 s"
        for future in done:
            values.append(future.result())
            finished = in_flight.pop(future)
            assert finished.get_status() == "finished" and finished.async_result.is_stop  # nothing left routed
            if len(submitted_x) < 6:
                launch(len(submitted_x))
        assert len(in_flight) <= 2
    assert sorted(values) == [x * x for x in range(6)]
