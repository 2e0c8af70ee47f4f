"""Data parallelism under ``torchrun`` (issue 13): 2 CPU processes (gloo) against 1 process on the same global batch.

The images are left-right symmetric squares and the crop covers the whole image (``min_crop_scale=1``), dropout off:
then the random flip and crop change nothing, and both runs see exactly the same global batches (the 2-process
sampler splits the 1-process permutation between the ranks). What remains different is BatchNorm: each process
normalizes with the statistics of its half batch (SyncBatchNorm needs GPUs), plus float summation order. Stated
tolerance: the per-epoch train loss and val loss agree within 0.05 (absolute), val top-1 within one image; and every
rank reports the same val metrics, computed once over the whole val set. Both runs read images through the
per-image DataLoader (``cache=false``): the batched loader of a cached set has no DistributedSampler, so it would
compare two data paths instead of one and two processes. Measured on the 2-core CPU machine (global
batch 16, 2 x 16 train / 2 x 6 val images, 40 px, 2 epochs): train loss 0.617 / 0.343 (1 process) vs 0.595 / 0.328
(2 processes), max difference 0.022; val loss 0.694 / 0.709 vs 0.693 / 0.698, max difference 0.011; val top-1 equal (50%:
after 4 steps the eval-mode model is still at chance on the val images).
"""
import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

ARGS = ["--set", "img_size=40", "--batch-size", "16", "--epochs", "2", "--lr", "1e-3", "--set", "drop_rate=0", "--set",
        "min_crop_scale=1.0", "--set", "sched=cosine", "--set", "warmup_epochs=0", "--set", "eval_every=1",
        "--set", "teacher=null", "--set", "cache=false", "--quiet"]


def symmetric_root(root, classes=("a", "b"), train=16, val=6, size=40):
    """Left-right symmetric random squares; class k's pixels lie in [128 k, 128 k + 127] (dark vs bright: learnable)."""
    g = np.random.default_rng(0)
    for split, n in (("train", train), ("val", val)):
        for k, c in enumerate(classes):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                left = g.integers(128 * k, 128 * k + 128, (size, size // 2, 3), dtype=np.uint8)
                Image.fromarray(np.concatenate([left, left[:, ::-1]], axis=1)).save(root / split / c / f"{i}.png")
    return root


def train(tmp_path, root, out, nproc):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("WORLD_SIZE", None)
    cli = ["-m", "gv3lite.cli", "train", "--out", str(out), "--data", str(root), *ARGS]
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)] if nproc > 1 else []
    run = subprocess.run([sys.executable, *launcher, *cli], capture_output=True, text=True, timeout=300, env=env,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    return pd.read_csv(out / "metrics.csv"), re.findall(r"val top-1 ([\d.]+)%\s+top-5 ([\d.]+)%", run.stdout)


def test_two_processes_agree_with_one(tmp_path):
    root = symmetric_root(tmp_path / "data")
    one, one_lines = train(tmp_path, root, tmp_path / "one", 1)
    two, two_lines = train(tmp_path, root, tmp_path / "two", 2)
    print("\n1 process:\n", one[["epoch", "train_loss", "val_loss", "val_top1"]].to_string(index=False),
          "\n2 processes:\n", two[["epoch", "train_loss", "val_loss", "val_top1"]].to_string(index=False))
    assert len(two_lines) == 2 and two_lines[0] == two_lines[1]  # each rank prints the same whole-val metrics
    assert len(one) == len(two) == 2
    assert (one["train_loss"] - two["train_loss"]).abs().max() < 0.05
    assert (one["val_loss"] - two["val_loss"]).abs().max() < 0.05
    assert (one["val_top1"] - two["val_top1"]).abs().max() <= 100 / 12 + 1e-9  # 12 val images: one image
    info = pd.read_json(tmp_path / "two" / "run_info.json", typ="series")
    assert info["world_size"] == 2 and info["val_images"] == 12
    # the reductions, exactly: each rank evaluates 6 of the 12 val images (gv3lite.distributed.val_shard); the
    # gathered predictions are all 12 in the val set's order (same targets as the 1-process run), and the
    # all-reduced counts give the top-1 of those 12 predictions -- a missing all-reduce (6 images) or a wrong gather
    # order fails one of these
    preds_one, preds_two = pd.read_csv(tmp_path / "one" / "predictions.csv"), pd.read_csv(tmp_path / "two" /
                                                                                          "predictions.csv")
    assert preds_two["val_index"].tolist() == list(range(12))
    assert preds_two["target"].tolist() == preds_one["target"].tolist() == [0] * 6 + [1] * 6
    assert two["val_top1"].iloc[-1] == 100.0 * preds_two["correct_raw"].sum() / 12


def test_sync_bn_converts_on_gpus_and_is_refused_on_cpu():
    import torch

    from gv3lite import create_model
    from gv3lite.distributed import with_sync_bn
    model = create_model("ghostnetv3_050", num_classes=2)
    assert with_sync_bn(model, False, 2, "cpu") is model and with_sync_bn(model, True, 1, "cpu") is model
    with pytest.raises(ValueError, match="SyncBatchNorm runs on GPUs only; use --device cuda, or drop --sync-bn"):
        with_sync_bn(model, True, 2, "cpu")
    params = {id(p) for p in model.parameters()}
    synced = with_sync_bn(model, True, 2, torch.device("cuda"))  # conversion only: nothing runs on the GPU here
    kinds = {type(m).__name__ for m in synced.modules()}
    assert "SyncBatchNorm" in kinds and "BatchNorm2d" not in kinds
    assert {id(p) for p in synced.parameters()} == params  # the optimizer's parameters are the same objects


def _gloo_and_torchrun() -> bool:
    import importlib.util

    import torch.distributed as dist
    return dist.is_available() and dist.is_gloo_available() and importlib.util.find_spec("torch.distributed.run")


@pytest.mark.skipif(not _gloo_and_torchrun(), reason="needs torch.distributed with Gloo and torchrun")
def test_a_stopped_rank_ends_the_job_with_the_timeout_message_not_a_hang(tmp_path):
    """2 CPU ranks under torchrun; once an epoch is saved, rank 1 is stopped (SIGSTOP, as ``kill -STOP``). Rank 0
    must give up after ``GV3LITE_DDP_TIMEOUT_MIN`` (0.1 min here, not torch's 30) with the one-line message that
    names the resumable last.pth, and exit 2."""
    import signal
    import time

    import psutil
    import torch
    minutes = 0.1
    root = symmetric_root(tmp_path / "data", train=8, val=2)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "GV3LITE_DDP_TIMEOUT_MIN": str(minutes)}
    env.pop("WORLD_SIZE", None)
    args = [*ARGS, "--epochs", "1000", "--batch-size", "4"]  # trains until stopped
    job = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                            "-m", "gv3lite.cli", "train", "--out", str(out), "--data", str(root), *args],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while not (out / "last.pth").is_file():  # an epoch finished: there is something to resume
            assert job.poll() is None and time.monotonic() < deadline, job.communicate()
            time.sleep(0.2)
        ranks = {p.environ().get("RANK"): p for p in psutil.Process(job.pid).children(recursive=True)}
        ranks["1"].send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        while ranks["0"].is_running() and ranks["0"].status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() - stopped < minutes * 60 + 30, "rank 0 still waits for the stopped rank 1"
            time.sleep(0.2)
        waited = time.monotonic() - stopped
    finally:
        for p in psutil.Process(job.pid).children(recursive=True):
            p.kill()  # a stopped process takes SIGKILL; torchrun then ends
        stdout, stderr = job.communicate(timeout=60)
    assert minutes * 60 - 1 <= waited <= minutes * 60 + 30, waited
    lines = [line for line in stderr.splitlines() if line.startswith("gv3lite train: error: rank 0 of 2")]
    assert len(lines) == 1 and re.fullmatch(
        r"gv3lite train: error: rank 0 of 2: another process of this torchrun job stopped answering \([^;]+; a "
        rf"process waits {minutes:g} min, GV3LITE_DDP_TIMEOUT_MIN\), so the job stops. Finished epochs are kept in "
        rf"{re.escape(str(out))}/last.pth: run the same torchrun command with --resume", lines[0]), stderr[-3000:]
    assert torch.load(out / "last.pth", weights_only=True)["epoch"] >= 1  # what --resume continues
