"""``iworkflow server``: recorder + monitor + REST API + dashboard in one process."""
from __future__ import annotations

import os

import typer

_TRUE = ("1", "true", "yes", "on")


def server(
    host: str = typer.Option("127.0.0.1", help="interface to listen on (0.0.0.0 for every interface)"),
    port: int = typer.Option(8765, help="TCP port of the REST API and dashboard"),
    db: str | None = typer.Option(None, help="database URL (default: settings.db, else SQLite in the iworkflow home)"),
    broker: str | None = typer.Option(None, help="bus URL whose events topic is recorded (default: settings.broker)"),
    read_token_required: bool = typer.Option(
        os.environ.get("IWORKFLOW_READ_TOKEN_REQUIRED", "").lower() in _TRUE, "--read-token-required",
        help="require the bearer token on reads too (env IWORKFLOW_READ_TOKEN_REQUIRED)"),
    allowed_host: list[str] | None = typer.Option(
        None, "--allowed-host", help="a Host name clients reach the server by (repeatable); other Host headers are "
                                   "refused against DNS rebinding (default: the address bound and this machine's "
                                   "names; with --host 0.0.0.0 any, unless given)"),
) -> None:
    """Record workflows from the event stream, requeue lost jobs, serve the REST API and dashboard."""
    import signal

    from iworkflow.bus import connect
    from iworkflow.config import load_settings
    from iworkflow.errors import ConfigurationError
    from iworkflow.server.service import Server, ServerOptions

    try:
        settings = load_settings(db=db, broker=broker)
        if settings.is_embedded:
            typer.echo("warning: the bus is memory:// so this server only sees its own process; start it with "
                       "--broker amqp://... (or IWORKFLOW_BROKER) to record workflows run elsewhere", err=True)
        bus = connect(settings.broker, settings)
        srv = Server(settings, bus, ServerOptions(host=host, port=port, read_token_required=read_token_required,
                                                    allowed_hosts=tuple(allowed_host or ())))
        srv.start_background()
    except ConfigurationError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None

    def _stop(_signum, _frame) -> None:
        srv._uvicorn.should_exit = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    typer.echo(f"iworkflow server listening on {srv.url} (dashboard: {srv.url}/, API: {srv.url}/docs)")
    try:
        srv.wait()
    finally:
        srv.stop()
        bus.close()
