"""gv3lite.utils.git_commit on a loaded machine: a ``git update-index --refresh`` that takes too long is stopped with
SIGTERM, which lets git remove its ``index.lock`` (a SIGKILLed git left the lock behind and blocked every later
commit until it was deleted by hand)."""
import os
import stat

from gv3lite import utils


def test_a_slow_index_refresh_is_terminated_and_leaves_no_lock(tmp_path, monkeypatch):
    lock = tmp_path / "index.lock"
    fake = tmp_path / "bin" / "git"
    fake.parent.mkdir()
    # a stand-in git: update-index takes its lock and, like git, removes it when terminated; other commands answer
    fake.write_text(f"""#!/bin/sh
if [ "$1" = "update-index" ]; then
  touch {lock}; trap 'rm -f {lock}; exit 143' TERM; sleep 30 & wait
else
  echo abc1234
fi
""")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(utils, "REFRESH_TIMEOUT", 0.5)
    commit = utils.git_commit()
    assert commit.startswith("abc1234")
    assert not lock.exists(), "the refresh was killed without the chance to remove its index.lock"
