"""A toy optimisation loop: each iteration evaluates 8 points as one fan-out of jobs.

Cross-entropy method on the Rosenbrock function: sample points around the current guess, run them
as one ``@work(map_results=True)`` call, move towards the best ones, repeat.  Standard library only.
"""
from __future__ import annotations

import argparse
import math
import random
import time

from iworkflow import depends_on, work, workflow
from iworkflow.script import add_runtime_arguments, configure_from_args


@work(map_results=True, cache=True)
def rosenbrock(x: float, y: float, a: float = 1.0, b: float = 100.0) -> float:
    """The objective, run as a job: a slow-ish evaluation in real life, cheap here.  It depends on nothing but
    its code and arguments, so ``cache=True`` lets a later run reuse the result of exactly the same call."""
    return (a - x) ** 2 + b * (y - x * x) ** 2


@workflow(local=True)
def optimise(iterations: int = 3, points: int = 8, seed: int = 7) -> dict:
    rng = random.Random(seed)
    mean, sigma = [-1.0, 2.0], [1.5, 1.5]
    best = {"x": None, "y": None, "value": math.inf, "reused": 0}
    results = None
    for it in range(iterations):
        candidates = [
            {"x": round(rng.gauss(mean[0], sigma[0]), 6), "y": round(rng.gauss(mean[1], sigma[1]), 6)}
            for _ in range(points)
        ]
        # the candidates are drawn around numbers computed from the last results, which keep no trace of
        # where they came from: depends_on draws that edge in the DAG (nothing on the first iteration)
        with depends_on(results):
            results = rosenbrock(a=1.0, group_kwargs=candidates)
        scored = sorted(((results.result(args=c), c) for c in candidates), key=lambda s: s[0])
        reused = best["reused"] + sum(results.get_result(args=c, with_details=True)[1]["cached"] for c in candidates)
        if scored[0][0] < best["value"]:
            best = {**scored[0][1], "value": scored[0][0]}
        best["reused"] = reused
        elite = [c for _, c in scored[: max(2, points // 3)]]
        for d, name in enumerate(("x", "y")):
            values = [c[name] for c in elite]
            mean[d] = sum(values) / len(values)
            sigma[d] = max(0.05, (sum((v - mean[d]) ** 2 for v in values) / len(values)) ** 0.5)
        print(f"iteration {it + 1}: best of {points} = {scored[0][0]:.4f} at {scored[0][1]}")
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--points", type=int, default=8)
    add_runtime_arguments(parser)
    args = parser.parse_args()
    configure_from_args(args)
    start = time.perf_counter()
    best = optimise(iterations=args.iterations, points=args.points)
    print(f"best point: x={best['x']:.4f} y={best['y']:.4f} f={best['value']:.4f} "
          f"({args.iterations * args.points} jobs in {time.perf_counter() - start:.2f}s)")
    if best["reused"]:
        print(f"{best['reused']} results were reused from earlier identical calls (rosenbrock has cache=True; "
              "without it every job runs again)")


if __name__ == "__main__":
    main()
