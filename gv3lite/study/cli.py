"""The study's subcommands of the ``gv3lite`` command, registered by ``gv3lite.cli``: ``reproduce``
(`add_reproduce`: ``--design factorial``, the study of ``make main`` / ``make medium``: the fractional factorial in
sequential blocks; or ``--design ofat``: the one-factor grids),
``report`` (`add_report`: re-analysis without training, of either design), ``readme`` (`add_readme`: README.md's
generated Results block), ``compare`` (`add_compare`: a user's study beside the committed one, reproduction.md) and
``publish`` (`add_publish`: a trained study becomes the committed results, ``make publish``).
"""
from __future__ import annotations

import difflib
import sys
from pathlib import Path

import yaml

from gv3lite.budgets import BUDGETS, FACTORIAL_BLOCKS
from gv3lite.budgets import budget as env_budget
from gv3lite.data import resolve_data_root
from gv3lite.study.blocks import reproduce_factorial
from gv3lite.study.factorial_report import report_factorial
from gv3lite.study.grids import GRIDS
from gv3lite.study.plan import factorial_plan, plan
from gv3lite.study.progress import claim_lines
from gv3lite.study.publish import FIGURES, publish
from gv3lite.study.records import folder_design
from gv3lite.study.readme import CAPTION_BEGIN, CAPTION_END, README_BEGIN, README_END, render_readme
from gv3lite.study.report import report
from gv3lite.study.reproduction import summary_line, write_reproduction
from gv3lite.study.runner import reproduce
from gv3lite.utils import check_output_dir, check_splits_apart, output_dir, repo_root, resolve_device, write_atomic


def add_reproduce(subparsers) -> None:
    """Register ``gv3lite reproduce`` (see `reproduce`)."""
    p = subparsers.add_parser("reproduce", help="train the paper's ablation study under a budget; write results, "
                                                "report and figures",
                              description="--design factorial (make main, make medium): the 2^(6-2) fractional "
                                          "factorial (gv3lite.study.design), one block of 16 runs at a time until its "
                                          "declared claims are decided. --design ofat: every cell of the one-factor "
                                          "grids (gv3lite.study.grids.GRIDS) for each seed. Sizes come from the budget "
                                          "(gv3lite.budgets). Finished runs are skipped, interrupted ones resume from "
                                          "their checkpoint. Every student trains on train/ minus the tuning split; "
                                          "KD uses the same-data teacher imagenette_same_data (its soft labels: "
                                          "gv3lite/artifacts/, rebuilt by `python -m gv3lite.same_data_teacher`). The "
                                          "ImageNet-pretrained efficientnet_lite0/lite2 teachers are the outside-data "
                                          "variant (1.28 M images, among them 3,791 of the 3,925 Imagenette val "
                                          "images).")
    p.add_argument("--budget", default=None, choices=list(BUDGETS), help="smoke | quick | medium | full (default: "
                                                                          "$GV3LITE_BUDGET, else smoke)")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default: the budget's)")
    p.add_argument("--out", default="runs/reproduce", help="results root; files go to OUT/<budget>/ (default "
                                                           "runs/reproduce; `make main` trains into runs/study)")
    p.add_argument("--grids", default=None, help=f"with --design ofat: comma-separated subset of {','.join(GRIDS)}")
    p.add_argument("--data", help="ImageFolder root (default: $GV3LITE_DATA or ../shared/data/imagenette2-224)")
    p.add_argument("--figures", default=None, help="figure folder (default: $GV3LITE_FIGURES, else OUT/<budget>/figures;"
                                                   " `make publish` writes the committed figures/)")
    p.add_argument("--list", action="store_true", help="print the plan (grid, cell, seed, run id) and exit")
    p.add_argument("--design", choices=["ofat", "factorial", "grids"], default="ofat", help="ofat (default; 'grids' "
                   "is the same): the one-factor-at-a-time grids, for the notebooks and questions outside the "
                   "factorial; factorial: the study of make main / make medium, the 2^(6-2) fractional factorial, one "
                   "block of 16 runs at a time until its claims are decided (gv3lite.study.design, "
                   "gv3lite.budgets.FACTORIAL_BLOCKS)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="with --design factorial: a "
                   "recipe field set in every run (repeatable; a factor's field is refused)")
    p.add_argument("--generators", default=None, help="with --design factorial: the fraction's generators, e.g. "
                   "E=-ACD,F=-BCD (the default)")
    p.add_argument("--jobs", type=int, default=1, help="trainings at once, each with (threads // jobs) threads "
                                                       "(default 1; 2 on a 2-core CPU is ~1.8x faster)")
    p.add_argument("--verbose", action="store_true", help="progress bars and per-epoch lines (with --jobs 1 only)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu); with --jobs N on a machine "
                                                   "with several GPUs, one run per GPU")
    s = p.add_argument_group("scheduler (submitit): each training as one job; a lock keeps runs from training twice")
    s.add_argument("--submitit", choices=["local", "slurm", "debug"], help="run the trainings through submitit: "
                   "slurm (a job array, --jobs at a time), local (subprocesses here) or debug (in this process)")
    s.add_argument("--slurm-partition", help="SLURM partition (with --submitit slurm)")
    s.add_argument("--timeout-min", type=int, default=24 * 60, help="time limit per training in minutes (default 1440)")
    s.add_argument("--gpus-per-run", type=int, default=0, help="GPUs per training job (default 0; 1 with --device cuda)")
    p.set_defaults(func=run_reproduce)


def add_report(subparsers) -> None:
    """Register ``gv3lite report`` (see `report`)."""
    p = subparsers.add_parser("report", help="re-analyse recorded results (runs.csv) without training",
                              description="Read RESULTS/runs.csv and rewrite summary, verdicts.csv, report.md and "
                                          "the figures with the current statistics (gv3lite.stats).")
    p.add_argument("results", help="a folder gv3lite reproduce wrote, e.g. results/quick")
    p.add_argument("--out", default=None, help="where summary, verdicts.csv and report.md go (default: the "
                                               "git-ignored runs/report/<name of RESULTS>; `--out results/quick "
                                               "--figures figures` rewrites the committed ones)")
    p.add_argument("--figures", default=None, help="figure folder (default OUT/figures)")
    p.add_argument("--no-pool", action="store_true", help="a paired t interval per contrast instead of the "
                                                          "seed-blocked model with pooled residual variance")
    p.set_defaults(func=run_report)


def add_readme(subparsers) -> None:
    """Register ``gv3lite readme`` (see `readme_results`)."""
    p = subparsers.add_parser("readme", help="regenerate README.md's Results block from the committed results/",
                              description="Replace the text between the lines '" + README_BEGIN + "' and '"
                                          + README_END + "' of README with the provenance and the verdict tables "
                                          "of RESULTS/quick and RESULTS/medium (gv3lite.study.readme.readme_results), "
                                          "and the forest plot's caption between '" + CAPTION_BEGIN + "' and '"
                                          + CAPTION_END + "' with what RESULTS/quick's design draws. "
                                          "`make publish` runs it.")
    p.add_argument("--results", default="results", help="the results root (default: results)")
    p.add_argument("--readme", default="README.md", help="the README to update (default: README.md)")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 when the README's block differs "
                                                        "from what would be generated (0 when equal)")
    p.set_defaults(func=run_readme)


def run_readme(args) -> int:
    readme = Path(args.readme)
    if not readme.is_file():
        raise FileNotFoundError(f"{readme} does not exist; give the README with --readme")
    text = readme.read_text()
    generated = render_readme(text, args.results, str(readme))
    if text == generated:
        print(f"{readme}: the results block is up to date with {args.results}/")
        return 0
    if args.check:
        diff = list(difflib.unified_diff(text.splitlines(), generated.splitlines(), "README",
                                         f"gv3lite readme --results {args.results}", lineterm="", n=0))
        print(f"{readme}: the results block differs from what `gv3lite readme` generates from {args.results}/ "
              f"(differences below); run `gv3lite readme` and commit {readme}", file=sys.stderr)
        unlabelled = [line for line in generated.splitlines() if line.startswith("**Trained by ") and line not in text]
        if unlabelled:  # the training code changed under a committed study: the README must say so
            print(f"{readme} shows a study trained by other code than the current one without saying so: "
                  + " / ".join(unlabelled) + " -- regenerate the study (make main, make publish) or run `gv3lite "
                  "readme` to label it", file=sys.stderr)
        print("\n".join(diff[:40] + ([f"... {len(diff) - 40} more lines"] if len(diff) > 40 else [])),
              file=sys.stderr)
        return 1
    write_atomic(readme, generated)  # a reader never sees half a README
    print(f"{readme}: results block regenerated from {args.results}/")
    return 0


def run_report(args) -> int:
    out = Path(args.out) if args.out else repo_root() / "runs" / "report" / Path(args.results).resolve().name
    check_output_dir(out)
    if folder_design(args.results) == "factorial":
        if args.no_pool:
            raise ValueError("--no-pool applies to a study of the one-factor grids; the factorial's intervals come "
                             "from its model: drop --no-pool")
        result = report_factorial(args.results, out, figures_dir=args.figures)
        print("\n".join(claim_lines(result["claims"])))
        print(f"-> {out}/report.md, verdicts.csv, looks.csv, effects.csv; figures: "
              + ", ".join(str(p) for p in result["figures"]))
        return 0
    result = report(args.results, args.figures, pool=not args.no_pool, out_dir=out)
    table = result["verdicts"]
    shown = table[["grid", "cell", "baseline", "diff", "low", "high", "p_holm", "mde", "verdict"]].round(
        {"diff": 2, "low": 2, "high": 2, "p_holm": 3, "mde": 1})
    print(shown.to_string(index=False))
    print(f"-> {out}/report.md, verdicts.csv; figures: " + ", ".join(str(p) for p in result["figures"]))
    return 0


def _pairs(items, flag: str) -> dict:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}`` (values read as YAML); ``ValueError`` for an item without =."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{flag} {item!r}: write NAME=VALUE")
        out[key.strip()] = yaml.safe_load(value) if flag == "--set" else value.strip()
    return out


def _launch_options(args) -> dict:
    """Check ``--device`` before any data is read (cuda without a GPU), then return the submitit options of
    ``reproduce`` / ``reproduce_factorial``. Called inside ``gv3lite.utils.output_dir(args.out)``, which checks
    ``--out`` first (a file, a file's sub-folder, a folder that is not writable) and removes it again if the call is
    refused while it is empty (a bad data root or ``--jobs``). A data root whose val/ reaches train/'s images is
    refused here too (``gv3lite.utils.check_splits_apart``)."""
    resolve_device(args.device)
    check_splits_apart(resolve_data_root(args.data))
    return {"slurm_partition": args.slurm_partition, "timeout_min": args.timeout_min,
            "gpus_per_run": args.gpus_per_run or (1 if args.device == "cuda" else 0)}


def run_factorial(args, budget: str) -> int:
    if args.grids is not None or args.seeds is not None:
        raise ValueError("--grids and --seeds apply to --design ofat (the factorial's blocks are its seeds); drop "
                         "them, or add --design ofat")
    changes = _pairs(args.set, "--set")
    generators = _pairs(args.generators.split(","), "--generators") if args.generators else None
    items = factorial_plan(budget, FACTORIAL_BLOCKS[budget]["max_blocks"], changes, generators)
    if args.list:
        for it in items:
            print(f"block {it['block']}  {it['order']:2d}  {it['cell']}  {it['run_id']}")
        return 0
    with output_dir(args.out):  # a call refused before it writes anything leaves no empty --out behind
        result = reproduce_factorial(budget, args.out, args.data, jobs=args.jobs, device=args.device,
                                     quiet=not args.verbose, changes=changes, generators=generators,
                                     submitit=args.submitit, submitit_options=_launch_options(args), progress=True,
                                     figures_dir=args.figures)
    print(f"trained {result['trained']} (resumed {result['resumed']}), skipped {result['skipped']} finished runs"
          + (f", {result['busy']} being trained by another process" if result["busy"] else "")
          + f"; {result['blocks']} block(s); {result['reason']}")
    if result["claims"] is not None:
        print("\n".join(claim_lines(result["claims"])))
    print(f"-> {result['out_dir']}/report.md, verdicts.csv, looks.csv, effects.csv, runs.csv"
          + ("; figures: " + ", ".join(str(p) for p in result["figures"]) if result["figures"] else ""))
    return 0


def run_reproduce(args) -> int:
    budget = args.budget or env_budget()
    if args.design == "factorial":
        return run_factorial(args, budget)
    if args.set or args.generators:
        raise ValueError("--set and --generators apply to --design factorial; add it or drop them")
    # `--grids ""` or `--grids ,,` name no grid: `plan` rejects that instead of running all of them
    grids = [g.strip() for g in args.grids.split(",") if g.strip()] if args.grids is not None else None
    items = plan(budget, grids, args.seeds)  # unknown grids, bad --seeds: refused before --out is created
    if args.list:
        for it in items:
            print(f"{it['grid']:14s} {it['cell']:30s} seed {it['seed']}  {it['run_id']}")
        return 0
    with output_dir(args.out):  # a call refused before it writes anything leaves no empty --out behind
        result = reproduce(budget, args.seeds, args.out, grids, args.data, quiet=not args.verbose, jobs=args.jobs,
                           figures_dir=args.figures, device=args.device, submitit=args.submitit,
                           submitit_options=_launch_options(args), progress=True)
    print(f"trained {result['trained']} (resumed {result['resumed']}), skipped {result['skipped']} finished runs"
          + (f", {result['busy']} being trained by another process" if result["busy"] else ""))
    print("\n".join(claim_lines(result["verdicts"])))
    print(f"-> {result['out_dir']}/runs.csv, summary.csv, summary.md, report.md; figures: "
          + ", ".join(str(p) for p in result["figures"]))
    return 0


def add_compare(subparsers) -> None:
    """Register ``gv3lite compare`` (see ``gv3lite.study.reproduction``)."""
    p = subparsers.add_parser("compare", help="a study you trained beside the committed one: run by run and claim "
                                              "by claim; writes YOURS/reproduction.md",
                              description="Compare the study in YOURS (e.g. runs/study/quick, written by `make main`) "
                                          "with COMMITTED (e.g. results/quick): per training whether top-1 is "
                                          "identical (else the difference), per claim both intervals and whether "
                                          "the verdicts agree. Both studies must be of one budget and one design "
                                          "(factorial or one-factor grids). `make main` and `make medium` run it.")
    p.add_argument("yours", help="your study's folder (runs/study/<budget>)")
    p.add_argument("committed", help="the committed study's folder (results/<budget>)")
    p.set_defaults(func=run_compare)


def run_compare(args) -> int:
    path, text, summary = write_reproduction(args.yours, args.committed)
    print(text.split("\n## ", 1)[0].rstrip())
    print(f"-> {path}")
    return 0


def add_publish(subparsers) -> None:
    """Register ``gv3lite publish`` (see ``gv3lite.study.publish``)."""
    p = subparsers.add_parser("publish", help="maintainers: a trained study becomes the committed results/, "
                                              "figures/ and README's Results block (make publish)",
                              description="Copy the records of STUDY/BUDGET (runs.csv, history.csv, predictions, "
                                          "calls.csv, design.json) into RESULTS/BUDGET, re-render its report and "
                                          "figures by its design (factorial or one-factor grids), and regenerate "
                                          "README.md's Results block. Refuses a study with interrupted runs, runs of "
                                          "other training code, or both designs in one folder.")
    p.add_argument("--budget", required=True, choices=list(FIGURES), help="quick (make main) or medium (make medium)")
    p.add_argument("--study", default="runs/study", help="the study root make main trained into (default runs/study)")
    p.add_argument("--results", default="results", help="the committed results root (default results)")
    p.add_argument("--render-only", action="store_true", help="copy nothing: re-render the committed results "
                                                              "(after a change to the analysis or the report)")
    p.set_defaults(func=run_publish)


def run_publish(args) -> int:
    done = publish(args.budget, args.study, args.results, render_only=args.render_only)
    print(("re-rendered " if args.render_only else f"published {args.study}/{args.budget} as ") + str(done["results"])
          + f" ({done['design']} design); figures in {FIGURES[args.budget]}/; README.md "
          + ("Results block regenerated" if done["readme_changed"] else "unchanged")
          + (f"; removed what the other design had rendered: {', '.join(str(p) for p in done['removed'])}"
             if done["removed"] else ""))
    return 0
