"""The training loop: `train_one_epoch`, `evaluate`, `fit`. It receives built objects and knows no recipe.

Owns: the loop over epochs and batches, the per-epoch history, the run directory (``run_info.json``,
``metrics.csv``, atomic ``last.pth`` / ``best.pth``), exact resume, and data parallelism (DDP) under ``torchrun``
(`setup_distributed`). What it trains with is built elsewhere (``gv3lite.experiment`` turns a ``Recipe`` into it):
the model, the (train, val) datasets, the optimizer, a ``make_scheduler(steps_per_epoch)`` callable, `LoopSettings`,
and optionally an EMA (timm ``ModelEmaV3``), a Mixup/CutMix (timm ``Mixup``) and a KD object
(``gv3lite.distill``'s protocol). The loss of every step is ``gv3lite.distill.training_loss``.

Speed (issue 10, measured by ``benchmarks/throughput.py``): the model and every batch are in channels_last memory
format, cached datasets come through the batched loader on the training device (``gv3lite.data.build_loader``),
forward passes run under bf16 autocast on CUDA (fp32 elsewhere), and evaluation uses the deploy form
(`deploy_form`), which gives the train form's eval-mode metrics to float rounding, faster.

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
from timm.data.mixup import mixup_target
from timm.utils import accuracy, unwrap_model
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

from gv3lite.checkpoint import (non_finite_tensors, read_checkpoint, read_training_checkpoint, restore_training_state,
                                save_checkpoint)
from gv3lite.data import ImageFolderDataset, build_loader
from gv3lite.distill import mix_teacher_logits, training_loss
from gv3lite.reparam import reparameterize
from gv3lite.utils import ddp_timeout, git_commit, resolve_device, seed_everything


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
    it also starts the process group (NCCL on CUDA, else Gloo; a process waits at most ``gv3lite.utils.ddp_timeout()``
    for the others, 10 min unless ``GV3LITE_DDP_TIMEOUT_MIN`` says otherwise) and picks the GPU ``LOCAL_RANK``. Call it before the
    model is moved to the device."""
    device = resolve_device(device)
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=ddp_timeout())
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


def mix_batch(mixup, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """timm ``Mixup`` / CutMix on one batch, also returning its weight lam (what the KD target of a mixed image needs).

    ``mixup``: a timm ``Mixup`` in its default ``'batch'`` mode (one lam per batch, image b mixed with image B-1-b,
    CutMix's lam corrected to the pasted area); ``images`` (B, 3, H, W) are mixed in place; ``targets`` (B,) class
    indices. Returns ``(images, soft targets (B, K), lam)``: the same as ``mixup(images, targets)`` (timm
    ``data/mixup.py``, ``Mixup.__call__``), plus lam. Raises ``ValueError`` for another mode or an odd batch.
    """
    if mixup.mode != "batch" or len(images) % 2:
        raise ValueError(f"mix_batch needs timm Mixup in 'batch' mode and an even batch (got mode {mixup.mode!r}, "
                         f"batch {len(images)}); build Mixup(mode='batch') and use an even batch_size")
    lam = float(mixup._mix_batch(images))  # timm: draws lam (and the CutMix box) and mixes the images in place
    return images, mixup_target(targets, mixup.num_classes, lam, mixup.label_smoothing, mixup.multi_label), lam


# ------------------------------------------------------------------------------------------ one epoch
def train_one_epoch(model, loader, optimizer, scheduler, device, epoch: int = 0, start_step: int = 0,
                    label_smoothing: float = 0.0, ema=None, mixup=None, kd=None, quiet: bool = False) -> dict:
    """One pass over ``loader``; returns ``dict(train_loss, train_kd, lr, steps)``.

    ``loader`` yields ``(images (B,3,H,W), targets (B,))`` or ``(images, targets, info)``. The loss is
    ``gv3lite.distill.training_loss``: cross-entropy with ``label_smoothing`` (soft-target CE when ``mixup`` -- a timm
    ``Mixup`` -- is given), mixed with ``kd``'s teacher logits when ``kd`` is given; with both, the teacher's logits of
    the unmixed crops are mixed like the labels (`mix_batch`, ``gv3lite.distill.mix_teacher_logits``). ``train_loss`` is the batch-size
    weighted mean of that loss, ``train_kd`` of its KD term (NaN without ``kd``). ``start_step`` is the global step
    count before this epoch (for the schedule and the EMA). ``lr`` is the learning rate of the last step.
    """
    model.train()
    device = torch.device(device)
    total, total_kd, count, step = 0.0, 0.0, 0, start_step
    bar = tqdm(loader, desc=f"epoch {epoch + 1} train", disable=quiet, leave=False)
    for batch in bar:
        images, targets = to_device(batch[0], device), batch[1].to(device, non_blocking=True)
        info = batch[2] if len(batch) > 2 else None
        # the teacher sees the unmixed crops (cached: their label maps; online: the crops themselves)
        teacher = None if kd is None else kd.teacher_logits(images, info).to(device)
        if mixup is not None:
            images, targets, lam = mix_batch(mixup, images, targets)
            if teacher is not None:
                teacher = mix_teacher_logits(teacher, lam, kd.temperature)
        with autocast(device):
            logits = model(images).float()
        parts = training_loss(logits, targets, teacher, alpha=getattr(kd, "alpha", 0.0),
                              temperature=getattr(kd, "temperature", 1.0), label_smoothing=label_smoothing,
                              kd_loss=getattr(kd, "kd_loss", "kl"))
        if not torch.isfinite(parts.loss):
            what = "logits and loss" if not bool(torch.isfinite(logits).all()) else "loss"
            raise NonFiniteError(f"the training {what} became {parts.loss.item()} at epoch {epoch + 1}, step "
                                 f"{step + 1}")
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


class NonFiniteError(FloatingPointError):
    """The training diverged: a loss, logits or weights became NaN or infinite."""


@torch.no_grad()
def evaluate(model, loader, device="cpu", quiet: bool = True) -> dict:
    """Top-1 / top-5 accuracy (%), mean cross-entropy and per-image predictions of ``model`` over ``loader`` (eval
    mode, in the loader's order).

    Returns ``dict(top1, top5, loss, predictions, targets)``: top-5 is top-k with k = min(5, num_classes);
    ``predictions`` / ``targets`` are (N,) int64 CPU tensors (predicted and true class of each val image, in the val
    set's order). Under DDP (an initialized process group) each process passes its shard of the val set
    (`val_shard`): the counts are summed over all processes (all-reduce) and the per-image predictions gathered, so
    every process returns the metrics and predictions of the whole val set. Raises `NonFiniteError` when the model's
    logits are not finite (a diverged model).
    """
    model.eval()
    device = torch.device(device)
    correct1 = correct5 = loss = n = 0
    predictions, labels = [], []
    for batch in tqdm(loader, desc="eval", disable=quiet, leave=False):
        images, targets = to_device(batch[0], device), batch[1].to(device)
        with autocast(device):
            logits = model(images).float()
        if not bool(torch.isfinite(logits).all()):
            raise NonFiniteError("the model's val logits are not finite (NaN/inf)")
        predictions.append(logits.argmax(dim=1).cpu())
        labels.append(targets.cpu())
        loss += F.cross_entropy(logits, targets, reduction="sum").item()
        top1, top5 = accuracy(logits, targets, topk=(1, 5))  # timm: % of the batch; k capped at num_classes
        correct1 += round(top1.item() * len(targets) / 100)
        correct5 += round(top5.item() * len(targets) / 100)
        n += len(targets)
    correct1, correct5, loss, n = _sum_over_processes([correct1, correct5, loss, n], device)
    return {"top1": 100.0 * correct1 / n, "top5": 100.0 * correct5 / n, "loss": loss / n,
            "predictions": _gather_shards(torch.cat(predictions)), "targets": _gather_shards(torch.cat(labels))}


def _distributed() -> bool:
    """True inside an initialized process group of more than one process (DDP under ``torchrun``)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _sum_over_processes(values: list[float], device) -> list[float]:
    """``values`` summed over the DDP processes (all-reduce, float64); unchanged without a process group."""
    if not _distributed():
        return values
    total = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.tolist()


def _gather_shards(values: torch.Tensor) -> torch.Tensor:
    """The per-image ``values`` (N_rank,) of every DDP process put back in the val set's order (rank r holds images
    r, r + world, ... -- see `val_shard`); unchanged without a process group."""
    if not _distributed():
        return values
    shards = [None] * dist.get_world_size()
    dist.all_gather_object(shards, values.cpu())
    full = torch.empty(sum(len(x) for x in shards), dtype=values.dtype)
    for rank, shard in enumerate(shards):
        full[rank::len(shards)] = shard
    return full


def val_shard(dataset, world: int, rank: int):
    """Rank ``rank``'s part of the val set under DDP: every ``world``-th image from ``rank`` (each image exactly once
    over all processes, no padding -- unlike ``DistributedSampler`` -- so summed counts are exact)."""
    return dataset if world == 1 else torch.utils.data.Subset(dataset, range(rank, len(dataset), world))


def check_finite_weights(state: dict, epoch: int) -> None:
    """Raise `NonFiniteError` when the weights (``state['model']`` / ``state['model_ema']``) hold a NaN or an
    infinity after epoch index ``epoch``: such a model is never saved."""
    for key in ("model", "model_ema"):
        bad = non_finite_tensors(state.get(key) or {})
        if bad:
            raise NonFiniteError(f"the {'EMA ' if key == 'model_ema' else ''}weights became non-finite in epoch "
                                 f"{epoch + 1} ({len(bad)} tensors, e.g. {bad[0]!r})")


def diverged(err: NonFiniteError, epoch: int, out_dir, lr: float) -> NonFiniteError:
    """The error a diverged training ends with: the epoch (1-based) and what became non-finite, the last good
    checkpoint (kept: nothing non-finite is ever saved), and the fix."""
    last = Path(out_dir) / "last.pth" if out_dir is not None else None
    if last is not None and last.is_file():
        kept = f"the last good checkpoint, {last} (epoch {read_checkpoint(last)['epoch']}), is kept"
    else:
        kept = "no checkpoint was saved"
    return NonFiniteError(f"training diverged at epoch {epoch}: {err}; {kept}. Lower the learning rate (it was "
                          f"{lr:.3g} at the last step) or check the data, and train "
                          "into a new --out")


def with_sync_bn(model: torch.nn.Module, sync_bn: bool, world: int, device) -> torch.nn.Module:
    """``model`` with every BatchNorm turned into ``torch.nn.SyncBatchNorm`` (batch statistics over the global batch
    of all ``world`` processes) when ``sync_bn`` and ``world`` > 1; else ``model`` unchanged. The parameters stay the
    same objects (an optimizer built before keeps working). Raises ``ValueError`` for ``sync_bn`` on a CPU device:
    torch's SyncBatchNorm runs on GPUs only."""
    if not sync_bn or world == 1:
        return model
    if torch.device(device).type != "cuda":
        raise ValueError("--sync-bn: torch's SyncBatchNorm runs on GPUs only; use --device cuda, or drop --sync-bn "
                         "(each process then normalizes with the statistics of its own part of the batch)")
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)


def to_device(images: torch.Tensor, device) -> torch.Tensor:
    """A batch (B, 3, H, W) on ``device`` in channels_last memory format, other shapes as they are (measured faster
    for these networks, ``benchmarks/throughput.py`` case ``train_step_contiguous``)."""
    if images.dim() != 4:  # e.g. feature vectors of a toy model: no memory format to choose
        return images.to(device, non_blocking=True)
    return images.to(device, non_blocking=True, memory_format=torch.channels_last)


def autocast(device):
    """bf16 autocast on CUDA; on other devices a disabled context (fp32: bf16 measured ~0.6x slower on the 2-core
    CPU, issue 10)."""
    device = torch.device(device)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def deploy_form(model: torch.nn.Module) -> torch.nn.Module:
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
def fit(model, datasets, optimizer, make_scheduler, settings: LoopSettings, kd=None, ema=None, mixup=None,
        device="cpu", out_dir=None, resume: bool = False, config: dict | None = None, max_epochs: int | None = None,
        quiet: bool = False, sync_bn: bool = False, compile_model: bool = False) -> pd.DataFrame:
    """Train ``model`` (already on ``device``) on ``datasets`` = (train, val) and return the per-epoch history.

    Columns: ``epoch`` (1-based), ``train_loss``, ``train_kd`` (mean KD term, NaN without ``kd``), ``val_loss``,
    ``val_top1``, ``val_top5`` (%), ``ema_top1`` (% or NaN), ``lr`` (last step), ``seconds`` (epoch wall time incl.
    evaluation); val columns are NaN on epochs that ``settings.eval_every`` skips (the last is always evaluated).
    ``make_scheduler(steps_per_epoch)`` builds the per-step schedule (`scheduler_step`). ``out_dir`` (None: write
    nothing) receives ``recipe.yaml``, ``run_info.json``, ``metrics.csv``, ``last.pth`` (each epoch), ``best.pth`` (best
    val top-1 of the EMA if ``ema`` else of the model) and ``predictions.csv`` (every val image at the last evaluation:
    ``val_index``, ``target``, ``pred_raw``, ``correct_raw``, ``pred_ema``, ``correct_ema``). ``config`` (a plain
    dict, e.g. the recipe) is stored as ``recipe`` and must match on ``resume=True`` (continue from ``last.pth``).
    ``max_epochs`` stops early (the schedule follows ``settings.epochs``). Under ``torchrun``: DDP (`setup_distributed`
    first; rank 0 writes; whole-val metrics on every rank; ``sync_bn``: `with_sync_bn`). ``compile_model``: the
    training steps run through ``torch.compile(model)`` (the same weights; evaluation, EMA and checkpoints use
    ``model`` itself; ``run_info.json`` records ``compiled``). Compiled kernels may round differently from eager ones,
    so a compiled run is not bitwise equal to an eager one. It pays off on GPUs; on a 2-core CPU the first step
    compiles for ~6 min and the train step is only ~1.1x faster afterwards (``benchmarks/throughput.py --compile``).
    Raises `NonFiniteError`.
    """
    check_resumable(out_dir, resume)
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    (train_ds, val_ds), out_dir, device = datasets, Path(out_dir) if out_dir is not None else None, torch.device(device)
    train_loader, val_loader, sampler, generator = _loaders(train_ds, val_ds, settings, world, rank, device)
    model = model.to(memory_format=torch.channels_last)
    scheduler = make_scheduler(len(train_loader))
    history, start_epoch, best = [], 0, -1.0
    if resume:
        history, start_epoch, best = _load_state(out_dir / "last.pth", config, model, optimizer, scheduler, ema)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(with_sync_bn(model, sync_bn, world, device),
                                                          device_ids=[device] if device.type == "cuda" else None)
    step_model = torch.compile(model) if compile_model else model
    writer = out_dir is not None and rank == 0
    if writer:
        _write_run_info(out_dir, config, device, world, train_ds, val_ds, compile_model)
    last_epoch = min(settings.epochs, max_epochs or settings.epochs)
    for epoch in range(start_epoch, last_epoch):
        t0 = time.perf_counter()
        seed_everything(_epoch_seed(settings.seed, epoch, rank), deterministic=False)
        generator.manual_seed(_epoch_seed(settings.seed, epoch))
        if sampler is not None:
            sampler.set_epoch(_epoch_seed(settings.seed, epoch))
        evaluated = (epoch + 1) % settings.eval_every == 0 or epoch + 1 == last_epoch
        try:
            stats = train_one_epoch(step_model, train_loader, optimizer, scheduler, device, epoch=epoch,
                                    start_step=epoch * len(train_loader), label_smoothing=settings.label_smoothing,
                                    ema=ema, mixup=mixup, kd=kd, quiet=quiet)
            val, val_ema = _evaluate_epoch(model, ema, val_loader, device) if evaluated else (_NO_VAL, None)
        except NonFiniteError as err:
            raise diverged(err, epoch + 1, out_dir if writer else None, optimizer.param_groups[0]["lr"]) from err
        ema_top1 = val_ema["top1"] if val_ema is not None else float("nan")
        if writer and evaluated:
            _save_predictions(out_dir / "predictions.csv", val, val_ema)
        history.append({"epoch": epoch + 1, "train_loss": stats["train_loss"], "train_kd": stats["train_kd"],
                        "val_loss": val["loss"], "val_top1": val["top1"], "val_top5": val["top5"],
                        "ema_top1": ema_top1, "lr": stats["lr"], "seconds": time.perf_counter() - t0})
        if not quiet and rank == 0:
            _print_epoch(history[-1], settings.epochs, ema is not None)
        score = ema_top1 if ema is not None else val["top1"]
        if writer:
            state = _checkpoint_state(model, ema, optimizer, scheduler, config, train_ds, history, max(best, score))
            _save_epoch(out_dir, state, history, is_best=score > best)
        best = max(best, score)
    return pd.DataFrame(history)


_VAL = ("loss", "top1", "top5")
_NO_VAL = dict.fromkeys(_VAL, float("nan"))  # an epoch that `LoopSettings.eval_every` skips


def _evaluate_epoch(model, ema, val_loader, device) -> tuple[dict, dict | None]:
    """`evaluate` of the model's and the EMA's deploy forms (`deploy_form`): (val, val of the EMA or None)."""
    val = evaluate(deploy_form(unwrap_model(model)), val_loader, device)
    return val, evaluate(deploy_form(ema.module), val_loader, device) if ema is not None else None


def _checkpoint_state(model, ema, optimizer, scheduler, config, train_ds, history, best_top1) -> dict:
    """What ``last.pth`` / ``best.pth`` hold after an epoch: weights (and EMA), optimizer, schedule, the config, the
    class list and the history so far (``epoch`` = epochs done), so that `_load_state` resumes exactly."""
    return {"model": unwrap_model(model).state_dict(), "model_ema": ema.module.state_dict() if ema else None,
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "epoch": len(history),
            "recipe": config, "num_classes": _num_classes(train_ds), "classes": train_ds.classes,
            "history": history, "best_top1": best_top1}


def _loaders(train_ds, val_ds, settings: LoopSettings, world: int, rank: int, device):
    """(train loader, val loader, DistributedSampler or None, the train loader's shuffling generator). Cached
    datasets get the batched path on ``device`` (``gv3lite.data.build_loader``); on CUDA an uncached train set
    without workers is decoded batch by batch on the GPU (``gv3lite.data.BatchedTrainLoader.decode``)."""
    if settings.batch_size % world:
        raise ValueError(f"batch_size {settings.batch_size} is not divisible by the {world} processes")
    sampler = None
    if world > 1:
        # seed 0 + set_epoch(the 1-process loader's epoch seed): the 1-process permutation split across the ranks,
        # so a global batch holds the same images as with one process
        sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=0, drop_last=True)
    generator = torch.Generator().manual_seed(settings.seed)
    decode_on_device = (device.type == "cuda" and isinstance(train_ds, ImageFolderDataset) and train_ds.cache is None
                        and sampler is None and settings.num_workers == 0)
    train_loader = build_loader(train_ds, settings.batch_size // world, train=True, generator=generator,
                                sampler=sampler, num_workers=settings.num_workers, device=device,
                                batched=True if decode_on_device else None)
    val_loader = build_loader(val_shard(val_ds, world, rank), max(settings.batch_size, 128), train=False,
                              num_workers=settings.num_workers, device=device)
    if len(train_loader) == 0:
        raise ValueError(f"{len(train_ds)} train images give no full batch of {settings.batch_size}; "
                         "lower batch_size or use more images")
    return train_loader, val_loader, sampler, generator


def _num_classes(dataset) -> int:
    return len(dataset.classes)


def _load_state(path: Path, config, model, optimizer, scheduler, ema) -> tuple[list, int, float]:
    """Load ``last.pth`` into the built objects; return (history, epochs done, best score). Raises ``ValueError``
    naming the file for a file that is not a training checkpoint (e.g. a tensor), another config, or state that does
    not fit (e.g. another width): ``gv3lite.checkpoint.read_training_checkpoint`` / ``restore_training_state``."""
    ckpt = read_training_checkpoint(path)
    if ckpt.get("recipe") != config:
        raise ValueError(f"{path} was written by a different recipe; resume with the same one "
                         f"(see {path.parent}/recipe.yaml) or use a new --out")
    return restore_training_state(ckpt, path, model, optimizer, scheduler, ema.module if ema is not None else None)


def _write_run_info(out_dir: Path, config, device, world: int, train_ds, val_ds, compiled: bool = False) -> None:
    """``recipe.yaml`` (``config``, when given) and ``run_info.json`` (environment, data, whether the training steps
    were compiled) of a run directory."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (out_dir / "recipe.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    info = {"git_commit": git_commit(), "torch": torch.__version__, "device": str(device), "world_size": world,
            "num_classes": _num_classes(train_ds), "classes": train_ds.classes, "train_images": len(train_ds),
            "val_images": len(val_ds), "data_root": str(getattr(train_ds, "root", None)), "compiled": compiled}
    (out_dir / "run_info.json").write_text(json.dumps(info, indent=2) + "\n")


def _save_predictions(path: Path, val: dict, val_ema: dict | None) -> None:
    """``predictions.csv``: per val image its index, true class, and the raw (and EMA) weights' prediction."""
    table = pd.DataFrame({"val_index": range(len(val["targets"])), "target": val["targets"].numpy(),
                          "pred_raw": val["predictions"].numpy()})
    table["correct_raw"] = (table["pred_raw"] == table["target"]).astype(int)
    if val_ema is not None:
        table["pred_ema"] = val_ema["predictions"].numpy()
        table["correct_ema"] = (table["pred_ema"] == table["target"]).astype(int)
    else:
        table["pred_ema"] = table["correct_ema"] = pd.NA
    table.to_csv(path, index=False)


def _save_epoch(out_dir: Path, state: dict, history: list, is_best: bool) -> None:
    """Atomic ``last.pth`` (and ``best.pth``), then ``metrics.csv``; a model with non-finite weights is never saved
    (`NonFiniteError` via `diverged`: the previous ``last.pth`` stays)."""
    try:
        check_finite_weights(state, state["epoch"] - 1)
    except NonFiniteError as err:
        raise diverged(err, state["epoch"], out_dir, state["optimizer"]["param_groups"][0]["lr"]) from err
    save_checkpoint(state, out_dir / "last.pth")
    if is_best:
        save_checkpoint(state, out_dir / "best.pth")
    pd.DataFrame(history).to_csv(out_dir / "metrics.csv", index=False)


def _print_epoch(row: dict, epochs: int, has_ema: bool) -> None:
    tqdm.write(f"epoch {row['epoch']}/{epochs}  loss {row['train_loss']:.3f}  val top-1 {row['val_top1']:.2f}"
               f"  top-5 {row['val_top5']:.2f}" + (f"  EMA top-1 {row['ema_top1']:.2f}" if has_ema else "")
               + f"  lr {row['lr']:.2e}  {row['seconds']:.0f}s")
