"""The ablation engine behind ``gv3lite reproduce``: budgets, grids, resumable runs, results, report, figures.

Owns:
* `BUDGETS` — one table: how big a run is under ``smoke`` (CI), ``quick`` (a 2-core CPU, < 1 h) and ``full`` (a GPU);
* `GRIDS` — one table: the paper's ablation sections (arXiv 2404.11202, Sec. 4) as cells; each cell is a preset
  (``gv3lite.recipe.PRESETS``) plus a few changed fields, and the budgets it runs in. The first cell of a grid is its
  baseline. Cell names are the contract with ``gv3lite/paper_results.csv``;
* `plan` (every (grid, cell, seed) with its resolved `Recipe` and run id), `reproduce` (train what is missing),
  `summarize` (mean ± std per cell), `verdicts` / `write_report` (agreement with the paper's claims), and the
  ``reproduce`` subcommand (`add_reproduce`, hooked into ``gv3lite.cli``);
* `readme_results` and ``gv3lite readme`` (`add_readme`): README.md's generated Results block, from the committed
  ``results/<budget>/`` folders.

Runs are keyed by a hash of the resolved recipe (seed included), so a config shared by several grids (e.g. the
``ghostnetv3`` recipe is the ``recipe`` grid's cell, ``reparam/full``, ``kd/teacher`` and ``schedule/ema``) trains
once; so does a cell without EMA (trained as its EMA twin, whose raw weights it reads: `trained_as`), and the
architectures grid's GhostNetV2 cells (GhostNetV3's architecture: the recipe's switches decide the branches).
Layout under ``<out>/<budget>/``: ``runs/<run_id>/`` (``gv3lite.train.fit``'s run directory plus ``result.json``),
``runs.csv`` (one row per grid, cell and seed), ``summary.csv`` / ``summary.md``, ``report.md``, ``calls.csv`` (one
row per ``reproduce`` call: command, commit, wall time; `CALL_COLUMNS`). A run with
``result.json`` is skipped on a re-run; one with only ``last.pth`` continues from it
(``gv3lite.experiment.run(resume=True)``).

Top-1 of a run = val top-1 after the last epoch, of the EMA weights when the recipe keeps an EMA (as the paper
reports its EMA model), else of the raw weights; both are kept (``top1_raw``, ``top1_ema``).
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import multiprocessing
import os
import shlex
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import torch

from gv3lite.data import ImageFolderDataset, resolve_data_root
from gv3lite.teacher_outputs import make_kd
from gv3lite.experiment import recipe_datasets, run
from gv3lite.figures import plot_forest, plot_grid, plot_learning_curves, savefig
from gv3lite.launch import claim_run, submit_runs, worker_devices
from gv3lite.paper import difference_kind, paper_claim, paper_results
from gv3lite.recipe import Recipe, preset
from gv3lite.stats import ALPHA, DELTA, POWER, Contrast, contrast_table, seeds_for_half_width
from gv3lite.utils import BUDGET_NAMES, check_output_dir, git_commit, repo_root, resolve_device
from gv3lite.utils import budget as env_budget

# --------------------------------------------------------------------------------------------------- budgets
# Applied on top of every cell's recipe. quick is sized by measurement on the 2-core CPU (torch, 2 threads, batch 32,
# 48 px, train step per image): ghostnetv3_050 plain 4.7 ms / with branches 8.5 ms; mobilenetv2_050 2.8 / 8.1 ms;
# shufflenetv2_050 1.6 / 4.8 ms (the x1.0 models cost 2.6-11 / 7.8-21 ms, too much for an hour: quick runs the
# architectures grid at width x0.5, full at x1.0 as in the paper). Two 1-thread trainings at once (`make main` uses
# ``--jobs 2``) each run at ~1.5x the 2-thread time, i.e. ~1.8x the throughput.
# Seed-to-seed spread (benchmarks/variance_pilot.py, results/variance_pilot/: GhostNetV3-0.5x with branches, no
# teacher, 300 images/class, 48 px, 10 epochs, seeds 0-3): at the presets' lr 5e-3 top-1 spread over 26-38% (SD 5.0
# pp, mean 32.9%); lr 2e-3 gave SD 2.1 pp at mean 36.6% (3 warm-up epochs: SD 3.5, mean 36.8; lr 1e-2: worse), so
# quick and medium (batch 32) train at lr 2e-3. The presets' 5e-3 is the paper's value at its (unrecovered, surely
# larger) batch size; full keeps it.
# A ghostnetv3_050 training of quick takes ~280 s in a 1-thread job (pilot), so `make main` (every grid but the
# architectures grid: 7 trainings per seed + one teacher pass) fits 3 seeds in an hour with --jobs 2: measured 46 min
# 26 s at 542d4c2 (results/quick/calls.csv; the 21 trainings took 83.6 min of 1-thread time). The architectures grid
# runs in medium (`make medium`) or with `--grids architectures`.
# medium: all 9,469 train images; 11 configs x 3 seeds x 6 epochs. First sitting (--grids reparam, 6 trainings):
# teacher pass 394 s, plain 297 s and full 557 s per 1-thread training, 30 min 43 s wall. Second sitting (the other
# 27 trainings): 1 h 43 min 55 s. The whole budget, 33 trainings: 2 h 14 min of 2-core wall with --jobs 2 (calls.csv
# sums the sittings; runs recorded in runs.csv are not retrained, `recorded_results`).
BUDGETS = {
    #          images/class  images/class                  batch  warm-up  EMA          eval   seeds  model   width
    #          train         val        px   epochs        size   epochs   decay        every                 (arch grid)
    "smoke": dict(images_per_class_train=6, images_per_class_val=4, img_size=48, epochs=1, batch_size=16,
                  warmup_epochs=0.0, ema_decay=0.9, eval_every=1, seeds=1, model="ghostnetv3_050", arch_width="050"),
    "quick": dict(images_per_class_train=300, images_per_class_val=None, img_size=48, epochs=10, batch_size=32,
                  warmup_epochs=1.0, lr=2e-3, ema_decay=0.99, eval_every=10, seeds=3, model="ghostnetv3_050",
                  arch_width="050"),
    "medium": dict(images_per_class_train=None, images_per_class_val=None, img_size=48, epochs=6, batch_size=32,
                   warmup_epochs=0.5, lr=2e-3, ema_decay=0.994, eval_every=6, seeds=3, model="ghostnetv3_050",
                   arch_width="050"),
    "full": dict(images_per_class_train=None, images_per_class_val=None, img_size=224, epochs=100, batch_size=128,
                 warmup_epochs=3.0, ema_decay=0.9998, eval_every=5, seeds=3, model="ghostnetv3_050",
                 arch_width="100"),
}
# EMA decay per budget: about 1 - 10 / (total optimizer steps), so the average spans the last ~tenth of training
# (the paper's decay was not recovered). quick: 93 steps/epoch x 10 epochs = 930 steps -> 0.99; medium: 295 x 6 = 1,770
# steps -> 0.994.
NOT_RECIPE_FIELDS = ("seeds", "arch_width")
# pp: the 95% interval half-width each budget was sized for (issue 11), declared before its runs; `sizing_note`
# reports what a study reached against it. `full` has none until it is sized from a GPU measurement.
HALF_WIDTH_TARGETS = {"quick": 2.0, "medium": 1.25}
assert tuple(BUDGETS) == BUDGET_NAMES, "gv3lite.utils.BUDGET_NAMES and BUDGETS must list the same budgets"

SMOKE, QUICK, FULL = {"smoke", "quick", "medium", "full"}, {"quick", "medium", "full"}, {"full"}
PLAIN = dict(num_conv_branches=1, use_scale_branch=False, use_identity_branch=False)


@dataclass(frozen=True)
class Cell:
    """One cell of a grid: ``preset`` with ``changes``, run under the budgets in ``budgets``."""
    name: str
    preset: str = "ghostnetv3"
    changes: dict = field(default_factory=dict)
    budgets: frozenset = frozenset(FULL)
    model: str | None = None  # overrides the budget's model (architectures grid)


def _cells(*cells) -> list[Cell]:
    return [Cell(c[0], c[1], c[2], frozenset(c[3]), *(c[4:] or [None])) for c in cells]


# grid -> cells (the first is the baseline). Columns: cell name, preset, changed fields, budgets[, model].
GRIDS = {
    "recipe": _cells(  # paper Sec. 4 overall: conventional recipe vs the GhostNetV3 recipe
        ("conventional", "conventional", {}, SMOKE),
        ("ghostnetv3", "ghostnetv3", {}, SMOKE)),
    "reparam": _cells(  # paper Sec. 4.1: structural re-parameterization
        ("plain", "ghostnetv3", PLAIN, SMOKE),
        ("branches", "ghostnetv3", dict(num_conv_branches=3, use_scale_branch=False, use_identity_branch=False), FULL),
        ("scale_branch", "ghostnetv3", dict(num_conv_branches=1, use_scale_branch=True, use_identity_branch=False), FULL),
        ("n2", "ghostnetv3", dict(num_conv_branches=2), FULL),
        ("full", "ghostnetv3", {}, SMOKE),
        ("n4", "ghostnetv3", dict(num_conv_branches=4), FULL)),
    "kd": _cells(  # paper Sec. 4.2: knowledge distillation (KL * T^2 at T = 4, see recipe.PRESET_NOTES)
        ("none", "ghostnetv3", dict(teacher=None), SMOKE),
        ("teacher", "ghostnetv3", {}, SMOKE),
        ("temperature1", "ghostnetv3", dict(kd_temperature=1.0), FULL),
        ("teacher_lite2", "ghostnetv3", dict(teacher="efficientnet_lite2"), FULL)),
    "kd_control": _cells(  # does KD carry the teacher's knowledge, or only softer targets? Label smoothing 0.3 gives
        # a target whose true-class mass (0.73) matches the KD cell's average target (0.5 * 0.91 + 0.5 * 0.50 = 0.71
        # with EfficientNet-Lite0 at T = 4, see recipe.PRESET_NOTES) without the teacher's ranking of wrong classes
        ("label_smoothing", "ghostnetv3", dict(teacher=None, label_smoothing=0.3), QUICK),
        ("teacher", "ghostnetv3", {}, QUICK)),
    "augment": _cells(  # paper Sec. 4.4: each augmentation added to the GhostNetV3 recipe (KD included: the teacher
        # target of a mixed image is the same mixture of the teacher's distributions, gv3lite.distill.mix_teacher_logits)
        ("basic", "ghostnetv3", {}, QUICK),
        ("mixup", "ghostnetv3", dict(mixup_alpha=0.8), QUICK),
        ("cutmix", "ghostnetv3", dict(cutmix_alpha=1.0), QUICK),
        ("randaugment", "ghostnetv3", dict(auto_augment="randaugment"), FULL),
        ("random_erasing", "ghostnetv3", dict(random_erasing=0.2), FULL)),
    "schedule": _cells(  # paper Sec. 4.3: learning schedule and EMA
        ("no_ema", "ghostnetv3", dict(ema=False), QUICK),
        ("ema", "ghostnetv3", {}, QUICK),
        ("step", "ghostnetv3", dict(sched="step"), FULL),
        ("onecycle", "ghostnetv3", dict(sched="onecycle"), FULL)),
    "architectures": _cells(  # paper: the recipe on other compact models (issue 5); {width} = budget's arch_width
        ("ghostnetv2/conventional", "conventional", {}, SMOKE, "ghostnetv2_{width}"),
        ("ghostnetv2/ghostnetv3", "ghostnetv3", {}, SMOKE, "ghostnetv2_{width}_rep"),
        ("mobilenetv2/conventional", "conventional", {}, SMOKE, "mobilenetv2_{width}"),
        ("mobilenetv2/ghostnetv3", "ghostnetv3", {}, SMOKE, "mobilenetv2_{width}_rep"),
        ("shufflenetv2/conventional", "conventional", {}, SMOKE, "shufflenetv2_{width}"),
        ("shufflenetv2/ghostnetv3", "ghostnetv3", {}, SMOKE, "shufflenetv2_{width}_rep")),
}
# paper_results.csv names the architectures grid's cells conventional / ghostnetv3 and tells models apart by label
# (the paper's numbers are for width x1.0)
ARCH_LABELS = {"ghostnetv2": "GhostNetV2 1.0x", "mobilenetv2": "MobileNetV2 1.0", "shufflenetv2": "ShuffleNetV2 1.0"}


def paper_key(grid: str, cell: str) -> tuple[str, str | None]:
    """``(paper cell, paper model label or None)`` under which ``paper_results.csv`` lists our ``grid``/``cell``."""
    if "/" in cell:
        arch, recipe_name = cell.split("/", 1)
        return recipe_name, ARCH_LABELS.get(arch)
    return cell, None


# ------------------------------------------------------------------------------------------------------ plan
def _check_budget(budget: str) -> dict:
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; choose one of {list(BUDGET_NAMES)}")
    return BUDGETS[budget]


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
    plan, other recipes or sizes) -- every grid that has rows in it, in grid order."""
    return complete_grids(runs, budget, items) or [g for g in GRIDS if g in set(runs["grid"])]


# ------------------------------------------------------------------------------------------------------- run
def _dataset_key(r: Recipe) -> tuple:
    return (r.img_size, tuple(r.classes or ()), r.images_per_class_train, r.images_per_class_val, r.data_seed,
            r.auto_augment, r.random_erasing, r.min_crop_scale, r.cache)


def run_one(recipe: Recipe, run_dir: Path, data_root, datasets=None, quiet: bool = True, command: str = "",
            device: str = "cpu") -> dict | None:
    """Train one recipe into ``run_dir`` on ``device`` (resuming ``last.pth`` if there) and write
    ``run_dir/result.json``, holding the run's lock (``gv3lite.launch.claim_run``) meanwhile.

    Returns the result dict: ``top1`` (EMA weights if ``recipe.ema``), ``top1_raw``, ``top1_ema`` (NaN without
    EMA), ``top5``, ``train_seconds`` (wall time of all epochs incl. evaluation, summed over resumes),
    ``cpu_seconds`` (process CPU time of this call only), ``epochs``, ``git_commit``, ``command``; the stored result
    (with ``finished_elsewhere: True``) when another process finished the run meanwhile; ``None`` (nothing trained) while another process trains it.
    """
    with claim_run(run_dir) as claimed:
        if not claimed:
            return None
        if (run_dir / "result.json").is_file():
            return {**json.loads((run_dir / "result.json").read_text()), "finished_elsewhere": True}
        return _train_run(recipe, Path(run_dir), data_root, datasets, quiet, command, device)


def _train_run(recipe: Recipe, run_dir: Path, data_root, datasets, quiet: bool, command: str, device: str) -> dict:
    resume = (run_dir / "last.pth").is_file()
    cpu0 = time.process_time()
    history = run(recipe, data_root, run_dir, device=device, resume=resume, quiet=quiet, datasets=datasets)
    last = history.iloc[-1]
    result = {"top1_raw": float(last.val_top1), "top1_ema": float(last.ema_top1), "top5": float(last.val_top5),
              "train_seconds": float(history["seconds"].sum()), "cpu_seconds": time.process_time() - cpu0,
              "epochs": int(last.epoch), "resumed": resume, "git_commit": git_commit(), "command": command}
    result["top1"] = result["top1_ema"] if recipe.ema else result["top1_raw"]
    (run_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def reproduce(budget: str, seeds: int | None = None, out="runs/reproduce", grids=None, data=None, figures: bool = True,
              quiet: bool = True, command: str | None = None, log=print, jobs: int = 1, figures_dir=None,
              device: str = "cpu", submitit: str | None = None, submitit_options: dict | None = None) -> dict:
    """Run (or resume) every cell of ``budget`` and write runs.csv, history.csv, summary.csv/.md, report.md and the
    figures.

    ``out``: results root, files go to ``<out>/<budget>/`` (default ``runs/reproduce``, git-ignored: only
    ``make main`` / ``make medium`` write the committed ``results/`` and ``figures/``). ``figures_dir``: where the
    figures go (default ``$GV3LITE_FIGURES``, else ``<out>/<budget>/figures``).
    ``data``: ImageFolder root (``gv3lite.data``'s
    resolution order). ``jobs``: trainings run at once, each in its own process with ``torch.get_num_threads() //
    jobs`` threads (on a 2-core CPU, ``jobs=2`` with one thread each trains ~1.8x more images per second than one
    run with two threads: small convolutions do not split well over threads). Before any training, the teacher
    outputs every cached-KD run needs are computed once and stored on disk (`prepare_teachers`).
    Every call appends one row to ``<out>/<budget>/calls.csv`` (`CALL_COLUMNS`: start time, command, commit, wall
    time, trained and skipped runs, jobs, CPU cores) at its end, also when it is interrupted (``KeyboardInterrupt``:
    Ctrl-C, or SIGTERM with ``jobs`` > 1) during the teacher pass or the trainings, so that the wall time of a budget
    finished over several sittings is the sum of the rows; report.md gives this call's wall time and that total.
    Returns ``dict(trained, skipped, resumed, out_dir, runs, summary, verdicts, figures)``: ``trained`` counts
    trainings started by this call (``resumed`` of them continued a checkpoint), ``skipped`` the unique runs already
    finished. ``grids`` limits what is trained (and drawn); the results files cover every finished run of the
    budget. Raises like `plan` for bad names and ``ValueError`` for ``jobs`` < 1. With ``jobs`` > 1 a script must
    call this under ``if __name__ == "__main__":`` (worker processes are spawned and re-import the script).

    Scale-out (``gv3lite.launch``): each run trains under a file lock, so a second call on the same ``out`` skips the
    runs the first one is training (counted in ``busy``; their results join the files of whichever call ends last).
    ``device``: ``cpu``, ``cuda`` or ``auto``; with ``jobs`` > 1 on a machine with several GPUs each worker gets its
    own GPU (``worker_devices``). ``submitit``: ``"local"``, ``"slurm"`` or ``"debug"`` runs each training as a job of
    that submitit executor instead of the worker pool (``submitit_options``: ``slurm_partition``, ``timeout_min``,
    ``gpus_per_run``, ``cpus_per_run``; logs under ``<out>/<budget>/submitit/``).
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs={jobs!r}: must be an integer >= 1 (trainings run at once)")
    started, t0 = datetime.now(timezone.utc), time.perf_counter()
    items = plan(budget, grids, seeds)
    command = command or " ".join(["gv3lite", *map(shlex.quote, sys.argv[1:])])
    out_dir = Path(out) / budget
    root = resolve_data_root(data)
    unique = {it["run_id"]: it["trained_as"] for it in items}
    # committed results hold runs.csv but not the run directories: a recorded run without a directory is finished
    recorded = {rid: r for rid, r in recorded_results(out_dir).items() if not (out_dir / "runs" / rid).is_dir()}
    todo = {rid: r for rid, r in unique.items()
            if not (out_dir / "runs" / rid / "result.json").is_file() and rid not in recorded}
    counts = {"trained": 0, "skipped": len(unique) - len(todo), "resumed": 0, "busy": 0}
    commit = git_commit()  # the code this call trains with (results/ and figures/ do not count, see git_commit)

    def call_row(interrupted: bool) -> dict:
        return {"started": started.isoformat(timespec="seconds"), "command": command, "git_commit": commit,
                "wall_seconds": round(time.perf_counter() - t0, 1), "trained": counts["trained"],
                "skipped": counts["skipped"], "jobs": jobs, "cpu_count": os.cpu_count(), "interrupted": interrupted}

    def describe(rid):
        return ", ".join(f"{it['grid']}/{it['cell']}" for it in items if it["run_id"] == rid)

    def done(k, rid, result):
        if result is None:  # another process holds the run's lock: it trains it
            counts["busy"] += 1
            log(f"[{k}/{len(todo)}] run {rid} ({describe(rid)}) is being trained by another process (lock "
                f"{out_dir / 'runs' / rid}.lock): skipped here")
            return
        if result.get("finished_elsewhere"):
            counts["skipped"] += 1
            return
        counts["trained"] += 1
        log(f"[{k}/{len(todo)}] run {rid} seed {todo[rid].seed} ({describe(rid)}): top-1 {result['top1']:.2f}%  "
            f"{result['train_seconds']:.0f} s train, {result['cpu_seconds']:.0f} s CPU")

    try:  # an interrupted call is logged too: the time it spent counts towards the budget's wall time
        prepare_teachers(list(todo.values()), root, log=log, quiet=quiet)
        counts["resumed"] = sum((out_dir / "runs" / rid / "last.pth").is_file() for rid in todo)
        if submitit is not None and todo:
            options = dict(submitit_options or {})
            # slurm gives each job its own GPU(s) (cuda:0 inside the job); local jobs see every GPU: pick one per job
            devices = worker_devices(device, jobs) if submitit == "local" else [device]
            if submitit == "local" and devices[0].startswith("cuda"):
                options["gpus_per_run"] = torch.cuda.device_count()
            tasks = {rid: _task(rid, r, out_dir, root, command, budget == "full", devices[k % len(devices)], 0)
                     for k, (rid, r) in enumerate(todo.items())}
            log(f"{len(todo)} trainings as submitit jobs ({submitit}, {jobs} at once); logs in {out_dir / 'submitit'}")
            submit_runs(_worker_train_result, tasks, out_dir / "submitit", submitit, jobs, done, **options)
        elif jobs == 1:
            for k, (rid, recipe) in enumerate(todo.items(), 1):
                datasets = _datasets_for(recipe, root, keep_one=budget == "full")
                done(k, rid, run_one(recipe, out_dir / "runs" / rid, root, datasets, quiet=quiet, command=command,
                                     device=worker_devices(device, 1)[0]))
        elif todo:
            threads = _threads_per_job(jobs, log)
            log(f"{len(todo)} trainings, {jobs} at once with {threads} thread{'s' if threads > 1 else ''} each")
            _run_parallel(todo, jobs, threads, out_dir, root, command, budget == "full", done, device)
    except KeyboardInterrupt:
        append_call(out_dir, call_row(interrupted=True))
        raise
    # the results files cover every finished run of the budget, not only the grids trained by this call (and every
    # recorded seed, also when this call asked for fewer)
    n_seeds = max(len({it["seed"] for it in items}), 1 + max((r["seed"] for r in recorded.values()), default=-1))
    runs = collect(plan(budget, None, n_seeds), out_dir, budget, recorded)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs.to_csv(out_dir / "runs.csv", index=False)
    run_ids = runs["run_id"].unique() if len(runs) else []
    history = gather_run_files(out_dir, run_ids, "metrics.csv", "history.csv")
    history.to_csv(out_dir / "history.csv", index=False)
    predictions = gather_run_files(out_dir, run_ids, "predictions.csv", PREDICTIONS)
    predictions.to_csv(out_dir / PREDICTIONS, index=False)  # gzip: ~4 kB per run and 1,000 val images
    summary = summarize(runs)
    summary.to_csv(out_dir / "summary.csv", index=False)
    (out_dir / "summary.md").write_text(summary_markdown(summary, budget))
    table = verdicts(runs, predictions=predictions if len(predictions) else None)
    table.to_csv(out_dir / "verdicts.csv", index=False)
    mine = {it["grid"] for it in items}  # figures and returned tables: the grids asked for
    pick = (lambda df: df[df["grid"].isin(mine)].reset_index(drop=True)) if len(runs) else (lambda df: df)
    # a contrast of the asked grids may be listed under another grid that compares the same runs (`same_as`)
    table_mine = table
    if len(table):
        shared = table["same_as"].map(lambda v: any(x.split("/")[0] in mine for x in v.split(", ") if x))
        table_mine = table[table["grid"].isin(mine) | shared].reset_index(drop=True)
    folder = Path(figures_dir or os.environ.get("GV3LITE_FIGURES") or out_dir / "figures")
    paths = plot_grids(pick(runs), pick(summary), budget, command, table=table_mine, history=history,
                       folder=folder) if figures else []
    row = call_row(interrupted=False)
    write_report(runs, table, out_dir / "report.md", budget, command, wall_seconds=row["wall_seconds"],
                 counts=counts, calls=append_call(out_dir, row))
    return {**counts, "out_dir": out_dir, "runs": pick(runs), "summary": pick(summary), "verdicts": table_mine,
            "figures": paths}


def prepare_teachers(recipes: list[Recipe], root, log=print, quiet: bool = True) -> None:
    """Compute (or find on disk) the cached teacher outputs of every cached-KD recipe in ``recipes``, once per
    (teacher, training images), so that trainings, possibly running in parallel, only read them. Logs the time of
    each teacher pass (the one-off cost of cached KD)."""
    seen = set()
    for r in recipes:
        key = (r.teacher, tuple(r.classes or ()), r.images_per_class_train, r.data_seed)
        if r.teacher is None or r.kd_mode != "cached" or key in seen:
            continue
        seen.add(key)
        train = ImageFolderDataset(root, "train", r.img_size, classes=r.classes, per_class=r.images_per_class_train,
                                   seed=r.data_seed, cache=False)  # file list only: the teacher reads the files
        t0 = time.perf_counter()
        make_kd(r.teacher, train, mode="cached", progress=not quiet)
        log(f"teacher {r.teacher}: outputs for {len(train)} training images ready ({time.perf_counter() - t0:.0f} s)")


_DATASETS: dict = {}  # per process: decoded datasets by `_dataset_key`, reused by the runs that share them


def _datasets_for(recipe: Recipe, root, keep_one: bool = False):
    key = _dataset_key(recipe)
    if key not in _DATASETS:
        if keep_one:
            _DATASETS.clear()  # full-size datasets: keep one in memory at a time
        _DATASETS[key] = recipe_datasets(recipe, root, return_crop_info=True)
    return _DATASETS[key]


def _threads_per_job(jobs: int, log) -> int:
    cores = os.cpu_count() or 1
    if jobs > cores:
        log(f"warning: --jobs {jobs} is more than the {cores} CPU cores; trainings will slow each other down")
    return max(1, torch.get_num_threads() // jobs)


def _run_parallel(todo: dict, jobs: int, threads: int, out_dir: Path, root, command: str, keep_one: bool, done,
                  device: str = "cpu"):
    """Train ``todo`` (run id -> recipe) in ``jobs`` spawned worker processes, each on its device of
    ``gv3lite.launch.worker_devices`` (one GPU per worker on a multi-GPU machine). Ctrl-C or SIGTERM stops the workers
    at once (finished runs stay finished, interrupted ones resume on the next call) and re-raises."""
    context = multiprocessing.get_context("spawn")
    devices = context.Queue()
    for d in worker_devices(device, jobs):
        devices.put(d)
    pool = context.Pool(jobs, initializer=_worker_init, initargs=(threads, devices))
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        tasks = [_task(rid, r, out_dir, root, command, keep_one, None, threads) for rid, r in todo.items()]
        for k, (rid, result) in enumerate(pool.imap_unordered(_worker_train, tasks), 1):
            done(k, rid, result)
    except BaseException:
        for process in getattr(pool, "_pool", []):  # kill the workers first: Pool.terminate alone can hang here
            process.kill()
        pool.terminate()
        raise
    else:
        pool.close()
        pool.join()
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


_WORKER_DEVICE = {"device": "cpu"}  # per worker process: its device (set by `_worker_init`)


def _worker_init(threads: int, devices=None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent alone handles it
    torch.set_num_threads(threads)
    if devices is not None:
        _WORKER_DEVICE["device"] = devices.get()


def _task(rid: str, recipe: Recipe, out_dir: Path, root, command: str, keep_one: bool, device, threads: int) -> dict:
    """What a worker process or a submitit job needs to train one run (plain values: it is pickled)."""
    return {"rid": rid, "recipe": recipe.to_dict(), "run_dir": str(out_dir / "runs" / rid), "root": str(root),
            "command": command, "keep_one": keep_one, "device": device, "threads": threads}


def _worker_train(task: dict) -> tuple[str, dict | None]:
    if task["threads"]:
        torch.set_num_threads(task["threads"])
    recipe, root = Recipe.from_dict(task["recipe"]), task["root"]
    device = task["device"] or _WORKER_DEVICE["device"]
    return task["rid"], run_one(recipe, Path(task["run_dir"]), root, _datasets_for(recipe, root, task["keep_one"]),
                                quiet=True, command=task["command"], device=device)


def _worker_train_result(task: dict) -> dict | None:
    """`_worker_train` for a submitit job (which returns the result alone)."""
    return _worker_train(task)[1]


PREDICTIONS = "predictions.csv.gz"  # per-image predictions of every run of a budget, beside its runs.csv
RESULT_FIELDS = ("top1_raw", "top1_ema", "top5", "train_seconds", "cpu_seconds", "git_commit", "command")


CALLS = "calls.csv"  # one row per `reproduce` call, beside its runs.csv
CALL_COLUMNS = ("started", "command", "git_commit", "wall_seconds", "trained", "skipped", "jobs", "cpu_count",
                "interrupted")


def append_call(out_dir, row: dict) -> pd.DataFrame:
    """Append ``row`` (`CALL_COLUMNS`: ``started`` UTC ISO time, ``command``, ``git_commit``, ``wall_seconds``,
    ``trained``/``skipped`` runs, ``jobs``, ``cpu_count``, ``interrupted``) to ``<out_dir>/calls.csv`` (created with
    its header) and return the whole log (`read_calls`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    file = out_dir / CALLS
    pd.DataFrame([row], columns=list(CALL_COLUMNS)).to_csv(file, mode="a", header=not file.is_file(), index=False)
    return read_calls(out_dir)


def read_calls(folder) -> pd.DataFrame | None:
    """The call log ``<folder>/calls.csv`` written by `reproduce` (`append_call`), or ``None`` when there is none.
    Raises ``ValueError`` naming missing columns."""
    file = Path(folder) / CALLS
    if not file.is_file():
        return None
    calls = pd.read_csv(file)
    missing = [c for c in CALL_COLUMNS if c not in calls]
    if missing:
        raise ValueError(f"{file} lacks column(s) {missing}; it was not written by gv3lite reproduce -- move it away")
    return calls


def _duration(seconds: float) -> str:
    """``seconds`` as ``"45 s"``, ``"41 min 45 s"`` or ``"2 h 05 min"``."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _calls_note(calls: pd.DataFrame | None) -> str:
    """``"total wall time X over N calls (calls.csv)"`` or ``"wall time not recorded (no calls.csv)"``."""
    if calls is None or calls.empty:
        return "wall time not recorded (no calls.csv)"
    n, interrupted = len(calls), int(calls["interrupted"].astype(str).eq("True").sum())
    return (f"total wall time {_duration(calls['wall_seconds'].sum())} over {n} call{'s' if n != 1 else ''} of "
            "`gv3lite reproduce`" + (f" ({interrupted} interrupted)" if interrupted else "") + " (calls.csv)")


def recorded_results(out_dir) -> dict:
    """``run_id -> result`` (``RESULT_FIELDS`` and ``seed``) of every training recorded in ``<out_dir>/runs.csv``.

    The committed results hold runs.csv but not the run directories, so a budget can be completed over several
    sittings (or on another machine) without retraining what is recorded: a run id is the hash of the trained
    recipe, so an equal id is the same training. Empty without runs.csv; raises ``ValueError`` naming missing
    columns."""
    file = Path(out_dir) / "runs.csv"
    if not file.is_file():
        return {}
    runs = pd.read_csv(file)
    missing = [c for c in ("run_id", "seed", *RESULT_FIELDS[:4]) if c not in runs]
    if missing:
        raise ValueError(f"{file} lacks column(s) {missing}; it was not written by gv3lite reproduce -- move it away")
    rows = runs.drop_duplicates("run_id").to_dict("records")
    return {r["run_id"]: {k: r.get(k) for k in ("seed", *RESULT_FIELDS)} for r in rows}


def gather_run_files(out_dir, run_ids, name: str, combined: str) -> pd.DataFrame:
    """One table of the per-run file ``runs/<id>/<name>`` (e.g. ``metrics.csv``) of each of ``run_ids``, with a
    ``run_id`` column first. A run without its directory keeps its rows from ``<out_dir>/<combined>`` (the committed
    copy); a run in neither has no rows."""
    out_dir = Path(out_dir)
    old = pd.read_csv(out_dir / combined) if (out_dir / combined).is_file() else pd.DataFrame(columns=["run_id"])
    parts = []
    for rid in run_ids:
        file = out_dir / "runs" / rid / name
        if file.is_file():
            parts.append(pd.read_csv(file).assign(run_id=rid))
        else:
            parts.append(old[old["run_id"] == rid])
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=["run_id"])
    table = pd.concat(parts, ignore_index=True)
    return table[["run_id", *[c for c in table.columns if c != "run_id"]]]


def collect(items: list[dict], out_dir: Path, budget: str, recorded: dict | None = None) -> pd.DataFrame:
    """One row per (grid, cell, seed): ``grid, cell, seed, run_id``, the result, ``budget`` and every recipe field
    (lists as JSON). The result comes from ``runs/<id>/result.json``, else from ``recorded`` (`recorded_results`);
    rows of runs in neither are left out (they are not finished)."""
    rows = []
    for it in items:
        file = out_dir / "runs" / it["run_id"] / "result.json"
        if file.is_file():
            result = json.loads(file.read_text())
        elif it["run_id"] in (recorded or {}):
            result = recorded[it["run_id"]]
        else:
            continue
        config = {k: (json.dumps(v) if isinstance(v, list) else v) for k, v in it["recipe"].to_dict().items()
                  if k != "seed"}
        top1 = result["top1_ema"] if it["recipe"].ema else result["top1_raw"]  # see `trained_as`
        rows.append({"grid": it["grid"], "cell": it["cell"], "seed": it["seed"], "run_id": it["run_id"],
                     "top1": top1, "top5": result["top5"], "top1_raw": result["top1_raw"],
                     "top1_ema": result["top1_ema"], "train_seconds": result["train_seconds"],
                     "cpu_seconds": result["cpu_seconds"], "git_commit": result["git_commit"], "budget": budget,
                     "command": result["command"], **config})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------ analysis
def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std (sample std, ddof=1; NaN for one seed) of top-1 and top-5 per (grid, cell), in run order,
    with ``n`` (seeds) and the paper's claim for the cell."""
    if runs.empty:  # no finished run yet (e.g. all of them are being trained by another call)
        return pd.DataFrame(columns=["grid", "cell", "n", "top1_mean", "top1_std", "top5_mean", "top5_std",
                                     "train_seconds", "paper_claim"])
    grouped = runs.groupby(["grid", "cell"], sort=False)
    summary = grouped.agg(n=("top1", "size"), top1_mean=("top1", "mean"), top1_std=("top1", "std"),
                          top5_mean=("top5", "mean"), top5_std=("top5", "std"),
                          train_seconds=("train_seconds", "mean")).reset_index()
    summary["paper_claim"] = [_claim(g, c, paper_claim) for g, c in zip(summary["grid"], summary["cell"])]
    return summary


def _claim(grid, cell, paper_claim):
    paper_cell, _ = paper_key(grid, cell)
    try:
        return paper_claim(grid, paper_cell)
    except KeyError:
        return "unknown"


def summary_markdown(summary: pd.DataFrame, budget: str) -> str:
    """The summary as a Markdown table (top-1 / top-5 as mean ± std in %)."""
    lines = [f"# Ablation summary ({budget} budget)", "",
             "top-1: of the EMA weights where the cell keeps an EMA, else of the raw weights; top-5: raw weights. "
             "Cells with the same run id (runs.csv) are one training.", "",
             "| grid | cell | n | top-1 (%) | top-5 (%) | paper claim | train s / run |", "|---|---|---|---|---|---|---|"]
    for r in summary.itertuples():
        lines.append(f"| {r.grid} | {r.cell} | {r.n} | {_pm(r.top1_mean, r.top1_std)} | {_pm(r.top5_mean, r.top5_std)} "
                     f"| {r.paper_claim} | {r.train_seconds:.0f} |")
    return "\n".join(lines) + "\n"


def _pm(mean, std) -> str:
    return f"{mean:.2f}" + (f" ± {std:.2f}" if std == std else " (1 seed)")


def contrasts(runs: pd.DataFrame) -> list[Contrast]:
    """The study's contrasts among the cells in ``runs``: every non-baseline cell against its grid's baseline (the
    grid's first cell in ``GRIDS`` that has runs; in the architectures grid each model's ``conventional`` cell), with
    the paper's claim and claimed differences (`paper_diffs`). A cell that differs from its baseline only in
    ``ema`` reads the same trainings, so it is compared within-run (EMA minus raw top-1 of every training)."""
    out = []
    present = runs.groupby("grid", sort=False)["cell"].unique() if len(runs) else {}
    for grid, cells in (present.items() if len(runs) else []):
        cells = list(cells)
        order = [c.name for c in GRIDS.get(grid, [])]
        base_name = next((c for c in order if c in cells), cells[0])
        for cell in cells:
            base = cell.split("/")[0] + "/conventional" if "/" in cell else base_name
            if cell == base or base not in cells:
                continue
            changed = set(differing_fields(runs, grid, cell, base))
            out.append(Contrast(grid, cell, base, _claim(grid, cell, paper_claim), paper_diffs(grid, cell, base),
                                ("top1_ema", "top1_raw") if changed == {"ema"} else None))
    return out


def paper_diffs(grid: str, cell: str, baseline: str) -> tuple:
    """The paper's top-1 differences cell − baseline (pp), one per model width that both rows of
    ``paper_results.csv`` report (e.g. the recipe: +1.8 / +2.2 / +2.6 at 1.0x / 1.3x / 1.6x); () when unknown."""
    (paper_cell, label), (paper_base, _) = paper_key(grid, cell), paper_key(grid, baseline)
    try:
        rows = paper_results(grid)
    except KeyError:
        return ()
    rows = rows[(rows["metric"] == "top1") & rows["value"].notna()]
    if label is not None:
        rows = rows[rows["model"] == label]
    width = rows["model"].str.split().str[-1]  # "GhostNetV2 1.3x" and "GhostNetV3 1.3x" pair by width
    a = dict(zip(width[rows["cell"] == paper_cell], rows.loc[rows["cell"] == paper_cell, "value"]))
    b = dict(zip(width[rows["cell"] == paper_base], rows.loc[rows["cell"] == paper_base, "value"]))
    return tuple(round(a[w] - b[w], 3) for w in a if w in b)


def differing_fields(runs: pd.DataFrame, grid: str, cell: str, baseline: str) -> dict:
    """``field -> (baseline value, cell value)`` for every recipe field (``gv3lite.recipe.Recipe``, seed excepted)
    in which the resolved recipes of ``cell`` and ``baseline`` differ, read from the recipe columns of ``runs``
    (what was trained). Raises ``KeyError`` when either cell has no rows."""
    rows = {}
    for name in (cell, baseline):
        part = runs[(runs["grid"] == grid) & (runs["cell"] == name)]
        if part.empty:
            raise KeyError(f"runs has no rows for {grid}/{name}")
        rows[name] = part.iloc[0]
    fields = [f.name for f in dataclasses.fields(Recipe) if f.name != "seed" and f.name in runs.columns]
    return {f: (rows[baseline][f], rows[cell][f]) for f in fields if not _same(rows[baseline][f], rows[cell][f])}


def _same(x, y) -> bool:
    return bool(pd.isna(x) and pd.isna(y)) or x == y  # a CSV reads None as NaN


def verdicts(runs: pd.DataFrame, pool: bool = True, predictions: pd.DataFrame | None = None) -> pd.DataFrame:
    """The verdict table (``gv3lite.stats.contrast_table`` on `contrasts`): per distinct contrast the paired per-seed
    differences, mean, 95% interval, Holm-adjusted p, minimum detectable effect and verdict, plus ``differs`` (the
    recipe fields that differ from the baseline, ``field: baseline -> cell``). ``predictions``: per-image predictions
    of the runs (``predictions.csv.gz``); where present the intervals include the image-sampling variance."""
    items = contrasts(runs)
    table = contrast_table(runs, items, pool=pool, predictions=predictions)
    table["differs"] = ["; ".join(f"{k}: {_fmt(a)} -> {_fmt(b)}" for k, (a, b) in
                                  differing_fields(runs, r.grid, r.cell, r.baseline).items())
                        if r.note[:6] != "no run" else "" for r in table.itertuples()]
    return table


def _fmt(value) -> str:
    return "None" if pd.isna(value) else f"{value:g}" if isinstance(value, float) else str(value)


def _num(value, spec: str) -> str:
    """``value`` formatted with ``spec`` ("n/a" for NaN, never "-0.00")."""
    return "n/a" if value != value else format(value + 0.0, spec).replace("-0.00", "+0.00")


def _mde(value) -> str:
    """The minimum detectable effect (pp) for a table; above 100 pp (top-1 spans 100 pp) no effect is detectable."""
    return "none < 100 pp" if value == value and value > 100 else _num(value, ".1f")


def _ci(r) -> str:
    if r.low != r.low:
        return "n/a"
    return f"[{r.low:+.2f}, {r.high:+.2f}]"


def _paper(r) -> str:
    """The source's number or claim for a verdict row, labelled by what it is: a difference of two published values
    is ``derived: +1.8/+2.2/+2.6`` or ``checkpoint: +0.2`` (`gv3lite.paper.difference_kind`: the paper states
    neither), a direction is ``paper: better`` (stated by the paper), else ``unknown``."""
    if isinstance(r.paper_diff, str) and r.paper_diff:
        return f"{difference_kind(r.grid)}: {r.paper_diff}"
    return f"paper: {r.claim}" if r.claim in ("better", "worse") else str(r.claim)


def _verdict_lines(table: pd.DataFrame) -> list[str]:
    """The verdict table (`verdicts`, or verdicts.csv read by `read_verdicts`) as Markdown lines: contrast, fields
    that differ, per-seed differences, diff, 95% interval and its half-width, Holm p, MDE, paper, verdict."""
    lines = ["| grid | contrast | differs in | per seed (pp) | diff (pp) | 95% CI | half-width (pp) | Holm p "
             "| MDE (pp) | source's claim (pp) | verdict |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        per_seed = str(r.per_seed)
        lines.append(f"| {r.grid} | {r.cell} vs {r.baseline} | {r.differs or '—'} "
                     f"| {per_seed if len(per_seed) < 60 else per_seed[:57] + '...'} | {_num(r.diff, '+.2f')} "
                     f"| {_ci(r)} | {_num((r.high - r.low) / 2, '.2f')} | {_num(r.p_holm, '.3f')} "
                     f"| {_mde(r.mde)} | {_paper(r)} | **{r.verdict}** |")
    if table.empty:
        lines.append("| – | no grid has both a baseline and another cell in this run | | | | | | | | | |")
    return lines


def sizing_note(table: pd.DataFrame, budget: str, runs: pd.DataFrame, calls: pd.DataFrame | None = None) -> str:
    """One Markdown sentence: the 95% half-widths the between-run contrasts of ``table`` (`verdicts`) reached
    against the budget's target (`HALF_WIDTH_TARGETS`); when one is wider, the seeds per cell that bring every
    contrast within the target at the spread measured here (the most any one needs, `gv3lite.stats
    .seeds_for_half_width`, with its standard error x sqrt(seeds) as the SD of a paired per-seed difference and its
    residual df growing with the seeds as in the table) and, given the call log ``calls`` (`read_calls`), the wall
    time that plan would take at the recorded wall time per training. ``""`` when the
    budget has no target or the table no between-run contrast with an interval (within-run EMA rows are left out:
    their width does not depend on the seeds)."""
    target = HALF_WIDTH_TARGETS.get(budget)
    between = table[~table["method"].astype(str).str.startswith("within-run") & table["high"].notna()
                    & table["low"].notna() & (table["n"] >= 2)] if len(table) else table
    if target is None or between.empty:
        return ""
    half = (between["high"] - between["low"]) / 2
    reached = f"{half.min():.2f}" if f"{half.min():.2f}" == f"{half.max():.2f}" else f"{half.min():.2f}–{half.max():.2f}"
    text = (f"95% half-width target of the {budget} budget: ±{target:g} pp; reached ±{reached} pp over "
            f"{len(between)} between-run contrast{'s' if len(between) != 1 else ''}")
    if (half <= target).all():
        return text + " (met)."

    def seeds_needed(row) -> int:  # the residual df grow with the seeds as in this table: df / (n - 1) per seed
        n = int(row["n"])
        return seeds_for_half_width(float(row["se"]) * math.sqrt(n), target,
                                    pooled_cells=1 + max(float(row["df"]), 1.0) / (n - 1))

    try:
        needs = between.apply(seeds_needed, axis=1)
    except ValueError:
        return text + " (not met; at the spread measured here one contrast needs more than 1000 seeds per cell)."
    worst = between.loc[needs.idxmax()]
    need = int(needs.max())
    text += (f" (not met): at the spread measured here ±{target:g} pp needs {need} seeds per cell (the most any "
             f"contrast needs: {worst['grid']}/{worst['cell']}, paired per-seed SD "
             f"{float(worst['se']) * math.sqrt(int(worst['n'])):.1f} pp)")
    trained = 0 if calls is None or calls.empty else int(calls["trained"].sum())
    if trained:
        per_training = float(calls["wall_seconds"].sum()) / trained
        planned = len({it["run_id"] for it in plan(budget, recorded_grids(runs, budget), seeds=need)})
        text += (f": {planned} trainings for the grids recorded here, about {_duration(planned * per_training)} at "
                 f"the {_duration(per_training)} of wall time per training recorded in calls.csv")
    return text + "."


VERDICT_TEXT = ("grid", "cell", "baseline", "claim", "paper_diff", "seeds", "per_seed", "method", "same_as", "note",
                "family", "verdict", "differs")  # verdicts.csv columns that are text ("+0.2" or "0 1" must stay text)


def read_verdicts(file) -> pd.DataFrame:
    """``verdicts.csv`` as written by `reproduce` / `report`, its text columns as strings ("" for empty).
    Raises ``FileNotFoundError`` and ``ValueError`` (missing columns) with the command that writes it."""
    file = Path(file)
    fix = f"write it with `gv3lite report {file.parent} --out {file.parent}`"
    if not file.is_file():
        raise FileNotFoundError(f"{file} does not exist; {fix}")
    table = pd.read_csv(file, dtype={c: str for c in VERDICT_TEXT})
    missing = [c for c in ("grid", "cell", "baseline", "claim", "paper_diff", "per_seed", "diff", "low", "high",
                           "p_holm", "mde", "verdict", "differs") if c not in table]
    if missing:
        raise ValueError(f"{file} lacks column(s) {missing}; {fix}")
    return table.fillna({c: "" for c in VERDICT_TEXT if c in table})


def committed_study(budget: str = "quick", results=None, grids=None) -> dict | None:
    """The study committed under ``<results>/<budget>/runs.csv`` (default ``<repo>/results/quick``, written by
    ``make main``), for notebooks to show beside a run at another budget, clearly labelled as loaded.

    Returns ``dict(runs, verdicts, label, budget)`` (``runs``/``verdicts`` restricted to ``grids`` when given;
    ``label`` a one-line Markdown provenance note: file, budget, seeds, trainings, commits), or ``None`` when the file
    is absent or holds no contrast of ``grids``.
    """
    path = Path(results or repo_root() / "results") / budget / "runs.csv"
    if not path.is_file():
        return None
    runs = pd.read_csv(path)
    if grids is not None:
        runs = runs[runs["grid"].isin(list(grids))].reset_index(drop=True)
        if runs.empty:
            return None
    shown = path.relative_to(repo_root()) if path.resolve().is_relative_to(repo_root()) else path
    commits = ", ".join(sorted(runs["git_commit"].dropna().astype(str).unique())) or "unknown"
    label = (f"**Loaded, not computed in this run:** `{shown}` (budget `{budget}`, {runs['seed'].nunique()} seed(s), "
             f"{runs['run_id'].nunique()} trainings, code at commit {commits}; written by "
             f"`make {'main' if budget == 'quick' else budget}`).")
    table = verdicts(runs)
    if grids is not None and table.empty:  # e.g. a grid's cells shared with another grid's runs, but no contrast yet
        return None
    return {"runs": runs, "verdicts": table, "label": label, "budget": budget}


def write_report(runs: pd.DataFrame, table: pd.DataFrame, path, budget: str, command: str,
                 wall_seconds: float | None = None, counts: dict | None = None,
                 calls: pd.DataFrame | None = None) -> Path:
    """``report.md``: per contrast the fields that differ, the paired per-seed differences, the mean with its 95%
    interval, the Holm-adjusted p, the minimum detectable effect and the verdict (see `verdicts`, ``gv3lite.stats``).
    The header gives ``wall_seconds`` (this call's wall time, when it trained) and, from the call log ``calls``
    (`read_calls`), the total wall time over all recorded calls.
    """
    path = Path(path)
    seeds = sorted(set(runs["seed"])) if len(runs) else []
    lines = [f"# gv3lite ablation report — {budget} budget", "",
             f"Command: `{command}`  ", f"Commit: {git_commit()} (runs trained at "
             f"{', '.join(sorted(set(runs['git_commit'].astype(str)))) if 'git_commit' in runs else 'unknown'})  ",
             f"Seeds: {len(seeds)} ({', '.join(map(str, seeds))}); trainings: {runs['run_id'].nunique() if len(runs) else 0}"
             + (f"; this call trained {counts['trained']}, skipped {counts['skipped']}" if counts else "")
             + (f"; wall time of this call {_duration(wall_seconds)}" if wall_seconds is not None else "")
             + (f"; {_calls_note(calls)}" if calls is not None else "")
             + (f"; training time of all runs {runs.drop_duplicates('run_id')['train_seconds'].sum() / 60:.1f} min "
                "(summed over runs)" if len(runs) and "train_seconds" in runs else ""), "",
             f"Analysis (`gv3lite/stats.py`, fixed in code before the runs it is meant for; runs recorded by older "
             f"versions are re-analysed with it): the seed is the unit. diff = mean of the "
             f"paired per-seed differences cell − baseline (top-1, pp); its 95% interval comes from a seed-blocked "
             f"model (cell + seed) whose residual variance is pooled over the cells of one architecture, or from "
             f"the paired differences alone where pooling is not possible (see `method`). p is Holm-adjusted across "
             f"the paper's claims. Smallest effect of interest δ = {DELTA:g} pp. **agrees** / **disagrees**: "
             f"adjusted p < {ALPHA:g}, in / against the paper's direction; **no effect >= {DELTA:g} pp**: the "
             f"interval lies inside ±δ; **underpowered**: neither (MDE = the difference this design would detect "
             f"with {POWER:.0%} power at the strictest Holm level). EMA is judged within-run: EMA minus raw top-1 of every training. The "
             "source's claim (gv3lite/paper_results.csv) is labelled by what it is: `paper:` a direction the paper "
             "states; `derived:` two published ImageNet top-1 subtracted by us (GhostNetV3 minus GhostNetV2: two "
             "papers, 600 vs 450 epochs; not an ablation); `checkpoint:` a measurement of the released checkpoint. "
             "Ours are on Imagenette at this budget's size: compare directions, not magnitudes. Cells with the same "
             "run id in runs.csv are one training.",
             "", *_verdict_lines(table)]
    notes = [f"- {r.grid}/{r.cell}: {r.method}" + (f"; {r.note}" if r.note else "")
             + (f"; same runs as {r.same_as}" if r.same_as else "") for r in table.itertuples()]
    sizing = sizing_note(table, budget, runs, calls)
    path.write_text("\n".join(lines + ([""] + [sizing] if sizing else []) + ["", "Method per contrast:", ""] + notes)
                    + "\n")
    return path


def report(results_dir, figures_dir=None, command: str | None = None, pool: bool = True, out_dir=None) -> dict:
    """Re-analyse recorded results without training: read ``<results_dir>/runs.csv`` (and ``history.csv``, and the
    call log ``calls.csv`` for the report's wall time, if there; it is never written here) and write ``summary.csv``/``.md``, ``verdicts.csv``, ``report.md`` into ``out_dir`` (default ``results_dir``) and
    the figures into ``figures_dir`` (default ``<out_dir>/figures``).

    Works on results of older versions too (their runs.csv lacks per-image predictions and histories: the analysis
    uses the per-seed top-1 it has). Returns ``dict(runs, summary, verdicts, figures)``. Raises
    ``FileNotFoundError`` when runs.csv is missing and ``ValueError`` when it has no rows.
    """
    results_dir = Path(results_dir)
    file = results_dir / "runs.csv"
    if not file.is_file():
        raise FileNotFoundError(f"{file} does not exist; give the folder `gv3lite reproduce` wrote (e.g. results/quick)")
    runs = pd.read_csv(file)
    if runs.empty:
        raise ValueError(f"{file} has no runs; train some with `gv3lite reproduce` first")
    budget = str(runs["budget"].iloc[0]) if "budget" in runs else results_dir.name
    command = command or " ".join(["gv3lite", *map(shlex.quote, sys.argv[1:])])
    history = pd.read_csv(results_dir / "history.csv") if (results_dir / "history.csv").is_file() else None
    predictions = (pd.read_csv(results_dir / PREDICTIONS) if (results_dir / PREDICTIONS).is_file() else None)
    out_dir = Path(out_dir or results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(runs)
    summary.to_csv(out_dir / "summary.csv", index=False)
    (out_dir / "summary.md").write_text(summary_markdown(summary, budget))
    table = verdicts(runs, pool=pool, predictions=predictions)
    table.to_csv(out_dir / "verdicts.csv", index=False)
    write_report(runs, table, out_dir / "report.md", budget, command, calls=read_calls(results_dir))
    paths = plot_grids(runs, summary, budget, command, table=table, history=history,
                       folder=Path(figures_dir or out_dir / "figures"))
    return {"runs": runs, "summary": summary, "verdicts": table, "figures": paths}


# -------------------------------------------------------------------------------------------------- README
README_BEGIN = "<!-- results: generated by gv3lite readme; do not edit by hand -->"
README_END = "<!-- /results -->"
README_BUDGETS = {"quick": "make main", "medium": "make medium"}  # budget -> the command that writes results/<budget>


def _shown(path) -> str:
    """``path`` relative to the repository when it lies inside it (``results/quick``), else as given."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(repo_root())) if resolved.is_relative_to(repo_root()) else str(path)


def readme_results(results_root) -> str:
    """README.md's generated Results block (Markdown, ending in a newline), from the folders ``<results_root>/quick``
    and ``<results_root>/medium`` that hold a runs.csv, in that order: per budget one provenance paragraph (the
    command and the commits the runs were trained at, trainings, seeds, the total wall time from calls.csv when it
    exists, how many of the current plan's trainings are recorded, the verdict counts), then the verdict table of its
    verdicts.csv (`_verdict_lines`, as in report.md). Reads files only: the same folders give the same text.

    Raises ``FileNotFoundError`` when ``results_root`` is not a folder or a budget folder lacks verdicts.csv."""
    root = Path(results_root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder; give the results root that `make main` writes (results)")
    parts = [_readme_budget(root / budget, budget, make) for budget, make in README_BUDGETS.items()
             if (root / budget / "runs.csv").is_file()]
    if not parts:
        return f"No ablation results recorded under `{_shown(root)}/` yet: `make main` writes them.\n"
    return "\n".join(parts)


def _readme_budget(folder: Path, budget: str, make: str) -> str:
    runs, table, calls = pd.read_csv(folder / "runs.csv"), read_verdicts(folder / "verdicts.csv"), read_calls(folder)
    shown = _shown(folder)
    commands = " and ".join(f"`{c}`" for c in dict.fromkeys(runs["command"].dropna().astype(str))) or "unknown"
    commits = ", ".join(sorted(set(runs["git_commit"].dropna().astype(str)))) or "unknown"
    seeds = sorted(int(x) for x in runs["seed"].unique())
    full_plan = plan(budget)
    grids = recorded_grids(runs, budget, full_plan)
    left_out = [g for g in dict.fromkeys(it["grid"] for it in full_plan) if g not in grids]
    planned = {it["run_id"] for it in full_plan if it["grid"] in grids}
    current = len(planned & set(runs["run_id"]))
    older = runs["run_id"].nunique() - current
    coverage = (f"{current} of the {len(planned)} trainings the current plan has for its grids (`gv3lite reproduce "
                f"--budget {budget} --list`) are recorded" + (f", `{make}` trains the missing ones"
                                                              if current < len(planned) else "")
                + (f"; {older} recorded trainings are of an earlier plan (other recipes or sizes)" if older else "")
                + (f"; not in these results: the {', '.join(left_out)} grid(s) (`--grids`)"
                   if left_out else ""))
    counted = table["verdict"].value_counts(sort=False)
    verdict_counts = ", ".join(f"{n} **{v}**" for v, n in counted.items())
    lines = [f"**{budget} budget** (`{shown}/`; full report with the method per contrast: `{shown}/report.md`). "
             f"Command {commands}; code at commit {commits}; {runs['run_id'].nunique()} trainings, "
             f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''} ({', '.join(map(str, seeds))}); {_calls_note(calls)}; "
             f"{coverage}. Verdicts of the {len(table)} contrasts: {verdict_counts or 'none'}.", "",
             *_verdict_lines(table), ""]
    sizing = sizing_note(table, budget, runs, calls)
    lines += [sizing, ""] if sizing else []
    return "\n".join(lines)


def split_readme(text: str, name="README.md") -> tuple[str, str, str]:
    """``(head, block, tail)`` of a README: ``block`` is the text between the marker lines `README_BEGIN` and
    `README_END` (``head`` ends with the first, ``tail`` starts with the second). Raises ``ValueError`` naming the
    marker lines when they are missing, repeated or out of order."""
    lines = text.splitlines(keepends=True)
    begins = [i for i, line in enumerate(lines) if line.strip() == README_BEGIN]
    ends = [i for i, line in enumerate(lines) if line.strip() == README_END]
    if len(begins) != 1 or len(ends) != 1 or ends[0] < begins[0]:
        found = (f"found {len(begins)} start and {len(ends)} end line(s)" + (
            ", the end before the start" if len(begins) == len(ends) == 1 else ""))
        raise ValueError(f"{name} needs one generated results block: a line {README_BEGIN} and, below it, a line "
                         f"{README_END} ({found}); add them where the results go (under '## Results')")
    b, e = begins[0], ends[0]
    return "".join(lines[:b + 1]), "".join(lines[b + 1:e]), "".join(lines[e:])


# ------------------------------------------------------------------------------------------------- figures
def plot_grids(runs: pd.DataFrame, summary: pd.DataFrame, budget: str, command: str,
               table: pd.DataFrame | None = None, history: pd.DataFrame | None = None, folder=None) -> list[Path]:
    """One figure per grid (``gv3lite.figures.plot_grid``), saved as ``ablation_<grid>.png`` by ``figures.savefig``;
    given the verdict ``table`` (`verdicts`), the forest plot of all claims as ``ablation_forest.png``
    (``gv3lite.figures.plot_forest``); given per-epoch ``history`` (``history.csv``), the learning curves per cell as
    ``ablation_learning_curves.png`` (``gv3lite.figures.plot_learning_curves``; skipped when no run has one).
    ``folder``: where they go (default ``gv3lite.figures.figures_dir(budget)``)."""
    import matplotlib.pyplot as plt  # lazy: pyplot is slow to import and only figures need it
    paths = []
    fig = plot_learning_curves(history, runs, title=f"learning curves — {budget} budget") if (
        history is not None and len(history)) else None
    if fig is not None:
        paths.append(savefig(fig, "ablation_learning_curves", budget=budget, command=command, folder=folder))
        plt.close(fig)
    if table is not None and len(table):
        seeds = int(runs["seed"].nunique())
        fig = plot_forest(table, title=f"the paper's claims — {budget} budget, {seeds} seed{'s' if seeds != 1 else ''}"
                                       " (Imagenette); paired differences with 95% intervals, Holm-adjusted verdicts")
        paths.append(savefig(fig, "ablation_forest", budget=budget, command=command, folder=folder))
        plt.close(fig)
    for grid in summary["grid"].unique():
        try:
            paper = paper_results(grid)
        except KeyError:
            paper = None
        seeds = int(summary[summary["grid"] == grid]["n"].max())
        title = f"{grid} — {budget} budget, {seeds} seed{'s' if seeds != 1 else ''}"
        if grid == "architectures":
            title += f"; our models at width x{int(BUDGETS[budget]['arch_width']) / 100:.1f}, the paper's at x1.0"
        fig = plot_grid(summary, runs, grid, paper, paper_cells={c: paper_key(grid, c) for c in summary["cell"]},
                        title=title)
        paths.append(savefig(fig, f"ablation_{grid}", budget=budget, command=command, folder=folder))
        plt.close(fig)
    return paths


# ------------------------------------------------------------------------------------------------------ CLI
def add_reproduce(subparsers) -> None:
    """Register ``gv3lite reproduce`` (see `reproduce`)."""
    p = subparsers.add_parser("reproduce", help="run the paper's ablation grids under a budget; write results, "
                                                "report and figures",
                              description="Train every cell of the ablation grids (gv3lite.ablation.GRIDS) for each "
                                          "seed under a budget (gv3lite.ablation.BUDGETS). Finished runs are skipped, "
                                          "interrupted ones resume from their checkpoint.")
    p.add_argument("--budget", default=None, choices=list(BUDGETS), help="smoke | quick | medium | full (default: "
                                                                          "$GV3LITE_BUDGET, else smoke)")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default: the budget's)")
    p.add_argument("--out", default="runs/reproduce", help="results root; files go to OUT/<budget>/ (default "
                                                           "runs/reproduce; `make main` writes the committed results/)")
    p.add_argument("--grids", default=None, help=f"comma-separated subset of {','.join(GRIDS)}")
    p.add_argument("--data", help="ImageFolder root (default: $GV3LITE_DATA or ../shared/data/imagenette2-224)")
    p.add_argument("--figures", default=None, help="figure folder (default: $GV3LITE_FIGURES, else OUT/<budget>/figures;"
                                                   " `make main` writes the committed figures/)")
    p.add_argument("--list", action="store_true", help="print the plan (grid, cell, seed, run id) and exit")
    p.add_argument("--jobs", type=int, default=1, help="trainings at once, each with (threads // jobs) threads "
                                                       "(default 1; 2 on a 2-core CPU is ~1.8x faster)")
    p.add_argument("--verbose", action="store_true", help="progress bars and per-epoch lines (with --jobs 1 only)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu); with --jobs N on a machine "
                                                   "with several GPUs, one run per GPU")
    s = p.add_argument_group("scheduler (submitit): each training as one job; a lock keeps runs from training twice")
    s.add_argument("--submitit", choices=["local", "slurm", "debug"], help="run the trainings through submitit: "
                   "slurm (a job array, --jobs at a time), local (subprocesses here) or debug (in this process)")
    s.add_argument("--slurm-partition", help="SLURM partition (with --submitit slurm)")
    s.add_argument("--timeout-min", type=int, default=24 * 60, help="time limit per training in minutes (default 1440)")
    s.add_argument("--gpus-per-run", type=int, default=0, help="GPUs per training job (default 0; 1 with --device cuda)")
    p.set_defaults(func=run_reproduce)


def add_report(subparsers) -> None:
    """Register ``gv3lite report`` (see `report`)."""
    p = subparsers.add_parser("report", help="re-analyse recorded results (runs.csv) without training",
                              description="Read RESULTS/runs.csv and rewrite summary, verdicts.csv, report.md and "
                                          "the figures with the current statistics (gv3lite.stats).")
    p.add_argument("results", help="a folder gv3lite reproduce wrote, e.g. results/quick")
    p.add_argument("--out", default=None, help="where summary, verdicts.csv and report.md go (default: the "
                                               "git-ignored runs/report/<name of RESULTS>; `--out results/quick "
                                               "--figures figures` rewrites the committed ones)")
    p.add_argument("--figures", default=None, help="figure folder (default OUT/figures)")
    p.add_argument("--no-pool", action="store_true", help="a paired t interval per contrast instead of the "
                                                          "seed-blocked model with pooled residual variance")
    p.set_defaults(func=run_report)


def add_readme(subparsers) -> None:
    """Register ``gv3lite readme`` (see `readme_results`)."""
    p = subparsers.add_parser("readme", help="regenerate README.md's Results block from the committed results/",
                              description="Replace the text between the lines '" + README_BEGIN + "' and '"
                                          + README_END + "' of README with the provenance and the verdict tables "
                                          "of RESULTS/quick and RESULTS/medium (gv3lite.ablation.readme_results). "
                                          "`make main` and `make medium` run it after training.")
    p.add_argument("--results", default="results", help="the results root (default: results)")
    p.add_argument("--readme", default="README.md", help="the README to update (default: README.md)")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 when the README's block differs "
                                                        "from what would be generated (0 when equal)")
    p.set_defaults(func=run_readme)


def run_readme(args) -> int:
    readme = Path(args.readme)
    if not readme.is_file():
        raise FileNotFoundError(f"{readme} does not exist; give the README with --readme")
    text = readme.read_text()
    head, block, tail = split_readme(text, str(readme))
    generated = readme_results(args.results)
    if block == generated:
        print(f"{readme}: the results block is up to date with {args.results}/")
        return 0
    if args.check:
        diff = list(difflib.unified_diff(block.splitlines(), generated.splitlines(), "README block",
                                         f"gv3lite readme --results {args.results}", lineterm="", n=0))
        print(f"{readme}: the results block differs from what `gv3lite readme` generates from {args.results}/ "
              f"(differences below); run `gv3lite readme` and commit {readme}", file=sys.stderr)
        print("\n".join(diff[:40] + ([f"... {len(diff) - 40} more lines"] if len(diff) > 40 else [])),
              file=sys.stderr)
        return 1
    readme.write_text(head + generated + tail)
    print(f"{readme}: results block regenerated from {args.results}/")
    return 0


def run_report(args) -> int:
    out = Path(args.out) if args.out else repo_root() / "runs" / "report" / Path(args.results).resolve().name
    check_output_dir(out)
    result = report(args.results, args.figures, pool=not args.no_pool, out_dir=out)
    table = result["verdicts"]
    shown = table[["grid", "cell", "baseline", "diff", "low", "high", "p_holm", "mde", "verdict"]].round(
        {"diff": 2, "low": 2, "high": 2, "p_holm": 3, "mde": 1})
    print(shown.to_string(index=False))
    print(f"-> {out}/report.md, verdicts.csv; figures: " + ", ".join(str(p) for p in result["figures"]))
    return 0


def run_reproduce(args) -> int:
    budget = args.budget or env_budget()
    # `--grids ""` or `--grids ,,` name no grid: `plan` rejects that instead of running all of them
    grids = [g.strip() for g in args.grids.split(",") if g.strip()] if args.grids is not None else None
    items = plan(budget, grids, args.seeds)  # unknown grids, bad --seeds: refused before --out is created
    if args.list:
        for it in items:
            print(f"{it['grid']:14s} {it['cell']:30s} seed {it['seed']}  {it['run_id']}")
        return 0
    check_output_dir(args.out)  # a file, a file's sub-folder, not writable: before any data is read
    resolve_device(args.device)  # --device cuda without a GPU: before any data is read
    options = {"slurm_partition": args.slurm_partition, "timeout_min": args.timeout_min,
               "gpus_per_run": args.gpus_per_run or (1 if args.device == "cuda" else 0)}
    result = reproduce(budget, args.seeds, args.out, grids, args.data, quiet=not args.verbose, jobs=args.jobs,
                       figures_dir=args.figures, device=args.device, submitit=args.submitit, submitit_options=options)
    print(f"trained {result['trained']} (resumed {result['resumed']}), skipped {result['skipped']} finished runs"
          + (f", {result['busy']} being trained by another process" if result["busy"] else ""))
    print(result["summary"].to_string(index=False))
    print(f"-> {result['out_dir']}/runs.csv, summary.csv, summary.md, report.md; figures: "
          + ", ".join(str(p) for p in result["figures"]))
    return 0
