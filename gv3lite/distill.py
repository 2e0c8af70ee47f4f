"""Knowledge distillation (KD): the losses, the frozen teacher wrapper, and cached teacher outputs.

Owns:
* the losses: ``kd_kl_loss`` (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network"), the soft-target
  cross-entropy of the released GhostNetV3 ``train.py`` (``soft_target_cross_entropy``), and their mix with the label
  loss (``distillation_loss``);
* ``FrozenTeacher``: a teacher that never trains (no grads, always eval, re-normalizes the student's input);
* cached teacher outputs as dense label maps pooled over the student's crop box (ReLabel, Yun et al. CVPR 2021):
  ``build_label_maps`` / ``TeacherLabelMaps`` and the KD objects the trainer calls, ``CachedKD`` and ``OnlineKD``.

The trainer (``gv3lite.train``) calls a KD object as ``kd(student_logits, images, targets, info)``, which returns
``alpha * KD`` (``kd.alpha`` is the KD weight), and adds ``(1 - alpha) * CE``. ``build_kd(recipe, train_dataset)``
builds it from ``recipe.teacher`` / ``kd_mode`` / ``kd_alpha`` / ``kd_temperature``. ``info`` holds per-sample ``index`` (position in the training dataset),
``box`` ((B, 4) crop box ``[x0, y0, x1, y1]`` normalized to [0, 1] in original-image coordinates) and ``flip``.

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
import math
import numbers
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gv3lite.checkpoint import save_checkpoint
from gv3lite.data import apply_crop_info, read_image

# --------------------------------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------------------------------


def _check_temperature(temperature) -> None:
    """Raise ``ValueError`` unless ``temperature`` is a finite real number > 0 (not a bool, string or tensor)."""
    ok = isinstance(temperature, numbers.Real) and not isinstance(temperature, bool)
    if not (ok and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")


def _check_logits(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> None:
    if student_logits.shape != teacher_logits.shape or student_logits.ndim != 2:
        raise ValueError(f"student and teacher logits must both be (B, K); got {tuple(student_logits.shape)} and "
                         f"{tuple(teacher_logits.shape)} (map the teacher's classes onto the dataset's first)")
    _check_temperature(temperature)


def kd_kl_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Hinton KD term: ``T^2 * KL(p_t || p_s)`` with ``p = softmax(z / T)``, averaged over the batch.

        KD = T^2 / B * sum_b sum_c p_t[b, c] * (log p_t[b, c] - log p_s[b, c])

    Args: student_logits, teacher_logits (B, K) (teacher logits are treated as constants); temperature T > 0.
    Returns a scalar. The T^2 factor keeps the gradient's scale ~independent of T (its gradient w.r.t. the student
    logits is ``T / B * (p_s - p_t)``). Reduction is the *batch mean* of the per-sample KL: ``nn.KLDivLoss``'s
    default ``'mean'`` would also divide by K. Source: Hinton et al. 2015, Sec. 2; timm ``task/distillation.py``.
    Raises ``ValueError`` for mismatched shapes or T <= 0.
    """
    _check_logits(student_logits, teacher_logits, temperature)
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return kl * temperature ** 2


def soft_target_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                              temperature: float = 1.0) -> torch.Tensor:
    """Cross-entropy against the teacher's soft labels: ``-1/B * sum_b sum_c p_t[b, c] * log p_s[b, c]``.

    This is the KD term of the released GhostNetV3 ``train.py`` (there always at T = 1; its ``--temperature`` flag is
    unused). Since ``CE(p_t, p_s) = KL(p_t || p_s) + H(p_t)`` and the teacher entropy ``H(p_t)`` does not depend on the
    student, at T = 1 it has exactly the same gradient w.r.t. the student logits as ``kd_kl_loss``,
    ``(p_s - p_t) / B``; only the value differs, by the batch-mean teacher entropy. No T^2 factor is applied.
    Shapes: (B, K) and (B, K) -> scalar. Raises ``ValueError`` for mismatched shapes or T <= 0.
    """
    _check_logits(student_logits, teacher_logits, temperature)
    p_t = F.softmax(teacher_logits.detach() / temperature, dim=1)
    return -(p_t * F.log_softmax(student_logits / temperature, dim=1)).sum(dim=1).mean()


KD_LOSSES = {"kl": kd_kl_loss, "soft_ce": soft_target_cross_entropy}


def distillation_loss(student_logits: torch.Tensor, targets: torch.Tensor, teacher_logits: torch.Tensor,
                      alpha: float = 0.5, temperature: float = 1.0, label_smoothing: float = 0.0,
                      kd_loss: str = "kl") -> torch.Tensor:
    """The full KD objective ``(1 - alpha) * CE(student, targets) + alpha * KD(student, teacher)``.

    Args: student_logits, teacher_logits (B, K); targets (B,) class indices; alpha in [0, 1] (0 = plain CE,
    1 = teacher only); temperature T > 0; label_smoothing of the CE term; kd_loss ``'kl'`` (``kd_kl_loss``, T^2-scaled)
    or ``'soft_ce'`` (``soft_target_cross_entropy``). Returns a scalar. Raises ``ValueError`` for alpha outside
    [0, 1] or an unknown kd_loss. Source: Hinton et al. 2015 (weighted average of the two objectives).
    """
    _check_kd_args(alpha, temperature, kd_loss)
    ce = F.cross_entropy(student_logits, targets, label_smoothing=label_smoothing)
    if alpha == 0.0:
        return ce
    return (1.0 - alpha) * ce + alpha * KD_LOSSES[kd_loss](student_logits, teacher_logits, temperature)


# --------------------------------------------------------------------------------------------------------------------
# Frozen teacher
# --------------------------------------------------------------------------------------------------------------------


class FrozenTeacher(nn.Module):
    """A teacher that never trains: parameters have ``requires_grad=False``, it stays in eval mode even when a parent
    calls ``.train()``, and it runs under ``torch.no_grad``.

    Args:
        model: a classifier with timm's ``forward_features`` / ``forward_head`` API.
        mean, std: the teacher's input normalization; student_mean, student_std: the student's. Input given in the
            student's normalization is re-normalized to the teacher's when they differ.
        class_index: teacher output indices of the dataset's classes, in dataset order (e.g. ImageNet -> Imagenette),
            or None when the teacher's outputs already are the dataset's classes.
        input_size: the teacher's native resolution in px (None: any); name: an id used in cache keys.

    ``forward(x)``: (B, 3, H, W) student-normalized -> (B, K) logits. ``dense_logits(x)`` -> (B, K, h, w) map.
    """

    def __init__(self, model: nn.Module, mean, std, student_mean, student_std, class_index=None,
                 input_size: int | None = None, name: str = "teacher"):
        super().__init__()
        self.model = model
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("student_mean", torch.tensor(student_mean, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("student_std", torch.tensor(student_std, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)
        self.class_index = None if class_index is None else torch.as_tensor(class_index, dtype=torch.long)
        self.input_size = input_size
        self.name = name
        self.renormalize = not (torch.equal(self.mean, self.student_mean) and torch.equal(self.std, self.student_std))
        self.train(False)

    def train(self, mode: bool = True) -> "FrozenTeacher":
        """Ignore ``mode``: the teacher always stays in eval mode (BN uses running stats, no dropout)."""
        return super().train(False)

    def normalize_unit(self, x01: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images in [0, 1] -> the student's normalization (what ``forward`` expects)."""
        return (x01 - self.student_mean) / self.student_std

    def to_teacher_input(self, x: torch.Tensor) -> torch.Tensor:
        """Student-normalized (B, 3, H, W) -> teacher-normalized (identity when the normalizations agree)."""
        if not self.renormalize:
            return x
        return (x * self.student_std + self.student_mean - self.mean) / self.std

    def _select(self, logits: torch.Tensor) -> torch.Tensor:
        return logits if self.class_index is None else logits.index_select(1, self.class_index.to(logits.device))

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._select(self.model(self.to_teacher_input(x)).float())

    @torch.no_grad()
    def dense_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class-logit map before global pooling: (B, 3, H, W) -> (B, K, h, w) (h = w = 7 at 224 px for a stride-32
        net). The model's own head is applied at every position of ``forward_features`` (each position is fed as a
        1x1 map, so the head's global pool is the identity). For a head that is linear after pooling (EfficientNet:
        pool -> Linear) the spatial mean of this map equals ``forward(x)`` exactly; for GhostNetV3's head
        (pool -> 1x1 conv -> ReLU -> Linear) it is an approximation. Raises ``TypeError`` for a model without
        ``forward_features`` / ``forward_head``.
        """
        if not (hasattr(self.model, "forward_features") and hasattr(self.model, "forward_head")):
            raise TypeError(f"{type(self.model).__name__} has no forward_features/forward_head; dense label maps need "
                            "timm's feature/head API")
        feats = self.model.forward_features(self.to_teacher_input(x))
        b, c, h, w = feats.shape
        per_position = feats.permute(0, 2, 3, 1).reshape(b * h * w, c, 1, 1)
        logits = self._select(self.model.forward_head(per_position).float())  # (B*h*w, K)
        return logits.view(b, h, w, -1).permute(0, 3, 1, 2).contiguous()


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
        from torchvision.ops import roi_align

        maps = self.maps[index.cpu()].float()
        b, _, h, w = maps.shape
        scale = torch.tensor([w, h, w, h], dtype=torch.float32)
        rois = torch.cat([torch.arange(b, dtype=torch.float32).unsqueeze(1), box.float().cpu() * scale], dim=1)
        return roi_align(maps, rois, output_size=1, spatial_scale=1.0, sampling_ratio=-1, aligned=True).view(b, -1)


def label_maps_key(teacher: FrozenTeacher, paths: list[str], class_names: list[str], image_size: int) -> str:
    """SHA-256 (hex) of what the label maps depend on: the teacher, the dataset root and image list, the images' sizes
    and modification times (`images_fingerprint`: an image replaced in place changes it), classes and resolution."""
    root = os.path.commonpath([os.path.abspath(p) for p in paths]) if paths else ""
    key = json.dumps({"teacher": teacher.name, "root": root, "paths": [os.path.abspath(p) for p in paths],
                      "images": images_fingerprint(paths), "classes": list(class_names), "image_size": image_size,
                      "format": 2})
    return hashlib.sha256(key.encode()).hexdigest()


def label_maps_cache_file(teacher: FrozenTeacher, paths: list[str], class_names: list[str], image_size: int,
                          cache_root: str | Path | None = None) -> Path:
    """Where the label maps for `label_maps_key` live on disk: ``<cache>/label_maps/<teacher>-<size>px-<hash>.pt``
    with ``<cache>`` = ``cache_root`` or ``GV3LITE_CACHE`` or ``~/.cache/gv3lite`` (never the repository)."""
    if cache_root is None:
        cache_root = os.environ.get("GV3LITE_CACHE") or Path.home() / ".cache" / "gv3lite"
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
    from torchvision.transforms.v2 import functional as TF

    paths = image_paths(dataset)
    if not paths:
        raise ValueError("the dataset has no images; nothing to cache")
    if class_names is None:
        class_names = dataset_classes(dataset)
    size = image_size or teacher.input_size or 224
    file = label_maps_cache_file(teacher, paths, class_names, size, cache_root)
    if use_cache and file.is_file():
        maps = read_label_maps(file, len(paths), class_names, size, label_maps_key(teacher, paths, class_names, size))
        if maps is not None:
            return TeacherLabelMaps(maps, list(class_names), teacher.name, size)
    chunks = []
    batches = range(0, len(paths), batch_size)
    if progress:
        from tqdm.auto import tqdm
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
    if use_cache:
        save_checkpoint({"maps": maps, "teacher": teacher.name, "image_size": size, "classes": list(class_names),
                         "key": label_maps_key(teacher, paths, class_names, size)},
                        file)  # atomic: a killed run never leaves a half-written cache
    return TeacherLabelMaps(maps, list(class_names), teacher.name, size)


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
# KD objects the trainer calls: kd(student_logits, images, targets, info) -> alpha * KD
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
    """KD from cached teacher label maps: the teacher's logits for the student's crop are pooled from the map
    (``TeacherLabelMaps.pool``), so a training step costs no teacher forward pass.

    ``kd(student_logits (B, K), images, targets, info) -> alpha * KD`` (a scalar, the trainer's protocol, see
    ``gv3lite.train``), KD = ``kd_loss`` at temperature T: ``'kl'`` (``kd_kl_loss``, T^2-scaled) or ``'soft_ce'``
    (``soft_target_cross_entropy``). The trainer adds ``(1 - alpha) * CE``. ``images``/``targets`` are unused.
    """

    def __init__(self, label_maps: TeacherLabelMaps, alpha: float = 0.5, temperature: float = 1.0,
                 kd_loss: str = "kl"):
        _check_kd_args(alpha, temperature, kd_loss)
        self.label_maps, self.alpha, self.temperature, self.kd_loss = label_maps, alpha, temperature, kd_loss

    def teacher_logits(self, images: torch.Tensor | None, info) -> torch.Tensor:
        """(B, K) teacher logits for the batch's crops."""
        index, box, _ = _info_tensors(info)
        return self.label_maps.pool(index, box)

    def __call__(self, student_logits, images, targets, info) -> torch.Tensor:
        teacher_logits = self.teacher_logits(images, info).to(student_logits.device)
        return self.alpha * KD_LOSSES[self.kd_loss](student_logits, teacher_logits, self.temperature)


def _check_kd_args(alpha: float, temperature: float, kd_loss: str) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    _check_temperature(temperature)
    if kd_loss not in KD_LOSSES:
        raise ValueError(f"unknown kd_loss {kd_loss!r}; choose one of {sorted(KD_LOSSES)}")


class OnlineKD(CachedKD):
    """KD with the teacher run on every crop during training (the expensive reference path; same call protocol as
    ``CachedKD``).

    With ``recrop=True`` (default) each sample's original image file is re-read and cut by ``info['box']`` (mirrored
    if ``info['flip']``) at the teacher's own resolution (``image_size``, default ``teacher.input_size``), so the
    teacher sees the student's crop at full detail. With ``recrop=False`` the student's input batch is bilinearly
    resized up to that size instead (no file reads, but the teacher then sees the student's low-resolution pixels).
    """

    def __init__(self, teacher: FrozenTeacher, dataset=None, alpha: float = 0.5, temperature: float = 1.0,
                 kd_loss: str = "kl", image_size: int | None = None, recrop: bool = True):
        _check_kd_args(alpha, temperature, kd_loss)
        if recrop and dataset is None:
            raise ValueError("OnlineKD(recrop=True) needs the training dataset to re-read the original images")
        self.teacher, self.alpha, self.temperature, self.kd_loss = teacher, alpha, temperature, kd_loss
        self.recrop = recrop
        self.paths = image_paths(dataset) if recrop else None
        self.image_size = image_size or teacher.input_size or 224

    def teacher_logits(self, images: torch.Tensor | None, info) -> torch.Tensor:
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


def make_kd(teacher: str, train_dataset, mode: str = "cached", alpha: float = 0.5, temperature: float = 1.0,
            kd_loss: str = "kl", device="cpu", cache_root=None, progress: bool = True) -> CachedKD:
    """Build a KD object (``CachedKD`` or ``OnlineKD``) from a teacher name / checkpoint path and the training set.

    ``teacher``: see ``gv3lite.teachers.create_teacher``; ``mode``: ``'cached'`` (build or load the label maps
    once, then no teacher cost per step) or ``'online'`` (teacher on every re-cropped crop). The student's input is
    assumed ImageNet-normalized (``gv3lite.data``). Raises ``ValueError`` for an unknown mode.
    """
    from gv3lite.teachers import IMAGENET_MEAN, IMAGENET_STD, create_teacher

    if mode not in ("cached", "online"):
        raise ValueError(f"unknown KD mode {mode!r}; choose 'cached' or 'online'")
    _check_kd_args(alpha, temperature, kd_loss)
    classes = dataset_classes(train_dataset)
    frozen = create_teacher(teacher, classes, student_mean=IMAGENET_MEAN, student_std=IMAGENET_STD)
    if mode == "online":
        return OnlineKD(frozen.to(device), train_dataset, alpha=alpha, temperature=temperature, kd_loss=kd_loss)
    maps = build_label_maps(frozen, train_dataset, class_names=classes, cache_root=cache_root, progress=progress)
    return CachedKD(maps, alpha=alpha, temperature=temperature, kd_loss=kd_loss)


def build_kd(recipe, train_dataset, device="cpu", progress: bool = True) -> CachedKD:
    """The trainer's entry point (``gv3lite.train.fit`` calls it when ``recipe.teacher`` is set): ``make_kd`` with
    ``recipe.teacher``, ``recipe.kd_mode``, ``recipe.kd_alpha``, ``recipe.kd_temperature`` and ``recipe.kd_loss``
    (``'kl'`` if the recipe has none); ``progress``: a progress bar while the teacher fills the cache."""
    return make_kd(recipe.teacher, train_dataset, mode=recipe.kd_mode, alpha=recipe.kd_alpha,
                   temperature=recipe.kd_temperature, kd_loss=getattr(recipe, "kd_loss", "kl"), device=device,
                   progress=progress)


# --------------------------------------------------------------------------------------------------------------------
# Small experiment: cached (ReLabel) KD vs online KD vs no KD
# --------------------------------------------------------------------------------------------------------------------


def compare_kd_modes(seeds=(0, 1, 2), modes=("plain", "cached", "online"), teacher: str = "efficientnet_lite0",
                     per_class: int = 25, per_class_val: int = 50, img_size: int = 40, epochs: int = 5,
                     alpha: float = 0.5, temperature: float = 1.0, data_root=None, quiet: bool = True, classes=None,
                     **recipe_kw):
    """Train the same small student with no KD (``'plain'``), cached KD and online KD, for several seeds.

    A class-balanced subset (``per_class`` train / ``per_class_val`` val images per class of ``classes``, default
    all) at ``img_size`` px keeps it small; the subset is the same for every seed (seeds vary initialization and
    batch order); online KD runs the teacher on every crop at its own resolution, so it dominates the cost (about
    ``per_class * len(classes) * epochs`` teacher passes per seed). Returns a ``pandas.DataFrame`` with one row per
    (mode, seed): ``mode``, ``seed``, ``val_top1`` (% after the last epoch), ``train_seconds`` (sum of epoch times).
    The label maps are cached on disk, so their one-off cost is not in ``train_seconds``.
    """
    import pandas as pd

    from gv3lite.data import build_datasets, resolve_data_root
    from gv3lite.recipe import Recipe
    from gv3lite.train import fit

    datasets = build_datasets(resolve_data_root(data_root), img_size, classes=classes,
                              images_per_class_train=per_class, images_per_class_val=per_class_val,
                              return_crop_info=True)
    kds = {m: None if m == "plain" else make_kd(teacher, datasets[0], mode=m, alpha=alpha, temperature=temperature,
                                                 progress=not quiet) for m in modes}
    rows = []
    for seed in seeds:
        for mode in modes:
            recipe = Recipe(img_size=img_size, epochs=epochs, seed=seed, classes=classes, **recipe_kw)
            history = fit(recipe, datasets=datasets, kd=kds[mode], quiet=quiet)
            rows.append({"mode": mode, "seed": seed, "val_top1": float(history["val_top1"].iloc[-1]),
                         "train_seconds": float(history["seconds"].sum())})
            if not quiet:
                print(rows[-1], flush=True)
    return pd.DataFrame(rows)
