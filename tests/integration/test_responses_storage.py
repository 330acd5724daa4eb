"""What a chain of responses costs in DynamoDB Local: items and bytes grow linearly with
the chain's length (a stored response never copies the transcript), and a fork copies
at most the history window."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from core.chat import ChatService
from core.providers.echo import EchoProvider
from core.settings import Settings
from core.store.dynamodb import DynamoDBSessionStore, ensure_table
from handler.app import create_app
from tests.conftest import table_items

LENGTHS = (10, 20, 40)


def attribute_bytes(value: dict[str, Any]) -> int:
    """DynamoDB's size of a value: UTF-8 bytes of a string; about one byte per two
    significant digits of a number, plus one."""
    if "S" in value:
        return len(value["S"].encode())
    digits = value["N"].lstrip("-").replace(".", "").strip("0") or "0"
    return (len(digits) + 1) // 2 + 1


def item_bytes(item: dict[str, Any]) -> int:
    """An item's size as DynamoDB counts it: attribute names plus values."""
    return sum(len(name.encode()) + attribute_bytes(value) for name, value in item.items())


@asynccontextmanager
async def scratch_api(client: Any, *, window: int = 40) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """The API in-process over its own new table on DynamoDB Local (dropped afterwards)."""
    name = f"growth-{uuid.uuid4().hex[:10]}"
    ensure_table(client, name)
    try:
        # Compaction off: these tests count the chain's own items (summaries: test_compaction).
        settings = Settings(sessions_table=name, history_window=window, compaction=False)
        store = DynamoDBSessionStore(name, ttl_days=30, client=client)
        app = create_app(ChatService(store, EchoProvider(), settings), settings=settings)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as api:
            yield api, name
    finally:
        client.delete_table(TableName=name)


async def build_chain(api: httpx.AsyncClient, length: int) -> list[str]:
    ids: list[str] = []
    for turn in range(length):
        body: dict[str, Any] = {"model": "echo", "input": f"Message number {turn} of the chain."}
        if ids:
            body["previous_response_id"] = ids[-1]
        response = await api.post("/v1/responses", json=body)
        assert response.status_code == 200, response.text
        ids.append(response.json()["id"])
    return ids


def copying_bytes(items: list[dict[str, Any]]) -> int:
    """What the same chain would take if every response copied its transcript (the
    reference implementation): response k holds all messages before it, and its own."""
    messages = sorted((i for i in items if i["sk"]["S"].startswith("MSG#")), key=lambda i: i["sk"]["S"])
    sizes = [len(i["msg"]["S"].encode()) for i in messages]
    return sum(sum(sizes[: 2 * (k + 1)]) for k in range(len(sizes) // 2))


@pytest.mark.integration
async def test_items_and_bytes_grow_linearly_with_the_chain(
    local_table: tuple[Any, str], capsys: pytest.CaptureFixture[str]
) -> None:
    client, _ = local_table
    measured: dict[int, tuple[int, int, int, list[int]]] = {}
    for length in LENGTHS:
        async with scratch_api(client) as (api, table):
            await build_chain(api, length)
            items = table_items(client, table)
        response_sizes = [item_bytes(i) for i in items if i["sk"]["S"] == "RESPONSE"]
        measured[length] = (len(items), sum(item_bytes(i) for i in items), copying_bytes(items), response_sizes)

    with capsys.disabled():
        print("\nchain length | items | bytes | bytes/response | if each response copied its transcript")
        for length, (count, size, copying, _) in measured.items():
            print(f"{length:12} | {count:5} | {size:6,} | {size // length:14,} | {copying:,} (message bytes alone)")

    for length, (count, _, _, response_sizes) in measured.items():
        # Per response: its item, two messages and the link that lets a session delete
        # find it; one head and one listing entry.
        assert count == 4 * length + 2
        # A response item does not grow with its position in the chain.
        assert max(response_sizes) - min(response_sizes) < 120
    per_response_early = (measured[20][1] - measured[10][1]) / 10
    per_response_late = (measured[40][1] - measured[20][1]) / 20
    assert 0.9 < per_response_late / per_response_early < 1.1
    # Copying the transcript grows with the square of the length: 4x the bytes for 2x the chain.
    assert measured[40][2] / measured[20][2] > 3.5


@pytest.mark.integration
async def test_a_fork_copies_at_most_the_window(local_table: tuple[Any, str]) -> None:
    client, _ = local_table
    async with scratch_api(client, window=6) as (api, table):
        ids = await build_chain(api, 20)
        before = {(i["pk"]["S"], i["sk"]["S"]) for i in table_items(client, table)}
        fork = await api.post(
            "/v1/responses", json={"model": "echo", "input": "a fork", "previous_response_id": ids[9]}
        )
        assert fork.status_code == 200
        added = [i for i in table_items(client, table) if (i["pk"]["S"], i["sk"]["S"]) not in before]
    kinds = sorted(i["sk"]["S"].split("#")[0] for i in added)
    # A new session: its head and listing entry, 6 copied messages and the new turn's 2;
    # the response item and its link.
    assert kinds == ["LINK", "LISTING"] + ["MSG"] * 8 + ["RESPONSE", "SESSION"]
    assert "I was given 7 messages" in fork.text
