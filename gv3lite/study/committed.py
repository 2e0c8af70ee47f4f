"""The committed studies as the notebooks show them: `committed_study` loads ``results/<budget>/`` of either design
(the factorial's declared claims, or the one-factor grids' contrasts) and returns the very table README's Results
block and the folder's report.md carry, built by the same functions (``gv3lite.study.factorial_report.claim_rows``,
``gv3lite.study.report.verdict_rows``) from the recorded verdicts.csv after it is checked against runs.csv
(``gv3lite.study.readme.check_claims`` / ``check_verdicts``). A notebook never recomputes a committed study's numbers,
so README, report.md and notebooks show the same ones (``tests/test_notebook_numbers.py``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from gv3lite.study.completeness import read_study
from gv3lite.study.factorial_report import RUNS_PER_BLOCK, claim_rows, target_note
from gv3lite.study.provenance import code_label
from gv3lite.study.readme import README_BUDGETS, check_claims, check_verdicts
from gv3lite.study.records import DESIGNS, folder_design, read_calls, read_claims, read_verdicts
from gv3lite.study.report import scope_note, sizing_note, study_command, study_commits, verdict_rows
from gv3lite.utils import repo_root


def committed_study(budget: str = "quick", results=None, grids=None) -> dict | None:
    """The study committed in ``<results>/<budget>/`` (default ``<repo>/results``), for notebooks to show beside a
    run at another budget, clearly labelled as loaded.

    Returns ``dict(design, budget, folder, runs, verdicts, table, label, code, scope, note)``: ``design``
    (``"factorial"`` or ``"ofat"``, `gv3lite.study.records.DESIGNS`); ``runs`` its runs.csv; ``verdicts`` its
    verdicts.csv as recorded (the factorial's claims, `read_claims`, or the grids' contrasts, `read_verdicts`),
    checked against runs.csv and predictions.csv.gz as README's block is; ``table`` the text cells of README's and
    report.md's table of it (`claim_rows` / `verdict_rows`: effect, 95% interval, the factorial's sequential interval
    and its confidence, Holm p of the grids, MDE, source, verdict); ``label`` a one-line Markdown provenance note;
    ``code`` the bold line of a study trained by other code (``""`` when none); ``scope`` and ``note`` the README's
    paragraph on what the study can say and its half-width sentence (``""`` without a target). With ``grids`` (a
    one-factor study only) ``verdicts`` and ``table`` keep the contrasts of those grids, and those that stand for one
    of theirs (verdicts.csv's ``same_as``: e.g. the recipe grid's row is ``architectures/ghostnetv2/ghostnetv3``,
    the same trainings), and ``runs`` the rows of their grids (``scope`` and ``note`` stay the whole study's, as
    README shows them).

    ``None`` when there is no runs.csv, or ``grids`` are asked of a factorial study (it has no grids) or of a
    one-factor study whose verdicts.csv has no contrast of them. Raises like ``gv3lite.study.readme.readme_results``
    for a damaged folder (``FileNotFoundError``, ``gv3lite.schemas.ResultsFileError``: one line naming the file and
    the fix)."""
    folder = Path(results or repo_root() / "results") / budget
    if not (folder / "runs.csv").is_file():
        return None
    design = folder_design(folder)  # a folder that mixes the two designs: refused
    if design == "factorial" and grids is not None:
        return None
    study, calls = read_study(folder), read_calls(folder)
    runs = study["runs"]
    make = README_BUDGETS.get(budget, f"gv3lite reproduce --budget {budget}")
    scope, code = scope_note(runs), code_label(runs, make=make)
    if design == "factorial":
        recorded = read_claims(folder / "verdicts.csv")
        blocks = int(check_claims(folder, runs, recorded, study["predictions"])["blocks"])
        table, note = claim_rows(recorded), target_note(recorded, budget, blocks, calls)
        what = (f"{DESIGNS[design]}, {blocks} block{'s' if blocks != 1 else ''} of {RUNS_PER_BLOCK} runs; "
                f"{len(recorded)} declared claims")
    else:
        recorded = read_verdicts(folder / "verdicts.csv")
        check_verdicts(folder, runs, recorded, study["predictions"])
        note = sizing_note(recorded, budget, runs, calls)
        if grids is not None:
            mine = [_of_grids(g, same, grids) for g, same in zip(recorded["grid"], recorded["same_as"])]
            recorded = recorded.loc[np.array(mine, dtype=bool)].reset_index(drop=True)
            runs = runs[runs["grid"].isin([*grids, *recorded["grid"]])].reset_index(drop=True)
            if recorded.empty:
                return None
        table = verdict_rows(recorded)
        what = f"{DESIGNS[design]}; {len(recorded)} contrasts"
    shown = folder.resolve().relative_to(repo_root()) if folder.resolve().is_relative_to(repo_root()) else folder
    label = (f"**Loaded, not computed in this run:** `{shown}/` (budget `{budget}`: {what}; {runs['seed'].nunique()} "
             f"seed(s), {runs['run_id'].nunique()} trainings; trained by `{study_command(runs)}` at commit "
             f"{study_commits(runs)}). The numbers are those of README's Results block and `{shown}/report.md`.")
    return {"design": design, "budget": budget, "folder": folder, "runs": runs, "verdicts": recorded, "table": table,
            "label": label, "code": code, "scope": scope, "note": note}


def _of_grids(grid: str, same_as: str, grids) -> bool:
    """Whether a verdicts.csv row belongs to one of ``grids``: its own grid, or a ``same_as`` entry ``<grid>/<cell>``
    (a contrast of the same trainings, listed once)."""
    return grid in grids or any(x.split("/", 1)[0] in grids for x in str(same_as).split(", ") if x)
