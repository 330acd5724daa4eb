"""Count the DynamoDB requests a process makes, at its client: what it is billed for.

`DynamoDBCounter.attach(client)` registers botocore event hooks on one client (the
store's): `before-call` counts every API call by operation (once per call, whatever
its retries) and the bytes of its request body; `provide-client-params` asks each
read or write for `ReturnConsumedCapacity: TOTAL` (unless it asked already), and
`after-call` adds up the capacity units DynamoDB reports. Nothing else about the
requests changes, so the counts are those of the path users run.

`bench/resumable_server.py` attaches one to the server's client and serves its
snapshot at `GET /bench/dynamodb` (`POST` resets it).
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

WRITE_OPERATIONS = frozenset({"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"})
CAPACITY_OPERATIONS = WRITE_OPERATIONS | frozenset({"GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems"})
"""The operations that accept ReturnConsumedCapacity."""


@dataclass
class Counts:
    calls: dict[str, int] = field(default_factory=dict)
    """API calls per operation name."""
    write_units: float = 0.0
    read_units: float = 0.0
    request_bytes: int = 0

    @property
    def writes(self) -> int:
        return sum(n for op, n in self.calls.items() if op in WRITE_OPERATIONS)

    @property
    def reads(self) -> int:
        return sum(n for op, n in self.calls.items() if op not in WRITE_OPERATIONS)

    def as_json(self) -> dict[str, Any]:
        return {
            "calls": dict(self.calls),
            "write_units": self.write_units,
            "read_units": self.read_units,
            "request_bytes": self.request_bytes,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Counts:
        return cls(
            calls={str(k): int(v) for k, v in data["calls"].items()},
            write_units=float(data["write_units"]),
            read_units=float(data["read_units"]),
            request_bytes=int(data["request_bytes"]),
        )


class DynamoDBCounter:
    """Thread-safe: the store calls its client from worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: Counter[str] = Counter()
        self._write_units = 0.0
        self._read_units = 0.0
        self._bytes = 0

    def attach(self, client: Any) -> None:
        events = client.meta.events
        events.register("provide-client-params.dynamodb", self._ask_capacity, unique_id="bench-counter-params")
        events.register("before-call.dynamodb", self._before_call, unique_id="bench-counter-before")
        events.register("after-call.dynamodb", self._after_call, unique_id="bench-counter-after")

    def reset(self) -> None:
        with self._lock:
            self._calls.clear()
            self._write_units = self._read_units = 0.0
            self._bytes = 0

    def snapshot(self) -> Counts:
        with self._lock:
            return Counts(dict(self._calls), self._write_units, self._read_units, self._bytes)

    # -- hooks ------------------------------------------------------------------------

    def _ask_capacity(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        if model.name in CAPACITY_OPERATIONS:
            params.setdefault("ReturnConsumedCapacity", "TOTAL")

    def _before_call(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        body = params.get("body")
        size = len(body) if isinstance(body, (bytes, str)) else 0
        with self._lock:
            self._calls[model.name] += 1
            self._bytes += size

    def _after_call(self, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        consumed = parsed.get("ConsumedCapacity")
        if consumed is None:
            return
        entries = consumed if isinstance(consumed, list) else [consumed]
        units = sum(float(entry.get("CapacityUnits", 0.0)) for entry in entries)
        with self._lock:
            if model.name in WRITE_OPERATIONS:
                self._write_units += units
            else:
                self._read_units += units


def item_bytes(item: dict[str, Any]) -> int:
    """An item's size as DynamoDB counts it for storage: each attribute's name plus its
    value (strings and binaries by length, numbers about one byte per two digits)."""
    return sum(len(name.encode()) + _value_bytes(value) for name, value in item.items())


def _value_bytes(value: dict[str, Any]) -> int:
    ((kind, data),) = value.items()
    if kind == "S":
        return len(str(data).encode())
    if kind == "B":
        return len(data) if isinstance(data, (bytes, bytearray)) else len(str(data)) * 3 // 4
    if kind == "N":
        digits = len(str(data).lstrip("-").replace(".", "").lstrip("0")) or 1
        return (digits + 1) // 2 + 1
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "L":
        return 3 + sum(_value_bytes(entry) + 1 for entry in data)
    if kind == "M":
        return 3 + sum(len(k.encode()) + _value_bytes(v) + 1 for k, v in data.items())
    return sum(_value_bytes({kind[0]: entry}) for entry in data)  # SS, NS, BS
