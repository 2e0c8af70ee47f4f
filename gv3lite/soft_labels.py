"""Published soft labels: a teacher's dense logit maps on the training images, stored as a small versioned file.

Owns: the soft-label file format (`save_soft_labels`, `read_soft_labels`), the named published teachers
(`SOFT_LABEL_TEACHERS`: name -> file under ``gv3lite/artifacts/``), the images' content hashes (`file_hashes`)
and the checks that a student may use them (`check_published`: the file exists; `soft_labels_for`: same classes,
every training image seen by the teacher, no tuning-split or report (val/) image seen by it, no image changed since).

Why a file in the repository (issue 22): the study's default teacher must have learned only from the images the
student trains on (the ImageNet-pretrained EfficientNet-Lite teachers learned from 1.28 M images, and 3,791 of the
3,925 Imagenette val images are ImageNet *train* files, so they saw most of our val images). Training such a
teacher costs more CPU time than the quick budget's hour, so, as ReLabel (Yun et al. 2021) and FKD (Shen & Xing
2022) publish their soft labels, its outputs are published once (~1 MB) and rebuilt by one command
(``python -m gv3lite.same_data_teacher``, which also writes the teacher's card with its recipe, top-1 and cost).

File (``torch.save`` of a dict, loaded with ``weights_only=True``): ``maps`` (N, K, h, w) float16 logit maps of the
whole images resized to ``image_size`` px, ``files`` (N file names, ``<class>/<name>``), ``sha256`` (N hex digests
of the files' bytes, 16 characters), ``classes`` (K), ``image_size``, ``teacher`` (an id), ``card`` (a dict: recipe,
top-1, cost, command, commit) and ``format``.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torchvision.datasets.folder import IMG_EXTENSIONS

from gv3lite.checkpoint import save_checkpoint
from gv3lite.data import tuning_split

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
SOFT_LABEL_TEACHERS = {"imagenette_same_data": ARTIFACTS / "imagenette_same_data_teacher.pt"}
FORMAT = 1
REBUILD = "python -m gv3lite.same_data_teacher"


def file_hashes(paths: list[str]) -> list[str]:
    """SHA-256 (first 16 hex digits) of each file's bytes. Raises ``FileNotFoundError`` naming a missing file."""
    return [hashlib.sha256(Path(p).read_bytes()).hexdigest()[:16] for p in paths]


def image_key(path: str | Path) -> str:
    """``<class folder>/<file name>`` of an image path: how soft labels name an image on any machine."""
    path = Path(path)
    return f"{path.parent.name}/{path.name}"


def _images(folder: Path, classes: list[str]) -> list[Path]:
    return [f for c in classes if (folder / c).is_dir() for f in sorted((folder / c).iterdir())
            if f.is_file() and f.suffix.lower() in IMG_EXTENSIONS]


def tuning_keys(train_dir: str | Path, classes: list[str]) -> list[str]:
    """`image_key` of every image of the tuning split (``gv3lite.data.tuning_split``) of the folder ``train_dir``."""
    files = _images(Path(train_dir), classes)
    return [image_key(files[i]) for i in tuning_split(files, [f.parent.name for f in files])]


def shown(file: Path) -> str:
    """``file`` relative to the repository when it lies inside it (``gv3lite/artifacts/...``), else as given."""
    file, repo = Path(file).resolve(), ARTIFACTS.parent.parent
    return str(file.relative_to(repo)) if file.is_relative_to(repo) else str(file)


def check_published(name: str) -> None:
    """Raise ``FileNotFoundError`` (one line naming the file and the one command that rebuilds it) when the
    soft-label file of the published teacher ``name`` (a key of `SOFT_LABEL_TEACHERS`) is missing."""
    file = SOFT_LABEL_TEACHERS[name]
    if not file.is_file():
        raise FileNotFoundError(f"the soft labels of teacher {name!r} ({shown(file)}) do not exist; rebuild them "
                                f"with `{REBUILD}` (trains the same-data teacher; resumable)")


def save_soft_labels(file: str | Path, maps: torch.Tensor, paths: list[str], classes: list[str], image_size: int,
                     teacher: str, card: dict) -> None:
    """Write a soft-label file (atomic, ``gv3lite.checkpoint.save_checkpoint``): ``maps`` (N, K, h, w) for the
    images ``paths`` (N, in the same order). Raises ``ValueError`` when the shapes do not fit."""
    if maps.ndim != 4 or maps.shape[0] != len(paths) or maps.shape[1] != len(classes):
        raise ValueError(f"soft labels of shape {tuple(maps.shape)} do not fit {len(paths)} images x "
                         f"{len(classes)} classes")
    save_checkpoint({"maps": maps.half(), "files": [image_key(p) for p in paths], "sha256": file_hashes(paths),
                     "classes": list(classes), "image_size": int(image_size), "teacher": teacher, "card": card,
                     "format": FORMAT}, Path(file))


def read_soft_labels(name_or_file: str | Path) -> dict:
    """The dict of a soft-label file, given a `SOFT_LABEL_TEACHERS` name or a path. Raises ``FileNotFoundError``
    (missing: rebuild it) and ``ValueError`` (not a soft-label file, or another format)."""
    file = SOFT_LABEL_TEACHERS.get(str(name_or_file), Path(name_or_file))
    if not Path(file).is_file():
        raise FileNotFoundError(f"soft labels {shown(file)} do not exist; build them with `{REBUILD}`")
    saved = torch.load(file, map_location="cpu", weights_only=True)
    if not isinstance(saved, dict) or saved.get("format") != FORMAT or "maps" not in saved:
        raise ValueError(f"{file} is not a gv3lite soft-label file of format {FORMAT}; rebuild it with `{REBUILD}`")
    return saved


def soft_labels_for(name_or_file: str | Path, paths: list[str], classes: list[str]) -> dict:
    """The soft labels of the training images ``paths`` (dataset order): ``dict(maps (N, K, h, w) float16,
    image_size, teacher)``.

    Refuses (``ValueError``, one line with the fix) a teacher whose classes differ from ``classes``, one that trained
    on tuning-split images (``gv3lite.data.tuning_split``) or on report images (a file of ``val/`` beside the
    training images' ``train/`` folder), a training set with images the teacher never trained on (e.g. tuning-split
    images, another dataset: the student must train on ``tuning='exclude'`` images of the same data) and stale soft
    labels (an image whose bytes changed since). ``FileNotFoundError`` when the file is missing (`read_soft_labels`)."""
    saved = read_soft_labels(name_or_file)
    if list(saved["classes"]) != list(classes):
        raise ValueError(f"soft labels {name_or_file} are for classes {saved['classes'][:3]}..., the data has "
                         f"{list(classes)[:3]}...; use a teacher trained on these classes or rebuild with `{REBUILD}`")
    files = list(saved["files"])
    train_dir = Path(paths[0]).parent.parent if paths else None
    for what, held in (("tuning-split", tuning_keys(train_dir, classes) if paths else []),
                       ("report (val/)", [image_key(f) for f in _images(train_dir.parent / "val", classes)]
                        if paths else [])):
        seen = sorted(set(files) & set(held))
        if seen:
            raise ValueError(f"the teacher {name_or_file} trained on {len(seen)} {what} images (e.g. {seen[0]}); no "
                             f"setting may be chosen or reported on images the teacher saw: rebuild it on train/ minus "
                             f"the tuning split with `{REBUILD}`")
    row = {f: i for i, f in enumerate(files)}
    keys = [image_key(p) for p in paths]
    missing = [k for k in keys if k not in row]
    if missing:
        raise ValueError(f"the teacher {name_or_file} did not train on {len(missing)} of the student's "
                         f"{len(keys)} training images (e.g. {missing[0]}); train the student on train/ minus the "
                         "tuning split (tuning='exclude') of the same data, or rebuild the teacher with "
                         f"`{REBUILD}`")
    index = [row[k] for k in keys]
    changed = [k for k, h, i in zip(keys, file_hashes(paths), index) if saved["sha256"][i] != h]
    if changed:
        raise ValueError(f"soft labels {name_or_file} are stale: {len(changed)} training images changed since they "
                         f"were built (e.g. {changed[0]}); rebuild them with `{REBUILD}`")
    return {"maps": saved["maps"][index], "image_size": saved["image_size"], "teacher": saved["teacher"]}
