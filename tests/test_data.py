"""gv3lite.data on the real Imagenette: counts, shapes, normalization, grayscale, subsets, crop info, bad roots."""
import re

import pytest
import torch
from torchvision.transforms.v2 import functional as F

from gv3lite.utils import default_data_root
from gv3lite.data import (IMAGENET_MEAN, IMAGENET_STD, ImageFolderDataset, apply_crop_info, balanced_subset,
                          check_data_root, read_image, resolve_data_root)


def test_full_split_counts_and_classes(data_root):
    train = ImageFolderDataset(data_root, "train", 64, cache=False)
    val = ImageFolderDataset(data_root, "val", 64, cache=False)
    assert (len(train), len(val)) == (9469, 3925)
    assert train.classes == val.classes and len(train.classes) == 10
    assert torch.bincount(torch.tensor(val.targets)).tolist() == [387, 395, 357, 386, 409, 394, 389, 419, 399, 390]


def test_grayscale_becomes_rgb_and_eval_sample_is_normalized(data_root):
    val = ImageFolderDataset(data_root, "val", 64, cache=False)
    from PIL import Image
    gray = next(i for i, (p, _) in enumerate(val.samples) if Image.open(p).mode == "L")
    raw = read_image(val.samples[gray][0])
    assert raw.shape == (3, 224, 224) and raw.dtype == torch.uint8
    assert torch.equal(raw[0], raw[1]) and torch.equal(raw[1], raw[2])
    x, y = val[gray]
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and y == val.targets[gray]
    # eval transform = resize short side to floor(64 / 0.875) = 73, center crop 64, then (x/255 - mean) / std
    expected = F.center_crop(F.resize(raw, [73], antialias=True), [64, 64]).float() / 255
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    torch.testing.assert_close(x, (expected - mean) / std)


def test_cached_eval_equals_uncached(tiny_datasets, data_root):
    _, val = tiny_datasets
    plain = ImageFolderDataset(data_root, "val", 64, classes=val.classes, per_class=20, seed=0, cache=False)
    assert plain.samples == val.samples
    for i in (0, 41, 79):
        torch.testing.assert_close(plain[i][0], val[i][0])


def test_cache_decoded_by_threads_equals_one_thread(data_root):
    """The cache is filled by a thread pool (decode_workers): the same pixels, in the same order, as one thread."""
    one = ImageFolderDataset(data_root, "train", 64, per_class=6, seed=1, decode_workers=1)
    three = ImageFolderDataset(data_root, "train", 64, per_class=6, seed=1, decode_workers=3)
    assert len(one.cache) == len(three.cache) == 60
    assert all(torch.equal(a, b) for a, b in zip(one.cache, three.cache))
    assert len({tuple(t.shape) for t in one.cache}) > 1 or not torch.equal(one.cache[0], one.cache[1])
    with pytest.raises(ValueError, match="decode_workers must be >= 1, got 0"):
        ImageFolderDataset(data_root, "val", 64, per_class=1, decode_workers=0)
    with pytest.raises(ValueError, match="decode_workers must be >= 1, got -3"):
        ImageFolderDataset(data_root, "val", 64, per_class=1, cache=False, decode_workers=-3)


def test_corrupt_file_stops_the_threaded_cache_with_its_name(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / "train" / cls).mkdir(parents=True)
        for i in range(5):
            F.to_pil_image(torch.full((3, 16, 16), 40 * i, dtype=torch.uint8)).save(tmp_path / "train" / cls / f"{i}.png")
    bad = tmp_path / "train" / "b" / "3.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match=re.escape(f"cannot decode image '{bad}'")):
        ImageFolderDataset(tmp_path, "train", 8, decode_workers=2)


def test_balanced_subset_is_balanced_seeded_and_validated(tiny_datasets):
    train, val = tiny_datasets
    assert len(train) == 400 and len(val) == 80 and len(train.classes) == 4
    assert torch.bincount(torch.tensor(train.targets)).tolist() == [100] * 4
    targets = [0] * 10 + [1] * 7
    a, b = balanced_subset(targets, 5, seed=3), balanced_subset(targets, 5, seed=3)
    assert a == b and len(a) == 10 and a != balanced_subset(targets, 5, seed=4)
    with pytest.raises(ValueError, match="only 7 images"):
        balanced_subset(targets, 8)


def test_too_few_images_names_the_class_folder_and_the_fix():
    with pytest.raises(ValueError, match="class 'train/n02' \\(index 1\\) has only 7 images.*lower images_per_class"):
        balanced_subset([0] * 10 + [1] * 7, 8, class_names=["train/n01", "train/n02"])


def test_corrupt_image_error_names_the_file(tmp_path):
    good = tmp_path / "good.JPEG"
    F.to_pil_image(torch.zeros(3, 8, 8, dtype=torch.uint8)).save(good, format="JPEG")
    truncated = tmp_path / "truncated.JPEG"
    truncated.write_bytes(good.read_bytes()[:60])
    text = tmp_path / "text.JPEG"
    text.write_text("not an image")
    assert read_image(good).shape == (3, 8, 8)
    for path in (truncated, text):
        with pytest.raises(ValueError, match=f"cannot decode image '{path}'.*corrupt"):
            read_image(path)


def test_crop_info_reproduces_the_sample(data_root):
    train = ImageFolderDataset(data_root, "train", 64, per_class=2, cache=False, return_crop_info=True)
    torch.manual_seed(0)
    flips = set()
    for i in range(len(train)):
        x, y, info = train[i]
        assert info["index"] == i and x.shape == (3, 64, 64) and y == train.targets[i]
        x0, y0, x1, y1 = info["box"].tolist()
        assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
        area = (x1 - x0) * (y1 - y0)
        assert 0.08 - 1e-3 <= area <= 1 + 1e-6
        flips.add(info["flip"])
        crop = apply_crop_info(read_image(train.samples[i][0]), info["box"], info["flip"], 64)
        torch.testing.assert_close(x, train.after_crop(crop))  # same pixels: the box is exact
    assert flips == {True, False}


def test_crop_info_with_cache_matches_original_image_closely(tiny_datasets):
    from gv3lite.data import build_datasets
    train, _ = build_datasets(tiny_datasets[0].root, 64, classes=tiny_datasets[0].classes, images_per_class_train=2,
                              images_per_class_val=1, return_crop_info=True)
    for i in range(len(train)):
        x, _, info = train[i]
        crop = apply_crop_info(read_image(train.samples[i][0]), info["box"], info["flip"], 64)
        # the cache stores a 128 px copy, so pixels differ slightly (resampling), not geometrically
        assert (x - train.after_crop(crop)).abs().mean() < 0.1


def test_missing_and_empty_roots_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*GV3LITE_DATA"):
        resolve_data_root(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no train/ folder"):
        check_data_root(tmp_path)
    (tmp_path / "data.tgz").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="data.tgz' is a file, not a folder"):
        check_data_root(tmp_path / "data.tgz")
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "val").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no images"):
        check_data_root(tmp_path)


def test_data_root_resolution_order(data_root, monkeypatch, tmp_path):
    monkeypatch.setenv("GV3LITE_DATA", str(data_root))
    assert resolve_data_root() == data_root
    with pytest.raises(FileNotFoundError):
        resolve_data_root(tmp_path)  # --data wins over the environment
    monkeypatch.delenv("GV3LITE_DATA")
    fallback = default_data_root()  # <repo>/../shared/data/imagenette2-224
    if (fallback / "train").is_dir():
        assert resolve_data_root() == fallback
    else:
        with pytest.raises(FileNotFoundError, match="imagenette2-224"):
            resolve_data_root()


@pytest.mark.parametrize("auto_augment", ["randaugment", "autoaugment"])
def test_train_augmentations_keep_shape_and_dtype(data_root, auto_augment):
    train = ImageFolderDataset(data_root, "train", 64, per_class=1, auto_augment=auto_augment, random_erasing=0.5)
    x, y = train[3]
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and torch.isfinite(x).all()
    with pytest.raises(ValueError, match="auto_augment"):
        ImageFolderDataset(data_root, "train", 64, per_class=1, auto_augment="trivial")
