"""Screened ICRL (searchers/screening.py) and the map-only proxy (a2o/train/proxy.py)."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from a2o.detect.classes import ClassSet
from a2o.train.proxy import FEATURES_PER_CLASS, MapProxy, map_features
from searchers.icrl import ICRLSearcher
from searchers.screening import candidates_response_format, parse_candidates
from searchers.testing import ScriptedLLM
from tests.test_searchers import suggest

ACTIONS = ["sweeping", "stirring", "brushing teeth"]


# ---------------------------------------------------------------------------------------------
# parsing K candidates


def test_parse_candidates_keeps_distinct_safe_sets_and_names_the_rejections():
    reply = json.dumps({"uses": [{"action": "sweeping", "object": "broom"}], "candidates": [
        ["broom", "spoon", "toothbrush"],
        ["Spoon", "broom", "toothbrush"],  # the same set in another order and case
        ["../../etc/passwd", "$(rm -rf ~)", "mop"],  # path and shell text rejected, mop kept
        ["stirring", "bowl"],  # an action name is dropped
        ["pan", "pot", "lid", "jar", "bin", "box"],  # cut to max_classes
        ["cup"],
    ]})
    sets, rejected = parse_candidates(reply, action_names=ACTIONS, max_classes=4, k=4)
    assert [list(s) for s in sets] == [["broom", "spoon", "toothbrush"], ["mop"], ["bowl"], ["pan", "pot", "lid", "jar"]]
    reasons = dict(rejected)
    assert "../../etc/passwd" in reasons and "$(rm -rf ~)" in reasons
    assert reasons["stirring"] == "it is a target action name, not an object"
    # plain text: one set per line
    sets, _ = parse_candidates("broom, mop\n\nspoon, cup, bowl\n", action_names=ACTIONS, max_classes=8, k=3)
    assert [list(s) for s in sets] == [["broom", "mop"], ["spoon", "cup", "bowl"]]
    assert parse_candidates("not json at all {", action_names=ACTIONS, max_classes=4, k=2)[0] == []
    schema = candidates_response_format(4, 6, num_actions=3, min_classes=3)["json_schema"]["schema"]
    assert schema["required"] == ["uses", "candidates"] and schema["properties"]["candidates"]["maxItems"] == 4
    assert schema["properties"]["candidates"]["items"]["minItems"] == 3  # no 1-object candidate sets


# ---------------------------------------------------------------------------------------------
# the searcher


def _reply(*sets):
    return json.dumps({"candidates": [list(s) for s in sets]})


_drive = suggest  # poll like Tune until the searcher has a suggestion (tests/test_searchers.py)


def _searcher(script, proxy, k=3, **kw):
    llm = ScriptedLLM(script=script)
    searcher = ICRLSearcher(llm, ACTIONS, max_classes=4, num_trials=4, screen_candidates=k, screen=proxy,
                            response_format="json_schema", metric="val_accuracy", mode="max", **kw)
    return searcher, llm


def test_the_best_proxy_candidate_goes_to_the_trial_and_all_join_the_history():
    scores = {("broom", "mop"): 0.2, ("spoon", "whisk"): 0.7, ("toothbrush", "cup"): 0.5}
    searcher, llm = _searcher([_reply(*scores), _reply(["sink", "tap"], ["broom", "mop"], ["plate"])],
                              lambda cs: scores.get(tuple(cs), 0.1))
    config = _drive(searcher, "t1")
    assert config["classes"] == ["spoon", "whisk"] and config["proposal_source"] == "llm"
    assert config["screen"]["candidates"] == 3 and config["screen"]["proxy_score"] == 0.7
    # the request asked for K sets with the screening schema
    assert llm.requests[0]["response_format"]["json_schema"]["name"] == "candidate_sets"
    assert "Give 3 different candidate sets, each of about 4 objects" in llm.requests[0]["messages"][0]["content"]
    searcher.on_trial_complete("t1", {"val_accuracy": 0.4, "epoch": 1})
    config = _drive(searcher, "t2")
    prompt = llm.requests[1]["messages"][0]["content"]
    assert "Screened candidates (PROXY scores" in prompt
    assert "- for iteration 1: spoon, whisk -> proxy 0.700 *" in prompt
    assert "- for iteration 1: broom, mop -> proxy 0.200" in prompt
    # broom+mop lost in iteration 1 but was never trained: it may compete again
    assert config["classes"] in (["sink", "tap"], ["broom", "mop"], ["plate"])
    assert searcher.stats["screening"]["screened"] == 6 and searcher.stats["screening"]["k"] == 3
    assert [r["sent"] for r in searcher.screened()[:3]] == [False, True, False]


def test_screening_never_sends_a_tried_or_running_set_nor_unsafe_text():
    proxy_calls = []

    def proxy(cs):
        proxy_calls.append(list(cs))
        return 1.0 if list(cs) == ["broom", "mop"] else 0.0

    # 2nd reply: the set already running scores best but is dropped before screening; 3rd: all unsafe
    searcher, llm = _searcher([_reply(["broom", "mop"]), _reply(["broom", "mop"], ["spoon"]),
                               _reply(["<script>"], ["rm -rf /"]), _reply(["cup"])], proxy, k=2)
    first = _drive(searcher, "t1")  # still running when the next is asked for
    second = _drive(searcher, "t2")
    assert first["classes"] == ["broom", "mop"] and second["classes"] == ["spoon"]
    assert ["broom", "mop"] not in proxy_calls[1:]  # never scored again, never sent again
    searcher.on_trial_complete("t1", {"val_accuracy": 0.4, "epoch": 1})
    searcher.on_trial_complete("t2", {"val_accuracy": 0.3, "epoch": 1})
    third = _drive(searcher, "t3")  # the unsafe reply is re-asked; the re-ask gives cup
    assert third["classes"] == ["cup"] and searcher.stats["reasks"] == 1
    assert "rejected" in llm.requests[3]["messages"][-1]["content"]


def test_a_restore_mid_iteration_scores_the_unscored_candidates_without_asking_again(tmp_path):
    release = threading.Event()
    scored = []

    def slow_proxy(cs):
        if list(cs) == ["spoon"]:
            release.wait(5)
        scored.append(list(cs))
        return {"broom": 0.1, "spoon": 0.9, "cup": 0.5}[cs[0]]

    searcher, llm = _searcher([_reply(["broom"], ["spoon"], ["cup"])], slow_proxy)
    deadline = time.monotonic() + 5
    while searcher.screener.pending is None or searcher.screener.pending.results[0] is None:
        assert searcher.suggest("t1") is None and time.monotonic() < deadline
        time.sleep(0.01)
    assert scored == [["broom"]]  # the same poll that took broom's score started spoon's
    path = str(tmp_path / "searcher.pkl")
    searcher.save(path)  # broom scored, spoon in flight, cup not started
    release.set()
    restored, fresh_llm = _searcher([], lambda cs: {"broom": 0.1, "spoon": 0.9, "cup": 0.5}[cs[0]])
    restored.restore(path)
    config = _drive(restored, "t1")
    assert config["classes"] == ["spoon"] and config["screen"]["candidates"] == 3
    assert fresh_llm.requests == [] and len(llm.requests) == 1  # no new LLM request after the restore
    assert [r["classes"] for r in restored.screened()] == [["broom"], ["spoon"], ["cup"]]


def test_a_failing_proxy_costs_its_candidate_and_all_failing_sends_the_first(caplog):
    def proxy(cs):
        if cs[0] == "broom":
            raise RuntimeError("detector out of memory")
        return {"spoon": 0.2, "cup": 0.3}.get(cs[0], float("nan"))

    searcher, _ = _searcher([_reply(["broom"], ["spoon"], ["cup"]), _reply(["broom"], ["mop"])], proxy)
    assert _drive(searcher, "t1")["classes"] == ["cup"]
    assert "the proxy failed on [broom]" in caplog.text
    searcher.on_trial_complete("t1", {"val_accuracy": 0.4, "epoch": 1})
    config = _drive(searcher, "t2")  # broom raises, mop is NaN: nothing scored
    assert config["classes"] == ["broom"] and config["screen"]["proxy_failed"] == 2
    assert "the proxy failed on all 2 candidates" in caplog.text
    assert searcher.stats["screening"]["proxy_failures"] == 3


def test_screening_needs_a_proxy_and_the_history():
    with pytest.raises(ValueError, match="needs a proxy"):
        ICRLSearcher(ScriptedLLM(), ACTIONS, screen_candidates=4)
    with pytest.raises(ValueError, match="1 \\(off\\) or 2..16"):
        ICRLSearcher(ScriptedLLM(), ACTIONS, screen_candidates=40, screen=len)
    with pytest.raises(ValueError, match="needs the history"):
        ICRLSearcher(ScriptedLLM(), ACTIONS, screen_candidates=4, screen=len, show_history=False)


# ---------------------------------------------------------------------------------------------
# the map-only proxy


class _Maps:
    """A map reader over synthetic clips: class "cue" sits left for action 0 and right for action
    1; class "noise" is random everywhere. Counts the reads and the maps_for calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, class_set):
        self.calls += 1
        self.class_set = list(class_set)
        return self

    def read(self, video_id):
        label, index = int(video_id[1]), int(video_id[3:])
        rng = np.random.default_rng(index * 7 + label)
        planes = []
        for text in self.class_set:
            m = np.zeros((4, 8, 8), np.uint8)
            if text == "cue":
                m[:, 2:5, (1 if label == 0 else 5):(3 if label == 0 else 7)] = 230
            else:
                m[:] = rng.integers(0, 255, size=m.shape)
            planes.append(m)
        return np.stack(planes, axis=1)


def _splits():
    train = [f"a{label}_{i:02d}" for label in (0, 1) for i in range(12)]
    val = [f"a{label}_{i:02d}" for label in (0, 1) for i in range(12, 18)]
    return (train, [int(v[1]) for v in train]), (val, [int(v[1]) for v in val])


def test_map_proxy_is_deterministic_reuses_features_and_ranks_the_informative_class_first():
    train, val = _splits()
    maps = _Maps()
    proxy = MapProxy(maps, train, val, 2, seed=3)
    cue, noise = ClassSet(("cue",)), ClassSet(("noise",))
    first = proxy.score(cue)
    assert first.score > 0.8 and first.val_accuracy == 1.0
    assert proxy.score(noise).score < first.score
    assert proxy.score(ClassSet(())).score == pytest.approx(0.5)  # no maps: the label prior
    calls = maps.calls
    both = proxy.score(ClassSet(("noise", "cue")))  # both classes' features are memoised
    assert maps.calls == calls and both.maps_computed == 0
    again = MapProxy(_Maps(), train, val, 2, seed=3)
    assert again.score(cue).score == first.score and again.score(noise).score == proxy.score(noise).score
    with pytest.raises(TypeError, match="ClassSet"):
        proxy.score(["cue"])


def test_map_features_shape_and_motion():
    still = np.zeros((4, 9, 9), np.uint8)
    still[:, 3:5, 3:5] = 255
    moving = np.zeros((4, 9, 9), np.uint8)
    for t in range(4):
        moving[t, 3:5, t * 2:t * 2 + 2] = 255
    f_still, f_moving = map_features(still), map_features(moving)
    assert f_still.shape == (FEATURES_PER_CLASS,) and f_still.dtype == np.float32
    assert f_still[6] == 0.0 and f_moving[6] > 0.15  # mean |dx| of the centroid
    assert map_features(np.zeros((4, 9, 9), np.uint8))[9] == 0.0  # never present
    with pytest.raises(ValueError, match="T, res, res"):
        map_features(np.zeros((9, 9), np.uint8))


def test_a_max_tokens_too_small_for_k_sets_is_a_config_error_naming_the_fix():
    from a2o.config import config_from_dict
    from a2o.errors import ConfigError
    from searchers import searcher_from_config

    cfg = config_from_dict({"search": {"screen_candidates": 8, "max_classes": 8}, "llm": {"max_tokens": 256}})
    with pytest.raises(ConfigError, match=r"llm.max_tokens=256 is too small .* set llm.max_tokens: \d+ or more"):
        searcher_from_config(cfg.search, cfg.llm, action_names=ACTIONS, llm_base_url="http://127.0.0.1:9/v1",
                             options={"screen": len})


def test_the_replys_own_action_object_pairs_are_screened_first():
    from searchers.screening import uses_candidate

    reply = json.dumps({"uses": [{"action": "sweeping", "object": "broom"}, {"action": "stirring", "object": "spoon"},
                                 {"action": "brushing teeth", "object": "$(reboot)"},
                                 {"action": "stirring", "object": "stirring"}],
                        "candidates": [["cup", "lid"], ["pan", "pot"], ["mop", "rag"]]})
    assert list(uses_candidate(reply, action_names=ACTIONS, max_classes=4)) == ["broom", "spoon"]
    assert uses_candidate("broom, mop", action_names=ACTIONS, max_classes=4) is None
    seen = []
    searcher, _ = _searcher([reply], lambda cs: seen.append(list(cs)) or (0.9 if list(cs) == ["broom", "spoon"] else 0.1))
    config = _drive(searcher, "t1")
    assert seen == [["broom", "spoon"], ["cup", "lid"], ["pan", "pot"]]  # K = 3: the pairs' set, then 2
    assert config["classes"] == ["broom", "spoon"]
