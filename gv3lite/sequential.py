"""The study's stopping rule: a group-sequential design that looks after each block of runs.

Owns `spending` (the Lan-DeMets O'Brien-Fleming-type alpha-spending function), `boundaries` (the nominal two-sided
level of each look for a declared maximum number of blocks), `look_levels` and `sequential_verdicts` (Holm's
step-down test repeated at every look, with the levels of the spending boundaries; a claim's verdict is final once
made). Nothing here reads files or fits models; arrays broadcast so the tests simulate thousands of studies at once.

Why: a study that adds blocks until its claims are decided and tests at 5% at every look calls false effects far
more often than 5% (every look is another chance). Spending alpha over the looks keeps the family-wise false-call
rate at ``alpha`` whenever the study stops (Lan & DeMets 1983, Biometrika 70:659; O'Brien & Fleming 1979), and the
repeated confidence intervals at the same levels cover the true effects at every look at once (Jennison & Turnbull,
*Group Sequential Methods*, 2000, ch. 9). Holm across the family at every look, with rejections carried forward, is
the sequentially rejective procedure of Maurer & Bretz (2013, Stat. Biopharm. Res. 5:311): each hypothesis gets the
boundaries of its current Holm share of alpha.

Information fraction of look k = blocks so far / declared maximum blocks. The boundaries are computed for z statistics
with independent increments (corr(Z_i, Z_j) = sqrt(t_i / t_j)) and applied as nominal p levels to the t tests of
each look; ``tests/test_sequential.py`` checks by simulation that coverage and false calls keep their levels at the
study's measured spreads.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import optimize
from scipy import stats as sps

from gv3lite.verdicts import ALPHA, DELTA


def spending(t, alpha: float = ALPHA):
    """Alpha spent by information fraction ``t`` (0 < t <= 1): ``2 - 2 Phi(z_{1-alpha/2} / sqrt(t))``
    (O'Brien-Fleming type; all of ``alpha`` at t = 1, almost none early)."""
    t = np.asarray(t, dtype=float)
    return 2 - 2 * sps.norm.cdf(sps.norm.ppf(1 - alpha / 2) / np.sqrt(t))


_GRID = np.linspace(-10.0, 10.0, 1601)  # the score scale S = Z sqrt(t) on which the looks are integrated
_H = _GRID[1] - _GRID[0]


def _next_density(density: np.ndarray, edge: float, variance: float) -> np.ndarray:
    """Density on `_GRID` at the next look of the paths that continue now (|S| < ``edge``); S has independent
    normal increments of ``variance`` (recursive numerical integration, Armitage, McPherson & Rowe 1969)."""
    kept = np.where(np.abs(_GRID) < edge, density, 0.0)
    step = np.sqrt(variance)
    return sps.norm.pdf((_GRID[:, None] - _GRID[None, :]) / step) / step @ kept * _H


@lru_cache(maxsize=256)
def boundaries(fractions: tuple, alpha: float = ALPHA) -> tuple:
    """Nominal two-sided levels (p thresholds) of the looks at information ``fractions`` (increasing, last <= 1)
    that spend ``alpha`` by `spending`: look k rejects when its p < level k. Raises ``ValueError`` for fractions
    that are not increasing in (0, 1]."""
    t = np.asarray(fractions, dtype=float)
    if len(t) == 0 or np.any(np.diff(t) <= 0) or t[0] <= 0 or t[-1] > 1:
        raise ValueError(f"information fractions {fractions} must increase within (0, 1]; declare looks as "
                         "blocks / maximum blocks")
    spent, levels = spending(t, alpha), []
    density, edge = sps.norm.pdf(_GRID, scale=np.sqrt(t[0])), np.inf  # look 1: S_1 ~ N(0, t_1)
    for k in range(len(t)):
        if k:
            density = _next_density(density, edge, t[k] - t[k - 1])
        target = spent[k] - (spent[k - 1] if k else 0.0)  # alpha spent at this look

        def stop(c, k=k, density=density):  # P(continued so far, |Z_k| >= c)
            return float(density[np.abs(_GRID) >= c * np.sqrt(t[k])].sum() * _H) if k else 2 * sps.norm.sf(c)
        c = (np.inf if target <= 1e-12 else sps.norm.isf(target / 2) if k == 0 else
             optimize.brentq(lambda x: stop(x) - target, 0.1, 10.0, xtol=1e-7) if stop(10.0) < target < stop(0.1)
             else sps.norm.isf(target / 2))
        edge = c * np.sqrt(t[k])
        levels.append(float(2 * sps.norm.sf(c)))
    return tuple(levels)


def look_levels(blocks: int, first_look: int, max_blocks: int, m: int, alpha: float = ALPHA) -> np.ndarray:
    """The levels of the look after ``blocks`` blocks for Holm's steps: entry j (0-based) is the level for a
    hypothesis holding ``alpha / (m - j)``. Looks are after blocks ``first_look..max_blocks``."""
    if not first_look <= blocks <= max_blocks:
        raise ValueError(f"a look after {blocks} block(s) is outside the declared looks {first_look}..{max_blocks}")
    fractions = tuple(b / max_blocks for b in range(first_look, max_blocks + 1))
    k = blocks - first_look
    return np.array([boundaries(fractions, alpha / (m - j))[k] for j in range(m)])


def _holm_step(p, done, levels):
    """Holm's step-down at one look: ``p`` (..., m), ``done`` (..., m) earlier rejections (kept, and counted first),
    ``levels`` (m,) from `look_levels`. Returns the rejections after this look (..., m)."""
    p = np.where(done, -1.0, np.nan_to_num(np.asarray(p, float), nan=np.inf))
    order = np.argsort(p, axis=-1)
    sorted_p = np.take_along_axis(p, order, axis=-1)
    passed = np.logical_and.accumulate(sorted_p < levels, axis=-1)
    out = np.zeros_like(passed)
    np.put_along_axis(out, order, passed, axis=-1)
    return out | done


def sequential_verdicts(p, p_equiv, diff, claim, levels_by_look) -> dict:
    """The verdict of each claim after looks 1..K, decided at the first look that decides it.

    ``p``, ``p_equiv`` (TOST), ``diff``: arrays (..., K, m) of the looks' tests; ``claim`` (m,) ``better``/``worse``;
    ``levels_by_look`` (K, m) from `look_levels`. A claim is **agrees**/**disagrees** at the first look where Holm
    rejects 0 (direction of that look's estimate), **no effect >= 1 pp** at the first look where Holm's step-down on
    the TOST p at half the levels accepts equivalence, else **underpowered**. Returns ``dict(verdict (..., m) str,
    look (..., m) int: 1-based look of the decision, 0 when undecided, decided_all (..., K) bool: every claim decided
    after that look)``."""
    p, p_equiv, diff = (np.asarray(a, float) for a in (p, p_equiv, diff))
    better = np.asarray(claim) == "better"
    shape = p.shape[:-2] + p.shape[-1:]
    rejected, equivalent = np.zeros(shape, bool), np.zeros(shape, bool)
    verdict, look = np.full(shape, "underpowered", dtype=object), np.zeros(shape, int)
    decided_all = []
    for k, levels in enumerate(np.asarray(levels_by_look)):
        new_rej = _holm_step(p[..., k, :], rejected, levels) & ~rejected
        new_eq = _holm_step(p_equiv[..., k, :], equivalent, levels / 2) & ~equivalent
        fresh = look == 0
        agrees = (diff[..., k, :] > 0) == better
        verdict = np.where(fresh & new_rej, np.where(agrees, "agrees", "disagrees"),
                           np.where(fresh & new_eq, f"no effect >= {DELTA:g} pp", verdict))
        look = np.where(fresh & (new_rej | new_eq), k + 1, look)
        rejected, equivalent = rejected | new_rej, equivalent | new_eq
        decided_all.append((look > 0).all(axis=-1))
    return {"verdict": verdict, "look": look, "decided_all": np.stack(decided_all, axis=-1)}
