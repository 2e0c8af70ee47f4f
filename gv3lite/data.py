"""Datasets and transforms: ImageFolder roots (Imagenette, ImageNet), class-balanced subsets, data-root resolution.

Owns: `resolve_data_root` (``--data`` → ``GV3LITE_DATA`` → ``<repo>/../shared/data/imagenette2-224``),
`download_imagenette` (opt-in, through torchvision's ``Imagenette``), `balanced_subset`, the dataset
`ImageFolderDataset` and `build_datasets` / `build_loader`.

Speed choice (measured on the shared 2-core CPU, 224×224 JPEGs, one thread): a train sample costs ~4.4 ms when
the JPEG is decoded (PIL) and transformed each time, ~1.2 ms from the uint8 cache below (3.8× less), while one
training step of ``ghostnetv3_050`` at 64 px costs ~40 ms per image under the same load (~8 ms idle, 2 threads):
the cache saves ~8% of an epoch for a one-time decode of a few seconds. So by default (``cache=True``) every
image is decoded **once** with PIL (grayscale → RGB), resized so its short side is
``stored_size = 2·img_size`` and kept in memory as uint8 (~465 MB for the 9,469 Imagenette train images at
64 px; a 1.25× copy would be smaller but makes small random crops visibly blurrier than the eval images);
the random train transforms then run on these small tensors in the main process (``num_workers=0``).
Val images are stored already resized and center-cropped. The cache lives in memory only (no disk copy).
``cache=False`` decodes the original file each time (use it with ``num_workers>0`` for ImageNet on a GPU).

Train transform (per sample): torchvision ``RandomResizedCrop.get_params`` + ``functional.resized_crop``,
horizontal flip with p=0.5, optional RandAugment/AutoAugment (torchvision v2, uint8), float + ImageNet
normalization, optional random erasing. Eval transform: resize the short side to ``img_size / crop_pct``
(crop_pct = 0.875, the usual ImageNet convention) and center-crop ``img_size``.

With ``return_crop_info=True`` a train sample is ``(image, target, info)`` where ``info`` holds
``index`` (dataset index), ``box`` (float32 [x0, y0, x1, y1], the crop in normalized original-image
coordinates) and ``flip`` (bool): what a cached teacher (ReLabel-style) needs to look up its outputs.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import Imagenette
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F
from tqdm.auto import tqdm

from gv3lite.utils import default_data_root

IMAGENET_MEAN, IMAGENET_STD = IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD  # the student input normalization (timm)
DEFAULT_CROP_PCT = 0.875
IMAGENETTE_CLASSES = {  # wnid -> name, in ImageFolder (sorted wnid) order
    "n01440764": "tench", "n02102040": "English springer", "n02979186": "cassette player",
    "n03000684": "chain saw", "n03028079": "church", "n03394916": "French horn",
    "n03417042": "garbage truck", "n03425413": "gas pump", "n03445777": "golf ball", "n03888257": "parachute",
}
HOW_TO_GET_DATA = (
    "Point --data (or the GV3LITE_DATA environment variable) at an ImageFolder root that holds train/<class>/*.JPEG "
    "and val/<class>/*.JPEG, e.g. Imagenette from https://github.com/fastai/imagenette "
    "(tar xzf imagenette2-320.tgz), or pass --download on a machine with internet access.")


# ----------------------------------------------------------------------------------------------- data root
def check_data_root(root: str | os.PathLike) -> Path:
    """Return ``root`` as a ``Path`` after checking it holds non-empty ``train/`` and ``val/`` class folders.

    Raises ``FileNotFoundError`` (missing root, a file instead of a folder, missing split, split without images)
    with how to get the data.
    """
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise FileNotFoundError(f"data root {str(root)!r} is a file, not a folder; pass the folder that holds "
                                f"train/ and val/ (an archive must be unpacked first). {HOW_TO_GET_DATA}")
    if not root.is_dir():
        raise FileNotFoundError(f"data root {str(root)!r} does not exist. {HOW_TO_GET_DATA}")
    for split in ("train", "val"):
        split_dir = root / split
        if not split_dir.is_dir():
            raise FileNotFoundError(f"data root {str(root)!r} has no {split}/ folder. {HOW_TO_GET_DATA}")
        has_image = any(p.suffix.lower() in IMG_EXTENSIONS for c in split_dir.iterdir() if c.is_dir()
                        for p in c.iterdir())
        if not has_image:
            raise FileNotFoundError(f"{str(split_dir)!r} holds no images in class sub-folders. {HOW_TO_GET_DATA}")
    return root


def download_imagenette(dest: str | os.PathLike, size: str = "320px") -> Path:
    """Download Imagenette with torchvision's ``Imagenette`` into ``dest`` and return the ImageFolder root.

    ``size``: ``"full"``, ``"320px"`` or ``"160px"`` (torchvision's names). Raises ``RuntimeError`` when the
    download fails (e.g. offline), naming the fix.
    """
    dest = Path(dest).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        Imagenette(str(dest), split="train", size=size, download=True)
    except Exception as err:  # urllib/HTTP/OS errors all mean the same thing to the user
        raise RuntimeError(f"could not download Imagenette into {str(dest)!r} ({type(err).__name__}: {err}). "
                           f"Without internet access, copy the data by hand. {HOW_TO_GET_DATA}") from err
    folder = {"full": "imagenette2", "320px": "imagenette2-320", "160px": "imagenette2-160"}[size]
    return check_data_root(dest / folder)


def resolve_data_root(data: str | os.PathLike | None = None, download: bool = False) -> Path:
    """The data root: ``data`` if given, else ``GV3LITE_DATA``, else ``<repo>/../shared/data/imagenette2-224``.

    With ``download=True`` and no data at that place, Imagenette (320 px) is downloaded there first.
    Raises ``FileNotFoundError`` when the root is missing/empty/lacks ``train/`` or ``val/``.
    """
    root = Path(data or os.environ.get("GV3LITE_DATA") or default_data_root()).expanduser()
    if download and not (root / "train").is_dir():
        return download_imagenette(root)
    return check_data_root(root)


# --------------------------------------------------------------------------------------------- subsets
def balanced_subset(targets: Sequence[int], per_class: int | None, seed: int = 0,
                    class_names: Sequence[str] | None = None) -> list[int]:
    """Indices of ``per_class`` samples of every class, drawn without replacement with a fixed ``seed``.

    Returned in increasing index order. ``per_class=None`` keeps everything. Raises ``ValueError`` when a class
    has fewer than ``per_class`` samples, naming it (``class_names[c]`` when given, e.g. the class folder) and the fix.
    """
    if per_class is None:
        return list(range(len(targets)))
    if per_class < 1:
        raise ValueError(f"images per class must be >= 1 (or None for all), got {per_class}")
    g = torch.Generator().manual_seed(seed)
    targets = torch.as_tensor(list(targets))
    chosen = []
    for c in targets.unique().tolist():
        idx = (targets == c).nonzero().flatten()
        if len(idx) < per_class:
            name = f"class {class_names[c]!r} (index {c})" if class_names is not None else f"class {c}"
            raise ValueError(f"{name} has only {len(idx)} images, fewer than the {per_class} per class asked for; "
                             f"lower images_per_class_train / images_per_class_val to at most {len(idx)}, or use "
                             "None for all images")
        chosen.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    return sorted(torch.cat(chosen).tolist())


# --------------------------------------------------------------------------------------------- dataset
def stored_size(img_size: int, crop_pct: float = DEFAULT_CROP_PCT) -> int:
    """Short side (px) of the cached train images: 2×``img_size`` (so a crop of a quarter of the image area
    is not upsampled), and at least the eval resize size ``img_size / crop_pct``."""
    return max(2 * img_size, math.ceil(img_size / crop_pct))


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """Decode an image file (PIL) to a uint8 tensor of shape (3, H, W); grayscale and CMYK become RGB.

    Raises ``ValueError`` naming ``path`` when PIL cannot decode the file (not an image, corrupt or truncated).
    """
    try:
        with Image.open(path) as img:
            return F.pil_to_tensor(img.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as err:  # PIL: UnidentifiedImageError/truncated (OSError), bad headers
        if isinstance(err, FileNotFoundError):
            raise
        raise ValueError(f"cannot decode image {str(path)!r} ({type(err).__name__}: {err}); the file is corrupt, "
                         "truncated or not an image: replace or delete it") from err


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
    """

    def __init__(self, root, split: str = "train", img_size: int = 224, train: bool | None = None,
                 classes: Sequence[str] | None = None, per_class: int | None = None, seed: int = 0,
                 cache: bool = True, auto_augment: str = "none", random_erasing: float = 0.0,
                 scale: tuple[float, float] = (0.08, 1.0), crop_pct: float = DEFAULT_CROP_PCT,
                 return_crop_info: bool = False, progress: bool = False):
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        self.split, self.img_size, self.crop_pct = split, int(img_size), crop_pct
        self.train = (split == "train") if train is None else train
        self.return_crop_info = return_crop_info
        self.root = Path(root)
        split_dir = self.root / split
        all_classes, _ = find_classes(str(split_dir))
        if classes is None:
            classes = all_classes
        missing = [c for c in classes if c not in all_classes]
        if missing:
            raise KeyError(f"classes {missing} are not folders of {str(split_dir)!r}; choose from {all_classes}")
        self.classes = list(classes)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        samples = make_dataset(str(split_dir), self.class_to_idx, extensions=IMG_EXTENSIONS)
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
            it = tqdm(self.samples, desc=f"decode {split}", disable=not progress, leave=False)
            self.cache = [self._prepare(read_image(path)) for path, _ in it]

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
                   scale: tuple[float, float] = (0.08, 1.0), return_crop_info: bool = False, progress: bool = False):
    """The (train, val) ``ImageFolderDataset`` pair of a data root with the same classes in both."""
    root = check_data_root(root)
    train = ImageFolderDataset(root, "train", img_size, classes=classes, per_class=images_per_class_train,
                               seed=seed, cache=cache, auto_augment=auto_augment, random_erasing=random_erasing,
                               scale=scale, return_crop_info=return_crop_info, progress=progress)
    val = ImageFolderDataset(root, "val", img_size, classes=train.classes, per_class=images_per_class_val,
                             seed=seed, cache=cache, progress=progress)
    return train, val


def build_loader(dataset: Dataset, batch_size: int, train: bool, generator: torch.Generator | None = None,
                 sampler=None, num_workers: int = 0, drop_last: bool | None = None) -> DataLoader:
    """A ``DataLoader``: shuffled with ``generator`` (or through ``sampler``, e.g. ``DistributedSampler``) for
    training, in order for evaluation. ``drop_last`` defaults to ``train``."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=train and sampler is None, sampler=sampler,
                      generator=generator if sampler is None else None, num_workers=num_workers,
                      drop_last=train if drop_last is None else drop_last,
                      persistent_workers=num_workers > 0)
