"""The report's plots as PNG files (matplotlib's Agg canvas; no pyplot, no global backend change).

Every ``*_figure`` function takes plain data and returns a matplotlib Figure (tests read its axes);
the matching writer saves it as one PNG and returns the path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from a2o.errors import require
from a2o.report.runs import MeanBand, best_so_far, mean_band

__all__ = [
    "accuracy_over_iterations",
    "accuracy_figure",
    "accuracy_limits",
    "accuracy_axis",
    "zoom_note",
    "classwise_heatmap",
    "confusion_heatmap",
    "confusion_figure",
    "overlay_grid",
    "overlay_figure",
    "present_classes",
    "OverlayLegend",
    "class_colors",
    "distinct_colors",
]


def _figure(width: float, height: float):
    require("matplotlib", "report")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: str) -> str:
    figure.savefig(path, format="png", bbox_inches="tight")
    return path


def _plain(text: object) -> str:
    """Text shown literally: a '$' would otherwise start matplotlib mathtext."""
    return str(text).replace("$", r"\$")


def class_colors(count: int) -> np.ndarray:
    """(count, 3) float RGB in [0, 1]: tab10, then tab20 beyond ten classes."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if count <= 10 else "tab20"]
    return np.asarray([cmap(i % cmap.N)[:3] for i in range(count)], dtype=np.float64)


def distinct_colors(count: int) -> np.ndarray:
    """(count, 3) float RGB for outlines on photos: tab10 without its grey, then tab20 without greys."""
    import matplotlib

    if count <= 9:
        cmap, skip = matplotlib.colormaps["tab10"], {7}
    else:
        cmap, skip = matplotlib.colormaps["tab20"], {14, 15}
    palette = [cmap(i)[:3] for i in range(cmap.N) if i not in skip]
    return np.asarray([palette[i % len(palette)] for i in range(count)], dtype=np.float64)


def _nan(values: Sequence[float | None]) -> np.ndarray:
    return np.asarray([math.nan if v is None else float(v) for v in values], dtype=np.float64)


FULL_SCALE = (-0.02, 1.02)
"""The accuracy axis when it is not zoomed: 0–1 with room for markers at the ends."""


def accuracy_limits(
    values: Sequence[float | None], *, margin: float = 0.15, min_margin: float = 0.02, min_span: float = 0.06
) -> tuple[float, float, bool]:
    """(low, high, zoomed) of an accuracy axis that fits ``values`` (None/NaN ignored).

    The axis spans the data plus ``margin`` × its span on each side (at least ``min_margin``),
    never less than ``min_span`` in all and never beyond 0–1 (plus a hair for the markers). When
    that would cover most of 0–1 anyway (≥ 0.75), the plain 0–1 axis is used and ``zoomed`` is False.
    """
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return FULL_SCALE[0], FULL_SCALE[1], False
    low, high = min(finite), max(finite)
    pad = max(min_margin, margin * (high - low))
    low, high = low - pad, high + pad
    if high - low < min_span:
        middle = (low + high) / 2.0
        low, high = middle - min_span / 2.0, middle + min_span / 2.0
    low, high = max(low, -0.01), min(high, 1.01)
    if high - low >= 0.75:
        return FULL_SCALE[0], FULL_SCALE[1], False
    return low, high, True


def accuracy_axis(
    series: dict[str, list[list[float | None]]], references: dict[str, float | None] | None = None
) -> tuple[float, float, bool]:
    """(low, high, zoomed) of the y axis :func:`accuracy_figure` draws for these data."""
    values: list[float | None] = []
    for runs in series.values():
        if len(runs) == 1:
            values += list(runs[0])  # every trial's dot
        elif runs:  # the mean best-so-far curve and its band as drawn
            band = _group_band(runs)
            values += list(band.mean)
            for bound in _clipped(band):
                values += bound.tolist()
    values += [v for v in (references or {}).values() if v is not None]
    return accuracy_limits(values)


def _group_band(runs: list[list[float | None]]) -> MeanBand:
    """The mean best-so-far curve of a group's runs with its 95 % t-interval (:func:`mean_band`)."""
    return mean_band([best_so_far(run) for run in runs], confidence=0.95)


def _clipped(band: MeanBand) -> tuple[np.ndarray, np.ndarray]:
    """The band's bounds as drawn: clipped to 0–1 (an accuracy cannot leave it), NaN where n < 2."""
    low, high = np.asarray(band.low, dtype=np.float64), np.asarray(band.high, dtype=np.float64)
    return np.clip(low, 0.0, 1.0), np.clip(high, 0.0, 1.0)


def zoom_note(low: float, high: float) -> str:
    """The words that say an accuracy axis is zoomed (on the figure and in its caption)."""
    return f"y axis zoomed to {max(low, 0.0):.2f}–{min(high, 1.0):.2f}, not 0–1: small differences look large"


def accuracy_figure(
    series: dict[str, list[list[float | None]]],
    *,
    title: str,
    references: dict[str, float | None] | None = None,
):
    """The figure of :func:`accuracy_over_iterations` (returned, not saved: tests read its axes)."""
    figure = _figure(8.0, 4.5)
    axes = figure.add_subplot(1, 1, 1)
    colors = class_colors(max(1, len(series)))
    for color, (label, runs) in zip(colors, series.items(), strict=False):
        if not runs:
            continue
        if len(runs) == 1:
            iterations = np.arange(1, len(runs[0]) + 1)
            axes.plot(iterations, _nan(runs[0]), "o", color=color, alpha=0.55)
            axes.plot(iterations, _nan(best_so_far(runs[0])), "-", color=color, label=_plain(f"{label} (best so far)"))
        else:
            band = _group_band(runs)
            iterations = np.arange(1, len(band.mean) + 1)  # the group's own length: its longest run
            low, high = _clipped(band)
            axes.plot(iterations, np.asarray(band.mean), "-o", color=color, markersize=3,
                      label=_plain(f"{label} (mean of n={len(runs)}, 95% CI)"))
            axes.fill_between(iterations, low, high, color=color, alpha=0.15, linewidth=0)
    styles = ["--", ":", "-."]
    for number, (label, value) in enumerate((references or {}).items()):
        if value is None or not math.isfinite(float(value)):
            continue
        axes.axhline(float(value), color="0.25", linestyle=styles[number % len(styles)], linewidth=1.1,
                     label=_plain(f"{label}: {float(value):.3f}"))
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("iteration (trial)")
    axes.set_ylabel("val accuracy" + (" (best so far)" if any(len(r) > 1 for r in series.values()) else ""))
    low, high, zoomed = accuracy_axis(series, references)
    axes.set_ylim(low, high)
    if zoomed:
        axes.text(0.01, 0.98, zoom_note(low, high), transform=axes.transAxes, ha="left", va="top", fontsize=8,
                  bbox={"facecolor": "#fff6dd", "edgecolor": "#e0b000", "boxstyle": "round,pad=0.3"})
    axes.grid(alpha=0.3)
    axes.set_title(_plain(title))
    if series or references:
        axes.legend(fontsize=7, loc="lower right", ncol=2 if len(series) > 6 else 1)
    return figure


def accuracy_over_iterations(
    series: dict[str, list[list[float | None]]],
    path: str,
    *,
    title: str,
    references: dict[str, float | None] | None = None,
) -> str:
    """Val accuracy per iteration, one colour per group; the y axis fits the data (:func:`accuracy_limits`).

    ``series`` maps a group label to its runs' per-iteration accuracies (None for a failed trial).
    A group with one run shows each trial (dots) and the best so far (line); a group of several
    runs (seeds) shows the mean best-so-far with the 95 % t confidence interval of that mean as a
    band (:func:`a2o.report.runs.mean_band`: over the runs that reached each trial; no band where
    only one did; clipped to 0–1). Each group is drawn to its own length (its longest run).
    ``references`` are drawn as horizontal lines (e.g. the retrained model's final val and test
    accuracy). A zoomed axis says so on the figure.
    """
    return _save(accuracy_figure(series, title=title, references=references), path)


def classwise_heatmap(matrix: np.ndarray, labels: Sequence[str], iterations: Sequence[int], path: str, *, title: str) -> str:
    """Class-wise val accuracy: ``matrix`` (labels, iterations), NaN where a trial has no value."""
    height = 1.2 + 0.32 * len(labels)
    width = 2.5 + 0.42 * max(1, len(iterations))
    figure = _figure(min(width, 18.0), min(height, 12.0))
    axes = figure.add_subplot(1, 1, 1)
    masked = np.ma.masked_invalid(np.asarray(matrix, dtype=np.float64))
    image = axes.imshow(masked, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
    axes.set_yticks(range(len(labels)), [_plain(label) for label in labels], fontsize=7)
    axes.set_xticks(range(len(iterations)), [str(i) for i in iterations], fontsize=7)
    axes.set_xlabel("iteration")
    axes.set_title(_plain(title), fontsize=9)
    figure.colorbar(image, ax=axes, fraction=0.04, pad=0.02, label="accuracy")
    return _save(figure, path)


MAX_ANNOTATED_LABELS = 40
"""Confusion matrices with more actions than this show colour only (counts would not fit)."""


def confusion_figure(matrix: Sequence[Sequence[int]] | np.ndarray, labels: Sequence[str], *, title: str):
    """A (K, K) confusion matrix (rows = true action, cols = predicted): colour = row-normalised rate, text = count.

    Rows without clips stay blank. Returns the figure; every non-zero count is one text of its
    axes (zeros are left out to keep the picture readable), so the texts sum to the clips counted.
    """
    counts = np.asarray(matrix, dtype=np.int64)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] != len(labels):
        raise ValueError(f"confusion matrix of shape {counts.shape} for {len(labels)} labels")
    size = len(labels)
    support = counts.sum(axis=1, keepdims=True)
    with np.errstate(all="ignore"):
        rates = np.where(support > 0, counts / np.maximum(support, 1), np.nan)
    side = min(16.0, 2.8 + 0.36 * size)
    figure = _figure(side + 1.4, side)
    axes = figure.add_subplot(1, 1, 1)
    image = axes.imshow(np.ma.masked_invalid(rates), cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    if size <= MAX_ANNOTATED_LABELS:
        fontsize = 8 if size <= 15 else 6 if size <= 25 else 5
        for row in range(size):
            for column in range(size):
                if counts[row, column]:
                    dark = rates[row, column] > 0.55
                    axes.text(column, row, str(int(counts[row, column])), ha="center", va="center",
                              fontsize=fontsize, color="white" if dark else "black",
                              fontweight="bold" if row == column else "normal")
    names = [_plain(label) for label in labels]
    tick = 8 if size <= 15 else 6
    axes.set_xticks(range(size), names, rotation=55, ha="right", rotation_mode="anchor", fontsize=tick)
    axes.set_yticks(range(size), names, fontsize=tick)
    axes.set_xlabel("predicted action")
    axes.set_ylabel("true action")
    total = int(counts.sum())
    accuracy = float(np.trace(counts) / total) if total else float("nan")
    axes.set_title(_plain(f"{title}\n{total} clips, accuracy {accuracy:.3f}"), fontsize=9)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.03, label="share of the true action's clips (row-normalised)")
    return figure


def confusion_heatmap(matrix: Sequence[Sequence[int]] | np.ndarray, labels: Sequence[str], path: str, *, title: str) -> str:
    """Write :func:`confusion_figure` as a PNG."""
    return _save(confusion_figure(matrix, labels, title=title), path)


MAP_LEVEL = 0.5
"""A class is drawn (and listed in the legend) where its likelihood map reaches this level."""


@dataclass
class OverlayLegend:
    """Which classes the overlay figure draws, i.e. what its legends list."""

    objects: list[str] = field(default_factory=list)
    """Object classes outlined on the frames (their map reaches :data:`MAP_LEVEL` in a shown frame)."""
    regions: list[str] = field(default_factory=list)
    """Region classes drawn in the separate region panel."""
    absent: list[str] = field(default_factory=list)
    """Classes of the set whose map stays below :data:`MAP_LEVEL` in every shown frame (not drawn)."""


def present_classes(
    videos: Sequence[tuple[str, str, np.ndarray, np.ndarray]], count: int, *, level: float = MAP_LEVEL
) -> list[bool]:
    """Per class index: does its map reach ``level`` somewhere in the shown frames of ``videos``?"""
    threshold = level * 255.0
    present = [False] * count
    for _, _, _, maps in videos:  # maps (N, C, H, W) uint8
        for index in range(count):
            present[index] = present[index] or bool((maps[:, index] >= threshold).any())
    return present


def _draw_maps(
    axes, maps: np.ndarray, indices: Sequence[int], colors: np.ndarray, *, fill_alpha: float, line_width: float = 1.3
) -> None:
    """Outline (and lightly fill) each class's area at :data:`MAP_LEVEL`; maps (C, H, W) uint8."""
    for index in indices:
        plane = maps[index].astype(np.float64) / 255.0
        if plane.max() < MAP_LEVEL:
            continue
        if plane.min() >= MAP_LEVEL:  # the class covers the whole frame: no edge to outline, tint only
            axes.imshow(np.broadcast_to(colors[index], plane.shape + (3,)), alpha=max(fill_alpha, 0.15),
                        interpolation="nearest")
            continue
        if fill_alpha > 0:
            axes.contourf(plane, levels=[MAP_LEVEL, 1.01], colors=[tuple(colors[index])], alpha=fill_alpha)
        axes.contour(plane, levels=[MAP_LEVEL], colors=[tuple(colors[index])], linewidths=line_width)


def overlay_figure(
    videos: Sequence[tuple[str, str, np.ndarray, np.ndarray]],
    classes: Sequence[str],
    *,
    title: str,
    regions: Sequence[str] = (),
):
    """Frames in their own colours with the maps drawn so the RGB stays visible; returns (figure, legend).

    One row per video (label, video id), one column per frame: object classes are outlined where
    their map reaches :data:`MAP_LEVEL`, with a light fill. Classes named in ``regions`` (scene
    areas such as floor or table, which would cover the frame) get a separate last column: the
    middle frame with the region areas tinted and outlined. Each legend lists only classes drawn
    somewhere in the figure; :class:`OverlayLegend` says which.

    ``videos``: (video_id, label, frames (N, H, W, 3) uint8, maps (N, C, H, W) uint8 on the same grid).
    """
    from matplotlib.patches import Patch

    present = present_classes(videos, len(classes))
    region_set = set(regions)
    objects = [i for i, text in enumerate(classes) if text not in region_set and present[i]]
    region_indices = [i for i, text in enumerate(classes) if text in region_set and present[i]]
    # Colours go to the drawn classes only, so they stay few and distinct (no grey on grey frames).
    colors = np.zeros((len(classes), 3))
    drawn = objects + region_indices
    if drawn:
        colors[drawn] = distinct_colors(len(drawn))
    legend = OverlayLegend(
        objects=[classes[i] for i in objects],
        regions=[classes[i] for i in region_indices],
        absent=[text for i, text in enumerate(classes) if not present[i]],
    )
    frames_per_row = max(frames.shape[0] for _, _, frames, _ in videos)
    columns = frames_per_row + (1 if region_indices else 0)
    rows = len(videos)
    figure = _figure(1.7 * columns + 0.7, 1.5 * rows + 1.3)
    for row, (video_id, label, frames, maps) in enumerate(videos):
        for column in range(columns):
            axes = figure.add_subplot(rows, columns, row * columns + column + 1)
            axes.set_xticks([])
            axes.set_yticks([])
            if column < frames.shape[0]:
                axes.imshow(frames[column], interpolation="nearest")
                _draw_maps(axes, maps[column], objects, colors, fill_alpha=0.22)
                if row == 0:
                    axes.set_title(f"frame {column + 1}: objects", fontsize=7)
            elif column == frames_per_row:  # the region panel
                middle = frames.shape[0] // 2
                axes.imshow(frames[middle], interpolation="nearest")
                _draw_maps(axes, maps[middle], region_indices, colors, fill_alpha=0.35, line_width=0.8)
                for side in axes.spines.values():
                    side.set_linestyle("--")
                if row == 0:
                    axes.set_title(f"frame {middle + 1}: regions", fontsize=7)
            axes.set_xlim(-0.5, frames.shape[2] - 0.5)
            axes.set_ylim(frames.shape[1] - 0.5, -0.5)
            if column == 0:
                axes.set_ylabel(_plain(f"{label}\n{video_id}"), fontsize=6)
    height = 1.5 * rows + 1.3
    if objects:
        handles = [Patch(facecolor=(*colors[i], 0.22), edgecolor=colors[i], linewidth=1.3, label=_plain(classes[i]))
                   for i in objects]
        figure.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.02, 0.0), fontsize=7, frameon=False,
                      ncol=min(6, len(handles)), title="objects (outlined on every frame)", title_fontsize=7)
    if region_indices:
        handles = [Patch(facecolor=(*colors[i], 0.35), edgecolor=colors[i], linewidth=0.8, label=_plain(classes[i]))
                   for i in region_indices]
        figure.legend(handles=handles, loc="lower right", bbox_to_anchor=(0.98, 0.0), fontsize=7, frameon=False,
                      ncol=min(3, len(handles)), title="regions (last column only)", title_fontsize=7)
    figure.suptitle(_plain(title), fontsize=9, y=1.0 - 0.12 / height)
    figure.subplots_adjust(top=1.0 - 0.55 / height, bottom=0.75 / height, wspace=0.05, hspace=0.12)
    return figure, legend


def overlay_grid(
    videos: Sequence[tuple[str, str, np.ndarray, np.ndarray]],
    classes: Sequence[str],
    path: str,
    *,
    title: str,
    regions: Sequence[str] = (),
) -> tuple[str, OverlayLegend]:
    """Write :func:`overlay_figure` as a PNG; returns (path, what its legends list)."""
    figure, legend = overlay_figure(videos, classes, title=title, regions=regions)
    return _save(figure, path), legend


def scatter_plot(points: Sequence[tuple[float, float]], path: str, *, xlabel: str, ylabel: str, title: str) -> str:
    """A plain scatter of (x, y) points, written to ``path`` (PNG)."""
    figure = _figure(5.0, 4.2)
    axis = figure.add_subplot(1, 1, 1)
    axis.scatter([x for x, _ in points], [y for _, y in points], s=14, alpha=0.7)
    axis.set_xlabel(_plain(xlabel))
    axis.set_ylabel(_plain(ylabel))
    axis.set_title(_plain(title), fontsize=9)
    axis.grid(alpha=0.3)
    return _save(figure, path)
