"""A2O-Synth world specs: a user-written YAML file that fully describes a test world.

A world is a small universe of objects (shape, colour, size, names), scene regions, and actions
(an object moved by the hand along a motion pattern). The generator (:mod:`a2o.data.synthetic`)
renders clips from it; the learned detector reads its names (:func:`world_lexicon`). Anyone can
write a new world without touching code: the format is documented in ``docs/WORLDS.md`` and the
shipped presets live in ``a2o/data/synth/worlds/*.yaml``.

Validation happens here, once, when a spec is read; every error names the key (``actions.stirring
.object``) and the fix. Downstream code trusts a :class:`WorldSpec`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from a2o.errors import ConfigError

__all__ = [
    "SHAPES",
    "MOTIONS",
    "TEXTURES",
    "ObjectSpec",
    "RegionSpec",
    "ActionSpec",
    "WorldSpec",
    "load_world_spec",
    "world_from_dict",
    "world_to_dict",
    "preset_names",
    "preset_path",
    "world_lexicon",
    "normalise_name",
    "apply_world_overrides",
]

# Shape primitives the renderer draws (a2o.data.synth.render). Sizes are half extents (half height,
# half width) at 64 px; the renderer scales them with the frame.
SHAPES = (
    "disc", "ellipse", "box", "ring", "paddle", "balloon", "tee", "blade", "brush", "kettle",
    "cup", "comb", "bar", "bottle", "book", "lamp", "plant", "chair", "block",
)
# Motion patterns (a2o.data.synth.render.motion_tracks): how the hand moves the action's object.
MOTIONS = (
    "circle", "sweep", "scrub", "chop", "pour", "stroke", "lift", "drop", "push_left",
    "push_right", "roll", "pass",
)
TEXTURES = ("plain", "planks", "grass", "grain", "tiles", "weave")

_NAME = re.compile(r"^[a-z][a-z '-]{0,38}[a-z]$")
_TOP_KEYS = (
    "world", "description", "seed", "clips_per_action", "split_fractions", "num_frames", "resolution",
    "fps", "crf", "contrast", "agent", "objects", "hypernyms", "regions", "actions", "scene", "shortcut",
)
_OBJECT_KEYS = ("shape", "colour", "size", "synonyms")
_REGION_KEYS = ("colour", "texture", "synonyms")
_ACTION_KEYS = ("object", "motion")
_SCENE_KEYS = ("others_per_clip", "confusable_per_clip", "drift")
_SHORTCUT_KEYS = ("by", "probability")


def normalise_name(text: str) -> str:
    """Lowercase with single spaces: how names are compared (and how class texts are normalised)."""
    return " ".join(str(text).lower().split())


@dataclass(frozen=True)
class ObjectSpec:
    """A thing that can appear in a clip (the agent, an action's tool, or a bystander object)."""

    name: str
    """Canonical name: the detector channel's name."""
    shape: str
    """One of :data:`SHAPES`."""
    colour: tuple[float, float, float]
    """Base RGB (0-255); drawn at ``region + contrast * (colour - region)``."""
    size: tuple[float, float]
    """Half height, half width in pixels at 64 px."""
    synonyms: tuple[str, ...] = ()
    """Other names the detector answers to with full likelihood."""


@dataclass(frozen=True)
class RegionSpec:
    """A background region (scene element): one fills each clip's background."""

    name: str
    colour: tuple[float, float, float]
    texture: str
    """One of :data:`TEXTURES`."""
    synonyms: tuple[str, ...] = ()


@dataclass(frozen=True)
class ActionSpec:
    """An action class: the hand moves ``object`` along ``motion``."""

    name: str
    """Label, named the way a person names the action ("stirring", not "stirring with spoon")."""
    object: str
    motion: str


@dataclass(frozen=True)
class WorldSpec:
    """Everything that determines an A2O-Synth dataset, byte for byte (with the seed)."""

    world: str
    description: str
    seed: int
    clips_per_action: int
    """Clips per action over all splits (split by ``split_fractions``)."""
    split_fractions: tuple[float, float, float]
    num_frames: int
    resolution: tuple[int, int]
    """(height, width), even, >= 16."""
    fps: int
    crf: int
    contrast: float
    agent: str
    """The object that moves the others (an entry of ``objects``, usually "hand"); in every clip."""
    objects: tuple[ObjectSpec, ...]
    hypernyms: tuple[tuple[str, tuple[str, ...]], ...]
    """(group word, member objects): the detector answers a group word with its members, weaker."""
    regions: tuple[RegionSpec, ...]
    actions: tuple[ActionSpec, ...]
    others_per_clip: int
    """Objects besides the agent and the acting object in every clip; they stand or drift."""
    confusable_per_clip: int
    """How many of those are objects of other actions with the same motion (when there are any)."""
    drift: float
    """Largest drift of a standing object over a clip, in pixels at 64 px."""
    shortcut: float
    """Train-only shortcut: probability that a train clip shows its action's region (val/test: uniform)."""

    # -- derived views -------------------------------------------------------------------------
    @property
    def object_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.objects)

    @property
    def region_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.regions)

    @property
    def action_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.actions)

    @property
    def channels(self) -> tuple[str, ...]:
        """Detector channels: every object (the agent included), then every region."""
        return self.object_names + self.region_names

    def object(self, name: str) -> ObjectSpec:
        return next(o for o in self.objects if o.name == name)

    def region(self, name: str) -> RegionSpec:
        return next(r for r in self.regions if r.name == name)

    def action(self, name: str) -> ActionSpec:
        return next(a for a in self.actions if a.name == name)

    def split_counts(self) -> dict[str, int]:
        """Clips per action in each split."""
        n = self.clips_per_action
        n_val = max(1, round(n * self.split_fractions[1]))
        n_test = max(1, round(n * self.split_fractions[2]))
        n_train = max(1, n - n_val - n_test)
        return {"train": n_train, "val": n - n_train - n_test, "test": n_test}

    def sha256(self) -> str:
        """Digest of the normalised spec: equal worlds give equal digests whatever the YAML layout."""
        text = json.dumps(world_to_dict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


# ------------------------------------------------------------------------------------------------
# reading and validation


def _fail(key: str, message: str) -> None:
    raise ConfigError(f"world spec {key}: {message}")


def _closest(value: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""


def _keys(node: Any, key: str, allowed: Sequence[str], required: Sequence[str] = ()) -> Mapping:
    if not isinstance(node, Mapping):
        _fail(key or "(top level)", f"expected a mapping of keys, got {type(node).__name__}")
    for name in node:
        if name not in allowed:
            where = f"{key}.{name}" if key else str(name)
            _fail(where, f"unknown key.{_closest(str(name), allowed)} Valid keys: {list(allowed)}")
    for name in required:
        if name not in node:
            where = f"{key}.{name}" if key else name
            _fail(where, "is required")
    return node


def _int(value: Any, key: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(key, f"expected an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        _fail(key, f"must be in [{low}, {high if high is not None else 'inf'}], got {value}")
    return int(value)


def _float(value: Any, key: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(key, f"expected a number, got {value!r}")
    if not low <= float(value) <= high:
        _fail(key, f"must be in [{low}, {high}], got {value}")
    return float(value)


def _name(value: Any, key: str) -> str:
    if not isinstance(value, str):
        _fail(key, f"expected a name (text), got {value!r}")
    name = normalise_name(value)
    if not _NAME.match(name):
        _fail(key, f"'{value}' is not a valid name: use 2-40 lowercase letters, spaces, ' or -")
    return name


def _colour(value: Any, key: str) -> tuple[float, float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        _fail(key, f"expected [r, g, b] with values 0-255, got {value!r}")
    return tuple(_float(v, f"{key}[{i}]", 0.0, 255.0) for i, v in enumerate(value))  # type: ignore[return-value]


def _names(value: Any, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)):
        _fail(key, f"expected a list of names, got {value!r}")
    return tuple(_name(v, f"{key}[{i}]") for i, v in enumerate(value))


def world_from_dict(values: Any) -> WorldSpec:
    """Validate a parsed YAML mapping into a :class:`WorldSpec`; errors name the key and the fix."""
    top = _keys(values, "", _TOP_KEYS, required=("world", "agent", "objects", "regions", "actions"))
    world = _name(top["world"], "world")

    # objects
    objects_node = _keys(top["objects"], "objects", list(top["objects"] or {}))
    objects: list[ObjectSpec] = []
    for raw_name, node in objects_node.items():
        key = f"objects.{raw_name}"
        name = _name(raw_name, key)
        node = _keys(node, key, _OBJECT_KEYS, required=("shape", "colour", "size"))
        shape = node["shape"]
        if shape not in SHAPES:
            _fail(f"{key}.shape", f"'{shape}' is not a shape.{_closest(str(shape), SHAPES)} Shapes: {list(SHAPES)}")
        size = node["size"]
        if not isinstance(size, (list, tuple)) or len(size) != 2:
            _fail(f"{key}.size", f"expected [half_height, half_width] in pixels at 64 px, got {size!r}")
        size_t = (_float(size[0], f"{key}.size[0]", 1.0, 20.0), _float(size[1], f"{key}.size[1]", 1.0, 20.0))
        objects.append(
            ObjectSpec(name, str(shape), _colour(node["colour"], f"{key}.colour"), size_t,
                       _names(node.get("synonyms"), f"{key}.synonyms"))
        )
    if len(objects) < 2:
        _fail("objects", "define at least two objects (the agent and one object it moves)")
    object_names = [o.name for o in objects]

    # regions
    regions_node = _keys(top["regions"], "regions", list(top["regions"] or {}))
    regions: list[RegionSpec] = []
    for raw_name, node in regions_node.items():
        key = f"regions.{raw_name}"
        name = _name(raw_name, key)
        node = _keys(node, key, _REGION_KEYS, required=("colour",))
        texture = node.get("texture", "plain")
        if texture not in TEXTURES:
            _fail(f"{key}.texture", f"'{texture}' is not a texture.{_closest(str(texture), TEXTURES)} Textures: {list(TEXTURES)}")
        regions.append(RegionSpec(name, _colour(node["colour"], f"{key}.colour"), str(texture),
                                  _names(node.get("synonyms"), f"{key}.synonyms")))
    if not regions:
        _fail("regions", "define at least one scene region (the clip background)")

    agent = _name(top["agent"], "agent")
    if agent not in object_names:
        _fail("agent", f"'{agent}' is not an object of this world.{_closest(agent, object_names)} Add it under objects:")

    # actions
    actions_node = _keys(top["actions"], "actions", list(top["actions"] or {}))
    actions: list[ActionSpec] = []
    for raw_name, node in actions_node.items():
        key = f"actions.{raw_name}"
        name = _name(raw_name, key)
        node = _keys(node, key, _ACTION_KEYS, required=_ACTION_KEYS)
        obj = _name(node["object"], f"{key}.object")
        if obj not in object_names:
            _fail(f"{key}.object", f"'{obj}' is not an object of this world.{_closest(obj, object_names)} "
                  "Define it under objects: or fix the name")
        if obj == agent:
            _fail(f"{key}.object", f"the agent '{agent}' moves objects; name the object it moves")
        motion = node["motion"]
        if motion not in MOTIONS:
            _fail(f"{key}.motion", f"'{motion}' is not a motion.{_closest(str(motion), MOTIONS)} Motions: {list(MOTIONS)}")
        actions.append(ActionSpec(name, obj, str(motion)))
    if len(actions) < 2:
        _fail("actions", "define at least two actions (a classifier needs two classes)")

    # names must be unique across objects, regions, synonyms and hypernyms: one text, one meaning
    owner: dict[str, str] = {}
    for kind, items in (("objects", objects), ("regions", regions)):
        for item in items:
            for text in (item.name, *item.synonyms):
                if text in owner:
                    _fail(f"{kind}.{item.name}", f"the name '{text}' is already used by {owner[text]}; "
                          "every name and synonym must be unique")
                owner[text] = f"{kind}.{item.name}"
    for index, action in enumerate(actions):
        if action.name in [a.name for a in actions[:index]]:
            _fail(f"actions.{action.name}", "action names must be unique")

    hypernyms_node = top.get("hypernyms") or {}
    hypernyms_node = _keys(hypernyms_node, "hypernyms", list(hypernyms_node))
    hypernyms: list[tuple[str, tuple[str, ...]]] = []
    for raw_name, members in hypernyms_node.items():
        key = f"hypernyms.{raw_name}"
        name = _name(raw_name, key)
        if name in owner:
            _fail(key, f"'{name}' is already the name of {owner[name]}; a group word must differ from every name")
        members_t = _names(members, key)
        if len(members_t) < 2:
            _fail(key, "a group needs at least two member objects")
        for member in members_t:
            if member not in object_names:
                _fail(key, f"member '{member}' is not an object.{_closest(member, object_names)}")
        owner[name] = key
        hypernyms.append((name, members_t))

    scene = _keys(top.get("scene") or {}, "scene", _SCENE_KEYS)
    shortcut = _keys(top.get("shortcut") or {}, "shortcut", _SHORTCUT_KEYS)
    if shortcut.get("by", "region") != "region":
        _fail("shortcut.by", f"'{shortcut.get('by')}' is not supported; the shortcut is carried by 'region'")
    others = _int(scene.get("others_per_clip", 4), "scene.others_per_clip", 0, len(objects) - 2)
    fractions = top.get("split_fractions", [0.6, 0.2, 0.2])
    if (not isinstance(fractions, (list, tuple)) or len(fractions) != 3
            or any(isinstance(f, bool) or not isinstance(f, (int, float)) or f <= 0 for f in fractions)
            or abs(sum(fractions) - 1.0) > 1e-6):
        _fail("split_fractions", f"need three positive shares [train, val, test] summing to 1, got {fractions!r}")
    resolution = top.get("resolution", 32)
    if isinstance(resolution, int) and not isinstance(resolution, bool):
        resolution = [resolution, resolution]
    if (not isinstance(resolution, (list, tuple)) or len(resolution) != 2
            or any(not isinstance(r, int) or r < 16 or r % 2 for r in resolution)):
        _fail("resolution", f"need a side or [height, width], even and >= 16, got {resolution!r}")

    return WorldSpec(
        world=world,
        description=str(top.get("description", "")).strip(),
        seed=_int(top.get("seed", 0), "seed", 0),
        clips_per_action=_int(top.get("clips_per_action", 30), "clips_per_action", 3, 100000),
        split_fractions=tuple(float(f) for f in fractions),  # type: ignore[arg-type]
        num_frames=_int(top.get("num_frames", 8), "num_frames", 2, 512),
        resolution=(int(resolution[0]), int(resolution[1])),
        fps=_int(top.get("fps", 8), "fps", 1, 240),
        crf=_int(top.get("crf", 12), "crf", 0, 51),
        contrast=_float(top.get("contrast", 0.4), "contrast", 0.05, 1.0),
        agent=agent,
        objects=tuple(objects),
        hypernyms=tuple(hypernyms),
        regions=tuple(regions),
        actions=tuple(actions),
        others_per_clip=others,
        confusable_per_clip=_int(scene.get("confusable_per_clip", 1), "scene.confusable_per_clip", 0, others),
        drift=_float(scene.get("drift", 4.0), "scene.drift", 0.0, 32.0),
        shortcut=_float(shortcut.get("probability", 0.0), "shortcut.probability", 0.0, 1.0),
    )


def world_to_dict(spec: WorldSpec) -> dict[str, Any]:
    """The YAML/JSON form of a spec (what :func:`world_from_dict` reads back to an equal spec)."""
    return {
        "world": spec.world,
        "description": spec.description,
        "seed": spec.seed,
        "clips_per_action": spec.clips_per_action,
        "split_fractions": list(spec.split_fractions),
        "num_frames": spec.num_frames,
        "resolution": list(spec.resolution),
        "fps": spec.fps,
        "crf": spec.crf,
        "contrast": spec.contrast,
        "agent": spec.agent,
        "objects": {
            o.name: {"shape": o.shape, "colour": list(o.colour), "size": list(o.size), "synonyms": list(o.synonyms)}
            for o in spec.objects
        },
        "hypernyms": {name: list(members) for name, members in spec.hypernyms},
        "regions": {
            r.name: {"colour": list(r.colour), "texture": r.texture, "synonyms": list(r.synonyms)}
            for r in spec.regions
        },
        "actions": {a.name: {"object": a.object, "motion": a.motion} for a in spec.actions},
        "scene": {
            "others_per_clip": spec.others_per_clip,
            "confusable_per_clip": spec.confusable_per_clip,
            "drift": spec.drift,
        },
        "shortcut": {"by": "region", "probability": spec.shortcut},
    }


def preset_names() -> list[str]:
    """The worlds shipped with the package (``a2o/data/synth/worlds/<name>.yaml``)."""
    folder = resources.files("a2o.data.synth") / "worlds"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def preset_path(name: str) -> str:
    """Path of a shipped world spec; a ConfigError lists the valid names."""
    names = preset_names()
    if name not in names:
        raise ConfigError(f"A2O-Synth preset '{name}' is unknown.{_closest(name, names)} Presets: {names}")
    return str(resources.files("a2o.data.synth") / "worlds" / f"{name}.yaml")


def load_world_spec(spec: str) -> WorldSpec:
    """Read a world spec: a preset name ('household', 'tiny') or the path/URI of a YAML file."""
    import fsspec
    import yaml

    path = spec if (spec.endswith((".yaml", ".yml")) or os.sep in spec or "://" in spec) else preset_path(spec)
    try:
        with fsspec.open(path, "r", encoding="utf-8") as handle:
            values = yaml.safe_load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(f"world spec file not found: {path} (give a preset name {preset_names()} "
                          "or the path of a YAML spec, see docs/WORLDS.md)") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"world spec {path} is not valid YAML: {exc}") from exc
    return world_from_dict(values)


def apply_world_overrides(spec: WorldSpec, overrides: Mapping[str, Any]) -> WorldSpec:
    """Replace top-level scalar fields (``clips_per_action=60``, ``shortcut=0``), re-validated."""
    values = world_to_dict(spec)
    simple = {"seed", "clips_per_action", "split_fractions", "num_frames", "resolution", "fps", "crf", "contrast"}
    for key, value in overrides.items():
        if key in simple:
            values[key] = list(value) if isinstance(value, tuple) else value
        elif key in ("others_per_clip", "confusable_per_clip", "drift"):
            values["scene"][key] = value
        elif key == "shortcut":
            values["shortcut"]["probability"] = value
        elif key == "actions":  # a subset of the world's actions, by name
            names = [normalise_name(a) for a in value]
            unknown = [a for a in names if a not in values["actions"]]
            if unknown:
                raise ConfigError(f"world override actions: {unknown} are not actions of '{spec.world}'; "
                                  f"valid: {list(values['actions'])}")
            values["actions"] = {a: values["actions"][a] for a in names}
        else:
            valid = sorted(simple | {"others_per_clip", "confusable_per_clip", "drift", "shortcut", "actions"})
            raise ConfigError(f"world override '{key}' is unknown.{_closest(key, valid)} Valid: {valid}")
    return world_from_dict(values)


def world_lexicon(spec: WorldSpec, hypernym_weight: float = 0.5) -> dict[str, list[list[Any]]]:
    """Text -> [[channel, weight], ...]: names and synonyms at 1.0, group words at ``hypernym_weight``."""
    lexicon: dict[str, list[list[Any]]] = {}
    for item in (*spec.objects, *spec.regions):
        for text in (item.name, *item.synonyms):
            lexicon[text] = [[item.name, 1.0]]
    for name, members in spec.hypernyms:
        lexicon[name] = [[member, hypernym_weight] for member in members]
    return lexicon

