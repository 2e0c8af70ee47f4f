"""Stand-ins for ``gv3lite.study.workers._worker_train`` in the ``--jobs`` tests: a spawned worker process imports
them by name (this folder is on the workers' ``sys.path``, handed down by ``multiprocessing``'s spawn), so they are
kept in a module that imports nothing heavy. `raises`: the training fails with a user error; `dies`: the worker
process ends without a result (as when it is killed or runs out of memory); `sleeps`: a long training, to be
interrupted (it leaves a file named by its process id in the folder ``$GV3LITE_TEST_MARKERS`` once it runs)."""
import os
import time
from pathlib import Path


def raises(task: dict):
    raise ValueError(f"cannot decode image /data/train/a/{task['rid']}.jpg (image file is truncated); delete or "
                     "replace it")


def dies(task: dict):
    os._exit(3)


def sleeps(task: dict):
    (Path(os.environ["GV3LITE_TEST_MARKERS"]) / str(os.getpid())).write_text(task["rid"])
    time.sleep(600)
