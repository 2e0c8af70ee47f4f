"""The study: the paper's ablations (arXiv 2404.11202, Sec. 4) trained, recorded, analysed and reported.

One module per concern, imports flowing down this list (import-linter's ``gv3lite.study`` contract in
pyproject.toml): `grids` (the one-factor grids as cells) and `design` (the main design: the 2^(6-2) fractional
factorial as data), with `provenance` (which code and command made the records: portable commands, the "trained by
other code" label, the check of a study folder before training) and `progress` (the live display of a study's
trainings, one line per claim); `plan` (cells and factorial runs -> recipes and run ids under a budget; the budgets
themselves: ``gv3lite.budgets``), `records` (the results files), `analysis` (the grids' summaries, contrasts,
verdicts), `factorial` (the factorial's OLS model and declared claims) and `reproduction` (a user's study beside the
committed one: ``reproduction.md``), `looks` (the factorial look by look, with the stopping rule of
``gv3lite.sequential``), `report` and `factorial_report` (Markdown, figures, re-analysis without training), `readme`
(README.md's generated block, committed studies), `workers` (training runs: locks, worker pool, submitit), `runner`
(`reproduce` of the grids), `blocks` (the factorial in sequential blocks) and `publish` (a trained study becomes the
committed results, ``make publish``), `cli` (the ``reproduce``, ``report``, ``readme``, ``compare`` and ``publish``
subcommands). Import from the module that owns a name, e.g. ``from gv3lite.study.plan import plan``.
"""
