"""Background responses whose jobs run later than they were queued (as Lambda may run
them, seconds after): what the job finds then decides where the turn goes, never a
copy of history into the session it continues. In process, on moto: the jobs are
held by the dispatcher and run one by one by the test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from core.chat import ChatService
from core.providers.echo import EchoProvider
from core.settings import Settings
from core.store.dynamodb import DynamoDBSessionStore
from handler.app import create_app
from handler.jobs import run_job

HEADER = "X-Hermes-Session-Id"


class HeldJobs:
    """Keeps the jobs it is given, as Lambda's queue does until it runs them."""

    def __init__(self) -> None:
        self.jobs: list[dict[str, Any]] = []

    async def dispatch(self, job: dict[str, Any]) -> None:
        self.jobs.append(job)


@pytest.fixture
async def app_and_api(moto_table: tuple[Any, str]) -> AsyncIterator[tuple[Any, httpx.AsyncClient, HeldJobs]]:
    client, name = moto_table
    settings = Settings(sessions_table=name)
    app = create_app(
        ChatService(DynamoDBSessionStore(name, ttl_days=30, client=client), EchoProvider(), settings), settings=settings
    )
    held = HeldJobs()
    app.state.services["dispatcher"] = held
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://threadline.test") as api:
        yield app, api, held


async def messages(api: httpx.AsyncClient, session: str) -> list[str]:
    listed = await api.get(f"/v1/sessions/{session}/messages")
    assert listed.status_code == 200, listed.text
    return [m["content"] for m in listed.json()["data"]]


async def test_two_queued_continuations_of_one_response_never_duplicate_its_history(
    app_and_api: tuple[Any, httpx.AsyncClient, HeldJobs],
) -> None:
    app, api, held = app_and_api
    first = await api.post("/v1/responses", json={"model": "echo", "input": "root"})
    root = first.json()["id"]
    session = first.headers[HEADER]
    one = await api.post(
        "/v1/responses", json={"model": "echo", "input": "one", "background": True, "previous_response_id": root}
    )
    two = await api.post(
        "/v1/responses", json={"model": "echo", "input": "two", "background": True, "previous_response_id": root}
    )
    assert one.json()["status"] == two.json()["status"] == "queued"
    # Both were queued as continuations of the session's latest response; the first job
    # appends, and by the time the second runs the chain has moved on: it forks.
    for job in held.jobs:
        await run_job(app, job)
    done_one = (await api.get(f"/v1/responses/{one.json()['id']}")).json()
    done_two = await api.get(f"/v1/responses/{two.json()['id']}")
    assert done_one["status"] == "completed" and done_two.json()["status"] == "completed"
    assert await messages(api, session) == [
        "root",
        "Echo: root (I was given 1 message.)",
        "one",
        "Echo: one (I was given 3 messages.)",
    ]
    forked = done_two.headers[HEADER]
    assert forked != session
    assert await messages(api, forked) == [
        "root",
        "Echo: root (I was given 1 message.)",
        "two",
        "Echo: two (I was given 3 messages.)",
    ]


async def test_a_response_still_queued_cannot_be_continued_yet(
    app_and_api: tuple[Any, httpx.AsyncClient, HeldJobs],
) -> None:
    app, api, held = app_and_api
    queued = (await api.post("/v1/responses", json={"model": "echo", "input": "x", "background": True})).json()
    early = await api.post("/v1/responses", json={"model": "echo", "input": "y", "previous_response_id": queued["id"]})
    assert early.status_code == 400
    assert early.json()["error"]["code"] == "previous_response_not_finished"
    assert early.json()["error"]["param"] == "previous_response_id"
    await run_job(app, held.jobs[0])
    later = await api.post("/v1/responses", json={"model": "echo", "input": "y", "previous_response_id": queued["id"]})
    assert later.status_code == 200 and later.json()["output"][0]["content"][0]["text"].startswith("Echo: y")


async def test_a_job_delivered_twice_runs_once(app_and_api: tuple[Any, httpx.AsyncClient, HeldJobs]) -> None:
    app, api, held = app_and_api
    queued = await api.post("/v1/responses", json={"model": "echo", "input": "once", "background": True})
    await run_job(app, held.jobs[0])
    await run_job(app, held.jobs[0])
    assert await messages(api, queued.headers[HEADER]) == ["once", "Echo: once (I was given 1 message.)"]


async def test_deleting_its_session_while_a_response_waits_deletes_it_and_it_never_runs(
    app_and_api: tuple[Any, httpx.AsyncClient, HeldJobs], moto_table: tuple[Any, str]
) -> None:
    app, api, held = app_and_api
    first = await api.post("/v1/responses", json={"model": "echo", "input": "root"})
    session = first.headers[HEADER]
    queued = await api.post(
        "/v1/responses",
        json={"model": "echo", "input": "later", "background": True, "previous_response_id": first.json()["id"]},
    )
    assert queued.headers[HEADER] == session
    assert (await api.delete(f"/v1/sessions/{session}")).status_code == 200
    assert (await api.get(f"/v1/responses/{queued.json()['id']}")).status_code == 404
    await run_job(app, held.jobs[0])
    assert (await api.get(f"/v1/sessions/{session}/messages")).status_code == 404
    assert (await api.get(f"/v1/responses/{queued.json()['id']}")).status_code == 404
    client, name = moto_table
    assert client.scan(TableName=name)["Items"] == []
