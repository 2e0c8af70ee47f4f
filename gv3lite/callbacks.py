"""What happens around the training loop, as ``gv3lite.train.Callback`` objects that ``fit`` calls.

Owns:
* `Checkpointer`: the run directory of a training (``recipe.yaml``, ``run_info.json``, and after every epoch
  ``metrics.csv``, ``best.pth`` and, last, ``last.pth``; every file atomic: ``gv3lite.utils.write_atomic``) and
  exact resume from ``last.pth`` (`check_resumable`: the one
  place that checks a resume can start); a model with non-finite weights is never saved (`check_finite_weights`);
* `PredictionWriter`: ``predictions.csv``, every val image's prediction at the last evaluation;
* `DivergenceGuard`: a non-finite training loss stops the run at once, and a diverged run ends with one error naming
  the epoch, the last good checkpoint and the fix (`diverged`);
* `Progress`: the per-batch progress bar and the per-epoch line.
Under DDP only rank 0 writes files and prints; every rank resumes.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch
import yaml
from tqdm.auto import tqdm

from gv3lite.checkpoint import (non_finite_tensors, read_checkpoint, read_training_checkpoint, restore_training_state,
                                save_checkpoint)
from gv3lite.train import Callback, EpochResult, FitState, NonFiniteError
from gv3lite.utils import git_commit, write_atomic, write_csv


def check_resumable(out_dir, resume: bool) -> None:
    """Raise ``FileNotFoundError`` when ``resume`` is asked for but ``out_dir/last.pth`` does not exist."""
    if resume and (out_dir is None or not (Path(out_dir) / "last.pth").is_file()):
        raise FileNotFoundError(f"resume=True but {out_dir}/last.pth does not exist; run without --resume first")


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
                          f"{lr:.3g} at the last step) or check the data, and train into a new --out")


class Checkpointer(Callback):
    """The run directory ``out_dir`` and exact resume (see the module docstring).

    ``config``: a plain dict (the recipe) stored as ``recipe.yaml`` and in every checkpoint; on ``resume=True`` it
    must equal the one in ``last.pth``. Raises ``FileNotFoundError`` at construction for ``resume`` without
    ``out_dir/last.pth`` (so a run fails before it reads data), ``ValueError`` on resume for a file that is not a
    training checkpoint, another config or state that does not fit (``gv3lite.checkpoint.restore_training_state``),
    and `NonFiniteError` for weights that became non-finite (nothing is saved; the previous ``last.pth`` stays).
    ``best.pth``: the epoch with the best val top-1 of the raw or the EMA weights (`gv3lite.train.epoch_score`); every
    checkpoint records in ``selected`` (``"raw"`` or ``"ema"``) which of its two sets of weights gave that epoch's
    score, and ``gv3lite.export.model_from_checkpoint`` loads those by default.
    """

    def __init__(self, out_dir, config: dict | None = None, resume: bool = False):
        check_resumable(out_dir, resume)
        self.out_dir, self.config, self.resume = Path(out_dir), config, resume

    def on_fit_start(self, state: FitState) -> None:
        if self.resume:
            self._load(state)
        if state.rank == 0:
            self._write_run_info(state)

    def on_epoch_end(self, state: FitState, result: EpochResult) -> None:
        if state.rank != 0:
            return
        ckpt = {**self._state(state, max(state.best, result.score)), "selected": result.weights}
        check_finite_weights(ckpt, ckpt["epoch"] - 1)
        # last.pth last: it marks the epoch done. A kill before it (after metrics.csv, best.pth or, from
        # PredictionWriter, predictions.csv) resumes from the previous epoch and rewrites them the same (resume is
        # exact); so no resumable run ever lacks a file of an epoch its last.pth counts (issue 26)
        write_csv(pd.DataFrame(state.history), self.out_dir / "metrics.csv")
        if result.score > state.best:
            save_checkpoint(ckpt, self.out_dir / "best.pth")
        save_checkpoint(ckpt, self.out_dir / "last.pth")

    def _load(self, state: FitState) -> None:
        """Load ``last.pth`` into the built objects; set the history, the first epoch and the best score."""
        path, o = self.out_dir / "last.pth", state.objects
        ckpt = read_training_checkpoint(path)
        if ckpt.get("recipe") != self.config:
            raise ValueError(f"{path} was written by a different recipe; resume with the same one "
                             f"(see {path.parent}/recipe.yaml) or use a new --out")
        state.history, state.start_epoch, state.best = restore_training_state(
            ckpt, path, o.model, o.optimizer, o.scheduler, o.ema.module if o.ema is not None else None)

    def _state(self, state: FitState, best_top1: float) -> dict:
        """What ``last.pth`` / ``best.pth`` hold after an epoch: weights (and EMA), optimizer, schedule, the config,
        the class list and the history so far (``epoch`` = epochs done), so that resuming is exact."""
        o, train_ds = state.objects, state.loaders.datasets[0]
        return {"model": o.model.state_dict(), "model_ema": o.ema.module.state_dict() if o.ema else None,
                "optimizer": o.optimizer.state_dict(), "scheduler": o.scheduler.state_dict(),
                "epoch": len(state.history), "recipe": self.config, "num_classes": len(train_ds.classes),
                "classes": train_ds.classes, "history": state.history, "best_top1": best_top1}

    def _write_run_info(self, state: FitState) -> None:
        """``recipe.yaml`` (the config, when given) and ``run_info.json`` (environment, data, whether the training
        steps were compiled)."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.config is not None:
            write_atomic(self.out_dir / "recipe.yaml", yaml.safe_dump(self.config, sort_keys=False))
        train_ds, val_ds = state.loaders.datasets
        info = {"git_commit": git_commit(), "torch": torch.__version__, "device": str(state.device),
                "world_size": state.world, "num_classes": len(train_ds.classes), "classes": train_ds.classes,
                "train_images": len(train_ds), "val_images": len(val_ds),
                "data_root": str(getattr(train_ds, "root", None)), "compiled": state.settings.compile_model}
        write_atomic(self.out_dir / "run_info.json", json.dumps(info, indent=2) + "\n")


class PredictionWriter(Callback):
    """``out_dir/predictions.csv`` after every evaluated epoch (rank 0): per val image its index (``val_index``),
    true class (``target``), the raw and the EMA weights' prediction (``pred_raw``, ``correct_raw``, ``pred_ema``,
    ``correct_ema``; the EMA columns empty without EMA)."""

    def __init__(self, out_dir):
        self.path = Path(out_dir) / "predictions.csv"

    def on_epoch_end(self, state: FitState, result: EpochResult) -> None:
        if state.rank != 0 or not result.evaluated:
            return
        val, val_ema = result.val, result.val_ema
        table = pd.DataFrame({"val_index": range(len(val["targets"])), "target": val["targets"].numpy(),
                              "pred_raw": val["predictions"].numpy()})
        table["correct_raw"] = (table["pred_raw"] == table["target"]).astype(int)
        if val_ema is not None:
            table["pred_ema"] = val_ema["predictions"].numpy()
            table["correct_ema"] = (table["pred_ema"] == table["target"]).astype(int)
        else:
            table["pred_ema"] = table["correct_ema"] = pd.NA
        write_csv(table, self.path)


class DivergenceGuard(Callback):
    """Stops a run whose training loss is NaN/inf at that step (before the backward pass), and turns every
    `NonFiniteError` of an epoch into the one error of `diverged`, naming ``out_dir/last.pth`` when rank 0 kept one
    (``out_dir=None``: nothing is written, "no checkpoint was saved")."""

    def __init__(self, out_dir=None):
        self.out_dir = out_dir

    def on_loss(self, parts, logits: torch.Tensor, epoch: int, step: int) -> None:
        if not torch.isfinite(parts.loss):
            what = "logits and loss" if not bool(torch.isfinite(logits).all()) else "loss"
            raise NonFiniteError(f"the training {what} became {parts.loss.item()} at epoch {epoch + 1}, step "
                                 f"{step + 1}")

    def on_diverged(self, state: FitState, err: NonFiniteError) -> NonFiniteError:
        out_dir = self.out_dir if state.rank == 0 else None
        return diverged(err, state.epoch + 1, out_dir, state.objects.optimizer.param_groups[0]["lr"])


class Progress(Callback):
    """A progress bar over each epoch's batches (running mean loss) and, on rank 0, one line per epoch: loss, val
    top-1/top-5, EMA top-1, learning rate and wall time."""

    def __init__(self):
        self.bar = None

    def on_epoch_start(self, epoch: int, num_batches: int) -> None:
        self.bar = tqdm(total=num_batches, desc=f"epoch {epoch + 1} train", leave=False)

    def on_step_end(self, step: int, mean_loss: float) -> None:
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{mean_loss:.3f}")

    def on_epoch_end(self, state: FitState, result: EpochResult) -> None:
        self.bar.close()
        if state.rank != 0:
            return
        row, has_ema = result.row, state.objects.ema is not None
        tqdm.write(f"epoch {row['epoch']}/{state.settings.epochs}  loss {row['train_loss']:.3f}  val top-1 "
                   f"{row['val_top1']:.2f}  top-5 {row['val_top5']:.2f}"
                   + (f"  EMA top-1 {row['ema_top1']:.2f}" if has_ema else "")
                   + f"  lr {row['lr']:.2e}  {row['seconds']:.0f}s")


def run_callbacks(out_dir, config: dict | None, resume: bool = False, quiet: bool = False) -> list[Callback]:
    """The callbacks of a training run, in the order they act: progress (unless ``quiet``), predictions, divergence
    guard, checkpoints (the last two only with an ``out_dir``; `Checkpointer` raises ``FileNotFoundError`` for
    ``resume`` without ``out_dir/last.pth``)."""
    callbacks: list[Callback] = [] if quiet else [Progress()]
    callbacks.append(DivergenceGuard(out_dir))
    if out_dir is not None or resume:
        callbacks.append(Checkpointer(out_dir, config, resume))  # first, so that a bad resume fails at once
        callbacks.insert(-1, PredictionWriter(out_dir))
    return callbacks
