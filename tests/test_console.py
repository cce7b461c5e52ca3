"""The console shows A2O's own lines; everything else goes to the run's log file (issue 17)."""

from __future__ import annotations

import io
import logging
import os
import sys
import time

import pytest

from a2o.commands import console
from a2o.progress import Progress, set_console


@pytest.fixture
def quiet_console():
    """setup_logging(verbose=False) for one test, then the root logger as it was."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    console.setup_logging(False)
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved_handlers:
        root.addHandler(handler)
    root.setLevel(saved_level)
    console.reset_logging()


def test_run_log_keeps_library_and_native_output_off_the_terminal(tmp_path, capfd, quiet_console):
    with console.run_log(str(tmp_path / "logs"), "search") as run:
        logging.getLogger("a2o.search").info("phase: trials")
        logging.getLogger("httpx").warning("PlacementGroupCleaner: State API unavailable")  # a library logger
        logging.getLogger("tensorboardX.summary").info("Summary name x y is illegal")
        print("a print from a library")
        os.write(2, b"core_worker.cc:2465: native stderr noise\n")
        run.print("best classes : hand, spoon")
    run.print("summary after the run")  # the command's summary is printed after the block
    out, err = capfd.readouterr()
    assert "phase: trials" in err and "full log" in err and run.path in err
    assert "best classes : hand, spoon" in out and "summary after the run" in out
    for noise in ("PlacementGroupCleaner", "illegal", "a print from a library", "core_worker.cc"):
        assert noise not in out + err, noise
    text = open(run.path, encoding="utf-8").read()
    for line in ("phase: trials", "PlacementGroupCleaner", "illegal", "a print from a library", "core_worker.cc"):
        assert line in text, line
    # Descriptors are restored: output after the run reaches the terminal again.
    os.write(2, b"after the run\n")
    assert "after the run" in capfd.readouterr().err


def test_unexpected_error_is_one_line_on_the_terminal_and_a_traceback_in_the_file(tmp_path, capfd, quiet_console):
    with pytest.raises(console.ReportedError):
        with console.run_log(str(tmp_path / "logs"), "search") as run:
            raise RuntimeError("the disk is full")
    err = capfd.readouterr().err
    assert "unexpected RuntimeError: the disk is full" in err and run.path in err
    assert "Traceback" not in err
    assert "Traceback (most recent call last)" in open(run.path, encoding="utf-8").read()


def test_verbose_mode_redirects_nothing(tmp_path, capfd):
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    try:
        console.setup_logging(True)
        with console.run_log(str(tmp_path / "logs"), "search") as run:
            os.write(2, b"native line\n")
        assert run.path is None
        assert "native line" in capfd.readouterr().err
        assert not (tmp_path / "logs").exists()
    finally:
        console.reset_logging()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])


def test_console_formatter_shows_no_traceback():
    formatter = console.ConsoleFormatter()
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("a2o", logging.ERROR, __file__, 1, "failed: %s", ("x",), sys.exc_info())
    text = formatter.format(record)
    assert text.endswith("error: failed: x") and "Traceback" not in text


def test_progress_without_a_terminal_logs_plain_lines(caplog):
    set_console(io.StringIO())  # not a TTY
    logger = logging.getLogger("a2o.test_progress")
    with caplog.at_level(logging.INFO, logger="a2o.test_progress"):
        with Progress(4, "decoding videos", logger, unit="video", interval_s=0.0) as bar:
            for _ in range(4):
                time.sleep(0.001)
                bar.update(1)
    set_console(None)
    lines = [r.getMessage() for r in caplog.records]
    assert lines and all(line.startswith("decoding videos: ") for line in lines)
    assert "decoding videos: 1/4 video" in lines[0]
    assert not any("\r" in line for line in lines)


def test_log_dir_for_remote_storage_is_local():
    assert console.log_dir_for("runs/demo") == os.path.join("runs/demo", "logs")
    assert "://" not in console.log_dir_for("s3://bucket/run")
