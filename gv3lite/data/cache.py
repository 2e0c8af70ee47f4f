"""Decoding images and the in-memory uint8 cache: `read_image` (PIL, any mode to RGB uint8), the cached short side
(`stored_size`) and whether a root's images fit a cache at all (`plan_data_path`).

Speed choice (measured on the shared 2-core CPU, 224×224 JPEGs, one thread): a train sample costs ~4.4 ms when
the JPEG is decoded (PIL) and transformed each time, ~1.2 ms from the uint8 cache (3.8× less), while one
training step of ``ghostnetv3_050`` at 64 px costs ~40 ms per image under the same load (~8 ms idle, 2 threads):
the cache saves ~8% of an epoch for a one-time decode of a few seconds. So by default (``cache=True`` in
`gv3lite.data.dataset.ImageFolderDataset`) every image is decoded **once** with PIL (grayscale → RGB;
``torch.get_num_threads()`` threads at a time), resized so its short side is ``stored_size = 2·img_size`` and kept
in memory as uint8 (~465 MB for the 9,469 Imagenette train images at 64 px; a 1.25× copy would be smaller but makes
small random crops visibly blurrier than the eval images); the random train transforms then run on these small
tensors in the main process (``num_workers=0``). Val images are stored already resized and center-cropped. The
cache lives in memory only (no disk copy). ``cache=False`` decodes the original file each time (use it with
``num_workers>0`` for ImageNet on a GPU).
"""
from __future__ import annotations

import math
import os

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps
from torchvision.transforms.v2 import functional as F

from gv3lite.data.folder import _unreadable

DEFAULT_CROP_PCT = 0.875


def stored_size(img_size: int, crop_pct: float = DEFAULT_CROP_PCT) -> int:
    """Short side (px) of the cached train images: 2×``img_size`` (so a crop of a quarter of the image area
    is not upsampled), and at least the eval resize size ``img_size / crop_pct``."""
    return max(2 * img_size, math.ceil(img_size / crop_pct))


# PIL modes with more than 8 bits per sample -> the value that maps to 255 (full scale). 16-bit PNG/TIFF open as
# "I;16*" (or "I" in older Pillow); "F" is 32-bit float, taken as [0, 1]. PIL's own convert("RGB") clips these to
# 0..255 (a 16-bit photo becomes nearly all white), so they are scaled here instead.
HIGH_BIT_DEPTH_FULL_SCALE = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535, "F": 1.0}


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """Decode an image file (PIL) to a uint8 tensor of shape (3, H, W), upright: an EXIF orientation tag (a camera
    photo stored sideways) is applied (``PIL.ImageOps.exif_transpose``); grayscale, CMYK, palette and RGBA become RGB
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
            if img.getexif().get(ExifTags.Base.Orientation, 1) != 1:  # a photo stored sideways: as it is shown
                img = ImageOps.exif_transpose(img)
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
