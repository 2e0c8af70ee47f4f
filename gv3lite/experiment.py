"""The composition root: a `Recipe` becomes built objects, and `run` trains them with ``gv3lite.train.fit``.

Owns: ``check_names`` (the recipe's names, each checked by its registry), ``init_student`` (the recipe's model,
``gv3lite.models.build_model``, on its own random stream), ``recipe_datasets`` (its (train, val) pair), ``build_optimizer``
(timm ``create_optimizer_v2``), ``build_scheduler`` (torch ``OneCycleLR`` or timm ``create_scheduler_v2``, built
once the loader length is known), ``build_objective`` (``gv3lite.distill.Objective`` from the recipe's label
smoothing and KD fields), ``build_teacher_outputs`` (``gv3lite.teacher_outputs.make_kd`` from the recipe's teacher),
``loop_settings``, ``run`` (the one place where a recipe is turned into a training run: seeding, datasets, teacher,
model, optimizer, loaders, schedule, objective, EMA (timm ``ModelEmaV3``), Mixup/CutMix (timm ``Mixup``), the
callbacks of ``gv3lite.callbacks``, then ``fit``), and small experiments built on it (``compare_kd_modes``).
``gv3lite.study``, ``gv3lite.cli``, ``benchmarks/`` and the notebooks go through here.

Determinism and common random numbers: the student is initialized from its own random stream (`init_student`:
torch's generator forked and seeded with ``recipe.seed``), so neither the dataset build nor the teacher (whose own
construction draws random numbers before its weights are loaded) changes it. For one seed, every cell whose
architecture matches therefore starts from the same weights, and, as ``gv3lite.train.fit`` re-seeds every epoch from
the seed, sees the same batches and crops (issue 11: paired cells, ``tests/test_train.py``).
"""
from __future__ import annotations

import dataclasses
import os

import pandas as pd
import torch
from timm.data import Mixup
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3

from gv3lite.callbacks import run_callbacks
from gv3lite.data import build_datasets, count_images, list_classes, plan_data_path, resolve_data_root
from gv3lite.distill import Objective, check_kd_loss
from gv3lite.distributed import setup_distributed
from gv3lite.models import build_model, check_model_name
from gv3lite.recipe import Recipe
from gv3lite.teacher import check_teacher
from gv3lite.teacher_outputs import CachedKD, OnlineKD, check_kd_mode, make_kd
from gv3lite.train import LoopSettings, TrainObjects, build_loaders, fit
from gv3lite.utils import seed_everything


# ------------------------------------------------------------------------------------------- builders
def check_names(recipe: Recipe) -> None:
    """Check the recipe's names against the registries that own them: ``model`` (``gv3lite.models``), ``teacher``
    (``gv3lite.teacher``, when not None), ``kd_mode`` (``gv3lite.teacher_outputs``) and ``kd_loss``
    (``gv3lite.distill``). Raises ``ValueError`` ``recipe.<field>: <the registry's message>``."""
    checks = {"model": check_model_name, "teacher": check_teacher, "kd_mode": check_kd_mode, "kd_loss": check_kd_loss}
    for name, check in checks.items():
        value = getattr(recipe, name)
        if value is None and name == "teacher":
            continue
        try:
            check(value)
        except ValueError as err:
            raise ValueError(f"recipe.{name}: {err}") from None


def init_student(recipe: Recipe, num_classes: int) -> torch.nn.Module:
    """`build_model` on the student's own random stream: torch's global generator is forked, seeded with
    ``recipe.seed`` for the initialization and restored afterwards, so the initial weights depend on the seed and the
    architecture only (not on what drew random numbers before, e.g. a teacher), and nothing after depends on them."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        return build_model(recipe, num_classes)


def recipe_datasets(recipe: Recipe, root, return_crop_info: bool = False, progress: bool = False,
                    cache: bool | None = None):
    """The (train, val) pair ``gv3lite.data.build_datasets`` gives for the recipe's data fields (size, classes,
    subset sizes drawn with ``data_seed``, ``tuning``: train/ with or without the tuning split, cache, augmentation,
    crop scale) from the ImageFolder ``root``;
    ``cache`` overrides ``recipe.cache`` (``run`` does so when the cache would not fit, see `choose_data_path`)."""
    return build_datasets(root, recipe.img_size, classes=recipe.classes,
                          images_per_class_train=recipe.images_per_class_train,
                          images_per_class_val=recipe.images_per_class_val, seed=recipe.data_seed,
                          cache=recipe.cache if cache is None else cache,
                          auto_augment=recipe.auto_augment, random_erasing=recipe.random_erasing,
                          return_crop_info=return_crop_info, scale=(recipe.min_crop_scale, 1.0), progress=progress,
                          tuning=recipe.tuning)


def build_optimizer(recipe: Recipe, model: torch.nn.Module) -> torch.optim.Optimizer:
    """timm ``create_optimizer_v2`` (no weight decay on biases and norm parameters)."""
    return create_optimizer_v2(model, opt=recipe.opt, lr=recipe.lr, weight_decay=recipe.weight_decay,
                               momentum=recipe.momentum)


def build_scheduler(recipe: Recipe, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    """A per-step learning-rate schedule.

    ``onecycle``: one-cycle (torch ``OneCycleLR``: cosine warm-up from ``warmup_lr`` to ``lr`` over
    ``warmup_epochs``, cosine decay to ``min_lr``, constant momentum); ``cosine`` / ``step``: timm ``create_scheduler_v2`` with a linear
    warm-up from ``warmup_lr`` (step: ×0.1 every third of the run). Advance it with ``gv3lite.train.scheduler_step``.
    """
    if recipe.sched == "onecycle":
        total = recipe.epochs * steps_per_epoch
        if total < 5:
            raise ValueError(f"sched='onecycle' needs at least 5 optimizer steps, this run has {total}; "
                             "use sched='cosine' or more epochs/images")
        warmup = min(max(recipe.warmup_epochs * steps_per_epoch, 2), total - 2)  # both phases >= 2 steps
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=recipe.lr, total_steps=total, pct_start=warmup / total,
            anneal_strategy="cos", cycle_momentum=False, div_factor=recipe.lr / max(recipe.warmup_lr, 1e-12),
            final_div_factor=max(recipe.warmup_lr, 1e-12) / max(recipe.min_lr, 1e-12))
    scheduler, _ = create_scheduler_v2(
        optimizer, sched=recipe.sched, num_epochs=recipe.epochs, warmup_epochs=recipe.warmup_epochs,
        warmup_lr=recipe.warmup_lr, min_lr=recipe.min_lr, decay_epochs=max(recipe.epochs / 3, 1),
        step_on_epochs=False, updates_per_epoch=steps_per_epoch)
    return scheduler


def build_teacher_outputs(recipe: Recipe, train_dataset, device="cpu", progress: bool = True) -> CachedKD | OnlineKD:
    """``gv3lite.teacher_outputs.make_kd`` with ``recipe.teacher`` and ``recipe.kd_mode``: the supplier of the
    teacher's logits; ``progress``: a progress bar while the teacher fills the cache."""
    return make_kd(recipe.teacher, train_dataset, mode=recipe.kd_mode, device=device, progress=progress)


def build_objective(recipe: Recipe) -> Objective:
    """The training objective of the recipe (``gv3lite.distill.Objective``): ``label_smoothing``, ``kd_alpha``,
    ``kd_temperature``, ``kd_loss`` (the KD fields act only when the run has a teacher)."""
    return Objective(label_smoothing=recipe.label_smoothing, alpha=recipe.kd_alpha,
                     temperature=recipe.kd_temperature, kd_loss=recipe.kd_loss)


def loop_settings(recipe: Recipe) -> "LoopSettings":
    """The recipe's fields the loop itself needs (``gv3lite.train.LoopSettings``)."""
    return LoopSettings(epochs=recipe.epochs, batch_size=recipe.batch_size, seed=recipe.seed,
                        eval_every=recipe.eval_every, num_workers=recipe.num_workers, precise_bn=recipe.precise_bn,
                        flip_tta=recipe.flip_tta)


def choose_data_path(recipe: Recipe, root, device, log=print) -> tuple[str, LoopSettings]:
    """How the recipe's training images reach ``device`` (``gv3lite.data.plan_data_path``, logged with its reason):
    ``"cache"`` (the recipe's uint8 cache, batched augmentation on the device), ``"decode_on_device"`` (no cache; the
    trainer's batched loader decodes each batch's JPEGs on the GPU) or ``"workers"`` (no cache; DataLoader worker
    processes, one per CPU). ``recipe.cache=False`` is respected as it is. Returns ``(path, loop settings)``."""
    settings = loop_settings(recipe)
    if not recipe.cache:
        return "workers" if settings.num_workers else "uncached", settings
    per_class = recipe.images_per_class_train
    n = (count_images(root, "train", recipe.classes) if per_class is None
         else per_class * len(recipe.classes or list_classes(root)))
    path, reason = plan_data_path(n, recipe.img_size, device)
    log(f"data path: {path} ({reason})")
    if path == "workers":
        settings = dataclasses.replace(settings, num_workers=os.cpu_count() or 1)
    return path, settings


# ------------------------------------------------------------------------------------------------ run
def run(recipe: Recipe, data_root=None, out_dir=None, device="cpu", resume: bool = False, quiet: bool = False,
        kd=None, datasets=None, max_epochs: int | None = None, sync_bn: bool = False,
        compile_model: bool = False) -> pd.DataFrame:
    """Train ``recipe`` on ``data_root`` (see ``gv3lite.data.resolve_data_root``); return ``fit``'s per-epoch history.

    ``kd``: a prebuilt teacher-output supplier (``gv3lite.teacher_outputs``; default: built from ``recipe.teacher``,
    or none); the objective's KD weight, temperature and loss are the recipe's. ``datasets``: a prebuilt ``(train,
    val)`` pair (skips data loading). ``out_dir`` (None: write nothing), ``resume`` (continue from
    ``out_dir/last.pth``; the recipe is the run's config: ``recipe.yaml``, checked on resume), ``quiet`` (no progress
    output): the callbacks of ``gv3lite.callbacks.run_callbacks``. ``max_epochs``: stop early. ``sync_bn``:
    SyncBatchNorm under torchrun on GPUs (``gv3lite.distributed.with_sync_bn``); ``compile_model``: train steps
    through ``torch.compile`` (see ``gv3lite.train.fit``; not a recipe field: it is meant to change speed, not what
    is learned, though compiled kernels may round differently). Raises ``FileNotFoundError`` (resume without
    ``last.pth``, before any data is read), ``ValueError`` (a name no registry knows, `check_names`;
    ``recipe.num_classes`` differs from the data's) and what the builders and ``fit`` raise.
    """
    check_names(recipe)
    callbacks = run_callbacks(out_dir, recipe.to_dict(), resume, quiet)
    device = setup_distributed(device)
    seed_everything(recipe.seed)
    settings = loop_settings(recipe)
    if datasets is None:
        root = resolve_data_root(data_root)
        path, settings = choose_data_path(recipe, root, device, log=(lambda *a: None) if quiet else print)
        datasets = recipe_datasets(recipe, root, return_crop_info=kd is not None or recipe.teacher is not None,
                                   progress=not quiet, cache=recipe.cache and path == "cache")
    settings = dataclasses.replace(settings, max_epochs=max_epochs, sync_bn=sync_bn, compile_model=compile_model)
    objects, loaders = build_objects(recipe, datasets, settings, device, kd, progress=not quiet)
    return fit(objects, loaders, settings, callbacks, device)


def build_objects(recipe: Recipe, datasets, settings: LoopSettings, device, teacher=None, progress: bool = True):
    """The ``gv3lite.train.TrainObjects`` and ``Loaders`` of ``recipe`` on ``datasets`` (``teacher``: a prebuilt
    teacher-output supplier, else `build_teacher_outputs` when the recipe names a teacher). The student comes from
    `init_student`; the schedule is built once the train loader's length is known. Raises ``ValueError`` when
    ``recipe.num_classes`` differs from the data's."""
    num_classes = recipe.num_classes or len(datasets[0].classes)
    if num_classes != len(datasets[0].classes):
        raise ValueError(f"recipe.num_classes={num_classes} but the data has {len(datasets[0].classes)} classes")
    if teacher is None and recipe.teacher is not None:
        teacher = build_teacher_outputs(recipe, datasets[0], device, progress=progress)
    model = init_student(recipe, num_classes).to(device)
    optimizer = build_optimizer(recipe, model)
    ema = ModelEmaV3(model, decay=recipe.ema_decay) if recipe.ema else None
    mixup = None
    if recipe.mixup_alpha > 0 or recipe.cutmix_alpha > 0:
        mixup = Mixup(mixup_alpha=recipe.mixup_alpha, cutmix_alpha=recipe.cutmix_alpha,
                      label_smoothing=recipe.label_smoothing, num_classes=num_classes)
    loaders = build_loaders(datasets, settings, device)
    scheduler = build_scheduler(recipe, optimizer, len(loaders.train))
    objects = TrainObjects(model, optimizer, scheduler, build_objective(recipe), ema=ema, mixup=mixup,
                           teacher=teacher)
    return objects, loaders


# ---------------------------------------------------------------------------------------- experiments
def compare_kd_modes(seeds=(0, 1, 2), modes=("plain", "cached", "online"), teacher: str = "efficientnet_lite0",
                     per_class: int = 25, per_class_val: int = 50, img_size: int = 40, epochs: int = 5,
                     alpha: float = 0.5, temperature: float = 1.0, data_root=None, quiet: bool = True, classes=None,
                     **recipe_kw) -> pd.DataFrame:
    """Train the same small student with no KD (``'plain'``), cached KD and online KD, for several seeds.

    A class-balanced subset (``per_class`` train / ``per_class_val`` val images per class of ``classes``, default
    all) at ``img_size`` px keeps it small; the subset is the same for every seed (seeds vary initialization and
    batch order); online KD runs the teacher on every crop at its own resolution, so it dominates the cost (about
    ``per_class * len(classes) * epochs`` teacher passes per seed). Returns a ``pandas.DataFrame`` with one row per
    (mode, seed): ``mode``, ``seed``, ``val_top1`` (% after the last epoch), ``train_seconds`` (sum of epoch times).
    The label maps are cached on disk, so their one-off cost is not in ``train_seconds``.
    """
    datasets = build_datasets(resolve_data_root(data_root), img_size, classes=classes,
                              images_per_class_train=per_class, images_per_class_val=per_class_val,
                              return_crop_info=True)
    kds = {m: None if m == "plain" else make_kd(teacher, datasets[0], mode=m, progress=not quiet) for m in modes}
    rows = []
    for seed in seeds:
        for mode in modes:
            recipe = Recipe(img_size=img_size, epochs=epochs, seed=seed, classes=classes, kd_alpha=alpha,
                            kd_temperature=temperature, **recipe_kw)
            history = run(recipe, datasets=datasets, kd=kds[mode], quiet=quiet)
            rows.append({"mode": mode, "seed": seed, "val_top1": float(history["val_top1"].iloc[-1]),
                         "train_seconds": float(history["seconds"].sum())})
            if not quiet:
                print(rows[-1], flush=True)
    return pd.DataFrame(rows)
