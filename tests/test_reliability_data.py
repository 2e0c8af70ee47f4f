"""Issue 26, data roots: links followed once (loops and images reached twice refused, naming the link), EXIF
orientation applied in every decoding path, the same classes in train/ and val/, and a bad image read in a loader
worker reported like one read for the cache. Tiny ImageFolder trees made by the tests."""
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from gv3lite.cli import main
from gv3lite.data import ImageFolderDataset, build_loader, check_data_root, read_image
from gv3lite.data.loader import BatchedTrainLoader

from cli_helpers import error_of, no_debug  # noqa: F401 (no_debug: an autouse fixture)

TINY = ["--set", "img_size=40", "--set", "batch_size=2", "--epochs", "1", "--set", "teacher=null",
        "--set", "sched=cosine", "--set", "warmup_epochs=0", "--quiet"]


# --------------------------------------------------------------------------------------------------- links
@pytest.mark.parametrize("link, target, first", [
    ("train/a/up", "..", "train"),      # ln -s .. train/a/up: every class again, labelled a
    ("train/a/loop", ".", "train/a"),   # ln -s . loop: a's images counted again and again
    ("train/b/a_again", "../a", "train/a"),
])
def test_a_link_to_a_folder_already_reached_is_refused_naming_it(tmp_path, capsys, make_image_root, link, target,
                                                                  first):
    root = make_image_root()
    os.symlink(target, root / link)
    with pytest.raises(ValueError, match=f"link '{root / link}' leads to '{os.path.realpath(root / link)}', which the "
                                         f"data root already reaches as '{root / first}' \\(a loop, or the same "
                                         "images twice\\); remove the link"):
        ImageFolderDataset(root, "train", 40, cache=False)
    err = error_of(["train", "--out", str(tmp_path / "run"), "--data", str(root), *TINY], capsys)
    assert err.startswith(f"gv3lite train: error: link '{root / link}' leads to")


def test_an_image_reached_twice_is_refused_and_a_link_out_of_the_root_is_followed_once(tmp_path, make_image_root):
    root = make_image_root()
    elsewhere = make_image_root(classes=("c",), name="elsewhere")
    os.symlink(elsewhere / "train" / "c", root / "train" / "c")  # a class folder that lives elsewhere: fine
    os.symlink(elsewhere / "val" / "c", root / "val" / "c")
    ds = ImageFolderDataset(root, "train", 40, cache=False)
    assert ds.classes == ["a", "b", "c"] and len(ds) == 6
    os.symlink(root / "train" / "b" / "0.png", root / "train" / "a" / "copy.png")
    with pytest.raises(ValueError, match=f"image '{root / 'train' / 'b' / '0.png'}' is the same file as "
                                         f"'{root / 'train' / 'a' / 'copy.png'}' \\(reached through a link\\)"):
        ImageFolderDataset(root, "train", 40, cache=False)


# ---------------------------------------------------------------------------------------------------- EXIF
def _rotated_jpeg(path, width=16, height=8):
    """A JPEG stored ``width`` x ``height`` with EXIF orientation 6 (shown rotated 90°: ``height`` x ``width``)."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2] = 255  # left half white as stored: the top half once shown upright
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels, "RGB").save(path, exif=exif, quality=95)


def test_exif_orientation_is_applied_in_the_cache_worker_and_batch_decoding_paths(make_image_root):
    root = make_image_root(per_class=1, size=(16, 8))
    for split in ("train", "val"):
        _rotated_jpeg(root / split / "a" / "rotated.jpg")
    img = read_image(root / "train" / "a" / "rotated.jpg")
    assert img.shape == (3, 16, 8)  # shown upright: 8 wide, 16 tall
    assert img[:, :8].float().mean() > 200 and img[:, 8:].float().mean() < 50  # stored left half is now the top
    cached = ImageFolderDataset(root, "train", 40, cache=True)
    uncached = ImageFolderDataset(root, "train", 40, cache=False)
    i = [p for p, _ in cached.samples].index(str(root / "train" / "a" / "rotated.jpg"))
    assert cached.load(i).shape[-2] > cached.load(i).shape[-1]  # taller than wide in the cache
    assert uncached.load(i).shape[-2:] == (16, 8)  # the worker path reads the file itself
    decoded = BatchedTrainLoader(uncached, 1, torch.Generator().manual_seed(0), "cpu").decode(torch.tensor([i]))
    assert decoded[0].shape == (3, 16, 8) and decoded[0][:, :8].float().mean() > 200  # upright on the GPU path too


# ------------------------------------------------------------------------------------------------- classes
def test_train_and_val_must_hold_the_same_classes(tmp_path, capsys, make_image_root):
    root = make_image_root()
    (root / "val" / "z").mkdir()
    Image.new("RGB", (12, 10)).save(root / "val" / "z" / "0.png")
    with pytest.raises(ValueError, match=r"train/ and val/ hold different class folders \(only in val/: \['z'\]\)"):
        check_data_root(root)
    err = error_of(["train", "--out", str(tmp_path / "run"), "--data", str(root), *TINY], capsys)
    assert err == (f"gv3lite train: error: data root '{root}': train/ and val/ hold different class folders (only in "
                   "val/: ['z']); give both splits the same classes (add or remove those folders), or the model "
                   "would be scored on classes it never saw or never be scored on some\n")


def test_a_refused_data_root_leaves_no_empty_out_folder_behind(tmp_path, capsys, make_image_root):
    """``gv3lite train`` checks --out before reading data (creating it); a data root refused after that -- missing, or
    refused while its datasets are built (a link loop) -- removes the folders the call created while they are still
    empty; a folder that existed before is kept. ``gv3lite reproduce`` (both designs) likewise for a missing data
    root or ``--jobs 0``."""
    root = make_image_root()
    os.symlink(".", root / "train" / "a" / "loop")
    for data in (tmp_path / "no_such_root", root):
        err = error_of(["train", "--out", str(tmp_path / "new" / "run"), "--data", str(data), *TINY], capsys)
        assert "data root" in err or "link" in err, err
        assert not (tmp_path / "new").exists()  # neither run/ nor the parent it created
    (tmp_path / "mine").mkdir()
    error_of(["train", "--out", str(tmp_path / "mine"), "--data", str(root), *TINY], capsys)
    assert (tmp_path / "mine").is_dir()  # the user's own folder stays
    for design, extra in [("ofat", ["--jobs", "0"]), ("ofat", []), ("factorial", [])]:  # reproduce likewise
        error_of(["reproduce", "--design", design, "--budget", "smoke", "--out", str(tmp_path / "new" / "study"),
                  "--data", str(tmp_path / "no_such_root" if not extra else root), *extra], capsys)
        assert not (tmp_path / "new").exists(), (design, extra)


# ------------------------------------------------------------------------------------- bad image in a worker
def test_a_bad_image_read_in_a_loader_worker_is_one_line_like_the_cache_path(tmp_path, capsys, make_image_root):
    root = make_image_root(per_class=2, size=(48, 48))
    bad = root / "train" / "a" / "1.png"
    bad.write_bytes(bad.read_bytes()[:60])  # truncated
    with pytest.raises(ValueError) as cached:
        ImageFolderDataset(root, "train", 40, cache=True)
    loader = build_loader(ImageFolderDataset(root, "train", 40, cache=False), 2, train=False, num_workers=1)
    with pytest.raises(ValueError) as worker:
        list(loader)
    assert str(worker.value) == str(cached.value) and str(worker.value).startswith(f"cannot decode image '{bad}'")
    err = error_of(["train", "--out", str(tmp_path / "run"), "--data", str(root), *TINY, "--set", "cache=false",
                    "--set", "num_workers=1"], capsys)
    assert err.startswith(f"gv3lite train: error: cannot decode image '{bad}'") and "worker" not in err


@pytest.mark.parametrize("link", ["split", "class", "hard"])
def test_val_reaching_train_images_is_refused(tmp_path, capsys, make_image_root, link):
    """val/ linked to train/, a val class folder linked to train's, or one image hard-linked into both splits: the
    model would be scored on images it trained on (it used to train and report that top-1, exit 0)."""
    root = make_image_root()
    if link == "split":
        shutil.rmtree(root / "val")
        os.symlink("train", root / "val")
    elif link == "class":
        shutil.rmtree(root / "val" / "a")
        os.symlink(root / "train" / "a", root / "val" / "a")
    else:
        os.link(root / "train" / "b" / "0.png", root / "val" / "b" / "9.png")
    for command in (["train", *TINY], ["reproduce", "--budget", "smoke"], ["reproduce", "--design", "factorial"]):
        err = error_of([*command, "--out", str(tmp_path / "run"), "--data", str(root)], capsys)
        assert "are train images too, e.g. '" in err and "give val/ its own images (remove the link)" in err, err
        assert not (tmp_path / "run").exists()  # refused before anything was written
