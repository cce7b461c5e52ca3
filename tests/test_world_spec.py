"""A2O-Synth world specs: validation errors that name the key and the fix, and the properties the
default world must have for a searcher comparison to mean something."""

from __future__ import annotations

import re

import numpy as np
import pytest
import yaml

from a2o.config import load_config
from a2o.data.synth.spec import (
    load_world_spec,
    preset_names,
    preset_path,
    world_from_dict,
    world_lexicon,
    world_to_dict,
)
from a2o.data.synthetic import generate_synth, load_scenes, read_synth_manifest
from a2o.errors import ConfigError

HOUSEHOLD = load_world_spec("household")
DEMO_CONFIG = "cluster/configs/demo.yaml"


def _household_dict() -> dict:
    with open(preset_path("household"), encoding="utf-8") as handle:
        return yaml.safe_load(handle)


# ----------------------------------------------------------------------------------------------
# validation


def test_presets_are_spec_files_that_round_trip():
    assert {"household", "tiny"} <= set(preset_names())
    for name in preset_names():
        spec = load_world_spec(name)
        assert world_from_dict(world_to_dict(spec)) == spec
        assert load_world_spec(preset_path(name)).sha256() == spec.sha256()


@pytest.mark.parametrize(
    "edit, key, fix",
    [
        (lambda d: d.update(clip_per_action=3), "clip_per_action", "Did you mean 'clips_per_action'"),
        (lambda d: d["actions"]["stirring"].update(object="spon"), "actions.stirring.object", "Did you mean 'spoon'"),
        (lambda d: d["actions"]["stirring"].update(motion="circles"), "actions.stirring.motion", "Did you mean 'circle'"),
        (lambda d: d["objects"]["spoon"].update(shape="paddel"), "objects.spoon.shape", "Did you mean 'paddle'"),
        (lambda d: d["objects"]["spoon"].update(colour=[1, 2]), "objects.spoon.colour", "r, g, b"),
        (lambda d: d["objects"]["spoon"].update(synonyms=["mug"]), "objects.cup", "already used by objects.spoon"),
        (lambda d: d["objects"]["spoon"].pop("size"), "objects.spoon.size", "is required"),
        (lambda d: d["hypernyms"].update(cutlery=["spoon", "fork"]), "hypernyms.cutlery", "'fork' is not an object"),
        (lambda d: d["hypernyms"].update(cup=["spoon", "knife"]), "hypernyms.cup", "already the name"),
        (lambda d: d.update(agent="robot"), "agent", "Add it under objects"),
        (lambda d: d.update(resolution=33), "resolution", "even"),
        (lambda d: d["regions"]["rug"].update(texture="wool"), "regions.rug.texture", "Textures"),
        (lambda d: d["shortcut"].update(probability=1.5), "shortcut.probability", "[0.0, 1.0]"),
        (lambda d: d["scene"].update(others_per_clip=40), "scene.others_per_clip", "must be in"),
        (lambda d: d["actions"].update({"Stir!": {"object": "spoon", "motion": "circle"}}), "actions.Stir!", "lowercase"),
        (lambda d: d["actions"]["stirring"].update(object="hand"), "actions.stirring.object", "the agent"),
    ],
)
def test_validation_errors_name_the_key_and_the_fix(edit, key, fix):
    values = _household_dict()
    edit(values)
    with pytest.raises(ConfigError) as excinfo:
        world_from_dict(values)
    message = str(excinfo.value)
    assert f"world spec {key}" in message and fix in message, message


def test_a_spec_file_from_a_user_generates(tmp_path):
    """A new world written as YAML alone (no code) generates, through the CLI's function."""
    values = _household_dict()
    values.update(world="garage", clips_per_action=3, num_frames=4, resolution=16)
    values["actions"] = {
        "tightening": {"object": "hammer", "motion": "circle"},
        "sanding": {"object": "sponge", "motion": "circle"},
    }
    path = tmp_path / "garage.yaml"
    path.write_text(yaml.safe_dump(values))
    root = generate_synth(str(tmp_path / "out"), str(path), seed=1)
    manifest = read_synth_manifest(root)
    assert set(manifest.column("label").to_pylist()) == {"tightening", "sanding"}
    with pytest.raises(ConfigError, match="world spec file not found"):
        load_world_spec(str(tmp_path / "missing.yaml"))


def test_lexicon_names_synonyms_and_group_words():
    lexicon = world_lexicon(HOUSEHOLD)
    assert lexicon["spoon"] == lexicon["teaspoon"] == [["spoon", 1.0]]
    assert lexicon["countertop"] == [["counter", 1.0]]
    assert lexicon["utensil"] == [["spoon", 0.5], ["whisk", 0.5], ["knife", 0.5]]
    assert "fork" not in lexicon  # a word the world does not know maps to nothing


# ----------------------------------------------------------------------------------------------
# the household world's properties (issue: "A2O-Synth worlds where only commonsense finds the objects")


def _named_with_object(spec, action) -> bool:
    obj = spec.object(action.object)
    return any(name in action.name for name in (obj.name, *obj.synonyms))


def test_at_least_12_actions_mostly_named_without_their_object():
    spec = HOUSEHOLD
    assert len(spec.actions) >= 12
    without = [a.name for a in spec.actions if not _named_with_object(spec, a)]
    assert len(without) >= 2 / 3 * len(spec.actions), without
    # the check itself can fail: "hammering" names its hammer
    assert _named_with_object(spec, spec.action("hammering"))


def test_motions_are_shared_by_actions_with_different_objects():
    by_motion: dict[str, list] = {}
    for action in HOUSEHOLD.actions:
        by_motion.setdefault(action.motion, []).append(action)
    shared = {m: acts for m, acts in by_motion.items() if len(acts) >= 2}
    unique = [acts[0].name for acts in by_motion.values() if len(acts) == 1]
    for motion, acts in shared.items():
        assert len({a.object for a in acts}) == len(acts), motion  # different objects
    # a few actions have a motion of their own (their object's map adds little), most share one
    assert 1 <= len(unique) <= len(HOUSEHOLD.actions) // 4, unique
    assert sum(len(a) for a in shared.values()) >= 3 / 4 * len(HOUSEHOLD.actions)


def test_scene_is_busy_low_contrast_and_regions_carry_the_shortcut(tmp_path):
    spec = HOUSEHOLD
    assert spec.others_per_clip >= 4 and spec.confusable_per_clip >= 1
    assert spec.contrast <= 0.35
    assert 0.0 < spec.shortcut < 1.0
    root = generate_synth(str(tmp_path / "hh"), "household", seed=0, clips_per_action=3, num_frames=4)
    scenes = {row["video_id"]: row for row in load_scenes(root).to_pylist()}
    for row in read_synth_manifest(root).to_pylist():
        action = spec.action(row["label"])
        others = scenes[row["video_id"]]["others"]
        partners = {a.object for a in spec.actions if a.motion == action.motion} - {action.object}
        assert len(others) >= 4 and action.object not in others
        if partners:  # an object of a confusable action stands by
            assert partners & set(others), row["video_id"]
        with np.load(row["masks_uri"]) as npz:
            assert npz[action.object].any() and npz[spec.agent].any()
            assert sum(1 for name in others if npz[name].any()) >= 3  # visible (a few may be occluded)


def test_default_max_classes_is_smaller_than_the_helpful_objects():
    helpful = {a.object for a in HOUSEHOLD.actions} | {HOUSEHOLD.agent}
    cfg = load_config(DEMO_CONFIG)
    assert cfg.data.synth_preset == "household"
    assert cfg.search.max_classes < len(helpful)
    assert load_config(None).search.max_classes < len(helpful)


def test_demo_task_description_names_no_world_object_and_baselines_get_no_oracle_list():
    cfg = load_config(DEMO_CONFIG)
    text = cfg.search.task_description.lower()
    assert text
    names = [n for o in HOUSEHOLD.objects for n in (o.name, *o.synonyms)]
    names += [n for r in HOUSEHOLD.regions for n in (r.name, *r.synonyms)]
    named = [n for n in names if re.search(rf"\b{re.escape(n)}s?\b", text)]
    assert not named, named
    assert not cfg.search.vocabulary  # vocabulary searchers get the generic list


def test_generic_vocabulary_holds_every_world_name_among_hundreds():
    from searchers.vocabulary import generic_vocabulary

    vocabulary = set(generic_vocabulary())
    assert len(vocabulary) >= 300
    words = [n for o in HOUSEHOLD.objects for n in (o.name, *o.synonyms)]
    words += [n for r in HOUSEHOLD.regions for n in (r.name, *r.synonyms)]
    words += [name for name, _ in HOUSEHOLD.hypernyms]
    assert not [w for w in words if w not in vocabulary]
    assert len(vocabulary) > 10 * len(HOUSEHOLD.objects)
