"""gv3lite.recipe: round trips (YAML/JSON), unknown keys, each field's type and range (from the dataclass fields),
the rules between fields, YAML number forms, malformed files."""
import json

import pytest

from gv3lite.recipe import Recipe


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_recipe_round_trip(tmp_path, suffix):
    recipe = Recipe(epochs=3, opt="sgd", lr=0.1, ema=True, classes=["n01440764", "n02979186"],
                    teacher="efficientnet_lite0")
    path = recipe.save(tmp_path / f"r{suffix}")
    assert Recipe.load(path) == recipe
    assert Recipe.from_dict(recipe.to_dict()) == recipe
    if suffix == ".json":
        assert json.loads(path.read_text())["lr"] == 0.1


def test_recipe_rejects_unknown_keys_and_bad_values(tmp_path):
    with pytest.raises(KeyError, match="unknown recipe keys \\['learning_rate'\\]"):
        Recipe.from_dict({"learning_rate": 0.1})
    (tmp_path / "bad.yaml").write_text("epochs: 2\nwarmup: 3\n")
    with pytest.raises(KeyError, match="warmup"):
        Recipe.load(tmp_path / "bad.yaml")
    with pytest.raises(ValueError, match="recipe.opt='adamx'"):
        Recipe(opt="adamx")
    with pytest.raises(ValueError, match="warmup_epochs"):
        Recipe(epochs=2, warmup_epochs=3)
    with pytest.raises(ValueError, match="label_smoothing"):
        Recipe(label_smoothing=1.5)
    with pytest.raises(ValueError, match=".yaml, .yml or .json"):
        Recipe().save(tmp_path / "r.txt")


@pytest.mark.parametrize("changes, field", [
    (dict(ema="maybe"), "ema='maybe'"), (dict(ema=1), "ema=1"), (dict(cache="no"), "cache='no'"),
    (dict(use_scale_branch=0), "use_scale_branch=0"), (dict(use_identity_branch=None), "use_identity_branch=None"),
    (dict(epochs=True), "epochs=True"), (dict(epochs=2.5), "epochs=2.5"), (dict(seed=1.7), "seed=1.7"),
    (dict(batch_size="64"), "batch_size='64'"), (dict(num_workers=False), "num_workers=False"),
    (dict(num_classes=True), "num_classes=True"), (dict(images_per_class_train=10.0), "images_per_class_train=10.0"),
    (dict(lr="abc"), "lr='abc'"), (dict(lr=float("nan")), "lr=nan"), (dict(drop_rate=True), "drop_rate=True"),
    (dict(kd_temperature=None), "kd_temperature=None"),
])
def test_recipe_checks_field_types(changes, field):
    with pytest.raises(ValueError, match=f"recipe.{field}"):
        Recipe(**changes)
    with pytest.raises(ValueError, match=f"recipe.{field}"):
        Recipe().replace(**changes)  # the path of `gv3lite train --set` and of YAML files


@pytest.mark.parametrize("changes, message", [
    (dict(classes="n01440764"), "recipe.classes='n01440764': must be a list"),
    (dict(classes=["n01440764", "n01440764"]), "\\['n01440764'\\] more than once"),
    (dict(classes=[]), "recipe.classes=\\[\\]"),
    (dict(classes=["n01440764", ""]), "non-empty"),
    (dict(classes=[1, 2]), "bad entries \\[1, 2\\]"),
    (dict(img_size=32), "recipe.img_size=32: must be an integer >= 33"),
    (dict(min_lr=0.1, lr=0.01), "recipe.min_lr=0.1: must be <= lr"),
    (dict(warmup_lr=0.1, lr=0.01), "recipe.warmup_lr=0.1: must be <= lr"),
    (dict(momentum=1.5), "recipe.momentum=1.5"),
    (dict(weight_decay=-0.1), "recipe.weight_decay=-0.1"),
    (dict(weight_decay=5.0), "recipe.weight_decay=5.0"),
    (dict(kd_loss="soft_ce", kd_temperature=4.0), "kd_loss='soft_ce' with kd_temperature=4: .*no T² factor"),
])
def test_recipe_checks_values_names_and_combinations(changes, message):
    with pytest.raises(ValueError, match=message):
        Recipe(**changes)


def test_recipe_accepts_yaml_types_and_teacher_files(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("lr: 1\nmin_lr: 0\nclasses: [n01440764, n02979186]\nema: true\nimg_size: 33\n")
    recipe = Recipe.load(path)
    assert (recipe.lr, recipe.classes, recipe.ema, recipe.img_size) == (1, ["n01440764", "n02979186"], True, 33)
    teacher = tmp_path / "teacher.pth"
    teacher.write_bytes(b"")
    assert Recipe(teacher=str(teacher)).teacher == str(teacher)  # an existing checkpoint file is a teacher
    assert Recipe(classes=("a", "b")).classes == ["a", "b"]


@pytest.mark.parametrize("suffix, text, parser", [(".yaml", "epochs: [3\n", "YAML"),
                                                  (".json", '{"epochs": 3,}', "JSON")])
def test_recipe_load_names_file_of_malformed_yaml_json(tmp_path, suffix, text, parser):
    path = tmp_path / f"bad{suffix}"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"(?s)bad\\{suffix}' is not valid {parser}: .*line 1"):
        Recipe.load(path)
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(ValueError, match="dir.yaml' is a directory"):
        Recipe.load(tmp_path / "dir.yaml")
