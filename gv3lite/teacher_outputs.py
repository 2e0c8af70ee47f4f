"""Teacher outputs for the student's training crops: the label-map cache (ReLabel) and the two suppliers.

Owns:
* the teacher's dense label maps, cached on disk (ReLabel, Yun et al. CVPR 2021): ``TeacherLabelMaps`` (pooled over a
  crop box with RoIAlign), ``build_label_maps`` (one teacher pass per training image, cached under
  ``gv3lite.utils.cache_dir()``, keyed by `label_maps_key`, validated on load by `read_label_maps`);
* the teacher-output suppliers the trainer receives (``gv3lite.train``'s ``teacher``): ``CachedKD`` (pools the maps,
  no teacher pass per step) and ``OnlineKD`` (the teacher on every re-cropped crop), built by ``make_kd`` from a
  teacher name or checkpoint (``gv3lite.teacher.create_teacher``); the mode names ``KD_MODES``.

A supplier only supplies outputs: ``teacher_logits(images, info) -> (B, K)`` logits of the batch's crops. ``info``
holds per-sample ``index`` (position in the training dataset), ``box`` ((B, 4) crop box ``[x0, y0, x1, y1]``
normalized to [0, 1] in original-image coordinates) and ``flip``. How they are weighed against the labels (alpha,
temperature, KL or soft CE) is the objective's business (``gv3lite.distill.Objective``).

Why a cache: a pretrained teacher at its own resolution runs at ~15-20 img/s on a 2-core CPU, while the student
trains at ~100 img/s at 64 px, so online KD multiplies the cost ~6x. ReLabel runs the teacher once per training image,
keeps its class-logit map *before* global pooling (the classifier applied at every position of the last feature map),
and for any crop pools that map over the crop box with RoIAlign. The student thus gets the teacher's label for the very
crop it sees, at no teacher cost per step. The map is an approximation of running the teacher on the crop; it is exact
for the whole-image box when the head is linear after pooling (pooling commutes with the linear classifier).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from filelock import FileLock
from torchvision.ops import roi_align
from torchvision.transforms.v2 import functional as TF
from tqdm.auto import tqdm

from gv3lite.checkpoint import save_checkpoint
from gv3lite.data import IMAGENET_MEAN, IMAGENET_STD, apply_crop_info, read_image
from gv3lite.soft_labels import SOFT_LABEL_TEACHERS, soft_labels_for
from gv3lite.teacher import FrozenTeacher, create_teacher
from gv3lite.utils import cache_dir

KD_MODES = ("online", "cached")  # teacher on every crop, or its label maps computed once (ReLabel)


# --------------------------------------------------------------------------------------------------------------------
# Images and crops
# --------------------------------------------------------------------------------------------------------------------


def image_paths(dataset) -> list[str]:
    """Image file paths in dataset-index order for an ImageFolder (``.samples``), a ``Subset`` of one (recursively),
    or a list of paths. Raises ``TypeError`` for anything else."""
    if isinstance(dataset, (list, tuple)) and all(isinstance(p, (str, Path)) for p in dataset):
        return [str(p) for p in dataset]
    if isinstance(dataset, torch.utils.data.Subset):
        base = image_paths(dataset.dataset)
        return [base[i] for i in dataset.indices]
    if hasattr(dataset, "samples"):
        return [str(p) for p, _ in dataset.samples]
    if hasattr(dataset, "dataset"):  # thin wrappers that keep the wrapped dataset's indexing
        return image_paths(dataset.dataset)
    raise TypeError(f"cannot list image files of {type(dataset).__name__}; pass an ImageFolder, a Subset of one, "
                    "or a list of paths")


# --------------------------------------------------------------------------------------------------------------------
# Cached dense label maps (ReLabel)
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class TeacherLabelMaps:
    """The teacher's class-logit map for every training image (ReLabel, Yun et al. CVPR 2021).

    ``maps``: (N, K, h, w) float16, one map per dataset index (N images, K dataset classes); ``image_size``: the
    square resolution (px) the whole image was resized to for the teacher pass; ``teacher``: the teacher's id.
    """

    maps: torch.Tensor
    class_names: list[str]
    teacher: str
    image_size: int

    def pool(self, index: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
        """Teacher logits for crops: RoIAlign-average the maps of images ``index`` (B,) over ``box`` (B, 4)
        (normalized ``[x0, y0, x1, y1]``) -> (B, K) float32.

        Uses ``torchvision.ops.roi_align`` with ``output_size=1``, ``aligned=True`` (map cell i covers [i, i+1) in map
        units, so the box is scaled by (w, h)) and adaptive sampling (about one bilinear sample per map cell).
        For the whole-image box the samples fall exactly on the cell centres, so the result is the plain spatial mean
        of the map. A horizontal flip does not change the pooled value (average over the same region), so ``flip`` is
        not needed here.
        """
        maps = self.maps[index.cpu()].float()
        b, _, h, w = maps.shape
        scale = torch.tensor([w, h, w, h], dtype=torch.float32)
        rois = torch.cat([torch.arange(b, dtype=torch.float32).unsqueeze(1), box.float().cpu() * scale], dim=1)
        return roi_align(maps, rois, output_size=1, spatial_scale=1.0, sampling_ratio=-1, aligned=True).view(b, -1)


def label_maps_key(teacher: FrozenTeacher, paths: list[str], class_names: list[str], image_size: int) -> str:
    """SHA-256 (hex) of what the label maps depend on: the teacher's name and weights (``FrozenTeacher.weights_sha256``,
    so a changed teacher never reads another teacher's maps), the dataset root and image list, the images' sizes and
    modification times (`images_fingerprint`: an image replaced in place changes it), classes and resolution."""
    root = os.path.commonpath([os.path.abspath(p) for p in paths]) if paths else ""
    key = json.dumps({"teacher": teacher.name, "weights": teacher.weights_sha256(), "root": root,
                      "paths": [os.path.abspath(p) for p in paths], "images": images_fingerprint(paths),
                      "classes": list(class_names), "image_size": image_size, "format": 2})
    return hashlib.sha256(key.encode()).hexdigest()


def label_maps_cache_file(teacher: FrozenTeacher, paths: list[str], class_names: list[str], image_size: int,
                          cache_root: str | Path | None = None) -> Path:
    """Where the label maps for `label_maps_key` live on disk: ``<cache>/label_maps/<teacher>-<size>px-<hash>.pt``
    with ``<cache>`` = ``cache_root`` or ``gv3lite.utils.cache_dir()`` (never the repository)."""
    cache_root = cache_dir() if cache_root is None else cache_root
    digest = label_maps_key(teacher, paths, class_names, image_size)[:16]
    stem = teacher.name.split(":")[0].replace("/", "_")
    return Path(cache_root).expanduser() / "label_maps" / f"{stem}-{image_size}px-{digest}.pt"


def build_label_maps(teacher: FrozenTeacher, dataset, class_names: list[str] | None = None,
                     image_size: int | None = None, batch_size: int = 32, cache_root: str | Path | None = None,
                     use_cache: bool = True, progress: bool = False) -> TeacherLabelMaps:
    """Run the teacher once per training image and keep its dense logit maps (float16), cached on disk.

    Each whole image is resized to (image_size, image_size) (default: the teacher's native size, else 224) and
    ``teacher.dense_logits`` gives a (K, h, w) map; all maps are stacked in dataset-index order. A cache file
    (``label_maps_cache_file``) is reused across runs when teacher, image list and contents, classes and resolution
    match, and is validated on load (`read_label_maps`): a broken or mismatching file is rebuilt with a notice.

    Args: dataset: ImageFolder / Subset / list of paths (see ``image_paths``); class_names: the dataset's classes
    (default ``dataset.classes``). Returns ``TeacherLabelMaps``. Raises ``ValueError`` for an empty dataset and
    ``FloatingPointError`` naming an image when the teacher's outputs are not finite.
    """
    paths = image_paths(dataset)
    if not paths:
        raise ValueError("the dataset has no images; nothing to cache")
    if class_names is None:
        class_names = dataset_classes(dataset)
    size = image_size or teacher.input_size or 224
    if not use_cache:
        return TeacherLabelMaps(_teacher_pass(teacher, paths, size, batch_size, progress), list(class_names),
                                teacher.name, size)
    key, file = label_maps_key(teacher, paths, class_names, size), label_maps_cache_file(teacher, paths, class_names,
                                                                                          size, cache_root)
    file.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(file) + ".lock"):  # two processes at once: the second waits for the first's pass, then reads it
        maps = read_label_maps(file, len(paths), class_names, size, key) if file.is_file() else None
        if maps is None:
            maps = _teacher_pass(teacher, paths, size, batch_size, progress)
            save_checkpoint({"maps": maps, "teacher": teacher.name, "image_size": size, "classes": list(class_names),
                             "key": key}, file)  # atomic: a killed run never leaves a half-written cache
    return TeacherLabelMaps(maps, list(class_names), teacher.name, size)


def _teacher_pass(teacher: FrozenTeacher, paths: list[str], size: int, batch_size: int, progress: bool) -> torch.Tensor:
    """The (N, K, h, w) float16 dense logit maps of the images ``paths`` resized to ``size`` px. Raises
    ``FloatingPointError`` naming an image when the teacher's outputs are not finite."""
    chunks = []
    batches = range(0, len(paths), batch_size)
    if progress:
        batches = tqdm(batches, desc=f"teacher label maps ({teacher.name.split(':')[0]}, {size}px)", unit="batch")
    for start in batches:
        images = [TF.resize(read_image(p), [size, size], antialias=True) for p in paths[start:start + batch_size]]
        x = teacher.normalize_unit(torch.stack(images).float() / 255.0)
        chunks.append(teacher.dense_logits(x).half())
    maps = torch.cat(chunks)
    bad = (~torch.isfinite(maps.float()).flatten(1).all(1)).nonzero().flatten().tolist()
    if bad:
        raise FloatingPointError(f"teacher {teacher.name} gives non-finite outputs (NaN/inf) for {len(bad)} images, "
                                 f"e.g. {paths[bad[0]]!r} (float16 overflow or broken teacher weights); check the "
                                 "teacher checkpoint or use another teacher")
    return maps


def images_fingerprint(paths: list[str]) -> str:
    """SHA-256 over every image file's size and modification time (ns): changes when an image is replaced, edited
    or touched. Raises ``FileNotFoundError`` naming a missing file."""
    h = hashlib.sha256()
    for p in paths:
        st = os.stat(p)
        h.update(f"{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()


def read_label_maps(file: Path, num_images: int, class_names: list[str], image_size: int,
                    key: str | None = None) -> torch.Tensor | None:
    """The (N, K, h, w) maps of a cache file, or None -- after a one-line notice on stderr naming the file and the
    reason -- when the file cannot be read (truncated, empty, garbage) or does not fit: N != ``num_images``,
    K != ``len(class_names)``, other classes or resolution, another `label_maps_key` than ``key`` (a file copied
    from another cache entry), not floating point, or non-finite values. The caller then rebuilds it (and overwrites
    the file)."""
    try:
        saved = torch.load(file, map_location="cpu", weights_only=True)
        maps = saved["maps"] if isinstance(saved, dict) else None
    except Exception as err:  # torch raises EOFError, RuntimeError, UnpicklingError ... for broken files
        first_line = (str(err).strip().splitlines() or [""])[0][:120]  # torch's messages run over many lines
        return _stale_cache(file, f"is unreadable ({type(err).__name__}: {first_line})")
    k = len(class_names)
    if not isinstance(maps, torch.Tensor) or maps.ndim != 4 or not maps.is_floating_point():
        return _stale_cache(file, "holds no (N, K, h, w) float maps")
    if tuple(maps.shape[:2]) != (num_images, k):
        return _stale_cache(file, f"holds maps for {maps.shape[0]} images x {maps.shape[1]} classes, the dataset has "
                                  f"{num_images} x {k}")
    if saved.get("classes") != list(class_names) or saved.get("image_size") != image_size:
        return _stale_cache(file, "was made for other classes or another resolution")
    if not bool(torch.isfinite(maps).all()):
        return _stale_cache(file, "holds non-finite values (NaN/inf)")
    if key is not None and saved.get("key") != key:
        return _stale_cache(file, "was made for another teacher or other images (its key differs)")
    return maps


def _stale_cache(file: Path, reason: str) -> None:
    print(f"gv3lite: teacher cache {file} {reason}; rebuilding it", file=sys.stderr, flush=True)
    return None


# --------------------------------------------------------------------------------------------------------------------
# Teacher-output suppliers the trainer calls: teacher_logits(images, info) -> (B, K)
# --------------------------------------------------------------------------------------------------------------------


def _info_tensors(info) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if info is None or any(k not in info for k in ("index", "box")):
        raise KeyError("KD needs the batch's crop info (info['index'], info['box']); build the training set with "
                       "return_crop_info=True (gv3lite.data.ImageFolderDataset)")
    index = torch.as_tensor(info["index"]).long().view(-1).cpu()
    box = torch.as_tensor(info["box"]).float().view(-1, 4).cpu()
    flip = torch.as_tensor(info.get("flip", torch.zeros_like(index))).bool().view(-1).cpu()
    return index, box, flip


class CachedKD:
    """Teacher outputs from cached label maps: the teacher's logits for the student's crop are pooled from the map
    (``TeacherLabelMaps.pool``), so a training step costs no teacher forward pass.

    ``teacher_logits(images, info) -> (B, K)`` (``images`` unused here; ``info`` as in the module docstring).
    """

    def __init__(self, label_maps: TeacherLabelMaps):
        self.label_maps = label_maps

    def teacher_logits(self, images: torch.Tensor | None, info) -> torch.Tensor:
        """(B, K) teacher logits for the batch's crops."""
        index, box, _ = _info_tensors(info)
        return self.label_maps.pool(index, box)


class OnlineKD:
    """Teacher outputs with the teacher run on every crop during training (the expensive reference path; the same
    ``teacher_logits`` as ``CachedKD``).

    With ``recrop=True`` (default) each sample's original image file is re-read and cut by ``info['box']`` (mirrored
    if ``info['flip']``) at the teacher's own resolution (``image_size``, default ``teacher.input_size``), so the
    teacher sees the student's crop at full detail. With ``recrop=False`` the student's input batch is bilinearly
    resized up to that size instead (no file reads, but the teacher then sees the student's low-resolution pixels).
    Raises ``ValueError`` for ``recrop=True`` without the training dataset.
    """

    def __init__(self, teacher: FrozenTeacher, dataset=None, image_size: int | None = None, recrop: bool = True):
        if recrop and dataset is None:
            raise ValueError("OnlineKD(recrop=True) needs the training dataset to re-read the original images")
        self.teacher, self.recrop = teacher, recrop
        self.paths = image_paths(dataset) if recrop else None
        self.image_size = image_size or teacher.input_size or 224

    def teacher_logits(self, images: torch.Tensor | None, info) -> torch.Tensor:
        """(B, K) teacher logits for the batch's crops (``images`` (B, 3, H, W) are used with ``recrop=False``)."""
        device = next(self.teacher.parameters()).device
        if not self.recrop:
            x = F.interpolate(images.to(device), size=(self.image_size, self.image_size), mode="bilinear",
                              align_corners=False)
            return self.teacher(x)
        index, box, flip = _info_tensors(info)
        crops = [apply_crop_info(read_image(self.paths[i]), b, bool(f), self.image_size)
                 for i, b, f in zip(index.tolist(), box, flip)]
        return self.teacher(self.teacher.normalize_unit(torch.stack(crops).float().to(device) / 255.0))


def dataset_classes(dataset) -> list[str]:
    """The class names (``.classes``) of a dataset or of the dataset a ``Subset``/wrapper holds."""
    base = dataset
    while not hasattr(base, "classes") and hasattr(base, "dataset"):
        base = base.dataset
    if not hasattr(base, "classes"):
        raise TypeError(f"{type(dataset).__name__} has no .classes; pass class_names explicitly")
    return list(base.classes)


def check_kd_mode(mode) -> None:
    """Raise ``ValueError`` listing ``KD_MODES`` when ``mode`` is not one of them."""
    if mode not in KD_MODES:
        raise ValueError(f"unknown KD mode {mode!r}; choose one of {list(KD_MODES)}")


def make_kd(teacher: str, train_dataset, mode: str = "cached", device="cpu", cache_root=None,
            progress: bool = True) -> CachedKD | OnlineKD:
    """The teacher-output supplier (``CachedKD`` or ``OnlineKD``) of a teacher name / checkpoint path for the
    training set.

    ``teacher``: see ``gv3lite.teacher.create_teacher``, or a same-data teacher published as soft labels
    (``gv3lite.soft_labels.SOFT_LABEL_TEACHERS``: cached mode only, checked by ``soft_labels_for``); ``mode``: one of ``KD_MODES``, ``'cached'`` (build or load
    the label maps once, then no teacher cost per step) or ``'online'`` (teacher on every re-cropped crop). The
    student's input is assumed ImageNet-normalized (``gv3lite.data``). Raises ``ValueError`` for an unknown mode.
    """
    check_kd_mode(mode)
    classes = dataset_classes(train_dataset)
    if teacher in SOFT_LABEL_TEACHERS:  # published soft labels (gv3lite.soft_labels): no teacher network to run
        if mode != "cached":
            raise ValueError(f"teacher {teacher!r} is published as soft labels only; use kd_mode='cached'")
        saved = soft_labels_for(teacher, image_paths(train_dataset), classes)
        return CachedKD(TeacherLabelMaps(saved["maps"], classes, saved["teacher"], saved["image_size"]))
    frozen = create_teacher(teacher, classes, student_mean=IMAGENET_MEAN, student_std=IMAGENET_STD)
    if mode == "online":
        return OnlineKD(frozen.to(device), train_dataset)
    return CachedKD(build_label_maps(frozen, train_dataset, class_names=classes, cache_root=cache_root,
                                     progress=progress))
