"""Issue 26, crash safety: a kill right after any file a training writes leaves a run that the same command (with
``--resume`` once a ``last.pth`` exists) finishes into exactly the files of an uninterrupted run; nothing is lost.
The kill is simulated by an exception raised right after the k-th atomic write (``os.replace``) of a tiny run."""
import os

import pandas as pd
import pytest
import torch

import gv3lite.utils as utils
from gv3lite.cli import main

TINY = ["--set", "img_size=40", "--set", "batch_size=4", "--epochs", "2", "--set", "eval_every=1",
        "--set", "teacher=null", "--set", "sched=cosine", "--set", "warmup_epochs=0", "--quiet"]


class Killed(BaseException):
    """Stands for kill -9: a BaseException, so no ``except Exception`` on the way tidies anything up."""


def train(out, root, resume=False):
    return main(["train", "--out", str(out), "--data", str(root), *TINY, *(["--resume"] if resume else [])])


def files_of(out) -> dict:
    """What a finished run holds, without wall times: metrics, predictions, and each checkpoint's epoch/weights."""
    metrics = pd.read_csv(out / "metrics.csv").drop(columns=["seconds"])
    found = {"metrics": metrics.to_csv(index=False), "predictions": (out / "predictions.csv").read_text()}
    for name in ("last.pth", "best.pth"):
        ckpt = torch.load(out / name, weights_only=True)
        found[name] = (ckpt["epoch"], ckpt["best_top1"], ckpt["model"]["classifier.weight"].sum().item())
    found["listing"] = sorted(p.name for p in out.iterdir())
    return found


def test_a_kill_after_any_write_of_a_training_loses_nothing(tmp_path, monkeypatch, make_image_root):
    root = make_image_root(per_class=4, size=(40, 40))
    monkeypatch.setattr("gv3lite.callbacks.git_commit", lambda: "test")  # git's index refresh: seconds per run
    real_replace, writes = os.replace, []

    def counting(src, dst):
        real_replace(src, dst)
        writes.append(os.path.basename(dst))
    monkeypatch.setattr(utils.os, "replace", counting)
    assert train(tmp_path / "clean", root) == 0
    clean = files_of(tmp_path / "clean")
    epoch2 = len(writes) - writes[::-1].index("run_info.json")  # first write of epoch 1
    epoch2 += writes[epoch2:].index("last.pth") + 1            # first write of epoch 2
    assert writes[-1] == "last.pth"  # the checkpoint is the epoch's last write: what resumes is complete
    assert writes[epoch2:] in (["predictions.csv", "metrics.csv", "best.pth", "last.pth"],
                               ["predictions.csv", "metrics.csv", "last.pth"])
    # after epoch 2's last write but one (best.pth or metrics.csv: resumes from epoch 1) and after its last.pth (the
    # run is finished: a resume trains nothing and must find every file; issue 26's lost run was this case)
    for k in [len(writes) - 1, len(writes)]:
        out, done = tmp_path / f"killed_after_{k}", []

        def killed_after_k(src, dst):
            real_replace(src, dst)
            done.append(dst)
            if len(done) == k:
                raise Killed(dst)
        monkeypatch.setattr(utils.os, "replace", killed_after_k)
        with pytest.raises(Killed):
            train(out, root)
        monkeypatch.setattr(utils.os, "replace", real_replace)
        assert train(out, root, resume=(out / "last.pth").is_file()) == 0, k
        assert files_of(out) == clean, (k, writes[k - 1])
