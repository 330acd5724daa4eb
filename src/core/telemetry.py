"""Per-request telemetry: one structured log line and one set of metrics per request.

The faces open a `RequestRecord` per request; the service notes what it learns on
the current one (model, session, store time, tokens, time to first token, store
fallbacks, conflicts, error code) through `note()` / `add()`, which do nothing when
there is no record. At the end the record is written as one JSON log line
(Powertools' Logger) and one CloudWatch embedded-metric-format blob (Powertools'
EphemeralMetrics: no state shared between concurrent requests).

What is recorded is ids, hashes, numbers and codes only: never message content,
API keys or upstream credentials. With `TELEMETRY=off` (the local default) nothing
of Powertools is imported, so cold start pays nothing for it.
"""

from __future__ import annotations

import sys
import time
import uuid
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import Any

NAMESPACE = "Threadline"
SERVICE = "threadline"

_current: ContextVar[RequestRecord | None] = ContextVar("threadline_request", default=None)
_cold = True


@dataclass
class RequestRecord:
    method: str
    route: str
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    started: float = field(default_factory=time.perf_counter)
    cold_start: bool = False
    status: int = 0
    latency_ms: float | None = None
    model: str | None = None
    session_id: str | None = None
    principal: str | None = None
    ttft_ms: float | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    store_ms: float = 0.0
    store_calls: int = 0
    store_fallbacks: int = 0
    conflicts: int = 0
    compactions: int = 0
    compaction_failures: int = 0
    error_code: str | None = None
    stream: bool = False

    def elapsed_ms(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 2)


def begin(method: str, route: str, request_id: str | None = None) -> RequestRecord:
    """Open the record of the request now being served (in this task and its children)."""
    global _cold
    record = RequestRecord(method=method, route=route, cold_start=_cold)
    if request_id:
        record.request_id = request_id
    _cold = False
    _current.set(record)
    return record


def current() -> RequestRecord | None:
    return _current.get()


def note(**fields: Any) -> None:
    """Set fields on the current record, if there is one."""
    record = _current.get()
    if record is not None:
        for name, value in fields.items():
            setattr(record, name, value)


def add(**amounts: float) -> None:
    """Add to numeric fields of the current record, if there is one."""
    record = _current.get()
    if record is not None:
        for name, value in amounts.items():
            setattr(record, name, getattr(record, name) + value)


def first_token() -> None:
    """Note the time to first token, once."""
    record = _current.get()
    if record is not None and record.ttft_ms is None:
        record.ttft_ms = record.elapsed_ms()


class _Stdout:
    """Whatever `sys.stdout` is at the time of writing (Lambda's log capture, or a test's)."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


@cache
def _logger() -> Any:
    from aws_lambda_powertools import Logger

    return Logger(service=SERVICE, stream=_Stdout())  # type: ignore[arg-type]


def emit(record: RequestRecord) -> None:
    """Write the request's log line and metrics (Powertools is imported on first use)."""
    from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

    if record.latency_ms is None:
        record.latency_ms = record.elapsed_ms()
    fields = {name: value for name, value in asdict(record).items() if value is not None and name != "started"}
    level = "error" if record.status >= 500 else "warning" if record.status >= 400 else "info"
    getattr(_logger(), level)("request", extra=fields)

    metrics = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
    metrics.add_metric(name="Requests", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="Latency", unit=MetricUnit.Milliseconds, value=record.latency_ms)
    if record.cold_start:
        metrics.add_metric(name="ColdStart", unit=MetricUnit.Count, value=1)
    if record.ttft_ms is not None:
        metrics.add_metric(name="TimeToFirstToken", unit=MetricUnit.Milliseconds, value=record.ttft_ms)
    if record.tokens_in is not None:
        metrics.add_metric(name="TokensIn", unit=MetricUnit.Count, value=record.tokens_in)
    if record.tokens_out is not None:
        metrics.add_metric(name="TokensOut", unit=MetricUnit.Count, value=record.tokens_out)
    if record.store_calls:
        metrics.add_metric(name="StoreLatency", unit=MetricUnit.Milliseconds, value=record.store_ms)
    metrics.add_metric(name="StoreReadFallbacks", unit=MetricUnit.Count, value=record.store_fallbacks)
    metrics.add_metric(name="ConflictsRetried", unit=MetricUnit.Count, value=record.conflicts)
    if record.compactions or record.compaction_failures:
        metrics.add_metric(name="Compactions", unit=MetricUnit.Count, value=record.compactions)
        metrics.add_metric(name="CompactionFailures", unit=MetricUnit.Count, value=record.compaction_failures)
    metrics.flush_metrics()
    if record.error_code or record.status >= 400:
        errors = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
        errors.add_dimension(name="code", value=record.error_code or str(record.status))
        errors.add_metric(name="Errors", unit=MetricUnit.Count, value=1)
        errors.flush_metrics()
