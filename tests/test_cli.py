"""The gv3lite command: train a tiny run, evaluate its checkpoint in train and re-parameterized form."""
import subprocess
import sys

import pytest

from gv3lite.cli import build_parser, main, recipe_from_args
from gv3lite.recipe import Recipe

from conftest import FOUR_CLASSES


def test_recipe_file_then_flags(tmp_path):
    Recipe(epochs=3, lr=0.5, opt="sgd").save(tmp_path / "r.yaml")
    args = build_parser().parse_args(["train", "--recipe", str(tmp_path / "r.yaml"), "--lr", "0.1", "--width", "1.0",
                                      "--no-ema", "--set", "auto_augment=randaugment"])
    recipe = recipe_from_args(args)
    assert (recipe.epochs, recipe.lr, recipe.opt, recipe.model, recipe.ema, recipe.auto_augment) == \
        (3, 0.1, "sgd", "ghostnetv3_100", False, "randaugment")
    assert recipe_from_args(build_parser().parse_args(["train"])) == Recipe()  # defaults = the main job
    with pytest.raises(KeyError, match="unknown recipe keys"):
        recipe_from_args(build_parser().parse_args(["train", "--set", "lr_max=1"]))


def test_train_then_eval(data_root, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--data", str(data_root), "--out", str(out), "--epochs", "1", "--batch-size", "16",
            "--img-size", "64", "--classes", *FOUR_CLASSES, "--images-per-class-train", "8",
            "--images-per-class-val", "4", "--sched", "cosine", "--warmup-epochs", "0.5", "--ema", "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "val top-1" in printed and "top-5" in printed and "wall time" in printed
    with pytest.raises(SystemExit, match="--resume"):
        main(argv)  # refuses to overwrite a run
    assert main(["train", "--data", str(data_root), "--out", str(out), "--resume", "--quiet"]) == 0  # recipe.yaml
    capsys.readouterr()
    ckpt = str(out / "last.pth")
    assert main(["eval", "--checkpoint", ckpt, "--data", str(data_root), "--images-per-class", "4"]) == 0
    printed = capsys.readouterr().out
    assert "16 val images" in printed and "re-parameterized top-1" in printed and "OK" in printed
    assert main(["eval", "--checkpoint", ckpt, "--data", str(data_root), "--images-per-class", "2",
                 "--atol", "-1"]) == 1  # a tolerance nothing can meet → non-zero exit


def test_entry_point_lists_subcommands():
    run = subprocess.run([sys.executable, "-m", "gv3lite.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "train" in run.stdout and "eval" in run.stdout
