"""The code fingerprint (`gv3lite.fingerprint`): what it covers, what changes it and what does not."""
import ast
import shutil

import pandas as pd
import pytest

from gv3lite import fingerprint as fp

# modules the training imports whose code does not decide its numbers (everything else it imports must be hashed)
NOT_ARITHMETIC = {"checkpoint": "reads and writes weight files", "utils": "only seed_everything is hashed"}


def _imports(module: str) -> set[str]:
    path = fp.PACKAGE / f"{module}.py"
    files = [path] if path.is_file() else sorted((fp.PACKAGE / module).glob("*.py"))
    found = set()
    for file in files:
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gv3lite."):
                found.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("gv3lite."))
    return found - {module}


def test_every_module_the_training_imports_is_hashed_or_declared_not_arithmetic():
    seen, todo = set(), ["experiment"]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(_imports(module))
    hashed = {name.split("/")[0].removesuffix(".py") for name, _ in fp.training_sources()}
    assert seen - hashed - set(NOT_ARITHMETIC) == set()
    assert ("utils.py", "seed_everything") in fp.training_sources()
    reporting = ("stats", "verdicts", "figures", "ablation", "study", "cli", "launch")
    assert not any(name.startswith(reporting) for name, _ in fp.training_sources())  # reporting code is not training code


def _package_copy(tmp_path):
    copy = tmp_path / "gv3lite"
    shutil.copytree(fp.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_docs_and_comments_leave_the_fingerprint_alone_and_code_changes_it(tmp_path):
    copy = _package_copy(tmp_path)
    before = fp.code_fingerprint(copy)
    assert before == fp.code_fingerprint() and len(before) == fp.FINGERPRINT_LENGTH
    train = copy / "train.py" if (copy / "train.py").is_file() else sorted((copy / "train").glob("[!_]*.py"))[0]
    text = train.read_text()
    train.write_text(text.replace('"""', '"""Edited doc. ', 1) + "\n# a new comment\n")
    assert fp.code_fingerprint(copy) == before
    train.write_text(text + "\nEXTRA_CONSTANT = 1\n")
    assert fp.code_fingerprint(copy) != before
    train.write_text(text)
    utils = copy / "utils.py"
    utils.write_text(utils.read_text() + "\n\ndef unrelated_helper():\n    return 2\n")
    assert fp.code_fingerprint(copy) == before  # only seed_everything of utils counts
    utils.write_text(utils.read_text().replace("random.seed(seed)", "random.seed(seed + 1)"))
    assert fp.code_fingerprint(copy) != before
    utils.write_text(utils.read_text().replace("random.seed(seed + 1)", "random.seed(seed)"))
    (copy / "stats.py").write_text("X = 1\n")  # reporting code
    (copy / "verdicts.py").write_text("Z = 3\n")
    (copy / "figures.py").write_text("Y = 2\n")
    assert fp.code_fingerprint(copy) == before


def test_a_missing_training_module_is_a_clear_error(tmp_path):
    copy = _package_copy(tmp_path)
    (copy / "reparam.py").unlink()
    with pytest.raises(FileNotFoundError, match="gv3lite/reparam.py .* does not exist; update TRAINING_CODE"):
        fp.code_fingerprint(copy)
    with pytest.raises(KeyError, match="no top-level 'nope'"):
        fp.code_text(copy / "utils.py", "nope")


def test_fingerprint_status_of_recorded_runs():
    current = fp.code_fingerprint()
    runs = pd.DataFrame({"run_id": ["a", "a", "b"], "code_fingerprint": [current, current, current]})
    assert fp.fingerprint_status(runs)["reproducible"]
    other = runs.assign(code_fingerprint=[current, current, "0123456789ab"])
    status = fp.fingerprint_status(other)
    assert not status["reproducible"] and (status["other"], status["unknown"]) == (1, 0)
    assert status["recorded"] == sorted(["0123456789ab", current])
    old = runs.drop(columns="code_fingerprint")  # the committed studies predate fingerprints
    status = fp.fingerprint_status(old)
    assert not status["reproducible"] and (status["unknown"], status["recorded"]) == (2, [fp.UNKNOWN])
    assert not fp.fingerprint_status(runs.assign(code_fingerprint=[None, None, current]))["reproducible"]
    assert not fp.fingerprint_status(runs.iloc[:0])["reproducible"]


def test_a_published_artifact_is_hashed_by_its_bytes(tmp_path):
    copy = _package_copy(tmp_path)
    before = fp.code_fingerprint(copy)
    (copy / "artifacts").mkdir(exist_ok=True)
    (copy / "artifacts" / "soft_labels_test.bin").write_bytes(b"\x00\x01")
    with_file = fp.code_fingerprint(copy)
    assert with_file != before
    (copy / "artifacts" / "soft_labels_test.bin").write_bytes(b"\x00\x02")
    assert fp.code_fingerprint(copy) not in (before, with_file)
