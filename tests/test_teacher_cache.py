"""The teacher cache is trustworthy (issue 13): keyed by the images' contents, validated on load, rebuilt with a
one-line notice naming the file when it is broken or does not fit; non-finite teacher outputs are an error."""
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from gv3lite.teacher_outputs import build_label_maps, label_maps_cache_file
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
