"""Small helpers shared by the data, training and CLI modules.

Owns: seeding (`seed_everything`), the user cache directory (`cache_dir`), repository paths (`repo_root`,
`default_data_root`), `git_commit`, `cpu_identity` (which CPU kernels a run used), `resolve_device`
(`DeviceNotAvailableError`), the notebooks' torch thread count (`set_torch_threads`), `ddp_timeout`
(``GV3LITE_DDP_TIMEOUT_MIN``), `check_splits_apart` (val/ must not reach train/'s images), `check_output_dir` (an
output folder is writable, checked before any work; `output_dir`: removed again when the work is refused while it is
empty) and the one atomic writer every file the project writes goes through (`write_atomic`, `write_csv`: a temporary
file in the same folder, fsync, ``os.replace``; the umask's mode; disk full names the path; stale temporary files of
killed writers removed by `remove_stale_temp_files`). Nothing here imports torchvision or timm.
The budgets: `gv3lite.budgets`.
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import glob
import gzip
import io
import os
import platform
import random
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch

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


def cpu_identity() -> str:
    """``"<CPU model>, <instruction set>"``, e.g. ``"AMD EPYC, AVX512"``: the model name from ``/proc/cpuinfo``
    (``platform.processor()`` elsewhere, ``"unknown CPU"`` when neither says) and the vector instruction set torch's
    CPU kernels run with (``torch.backends.cpu.get_cpu_capability()``). Trainings on CPUs that differ here may round
    differently and drift apart, so a study records it (``gv3lite.study.records.CallLog``)."""
    model = ""
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
    return f"{model or platform.processor() or 'unknown CPU'}, {torch.backends.cpu.get_cpu_capability()}"


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
        _refresh_index()
        # `git diff` compares content through the clean filters (.gitattributes: nbstripout), so a notebook that was
        # only run or opened is not a change; `git status` may still list it (git's size check), see README
        changed = run("diff", "--name-only", "HEAD", "--", ".", ":!results", ":!figures", ":!README.md")
        return commit + ("+dirty" if changed else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


REFRESH_TIMEOUT = 60  # s: how long `git_commit` waits for ``git update-index --refresh``


def _refresh_index() -> None:
    """``git update-index -q --refresh``, given up after `REFRESH_TIMEOUT` seconds with SIGTERM, never SIGKILL: git
    removes its ``index.lock`` when terminated, while a killed git leaves it behind and every later git command that
    writes the index fails until the lock is deleted by hand."""
    process = subprocess.Popen(["git", "update-index", "-q", "--refresh"], cwd=repo_root(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        process.wait(timeout=REFRESH_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.terminate()
        process.wait()


class DeviceNotAvailableError(RuntimeError, ValueError):
    """A device was asked for that this machine does not have (e.g. ``cuda`` without a GPU). A ``RuntimeError`` (as
    before) and a ``ValueError`` (a bad argument: the ``gv3lite`` command prints it as a one-line error, exit 2)."""


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` → CUDA if available else CPU; ``"cuda"`` without a GPU raises `DeviceNotAvailableError`
    (a ``RuntimeError``).

    Raises ``ValueError`` for a string torch does not know as a device (e.g. ``'gpu'``), listing cpu, cuda, auto, and
    `DeviceNotAvailableError` for a device type other than cpu and cuda (e.g. ``'mps'``).
    """
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"unknown device {device!r}; use 'cpu', 'cuda' (or 'cuda:N') or 'auto'") from err
    if device.type not in ("cpu", "cuda"):  # e.g. 'mps', 'meta', 'xpu': torch knows them, gv3lite does not run there
        raise DeviceNotAvailableError(f"device {str(device)!r} is not supported: gv3lite trains and evaluates on "
                                      "'cpu' or 'cuda' (or 'cuda:N'); use --device cpu, cuda or auto")
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


DDP_TIMEOUT_ENV = "GV3LITE_DDP_TIMEOUT_MIN"  # minutes a torchrun process waits for the others (default 10)


def ddp_timeout() -> datetime.timedelta:
    """How long a process of a ``torchrun`` job waits for the others in a collective before it gives up:
    ``GV3LITE_DDP_TIMEOUT_MIN`` minutes (default 10; torch's own default is 30). Raises ``ValueError`` for a value
    that is not a positive number of minutes."""
    text = os.environ.get(DDP_TIMEOUT_ENV, "10")
    try:
        minutes = float(text)
    except ValueError:
        minutes = float("nan")
    if not minutes > 0 or minutes == float("inf"):
        raise ValueError(f"{DDP_TIMEOUT_ENV}={text!r}: give the minutes a torchrun process waits for the others, "
                         "a number > 0 (e.g. 10)")
    return datetime.timedelta(minutes=minutes)


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


@contextlib.contextmanager
def output_dir(path: str | os.PathLike, flag: str = "--out"):
    """`check_output_dir` for the length of a ``with`` block that yields the folder (a ``Path``): the folders it
    created (``path`` and its missing parents) are removed again, deepest first, when the block raises while they are
    still empty, so a call refused after the check (a bad data root, a class mismatch...) leaves no empty folder
    behind. A folder that holds anything is kept. Raises what `check_output_dir` raises, and re-raises the block's
    error."""
    path = Path(path).expanduser()
    made = [folder for folder in [path, *path.parents] if not folder.exists()]
    checked = check_output_dir(path, flag)
    try:
        yield checked
    except BaseException:
        for folder in made:
            try:
                folder.rmdir()  # only an empty folder: anything written in it is kept
            except OSError:
                break
        raise


def check_splits_apart(root) -> None:
    """Refuse an ImageFolder root whose ``val/`` reaches an image file that ``train/`` reaches too (``val`` itself or
    one of its class folders linked to ``train/``, or one image linked or hard-linked into both): the model would be
    scored on images it trained on, and top-1 would mean nothing. Raises ``ValueError`` naming both paths and the fix.
    Files are compared by device and inode; links are followed, each folder once (the loops themselves are refused
    by ``gv3lite.data``). A root without both splits passes (``gv3lite.data`` names what is missing)."""
    root = Path(root)
    if not (root / "train").is_dir() or not (root / "val").is_dir():
        return

    def files(split: str) -> dict:
        found, seen = {}, set()
        for folder, subfolders, names in os.walk(root / split, followlinks=True):
            if os.path.realpath(folder) in seen:
                subfolders[:] = []  # reached again through a link: its files are listed already
                continue
            seen.add(os.path.realpath(folder))
            for name in names:
                try:
                    stat = os.stat(os.path.join(folder, name))
                except OSError:
                    continue  # a dangling link: gv3lite.data names it
                found.setdefault((stat.st_dev, stat.st_ino), os.path.join(folder, name))
        return found
    train = files("train")
    both = [(path, train[key]) for key, path in files("val").items() if key in train]
    if both:
        raise ValueError(f"data root '{root}': {len(both)} val image(s) are train images too, e.g. '{both[0][0]}' is "
                         f"the same file as '{both[0][1]}' (through a link or a hard link), so the model would be "
                         "scored on images it trained on; give val/ its own images (remove the link)")


# ------------------------------------------------------------------------------------------- atomic writes
_WRITE_FIXES = {errno.ENOSPC: "free disk space there or choose another output folder",
                errno.EDQUOT: "free space within your disk quota or choose another output folder",
                errno.EACCES: "make the folder writable (chmod u+w) or choose another output folder",
                errno.EPERM: "make the folder writable (chmod u+w) or choose another output folder",
                errno.EROFS: "the file system is read-only: choose another output folder"}


def file_mode() -> int:
    """The mode ``open()`` gives a new file: ``0o666`` less the process umask (``0o644`` under umask 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_atomic(path, data: bytes | str, action: str = "write") -> Path:
    """Write ``data`` (bytes, or str as UTF-8) to ``path`` atomically: a temporary file ``.<name>.<pid>.<random>.tmp``
    in the same folder (mode `file_mode`: the umask's, not ``mkstemp``'s 0600), fsync, then ``os.replace`` onto
    ``path``. A reader sees the old file or the new one, never half of one; after a crash, a full disk or a
    permission error ``path`` still holds its previous content and no temporary file is left. Parent folders are
    created; temporary files of writers that no longer run are removed first (`remove_stale_temp_files`).

    Returns the ``Path``. Raises ``OSError`` of the same type and errno (``PermissionError``, disk full ``ENOSPC``...)
    whose message names ``path``, the reason and the fix: ``could not <action> <path> (its previous content is
    kept): No space left on device; free disk space there or choose another output folder``.
    """
    path = Path(path)
    data = data.encode("utf-8") if isinstance(data, str) else data
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), file_mode())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        _discard(tmp)
        if err.errno is None:
            raise
        kept = " (its previous content is kept)" if path.is_file() else ""
        fix = _WRITE_FIXES.get(err.errno, "check the disk and the folder's permissions")
        raise type(err)(err.errno, f"could not {action} {path}{kept}: {err.strerror or err}; {fix}") from err
    except BaseException:
        _discard(tmp)
        raise
    return path


def write_csv(table, path, **to_csv) -> Path:
    """`write_atomic` of a pandas ``table`` as CSV (``index=False`` unless given); a ``.gz`` name is gzip-compressed
    (``mtime=0``: the same table gives the same bytes)."""
    to_csv.setdefault("index", False)
    text = table.to_csv(**to_csv).encode("utf-8")
    return write_atomic(path, gzip.compress(text, mtime=0) if str(path).endswith(".gz") else text)


def figure_bytes(fig, **savefig) -> bytes:
    """A matplotlib figure rendered as PNG bytes (for `write_atomic`)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", **savefig)
    return buffer.getvalue()


def _discard(tmp) -> None:
    if tmp is not None and os.path.exists(tmp):
        os.unlink(tmp)


def remove_stale_temp_files(path) -> list[Path]:
    """Remove ``.<name>.*.tmp`` files next to ``path`` that no running process writes: those whose process id (the
    second dot-field) is not alive on this machine, and those without one (older gv3lite versions). Returns the
    removed paths. A write in progress by a live process is left alone."""
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and _alive(int(pid)):
            continue
        try:
            tmp.unlink()
            removed.append(tmp)
        except FileNotFoundError:  # its writer finished or another cleaner was first
            pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True
