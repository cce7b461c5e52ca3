"""The report's plots as PNG files (matplotlib's Agg canvas; no pyplot, no global backend change).

Every function takes plain data and an output path, writes one PNG and returns the path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from a2o.errors import require

__all__ = ["accuracy_over_iterations", "classwise_heatmap", "overlay_grid", "overlay_frames", "class_colors"]


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


def _nan(values: Sequence[float | None]) -> np.ndarray:
    return np.asarray([math.nan if v is None else float(v) for v in values], dtype=np.float64)


def accuracy_over_iterations(series: dict[str, list[list[float | None]]], path: str, *, title: str) -> str:
    """Val accuracy per iteration, one colour per group.

    ``series`` maps a group label to its runs' per-iteration accuracies (None for a failed trial).
    A group with one run shows each trial (dots) and the best so far (line); a group of several
    runs (seeds) shows the mean best-so-far with a min-max band.
    """
    figure = _figure(8.0, 4.5)
    axes = figure.add_subplot(1, 1, 1)
    colors = class_colors(max(1, len(series)))
    for color, (label, runs) in zip(colors, series.items(), strict=False):
        if not runs:
            continue
        length = max(len(r) for r in runs)
        iterations = np.arange(1, length + 1)
        best = np.full((len(runs), length), np.nan)
        for row, values in enumerate(runs):
            running = np.fmax.accumulate(np.nan_to_num(_nan(values), nan=-np.inf)) if values else np.array([])
            running[np.isneginf(running)] = np.nan
            best[row, : len(values)] = running
        if len(runs) == 1:
            axes.plot(iterations[: len(runs[0])], _nan(runs[0]), "o", color=color, alpha=0.55)
            axes.plot(iterations, best[0], "-", color=color, label=_plain(f"{label} (best so far)"))
        else:
            with np.errstate(all="ignore"):
                valid = ~np.all(np.isnan(best), axis=0)
                mean = np.where(valid, np.nanmean(np.where(np.isnan(best), np.nan, best), axis=0), np.nan)
                low = np.where(valid, np.nanmin(best, axis=0), np.nan)
                high = np.where(valid, np.nanmax(best, axis=0), np.nan)
            axes.plot(iterations, mean, "-o", color=color, markersize=3, label=_plain(f"{label} (n={len(runs)})"))
            axes.fill_between(iterations, low, high, color=color, alpha=0.15)
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("iteration (trial)")
    axes.set_ylabel("val accuracy" + (" (best so far)" if any(len(r) > 1 for r in series.values()) else ""))
    axes.set_ylim(-0.02, 1.02)
    axes.grid(alpha=0.3)
    axes.set_title(_plain(title))
    if series:
        axes.legend(fontsize=7, loc="lower right", ncol=2 if len(series) > 6 else 1)
    return _save(figure, path)


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


def overlay_frames(frames: np.ndarray, maps: np.ndarray, colors: np.ndarray, alpha: float = 0.65) -> np.ndarray:
    """Tint frames with likelihood maps: frames (N, H, W, 3) uint8, maps (N, C, H, W) uint8 -> (N, H, W, 3) float.

    The frame is shown in grey so that colour means "map": each class adds its colour with
    opacity ``alpha * likelihood``; where maps overlap, later classes are drawn over earlier ones.
    """
    grey = frames.astype(np.float64).mean(axis=-1, keepdims=True) / 255.0  # (N, H, W, 1)
    out = np.repeat(0.25 + 0.6 * grey, 3, axis=-1)  # (N, H, W, 3), lifted so dark frames stay visible
    for index in range(maps.shape[1]):
        weight = (alpha * maps[:, index].astype(np.float64) / 255.0)[..., None]  # (N, H, W, 1)
        out = out * (1.0 - weight) + colors[index][None, None, None, :] * weight
    return np.clip(out, 0.0, 1.0)


def overlay_grid(
    videos: Sequence[tuple[str, str, np.ndarray, np.ndarray]],
    classes: Sequence[str],
    path: str,
    *,
    title: str,
) -> str:
    """A grid: one row per video (label, video id), columns = frames, maps tinted on top.

    ``videos``: (video_id, label, frames (N, H, W, 3) uint8, maps (N, C, H, W) uint8 on the same grid).
    """
    from matplotlib.patches import Patch

    columns = max(frames.shape[0] for _, _, frames, _ in videos)
    figure = _figure(1.6 * columns + 0.6, 1.7 * len(videos) + 0.9)
    colors = class_colors(len(classes))
    for row, (video_id, label, frames, maps) in enumerate(videos):
        tinted = overlay_frames(frames, maps, colors)
        for column in range(columns):
            axes = figure.add_subplot(len(videos), columns, row * columns + column + 1)
            axes.set_xticks([])
            axes.set_yticks([])
            if column < tinted.shape[0]:
                axes.imshow(tinted[column], interpolation="nearest")
            if column == 0:
                axes.set_ylabel(_plain(f"{label}\n{video_id}"), fontsize=6)
    handles = [Patch(color=colors[i], label=_plain(text)) for i, text in enumerate(classes)]
    figure.legend(handles=handles, loc="lower center", ncol=min(6, max(1, len(handles))), fontsize=7, frameon=False)
    figure.suptitle(_plain(title), fontsize=9)
    figure.subplots_adjust(bottom=0.12, wspace=0.04, hspace=0.12)
    return _save(figure, path)
