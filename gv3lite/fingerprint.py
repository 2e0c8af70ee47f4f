"""The code fingerprint: which code trained a run, as a hash of the source that defines a training's arithmetic.

Owns `TRAINING_CODE` (the modules, and the one function of ``utils``, whose code decides a training's numbers),
`code_fingerprint` (their hash) and `fingerprint_status` (whether recorded runs were trained by the current code).

Every run of the study records ``code_fingerprint`` (its ``result.json`` and ``runs.csv``), and ``gv3lite readme
--check`` compares a committed study's fingerprints with the current code's: a run trained by code with another
fingerprint cannot be reproduced by today's ``make main``, so the README has to say so.

What counts: the network (``layers``, ``reparam``, ``branch_sums``, ``ghost``, ``ghostnetv3``, ``add_branches``, ``models``), the data
(scanning, subsets, decoding and the uint8 cache, transforms and augmentation, the batched loaders: ``data/``
but its download), the teacher, its cached outputs and the distillation objective (``teacher``, ``teacher_outputs``, ``distill``),
the recipe and its presets (``recipe``), the loop and what runs around it (``train``, ``bn_stats``: precise BN before evaluating; ``callbacks``: checkpoints and
exact resume; ``distributed``: DDP), the composition root (``experiment``) and the seeding
(``utils.seed_everything``). What does not: reporting and statistics (``stats``, ``verdicts``, ``figures``, the
study's analysis and README), file formats and writers (``checkpoint``, ``schemas``), scale-out (``launch``), the CLI. A budget's sizes
and a grid's cells need no place here: they are fields of the trained recipe, whose hash is the run id.

Data files that decide a training's numbers and ship with the package (``artifacts/``: the published soft labels of
``gv3lite.soft_labels``) are hashed by their bytes. The hash of the code: each file is parsed and unparsed
(``ast``) without its docstrings and comments, so editing documentation leaves the fingerprint alone; any change to a statement changes it, whether or not it
changes the numbers (the safe side). The library versions (torch is pinned, DEVELOPERS.md) are not in it. The
unparsed text is that of Python 3.11, the project's Python.
"""
from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

import pandas as pd

PACKAGE = Path(__file__).resolve().parent
# glob patterns under gv3lite/, or "file.py::function" for one top-level function of a module
TRAINING_CODE = ("layers.py", "reparam.py", "branch_sums.py", "ghost.py", "ghostnetv3.py", "add_branches.py", "models.py",
                 "data/*.py", "soft_labels.py", "teacher.py", "teacher_outputs.py", "distill.py", "recipe.py",
                 "bn_stats.py", "train.py", "train/*.py", "callbacks.py", "distributed.py", "experiment.py",
                 "utils.py::seed_everything", "artifacts/*")  # artifacts (published soft labels): by their bytes
NOT_TRAINING_CODE = ("data/download.py", "data/__init__.py", "train/__init__.py")  # re-exports, the opt-in download
FINGERPRINT_LENGTH = 12
UNKNOWN = "unknown"  # runs.csv / result.json of runs trained before fingerprints were recorded


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def code_text(path: Path, function: str | None = None) -> str:
    """The code of the file ``path`` (or of its top-level ``function``) without docstrings and comments, as
    ``ast.unparse`` writes it. Raises ``KeyError`` when the file has no such function."""
    tree = _strip_docstrings(ast.parse(Path(path).read_text(encoding="utf-8")))
    if function is None:
        return ast.unparse(tree)
    found = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == function]
    if not found:
        raise KeyError(f"{path} has no top-level {function!r}; update gv3lite.fingerprint.TRAINING_CODE")
    return ast.unparse(found[0])


def training_sources(package=PACKAGE, patterns=TRAINING_CODE) -> list[tuple[str, str | None]]:
    """``(path relative to the package, function or None)`` of every piece of `TRAINING_CODE`, sorted. A pattern
    that matches no file is left out only when it names a package folder that does not exist (``train/*.py``
    while ``train.py`` is a module); a plain file that is missing raises ``FileNotFoundError``."""
    package, found = Path(package), set()
    for pattern in patterns:
        name, _, function = pattern.partition("::")
        matches = sorted(p for p in package.glob(name)
                         if p.is_file() and p.relative_to(package).as_posix() not in NOT_TRAINING_CODE)
        if not matches and "*" not in name:
            raise FileNotFoundError(f"gv3lite/{name} (in gv3lite.fingerprint.TRAINING_CODE) does not exist; "
                                    "update TRAINING_CODE to where the training code now lives")
        found.update((p.relative_to(package).as_posix(), function or None) for p in matches)
    return sorted(found, key=lambda item: (item[0], item[1] or ""))


def code_fingerprint(package=PACKAGE) -> str:
    """A 12-hex-digit SHA-256 of the training code (`TRAINING_CODE`, each piece as `code_text` under its path):
    the same for two checkouts whose training code differs only in comments and docstrings. Computed again only
    when a file of it changed (size or modification time)."""
    sources = training_sources(package)
    stats = tuple((name, function, *_stat(Path(package) / name)) for name, function in sources)
    return _fingerprint(str(package), stats)


def _stat(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_mtime_ns, info.st_size


@functools.lru_cache(maxsize=8)
def _fingerprint(package: str, stats: tuple) -> str:
    digest = hashlib.sha256()
    for name, function, *_ in stats:
        digest.update(f"## {name}{'::' + function if function else ''}\n".encode())
        path = Path(package) / name
        digest.update(code_text(path, function).encode("utf-8") if name.endswith(".py") else path.read_bytes())
        digest.update(b"\n")
    return digest.hexdigest()[:FINGERPRINT_LENGTH]


def recorded_fingerprints(runs: pd.DataFrame) -> list[str]:
    """The distinct fingerprints of a runs.csv table, `UNKNOWN` for runs without one (no column, or empty)."""
    if "code_fingerprint" not in runs:
        return [UNKNOWN] if len(runs) else []
    values = runs["code_fingerprint"].fillna(UNKNOWN).astype(str).replace("", UNKNOWN)
    return sorted(set(values))


def fingerprint_status(runs: pd.DataFrame, current: str | None = None) -> dict:
    """Whether the runs of a runs.csv table were trained by the current training code.

    Returns ``dict(reproducible, current, recorded, unknown, other)``: ``reproducible`` is True when every run has the
    fingerprint ``current`` (default `code_fingerprint`); ``recorded`` the distinct fingerprints; ``unknown`` the
    number of runs without one (trained before fingerprints were recorded); ``other`` the number of runs with another
    fingerprint."""
    current = current or code_fingerprint()
    values = (runs["code_fingerprint"].fillna(UNKNOWN).astype(str).replace("", UNKNOWN) if "code_fingerprint" in runs
              else pd.Series([UNKNOWN] * len(runs), dtype=str))
    unique = runs.assign(_fp=values.values).drop_duplicates("run_id") if "run_id" in runs else runs.assign(_fp=values)
    unknown = int((unique["_fp"] == UNKNOWN).sum())
    other = int(((unique["_fp"] != UNKNOWN) & (unique["_fp"] != current)).sum())
    return {"reproducible": unknown == 0 and other == 0 and len(unique) > 0, "current": current,
            "recorded": recorded_fingerprints(runs), "unknown": unknown, "other": other}
