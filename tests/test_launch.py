"""Scale-out of the study's runs (issue 13): a file lock per run (two ``reproduce`` calls never train the same run
twice), one run per GPU, and submitit's local executor as the launcher. Tiny data made by the tests."""
import subprocess
import sys
import time

import pytest
import torch

from gv3lite import launch
from gv3lite.budgets import BUDGETS
from gv3lite.recipe import PRESETS
from gv3lite.study import runner, workers
from gv3lite.study.plan import plan
from gv3lite.study.runner import reproduce

WNIDS = ("n01440764", "n02102040", "n02979186")  # the teacher maps ImageNet classes by wnid


def hold_lock(path):
    """A separate process holding ``path``'s FileLock (as another ``reproduce`` call would) until killed."""
    code = ("import sys, time; from filelock import FileLock; lock = FileLock(sys.argv[1]); lock.acquire(); "
            "print('held', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, path], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_claim_run_is_exclusive_across_processes(tmp_path):
    run_dir = tmp_path / "runs" / "abc"
    proc = hold_lock(str(run_dir) + ".lock")
    try:
        with launch.claim_run(run_dir) as claimed:
            assert claimed is False
    finally:
        proc.kill()
        proc.wait()
    with launch.claim_run(run_dir) as claimed:
        assert claimed is True
        with launch.claim_run(run_dir) as again:  # a second claim, even from this process, is refused
            assert again is False


def outside_teacher_all_images(monkeypatch):
    """What these tests check is the launch: their 6 images per class of ImageNet classes train with the offline
    EfficientNet-Lite0 teacher instead of the same-data one (its soft labels are of Imagenette's images) and with
    every image (the tuning split would hold all of them); the plan, made in this process, gives the jobs their
    recipes."""
    monkeypatch.setitem(PRESETS["ghostnetv3"], "teacher", "efficientnet_lite0")
    monkeypatch.setitem(BUDGETS["smoke"], "tuning", "include")


def test_runs_locked_by_another_call_are_not_trained(tmp_path, make_image_root, monkeypatch):
    outside_teacher_all_images(monkeypatch)
    root = make_image_root(classes=WNIDS, per_class=6, size=(48, 48))
    items = plan("smoke", ["reparam"])
    holders = [hold_lock(str(tmp_path / "out" / "smoke" / "runs" / it["run_id"]) + ".lock") for it in items]
    monkeypatch.setattr(runner, "prepare_teachers", lambda *a, **k: None)
    trained = []
    monkeypatch.setattr(workers, "_train_run", lambda *a, **k: trained.append(a) or {})
    try:
        result = reproduce("smoke", out=tmp_path / "out", grids=["reparam"], data=root, figures=False,
                                    log=lambda *a: None)
    finally:
        for proc in holders:
            proc.kill()
            proc.wait()
    assert trained == [] and (result["trained"], result["busy"]) == (0, 2)


def test_worker_devices_one_run_per_gpu(monkeypatch):
    assert launch.worker_devices("cpu", 3) == ["cpu"] * 3
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert launch.worker_devices("cuda", 4) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert launch.worker_devices("auto", 2) == ["auto", "auto"]
    with pytest.raises(ValueError, match="unknown submitit cluster 'pbs'"):
        launch.submit_runs(print, {}, ".", cluster="pbs")


def test_reproduce_through_submitit_local_executor(tmp_path, make_image_root, monkeypatch):
    """Two smoke runs as two submitit jobs (LocalExecutor: subprocesses on this machine), both at once."""
    root = make_image_root(classes=WNIDS, per_class=6, size=(48, 48))
    outside_teacher_all_images(monkeypatch)
    out = tmp_path / "out"
    t0 = time.perf_counter()
    result = reproduce("smoke", out=out, grids=["reparam"], data=root, figures=False, jobs=2,
                                submitit="local", submitit_options={"timeout_min": 10}, log=lambda *a: None)
    assert result["trained"] == 2 and result["busy"] == 0, result
    runs = result["runs"]
    assert len(runs) == 2 and runs["top1"].between(0, 100).all()
    logs = sorted(p.name for p in (out / "smoke" / "submitit").glob("*_log.err"))
    assert len(logs) == 2, logs  # really two jobs
    again = reproduce("smoke", out=out, grids=["reparam"], data=root, figures=False, submitit="local",
                               log=lambda *a: None)
    assert (again["trained"], again["skipped"]) == (0, 2)
    print(f"submitit local: 2 runs in {time.perf_counter() - t0:.0f} s")
