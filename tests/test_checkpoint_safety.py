"""Nothing lost, nothing executed (issue 13): atomic saves under a full disk / permission error / crash, stale
temporary files, checkpoints that are not training checkpoints, weights of another width, and crafted pickles."""
import errno
import os

import pytest
import torch

import gv3lite.checkpoint as checkpoint
import gv3lite.utils as utils
from gv3lite import create_model
from gv3lite.checkpoint import (load_checkpoint, read_checkpoint, read_training_checkpoint, remove_stale_temp_files,
                                restore_training_state, save_checkpoint)

NAME = "ghostnetv3_050"


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------------------------------------- saving
@pytest.mark.parametrize("where, code, fix", [
    ("fsync", errno.ENOSPC, "No space left on device; free disk space there or choose another output folder"),
    ("mkstemp", errno.EACCES, "Permission denied; make the folder writable"),
    ("replace", errno.EROFS, "Read-only file system; the file system is read-only"),
])
def test_disk_full_or_permission_error_keeps_the_previous_checkpoint(tmp_path, monkeypatch, where, code, fix):
    path = save_checkpoint({"epoch": 1, "w": torch.arange(5)}, tmp_path / "last.pth")

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))
    target = {"fsync": (checkpoint.os, "fsync"), "mkstemp": (utils.tempfile, "mkstemp"),
              "replace": (checkpoint.os, "replace")}[where]
    monkeypatch.setattr(*target, fail)
    with pytest.raises(OSError, match=f"could not save checkpoint {path} \\(its previous content is kept\\): "
                                      f"{fix}") as err:
        save_checkpoint({"epoch": 2, "w": torch.arange(9)}, path)
    assert err.value.errno == code
    monkeypatch.undo()
    assert listing(tmp_path) == ["last.pth"]  # no temporary file left
    assert read_checkpoint(path)["epoch"] == 1 and torch.equal(read_checkpoint(path)["w"], torch.arange(5))


def test_a_crash_mid_save_never_leaves_a_half_written_file(tmp_path, monkeypatch):
    path = save_checkpoint({"epoch": 1}, tmp_path / "last.pth")
    real_save = torch.save

    def crash(obj, f, *a, **k):
        real_save(obj, f)
        f.truncate(10)  # half written, then the process is interrupted
        raise KeyboardInterrupt
    monkeypatch.setattr(checkpoint.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"epoch": 2, "w": torch.zeros(1000)}, path)
    monkeypatch.undo()
    assert listing(tmp_path) == ["last.pth"] and read_checkpoint(path) == {"epoch": 1}


def test_stale_temporary_files_are_removed_live_ones_kept(tmp_path):
    dead = tmp_path / ".last.pth.999999999.abc.tmp"  # a pid no process has (kill -9 mid-save)
    legacy = tmp_path / ".last.pth.k3j2_x.tmp"       # older versions: no pid in the name
    live = tmp_path / f".last.pth.{os.getpid()}.zz.tmp"  # a save in progress
    other = tmp_path / ".best.pth.999999999.q.tmp"      # another file's: left to that file's saves
    for p in (dead, legacy, live, other):
        p.write_bytes(b"partial")
    save_checkpoint({"epoch": 3}, tmp_path / "last.pth")
    assert listing(tmp_path) == sorted([live.name, other.name, "last.pth"])
    assert remove_stale_temp_files(tmp_path / "best.pth") == [other]


# ----------------------------------------------------------------------------------- resuming a training run
def _training_state(name=NAME, num_classes=4):
    from gv3lite.recipe import Recipe
    from gv3lite.experiment import build_optimizer, build_scheduler
    from gv3lite.models import build_model
    recipe = Recipe(model=name, epochs=2, sched="cosine", warmup_epochs=0)
    model = build_model(recipe, num_classes)
    optimizer = build_optimizer(recipe, model)
    return recipe, model, optimizer, build_scheduler(recipe, optimizer, 3)


def test_a_tensor_or_bare_weights_as_last_pth_is_refused(tmp_path):
    torch.save(torch.zeros(3), tmp_path / "last.pth")
    with pytest.raises(ValueError, match="last.pth holds a Tensor, not a gv3lite training checkpoint.*move it away"):
        read_training_checkpoint(tmp_path / "last.pth")
    torch.save(create_model(NAME, num_classes=4).state_dict(), tmp_path / "last.pth")
    with pytest.raises(ValueError, match=r"last.pth is not a gv3lite training checkpoint: it lacks \['model', "
                                         r"'optimizer'"):
        read_training_checkpoint(tmp_path / "last.pth")


def test_other_width_weights_do_not_resume_and_nothing_is_loaded(tmp_path):
    recipe, model, optimizer, scheduler = _training_state()
    _, wide, wide_opt, wide_sched = _training_state("ghostnetv3_100")
    ckpt = {"model": wide.state_dict(), "model_ema": None, "optimizer": wide_opt.state_dict(),
            "scheduler": wide_sched.state_dict(), "epoch": 1, "recipe": recipe.to_dict(), "history": [],
            "best_top1": 10.0}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"cannot resume from .*last.pth: checkpoint does not fit the model: "
                                         r"'conv_stem.weight' has shape \(16, 3, 3, 3\).*resume with the recipe"):
        restore_training_state(ckpt, tmp_path / "last.pth", model, optimizer, scheduler)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    ckpt["model"] = model.state_dict()
    with pytest.raises(ValueError, match="no EMA weights"):
        restore_training_state(ckpt, tmp_path / "last.pth", model, optimizer, scheduler, ema_model=wide)
    history, epoch, best = restore_training_state({**ckpt, "optimizer": optimizer.state_dict(),
                                                   "scheduler": scheduler.state_dict()}, "x", model, optimizer,
                                                  scheduler)
    assert (history, epoch, best) == ([], 1, 10.0)


# ------------------------------------------------------------------------------------------ crafted pickles
class Payload:
    """Unpickling this calls os.mkdir(marker): a stand-in for any code an attacker could run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_a_crafted_pickle_never_executes(tmp_path, capsys, monkeypatch):
    from gv3lite.cli import main
    from gv3lite.teacher import create_teacher
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"model": Payload(marker), "state_dict": Payload(marker)}, evil)
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model": Payload(marker)}, run / "last.pth")
    attempts = [lambda: read_checkpoint(evil), lambda: load_checkpoint(create_model(NAME), evil),
                lambda: create_model(NAME, checkpoint_path=evil), lambda: read_training_checkpoint(run / "last.pth"),
                lambda: create_teacher(evil, ["n01440764"])]
    for attempt in attempts:
        with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
            attempt()
    monkeypatch.delenv("GV3LITE_DEBUG", raising=False)
    assert main(["eval", "--checkpoint", str(evil)]) == 2
    err = capsys.readouterr().err
    assert "evil.pth is not a readable PyTorch checkpoint" in err and "refused by the weights-only loader" in err
    assert "weights_only" not in err  # never torch's advice to retry the unsafe way
    assert not marker.exists()
