"""The factorial study's report: ``verdicts.csv`` (the declared claims), ``effects.csv`` (interactions and the
effects at the GhostNetV3 corner), ``looks.csv`` (the look schedule) and ``report.md`` (the design with its defining
relation and alias chains, the model, the variance check, the claims with their intervals and verdicts, the looks),
and `report_factorial` (re-analysis of a recorded factorial study without training).
"""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pandas as pd

from gv3lite.budgets import FACTORIAL_BLOCKS
from gv3lite.paper import difference_kind
from gv3lite.verdicts import ALPHA, DELTA
from gv3lite.study import design
from gv3lite.study.analysis import paper_diffs
from gv3lite.study.factorial import CLAIMS, FORMULA, effects_table
from gv3lite.study.looks import analyse_looks, correct_of
from gv3lite.study.records import PREDICTIONS, read_calls
from gv3lite.study.report import calls_note
from gv3lite.utils import git_commit, write_atomic, write_csv

DESIGN_FILE = "design.json"  # the design a factorial results folder was trained with


def design_record(budget: str, changes: dict | None = None, generators: dict | None = None) -> dict:
    """What identifies a factorial study: generators, defining relation, factor levels, ``--set`` changes and the
    budget's looks (written as ``design.json``)."""
    gens = generators or design.GENERATORS
    return {"design": "factorial 2^(6-2)", "generators": gens, "defining_relation": design.relation_text(gens),
            "resolution": design.resolution(gens), "changes": dict(changes or {}),
            "factors": {f.letter: {"name": f.name, "low": f.low, "high": f.high} for f in design.FACTORS},
            "looks": FACTORIAL_BLOCKS[budget], "formula": FORMULA}


def check_design_file(out_dir, record: dict) -> None:
    """Refuse a results folder that holds another design (``ValueError`` naming the difference and the fix)."""
    file = Path(out_dir) / DESIGN_FILE
    if not file.is_file():
        return
    old = json.loads(file.read_text())
    differs = [k for k in ("generators", "changes", "factors") if json.dumps(old.get(k), sort_keys=True)
               != json.dumps(record[k], sort_keys=True)]
    if differs:
        raise ValueError(f"{out_dir} holds a factorial study with other {', '.join(differs)}; its runs cannot be "
                         "mixed with this design: give another --out (nothing was changed)")


def markdown(table: pd.DataFrame) -> str:
    """A DataFrame as a Markdown table (floats to 2 decimals)."""
    cells = [[f"{v:.2f}" if isinstance(v, float) else str(v) for v in row] for row in table.itertuples(index=False)]
    return "\n".join(["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
                     + ["| " + " | ".join(row) + " |" for row in cells])


def _num(v, spec=".2f") -> str:
    return "n/a" if v != v else format(v + 0.0, spec)


def claim_lines(claims: pd.DataFrame) -> list[str]:
    lines = ["| claim | claimed direction | diff (pp) | interval | half-width (pp) | confidence | decided at look "
             "| MDE (pp) | source's claim (pp) | verdict |", "|---|---|---|---|---|---|---|---|---|---|"]
    for c, r in zip(CLAIMS, claims.itertuples()):
        diffs = "/".join(f"{d:+.1f}" for d in paper_diffs(*c.paper))  # labelled by what they are (gv3lite.paper)
        paper = f"{difference_kind(c.paper[0])}: {diffs}" if diffs else f"paper: {c.direction}"
        lines.append(f"| {r.claim} | {r.direction} | {_num(r.diff, '+.2f')} | [{_num(r.low, '+.2f')}, "
                     f"{_num(r.high, '+.2f')}] | {_num((r.high - r.low) / 2)} | {1 - r.level:.4f} | "
                     f"{r.decided_at_look or '—'} | {_num(r.mde, '.1f')} | {paper} | **{r.verdict}** |")
    return lines


def design_lines(record: dict) -> list[str]:
    gens = record["generators"]
    lines = ["| factor | name | -1 | +1 |", "|---|---|---|---|"]
    lines += [f"| {x} | {f['name']} | {f['low']} | {f['high']} |" for x, f in record["factors"].items()]
    chains = [design.chain_text(c) for c in design.alias_chains(gens, max_order=3) if len(c[0][1]) <= 2]
    return [f"Design: {record['design']}, 16 runs per block (block b trains with seed b, its runs in the random "
            f"order drawn from the seed), generators {', '.join(f'{k} = {v}' for k, v in gens.items())}; defining "
            f"relation {record['defining_relation']} (resolution {record['resolution']}). Corners in every block: "
            f"GhostNetV3 recipe {design.run_label(design.GHOSTNETV3_CORNER)}, conventional recipe "
            f"{design.run_label(design.CONVENTIONAL_CORNER)}." + (f" `--set`: {record['changes']}." if
                                                                    record["changes"] else ""), "", *lines, "",
            "Alias chains (up to three-factor terms): " + "; ".join(chains) + ".", ""]


def write_factorial_report(result: dict, record: dict, out_dir, budget: str, command: str, calls=None,
                           effects: pd.DataFrame | None = None) -> Path:
    """Write verdicts.csv, effects.csv, looks.csv and report.md of an `analyse_looks` ``result`` into ``out_dir``."""
    out_dir = Path(out_dir)
    write_csv(result["claims"], out_dir / "verdicts.csv")
    write_csv(result["looks"], out_dir / "looks.csv")
    if effects is not None:
        write_csv(effects, out_dir / "effects.csv")
    fit = result["fit"]
    check = ", ".join(f"{k} {v:.3f}" for k, v in fit["variance_p"].items())
    lines = [f"# gv3lite factorial study — {budget} budget", "", f"Command: `{command}`  ",
             f"Commit: {git_commit()}; {result['blocks']} block(s), {16 * result['blocks']} runs; stopped: "
             f"{result['stopped']} ({result['reason']})" + (f"; {calls_note(calls)}" if calls is not None else ""), "",
             *design_lines(record),
             f"Model (statsmodels OLS): `{FORMULA}`, ±1 coding, effect = 2β; residual df {fit['result'].df_resid:.0f}. "
             f"Variance check (Brown-Forsythe between the levels of each factor, Holm p): {check} -> "
             f"{'HC3 errors' if fit['robust'] else 'classical errors'}.", "",
             f"Claims (declared before any run, the same at every budget; Holm across the {len(CLAIMS)} at every "
             f"look, alpha spent over the looks by an O'Brien-Fleming-type Lan-DeMets function: "
             f"`gv3lite.sequential`). δ = {DELTA:g} pp; family-wise alpha {ALPHA:g}. A verdict is final at the look "
             "that makes it; intervals are those of the last look at its level (repeated confidence intervals).",
             "", *claim_lines(result["claims"]), "", "Looks (`looks.csv`):", "",
             markdown(result["looks"][["look", "blocks", "level", "claim", "diff", "low", "high",
                                       "verdict_so_far"]]), ""]
    if effects is not None:
        lines += ["Effects (exploratory, 95% intervals, not judged):", "",
                  markdown(effects[["effect", "kind", "aliases", "diff", "low", "high"]]), ""]
    path = out_dir / "report.md"
    return write_atomic(path, "\n".join(lines) + "\n")


def report_factorial(results_dir, out_dir=None, command: str | None = None) -> dict:
    """Re-analyse a recorded factorial study (``runs.csv``, and ``predictions.csv.gz`` / ``design.json`` /
    ``calls.csv`` when there) without training; writes into ``out_dir`` (default ``results_dir``). Raises like
    `analyse_looks`."""
    results_dir = Path(results_dir)
    runs = pd.read_csv(results_dir / "runs.csv")
    budget = str(runs["budget"].iloc[0]) if "budget" in runs else results_dir.name
    predictions = pd.read_csv(results_dir / PREDICTIONS) if (results_dir / PREDICTIONS).is_file() else None
    record_file = results_dir / DESIGN_FILE
    record = json.loads(record_file.read_text()) if record_file.is_file() else design_record(budget)
    result = analyse_looks(runs, budget, predictions)
    table = result["fit"]["table"]
    effects = effects_table(result["fit"], correct_of(predictions, table["run_id"]))
    out = Path(out_dir or results_dir)
    out.mkdir(parents=True, exist_ok=True)
    command = command or " ".join(["gv3lite", *map(shlex.quote, sys.argv[1:])])
    write_factorial_report(result, record, out, budget, command, read_calls(results_dir), effects)
    return {**result, "effects": effects, "table": table}

