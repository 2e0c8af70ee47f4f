"""Parameter and MAC counts (conv + linear multiply-accumulates), and a small summary table.

Owns: ``count_params``, ``count_macs``, ``model_summary``.

Convention (printed as "MACs"): one multiply-accumulate per weight use in ``nn.Conv2d`` and ``nn.Linear`` layers
only, for one image: a conv producing an output of C_out x H' x W' costs ``C_out*H'*W' * (C_in/groups)*kh*kw``, a
linear layer ``out_features * in_features`` per row. Biases, BatchNorm, activations, pooling, the DFC
up-sampling and element-wise ops are not counted. This is the number papers (GhostNet, GhostNetV3) call "FLOPs";
``torch.utils.flop_counter`` reports exactly twice it (2 FLOPs per MAC), fvcore's total adds BN and pooling.
Reference values at 224x224 (``tests/test_ghostnetv3.py``, equal to timm 1.0.31's ``ghostnetv3_*`` of
``timm/models/ghostnet.py``, lines 1017-1043): e.g. ghostnetv3_050 deploy 49.64 M MACs. ``tests/test_ghostnetv3.py`` pins
``count_macs`` to ``torch.utils.flop_counter.FlopCounterMode`` (total / 2).
"""
import pandas as pd
import torch
import torch.nn as nn

from gv3lite.models import create_model, list_models
from gv3lite.reparam import reparameterize


def count_params(model):
    """Number of parameters (trainable or not; buffers such as BN running statistics are not counted)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model, img_size=224, in_chans=3):
    """Conv + linear multiply-accumulates of one forward pass of one image (see the module docstring).

    Args:
        model: any ``nn.Module`` taking (1, in_chans, H, W).
        img_size: int (square) or (H, W).
        in_chans: input channels.

    Returns:
        int MACs for a batch of 1. The model's train/eval flag is restored afterwards.
    """
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    total = 0

    def conv_hook(module, inputs, output):
        nonlocal total
        kh, kw = module.kernel_size
        total += output.numel() * (module.in_channels // module.groups) * kh * kw

    def linear_hook(module, inputs, output):
        nonlocal total
        total += output.numel() * module.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    param = next(model.parameters(), None)
    x = torch.zeros(1, in_chans, h, w, dtype=param.dtype if param is not None else None,
                    device=param.device if param is not None else None)
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return total


def model_summary(names=None, img_size=224, forms=("train", "deploy")):
    """Table of parameters and MACs of registered models, in train and deploy (fused) form.

    Args:
        names: model names (default: all of ``gv3lite.list_models()``).
        img_size: input resolution for the MAC count.
        forms: any of "train", "deploy".

    Returns:
        pandas DataFrame with columns ``name, form, params, macs`` (ints) and ``params_M, macs_M`` (millions,
        rounded to 2 decimals); MACs are conv + linear multiply-accumulates at ``img_size``.
    """
    rows = []
    for name in names or list_models():
        model = create_model(name).eval()
        for form in forms:
            if form not in ("train", "deploy"):
                raise ValueError(f"form must be 'train' or 'deploy', got {form!r}")
            m = reparameterize(model) if form == "deploy" else model
            params, macs = count_params(m), count_macs(m, img_size)
            rows.append(dict(name=name, form=form, params=params, macs=macs,
                             params_M=round(params / 1e6, 2), macs_M=round(macs / 1e6, 2)))
    return pd.DataFrame(rows)


__all__ = ["count_params", "count_macs", "model_summary"]
