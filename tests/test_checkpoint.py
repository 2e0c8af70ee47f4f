"""Checkpoint loading: every supported layout loads strictly, EMA choice, clear errors, atomic saving."""
import re

import pytest
import torch

from gv3lite import create_model, reparameterize
from gv3lite.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint

NAME = "ghostnetv3_050"


@pytest.fixture(scope="module")
def weights():
    """Two different random weight sets of the same train-form model: 'raw' and 'ema'."""
    torch.manual_seed(0)
    raw = create_model(NAME, num_classes=10).state_dict()
    ema = {k: v + 0.5 if v.is_floating_point() else v for k, v in raw.items()}
    return raw, ema


def to_official(state_dict):
    """Official key names (`.bn.` inside the rpr containers) plus thop buffers, like the released file."""
    out = {re.sub(r"(_rpr_conv\.\d+|_rpr_scale)\.bn1\.", r"\1.bn.", k): v for k, v in state_dict.items()}
    out["blocks.0.0.ghost1.total_ops"] = torch.zeros(1, dtype=torch.float64)
    out["total_params"] = torch.zeros(1, dtype=torch.float64)
    return out


def assert_loaded(model, expected):
    for k, v in model.state_dict().items():
        assert torch.equal(v, expected[k]), k


def test_official_release_layout_prefers_ema(weights, tmp_path):
    raw, ema = weights
    official = to_official(raw)
    assert any(".primary_rpr_conv.0.bn.weight" in k for k in official)  # really the official names
    path = save_checkpoint({"state_dict": official, "state_dict_ema": to_official(ema), "epoch": 599},
                           tmp_path / "ghostnetv3-0.5.pth.tar")
    model = create_model(NAME, num_classes=10)
    assert load_checkpoint(model, path) == "state_dict_ema"
    assert_loaded(model, ema)
    assert load_checkpoint(model, path, use_ema=False) == "state_dict"
    assert_loaded(model, raw)


def test_bare_timm_and_dataparallel_layouts(weights):
    import timm
    raw, _ = weights
    timm_model = timm.create_model(NAME, num_classes=10)
    timm_model.load_state_dict(raw)
    model = create_model(NAME, num_classes=10)
    assert load_checkpoint(model, timm_model.state_dict()) == "bare"
    assert_loaded(model, raw)
    model = create_model(NAME, num_classes=10)
    assert load_checkpoint(model, {"state_dict": {"module." + k: v for k, v in raw.items()}}) == "state_dict"
    assert_loaded(model, raw)


def test_trainer_layout_model_and_model_ema(weights, tmp_path):
    raw, ema = weights
    path = save_checkpoint({"model": raw, "model_ema": {"module." + k: v for k, v in ema.items()}, "epoch": 3},
                           tmp_path / "run" / "last.pt")
    model = create_model(NAME, num_classes=10, checkpoint_path=path)  # create_model loads EMA by default
    assert_loaded(model, ema)
    assert load_checkpoint(model, path, use_ema=False) == "model"
    assert_loaded(model, raw)
    assert load_checkpoint(model, {"model": raw, "model_ema": None}) == "model"  # EMA optional


def test_deploy_checkpoint_loads_into_deploy_model(weights, tmp_path):
    raw, _ = weights
    train = create_model(NAME, num_classes=10)
    train.load_state_dict(raw)
    fused = reparameterize(train.eval()).state_dict()
    path = save_checkpoint({"state_dict": fused}, tmp_path / "deploy.pth")
    model = create_model(NAME, num_classes=10, deploy=True)
    load_checkpoint(model, path)
    assert_loaded(model, fused)


def test_wrong_width_and_wrong_form_errors(weights):
    raw, _ = weights
    with pytest.raises(ValueError, match=r"'conv_stem.weight' has shape \(8, 3, 3, 3\)"):
        load_checkpoint(create_model("ghostnetv3_100", num_classes=10), raw)
    with pytest.raises(ValueError, match="'classifier.weight'"):
        load_checkpoint(create_model(NAME, num_classes=5), raw)
    fused = reparameterize(create_model(NAME, num_classes=10).eval()).state_dict()
    with pytest.raises(ValueError, match=r"missing key 'blocks\.0\.0\.ghost1\.primary_rpr_conv.*deploy=True"):
        load_checkpoint(create_model(NAME, num_classes=10), fused)
    with pytest.raises(ValueError, match=r"missing key 'blocks\.0\.0\.ghost1\.primary_conv.*reparameterize"):
        load_checkpoint(create_model(NAME, num_classes=10, deploy=True), raw)
    with pytest.raises(ValueError, match=r"'blocks\.0\.0\.ghost1\.primary_rpr_conv\.1"):
        load_checkpoint(create_model(NAME, num_classes=10, num_conv_branches=1), raw)


def test_non_strict_load_warns_and_bad_inputs(weights, tmp_path):
    raw, _ = weights
    partial = {k: v for k, v in raw.items() if not k.startswith("classifier")}
    model = create_model(NAME, num_classes=10)
    with pytest.warns(UserWarning, match="2 missing keys"):
        load_checkpoint(model, partial, strict=False)
    with pytest.raises(ValueError, match="only EMA"):
        load_checkpoint(model, {"state_dict_ema": raw}, use_ema=False)
    with pytest.raises(ValueError, match="no weights found"):
        load_checkpoint(model, {"epoch": 3, "args": {}})
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        read_checkpoint(tmp_path / "nope.pth")


def test_unreadable_checkpoint_files_name_the_file(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights\n")
    with pytest.raises(ValueError, match="notes.pth is not a readable PyTorch checkpoint \\(\\w+Error"):
        read_checkpoint(text)
    good = save_checkpoint({"model": {"w": torch.zeros(1000)}}, tmp_path / "good.pth")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:500])
    with pytest.raises(ValueError, match="truncated.pth is not a readable PyTorch checkpoint"):
        load_checkpoint(create_model(NAME, num_classes=10), truncated)
    with pytest.raises(ValueError, match="is a directory"):
        read_checkpoint(tmp_path)


def test_save_checkpoint_is_atomic_and_readable(tmp_path):
    path = save_checkpoint({"x": torch.arange(3)}, tmp_path / "a" / "b.pt")
    save_checkpoint({"x": torch.arange(4)}, path)  # overwrite
    assert torch.equal(read_checkpoint(path)["x"], torch.arange(4))
    assert sorted(p.name for p in path.parent.iterdir()) == ["b.pt"]  # no temporary files left
