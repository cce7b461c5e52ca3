"""Resume and faults on real object storage and on two nodes (2-4 minutes each).

Each test runs one scenario of ``benchmarks/reliability.py`` (the product's CLI in its own
processes, an S3 server on loopback, Ray's multi-node test cluster) and checks what the scenario
counted: no trial lost or repeated, no map entry written twice (bucket versioning counts every
write), no corrupt entry, no lock left behind. The bucket resume runs in the default tier (about 2.5
minutes: it fits CI's time); the node and shared-cache scenarios are ``slow`` (about 3 minutes
each). The default tier also covers the map cache and its locks on S3 in seconds
(tests/test_object_store.py) and the resume against a new LLM port (tests/test_service.py).
"""

from __future__ import annotations

import pytest

pytest.importorskip("s3fs", reason="needs s3fs and moto: make install (dev extras)")
pytest.importorskip("moto.server", reason="needs moto[server]: make install (dev extras)")

from benchmarks import reliability  # noqa: E402


@pytest.fixture(autouse=True)
def _ray_auth_off(monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def _no_loss(result: reliability.ScenarioResult, planned: int) -> None:
    assert (result.planned, result.run, result.repeated, result.lost) == (planned, planned, 0, 0), result
    assert result.corrupt_entries == 0, result
    assert not result.notes or all("retried" in note or "killed" in note for note in result.notes), result.notes


def test_search_on_s3_resumes_from_the_bucket_alone(tmp_path):
    """storage.root=s3://…: frames, maps, Tune state, the replay cache and best/ live in the bucket;
    the run is interrupted on one 'machine' (its working dir then deleted) and resumed on another."""
    result = reliability.scenario_bucket(tmp_path, llm="fake")
    _no_loss(result, 3)
    assert not result.notes, result.notes  # best/ complete, frames reused, Tune state in the bucket
    assert result.max_writes_per_entry == 1 and result.map_entries > 0
    assert result.proposals == 3 and result.fallbacks == 0  # the searcher's stats came back from the bucket
    assert [t["source"] for t in result.trials] == ["llm"] * 3


@pytest.mark.slow
def test_worker_node_killed_mid_trial_loses_and_repeats_nothing(tmp_path):
    result = reliability.scenario_node(tmp_path)
    _no_loss(result, 4)
    assert result.max_writes_per_entry == 1  # no (video, class) computed twice, the killed trial's included
    assert any("1 trial(s) retried" in note or "2 trial(s) retried" in note for note in result.notes), result.notes


@pytest.mark.slow
def test_two_searches_share_one_s3_map_cache(tmp_path):
    result = reliability.scenario_shared(tmp_path)
    _no_loss(result, 4)
    assert result.max_writes_per_entry == 1
    assert result.maps_computed == result.map_entries  # every entry computed by one search, once
