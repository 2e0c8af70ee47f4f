"""Test-command time: how long the README's test command (``make test``) takes on this machine, and whether it passed.

The README's first screen gives the time of its two commands (issue 23). ``make main``'s comes from the committed
study's ``results/quick/calls.csv``; ``make test``'s comes from the record this script writes, never from memory.
It runs ``make test`` in the repository root (the environment already installed by ``make install``, so ``make``'s
install step only checks it; a first install from scratch is not part of the test command's time), times it from
start to exit, and keeps pytest's last summary line (``746 passed, 1 skipped in 694.80s``).

Writes ``<out>/record.json`` (replaced by each call that passes): command, git commit, code fingerprint, date, wall
seconds, the summary line, exit status, the machine (architecture and the cores this process may use), and the load
average before and after (a loaded machine makes the time longer; run it with nothing else busy). A call whose test
command fails writes no record (its time is not the time of a passing suite) and exits with the command's status.

Usage:
    python benchmarks/test_command_time.py                      # ~12 min on 2 quiet cores
    python benchmarks/test_command_time.py --make-args TEST_WORKERS=0 --out /tmp/test_time
"""
from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from gv3lite.fingerprint import code_fingerprint
from gv3lite.utils import git_commit, repo_root, write_atomic

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import load_average, machine, utc_now  # noqa: E402  (a sibling script, not a package)

SUMMARY = re.compile(r"^=*\s*(\d+ (?:passed|failed|error).* in [\d.]+s(?: \([\d:]+\))?)\s*=*$")


def summary_line(output: str) -> str | None:
    """pytest's last summary line in ``output`` (``'746 passed, 1 skipped in 694.80s (0:11:34)'``), or None."""
    found = [m.group(1) for line in output.splitlines() if (m := SUMMARY.match(line.strip()))]
    return found[-1] if found else None


def run_and_record(command: list[str], out: Path, cwd: Path) -> int:
    """Run ``command`` in ``cwd``, echo its output, and write ``out/record.json`` when it exits 0 with a pytest
    summary line. Returns the command's exit status (1 when it exited 0 without a summary line)."""
    record = {"command": " ".join(shlex.quote(a) for a in command), "git_commit": git_commit(),
              "code_fingerprint": code_fingerprint(), "started_utc": utc_now(),
              "machine": machine(),
              "load_before": load_average()}
    t0, lines = time.perf_counter(), []
    with subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:  # shown as it runs, kept for the summary line
            sys.stdout.write(line)
            lines.append(line)
    record |= {"wall_seconds": round(time.perf_counter() - t0, 1), "exit_status": proc.returncode,
               "summary": summary_line("".join(lines)), "load_after": load_average()}
    if proc.returncode != 0 or record["summary"] is None:
        print(f"test_command_time.py: `{record['command']}` exited with {proc.returncode} "
              f"({record['summary'] or 'no pytest summary line'}): no record written; fix the failing tests first",
              file=sys.stderr)
        return proc.returncode or 1
    path = write_atomic(Path(out) / "record.json", json.dumps(record, indent=1) + "\n")
    print(f"{record['command']}: {record['wall_seconds']:.0f} s ({record['summary']}), load "
          f"{record['load_before'][0]:.1f} -> {record['load_after'][0]:.1f}; wrote {path}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--make-args", nargs="*", default=[], help="extra make arguments, e.g. TEST_WORKERS=0")
    parser.add_argument("--out", default="results/test_time")
    args = parser.parse_args(argv)
    return run_and_record(["make", "test", *args.make_args], Path(args.out), repo_root())


if __name__ == "__main__":
    sys.exit(main())
