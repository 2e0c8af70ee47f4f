"""The batched data path (``gv3lite.data.BatchedTrainLoader`` / ``BatchedEvalLoader``): crops follow
RandomResizedCrop's distribution, flips are fair, crop boxes reproduce the pixels for the cached teacher, and eval
batches equal the per-image DataLoader's."""
import math

import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from gv3lite.data import (BatchedEvalLoader, BatchedTrainLoader, ImageFolderDataset, apply_crop_info,
                          build_loader, random_resized_crop_params, resize_weights)

SCALE, RATIO = (0.08, 1.0), (3 / 4, 4 / 3)


def _ks_statistic(a, b):
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the two empirical CDFs."""
    grid = torch.cat([a, b]).sort().values
    cdf = lambda x: torch.searchsorted(x.sort().values, grid, right=True).double() / len(x)  # noqa: E731
    return (cdf(a) - cdf(b)).abs().max().item()


def _torchvision_crops(height, width, n, seed):
    torch.manual_seed(seed)
    img = torch.zeros(3, height, width, dtype=torch.uint8)
    return torch.tensor([v2.RandomResizedCrop.get_params(img, list(SCALE), list(RATIO)) for _ in range(n)])


@pytest.mark.parametrize("height,width", [(128, 128), (96, 200), (300, 40)])
def test_batched_crop_params_follow_random_resized_crop(height, width):
    n = 4000
    top, left, h, w = random_resized_crop_params(torch.full((n,), height), torch.full((n,), width), SCALE, RATIO,
                                                 torch.Generator().manual_seed(0))
    assert ((h >= 1) & (w >= 1) & (top >= 0) & (left >= 0)).all()
    assert ((top + h <= height) & (left + w <= width)).all()
    area = (h * w).double() / (height * width)
    assert area.max() <= 1 and area.min() >= SCALE[0] * 0.9  # rounding of w and h only
    aspect = (w / h).double()
    slack = 1 / h.double() + 1 / w.double()  # one pixel of rounding on each side
    assert (aspect >= RATIO[0] * (1 - slack) - 1e-9).all() or width / height > RATIO[1] or width / height < RATIO[0]
    ref = _torchvision_crops(height, width, n, seed=1)  # (top, left, h, w)
    for ours, theirs, name in ((area, (ref[:, 2] * ref[:, 3]).double() / (height * width), "area"),
                               (aspect.log(), (ref[:, 3] / ref[:, 2]).double().log(), "log aspect"),
                               ((top.double() + h / 2) / height, (ref[:, 0] + ref[:, 2] / 2).double() / height,
                                "vertical centre")):
        d = _ks_statistic(ours.contiguous(), theirs.contiguous())
        critical = 1.95 * math.sqrt(2 / n)  # KS test at alpha = 0.001 for two samples of n
        assert d < critical, f"{name}: batched and torchvision crops differ in distribution (KS D = {d:.3f})"


def test_fallback_is_the_centred_clamped_crop():
    # a 1 x 40 image: no draw fits (a crop of >= 8% of 40 pixels at aspect <= 4/3 is >= 2 pixels high), so both rules
    # take the centred crop with aspect clamped to 4/3, whatever the random draws (torchvision's use the global RNG)
    top, left, h, w = random_resized_crop_params(torch.tensor([1]), torch.tensor([40]), SCALE, RATIO,
                                                 torch.Generator().manual_seed(0))
    ref = v2.RandomResizedCrop.get_params(torch.zeros(3, 1, 40), list(SCALE), list(RATIO))
    assert [top.item(), left.item(), h.item(), w.item()] == list(ref)


def test_resize_weights_match_torchvision_antialiased_resize():
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 9, 12) * 255, size=(90, 120), mode="bilinear")
    img = smooth.round().to(torch.uint8)  # a smooth image (natural-image-like), so kernel details matter little
    top, left, h, w = torch.tensor([7]), torch.tensor([11]), torch.tensor([70]), torch.tensor([95])
    wy, wx = resize_weights(top, h, 32, 90), resize_weights(left, w, 32, 120)
    ours = wy[:, None] @ img.float() @ wx[:, None].transpose(-1, -2)
    ref = F.resized_crop(img[0], 7, 11, 70, 95, [32, 32], antialias=True).float()
    assert (ours[0] - ref).abs().mean() < 1.0 and (ours[0] - ref).abs().max() < 10  # uint8 rounding + kernel detail


@pytest.fixture(scope="module")
def small_train(data_root):
    return ImageFolderDataset(data_root, "train", 48, classes=["n01440764", "n03394916"], per_class=40,
                              return_crop_info=True, scale=(0.25, 1.0))


@pytest.mark.parametrize("resize", ["per_image", "matmul"])
def test_batched_loader_batches_flips_and_crop_info(small_train, resize):
    loader = BatchedTrainLoader(small_train, 16, torch.Generator().manual_seed(0), resize=resize)
    assert len(loader) == 80 // 16
    flips, seen = [], []
    for epoch in range(6):
        for images, targets, info in loader:
            assert images.shape == (16, 3, 48, 48) and images.dtype == torch.float32
            assert torch.equal(targets, torch.as_tensor(small_train.targets)[info["index"]])
            flips.append(info["flip"])
            seen.append(info["index"])
            areas = (info["box"][:, 2] - info["box"][:, 0]) * (info["box"][:, 3] - info["box"][:, 1])
            assert (areas >= 0.25 * 0.9).all() and (areas <= 1 + 1e-6).all()
    assert sorted(torch.cat(seen[:5]).tolist()) == list(range(80))  # one epoch = a permutation
    rate = torch.cat(flips).float().mean().item()
    assert abs(rate - 0.5) < 4 * math.sqrt(0.25 / (6 * 80)), rate  # 480 draws: within 4 sigma of a fair coin
    # the recorded box + flip re-cut the same pixels from the cached image (what the cached teacher relies on)
    images, _, info = loader.batch(torch.arange(8))
    for i in range(8):
        crop = apply_crop_info(small_train.cache[i], info["box"][i], bool(info["flip"][i]), 48)
        redone = small_train.after_crop(crop)
        assert (images[i] - redone).abs().mean() < (0.02 if resize == "per_image" else 0.1)


def test_batched_eval_loader_equals_dataloader(data_root):
    val = ImageFolderDataset(data_root, "val", 40, classes=["n01440764", "n03394916"], per_class=6)
    batched = build_loader(val, 5, train=False)
    assert isinstance(batched, BatchedEvalLoader) and len(batched) == 3
    plain = build_loader(val, 5, train=False, batched=False)
    for (x, y), (x_ref, y_ref) in zip(batched, plain):
        torch.testing.assert_close(x, x_ref)
        assert torch.equal(y, y_ref)
    with pytest.raises(ValueError, match="train ImageFolderDataset"):
        BatchedTrainLoader(val, 4)


def test_uncached_batches_are_decoded_per_batch(data_root):
    """Without a cache the loader decodes each batch's JPEGs itself (decode_jpeg, on the GPU when there is one) and
    crops the full-size images; boxes still re-cut the same pixels from the decoded original."""
    train = ImageFolderDataset(data_root, "train", 40, classes=["n01440764"], per_class=6, cache=False,
                               return_crop_info=True)
    loader = build_loader(train, 3, train=True, generator=torch.Generator().manual_seed(0), batched=True)
    assert isinstance(loader, BatchedTrainLoader) and len(loader) == 2
    images, targets, info = next(iter(loader))
    assert images.shape == (3, 3, 40, 40)
    for i in range(3):
        original = loader.decode(info["index"][i:i + 1])[0]
        crop = apply_crop_info(original, info["box"][i], bool(info["flip"][i]), 40)
        assert (images[i] - train.after_crop(crop)).abs().mean() < 0.02


def test_plan_data_path_names_its_choice():
    from gv3lite.data import plan_data_path
    path, reason = plan_data_path(9469, 64, "cpu", available_bytes=24 * 2**30)
    assert path == "cache" and "GiB" in reason
    assert plan_data_path(1_281_167, 224, "cpu", available_bytes=24 * 2**30)[0] == "workers"
    assert plan_data_path(1_281_167, 224, "cuda", available_bytes=80 * 2**30)[0] == "decode_on_device"


def test_run_chooses_and_logs_its_data_path(data_root):
    """``experiment.choose_data_path`` logs the choice with its reason; the small recipe's cache fits in memory."""
    from gv3lite.experiment import choose_data_path
    from gv3lite.recipe import Recipe
    lines = []
    recipe = Recipe(img_size=48, classes=["n01440764", "n03394916"], images_per_class_train=10)
    path, settings = choose_data_path(recipe, data_root, torch.device("cpu"), log=lines.append)
    assert path == "cache" and settings.num_workers == 0
    assert lines and lines[0].startswith("data path: cache (20 images need")
    from gv3lite.data import count_images
    assert count_images(data_root, "val", ["n01440764"]) > 0
