"""Datasets and transforms: ImageFolder roots (Imagenette, ImageNet), class-balanced subsets, data-root resolution.

Owns: `resolve_data_root` (``--data`` → ``GV3LITE_DATA`` → ``<repo>/../shared/data/imagenette2-224``),
`download_imagenette` (opt-in, through torchvision's ``Imagenette``), `balanced_subset`, the dataset
`ImageFolderDataset` and `build_datasets` / `build_loader`; the batched path over the uint8 cache
(`random_resized_crop_params`, `BatchedTrainLoader`, `BatchedEvalLoader`, chosen by `build_loader`).

Speed choice (measured on the shared 2-core CPU, 224×224 JPEGs, one thread): a train sample costs ~4.4 ms when
the JPEG is decoded (PIL) and transformed each time, ~1.2 ms from the uint8 cache below (3.8× less), while one
training step of ``ghostnetv3_050`` at 64 px costs ~40 ms per image under the same load (~8 ms idle, 2 threads):
the cache saves ~8% of an epoch for a one-time decode of a few seconds. So by default (``cache=True``) every
image is decoded **once** with PIL (grayscale → RGB; ``torch.get_num_threads()`` threads at a time), resized so
its short side is ``stored_size = 2·img_size`` and kept in memory as uint8 (~465 MB for the 9,469 Imagenette
train images at 64 px; a 1.25× copy would be smaller but makes small random crops visibly blurrier than the eval images);
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
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import Imagenette
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset
from torchvision.io import ImageReadMode, decode_image, decode_jpeg, read_file
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
    with how to get the data, and ``PermissionError`` naming the folder that cannot be listed.
    """
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise FileNotFoundError(f"data root {str(root)!r} is a file, not a folder; pass the folder that holds "
                                f"train/ and val/ (an archive must be unpacked first). {HOW_TO_GET_DATA}")
    if not root.is_dir():
        raise FileNotFoundError(f"data root {str(root)!r} does not exist. {HOW_TO_GET_DATA}")
    _listdir(root)
    for split in ("train", "val"):
        split_dir = root / split
        if not split_dir.is_dir():
            raise FileNotFoundError(f"data root {str(root)!r} has no {split}/ folder. {HOW_TO_GET_DATA}")
        class_dirs = [split_dir / name for name in _listdir(split_dir) if (split_dir / name).is_dir()]
        if not any(_is_image(name) for c in class_dirs for name in _listdir(c)):
            raise FileNotFoundError(f"{str(split_dir)!r} holds no images in class sub-folders. {HOW_TO_GET_DATA}")
    return root


def _listdir(folder: Path) -> list[str]:
    """``os.listdir`` that names the folder and the fix when it cannot be read (``PermissionError``/``OSError``)."""
    try:
        return sorted(os.listdir(folder))
    except FileNotFoundError:
        raise
    except OSError as err:
        raise _unreadable(folder, err, "folder") from err


def _unreadable(path, err: OSError, what: str) -> OSError:
    """The error for a file or folder the OS refuses to read: same type (``PermissionError``...), path and fix."""
    fix = (f"make it readable (chmod -R a+rX {str(path)!r}) or move it out of the data root"
           if isinstance(err, PermissionError) else "check the disk or copy the data again")
    return type(err)(f"cannot read {what} {str(path)!r} ({err.strerror or err}); {fix}")


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS)


def download_imagenette(dest: str | os.PathLike, size: str = "320px") -> Path:
    """Download Imagenette with torchvision's ``Imagenette`` into ``dest`` and return the ImageFolder root.

    ``size``: ``"full"``, ``"320px"`` or ``"160px"`` (torchvision's names). Raises ``ConnectionError`` (an
    ``OSError``: the ``gv3lite`` command prints it as a one-line error) when the download fails (e.g. offline), naming
    the fix.
    """
    dest = Path(dest).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        Imagenette(str(dest), split="train", size=size, download=True)
    except Exception as err:  # urllib/HTTP/OS errors all mean the same thing to the user
        raise ConnectionError(f"could not download Imagenette into {str(dest)!r} ({type(err).__name__}: {err}). "
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


# PIL modes with more than 8 bits per sample -> the value that maps to 255 (full scale). 16-bit PNG/TIFF open as
# "I;16*" (or "I" in older Pillow); "F" is 32-bit float, taken as [0, 1]. PIL's own convert("RGB") clips these to
# 0..255 (a 16-bit photo becomes nearly all white), so they are scaled here instead.
HIGH_BIT_DEPTH_FULL_SCALE = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535, "F": 1.0}


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """Decode an image file (PIL) to a uint8 tensor of shape (3, H, W); grayscale, CMYK, palette and RGBA become RGB
    (alpha dropped).

    High-bit-depth single-channel images are scaled to 8 bits, not clipped: 16-bit modes (``I;16``, and ``I`` with
    values in 0..65535) by 255/65535, float ``F`` images with values in [0, 1] by 255 (rounded to nearest).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        PermissionError / OSError: the file cannot be read (permissions, I/O error) -- named, with the fix.
        ValueError: naming ``path`` when PIL cannot decode the file (not an image, corrupt or truncated), when it is
            larger than PIL's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``), or when a 32-bit integer /
            float image has values outside the range above (no safe 8-bit scaling).
    """
    try:
        with Image.open(path) as img:
            if img.mode not in HIGH_BIT_DEPTH_FULL_SCALE:
                return F.pil_to_tensor(img.convert("RGB"))
            mode, values = img.mode, np.asarray(img)
    except Image.DecompressionBombError as err:
        raise ValueError(f"image {str(path)!r} is too large to decode safely ({err}); it may be a decompression "
                         "bomb: downscale it (e.g. to 512 px on the short side) or remove it, or raise "
                         "PIL.Image.MAX_IMAGE_PIXELS if you trust the file") from err
    except (OSError, SyntaxError, ValueError) as err:  # PIL: UnidentifiedImageError/truncated (OSError), bad headers
        if isinstance(err, FileNotFoundError):
            raise
        if isinstance(err, OSError) and err.errno is not None:  # the OS refused: not the image's fault
            raise _unreadable(path, err, "image file") from err
        raise ValueError(f"cannot decode image {str(path)!r} ({type(err).__name__}: {err}); the file is corrupt, "
                         "truncated or not an image: replace or delete it") from err
    return _high_bit_depth_to_rgb(mode, values, path)


def _high_bit_depth_to_rgb(mode: str, values: np.ndarray, path) -> torch.Tensor:
    """(3, H, W) uint8 from the (H, W) values of a single-channel 16/32-bit or float PIL image (see `read_image`)."""
    full_scale = HIGH_BIT_DEPTH_FULL_SCALE[mode]
    values = values.astype(np.float64)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if not (np.isfinite(values).all() and low >= 0 and high <= full_scale):
        raise ValueError(f"image {str(path)!r} has mode {mode!r} with values in [{low:g}, {high:g}], outside "
                         f"0..{full_scale:g}, so it has no safe 8-bit scaling; save it as an 8-bit (or 16-bit) "
                         "PNG/JPEG, or remove it")
    gray = torch.from_numpy(np.rint(values * (255.0 / full_scale)).astype(np.uint8))
    return gray.unsqueeze(0).expand(3, -1, -1).contiguous()


def scan_split(split_dir: str | os.PathLike, classes: Sequence[str]) -> list[str]:
    """Check a split folder before its images are listed: every folder under it can be read and every class folder
    in ``classes`` holds at least one image (an extension torchvision's ``IMG_EXTENSIONS`` lists).

    Returns the paths of the files that are skipped because they are not images (e.g. ``notes.txt``, ``.gif``),
    both inside class folders and loose in ``split_dir``. Raises ``FileNotFoundError`` for an empty class folder and
    ``PermissionError`` (or ``OSError``) for a folder that cannot be listed; each message names the path and the fix.
    """
    split_dir = Path(split_dir)
    skipped = [str(split_dir / n) for n in _listdir(split_dir) if not (split_dir / n).is_dir()]
    for name in classes:
        images = 0
        for folder, _, files in os.walk(split_dir / name, onerror=_raise_unreadable_folder, followlinks=True):
            for file in files:
                if _is_image(file):
                    images += 1
                else:
                    skipped.append(os.path.join(folder, file))
        if images == 0:
            raise FileNotFoundError(f"class folder {str(split_dir / name)!r} holds no images (extensions "
                                    f"{', '.join(IMG_EXTENSIONS)}); add its images, or remove the empty folder "
                                    "(or leave the class out with --classes)")
    return skipped


def _raise_unreadable_folder(err: OSError) -> None:
    raise _unreadable(err.filename, err, "folder") from err


_ANNOUNCED_SKIPS: set[str] = set()  # split folders whose skipped files were already announced in this process


def _announce_skipped(split_dir: Path, skipped: list[str]) -> None:
    """Warn once per split folder (per process) how many non-image files are skipped, by extension."""
    if not skipped or str(split_dir) in _ANNOUNCED_SKIPS:
        return
    _ANNOUNCED_SKIPS.add(str(split_dir))
    kinds = Counter(Path(p).suffix.lower() or "(no extension)" for p in skipped)
    listed = ", ".join(f"{n} {ext}" for ext, n in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])))
    warnings.warn(f"{str(split_dir)!r}: skipping {len(skipped)} files that are not images ({listed}; e.g. "
                  f"{skipped[0]!r}); only {', '.join(IMG_EXTENSIONS)} are read: convert the files you want "
                  "(e.g. .gif -> .png) or move the others out of the data root", UserWarning, stacklevel=3)


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
    """

    def __init__(self, root, split: str = "train", img_size: int = 224, train: bool | None = None,
                 classes: Sequence[str] | None = None, per_class: int | None = None, seed: int = 0,
                 cache: bool = True, auto_augment: str = "none", random_erasing: float = 0.0,
                 scale: tuple[float, float] = (0.08, 1.0), crop_pct: float = DEFAULT_CROP_PCT,
                 return_crop_info: bool = False, progress: bool = False, decode_workers: int | None = None):
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
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
                 sampler=None, num_workers: int = 0, drop_last: bool | None = None, batched: bool | None = None,
                 device: str | torch.device = "cpu"):
    """The loader of ``dataset``: shuffled with ``generator`` (or through ``sampler``, e.g. ``DistributedSampler``)
    for training, in order for evaluation; ``drop_last`` defaults to ``train``.

    ``batched=None`` (default) picks the batched path (`BatchedTrainLoader` / `BatchedEvalLoader`: whole batches
    cropped, resized, flipped and normalized at once on ``device``) whenever it applies -- a cached
    ``ImageFolderDataset``, no ``sampler``, ``num_workers=0`` -- and a torch ``DataLoader`` (per-image transforms,
    batches on the CPU) otherwise. ``batched=True`` insists (``ValueError`` when it does not apply; for an uncached
    train set every batch is then decoded on ``device``, see `plan_data_path`); ``False`` always gives the
    ``DataLoader``. Both yield ``(images, targets[, info])`` with the same shapes."""
    drop_last = train if drop_last is None else drop_last
    usable = isinstance(dataset, ImageFolderDataset) and sampler is None and num_workers == 0 and dataset.train == train
    applies = usable and dataset.cache is not None
    if batched and not (applies or (usable and train)):
        raise ValueError("batched=True needs an ImageFolderDataset of the matching split (cached, for eval), no "
                         "sampler and num_workers=0; pass batched=None to fall back to a DataLoader")
    if batched and train and not applies:  # no cache: each batch is decoded on `device` (BatchedTrainLoader.decode)
        return BatchedTrainLoader(dataset, batch_size, generator, device, drop_last=drop_last)
    if applies and batched is not False:
        if train:
            return BatchedTrainLoader(dataset, batch_size, generator, device, drop_last=drop_last)  # resize: auto
        return BatchedEvalLoader(dataset, batch_size, device)
    return DataLoader(dataset, batch_size=batch_size, shuffle=train and sampler is None, sampler=sampler,
                      generator=generator if sampler is None else None, num_workers=num_workers,
                      drop_last=drop_last, persistent_workers=num_workers > 0)


def list_classes(root, split: str = "train") -> list[str]:
    """The class folder names of ``root/split`` (ImageFolder order)."""
    return find_classes(str(Path(root) / split))[0]


def count_images(root, split: str = "train", classes: Sequence[str] | None = None) -> int:
    """Number of image files under ``root/split/<class>/`` (all classes, or ``classes``), without decoding them."""
    names = classes if classes is not None else list_classes(root, split)
    return sum(1 for c in names for p in (Path(root) / split / c).iterdir() if p.suffix.lower() in IMG_EXTENSIONS)


def plan_data_path(num_images: int, img_size: int, device: str | torch.device = "cpu",
                   available_bytes: int | None = None) -> tuple[str, str]:
    """How training images should reach the model, and why: ``(path, reason)``.

    * ``"cache"``: the uint8 cache (``stored_size(img_size)`` short side, ~1.2 aspect on average) fits in half of
      ``available_bytes`` -- decode once, keep it in memory (on ``device``) and augment whole batches there;
    * ``"decode_on_device"``: it does not fit and ``device`` is CUDA -- decode every batch's JPEGs on the GPU
      (``torchvision.io.decode_jpeg(..., device="cuda")``, `BatchedTrainLoader` with an uncached dataset);
    * ``"workers"``: it does not fit on a CPU -- decode per image in ``DataLoader`` worker processes.

    ``available_bytes`` defaults to the free memory of ``device`` (``torch.cuda.mem_get_info`` on CUDA, the free RAM
    from ``os.sysconf`` otherwise). The caller logs the reason.
    """
    device = torch.device(device)
    per_image = 3 * stored_size(img_size) ** 2 * 1.2
    need = num_images * per_image
    if available_bytes is None:
        if device.type == "cuda":
            available_bytes = torch.cuda.mem_get_info(device)[0]
        else:
            available_bytes = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    gib = 2 ** 30
    if need <= available_bytes / 2:
        return "cache", (f"{num_images} images need ~{need / gib:.1f} GiB as a uint8 cache, within half of the "
                         f"{available_bytes / gib:.1f} GiB free on {device.type}: decoded once, augmented in batches")
    if device.type == "cuda":
        return "decode_on_device", (f"a uint8 cache would need ~{need / gib:.1f} GiB, more than half of the "
                                    f"{available_bytes / gib:.1f} GiB free on the GPU: JPEGs are decoded per batch "
                                    "on the GPU (torchvision decode_jpeg)")
    return "workers", (f"a uint8 cache would need ~{need / gib:.1f} GiB, more than half of the "
                       f"{available_bytes / gib:.1f} GiB free RAM: images are decoded per sample in DataLoader workers")


# ------------------------------------------------------------------------------------------ batched path
def random_resized_crop_params(heights: torch.Tensor, widths: torch.Tensor, scale=(0.08, 1.0),
                               ratio=(3 / 4, 4 / 3), generator: torch.Generator | None = None, attempts: int = 10):
    """``RandomResizedCrop.get_params`` for a whole batch at once: integer crops ``(top, left, height, width)``,
    each a (B,) int64 tensor, for images of sizes ``heights`` x ``widths`` (B,).

    The same distribution as torchvision's per-image rule (``torchvision/transforms/v2/_geometry.py``,
    ``RandomResizedCrop.make_params``): up to ``attempts`` draws of an area fraction ~ U(scale) and a log aspect
    ratio ~ U(log ratio); the first draw whose rounded size fits is used, at a uniform position; an image where none
    fits gets the centred crop of the largest box with an aspect ratio clamped to ``ratio``.
    """
    b = heights.shape[0]
    heights, widths = heights.to(torch.float64), widths.to(torch.float64)
    area = (heights * widths)[:, None]
    target = area * torch.empty(b, attempts, dtype=torch.float64).uniform_(scale[0], scale[1], generator=generator)
    log_r = torch.empty(b, attempts, dtype=torch.float64).uniform_(math.log(ratio[0]), math.log(ratio[1]),
                                                                   generator=generator)
    aspect = torch.exp(log_r)
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    fits = (w > 0) & (h > 0) & (w <= widths[:, None]) & (h <= heights[:, None])
    first = torch.where(fits.any(1), fits.to(torch.int8).argmax(1), 0)
    w, h = w.gather(1, first[:, None])[:, 0], h.gather(1, first[:, None])[:, 0]
    u = torch.rand(b, 2, dtype=torch.float64, generator=generator)  # uniform integer positions
    top = torch.floor(u[:, 0] * (heights - h + 1)).clamp(max=heights - h)
    left = torch.floor(u[:, 1] * (widths - w + 1)).clamp(max=widths - w)
    # fallback: centred crop with the aspect ratio clamped to the allowed range
    in_ratio = widths / heights
    fw = torch.where(in_ratio < ratio[0], widths, torch.where(in_ratio > ratio[1], torch.round(heights * ratio[1]),
                                                              widths))
    fh = torch.where(in_ratio < ratio[0], torch.round(widths / ratio[0]),
                     torch.where(in_ratio > ratio[1], heights, heights))
    ok = fits.any(1)
    h, w = torch.where(ok, h, fh), torch.where(ok, w, fw)
    top = torch.where(ok, top, torch.floor((heights - h) / 2))
    left = torch.where(ok, left, torch.floor((widths - w) / 2))
    return top.long(), left.long(), h.long(), w.long()


def resize_weights(start: torch.Tensor, length: torch.Tensor, size: int, n_in: int) -> torch.Tensor:
    """Per-image 1-D resampling matrices (B, size, n_in) that crop ``[start, start + length)`` (pixels, (B,)) out
    of ``n_in`` pixels and resize it to ``size``: a triangle (bilinear) filter widened by the down-scaling factor
    and renormalized at the borders, i.e. anti-aliased bilinear resizing as in torchvision/PIL. A batch of crops is
    then ``Wy @ image @ Wx^T``: two batched matrix products, fast on a GPU."""
    start, length = start.to(torch.float32), length.to(torch.float32)
    scale = length / size
    support = scale.clamp(min=1.0)
    centre = start[:, None] + (torch.arange(size, dtype=torch.float32, device=start.device) + 0.5) * scale[:, None]
    pos = torch.arange(n_in, dtype=torch.float32, device=start.device) + 0.5
    weights = (1 - (pos[None, None, :] - centre[..., None]).abs() / support[:, None, None]).clamp(min=0)
    return weights / weights.sum(-1, keepdim=True)


def _normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 or 0..255 float (B, 3, H, W) -> float32 normalized with the ImageNet mean/std, with the same operations
    as the per-image transform (``ToDtype(scale=True)`` then ``Normalize``), so both give the same floats."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255 - mean) / std


class BatchedTrainLoader:
    """Training batches cut from the in-memory uint8 cache of an ``ImageFolderDataset`` a whole batch at a time.

    Per batch: indices from a shuffled permutation (``generator``; the last partial batch is dropped), crops drawn
    by ``random_resized_crop_params`` (RandomResizedCrop's distribution), horizontal flips with p = 0.5, then float +
    ImageNet normalization, all on the whole batch. The crop + anti-aliased bilinear resize itself is
    ``resize="matmul"``: two batched matrix products with ``resize_weights`` (one kernel per batch; the default on
    GPUs), or ``resize="per_image"``: torchvision's uint8 ``resized_crop`` called per image (the default on CPU,
    where that SIMD kernel measured ~3x faster than either batched float method, matmul or ``roi_align``).
    RandAugment / AutoAugment / random erasing, when the dataset asks for them, run per image on the crops
    (torchvision v2). Everything runs on ``device`` (the cache is copied there once).

    Yields ``(images (B, 3, S, S) float32, targets (B,) int64)``, plus ``info`` = ``{"index" (B,), "box" (B, 4)
    float32 normalized [x0, y0, x1, y1], "flip" (B,) bool}`` when the dataset has ``return_crop_info`` (what the
    cached teacher needs; ``apply_crop_info`` re-applies a box). ``len()`` = number of batches per epoch.

    Without a cache (``cache=False``, roots too big for memory) each batch's files are decoded by `decode` on
    ``device`` and cropped from the full-size images, as the per-image path does.

    Raises:
        ValueError: the dataset is not a train ``ImageFolderDataset``.
    """

    def __init__(self, dataset: "ImageFolderDataset", batch_size: int, generator: torch.Generator | None = None,
                 device: str | torch.device = "cpu", drop_last: bool = True, resize: str = "auto"):
        if not isinstance(dataset, ImageFolderDataset) or not dataset.train:
            raise ValueError("BatchedTrainLoader needs a train ImageFolderDataset; use build_loader(...) for other "
                             "datasets")
        if resize not in ("auto", "matmul", "per_image"):
            raise ValueError(f"resize must be 'auto', 'matmul' or 'per_image', got {resize!r}")
        self.dataset, self.batch_size, self.drop_last = dataset, batch_size, drop_last
        self.generator = generator if generator is not None else torch.Generator()
        self.device = torch.device(device)
        self.resize = resize if resize != "auto" else ("per_image" if self.device.type == "cpu" else "matmul")
        self.images = self.sizes = None  # without a cache, every batch is decoded (see `decode`)
        if dataset.cache is not None:
            self.sizes = torch.tensor([img.shape[-2:] for img in dataset.cache], dtype=torch.long)  # (N, 2): H, W
            same_size = bool((self.sizes == self.sizes[0]).all())  # then one (N, 3, H, W) tensor, else a list
            self.images = (torch.stack(dataset.cache).to(self.device) if same_size
                           else [img.to(self.device) for img in dataset.cache])
        self.targets = torch.as_tensor(dataset.targets, dtype=torch.long)
        self.scale, self.ratio = dataset.rrc.scale, dataset.rrc.ratio
        steps = dataset.after_crop.transforms
        self.per_image = [t for t in steps if isinstance(t, (v2.RandAugment, v2.AutoAugment))]  # on uint8 crops
        self.erase = [t for t in steps if isinstance(t, v2.RandomErasing)]  # on normalized images

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def decode(self, index: torch.Tensor) -> list[torch.Tensor]:
        """The uint8 (3, H, W) images of ``index`` decoded from their files on ``device``: JPEGs in one batched
        ``torchvision.io.decode_jpeg`` call (on the GPU when ``device`` is CUDA), other formats with
        ``decode_image``; grayscale/CMYK become RGB. Used when the dataset has no cache (roots too big for memory)."""
        paths = [self.dataset.samples[j][0] for j in index.tolist()]
        data = [read_file(p) for p in paths]
        jpeg = [i for i, p in enumerate(paths) if p.lower().endswith((".jpg", ".jpeg"))]
        images = [None] * len(paths)
        if jpeg:
            decoded = decode_jpeg([data[i] for i in jpeg], mode=ImageReadMode.RGB, device=self.device)
            for i, img in zip(jpeg, decoded):
                images[i] = img
        for i, img in enumerate(images):
            if img is None:
                images[i] = decode_image(data[i], mode=ImageReadMode.RGB).to(self.device)
        return images

    def __iter__(self):
        # randperm straight from the generator: under torchrun, DistributedSampler (seeded with the same per-epoch
        # seed) splits this very permutation between the ranks
        order = torch.randperm(len(self.dataset), generator=self.generator)
        for b in range(len(self)):
            yield self.batch(order[b * self.batch_size:(b + 1) * self.batch_size])

    def batch(self, index: torch.Tensor):
        """The augmented batch of dataset indices ``index`` (B,) (see the class docstring)."""
        size = self.dataset.img_size
        images = self.images if self.images is not None else dict(zip(index.tolist(), self.decode(index)))
        hw = (self.sizes[index] if self.sizes is not None
              else torch.tensor([images[j].shape[-2:] for j in index.tolist()], dtype=torch.long))
        top, left, h, w = random_resized_crop_params(hw[:, 0], hw[:, 1], self.scale, self.ratio, self.generator)
        flip = torch.rand(len(index), generator=self.generator) < 0.5
        if self.resize == "per_image":
            crops = torch.stack([F.resized_crop(images[j], t, lf, hh, ww, [size, size], antialias=True)
                                 for j, t, lf, hh, ww in zip(index.tolist(), top.tolist(), left.tolist(), h.tolist(),
                                                             w.tolist())]).float()
        else:
            if isinstance(images, torch.Tensor):
                canvas = images[index.to(self.device)].float()
            else:  # images of different sizes: top-left aligned on a zero canvas (the boxes never leave an image)
                canvas = torch.zeros(len(index), 3, int(hw[:, 0].max()), int(hw[:, 1].max()), device=self.device)
                for i, j in enumerate(index.tolist()):
                    img = images[j]
                    canvas[i, :, :img.shape[1], :img.shape[2]] = img
            wy = resize_weights(top.to(self.device), h.to(self.device), size, canvas.shape[-2])
            wx = resize_weights(left.to(self.device), w.to(self.device), size, canvas.shape[-1])
            crops = wy[:, None] @ canvas @ wx[:, None].transpose(-1, -2)
        flipped = flip.nonzero()[:, 0].to(self.device)
        crops[flipped] = crops[flipped].flip(-1)
        if self.per_image:
            crops = crops.round().clamp(0, 255).to(torch.uint8)
            crops = torch.stack([v2.Compose(self.per_image)(c) for c in crops])
        images = _normalize(crops)
        if self.erase:
            images = torch.stack([self.erase[0](img) for img in images])
        targets = self.targets[index].to(self.device)
        if not self.dataset.return_crop_info:
            return images, targets
        hw = hw.to(torch.float32)
        box = torch.stack([left / hw[:, 1], top / hw[:, 0], (left + w) / hw[:, 1], (top + h) / hw[:, 0]], 1)
        return images, targets, {"index": index, "box": box.float(), "flip": flip}


class BatchedEvalLoader:
    """Eval batches from the cached, already resized and centre-cropped uint8 val images: one (N, 3, S, S) tensor
    on ``device``, sliced in order and normalized per batch. Yields ``(images (B, 3, S, S) float32, targets (B,))``.

    Raises:
        ValueError: the dataset is not a cached eval ``ImageFolderDataset``.
    """

    def __init__(self, dataset: "ImageFolderDataset", batch_size: int, device: str | torch.device = "cpu"):
        if not isinstance(dataset, ImageFolderDataset) or dataset.cache is None or dataset.train:
            raise ValueError("BatchedEvalLoader needs an eval ImageFolderDataset built with cache=True; use "
                             "build_loader(...) for other datasets")
        self.dataset, self.batch_size, self.drop_last = dataset, batch_size, False
        self.images = torch.stack(dataset.cache).to(device)
        self.targets = torch.as_tensor(dataset.targets, dtype=torch.long).to(device)

    def __len__(self) -> int:
        return math.ceil(len(self.images) / self.batch_size)

    def __iter__(self):
        for start in range(0, len(self.images), self.batch_size):
            end = start + self.batch_size
            yield _normalize(self.images[start:end]), self.targets[start:end]
