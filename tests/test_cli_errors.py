"""One error path (issue 13): every refusal of the machine or of the input prints ``gv3lite <cmd>: error: ...`` with
the fix and exits 2, before any data is decoded when it can be; Ctrl-C prints the exact command that resumes."""
import errno
import os
import re

import pytest
import torch

import gv3lite.checkpoint as checkpoint
import gv3lite.utils as utils
from gv3lite.cli import main

from cli_helpers import TINY, error_of, no_debug  # noqa: F401 (no_debug: an autouse fixture)


def test_bad_out_is_refused_before_the_data_is_read(tmp_path, capsys, monkeypatch):
    no_data = str(tmp_path / "no_data")  # would be the next error if --out passed
    file = tmp_path / "file.txt"
    file.write_text("x")
    err = error_of(["train", "--out", str(file / "sub"), "--data", no_data], capsys)
    assert err == (f"gv3lite train: error: --out '{file / 'sub'}' is inside '{file}', an existing file, not a "
                   "folder; choose another --out\n")
    err = error_of(["reproduce", "--out", str(file), "--data", no_data], capsys)
    assert err.startswith(f"gv3lite reproduce: error: --out '{file}' is an existing file, not a folder")

    def refuse(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(utils.tempfile, "TemporaryFile", refuse)
    err = error_of(["train", "--out", str(tmp_path / "ro"), "--data", no_data], capsys)
    assert err == (f"gv3lite train: error: --out '{tmp_path / 'ro'}' is not writable (Permission denied); make it "
                   "writable (chmod u+w) or choose another --out\n")


def test_a_refused_option_leaves_no_out_folder(tmp_path, capsys):
    cases = [(["train", "--set", "lr=abc"], "recipe.lr='abc': must be a finite number"),
             (["train", "--epochs", "0"], "recipe.epochs=0: must be an integer >= 1"),
             (["reproduce", "--grids", "nope"], "unknown grid(s) ['nope']"),
             (["reproduce", "--seeds", "0"], "seeds=0: need at least 1")]
    for i, (argv, message) in enumerate(cases):
        out = tmp_path / f"out{i}" / "run"
        assert message in error_of([*argv, "--out", str(out)], capsys)
        assert not (tmp_path / f"out{i}").exists(), argv


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_a_one_line_error(tmp_path, capsys):
    err = error_of(["train", "--device", "cuda", "--out", str(tmp_path / "run"), "--data", str(tmp_path)], capsys)
    assert re.match(r"gv3lite train: error: device 'cuda' was asked for but torch sees no GPU .*use --device cpu",
                    err)


def test_unreadable_data_root_is_a_one_line_error(tmp_path, capsys, monkeypatch, make_image_root):
    root = make_image_root()
    real = os.listdir
    monkeypatch.setattr(os, "listdir", lambda p=".": (_ for _ in ()).throw(PermissionError(13, "Permission denied"))
                        if os.fspath(p) == str(root / "val") else real(p))
    err = error_of(["train", "--out", str(tmp_path / "run"), "--data", str(root)], capsys)
    assert err.startswith(f"gv3lite train: error: cannot read folder '{root / 'val'}' (Permission denied); make it "
                          "readable (chmod -R a+rX")


def test_a_bare_os_error_gets_its_path_and_a_fix(tmp_path, capsys, monkeypatch):
    def refuse(args):
        raise PermissionError(errno.EACCES, "Permission denied", "/some/file")
    monkeypatch.setattr("gv3lite.cli.run_eval", refuse)
    err = error_of(["eval", "--checkpoint", "x.pth"], capsys)
    assert err == "gv3lite eval: error: Permission denied: '/some/file'; check its permissions (chmod) or choose " \
                  "another path\n"


def test_disk_full_while_saving_is_a_clear_error_and_resume_works(tmp_path, capsys, monkeypatch, make_image_root):
    root, out = make_image_root(per_class=4, size=(48, 48)), tmp_path / "run"
    real_fsync, calls = os.fsync, []

    def fsync_then_full(fd):  # the first epoch's last.pth is saved, the second epoch's save hits a full disk
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(".last.pth."):  # its temporary file
            calls.append(fd)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)
    monkeypatch.setattr(checkpoint.os, "fsync", fsync_then_full)
    argv = ["train", "--out", str(out), "--data", str(root), *TINY, "--epochs", "2", "--set", "eval_every=1"]
    err = error_of(argv, capsys)
    assert err == (f"gv3lite train: error: could not save checkpoint {out / 'last.pth'} (its previous content is "
                   "kept): No space left on device; free disk space there or choose another output folder\n")
    assert checkpoint.read_training_checkpoint(out / "last.pth")["epoch"] == 1
    assert sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp")) == []
    monkeypatch.undo()
    assert main([*argv, "--resume"]) == 0  # nothing was lost: the run goes on from epoch 1


def test_bad_last_pth_on_resume(tmp_path, capsys, make_image_root):
    root, out = make_image_root(per_class=4, size=(48, 48)), tmp_path / "run"
    out.mkdir()
    torch.save(torch.zeros(3), out / "last.pth")
    err = error_of(["train", "--out", str(out), "--data", str(root), *TINY, "--resume"], capsys)
    assert err.startswith(f"gv3lite train: error: {out / 'last.pth'} holds a Tensor, not a gv3lite training "
                          "checkpoint")


def test_ctrl_c_prints_the_exact_command_that_resumes(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    epochs_done = []

    def interrupted(*a, **k):  # Ctrl-C after `epochs_done` epochs
        if epochs_done:
            torch.save({}, out / "last.pth")
        raise KeyboardInterrupt
    monkeypatch.setattr("gv3lite.cli.run", interrupted)
    monkeypatch.setattr("gv3lite.cli.resolve_data_root", lambda *a, **k: tmp_path)
    argv = ["train", "--out", str(out), "--data", str(tmp_path), "--set", "lr=1e-3"]
    assert main(argv) == 130  # before the first epoch ended: the same command starts over
    assert capsys.readouterr().err.endswith(f"To continue, run:\n  gv3lite train --out {out} --data {tmp_path} "
                                            "--set lr=1e-3\n")
    epochs_done.append(1)
    assert main(argv) == 130
    assert capsys.readouterr().err.endswith(f"--data {tmp_path} --set lr=1e-3 --resume\n")
    assert main([*argv, "--resume"]) == 130
    assert capsys.readouterr().err.endswith("--set lr=1e-3 --resume\n")  # not twice


def test_eval_refuses_a_diverged_checkpoint(tmp_path, capsys):
    from gv3lite.recipe import Recipe
    from gv3lite.models import build_model
    recipe = Recipe(teacher=None)
    model = build_model(recipe, 4)
    with torch.no_grad():
        model.classifier.weight.fill_(float("nan"))
    checkpoint.save_checkpoint({"model": model.state_dict(), "recipe": recipe.to_dict(), "num_classes": 4},
                               tmp_path / "best.pth")
    err = error_of(["eval", "--checkpoint", str(tmp_path / "best.pth"), "--data", str(tmp_path)], capsys)
    assert err.startswith(f"gv3lite eval: error: {tmp_path / 'best.pth'} holds non-finite weights (NaN/inf in 1 "
                          "tensors, e.g. 'classifier.weight'): it comes from a diverged training")


def test_download_without_network_is_a_clear_error(tmp_path, capsys, monkeypatch):
    import urllib.error

    import gv3lite.data.download as download

    def offline(*a, **k):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(download, "Imagenette", offline)
    err = error_of(["train", "--download", "--data", str(tmp_path / "dl"), "--out", str(tmp_path / "out"), *TINY],
                   capsys)
    assert err.startswith("gv3lite train: error: could not download Imagenette into") and "by hand" in err, err


def test_ctrl_c_under_make_names_the_make_target_that_resumes(tmp_path, capsys, monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr("gv3lite.study.cli.reproduce_factorial", interrupted)
    monkeypatch.setenv("GV3LITE_RESUME", "make main")  # as the Makefile's main target sets it
    argv = ["reproduce", "--design", "factorial", "--budget", "smoke", "--out", str(tmp_path)]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert err.endswith(f"To continue, run:\n  make main   (it runs: gv3lite {' '.join(argv)})\n")
    assert err.startswith("gv3lite reproduce: interrupted; finished epochs and runs are kept")
