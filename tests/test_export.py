"""gv3lite.export: the deploy form as ONNX with a free batch size, onnxruntime against PyTorch, and bad input."""
import onnx
import pytest
import torch

from gv3lite.export import ONNX_RTOL, export_onnx, model_from_checkpoint, onnx_parity, onnx_session, time_model
from gv3lite.models import create_model
from gv3lite.reparam import randomize_batchnorm


def test_export_is_the_deploy_form_and_matches_pytorch_at_any_batch(tmp_path):
    model = randomize_batchnorm(create_model("ghostnetv3_050", num_classes=7), seed=1).eval()
    path = export_onnx(model, tmp_path / "m.onnx", img_size=64)
    graph = onnx.load(str(path))
    ops = {node.op_type for node in graph.graph.node}
    assert "BatchNormalization" not in ops and "Conv" in ops                  # every BN folded
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    session = onnx_session(path)
    for n in (1, 3):
        parity = onnx_parity(session, model, torch.randn(n, 3, 64, 64))
        assert parity["ok"] and parity["max_rel"] <= ONNX_RTOL, parity
    assert session.run(["logits"], {"images": torch.randn(3, 3, 64, 64).numpy()})[0].shape == (3, 7)
    assert any("rpr" in n for n, _ in model.named_modules())                   # the model itself was not fused
    assert time_model(model, torch.randn(1, 3, 64, 64), repeats=1) > 0


def test_bad_input_names_the_fix(tmp_path):
    model = create_model("ghostnetv3_050", num_classes=3).eval()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_onnx(model, tmp_path / "missing" / "m.onnx")
    with pytest.raises(ValueError, match="img_size"):
        export_onnx(model, tmp_path / "m.onnx", img_size=8)
    with pytest.raises(FileNotFoundError, match="ONNX file not found"):
        onnx_session(tmp_path / "nope.onnx")
    with pytest.raises(ValueError, match="repeats"):
        time_model(model, torch.randn(1, 3, 32, 32), repeats=0)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "bare.pth")
    with pytest.raises(ValueError, match="has no 'recipe' entry"):
        model_from_checkpoint(tmp_path / "bare.pth")
