"""``iworkflow submit script.py:func``: send a workflow's driver to the workers, print its id, exit."""
from __future__ import annotations

import json

import typer


def submit(
    target: str = typer.Argument(..., help="script.py:func or package.module:func (a @workflow function)"),
    kwargs: str = typer.Option("{}", "--kwargs", help="JSON object of keyword arguments for the function"),
    broker: str | None = typer.Option(None, help="bus URL (amqp://..., stomp://...); default: settings"),
    queue: str | None = typer.Option(None, help="job queue the driver and its works go to"),
) -> None:
    """Run the workflow detached: its driver becomes a job on a worker; prints the workflow id."""
    import iworkflow
    from iworkflow.errors import IWorkflowError

    from .run import load_target

    try:
        params = json.loads(kwargs)
    except ValueError as err:
        raise typer.BadParameter(f"--kwargs is not JSON: {err}") from None
    if not isinstance(params, dict):
        raise typer.BadParameter("--kwargs must be a JSON object, e.g. '{\"n\": 3}'")
    try:
        runtime = iworkflow.configure(executor="broker", broker=broker, queue=queue)
        if runtime.settings.is_embedded:
            typer.echo("error: a detached workflow needs a broker: pass --broker amqp://... or stomp://... "
                       "(or set IWORKFLOW_BROKER) and start `iworkflow worker`", err=True)
            raise typer.Exit(2)
        func = load_target(target)
        opts = dict(getattr(func, "__iworkflow_workflow__", {}) or {})
        opts.pop("local", None)
        opts["executor"] = "broker"
        if queue:
            opts["queue"] = queue
        plain = getattr(func, "__wrapped__", func) if hasattr(func, "__iworkflow_workflow__") else func
        wf = iworkflow.Workflow(plain, kwargs=params, **opts)
        workflow_id = wf.submit()
    except IWorkflowError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    typer.echo(workflow_id)
