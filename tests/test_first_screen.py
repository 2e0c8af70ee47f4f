"""README.md's first screen (everything above ``## Notebooks``) is what a newcomer needs, and every number it quotes
comes from a committed file; the reference material lives in docs/reference.md, and quotes the factorial's blocks
as `gv3lite.budgets` declares them; `make main` / `make medium` run the factorial, then compare."""
import json
import re

import pandas as pd

from gv3lite.budgets import FACTORIAL_BLOCKS
from gv3lite.study.provenance import code_label
from gv3lite.study.records import read_calls
from gv3lite.study.report import duration
from gv3lite.utils import repo_root

ROOT = repo_root()


def _first_screen() -> str:
    text = (ROOT / "README.md").read_text()
    assert "\n## Notebooks" in text, "README.md lost its '## Notebooks' section (the end of the first screen)"
    return text.split("\n## Notebooks", 1)[0]


def test_the_first_screen_has_the_two_commands_the_forest_plot_and_the_course():
    screen = _first_screen()
    assert "arXiv 2404.11202" in screen
    assert re.search(r"(?m)^make main +#", screen) and re.search(r"(?m)^make test +#", screen)
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", screen)
    assert images == ["figures/ablation_forest.png"] and (ROOT / images[0]).is_file()
    course = re.findall(r"`(notebooks/[^`]+\.ipynb)`", screen)
    assert course and all((ROOT / c).is_file() for c in course)
    assert "docs/reference.md" in (ROOT / "README.md").read_text() and (ROOT / "docs" / "reference.md").is_file()
    assert len(screen.splitlines()) <= 45, "the first screen grew: move reference material to docs/reference.md"


def test_the_first_screen_quotes_only_recorded_times_and_labels_a_study_of_other_code():
    screen = " ".join(_first_screen().split())
    calls = read_calls(ROOT / "results" / "quick")
    runs = pd.read_csv(ROOT / "results" / "quick" / "runs.csv")
    total = duration(calls["wall_seconds"].sum())
    if code_label(runs):  # a study of other code: make main as it is now has no recorded time, the screen says so
        assert "`make main` as it is now: not yet measured" in screen
    else:  # the committed study is what make main trains today: its recorded wall time is make main's
        assert f"`make main` as it is now: {total} of wall time (the committed quick study, `results/quick/calls.csv`" \
            in screen
    record = ROOT / "results" / "test_time" / "record.json"
    if record.is_file():  # benchmarks/test_command_time.py timed a passing `make test`: the screen quotes that record
        test = json.loads(record.read_text())
        assert test["exit_status"] == 0 and re.match(r"\d+ passed", test["summary"])
        tested = duration(test["wall_seconds"])
        assert f"`make test`: {tested} (`results/test_time/record.json`: {test['summary'].split(' in ')[0]}, " \
               f"commit {test['git_commit']}, {test['started_utc'][:10]})" in screen
    else:  # no recorded time: the screen says so instead of guessing
        tested = None
        assert "`make test`: not yet measured" in screen
    times = re.findall(r"\d+ (?:h \d+ min|min \d+ s)", screen)
    assert times == [t for t in (total, tested) if t]  # no other duration on the first screen
    if code_label(runs):  # the committed quick study was not trained by the current code: the caption says so
        assert code_label(runs).strip("*") in screen  # (the caption is generated: gv3lite.study.readme.forest_caption)
    else:
        assert "Trained by older code" not in screen


def test_the_reference_page_measurements_cite_files_that_exist():
    text = (ROOT / "docs" / "reference.md").read_text()
    assert "\n## Measurements\n" in text
    text = text.split("\n## Measurements\n", 1)[1].split("\n## ", 1)[0]  # where numbers are quoted
    cited = set(re.findall(r"`((?:results|benchmarks|figures)/[^` ]+?)/?`", text))
    assert cited
    missing = [c for c in sorted(cited) if "<" not in c and "*" not in c and not (ROOT / c).exists()]
    assert missing == []


def test_make_main_and_medium_run_the_factorial_and_the_reference_quotes_its_blocks():
    makefile = (ROOT / "Makefile").read_text()
    for target, budget in (("main", "quick"), ("medium", "medium")):
        recipe = re.search(rf"(?m)^{target}: install\n((?:\t.*\n)+)", makefile).group(1)
        assert f'GV3LITE_RESUME="make {target}" $(GV3LITE) reproduce --design factorial --budget {budget} --jobs 2' \
               in recipe and f"$(GV3LITE) compare $(STUDY)/{budget} results/{budget}" in recipe
    text = " ".join((ROOT / "docs" / "reference.md").read_text().split())
    q, m = FACTORIAL_BLOCKS["quick"], FACTORIAL_BLOCKS["medium"]
    assert (f"quick after {q['first_look']} blocks, at most {q['max_blocks']}, {q['wall_minutes']} min; medium after "
            f"{m['first_look']}, at most {m['max_blocks']}, {m['wall_minutes']} min") in text
    for budget, b in (("quick", q), ("medium", m)):
        row = next(line for line in text.split("| `")[1:] if line.startswith(f"{budget}`"))
        assert f"first look after {b['first_look']} blocks" in row and f"at most {b['max_blocks']}, " \
               f"{b['wall_minutes']} min" in row
