"""Compute locks for the map cache on any storage: a local disk, or an object store without rename.

A lock is one small file, ``<class dir>/.lock``, whose body names its holder::

    {"token": "<uuid4 hex>", "pid": 1234, "host": "node-2", "time": 1765000000.0}

Taking it must be an *exclusive create*: exactly one of several concurrent writers succeeds.

- **Local filesystem**: ``open(O_CREAT | O_EXCL)``; the heartbeat is the file's mtime.
- **S3 and S3-compatible stores** (s3fs): a conditional PUT, ``If-None-Match: *``. The store accepts
  the first PUT of a key and answers every later one with ``412 Precondition Failed``
  (``FileExistsError``) until the key is deleted. No rename is involved: a PUT is all-or-nothing,
  so a reader sees a whole lock body or none. The holder's heartbeat rewrites the body with a
  fresh ``time`` (after checking that the token is still its own).
- **memory://** (one process): create-if-absent under a process lock.

A lock whose heartbeat is older than ``stale_s``, or whose holder process is gone from this host,
is abandoned (a killed trial, a dead node): it is deleted and taken again with an exclusive create,
so of several processes that find it abandoned, one wins. Clocks matter on object stores (the age
is now minus the body's ``time``, written by the holder's clock): ``stale_s`` (minutes) must exceed
the nodes' clock skew, which NTP keeps to milliseconds.

Stores that ignore ``If-None-Match`` (some older S3-compatible servers) are detected once with a
probe key: then, as on any store without exclusive create, every process "holds" every lock, two
trials may compute the same class, and the map cache's checksummed completion markers keep every
entry whole (the cost is repeated work, logged once as a warning, never a wrong map).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["LockStore", "lock_store_for"]

_MEMORY_GUARD = threading.Lock()


def _protocols(fs: Any) -> set[str]:
    protocol = fs.protocol
    return set(protocol if isinstance(protocol, (tuple, list)) else (protocol,))


def _this_host() -> str:
    return os.uname().nodename


def _pid_is_gone(holder: dict) -> bool:
    """True when ``holder`` ran on this host and its process no longer exists."""
    try:
        if holder.get("host") != _this_host():
            return False
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False  # another user's process, or a body without a pid: trust the heartbeat
    return False


class LockStore:
    """Exclusive, heartbeat-refreshed locks on one fsspec filesystem (see the module docstring).

    ``exclusive`` is False where the store cannot create exclusively: every ``acquire`` succeeds.
    """

    kind = "none"
    exclusive = False

    def __init__(self, fs: Any, stale_s: float):
        self.fs = fs
        self.stale_s = float(stale_s)
        self.token = uuid.uuid4().hex  # per process (re-drawn after unpickling)
        self._warned = False

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("token", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.token = uuid.uuid4().hex

    def _body(self) -> bytes:
        return json.dumps({"token": self.token, "pid": os.getpid(), "host": _this_host(), "time": time.time()}).encode()

    # Stores without exclusive create: every caller proceeds (the cache stays correct by checksum).
    def acquire(self, path: str) -> bool:
        if not self._warned:
            log.warning(
                "map cache: storage %s has no exclusive create; concurrent trials may compute the same "
                "class twice (entries stay whole: each is checked against its marker's sha256)",
                sorted(_protocols(self.fs)),
            )
            self._warned = True
        return True

    def refresh(self, path: str) -> None:
        return None

    def release(self, path: str) -> None:
        return None

    def is_held(self, path: str) -> bool:
        return False


class LocalLocks(LockStore):
    """``O_CREAT | O_EXCL`` on a local (or POSIX network) filesystem; mtime is the heartbeat."""

    kind = "local"
    exclusive = True

    def _holder(self, path: str) -> dict:
        try:
            with open(path, encoding="utf-8") as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return {}  # unreadable or half-written: trust the age

    def _abandoned(self, path: str) -> bool | None:
        """True/False, or None when the lock is gone."""
        try:
            age = time.time() - os.path.getmtime(path)
        except FileNotFoundError:
            return None
        return age > self.stale_s or _pid_is_gone(self._holder(path))

    def acquire(self, path: str) -> bool:
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                abandoned = self._abandoned(path)
                if abandoned is None:
                    continue  # released meanwhile: try once more
                if not abandoned:
                    return False
                log.warning("map cache: breaking abandoned lock %s (idle > %.0f s or holder gone)", path, self.stale_s)
                try:
                    os.remove(path)
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "wb") as fh:
                fh.write(self._body())
            return True
        return False

    def refresh(self, path: str) -> None:
        try:
            os.utime(path)
        except FileNotFoundError:
            pass

    def release(self, path: str) -> None:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass

    def is_held(self, path: str) -> bool:
        return self._abandoned(path) is False


class ConditionalPutLocks(LockStore):
    """Exclusive create by a conditional write (S3 ``If-None-Match: *``; memory:// in-process)."""

    kind = "conditional-put"
    exclusive = True

    def __init__(self, fs: Any, stale_s: float, probe_dir: str):
        super().__init__(fs, stale_s)
        self.probe_dir = probe_dir
        self._probed: bool | None = None

    def _create(self, path: str, payload: bytes) -> bool:
        """Write ``path`` only if absent; False when it exists."""
        if "memory" in _protocols(self.fs):
            with _MEMORY_GUARD:
                if self.fs.exists(path):
                    return False
                self.fs.pipe_file(path, payload)
                return True
        try:
            self.fs.pipe_file(path, payload, mode="create")
            return True
        except FileExistsError:
            return False
        except OSError as exc:  # some stores answer 412 without naming the condition
            if "412" in str(exc) or "Precondition" in str(exc):
                return False
            raise

    def _supported(self) -> bool:
        """Probe once whether the store honours the condition (a second create must fail)."""
        if self._probed is None:
            probe = f"{self.probe_dir.rstrip('/')}/.lock-probe-{uuid.uuid4().hex}"
            try:
                self._probed = self._create(probe, b"1") and not self._create(probe, b"2")
            finally:
                try:
                    self.fs.rm(probe)
                except FileNotFoundError:
                    pass
            if not self._probed:
                log.warning("map cache: the object store ignores conditional writes (If-None-Match); "
                            "locks are off and concurrent trials may compute a class twice")
        return self._probed

    def _holder(self, path: str) -> dict | None:
        """The lock's body; None when the lock is gone; {} when unreadable."""
        try:
            return json.loads(self.fs.cat_file(path))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    def _abandoned(self, holder: dict) -> bool:
        beat = holder.get("time")
        if not isinstance(beat, (int, float)):
            return True  # a body without a heartbeat is a torn or foreign write
        return time.time() - beat > self.stale_s or _pid_is_gone(holder)

    def acquire(self, path: str) -> bool:
        if not self._supported():
            return LockStore.acquire(self, path)
        for _ in range(2):
            if self._create(path, self._body()):
                return True
            holder = self._holder(path)
            if holder is None:
                continue  # released meanwhile: try once more
            if holder.get("token") == self.token:
                return True  # ours already (a retried call)
            if not self._abandoned(holder):
                return False
            log.warning("map cache: breaking abandoned lock %s (heartbeat > %.0f s old or holder gone)",
                        path, self.stale_s)
            try:
                self.fs.rm(path)
            except FileNotFoundError:
                pass
        return False

    def refresh(self, path: str) -> None:
        if not self._supported():
            return
        holder = self._holder(path)
        if holder and holder.get("token") == self.token:
            self.fs.pipe_file(path, self._body())

    def release(self, path: str) -> None:
        if not self._supported():
            return
        holder = self._holder(path)
        if holder is not None and holder.get("token") in (self.token, None):
            try:
                self.fs.rm(path)
            except FileNotFoundError:
                pass

    def is_held(self, path: str) -> bool:
        if not self._supported():
            return False
        holder = self._holder(path)
        return holder is not None and not self._abandoned(holder)


def lock_store_for(fs: Any, stale_s: float, probe_dir: str) -> LockStore:
    """The lock kind ``fs`` supports: local O_EXCL, conditional PUT (S3, memory), else none."""
    protocols = _protocols(fs)
    if "file" in protocols or "local" in protocols:
        return LocalLocks(fs, stale_s)
    if protocols & {"s3", "s3a", "memory"}:
        return ConditionalPutLocks(fs, stale_s, probe_dir)
    return LockStore(fs, stale_s)
