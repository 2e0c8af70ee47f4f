"""The study's reading of a training (issue 22): ``Recipe.precise_bn`` (BN statistics recomputed over the train
images before each evaluation) and ``Recipe.flip_tta`` (mean softmax of each val image and its mirror) inside the
loop give exactly the numbers the variance pilot measured after training (``gv3lite.posthoc``), and leave the
training itself (the weights) unchanged."""
import torch
from torch import nn

from gv3lite.checkpoint import read_training_checkpoint
from gv3lite.data import build_loader
from gv3lite.experiment import build_model, recipe_datasets, run
from gv3lite.posthoc import evaluate_tta, posthoc_top1
from gv3lite.recipe import Recipe
from gv3lite.train import evaluate

from conftest import FOUR_CLASSES

TINY = dict(classes=FOUR_CLASSES, images_per_class_train=16, images_per_class_val=10, img_size=40, epochs=2,
            batch_size=16, warmup_epochs=0.5, ema=True, ema_decay=0.5)


def test_evaluate_with_flip_reads_the_mean_softmax_of_the_image_and_its_mirror(tiny_datasets):
    torch.manual_seed(1)
    net = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(48, 4)).eval()  # not mirror-symmetric
    val = tiny_datasets[1]
    center, flip = (evaluate(net, build_loader(val, 32, train=False), flip=f) for f in (False, True))
    tta = evaluate_tta(net, val, batch_size=32)
    assert center["top1"] == tta["center"] and flip["top1"] == tta["flip"]
    assert (center["predictions"] != flip["predictions"]).any()  # the two readings differ on some image
    images = torch.stack([val[i][0] for i in range(len(val))])
    with torch.no_grad():
        mean = (net(images).softmax(1) + net(torch.flip(images, dims=[3])).softmax(1)) / 2
    targets = torch.tensor([val[i][1] for i in range(len(val))])
    expected = torch.nn.functional.nll_loss(mean.log(), targets).item()
    assert abs(flip["loss"] - expected) < 1e-5


def test_the_loop_reads_raw_and_ema_weights_as_the_pilot_did_after_training(data_root, tmp_path):
    recipe = Recipe(**TINY, precise_bn=True, flip_tta=True)
    history = run(recipe, data_root, tmp_path / "read", quiet=True)
    plain = run(recipe.replace(precise_bn=False, flip_tta=False), data_root, tmp_path / "plain", quiet=True)
    last, last_plain = (read_training_checkpoint(tmp_path / d / "last.pth") for d in ("read", "plain"))
    for key, value in last_plain["model"].items():  # the reading changes BN statistics, never the trained weights
        if "running" not in key and "num_batches" not in key:
            assert torch.equal(last["model"][key], value), key
    datasets = recipe_datasets(recipe, data_root)
    model = build_model(recipe, len(datasets[0].classes))
    pilot = posthoc_top1(model, [last_plain], datasets[0], datasets[1])
    assert history["val_top1"].iloc[-1] == pilot["raw_pbn_flip"]
    assert history["ema_top1"].iloc[-1] == pilot["ema_pbn_flip"]
    assert plain["val_top1"].iloc[-1] == pilot["raw_center"] and plain["ema_top1"].iloc[-1] == pilot["ema_center"]
