"""The factorial study look by look: after each block from the budget's first look on, the model is refitted on the
blocks so far, the declared claims are tested at the look's spending levels (``gv3lite.sequential``), and the study
stops once every claim is decided or the declared maximum number of blocks is reached.

Owns `analyse_looks` (runs.csv rows -> one row per look and claim, the verdicts, whether the study has stopped) and
`LOOK_COLUMNS` (``looks.csv``, the recorded look schedule), `correct_of` (per-image correctness for the
image-sampling term). Everything is recomputed from the recorded runs, so a
re-analysis (``gv3lite report``) and a resumed study give the same looks and verdicts.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from gv3lite.budgets import FACTORIAL_BLOCKS
from gv3lite.sequential import look_levels, sequential_verdicts
from gv3lite.verdicts import POWER, min_detectable_effect
from gv3lite.study.factorial import CLAIMS, claim_table, design_table, fit_model

LOOK_COLUMNS = ("look", "blocks", "fraction", "level", "claim", "diff", "se", "df", "low", "high", "p", "p_equiv",
                "verdict_so_far", "decided_at_look")


def correct_of(predictions: pd.DataFrame | None, run_ids) -> np.ndarray | None:
    """(runs, images) per-image correctness of the EMA predictions in ``run_ids`` order, or None when any is
    missing."""
    if predictions is None or predictions.empty:
        return None
    column = "pred_ema" if "pred_ema" in predictions and predictions["pred_ema"].notna().all() else "pred_raw"
    grouped = {rid: part.sort_values("val_index") for rid, part in predictions.groupby("run_id")}
    if any(rid not in grouped for rid in run_ids):
        return None
    rows = [(grouped[rid][column] == grouped[rid]["target"]).to_numpy() for rid in run_ids]
    return np.stack(rows) if len({len(r) for r in rows}) == 1 else None


def analyse_looks(runs: pd.DataFrame, budget: str, predictions: pd.DataFrame | None = None) -> dict:
    """Every look of a recorded factorial study of ``budget`` (`FACTORIAL_BLOCKS`: first look, maximum blocks).

    Returns ``dict(looks, claims, fit, blocks, stopped, reason)``: ``looks`` one row per look and claim
    (`LOOK_COLUMNS`), ``claims`` the claim table of the last look with its sequential ``verdict``,
    ``decided_at_look`` (0 if undecided), ``level`` (the look's strictest Holm level: the share alpha / m spent over
    the looks; ``low``/``high`` are at it) and ``mde`` (80% power at that level);
    ``fit`` the last look's model
    (``factorial.fit_model``), ``blocks`` the complete blocks analysed, ``stopped`` whether no further block is due
    (every claim decided, or the maximum reached) and ``reason``. Raises like ``factorial.design_table`` for bad
    rows, and ``ValueError`` when fewer blocks than the first look are recorded."""
    settings = FACTORIAL_BLOCKS[budget]
    first, most = settings["first_look"], settings["max_blocks"]
    table = design_table(runs)
    blocks = int(table["block"].nunique())
    if sorted(table["block"].unique()) != list(range(blocks)):
        raise ValueError(f"blocks {sorted(table['block'].unique())} are recorded; blocks run 0, 1, 2, ... in order, "
                         "so train the missing ones with `gv3lite reproduce --design factorial`")
    if blocks < first:
        raise ValueError(f"{blocks} block(s) recorded; the {budget} budget's first look is after {first}: train more "
                         "with `gv3lite reproduce --design factorial`")
    m, rows, stats = len(CLAIMS), [], []
    last = min(blocks, most)
    for b in range(first, last + 1):
        part = table[table["block"] < b]
        fit = fit_model(part)
        levels = look_levels(b, first, most, m)
        # the reported interval is at Holm's strictest share (alpha / m spent over the looks): one that excludes 0
        # always comes with a decision (Holm's later steps, at larger levels, may decide a claim whose interval
        # still touches 0), and the m intervals cover the m true effects at once with 1 - alpha
        claims = claim_table(fit, correct_of(predictions, part["run_id"]), level=levels[0])
        claims["look"], claims["blocks"], claims["fraction"], claims["level"] = b - first + 1, b, b / most, levels[0]
        stats.append((claims, levels))
        rows.append(claims)
    p = np.stack([c["p"].to_numpy() for c, _ in stats])
    p_equiv = np.stack([c["p_equiv"].to_numpy() for c, _ in stats])
    diff = np.stack([c["diff"].to_numpy() for c, _ in stats])
    result = sequential_verdicts(p, p_equiv, diff, np.array([c.direction for c in CLAIMS]),
                                 np.stack([lv for _, lv in stats]))
    looks = pd.concat(rows, ignore_index=True)
    looks["decided_at_look"] = np.tile(result["look"], len(stats))
    looks["verdict_so_far"] = [_so_far(v, d, k) for v, d, k in zip(np.tile(result["verdict"], len(stats)),
                                                                   looks["decided_at_look"], looks["look"])]
    final = stats[-1][0].copy()
    final["verdict"], final["decided_at_look"] = result["verdict"], result["look"]
    final["mde"] = [min_detectable_effect(se, df, final["level"].iloc[0], POWER) for se, df in
                    zip(final["se"], final["df"])]
    decided = bool(result["decided_all"][-1])
    reason = ("every claim decided" if decided else f"the declared maximum of {most} blocks" if blocks >= most
              else "")
    return {"looks": looks[list(LOOK_COLUMNS)], "claims": final, "fit": fit, "blocks": blocks,
            "stopped": bool(reason), "reason": reason or f"claims undecided after {blocks} of at most {most} blocks"}


def _so_far(verdict: str, decided_at: int, look: int) -> str:
    return verdict if 0 < decided_at <= look else "undecided"

