"""The loaders: the batched augmenting path over the uint8 cache (`BatchedTrainLoader`, `BatchedEvalLoader`: whole
batches cropped, resized, flipped and normalized at once on a device) and `build_loader`, which picks it or a torch
``DataLoader`` (per-image transforms, optional worker processes).

Owns also the batch forms of the crop: `random_resized_crop_params` (``RandomResizedCrop``'s distribution for a
batch) and `resize_weights` (anti-aliased bilinear resizing as two matrix products).
"""
from __future__ import annotations

import math

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_image, decode_jpeg, read_file
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from gv3lite.data.dataset import IMAGENET_MEAN, IMAGENET_STD, ImageFolderDataset


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
        ``decode_image``; grayscale/CMYK become RGB; EXIF orientation applied, as in ``gv3lite.data.cache.read_image``.
        Used when the dataset has no cache (roots too big for memory)."""
        paths = [self.dataset.samples[j][0] for j in index.tolist()]
        data = [read_file(p) for p in paths]
        jpeg = [i for i, p in enumerate(paths) if p.lower().endswith((".jpg", ".jpeg"))]
        images = [None] * len(paths)
        if jpeg:
            decoded = decode_jpeg([data[i] for i in jpeg], mode=ImageReadMode.RGB, device=self.device,
                                  apply_exif_orientation=True)
            for i, img in zip(jpeg, decoded):
                images[i] = img
        for i, img in enumerate(images):
            if img is None:
                images[i] = decode_image(data[i], mode=ImageReadMode.RGB, apply_exif_orientation=True).to(self.device)
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
    return WorkerLoader(dataset, batch_size=batch_size, shuffle=train and sampler is None, sampler=sampler,
                        generator=generator if sampler is None else None, num_workers=num_workers,
                        drop_last=drop_last, persistent_workers=num_workers > 0)


class WorkerLoader(DataLoader):
    """A torch ``DataLoader`` whose worker processes' errors reach the caller as the worker raised them: a bad image
    read in a worker is the same one-line ``ValueError`` (naming the file and the fix) as in the cached path, not
    torch's "Caught ValueError in DataLoader worker process 0" with the worker's whole traceback in the message."""

    def __iter__(self):
        # torch's iterator is made here, at iter() time (it draws its base seed from the shuffling generator then),
        # as a plain DataLoader does: the trainer's runs depend on when that draw happens
        return self._reraising(super().__iter__())

    @staticmethod
    def _reraising(batches):
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except Exception as err:
                raise worker_error(err) from err
            yield batch


def worker_error(err: Exception) -> Exception:
    """The exception a DataLoader worker raised, rebuilt from torch's re-raised copy (whose message is "Caught X in
    DataLoader worker process N. Original Traceback ...: <the worker's traceback>"): same type, the worker's own
    message (the traceback's last line). Any other exception is returned unchanged."""
    text = str(err.args[0]) if len(err.args) == 1 and isinstance(err.args[0], str) else ""
    if "DataLoader worker process" not in text or "Original Traceback" not in text:
        return err
    last = text.strip().splitlines()[-1]
    message = last.split(": ", 1)[1] if last.startswith(type(err).__name__ + ":") else last
    if isinstance(err, KeyError) and len(message) > 1 and message[0] == message[-1] and message[0] in "'\"":
        message = message[1:-1]  # KeyError's repr quotes
    try:
        return type(err)(message)
    except Exception:  # an exception type that takes other arguments: keep torch's
        return err
