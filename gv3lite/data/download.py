"""Where the data root is (``--data`` → ``GV3LITE_DATA`` → ``<repo>/../shared/data/imagenette2-224``) and the
opt-in download of Imagenette (torchvision's ``Imagenette``); offline, the data is copied by hand (`HOW_TO_GET_DATA`).

Owns: `resolve_data_root`, `download_imagenette`.
"""
from __future__ import annotations

import os
from pathlib import Path

from torchvision.datasets import Imagenette

from gv3lite.data.folder import HOW_TO_GET_DATA, check_data_root
from gv3lite.utils import default_data_root


def download_imagenette(dest: str | os.PathLike, size: str = "320px") -> Path:
    """Download Imagenette with torchvision's ``Imagenette`` into ``dest`` and return the ImageFolder root.

    ``size``: ``"full"``, ``"320px"`` or ``"160px"`` (torchvision's names). Raises ``ConnectionError`` (an
    ``OSError``: the ``gv3lite`` command prints it as a one-line error) when the download fails (e.g. offline), naming
    the fix.
    """
    dest = Path(dest).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        Imagenette(str(dest), split="train", size=size, download=True)
    except Exception as err:  # urllib/HTTP/OS errors all mean the same thing to the user
        raise ConnectionError(f"could not download Imagenette into {str(dest)!r} ({type(err).__name__}: {err}). "
                           f"Without internet access, copy the data by hand. {HOW_TO_GET_DATA}") from err
    folder = {"full": "imagenette2", "320px": "imagenette2-320", "160px": "imagenette2-160"}[size]
    return check_data_root(dest / folder)


def resolve_data_root(data: str | os.PathLike | None = None, download: bool = False) -> Path:
    """The data root: ``data`` if given, else ``GV3LITE_DATA``, else ``<repo>/../shared/data/imagenette2-224``.

    With ``download=True`` and no data at that place, Imagenette (320 px) is downloaded there first.
    Raises ``FileNotFoundError`` when the root is missing/empty/lacks ``train/`` or ``val/``.
    """
    root = Path(data or os.environ.get("GV3LITE_DATA") or default_data_root()).expanduser()
    if download and not (root / "train").is_dir():
        return download_imagenette(root)
    return check_data_root(root)
