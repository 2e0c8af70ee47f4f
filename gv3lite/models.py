"""The model registry: every name ``gv3lite.create_model`` builds, and ``list_models``.

Owns: the names and their builders -- the paper's ``ghostnetv3_050/100/130/160`` (``gv3lite.ghostnetv3``), and
``mobilenetv2_{050,100}``, ``shufflenetv2_{050,100}`` (torchvision, ``weights=None``) and ``ghostnetv2_{050,100,130,160}``,
each plain or as ``*_rep`` with GhostNetV3's re-parameterizable branches (``gv3lite.add_branches``) --,
``check_model_name``, ``create_model_from_config`` (a model from a recipe's or a checkpoint's model fields) and
``build_model`` (the train-form model of a recipe).
"""
from __future__ import annotations

import functools
from collections.abc import Mapping

import torch.nn as nn
import torch.nn.functional as F
import torchvision

from gv3lite.add_branches import add_rep_branches
from gv3lite.checkpoint import load_checkpoint
from gv3lite.ghostnetv3 import MODEL_WIDTHS, GhostNetV3
from gv3lite.reparam import check_branch_options


def _dropout_before(module, args, p):
    """Forward pre-hook: dropout with probability ``p`` on the input of ``module`` (train mode only)."""
    return (F.dropout(args[0], p=p, training=module.training),)


def _mobilenetv2(width):
    def build(num_classes, drop_rate):
        return torchvision.models.mobilenet_v2(weights=None, num_classes=num_classes, width_mult=width,
                                               dropout=drop_rate)
    return build


def _shufflenetv2(constructor):
    def build(num_classes, drop_rate):
        model = constructor(weights=None, num_classes=num_classes)
        if drop_rate > 0:  # torchvision's ShuffleNetV2 has no dropout: add it before the classifier, as a hook
            model.fc.register_forward_pre_hook(functools.partial(_dropout_before, p=drop_rate))
        return model
    return build


# name -> (builder(num_classes, drop_rate) of the plain torchvision model, default drop_rate)
_TORCHVISION = {
    "mobilenetv2_050": (_mobilenetv2(0.5), 0.2),
    "mobilenetv2_100": (_mobilenetv2(1.0), 0.2),
    "shufflenetv2_050": (_shufflenetv2(torchvision.models.shufflenet_v2_x0_5), 0.0),
    "shufflenetv2_100": (_shufflenetv2(torchvision.models.shufflenet_v2_x1_0), 0.0),
}
_GHOSTNETV2 = {f"ghostnetv2_{name[-3:]}": width for name, width in MODEL_WIDTHS.items()}
_PLAIN_NAMES = [*_TORCHVISION, *_GHOSTNETV2]

# Every accepted name -> default (num_conv_branches, use_scale_branch, use_identity_branch).
MODEL_BUILDERS = {**{n: (1, False, False) for n in _PLAIN_NAMES}, **{f"{n}_rep": (3, True, True) for n in _PLAIN_NAMES}}


def _build_other(name, num_classes=1000, deploy=False, in_chans=3, drop_rate=None, num_conv_branches=None,
                 use_scale_branch=None, use_identity_branch=None):
    """Build ``mobilenetv2_{050,100}``, ``shufflenetv2_{050,100}`` or ``ghostnetv2_{050,100,130,160}``
    (width multiplier x100), plain or with branches. Called by `create_model`.

    Naming scheme: the name fixes architecture and width; the three branch switches (the same keywords as
    ``ghostnetv3_*``) fix the training-time branches. A plain name defaults to ``(1, False, False)``, the unmodified
    model (torchvision with ``weights=None``; for GhostNetV2, GhostNetV3 without branches); a ``*_rep`` name only
    changes the defaults to the paper's ``(3, True, True)`` (the ``add_rep_branches`` form). A ``Recipe`` always
    passes its switches, so there ``mobilenetv2_100`` and ``mobilenetv2_100_rep`` build the same model.
    ``deploy=True`` builds the deploy architecture, i.e. that of ``reparameterize(create_model(name))``: the plain
    torchvision model, or the fused GhostNetV3 (``GhostNetV3(width, deploy=True)``).

    Args:
        name: one of ``MODEL_BUILDERS``. num_classes: classifier outputs (>= 1; 0 only for GhostNetV2).
        deploy: see above. in_chans: input channels (torchvision models: 3 only).
        drop_rate: dropout before the classifier (default 0.2; 0.0 for ShuffleNetV2, which has none in
            torchvision -- a positive value adds it as a forward pre-hook on ``fc``).
        num_conv_branches, use_scale_branch, use_identity_branch: None = the name's default.

    Returns:
        ``nn.Module`` mapping (B, in_chans, H, W) to (B, num_classes).

    Raises:
        ValueError: unknown name (lists the valid ones) or an invalid value.
    """
    if name not in MODEL_BUILDERS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_BUILDERS)}")
    defaults = MODEL_BUILDERS[name]
    switches = [default if value is None else value for value, default in
                zip((num_conv_branches, use_scale_branch, use_identity_branch), defaults)]
    check_branch_options(*switches)
    plain = name.removesuffix("_rep")
    if plain in _GHOSTNETV2:
        drop_rate = 0.2 if drop_rate is None else drop_rate
        if deploy:
            return GhostNetV3(_GHOSTNETV2[plain], num_classes, in_chans, drop_rate, deploy=True)
        model = GhostNetV3(_GHOSTNETV2[plain], num_classes, in_chans, drop_rate, num_conv_branches=1,
                           use_scale_branch=False, use_identity_branch=False)
    else:
        build, default_drop = _TORCHVISION[plain]
        drop_rate = default_drop if drop_rate is None else drop_rate
        if in_chans != 3:
            raise ValueError(f"{name} (torchvision) takes 3 input channels, got in_chans={in_chans!r}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be an int >= 1 for {name}, got {num_classes!r}")
        if not isinstance(drop_rate, (int, float)) or not 0 <= drop_rate < 1:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
        model = build(num_classes, drop_rate)
        if deploy:
            return model
    if tuple(switches) == (1, False, False):
        return model
    return add_rep_branches(model, *switches, inplace=True).model


def list_models() -> list[str]:
    """Every model name `create_model` accepts: timm's ``ghostnetv3_050/100/130/160``, then the other
    architectures (MobileNetV2, ShuffleNetV2, GhostNetV2; plain and ``*_rep``)."""
    return list(MODEL_WIDTHS) + list(MODEL_BUILDERS)


def check_model_name(name) -> None:
    """Raise ``ValueError`` listing the valid names when ``name`` is not one of `list_models`."""
    if name not in list_models():
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")


_MODEL_KWARGS = ("in_chans", "drop_rate", "num_conv_branches", "use_scale_branch", "use_identity_branch")


def create_model(name: str, num_classes: int = 1000, deploy: bool = False, checkpoint_path=None,
                 **kwargs) -> nn.Module:
    """Build a registered model by name, optionally loading local weights.

    Args:
        name: one of ``list_models()``.
        num_classes: classifier outputs (output shape (B, num_classes)).
        deploy: build the fused form directly (load deploy checkpoints into it).
        checkpoint_path: optional local checkpoint, loaded strictly by ``gv3lite.checkpoint.load_checkpoint``
            (EMA weights when present).
        **kwargs: ``in_chans``, ``drop_rate`` (0.2), ``num_conv_branches`` (3), ``use_scale_branch`` (True),
            ``use_identity_branch`` (True); see ``GhostNetV3`` (and ``_build_other`` for the other names).

    Raises:
        ValueError: unknown name (lists the valid ones), unknown keyword, or an invalid value.
    """
    check_model_name(name)
    unknown = sorted(set(kwargs) - set(_MODEL_KWARGS))
    if unknown:
        raise ValueError(f"unknown keyword argument(s) {unknown} for {name}; accepted: "
                         f"num_classes, deploy, checkpoint_path, {', '.join(_MODEL_KWARGS)}")
    model = (_build_other(name, num_classes, deploy, **kwargs) if name in MODEL_BUILDERS else
             GhostNetV3(MODEL_WIDTHS[name], num_classes=num_classes, deploy=deploy, **kwargs))
    if checkpoint_path is not None:
        load_checkpoint(model, checkpoint_path)
    return model


CONFIG_FIELDS = ("num_conv_branches", "use_scale_branch", "use_identity_branch", "drop_rate")


def create_model_from_config(config: Mapping, num_classes: int) -> nn.Module:
    """The train-form model ``config["model"]`` with the branch switches and ``drop_rate`` of ``config`` (a
    ``gv3lite.recipe.Recipe`` as a dict, e.g. the ``recipe`` entry of a trainer checkpoint). Raises ``KeyError``
    for a missing field and what `create_model` raises."""
    missing = [k for k in ("model", *CONFIG_FIELDS) if k not in config]
    if missing:
        raise KeyError(f"model config lacks {missing}; it needs 'model' and {list(CONFIG_FIELDS)}")
    return create_model(config["model"], num_classes=num_classes, **{k: config[k] for k in CONFIG_FIELDS})


def build_model(recipe, num_classes: int) -> nn.Module:
    """The train-form model of a recipe: `create_model_from_config` of ``recipe.to_dict()`` (a
    ``gv3lite.recipe.Recipe``) or of a mapping with the same fields (``model``, branch switches, ``drop_rate``)."""
    return create_model_from_config(recipe.to_dict() if hasattr(recipe, "to_dict") else recipe, num_classes)


__all__ = ["MODEL_BUILDERS", "MODEL_WIDTHS", "build_model", "check_model_name", "create_model",
           "create_model_from_config", "list_models"]
