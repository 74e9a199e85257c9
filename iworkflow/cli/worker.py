"""``iworkflow worker --broker URL --queue Q --slots N``: serve jobs from a broker until SIGTERM."""
from __future__ import annotations

import typer


def worker(
    broker: str | None = typer.Option(None, help="bus URL (amqp://..., stomp://...); default: settings"),
    queue: str | None = typer.Option(None, help="job queue to serve (jobs.<queue>); default: settings"),
    slots: int | None = typer.Option(None, min=1, help="jobs run at once; default: one per core"),
    driver_slots: int = typer.Option(4, min=1, help="detached workflow drivers run at once, outside --slots"),
    grace: float = typer.Option(600.0, help="seconds SIGTERM waits for running jobs before leaving them"),
) -> None:
    """Run jobs from the broker; SIGTERM/Ctrl-C stop taking jobs and finish the running ones."""
    import logging
    import os
    import signal
    import sys
    import threading

    from iworkflow.bus import connect
    from iworkflow.config import load_settings, redact_url
    from iworkflow.errors import IWorkflowError
    from iworkflow.worker import Worker

    log = logging.getLogger("iworkflow.worker")
    try:
        settings = load_settings(broker=broker, queue=queue, slots=slots, executor="broker")
    except IWorkflowError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    if settings.is_embedded:
        typer.echo("error: a worker needs a broker: pass --broker amqp://... or stomp://... "
                   "(or set IWORKFLOW_BROKER)", err=True)
        raise typer.Exit(2)
    # runner processes (and detached drivers running in them) reach the same broker and queue
    os.environ.update(IWORKFLOW_BROKER=settings.broker, IWORKFLOW_EXECUTOR="broker",
                      IWORKFLOW_QUEUE=settings.queue, IWORKFLOW_SECRET=settings.secret)
    try:
        bus = connect(settings.broker, settings)
    except IWorkflowError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    w = Worker(settings, bus, slots=settings.effective_slots, driver_slots=driver_slots)
    w.start()
    typer.echo(f"worker {w.name} ready: {redact_url(settings.broker)} queue={w.queue} slots={w.slots}")
    sys.stdout.flush()
    while not stop.wait(1.0):
        pass
    log.info("worker %s stopping: finishing running jobs", w.name)
    clean = w.stop(grace=grace)
    bus.close()
    typer.echo(f"worker {w.name} stopped after {w.served} job(s)")
    if not clean:
        os._exit(1)
