"""Searchers: one shared contract every searcher passes, then ICRL-specific behaviour.

LLM searchers talk to the scripted OpenAI-compatible fake server (tests/fake_llm_server.py); its
default reply is a deterministic function of the request, so "same seed + same replies -> same
suggestions" can be checked end to end.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import pickle
import random
import re
import time

import pytest
from fake_llm_server import FakeLLMServer, Reply, dead_url

from a2o.records import TrialRecord
from searchers import LLM_SEARCHERS, SEARCHER_CLASSES, create_searcher
from searchers.icrl import ICRLSearcher
from searchers.llm_client import LLMClientSpec
from searchers.parsing import parse_class_reply

ACTIONS = ["serve", "volley", "smash"]
WORDS = ["ball", "net", "racket", "hand", "foot", "floor", "court", "grass", "cup", "table",
         "door", "bag", "shoe", "towel", "chair", "book"]
SECRET = "sk-test-SECRET-never-leak-42"
SAFE = re.compile(r"^[a-z0-9][a-z0-9 '\-]{0,39}$")
ALL = sorted(SEARCHER_CLASSES)


def responder(body: dict) -> str:
    """A deterministic 'LLM': the reply depends only on the request."""
    content = body["messages"][-1]["content"]
    if "List every concrete" in content:  # the prompt-pool enumeration
        return "\n".join(WORDS)
    digest = hashlib.sha256((content + str(body.get("seed"))).encode()).hexdigest()
    return "\n".join(random.Random(digest).sample(WORDS, 3))


@pytest.fixture
def server():
    srv = FakeLLMServer(default=responder)
    yield srv
    srv.stop()


def spec(url: str, cache_path=None) -> LLMClientSpec:
    return LLMClientSpec(base_url=url, model="fake-model", api_key_env="A2O_TEST_KEY",
                         max_retries=0, timeout_s=5, cache_path=cache_path)


def make(name: str, url: str = "", *, seed: int = 0, num_trials: int = 4, **kw):
    common = {"max_classes": 5, "num_trials": num_trials, "seed": seed}
    if name not in LLM_SEARCHERS:
        return create_searcher(name, vocabulary=WORDS, **common, **kw)
    if name == "ood":
        kw.setdefault("ood_history", [{"classes": ["ball", "hoop"], "val_accuracy": 0.4,
                                       "classwise_accuracy": {"dunk": 0.5}}])
    return create_searcher(name, llm=kw.pop("llm", None) or spec(url), action_names=ACTIONS, **common, **kw)


def suggest(searcher, trial_id: str, timeout: float = 10.0):
    """Poll like Tune does until the searcher has a suggestion (it returns None meanwhile)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        config = searcher.suggest(trial_id)
        if config is not None:
            return config
        time.sleep(0.005)
    raise AssertionError(f"no suggestion for {trial_id} within {timeout}s")


def result(acc: float, epoch: int = 1) -> dict:
    return {"val_accuracy": acc, "classwise_accuracy": {"serve": acc, "volley": acc / 2},
            "loss": 1.0 - acc if math.isfinite(acc) else acc, "epoch": epoch}


def run_trials(searcher, ids, accs) -> list[list[str]]:
    out = []
    for trial_id, acc in zip(ids, accs, strict=True):
        config = suggest(searcher, trial_id)
        out.append(config["classes"])
        searcher.on_trial_result(trial_id, result(acc))
        searcher.on_trial_complete(trial_id, result(acc))
    return out


# ------------------------------------------------------------------ the shared contract


@pytest.mark.parametrize("name", ALL)
def test_contract_suggest_then_complete(name, server):
    searcher = make(name, server.url)
    config = suggest(searcher, "t1")
    assert 1 <= len(config["classes"]) <= 5
    assert all(SAFE.match(c) for c in config["classes"]) and len(set(config["classes"])) == len(config["classes"])
    assert not set(config["classes"]) & set(ACTIONS)
    searcher.on_trial_result("t1", result(0.5))
    searcher.on_trial_complete("t1", result(0.5))
    assert searcher.history[-1].val_accuracy == 0.5 and searcher.history[-1].status == "ok"
    assert isinstance(searcher.history[-1], TrialRecord) and list(searcher.history[-1].class_set) == config["classes"]
    assert suggest(searcher, "t2")["classes"]


@pytest.mark.parametrize("name", ALL)
def test_contract_errored_trial(name, server):
    searcher = make(name, server.url)
    suggest(searcher, "t1")
    searcher.on_trial_complete("t1", result=None, error=True)
    assert searcher.history[-1].status == "error" and searcher.history[-1].val_accuracy is None
    assert suggest(searcher, "t2")["classes"]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_contract_non_finite_metrics(name, bad, server):
    searcher = make(name, server.url)
    suggest(searcher, "t1")
    searcher.on_trial_result("t1", result(bad))
    searcher.on_trial_complete("t1", result(bad))
    assert searcher.history[-1].status == "invalid" and searcher.history[-1].val_accuracy is None
    assert searcher.best() is None  # never "best"
    assert suggest(searcher, "t2")["classes"]


@pytest.mark.parametrize("name", ALL)
def test_contract_save_restore_into_fresh_instance(name, server, tmp_path, monkeypatch):
    monkeypatch.setenv("A2O_TEST_KEY", SECRET)
    original = make(name, server.url, num_trials=4)
    run_trials(original, ["a", "b"], [0.3, 0.6])
    pending = suggest(original, "c")  # one trial still running at save time
    path = tmp_path / "searcher.pkl"
    original.save(str(path))
    assert SECRET.encode() not in path.read_bytes()

    fresh = make(name, server.url, num_trials=4)
    fresh.restore(str(path))
    for searcher in (original, fresh):
        searcher.on_trial_complete("c", result(0.4))
    assert fresh.history == original.history and len(fresh.history) == 3
    assert suggest(fresh, "d") == suggest(original, "d")  # continues where it left off
    assert pending["classes"]
    assert fresh.suggest("e") == original.suggest("e") == "FINISHED"


@pytest.mark.parametrize("name", ALL)
def test_contract_same_seed_same_suggestions(name, server):
    ids, accs = ["a", "b", "c"], [0.2, 0.7, 0.5]
    first = run_trials(make(name, server.url, seed=3), ids, accs)
    second = run_trials(make(name, server.url, seed=3), ids, accs)
    assert first == second


@pytest.mark.parametrize("name", ALL)
def test_contract_finished_when_budget_spent(name, server):
    searcher = make(name, server.url, num_trials=2)
    run_trials(searcher, ["a", "b"], [0.1, 0.2])
    assert searcher.suggest("c") == "FINISHED"


def test_searcher_from_config(server, tmp_path):
    from a2o.config import LLMConfig, SearchConfig
    from searchers import searcher_from_config

    random_searcher = searcher_from_config(SearchConfig(searcher="random", vocabulary=WORDS), LLMConfig(),
                                           action_names=ACTIONS)
    assert random_searcher.suggest("a")["classes"]
    icrl = searcher_from_config(SearchConfig(searcher="icrl", num_trials=3, max_classes=4),
                                LLMConfig(base_url=server.url, model="m", max_retries=0),
                                action_names=ACTIONS, replay_cache_path=str(tmp_path / "r.jsonl"),
                                epochs_per_trial=2)
    assert isinstance(icrl, ICRLSearcher) and icrl.num_trials == 3 and icrl.epochs_per_trial == 2
    assert 1 <= len(suggest(icrl, "a")["classes"]) <= 4 and (tmp_path / "r.jsonl").exists()


def test_create_searcher_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match="valid names.*icrl.*optuna"):
        create_searcher("bayes")


# ------------------------------------------------------------------ sanitiser


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("- Ball\n* Tennis Racket\n• net", ["ball", "tennis racket", "net"]),
        ("- Ball\n+ Tennis Racket\n• net", ["ball", "tennis racket", "net"]),
        ("1. hand\n2) foot\n(3) floor\n10. court", ["hand", "foot", "floor", "court"]),
        ("BALL\nBall\nball.", ["ball"]),
        ("one two three four five\nred tennis ball", ["red tennis ball"]),
        ("../../etc/passwd\nball; rm -rf /\n$(whoami)", ["ball"]),
        ("x" * 300 + "\n" + "a" * 49 + "\nnet", ["net"]),  # over MAX_RAW_CHARS, over MAX_CLASS_CHARS
        ("Café Table\n\u2014 naïve cup\n\U0001F3BE emoji", ["café table", "naïve cup"]),  # letters kept, emoji not
        ("serve\nSmash\nvolley\nball", ["ball"]),
        ("Here are the classes:\n**racket** (the thing held)\n`net`", ["racket"]),  # code is not unwrapped
        ('```json\n{"classes": ["Ball", "net", "serve"]}\n```', ["ball", "net"]),
        ("ball, net; hand", ["ball", "net", "hand"]),
        ("the ball\na net", ["ball", "net"]),
    ],
)
def test_sanitiser(reply, expected):
    assert list(parse_class_reply(reply, action_names=ACTIONS, max_classes=10)) == expected


def test_sanitiser_truncates_to_c_max():
    assert list(parse_class_reply("\n".join(WORDS), max_classes=3)) == WORDS[:3]


# ------------------------------------------------------------------ ICRL prompt and behaviour


def test_prompt_shows_history_errors_early_stops_and_actions(server):
    searcher = make("icrl", server.url, num_trials=6, epochs_per_trial=3)
    suggest(searcher, "ok")
    searcher.on_trial_complete("ok", result(0.5, epoch=3))
    suggest(searcher, "err")
    searcher.on_trial_result("err", result(0.2))
    searcher.on_trial_complete("err", None, error=True)
    suggest(searcher, "stopped")
    searcher.on_trial_result("stopped", result(0.25, epoch=1))
    searcher.on_trial_complete("stopped", result(0.25, epoch=1))
    suggest(searcher, "nan")
    searcher.on_trial_complete("nan", result(float("nan")))
    suggest(searcher, "running")
    prompt = server.chat_requests[-1].body["messages"][0]["content"]
    for action in ACTIONS:
        assert f"- {action}" in prompt
    assert "overall accuracy: 0.500" in prompt and "serve: 0.500, volley: 0.250" in prompt
    assert "ERRORED" in prompt and "INVALID" in prompt
    assert "STOPPED EARLY by the scheduler at epoch 1 of 3" in prompt
    assert "Iteration 4" in prompt and "Aim for about 5 classes" in prompt and "more than 5" in prompt
    assert "one object class per line" in prompt
    assert [r.status for r in searcher.history] == ["ok", "error", "early_stopped", "invalid"]


def test_confused_pairs_are_the_largest_off_diagonal_shares_of_a_true_action():
    from searchers.prompting import confused_pairs

    cs = parse_class_reply("cup", max_classes=5)
    matrix = [[6, 4, 0],   # serve: 40% mistaken for volley
              [1, 8, 1],   # volley: 10% smash, 10% serve
              [0, 7, 3]]   # smash: 70% mistaken for volley
    record = TrialRecord.from_result(cs, {"val_accuracy": 0.5, "confusion": matrix, "confusion_labels": ACTIONS})
    assert confused_pairs(record) == [("smash", "volley", 0.7), ("serve", "volley", 0.4), ("volley", "serve", 0.1)]
    assert confused_pairs(record, top=1) == [("smash", "volley", 0.7)]
    assert TrialRecord.from_dict(record.to_dict()) == record  # labels survive results.json
    no_labels = TrialRecord.from_result(cs, {"val_accuracy": 0.5, "confusion": matrix})  # an older row
    assert confused_pairs(no_labels) == []
    wrong_size = TrialRecord.from_result(cs, {"val_accuracy": 0.5, "confusion": matrix, "confusion_labels": ACTIONS[:2]})
    assert confused_pairs(wrong_size) == []
    perfect = TrialRecord.from_result(cs, {"val_accuracy": 1.0, "confusion": [[2, 0], [0, 2]],
                                           "confusion_labels": ["a", "b"]})
    assert confused_pairs(perfect) == []


@pytest.mark.parametrize("prompt", ["paper", "small", "off"])
def test_both_prompts_name_the_three_most_confused_pairs(server, prompt):
    searcher = make("icrl", server.url, prompt="small" if prompt == "off" else prompt, confusion_feedback=prompt != "off")
    suggest(searcher, "a")
    searcher.on_trial_complete("a", {**result(0.5), "confusion": [[6, 4, 0], [1, 8, 1], [0, 7, 3]],
                                     "confusion_labels": ACTIONS})
    suggest(searcher, "b")
    text = server.chat_requests[-1].body["messages"][0]["content"]
    assert (("most confused: smash mistaken for volley 70%, serve mistaken for volley 40%, "
             "volley mistaken for serve 10%") in text) is (prompt != "off")
    assert "overall accuracy: 0.500" in text and "serve: 0.500, volley: 0.250" in text


@pytest.mark.parametrize("feedback", [False, True])
def test_detection_feedback_names_the_classes_the_detector_never_found(server, feedback):
    searcher = make("icrl", server.url, prompt="small", detection_feedback=feedback)
    config = suggest(searcher, "a")
    coverage = {text: (0.0 if i == 0 else 0.9) for i, text in enumerate(config["classes"])}
    searcher.on_trial_complete("a", {**result(0.5), "class_coverage": coverage})
    assert searcher.history[0].class_coverage == coverage
    assert TrialRecord.from_dict(searcher.history[0].to_dict()).class_coverage == coverage
    suggest(searcher, "b")
    text = server.chat_requests[-1].body["messages"][0]["content"]
    line = f"the detector found these in no clip (dead inputs, replace them): {config['classes'][0]}"
    assert (line in text) is feedback


def test_pending_proposals_are_shown(server):
    searcher = make("icrl", server.url)
    first = suggest(searcher, "a")  # still running
    suggest(searcher, "b")
    prompt = server.chat_requests[-1].body["messages"][0]["content"]
    assert "Already running" in prompt and ", ".join(first["classes"]) in prompt


def test_reask_on_empty_and_duplicate_then_counted_fallback(server, caplog):
    server.script = ["", "../../etc\nSERVE", "ball\nnet"]
    searcher = make("icrl", server.url, initial_classes=["ball", "net"], max_reasks=2,
                    vocabulary=["glove"])
    assert suggest(searcher, "a") == {"classes": ["ball", "net"], "proposal_source": "initial"}
    searcher.on_trial_complete("a", result(0.6))
    with caplog.at_level(logging.WARNING, logger="searchers"):
        config = suggest(searcher, "b")
    assert config["proposal_source"] == "fallback:unusable"
    assert frozenset(config["classes"]) != frozenset(["ball", "net"])
    assert searcher.stats["reasks"] == 2 and searcher.stats["fallbacks"] == 1
    assert searcher.stats["llm_errors"] == 0 and searcher.stats["llm_calls"] == 3
    assert "fallback" in caplog.text
    messages = server.chat_requests[-1].body["messages"]
    assert len(messages) == 5 and "no usable object class" in messages[2]["content"]
    assert "already tried" not in messages[2]["content"]


def test_duplicate_reply_gets_reask_with_reason(server):
    server.script = ["ball\nnet", "racket"]
    searcher = make("icrl", server.url, initial_classes=["net", "ball"])
    suggest(searcher, "a")
    assert suggest(searcher, "b")["classes"] == ["racket"]
    last = server.chat_requests[-1].body["messages"]
    assert "[ball, net] was already tried" in last[-1]["content"]
    assert searcher.stats["reasks"] == 1 and searcher.stats["fallbacks"] == 0


def test_unreachable_llm_falls_back_and_never_leaks_the_key(monkeypatch, caplog, tmp_path):
    monkeypatch.setenv("A2O_TEST_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    searcher = make("icrl", dead_url(), initial_classes=["ball", "net"], vocabulary=["hand"])
    configs = [suggest(searcher, "a")]
    searcher.on_trial_complete("a", result(0.5))
    configs.append(suggest(searcher, "b"))
    configs.append(suggest(searcher, "c"))
    assert [c["proposal_source"] for c in configs[1:]] == ["fallback:unreachable"] * 2
    assert searcher.stats["llm_errors"] == 2 and searcher.stats["fallbacks"] == 2
    assert len({frozenset(c["classes"]) for c in configs}) == 3  # fallback edits are new sets
    assert "a2o llm serve" in caplog.text
    assert SECRET not in caplog.text and SECRET not in repr(configs)
    assert SECRET.encode() not in pickle.dumps(searcher)
    searcher.save(str(tmp_path / "s.pkl"))
    assert SECRET.encode() not in (tmp_path / "s.pkl").read_bytes()


def test_suggest_does_not_block_on_a_slow_llm(server):
    server.script = [Reply(text="ball\nnet", delay_s=1.0)]
    searcher = make("icrl", server.url)
    start = time.monotonic()
    assert searcher.suggest("a") is None
    assert searcher.suggest("a") is None
    assert time.monotonic() - start < 0.3
    assert suggest(searcher, "a")["classes"] == ["ball", "net"]
    assert searcher.stats["per_suggestion"][0]["latency_s"] >= 0.9
    assert searcher.stats["prompt_tokens"] == 11 and searcher.stats["completion_tokens"] == 7


def test_json_schema_mode(server):
    server.script = ['{"classes": ["Ball", "smash", "net"]}']
    searcher = make("icrl", server.url, response_format="json_schema")
    assert suggest(searcher, "a")["classes"] == ["ball", "net"]
    body = server.chat_requests[-1].body
    assert body["response_format"]["type"] == "json_schema"
    assert '{"classes"' in body["messages"][0]["content"]


def test_replay_cache_reproduces_a_run_without_the_llm(server, tmp_path):
    cache = str(tmp_path / "replay.jsonl")
    ids, accs = ["a", "b", "c"], [0.2, 0.7, 0.5]
    first = run_trials(make("icrl", llm=spec(server.url, cache)), ids, accs)
    replayed = make("icrl", llm=spec(dead_url(), cache))
    assert run_trials(replayed, ids, accs) == first
    assert replayed.stats["cache_hits"] == 3 and replayed.stats["llm_errors"] == 0


def test_prompt_template_override(server, tmp_path):
    template = tmp_path / "mine.txt"
    template.write_text("Actions:\n$action_names\nHistory:\n$history\n$format_instructions\n")
    searcher = make("icrl", server.url, prompt_template=str(template))
    suggest(searcher, "a")
    prompt = server.chat_requests[-1].body["messages"][0]["content"]
    assert prompt.startswith("Actions:\n- serve") and "No iterations yet" in prompt


def test_static_prompt_hides_history(server):
    searcher = make("static", server.url)
    run_trials(searcher, ["a"], [0.9])
    suggest(searcher, "b")
    prompt = server.chat_requests[-1].body["messages"][0]["content"]
    assert "0.900" not in prompt and "History is not shown" in prompt
    assert len({r.body["seed"] for r in server.chat_requests}) == 2  # independent samples


def test_pool_enumerates_once_then_combines_from_the_pool(server):
    server.script = ["ball\nnet\nracket\nserve", "ball\nhoop\nnet", "racket"]
    searcher = make("pool", server.url)
    assert suggest(searcher, "a")["classes"] == ["ball", "net"]  # "hoop" is not in the pool
    assert searcher.pool == ["ball", "net", "racket"]
    assert suggest(searcher, "b")["classes"] == ["racket"]
    prompts = [r.body["messages"][0]["content"] for r in server.chat_requests]
    assert "List every concrete" in prompts[0] and "Candidate pool" in prompts[1]
    assert sum("List every concrete" in p for p in prompts) == 1


def test_ood_history_is_injected_and_labelled(server, tmp_path):
    import json

    path = tmp_path / "results.json"
    path.write_text(json.dumps({"trials": [{"config": {"classes": ["hoop", "ball"]},
                                            "metrics": {"val_accuracy": 0.77}}]}))
    searcher = make("ood", server.url, ood_history=str(path), ood_label="Basketball-8")
    suggest(searcher, "a")
    prompt = server.chat_requests[-1].body["messages"][0]["content"]
    assert "earlier search on Basketball-8" in prompt and "hoop, ball" in prompt and "0.770" in prompt
    assert "This task so far:" in prompt


def test_hybrid_adds_seeded_lr_and_weight_decay(server):
    searcher = make("hybrid", server.url, lr_range=(1e-5, 1e-3), weight_decay_range=(1e-3, 0.1))
    config = suggest(searcher, "a")
    assert 1e-5 <= config["lr"] <= 1e-3 and 1e-3 <= config["weight_decay"] <= 0.1
    searcher.on_trial_complete("a", result(0.4))
    suggest(searcher, "b")
    assert "hyperparameters: lr=" in server.chat_requests[-1].body["messages"][0]["content"]


# ------------------------------------------------------------------ end to end with Ray Tune

def _stand_in_trainable(relevant: set):
    """Accuracy = share of a hidden relevant set the classes cover, growing per epoch."""

    def trainable(config):  # nested: pickled by value, so Ray workers need not import this file
        from ray import tune

        covered = len(relevant & set(config["classes"])) / len(relevant)
        for epoch in (1, 2, 3):
            acc = covered * epoch / 3
            tune.report({"val_accuracy": acc, "classwise_accuracy": {"serve": acc, "volley": acc / 2},
                         "loss": 1.0 - acc, "epoch": epoch, "classes": list(config["classes"])})

    return trainable


def test_tuner_end_to_end_with_asha(ray_local, tmp_path):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    relevant = {"ball", "net", "racket", "court"}
    replies = ["hand\nfoot", "ball\nfloor", "ball\nnet\nracket", "ball\nnet\nracket\ncourt", "grass"]
    with FakeLLMServer(replies) as srv:
        searcher = ICRLSearcher(spec(srv.url, str(tmp_path / "replay.jsonl")), ACTIONS, max_classes=6,
                                num_trials=5, epochs_per_trial=3, seed=0)
        tuner = tune.Tuner(
            _stand_in_trainable(relevant),
            tune_config=tune.TuneConfig(
                search_alg=searcher, num_samples=5, metric="val_accuracy", mode="max",
                max_concurrent_trials=2, reuse_actors=True,
                scheduler=ASHAScheduler(time_attr="epoch", max_t=3, grace_period=1, reduction_factor=2),
            ),
            run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), name="e2e", verbose=0),
        )
        results = tuner.fit()
        prompts = [r.body["messages"][0]["content"] for r in srv.chat_requests]
    assert len(results) == 5 and not results.errors
    sources = {r.config["proposal_source"] for r in results}
    assert sources == {"llm"}
    best = results.get_best_result(metric="val_accuracy", mode="max", scope="all")
    assert set(best.config["classes"]) == relevant and best.metrics["val_accuracy"] == pytest.approx(1.0)
    assert "Iteration 1" in prompts[-1]  # Tune fed completed trials back into the prompt
    assert len(searcher.history) == 5
    statuses = [r.status for r in searcher.history]
    assert set(statuses) <= {"ok", "early_stopped"} and "early_stopped" in statuses  # ASHA stopped some


def test_pickled_searcher_rebuilds_its_client(server, monkeypatch):
    """What Tuner.restore does: unpickle the searcher from the experiment state and go on."""
    monkeypatch.setenv("A2O_TEST_KEY", SECRET)
    searcher = make("icrl", server.url)
    run_trials(searcher, ["a"], [0.5])
    blob = pickle.dumps(searcher)
    assert SECRET.encode() not in blob
    clone = pickle.loads(blob)
    assert suggest(clone, "b") == suggest(searcher, "b")
    assert server.chat_requests[-1].headers["authorization"] == f"Bearer {SECRET}"


def test_small_prompt_with_structured_output_asks_for_action_object_pairs_first():
    actions = ["stirring", "sweeping", "chopping"]
    small = ICRLSearcher(llm=None, action_names=actions, max_classes=4, prompt="small", response_format="json_schema")
    request = small.request()
    schema = request.response_format["json_schema"]["schema"]
    assert schema["required"] == ["uses", "classes"]
    assert schema["properties"]["uses"]["maxItems"] == 3 and schema["properties"]["classes"]["maxItems"] == 4
    prompt = small.build_prompt()
    assert request.messages == ({"role": "user", "content": prompt},)
    assert '"uses"' in prompt and "never the action itself" in prompt
    # The example is from another domain: no household object is named (or forbidden) in it.
    for word in ("knife", "sponge", "spoon", "broom"):
        assert word not in prompt
    reply = ('{"uses": [{"action": "stirring", "object": "spoon"}, {"action": "sweeping", "object": "broom"}], '
             '"classes": ["spoon", "broom", "stirring"]}')
    assert list(request.parse(reply).class_set) == ["spoon", "broom"]  # action names dropped
    paper = ICRLSearcher(llm=None, action_names=actions, max_classes=4, prompt="paper", response_format="json_schema")
    assert paper.request().response_format["json_schema"]["schema"]["required"] == ["classes"]
    text_small = ICRLSearcher(llm=None, action_names=actions, max_classes=4, prompt="small", response_format="text")
    assert text_small.request().response_format is None and '"uses"' not in text_small.build_prompt()


def test_fill_from_uses_completes_a_set_of_category_words_with_the_replys_own_objects(server):
    """search.fill_from_uses: the 1.5B model named the objects per action, then proposed "tools".
    The set is filled up to the target count with its own objects, each checked by the class rule
    (an action name, a path or a duplicate never gets in); off, the reply's classes stand alone."""
    from a2o.config import SearchConfig
    from searchers.parsing import parse_reply_filled

    actions = ["stirring", "sweeping", "chopping"]
    reply = json.dumps({"uses": [{"action": "stirring", "object": "Spoon"}, {"action": "sweeping", "object": "../etc"},
                                 {"action": "chopping", "object": "chopping"}, {"action": "chopping", "object": "knife"},
                                 {"action": "sweeping", "object": "tools"}, {"action": "sweeping", "object": "broom"}],
                        "classes": ["tools", "utensils"]})
    filled = parse_reply_filled(reply, action_names=actions, max_classes=4, fill_to=4)
    assert list(filled.class_set) == ["tools", "utensils", "spoon", "knife"]
    assert list(parse_reply_filled(reply, action_names=actions, max_classes=8, fill_to=8).class_set) == [
        "tools", "utensils", "spoon", "knife", "broom"]
    assert list(parse_reply_filled('{"classes": ["mop"]}', action_names=actions, max_classes=4, fill_to=4).class_set) == ["mop"]

    server.script = [reply]
    on = ICRLSearcher(llm=spec(server.url), action_names=actions, max_classes=4, prompt="small",
                      response_format="json_schema", fill_from_uses=True)
    assert suggest(on, "a")["classes"] == ["tools", "utensils", "spoon", "knife"]
    server.script = [reply]
    off = ICRLSearcher(llm=spec(server.url), action_names=actions, max_classes=4, prompt="small", response_format="json_schema")
    assert suggest(off, "a")["classes"] == ["tools", "utensils"]
    assert SearchConfig().fill_from_uses is False  # opt-in until the comparison measures it


# ------------------------------------------------------------------ composition: the parts


def test_baselines_are_icrl_with_options_and_pool_owns_a_proposer(server):
    from searchers.pool import PromptPoolSearcher
    from searchers.proposer import Proposer

    built = {name: make(name, server.url) for name in LLM_SEARCHERS}
    for name in ("icrl", "static", "ood", "hybrid"):
        assert type(built[name]) is ICRLSearcher, name
    assert type(built["pool"]) is PromptPoolSearcher and not isinstance(built["pool"], ICRLSearcher)
    assert all(isinstance(s.proposer, Proposer) for s in built.values())
    assert built["static"].show_history is False and built["icrl"].show_history is True
    assert [list(r.class_set) for r in built["ood"].injected_history] == [["ball", "hoop"]]
    assert built["hybrid"].hyperparameters is not None and built["icrl"].hyperparameters is None


def test_stats_keep_their_shape(server):
    searcher = make("icrl", server.url)
    run_trials(searcher, ["a"], [0.5])
    assert list(searcher.stats) == ["suggestions", "llm_calls", "reasks", "fallbacks", "llm_errors", "cache_hits",
                                    "prompt_tokens", "completion_tokens", "llm_time_s", "per_suggestion"]
    assert list(searcher.stats["per_suggestion"][0]) == ["index", "source", "llm_calls", "reasks", "prompt_tokens",
                                                         "completion_tokens", "latency_s"]
    assert searcher.stats["suggestions"] == 1 and searcher.stats["llm_calls"] == 1


def test_reask_echoes_the_clipped_reply_and_the_rejection_reasons(server):
    long_reply = "`id`\nfork and knife\n" + "word " * 200
    server.script = [long_reply, "ball"]
    searcher = make("icrl", server.url)
    assert suggest(searcher, "a")["classes"] == ["ball"]
    messages = server.chat_requests[-1].body["messages"]
    assert len(messages) == 3 and messages[1]["role"] == "assistant"
    assert messages[1]["content"].startswith("`id`\nfork and knife") and len(messages[1]["content"]) < 400
    assert "more characters cut" in messages[1]["content"]
    feedback = messages[2]["content"]
    assert "no usable object class" in feedback and "rejected: '`id`'" in feedback and "'fork and knife'" in feedback
    assert len(feedback) < 800


def test_proposer_pickles_without_client_thread_or_request(server, monkeypatch):
    from searchers.proposer import Proposer

    monkeypatch.setenv("A2O_TEST_KEY", SECRET)
    proposer = Proposer(spec(server.url), max_reasks=0)
    assert proposer.client() is proposer.client()  # built once
    searcher = make("icrl", llm=proposer.client())  # a client object: its spec is kept to rebuild it
    assert searcher.suggest("a") is None and searcher.proposer.busy
    clone = pickle.loads(pickle.dumps(searcher))
    assert not clone.proposer.busy and SECRET.encode() not in pickle.dumps(searcher)
    assert suggest(clone, "a") == suggest(searcher, "a")  # the clone asks again, the same request
    unpicklable = Proposer(lambda: None)
    assert pickle.loads(pickle.dumps(unpicklable))._factory is None  # a lambda is dropped, not fatal
    with pytest.raises(TypeError, match="LLMClientSpec"):
        Proposer(42)


def test_initial_classes_are_checked_by_the_class_text_rule(server):
    from a2o.errors import ClassTextError

    with pytest.raises(ClassTextError, match="initial_classes"):
        make("icrl", server.url, initial_classes=["ball", "fork and knife"])
    with pytest.raises(ClassTextError, match="initial_classes.*action"):
        make("pool", server.url, initial_classes=["serve"])
    assert suggest(make("icrl", server.url, initial_classes=["Tennis  Ball"]), "a")["classes"] == ["tennis ball"]


def test_ood_history_reads_results_json_rows_as_records(tmp_path):
    import json

    from a2o.errors import DataError
    from searchers.ood import load_history

    record = TrialRecord.from_result(parse_class_reply("cup", max_classes=5), {"val_accuracy": 0.3, "epoch": 2},
                                     source="llm", trial_id="x1")
    rows = [
        {"classes": ["Ball", "hoop"], "val_accuracy": 0.61, "classwise_accuracy": {"dunk": 0.5}, "status": "ok"},
        {"classes": ["net"], "val_accuracy": None, "status": "error"},
        {"config": {"classes": ["shoe"], "proposal_source": "llm"}, "metrics": {"val_accuracy": 0.2}},
        record.to_dict(),
    ]
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"trials": rows}))
    history = load_history(str(path))
    assert all(isinstance(r, TrialRecord) for r in history)
    assert [list(r.class_set) for r in history] == [["ball", "hoop"], ["net"], ["shoe"], ["cup"]]
    assert [r.status for r in history] == ["ok", "error", "ok", "ok"]
    assert history[0].classwise_accuracy == {"dunk": 0.5} and history[2].source == "llm" and history[3] == record
    path.write_text(json.dumps([{"classes": ["ball; rm -rf /"], "val_accuracy": 0.1}]))
    with pytest.raises(DataError, match="row 0"):
        load_history(str(path))
    path.write_text(json.dumps({"runs": []}))
    with pytest.raises(DataError, match="no list of trials"):
        load_history(str(path))


# ------------------------------------------------------------------ Ray conventions: metric, mode, strays


@pytest.mark.parametrize("name", ALL)
def test_metric_and_mode_default_to_none_then_val_accuracy_max_once_logged(name, server, caplog):
    searcher = make(name, server.url)
    assert searcher.metric is None and searcher.mode is None  # ConcurrencyLimiter copies these
    with caplog.at_level(logging.INFO, logger="searchers"):
        run_trials(searcher, ["a", "b"], [0.2, 0.4])
    assert (searcher.metric, searcher.mode) == ("val_accuracy", "max")
    assert caplog.text.count("using metric='val_accuracy', mode='max'") == 1
    assert searcher.best().val_accuracy == 0.4


@pytest.mark.parametrize("name", ALL)
def test_set_search_properties_sets_metric_and_mode(name, server):
    searcher = make(name, server.url)
    assert searcher.set_search_properties("loss", "min", {}) is True
    run_trials(searcher, ["a", "b"], [0.2, 0.4])  # loss = 1 - acc: 0.8, 0.6
    assert (searcher.metric, searcher.mode) == ("loss", "min")
    assert [r.val_accuracy for r in searcher.history] == pytest.approx([0.8, 0.6])
    assert searcher.best().val_accuracy == pytest.approx(0.6)
    with pytest.raises(ValueError, match="mode"):
        searcher.set_search_properties(None, "minimise", {})


@pytest.mark.parametrize("name", ALL)
def test_missing_results_and_unknown_trials_are_ignored(name, server):
    searcher = make(name, server.url)
    config = suggest(searcher, "a")
    searcher.on_trial_result("a", None)
    searcher.on_trial_result("never-suggested", result(0.9))
    searcher.on_trial_complete("never-suggested", result(0.9))
    searcher.on_trial_complete("a", None)
    searcher.on_trial_complete("a", result(0.7))  # a second completion of a finished trial
    assert len(searcher.history) == 1 and searcher.history[0].status == "invalid"
    assert list(searcher.history[0].class_set) == config["classes"] and searcher.best() is None


def test_optuna_study_direction_follows_the_effective_mode(tmp_path, caplog):
    pytest.importorskip("optuna")
    from optuna.study import StudyDirection

    searcher = make("optuna")
    assert searcher.study is None  # created at the first suggestion, in the mode in force then
    searcher.set_search_properties("val_accuracy", "min", {})
    run_trials(searcher, ["a", "b"], [0.3, 0.1])
    assert searcher.study.direction == StudyDirection.MINIMIZE and searcher.study.best_value == 0.1
    with caplog.at_level(logging.WARNING, logger="searchers"):
        searcher.set_search_properties("val_accuracy", "max", {})
    assert searcher.mode == "min" and "already runs in mode 'min'" in caplog.text
    path = str(tmp_path / "optuna.pkl")
    searcher.save(path)
    fresh = make("optuna")
    fresh.restore(path)
    assert fresh.mode == "min" and fresh.study.direction == StudyDirection.MINIMIZE
    assert suggest(fresh, "c") == suggest(searcher, "c")
    assert make("optuna", mode="max").set_search_properties(None, None, {}) is True


def test_too_many_fallbacks_stop_the_search_with_a_clear_error():
    from a2o.errors import FallbackLimitError
    from searchers.testing import ScriptedLLM

    # replies with no usable class: every proposal is a fallback after the re-asks
    llm = ScriptedLLM(script=["sweeping\nstirring"] * 12)
    searcher = ICRLSearcher(llm, ["sweeping", "stirring"], max_classes=3, num_trials=6, max_reasks=0,
                            vocabulary=["broom", "spoon", "cup", "mop"], max_fallback_share=0.5,
                            metric="val_accuracy", mode="max")
    assert suggest(searcher, "t1")["proposal_source"] == "fallback:unusable"  # one fallback: not yet judged
    searcher.on_trial_complete("t1", {"val_accuracy": 0.2, "epoch": 1})
    with pytest.raises(FallbackLimitError, match=r"2 of 2 proposals were fallbacks \(unusable 2;.*--resume"):
        suggest(searcher, "t2")
    assert searcher.stats["fallbacks"] == 2 and searcher.proposer.fallback_causes() == {"fallback:unusable": 1}
    never = ICRLSearcher(ScriptedLLM(script=["sweeping"] * 6), ["sweeping"], num_trials=3, max_reasks=0,
                         vocabulary=["broom", "spoon", "cup"], max_fallback_share=1.0)
    for trial in ("a", "b", "c"):
        suggest(never, trial)
        never.on_trial_complete(trial, {"val_accuracy": 0.1, "epoch": 1})
    assert never.stats["fallbacks"] == 3
