"""Knowledge distillation (KD) as a training objective: the KD losses and the one objective the trainer calls.

Owns:
* the KD losses: ``kd_kl_loss`` (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network") and the
  soft-target cross-entropy of the released GhostNetV3 ``train.py`` (``soft_target_cross_entropy``), by name in
  ``KD_LOSSES``;
* ``Objective``: the whole training objective ``(1 - alpha) * CE + alpha * KD`` with its label smoothing, weight
  and temperature, built and checked once from the recipe; it returns the loss with its parts (``LossParts``) and is
  the only loss ``gv3lite.train`` computes (``training_loss`` is one call of it);
* the teacher target of a Mixup/CutMix image (``mix_teacher_logits``).

Where the teacher's logits come from (cached label maps or the teacher run on every crop) is
``gv3lite.teacher_outputs``; the teachers themselves are ``gv3lite.teacher``.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from timm.loss import SoftTargetCrossEntropy

# --------------------------------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------------------------------


def _check_temperature(temperature) -> None:
    """Raise ``ValueError`` unless ``temperature`` is a finite real number > 0 (not a bool, string or tensor)."""
    ok = isinstance(temperature, numbers.Real) and not isinstance(temperature, bool)
    if not (ok and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")


def _check_shapes(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
    if student_logits.shape != teacher_logits.shape or student_logits.ndim != 2:
        raise ValueError(f"student and teacher logits must both be (B, K); got {tuple(student_logits.shape)} and "
                         f"{tuple(teacher_logits.shape)} (map the teacher's classes onto the dataset's first)")


def _check_logits(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> None:
    _check_shapes(student_logits, teacher_logits)
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
    return _kl_term(student_logits, teacher_logits, temperature)


def _kl_term(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """`kd_kl_loss` without the argument checks (the `Objective` checked them once)."""
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
    return _soft_ce_term(student_logits, teacher_logits, temperature)


def _soft_ce_term(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """`soft_target_cross_entropy` without the argument checks (the `Objective` checked them once)."""
    p_t = F.softmax(teacher_logits.detach() / temperature, dim=1)
    return -(p_t * F.log_softmax(student_logits / temperature, dim=1)).sum(dim=1).mean()


KD_LOSSES = {"kl": kd_kl_loss, "soft_ce": soft_target_cross_entropy}
_KD_TERMS = {"kl": _kl_term, "soft_ce": _soft_ce_term}  # the same, unchecked: what `Objective` calls per step


class LossParts(NamedTuple):
    """What `training_loss` returns: the total ``loss`` and its parts ``ce`` and ``kd`` (scalars; ``kd`` None
    without a teacher)."""
    loss: torch.Tensor
    ce: torch.Tensor
    kd: torch.Tensor | None


@dataclass(frozen=True)
class Objective:
    """The training objective, built once (``gv3lite.experiment.build_objective`` from the recipe) and checked once:
    ``loss = (1 - alpha) * CE(student, targets) + alpha * KD(student, teacher)``.

    Fields: ``label_smoothing`` of the CE term, in [0, 1); ``alpha`` in [0, 1] (0 = plain CE, 1 = teacher only);
    ``temperature`` T > 0; ``kd_loss`` a ``KD_LOSSES`` name: ``'kl'`` (``kd_kl_loss``, ``T^2 * KL``) or ``'soft_ce'``
    (``soft_target_cross_entropy``). Raises ``ValueError`` for a field out of range or an unknown ``kd_loss``.

    ``objective(student_logits, targets, teacher_logits=None) -> LossParts(loss, ce, kd)`` is the only loss the
    trainer (``gv3lite.train``) computes: student_logits, teacher_logits (B, K) (``teacher_logits=None``: no KD,
    ``loss = CE``); targets (B,) class indices, or (B, K) soft targets (Mixup/CutMix: then CE is timm's
    ``SoftTargetCrossEntropy`` and the label smoothing is already in the targets). `mix_teacher` gives the teacher's
    target of a Mixup/CutMix batch at this temperature. Source: Hinton et al. 2015, Sec. 2 (weighted average of the
    two objectives); GhostNetV3 paper Sec. 3.3.
    """
    label_smoothing: float = 0.0
    alpha: float = 0.5
    temperature: float = 1.0
    kd_loss: str = "kl"

    def __post_init__(self):
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        _check_kd_args(self.alpha, self.temperature, self.kd_loss)

    def __call__(self, student_logits: torch.Tensor, targets: torch.Tensor,
                 teacher_logits: torch.Tensor | None = None) -> LossParts:
        if targets.ndim == 2:
            ce = SoftTargetCrossEntropy()(student_logits, targets)
        else:
            ce = F.cross_entropy(student_logits, targets, label_smoothing=self.label_smoothing)
        if teacher_logits is None:
            return LossParts(ce, ce, None)
        _check_shapes(student_logits, teacher_logits)
        kd = _KD_TERMS[self.kd_loss](student_logits, teacher_logits, self.temperature)
        return LossParts((1.0 - self.alpha) * ce + self.alpha * kd, ce, kd)

    def mix_teacher(self, teacher_logits: torch.Tensor, lam: float) -> torch.Tensor:
        """`mix_teacher_logits` at this objective's temperature: (B, K) -> (B, K)."""
        return mix_teacher_logits(teacher_logits, lam, self.temperature)


def check_kd_loss(name) -> None:
    """Raise ``ValueError`` listing the choices when ``name`` is not a ``KD_LOSSES`` name."""
    if name not in KD_LOSSES:
        raise ValueError(f"unknown kd_loss {name!r}; choose one of {sorted(KD_LOSSES)}")


def _check_kd_args(alpha: float, temperature: float, kd_loss: str) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    _check_temperature(temperature)
    check_kd_loss(kd_loss)


def training_loss(student_logits: torch.Tensor, targets: torch.Tensor, teacher_logits: torch.Tensor | None = None,
                  alpha: float = 0.5, temperature: float = 1.0, label_smoothing: float = 0.0,
                  kd_loss: str = "kl") -> LossParts:
    """One call of the `Objective` with these fields (see there for shapes, the formula and what it raises)."""
    return Objective(label_smoothing, alpha, temperature, kd_loss)(student_logits, targets, teacher_logits)


def mix_teacher_logits(teacher_logits: torch.Tensor, lam: float, temperature: float) -> torch.Tensor:
    """The teacher's logits for a Mixup/CutMix batch (timm ``Mixup``, batch mode: image b mixed with image B-1-b).

    The target of a mixed image is the same lam-mixture of the two source images' *teacher distributions* that
    Mixup/CutMix uses for their labels: ``p = lam * softmax(z_b / T) + (1 - lam) * softmax(z_{B-1-b} / T)``, with
    CutMix's lam the area share of image b. Why: Mixup/CutMix define a mixed image's label as that mixture of the
    labels; replacing each label by the teacher's distribution keeps the rule, and the teacher's output on the mixed
    image itself is out of reach for cached KD (its label maps are of the unmixed images) and would cost an extra
    teacher pass per step online. (For CutMix, pooling each source's label map over its own region would be closer;
    the area rule matches the labels and treats both KD modes alike.)

    Args: teacher_logits (B, K) of the *unmixed* batch; lam in [0, 1]; temperature T > 0. Returns (B, K) logits
    ``T * log p``, so that ``softmax(result / T) = p``, which is what ``kd_kl_loss`` and
    ``soft_target_cross_entropy`` use. Raises ``ValueError`` for lam outside [0, 1] or T <= 0.
    """
    _check_temperature(temperature)
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam={lam!r}: the Mixup/CutMix weight must lie in [0, 1]")
    p = F.softmax(teacher_logits.detach().float() / temperature, dim=1)
    mixed = lam * p + (1.0 - lam) * p.flip(0)
    return temperature * mixed.clamp_min(torch.finfo(mixed.dtype).tiny).log()
