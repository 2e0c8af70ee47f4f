"""`publish` (``make publish``, maintainers): a study trained by ``make main`` / ``make medium`` in
``runs/study/<budget>/`` becomes the committed ``results/<budget>/``, its figures and README.md's Results block.

The recorded files (`RECORDS`: runs, per-epoch history, per-image predictions, the call log, a factorial's
design.json) are copied; everything else is rendered from them, by the design the study has (``gv3lite.study.records
.folder_design``): the factorial's ``gv3lite.study.factorial_report.report_factorial`` (verdicts, looks, effects,
report.md, its forest plot and learning curves) or the one-factor grids' ``gv3lite.study.report.report`` (summary,
verdicts, report.md, figures); then the README block. Rendered files and study figures (``ablation_*.png``) of the
other design are removed, so the committed folder never holds two designs. Re-rendering unchanged inputs gives
byte-identical files (``tests/test_publish.py``). Only a finished study of the current training code is published
(``gv3lite.fingerprint``): a study with interrupted runs, damaged records or row counts that do not add up
(``gv3lite.study.completeness``), or runs of other code, is refused with one line naming the problem and the fix.
``render_only`` re-renders the committed results without a study (after a change to the analysis or the report).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from gv3lite.fingerprint import fingerprint_status
from gv3lite.study.completeness import read_study
from gv3lite.study.factorial_report import report_factorial
from gv3lite.study.readme import render_readme
from gv3lite.study.records import CALLS, DESIGN_FILE, PREDICTIONS, folder_design
from gv3lite.study.report import report
from gv3lite.utils import repo_root, write_atomic

RECORDS = ("runs.csv", "history.csv", PREDICTIONS, CALLS, DESIGN_FILE)
RENDERED = {"ofat": ("summary.csv", "summary.md", "verdicts.csv", "report.md"),   # what each design renders
            "factorial": ("verdicts.csv", "looks.csv", "effects.csv", "report.md")}
FIGURES = {"quick": "figures", "medium": "figures/medium"}  # budget -> the committed figure folder
MAKE = {"quick": "make main", "medium": "make medium"}


def check_publishable(study_dir: Path, budget: str) -> pd.DataFrame:
    """The runs.csv of ``study_dir`` when it is a finished study of the current training code; else ``ValueError``
    / ``FileNotFoundError`` naming the problem and the fix."""
    make = MAKE.get(budget, f"gv3lite reproduce --budget {budget} --out {study_dir.parent}")
    file = study_dir / "runs.csv"
    if not file.is_file():
        raise FileNotFoundError(f"nothing to publish: {file} does not exist; train the study first (`{make}`)")
    folder_design(study_dir)  # a folder that mixes the two designs: refused (before its row counts are compared)
    runs = read_study(study_dir)["runs"]  # validated: damaged files or row counts that do not add up are refused
    interrupted = sorted(p.parent.name for p in (study_dir / "runs").glob("*/last.pth")
                         if not (p.parent / "result.json").is_file())
    if interrupted:
        raise ValueError(f"{study_dir} has {len(interrupted)} interrupted run(s) ({', '.join(interrupted[:3])}...); "
                         f"finish them with `{make}` before publishing")
    status = fingerprint_status(runs)
    if not status["reproducible"]:
        raise ValueError(f"{study_dir} holds {status['unknown'] + status['other']} run(s) not trained by the current "
                         f"training code (fingerprints {', '.join(status['recorded'])}; current {status['current']}): "
                         f"retrain them with `{make}` (move {study_dir} away first) before publishing")
    return runs


def publish(budget: str, study="runs/study", results="results", figures=None, readme="README.md",
            render_only: bool = False) -> dict:
    """Copy the records of ``<study>/<budget>`` into ``<results>/<budget>`` (unless ``render_only``), re-render
    them there by their design (see the module doc; figures into ``figures``, default `FIGURES` of the budget),
    remove what the other design rendered, and regenerate ``readme``'s Results block. Returns ``dict(results,
    figures, copied, removed, readme_changed, design)``. Raises like `check_publishable`, ``FileNotFoundError`` when
    ``render_only`` finds no committed runs.csv, and ``ValueError`` for a folder that mixes designs."""
    study_dir, results_dir = Path(study) / budget, Path(results) / budget
    copied = []
    if not render_only:
        check_publishable(study_dir, budget)
        for name in RECORDS:
            if (study_dir / name).is_file():
                copied.append(write_atomic(results_dir / name, (study_dir / name).read_bytes()))
            elif (results_dir / name).is_file():  # a record of the old study the new one does not have
                (results_dir / name).unlink()
    elif not (results_dir / "runs.csv").is_file():
        raise FileNotFoundError(f"{results_dir}/runs.csv does not exist: nothing to re-render; publish a study first")
    design = folder_design(results_dir)
    folder = Path(figures) if figures else repo_root() / FIGURES.get(budget, f"figures/{budget}")
    if design == "factorial":
        rendered = report_factorial(results_dir, out_dir=results_dir, figures_dir=folder)
    else:
        rendered = report(results_dir, figures_dir=folder, out_dir=results_dir)
    removed = _remove_stale(results_dir, folder, design, rendered["figures"])
    readme = Path(readme)
    text = readme.read_text()
    generated = render_readme(text, Path(results), str(readme))  # the Results block and the forest caption
    if generated != text:
        write_atomic(readme, generated)
    return {"results": results_dir, "figures": rendered["figures"], "copied": copied, "removed": removed,
            "readme_changed": generated != text, "design": design}


def _remove_stale(results_dir: Path, folder: Path, design: str, figures: list) -> list[Path]:
    """Remove the files the other design rendered into ``results_dir`` and the study figures (``ablation_*.png``) of
    ``folder`` that this rendering did not write (e.g. the one-factor grids' after a factorial study is published)."""
    other = set(RENDERED["ofat" if design == "factorial" else "factorial"]) - set(RENDERED[design])
    written = {Path(p).name for p in figures}
    stale = [results_dir / name for name in sorted(other) if (results_dir / name).is_file()]
    stale += [p for p in sorted(folder.glob("ablation_*.png")) if p.name not in written]
    for path in stale:
        path.unlink()
    return stale
