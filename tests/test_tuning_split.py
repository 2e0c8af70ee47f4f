"""The tuning split (issue 22): a fixed per-class slice of train/ chosen by a hash of the file name, excluded from
training, never overlapping the reported val images."""
import hashlib

import numpy as np
import pytest
from PIL import Image

from gv3lite.data import TUNING_PER_CLASS, ImageFolderDataset, build_datasets, check_disjoint, tuning_split


def _root(tmp_path, per_class=6, val_names=None):
    g = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            names = [f"{c}_{i}.png" for i in range(per_class)] if split == "train" else (val_names or [f"v{c}.png"])
            for name in names:
                Image.fromarray(g.integers(0, 256, (10, 12, 3), dtype=np.uint8), "RGB").save(tmp_path / split / c / name)
    return tmp_path


def test_tuning_split_is_the_smallest_name_hashes_per_class():
    paths = [f"/x/a/a_{i}.JPEG" for i in range(5)] + [f"/y/b/b_{i}.JPEG" for i in range(4)]
    targets = [0] * 5 + [1] * 4
    got = tuning_split(paths, targets, per_class=2)
    for c in (0, 1):
        idx = [i for i, t in enumerate(targets) if t == c]
        by_hash = sorted(idx, key=lambda i: hashlib.sha256(paths[i].rsplit("/", 1)[1].encode()).hexdigest())
        assert sorted(i for i in got if targets[i] == c) == sorted(by_hash[:2])
    # the folder does not matter, only the file name; and the order of the list does not either
    moved = [p.replace("/x/", "/elsewhere/") for p in paths]
    assert tuning_split(moved, targets, per_class=2) == got
    order = list(reversed(range(len(paths))))
    assert sorted(order[i] for i in tuning_split([paths[i] for i in order], [targets[i] for i in order], 2)) == got


def test_exclude_and_only_partition_train(tmp_path):
    root = _root(tmp_path, per_class=TUNING_PER_CLASS + 2)
    kw = dict(img_size=8, cache=False)
    every = {p for p, _ in ImageFolderDataset(root, "train", **kw).samples}
    rest = {p for p, _ in ImageFolderDataset(root, "train", tuning="exclude", **kw).samples}
    held = {p for p, _ in ImageFolderDataset(root, "train", train=False, tuning="only", **kw).samples}
    assert rest | held == every and not rest & held
    assert (len(held), len(rest)) == (2 * TUNING_PER_CLASS, 4)
    train, tune = build_datasets(root, 8, cache=False, tuning="only")
    assert {p for p, _ in tune.samples} == held and not tune.train and {p for p, _ in train.samples} == rest


def test_a_class_the_tuning_split_empties_is_refused(tmp_path):
    root = _root(tmp_path)  # 6 files per class, fewer than TUNING_PER_CLASS: all are held, none left to train on
    assert len(ImageFolderDataset(root, "train", 8, cache=False, tuning="only")) == 12
    with pytest.raises(ValueError, match=r"class\(es\) \['a', 'b'\] .* have no images left with tuning='exclude' .*"
                                         r"tuning='include'"):
        ImageFolderDataset(root, "train", 8, cache=False, tuning="exclude")


def test_tuning_split_overlapping_the_report_split_is_refused(tmp_path):
    # val holds copies of train file names, at least one of them in the tuning split (2 of a's 102 are not)
    root = _root(tmp_path, per_class=TUNING_PER_CLASS + 2, val_names=["a_0.png", "a_1.png", "a_2.png"])
    with pytest.raises(ValueError, match=r"tuning split overlaps the report split in \d+ images .*take the tuning"):
        build_datasets(root, 8, cache=False, tuning="exclude")
    with pytest.raises(ValueError, match="overlaps the report split in 1 images"):
        check_disjoint(["/r/train/a/x.JPEG"], ["/r/val/a/x.JPEG", "/r/val/a/y.JPEG"])
    with pytest.raises(ValueError, match="slice of train/"):
        ImageFolderDataset(root, "val", 8, cache=False, tuning="only")
    with pytest.raises(ValueError, match="slice of train/"):
        ImageFolderDataset(root, "train", 8, cache=False, tuning="half")
