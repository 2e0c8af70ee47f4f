"""Loading weights from local checkpoint files, and atomic saving.

Owns: ``read_checkpoint``, ``save_checkpoint`` (atomic; stale temporary files of killed saves are removed),
``extract_state_dict``, ``clean_state_dict``, ``load_checkpoint``, and the trainer's own checkpoints:
``read_training_checkpoint`` / ``restore_training_state`` (resume).

Accepted layouts (all load strictly into the matching ``create_model(...)``):
* the official GhostNetV3 release (``ghostnetv3-1.0.pth.tar``): a dict with ``state_dict`` and ``state_dict_ema``;
  its key names are the architecture's business: a model may rename keys before loading (``checkpoint_filter``;
  ``GhostNetV3`` renames the official ``...primary_rpr_conv.0.bn.weight`` to ``.bn1.``) and name the fix of a load
  error (``checkpoint_hint``; ``GhostNetV3``: a train/deploy form mix-up); this module knows no architecture;
* timm training checkpoints (same two keys) and timm/our bare state_dicts;
* models saved from ``DataParallel``/``DistributedDataParallel`` (``module.`` prefix) or ``torch.compile``
  (``_orig_mod.`` prefix), prefixes stripped;
* our trainer's checkpoints: a dict with ``model`` and optionally ``model_ema``.
thop's ``total_ops`` / ``total_params`` buffers are dropped.

EMA choice: with ``use_ema=True`` (default) the EMA weights (``state_dict_ema`` / ``model_ema``) are taken when
present, because the paper's numbers are those of the EMA model (for the 1.0x release, PaddleClas PR #3413 measured
77.13% top-1 for ``state_dict_ema`` -- the paper's 77.1 -- and 76.93% for ``state_dict``). ``use_ema=False`` takes
the raw weights. Nothing is loaded partially: a checkpoint for another width, number of classes, branch setting or
form (train vs deploy) raises ``ValueError`` naming the first mismatching key.
"""
import io
import os
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from gv3lite.utils import remove_stale_temp_files, write_atomic

EMA_KEYS = ("state_dict_ema", "model_ema")
RAW_KEYS = ("state_dict", "model")
_STRIP_PREFIXES = ("module.", "_orig_mod.")
_THOP_SUFFIXES = ("total_ops", "total_params")


def read_checkpoint(path):
    """Load a checkpoint file on the CPU with ``torch.load(..., weights_only=True)`` (no arbitrary code runs).

    Raises:
        FileNotFoundError: ``path`` does not exist (the message gives the absolute path).
        ValueError: ``path`` is a directory, or a file torch cannot load (not a checkpoint, truncated, or holding
            objects other than tensors and plain containers); the message names the file and torch's error.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"checkpoint path {path.resolve()} is a directory; pass a file in it, e.g. {path}/last.pth")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path.resolve()}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises KeyError, RuntimeError, UnpicklingError, EOFError ... for bad files
        raise ValueError(f"{path} is not a readable PyTorch checkpoint ({type(err).__name__}: {_load_error(err)}); "
                         "pass a .pth file written by torch.save (e.g. gv3lite train's last.pth), and re-copy it if "
                         "it was truncated") from err


def _load_error(err: Exception) -> str:
    """torch's reason for refusing a file, without its advice to retry with ``weights_only=False`` (that would run
    the code a crafted file carries) and without its links: the sentences that say what was refused."""
    advice = re.compile(r"weights.only|re-running|trusted source|documentation|file an issue|two options|allowlist"
                        r"|^\(\d\)", flags=re.I)
    sentences = re.split(r"(?<=[.:])\s+|\n+", str(err))
    kept = [x.strip() for x in sentences if x.strip() and not advice.search(x.strip())]
    reason = " ".join(kept) or "refused by the weights-only loader"
    return ("refused by the weights-only loader: " + reason if isinstance(err, pickle.UnpicklingError)
            else reason)[:300]


def save_checkpoint(obj, path):
    """Save ``obj`` with ``torch.save`` atomically (``gv3lite.utils.write_atomic``): serialized in memory, written to a
    temporary file ``.<name>.<pid>.<random>.tmp`` in the same folder with the umask's mode, fsync, then ``os.replace``
    onto ``path``, so ``path`` is never half-written: after a crash, a full disk or a permission error it still holds
    its previous content. Creates parent folders; temporary files of killed saves are removed first.

    Returns the ``Path`` written. Raises ``OSError`` of the same type (``PermissionError``...) naming ``path``, the
    reason and the fix (e.g. disk full: free space or choose another folder; never torch's ``unexpected pos``); no
    temporary file is left behind.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return write_atomic(path, buffer.getbuffer(), action="save checkpoint")


def extract_state_dict(checkpoint, use_ema=True):
    """Pick the weights out of a loaded checkpoint.

    Returns:
        ``(state_dict, source)`` where source is the key used (``state_dict_ema``, ``model_ema``, ``state_dict``,
        ``model``) or ``"bare"`` when ``checkpoint`` is itself a state_dict.

    Raises:
        ValueError: no weights found, or ``use_ema=False`` but only EMA weights are present.
    """
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"a checkpoint must be a dict, got {type(checkpoint).__name__}")
    for key in (EMA_KEYS + RAW_KEYS) if use_ema else RAW_KEYS:
        if isinstance(checkpoint.get(key), Mapping) and checkpoint[key]:
            return checkpoint[key], key
    if not use_ema and any(isinstance(checkpoint.get(k), Mapping) for k in EMA_KEYS):
        raise ValueError("use_ema=False but the checkpoint holds only EMA weights "
                         f"({[k for k in EMA_KEYS if k in checkpoint]}); use use_ema=True")
    if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return checkpoint, "bare"
    raise ValueError(f"no weights found in checkpoint with top-level keys {sorted(checkpoint)[:10]}: expected a "
                     f"state_dict or a dict with one of {list(RAW_KEYS + EMA_KEYS)}")


def clean_state_dict(state_dict):
    """Normalise key names: strip ``module.``/``_orig_mod.`` prefixes, drop thop ``total_ops``/``total_params``
    buffers. Returns a new dict. (Renaming an architecture's keys is the model's `checkpoint_filter`.)

    Raises:
        ValueError: a value is not a tensor.
    """
    cleaned = {}
    for key, value in state_dict.items():
        if key.endswith(_THOP_SUFFIXES):
            continue
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"state_dict entry {key!r} is a {type(value).__name__}, not a tensor")
        for prefix in _STRIP_PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix):]
        cleaned[key] = value
    return cleaned


def _check_fits(model, state_dict, strict):
    """Raise ValueError naming the first key that does not fit ``model`` (shape always; names if ``strict``)."""
    expected = model.state_dict()
    hint = model.checkpoint_hint(state_dict) if hasattr(model, "checkpoint_hint") else ""
    for key, value in state_dict.items():
        if key in expected and value.shape != expected[key].shape:
            raise ValueError(f"checkpoint does not fit the model: {key!r} has shape {tuple(value.shape)} in the "
                             f"checkpoint but {tuple(expected[key].shape)} in the model (a checkpoint for another "
                             f"width, num_classes or num_conv_branches?).{hint}")
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if strict and (missing or unexpected):
        first = f"missing key {missing[0]!r}" if missing else f"unexpected key {unexpected[0]!r}"
        raise ValueError(f"checkpoint does not fit the model: {first} ({len(missing)} missing, "
                         f"{len(unexpected)} unexpected keys; another width or branch setting?).{hint}")
    return missing, unexpected


def load_checkpoint(model, path_or_dict, use_ema=True, strict=True):
    """Load weights into ``model`` from a file path or an already loaded checkpoint dict (layouts: module docstring).

    Args:
        model: e.g. ``create_model('ghostnetv3_100')`` (train form) or ``create_model(..., deploy=True)``.
        path_or_dict: ``str``/``PathLike`` path, or a dict.
        use_ema: take EMA weights when present (default; the paper reports EMA); False takes the raw weights.
        strict: require exactly matching keys (default). With ``strict=False`` missing/unexpected keys are
            allowed but reported with a ``UserWarning``; shape mismatches are always errors.

    Returns:
        The key the weights came from (``state_dict_ema``, ``model_ema``, ``state_dict``, ``model`` or ``bare``).

    Raises:
        FileNotFoundError: missing file. ValueError: no weights found, or the weights do not fit ``model``
            (message names the first mismatching key and, for a train/deploy mix-up, the fix).
    """
    checkpoint = read_checkpoint(path_or_dict) if isinstance(path_or_dict, (str, os.PathLike)) else path_or_dict
    state_dict, source = extract_state_dict(checkpoint, use_ema)
    state_dict = clean_state_dict(state_dict)
    if hasattr(model, "checkpoint_filter"):  # the architecture's own key renames (GhostNetV3: the official release)
        state_dict = model.checkpoint_filter(state_dict)
    missing, unexpected = _check_fits(model, state_dict, strict)
    model.load_state_dict(state_dict, strict=strict)
    if missing or unexpected:
        warnings.warn(f"load_checkpoint(strict=False): {len(missing)} missing keys (e.g. {missing[:3]}), "
                      f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]}) were not loaded", UserWarning)
    return source


def non_finite_tensors(state_dict) -> list[str]:
    """Names of the floating-point tensors in ``state_dict`` that hold a NaN or an infinity (a diverged model)."""
    return [k for k, v in state_dict.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


# --------------------------------------------------------------------------------- the trainer's checkpoints
TRAINING_KEYS = ("model", "optimizer", "scheduler", "epoch", "recipe", "history", "best_top1")


def read_training_checkpoint(path):
    """`read_checkpoint`, then check the file is a checkpoint ``gv3lite.train.fit`` wrote (``last.pth``/``best.pth``):
    a dict with `TRAINING_KEYS`. Returns the dict.

    Raises ``FileNotFoundError`` (missing file) and ``ValueError`` naming the file, what it holds instead (e.g. a bare
    tensor, or a state_dict without optimizer state) and the fix.
    """
    ckpt = read_checkpoint(path)
    fix = ("move it away (to start the run over) or pass the run directory it belongs to; weights alone load with "
           "gv3lite.load_checkpoint")
    if not isinstance(ckpt, Mapping):
        raise ValueError(f"{path} holds a {type(ckpt).__name__}, not a gv3lite training checkpoint (a dict with "
                         f"{', '.join(TRAINING_KEYS)}); {fix}")
    missing = [k for k in TRAINING_KEYS if k not in ckpt]
    if missing:
        raise ValueError(f"{path} is not a gv3lite training checkpoint: it lacks {missing} (top-level keys: "
                         f"{sorted(map(str, ckpt))[:8]}); {fix}")
    return ckpt


def restore_training_state(ckpt, path, model, optimizer, scheduler, ema_model=None) -> tuple[list, int, float]:
    """Load a training checkpoint (`read_training_checkpoint`) into ``model``, ``optimizer``, ``scheduler`` and the
    EMA copy ``ema_model`` (or None). Returns ``(history, epoch, best_top1)``.

    Raises ``ValueError`` naming ``path`` when the state does not fit (another width, number of classes, branch
    setting or optimizer), with the first mismatching key and the fix, and ``FloatingPointError`` when its weights
    hold a NaN or an infinity (the trainer never saves such weights: the file was damaged or written elsewhere);
    nothing is partly loaded into ``model``.
    """
    for key in ("model", "model_ema"):
        bad = non_finite_tensors(ckpt.get(key) or {}) if isinstance(ckpt.get(key), Mapping) else []
        if bad:
            raise FloatingPointError(f"cannot resume from {path}: its {'EMA ' if key == 'model_ema' else ''}weights "
                                     f"hold NaN/inf ({len(bad)} tensors, e.g. {bad[0]!r}); gv3lite never saves such "
                                     "weights, so the file was damaged or replaced: restore a good copy of it, or "
                                     "move it away and train into a new --out")
    try:
        _check_fits(model, ckpt["model"], strict=True)
        if ema_model is not None:
            if not isinstance(ckpt.get("model_ema"), Mapping):
                raise ValueError("the run keeps an EMA but the checkpoint has no EMA weights (model_ema)")
            _check_fits(ema_model, ckpt["model_ema"], strict=True)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ema_model is not None:
            ema_model.load_state_dict(ckpt["model_ema"])
        return list(ckpt["history"]), int(ckpt["epoch"]), float(ckpt["best_top1"])
    except (ValueError, KeyError, RuntimeError, TypeError, AttributeError) as err:
        raise ValueError(f"cannot resume from {path}: {err}. The checkpoint does not fit this run's model and "
                         "optimizer: resume with the recipe that wrote it (the run's recipe.yaml), or move it away "
                         "to start over") from err


__all__ = ["read_checkpoint", "save_checkpoint", "remove_stale_temp_files", "extract_state_dict",
           "clean_state_dict", "load_checkpoint", "non_finite_tensors", "read_training_checkpoint", "restore_training_state"]
