"""Bayesian hyperparameter optimisation of an xgboost classifier, one batch of trainings per iteration.

The loop of the original iWorkflow HPO example: each iteration asks ``bayesian-optimization`` for N points,
evaluates them as one ``@work(map_results=True)`` call (one job per point: a cross-validated xgboost fit on
scikit-learn's bundled breast-cancer data), registers the scores, and repeats.  Plain random search with the
same budget runs the same way for comparison.

Run:  python examples/hpo_xgboost/run.py --iterations 8 --points 8 [--executor local|thread|broker]
"""
from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from iworkflow import work, workflow
from iworkflow.script import add_runtime_arguments, configure_from_args

logger = logging.getLogger(__name__)

#: the search space; learning rate and L2 penalty are searched in log10, max_depth is rounded in the job
SPACE: dict[str, tuple[float, float]] = {
    "log10_learning_rate": (-3.0, 0.0),
    "max_depth": (1.0, 10.0),
    "min_child_weight": (0.1, 20.0),
    "subsample": (0.4, 1.0),
    "colsample_bytree": (0.2, 1.0),
    "log10_reg_lambda": (-3.0, 2.0),
}
METRICS = ("neg_log_loss", "roc_auc", "accuracy")


@work(map_results=True)
def evaluate(log10_learning_rate: float, max_depth: float, min_child_weight: float, subsample: float,
             colsample_bytree: float, log10_reg_lambda: float, n_estimators: int = 200, folds: int = 5,
             metric: str = "neg_log_loss", seed: int = 0) -> float:
    """Train xgboost with these hyperparameters; return the mean k-fold cross-validated score."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from xgboost import XGBClassifier

    x, y = load_breast_cancer(return_X_y=True)
    model = XGBClassifier(
        n_estimators=n_estimators, learning_rate=10**log10_learning_rate, max_depth=round(max_depth),
        min_child_weight=min_child_weight, subsample=subsample, colsample_bytree=colsample_bytree,
        reg_lambda=10**log10_reg_lambda, n_jobs=1, random_state=seed, verbosity=0,
    )
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(np.mean(cross_val_score(model, x, y, cv=cv, scoring=metric)))


def make_optimizer(seed: int, kappa: float):
    """A bayes_opt optimizer over SPACE: UCB acquisition, GP with one length scale per hyperparameter."""
    from bayes_opt import BayesianOptimization, acquisition
    from sklearn.gaussian_process.kernels import Matern

    opt = BayesianOptimization(f=None, pbounds=SPACE, random_state=seed, verbose=0, allow_duplicate_points=True,
                               acquisition_function=acquisition.UpperConfidenceBound(kappa=kappa))
    opt.set_gp_params(kernel=Matern(nu=2.5, length_scale=np.ones(len(SPACE))), alpha=1e-4)
    return opt


def suggest_batch(opt, n: int, seed: int, kappa: float) -> list[dict[str, float]]:
    """N distinct suggestions at once ("constant liar"): each is registered on a scratch copy with the worst
    score seen so far, which pushes the next suggestion elsewhere; only real scores reach ``opt``."""
    scratch = make_optimizer(seed, kappa)
    for r in opt.res:
        scratch.register(params=r["params"], target=r["target"])
    lie = min(r["target"] for r in opt.res)
    batch = []
    for _ in range(n):
        with warnings.catch_warnings():  # the GP fit may warn about length scales at their bounds
            warnings.simplefilter("ignore")
            point = scratch.suggest()
        scratch.register(params=point, target=lie)
        batch.append(point)
    return batch


@dataclass
class SearchHistory:
    """Every evaluated point with its score, and the best score after each iteration."""

    method: str
    evaluations: list[dict] = field(default_factory=list)
    best_per_iteration: list[float] = field(default_factory=list)
    failures: int = 0

    @property
    def best(self) -> dict:
        return max(self.evaluations, key=lambda e: e["score"])


@workflow(local=True, exclude_source_files=["output"])  # output/ is not shipped to workers
def optimize(method: str = "bayes", iterations: int = 8, points: int = 8, seed: int = 0, kappa: float = 2.576,
             n_estimators: int = 200, folds: int = 5, metric: str = "neg_log_loss") -> SearchHistory:
    """The HPO loop: suggest ``points`` hyperparameter sets, evaluate them in parallel, register, repeat."""
    if method not in ("bayes", "random"):
        raise ValueError(f"method must be 'bayes' or 'random', got {method!r}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if iterations < 1 or points < 1:
        raise ValueError(f"need at least 1 iteration and 1 point per iteration, got {iterations}, {points}")
    opt = make_optimizer(seed, kappa)
    history = SearchHistory(method)
    for iteration in range(1, iterations + 1):
        # both methods start from the same random batch; Bayesian optimisation needs data to model
        if method == "random" or not opt.res:
            batch = opt.random_sample(points)
        else:
            batch = suggest_batch(opt, points, seed + iteration, kappa)
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
        logger.info("%s iteration %d: best %s = %.5f after %d evaluations", method, iteration, metric,
                    history.best_per_iteration[-1], len(history.evaluations))
    return history


def best_so_far(history: SearchHistory) -> np.ndarray:
    """The running maximum of the score, evaluation by evaluation."""
    return np.maximum.accumulate([e["score"] for e in history.evaluations])


def plot(runs: dict[str, SearchHistory], metric: str, path: Path) -> None:
    """Best score vs iteration and vs number of evaluations, Bayesian optimisation against random search."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"bayes": "Bayesian optimisation (UCB, constant liar)", "random": "random search"}
    colours = {"bayes": "tab:blue", "random": "tab:orange"}
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for method, h in runs.items():
        its = np.arange(1, len(h.best_per_iteration) + 1)
        left.plot(its, h.best_per_iteration, "o-", color=colours[method], label=labels[method])
        right.step(np.arange(1, len(h.evaluations) + 1), best_so_far(h), where="post", color=colours[method],
                   label=labels[method])
        right.plot(np.arange(1, len(h.evaluations) + 1), [e["score"] for e in h.evaluations], ".",
                   color=colours[method], alpha=0.35, ms=4)
    scores = np.concatenate([[e["score"] for e in h.evaluations] for h in runs.values()])
    best = max(h.best["score"] for h in runs.values())
    # left: zoom on the best-so-far curves; right: most evaluations too (the worst tenth is cut off)
    for ax, low in ((left, min(min(h.best_per_iteration) for h in runs.values())), (right, np.percentile(scores, 10))):
        pad = 0.15 * max(best - low, 1e-6)
        ax.set_ylim(low - pad, best + pad)
        ax.set_ylabel(f"cross-validated {metric}" + (" (higher is better)" if metric.startswith("neg") else ""))
        ax.grid(alpha=0.3)
    left.set_xlabel("iteration (one @work call each)")
    left.set_title("best score after each iteration")
    left.legend(loc="lower right", fontsize=9)
    right.set_xlabel("evaluations")
    right.set_title("best so far (line) and each evaluation (dots)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, SearchHistory]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--points", type=int, default=8, help="points (jobs) per iteration")
    parser.add_argument("--n-estimators", type=int, default=200, help="trees per xgboost model")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds")
    parser.add_argument("--metric", default="neg_log_loss", choices=METRICS)
    parser.add_argument("--kappa", type=float, default=2.576, help="UCB exploration weight")
    parser.add_argument("--seed", type=int, default=0)
    add_runtime_arguments(parser, out_dir=Path(__file__).resolve().parent / "output")
    args = parser.parse_args(argv)
    configure_from_args(args, progress_logger=logger)

    start = time.monotonic()
    options = {"iterations": args.iterations, "points": args.points, "seed": args.seed, "kappa": args.kappa,
                   "n_estimators": args.n_estimators, "folds": args.folds, "metric": args.metric}
    try:
        runs = {method: optimize(method=method, **options) for method in ("bayes", "random")}
    except ValueError as err:
        parser.error(str(err))
    wall = time.monotonic() - start
    args.out.mkdir(parents=True, exist_ok=True)
    plot(runs, args.metric, args.out / "hpo_xgboost.png")
    summary = {m: {**asdict(h), "best": h.best} for m, h in runs.items()}
    (args.out / "hpo_xgboost.json").write_text(json.dumps({**summary, "wall_time_s": wall}, indent=1))
    for method, h in runs.items():
        b = h.best
        shown = {k.removeprefix("log10_"): round(10**v if k.startswith("log10_") else v, 4)
                 for k, v in b["params"].items()}
        shown["max_depth"] = round(shown["max_depth"])  # as the job used it
        print(f"{method:>6}: best {args.metric} = {b['score']:.5f} (iteration {b['iteration']}, "
              f"{len(h.evaluations)} evaluations, {h.failures} failed) with {shown}")
    print(f"wall time {wall:.1f} s; plot: {args.out / 'hpo_xgboost.png'}")
    return runs


if __name__ == "__main__":
    main()
