"""Progress logging shared by the training scripts: timestamped lines to stdout and a log file."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Callable


def open_log(path: Path) -> Callable[[str], None]:
    """Return ``log(msg)``: appends ``<ISO time> msg`` to ``path`` (line-buffered) and prints it."""
    logf = open(path, "a", buffering=1)

    def log(msg: str) -> None:
        line = f"{_dt.datetime.now().isoformat(timespec='seconds')} {msg}"
        print(line, flush=True)
        logf.write(line + "\n")

    return log
