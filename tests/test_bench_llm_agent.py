"""`python -m benchmarks.llm_agent`: first ICRL proposals scored against the world spec.

The default tier drives the benchmark end to end against the scripted OpenAI-compatible server
(tests/fake_llm_server.py), so every number below follows from the scripted replies and the
household spec (14 actions, 14 distinct action objects). The real embedded LLM is opt-in (-m llm).
"""

from __future__ import annotations

import importlib.util
import json
import math

import pytest
from fake_llm_server import FakeLLMServer, dead_url

from benchmarks import llm_agent
from benchmarks.llm_agent import World, is_paraphrase, main, word_stem

SECRET = "sk-bench-SECRET-never-leak-7"


def run(tmp_path, *args: str) -> dict:
    main(["--llms", "none", "--out", str(tmp_path), *args])
    with open(tmp_path / "llm_agent.json", encoding="utf-8") as handle:
        return json.load(handle)


def cells(out: str, llm: str) -> list[str]:
    """The printed table's row of ``llm``, cell by cell."""
    for line in out.splitlines():
        row = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and row[0] == llm:
            return row
    raise AssertionError(f"no table row for {llm} in:\n{out}")


@pytest.mark.parametrize(("word", "stem"), [
    ("stirring", "stir"), ("stirrer", "stir"), ("stir", "stir"), ("sweeping", "sweep"), ("sweeper", "sweep"),
    ("painting", "paint"), ("brushes", "brush"), ("mopping", "mop"), ("hammering", "ham"), ("hammer", "ham"),
    ("poured", "pour"), ("cup", "cup"), ("bus", "bus"),  # never cut below 3 letters
])
def test_word_stem_table(word, stem):
    assert word_stem(word) == stem


def test_paraphrase_rule_table():
    actions = ["stirring", "painting walls", "hammering", "sweeping"]
    things = ["hammer", "broom", "sweeper"]
    table = {
        "stirrer": True,  # stir ~ stirring
        "painting brush": True,  # paint ~ painting walls
        "wall": True,  # a word of an action name, echoed
        "stir stick": True,
        "hammer": False,  # shares a stem with "hammering" but is a thing of the world
        "sweeper": False,  # a world thing's synonym
        "spoon": False,
        "paint roller": True,  # not a thing of *this* table's world
        "st": False,  # too short to compare
    }
    assert {text: is_paraphrase(text, actions, things) for text in table} == table


def test_household_action_objects_and_matching():
    world = World.load("household")
    assert len(world.action_names) == 14 and len(world.objects) == 14
    # synonyms count, group words and other objects do not; one object is counted once
    matched = world.matched(["Mug", "roller", "paint roller", "utensil", "bowl", "floor", "sweeper"])
    assert matched == {"cup": "Mug", "paint roller": "roller", "broom": "sweeper"}
    assert world.paraphrases(["stirrer", "hammer", "watering can", "water bottle", "rolling pin"]) == [
        "stirrer", "water bottle"]


def test_scripted_endpoint_end_to_end(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("A2O_BENCH_TEST_KEY", SECRET)
    replies = [
        "spoon\nwhisk\nstirrer\nfloor",  # seed 0: spoon, whisk are action objects; stirrer paraphrases
        "`id`\n<b>bold</b>\nwhisking",  # seed 1: nothing usable (markup, markup, an action name) ...
        "knife, cup, paint roller, roller",  # ... so the searcher re-asks; roller = paint roller's synonym
    ]
    with FakeLLMServer(replies, model="scripted-7b") as server:
        result = run(tmp_path, "--llm", server.url, "--samples", "2", "--api-key-env", "A2O_BENCH_TEST_KEY")
        requests = server.chat_requests
    out, err = capsys.readouterr()

    assert len(requests) == 3
    assert [r.body["seed"] for r in requests] == [0, 1, 1]  # seeds 0..K-1, the re-ask keeps its seed
    assert all(r.headers["authorization"] == f"Bearer {SECRET}" for r in requests)  # the key is used ...
    blob = out + err + (tmp_path / "llm_agent.json").read_text() + (tmp_path / "summary.md").read_text()
    assert SECRET not in blob  # ... and never shown or written
    prompt = requests[0].body["messages"][0]["content"]
    assert prompt == result["prompt"] and "- brushing teeth" in prompt and "A2O-Synth household" in prompt

    assert result["llms"] == [{"llm": server.url, "model": "scripted-7b", "kind": "endpoint",
                               "is_language_model": True, "base_url": server.url, "response_format": "text",
                               "prompt": prompt}]
    first, second = result["samples"]
    assert (first["llm"], first["model"], first["seed"]) == (server.url, "scripted-7b", 0)
    assert first["source"] == "llm" and first["classes"] == ["spoon", "whisk", "stirrer", "floor"]
    assert first["matched_objects"] == {"spoon": "spoon", "whisk": "whisk"}
    assert first["recall"] == pytest.approx(2 / 14) and first["paraphrases"] == ["stirrer"]
    assert (first["rejected"], first["valid_share"], first["tokens"], first["llm_calls"]) == ([], 1.0, 18, 1)
    assert second["source"] == "llm" and second["classes"] == ["knife", "cup", "paint roller", "roller"]
    assert second["recall"] == pytest.approx(3 / 14) and second["paraphrases"] == []
    assert [phrase for phrase, _ in second["rejected"]] == ["`id`", "<b>bold</b>", "whisking"]
    assert "action name" in second["rejected"][2][1]
    assert (second["accepted_phrases"], second["valid_share"]) == (4, pytest.approx(4 / 7))
    assert (second["llm_calls"], second["reasks"], second["tokens"]) == (2, 1, 36)  # 11 + 7 per call
    assert [r["accepted"] for r in second["replies"]] == [[], ["knife", "cup", "paint roller", "roller"]]
    assert first["latency_s"] > 0

    (summary,) = result["summary"]
    assert summary["n"] == 2 and summary["model"] == "scripted-7b"
    assert summary["recall_mean"] == pytest.approx(5 / 28)
    assert summary["recall_std"] == pytest.approx((1 / 14) / math.sqrt(2))
    assert summary["valid_share"] == pytest.approx(8 / 11)  # 8 accepted, 3 rejected over 3 replies
    assert summary["paraphrase_share"] == pytest.approx(1 / 8)
    assert (summary["fallback_share"], summary["tokens"]) == (0.0, 27.0)
    assert cells(out, server.url)[1:8] == ["scripted-7b", "2", "0.179 ± 0.051", "0.73", "0.12", "0.00", "27"]
    assert err.count("seed ") >= 2  # a progress line per sample, on stderr


def test_unusable_replies_are_invalid_and_the_fallback_scores_nothing(tmp_path, capsys):
    # three calls (the first ask and two re-asks), none usable: the searcher's fallback proposes
    replies = ["", "stirring\nwhisking", "`rm -rf /`"]
    with FakeLLMServer(replies) as server:
        result = run(tmp_path, "--llm", server.url, "--samples", "1", "--llm-model", "chosen-model")
        assert [r.body["model"] for r in server.chat_requests] == ["chosen-model"] * 3
    (sample,) = result["samples"]
    assert sample["source"] == "fallback:unusable" and sample["classes"]  # the fallback's set ...
    assert sample["llm_classes"] == [] and sample["recall"] == 0.0  # ... is not the LLM's
    assert len(sample["rejected"]) == 3 and sample["valid_share"] == 0.0
    (summary,) = result["summary"]
    assert (summary["valid_share"], summary["paraphrase_share"], summary["fallback_share"]) == (0.0, None, 1.0)
    assert summary["model"] == "chosen-model"
    assert cells(capsys.readouterr().out, server.url)[3:7] == ["0.000 ± 0.000", "0.00", "n/a", "1.00"]


def test_fake_is_labelled_not_a_language_model_and_a_dead_endpoint_is_skipped(tmp_path, capsys):
    url = dead_url()
    result = run(tmp_path, "--llm", "fake", "--llm", url, "--samples", "2", "--timeout-s", "2")
    out = capsys.readouterr().out
    table_rows = [line for line in out.splitlines() if line.startswith("| ") and "recall" not in line]
    assert len(table_rows) == 1 and "NOT a language model" in table_rows[0]
    assert "it is NOT a language model" in out and f"skipped {url}" in out
    assert [s["is_language_model"] for s in result["samples"]] == [False, False]
    assert result["llms"][0]["is_language_model"] is False and result["llms"][0]["base_url"] is None
    assert [s["tokens"] for s in result["samples"]] == [0, 0]
    assert result["skipped"][0]["llm"] == url and "unreachable" in result["skipped"][0]["reason"]


def test_embedded_llm_missing_or_unknown_stops_with_the_fix(tmp_path, monkeypatch):
    with pytest.raises(SystemExit, match="valid: 'local', 'cached', 'none'"):
        main(["--llms", "gpt-17", "--out", str(tmp_path)])
    monkeypatch.setattr(llm_agent, "_llama_cpp_installed", lambda: False)
    with pytest.raises(SystemExit, match=r"make install-llm.*--llms none"):
        main(["--llms", "qwen2.5-1.5b-instruct", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="no LLM to score"):
        main(["--llms", "none", "--out", str(tmp_path)])


def test_public_url_drops_credentials():
    assert llm_agent.public_url("https://user:pw@api.example.com:8443/v1?key=x") == "https://api.example.com:8443/v1"


@pytest.mark.llm
def test_embedded_model_one_sample(tmp_path, capsys):
    """The cached embedded model, one first proposal (about a minute on 2 cores)."""
    from searchers.models import MODELS, model_cache_dir

    name = "qwen2.5-1.5b-instruct"
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (make install-llm)")
    if not (model_cache_dir() / MODELS[name].filename).exists():
        pytest.skip(f"{name} is not in the model cache")
    main(["--llms", name, "--samples", "1", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "llm_agent.json").read_text())
    (sample,) = result["samples"]
    assert (sample["llm"], sample["model"], sample["kind"]) == ("embedded", name, "embedded")
    assert sample["llm_calls"] >= 1 and sample["tokens"] > 0 and sample["replies"][0]["text"]
    assert cells(capsys.readouterr().out, "embedded")[1:3] == [name, "1"]


def test_proposal_audit_scores_classes_and_the_replys_own_uses(tmp_path):
    """The audit of a comparison's replay cache: a reply that knows the objects in `uses` but
    proposes category words scores 0 in classes and > 0 in uses, and is counted as skipping them."""
    import json

    from benchmarks.llm_agent import World
    from benchmarks.proposal_audit import audit

    world = World.load("household")
    knows = {"uses": [{"action": world.action_names[0], "object": "whisk"},
                      {"action": world.action_names[1], "object": "hammer"}], "classes": ["tools", "utensils"]}
    proposes = {"uses": [{"action": world.action_names[0], "object": "whisk"}], "classes": ["whisk", "hammer"]}
    lines = [json.dumps({"text": json.dumps(knows)}), json.dumps({"text": json.dumps(proposes)}), '{"text": "tor']
    (tmp_path / "icrl_seed0.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "static_seed1.jsonl").write_text(json.dumps({"text": "whisk\nrug"}) + "\n")
    rows = {r["method"]: r for r in audit(str(tmp_path), world)}
    icrl, static = rows["icrl"], rows["static"]
    n = len(world.objects)
    assert icrl["replies"] == 2 and icrl["seeds"] == [0]  # the torn line is skipped
    assert abs(icrl["recall_classes"] - (0 + 2 / n) / 2) < 1e-9
    assert abs(icrl["recall_uses"] - (2 / n + 1 / n) / 2) < 1e-9
    assert icrl["unknown_share"] == 2 / 4 and icrl["no_own_uses_share"] == 0.5
    assert static["recall_uses"] is None and static["recall_classes"] == 1 / n
