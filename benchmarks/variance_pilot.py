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
  seeds per cell a contrast needs for a 95% interval of half-width 2.0 / 1.25 pp (``gv3lite.verdicts
  .seeds_for_half_width``, residual variance pooled over the quick study's 7 cells, paired differences of SD
  sqrt(2) x SD), and one last row ``paired (seed-blocked)``: the residual SD of a configuration + seed model over
  all configurations — the noise the study's paired contrasts actually see (`paired_noise`);
* ``meta.json`` — command, commit, wall time of this call, the time cap and whether it stopped early.

Regimes (issue 22, ``--regimes NAME ...`` from `REGIMES`, instead of ``--vary``): whole training regimes of about
the quick budget's measured CPU cost (``benchmarks/regime_cost.py``), each read on the **tuning split**
(``gv3lite.data.tuning_split``: 100 train images per class that no run trains on; the study reports on val only),
so that choosing a regime never looks at the reported images. Each run is trained in pieces that stop after each of
its last 3 epochs (exact resume; folders under ``--work``, deleted once its row is written) and read ten ways
without more training (``gv3lite.posthoc``): raw / EMA weights, each with precise BN statistics, the mean of the last
three epochs' weights with precise BN, each with and without flip averaging. ``summary.md`` then gives per regime and
reading the SD of top-1 with its chi-square 95% interval, the mean, wall and CPU minutes per run, SD x sqrt(CPU
minutes) and F / Brown-Forsythe tests of the variance against today's regime (EMA, center crop), and names the
choice: the lowest SD x sqrt(CPU min) among readings with >= 6 seeds whose mean is not lower than today's.

    python benchmarks/variance_pilot.py --regimes today px40_ep11 b64_ep14 --seeds 0 1 2 3 4 5 \
        --out results/variance_pilot/regimes        # 18 trainings, ~5-6 CPU-min each on an idle core

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
import hashlib
import json
import math
import shlex
import shutil
import sys
import time
from pathlib import Path

import pandas as pd
import scipy.stats
import torch
import yaml

from gv3lite.checkpoint import read_training_checkpoint
from gv3lite.data import build_datasets, resolve_data_root
from gv3lite.experiment import build_model, recipe_datasets, run
from gv3lite.posthoc import posthoc_top1
from gv3lite.recipe import preset
from gv3lite.stats import BlockedModel
from gv3lite.verdicts import seeds_for_half_width, t_interval
from gv3lite.utils import git_commit

BASE = dict(teacher=None, images_per_class_train=300, images_per_class_val=None, img_size=48, epochs=10,
            batch_size=32, warmup_epochs=1.0, lr=2e-3, ema_decay=0.99, eval_every=10)
# one-at-a-time changes from the base (issue 11: learning rate, warm-up, resolution, epochs, images)
DEFAULT_VARY = ["lr=0.002,0.01", "warmup_epochs=3", "img_size=64", "epochs=20", "images_per_class_train=600"]
# issue 22: regimes of the quick budget's training cost as measured by benchmarks/regime_cost.py
# (results/variance_pilot/regimes/cost.md: per-step CPU time on this 2-core machine; images x epochs x px^2 is not
# the cost here: 40 px x 14 epochs measured 1.18-1.22x today's, batch 16 1.5-1.7x, batch 64 x 14 epochs 0.95-1.03x).
# EMA decay by the budgets' rule 1 - 10 / optimizer steps (3,000 images: 93 steps per epoch at batch 32, 46 at 64).
REGIMES = {
    "today": {},                                                            # 48 px, batch 32, 10 epochs: 930 steps
    "px40_ep11": dict(img_size=40, epochs=11, ema_decay=0.99),              # 1,023 steps, ~1.0x the measured cost
    "b64_ep14": dict(batch_size=64, lr=2.8e-3, epochs=14, ema_decay=0.985),  # 1.4x the epochs, 644 steps, lr x sqrt 2
}
POSTHOC = ("raw", "ema", "raw_pbn", "ema_pbn", "avg_pbn")  # gv3lite.posthoc.posthoc_top1, each _center and _flip
KEEP_LAST = 3  # end-of-epoch checkpoints averaged by ``avg_pbn``
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


def configurations(sets: list[str], vary: list[str], regimes: list[str] | None = None) -> dict:
    """name -> (changes from the base, resolved Recipe without the seed): the base and one configuration per
    ``--vary`` value, or, with ``regimes``, one per named regime of `REGIMES`. Raises ``ValueError``/``KeyError``
    for a malformed item, an unknown field, regime or a bad value (`gv3lite.recipe.Recipe.validate`)."""
    base = dict(BASE)
    for key, values in _parse(sets, "--set"):
        if len(values) != 1:
            raise ValueError(f"--set {key}: give one value (use --vary for several)")
        base[key] = values[0]
    if regimes:
        unknown = [r for r in regimes if r not in REGIMES]
        if unknown:
            raise KeyError(f"unknown regime(s) {unknown}; choose from {list(REGIMES)}")
        return {r: (REGIMES[r], preset("ghostnetv3", **{**base, **REGIMES[r]})) for r in regimes}
    configs = {"base": ({}, preset("ghostnetv3", **base))}
    for key, values in _parse(vary, "--vary"):
        for v in values:
            configs[f"{key}={v}"] = ({key: v}, preset("ghostnetv3", **{**base, key: v}))
    return configs


def _cost(recipe) -> float:
    """Relative training cost: images x epochs x pixels (per class; the val pass is small beside it)."""
    return (recipe.images_per_class_train or 1000) * recipe.epochs * recipe.img_size ** 2


def _datasets(recipe, data, cache: dict, tuning: bool):
    key = (recipe.img_size, recipe.images_per_class_train, recipe.images_per_class_val, recipe.data_seed, tuning)
    if key not in cache:
        cache.clear()  # keep one decoded dataset in memory
        cache[key] = (build_datasets(data, recipe.img_size, classes=recipe.classes,
                                     images_per_class_train=recipe.images_per_class_train,
                                     images_per_class_val=recipe.images_per_class_val, seed=recipe.data_seed,
                                     auto_augment=recipe.auto_augment, random_erasing=recipe.random_erasing,
                                     scale=(recipe.min_crop_scale, 1.0), tuning="only",
                                     return_crop_info=bool(recipe.teacher))  # cached KD reads each crop's box
                      if tuning else recipe_datasets(recipe, data))
    return cache[key]


def _add_cpu(run_dir: Path, seconds: float) -> float:
    """Add ``seconds`` of CPU time to the run folder's ``cpu_seconds.txt`` (a run trained over several calls sums
    them; a piece cut off before it saved is lost with its epochs); return the total."""
    file = run_dir / "cpu_seconds.txt"
    total = (float(file.read_text()) if file.is_file() else 0.0) + seconds
    file.write_text(f"{total!r}\n")
    return total


def _train(recipe, data, datasets_cache: dict, run_dir: Path | None = None, tuning: bool = False,
           device: str = "cpu") -> dict:
    """Train one seed on ``device``; top-1 (%) of the raw and EMA weights on the evaluation split (the tuning split
    with ``tuning``, else val), the training's wall and CPU seconds and its train / evaluation image counts. With
    ``run_dir`` the run is trained in pieces that stop after each of the last `KEEP_LAST` epochs (exact resume: the
    same weights as one piece), keeps those checkpoints and adds the `POSTHOC` evaluations
    (``gv3lite.posthoc.posthoc_top1``, on ``device``) and their seconds. An interrupted run continues from its
    ``last.pth``."""
    datasets = _datasets(recipe, data, datasets_cache, tuning)
    t0, c0 = time.perf_counter(), time.process_time()
    if run_dir is None:
        history = run(recipe, data, out_dir=None, quiet=True, datasets=datasets, device=device)
    else:
        for stop in range(max(recipe.epochs - KEEP_LAST + 1, 1), recipe.epochs + 1):
            kept = run_dir / f"epoch{stop}.pth"
            if kept.is_file():
                continue
            done, c1 = (run_dir / "last.pth").is_file(), time.process_time()
            run(recipe, data, out_dir=run_dir, resume=done, quiet=True, datasets=datasets, max_epochs=stop,
                device=device)
            shutil.copyfile(run_dir / "last.pth", kept)
            _add_cpu(run_dir, time.process_time() - c1)
        history = pd.read_csv(run_dir / "metrics.csv")
    last = history.iloc[-1]
    result = {"top1_raw": float(last.val_top1), "top1_ema": float(last.ema_top1),
              "train_seconds": float(history["seconds"].sum()) if run_dir else time.perf_counter() - t0,
              "cpu_seconds": _add_cpu(run_dir, 0.0) if run_dir else time.process_time() - c0,
              "train_images": len(datasets[0]), "eval_images": len(datasets[1])}
    if run_dir is not None:
        t1, c1 = time.perf_counter(), time.process_time()
        ckpts = [read_training_checkpoint(run_dir / f"epoch{e}.pth")
                 for e in range(max(recipe.epochs - KEEP_LAST + 1, 1), recipe.epochs + 1)]
        model = build_model(recipe, len(datasets[0].classes))
        result.update({f"top1_{k}": v for k, v in posthoc_top1(model, ckpts, datasets[0], datasets[1],
                                                                          device=device).items()})
        result["posthoc_seconds"] = time.perf_counter() - t1
        result["posthoc_cpu_seconds"] = time.process_time() - c1
    return result


def run_row(name: str, changes: dict, seed: int, recipe, result: dict, eval_on: str, commit: str, fingerprint: str,
            command: str) -> dict:
    """One row of ``runs.csv``: the configuration, its seed, `_train`'s result and the recipe fields that differ
    between configurations, with the provenance of the call that trained it."""
    return {"config": name, "changes": json.dumps(changes), "seed": seed, **result,
            "images_per_class_train": recipe.images_per_class_train, "img_size": recipe.img_size,
            "epochs": recipe.epochs, "batch_size": recipe.batch_size, "lr": recipe.lr,
            "ema_decay": recipe.ema_decay, "warmup_epochs": recipe.warmup_epochs, "eval_on": eval_on,
            "git_commit": commit, "code_fingerprint": fingerprint, "command": command}


def cpu_from_cost(runs: pd.DataFrame, cost: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with ``cpu_seconds`` (training) replaced by the CPU time the same training takes on the machine
    ``benchmarks/regime_cost.py`` measured (its ``cost.csv``: ``cpu_ms_per_step`` at each image size and batch
    size, one thread) times the run's optimizer steps (``train_images // batch_size`` per epoch): for runs trained on
    another machine (``benchmarks/device_runs.py``, a GPU), whose own times say nothing of a CPU. The post-hoc
    readings' ``posthoc_cpu_seconds`` are estimated as forward passes at a third of a training image's CPU time (a
    backward pass costs about two forwards): 3 precise-BN passes over the training images and 10 evaluations (5
    weights, center and flip) of the evaluation images; ~2% of a training. Raises ``ValueError`` naming an
    image size / batch size pair that ``cost`` did not measure."""
    per_step = {(int(r.img_size), int(r.batch_size)): float(r.cpu_ms_per_step) for r in cost.itertuples()}
    keys = list(zip(runs["img_size"].astype(int), runs["batch_size"].astype(int)))
    missing = sorted(set(keys) - set(per_step))
    if missing:
        raise ValueError(f"--cost-csv has no per-step CPU time for (img_size, batch_size) {missing}; run "
                         "benchmarks/regime_cost.py with a regime of that size")
    steps = (runs["train_images"] // runs["batch_size"]) * runs["epochs"]
    per_image = [per_step[k] / 1000 / b for k, b in zip(keys, runs["batch_size"])]  # s per training image
    forward = 3 * runs["train_images"] + 10 * runs["eval_images"]  # 3 precise-BN passes, 5 weights x (center, flip)
    return runs.assign(cpu_seconds=[per_step[k] / 1000 * n for k, n in zip(keys, steps)],
                       posthoc_cpu_seconds=[s / 3 * f for s, f in zip(per_image, forward)])


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


def paired_with_base(runs: pd.DataFrame, base: str = "base") -> pd.DataFrame:
    """Per configuration other than ``base``: its EMA top-1 minus the base's on the seeds both have (paired by seed:
    the same initial weights and batches), the mean difference (pp) with its 95% t interval and the one-sided p of
    a paired t-test that the configuration is better (scipy). Empty when there is no base or no shared seeds."""
    if base not in set(runs["config"]):
        return pd.DataFrame()
    by_seed = runs.pivot_table(index="seed", columns="config", values="top1_ema", aggfunc="first")
    rows = []
    for name in dict.fromkeys(runs["config"]):
        if name == base:
            continue
        diff = (by_seed[name] - by_seed[base]).dropna()
        if len(diff) < 2:
            continue
        test = scipy.stats.ttest_1samp(diff, 0.0, alternative="greater")
        ci = t_interval(diff.mean(), diff.std(ddof=1) / math.sqrt(len(diff)), len(diff) - 1)
        rows.append({"config": name, "vs": base, "seeds": len(diff), "diff_mean": diff.mean(),
                     "low95": float(ci["low"]), "high95": float(ci["high"]), "p_better": float(test.pvalue)})
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


def sd_interval(sd: float, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """The chi-square (1 - alpha) interval of a standard deviation ``sd`` from ``n`` normal draws (NaN below 2)."""
    if n < 2 or not sd == sd:
        return float("nan"), float("nan")
    df = n - 1
    return (math.sqrt(df * sd ** 2 / scipy.stats.chi2.ppf(1 - alpha / 2, df)),
            math.sqrt(df * sd ** 2 / scipy.stats.chi2.ppf(alpha / 2, df)))


def variance_tests(x, ref) -> dict:
    """Two-sided F-test of var(x) = var(ref) (independent normal samples) and the Brown-Forsythe/Levene test
    (``scipy.stats.levene``, center='median'): p-values, NaN when a side has fewer than 2 values."""
    x, ref = pd.Series(x).dropna().to_numpy(float), pd.Series(ref).dropna().to_numpy(float)
    if len(x) < 2 or len(ref) < 2:
        return {"p_F": float("nan"), "p_levene": float("nan")}
    ratio = x.var(ddof=1) / ref.var(ddof=1)
    cdf = scipy.stats.f.cdf(ratio, len(x) - 1, len(ref) - 1)
    return {"p_F": float(min(1.0, 2 * min(cdf, 1 - cdf))),
            "p_levene": float(scipy.stats.levene(x, ref, center="median").pvalue)}


def regime_summary(runs: pd.DataFrame, reference: str = "today", reference_reading: str = "ema_center") -> pd.DataFrame:
    """Per (regime, reading): seeds, mean top-1, SD with its chi-square 95% interval, wall and CPU minutes per run
    (training, plus for a reading that recomputes BN statistics a third of the post-hoc time: three readings do),
    ``sd_x_sqrt_min`` = SD x sqrt(CPU minutes per run) (the SD of the mean of the seeds one minute of one core buys;
    lower is better at any budget; CPU time of a 1-thread run is its wall time on an idle core, while wall time on
    this shared machine depends on the load), the difference of the mean from the reference (regime ``reference``,
    reading ``reference_reading``: today's study reads the EMA center crop) and `variance_tests` against it. Every
    top-1 is on the split the runs were read on (``eval_on``)."""
    rows = []
    ref = runs.loc[runs["config"] == reference, f"top1_{reference_reading}"] if reference in set(runs["config"]) else None
    for name, part in runs.groupby("config", sort=False):
        for reading in (f"{w}_{t}" for w in POSTHOC for t in ("center", "flip")):
            col = f"top1_{reading}"
            if col not in part or part[col].isna().all():
                continue
            values = part[col].dropna()
            sd = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
            lo, hi = sd_interval(sd, len(values))
            share = 1 / 3 if "pbn" in reading else 0.0
            wall = (part["train_seconds"].mean() + share * part["posthoc_seconds"].mean()) / 60
            cpu = (part["cpu_seconds"].mean() + share * part["posthoc_cpu_seconds"].mean()) / 60
            row = {"regime": name, "reading": reading, "n": len(values), "top1_mean": values.mean(), "top1_sd": sd,
                   "sd_lo95": lo, "sd_hi95": hi, "wall_min_per_run": wall, "cpu_min_per_run": cpu,
                   "sd_x_sqrt_min": sd * math.sqrt(cpu)}
            if ref is not None:
                row["mean_minus_ref"] = values.mean() - ref.mean()
                row.update(variance_tests(values, ref))
            rows.append(row)
    return pd.DataFrame(rows)


def choose(summary: pd.DataFrame) -> pd.Series | None:
    """The row with the lowest ``sd_x_sqrt_min`` among those whose mean top-1 is not lower than the reference's
    (``mean_minus_ref >= 0``) and that have at least 6 seeds; None when no row qualifies."""
    ok = summary[(summary.get("mean_minus_ref", pd.Series(dtype=float)) >= 0) & (summary["n"] >= 6)]
    return None if ok.empty else ok.loc[ok["sd_x_sqrt_min"].idxmin()]


def code_fingerprint() -> str:
    """SHA-256 (16 hex) of the package's and this script's source: what produced the numbers, dirty or not."""
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parents[1]
    for file in sorted([*root.joinpath("gv3lite").rglob("*.py"), Path(__file__).resolve()]):
        digest.update(file.relative_to(root).as_posix().encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:16]


def _markdown(table: pd.DataFrame) -> str:
    cells = [[f"{v:.2f}" if isinstance(v, float) else str(v) for v in row] for row in table.itertuples(index=False)]
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def _trained_by(runs: pd.DataFrame) -> str:
    """Markdown lines naming the calls that trained ``runs`` (a pilot continued over several calls, or merged from
    parallel ones): each distinct command and commit with its runs, seeds and summed training wall minutes."""
    if runs.empty or "command" not in runs:
        return ""
    lines = []
    for (cmd, commit), part in runs.groupby(["command", "git_commit"], sort=False):
        lines.append(f"- `{cmd}` at {commit}: {len(part)} runs (seeds {', '.join(map(str, sorted(part['seed'])))}), "
                     f"{part['train_seconds'].sum() / 60:.1f} min of training wall time")
    return "Runs trained by:  \n" + "\n".join(lines) + "\n"


def _args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="ImageFolder root (default: GV3LITE_DATA or the repo's data)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="change the base recipe")
    parser.add_argument("--vary", action="append", default=None, metavar="KEY=V1,V2",
                        help=f"one configuration per value (default: {' '.join(DEFAULT_VARY)})")
    parser.add_argument("--regimes", nargs="+", default=None, metavar="NAME",
                        help=f"compare these regimes instead of --vary (from {', '.join(REGIMES)}), with the "
                             "post-hoc readings; implies --eval-on tuning unless given")
    parser.add_argument("--eval-on", choices=("tuning", "val"), default=None,
                        help="read top-1 on the tuning split (train/ slice, gv3lite.data.tuning_split; training "
                             "then excludes it) or on val (default: tuning with --regimes, else val)")
    parser.add_argument("--work", default="runs/variance_pilot", help="run folders of --regimes (resume; ignored)")
    parser.add_argument("--max-minutes", type=float, default=None, help="wall-time cap for this call")
    parser.add_argument("--cost-csv", default=None,
                        help="regime_cost.py's cost.csv: training CPU minutes from its per-step times, for runs "
                             "trained on another machine (cpu_from_cost)")
    parser.add_argument("--provenance", default=None,
                        help="JSON file of the call that trained runs.csv elsewhere (device_runs.py's meta.json)")
    parser.add_argument("--out", default="results/variance_pilot")
    args = parser.parse_args(argv)
    if len(set(args.seeds)) != len(args.seeds) or min(args.seeds) < 0 or len(args.seeds) < 2:
        parser.error(f"--seeds {args.seeds}: give at least 2 distinct seeds >= 0 (one seed has no spread)")
    if args.regimes and args.vary:
        parser.error("give --regimes or --vary, not both")
    args.eval_on = args.eval_on or ("tuning" if args.regimes else "val")
    args.commit, args.fingerprint = git_commit(), code_fingerprint()  # of the code this call runs, read at its start
    try:
        args.data = resolve_data_root(args.data)
        args.configs = configurations(args.set, DEFAULT_VARY if args.vary is None else args.vary, args.regimes)
    except (KeyError, ValueError, FileNotFoundError) as err:
        parser.error(str(err).strip('"'))
    return args


def _write(out: Path, runs: pd.DataFrame, args, command: str, t0: float, stopped: bool) -> pd.DataFrame:
    """summary.csv / summary.md / meta.json of the runs so far (rewritten after every run)."""
    if args.cost_csv and len(runs):
        runs = cpu_from_cost(runs, pd.read_csv(args.cost_csv))
    summary = (regime_summary(runs) if args.regimes else summarize(runs)) if len(runs) else pd.DataFrame()
    paired = paired_with_base(runs) if len(runs) and not args.regimes else pd.DataFrame()
    if len(paired):
        paired.to_csv(out / "paired.csv", index=False)
    summary.to_csv(out / "summary.csv", index=False)
    pick = choose(summary) if args.regimes and len(summary) else None
    chosen = ("" if pick is None else f"\nChosen (lowest SD x sqrt(min/run), mean not lower, >= 6 seeds): regime "
              f"`{pick['regime']}`, reading `{pick['reading']}`\n")
    trained = json.loads(Path(args.provenance).read_text()) if args.provenance else None
    elsewhere = ("" if trained is None else
                 f"Runs trained by: `{trained['command']}` on {trained['device']} (commit {trained['git_commit']}, "
                 f"code fingerprint {trained['code_fingerprint']}, wall {trained['wall_seconds'] / 60:.1f} min, "
                 f"data {trained['data']})  \n")
    costs = ("" if not args.cost_csv else f"Training CPU minutes: from `{args.cost_csv}` (`cpu_from_cost`); "
             "post-hoc CPU minutes: estimated as forward passes (`cpu_from_cost`)  \n")
    (out / "summary.md").write_text(
        "# Variance pilot (benchmarks/variance_pilot.py)\n\n"
        f"Command: `{command}`  \nCommit: {args.commit}  \nCode fingerprint: {args.fingerprint}  \n{elsewhere}{costs}"
        f"Top-1 read on: {args.eval_on}  \nWall time of this call: {(time.perf_counter() - t0) / 60:.1f} min\n\n"
        + _trained_by(runs) + "\n" + (_markdown(summary) if len(summary) else "no finished runs") + "\n" + chosen
        + ("" if args.regimes or not len(paired) else "\nEach configuration minus the base, paired by seed (EMA top-1, "
           "pp; 95% t interval; one-sided paired t-test that it is better):\n\n" + _markdown(paired) + "\n"))
    meta = {"command": command, "git_commit": args.commit, "code_fingerprint": args.fingerprint,
            "wall_seconds": time.perf_counter() - t0, "max_minutes": args.max_minutes, "stopped_by_cap": stopped,
            "seeds": args.seeds, "eval_on": args.eval_on, "configs": {k: v[0] for k, v in args.configs.items()},
            "base": next(iter(args.configs.values()))[1].to_dict(), "threads": torch.get_num_threads(),
            "cost_csv": args.cost_csv, "trained_by": trained}
    (out / "meta.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return summary


def main(argv=None) -> int:
    args = _args(argv)
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs_file = out / "runs.csv"
    runs = pd.read_csv(runs_file) if runs_file.is_file() else pd.DataFrame()
    done = set(zip(runs.get("config", []), runs.get("seed", [])))
    t0, cap = time.perf_counter(), (args.max_minutes * 60 if args.max_minutes is not None else math.inf)
    seconds_per_cost, stopped, datasets = [], False, {}
    for seed in args.seeds:  # round-robin: every configuration gets this seed before the next seed starts
        for name, (changes, recipe) in args.configs.items():
            if (name, seed) in done:
                continue
            estimate = (sum(seconds_per_cost) / len(seconds_per_cost) * _cost(recipe)) if seconds_per_cost else 0.0
            if time.perf_counter() - t0 + estimate > cap:
                stopped = True
                continue
            run_dir = Path(args.work) / name / f"seed{seed}" if args.regimes else None
            result = _train(recipe.replace(seed=seed), args.data, datasets, run_dir, args.eval_on == "tuning")
            seconds_per_cost.append(result["train_seconds"] / _cost(recipe))
            row = run_row(name, changes, seed, recipe, result, args.eval_on, args.commit, args.fingerprint, command)
            runs = pd.concat([runs, pd.DataFrame([row])], ignore_index=True)
            runs.to_csv(runs_file, index=False)  # after every run: an interrupted pilot keeps what finished
            if run_dir is not None:
                shutil.rmtree(run_dir)  # its checkpoints (~10 MB each) gave the row; a re-run skips it
            _write(out, runs, args, command, t0, stopped)
            print(f"{name:32s} seed {seed}: EMA top-1 {result['top1_ema']:.2f}%  raw {result['top1_raw']:.2f}%  "
                  f"{result['train_seconds']:.0f} s", flush=True)
    summary = _write(out, runs, args, command, t0, stopped)
    print(summary.to_string(index=False) if len(summary) else "no finished runs")
    if stopped:
        print(f"stopped by --max-minutes {args.max_minutes:g}: run the same command again to continue")
    return 0


if __name__ == "__main__":
    sys.exit(main())
