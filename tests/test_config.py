"""Config: YAML + overrides, validation naming the key, unknown keys naming the closest one."""

from __future__ import annotations

import dataclasses

import pytest

from a2o.cli import main
from a2o.config import ExperimentConfig, config_from_dict, config_to_dict, field_docs, load_config
from a2o.errors import ConfigError


def write_yaml(tmp_path, text: str) -> str:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return str(path)


def test_defaults_round_trip():
    cfg = ExperimentConfig()
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_yaml_and_overrides(tmp_path):
    path = write_yaml(tmp_path, "train:\n  lr: 3.0e-4\n  epochs: 2\ndata:\n  num_frames: 8\n")
    cfg = load_config(path, ["train.lr=1e-4", "search.initial_classes=hand,ball", "train.flip=true"])
    assert cfg.train.lr == pytest.approx(1e-4)  # override wins over the file
    assert cfg.train.epochs == 2
    assert cfg.data.num_frames == 8
    assert cfg.search.initial_classes == ["hand", "ball"]
    assert cfg.train.flip is True


def test_frozen():
    cfg = ExperimentConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.lr = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["train.lrr=1"], "Did you mean 'train.lr'"),
        (["trian.lr=1"], "Did you mean 'train'"),
        (["search.searcher=icrll"], "Did you mean 'icrl'"),
        # Too far from 'lr' by the leaf name alone: the full dotted names find it.
        (["train.lr_typo=1"], "Did you mean 'train.lr'"),
        (["detect.learned_epoch=3"], "Did you mean 'detect.learned_epochs'"),
    ],
)
def test_unknown_key_names_closest(overrides, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config(None, overrides)


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.lr=-1", "train.lr"),
        ("train.epochs=0", "train.epochs"),
        ("data.val_fraction=1.5", "data.val_fraction"),
        ("detect.box_threshold=2", "detect.box_threshold"),
        ("serve.port=70000", "serve.port"),
        ("train.num_workers=two", "train.num_workers"),
        ("train.augment=maybe", "train.augment"),
        ("llm.prompt=huge", "llm.prompt"),
        ("search.screen_candidates=17", "search.screen_candidates"),
        ("search.max_fallback_share=1.5", "search.max_fallback_share"),
    ],
)
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_screening_is_an_option_of_the_icrl_searchers_only():
    with pytest.raises(ConfigError, match=r"search.screen_candidates: screening is an option of the ICRL searchers"):
        load_config(None, ["search.searcher=random", "search.screen_candidates=4"])
    assert load_config(None, ["search.searcher=hybrid", "search.screen_candidates=4"]).search.screen_candidates == 4


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(None, ["train.lr"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write_yaml(tmp_path, "- a\n- b\n"))


def test_every_field_documented():
    docs = field_docs()
    assert len(docs) > 50
    undocumented = [key for key, _, doc in docs if len(doc) < 10]
    assert undocumented == []


def test_cli_config_show_and_error(tmp_path, capsys):
    assert main(["config", "show", "--set", "train.lr=0.5"]) == 0
    assert "lr: 0.5" in capsys.readouterr().out
    assert main(["config", "show", "--set", "train.lrr=0.5"]) == 1
    assert "train.lr" in capsys.readouterr().err


def test_preflight_fails_before_ray_on_a_bad_root_a_bad_pairing_or_a_trial_too_big(tmp_path, monkeypatch):
    import ray

    from a2o.errors import DataError, ResourceError
    from a2o.service import preflight_inputs

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(DataError, match=r"data.root: .*nowhere.* does not exist"):
        preflight_inputs(load_config(None, ["data.dataset=ssv2", f"data.root={tmp_path / 'nowhere'}"]))
    with pytest.raises(ConfigError, match=r"detect.detector: 'learned'.*data.dataset is 'csv'"):
        preflight_inputs(load_config(None, ["data.dataset=csv", f"data.root={tmp_path}", "detect.detector=learned"]))
    with pytest.raises(ResourceError, match=r"= 4.5 CPU.*local Ray cluster \(ray.num_cpus.*\) has 2 CPU"):
        preflight_inputs(load_config(None, [f"data.root={tmp_path}", "ray.num_cpus=2", "train.num_workers=4"]))
    preflight_inputs(load_config(None, [f"data.root={tmp_path}", "ray.num_cpus=2"]))  # fits: no error
    assert not ray.is_initialized()
