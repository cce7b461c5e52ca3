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


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (held open together, so no two are the same)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _parents() -> dict[int, int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])  # field 4: ppid
    return parents


def cluster_pids(temp_dir: str) -> list[int]:
    """Processes of the cluster started with --temp-dir, and all their descendants: the raylet's
    renamed children (``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``, workers) do not carry the
    temp dir in their command line. Never any other user's Ray."""
    roots = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if temp_dir in cmdline:
                roots.add(int(entry))
    parents = _parents()
    found, grew = set(roots), True
    while grew:
        children = {pid for pid, ppid in parents.items() if ppid in found} - found
        found |= children
        grew = bool(children)
    return sorted(found)


def stop_cluster(temp_dir: str) -> list[int]:
    """SIGTERM, then SIGKILL after a grace period, every process of the cluster; the pids still
    alive at the end (none when the stop worked)."""
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
        for pid in cluster_pids(temp_dir):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and cluster_pids(temp_dir):
            time.sleep(0.2)
    return cluster_pids(temp_dir)


@pytest.mark.slow
def test_ray_job_submit_tiny_search(tmp_path):
    """Repeatable: every port of the cluster is a free one, the cluster is stopped completely (its
    agents included), and the job runs with this interpreter (the venv's, not PATH's python)."""
    temp_dir = f"/tmp/a2o-rayjob-{os.getpid()}-{time.monotonic_ns()}"
    (gcs, dash, objects, node, client, agent_listen, agent_grpc, runtime_env, metrics) = free_ports(9)
    workers = free_ports(1)[0]
    env = dict(os.environ, RAY_AUTH_MODE="disabled", A2O_TEST_KEY="sk-test")
    env.pop("RAY_ADDRESS", None)
    server = FakeLLMServer(default="ball\nhand\nbox")
    config = tiny_service_dict(tmp_path, num_trials=2)
    config["llm"]["base_url"] = server.url
    config_path = tmp_path / "job.yaml"
    config_path.write_text(yaml.safe_dump(config))
    try:
        subprocess.run(
            [str(BIN / "ray"), "start", "--head", f"--port={gcs}", "--dashboard-host=127.0.0.1",
             f"--dashboard-port={dash}", f"--object-manager-port={objects}", f"--node-manager-port={node}",
             f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent_listen}",
             f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={runtime_env}",
             f"--metrics-export-port={metrics}", f"--min-worker-port={workers}", f"--max-worker-port={workers + 200}",
             "--num-cpus=2", f"--temp-dir={temp_dir}"],
            check=True, env=env, capture_output=True, timeout=180,
        )
        job = subprocess.run(
            [str(BIN / "ray"), "job", "submit", f"--address=http://127.0.0.1:{dash}",
             "--working-dir", str(REPO), "--", sys.executable, "-m", "cluster.job", "--config", str(config_path)],
            env=env, capture_output=True, text=True, timeout=900, cwd=REPO,
        )
        assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-2000:]
        assert "succeeded" in job.stdout
        assert (tmp_path / "run" / "best" / "metrics.json").exists()
    finally:
        server.stop()
        left = stop_cluster(temp_dir)  # only the cluster this test started
    assert not left, f"processes of the test's cluster still alive: {left}"
