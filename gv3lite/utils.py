"""Small helpers shared by the data, training and CLI modules.

Owns: seeding (`seed_everything`), the run budget (`budget`, from ``GV3LITE_BUDGET``), the user cache
directory (`cache_dir`), repository paths (`repo_root`, `default_data_root`), `git_commit`,
`resolve_device` (`DeviceNotAvailableError`), the notebooks' torch thread count (`set_torch_threads`) and `check_output_dir` (an output folder is writable, checked before any
work). Nothing here imports torchvision or timm.
"""
from __future__ import annotations

import errno
import os
import random
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch

BUDGET_NAMES = ("smoke", "quick", "medium", "full")  # the sizes of each: gv3lite.ablation.BUDGETS


def seed_everything(seed: int, deterministic: bool = True) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA) and return a CPU ``torch.Generator`` seeded with ``seed``.

    With ``deterministic=True`` torch is asked for deterministic kernels
    (``torch.use_deterministic_algorithms(True, warn_only=True)``: ops without a deterministic version
    warn instead of failing) and cuDNN autotuning is switched off.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    return torch.Generator().manual_seed(seed)


def budget() -> str:
    """The run budget from ``GV3LITE_BUDGET``: ``smoke`` (CI, minutes; the default), ``quick`` (a laptop CPU,
    under an hour), ``medium`` (all of Imagenette on a 2-core CPU, ~2 h 15 min over one or more sittings) or ``full`` (a
    GPU). Raises ``ValueError`` for any other value."""
    value = os.environ.get("GV3LITE_BUDGET", "smoke").strip().lower()
    if value not in BUDGET_NAMES:
        raise ValueError(f"GV3LITE_BUDGET={value!r} is not a budget; set it to one of {BUDGET_NAMES}")
    return value


def set_torch_threads(threads: int | None = None) -> int:
    """Pin torch's intra-op threads (``torch.set_num_threads``) and return how many: ``threads`` when given, else
    ``OMP_NUM_THREADS`` when set, else half the CPU cores this process may use (at least 1, at most 8).

    Why not torch's default (every core): on a small or shared machine an op split over every core stalls whenever
    another process holds one of them; on the 2-core machine of issue 25 one smoke training step took 1.5-9.3 s with
    2 threads and 0.13 s with 1. Raises ``ValueError`` for a count below 1 or an ``OMP_NUM_THREADS`` that is not a
    positive integer.
    """
    if threads is None:
        env = os.environ.get("OMP_NUM_THREADS", "").strip()
        if env and not (env.isdigit() and int(env) >= 1):
            raise ValueError(f"OMP_NUM_THREADS={env!r} is not a positive integer; set it to e.g. 1 or unset it")
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        threads = int(env) if env else min(8, max(1, cores // 2))
    if threads < 1:
        raise ValueError(f"threads={threads} is below 1; give a positive number of threads")
    torch.set_num_threads(threads)
    return threads


def cache_dir() -> Path:
    """The user cache directory: ``GV3LITE_CACHE`` or ``~/.cache/gv3lite`` (created if missing; never the repo)."""
    path = Path(os.environ.get("GV3LITE_CACHE") or Path.home() / ".cache" / "gv3lite").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def repo_root() -> Path:
    """The checkout this package lives in (the folder that holds ``gv3lite/``)."""
    return Path(__file__).resolve().parent.parent


def default_data_root() -> Path:
    """Where this repository's data lies when neither ``--data`` nor ``GV3LITE_DATA`` is given:
    ``<repo>/../shared/data/imagenette2-224``."""
    return repo_root().parent / "shared" / "data" / "imagenette2-224"


def git_commit() -> str:
    """The short git commit of the checkout, ``+dirty`` appended when tracked files changed in content (after the
    git clean filters: notebook outputs do not count); ``"unknown"`` outside git.

    Changes under ``results/`` and ``figures/`` and to ``README.md`` do not count: they are what our own commands
    write (``gv3lite reproduce`` rewrites ``results/quick/runs.csv`` and the figures before it records the commit in
    the report; ``gv3lite readme`` rewrites README's Results block, so a budget finished over several sittings of
    ``make medium`` would otherwise record its later runs as ``+dirty``)."""
    try:
        run = lambda *a: subprocess.run(["git", *a], cwd=repo_root(), capture_output=True, text=True,  # noqa: E731
                                        timeout=10, check=True).stdout.strip()
        commit = run("rev-parse", "--short", "HEAD")
        # refresh the index's file stats first (its exit code only says some files differ): without it, files whose
        # stats git cannot trust (e.g. checked out in the same second as the index was written) are passed through
        # the clean filter -- one nbstripout process per notebook -- on every call
        subprocess.run(["git", "update-index", "-q", "--refresh"], cwd=repo_root(), capture_output=True, timeout=60)
        # `git diff` compares content through the clean filters (.gitattributes: nbstripout), so a notebook that was
        # only run or opened is not a change; `git status` may still list it (git's size check), see README
        changed = run("diff", "--name-only", "HEAD", "--", ".", ":!results", ":!figures", ":!README.md")
        return commit + ("+dirty" if changed else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class DeviceNotAvailableError(RuntimeError, ValueError):
    """A device was asked for that this machine does not have (e.g. ``cuda`` without a GPU). A ``RuntimeError`` (as
    before) and a ``ValueError`` (a bad argument: the ``gv3lite`` command prints it as a one-line error, exit 2)."""


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` → CUDA if available else CPU; ``"cuda"`` without a GPU raises `DeviceNotAvailableError`
    (a ``RuntimeError``).

    Raises ``ValueError`` for a string torch does not know as a device (e.g. ``'gpu'``), listing cpu, cuda, auto.
    """
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"unknown device {device!r}; use 'cpu', 'cuda' (or 'cuda:N') or 'auto'") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        why = (f"torch {torch.__version__} is a CUDA {torch.version.cuda} build but finds no GPU: check the driver "
               "(nvidia-smi) and CUDA_VISIBLE_DEVICES" if torch.version.cuda else
               f"torch {torch.__version__} is a CPU-only build: install a CUDA build on a GPU machine")
        raise DeviceNotAvailableError(f"device {str(device)!r} was asked for but torch sees no GPU ({why}); or use "
                                      "--device cpu (or auto)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceNotAvailableError(f"device {str(device)!r} was asked for but this machine has "
                                      f"{torch.cuda.device_count()} GPU(s) (cuda:0 ..); use one of them")
    return device


def check_output_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Make sure ``path`` is, or can be created as, a writable folder; create it and return it as a ``Path``.

    Meant to run before any data is decoded, so a bad output place fails in a second, not after the work. Raises
    ``FileExistsError`` when ``path`` or one of its parents is an existing file, and ``PermissionError`` (or the
    ``OSError`` of a full / read-only disk) when a file cannot be created in it; each names ``flag``, the path and the
    fix.
    """
    path = Path(path).expanduser()
    for parent in [path, *path.parents]:
        if parent.exists() and not parent.is_dir():
            where = "is an existing file" if parent == path else f"is inside {str(parent)!r}, an existing file"
            raise FileExistsError(f"{flag} {str(path)!r} {where}, not a folder; choose another {flag}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        fix = ("the disk is full: free space or choose another" if err.errno == errno.ENOSPC else
               "make it writable (chmod u+w) or choose another")
        raise type(err)(err.errno, f"{flag} {str(path)!r} is not writable ({err.strerror or err}); {fix} "
                                   f"{flag}") from err
    return path
