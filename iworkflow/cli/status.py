"""``iworkflow status|logs|cancel|retry``: read and steer workflows through the server's REST API."""
from __future__ import annotations

import datetime as _dt
from typing import Any
from urllib.parse import quote

import typer

SERVER_HELP = "server URL (default: settings.server_url / IWORKFLOW_SERVER_URL)"
ORDER = ("finished", "running", "retrying", "queued", "failed", "cancelled")


class Client:
    """A thin REST client: base URL and token from the options or the settings."""

    def __init__(self, server: str | None):
        from iworkflow.config import load_settings

        settings = load_settings()
        self.url = (server or settings.server_url).rstrip("/")
        self.token = settings.token
        if not self.url:
            typer.echo("error: no server URL: pass --server http://host:8765 or set IWORKFLOW_SERVER_URL", err=True)
            raise typer.Exit(2)

    def call(self, method: str, path: str, missing: tuple[int, ...] = ()) -> Any:
        """The JSON answer; None for an HTTP status in ``missing``; any other error ends the command with its line."""
        from iworkflow.source_http import ServerError, request

        try:
            body = b"" if method == "POST" else None
            return request(method, f"{self.url}/api{path}", self.token, body=body).json()
        except ServerError as err:
            if err.status in missing:
                return None
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(1) from None


def counts_text(c: dict) -> str:
    parts = [f"{c[s]} {s}" for s in ORDER if c.get(s)]
    n = c.get("total", 0)
    return f"{n} job{'s' if n != 1 else ''}" + (": " + ", ".join(parts) if parts else "")


def _when(ts: float | None) -> str:
    if not ts:
        return "-"
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def render_tree(detail: dict, jobs_by_work: dict[str, list[dict]]) -> list[str]:
    """The workflow -> works -> jobs tree as text lines; failed jobs are listed with their errors."""
    n = len(detail["works"])
    header = (f"workflow {detail['name'] or '(unnamed)'}  {detail['id']}  {detail['status']}  "
              f"({n} work{'s' if n != 1 else ''}, {counts_text(detail['counts'])})")
    lines = [header]
    if detail.get("error"):
        lines.append(f"  error: {detail['error']}")
    works = detail["works"]
    for i, w in enumerate(works):
        last = i == len(works) - 1
        lines.append(f"{'└──' if last else '├──'} work {w['name']}  {w['id'][:8]}  {w['status']}  "
                     f"{counts_text(w['counts'])}")
        failed = [j for j in jobs_by_work.get(w["id"], []) if j["status"] in ("failed", "cancelled")]
        for k, j in enumerate(failed):
            branch = "    " if last else "│   "
            lines.append(f"{branch}{'└──' if k == len(failed) - 1 else '├──'} {j['status']} job {j['job_key'][:12]} "
                         f"(id {j['id']}, attempt {j['attempt']}, worker {j['worker'] or '-'}): {j['error'] or ''}")
    return lines


TERMINAL = ("finished", "subfinished", "failed", "cancelled")


def _screen(client: Client, workflow_id: str | None, limit: int) -> tuple[list[str], bool]:
    """What `status` prints now, and whether it can no longer change (the workflow ended)."""
    if workflow_id is None:
        rows = client.call("GET", f"/workflows?limit={limit}")
        lines = [f"{wf['id']}  {wf['status']:<11}  {_when(wf['submitted_at'])}  {wf['name']}  "
                 f"({counts_text(wf['counts'])})" for wf in rows]
        return lines or ["no workflows recorded"], False
    detail = client.call("GET", f"/workflows/{quote(workflow_id, safe='')}")
    jobs = client.call("GET", f"/jobs?workflow_id={quote(detail['id'], safe='')}&status=failed,cancelled&limit=5000")
    by_work: dict[str, list[dict]] = {}
    for j in jobs:
        by_work.setdefault(j["work_id"], []).append(j)
    ended = detail["status"] in TERMINAL and all(w["status"] in TERMINAL for w in detail["works"])
    return render_tree(detail, by_work), ended


def status(
    workflow_id: str | None = typer.Argument(None, help="workflow id (or a unique prefix); omit to list"),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    limit: int = typer.Option(20, min=1, max=1000, help="how many workflows to list"),
    watch: bool = typer.Option(False, "--watch", "-w", help="redraw until the workflow ends (Ctrl-C stops)"),
    interval: float = typer.Option(2.0, min=0.2, help="seconds between redraws with --watch"),
) -> None:
    """Print a workflow's tree (works, job counts, failed jobs with errors), or list recent workflows."""
    import sys
    import time

    client = Client(server)
    lines, ended = _screen(client, workflow_id, limit)
    tty = sys.stdout.isatty()
    typer.echo("\n".join(lines))
    try:
        while watch and not ended:
            time.sleep(interval)
            new, ended = _screen(client, workflow_id, limit)
            if new == lines:
                continue
            if tty:
                typer.echo("\x1b[H\x1b[2J", nl=False)  # redraw in place
            elif lines:
                typer.echo("")
            lines = new
            typer.echo("\n".join(lines))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def logs(
    job: str = typer.Argument(..., help="job id, a job-key prefix, work:key (prefixes as `status` prints them), or a "
                                        "work with one job"),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    tail: int = typer.Option(200, min=0, help="print the last N lines (0 = all)"),
    follow: bool = typer.Option(False, "--follow", "-f", help="keep printing new events and output until the job "
                                                              "ends"),
    interval: float = typer.Option(1.0, min=0.2, help="seconds between polls with --follow"),
) -> None:
    """Print a job's timeline, error, traceback and captured output tail (live while it runs)."""
    import time

    client = Client(server)
    log = client.call("GET", f"/jobs/{quote(job, safe='')}/log?tail={tail}")
    typer.echo(log["text"])
    job_id = log["job"]["id"]
    seen_events = len(log["events"])
    output = log.get("output") or ""
    try:
        while follow and log["job"]["status"] not in ("finished", "failed", "cancelled"):
            time.sleep(interval)
            log = client.call("GET", f"/jobs/{job_id}/log?tail=1")
            for e in log["events"][seen_events:]:
                typer.echo(f"{_when(e['ts'])}  {e['type']:<13} attempt {e['attempt']}  {e.get('worker') or ''}  "
                           f"{e.get('message') or ''}".rstrip())
            seen_events = len(log["events"])
            new = log.get("output") or ""
            if new != output:
                typer.echo(new.removeprefix(output), nl=False)
                output = new
        if follow and log.get("error"):
            typer.echo(f"error: {log['error']}")
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def workers(
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
    state: str | None = typer.Option(None, help="only alive, stopped or lost workers"),
) -> None:
    """List the workers that reported to the server: queue, slots, running and prefetched jobs, last heartbeat."""
    query = f"?state={quote(state, safe='')}" if state else ""
    rows = Client(server).call("GET", f"/workers{query}")
    if not rows:
        typer.echo("no workers reported")
    for w in rows:
        typer.echo(f"{w['name']}  {w['state']:<7}  queue {w['queue']}  slots {w['slots']}  running {w['running']}  "
                   f"prefetched {w['held']}  served {w['served']}  last heartbeat {_when(w['last_heartbeat'])}")


def cancel(
    workflow_id: str = typer.Argument(..., help="workflow id (or a unique prefix)"),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
) -> None:
    """Cancel a workflow: its unfinished jobs end as cancelled and workers are told to stop them."""
    out = Client(server).call("POST", f"/workflows/{quote(workflow_id, safe='')}/cancel")
    typer.echo(f"workflow {out['workflow_id']} {out['status']}: {out['jobs_cancelled']} unfinished jobs cancelled")


def retry(
    ref: str = typer.Argument(..., help="workflow or work id (or a unique prefix)"),
    server: str | None = typer.Option(None, "--server", help=SERVER_HELP),
) -> None:
    """Run the failed jobs of a workflow's (or one work's) running works again; their drivers resubmit them.

    A work that ended was handed to its caller already: the server refuses it and says so."""
    client = Client(server)
    path = quote(ref, safe="")
    out = client.call("POST", f"/workflows/{path}/retry-failed", missing=(404,))
    if out is None:
        out = client.call("POST", f"/works/{path}/retry-failed")
    typer.echo(f"workflow {out['workflow_id']}: {out['jobs_retried']} failed job(s) sent again")
    for refusal in out["refused"]:
        typer.echo(f"not retried: {refusal['reason']}", err=True)
