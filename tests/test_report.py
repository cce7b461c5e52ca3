"""`a2o report`: the static HTML report of a run built from a hand-written results.json over a
real tiny frame store and map cache (no search is run here: it would take minutes)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from a2o.config import config_from_dict, config_to_dict

BEST = ["ball", "hand", "floor", "table", "zebra"]  # floor, table: regions of the tiny world; zebra: no map


def _config(root) -> dict:
    return config_to_dict(config_from_dict({
        "data": {"dataset": "synthetic", "root": str(root / "synth"), "synth_preset": "tiny",
                 "num_frames": 8, "resolution": 32},
        "model": {"tiny_hidden": 32, "tiny_layers": 1},
        "train": {"epochs": 2, "final_epochs": 1, "batch_size": 4},
        "search": {"searcher": "icrl", "num_trials": 4, "max_classes": 5},
        "storage": {"root": str(root / "run"), "experiment_name": "rep"},
    }))


def _trial(iteration, classes, acc, labels, *, error=None, source="llm", confusion=None):
    """A results.json row as a2o.service writes it: the trial's record plus the service's columns.
    (tests/test_report_parts.py reads rows of the older, unversioned shape.)"""
    from a2o.detect.classes import ClassSet
    from a2o.records import TrialRecord, TrialRow

    classwise = {label: (acc + 0.1 * i) % 1.0 for i, label in enumerate(labels)} if acc is not None else {}
    last_result = {"val_accuracy": acc, "classwise_accuracy": classwise, "confusion": confusion,
                   "epoch": 2 if acc is not None else 0, "time_total_s": 4.2}
    record = TrialRecord.from_result(ClassSet.parse(classes), last_result, error=error is not None, source=source,
                                     trial_id=f"t{iteration:04d}")
    return TrialRow(iteration, record, (acc, acc) if acc is not None else (), maps_computed=3, error=error).to_dict()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run folder like `a2o search` leaves it: frame store, maps of the best set, results.json."""
    from a2o.data.framestore import FrameStore, prepare_frame_store
    from a2o.data.manifest import load_manifest
    from a2o.data.synthetic import generate_synth
    from a2o.detect.base import ConfigDetectorFactory
    from a2o.detect.cache import map_cache_for
    from a2o.train.trial import frames_root, label_names

    root = tmp_path_factory.mktemp("report")
    config = _config(root)
    cfg = config_from_dict(config)
    generate_synth(cfg.data.root, "tiny", seed=0)
    manifest = load_manifest(cfg.data)
    prepare_frame_store(manifest, cfg.data, frames_root(cfg), use_ray=False)
    store = FrameStore(frames_root(cfg))
    val_ids = [r["video_id"] for r in store.manifest().to_pylist() if r["split"] == "val"]
    map_cache_for(cfg.storage, cfg.data, cfg.detect).ensure_maps(BEST, store, ConfigDetectorFactory(cfg.detect),
                                                                  video_ids=val_ids)
    labels = label_names(manifest)
    rows = store.manifest().to_pylist()
    label_ids = {r["label"]: r["label_id"] for r in manifest.to_pylist()}
    search_val = _confusion([label_ids[r["label"]] for r in rows if r["split"] == "val"], len(labels), wrong=1)
    final_val = _confusion([label_ids[r["label"]] for r in rows if r["split"] == "val"], len(labels), wrong=2)
    test = _confusion([label_ids[r["label"]] for r in manifest.to_pylist() if r["split"] == "test"], len(labels), wrong=1)
    trials = [
        _trial(1, ["hand", "box"], 0.25, labels, source="initial"),
        _trial(2, ["hand", "box", "cup"], 0.5, labels),
        _trial(3, [], None, labels, error="TrainingError: <boom> & co"),
        # as service.trial_rows writes it: the last epoch's val matrix
        _trial(4, BEST, _accuracy(search_val), labels, confusion=search_val),
    ]
    results = {
        "config": config, "searcher": "icrl", "scheduler": "fifo", "trials": trials, "best_trial": trials[3],
        "searcher_stats": {"llm_calls": 3, "prompt_tokens": 900, "completion_tokens": 60, "llm_time_s": 2.5},
        "search_seconds": 20.0,
        "final": {"classes": BEST, "labels": labels, "val_accuracy": _accuracy(final_val), "final_epochs": 1,
                  "test": {"accuracy": _accuracy(test), "classwise_accuracy": {label: 0.5 for label in labels},
                           "confusion_matrix": test, "num_samples": sum(map(sum, test))},
                  "detector_fingerprint": "annotation"},
    }
    (root / "run" / "results.json").write_text(json.dumps(results))
    # The final model's val confusion matrix, where a real run keeps it: best/'s recognizer.json.
    (root / "run" / "best" / "model").mkdir(parents=True)
    (root / "run" / "best" / "model" / "recognizer.json").write_text(json.dumps(
        {"labels": labels, "classes": BEST, "extra": {"confusion": final_val, "metrics": {}}}))
    return root


def _confusion(true_ids, num_labels, *, wrong):
    """Counts with every clip right except the first ``wrong`` ones (predicted as the next label)."""
    matrix = [[0] * num_labels for _ in range(num_labels)]
    for position, true in enumerate(true_ids):
        matrix[true][(true + 1) % num_labels if position < wrong else true] += 1
    return matrix


def _accuracy(matrix):
    return sum(matrix[i][i] for i in range(len(matrix))) / sum(map(sum, matrix))


def test_report_of_one_run(tiny_run, capsys):
    from a2o.cli import main

    assert main(["report", str(tiny_run / "run")]) == 0
    out = capsys.readouterr().out
    assert "index.html" in out and "6 PNG" in out
    report_dir = tiny_run / "run" / "report"
    page = (report_dir / "index.html").read_text()

    for iteration in (1, 2, 3, 4):  # every trial is in the table
        assert f"t{iteration:04d}" in page and f'id="run-0-trial-{iteration}"' in page
    assert page.count("<tr id=") + page.count("<tr class=best id=") == 4
    # A run's text is escaped, never markup (class texts with markup: tests/test_report_parts.py).
    assert "&lt;boom&gt; &amp; co" in page and "<boom>" not in page
    # Diffs to the previous iteration: trial 3 drops box, trial 4 adds ball.
    assert '<span class="added">+ball</span>' in page and '<span class="removed">-box</span>' in page
    # The PNGs exist, are non-empty PNGs, and every <img> points at one of them.
    names = {"accuracy.png", "classwise_0.png", "overlay_0.png", "confusion_0_search-val.png",
             "confusion_0_final-val.png", "confusion_0_final-test.png"}
    assert names <= set(os.listdir(report_dir))
    for name in names:
        data = (report_dir / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    assert set(re.findall(r'<img src="([^"]+)"', page)) == names
    # The only note is the zoomed accuracy axis: the overlay had every map it needed.
    assert page.count('class="note"') == 1 and 'class="note" id="accuracy-zoom"' in page


def test_report_explains_itself(tiny_run, tmp_path):
    """Issue 17: zoomed accuracy axis (and said so), confusion matrices, overlay legend, how-to-read box."""
    from a2o.report import build_report
    from a2o.report.overlay import load_overlay

    run = tiny_run / "run"
    results = json.loads((run / "results.json").read_text())
    report = build_report(str(run), out_dir=str(tmp_path / "rep"))
    page = open(report.html_path).read()

    # Accuracy axis: trials at 0.25 … 0.8 and the final lines lie inside a zoomed axis, and it says so.
    zoom = re.search(r'id="accuracy-zoom">y axis zoomed to (\d\.\d\d)–(\d\.\d\d), not 0–1', page)
    assert zoom, "no zoom note"
    low, high = float(zoom.group(1)), float(zoom.group(2))
    values = [t["val_accuracy"] for t in results["trials"] if t["val_accuracy"] is not None]
    values += [results["final"]["val_accuracy"], results["final"]["test"]["accuracy"]]
    assert 0.05 < low <= min(values) and max(values) <= high < 0.97

    # Confusion matrices: best trial (val), final model (val, test); counts = clips evaluated.
    figures = dict(re.findall(r'<figure class="confusion" data-kind="([a-z-]+)" data-clips="(\d+)">', page))
    val_clips = len(_val_rows(tiny_run))
    assert figures == {"search-val": str(val_clips), "final-val": str(val_clips),
                       "final-test": str(results["final"]["test"]["num_samples"])}
    for kind in figures:
        assert os.path.getsize(tmp_path / "rep" / f"confusion_0_{kind}.png") > 5000
    assert "<code>results.json: best_trial.confusion</code>" in page

    # Overlay legend: exactly the classes whose map reaches 0.5 in the shown frames; regions apart.
    overlay = load_overlay(results, str(run), BEST)
    drawn = [text for index, text in enumerate(overlay.classes)
             if any((maps[:, index] >= 128).any() for _, _, _, maps in overlay.videos)]
    objects = re.search(r'<span class="legend-objects">objects: ([^<]*)</span>', page).group(1)
    regions = re.search(r'<span class="legend-regions">regions: ([^<]*)</span>', page).group(1)
    absent = re.search(r'<span class="legend-absent">[^:]*: ([^<]*)</span>', page).group(1)
    assert "zebra" not in drawn and "zebra" in absent.split(", ")
    assert set(objects.split(", ")) == {c for c in drawn if c not in ("floor", "table")}
    assert set(regions.split(", ")) == {c for c in drawn if c in ("floor", "table")} != set()
    assert set(objects.split(", ")) | set(regions.split(", ")) | set(absent.split(", ")) == set(BEST)

    # The how-to-read box: what each number is, and this run's numbers in order.
    box = re.search(r'<div class="howto" id="how-to-read">(.*?)</div>', page, re.S).group(1)
    for phrase in ("search val", "optimistic", "from scratch", "train.final_epochs = 1", "held-out <b>test</b>",
                   f"{val_clips} val clips"):
        assert phrase in box, phrase
    search, final = results["best_trial"]["val_accuracy"], results["final"]["val_accuracy"]
    assert f"search val {search:.4f} (iteration 4 of 4) → final val {final:.4f} ({final - search:+.4f}" in box
    assert page.index('id="how-to-read"') < page.index("<h2>Overview</h2>")


def _val_rows(tiny_run):
    from a2o.data.framestore import FrameStore
    from a2o.train.trial import frames_root

    store = FrameStore(frames_root(config_from_dict(_config(tiny_run))))
    return [r for r in store.manifest().to_pylist() if r["split"] == "val"]


def test_parent_folder_of_runs_and_missing_maps(tiny_run, tmp_path):
    from a2o.report import build_report

    parent = tmp_path / "bench"
    for seed, acc in ((0, 0.5), (1, 0.75)):
        results = json.loads((tiny_run / "run" / "results.json").read_text())
        for trial in results["trials"]:
            if trial["val_accuracy"] is not None:
                trial["val_accuracy"] = acc
        results["best_trial"]["classes"] = ["lamp"]  # no cached maps for it
        results["final"] = None
        results["searcher"] = "random"
        (parent / f"random_s{seed}").mkdir(parents=True)
        (parent / f"random_s{seed}" / "results.json").write_text(json.dumps(results))
    shutil.copytree(tiny_run / "run", parent / "icrl_s0", ignore=shutil.ignore_patterns("report"))

    report = build_report(str(parent))
    page = open(report.html_path).read()
    assert report.runs == 3
    assert "random_s0" in page and "random_s1" in page and "icrl_s0" in page
    assert "0.625 ± 0.177 (n=2)" in page  # mean ± std of random's two seeds
    # random (2 seeds): mean with a 95% CI band; icrl (1 run): dots and best-so-far line.
    caption = re.search(r'<figure class="accuracy">.*?<figcaption>(.*?)</figcaption>', page, re.S).group(1)
    assert "95% confidence interval of that mean" in caption and "for a searcher with one run" in caption
    assert "min–max" not in caption
    assert any("'lamp'" in note for note in report.notes)  # overlay skipped, and said why
    assert "map cache has no entry for &#x27;lamp&#x27;" in page
    assert all(os.path.getsize(p) > 0 for p in report.pngs)


def test_no_results_is_a_clear_error(tmp_path):
    from a2o.errors import DataError
    from a2o.report import build_report

    with pytest.raises(DataError, match="no results.json"):
        build_report(str(tmp_path))


CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium: apt-get install -y chromium")
def test_report_renders_in_headless_chromium(tiny_run, tmp_path):
    from a2o.report import build_report

    report = build_report(str(tiny_run / "run"))
    screenshot = tmp_path / "report.png"
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={screenshot}", "--window-size=1280,2000",
        "--enable-logging=stderr", "--v=0", f"file://{report.html_path}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert screenshot.exists() and screenshot.stat().st_size > 20_000
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console
    # Keep a copy next to the report for a human to look at.
    shutil.copy(screenshot, os.path.join(os.path.dirname(report.html_path), "screenshot.png"))
