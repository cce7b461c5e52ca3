"""What the ``a2o`` console shows: A2O's own lines. Everything else goes to the run's log file.

A search prints phases, one line per trial, warnings and errors that need the user. Ray, Ray Train,
Tune's reporter, Ray Data's progress, worker output (forwarded by Ray to the driver), tensorboardX,
httpx, transformers' bars and C++ log lines from Ray's core worker are written by many writers:
Python loggers with their own handlers, ``print``, tqdm, and native code. Filtering loggers
cannot catch all of them, so :func:`run_log` works one level down: for the run it points file
descriptors 1 and 2 at ``<storage>/logs/<command>-<time>.log`` and gives A2O's own logger and
progress bars a duplicate of the original terminal. Child processes started meanwhile (Ray's
raylet and workers, the embedded LLM server) inherit the log file too.

``-v/--verbose`` turns all of this off: everything goes to the terminal, at DEBUG.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import traceback
from collections.abc import Iterator
from typing import IO

from a2o import progress

OWN_LOGGERS = ("a2o", "searchers", "cluster", "benchmarks", "__main__")

log = logging.getLogger("a2o")


class _OwnRecords(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.split(".", 1)[0] in OWN_LOGGERS


class _ThirdPartyWarnings(logging.Filter):
    """Outside a run log: other libraries' warnings still reach the terminal."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.split(".", 1)[0] not in OWN_LOGGERS and record.levelno >= logging.WARNING


class ConsoleFormatter(logging.Formatter):
    """``HH:MM:SS message``; warnings and errors say so; no tracebacks (they go to the log file)."""

    def __init__(self) -> None:
        super().__init__(datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        stamp = self.formatTime(record, self.datefmt)
        level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        return f"{stamp} {level}{record.getMessage()}"


FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _TerminalHandler(logging.StreamHandler):
    """Writes to the terminal captured by :func:`run_log` while a run lasts, else to the current
    ``sys.stderr`` (looked up at each write, as ``logging.lastResort`` does)."""

    def __init__(self) -> None:
        super().__init__()
        self.terminal: IO[str] | None = None

    @property
    def stream(self):  # type: ignore[override]
        return self.terminal if self.terminal is not None else sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; the property decides
        pass


_console_handler: _TerminalHandler | None = None
_verbose = False


def setup_logging(verbose: bool) -> None:
    """Called once by the CLI before any command runs."""
    global _console_handler, _verbose
    _verbose = verbose
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if verbose:
        logging.basicConfig(level=logging.DEBUG, format=FILE_FORMAT, datefmt="%H:%M:%S", force=True)
        progress.set_console(sys.stderr)
        return
    root.setLevel(logging.INFO)
    _console_handler = _TerminalHandler()
    _console_handler.addFilter(_OwnRecords())
    _console_handler.setFormatter(ConsoleFormatter())
    root.addHandler(_console_handler)
    others = logging.StreamHandler(sys.stderr)
    others.addFilter(_ThirdPartyWarnings())
    others.setFormatter(logging.Formatter(FILE_FORMAT, datefmt="%H:%M:%S"))
    others.set_name("a2o-third-party-warnings")
    root.addHandler(others)
    progress.set_console(sys.stderr)


def reset_logging() -> None:
    """Forget :func:`setup_logging` (its handler is the caller's to remove): :func:`run_log` then
    redirects nothing, as before setup. For embedding callers and tests that set logging up twice."""
    global _console_handler, _verbose
    _console_handler = None
    _verbose = False
    progress.set_console(None)


class RunLog:
    """The open run log: its path, and the terminal's stdout for the command's final summary."""

    def __init__(self, path: str | None, stdout: IO[str]) -> None:
        self.path = path
        self.stdout = stdout

    def print(self, *parts: object) -> None:
        print(*parts, file=self.stdout, flush=True)


def log_dir_for(storage_root: str) -> str:
    """``<storage>/logs`` for local storage; a local folder for remote storage (s3://, gs://)."""
    if "://" in storage_root and not storage_root.startswith("file://"):
        import tempfile

        return os.path.join(tempfile.gettempdir(), "a2o-logs")
    return os.path.join(storage_root.removeprefix("file://"), "logs")


class ReportedError(Exception):
    """An unexpected error that :func:`run_log` already reported on the terminal (traceback in the log)."""


@contextlib.contextmanager
def run_log(log_dir: str, command: str) -> Iterator[RunLog]:
    """Route everything but A2O's own lines to ``<log_dir>/<command>-<time>.log`` while the run lasts.

    Under ``--verbose`` (or before :func:`setup_logging`) nothing is redirected.
    """
    if _verbose or _console_handler is None:
        yield RunLog(None, sys.stdout)
        return
    os.makedirs(log_dir, exist_ok=True)
    path = os.path.abspath(os.path.join(log_dir, f"{command}-{time.strftime('%Y%m%d-%H%M%S')}.log"))
    sys.stdout.flush()
    sys.stderr.flush()
    log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    saved_out, saved_err = os.dup(1), os.dup(2)
    terminal_out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8", errors="replace")
    terminal_err = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
    root = logging.getLogger()
    _console_handler.terminal = terminal_err
    # Everything, A2O's own lines included, also goes to the file, in order with the rest.
    everything = logging.StreamHandler()
    everything.setFormatter(logging.Formatter(FILE_FORMAT))
    hidden = [h for h in root.handlers if h.get_name() == "a2o-third-party-warnings"]
    for handler in hidden:
        root.removeHandler(handler)
    log.info("%s: full log (Ray, Ray Train, Tune, libraries, workers): %s", command, path)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    # Python-level writers too: sys.stdout/sys.stderr may not be backed by fds 1/2 (pytest,
    # notebooks), so for the run they are streams on the redirected descriptors.
    saved_sys = sys.stdout, sys.stderr
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
    everything.setStream(sys.stderr)
    root.addHandler(everything)
    progress.set_console(terminal_err)
    run = RunLog(path, terminal_out)
    try:
        yield run
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:
        from a2o.errors import A2OError

        if isinstance(exc, A2OError):
            sys.stderr.write(_traceback_text(exc))  # the file gets the traceback; the CLI prints the message
            raise
        logging.getLogger("a2o").error(
            "unexpected %s: %s. The traceback is in %s", type(exc).__name__, exc, path, exc_info=True
        )
        raise ReportedError(str(exc)) from exc
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = saved_sys
        root.removeHandler(everything)
        for handler in hidden:
            root.addHandler(handler)
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        os.close(saved_out)
        os.close(saved_err)
        _console_handler.terminal = None
        run.stdout = sys.stdout  # the command's summary comes after the run: the terminal again
        progress.set_console(sys.stderr)
        for stream in (terminal_out, terminal_err):
            with contextlib.suppress(OSError, ValueError):
                stream.close()


def _traceback_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
