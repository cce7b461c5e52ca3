"""The embedded local LLM: a managed OpenAI-compatible server, so a search needs no API key.

Why a separate server process rather than in-process ``llama_cpp.Llama``: the ICRL searcher
already speaks the OpenAI protocol (:mod:`searchers.llm_client`), so one client serves OpenAI,
vLLM and the local model alike; a process also keeps a gigabyte of weights and llama.cpp's
threads out of the Ray driver, and can be stopped cleanly by its PID.

Two layers:

- :class:`ManagedServer` runs *any* HTTP server command on a free loopback port: it binds the
  port, waits (bounded) until ``GET /v1/models`` answers, writes the server's output to a log
  file in the run directory, and stops the process by its own PID (terminate, wait, kill) on
  :meth:`~ManagedServer.stop`, at interpreter exit (``atexit``) or when a ``with`` block is left
  by Ctrl-C. Failures raise :class:`LocalServerError` with the tail of the log.
- :class:`LocalLLMServer` is a :class:`ManagedServer` for ``python -m llama_cpp.server`` with a
  model of the registry (:mod:`searchers.models`), fetched and verified on first use.

Example::

    from searchers.local_llm import LocalLLMServer
    from searchers.llm_client import LLMClientSpec

    with LocalLLMServer("qwen2.5-1.5b-instruct", log_dir="runs/demo") as server:
        client = LLMClientSpec(base_url=server.base_url).build()
        print(client.complete([{"role": "user", "content": "Name one object."}]).text)

The search service uses :func:`start_local_llm` when ``llm.base_url`` is ``'local'``.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from a2o.errors import LLMUnavailableError, MissingDependencyError
from searchers.models import LocalModel, ensure_model, get_model

__all__ = [
    "LocalServerError",
    "ManagedServer",
    "LocalLLMServer",
    "free_port",
    "port_is_free",
    "start_local_llm",
    "LOG_FILENAME",
]

logger = logging.getLogger(__name__)

LOG_FILENAME = "llm_server.log"
_LOG_TAIL_LINES = 30
# Modules `python -m llama_cpp.server` imports: llama-cpp-python itself and its [server] extra.
_SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")


class LocalServerError(LLMUnavailableError):
    """The local server did not come up, crashed, or its port is taken (the message has its log tail)."""


def die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGTERM it when its parent dies (even by SIGKILL).

    ``atexit`` and ``finally`` cover normal exits, Ctrl-C and SIGTERM; this covers a driver that is
    killed outright, so no llama.cpp server outlives the search that started it.
    """
    import ctypes
    import signal as _signal

    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, _signal.SIGTERM)
    except OSError:
        pass


def free_port(host: str = "127.0.0.1") -> int:
    """A port on ``host`` that is free right now (the OS picks it by binding port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(host: str, port: int) -> bool:
    """True if nothing is bound to ``host:port`` (tested by binding it, without SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


class ManagedServer:
    """Run an HTTP server command on a loopback port, health-check it, and stop it by PID.

    Args:
        argv: The command. ``{host}`` and ``{port}`` in any element are replaced at start.
        log_dir: Folder (the run directory) for the server's combined stdout/stderr; created.
        port: Port to bind; 0 picks a free one (and retries with another if it is taken between
            the pick and the server's bind).
        host: Interface to bind; loopback by default, so the model is not exposed on the network.
        startup_timeout_s: Longest wait for ``/v1/models`` to answer (model load included).
        log_name: File name of the log inside ``log_dir``.
        name: Label used in logs and errors.

    The process runs in its own session, so a Ctrl-C in the terminal reaches A2O only and A2O
    decides when the server stops (a Tune driver finishing its graceful shutdown can still ask the
    LLM). Use it as a context manager, or call :meth:`start` and :meth:`stop`; an ``atexit`` hook
    stops a server that is still running when the interpreter exits.
    """

    health_path = "/v1/models"

    def __init__(
        self,
        argv: Sequence[str],
        *,
        log_dir: os.PathLike | str,
        port: int = 0,
        host: str = "127.0.0.1",
        startup_timeout_s: float = 300.0,
        log_name: str = LOG_FILENAME,
        name: str = "LLM server",
    ):
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {port}")
        if startup_timeout_s <= 0:
            raise ValueError(f"startup_timeout_s must be > 0, got {startup_timeout_s}")
        self.argv = list(argv)
        self.log_dir = Path(log_dir)
        self.log_path = self.log_dir / log_name
        self.requested_port = int(port)
        self.host = host
        self.startup_timeout_s = float(startup_timeout_s)
        self.name = name
        self.port: Optional[int] = None
        self.process: Optional[subprocess.Popen] = None

    # ------------------------------------------------------------------ properties
    @property
    def pid(self) -> Optional[int]:
        return self.process.pid if self.process is not None else None

    @property
    def base_url(self) -> str:
        """``http://host:port/v1`` of the running server (what ``llm.base_url`` should be)."""
        if self.port is None:
            raise LocalServerError(f"{self.name} is not started")
        return f"http://{self.host}:{self.port}/v1"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        return _tail(self.log_path, lines)

    # ------------------------------------------------------------------ lifecycle
    def _prepare(self) -> None:
        """Hook run once before the first launch (LocalLLMServer fetches the model here)."""

    def start(self) -> str:
        """Launch, wait until healthy, and return :attr:`base_url`.

        Raises:
            LocalServerError: The port is taken, the process exited, or it did not answer within
                ``startup_timeout_s``; the message carries the tail of the log. Nothing is left running.
        """
        if self.running():
            return self.base_url
        self._prepare()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        attempts = 3 if self.requested_port == 0 else 1
        for attempt in range(1, attempts + 1):
            port = self.requested_port or free_port(self.host)
            if not port_is_free(self.host, port):
                raise LocalServerError(
                    f"port {port} on {self.host} is already in use: pick another port (or 0 for a free one)."
                )
            try:
                self._launch(port)
                self._wait_healthy()
            except LocalServerError as exc:
                if attempt < attempts and "address already in use" in self.log_tail().lower():
                    logger.warning("%s: port %d was taken before the server bound it; retrying", self.name, port)
                    continue
                raise exc
            except BaseException:
                # Ctrl-C while waiting: __exit__ never runs when __enter__ raises, so stop here.
                self.stop()
                raise
            return self.base_url
        raise AssertionError("unreachable: the loop returns or raises")

    def _launch(self, port: int) -> None:
        argv = [arg.replace("{host}", self.host).replace("{port}", str(port)) for arg in self.argv]
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} start: {' '.join(argv)}\n")
        log_file = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it; closed right after Popen
        try:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                preexec_fn=die_with_parent if sys.platform.startswith("linux") else None,
            )
        except OSError as exc:
            raise LocalServerError(f"{self.name}: cannot run {argv[0]!r} ({exc})") from None
        finally:
            log_file.close()
        self.port = port
        atexit.register(self.stop)
        logger.info("%s starting (pid %d) on %s:%d, log %s", self.name, self.process.pid, self.host, port, self.log_path)

    def _health_ok(self) -> bool:
        url = f"http://{self.host}:{self.port}{self.health_path}"
        try:
            with urllib.request.urlopen(url, timeout=2.0) as response:
                if response.status != 200:
                    return False
                json.loads(response.read() or b"null")
                return True
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def _wait_healthy(self) -> None:
        assert self.process is not None
        started = time.monotonic()
        deadline = started + self.startup_timeout_s
        next_note = started + 15.0
        while True:
            code = self.process.poll()
            if code is not None:
                self._forget()
                raise LocalServerError(
                    f"{self.name} exited with code {code} during start-up. Last lines of "
                    f"{self.log_path}:\n{self.log_tail()}"
                )
            if self._health_ok():
                logger.info("%s ready at %s (%.1f s)", self.name, self.base_url, time.monotonic() - started)
                return
            now = time.monotonic()
            if now >= deadline:
                self.stop()
                raise LocalServerError(
                    f"{self.name} did not answer {self.health_path} within {self.startup_timeout_s:.0f} s "
                    f"and was stopped. Last lines of {self.log_path}:\n{self.log_tail()}"
                )
            if now >= next_note:
                logger.info("%s: still starting (%.0f s)...", self.name, now - started)
                next_note = now + 15.0
            time.sleep(0.2)

    def check_alive(self) -> None:
        """Raise :class:`LocalServerError` with the log tail if the server process has died."""
        if self.process is not None and self.process.poll() is not None:
            code = self.process.returncode
            self._forget()
            hint = ""
            if code == -4:  # SIGILL: CPU kernels the machine cannot run
                hint = (" (SIGILL: llama.cpp was built with CPU instructions this machine does not run;"
                        " rebuild it with `make reinstall-llm`)")
            raise LocalServerError(
                f"{self.name} exited unexpectedly with code {code}{hint}. "
                f"Last lines of {self.log_path}:\n{self.log_tail()}"
            )

    def _forget(self) -> None:
        atexit.unregister(self.stop)
        self.process = None

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the server by its PID: SIGTERM, wait up to ``timeout_s``, then SIGKILL. Idempotent."""
        process = self.process
        if process is None:
            return
        self._forget()
        if process.poll() is None:
            logger.info("Stopping %s (pid %d)", self.name, process.pid)
            process.terminate()
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("%s (pid %d) ignored SIGTERM for %.0f s; killing it", self.name, process.pid, timeout_s)
                process.send_signal(signal.SIGKILL)
                process.wait()
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} stopped (exit code {process.returncode})\n")

    def __enter__(self) -> ManagedServer:
        self.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = f"{self.host}:{self.port}" if self.port else "not started"
        return f"{type(self).__name__}({self.name!r}, {where}, pid={self.pid})"


def _require_llama_cpp_server() -> None:
    missing = [module for module in _SERVER_MODULES if importlib.util.find_spec(module) is None]
    if missing:
        raise MissingDependencyError(
            f"the embedded local LLM needs llama-cpp-python's server ({', '.join(missing)} not "
            "installed): pip install 'a2o[local-llm]' (or make install-llm); it compiles llama.cpp, "
            "about 8 minutes on 2 cores. Or set llm.base_url to an OpenAI-compatible endpoint."
        )


class LocalLLMServer(ManagedServer):
    """``python -m llama_cpp.server`` serving a registry model on a loopback port.

    Args:
        model_name: A :data:`searchers.models.MODELS` name (``llm.local_model``).
        log_dir: The run directory; the server log goes to ``log_dir/llm_server.log``.
        port: 0 (default) picks a free port.
        host: Loopback by default.
        startup_timeout_s: Bounded wait for the model to load and ``/v1/models`` to answer.
        cache_dir: Model cache (default ``$XDG_CACHE_HOME/a2o/models``).
        n_threads: llama.cpp threads; default: every CPU this process may use (llama-cpp-python's
            own default is half, which halves tokens/s on a 2-core machine).
        registry: Model registry to look ``model_name`` up in (default :data:`~searchers.models.MODELS`).
        extra_args: More ``llama_cpp.server`` flags, e.g. ``["--n_batch", "256"]``.

    The model is fetched, assembled and sha256-verified on the first :meth:`start` (minutes for
    the 1.5B model, logged), then served from the cache. The server reports the model under its
    registry name, so ``llm.model`` may stay empty.

    Raises (from :meth:`start`):
        MissingDependencyError: llama-cpp-python[server] is not installed.
        ModelFetchError / ModelIntegrityError: see :func:`searchers.models.ensure_model`.
        LocalServerError: the server did not come up (log tail in the message).
    """

    def __init__(
        self,
        model_name: str,
        *,
        log_dir: os.PathLike | str,
        port: int = 0,
        host: str = "127.0.0.1",
        startup_timeout_s: float = 300.0,
        cache_dir: Optional[os.PathLike | str] = None,
        n_threads: Optional[int] = None,
        registry: Optional[dict[str, LocalModel]] = None,
        extra_args: Sequence[str] = (),
    ):
        self.model = get_model(model_name, registry)
        self.cache_dir = cache_dir
        if n_threads is None:
            n_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.n_threads = int(n_threads)
        self.extra_args = list(extra_args)
        self.model_path: Optional[Path] = None
        super().__init__(
            [], log_dir=log_dir, port=port, host=host, startup_timeout_s=startup_timeout_s,
            name=f"local LLM '{self.model.name}'",
        )

    def _prepare(self) -> None:
        _require_llama_cpp_server()
        self.model_path = ensure_model(self.model, self.cache_dir)
        self.argv = self.server_argv(self.model_path)

    def server_argv(self, model_path: os.PathLike | str) -> list[str]:
        """The server command for ``model_path`` (``{host}``/``{port}`` filled in at launch)."""
        argv = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(model_path),
            "--model_alias", self.model.name,
            "--host", "{host}",
            "--port", "{port}",
            "--n_ctx", str(self.model.n_ctx),
            "--n_threads", str(self.n_threads),
        ]
        if self.model.chat_format:
            argv += ["--chat_format", self.model.chat_format]
        return argv + self.extra_args


def _local_dir(run_dir: os.PathLike | str) -> Path:
    """The run directory as a local folder (``file://`` URIs included)."""
    text = os.fspath(run_dir)
    if text.startswith("file://"):
        return Path(text[len("file://"):])
    if "://" in text:
        raise LocalServerError(
            f"the local LLM server writes its log to a local folder, but the run directory is {text!r}: "
            "pass a local folder for the log (for example the driver's working directory)."
        )
    return Path(text)


def start_local_llm(llm_cfg: Any, run_dir: os.PathLike | str, *, startup_timeout_s: float = 600.0,
                    n_threads: Optional[int] = None) -> LocalLLMServer:
    """Start the embedded server for an :class:`a2o.config.LLMConfig` whose ``base_url`` is ``'local'``.

    Returns the started server; pass ``server.base_url`` as ``llm_base_url`` to
    :func:`searchers.searcher_from_config`, and call ``server.stop()`` (or use it in a ``with``
    block) when the search ends. The log goes to ``run_dir/llm_server.log``. ``n_threads``: as
    :class:`LocalLLMServer` (default every usable CPU; 1 serves faster when trainings share the cores).
    """
    server = LocalLLMServer(llm_cfg.local_model, log_dir=_local_dir(run_dir), startup_timeout_s=startup_timeout_s,
                            n_threads=n_threads)
    server.start()
    try:
        smoke_test(server)
    except BaseException:
        server.stop()
        raise
    return server


def smoke_test(server: ManagedServer, timeout_s: float = 120.0) -> None:
    """One 1-token completion: the model must run, not only load.

    A health check answers before any weights are used; a llama.cpp built for the wrong CPU then
    dies on the first real request (seen: SIGILL from AMX kernels), and every proposal of a search
    would silently become a fallback. This fails at start instead, with the log tail.
    """
    import urllib.error
    import urllib.request

    body = json.dumps({"prompt": "ok", "max_tokens": 1}).encode()
    request = urllib.request.Request(
        f"{server.base_url}/completions", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            response.read()
    except (urllib.error.URLError, OSError) as exc:
        time.sleep(0.5)  # let a crashed process be reaped, so check_alive sees its exit code
        server.check_alive()
        raise LocalServerError(f"{server.name} did not answer a 1-token completion: {exc}") from exc
