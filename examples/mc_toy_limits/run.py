"""CLs upper limit on a signal strength from Monte-Carlo toys: an iterative grid scan run as iworkflow jobs.

A counting experiment sees ``n_obs`` events where ``b`` background events are expected (optionally with a
Gaussian uncertainty ``sigma_b``).  For a signal ``s`` the test statistic is the event count itself (for one
bin every likelihood-ratio statistic orders outcomes the same way), so

    CLs+b(s) = P(n <= n_obs | s + b),   CLb = P(n <= n_obs | b),   CLs(s) = CLs+b(s) / CLb,

and the upper limit at confidence level CL is the ``s`` where CLs crosses ``1 - CL``.  Each probability is
estimated with toys; each grid point's toys are split into seeded jobs, and the grid is refined around the
crossing until the limit is known to the requested precision.

Run:  python examples/mc_toy_limits/run.py --n-obs 3 --background 0 [--executor local|thread|broker]
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from iworkflow import work, workflow
from iworkflow.script import add_runtime_arguments, configure_from_args

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------------
# The job: one batch of pseudo-experiments at one signal strength
# ---------------------------------------------------------------------------------------------------------------
@work(map_results=True)
def count_toys(s: float, job: int, n_toys: int, n_obs: int, b: float, sigma_b: float, seed: int) -> int:
    """Throw ``n_toys`` pseudo-experiments at signal ``s``; return how many have ``n <= n_obs``.

    The random stream depends only on (seed, s, job), so every batch is reproducible and a point's
    toys can be topped up later with new job numbers without repeating a single toy.
    """
    from scipy.stats import truncnorm

    rng = np.random.default_rng([seed, round(s * 1_000_000), job])
    if sigma_b > 0:
        # hybrid (Cousins-Highland) treatment: each toy draws its background from a Gaussian truncated at 0
        bkg = truncnorm.rvs(-b / sigma_b, np.inf, loc=b, scale=sigma_b, size=n_toys, random_state=rng)
    else:
        bkg = np.full(n_toys, b)
    n = rng.poisson(s + bkg)
    return int(np.count_nonzero(n <= n_obs))


# ---------------------------------------------------------------------------------------------------------------
# Bookkeeping of the scan
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Point:
    """Toy counts at one signal strength (s = 0 is the background-only hypothesis, i.e. CLb)."""

    s: float
    n_toys: int = 0
    n_pass: int = 0
    jobs: int = 0
    iteration: int = 0

    @property
    def p(self) -> float:
        return self.n_pass / self.n_toys

    @property
    def p_err(self) -> float:
        # binomial error, floored at 1/N so that p = 0 or p = 1 still carries an honest uncertainty
        return math.sqrt(max(self.p * (1 - self.p), 1 / self.n_toys) / self.n_toys)


@dataclass
class ScanResult:
    """The limit, its toy-statistics uncertainty, and every grid point with its CLs estimate."""

    n_obs: int
    b: float
    sigma_b: float
    cl: float
    limit: float
    limit_err: float
    window: tuple[float, float]
    iterations: int
    n_jobs: int
    n_toys: int
    cl_b: float
    points: list[dict] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    exact: float | None = None
    cl_b_rel_err: float = 0.0
    fit: dict | None = None


def _cls_table(points: dict[float, Point]) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """(s, CLs, own error on CLs, CLb, relative error of CLb) for the grid, sorted by s.

    The own error is the toy error of CLs+b at that point alone; the error of CLb is kept apart because one
    CLb divides every point: it moves all of ln CLs up or down together, so it is not averaged away by a fit.
    """
    cl_b = points[0.0]
    if cl_b.n_pass == 0:
        raise RuntimeError(f"none of {cl_b.n_toys} background-only toys has n <= n_obs, so CLb ~ 0 and CLs is "
                           "undefined: the data are far below the background; use more toys per job")
    s = np.array(sorted(points))
    p = np.array([points[x].p for x in s])
    p_err = np.array([points[x].p_err for x in s])
    cls = p / cl_b.p
    # no background: every background-only toy has n = 0 <= n_obs, CLb = 1 exactly, with no error
    cl_b_rel = 0.0 if cl_b.n_pass == cl_b.n_toys else cl_b.p_err / cl_b.p
    return s, cls, p_err / cl_b.p, cl_b.p, cl_b_rel


@dataclass
class LimitFit:
    """The straight line ln CLs = a + c s fitted over [lo, hi], and the limit it gives with its error."""

    a: float
    c: float
    lo: float
    hi: float
    limit: float
    error: float


def _fit_limit(s: np.ndarray, cls: np.ndarray, err: np.ndarray, alpha: float, cl_b_rel: float) -> LimitFit:
    """Limit and its error from a weighted straight-line fit of ln CLs(s), solved for CLs = alpha.

    Fitting every point of the window, rather than interpolating between the two that bracket the
    crossing, averages the toy noise and avoids picking a crossing that a fluctuation made.  ``err`` is each
    point's own error; the CLb error (``cl_b_rel``, relative) is common to all points, so it shifts the
    intercept only and is added to the limit's error after the fit, not averaged down by it.
    """
    keep = (cls > 0) & (s > 0)  # CLs(0) = 1 by definition: it carries no information on the slope
    fallback = LimitFit(math.nan, math.nan, float(s.min()), float(s.max()), float(s.mean()), float(np.ptp(s) / 2))
    if keep.sum() < 2:
        return fallback
    x, y, sy = s[keep], np.log(cls[keep]), err[keep] / cls[keep]
    w = 1 / sy**2
    # closed-form weighted least squares for y = a + c x, with the covariance of (a, c)
    sw, sx, sxx, swy, sxy = w.sum(), (w * x).sum(), (w * x * x).sum(), (w * y).sum(), (w * x * y).sum()
    det = sw * sxx - sx**2
    a, c = (sxx * swy - sx * sxy) / det, (sw * sxy - sx * swy) / det
    var_a, var_c, cov_ac = sxx / det, sw / det, -sx / det
    if c >= 0:  # the noise swamps the slope: no usable estimate from this window
        return fallback
    limit = (math.log(alpha) - a) / c
    # propagate: d limit/d a = -1/c, d limit/d c = -limit/c; the common ln CLb error adds to var_a
    var = (var_a + cl_b_rel**2 + limit**2 * var_c + 2 * limit * cov_ac) / c**2
    return LimitFit(float(a), float(c), float(x.min()), float(x.max()), float(limit), float(math.sqrt(max(var, 0.0))))


def exact_cls_limit(n_obs: int, b: float, cl: float = 0.95) -> float:
    """The CLs limit without background uncertainty, from the Poisson CDF (a cross-check for the toys)."""
    from scipy.optimize import brentq
    from scipy.stats import poisson

    alpha, cl_b = 1 - cl, poisson.cdf(n_obs, b)
    return float(brentq(lambda s: poisson.cdf(n_obs, s + b) / cl_b - alpha, 0.0, 10.0 * (n_obs + b + 10)))


def _validate(n_obs: int, b: float, sigma_b: float, cl: float, precision: float, toys_per_job: int,
              jobs_per_point: int, grid_points: int) -> None:
    if not 0 < cl < 1:
        raise ValueError(f"confidence level must be strictly between 0 and 1 (e.g. 0.95), got {cl}")
    if int(n_obs) != n_obs or n_obs < 0:
        raise ValueError(f"observed events must be a non-negative integer, got {n_obs}")
    if b < 0 or sigma_b < 0:
        raise ValueError(f"background and its uncertainty must be >= 0, got b={b}, sigma_b={sigma_b}")
    if precision <= 0:
        raise ValueError(f"precision must be > 0 events, got {precision}")
    if toys_per_job < 100 or jobs_per_point < 1:
        raise ValueError(f"need at least 100 toys per job and 1 job per point, got {toys_per_job}, {jobs_per_point}")
    if grid_points < 3:
        raise ValueError(f"need at least 3 grid points per iteration, got {grid_points}")


# ---------------------------------------------------------------------------------------------------------------
# The workflow: scan, find the crossing, refine, repeat
# ---------------------------------------------------------------------------------------------------------------
@workflow(local=True, exclude_source_files=["output"])  # output/ is not shipped to workers
def cls_scan(n_obs: int, b: float = 0.0, sigma_b: float = 0.0, cl: float = 0.95, precision: float = 0.05,
             toys_per_job: int = 25_000, jobs_per_point: int = 4, grid_points: int = 8, seed: int = 1,
             max_iterations: int = 12) -> ScanResult:
    """Scan CLs(s) on a grid, each point's toys split into jobs, and refine until the limit is known to ``precision``."""
    _validate(n_obs, b, sigma_b, cl, precision, toys_per_job, jobs_per_point, grid_points)
    alpha = 1 - cl
    fixed = {"n_obs": int(n_obs), "b": float(b), "sigma_b": float(sigma_b), "seed": int(seed)}
    points: dict[float, Point] = {}
    # the first window runs from s = 0 (whose toys give CLb) to a generous guess; it is widened if CLs
    # never gets below alpha, then narrowed to the grid cell holding the crossing, iteration after iteration
    window = (0.0, n_obs + 3 * math.sqrt(n_obs + b + 1) + 3 * sigma_b + 3)
    target_jobs = jobs_per_point
    # below this width the grid is not refined further: ln CLs is straight there, and the toys do the rest
    fit_width = 10 * precision
    history: list[dict] = []
    # the first iteration whose toys did not help choose the current window: only those toys enter the final
    # fit (the points that bracketed the crossing were picked for their values, which would bias it)
    window_since = 1
    n_jobs = 0
    limit = limit_err = math.nan
    fit: LimitFit | None = None
    for iteration in range(1, max_iterations + 1):
        # one @work call per iteration: the missing jobs of every grid point in the window, run in parallel
        grid = [float(x) for x in np.round(np.linspace(*window, grid_points), 6)]
        entries = []
        for x in sorted(set(grid) | {x for x in points if window[0] <= x <= window[1]} | {0.0}):
            point = points.setdefault(x, Point(x, iteration=iteration))
            entries += [{"s": x, "job": point.jobs + j, "n_toys": toys_per_job}
                        for j in range(max(0, target_jobs - point.jobs))]
        counts = count_toys(**fixed, multi_jobs_kwargs_list=entries)
        for entry in entries:
            point = points[entry["s"]]
            point.n_pass += counts.result(args=entry)  # result() raises the job's own error if a job failed
            point.n_toys += entry["n_toys"]
            point.jobs += 1
        n_jobs += len(entries)

        s, cls, err, _, cl_b_rel = _cls_table(points)
        below = np.nonzero(cls <= alpha)[0]
        if len(below) == 0:  # the crossing lies above the grid: look further up
            window, window_since = (window[1], 2 * window[1]), iteration + 1
            logger.info("iteration %d: CLs(%.3g) = %.3g > %.3g, widening the scan to %.3g",
                        iteration, s[-1], cls[-1], alpha, window[1])
            history.append({"iteration": iteration, "jobs": len(entries), "limit": None, "error": None})
            continue
        lo, hi = max(int(below[0]) - 1, 0), int(below[0])  # the grid cell of the first crossing
        final = window[1] - window[0] <= fit_width * 1.001
        # the limit: a fit of ln CLs over the crossing cell and its neighbours, or over the whole final window
        if final:  # (grid values are rounded to 1e-6)
            added = np.array([points[float(x)].iteration for x in s])
            near = (s >= window[0] - 1e-6) & (s <= window[1] + 1e-6) & (added >= window_since)
        else:
            near = (s >= s[max(lo - 1, 0)]) & (s <= s[min(hi + 1, len(s) - 1)])
        fit = _fit_limit(s[near], cls[near], err[near], alpha, cl_b_rel)
        limit, limit_err = fit.limit, fit.error
        history.append({"iteration": iteration, "jobs": len(entries), "limit": limit, "error": limit_err,
                        "window": list(window)})
        logger.info("iteration %d: %d jobs, limit %.4f +- %.4f, grid [%.4f, %.4f]",
                    iteration, len(entries), limit, limit_err, window[0], window[1])
        if final and limit_err <= precision and window[0] <= limit <= window[1]:
            break
        if not final:
            # refine: the next grid spans the crossing cell, but never less than fit_width, so that the
            # final fit sees a slope that the toy noise cannot fake
            centre, half = 0.5 * (s[lo] + s[hi]), max(0.5 * (s[hi] - s[lo]), 0.5 * fit_width)
            window, window_since = (float(max(centre - half, 0.0)), float(centre + half)), iteration + 1
        elif not window[0] <= limit <= window[1]:  # the fit puts the crossing outside the window: re-centre it
            start = max(limit - 0.5 * fit_width, 0.0)
            window, window_since = (float(start), float(start + fit_width)), iteration + 1
        if final and limit_err > precision:
            # toy statistics limit the precision: the error falls like 1/sqrt(toys per point)
            target_jobs = min(8 * target_jobs, math.ceil(target_jobs * (limit_err / precision) ** 2))
    else:
        if math.isnan(limit):
            raise RuntimeError(f"CLs stayed above {alpha:.3g} up to s = {window[1]:.3g} in {max_iterations} iterations")
        logger.warning("stopped after %d iterations before reaching precision %.3g", max_iterations, precision)

    s, cls, err, cl_b, cl_b_rel = _cls_table(points)
    # each point's error bar: its own toy error and CLb's (the latter shared by all points)
    err = np.hypot(err, cls * cl_b_rel)
    table = [{"s": float(x), "cls": float(c), "cls_err": float(e), "n_toys": points[float(x)].n_toys,
              "iteration": points[float(x)].iteration} for x, c, e in zip(s, cls, err)]
    return ScanResult(
        n_obs=int(n_obs), b=float(b), sigma_b=float(sigma_b), cl=cl, limit=limit, limit_err=limit_err,
        window=window, iterations=len(history), n_jobs=n_jobs,
        n_toys=sum(p.n_toys for p in points.values()), cl_b=cl_b, points=table, history=history,
        exact=exact_cls_limit(n_obs, b, cl) if sigma_b == 0 else None, cl_b_rel_err=cl_b_rel,
        fit=asdict(fit) if fit is not None and not math.isnan(fit.a) else None,
    )


# ---------------------------------------------------------------------------------------------------------------
# Plot and command line
# ---------------------------------------------------------------------------------------------------------------
def plot(result: ScanResult, path: Path) -> None:
    """CLs vs s with toy-MC error bars (full scan, log scale, and a zoom on the crossing) and the limit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = result.points
    alpha = 1 - result.cl
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.5))
    lo, hi = result.window
    half = max(0.6 * (hi - lo), 4 * result.limit_err)
    iterations = sorted({p["iteration"] for p in pts})
    colours = plt.cm.viridis(np.linspace(0.0, 0.85, len(iterations)))
    for ax, zoom in zip(axes, (False, True)):
        for it, colour in zip(iterations, colours):
            sel = [p for p in pts if p["iteration"] == it and p["cls"] > 0
                   and (not zoom or abs(p["s"] - result.limit) <= half)]
            if sel:
                ax.errorbar([p["s"] for p in sel], [p["cls"] for p in sel], yerr=[p["cls_err"] for p in sel],
                            fmt="o", ms=4, capsize=2, color=colour, label=f"toys, points added in iteration {it}")
        if result.exact is not None:
            from scipy.stats import poisson

            xs = np.linspace(result.limit - half, result.limit + half, 200) if zoom else \
                np.linspace(0, max(p["s"] for p in pts), 300)
            xs = xs[xs >= 0]
            exact = poisson.cdf(result.n_obs, xs + result.b) / poisson.cdf(result.n_obs, result.b)
            ax.plot(xs, exact, "k--", lw=1, label="exact (Poisson CDF)")
        if zoom and result.fit is not None:
            f = result.fit
            xs = np.linspace(f["lo"], f["hi"], 50)
            ax.plot(xs, np.exp(f["a"] + f["c"] * xs), "-", color="tab:green", lw=1.5,
                    label=f"fit of ln CLs over [{f['lo']:.2f}, {f['hi']:.2f}]")
        ax.axhline(alpha, color="tab:red", lw=1, ls=":", label=f"CLs = {alpha:.2g}")
        ax.axvline(result.limit, color="black", lw=1.2,
                   label=f"{result.cl:.0%} CL limit s = {result.limit:.3f} ± {result.limit_err:.3f}")
        ax.axvspan(result.limit - result.limit_err, result.limit + result.limit_err, color="grey", alpha=0.3)
        ax.set_xlabel("signal strength s (events)")
        ax.set_ylabel("CLs")
        if zoom:
            ax.set_xlim(result.limit - half, result.limit + half)
            ax.set_title("zoom on the crossing")
        else:
            ax.set_yscale("log")
            ax.set_title(f"CLs scan: n_obs = {result.n_obs}, b = {result.b:g}"
                         + (f" ± {result.sigma_b:g}" if result.sigma_b else ""))
    # one legend for both panels, below them, where it covers no data whatever the scan looks like
    handles = {}
    for ax in axes:
        handles.update(zip(*reversed(ax.get_legend_handles_labels())))
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06 + 0.035 * math.ceil(len(handles) / 3), 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> ScanResult:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-obs", type=int, default=3, help="observed events")
    parser.add_argument("--background", type=float, default=0.0, help="expected background events b")
    parser.add_argument("--sigma-b", type=float, default=0.0, help="Gaussian uncertainty on b")
    parser.add_argument("--cl", type=float, default=0.95, help="confidence level")
    parser.add_argument("--precision", type=float, default=0.02, help="wanted precision on the limit (events)")
    parser.add_argument("--toys-per-job", type=int, default=25_000)
    parser.add_argument("--jobs-per-point", type=int, default=4)
    parser.add_argument("--grid-points", type=int, default=8, help="grid points per iteration")
    parser.add_argument("--seed", type=int, default=1)
    add_runtime_arguments(parser, out_dir=Path(__file__).resolve().parent / "output")
    args = parser.parse_args(argv)
    configure_from_args(args, progress_logger=logger)

    start = time.monotonic()
    try:
        result = cls_scan(args.n_obs, b=args.background, sigma_b=args.sigma_b, cl=args.cl,
                          precision=args.precision, toys_per_job=args.toys_per_job,
                          jobs_per_point=args.jobs_per_point, grid_points=args.grid_points, seed=args.seed)
    except ValueError as err:
        parser.error(str(err))
    except RuntimeError as err:  # the toys cannot answer (CLb ~ 0, no crossing): say why, no traceback
        raise SystemExit(f"error: {err}") from None
    wall = time.monotonic() - start
    args.out.mkdir(parents=True, exist_ok=True)
    plot(result, args.out / "mc_toy_limits.png")
    (args.out / "mc_toy_limits.json").write_text(json.dumps({**asdict(result), "wall_time_s": wall}, indent=1))
    print(f"{args.cl:.0%} CL CLs upper limit on s: {result.limit:.3f} ± {result.limit_err:.3f} (toy MC) "
          f"for n_obs = {result.n_obs}, b = {result.b:g}" + (f" ± {result.sigma_b:g}" if result.sigma_b else ""))
    if result.exact is not None:
        print(f"exact (Poisson CDF): {result.exact:.3f}")
    print(f"{result.iterations} iterations, {result.n_jobs} jobs, {result.n_toys:,} toys, {wall:.1f} s; "
          f"plot: {args.out / 'mc_toy_limits.png'}")
    return result


if __name__ == "__main__":
    main()
