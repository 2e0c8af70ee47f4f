"""The gv3lite command: train a tiny run, evaluate its checkpoint in train and re-parameterized form."""
import re
import subprocess
import sys
from pathlib import Path

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
    assert main(argv) == 2  # refuses to overwrite a run
    assert "last.pth exists; pass --resume" in capsys.readouterr().err
    assert main(["train", "--data", str(data_root), "--out", str(out), "--resume", "--quiet"]) == 0  # recipe.yaml
    capsys.readouterr()
    ckpt = str(out / "last.pth")
    assert main(["eval", "--checkpoint", ckpt, "--data", str(data_root), "--images-per-class", "4"]) == 0
    printed = capsys.readouterr().out
    assert "16 val images" in printed and "re-parameterized top-1" in printed and "OK" in printed
    assert main(["eval", "--checkpoint", ckpt, "--data", str(data_root), "--images-per-class", "2",
                 "--atol", "1e-12"]) == 1  # a tolerance nothing can meet → non-zero exit


def test_entry_point_lists_subcommands():
    run = subprocess.run([sys.executable, "-m", "gv3lite.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "train" in run.stdout and "eval" in run.stdout


# ------------------------------------------------------------------------------------------- user errors
@pytest.mark.parametrize("argv, message", [
    (["train", "--set", "ema=maybe"], "gv3lite train: error: recipe.ema='maybe': must be true or false"),
    (["train", "--set", "epochs=true"], "gv3lite train: error: recipe.epochs=True: must be an integer"),
    (["train", "--set", "lr=["], "gv3lite train: error: --set 'lr=\\[': the value is not valid YAML"),
    (["train", "--set", "lr"], "gv3lite train: error: --set expects KEY=VALUE, got 'lr'"),
    (["train", "--set", "learning_rate=1"], "gv3lite train: error: unknown recipe keys \\['learning_rate'\\]"),
    (["train", "--recipe", "nope.yaml"], "gv3lite train: error: recipe file 'nope.yaml' does not exist"),
    (["eval", "--checkpoint", "nope.pth"], "gv3lite eval: error: checkpoint file not found: .*nope.pth"),
    (["eval", "--checkpoint", "x.pth", "--atol", "-1"], "gv3lite eval: error: --atol -1.0: must be >= 0"),
])
def test_user_errors_print_one_line_and_exit_2(argv, message, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GV3LITE_DEBUG", raising=False)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert re.match(message, err) and "Traceback" not in err


def test_user_error_file_inputs(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("GV3LITE_DEBUG", raising=False)
    (tmp_path / "notes.pth").write_text("not weights")
    assert main(["eval", "--checkpoint", str(tmp_path / "notes.pth")]) == 2
    assert "notes.pth is not a readable PyTorch checkpoint" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text("epochs: [3\n")
    assert main(["train", "--recipe", str(tmp_path / "bad.yaml")]) == 2
    err = capsys.readouterr().err  # one line: the problem and where, not PyYAML's 4-8 lines with a source excerpt
    assert err.count("\n") == 1 and "bad.yaml' is not valid YAML: " in err and " at line 2, column 1 " in err, err
    assert "(while parsing a flow sequence at line 1, column 9); fix the file" in err, err
    assert main(["train", "--set", "lr=["]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "at line 1, column 2" in err, err
    out_file = tmp_path / "out.txt"
    out_file.write_text("")  # --out is checked before the data root is even looked at
    assert main(["train", "--out", str(out_file), "--data", str(tmp_path / "no_data")]) == 2
    assert f"--out '{out_file}' is an existing file" in capsys.readouterr().err


def test_debug_env_keeps_traceback_and_internal_errors_propagate(monkeypatch):
    monkeypatch.setenv("GV3LITE_DEBUG", "1")
    with pytest.raises(ValueError, match="recipe.ema='maybe'"):
        main(["train", "--set", "ema=maybe"])
    monkeypatch.delenv("GV3LITE_DEBUG")

    def broken(args):
        raise RuntimeError("an internal bug")
    monkeypatch.setattr("gv3lite.cli.run_eval", broken)
    with pytest.raises(RuntimeError, match="an internal bug"):
        main(["eval", "--checkpoint", "x.pth"])


def test_entry_point_user_error_exit_status():
    run = subprocess.run([sys.executable, "-m", "gv3lite.cli", "train", "--set", "ema=maybe"], capture_output=True,
                         text=True, timeout=120, cwd=Path(__file__).parent.parent)
    assert run.returncode == 2 and run.stderr.startswith("gv3lite train: error: recipe.ema='maybe'")
    assert "Traceback" not in run.stderr
