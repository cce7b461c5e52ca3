"""The report's parts on hand-made data: accuracy axis zoom, confusion matrix figure, overlay
legend, region classes, and where the confusion matrices of a run are found."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("matplotlib")


def test_accuracy_axis_zooms_to_a_small_span_and_says_so():
    from a2o.report import plots

    series = {"icrl": [[0.95, 0.9875, None, 0.9625]]}
    references = {"final val (retrained)": 0.9125, "test (retrained)": 0.9}
    figure = plots.accuracy_figure(series, title="t", references=references)
    low, high = figure.axes[0].get_ylim()
    assert 0.8 < low < 0.9 and 0.9875 < high <= 1.01  # 0.90 … 0.9875 plus a margin, not 0–1
    notes = [t.get_text() for t in figure.axes[0].texts]
    assert notes == [plots.zoom_note(low, high)] and "not 0–1" in notes[0]
    # The horizontal lines of the retrained model are drawn and named in the legend.
    legend = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert "final val (retrained): 0.912" in legend and "test (retrained): 0.900" in legend


def test_accuracy_axis_stays_0_1_for_a_wide_span():
    from a2o.report import plots

    figure = plots.accuracy_figure({"random": [[0.05, 0.5, 0.97]]}, title="t")
    assert figure.axes[0].get_ylim() == pytest.approx(plots.FULL_SCALE)
    assert len(figure.axes[0].texts) == 0
    assert plots.accuracy_limits([0.5, 0.5]) == pytest.approx((0.47, 0.53, True))  # a flat run: ± min_span / 2
    assert plots.accuracy_limits([None]) == (*plots.FULL_SCALE, False)


def test_confusion_figure_counts_sum_to_the_clips():
    from a2o.report import plots

    matrix = [[5, 1, 0], [0, 0, 0], [2, 0, 7]]  # label "b" has no clip: a blank row
    figure = plots.confusion_figure(matrix, ["a", "b", "c $x$"], title="final, test")
    axes = figure.axes[0]
    counts = [int(t.get_text()) for t in axes.texts]
    assert sum(counts) == 15 and sorted(counts) == [1, 2, 5, 7]
    assert [t.get_text() for t in axes.get_yticklabels()] == ["a", "b", r"c \$x\$"]
    assert "15 clips, accuracy 0.800" in axes.get_title()
    rates = axes.images[0].get_array()
    assert rates[0, 0] == pytest.approx(5 / 6) and rates.mask[1].all()
    with pytest.raises(ValueError):
        plots.confusion_figure(matrix, ["a", "b"], title="x")


def _video(maps_by_class, frames=2, size=16):
    frames_rgb = np.full((frames, size, size, 3), 120, dtype=np.uint8)
    maps = np.zeros((frames, len(maps_by_class), size, size), dtype=np.uint8)
    for index, value in enumerate(maps_by_class):
        if value == "blob":
            maps[:, index, 4:8, 4:8] = 255
        elif value == "faint":
            maps[:, index, 4:8, 4:8] = 100  # below the drawing level 0.5
        elif value == "all":
            maps[:, index] = 230
    return ("v0", "lifting box", frames_rgb, maps)


def test_overlay_legend_lists_only_classes_drawn():
    from a2o.report import plots

    classes = ["box", "ghost", "faint", "table"]
    figure, legend = plots.overlay_figure([_video(["blob", None, "faint", "all"])], classes, title="t",
                                          regions=["table"])
    assert legend.objects == ["box"] and legend.regions == ["table"] and legend.absent == ["ghost", "faint"]
    labels = {t.get_text() for drawn in figure.legends for t in drawn.get_texts()}
    assert labels == {"box", "table"}
    # 2 frame columns + 1 region column; the frames themselves are drawn in RGB, not grey.
    assert len(figure.axes) == 3
    shown = figure.axes[0].images[0].get_array()
    assert shown.shape == (16, 16, 3)
    # Without any region drawn there is no region column.
    figure, legend = plots.overlay_figure([_video(["blob", None, None, None])], classes, title="t", regions=["table"])
    assert len(figure.axes) == 2 and legend.regions == [] and len(figure.legends) == 1


def test_region_classes_from_the_world_and_from_coverage():
    from a2o.report.overlay import region_classes

    info = {"vocabulary": {"regions": ["floor", "counter"]}, "lexicon": {"countertop": [["counter", 1.0]],
                                                                        "cup": [["cup", 1.0]]}}
    videos = [_video(["blob", "all", None, None, "blob"])]
    classes = ["cup", "table", "floor", "countertop", "Floor "]
    reasons = region_classes(classes, info, videos)
    assert set(reasons) == {"table", "floor", "countertop", "Floor "}
    assert "covers 100%" in reasons["table"] and "vocabulary" in reasons["floor"] and "lexicon" in reasons["countertop"]
    assert region_classes(["cup", "table"], None, videos) == {"table": reasons["table"]}  # no dataset.json
    assert region_classes(["cup"], None, []) == {}


def _run(tmp_path, results):
    from a2o.report.runs import find_runs

    (tmp_path / "results.json").write_text(json.dumps(results))
    return find_runs(str(tmp_path))[0]


def test_confusions_are_found_where_a_run_keeps_them(tmp_path):
    from a2o.report.runs import best_trial_confusion, final_confusions

    labels = ["a", "b"]
    best = {"iteration": 2, "trial_id": "abc123", "val_accuracy": 0.75}
    results = {"trials": [best], "best_trial": best,
               "config": {"storage": {"root": str(tmp_path), "experiment_name": "exp"}},
               "final": {"labels": labels, "val_accuracy": 0.5,
                         "test": {"confusion_matrix": [[2, 0], [1, 2]], "num_samples": 6}}}
    run = _run(tmp_path, results)
    confusion, why = best_trial_confusion(run)
    assert confusion is None and "abc123" in why

    # The trial's checkpoint (no Tune result with a matrix): used when it gives the trial's accuracy.
    checkpoint = tmp_path / "train" / "run_trial_abc123" / "checkpoint_2026" / "model"
    checkpoint.mkdir(parents=True)
    (checkpoint / "recognizer.json").write_text(json.dumps({"labels": labels, "extra": {"confusion": [[3, 1], [1, 3]]}}))
    confusion, source = best_trial_confusion(run)
    assert confusion is not None and confusion.clips == 8 and confusion.accuracy == 0.75
    assert source.endswith("checkpoint_2026/model/recognizer.json")
    # A matrix of another evaluation (accuracy 0.5, not 0.75) is refused.
    (checkpoint / "recognizer.json").write_text(json.dumps({"labels": labels, "extra": {"confusion": [[1, 1], [1, 1]]}}))
    confusion, why = best_trial_confusion(run)
    assert confusion is None and "do not give its val accuracy 0.75" in why

    # results.json's own copy (the trial row) comes first, under the same accuracy check.
    results["best_trial"] = dict(best, confusion=[[2, 0], [1, 1]])  # accuracy 0.75
    run = _run(tmp_path, results)
    confusion, source = best_trial_confusion(run)
    assert source == "results.json: best_trial.confusion" and confusion.matrix == [[2, 0], [1, 1]]

    found, notes = final_confusions(run)
    assert set(found) == {"test"} and found["test"].clips == 5
    assert any("counts 5 clips, but 6 were evaluated" in n for n in notes)
    assert any("no val confusion matrix" in n for n in notes)
    (tmp_path / "best" / "model").mkdir(parents=True)
    (tmp_path / "best" / "model" / "recognizer.json").write_text(
        json.dumps({"labels": labels, "extra": {"confusion": [[1, 1], [1, 1]]}}))
    found, _ = final_confusions(run)
    assert found["val"].matrix == [[1, 1], [1, 1]] and found["val"].split == "val"


HOSTILE = 'ball <script>alert("x")</script> & "cup"'


def _old_row(iteration, classes, acc, **extra):
    """A trial row as results.json held it before TrialRecord (no record_version, flat lr, time_s)."""
    return {"iteration": iteration, "trial_id": f"t{iteration}", "classes": classes, "proposal_source": "llm",
            "lr": 0.001, "weight_decay": None, "val_accuracy": acc,
            "classwise_accuracy": {"a": acc} if acc is not None else {}, "epochs": 2,
            "val_accuracy_per_epoch": [acc, acc] if acc is not None else [], "maps_computed": 1, "maps_reused": 2,
            "time_s": 3.5, "error": None, **extra}


def test_old_unversioned_results_are_read_and_unreadable_rows_are_noted(tmp_path):
    from a2o.report import build_report

    rows = [_old_row(1, ["Hand"], 0.5), _old_row(2, ["hand", HOSTILE], 0.9),
            _old_row(3, [], None, error="TrainingError: <x>")]
    run = _run(tmp_path, {"searcher": "icrl", "scheduler": "fifo", "trials": rows, "best_trial": rows[0], "final": None})
    first, failed = run.trials
    assert first.iteration == 1 and first.record.class_set.texts == ("hand",) and first.record.source == "llm"
    assert first.record.wall_time_s == 3.5 and dict(first.record.hyperparameters) == {"lr": 0.001}
    assert first.val_accuracy_per_epoch == (0.5, 0.5) and first.maps_reused == 2
    assert failed.iteration == 3 and failed.record.status == "error" and failed.error == "TrainingError: <x>"
    assert run.best_trial.iteration == 1 and run.best_val() == 0.5
    # The row whose class text is markup is left out, and the report says why (escaped).
    assert len(run.notes) == 1 and "trial row 2 skipped" in run.notes[0] and "safe characters" in run.notes[0]
    page = open(build_report(str(tmp_path), overlays="none").html_path).read()
    assert "<script>" not in page and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert 'id="run-0-trial-1"' in page and 'id="run-0-trial-3"' in page and 'id="run-0-trial-2"' not in page
    assert "&lt;x&gt;" in page and "3.5" in page


def test_new_rows_round_trip_through_the_report_reader(tmp_path):
    from a2o.detect.classes import ClassSet
    from a2o.records import TrialRecord, TrialRow

    record = TrialRecord.from_result(ClassSet.parse(["cup", "hand"]), {"val_accuracy": 0.5, "epoch": 1,
                                                                      "time_total_s": 2.0},
                                     source="llm", hyperparameters={"lr": 0.01}, trial_id="t1")
    row = TrialRow(1, record.with_status("early_stopped"), (0.5,), maps_computed=2, maps_reused=0)
    run = _run(tmp_path, {"trials": [row.to_dict()], "best_trial": row.to_dict()})
    assert run.trials == (row,) and run.best_trial == row and run.notes == ()
    assert run.best_val() == 0.5  # an early-stopped trial is scored


def test_mean_band_is_the_t_interval_of_the_mean_over_the_runs_that_reached_each_trial():
    from a2o.report.runs import mean_band

    curves = [[0.1, 0.6, 0.7], [0.2, 0.8], [0.3, None], [0.4], [0.5], [None]]
    band = mean_band(curves)
    assert band.count == (5, 2, 1) and band.confidence == 0.95
    assert band.mean == pytest.approx((0.3, 0.7, 0.7))
    # Half-width / (sd / sqrt(n)) is Student's t_{0.975, n-1}: 2.776 for n = 5, 12.706 for n = 2.
    for index, sd, n, t in ((0, np.std([0.1, 0.2, 0.3, 0.4, 0.5], ddof=1), 5, 2.776), (1, np.std([0.6, 0.8], ddof=1), 2, 12.706)):
        half = band.high[index] - band.mean[index]
        assert band.mean[index] - band.low[index] == pytest.approx(half)
        assert half / (sd / np.sqrt(n)) == pytest.approx(t, abs=5e-4)
    assert np.isnan(band.low[2]) and np.isnan(band.high[2])  # one run: no interval
    # Equal values: the interval collapses; indices no run has a value at are cut from the end.
    flat = mean_band([[0.5, 0.5, None], [0.5, 0.5]])
    assert flat.count == (2, 2) and flat.low == flat.mean == flat.high == (0.5, 0.5)
    assert mean_band([]).count == () and mean_band([[None, None]]).mean == ()


def _band_at(collection, x):
    ys = [y for vx, y in collection.get_paths()[0].vertices if vx == pytest.approx(x)]
    return min(ys), max(ys)


def test_accuracy_figure_draws_each_group_mean_with_its_confidence_band_to_its_own_length():
    from a2o.report import plots
    from a2o.report.runs import best_so_far, mean_band

    rng = np.random.default_rng(0)
    short = [list(rng.uniform(0.4, 0.6, 8)) for _ in range(3)]  # 3 seeds x 8 trials
    long = [list(rng.uniform(0.45, 0.65, 20)), list(rng.uniform(0.45, 0.65, 12)) + [None]]  # 20 and 13 trials
    single = [0.3, None, 0.5, 0.4, 0.45]
    figure = plots.accuracy_figure({"short": short, "long": long, "single": [single]}, title="t")
    axes = figure.axes[0]
    lines = {line.get_label(): line for line in axes.get_lines()}
    assert {"short (mean of n=3, 95% CI)", "long (mean of n=2, 95% CI)", "single (best so far)"} <= set(lines)

    expected = mean_band([best_so_far(run) for run in short])
    line = lines["short (mean of n=3, 95% CI)"]
    assert list(line.get_xdata()) == list(range(1, 9))
    assert list(line.get_ydata()) == pytest.approx(expected.mean)
    assert list(lines["long (mean of n=2, 95% CI)"].get_xdata()) == list(range(1, 21))
    assert list(lines["single (best so far)"].get_xdata()) == list(range(1, 6))
    assert list(lines["single (best so far)"].get_ydata()) == pytest.approx([0.3, 0.3, 0.5, 0.5, 0.5])

    short_band, long_band = axes.collections  # one band per group of several runs, none for the single run
    # The band is the t-interval, wider than the seeds' min-max (n = 3: t = 4.303 times sd / sqrt 3).
    low, high = _band_at(short_band, 1)
    assert (low, high) == pytest.approx((expected.low[0], expected.high[0]))
    firsts = [run[0] for run in short]
    assert low < min(firsts) and high > max(firsts)
    assert max(x for x, _ in short_band.get_paths()[0].vertices) == pytest.approx(8)
    # Past trial 13 only one run of "long" is left: the mean goes on, the band stops.
    assert max(x for x, y in long_band.get_paths()[0].vertices if np.isfinite(y)) <= 13
    # The y axis holds the bands (clipped to 0-1) as well as the means.
    axis_low, axis_high = axes.get_ylim()
    assert axis_low <= max(0.0, min(expected.low)) and axis_high >= min(1.0, max(expected.high))


def test_comparison_cells_are_formatted():
    from a2o.report.comparison import format_cell

    assert [format_cell(v) for v in (None, 7, 0.81234, 0.0, 1.234e-5, float("nan"), float("inf"), "x")] == [
        "–", "7", "0.812", "0.000", "1.23e-05", "–", "inf", "x"]


def _comparison(**changes):
    data = {"title": "Searchers <b>compared</b>", "note": "paired over seeds & splits",
            "tables": [{"title": "Test accuracy", "headers": ["searcher", "mean", "p", "n"],
                        "rows": [["icrl", 0.81234, 1.234e-5, 3], ["<script>alert(1)</script>", None, 0.5, 2]],
                        "note": "t-test <vs> random"}],
            "figures": []}
    data.update(changes)
    return data


def test_comparison_tables_are_shown_first_and_escaped(tmp_path):
    from a2o.report import build_report

    rows = [_old_row(1, ["hand"], 0.5), _old_row(2, ["cup"], 0.6)]
    (tmp_path / "run_a").mkdir()
    _run(tmp_path / "run_a", {"searcher": "icrl", "trials": rows, "best_trial": rows[1], "final": None})
    (tmp_path / "comparison.json").write_text(json.dumps(_comparison()))
    report = build_report(str(tmp_path), overlays="none")
    page = open(report.html_path).read()
    section = page[page.index('<section id="comparison">'):page.index("</section>")]
    assert "<h2>Searchers &lt;b&gt;compared&lt;/b&gt;</h2>" in section and "paired over seeds &amp; splits" in section
    assert "<th>searcher</th><th>mean</th><th>p</th><th>n</th>" in section
    assert ("<tr><td>icrl</td><td class=num>0.812</td><td class=num>1.23e-05</td><td class=num>3</td></tr>"
            in section)
    assert "<td>&lt;script&gt;alert(1)&lt;/script&gt;</td><td>–</td>" in section
    assert "t-test &lt;vs&gt; random" in section and "<script>" not in page
    assert page.index('id="comparison"') < page.index('id="how-to-read"') < page.index('id="run-0"')
    assert not any("comparison" in note for note in report.notes) and 'id="comparison-error"' not in page


@pytest.mark.parametrize(("content", "wrong"), [
    ("{not json", "is not readable JSON"),
    (json.dumps([1, 2]), "the top level must be an object, got list"),
    (json.dumps(_comparison(title=3)), "comparison.title must be a string, got int"),
    (json.dumps(_comparison(tables={"a": 1})), "tables must be a list of tables, got dict"),
    (json.dumps(_comparison(tables=[{"title": "x", "headers": ["a", "b"], "rows": [[1]]}])),
     "tables[0].rows[0] has 1 cells for 2 headers"),
    (json.dumps(_comparison(tables=[{"title": "x", "headers": ["a"], "rows": [[{"v": 1}]]}])),
     "tables[0].rows[0][0] must be a string, a number or null, got dict"),
    (json.dumps(_comparison(tables=[{"title": "x", "headers": "a", "rows": []}])),
     "tables[0].headers must be a list of strings, got str"),
    (json.dumps(_comparison(figures="none")), "figures must be a list, got str"),
])
def test_a_malformed_comparison_is_refused_saying_what_is_wrong(tmp_path, content, wrong):
    from a2o.errors import DataError
    from a2o.report.comparison import read_comparison

    assert read_comparison(str(tmp_path)) is None  # no file: nothing to show
    (tmp_path / "comparison.json").write_text(content)
    with pytest.raises(DataError) as caught:
        read_comparison(str(tmp_path))
    assert str(caught.value).startswith(str(tmp_path / "comparison.json")) and wrong in str(caught.value)


def test_a_malformed_comparison_is_a_warning_and_the_report_still_renders(tmp_path, caplog):
    from a2o.report import build_report

    rows = [_old_row(1, ["hand"], 0.5)]
    _run(tmp_path, {"searcher": "icrl", "trials": rows, "best_trial": rows[0], "final": None})
    (tmp_path / "comparison.json").write_text(json.dumps(_comparison(tables=[{"title": "<i>x</i>", "rows": []}])))
    with caplog.at_level("WARNING", logger="a2o.report.html"):
        report = build_report(str(tmp_path), overlays="none")
    page = open(report.html_path).read()
    warning = page[page.index('<p class="note warning" id="comparison-error">'):]
    warning = warning[:warning.index("</p>")]
    assert "comparison.json not shown" in warning and "tables[0].headers must be a list of strings" in warning
    assert 'id="run-0"' in page and 'id="run-0-trial-1"' in page and "<h2>Overview</h2>" in page
    assert '<section id="comparison">' not in page
    assert any("tables[0].headers" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert any("comparison.json not shown" in note for note in report.notes)


def test_runs_on_different_worlds_never_share_a_curve(tmp_path):
    """benchmarks/searchers.py keeps the OOD-history source (another world) beside the comparison."""
    from a2o.report.runs import find_runs

    def write(folder, world):
        (tmp_path / folder).mkdir(parents=True)
        results = {"searcher": "icrl", "scheduler": "fifo", "trials": [], "benchmark": {"world": world}}
        (tmp_path / folder / "results.json").write_text(json.dumps(results))

    write("runs/icrl_seed0", "household")
    write("runs/icrl_seed1", "household")
    assert {run.group for run in find_runs(str(tmp_path))} == {"icrl"}  # one world: no tag
    write("ood_source/runs/icrl_seed0", "tiny")
    groups = sorted(run.group for run in find_runs(str(tmp_path)))
    assert groups == ["icrl (household)", "icrl (household)", "icrl (tiny)"]
