"""The paper's numbers and claims, typed in once, each with its source.

Owns ``paper_results.csv`` (shipped inside the package). One row per reported number or per claimed direction:

- ``grid`` / ``cell``: which of our ablation grids (see ``gv3lite.ablation``) the row speaks about; ``main`` holds
  the headline table.
- ``value``: the number the source reports (``NaN`` where the paper's value is not known here — the paper's ablation
  tables could not be read offline; they stay visibly unknown, never guessed).
- ``claim``: the direction the source states for this cell against the grid's baseline
  (``baseline`` | ``better`` | ``worse`` | ``unknown``).
- ``source`` and ``confidence`` (high: stated by the paper; medium: quoted by another paper or measured on the
  released checkpoint; low: code defaults or third-party summaries).

Someone with the paper can fill in a value by editing one row (value + source with table id and page).
"""
from __future__ import annotations

from functools import lru_cache
from importlib import resources

import pandas as pd

CLAIMS = ("baseline", "better", "worse", "unknown")


@lru_cache(maxsize=1)
def _table() -> pd.DataFrame:
    with resources.files("gv3lite").joinpath("paper_results.csv").open() as f:
        table = pd.read_csv(f)
    bad = set(table["claim"].dropna()) - set(CLAIMS)
    if bad:
        raise ValueError(f"paper_results.csv: unknown claim value(s) {sorted(bad)}; use one of {CLAIMS}")
    if table["source"].isna().any():
        raise ValueError("paper_results.csv: every row needs a source")
    return table


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
