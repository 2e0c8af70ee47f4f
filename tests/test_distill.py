"""KD losses against hand-computed values, gradients, limits; the frozen teacher; label-map pooling and caching.

Fast: no pretrained weights (those are tested in test_teacher.py); tiny randomly initialized models only.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gv3lite.distill import kd_kl_loss, mix_teacher_logits, soft_target_cross_entropy, training_loss

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
