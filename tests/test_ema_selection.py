"""``best.pth`` never selects an EMA that has not warmed up (issue 25): the epoch score is the better val top-1 of the
raw and the EMA weights (`gv3lite.train.epoch_score`), every checkpoint records which weights gave it (``selected``),
and ``gv3lite.export.model_from_checkpoint`` loads those unless told otherwise."""
import math

import pytest
import torch

from gv3lite.checkpoint import read_checkpoint
from gv3lite.data import build_datasets
from gv3lite.experiment import run
from gv3lite.export import model_from_checkpoint
from gv3lite.recipe import Recipe
from gv3lite.train import epoch_score

TWO_CLASSES = ["n01440764", "n03888257"]  # tench, parachute


def test_epoch_score_takes_the_better_weights():
    assert epoch_score({"top1": 28.2}, {"top1": 10.0}) == (28.2, "raw")   # an EMA still at the random init
    assert epoch_score({"top1": 60.0}, {"top1": 62.5}) == (62.5, "ema")
    assert epoch_score({"top1": 60.0}, {"top1": 60.0}) == (60.0, "ema")   # a tie keeps the EMA (what the paper reports)
    assert epoch_score({"top1": 60.0}, None) == (60.0, "raw")             # no EMA: exactly the old score
    score, _ = epoch_score({"top1": float("nan")}, None)                  # an epoch eval_every skipped
    assert math.isnan(score)


def test_best_checkpoint_records_and_loads_the_selected_weights(data_root, tmp_path):
    """EMA decay 0.9999 over 3 epochs of 6 steps: the EMA is still ~99.8 % the initial weights. best.pth holds the
    epoch whose better score is highest, says which weights gave it, and model_from_checkpoint loads exactly those."""
    datasets = build_datasets(data_root, 40, classes=TWO_CLASSES, images_per_class_train=50, images_per_class_val=20,
                              seed=0, scale=(0.25, 1.0))
    recipe = Recipe(classes=TWO_CLASSES, images_per_class_train=50, images_per_class_val=20, img_size=40, epochs=3,
                    batch_size=16, lr=5e-3, warmup_epochs=0.5, drop_rate=0.0, label_smoothing=0.0, ema=True,
                    ema_decay=0.9999, num_conv_branches=1, use_scale_branch=False, use_identity_branch=False)
    history = run(recipe, out_dir=tmp_path, quiet=True, datasets=datasets)
    scores = [epoch_score({"top1": r.val_top1}, {"top1": r.ema_top1}) for r in history.itertuples()]
    best_score, best_weights = max(scores, key=lambda s: s[0])  # the first epoch reaching the maximum
    best = read_checkpoint(tmp_path / "best.pth")
    assert best["best_top1"] == pytest.approx(best_score) and best["selected"] == best_weights
    assert read_checkpoint(tmp_path / "last.pth")["selected"] == scores[-1][1]
    expected = best["model_ema"] if best_weights == "ema" else best["model"]
    for use_ema, weights in [(None, expected), (False, best["model"]), (True, best["model_ema"])]:
        model, _, _ = model_from_checkpoint(tmp_path / "best.pth", use_ema=use_ema)
        loaded = model.state_dict()
        assert all(torch.equal(loaded[k], weights[k]) for k in loaded), (use_ema, best_weights)
