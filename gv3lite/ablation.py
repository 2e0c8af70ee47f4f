"""The ablation engine behind ``gv3lite reproduce``: budgets, grids, resumable runs, results, report, figures.

Owns:
* `BUDGETS` — one table: how big a run is under ``smoke`` (CI), ``quick`` (a 2-core CPU, < 1 h) and ``full`` (a GPU);
* `GRIDS` — one table: the paper's ablation sections (arXiv 2404.11202, Sec. 4) as cells; each cell is a preset
  (``gv3lite.recipe.PRESETS``) plus a few changed fields, and the budgets it runs in. The first cell of a grid is its
  baseline. Cell names are the contract with ``gv3lite/paper_results.csv``;
* `plan` (every (grid, cell, seed) with its resolved `Recipe` and run id), `reproduce` (train what is missing),
  `summarize` (mean ± std per cell), `verdicts` / `write_report` (agreement with the paper's claims), and the
  ``reproduce`` subcommand (`add_reproduce`, hooked into ``gv3lite.cli``).

Runs are keyed by a hash of the resolved recipe (seed included), so a config shared by several grids (e.g. the
``ghostnetv3`` recipe is the ``recipe`` grid's cell, ``reparam/full``, ``kd/teacher`` and ``schedule/ema``) trains
once; so does a cell without EMA (trained as its EMA twin, whose raw weights it reads: `trained_as`), and the
architectures grid's GhostNetV2 cells (GhostNetV3's architecture: the recipe's switches decide the branches).
Layout under ``<out>/<budget>/``: ``runs/<run_id>/`` (``gv3lite.train.fit``'s run directory plus ``result.json``),
``runs.csv`` (one row per grid, cell and seed), ``summary.csv`` / ``summary.md``, ``report.md``. A run with
``result.json`` is skipped on a re-run; one with only ``last.pth`` continues from it
(``gv3lite.experiment.run(resume=True)``).

Top-1 of a run = val top-1 after the last epoch, of the EMA weights when the recipe keeps an EMA (as the paper
reports its EMA model), else of the raw weights; both are kept (``top1_raw``, ``top1_ema``).
"""
from __future__ import annotations

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
from pathlib import Path

import pandas as pd
import torch

from gv3lite.data import ImageFolderDataset, resolve_data_root
from gv3lite.distill import make_kd
from gv3lite.experiment import recipe_datasets, run
from gv3lite.figures import plot_grid, savefig
from gv3lite.paper import paper_claim, paper_results
from gv3lite.recipe import Recipe, preset
from gv3lite.utils import BUDGET_NAMES, git_commit, repo_root
from gv3lite.utils import budget as env_budget

# --------------------------------------------------------------------------------------------------- budgets
# Applied on top of every cell's recipe. quick is sized by measurement on the 2-core CPU (torch, 2 threads, batch 32,
# 48 px, train step per image): ghostnetv3_050 plain 4.7 ms / with branches 8.5 ms; mobilenetv2_050 2.8 / 8.1 ms;
# shufflenetv2_050 1.6 / 4.8 ms (the x1.0 models cost 2.6-11 / 7.8-21 ms, too much for an hour: quick runs the
# architectures grid at width x0.5, full at x1.0 as in the paper). Two 1-thread trainings at once (`make main` uses
# ``--jobs 2``) each run at ~1.5x the 2-thread time, i.e. ~1.8x the throughput. quick = 9 unique configs x 2 seeds =
# 18 trainings of 3,000 images x 10 epochs, plus one teacher pass over the 3,000 images (the subset is the same for
# both seeds, `Recipe.data_seed`): about 45-50 min with --jobs 2. Val: 100 images per class, evaluated once, after the
# last epoch (eval_every = epochs), which keeps the binomial noise of top-1 near 1.5 pp at little cost.
BUDGETS = {
    #          images/class  images/class                  batch  warm-up  EMA          eval   seeds  model   width
    #          train         val        px   epochs        size   epochs   decay        every                 (arch grid)
    "smoke": dict(images_per_class_train=6, images_per_class_val=4, img_size=48, epochs=1, batch_size=16,
                  warmup_epochs=0.0, ema_decay=0.9, eval_every=1, seeds=1, model="ghostnetv3_050", arch_width="050"),
    "quick": dict(images_per_class_train=300, images_per_class_val=100, img_size=48, epochs=10, batch_size=32,
                  warmup_epochs=1.0, ema_decay=0.99, eval_every=10, seeds=2, model="ghostnetv3_050",
                  arch_width="050"),
    "full": dict(images_per_class_train=None, images_per_class_val=None, img_size=224, epochs=100, batch_size=128,
                 warmup_epochs=3.0, ema_decay=0.9998, eval_every=5, seeds=3, model="ghostnetv3_050",
                 arch_width="100"),
}
# EMA decay per budget: about 1 - 10 / (total optimizer steps), so the average spans the last ~tenth of training
# (the paper's decay was not recovered). quick: 93 steps/epoch x 10 epochs = 930 steps -> 0.99.
NOT_RECIPE_FIELDS = ("seeds", "arch_width")
assert tuple(BUDGETS) == BUDGET_NAMES, "gv3lite.utils.BUDGET_NAMES and BUDGETS must list the same budgets"

SMOKE, QUICK, FULL = {"smoke", "quick", "full"}, {"quick", "full"}, {"full"}
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
    "kd": _cells(  # paper Sec. 4.2: knowledge distillation
        ("none", "ghostnetv3", dict(teacher=None), SMOKE),
        ("teacher", "ghostnetv3", {}, SMOKE),
        ("temperature4", "ghostnetv3", dict(kd_temperature=4.0, kd_loss="kl"), FULL),
        ("teacher_lite2", "ghostnetv3", dict(teacher="efficientnet_lite2"), FULL)),
    "augment": _cells(  # paper Sec. 4.4; no KD in this grid: Mixup/CutMix + KD is not supported by the trainer
        ("basic", "ghostnetv3", dict(teacher=None), QUICK),
        ("mixup", "ghostnetv3", dict(teacher=None, mixup_alpha=0.8), QUICK),
        ("cutmix", "ghostnetv3", dict(teacher=None, cutmix_alpha=1.0), FULL),
        ("randaugment", "ghostnetv3", dict(teacher=None, auto_augment="randaugment"), FULL),
        ("random_erasing", "ghostnetv3", dict(teacher=None, random_erasing=0.2), FULL)),
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


# ------------------------------------------------------------------------------------------------------- run
def _dataset_key(r: Recipe) -> tuple:
    return (r.img_size, tuple(r.classes or ()), r.images_per_class_train, r.images_per_class_val, r.data_seed,
            r.auto_augment, r.random_erasing, r.min_crop_scale, r.cache)


def run_one(recipe: Recipe, run_dir: Path, data_root, datasets=None, quiet: bool = True, command: str = "") -> dict:
    """Train one recipe into ``run_dir`` (resuming ``last.pth`` if there) and write ``run_dir/result.json``.

    Returns the result dict: ``top1`` (EMA weights if ``recipe.ema``), ``top1_raw``, ``top1_ema`` (NaN without
    EMA), ``top5``, ``train_seconds`` (wall time of all epochs incl. evaluation, summed over resumes),
    ``cpu_seconds`` (process CPU time of this call only), ``epochs``, ``git_commit``, ``command``.
    """
    resume = (run_dir / "last.pth").is_file()
    cpu0 = time.process_time()
    history = run(recipe, data_root, run_dir, resume=resume, quiet=quiet, datasets=datasets)
    last = history.iloc[-1]
    result = {"top1_raw": float(last.val_top1), "top1_ema": float(last.ema_top1), "top5": float(last.val_top5),
              "train_seconds": float(history["seconds"].sum()), "cpu_seconds": time.process_time() - cpu0,
              "epochs": int(last.epoch), "resumed": resume, "git_commit": git_commit(), "command": command}
    result["top1"] = result["top1_ema"] if recipe.ema else result["top1_raw"]
    (run_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def reproduce(budget: str, seeds: int | None = None, out="results", grids=None, data=None, figures: bool = True,
              quiet: bool = True, command: str | None = None, log=print, jobs: int = 1) -> dict:
    """Run (or resume) every cell of ``budget`` and write runs.csv, summary.csv/.md, report.md and the figures.

    ``out``: results root; files go to ``<out>/<budget>/``. ``data``: ImageFolder root (``gv3lite.data``'s
    resolution order). ``jobs``: trainings run at once, each in its own process with ``torch.get_num_threads() //
    jobs`` threads (on a 2-core CPU, ``jobs=2`` with one thread each trains ~1.8x more images per second than one
    run with two threads: small convolutions do not split well over threads). Before any training, the teacher
    outputs every cached-KD run needs are computed once and stored on disk (`prepare_teachers`).
    Returns ``dict(trained, skipped, resumed, out_dir, runs, summary, verdicts, figures)``: ``trained`` counts
    trainings started by this call (``resumed`` of them continued a checkpoint), ``skipped`` the unique runs already
    finished. ``grids`` limits what is trained (and drawn); the results files cover every finished run of the
    budget. Raises like `plan` for bad names and ``ValueError`` for ``jobs`` < 1. With ``jobs`` > 1 a script must
    call this under ``if __name__ == "__main__":`` (worker processes are spawned and re-import the script).
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs={jobs!r}: must be an integer >= 1 (trainings run at once)")
    items = plan(budget, grids, seeds)
    command = command or " ".join(["gv3lite", *map(shlex.quote, sys.argv[1:])])
    out_dir = Path(out) / budget
    root = resolve_data_root(data)
    unique = {it["run_id"]: it["trained_as"] for it in items}
    todo = {rid: r for rid, r in unique.items() if not (out_dir / "runs" / rid / "result.json").is_file()}
    counts = {"trained": 0, "skipped": len(unique) - len(todo), "resumed": 0}
    t0 = time.perf_counter()
    prepare_teachers(list(todo.values()), root, log=log, quiet=quiet)

    def describe(rid):
        return ", ".join(f"{it['grid']}/{it['cell']}" for it in items if it["run_id"] == rid)

    def done(k, rid, result):
        counts["trained"] += 1
        log(f"[{k}/{len(todo)}] run {rid} seed {todo[rid].seed} ({describe(rid)}): top-1 {result['top1']:.2f}%  "
            f"{result['train_seconds']:.0f} s train, {result['cpu_seconds']:.0f} s CPU")

    counts["resumed"] = sum((out_dir / "runs" / rid / "last.pth").is_file() for rid in todo)
    if jobs == 1:
        for k, (rid, recipe) in enumerate(todo.items(), 1):
            datasets = _datasets_for(recipe, root, keep_one=budget == "full")
            done(k, rid, run_one(recipe, out_dir / "runs" / rid, root, datasets, quiet=quiet, command=command))
    elif todo:
        threads = _threads_per_job(jobs, log)
        log(f"{len(todo)} trainings, {jobs} at once with {threads} thread{'s' if threads > 1 else ''} each")
        _run_parallel(todo, jobs, threads, out_dir, root, command, budget == "full", done)
    # the results files cover every finished run of the budget, not only the grids trained by this call
    runs = collect(plan(budget, None, seeds), out_dir, budget)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs.to_csv(out_dir / "runs.csv", index=False)
    summary = summarize(runs)
    summary.to_csv(out_dir / "summary.csv", index=False)
    (out_dir / "summary.md").write_text(summary_markdown(summary, budget))
    table = verdicts(runs)
    write_report(runs, table, out_dir / "report.md", budget, command, wall_seconds=time.perf_counter() - t0,
                 counts=counts)
    mine = {it["grid"] for it in items}  # figures and returned tables: the grids asked for
    pick = (lambda df: df[df["grid"].isin(mine)].reset_index(drop=True)) if len(runs) else (lambda df: df)
    paths = plot_grids(pick(runs), pick(summary), budget, command) if figures else []
    return {**counts, "out_dir": out_dir, "runs": pick(runs), "summary": pick(summary), "verdicts": pick(table),
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


def _run_parallel(todo: dict, jobs: int, threads: int, out_dir: Path, root, command: str, keep_one: bool, done):
    """Train ``todo`` (run id -> recipe) in ``jobs`` spawned worker processes. Ctrl-C or SIGTERM stops the workers at
    once (finished runs stay finished, interrupted ones resume on the next call) and re-raises."""
    pool = multiprocessing.get_context("spawn").Pool(jobs, initializer=_worker_init, initargs=(threads,))
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        tasks = [(rid, r.to_dict(), str(out_dir / "runs" / rid), str(root), command, keep_one) for rid, r in todo.items()]
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


def _worker_init(threads: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent alone handles it
    torch.set_num_threads(threads)


def _worker_train(task: tuple) -> tuple[str, dict]:
    rid, recipe, run_dir, root, command, keep_one = task
    recipe = Recipe.from_dict(recipe)
    return rid, run_one(recipe, Path(run_dir), root, _datasets_for(recipe, root, keep_one), quiet=True,
                        command=command)


def collect(items: list[dict], out_dir: Path, budget: str) -> pd.DataFrame:
    """One row per (grid, cell, seed): ``grid, cell, seed, run_id``, the result, ``budget`` and every recipe field
    (lists as JSON). Rows of runs without ``result.json`` are left out (they are not finished)."""
    rows = []
    for it in items:
        file = out_dir / "runs" / it["run_id"] / "result.json"
        if not file.is_file():
            continue
        result = json.loads(file.read_text())
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


def judge(diff: float, spread: float, claim: str) -> str:
    """Our direction against the paper's ``claim`` (``better``/``worse``): ``agrees`` / ``disagrees`` when
    ``|diff| > spread``, ``inconclusive`` when the difference is within the spread (or the spread is unknown, e.g.
    one seed), ``no paper claim`` when the paper states no direction."""
    if claim not in ("better", "worse"):
        return "no paper claim"
    if not (spread == spread) or abs(diff) <= spread:
        return "inconclusive"
    return "agrees" if (diff > 0) == (claim == "better") else "disagrees"


def verdicts(runs: pd.DataFrame) -> pd.DataFrame:
    """Per grid and non-baseline cell: ``diff`` = mean top-1 of the cell minus the grid's baseline (pp),
    ``spread`` = sqrt(std_cell² + std_baseline²) (pp), ``n`` seeds of each, the paper's claim and `judge`'s verdict.
    The baseline is the grid's first cell (``GRIDS``) that has runs."""
    summary = summarize(runs)
    rows = []
    for grid, part in summary.groupby("grid", sort=False):
        base_name = next((c.name for c in GRIDS.get(grid, []) if c.name in set(part["cell"])), part["cell"].iloc[0])
        for r in part.itertuples():
            if "/" in r.cell:  # architectures: each model against its own conventional cell
                base_name = r.cell.split("/")[0] + "/conventional"
            if r.cell == base_name or base_name not in set(part["cell"]):
                continue
            base = part[part["cell"] == base_name].iloc[0]
            diff = r.top1_mean - base.top1_mean
            spread = math.sqrt(r.top1_std ** 2 + base.top1_std ** 2)
            rows.append({"grid": grid, "cell": r.cell, "baseline": base_name, "diff": diff, "spread": spread,
                         "n_cell": r.n, "n_baseline": int(base.n), "paper_claim": r.paper_claim,
                         "verdict": judge(diff, spread, r.paper_claim)})
    return pd.DataFrame(rows, columns=["grid", "cell", "baseline", "diff", "spread", "n_cell", "n_baseline",
                                       "paper_claim", "verdict"])


def committed_study(budget: str = "quick", results=None, grids=None) -> dict | None:
    """The study committed under ``<results>/<budget>/runs.csv`` (default ``<repo>/results/quick``, written by
    ``make main``), for notebooks to show beside a run at another budget, clearly labelled as loaded.

    Returns ``dict(runs, verdicts, label)`` (``runs``/``verdicts`` restricted to ``grids`` when given; ``label`` a
    one-line Markdown provenance note: file, budget, seeds, trainings, commits), or ``None`` when the file is absent.
    """
    path = Path(results or repo_root() / "results") / budget / "runs.csv"
    if not path.is_file():
        return None
    runs = pd.read_csv(path)
    if grids is not None:
        runs = runs[runs["grid"].isin(list(grids))].reset_index(drop=True)
    shown = path.relative_to(repo_root()) if path.resolve().is_relative_to(repo_root()) else path
    commits = ", ".join(sorted(runs["git_commit"].dropna().astype(str).unique())) or "unknown"
    label = (f"**Loaded, not computed in this run:** `{shown}` (budget `{budget}`, {runs['seed'].nunique()} seed(s), "
             f"{runs['run_id'].nunique()} trainings, code at commit {commits}; written by `make main`).")
    return {"runs": runs, "verdicts": verdicts(runs), "label": label}


def write_report(runs: pd.DataFrame, table: pd.DataFrame, path, budget: str, command: str,
                 wall_seconds: float | None = None, counts: dict | None = None) -> Path:
    """``report.md``: per ingredient, our direction against the paper's claim with its spread (see `verdicts`)."""
    path = Path(path)
    seeds = sorted(set(runs["seed"])) if len(runs) else []
    lines = [f"# gv3lite reproduce — {budget} budget", "",
             f"Command: `{command}`  ", f"Commit: {git_commit()} (runs trained at "
             f"{', '.join(sorted(set(runs['git_commit'].astype(str)))) if 'git_commit' in runs else 'unknown'})  ",
             f"Seeds: {len(seeds)} ({', '.join(map(str, seeds))}); trainings: {runs['run_id'].nunique() if len(runs) else 0}"
             + (f"; this call trained {counts['trained']}, skipped {counts['skipped']}" if counts else "")
             + (f"; wall time {wall_seconds / 60:.1f} min" if wall_seconds is not None else "")
             + (f"; training time of all runs {runs.drop_duplicates('run_id')['train_seconds'].sum() / 60:.1f} min "
                "(summed over runs)" if len(runs) and "train_seconds" in runs else ""), "",
             "Verdict rule: diff = mean top-1 of the cell − mean top-1 of the grid's baseline; spread = "
             "sqrt(std_cell² + std_baseline²) over seeds. |diff| ≤ spread (or one seed) → **inconclusive**; "
             "otherwise the direction **agrees** or **disagrees** with the paper's claim "
             "(gv3lite/paper_results.csv, each claim with its source). Small data, low resolution and few epochs: "
             "a disagreement here says how the ingredient behaves at this scale, not that the paper is wrong. "
             "Cells with the same run id in runs.csv are one training (the same resolved recipe), e.g. "
             "architectures/ghostnetv2/* and recipe/*; schedule/no_ema reads the raw weights of the EMA run. "
             "top-1 is of the EMA weights when the cell keeps an EMA, top-5 always of the raw weights.", "",
             "| grid | ingredient (cell vs baseline) | diff (pp) | spread (pp) | n | paper claim | verdict |",
             "|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        lines.append(f"| {r.grid} | {r.cell} vs {r.baseline} | {r.diff:+.2f} | "
                     f"{'n/a' if r.spread != r.spread else f'{r.spread:.2f}'} | {r.n_cell} / {r.n_baseline} | "
                     f"{r.paper_claim} | {r.verdict} |")
    if table.empty:
        lines.append("| – | no grid has both a baseline and another cell in this run | | | | | |")
    path.write_text("\n".join(lines) + "\n")
    return path


# ------------------------------------------------------------------------------------------------- figures
def plot_grids(runs: pd.DataFrame, summary: pd.DataFrame, budget: str, command: str) -> list[Path]:
    """One figure per grid (``gv3lite.figures.plot_grid``), saved as ``ablation_<grid>.png`` by ``figures.savefig``."""
    import matplotlib.pyplot as plt  # lazy: pyplot is slow to import and only figures need it
    paths = []
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
        paths.append(savefig(fig, f"ablation_{grid}", budget=budget, command=command))
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
    p.add_argument("--budget", default=None, choices=list(BUDGETS), help="smoke | quick | full (default: "
                                                                          "$GV3LITE_BUDGET, else smoke)")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default: the budget's)")
    p.add_argument("--out", default="results", help="results root; files go to OUT/<budget>/ (default results)")
    p.add_argument("--grids", default=None, help=f"comma-separated subset of {','.join(GRIDS)}")
    p.add_argument("--data", help="ImageFolder root (default: $GV3LITE_DATA or ../shared/data/imagenette2-224)")
    p.add_argument("--figures", default=None, help="figure folder (default: $GV3LITE_FIGURES, else the git-ignored "
                                                   "runs/figures/<budget>; make main passes --figures figures)")
    p.add_argument("--list", action="store_true", help="print the plan (grid, cell, seed, run id) and exit")
    p.add_argument("--jobs", type=int, default=1, help="trainings at once, each with (threads // jobs) threads "
                                                       "(default 1; 2 on a 2-core CPU is ~1.8x faster)")
    p.add_argument("--verbose", action="store_true", help="progress bars and per-epoch lines (with --jobs 1 only)")
    p.set_defaults(func=run_reproduce)


def run_reproduce(args) -> int:
    budget = args.budget or env_budget()
    # `--grids ""` or `--grids ,,` name no grid: `plan` rejects that instead of running all of them
    grids = [g.strip() for g in args.grids.split(",") if g.strip()] if args.grids is not None else None
    if args.list:
        for it in plan(budget, grids, args.seeds):
            print(f"{it['grid']:14s} {it['cell']:30s} seed {it['seed']}  {it['run_id']}")
        return 0
    if args.figures:
        os.environ["GV3LITE_FIGURES"] = args.figures
    result = reproduce(budget, args.seeds, args.out, grids, args.data, quiet=not args.verbose, jobs=args.jobs)
    print(f"trained {result['trained']} (resumed {result['resumed']}), skipped {result['skipped']} finished runs")
    print(result["summary"].to_string(index=False))
    print(f"-> {result['out_dir']}/runs.csv, summary.csv, summary.md, report.md; figures: "
          + ", ".join(str(p) for p in result["figures"]))
    return 0
