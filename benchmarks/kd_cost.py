"""What knowledge distillation costs: plain vs cached-KD epoch time for the same student, and the one-off caching.

The requirement (issue 3): a KD run may cost at most 1.15x a plain run of the same student, after the one-off pass
that caches the teacher's label maps (reported separately). We time alternating epochs of the same model, optimizer
and data (plain, KD, plain, KD, ...) and report the ratio of the median epoch times, so machine load drifts affect
both sides alike. Optionally (``--online-batches``) a few online-KD steps are timed too, to show what the cache saves.

Usage:
    python benchmarks/kd_cost.py                     # 40 img/class subset, 64 px, 2 epochs each
    python benchmarks/kd_cost.py --per-class 100 --img-size 64 --online-batches 3

Prints a table and writes ``results/kd_cost/kd_cost.json`` (with the command and the git commit). Not a test: wall-clock numbers depend on the machine
and on its load.
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from gv3lite.data import build_datasets, build_loader, resolve_data_root
from gv3lite.distill import Objective
from gv3lite.teacher_outputs import CachedKD, OnlineKD, build_label_maps, dataset_classes
from gv3lite.recipe import Recipe
from gv3lite.teacher import create_teacher
from gv3lite.experiment import build_optimizer, build_scheduler
from gv3lite.models import build_model
from gv3lite.train import TrainObjects, train_one_epoch
from gv3lite.utils import git_commit


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="ImageFolder root (default: GV3LITE_DATA or the repo's data)")
    parser.add_argument("--teacher", default="efficientnet_lite0")
    parser.add_argument("--model", default="ghostnetv3_050")
    parser.add_argument("--per-class", type=int, default=40, help="train images per class (balanced subset)")
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per side (plain and KD alternate)")
    parser.add_argument("--online-batches", type=int, default=0, help="also time this many online-KD steps")
    parser.add_argument("--out", default="results/kd_cost/kd_cost.json")
    args = parser.parse_args(argv)

    train_ds, _ = build_datasets(resolve_data_root(args.data), args.img_size, images_per_class_train=args.per_class,
                                 images_per_class_val=1, return_crop_info=True)
    teacher = create_teacher(args.teacher, dataset_classes(train_ds))

    t0 = time.perf_counter()
    maps = build_label_maps(teacher, train_ds, use_cache=False)
    caching_s = time.perf_counter() - t0
    kd, objective = CachedKD(maps), Objective(alpha=0.5, temperature=1.0)

    recipe = Recipe(model=args.model, img_size=args.img_size, batch_size=args.batch_size, epochs=2 * args.epochs)
    torch.manual_seed(0)
    model = build_model(recipe, len(train_ds.classes))
    loader = build_loader(train_ds, args.batch_size, train=True, generator=torch.Generator().manual_seed(0))
    optimizer = build_optimizer(recipe, model)
    scheduler = build_scheduler(recipe, optimizer, len(loader))
    times = {"plain": [], "cached_kd": []}
    step = 0
    for epoch in range(2 * args.epochs):
        mode = "plain" if epoch % 2 == 0 else "cached_kd"
        t0 = time.perf_counter()
        objects = TrainObjects(model, optimizer, scheduler, objective, teacher=kd if mode == "cached_kd" else None)
        stats = train_one_epoch(objects, loader, "cpu", epoch=epoch, start_step=step)
        times[mode].append(time.perf_counter() - t0)
        step += stats["steps"]
    plain, cached = statistics.median(times["plain"]), statistics.median(times["cached_kd"])

    result = {
        "teacher": args.teacher, "student": args.model, "img_size": args.img_size, "train_images": len(train_ds),
        "batch_size": args.batch_size, "threads": torch.get_num_threads(),
        "plain_epoch_s": plain, "cached_kd_epoch_s": cached, "cached_kd_over_plain": cached / plain,
        "plain_img_per_s": len(loader) * args.batch_size / plain,
        "caching_s": caching_s, "caching_img_per_s": len(train_ds) / caching_s,
        "caching_s_full_imagenette_train_est": 9469 * caching_s / len(train_ds),
        "label_map_shape": list(maps.maps.shape),
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv), "git_commit": git_commit(),
    }
    if args.online_batches:
        online = OnlineKD(teacher, train_ds)
        model.train()
        t0, n = time.perf_counter(), 0
        for i, (images, targets, info) in enumerate(loader):
            if i == args.online_batches:
                break
            logits = model(images)
            loss = objective(logits, targets, online.teacher_logits(images, info)).loss
            loss.backward()
            n += len(targets)
        result["online_kd_img_per_s"] = n / (time.perf_counter() - t0)
        result["online_kd_over_plain_est"] = result["plain_img_per_s"] / result["online_kd_img_per_s"]

    for key, value in result.items():
        print(f"{key:38s} {value:.3f}" if isinstance(value, float) else f"{key:38s} {value}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {out}")
    return result


if __name__ == "__main__":
    main()
