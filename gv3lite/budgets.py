"""Every budget of the project, in one place: names, the study's run sizes, their half-width targets, and the
notebooks' sizes.

Owns: `BUDGET_NAMES` (``smoke`` CI minutes, ``quick`` a 2-core CPU, 20-60 min per factorial block, ``medium`` all of
Imagenette on a 2-core CPU, ~2 h 15 min per block, ``full`` a GPU), `budget` (the budget named by
``GV3LITE_BUDGET``), `BUDGETS` (the study's sizes, applied on top of every cell's recipe by ``gv3lite.study``), `NOT_RECIPE_FIELDS`, `HALF_WIDTH_TARGETS` (pp, declared
before the runs), `FACTORIAL_BLOCKS` (the factorial's looks and time), `NOTEBOOK_SIZES` / `notebook_sizes` (what
each notebook in ``notebooks/`` computes at each budget).
Nothing else defines a budget: the notebooks, the Makefile's targets and the tests read them from here. Imports no
gv3lite module.
"""
from __future__ import annotations

import os

BUDGET_NAMES = ("smoke", "quick", "medium", "full")


def budget() -> str:
    """The run budget from ``GV3LITE_BUDGET``: ``smoke`` (CI, minutes; the default), ``quick`` (a 2-core CPU,
    20-60 min per block of the factorial study, by the machine: its first look, 2 blocks, took 41 min on the committed
    study's machine), ``medium`` (all of Imagenette on a 2-core CPU, ~2 h 15 min per block, over one or more sittings:
    2 blocks took 4 h 30 min) or ``full`` (a GPU). Raises ``ValueError`` for any other value."""
    value = os.environ.get("GV3LITE_BUDGET", "smoke").strip().lower()
    if value not in BUDGET_NAMES:
        raise ValueError(f"GV3LITE_BUDGET={value!r} is not a budget; set it to one of {BUDGET_NAMES}")
    return value


def check_budget(name: str) -> str:
    """``name`` when it is one of `BUDGET_NAMES`; else ``ValueError`` naming the choices."""
    if name not in BUDGET_NAMES:
        raise ValueError(f"unknown budget {name!r}; choose one of {list(BUDGET_NAMES)}")
    return name


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
                  warmup_epochs=0.0, ema_decay=0.9, eval_every=1, seeds=1, model="ghostnetv3_050", arch_width="050",
                  tuning="exclude"),
    "quick": dict(images_per_class_train=300, images_per_class_val=None, img_size=48, epochs=10, batch_size=32,
                  warmup_epochs=1.0, lr=2e-3, ema_decay=0.99, eval_every=10, seeds=3, model="ghostnetv3_050",
                  arch_width="050", tuning="exclude", precise_bn=True, flip_tta=True),
    "medium": dict(images_per_class_train=None, images_per_class_val=None, img_size=48, epochs=6, batch_size=32,
                   warmup_epochs=0.5, lr=2e-3, ema_decay=0.994, eval_every=6, seeds=3, model="ghostnetv3_050",
                   arch_width="050", tuning="exclude", precise_bn=True, flip_tta=True),
    "full": dict(images_per_class_train=None, images_per_class_val=None, img_size=224, epochs=100, batch_size=128,
                 warmup_epochs=3.0, ema_decay=0.9998, eval_every=5, seeds=3, model="ghostnetv3_050",
                 arch_width="100", tuning="exclude"),
}
# tuning="exclude" in every budget: every student of the study trains on train/ minus the tuning split (100 images
# per class that settings are chosen on, gv3lite.data.tuning_split), the images the same-data teacher trained on;
# the study reports on val/ only (issue 22). quick's 300 images per class are drawn from the other ~847 per class.
# EMA decay per budget: about 1 - 10 / (total optimizer steps), so the average spans the last ~tenth of training
# (the paper's decay was not recovered). quick: 93 steps/epoch x 10 epochs = 930 steps -> 0.99; medium: 295 x 6 = 1,770
# steps -> 0.994 (265 x 6 = 1,590 steps without the tuning split: 1 - 10 / 1,590 = 0.9937, still 0.994).
# The regime and its reading (issue 22): benchmarks/variance_pilot.py compared today's regime (above) with 40 px x 11
# epochs and batch 64 x 14 epochs at about the same CPU cost, 6 seeds each, each run read 10 ways, all on the tuning
# split (results/variance_pilot/regimes/summary.md). Its declared rule (lowest SD x sqrt(CPU min) among readings whose
# mean is not lower than today's) chose today's regime read with precise BN statistics and flip averaging: EMA top-1 SD
# 0.91 pp [95% 0.57, 2.22] at mean 37.77% against 1.29 pp [0.80, 3.15] at 36.33% for today's center-crop reading
# (F-test p = 0.46: not a significant drop at 6 seeds). quick and medium read every run that way (precise_bn,
# flip_tta); batch 64 x 14 epochs reached a higher mean (44.0%) at a larger SD (1.7-2.1 pp), 40 px a larger SD still.
NOT_RECIPE_FIELDS = ("seeds", "arch_width")
# pp: the 95% interval half-width each budget was sized for (issue 11), declared before its runs; `sizing_note`
# reports what a study reached against it. `full` has none until it is sized from a GPU measurement.
HALF_WIDTH_TARGETS = {"quick": 2.0, "medium": 1.25}
# The factorial study (gv3lite.study.design, issue 21) adds one block of 16 runs at a time (block b = seed b) and
# looks after blocks first_look..max_blocks (gv3lite.sequential spends alpha over exactly these looks, declared here
# before any run); it stops when every claim is decided, at max_blocks, or once the recorded wall time of its calls
# reaches wall_minutes or another block, at the mean time per block so far, would end past it (from the first look
# on). One block at quick, measured (block 1, 2026-12-06, today's regime read with precise BN and
# flip, `make main`'s command): 16 trainings, 113 min of 1-thread training (278-346 s without branches, 511-584 s with
# them), 59 min of wall time with --jobs 2 on the 2 cores. quick's first look (2 blocks) therefore needs ~2 h, twice
# its 60-minute target: the target needs runs of half this cost, or a first look after one block (error df from the
# unassigned effects instead of replication), a change to be declared before the next block runs. On that machine
# the first committed quick study (trained at 2f93ba1) stopped at its first look, its 60 min spent: 32 trainings,
# 1 h 57 min of wall time over 3 sittings; half-widths 1.82-1.87 pp for the four single-ingredient claims.
# The committed quick study (results/quick) was retrained at 2be104e by `make main` in a fresh clone on a faster
# 2-core machine (an AMD EPYC with AVX512; each training ~2.9x faster, by the train_seconds of the two studies):
# 2 blocks in 40 min 53 s, one call; it stopped because a third block, at ~20 min, would end past 60 min.
# Half-widths 2.22-2.26 pp for the four single-ingredient claims (target 2.0 not met), 6.28 pp for the composite.
# The effect SE is 2 sigma / sqrt(16 r): at sigma 3.0 pp, +-1.25 pp needs ~6 blocks.
FACTORIAL_BLOCKS = {
    "smoke": dict(first_look=1, max_blocks=1, wall_minutes=10),
    "quick": dict(first_look=2, max_blocks=3, wall_minutes=60),
    "medium": dict(first_look=2, max_blocks=6, wall_minutes=150),
    "full": dict(first_look=2, max_blocks=6, wall_minutes=None),
}
assert tuple(BUDGETS) == BUDGET_NAMES, "BUDGET_NAMES and BUDGETS must list the same budgets"

# The notebooks' sizes: what each notebook of notebooks/ computes at each budget (images shown, timing repeats, the
# size of its short trainings). smoke keeps CI (the browser test) in minutes; full is for a GPU. medium is the study's
# budget on all of Imagenette: a notebook whose demonstration does not grow with the data runs its quick sizes there
# (written out below, so that every notebook runs at every budget name). Notebooks 06 and 07 run the study itself and
# take its sizes from `BUDGETS`.
_QUICK = "quick"  # marker: "the same as quick" (see `notebook_sizes`)
NOTEBOOK_SIZES = {
    "00_overview": {"smoke": dict(images_per_class=1), "quick": dict(images_per_class=2), "medium": _QUICK,
                    "full": dict(images_per_class=3)},
    "01_ghost_module": {"smoke": dict(n_images=2), "quick": dict(n_images=10), "medium": _QUICK,
                        "full": dict(n_images=10)},
    # parity_widths: how many of ghostnetv3.MODEL_WIDTHS (0.5x first) the train/deploy parity check builds
    "02_ghostnetv3_architecture": {"smoke": dict(parity_widths=1, parity_img=96),
                                   "quick": dict(parity_widths=4, parity_img=224), "medium": _QUICK,
                                   "full": dict(parity_widths=4, parity_img=224)},
    "03_reparameterization": {"smoke": dict(n_images=4, timing=dict(batch=4, img=96, repeats=3)),
                              "quick": dict(n_images=10, timing=dict(batch=16, img=224, repeats=15)), "medium": _QUICK,
                              "full": dict(n_images=10, timing=dict(batch=32, img=224, repeats=30))},
    "04_knowledge_distillation": {
        "smoke": dict(n_images=3, n_crops=10, train=dict(seeds=(0,), per_class=8, per_class_val=10, img_size=48,
                                                         epochs=2, batch_size=16)),
        "quick": dict(n_images=4, n_crops=60, train=dict(seeds=(0, 1, 2), per_class=50, per_class_val=50, img_size=64,
                                                         epochs=6, batch_size=32)),
        "medium": _QUICK,
        "full": dict(n_images=4, n_crops=200, train=dict(seeds=(0, 1, 2, 3, 4), per_class=200, per_class_val=100,
                                                         img_size=64, epochs=15, batch_size=64))},
    "05_training_recipe": {"smoke": dict(ema_steps=300, n_augmented=4), "quick": dict(ema_steps=1000, n_augmented=6),
                           "medium": _QUICK, "full": dict(ema_steps=1000, n_augmented=6)},
    "07_beyond_ghostnet": {"smoke": dict(n_images=2), "quick": dict(n_images=4), "medium": dict(n_images=4),
                           "full": dict(n_images=8)},
    "08_deployment": {"smoke": dict(timing=dict(repeats=3, batch=8)), "quick": dict(timing=dict(repeats=10, batch=64)),
                      "medium": _QUICK, "full": dict(timing=dict(repeats=20, batch=64))},
    # recipe fields of the end-to-end training
    "09_end_to_end": {
        "smoke": dict(images_per_class_train=8, images_per_class_val=5, img_size=48, epochs=2, batch_size=16,
                      ema_decay=0.99),
        "quick": dict(images_per_class_train=150, images_per_class_val=50, img_size=64, epochs=8, batch_size=64,
                      ema_decay=0.998),
        "medium": _QUICK,
        "full": dict(images_per_class_train=None, images_per_class_val=None, img_size=128, epochs=30, batch_size=64,
                     ema_decay=0.998)},
}


def notebook_sizes(notebook: str, name: str | None = None) -> dict:
    """The sizes notebook ``notebook`` (its file stem, e.g. ``"04_knowledge_distillation"``) uses at budget ``name``
    (default: `budget`), as a new dict. Raises ``KeyError`` for a notebook without sizes (the message lists them) and
    ``ValueError`` for an unknown budget."""
    if notebook not in NOTEBOOK_SIZES:
        raise KeyError(f"no sizes for notebook {notebook!r}; notebooks with sizes: {sorted(NOTEBOOK_SIZES)}")
    name = check_budget(name or budget())
    sizes = NOTEBOOK_SIZES[notebook][name]
    return dict(NOTEBOOK_SIZES[notebook][_QUICK] if sizes == _QUICK else sizes)


assert all(tuple(sizes) == BUDGET_NAMES for sizes in NOTEBOOK_SIZES.values()), "every notebook sizes every budget"
assert tuple(FACTORIAL_BLOCKS) == BUDGET_NAMES, "the factorial needs its looks at every budget"
