"""Paired comparison of two sets of `gv3lite train` runs (same recipe and seeds, e.g. before/after a code change).

Each run directory holds ``metrics.csv``, ``recipe.yaml`` and ``run_info.json`` (its commit), written by
``gv3lite.train.fit``. Runs are paired by the recipe's ``seed``; the recipes must otherwise be equal. For the
final epoch's val top-1 (%) it reports each seed's difference B - A, their mean, the 95% Student-t interval over seeds
(``gv3lite.verdicts.t_interval``, df = seeds - 1), and the TOST p-value that the true difference lies inside
+-``--delta`` pp (``gv3lite.verdicts.equivalence_p``): the difference is shown equivalent to zero only when the whole
interval lies inside +-delta. It also sums each run's epoch ``seconds`` (the trainer's own wall time per epoch).

Usage:
    python benchmarks/compare_runs.py --a runs/old_s0 runs/old_s1 --b runs/new_s0 runs/new_s1 [--delta 1.0]
                                      [--ignore kd_temperature]

Prints a Markdown table and the interval; writes nothing.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pandas as pd

from gv3lite.recipe import Recipe
from gv3lite.stats import within_run
from gv3lite.verdicts import equivalence_p, t_interval


def read_run(path) -> dict:
    """``dict(seed, commit, recipe, top1, top5, seconds)`` of one run directory. Raises ``FileNotFoundError`` (not a
    run directory) and ``ValueError`` (a run that did not finish every epoch of its recipe)."""
    path = Path(path)
    for name in ("metrics.csv", "recipe.yaml", "run_info.json"):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path / name} not found: pass directories written by `gv3lite train --out`")
    metrics, info = pd.read_csv(path / "metrics.csv"), json.loads((path / "run_info.json").read_text())
    recipe = Recipe.load(path / "recipe.yaml").to_dict()
    if len(metrics) != recipe["epochs"] or not math.isfinite(float(metrics.val_top1.iloc[-1])):
        raise ValueError(f"{path} holds {len(metrics)} of {recipe['epochs']} epochs (last val top-1 "
                         f"{metrics.val_top1.iloc[-1] if len(metrics) else 'none'}): compare finished runs only "
                         "(resume it with `gv3lite train --resume --out DIR`)")
    last = metrics.iloc[-1]
    return {"seed": recipe.get("seed"), "commit": info.get("git_commit", "unknown"), "recipe": recipe,
            "top1": float(last.val_top1), "top5": float(last.val_top5), "seconds": float(metrics.seconds.sum())}


def pair_runs(a_dirs, b_dirs, ignore=()) -> pd.DataFrame:
    """One row per seed: A's and B's top-1/top-5/seconds and ``diff`` = B - A (pp). Raises ``ValueError`` when the
    seeds do not pair one to one or the recipes differ in anything but the seed and the keys in ``ignore``."""
    a, b = ([read_run(d) for d in dirs] for dirs in (a_dirs, b_dirs))
    seeds_a, seeds_b = sorted(r["seed"] for r in a), sorted(r["seed"] for r in b)
    if seeds_a != seeds_b or len(set(seeds_a)) != len(seeds_a):
        raise ValueError(f"the runs must pair one to one by seed: A has seeds {seeds_a}, B has {seeds_b}")
    skip = {"seed", *ignore}
    reference = {k: v for k, v in a[0]["recipe"].items() if k not in skip}
    for run in a + b:
        other = {k: v for k, v in run["recipe"].items() if k not in skip}
        if other != reference:
            changed = sorted(k for k in reference.keys() | other.keys() if reference.get(k) != other.get(k))
            raise ValueError(f"the recipes differ in {changed}: compare runs of the same recipe (or --ignore a key "
                             "that cannot matter, e.g. kd_temperature without a teacher)")
    columns = ["seed", "commit", "top1", "top5", "seconds"]
    table = pd.merge(pd.DataFrame(a)[columns], pd.DataFrame(b)[columns], on="seed", suffixes=("_a", "_b"))
    table = table[["seed", "commit_a", "commit_b", "top1_a", "top1_b", "top5_a", "top5_b", "seconds_a", "seconds_b"]]
    table = table.sort_values("seed", ignore_index=True)
    table["diff"] = table.top1_b - table.top1_a
    return table


def summarize(table: pd.DataFrame, delta: float = 1.0) -> dict:
    """Mean difference, its 95% t interval over seeds, the t-test p and the TOST p against +-delta (pp); the paired
    mean and standard error are ``gv3lite.stats.within_run``'s, with the seed as the unit."""
    paired = within_run(table.rename(columns={"seed": "run_id"}), "top1_b", "top1_a")
    n, mean, se = paired["n"], paired["diff"], paired["se"]
    interval = t_interval(mean, se, paired["df"])
    return {"seeds": n, "mean_diff": mean, "sd_diff": se * math.sqrt(n), "low": float(interval["low"]),
            "high": float(interval["high"]), "p": float(interval["p"]),
            "p_equivalent": float(equivalence_p(mean, se, paired["df"], delta)), "delta": delta}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", nargs="+", required=True, help="run directories of the reference (e.g. old code)")
    parser.add_argument("--b", nargs="+", required=True, help="run directories of the candidate, same seeds")
    parser.add_argument("--delta", type=float, default=1.0, help="equivalence margin in pp (default 1.0)")
    parser.add_argument("--ignore", nargs="*", default=[], help="recipe keys allowed to differ (e.g. a KD setting "
                                                                  "of runs without a teacher)")
    args = parser.parse_args(argv)
    table = pair_runs(args.a, args.b, args.ignore)
    cells = [[f"{v:.2f}" if isinstance(v, float) else str(v) for v in row] for row in table.itertuples(index=False)]
    print("\n".join("| " + " | ".join(r) + " |" for r in [list(table.columns), ["---"] * len(table.columns), *cells]))
    s = summarize(table, args.delta)
    print(f"\nB - A over {s['seeds']} seeds: mean {s['mean_diff']:+.2f} pp, SD {s['sd_diff']:.2f} pp, 95% CI "
          f"[{s['low']:+.2f}, {s['high']:+.2f}] pp, t-test p = {s['p']:.2f}; equivalence within +-{s['delta']:g} pp "
          f"(TOST) p = {s['p_equivalent']:.2f} (equivalent at p < 0.025, the 95% interval inside +-delta) -> "
          + ("equivalent" if s["low"] > -s["delta"] and s["high"] < s["delta"] else "not shown equivalent"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
