"""benchmarks/notebook_times.py without a browser: bad arguments are one line and exit 2, and a saved notebook's
outputs become the row's status and first error (the Run All itself is the browser test's harness, tests/browser.py)."""
from __future__ import annotations

import pytest

from browser import REPO, RunAll
from cli_helpers import load_benchmark


@pytest.fixture(scope="module")
def notebook_times():
    return load_benchmark("notebook_times")


@pytest.mark.parametrize("args, says", [
    (["--budget", "huge"], "unknown budget 'huge'; choose one of ['smoke', 'quick', 'medium', 'full']"),
    (["--notebooks", "99"], "--notebooks '99' names no notebook; choose from 00_overview, "),
    (["--timeout-s", "0"], "--timeout-s 0 / --threads 1: give positive numbers"),
])
def test_bad_arguments_are_one_line_and_exit_2(notebook_times, tmp_path, capsys, args, says):
    assert notebook_times.main([*args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("notebook_times.py: error: " + says) and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_notebooks_are_chosen_by_number_or_name(notebook_times):
    chosen = notebook_times.select_notebooks(["05", "01_ghost_module.ipynb", "05_training_recipe"])
    assert [nb.stem for nb in chosen] == ["05_training_recipe", "01_ghost_module"]
    assert len(notebook_times.select_notebooks(None)) == len(list((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")))


def _notebook(*outputs):
    cells = [{"cell_type": "markdown", "source": "# x"}]
    cells += [{"cell_type": "code", "execution_count": i + 1, "outputs": out} for i, out in enumerate(outputs)]
    return {"cells": cells}


def test_a_row_passes_only_with_no_error_and_the_claim_line(notebook_times):
    claim = [{"output_type": "stream", "name": "stdout", "text": ["claim checked: {}\n"]}]
    warning = [{"output_type": "stream", "name": "stderr", "text": ["UserWarning: x\n  more\n"]}]
    row = notebook_times.outcome(RunAll(12.34, _notebook(warning, claim)))
    assert row == {"seconds": 12.3, "status": "passed", "cells_run": 2, "code_cells": 2, "error": "",
                   "stderr": "cell 0: UserWarning: x more"}
    error = [{"output_type": "error", "ename": "KeyError", "evalue": "'medium'\nsecond line", "traceback": []}]
    row = notebook_times.outcome(RunAll(3.0, _notebook(error, [])))
    assert (row["status"], row["error"], row["stderr"]) == ("failed", "cell 0: KeyError: 'medium'", "")
    row = notebook_times.outcome(RunAll(3.0, _notebook([])))
    assert (row["status"], row["error"]) == ("failed", "no 'claim checked' line in the last cell")
