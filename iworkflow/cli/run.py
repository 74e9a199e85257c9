"""``iworkflow run script.py:func``: run a workflow function here, on the configured executor."""
from __future__ import annotations

import json
from typing import Optional

import typer


def load_target(target: str):
    """Import ``path/to/script.py:func`` or ``package.module:func`` and return the function."""
    import importlib
    import importlib.util
    import os
    import sys

    module_ref, sep, attr = target.rpartition(":")
    if not sep or not module_ref or not attr:
        raise typer.BadParameter(f"{target!r} is not of the form script.py:function or package.module:function")
    if module_ref.endswith(".py"):
        path = os.path.abspath(module_ref)
        if not os.path.isfile(path):
            raise typer.BadParameter(f"script {path} does not exist")
        sys.path.insert(0, os.path.dirname(path))
        name = os.path.splitext(os.path.basename(path))[0]
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(module_ref)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise typer.BadParameter(f"{module_ref} has no attribute {attr!r}") from None


def run(
    target: str = typer.Argument(..., help="script.py:func or package.module:func"),
    kwargs: str = typer.Option("{}", "--kwargs", help="JSON object of keyword arguments for the function"),
    executor: Optional[str] = typer.Option(None, help="executor spec (local, thread, broker, dask://...)"),
    broker: Optional[str] = typer.Option(None, help="bus URL (memory://, amqp://..., stomp://...)"),
    resume: bool = typer.Option(False, "--resume", help="continue the last run of this workflow: calls that "
                                "match one of its calls exactly reuse its results (IWORKFLOW_RESUME=last)"),
) -> None:
    """Run a workflow (or any function) in this process and print its return value."""
    import iworkflow

    if executor or broker or resume:
        iworkflow.configure(executor=executor, broker=broker, resume="last" if resume else None)
    func = load_target(target)
    try:
        params = json.loads(kwargs)
    except ValueError as err:
        raise typer.BadParameter(f"--kwargs is not JSON: {err}") from None
    target_func = getattr(func, "__wrapped__", func) if hasattr(func, "__iworkflow_workflow__") else func
    if hasattr(func, "__iworkflow_workflow__"):
        value = iworkflow.Workflow(target_func, kwargs=params, **_workflow_options(func)).run()
    else:
        value = func(**params)
    typer.echo(repr(value))


def _workflow_options(func) -> dict:
    opts = dict(func.__iworkflow_workflow__)
    opts.pop("local", None)
    return opts
