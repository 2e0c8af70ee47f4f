"""Post-hoc evaluations (gv3lite.posthoc): weight averaging, precise BN statistics, flip test-time averaging."""
import torch
from torch import nn

from gv3lite.bn_stats import precise_bn
from gv3lite.posthoc import average_states, evaluate_tta


class _Flat(torch.utils.data.Dataset):
    """A tiny stand-in dataset: (image, target) pairs of (3, 4, 4) tensors."""

    def __init__(self, n=16, shift=3.0):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, 4, 4, generator=g) * 2 + shift
        self.y = torch.arange(n) % 2

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


def test_average_states_means_floats_and_keeps_the_last_counters():
    a, b = _net().state_dict(), {k: v.clone() for k, v in _net().state_dict().items()}
    b["0.weight"] += 2.0
    b["1.num_batches_tracked"] += 7
    avg = average_states([a, b])
    assert torch.allclose(avg["0.weight"], a["0.weight"] + 1.0)
    assert avg["1.num_batches_tracked"] == b["1.num_batches_tracked"]


def test_precise_bn_sets_the_running_statistics_to_the_data_average():
    data = _Flat(shift=3.0)
    net = precise_bn(_net(), data, batch_size=4)
    conv_out = net[0](data.x)
    assert not net.training
    assert torch.allclose(net[1].running_mean, conv_out.mean(dim=(0, 2, 3)), atol=1e-4)


def test_flip_tta_averages_the_softmax_of_the_image_and_its_mirror():
    data = _Flat(n=32, shift=0.0)
    torch.manual_seed(1)
    net = nn.Sequential(nn.Flatten(), nn.Linear(48, 2)).eval()  # not mirror-symmetric
    top1 = evaluate_tta(net, data, batch_size=8)
    with torch.no_grad():
        p, q = net(data.x).softmax(1), net(torch.flip(data.x, dims=[3])).softmax(1)
    assert top1["center"] == 100.0 * float((p.argmax(1) == data.y).float().mean())
    assert top1["flip"] == 100.0 * float(((p + q).argmax(1) == data.y).float().mean())
    assert (p.argmax(1) != (p + q).argmax(1)).any()  # the two readings differ on some image
