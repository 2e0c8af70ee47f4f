"""The study's plan: every (grid, cell, seed) of a budget with the recipe it trains and its run id.

Owns `cell_recipe` (preset <- cell changes <- budget sizes), `trained_as` (a cell without EMA trains as its EMA
twin), `run_id` (a hash of the trained recipe: equal configs share one run), `plan`, and which grids a runs table
covers (`complete_grids`, `recorded_grids`), and `factorial_plan` (the blocks of the factorial design,
``gv3lite.study.design``, as the same items).

Runs are keyed by a hash of the resolved recipe (seed included), so a config shared by several grids (e.g. the
``ghostnetv3`` recipe is the ``recipe`` grid's cell, ``reparam/full``, ``kd/teacher`` and ``schedule/ema``) trains
once; so does a cell without EMA (trained as its EMA twin, whose raw weights it reads: `trained_as`), and the
architectures grid's GhostNetV2 cells (GhostNetV3's architecture: the recipe's switches decide the branches).
"""
from __future__ import annotations

import hashlib
import json

import pandas as pd

from gv3lite.budgets import BUDGETS, NOT_RECIPE_FIELDS, check_budget
from gv3lite.recipe import Recipe, preset
from gv3lite.study import design
from gv3lite.study.design import FACTORIAL_GRID
from gv3lite.study.grids import GRIDS, Cell


def _check_budget(budget: str) -> dict:
    return BUDGETS[check_budget(budget)]


def cell_recipe(budget: str, grid: str, cell: Cell | str, seed: int = 0) -> Recipe:
    """The resolved `Recipe` of one cell under ``budget`` for ``seed`` (preset ← cell changes ← budget sizes)."""
    b = _check_budget(budget)
    if isinstance(cell, str):
        cell = next((c for c in GRIDS[grid] if c.name == cell), None) or _unknown_cell(grid, cell)
    sizes = {k: v for k, v in b.items() if k not in NOT_RECIPE_FIELDS}
    sizes["model"] = cell.model.format(width=b["arch_width"]) if cell.model else b["model"]
    if sizes["model"].startswith("ghostnetv2_"):
        # GhostNetV2 is GhostNetV3's architecture without the training-time branches, and a recipe's switches decide
        # the branches: train it under its GhostNetV3 name, so that it shares runs with the other grids
        sizes["model"] = "ghostnetv3_" + sizes["model"].removeprefix("ghostnetv2_").removesuffix("_rep")
    return preset(cell.preset, **{**cell.changes, **sizes, "seed": seed})


def trained_as(recipe: Recipe) -> Recipe:
    """The recipe that is actually trained for ``recipe``: itself, or with ``ema=True`` when it has no EMA.

    An EMA only observes training (it reads the weights after each step and draws no random numbers), so a run
    with EMA follows exactly the trajectory of the same run without it; its raw weights *are* the no-EMA run
    (checked by ``tests/test_train.py``). ``schedule/no_ema`` therefore reads ``top1_raw`` of the EMA run."""
    return recipe if recipe.ema else recipe.replace(ema=True)


def _unknown_cell(grid, cell):
    raise KeyError(f"grid {grid!r} has no cell {cell!r}; cells: {[c.name for c in GRIDS[grid]]}")


def run_id(recipe: Recipe) -> str:
    """A 12-hex-digit hash of the resolved recipe (all fields, seed included): equal configs share one run."""
    return hashlib.sha256(json.dumps(recipe.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


def plan(budget: str, grids=None, seeds: int | None = None) -> list[dict]:
    """Every (grid, cell, seed) of ``budget`` as dicts ``grid, cell, seed, recipe, trained_as, run_id``, in grid
    order (``trained_as``: the recipe that is trained, see `trained_as`; ``run_id`` is its hash).

    ``grids``: names to keep (default: all grids with a cell in this budget); ``seeds``: number of seeds
    (default: the budget's), seeds are 0..seeds-1. Raises ``KeyError`` for an unknown grid name and ``ValueError``
    for an empty ``grids``, a grid named twice, or a grid without cells in this budget (the message lists the grids
    that have cells in it). The returned plan is never empty.
    """
    b = _check_budget(budget)
    available = [g for g in GRIDS if any(budget in c.budgets for c in GRIDS[g])]
    names = available if grids is None else list(grids)
    unknown = [g for g in names if g not in GRIDS]
    if unknown:
        raise KeyError(f"unknown grid(s) {unknown}; choose from {list(GRIDS)}")
    if not names:
        raise ValueError(f"no grid given; choose one or more of {available} (budget {budget!r})")
    repeated = sorted({g for g in names if names.count(g) > 1})
    if repeated:
        raise ValueError(f"grid(s) {repeated} listed more than once; list each grid once")
    empty = [g for g in names if g not in available]
    if empty:
        raise ValueError(f"grid(s) {empty} have no cells in the {budget!r} budget; grids with cells in it: "
                         f"{available} (or use a larger --budget)")
    n_seeds = b["seeds"] if seeds is None else int(seeds)
    if n_seeds < 1:
        raise ValueError(f"seeds={seeds}: need at least 1")
    items = []
    for grid in names:
        for cell in GRIDS[grid]:
            if budget in cell.budgets:
                for seed in range(n_seeds):
                    recipe = cell_recipe(budget, grid, cell, seed)
                    items.append({"grid": grid, "cell": cell.name, "seed": seed, "recipe": recipe,
                                  "trained_as": trained_as(recipe), "run_id": run_id(trained_as(recipe))})
    return items


def complete_grids(runs: pd.DataFrame, budget: str, items: list[dict] | None = None) -> list[str]:
    """The grids of ``budget`` whose every planned training (``items``, default `plan` ``(budget)``: the budget's
    seeds) has its run id in ``runs`` (a runs.csv table with a ``run_id`` column), in grid order. A grid with only a
    few rows is not complete: cells shared with another grid's runs, such as ``architectures/ghostnetv2/*``, put
    rows of a grid that was not run into runs.csv."""
    items = plan(budget) if items is None else items
    recorded = set(runs["run_id"])
    grids = dict.fromkeys(it["grid"] for it in items)
    return [g for g in grids if {it["run_id"] for it in items if it["grid"] == g} <= recorded]


def recorded_grids(runs: pd.DataFrame, budget: str, items: list[dict] | None = None) -> list[str]:
    """The grids a runs.csv table stands for: its `complete_grids`, or -- when none is complete (results of an older
    plan, other recipes or sizes) -- the grids whose every planned (grid, cell, seed) has a row, else every grid that
    has rows in it, in grid order (a grid with only the rows it shares with another, e.g. ``architectures/ghostnetv2/*``
    beside ``recipe``, is not recorded)."""
    items = plan(budget) if items is None else items
    done = complete_grids(runs, budget, items)
    if done:
        return done
    rows = set(zip(runs["grid"], runs["cell"], runs["seed"]))
    cells = [g for g in dict.fromkeys(it["grid"] for it in items)
             if {(it["grid"], it["cell"], it["seed"]) for it in items if it["grid"] == g} <= rows]
    return cells or [g for g in GRIDS if g in set(runs["grid"])]


def factorial_plan(budget: str, blocks: int, changes: dict | None = None, generators: dict | None = None) -> list[dict]:
    """The runs of blocks 0..``blocks``-1 of the factorial design under ``budget``, as `plan` items (``grid`` =
    ``"factorial"``, ``cell`` = the run's levels, e.g. ``A+B+C-D-E-F-``, ``seed`` = the block) plus ``block`` and
    ``order`` (the run's place in its block's random order, `design.block_order`). A run's recipe is the base preset
    with its factors' fields, ``changes`` (``--set``) and the budget's sizes; the two corners equal the recipe grid's
    cells, so they share their run ids. Raises ``ValueError`` when ``changes`` sets a factor's field (the factor would
    have one level: a singular design) or ``blocks`` < 1, and like `design.fraction` for bad generators."""
    sizes = {k: v for k, v in _check_budget(budget).items() if k not in NOT_RECIPE_FIELDS}
    changes = dict(changes or {})
    for f in design.FACTORS:
        fixed = sorted(set(f.low) & set(changes))
        if fixed:
            raise ValueError(f"--set {', '.join(fixed)} would fix factor {f.letter} ({f.name}) at one level, which "
                             "makes the design singular; drop it from --set (the factorial varies it)")
    if blocks < 1:
        raise ValueError(f"blocks={blocks}: the factorial needs at least 1 block")
    items = []
    for block in range(blocks):
        for order, label in enumerate(design.block_order(block, generators)):
            fields = design.level_fields(design.parse_label(label))
            recipe = preset(design.BASE_PRESET, **{**fields, **changes, **sizes, "seed": block})
            items.append({"grid": FACTORIAL_GRID, "cell": label, "seed": block, "block": block, "order": order,
                          "recipe": recipe, "trained_as": trained_as(recipe), "run_id": run_id(trained_as(recipe))})
    return items
