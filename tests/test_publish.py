"""`make publish` (`gv3lite.study.publish`): the committed results re-render byte for byte from their records (each
committed study, of either design, and a factorial smoke study trained by the stand-in), a study is published only when it
is finished and trained by the current code, publishing one design removes what the other rendered, and README's
Results block says visibly when a committed study was trained by other code (`gv3lite readme --check` fails until it
does)."""
import shutil
from pathlib import Path

import matplotlib
import pandas as pd
import pytest
from PIL import Image

from gv3lite.cli import main
from gv3lite.fingerprint import code_fingerprint
from gv3lite.study import publish as publish_mod
from gv3lite.study import readme as readme_mod
from gv3lite.study.provenance import code_label
from gv3lite.study.readme import README_BEGIN, README_END, readme_results, split_readme
from gv3lite.study.records import folder_design
from gv3lite.utils import repo_root

COMMITTED = repo_root() / "results"
OFAT_QUICK = Path(__file__).parent / "fixtures" / "ofat_quick_542d4c2"  # a recorded one-factor quick study


def _records(src, dst):
    dst.mkdir(parents=True)
    for name in publish_mod.RECORDS:
        if (src / name).is_file():
            shutil.copy(src / name, dst / name)


@pytest.mark.parametrize("budget", ["quick", "medium"])
def test_rerendering_a_committed_study_gives_the_same_bytes(tmp_path, budget):
    _records(COMMITTED / budget, tmp_path / "results" / budget)
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{README_BEGIN}\n{README_END}\n")
    done = publish_mod.publish(budget, results=tmp_path / "results", figures=tmp_path / "figures", readme=readme,
                               render_only=True)
    assert done["copied"] == []
    for name in publish_mod.RENDERED[folder_design(COMMITTED / budget)]:
        assert (tmp_path / "results" / budget / name).read_bytes() == (COMMITTED / budget / name).read_bytes(), \
            f"results/{budget}/{name} is not what its records render to: run `make publish BUDGET={budget}` " \
            f"(gv3lite publish --budget {budget} --render-only) and commit it"
    committed_figures = sorted((repo_root() / publish_mod.FIGURES[budget]).glob("*.png"))
    assert committed_figures
    software = Image.open(committed_figures[0]).text.get("Software", "")
    if matplotlib.__version__ not in software:
        pytest.skip(f"the committed figures were drawn by {software!r}, this is matplotlib {matplotlib.__version__}: "
                    "PNG bytes differ between versions (the text files above were compared)")
    for png in committed_figures:
        assert (tmp_path / "figures" / png.name).read_bytes() == png.read_bytes(), \
            f"{publish_mod.FIGURES[budget]}/{png.name} differs"


def test_a_factorial_study_publishes_over_the_one_factor_one_and_rerenders_byte_for_byte(tmp_path, factorial_study):
    study = factorial_study(tmp_path / "study", "quick")
    results, figures = tmp_path / "results", tmp_path / "figures"
    _records(OFAT_QUICK, results / "quick")  # a one-factor study, rendered, is replaced
    for name in ("summary.csv", "summary.md"):
        shutil.copy(OFAT_QUICK / name, results / "quick" / name)
    figures.mkdir()
    shutil.copy(repo_root() / "figures" / "ablation_forest.png", figures / "ablation_kd.png")  # one of its figures
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{README_BEGIN}\n{README_END}\n")
    done = publish_mod.publish("quick", study=tmp_path / "study", results=results, figures=figures, readme=readme)
    assert done["design"] == "factorial" and done["readme_changed"]
    assert {p.name for p in done["removed"]} == {"summary.csv", "summary.md", "ablation_kd.png"}
    assert sorted(p.name for p in figures.iterdir()) == ["ablation_forest.png", "ablation_learning_curves.png"]
    for name in ("runs.csv", "calls.csv", "design.json"):
        assert (results / "quick" / name).read_bytes() == (study / name).read_bytes()
    rendered = {name: (results / "quick" / name).read_bytes() for name in publish_mod.RENDERED["factorial"]}
    pictures = {p.name: p.read_bytes() for p in figures.iterdir()}
    again = tmp_path / "again"  # the records alone, re-rendered elsewhere (as `make publish --render-only` does)
    _records(results / "quick", again / "quick")
    readme.write_text(f"# x\n{README_BEGIN}\n{README_END}\n")
    publish_mod.publish("quick", results=again, figures=tmp_path / "figures2", readme=readme, render_only=True)
    for name, data in rendered.items():
        assert (again / "quick" / name).read_bytes() == data, f"{name} is not what its records render to"
    assert {p.name: p.read_bytes() for p in (tmp_path / "figures2").iterdir()} == pictures
    assert "**quick budget**" in readme.read_text() and "| reparam | better |" in readme.read_text()


def _study(tmp_path, fingerprint):
    study = tmp_path / "study" / "quick"
    _records(OFAT_QUICK, study)
    runs = pd.read_csv(study / "runs.csv")
    runs.assign(code_fingerprint=fingerprint).to_csv(study / "runs.csv", index=False)
    return study


def test_publish_copies_only_a_finished_study_of_the_current_code(tmp_path, monkeypatch, capsys):
    rendered = []
    monkeypatch.setattr(publish_mod, "report", lambda folder, **kw: rendered.append(folder) or {"figures": []})
    monkeypatch.setattr(readme_mod, "readme_results", lambda root: "block\n")  # (publish: render_readme)
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{README_BEGIN}\n{README_END}\n")
    args = dict(study=tmp_path / "study", results=tmp_path / "results", figures=tmp_path / "fig", readme=readme)
    with pytest.raises(FileNotFoundError, match="nothing to publish: .*runs.csv does not exist; .*make main"):
        publish_mod.publish("quick", **args)
    study = _study(tmp_path, "0123456789ab")
    with pytest.raises(ValueError, match="not trained by the current training code .*0123456789ab"):
        publish_mod.publish("quick", **args)
    study = _study(tmp_path / "b", code_fingerprint())
    args["study"] = tmp_path / "b" / "study"
    (study / "runs" / "abc").mkdir(parents=True)
    (study / "runs" / "abc" / "last.pth").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"1 interrupted run\(s\) \(abc...\); finish them with `make main`"):
        publish_mod.publish("quick", **args)
    assert not (tmp_path / "results").exists() and rendered == []  # nothing written by a refused publish
    shutil.rmtree(study / "runs")
    done = publish_mod.publish("quick", **args)
    for name in publish_mod.RECORDS:
        if (study / name).is_file():  # a one-factor study has no design.json
            assert (tmp_path / "results" / "quick" / name).read_bytes() == (study / name).read_bytes()
    assert rendered == [tmp_path / "results" / "quick"] and done["readme_changed"]
    assert split_readme(readme.read_text())[1] == "block\n"
    assert main(["publish", "--budget", "quick", "--study", str(tmp_path / "none"), "--results", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("gv3lite publish: error: nothing to publish")


def _results(tmp_path, fingerprint=None):
    root = tmp_path / "results"
    (root / "quick").mkdir(parents=True)
    runs = pd.read_csv(OFAT_QUICK / "runs.csv")
    if fingerprint:
        runs = runs.assign(code_fingerprint=fingerprint)
    runs.to_csv(root / "quick" / "runs.csv", index=False)
    shutil.copy(OFAT_QUICK / "verdicts.csv", root / "quick" / "verdicts.csv")
    return root


def test_readme_check_fails_when_a_study_of_other_code_is_shown_without_its_label(tmp_path, capsys):
    _, block, _ = split_readme((repo_root() / "README.md").read_text())
    older = [b for b in ("quick", "medium") if code_label(pd.read_csv(COMMITTED / b / "runs.csv"))]
    assert "quick" not in older  # the factorial quick study is of the current code (medium: older until replaced)
    assert block.count("**Trained by older code: commit ") == len(older)
    root = _results(tmp_path, code_fingerprint())
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{README_BEGIN}\n{readme_results(root)}{README_END}\n")
    assert "**Trained by" not in readme.read_text()  # the current code: no label
    args = ["readme", "--results", str(root), "--readme", str(readme)]
    assert main([*args, "--check"]) == 0
    runs = pd.read_csv(root / "quick" / "runs.csv")
    runs.assign(code_fingerprint="0123456789ab").to_csv(root / "quick" / "runs.csv", index=False)  # code changed
    assert main([*args, "--check"]) == 1
    err = capsys.readouterr().err
    assert "shows a study trained by other code than the current one without saying so" in err
    assert main(args) == 0  # `gv3lite readme` writes the label ...
    assert "**Trained by other training code: commit " in readme.read_text()
    assert main([*args, "--check"]) == 0  # ... and with it the check passes


def test_a_folder_that_mixes_designs_is_neither_published_nor_shown(tmp_path, factorial_study, capsys):
    study = factorial_study(tmp_path / "study", "quick")
    ofat = pd.read_csv(OFAT_QUICK / "runs.csv").assign(code_fingerprint=code_fingerprint())
    pd.concat([pd.read_csv(study / "runs.csv"), ofat]).to_csv(study / "runs.csv", index=False)
    args = ["--budget", "quick", "--study", str(tmp_path / "study"), "--results", str(tmp_path / "results")]
    assert main(["publish", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "runs.csv mixes two designs" in err and "own --out folder" in err
    assert not (tmp_path / "results").exists()  # nothing published
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{README_BEGIN}\n{README_END}\n")
    assert main(["readme", "--results", str(tmp_path / "study"), "--readme", str(readme), "--check"]) == 2
    assert "runs.csv mixes two designs" in capsys.readouterr().err
