"""Run the whole benchmark suite side by side and write ``results/summary.md`` plus PNG plots.

    python benchmarks/run_all.py [--quick | --full] [--repeat N] [--systems a,b,...]

Each round runs every system once, in its own fresh process, one after the other, so the systems see
the same machine state; the tables keep the median over rounds.  Sizes: ``--quick`` 1,000 jobs;
default 1,000 / 3,000 / 10,000; ``--full`` adds 30,000 and 100,000, each run only when the rate measured
at the previous size projects it under ``--budget`` seconds (else marked skipped).  See README.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ALL = ["iworkflow-local", "ppe", "ppe-tuned", "ray", "dask", "parsl", "iworkflow-rabbitmq", "iworkflow-rabbitmq-single",
       "iworkflow-activemq", "celery", "celery-chunks", "celery-redis", "celery-redis-chunks"]
BROKER_OF = {"iworkflow-rabbitmq": "raw-rabbitmq", "iworkflow-rabbitmq-single": "raw-rabbitmq",
             "iworkflow-activemq": "raw-activemq", "celery": "raw-rabbitmq", "celery-chunks": "raw-rabbitmq"}
#: the systems offered 1,000,000 jobs by ``--million`` (still only when the previous size projects it in budget)
MILLION = {"iworkflow-local", "iworkflow-rabbitmq", "ppe", "ppe-tuned", "celery-redis-chunks", "celery-chunks"}
#: peers the iworkflow rows are divided by in the ratio tables
PEERS = ["ppe", "ppe-tuned", "ray", "dask", "parsl", "celery", "celery-chunks", "celery-redis", "celery-redis-chunks"]
HPO_IDEAL = 10 * 0.010  # 20 jobs of 10 ms on 2 workers: 10 rounds of 10 ms


def run_json(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> dict | None:
    """Run one measurement process; its last ``BENCH-JSON`` line is the answer (None if it failed)."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
                              cwd=tempfile.gettempdir())  # `python -m` puts the cwd first on sys.path
    except subprocess.TimeoutExpired:
        print(f"  timed out: {' '.join(cmd[1:4])}", file=sys.stderr)
        return None
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("BENCH-JSON "):
            return json.loads(line[len("BENCH-JSON "):])
    print(f"  failed: {' '.join(cmd[1:4])}\n{proc.stderr[-2000:]}", file=sys.stderr)
    return None


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else float("nan")


def median_or_nan(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def collect(args) -> tuple[dict[str, list[dict]], dict[str, list[float]]]:
    variants = [(s, s, {}) for s in args.systems]
    if args.baseline:
        env = {"PYTHONPATH": f"{HERE / 'baseline_site'}{os.pathsep}{args.baseline}", "BENCH_LABEL": " (baseline)"}
        with_baseline = {"iworkflow-local", "iworkflow-rabbitmq", "iworkflow-activemq"}
        variants = [v for s in args.systems for v in ([(s + "@baseline", s, env)] if s in with_baseline else [])
                    + [(s, s, {})]]
    runs: dict[str, list[dict]] = {key: [] for key, _s, _e in variants}
    raw: dict[str, list[float]] = {"raw-rabbitmq": [], "raw-activemq": []}
    wanted_raw = {BROKER_OF[s] for s in args.systems if s in BROKER_OF}
    for r in range(args.repeat):
        print(f"round {r + 1}/{args.repeat}", flush=True)
        for broker in sorted(wanted_raw):
            out = run_json([sys.executable, str(HERE / "raw_broker.py"), broker.split("-")[1], "--messages",
                            str(args.raw_messages)], timeout=300)
            if out:
                raw[broker].append(out["rate"])
                print(f"  {broker}: {out['rate']:,.0f} msg/s", flush=True)
        for key, system, env in variants:
            sizes = args.sizes + ([1_000_000] if args.million and system in MILLION else [])
            cmd = [sys.executable, str(HERE / "systems.py"), system, "--sizes", *map(str, sizes), "--trips",
                   str(args.trips), "--budget", str(args.budget), "--big-budget", str(args.million_budget)] + (
                ["--hpo"] if not args.no_hpo else [])
            started = time.perf_counter()
            out = run_json(cmd, timeout=args.timeout + (3 * args.million_budget if args.million else 0), env=env)
            if out:
                runs[key].append(out)
                rates = ", ".join(f"{int(n):,}: {int(n) / v['seconds']:,.0f}/s" for n, v in out["fanout"].items())
                print(f"  {out['name']}: {rates}; p50 {median_or_nan(out['latency_ms']):.2f} ms "
                      f"({time.perf_counter() - started:.0f}s)", flush=True)
    return runs, raw


def summarise(runs: dict[str, list[dict]], raw: dict[str, list[float]], sizes: list[int]) -> dict[str, dict]:
    rows = {}
    for system, outs in runs.items():
        if not outs:
            continue
        row = {"name": outs[0]["name"], "rate": {}, "rss": {}, "cpu": {}, "rounds": {},
               "failed": {n for o in outs for n in o.get("failed", [])}}
        for n in sizes:
            done = [o["fanout"][str(n)] for o in outs if str(n) in o["fanout"]]
            if done:
                row["rate"][n] = n / statistics.median(d["seconds"] for d in done)
                row["rss"][n] = statistics.median(d["rss_growth"] for d in done)
                row["rounds"][n] = len(done)
                cpu = [d["cpu_s"] for d in done if "cpu_s" in d]
                if cpu:
                    row["cpu"][n] = statistics.median(cpu)
        lat = [x for o in outs for x in o["latency_ms"]]
        row["p50"], row["p99"] = median_or_nan(lat), pct(lat, 0.99)
        hpo = [x for o in outs for x in o["hpo_s"]]
        row["hpo"] = median_or_nan(hpo)
        row["ceiling"] = median_or_nan(raw.get(BROKER_OF.get(system.split("@")[0], ""), []))
        rows[system] = row
    return rows


def markdown(rows: dict[str, dict], raw: dict[str, list[float]], sizes: list[int], args) -> str:
    head = (f"Benchmark suite, {time.strftime('%Y-%m-%d %H:%M')}, Python {platform.python_version()}, "
            f"{os.cpu_count()} cores (shared), {args.repeat} round(s), median over rounds. 2 worker processes x 1 "
            "slot everywhere; no-op function; every iworkflow run checked each result against its job.")
    lines = [head, "", "## No-op fan-out throughput (jobs/s) and single-job round trip", ""]
    cols = " | ".join(f"{n:,} jobs" for n in sizes)
    lines += [f"| system | {cols} | p50 ms | p99 ms | HPO s/iteration | HPO overhead/iteration |",
              "|---|" + "---:|" * (len(sizes) + 4)]
    for row in rows.values():
        rates = " | ".join(f"{row['rate'][n]:,.0f}" + (f" ({row['rounds'][n]}/{args.repeat})"
                                                        if row["rounds"][n] < args.repeat else "")
                           if n in row["rate"] else
                           ("failed" if n in row["failed"] else "skipped") for n in sizes)
        lines.append(f"| {row['name']} | {rates} | {row['p50']:.2f} | {row['p99']:.2f} | {row['hpo']:.3f} | "
                     f"{(row['hpo'] - HPO_IDEAL) * 1000:.0f} ms |")
    for broker, rates in raw.items():
        if rates:
            lines.append(f"| {broker} publish+consume (ceiling) | {statistics.median(rates):,.0f} msg/s |"
                         + " |" * (len(sizes) + 3))
    lines += ["", f"HPO loop: 10 iterations x 20 jobs of a 10 ms function; the ideal iteration on 2 workers is "
              f"{HPO_IDEAL * 1000:.0f} ms, overhead = measured - ideal.",
              "A cell that is the median of fewer rounds than the run's says so, e.g. `(1/3)`.", ""]
    lines += ratio_tables(rows, sizes) + targets(rows, sizes)
    lines += ["", "## Driver memory growth (peak RSS - RSS before the fan-out, MiB)", "",
              f"| system | {cols} |", "|---|" + "---:|" * len(sizes)]
    for row in rows.values():
        lines.append(f"| {row['name']} | " + " | ".join(
            f"{row['rss'][n] / 2**20:.1f}" if n in row["rss"] else "skipped" for n in sizes) + " |")
    lines += ["", "## Driver cost per job: RSS growth / jobs pending (bytes) and driver CPU (µs)", "",
              "Peak RSS growth of the driver during the fan-out divided by the jobs in it (all are pending at the "
              "start), and the driver process's own CPU time (all threads, not its worker children) per job.", "",
              f"| system | {cols} |", "|---|" + "---:|" * len(sizes)]
    for row in rows.values():
        lines.append(f"| {row['name']} | " + " | ".join(
            (f"{row['rss'][n] / n:,.0f} B, {row['cpu'][n] / n * 1e6:,.1f} µs" if n in row["cpu"] else
             f"{row['rss'][n] / n:,.0f} B") if n in row["rss"] else "skipped" for n in sizes) + " |")
    return "\n".join(lines) + "\n"


def rate_of(rows: dict[str, dict], system: str, n: int) -> float | None:
    return rows.get(system, {}).get("rate", {}).get(n)


def ratio_tables(rows: dict[str, dict], sizes: list[int]) -> list[str]:
    """iworkflow local / peer and iworkflow RabbitMQ / peer throughput, per size (> 1: iworkflow faster)."""
    lines = ["## Ratios: iworkflow throughput / peer throughput (> 1 means iworkflow is faster)", ""]
    cols = " | ".join(f"{n:,} jobs" for n in sizes)
    for mine in ("iworkflow-local", "iworkflow-rabbitmq"):
        if mine not in rows:
            continue
        lines += [f"| {rows[mine]['name']} / | {cols} |", "|---|" + "---:|" * len(sizes)]
        for peer in PEERS:
            if peer in rows:
                cells = []
                for n in sizes:
                    a, b = rate_of(rows, mine, n), rate_of(rows, peer, n)
                    cells.append(f"{a / b:.2f}" if a and b else "n/a")
                lines.append(f"| {rows[peer]['name']} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def targets(rows: dict[str, dict], sizes: list[int]) -> list[str]:
    """The issue's targets, each with the measured figure and met / NOT met."""
    def verdict(ok: bool | None) -> str:
        return "n/a (not measured)" if ok is None else ("met" if ok else "NOT met")

    lines = ["## Targets (issue 20)", ""]
    n = 100_000 if 100_000 in sizes else max(sizes)
    a, b = rate_of(rows, "iworkflow-rabbitmq", n), rate_of(rows, "celery-redis-chunks", n)
    lines.append(f"- RabbitMQ fan-out >= 2x Celery chunks on Redis at {n:,} jobs: "
                 f"{f'{a / b:.2f}x' if a and b else 'n/a'} -> {verdict(a / b >= 2 if a and b else None)}")
    row = rows.get("iworkflow-rabbitmq", {})
    cpu = row.get("cpu", {}).get(n)
    lines.append(f"- driver CPU <= 20 µs per job on RabbitMQ at {n:,} jobs: "
                 f"{f'{cpu / n * 1e6:.1f} µs' if cpu else 'n/a'} -> {verdict(cpu / n <= 20e-6 if cpu else None)}")
    a = rate_of(rows, "iworkflow-local", n)
    lines.append(f"- local executor >= 100,000 jobs/s at {n:,} jobs: {f'{a:,.0f}/s' if a else 'n/a'} -> "
                 f"{verdict(a >= 100_000 if a else None)}")
    pairs = [(m, rate_of(rows, "iworkflow-local", m), rate_of(rows, "ppe", m)) for m in sizes]
    worst = min((x / y for _m, x, y in pairs if x and y), default=None)
    lines.append(f"- local >= 1.0x PPE chunksize 1 at every size: worst {f'{worst:.2f}x' if worst else 'n/a'} -> "
                 f"{verdict(worst >= 1.0 if worst else None)}")
    p50 = row.get("p50")
    lines.append(f"- p50 round trip over RabbitMQ <= 2.0 ms: {f'{p50:.2f} ms' if p50 else 'n/a'} -> "
                 f"{verdict(p50 <= 2.0 if p50 == p50 and p50 else None)}")
    for system in ("iworkflow-rabbitmq", "iworkflow-activemq"):
        hpo = rows.get(system, {}).get("hpo")
        ok = None if hpo is None or hpo != hpo else (hpo - HPO_IDEAL) <= 0.005
        lines.append(f"- HPO overhead <= 5 ms/iteration, {system}: "
                     f"{f'{(hpo - HPO_IDEAL) * 1000:.0f} ms' if ok is not None else 'n/a'} -> {verdict(ok)}")
    for system in ("iworkflow-local", "iworkflow-rabbitmq"):
        if not rows.get(system, {}).get("rss"):
            lines.append(f"- {system}: 1,000,000 jobs in < 1 GiB driver growth -> n/a (not measured)")
            continue
        big = max(rows[system]["rss"])
        growth = rows[system]["rss"][big]
        if big >= 1_000_000:
            ok = growth < 2**30 and growth / big <= 1024
            lines.append(f"- {system}: 1,000,000 jobs, driver peak RSS growth {growth / 2**20:,.0f} MiB "
                         f"({growth / big:,.0f} B/job; target < 1 GiB and <= 1 KiB/job) -> {verdict(ok)}")
        else:
            lines.append(f"- {system}: 1,000,000 jobs in < 1 GiB driver growth -> n/a (not run; at {big:,} jobs: "
                         f"{growth / big:,.0f} B/job)")
    for system in ("iworkflow-rabbitmq", "iworkflow-rabbitmq-single", "iworkflow-activemq"):
        r = rows.get(system)
        big = max(r["rate"]) if r and r["rate"] else None
        if big and r["ceiling"] == r["ceiling"]:
            lines.append(f"- {r['name']} / raw broker ceiling at {big:,} jobs = {r['rate'][big] / r['ceiling']:.2f} "
                         "(earlier target >= 0.5)")
    return lines


def plot(rows: dict[str, dict], sizes: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 5.6))
    colors = plt.get_cmap("tab20").colors
    for axis in axes[:2]:
        axis.set_prop_cycle(color=colors, marker=["o", "s", "^", "v", "D"] * 4)
    for row in rows.values():
        ns = sorted(row["rate"])
        axes[0].plot(ns, [n / row["rate"][n] for n in ns], label=row["name"])
        axes[1].plot(ns, [row["rss"][n] / 2**20 for n in ns], label=row["name"])
    names = [r["name"] for r in rows.values()]
    axes[2].barh(names, [r["p50"] for r in rows.values()], label="p50")
    axes[2].barh(names, [r["p99"] - r["p50"] for r in rows.values()], left=[r["p50"] for r in rows.values()],
                 alpha=0.4, label="p99")
    axes[0].set(xscale="log", yscale="log", xlabel="jobs", ylabel="fan-out wall time (s)", title="time vs jobs")
    axes[1].set(xscale="log", yscale="log", xlabel="jobs", ylabel="driver RSS growth (MiB)",
                title="driver memory vs jobs")
    axes[2].set(xscale="log", xlabel="single-job round trip (ms)", title="latency p50 / p99")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=4, fontsize=8)
    axes[2].legend(fontsize=8)
    fig.tight_layout(rect=(0, 0.2, 1, 1))
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="1,000 jobs, 50 round trips, one round")
    size.add_argument("--full", action="store_true", help="also 30,000 and 100,000 jobs (budget-limited)")
    parser.add_argument("--repeat", type=int, default=None, help="rounds (default 2; --quick: 1)")
    parser.add_argument("--sizes", default="", help="comma-separated fan-out sizes, instead of the preset's")
    parser.add_argument("--million", action="store_true", help="also 1,000,000 jobs for the systems that can take "
                        "it (" + ",".join(sorted(MILLION)) + "), when projected under --million-budget")
    parser.add_argument("--million-budget", type=float, default=600.0, help="budget for the 1,000,000 size (s)")
    parser.add_argument("--systems", default=",".join(ALL), help=f"comma-separated subset of {','.join(ALL)}")
    parser.add_argument("--trips", type=int, default=None, help="round trips per system and round (default 200)")
    parser.add_argument("--budget", type=float, default=90.0, help="skip a fan-out projected longer than this (s)")
    parser.add_argument("--timeout", type=float, default=900.0, help="per system and round (s)")
    parser.add_argument("--raw-messages", type=int, default=10000)
    parser.add_argument("--no-hpo", action="store_true")
    parser.add_argument("--baseline", default="", help="a checkout of older iworkflow (e.g. `git archive HEAD`) "
                        "to measure side by side as '(baseline)' rows")
    parser.add_argument("--tag", default="summary", help="output name: results/<tag>.md, results/<tag>.png")
    args = parser.parse_args()
    args.systems = [s for s in args.systems.split(",") if s]
    args.sizes = [int(x) for x in args.sizes.split(",") if x] or (
        [1000] if args.quick else [1000, 3000, 10000] + ([30000, 100000] if args.full else []))
    unknown = [s for s in args.systems if s not in ALL]
    if unknown:
        parser.error(f"unknown system(s) {', '.join(unknown)}; choose from {','.join(ALL)}")
    args.repeat = args.repeat or (1 if args.quick else 2)
    args.trips = args.trips or (50 if args.quick else 200)
    runs, raw = collect(args)
    sizes = args.sizes + ([1_000_000] if args.million else [])
    rows = summarise(runs, raw, sizes)
    RESULTS.mkdir(exist_ok=True)
    text = markdown(rows, raw, sizes, args)
    (RESULTS / f"{args.tag}.md").write_text(text)
    (RESULTS / f"{args.tag}.json").write_text(json.dumps({"runs": runs, "raw": raw}, indent=1))
    plot(rows, sizes, RESULTS / f"{args.tag}.png")
    print("\n" + text)


if __name__ == "__main__":
    main()
