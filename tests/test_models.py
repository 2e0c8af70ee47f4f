"""gv3lite.models, the registry: names, keyword checks, models from a recipe or a checkpoint's config, and the
architecture's own checkpoint knowledge (GhostNetV3's key renames and the train/deploy hint)."""
import pytest
import torch

from gv3lite.checkpoint import load_checkpoint
from gv3lite.models import build_model, check_model_name, create_model, create_model_from_config, list_models
from gv3lite.recipe import Recipe


def test_registry_and_errors():
    assert list_models()[:4] == ["ghostnetv3_050", "ghostnetv3_100", "ghostnetv3_130", "ghostnetv3_160"]
    with pytest.raises(ValueError, match="ghostnetv3_050, ghostnetv3_100"):
        create_model("ghostnetv3_075")
    with pytest.raises(ValueError, match="unknown keyword.*pretrained"):
        create_model("ghostnetv3_050", pretrained=True)
    for bad in (dict(num_conv_branches=0), dict(num_conv_branches=2.0), dict(use_scale_branch=1),
                dict(use_identity_branch=None), dict(num_classes=-1), dict(drop_rate=1.0)):
        with pytest.raises(ValueError):
            create_model("ghostnetv3_050", **bad)


def test_names_and_models_from_a_recipe_or_a_config():
    check_model_name("shufflenetv2_050_rep")
    with pytest.raises(ValueError, match="unknown model 'resnet50'; valid names: ghostnetv3_050"):
        check_model_name("resnet50")
    recipe = Recipe(num_conv_branches=1, use_scale_branch=False, use_identity_branch=False, drop_rate=0.0)
    a, b = build_model(recipe, 3), create_model_from_config(recipe.to_dict(), 3)
    assert a.state_dict().keys() == b.state_dict().keys() and a.classifier.out_features == 3
    assert build_model(recipe.to_dict(), 3).state_dict().keys() == a.state_dict().keys()  # a mapping works too
    with pytest.raises(KeyError, match="model config lacks \\['drop_rate'\\]"):
        create_model_from_config({k: v for k, v in recipe.to_dict().items() if k != "drop_rate"}, 3)


def test_ghostnetv3_renames_official_keys_and_names_the_form_mix_up():
    model = create_model("ghostnetv3_050", num_classes=4)
    ours = model.state_dict()
    official = {k.replace("_rpr_scale.bn1.", "_rpr_scale.bn.").replace(".bn1.", ".bn.") if "_rpr_" in k else k: v
                for k, v in ours.items()}
    assert official.keys() != ours.keys() and model.checkpoint_filter(official).keys() == ours.keys()
    assert load_checkpoint(create_model("ghostnetv3_050", num_classes=4), {"state_dict": official}) == "state_dict"
    deploy = create_model("ghostnetv3_050", num_classes=4, deploy=True)
    assert "train form but the model is fused" in deploy.checkpoint_hint(ours)
    assert "deploy=True" in model.checkpoint_hint(deploy.state_dict()) and model.checkpoint_hint(ours) == ""
    with pytest.raises(ValueError, match="build the model with deploy=True"):
        load_checkpoint(model, deploy.state_dict())
    assert torch.equal(model.checkpoint_filter(ours)["classifier.weight"], ours["classifier.weight"])
