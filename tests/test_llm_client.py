"""LLMClient against the scripted OpenAI-compatible fake server."""

from __future__ import annotations

import json
import logging
import pickle

import pytest
from fake_llm_server import FakeLLMServer, Reply, dead_url

from a2o.errors import LLMReplyError, LLMUnavailableError
from searchers.llm_client import LLMClient, LLMClientSpec, ReplayCache, classes_response_format

SECRET = "sk-test-SECRET-never-leak-42"
MESSAGES = [{"role": "user", "content": "Name objects."}]


@pytest.fixture
def server():
    srv = FakeLLMServer()
    yield srv
    srv.stop()


def spec_for(url: str, tmp_path=None, **kw) -> LLMClientSpec:
    cache = str(tmp_path / "replay.jsonl") if tmp_path is not None else None
    return LLMClientSpec(base_url=url, api_key_env="A2O_TEST_KEY", max_retries=0, timeout_s=5,
                         cache_path=cache, **kw)


def test_complete_returns_text_tokens_and_latency(server, monkeypatch):
    monkeypatch.setenv("A2O_TEST_KEY", SECRET)
    server.script = ["ball\nnet"]
    reply = spec_for(server.url).build().complete(MESSAGES, seed=3)
    assert reply.text == "ball\nnet"
    assert (reply.prompt_tokens, reply.completion_tokens) == (11, 7)
    assert reply.latency_s > 0 and not reply.cached
    request = server.chat_requests[-1]
    assert request.body["model"] == "fake-model"  # '' resolved through /v1/models
    assert request.body["seed"] == 3 and request.body["messages"] == MESSAGES
    assert request.headers["authorization"] == f"Bearer {SECRET}"  # key read from the NAMED env var


def test_missing_key_env_sends_placeholder(server, monkeypatch):
    monkeypatch.delenv("A2O_TEST_KEY", raising=False)
    spec_for(server.url).build().complete(MESSAGES)
    assert server.chat_requests[-1].headers["authorization"] == "Bearer none"


def test_key_not_in_pickle_repr_or_logs(server, monkeypatch, caplog, tmp_path):
    monkeypatch.setenv("A2O_TEST_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    client = spec_for(server.url, tmp_path).build()
    client.complete(MESSAGES)
    blob = pickle.dumps(client)
    assert SECRET.encode() not in blob and SECRET not in repr(client)
    assert SECRET not in caplog.text
    assert SECRET not in (tmp_path / "replay.jsonl").read_text()
    clone = pickle.loads(blob)  # rebuilds from the spec, re-reading the env var
    clone.complete([{"role": "user", "content": "again"}])
    assert server.chat_requests[-1].headers["authorization"] == f"Bearer {SECRET}"


def test_replay_cache_replays_without_server(tmp_path):
    srv = FakeLLMServer(["hand\nfloor"])
    first = spec_for(srv.url, tmp_path, model="m").build().complete(MESSAGES, seed=1)
    srv.stop()
    again = spec_for(srv.url, tmp_path, model="m").build().complete(MESSAGES, seed=1)
    assert again.cached and again.text == first.text == "hand\nfloor"
    assert again.prompt_tokens == first.prompt_tokens
    with pytest.raises(LLMUnavailableError):  # another seed is another key: a miss
        spec_for(srv.url, tmp_path, model="m").build().complete(MESSAGES, seed=2)


def test_replay_cache_key_and_corrupt_lines(tmp_path, caplog):
    k1 = ReplayCache.key("m", MESSAGES, 0.7, 0)
    assert k1 == ReplayCache.key("m", [dict(MESSAGES[0])], 0.7, 0)
    assert k1 != ReplayCache.key("m", MESSAGES, 0.7, 1) != ReplayCache.key("m2", MESSAGES, 0.7, 0)
    assert k1 != ReplayCache.key("m", MESSAGES, 0.7, 0, classes_response_format(4))
    path = tmp_path / "c.jsonl"
    cache = ReplayCache(str(path))
    cache.put(k1, {"text": "x", "prompt_tokens": 1, "completion_tokens": 1, "latency_s": 0.1})
    with open(path, "a") as fh:
        fh.write('{"key": "half-writ')
    fresh = ReplayCache(str(path))
    assert fresh.get(k1)["text"] == "x" and len(fresh) == 1
    assert "corrupt" in caplog.text


def test_unreachable_endpoint_names_the_fix():
    with pytest.raises(LLMUnavailableError, match=r"llm\.base_url.*a2o llm serve"):
        spec_for(dead_url(), model="m").build().complete(MESSAGES)


def test_http_errors(server):
    server.script = [Reply(status=500), Reply(status=401)]
    client = spec_for(server.url, model="m").build()
    with pytest.raises(LLMUnavailableError, match="HTTP 500"):
        client.complete(MESSAGES)
    with pytest.raises(LLMUnavailableError, match="A2O_TEST_KEY"):
        client.complete(MESSAGES)


def test_malformed_body_is_a_reply_error(server):
    server.script = [Reply(raw="this is not json")]
    with pytest.raises(LLMReplyError, match="OpenAI-compatible"):
        spec_for(server.url, model="m").build().complete(MESSAGES)


def test_response_format_is_sent(server):
    server.script = ['{"classes": ["ball"]}']
    fmt = classes_response_format(5)
    reply = spec_for(server.url, model="m").build().complete(MESSAGES, response_format=fmt)
    body = server.chat_requests[-1].body
    assert body["response_format"]["type"] == "json_schema"
    schema = body["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["classes"]["maxItems"] == 5
    assert json.loads(reply.text) == {"classes": ["ball"]}


def test_from_config_and_local_base_url(tmp_path):
    from a2o.config import LLMConfig

    spec = LLMClientSpec.from_config(LLMConfig(base_url="http://h:1/v1", replay_cache=False),
                                     cache_path=str(tmp_path / "r.jsonl"))
    assert spec.cache_path is None and spec.api_key_env == "OPENAI_API_KEY"
    with pytest.raises(LLMUnavailableError, match="a2o llm serve"):
        LLMClientSpec.from_config(LLMConfig())
    assert isinstance(spec.build(), LLMClient)


def test_a_restored_spec_talks_to_the_current_runs_endpoint():
    from searchers.llm_client import use_endpoint

    first = FakeLLMServer([], default="ball")
    second = FakeLLMServer([], default="cup")
    try:
        pickled = pickle.dumps(LLMClientSpec(base_url=first.url, temperature=0.3, seed=5))
        first.stop()  # the first run's server is gone (an embedded server on a port that no longer exists)
        restored = pickle.loads(pickled)
        current = LLMClientSpec(base_url=second.url, api_key_env="OTHER_KEY", temperature=0.9)
        with use_endpoint(current):
            resolved = restored.resolved()
            reply = restored.build().complete([{"role": "user", "content": "objects?"}])
        assert resolved.base_url == second.url and resolved.api_key_env == "OTHER_KEY"
        assert resolved.temperature == 0.3 and resolved.seed == 5  # the search's sampling stays its own
        assert reply.text == "cup" and len(second.chat_requests) == 1
        assert restored.resolved() is restored  # outside the block, nothing is replaced
    finally:
        second.stop()
