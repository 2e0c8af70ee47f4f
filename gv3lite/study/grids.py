"""The study's one-factor grids: the paper's ablation sections (arXiv 2404.11202, Sec. 4) as cells.

Owns `Cell`, `GRIDS` (grid -> cells; each cell is a preset of ``gv3lite.recipe.PRESETS`` plus a few changed fields,
and the budgets it runs in; the first cell of a grid is its baseline; cell names are the contract with
``gv3lite/paper_results.csv``), the budget sets `SMOKE` / `QUICK` / `FULL`, `PLAIN` (one plain conv, no branches) and
`paper_key` (the paper's name of a cell).
"""
from __future__ import annotations

from dataclasses import dataclass, field

SMOKE, QUICK, FULL = {"smoke", "quick", "medium", "full"}, {"quick", "medium", "full"}, {"full"}
PLAIN = dict(num_conv_branches=1, use_scale_branch=False, use_identity_branch=False)


@dataclass(frozen=True)
class Cell:
    """One cell of a grid: ``preset`` with ``changes``, run under the budgets in ``budgets``."""
    name: str
    preset: str = "ghostnetv3"
    changes: dict = field(default_factory=dict)
    budgets: frozenset = frozenset(FULL)
    model: str | None = None  # overrides the budget's model (architectures grid)


def _cells(*cells) -> list[Cell]:
    return [Cell(c[0], c[1], c[2], frozenset(c[3]), *(c[4:] or [None])) for c in cells]


# grid -> cells (the first is the baseline). Columns: cell name, preset, changed fields, budgets[, model].
GRIDS = {
    "recipe": _cells(  # paper Sec. 4 overall: conventional recipe vs the GhostNetV3 recipe
        ("conventional", "conventional", {}, SMOKE),
        ("ghostnetv3", "ghostnetv3", {}, SMOKE)),
    "reparam": _cells(  # paper Sec. 4.1: structural re-parameterization
        ("plain", "ghostnetv3", PLAIN, SMOKE),
        ("branches", "ghostnetv3", dict(num_conv_branches=3, use_scale_branch=False, use_identity_branch=False), FULL),
        ("scale_branch", "ghostnetv3", dict(num_conv_branches=1, use_scale_branch=True, use_identity_branch=False), FULL),
        ("n2", "ghostnetv3", dict(num_conv_branches=2), FULL),
        ("full", "ghostnetv3", {}, SMOKE),
        ("n4", "ghostnetv3", dict(num_conv_branches=4), FULL)),
    "kd": _cells(  # paper Sec. 4.2: knowledge distillation (KL * T^2 at T = 4, see recipe.PRESET_NOTES); the teacher
        # is the preset's same-data teacher (imagenette_same_data); teacher_lite2 is the outside-data variant
        # (ImageNet-pretrained: 1.28 M images, 3,791 of the 3,925 val images among them)
        ("none", "ghostnetv3", dict(teacher=None), SMOKE),
        ("teacher", "ghostnetv3", {}, SMOKE),
        ("temperature1", "ghostnetv3", dict(kd_temperature=1.0), FULL),
        ("teacher_lite2", "ghostnetv3", dict(teacher="efficientnet_lite2"), FULL)),
    "kd_control": _cells(  # does KD carry the teacher's knowledge, or only softer targets? Label smoothing 0.5 gives
        # a target whose true-class mass (0.55) matches the KD cell's average target with the same-data teacher at
        # T = 4 (0.5 * 0.91 + 0.5 * 0.198 = 0.554: at T = 4 its target is nearly uniform, mean entropy 2.23 of ln 10 =
        # 2.30 nats; results/kd_targets/imagenette_same_data.csv, benchmarks/kd_targets.py) without the teacher's
        # ranking of wrong classes. (With the outside-data EfficientNet-Lite0, 0.50 at T = 4, it was 0.3.)
        ("label_smoothing", "ghostnetv3", dict(teacher=None, label_smoothing=0.5), QUICK),
        ("teacher", "ghostnetv3", {}, QUICK)),
    "augment": _cells(  # paper Sec. 4.4: each augmentation added to the GhostNetV3 recipe (KD included: the teacher
        # target of a mixed image is the same mixture of the teacher's distributions, gv3lite.distill.mix_teacher_logits)
        ("basic", "ghostnetv3", {}, QUICK),
        ("mixup", "ghostnetv3", dict(mixup_alpha=0.8), QUICK),
        ("cutmix", "ghostnetv3", dict(cutmix_alpha=1.0), QUICK),
        ("randaugment", "ghostnetv3", dict(auto_augment="randaugment"), FULL),
        ("random_erasing", "ghostnetv3", dict(random_erasing=0.2), FULL)),
    "schedule": _cells(  # paper Sec. 4.3: learning schedule and EMA
        ("no_ema", "ghostnetv3", dict(ema=False), QUICK),
        ("ema", "ghostnetv3", {}, QUICK),
        ("step", "ghostnetv3", dict(sched="step"), FULL),
        ("onecycle", "ghostnetv3", dict(sched="onecycle"), FULL)),
    "architectures": _cells(  # paper: the recipe on other compact models (issue 5); {width} = budget's arch_width
        ("ghostnetv2/conventional", "conventional", {}, SMOKE, "ghostnetv2_{width}"),
        ("ghostnetv2/ghostnetv3", "ghostnetv3", {}, SMOKE, "ghostnetv2_{width}_rep"),
        ("mobilenetv2/conventional", "conventional", {}, SMOKE, "mobilenetv2_{width}"),
        ("mobilenetv2/ghostnetv3", "ghostnetv3", {}, SMOKE, "mobilenetv2_{width}_rep"),
        ("shufflenetv2/conventional", "conventional", {}, SMOKE, "shufflenetv2_{width}"),
        ("shufflenetv2/ghostnetv3", "ghostnetv3", {}, SMOKE, "shufflenetv2_{width}_rep")),
}
# paper_results.csv names the architectures grid's cells conventional / ghostnetv3 and tells models apart by label
# (the paper's numbers are for width x1.0)
ARCH_LABELS = {"ghostnetv2": "GhostNetV2 1.0x", "mobilenetv2": "MobileNetV2 1.0", "shufflenetv2": "ShuffleNetV2 1.0"}


def paper_key(grid: str, cell: str) -> tuple[str, str | None]:
    """``(paper cell, paper model label or None)`` under which ``paper_results.csv`` lists our ``grid``/``cell``."""
    if "/" in cell:
        arch, recipe_name = cell.split("/", 1)
        return recipe_name, ARCH_LABELS.get(arch)
    return cell, None
