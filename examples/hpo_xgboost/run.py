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
import concurrent.futures
import json
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from iworkflow import JobFuture, Work, artifacts, work, workflow
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


def suggest_batch(opt, n: int, seed: int, xi: float, pending: list[dict[str, float]] = ()) -> list[dict[str, float]]:
    """N distinct suggestions at once ("constant liar"): each is registered on a scratch copy with the worst
    score seen so far, which pushes the next suggestion elsewhere; so are the ``pending`` points, still being
    evaluated.  Only real scores reach ``opt``."""
    from threadpoolctl import threadpool_limits

    scratch = make_optimizer(seed, xi)
    for r in opt.res:
        scratch.register(params=r["params"], target=r["target"])
    lie = min(r["target"] for r in opt.res)
    batch = []
    # one BLAS thread: the matrices are tiny, and extra threads only fight the jobs for the cores (5x slower here)
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the GP fit may warn about length scales at their bounds
        for point in pending:
            scratch.register(params=point, target=lie)
        for _ in range(n):
            point = scratch.suggest()
            scratch.register(params=point, target=lie)
            batch.append(point)
    return batch


def next_points(opt, method: str, n: int, seed: int, xi: float, pending: list[dict[str, float]] = ()) -> list[dict]:
    """N points to evaluate next, as plain floats (readable job keys): random, or BO once a real score is in."""
    if method == "random" or not opt.res:  # Bayesian optimisation needs data to model
        points = opt.random_sample(n)
    else:
        points = suggest_batch(opt, n, seed, xi, pending)
    return [{k: float(v) for k, v in p.items()} for p in points]


@dataclass
class SearchHistory:
    """Every evaluated point with its score, the best score after each iteration, and the winner re-scored."""

    method: str
    seed: int = 0
    mode: str = "batch"
    #: per evaluation: iteration (batch; for async the batch it would be in at equal budget), params, score,
    #: submitted_s, done_s and registered_s (seconds since the search started, the driver's clock), duration_s (the
    #: job's own run time), late (registered after a later batch was launched); in the order they were registered
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


#: the jobs of a search, one work per batch (or per point, in async mode): the work gives a Future per job
evaluate_work = work(return_work=True, map_results=True)(evaluate)


class Evaluations:
    """The jobs a search launched: each job's Future, its point, and when it was submitted and finished (the
    driver's clock, from the search's start; a done-callback stamps the finish as the result lands)."""

    def __init__(self, options: dict):
        self.options = options
        self.start = time.monotonic()
        self.jobs: dict[JobFuture, dict] = {}
        self.timeout = None

    def now(self) -> float:
        return time.monotonic() - self.start

    def launch(self, points: list[dict[str, float]], iteration: int) -> Work:
        """Submit one work of these points (its ``futures`` are theirs)."""
        w = evaluate_work(**self.options, multi_jobs_kwargs_list=points)
        submitted = self.now()
        w.submit()
        self.timeout = w.runtime.settings.result_timeout or None
        for future in w.futures:
            self.jobs[future] = {"iteration": iteration, "params": future.args, "submitted_s": submitted,
                                 "work": w, "registered": False}
            future.add_done_callback(self._stamp)
        return w

    def _stamp(self, future: JobFuture) -> None:
        self.jobs[future]["done_s"] = self.now()

    def pending(self) -> list[dict[str, float]]:
        return [j["params"] for j in self.jobs.values() if not j["registered"]]

    def register_done(self, opt, history: "SearchHistory", late_before: int | None = None,
                      only: list[JobFuture] | None = None) -> int:
        """Register every job (of ``only`` if given) whose result is in and was not registered yet, with ``opt``
        and in the history; a job of an iteration before ``late_before`` is marked late.  Returns how many."""
        count = 0
        results: dict[int, object] = {}  # per work, the results so far (read once per call)
        for future, job in self.jobs.items():
            if job["registered"] or (only is not None and future not in only):
                continue
            w = job["work"]
            if id(w) not in results:
                results[id(w)] = w.get_results()
            # the result, not the Future: a partial wait counts results, which land just before their Futures
            score, details = results[id(w)].get_result(args=job["params"], with_details=True)
            if details["status"] == "missing":
                continue
            job["registered"] = True
            count += 1
            if details["status"] != "finished":  # a failed training is reported and left out, not fatal
                logger.warning("evaluation failed for %s: %s", job["params"], details["error"])
                history.failures += 1
                continue
            opt.register(params=job["params"], target=score)
            history.evaluations.append({
                "iteration": job["iteration"], "params": job["params"], "score": score,
                "submitted_s": job["submitted_s"], "done_s": job.get("done_s", self.now()), "registered_s": self.now(),
                "duration_s": details["metrics"].get("duration"),
                "late": late_before is not None and job["iteration"] < late_before})
        return count

    def in_flight(self) -> list[JobFuture]:
        return [f for f, j in self.jobs.items() if not j["registered"]]


def _progress(history: "SearchHistory", opt, label: str, metric: str, evaluations: Evaluations) -> None:
    if not opt.res:
        raise RuntimeError(f"every evaluation up to {label} failed; see the warnings above")
    history.best_per_iteration.append(float(opt.max["target"]))
    logger.info("seed %d %-6s %s %s: best %s = %.5f after %d evaluations (%.0f s)", history.seed, history.method,
                history.mode, label, metric, history.best_per_iteration[-1], len(history.evaluations),
                evaluations.now())


@workflow(local=True, exclude_source_files=["output"])  # output/ is not shipped to workers
def optimize(method: str = "bayes", iterations: int = 5, points: int = 4, seed: int = 0, xi: float = 0.01,
             n_estimators: int = 100, folds: int = 5, metric: str = "neg_log_loss") -> SearchHistory:
    """The batch HPO loop: suggest ``points`` hyperparameter sets, evaluate them in parallel, register, repeat."""
    _check(method, metric, iterations, points)
    opt = make_optimizer(seed, xi)
    history = SearchHistory(method, seed, mode="batch")
    jobs = Evaluations({"n_estimators": n_estimators, "folds": folds, "metric": metric, "seed": seed})
    for iteration in range(1, iterations + 1):
        # both methods start from the same random batch
        w = jobs.launch(next_points(opt, method, points, seed + iteration, xi), iteration)
        done, not_done = concurrent.futures.wait(w.futures, timeout=jobs.timeout)
        if not_done:
            raise TimeoutError(f"{len(not_done)} evaluations of iteration {iteration} unfinished after "
                               f"{jobs.timeout} s")
        jobs.register_done(opt, history)
        _progress(history, opt, f"iteration {iteration}/{iterations}", metric, jobs)
    return history


@workflow(local=True, exclude_source_files=["output"])
def optimize_trigger80(method: str = "bayes", iterations: int = 5, points: int = 4, seed: int = 0, xi: float = 0.01,
                       n_estimators: int = 100, folds: int = 5, metric: str = "neg_log_loss",
                       fraction: float = 0.8) -> SearchHistory:
    """Batches, the next one generated as soon as ``fraction`` of the current one finished (iDDS's HPO rule);
    the stragglers keep running, count as pending (constant liar) and are registered when they land."""
    _check(method, metric, iterations, points)
    opt = make_optimizer(seed, xi)
    history = SearchHistory(method, seed, mode="trigger80")
    jobs = Evaluations({"n_estimators": n_estimators, "folds": folds, "metric": metric, "seed": seed})
    for iteration in range(1, iterations + 1):
        # stragglers that landed since: late if a batch was launched after theirs
        jobs.register_done(opt, history, late_before=iteration - 1)
        w = jobs.launch(next_points(opt, method, points, seed + iteration, xi, jobs.pending()), iteration)
        if not w.async_result.wait(fraction=fraction, timeout=jobs.timeout):
            raise TimeoutError(f"iteration {iteration}: {fraction:.0%} of its evaluations unfinished after "
                               f"{jobs.timeout} s")
        jobs.register_done(opt, history, late_before=iteration)
        _progress(history, opt, f"iteration {iteration}/{iterations}", metric, jobs)
    done, not_done = concurrent.futures.wait(jobs.in_flight(), timeout=jobs.timeout)
    if not_done:
        raise TimeoutError(f"{len(not_done)} evaluations unfinished after {jobs.timeout} s")
    jobs.register_done(opt, history, late_before=iterations)
    history.best_per_iteration[-1] = float(opt.max["target"])  # the last batch's stragglers count for it
    return history


@workflow(local=True, exclude_source_files=["output"])
def optimize_async(method: str = "bayes", iterations: int = 5, points: int = 4, seed: int = 0, xi: float = 0.01,
                   n_estimators: int = 100, folds: int = 5, metric: str = "neg_log_loss") -> SearchHistory:
    """Asynchronous HPO: ``points`` evaluations in flight; as each ends it is registered and the next point
    is asked for (the others still running are its constant liars), until ``iterations * points`` are spent."""
    _check(method, metric, iterations, points)
    opt = make_optimizer(seed, xi)
    history = SearchHistory(method, seed, mode="async")
    jobs = Evaluations({"n_estimators": n_estimators, "folds": folds, "metric": metric, "seed": seed})
    budget = iterations * points
    # the same first random design as the batch modes, then one point at a time
    for point in next_points(opt, method, points, seed + 1, xi):
        jobs.launch([point], iteration=1)
    launched = points
    while in_flight := jobs.in_flight():
        done, _ = concurrent.futures.wait(in_flight, timeout=jobs.timeout,
                                          return_when=concurrent.futures.FIRST_COMPLETED)
        if not done:
            raise TimeoutError(f"no evaluation of {len(in_flight)} in flight finished within {jobs.timeout} s")
        before = len(history.evaluations) + history.failures
        jobs.register_done(opt, history, only=list(done))
        after = len(history.evaluations) + history.failures
        if after // points > before // points:
            _progress(history, opt, f"{after}/{budget}", metric, jobs)
        while launched < budget and len(jobs.in_flight()) < points:
            point = next_points(opt, method, 1, seed + 1 + launched, xi, jobs.pending())[0]
            jobs.launch([point], iteration=1 + launched // points)
            launched += 1
    if len(history.best_per_iteration) < iterations:
        _progress(history, opt, f"{budget}/{budget}", metric, jobs)
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
MODES: dict[str, Callable[..., SearchHistory]] = {"batch": optimize, "trigger80": optimize_trigger80,
                                                   "async": optimize_async}


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


#: the modes raced against each other at equal evaluation budget
RACE_MODES = ("batch", "trigger80", "async")


@workflow(local=True, exclude_source_files=["output"])
def warm_up(points: int, options: dict) -> None:
    """One throwaway batch, so that no mode pays for starting the workers and importing xgboost."""
    opt = make_optimizer(10_000, 0.01)  # a seed of its own: none of the searches sees these points
    evaluate(**options, seed=0, multi_jobs_kwargs_list=next_points(opt, "random", points, 0, 0.01))


def race(seeds: list[int], options: dict, method: str = "bayes") -> dict[str, list[SearchHistory]]:
    """Each mode on every seed with the same budget, after a warm-up; seed by seed, the modes in an order that
    rotates with the seed, so a change in the machine's load falls on all of them alike."""
    warm_up(options["points"], {k: options[k] for k in ("n_estimators", "folds", "metric")})
    runs: dict[str, list[SearchHistory]] = {mode: [] for mode in RACE_MODES}
    for i, seed in enumerate(seeds):
        for mode in RACE_MODES[i % 3:] + RACE_MODES[:i % 3]:
            runs[mode].append(MODES[mode](method=method, seed=seed, **options))
    return runs


def best_vs_time(history: SearchHistory) -> tuple[np.ndarray, np.ndarray]:
    """(finish times, best score among the evaluations finished by then), in finishing order."""
    done = sorted(history.evaluations, key=lambda e: e["done_s"])
    return np.array([e["done_s"] for e in done]), np.maximum.accumulate([e["score"] for e in done])


def best_at(history: SearchHistory, t: float) -> float:
    """The best score among the evaluations finished ``t`` seconds into the search (nan before the first)."""
    times, best = best_vs_time(history)
    i = np.searchsorted(times, t, side="right")
    return float(best[i - 1]) if i else float("nan")


def summarize_race(runs: dict[str, list[SearchHistory]]) -> dict:
    """Per mode, medians over seeds: wall time to spend the budget, final best score, best score at a half
    and a quarter of batch's median wall time, and the spread of job durations."""
    batch_wall = float(np.median([max(e["done_s"] for e in h.evaluations) for h in runs["batch"]]))
    out: dict = {"batch_wall_s": batch_wall}
    for mode, hs in runs.items():
        walls = [max(e["done_s"] for e in h.evaluations) for h in hs]
        durations = [e["duration_s"] for h in hs for e in h.evaluations if e["duration_s"] is not None]
        out[mode] = {
            "wall_s": {"median": float(np.median(walls)), "min": float(min(walls)), "max": float(max(walls))},
            "best": float(np.median([h.best["score"] for h in hs])),
            "best_at_half_batch_wall": float(np.nanmedian([best_at(h, batch_wall / 2) for h in hs])),
            "best_at_quarter_batch_wall": float(np.nanmedian([best_at(h, batch_wall / 4) for h in hs])),
            "evaluations": [len(h.evaluations) for h in hs], "late": sum(e["late"] for h in hs for e in h.evaluations),
            "job_s": {"median": float(np.median(durations)), "p10": float(np.percentile(durations, 10)),
                      "p90": float(np.percentile(durations, 90))}}
    return out


def plot_race(runs: dict[str, list[SearchHistory]], metric: str, path: Path) -> None:
    """Left: median over seeds of the best score so far against wall time, per mode.  Right: each seed's wall
    time to spend the budget, per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"batch": "tab:blue", "trigger80": "tab:green", "async": "tab:red"}
    labels = {"batch": "batch (wait for all)", "trigger80": "batch, next at 80 %", "async": "asynchronous"}
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.8), gridspec_kw={"width_ratios": [2, 1]})
    end = max(max(e["done_s"] for e in h.evaluations) for hs in runs.values() for h in hs)
    grid = np.linspace(0, end, 400)
    starts = []
    for mode, hs in runs.items():
        # from the time every seed has a result on: a median over all the seeds, not over those that started
        times = grid[grid >= max(best_vs_time(h)[0][0] for h in hs)]
        med = np.median([[best_at(h, t) for t in times] for h in hs], axis=0)
        starts.append(med[0])
        left.plot(times, med, color=colours[mode], label=f"{labels[mode]}: median of {len(hs)} seeds")
        for h in hs:
            left.axvline(max(e["done_s"] for e in h.evaluations), color=colours[mode], alpha=0.25, lw=0.8)
        walls = [max(e["done_s"] for e in h.evaluations) for h in hs]
        i = RACE_MODES.index(mode)
        right.plot([i] * len(walls), walls, "o", color=colours[mode], alpha=0.7)
        right.plot([i], [np.median(walls)], "s", color=colours[mode], ms=10, mec="black")
    low, high = min(starts), max(np.median([h.best["score"] for h in hs]) for hs in runs.values())
    left.set_ylim(low - 0.1 * (high - low), high + 0.1 * (high - low))
    left.set_xlabel("wall time since the search started (s); thin lines: each search's end")
    left.set_ylabel(f"best CV {metric} finished so far")
    left.set_title(f"best score vs wall time, {len(next(iter(runs.values()))[0].evaluations)} evaluations each")
    left.grid(alpha=0.3)
    left.legend(loc="lower right", fontsize=8)
    right.set_xticks(range(len(RACE_MODES)), [labels[m] for m in RACE_MODES], fontsize=8, rotation=12)
    right.set_xlim(-0.5, len(RACE_MODES) - 0.5)
    right.set_ylabel("wall time to spend the budget (s)")
    right.set_title("per seed (square: median)")
    right.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_race(runs: dict[str, list[SearchHistory]], metric: str) -> dict:
    summary = summarize_race(runs)
    half = summary["batch_wall_s"] / 2
    print(f"\n{metric}, Bayesian optimisation, medians over {len(runs['batch'])} seeds (best at {half:.1f} s: half of "
          f"batch's median wall time):")
    print(f"{'mode':<10}{'wall s':>8}{'(min-max)':>14}{'best':>10}{'best@half':>11}{'late':>6}{'job s p10/50/90':>20}")
    for mode in RACE_MODES:
        m = summary[mode]
        print(f"{mode:<10}{m['wall_s']['median']:8.1f}{m['wall_s']['min']:7.1f}-{m['wall_s']['max']:<6.1f}"
              f"{m['best']:10.4f}{m['best_at_half_batch_wall']:11.4f}{m['late']:6d}"
              f"{m['job_s']['p10']:8.2f}/{m['job_s']['median']:.2f}/{m['job_s']['p90']:.2f}")
    return summary


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
    parser.add_argument("--mode", choices=sorted(MODES), help="how each search runs its jobs (default: batch)")
    parser.add_argument("--race", action="store_true",
                        help="instead: Bayesian optimisation in every mode at equal budget, best score vs wall time")
    add_runtime_arguments(parser, out_dir=Path(__file__).resolve().parent / "output")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    if args.race and args.mode:
        parser.error(f"--race runs every mode; drop --mode {args.mode}")
    configure_from_args(args, progress_logger=logger)

    start = time.monotonic()
    options = {"iterations": args.iterations, "points": args.points, "xi": args.xi,
               "n_estimators": args.n_estimators, "folds": args.folds, "metric": args.metric}
    seeds = list(range(args.seed, args.seed + args.seeds))
    if args.race:
        try:
            _check("bayes", args.metric, args.iterations, args.points)
            runs = race(seeds, options)
        except ValueError as err:
            parser.error(str(err))
        args.out.mkdir(parents=True, exist_ok=True)
        png = args.out / "hpo_xgboost_race.png"
        plot_race(runs, args.metric, png)
        summary = print_race(runs, args.metric)
        wall = time.monotonic() - start
        (args.out / "hpo_xgboost_race.json").write_text(json.dumps(
            {"runs": {m: [asdict(h) for h in hs] for m, hs in runs.items()}, "summary": summary,
             "options": options, "seeds": args.seeds, "wall_time_s": wall}, indent=1))
        print(f"wall time {wall:.1f} s; plot: {png}")
        return runs
    try:
        _check("bayes", args.metric, args.iterations, args.points)
        runs = compare(args.mode or "batch", seeds, options)
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
