"""benchmarks/test_command_time.py without running the suite: it finds pytest's summary line, records a passing
command's time, and writes nothing for a failing one (the first screen quotes only a passing suite's time)."""
from __future__ import annotations

import json
import sys

import pytest

from cli_helpers import load_benchmark


@pytest.fixture(scope="module")
def timer():
    return load_benchmark("test_command_time")


def test_the_summary_line_is_pytest_s_last_one(timer):
    out = ("tests/test_a.py ....\n= 3 passed in 1.00s =\nrerun\n"
           "=========== 746 passed, 1 skipped, 2 warnings in 694.80s (0:11:34) ===========\n")
    assert timer.summary_line(out) == "746 passed, 1 skipped, 2 warnings in 694.80s (0:11:34)"
    assert timer.summary_line("make: *** [Makefile:77: test] Error 2\n") is None


@pytest.mark.parametrize("status", [0, 1])
def test_only_a_passing_command_is_recorded(timer, tmp_path, capsys, status):
    code = f"print('== 5 passed in 0.10s =='); raise SystemExit({status})"
    assert timer.run_and_record([sys.executable, "-c", code], tmp_path, tmp_path) == status
    record = tmp_path / "record.json"
    if status:
        assert not record.exists() and "no record written" in capsys.readouterr().err
    else:
        saved = json.loads(record.read_text())
        assert saved["summary"] == "5 passed in 0.10s" and saved["exit_status"] == 0 and saved["wall_seconds"] >= 0
        assert {"git_commit", "code_fingerprint", "machine", "load_before", "load_after"} <= set(saved)


def test_a_command_without_a_summary_line_is_not_recorded(timer, tmp_path):
    assert timer.run_and_record([sys.executable, "-c", "print('hello')"], tmp_path, tmp_path) == 1
    assert not (tmp_path / "record.json").exists()
