"""Two questions about the scope of the study's claims (issue 22, item 4), each answered with its own interval.

The paper's claims are about 600-epoch training of compact models; the study trains for ~1,000 optimizer steps.

* **(a) Does the re-parameterization effect change with training length?** The paper's branches (3 conv branches,
  scale and identity branch) against one plain conv, at the quick budget's length (10 epochs, ~930 steps) and at
  4x the optimizer steps (40 epochs).
* **(b) Is the Mixup/CutMix penalty specific to compact models, or to short training?** Mixup (alpha 0.8) and
  CutMix (alpha 1.0, timm switches between them per batch) against neither, for GhostNetV3 0.5x and 1.3x at 10
  epochs (an interaction with width) and for 0.5x at 10 and 40 epochs (an interaction with length).

Every cell is the ``ghostnetv3`` preset at the quick budget's size (`variance_pilot.BASE`: 300 train images per class,
48 px, batch 32, lr 2e-3) without a teacher, so the contrasts measure the ingredient, not transfer from a teacher.
Students train on ``train/`` minus the tuning split and every number is top-1 of the EMA weights on all of ``val/``,
read as the study reads (`READING`: BN statistics recomputed over the training images, softmax averaged over each
image and its mirror); no setting of these runs was chosen on val. A longer cell scales the warm-up and the EMA
horizon with its length (`LONG`). Seeds pair the cells: seed s of every cell shares its initial weights and batch
order.

The analysis (`analyse`) fits, per question, ``top1 ~ C(seed) + a * b`` by OLS (statsmodels) on the 2 x 2 cells with
0/1 indicators: ``a`` the ingredient (branches; Mixup/CutMix), ``b`` the condition (40 epochs; width 1.3x). It reports
the ingredient's effect at each level of the condition and their difference (the interaction ``a:b``), each with a
95% t interval on the residual degrees of freedom.

Trained by ``benchmarks/device_runs.py`` (a lent GPU) or here on a CPU::

    python benchmarks/scope_questions.py --seeds 0 1 2 3 --out results/scope_questions   # 32 trainings, hours on a CPU
    python benchmarks/scope_questions.py --analyse results/scope_questions/runs.csv        # the intervals only
    python benchmarks/scope_questions.py --analyse A/runs.csv B/runs.csv --report results/scope_questions/report.md

A re-run with the same ``--out`` resumes: the rows of ``runs.csv`` are kept (refused when they are of other training
code, ``gv3lite.fingerprint``, or of another recipe, the row's ``run_id``) and their (cell, seed) pairs are not
trained again. ``--cells`` trains a subset, so two calls with their own ``--out`` can share 2 cores (``--analyse
A/runs.csv B/runs.csv`` pools them).
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import pandas as pd
import statsmodels.formula.api as smf

from gv3lite.data import build_datasets, resolve_data_root
from gv3lite.experiment import run
from gv3lite.fingerprint import code_fingerprint
from gv3lite.recipe import preset
from gv3lite.study.grids import PLAIN
from gv3lite.study.plan import run_id
from gv3lite.utils import git_commit, write_atomic, write_csv

sys.path.insert(0, str(Path(__file__).resolve().parent))
from variance_pilot import BASE  # noqa: E402  (a sibling script, not a package)

LONG = 4  # the long cells train this many times the base's epochs (and optimizer steps)
MIX = dict(mixup_alpha=0.8, cutmix_alpha=1.0)
READING = dict(precise_bn=True, flip_tta=True)  # the study's reading of a run (gv3lite.budgets: quick and medium)
BRANCHES = {}  # the ghostnetv3 preset: 3 conv branches, scale and identity branch


def long(base: dict) -> dict:
    """The base's changes for `LONG` x its epochs: warm-up as the same fraction of training, EMA decay by the
    budgets' rule 1 - 10 / optimizer steps (here scaled from the base's: 1 - (1 - decay) / LONG)."""
    return dict(epochs=base["epochs"] * LONG, warmup_epochs=base["warmup_epochs"] * LONG,
                ema_decay=1 - (1 - base["ema_decay"]) / LONG, eval_every=base["epochs"] * LONG)


def cells(base: dict) -> dict[str, dict]:
    """cell name -> changes from ``base`` (every cell of both questions; shared cells are trained once)."""
    slow = long(base)
    return {"branches/short": dict(BRANCHES), "plain/short": dict(PLAIN), "branches/long": {**BRANCHES, **slow},
            "plain/long": {**PLAIN, **slow}, "mix/short": dict(MIX), "mix/long": {**MIX, **slow},
            "w130/short": dict(model="ghostnetv3_130"), "w130_mix/short": dict(model="ghostnetv3_130", **MIX)}


# question -> (ingredient a, condition b, {(a, b): cell}); the ingredient's effect is cell(a=1) - cell(a=0)
QUESTIONS = {
    "4a reparam x length": ("branches", "long", {(1, 0): "branches/short", (0, 0): "plain/short",
                                                 (1, 1): "branches/long", (0, 1): "plain/long"}),
    "4b mix x width": ("mix", "wide", {(1, 0): "mix/short", (0, 0): "branches/short",
                                       (1, 1): "w130_mix/short", (0, 1): "w130/short"}),
    "4b mix x length": ("mix", "long", {(1, 0): "mix/short", (0, 0): "branches/short",
                                        (1, 1): "mix/long", (0, 1): "branches/long"}),
}


def recipe_of(cell: str, seed: int, sets: dict | None = None):
    """The resolved Recipe of ``cell`` at ``seed`` (the base with ``sets`` applied first, e.g. a smoke size)."""
    base = {**BASE, **READING, **(sets or {})}
    return preset("ghostnetv3", **{**base, **cells(base)[cell]}).replace(seed=seed)


def datasets_for(recipe, data):
    """(train minus the tuning split, all of val) at the recipe's size, decoded once per image size."""
    return build_datasets(data, recipe.img_size, classes=recipe.classes,
                          images_per_class_train=recipe.images_per_class_train,
                          images_per_class_val=recipe.images_per_class_val, seed=recipe.data_seed,
                          auto_augment=recipe.auto_augment, random_erasing=recipe.random_erasing,
                          scale=(recipe.min_crop_scale, 1.0), tuning="exclude")


def train_cell(recipe, data, datasets, device: str = "cpu") -> dict:
    """Train ``recipe`` once; its final val top-1 (%) of the raw and EMA weights, wall seconds and train images."""
    t0 = time.perf_counter()
    history = run(recipe, data, out_dir=None, quiet=True, datasets=datasets, device=device)
    last = history.iloc[-1]
    return {"top1_raw": float(last.val_top1), "top1_ema": float(last.ema_top1),
            "train_seconds": time.perf_counter() - t0, "train_images": len(datasets[0]),
            "epochs": recipe.epochs, "model": recipe.model}


def analyse(runs: pd.DataFrame, column: str = "top1_ema") -> pd.DataFrame:
    """Per question of `QUESTIONS`, three rows: the ingredient's effect (pp) at the condition's low and high level
    and the interaction (high minus low), each with its 95% interval and p-value from ``top1 ~ C(seed) + a * b``
    (OLS; seeds with all four cells only), the seeds used and the residual SD and df. A question without two
    complete seeds gives NaN rows."""
    rows = []
    for question, (a, b, grid) in QUESTIONS.items():
        part = runs[runs["cell"].isin(grid.values())]
        full = part.groupby("seed")["cell"].nunique()
        part = part[part["seed"].isin(full[full == 4].index)]
        coded = {cell: key for key, cell in grid.items()}
        data = part.assign(a=[coded[c][0] for c in part["cell"]], b=[coded[c][1] for c in part["cell"]],
                           y=part[column])
        seeds = data["seed"].nunique()
        fit = smf.ols("y ~ C(seed) + a * b", data=data).fit() if seeds >= 2 else None
        for label, contrast in ((f"{a} at {b}=0", "a = 0"), (f"{a} at {b}=1", "a + a:b = 0"),
                                (f"interaction {a} x {b}", "a:b = 0")):
            row = {"question": question, "contrast": label, "seeds": seeds}
            if fit is not None:
                test = fit.t_test(contrast)
                lo, hi = test.conf_int(alpha=0.05)[0]
                row.update(estimate=float(test.effect[0]), lo95=float(lo), hi95=float(hi),
                           p=float(test.pvalue), residual_sd=float(fit.mse_resid ** 0.5), df=int(fit.df_resid))
            rows.append(row)
    table = pd.DataFrame(rows)
    return table.astype({"df": "Int64"}) if "df" in table else table  # whole numbers, <NA> without a fit


def markdown(table: pd.DataFrame, header: str) -> str:
    """``table`` (from `analyse`) as a Markdown section under ``header``."""
    cols = list(table.columns)
    lines = [header, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in table.itertuples(index=False):
        lines.append("| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def report(runs: pd.DataFrame, files: list[str], seeds: int = 4) -> str:
    """The committed report of recorded ``runs`` (pooled from ``files``): what was trained out of the declared
    ``seeds`` x 8 cells, each cell's EMA top-1 (n, mean, SD), the intervals of `analyse`, and the provenance (the
    commands, commits and code fingerprints of the rows, and their training hours)."""
    per_cell = runs.groupby("cell").agg(n=("seed", "nunique"), mean_top1_ema=("top1_ema", "mean"),
                                        sd_top1_ema=("top1_ema", "std"), mean_minutes=("train_seconds", "mean"))
    per_cell = per_cell.assign(mean_minutes=per_cell["mean_minutes"] / 60).reindex(list(cells(BASE))).reset_index()
    per_cell = per_cell.assign(n=per_cell["n"].fillna(0).astype(int))
    table = analyse(runs)
    complete = table.groupby("question")["seeds"].first()
    lines = ["# Scope questions (issue 22, item 4)", "",
             f"Trainings recorded: {len(runs)} of the declared {seeds * len(cells(BASE))} ({seeds} seeds x "
             f"{len(cells(BASE))} cells). Complete seeds per question: "
             + ", ".join(f"{q} {int(n)}" for q, n in complete.items())
             + " (a question needs 2 complete seeds for an interval; NaN until then).", "",
             "Every number is EMA top-1 (%) on all of Imagenette's val/ (3,925 images), read with precise BN and "
             f"flip averaging; students train on {BASE['images_per_class_train']} images per class of train/ minus "
             f"the tuning split, at {BASE['img_size']} px, without a teacher (benchmarks/scope_questions.py's "
             "docstring gives the design).", "",
             markdown(per_cell, "## Cells").rstrip(), "", markdown(table, "## Effects (pp), 95% intervals").rstrip(),
             "", "## Provenance", "",
             f"Recorded in: {', '.join(files)}  ",
             f"Commits: {', '.join(sorted(set(runs['git_commit'].astype(str))))}  ",
             f"Code fingerprints: {', '.join(sorted(set(runs['code_fingerprint'].astype(str))))}  ",
             f"Training time: {runs['train_seconds'].sum() / 3600:.2f} h summed over the trainings (the wall time of "
             "each; the per-cell mean above, in minutes; trainings may have shared cores)  ",
             "Commands (each trained into its own --out; the rows were pooled here):", ""]
    lines += [f"    {c}" for c in sorted(set(runs["command"].astype(str)))]
    return "\n".join(lines) + "\n"


def recorded_rows(file: Path, fingerprint: str) -> pd.DataFrame:
    """The rows of an earlier call's ``runs.csv`` (``file``), kept and extended by this call; an empty table when
    there is none. Raises ``ValueError`` when they were trained by other training code (`code_fingerprint` of
    ``gv3lite.fingerprint``, the study's) or by another recipe than `recipe_of` gives today (the row's ``run_id``),
    whose numbers cannot be pooled with today's: move the folder away or give another ``--out``."""
    if not file.is_file():
        return pd.DataFrame()
    rows = pd.read_csv(file)
    other = sorted(set(rows["code_fingerprint"].astype(str)) - {fingerprint})
    if other:
        raise ValueError(f"{file} holds runs of other training code (fingerprint {', '.join(other)}; current "
                         f"{fingerprint}): move {file.parent} away or give another --out")
    ids = rows["run_id"].astype(str) if "run_id" in rows else pd.Series("", index=rows.index)  # older rows: none
    changed = [f"{r.cell} seed {r.seed}" for r, rid in zip(rows.itertuples(), ids)
               if r.cell not in cells(BASE) or rid != run_id(recipe_of(r.cell, int(r.seed)))]
    if changed:
        raise ValueError(f"{file} holds runs whose recipe is no longer this script's ({', '.join(changed)}): "
                         f"move {file.parent} away or give another --out")
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="ImageFolder root (default: GV3LITE_DATA or the repo's data)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--cells", nargs="+", default=None, choices=list(cells(BASE)),
                        help="train only these cells (default: all); e.g. two calls with their own --out at once")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--analyse", default=None, nargs="+", metavar="RUNS_CSV",
                        help="analyse recorded runs (one or more runs.csv, pooled); train nothing")
    parser.add_argument("--report", default=None, metavar="MD", help="with --analyse: also write the report there")
    parser.add_argument("--out", default="results/scope_questions")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.report and not args.analyse:
        parser.error("--report goes with --analyse (it reports recorded runs)")
    if args.analyse:
        runs = pd.concat([pd.read_csv(f) for f in args.analyse], ignore_index=True)
        twice = runs[runs.duplicated(["cell", "seed"], keep=False)][["cell", "seed"]].drop_duplicates()
        if len(twice):
            print(f"scope_questions: error: {', '.join(f'{c} seed {s}' for c, s in twice.itertuples(index=False))} "
                  "recorded more than once in the pooled files: give each training's runs.csv once", file=sys.stderr)
            return 2
        print(markdown(analyse(runs), f"# Scope questions ({', '.join(args.analyse)})"))
        if args.report:
            write_atomic(args.report, report(runs, args.analyse, seeds=len(args.seeds)))
            print(f"wrote {args.report}")
        return 0
    data, command = resolve_data_root(args.data), "python " + " ".join(shlex.quote(a) for a in sys.argv)
    try:  # a re-run resumes: the recorded (cell, seed) pairs are kept and not trained again
        fingerprint = code_fingerprint()  # of the code this call runs, read at its start
        recorded = recorded_rows(out / "runs.csv", fingerprint)
    except ValueError as err:
        print(f"scope_questions: error: {err}", file=sys.stderr)
        return 2
    rows = recorded.to_dict("records")
    done = {(r["cell"], int(r["seed"])) for r in rows}
    cache = {}
    for seed in args.seeds:
        for cell in args.cells or cells(BASE):
            if (cell, seed) in done:
                continue
            recipe = recipe_of(cell, seed)
            if recipe.img_size not in cache:
                cache[recipe.img_size] = datasets_for(recipe, data)
            result = train_cell(recipe, data, cache[recipe.img_size], args.device)
            rows.append({"cell": cell, "seed": seed, **result, "run_id": run_id(recipe), "git_commit": git_commit(),
                         "code_fingerprint": fingerprint, "command": command})
            write_csv(pd.DataFrame(rows), out / "runs.csv")
            print(f"{cell:16s} seed {seed}: EMA top-1 {result['top1_ema']:.2f}%", flush=True)
    print(markdown(analyse(pd.DataFrame(rows)), "# Scope questions"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
