"""The factorial study's report: ``verdicts.csv`` (the declared claims), ``effects.csv`` (interactions and the
effects at the GhostNetV3 corner), ``looks.csv`` (the look schedule), ``report.md`` (the design with its defining
relation and alias chains, the model, the variance check, the claims with their intervals and verdicts, the half-width
reached against the budget's target, the looks), the figures (`plot_factorial`: the claims' forest plot
``ablation_forest.png`` and the learning curves), and `report_factorial` (re-analysis of a recorded factorial study
without training: ``gv3lite report``, ``gv3lite publish``).

Everything is rendered from the records (runs.csv, predictions.csv.gz, history.csv, calls.csv, design.json): the
command and commits are those recorded with the runs, never the checkout's, so re-rendering a recorded study gives
the same bytes (``tests/test_publish.py``).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from gv3lite.budgets import FACTORIAL_BLOCKS, HALF_WIDTH_TARGETS
from gv3lite.figures import plot_claims, savefig
from gv3lite.fingerprint import recorded_fingerprints
from gv3lite.paper import difference_kind, paper_results
from gv3lite.verdicts import ALPHA, DELTA, t_interval
from gv3lite.study import design
from gv3lite.study.analysis import paper_diffs
from gv3lite.study.completeness import read_study
from gv3lite.study.factorial import CLAIMS, FORMULA, effects_table
from gv3lite.study.looks import analyse_looks, correct_of
from gv3lite.study.provenance import code_label
from gv3lite.study.records import DESIGN_FILE, PREDICTIONS, read_calls, wall_time
from gv3lite.study.report import (FLOAT_FORMAT, calls_note, duration, save_learning_curves, scope_note,
                                  study_command, study_commits, table_lines)
from gv3lite.utils import write_atomic, write_csv

RUNS_PER_BLOCK = 16


def design_record(budget: str, changes: dict | None = None, generators: dict | None = None) -> dict:
    """What identifies a factorial study: generators, defining relation, factor levels, ``--set`` changes and the
    budget's looks (written as ``design.json``)."""
    gens = generators or design.GENERATORS
    return {"design": "factorial 2^(6-2)", "generators": gens, "defining_relation": design.relation_text(gens),
            "resolution": design.resolution(gens), "changes": dict(changes or {}),
            "factors": {f.letter: {"name": f.name, "low": f.low, "high": f.high} for f in design.FACTORS},
            "looks": FACTORIAL_BLOCKS[budget], "formula": FORMULA}


def read_design_file(file) -> dict:
    """A factorial study's ``design.json`` (`design_record`). Raises ``ValueError`` naming the file and the fix when
    it is not a readable JSON object (cut short, not UTF-8)."""
    try:
        record = json.loads(Path(file).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        record = err
    if not isinstance(record, dict):
        problem = f"{type(record).__name__}: {record}" if isinstance(record, Exception) else "not a JSON object"
        raise ValueError(f"{file} is damaged ({problem}); delete it (the next `gv3lite reproduce --design factorial` "
                         "on this folder writes it again; runs of another design are told apart by their run ids) "
                         "or restore it from a backup")
    return record


def check_design_file(out_dir, record: dict) -> None:
    """Refuse a results folder that holds another design (``ValueError`` naming the difference and the fix) or a
    damaged ``design.json`` (`read_design_file`)."""
    file = Path(out_dir) / DESIGN_FILE
    if not file.is_file():
        return
    old = read_design_file(file)
    differs = [k for k in ("generators", "changes", "factors") if json.dumps(old.get(k), sort_keys=True)
               != json.dumps(record[k], sort_keys=True)]
    if differs:
        raise ValueError(f"{out_dir} holds a factorial study with other {', '.join(differs)}; its runs cannot be "
                         "mixed with this design: give another --out (nothing was changed)")


def markdown(table: pd.DataFrame) -> str:
    """A DataFrame as a Markdown table (floats to 2 decimals)."""
    cells = [[_num(v) if isinstance(v, float) else str(v) for v in row] for row in table.itertuples(index=False)]
    return "\n".join(["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
                     + ["| " + " | ".join(row) + " |" for row in cells])


def _num(v, spec=".2f") -> str:
    return "n/a" if v != v else format(v + 0.0, spec).replace("-0.00", "+0.00" if "+" in spec else "0.00")


def claim_sources() -> dict:
    """claim name -> what the source says about it, labelled by what it is: ``dict(kind="derived" | "checkpoint",
    values=(...))`` for differences of two published top-1 (``gv3lite.paper.difference_kind``: never "paper"), else
    ``dict(kind="paper", direction=...)`` where a row of ``paper_results.csv`` of kind ``paper`` states the claim's
    direction; claims with neither are left out."""
    sources = {}
    for c in CLAIMS:
        grid, cell, _ = c.paper
        values = paper_diffs(*c.paper)
        if values:
            sources[c.name] = {"kind": difference_kind(grid), "values": values}
            continue
        rows = paper_results(grid)
        stated = rows[(rows["cell"] == cell) & (rows["kind"] == "paper") & (rows["claim"] == c.direction)]
        if len(stated):
            sources[c.name] = {"kind": "paper", "direction": c.direction}
    return sources


def _source_text(source: dict | None) -> str:
    if not source:
        return "unknown"
    if source["kind"] == "paper":
        return f"paper: {source['direction']}"
    return f"{source['kind']}: " + "/".join(f"{v:+.1f}" for v in source["values"])


def with_ci95(claims: pd.DataFrame) -> pd.DataFrame:
    """``claims`` with ``low95``/``high95``: the model's plain 95% t interval of each effect (from ``diff``, ``se``,
    ``df``), beside the sequential interval (``low``/``high`` at the look's strictest Holm level, `gv3lite.study.looks`)."""
    ci = t_interval(claims["diff"], claims["se"], claims["df"])
    return claims.assign(low95=ci["low"], high95=ci["high"])


CLAIM_HEADER = ("claim", "claimed direction", "effect (pp)", "95% CI", "half-width (pp)", "sequential interval",
                "its confidence", "decided at look", "MDE (pp)", "source's claim (pp)", "verdict")


def claim_rows(claims: pd.DataFrame) -> pd.DataFrame:
    """The claim table as text cells, one row per declared claim (columns `CLAIM_HEADER`): effect, 95% interval and
    its half-width, the sequential interval and its confidence, the look that decided it, the MDE, the source's
    number or claim (labelled by its kind), verdict (bold). What report.md and README's Results block show
    (`claim_lines`), and what the notebooks display (``gv3lite.study.committed``)."""
    sources, rows = claim_sources(), []
    for r in with_ci95(claims).itertuples():
        decided = int(r.decided_at_look) if r.decided_at_look == r.decided_at_look and r.decided_at_look else "—"
        rows.append(tuple(str(x) for x in (
            r.claim, r.direction, _num(r.diff, "+.2f"), f"[{_num(r.low95, '+.2f')}, {_num(r.high95, '+.2f')}]",
            _num((r.high95 - r.low95) / 2), f"[{_num(r.low, '+.2f')}, {_num(r.high, '+.2f')}]",
            f"{100 * (1 - r.level):.3f}%",
            decided, _num(r.mde, ".1f"), _source_text(sources.get(r.claim)), f"**{r.verdict}**")))
    return pd.DataFrame(rows, columns=list(CLAIM_HEADER), dtype=str)


def claim_lines(claims: pd.DataFrame) -> list[str]:
    """`claim_rows` of ``claims`` as Markdown lines (report.md's and README's claim table)."""
    return table_lines(claim_rows(claims))


def target_note(claims: pd.DataFrame, budget: str, blocks: int, calls: pd.DataFrame | None = None) -> str:
    """One sentence: the 95% half-widths of the single-ingredient claims against the budget's target
    (`HALF_WIDTH_TARGETS`), and when one is wider, about how many blocks would meet it (the half-width shrinks as
    1/sqrt(blocks) at the spread measured here) and, from ``calls``, their wall time at the recorded time per
    training. ``""`` without a target."""
    target = HALF_WIDTH_TARGETS.get(budget)
    if target is None or claims.empty:
        return ""
    single = with_ci95(claims[~claims["claim"].str.startswith("recipe")])
    half = (single["high95"] - single["low95"]) / 2
    low, high = f"{half.min():.2f}", f"{half.max():.2f}"
    reached = low if low == high else f"{low}–{high}"
    text = (f"95% half-width target of the {budget} budget: ±{target:g} pp; reached ±{reached} pp over the "
            f"{len(single)} single-ingredient claims with {blocks} block{'s' if blocks != 1 else ''} "
            f"({RUNS_PER_BLOCK * blocks} trainings)")
    if (half <= target).all():
        return text + " (met)."
    need, most = math.ceil(blocks * (float(half.max()) / target) ** 2), FACTORIAL_BLOCKS[budget]["max_blocks"]
    text += (f" (not met): at the spread measured here ±{target:g} pp needs about {need} blocks"
             + (f", more than the budget's declared maximum of {most}" if need > most else ""))
    trained = 0 if calls is None or calls.empty else int(calls["trained"].sum())
    if trained:
        per_training = wall_time(calls) / trained
        text += (f" ({RUNS_PER_BLOCK * need} trainings, about {duration(RUNS_PER_BLOCK * need * per_training)} at "
                 f"the {duration(per_training)} of wall time per training recorded in calls.csv)")
    return text + "."


def out_of_time(budget: str, calls: pd.DataFrame | None, blocks: int) -> str | None:
    """Why the budget's wall time (``FACTORIAL_BLOCKS[budget]["wall_minutes"]``) ends a study after ``blocks``
    blocks, or None when another block fits. From the records: the wall time of the calls in ``calls`` (calls.csv,
    `gv3lite.study.records.wall_time`) is spent, or another block, at the mean wall time per block so far, would end
    past it. None when the budget has no wall time or nothing is recorded. The mean counts every recorded second
    (a teacher's pass, a block begun in a sitting that was stopped), so it errs towards stopping: a block left
    unfinished by an interrupted sitting is not continued once the estimate says it would not end in time."""
    minutes = FACTORIAL_BLOCKS[budget]["wall_minutes"]
    if not minutes or calls is None or not len(calls) or blocks < 1:
        return None
    spent = wall_time(calls)
    if spent >= 60 * minutes:
        return f"the budget's {minutes} min of wall time spent (calls.csv)"
    if spent + spent / blocks > 60 * minutes:
        return (f"another block would end past the budget's {minutes} min of wall time ({duration(spent)} spent "
                f"over {blocks} block{'s' if blocks != 1 else ''}, calls.csv)")
    return None


def stop_state(result: dict, budget: str, calls: pd.DataFrame | None) -> tuple[bool, str]:
    """``(stopped, reason)`` of a study, from the records: `analyse_looks`' (every claim decided, or the declared
    maximum of blocks), or stopped by the budget's wall time (`out_of_time`: spent, or another block would not end
    within it)."""
    late = None if result["stopped"] else out_of_time(budget, calls, result["blocks"])
    return (True, late) if late else (bool(result["stopped"]), result["reason"])


def _fields(levels: dict) -> str:
    """Recipe fields as ``name=value`` in name order (as design.json stores them: the same text either way)."""
    return ", ".join(f"{k}={v}" for k, v in sorted(levels.items()))


def design_lines(record: dict) -> list[str]:
    gens = record["generators"]
    lines = ["| factor | name | -1 | +1 |", "|---|---|---|---|"]
    lines += [f"| {x} | {f['name']} | {_fields(f['low'])} | {_fields(f['high'])} |"
              for x, f in sorted(record["factors"].items())]
    chains = [design.chain_text(c) for c in design.alias_chains(gens, max_order=3) if len(c[0][1]) <= 2]
    return [f"Design: {record['design']}, {RUNS_PER_BLOCK} runs per block (block b trains with seed b, its runs in "
            f"the random order drawn from the seed), generators {', '.join(f'{k} = {v}' for k, v in gens.items())}; "
            f"defining relation {record['defining_relation']} (resolution {record['resolution']}). Corners in every "
            f"block: GhostNetV3 recipe {design.run_label(design.GHOSTNETV3_CORNER)}, conventional recipe "
            f"{design.run_label(design.CONVENTIONAL_CORNER)}." + (f" `--set`: {_fields(record['changes'])}." if
                                                                    record["changes"] else ""), "", *lines, "",
            "Alias chains (up to three-factor terms): " + "; ".join(chains) + ".", ""]


def _header(result: dict, runs: pd.DataFrame, budget: str, calls) -> list[str]:
    label, (stopped, reason) = code_label(runs), stop_state(result, budget, calls)
    return [f"# gv3lite factorial study — {budget} budget", "", f"Command: `{study_command(runs)}`  ",
            f"Runs trained at commit {study_commits(runs)}, code fingerprint "
            f"{', '.join(recorded_fingerprints(runs)) or 'unknown'}  ", *([label, ""] if label else []),
            f"{result['blocks']} block(s), {RUNS_PER_BLOCK * result['blocks']} runs; stopped: {stopped} ({reason}); "
            f"{calls_note(calls)}", ""]


def write_factorial_report(result: dict, record: dict, out_dir, budget: str, runs: pd.DataFrame, calls=None,
                           effects: pd.DataFrame | None = None) -> Path:
    """Write verdicts.csv, effects.csv, looks.csv (floats at `FLOAT_FORMAT`) and report.md of an `analyse_looks`
    ``result`` of the runs.csv table ``runs`` into ``out_dir``; from its inputs only (same inputs, same bytes)."""
    out_dir = Path(out_dir)
    write_csv(result["claims"], out_dir / "verdicts.csv", float_format=FLOAT_FORMAT)
    write_csv(result["looks"], out_dir / "looks.csv", float_format=FLOAT_FORMAT)
    if effects is not None:
        write_csv(effects, out_dir / "effects.csv", float_format=FLOAT_FORMAT)
    fit = result["fit"]
    check = ", ".join(f"{k} {v:.3f}" for k, v in fit["variance_p"].items())
    target = target_note(result["claims"], budget, result["blocks"], calls)
    lines = [*_header(result, runs, budget, calls), *design_lines(record),
             f"Model (statsmodels OLS): `{FORMULA}`, ±1 coding, effect = 2β; residual df {fit['result'].df_resid:.0f}. "
             f"Variance check (Brown-Forsythe between the levels of each factor, Holm p): {check} -> "
             f"{'HC3 errors' if fit['robust'] else 'classical errors'}.", "",
             f"Claims (declared before any run, the same at every budget; Holm across the {len(CLAIMS)} at every "
             f"look, alpha spent over the looks by an O'Brien-Fleming-type Lan-DeMets function: "
             f"`gv3lite.sequential`). δ = {DELTA:g} pp; family-wise alpha {ALPHA:g}. A verdict is final at the look "
             "that makes it. The sequential interval is the last look's at the level of Holm's strictest share (alpha / "
             f"{len(CLAIMS)} spent over the looks: repeated confidence intervals that cover the {len(CLAIMS)} true "
             "effects at once with 95%): one that excludes 0 always comes with agrees or disagrees, and one inside "
             f"±{DELTA:g} pp with no effect; Holm's later steps may decide a claim whose interval still touches 0. "
             "The 95% interval beside it is the model's plain one. The source's claim is "
             "labelled by what it is (`paper:` a direction the paper states; `derived:` two published ImageNet "
             "top-1 subtracted by us, not stated by the paper).", "", scope_note(runs), "",
             *claim_lines(result["claims"]), "",
             *([target, ""] if target else []), "Looks (`looks.csv`):", "",
             markdown(result["looks"][["look", "blocks", "level", "claim", "diff", "low", "high",
                                       "verdict_so_far"]]), ""]
    if effects is not None:
        lines += ["Effects (exploratory, 95% intervals, not judged):", "",
                  markdown(effects[["effect", "kind", "aliases", "diff", "low", "high"]]), ""]
    return write_atomic(out_dir / "report.md", "\n".join(lines) + "\n")


def plot_factorial(claims: pd.DataFrame, runs: pd.DataFrame, budget: str, history: pd.DataFrame | None = None,
                   folder=None) -> list[Path]:
    """The factorial's figures into ``folder``: ``ablation_forest.png`` (``gv3lite.figures.plot_claims``: every
    declared claim with its intervals, δ band and the source's labelled numbers) and, given per-epoch ``history``,
    ``ablation_learning_curves.png``. Footers give the runs' recorded command and commits: same runs, same bytes."""
    import matplotlib.pyplot as plt  # lazy: pyplot is slow to import and only figures need it
    command, commit, paths = study_command(runs), study_commits(runs), []
    blocks = int(runs["seed"].nunique())
    fig = plot_claims(claims, claim_sources(), title=f"the paper's claims — {budget} budget, factorial 2^(6-2), "
                      f"{blocks} block{'s' if blocks != 1 else ''} of {RUNS_PER_BLOCK} runs (Imagenette)")
    paths.append(savefig(fig, "ablation_forest", budget=budget, command=command, commit=commit, folder=folder))
    plt.close(fig)
    return paths + save_learning_curves(history, runs, budget, command, commit, folder)


def report_factorial(results_dir, out_dir=None, figures_dir=None, figures: bool = True) -> dict:
    """Re-analyse a recorded factorial study (``runs.csv``, and ``predictions.csv.gz`` / ``history.csv`` /
    ``design.json`` / ``calls.csv`` when there) without training: writes the files of `write_factorial_report` into
    ``out_dir`` (default ``results_dir``) and, with ``figures``, `plot_factorial` into ``figures_dir`` (default
    ``<out_dir>/figures``). Never writes calls.csv. Returns ``dict(looks, claims, fit, blocks, stopped, reason,
    effects, table, figures)``. Raises ``FileNotFoundError`` without runs.csv, and like `analyse_looks` and
    ``gv3lite.schemas.read_results`` for bad records."""
    results_dir = Path(results_dir)
    if not (results_dir / "runs.csv").is_file():
        raise FileNotFoundError(f"{results_dir / 'runs.csv'} does not exist; give the folder `gv3lite reproduce "
                                "--design factorial` wrote (e.g. runs/study/quick)")
    study = read_study(results_dir)  # each file validated, and their row counts against each other
    runs = study["runs"]
    budget = str(runs["budget"].iloc[0]) if "budget" in runs and len(runs) else results_dir.name
    predictions = study["predictions"] if study["predictions"] is not None and len(study["predictions"]) else None
    record_file = results_dir / DESIGN_FILE
    record = read_design_file(record_file) if record_file.is_file() else design_record(budget)
    result = analyse_looks(runs, budget, predictions)
    effects = effects_table(result["fit"], correct_of(predictions, result["fit"]["table"]["run_id"]))
    out = Path(out_dir or results_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_factorial_report(result, record, out, budget, runs, read_calls(results_dir), effects)
    paths = plot_factorial(result["claims"], runs, budget, study["history"],
                           folder=Path(figures_dir or out / "figures")) if figures else []
    return {**result, "effects": effects, "table": result["fit"]["table"], "figures": paths}
