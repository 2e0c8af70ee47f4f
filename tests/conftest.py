"""Shared fixtures: the real Imagenette root and small class-balanced subsets of it.

The data root is ``GV3LITE_DATA`` or, when unset, ``<repo>/../shared/data/imagenette2-224``.
Tests that need it are skipped with a clear reason when it is absent.
"""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FOUR_CLASSES = ["n01440764", "n02979186", "n03394916", "n03888257"]  # tench, cassette player, French horn, parachute


def _data_root() -> Path:
    return Path(os.environ.get("GV3LITE_DATA") or REPO.parent / "shared" / "data" / "imagenette2-224")


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The Imagenette ImageFolder root (train/ and val/); skips the test when it is not on disk."""
    root = _data_root()
    if not (root / "train").is_dir() or not (root / "val").is_dir():
        pytest.skip(f"Imagenette not found at {root}; set GV3LITE_DATA to an ImageFolder root with train/ and val/")
    return root


@pytest.fixture(scope="session")
def tiny_datasets(data_root):
    """A (train, val) pair: 4 classes, 100 train and 20 val images per class, 64 px, decoded once per session."""
    from gv3lite.data import build_datasets
    return build_datasets(data_root, 64, classes=FOUR_CLASSES, images_per_class_train=100, images_per_class_val=20,
                          seed=0, scale=(0.25, 1.0))


def pytest_terminal_summary(terminalreporter):
    """Print how long Run All took per notebook in the browser test (tests/test_browser.py), when it ran."""
    import sys
    module = sys.modules.get("test_browser")
    times = getattr(module, "TIMES", None)
    if times:
        terminalreporter.write_sep("-", "notebooks: Run All Cells in JupyterLab (smoke budget), wall seconds")
        for name, seconds in sorted(times.items()):
            flag = "" if seconds <= 60 else "   (over the 60 s target)"
            terminalreporter.write_line(f"{name:45s} {seconds:6.1f}{flag}")
        terminalreporter.write_line(f"{'total':45s} {sum(times.values()):6.1f}")
