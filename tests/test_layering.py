"""The package's import graph: import-linter's layers contract (``[tool.importlinter]`` in pyproject.toml) holds --
no cycle, every module imports only modules in lower layers, every module is listed -- and no ``gv3lite`` import
hides inside a function (import-linter sees those too, but then a module's imports at the top would not show all
it depends on).
"""
import ast
import textwrap
from pathlib import Path

from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parent.parent


def test_the_layers_contract_holds(capsys):
    exit_code = lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True)
    assert exit_code == 0, capsys.readouterr().out


def test_the_contract_fails_on_an_upward_import(tmp_path, monkeypatch, capsys):
    """The same kind of contract on a tiny package whose lowest module imports the highest: import-linter breaks it."""
    package = tmp_path / "layered"
    package.mkdir()
    for name, text in {"__init__.py": "", "low.py": "import layered.high\n", "high.py": "import layered.low\n"}.items():
        (package / name).write_text(text)
    config = tmp_path / "contract.toml"
    config.write_text(textwrap.dedent("""
        [tool.importlinter]
        root_package = "layered"
        [[tool.importlinter.contracts]]
        name = "layers"
        type = "layers"
        containers = ["layered"]
        layers = ["high", "low"]
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert lint_imports(config_filename=str(config), no_cache=True) == 1
    assert "layered.low -> layered.high" in capsys.readouterr().out


def function_level_imports(path: Path) -> list[str]:
    """``gv3lite`` imports inside functions of ``path`` (as ``"function: module"``)."""
    found = []
    for func in ast.walk(ast.parse(path.read_text())):
        if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(func):
                if isinstance(node, ast.Import):
                    found += [f"{func.name}: {a.name}" for a in node.names if a.name.split(".")[0] == "gv3lite"]
                elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "gv3lite":
                    found.append(f"{func.name}: {node.module}")
    return found


def test_no_gv3lite_import_hides_in_a_function(tmp_path):
    hidden = {p.name: function_level_imports(p) for p in (ROOT / "gv3lite").rglob("*.py") if function_level_imports(p)}
    assert hidden == {}, "import gv3lite modules at module level, not inside functions"
    (tmp_path / "a.py").write_text("import os\n\ndef f():\n    from gv3lite.b import x\n    import gv3lite.c\n")
    assert function_level_imports(tmp_path / "a.py") == ["f: gv3lite.b", "f: gv3lite.c"]
