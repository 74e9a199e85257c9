"""The HPO example, small: the Bayesian loop and the random baseline, each 3 iterations of 4 xgboost jobs."""
from __future__ import annotations

import json

import pytest

SMALL = {"iterations": 3, "points": 4, "n_estimators": 40, "folds": 3, "metric": "roc_auc", "seed": 3}


@pytest.fixture(scope="module")
def hpo(load_example):
    return load_example("hpo_xgboost")


def test_bayesian_loop_finds_a_good_model_and_each_score_belongs_to_its_point(embedded, hpo):
    history = hpo.optimize(method="bayes", **SMALL)
    evaluations = history.evaluations
    assert len(evaluations) == 12 and history.failures == 0
    assert [e["iteration"] for e in evaluations] == [1] * 4 + [2] * 4 + [3] * 4
    points = [tuple(sorted(e["params"].items())) for e in evaluations]
    assert len(set(points)) == 12  # the constant liar gives distinct points within a batch
    for e in evaluations:
        assert all(lo <= e["params"][k] <= hi for k, (lo, hi) in hpo.SPACE.items())
    # breast-cancer ROC AUC of a boosted tree ensemble is ~0.99; 0.98 leaves room for a bad search
    assert history.best["score"] >= 0.98
    assert history.best_per_iteration == sorted(history.best_per_iteration)
    # the score recorded for a point is that point's own: retrain it here, deterministically
    fixed = {k: SMALL[k] for k in ("n_estimators", "folds", "metric", "seed")}
    for e in (evaluations[0], history.best, evaluations[-1]):
        assert hpo.evaluate.__wrapped__(**e["params"], **fixed) == e["score"]


def test_random_search_runs_the_same_way_from_the_same_first_batch(embedded, hpo):
    bayes = hpo.optimize(method="bayes", **{**SMALL, "iterations": 1})
    random = hpo.optimize(method="random", **SMALL)
    assert len(random.evaluations) == 12 and len(random.best_per_iteration) == 3
    first = lambda h: [e["params"] for e in h.evaluations if e["iteration"] == 1]
    assert first(random) == first(bayes)  # a fair comparison starts from the same random design
    assert random.best["score"] >= 0.95


@pytest.mark.parametrize("bad", [{"method": "grid"}, {"metric": "f1"}, {"points": 0}])
def test_bad_input_is_refused(embedded, hpo, bad):
    with pytest.raises(ValueError):
        hpo.optimize(**{**SMALL, **bad})


def test_command_line_writes_plot_and_result(run_example, tmp_path):
    out = run_example("hpo_xgboost", "--iterations", "2", "--points", "3", "--n-estimators", "30", "--folds", "3",
                      "--slots", "2", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "bayes: best neg_log_loss" in out.stdout and "random: best neg_log_loss" in out.stdout
    result = json.loads((tmp_path / "hpo_xgboost.json").read_text())
    for method in ("bayes", "random"):
        assert len(result[method]["evaluations"]) == 6
        assert -0.4 < result[method]["best"]["score"] < 0  # a log-loss, and better than a poor model's
    assert (tmp_path / "hpo_xgboost.png").stat().st_size > 20_000
