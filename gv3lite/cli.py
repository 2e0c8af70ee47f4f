"""The ``gv3lite`` command line.

Owns: the argparse front end. Each subcommand is one ``add_<name>(subparsers)`` function that registers its
parser and sets ``func`` to a ``run_<name>(args) -> int`` (exit status); to add one (e.g. ``reproduce``), write
the pair and append ``add_<name>`` to ``SUBCOMMANDS``.

  gv3lite train [--recipe FILE] [flags]     train a recipe (defaults = the main job), print top-1/top-5, wall time
  gv3lite eval --checkpoint PATH [--data]   val top-1 of the train form and the re-parameterized (deploy) form
  gv3lite reproduce --budget smoke|quick|medium|full the paper's ablation grids (gv3lite.study)
  gv3lite report RESULTS [--out DIR]        re-analyse recorded runs without training
  gv3lite readme [--check]                  README.md's Results block from the committed results/
  gv3lite compare YOURS COMMITTED           your study beside the committed one (reproduction.md)
  gv3lite publish --budget quick|medium     maintainers: a trained study becomes the committed results (make publish)
  gv3lite export --checkpoint PATH --onnx OUT.onnx   the deploy form as ONNX, checked by onnxruntime (gv3lite.export)
"""
from __future__ import annotations

import argparse
import dataclasses
import errno
import math
import os
import re
import shlex
import sys
import time
from pathlib import Path


import torch
import torch.distributed as dist
import yaml

from gv3lite.data import ImageFolderDataset, build_loader, resolve_data_root
from gv3lite.experiment import check_names, run
from gv3lite.export import add_export, model_from_checkpoint
from gv3lite.ghostnetv3 import MODEL_WIDTHS
from gv3lite.recipe import Recipe, field_kind, load_yaml, preset
from gv3lite.reparam import reparameterize
from gv3lite.study.cli import add_compare, add_publish, add_readme, add_report, add_reproduce
from gv3lite.utils import DDP_TIMEOUT_ENV, check_splits_apart, ddp_timeout, output_dir, resolve_device

WIDTHS = {width: name for name, width in MODEL_WIDTHS.items()}  # --width 0.5 -> ghostnetv3_050


# ------------------------------------------------------------------------------------------------ train
def add_train(subparsers) -> None:
    p = subparsers.add_parser("train", help="train GhostNetV3 on an ImageFolder dataset (default: the main job)",
                              description="Train a recipe. Values come from the Recipe defaults (the main job), "
                                          "then --recipe FILE, then --set KEY=VALUE and the flags below.")
    p.add_argument("--recipe", metavar="FILE", help="a recipe .yaml/.json (gv3lite.recipe.Recipe fields)")
    p.add_argument("--preset", help="start from a named recipe: default | conventional | ghostnetv3 "
                                    "(gv3lite.recipe.PRESETS; ghostnetv3 distils from the same-data teacher, see "
                                    "--teacher); --recipe FILE replaces it")
    p.add_argument("--data", help="ImageFolder root with train/ and val/ (default: $GV3LITE_DATA or "
                                  "../shared/data/imagenette2-224)")
    p.add_argument("--download", action="store_true", help="download Imagenette into --data if it is missing")
    p.add_argument("--out", default="runs/train", help="run directory (metrics.csv, checkpoints); default runs/train")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pth (recipe: OUT/recipe.yaml)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress bars and no per-epoch lines")
    p.add_argument("--sync-bn", action="store_true", help="under torchrun on GPUs: BatchNorm statistics over the "
                                                          "global batch (torch SyncBatchNorm)")
    p.add_argument("--compile", action="store_true", help="train steps through torch.compile (worth it on GPUs; on "
                                                          "a CPU the first step compiles for minutes)")
    g = p.add_argument_group("recipe overrides (default: the recipe's value)")
    g.add_argument("--width", type=float, choices=sorted(WIDTHS), help="width multiplier (sets --model)")
    for name, help_text in RECIPE_FLAGS.items():
        _add_recipe_flag(g, name, help_text)
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="set any Recipe field (value parsed as YAML), e.g. --set auto_augment=randaugment")
    p.set_defaults(func=run_train)


# the recipe fields `gv3lite train` also takes as flags, with their help; each flag's type is the field's annotation
RECIPE_FLAGS = {
    "model": "ghostnetv3_050 | ghostnetv3_100 | ghostnetv3_130 | ghostnetv3_160", "epochs": None, "batch_size": None,
    "img_size": "train/eval input side in px", "opt": "sgd | adamw | ... (timm create_optimizer_v2 names)",
    "lr": "peak learning rate", "sched": "onecycle | cosine | step", "warmup_epochs": None, "weight_decay": None,
    "label_smoothing": None, "ema": "keep an EMA of the weights", "ema_decay": None, "seed": None,
    "classes": "train on these class folders only", "images_per_class_train": "class-balanced train subset size",
    "images_per_class_val": "class-balanced val subset size",
    "precise_bn": "recompute the BN statistics of the raw and EMA weights over the train images before evaluating",
    "flip_tta": "evaluate the mean softmax of each val image and its horizontal mirror",
    "tuning": "include | exclude: train on all of train/, or on train/ minus the tuning split (100 images per class "
              "that settings are chosen on; the presets and the study: exclude)",
    "teacher": "imagenette_same_data (the ghostnetv3 preset's and the study's: trained on Imagenette train/ minus "
               "the tuning split only) | efficientnet_lite0 | efficientnet_lite2 (OUTSIDE DATA: ImageNet-pretrained "
               "on 1.28 M images, among them 3,791 of the 3,925 Imagenette val images, which they have therefore "
               "seen) | a gv3lite checkpoint path; --set teacher=null for none",
}
_RECIPE_FIELDS = {f.name: f for f in dataclasses.fields(Recipe)}


def _add_recipe_flag(group, name: str, help_text: str | None) -> None:
    """``--<name>`` for the recipe field ``name``, typed by the field's annotation (``gv3lite.recipe.field_kind``)."""
    kind, _ = field_kind(_RECIPE_FIELDS[name])
    flag = "--" + name.replace("_", "-")
    if kind == "bool":
        group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
    elif kind == "list[str]":
        group.add_argument(flag, nargs="+", metavar="NAME", help=help_text)
    else:
        group.add_argument(flag, type={"int": int, "float": float, "str": str}[kind], help=help_text)


def recipe_from_args(args):
    """The recipe of ``gv3lite train``: defaults ← ``--recipe FILE`` ← ``--set`` and flags (`RECIPE_FLAGS`), all
    checked by the same ``Recipe.validate``.

    Raises ``ValueError`` (a malformed ``--set``, a bad value, a field given both as ``--set`` and as a flag with
    different values: neither silently wins) and ``KeyError`` (an unknown field or preset)."""
    recipe = _load_recipe(args.recipe) if args.recipe else preset(getattr(args, "preset", None) or "default")
    changes = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            changes[key.strip()] = load_yaml(value)
        except yaml.YAMLError as err:
            raise ValueError(f"--set {item!r}: the value is not valid YAML ({yaml_problem(err)}); fix or quote "
                             "it") from err
    flags = {name: getattr(args, name) for name in RECIPE_FLAGS if getattr(args, name) is not None}
    if args.width is not None:
        flags["model"] = WIDTHS[args.width]
    for name, value in flags.items():  # a flag never silently overrides a --set of the same field
        if name in changes and changes[name] != value:
            width = name == "model" and args.width is not None
            flag = f"--width {args.width:g}" if width else f"--{name.replace('_', '-')} {value!r}"
            raise ValueError(f"{name} is given twice, as --set {name}={changes[name]!r} and {flag}; give it once")
    return recipe.replace(**{**changes, **flags})


def _load_recipe(path: str):
    """``Recipe.load(path)``; a bad value in the file names the file (``--resume`` reads the run's own recipe.yaml
    without being told, so "recipe.num_classes='nu'" alone pointed at nothing the user typed)."""
    try:
        return Recipe.load(path)
    except (ValueError, KeyError) as err:
        if isinstance(err.__cause__, yaml.YAMLError):  # PyYAML's message spans 4-8 lines: one line instead
            raise ValueError(f"recipe file {str(path)!r} is not valid YAML: {yaml_problem(err.__cause__)}; fix the "
                             "file (or restore it from a copy)") from err
        text = error_message(err)
        if str(path) in text:
            raise
        raise ValueError(f"recipe file {str(path)!r}: {text}; fix or restore the file (a run's recipe.yaml: restore "
                         "it from a copy, or pass --recipe with the recipe the run was trained with)") from err


def yaml_problem(err: yaml.YAMLError) -> str:
    """One line for a YAML parse error: what is wrong and where (line and column, counted from 1), and what was being
    parsed, without PyYAML's excerpt of the source (its own message spans 4-8 lines)."""
    if not isinstance(err, yaml.MarkedYAMLError):
        return " ".join(str(err).split())

    def at(mark) -> str:
        return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    text = f"{err.problem or 'malformed YAML'}{at(err.problem_mark)}"
    return text + (f" ({err.context}{at(err.context_mark)})" if err.context else "")


def run_train(args) -> int:
    """``gv3lite train``. Raises ``FileExistsError`` when ``--out`` is (inside) a file or holds a run and ``--resume``
    is not given, ``PermissionError`` when it is not writable, ``DeviceNotAvailableError`` for ``--device cuda``
    without a GPU (all before any data is read), ``ChildProcessError`` when another process of a ``torchrun`` job
    stopped answering (`stopped_process`; after ``GV3LITE_DDP_TIMEOUT_MIN`` minutes), and what `recipe_from_args` and
    ``gv3lite.experiment.run`` raise."""
    if args.resume and not args.recipe and (Path(args.out) / "recipe.yaml").is_file():
        args.recipe = str(Path(args.out) / "recipe.yaml")  # resume the run's own recipe unless told otherwise
    recipe = recipe_from_args(args)  # a bad option fails before --out is created
    check_names(recipe)  # an unknown model or teacher, a missing same-data teacher file: before --out and the data
    resolve_device(args.device)  # --device cuda without a GPU, or mps: before --out is created and the data read
    with output_dir(args.out):  # before any data is read: a file, a file's sub-folder, not writable; a refused
        if not args.resume and (Path(args.out) / "last.pth").exists():  # data root leaves no empty --out behind
            raise FileExistsError(f"{args.out}/last.pth exists; pass --resume to continue it or choose a new --out")
        root = resolve_data_root(args.data, download=args.download)
        check_splits_apart(root)  # val/ reaching train/'s images (a link): refused before anything is trained
        t0 = time.perf_counter()
        history = _run_explained(args, recipe, root)
    last = history.iloc[-1]
    print(f"{recipe.model} {recipe.img_size}px, {len(history)} epochs: val top-1 {last.val_top1:.2f}%  "
          f"top-5 {last.val_top5:.2f}%" + (f"  EMA top-1 {last.ema_top1:.2f}%" if recipe.ema else "")
          + f"  wall time {time.perf_counter() - t0:.0f} s  ->  {args.out}")
    return 0


def _run_explained(args, recipe, root):
    """``gv3lite.experiment.run`` of ``gv3lite train``; a collective that failed because another process of a
    ``torchrun`` job stopped answering (`stopped_process`) becomes a ``ChildProcessError`` saying what is kept and
    what to run."""
    try:
        return run(recipe, root, args.out, device=args.device, resume=args.resume, quiet=args.quiet,
                   sync_bn=args.sync_bn, compile_model=args.compile)
    except RuntimeError as err:
        if not stopped_process(err):
            raise
        rank, world = os.environ.get("RANK", "0"), os.environ.get("WORLD_SIZE", "?")
        last = Path(args.out) / "last.pth"
        then = (f"Finished epochs are kept in {last}: run the same torchrun command with --resume" if last.is_file()
                else "No epoch had finished (no last.pth): run the same torchrun command again")
        raise ChildProcessError(f"rank {rank} of {world}: another process of this torchrun job stopped answering "
                                f"({_first_line(err)}; a process waits {ddp_timeout().total_seconds() / 60:g} min, "
                                f"{DDP_TIMEOUT_ENV}), so the job stops. {then}") from err


def stopped_process(err: BaseException) -> bool:
    """Whether ``err`` is a collective of a ``torchrun`` job that failed because another process stopped answering
    (torch's ``DistError``, or Gloo's timeout / closed connection / a pair closed by an earlier timeout, as libgloo
    words them) rather than a bug."""
    if isinstance(err, dist.DistError):
        return True
    text = str(err)
    return dist.is_available() and dist.is_initialized() and any(
        mark in text for mark in ("gloo/transport", "Timed out waiting", "Connection closed by peer",
                                  "Connection reset by peer", "Application timeout caused pair closure",
                                  "Socket Timeout"))  # the last two: Gloo's errors of a pair that timed out before


def _first_line(err: BaseException) -> str:
    line = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return re.sub(r"^\[[^\]]*\]\s*", "", line)[:200]  # without Gloo's "[/path/to/file.cc:78]" prefix


# ------------------------------------------------------------------------------------------------- eval
def add_eval(subparsers) -> None:
    p = subparsers.add_parser("eval", help="evaluate a checkpoint in train form and re-parameterized form")
    p.add_argument("--checkpoint", required=True, help="a last.pth / best.pth written by gv3lite train")
    p.add_argument("--data", help="ImageFolder root (default: $GV3LITE_DATA or ../shared/data/imagenette2-224)")
    p.add_argument("--no-ema", action="store_true",
                   help="use the raw weights even where the checkpoint selected its EMA weights (default: the weights "
                        "it records as selected, the better of raw and EMA on val)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--images-per-class", type=int, default=None, help="evaluate on a class-balanced val subset")
    p.add_argument("--atol", type=float, default=1e-3, help="largest allowed |logit difference| (default 1e-3)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run_eval)


def run_eval(args) -> int:
    """``gv3lite eval``: 0 when both forms agree within ``--atol``, else 1. Raises ``ValueError`` for a negative
    ``--atol``, a ``--batch-size`` or ``--images-per-class`` below 1, a file that is not a gv3lite checkpoint, ``FileNotFoundError`` for a missing one."""
    if not args.atol >= 0:
        raise ValueError(f"--atol {args.atol}: must be >= 0 (the largest allowed |logit difference|, e.g. 1e-3)")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size {args.batch_size}: must be an integer >= 1 (images per forward pass, e.g. 256)")
    if args.images_per_class is not None and args.images_per_class < 1:
        raise ValueError(f"--images-per-class {args.images_per_class}: must be an integer >= 1, or leave it out to "
                         "evaluate on every val image")
    model, recipe, ckpt = model_from_checkpoint(args.checkpoint, use_ema=False if args.no_ema else None)
    device = resolve_device(args.device)
    model = model.to(device).eval()
    deploy = reparameterize(model).to(device).eval()
    val = ImageFolderDataset(resolve_data_root(args.data), "val", recipe.img_size, classes=ckpt.get("classes"),
                             per_class=args.images_per_class, seed=recipe.data_seed)
    correct, max_diff, n = [0, 0], 0.0, 0
    with torch.no_grad():
        for images, targets in build_loader(val, args.batch_size, train=False):
            images, targets = images.to(device), targets.to(device)
            a, b = model(images), deploy(images)
            if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
                raise FloatingPointError(f"{args.checkpoint}: the model gives non-finite logits (NaN/inf) on the val "
                                         "images, so the two forms cannot be compared; retrain with a lower "
                                         "learning rate")
            max_diff = max(max_diff, (a - b).abs().max().item())
            correct[0] += (a.argmax(1) == targets).sum().item()
            correct[1] += (b.argmax(1) == targets).sum().item()
            n += len(targets)
    top1 = [100.0 * c / n for c in correct]
    ok = n > 0 and math.isfinite(max_diff) and max_diff <= args.atol  # NaN never passes
    print(f"{args.checkpoint}: {n} val images  train-form top-1 {top1[0]:.2f}%  re-parameterized top-1 "
          f"{top1[1]:.2f}%  max |logit diff| {max_diff:.2e}  ({'OK' if ok else 'MISMATCH'}, atol {args.atol:g})")
    return 0 if ok else 1


# ------------------------------------------------------------------------------------------------- main
SUBCOMMANDS = [add_train, add_eval, add_reproduce, add_report, add_readme, add_compare, add_publish, add_export]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gv3lite", description="GhostNetV3 (arXiv 2404.11202) on a CPU: "
                                     "train, evaluate, re-parameterize.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


# what the package raises for bad input (a bad flag, recipe value, path or file), a machine that refuses (permissions,
# a full disk, no GPU: OSError, DeviceNotAvailableError is a ValueError) and a diverged training (FloatingPointError);
# anything else is a bug: traceback
USER_ERRORS = (ValueError, KeyError, FileNotFoundError, FileExistsError, NotImplementedError, TypeError, OSError,
               FloatingPointError)
_OS_FIXES = {errno.EACCES: "check its permissions (chmod) or choose another path",
             errno.EPERM: "check its permissions (chmod) or choose another path",
             errno.ENOSPC: "free disk space or choose another --out", errno.EDQUOT: "free disk space (quota)",
             errno.EROFS: "the file system is read-only: choose another path",
             errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
             errno.EISDIR: "it is a folder: pass a file"}


def error_message(err: BaseException) -> str:
    """One line for a user error: the message without ``KeyError`` quotes or an ``[Errno N]`` prefix; a bare OS
    error (e.g. ``PermissionError: [Errno 13] Permission denied: 'x'``) gets its path and a fix."""
    if isinstance(err, KeyError) and len(err.args) == 1:
        return str(err.args[0])
    if isinstance(err, OSError) and err.strerror:
        if err.filename is None:
            return err.strerror  # our own OSErrors: OSError(errno, full message)
        fix = _OS_FIXES.get(err.errno, "")
        return f"{err.strerror}: {err.filename!r}" + (f"; {fix}" if fix else "")
    return str(err)


def resume_command(args, argv) -> str:
    """The command that continues an interrupted ``train`` (with ``--resume`` once ``--out`` holds a ``last.pth``;
    the same command when no epoch finished yet) or ``reproduce`` (the same command: it resumes by itself). When
    ``GV3LITE_RESUME`` is set (the Makefile sets ``make main`` / ``make medium``), that command comes first: it is
    what the user typed."""
    argv = list(argv)
    if args.command == "train" and "--resume" not in argv:
        if (Path(args.out) / "last.pth").is_file():
            argv.append("--resume")
    command = "gv3lite " + shlex.join(argv)
    typed = os.environ.get("GV3LITE_RESUME", "").strip()
    return f"{typed}   (it runs: {command})" if typed else command


def main(argv=None) -> int:
    """Entry point of the ``gv3lite`` command; returns the exit status.

    A user error (`USER_ERRORS`) prints ``gv3lite <command>: error: <message>`` to stderr and returns 2 (as
    argparse does for bad flags); with ``GV3LITE_DEBUG=1`` it is raised with its traceback instead. Other
    exceptions (e.g. torch's RuntimeErrors) propagate with their traceback. An interrupt (Ctrl-C) prints the exact
    command that resumes (`resume_command`) and returns 130.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as err:
        if os.environ.get("GV3LITE_DEBUG") == "1":
            raise
        hint = "\n(a TypeError may be a bug: set GV3LITE_DEBUG=1 for the traceback)" if type(err) is TypeError else ""
        print(f"gv3lite {args.command}: error: {error_message(err)}{hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C (or SIGTERM during `reproduce --jobs`): no traceback, say how to go on
        print(f"gv3lite {args.command}: interrupted; finished epochs and runs are kept in their run directories. "
              f"To continue, run:\n  {resume_command(args, argv)}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
