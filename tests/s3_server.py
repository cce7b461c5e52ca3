"""An S3-compatible HTTP server on loopback for tests: moto in server mode, in its own process.

``S3Server().start()`` picks a free port, waits until the server answers, and returns the
environment a client needs (``AWS_ENDPOINT_URL`` and dummy credentials). botocore, s3fs and
pyarrow's S3 filesystem all read ``AWS_ENDPOINT_URL``, so the product is configured exactly as a
user points it at MinIO or another S3-compatible store: by environment, nothing in the config.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

S3_ENV_KEYS = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_REGION")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class S3Server:
    def __init__(self, log_path: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
        }

    def start(self, timeout_s: float = 60.0) -> S3Server:
        log = open(self.log_path, "w") if self.log_path else subprocess.DEVNULL  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {self.proc.returncode} (log: {self.log_path})")
            try:
                urllib.request.urlopen(self.url + "/moto-api/", timeout=2).read()
                return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"moto server did not answer on {self.url} within {timeout_s:.0f} s")

    def make_bucket(self, name: str) -> str:
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": self.url}, key="testing", secret="testing")
        fs.mkdir(name)
        return f"s3://{name}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None


def apply_env(monkeypatch, server: S3Server) -> None:
    """Point every S3 client of this process at ``server`` (and drop fsspec's cached clients)."""
    for key, value in server.env.items():
        monkeypatch.setenv(key, value)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


def environ_with(server: S3Server) -> dict[str, str]:
    return dict(os.environ, **server.env)
