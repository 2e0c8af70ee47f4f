"""Shared by the command-line error tests (test_cli_errors, test_reliability_cli, test_reliability_data): a tiny
training's flags, the debug switch off (so errors print one line, not a traceback), and `error_of`; and by the tests
of the benchmark scripts: `load_benchmark`."""
import importlib.util

import pytest

from gv3lite.cli import main
from gv3lite.utils import repo_root

TINY = ["--set", "img_size=40", "--set", "batch_size=4", "--epochs", "1", "--set", "teacher=null",
        "--set", "sched=cosine", "--set", "warmup_epochs=0", "--quiet"]


@pytest.fixture(autouse=True)
def no_debug(monkeypatch):
    monkeypatch.delenv("GV3LITE_DEBUG", raising=False)


def error_of(argv, capsys) -> str:
    """Run ``gv3lite ARGV``; assert it exits 2 with exactly one stderr line and no traceback; return that line."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


def load_benchmark(name: str):
    """The script ``benchmarks/<name>.py`` imported as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, repo_root() / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
