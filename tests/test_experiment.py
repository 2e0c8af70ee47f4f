"""gv3lite.experiment, the composition root: names checked by their registries, the objective and the schedule
built from the recipe."""
import pytest
import torch

from gv3lite.distill import Objective
from gv3lite.experiment import build_objective, build_optimizer, build_scheduler, check_names
from gv3lite.recipe import Recipe
from gv3lite.train import scheduler_step


@pytest.mark.parametrize("changes, message", [
    (dict(model="resnet50"), "recipe.model: unknown model 'resnet50'; valid names: ghostnetv3_050"),
    (dict(teacher="lite0"), "recipe.teacher: 'lite0' is neither a pretrained teacher name"),
    (dict(kd_mode="offline"), "recipe.kd_mode: unknown KD mode 'offline'; choose one of \\['online', 'cached'\\]"),
    (dict(kd_loss="mse"), "recipe.kd_loss: unknown kd_loss 'mse'; choose one of \\['kl', 'soft_ce'\\]"),
])
def test_names_are_checked_by_their_registries(changes, message):
    recipe = Recipe(**changes)  # the recipe itself checks types and ranges only
    with pytest.raises(ValueError, match=message):
        check_names(recipe)


def test_names_of_a_valid_recipe_pass(tmp_path):
    teacher = tmp_path / "teacher.pth"
    teacher.write_bytes(b"")
    for recipe in (Recipe(), Recipe(teacher="efficientnet_lite0", kd_mode="cached"), Recipe(teacher=str(teacher))):
        check_names(recipe)


def test_objective_is_built_once_from_the_recipe():
    recipe = Recipe(label_smoothing=0.2, kd_alpha=0.3, kd_temperature=2.0, kd_loss="kl")
    assert build_objective(recipe) == Objective(label_smoothing=0.2, alpha=0.3, temperature=2.0, kd_loss="kl")
    with pytest.raises(ValueError, match="alpha must be in \\[0, 1\\]"):
        Objective(alpha=1.5)


@pytest.mark.parametrize("sched", ["onecycle", "cosine"])
def test_schedule_warms_up_peaks_and_decays(sched):
    recipe = Recipe(epochs=4, warmup_epochs=1, lr=1e-2, warmup_lr=1e-4, min_lr=1e-5, sched=sched)
    optimizer = build_optimizer(recipe, torch.nn.Linear(2, 2))
    scheduler = build_scheduler(recipe, optimizer, steps_per_epoch=10)
    lrs = [optimizer.param_groups[0]["lr"]]
    for step in range(1, 41):
        optimizer.step()
        scheduler_step(scheduler, step)
        lrs.append(optimizer.param_groups[0]["lr"])
    peak = lrs.index(max(lrs))
    assert lrs[0] == pytest.approx(1e-4, rel=1e-3)  # starts at warmup_lr
    assert peak in (9, 10) and 0.85e-2 <= max(lrs) <= 1e-2  # peaks at the end of the 10 warm-up steps
    assert all(a < b for a, b in zip(lrs[:peak], lrs[1:peak + 1]))  # rises, then never rises again
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1:]))
    assert lrs[-1] == pytest.approx(1e-5, rel=0.05, abs=2e-5)  # ends near min_lr
