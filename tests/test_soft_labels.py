"""Published soft labels of the same-data teacher (gv3lite.soft_labels, issue 22): used by cached KD, refused for
other classes, for images the teacher did not train on, for a teacher that trained on the tuning split, and when
stale."""
import numpy as np
import pytest
import torch
from PIL import Image

from gv3lite import soft_labels
from gv3lite.data import TUNING_PER_CLASS, ImageFolderDataset
from gv3lite.teacher_outputs import make_kd
from gv3lite.soft_labels import read_soft_labels, save_soft_labels, soft_labels_for

PER_CLASS = TUNING_PER_CLASS + 3  # 3 images per class left to train on


@pytest.fixture
def root(tmp_path):
    g = np.random.default_rng(0)
    for split, n in (("train", PER_CLASS), ("val", 1)):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(g.integers(0, 256, (4, 4, 3), dtype=np.uint8), "RGB").save(
                    tmp_path / split / c / f"{split}_{c}_{i}.png")
    return tmp_path


def _publish(file, dataset, classes=("a", "b")):
    paths = [p for p, _ in dataset.samples]
    maps = torch.arange(len(paths) * 2 * 4, dtype=torch.float32).view(len(paths), 2, 2, 2)
    save_soft_labels(file, maps, paths, list(classes), 48, "toy", {"top1_val": 0.0})
    return maps


def test_cached_kd_reads_the_published_soft_labels(root, tmp_path, monkeypatch):
    train = ImageFolderDataset(root, "train", 8, cache=False, tuning="exclude", return_crop_info=True)
    assert len(train) == 6
    maps = _publish(tmp_path / "sl.pt", train)
    monkeypatch.setitem(soft_labels.SOFT_LABEL_TEACHERS, "toy_teacher", tmp_path / "sl.pt")
    kd = make_kd("toy_teacher", train)
    assert torch.equal(kd.label_maps.maps.float(), maps) and kd.label_maps.image_size == 48
    assert read_soft_labels(tmp_path / "sl.pt")["card"] == {"top1_val": 0.0}
    with pytest.raises(ValueError, match="soft labels only; use kd_mode='cached'"):
        make_kd("toy_teacher", train, mode="online")


def test_soft_labels_refuse_other_classes_unseen_tuning_and_changed_images(root, tmp_path):
    train = ImageFolderDataset(root, "train", 8, cache=False, tuning="exclude")
    paths, file = [p for p, _ in train.samples], tmp_path / "sl.pt"
    _publish(file, train)
    assert soft_labels_for(file, paths[:3], ["a", "b"])["maps"].shape == (3, 2, 2, 2)
    with pytest.raises(ValueError, match="are for classes .* use a teacher trained on these classes"):
        soft_labels_for(file, paths, ["b", "a"])
    tuning = ImageFolderDataset(root, "train", 8, cache=False, tuning="only")
    with pytest.raises(ValueError, match=r"did not train on 1 of the student's 7 .*tuning='exclude'"):
        soft_labels_for(file, paths + [tuning.samples[0][0]], ["a", "b"])
    _publish(file, ImageFolderDataset(root, "train", 8, cache=False))  # a teacher that saw the tuning split
    with pytest.raises(ValueError, match=rf"trained on {2 * TUNING_PER_CLASS} tuning-split images"):
        soft_labels_for(file, paths, ["a", "b"])
    _publish(file, train)
    with open(paths[0], "ab") as f:
        f.write(b"\0")  # the image changed after the soft labels were built
    with pytest.raises(ValueError, match="are stale: 1 training images changed .*python -m gv3lite.same_data_teacher"):
        soft_labels_for(file, paths, ["a", "b"])
    with pytest.raises(FileNotFoundError, match="build them with"):
        soft_labels_for(tmp_path / "none.pt", paths, ["a", "b"])
