"""Non-finite is an error, everywhere (issue 13): a diverged training stops with the epoch/step and the last good
checkpoint (kept), a non-finite model is never saved, and evaluation refuses NaN logits."""
import pytest
import torch
from torch import nn

import gv3lite.train as train
from gv3lite.callbacks import DivergenceGuard
from gv3lite.checkpoint import non_finite_tensors, read_checkpoint
from gv3lite.distill import Objective
from gv3lite.cli import main

TINY = ["--set", "img_size=40", "--batch-size", "8", "--set", "sched=cosine", "--set", "warmup_epochs=0",
        "--set", "teacher=null", "--quiet"]


@pytest.fixture(autouse=True)
def no_debug(monkeypatch):
    monkeypatch.delenv("GV3LITE_DEBUG", raising=False)


def test_a_diverging_learning_rate_is_an_error_and_nothing_is_saved(tmp_path, capsys, make_image_root):
    root, out = make_image_root(per_class=8, size=(40, 40)), tmp_path / "run"
    assert main(["train", "--out", str(out), "--data", str(root), *TINY, "--epochs", "2", "--set", "lr=50"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gv3lite train: error: training diverged at epoch 1") and err.count("\n") == 1, err
    assert "no checkpoint was saved" in err and "Lower the learning rate (it was " in err
    assert not (out / "best.pth").exists() and not (out / "last.pth").exists()


def test_divergence_after_a_good_epoch_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch,
                                                                      make_image_root):
    root, out = make_image_root(per_class=8, size=(40, 40)), tmp_path / "run"
    real = train.train_one_epoch

    def second_epoch_blows_up(objects, *args, epoch=0, **kwargs):
        stats = real(objects, *args, epoch=epoch, **kwargs)
        if epoch == 1:
            with torch.no_grad():
                next(objects.model.parameters()).fill_(float("nan"))  # what a too-large step does
        return stats
    monkeypatch.setattr(train, "train_one_epoch", second_epoch_blows_up)
    assert main(["train", "--out", str(out), "--data", str(root), *TINY, "--epochs", "3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gv3lite train: error: training diverged at epoch 2: ") and err.count("\n") == 1, err
    assert f"the last good checkpoint, {out / 'last.pth'} (epoch 1), is kept" in err
    last, best = read_checkpoint(out / "last.pth"), read_checkpoint(out / "best.pth")
    assert last["epoch"] == 1 and best["epoch"] == 1
    assert non_finite_tensors(last["model"]) == [] and non_finite_tensors(best["model"]) == []


class Broken(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x.flatten(1)) * float("nan")


def test_train_one_epoch_and_evaluate_refuse_nan():
    model = Broken()
    batches = [(torch.randn(2, 4), torch.tensor([0, 1]))]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    objects = train.TrainObjects(model, opt, sched, Objective())
    with pytest.raises(train.NonFiniteError, match="the training logits and loss became nan at epoch 3, step 5"):
        train.train_one_epoch(objects, batches, "cpu", epoch=2, start_step=4, callbacks=[DivergenceGuard()])
    with pytest.raises(train.NonFiniteError, match="val logits are not finite"):
        train.evaluate(model, batches)
