"""The map cache and its compute locks on a real S3 protocol (moto's S3 server on loopback).

Object stores have no rename and no O_EXCL: entries are single PUTs (whole or absent), markers
carry the data's sha256, and the compute lock is a conditional PUT (``If-None-Match: *``).
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

pytest.importorskip("s3fs", reason="the object-store tests need s3fs and moto: make install (dev extras)")
pytest.importorskip("moto.server", reason="the object-store tests need moto[server]: make install (dev extras)")

from a2o.detect.cache import MapCache  # noqa: E402
from a2o.detect.locks import ConditionalPutLocks, LocalLocks, LockStore, lock_store_for  # noqa: E402
from tests.s3_server import S3Server, apply_env  # noqa: E402
from tests.test_map_cache import RES, CountingFactory, MemoryStore, _expected  # noqa: E402


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    server = S3Server(str(tmp_path_factory.mktemp("moto") / "moto.log")).start()
    yield server
    server.stop()


@pytest.fixture
def bucket(s3_server, monkeypatch, request):
    apply_env(monkeypatch, s3_server)
    name = "a2o-" + request.node.name.replace("_", "-")[:40].strip("-").lower()
    return s3_server.make_bucket(name)


@pytest.fixture
def store(tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    return MemoryStore(str(masks))


def _s3(uri: str):
    import fsspec

    return fsspec.core.url_to_fs(uri)


def test_conditional_put_lock_is_exclusive_refreshed_released_and_taken_over(bucket):
    fs, root = _s3(bucket)
    first, second = (lock_store_for(fs, stale_s=30.0, probe_dir=root) for _ in range(2))
    assert isinstance(first, ConditionalPutLocks) and first.exclusive
    path = f"{root}/cls/.lock"
    assert first.acquire(path)
    assert not second.acquire(path) and second.is_held(path)  # the second process waits
    before = json.loads(fs.cat_file(path))["time"]
    time.sleep(0.05)
    first.refresh(path)
    assert json.loads(fs.cat_file(path))["time"] > before
    second.release(path)  # not its lock: a no-op
    assert fs.exists(path)
    first.release(path)
    assert not fs.exists(path) and not second.is_held(path)
    assert second.acquire(path)
    second.release(path)
    # A live holder on another node keeps its lock; one that stopped beating (its node died) is taken over.
    other = {"token": "other-node", "pid": 1, "host": "gone-node"}
    fs.pipe_file(path, json.dumps({**other, "time": time.time()}).encode())
    assert not first.acquire(path) and first.is_held(path)
    fs.pipe_file(path, json.dumps({**other, "time": time.time() - 60}).encode())
    assert not first.is_held(path)
    assert first.acquire(path)
    assert json.loads(fs.cat_file(path))["token"] == first.token


def test_only_one_of_many_concurrent_acquirers_wins(bucket):
    fs, root = _s3(bucket)
    stores = [lock_store_for(fs, stale_s=30.0, probe_dir=root) for _ in range(6)]
    path = f"{root}/race/.lock"
    wins: list[bool] = []
    barrier = threading.Barrier(len(stores))

    def contend(lock_store):
        barrier.wait()
        wins.append(lock_store.acquire(path))

    threads = [threading.Thread(target=contend, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(wins) == [False] * 5 + [True]


def test_store_that_ignores_conditions_is_detected_and_locks_turn_off(caplog):
    from fsspec.implementations.memory import MemoryFileSystem

    class IgnoresConditions(MemoryFileSystem):
        protocol = ("s3",)

        def pipe_file(self, path, value, mode="overwrite", **kwargs):  # drops If-None-Match
            return super().pipe_file(path, value, **kwargs)

    locks = lock_store_for(IgnoresConditions(), stale_s=30.0, probe_dir="/probe")
    with caplog.at_level("WARNING"):
        assert locks.acquire("/probe/x/.lock") and locks.acquire("/probe/x/.lock")
    assert "ignores conditional writes" in caplog.text
    assert not locks.is_held("/probe/x/.lock")


def test_lock_kinds_by_protocol(tmp_path):
    import fsspec

    assert isinstance(lock_store_for(fsspec.filesystem("file"), 10, str(tmp_path)), LocalLocks)
    assert isinstance(lock_store_for(fsspec.filesystem("memory"), 10, "/x"), ConditionalPutLocks)
    plain = lock_store_for(fsspec.filesystem("http"), 10, "/x")
    assert type(plain) is LockStore and not plain.exclusive


def test_map_cache_on_s3_writes_whole_entries_reuses_them_and_repairs_corruption(bucket, store):
    factory = CountingFactory()
    cache = MapCache(f"{bucket}/maps", factory.fingerprint, RES, poll_s=0.05)
    first = cache.ensure_maps(["ball", "bat"], store, factory)
    assert first.stats.computed_pairs == 6
    np.testing.assert_array_equal(first.read("vid1"), _expected(store, "vid1", ["ball", "bat"]))
    objects = cache.fs.find(cache.base)
    assert not [o for o in objects if ".tmp-" in o or o.endswith(".lock")]  # no rename leftovers, no lock
    assert sum(o.endswith(".done") for o in objects) == 6

    again = cache.ensure_maps(["bat", "court"], store, factory)
    assert again.stats.reused_pairs == 3 and again.stats.computed_pairs == 3

    data_path, _ = cache.entry_paths("ball", "vid2")
    cache.fs.pipe_file(data_path, b"\x93NUMPY garbage")  # a torn or foreign write
    repaired = cache.ensure_maps(["ball"], store, factory)
    assert repaired.stats.corrupt_pairs == 1 and repaired.stats.computed_pairs == 1
    np.testing.assert_array_equal(repaired.read("vid2")[:, 0], _expected(store, "vid2", ["ball"])[:, 0])


def test_two_processes_on_one_s3_cache_compute_each_pair_once(bucket, store):
    """Two trials (threads with their own caches, as two processes) need overlapping classes."""
    factory = CountingFactory(delay_s=0.05)
    readers = {}

    def trial(name, classes):
        cache = MapCache(f"{bucket}/shared", factory.fingerprint, RES, poll_s=0.05)
        readers[name] = cache.ensure_maps(classes, store, factory)

    threads = [threading.Thread(target=trial, args=("a", ["ball", "bat"])),
               threading.Thread(target=trial, args=("b", ["bat", "court"]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert factory.pairs("bat") == 3, factory.calls  # computed by exactly one of them
    assert readers["a"].stats.computed_pairs + readers["b"].stats.computed_pairs == 9
    np.testing.assert_array_equal(readers["a"].read("vid0")[:, 1], readers["b"].read("vid0")[:, 0])
    fs = readers["a"].cache.fs
    assert not [o for o in fs.find(readers["a"].cache.base) if o.endswith(".lock")]


def test_publishing_best_twice_replaces_it_in_place(tmp_path, bucket):
    """best/ goes to the bucket as its files (never nested as best/best), and a later best/ that
    lacks a file of the earlier one leaves no stale copy of it behind."""
    from a2o.service import publish

    local = tmp_path / "best"
    (local / "model").mkdir(parents=True)
    (local / "model" / "weights.bin").write_bytes(b"1")
    (local / "detector").mkdir()
    (local / "detector" / "detector.json").write_text("{}")
    (local / "metrics.json").write_text('{"v": 1}')
    publish(str(local), f"{bucket}/run/best")
    (local / "metrics.json").write_text('{"v": 2}')
    (local / "detector" / "detector.json").unlink()
    publish(str(local), f"{bucket}/run/best")
    fs, root = _s3(f"{bucket}/run/best")
    assert sorted(p.removeprefix(root + "/") for p in fs.find(root)) == ["metrics.json", "model/weights.bin"]
    assert json.loads(fs.cat_file(f"{root}/metrics.json")) == {"v": 2}
