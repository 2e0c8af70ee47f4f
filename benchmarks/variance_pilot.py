"""Variance pilot: how much does top-1 of the re-parameterized GhostNetV3 vary between seeds, and what lowers it?

Issue 11: at the quick budget the GhostNetV3 cells differ by ~4-5 pp between seeds, so a single ingredient worth
1-2 pp cannot be told apart with a few seeds. Before sizing budgets, this script measures the seed-to-seed standard
deviation of val top-1 for a base setting and for one-at-a-time changes of the knobs that should matter (learning
rate, warm-up, resolution, epochs, training images). Every configuration trains the same seeds; seeds vary the
initialization, batch order and crops, never the images (``data_seed`` is fixed).

The base is the ``ghostnetv3`` preset (training-time branches, EMA, no Mixup/CutMix) without a teacher (the pilot
measures training noise; a cached teacher adds a one-off pass but no noise of its own), sized like the quick budget
(300 train images per class, 48 px, 10 epochs, batch 32) and evaluated on the whole val split (3,925 images, so
evaluation noise stays below ~0.8 pp). ``--set`` changes the base, each ``--vary KEY=V1,V2`` adds one configuration
per value.

Writes to ``--out`` (default ``results/variance_pilot``):

* ``runs.csv`` — one row per (configuration, seed): the changed fields, top-1 of the raw and EMA weights, train
  seconds, git commit. Rows are appended as runs finish; a re-run skips finished (configuration, seed) pairs, so
  the pilot can be continued over several sittings;
* ``summary.csv`` / ``summary.md`` — per configuration: seeds, mean and SD of top-1 (EMA), seconds per run, and the
  seeds per cell a contrast needs for a 95% interval of half-width 2.0 / 1.25 pp (``gv3lite.stats
  .seeds_for_half_width``, residual variance pooled over the quick study's 7 cells, paired differences of SD
  sqrt(2) x SD), and one last row ``paired (seed-blocked)``: the residual SD of a configuration + seed model over
  all configurations — the noise the study's paired contrasts actually see (`paired_noise`);
* ``meta.json`` — command, commit, wall time of this call, the time cap and whether it stopped early.

``--max-minutes`` caps the wall time: seeds are run round-robin over the configurations (every configuration gets
seed 0, then seed 1, ...), and no run starts whose estimated time (from the finished runs, scaled by images x
epochs x pixels) would cross the cap.

Usage:
    python benchmarks/variance_pilot.py --max-minutes 120     # base + lr, warm-up, px, epochs, images; seeds 0-3
    python benchmarks/variance_pilot.py --seeds 0 1 --vary lr=0.01 --set images_per_class_train=4 \
        --set images_per_class_val=2 --set epochs=1 --set batch_size=8 --out /tmp/pilot      # a smoke check
Wall-clock numbers depend on the machine and its load (time it alone); accuracies do not (fixed seeds).
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from gv3lite.data import resolve_data_root
from gv3lite.experiment import recipe_datasets, run
from gv3lite.recipe import preset
from gv3lite.stats import BlockedModel, seeds_for_half_width
from gv3lite.utils import git_commit

BASE = dict(teacher=None, images_per_class_train=300, images_per_class_val=None, img_size=48, epochs=10,
            batch_size=32, warmup_epochs=1.0, ema_decay=0.99, eval_every=10)
# one-at-a-time changes from the base (issue 11: learning rate, warm-up, resolution, epochs, images)
DEFAULT_VARY = ["lr=0.002,0.01", "warmup_epochs=3", "img_size=64", "epochs=20", "images_per_class_train=600"]
TARGETS = (2.0, 1.25)  # pp: quick and medium half-width targets (issue 11)
STUDY_CELLS = 7  # cells of GhostNetV3-0.5x in the quick study, over which the study pools its residual variance


def _parse(items: list[str], flag: str) -> list[tuple[str, list]]:
    out = []
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise ValueError(f"{flag} expects KEY=VALUE[,VALUE...], got {item!r}")
        try:
            out.append((key.strip(), [yaml.safe_load(v) for v in values.split(",")]))
        except yaml.YAMLError as err:
            raise ValueError(f"{flag} {item!r}: a value is not valid YAML ({err})") from err
    return out


def configurations(sets: list[str], vary: list[str]) -> dict:
    """name -> (changes from the base, resolved Recipe without the seed). Raises ``ValueError``/``KeyError`` for a
    malformed item, an unknown field or a bad value (`gv3lite.recipe.Recipe.validate`)."""
    base = dict(BASE)
    for key, values in _parse(sets, "--set"):
        if len(values) != 1:
            raise ValueError(f"--set {key}: give one value (use --vary for several)")
        base[key] = values[0]
    configs = {"base": ({}, preset("ghostnetv3", **base))}
    for key, values in _parse(vary, "--vary"):
        for v in values:
            configs[f"{key}={v}"] = ({key: v}, preset("ghostnetv3", **{**base, key: v}))
    return configs


def _cost(recipe) -> float:
    """Relative training cost: images x epochs x pixels (per class; the val pass is small beside it)."""
    return (recipe.images_per_class_train or 1000) * recipe.epochs * recipe.img_size ** 2


def _train(recipe, data, datasets_cache: dict) -> dict:
    key = (recipe.img_size, recipe.images_per_class_train, recipe.images_per_class_val, recipe.data_seed)
    if key not in datasets_cache:
        datasets_cache.clear()  # keep one decoded dataset in memory
        datasets_cache[key] = recipe_datasets(recipe, data)
    t0 = time.perf_counter()
    history = run(recipe, data, out_dir=None, quiet=True, datasets=datasets_cache[key])
    last = history.iloc[-1]
    return {"top1_raw": float(last.val_top1), "top1_ema": float(last.ema_top1),
            "train_seconds": time.perf_counter() - t0}


def _seeds_needed(sd_diff: float, target: float) -> float:
    if not (sd_diff == sd_diff and sd_diff > 0):
        return float("nan")
    try:
        return seeds_for_half_width(sd_diff, target, pooled_cells=STUDY_CELLS)
    except ValueError:
        return float("inf")


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Per configuration: n seeds, mean / SD of EMA top-1 (pp), SD of raw top-1, seconds per run and the seeds a
    contrast needs for each target half-width if its two cells were independent (paired-difference SD =
    sqrt(2) x SD; NaN with < 2 seeds). The last row, ``paired (seed-blocked)``, is what the study sees: the
    residual SD of a configuration + seed model fitted to every configuration on the seeds they share (the
    configurations of one seed share initial weights and batches, so their differences are less noisy than
    independent runs'), and the seeds a contrast then needs (paired-difference SD = sqrt(2) x residual SD)."""
    rows = []
    for name, part in runs.groupby("config", sort=False):
        sd = float(part["top1_ema"].std(ddof=1)) if len(part) > 1 else float("nan")
        row = {"config": name, "n": len(part), "top1_mean": part["top1_ema"].mean(), "top1_sd": sd,
               "top1_raw_sd": part["top1_raw"].std(ddof=1) if len(part) > 1 else float("nan"),
               "seconds_per_run": part["train_seconds"].mean()}
        for target in TARGETS:
            row[f"seeds_for_{target:g}pp"] = _seeds_needed(math.sqrt(2) * sd, target)
        rows.append(row)
    blocked = paired_noise(runs)
    if blocked is not None:
        row = {"config": "paired (seed-blocked)", "n": blocked["runs"], "top1_mean": float("nan"),
               "top1_sd": blocked["residual_sd"], "top1_raw_sd": float("nan"), "seconds_per_run": float("nan")}
        for target in TARGETS:
            row[f"seeds_for_{target:g}pp"] = _seeds_needed(math.sqrt(2) * blocked["residual_sd"], target)
        rows.append(row)
    return pd.DataFrame(rows)


def paired_noise(runs: pd.DataFrame) -> dict | None:
    """Residual SD (pp) of EMA top-1 under a configuration + seed model (`gv3lite.stats.BlockedModel`) over the
    seeds that at least two configurations share: ``dict(residual_sd, df, runs)``, or None when there is no
    residual degree of freedom yet."""
    counts = runs.groupby("seed")["config"].nunique()
    part = runs[runs["seed"].isin(counts[counts >= 2].index)]
    part = part[part.groupby("config")["seed"].transform("nunique") >= 2]
    if part.empty:
        return None
    model = BlockedModel(part["config"].tolist(), part["seed"].tolist())
    if model.df < 1:
        return None
    fitted = model.fit(part["top1_ema"].to_numpy(float))
    return {"residual_sd": float(math.sqrt(fitted["sigma2"])), "df": int(model.df), "runs": len(part)}


def _markdown(table: pd.DataFrame) -> str:
    cells = [[f"{v:.2f}" if isinstance(v, float) else str(v) for v in row] for row in table.itertuples(index=False)]
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="ImageFolder root (default: GV3LITE_DATA or the repo's data)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="change the base recipe")
    parser.add_argument("--vary", action="append", default=None, metavar="KEY=V1,V2",
                        help=f"one configuration per value (default: {' '.join(DEFAULT_VARY)})")
    parser.add_argument("--max-minutes", type=float, default=None, help="wall-time cap for this call")
    parser.add_argument("--out", default="results/variance_pilot")
    args = parser.parse_args(argv)
    if len(set(args.seeds)) != len(args.seeds) or min(args.seeds) < 0 or len(args.seeds) < 2:
        parser.error(f"--seeds {args.seeds}: give at least 2 distinct seeds >= 0 (one seed has no spread)")
    try:
        data = resolve_data_root(args.data)
        configs = configurations(args.set, DEFAULT_VARY if args.vary is None else args.vary)
    except (KeyError, ValueError, FileNotFoundError) as err:
        parser.error(str(err).strip('"'))
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs_file = out / "runs.csv"
    runs = pd.read_csv(runs_file) if runs_file.is_file() else pd.DataFrame()
    done = set(zip(runs.get("config", []), runs.get("seed", [])))
    t0, cap = time.perf_counter(), (args.max_minutes * 60 if args.max_minutes is not None else math.inf)
    seconds_per_cost, stopped, datasets = [], False, {}
    for seed in args.seeds:  # round-robin: every configuration gets this seed before the next seed starts
        for name, (changes, recipe) in configs.items():
            if (name, seed) in done:
                continue
            estimate = (sum(seconds_per_cost) / len(seconds_per_cost) * _cost(recipe)) if seconds_per_cost else 0.0
            if time.perf_counter() - t0 + estimate > cap:
                stopped = True
                continue
            result = _train(recipe.replace(seed=seed), data, datasets)
            seconds_per_cost.append(result["train_seconds"] / _cost(recipe))
            row = {"config": name, "changes": json.dumps(changes), "seed": seed, **result,
                   "images_per_class_train": recipe.images_per_class_train, "img_size": recipe.img_size,
                   "epochs": recipe.epochs, "lr": recipe.lr, "warmup_epochs": recipe.warmup_epochs,
                   "git_commit": git_commit(), "command": command}
            runs = pd.concat([runs, pd.DataFrame([row])], ignore_index=True)
            runs.to_csv(runs_file, index=False)  # after every run: an interrupted pilot keeps what finished
            print(f"{name:32s} seed {seed}: EMA top-1 {result['top1_ema']:.2f}%  raw {result['top1_raw']:.2f}%  "
                  f"{result['train_seconds']:.0f} s", flush=True)
    summary = summarize(runs) if len(runs) else pd.DataFrame()
    summary.to_csv(out / "summary.csv", index=False)
    (out / "summary.md").write_text(
        "# Variance pilot (benchmarks/variance_pilot.py)\n\n"
        f"Command: `{command}`  \nCommit: {git_commit()}\n\n"
        + (_markdown(summary) if len(summary) else "no finished runs") + "\n")
    meta = {"command": command, "git_commit": git_commit(), "wall_seconds": time.perf_counter() - t0,
            "max_minutes": args.max_minutes, "stopped_by_cap": stopped, "seeds": args.seeds,
            "configs": {k: v[0] for k, v in configs.items()}, "base": configs["base"][1].to_dict()}
    (out / "meta.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    print(summary.to_string(index=False) if len(summary) else "no finished runs")
    if stopped:
        print(f"stopped by --max-minutes {args.max_minutes:g}: run the same command again to continue")
    return 0


if __name__ == "__main__":
    sys.exit(main())
