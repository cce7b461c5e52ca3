"""`ray job submit` of the tiny search against a `ray start --head` cluster this test owns."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.fake_llm_server import FakeLLMServer
from tests.test_service import tiny_service_dict

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cluster_pids(temp_dir: str) -> list[int]:
    """Processes of the cluster started with --temp-dir (never any other user's Ray)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if temp_dir in cmdline:
                pids.append(int(entry))
    return pids


@pytest.mark.slow
def test_ray_job_submit_tiny_search(tmp_path):
    temp_dir = f"/tmp/a2o-rayjob-{os.getpid()}"
    gcs_port, dash_port = free_port(), free_port()
    env = dict(os.environ, RAY_AUTH_MODE="disabled", A2O_TEST_KEY="sk-test")
    env.pop("RAY_ADDRESS", None)
    server = FakeLLMServer(default="ball\nhand\nbox")
    config = tiny_service_dict(tmp_path, num_trials=2)
    config["llm"]["base_url"] = server.url
    config_path = tmp_path / "job.yaml"
    config_path.write_text(yaml.safe_dump(config))
    subprocess.run(
        [str(BIN / "ray"), "start", "--head", f"--port={gcs_port}", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dash_port}", "--num-cpus=2", f"--temp-dir={temp_dir}"],
        check=True, env=env, capture_output=True, timeout=180,
    )
    try:
        job = subprocess.run(
            [str(BIN / "ray"), "job", "submit", f"--address=http://127.0.0.1:{dash_port}",
             "--working-dir", str(REPO), "--", "python", "-m", "cluster.job", "--config", str(config_path)],
            env=env, capture_output=True, text=True, timeout=900, cwd=REPO,
        )
        assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-2000:]
        assert "succeeded" in job.stdout
        assert (tmp_path / "run" / "best" / "metrics.json").exists()
    finally:
        server.stop()
        for pid in cluster_pids(temp_dir):  # stop only the cluster this test started
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        time.sleep(2)
        for pid in cluster_pids(temp_dir):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
