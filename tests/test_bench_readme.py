"""Benchmarks rewrite their README Results section between markers, and nothing else."""

from __future__ import annotations

from benchmarks._common import update_readme_section


def test_section_between_markers_is_replaced_and_the_rest_kept(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(
        "# Title\nintro\n<!-- results:searchers:begin -->\nold table\n<!-- results:searchers:end -->\n"
        "<!-- results:other:begin -->\nkeep me\n<!-- results:other:end -->\ntail\n",
        encoding="utf-8",
    )
    assert update_readme_section(str(readme), "searchers", "| new | table |\n")
    text = readme.read_text(encoding="utf-8")
    assert "old table" not in text
    assert "<!-- results:searchers:begin -->\n| new | table |\n<!-- results:searchers:end -->" in text
    assert text.startswith("# Title\nintro\n") and text.endswith("keep me\n<!-- results:other:end -->\ntail\n")


def test_missing_markers_change_nothing(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# Title\nno markers here\n", encoding="utf-8")
    assert not update_readme_section(str(readme), "searchers", "table")
    assert readme.read_text(encoding="utf-8") == "# Title\nno markers here\n"
