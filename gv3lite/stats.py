"""The contrasts of the ablation study: paired seeds, the seed-blocked model, within-run and per-image contrasts.

Owns the seed-blocked model (`BlockedModel`), the contrast table of an ablation study (`Contrast`,
`contrast_table`), the within-run comparison of two readings of the same trainings (`within_run`, e.g. EMA vs raw
weights) and the per-image paired analysis (`per_image_contrast`, `image_variance`, `mcnemar_p`): where each
contrast's difference, standard error and degrees of freedom come from. The plan, the intervals, Holm's adjustment
and the verdict rule they feed are `gv3lite.verdicts`. Distributions come from scipy. Accuracies are in percent,
differences in percentage points (pp). Nothing here trains or reads files.

The unit of replication is the **seed** (one training). Two cells trained with the same seed form a pair; the
per-seed difference removes what the seed does to every cell alike. Evaluating more val images shrinks only the
evaluation noise, never the seed-to-seed training noise, so intervals are always built from the seed level up.

Interval: a seed-blocked linear model ``top1[cell, seed] = cell effect + seed effect + error`` (a randomized complete
block design with seeds as blocks; least squares on dummies, so missing runs are allowed), its residual variance
pooled over the cells of one family (same architecture: they share the training noise), and Student-t quantiles
on the residual degrees of freedom. For a balanced family the estimate of cell − baseline is the mean of the paired
per-seed differences and its standard error is ``sigma * sqrt(2 / seeds)``. Pooling is what makes few seeds usable:
with 2 seeds a lone pair has 1 degree of freedom (t quantile 12.7), 5 cells of a family have 4 (2.78). It assumes
the same error variance in every cell of the family; with >= 3 seeds per cell that is checked (Bartlett's test on
the contrasts' paired differences, p < 0.05 -> each contrast falls back to its own paired t interval), with 2 seeds
it cannot be tested and the table says so. Why not a paired bootstrap: with n seeds it has at most n^n resamples
(4 for 2 seeds), its percentile interval is far too narrow below ~10 seeds, and the null simulation in
``tests/test_stats.py`` shows the t interval keeps its level.

The interval is conditional on the val images (the same images for every seed). When per-image predictions exist,
`per_image_contrast` adds the image-sampling variance, so that the interval speaks about the image distribution.

Verdicts: see `gv3lite.verdicts`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from gv3lite.verdicts import ALPHA, DELTA, judge, t_interval


# ------------------------------------------------------------------------------------------- blocked model
class BlockedModel:
    """Least squares fit of ``y[obs] = cell effect + seed effect + error`` for one fixed design.

    ``cells``, ``seeds``: one label per observation (length N). The design (dummies for cells and seeds, fitted
    through its pseudo-inverse) is fixed at construction, so `fit` takes ``y`` of shape ``(..., N)`` and fits many
    outcome vectors at once (the null simulations in the tests). Only differences of cell effects are estimable;
    a seed seen in one cell only adds nothing to them. ``df`` = N - rank of the design.
    """

    def __init__(self, cells, seeds):
        self.cells = list(dict.fromkeys(cells))
        self.seeds = list(dict.fromkeys(seeds))
        if len(cells) != len(seeds):
            raise ValueError(f"{len(cells)} cell labels but {len(seeds)} seed labels; give one of each per run")
        rows = np.zeros((len(cells), len(self.cells) + len(self.seeds)))
        for i, (c, s) in enumerate(zip(cells, seeds)):
            rows[i, self.cells.index(c)] = 1
            rows[i, len(self.cells) + self.seeds.index(s)] = 1
        self.design = rows
        self.pinv = np.linalg.pinv(rows)
        self.df = len(cells) - np.linalg.matrix_rank(rows)
        self._hat = rows @ self.pinv
        self._cov = self.pinv @ self.pinv.T  # (X'X)^+

    def fit(self, y) -> dict:
        """``dict(coef (..., cells + seeds), sigma2 (...), df)``: ``sigma2`` = residual sum of squares / df (NaN
        when df = 0, e.g. one seed)."""
        y = np.asarray(y, dtype=float)
        resid = y - y @ self._hat.T
        with np.errstate(invalid="ignore", divide="ignore"):
            sigma2 = (resid ** 2).sum(-1) / self.df if self.df > 0 else np.full(y.shape[:-1], np.nan)
        return {"coef": y @ self.pinv.T, "sigma2": sigma2, "df": self.df}

    def contrast(self, fitted: dict, cell, baseline) -> tuple:
        """``(estimate, se)`` of cell - baseline (pp) from a `fit` result; arrays over the leading axes of ``y``."""
        c = np.zeros(self.design.shape[1])
        c[self.cells.index(cell)], c[self.cells.index(baseline)] = 1.0, -1.0
        return fitted["coef"] @ c, np.sqrt(fitted["sigma2"] * (c @ self._cov @ c))


# ------------------------------------------------------------------------------------------- the study
@dataclass(frozen=True)
class Contrast:
    """One comparison of the study: ``cell`` against ``baseline`` of ``grid`` (names as in ``runs``), the paper's
    ``claim`` (``better``/``worse``/other) and claimed differences in pp (``paper_diff``, may be empty).
    ``within_run=(a, b)``: both cells read the same trainings, so the contrast is ``runs[a] - runs[b]`` of every
    training of the study (e.g. ``("top1_ema", "top1_raw")``)."""
    grid: str
    cell: str
    baseline: str
    claim: str = "unknown"
    paper_diff: tuple = ()
    within_run: tuple | None = None


def within_run(runs: pd.DataFrame, a: str, b: str, alpha: float = ALPHA) -> dict:
    """Paired comparison of two readings of the same trainings: ``d = runs[a] - runs[b]`` per unique ``run_id``
    (rows without both values are left out and counted in ``n_missing``). The unit is the training, the interval a
    one-sample t interval on n - 1 df. Returns ``dict(diff, se, df, n, n_negative, n_missing, diffs)`` (pp;
    ``diffs``: Series by run id). Raises ``KeyError`` naming a missing column."""
    missing = [c for c in ("run_id", a, b) if c not in runs]
    if missing:
        raise KeyError(f"runs has no column(s) {missing}; within-run contrasts need run_id, {a} and {b}")
    unique = runs.drop_duplicates("run_id").set_index("run_id")
    d = (unique[a] - unique[b]).dropna()
    n = len(d)
    se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return {"diff": float(d.mean()) if n else float("nan"), "se": se, "df": n - 1, "n": n,
            "n_negative": int((d < 0).sum()), "n_missing": len(unique) - n, "diffs": d}


def _arms(runs: pd.DataFrame, contrasts) -> dict:
    """(grid, cell) -> Series of top-1 by seed, and an arm key that is equal for cells that are the same runs read
    the same way (e.g. recipe/ghostnetv3 and kd/teacher)."""
    arms = {}
    for c in contrasts:
        for name in (c.cell, c.baseline):
            rows = runs[(runs["grid"] == c.grid) & (runs["cell"] == name)]
            if rows.empty:
                continue
            if rows["seed"].duplicated().any():
                raise ValueError(f"runs has seed(s) {sorted(set(rows['seed'][rows['seed'].duplicated()]))} twice for "
                                 f"{c.grid}/{name}; keep one row per (grid, cell, seed)")
            reading = tuple(rows["ema"]) if "ema" in rows else ()
            key = (tuple(sorted(zip(rows["seed"], rows["run_id"]))), reading)
            family = str(rows["model"].iloc[0]).removesuffix("_rep") if "model" in rows else "all"
            column = "pred_ema" if "ema" in rows and bool(rows["ema"].iloc[0]) else "pred_raw"
            arms[(c.grid, name)] = {"top1": rows.set_index("seed")["top1"], "key": key, "family": family,
                                    "run_ids": rows.set_index("seed")["run_id"], "pred": column}
    return arms


def _fill_within_run(row: dict, runs: pd.DataFrame, columns: tuple, predictions: pd.DataFrame | None,
                     alpha: float) -> None:
    """Fill ``row`` (in place) with the within-run contrast ``runs[a] - runs[b]`` over every training
    (`within_run`, ``columns = (a, b)``), plus the image term when ``predictions`` cover those trainings."""
    w = within_run(runs, *columns, alpha)
    row.update(diff=w["diff"], se=w["se"], df=w["df"], n=w["n"], method=f"within-run t over all {w['n']} "
               f"trainings ({columns[0]} - {columns[1]})",
               per_seed=" ".join(f"{v:+.2f}" for v in w["diffs"]),
               note=f"{w['n_negative']} of {w['n']} negative"
               + (f"; {w['n_missing']} trainings without both readings" if w["n_missing"] else ""))
    if predictions is not None:
        ids = list(w["diffs"].index)
        _add_image_term(row, _correct(predictions, ids, "pred_ema"), _correct(predictions, ids, "pred_raw"))


ROW_COLUMNS = ("grid", "cell", "baseline", "claim", "paper_diff", "diff", "se", "df", "n", "seeds", "per_seed",
               "method", "same_as", "note")


def contrast_table(runs: pd.DataFrame, contrasts, delta: float = DELTA, alpha: float = ALPHA,
                   pool: bool = True, predictions: pd.DataFrame | None = None) -> pd.DataFrame:
    """The verdict table of a study: one row per distinct contrast (contrasts that compare the same runs, e.g.
    recipe/ghostnetv3 vs conventional and architectures/ghostnetv2/*, are one row, listed in ``same_as``).

    ``runs``: one row per (grid, cell, seed) with ``top1`` (%), ``run_id``, and optionally ``model`` (the pooling
    family: cells of one architecture, ``_rep`` suffix ignored), ``ema`` (which weights ``top1`` reads) and
    ``top1_ema``/``top1_raw`` (within-run contrasts). ``contrasts``: `Contrast` objects. ``pool``: pool the residual
    variance over each family (see the module docstring); False = a paired t interval per contrast.
    ``predictions``: per-image predictions (``run_id, val_index, target, pred_raw, pred_ema``); where they cover
    every paired run of a contrast, the variance of which val images were drawn is added (`image_variance`), so the
    interval speaks about the image distribution, not only this val set (df: Welch-Satterthwaite).

    Columns: ``grid, cell, baseline, claim, paper_diff, diff, se, df, n`` (pairs or trainings), ``seeds`` (paired
    seeds), ``per_seed`` (the paired differences, pp, in seed order), ``method``, ``same_as``, ``note``, then
    `judge`'s columns. Contrasts with a missing arm or no pair are kept with NaN statistics and a note.
    """
    contrasts = list(contrasts)
    arms = _arms(runs, contrasts)
    rows, seen = [], {}
    for c in contrasts:
        row = {"grid": c.grid, "cell": c.cell, "baseline": c.baseline, "claim": c.claim,
               "paper_diff": "/".join(f"{v:+.1f}" for v in c.paper_diff), "diff": np.nan, "se": np.nan, "df": np.nan,
               "n": 0, "seeds": "", "per_seed": "", "method": "", "same_as": "", "note": ""}
        a, b = arms.get((c.grid, c.cell)), arms.get((c.grid, c.baseline))
        if a is None or b is None:
            row["note"] = f"no runs of {c.grid}/{c.cell if a is None else c.baseline}"
            rows.append(row)
            continue
        pair_key = (a["key"], b["key"])
        if pair_key in seen:
            seen[pair_key]["same_as"] += (", " if seen[pair_key]["same_as"] else "") + f"{c.grid}/{c.cell}"
            continue
        seen[pair_key] = row
        common = a["run_ids"].index.intersection(b["run_ids"].index)
        if len(common) and (a["run_ids"][common] == b["run_ids"][common]).any():  # the same trainings, read two ways
            if c.within_run is None:
                raise ValueError(f"{c.grid}/{c.cell} and {c.baseline} are the same trainings; give the contrast "
                                 "within_run=(column_a, column_b) to compare two readings of them")
            _fill_within_run(row, runs, c.within_run, predictions, alpha)
            rows.append(row)
            continue
        d = (a["top1"] - b["top1"]).dropna()
        unpaired = sorted(set(a["top1"].index) ^ set(b["top1"].index))
        row.update(n=len(d), seeds=" ".join(map(str, d.index)), per_seed=" ".join(f"{v:+.2f}" for v in d),
                   note=f"seeds without a pair: {unpaired}" if unpaired else "")
        rows.append(row)
        row["_arms"] = (c.grid, c.cell), (c.grid, c.baseline)
    table = pd.DataFrame(rows, columns=[*ROW_COLUMNS, "_arms"])
    _fill_between_run(table, arms, runs, pool)
    if predictions is not None and "_arms" in table:
        for i, pair in table["_arms"].dropna().items():
            (x, y), seeds = pair, [int(s) for s in table.loc[i, "seeds"].split()]
            row = table.loc[i].to_dict()
            _add_image_term(row, _correct(predictions, [arms[x]["run_ids"][s] for s in seeds], arms[x]["pred"]),
                            _correct(predictions, [arms[y]["run_ids"][s] for s in seeds], arms[y]["pred"]))
            table.loc[i, ["se", "df", "method"]] = row["se"], row["df"], row["method"]
    return judge(table.drop(columns="_arms", errors="ignore"), delta, alpha)


def _correct(predictions: pd.DataFrame, run_ids: list, column: str):
    """(len(run_ids), images) bool array of per-image correctness of ``column`` (``pred_raw``/``pred_ema``) in
    val-index order, or None when a run has no predictions (e.g. results recorded before they were kept)."""
    out = []
    for rid in run_ids:
        part = predictions[predictions["run_id"] == rid].sort_values("val_index")
        if part.empty or column not in part or part[column].isna().any():
            return None
        out.append((part[column] == part["target"]).to_numpy())
    if not out or len({len(o) for o in out}) != 1:
        return None
    return np.stack(out)


def image_variance(correct_a, correct_b) -> float:
    """Variance (pp²) that drawing the val images adds to a difference of accuracies, from paired per-image
    correctness (runs, images) bool arrays: the variance over images of the per-image difference averaged over the
    runs, divided by the number of images (the image term of `per_image_contrast`)."""
    d = 100.0 * (np.asarray(correct_a, float) - np.asarray(correct_b, float)).mean(0)
    return float(d.var(ddof=1) / d.size) if d.size > 1 else 0.0


def _add_image_term(row: dict, correct_a, correct_b) -> None:
    """Add the image-sampling variance to ``row``'s ``se`` and Satterthwaite ``df`` (in place); no-op without
    predictions or a seed-level variance."""
    if correct_a is None or correct_b is None or correct_a.shape != correct_b.shape or not np.isfinite(row["se"]):
        return
    var_seed, var_image = row["se"] ** 2, image_variance(correct_a, correct_b)
    images = correct_a.shape[1]
    denom = (var_seed ** 2 / row["df"] if var_seed > 0 else 0) + (var_image ** 2 / (images - 1) if var_image > 0 else 0)
    row["df"] = (var_seed + var_image) ** 2 / denom if denom > 0 else row["df"]
    row["se"] = math.sqrt(var_seed + var_image)
    row["method"] += f"; + image sampling over {images} val images (per-image predictions)"


def _fill_between_run(table: pd.DataFrame, arms: dict, runs: pd.DataFrame, pool: bool) -> None:
    """Estimate, standard error and df of every between-run contrast of ``table`` (in place)."""
    if "_arms" not in table:
        return
    todo = table[table["_arms"].notna()]
    families = {}
    for i, (cell_arm, base_arm) in todo["_arms"].items():
        fam = arms[cell_arm]["family"]
        families.setdefault(fam, []).append((i, cell_arm, base_arm))
    for fam, items in families.items():
        # one arm per distinct set of runs (cells sharing runs would count the same trainings twice)
        members = {}
        for _, x, y in items:
            for arm in (x, y):
                members.setdefault(arms[arm]["key"], arm)
        pooled = pool and len(members) > 2
        note = ""
        if pooled:
            diffs = [(arms[x]["top1"] - arms[y]["top1"]).dropna() for _, x, y in items]
            if min(len(d) for d in diffs) >= 3 and len(diffs) >= 2:
                p_bartlett = sps.bartlett(*diffs).pvalue
                if p_bartlett < 0.05:
                    pooled, note = False, f"variances differ (Bartlett p={p_bartlett:.3f}): not pooled"
            elif min(len(d) for d in diffs) < 3:
                note = "equal variance across the family assumed (untestable with < 3 seeds)"
        if pooled:
            labels, seeds, y = [], [], []
            for key, arm in members.items():
                for s, v in arms[arm]["top1"].dropna().items():
                    labels.append(key), seeds.append(s), y.append(v)
            model = BlockedModel(labels, seeds)
            fitted = model.fit(np.array(y))
            for i, x, b in items:
                est, se = model.contrast(fitted, arms[x]["key"], arms[b]["key"])
                table.loc[i, ["diff", "se", "df"]] = float(est), float(se), float(model.df)
                table.loc[i, "method"] = f"seed-blocked model, residual variance pooled over {len(members)} cells " \
                                         f"of {fam} (df {model.df})"
                table.loc[i, "note"] = "; ".join(v for v in (table.loc[i, "note"], note) if v)
            continue
        for i, x, b in items:
            d = (arms[x]["top1"] - arms[b]["top1"]).dropna()
            n = len(d)
            table.loc[i, ["diff", "se", "df"]] = (float(d.mean()) if n else np.nan,
                                                  float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else np.nan, n - 1)
            table.loc[i, "method"] = f"paired t over {n} seeds (df {n - 1})"
            table.loc[i, "note"] = "; ".join(v for v in (table.loc[i, "note"], note) if v)


# ------------------------------------------------------------------------------------------- per image
def mcnemar_p(correct_a, correct_b) -> float:
    """Exact McNemar p-value (two-sided binomial test on the discordant images) for two classifiers' per-image
    correctness on the same images (bool arrays of shape (N,)). Tests evaluation noise only: one seed's
    models, not the ingredient."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b.shape:
        raise ValueError(f"correctness arrays differ in shape {a.shape} vs {b.shape}; pass the same val images")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    return 1.0 if only_a + only_b == 0 else float(sps.binomtest(only_a, only_a + only_b, 0.5).pvalue)


def per_image_contrast(correct_a, correct_b, alpha: float = ALPHA) -> dict:
    """Paired analysis of per-image predictions: ``correct_a``, ``correct_b`` bool arrays of shape (seeds, images),
    the same val image in the same column and the same seed in the same row.

    ``diff`` = mean over seeds and images of a - b (pp). Its variance adds the seed level (variance of the per-seed
    accuracy differences / seeds: the training noise, with the seed as the unit) and the image level (variance of
    the per-image differences averaged over seeds / images: which val images were drawn). Each term also holds the
    seed x image interaction once, so the sum counts it twice (slightly conservative). Degrees of freedom:
    Welch-Satterthwaite. Returns ``dict(diff, se, df, low, high, p, se_seed, se_image, mcnemar_p)`` (pp;
    ``mcnemar_p``: per seed, see `mcnemar_p`). Raises ``ValueError`` for different shapes or fewer than 2 seeds
    (one seed cannot measure the training noise).
    """
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"need two (seeds, images) arrays of the same shape, got {a.shape} and {b.shape}")
    seeds, images = a.shape
    if seeds < 2:
        raise ValueError("per_image_contrast needs >= 2 seeds: with one seed the interval would leave out the "
                         "seed-to-seed training noise; train another seed of both cells")
    d = 100.0 * (a.astype(float) - b.astype(float))
    var_seed = d.mean(1).var(ddof=1) / seeds
    var_image = image_variance(a, b)
    se = math.sqrt(var_seed + var_image)
    terms = [(var_seed, seeds - 1), (var_image, images - 1)]
    denom = sum(v ** 2 / k for v, k in terms if k > 0 and v > 0)
    df = (var_seed + var_image) ** 2 / denom if denom > 0 else float(seeds - 1)
    ci = t_interval(d.mean(), se, df, alpha)
    return {"diff": float(d.mean()), "se": se, "df": float(df), "low": float(ci["low"]), "high": float(ci["high"]),
            "p": float(ci["p"]), "se_seed": math.sqrt(var_seed), "se_image": math.sqrt(var_image),
            "mcnemar_p": [mcnemar_p(a[s], b[s]) for s in range(seeds)]}
