"""The training loop: `fit`, `train_one_epoch`, `evaluate`.

Owns: building the model/optimizer/schedule/EMA from a `Recipe` (optimizers via timm ``create_optimizer_v2``,
cosine/step schedules via timm ``create_scheduler_v2``, one-cycle via ``torch.optim.lr_scheduler.OneCycleLR``,
EMA via timm ``ModelEmaV3``, mixup/cutmix via timm ``Mixup``), the run directory (``recipe.yaml``,
``run_info.json``, ``metrics.csv``, atomic ``last.pth`` / ``best.pth``), exact resume, and DDP under ``torchrun``.

Determinism: the model is initialized right after ``seed_everything(recipe.seed)``; every epoch then
re-seeds Python, NumPy, torch and the sampler's generator from ``(seed, epoch, rank)``. An epoch therefore
depends only on the weights/optimizer/EMA state at its start, which is what a checkpoint stores — so a
resumed run reproduces an uninterrupted one bit for bit (on the same machine and thread count).

Knowledge-distillation hook (implemented in ``gv3lite/distill.py``). ``fit(..., kd=obj)`` or
``recipe.teacher`` (then ``gv3lite.distill.build_kd(recipe, train_dataset, device)`` builds ``obj``).
The protocol ``obj`` must follow:

* ``obj.alpha`` — float in [0, 1], the KD weight (``recipe.kd_alpha``);
* ``obj(student_logits, images, targets, info) -> loss_kd`` — a scalar tensor, **already multiplied by alpha**
  (and by T² if the loss wants it); ``student_logits`` (B, num_classes), ``images`` (B, 3, H, W) normalized,
  ``targets`` (B,) int64, ``info`` the crop-info dict of the batch (``index`` (B,), ``box`` (B, 4),
  ``flip`` (B,); see `gv3lite.data`);
* the training loss is then ``(1 - alpha) * CE(student_logits, targets) + loss_kd``.

Mixup/CutMix together with KD raises ``NotImplementedError`` for now.
"""
from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from gv3lite.data import build_datasets, build_loader, resolve_data_root
from gv3lite.recipe import Recipe
from gv3lite.reparam import reparameterize
from gv3lite.utils import git_commit, resolve_device, seed_everything


# ------------------------------------------------------------------------------------------- builders
def build_model(recipe: Recipe, num_classes: int) -> torch.nn.Module:
    """The train-form GhostNetV3 of the recipe (``gv3lite.create_model``)."""
    import gv3lite
    return gv3lite.create_model(recipe.model, num_classes=num_classes, num_conv_branches=recipe.num_conv_branches,
                                use_scale_branch=recipe.use_scale_branch,
                                use_identity_branch=recipe.use_identity_branch, drop_rate=recipe.drop_rate)


def recipe_datasets(recipe: Recipe, root, return_crop_info: bool = False, progress: bool = False):
    """The (train, val) pair ``gv3lite.data.build_datasets`` gives for the recipe's data fields (size, classes,
    subset sizes drawn with ``data_seed``, cache, augmentation, crop scale) from the ImageFolder ``root``."""
    return build_datasets(root, recipe.img_size, classes=recipe.classes,
                          images_per_class_train=recipe.images_per_class_train,
                          images_per_class_val=recipe.images_per_class_val, seed=recipe.data_seed, cache=recipe.cache,
                          auto_augment=recipe.auto_augment, random_erasing=recipe.random_erasing,
                          return_crop_info=return_crop_info, scale=(recipe.min_crop_scale, 1.0), progress=progress)


def build_optimizer(recipe: Recipe, model: torch.nn.Module) -> torch.optim.Optimizer:
    """timm ``create_optimizer_v2`` (no weight decay on biases and norm parameters)."""
    from timm.optim import create_optimizer_v2
    return create_optimizer_v2(model, opt=recipe.opt, lr=recipe.lr, weight_decay=recipe.weight_decay,
                               momentum=recipe.momentum)


def build_scheduler(recipe: Recipe, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    """A per-step learning-rate schedule.

    ``onecycle``: one-cycle (torch ``OneCycleLR``: cosine warm-up from ``warmup_lr`` to ``lr`` over
    ``warmup_epochs``, cosine decay to ``min_lr``, constant momentum); ``cosine`` / ``step``: timm ``create_scheduler_v2`` with a linear
    warm-up from ``warmup_lr`` (step: ×0.1 every third of the run). Advance it with `scheduler_step`.
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
    from timm.scheduler import create_scheduler_v2
    scheduler, _ = create_scheduler_v2(
        optimizer, sched=recipe.sched, num_epochs=recipe.epochs, warmup_epochs=recipe.warmup_epochs,
        warmup_lr=recipe.warmup_lr, min_lr=recipe.min_lr, decay_epochs=max(recipe.epochs / 3, 1),
        step_on_epochs=False, updates_per_epoch=steps_per_epoch)
    return scheduler


def scheduler_step(scheduler, global_step: int) -> None:
    """Advance the schedule after optimizer step number ``global_step`` (1-based)."""
    if isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR):
        if scheduler.last_epoch < scheduler.total_steps - 1:  # OneCycleLR has total_steps lr values: 0 .. total-1
            scheduler.step()
    elif isinstance(scheduler, torch.optim.lr_scheduler.LRScheduler):
        scheduler.step()
    else:
        scheduler.step_update(num_updates=global_step)


def _epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    return (seed * 1_000_003 + epoch * 1_009 + rank) % 2**63


def _reseed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ------------------------------------------------------------------------------------------ one epoch
def train_one_epoch(model, loader, optimizer, scheduler, device, epoch: int = 0, start_step: int = 0,
                    label_smoothing: float = 0.0, ema=None, mixup=None, kd=None, quiet: bool = False) -> dict:
    """One pass over ``loader``; returns ``dict(train_loss, lr, steps)``.

    ``loader`` yields ``(images (B,3,H,W), targets (B,))`` or ``(images, targets, info)``. The loss is
    cross-entropy with ``label_smoothing`` (soft-target CE when ``mixup`` — a timm ``Mixup`` — is given),
    combined with ``kd`` as described in the module docstring. ``start_step`` is the global step count before
    this epoch (for the schedule and the EMA). ``lr`` is the learning rate of the last step.
    """
    if mixup is not None and kd is not None:
        raise NotImplementedError("mixup/cutmix together with knowledge distillation is not supported yet; "
                                  "set mixup_alpha=cutmix_alpha=0 or teacher=None")
    model.train()
    device = torch.device(device)
    total, count, step = 0.0, 0, start_step
    bar = tqdm(loader, desc=f"epoch {epoch + 1} train", disable=quiet, leave=False)
    for batch in bar:
        images, targets = _to_device(batch[0], device), batch[1].to(device, non_blocking=True)
        info = batch[2] if len(batch) > 2 else None
        with autocast(device):
            if mixup is not None:
                images, soft = mixup(images, targets)
                logits = model(images)
                loss = torch.sum(-soft * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
            else:
                logits = model(images)
                loss = F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)
            if kd is not None:
                loss = (1 - kd.alpha) * loss + kd(logits.float(), images, targets, info)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {step}; lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        scheduler_step(scheduler, step)
        if ema is not None:
            ema.update(_unwrap(model), step=step)
        total += loss.item() * len(targets)
        count += len(targets)
        bar.set_postfix(loss=f"{total / count:.3f}")
    return {"train_loss": total / max(count, 1), "lr": optimizer.param_groups[0]["lr"], "steps": step - start_step}


@torch.no_grad()
def evaluate(model, loader, device="cpu", quiet: bool = True) -> dict:
    """Top-1 / top-5 accuracy (%) and mean cross-entropy of ``model`` over ``loader`` (eval mode).

    Returns ``dict(top1, top5, loss)``; top-5 is top-k with k = min(5, num_classes).
    """
    model.eval()
    device = torch.device(device)
    correct1 = correct5 = loss = n = 0
    for batch in tqdm(loader, desc="eval", disable=quiet, leave=False):
        images, targets = _to_device(batch[0], device), batch[1].to(device)
        with autocast(device):
            logits = model(images).float()
        loss += F.cross_entropy(logits, targets, reduction="sum").item()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hit = top == targets[:, None]
        correct1 += hit[:, 0].sum().item()
        correct5 += hit.any(dim=1).sum().item()
        n += len(targets)
    return {"top1": 100.0 * correct1 / n, "top5": 100.0 * correct5 / n, "loss": loss / n}


def _unwrap(model):
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def _to_device(images, device):
    """A batch (B, 3, H, W) on ``device`` in channels_last memory format (measured faster for these networks on
    CPU and GPU; ``benchmarks/throughput.py``)."""
    return images.to(device, non_blocking=True, memory_format=torch.channels_last)


def autocast(device):
    """bf16 autocast on CUDA; on CPU a disabled context (fp32: bf16 measured ~0.6x slower on the 2-core CPU)."""
    device = torch.device(device)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def deploy_form(model):
    """The deploy (fused) copy of ``model`` used for evaluation: ``gv3lite.reparameterize`` of it in eval mode.

    Fusion is exact, so its outputs equal the train form's in ``eval()`` mode up to float rounding, and it runs
    ~2.5x faster (``benchmarks/throughput.py``, case ``eval_deploy_vs_train``). ``model`` itself is unchanged and
    keeps its train/eval mode."""
    training = model.training
    model.eval()
    try:
        return reparameterize(model)
    finally:
        model.train(training)


# ----------------------------------------------------------------------------------------------- fit
def fit(recipe: Recipe, data_root=None, out_dir=None, device="cpu", resume: bool = False, quiet: bool = False,
        kd=None, datasets=None, max_epochs: int | None = None) -> pd.DataFrame:
    """Train ``recipe`` on ``data_root`` (see `gv3lite.data.resolve_data_root`) and return the per-epoch history.

    Columns: ``epoch`` (1-based), ``train_loss``, ``val_loss``, ``val_top1``, ``val_top5`` (%), ``ema_top1``
    (% or NaN), ``lr`` (last step), ``seconds`` (wall time of the epoch incl. evaluation). The val columns are NaN
    on epochs that ``recipe.eval_every`` skips (the last epoch is always evaluated).
    ``out_dir`` (None = write nothing) receives ``recipe.yaml``, ``run_info.json``, ``metrics.csv``, ``last.pth``
    (each epoch) and ``best.pth`` (best val top-1 of the EMA weights if ``recipe.ema`` else of the model).
    ``resume=True`` continues from ``out_dir/last.pth`` (raises ``FileNotFoundError`` if missing).
    ``max_epochs`` stops after that many epochs in total (the schedule still follows ``recipe.epochs``), e.g. to
    simulate an interrupted run. ``datasets`` = an optional prebuilt ``(train, val)`` pair (skips data loading). Under ``torchrun``
    (``WORLD_SIZE`` > 1) the run is data-parallel (DDP; ``batch_size`` is the global batch; rank 0 writes).
    """
    from gv3lite.checkpoint import read_checkpoint, save_checkpoint
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    device = resolve_device(device)
    if world > 1:
        import torch.distributed as dist
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
        if recipe.batch_size % world:
            raise ValueError(f"batch_size {recipe.batch_size} is not divisible by the {world} processes")
    writer = out_dir is not None and rank == 0
    out_dir = Path(out_dir) if out_dir is not None else None
    if resume and (out_dir is None or not (out_dir / "last.pth").is_file()):
        raise FileNotFoundError(f"resume=True but {out_dir}/last.pth does not exist; run without --resume first")

    use_kd = kd is not None or recipe.teacher is not None
    if use_kd and (recipe.mixup_alpha > 0 or recipe.cutmix_alpha > 0):
        raise NotImplementedError("mixup/cutmix together with knowledge distillation is not supported yet; "
                                  "set mixup_alpha=cutmix_alpha=0 or teacher=None")
    generator = seed_everything(recipe.seed)
    if datasets is None:
        datasets = recipe_datasets(recipe, resolve_data_root(data_root), return_crop_info=use_kd, progress=not quiet)
    train_ds, val_ds = datasets
    num_classes = recipe.num_classes or len(train_ds.classes)
    if num_classes != len(train_ds.classes):
        raise ValueError(f"recipe.num_classes={num_classes} but the data has {len(train_ds.classes)} classes")
    if kd is None and recipe.teacher is not None:
        try:
            from gv3lite.distill import build_kd
        except ImportError as err:
            raise NotImplementedError("recipe.teacher is set but gv3lite.distill.build_kd is not available") from err
        kd = build_kd(recipe, train_ds, device, progress=not quiet)

    sampler = None
    if world > 1:
        from torch.utils.data.distributed import DistributedSampler
        sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=recipe.seed,
                                     drop_last=True)
    train_loader = build_loader(train_ds, recipe.batch_size // world, train=True, generator=generator,
                                sampler=sampler, num_workers=recipe.num_workers, device=device)
    val_loader = build_loader(val_ds, max(recipe.batch_size, 128), train=False, num_workers=recipe.num_workers,
                              device=device)
    if len(train_loader) == 0:
        raise ValueError(f"{len(train_ds)} train images give no full batch of {recipe.batch_size}; "
                         "lower batch_size or use more images")

    model = build_model(recipe, num_classes).to(device, memory_format=torch.channels_last)
    optimizer = build_optimizer(recipe, model)
    scheduler = build_scheduler(recipe, optimizer, len(train_loader))
    ema = None
    if recipe.ema:
        from timm.utils import ModelEmaV3
        ema = ModelEmaV3(model, decay=recipe.ema_decay)
    mixup = None
    if recipe.mixup_alpha > 0 or recipe.cutmix_alpha > 0:
        from timm.data import Mixup
        mixup = Mixup(mixup_alpha=recipe.mixup_alpha, cutmix_alpha=recipe.cutmix_alpha,
                      label_smoothing=recipe.label_smoothing, num_classes=num_classes)

    history, start_epoch, best = [], 0, -1.0
    if resume:
        ckpt = read_checkpoint(out_dir / "last.pth")
        if ckpt.get("recipe") != recipe.to_dict():
            raise ValueError(f"{out_dir}/last.pth was written by a different recipe; resume with the same one "
                             f"(see {out_dir}/recipe.yaml) or use a new --out")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ema is not None:
            ema.module.load_state_dict(ckpt["model_ema"])
        history, start_epoch, best = list(ckpt["history"]), int(ckpt["epoch"]), float(ckpt["best_top1"])
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    if writer:
        out_dir.mkdir(parents=True, exist_ok=True)
        recipe.save(out_dir / "recipe.yaml")
        info = {"git_commit": git_commit(), "torch": torch.__version__, "device": str(device), "world_size": world,
                "num_classes": num_classes, "classes": train_ds.classes, "train_images": len(train_ds),
                "val_images": len(val_ds), "data_root": str(getattr(train_ds, "root", data_root))}
        (out_dir / "run_info.json").write_text(json.dumps(info, indent=2) + "\n")

    last_epoch = min(recipe.epochs, max_epochs or recipe.epochs)
    for epoch in range(start_epoch, last_epoch):
        t0 = time.perf_counter()
        _reseed(_epoch_seed(recipe.seed, epoch, rank))
        generator.manual_seed(_epoch_seed(recipe.seed, epoch))
        if sampler is not None:
            sampler.set_epoch(epoch)
        stats = train_one_epoch(model, train_loader, optimizer, scheduler, device, epoch=epoch,
                                start_step=epoch * len(train_loader), label_smoothing=recipe.label_smoothing,
                                ema=ema, mixup=mixup, kd=kd, quiet=quiet)
        if (epoch + 1) % recipe.eval_every == 0 or epoch + 1 == last_epoch:
            val = evaluate(deploy_form(_unwrap(model)), val_loader, device)
            ema_top1 = evaluate(deploy_form(ema.module), val_loader, device)["top1"] if ema is not None else float("nan")
        else:  # recipe.eval_every skips this epoch: metrics stay NaN (and no best.pth update)
            val, ema_top1 = {"loss": float("nan"), "top1": float("nan"), "top5": float("nan")}, float("nan")
        row = {"epoch": epoch + 1, "train_loss": stats["train_loss"], "val_loss": val["loss"], "val_top1": val["top1"],
               "val_top5": val["top5"], "ema_top1": ema_top1, "lr": stats["lr"],
               "seconds": time.perf_counter() - t0}
        history.append(row)
        if not quiet and rank == 0:
            tqdm.write(f"epoch {epoch + 1}/{recipe.epochs}  loss {row['train_loss']:.3f}  val top-1 {val['top1']:.2f}"
                       f"  top-5 {val['top5']:.2f}" + (f"  EMA top-1 {ema_top1:.2f}" if ema else "")
                       + f"  lr {row['lr']:.2e}  {row['seconds']:.0f}s")
        score = ema_top1 if ema is not None else val["top1"]
        if writer:
            ckpt = {"model": _unwrap(model).state_dict(), "model_ema": ema.module.state_dict() if ema else None,
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "epoch": epoch + 1,
                    "recipe": recipe.to_dict(), "num_classes": num_classes, "classes": train_ds.classes,
                    "history": history, "best_top1": max(best, score)}
            save_checkpoint(ckpt, out_dir / "last.pth")
            if score > best:
                save_checkpoint(ckpt, out_dir / "best.pth")
            pd.DataFrame(history).to_csv(out_dir / "metrics.csv", index=False)
        best = max(best, score)
    return pd.DataFrame(history)
