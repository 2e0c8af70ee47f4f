"""Published soft labels of the same-data teacher (gv3lite.soft_labels, issue 22): used by cached KD, refused for
other classes, for images the teacher did not train on, for a teacher that trained on the tuning split or on report
(val/) images, and when stale; a missing file stops `gv3lite train` and the study at once; each refusal (and a tuning
split overlapping the report split) is one line and exit 2 on the command line; recipes train on train/ minus the
tuning split (`Recipe.tuning`)."""
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from gv3lite import soft_labels
from gv3lite.cli import main
from gv3lite.data import TUNING_PER_CLASS, ImageFolderDataset
from gv3lite.experiment import recipe_datasets
from gv3lite.recipe import Recipe
from gv3lite.study import workers
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



def test_soft_labels_refuse_a_teacher_that_saw_report_images(root, tmp_path):
    train = ImageFolderDataset(root, "train", 8, cache=False, tuning="exclude")
    paths, file = [p for p, _ in train.samples], tmp_path / "sl.pt"
    saw_val = SimpleNamespace(samples=train.samples + [(str(root / "val" / "a" / "val_a_0.png"), 0)])
    _publish(file, saw_val)
    with pytest.raises(ValueError, match=r"trained on 1 report \(val/\) images \(e.g. a/val_a_0.png\).*rebuild"):
        soft_labels_for(file, paths, ["a", "b"])


def test_the_recipe_trains_on_train_minus_the_tuning_split(root):
    held = {p for p, _ in ImageFolderDataset(root, "train", 8, cache=False, tuning="only").samples}
    train, val = recipe_datasets(Recipe(img_size=40, cache=False, tuning="exclude"), root)
    assert len(train) == 6 and not {p for p, _ in train.samples} & held and len(val) == 2
    assert len(recipe_datasets(Recipe(img_size=40, cache=False), root)[0]) == 2 * PER_CLASS
    with pytest.raises(ValueError, match=r"recipe.tuning='only': must be one of \['include', 'exclude'\]"):
        Recipe(tuning="only")


# ---------------------------------------------------------------- the command line: one line, exit 2, at once
@pytest.fixture
def same_data(monkeypatch, tmp_path):
    """`imagenette_same_data` pointed at ``tmp_path/same_data.pt`` (absent until a test writes it)."""
    monkeypatch.delenv("GV3LITE_DEBUG", raising=False)
    file = tmp_path / "same_data.pt"
    monkeypatch.setitem(soft_labels.SOFT_LABEL_TEACHERS, "imagenette_same_data", file)
    return file


def _error(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


def test_a_missing_teacher_file_stops_train_and_the_study_at_once(root, same_data, tmp_path, capsys, monkeypatch):
    message = (f"the soft labels of teacher 'imagenette_same_data' ({same_data}) do not exist; rebuild them with "
               "`python -m gv3lite.same_data_teacher`")
    # train: before --out is created and before the data root is looked at
    err = _error(["train", "--preset", "ghostnetv3", "--out", str(tmp_path / "run"), "--data", str(tmp_path / "no")],
                 capsys)
    assert err.startswith(f"gv3lite train: error: {message}") and not (tmp_path / "run").exists()
    # the study: before any teacher pass or training, and no call is logged
    monkeypatch.setattr(workers, "train_runs", lambda *a, **k: pytest.fail("trained without the teacher's file"))
    err = _error(["reproduce", "--budget", "smoke", "--grids", "kd", "--out", str(tmp_path / "study"), "--data",
                  str(root)], capsys)
    assert err.startswith(f"gv3lite reproduce: error: {message}")
    assert not (tmp_path / "study" / "smoke" / "calls.csv").exists()


def test_other_classes_stale_labels_and_seen_report_images_are_one_line_exit_2(root, same_data, tmp_path, capsys):
    train = ImageFolderDataset(root, "train", 8, cache=False, tuning="exclude")
    run = ["train", "--preset", "ghostnetv3", "--data", str(root), "--img-size", "40", "--epochs", "1",
           "--batch-size", "2", "--set", "warmup_epochs=0", "--set", "cache=false", "--quiet"]
    _publish(same_data, train, classes=("b", "a"))  # a teacher of other classes (here: in another order)
    err = _error([*run, "--out", str(tmp_path / "r1")], capsys)
    assert "are for classes ['b', 'a']..., the data has ['a', 'b']...; use a teacher trained on these" in err
    _publish(same_data, train)
    first = Path(train.samples[0][0])
    kept = first.read_bytes()
    first.write_bytes(kept + b"\0")  # an image changed after the teacher was trained: stale soft labels
    err = _error([*run, "--out", str(tmp_path / "r2")], capsys)
    assert "are stale: 1 training images changed" in err and "python -m gv3lite.same_data_teacher" in err
    first.write_bytes(kept)
    (root / "val" / "a" / first.name).write_bytes(kept)  # val/ holds a copy of an image the teacher trained on
    err = _error([*run, "--out", str(tmp_path / "r3")], capsys)
    assert f"trained on 1 report (val/) images (e.g. a/{first.name})" in err


def test_a_tuning_split_overlapping_the_report_split_is_one_line_exit_2(root, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GV3LITE_DEBUG", raising=False)
    tuned = Path(ImageFolderDataset(root, "train", 8, cache=False, tuning="only").samples[0][0])
    (root / "val" / tuned.parent.name / tuned.name).write_bytes(tuned.read_bytes())  # a tuning image in val/
    err = _error(["train", "--data", str(root), "--set", "tuning=exclude", "--out", str(tmp_path / "run"),
                  "--quiet"], capsys)
    assert f"the tuning split overlaps the report split in 1 images (e.g. '{tuned.name}')" in err
