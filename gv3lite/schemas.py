"""The results files on read: one declarative schema per file (pandera) and one reader that turns any damage into one
line naming the file, the problem and the fix.

Owns: `SCHEMAS` (``runs.csv``, ``history.csv``, ``predictions.csv.gz``, ``verdicts.csv`` of the one-factor grids and
of the factorial (`FACTORIAL_VERDICTS`), ``calls.csv``: required
columns, dtypes, ranges such as 0 <= top-1 <= 100, no NaN where a number is required, unique keys), `read_results`
(read + validate; truncated gzip, a non-UTF-8 or empty file, a malformed CSV, a repeated header line are refused the
same way) and `ResultsFileError` (a ``ValueError``: the ``gv3lite`` command prints it as one line and exits 2).
Cross-file and plan checks (row counts against the plan, every run with its history) live with the study code that
knows the plan; they raise the same error through `results_error`.
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaError, SchemaErrors

PERCENT = [pa.Check.in_range(0, 100)]
NON_NEGATIVE = [pa.Check.ge(0)]
PROBABILITY = [pa.Check.in_range(0, 1)]


def _col(dtype, checks=None, nullable=False, coerce=True) -> pa.Column:
    return pa.Column(dtype, checks or [], nullable=nullable, coerce=coerce)


SCHEMAS = {
    "runs.csv": pa.DataFrameSchema({
        "grid": _col(str), "cell": _col(str), "seed": _col(int, NON_NEGATIVE),
        "run_id": _col(str, [pa.Check.str_matches(r"^[0-9a-f]{12}$")]),
        "top1": _col(float, PERCENT), "top5": _col(float, PERCENT), "top1_raw": _col(float, PERCENT),
        "top1_ema": _col(float, PERCENT, nullable=True), "train_seconds": _col(float, NON_NEGATIVE, nullable=True),
    }, unique=["grid", "cell", "seed"]),
    "history.csv": pa.DataFrameSchema({
        "run_id": _col(str), "epoch": _col(int, [pa.Check.ge(1)]), "train_loss": _col(float),
        "val_top1": _col(float, PERCENT, nullable=True), "ema_top1": _col(float, PERCENT, nullable=True),
        "lr": _col(float, NON_NEGATIVE), "seconds": _col(float, NON_NEGATIVE),
    }, unique=["run_id", "epoch"]),
    "predictions.csv.gz": pa.DataFrameSchema({
        "run_id": _col(str), "val_index": _col(int, NON_NEGATIVE), "target": _col(int, NON_NEGATIVE),
        "pred_raw": _col(int, NON_NEGATIVE), "correct_raw": _col(int, [pa.Check.isin([0, 1])]),
        "pred_ema": _col(float, NON_NEGATIVE, nullable=True),
        "correct_ema": _col(float, [pa.Check.isin([0, 1])], nullable=True),
    }, unique=["run_id", "val_index"]),
    "verdicts.csv": pa.DataFrameSchema({
        "grid": _col(str), "cell": _col(str), "baseline": _col(str), "claim": _col(str, nullable=True),
        "diff": _col(float), "low": _col(float, nullable=True), "high": _col(float, nullable=True),
        "p_holm": _col(float, PROBABILITY, nullable=True), "mde": _col(float, NON_NEGATIVE, nullable=True),
        "n": _col(int, [pa.Check.ge(1)]), "verdict": _col(str), "per_seed": _col(str, nullable=True),
    }, unique=["grid", "cell", "baseline"]),
    "factorial verdicts.csv": pa.DataFrameSchema({
        "claim": _col(str), "direction": _col(str), "diff": _col(float), "se": _col(float, NON_NEGATIVE),
        "df": _col(float, [pa.Check.gt(0)]), "low": _col(float), "high": _col(float),
        "level": _col(float, PROBABILITY), "verdict": _col(str), "decided_at_look": _col(int, NON_NEGATIVE),
    }, unique=["claim"]),
    "calls.csv": pa.DataFrameSchema({
        "started": _col(pd.Timestamp), "command": _col(str), "git_commit": _col(str),
        "wall_seconds": _col(float, NON_NEGATIVE), "trained": _col(int, NON_NEGATIVE),
        "skipped": _col(int, NON_NEGATIVE), "jobs": _col(int, [pa.Check.ge(1)]),
        "interrupted": _col(str, [pa.Check.isin(["True", "False"])]),
    }),
}


FACTORIAL_VERDICTS = "factorial verdicts.csv"  # the schema of a factorial study's verdicts.csv (`read_results` kind)


class ResultsFileError(ValueError):
    """A results file that is missing a column, holds a value out of range, NaN where a number is required, a
    repeated header line, or is truncated / not a CSV: the message names the file, the problem and the fix."""


def restore_it(path) -> str:
    """The first half of every damaged-results fix: ``restore it (git checkout -- <path> if it is committed, or a
    backup)`` (a study of your own lives in the git-ignored ``runs/``, so git cannot restore it there)."""
    return f"restore it (git checkout -- {path} if it is committed, or a backup)"


def results_error(path, problem: str, fix: str | None = None) -> ResultsFileError:
    """The one-line error for ``path``: ``<path>: <problem>; <fix>``. The default fix names both cases: a committed
    file (no run folders beside it) is restored from git or a backup; in a study of your own (``runs/study/...``,
    git-ignored, its ``runs/<id>/`` folders kept) the file is moved away and ``gv3lite reproduce`` rebuilds it."""
    fix = fix or (f"{restore_it(path)} or, in a study whose run folders runs/<id>/ remain, move it away: "
                  "`gv3lite reproduce` with the same --out rebuilds it and re-trains what is missing")
    return ResultsFileError(f"results file {path}: {problem}; {fix}")


def read_results(path, kind: str | None = None, fix: str | None = None, **read_csv) -> pd.DataFrame:
    """Read a results CSV (``.gz`` decompressed) and validate it with ``SCHEMAS[kind]`` (``kind`` defaults to the
    file name). Returns the table as read (the schema's coercions only check; text columns keep pandas' dtypes).

    Raises ``FileNotFoundError`` (no such file) and `ResultsFileError` for a file that is empty, truncated, not
    gzip / UTF-8 / CSV, repeats its header line, or breaks its schema; each message names ``path``, the first
    problem (column, value and line) and ``fix``. Other ``OSError`` s (permissions) pass through with their path.
    """
    path = Path(path)
    kind = kind or path.name
    if not path.is_file():
        raise FileNotFoundError(f"results file {path} does not exist; {fix or 'run `gv3lite reproduce` to write it'}")
    try:
        table = pd.read_csv(path, **read_csv)
    except (EOFError, gzip.BadGzipFile, zlib.error, UnicodeDecodeError, pd.errors.EmptyDataError,
            pd.errors.ParserError) as err:
        raise results_error(path, _read_problem(err), fix) from err
    if not str(path).endswith(".gz") and not _ends_with_newline(path):
        raise results_error(path, f"is truncated (its last line, line {len(table) + 1}, is incomplete)", fix)
    repeated = table.index[(table.astype(str) == pd.Index(table.columns).astype(str)).all(axis=1)]
    if len(repeated):
        raise results_error(path, f"line {repeated[0] + 2} repeats the header line (two files appended into one?)",
                            fix)
    try:
        SCHEMAS[kind].validate(table, lazy=True)
    except SchemaErrors as err:
        raise results_error(path, _schema_problem(err.failure_cases, SCHEMAS[kind].unique), fix) from err
    except SchemaError as err:  # pragma: no cover - lazy=True collects; kept for pandera versions that do not
        raise results_error(path, str(err).splitlines()[0], fix) from err
    return table


def _ends_with_newline(path: Path) -> bool:
    """Whether a (non-empty) text file ends with a newline, as every file pandas writes does."""
    with open(path, "rb") as f:
        f.seek(0, 2)
        if f.tell() == 0:
            return True
        f.seek(-1, 2)
        return f.read(1) in (b"\n", b"\r")


def _show(value) -> str:
    return f"{value:g}" if isinstance(value, float) else repr(str(value))


def _read_problem(err: Exception) -> str:
    if isinstance(err, (EOFError, zlib.error)):
        return "is truncated (its compressed data ends early)"
    if isinstance(err, gzip.BadGzipFile):
        return "is not a gzip file although its name ends in .gz"
    if isinstance(err, UnicodeDecodeError):
        return f"is not UTF-8 text (byte {err.start}: {err.reason})"
    if isinstance(err, pd.errors.EmptyDataError):
        return "is empty (no header line)"
    return f"is not a well-formed CSV ({str(err).strip().splitlines()[0]})"


def _schema_problem(cases: pd.DataFrame, keys) -> str:
    """One sentence for the first of pandera's failure cases: a missing column, else a value of the wrong type, else
    the first failing line."""
    check = cases["check"].astype(str)
    rank = (~check.eq("column_in_dataframe")).astype(int) + (~check.str.match(r"column_in|coerce_dtype|dtype")
                                                             ).astype(int)
    cases = cases.assign(_rank=rank).sort_values(["_rank", "index"], na_position="last")
    case = cases.iloc[0]
    column, check, value = case["column"], str(case["check"]), _show(case["failure_case"])
    line = f"line {int(case['index']) + 2}" if pd.notna(case["index"]) else "the file"
    more = f" (and {len(cases) - 1} more problems)" if len(cases) > 1 else ""
    if check == "column_in_dataframe":
        problem = f"lacks column {value}"
    elif check == "not_nullable":
        problem = f"column {column!r} is empty (NaN) in {line}, where a value is required"
    elif check.startswith("coerce_dtype") or check.startswith("dtype"):
        problem = f"column {column!r} holds {value} in {line}, not of type {check.split('(')[-1].rstrip(')')}"
    elif "duplicates" in check or check == "multiple_fields_uniqueness":
        problem = f"{line} has the same {', '.join(keys or [])} as another line (each must be unique)"
    else:
        problem = f"column {column!r} holds {value} in {line}, which fails {check}"
    return problem + more


__all__ = ["SCHEMAS", "FACTORIAL_VERDICTS", "ResultsFileError", "results_error", "read_results"]
