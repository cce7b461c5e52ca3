"""``a2o report RUN_DIR``: the static HTML report of a run (or of every run under a folder)."""

from __future__ import annotations


def run(args) -> int:
    from a2o.report.html import build_report

    report = build_report(args.run_dir)
    print(f"report: {report.html_path}  ({report.runs} run(s), {len(report.pngs)} PNG plots)")
    for png in report.pngs:
        print(f"  {png}")
    for note in report.notes:
        print(f"  note: {note}")
    return 0
