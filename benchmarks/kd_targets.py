"""KD targets: how soft is a published teacher's target at each temperature, and what label smoothing matches it?

The ``kd_control`` grid (gv3lite.study.grids) asks whether KD carries the teacher's knowledge or only softer targets:
its control cell trains without a teacher but with label smoothing ``eps`` chosen so that the control's target puts
the same mass on the true class as the KD cell's objective does on average. With ``(1 - a) * CE(label-smoothed) +
a * T^2 * KL(teacher_T || student_T)`` (gv3lite.distill, a = ``kd_alpha``), the KD cell's average true-class mass is
``(1 - a) * (1 - eps0 + eps0 / K) + a * m_T``, where ``eps0`` is the recipe's label smoothing, ``K`` the number of
classes and ``m_T`` the teacher's mean probability of the true class at temperature ``T``. The control's is
``1 - eps + eps / K``; equal when ``eps = (1 - mass) * K / (K - 1)``.

``m_T`` is read from the published soft labels (``gv3lite.soft_labels``: the teacher's logit maps on every training
image of the student): per image the map averaged over its cells (the whole image's logits; a training crop reads a
part of the map, so this is the average target of the full image, not of each crop), softmax at ``T``, the true
class's probability; also the target's mean entropy (nats; uniform over K classes = ln K) and the teacher's top-1 on
these images.

Writes ``<out>/<teacher>.csv`` (one row per temperature: true_mass, entropy_nats, kd_cell_true_mass,
matching_label_smoothing, top1_train) and ``<out>/<teacher>.json`` (command, commit, code fingerprint, date, the
recipe values used). Seconds on a CPU::

    python benchmarks/kd_targets.py                          # imagenette_same_data at T = 1, 2, 4
    python benchmarks/kd_targets.py --temperatures 1 1.5 2 3 4
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import shlex
import sys
from pathlib import Path

import pandas as pd
import torch

from gv3lite.fingerprint import code_fingerprint
from gv3lite.recipe import preset
from gv3lite.soft_labels import SOFT_LABEL_TEACHERS, read_soft_labels
from gv3lite.utils import git_commit, write_atomic, write_csv


def target_table(logits: torch.Tensor, labels: torch.Tensor, temperatures: list[float], kd_alpha: float,
                 label_smoothing: float) -> pd.DataFrame:
    """One row per temperature for teacher ``logits`` (N, K) of images with true classes ``labels`` (N,): the mean
    true-class probability at ``T``, the mean entropy (nats), the KD cell's average true-class mass and the label
    smoothing that gives a no-teacher target the same mass (module docstring). Raises ``ValueError`` for a
    temperature that is not positive or shapes that do not match."""
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"logits (N, K) and labels (N,) expected, got {tuple(logits.shape)} and {tuple(labels.shape)}")
    k, rows = logits.shape[1], []
    hard = 1 - label_smoothing + label_smoothing / k  # the label-smoothed CE target's true-class mass
    for t in temperatures:
        if not t > 0:
            raise ValueError(f"temperature {t!r}: must be > 0")
        p = torch.softmax(logits.double() / t, dim=1)
        mass = p[torch.arange(len(labels)), labels].mean().item()
        entropy = -(p * p.clamp_min(1e-300).log()).sum(1).mean().item()
        kd_mass = (1 - kd_alpha) * hard + kd_alpha * mass
        rows.append({"temperature": t, "true_mass": round(mass, 4), "entropy_nats": round(entropy, 4),
                     "uniform_entropy_nats": round(math.log(k), 4), "kd_cell_true_mass": round(kd_mass, 4),
                     "matching_label_smoothing": round((1 - kd_mass) * k / (k - 1), 3),
                     "top1_train": round((logits.argmax(1) == labels).double().mean().item() * 100, 2)})
    return pd.DataFrame(rows)


def whole_image_logits(soft: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits (N, K), labels (N,))`` of published soft labels (`gv3lite.soft_labels.read_soft_labels`): each
    image's logit map averaged over its cells, and its class index from its file name ``<class>/<name>``."""
    classes = list(soft["classes"])
    labels = torch.tensor([classes.index(f.split("/")[0]) for f in soft["files"]])
    return soft["maps"].float().mean(dim=(2, 3)), labels


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", default="imagenette_same_data", choices=sorted(SOFT_LABEL_TEACHERS),
                        help="a published soft-label teacher (gv3lite.soft_labels.SOFT_LABEL_TEACHERS)")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    parser.add_argument("--preset", default="ghostnetv3", help="the recipe whose kd_alpha and label_smoothing apply")
    parser.add_argument("--out", default="results/kd_targets")
    args = parser.parse_args(argv)
    recipe = preset(args.preset)
    soft = read_soft_labels(args.teacher)
    logits, labels = whole_image_logits(soft)
    table = target_table(logits, labels, args.temperatures, recipe.kd_alpha, recipe.label_smoothing)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(table, out / f"{args.teacher}.csv")
    meta = {"command": "python benchmarks/kd_targets.py " + shlex.join(sys.argv[1:] if argv is None else argv),
            "teacher": args.teacher, "images": len(labels), "classes": logits.shape[1], "preset": args.preset,
            "kd_alpha": recipe.kd_alpha, "label_smoothing": recipe.label_smoothing,
            "kd_temperature_of_preset": recipe.kd_temperature, "git_commit": git_commit(),
            "code_fingerprint": code_fingerprint(),
            "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    write_atomic(out / f"{args.teacher}.json", json.dumps(meta, indent=2) + "\n")
    print(table.to_string(index=False))
    print(f"-> {out / (args.teacher + '.csv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
