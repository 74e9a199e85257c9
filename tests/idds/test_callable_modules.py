"""``iworkflow.workflow`` / ``iworkflow.work`` are modules (``import iworkflow.workflow as m``) and, called,
the decorators (``from iworkflow import workflow``): both spellings users have must hold."""
from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
import types

import iworkflow
import iworkflow.asyncresult as asyncresult_module
import iworkflow.work as work_module
import iworkflow.workflow as workflow_module
from iworkflow import MapResult, Workflow, work, workflow


def test_importing_the_submodules_gives_the_modules():
    for module, name, cls in ((workflow_module, "iworkflow.workflow", "Workflow"),
                              (work_module, "iworkflow.work", "Work"),
                              (asyncresult_module, "iworkflow.asyncresult", "AsyncResult")):
        assert isinstance(module, types.ModuleType) and module.__name__ == name and hasattr(module, cls)
        assert module is sys.modules[name]


def test_the_package_names_are_the_same_modules_and_they_decorate():
    assert iworkflow.workflow is workflow_module and iworkflow.work is work_module
    assert workflow is workflow_module and callable(workflow) and callable(work)
    assert "local" in inspect.signature(workflow).parameters
    assert "map_results" in inspect.signature(work).parameters


def test_every_decorator_spelling_works_from_the_package(embedded):
    @work
    def double(x):
        return 2 * x

    @work(map_results=True)
    def triple(x):
        return 3 * x

    @workflow(local=True)
    def driver(n):
        return double(n), triple(group_kwargs=[{"x": n}]).get_result(args={"x": n})

    @workflow
    def detached():
        return "ran"

    @workflow(return_workflow=True)
    def unrun():
        return "ran"

    assert double.__name__ == "double" and driver(5) == (10, 15)
    assert detached().wait(timeout=60) == "ran" and isinstance(unrun(), Workflow)
    assert isinstance(triple(group_kwargs=[{"x": 1}]), MapResult)


def test_the_submodule_attributes_are_the_plain_functions():
    from iworkflow.work import work as work_function
    from iworkflow.workflow import workflow as workflow_function

    assert isinstance(workflow_function, types.FunctionType) and isinstance(work_function, types.FunctionType)


def test_a_fresh_interpreter_gets_the_module_first_and_the_decorator_after():
    code = textwrap.dedent("""
        import types
        import iworkflow.workflow as m
        assert isinstance(m, types.ModuleType) and m.__name__ == "iworkflow.workflow", m
        from iworkflow import workflow, work
        assert workflow is m
        @workflow(return_workflow=True)
        def f():
            pass
        print(type(f()).__name__)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Workflow"


def test_a_driver_that_calls_the_decorators_by_name_ships_by_value(embedded):
    import cloudpickle

    def square(x):
        return x * x

    def driver():  # refers to the callable modules `work` and `workflow` as globals of this test module
        assert callable(workflow)
        return work(square)(x=3)

    assert cloudpickle.loads(cloudpickle.dumps(work)) is work_module
    assert workflow(driver)().wait(timeout=120) == 9
