"""What ``gv3lite reproduce --budget BUDGET`` would cost on this machine, extrapolated from measured throughput.

For every distinct trained recipe of ``gv3lite.study.plan.plan(budget)`` (runs shared between cells count once) we
measure the train step (forward + backward + optimizer, channels_last, bf16 autocast on CUDA) of its model at its
image size and batch size, and the deploy-form eval forward, for ``--steps`` steps each (medians), then add up

    run time = epochs x train images / train img/s + evaluations x val images / eval img/s

plus, per distinct teacher, one label-map caching pass over the train images (teacher eval forward at the
teacher's input size, measured the same way on a randomly initialised copy: no weights are loaded or downloaded).
The data loader is assumed not to be the bottleneck (``benchmarks/throughput.py`` measures it). Image counts come
from ``--data`` when it exists, else Imagenette's 9,469 / 3,925.

Usage:
    python benchmarks/full_cost.py --device cuda --budget full            # as benchmarks/gpu_check.sh runs it
    python benchmarks/full_cost.py --device cpu --budget quick --steps 3  # the same arithmetic on this CPU

Prints one line per distinct model and the total in hours; writes ``--out`` (JSON with command, commit, date).
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import timm
import torch
import torch.nn.functional as F

import gv3lite
from gv3lite.study.plan import plan
from gv3lite.data import resolve_data_root
from gv3lite.models import build_model
from gv3lite.utils import git_commit

IMAGENETTE = (9469, 3925)  # train / val images when no data root is found


def _count_images(data) -> tuple[int, int] | None:
    try:
        root = resolve_data_root(data)
    except FileNotFoundError:
        return None
    return tuple(sum(1 for p in (root / split).rglob("*") if p.is_file()) for split in ("train", "val"))


def _median_seconds(fn, steps: int, device: torch.device) -> float:
    fn()  # warm-up (and cudnn autotuning)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(model, img_size: int, batch_size: int, device: torch.device, steps: int) -> tuple[float, float]:
    """(train-step img/s of ``model``, eval img/s of its deploy form) at ``img_size`` px, batch ``batch_size``."""
    model = model.to(device, memory_format=torch.channels_last).train()
    x = torch.randn(batch_size, 3, img_size, img_size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch_size,), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step():
        with autocast:
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    train = batch_size / _median_seconds(step, steps, device)
    deploy = gv3lite.reparameterize(model.eval())

    def forward():
        with torch.no_grad(), autocast:
            deploy(x)

    return train, batch_size / _median_seconds(forward, steps, device)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="full")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model (medians)")
    parser.add_argument("--data", default=None, help="ImageFolder root whose images are counted")
    parser.add_argument("--out", default=None, help="JSON file (default results/throughput/full_cost_<device>.json)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    n_train, n_val = _count_images(args.data) or IMAGENETTE

    runs = {item["run_id"]: item["trained_as"] for item in plan(args.budget)}
    speeds, rows, teachers = {}, [], {}
    total = 0.0
    for run_id, recipe in runs.items():
        key = (recipe.model, recipe.num_conv_branches, recipe.use_scale_branch, recipe.use_identity_branch,
               recipe.img_size, recipe.batch_size)
        if key not in speeds:
            torch.manual_seed(0)
            speeds[key] = measure(build_model(recipe, 10), recipe.img_size, recipe.batch_size, device, args.steps)
            print(f"{recipe.model:24s} branches {recipe.num_conv_branches}/{recipe.use_scale_branch:d}/"
                  f"{recipe.use_identity_branch:d} {recipe.img_size}px batch {recipe.batch_size}: train "
                  f"{speeds[key][0]:8.1f} img/s, deploy eval {speeds[key][1]:8.1f} img/s", flush=True)
        train_s, eval_s = speeds[key]
        per_class = recipe.images_per_class_train
        images = n_train if per_class is None else per_class * len(recipe.classes or range(10))
        val_images = n_val if recipe.images_per_class_val is None else recipe.images_per_class_val * 10
        evaluations = -(-recipe.epochs // recipe.eval_every)
        seconds = recipe.epochs * images / train_s + evaluations * val_images / eval_s
        if recipe.teacher:
            teachers.setdefault(recipe.teacher, images)
        rows.append(dict(run_id=run_id, model=recipe.model, epochs=recipe.epochs, images=images, seconds=seconds))
        total += seconds
    for name, images in teachers.items():
        teacher = timm.create_model(name, pretrained=False, num_classes=1000)
        teacher = teacher.to(device, memory_format=torch.channels_last)
        size = teacher.pretrained_cfg.get("input_size", (3, 224, 224))[-1]
        x = torch.randn(64, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
        teacher.eval()

        def forward():
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                teacher(x)
        img_s = 64 / _median_seconds(forward, args.steps, device)
        print(f"teacher {name} ({size}px): {img_s:.1f} img/s -> caching pass {images / img_s / 60:.1f} min")
        total += images / img_s
    print(f"reproduce --budget {args.budget}: {len(runs)} distinct runs, ~{total / 3600:.2f} h on {device} "
          f"({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), extrapolated from the "
          "measured img/s (data loading and checkpoints not included)")
    out = Path(args.out or f"results/throughput/full_cost_{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(command=" ".join(shlex.quote(a) for a in ["python", *sys.argv]),
                                   commit=git_commit(), date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                   budget=args.budget, device=str(device), hours=total / 3600, runs=rows,
                                   teachers=teachers), indent=1) + "\n")


if __name__ == "__main__":
    main()
