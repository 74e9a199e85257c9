"""Bayesian hyperparameter optimisation of an xgboost classifier, one batch of trainings per iteration.

The loop of the original iWorkflow HPO example: each iteration asks ``bayesian-optimization`` for N points,
evaluates them as one ``@work(map_results=True)`` call (one job per point: a cross-validated xgboost fit on
three quarters of scikit-learn's bundled breast-cancer data), registers the scores, and repeats.  Random search
with the same budget runs the same way.  Both run over several seeds, and each search's winner is re-scored on
data the search never saw, since the best of many noisy cross-validation scores is an optimistic estimate.

Run:  python examples/hpo_xgboost/run.py --seeds 3 --iterations 5 --points 4 [--executor local|thread|broker]
"""
from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from iworkflow import artifacts, work, workflow
from iworkflow.script import add_runtime_arguments, configure_from_args

logger = logging.getLogger(__name__)

#: the search space; learning rate and L2 penalty are searched in log10, max_depth is rounded in the job.
#: max_depth >= 1, subsample <= 1 and the lowest L2 penalty are in effect the parameters' own limits (see
#: NATURAL_BOUNDS); the other bounds lie beyond the values that win (checked over seeds: see the README).  Four
#: dimensions: a budget of tens of trainings can model them
SPACE: dict[str, tuple[float, float]] = {
    "log10_learning_rate": (-2.5, 0.0),
    "max_depth": (1.0, 8.0),
    "subsample": (0.4, 1.0),
    "log10_reg_lambda": (-2.0, 2.0),
}
#: held fixed: on this data they matter less than the four above (a column subsample of a half decorrelates the
#: trees over the 30 strongly correlated features)
FIXED = {"colsample_bytree": 0.5, "min_child_weight": 1.0}
#: bounds that are in effect the parameter's own limit (a best point there is a real optimum, not a clipped one):
#: stumps, no row subsampling, and an L2 penalty of 0.01, which next to a leaf's hessian sum (at least
#: min_child_weight = 1) is no penalty at all: below it the parameter changes nothing
NATURAL_BOUNDS = {("max_depth", 1.0), ("subsample", 1.0), ("log10_reg_lambda", -2.0)}
METRICS = ("neg_log_loss", "roc_auc", "accuracy")
METHODS = ("bayes", "random")
#: a quarter of the data, the same for every seed, is never seen by the search: the winners are re-scored on it
HELD_OUT_FRACTION = 0.25
#: the artifact the chosen model is kept as: ``iworkflow.artifacts.load(MODEL_NAME)`` gives it back
MODEL_NAME = "hpo-xgboost-best"
SPLIT_SEED = 2024
#: the search's cross-validation folds, the same for every seed and method: the seeds vary the searches, not
#: the yardstick, so best scores compare across seeds; the fresh folds of the re-score use other seeds
FOLD_SEED = 0


def load_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_search, y_search, x_held_out, y_held_out): breast cancer, split once, stratified, for every seed."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    x, y = load_breast_cancer(return_X_y=True)
    x_search, x_out, y_search, y_out = train_test_split(x, y, test_size=HELD_OUT_FRACTION, stratify=y,
                                                        random_state=SPLIT_SEED)
    return x_search, y_search, x_out, y_out


def _model(params: dict, n_estimators: int, seed: int):
    from xgboost import XGBClassifier

    return XGBClassifier(
        n_estimators=n_estimators, learning_rate=10 ** params["log10_learning_rate"],
        max_depth=round(params["max_depth"]), subsample=params["subsample"],
        reg_lambda=10 ** params["log10_reg_lambda"], **FIXED, n_jobs=1, random_state=seed, verbosity=0,
    )


@work(map_results=True)
def evaluate(log10_learning_rate: float, max_depth: float, subsample: float, log10_reg_lambda: float,
             n_estimators: int = 100, folds: int = 5, metric: str = "neg_log_loss", seed: int = 0) -> float:
    """Train xgboost with these hyperparameters (``seed`` seeds its row subsampling); return the mean k-fold
    cross-validated score on the search data."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    params = dict(log10_learning_rate=log10_learning_rate, max_depth=max_depth, subsample=subsample,
                  log10_reg_lambda=log10_reg_lambda)
    x, y, _, _ = load_data()
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=FOLD_SEED)
    return float(np.mean(cross_val_score(_model(params, n_estimators, seed), x, y, cv=cv, scoring=metric)))


@work(map_results=True)
def rescore(params: dict, n_estimators: int, folds: int, metric: str, seed: int, repeats: int = 3) -> dict:
    """Score a search's winner where its own noise cannot flatter it: on fresh cross-validation folds of the
    search data (``repeats`` new splits) and on the held-out quarter (trained on all the search data)."""
    from sklearn.metrics import get_scorer
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    x, y, x_out, y_out = load_data()
    fresh = [np.mean(cross_val_score(_model(params, n_estimators, seed), x, y, scoring=metric,
                                     cv=StratifiedKFold(n_splits=folds, shuffle=True, random_state=FOLD_SEED + 1 + r)))
             for r in range(repeats)]
    model = _model(params, n_estimators, seed).fit(x, y)
    return {"fresh_folds": float(np.mean(fresh)), "held_out": float(get_scorer(metric)(model, x_out, y_out))}


@work
def train_best(params: dict, n_estimators: int, seed: int, metadata: dict) -> int:
    """Fit the chosen configuration on all the search data and keep it as the next version of MODEL_NAME, with
    its parameters and scores (the artifact records which job, code and arguments made it)."""
    x, y, _, _ = load_data()
    model = _model(params, n_estimators, seed).fit(x, y)
    return artifacts.save(MODEL_NAME, model, metadata=metadata).version


@workflow(local=True, exclude_source_files=["output"])
def keep_model(params: dict, n_estimators: int, seed: int, metadata: dict) -> int:
    """The winner trained once more, as a job, and kept as an artifact; returns its version."""
    return train_best(params=params, n_estimators=n_estimators, seed=seed, metadata=metadata)


def make_optimizer(seed: int, xi: float):
    """A bayes_opt optimizer over SPACE: expected-improvement acquisition, GP with one length scale per
    hyperparameter."""
    from bayes_opt import BayesianOptimization, acquisition
    from sklearn.gaussian_process.kernels import Matern

    opt = BayesianOptimization(f=None, pbounds=SPACE, random_state=seed, verbose=0, allow_duplicate_points=True,
                               acquisition_function=acquisition.ExpectedImprovement(xi=xi))
    # alpha: the CV scores are noisy (about 0.005 in log-loss between fold splits); the GP must not interpolate
    opt.set_gp_params(kernel=Matern(nu=2.5, length_scale=np.ones(len(SPACE))), alpha=1e-4, normalize_y=True)
    return opt


def suggest_batch(opt, n: int, seed: int, xi: float) -> list[dict[str, float]]:
    """N distinct suggestions at once ("constant liar"): each is registered on a scratch copy with the worst
    score seen so far, which pushes the next suggestion elsewhere; only real scores reach ``opt``."""
    from threadpoolctl import threadpool_limits

    scratch = make_optimizer(seed, xi)
    for r in opt.res:
        scratch.register(params=r["params"], target=r["target"])
    lie = min(r["target"] for r in opt.res)
    batch = []
    # one BLAS thread: the matrices are tiny, and extra threads only fight the jobs for the cores (5x slower here)
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the GP fit may warn about length scales at their bounds
        for _ in range(n):
            point = scratch.suggest()
            scratch.register(params=point, target=lie)
            batch.append(point)
    return batch


@dataclass
class SearchHistory:
    """Every evaluated point with its score, the best score after each iteration, and the winner re-scored."""

    method: str
    seed: int = 0
    evaluations: list[dict] = field(default_factory=list)
    best_per_iteration: list[float] = field(default_factory=list)
    failures: int = 0
    rescored: dict = field(default_factory=dict)

    @property
    def best(self) -> dict:
        return max(self.evaluations, key=lambda e: e["score"])


def at_bounds(params: dict[str, float], tolerance: float = 0.01) -> list[str]:
    """The hyperparameters of a point that sit on an artificial bound of SPACE (within 1 % of its range)."""
    hits = []
    for name, (lo, hi) in SPACE.items():
        for bound in (lo, hi):
            if abs(params[name] - bound) <= tolerance * (hi - lo) and (name, bound) not in NATURAL_BOUNDS:
                hits.append(f"{name}={bound:g}")
    return hits


def _check(method: str, metric: str, iterations: int, points: int) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if iterations < 1 or points < 1:
        raise ValueError(f"need at least 1 iteration and 1 point per iteration, got {iterations}, {points}")


@workflow(local=True, exclude_source_files=["output"])  # output/ is not shipped to workers
def optimize(method: str = "bayes", iterations: int = 5, points: int = 4, seed: int = 0, xi: float = 0.01,
             n_estimators: int = 100, folds: int = 5, metric: str = "neg_log_loss") -> SearchHistory:
    """The batch HPO loop: suggest ``points`` hyperparameter sets, evaluate them in parallel, register, repeat."""
    _check(method, metric, iterations, points)
    opt = make_optimizer(seed, xi)
    history = SearchHistory(method, seed)
    start = time.monotonic()
    for iteration in range(1, iterations + 1):
        # both methods start from the same random batch; Bayesian optimisation needs data to model
        if method == "random" or not opt.res:
            batch = opt.random_sample(points)
        else:
            batch = suggest_batch(opt, points, seed + iteration, xi)
        batch = [{k: float(v) for k, v in p.items()} for p in batch]  # plain floats: readable job keys

        scores = evaluate(n_estimators=n_estimators, folds=folds, metric=metric, seed=seed,
                          multi_jobs_kwargs_list=batch)
        for params in batch:
            score, details = scores.get_result(args=params, with_details=True)
            if details["status"] != "finished":  # a failed training is reported and left out, not fatal
                logger.warning("evaluation failed for %s: %s", params, details["error"])
                history.failures += 1
                continue
            opt.register(params=params, target=score)
            history.evaluations.append({"iteration": iteration, "params": params, "score": score})
        if not opt.res:
            raise RuntimeError(f"every evaluation of iteration {iteration} failed; see the warnings above")
        history.best_per_iteration.append(float(opt.max["target"]))
        logger.info("seed %d %-6s iteration %d/%d: best %s = %.5f after %d evaluations (%.0f s)", seed, method,
                    iteration, iterations, metric, history.best_per_iteration[-1], len(history.evaluations),
                    time.monotonic() - start)
    return history


@workflow(local=True, exclude_source_files=["output"])
def rescore_winners(runs: list[SearchHistory], n_estimators: int = 100, folds: int = 5,
                    metric: str = "neg_log_loss") -> list[SearchHistory]:
    """Re-score every search's winner (one job each, in parallel) and attach the scores to its history."""
    entries = [{"params": h.best["params"], "seed": h.seed} for h in runs]
    # both methods start from the same random batch, so two searches of a seed may share their winner
    distinct = [e for i, e in enumerate(entries) if e not in entries[:i]]
    results = rescore(n_estimators=n_estimators, folds=folds, metric=metric, multi_jobs_kwargs_list=distinct)
    for h, entry in zip(runs, entries):
        h.rescored = results.result(args=entry)  # a failure here raises: a winner without a fair score is no result
    return runs


#: how the searches are run; a mode is a workflow with the signature of ``optimize``
MODES: dict[str, Callable[..., SearchHistory]] = {"batch": optimize}


def compare(mode: str, seeds: list[int], options: dict) -> dict[str, list[SearchHistory]]:
    """Bayesian optimisation and random search with the same budget on every seed, winners re-scored."""
    runs = {method: [MODES[mode](method=method, seed=seed, **options) for seed in seeds] for method in METHODS}
    fixed = {k: options[k] for k in ("n_estimators", "folds", "metric")}
    rescore_winners([h for hs in runs.values() for h in hs], **fixed)
    return runs


def best_so_far(history: SearchHistory) -> np.ndarray:
    """The running maximum of the score, evaluation by evaluation."""
    return np.maximum.accumulate([e["score"] for e in history.evaluations])


def score(history: SearchHistory, what: str) -> float:
    """The winner's ``search_cv`` score (the best the search saw), or its ``fresh_folds`` or ``held_out`` re-score."""
    return history.best["score"] if what == "search_cv" else history.rescored[what]


SCORES = ("search_cv", "fresh_folds", "held_out")


def summarize(runs: dict[str, list[SearchHistory]]) -> dict:
    """Per method: median and quartiles of each score of the winners; per score: the paired difference."""
    out: dict = {}
    for method, hs in runs.items():
        out[method] = {"winners_at_bounds": sum(bool(at_bounds(h.best["params"])) for h in hs)}
        for what in SCORES:
            q1, med, q3 = np.percentile([score(h, what) for h in hs], [25, 50, 75])
            out[method][what] = {"median": float(med), "q1": float(q1), "q3": float(q3)}
    for what in SCORES:
        diff = [score(b, what) - score(r, what) for b, r in zip(runs["bayes"], runs["random"])]
        out[f"bayes_minus_random_{what}"] = {
            "mean": float(np.mean(diff)),
            "se": float(np.std(diff, ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else None,
            "bayes_wins": int(sum(d > 0 for d in diff)), "seeds": len(diff)}
    return out


def plot(runs: dict[str, list[SearchHistory]], metric: str, path: Path) -> None:
    """Left: median best-so-far vs evaluations over seeds, with the quartile band.  Right: each winner's search
    score against its re-scores (fresh folds, held-out data), one line per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"bayes": "Bayesian optimisation (EI, constant liar)", "random": "random search"}
    colours = {"bayes": "tab:blue", "random": "tab:orange"}
    n_seeds = len(next(iter(runs.values())))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 5.2))
    for method, hs in runs.items():
        n = min(len(h.evaluations) for h in hs)
        curves = np.array([best_so_far(h)[:n] for h in hs])
        x = np.arange(1, n + 1)
        q1, med, q3 = np.percentile(curves, [25, 50, 75], axis=0)
        left.step(x, med, where="post", color=colours[method], label=f"{labels[method]}: median of {n_seeds} seeds")
        if n_seeds > 1:
            left.fill_between(x, q1, q3, step="post", color=colours[method], alpha=0.2,
                              label=f"{labels[method]}: quartiles")
    # the first batch is random and often poor: the scale is set by the quartiles after it
    first = min(sum(e["iteration"] == 1 for e in h.evaluations) for hs in runs.values() for h in hs)
    low = min(np.percentile([best_so_far(h)[first - 1] for h in hs], 25) for hs in runs.values())
    high = max(h.best["score"] for hs in runs.values() for h in hs)
    left.set_ylim(low - 0.1 * (high - low), high + 0.1 * (high - low))
    left.set_xlabel("evaluations (trainings)")
    left.set_ylabel(f"best CV {metric} so far" + (" (higher: better)" if metric.startswith("neg") else ""))
    left.set_title("best score so far, over seeds")
    left.grid(alpha=0.3)

    stages = ("search CV\n(best of the search)", "fresh folds\n(same data)", "held-out\n(unseen data)")
    for i, (method, hs) in enumerate(runs.items()):
        offset = (i - 0.5) * 0.12
        for h in hs:
            ys = [h.best["score"], h.rescored["fresh_folds"], h.rescored["held_out"]]
            right.plot(np.arange(3) + offset, ys, "o-", color=colours[method], alpha=0.5, ms=4, lw=0.8)
        med = [np.median([h.best["score"] for h in hs]), np.median([h.rescored["fresh_folds"] for h in hs]),
               np.median([h.rescored["held_out"] for h in hs])]
        right.plot(np.arange(3) + offset, med, "s", color=colours[method], ms=9, mec="black",
                   label=f"{labels[method]}: median")
    right.set_xticks(range(3), stages)
    right.set_xlim(-0.5, 2.5)
    right.set_ylabel(metric)
    right.set_title("each search's winner, re-scored (one line per seed)")
    right.grid(alpha=0.3)
    # legends below the panels: they cover no data whatever the seed
    for ax in (left, right):
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def shown_params(params: dict) -> dict:
    """Hyperparameters as xgboost sees them (log10 ones exponentiated, max_depth rounded)."""
    shown = {k.removeprefix("log10_"): round(10**v if k.startswith("log10_") else v, 4) for k, v in params.items()}
    shown["max_depth"] = round(shown["max_depth"])
    return shown


def main(argv: list[str] | None = None) -> dict[str, list[SearchHistory]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="independent repetitions of both searches")
    parser.add_argument("--seed", type=int, default=0, help="the first seed (seeds are SEED .. SEED+SEEDS-1)")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--points", type=int, default=4, help="points (jobs) per iteration")
    parser.add_argument("--n-estimators", type=int, default=100, help="trees per xgboost model")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds")
    parser.add_argument("--metric", default="neg_log_loss", choices=METRICS)
    parser.add_argument("--xi", type=float, default=0.01, help="expected-improvement exploration margin")
    parser.add_argument("--mode", default="batch", choices=sorted(MODES), help="how each search runs its jobs")
    add_runtime_arguments(parser, out_dir=Path(__file__).resolve().parent / "output")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    configure_from_args(args, progress_logger=logger)

    start = time.monotonic()
    options = {"iterations": args.iterations, "points": args.points, "xi": args.xi,
               "n_estimators": args.n_estimators, "folds": args.folds, "metric": args.metric}
    try:
        _check("bayes", args.metric, args.iterations, args.points)
        runs = compare(args.mode, list(range(args.seed, args.seed + args.seeds)), options)
    except ValueError as err:
        parser.error(str(err))
    wall = time.monotonic() - start
    summary = summarize(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    png = args.out / "hpo_xgboost.png"
    plot(runs, args.metric, png)
    (args.out / "hpo_xgboost.json").write_text(json.dumps(
        {"runs": {m: [{**asdict(h), "best": h.best} for h in hs] for m, hs in runs.items()}, "summary": summary,
         "options": options, "seeds": args.seeds, "wall_time_s": wall}, indent=1))

    budget = args.iterations * args.points
    print(f"\n{args.metric} of each search's winner ({budget} evaluations per search; search CV is the best of "
          f"{budget} noisy scores, the re-scores are not):")
    print(f"{'seed':>4}  {'method':<7}{'search CV':>10}{'fresh folds':>12}{'held-out':>10}  at an artificial bound")
    for method, hs in runs.items():
        for h in hs:
            print(f"{h.seed:>4}  {method:<7}{h.best['score']:10.4f}{h.rescored['fresh_folds']:12.4f}"
                  f"{h.rescored['held_out']:10.4f}  {', '.join(at_bounds(h.best['params'])) or '-'}")
    for method in METHODS:
        s = summary[method]
        print(f"median  {method:<7}{s['search_cv']['median']:10.4f}{s['fresh_folds']['median']:12.4f}"
              f"{s['held_out']['median']:10.4f}")
    for what in ("search_cv", "fresh_folds", "held_out"):
        d = summary[f"bayes_minus_random_{what}"]
        se = f" ± {d['se']:.4f}" if d["se"] is not None else ""
        print(f"bayes - random, {what.replace('_', ' ')}: {d['mean']:+.4f}{se} (bayes better on "
              f"{d['bayes_wins']} of {d['seeds']} seeds)")
    best = max((h for hs in runs.values() for h in hs), key=lambda h: h.rescored["fresh_folds"])
    print(f"best parameters (by fresh-fold score: {best.method}, seed {best.seed}): {shown_params(best.best['params'])}"
          f"\n  {args.metric}: search CV {best.best['score']:.4f}, fresh folds {best.rescored['fresh_folds']:.4f}, "
          f"held-out {best.rescored['held_out']:.4f}")
    version = keep_model(params=best.best["params"], n_estimators=args.n_estimators, seed=best.seed, metadata={
        "params": shown_params(best.best["params"]), "metric": args.metric, "method": best.method, "seed": best.seed,
        "search_cv": best.best["score"], **best.rescored})
    print(f"model: artifact {MODEL_NAME} version {version} (iworkflow.artifacts.load({MODEL_NAME!r}))")
    print(f"wall time {wall:.1f} s; plot: {png}")
    return runs


if __name__ == "__main__":
    main()
