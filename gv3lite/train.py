"""The training loop on built objects: `fit`, `train_one_epoch`, `evaluate`. It knows no recipe and writes no file.

Owns: the loop over epochs and batches (`fit`: re-seeding, training, evaluation of the deploy form, the per-epoch
history), one epoch (`train_one_epoch`: Mixup/CutMix (`mix_batch`), the teacher's outputs, the objective, the
optimizer, schedule and EMA steps), `evaluate` (whole-val metrics and per-image predictions, reduced over DDP
processes), the loaders of a (train, val) pair (`build_loaders`), and the hooks a `Callback` receives.
What it trains with is built elsewhere (``gv3lite.experiment`` turns a ``Recipe`` into `TrainObjects`): the model,
the optimizer, the schedule (built once the loader length is known), the objective (``gv3lite.distill.Objective``:
the only loss it computes) and optionally an EMA (timm ``ModelEmaV3``), a Mixup/CutMix (timm ``Mixup``) and a
teacher-output supplier (``gv3lite.teacher_outputs``: ``teacher_logits(images, info) -> (B, K)``). What happens
around the loop -- checkpoints and exact resume, metrics and per-image predictions, the divergence guard, progress --
are callbacks (``gv3lite.callbacks``); DDP helpers are ``gv3lite.distributed``.

Speed (issue 10, measured by ``benchmarks/throughput.py``): the model and every batch are in channels_last memory
format, cached datasets come through the batched loader on the training device (``gv3lite.data.build_loader``),
forward passes run under bf16 autocast on CUDA (fp32 elsewhere), and evaluation uses the deploy form
(`deploy_form`), which gives the train form's eval-mode metrics to float rounding, faster.

Determinism: every epoch re-seeds Python, NumPy, torch and the sampler's generator from ``(seed, epoch, rank)``. An
epoch therefore depends only on the weights/optimizer/EMA state at its start, which is what a checkpoint stores --
so a resumed run reproduces an uninterrupted one bit for bit (on the same machine and thread count).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import pandas as pd
import torch
import torch.nn.functional as F
from timm.data.mixup import mixup_target
from timm.utils import accuracy, unwrap_model
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

from gv3lite.bn_stats import precise_bn
from gv3lite.data import ImageFolderDataset, build_loader
from gv3lite.distributed import gather_shards, sum_over_processes, val_shard, world_and_rank, wrap_ddp
from gv3lite.reparam import reparameterize
from gv3lite.utils import seed_everything


class NonFiniteError(FloatingPointError):
    """The training diverged: a loss, logits or weights became NaN or infinite."""


@dataclass(frozen=True)
class LoopSettings:
    """What the loop itself needs: ``epochs`` (the schedule's length), ``batch_size`` (global, over all processes),
    ``seed`` (per-epoch re-seeding), ``eval_every`` (evaluate every N epochs and always after the last),
    ``num_workers`` (DataLoader processes), ``max_epochs`` (stop early; None: ``epochs``), ``sync_bn`` (SyncBatchNorm
    under DDP on GPUs), ``compile_model`` (training steps through ``torch.compile(model)``), ``precise_bn`` (before
    each evaluation, recompute the BN statistics of the raw and EMA weights over the training images,
    ``gv3lite.bn_stats.precise_bn``), ``flip_tta`` (evaluate the mean softmax of each image and its mirror)."""
    epochs: int
    batch_size: int
    seed: int = 0
    eval_every: int = 1
    num_workers: int = 0
    max_epochs: int | None = None
    sync_bn: bool = False
    compile_model: bool = False
    precise_bn: bool = False
    flip_tta: bool = False


@dataclass
class TrainObjects:
    """The built objects one training run trains with (see the module docstring). ``objective(logits, targets,
    teacher_logits) -> LossParts`` and ``objective.mix_teacher(teacher_logits, lam)``; ``teacher`` supplies
    ``teacher_logits(images, info)``."""
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    objective: object
    ema: object = None
    mixup: object = None
    teacher: object = None


@dataclass
class Loaders:
    """The loaders of a run: ``train``, ``val`` (this rank's shard), ``sampler`` (DDP) or None, the ``generator``
    that shuffles the train set, and the (train, val) ``datasets`` they read."""
    train: object
    val: object
    sampler: DistributedSampler | None
    generator: torch.Generator
    datasets: tuple


@dataclass
class FitState:
    """What the callbacks see: the objects, the loaders, where the loop is (``epoch``: 0-based epoch running,
    ``start_epoch``: first epoch of this call, ``last_epoch``: where it stops) and what it has done (``history``: one
    row per finished epoch, ``best``: best score so far, -1 before any)."""
    objects: TrainObjects
    loaders: Loaders
    settings: LoopSettings
    device: torch.device
    world: int = 1
    rank: int = 0
    epoch: int = 0
    start_epoch: int = 0
    last_epoch: int = 0
    history: list = field(default_factory=list)
    best: float = -1.0


@dataclass
class EpochResult:
    """One finished epoch: its history ``row``, the val results of the model and of the EMA (`evaluate`'s dicts;
    ``val_ema`` None without EMA), whether it was ``evaluated``, its ``score`` and the ``weights`` that gave it
    (`epoch_score`: the better val top-1 of the raw and the EMA weights)."""
    row: dict
    val: dict
    val_ema: dict | None
    evaluated: bool
    score: float
    weights: str = "raw"


def epoch_score(val: dict, val_ema: dict | None) -> tuple[float, str]:
    """``(val top-1, "raw" | "ema")``: the better of the raw and the EMA weights' val top-1 (the EMA on a tie), the raw
    one without EMA. ``best.pth`` is chosen by it, so an EMA that has not warmed up yet -- early in a run shorter than
    its horizon ``1 / (1 - decay)`` it is mostly the random initial weights (issue 25: 10 % top-1 against the raw
    weights' 28 % at the quick budget of notebook 09) -- is never the selected model; both scores stay in the history
    (``val_top1``, ``ema_top1``). NaN (an epoch not evaluated) gives NaN, which never counts as a new best."""
    if val_ema is not None and val_ema["top1"] >= val["top1"]:
        return val_ema["top1"], "ema"
    return val["top1"], "raw"


class Callback:
    """The hooks `fit` and `train_one_epoch` call, in the order of the callback list; each does nothing here.

    ``on_fit_start(state)`` before the first epoch (e.g. resume); ``on_epoch_start(epoch, num_batches)``;
    ``on_loss(parts, logits, epoch, step)`` after each step's loss, before the backward pass (may raise);
    ``on_step_end(step, mean_loss)``; ``on_epoch_end(state, result)`` after each epoch (``state.history`` already
    holds ``result.row``; ``state.best`` is still the best before it); ``on_diverged(state, err)`` when the epoch
    raised `NonFiniteError`: return the error to raise instead, or None.
    """

    def on_fit_start(self, state: FitState) -> None: ...
    def on_epoch_start(self, epoch: int, num_batches: int) -> None: ...
    def on_loss(self, parts, logits: torch.Tensor, epoch: int, step: int) -> None: ...
    def on_step_end(self, step: int, mean_loss: float) -> None: ...
    def on_epoch_end(self, state: FitState, result: EpochResult) -> None: ...
    def on_diverged(self, state: FitState, err: NonFiniteError) -> NonFiniteError | None: ...


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
def train_one_epoch(objects: TrainObjects, loader, device, epoch: int = 0, start_step: int = 0,
                    callbacks=()) -> dict:
    """One pass over ``loader``; returns ``dict(train_loss, train_kd, lr, steps)``.

    ``loader`` yields ``(images (B,3,H,W), targets (B,))`` or ``(images, targets, info)``. The loss is
    ``objects.objective`` of the student's logits, the targets (soft targets after ``objects.mixup``, a timm
    ``Mixup``: `mix_batch`) and the teacher's logits of the *unmixed* crops (``objects.teacher``; with Mixup mixed
    like the labels, ``objective.mix_teacher``). ``train_loss`` is the batch-size weighted mean of that loss,
    ``train_kd`` of its KD term (NaN without a teacher). ``start_step`` is the global step count before this epoch
    (for the schedule and the EMA). ``lr`` is the learning rate of the last step. ``callbacks``: see `Callback`.
    """
    o = objects
    o.model.train()
    device = torch.device(device)
    total, total_kd, count, step = 0.0, 0.0, 0, start_step
    _call(callbacks, "on_epoch_start", epoch, len(loader))
    # Until issue 24 this loop iterated tqdm.auto's bar, whose constructor makes one extra iterator of the loader (a
    # torch DataLoader, gv3lite.data.WorkerLoader too, draws its base seed from the shuffling generator then): kept,
    # so that runs stay bit-identical
    iter(loader)
    for batch in loader:
        images, targets = to_device(batch[0], device), batch[1].to(device, non_blocking=True)
        info = batch[2] if len(batch) > 2 else None
        teacher = None if o.teacher is None else o.teacher.teacher_logits(images, info).to(device)
        if o.mixup is not None:
            images, targets, lam = mix_batch(o.mixup, images, targets)
            if teacher is not None:
                teacher = o.objective.mix_teacher(teacher, lam)
        with autocast(device):
            logits = o.model(images).float()
        parts = o.objective(logits, targets, teacher)
        _call(callbacks, "on_loss", parts, logits, epoch, step)
        o.optimizer.zero_grad(set_to_none=True)
        parts.loss.backward()
        o.optimizer.step()
        step += 1
        scheduler_step(o.scheduler, step)
        if o.ema is not None:
            o.ema.update(unwrap_model(o.model), step=step)
        total += parts.loss.item() * len(images)
        total_kd += parts.kd.item() * len(images) if parts.kd is not None else float("nan")
        count += len(images)
        _call(callbacks, "on_step_end", step, total / count)
    return {"train_loss": total / max(count, 1), "train_kd": total_kd / max(count, 1),
            "lr": o.optimizer.param_groups[0]["lr"], "steps": step - start_step}


def _call(callbacks, hook: str, *args):
    for callback in callbacks:
        getattr(callback, hook)(*args)


@torch.no_grad()
def evaluate(model, loader, device="cpu", quiet: bool = True, flip: bool = False) -> dict:
    """Top-1 / top-5 accuracy (%), mean cross-entropy and per-image predictions of ``model`` over ``loader`` (eval
    mode, in the loader's order). ``flip``: flip test-time averaging -- the prediction is the mean of the softmax of
    each image and of its horizontal mirror, and the loss is the cross-entropy of that mean.

    Returns ``dict(top1, top5, loss, predictions, targets)``: top-5 is top-k with k = min(5, num_classes);
    ``predictions`` / ``targets`` are (N,) int64 CPU tensors (predicted and true class of each val image, in the val
    set's order). Under DDP (an initialized process group) each process passes its shard of the val set
    (``gv3lite.distributed.val_shard``): the counts are summed over all processes (all-reduce) and the per-image
    predictions gathered, so every process returns the metrics and predictions of the whole val set. Raises
    `NonFiniteError` when the model's logits are not finite (a diverged model).
    """
    model.eval()
    device = torch.device(device)
    correct1 = correct5 = loss = n = 0
    predictions, labels = [], []
    for batch in tqdm(loader, desc="eval", disable=quiet, leave=False):
        images, targets = to_device(batch[0], device), batch[1].to(device)
        logits = _logits(model, images, device, flip)
        predictions.append(logits.argmax(dim=1).cpu())
        labels.append(targets.cpu())
        loss += F.cross_entropy(logits, targets, reduction="sum").item()
        top1, top5 = accuracy(logits, targets, topk=(1, 5))  # timm: % of the batch; k capped at num_classes
        correct1 += round(top1.item() * len(targets) / 100)
        correct5 += round(top5.item() * len(targets) / 100)
        n += len(targets)
    correct1, correct5, loss, n = sum_over_processes([correct1, correct5, loss, n], device)
    return {"top1": 100.0 * correct1 / n, "top5": 100.0 * correct5 / n, "loss": loss / n,
            "predictions": gather_shards(torch.cat(predictions)), "targets": gather_shards(torch.cat(labels))}


def _logits(model, images, device, flip: bool) -> torch.Tensor:
    """(B, K) float logits of ``images``; with ``flip`` the log of the mean softmax of the images and their mirrors
    (softmax of it = that mean, so argmax, top-k and cross-entropy read the averaged prediction). Raises
    `NonFiniteError` for NaN/inf logits."""
    with autocast(device):
        logits = model(images).float()
        mirrored = model(torch.flip(images, dims=[3])).float() if flip else None
    if not bool(torch.isfinite(logits).all()) or (flip and not bool(torch.isfinite(mirrored).all())):
        raise NonFiniteError("the model's val logits are not finite (NaN/inf)")
    if flip:
        logits = ((logits.softmax(dim=1) + mirrored.softmax(dim=1)) / 2).log()
    return logits


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
    ~2.2x faster (2.22x measured by ``benchmarks/throughput.py``, case ``eval_deploy_vs_train``). ``model`` itself
    is unchanged and keeps its train/eval mode."""
    training = model.training
    model.eval()
    try:
        return reparameterize(model)
    finally:
        model.train(training)


# ----------------------------------------------------------------------------------------------- fit
def build_loaders(datasets, settings: LoopSettings, device) -> Loaders:
    """The `Loaders` of ``datasets`` = (train, val) for this process. Cached datasets get the batched path on
    ``device`` (``gv3lite.data.build_loader``); on CUDA an uncached train set without workers is decoded batch by
    batch on the GPU (``gv3lite.data.BatchedTrainLoader.decode``); under DDP the train set goes through a
    ``DistributedSampler`` and the val set is sharded. Raises ``ValueError`` when ``batch_size`` does not divide
    over the processes or gives no full batch."""
    (train_ds, val_ds), device = datasets, torch.device(device)
    world, rank = world_and_rank()
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
    train = build_loader(train_ds, settings.batch_size // world, train=True, generator=generator, sampler=sampler,
                         num_workers=settings.num_workers, device=device, batched=True if decode_on_device else None)
    val = build_loader(val_shard(val_ds, world, rank), max(settings.batch_size, 128), train=False,
                       num_workers=settings.num_workers, device=device)
    if len(train) == 0:
        raise ValueError(f"{len(train_ds)} train images give no full batch of {settings.batch_size}; "
                         "lower batch_size or use more images")
    return Loaders(train, val, sampler, generator, (train_ds, val_ds))


def fit(objects: TrainObjects, loaders: Loaders, settings: LoopSettings, callbacks=(), device="cpu") -> pd.DataFrame:
    """Train ``objects.model`` (already on ``device``) and return the per-epoch history.

    Columns: ``epoch`` (1-based), ``train_loss``, ``train_kd`` (mean KD term, NaN without a teacher), ``val_loss``,
    ``val_top1``, ``val_top5`` (%), ``ema_top1`` (% or NaN), ``lr`` (last step), ``seconds`` (epoch wall time incl.
    evaluation); val columns are NaN on epochs that ``settings.eval_every`` skips (the last is always evaluated).
    ``loaders``: `build_loaders`. ``callbacks``: `Callback` objects, called in order (``gv3lite.callbacks``: run
    directory, checkpoints and resume, predictions, the divergence guard, progress). ``settings.max_epochs`` stops
    early (the schedule follows ``settings.epochs``). Under ``torchrun``: DDP (``gv3lite.distributed``; whole-val
    metrics on every rank). ``settings.compile_model``: the training steps run through ``torch.compile(model)`` (the
    same weights; evaluation, EMA and checkpoints use the model itself). Compiled kernels may round differently from
    eager ones, so a compiled run is not bitwise equal to an eager one. It pays off on GPUs; on a 2-core CPU the first
    step compiles for ~6 min and the train step is only ~1.1x faster afterwards (``benchmarks/throughput.py
    --compile``). Raises `NonFiniteError` (or what a callback's ``on_diverged`` returns).
    """
    device = torch.device(device)
    world, rank = world_and_rank()
    objects.model = objects.model.to(memory_format=torch.channels_last)
    state = FitState(objects, loaders, settings, device, world, rank,
                     last_epoch=min(settings.epochs, settings.max_epochs or settings.epochs))
    _call(callbacks, "on_fit_start", state)
    model = wrap_ddp(objects.model, settings.sync_bn, world, device)
    stepping = dataclasses.replace(objects, model=torch.compile(model) if settings.compile_model else model)
    for epoch in range(state.start_epoch, state.last_epoch):
        state.epoch = epoch
        try:
            result = _run_epoch(state, stepping, callbacks)
            _call(callbacks, "on_epoch_end", state, result)
        except NonFiniteError as err:
            replacement = next((r for r in (c.on_diverged(state, err) for c in callbacks) if r is not None), err)
            if replacement is err:
                raise
            raise replacement from err
        state.best = max(state.best, result.score)
    return pd.DataFrame(state.history)


_VAL = ("loss", "top1", "top5")
_NO_VAL = dict.fromkeys(_VAL, float("nan"))  # an epoch that `LoopSettings.eval_every` skips


def _evaluate_reading(state: FitState, model) -> dict:
    """`evaluate` of ``model``'s deploy form as ``state.settings`` reads it: with ``precise_bn`` its BN statistics
    are first recomputed over the training images (in place, so the checkpoints saved after this epoch hold them and
    evaluate to the same numbers), with ``flip_tta`` flip-averaged."""
    if state.settings.precise_bn:
        precise_bn(model, state.loaders.datasets[0], seed=0, device=state.device)
    return evaluate(deploy_form(model), state.loaders.val, state.device, flip=state.settings.flip_tta)


def _run_epoch(state: FitState, stepping: TrainObjects, callbacks) -> EpochResult:
    """Seed, train and (when due) evaluate epoch ``state.epoch``; append its row to ``state.history``."""
    t0, epoch, settings, loaders = time.perf_counter(), state.epoch, state.settings, state.loaders
    seed_everything(_epoch_seed(settings.seed, epoch, state.rank), deterministic=False)
    loaders.generator.manual_seed(_epoch_seed(settings.seed, epoch))
    if loaders.sampler is not None:
        loaders.sampler.set_epoch(_epoch_seed(settings.seed, epoch))
    evaluated = (epoch + 1) % settings.eval_every == 0 or epoch + 1 == state.last_epoch
    stats = train_one_epoch(stepping, loaders.train, state.device, epoch=epoch,
                            start_step=epoch * len(loaders.train), callbacks=callbacks)
    ema = state.objects.ema
    if evaluated:
        val = _evaluate_reading(state, state.objects.model)
        val_ema = _evaluate_reading(state, ema.module) if ema is not None else None
    else:
        val, val_ema = _NO_VAL, None
    ema_top1 = val_ema["top1"] if val_ema is not None else float("nan")
    row = {"epoch": epoch + 1, "train_loss": stats["train_loss"], "train_kd": stats["train_kd"],
           "val_loss": val["loss"], "val_top1": val["top1"], "val_top5": val["top5"], "ema_top1": ema_top1,
           "lr": stats["lr"], "seconds": time.perf_counter() - t0}
    state.history.append(row)
    return EpochResult(row, val, val_ema, evaluated, *epoch_score(val, val_ema))
