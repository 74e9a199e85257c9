"""Call identity: a call never gets another call's result, whatever differs between them."""
from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import iworkflow
from iworkflow import Workflow, work, workflow


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    """One runtime (one run) and one local runner process for all the examples: a long-lived worker."""
    rt = iworkflow.configure(broker="memory://", executor="local", slots=1,
                             home=str(tmp_path_factory.mktemp("home")))
    yield rt
    iworkflow.shutdown()


def test_common_kwargs_are_part_of_each_fan_out_jobs_identity(runtime):
    @work(map_results=True, cache=True)
    def f(a, b):
        return a * 100 + b

    @workflow(local=True)
    def run(a):
        kws = [{"b": 1}, {"b": 2}]
        r = f(a=a, multi_jobs_kwargs_list=kws)
        return [r.get_result(args=k) for k in kws]

    assert (run(1), run(2)) == ([101, 102], [201, 202])


def test_single_calls_with_positional_arguments_each_get_their_own_result(runtime):
    @work(cache=True)
    def sq(x, k):
        return x * k

    @workflow(local=True)
    def drv():
        return [sq(i, 10) for i in range(4)]

    assert drv() == [0, 10, 20, 30]


# --- the property -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Call:
    """Everything a call can differ in."""

    positional: int
    kwarg: int
    pre_kwargs: int
    entry: int
    body: int
    helper: int
    closure: int

    def expected(self) -> tuple:
        return dataclasses.astuple(self)


KINDS = [f.name for f in dataclasses.fields(Call)]
calls = st.builds(Call, *(st.integers(0, 3) for _ in KINDS))


def _function(body: int, closure: int):
    """A job function built from source: ``body`` is a constant in its code, ``closure`` a captured value."""
    source = (
        "def outer(captured):\n"
        "    def job(positional, kwarg=0, pre_kwargs=0, entry=0):\n"
        "        import identity_helper\n"
        f"        return (positional, kwarg, pre_kwargs, entry, {body}, identity_helper.VALUE, captured), "
        "random.random()\n"
        "    return job\n"
    )
    namespace = {"__name__": "generated_jobs", "random": random}
    exec(compile(source, "<generated job>", "exec"), namespace)  # noqa: S102 - the test's own source
    return namespace["outer"](closure)


def _call(tree, call: Call, reuse: bool):
    """Run ``call`` as a one-job fan-out in a workflow shipping ``tree``; returns (value, nonce, cached)."""
    (tree / "identity_helper.py").write_text(f"VALUE = {call.helper}\n")
    job = work(map_results=True, cache=reuse, pre_kwargs={"pre_kwargs": call.pre_kwargs})(
        _function(call.body, call.closure))

    def driver():
        r = job(call.positional, kwarg=call.kwarg, multi_jobs_kwargs_list=[{"entry": call.entry}])
        return r.get_result(args={"entry": call.entry}, with_details=True)

    (value, nonce), details = Workflow(driver, source_dir=str(tree)).run()
    return value, nonce, details["cached"]


@settings(max_examples=40, deadline=None)
@given(a=calls, kind=st.sampled_from([*KINDS, None]), delta=st.integers(1, 3), reuse=st.booleans())
@example(a=Call(0, 0, 0, 0, 0, 0, 0), kind=None, delta=1, reuse=True)
@example(a=Call(0, 0, 0, 0, 0, 0, 0), kind=None, delta=1, reuse=False)
def test_calls_differing_in_anything_never_share_a_result(runtime, tmp_path_factory, a, kind, delta, reuse):
    tree = tmp_path_factory.getbasetemp() / "identity-tree"
    tree.mkdir(exist_ok=True)
    runtime.result_cache.clear()  # only ``a`` may give ``b`` its result
    b = a if kind is None else dataclasses.replace(a, **{kind: getattr(a, kind) + delta})
    value_a, nonce_a, _cached = _call(tree, a, reuse)
    value_b, nonce_b, cached_b = _call(tree, b, reuse)
    assert value_a == a.expected() and value_b == b.expected()
    shared = nonce_a == nonce_b
    assert shared == (kind is None and reuse), f"{kind or 'identical call'} with reuse={reuse}: shared={shared}"
    assert cached_b == shared


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_of_difference_is_its_own_call(runtime, tmp_path_factory, kind):
    """The property's examples cover every kind; this names each one, reuse on."""
    tree = tmp_path_factory.getbasetemp() / "identity-tree"
    tree.mkdir(exist_ok=True)
    runtime.result_cache.clear()
    a = Call(1, 1, 1, 1, 1, 1, 1)
    b = dataclasses.replace(a, **{kind: 2})
    value_a, nonce_a, _ = _call(tree, a, True)
    value_b, nonce_b, cached_b = _call(tree, b, True)
    assert (value_a, value_b) == (a.expected(), b.expected())
    assert nonce_a != nonce_b and not cached_b
