"""An OpenAI-compatible chat client for the ICRL agent, with a deterministic replay cache.

:class:`LLMClient` talks to any OpenAI-compatible endpoint (OpenAI, vLLM, Ray Serve LLM, llama.cpp's
server, the embedded ``a2o llm serve``). It adds three things the searchers need:

- **errors that name the fix**: an unreachable or refusing endpoint raises
  :class:`~a2o.errors.LLMUnavailableError` ("check llm.base_url or start `a2o llm serve`"), an
  unparsable reply :class:`~a2o.errors.LLMReplyError`;
- **a replay cache**: a JSON-lines file in the run's storage, keyed by the sha256 of (model,
  messages, temperature, seed, response_format), so a rerun or a resumed search gets the very same
  replies without calling the endpoint;
- **a secret-free pickled state**: the API key is read from the environment variable *named* in
  the config when the client is built, is never logged, and is never part of the pickled state.
  A pickled client (or a :class:`LLMClientSpec`) rebuilds itself from the spec on the other side.

Example::

    from searchers.llm_client import LLMClientSpec

    client = LLMClientSpec(base_url="http://127.0.0.1:8080/v1", model="qwen",
                           cache_path="runs/demo/llm_replay.jsonl").build()
    reply = client.complete([{"role": "user", "content": "Name one object."}])
    print(reply.text, reply.prompt_tokens, reply.completion_tokens, reply.latency_s)
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional, Protocol

from a2o.errors import LLMReplyError, LLMUnavailableError, require

__all__ = [
    "LLMReply",
    "ChatClient",
    "LLMClient",
    "LLMClientSpec",
    "ReplayCache",
    "classes_response_format",
    "uses_response_format",
    "llama_cpp_response_format",
    "public_url",
    "use_endpoint",
]

logger = logging.getLogger(__name__)

Message = Mapping[str, str]


@dataclass(frozen=True)
class LLMReply:
    """One chat completion."""

    text: str  # the assistant message content ("" when the server sent none)
    prompt_tokens: int  # tokens of the request, as the server counted them (0 when not reported)
    completion_tokens: int  # tokens of the reply (0 when not reported)
    latency_s: float  # wall time of the request that produced the reply (original time when replayed)
    cached: bool = False  # True when served from the replay cache


class ChatClient(Protocol):
    """What a searcher needs of an LLM client (tests may pass any object with this method)."""

    def complete(
        self,
        messages: Sequence[Message],
        *,
        response_format: Optional[Mapping[str, Any]] = None,
        seed: Optional[int] = None,
    ) -> LLMReply: ...


def classes_response_format(max_classes: int, max_chars: int = 40) -> dict[str, Any]:
    """A JSON-schema ``response_format`` asking for ``{"classes": [short strings]}``.

    Small local models (< 1B parameters) produce junk lists unless constrained; servers that
    support structured output (vLLM, llama.cpp, OpenAI) enforce this schema while sampling.
    """
    return {
        "type": "json_schema",
        "json_schema": {
            "name": "object_classes",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {
                    "classes": {
                        "type": "array",
                        "items": {"type": "string", "maxLength": max_chars},
                        "minItems": 1,
                        "maxItems": max_classes,
                    }
                },
                "required": ["classes"],
                "additionalProperties": False,
            },
        },
    }


def uses_response_format(max_classes: int, num_actions: int, max_chars: int = 40) -> dict[str, Any]:
    """The small prompt's JSON-schema ``response_format``: ``{"uses": [...], "classes": [...]}``.

    ``uses`` pairs each action with the object a person holds or uses for it; ``classes`` is the
    chosen set. Writing the pairs first is a short, structured chain of thought: measured with the
    embedded 1.5B model on A2O-Synth household, the plain ``{"classes": [...]}`` form gave action
    names back on 3 of 3 first proposals, this form gave objects (spoon, mop, toothbrush, ...) on
    2 of 3. Only ``classes`` is parsed; the pairs are kept in the reply log.
    """
    use = {
        "type": "object",
        "properties": {
            "action": {"type": "string", "maxLength": max_chars},
            "object": {"type": "string", "maxLength": max_chars},
        },
        "required": ["action", "object"],
        "additionalProperties": False,
    }
    return {
        "type": "json_schema",
        "json_schema": {
            "name": "action_objects",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {
                    "uses": {"type": "array", "items": use, "minItems": 1, "maxItems": max(1, num_actions)},
                    "classes": {
                        "type": "array",
                        "items": {"type": "string", "maxLength": max_chars},
                        "minItems": 1,
                        "maxItems": max_classes,
                    },
                },
                "required": ["uses", "classes"],
                "additionalProperties": False,
            },
        },
    }


def llama_cpp_response_format(response_format: Mapping[str, Any]) -> Optional[dict[str, Any]]:
    """The llama-cpp-python form of an OpenAI ``json_schema`` response_format, or None.

    llama-cpp-python's server (0.3.x, the embedded ``a2o llm serve``) rejects ``type:
    "json_schema"`` (HTTP 500, "Input should be 'text' or 'json_object'") but enforces the same
    schema given as ``{"type": "json_object", "schema": ...}``.
    """
    if response_format.get("type") != "json_schema":
        return None
    schema = (response_format.get("json_schema") or {}).get("schema")
    return {"type": "json_object", "schema": dict(schema)} if schema else None


def _rejects_json_schema(exc: Exception) -> bool:
    """True when an HTTP error says the server does not know ``response_format.type: json_schema``."""
    text = str(getattr(exc, "body", None) or "") + " " + str(exc)
    return getattr(exc, "status_code", 0) in (400, 422, 500) and "json_object" in text and "json_schema" in text


class ReplayCache:
    """Append-only JSON-lines file of replies keyed by the sha256 of the request.

    Args:
        path: Local file path (created with its folder on first write). Put it in the run's
            storage so reruns and resumes of *that* run replay; there is no global cache.

    A corrupt line (for example, a write cut short by a crash) is skipped with a warning; the
    request it recorded is simply asked again.
    """

    def __init__(self, path: str):
        self.path = os.fspath(path)
        self._entries: dict[str, dict[str, Any]] | None = None
        self._lock = threading.Lock()

    @staticmethod
    def key(
        model: str,
        messages: Sequence[Message],
        temperature: float,
        seed: Optional[int],
        response_format: Optional[Mapping[str, Any]] = None,
    ) -> str:
        """sha256 of the request fields that decide the reply."""
        payload = {
            "model": model,
            "messages": [dict(m) for m in messages],
            "temperature": temperature,
            "seed": seed,
            "response_format": response_format,
        }
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _load(self) -> dict[str, dict[str, Any]]:
        if self._entries is not None:
            return self._entries
        entries: dict[str, dict[str, Any]] = {}
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                        entries[record["key"]] = record
                    except (json.JSONDecodeError, KeyError, TypeError):
                        logger.warning(
                            "Replay cache %s: line %d is corrupt and is skipped (the request will be "
                            "asked again).",
                            self.path,
                            lineno,
                        )
        self._entries = entries
        return entries

    def get(self, key: str) -> Optional[dict[str, Any]]:
        with self._lock:
            return self._load().get(key)

    def put(self, key: str, record: Mapping[str, Any]) -> None:
        with self._lock:
            entries = self._load()
            row = {"key": key, **record}
            folder = os.path.dirname(self.path)
            if folder:
                os.makedirs(folder, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row, sort_keys=True) + "\n")
            entries[key] = row

    def __len__(self) -> int:
        with self._lock:
            return len(self._load())


@dataclass(frozen=True)
class LLMClientSpec:
    """Everything needed to build an :class:`LLMClient`, and nothing secret: safe to pickle.

    Calling the spec (or :meth:`build`) makes a client; searchers keep the spec in their state and
    rebuild the client after unpickling or :meth:`~ray.tune.search.Searcher.restore`.
    """

    base_url: str  # OpenAI-compatible endpoint, e.g. "http://127.0.0.1:8080/v1"
    model: str = ""  # model name; "" asks the server for its first model
    api_key_env: str = "OPENAI_API_KEY"  # NAME of the env var holding the key (never the key)
    temperature: float = 0.7  # sampling temperature
    max_tokens: int = 256  # most tokens in one reply
    timeout_s: float = 120.0  # per-request timeout
    max_retries: int = 2  # client retries on connection errors / 5xx before giving up
    cache_path: Optional[str] = None  # replay-cache file (run storage); None disables replay
    seed: Optional[int] = None  # default sampling seed sent to the server (part of the cache key)
    # How a JSON schema is sent: "openai" (response_format json_schema) or "llama" (llama.cpp's
    # json_object + schema, which its server takes instead). "openai" switches to "llama" on the
    # server's refusal; the embedded server starts with "llama" and saves that round trip.
    schema_form: str = "openai"

    @classmethod
    def from_config(cls, llm_config: Any, *, base_url: Optional[str] = None, cache_path: Optional[str] = None,
                    seed: Optional[int] = None) -> LLMClientSpec:
        """Spec from an :class:`a2o.config.LLMConfig`.

        ``base_url`` replaces ``llm.base_url`` (the entry point resolves ``'local'`` to the embedded
        server's URL); ``cache_path`` is only used when ``llm.replay_cache`` is on.
        """
        url = base_url or llm_config.base_url
        if url == "local":
            raise LLMUnavailableError(
                "llm.base_url is 'local': start the embedded server (`a2o llm serve`) and pass its URL "
                "as base_url, or set llm.base_url to an OpenAI-compatible endpoint."
            )
        return cls(
            base_url=url,
            model=llm_config.model,
            api_key_env=llm_config.api_key_env,
            temperature=llm_config.temperature,
            max_tokens=llm_config.max_tokens,
            timeout_s=llm_config.timeout_s,
            max_retries=llm_config.max_retries,
            cache_path=cache_path if llm_config.replay_cache else None,
            seed=seed,
            # base_url 'local' is the embedded llama.cpp server: send its schema form directly.
            schema_form="llama" if llm_config.base_url == "local" else "openai",
        )

    def build(self) -> LLMClient:
        """A client for this spec, or for this process's current endpoint (:func:`use_endpoint`)."""
        return LLMClient(self.resolved())

    def __call__(self) -> LLMClient:
        return self.build()

    def resolved(self) -> LLMClientSpec:
        """This spec with the endpoint fields of the run that resumes it, when one is registered.

        A searcher pickled by one run (Tune's experiment state) is unpickled by the next, whose
        embedded server listens on a new port and whose config may name another endpoint. The
        endpoint is the current run's, never the pickled URL: ``base_url``, ``model``, the key's
        variable, timeouts and the replay-cache file come from :func:`use_endpoint`; the sampling
        fields (temperature, seed, max_tokens) stay the search's own.
        """
        current = _CURRENT_ENDPOINT
        if current is None:
            return self
        changed = {name: getattr(current, name) for name in ENDPOINT_FIELDS
                   if getattr(current, name) != getattr(self, name)}
        if not changed:
            return self
        if "base_url" in changed:
            logger.info("LLM client: using this run's endpoint %s (the restored searcher was saved with %s)",
                        public_url(current.base_url), public_url(self.base_url))
        return dataclasses.replace(self, **changed)


ENDPOINT_FIELDS = ("base_url", "model", "api_key_env", "timeout_s", "max_retries", "cache_path", "schema_form")
"""What :meth:`LLMClientSpec.resolved` takes from the current run: where and how to reach the LLM."""

_CURRENT_ENDPOINT: Optional[LLMClientSpec] = None


@contextlib.contextmanager
def use_endpoint(spec: Optional[LLMClientSpec]):
    """Within the block, every client built in this process talks to ``spec``'s endpoint.

    Entry points wrap a search in it (``a2o search``, also on ``--resume``), so a searcher restored
    from a previous run's state reaches the LLM of this run. ``None`` leaves specs as they are.
    """
    global _CURRENT_ENDPOINT
    previous, _CURRENT_ENDPOINT = _CURRENT_ENDPOINT, spec
    try:
        yield spec
    finally:
        _CURRENT_ENDPOINT = previous


def public_url(url: str) -> str:
    """``url`` without user:password or query, so logs and results never carry a credential in it."""
    from urllib.parse import urlsplit, urlunsplit

    if not url:
        return ""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class LLMClient:
    """OpenAI-compatible chat client with a replay cache. See the module docstring.

    Args:
        spec: The :class:`LLMClientSpec`. The API key is read here, from the environment variable
            named by ``spec.api_key_env`` (``"none"`` when unset, which local servers accept).

    Raises:
        MissingDependencyError: The ``openai`` package is missing (``pip install 'a2o[llm]'``).
    """

    def __init__(self, spec: LLMClientSpec):
        self.spec = spec
        self.cache = ReplayCache(spec.cache_path) if spec.cache_path else None
        self._resolved_model: Optional[str] = spec.model or None
        # Set once the server turned down an OpenAI json_schema response_format but takes
        # llama.cpp's json_object+schema form; later requests use that form directly.
        self._json_object_schema = spec.schema_form == "llama"
        self._openai = self._make_openai(spec)

    @staticmethod
    def _make_openai(spec: LLMClientSpec):
        openai = require("openai", "llm")
        # The key lives only inside the openai client object, which is never pickled or logged.
        return openai.OpenAI(
            base_url=spec.base_url,
            api_key=os.environ.get(spec.api_key_env) or "none",
            timeout=spec.timeout_s,
            max_retries=spec.max_retries,
        )

    # -- pickling: the spec travels, the openai client (holding the key) does not -------------
    def __getstate__(self) -> dict[str, Any]:
        return {"spec": self.spec}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["spec"])

    def __repr__(self) -> str:
        return f"LLMClient(base_url={self.spec.base_url!r}, model={self.spec.model!r})"

    # -- requests ---------------------------------------------------------------------------
    def _unavailable(self, exc: Exception) -> LLMUnavailableError:
        import openai

        where = f"LLM endpoint {self.spec.base_url}"
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            if status in (401, 403):
                hint = (
                    f"put a valid API key in the environment variable named by llm.api_key_env "
                    f"('{self.spec.api_key_env}')"
                )
            elif status == 404:
                hint = "check llm.base_url (it usually ends in /v1) and llm.model"
            else:
                hint = "check the server's log, or start `a2o llm serve` and point llm.base_url at it"
            return LLMUnavailableError(f"{where} refused the request (HTTP {status}): {hint}.")
        return LLMUnavailableError(
            f"{where} is unreachable ({type(exc).__name__}): check llm.base_url, or start the "
            f"embedded server with `a2o llm serve`."
        )

    def ping(self) -> str:
        """Check that the endpoint answers ``/v1/models``; returns the model name requests use."""
        import openai

        try:
            models = list(self._openai.models.list())
        except (openai.APIConnectionError, openai.APIStatusError) as exc:
            raise self._unavailable(exc) from None
        if self.spec.model:
            return self.spec.model
        if not models:
            raise LLMUnavailableError(
                f"LLM endpoint {self.spec.base_url} lists no models: set llm.model to the model name."
            )
        self._resolved_model = models[0].id
        return models[0].id

    def _model_name(self) -> str:
        if self._resolved_model:
            return self._resolved_model
        import openai

        try:
            models = self._openai.models.list()
            first = next(iter(models), None)
        except (openai.APIConnectionError, openai.APIStatusError) as exc:
            raise self._unavailable(exc) from None
        if first is None:
            raise LLMUnavailableError(
                f"LLM endpoint {self.spec.base_url} lists no models: set llm.model to the model name."
            )
        self._resolved_model = first.id
        return first.id

    def complete(
        self,
        messages: Sequence[Message],
        *,
        response_format: Optional[Mapping[str, Any]] = None,
        seed: Optional[int] = None,
    ) -> LLMReply:
        """Send one chat request (or replay it) and return the reply.

        Args:
            messages: OpenAI chat messages (``{"role": ..., "content": ...}``).
            response_format: Optional OpenAI ``response_format``, e.g.
                :func:`classes_response_format`. Part of the cache key.
            seed: Sampling seed for this request (default ``spec.seed``). Part of the cache key,
                so independent samples of one prompt use different seeds.

        Raises:
            LLMUnavailableError: The endpoint is down, timed out, or refused the request.
            LLMReplyError: The server answered with something that is not a chat completion.
        """
        import openai

        seed = self.spec.seed if seed is None else seed
        key = ReplayCache.key(self.spec.model, messages, self.spec.temperature, seed, response_format)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                logger.debug("LLM reply replayed from %s", self.cache.path)
                return LLMReply(
                    text=hit["text"],
                    prompt_tokens=int(hit.get("prompt_tokens", 0)),
                    completion_tokens=int(hit.get("completion_tokens", 0)),
                    latency_s=float(hit.get("latency_s", 0.0)),
                    cached=True,
                )

        kwargs: dict[str, Any] = {
            "model": self._model_name(),
            "messages": [dict(m) for m in messages],
            "temperature": self.spec.temperature,
            "max_tokens": self.spec.max_tokens,
        }
        if seed is not None:
            kwargs["seed"] = seed
        llama_form = llama_cpp_response_format(response_format) if response_format is not None else None
        if response_format is not None:
            use_llama_form = self._json_object_schema and llama_form is not None
            kwargs["response_format"] = llama_form if use_llama_form else dict(response_format)
        start = time.perf_counter()
        try:
            try:
                response = self._openai.chat.completions.create(**kwargs)
            except openai.APIStatusError as exc:
                if llama_form is None or self._json_object_schema or not _rejects_json_schema(exc):
                    raise
                logger.info(
                    "LLM endpoint %s does not take response_format json_schema; sending the same "
                    "schema as llama.cpp's json_object form from now on.", self.spec.base_url,
                )
                self._json_object_schema = True
                kwargs["response_format"] = llama_form
                start = time.perf_counter()
                response = self._openai.chat.completions.create(**kwargs)
        except (openai.APIConnectionError, openai.APIStatusError) as exc:
            raise self._unavailable(exc) from None
        except (openai.OpenAIError, ValueError, TypeError) as exc:
            raise LLMReplyError(
                f"LLM endpoint {self.spec.base_url} sent a reply that is not a chat completion "
                f"({type(exc).__name__}): check that llm.base_url is an OpenAI-compatible /v1 endpoint."
            ) from None
        latency = time.perf_counter() - start
        try:
            text = response.choices[0].message.content or ""
        except (AttributeError, IndexError, TypeError):
            raise LLMReplyError(
                f"LLM endpoint {self.spec.base_url} sent a completion without a message: "
                "check that llm.base_url is an OpenAI-compatible /v1 endpoint."
            ) from None
        usage = getattr(response, "usage", None)
        reply = LLMReply(
            text=text,
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            latency_s=latency,
        )
        if self.cache is not None:
            record = dataclasses.asdict(reply)
            record.pop("cached")
            record["model"] = self.spec.model
            self.cache.put(key, record)
        return reply
