"""CLI surface and the search service's storage helpers (no Ray, no training)."""

from __future__ import annotations

import subprocess
import sys

import fsspec
import pytest

from a2o.cli import build_parser, main


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("config", "data", "detect", "train", "search", "serve", "llm", "report"):
        assert command in out


def test_subcommand_without_action_shows_its_help(capsys):
    with pytest.raises(SystemExit):
        main(["data"])
    assert "prepare" in capsys.readouterr().out


def test_import_a2o_is_light():
    code = "import sys, a2o; heavy = [m for m in ('torch', 'ray', 'transformers') if m in sys.modules]; print(heavy)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_search_requires_config():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["search"])


def test_remote_storage_is_staged_then_published(tmp_path):
    from a2o.service import local_dir, publish

    uri = "memory://a2o-test-run/best"
    staged = local_dir(uri)
    assert not staged.startswith("memory")
    (tmp_path / "best").mkdir()
    (tmp_path / "best" / "metrics.json").write_text('{"ok": true}')
    publish(str(tmp_path / "best"), uri)
    fs = fsspec.filesystem("memory")
    assert fs.cat_file("/a2o-test-run/best/metrics.json") == b'{"ok": true}'
