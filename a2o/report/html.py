"""The static HTML report of one run, or of several runs (e.g. a searcher benchmark).

Recipe: find the runs' results.json → draw the plots as PNGs → write ``report/index.html`` that
links them by relative path. A ``comparison.json`` beside the runs (the benchmark's own tables,
:mod:`a2o.report.comparison`) is shown first. No server, no JavaScript, no external resources: the
``report/`` folder can be copied or attached as it is. Every text that comes from a run (class texts proposed
by an LLM, labels, errors, paths) is HTML-escaped.
"""

from __future__ import annotations

import datetime
import html
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import a2o.report.plots as plots
from a2o.errors import DataError
from a2o.report.comparison import COMPARISON_NAME, Comparison, ComparisonTable, format_cell, read_comparison
from a2o.report.overlay import load_overlay
from a2o.report.runs import (
    Confusion,
    RunRecord,
    best_so_far,
    best_trial_confusion,
    class_diff,
    final_confusions,
    find_runs,
)

__all__ = ["Report", "build_report"]

log = logging.getLogger(__name__)

_CSS = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1200px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.25em; margin-top: 1.6em; } h3 { font-size: 1.05em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f1f1f1; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.added { color: #116611; } .removed { color: #aa1111; text-decoration: line-through; }
.note { background: #fff6dd; border-left: 4px solid #e0b000; padding: 4px 10px; margin: 0.5em 0; }
.error { color: #aa1111; } .best { background: #eaf6ea; }
.note.warning { background: #fde8e8; border-left-color: #aa1111; }
.classes span.cls { display: inline-block; background: #eef; border-radius: 3px; padding: 0 5px; margin: 1px; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.4em 0; }
details { margin: 0.6em 0; } summary { cursor: pointer; font-weight: 600; }
.howto { background: #eef4fb; border: 1px solid #9bbbe0; border-radius: 4px; padding: 6px 14px; margin: 1em 0; }
.howto h2 { margin-top: 0.3em; } .howto dt { font-weight: 600; margin-top: 0.4em; } .howto dd { margin-left: 1.2em; }
.figs { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
figure { margin: 0.4em 0; } figure.confusion { flex: 1 1 500px; max-width: 640px; }
figcaption { font-size: 0.85em; color: #444; max-width: 1100px; overflow-wrap: anywhere; }
"""


@dataclass
class Report:
    """What :func:`build_report` wrote."""

    html_path: str
    """The report's index.html."""
    pngs: list[str] = field(default_factory=list)
    """Every PNG written (absolute paths, all inside the report folder)."""
    runs: int = 0
    """Runs included."""
    notes: list[str] = field(default_factory=list)
    """Things the report could not show (also shown in the HTML)."""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _acc(value: Any, digits: int = 4) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return f"{value:.{digits}f}"
    return "–"


def _classes_html(classes: Sequence[str]) -> str:
    if not classes:
        return "<em>(none: RGB only)</em>"
    return "".join(f'<span class="cls">{_e(c)}</span>' for c in classes)


def _diff_html(previous: list[str] | None, current: list[str]) -> str:
    added, removed = class_diff(previous, current)
    parts = [f'<span class="added">+{_e(c)}</span>' for c in added]
    parts += [f'<span class="removed">-{_e(c)}</span>' for c in removed]
    return " ".join(parts) or "<em>(same set)</em>"


def _labels_of(run: RunRecord) -> list[str]:
    final = run.results.get("final") or {}
    labels = [str(label) for label in (final.get("labels") or [])]
    for trial in run.trials:
        for label in trial.record.classwise_accuracy:
            if label not in labels:
                labels.append(label)
    return labels


def _stats_text(stats: dict[str, Any]) -> str:
    if not stats or "llm_calls" not in stats:
        return "–"
    tokens = int(stats.get("prompt_tokens", 0)) + int(stats.get("completion_tokens", 0))
    return f"{int(stats.get('llm_calls', 0))} calls, {tokens} tok, {float(stats.get('llm_time_s', 0.0)):.1f} s"


def _overview_table(runs: list[RunRecord]) -> str:
    rows = []
    for index, run in enumerate(runs):
        trials = run.trials
        errors = sum(1 for t in trials if t.record.status == "error")
        final = run.results.get("final") or {}
        rows.append(
            "<tr>"
            f'<td><a href="#run-{index}">{_e(run.name)}</a></td><td>{_e(run.group)}</td>'
            f'<td class="num">{len(trials)}</td><td class="num">{errors}</td>'
            f'<td class="num">{_acc(run.best_val())}</td><td class="num">{_acc(final.get("val_accuracy"))}</td>'
            f'<td class="num">{_acc(run.test_accuracy())}</td>'
            f'<td class="num">{_acc(run.results.get("search_seconds"), 1)}</td>'
            f"<td>{_e(_stats_text(run.results.get('searcher_stats') or {}))}</td>"
            "</tr>"
        )
    head = ("<tr><th>run</th><th>searcher</th><th>trials</th><th>errors</th><th>best val (search)</th>"
            "<th>final val</th><th>test</th><th>search s</th><th>LLM</th></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _group_table(runs: list[RunRecord]) -> str:
    """Mean ± std over the runs (seeds) of each searcher, when some searcher has several runs."""
    from a2o.train.stats import format_mean_std, summarize

    groups: dict[str, list[RunRecord]] = {}
    for run in runs:
        groups.setdefault(run.group, []).append(run)
    if all(len(members) < 2 for members in groups.values()):
        return ""
    rows = []
    for label, members in groups.items():
        cells = []
        for values in ([r.best_val() for r in members], [r.test_accuracy() for r in members]):
            finite = [v for v in values if v is not None]
            cells.append(format_mean_std(summarize(finite)) if finite else "–")
        rows.append(f"<tr><td>{_e(label)}</td><td class='num'>{len(members)}</td>"
                    f"<td class='num'>{_e(cells[0])}</td><td class='num'>{_e(cells[1])}</td></tr>")
    return ("<h3>Per searcher (mean ± sample std over runs)</h3><table><tr><th>searcher</th><th>runs</th>"
            f"<th>best val</th><th>test</th></tr>{''.join(rows)}</table>")


def _trials_table(run: RunRecord, index: int) -> str:
    best_iteration = run.best_trial.iteration if run.best_trial is not None else None
    rows, previous = [], None
    for trial in run.trials:
        record = trial.record
        classes = list(record.class_set)
        is_best = trial.iteration == best_iteration
        if record.status == "error":
            acc = '<span class="error">error</span>'
        else:
            acc = _acc(record.val_accuracy) + (" <em>(stopped early)</em>" if record.status == "early_stopped" else "")
        hparams = record.hyperparameters
        hparams_html = ""
        if "lr" in hparams or "weight_decay" in hparams:
            hparams_html = f"lr={_acc(hparams.get('lr'), 6)}<br>wd={_acc(hparams.get('weight_decay'), 5)}"
        epochs = record.epochs if record.epochs is not None else "-"
        rows.append(
            f'<tr{" class=best" if is_best else ""} id="run-{index}-trial-{trial.iteration}">'
            f'<td class="num">{trial.iteration}</td><td>{_e(record.trial_id)}</td>'
            f"<td>{_e(record.source or '-')}</td><td class='num'>{acc}</td>"
            f'<td class="num">{_e(epochs)}</td><td class="num">{_acc(record.wall_time_s, 1)}</td>'
            f"<td>{hparams_html}</td><td class='classes'>{_classes_html(classes)}</td>"
            f"<td>{_diff_html(previous, classes)}</td>"
            f"<td class='error'>{_e(trial.error) if trial.error else ''}</td></tr>"
        )
        previous = classes
    head = ("<tr><th>iter</th><th>trial id</th><th>source</th><th>val acc</th><th>epochs</th><th>time s</th>"
            "<th>hparams</th><th>object set</th><th>diff to previous</th><th>error</th></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _final_html(run: RunRecord) -> str:
    final = run.results.get("final") or {}
    best = run.best_trial
    if best is None and not final.get("classes"):
        return '<p class="note">No trial succeeded: there is no best set.</p>'
    parts = [f"<p><b>Best set</b> (iteration {_e(best.iteration if best else '?')}, "
             f"search val accuracy {_acc(best.record.val_accuracy if best else None)}): "
             f"<span class='classes'>{_classes_html(run.best_classes())}</span></p>"]
    test = final.get("test") or {}
    if final:
        epochs = final.get("final_epochs") or _config_value(run, "train", "final_epochs")
        retrain = f" (the best set retrained from scratch for {_e(epochs)} epochs)" if epochs else ""
        parts.append(f"<p>Final training{retrain}: val accuracy {_acc(final.get('val_accuracy'))}, "
                     f"test accuracy {_acc(test.get('accuracy'))}"
                     f"{' on ' + _e(test.get('num_samples')) + ' clips' if test.get('num_samples') else ''}.</p>")
    else:
        parts.append("<p>No final training in this run (search only).</p>")
    classwise = test.get("classwise_accuracy") or {}
    if classwise:
        cells = "".join(f"<tr><td>{_e(k)}</td><td class='num'>{_acc(v)}</td></tr>" for k, v in classwise.items())
        parts.append(f"<details><summary>test accuracy per class</summary><table>{cells}</table></details>")
    return "".join(parts)


def _comparison_table_html(table: ComparisonTable, number: int) -> str:
    """One comparison table; numbers right-aligned, every text escaped."""
    head = "".join(f"<th>{_e(header)}</th>" for header in table.headers)
    rows = []
    for row in table.rows:
        cells = []
        for value in row:
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            cells.append(f"<td{' class=num' if numeric else ''}>{_e(format_cell(value))}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    body = "".join(rows) or f"<tr><td colspan={max(1, len(table.headers))}><em>(no rows)</em></td></tr>"
    note = f"<p>{_e(table.note)}</p>" if table.note else ""
    return f'<h3 id="comparison-{number}">{_e(table.title)}</h3><table><tr>{head}</tr>{body}</table>{note}'


def _comparison_html(run_dir: str, report: Report) -> str:
    """The benchmark's own comparison tables (``comparison.json`` in ``run_dir``), or a visible warning.

    A file that cannot be read or breaks the layout (:mod:`a2o.report.comparison`) must not cost
    the rest of the report: the page says what is wrong in a warning line, the log warns, and
    :attr:`Report.notes` keeps it.
    """
    try:
        comparison: Comparison | None = read_comparison(run_dir)
    except DataError as exc:
        text = f"{COMPARISON_NAME} not shown: {exc}"
        log.warning("report: %s", text)
        report.notes.append(text)
        return f'<p class="note warning" id="comparison-error">{_e(text)}</p>'
    if comparison is None:
        return ""
    parts = [f'<section id="comparison"><h2>{_e(comparison.title or "Comparison")}</h2>']
    if comparison.note:
        parts.append(f"<p>{_e(comparison.note)}</p>")
    parts += [_comparison_table_html(table, number) for number, table in enumerate(comparison.tables)]
    if comparison.figures:
        parts.append(_note(f"{COMPARISON_NAME} lists {comparison.figures} figure(s); this report does not "
                           "draw them yet (see the benchmark's own output)."))
    parts.append("</section>")
    return "".join(parts)


def _accuracy_caption(series: dict[str, list[list[float | None]]]) -> str:
    """What the accuracy figure draws: dots + best-so-far line per single run, mean + 95 % CI per group."""
    sizes = {len(runs) for runs in series.values() if runs}
    parts = []
    if 1 in sizes:
        parts.append("Dots: each trial's val accuracy; line: the best so far (what the search val reports)"
                     + (", for a searcher with one run." if len(sizes) > 1 else "."))
    if sizes - {1}:
        parts.append("Lines: the mean over a searcher's runs (seeds) of the best val so far; band: the 95% "
                     "confidence interval of that mean (mean ± t(0.975, n−1) · sd / √n over the n runs that "
                     "reached that trial; none where only one did; clipped to 0–1). Each searcher's line "
                     "ends at its longest run.")
    return " ".join(parts)


def _img(path: str, alt: str) -> str:
    name = os.path.basename(path)
    return f'<a href="{_e(name)}"><img src="{_e(name)}" alt="{_e(alt)}"></a>'


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _config_value(run: RunRecord, section: str, key: str) -> Any:
    return ((run.results.get("config") or {}).get(section) or {}).get(key)


def _same(runs: list[RunRecord], section: str, key: str) -> Any:
    """The config value all runs share, or None when they differ (or none has it)."""
    values = {repr(_config_value(run, section, key)) for run in runs}
    return _config_value(runs[0], section, key) if len(values) == 1 else None


def _howto_html(runs: list[RunRecord], val_clips: int | None) -> str:
    """The "how to read this" box: what search val, final val and test are, and why they differ."""
    epochs = _same(runs, "train", "epochs")
    final_epochs = _same(runs, "train", "final_epochs")
    segments, views = _same(runs, "train", "eval_segments"), _same(runs, "train", "eval_views")
    trials = {len(run.trials) for run in runs}
    n_trials = f"{trials.pop()} " if len(trials) == 1 else ""
    epochs_text = f"train.epochs = {_e(epochs)}" if epochs is not None else "train.epochs"
    final_text = f"train.final_epochs = {_e(final_epochs)}" if final_epochs is not None else "train.final_epochs"
    retrain = ""
    if epochs is not None and final_epochs is not None:
        retrain = f" (for {_e(final_epochs)} epochs instead of {_e(epochs)})" if final_epochs != epochs else ""
    ensemble = (f"{_e(segments)} temporal segment(s) × {_e(views)} spatial view(s)"
                if segments is not None and views is not None else "several clips × views")
    parts = [
        '<div class="howto" id="how-to-read"><h2>How to read this report</h2><dl>',
        "<dt>search val (best val over trials)</dt>",
        f"<dd>Every trial trains one object set for {epochs_text} epochs and is scored on the val split. "
        f"The search keeps the trial with the highest val accuracy, so this number is the maximum of {n_trials}"
        "noisy scores on the same clips: it did the selecting, and it is <b>optimistic</b>.</dd>",
        "<dt>final val</dt>",
        f"<dd>The winning set retrained <b>from scratch</b> for {final_text} epochs (a new training run) and "
        "scored on the same val split, one centred clip per video. Nothing was selected on it, so it is "
        "usually below the search val.</dd>",
        "<dt>test</dt>",
        "<dd>That retrained model on the held-out <b>test</b> split, which the search never saw, averaging "
        f"{ensemble} per video. It is the number to quote.</dd></dl>",
        "<p><b>Why they differ.</b> Selection: the best of many noisy scores sits above its set's true "
        f"accuracy (winner's curse). Retraining: a new run of the same set{retrain} lands elsewhere. "
        "Sample size: the val and test splits are small",
    ]
    if val_clips:
        parts.append(f" ({val_clips} val clips: one clip is {100.0 / val_clips:.1f} points of accuracy)")
    parts.append(".</p>")
    if len(runs) == 1:
        run = runs[0]
        final = run.results.get("final") or {}
        best = run.best_trial
        search_val = best.record.val_accuracy if best is not None else None
        final_val, test = final.get("val_accuracy"), run.test_accuracy()
        facts = [f"search val {_acc(search_val)} (iteration {_e(best.iteration if best else '?')} of {len(run.trials)})"]
        if final:
            drop = ""
            if isinstance(search_val, (int, float)) and isinstance(final_val, (int, float)):
                delta = float(final_val) - float(search_val)
                clips = f" = {abs(delta) * val_clips:.0f} of {val_clips} val clips" if val_clips else ""
                drop = f" ({delta:+.4f}{clips})"
            facts.append(f"final val {_acc(final_val)}{drop}")
            samples = (final.get("test") or {}).get("num_samples")
            facts.append(f"test {_acc(test)}" + (f" on {_e(samples)} clips" if samples else ""))
        else:
            facts.append("no final training (search only)")
        noise = ""
        if final and val_clips and all(isinstance(v, (int, float)) for v in (search_val, final_val)):
            middle = (float(search_val) + float(final_val)) / 2.0
            error = math.sqrt(max(middle * (1.0 - middle), 0.0) / val_clips)
            within = abs(float(final_val) - float(search_val)) <= 2.0 * error
            noise = (f" With {val_clips} val clips, one standard error of an accuracy near {middle:.2f} is about "
                     f"±{error:.3f}: the gap between search val and final val is "
                     + ("within two of them, so noise alone could explain it." if within
                        else "beyond two of them, more than noise alone."))
        parts.append(f"<p><b>In this run:</b> {' → '.join(facts)}.{noise}</p>")
    parts.append("</div>")
    return "".join(parts)


def _run_val_clips(confusions: list[Confusion | None]) -> int | None:
    for confusion in confusions:
        if confusion is not None and confusion.split == "val" and confusion.clips:
            return confusion.clips
    return None


def _short_path(path: str, run_dir: str) -> str:
    """``path`` relative to the run folder when it lies inside it (captions stay short)."""
    if os.path.isabs(path) and os.path.commonpath([os.path.abspath(path), run_dir]) == run_dir:
        return os.path.relpath(path, run_dir)
    return path


_CONFUSION_TITLES = {
    "search-val": "best trial (search), val",
    "final-val": "final model (retrained), val",
    "final-test": "final model (retrained), test",
}


def _confusion_html(run: RunRecord, index: int, out_dir: str, report: Report,
                    shown: dict[str, Confusion], missing: list[str]) -> str:
    """Confusion-matrix PNGs (best trial on val, final model on val and test) with captions."""
    notes = "".join(_note(text) for text in missing)
    if not shown:
        return f"<h3>Confusion matrices</h3>{notes}" if notes else ""
    figures = []
    for kind, confusion in shown.items():
        png = plots.confusion_heatmap(
            confusion.matrix, confusion.labels, os.path.join(out_dir, f"confusion_{index}_{kind}.png"),
            title=f"{_CONFUSION_TITLES[kind]}: {run.name}",
        )
        report.pngs.append(png)
        figures.append(
            f'<figure class="confusion" data-kind="{kind}" data-clips="{confusion.clips}">'
            f"{_img(png, f'confusion matrix, {_CONFUSION_TITLES[kind]}')}"
            f"<figcaption><b>{_e(_CONFUSION_TITLES[kind])}</b>: {confusion.clips} clips, accuracy "
            f"{_acc(confusion.accuracy)}. Source: <code>{_e(_short_path(confusion.source, run.path))}</code>"
            "</figcaption></figure>"
        )
    return ("<h3>Confusion matrices</h3><p>Rows: true action; columns: predicted action (the dataset's label "
            "order). Colour: share of the row's clips (row-normalised); numbers: clip counts (zeros left out; "
            "the diagonal, in bold, is correct).</p>"
            f'<div class="figs">{"".join(figures)}</div>{notes}')


def _overlay_html(run: RunRecord, index: int, out_dir: str, report: Report) -> str:
    body = ["<h3>Val clips with the best set's likelihood maps</h3>"]
    overlay = load_overlay(run.results, run.path, run.best_classes())
    for text in overlay.notes:
        report.notes.append(f"{run.name}: {text}")
        body.append(_note(text))
    if not overlay.videos:
        return "".join(body)
    png, legend = plots.overlay_grid(
        overlay.videos, overlay.classes, os.path.join(out_dir, f"overlay_{index}.png"),
        title=f"best set of {run.name}", regions=list(overlay.regions),
    )
    report.pngs.append(png)
    level = f"{plots.MAP_LEVEL:g}"
    caption = [f"Frames in their own colours. Object classes are outlined (lightly filled) where their map reaches {level}."]
    if legend.regions:
        why = "; ".join(f"{_e(text)}: {_e(overlay.regions[text])}" for text in legend.regions)
        caption.append(f" Scene regions would cover the frame, so they are drawn only in the last column "
                       f"(the middle frame, tinted): {why}.")
    caption.append(" The legends list only the classes drawn in these frames: "
                   f'<span class="legend-objects">objects: {_e(", ".join(legend.objects)) or "none"}</span>; '
                   f'<span class="legend-regions">regions: {_e(", ".join(legend.regions)) or "none"}</span>.')
    if legend.absent:
        caption.append(f' <span class="legend-absent">Not drawn (map below {level} in every shown frame): '
                       f"{_e(', '.join(legend.absent))}</span>.")
    body.append(f"<figure class=\"overlay\">{_img(png, f'frames with maps, {run.name}')}"
                f"<figcaption>{''.join(caption)}</figcaption></figure>")
    return "".join(body)


def build_report(run_dir: str, *, out_dir: str | None = None, overlays: str = "auto") -> Report:
    """Write ``<run_dir>/report/index.html`` and its PNGs; return what was written.

    Args:
        run_dir: A run directory (holding results.json) or a parent of several.
        out_dir: Report folder (default ``run_dir/report``).
        overlays: ``"auto"`` draws the frame/map overlay for a single run, or for the best run of
            each searcher when there are several; ``"all"`` for every run; ``"none"`` skips them.

    Raises:
        DataError: no results.json under ``run_dir``.
        MissingDependencyError: matplotlib is not installed.
    """
    if overlays not in ("auto", "all", "none"):
        raise ValueError(f"overlays must be 'auto', 'all' or 'none', got {overlays!r}")
    runs = find_runs(run_dir)
    out_dir = os.path.abspath(out_dir or os.path.join(run_dir, "report"))
    os.makedirs(out_dir, exist_ok=True)
    report = Report(os.path.join(out_dir, "index.html"), runs=len(runs))
    title = os.path.basename(os.path.abspath(run_dir)) or run_dir

    series: dict[str, list[list[float | None]]] = {}
    for run in runs:
        series.setdefault(run.group, []).append([t.record.val_accuracy for t in run.trials])
    references: dict[str, float | None] = {}
    if len(runs) == 1 and runs[0].results.get("final"):
        references = {"final val (retrained)": runs[0].results["final"].get("val_accuracy"),
                      "test (retrained)": runs[0].test_accuracy()}
    accuracy_png = plots.accuracy_over_iterations(
        series, os.path.join(out_dir, "accuracy.png"), title=f"val accuracy over iterations: {title}",
        references=references,
    )
    report.pngs.append(accuracy_png)
    low, high, zoomed = plots.accuracy_axis(series, references)
    accuracy_caption = _accuracy_caption(series)
    if references:
        accuracy_caption += (" Dashed/dotted lines: the winning set retrained from scratch, on val and on test"
                             " (see “How to read this report”).")
    zoom_html = (f'<p class="note" id="accuracy-zoom">{_e(plots.zoom_note(low, high))}.</p>' if zoomed else "")

    confusions: dict[int, dict[str, Confusion]] = {}
    confusion_notes: dict[int, list[str]] = {}
    for run in runs:
        report.notes += [f"{run.name}: {note}" for note in run.notes]
    for index, run in enumerate(runs):
        shown: dict[str, Confusion] = {}
        search, why = best_trial_confusion(run)
        notes = []
        if search is not None:
            shown["search-val"] = search
        elif run.best_trial is not None:
            notes.append(f"best trial: {why}")
        finals, final_notes = final_confusions(run)
        for split, confusion in finals.items():
            shown[f"final-{split}"] = confusion
        notes += [f"final model: {note}" for note in final_notes]
        report.notes += [f"{run.name}: {note}" for note in notes]
        confusions[index] = dict(sorted(shown.items(), key=lambda item: list(_CONFUSION_TITLES).index(item[0])))
        confusion_notes[index] = notes
    val_clips = _run_val_clips([c for shown in confusions.values() for c in shown.values()])

    overlay_runs = set()
    if overlays == "all" or (overlays == "auto" and len(runs) == 1):
        overlay_runs = set(range(len(runs)))
    elif overlays == "auto":
        best_of_group: dict[str, tuple[float, int]] = {}
        for index, run in enumerate(runs):
            value = run.test_accuracy() if run.test_accuracy() is not None else run.best_val()
            if value is not None and (run.group not in best_of_group or value > best_of_group[run.group][0]):
                best_of_group[run.group] = (value, index)
        overlay_runs = {index for _, index in best_of_group.values()}

    sections = []
    for index, run in enumerate(runs):
        body = [_final_html(run), "<h3>Trials</h3>", _trials_table(run, index), *(_note(n) for n in run.notes)]
        labels = _labels_of(run)
        if labels and run.trials:
            matrix = np.full((len(labels), len(run.trials)), np.nan)
            for column, trial in enumerate(run.trials):
                for row, label in enumerate(labels):
                    value = trial.record.classwise_accuracy.get(label)  # finite by construction
                    if value is not None:
                        matrix[row, column] = value
            heatmap = plots.classwise_heatmap(
                matrix, labels, [t.iteration for t in run.trials],
                os.path.join(out_dir, f"classwise_{index}.png"), title=f"class-wise val accuracy: {run.name}",
            )
            report.pngs.append(heatmap)
            body += ["<h3>Class-wise val accuracy over iterations</h3>", _img(heatmap, f"class-wise accuracy {run.name}")]
        else:
            body.append(_note("no class-wise accuracy recorded: heatmap skipped"))
        body.append(_confusion_html(run, index, out_dir, report, confusions[index], confusion_notes[index]))
        if index in overlay_runs:
            body.append(_overlay_html(run, index, out_dir, report))
        iterations = best_so_far([t.record.val_accuracy for t in run.trials])
        summary = (f"{_e(run.name)}: {_e(run.group)}, {len(run.trials)} trials, "
                   f"best val {_acc(iterations[-1] if iterations else None)}")
        opened = " open" if len(runs) == 1 else ""
        sections.append(f'<details id="run-{index}"{opened}><summary>{summary}</summary>{"".join(body)}</details>')

    comparison_html = _comparison_html(run_dir, report)
    generated = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    document = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>A2O report: {_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>A2O report: {_e(title)}</h1>"
        f"<p>{len(runs)} run(s) under <code>{_e(os.path.abspath(run_dir))}</code>; generated {_e(generated)}.</p>"
        + comparison_html
        + _howto_html(runs, val_clips)
        + "<h2>Overview</h2>" + _overview_table(runs) + _group_table(runs)
        + "<h2>Accuracy over iterations</h2>"
        + f'<figure class="accuracy">{_img(accuracy_png, "val accuracy over iterations")}'
        + f"<figcaption>{_e(accuracy_caption)}</figcaption></figure>" + zoom_html
        + "<h2>Runs</h2>" + "".join(sections) + "</body></html>\n"
    )
    tmp = report.html_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(document)
    os.replace(tmp, report.html_path)
    log.info("report: %s (%d runs, %d PNGs)", report.html_path, len(runs), len(report.pngs))
    return report
