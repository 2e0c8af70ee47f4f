"""Which code and which command made a study's records, and whether a study folder may be resumed.

Owns:
* `portable_command`: a recorded command without machine paths (the data root by its folder name, paths inside the
  repository relative to it), so that results written on two machines read the same;
* `code_label`: the visible line that a study was trained by other code than the current one (its commit, its code
  fingerprint or "not recorded"), which README's Results block and report.md carry; empty when every run has the
  current fingerprint (``gv3lite.fingerprint``);
* `check_study`: before ``reproduce`` trains into a folder, a folder that holds another budget's study, a damaged
  ``result.json``, or finished runs of other training code is refused with one line naming the problem and the fix
  (a study never mixes code versions; interrupted runs resume).
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import pandas as pd

from gv3lite.fingerprint import UNKNOWN, code_fingerprint, fingerprint_status
from gv3lite.utils import repo_root

PATH_FLAGS = ("--data",)  # flags whose value is recorded by its folder name only


def portable_command(command: str) -> str:
    """``command`` with the value of ``--data`` replaced by its last path component and absolute paths inside the
    repository made relative to it (e.g. ``--data /home/me/imagenette2-224`` -> ``--data imagenette2-224``)."""
    try:
        words = shlex.split(str(command))
    except ValueError:  # unbalanced quotes: keep it as recorded
        return str(command)
    root, out = repo_root().resolve(), []
    for k, word in enumerate(words):
        flag, eq, value = word.partition("=")
        if eq and flag in PATH_FLAGS:
            word = f"{flag}={Path(value).name}"
        elif k and words[k - 1] in PATH_FLAGS:
            word = Path(word).name or word
        elif word.startswith("/") and Path(word).resolve().is_relative_to(root):
            word = str(Path(word).resolve().relative_to(root)) or "."
        out.append(word)
    return shlex.join(out)


def code_label(runs: pd.DataFrame, current: str | None = None, make: str = "make main") -> str:
    """One Markdown line saying that the runs of ``runs`` (a runs.csv table) were trained by other code than the
    current one, with their commits and fingerprints, and that ``make`` does not reproduce them until the study is
    regenerated; ``""`` when every run has the current code fingerprint."""
    status = fingerprint_status(runs, current)
    if status["reproducible"]:
        return ""
    commits = ", ".join(sorted(set(runs["git_commit"].dropna().astype(str)))) if "git_commit" in runs else "unknown"
    known = [f for f in status["recorded"] if f != UNKNOWN]
    which = ("older code: commit " + (commits or "unknown") + ", code fingerprint not recorded"
             if status["unknown"] else f"other training code: commit {commits}, code fingerprint {', '.join(known)}")
    return (f"**Trained by {which}, not by the current training code: today's `{make}` does not reproduce these "
            f"numbers exactly; they stand until the study is regenerated (`{make}`, then `make publish`).**")


def _result_files(out_dir: Path) -> list[Path]:
    return sorted((out_dir / "runs").glob("*/result.json")) if (out_dir / "runs").is_dir() else []


def check_study(out_dir, budget: str, current: str | None = None) -> None:
    """Refuse to train into ``out_dir`` (``<out>/<budget>``) when it holds what a study of ``budget`` with the
    current code must not be mixed with. Raises ``ValueError`` (one line: the problem and the fix) for a runs.csv of
    another budget, a ``result.json`` that is not valid JSON, or finished runs (``result.json``, or rows of runs.csv
    without their run folder) trained by other training code or by code of unknown fingerprint. A run folder with
    only a checkpoint is an interrupted run: it resumes."""
    out_dir = Path(out_dir)
    current = current or code_fingerprint()
    move = f"move the folder away (mv {out_dir} {out_dir}.old) and run again"
    runs_csv = out_dir / "runs.csv"
    runs = pd.read_csv(runs_csv) if runs_csv.is_file() else pd.DataFrame(columns=["run_id"])
    if "budget" in runs and len(runs) and set(runs["budget"].astype(str)) != {budget}:
        raise ValueError(f"{out_dir} holds a study of budget {sorted(set(runs['budget'].astype(str)))}, not "
                         f"{budget!r}; {move}")
    fingerprints = {}
    for file in _result_files(out_dir):
        try:
            fingerprints[file.parent.name] = json.loads(file.read_text()).get("code_fingerprint", UNKNOWN)
        except (ValueError, UnicodeDecodeError) as err:
            raise ValueError(f"{file} is damaged ({type(err).__name__}); delete its folder {file.parent} to train "
                             "that run again") from err
    if "run_id" in runs and len(runs):
        recorded = runs.drop_duplicates("run_id").set_index("run_id")
        column = recorded["code_fingerprint"] if "code_fingerprint" in recorded else pd.Series(UNKNOWN, recorded.index)
        for rid, value in column.fillna(UNKNOWN).astype(str).items():
            if not (out_dir / "runs" / str(rid)).is_dir():
                fingerprints[str(rid)] = value
    other = {rid: fp for rid, fp in fingerprints.items() if fp != current}
    if other:
        found = ", ".join(sorted(set(other.values())))
        raise ValueError(f"{out_dir} holds {len(other)} finished run(s) trained by other training code (code "
                         f"fingerprint {found}; the current code is {current}): a study does not mix code versions; "
                         f"{move}, or check out the commit that trained them")
