"""The paper's numbers and claims, typed in once, each with its source.

Owns ``paper_results.csv`` (shipped inside the package). One row per reported number or per claimed direction:

- ``grid`` / ``cell``: which of our ablation grids (see ``gv3lite.study.grids``) the row speaks about; ``main`` holds
  the headline table.
- ``value``: the number the source reports (``NaN`` where the paper's value is not known here — the paper's ablation
  tables could not be read offline; they stay visibly unknown, never guessed).
- ``claim``: the direction the source states for this cell against the grid's baseline
  (``baseline`` | ``better`` | ``worse`` | ``unknown``).
- ``kind``: what the value is (`KINDS`): ``paper`` (stated by arXiv 2404.11202, directly or quoted verbatim by
  another paper), ``other_paper`` (another paper's or author's number, e.g. GhostNetV2's own top-1), ``checkpoint``
  (measured on the released checkpoint by someone else: not in the paper), ``code`` (a default of the released
  code), ``third_party`` (a summary), ``ours`` (our control, no source value), ``unknown`` (not recovered).
- ``source`` and ``confidence`` (high: stated by the paper; medium: quoted by another paper or measured on the
  released checkpoint; low: code defaults or third-party summaries).

A difference of two rows (cell minus baseline) is never a "paper" value unless the paper states that difference:
`difference_kind` labels it ``derived`` (computed by us from two published top-1, e.g. GhostNetV3 minus
GhostNetV2) or ``checkpoint`` (a measurement of the released checkpoint), and `DIFFERENCE_NOTES` say how it was
computed and why it is not comparable with our contrasts. Every display of such a number (README, report, forest
plot, notebooks) uses that label (``tests/test_paper.py``).

Someone with the paper can fill in a value by editing one row (value + source with table id and page).
"""
from __future__ import annotations

from functools import lru_cache
from importlib import resources

import pandas as pd

CLAIMS = ("baseline", "better", "worse", "unknown")
KINDS = ("paper", "other_paper", "checkpoint", "code", "third_party", "ours", "unknown")
# how each grid's cell-minus-baseline differences from this table were computed, and why they are not our contrast
DIFFERENCE_NOTES = {
    "recipe": "derived, not stated by the paper: GhostNetV3 top-1 (the paper: 600 epochs, its recipe) minus "
              "GhostNetV2 top-1 (its own paper: 450-epoch RMSProp recipe with RandAugment and random erasing) at "
              "widths 1.0/1.3/1.6x, computed by us; not an ablation (epochs, optimizer and every ingredient differ, "
              "ImageNet at 224 px) and not comparable with a 0.5x model trained for minutes on Imagenette",
    "architectures": "derived, not stated by the paper: GhostNetV3 1.0x minus GhostNetV2 1.0x top-1 (two papers, "
                     "two recipes, 600 vs 450 epochs), computed by us; not an ablation",
    "schedule": "checkpoint measurement, not an ablation of the paper: EMA minus raw weights of the released "
                "GhostNetV3 1.0x checkpoint (PaddleClas PR 3413), one training run",
}


@lru_cache(maxsize=1)
def _table() -> pd.DataFrame:
    with resources.files("gv3lite").joinpath("paper_results.csv").open() as f:
        table = pd.read_csv(f)
    bad = set(table["claim"].dropna()) - set(CLAIMS)
    if bad:
        raise ValueError(f"paper_results.csv: unknown claim value(s) {sorted(bad)}; use one of {CLAIMS}")
    if table["source"].isna().any():
        raise ValueError("paper_results.csv: every row needs a source")
    bad = set(table["kind"].fillna("")) - set(KINDS)
    if bad:
        raise ValueError(f"paper_results.csv: unknown kind value(s) {sorted(bad)}; use one of {KINDS}")
    return table


def difference_kind(grid: str) -> str:
    """How a top-1 difference (cell minus baseline) built from two rows of ``grid`` is labelled: ``"checkpoint"``
    when a row is a measurement of the released checkpoint, else ``"derived"`` (computed by us from two published
    values). Never ``"paper"``: the paper's ablation tables were not recovered, so the table holds no difference the
    paper states. Raises ``KeyError`` for an unknown grid."""
    kinds = set(paper_results(grid).dropna(subset=["value"])["kind"])
    return "checkpoint" if "checkpoint" in kinds else "derived"


def paper_results(grid: str | None = None) -> pd.DataFrame:
    """Return the paper's numbers/claims as a DataFrame (a copy), optionally only the rows of one ``grid``.

    Raises:
        KeyError: ``grid`` is not in the table (the message lists the grids that are).
    """
    table = _table()
    if grid is None:
        return table.copy()
    if grid not in set(table["grid"]):
        raise KeyError(f"no paper rows for grid {grid!r}; known grids: {sorted(set(table['grid']))}")
    return table[table["grid"] == grid].reset_index(drop=True)


def paper_claim(grid: str, cell: str) -> str:
    """The direction the paper states for ``cell`` of ``grid`` (``baseline|better|worse|unknown``).

    Cells the table does not mention are ``unknown``.
    """
    rows = paper_results(grid)
    rows = rows[(rows["cell"] == cell) & rows["claim"].notna()]
    return str(rows["claim"].iloc[0]) if len(rows) else "unknown"
