"""The same-data teacher: a larger network trained by this package on Imagenette ``train/`` minus the tuning split,
published as soft labels (``gv3lite.soft_labels``) by one command.

Owns: the teacher's recipe (`TEACHER_RECIPE`), its training (`train_teacher`: resumable, ``run`` with the
``tuning="exclude"`` images), the choice of its weights (raw or EMA, on the tuning split, never on val), its card
(recipe, top-1 on val and on the tuning split, training wall and CPU time, images' content hash, command, commit and
code fingerprint read at the start of the call) and the published file (`publish`), and the command::

    python -m gv3lite.same_data_teacher [--data ROOT] [--work runs/same_data_teacher] [--epochs N]

which trains (or resumes) the teacher, writes ``gv3lite/artifacts/imagenette_same_data_teacher.pt`` (its dense
logit maps on every training image, ~1 MB) and ``results/same_data_teacher/card.json``. ``make main`` does not pay
for it: the study's KD reads the published file (``teacher="imagenette_same_data"``), which refuses other classes,
images the teacher did not train on and changed images (`gv3lite.soft_labels.soft_labels_for`).

Why (issue 22): the paper's teacher and student share one training set; the ImageNet-pretrained EfficientNet-Lite
teachers bring 1.28 M outside images, including 3,791 of our 3,925 val images.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gv3lite.checkpoint import read_training_checkpoint
from gv3lite.data import IMAGENET_MEAN, IMAGENET_STD, build_datasets, resolve_data_root
from gv3lite.teacher_outputs import build_label_maps, image_paths
from gv3lite.experiment import build_model, run
from gv3lite.fingerprint import code_fingerprint
from gv3lite.posthoc import evaluate_tta
from gv3lite.recipe import Recipe
from gv3lite.soft_labels import REBUILD, SOFT_LABEL_TEACHERS, file_hashes, save_soft_labels
from gv3lite.teacher import FrozenTeacher
from gv3lite.utils import git_commit, repo_root, write_atomic

# MobileNetV2 1.0x: ~7x the MACs of GhostNetV3 0.5x, yet ~1.7x cheaper per training image on one CPU thread at 48 px
# (measured 5.5 vs 9.5 ms), so it is the larger network we can afford. At the study's resolution (48 px) on all
# 8,469 non-tuning train images; AdamW + one-cycle as the package default, EMA decay 1 - 10 / steps.
TEACHER_RECIPE = dict(model="mobilenetv2_100", img_size=48, images_per_class_train=None, epochs=24, batch_size=64,
                      lr=4e-3, warmup_epochs=1.0, ema=True, ema_decay=0.997, teacher=None, eval_every=24)
NAME = "imagenette_same_data"


def teacher_recipe(**changes) -> Recipe:
    """`TEACHER_RECIPE` (on the package defaults, ``gv3lite.recipe.Recipe``) with ``changes``; with ``epochs``
    changed, ``eval_every`` follows (one val pass, at the end)."""
    fields = {**TEACHER_RECIPE, **changes}
    if "epochs" in changes and "eval_every" not in changes:
        fields["eval_every"] = fields["epochs"]
    return Recipe(**fields)


def train_teacher(recipe: Recipe, data, work: Path) -> tuple[dict, list]:
    """Train ``recipe`` on ``train/`` minus the tuning split into ``work`` (continues from ``work/last.pth``);
    returns (the last training checkpoint, datasets (train, val, tuning)) and adds ``wall_seconds`` /
    ``cpu_seconds`` of this call to ``work/cost.json`` (summed over sittings)."""
    train, val = build_datasets(data, recipe.img_size, images_per_class_train=recipe.images_per_class_train,
                                seed=recipe.data_seed, scale=(recipe.min_crop_scale, 1.0), tuning="exclude")
    tuning = build_datasets(data, recipe.img_size, seed=recipe.data_seed, tuning="only")[1]
    t0, c0 = time.perf_counter(), time.process_time()
    run(recipe, data, out_dir=work, resume=(work / "last.pth").is_file(), datasets=(train, val))
    cost_file = work / "cost.json"
    cost = json.loads(cost_file.read_text()) if cost_file.is_file() else {"wall_seconds": 0.0, "cpu_seconds": 0.0}
    cost = {"wall_seconds": cost["wall_seconds"] + time.perf_counter() - t0,
            "cpu_seconds": cost["cpu_seconds"] + time.process_time() - c0}
    write_atomic(cost_file, json.dumps(cost) + "\n")
    return read_training_checkpoint(work / "last.pth"), [train, val, tuning]


def choose_weights(recipe: Recipe, ckpt: dict, tuning) -> tuple[torch.nn.Module, str, dict]:
    """The raw or EMA weights of ``ckpt``, whichever has the higher top-1 on the tuning split: (model, which,
    tuning top-1 of both)."""
    scores, models = {}, {}
    for which in ("model", "model_ema"):
        if ckpt.get(which) is None:
            continue
        models[which] = build_model(recipe, len(ckpt["classes"]))
        models[which].load_state_dict(ckpt[which])
        scores[which] = evaluate_tta(models[which], tuning)["center"]
    best = max(scores, key=scores.get)
    return models[best].eval(), best, scores


class FeaturesHead(nn.Module):
    """timm's ``forward_features`` / ``forward_head`` API (what ``FrozenTeacher.dense_logits`` needs) over a
    torchvision classifier with ``features`` -> global average pool -> ``classifier`` (MobileNetV2): the head is
    linear after pooling, so the spatial mean of the dense logits equals ``forward`` exactly."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.classifier(torch.flatten(F.adaptive_avg_pool2d(features, 1), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def publish(recipe: Recipe, model: torch.nn.Module, train, card: dict, file: Path) -> None:
    """Write the teacher's dense logit maps on every image of ``train`` (whole image at ``recipe.img_size`` px,
    ``gv3lite.teacher_outputs.build_label_maps``) with its ``card`` to ``file``."""
    weights = hashlib.sha256(b"".join(v.detach().cpu().numpy().tobytes() for v in model.state_dict().values()))
    if not hasattr(model, "forward_features"):
        model = FeaturesHead(model)
    frozen = FrozenTeacher(model, IMAGENET_MEAN, IMAGENET_STD, IMAGENET_MEAN, IMAGENET_STD, input_size=recipe.img_size,
                           name=f"{recipe.model}:same-data:weights={weights.hexdigest()[:16]}")
    maps = build_label_maps(frozen, train, class_names=train.classes, image_size=recipe.img_size, use_cache=False)
    save_soft_labels(file, maps.maps, image_paths(train), train.classes, recipe.img_size, frozen.name, card)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gv3lite.same_data_teacher", description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="ImageFolder root (default: GV3LITE_DATA or the repo's data)")
    parser.add_argument("--work", default="runs/same_data_teacher", help="the teacher's run folder (resumable)")
    parser.add_argument("--epochs", type=int, default=TEACHER_RECIPE["epochs"])
    parser.add_argument("--out", default=str(SOFT_LABEL_TEACHERS[NAME]), help="the soft-label file to write")
    parser.add_argument("--card", default=str(repo_root() / "results" / "same_data_teacher"),
                        help="folder of card.json (the teacher's recipe, top-1 and cost)")
    args = parser.parse_args(argv)
    command = "python -m gv3lite.same_data_teacher " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    commit, fingerprint = git_commit(), code_fingerprint()  # of the code this call runs, read at its start
    try:
        data, recipe = resolve_data_root(args.data), teacher_recipe(epochs=args.epochs)
        ckpt, (train, val, tuning) = train_teacher(recipe, data, Path(args.work))
        model, which, tuning_top1 = choose_weights(recipe, ckpt, tuning)
        cost = json.loads((Path(args.work) / "cost.json").read_text())
        card = {"teacher": NAME, "model": recipe.model, "recipe": recipe.to_dict(), "weights": which,
                "top1_val": evaluate_tta(model, val)["center"], "top1_tuning": tuning_top1,
                "train_images": len(train), "val_images": len(val), "tuning_images": len(tuning),
                "images_sha256": hashlib.sha256("".join(file_hashes(image_paths(train))).encode()).hexdigest(),
                "train_wall_seconds": cost["wall_seconds"], "train_cpu_seconds": cost["cpu_seconds"],
                "threads": torch.get_num_threads(), "command": command, "rebuild": REBUILD, "git_commit": commit,
                "code_fingerprint": fingerprint}
        publish(recipe, model, train, card, Path(args.out))
    except (OSError, ValueError, KeyError) as err:
        print(f"gv3lite same_data_teacher: error: {str(err).strip(chr(34))}", file=sys.stderr)
        return 2
    write_atomic(Path(args.card) / "card.json", json.dumps(card, indent=2) + "\n")
    print(json.dumps({k: v for k, v in card.items() if k != "recipe"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
