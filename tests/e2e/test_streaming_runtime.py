"""The streaming runtime, driven by a fake Runtime API, in a process started as Lambda starts it.

Each test runs `src/handler/streaming/exec-wrapper <python> /var/runtime/bootstrap.py`
(what Lambda runs when `AWS_LAMBDA_EXEC_WRAPPER` names the script) against
`FakeRuntimeAPI`, which parses every chunk and trailer itself and notes when each
chunk arrived. Chat tests use the real app, the echo model and DynamoDB Local.
"""

from __future__ import annotations

import itertools
import json
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.apps import WORK_AFTER_RELEASE_SECONDS
from tests.e2e.events import chat_body, rest_event, url_event
from tests.e2e.fake_runtime_api import FUNCTION_ARN, FakeRuntimeAPI, Invocation, StreamedResponse
from tests.e2e.runtime_process import RuntimeProcess

KEY = "e2e-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
SESSION = "x-hermes-session-id"
TRACE = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
WORD_DELAY_MS = 150


def sse_frames(payload: bytes) -> list[bytes]:
    return [frame + b"\n\n" for frame in payload.split(b"\n\n") if frame]


def data_of(frame: bytes) -> Any:
    text = frame.decode().strip()
    assert text.startswith("data: "), text
    body = text[len("data: ") :]
    return body if body == "[DONE]" else json.loads(body)


def served(api: FakeRuntimeAPI, event: dict[str, Any], **queue_args: Any) -> Invocation:
    return api.wait(api.queue(event, **queue_args), timeout=60)


def payload_json(invocation: Invocation) -> Any:
    assert invocation.response is not None, invocation.error
    return json.loads(invocation.response.split()[1])


@pytest.fixture
def api() -> Iterator[FakeRuntimeAPI]:
    with FakeRuntimeAPI() as fake:
        yield fake


@pytest.fixture
def chat_runtime(api: FakeRuntimeAPI, local_table: tuple[Any, str], tmp_path: Path) -> Iterator[RuntimeProcess]:
    """The real app (with a `/__probe` route), the echo model one word per 150 ms, DynamoDB Local."""
    env = {"MODEL_PROVIDER": "echo", "ECHO_DELAY_MS": str(WORD_DELAY_MS), "API_KEYS": KEY}
    with RuntimeProcess(
        api.address, app="tests.e2e.apps:probed_threadline", env=env, log_path=tmp_path / "runtime.log"
    ) as runtime:
        yield runtime


def assert_streaming_request(response: StreamedResponse) -> None:
    headers = response.headers
    assert headers["lambda-runtime-function-response-mode"] == "streaming"
    assert headers["transfer-encoding"] == "chunked"
    assert "content-length" not in headers
    assert headers["content-type"] == "application/vnd.awslambda.http-integration-response"
    declared = {name.strip().lower() for name in headers["trailer"].split(",")}
    assert declared == {"lambda-runtime-function-error-type", "lambda-runtime-function-error-body"}
    assert response.complete


def test_headers_prelude_and_delimiter(api: FakeRuntimeAPI, tmp_path: Path) -> None:
    with RuntimeProcess(api.address, env={"API_KEYS": KEY}, log_path=tmp_path / "runtime.log") as runtime:
        invocation = served(api, rest_event("GET", "/health"))
        assert invocation.error is None, runtime.log()
        response = invocation.response
        assert response is not None
        assert_streaming_request(response)
        # The first chunk is exactly the JSON prelude and the eight NUL bytes.
        first = response.chunks[0].data
        assert first.endswith(b"\x00" * 8) and first.count(b"\x00") == 8
        prelude, payload = response.split()
        assert prelude == {"statusCode": 200, "headers": {"content-type": "application/json"}, "cookies": []}
        assert json.loads(payload) == {"status": "ok"}
        assert response.trailers == {}


def test_prelude_header_values_are_strings_and_cookies_separate(api: FakeRuntimeAPI, tmp_path: Path) -> None:
    with RuntimeProcess(api.address, app="tests.e2e.apps:multi_header", log_path=tmp_path / "runtime.log"):
        response = served(api, rest_event("GET", "/anything")).response
        assert response is not None
        prelude, payload = response.split()
        assert prelude["statusCode"] == 201
        assert prelude["headers"] == {"content-type": "text/plain", "x-multi": "one, two"}
        assert all(isinstance(value, str) for value in prelude["headers"].values())
        assert prelude["cookies"] == ["a=1; Path=/", "b=2; Path=/"]
        assert payload == b"hello"
        # The app's empty body message produced no chunk (an empty chunk would end the body).
        assert [chunk.data for chunk in response.payload_chunks()] == [b"hello"]


def test_streamed_chat_chunks_arrive_one_by_one_while_the_model_runs(
    api: FakeRuntimeAPI, chat_runtime: RuntimeProcess
) -> None:
    text = "one two three four five six"
    event = rest_event("POST", "/v1/chat/completions", chat_body(text, usage=True), headers=AUTH)
    invocation = served(api, event)
    response = invocation.response
    assert invocation.error is None and response is not None, chat_runtime.log()
    assert_streaming_request(response)
    prelude, payload = response.split()
    assert prelude["statusCode"] == 200
    assert prelude["headers"]["content-type"].startswith("text/event-stream")
    assert prelude["headers"][SESSION]  # set before the first byte

    # Every HTTP chunk after the prelude is exactly one SSE frame, as the app sent it.
    chunks = response.payload_chunks()
    assert [chunk.data for chunk in chunks] == sse_frames(payload)
    frames = [data_of(chunk.data) for chunk in chunks]
    assert frames[-1] == "[DONE]"
    contents = [
        (chunk, frame["choices"][0]["delta"].get("content"))
        for chunk, frame in zip(chunks, frames, strict=True)
        if isinstance(frame, dict) and frame.get("choices") and frame["choices"][0]["delta"].get("content")
    ]
    reply = "".join(content for _, content in contents)
    assert reply == f"Echo: {text} (I was given 1 message.)"
    words = len(reply.split(" "))
    assert len(contents) == words  # one chunk per word: nothing was batched

    # Arrival times: the words came one by one, about one word delay apart, and the
    # first word arrived long before the model finished (its finish chunk).
    arrivals = [chunk.at for chunk, _ in contents]
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    delay = WORD_DELAY_MS / 1000
    # Batching would put words in one write (gaps near zero); a loaded machine only jitters them.
    assert statistics.median(gaps) > delay * 0.7, gaps
    assert min(gaps) > delay * 0.2, gaps
    finish_at = next(
        chunk.at
        for chunk, frame in zip(chunks, frames, strict=True)
        if isinstance(frame, dict) and frame.get("choices") and frame["choices"][0].get("finish_reason")
    )
    assert finish_at - arrivals[0] > (words - 1) * delay * 0.8
    assert response.trailers == {}


def test_function_url_events_stream_too(api: FakeRuntimeAPI, chat_runtime: RuntimeProcess) -> None:
    event = url_event("POST", "/v1/chat/completions", chat_body("via a function url"), headers=AUTH)
    response = served(api, event).response
    assert response is not None, chat_runtime.log()
    assert_streaming_request(response)
    prelude, payload = response.split()
    assert prelude["statusCode"] == 200 and prelude["headers"][SESSION]
    chunks = response.payload_chunks()
    assert len(chunks) > 5 and [chunk.data for chunk in chunks] == sse_frames(payload)
    assert chunks[-1].at - chunks[1].at > 3 * WORD_DELAY_MS / 1000


def test_error_mid_stream_arrives_as_trailers(api: FakeRuntimeAPI, tmp_path: Path) -> None:
    with RuntimeProcess(
        api.address, app="tests.e2e.apps:midstream_failure", log_path=tmp_path / "runtime.log"
    ) as runtime:
        invocation = served(api, rest_event("GET", "/v1/chat/completions"))
        response = invocation.response
        assert response is not None and invocation.error is None
        prelude, payload = response.split()
        assert prelude["statusCode"] == 200
        assert payload == b"data: one\n\ndata: two\n\n"
        assert response.trailers["lambda-runtime-function-error-type"] == "Function.ResponseStreamError"
        error = response.error_trailer()
        assert error is not None and error["errorType"] == "RuntimeError"
        # The exception's text stays in the logs: a trailer may reach a client.
        assert "secret-token-123" not in json.dumps(error)
        assert "secret-token-123" in runtime.log()


def test_error_before_the_first_byte_goes_to_the_error_endpoint(api: FakeRuntimeAPI, tmp_path: Path) -> None:
    with RuntimeProcess(api.address, app="tests.e2e.apps:fails_before_start", log_path=tmp_path / "runtime.log"):
        invocation = served(api, rest_event("GET", "/"))
        assert invocation.response is None
        assert invocation.error is not None
        assert invocation.error.error_type_header == "Function.Unhandled"
        assert invocation.error.body["errorType"] == "ValueError"
        assert invocation.error.body["errorMessage"] == "failed before the first byte"
        assert invocation.error.body["stackTrace"]
        # The process goes on serving.
        again = served(api, rest_event("GET", "/"))
        assert again.error is not None


def test_an_app_that_never_answers_is_an_error(api: FakeRuntimeAPI, tmp_path: Path) -> None:
    with RuntimeProcess(api.address, app="tests.e2e.apps:no_response", log_path=tmp_path / "runtime.log"):
        invocation = served(api, rest_event("GET", "/"))
        assert invocation.response is None and invocation.error is not None
        assert invocation.error.error_type_header == "Runtime.NoResponse"


def test_an_event_that_is_not_http_goes_to_the_error_endpoint(api: FakeRuntimeAPI, tmp_path: Path) -> None:
    with RuntimeProcess(api.address, env={"API_KEYS": KEY}, log_path=tmp_path / "runtime.log"):
        invocation = served(api, {"Records": [{"eventSource": "aws:sqs"}]})
        assert invocation.response is None and invocation.error is not None
        assert invocation.error.error_type_header == "Runtime.UnsupportedEvent"


def test_an_exception_at_import_goes_to_init_error(api: FakeRuntimeAPI, tmp_path: Path) -> None:
    with RuntimeProcess(api.address, app="tests.e2e.broken_app:app", log_path=tmp_path / "runtime.log") as runtime:
        assert runtime.wait(timeout=30) == 1
        assert api.init_error_posted.is_set()
        (error,) = api.init_errors
        assert error.error_type_header == "Runtime.ImportModuleError"
        assert error.body["errorType"] == "InitError"
        assert "broken_app cannot be imported" in error.body["errorMessage"]
        assert any("broken_app.py" in line for line in error.body["stackTrace"])
        assert api.next_calls == 0  # it never asked for an event


def test_the_real_app_refusing_to_start_goes_to_init_error(api: FakeRuntimeAPI, tmp_path: Path) -> None:
    # Inside Lambda the app refuses to run without API keys: that is an init failure too.
    env = {"API_KEYS": "", "API_KEYS_SECRET_ARN": ""}
    with RuntimeProcess(api.address, env=env, log_path=tmp_path / "runtime.log") as runtime:
        assert runtime.wait(timeout=30) == 1
        (error,) = api.init_errors
        assert error.error_type_header == "Runtime.ImportModuleError"
        assert "API keys" in error.body["errorMessage"]


def test_a_package_built_for_another_python_fails_at_init(api: FakeRuntimeAPI, tmp_path: Path) -> None:
    task_root = tmp_path / "task"
    task_root.mkdir()
    (task_root / "threadline-build.json").write_text(json.dumps({"python": "3.99", "architecture": "arm64"}))
    env = {"LAMBDA_TASK_ROOT": str(task_root), "API_KEYS": KEY}
    with RuntimeProcess(api.address, env=env, log_path=tmp_path / "runtime.log") as runtime:
        assert runtime.wait(timeout=30) == 1
        (error,) = api.init_errors
        assert error.error_type_header == "Runtime.PythonVersionMismatch"
        assert "3.99" in error.body["errorMessage"]


def test_one_process_serves_many_invocations_with_one_dynamodb_client(
    api: FakeRuntimeAPI, chat_runtime: RuntimeProcess
) -> None:
    first = served(api, rest_event("POST", "/v1/chat/completions", chat_body("hello", stream=False), headers=AUTH))
    assert first.response is not None, chat_runtime.log()
    prelude, payload = first.response.split()
    assert prelude["statusCode"] == 200, payload
    session = prelude["headers"][SESSION]
    probes = [json.loads(served(api, rest_event("GET", "/__probe")).response.split()[1])]  # type: ignore[union-attr]
    for turn in range(3):
        body = chat_body(f"turn {turn}", stream=turn % 2 == 0)
        event = rest_event("POST", "/v1/chat/completions", body, headers={**AUTH, "X-Hermes-Session-Id": session})
        response = served(api, event).response
        assert response is not None
        assert response.split()[0]["statusCode"] == 200
        probes.append(json.loads(served(api, rest_event("GET", "/__probe")).response.split()[1]))  # type: ignore[union-attr]

    # The session went on across invocations (the store kept it): 1 + 3 turns.
    last = rest_event(
        "POST",
        "/v1/chat/completions",
        chat_body("last", stream=False),
        headers={**AUTH, "X-Hermes-Session-Id": session},
    )
    answer = payload_json(served(api, last))
    assert answer["choices"][0]["message"]["content"] == "Echo: last (I was given 9 messages.)"

    assert len({probe["pid"] for probe in probes}) == 1
    assert len({probe["dynamodb_client_id"] for probe in probes}) == 1
    assert probes[0]["dynamodb_client_id"] is not None
    assert {probe["dynamodb_client_misses"] for probe in probes} == {1}  # created once, then reused


def test_the_context_and_trace_id_the_app_sees(api: FakeRuntimeAPI, tmp_path: Path) -> None:
    with RuntimeProcess(
        api.address, app="tests.e2e.apps:probed_threadline", env={"API_KEYS": KEY}, log_path=tmp_path / "rt.log"
    ):
        started = time.time()
        invocation = served(api, rest_event("GET", "/__probe"), request_id="req-1234", trace_id=TRACE)
        assert invocation.response is not None
        probe = json.loads(invocation.response.split()[1])
        assert probe["aws_request_id"] == "req-1234"
        assert probe["invoked_function_arn"] == FUNCTION_ARN
        assert probe["function_name"] == "threadline-test"
        assert probe["memory_limit_in_mb"] == 1024
        elapsed_ms = (time.time() - started) * 1000
        assert api.timeout_seconds * 1000 - elapsed_ms - 1000 < probe["remaining_ms"] <= api.timeout_seconds * 1000
        assert probe["trace_id"] == TRACE
        assert probe["powertools"] == {
            "function_name": "threadline-test",
            "function_memory_size": 1024,
            "function_arn": FUNCTION_ARN,
            "function_request_id": "req-1234",
        }
        # The next invocation has no trace header: the old one is not left behind.
        untraced = served(api, rest_event("GET", "/__probe"), trace_id=None)
        assert payload_json(untraced)["trace_id"] is None


def test_headers_over_the_16_kb_prelude_become_a_clear_500_before_the_first_byte(
    api: FakeRuntimeAPI, tmp_path: Path
) -> None:
    """API Gateway fails a response whose prelude is over 16 KB; the client gets a
    small valid prelude and an OpenAI-shaped 500 instead, and the app is stopped."""
    with RuntimeProcess(
        api.address, app="tests.e2e.apps:oversized_headers", log_path=tmp_path / "runtime.log"
    ) as runtime:
        invocation = served(api, rest_event("GET", "/v1/chat/completions"))
        response = invocation.response
        assert response is not None and invocation.error is None, runtime.log()
        assert_streaming_request(response)
        assert len(response.chunks[0].data) < 1024  # the prelude that was sent is small
        prelude, payload = response.split()
        assert prelude["statusCode"] == 500
        assert prelude["headers"] == {
            "content-type": "application/json",
            "access-control-allow-origin": "https://chat.example",
        }
        error = json.loads(payload)["error"]
        assert error["type"] == "server_error" and error["code"] == "response_headers_too_large"
        assert "16,384" in error["message"]
        assert b"secret-body" not in response.body and b"ttttt" not in response.body
        assert response.trailers == {}
        # The app was told nobody reads its answer; the log names the culprit (not its value).
        deadline = time.monotonic() + 10
        while "app received" not in runtime.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        log = runtime.log()
        assert "oversized_headers app received http.disconnect" in log
        assert "x-debug-trace (17,000 bytes)" in log and "[ERROR]" in log
        assert "ttttt" not in log
        # The process goes on serving.
        assert served(api, rest_event("GET", "/")).response is not None


def test_a_prelude_of_exactly_16_kb_is_sent_as_it_is(api: FakeRuntimeAPI, tmp_path: Path) -> None:
    with RuntimeProcess(api.address, app="tests.e2e.apps:prelude_at_the_limit", log_path=tmp_path / "runtime.log"):
        response = served(api, rest_event("GET", "/")).response
        assert response is not None
        assert len(response.chunks[0].data) == 16 * 1024
        prelude, payload = response.split()
        assert prelude["statusCode"] == 200 and payload == b"fits"


def test_work_after_the_response_runs_after_it_ends_and_before_the_next_event(
    api: FakeRuntimeAPI, tmp_path: Path
) -> None:
    """Compaction's seam on Lambda: the client has the whole answer first; the runtime
    asks for the next event only once the deferred work is done (that time is billed)."""
    env = {"DEFER_DIR": str(tmp_path)}
    with RuntimeProcess(
        api.address, app="tests.e2e.apps:deferring_app", env=env, log_path=tmp_path / "runtime.log"
    ) as runtime:
        first = served(api, rest_event("GET", "/anything"))
        assert first.error is None, runtime.log()
        assert first.response is not None and first.response.complete
        assert json.loads(first.response.split()[1]) == {"answered": True}  # answered while the work waits
        second = api.queue(rest_event("GET", "/anything"))
        time.sleep(0.5)
        assert second.taken_at is None and api.next_calls == 1  # no `/next` while the work is pending
        released_at = time.monotonic()
        (tmp_path / "release").write_text("go")
        api.wait(second, timeout=30)
        # `/next` came only once the work was done: the work takes 0.3 s after its release
        # (one clock, this process's: the fake Runtime API stamps `taken_at` here).
        assert (tmp_path / "done").exists()
        assert second.taken_at is not None and second.taken_at - released_at >= WORK_AFTER_RELEASE_SECONDS
