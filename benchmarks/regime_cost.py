"""Regime cost: CPU seconds of one training of each candidate regime of the variance pilot, measured, not assumed.

Issue 22 asks to compare regimes at equal training cost. Images x epochs x pixels is not the cost on a CPU: per-image
overheads of these small networks (depthwise convs, many small layers, the optimizer step) do not shrink with the
image. This script measures, for the ``ghostnetv3`` preset (training-time branches, the pilot's base) at each
candidate's image size and batch size, the CPU seconds of one optimizer step (forward, backward, AdamW step on a
synthetic batch; 1 thread; median over interleaved repeats, so a change of machine load hits every candidate alike)
and from it the cost of the whole training (steps per epoch x epochs) relative to today's regime. Data loading and
evaluation are left out (the same for every candidate up to the image size).

Writes ``<out>/cost.csv`` and ``cost.md`` (command, commit, code fingerprint, load average, wall time).

Usage:
    python benchmarks/regime_cost.py [--repeats 7] [--out results/variance_pilot/regimes]
CPU time under load is longer than on an idle core (shared caches); the ratios between candidates are the result.
"""
from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from gv3lite.experiment import build_model, build_optimizer
from gv3lite.recipe import preset
from gv3lite.utils import git_commit
from variance_pilot import BASE, _markdown, code_fingerprint

CLASSES = 10
CANDIDATES = {  # regime -> changes from the pilot's base (48 px, batch 32, 10 epochs, 300 images per class)
    "today": {},
    "px40_ep14": dict(img_size=40, epochs=14),
    "px36_ep18": dict(img_size=36, epochs=18),
    "b16_ep10": dict(batch_size=16),
    "b64_ep14": dict(batch_size=64, epochs=14),
}


def step_seconds(recipes: dict, repeats: int, steps: int = 2) -> dict:
    """Median CPU seconds of one optimizer step per recipe (the first of ``repeats`` rounds is a warm-up)."""
    torch.set_num_threads(1)
    built = {}
    for name, recipe in recipes.items():
        model = build_model(recipe, CLASSES).to(memory_format=torch.channels_last)
        x = torch.randn(recipe.batch_size, 3, recipe.img_size, recipe.img_size).to(memory_format=torch.channels_last)
        built[name] = (model, build_optimizer(recipe, model), x, torch.randint(0, CLASSES, (recipe.batch_size,)))
    times = {name: [] for name in recipes}
    for rep in range(repeats):
        for name, (model, optimizer, x, y) in built.items():
            t0 = time.process_time()
            for _ in range(steps):
                loss = torch.nn.functional.cross_entropy(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            if rep:
                times[name].append((time.process_time() - t0) / steps)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default="results/variance_pilot/regimes")
    args = parser.parse_args(argv)
    if args.repeats < 2:
        parser.error(f"--repeats {args.repeats}: give at least 2 (the first round is a warm-up)")
    t0, load = time.perf_counter(), os.getloadavg()
    recipes = {name: preset("ghostnetv3", **{**BASE, **changes}) for name, changes in CANDIDATES.items()}
    seconds = step_seconds(recipes, args.repeats)
    rows = []
    for name, recipe in recipes.items():
        steps = (recipe.images_per_class_train * CLASSES // recipe.batch_size) * recipe.epochs
        rows.append({"regime": name, "img_size": recipe.img_size, "batch_size": recipe.batch_size,
                     "epochs": recipe.epochs, "steps": steps, "cpu_ms_per_step": 1000 * seconds[name],
                     "cpu_ms_per_image": 1000 * seconds[name] / recipe.batch_size,
                     "training_cpu_min": steps * seconds[name] / 60})
    table = pd.DataFrame(rows)
    table["cost_vs_today"] = table["training_cpu_min"] / table.loc[table["regime"] == "today", "training_cpu_min"].item()
    table["pixel_model_cost"] = [r.epochs * r.img_size ** 2 / (BASE["epochs"] * BASE["img_size"] ** 2)
                                 for r in table.itertuples()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "cost.csv", index=False)
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    (out / "cost.md").write_text(
        "# Regime cost (benchmarks/regime_cost.py)\n\n"
        f"Command: `{command}`  \nCommit: {git_commit()}  \nCode fingerprint: {code_fingerprint()}  \n"
        f"Load average at start (1/5/15 min): {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {os.cpu_count()} "
        f"cores  \nWall time: {time.perf_counter() - t0:.0f} s; {args.repeats} interleaved repeats, 1 thread\n\n"
        "`cost_vs_today`: measured CPU cost of the whole training relative to today's regime; `pixel_model_cost`: "
        "what images x epochs x px^2 would predict.\n\n" + _markdown(table) + "\n")
    print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
