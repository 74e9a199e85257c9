"""The ``iworkflow`` command line; each sub-command lives in its own module and imports lazily."""
from __future__ import annotations

import typer

from . import artifacts as _artifacts
from . import run as _run
from . import server as _server
from . import status as _status
from . import submit as _submit
from . import worker as _worker

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Run Python functions as distributed jobs.")


@app.callback()
def _root(log_level: str = typer.Option("WARNING", "--log-level", help="DEBUG, INFO, WARNING or ERROR")) -> None:
    import logging

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


app.command("run")(_run.run)
app.command("server")(_server.server)
app.command("status")(_status.status)
app.command("logs")(_status.logs)
app.command("cancel")(_status.cancel)
app.command("retry")(_status.retry)
app.command("workers")(_status.workers)
app.command("worker")(_worker.worker)
app.command("submit")(_submit.submit)
app.add_typer(_artifacts.app, name="artifacts")


def main() -> None:
    app()
