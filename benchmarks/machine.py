"""What the benchmark records say about the machine and the moment of a measurement: the UTC time, the load
average, the cores and the CPU. Shared by ``notebook_times.py`` and ``test_command_time.py`` (sibling scripts import
it)."""
from __future__ import annotations

import datetime
import os
import platform

from gv3lite.utils import cpu_identity


def utc_now() -> str:
    """The current UTC time as ``YYYY-MM-DD HH:MM:SS``."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def load_average() -> list[float]:
    """The 1-, 5- and 15-minute load averages (``os.getloadavg``), rounded to 2 decimals."""
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> str:
    """``"<architecture>, <n> cores, <CPU model>, <instruction set>"``: the cores this process may run on
    (``os.sched_getaffinity`` where the system has it, else ``os.cpu_count``) and the CPU
    (`gv3lite.utils.cpu_identity`), so that times from different machines are not mixed up."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{platform.machine()}, {cores} cores, {cpu_identity()}"
