"""JupyterLab settings for this course, installed into ``.venv/etc/jupyter/`` by ``make install``.

A pre-save hook keeps a saved notebook identical to its committed form when the notebook lies in a git work tree
whose ``.gitattributes`` routes notebooks through nbstripout (this repository): outputs and execution counts are
dropped on save, exactly as the nbstripout git filter would (same options as the Makefile's ``git-filters``), so
running the course leaves ``git status`` clean. The open notebook keeps its outputs on screen until it is closed.
Notebooks elsewhere (copies, your own folders) are saved untouched. This is the hook pattern of the Jupyter
Server documentation ("Contents API", file save hooks); the stripping itself is nbstripout's.
"""
from pathlib import Path

import nbformat
from nbstripout import strip_output


def _uses_nbstripout(path: Path) -> bool:
    for folder in path.parents:
        attributes = folder / ".gitattributes"
        if attributes.is_file():
            return "filter=nbstripout" in attributes.read_text(errors="replace")
        if (folder / ".git").exists():
            return False
    return False


def strip_course_outputs(model, path, contents_manager, **kwargs):
    """Jupyter Server pre-save hook: strip outputs of notebooks under an nbstripout-filtered work tree."""
    if model.get("type") != "notebook" or not model.get("content"):
        return
    os_path = Path(contents_manager._get_os_path(path)).resolve()
    if _uses_nbstripout(os_path):
        model["content"] = strip_output(nbformat.from_dict(model["content"]), keep_output=False, keep_count=False,
                                        keep_id=True, extra_keys=["metadata.language_info.version"])


c.FileContentsManager.pre_save_hook = strip_course_outputs  # noqa: F821 (``c`` is Jupyter's config object)
