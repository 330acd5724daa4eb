"""The streaming runtime as Lambda starts it: `exec-wrapper`, in a process of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parents[2]
WRAPPER = ROOT / "src" / "handler" / "streaming" / "exec-wrapper"

LAMBDA_ENV = {
    "AWS_LAMBDA_FUNCTION_NAME": "threadline-test",
    "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
    "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/threadline-test",
    "AWS_LAMBDA_LOG_STREAM_NAME": "2026/11/25/[$LATEST]0123456789abcdef",
    "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
}


class RuntimeProcess:
    """`exec-wrapper <python> /var/runtime/bootstrap.py`, as Lambda runs a wrapper script.

    Output goes to a file (read it with `log()`), so a chatty runtime never blocks on a pipe.
    """

    def __init__(
        self,
        address: str,
        *,
        app: str | None = None,
        env: dict[str, str] | None = None,
        log_path: Path,
        wrapper: Path = WRAPPER,
        python: str = sys.executable,
    ) -> None:
        self.log_path = log_path
        self.environ = {
            **os.environ,
            **LAMBDA_ENV,
            "AWS_LAMBDA_RUNTIME_API": address,
            # tests.e2e.apps must be importable; the wrapper puts the task root first.
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
            **(env or {}),
        }
        self.environ.pop("_X_AMZN_TRACE_ID", None)
        if app is not None:
            self.environ["THREADLINE_ASGI_APP"] = app
        self.command = [str(wrapper), python, "/var/runtime/bootstrap.py"]
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> RuntimeProcess:
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.command, env=self.environ, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        return self

    def wait(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()
