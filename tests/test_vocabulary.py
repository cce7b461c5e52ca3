"""The shipped generic vocabulary, and the searchers built from a config that names no vocabulary."""

from __future__ import annotations

import logging
import time

import pytest
from fake_llm_server import dead_url

from a2o.config import LLMConfig, SearchConfig, field_docs
from a2o.detect.classes import validate_class_text
from a2o.errors import ClassTextError
from searchers import create_searcher, searcher_from_config
from searchers.fallback import DEFAULT_VOCABULARY
from searchers.parsing import parse_class_reply
from searchers.vocabulary import GENERIC_NOUNS_PATH, generic_vocabulary
from searchers.words import usable_words

ACTIONS = ["stir", "sweep", "pour"]
# The names, synonyms and group words of the A2O-Synth household world: a baseline searching the
# generic list must find them among many other nouns, not be handed them.
HOUSEHOLD_WORLD = [
    "hand", "palm", "spoon", "teaspoon", "tablespoon", "whisk", "egg beater", "broom", "sweeper",
    "mop", "swab", "sponge", "scrubber", "scouring pad", "toothbrush", "knife", "kitchen knife",
    "cleaver", "hammer", "mallet", "kettle", "teakettle", "teapot", "watering can", "paint roller",
    "roller", "comb", "hairbrush", "cup", "mug", "teacup", "rolling pin", "bowl", "basin", "plate",
    "dish", "bottle", "flask", "vase", "book", "lamp", "floor", "wall", "counter", "countertop",
    "worktop", "rug", "carpet", "utensil", "tool", "container", "dishware", "toiletry", "person",
    "ball", "box", "chair", "plant", "grass", "table", "tree", "car", "cleaning tool",
]
# The demo config's own list (cluster/configs/demo.yaml): the oracle the generic list replaces.
DEMO_WORLD = ["hand", "person", "ball", "box", "cup", "bottle", "chair", "lamp", "book", "plant",
              "floor", "wall", "grass", "table", "tree", "car"]


def run_trials(searcher, count: int) -> list[list[str]]:
    """Suggest and complete ``count`` trials (polling like Tune); the suggested class sets."""
    suggested = []
    for index in range(count):
        trial_id = f"t{index}"
        deadline = time.monotonic() + 10
        config = searcher.suggest(trial_id)
        while config is None and time.monotonic() < deadline:
            time.sleep(0.01)
            config = searcher.suggest(trial_id)
        assert isinstance(config, dict), f"no suggestion for {trial_id}: {config!r}"
        suggested.append(config["classes"])
        searcher.on_trial_complete(trial_id, {"val_accuracy": 0.1 * (index % 5), "epoch": 1})
    return suggested


# ------------------------------------------------------------------ the file


def test_generic_list_is_large_unique_and_every_entry_is_a_valid_class_text():
    words = generic_vocabulary()
    assert len(words) >= 300
    assert len(set(words)) == len(words), sorted({w for w in words if words.count(w) > 1})
    invalid = [w for w in words if _rule(w) != w]
    assert not invalid, f"entries the class-text rule changes or rejects: {invalid}"
    assert usable_words(words) == words  # what the searchers keep of a vocabulary: all of it
    # A list pasted into a reply loses nothing either.
    assert list(parse_class_reply("\n".join(words), max_classes=10**6)) == words


def _rule(word: str):
    try:
        return validate_class_text(word)
    except ClassTextError:
        return None


@pytest.mark.parametrize("word", HOUSEHOLD_WORLD)
def test_generic_list_holds_the_household_world_word(word):
    assert word in generic_vocabulary()


def test_generic_list_is_cached_but_callers_cannot_change_it():
    words = generic_vocabulary()
    words.append("not a noun in the file")
    assert generic_vocabulary()[-1] != "not a noun in the file"


def test_config_doc_states_the_generic_list_size():
    docs = {key: doc for key, _, doc in field_docs()}
    assert f"generic list of {len(generic_vocabulary())} common nouns" in docs["search.vocabulary"]


# ------------------------------------------------------------------ searchers from a config


@pytest.mark.parametrize("name", ["random", "optuna"])
def test_empty_vocabulary_searches_the_generic_list(name, caplog):
    caplog.set_level(logging.INFO, logger="searchers")
    searcher = searcher_from_config(SearchConfig(searcher=name, num_trials=20, max_classes=8, seed=3),
                                    LLMConfig(), action_names=ACTIONS)
    generic = generic_vocabulary()
    assert searcher.vocabulary == generic
    used = {w for classes in run_trials(searcher, 20) for w in classes}
    assert used <= set(generic)
    assert used - set(DEMO_WORLD) - set(DEFAULT_VOCABULARY), "only oracle or built-in words suggested"
    assert f"vocabulary: generic list, {len(generic)} nouns ({GENERIC_NOUNS_PATH})" in caplog.text


def test_random_search_over_the_generic_list_reaches_many_words():
    searcher = searcher_from_config(SearchConfig(searcher="random", num_trials=30, max_classes=8),
                                    LLMConfig(), action_names=ACTIONS)
    used = {w for classes in run_trials(searcher, 30) for w in classes}
    assert len(used) > 60  # ~135 expected draws from ~500 words; a 16- or 28-word list cannot


@pytest.mark.parametrize("name", ["random", "optuna"])
def test_explicit_vocabulary_wins(name, caplog):
    caplog.set_level(logging.INFO, logger="searchers")
    chosen = ["glove", "racket", "net"]
    searcher = searcher_from_config(SearchConfig(searcher=name, num_trials=8, max_classes=3, vocabulary=chosen),
                                    LLMConfig(), action_names=ACTIONS)
    assert searcher.vocabulary == chosen
    used = {w for classes in run_trials(searcher, 8) for w in classes}
    assert used <= set(chosen)
    assert "vocabulary: search.vocabulary, 3 entries" in caplog.text
    assert "generic list" not in caplog.text


def test_icrl_fallback_draws_from_the_generic_list():
    llm = LLMConfig(base_url=dead_url(), model="m", max_retries=0, timeout_s=5, replay_cache=False)
    # max_fallback_share 1.0: this test wants every proposal to be a fallback (the default stops at 2)
    searcher = searcher_from_config(SearchConfig(searcher="icrl", num_trials=3, max_classes=8, seed=1,
                                                 max_fallback_share=1.0), llm, action_names=ACTIONS)
    generic = generic_vocabulary()
    assert searcher.vocabulary == generic
    suggested = run_trials(searcher, 3)  # the LLM is unreachable: every set is a fallback edit
    used = {w for classes in suggested for w in classes}
    assert searcher.stats["fallbacks"] == 3
    assert used <= set(generic)
    assert used - set(DEMO_WORLD) - set(DEFAULT_VOCABULARY), "fallback used only oracle or built-in words"


# ------------------------------------------------------------------ a user's vocabulary


def test_vocabulary_entries_breaking_the_rule_are_dropped_and_counted(caplog):
    words = ["Ball", "ball", "net/../x", "fork and knife", "the cup", "serve", "tennis  racket", "`id`"]
    with caplog.at_level(logging.WARNING, logger="searchers"):
        kept = usable_words(words, action_names=["serve"], where="search.vocabulary")
    assert kept == ["ball", "tennis racket"]  # normalised, repeats skipped
    assert "search.vocabulary: dropped 5 entries" in caplog.text


@pytest.mark.parametrize("name", ["random", "optuna"])
def test_vocabulary_searchers_keep_only_valid_words(name, caplog):
    with caplog.at_level(logging.WARNING, logger="searchers"):
        searcher = create_searcher(name, vocabulary=["ball", "a/b", "net", "net"], max_classes=2, num_trials=2)
    assert searcher.vocabulary == ["ball", "net"] and "dropped 1 entry" in caplog.text
    with pytest.raises(ValueError, match="no usable class"):
        create_searcher(name, vocabulary=["$x", "and"], max_classes=2, num_trials=2)
