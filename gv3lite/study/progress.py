"""The study's live progress: one bar over every epoch the call trains, and one summary line per claim at the end.

`StudyProgress` watches the run directories (``<out>/<budget>/runs/<run id>/``) from a background thread: the epochs
each run has finished (rows of its ``metrics.csv``, which the trainer rewrites after every epoch) and the runs that
have a ``result.json``. So it works the same for one in-process training, a worker pool and submitit jobs, without
the workers reporting anything. ``tqdm.auto`` draws it: a text bar in a terminal, an ipywidgets bar in a notebook.
The bar's description gives the runs done / total, its postfix the epoch of each run in progress, and tqdm the
elapsed and estimated remaining time (from the epochs trained by this call only: epochs of a previous sitting are
its ``initial``).
"""
from __future__ import annotations

import threading
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from gv3lite.verdicts import contrast_label


def epochs_done(run_dir: Path, epochs: int) -> int:
    """Finished epochs of the run in ``run_dir``: all of them with a ``result.json``, else the rows of
    ``metrics.csv`` (0 without one, or while it is being replaced)."""
    if (run_dir / "result.json").is_file():
        return epochs
    try:
        with open(run_dir / "metrics.csv", encoding="utf-8") as f:
            return max(0, min(epochs, sum(1 for line in f if line.strip()) - 1))
    except OSError:
        return 0


class StudyProgress:
    """A live display of the trainings of a study call (a context manager; see the module doc).

    ``todo``: run id -> `gv3lite.recipe.Recipe` of the runs this call trains; ``out_dir``: ``<out>/<budget>``;
    ``finished``: runs of the study already finished before the call (counted as done); ``poll``: seconds between
    looks at the run directories; ``disable``: no display (e.g. nothing to train); ``label``: put before the runs
    count (e.g. ``"block 2 of at most 3: "`` for a factorial block)."""

    def __init__(self, todo: dict, out_dir, finished: int = 0, poll: float = 2.0, disable: bool = False,
                 label: str = ""):
        self.todo, self.out_dir, self.finished, self.poll = dict(todo), Path(out_dir), finished, poll
        self.label = label
        self.epochs = {rid: int(r.epochs) for rid, r in self.todo.items()}
        self.bar = tqdm(total=sum(self.epochs.values()), unit="epoch", dynamic_ncols=True,
                        disable=disable or not self.todo, initial=self._done()[0])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="study-progress", daemon=True)

    def _done(self) -> tuple[int, int, list[str]]:
        """(epochs done, runs done, 'run id epoch e/E' of the runs in progress)."""
        epochs, runs, running = 0, 0, []
        for rid, total in self.epochs.items():
            done = epochs_done(self.out_dir / "runs" / rid, total)
            epochs += done
            runs += done == total and (self.out_dir / "runs" / rid / "result.json").is_file()
            if 0 < done < total:
                running.append(f"{rid} epoch {done}/{total}")
        return epochs, runs, running

    def write(self, message: str) -> None:
        """Print ``message`` above the bar (``tqdm.write``), or plainly when there is no bar."""
        if self.bar.disable:
            print(message)
        else:
            self.bar.write(message)

    def refresh(self) -> None:
        """Look at the run directories once and redraw."""
        epochs, runs, running = self._done()
        done, total = self.finished + runs, self.finished + len(self.todo)
        self.bar.set_description(f"{self.label}runs {done}/{total}", refresh=False)
        idle = "all runs finished" if runs == len(self.todo) else "starting the next run"
        self.bar.set_postfix_str(", ".join(running) or idle, refresh=False)
        self.bar.update(epochs - self.bar.n)

    def _watch(self) -> None:
        while not self._stop.wait(self.poll):
            self.refresh()

    def __enter__(self) -> "StudyProgress":
        if not self.bar.disable:
            self.refresh()
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if not self.bar.disable:
            self.refresh()
        self.bar.close()


def claim_lines(table: pd.DataFrame) -> list[str]:
    """One line per claim of a verdict table: a one-factor study's (``gv3lite.study.analysis.verdicts``: contrast,
    named by ``gv3lite.verdicts.contrast_label``, so a composite one says so) or a factorial study's (its declared
    ``claim``, the sequential interval at the look's strictest Holm level); the diff and interval (pp), the verdict."""
    lines = []
    for r in table.itertuples():
        interval = f" [{r.low:+.2f}, {r.high:+.2f}]".replace("-0.00", "+0.00") if r.low == r.low else ""
        diff = f"{r.diff:+.2f} pp{interval}".replace("-0.00", "+0.00") if r.diff == r.diff else "no estimate"
        name = f"{r.grid}: {contrast_label(r.grid, r.cell, r.baseline)}" if "grid" in table else str(r.claim)
        lines.append(f"{name}: {diff} -> {r.verdict}")
    return lines
