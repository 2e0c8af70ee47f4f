"""gv3lite.callbacks on their own (the runs of tests/test_train.py, test_nonfinite.py and test_crash_safety.py use
them end to end): which callbacks a run gets, in which order, a resume that cannot start failing at once, the guard's
step check and its one error, and the prediction table of a hand-made epoch result."""
import pandas as pd
import pytest
import torch

from gv3lite.callbacks import (Checkpointer, DivergenceGuard, PredictionWriter, Progress, check_resumable,
                               run_callbacks)
from gv3lite.distill import LossParts
from gv3lite.train import EpochResult, NonFiniteError


def test_a_run_gets_its_callbacks_in_order(tmp_path):
    assert [type(c) for c in run_callbacks(None, {}, quiet=True)] == [DivergenceGuard]
    kinds = [type(c) for c in run_callbacks(tmp_path / "run", {"lr": 1.0})]
    assert kinds == [Progress, DivergenceGuard, PredictionWriter, Checkpointer]  # predictions before the commit point
    with pytest.raises(FileNotFoundError, match="last.pth does not exist; run without --resume first"):
        run_callbacks(tmp_path / "run", {}, resume=True)  # before any data is read
    with pytest.raises(FileNotFoundError):
        check_resumable(None, True)
    check_resumable(tmp_path, False)


def test_the_guard_stops_a_non_finite_loss_and_names_the_kept_checkpoint(tmp_path):
    guard = DivergenceGuard(tmp_path)
    finite = LossParts(torch.tensor(1.0), torch.tensor(1.0), None)
    guard.on_loss(finite, torch.zeros(2, 3), epoch=0, step=0)
    with pytest.raises(NonFiniteError, match="the training loss became inf at epoch 2, step 8"):
        guard.on_loss(LossParts(torch.tensor(float("inf")), torch.tensor(1.0), None), torch.zeros(2, 3), 1, 7)

    class State:  # what on_diverged reads of gv3lite.train.FitState
        rank, epoch = 0, 2
        objects = type("Objects", (), {"optimizer": torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)})
    err = guard.on_diverged(State(), NonFiniteError("the loss became nan"))
    assert str(err).startswith("training diverged at epoch 3: the loss became nan; no checkpoint was saved. Lower "
                               "the learning rate (it was 0.5 at the last step)")


def test_predictions_table_of_an_epoch(tmp_path):
    val = {"predictions": torch.tensor([0, 1, 1]), "targets": torch.tensor([0, 1, 0])}
    ema = {"predictions": torch.tensor([0, 0, 0]), "targets": val["targets"]}

    class State:
        rank = 0
    PredictionWriter(tmp_path).on_epoch_end(State(), EpochResult({}, val, ema, evaluated=True, score=0.0))
    table = pd.read_csv(tmp_path / "predictions.csv")
    assert table["correct_raw"].tolist() == [1, 1, 0] and table["correct_ema"].tolist() == [1, 0, 1]
    (tmp_path / "predictions.csv").unlink()
    PredictionWriter(tmp_path).on_epoch_end(State(), EpochResult({}, val, None, evaluated=False, score=0.0))
    assert not (tmp_path / "predictions.csv").exists()  # an epoch that eval_every skips writes nothing
