"""The ImageFolder root on disk: checking it, scanning its splits, listing and counting its classes and images.

Owns: `check_data_root` (non-empty ``train/`` and ``val/`` class folders, the same classes in both), `scan_split`
(every folder readable, every class folder holds an image, links followed once: loops and images reached twice
refused; which files are skipped as non-images, announced once per split), `list_classes`,
`count_images`, the Imagenette class names (`IMAGENETTE_CLASSES`) and the how-to-get-the-data text every data error
ends with (`HOW_TO_GET_DATA`). Reading nothing but directory listings: no image is decoded here.
"""
from __future__ import annotations

import os
import warnings
from collections import Counter
from pathlib import Path
from typing import Sequence

from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes

IMAGENETTE_CLASSES = {  # wnid -> name, in ImageFolder (sorted wnid) order
    "n01440764": "tench", "n02102040": "English springer", "n02979186": "cassette player",
    "n03000684": "chain saw", "n03028079": "church", "n03394916": "French horn",
    "n03417042": "garbage truck", "n03425413": "gas pump", "n03445777": "golf ball", "n03888257": "parachute",
}
HOW_TO_GET_DATA = (
    "Point --data (or the GV3LITE_DATA environment variable) at an ImageFolder root that holds train/<class>/*.JPEG "
    "and val/<class>/*.JPEG, e.g. Imagenette from https://github.com/fastai/imagenette "
    "(tar xzf imagenette2-320.tgz), or pass --download on a machine with internet access.")


def check_data_root(root: str | os.PathLike) -> Path:
    """Return ``root`` as a ``Path`` after checking it holds non-empty ``train/`` and ``val/`` class folders, the same
    class folder names in both.

    Raises ``FileNotFoundError`` (missing root, a file instead of a folder, missing split, split without images)
    with how to get the data, ``ValueError`` naming the classes only one split has, and ``PermissionError`` naming
    the folder that cannot be listed.
    """
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise FileNotFoundError(f"data root {str(root)!r} is a file, not a folder; pass the folder that holds "
                                f"train/ and val/ (an archive must be unpacked first). {HOW_TO_GET_DATA}")
    if not root.is_dir():
        raise FileNotFoundError(f"data root {str(root)!r} does not exist. {HOW_TO_GET_DATA}")
    _listdir(root)
    names = {}
    for split in ("train", "val"):
        split_dir = root / split
        if not split_dir.is_dir():
            raise FileNotFoundError(f"data root {str(root)!r} has no {split}/ folder. {HOW_TO_GET_DATA}")
        class_dirs = [split_dir / name for name in _listdir(split_dir) if (split_dir / name).is_dir()]
        if not any(_is_image(name) for c in class_dirs for name in _listdir(c)):
            raise FileNotFoundError(f"{str(split_dir)!r} holds no images in class sub-folders. {HOW_TO_GET_DATA}")
        names[split] = {c.name for c in class_dirs}
    only_train, only_val = sorted(names["train"] - names["val"]), sorted(names["val"] - names["train"])
    if only_train or only_val:
        where = "; ".join(f"only in {s}/: {c}" for s, c in (("train", only_train), ("val", only_val)) if c)
        raise ValueError(f"data root {str(root)!r}: train/ and val/ hold different class folders ({where}); give "
                         "both splits the same classes (add or remove those folders), or the model would be scored "
                         "on classes it never saw or never be scored on some")
    return root


def _listdir(folder: Path) -> list[str]:
    """``os.listdir`` that names the folder and the fix when it cannot be read (``PermissionError``/``OSError``)."""
    try:
        return sorted(os.listdir(folder))
    except FileNotFoundError:
        raise
    except OSError as err:
        raise _unreadable(folder, err, "folder") from err


def _unreadable(path, err: OSError, what: str) -> OSError:
    """The error for a file or folder the OS refuses to read: same type (``PermissionError``...), path and fix."""
    fix = (f"make it readable (chmod -R a+rX {str(path)!r}) or move it out of the data root"
           if isinstance(err, PermissionError) else "check the disk or copy the data again")
    return type(err)(f"cannot read {what} {str(path)!r} ({err.strerror or err}); {fix}")


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS)


def scan_split(split_dir: str | os.PathLike, classes: Sequence[str]) -> list[str]:
    """Check a split folder before its images are listed: every folder under it can be read and every class folder
    in ``classes`` holds at least one image (an extension torchvision's ``IMG_EXTENSIONS`` lists).

    Links are followed once: a link to a folder the split already reaches (a loop such as ``up -> ..``, or the same
    class folder twice) or to an image already counted raises ``ValueError`` naming the link (torchvision's own
    listing would follow a loop until the path is too long and count each image many times).

    Returns the paths of the files that are skipped because they are not images (e.g. ``notes.txt``, ``.gif``),
    both inside class folders and loose in ``split_dir``. Raises ``FileNotFoundError`` for an empty class folder,
    ``ValueError`` for a link as above and ``PermissionError`` (or ``OSError``) for a folder that cannot be listed;
    each message names the path and the fix.
    """
    split_dir = Path(split_dir)
    skipped = [str(split_dir / n) for n in _listdir(split_dir) if not (split_dir / n).is_dir()]
    folders = {os.path.realpath(split_dir): str(split_dir)}  # real folder -> the path it was first reached by
    files: dict[tuple[int, int], str] = {}  # (device, inode) of each image -> its first path
    for name in classes:
        images = 0
        for folder, names in _walk_once(split_dir / name, folders):
            for file in names:
                path = os.path.join(folder, file)
                if not _is_image(file):
                    skipped.append(path)
                    continue
                _reached_once(path, files)
                images += 1
        if images == 0:
            raise FileNotFoundError(f"class folder {str(split_dir / name)!r} holds no images (extensions "
                                    f"{', '.join(IMG_EXTENSIONS)}); add its images, or remove the empty folder "
                                    "(or leave the class out with --classes)")
    return skipped


def _raise_unreadable_folder(err: OSError) -> None:
    raise _unreadable(err.filename, err, "folder") from err


def _walk_once(top: Path, folders: dict[str, str]):
    """``(folder, file names)`` of the folders under ``top`` (``top`` first), following links to folders, each real
    folder once: a link that leads to a folder already reached (a loop such as ``up -> ..`` or ``loop -> .``, or a
    second way to the same images) raises ``ValueError`` naming the link, its target and the path it was first reached by."""
    for folder, subdirs, files in os.walk(top, onerror=_raise_unreadable_folder, followlinks=True):
        if folder == str(top):
            _first_visit(folder, folders)
        for sub in subdirs:
            _first_visit(os.path.join(folder, sub), folders)
        yield folder, files


def _first_visit(path: str, folders: dict[str, str]) -> None:
    real = os.path.realpath(path)
    if real in folders and folders[real] != path:
        raise ValueError(f"link {path!r} leads to {real!r}, which the data root already reaches as "
                         f"{folders[real]!r} (a loop, or the same images twice); remove the link, or copy the "
                         "images it should add")
    folders[real] = path


def _reached_once(path: str, files: dict[tuple[int, int], str]) -> None:
    """Raise ``ValueError`` when ``path`` is a file already reached by another path (a file link, a hard link)."""
    try:
        info = os.stat(path)
    except OSError as err:
        raise _unreadable(path, err, "image file") from err
    key = (info.st_dev, info.st_ino)
    if key in files:
        raise ValueError(f"image {path!r} is the same file as {files[key]!r} (reached through a link), so it would "
                         "be counted twice; remove the link")
    files[key] = path


_ANNOUNCED_SKIPS: set[str] = set()  # split folders whose skipped files were already announced in this process


def _announce_skipped(split_dir: Path, skipped: list[str]) -> None:
    """Warn once per split folder (per process) how many non-image files are skipped, by extension."""
    if not skipped or str(split_dir) in _ANNOUNCED_SKIPS:
        return
    _ANNOUNCED_SKIPS.add(str(split_dir))
    kinds = Counter(Path(p).suffix.lower() or "(no extension)" for p in skipped)
    listed = ", ".join(f"{n} {ext}" for ext, n in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])))
    warnings.warn(f"{str(split_dir)!r}: skipping {len(skipped)} files that are not images ({listed}; e.g. "
                  f"{skipped[0]!r}); only {', '.join(IMG_EXTENSIONS)} are read: convert the files you want "
                  "(e.g. .gif -> .png) or move the others out of the data root", UserWarning, stacklevel=3)


def list_classes(root, split: str = "train") -> list[str]:
    """The class folder names of ``root/split`` (ImageFolder order)."""
    return find_classes(str(Path(root) / split))[0]


def count_images(root, split: str = "train", classes: Sequence[str] | None = None) -> int:
    """Number of image files under ``root/split/<class>/`` (all classes, or ``classes``), without decoding them."""
    names = classes if classes is not None else list_classes(root, split)
    return sum(1 for c in names for p in (Path(root) / split / c).iterdir() if p.suffix.lower() in IMG_EXTENSIONS)
