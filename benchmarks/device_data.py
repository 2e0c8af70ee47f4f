"""A small copy of Imagenette for the lent GPU machine: the images `benchmarks/device_runs.py` trains and reads on.

The device tool sends at most 64 MiB with the repository, and the full Imagenette copy (162 MB of 224 px JPEGs) does
not fit. The runs sent there need only the quick budget's training images (300 per class of ``train/`` minus the
tuning split, drawn with ``data_seed`` 0 exactly as ``gv3lite.data.build_datasets`` draws them), the tuning split
(100 per class) and ``val/`` at 48 px or less. This script writes those images, resized so that their short side is
``--short-side`` px (default 96: the package caches train images at 2 x 48 = 96 px, so it keeps these pixels, and
resizes val to 54 px before its 48 px center crop, so nothing is upsampled) and re-encoded as JPEG (quality 95), in
the same ``train|val/<wnid>/<file name>`` layout, so that:

* the tuning split (a hash of the file names) and the 300-per-class subset (a seeded draw over what is left) pick
  the same file names in the copy as in the original (checked at the end: exit 1 if not);
* a run on the copy differs from one on the original only by one more resize and JPEG round trip of each image.
  Every run of ``device_runs.py`` reads the copy, so its comparisons (regime against regime, cell against cell)
  are between runs on the same pixels; its absolute top-1 is not the CPU study's.

    python benchmarks/device_data.py --out .device/imagenette2-96     # ~42 MiB, ~1 min on one core
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

from gv3lite.data import build_datasets, resolve_data_root

PER_CLASS = 300  # the quick budget's images per class (gv3lite.budgets.BUDGETS["quick"])


def chosen_files(root: Path, per_class: int) -> dict[str, list[Path]]:
    """split -> the original files a quick-budget run trains on (``train``), the tuning split (``tuning``) and every
    val image (``val``), as ``build_datasets`` picks them (no decoding: ``cache=False``)."""
    train, tune = build_datasets(root, 48, images_per_class_train=per_class, cache=False, tuning="only")
    _, val = build_datasets(root, 48, cache=False)
    return {name: [Path(p) for p, _ in ds.samples] for name, ds in (("train", train), ("tuning", tune), ("val", val))}


def shrink(src: Path, dst: Path, short_side: int, quality: int = 95) -> None:
    """Write ``src`` to ``dst`` as RGB JPEG with its short side resized to ``short_side`` px (Lanczos)."""
    with Image.open(src) as img:
        img = img.convert("RGB")
        scale = short_side / min(img.size)
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img.resize(size, Image.LANCZOS).save(dst, "JPEG", quality=quality)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="ImageFolder root (default: GV3LITE_DATA or the repo's data)")
    parser.add_argument("--out", default=".device/imagenette2-96")
    parser.add_argument("--short-side", type=int, default=96)
    args = parser.parse_args(argv)
    root, out = Path(resolve_data_root(args.data)), Path(args.out)
    files = chosen_files(root, PER_CLASS)
    for name, paths in files.items():
        split = "val" if name == "val" else "train"
        for path in paths:
            dst = out / split / path.parent.name / path.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.is_file():
                shrink(path, dst, args.short_side)
    copied = chosen_files(out, PER_CLASS)
    same = all([p.name for p in copied[k]] == [p.name for p in files[k]] for k in files)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2 ** 20
    print(f"{out}: {', '.join(f'{k} {len(v)}' for k, v in copied.items())} images, {size:.1f} MiB; "
          f"same file names as the original's picks: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
