"""The HPO example, small: the Bayesian loop and the random baseline (2-3 iterations of 3-4 small xgboost jobs),
the winners re-scored on data the search never saw, the multi-seed summary, and the command line."""
from __future__ import annotations

import json
import re

import pytest

SMALL = {"iterations": 3, "points": 4, "n_estimators": 30, "folds": 3, "metric": "roc_auc", "seed": 3}


@pytest.fixture(scope="module")
def hpo(load_example):
    return load_example("hpo_xgboost")


def test_bayesian_loop_finds_a_good_model_and_each_score_belongs_to_its_point(embedded, hpo):
    history = hpo.optimize(method="bayes", **SMALL)
    evaluations = history.evaluations
    assert len(evaluations) == 12 and history.failures == 0 and history.seed == 3
    assert [e["iteration"] for e in evaluations] == [1] * 4 + [2] * 4 + [3] * 4
    points = [tuple(sorted(e["params"].items())) for e in evaluations]
    assert len(set(points)) == 12  # the constant liar gives distinct points within a batch
    for e in evaluations:
        assert set(e["params"]) == set(hpo.SPACE)
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


def test_winners_are_rescored_on_data_the_search_never_saw(embedded, hpo):
    options = {k: SMALL[k] for k in ("n_estimators", "folds", "metric")}
    runs = hpo.compare("batch", [0, 1], {**options, "iterations": 2, "points": 3, "xi": 0.01})
    assert [h.seed for h in runs["bayes"]] == [0, 1] and [h.seed for h in runs["random"]] == [0, 1]
    for h in runs["bayes"] + runs["random"]:
        assert len(h.evaluations) == 6
        # each re-score is the winner's own, recomputed here
        assert h.rescored == hpo.rescore.__wrapped__(params=h.best["params"], seed=h.seed, **options)
        assert 0.9 < h.rescored["held_out"] <= 1.0 and 0.9 < h.rescored["fresh_folds"] <= 1.0
    x_search, y_search, x_out, y_out = hpo.load_data()
    assert len(x_out) == pytest.approx(0.25 * (len(x_search) + len(x_out)), abs=1)
    assert not {tuple(r) for r in x_out} & {tuple(r) for r in x_search}  # the held-out rows are not searched

    summary = hpo.summarize(runs)
    for what in hpo.SCORES:
        d = summary[f"bayes_minus_random_{what}"]
        assert d["seeds"] == 2 and 0 <= d["bayes_wins"] <= 2
        diffs = [hpo.score(b, what) - hpo.score(r, what) for b, r in zip(runs["bayes"], runs["random"])]
        assert d["mean"] == pytest.approx(sum(diffs) / 2)


def test_a_winner_shared_by_both_searches_of_a_seed_is_rescored_once_for_both(embedded, hpo):
    point = {"log10_learning_rate": -1.0, "max_depth": 3.0, "subsample": 0.8, "log10_reg_lambda": 0.0}
    # both searches start from the same random batch: when neither improves on it, they share their winner
    runs = [hpo.SearchHistory(method, seed=4, evaluations=[{"iteration": 1, "params": point, "score": 0.99}])
            for method in hpo.METHODS]
    hpo.rescore_winners(runs, n_estimators=20, folds=3, metric="roc_auc")
    assert runs[0].rescored == runs[1].rescored
    assert runs[0].rescored == hpo.rescore.__wrapped__(params=point, seed=4, n_estimators=20, folds=3, metric="roc_auc")


def test_a_bound_that_is_the_parameters_own_limit_is_not_reported_as_clipping(hpo):
    inside = {"log10_learning_rate": -1.0, "max_depth": 4.0, "subsample": 0.8, "log10_reg_lambda": 0.0}
    assert hpo.at_bounds(inside) == []
    # stumps, no row subsampling, no L2 penalty to speak of
    assert hpo.at_bounds({**inside, "max_depth": 1.0, "subsample": 1.0, "log10_reg_lambda": -2.0}) == []
    assert hpo.at_bounds({**inside, "log10_learning_rate": 0.0, "max_depth": 8.0}) == [
        "log10_learning_rate=0", "max_depth=8"]


def test_the_chosen_model_is_kept_as_an_artifact_that_loads_back_and_predicts(embedded, hpo):
    from iworkflow import artifacts

    params = {"log10_learning_rate": -1.0, "max_depth": 3.0, "subsample": 0.8, "log10_reg_lambda": 0.0}
    version = hpo.keep_model(params=params, n_estimators=20, seed=0, metadata={"params": params, "held_out": -0.1})
    model = artifacts.load(hpo.MODEL_NAME, version)
    _, _, x_out, y_out = hpo.load_data()
    assert (model.predict(x_out) == y_out).mean() > 0.85
    kept = artifacts.show(hpo.MODEL_NAME, version)
    assert kept.metadata == {"params": params, "held_out": -0.1}
    lineage = artifacts.lineage(hpo.MODEL_NAME, version)
    assert lineage.work_name.endswith("train_best") and lineage.executor != "driver" and lineage.call_identity


@pytest.mark.parametrize("bad", [{"method": "grid"}, {"metric": "f1"}, {"points": 0}])
def test_bad_input_is_refused(embedded, hpo, bad):
    with pytest.raises(ValueError):
        hpo.optimize(**{**SMALL, **bad})


def test_command_line_compares_over_seeds_and_writes_plot_and_result(run_example, tmp_path):
    out = run_example("hpo_xgboost", "--seeds", "2", "--iterations", "2", "--points", "3", "--n-estimators", "20",
                      "--folds", "3", "--slots", "2", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "bayes - random, held out:" in out.stdout and "best parameters" in out.stdout
    assert f"plot: {tmp_path / 'hpo_xgboost.png'}" in out.stdout
    assert "iteration 2/2" in out.stderr  # progress, per iteration
    result = json.loads((tmp_path / "hpo_xgboost.json").read_text())
    for method in ("bayes", "random"):
        assert [r["seed"] for r in result["runs"][method]] == [0, 1]
        for run in result["runs"][method]:
            assert len(run["evaluations"]) == 6
            assert -0.4 < run["best"]["score"] < 0  # a log-loss, and better than a poor model's
            assert set(run["rescored"]) == {"fresh_folds", "held_out"}
    assert (tmp_path / "hpo_xgboost.png").stat().st_size > 20_000
    kept = re.search(r"model: artifact hpo-xgboost-best version (\d+)", out.stdout)
    assert kept, out.stdout

    bad = run_example("hpo_xgboost", "--seeds", "0", "--out", str(tmp_path))
    assert bad.returncode == 2 and "--seeds must be >= 1" in bad.stderr


ASYNC = {**SMALL, "iterations": 2, "points": 3, "n_estimators": 20}


@pytest.fixture
def one_slot():
    """The embedded runtime with one local slot: the jobs of a batch run one after another."""
    import iworkflow

    runtime = iworkflow.configure(broker="memory://", executor="local", slots=1)
    yield runtime
    iworkflow.shutdown()


def _in_flight_at_each_launch(history) -> list[int]:
    """For each evaluation, how many (itself included) were submitted and not yet finished when it was submitted."""
    evaluations = history.evaluations
    return [sum(o["submitted_s"] <= e["submitted_s"] < o["done_s"] for o in evaluations) for e in evaluations]


def test_async_mode_spends_exactly_the_budget_and_each_score_belongs_to_its_point(embedded, hpo):
    history = hpo.optimize_async(method="bayes", **ASYNC)
    assert history.mode == "async" and history.failures == 0
    assert len(history.evaluations) == 6  # iterations x points, no more, no less
    points = [tuple(sorted(e["params"].items())) for e in history.evaluations]
    assert len(set(points)) == 6  # pending points are liars: no point is asked for twice
    for e in history.evaluations:
        assert all(lo <= e["params"][k] <= hi for k, (lo, hi) in hpo.SPACE.items())
        assert e["done_s"] >= e["submitted_s"] and e["duration_s"] > 0
    # the first design is the batch modes' random one; the score recorded for a point is that point's own
    batch = hpo.optimize(method="bayes", **{**ASYNC, "iterations": 1})
    assert {p for p, e in zip(points, history.evaluations) if e["iteration"] == 1} == {
        tuple(sorted(e["params"].items())) for e in batch.evaluations}
    fixed = {k: ASYNC[k] for k in ("n_estimators", "folds", "metric", "seed")}
    for e in history.evaluations:
        assert hpo.evaluate.__wrapped__(**e["params"], **fixed) == e["score"]


def test_async_mode_never_has_more_than_points_evaluations_in_flight(embedded, hpo):
    history = hpo.optimize_async(method="random", **{**ASYNC, "iterations": 3})
    in_flight = _in_flight_at_each_launch(history)
    assert len(history.evaluations) == 9 and max(in_flight) == 3
    by_launch = [n for _, n in sorted(zip([e["submitted_s"] for e in history.evaluations], in_flight))]
    assert by_launch[:3] == [1, 2, 3]  # the first design goes out at once
    # each later point goes out once one in flight has finished
    later = sorted(e["submitted_s"] for e in history.evaluations)[3:]
    finished = sorted(e["done_s"] for e in history.evaluations)
    assert all(finished[i] <= t for i, t in enumerate(later))


def test_trigger80_starts_the_next_batch_at_80_percent_and_registers_the_late_results(one_slot, hpo):
    # one slot: the fifth job of a batch of five still runs when the fourth result lands and the next batch goes
    history = hpo.optimize_trigger80(method="bayes", **{**SMALL, "iterations": 3, "points": 5, "n_estimators": 20})
    evaluations = history.evaluations
    assert history.mode == "trigger80" and history.failures == 0 and len(evaluations) == 15
    assert len({tuple(sorted(e["params"].items())) for e in evaluations}) == 15
    assert sorted(e["iteration"] for e in evaluations) == [1] * 5 + [2] * 5 + [3] * 5
    late = [e for e in evaluations if e["late"]]
    assert late and all(e["iteration"] < 3 for e in late)  # the last batch's stragglers are awaited, not late
    for e in late:  # registered after the next batch went out, before the search ended
        following = min(o["submitted_s"] for o in evaluations if o["iteration"] == e["iteration"] + 1)
        assert e["registered_s"] > following
    fixed = {k: SMALL[k] for k in ("folds", "metric", "seed")}
    for e in late:  # a late score is still its own point's
        assert hpo.evaluate.__wrapped__(**e["params"], n_estimators=20, **fixed) == e["score"]
    assert history.best_per_iteration[-1] == max(e["score"] for e in evaluations)


def test_command_line_races_the_modes_at_equal_budget(run_example, tmp_path):
    out = run_example("hpo_xgboost", "--race", "--seeds", "1", "--iterations", "2", "--points", "3",
                      "--n-estimators", "20", "--folds", "3", "--slots", "2", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "hpo_xgboost_race.json").read_text())
    assert set(result["runs"]) == {"batch", "trigger80", "async"}
    for mode, runs in result["runs"].items():
        assert [len(r["evaluations"]) for r in runs] == [6] and runs[0]["mode"] == mode
    for mode in ("batch", "trigger80", "async"):
        assert re.search(rf"^{mode}\s+\d+\.\d", out.stdout, re.M), out.stdout
    assert (tmp_path / "hpo_xgboost_race.png").stat().st_size > 20_000

    both = run_example("hpo_xgboost", "--race", "--mode", "async", "--out", str(tmp_path))
    assert both.returncode == 2 and "--race runs every mode; drop --mode async" in both.stderr
