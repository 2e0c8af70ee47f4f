"""Odd images and odd folders (issue 13): every image is read correctly or refused with its path and the fix.

All fixtures are tiny images these tests write themselves (PIL) under ``tmp_path``; nothing is committed.
Running as root, the tests make folders/files "unreadable" by patching the OS call, not with chmod.
"""
import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import gv3lite.data.cache as cache
from gv3lite.data import ImageFolderDataset, build_datasets, check_data_root, read_image


def save(path, img, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


def rgb(seed=0, size=(12, 10)):
    g = np.random.default_rng(seed)
    return Image.fromarray(g.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


# ------------------------------------------------------------------------------------------ high bit depth
def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    values = (np.arange(16 * 16).reshape(16, 16) * 256).astype(np.uint16)  # 0 .. 65280
    path = save(tmp_path / "deep.png", Image.fromarray(values))
    assert Image.open(path).mode.startswith("I")  # really a 16-bit file
    x = read_image(path)
    assert x.shape == (3, 16, 16) and x.dtype == torch.uint8
    expected = torch.from_numpy(np.rint(values / 65535 * 255).astype(np.uint8))
    assert torch.equal(x[0], expected) and torch.equal(x[1], x[2])
    assert x.min() == 0 and x.max() == 254 and x.float().mean().round() == 127  # PIL's convert gave all 255 here


def test_32_bit_integer_and_float_images(tmp_path):
    ints = (np.arange(64).reshape(8, 8) * 1000).astype(np.int32)  # 0 .. 63000: taken as 16-bit
    path = save(tmp_path / "int32.tif", Image.fromarray(ints, "I"))
    assert Image.open(path).mode == "I"
    assert torch.equal(read_image(path)[0], torch.from_numpy(np.rint(ints / 65535 * 255).astype(np.uint8)))
    floats = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    path = save(tmp_path / "float.tif", Image.fromarray(floats, "F"))
    assert Image.open(path).mode == "F"
    assert torch.equal(read_image(path)[2], torch.from_numpy(np.rint(floats * 255.0).astype(np.uint8)))
    for name, arr, mode in (("neg.tif", ints - 5, "I"), ("big.tif", floats * 300, "F"),
                            ("nan.tif", np.full((4, 4), np.nan, np.float32), "F")):
        path = save(tmp_path / name, Image.fromarray(arr, mode))
        with pytest.raises(ValueError, match=f"{name}' has mode '{mode}' with values in .*no safe 8-bit scaling.*"
                                             "save it as an 8-bit"):
            read_image(path)


# ------------------------------------------------------------- the good behaviour that must keep holding
def test_cmyk_gray_rgba_palette_become_rgb(tmp_path):
    base = rgb(1)
    gray = read_image(save(tmp_path / "g.png", base.convert("L")))
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    rgba = base.copy()
    rgba.putalpha(7)
    assert torch.equal(read_image(save(tmp_path / "a.png", rgba)), torch.from_numpy(np.array(base)).permute(2, 0, 1))
    cmyk = read_image(save(tmp_path / "c.jpg", base.convert("CMYK"), quality=100))
    assert cmyk.shape == (3, 10, 12) and (cmyk.float() - torch.from_numpy(np.array(base)).permute(2, 0, 1)).abs().mean() < 12
    pal = read_image(save(tmp_path / "p.png", base.convert("P")))
    assert pal.shape == (3, 10, 12)


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n garbage", "truncated"])
def test_zero_byte_corrupt_and_truncated_are_called_corrupt(tmp_path, content):
    path = tmp_path / "bad.png"
    if content == "truncated":
        full = save(tmp_path / "full.png", rgb(2, (64, 64))).read_bytes()
        content = full[: len(full) // 2]
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"cannot decode image '{path}'.*corrupt, truncated or not an image"):
        read_image(path)


def test_unreadable_image_is_not_called_corrupt(tmp_path, monkeypatch):
    path = save(tmp_path / "locked.png", rgb())

    def refuse(p, *a, **k):
        raise PermissionError(13, "Permission denied", str(p))
    monkeypatch.setattr(cache.Image, "open", refuse)
    with pytest.raises(PermissionError, match=f"cannot read image file '{path}' \\(Permission denied\\); "
                                              "make it readable \\(chmod") as err:
        read_image(path)
    assert "corrupt" not in str(err.value)


def test_decompression_bomb_is_refused_with_the_path(tmp_path, monkeypatch):
    path = save(tmp_path / "bomb.png", Image.new("RGB", (40, 40)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1,600 pixels > 2 x the limit: PIL refuses to decode
    with pytest.raises(ValueError, match=f"image '{path}' is too large.*decompression bomb: downscale it"):
        read_image(path)


# ------------------------------------------------------------------------------------------------ folders
def test_skipped_non_images_are_counted_and_announced_once(tmp_path, make_image_root):
    root = make_image_root()
    (root / "train" / "a" / "notes.txt").write_text("x")
    save(root / "train" / "b" / "anim.gif", rgb())
    (root / "train" / "README").write_text("loose file")
    with pytest.warns(UserWarning, match=r"data/train': skipping 3 files that are not images \(1 \(no extension\), "
                                         r"1 \.gif, 1 \.txt; e\.g\. .*convert the files") as rec:
        train = ImageFolderDataset(root, "train", 8, cache=False)
    assert len([w for w in rec if "skipping" in str(w.message)]) == 1
    assert len(train) == 4 and sorted(os.path.basename(p) for p in train.skipped_files) == ["README", "anim.gif",
                                                                                             "notes.txt"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second dataset of the same split: no second announcement
        ImageFolderDataset(root, "train", 8, cache=False)
        ImageFolderDataset(root, "val", 8, cache=False)  # nothing skipped there


def test_empty_class_folder_names_the_folder(tmp_path, make_image_root):
    root = make_image_root()
    (root / "train" / "c").mkdir()
    (root / "train" / "c" / "thumbs.db").write_text("")
    with pytest.raises(FileNotFoundError, match=f"class folder '{root / 'train' / 'c'}' holds no images.*remove the "
                                                "empty folder"):
        ImageFolderDataset(root, "train", 8, cache=False)
    (root / "train" / "c" / "thumbs.db").unlink()
    (root / "train" / "c").rmdir()  # else train/c, a class val/ lacks, is the first error (issue 26)
    for p in (root / "val" / "b").iterdir():
        p.unlink()
    with pytest.raises(FileNotFoundError, match=f"class folder '{root / 'val' / 'b'}' holds no images"):
        build_datasets(root, 8, classes=["a", "b"], cache=False)


def _refuse_listing(monkeypatch, target):
    real_scandir, real_listdir = os.scandir, os.listdir

    def scandir(p="."):
        if os.fspath(p) == str(target):
            raise PermissionError(13, "Permission denied", str(p))
        return real_scandir(p)

    def listdir(p="."):
        if os.fspath(p) == str(target):
            raise PermissionError(13, "Permission denied", str(p))
        return real_listdir(p)
    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "listdir", listdir)


@pytest.mark.parametrize("where", ["", "val", "train/b"])
def test_unreadable_root_split_or_class_folder(tmp_path, monkeypatch, where, make_image_root):
    root = make_image_root()
    target = root / where if where else root
    _refuse_listing(monkeypatch, target)
    match = f"cannot read folder '{target}' \\(Permission denied\\); make it readable \\(chmod -R a\\+rX"
    with pytest.raises(PermissionError, match=match):
        build_datasets(root, 8, cache=False)


def test_missing_val_folder_still_a_clear_error(tmp_path, make_image_root):
    root = make_image_root()
    for p in (root / "val" / "a").iterdir():
        p.unlink()
    for p in (root / "val" / "b").iterdir():
        p.unlink()
    with pytest.raises(FileNotFoundError, match="holds no images in class sub-folders"):
        check_data_root(root)
    (root / "val" / "a").rmdir()
    (root / "val" / "b").rmdir()
    (root / "val").rmdir()
    with pytest.raises(FileNotFoundError, match="has no val/ folder"):
        check_data_root(root)


def test_a_clean_root_reads_every_image(tmp_path, make_image_root):
    root = make_image_root(per_class=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train, val = build_datasets(root, 8)
    assert (len(train), len(val)) == (6, 6) and train.skipped_files == [] and train.classes == ["a", "b"]
    assert train[0][0].shape == (3, 8, 8)
