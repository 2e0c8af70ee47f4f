"""Throughput of gv3lite against timm for the same GhostNetV3: train step, eval forward, and the data loader.

Everything is a *ratio measured in one process*: each timed call of gv3lite is followed (or preceded, alternating
every repeat) by the same call of the reference, and the ratio of the medians is reported, so load drifts on a
shared machine hit both sides alike. Cases, for ``--model`` at ``--batch-size`` x ``--img-size`` px on
``--threads`` threads:

* ``train_step``: forward + backward + SGD step of the train form (gv3lite's default fast branch sums vs timm's
  ``ghostnetv3_*``), both in channels_last, and both in the default (contiguous) format;
* ``train_step_per_branch``: gv3lite's per-branch train form (``fast_branches=False``) vs timm, channels_last;
* ``eval_train_form`` / ``eval_deploy_form``: eval-mode forward (no grad) of each form vs timm's same form;
* ``eval_deploy_vs_train``: gv3lite's deploy form vs its own train form (the deploy speed-up);
* ``train_step_compiled_vs_eager`` (with ``--compile`` only): gv3lite's compiled train step against its eager one;
  with ``--compile`` every case also records the seconds of its first (compiling) call;
* ``loader``: images/s delivered by the batched training loader next to gv3lite's train-step images/s, and
  ``loader_batched_vs_dataloader``: the batched loader against the per-image torch ``DataLoader`` it replaces.

Usage:
    python benchmarks/throughput.py                                  # ghostnetv3_050, 64 px, batch 64, 2 threads
    python benchmarks/throughput.py --threads 1 --repeats 9 --img-size 64

Prints a table and writes ``results/throughput/throughput_<model>_<img>px_t<threads>.json`` and ``.md`` with
the command, commit, date, load average and every median. Not a test: the numbers depend on the machine.
"""
from __future__ import annotations

import argparse
import json
import os
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
from gv3lite.data import build_datasets, build_loader, resolve_data_root
from gv3lite.branch_sums import set_fast_branches
from gv3lite.utils import git_commit


def _autocast(device):
    """bf16 autocast on CUDA (as the trainer does), a no-op context elsewhere (fp32 on CPU)."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train_step(model, images, targets, compile_model=False):
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    forward = torch.compile(model) if compile_model else model

    def step():
        with _autocast(images.device):
            loss = F.cross_entropy(forward(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _sync(images.device)
    return step


def _eval_forward(model, images, compile_model=False):
    model.eval()
    forward = torch.compile(model) if compile_model else model

    def run():
        with torch.no_grad(), _autocast(images.device):
            forward(images)
        _sync(images.device)
    return run


def paired_medians(ours, reference, repeats, warmup=2):
    """Median seconds of ``ours()`` and ``reference()`` over ``repeats`` calls each, alternating which goes first."""
    for _ in range(warmup):
        ours(), reference()
    times = ([], [])
    for r in range(repeats):
        order = (0, 1) if r % 2 == 0 else (1, 0)
        for i in order:
            start = time.perf_counter()
            (ours, reference)[i]()
            times[i].append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def _loader_images_per_second(args, batches, batched=True):
    """Images/s of the training loader (`gv3lite.data.build_loader`: the batched path over the uint8 cache, on
    ``--device``; ``batched=False``: the per-image torch DataLoader) over ``batches`` batches (after one warm-up
    batch)."""
    train_ds, _ = build_datasets(resolve_data_root(args.data), args.img_size, images_per_class_train=args.per_class,
                                 images_per_class_val=1)
    loader = build_loader(train_ds, args.batch_size, train=True, generator=torch.Generator().manual_seed(0),
                          device=args.device, batched=batched)
    it = iter(loader)
    next(it)
    start, n = time.perf_counter(), 0
    for _ in range(batches):
        try:
            images = next(it)[0]
        except StopIteration:
            it = iter(loader)
            images = next(it)[0]
        n += len(images)
    _sync(torch.device(args.device))
    return n / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ghostnetv3_050")
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu | cuda (bf16 autocast on CUDA, fp32 on CPU)")
    parser.add_argument("--compile", action="store_true", help="torch.compile both sides (measured separately)")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per side and case (medians)")
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--data", default=None, help="ImageFolder root for the loader case (default: GV3LITE_DATA)")
    parser.add_argument("--per-class", type=int, default=40, help="train images per class for the loader case")
    parser.add_argument("--loader-batches", type=int, default=10, help="0 skips the loader case")
    parser.add_argument("--cases", default="all", help="comma-separated subset of the cases, or 'all'")
    parser.add_argument("--out", default="results/throughput")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cl, device, comp = torch.channels_last, torch.device(args.device), args.compile
    images = torch.randn(args.batch_size, 3, args.img_size, args.img_size, device=device)
    targets = torch.randint(0, args.num_classes, (args.batch_size,), device=device)

    def pair(memory_format=cl, fast=True):
        """(gv3lite train form, timm train form) with the same weights, in ``memory_format``."""
        ours = gv3lite.create_model(args.model, num_classes=args.num_classes)
        ref = timm.create_model(args.model, num_classes=args.num_classes)
        ref.load_state_dict(ours.state_dict())
        set_fast_branches(ours, fast)
        return (ours.to(device, memory_format=memory_format).train(),
                ref.to(device, memory_format=memory_format).train())

    x_cl = images.contiguous(memory_format=cl)
    def step(o, r, x=x_cl):  # (gv3lite, timm) train-step callables
        return _train_step(o, x, targets, comp), _train_step(r, x, targets, comp)

    def deploy(m):
        return gv3lite.reparameterize(m.eval())

    cases = {
        "train_step": lambda: step(*pair()),
        "train_step_contiguous": lambda: step(*pair(torch.contiguous_format), x=images),
        "train_step_per_branch": lambda: step(*pair(fast=False)),
        "eval_train_form": lambda: (lambda o, r: (_eval_forward(o, x_cl, comp), _eval_forward(r, x_cl, comp)))(*pair()),
        "eval_deploy_form": lambda: (lambda o, r: (_eval_forward(deploy(o), x_cl, comp),
                                                   _eval_forward(deploy(r), x_cl, comp)))(*pair()),
        "eval_deploy_vs_train": lambda: (lambda o, r: (_eval_forward(deploy(o), x_cl, comp),
                                                       _eval_forward(o, x_cl, comp)))(*pair()),
    }
    if comp:  # what compiling buys: gv3lite compiled against gv3lite eager (the same weights)
        cases["train_step_compiled_vs_eager"] = lambda: (
            lambda o, e: (_train_step(o, x_cl, targets, True), _train_step(e, x_cl, targets, False)))(pair()[0], pair()[0])
    references = {"eval_deploy_vs_train": "gv3lite train form", "train_step_compiled_vs_eager": "gv3lite eager"}
    wanted = list(cases) + ["loader"] if args.cases == "all" else args.cases.split(",")
    unknown = [c for c in wanted if c not in cases and c != "loader"]
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown}; choose from {list(cases) + ['loader']}")
    rows = []
    for name in wanted:
        if name == "loader":
            continue
        ours, ref = cases[name]()
        first = {}
        if comp:  # the first call compiles: timed on its own, then the medians of the compiled calls
            for side, call in (("ours_first_call_s", ours), ("reference_first_call_s", ref)):
                t0 = time.perf_counter()
                call()
                first[side] = time.perf_counter() - t0
        t_ours, t_ref = paired_medians(ours, ref, args.repeats)
        reference = references.get(name, "timm")
        rows.append(dict(case=name, ours_img_s=args.batch_size / t_ours, reference=reference,
                         reference_img_s=args.batch_size / t_ref, ratio=t_ref / t_ours, **first))
        print(f"{name:24s} gv3lite {rows[-1]['ours_img_s']:8.1f} img/s   {reference} "
              f"{rows[-1]['reference_img_s']:8.1f} img/s   ratio {rows[-1]['ratio']:.2f}", flush=True)
    if "loader" in wanted and args.loader_batches > 0:
        step_img_s = next((r["ours_img_s"] for r in rows if r["case"] == "train_step"), None)
        if step_img_s is None:
            ours, ref = cases["train_step"]()
            step_img_s = args.batch_size / paired_medians(ours, ref, args.repeats)[0]
        loader = _loader_images_per_second(args, args.loader_batches)
        rows.append(dict(case="loader", ours_img_s=loader, reference="gv3lite train step",
                         reference_img_s=step_img_s, ratio=loader / step_img_s))
        print(f"{'loader':24s} loader  {loader:8.1f} img/s   train step {step_img_s:8.1f} img/s   "
              f"ratio {loader / step_img_s:.2f}")
        per_image = _loader_images_per_second(args, args.loader_batches, batched=False)
        rows.append(dict(case="loader_batched_vs_dataloader", ours_img_s=loader, reference="per-image DataLoader",
                         reference_img_s=per_image, ratio=loader / per_image))
        print(f"{'loader vs DataLoader':24s} batched {loader:8.1f} img/s   DataLoader {per_image:8.1f} img/s   "
              f"ratio {loader / per_image:.2f}")

    record = dict(command=" ".join(shlex.quote(a) for a in [sys.executable.split("/")[-1], *sys.argv]),
                  commit=git_commit(), date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  load_average=os.getloadavg(), cpu_count=os.cpu_count(), torch=torch.__version__,
                  timm=timm.__version__, **{k: v for k, v in vars(args).items() if k not in ("out", "data")},
                  rows=rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = f"t{args.threads}" if args.device == "cpu" else args.device.replace(":", "")
    stem = out / f"throughput_{args.model}_{args.img_size}px_{tag}{'_compiled' if comp else ''}"
    stem.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    where = (f"{args.threads} threads" if args.device == "cpu" else
             f"{torch.cuda.get_device_name(device)}, bf16 autocast")
    lines = [f"# {args.model}, batch {args.batch_size}, {args.img_size} px, {where}"
             + (", torch.compile" if comp else ""),
             "", f"command: `{record['command']}`  ", f"commit {record['commit']}, {record['date']}, load average "
             f"{', '.join(f'{x:.1f}' for x in record['load_average'])} on {record['cpu_count']} CPUs  ",
             "ratio = reference time / gv3lite time (loader: loader img/s / train-step img/s); medians of "
             f"{args.repeats} alternating calls", "", "| case | gv3lite img/s | reference | reference img/s | ratio |",
             "| --- | ---: | --- | ---: | ---: |"]
    lines += [f"| {r['case']} | {r['ours_img_s']:.1f} | {r['reference']} | {r['reference_img_s']:.1f} | "
              f"{r['ratio']:.2f} |" for r in rows]
    lines += ["", "first call (compiles), seconds: " + "; ".join(
        f"{r['case']}: gv3lite {r['ours_first_call_s']:.0f}, {r['reference']} {r['reference_first_call_s']:.0f}"
        for r in rows if "ours_first_call_s" in r)] if comp else []
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {stem}.json and .md")


if __name__ == "__main__":
    main()
