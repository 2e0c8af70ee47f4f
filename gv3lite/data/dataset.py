"""One split of an ImageFolder root as a torch ``Dataset`` with its per-image transforms (`ImageFolderDataset`),
the (train, val) pair of a root (`build_datasets`), and re-applying a recorded crop (`apply_crop_info`).

Train transform (per sample): torchvision ``RandomResizedCrop.get_params`` + ``functional.resized_crop``,
horizontal flip with p=0.5, optional RandAugment/AutoAugment (torchvision v2, uint8), float + ImageNet
normalization (`IMAGENET_MEAN`, `IMAGENET_STD`: timm's), optional random erasing. Eval transform: resize the short
side to ``img_size / crop_pct`` (crop_pct = 0.875, the usual ImageNet convention) and center-crop ``img_size``.
The images come from the uint8 cache of `gv3lite.data.cache` (or are decoded per sample with ``cache=False``).

With ``return_crop_info=True`` a train sample is ``(image, target, info)`` where ``info`` holds
``index`` (dataset index), ``box`` (float32 [x0, y0, x1, y1], the crop in normalized original-image
coordinates) and ``flip`` (bool): what a cached teacher (ReLabel-style) needs to look up its outputs.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F
from tqdm.auto import tqdm

from gv3lite.data.cache import DEFAULT_CROP_PCT, read_image, stored_size
from gv3lite.data.folder import _announce_skipped, _listdir, check_data_root, scan_split
from gv3lite.data.subsets import TUNING_PER_CLASS, TUNING_SPLITS, balanced_subset, check_disjoint, tuning_split

IMAGENET_MEAN, IMAGENET_STD = IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD  # the student input normalization (timm)


class ImageFolderDataset(Dataset):
    """One split (``train`` or ``val``) of an ImageFolder root, optionally a class-balanced subset.

    Args:
        root: data root holding ``<split>/<class>/<image>``.
        split: ``"train"`` or ``"val"``.
        img_size: output side in px; samples are float32 tensors of shape (3, img_size, img_size),
            normalized with the ImageNet mean/std.
        train: random train transforms (True) or the deterministic eval transform (False).
        classes: optional list of class folder names (e.g. wnids) to keep; targets are renumbered 0..k-1
            in the given order. Unknown names raise ``KeyError``.
        per_class: keep this many images per class (seeded by ``seed``), or all with ``None``.
        cache: decode once into memory as uint8 at a reduced size (see the module docstring).
        auto_augment: ``"none"``, ``"randaugment"`` (torchvision RandAugment, 2 ops, magnitude 9) or
            ``"autoaugment"`` (torchvision AutoAugment, ImageNet policy). Train only.
        random_erasing: probability of torchvision ``RandomErasing`` on the normalized image. Train only.
        scale: the area range of ``RandomResizedCrop`` (fraction of the image).
        return_crop_info: return ``(image, target, info)`` with ``info = {"index", "box", "flip"}``.
        decode_workers: threads that fill the cache (default ``torch.get_num_threads()``); the cached pixels are
            the same for any number. ``ValueError`` below 1.
        tuning: ``"include"`` (every image), ``"exclude"`` (``train/`` minus the tuning split: what students and
            teachers train on) or ``"only"`` (the tuning split, `gv3lite.data.subsets.tuning_split`); applied before
            ``per_class``. ``ValueError`` for another value or a val split.
    """

    def __init__(self, root, split: str = "train", img_size: int = 224, train: bool | None = None,
                 classes: Sequence[str] | None = None, per_class: int | None = None, seed: int = 0,
                 cache: bool = True, auto_augment: str = "none", random_erasing: float = 0.0,
                 scale: tuple[float, float] = (0.08, 1.0), crop_pct: float = DEFAULT_CROP_PCT,
                 return_crop_info: bool = False, progress: bool = False, decode_workers: int | None = None,
                 tuning: str = "include"):
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        if tuning not in TUNING_SPLITS or (split == "val" and tuning != "include"):
            raise ValueError(f"tuning={tuning!r} for split {split!r}: the tuning split is a slice of train/; use "
                             f"one of {TUNING_SPLITS} with split='train', and 'include' (all images) with split='val'")
        if decode_workers is not None and decode_workers < 1:
            raise ValueError(f"decode_workers must be >= 1, got {decode_workers}")
        self.split, self.img_size, self.crop_pct = split, int(img_size), crop_pct
        self.train = (split == "train") if train is None else train
        self.return_crop_info = return_crop_info
        self.root = Path(root)
        split_dir = self.root / split
        _listdir(split_dir)  # an unreadable split folder: our message, not torchvision's traceback
        all_classes, _ = find_classes(str(split_dir))
        if classes is None:
            classes = all_classes
        missing = [c for c in classes if c not in all_classes]
        if missing:
            raise KeyError(f"classes {missing} are not folders of {str(split_dir)!r}; choose from {all_classes}")
        self.classes = list(classes)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.skipped_files = scan_split(split_dir, self.classes)
        _announce_skipped(split_dir, self.skipped_files)
        samples = make_dataset(str(split_dir), self.class_to_idx, extensions=IMG_EXTENSIONS)
        if tuning != "include":
            held = set(tuning_split([p for p, _ in samples], [t for _, t in samples]))
            samples = [s for i, s in enumerate(samples) if (i in held) == (tuning == "only")]
            empty = [c for i, c in enumerate(self.classes) if i not in {t for _, t in samples}]
            if empty:
                raise ValueError(f"class(es) {empty} of {str(split_dir)!r} have no images left with tuning={tuning!r} "
                                 f"(the tuning split holds up to {TUNING_PER_CLASS} per class); add images, or use "
                                 "tuning='include' (e.g. --set tuning=include)")
        keep = balanced_subset([t for _, t in samples], per_class, seed,
                               class_names=[f"{split}/{c}" for c in self.classes])
        self.samples = [samples[i] for i in keep]
        self.targets = [t for _, t in self.samples]

        self.rrc = v2.RandomResizedCrop(self.img_size, scale=scale, antialias=True)  # we use its get_params
        self.eval_resize = v2.Compose([v2.Resize(math.floor(self.img_size / crop_pct), antialias=True),
                                       v2.CenterCrop(self.img_size)])
        augment = {"none": [], "randaugment": [v2.RandAugment(num_ops=2, magnitude=9)],
                   "autoaugment": [v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET)]}
        if auto_augment not in augment:
            raise ValueError(f"auto_augment must be one of {list(augment)}, got {auto_augment!r}")
        to_float = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        erase = [v2.RandomErasing(p=random_erasing, value=0)] if random_erasing > 0 else []
        self.after_crop = v2.Compose(augment[auto_augment] + to_float + erase) if self.train else v2.Compose(to_float)

        self.cache = None
        if cache:
            workers = torch.get_num_threads() if decode_workers is None else decode_workers
            self.cache = self._decode_all(workers, progress)

    def _decode_all(self, workers: int, progress: bool) -> list[torch.Tensor]:
        """Every sample read and `_prepare`d, in order, by ``workers`` threads (PIL's decoder and torch's resize
        release the GIL: 2 threads decoded ~2x faster on 2 cores; each image's pixels do not depend on it)."""
        pool = ThreadPoolExecutor(max_workers=workers)
        try:
            decoded = pool.map(lambda path: self._prepare(read_image(path)), [path for path, _ in self.samples])
            return list(tqdm(decoded, total=len(self.samples), desc=f"decode {self.split}", disable=not progress,
                             leave=False))
        finally:
            pool.shutdown(cancel_futures=True)  # an unreadable file stops the decoding at once

    def _prepare(self, img: torch.Tensor) -> torch.Tensor:
        """What the cache stores: train → short side resized to `stored_size`; eval → resized + center-cropped."""
        if not self.train:
            return self.eval_resize(img)
        return F.resize(img, [stored_size(self.img_size, self.crop_pct)], antialias=True)

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> torch.Tensor:
        """The stored uint8 image (3, H, W) for ``index``: cached, or decoded from the file."""
        if self.cache is not None:
            return self.cache[index]
        img = read_image(self.samples[index][0])
        return img if self.train else self.eval_resize(img)

    def __getitem__(self, index: int):
        img, target = self.load(index), self.targets[index]
        if not self.train:
            return self.after_crop(img), target
        H, W = img.shape[-2:]
        top, left, height, width = self.rrc.get_params(img, self.rrc.scale, self.rrc.ratio)
        img = F.resized_crop(img, top, left, height, width, [self.img_size, self.img_size], antialias=True)
        flip = bool(torch.rand(1) < 0.5)
        if flip:
            img = F.horizontal_flip(img)
        img = self.after_crop(img)
        if not self.return_crop_info:
            return img, target
        box = torch.tensor([left / W, top / H, (left + width) / W, (top + height) / H], dtype=torch.float32)
        return img, target, {"index": index, "box": box, "flip": flip}


def apply_crop_info(original: torch.Tensor, box: torch.Tensor, flip: bool, img_size: int) -> torch.Tensor:
    """Re-apply a normalized crop ``box`` [x0, y0, x1, y1] (and ``flip``) to an original uint8 image (3, H, W);
    returns the uint8 (3, img_size, img_size) crop (before augmentation/normalization). Used by cached-teacher KD."""
    H, W = original.shape[-2:]
    x0, y0, x1, y1 = box.tolist()
    top, left = round(y0 * H), round(x0 * W)
    img = F.resized_crop(original, top, left, round(y1 * H) - top, round(x1 * W) - left, [img_size, img_size],
                         antialias=True)
    return F.horizontal_flip(img) if flip else img


def build_datasets(root, img_size: int, classes=None, images_per_class_train=None, images_per_class_val=None,
                   seed: int = 0, cache: bool = True, auto_augment: str = "none", random_erasing: float = 0.0,
                   scale: tuple[float, float] = (0.08, 1.0), return_crop_info: bool = False, progress: bool = False,
                   tuning: str = "include"):
    """The (train, val) ``ImageFolderDataset`` pair of a data root with the same classes in both. ``tuning``:
    ``"include"`` (train on all of ``train/``), ``"exclude"`` (train on ``train/`` minus the tuning split) or
    ``"only"`` (val is the tuning split, eval transform; train excludes it): see `tuning_split`. Raises
    ``ValueError`` when the tuning split overlaps the val images (`check_disjoint`)."""
    root = check_data_root(root)
    train = ImageFolderDataset(root, "train", img_size, classes=classes, per_class=images_per_class_train,
                               seed=seed, cache=cache, auto_augment=auto_augment, random_erasing=random_erasing,
                               scale=scale, return_crop_info=return_crop_info, progress=progress,
                               tuning="include" if tuning == "include" else "exclude")
    val = ImageFolderDataset(root, "val", img_size, classes=train.classes, per_class=images_per_class_val,
                             seed=seed, cache=cache, progress=progress)
    if tuning != "include":
        tune = ImageFolderDataset(root, "train", img_size, train=False, classes=train.classes, cache=False,
                                  tuning="only")
        check_disjoint([p for p, _ in tune.samples], [p for p, _ in val.samples])
        if tuning == "only":
            val = ImageFolderDataset(root, "train", img_size, train=False, classes=train.classes, seed=seed,
                                     per_class=images_per_class_val, cache=cache, progress=progress, tuning="only")
    return train, val
