"""Issue 26, the command line: every bad flag, device, opset, image size, batch size, seed, NaN checkpoint or teacher,
failed job and stopped torchrun process ends in one line naming the problem and the fix (exit 2), never a traceback
or a silent fallback; files get the umask's mode. All on fixtures the tests make (tiny ImageFolder trees, injected
``OSError``s, monkeypatched failures)."""
import errno
import os
import stat

import pandas as pd
import pytest
import torch
from submitit.core.utils import FailedJobError

import gv3lite.cli as cli
import gv3lite.distributed as distributed
import gv3lite.utils as utils
from gv3lite.checkpoint import save_checkpoint
from gv3lite.cli import build_parser, main, recipe_from_args
from gv3lite.models import build_model
from gv3lite.launch import cap_jobs, job_error, submit_runs
from gv3lite.recipe import Recipe
from gv3lite.teacher import create_teacher

from cli_helpers import TINY, error_of, no_debug  # noqa: F401 (no_debug: an autouse fixture)



@pytest.fixture
def checkpoint_file(tmp_path):
    """A gv3lite checkpoint of an untrained 2-class ghostnetv3_050 at 40 px (what ``export`` and ``eval`` read)."""
    recipe = Recipe(img_size=40, teacher=None)
    model = build_model(recipe, 2)
    return save_checkpoint({"model": model.state_dict(), "recipe": recipe.to_dict(), "num_classes": 2,
                            "classes": ["a", "b"]}, tmp_path / "ckpt" / "last.pth")


# ---------------------------------------------------------------------------------------------- devices, flags
def test_a_device_torch_knows_but_gv3lite_does_not_run_on_is_one_line(tmp_path, capsys):
    err = error_of(["train", "--device", "mps", "--out", str(tmp_path / "run"), "--data", str(tmp_path)], capsys)
    assert err == ("gv3lite train: error: device 'mps' is not supported: gv3lite trains and evaluates on 'cpu' or "
                   "'cuda' (or 'cuda:N'); use --device cpu, cuda or auto\n")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flag, value, message", [
    ("--opset", "5", "opset=5: this network exports with ONNX opsets 11 to 23"),
    ("--opset", "99", "opset=99: this network exports with ONNX opsets 11 to 23"),
    ("--img-size", "32", "img_size=32: give the side in pixels the model was trained at (an int >= 33"),
    ("--img-size", "0", "img_size=0: give the side in pixels"),  # not silently the recipe's size
])
def test_export_refuses_bad_opset_and_image_size(tmp_path, capsys, checkpoint_file, flag, value, message):
    onnx = tmp_path / "out.onnx"
    err = error_of(["export", "--checkpoint", str(checkpoint_file), "--onnx", str(onnx), flag, value], capsys)
    assert err.startswith(f"gv3lite export: error: {message}"), err
    assert not onnx.exists()


def test_export_on_a_full_disk_keeps_the_good_onnx_file_and_names_it(tmp_path, capsys, checkpoint_file, monkeypatch):
    onnx = tmp_path / "good.onnx"
    onnx.write_bytes(b"a good ONNX file")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(utils.os, "fsync", full)
    err = error_of(["export", "--checkpoint", str(checkpoint_file), "--onnx", str(onnx)], capsys)
    assert err == (f"gv3lite export: error: could not write ONNX file {onnx} (its previous content is kept): No space "
                   "left on device; free disk space there or choose another output folder\n")
    assert onnx.read_bytes() == b"a good ONNX file" and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt",
                                                                                                     "good.onnx"]


@pytest.mark.parametrize("value", ["-1", "0"])
def test_eval_refuses_a_batch_size_below_one(capsys, value):
    err = error_of(["eval", "--checkpoint", "never-read.pth", "--batch-size", value], capsys)
    assert err == f"gv3lite eval: error: --batch-size {value}: must be an integer >= 1 (images per forward pass, " \
                  "e.g. 256)\n"


@pytest.mark.parametrize("argv, message", [
    (["--set", "batch_size=1"], "recipe.batch_size=1: must be an integer >= 2 (BatchNorm in train mode needs at "
                                "least 2 images per batch"),
    (["--batch-size", "1"], "recipe.batch_size=1: must be an integer >= 2"),
    (["--seed", str(2**70)], f"recipe.seed={2**70}: must be an integer in [0, 2**32)"),
    (["--set", "data_seed=-1"], "recipe.data_seed=-1: must be an integer >= 0"),
    (["--set", f"data_seed={2**32}"], f"recipe.data_seed={2**32}: must be an integer in [0, 2**32)"),
    (["--set", "epochs=abc", "--epochs", "2"], "epochs is given twice, as --set epochs='abc' and --epochs 2; give it "
                                               "once"),
    (["--set", "img_size=7", "--img-size", "40"], "img_size is given twice, as --set img_size=7 and --img-size 40"),
    (["--set", "batch_size=0", "--batch-size", "4"], "batch_size is given twice, as --set batch_size=0 and "
                                                     "--batch-size 4"),
    (["--set", "img_size=7"], "recipe.img_size=7: must be an integer >= 33"),
    (["--set", "model=ghostnetv3_100", "--width", "0.5"], "model is given twice, as --set model='ghostnetv3_100' and "
                                                          "--width 0.5"),
])
def test_flags_and_set_are_checked_by_the_same_rules_and_never_override_silently(tmp_path, capsys, argv, message):
    err = error_of(["train", "--out", str(tmp_path / "run"), "--data", str(tmp_path), *argv], capsys)
    assert err.startswith(f"gv3lite train: error: {message}"), err
    assert not (tmp_path / "run").exists()


def test_the_same_value_as_set_and_as_flag_is_fine():
    args = build_parser().parse_args(["train", "--set", "epochs=3", "--epochs", "3", "--set", "seed=4294967295"])
    recipe = recipe_from_args(args)
    assert (recipe.epochs, recipe.seed) == (3, 2**32 - 1)


# ------------------------------------------------------------------------------------ NaN checkpoint, teacher
def test_nan_last_pth_on_resume_and_a_nan_teacher_get_their_own_messages(tmp_path, capsys, make_image_root):
    root, out = make_image_root(per_class=4, size=(48, 48)), tmp_path / "run"
    assert main(["train", "--out", str(out), "--data", str(root), *TINY]) == 0
    ckpt = torch.load(out / "last.pth", weights_only=True)
    ckpt["model"]["conv_stem.weight"][0, 0, 0, 0] = float("nan")
    torch.save(ckpt, out / "last.pth")
    err = error_of(["train", "--out", str(out), "--data", str(root), *TINY, "--resume"], capsys)
    assert err == (f"gv3lite train: error: cannot resume from {out / 'last.pth'}: its weights hold NaN/inf (1 tensors, "
                   "e.g. 'conv_stem.weight'); gv3lite never saves such weights, so the file was damaged or replaced: "
                   "restore a good copy of it, or move it away and train into a new --out\n")
    assert "learning rate" not in err

    with pytest.raises(FloatingPointError, match=f"teacher checkpoint {out / 'last.pth'} holds non-finite weights "
                                                 r"\(NaN/inf in 1 tensors, e.g. 'conv_stem.weight'\)"):
        create_teacher(out / "last.pth", ["a", "b"])
    online = ["--set", "img_size=40", "--set", "batch_size=4", "--epochs", "1", "--set", f"teacher={out / 'last.pth'}",
              "--set", "kd_mode=online", "--set", "sched=cosine", "--set", "warmup_epochs=0", "--quiet"]
    err = error_of(["train", "--out", str(tmp_path / "student"), "--data", str(root), *online], capsys)
    assert err.startswith(f"gv3lite train: error: teacher checkpoint {out / 'last.pth'} holds non-finite weights")
    assert "learning rate" not in err


# ------------------------------------------------------------------------------------------------ file modes
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_files_are_written_with_the_umasks_mode(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        paths = [save_checkpoint({"epoch": 1}, tmp_path / "last.pth"),
                 utils.write_csv(pd.DataFrame({"a": [1]}), tmp_path / "runs.csv"),
                 utils.write_csv(pd.DataFrame({"a": [1]}), tmp_path / "predictions.csv.gz"),
                 utils.write_atomic(tmp_path / "README.md", "text")]
    finally:
        os.umask(old)
    assert [stat.S_IMODE(p.stat().st_mode) for p in paths] == [mode] * 4
    assert pd.read_csv(tmp_path / "predictions.csv.gz")["a"].tolist() == [1]


def test_a_write_that_hits_a_full_disk_names_the_path_not_torchs_unexpected_pos(tmp_path, monkeypatch):
    path = save_checkpoint({"epoch": 1}, tmp_path / "last.pth")
    real = utils.os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def fileno(self):
            return self.f.fileno()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(utils.os, "fdopen", lambda fd, mode: Full(real(fd, mode)))
    with pytest.raises(OSError, match=f"could not save checkpoint {path} \\(its previous content is kept\\): No space "
                                      "left on device; free disk space there"):
        save_checkpoint({"epoch": 2, "w": torch.zeros(10_000)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"epoch": 1} and [p.name for p in tmp_path.iterdir()] == ["last.pth"]


# --------------------------------------------------------------------------------------- jobs, submitit, DDP
def test_a_failed_submitit_job_shows_its_error_not_only_its_log(tmp_path):
    with pytest.raises(ChildProcessError, match=r"1 of 2 runs failed: run bad failed with ValueError: invalid "
                                                r"literal for int\(\) with base 10: 'abc' \(job \d+, log .*\.err\)"):
        submit_runs(int, {"good": "7", "bad": "abc"}, tmp_path / "submitit", "local", jobs=2)
    trace = ("Job (task=0) failed during processing with trace:\n----------------------\nTraceback (most recent call "
             "last):\n  File \"x.py\", line 1, in f\n    raise KeyError('k')\nKeyError: 'k'\n----------------------\n"
             "You can check full logs with 'job.stderr(0)' and 'job.stdout(0)'or at paths:\n  - /a.err\n  - /a.out")
    assert job_error(FailedJobError(trace)) == "KeyError: 'k'"


def test_jobs_are_capped_by_the_runs_and_the_memory_with_the_reason():
    lines = []
    assert cap_jobs(12, 8, lines.append, available=64 * 2**30) == 8
    assert cap_jobs(12, 8, lines.append, available=5 * 2**30 + 1) == 5
    assert cap_jobs(2, 8, lines.append, available=2**29) == 1  # always at least one
    assert cap_jobs(2, 0, lines.append, available=64 * 2**30) == 1
    assert lines == ["--jobs 12 lowered to 8: only 8 runs to train",
                     "--jobs 12 lowered to 8: only 8 runs to train",
                     "--jobs 8 lowered to 5: 5.0 GiB of memory available and a training takes up to ~1.0 GiB; free "
                     "memory to run more at once",
                     "--jobs 2 lowered to 1: 0.5 GiB of memory available and a training takes up to ~1.0 GiB; free "
                     "memory to run more at once",
                     "--jobs 2 lowered to 1: only 0 runs to train"]


def test_ddp_timeout_is_minutes_from_the_environment_and_reaches_the_process_group(monkeypatch):
    monkeypatch.delenv("GV3LITE_DDP_TIMEOUT_MIN", raising=False)
    assert utils.ddp_timeout().total_seconds() == 600
    monkeypatch.setenv("GV3LITE_DDP_TIMEOUT_MIN", "0.5")
    assert utils.ddp_timeout().total_seconds() == 30
    for bad in ("0", "-1", "abc", "inf", "nan"):
        monkeypatch.setenv("GV3LITE_DDP_TIMEOUT_MIN", bad)
        with pytest.raises(ValueError, match=f"GV3LITE_DDP_TIMEOUT_MIN='{bad}': give the minutes"):
            utils.ddp_timeout()
    monkeypatch.setenv("GV3LITE_DDP_TIMEOUT_MIN", "2")
    seen = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group",
                        lambda backend, **kw: seen.update(backend=backend, **kw))
    distributed.setup_distributed("cpu")
    assert seen == {"backend": "gloo", "timeout": utils.ddp_timeout()} and seen["timeout"].total_seconds() == 120


def test_a_stopped_torchrun_process_ends_the_job_with_a_clear_message(tmp_path, capsys, monkeypatch):
    def gloo_timeout(*a, **k):  # what Gloo raises on rank 0 when rank 1 was stopped (kill -STOP) for the timeout
        raise RuntimeError("[/pytorch/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting "
                           "120000ms for recv operation to complete")
    monkeypatch.setattr(cli, "run", gloo_timeout)
    monkeypatch.setattr(cli, "resolve_data_root", lambda *a, **k: tmp_path)
    monkeypatch.setattr(cli.dist, "is_initialized", lambda: True)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("GV3LITE_DDP_TIMEOUT_MIN", "2")
    out = tmp_path / "run"
    stopped = ("gv3lite train: error: rank 0 of 2: another process of this torchrun job stopped answering (Timed out "
               "waiting 120000ms for recv operation to complete; a process waits 2 min, GV3LITE_DDP_TIMEOUT_MIN), so "
               "the job stops. ")
    err = error_of(["train", "--out", str(out), "--data", str(tmp_path)], capsys)
    assert err == stopped + "No epoch had finished (no last.pth): run the same torchrun command again\n"
    save_checkpoint({"epoch": 1}, out / "last.pth")  # an epoch finished before the other process stopped
    err = error_of(["train", "--out", str(out), "--data", str(tmp_path), "--resume"], capsys)
    assert err == stopped + f"Finished epochs are kept in {out}/last.pth: run the same torchrun command with --resume\n"
    monkeypatch.setattr(cli, "run", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):  # any other RuntimeError is still a bug with its traceback
        main(["train", "--out", str(tmp_path / "run2"), "--data", str(tmp_path)])


@pytest.mark.parametrize("text", [
    "[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:598] Application timeout caused pair closure",
    "Socket Timeout",
    "[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:4312",
])
def test_gloo_errors_of_a_stopped_peer_are_recognised(monkeypatch, text):
    """Gloo's words for a peer that stopped answering (strings of libtorch_cpu's Gloo): after one collective timed out,
    the next one on that pair fails with 'Application timeout caused pair closure' -- a rank that met that error
    first ended with a traceback instead of the stopped-process line (a guess at issue 26's re-attack row 87)."""
    monkeypatch.setattr(cli.dist, "is_initialized", lambda: True)
    assert cli.stopped_process(RuntimeError(text))
    assert not cli.stopped_process(RuntimeError("a bug"))


def test_a_damaged_recipe_yaml_under_resume_is_named(tmp_path, capsys):
    """--resume reads the run's own recipe.yaml; a cut one used to say "recipe.num_classes='nu': must be an integer"
    without naming the file."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pth").write_bytes(b"")
    (out / "recipe.yaml").write_text("model: ghostnetv3\nnum_classes: nu")
    err = error_of(["train", "--out", str(out), "--data", str(tmp_path), "--resume", *TINY], capsys)
    assert err.startswith(f"gv3lite train: error: recipe file '{out / 'recipe.yaml'}': recipe.num_classes='nu'"), err
    assert "restore it from a copy, or pass --recipe" in err
