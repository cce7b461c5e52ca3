"""The one class-text rule and the ClassSet type: a table of hostile and benign inputs.

Each row is (raw phrase as an LLM or a user might write it, expected class text or None when it
must be rejected, what the row is about). The same table runs through the reply parser
(:func:`searchers.parsing.parse_reply`, which unwraps list formatting first) and, for rows without
formatting, through the strict rule (:func:`a2o.detect.classes.validate_class_text`).
"""

from __future__ import annotations

import pickle

import pytest

from a2o.config import config_from_dict
from a2o.detect.classes import MAX_CLASS_CHARS, ClassSet, class_key, validate_class_text
from a2o.errors import ClassTextError, ConfigError
from searchers.parsing import clip_reply, parse_reply

ACTIONS = ["stirring", "sweeping", "chopping"]

# (reply phrase, expected class or None, why)
TABLE = [
    # benign: plain nouns and compounds
    ("spoon", "spoon", "a plain noun"),
    ("paint roller", "paint roller", "a two-word compound"),
    ("Tennis  Ball", "tennis ball", "case and repeated spaces normalise"),
    ("t-shirt", "t-shirt", "hyphen allowed"),
    ("chef's knife", "chef's knife", "apostrophe allowed"),
    ("café", "café", "Unicode letters allowed"),
    ("Löffel", "löffel", "a German noun, lowercased"),
    ("水壶", "水壶", "CJK letters allowed"),
    ("3d printer", "3d printer", "digits allowed"),
    ("electric kettle lid handle", "electric kettle lid handle", "four words is the limit"),
    # benign formatting the parser unwraps
    ("- broom", "broom", "bullet"),
    ("* mop", "mop", "markdown star bullet"),
    ("1. sponge", "sponge", "numbering"),
    ("2) knife", "knife", "numbering with a parenthesis"),
    ("**kettle**", "kettle", "bold around the whole phrase"),
    ('"bucket"', "bucket", "wrapping quotes"),
    ("the floor", "floor", "one leading article is list formatting"),
    ("a cutting board", "cutting board", "leading indefinite article"),
    ("hammer (held in hand)", "hammer", "a parenthetical note"),
    ("mop.", "mop", "trailing period"),
    ("paint_roller", "paint roller", "underscore for space"),
    ("\u2022 dustpan", "dustpan", "unicode bullet"),
    # sentence fragments
    ("and also the floor", None, "conjunction fragment from a chatty reply"),
    ("fork and knife", None, "two objects joined by 'and'"),
    ("spoon or ladle", None, "two objects joined by 'or'"),
    ("also a bucket", None, "'also' marks prose"),
    ("knife on", None, "ends with a preposition"),
    ("of the table", None, "starts with a preposition"),
    ("its handle", None, "starts with a pronoun"),
    ("the the", None, "article only"),
    ("a very long phrase of many words here", None, "more than four words"),
    ("Here are some objects that might help", None, "a prose sentence"),
    ("x" * (MAX_CLASS_CHARS + 1), None, "longer than the character limit"),
    ("y" * 5000, None, "a 5000-character line"),
    # action names (the label leaking back)
    ("stirring", None, "a target action name"),
    ("Sweeping", None, "an action name in another case"),
    # shell, path and markup fragments
    ("`id`", None, "backticks: code, never unwrapped"),
    ("$(rm -rf /)", None, "shell substitution"),
    ("; reboot", None, "shell separator"),
    ("cat | nc host 1", None, "shell pipe"),
    ("../../etc/passwd", None, "path traversal"),
    ("C:\\Windows", None, "backslash path"),
    ("<script>alert(1)</script>", None, "HTML tag"),
    ("[link](http://x.y)", None, "markdown link"),
    ("# header", None, "markdown header"),
    ("ball. person", None, "GroundingDINO separator would split the class"),
    ("knife\x00", None, "NUL byte"),
    ("line\nbreak", None, "newline inside one JSON string"),
    ("tab\there", None, "tab"),
    ("\u202ereversed", None, "bidi override"),
    ("emoji \U0001F600", None, "emoji is not a letter"),
    ("...", None, "punctuation only"),
    ("", None, "empty"),
]


def test_table_is_large_enough():
    assert len(TABLE) >= 40
    assert sum(expected is None for _, expected, _ in TABLE) >= 20  # hostile rows
    assert sum(expected is not None for _, expected, _ in TABLE) >= 15  # benign rows


@pytest.mark.parametrize("raw,expected,why", TABLE, ids=[row[2] for row in TABLE])
def test_reply_parser_applies_the_rule(raw, expected, why):
    # each phrase as one JSON list item, so separators inside it stay inside it
    import json

    parsed = parse_reply(json.dumps({"classes": [raw]}), action_names=ACTIONS, max_classes=8)
    if expected is None:
        assert parsed.class_set.texts == (), f"{why}: {raw!r} was accepted as {parsed.class_set.texts}"
        assert parsed.rejected, f"{why}: a rejection must carry a reason"
    else:
        assert parsed.class_set.texts == (expected,), f"{why}: {raw!r} gave {parsed.class_set.texts}"


_UNFORMATTED = [(raw, expected) for raw, expected, _ in TABLE
                if expected is None or raw.strip().lower() == expected or " ".join(raw.lower().split()) == expected]


@pytest.mark.parametrize("raw,expected", _UNFORMATTED)
def test_strict_rule(raw, expected):
    if expected is None and raw.lower() not in ACTIONS and raw.lower() not in ("sweeping",):
        with pytest.raises(ClassTextError):
            validate_class_text(raw)
    elif expected is not None:
        assert validate_class_text(raw) == expected


def test_prose_reply_yields_only_the_objects():
    reply = ("Sure! Here are the objects:\n- spoon\n- and also the floor\n- `id`\n- Broom (for sweeping)\n"
             "- stirring\n- kettle.")
    parsed = parse_reply(reply, action_names=ACTIONS, max_classes=8)
    assert parsed.class_set.texts == ("spoon", "broom", "kettle")
    assert {r[0] for r in parsed.rejected} >= {"- and also the floor", "- `id`", "- stirring"}


def test_reply_cut_to_max_classes_and_deduplicated():
    parsed = parse_reply("spoon, Spoon, knife, broom, mop", max_classes=3)
    assert parsed.class_set.texts == ("spoon", "knife", "broom")


def test_clip_reply_bounds_an_echo():
    long_reply = "blah " * 2000
    clipped = clip_reply(long_reply)
    assert len(clipped) < 400 and clipped.startswith("blah blah") and "more characters cut" in clipped
    assert clip_reply("short") == "short"


def test_class_set_parse_is_strict():
    cs = ClassSet.parse(["Hand", "paint  roller"])
    assert cs.texts == ("hand", "paint roller")
    assert cs.keys == (class_key("hand"), class_key("paint roller"))
    assert list(cs) == ["hand", "paint roller"] and len(cs) == 2 and cs[1] == "paint roller"
    assert cs.key_of("paint roller") == cs.keys[1]
    assert ClassSet.parse(cs) is cs  # built once, never checked again
    with pytest.raises(ClassTextError, match="twice"):
        ClassSet.parse(["hand", "HAND"])
    with pytest.raises(ClassTextError, match="action name"):
        ClassSet.parse(["hand", "stirring"], action_names=ACTIONS)
    with pytest.raises(ClassTextError, match="search.initial_classes"):
        ClassSet.parse(["rm -rf /"], where="search.initial_classes")
    with pytest.raises(ClassTextError, match="comma-separated"):
        ClassSet.parse("hand, spoon")
    with pytest.raises(ClassTextError, match="limit 1"):
        ClassSet.parse(["hand", "spoon"], max_classes=1)


def test_class_set_is_a_hashable_order_aware_value():
    a, b = ClassSet.parse(["hand", "spoon"]), ClassSet.parse(["spoon", "hand"])
    assert a != b and a.as_frozenset() == b.as_frozenset()
    assert len({a, ClassSet.parse(["hand", "spoon"])}) == 1
    assert pickle.loads(pickle.dumps(a)) == a
    assert str(ClassSet()) == "(no classes: RGB only)" and not ClassSet()


def test_user_config_is_checked_at_load():
    with pytest.raises(ConfigError, match="search.initial_classes.*one noun phrase"):
        config_from_dict({"search": {"initial_classes": ["hand", "and also the floor"]}})
    assert config_from_dict({"search": {"initial_classes": ["hand"]}}).search.initial_classes == ["hand"]
