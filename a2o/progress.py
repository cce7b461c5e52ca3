"""Progress of long steps (decoding, detection, training): a bar on a terminal, plain lines elsewhere.

Library code reports progress through :func:`progress`; it never decides where output goes. An
entry point that owns a terminal registers it with :func:`set_console`; then steps draw a tqdm bar
there. Without one (CI, ``ray job submit`` logs, a notebook, tests) the same calls log plain lines
through the caller's logger, at most one every ``interval_s`` seconds plus the last one, so a log
file reads as a timeline, not as a wall of carriage returns.
"""

from __future__ import annotations

import logging
import time
from typing import IO, Any

_console: IO[str] | None = None


def set_console(stream: IO[str] | None) -> None:
    """Draw bars on ``stream`` when it is a terminal; ``None`` (or a non-TTY) means plain log lines."""
    global _console
    _console = stream


def console_is_terminal() -> bool:
    stream = _console
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real stream
        return False


class Progress:
    """``with progress(total, "decoding", log) as bar: bar.update(n)``; see the module docstring."""

    def __init__(self, total: int, desc: str, logger: logging.Logger, *, unit: str = "it",
                 interval_s: float = 10.0) -> None:
        self.total = int(total)
        self.desc = desc
        self.unit = unit
        self.logger = logger
        self.interval_s = interval_s
        self.count = 0
        self.started = time.perf_counter()
        self._last_line = self.started
        self._bar: Any = None
        if console_is_terminal() and self.total > 0:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=desc, unit=unit, file=_console, leave=False,
                             dynamic_ncols=True, mininterval=0.5)

    def update(self, n: int = 1, *, postfix: str = "") -> None:
        self.count += n
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix_str(postfix, refresh=False)
            self._bar.update(n)
            return
        now = time.perf_counter()
        if now - self._last_line >= self.interval_s and self.count < self.total:
            self._last_line = now
            self.logger.info("%s: %d/%d %s (%.0f s)%s", self.desc, self.count, self.total, self.unit,
                             now - self.started, f" {postfix}" if postfix else "")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def progress(total: int, desc: str, logger: logging.Logger, *, unit: str = "it",
             interval_s: float = 10.0) -> Progress:
    """A progress reporter for ``total`` units of work; see :class:`Progress`."""
    return Progress(total, desc, logger, unit=unit, interval_s=interval_s)
