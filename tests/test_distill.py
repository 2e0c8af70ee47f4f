"""KD losses against hand-computed values, gradients, limits; the frozen teacher; label-map pooling and caching.

Fast: no pretrained weights (those are tested in test_teacher.py); tiny randomly initialized models only.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gv3lite.distill import Objective, kd_kl_loss, mix_teacher_logits, soft_target_cross_entropy, training_loss
from gv3lite.teacher_outputs import CachedKD, TeacherLabelMaps, build_label_maps, label_maps_cache_file
from gv3lite.teacher import FrozenTeacher

S = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])  # student logits (B=2, K=3)
T_ = torch.tensor([[1.0, 1.5, -0.5], [0.5, 0.0, 2.0]])  # teacher logits
Y = torch.tensor([0, 2])


def softmax(row, t):
    e = [math.exp(v / t) for v in row]
    return [v / sum(e) for v in e]


def hand_kl(s, t, temp):
    """T^2 * mean_b sum_c p_t log(p_t / p_s), written out with plain Python floats."""
    total = 0.0
    for srow, trow in zip(s.tolist(), t.tolist()):
        ps, pt = softmax(srow, temp), softmax(trow, temp)
        total += sum(q * math.log(q / p) for p, q in zip(ps, pt))
    return temp ** 2 * total / len(s)


def hand_ce(s, y):
    return sum(-math.log(softmax(row, 1.0)[c]) for row, c in zip(s.tolist(), y.tolist())) / len(s)


@pytest.mark.parametrize("temp", [1.0, 2.0, 4.0])
def test_kd_kl_matches_hand_computed(temp):
    assert kd_kl_loss(S, T_, temp).item() == pytest.approx(hand_kl(S, T_, temp), rel=1e-5)


@pytest.mark.filterwarnings("ignore:reduction")
def test_kd_kl_known_value_and_batchmean_not_mean():
    # Worked once by hand for T=1: sample 1 KL = 0.45109, sample 2 KL = 0.10987 -> batch mean 0.28048.
    assert kd_kl_loss(S, T_, 1.0).item() == pytest.approx(0.280480, abs=2e-5)
    # nn.KLDivLoss's default 'mean' divides by B*K, i.e. K=3 times too small: the bug the docstring warns about.
    default_mean = nn.KLDivLoss()(F.log_softmax(S, 1), F.softmax(T_, 1))
    assert default_mean.item() == pytest.approx(kd_kl_loss(S, T_, 1.0).item() / 3, rel=1e-5)


@pytest.mark.parametrize("alpha,temp", [(0.0, 1.0), (0.3, 1.0), (0.5, 4.0), (0.9, 2.0), (1.0, 3.0)])
def test_distillation_loss_mixes_ce_and_kd(alpha, temp):
    expected = (1 - alpha) * hand_ce(S, Y) + alpha * hand_kl(S, T_, temp)
    assert training_loss(S, Y, T_, alpha=alpha, temperature=temp).loss.item() == pytest.approx(expected, rel=1e-5)


def test_limits():
    assert torch.equal(training_loss(S, Y, T_, alpha=0.0, temperature=3.0).loss, F.cross_entropy(S, Y))
    assert kd_kl_loss(S, S.clone(), 2.0).item() == pytest.approx(0.0, abs=1e-7)
    # T^2 scaling: the loss is T^2 times the plain KL of the softened distributions.
    plain = F.kl_div(F.log_softmax(S / 3, 1), F.softmax(T_ / 3, 1), reduction="batchmean")
    assert kd_kl_loss(S, T_, 3.0).item() == pytest.approx(9 * plain.item(), rel=1e-6)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="alpha"):
        training_loss(S, Y, T_, alpha=1.5).loss
    with pytest.raises(ValueError, match="temperature"):
        kd_kl_loss(S, T_, 0.0)
    for bad in (float("nan"), float("inf"), "4", None, True):
        with pytest.raises(ValueError, match=f"temperature must be a finite number > 0, got {bad!r}"):
            soft_target_cross_entropy(S, T_, bad)
        with pytest.raises(ValueError, match="temperature"):
            training_loss(S, Y, T_, temperature=bad).loss
    with pytest.raises(ValueError, match=r"\(B, K\)"):
        kd_kl_loss(S, T_[:, :2])
    with pytest.raises(ValueError, match="kd_loss"):
        training_loss(S, Y, T_, kd_loss="mse").loss


def test_gradcheck_float64():
    s = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    t = torch.randn(3, 5, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: kd_kl_loss(x, t, 2.5), (s,))
    assert torch.autograd.gradcheck(lambda x: soft_target_cross_entropy(x, t), (s,))
    y = torch.tensor([0, 4, 2])
    assert torch.autograd.gradcheck(lambda x: training_loss(x, y, t, alpha=0.4, temperature=2.0).loss, (s,))


def test_soft_ce_same_gradient_as_kl_at_t1_and_differs_by_entropy():
    t = torch.randn(4, 6, dtype=torch.float64)
    grads = []
    for fn in (kd_kl_loss, soft_target_cross_entropy):
        s = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_()
        fn(s, t, 1.0).backward()
        grads.append(s.grad)
        value = fn(s.detach(), t, 1.0)
        if fn is kd_kl_loss:
            kl = value
        else:
            ce = value
    torch.testing.assert_close(grads[0], grads[1])
    p_t = F.softmax(t, 1)
    entropy = -(p_t * p_t.log()).sum(1).mean()
    torch.testing.assert_close(ce, kl + entropy)
    # and the closed form (p_s - p_t) / B
    s = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(grads[0], (F.softmax(s, 1) - p_t) / 4)


# ---------------------------------------------------------------------------------------------- frozen teacher
def tiny_teacher(num_classes=4, **kw):
    import timm

    torch.manual_seed(0)
    model = timm.create_model("tf_efficientnet_lite0", num_classes=num_classes)
    defaults = dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), student_mean=(0.485, 0.456, 0.406),
                    student_std=(0.229, 0.224, 0.225), name="tiny:test")
    return FrozenTeacher(model, **{**defaults, **kw})


def test_teacher_is_frozen_and_stays_in_eval():
    teacher = tiny_teacher()
    parent = nn.ModuleDict({"student": nn.Linear(2, 2), "teacher": teacher})
    parent.train()
    assert parent["student"].training
    assert not any(m.training for m in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    out = teacher(x)
    assert out.shape == (2, 4) and not out.requires_grad


def test_teacher_renormalizes_student_input():
    teacher = tiny_teacher()
    x01 = torch.rand(2, 3, 64, 64)
    student_x = teacher.normalize_unit(x01)
    with torch.no_grad():
        direct = teacher.model((x01 - 0.5) / 0.5)
    torch.testing.assert_close(teacher(student_x), direct, rtol=1e-4, atol=1e-4)


def test_teacher_class_index_selects_columns():
    full = tiny_teacher(num_classes=6)
    sub = tiny_teacher(num_classes=6, class_index=[5, 0, 2])
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(sub(x), full(x)[:, [5, 0, 2]])


def test_dense_map_mean_equals_global_logits():
    # EfficientNet's head is pool -> Linear, so pooling commutes with the classifier: exact up to float rounding.
    teacher = tiny_teacher(num_classes=5)
    x = torch.randn(3, 3, 96, 96)
    dense = teacher.dense_logits(x)
    assert dense.shape == (3, 5, 3, 3)
    torch.testing.assert_close(dense.mean(dim=(2, 3)), teacher(x), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------- pooling / cache
def test_roi_pool_whole_box_and_cell_aligned_box_are_exact():
    maps = torch.randn(2, 3, 7, 7)
    lm = TeacherLabelMaps(maps, ["a", "b", "c"], "t", 224)
    whole = lm.pool(torch.tensor([0, 1]), torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 2))
    torch.testing.assert_close(whole, maps.mean(dim=(2, 3)), rtol=0, atol=1e-6)
    # box covering map columns 2..3 and rows 1..2 exactly (x0=2/7, y0=1/7, x1=4/7, y1=3/7)
    box = torch.tensor([[2 / 7, 1 / 7, 4 / 7, 3 / 7]])
    torch.testing.assert_close(lm.pool(torch.tensor([1]), box), maps[1:2, :, 1:3, 2:4].mean(dim=(2, 3)),
                               rtol=0, atol=1e-6)


def test_cached_kd_protocol():
    maps = torch.randn(5, 3, 7, 7).half()
    kd = CachedKD(TeacherLabelMaps(maps, ["a", "b", "c"], "t", 224))
    objective = Objective(alpha=0.25, temperature=2.0)
    student = torch.randn(2, 3)
    info = {"index": torch.tensor([4, 1]), "box": torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 2),
            "flip": torch.tensor([True, False])}
    teacher = kd.teacher_logits(None, info)
    torch.testing.assert_close(teacher, maps[[4, 1]].float().mean(dim=(2, 3)), rtol=0, atol=1e-6)
    targets = torch.tensor([0, 2])
    parts = objective(student, targets, teacher)
    expected_kd = kd_kl_loss(student, maps[[4, 1]].float().mean(dim=(2, 3)), 2.0)
    torch.testing.assert_close(parts.kd, expected_kd, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(parts.loss, 0.75 * F.cross_entropy(student, targets) + 0.25 * expected_kd,
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(KeyError, match="return_crop_info"):
        kd.teacher_logits(None, None)


def test_mix_teacher_logits_mixes_the_teacher_distributions_like_the_labels():
    torch.manual_seed(0)
    z = torch.randn(4, 5) * 3
    for lam in (0.0, 0.3, 1.0):
        mixed = mix_teacher_logits(z, lam, 4.0)
        expected = lam * F.softmax(z / 4, 1) + (1 - lam) * F.softmax(z.flip(0) / 4, 1)  # image b with image B-1-b
        torch.testing.assert_close(F.softmax(mixed / 4, 1), expected, rtol=1e-5, atol=1e-7)
    # at lam = 1 the KD loss is the unmixed one
    student = torch.randn(4, 5)
    torch.testing.assert_close(kd_kl_loss(student, mix_teacher_logits(z, 1.0, 4.0), 4.0), kd_kl_loss(student, z, 4.0),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="lam=1.5"):
        mix_teacher_logits(z, 1.5, 4.0)


def test_build_label_maps_caches_on_disk(tmp_path, monkeypatch, data_root):
    root = data_root / "val"
    paths = sorted(str(p) for p in (root / "n01440764").glob("*.JPEG"))[:3]
    teacher = tiny_teacher(num_classes=2)
    monkeypatch.setenv("GV3LITE_CACHE", str(tmp_path))
    first = build_label_maps(teacher, paths, class_names=["x", "y"], image_size=64)
    file = label_maps_cache_file(teacher, paths, ["x", "y"], 64)
    assert file.is_file() and tmp_path in file.parents
    assert first.maps.shape == (3, 2, 2, 2) and first.maps.dtype == torch.float16
    written = file.stat().st_mtime_ns
    again = build_label_maps(teacher, paths, class_names=["x", "y"], image_size=64)  # same teacher: read back
    assert torch.equal(first.maps, again.maps) and file.stat().st_mtime_ns == written
    teacher.model.classifier.bias.data += 100.0  # a changed teacher under the same name: a new key, fresh maps
    assert label_maps_cache_file(teacher, paths, ["x", "y"], 64) != file
    second = build_label_maps(teacher, paths, class_names=["x", "y"], image_size=64)
    torch.testing.assert_close(second.maps.float(), first.maps.float() + 100.0, rtol=0, atol=0.2)
    assert label_maps_cache_file(teacher, paths[:2], ["x", "y"], 64) != file  # another image list, another key
