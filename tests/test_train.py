"""gv3lite.train (through gv3lite.experiment.run): learning on real images, determinism, exact resume, the EMA,
eval_every, the teacher-output hook, Mixup/CutMix, common random numbers across cells, torch.compile."""
import json

import pandas as pd
import pytest
import torch

from gv3lite import experiment
from gv3lite.checkpoint import read_checkpoint
from gv3lite.data import build_datasets
from gv3lite.experiment import run
from gv3lite.recipe import Recipe
from gv3lite.train import mix_batch

from conftest import FOUR_CLASSES

TWO_CLASSES = [FOUR_CLASSES[0], FOUR_CLASSES[3]]  # tench, parachute

TINY = dict(classes=FOUR_CLASSES, images_per_class_train=16, images_per_class_val=5, img_size=40, epochs=2,
            batch_size=16, warmup_epochs=0.5)


# --------------------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def two_classes(data_root):
    """Tench and parachute: 50 train and 20 val images per class at 40 px (decoded once for this module)."""
    return build_datasets(data_root, 40, classes=TWO_CLASSES, images_per_class_train=50, images_per_class_val=20,
                          seed=0, scale=(0.25, 1.0))


def test_short_training_beats_chance_on_real_images(two_classes, tmp_path):
    """2 Imagenette classes, 50 train images each, 40 px, 8 epochs of the plain GhostNetV3-0.5x (a few seconds):
    val top-1 clearly above chance (50%): >= 70% is 28 of 40 val images, P <= 1% for a coin. Measured for seeds
    0 / 1 / 2: 92.5 / 77.5 / 85.0%."""
    recipe = Recipe(classes=TWO_CLASSES, images_per_class_train=50, images_per_class_val=20, img_size=40,
                    epochs=8, batch_size=16, lr=5e-3, warmup_epochs=0.5, drop_rate=0.0, label_smoothing=0.0,
                    num_conv_branches=1, use_scale_branch=False, use_identity_branch=False)
    history = run(recipe, out_dir=tmp_path, quiet=True, datasets=two_classes)
    assert list(history.columns) == ["epoch", "train_loss", "train_kd", "val_loss", "val_top1", "val_top5",
                                     "ema_top1", "lr", "seconds"]
    assert history.train_kd.isna().all()  # no teacher, no KD term
    assert history.epoch.tolist() == list(range(1, 9))
    assert history.val_top1.iloc[-1] >= 70.0, history
    assert history.train_loss.iloc[-1] < history.train_loss.iloc[0]
    saved = pd.read_csv(tmp_path / "metrics.csv")
    pd.testing.assert_frame_equal(saved, history, check_dtype=False)
    assert Recipe.load(tmp_path / "recipe.yaml") == recipe
    assert {"last.pth", "best.pth", "run_info.json"} <= {p.name for p in tmp_path.iterdir()}


def _metrics(history):
    return history.drop(columns="seconds")


def test_same_seed_same_metrics_and_resume_is_exact(data_root, tmp_path):
    recipe = Recipe(**TINY, ema=True, ema_decay=0.9)
    a = run(recipe, data_root, tmp_path / "a", quiet=True)
    b = run(recipe, data_root, tmp_path / "b", quiet=True)
    pd.testing.assert_frame_equal(_metrics(a), _metrics(b))
    c = run(recipe.replace(seed=1), data_root, None, quiet=True)
    assert not _metrics(a).equals(_metrics(c))

    first = run(recipe, data_root, tmp_path / "r", quiet=True, max_epochs=1)
    assert len(first) == 1
    resumed = run(recipe, data_root, tmp_path / "r", quiet=True, resume=True)
    pd.testing.assert_frame_equal(_metrics(resumed), _metrics(a))
    ck_a, ck_r = read_checkpoint(tmp_path / "a" / "last.pth"), read_checkpoint(tmp_path / "r" / "last.pth")
    for key in ("model", "model_ema"):
        for name, tensor in ck_a[key].items():
            assert torch.equal(tensor, ck_r[key][name]), (key, name)
    with pytest.raises(ValueError, match="different recipe"):
        run(recipe.replace(lr=1e-3), data_root, tmp_path / "r", quiet=True, resume=True)
    with pytest.raises(FileNotFoundError, match="last.pth"):
        run(recipe, data_root, tmp_path / "nothing", quiet=True, resume=True)


def test_ema_only_observes_training_and_eval_every_skips_epochs(data_root, tmp_path):
    """An EMA run's raw weights are the run without EMA (gv3lite.study.plan.trained_as relies on it); eval_every
    leaves skipped epochs NaN and always evaluates the last; the subset depends on data_seed, not on seed."""
    recipe = Recipe(**{**TINY, "epochs": 3}, ema=False)
    plain = run(recipe, data_root, tmp_path / "plain", quiet=True)
    with_ema = run(recipe.replace(ema=True, ema_decay=0.9), data_root, tmp_path / "ema", quiet=True)
    for column in ("train_loss", "val_loss", "val_top1", "val_top5", "lr"):
        assert with_ema[column].tolist() == plain[column].tolist(), column
    assert with_ema["ema_top1"].notna().all() and plain["ema_top1"].isna().all()
    a, b = read_checkpoint(tmp_path / "plain" / "last.pth"), read_checkpoint(tmp_path / "ema" / "last.pth")
    assert all(torch.equal(t, b["model"][k]) for k, t in a["model"].items())

    sparse = run(recipe.replace(eval_every=2), data_root, None, quiet=True)
    assert sparse["val_top1"].isna().tolist() == [True, False, False]  # epochs 1 (skipped), 2 (every 2nd), 3 (last)
    assert sparse["val_top1"].iloc[-1] == plain["val_top1"].iloc[-1]  # evaluating never changes training
    with pytest.raises(ValueError, match="eval_every"):
        recipe.replace(eval_every=0)

    from gv3lite.study.plan import plan
    from gv3lite.study.workers import dataset_key
    keys = {dataset_key(it["recipe"]) for it in plan("quick", ["recipe"]) if it["cell"] == "ghostnetv3"}
    assert len(keys) == 1  # both seeds train on the same images


class RecordingKD:
    """A stand-in teacher-output supplier (gv3lite.teacher_outputs): records what the trainer passes and returns
    uniform teacher logits (zeros), so the KD term is KL(uniform || student) at the recipe's temperature."""

    def __init__(self):
        self.calls = []

    def teacher_logits(self, images, info):
        self.calls.append((images.shape, info))
        return torch.zeros(len(images), 4)


def test_kd_hook_receives_images_and_crop_info_and_logs_kd_term(data_root):
    kd = RecordingKD()
    recipe = Recipe(**{**TINY, "epochs": 1, "sched": "cosine"})
    history = run(recipe, data_root, None, quiet=True, kd=kd)
    assert len(kd.calls) == 4  # 64 images / batch 16
    images_shape, info = kd.calls[0]
    assert images_shape == (16, 3, 40, 40)
    assert info["box"].shape == (16, 4) and info["flip"].shape == (16,) and info["index"].shape == (16,)
    assert 0 < history.train_kd.iloc[0] < history.train_loss.iloc[0] * 2  # KL(uniform || student) > 0 is logged
    indices = torch.cat([c[1]["index"] for c in kd.calls])
    assert sorted(indices.tolist()) == list(range(64))  # every train image once per epoch
    # Mixup/CutMix with KD: the teacher still sees the unmixed crops; the run trains with a finite KD term
    kd = RecordingKD()
    mixed = run(recipe.replace(mixup_alpha=0.8, cutmix_alpha=1.0), data_root, None, quiet=True, kd=kd)
    assert len(kd.calls) == 4 and mixed.train_kd.notna().all() and (mixed.train_kd > 0).all()
    assert Recipe(teacher="efficientnet_lite0", mixup_alpha=0.8).mixup_alpha == 0.8  # a valid recipe now


@pytest.mark.parametrize("mixup_alpha, cutmix_alpha", [(0.8, 0.0), (0.0, 1.0)])
def test_mix_batch_is_timm_mixup_plus_its_weight(mixup_alpha, cutmix_alpha):
    import numpy as np
    from timm.data import Mixup
    mixup = Mixup(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, label_smoothing=0.1, num_classes=4)
    torch.manual_seed(0)
    images, targets = torch.randn(6, 3, 8, 8), torch.tensor([0, 1, 2, 3, 0, 1])
    np.random.seed(3)
    expected_images, expected_targets = mixup(images.clone(), targets)
    np.random.seed(3)
    mixed, soft, lam = mix_batch(mixup, images.clone(), targets)
    torch.testing.assert_close(mixed, expected_images, rtol=0, atol=0)
    torch.testing.assert_close(soft, expected_targets, rtol=0, atol=0)
    # lam is the weight of image b (class targets[b]) in its own target: on 1 - 0.1 + 0.1/4, off 0.1/4
    on, off = 0.925, 0.025
    assert 0 < lam < 1 and float(soft[0, 0]) == pytest.approx(lam * on + (1 - lam) * off)
    with pytest.raises(ValueError, match="even batch"):
        mix_batch(mixup, images[:5].clone(), targets[:5])


def test_augmentation_switches_train(data_root):
    """RandAugment (torchvision v2), random erasing, Mixup/CutMix (timm) all run through fit with finite losses."""
    recipe = Recipe(**{**TINY, "epochs": 1, "sched": "cosine"}, auto_augment="randaugment", random_erasing=0.25,
                    mixup_alpha=0.2, cutmix_alpha=1.0)
    history = run(recipe, data_root, None, quiet=True)
    assert len(history) == 1 and 0 < history.train_loss.iloc[0] < 10


# ------------------------------------------------------------------------------------ common random numbers
def _recorder(monkeypatch):
    """Wrap experiment.build_model (the original, restored when ``monkeypatch`` ends): keep the student's initial
    weights and its first three training inputs."""
    seen = {"init": None, "batches": []}
    real = experiment.build_model
    assert real.__module__ == "gv3lite.models", "wrap the original build_model, not a wrapper"

    def build(recipe, num_classes):
        model = real(recipe, num_classes)
        seen["init"] = {k: v.clone() for k, v in model.state_dict().items()}
        model.register_forward_pre_hook(
            lambda m, args: seen["batches"].append(args[0].clone()) if m.training and len(seen["batches"]) < 3 else None)
        return model

    monkeypatch.setattr(experiment, "build_model", build)
    return seen


def test_common_random_numbers_across_cells(data_root, tmp_path):
    """For one seed, a KD cell and a no-KD cell start from the same student weights and see the same crops, although
    the KD cell builds a teacher (whose own initialization draws random numbers) before the student."""
    from gv3lite.checkpoint import save_checkpoint
    tiny = dict(TINY, epochs=1, warmup_epochs=0.0, sched="cosine")
    datasets = build_datasets(data_root, 40, classes=FOUR_CLASSES, images_per_class_train=16,
                              images_per_class_val=5, return_crop_info=True)
    # a small checkpoint teacher: building it initializes a network (random draws) before loading its weights
    teacher_recipe = Recipe(model="ghostnetv3_050", num_conv_branches=1, use_scale_branch=False,
                            use_identity_branch=False)
    path = save_checkpoint({"model": experiment.build_model(teacher_recipe, 4).state_dict(),
                            "recipe": teacher_recipe.to_dict(), "num_classes": 4, "classes": FOUR_CLASSES},
                           tmp_path / "teacher.pth")
    runs = {}
    for name, changes in [("none", dict(teacher=None)), ("teacher", dict(teacher=str(path), kd_mode="online")),
                          ("other seed", dict(teacher=None, seed=1))]:
        with pytest.MonkeyPatch.context() as mp:
            seen = _recorder(mp)
            run(Recipe(**tiny, **changes), datasets=datasets, quiet=True)
        runs[name] = seen
    none, teacher, other = runs["none"], runs["teacher"], runs["other seed"]
    assert all(torch.equal(none["init"][k], teacher["init"][k]) for k in none["init"])
    assert len(none["batches"]) == 3 and all(torch.equal(a, b) for a, b in zip(none["batches"], teacher["batches"]))
    # the control: another seed gives other weights and other batches
    assert not all(torch.equal(none["init"][k], other["init"][k]) for k in none["init"])
    assert not torch.equal(none["batches"][0], other["batches"][0])


def test_compile_model_trains_through_the_compiled_module_and_keeps_the_weights(data_root, tmp_path, monkeypatch):
    """``compile_model=True`` sends every training step through ``torch.compile(model)`` -- the real one, with
    dynamo's ``eager`` backend (no code generation: it traces the model into graphs and runs them with the same
    kernels, so the numbers equal the uncompiled run's; a small torchvision model keeps the tracing at ~10 s on 2
    cores; inductor's speed is measured by benchmarks/throughput.py --compile) -- while evaluation, the EMA and the
    checkpoint use the model itself: the run equals the uncompiled one, EMA included, and run_info.json records it."""
    from torch._dynamo.eval_frame import OptimizedModule
    real_compile, compiled = torch.compile, []

    def compile_eager(model):
        compiled.append(real_compile(model, backend="eager"))
        return compiled[-1]
    monkeypatch.setattr(torch, "compile", compile_eager)
    recipe = Recipe(**{**TINY, "epochs": 1, "sched": "cosine", "ema": True, "model": "shufflenetv2_050",
                       "images_per_class_train": 4, "images_per_class_val": 2})
    plain = run(recipe, data_root, tmp_path / "plain", quiet=True)
    with_compile = run(recipe, data_root, tmp_path / "compiled", quiet=True, compile_model=True)
    assert len(compiled) == 1 and isinstance(compiled[0], OptimizedModule)
    pd.testing.assert_frame_equal(_metrics(plain), _metrics(with_compile))
    a, b = read_checkpoint(tmp_path / "plain" / "last.pth"), read_checkpoint(tmp_path / "compiled" / "last.pth")
    for key in ("model", "model_ema"):
        assert a[key].keys() == b[key].keys()  # no "_orig_mod." / wrapper prefixes
        assert all(torch.equal(t, b[key][k]) for k, t in a[key].items())
    assert all(torch.equal(p, q) for p, q in zip(compiled[0]._orig_mod.state_dict().values(), b["model"].values()))
    assert not json.loads((tmp_path / "plain" / "run_info.json").read_text())["compiled"]
    assert json.loads((tmp_path / "compiled" / "run_info.json").read_text())["compiled"]
