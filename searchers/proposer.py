"""The LLM half of an LLM searcher: a background request, bounded re-asks, the fallback, the counts.

A :class:`Proposer` is owned by a searcher. The searcher says *what* to ask (a :class:`Request`:
messages, seed, the sets already tried, how to parse a reply), the proposer decides *how*:

- ``poll`` never blocks Tune: the first call submits the request to a single background thread
  and returns ``None``; later calls return ``None`` until the answer is in, then a
  :class:`Proposal`;
- a reply with no usable class, or one repeating a tried set, is re-asked up to ``max_reasks``
  times, with the rejected reply (clipped) and the reason appended to the conversation;
- after that, or at once when the endpoint is unreachable, the searcher's ``fallback`` set is
  used: logged as a warning and counted, never an exception;
- every suggestion's calls, re-asks, tokens and latency are added to :attr:`Proposer.stats`, the
  dict the service writes into ``results.json`` as ``searcher_stats``.

The proposer pickles without its client, thread and pending request (the API key lives inside
the client); after unpickling the client is rebuilt from its :class:`LLMClientSpec` or factory.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from a2o.detect.classes import ClassSet
from a2o.errors import FallbackLimitError, LLMReplyError, LLMUnavailableError
from searchers.llm_client import ChatClient, LLMClientSpec
from searchers.parsing import ParsedReply, clip_reply

__all__ = ["Exchange", "Job", "LLMArg", "Proposal", "Proposer", "Request"]

logger = logging.getLogger(__name__)

LLMArg = Union[LLMClientSpec, Callable[[], ChatClient], ChatClient, None]
"""How a searcher is given its LLM: a spec (preferred: rebuilt after a restore), a zero-argument
factory, or a client object with ``complete(messages, *, response_format, seed)``."""

REJECTIONS_SHOWN = 3  # rejected phrases named in a re-ask (a small model reads every token)
REJECTION_CHARS = 90  # each rejection reason is cut to this


@dataclass(frozen=True)
class Request:
    """One proposal to ask for, snapshotted on Tune's thread: the background thread reads only this.

    A request is also a *job* (``request(exchange)``): the simple case, one conversation with
    re-asks. A searcher with more steps (the prompt pool) passes its own job to :meth:`Proposer.poll`.
    """

    messages: tuple[Mapping[str, str], ...]
    """The conversation so far (usually one user message holding the prompt)."""
    seed: int
    """Sampling seed sent with every call of this proposal (and part of the replay-cache key)."""
    tried: frozenset[frozenset[str]]
    """Every set suggested so far, running ones included: a reply repeating one is re-asked."""
    parse: Callable[[str], ParsedReply]
    """Reply text -> class set (possibly empty) and the rejected phrases."""
    response_format: Optional[Mapping[str, Any]] = None
    """The ``response_format`` sent to the server (a JSON schema), or None for plain text."""
    format_instructions: str = ""
    """Repeated in a re-ask, so the model sees the output format again."""

    def __call__(self, exchange: Exchange) -> Optional[ClassSet]:
        return exchange.ask(self)


@dataclass
class Exchange:
    """The LLM traffic of one proposal, counted (lives on the background thread)."""

    client: Any  # a ChatClient (None only until the background thread has built it)
    max_reasks: int
    llm_calls: int = 0
    reasks: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    reason: str = ""
    """Why the last attempt was not used (for the fallback's warning)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """What a job hands back to its searcher besides the set (the prompt pool's pool)."""

    def complete(self, messages: Sequence[Mapping[str, str]], *, seed: int,
                 response_format: Optional[Mapping[str, Any]] = None) -> str:
        """One counted call; returns the reply text. Raises what the client raises."""
        reply = self.client.complete(list(messages), response_format=response_format, seed=seed)
        self.llm_calls += 1
        self.cache_hits += int(getattr(reply, "cached", False))
        self.prompt_tokens += reply.prompt_tokens
        self.completion_tokens += reply.completion_tokens
        self.latency_s += reply.latency_s
        return reply.text

    def ask(self, request: Request) -> Optional[ClassSet]:
        """A new, usable class set, re-asking up to ``max_reasks`` times; None when there is none."""

        def judge(text: str) -> tuple[Optional[ClassSet], str, str]:
            parsed = request.parse(text)
            if not parsed.class_set:
                return None, "the reply contained no usable object class", (
                    f"Your reply contained no usable object class{_rejections(parsed)}. Answer again with a "
                    f"different set: {request.format_instructions} Each class is a short visual noun of "
                    "one to four words."
                )
            if parsed.class_set.as_frozenset() in request.tried:
                return None, "the reply repeated a set that was already tried", (
                    f"The set [{', '.join(parsed.class_set)}] was already tried or is running. Propose a "
                    f"different set: swap at least one class. {request.format_instructions}"
                )
            return parsed.class_set, "", ""

        return self.converse(request, judge)

    def converse(self, request: Request, judge: Callable[[str], tuple[Any, str, str]]) -> Any:
        """One conversation: ask, and re-ask up to ``max_reasks`` times with the reply (clipped) and
        ``judge``'s feedback appended. ``judge(text) -> (value, reason, feedback)``: a value that is
        not None ends it; else ``reason`` is kept for the fallback's warning. None when nothing was usable."""
        messages = list(request.messages)
        for attempt in range(self.max_reasks + 1):
            if attempt:
                self.reasks += 1
            try:
                text = self.complete(messages, seed=request.seed, response_format=request.response_format)
            except LLMReplyError as exc:
                self.reason = str(exc)
                continue
            value, reason, feedback = judge(text)
            if value is not None:
                return value
            self.reason = reason
            messages += [{"role": "assistant", "content": clip_reply(text)}, {"role": "user", "content": feedback}]
        return None


def _rejections(parsed: ParsedReply) -> str:
    if not parsed.rejected:
        return ""
    shown = "; ".join(f"{phrase!r}: {reason[:REJECTION_CHARS]}" for phrase, reason in parsed.rejected[:REJECTIONS_SHOWN])
    return f" (rejected: {shown})"


Job = Callable[[Exchange], Optional[ClassSet]]
"""What runs on the background thread: a :class:`Request`, or a searcher's own steps."""


@dataclass(frozen=True)
class Proposal:
    """The answer to one suggestion: the set, who made it, and what it cost."""

    class_set: ClassSet
    source: str
    """``"initial"``, ``"llm"``, ``"fallback:unusable"`` or ``"fallback:unreachable"``."""
    llm_calls: int = 0
    reasks: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    extra: Mapping[str, Any] = field(default_factory=dict)


def _empty_stats() -> dict[str, Any]:
    return {
        "suggestions": 0, "llm_calls": 0, "reasks": 0, "fallbacks": 0, "llm_errors": 0,
        "cache_hits": 0, "prompt_tokens": 0, "completion_tokens": 0, "llm_time_s": 0.0,
        "per_suggestion": [],
    }


class Proposer:
    """Owns the LLM client, the background request, the re-asks, the fallback and the counts.

    Args:
        llm: See :data:`LLMArg`. A client object is used as is and never pickled; its ``spec``
            attribute, when it is an :class:`LLMClientSpec`, is kept to rebuild it.
        max_reasks: Re-asks after an unusable or repeated reply, before the fallback.
        label: Names the searcher in log lines.
        max_fallback_share: When a fallback brings the fallbacks to 2 or more and above this share
            of the suggestions so far, :meth:`poll` raises :class:`~a2o.errors.FallbackLimitError`
            instead of suggesting it: a search that quietly turned into a random walk stops, with
            its state saved. None: never.
    """

    _RUNTIME = ("_client", "_executor", "_future")

    def __init__(self, llm: LLMArg, *, max_reasks: int = 2, label: str = "LLM searcher",
                 max_fallback_share: Optional[float] = None):
        if max_reasks < 0:
            raise ValueError(f"max_reasks must be >= 0, got {max_reasks}")
        if max_fallback_share is not None and not 0.0 <= max_fallback_share <= 1.0:
            raise ValueError(f"max_fallback_share must be in [0, 1], got {max_fallback_share}")
        self.max_reasks = int(max_reasks)
        self.max_fallback_share = max_fallback_share
        self.label = label
        self.stats: dict[str, Any] = _empty_stats()
        self._factory: Optional[Callable[[], ChatClient]] = None
        self._client: Optional[ChatClient] = None
        self._executor: Optional[ThreadPoolExecutor] = None
        self._future: Optional[Future] = None
        if llm is None:
            return
        if isinstance(llm, LLMClientSpec):
            self._factory = llm
        elif hasattr(llm, "complete"):
            self._client = llm
            spec = getattr(llm, "spec", None)
            self._factory = spec if isinstance(spec, LLMClientSpec) else None
        elif callable(llm):
            self._factory = llm
        else:
            raise TypeError("llm must be an LLMClientSpec, a client factory or a client with complete()")

    # ------------------------------------------------------------------ the client
    def client(self) -> ChatClient:
        """The client, built from the spec or factory on first use (and after unpickling)."""
        if self._client is None:
            if self._factory is None:
                raise LLMUnavailableError(
                    "this searcher has no LLM client (it was restored from a client that cannot be "
                    "rebuilt): pass llm as an LLMClientSpec so it can be rebuilt after a restore."
                )
            self._client = self._factory()
        return self._client

    # ------------------------------------------------------------------ proposing
    @property
    def busy(self) -> bool:
        """True while a request is out (``poll`` will not submit another)."""
        return self._future is not None

    def poll(self, make_job: Callable[[], Job], *, fallback: Callable[[], ClassSet],
             absorb: Optional[Callable[[Mapping[str, Any]], None]] = None) -> Optional[Proposal]:
        """Start a proposal, or return it once done (None meanwhile; never blocks).

        Args:
            make_job: Called (on this thread) only when a new request is submitted.
            fallback: Called (on this thread) when the LLM gave no usable new set.
            absorb: Called (on this thread, before ``fallback``) with the job's ``extra`` when
                it is non-empty (the prompt pool keeps its enumerated pool this way).
        """
        if self._future is None:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="a2o-llm")
            self._future = self._executor.submit(self._run, make_job())
            return None
        if not self._future.done():
            return None
        future, self._future = self._future, None
        try:
            class_set, source, exchange = future.result()
        except Exception as exc:  # noqa: BLE001 - a bug in a client must not kill the experiment
            logger.exception("%s: LLM proposal failed unexpectedly; using the fallback", self.label)
            class_set, source, exchange = None, "fallback:unusable", Exchange(client=None, max_reasks=0)
            exchange.reason = type(exc).__name__
        if absorb is not None and exchange.extra:
            absorb(exchange.extra)
        if class_set is None:
            class_set = fallback()
            self.stats["fallbacks"] += 1
            self.stats["llm_errors"] += int(source == "fallback:unreachable")
            logger.warning(
                "%s fallback (%s) for suggestion %d: %s; suggesting an edit of the best set: %s", self.label,
                source, self.stats["suggestions"] + 1, exchange.reason or "no usable reply", list(class_set),
            )
            self._check_fallback_share(source, exchange.reason)
        proposal = Proposal(class_set, source, exchange.llm_calls, exchange.reasks, exchange.cache_hits,
                            exchange.prompt_tokens, exchange.completion_tokens, exchange.latency_s,
                            dict(exchange.extra))
        self.record(proposal)
        return proposal

    def fallback_causes(self) -> dict[str, int]:
        """Fallbacks so far by cause (``fallback:unreachable``, ``fallback:unusable``)."""
        causes: dict[str, int] = {}
        for entry in self.stats["per_suggestion"]:
            if str(entry.get("source", "")).startswith("fallback"):
                causes[entry["source"]] = causes.get(entry["source"], 0) + 1
        return causes

    def _check_fallback_share(self, source: str, reason: str) -> None:
        limit = getattr(self, "max_fallback_share", None)  # absent in states pickled before it existed
        fallbacks, suggestions = self.stats["fallbacks"], self.stats["suggestions"] + 1
        if limit is None or fallbacks < 2 or fallbacks / suggestions <= limit:
            return
        causes = self.fallback_causes()
        causes[source] = causes.get(source, 0) + 1
        shown = ", ".join(f"{k.split(':', 1)[1]} {v}" for k, v in sorted(causes.items()))
        raise FallbackLimitError(
            f"{fallbacks} of {suggestions} proposals were fallbacks ({shown}; last: {reason or 'no usable reply'}), "
            f"above search.max_fallback_share={limit:g}: the LLM is not steering this search. Fix the LLM "
            "endpoint or model (the warnings above say what failed), then continue with --resume; or raise "
            "search.max_fallback_share."
        )

    def _run(self, job: Job) -> tuple[Optional[ClassSet], str, Exchange]:
        """Background thread: the job's set (None -> fallback), its source, and its traffic."""
        exchange = Exchange(client=None, max_reasks=self.max_reasks)
        try:
            exchange.client = self.client()
            class_set = job(exchange)
        except LLMUnavailableError as exc:
            exchange.reason = str(exc)
            return None, "fallback:unreachable", exchange
        return class_set, ("llm" if class_set is not None else "fallback:unusable"), exchange

    def record(self, proposal: Proposal) -> None:
        """Count one suggestion (``poll`` does it; a searcher calls it for an ``"initial"`` set)."""
        stats = self.stats
        stats["suggestions"] += 1
        for key in ("llm_calls", "reasks", "cache_hits", "prompt_tokens", "completion_tokens"):
            stats[key] += getattr(proposal, key)
        stats["llm_time_s"] += proposal.latency_s
        stats["per_suggestion"].append({
            "index": stats["suggestions"], "source": proposal.source, "llm_calls": proposal.llm_calls,
            "reasks": proposal.reasks, "prompt_tokens": proposal.prompt_tokens,
            "completion_tokens": proposal.completion_tokens, "latency_s": round(proposal.latency_s, 4),
        })

    # ------------------------------------------------------------------ pickling and restore
    def shutdown(self) -> None:
        """Drop the pending request and stop the thread (a restored searcher asks afresh)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor, self._future = None, None

    def take_llm_from(self, other: Proposer) -> None:
        """After a restore: use ``other``'s client and factory (the live instance's LLM wins)."""
        if other._client is not None or other._factory is not None:
            self._client, self._factory = other._client, other._factory or self._factory

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in self._RUNTIME:
            state[name] = None
        try:  # a factory that cannot be pickled (a lambda) is dropped, not fatal
            pickle.dumps(state["_factory"])
        except Exception:  # noqa: BLE001 - any pickling failure means "not rebuildable"
            state["_factory"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
