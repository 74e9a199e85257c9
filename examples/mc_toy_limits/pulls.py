"""Are the limit's errors honest?  Repeat the scan over many seeds and look at the pulls (limit - exact) / error.

An honest error gives pulls of mean ~0 and standard deviation ~1 (over 100 seeds, 1.0 +- 0.07 from the seeds
alone).  The exact limits come from the Poisson CDF (known background) and from the hybrid integral done with
scipy (Gaussian background uncertainty), independent of the toys.

Run:  python examples/mc_toy_limits/pulls.py --seeds 100 [--cases all|background] [--slots 2]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from iworkflow.script import add_runtime_arguments, configure_from_args

#: (name, n_obs, b, sigma_b)
CASES = [
    ("no background", 3, 0.0, 0.0),
    ("known background", 4, 2.5, 0.0),
    ("background 1.5 +- 0.5", 2, 1.5, 0.5),
]


def hybrid_limit(n_obs: int, b: float, sigma_b: float, cl: float = 0.95) -> float:
    """The CLs limit with a truncated-Gaussian background, by numerical integration (no toys)."""
    from scipy import integrate, optimize, stats

    if sigma_b == 0:
        cdf = lambda s: stats.poisson.cdf(n_obs, s + b)  # noqa: E731
    else:
        prior = stats.truncnorm(-b / sigma_b, math.inf, loc=b, scale=sigma_b)

        def cdf(s: float) -> float:
            return integrate.quad(lambda x: stats.poisson.cdf(n_obs, s + x) * prior.pdf(x), 0, b + 12 * sigma_b)[0]

    return float(optimize.brentq(lambda s: cdf(s) / cdf(0.0) - (1 - cl), 1e-3, 10 * (n_obs + b + 10)))


def _example():
    spec = importlib.util.spec_from_file_location("mc_toy_limits_run", Path(__file__).with_name("run.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--cases", choices=("all", "background"), default="all")
    parser.add_argument("--precision", type=float, default=0.05)
    parser.add_argument("--toys-per-job", type=int, default=10_000)
    add_runtime_arguments(parser, out_dir=Path(__file__).resolve().parent / "output")
    args = parser.parse_args(argv)
    configure_from_args(args)
    mc = _example()
    cases = CASES if args.cases == "all" else [c for c in CASES if c[2] > 0]
    report = {}
    start = time.monotonic()
    print(f"{'case':<24}{'exact':>8}{'seeds':>7}{'mean pull':>11}{'pull SD':>9}{'max |pull|':>12}"
          f"{'mean error':>12}{'seconds':>9}")
    for name, n_obs, b, sigma_b in cases:
        exact = hybrid_limit(n_obs, b, sigma_b)
        t0 = time.monotonic()
        limits, errors = [], []
        for seed in range(1, args.seeds + 1):
            r = mc.cls_scan(n_obs, b=b, sigma_b=sigma_b, precision=args.precision,
                            toys_per_job=args.toys_per_job, seed=seed)
            limits.append(r.limit)
            errors.append(r.limit_err)
        pulls = (np.array(limits) - exact) / np.array(errors)
        report[name] = {"n_obs": n_obs, "b": b, "sigma_b": sigma_b, "exact": exact, "pulls": pulls.tolist(),
                        "limits": limits, "errors": errors, "seconds": time.monotonic() - t0}
        print(f"{name:<24}{exact:8.4f}{len(pulls):7d}{pulls.mean():11.3f}{pulls.std(ddof=1):9.3f}"
              f"{np.abs(pulls).max():12.2f}{np.mean(errors):12.4f}{time.monotonic() - t0:9.0f}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pulls.json").write_text(json.dumps(report, indent=1))
    print(f"{time.monotonic() - start:.0f} s in all; pulls in {args.out / 'pulls.json'}")
    return report


if __name__ == "__main__":
    main()
