"""Background responses as deployed: the function invokes itself asynchronously.

Nothing here reaches AWS. Each test runs the streaming runtime as Lambda starts it
(`exec-wrapper`, a process of its own) in two roles, as two execution environments
of one function would be:

- the *web* environment serves API Gateway events from one fake Runtime API; its
  `LambdaDispatcher` (the default inside Lambda) calls `Invoke` on a fake Lambda
  endpoint (`AWS_ENDPOINT_URL_LAMBDA`, dummy credentials), which answers 202;
- the fake Lambda hands the payload to a second fake Runtime API, whose *job*
  environment(s) run it, as Lambda delivers an asynchronous invocation.

Both read and write one table on DynamoDB Local. The echo model speaks one word per
`WORD_DELAY_MS`, so a run lasts long enough to be caught in the middle.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from core.store.keys import response_log, response_pk
from tests.e2e.events import rest_event
from tests.e2e.fake_lambda import FakeLambda
from tests.e2e.fake_runtime_api import FakeRuntimeAPI, Invocation
from tests.e2e.runtime_process import LAMBDA_ENV, RuntimeProcess

KEY = "background-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
FUNCTION = LAMBDA_ENV["AWS_LAMBDA_FUNCTION_NAME"]
WORD_DELAY_MS = 150
LEASE_SECONDS = 3


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any
    ended_at: float
    """`time.monotonic()` when the last byte of the answer had arrived."""


@dataclass
class Deployment:
    web: FakeRuntimeAPI
    jobs: FakeRuntimeAPI
    invoke: FakeLambda
    env: dict[str, str]
    tmp_path: Path
    stack: ExitStack

    def environment(self, name: str, *, env: dict[str, str] | None = None) -> RuntimeProcess:
        """Start one more execution environment taking the jobs' invocations."""
        process = RuntimeProcess(
            self.jobs.address, env={**self.env, **(env or {})}, log_path=self.tmp_path / f"{name}.log"
        )
        return self.stack.enter_context(process)

    def request(self, method: str, path: str, body: Any = None, *, timeout: float = 30) -> Reply:
        """Through the web environment, as API Gateway would send it."""
        invocation = self.web.wait(self.web.queue(rest_event(method, path, body, headers=AUTH)), timeout=timeout)
        assert invocation.response is not None, invocation.error
        prelude, payload = invocation.response.split()
        return Reply(prelude["statusCode"], prelude["headers"], json.loads(payload), invocation.response.chunks[-1].at)

    def response(self, response_id: str) -> dict[str, Any]:
        reply = self.request("GET", f"/v1/responses/{response_id}")
        assert reply.status == 200, reply.body
        return dict(reply.body)

    def create(self, text: str) -> Reply:
        reply = self.request("POST", "/v1/responses", {"model": "echo", "input": text, "background": True})
        assert reply.status == 200, reply.body
        return reply

    def wait_status(self, response_id: str, wanted: set[str], timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            body = self.response(response_id)
            if body["status"] in wanted or time.monotonic() > deadline:
                return body
            time.sleep(0.2)


def job_invocations(api: FakeRuntimeAPI) -> list[Invocation]:
    return list(api.invocations.values())


def text_of(body: dict[str, Any]) -> str:
    return "".join(
        part["text"]
        for item in body["output"]
        if item["type"] == "message"
        for part in item["content"]
        if part["type"] == "output_text"
    )


@pytest.fixture
def deployment(local_table: tuple[Any, str], tmp_path: Path) -> Iterator[Deployment]:
    with ExitStack() as stack:
        web = stack.enter_context(FakeRuntimeAPI())
        jobs = stack.enter_context(FakeRuntimeAPI())
        invoke = stack.enter_context(FakeLambda(FUNCTION, lambda payload: jobs.queue(payload)))
        env = {
            "MODEL_PROVIDER": "echo",
            "ECHO_DELAY_MS": str(WORD_DELAY_MS),
            "API_KEYS": KEY,
            "AWS_ENDPOINT_URL_LAMBDA": invoke.endpoint,
            "THREADLINE_JOB_QUALIFIER": "live",  # as the template sets it
            "RUN_LEASE_SECONDS": str(LEASE_SECONDS),
            "COMPACTION": "off",
        }
        stack.enter_context(RuntimeProcess(web.address, env=env, log_path=tmp_path / "web.log"))
        yield Deployment(web, jobs, invoke, env, tmp_path, stack)


def test_a_background_response_runs_in_another_invocation_and_completes(deployment: Deployment) -> None:
    jobs = deployment.environment("job")
    reply = deployment.create("tell me a story")
    queued = reply.body
    assert queued["status"] == "queued" and queued["background"] is True
    response_id = queued["id"]

    # The web environment invoked the function asynchronously (the alias, as an Event).
    (call,) = deployment.invoke.invocations
    assert (call.function_name, call.qualifier, call.invocation_type, call.status) == (FUNCTION, "live", "Event", 202)
    job = call.job()["threadline_job"]
    assert job["kind"] == "response" and job["response_id"] == response_id

    # The job arrived at the other environment, ran the model to its end, and was
    # answered with a small JSON result on the buffered /response, not a stream.
    (invocation,) = job_invocations(deployment.jobs)
    deployment.jobs.wait(invocation, timeout=60)
    assert invocation.error is None, jobs.log()
    assert invocation.response is not None and invocation.response.complete
    assert "lambda-runtime-function-response-mode" not in invocation.response.headers
    assert "transfer-encoding" not in invocation.response.headers
    assert json.loads(invocation.response.body) == {"job": "response", "response_id": response_id, "done": True}
    # The client had its answer at once: long before the model's words were all out.
    reply_text = "Echo: tell me a story (I was given 1 message.)"
    words = reply_text.count(" ") + 1
    assert invocation.response.chunks[-1].at - reply.ended_at > words * WORD_DELAY_MS / 1000 * 0.6

    done = deployment.response(response_id)
    assert done["status"] == "completed", done
    assert text_of(done) == reply_text
    assert "background job response " + response_id in jobs.log()


def test_a_duplicated_delivery_runs_the_model_once(deployment: Deployment) -> None:
    """Lambda may deliver an asynchronous event twice: two environments take it at
    once; the conditional claim lets one run it, the other is refused and answers."""
    deployment.invoke.copies = 2
    first = deployment.environment("job-1")
    second = deployment.environment("job-2")
    reply = deployment.create("only once please")
    response_id = reply.body["id"]
    assert len(deployment.invoke.invocations) == 1
    delivered = job_invocations(deployment.jobs)
    assert len(delivered) == 2
    for invocation in delivered:
        deployment.jobs.wait(invocation, timeout=60)
        assert invocation.response is not None, (invocation.error, first.log(), second.log())
        assert json.loads(invocation.response.body)["done"] is True

    done = deployment.response(response_id)
    assert done["status"] == "completed"
    assert text_of(done) == "Echo: only once please (I was given 1 message.)"
    # One run recorded, one turn stored: the question and one answer, not two.
    events = _replayed_types(deployment, response_id)
    assert events.count("response.created") == 1
    assert events.count("response.completed") == 1
    session_id = reply.headers["x-hermes-session-id"]
    messages = deployment.request("GET", f"/v1/sessions/{session_id}/messages").body
    assert [message["role"] for message in messages["data"]] == ["user", "assistant"]
    # The refused copy answered at once; the other one after the model's words.
    ends = sorted(invocation.response.chunks[-1].at for invocation in delivered if invocation.response)
    assert ends[1] - ends[0] > 0.5 * WORD_DELAY_MS / 1000 * 5


def _replayed_types(deployment: Deployment, response_id: str) -> list[str]:
    event = rest_event("GET", f"/v1/responses/{response_id}", headers=AUTH, query={"stream": "true"})
    invocation = deployment.web.wait(deployment.web.queue(event), timeout=30)
    assert invocation.response is not None
    _, payload = invocation.response.split()
    types = []
    for frame in payload.decode().split("\n\n"):
        for line in frame.splitlines():
            if line.startswith("data: ") and line != "data: [DONE]":
                types.append(json.loads(line[len("data: ") :])["type"])
    return types


def test_a_job_killed_mid_run_ends_failed_once_its_lease_lapses(deployment: Deployment) -> None:
    worker = deployment.environment("job")
    long_text = " ".join(f"word{n}" for n in range(40))
    response_id = deployment.create(long_text).body["id"]
    running = deployment.wait_status(response_id, {"in_progress"}, timeout=30)
    assert running["status"] == "in_progress"
    time.sleep(3 * WORD_DELAY_MS / 1000)  # a few words recorded

    assert worker.process is not None
    worker.process.kill()  # the environment dies: no answer, no last write
    worker.process.wait(timeout=10)
    killed_at = time.monotonic()
    # Its lease (renewed with each write) has not lapsed yet: still in progress.
    assert deployment.response(response_id)["status"] == "in_progress"

    ended = deployment.wait_status(response_id, {"failed", "completed"}, timeout=LEASE_SECONDS + 10)
    assert ended["status"] == "failed", ended
    assert "interrupted" in ended["error"]["message"]
    assert time.monotonic() - killed_at < LEASE_SECONDS + 10
    (invocation,) = job_invocations(deployment.jobs)
    assert invocation.response is None and invocation.error is None  # never answered


def test_a_retry_after_the_worker_died_ends_the_response_failed_without_running_it_again(
    deployment: Deployment, local_table: tuple[Any, str]
) -> None:
    """What Lambda does after an invocation that timed out or crashed: it delivers the
    event again. The claim is refused (the response is in progress, under a dead
    worker's lapsed lease), so the retry ends it failed instead of running the model."""
    worker = deployment.environment("job")
    response_id = deployment.create(" ".join(["slow"] * 40)).body["id"]
    deployment.wait_status(response_id, {"in_progress"}, timeout=30)
    time.sleep(3 * WORD_DELAY_MS / 1000)
    assert worker.process is not None
    worker.process.kill()
    worker.process.wait(timeout=10)
    time.sleep(LEASE_SECONDS + 1)  # the lease lapses; nobody reads meanwhile

    (call,) = deployment.invoke.invocations
    deployment.environment("job-retry")
    retry = deployment.jobs.wait(deployment.jobs.queue(call.payload), timeout=60)
    assert retry.response is not None, retry.error
    # The retry ended it, before any reader did: read the run's state in the table.
    client, table = local_table
    key = response_log(response_pk(call.job()["threadline_job"]["owner"], response_id))
    item = client.get_item(TableName=table, Key={"pk": {"S": key.pk}, "sk": {"S": key.state_sk}}, ConsistentRead=True)[
        "Item"
    ]
    assert item["status"]["S"] == "failed"
    ended = deployment.response(response_id)
    assert ended["status"] == "failed" and "interrupted" in ended["error"]["message"]
    # The retry did not run the model: it answered at once (the model needs 40 words
    # times 150 ms), and nothing after the dead worker's events but the failure.
    assert retry.taken_at is not None
    assert retry.response.chunks[-1].at - retry.taken_at < 2.0
    events = _replayed_types(deployment, response_id)
    assert events.count("response.created") <= 1 and "response.completed" not in events
    assert events[-1] == "response.failed"


def test_job_events_and_http_events_are_never_taken_for_each_other(tmp_path: Path) -> None:
    with (
        FakeRuntimeAPI() as api,
        RuntimeProcess(api.address, app="tests.e2e.apps:scope_echo", log_path=tmp_path / "runtime.log") as runtime,
    ):
        # Malformed jobs: logged and answered (not done), never crashed on, never retried.
        for event, answer in [
            ({"threadline_job": "nonsense"}, {"job": None, "done": False, "error": "malformed job"}),
            ({"threadline_job": {"kind": "response"}}, {"job": "response", "done": False, "error": "malformed job"}),
            ({"threadline_job": {"kind": "reindex"}}, {"job": "reindex", "done": False, "error": "unknown job"}),
        ]:
            invocation = api.wait(api.queue(event), timeout=30)
            assert invocation.error is None and invocation.response is not None, runtime.log()
            assert "lambda-runtime-function-response-mode" not in invocation.response.headers
            assert json.loads(invocation.response.body) == answer
        # An HTTP request whose body is a job is an HTTP request: the app answers it, streamed.
        job_body = {"threadline_job": {"kind": "response", "owner": "x", "response_id": "resp_1"}}
        invocation = api.wait(api.queue(rest_event("POST", "/v1/responses", job_body)), timeout=30)
        assert invocation.response is not None
        assert invocation.response.headers["lambda-runtime-function-response-mode"] == "streaming"
        prelude, payload = invocation.response.split()
        assert prelude["statusCode"] == 200 and json.loads(json.loads(payload)["body"]) == job_body
        # Neither a job nor HTTP: refused as before.
        invocation = api.wait(api.queue({"Records": []}), timeout=30)
        assert invocation.error is not None and invocation.error.error_type_header == "Runtime.UnsupportedEvent"
        assert "malformed background job" in runtime.log()


def test_a_job_that_fails_is_reported_to_error_so_lambda_retries_it(tmp_path: Path) -> None:
    """The table cannot be reached: the claim raises, the invocation fails, and Lambda's
    retry policy (2 retries within 600 s, in the template) takes over. The report
    names the error's class only."""
    env = {"AWS_ENDPOINT_URL_DYNAMODB": "http://127.0.0.1:9", "SESSIONS_TABLE": "nowhere", "API_KEYS": KEY}
    job = {"threadline_job": {"kind": "response", "owner": "alice", "response_id": "resp_0123456789abcdef"}}
    with (
        FakeRuntimeAPI() as api,
        RuntimeProcess(api.address, env=env, log_path=tmp_path / "runtime.log") as runtime,
    ):
        invocation = api.wait(api.queue(job), timeout=60)
        assert invocation.response is None and invocation.error is not None, runtime.log()
        assert invocation.error.error_type_header == "Function.BackgroundJobFailed"
        assert invocation.error.body["stackTrace"] == []
        assert "127.0.0.1" not in json.dumps(invocation.error.body)
        # The environment goes on serving.
        health = api.wait(api.queue(rest_event("GET", "/health")), timeout=30)
        assert health.response is not None and health.response.split()[0]["statusCode"] == 200


def test_work_a_job_defers_runs_after_its_answer_and_before_the_next_event(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lambda freezes an environment once it asks for the next event: work a job defers
    (`core.after_response`: compaction after the turn) must be done by then. The job
    itself is replaced here by one that defers a slow piece of work; the runtime's
    ordering is what is tested, in this process, against the fake Runtime API."""
    import asyncio

    from core import after_response
    from handler import jobs
    from handler.streaming.runtime import Runtime
    from handler.streaming.runtime_api import RuntimeAPI
    from tests.e2e.apps import scope_echo

    finished: list[float] = []

    async def deferring_job(app: Any, job: dict[str, Any]) -> dict[str, Any]:
        async def later() -> None:
            await asyncio.sleep(0.3)
            finished.append(time.monotonic())

        after_response.defer(later)
        return {"job": "test", "done": True}

    monkeypatch.setattr(jobs, "run_job", deferring_job)
    with FakeRuntimeAPI() as api:
        job = api.queue({"threadline_job": {"kind": "test"}})
        following = api.queue(rest_event("GET", "/health"))
        runtime = Runtime(RuntimeAPI(api.address), scope_echo)
        asyncio.run(runtime.serve(max_invocations=2))
    assert job.response is not None and json.loads(job.response.body) == {"job": "test", "done": True}
    assert following.taken_at is not None and len(finished) == 1
    assert job.response.chunks[-1].at < finished[0] < following.taken_at
