"""Deployment: the deploy form of a trained model as an ONNX file, its parity with PyTorch, and CPU timings.

Owns:
* `model_from_checkpoint(path, use_ema=True)`: the train-form model a ``gv3lite train`` checkpoint describes.
* `export_onnx(model, path, img_size=224, opset=18)`: re-parameterize (if needed) and write an ONNX file whose
  batch dimension is dynamic (input ``images`` (N, 3, H, W) float32 -> output ``logits`` (N, num_classes)).
* `onnx_parity(path, model, images)`: onnxruntime's logits against PyTorch's, as max absolute and relative
  differences (relative = max |ort - torch| / max |torch|).
* `time_model(fn, images)`: the median seconds of one call (``timeit``, after a warm-up call; one thread).
* `run_export` / ``add_export``: the ``gv3lite export --checkpoint ... --onnx out.onnx`` command.

Where deploying fits in the paper: GhostNetV3 trains with re-parameterizable branches (§3.1) and ships the fused
deploy form, whose latency the abstract quotes (14.46 ms for GhostNetV3 1.3x on a mobile phone; the device and
runtime are not named in the sources we have, see ``gv3lite/paper_results.csv``).
"""
from __future__ import annotations

import io
import os
import statistics
import timeit
from pathlib import Path

import torch

from gv3lite.checkpoint import load_checkpoint, non_finite_tensors, read_checkpoint
from gv3lite.models import build_model
from gv3lite.recipe import MIN_IMG_SIZE, Recipe
from gv3lite.reparam import reparameterize
from gv3lite.utils import write_atomic

ONNX_RTOL = 1e-4  # largest accepted max|onnxruntime - torch| / max|torch|
# opsets the TorchScript exporter writes this network with: below 11 its upsample (DFC attention) has no ONNX form
# (opset 5: "Unsupported: ONNX export of operator upsample_nearest2d"); 11, 13, 14, 17, 18, 20, 21 and 23 were
# exported and matched onnxruntime (torch 2.14.1, onnxruntime of the dev extra); 23 is torch's ONNX_MAX_OPSET
ONNX_OPSETS = range(11, 24)


def model_from_checkpoint(path, use_ema: bool | None = None) -> tuple[torch.nn.Module, Recipe, dict]:
    """The train-form model (``eval()`` mode, CPU) of a checkpoint written by ``gv3lite train`` / ``fit``, its
    `Recipe` (teacher dropped: not needed to run the model) and the checkpoint dict (``num_classes``, ``classes``,
    ...). ``use_ema``: None (default) loads the weights the checkpoint records as ``selected`` (the better of raw and
    EMA on val, ``gv3lite.callbacks.Checkpointer``; the EMA weights for older checkpoints without that entry); True /
    False force the EMA / raw weights. Used by ``gv3lite eval`` and ``gv3lite export``.

    Raises ``FileNotFoundError`` (no such file), ``FloatingPointError`` (NaN/inf weights: a diverged run) and ``ValueError`` (not a checkpoint, or one without a ``recipe``
    entry: for released weights build the model with ``gv3lite.create_model(name, checkpoint_path=...)``)."""
    ckpt = read_checkpoint(path)
    if not isinstance(ckpt, dict) or "recipe" not in ckpt or "num_classes" not in ckpt:
        raise ValueError(f"{path} has no 'recipe' entry; use a checkpoint written by gv3lite train (for other "
                         "weights: gv3lite.create_model(name, checkpoint_path=...) or gv3lite.load_checkpoint)")
    recipe = Recipe.from_dict({**ckpt["recipe"], "teacher": None})  # no teacher needed; its file may be gone
    model = build_model(recipe, ckpt["num_classes"])
    if use_ema is None:
        use_ema = ckpt.get("selected", "ema") == "ema"
    load_checkpoint(model, ckpt, use_ema=use_ema)
    bad = non_finite_tensors(model.state_dict())
    if bad:
        raise FloatingPointError(f"{path} holds non-finite weights (NaN/inf in {len(bad)} tensors, e.g. {bad[0]!r}): "
                                 "it comes from a diverged training; retrain with a lower learning rate (or use an "
                                 "earlier checkpoint)")
    return model.eval(), recipe, ckpt


def export_onnx(model: torch.nn.Module, path, img_size: int = 224, opset: int = 18) -> Path:
    """Write the deploy form of ``model`` to ``path`` as ONNX with a dynamic batch dimension.

    ``model``: a train-form or deploy-form network; it is re-parameterized (a copy: ``model`` is left as it is) and
    exported in ``eval()`` mode on the CPU. Input ``images`` float32 (N, 3, img_size, img_size), output ``logits``
    (N, num_classes); N is free. Uses the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``).
    Returns the path. The file is written atomically (``gv3lite.utils.write_atomic``: a good file at ``path`` is never
    replaced by a half-written one; a full disk names the path). Raises ``ValueError`` for ``img_size`` below
    ``MIN_IMG_SIZE`` (33: the network downsamples 32x) or an ``opset`` outside `ONNX_OPSETS` (11-23), and
    ``FileNotFoundError`` when the parent folder does not exist.
    """
    if isinstance(img_size, bool) or not (isinstance(img_size, int) and img_size >= MIN_IMG_SIZE):
        raise ValueError(f"img_size={img_size!r}: give the side in pixels the model was trained at (an int >= "
                         f"{MIN_IMG_SIZE}; the network downsamples 32x), e.g. --img-size 64, or leave it out to use "
                         "the recipe's")
    if isinstance(opset, bool) or opset not in ONNX_OPSETS:
        raise ValueError(f"opset={opset!r}: this network exports with ONNX opsets {ONNX_OPSETS.start} to "
                         f"{ONNX_OPSETS.stop - 1} (older ones lack its upsample; newer ones torch cannot write); "
                         "e.g. --opset 18 (the default)")
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"folder {path.parent.resolve()} does not exist; create it or choose another --onnx")
    deploy = reparameterize(model.cpu().eval()).eval()
    example = torch.randn(2, 3, img_size, img_size)
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(deploy, (example,), buffer, input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset,
                          dynamo=False)
    write_atomic(path, buffer.getbuffer(), action="write ONNX file")
    return path


def onnx_session(path, threads: int | None = 1):
    """An ``onnxruntime.InferenceSession`` on the CPU for ``path`` (``threads``: intra-op threads, default 1 as in
    `time_model`; ``None``: onnxruntime's default). Raises ``FileNotFoundError`` for a missing file."""
    import onnxruntime as ort
    if not Path(path).is_file():
        raise FileNotFoundError(f"ONNX file not found: {Path(path).resolve()}; write one with export_onnx")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_parity(session_or_path, model: torch.nn.Module, images: torch.Tensor) -> dict:
    """Compare onnxruntime with PyTorch (``model`` in ``eval()`` mode) on ``images`` (N, 3, H, W).

    Returns ``dict(max_abs, max_rel, ok)``: the largest |logit difference|, that divided by the largest |PyTorch
    logit|, and ``max_rel <= ONNX_RTOL`` (1e-4)."""
    session = onnx_session(session_or_path) if isinstance(session_or_path, (str, os.PathLike)) else session_or_path
    with torch.no_grad():
        expected = model.eval()(images).numpy()
    got = session.run(["logits"], {"images": images.numpy()})[0]
    max_abs = float(abs(got - expected).max())
    max_rel = max_abs / max(float(abs(expected).max()), 1e-12)
    return {"max_abs": max_abs, "max_rel": max_rel, "ok": max_rel <= ONNX_RTOL}


def time_model(fn, images: torch.Tensor, repeats: int = 5, threads: int | None = 1) -> float:
    """The median wall time in seconds of one call ``fn(images)`` (no autograd) over ``repeats`` calls, after one
    warm-up call (first-call allocations, onnxruntime's graph set-up), timed with ``timeit``.

    ``fn``: a module or any callable. ``threads``: torch intra-op threads during the timing (default 1, restored
    afterwards; ``None`` keeps the current setting). One thread is the default because on a shared machine a
    2-thread run waits on the other thread whenever another process holds a core, which can slow it many times.
    Raises ``ValueError`` for ``repeats`` < 1."""
    if not (isinstance(repeats, int) and repeats >= 1):
        raise ValueError(f"repeats={repeats!r}: give the number of timed calls (an int >= 1)")
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            fn(images)
            return statistics.median(timeit.repeat(lambda: fn(images), repeat=repeats, number=1))
    finally:
        torch.set_num_threads(before)


def ort_callable(session):
    """Wrap an onnxruntime session as ``images (torch.Tensor) -> logits (numpy array)`` for `time_model`."""
    return lambda images: session.run(["logits"], {"images": images.numpy()})[0]


# ------------------------------------------------------------------------------------------------ command
def add_export(subparsers) -> None:
    p = subparsers.add_parser("export", help="export a checkpoint's deploy form to ONNX and check it with "
                                             "onnxruntime")
    p.add_argument("--checkpoint", required=True, help="a last.pth / best.pth written by gv3lite train")
    p.add_argument("--onnx", required=True, metavar="OUT.onnx", help="the ONNX file to write")
    p.add_argument("--no-ema", action="store_true",
                   help="use the raw weights even where the checkpoint selected its EMA weights (default: the weights "
                        "it records as selected, the better of raw and EMA on val)")
    p.add_argument("--img-size", type=int, default=None, help="input side in px (default: the recipe's img_size)")
    p.add_argument("--opset", type=int, default=18, help=f"ONNX opset, {ONNX_OPSETS.start}-{ONNX_OPSETS.stop - 1} "
                                                         "(default 18)")
    p.set_defaults(func=run_export)


def run_export(args) -> int:
    """``gv3lite export``: 0 when onnxruntime matches PyTorch within ``ONNX_RTOL`` (relative), else 1."""
    model, recipe, _ = model_from_checkpoint(args.checkpoint, use_ema=False if args.no_ema else None)
    img_size = recipe.img_size if args.img_size is None else args.img_size  # --img-size 0 is refused, not ignored
    path = export_onnx(model, args.onnx, img_size=img_size, opset=args.opset)
    images = torch.randn(4, 3, img_size, img_size, generator=torch.Generator().manual_seed(0))
    parity = onnx_parity(path, model, images)
    print(f"{args.checkpoint} -> {path} ({path.stat().st_size / 1e6:.1f} MB, deploy form, input images "
          f"(N, 3, {img_size}, {img_size}), N dynamic); onnxruntime vs PyTorch train form: max |diff| "
          f"{parity['max_abs']:.2e}, relative {parity['max_rel']:.2e} "
          f"({'OK' if parity['ok'] else 'MISMATCH'}, limit {ONNX_RTOL:g})")
    return 0 if parity["ok"] else 1


__all__ = ["ONNX_RTOL", "ONNX_OPSETS", "model_from_checkpoint", "export_onnx", "onnx_session", "onnx_parity",
           "time_model", "ort_callable", "add_export", "run_export"]
