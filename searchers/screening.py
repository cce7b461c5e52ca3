"""Screening: the LLM proposes K candidate sets in one request, a cheap proxy picks the one to train.

An ICRL iteration normally pays a full trial for every proposal. With ``screen_candidates: K`` the
searcher asks for K different sets in one request, scores each with a *proxy* (for A2O, the
map-only classifier of :mod:`a2o.train.proxy`: seconds once a class's maps are cached) and sends
the best-scoring one to the full trial. Every candidate and its proxy score then enters the
history the LLM sees, marked as a proxy score, so the losers teach it too.

The :class:`Screener` is the searcher's screening state: the candidates of the iteration in
progress, the scores in so far, and every screened candidate since the start. It pickles with the
searcher (a restore mid-iteration scores the candidates still unscored, it does not ask again) and
without its thread, its pending score and a proxy that cannot be pickled (the live searcher's proxy
is used after a restore, as the LLM client is).

A proxy is any callable ``proxy(class_set) -> score`` where the score is a float or an object with
``score`` (and optionally ``seconds``, ``val_accuracy``): higher is better. A proxy that raises
for a candidate leaves it unscored (logged, counted); it is never sent unless every candidate failed,
when the LLM's first candidate goes to the trial and the suggestion says so.
"""

from __future__ import annotations

import logging
import math
import pickle
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Optional

from a2o.detect.classes import ClassSet
from a2o.errors import ClassTextError
from searchers.parsing import clean_phrase, normalise_text, reply_json, reply_uses, strip_fence
from searchers.proposer import Exchange, Request

__all__ = [
    "CandidateRequest",
    "Screener",
    "candidates_instructions",
    "candidates_response_format",
    "parse_candidates",
    "uses_candidate",
]

logger = logging.getLogger(__name__)

MAX_CANDIDATES = 16
"""Largest K: a small model's reply (and the history block) grows with it."""
HISTORY_SHOWN = 24
"""Screened candidates shown to the LLM (the most recent; older ones are summarised by count)."""


# ---------------------------------------------------------------------------------------------
# asking for K sets


def candidates_response_format(k: int, max_classes: int, *, num_actions: int = 0, max_chars: int = 40,
                               min_classes: int = 1) -> dict[str, Any]:
    """JSON-schema ``response_format`` for ``{"candidates": [[...], ...]}`` (K sets of ``min_classes``
    to C_max strings), preceded by the small prompt's action -> object ``uses`` when ``num_actions`` > 0.

    ``min_classes``: asked for K sets, the embedded 1.5B model wrote sets of 1-2 objects where a
    single-set request gets about 8 (household, seed 0: 8 screened iterations, median 2 objects);
    a floor in the schema keeps the candidates comparable with ICRL's sets.
    """
    phrase = {"type": "string", "maxLength": max_chars}
    low = max(1, min(int(min_classes), max_classes))
    properties: dict[str, Any] = {
        "candidates": {
            "type": "array",
            "items": {"type": "array", "items": phrase, "minItems": low, "maxItems": max_classes},
            "minItems": 1,
            "maxItems": k,
        }
    }
    required = ["candidates"]
    if num_actions:
        use = {"type": "object", "properties": {"action": phrase, "object": phrase},
               "required": ["action", "object"], "additionalProperties": False}
        properties = {"uses": {"type": "array", "items": use, "minItems": 1, "maxItems": num_actions}, **properties}
        required = ["uses", "candidates"]
    return {"type": "json_schema", "json_schema": {
        "name": "candidate_sets", "strict": True,
        "schema": {"type": "object", "properties": properties, "required": required, "additionalProperties": False},
    }}


def candidates_instructions(k: int, *, response_format: str, uses: bool, target_count: int = 0) -> str:
    """What the prompt's ``$format_instructions`` says when K candidates are asked for."""
    size = f", each of about {target_count} objects" if target_count else ""
    lead = (f"Give {k} different candidate sets{size} (they differ in at least one object). A quick check "
            "scores each from the detector's maps and the best one is trained.")
    if response_format != "json_schema":
        return (f"{lead} Write one candidate set per line, its objects separated by commas, and nothing "
                "else: no bullets, numbers or headers.")
    if uses:
        return (
            "First, for each action, name the object a person holds or uses to do it: a short visible noun, "
            f"never the action itself. {lead}\n"
            'Reply with only a JSON object of the form {"uses": [{"action": "...", "object": "..."}, ...], '
            '"candidates": [["...", "..."], ["...", "..."]]}.'
        )
    return f'{lead} Reply with only a JSON object of the form {{"candidates": [["...", "..."], ["...", "..."]]}}.'


def tokens_needed(k: int, target_count: int, num_actions: int = 0) -> int:
    """A generous estimate of the completion tokens of a K-candidate reply (about 6 per object,
    12 per action -> object pair, JSON overhead), for checking ``llm.max_tokens``."""
    return k * target_count * 6 + num_actions * 12 + 64


def _candidate_lists(text: str) -> list[list[str]]:
    body = strip_fence(text)
    data = reply_json(body)
    if isinstance(data, dict):
        data = data.get("candidates", data.get("sets"))
    if isinstance(data, list):
        return [[str(x) for x in item if isinstance(x, (str, int, float))] for item in data if isinstance(item, list)]
    return [[p for p in line.split(",") if p.strip()] for line in body.splitlines() if line.strip()
            and not line.strip().endswith(":")]


def parse_candidates(text: str, *, action_names: Iterable[str] = (), max_classes: int, k: int
                     ) -> tuple[list[ClassSet], list[tuple[str, str]]]:
    """Up to ``k`` distinct class sets of a reply, and the rejected phrases with their reasons.

    Each phrase passes the class-text rule (:func:`searchers.parsing.clean_phrase`); action names
    are dropped; each set is cut to ``max_classes`` and a set equal to an earlier one is dropped.
    """
    actions = {normalise_text(a) for a in action_names}
    sets: list[ClassSet] = []
    rejected: list[tuple[str, str]] = []
    for items in _candidate_lists(text):
        kept: list[str] = []
        for item in items:
            shown = item.strip()[:60]
            try:
                phrase = clean_phrase(item)
            except ClassTextError as exc:
                rejected.append((shown, str(exc)))
                continue
            if phrase in actions:
                rejected.append((shown, "it is a target action name, not an object"))
            elif phrase not in kept:
                kept.append(phrase)
            if len(kept) >= max_classes:
                break
        if kept and all(ClassSet(tuple(kept)).as_frozenset() != s.as_frozenset() for s in sets):
            sets.append(ClassSet(tuple(kept)))
        if len(sets) >= k:
            break
    return sets, rejected


def uses_candidate(text: str, *, action_names: Iterable[str] = (), max_classes: int) -> Optional[ClassSet]:
    """The objects of the reply's own ``uses`` pairs (action -> object), as one more candidate set.

    With the small prompt the model first names, per action, the object used for it, then writes its
    candidate sets. The embedded 1.5B model named good objects in ``uses`` (comb, knife, hammer, cup)
    and then left most of them out of its 4 candidates (household, seed 0), so the pairs' objects are
    screened too: they are the model's own words in the same reply, checked by the same rule.
    """
    uses = reply_uses(text, action_names=action_names, max_classes=max_classes)
    return uses if uses else None


@dataclass(frozen=True)
class CandidateRequest:
    """The background job of a screened iteration: one conversation asking for K sets.

    Sets already tried (or running) are dropped from the reply; a reply with none left is re-asked
    (up to ``max_reasks``) with the reason. The job returns the first new set (the proposer's
    fallback runs when there is none) and hands all of them back in ``exchange.extra``.
    """

    request: Request
    k: int
    action_names: tuple[str, ...]
    max_classes: int

    def __call__(self, exchange: Exchange) -> Optional[ClassSet]:
        new = exchange.converse(self.request, self._judge)
        if new is None:
            return None
        exchange.extra["candidates"] = [list(s) for s in new]
        return new[0]

    def _judge(self, text: str) -> tuple[Optional[list[ClassSet]], str, str]:
        """(the new candidate sets, or None with the reason and the re-ask's feedback)."""
        request = self.request
        sets, rejected = parse_candidates(text, action_names=self.action_names, max_classes=self.max_classes,
                                          k=self.k)
        uses = uses_candidate(text, action_names=self.action_names, max_classes=self.max_classes)
        if uses is not None and all(uses.as_frozenset() != s.as_frozenset() for s in sets):
            sets = [uses, *sets][: self.k]  # the model's own action -> object pairs, screened first
        new = [s for s in sets if s.as_frozenset() not in request.tried]
        if new:
            return new, "", ""
        if sets:
            return None, "every candidate repeated a set that was already tried", (
                "Every set you gave was already tried or is running. Give different sets: swap "
                f"at least one object in each. {request.format_instructions}")
        shown = "; ".join(f"{p!r}: {r[:90]}" for p, r in rejected[:3])
        return None, "the reply contained no usable candidate set", (
            f"Your reply contained no usable set{f' (rejected: {shown})' if shown else ''}. "
            f"{request.format_instructions} Each object is a short visual noun of one to four words.")


# ---------------------------------------------------------------------------------------------
# scoring and picking


@dataclass
class Screened:
    """One screened candidate, as the history shows it."""

    iteration: int  # the trial it competed for (1-based)
    classes: tuple[str, ...]
    score: Optional[float]  # None when the proxy failed on it
    seconds: float
    sent: bool = False  # it won and went to the full trial
    val_accuracy: Optional[float] = None  # the proxy classifier's own val accuracy, when it has one


@dataclass
class _Pending:
    iteration: int
    candidates: list[ClassSet]
    results: list[Optional[Screened]] = field(default_factory=list)
    proposal: Any = None  # the Proposal the LLM phase produced (its stats are already counted)


def _as_score(value: Any) -> tuple[float, Optional[float], Optional[float]]:
    """(score, seconds, val_accuracy) of a proxy's return value."""
    if isinstance(value, (int, float)):
        return float(value), None, None
    return float(value.score), getattr(value, "seconds", None), getattr(value, "val_accuracy", None)


class Screener:
    """K-candidate screening state of an ICRL searcher (see the module docstring).

    Args:
        k: Candidates per iteration (2..16).
        proxy: ``class_set -> float`` or an object with ``score``; higher is better.
    """

    _RUNTIME = ("_executor", "_future")

    def __init__(self, k: int, proxy: Callable[[ClassSet], Any]):
        if not 2 <= int(k) <= MAX_CANDIDATES:
            raise ValueError(f"screen_candidates must be 1 (off) or 2..{MAX_CANDIDATES}, got {k}")
        if proxy is None or not callable(proxy):
            raise ValueError("screening needs a proxy: a callable class_set -> score (a2o.train.proxy.MapProxy.score)")
        self.k = int(k)
        self.proxy = proxy
        self.pending: Optional[_Pending] = None
        self.screened: list[Screened] = []
        self.stats: dict[str, Any] = {"screened": 0, "proxy_failures": 0, "proxy_time_s": 0.0}
        self._executor: Optional[ThreadPoolExecutor] = None
        self._future: Optional[Future] = None

    # ------------------------------------------------------------------ the iteration
    @property
    def busy(self) -> bool:
        return self.pending is not None

    def start(self, iteration: int, candidates: Sequence[ClassSet], proposal: Any) -> None:
        """Screen ``candidates`` (already new and safe) for trial ``iteration``."""
        self.pending = _Pending(iteration, list(candidates), [None] * len(candidates), proposal)

    def poll(self) -> Optional[tuple[ClassSet, dict[str, Any], Any]]:
        """Score the next candidate in the background; once all are scored, ``(winner, info, proposal)``."""
        pending = self.pending
        if pending is None:
            raise RuntimeError("Screener.poll without candidates (call start first)")
        if self._future is not None:
            if not self._future.done():
                return None
            index, future, self._future = self._future.index, self._future, None  # type: ignore[attr-defined]
            pending.results[index] = self._finish(pending, index, future)
        todo = [i for i, r in enumerate(pending.results) if r is None]
        if todo:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="a2o-screen")
            started = time.perf_counter()
            future = self._executor.submit(self._score, pending.candidates[todo[0]], started)
            future.index = todo[0]  # type: ignore[attr-defined]
            self._future = future
            return None
        return self._pick(pending)

    def _score(self, class_set: ClassSet, started: float) -> tuple[Any, float]:
        return self.proxy(class_set), time.perf_counter() - started

    def _finish(self, pending: _Pending, index: int, future: Future) -> Screened:
        classes = tuple(pending.candidates[index])
        try:
            value, elapsed = future.result()
            score, seconds, val_accuracy = _as_score(value)
            if not math.isfinite(score):
                raise ValueError(f"non-finite proxy score {score}")
        except Exception as exc:  # noqa: BLE001 - a proxy failure costs one candidate, not the search
            self.stats["proxy_failures"] += 1
            logger.warning("screening: the proxy failed on [%s] (%s: %s); it is not sent", ", ".join(classes),
                           type(exc).__name__, str(exc)[:200])
            return Screened(pending.iteration, classes, None, 0.0)
        seconds = float(seconds if seconds is not None else elapsed)
        self.stats["screened"] += 1
        self.stats["proxy_time_s"] += seconds
        return Screened(pending.iteration, classes, score, seconds, val_accuracy=val_accuracy)

    def _pick(self, pending: _Pending) -> tuple[ClassSet, dict[str, Any], Any]:
        results = [r for r in pending.results if r is not None]
        scored = [i for i, r in enumerate(results) if r.score is not None]
        # best proxy score; a tie goes to the LLM's earlier candidate
        winner = max(scored, key=lambda i: (results[i].score, -i)) if scored else 0
        results[winner].sent = True
        self.screened.extend(results)
        self.pending = None
        info = {
            "candidates": len(results),
            "proxy_score": results[winner].score,
            "proxy_seconds": round(sum(r.seconds for r in results), 3),
            "proxy_failed": sum(r.score is None for r in results),
        }
        if not scored:
            logger.warning("screening: the proxy failed on all %d candidates; sending the LLM's first one",
                           len(results))
        logger.info("screening: %d candidates scored in %.1f s; sending [%s] (proxy %s)", len(results),
                    info["proxy_seconds"], ", ".join(results[winner].classes),
                    "n/a" if results[winner].score is None else f"{results[winner].score:.3f}")
        return pending.candidates[winner], info, pending.proposal

    # ------------------------------------------------------------------ the prompt
    def history_block(self) -> str:
        """The screened candidates, for the history the LLM reads (empty before the first)."""
        if not self.screened:
            return ""
        shown = self.screened[-HISTORY_SHOWN:]
        lines = ["", "Screened candidates (PROXY scores: a quick classifier on the detector's maps alone, not the "
                 "recognizer's accuracy; higher is better; * = sent to the full trial):"]
        if len(self.screened) > len(shown):
            lines.append(f"({len(self.screened) - len(shown)} earlier candidates not shown)")
        for entry in shown:
            score = "proxy failed" if entry.score is None else f"proxy {entry.score:.3f}"
            lines.append(f"- for iteration {entry.iteration}: {', '.join(entry.classes)} -> {score}"
                         f"{' *' if entry.sent else ''}")
        return "\n".join(lines)

    def records(self) -> list[dict[str, Any]]:
        """Every screened candidate (results.json ``screened``)."""
        return [{"iteration": e.iteration, "classes": list(e.classes), "proxy_score": e.score,
                 "proxy_val_accuracy": e.val_accuracy, "seconds": round(e.seconds, 3), "sent": e.sent}
                for e in self.screened]

    # ------------------------------------------------------------------ pickling and restore
    def shutdown(self) -> None:
        """Drop the score in flight (a restored screener scores that candidate again)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor, self._future = None, None

    def take_proxy_from(self, other: Optional[Screener]) -> None:
        """After a restore: the live searcher's proxy wins (or fills in a dropped one)."""
        if other is not None and other.proxy is not None:
            self.proxy = other.proxy

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in self._RUNTIME:
            state[name] = None
        try:
            pickle.dumps(state["proxy"])
        except Exception:  # noqa: BLE001 - a proxy that cannot be pickled is supplied again at restore
            state["proxy"] = None
        return state

    def __setstate__(self, state: Mapping[str, Any]) -> None:
        self.__dict__.update(state)

