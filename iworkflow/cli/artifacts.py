"""``iworkflow artifacts list|show|get|promote``: the artifact catalog from the shell (server or local home)."""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, help="Versioned artifacts: list, show, get and promote them.")
SERVER_HELP = "server URL (default: settings.server_url / IWORKFLOW_SERVER_URL; none: the local iworkflow home)"
REF_HELP = "NAME, NAME@VERSION (a number or a digest) or NAME:TAG"


def _store(server: str | None):
    from iworkflow.artifacts import configured
    from iworkflow.config import load_settings

    return configured(load_settings(server_url=server) if server else load_settings())


def _fail(err: Exception) -> typer.Exit:
    typer.echo(f"error: {err}", err=True)
    return typer.Exit(1)


def _run(fn):
    from iworkflow.errors import IWorkflowError

    try:
        return fn()
    except (IWorkflowError, LookupError, OSError) as err:
        raise _fail(err) from None


def _when(ts: float | None) -> str:
    if not ts:
        return "-"
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _made_by(v) -> str:
    lin = v.lineage
    if lin.job_key:
        return f"job {lin.job_key[:12]} of work {lin.work_name or '-'} on {lin.executor} ({lin.worker})"
    return f"driver {lin.worker}"


@app.command("list")
def list_(name: str | None = typer.Argument(None, help="an artifact name: list its versions; omit to list names"),
          server: str | None = typer.Option(None, "--server", help=SERVER_HELP)) -> None:
    """List artifact names, or the versions of one name."""
    store = _store(server)
    if name is None:
        names = _run(store.names)
        if not names:
            typer.echo("no artifacts saved")
        for n in names:
            tags = ", ".join(f"{t}={v}" for t, v in n.tags.items())
            typer.echo(f"{n.name}  latest {n.latest}  ({n.versions} version{'s' if n.versions != 1 else ''})  "
                       f"{_when(n.updated_at)}" + (f"  tags: {tags}" if tags else ""))
        return
    for v in _run(lambda: store.list(name)):
        tags = f"  [{', '.join(v.tags)}]" if v.tags else ""
        typer.echo(f"{v.name}@{v.version}  {v.digest[:12]}  {v.kind:<9}  {v.size:>10} B  "
                   f"{_when(v.lineage.created_at)}  {_made_by(v)}{tags}")


@app.command("show")
def show(ref: str = typer.Argument(..., help=REF_HELP),
         server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
         as_json: bool = typer.Option(False, "--json", help="print the record as JSON")) -> None:
    """Show one version: digest, size, metadata, tags and lineage (the job that made it)."""
    from iworkflow.artifacts import parse_ref

    store = _store(server)
    v = _run(lambda: store.show(*parse_ref(ref)))
    if as_json:
        typer.echo(json.dumps(v.to_json(), indent=2, sort_keys=True))
        return
    typer.echo(f"{v.name}@{v.version}  {v.kind}  {v.size} bytes  sha256 {v.digest}")
    if v.filename:
        typer.echo(f"  filename: {v.filename}")
    typer.echo(f"  tags: {', '.join(v.tags) or '-'}")
    typer.echo(f"  metadata: {json.dumps(v.metadata, sort_keys=True)}")
    typer.echo(f"  made by: {_made_by(v)} at {_when(v.lineage.created_at)}")
    for field in ("workflow_id", "work_id", "job_key", "attempt", "call_identity", "func_digest", "source_digest",
                  "args_digest"):
        typer.echo(f"  {field}: {getattr(v.lineage, field) or '-'}")


@app.command("get")
def get(ref: str = typer.Argument(..., help=REF_HELP),
        output: Path | None = typer.Option(None, "-o", "--output",
                                           help="where to write it (default: its file name, or NAME-vN.pkl)"),
        server: str | None = typer.Option(None, "--server", help=SERVER_HELP)) -> None:
    """Write one version to a new path: a file or folder as saved, an object as its pickle."""
    from iworkflow.artifacts import parse_ref

    store = _store(server)
    name, version = _run(lambda: parse_ref(ref))
    record = _run(lambda: store.show(name, version))
    dest = output or Path(record.filename or f"{record.name}-v{record.version}.pkl")
    written = _run(lambda: store.get(name, record.version, dest))
    typer.echo(f"{record.name}@{record.version} ({record.kind}, {record.size} bytes) written to {written}")


@app.command("promote")
def promote(ref: str = typer.Argument(..., help="NAME@VERSION (or NAME:TAG) to point the tag at"),
            tag: str = typer.Argument(..., help="the tag to move, e.g. production"),
            server: str | None = typer.Option(None, "--server", help=SERVER_HELP)) -> None:
    """Point a tag at a version (the tag moves; versions never change)."""
    from iworkflow.artifacts import parse_ref

    store = _store(server)
    v = _run(lambda: store.promote(*parse_ref(ref), tag))
    typer.echo(f"{v.name}:{tag} -> version {v.version}")
