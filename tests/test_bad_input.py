"""Public entry points answer bad input with a clear error (issue 13): the model's own forward, and ``--set`` /
recipe-file numbers typed as users type them (``1e-3``)."""
import pytest
import torch

from gv3lite import create_model
from gv3lite.cli import build_parser, recipe_from_args
from gv3lite.recipe import Recipe, load_yaml


@pytest.fixture(scope="module")
def model():
    return create_model("ghostnetv3_050", num_classes=10).eval()


@pytest.mark.parametrize("x, message", [
    (torch.zeros(3, 64, 64), r"input has shape \(3, 64, 64\); the model takes a batch of shape \(B, 3, H, W\) "
                             r"\(one image: add the batch dimension with x.unsqueeze\(0\)\)"),
    (torch.zeros(64, 64), r"input has shape \(64, 64\); the model takes a batch"),
    (torch.zeros(2, 1, 64, 64), r"input has 1 channels .* but the model takes 3 .*grayscale images need x.expand"),
    (torch.zeros(2, 64, 64, 3), r"input has 64 channels .*channels-last images \(B, H, W, C\) need x.permute"),
    (torch.zeros(2, 3, 64, 64, dtype=torch.uint8), r"input dtype is torch.uint8 but the model's weights are "
                                                   r"torch.float32: convert with x.float\(\) / 255 and normalize"),
    (torch.zeros(2, 3, 64, 64, dtype=torch.float64), r"input dtype is torch.float64 .*convert with "
                                                     r"x.to\(torch.float32\)"),
    (torch.zeros(2, 3, 32, 48), r"input is 32x48 px; the model needs at least 33x33 .*resize the images"),
    ([[0.0]], r"the model takes a torch.Tensor of shape \(B, 3, H, W\), got list"),
])
def test_forward_refuses_bad_input_with_the_fix(model, x, message):
    with pytest.raises(ValueError, match=message):
        model(x)


def test_forward_accepts_the_smallest_valid_input_and_other_channel_counts(model):
    assert model(torch.zeros(2, 3, 33, 40)).shape == (2, 10)
    gray_model = create_model("ghostnetv3_050", num_classes=4, in_chans=1).eval()
    assert gray_model(torch.zeros(1, 1, 48, 48)).shape == (1, 4)
    with pytest.raises(ValueError, match="input has 3 channels .* takes 1 \\(in_chans=1\\)"):
        gray_model(torch.zeros(1, 3, 48, 48))
    deploy = create_model("ghostnetv3_050", num_classes=10, deploy=True).eval()
    with pytest.raises(ValueError, match="at least 33x33"):
        deploy(torch.zeros(1, 3, 16, 16))


@pytest.mark.parametrize("typed, value", [("1e-3", 1e-3), ("5E-4", 5e-4), ("0.001", 1e-3), ("2e-2", 0.02)])
def test_set_reads_numbers_as_users_type_them(typed, value):
    args = build_parser().parse_args(["train", "--set", f"lr={typed}", "--set", f"weight_decay={typed}"])
    recipe = recipe_from_args(args)
    assert recipe.lr == value and recipe.weight_decay == value


def test_recipe_files_read_exponent_numbers(tmp_path):
    (tmp_path / "r.yaml").write_text("lr: 1e-3\nmin_lr: 1E-6\nwarmup_lr: -0e+0\nteacher: null\n")
    recipe = Recipe.load(tmp_path / "r.yaml")
    assert (recipe.lr, recipe.min_lr, recipe.warmup_lr) == (1e-3, 1e-6, 0.0)
    assert load_yaml("e3") == "e3" and load_yaml("1e") == "1e" and load_yaml("[1e-3]") == [1e-3]
