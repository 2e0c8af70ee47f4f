"""Shared fixtures: the real Imagenette root and small class-balanced subsets of it, and the BN randomizer of the
round-trip tests (``randomize_bn_around_activations``; the plain one is ``gv3lite.reparam.randomize_batchnorm``), and
the stand-in training of the factorial study's tests (``fake_training``), and how ``make test`` splits the suite over
its pytest-xdist workers (``pytest_xdist_make_scheduler``).

The data root is ``GV3LITE_DATA`` or, when unset, ``<repo>/../shared/data/imagenette2-224``.
Tests that need it are skipped with a clear reason when it is absent.
"""
import os
from pathlib import Path

import pytest
import torch
from torch import nn

REPO = Path(__file__).resolve().parent.parent
FOUR_CLASSES = ["n01440764", "n02979186", "n03394916", "n03888257"]  # tench, cassette player, French horn, parachute


def _data_root() -> Path:
    return Path(os.environ.get("GV3LITE_DATA") or REPO.parent / "shared" / "data" / "imagenette2-224")


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The Imagenette ImageFolder root (train/ and val/); skips the test when it is not on disk."""
    root = _data_root()
    if not (root / "train").is_dir() or not (root / "val").is_dir():
        pytest.skip(f"Imagenette not found at {root}; set GV3LITE_DATA to an ImageFolder root with train/ and val/")
    return root


@pytest.fixture(scope="session")
def tiny_datasets(data_root):
    """A (train, val) pair: 4 classes, 100 train and 20 val images per class, 64 px, decoded once per session."""
    from gv3lite.data import build_datasets
    return build_datasets(data_root, 64, classes=FOUR_CLASSES, images_per_class_train=100, images_per_class_val=20,
                          seed=0, scale=(0.25, 1.0))


@pytest.fixture
def make_image_root(tmp_path):
    """A factory of tiny ImageFolder roots under ``tmp_path``: ``make_image_root(classes=("a", "b"), per_class=2,
    size=(12, 10))`` writes ``train/`` and ``val/`` with ``per_class`` random RGB PNGs per class and returns the root.
    Made by the test itself (no committed images)."""
    import numpy as np
    from PIL import Image

    def make(classes=("a", "b"), per_class=2, size=(12, 10), name="data"):
        root = tmp_path / name
        g = np.random.default_rng(0)
        for split in ("train", "val"):
            for c in classes:
                (root / split / c).mkdir(parents=True, exist_ok=True)
                for i in range(per_class):
                    pixels = g.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                    Image.fromarray(pixels, "RGB").save(root / split / c / f"{i}.png")
        return root
    return make


def randomize_bn_around_activations(model, seed=0):
    """Random BN affine params and running stats randomized *around* real activation statistics.

    Running stats come from a train-mode pass over 8 random images, then var x U(0.5, 2) and mean + 0.1 std N(0, 1);
    gamma U(0.5, 1.5), beta N(0, 0.1^2). Purely random stats (mean N(0, 0.1^2), var U(0.5, 2)) do not normalize
    the randomly initialized torchvision nets: MobileNetV2's activations then grow block by block and the *train
    form's own* fp32 error (vs fp64) reaches 1e-4 -- the tolerance would test float noise, not the fusion.
    """
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
        m.momentum = None  # cumulative average: running stats = this batch's stats
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 3, 64, 64, generator=g))
    for m in bns:
        m.momentum = 0.1
        m.running_var.mul_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)
        m.running_mean.add_(torch.randn(m.num_features, generator=g) * 0.1 * m.running_var.sqrt())
    return model.eval()


NOTEBOOK_UNIT = "notebooks"  # the one xdist work unit of every run of a notebook


def _runs_a_notebook(path: str) -> bool:
    return path.endswith(".ipynb") or path.endswith("test_browser.py")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``make test`` (``-n 2 --dist loadfile``): pytest-xdist sends each test file to one worker whole (its module
    fixtures, such as test_ablation's smoke study, are built once), except that every run of a notebook, nbval's
    cells of every notebook and tests/test_browser.py's Run All, is one unit for one worker: the notebooks write fixed
    folders of the repository (runs/nb06/<code fingerprint> to runs/nb09, runs/figures/<budget>; notebook 09 wipes
    runs/nb09), so no two runs of a notebook may overlap, and the browser tests share one JupyterLab and one Chromium. (xdist's
    ``loadgroup`` marks do not group anything under pytest 9.2: pytest-xdist issue 1386.) Other ``--dist`` modes
    are xdist's own."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class NotebooksTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return NOTEBOOK_UNIT if _runs_a_notebook(path) else path
    return NotebooksTogether(config, log)


_WORKER_TIMES = {}  # notebook -> Run All seconds, sent by the xdist workers (``workeroutput``)


def _browser_times() -> dict:
    import sys
    return getattr(sys.modules.get("test_browser"), "TIMES", None) or {}


def pytest_sessionfinish(session):
    """An xdist worker hands its browser-test times to the controlling process, which prints the summary."""
    if hasattr(session.config, "workeroutput") and _browser_times():
        session.config.workeroutput["browser_times"] = dict(_browser_times())


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """xdist (controlling process): a worker ended; keep the browser-test times it sent."""
    _WORKER_TIMES.update(getattr(node, "workeroutput", {}).get("browser_times", {}))


def pytest_terminal_summary(terminalreporter):
    """Print how long Run All took per notebook in the browser test (tests/test_browser.py), when it ran (in this
    process or in an xdist worker)."""
    times = {**_WORKER_TIMES, **_browser_times()}
    if times:
        terminalreporter.write_sep("-", "notebooks: Run All Cells in JupyterLab (smoke budget), wall seconds")
        for name, seconds in sorted(times.items()):
            flag = "" if seconds <= 60 else "   (over the 60 s target)"
            terminalreporter.write_line(f"{name:45s} {seconds:6.1f}{flag}")
        terminalreporter.write_line(f"{'total':45s} {sum(times.values()):6.1f}")


def tiny_teacher(num_classes=4, **kw):
    """A randomly initialized EfficientNet-Lite0 as a ``FrozenTeacher`` (no weights file needed)."""
    import timm

    from gv3lite.teacher import FrozenTeacher

    torch.manual_seed(0)
    model = timm.create_model("tf_efficientnet_lite0", num_classes=num_classes)
    defaults = dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), student_mean=(0.485, 0.456, 0.406),
                    student_std=(0.229, 0.224, 0.225), name="tiny:test")
    return FrozenTeacher(model, **{**defaults, **kw})


FACTORIAL_TRUE = {"A": 3.0, "B": 2.0, "C": -2.5, "D": -2.0}  # pp: the stand-in factorial study's true main effects
STAND_IN_VAL = 100  # val images of a stand-in run's predictions.csv


@pytest.fixture
def fake_training(monkeypatch):
    """Training replaced by a stand-in (a few ms per run): `gv3lite.study.workers._train_run` writes every file of a
    finished run (``records.RUN_FILES``) with a metrics.csv and a predictions.csv of the schemas' columns, and a
    result.json with the current code fingerprint, the call's command and commit ``test``; top-1 is a synthetic
    outcome of the run's factorial levels (`FACTORIAL_TRUE` plus noise), and its predictions get the easiest
    ``top1`` % of the images right. No teacher pass (of either runner), no datasets. Used by the factorial tests
    (runner, report, publish, compare) and the one-factor runner's (crash safety, row counts)."""
    import json

    import numpy as np

    from gv3lite.fingerprint import code_fingerprint
    from gv3lite.study import blocks, runner, workers
    from gv3lite.study.records import RUN_FILES

    monkeypatch.setattr(blocks, "prepare_teachers", lambda *a, **k: None)
    monkeypatch.setattr(runner, "prepare_teachers", lambda *a, **k: None)
    monkeypatch.setattr(workers, "_datasets_for", lambda *a, **k: None)
    rng, fingerprint = np.random.default_rng(0), code_fingerprint()

    def train(recipe, run_dir, data_root, datasets, quiet, command, device):  # workers._train_run's arguments
        levels = {"A": recipe.num_conv_branches > 1, "B": bool(recipe.teacher), "C": bool(recipe.mixup_alpha),
                  "D": bool(recipe.cutmix_alpha)}
        top1 = 40 + sum(FACTORIAL_TRUE[x] / 2 * (1 if v else -1) for x, v in levels.items()) + rng.normal(0, 0.3)
        result = {"top1_raw": top1, "top1_ema": top1, "top5": 90.0, "train_seconds": 1.0, "cpu_seconds": 1.0,
                  "epochs": recipe.epochs, "git_commit": "test", "code_fingerprint": fingerprint, "command": command,
                  "top1": top1}
        run_dir.mkdir(parents=True, exist_ok=True)
        for name in RUN_FILES:  # a finished run has all of them (records.finished_run)
            (run_dir / name).write_text("")
        (run_dir / "metrics.csv").write_text("epoch,train_loss,val_top1,ema_top1,lr,seconds\n" + "".join(
            f"{e},2.0,{top1},{top1},0.001,1.0\n" for e in range(1, recipe.epochs + 1)))  # every epoch of the recipe
        correct = (np.arange(STAND_IN_VAL) + 0.5) / STAND_IN_VAL < top1 / 100  # image i: as hard in every run
        lines = [f"{i},{i % 3},{i % 3 if c else (i + 1) % 3},{int(c)},{i % 3 if c else (i + 1) % 3},{int(c)}"
                 for i, c in enumerate(correct)]
        (run_dir / "predictions.csv").write_text("val_index,target,pred_raw,correct_raw,pred_ema,correct_ema\n"
                                                 + "\n".join(lines) + "\n")
        (run_dir / "result.json").write_text(json.dumps(result))
        return result
    monkeypatch.setattr(workers, "_train_run", train)


@pytest.fixture
def factorial_study(fake_training, make_image_root):
    """A factory of factorial studies trained by the stand-in (`fake_training`): ``factorial_study(out, "quick")``
    runs ``gv3lite.study.blocks.reproduce_factorial`` into ``<out>/<budget>`` (the budget's blocks and looks) and
    returns that folder."""
    from gv3lite.study.blocks import reproduce_factorial

    def make(out, budget="smoke", **kw):
        root = make_image_root(classes=("n01440764", "n02102040", "n02979186"), per_class=2, size=(24, 24))
        reproduce_factorial(budget, out=out, data=root, log=lambda *a: None,
                            command=f"gv3lite reproduce --design factorial --budget {budget} --data {root}", **kw)
        return Path(out) / budget
    return make


def publish_toy_soft_labels(root, recipes, file, monkeypatch, name="imagenette_same_data"):
    """Soft labels of a stand-in same-data teacher (random (N, K, 2, 2) logit maps, ``gv3lite.soft_labels`` format) for
    every training image of ``recipes`` (their ``tuning`` / ``images_per_class_train`` / ``data_seed`` subsets of
    ``root``), written to ``file`` and published under ``name`` for this test (``monkeypatch``), so that tests never
    need, create or change the repository's ``gv3lite/artifacts/`` file. Returns the image paths."""
    from gv3lite import soft_labels
    from gv3lite.data import ImageFolderDataset

    paths, classes = {}, None
    for r in recipes:
        train = ImageFolderDataset(root, "train", r.img_size, classes=r.classes, per_class=r.images_per_class_train,
                                   seed=r.data_seed, cache=False, tuning=r.tuning)
        classes = train.classes
        paths.update(dict.fromkeys(p for p, _ in train.samples))
    maps = torch.randn(len(paths), len(classes), 2, 2, generator=torch.Generator().manual_seed(0))
    soft_labels.save_soft_labels(file, maps, list(paths), classes, 48, "toy same-data teacher", {"top1_val": None})
    monkeypatch.setitem(soft_labels.SOFT_LABEL_TEACHERS, name, Path(file))
    return list(paths)
