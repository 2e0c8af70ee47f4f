"""Analysis of the factorial study: an OLS model with block terms (statsmodels' formula API), the declared claims,
their intervals and verdicts, the two-factor interaction chains, and the effects at the GhostNetV3-recipe corner.

Owns `CLAIMS` (the family, declared before any
run and the same at every budget: re-param better, KD better, Mixup worse, CutMix worse, and the whole recipe, a
composite), `FORMULA`, `design_table` (runs.csv rows -> the model's table; bad input refused), `fit_model`,
`claim_table` (one look's estimates, tests and unadjusted intervals) and `effects_table` (interactions and the
effects at the GhostNetV3 corner).

Model: ``top1 ~ C(block) + A + B + C + D + E + F + the seven estimable two-factor interaction chains`` with ±1
coding, so a main effect (high minus low) is 2β; the error degrees of freedom come from replication (15 blocks-1 ...:
16 r - r - 13 for r blocks) and the two three-factor chains. Variance check: Brown-Forsythe tests of the residuals
between the levels of each factor (Holm over the six); when one flags, every standard error is HC3
(heteroscedasticity-robust, MacKinnon & White 1985). With per-image predictions, the variance of which val images were
drawn is added to each contrast (as ``gv3lite.stats`` does for paired contrasts; df by Welch-Satterthwaite).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy import stats as sps

from gv3lite.verdicts import ALPHA, DELTA, equivalence_p, holm, t_interval
from gv3lite.study import design
from gv3lite.study.plan import FACTORIAL_GRID

NAMES = {f.letter: f.name for f in design.FACTORS}
CHAINS = [c for c in design.alias_chains() if len(c[0][1]) == 2]   # the seven two-factor interaction chains
CHAIN_TERMS = [":".join(NAMES[x] for x in chain[0][1]) for chain in CHAINS]  # each chain's first member
FORMULA = "top1 ~ C(block) + " + " + ".join([NAMES[x] for x in design.LETTERS] + CHAIN_TERMS)


@dataclass(frozen=True)
class Claim:
    """One declared claim: ``name``, the paper's ``direction`` (better/worse), the contrast as ``corners`` (high,
    low) levels, and the paper's (grid, cell, baseline) for its claimed differences."""
    name: str
    direction: str
    high: dict
    low: dict
    paper: tuple


def _main(letter: str) -> tuple:
    high = {x: 0 for x in design.LETTERS}
    return {**high, letter: 1}, {**high, letter: -1}


CLAIMS = (
    Claim("reparam", "better", *_main("A"), ("reparam", "full", "plain")),
    Claim("kd", "better", *_main("B"), ("kd", "teacher", "none")),
    Claim("mixup", "worse", *_main("C"), ("augment", "mixup", "basic")),
    Claim("cutmix", "worse", *_main("D"), ("augment", "cutmix", "basic")),
    Claim("recipe (composite: GhostNetV3 corner - conventional corner)", "better", design.GHOSTNETV3_CORNER,
          design.CONVENTIONAL_CORNER, ("recipe", "ghostnetv3", "conventional")),
)


def design_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The model's table from runs.csv rows of the factorial: ``block`` (the seed), one ±1 column per factor name,
    ``top1``, ``run_id``, ``cell``. Raises ``ValueError`` naming the problem and its fix for rows of another
    design, an unknown cell name, a run recorded twice, or a block without all 16 runs."""
    other = sorted(set(runs["grid"]) - {FACTORIAL_GRID})
    if other:
        raise ValueError(f"the results mix the factorial with the grid design ({', '.join(other)}); keep each "
                         "design in its own --out folder")
    levels = [design.parse_label(c) for c in runs["cell"]]
    table = pd.DataFrame({NAMES[x]: [lv[x] for lv in levels] for x in design.LETTERS})
    table.insert(0, "block", runs["seed"].astype(int).to_numpy())
    for column in ("top1", "run_id", "cell"):
        table[column] = runs[column].to_numpy()
    twice = table[table.duplicated(["block", "cell"])]
    if len(twice):
        raise ValueError(f"block {twice['block'].iloc[0]} has run {twice['cell'].iloc[0]} twice; keep one row per "
                         "block and cell in runs.csv")
    expected = {design.run_label(r) for r in design.fraction().to_dict("records")}
    for block, part in table.groupby("block"):
        missing, foreign = sorted(expected - set(part["cell"])), sorted(set(part["cell"]) - expected)
        if missing or foreign:
            what = (f"lacks run(s) {', '.join(missing)}" if missing else
                    f"has run(s) {', '.join(foreign)} outside the fraction")
            raise ValueError(f"block {block} {what}; finish it with `gv3lite reproduce --design factorial` "
                             "(finished runs are kept) or analyse the complete blocks only")
    return table.sort_values(["block", "cell"]).reset_index(drop=True)


def fit_model(table: pd.DataFrame) -> dict:
    """OLS of `FORMULA` on `design_table` rows. Returns ``dict(result, variance_p, robust, table)``: the fitted
    statsmodels result (HC3 covariance when the variance check flags), the Holm-adjusted Brown-Forsythe p of each
    factor, and whether HC3 is used. Raises ``ValueError`` when the design is singular (fewer runs than terms)."""
    ols = smf.ols(FORMULA, data=table)
    rank = np.linalg.matrix_rank(ols.exog)
    if rank < ols.exog.shape[1] or len(table) <= rank:
        raise ValueError(f"the model has {ols.exog.shape[1]} terms but the runs give rank {rank} and "
                         f"{len(table) - rank} error df; record at least one complete block of 16 runs")
    fitted = ols.fit()
    p = [sps.levene(*[fitted.resid[table[n] == v] for v in (-1, 1)], center="median").pvalue for n in NAMES.values()]
    adjusted = dict(zip(NAMES.values(), holm(np.nan_to_num(p, nan=1.0))))
    robust = bool(min(adjusted.values()) < ALPHA)
    return {"result": ols.fit(cov_type="HC3") if robust else fitted, "variance_p": adjusted, "robust": robust,
            "table": table}


def _contrast_vector(result, high: dict, low: dict) -> np.ndarray:
    """Model coefficients x (row at ``high`` - row at ``low``), levels 0 meaning 'left out' (a main effect)."""
    names = list(result.params.index)
    vec = np.zeros(len(names))
    for levels, sign in ((high, 1.0), (low, -1.0)):
        for letter, name in NAMES.items():
            vec[names.index(name)] += sign * levels[letter]
        for term in CHAIN_TERMS:
            a, b = (next(x for x, n in NAMES.items() if n == part) for part in term.split(":"))
            vec[names.index(term)] += sign * levels[a] * levels[b]
    return vec


def _estimate(fit: dict, vec: np.ndarray, correct: np.ndarray | None) -> dict:
    """Estimate, standard error and df of ``vec @ params``, with the image-sampling variance when per-image
    correctness (runs x images, in the model's row order) is given."""
    result = fit["result"]
    est = float(vec @ result.params.to_numpy())
    var = float(vec @ result.cov_params().to_numpy() @ vec)
    df, method = float(result.df_resid), "OLS with block terms" + (", HC3 errors" if fit["robust"] else "")
    if correct is not None:
        weights = vec @ result.model.pinv_wexog          # the contrast as weights on the runs
        per_image = 100.0 * weights @ correct.astype(float)
        image_var = float(per_image.var(ddof=1) / per_image.size)
        denom = var ** 2 / df + image_var ** 2 / (per_image.size - 1)
        df = (var + image_var) ** 2 / denom if denom > 0 else df
        var += image_var
        method += f"; + image sampling over {per_image.size} val images"
    return {"diff": est, "se": float(np.sqrt(var)), "df": df, "method": method}


def claim_table(fit: dict, correct: np.ndarray | None = None, level: float = ALPHA) -> pd.DataFrame:
    """One row per `CLAIMS` entry: ``claim, direction, diff, se, df, low, high`` (the ``1 - level`` interval:
    pass a look's spending level), ``p`` (two-sided, H0: 0), ``p_equiv`` (TOST against ±`DELTA`), ``method``."""
    rows = []
    for c in CLAIMS:
        row = {"claim": c.name, "direction": c.direction,
               **_estimate(fit, _contrast_vector(fit["result"], c.high, c.low), correct)}
        ci = t_interval(row["diff"], row["se"], row["df"], level)
        row.update(low=float(ci["low"]), high=float(ci["high"]),
                   p=float(t_interval(row["diff"], row["se"], row["df"])["p"]),
                   p_equiv=float(equivalence_p(row["diff"], row["se"], row["df"], DELTA)))
        rows.append(row)
    return pd.DataFrame(rows)


def effects_table(fit: dict, correct: np.ndarray | None = None) -> pd.DataFrame:
    """Exploratory rows (not judged): every main effect and two-factor chain with its alias chain, and the effect
    of switching each factor at the GhostNetV3-recipe corner (main effect plus its interactions there), each with
    a 95% interval."""
    rows = []
    for letter, name in NAMES.items():
        high, low = _main(letter)
        corner_high = {**design.GHOSTNETV3_CORNER, letter: 1}
        corner_low = {**design.GHOSTNETV3_CORNER, letter: -1}
        for kind, h, lo in (("main effect", high, low), ("at the GhostNetV3 corner", corner_high, corner_low)):
            rows.append({"effect": name, "kind": kind, "aliases": design.chain_text(
                next(c for c in design.alias_chains(max_order=3) if c[0][1] == letter)) if kind == "main effect"
                else "", **_estimate(fit, _contrast_vector(fit["result"], h, lo), correct)})
    for chain, term in zip(CHAINS, CHAIN_TERMS):
        vec = np.zeros(len(fit["result"].params))
        vec[list(fit["result"].params.index).index(term)] = 2.0  # effect = 2 beta
        rows.append({"effect": term, "kind": "two-factor chain", "aliases": design.chain_text(chain),
                     **_estimate(fit, vec, correct)})
    table = pd.DataFrame(rows)
    ci = t_interval(table["diff"], table["se"], table["df"])
    table["low"], table["high"] = ci["low"], ci["high"]
    return table
