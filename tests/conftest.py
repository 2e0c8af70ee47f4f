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


@pytest.fixture
def make_image_root(tmp_path):
    """A factory of tiny ImageFolder roots under ``tmp_path``: ``make_image_root(classes=("a", "b"), per_class=2,
    size=(12, 10))`` writes ``train/`` and ``val/`` with ``per_class`` random RGB PNGs per class and returns the root.
    Made by the test itself (no committed images)."""
    import numpy as np
    from PIL import Image

    def make(classes=("a", "b"), per_class=2, size=(12, 10), name="data"):
        root = tmp_path / name
        g = np.random.default_rng(0)
        for split in ("train", "val"):
            for c in classes:
                (root / split / c).mkdir(parents=True, exist_ok=True)
                for i in range(per_class):
                    pixels = g.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                    Image.fromarray(pixels, "RGB").save(root / split / c / f"{i}.png")
        return root
    return make
