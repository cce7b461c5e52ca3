"""A seconds-cheap proxy score for an object-class set: a small classifier on its maps alone.

A full trial fine-tunes V-JEPA2 on RGB + maps. Once a class's maps are in the cache, how much its
maps *alone* say about the action can be judged in well under a second: this module pools each
(clip, class) map into a few numbers (how much of the class there is, where it is, how it moves),
concatenates them over the set's classes, fits a multinomial logistic regression on the train split
and scores it on val. No RGB, no V-JEPA2, no test split.

- **Features per (clip, class)**, from the ``(T, res, res)`` uint8 map: mean and peak likelihood,
  the share of the frame above one half, the likelihood-weighted centroid (x, y) and spread, the
  mean frame-to-frame centroid step (|dx|, |dy|) and mass change, and the time-averaged map pooled
  to a ``grid x grid`` layout. They depend on the (video, class) pair only, so they are computed
  once per pair and memoised: scoring a set of known classes reads nothing.
- **Classifier**: features standardised on train, multinomial logistic regression with an L2
  penalty, full-batch L-BFGS from zero weights, so the score is a deterministic function of the
  set, the splits and ``seed`` (which only orders the features' float sums: there is no sampling).
- **Score**: the mean probability the classifier gives each val clip's true action
  (``val_true_prob``): smoother than val accuracy, which moves in steps of one clip. The val
  accuracy is reported beside it.

The proxy reads maps through ``maps_for(class_set)``, which must return a reader with
``read(video_id) -> (T, C, res, res)`` over the train and val clips (the product passes
:func:`a2o.train.trial.ensure_trial_maps`, which computes the missing pairs with the detector and
reuses the rest, so a class is detected once whether a proxy or a trial asks first).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from a2o.detect.classes import ClassSet

__all__ = ["ConfigProxy", "MapProxy", "ProxyScore", "map_features", "FEATURES_PER_CLASS"]

log = logging.getLogger(__name__)

GRID = 3
"""Side of the pooled time-averaged layout (3 x 3 cells)."""
FEATURES_PER_CLASS = 10 + GRID * GRID


@dataclass(frozen=True)
class ProxyScore:
    """One set's proxy figures: ``score`` (val true-class probability) ranks the candidates."""

    classes: tuple[str, ...]
    score: float
    val_accuracy: float
    seconds: float
    """Wall time of this score, the maps' detection and reading included."""
    maps_computed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"classes": list(self.classes), "score": round(self.score, 6),
                "val_accuracy": round(self.val_accuracy, 6), "seconds": round(self.seconds, 3),
                "maps_computed": self.maps_computed}


def map_features(planes: np.ndarray) -> np.ndarray:
    """``(T, res, res)`` uint8 map of one class in one clip -> ``FEATURES_PER_CLASS`` float32."""
    m = np.asarray(planes, dtype=np.float32) / 255.0
    if m.ndim != 3:
        raise ValueError(f"a class map is (T, res, res); got shape {m.shape}")
    frames, height, width = m.shape
    mass = m.reshape(frames, -1).mean(axis=1)  # (T,)
    ys = (np.arange(height, dtype=np.float32) + 0.5) / height
    xs = (np.arange(width, dtype=np.float32) + 0.5) / width
    weight = m.sum(axis=(1, 2)) + 1e-6
    cy = (m.sum(axis=2) * ys).sum(axis=1) / weight
    cx = (m.sum(axis=1) * xs).sum(axis=1) / weight
    spread = np.sqrt(((m.sum(axis=2) * (ys - cy[:, None]) ** 2).sum(axis=1)
                      + (m.sum(axis=1) * (xs - cx[:, None]) ** 2).sum(axis=1)) / weight)
    present = mass > 1e-3
    # A frame without the class has no centroid: steps count only between frames that show it.
    both = present[1:] & present[:-1]
    step_x = float(np.abs(np.diff(cx))[both].mean()) if both.any() else 0.0
    step_y = float(np.abs(np.diff(cy))[both].mean()) if both.any() else 0.0
    shown = present.any()
    layout = m.mean(axis=0)
    gh, gw = max(1, height // GRID), max(1, width // GRID)
    pooled = layout[: gh * GRID, : gw * GRID].reshape(GRID, gh, GRID, gw).mean(axis=(1, 3)).ravel()
    out = np.concatenate([
        np.array([
            mass.mean(), m.max(), (m > 0.5).mean(),
            cx[present].mean() if shown else 0.5, cy[present].mean() if shown else 0.5,
            spread[present].mean() if shown else 0.0,
            step_x, step_y, np.abs(np.diff(mass)).mean() if frames > 1 else 0.0, present.mean(),
        ], dtype=np.float32),
        pooled.astype(np.float32),
    ])
    return out


class MapProxy:
    """Scores class sets from their cached maps alone (see the module docstring).

    Args:
        maps_for: ``class_set -> reader`` with ``read(video_id) -> (T, C, res, res)`` uint8, over
            the train and val clips; it may compute missing maps (its stats, when it has
            ``stats.computed_pairs``, are reported as ``maps_computed``).
        train: ``(video_ids, label_ids)`` the classifier is fit on.
        val: ``(video_ids, label_ids)`` it is scored on. Never the test split.
        num_labels: Number of actions.
        l2: L2 penalty of the logistic regression (per train clip).
        seed: Seeds the float accumulation order (``torch.manual_seed``); the fit has no sampling.
    """

    def __init__(self, maps_for: Callable[[ClassSet], Any], train: tuple[Sequence[str], Sequence[int]],
                 val: tuple[Sequence[str], Sequence[int]], num_labels: int, *, l2: float = 1e-2, seed: int = 0,
                 max_iter: int = 100):
        if not train[0] or not val[0]:
            raise ValueError("the proxy needs train and val clips")
        self.maps_for = maps_for
        self.train_ids, self.train_labels = list(train[0]), np.asarray(train[1], dtype=np.int64)
        self.val_ids, self.val_labels = list(val[0]), np.asarray(val[1], dtype=np.int64)
        self.num_labels = int(num_labels)
        self.l2 = float(l2)
        self.seed = int(seed)
        self.max_iter = int(max_iter)
        self._features: dict[tuple[str, str], np.ndarray] = {}  # (class key, video id) -> features
        self._scores: dict[frozenset[str], ProxyScore] = {}

    def __getstate__(self) -> dict[str, Any]:  # the memo is a cache: it never travels
        state = dict(self.__dict__)
        state["_features"], state["_scores"] = {}, {}
        return state

    # ------------------------------------------------------------------ features
    def _class_features(self, class_set: ClassSet) -> tuple[np.ndarray, np.ndarray, int]:
        """(train, val) feature matrices of ``class_set``; reads only the pairs not memoised."""
        missing = [vid for vid in self.train_ids + self.val_ids
                   if any((key, vid) not in self._features for key in class_set.keys)]
        computed = 0
        if missing:
            reader = self.maps_for(class_set)
            stats = getattr(reader, "stats", None)
            computed = int(getattr(stats, "computed_pairs", 0) or 0)
            for vid in missing:
                planes = np.asarray(reader.read(vid))  # (T, C, res, res)
                if planes.ndim != 4 or planes.shape[1] != len(class_set):
                    raise ValueError(f"maps of {vid!r} have shape {planes.shape}; expected (T, {len(class_set)}, h, w)")
                for c, key in enumerate(class_set.keys):
                    self._features[(key, vid)] = map_features(planes[:, c])

        def matrix(ids: Sequence[str]) -> np.ndarray:
            return np.stack([np.concatenate([self._features[(key, vid)] for key in class_set.keys]) for vid in ids])

        return matrix(self.train_ids), matrix(self.val_ids), computed

    # ------------------------------------------------------------------ scoring
    def score(self, class_set: ClassSet) -> ProxyScore:
        """The proxy score of ``class_set`` (memoised per set; an empty set scores the label prior)."""
        if not isinstance(class_set, ClassSet):
            raise TypeError("MapProxy.score takes a ClassSet (parse untrusted text with ClassSet.parse first)")
        known = self._scores.get(class_set.as_frozenset())
        if known is not None:
            return known
        started = time.perf_counter()
        computed = 0
        if class_set:
            x_train, x_val, computed = self._class_features(class_set)
        else:
            x_train, x_val = np.zeros((len(self.train_ids), 0), np.float32), np.zeros((len(self.val_ids), 0), np.float32)
        prob, accuracy = self._fit_and_score(x_train, x_val)
        result = ProxyScore(tuple(class_set), prob, accuracy, time.perf_counter() - started, computed)
        self._scores[class_set.as_frozenset()] = result
        log.info("proxy %.3f (val accuracy %.3f, %.2f s, %d maps computed): %s", result.score, result.val_accuracy,
                 result.seconds, computed, ", ".join(class_set))
        return result

    __call__ = score  # a proxy is a callable class_set -> score (searchers.screening)

    def _fit_and_score(self, x_train: np.ndarray, x_val: np.ndarray) -> tuple[float, float]:
        import torch

        mean = x_train.mean(axis=0)
        std = x_train.std(axis=0) + 1e-4
        xt = torch.from_numpy(((x_train - mean) / std).astype(np.float32))
        xv = torch.from_numpy(((x_val - mean) / std).astype(np.float32))
        yt = torch.from_numpy(self.train_labels)
        yv = torch.from_numpy(self.val_labels)
        torch.manual_seed(self.seed)
        weight = torch.zeros(xt.shape[1], self.num_labels, requires_grad=True)
        bias = torch.zeros(self.num_labels, requires_grad=True)
        optimiser = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=self.max_iter, line_search_fn="strong_wolfe")

        def closure():
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(xt @ weight + bias, yt) + self.l2 * (weight ** 2).sum()
            loss.backward()
            return loss

        optimiser.step(closure)
        with torch.no_grad():
            prob = torch.softmax(xv @ weight + bias, dim=1)
            true_prob = float(prob[torch.arange(len(yv)), yv].mean())
            accuracy = float((prob.argmax(dim=1) == yv).float().mean())
        return true_prob, accuracy


class ConfigProxy:
    """The screening proxy of ``a2o search``: a :class:`MapProxy` over the run's frame store (train
    and val splits) whose maps come from :func:`a2o.train.trial.ensure_trial_maps` (new classes
    are detected, by the Ray Data stage on a GPU cluster, and cached; trials then reuse them).

    Picklable (it holds the config; the proxy, store and memo are rebuilt after unpickling), so a
    searcher checkpointed by Tune restores with it.
    """

    def __init__(self, cfg: Any):
        self.cfg = cfg
        self._proxy: Optional[MapProxy] = None

    def __getstate__(self) -> dict[str, Any]:
        return {"cfg": self.cfg, "_proxy": None}

    def _build(self) -> MapProxy:
        from a2o.data.framestore import FrameStore
        from a2o.train.trial import ensure_trial_maps, frames_root, label_names

        store = FrameStore(frames_root(self.cfg))
        manifest = store.manifest()
        rows = manifest.select(["video_id", "label_id", "split"]).to_pylist()
        splits = {s: ([r["video_id"] for r in rows if r["split"] == s], [int(r["label_id"]) for r in rows if r["split"] == s])
                  for s in ("train", "val")}  # never the test split
        ids = splits["train"][0] + splits["val"][0]
        return MapProxy(lambda class_set: ensure_trial_maps(self.cfg, class_set, store, ids)[0],
                        splits["train"], splits["val"], len(label_names(manifest)), seed=self.cfg.search.seed)

    def __call__(self, class_set: ClassSet) -> ProxyScore:
        if self._proxy is None:
            self._proxy = self._build()
        return self._proxy.score(class_set)


def score_sets(proxy: MapProxy, sets: Sequence[Sequence[str]], *, action_names: Optional[Sequence[str]] = None
               ) -> list[ProxyScore]:
    """Scores of texts sets (each parsed with the class-text rule first)."""
    return [proxy.score(ClassSet.parse(texts, action_names=action_names or (), where="proxy set")) for texts in sets]
