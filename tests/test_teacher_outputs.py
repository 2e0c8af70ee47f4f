"""gv3lite.teacher_outputs: RoIAlign pooling of the label maps, the cached supplier, the on-disk cache keyed by the
teacher and the images, and (issue 13) a trustworthy cache: keyed by the images' contents, validated on load, rebuilt
with a one-line notice naming the file when it is broken or does not fit; non-finite teacher outputs are an error."""
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from conftest import tiny_teacher
from gv3lite.distill import Objective, kd_kl_loss
from gv3lite.teacher_outputs import CachedKD, TeacherLabelMaps, build_label_maps, label_maps_cache_file
from gv3lite.teacher import FrozenTeacher

CLASSES = ["x", "y", "z"]


class TinyNet(nn.Module):
    """A stride-8 conv and a linear head with timm's forward_features / forward_head API."""

    def __init__(self, num_classes=3):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 8, stride=8)
        self.fc = nn.Linear(6, num_classes)

    def forward_features(self, x):
        return self.conv(x)

    def forward_head(self, x, pre_logits=False):
        return self.fc(x.mean(dim=(2, 3)))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def teacher(num_classes=3):
    half = (0.5, 0.5, 0.5)
    return FrozenTeacher(TinyNet(num_classes), half, half, half, half, name="tiny:test")


@pytest.fixture
def images(tmp_path, monkeypatch):
    monkeypatch.setenv("GV3LITE_CACHE", str(tmp_path / "cache"))
    g = np.random.default_rng(0)
    paths = []
    for i in range(4):
        path = tmp_path / "img" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(g.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def build(paths, t=None):
    return build_label_maps(t or teacher(), paths, class_names=CLASSES, image_size=32)


@pytest.mark.parametrize("damage, reason", [
    (lambda f: f.write_bytes(f.read_bytes()[:100]), "unreadable"),
    (lambda f: f.write_bytes(b""), "unreadable"),
    (lambda f: f.write_bytes(b"garbage" * 10), "unreadable"),
    (lambda f: torch.save({"maps": torch.full((4, 3, 4, 4), float("nan")), "classes": CLASSES, "image_size": 32},
                          f), "holds non-finite values"),
    (lambda f: torch.save({"maps": torch.zeros(4, 5, 4, 4), "classes": CLASSES, "image_size": 32}, f),
     "holds maps for 4 images x 5 classes, the dataset has 4 x 3"),
    (lambda f: torch.save({"maps": torch.zeros(4, 3, 4, 4), "classes": CLASSES, "image_size": 32, "key": "other"},
                          f), "was made for another teacher or other images"),
    (lambda f: torch.save(torch.zeros(2), f), "holds no \\(N, K, h, w\\) float maps"),
])
def test_a_broken_or_mismatching_cache_is_rebuilt_with_a_notice(images, capsys, damage, reason):
    good = build(images).maps
    file = label_maps_cache_file(teacher(), images, CLASSES, 32)
    assert file.is_file() and capsys.readouterr().err == ""
    damage(file)
    again = build(images).maps
    assert torch.equal(again, good)  # rebuilt, not used and not a crash
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"gv3lite: teacher cache {file} ") and err.endswith("; rebuilding it\n")
    assert __import__("re").search(reason, err), err
    assert torch.equal(build(images).maps, good) and capsys.readouterr().err == ""  # the rebuilt file is good


def test_an_image_replaced_in_place_gets_new_teacher_outputs(images):
    first = build(images)
    old_file = label_maps_cache_file(teacher(), images, CLASSES, 32)
    Image.new("RGB", (20, 20), (255, 0, 0)).save(images[2])  # same path, other pixels
    st = os.stat(images[2])
    os.utime(images[2], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # even within the file system's mtime step
    assert label_maps_cache_file(teacher(), images, CLASSES, 32) != old_file
    second = build(images)
    assert torch.equal(second.maps[[0, 1, 3]], first.maps[[0, 1, 3]])
    assert not torch.equal(second.maps[2], first.maps[2])


def test_non_finite_teacher_outputs_name_an_image(images):
    t = teacher()
    with torch.no_grad():
        t.model.fc.bias.fill_(float("inf"))
    with pytest.raises(FloatingPointError, match=f"teacher tiny:test gives non-finite outputs \\(NaN/inf\\) for 4 "
                                                 f"images, e.g. '{images[0]}'.*check the teacher checkpoint"):
        build(images, t)
    assert not label_maps_cache_file(t, images, CLASSES, 32).exists()


def test_a_second_process_waits_for_the_teacher_pass_instead_of_repeating_it(images, tmp_path, monkeypatch):
    """While another process holds the cache file's lock (its teacher pass), a build waits and then reads that
    process's file instead of running the teacher a second time."""
    import subprocess
    import sys

    from gv3lite.teacher_outputs import label_maps_key
    t = teacher()
    file = label_maps_cache_file(t, images, CLASSES, 32)
    file.parent.mkdir(parents=True)
    planted = torch.randn(4, 3, 4, 4).half()  # what the other process's teacher pass leaves, marked by its values
    code = ("import sys, time, torch; from filelock import FileLock; lock = FileLock(sys.argv[1] + '.lock'); "
            "lock.acquire(); print('held', flush=True); time.sleep(1.0); "
            "torch.save({'maps': torch.load(sys.argv[2]), 'classes': ['x', 'y', 'z'], 'image_size': 32, "
            "'key': sys.argv[3]}, sys.argv[1]); lock.release()")
    torch.save(planted, tmp_path / "planted.pt")
    proc = subprocess.Popen([sys.executable, "-c", code, str(file), str(tmp_path / "planted.pt"),
                             label_maps_key(t, images, CLASSES, 32)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        monkeypatch.setattr("gv3lite.teacher_outputs._teacher_pass", lambda *a: pytest.fail("the teacher ran twice"))
        maps = build_label_maps(t, images, class_names=CLASSES, image_size=32).maps
    finally:
        proc.wait(timeout=60)
    assert torch.equal(maps, planted)


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
