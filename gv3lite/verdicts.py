"""The verdict rule of the study and the tests behind it: the pre-declared analysis plan, intervals, multiplicity.

Owns the analysis plan fixed before the runs (`DELTA`, `ALPHA`, `POWER`, `DIRECTIONS`, the composite contrasts
`COMPOSITE_GRIDS` and how every contrast is named wherever it is shown, `contrast_label`), the interval and test
helpers (`t_interval`, `equivalence_p`, `holm`, `power`, `min_detectable_effect`, `seeds_for_half_width`) and the
verdict rule (`verdict`, `judge`: a table of differences, standard errors and degrees of freedom in, intervals,
Holm-adjusted p-values, minimum detectable effects and verdicts out). Where the differences and standard errors
come from (paired seeds, the seed-blocked model, the image term) is `gv3lite.stats`. Distributions come from scipy.
Differences are in percentage points (pp). Nothing here trains or reads files.

Verdicts (``ALPHA`` = 0.05, smallest effect of interest ``DELTA`` = 1 pp, declared before the runs):

* ``agrees`` / ``disagrees``: the difference is non-zero after Holm's adjustment across the family of the paper's
  claims (Holm-adjusted p < ALPHA; the 95% interval then excludes 0), in / against the paper's direction;
* ``differs``: the same for a contrast whose direction the paper does not state (its own Holm family);
* ``no effect >= 1 pp``: the 95% interval lies inside +-DELTA (two one-sided tests, each at ALPHA / 2, Holm-adjusted
  across the same family);
* ``underpowered``: neither; the table gives the minimum detectable effect (80% power at the strictest Holm level).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import optimize
from scipy import stats as sps

DELTA = 1.0   # pp: the smallest effect of interest, declared before the runs (issue 11)
ALPHA = 0.05  # family-wise error rate of the verdicts
POWER = 0.80  # for the minimum detectable effect
DIRECTIONS = ("better", "worse")  # paper claims that have a direction (gv3lite/paper_results.csv)
# Composite contrasts (issue 22): they change several ingredients at once -- the whole GhostNetV3 recipe against the
# conventional one (`recipe`: re-parameterization, KD, RandAugment, random erasing) and the same on other models
# (`architectures`, the model's branches too) -- so a verdict on one is about the bundle, never about any one
# ingredient. Every place that shows a contrast names it with `contrast_label`, which marks these.
COMPOSITE_GRIDS = ("recipe", "architectures")
COMPOSITE = "composite"


def contrast_label(grid: str, cell: str, baseline: str) -> str:
    """How a contrast is named wherever it is shown (report.md, README, the forest plot, the console, notebooks):
    ``"mixup vs basic"``, and for a grid of `COMPOSITE_GRIDS` ``"ghostnetv3 vs conventional (composite)"``."""
    return f"{cell} vs {baseline}" + (f" ({COMPOSITE})" if grid in COMPOSITE_GRIDS else "")


# ------------------------------------------------------------------------------------------- intervals
def t_interval(diff, se, df, alpha: float = ALPHA) -> dict:
    """Two-sided ``1 - alpha`` Student-t interval and p-value (H0: the true difference is 0).

    ``diff``, ``se`` (> 0), ``df`` (>= 1): scalars or broadcastable arrays, in pp. Returns
    ``dict(low, high, p)`` of the same shape. ``se`` = 0 (identical values) gives an interval of width 0 and
    p = 0 or 1; ``df`` < 1 or a NaN gives NaN (no interval without a variance estimate).
    """
    diff, se, df = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (diff, se, df)))
    ok = (df >= 1) & np.isfinite(se)
    df_ = np.where(ok, df, 1.0)
    q = sps.t.ppf(1 - alpha / 2, df_)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, diff / np.where(se > 0, se, 1.0), np.where(diff == 0, 0.0, np.inf))
    p = 2 * sps.t.sf(np.abs(t), df_)
    nan = np.where(ok, 1.0, np.nan)
    return {"low": (diff - q * se) * nan, "high": (diff + q * se) * nan, "p": p * nan}


def equivalence_p(diff, se, df, delta: float = DELTA):
    """p-value of two one-sided tests that the true difference lies inside (-delta, +delta) (TOST).

    The ``1 - alpha`` interval lies inside +-delta exactly when this p is below ``alpha / 2``. Arrays broadcast;
    NaN where ``df`` < 1.
    """
    diff, se, df = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (diff, se, df)))
    ok = (df >= 1) & np.isfinite(se)
    df_ = np.where(ok, df, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        lower = np.where(se > 0, (diff + delta) / np.where(se > 0, se, 1.0), np.sign(diff + delta) * np.inf)
        upper = np.where(se > 0, (diff - delta) / np.where(se > 0, se, 1.0), np.sign(diff - delta) * np.inf)
    p = np.maximum(sps.t.sf(lower, df_), sps.t.cdf(upper, df_))
    return np.where(ok, p, np.nan)


def holm(p, axis: int = -1):
    """Holm's step-down adjustment of the p-values along ``axis`` (NaN entries are not counted and stay NaN).

    Adjusted p_(k) = max over j <= k of min(1, (m - j + 1) * p_(j)) for the sorted p-values; rejecting where the
    adjusted p < alpha controls the family-wise error rate at alpha under any dependence (Holm 1979).
    """
    p = np.moveaxis(np.asarray(p, dtype=float), axis, -1)
    finite = np.isfinite(p)
    m = finite.sum(axis=-1, keepdims=True)
    order = np.argsort(np.where(finite, p, np.inf), axis=-1)
    sorted_p = np.take_along_axis(p, order, axis=-1)
    rank = np.arange(p.shape[-1])
    scaled = np.where(np.isfinite(sorted_p), (m - rank) * sorted_p, -np.inf)
    adjusted_sorted = np.minimum(np.maximum.accumulate(scaled, axis=-1), 1.0)
    adjusted = np.empty_like(p)
    np.put_along_axis(adjusted, order, adjusted_sorted, axis=-1)
    return np.moveaxis(np.where(finite, adjusted, np.nan), -1, axis)


def power(effect: float, se: float, df: float, alpha: float = ALPHA) -> float:
    """Probability that a two-sided level-``alpha`` t test with standard error ``se`` and ``df`` degrees of freedom
    rejects when the true difference is ``effect`` (noncentral t)."""
    q = sps.t.ppf(1 - alpha / 2, df)
    nc = effect / se
    # the far tail is ~0 once the effect is large; scipy can return NaN there
    return float(np.nan_to_num(sps.nct.sf(q, df, nc)) + np.nan_to_num(sps.nct.cdf(-q, df, nc)))


def min_detectable_effect(se: float, df: float, alpha: float = ALPHA, target_power: float = POWER) -> float:
    """The smallest true difference (pp, > 0) that a two-sided level-``alpha`` t test detects with probability
    ``target_power``, for a standard error ``se`` on ``df`` degrees of freedom. NaN without an error estimate."""
    if not (np.isfinite(se) and np.isfinite(df) and df >= 1 and se > 0):
        return float("nan")
    high = sps.t.ppf(1 - alpha / 2, df) * se
    while power(high, se, df, alpha) < target_power:
        high *= 2
    return float(optimize.brentq(lambda e: power(e, se, df, alpha) - target_power, 0.0, high))


def seeds_for_half_width(sd_diff: float, half_width: float, alpha: float = ALPHA, pooled_cells: int = 2,
                         max_seeds: int = 1000) -> int:
    """Seeds per cell for a ``1 - alpha`` interval of half-width <= ``half_width`` (pp) on a contrast whose
    per-seed paired differences have standard deviation ``sd_diff`` (pp), in a balanced family of
    ``pooled_cells`` cells (residual df = (cells - 1)(seeds - 1)). Raises ``ValueError`` above ``max_seeds``."""
    if sd_diff <= 0 or half_width <= 0:
        raise ValueError(f"sd_diff={sd_diff} and half_width={half_width} must be > 0")
    for n in range(2, max_seeds + 1):
        df = (pooled_cells - 1) * (n - 1)
        if sps.t.ppf(1 - alpha / 2, df) * sd_diff / math.sqrt(n) <= half_width:
            return n
    raise ValueError(f"more than {max_seeds} seeds needed for +-{half_width} pp at sd {sd_diff} pp; "
                     "reduce the seed-to-seed spread first (see benchmarks/variance_pilot.py)")


# ------------------------------------------------------------------------------------------- verdicts
def verdict(p_holm, p_equiv_holm, diff, claim, alpha: float = ALPHA):
    """The verdict of each contrast (see the module docstring). Arrays broadcast (the null simulations use that);
    ``claim``: ``better``/``worse`` (the paper's direction) or anything else (no direction). Returns a string for
    scalar input, else an array of strings."""
    p_holm, p_equiv_holm, diff, claim = np.broadcast_arrays(np.asarray(p_holm, float), np.asarray(p_equiv_holm, float),
                                                            np.asarray(diff, float), np.asarray(claim, object))
    directed = (claim == "better") | (claim == "worse")
    along = (diff > 0) == (claim == "better")
    out = np.select([(p_holm < alpha) & directed & along, (p_holm < alpha) & directed, p_holm < alpha,
                     p_equiv_holm < alpha / 2],
                    ["agrees", "disagrees", "differs", f"no effect >= {DELTA:g} pp"], "underpowered")
    return str(out) if out.ndim == 0 else out


def judge(table: pd.DataFrame, delta: float = DELTA, alpha: float = ALPHA) -> pd.DataFrame:
    """Add intervals, tests and verdicts to a contrast table with columns ``diff``, ``se``, ``df`` (pp) and
    ``claim``. Returns a copy with ``low``, ``high`` (``1 - alpha`` interval), ``p``, ``p_holm``, ``p_equiv``,
    ``p_equiv_holm``, ``family`` (``claims``: the paper states a direction; ``exploratory``: it does not),
    ``mde`` (pp) and ``verdict``. Holm's adjustment runs within each family."""
    out = table.copy().reset_index(drop=True)
    ci = t_interval(out["diff"], out["se"], out["df"], alpha)
    out["low"], out["high"], out["p"] = ci["low"], ci["high"], ci["p"]
    out["p_equiv"] = equivalence_p(out["diff"], out["se"], out["df"], delta)
    out["family"] = np.where(out["claim"].isin(DIRECTIONS), "claims", "exploratory")
    out["p_holm"] = np.nan
    out["p_equiv_holm"] = np.nan
    out["mde"] = np.nan
    for _, idx in out.groupby("family").groups.items():
        out.loc[idx, "p_holm"] = holm(out.loc[idx, "p"].to_numpy())
        out.loc[idx, "p_equiv_holm"] = holm(out.loc[idx, "p_equiv"].to_numpy())
        m = int(np.isfinite(out.loc[idx, "p"]).sum()) or 1
        out.loc[idx, "mde"] = [min_detectable_effect(se, df, alpha / m) for se, df in
                               zip(out.loc[idx, "se"], out.loc[idx, "df"])]
    out["verdict"] = verdict(out["p_holm"], out["p_equiv_holm"], out["diff"], out["claim"], alpha)
    return out
