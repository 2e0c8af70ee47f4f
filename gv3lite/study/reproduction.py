"""A user's study beside the committed one: run by run (top-1 identical or the difference) and claim by claim (the
two 95% intervals, and whether the verdicts agree); ``reproduction.md``, written by ``gv3lite compare`` at the end
of ``make main`` / ``make medium`` beside the user's results (``runs/study/<budget>/``).

On a CPU, training is deterministic: the same training code (`gv3lite.fingerprint`) on the same data and the same CPU
(model and instruction set, `gv3lite.utils.cpu_identity`, recorded per call in calls.csv) gives the same top-1 to the
last digit, so a run is *reproduced* only when its top-1 (raw and EMA weights) is identical. On another CPU torch's
kernels may round differently (as may another build of Pillow's JPEG decoder) and a training drifts from its first
steps: there differences up to the run-to-run spread are expected, and the comparison names both CPUs. A run id is
the hash of the trained recipe, so runs are paired by id; runs of a plan that changed since the committed study have
no partner and are listed as such. Both designs are compared the same way (claims of the one-factor grids by contrast,
the factorial's by declared claim); two studies of different designs are not compared (one line naming both and the
fix).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gv3lite.fingerprint import UNKNOWN, code_fingerprint, fingerprint_status, recorded_fingerprints
from gv3lite.stats import within_run
from gv3lite.study.records import DESIGNS, design_of, read_calls, read_claims, read_verdicts
from gv3lite.utils import write_atomic
from gv3lite.verdicts import contrast_label, t_interval

REPRODUCTION = "reproduction.md"


def _read_runs(folder: Path) -> pd.DataFrame:
    file = folder / "runs.csv"
    if not file.is_file():
        raise FileNotFoundError(f"{file} does not exist; give a folder that `gv3lite reproduce` wrote "
                                f"(e.g. runs/study/quick, results/quick)")
    runs = pd.read_csv(file)
    missing = [c for c in ("grid", "cell", "seed", "run_id", "top1", "top1_raw", "top1_ema") if c not in runs]
    if missing or runs.empty:
        raise ValueError(f"{file} " + (f"lacks column(s) {missing}" if missing else "has no runs")
                         + "; it was not written by `gv3lite reproduce`: run `make main` again into an empty folder")
    return runs


def _same(a: pd.Series, b: pd.Series) -> pd.Series:
    return (a == b) | (a.isna() & b.isna())


def compare_runs(user: pd.DataFrame, committed: pd.DataFrame) -> pd.DataFrame:
    """One row per training (run id) of either study: ``cells`` (grid/cell names; yours where you trained it) and
    ``cells_committed`` (the committed study's, empty where it lacks the run), ``seed``, ``top1_user``,
    ``top1_committed``, ``diff`` (user − committed, pp), ``identical`` (raw and EMA top-1 both equal, to the last
    digit), ``status`` (``identical``, ``differs``, ``only in yours``, ``only committed``)."""
    def per_run(runs):
        cells = runs.groupby("run_id", sort=False).apply(
            lambda g: ", ".join(f"{r.grid}/{r.cell}" for r in g.itertuples()), include_groups=False)
        first = runs.drop_duplicates("run_id").set_index("run_id")
        top1 = first["top1_ema"].where(first["top1_ema"].notna(), first["top1_raw"])  # the EMA where one is kept
        return pd.DataFrame({"cells": cells, "seed": first["seed"], "top1": top1, "raw": first["top1_raw"],
                             "ema": first["top1_ema"]})

    mine, theirs = per_run(user), per_run(committed)
    table = mine.add_suffix("_user").join(theirs.add_suffix("_committed"), how="outer")
    table["cells"] = table["cells_user"].fillna(table["cells_committed"])
    table["seed"] = table["seed_user"].fillna(table["seed_committed"]).astype(int)
    table["diff"] = table["top1_user"] - table["top1_committed"]
    table["identical"] = _same(table["raw_user"], table["raw_committed"]) & _same(table["ema_user"],
                                                                                  table["ema_committed"])
    table["status"] = "differs"
    table.loc[table["identical"], "status"] = "identical"
    table.loc[table["top1_committed"].isna(), "status"] = "only in yours"
    table.loc[table["top1_user"].isna(), "status"] = "only committed"
    table["identical"] &= table["status"] == "identical"
    order = list(dict.fromkeys([*mine.index, *theirs.index]))
    return table.loc[order, ["cells", "cells_committed", "seed", "top1_user", "top1_committed", "diff", "identical",
                             "status"]].rename_axis("run_id").reset_index()


def compare_claims(user: pd.DataFrame, committed: pd.DataFrame) -> pd.DataFrame:
    """One row per claim of either verdict table: ``label`` (a one-factor contrast ``grid: cell vs baseline``, named by
    ``gv3lite.verdicts.contrast_label`` so that a composite one says so, or a factorial's declared claim), the user's
    and the committed diff, interval (``low``/``high``, as each verdict table records it) and verdict, and ``agree``
    (the same verdict word; False where one side lacks the claim)."""
    cols = ["diff", "low", "high", "verdict"]

    def labelled(table):
        label = (pd.Series([f"{g}: {contrast_label(g, c, b)}" for g, c, b in
                            zip(table["grid"], table["cell"], table["baseline"])], dtype=object) if "grid" in table
                 else table["claim"].astype(str))
        return table[cols].assign(label=label.to_numpy())[["label", *cols]]
    table = labelled(user).merge(labelled(committed), on="label", how="outer", sort=False,
                                 suffixes=("_user", "_committed"))
    table["agree"] = table["verdict_user"].eq(table["verdict_committed"]) & table["verdict_user"].notna()
    return table


def _verdict_table(folder: Path, design: str) -> pd.DataFrame:
    return read_claims(folder / "verdicts.csv") if design == "factorial" else read_verdicts(folder / "verdicts.csv")


def designs(user: pd.DataFrame, committed: pd.DataFrame, user_dir, committed_dir) -> tuple[str, str]:
    """The design of each runs.csv table (``"factorial"`` or ``"ofat"``, `gv3lite.study.records.design_of`), which
    raises ``ValueError`` (one line, with the fix) when a table mixes designs."""
    return design_of(user, Path(user_dir) / "runs.csv"), design_of(committed, Path(committed_dir) / "runs.csv")


def designs_differ_text(user_dir: Path, committed_dir: Path, mine: str, theirs: str) -> tuple[str, dict]:
    """`reproduction_text` for two studies of different designs: nothing can be paired run by run or claim by claim,
    so it says so, names the command that trains a study of the committed design, and lists the user's own claims
    (their verdicts.csv) so that the main job still ends with its result."""
    summary = {"runs": 0, "identical": 0, "max_abs_diff": float("nan"), "claims": 0, "agree": 0, "same_code": False,
               "designs_differ": True}
    note = (f"Not compared: `{user_dir}` holds {DESIGNS[mine]}, the committed `{committed_dir}` {DESIGNS[theirs]}. "
            f"Runs and claims of two designs do not pair up. To compare with the committed study, train one of its "
            f"design (`gv3lite reproduce --design {theirs} ...`); maintainers make yours the committed one with "
            "`make publish`.")
    lines = [f"# Reproduction: `{user_dir.name}` beside the committed `{committed_dir}`", "", note, "",
             "## Your claims (diff and the sequential interval, pp)", "", "| claim | yours | your verdict |",
             "|---|---|---|"]
    table = _verdict_table(user_dir, mine)
    labelled = compare_claims(table, table)
    for r in labelled.itertuples():
        lines.append(f"| {r.label} | {_interval(r.diff_user, r.low_user, r.high_user)} "
                     f"| {r.verdict_user if isinstance(r.verdict_user, str) else '—'} |")
    return "\n".join(lines) + "\n", summary


def _interval(diff, low, high) -> str:
    if diff != diff:
        return "—"
    return f"{diff:+.2f} [{low:+.2f}, {high:+.2f}]" if low == low else f"{diff:+.2f}"


def recorded_cpus(folder) -> list[str]:
    """The CPUs (`gv3lite.utils.cpu_identity`) that the calls of ``<folder>/calls.csv`` trained on; empty when none
    is recorded (no calls.csv, or rows of a log older than the column). Raises
    ``gv3lite.schemas.ResultsFileError`` (one line, with the fix) for a damaged calls.csv (`read_calls`)."""
    calls = read_calls(folder)
    if calls is None or "cpu" not in calls:
        return []
    return sorted(set(calls["cpu"].dropna().astype(str)) - {""})


def _code_line(user: pd.DataFrame, committed: pd.DataFrame, current: str, cpus: tuple[list, list] = ([], [])
               ) -> tuple[str, bool]:
    """The paragraph on which code and CPU trained each study (``cpus``: yours, the committed study's), and whether
    identical top-1 is to be expected."""
    mine, theirs = fingerprint_status(user, current), fingerprint_status(committed, current)
    commits = ", ".join(sorted(set(committed["git_commit"].dropna().astype(str)))) or "unknown"
    same_code = mine["reproducible"] and theirs["reproducible"]
    line = (f"Code: your runs {', '.join(recorded_fingerprints(user))} (fingerprint of the training code, "
            f"`gv3lite.fingerprint`); the committed runs {', '.join(recorded_fingerprints(committed))} at commit "
            f"{commits}; the current code {current}. ")
    named = [", ".join(c) if c else "not recorded" for c in cpus]
    line += f"CPU: yours {named[0]}; the committed study's {named[1]}. "
    if same_code and cpus[0] and cpus[0] == cpus[1]:
        line += "Same training code and CPU: with the same data every top-1 should be identical to the last digit."
    elif same_code:
        line += ("Same training code: on the same CPU with the same data every top-1 would be identical to the last "
                 "digit; on another CPU (or one not recorded) torch's kernels may round differently (as may another "
                 "build of Pillow's JPEG decoder) and trainings drift apart, so differences up to the run-to-run "
                 "spread can appear.")
    elif theirs["unknown"]:
        line += ("The committed study was trained by older code whose fingerprint was not recorded (known not to "
                 "reproduce exactly): differences are expected until it is regenerated with the current code "
                 "(`make publish`).")
    else:
        line += "The two studies were trained by different training code: differences are expected."
    return line, same_code


def reproduction_text(user_dir, committed_dir, current: str | None = None) -> tuple[str, dict]:
    """``(Markdown, summary)`` of the comparison of the study in ``user_dir`` with the one in ``committed_dir`` (each
    with runs.csv and verdicts.csv). ``summary``: ``runs`` (in common), ``identical``, ``max_abs_diff`` (pp, NaN
    when none in common), ``claims`` (in common), ``agree``, ``same_code`` (and ``designs_differ``: True when the two
    studies are of different designs, `designs_differ_text`). Raises ``FileNotFoundError`` /
    ``ValueError`` (one line, with the fix) when a folder is not a study or the two are of different budgets."""
    user_dir, committed_dir = Path(user_dir), Path(committed_dir)
    user, committed = _read_runs(user_dir), _read_runs(committed_dir)
    budgets = [sorted(set(r["budget"].astype(str))) if "budget" in r else [] for r in (user, committed)]
    if budgets[0] and budgets[1] and budgets[0] != budgets[1]:
        raise ValueError(f"{user_dir} is a study of budget {budgets[0]}, {committed_dir} of {budgets[1]}: compare "
                         f"studies of one budget (make main: runs/study/quick with results/quick)")
    design, theirs = designs(user, committed, user_dir, committed_dir)
    if design != theirs:
        return designs_differ_text(user_dir, committed_dir, design, theirs)
    runs = compare_runs(user, committed)
    claims = compare_claims(_verdict_table(user_dir, design), _verdict_table(committed_dir, design))
    code, same_code = _code_line(user, committed, current or code_fingerprint(),
                                 (recorded_cpus(user_dir), recorded_cpus(committed_dir)))
    common, shared = runs[runs["status"].isin(["identical", "differs"])], claims.dropna(subset=["diff_user",
                                                                                              "diff_committed"])
    summary = {"runs": len(common), "identical": int(common["identical"].sum()),
               "max_abs_diff": float(common["diff"].abs().max()) if len(common) else float("nan"),
               "claims": len(shared), "agree": int(shared["agree"].sum()), "same_code": same_code}
    lines = [f"# Reproduction: `{user_dir.name}` beside the committed `{committed_dir}`", "", code, "",
             summary_line(summary), ""]
    spread = spread_line(runs)
    if spread:
        lines += [spread, ""]
    lines += ["## Run by run (top-1 %, EMA weights where the run keeps an EMA)", "",
              "| run id | cells | seed | yours | committed | diff (pp) | |", "|---|---|---|---|---|---|---|"]
    for r in runs.itertuples():
        lines.append(f"| {r.run_id} | {r.cells} | {r.seed} | {_pct(r.top1_user)} | {_pct(r.top1_committed)} "
                     f"| {'—' if r.diff != r.diff else f'{r.diff:+.2f}'} | {r.status} |")
    interval = "95% interval" if design == "ofat" else "the sequential interval"
    lines += ["", f"## Claim by claim (diff and {interval}, pp)", "",
              "| claim | yours | committed | your verdict | committed verdict | agree |", "|---|---|---|---|---|---|"]
    for r in claims.itertuples():
        lines.append(f"| {r.label} | {_interval(r.diff_user, r.low_user, r.high_user)} "
                     f"| {_interval(r.diff_committed, r.low_committed, r.high_committed)} "
                     f"| {r.verdict_user if isinstance(r.verdict_user, str) else '—'} "
                     f"| {r.verdict_committed if isinstance(r.verdict_committed, str) else '—'} "
                     f"| {'yes' if r.agree else 'no'} |")
    figures = sorted((user_dir / "figures").glob("*.png")) if (user_dir / "figures").is_dir() else []
    if figures:
        lines += ["", "## Your figures", "", *[f"![{p.stem}](figures/{p.name})" for p in figures]]
    return "\n".join(lines) + "\n", summary


def spread_line(runs: pd.DataFrame) -> str:
    """How large the run-by-run differences are, beside the spread a change of seed gives; one line of Markdown.
    ``runs``: the `compare_runs` table. The differences (yours − committed, pp, over every training in common,
    identical ones counting 0): their mean with a Student t 95% interval (`gv3lite.stats.within_run`, the paired
    comparison of two readings of the same trainings, and `gv3lite.verdicts.t_interval`; one that excludes 0 says your
    machine shifts top-1 one way) and their SD. The scale: two trainings of one recipe with different seeds in the committed study
    differ with SD √2·s, s the pooled within-recipe SD of its top-1 over seeds, as in a one-way ANOVA (recipes grouped
    by the committed study's ``cells_committed``; df = trainings − recipes). Empty when fewer than 2 trainings in
    common differ; the scale is left out when no recipe has 2 seeds."""
    common = runs[runs["status"].isin(["identical", "differs"])]
    if (common["status"] == "differs").sum() < 2:
        return ""
    paired = within_run(common, "top1_user", "top1_committed")
    ci = t_interval(paired["diff"], paired["se"], paired["df"])
    line = (f"Differences over the {paired['n']} trainings in common: mean {paired['diff']:+.2f} pp (95% t interval "
            f"[{float(ci['low']):+.2f}, {float(ci['high']):+.2f}]), SD {paired['diffs'].std(ddof=1):.2f} pp.")
    by_recipe = runs.dropna(subset=["top1_committed"]).groupby("cells_committed")["top1_committed"]
    df = int((by_recipe.size() - 1).sum())
    if df > 0:
        within = float(np.sqrt((by_recipe.var(ddof=1).fillna(0) * (by_recipe.size() - 1)).sum() / df))
        line += (f" For scale: in the committed study two trainings of one recipe with different seeds differ with SD "
                 f"{np.sqrt(2) * within:.2f} pp (√2 × its pooled within-recipe SD {within:.2f} pp, {df} df).")
    return line


def _pct(value) -> str:
    return "—" if value != value else f"{value:.2f}"


def summary_line(summary: dict) -> str:
    """One line: how many runs reproduced top-1 exactly and how many claims got the same verdict."""
    if summary.get("designs_differ"):
        return "Not compared: the two studies are of different designs (see reproduction.md)."
    if not summary["runs"]:
        text = "No training in common with the committed study (its plan differs: other recipes or sizes)"
    elif summary["identical"] == summary["runs"]:
        text = f"Top-1 reproduced exactly: all {summary['runs']} trainings in common are identical"
    else:
        differ = summary["runs"] - summary["identical"]
        text = (f"Top-1 not reproduced exactly: {differ} of the {summary['runs']} trainings in common "
                f"differ{'s' if differ == 1 else ''} (largest difference {summary['max_abs_diff']:.2f} pp)")
    return text + (f"; verdicts agree for {summary['agree']} of {summary['claims']} claims." if summary["claims"]
                   else "; no claim in common.")


def write_reproduction(user_dir, committed_dir, current: str | None = None) -> tuple[Path, str, dict]:
    """Write `reproduction_text` as ``<user_dir>/reproduction.md``; returns ``(path, text, summary)``."""
    text, summary = reproduction_text(user_dir, committed_dir, current)
    return write_atomic(Path(user_dir) / REPRODUCTION, text), text, summary
