"""The study: the paper's ablations (arXiv 2404.11202, Sec. 4) trained, recorded, analysed and reported.

One module per concern, imports flowing down this list: `grids` (the one-factor grids as cells), `plan` (cells ->
recipes and run ids under a budget; the budgets themselves: ``gv3lite.budgets``), `records` (the results files),
`analysis` (summaries, contrasts, verdicts), `report` (Markdown, figures, re-analysis without training), `readme`
(README.md's generated block, committed studies), `workers` (training runs: locks, worker pool, submitit), `runner`
(`reproduce`), `cli` (the ``reproduce``, ``report`` and ``readme`` subcommands). Import from the module that owns a
name, e.g. ``from gv3lite.study.plan import plan``.
"""
