"""benchmarks/kd_targets.py: the KD target's true-class mass per temperature and the label smoothing that matches it
(the kd_control grid's calibration), on synthetic logits with known answers and on the published soft labels."""
import json
import sys

import pandas as pd
import pytest
import torch

from gv3lite.recipe import preset
from gv3lite.soft_labels import read_soft_labels
from gv3lite.study.grids import GRIDS
from gv3lite.utils import repo_root

sys.path.insert(0, str(repo_root() / "benchmarks"))
from kd_targets import target_table, whole_image_logits  # noqa: E402  (a script, not a package)


def test_known_targets_give_known_masses_and_the_matching_label_smoothing():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [4.0, 0.0, 0.0, 0.0]])  # uniform; e^4 / (e^4 + 3) on class 0
    table = target_table(logits, torch.tensor([0, 0]), [1.0, 1e9], kd_alpha=0.5, label_smoothing=0.0).set_index(
        "temperature")
    sharp = torch.e ** 4 / (torch.e ** 4 + 3)
    assert table.loc[1.0, "true_mass"] == pytest.approx((0.25 + sharp) / 2, abs=1e-4)
    assert table.loc[1e9, "true_mass"] == pytest.approx(0.25, abs=1e-4)  # T -> infinity: uniform
    assert table.loc[1e9, "entropy_nats"] == pytest.approx(torch.log(torch.tensor(4.0)).item(), abs=1e-4)
    # KD mass 0.5 * 1 + 0.5 * 0.25 = 0.625; label smoothing eps with 1 - eps + eps / 4 = 0.625 -> eps = 0.5
    assert table.loc[1e9, "kd_cell_true_mass"] == pytest.approx(0.625, abs=1e-4)
    assert table.loc[1e9, "matching_label_smoothing"] == pytest.approx(0.5, abs=1e-3)
    with pytest.raises(ValueError, match="temperature 0.0: must be > 0"):
        target_table(logits, torch.tensor([0, 0]), [0.0], 0.5, 0.1)


def test_the_committed_table_is_the_published_soft_labels_and_kd_control_uses_its_label_smoothing():
    committed = pd.read_csv(repo_root() / "results" / "kd_targets" / "imagenette_same_data.csv")
    logits, labels = whole_image_logits(read_soft_labels("imagenette_same_data"))
    recipe = preset("ghostnetv3")
    again = target_table(logits, labels, list(committed["temperature"]), recipe.kd_alpha, recipe.label_smoothing)
    pd.testing.assert_frame_equal(again, committed, check_dtype=False)
    at_preset = committed.set_index("temperature").loc[recipe.kd_temperature]
    control = {c.name: c for c in GRIDS["kd_control"]}["label_smoothing"]
    assert control.changes["label_smoothing"] == pytest.approx(at_preset["matching_label_smoothing"], abs=0.01)


def test_notebook_04_quotes_the_committed_table():
    table = pd.read_csv(repo_root() / "results" / "kd_targets" / "imagenette_same_data.csv").set_index("temperature")
    cells = json.loads((repo_root() / "notebooks" / "04_knowledge_distillation.ipynb").read_text())["cells"]
    text = " ".join(" ".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown").split())
    quoted = (f"its mean probability of the true class is {table.loc[1.0, 'true_mass']:.2f} at T = 1 and only "
              f"{table.loc[4.0, 'true_mass']:.2f} at T = 4, an entropy of {table.loc[4.0, 'entropy_nats']:.2f} nats")
    assert quoted in text
