"""Progress for long steps: a bar on a terminal, periodic log lines in Snakemake logs."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
log = logging.getLogger("leaf.progress")


def progress(items: Iterable[T], total: int | None = None, desc: str = "", every_s: float = 30.0) -> Iterator[T]:
    """Yield from ``items``; show a tqdm bar when stderr is a terminal, else log a line every ``every_s``."""
    if sys.stderr.isatty():
        yield from tqdm(items, total=total, desc=desc, dynamic_ncols=True)
        return
    start = last = time.monotonic()
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        if now - last >= every_s:
            last = now
            rate = done / max(now - start, 1e-9)
            left = f", ~{(total - done) / rate:.0f}s left" if total else ""
            log.info("%s: %d/%s done (%.2f/s%s)", desc, done, total if total is not None else "?", rate, left)
    log.info("%s: %d done in %.1fs", desc, done, time.monotonic() - start)
