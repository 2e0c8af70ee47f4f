"""gv3lite.stats: hand-computed values, the quick results recorded at 4a61a24 re-analysed, and simulations of the
null (the false-call rate stays <= 5%) and of a true effect (the power the minimum detectable effect promises)."""
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gv3lite import stats, verdicts

# the quick study committed at 4a61a24 (18 trainings, 2 seeds), kept as a fixed example: the hand-computed values
# below are of these runs (the committed results/quick is re-run whenever the study changes)
QUICK_RUNS = Path(__file__).parent / "fixtures" / "quick_runs_4a61a24.csv"


# ---------------------------------------------------------------------------------------------- by hand
def test_blocked_model_by_hand():
    # cells x seeds [[1, 3], [2, 6], [4, 4]]: residuals y - row mean - column mean + grand mean = [[0, 0], [-1, 1],
    # [1, -1]], SS 4 on (3-1)(2-1) = 2 df -> sigma^2 = 2; cell 1 - cell 0 = 4 - 2 = 2 with se sqrt(2 * 2 / 2)
    y = np.array([[1, 3], [2, 6], [4, 4]], float)
    cells, seeds = np.repeat([0, 1, 2], 2), np.tile([0, 1], 3)
    model = stats.BlockedModel(cells, seeds)
    fitted = model.fit(y.ravel())
    assert model.df == 2 and float(fitted["sigma2"]) == pytest.approx(2.0)
    est, se = model.contrast(fitted, 1, 0)
    assert float(est) == pytest.approx(2.0) and float(se) == pytest.approx(math.sqrt(2.0))
    # a seed seen in one cell only changes nothing
    unbalanced = stats.BlockedModel(list(cells) + [0], list(seeds) + [7])
    est2, se2 = unbalanced.contrast(unbalanced.fit(np.append(y.ravel(), 99.0)), 1, 0)
    assert float(est2) == pytest.approx(2.0) and float(se2) == pytest.approx(math.sqrt(2.0))
    with pytest.raises(ValueError, match="one of each"):
        stats.BlockedModel([0, 1], [0])


def test_per_image_contrast_by_hand():
    a = np.array([[1, 1, 0, 0], [1, 0, 1, 0]], bool)
    b = np.array([[1, 0, 0, 0], [0, 0, 1, 0]], bool)
    # d (pp) = [[0, 100, 0, 0], [100, 0, 0, 0]]: both seeds +25 (seed term 0); image means 50, 50, 0, 0 have
    # variance 833.3, / 4 images = 208.3 -> se 14.43, and only the image term counts -> df 3
    r = stats.per_image_contrast(a, b)
    assert r["diff"] == pytest.approx(25.0) and r["se_seed"] == pytest.approx(0.0)
    assert r["se"] == pytest.approx(math.sqrt(2500 / 3 / 4)) and r["df"] == pytest.approx(3.0)
    assert r["mcnemar_p"] == [1.0, 1.0]  # one discordant image per seed
    with pytest.raises(ValueError, match=">= 2 seeds"):
        stats.per_image_contrast(a[:1], b[:1])
    with pytest.raises(ValueError, match="same shape"):
        stats.per_image_contrast(a, b[:, :3])


def test_per_image_contrast_keeps_the_training_noise():
    # seeds disagree (+30 pp, -30 pp): many images make the image term small, the seed term keeps the interval wide
    rng = np.random.default_rng(1)
    b = rng.random((2, 4000)) < 0.5
    a = b.copy()
    a[0, :1200] = True
    a[1, :1200] = False
    r = stats.per_image_contrast(a, b)
    assert r["se_seed"] > 5 * r["se_image"]
    assert r["low"] < 0 < r["high"]
    assert min(r["mcnemar_p"]) < 1e-6  # each seed alone looks "significant": evaluation noise only


def test_mcnemar_p_by_hand():
    a = np.array([1] * 10 + [0] * 2, bool)
    b = np.zeros(12, bool)
    # 10 images right only under a, 0 only under b: two-sided exact binomial p = 2 * 0.5^10
    assert stats.mcnemar_p(a, b) == pytest.approx(2 * 0.5 ** 10)


# ------------------------------------------------------------------- recorded results (the 4a61a24 fixture)
QUICK_CONTRASTS = [
    stats.Contrast("recipe", "ghostnetv3", "conventional", "better", (1.8, 2.2, 2.6)),
    stats.Contrast("reparam", "full", "plain", "better"),
    stats.Contrast("kd", "teacher", "none", "better"),
    stats.Contrast("augment", "mixup", "basic", "worse"),
    stats.Contrast("schedule", "ema", "no_ema", "better", (0.2,), ("top1_ema", "top1_raw")),
    stats.Contrast("architectures", "ghostnetv2/ghostnetv3", "ghostnetv2/conventional", "better", (1.8,)),
    stats.Contrast("architectures", "mobilenetv2/ghostnetv3", "mobilenetv2/conventional", "better"),
    stats.Contrast("architectures", "shufflenetv2/ghostnetv3", "shufflenetv2/conventional", "better"),
]


def test_ema_within_run_on_the_4a61a24_quick_runs():
    # issue 11: EMA - raw over all 18 trainings: -0.32 pp, 95% CI [-0.54, -0.09], 14 of 18 negative
    runs = pd.read_csv(QUICK_RUNS)
    w = stats.within_run(runs, "top1_ema", "top1_raw")
    ci = verdicts.t_interval(w["diff"], w["se"], w["df"])
    assert (w["n"], w["n_negative"], w["df"]) == (18, 14, 17)
    assert w["diff"] == pytest.approx(-0.317, abs=1e-3)
    assert (float(ci["low"]), float(ci["high"])) == pytest.approx((-0.543, -0.090), abs=1e-3)


def test_contrast_table_on_the_4a61a24_quick_runs():
    runs = pd.read_csv(QUICK_RUNS)
    table = stats.contrast_table(runs, QUICK_CONTRASTS).set_index("cell")
    # one row per distinct pair of runs: architectures/ghostnetv2/* are the recipe grid's runs
    assert len(table) == 7 and table.loc["ghostnetv3", "same_as"] == "architectures/ghostnetv2/ghostnetv3"
    # estimates = mean paired differences straight from the CSV
    top1 = runs.set_index(["grid", "cell", "seed"])["top1"].sort_index()
    for grid, cell, base in [("recipe", "ghostnetv3", "conventional"), ("reparam", "full", "plain"),
                             ("kd", "teacher", "none"), ("augment", "mixup", "basic")]:
            assert table.loc[cell, "diff"] == pytest.approx((top1[grid, cell] - top1[grid, base]).mean())
    # the GhostNetV3-0.5x family: 5 distinct cells x 2 seeds, residual variance by an independent two-way ANOVA
    y = np.array([[top1["recipe", "conventional", s], top1["recipe", "ghostnetv3", s], top1["reparam", "plain", s],
                   top1["kd", "none", s], top1["augment", "mixup", s]] for s in (0, 1)]).T
    resid = y - y.mean(1, keepdims=True) - y.mean(0, keepdims=True) + y.mean()
    sigma2 = (resid ** 2).sum() / 4
    assert table.loc["full", "df"] == 4 and table.loc["full", "se"] == pytest.approx(math.sqrt(sigma2))
    # the other architectures are their own families (1 df each); EMA is within-run on all 18 trainings
    assert table.loc["shufflenetv2/ghostnetv3", "df"] == 1 and table.loc["ema", "df"] == 17
    assert (table["family"] == "claims").all()
    # with 2 seeds nothing but EMA can be told: every between-run claim is underpowered; EMA's interval lies
    # inside +-1 pp (its unadjusted p = 0.009 does not survive Holm over 7 claims)
    assert table.loc["ema", "verdict"] == "no effect >= 1 pp" and table.loc["ema", "p_holm"] > 0.05
    assert set(table.drop(index="ema")["verdict"]) == {"underpowered"}
    assert (table["mde"] > 0).all()


def test_contrast_table_reports_missing_arms_and_unpaired_seeds():
    runs = pd.DataFrame({"grid": "g", "cell": ["a", "a", "a", "b", "b"], "seed": [0, 1, 2, 0, 1],
                         "run_id": list("vwxyz"), "top1": [50.0, 52, 51, 48, 49]})
    table = stats.contrast_table(runs, [stats.Contrast("g", "b", "a", "worse"),
                                        stats.Contrast("g", "c", "a", "worse")]).set_index("cell")
    assert table.loc["b", "diff"] == pytest.approx(-2.5) and table.loc["b", "n"] == 2
    assert "seeds without a pair: [2]" in table.loc["b", "note"]
    assert np.isnan(table.loc["c", "diff"]) and "no runs of g/c" in table.loc["c", "note"]
    assert table.loc["c", "verdict"] == "underpowered"
    shared = runs.assign(cell=["a", "a", "a", "b", "b"], run_id=list("vwxvw"))
    with pytest.raises(ValueError, match="within_run"):
        stats.contrast_table(shared, [stats.Contrast("g", "b", "a")])


# ---------------------------------------------------------------------------------------------- simulations
def _simulate(effects, seeds, sims, seed_sd, noise_sd, rng):
    """top-1 of ``len(effects)`` cells x ``seeds`` seeds, ``sims`` times: seed effect + cell effect + noise."""
    k = len(effects)
    y = (rng.normal(0, seed_sd, (sims, 1, seeds)) + np.asarray(effects, float)[None, :, None]
         + rng.normal(0, noise_sd, (sims, k, seeds)))
    cells, blocks = np.repeat(np.arange(k), seeds), np.tile(np.arange(seeds), k)
    model = stats.BlockedModel(cells, blocks)
    return model, model.fit(y.reshape(sims, -1))


# the quick design: conventional (0), ghostnetv3 (1), plain (2), no KD (3), Mixup (4); contrasts against baselines
QUICK_PAIRS = [(1, 0), (1, 2), (1, 3), (4, 3)]
QUICK_CLAIMS = ["better", "better", "better", "worse"]


def _verdicts(model, fitted, pairs, claims):
    est, se = zip(*(model.contrast(fitted, a, b) for a, b in pairs))
    est, se = np.stack(est, -1), np.stack(se, -1)
    ci = verdicts.t_interval(est, se, model.df)
    p_holm = verdicts.holm(ci["p"])
    p_eq_holm = verdicts.holm(verdicts.equivalence_p(est, se, model.df))
    return verdicts.verdict(p_holm, p_eq_holm, est, np.array(claims, object)), ci


def test_null_simulation_false_call_rate_at_most_5_percent():
    # no true effect, seed-to-seed SD ~4 pp per cell (as measured in results/quick), 2 seeds, the quick design
    rng = np.random.default_rng(11)
    sims = 20_000
    model, fitted = _simulate([0.0] * 5, 2, sims, seed_sd=2.0, noise_sd=3.5, rng=rng)
    v, ci = _verdicts(model, fitted, QUICK_PAIRS, QUICK_CLAIMS)
    called = np.isin(v, ["agrees", "disagrees"])
    mc = 3 * math.sqrt(0.05 * 0.95 / sims)  # three Monte Carlo standard errors
    assert called.any(axis=1).mean() <= 0.05 + mc  # family-wise: any claim called
    assert (ci["p"] < 0.05).mean() == pytest.approx(0.05, abs=mc)  # each unadjusted test keeps its level exactly
    # the old rule (|diff| > sqrt(s_a^2 + s_b^2), 2 seeds per cell) on pure noise without shared seed effects:
    # |diff| / spread = |t_2| / sqrt(2), so it calls P(|t_2| > sqrt(2)) = 1 - sqrt(2) / 2 = 29% of the contrasts
    raw = rng.normal(0, 3.5, (sims, 2, 2))
    diff = raw[:, 0].mean(-1) - raw[:, 1].mean(-1)
    spread = np.sqrt(raw[:, 0].var(-1, ddof=1) + raw[:, 1].var(-1, ddof=1))
    assert (np.abs(diff) > spread).mean() == pytest.approx(1 - math.sqrt(2) / 2, abs=0.01)


def test_null_simulation_many_seeds_and_the_equivalence_call():
    # 10 seeds: still <= 5% false "agrees/disagrees"; and with a true effect of exactly delta the interval lies
    # inside +-delta at most 2.5% of the time (no false "no effect")
    rng = np.random.default_rng(12)
    sims = 20_000
    model, fitted = _simulate([0.0] * 5, 10, sims, seed_sd=2.0, noise_sd=1.0, rng=rng)
    v, _ = _verdicts(model, fitted, QUICK_PAIRS, QUICK_CLAIMS)
    assert np.isin(v, ["agrees", "disagrees"]).any(axis=1).mean() <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / sims)
    model, fitted = _simulate([0.0, verdicts.DELTA], 10, sims, seed_sd=2.0, noise_sd=0.5, rng=rng)
    v, _ = _verdicts(model, fitted, [(1, 0)], ["better"])
    assert (v == "no effect >= 1 pp").mean() <= 0.025 + 3 * math.sqrt(0.025 * 0.975 / sims)


def test_power_simulation_matches_the_minimum_detectable_effect():
    # a true effect of exactly the MDE is detected (correct direction) in ~80% of studies; a 0 effect in ~0%
    rng = np.random.default_rng(13)
    sims, seeds, noise = 20_000, 6, 1.5
    df = (5 - 1) * (seeds - 1)
    se_true = noise * math.sqrt(2 / seeds)
    mde = verdicts.min_detectable_effect(se_true, df)
    model, fitted = _simulate([0.0, mde, 0.0, 0.0, 0.0], seeds, sims, seed_sd=2.0, noise_sd=noise, rng=rng)
    v, _ = _verdicts(model, fitted, [(1, 0)], ["better"])
    assert (v == "agrees").mean() == pytest.approx(verdicts.POWER, abs=0.015)
    # at the quick budget's noise (~4 pp) and 2 seeds, a paper-sized effect (+2 pp) is almost never seen
    model, fitted = _simulate([0.0, 2.0, 0.0, 0.0, 0.0], 2, sims, seed_sd=2.0, noise_sd=3.5, rng=rng)
    v, _ = _verdicts(model, fitted, QUICK_PAIRS, QUICK_CLAIMS)
    assert (v[:, 0] == "agrees").mean() < 0.10


def test_contrast_table_adds_the_image_term_from_per_image_predictions():
    # two cells x 3 seeds; per seed both runs score the same 50%, on different images in seed 0 only
    runs = pd.DataFrame({"grid": "g", "cell": ["a"] * 3 + ["b"] * 3, "seed": [0, 1, 2] * 2, "run_id": list("uvwxyz"),
                         "top1": [50.0, 51, 52, 50.5, 51, 53], "ema": False})
    target = np.zeros(8, int)
    right = {"u": [1, 1, 1, 1, 0, 0, 0, 0], "x": [0, 0, 0, 0, 1, 1, 1, 1]}
    predictions = pd.concat([pd.DataFrame({"run_id": rid, "val_index": range(8), "target": target,
                                           "pred_raw": 1 - np.array(right.get(rid, [1, 1, 0, 0, 1, 1, 0, 0]))})
                             for rid in "uvwxyz"])
    contrast = [stats.Contrast("g", "b", "a", "better")]
    plain = stats.contrast_table(runs, contrast).iloc[0]
    with_images = stats.contrast_table(runs, contrast, predictions=predictions).iloc[0]
    # per-image differences b - a averaged over seeds: seed 0 gives -100 / +100, seeds 1-2 give 0 -> +-33.3 pp,
    # variance over the 8 images 1269.8 / 8 = 158.7 pp^2 added to the seed-level variance
    correct_b = np.array([[0, 0, 0, 0, 1, 1, 1, 1], [1, 1, 0, 0, 1, 1, 0, 0], [1, 1, 0, 0, 1, 1, 0, 0]], bool)
    correct_a = np.array([[1, 1, 1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 1, 1, 0, 0], [1, 1, 0, 0, 1, 1, 0, 0]], bool)
    var_image = stats.image_variance(correct_b, correct_a)
    assert var_image == pytest.approx(np.var([-100 / 3] * 4 + [100 / 3] * 4, ddof=1) / 8)
    assert with_images["se"] == pytest.approx(math.sqrt(plain["se"] ** 2 + var_image))
    assert with_images["diff"] == plain["diff"] and "image sampling over 8 val images" in with_images["method"]
    # old results without predictions: unchanged
    assert stats.contrast_table(runs, contrast, predictions=predictions.iloc[:0]).iloc[0]["se"] == plain["se"]


def test_pooling_falls_back_to_paired_t_when_variances_differ():
    # 3 cells x 5 seeds: contrast b - a has paired differences with SD ~0.1 pp, c - a with SD ~10 pp: Bartlett's test
    # rejects equal variances, so each contrast keeps its own paired t interval (4 df) instead of the pooled one
    a = np.array([50.0, 52, 54, 51, 53])
    runs = pd.DataFrame({"grid": "g", "cell": ["a"] * 5 + ["b"] * 5 + ["c"] * 5, "seed": list(range(5)) * 3,
                         "run_id": [f"r{i}" for i in range(15)],
                         "top1": np.concatenate([a, a + [2.0, 2.1, 1.9, 2.0, 2.1], a + [10.0, -12, 15, -8, 3]])})
    contrasts = [stats.Contrast("g", "b", "a", "better"), stats.Contrast("g", "c", "a", "better")]
    table = stats.contrast_table(runs, contrasts).set_index("cell")
    assert (table["df"] == 4).all() and table["method"].str.startswith("paired t").all()
    assert table["note"].str.contains("Bartlett").all()
    assert table.loc["b", "se"] == pytest.approx(np.std([2.0, 2.1, 1.9, 2.0, 2.1], ddof=1) / math.sqrt(5))
    assert table.loc["b", "verdict"] == "agrees" and table.loc["c", "verdict"] == "underpowered"


def test_contrast_table_without_contrasts_is_empty_with_its_columns():
    runs = pd.DataFrame({"grid": ["g"], "cell": ["a"], "seed": [0], "run_id": ["r"], "top1": [50.0]})
    table = stats.contrast_table(runs, [])
    assert table.empty and {"diff", "low", "high", "p_holm", "verdict", "same_as"} <= set(table.columns)
