"""Which work -> work edges a driver records: results passed on as they came (lists, get_all_results()),
and values derived from them only inside ``depends_on``."""
from __future__ import annotations

import pytest

import iworkflow
from iworkflow.errors import ConfigurationError


@iworkflow.work
def square(x):
    return x * x


@iworkflow.work(map_results=True)
def cube(x):
    return x ** 3


@iworkflow.work
def total(values):
    return sum(values)


@iworkflow.work
def total_of(results):
    return sum(results.values())


def parents_of_last_work() -> list[str]:
    return iworkflow.current_workflow().works[-1].parents


def run(driver):
    return iworkflow.workflow(local=True, name="provenance")(driver)()


def test_a_fan_outs_list_of_small_ints_passed_on_draws_the_edge(threaded):
    def driver():
        squares = square(multi_jobs_kwargs_list=[{"x": i} for i in range(4)])
        assert total(values=squares) == 14
        return parents_of_last_work(), iworkflow.current_workflow().works[0].internal_id

    parents, first = run(driver)
    assert parents == [first]


def test_a_large_int_a_work_returned_draws_the_edge_and_a_small_one_does_not(threaded):
    def driver():
        big, small = square(x=1000), square(x=3)
        assert total(values=[big]) == 1_000_000
        after_big = parents_of_last_work()
        total(values=[small])
        works = iworkflow.current_workflow().works
        return after_big, parents_of_last_work(), works[0].internal_id

    after_big, after_small, first = run(driver)
    assert after_big == [first]
    assert after_small == [], "9 is CPython's shared 9: its identity says nothing (use depends_on)"


def test_get_all_results_passed_on_draws_the_edge(threaded):
    def driver():
        cubes = cube(multi_jobs_kwargs_list=[{"x": i} for i in range(3)])
        assert total_of(results=cubes.get_all_results()) == 9
        return parents_of_last_work(), iworkflow.current_workflow().works[0].internal_id

    parents, first = run(driver)
    assert parents == [first]


def test_a_derived_scalar_draws_no_edge_by_itself(threaded):
    def driver():
        cubes = cube(multi_jobs_kwargs_list=[{"x": i} for i in range(3)])
        best = max(cubes.get_all_results().values())
        square(x=best)
        return parents_of_last_work()

    assert run(driver) == []


def test_depends_on_draws_the_edge_for_a_derived_scalar(threaded):
    def driver():
        cubes = cube(multi_jobs_kwargs_list=[{"x": i} for i in range(3)])
        best = max(cubes.get_all_results().values())
        with iworkflow.depends_on(cubes, None):
            assert square(x=best) == 64
        inside = parents_of_last_work()
        square(x=best + 1)
        return inside, parents_of_last_work(), iworkflow.current_workflow().works[0].internal_id

    inside, after, first = run(driver)
    assert inside == [first] and after == [], "only the works called inside the block"


def test_depends_on_refuses_a_value_no_work_returned(threaded):
    def driver():
        with iworkflow.depends_on([1, 2, 3]):
            pass

    with pytest.raises(ConfigurationError, match="which no work of this workflow returned"):
        run(driver)


def test_depends_on_refuses_a_stray_value_inside_another_depends_on(threaded):
    def driver():
        cubes = cube(multi_jobs_kwargs_list=[{"x": i} for i in range(2)])
        with iworkflow.depends_on(cubes), iworkflow.depends_on(12345.5):
            pass

    with pytest.raises(ConfigurationError, match="which no work of this workflow returned"):
        run(driver)


def test_depends_on_outside_a_workflow_is_refused(threaded):
    with pytest.raises(ConfigurationError, match="inside a workflow"), iworkflow.depends_on():
        pass
