"""The training loop: `train_one_epoch`, `evaluate`, `fit`. It receives built objects and knows no recipe.

Owns: the loop over epochs and batches, the per-epoch history, the run directory (``run_info.json``,
``metrics.csv``, atomic ``last.pth`` / ``best.pth``), exact resume, and data parallelism (DDP) under ``torchrun``
(`setup_distributed`). What it trains with is built elsewhere (``gv3lite.experiment`` turns a ``Recipe`` into it):
the model, the (train, val) datasets, the optimizer, a ``make_scheduler(steps_per_epoch)`` callable, `LoopSettings`,
and optionally an EMA (timm ``ModelEmaV3``), a Mixup/CutMix (timm ``Mixup``) and a KD object
(``gv3lite.distill``'s protocol). The loss of every step is ``gv3lite.distill.training_loss``.

Determinism: every epoch re-seeds Python, NumPy, torch and the sampler's generator from ``(seed, epoch, rank)``. An
epoch therefore depends only on the weights/optimizer/EMA state at its start, which is what a checkpoint stores --
so a resumed run reproduces an uninterrupted one bit for bit (on the same machine and thread count).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from timm.utils import accuracy, unwrap_model
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

from gv3lite.checkpoint import read_checkpoint, save_checkpoint
from gv3lite.data import build_loader
from gv3lite.distill import training_loss
from gv3lite.utils import git_commit, resolve_device, seed_everything


@dataclass(frozen=True)
class LoopSettings:
    """What the loop itself needs: ``epochs`` (the schedule's length), ``batch_size`` (global, over all processes),
    ``seed`` (per-epoch re-seeding), ``label_smoothing`` (of the CE term), ``eval_every`` (evaluate every N epochs
    and always after the last), ``num_workers`` (DataLoader processes)."""
    epochs: int
    batch_size: int
    seed: int = 0
    label_smoothing: float = 0.0
    eval_every: int = 1
    num_workers: int = 0


def setup_distributed(device="cpu") -> torch.device:
    """The device of this process: ``gv3lite.utils.resolve_device(device)``; under ``torchrun`` (``WORLD_SIZE`` > 1)
    it also starts the process group (NCCL on CUDA, else Gloo) and picks the GPU ``LOCAL_RANK``. Call it before the
    model is moved to the device."""
    device = resolve_device(device)
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
    return device


def check_resumable(out_dir, resume: bool) -> None:
    """Raise ``FileNotFoundError`` when ``resume`` is asked for but ``out_dir/last.pth`` does not exist."""
    if resume and (out_dir is None or not (Path(out_dir) / "last.pth").is_file()):
        raise FileNotFoundError(f"resume=True but {out_dir}/last.pth does not exist; run without --resume first")


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


# ------------------------------------------------------------------------------------------ one epoch
def train_one_epoch(model, loader, optimizer, scheduler, device, epoch: int = 0, start_step: int = 0,
                    label_smoothing: float = 0.0, ema=None, mixup=None, kd=None, quiet: bool = False) -> dict:
    """One pass over ``loader``; returns ``dict(train_loss, train_kd, lr, steps)``.

    ``loader`` yields ``(images (B,3,H,W), targets (B,))`` or ``(images, targets, info)``. The loss is
    ``gv3lite.distill.training_loss``: cross-entropy with ``label_smoothing`` (soft-target CE when ``mixup`` -- a timm
    ``Mixup`` -- is given), mixed with ``kd``'s teacher logits when ``kd`` is given. ``train_loss`` is the batch-size
    weighted mean of that loss, ``train_kd`` of its KD term (NaN without ``kd``). ``start_step`` is the global step
    count before this epoch (for the schedule and the EMA). ``lr`` is the learning rate of the last step.
    """
    model.train()
    total, total_kd, count, step = 0.0, 0.0, 0, start_step
    bar = tqdm(loader, desc=f"epoch {epoch + 1} train", disable=quiet, leave=False)
    for batch in bar:
        images, targets = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
        info = batch[2] if len(batch) > 2 else None
        if mixup is not None:
            images, targets = mixup(images, targets)
        logits = model(images)
        teacher = None if kd is None else kd.teacher_logits(images, info).to(logits.device)
        parts = training_loss(logits, targets, teacher, alpha=getattr(kd, "alpha", 0.0),
                              temperature=getattr(kd, "temperature", 1.0), label_smoothing=label_smoothing,
                              kd_loss=getattr(kd, "kd_loss", "kl"))
        if not torch.isfinite(parts.loss):
            raise FloatingPointError(f"loss is {parts.loss.item()} at step {step}; lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        parts.loss.backward()
        optimizer.step()
        step += 1
        scheduler_step(scheduler, step)
        if ema is not None:
            ema.update(unwrap_model(model), step=step)
        total += parts.loss.item() * len(images)
        total_kd += parts.kd.item() * len(images) if parts.kd is not None else float("nan")
        count += len(images)
        bar.set_postfix(loss=f"{total / count:.3f}")
    return {"train_loss": total / max(count, 1), "train_kd": total_kd / max(count, 1),
            "lr": optimizer.param_groups[0]["lr"], "steps": step - start_step}


@torch.no_grad()
def evaluate(model, loader, device="cpu", quiet: bool = True) -> dict:
    """Top-1 / top-5 accuracy (%) and mean cross-entropy of ``model`` over ``loader`` (eval mode).

    Returns ``dict(top1, top5, loss)``; top-5 is top-k with k = min(5, num_classes).
    """
    model.eval()
    correct1 = correct5 = loss = n = 0
    for batch in tqdm(loader, desc="eval", disable=quiet, leave=False):
        images, targets = batch[0].to(device), batch[1].to(device)
        logits = model(images)
        loss += F.cross_entropy(logits, targets, reduction="sum").item()
        top1, top5 = accuracy(logits, targets, topk=(1, 5))  # timm: % of the batch; k capped at num_classes
        correct1 += round(top1.item() * len(targets) / 100)
        correct5 += round(top5.item() * len(targets) / 100)
        n += len(targets)
    return {"top1": 100.0 * correct1 / n, "top5": 100.0 * correct5 / n, "loss": loss / n}


# ----------------------------------------------------------------------------------------------- fit
def fit(model, datasets, optimizer, make_scheduler, settings: LoopSettings, kd=None, ema=None, mixup=None,
        device="cpu", out_dir=None, resume: bool = False, config: dict | None = None, max_epochs: int | None = None,
        quiet: bool = False) -> pd.DataFrame:
    """Train ``model`` (already on ``device``) on ``datasets`` = (train, val) and return the per-epoch history.

    Columns: ``epoch`` (1-based), ``train_loss``, ``train_kd`` (mean KD term, NaN without ``kd``), ``val_loss``,
    ``val_top1``, ``val_top5`` (%), ``ema_top1`` (% or NaN), ``lr`` (last step), ``seconds`` (wall time of the epoch
    incl. evaluation). Val columns are NaN on epochs that ``settings.eval_every`` skips (the last is always evaluated).
    ``make_scheduler(steps_per_epoch)`` builds the per-step schedule (see `scheduler_step`). ``out_dir`` (None =
    write nothing) receives ``recipe.yaml``, ``run_info.json``, ``metrics.csv``, ``last.pth`` (each epoch) and ``best.pth`` (best val
    top-1 of the EMA weights if ``ema`` else of the model); ``config`` (a plain dict, e.g. the recipe) is stored in
    them as ``recipe`` (and in ``recipe.yaml``) and must match on ``resume=True``, which continues from ``out_dir/last.pth`` (raises
    ``FileNotFoundError`` if missing, ``ValueError`` for another config). ``max_epochs`` stops after that many epochs
    in total (the schedule still follows ``settings.epochs``). Under ``torchrun`` the run is data-parallel (DDP;
    call `setup_distributed` first; rank 0 writes).
    """
    check_resumable(out_dir, resume)
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    (train_ds, val_ds), out_dir, device = datasets, Path(out_dir) if out_dir is not None else None, torch.device(device)
    train_loader, val_loader, sampler, generator = _loaders(train_ds, val_ds, settings, world, rank)
    scheduler = make_scheduler(len(train_loader))
    history, start_epoch, best = [], 0, -1.0
    if resume:
        history, start_epoch, best = _load_state(out_dir / "last.pth", config, model, optimizer, scheduler, ema)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    writer = out_dir is not None and rank == 0
    if writer:
        _write_run_info(out_dir, config, device, world, train_ds, val_ds)
    last_epoch = min(settings.epochs, max_epochs or settings.epochs)
    for epoch in range(start_epoch, last_epoch):
        t0 = time.perf_counter()
        seed_everything(_epoch_seed(settings.seed, epoch, rank), deterministic=False)
        generator.manual_seed(_epoch_seed(settings.seed, epoch))
        if sampler is not None:
            sampler.set_epoch(epoch)
        stats = train_one_epoch(model, train_loader, optimizer, scheduler, device, epoch=epoch,
                                start_step=epoch * len(train_loader), label_smoothing=settings.label_smoothing,
                                ema=ema, mixup=mixup, kd=kd, quiet=quiet)
        evaluated = (epoch + 1) % settings.eval_every == 0 or epoch + 1 == last_epoch
        val = evaluate(unwrap_model(model), val_loader, device) if evaluated else dict.fromkeys(_VAL, float("nan"))
        ema_top1 = evaluate(ema.module, val_loader, device)["top1"] if ema is not None and evaluated else float("nan")
        history.append({"epoch": epoch + 1, "train_loss": stats["train_loss"], "train_kd": stats["train_kd"],
                        "val_loss": val["loss"], "val_top1": val["top1"], "val_top5": val["top5"],
                        "ema_top1": ema_top1, "lr": stats["lr"], "seconds": time.perf_counter() - t0})
        if not quiet and rank == 0:
            _print_epoch(history[-1], settings.epochs, ema is not None)
        score = ema_top1 if ema is not None else val["top1"]
        if writer:
            state = {"model": unwrap_model(model).state_dict(), "model_ema": ema.module.state_dict() if ema else None,
                     "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "epoch": epoch + 1,
                     "recipe": config, "num_classes": _num_classes(train_ds), "classes": train_ds.classes,
                     "history": history, "best_top1": max(best, score)}
            _save_epoch(out_dir, state, history, is_best=score > best)
        best = max(best, score)
    return pd.DataFrame(history)


_VAL = ("loss", "top1", "top5")


def _loaders(train_ds, val_ds, settings: LoopSettings, world: int, rank: int):
    """(train loader, val loader, DistributedSampler or None, the train loader's shuffling generator)."""
    if settings.batch_size % world:
        raise ValueError(f"batch_size {settings.batch_size} is not divisible by the {world} processes")
    sampler = None
    if world > 1:
        sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=settings.seed,
                                     drop_last=True)
    generator = torch.Generator().manual_seed(settings.seed)
    train_loader = build_loader(train_ds, settings.batch_size // world, train=True, generator=generator,
                                sampler=sampler, num_workers=settings.num_workers)
    val_loader = build_loader(val_ds, max(settings.batch_size, 128), train=False, num_workers=settings.num_workers)
    if len(train_loader) == 0:
        raise ValueError(f"{len(train_ds)} train images give no full batch of {settings.batch_size}; "
                         "lower batch_size or use more images")
    return train_loader, val_loader, sampler, generator


def _num_classes(dataset) -> int:
    return len(dataset.classes)


def _load_state(path: Path, config, model, optimizer, scheduler, ema) -> tuple[list, int, float]:
    """Load ``last.pth`` into the built objects; return (history, epochs done, best score)."""
    ckpt = read_checkpoint(path)
    if ckpt.get("recipe") != config:
        raise ValueError(f"{path} was written by a different recipe; resume with the same one "
                         f"(see {path.parent}/recipe.yaml) or use a new --out")
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    if ema is not None:
        ema.module.load_state_dict(ckpt["model_ema"])
    return list(ckpt["history"]), int(ckpt["epoch"]), float(ckpt["best_top1"])


def _write_run_info(out_dir: Path, config, device, world: int, train_ds, val_ds) -> None:
    """``recipe.yaml`` (``config``, when given) and ``run_info.json`` (environment and data) of a run directory."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (out_dir / "recipe.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    info = {"git_commit": git_commit(), "torch": torch.__version__, "device": str(device), "world_size": world,
            "num_classes": _num_classes(train_ds), "classes": train_ds.classes, "train_images": len(train_ds),
            "val_images": len(val_ds), "data_root": str(getattr(train_ds, "root", None))}
    (out_dir / "run_info.json").write_text(json.dumps(info, indent=2) + "\n")


def _save_epoch(out_dir: Path, state: dict, history: list, is_best: bool) -> None:
    """Atomic ``last.pth`` (and ``best.pth``), then ``metrics.csv``."""
    save_checkpoint(state, out_dir / "last.pth")
    if is_best:
        save_checkpoint(state, out_dir / "best.pth")
    pd.DataFrame(history).to_csv(out_dir / "metrics.csv", index=False)


def _print_epoch(row: dict, epochs: int, has_ema: bool) -> None:
    tqdm.write(f"epoch {row['epoch']}/{epochs}  loss {row['train_loss']:.3f}  val top-1 {row['val_top1']:.2f}"
               f"  top-5 {row['val_top5']:.2f}" + (f"  EMA top-1 {row['ema_top1']:.2f}" if has_ema else "")
               + f"  lr {row['lr']:.2e}  {row['seconds']:.0f}s")
