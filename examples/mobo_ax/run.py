"""Multi-objective Bayesian optimisation with Ax, each batch of trials evaluated in parallel as iworkflow jobs.

The problem is BraninCurrin: two objectives on [0, 1]^2, both minimised, with a known Pareto front (the
reference point (18, 6) and maximum hypervolume 59.36 are those of the BoTorch test problem).  Ax proposes a
batch of trials, one ``@work(map_results=True)`` call evaluates them, failed trials are retried (a small
failure rate is injected), and the results go back to Ax.  A Sobol-only run with the same budget is the baseline.

Run:  python examples/mobo_ax/run.py --batches 10 --batch-size 4 [--executor local|thread|broker]
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from iworkflow import work, workflow
from iworkflow.script import add_runtime_arguments, configure_from_args

logger = logging.getLogger(__name__)

REF_POINT = (18.0, 6.0)  # hypervolume reference point (branin, currin)
MAX_HYPERVOLUME = 59.36011874867746  # of the true Pareto front w.r.t. REF_POINT (BoTorch's BraninCurrin)


def branin_currin(x1: float, x2: float) -> tuple[float, float]:
    """The two objectives at (x1, x2) in [0, 1]^2: Branin (rescaled) and Currin, both to be minimised."""
    u, v = 15 * x1 - 5, 15 * x2
    branin = (v - 5.1 / (4 * math.pi**2) * u**2 + 5 / math.pi * u - 6) ** 2 + 10 * (1 - 1 / (8 * math.pi)) * math.cos(u) + 10
    factor = 1 - math.exp(-1 / (2 * x2)) if x2 > 0 else 1.0
    currin = factor * (2300 * x1**3 + 1900 * x1**2 + 2092 * x1 + 60) / (100 * x1**3 + 500 * x1**2 + 4 * x1 + 20)
    return branin, currin


@work(map_results=True)
def evaluate(x1: float, x2: float, trial: int, attempt: int, failure_rate: float = 0.0, seed: int = 0,
             eval_seconds: float = 0.0) -> dict[str, float]:
    """Evaluate one trial; fails with probability ``failure_rate`` (seeded by trial and attempt, so reproducible)."""
    time.sleep(eval_seconds)  # stands in for an expensive simulation
    if random.Random(f"{seed}/{trial}/{attempt}").random() < failure_rate:
        raise RuntimeError(f"injected failure of trial {trial}, attempt {attempt}")
    branin, currin = branin_currin(x1, x2)
    return {"branin": branin, "currin": currin}


def hypervolume(points: list[tuple[float, float]], ref: tuple[float, float] = REF_POINT) -> float:
    """Area dominated by ``points`` (minimisation) and bounded by ``ref``: a sweep over the sorted front."""
    inside = sorted(p for p in points if p[0] < ref[0] and p[1] < ref[1])
    area, lowest = 0.0, ref[1]
    for f1, f2 in inside:  # by increasing f1: each point that lowers f2 adds a rectangle
        if f2 < lowest:
            area += (ref[0] - f1) * (lowest - f2)
            lowest = f2
    return area


def pareto_front(points: np.ndarray) -> np.ndarray:
    """The non-dominated rows of an (n, 2) array of objective values (minimisation), sorted by the first."""
    pts = points[np.argsort(points[:, 0])]
    keep = pts[:, 1] < np.minimum.accumulate(np.concatenate([[np.inf], pts[:-1, 1]]))
    return pts[keep]


def true_pareto_front(n: int = 400) -> np.ndarray:
    """The Pareto front approximated on a dense n x n grid of [0, 1]^2 (for the plot)."""
    g = np.linspace(0, 1, n)
    values = np.array([branin_currin(a, b) for a in g for b in g])
    return pareto_front(values)


@dataclass
class MoboHistory:
    """Per batch: trials completed, retried and given up, and the hypervolume of everything observed so far."""

    method: str
    observations: list[dict] = field(default_factory=list)
    hypervolume: list[float] = field(default_factory=list)
    retries: int = 0
    failed_trials: int = 0
    completed_in_ax: int = 0


def _make_client(method: str, seed: int, n_init: int):
    """An Ax client for BraninCurrin: 'bayes' (Sobol start, then Ax's default BoTorch MOBO) or 'sobol' only."""
    from ax import Client, RangeParameterConfig

    client = Client(random_seed=seed)
    client.configure_experiment(parameters=[
        RangeParameterConfig(name="x1", bounds=(0.0, 1.0), parameter_type="float"),
        RangeParameterConfig(name="x2", bounds=(0.0, 1.0), parameter_type="float"),
    ])
    # "-a, -b" minimises both; constraints on objectives are the hypervolume reference point for Ax
    client.configure_optimization(objective="-branin, -currin",
                                  outcome_constraints=[f"branin <= {REF_POINT[0]}", f"currin <= {REF_POINT[1]}"])
    client.configure_generation_strategy(method="fast" if method == "bayes" else "random_search",
                                         initialization_budget=n_init, initialization_random_seed=seed)
    return client


@workflow(local=True, exclude_source_files=["output"])  # output/ is not shipped to workers
def optimize(method: str = "bayes", batches: int = 10, batch_size: int = 4, n_init: int = 8,
             failure_rate: float = 0.1, max_attempts: int = 3, seed: int = 0, eval_seconds: float = 0.2) -> MoboHistory:
    """Ask Ax for a batch, evaluate it as parallel jobs, retry the failed ones, report, repeat."""
    if method not in ("bayes", "sobol"):
        raise ValueError(f"method must be 'bayes' or 'sobol', got {method!r}")
    if not 0 <= failure_rate < 1:
        raise ValueError(f"failure_rate must be in [0, 1), got {failure_rate}")
    if batches < 1 or batch_size < 1 or max_attempts < 1:
        raise ValueError("batches, batch_size and max_attempts must be >= 1")
    import torch

    client = _make_client(method, seed, n_init)
    history = MoboHistory(method)
    # one torch thread for Ax's model fits: the tensors are small, and more threads only fight the jobs for cores
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _loop(client, history, batches, batch_size, failure_rate, max_attempts, seed, eval_seconds)
    finally:
        torch.set_num_threads(threads)
    summary = client.summarize()
    history.completed_in_ax = int((summary["trial_status"] == "COMPLETED").sum())
    return history


def _loop(client, history: MoboHistory, batches: int, batch_size: int, failure_rate: float, max_attempts: int,
          seed: int, eval_seconds: float) -> None:
    """The batches of one run: ask, evaluate in parallel, retry, report."""
    method = history.method
    for batch in range(1, batches + 1):
        with warnings.catch_warnings():  # Ax and BoTorch are chatty about numerics they handle themselves
            warnings.simplefilter("ignore")
            pending = dict(client.get_next_trials(max_trials=batch_size))
        for attempt in range(1, max_attempts + 1):
            if not pending:
                break
            entries = [{"x1": p["x1"], "x2": p["x2"], "trial": i, "attempt": attempt} for i, p in pending.items()]
            results = evaluate(failure_rate=failure_rate, seed=seed, eval_seconds=eval_seconds,
                               multi_jobs_kwargs_list=entries)
            for entry in entries:
                value, details = results.get_result(args=entry, with_details=True)
                if details["status"] == "finished":
                    client.complete_trial(trial_index=entry["trial"], raw_data=value)
                    history.observations.append({"batch": batch, **entry, **value})
                    del pending[entry["trial"]]
                elif attempt < max_attempts:
                    history.retries += 1
                    logger.info("trial %d failed (%s); retrying", entry["trial"], details["error"])
        for trial in pending:  # still failing after max_attempts: tell Ax, which will not wait for it
            client.mark_trial_failed(trial_index=trial, failed_reason=f"failed {max_attempts} attempts")
            history.failed_trials += 1
        hv = hypervolume([(o["branin"], o["currin"]) for o in history.observations])
        history.hypervolume.append(hv)
        logger.info("%s batch %d: %d trials observed, hypervolume %.2f (max %.2f)", method, batch,
                    len(history.observations), hv, MAX_HYPERVOLUME)


def trials_after_each_batch(history: MoboHistory) -> list[int]:
    """How many trials had completed when each batch ended (the x of the hypervolume curve)."""
    batches = [o["batch"] for o in history.observations]
    return [sum(b <= n for b in batches) for n in range(1, len(history.hypervolume) + 1)]


def plot(runs: dict[str, MoboHistory], path: Path) -> None:
    """Hypervolume per batch (MOBO vs Sobol) and the observed points and Pareto fronts in objective space."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"bayes": "Ax MOBO (Sobol start, then BoTorch)", "sobol": "Sobol only"}
    colours = {"bayes": "tab:blue", "sobol": "tab:orange"}
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 5.4))
    for method, h in runs.items():
        left.plot(trials_after_each_batch(h), h.hypervolume, "o-", color=colours[method], label=labels[method])
    left.axhline(MAX_HYPERVOLUME, color="black", ls="--", lw=1, label=f"true front ({MAX_HYPERVOLUME:.2f})")
    left.set_xlabel("trials completed (a point per batch of parallel trials)")
    left.set_ylabel(f"hypervolume w.r.t. {REF_POINT}")
    left.set_title("hypervolume of the observed trials")
    left.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), frameon=False)
    left.grid(alpha=0.3)

    front = true_pareto_front()
    right.plot(front[:, 0], front[:, 1], "-", color="black", lw=1, label="true Pareto front")
    for method, h in runs.items():
        obs = np.array([(o["branin"], o["currin"]) for o in h.observations])
        right.plot(obs[:, 0], obs[:, 1], ".", color=colours[method], alpha=0.4, ms=5)
        f = pareto_front(obs)
        right.step(f[:, 0], f[:, 1], where="post", color=colours[method], marker="o", ms=4,
                   label=f"{labels[method]}: found front")
    right.set_xlim(0, REF_POINT[0] * 1.6)
    right.set_ylim(0.5, REF_POINT[1] * 2)
    right.axvline(REF_POINT[0], color="grey", ls=":", lw=1)
    right.axhline(REF_POINT[1], color="grey", ls=":", lw=1)
    right.set_xlabel("Branin (minimise)")
    right.set_ylabel("Currin (minimise)")
    right.set_title("observed trials and Pareto fronts (dotted: reference point)")
    right.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, MoboHistory]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=4, help="trials (jobs) per batch")
    parser.add_argument("--init", type=int, default=8, help="Sobol trials before the model takes over")
    parser.add_argument("--failure-rate", type=float, default=0.1, help="injected probability a job fails")
    parser.add_argument("--max-attempts", type=int, default=3, help="attempts per trial before giving up")
    parser.add_argument("--eval-seconds", type=float, default=0.2, help="simulated cost of one evaluation")
    parser.add_argument("--seed", type=int, default=0)
    add_runtime_arguments(parser, out_dir=Path(__file__).resolve().parent / "output")
    args = parser.parse_args(argv)
    from ax.utils.common.logger import set_stderr_log_level

    set_stderr_log_level(logging.WARNING)  # Ax logs every trial at INFO
    configure_from_args(args, progress_logger=logger)

    start = time.monotonic()
    options = {"batches": args.batches, "batch_size": args.batch_size, "n_init": args.init, "failure_rate": args.failure_rate,
                   "max_attempts": args.max_attempts, "seed": args.seed, "eval_seconds": args.eval_seconds}
    try:
        runs = {method: optimize(method=method, **options) for method in ("bayes", "sobol")}
    except ValueError as err:
        parser.error(str(err))
    wall = time.monotonic() - start
    args.out.mkdir(parents=True, exist_ok=True)
    plot(runs, args.out / "mobo_ax.png")
    (args.out / "mobo_ax.json").write_text(json.dumps({**{m: asdict(h) for m, h in runs.items()},
                                                       "max_hypervolume": MAX_HYPERVOLUME, "wall_time_s": wall}, indent=1))
    trials = {m: trials_after_each_batch(h) for m, h in runs.items()}
    print("batch" + "".join(f"  {m + ': trials':>14} {'hypervolume':>11}" for m in runs))
    for b in range(args.batches):
        print(f"{b + 1:5d}" + "".join(f"  {trials[m][b]:14d} {h.hypervolume[b]:11.2f}" for m, h in runs.items()))
    for method, h in runs.items():
        print(f"{method}: hypervolume {h.hypervolume[-1]:.2f} of {MAX_HYPERVOLUME:.2f} after "
              f"{len(h.observations)} trials ({h.retries} retries, {h.failed_trials} trials given up)")
    print(f"wall time {wall:.1f} s; plot: {args.out / 'mobo_ax.png'}")
    return runs


if __name__ == "__main__":
    main()
