"""Cached vs online knowledge distillation: do they train the same student equally well (within seed noise)?

Issue 3 asks to show, on a small run with several seeds, that distilling from cached teacher outputs (ReLabel-style
label maps pooled over each crop, `gv3lite.teacher_outputs.CachedKD`) matches distilling from the teacher run online on the
very same crop (`gv3lite.teacher_outputs.OnlineKD`). This script calls `gv3lite.experiment.compare_kd_modes` (no KD, cached KD,
online KD; same student, data, crops and seeds) and writes

* ``<out>/runs.csv`` — one row per (mode, seed): val top-1 (%), train seconds, plus the command and git commit;
* ``<out>/summary.csv`` — mean ± std per mode and the cached − online difference against the seed spread.

Usage:
    python benchmarks/kd_modes.py     # 4 classes x 100 images, 64 px, 8 epochs of batch 16 (200 steps), seeds 0 1 2
    python benchmarks/kd_modes.py --classes all --per-class 40 --img-size 48 --epochs 10 --out /tmp/kd_modes

The student is the trainer's default (GhostNetV3-0.5x with its training-time branches, AdamW + one-cycle). The
default subset is the 4 classes the tests use (tench, cassette player, French horn, parachute), on which this
student learns within a few hundred steps; the subset is the same for every seed (seeds vary initialization and
batch order). Online KD runs the teacher on every crop of every epoch (3,200 EfficientNet-Lite0 passes at 224 px
per seed), so it dominates the cost: about 10 minutes on a 2-core CPU.

Wall-clock numbers depend on the machine and its load; accuracy does not (fixed seeds).
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from gv3lite.experiment import compare_kd_modes
from gv3lite.utils import git_commit

FOUR_CLASSES = ["n01440764", "n02979186", "n03394916", "n03888257"]  # tench, cassette player, French horn, parachute


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="ImageFolder root (default: GV3LITE_DATA or the repo's data)")
    parser.add_argument("--teacher", default="efficientnet_lite0")
    parser.add_argument("--classes", default=",".join(FOUR_CLASSES),
                        help="comma-separated class folders, or 'all' (default: 4 Imagenette classes)")
    parser.add_argument("--per-class", type=int, default=100, help="train images per class (balanced subset)")
    parser.add_argument("--per-class-val", type=int, default=50, help="val images per class")
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="results/kd_modes")
    args = parser.parse_args(argv)
    if len(set(args.seeds)) != len(args.seeds) or min(args.seeds) < 0:
        parser.error(f"--seeds {args.seeds}: give distinct seeds >= 0 (at least 2 to measure the seed spread)")
    for name in ("per_class", "per_class_val", "epochs", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    classes = None if args.classes == "all" else [c.strip() for c in args.classes.split(",") if c.strip()]
    if classes is not None and len(classes) < 2:
        parser.error(f"--classes {args.classes!r}: name at least 2 class folders (comma-separated), or 'all'")

    try:
        runs = compare_kd_modes(seeds=tuple(args.seeds), teacher=args.teacher, per_class=args.per_class,
                                per_class_val=args.per_class_val, img_size=args.img_size, epochs=args.epochs,
                                data_root=args.data, quiet=False, batch_size=args.batch_size, classes=classes,
                                warmup_epochs=min(1.5, args.epochs / 2))
    except (KeyError, ValueError, FileNotFoundError) as err:
        parser.error(str(err).strip('"'))
    runs["command"] = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    runs["commit"] = git_commit()
    summary = runs.groupby("mode")["val_top1"].agg(["mean", "std", "count"]).reset_index()
    spread = float(summary["std"].max())
    mean = dict(zip(summary["mode"], summary["mean"]))
    summary["cached_minus_online"] = mean.get("cached", float("nan")) - mean.get("online", float("nan"))
    summary["largest_seed_std"] = spread

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs.to_csv(out / "runs.csv", index=False)
    summary.to_csv(out / "summary.csv", index=False)
    print(summary.to_string(index=False))
    diff = summary["cached_minus_online"].iloc[0]
    if spread != spread:  # one seed: no spread to compare against
        print(f"cached - online = {diff:+.2f} pp; one seed gives no seed spread: run 2 or more seeds to judge")
    else:
        print(f"cached - online = {diff:+.2f} pp; largest seed std = {spread:.2f} pp -> "
              f"{'within' if abs(diff) <= spread else 'outside'} seed noise")
    print(f"written {out}/runs.csv, {out}/summary.csv")
    return summary


if __name__ == "__main__":
    main()
