"""The CLs toy-MC example: limits against the known values, the hybrid integral, reproducibility, bad input.

Tolerance: each limit must lie within 3 of its own toy-MC standard errors (the scan's fit error, whose
pulls were checked to have unit width over many seeds) plus 0.005 for the rounding of the reference table.
"""
from __future__ import annotations

import json
import math

import pytest

PRECISION = 0.05  # events; with 4 x 10k toys per point the scans end with errors of 0.01-0.03
SMALL = {"precision": PRECISION, "toys_per_job": 10_000, "jobs_per_point": 4, "seed": 7}


@pytest.mark.parametrize("n_obs, expected", [(0, 3.00), (1, 4.74), (2, 6.30), (3, 7.75)])
def test_zero_background_limits_match_the_known_values(embedded, load_example, n_obs, expected):
    mc = load_example("mc_toy_limits")
    result = mc.cls_scan(n_obs, b=0.0, cl=0.95, **SMALL)
    assert 0 < result.limit_err <= PRECISION
    assert abs(result.limit - expected) <= 3 * result.limit_err + 0.005, (result.limit, result.limit_err)
    assert result.cl_b == 1.0  # no background: every background-only toy has n = 0 <= n_obs
    assert result.n_jobs >= 8 * 4 and result.iterations >= 2  # a real fan-out, refined at least once


def test_background_uncertainty_matches_the_hybrid_integral(embedded, load_example):
    from scipy import integrate, optimize, stats

    mc = load_example("mc_toy_limits")
    n_obs, b, sigma_b = 2, 1.5, 0.5
    prior = stats.truncnorm(-b / sigma_b, math.inf, loc=b, scale=sigma_b)

    def cl_sb(s: float) -> float:  # P(n <= n_obs | s + b') averaged over the truncated-Gaussian b'
        return integrate.quad(lambda x: stats.poisson.cdf(n_obs, s + x) * prior.pdf(x), 0, b + 12 * sigma_b)[0]

    exact = optimize.brentq(lambda s: cl_sb(s) / cl_sb(0.0) - 0.05, 0.1, 30)
    result = mc.cls_scan(n_obs, b=b, sigma_b=sigma_b, **SMALL)
    assert abs(result.limit - exact) <= 3 * result.limit_err, (result.limit, result.limit_err, exact)
    # the uncertainty on b weakens the limit, by far more than the toy error here
    assert result.limit - 3 * result.limit_err > mc.exact_cls_limit(n_obs, b)


def test_known_background_matches_the_poisson_cdf(embedded, load_example):
    mc = load_example("mc_toy_limits")
    result = mc.cls_scan(4, b=2.5, **SMALL)
    assert result.exact == pytest.approx(mc.exact_cls_limit(4, 2.5))
    assert abs(result.limit - result.exact) <= 3 * result.limit_err
    assert 0 < result.cl_b < 1


def test_toy_batches_are_reproducible_and_distinct(load_example):
    toys = load_example("mc_toy_limits").count_toys.__wrapped__  # the plain function, run here
    args = {"s": 3.0, "n_toys": 10_000, "n_obs": 3, "b": 1.0, "sigma_b": 0.3, "seed": 11}
    assert toys(job=0, **args) == toys(job=0, **args)
    assert toys(job=0, **args) != toys(job=1, **args)
    assert toys(job=0, **args) != toys(job=0, **{**args, "seed": 12})


@pytest.mark.parametrize("bad, match", [
    ({"cl": 1.0}, "confidence level"), ({"cl": 0.0}, "confidence level"), ({"cl": -0.5}, "confidence level"),
    ({"n_obs": -1}, "non-negative integer"), ({"n_obs": 1.5}, "non-negative integer"),
    ({"b": -1.0}, "background"), ({"precision": 0.0}, "precision"), ({"toys_per_job": 10}, "toys"),
])
def test_bad_input_is_refused_before_any_job(embedded, load_example, bad, match):
    mc = load_example("mc_toy_limits")
    kwargs = {"n_obs": 1, **bad}
    with pytest.raises(ValueError, match=match):
        mc.cls_scan(kwargs.pop("n_obs"), **kwargs)


def test_command_line_writes_plot_and_result(run_example, tmp_path):
    out = run_example("mc_toy_limits", "--n-obs", "1", "--precision", "0.1", "--toys-per-job", "5000",
                      "--slots", "2", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "95% CL CLs upper limit on s:" in out.stdout
    result = json.loads((tmp_path / "mc_toy_limits.json").read_text())
    assert abs(result["limit"] - 4.74) <= 3 * result["limit_err"] + 0.005
    assert (tmp_path / "mc_toy_limits.png").stat().st_size > 20_000

    bad = run_example("mc_toy_limits", "--cl", "95", "--out", str(tmp_path))
    assert bad.returncode == 2 and "confidence level must be strictly between 0 and 1" in bad.stderr


def test_limit_error_counts_the_clb_error_shared_by_every_point(load_example):
    """On a fixed grid with binomial toys, pulls have unit width only if CLb's error is added once, in common:
    here CLb has few toys (its error dominates), so treating it as independent per point would shrink it."""
    import numpy as np
    from scipy.stats import poisson

    mc = load_example("mc_toy_limits")
    n_obs, b, alpha = 4, 2.5, 0.05
    exact = mc.exact_cls_limit(n_obs, b)
    s = np.concatenate([[0.0], np.linspace(exact - 0.25, exact + 0.25, 8)])
    toys = np.array([1_000] + [40_000] * 8)
    rng = np.random.default_rng(5)
    pulls, naive = [], []
    for _ in range(400):
        passed = rng.binomial(toys, poisson.cdf(n_obs, s + b))
        points = {float(x): mc.Point(float(x), n_toys=int(n), n_pass=int(k)) for x, n, k in zip(s, toys, passed)}
        grid, cls, err, _, cl_b_rel = mc._cls_table(points)
        fit = mc._fit_limit(grid, cls, err, alpha, cl_b_rel)
        pulls.append((fit.limit - exact) / fit.error)
        naive.append((fit.limit - exact) / mc._fit_limit(grid, cls, err, alpha, 0.0).error)
    assert 0.9 < np.std(pulls) < 1.1
    assert np.std(naive) > 1.3  # without the shared error the limit would look far more precise than it is


def test_plot_draws_the_fitted_line_in_the_zoom(embedded, load_example, tmp_path):
    mc = load_example("mc_toy_limits")
    result = mc.cls_scan(2, b=1.0, **SMALL)
    fit = result.fit
    assert fit is not None and fit["lo"] <= result.limit <= fit["hi"]
    assert fit["limit"] == result.limit and fit["error"] == result.limit_err
    assert math.exp(fit["a"] + fit["c"] * result.limit) == pytest.approx(0.05)
    mc.plot(result, tmp_path / "limits.png")
    assert (tmp_path / "limits.png").stat().st_size > 20_000
