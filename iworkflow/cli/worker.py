"""``iworkflow worker --broker URL --queue Q --slots N``: serve jobs from a broker until SIGTERM."""
from __future__ import annotations

import typer

#: the exit code of a worker that lost a job consumer it could not re-establish
EXIT_CONSUMER_LOST = 3


def worker(
    broker: str | None = typer.Option(None, help="bus URL (amqp://user@host/, stomp://...) without a password; "
                                                 "default: settings (IWORKFLOW_BROKER)"),
    broker_password_file: str | None = typer.Option(
        None, "--broker-password-file", help="file holding the broker password (or set IWORKFLOW_BROKER_PASSWORD): "
                                             "a password on the command line is shown by `ps` to every user"),
    queue: str | None = typer.Option(None, help="job queue to serve (jobs.<queue>); default: settings"),
    slots: int | None = typer.Option(None, min=1, help="jobs run at once; default: one per core"),
    driver_slots: int = typer.Option(4, min=1, help="detached workflow drivers run at once, outside --slots"),
    grace: float = typer.Option(600.0, help="seconds SIGTERM waits for running jobs before leaving them"),
    health_port: int = typer.Option(0, min=0, max=65535, help="serve GET /health (consumers, jobs held) on this "
                                                              "port; 0: off"),
    health_host: str = typer.Option("127.0.0.1", help="address the health endpoint listens on"),
    name: str | None = typer.Option(None, help="the name this worker reports and jobs show (default host:pid); "
                                               "keep it the same across restarts and unique among live workers"),
) -> None:
    """Run jobs from the broker; SIGTERM/Ctrl-C stop taking jobs and finish the running ones."""
    import logging
    import os
    import signal
    import sys
    import threading

    from iworkflow.bus import connect
    from iworkflow.config import has_password, load_settings, redact_url
    from iworkflow.errors import IWorkflowError
    from iworkflow.worker import Worker

    log = logging.getLogger("iworkflow.worker")
    if broker and has_password(broker):
        typer.echo(f"error: --broker {redact_url(broker)} carries a password, which `ps` shows to every user of this "
                   "machine: give the URL without it and the password in IWORKFLOW_BROKER_PASSWORD or "
                   "--broker-password-file FILE (or the whole URL in IWORKFLOW_BROKER)", err=True)
        raise typer.Exit(2)
    try:
        settings = load_settings(broker=broker, queue=queue, slots=slots, executor="broker",
                                 broker_password_file=broker_password_file)
        settings.broker_url_for(settings.broker)  # a missing password file fails here, not in the bus
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
    if settings.broker_password_file:
        os.environ["IWORKFLOW_BROKER_PASSWORD_FILE"] = settings.broker_password_file
    try:
        bus = connect(settings.broker, settings)
    except IWorkflowError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    w = Worker(settings, bus, slots=settings.effective_slots, driver_slots=driver_slots, name=name or None)
    w.start()
    health = _serve_health(w, health_host, health_port) if health_port else None
    where = f" health=http://{health_host}:{health.server_address[1]}/health" if health is not None else ""
    typer.echo(f"worker {w.name} ready: {redact_url(settings.broker)} queue={w.queue} slots={w.slots}{where}")
    sys.stdout.flush()
    while not stop.wait(1.0) and w.failed is None:
        pass
    if w.failed is not None:
        typer.echo(f"error: {w.failed}; stopping (exit {EXIT_CONSUMER_LOST})", err=True)
    log.info("worker %s stopping: finishing running jobs", w.name)
    clean = w.stop(grace=grace)
    if health is not None:
        health.shutdown()
    bus.close()
    typer.echo(f"worker {w.name} stopped after {w.served} job(s)")
    if w.failed is not None:
        sys.stdout.flush()
        os._exit(EXIT_CONSUMER_LOST)
    if not clean:
        os._exit(1)


def _serve_health(w, host: str, port: int):
    """``GET /health``: the worker's status as JSON (200 while every consumer is up, else 503)."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            if self.path.split("?")[0] not in ("/health", "/"):
                self.send_error(404)
                return
            status = w.status()
            body = json.dumps(status).encode()
            self.send_response(200 if status["ok"] else 503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Health)
    threading.Thread(target=server.serve_forever, name="iworkflow-worker-health", daemon=True).start()
    return server
